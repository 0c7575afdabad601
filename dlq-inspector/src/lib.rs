//! `dlq-inspector`: the operator's CLI over orderhub's `DLQ` stream
//! (DESIGN §2, §3.5).
//!
//! # Contract
//! - Reads the `DLQ` stream (`dlq.<stage>.<provider>`), whose entries are
//!   written by the stages' worker loop and the advisory mover
//!   ([`shared::dlq`]): the original body untouched, the original headers
//!   (its `Nats-Msg-Id` kept as `Orderhub-Dlq-Original-Msg-Id`) and the
//!   `Orderhub-Dlq-*` fields. An entry's **id is its DLQ stream sequence**.
//! - `list` and `stats` (and the selection of a bulk `replay` or `purge`)
//!   stream the entries through one ordered consumer that delivers headers
//!   only; the server filters by subject (`--stage`, `--provider`) and start
//!   time (`--since`), the CLI by tenant and error text. `list` is newest
//!   first; `show` fetches one entry with its body by sequence.
//! - `replay` republishes an entry to its original subject with the
//!   original body and headers, minus the `Orderhub-Dlq-*` and `Nats-*`
//!   headers, plus `Nats-Msg-Id: replay:<id>` (the original id may still be
//!   inside the stream's duplicate window and would be dropped),
//!   `Orderhub-Replay-Of: <id>` and `Nats-Expected-Stream: <original
//!   stream>`. `Orderhub-Webhook-Id` is kept, so the order keeps its
//!   `order:<webhook id>` and the backend its `Idempotency-Key`. It awaits
//!   JetStream's ack and only then deletes the entry; if that delete fails,
//!   replaying the entry again inside the duplicate window is deduplicated
//!   by its `replay:<id>`; such a duplicate ack lets the entry go only if
//!   the stored message is this entry's (same body and webhook id), not
//!   another's that took the id (a recreated DLQ stream restarts its
//!   sequences). A transformer dead letter is a raw webhook on
//!   `webhooks.raw.…`: it goes through today's transformer with today's
//!   config, so a fixed mapping fixes old orders. A forwarder dead letter is
//!   the canonical order on `orders.…`, posted again by the forwarder.
//!   Bulk replays go oldest first at `--rate` per second; `--dry-run`
//!   changes nothing. An entry the advisory mover wrote after its original
//!   had already vanished has no subject and no body and cannot be
//!   replayed; replay says so and leaves it.
//! - `purge` deletes entries; without `--yes` it asks on a terminal and
//!   refuses (nothing deleted) when stdin is not one. It releases a
//!   forwarder or status-sync entry's event first (what is purged is never
//!   delivered, so nothing may wait for it); if that release fails, the
//!   entry is kept.
//! - Per-order ordering ([`held`], `ORDER_SEQUENCE`): a forwarder or
//!   status-sync entry's event holds the later events of its order. `show`
//!   says where the event stands and lists the events waiting behind it;
//!   `release` marks it `released` (by compare-and-set; a `done` event is
//!   left alone) and keeps the entry, which can still be replayed (the
//!   replay arms the event again). `release` asks like `purge`. Named by
//!   id, an entry that cannot hold events (another stage's, or a body that
//!   names no order) refuses the whole command, nothing released; selected
//!   by a filter, another stage's entries are skipped and reported (nothing
//!   to release is no failure), an unreadable body is skipped and fails the
//!   run. An event not in its order's entry, already `done` or `released`,
//!   or a server without the bucket: released with 0 events let go.
//! - Outcomes ([`shared::outcome`], `OUTCOMES`): a replay sends a
//!   `replayed` step (source: `DLQ`, the entry's id; the entry's tenant,
//!   webhook id and error class) once the republish is acked (a failed
//!   republish is no replay), and deletes the entry only once the step is
//!   acked too; a purge stores a `purged` step before
//!   each delete. An outcome not stored keeps the entry (an error; replaying
//!   it again is deduplicated by its `replay:<id>`). An entry whose provider
//!   this build does not know has no outcome.
//! - Exit status: 0 success, 1 failure (NATS unreachable, no `DLQ` stream,
//!   an unknown id, an entry that cannot be replayed or released, a refused
//!   purge or release, any entry of a bulk operation not done, a `show`
//!   whose sequence could not be read), 2 bad usage. The connection is
//!   tried once with a short timeout: a CLI does not wait for NATS forever.

pub mod cli;
pub mod entry;
pub mod held;
pub mod render;

use std::io::{self, Write};
use std::time::{Duration, SystemTime};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream::Stream};
use clap::{CommandFactory, Parser};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use shared::headers;
use shared::outcome::{self, SourceRef, Step};
use shared::redact::json_line;

use cli::{Cli, Command, ConnArgs, Filter};
use entry::Entry;

/// Why a command failed; [`Error::exit_code`] maps it to the exit status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error(
        "there is no DLQ stream on {url}: wrong server or account, or no stage has run there yet (they create it at start)"
    )]
    NoDlqStream { url: String },
    #[error("no DLQ entry {0} (ids are DLQ stream sequences, as `list` shows them)")]
    NotFound(u64),
    #[error("DLQ entry {id} cannot be replayed: {reason}")]
    NotReplayable { id: u64, reason: String },
    #[error("DLQ entry {id} kept: {reason}")]
    ReplayConflict { id: u64, reason: String },
    #[error("cannot {op}: {reason}")]
    Nats { op: String, reason: String },
    #[error("DLQ entry {id} cannot be released: {reason}")]
    NotReleasable { id: u64, reason: String },
    #[error("{verb} not confirmed: nothing {done}")]
    NotConfirmed {
        verb: &'static str,
        done: &'static str,
    },
    #[error(
        "purge would delete {0} entries for good: pass --yes (stdin is not a terminal, so there is no one to ask); nothing deleted"
    )]
    NeedsYes(usize),
    #[error(
        "release would let the later events of {0} entries' orders go without them: pass --yes (stdin is not a terminal, so there is no one to ask); nothing released"
    )]
    ReleaseNeedsYes(usize),
    #[error("{0}")]
    Partly(String),
    #[error("{failed} of {total} entries were not {verb}")]
    Incomplete {
        verb: &'static str,
        failed: usize,
        total: usize,
    },
    #[error("cannot write output: {0}")]
    Output(#[from] io::Error),
}

impl Error {
    /// 2 for bad usage, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => 2,
            _ => 1,
        }
    }
}

/// A yes/no question on the operator's terminal.
pub type Confirm<'a> = &'a mut dyn FnMut(&str) -> io::Result<bool>;

/// Where a command writes and how it talks to the operator.
pub struct Console<'a> {
    pub out: &'a mut dyn Write,
    pub err: &'a mut dyn Write,
    /// Asks the operator; `None` when stdin is not a terminal.
    pub confirm: Option<Confirm<'a>>,
    /// Draw progress bars on stderr (it is a terminal).
    pub progress: bool,
}

/// Parses `args` (the first is the program name) and runs the command;
/// returns the exit status. Messages go to `console.err`.
pub async fn run<I, T>(args: I, mut console: Console<'_>) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            let code = match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => 0,
                _ => 2,
            };
            let text = e.render().to_string();
            let w: &mut dyn Write = if code == 0 { console.out } else { console.err };
            let _ = write!(w, "{text}");
            return code;
        }
    };
    match execute(cli, &mut console).await {
        Ok(()) => 0,
        Err(Error::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            let _ = writeln!(console.err, "dlq-inspector: {e}");
            e.exit_code()
        }
    }
}

/// Runs a parsed command.
pub async fn execute(cli: Cli, console: &mut Console<'_>) -> Result<(), Error> {
    let json = cli.json;
    let timeout = cli.conn.timeout();
    let now = SystemTime::now();
    // Usage problems are found before connecting.
    match &cli.command {
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(*shell, &mut cmd, "dlq-inspector", console.out);
            return Ok(());
        }
        Command::Replay {
            ids,
            filter,
            all,
            rate,
            ..
        } => {
            require_selection("replay", ids, filter, *all)?;
            if !rate.is_finite() || *rate < 0.0 {
                return Err(Error::Usage(format!(
                    "--rate {rate}: must be a number of replays per second, 0 for no limit"
                )));
            }
        }
        Command::Purge {
            ids, filter, all, ..
        } => require_selection("purge", ids, filter, *all)?,
        Command::Release {
            ids, filter, all, ..
        } => require_selection("release", ids, filter, *all)?,
        _ => {}
    }
    let (js, dlq) = open(&cli.conn).await?;
    match cli.command {
        Command::Completions { .. } => unreachable!("handled above"),
        Command::List { filter, limit } => {
            let mut entries = entry::scan(&dlq, &filter, now, timeout).await?;
            entries.reverse();
            if let Some(n) = limit {
                entries.truncate(n);
            }
            if json {
                for e in &entries {
                    writeln!(console.out, "{}", json_line(&e.to_json(now)))?;
                }
            } else {
                render::table(console.out, &entries, now)?;
                writeln!(
                    console.out,
                    "{} {} (newest first)",
                    entries.len(),
                    if entries.len() == 1 {
                        "entry"
                    } else {
                        "entries"
                    }
                )?;
            }
            Ok(())
        }
        Command::Show { id } => {
            let msg = entry::fetch(&dlq, id, timeout).await?;
            let e = Entry::new(id, msg.subject.as_str(), &msg.headers, msg.time.into());
            let mut seq = held::Sequence::new(&js, timeout);
            let standing = held::Standing::of(&mut seq, &e, &msg.payload).await;
            if json {
                writeln!(
                    console.out,
                    "{}",
                    json_line(&render::show_json(&e, &msg, &standing, now))
                )?;
            } else {
                render::show(console.out, &e, &msg, &standing, now)?;
            }
            match standing {
                held::Standing::Failed(_, why) => Err(Error::Partly(format!(
                    "entry {id} shown, but not where it stands in its order: {why}"
                ))),
                _ => Ok(()),
            }
        }
        Command::Stats { filter } => {
            let entries = entry::scan(&dlq, &filter, now, timeout).await?;
            let stats = render::Stats::of(&entries);
            if json {
                writeln!(console.out, "{}", json_line(&stats.to_json(now)))?;
            } else {
                stats.write(console.out, now)?;
            }
            Ok(())
        }
        Command::Replay {
            ids,
            filter,
            limit,
            rate,
            dry_run,
            ..
        } => {
            let mut entries = select(&dlq, &ids, &filter, timeout, now).await?;
            if let Some(n) = limit {
                entries.truncate(n);
            }
            let opts = ReplayOptions {
                rate,
                dry_run,
                json,
                timeout,
                by_id: !ids.is_empty(),
            };
            replay(&js, &dlq, &entries, &opts, console, now).await
        }
        Command::Purge {
            ids, filter, yes, ..
        } => {
            let entries = select(&dlq, &ids, &filter, timeout, now).await?;
            purge(&js, &dlq, &entries, yes, json, timeout, console).await
        }
        Command::Release {
            ids, filter, yes, ..
        } => {
            let entries = select(&dlq, &ids, &filter, timeout, now).await?;
            let opts = ReleaseOptions {
                by_id: !ids.is_empty(),
                yes,
                json,
                timeout,
            };
            release(&js, &dlq, &entries, &opts, console).await
        }
    }
}

fn require_selection(verb: &str, ids: &[u64], filter: &Filter, all: bool) -> Result<(), Error> {
    if ids.is_empty() && filter.is_empty() && !all {
        return Err(Error::Usage(format!(
            "{verb} needs entry ids, a filter (--provider --tenant --stage --since --error --text) or --all"
        )));
    }
    Ok(())
}

/// The entries named by id (all must exist), or those the filter selects;
/// oldest first.
async fn select(
    dlq: &Stream,
    ids: &[u64],
    filter: &Filter,
    timeout: Duration,
    now: SystemTime,
) -> Result<Vec<Entry>, Error> {
    if ids.is_empty() {
        entry::scan(dlq, filter, now, timeout).await
    } else {
        entry::by_ids(dlq, ids, timeout).await
    }
}

/// Connects once (no retry: a CLI fails fast) and finds the `DLQ` stream.
pub async fn open(conn: &ConnArgs) -> Result<(jetstream::Context, Stream), Error> {
    let timeout = conn.timeout();
    let url = conn.nats_url.clone();
    let connect_err = |reason: String| Error::Connect {
        url: url.clone(),
        reason,
    };
    let addrs: Vec<async_nats::ServerAddr> = conn
        .nats_url
        .split(',')
        .map(|u| {
            u.trim()
                .parse()
                .map_err(|e| Error::Usage(format!("--nats-url {u:?}: {e}")))
        })
        .collect::<Result<_, _>>()?;
    let mut options = async_nats::ConnectOptions::new()
        .name("dlq-inspector")
        .custom_inbox_prefix(shared::subjects::inbox_prefix("dlq-inspector"))
        .connection_timeout(timeout)
        .request_timeout(Some(timeout))
        // Once connected, a short outage may be ridden out; a long one ends
        // the command through the request timeout.
        .max_reconnects(Some(3));
    if let Some(creds) = &conn.creds {
        options = options
            .credentials_file(creds)
            .await
            .map_err(|e| connect_err(format!("credentials file {}: {e}", creds.display())))?;
    }
    if let Some(seed) = &conn.nkey {
        options = shared::config::nkey_option(options, seed).map_err(connect_err)?;
    }
    let options = conn.tls.apply(options);
    let client = tokio::time::timeout(timeout + Duration::from_secs(1), options.connect(addrs))
        .await
        .map_err(|_| connect_err(format!("no answer within {}ms", timeout.as_millis())))?
        .map_err(|e| connect_err(e.to_string()))?;
    let js = jetstream::new(client);
    let dlq = match tokio::time::timeout(timeout, js.get_stream(shared::subjects::DLQ_STREAM)).await
    {
        Err(_) => {
            return Err(Error::Nats {
                op: "look up the DLQ stream".into(),
                reason: format!("no answer within {}ms", timeout.as_millis()),
            });
        }
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            if let jetstream::context::GetStreamErrorKind::JetStream(js_err) = e.kind()
                && js_err.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
            {
                return Err(Error::NoDlqStream { url });
            }
            return Err(Error::Nats {
                op: "look up the DLQ stream".into(),
                reason: e.to_string(),
            });
        }
    };
    Ok((js, dlq))
}

/// How a replay runs.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Per second; 0 = no limit.
    pub rate: f64,
    pub dry_run: bool,
    pub json: bool,
    pub timeout: Duration,
    /// The operator named the entries: refuse all if one cannot be replayed.
    pub by_id: bool,
}

/// Where a replayed entry went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    pub id: u64,
    pub subject: String,
    pub stream: String,
    pub seq: u64,
    /// JetStream already had `replay:<id>` (an earlier replay of this entry
    /// whose delete failed): nothing was published twice.
    pub duplicate: bool,
}

/// The headers a replay publishes: the original's, without the dead-letter
/// fields and NATS control headers, with a fresh message id and the replay
/// mark.
pub fn replay_headers(entry: &HeaderMap, id: u64, stream: &str) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, values) in entry.iter() {
        let n: &str = name.as_ref();
        if n.starts_with("Orderhub-Dlq-") || n.to_ascii_lowercase().starts_with("nats-") {
            continue;
        }
        for v in values {
            out.append(name.clone(), v.clone());
        }
    }
    out.insert("Nats-Msg-Id", replay_msg_id(id).as_str());
    out.insert("Nats-Expected-Stream", stream);
    out.insert(headers::REPLAY_OF, id.to_string().as_str());
    out
}

/// `replay:<dlq seq>`
pub fn replay_msg_id(id: u64) -> String {
    format!("replay:{id}")
}

/// The `replayed` or `purged` step of DLQ entry `id`.
fn entry_step<'a>(
    kind: outcome::Kind,
    id: u64,
    letter: &'a shared::dlq::DeadLetter,
    headers: Option<&'a HeaderMap>,
) -> Option<Step<'a>> {
    let provider = letter.provider.parse::<shared::Provider>().ok()?;
    let mut step = Step::new(outcome::Stage::DlqInspector, kind, provider, true);
    step.tenant = letter.tenant.as_deref();
    step.webhook_id = letter.webhook_id.as_deref();
    step.error_class = Some(letter.error_class.as_str());
    if let Some(h) = headers {
        step.account = h.get(headers::ACCOUNT).map(|v| v.as_str());
        step.event = h.get(headers::EVENT).map(|v| v.as_str());
    }
    step.source = Some(SourceRef {
        stream: shared::subjects::DLQ_STREAM,
        seq: id,
        delivery: 1,
    });
    Some(step)
}

/// Why an outcome was not stored, as the CLI's error.
fn outcome_failed(op: String, f: shared::worker::Failure, kept: &str) -> Error {
    Error::Nats {
        op,
        reason: format!("{}; {kept}", f.message),
    }
}

/// Republishes one entry, awaits the ack, then deletes the entry.
pub async fn replay_one(
    js: &jetstream::Context,
    dlq: &Stream,
    id: u64,
    timeout: Duration,
) -> Result<Replayed, Error> {
    let msg = entry::fetch(dlq, id, timeout).await?;
    let e = Entry::new(id, msg.subject.as_str(), &msg.headers, msg.time.into());
    e.replayable()
        .map_err(|reason| Error::NotReplayable { id, reason })?;
    let letter = e.letter.as_ref().expect("replayable entries are readable");
    let op = || format!("republish entry {id} to {}", letter.subject);
    let publish = async {
        js.publish_with_headers(
            letter.subject.clone(),
            replay_headers(&msg.headers, id, &letter.stream),
            msg.payload.clone(),
        )
        .await
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())
    };
    let ack = tokio::time::timeout(timeout, publish)
        .await
        .map_err(|_| Error::Nats {
            op: op(),
            reason: format!("no ack within {}ms; the entry is kept", timeout.as_millis()),
        })?
        .map_err(|reason| Error::Nats {
            op: op(),
            reason: format!("{reason}; the entry is kept"),
        })?;
    if ack.duplicate {
        check_earlier_replay(js, &ack, &msg, id, timeout).await?;
    }
    // Recorded once the republish is stored (a failed republish is no
    // replay), before the entry goes.
    let outcomes = outcome::Publisher::new(js.clone(), timeout);
    let recorded = match entry_step(outcome::Kind::Replayed, id, letter, Some(&msg.headers)) {
        Some(step) => outcomes.publish(&step).await,
        None => Ok(()),
    };
    recorded.map_err(|f| {
        outcome_failed(
            format!("record the replay of entry {id}"),
            f,
            &format!(
                "the entry is kept; replaying it again is deduplicated by its id {} within the stream's duplicate window",
                replay_msg_id(id)
            ),
        )
    })?;
    let deleted = tokio::time::timeout(timeout, dlq.delete_message(id)).await;
    let delete_failed = |reason: String| Error::Nats {
        op: format!("delete entry {id} after its replay"),
        reason: format!(
            "{reason}; it was republished as {} #{}: replaying it again is deduplicated by its id {} within the stream's duplicate window",
            ack.stream,
            ack.sequence,
            replay_msg_id(id)
        ),
    };
    match deleted {
        Err(_) => return Err(delete_failed("timed out".into())),
        Ok(Err(e)) => return Err(delete_failed(e.to_string())),
        Ok(Ok(_)) => {}
    }
    Ok(Replayed {
        id,
        subject: letter.subject.clone(),
        stream: ack.stream,
        seq: ack.sequence,
        duplicate: ack.duplicate,
    })
}

/// A duplicate ack means the stream already holds a message with
/// `replay:<id>`: an earlier replay of this entry whose delete failed, or,
/// if the DLQ stream was recreated (sequences start again), another
/// entry's. Only the first lets the entry go.
async fn check_earlier_replay(
    js: &jetstream::Context,
    ack: &jetstream::publish::PublishAck,
    msg: &async_nats::jetstream::message::StreamMessage,
    id: u64,
    timeout: Duration,
) -> Result<(), Error> {
    let conflict = |reason: String| Error::ReplayConflict { id, reason };
    let earlier = async {
        js.get_stream(&ack.stream)
            .await
            .map_err(|e| e.to_string())?
            .get_raw_message(ack.sequence)
            .await
            .map_err(|e| e.to_string())
    };
    let earlier = tokio::time::timeout(timeout, earlier)
        .await
        .map_err(|_| {
            conflict(format!(
                "cannot read {} #{}: timed out",
                ack.stream, ack.sequence
            ))
        })?
        .map_err(|e| conflict(format!("cannot read {} #{}: {e}", ack.stream, ack.sequence)))?;
    let webhook = |h: &HeaderMap| h.get(headers::WEBHOOK_ID).map(|v| v.as_str().to_owned());
    if earlier.payload != msg.payload || webhook(&earlier.headers) != webhook(&msg.headers) {
        return Err(conflict(format!(
            "{} #{} already holds another message with id {} (was the DLQ stream recreated?)",
            ack.stream,
            ack.sequence,
            replay_msg_id(id)
        )));
    }
    Ok(())
}

fn progress_bar(console: &Console<'_>, len: usize, verb: &str) -> ProgressBar {
    if !console.progress || len < 2 {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{prefix} [{bar:40}] {pos}/{len} {per_sec} eta {eta} {msg}")
    {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_prefix(verb.to_owned());
    pb
}

async fn replay(
    js: &jetstream::Context,
    dlq: &Stream,
    entries: &[Entry],
    opts: &ReplayOptions,
    console: &mut Console<'_>,
    now: SystemTime,
) -> Result<(), Error> {
    if opts.by_id
        && let Some((e, why)) = entries
            .iter()
            .find_map(|e| e.replayable().err().map(|why| (e, why)))
    {
        return Err(Error::NotReplayable {
            id: e.id,
            reason: format!("{why}; nothing was replayed"),
        });
    }
    if opts.dry_run {
        if opts.json {
            for e in entries {
                writeln!(console.out, "{}", json_line(&e.to_json(now)))?;
            }
        } else {
            render::table(console.out, entries, now)?;
            let ok = entries.iter().filter(|e| e.replayable().is_ok()).count();
            writeln!(
                console.out,
                "dry run: {ok} of {} entries would be replayed to their original subjects, oldest first; nothing changed",
                entries.len()
            )?;
        }
        return Ok(());
    }
    if entries.is_empty() {
        writeln!(console.err, "nothing to replay")?;
        return Ok(());
    }
    let pb = progress_bar(console, entries.len(), "replay");
    let mut ticks = (opts.rate > 0.0).then(|| {
        let mut i = tokio::time::interval(Duration::from_secs_f64(1.0 / opts.rate));
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    let mut failed = 0;
    let mut done = 0;
    let mut stopped: Option<Error> = None;
    for e in entries {
        if let Err(why) = e.replayable() {
            failed += 1;
            let line = if opts.json {
                serde_json::json!({"id": e.id, "action": "skipped", "reason": why}).to_string()
            } else {
                let why = shared::redact::for_terminal(&why);
                format!("skipped {}: cannot be replayed: {why}", e.id)
            };
            pb.suspend(|| writeln!(console.out, "{line}"))?;
            pb.inc(1);
            continue;
        }
        if let Some(t) = ticks.as_mut() {
            t.tick().await;
        }
        match replay_one(js, dlq, e.id, opts.timeout).await {
            Ok(r) => {
                done += 1;
                let line = if opts.json {
                    serde_json::json!({
                        "id": r.id, "action": "replayed", "subject": r.subject,
                        "stream": r.stream, "seq": r.seq, "duplicate": r.duplicate,
                        "webhook_id": e.webhook_id(),
                    })
                    .to_string()
                } else {
                    format!(
                        "replayed {} -> {} ({} #{}{})",
                        r.id,
                        shared::redact::for_terminal(&r.subject),
                        r.stream,
                        r.seq,
                        if r.duplicate {
                            ", already there from an earlier replay"
                        } else {
                            ""
                        }
                    )
                };
                pb.suspend(|| writeln!(console.out, "{line}"))?;
            }
            // Another operator replayed or purged it meanwhile.
            Err(Error::NotFound(id)) => {
                failed += 1;
                pb.suspend(|| {
                    writeln!(
                        console.err,
                        "entry {id} is gone (replayed or purged meanwhile)"
                    )
                })?;
            }
            Err(err @ (Error::NotReplayable { .. } | Error::ReplayConflict { .. })) => {
                failed += 1;
                pb.suspend(|| writeln!(console.err, "{err}"))?;
            }
            // NATS trouble: stop rather than fail the rest one timeout at a time.
            Err(err) => {
                stopped = Some(err);
                break;
            }
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    let total = entries.len();
    if let Some(err) = stopped {
        writeln!(
            console.err,
            "stopped after {done} of {total} replays; the rest are still in the DLQ"
        )?;
        return Err(err);
    }
    if !opts.json {
        writeln!(console.err, "replayed {done} of {total}")?;
    }
    if failed > 0 {
        return Err(Error::Incomplete {
            verb: "replayed",
            failed,
            total,
        });
    }
    Ok(())
}

async fn purge(
    js: &jetstream::Context,
    dlq: &Stream,
    entries: &[Entry],
    yes: bool,
    json: bool,
    timeout: Duration,
    console: &mut Console<'_>,
) -> Result<(), Error> {
    if entries.is_empty() {
        writeln!(console.err, "nothing to purge")?;
        return Ok(());
    }
    ask(
        console,
        yes,
        format!(
            "delete {} dead letters for good (ids {})?",
            entries.len(),
            ids_of(entries)
        ),
        Error::NeedsYes(entries.len()),
        Error::NotConfirmed {
            verb: "purge",
            done: "deleted",
        },
    )?;
    let pb = progress_bar(console, entries.len(), "purge");
    let mut deleted = 0;
    let mut failed = 0;
    let outcomes = outcome::Publisher::new(js.clone(), timeout);
    let mut seq = held::Sequence::new(js, timeout);
    for e in entries {
        // What is purged is never delivered: the later events of its order
        // must not wait for it. Released first; not released, not deleted.
        let released = match release_for_purge(&mut seq, dlq, e, timeout).await {
            Ok(Ok(r)) => Some(r),
            Ok(Err(why)) => {
                if !why.is_empty() {
                    let why = shared::redact::for_terminal(&why);
                    pb.suspend(|| {
                        writeln!(console.err, "entry {}: {why}: nothing released", e.id)
                    })?;
                }
                None
            }
            Err(err) => {
                failed += 1;
                pb.suspend(|| {
                    writeln!(console.err, "entry {} kept (nothing deleted): {err}", e.id)
                })?;
                pb.inc(1);
                continue;
            }
        };
        if !json && let Some((p, r @ held::Released::Now { .. })) = &released {
            let line = format!("released {}: {}", e.id, r.describe(p));
            pb.suspend(|| writeln!(console.out, "{line}"))?;
        }
        // The purge is recorded before the entry goes.
        let step = e
            .letter
            .as_ref()
            .ok()
            .and_then(|l| entry_step(outcome::Kind::Purged, e.id, l, None));
        if let Some(step) = step
            && let Err(f) = outcomes.publish(&step).await
        {
            failed += 1;
            let err = outcome_failed(format!("record the purge of entry {}", e.id), f, "kept");
            pb.suspend(|| writeln!(console.err, "{err}"))?;
            pb.inc(1);
            continue;
        }
        match tokio::time::timeout(timeout, dlq.delete_message(e.id)).await {
            Ok(Ok(_)) => {
                deleted += 1;
                if json {
                    let mut line = serde_json::json!({"id": e.id, "action": "purged"});
                    if let Some((p, r)) = &released {
                        line["sequence"] = released_json(p, r);
                    }
                    let line = json_line(&line);
                    pb.suspend(|| writeln!(console.out, "{line}"))?;
                }
            }
            Ok(Err(err)) => {
                failed += 1;
                pb.suspend(|| writeln!(console.err, "cannot delete entry {}: {err}", e.id))?;
            }
            Err(_) => {
                pb.finish_and_clear();
                return Err(Error::Nats {
                    op: format!("delete entry {}", e.id),
                    reason: format!(
                        "no answer within {}ms; {deleted} of {} deleted",
                        timeout.as_millis(),
                        entries.len()
                    ),
                });
            }
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    if !json {
        writeln!(console.out, "purged {deleted} of {}", entries.len())?;
    }
    if failed > 0 {
        return Err(Error::Incomplete {
            verb: "purged",
            failed,
            total: entries.len(),
        });
    }
    Ok(())
}

/// The `sequence` object of a released entry's `--json` line.
fn released_json(p: &held::Place, r: &held::Released) -> serde_json::Value {
    let mut v = r.to_json();
    v["entry"] = serde_json::json!(p.entry);
    v["key"] = serde_json::json!(p.key);
    v["tenant"] = serde_json::json!(p.tenant);
    v["provider_order_id"] = serde_json::json!(p.provider_order_id);
    v
}

/// Releases the event of an entry about to be purged. `Err`: it is no
/// event of any sequence: another stage's entry (an empty reason), or a
/// body that names no order (why): nothing can be found to wait for it.
async fn release_for_purge(
    seq: &mut held::Sequence,
    dlq: &Stream,
    e: &Entry,
    timeout: Duration,
) -> Result<Result<(held::Place, held::Released), String>, Error> {
    if !held::SEQUENCED_STAGES.contains(&e.stage()) {
        return Ok(Err(String::new()));
    }
    let msg = entry::fetch(dlq, e.id, timeout).await?;
    let p = match held::place(e, &msg.payload) {
        Ok(p) => p,
        Err(why) => return Ok(Err(why.reason())),
    };
    let r = seq.release(&p).await.map_err(|err| Error::Nats {
        op: format!("release entry {}'s event before the purge", e.id),
        reason: match err {
            Error::Nats { op, reason } => format!("cannot {op}: {reason}"),
            other => other.to_string(),
        },
    })?;
    Ok(Ok((p, r)))
}

/// How a release runs.
#[derive(Debug, Clone)]
pub struct ReleaseOptions {
    /// The operator named the entries: refuse all if one cannot hold events.
    pub by_id: bool,
    pub yes: bool,
    pub json: bool,
    pub timeout: Duration,
}

/// Asks the operator before a purge or a release, unless `--yes`; with no
/// terminal to ask on, `needs_yes`.
fn ask(
    console: &mut Console<'_>,
    yes: bool,
    question: String,
    needs_yes: Error,
    no: Error,
) -> Result<(), Error> {
    if yes {
        return Ok(());
    }
    let Some(confirm) = console.confirm.as_mut() else {
        return Err(needs_yes);
    };
    if !confirm(&question)? {
        return Err(no);
    }
    Ok(())
}

fn ids_of(entries: &[Entry]) -> String {
    let ids: Vec<String> = entries.iter().take(10).map(|e| e.id.to_string()).collect();
    let more = if entries.len() > 10 { ", ..." } else { "" };
    format!("{}{more}", ids.join(", "))
}

/// What one selected entry of a release is.
enum Target {
    /// Another stage's: nothing to release.
    Elsewhere(String),
    /// Its body names no order event.
    Unreadable(String),
    Event(held::Place),
}

async fn target(dlq: &Stream, e: &Entry, timeout: Duration) -> Result<Target, Error> {
    if !held::SEQUENCED_STAGES.contains(&e.stage()) {
        return Ok(Target::Elsewhere(
            held::NoPlace::Stage(e.stage().to_owned()).reason(),
        ));
    }
    let msg = entry::fetch(dlq, e.id, timeout).await?;
    Ok(match held::place(e, &msg.payload) {
        Ok(p) => Target::Event(p),
        Err(why) => Target::Unreadable(why.reason()),
    })
}

async fn release(
    js: &jetstream::Context,
    dlq: &Stream,
    entries: &[Entry],
    opts: &ReleaseOptions,
    console: &mut Console<'_>,
) -> Result<(), Error> {
    if entries.is_empty() {
        writeln!(console.err, "nothing to release")?;
        return Ok(());
    }
    // Named entries are checked first: all can hold events, or nothing is
    // released.
    let mut named = Vec::new();
    if opts.by_id {
        for e in entries {
            match target(dlq, e, opts.timeout).await? {
                Target::Elsewhere(why) | Target::Unreadable(why) => {
                    return Err(Error::NotReleasable {
                        id: e.id,
                        reason: format!("{why}; nothing was released"),
                    });
                }
                Target::Event(p) => named.push(p),
            }
        }
    }
    ask(
        console,
        opts.yes,
        format!(
            "let the later events of {} dead letters' orders go without them (ids {})? the entries stay and can still be replayed",
            entries.len(),
            ids_of(entries)
        ),
        Error::ReleaseNeedsYes(entries.len()),
        Error::NotConfirmed {
            verb: "release",
            done: "released",
        },
    )?;
    let pb = progress_bar(console, entries.len(), "release");
    let mut seq = held::Sequence::new(js, opts.timeout);
    let (mut done, mut failed, mut elsewhere) = (0, 0, 0);
    let mut named = named.into_iter();
    let mut stopped: Option<Error> = None;
    for e in entries {
        let t = if opts.by_id {
            Ok(Target::Event(
                named.next().expect("one place per named entry"),
            ))
        } else {
            target(dlq, e, opts.timeout).await
        };
        let skip = |why: &str, what: &str| {
            if opts.json {
                json_line(&serde_json::json!({"id": e.id, "action": "skipped", "reason": why}))
            } else {
                format!(
                    "skipped {}: {what}: {}",
                    e.id,
                    shared::redact::for_terminal(why)
                )
            }
        };
        let line = match t {
            Ok(Target::Elsewhere(why)) => {
                elsewhere += 1;
                skip(&why, "nothing to release")
            }
            Ok(Target::Unreadable(why)) => {
                failed += 1;
                skip(&why, "cannot be released")
            }
            Ok(Target::Event(p)) => match seq.release(&p).await {
                Ok(r) => {
                    done += 1;
                    if opts.json {
                        json_line(&serde_json::json!({
                            "id": e.id, "action": "released",
                            "sequence": released_json(&p, &r),
                        }))
                    } else {
                        format!("released {}: {}", e.id, r.describe(&p))
                    }
                }
                Err(err) => {
                    stopped = Some(err);
                    break;
                }
            },
            // Another operator replayed or purged it meanwhile.
            Err(Error::NotFound(id)) => {
                failed += 1;
                pb.suspend(|| {
                    writeln!(
                        console.err,
                        "entry {id} is gone (replayed or purged meanwhile)"
                    )
                })?;
                pb.inc(1);
                continue;
            }
            Err(err) => {
                stopped = Some(err);
                break;
            }
        };
        pb.suspend(|| writeln!(console.out, "{line}"))?;
        pb.inc(1);
    }
    pb.finish_and_clear();
    let total = entries.len();
    if let Some(err) = stopped {
        writeln!(
            console.err,
            "stopped after {done} of {total} releases; the rest hold their orders' events as before"
        )?;
        return Err(err);
    }
    if !opts.json {
        let note = if elsewhere > 0 {
            format!("; {elsewhere} hold no order's events")
        } else {
            String::new()
        };
        writeln!(console.err, "released {done} of {total}{note}")?;
    }
    if failed > 0 {
        return Err(Error::Incomplete {
            verb: "released",
            failed,
            total,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_drops_dead_letter_fields_and_marks_itself() {
        let mut h = HeaderMap::new();
        h.insert("Nats-Msg-Id", "dlq:WEBHOOKS:9");
        h.insert(headers::dlq::ORIGINAL_MSG_ID, "careem:evt-1");
        h.insert(headers::dlq::ERROR, "unmapped product");
        h.insert(headers::WEBHOOK_ID, "wh-9");
        h.insert(headers::REPLAY_OF, "3");
        h.insert("X-Careem-Signature", "abc");
        let r = replay_headers(&h, 12, "WEBHOOKS");
        let get = |n: &str| r.get(n).map(|v| v.as_str().to_owned());
        assert_eq!(get("Nats-Msg-Id").as_deref(), Some("replay:12"));
        assert_eq!(get("Nats-Expected-Stream").as_deref(), Some("WEBHOOKS"));
        assert_eq!(get(headers::REPLAY_OF).as_deref(), Some("12"));
        assert_eq!(get(headers::WEBHOOK_ID).as_deref(), Some("wh-9"));
        assert_eq!(get("X-Careem-Signature").as_deref(), Some("abc"));
        assert_eq!(get(headers::dlq::ORIGINAL_MSG_ID), None);
        assert_eq!(get(headers::dlq::ERROR), None);
        assert_eq!(r.iter().count(), 5);
    }

    #[test]
    fn usage_errors_exit_2_and_failures_1() {
        assert_eq!(Error::Usage("x".into()).exit_code(), 2);
        assert_eq!(Error::NotFound(1).exit_code(), 1);
        assert_eq!(Error::NeedsYes(3).exit_code(), 1);
    }
}
