//! `orderhub-bench ledger` (issue 16): the pipeline with the release
//! `ledger` beside it, on a PostgreSQL database the bench creates and drops
//! on the machine's server (`--database-url`, loopback only).
//!
//! Three parts (`--parts`):
//! - **side**: the `e2e` benchmark's stack (release ingress → transformer →
//!   forwarder → the in-bench backend, a fresh nats-server per run) without
//!   and with the ledger, in alternating rounds: orders/s at full load, then
//!   p99 paced at half of the round's full rate without the ledger, the same
//!   rate for both. CPU per order of every process, the ledger and
//!   PostgreSQL included (the backends serving the bench's database, found
//!   in `pg_stat_activity`, and the whole cluster: every process named
//!   `postgres`). After each run with the ledger, its lag must reach 0 and
//!   every table must hold exactly its stream's messages.
//! - **insert**: `--backlog-orders` orders through the pipeline first, then
//!   a ledger started against that backlog, once per `--batches` value
//!   (`LEDGER_BATCH`; a fresh database, the ledger's consumers deleted):
//!   messages stored per second, from its `ledger_rows_inserted_total`.
//! - **outage**: the ledger reaches PostgreSQL through a loopback TCP proxy in
//!   the bench. Paced load at half the measured rate; the proxy is cut
//!   (open connections closed, new ones closed at once) for `--outage-secs`
//!   while orders keep reaching the backend, then restored; the time from
//!   the restore until the ledger's lag is back to its level before the cut,
//!   then every row checked as above.
//!
//! Counts: each ledger table holds exactly as many rows as its stream holds
//! messages, as many distinct stream sequences, from the stream's first to
//! its last sequence, and `ledger_unparsed` is empty. Any difference fails
//! the run (exit code non-zero).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_nats::jetstream;
use secrecy::SecretString;

use crate::e2e::{self, ACCOUNT, SECRET, STAGES, Stack};
use crate::ingress_bench::thousands;
use crate::load;
use crate::nats;
use crate::pipeline::{self, BACKEND_KEY, LagSummary, SIGNING_SECRET, STEP, Sampler};
use crate::procs::{self, Server};
use crate::stats::{self, Spread};

/// The operator token of the benchmark's ledgers (not a secret).
const OPERATOR_TOKEN: &str = "orderhub-bench-operator-token";

/// Each stream the ledger reads, its durable and its table.
const SOURCES: [(&str, &str, &str); 5] = [
    ("WEBHOOKS", "ledger-webhooks", "webhook_logs"),
    ("ORDERS", "ledger-orders", "provider_order_logs"),
    ("STATUS", "ledger-status", "status_decisions"),
    ("OUTCOMES", "ledger-outcomes", "order_outcomes"),
    ("DLQ", "ledger-dlq", "delivery_error_logs"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    Side,
    Insert,
    Outage,
}

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Which parts to run
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "side,insert,outage"
    )]
    pub parts: Vec<Part>,
    /// Rounds of the side-by-side part; each measures without and with the
    /// ledger, at full load and then paced
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Length of each measured window of the side-by-side part, in seconds
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Warm-up before each window (not counted), in seconds
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,
    /// Concurrent keep-alive connections of the load generator
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Size of each webhook body in bytes
    #[arg(long, default_value_t = 2048)]
    pub body_bytes: usize,
    /// Threads of the bench's runtime (load generator, backend, proxy)
    #[arg(long, default_value_t = 2)]
    pub client_threads: usize,
    /// The PostgreSQL server (a loopback address); the bench creates a
    /// database of its own there for each ledger and drops it after
    #[arg(
        long,
        env = "ORDERHUB_BENCH_PG",
        hide_env_values = true,
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub database_url: String,
    /// Orders sent through the pipeline before the ledger starts (insert part)
    #[arg(long, default_value_t = 50_000)]
    pub backlog_orders: u64,
    /// LEDGER_BATCH values of the insert part, one ledger each
    #[arg(long, value_delimiter = ',', default_value = "500,2000")]
    pub batches: Vec<usize>,
    /// Length of the database outage, in seconds
    #[arg(long, default_value_t = 60)]
    pub outage_secs: u64,
    /// Paced load before the cut, in seconds (the ledger's steady lag)
    #[arg(long, default_value_t = 10)]
    pub outage_lead_secs: u64,
    /// Paced load after the restore, in seconds
    #[arg(long, default_value_t = 60)]
    pub outage_after_secs: u64,
    /// Orders/s of the outage part (default: half the median full-load rate
    /// without the ledger of the side part; required without it)
    #[arg(long)]
    pub outage_rate: Option<f64>,
    /// Extra environment of every stage and the ledger, KEY=VALUE
    #[arg(long, value_parser = pipeline::key_value)]
    pub env: Vec<(String, String)>,
    /// Extra environment of the ledger only, KEY=VALUE (e.g. LEDGER_BATCH=2000)
    #[arg(long, value_parser = pipeline::key_value)]
    pub ledger_env: Vec<(String, String)>,
    /// How long the pipeline may take to deliver what was accepted after a
    /// window, in seconds
    #[arg(long, default_value_t = 120)]
    pub drain_timeout: u64,
    /// How long the ledger may take to store everything after the load, in
    /// seconds
    #[arg(long, default_value_t = 600)]
    pub ledger_timeout: u64,
    /// Runs during which other processes took more than this share of the
    /// CPU are marked
    #[arg(long, default_value_t = 0.05)]
    pub max_other: f64,
    /// Before each run, wait up to this many seconds for a quiet machine
    #[arg(long, default_value_t = 120)]
    pub quiet_wait: u64,
}

impl Args {
    fn e2e(&self) -> e2e::Args {
        e2e::Args {
            seconds: self.seconds,
            warmup: self.warmup,
            connections: self.connections,
            body_bytes: self.body_bytes,
            client_threads: self.client_threads,
            paced_share: vec![0.5],
            rates: Vec::new(),
            no_full: false,
            env: self.env.clone(),
            max_requests: 2_000_000,
            drain_timeout: self.drain_timeout,
            max_other: self.max_other,
            quiet_wait: self.quiet_wait,
            no_ordering: false,
        }
    }
}

// ---------------------------------------------------------------------------
// PostgreSQL: the server's URL, a database of the bench's own, psql.

/// A `postgres://` URL split where the bench changes it: the host and port
/// (for the proxy) and the database.
#[derive(Debug, Clone)]
struct PgUrl {
    /// `postgres://` and the user info with its `@`, if any.
    prefix: String,
    host: String,
    port: u16,
    query: String,
}

impl PgUrl {
    /// Parses the server URL; only a loopback host is accepted (the bench
    /// sends nothing off the machine).
    fn parse(url: &str) -> anyhow::Result<PgUrl> {
        let rest = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
            .context("--database-url: not a postgres:// URL")?;
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, format!("?{q}")),
            None => (rest, String::new()),
        };
        let authority = rest.split('/').next().unwrap_or_default();
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (format!("{u}@"), h),
            None => (String::new(), authority),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
                h.to_owned(),
                p.parse::<u16>()
                    .context("--database-url: the port is not a number")?,
            ),
            _ => (hostport.to_owned(), 5432),
        };
        if !matches!(
            host.as_str(),
            "127.0.0.1" | "localhost" | "[::1]" | "::1" | ""
        ) {
            bail!("--database-url: the host must be loopback (127.0.0.1, ::1, localhost)");
        }
        let host = if host.is_empty() {
            "127.0.0.1".to_owned()
        } else {
            host
        };
        Ok(PgUrl {
            prefix: format!("postgres://{userinfo}"),
            host,
            port,
            query,
        })
    }

    fn to(&self, host: &str, port: u16, database: &str) -> String {
        format!("{}{host}:{port}/{database}{}", self.prefix, self.query)
    }

    fn database(&self, database: &str) -> String {
        self.to(&self.host, self.port, database)
    }

    fn upstream(&self) -> String {
        let host = if self.host == "localhost" {
            "127.0.0.1"
        } else {
            self.host.trim_start_matches('[').trim_end_matches(']')
        };
        if host.contains(':') {
            format!("[{host}]:{}", self.port)
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// Runs one SQL text with psql; its unaligned, tuples-only output.
fn psql(url: &str, sql: &str) -> anyhow::Result<String> {
    let out = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-F",
            ",",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
        ])
        .arg(url)
        .arg("-c")
        .arg(sql)
        .output()
        .context("running psql (install the PostgreSQL client)")?;
    if !out.status.success() {
        bail!(
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .next()
                .unwrap_or("")
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A database of the bench's own, dropped (with its connections) on drop.
struct Db {
    server: PgUrl,
    name: String,
}

impl Db {
    fn create(server: &PgUrl) -> anyhow::Result<Db> {
        let name = format!(
            "orderhub_bench_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        psql(
            &server.database("postgres"),
            &format!("CREATE DATABASE {name}"),
        )
        .context("creating the bench's database")?;
        Ok(Db {
            server: server.clone(),
            name,
        })
    }

    fn url(&self) -> String {
        self.server.database(&self.name)
    }

    fn url_via(&self, port: u16) -> String {
        self.server.to("127.0.0.1", port, &self.name)
    }

    /// `host:port/database`, for printing (no user, no password).
    fn summary(&self) -> String {
        format!("{}:{}/{}", self.server.host, self.server.port, self.name)
    }

    fn sql(&self, sql: &str) -> anyhow::Result<String> {
        psql(&self.url(), sql)
    }

    /// The server processes serving connections to this database (the
    /// ledger's), not the one asking.
    fn backend_pids(&self) -> Vec<u32> {
        self.sql(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .map(|o| o.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Err(e) = psql(
            &self.server.database("postgres"),
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        ) {
            eprintln!("could not drop the bench database {}: {e:#}", self.name);
        }
    }
}

/// Every process named `postgres` (the whole cluster: postmaster,
/// background processes, every backend).
fn postgres_pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "postgres")
        })
        .collect()
}

/// CPU seconds of every postgres process at one moment.
#[derive(Debug, Clone, Default)]
struct PgCpu(HashMap<u32, f64>);

impl PgCpu {
    fn now() -> PgCpu {
        PgCpu(
            postgres_pids()
                .into_iter()
                .filter_map(|p| Some((p, procs::cpu_seconds(p)?)))
                .collect(),
        )
    }

    /// CPU seconds since `before` of `pids` (all if `None`); a process new
    /// since `before` counts whole (it started in between). Processes that
    /// ended in between are not counted.
    fn since(&self, before: &PgCpu, pids: Option<&[u32]>) -> f64 {
        self.0
            .iter()
            .filter(|(p, _)| pids.is_none_or(|w| w.contains(p)))
            .map(|(p, s)| s - before.0.get(p).copied().unwrap_or(0.0))
            .filter(|d| *d >= 0.0)
            .sum()
    }
}

// ---------------------------------------------------------------------------
// The ledger process, its metrics, its lag and its rows.

struct LedgerProc {
    // Killed before its database is dropped (field order).
    server: Server,
    ops: SocketAddr,
    db: Db,
}

async fn start_ledger(
    stack: &Stack,
    db: Db,
    database_url: String,
    args: &Args,
    extra: &[(String, String)],
) -> anyhow::Result<LedgerProc> {
    let ops = SocketAddr::from(([127, 0, 0, 1], nats::free_port()?));
    let api = SocketAddr::from(([127, 0, 0, 1], nats::free_port()?));
    let mut env: Vec<(String, String)> = vec![
        ("NATS_URL".into(), stack.nats.url()),
        (
            "HUB_CONFIG".into(),
            stack.dir.path().join("hub.toml").display().to_string(),
        ),
        ("OPS_ADDR".into(), ops.to_string()),
        ("API_ADDR".into(), api.to_string()),
        ("DATABASE_URL".into(), database_url),
        ("OPERATOR_TOKEN".into(), OPERATOR_TOKEN.into()),
        ("LOG_FORMAT".into(), "json".into()),
        ("RUST_LOG".into(), "warn".into()),
        ("BENCH_CAREEM_SECRET".into(), SECRET.into()),
        ("BENCH_BACKEND_KEY".into(), BACKEND_KEY.into()),
        ("BENCH_SIGNING_SECRET".into(), SIGNING_SECRET.into()),
    ];
    env.extend(args.env.iter().cloned());
    env.extend(args.ledger_env.iter().cloned());
    env.extend(extra.iter().cloned());
    let bin = pipeline::stage_bin("ledger")?;
    let mut server = pipeline::spawn_stage(&bin, stack.dir.path(), "ledger", &env)?;
    pipeline::wait_ready(&mut server, ops)
        .await
        .context("ledger not ready")?;
    Ok(LedgerProc { server, ops, db })
}

/// The sum over streams of a counter of the ledger's `/metrics`.
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The ledger's five consumers' lag (pending + unacknowledged), summed;
/// `None` if a consumer did not answer.
async fn ledger_lag(js: &jetstream::Context) -> Option<u64> {
    Some(ledger_lags(js).await?.iter().sum())
}

/// Each of the ledger's five consumers' lag, in [`SOURCES`] order.
async fn ledger_lags(js: &jetstream::Context) -> Option<Vec<u64>> {
    let mut v = Vec::with_capacity(SOURCES.len());
    for (stream, durable, _) in SOURCES {
        v.push(pipeline::consumer_lag(js, stream, durable).await?);
    }
    Some(v)
}

/// Messages in each of the five streams, and the first and last sequence.
async fn stream_counts(js: &jetstream::Context) -> anyhow::Result<Vec<(u64, u64, u64)>> {
    let mut v = Vec::new();
    for (stream, _, _) in SOURCES {
        let mut s = tokio::time::timeout(STEP, js.get_stream(stream))
            .await
            .context("stream info")??;
        let info = tokio::time::timeout(STEP, s.info())
            .await
            .context("stream info")??;
        v.push((
            info.state.messages,
            info.state.first_sequence,
            info.state.last_sequence,
        ));
    }
    Ok(v)
}

/// Every table against its stream: same count, as many distinct sequences,
/// the same first and last sequence; nothing in `ledger_unparsed`. Returns
/// the total rows, or fails naming each difference.
async fn check_rows(js: &jetstream::Context, db: &Db) -> anyhow::Result<u64> {
    let streams = stream_counts(js).await?;
    let mut sql: Vec<String> = SOURCES
        .iter()
        .map(|(_, _, t)| {
            format!(
                "SELECT '{t}', count(*), count(DISTINCT stream_seq), coalesce(min(stream_seq), 0), coalesce(max(stream_seq), 0) FROM {t}"
            )
        })
        .collect();
    sql.push(
        "SELECT 'ledger_unparsed', count(*), count(DISTINCT (stream, stream_seq)), 0, 0 FROM ledger_unparsed"
            .into(),
    );
    let out = db.sql(&sql.join(" UNION ALL "))?;
    let rows: HashMap<String, Vec<u64>> = out
        .lines()
        .filter_map(|l| {
            let mut f = l.split(',');
            let name = f.next()?.to_owned();
            let v: Vec<u64> = f.filter_map(|x| x.trim().parse().ok()).collect();
            (v.len() == 4).then_some((name, v))
        })
        .collect();
    let mut problems = Vec::new();
    let mut total = 0;
    let mut line = Vec::new();
    for ((stream, _, table), (messages, first, last)) in SOURCES.iter().zip(&streams) {
        let Some(r) = rows.get(*table) else {
            problems.push(format!("{table}: no count"));
            continue;
        };
        total += r[0];
        line.push(format!("{stream} {messages} = {table} {}", r[0]));
        if r[0] < *messages {
            problems.push(format!("{table}: {} rows MISSING", messages - r[0]));
        }
        if r[0] > *messages {
            problems.push(format!("{table}: {} rows too many", r[0] - messages));
        }
        if r[1] != r[0] {
            problems.push(format!(
                "{table}: {} rows DOUBLED (same stream sequence)",
                r[0] - r[1]
            ));
        }
        if *messages > 0 && (r[2] != *first || r[3] != *last) {
            problems.push(format!(
                "{table}: sequences {}..{} but the stream holds {first}..{last}",
                r[2], r[3]
            ));
        }
    }
    match rows.get("ledger_unparsed") {
        Some(u) if u[0] == 0 => {}
        Some(u) => problems.push(format!("ledger_unparsed holds {} messages", u[0])),
        None => problems.push("ledger_unparsed: no count".into()),
    }
    println!("    rows: {}; ledger_unparsed 0", line.join(", "));
    if !problems.is_empty() {
        bail!(
            "the ledger's rows do not match the streams: {}",
            problems.join("; ")
        );
    }
    Ok(total)
}

/// Waits until the ledger's lag is 0 and its inserted rows reach the
/// streams' messages, at most `within`; then checks every row.
async fn settle_and_check(
    stack: &Stack,
    ledger: &LedgerProc,
    within: Duration,
) -> anyhow::Result<(u64, Duration)> {
    let from = Instant::now();
    let deadline = from + within;
    loop {
        let published: u64 = stream_counts(&stack.js).await?.iter().map(|c| c.0).sum();
        let text = procs::metrics_text(ledger.ops).await;
        let stored = metric_sum(&text, "ledger_rows_inserted_total")
            + metric_sum(&text, "ledger_rows_unparsed_total");
        let lag = ledger_lag(&stack.js).await;
        if lag == Some(0) && stored as u64 >= published {
            break;
        }
        if Instant::now() > deadline {
            println!(
                "    the ledger did NOT catch up within {within:?}: lag {lag:?}, {stored} of {published} messages stored"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let took = from.elapsed();
    let rows = check_rows(&stack.js, &ledger.db).await?;
    Ok((rows, took))
}

// ---------------------------------------------------------------------------
// The loopback proxy between the ledger and PostgreSQL.

struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: String) -> anyhow::Result<Proxy> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let cut = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (c, list) = (cut.clone(), conns.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut down, _)) = listener.accept().await else {
                    continue;
                };
                if c.load(Ordering::SeqCst) {
                    // Cut: the connection is closed at once.
                    drop(down);
                    continue;
                }
                let upstream = upstream.clone();
                let handle = tokio::spawn(async move {
                    if let Ok(mut up) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
                let mut l = list.lock().expect("not poisoned");
                l.retain(|h| !h.is_finished());
                l.push(handle.abort_handle());
            }
        });
        Ok(Proxy {
            port,
            cut,
            conns,
            task,
        })
    }

    /// Closes every open connection and every new one until [`Proxy::restore`].
    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for h in self.conns.lock().expect("not poisoned").drain(..) {
            h.abort();
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        for h in self.conns.lock().expect("not poisoned").drain(..) {
            h.abort();
        }
    }
}

// ---------------------------------------------------------------------------
// Part 1: side by side.

/// What one e2e run measured.
struct Run {
    delivered_rate: f64,
    p50: f64,
    p99: f64,
    /// CPU µs per delivered order by process name (postgres entries too).
    cpu_us: Vec<(String, f64)>,
    /// The transformer's and forwarder's lag stayed flat.
    kept_up: bool,
    disturbed: bool,
    /// The ledger's lag over the window.
    ledger_lag: Option<LagSummary>,
    /// How long the ledger took after the window to store everything.
    ledger_settle: Option<Duration>,
}

async fn measure(
    args: &Args,
    label: &str,
    pace: Option<f64>,
    with_ledger: bool,
) -> anyhow::Result<Run> {
    let server = PgUrl::parse(&args.database_url)?;
    let stack = e2e::start(&args.e2e()).await?;
    let ledger = if with_ledger {
        let db = Db::create(&server)?;
        let url = db.url();
        Some(start_ledger(&stack, db, url, args, &[]).await?)
    } else {
        None
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    procs::wait_quiet(args.max_other, Duration::from_secs(args.quiet_wait)).await;
    let mut consumers = vec![
        ("WEBHOOKS".to_owned(), "transformer".to_owned()),
        ("ORDERS".to_owned(), "forwarder-bench".to_owned()),
    ];
    if with_ledger {
        consumers.push(("OUTCOMES".to_owned(), "ledger-outcomes".to_owned()));
        consumers.push(("WEBHOOKS".to_owned(), "ledger-webhooks".to_owned()));
        consumers.push(("ORDERS".to_owned(), "ledger-orders".to_owned()));
    }
    let sampler = Sampler::start(
        stack.js.clone(),
        consumers,
        Vec::new(),
        Duration::from_millis(250),
    );
    let opts = load::Options {
        connections: args.connections,
        warmup: Duration::from_secs(args.warmup),
        measure: Duration::from_secs(args.seconds),
        max_requests: 2_000_000,
        request_timeout: Duration::from_secs(10),
        body_bytes: args.body_bytes,
        pace,
        record_accepts: true,
    };
    let target = load::Target {
        addr: stack.ingress,
        path: format!("/api/webhooks/careem/{ACCOUNT}"),
        secret: SecretString::from(SECRET),
    };
    let mut watch: Vec<(&str, u32)> = STAGES
        .iter()
        .zip(&stack.stages)
        .map(|(n, s)| (*n, s.pid()))
        .chain([("nats-server", stack.nats.pid())])
        .collect();
    if let Some(l) = &ledger {
        watch.push(("ledger", l.server.pid()));
    }
    let (outcome, pg_before) = load::run(target, &opts, &watch, PgCpu::now).await;
    let pg_after = PgCpu::now();
    let backends = ledger
        .as_ref()
        .map(|l| l.db.backend_pids())
        .unwrap_or_default();
    let window_start = outcome.window_start.expect("set by load::run");
    let window_end = window_start + outcome.window;
    let all = stack
        .backend
        .wait_for(outcome.accepted, Duration::from_secs(args.drain_timeout))
        .await;
    let (lag, _) = sampler.finish().await;
    let (first, dups) = stack.backend.first_arrivals();
    let delivered = first
        .values()
        .filter(|&&t| t >= window_start && t < window_end)
        .count() as u64;
    let delivered_rate = delivered as f64 / outcome.window.as_secs_f64();
    let mut lat: Vec<Duration> = outcome
        .accepts
        .iter()
        .filter(|a| a.in_window)
        .filter_map(|a| first.get(&a.n).map(|t| t.saturating_duration_since(a.at)))
        .collect();
    lat.sort_unstable();
    let lost = outcome
        .accepts
        .iter()
        .filter(|a| !first.contains_key(&a.n))
        .count();
    let p = |q| stats::ms(stats::percentile(&lat, q));
    let (p50, p99) = (p(0.5), p(0.99));

    // CPU: the watched processes, then PostgreSQL, then the machine.
    let cluster = pg_after.since(&pg_before, None);
    let mut cpu: Vec<(String, f64)> = Vec::new();
    for (name, s) in &outcome.cpu {
        match name.as_str() {
            "other" => {
                if with_ledger {
                    cpu.push((
                        "postgres (ledger's backends)".into(),
                        pg_after.since(&pg_before, Some(&backends)),
                    ));
                }
                cpu.push(("postgres (whole cluster)".into(), cluster));
                cpu.push(("other".into(), (s - cluster).max(0.0)));
            }
            "client" => cpu.push(("bench".into(), *s)),
            _ => cpu.push((name.clone(), *s)),
        }
    }
    let total: f64 = cpu.iter().map(|(_, s)| s).sum::<f64>()
        - cpu
            .iter()
            .find(|(n, _)| n.starts_with("postgres (ledger"))
            .map_or(0.0, |c| c.1);
    let other = cpu.iter().find(|(n, _)| n == "other").map_or(0.0, |c| c.1);
    let disturbed = other / total > args.max_other;
    let offered = outcome.rate();
    println!(
        "  {label}: accepted {}/s, delivered {} orders/s; acceptance → backend {}",
        thousands(offered),
        thousands(delivered_rate),
        pipeline::latency_line(lat.clone()),
    );
    println!(
        "    CPU-s in the {:.1} s window (µs per delivered order): {}",
        outcome.window.as_secs_f64(),
        pipeline::show_cpu(&cpu, delivered)
    );
    let mut kept_up = true;
    let names = [
        "transformer (WEBHOOKS)",
        "forwarder-bench (ORDERS)",
        "ledger-outcomes",
        "ledger-webhooks",
        "ledger-orders",
    ];
    let mut ledger_lag = None;
    for (i, name) in names
        .iter()
        .enumerate()
        .take(lag.first().map_or(0, |s| s.lag.len()))
    {
        match LagSummary::of(&lag, i, window_start, window_end) {
            Some(l) => {
                if i < 2 {
                    kept_up &= l.flat(offered);
                } else if i == 2 {
                    ledger_lag = Some(l);
                }
                println!(
                    "    {name}: {}",
                    l.show(if i < 2 { offered } else { offered * 3.0 })
                );
            }
            None => {
                if i < 2 {
                    kept_up = false;
                }
                println!("    {name}: no lag sample");
            }
        }
    }
    if disturbed {
        println!(
            "    (DISTURBED: other processes took {:.0}% of the CPU)",
            other / total * 100.0
        );
    }
    if !all || lost > 0 || !outcome.failures.is_empty() || dups > 0 {
        bail!(
            "{label}: not every accepted webhook was delivered once ({lost} missing, {dups} duplicates, failures {:?})",
            outcome.failures
        );
    }
    let mut ledger_settle = None;
    if let Some(l) = &ledger {
        let (rows, took) =
            settle_and_check(&stack, l, Duration::from_secs(args.ledger_timeout)).await?;
        println!(
            "    the ledger stored all {rows} messages {:.1} s after the pipeline delivered the last order (db {})",
            took.as_secs_f64(),
            l.db.summary()
        );
        ledger_settle = Some(took);
    }
    drop(ledger);
    drop(stack);
    let per_order = |s: f64| s * 1e6 / delivered.max(1) as f64;
    Ok(Run {
        delivered_rate,
        p50,
        p99,
        cpu_us: cpu
            .iter()
            .filter(|(n, _)| !["other", "idle", "steal"].contains(&n.as_str()))
            .map(|(n, s)| (n.clone(), per_order(*s)))
            .collect(),
        kept_up,
        disturbed,
        ledger_lag,
        ledger_settle,
    })
}

fn cpu_summary(runs: &[&Run]) -> String {
    let Some(first) = runs.first() else {
        return String::new();
    };
    first
        .cpu_us
        .iter()
        .map(|(name, _)| {
            let v: Vec<f64> = runs
                .iter()
                .filter_map(|r| r.cpu_us.iter().find(|(n, _)| n == name).map(|c| c.1))
                .collect();
            format!("{name} {:.0}", Spread::of(&v).median)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

async fn side_by_side(args: &Args) -> anyhow::Result<f64> {
    println!(
        "\n== side by side: the pipeline without and with the ledger ({} rounds; full load, then paced at half the round's full rate without it) ==",
        args.rounds
    );
    let mut full: [Vec<Run>; 2] = [Vec::new(), Vec::new()];
    let mut paced: [Vec<Run>; 2] = [Vec::new(), Vec::new()];
    let mut rates = Vec::new();
    for round in 1..=args.rounds {
        println!("round {round}");
        let without = measure(args, "full, without the ledger", None, false).await?;
        let with = measure(args, "full, WITH the ledger", None, true).await?;
        println!(
            "    → round {round} full load: with/without = {:.2}",
            with.delivered_rate / without.delivered_rate
        );
        let rate = (without.delivered_rate * 0.5).round();
        rates.push(rate);
        full[0].push(without);
        full[1].push(with);
        let without = measure(args, &format!("paced {rate}/s, without"), Some(rate), false).await?;
        let with = measure(
            args,
            &format!("paced {rate}/s, WITH the ledger"),
            Some(rate),
            true,
        )
        .await?;
        println!(
            "    → round {round} paced: p99 {:.2} ms without, {:.2} ms with",
            without.p99, with.p99
        );
        paced[0].push(without);
        paced[1].push(with);
    }
    let rate_of = |v: &[Run]| Spread::of(&v.iter().map(|r| r.delivered_rate).collect::<Vec<_>>());
    let (w0, w1) = (rate_of(&full[0]), rate_of(&full[1]));
    let ratios: Vec<f64> = full[0]
        .iter()
        .zip(&full[1])
        .map(|(a, b)| b.delivered_rate / a.delivered_rate)
        .collect();
    println!("\nsummary (median (min–max) over {} rounds):", args.rounds);
    println!(
        "  full load orders/s: without {}, with the ledger {}",
        w0.show(0),
        w1.show(0)
    );
    println!(
        "  with/without: {:.2} of the medians; per round {}; goal ≥ 0.9: {}",
        w1.median / w0.median,
        Spread::of(&ratios).show(2),
        if w1.median / w0.median >= 0.9 {
            "met"
        } else {
            "NOT met"
        }
    );
    for (i, name) in ["without", "with the ledger"].iter().enumerate() {
        let p99 = Spread::of(&paced[i].iter().map(|r| r.p99).collect::<Vec<_>>());
        let p50 = Spread::of(&paced[i].iter().map(|r| r.p50).collect::<Vec<_>>());
        println!(
            "  paced at {} orders/s, {name}: p50 {} ms, p99 {} ms",
            Spread::of(&rates).show(0),
            p50.show(2),
            p99.show(2)
        );
    }
    for (i, name) in ["without", "with the ledger"].iter().enumerate() {
        println!(
            "  CPU µs per order, full load, {name}: {}",
            cpu_summary(&full[i].iter().collect::<Vec<_>>())
        );
        println!(
            "  CPU µs per order, paced, {name}: {}",
            cpu_summary(&paced[i].iter().collect::<Vec<_>>())
        );
    }
    for (what, runs) in [("full", &full[1]), ("paced", &paced[1])] {
        let slopes: Vec<String> = runs
            .iter()
            .map(|r| {
                r.ledger_lag.map_or("-".into(), |l| {
                    format!("slope {:+.0}/s max {}", l.slope, l.max)
                })
            })
            .collect();
        let settle: Vec<f64> = runs
            .iter()
            .filter_map(|r| r.ledger_settle.map(|d| d.as_secs_f64()))
            .collect();
        println!(
            "  ledger-outcomes lag in the {what} windows: {}; all stored {} s after the last delivery",
            slopes.join(" | "),
            Spread::of(&settle).show(1)
        );
    }
    let flags = |v: &[Run]| {
        v.iter()
            .map(|r| {
                format!(
                    "{}{}",
                    if r.kept_up { "kept up" } else { "FELL BEHIND" },
                    if r.disturbed { " DISTURBED" } else { "" }
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "  stages at full load: without [{}], with [{}]",
        flags(&full[0]),
        flags(&full[1])
    );
    Ok(w0.median)
}

// ---------------------------------------------------------------------------
// Part 2: the insert rate against a backlog.

/// Sends up to `n` orders through the pipeline as fast as it takes them
/// (for at most `n / 3000 + 5` seconds) and waits until every accepted one
/// reached the backend; returns how many and how long.
async fn push_backlog(args: &Args, stack: &Stack, n: u64) -> anyhow::Result<(u64, Duration)> {
    let opts = load::Options {
        connections: args.connections,
        warmup: Duration::ZERO,
        // The connections stop at `max_requests`; the window only bounds a
        // slow pipeline.
        measure: Duration::from_secs(n / 3000 + 5),
        max_requests: n,
        request_timeout: Duration::from_secs(10),
        body_bytes: args.body_bytes,
        pace: None,
        record_accepts: false,
    };
    let target = load::Target {
        addr: stack.ingress,
        path: format!("/api/webhooks/careem/{ACCOUNT}"),
        secret: SecretString::from(SECRET),
    };
    let from = Instant::now();
    let (outcome, ()) = load::run(target, &opts, &[], || ()).await;
    if !outcome.failures.is_empty() || outcome.accepted == 0 {
        bail!(
            "backlog: {} of {n} accepted, failures {:?}",
            outcome.accepted,
            outcome.failures
        );
    }
    let accepted = outcome.accepted;
    if !stack
        .backend
        .wait_for(accepted, Duration::from_secs(args.drain_timeout))
        .await
    {
        bail!(
            "backlog: {} of {accepted} orders reached the backend",
            stack.backend.count()
        );
    }
    let (_, dups) = stack.backend.first_arrivals();
    if dups > 0 {
        bail!("backlog: {dups} orders reached the backend twice");
    }
    Ok((accepted, from.elapsed()))
}

async fn insert_rate(args: &Args) -> anyhow::Result<()> {
    println!(
        "\n== insert rate: {} orders through the pipeline, then a ledger against the backlog (LEDGER_BATCH {:?}) ==",
        args.backlog_orders, args.batches
    );
    let server = PgUrl::parse(&args.database_url)?;
    let stack = e2e::start(&args.e2e()).await?;
    let (orders, took) = push_backlog(args, &stack, args.backlog_orders).await?;
    let counts = stream_counts(&stack.js).await?;
    let published: u64 = counts.iter().map(|c| c.0).sum();
    println!(
        "  backlog: {orders} orders delivered in {:.1} s; streams hold {} messages ({}), {:.2} per order",
        took.as_secs_f64(),
        published,
        SOURCES
            .iter()
            .zip(&counts)
            .map(|((s, _, _), c)| format!("{s} {}", c.0))
            .collect::<Vec<_>>()
            .join(", "),
        published as f64 / orders as f64
    );
    for &batch in &args.batches {
        // A fresh database and the ledger's consumers deleted: it starts
        // from each stream's first message.
        for (stream, durable, _) in SOURCES {
            if let Ok(s) = stack.js.get_stream(stream).await {
                let _ = s.delete_consumer(durable).await;
            }
        }
        procs::wait_quiet(args.max_other, Duration::from_secs(args.quiet_wait)).await;
        let db = Db::create(&server)?;
        let url = db.url();
        let machine_before = procs::machine_cpu_seconds();
        let pg_before = PgCpu::now();
        let nats_before = procs::cpu_seconds(stack.nats.pid()).unwrap_or(f64::NAN);
        let spawned = Instant::now();
        let ledger = start_ledger(
            &stack,
            db,
            url,
            args,
            &[("LEDGER_BATCH".into(), batch.to_string())],
        )
        .await?;
        let ready = spawned.elapsed();
        let mut first_row: Option<(Instant, f64)> = None;
        let deadline = Instant::now() + Duration::from_secs(args.ledger_timeout);
        let mut samples: Vec<(f64, f64)> = Vec::new();
        let done = loop {
            let text = procs::metrics_text(ledger.ops).await;
            let stored = metric_sum(&text, "ledger_rows_inserted_total")
                + metric_sum(&text, "ledger_rows_unparsed_total");
            let now = Instant::now();
            samples.push((now.duration_since(spawned).as_secs_f64(), stored));
            if stored > 0.0 && first_row.is_none() {
                first_row = Some((now, stored));
            }
            if stored as u64 >= published {
                break now;
            }
            if now > deadline {
                bail!(
                    "LEDGER_BATCH={batch}: only {stored} of {published} messages stored within {:?}",
                    deadline.duration_since(spawned)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let ledger_cpu = procs::cpu_seconds(ledger.server.pid()).unwrap_or(f64::NAN);
        let pg_after = PgCpu::now();
        let nats_cpu = procs::cpu_seconds(stack.nats.pid()).unwrap_or(f64::NAN) - nats_before;
        let backends = ledger.db.backend_pids();
        let machine = match (machine_before, procs::machine_cpu_seconds()) {
            (Some(b), Some(a)) => [a[0] - b[0], a[1] - b[1], a[2] - b[2]],
            _ => [f64::NAN; 3],
        };
        let (t1, s1) = first_row.expect("set before done");
        let steady = (published as f64 - s1) / done.duration_since(t1).as_secs_f64();
        let whole = done.duration_since(spawned);
        let per = |s: f64| s * 1e6 / published as f64;
        let cluster = pg_after.since(&pg_before, None);
        let own = pg_after.since(&pg_before, Some(&backends));
        println!(
            "  LEDGER_BATCH={batch}: {} messages/s stored ({} orders/s); all {published} in {:.1} s from the process start (ready after {:.2} s, first row at {:.2} s)",
            thousands(steady),
            thousands(steady * orders as f64 / published as f64),
            whole.as_secs_f64(),
            ready.as_secs_f64(),
            t1.duration_since(spawned).as_secs_f64(),
        );
        println!(
            "    CPU-s (µs per message): ledger {ledger_cpu:.1} ({:.1}), postgres backends {own:.1} ({:.1}), postgres cluster {cluster:.1} ({:.1}), nats-server {nats_cpu:.1} ({:.1}); machine busy {:.1}, idle {:.1}, steal {:.1}",
            per(ledger_cpu),
            per(own),
            per(cluster),
            per(nats_cpu),
            machine[0],
            machine[1],
            machine[2]
        );
        let progress: Vec<String> = samples
            .iter()
            .step_by((samples.len() / 8).max(1))
            .map(|(t, s)| format!("{t:.1}s {s:.0}"))
            .collect();
        println!(
            "    progress (s since start, stored): {}",
            progress.join(", ")
        );
        let (rows, _) =
            settle_and_check(&stack, &ledger, Duration::from_secs(args.ledger_timeout)).await?;
        println!("    checked: {rows} rows, each stream's messages once");
        let write = procs::metrics_text(ledger.ops).await;
        println!(
            "    batches written {:.0}, mean {:.0} messages, mean write {:.1} ms",
            metric_sum(&write, "ledger_batch_size_messages_count"),
            metric_sum(&write, "ledger_batch_size_messages_sum")
                / metric_sum(&write, "ledger_batch_size_messages_count").max(1.0),
            metric_sum(&write, "ledger_write_duration_seconds_sum") * 1e3
                / metric_sum(&write, "ledger_write_duration_seconds_count").max(1.0)
        );
        drop(ledger);
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Part 3: catch-up after a database outage.

async fn outage(args: &Args, rate: f64) -> anyhow::Result<()> {
    let lead = Duration::from_secs(args.outage_lead_secs);
    let cut_for = Duration::from_secs(args.outage_secs);
    let after = Duration::from_secs(args.outage_after_secs);
    println!(
        "\n== outage: paced {rate:.0} orders/s; the ledger's database cut for {} s after {} s, load for {} s after the restore ==",
        cut_for.as_secs(),
        lead.as_secs(),
        after.as_secs()
    );
    let server = PgUrl::parse(&args.database_url)?;
    let stack = e2e::start(&args.e2e()).await?;
    let proxy = Proxy::start(server.upstream()).await?;
    let db = Db::create(&server)?;
    let url = db.url_via(proxy.port);
    let ledger = start_ledger(&stack, db, url, args, &[]).await?;
    println!(
        "  ledger on {} through the proxy on 127.0.0.1:{}",
        ledger.db.summary(),
        proxy.port
    );
    procs::wait_quiet(args.max_other, Duration::from_secs(args.quiet_wait)).await;
    let warmup = Duration::from_secs(args.warmup);
    let opts = load::Options {
        connections: args.connections,
        warmup,
        measure: lead + cut_for + after,
        max_requests: 20_000_000,
        request_timeout: Duration::from_secs(10),
        body_bytes: args.body_bytes,
        pace: Some(rate),
        record_accepts: false,
    };
    let target = load::Target {
        addr: stack.ingress,
        path: format!("/api/webhooks/careem/{ACCOUNT}"),
        secret: SecretString::from(SECRET),
    };
    let watch: Vec<(&str, u32)> = STAGES
        .iter()
        .zip(&stack.stages)
        .map(|(n, s)| (*n, s.pid()))
        .chain([
            ("nats-server", stack.nats.pid()),
            ("ledger", ledger.server.pid()),
        ])
        .collect();

    struct Timeline {
        threshold: u64,
        cut_at: Instant,
        restored_at: Instant,
        delivered_during: u64,
        max_lag: u64,
        caught_up: Option<Duration>,
        samples: Vec<(f64, Vec<u64>)>,
    }
    let control = async {
        let started = Instant::now();
        let mut pre_max = 0u64;
        let mut pre: Vec<u64> = Vec::new();
        let mut samples = Vec::new();
        let cut_due = started + warmup + lead;
        while Instant::now() < cut_due {
            if let Some(v) = ledger_lags(&stack.js).await {
                let l: u64 = v.iter().sum();
                if Instant::now() > started + warmup {
                    pre_max = pre_max.max(l);
                    pre.push(l);
                }
                samples.push((started.elapsed().as_secs_f64(), v));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let at_cut = stack.backend.count();
        proxy.cut();
        let cut_at = Instant::now();
        println!(
            "  cut at {:.1} s (ledger lag before: max {pre_max})",
            started.elapsed().as_secs_f64()
        );
        let mut max_lag = 0;
        while cut_at.elapsed() < cut_for {
            if let Some(v) = ledger_lags(&stack.js).await {
                let l: u64 = v.iter().sum();
                max_lag = max_lag.max(l);
                samples.push((started.elapsed().as_secs_f64(), v));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let delivered_during = stack.backend.count() - at_cut;
        proxy.restore();
        let restored_at = Instant::now();
        println!(
            "  restored at {:.1} s: {delivered_during} orders reached the backend during the outage ({:.0}/s), ledger lag {max_lag}",
            started.elapsed().as_secs_f64(),
            delivered_during as f64 / cut_for.as_secs_f64()
        );
        // Back to its level before the cut: the 90th percentile of the
        // lag sampled under the same load before it (at least 1,000
        // messages, a batch's worth per stream).
        pre.sort_unstable();
        let threshold = pre
            .get((pre.len() * 9 / 10).min(pre.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
            .max(1000);
        let mut caught_up = None;
        let load_end = started + warmup + lead + cut_for + after;
        while Instant::now() < load_end || caught_up.is_none() {
            if restored_at.elapsed() > Duration::from_secs(args.ledger_timeout) {
                break;
            }
            if let Some(v) = ledger_lags(&stack.js).await {
                let l: u64 = v.iter().sum();
                max_lag = max_lag.max(l);
                samples.push((started.elapsed().as_secs_f64(), v));
                if caught_up.is_none() && l <= threshold {
                    caught_up = Some(restored_at.elapsed());
                    println!(
                        "  caught up (lag {l} ≤ {threshold}, the level before the cut) {:.1} s after the restore",
                        restored_at.elapsed().as_secs_f64()
                    );
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Timeline {
            threshold,
            cut_at,
            restored_at,
            delivered_during,
            max_lag,
            caught_up,
            samples,
        }
    };
    let ((outcome, pg_before), t) =
        tokio::join!(load::run(target, &opts, &watch, PgCpu::now), control);
    let pg_after = PgCpu::now();
    let backends = ledger.db.backend_pids();
    let _ = t.cut_at;
    println!(
        "  load: {} accepted ({:.0}/s in the window), failures {:?}",
        outcome.accepted,
        outcome.rate(),
        outcome.failures
    );
    let all = stack
        .backend
        .wait_for(outcome.accepted, Duration::from_secs(args.drain_timeout))
        .await;
    let (_, dups) = stack.backend.first_arrivals();
    let text = procs::metrics_text(ledger.ops).await;
    println!(
        "  ledger: write errors {:.0}, outages ended {:.1} s in all, db up {:.0}",
        metric_sum(&text, "ledger_write_errors_total"),
        metric_sum(&text, "ledger_db_outages_ended_seconds_total"),
        metric_sum(&text, "ledger_db_up"),
    );
    let mut cpu: Vec<(String, f64)> = outcome
        .cpu
        .iter()
        .map(|(n, s)| {
            (
                if n == "client" {
                    "bench".into()
                } else {
                    n.clone()
                },
                *s,
            )
        })
        .collect();
    let cluster = pg_after.since(&pg_before, None);
    cpu.insert(
        cpu.len() - 3,
        (
            "postgres (ledger's backends)".into(),
            pg_after.since(&pg_before, Some(&backends)),
        ),
    );
    cpu.insert(cpu.len() - 3, ("postgres (whole cluster)".into(), cluster));
    if let Some(o) = cpu.iter_mut().find(|(n, _)| n == "other") {
        o.1 = (o.1 - cluster).max(0.0);
    }
    println!(
        "  CPU-s over the {:.0} s of load (µs per accepted order): {}",
        outcome.window.as_secs_f64(),
        pipeline::show_cpu(&cpu, outcome.accepted)
    );
    let lag_line: Vec<String> = t
        .samples
        .iter()
        .step_by(20)
        .map(|(s, v)| {
            format!(
                "{s:.0}s {} ({})",
                v.iter().sum::<u64>(),
                v.iter()
                    .map(|x| x.to_string())
                    .collect::<Vec<_>>()
                    .join("/")
            )
        })
        .collect();
    println!(
        "  ledger lag every 5 s: total (WEBHOOKS/ORDERS/STATUS/OUTCOMES/DLQ): {}",
        lag_line.join(", ")
    );
    let settle_start = Instant::now();
    let check = settle_and_check(&stack, &ledger, Duration::from_secs(args.ledger_timeout)).await;
    let (rows, settled) = check?;
    // Until the lag was 0 (the counting query after it is not the ledger's).
    let all_stored = settle_start.duration_since(t.restored_at) + settled;
    println!(
        "  result: {} orders delivered during the {} s outage; the ledger's lag peaked at {} and was back to its level before the cut (≤ {}, the p90 of its lag before it) {} after the restore (the load ran {} s after it); lag 0 with all {rows} messages stored once {:.1} s after the restore",
        t.delivered_during,
        cut_for.as_secs(),
        t.max_lag,
        t.threshold,
        t.caught_up
            .map_or("NOT within the timeout".to_owned(), |d| format!(
                "{:.1} s",
                d.as_secs_f64()
            )),
        after.as_secs(),
        all_stored.as_secs_f64()
    );
    if !all || dups > 0 || !outcome.failures.is_empty() {
        bail!("outage: not every accepted order reached the backend once ({dups} duplicates)");
    }
    if t.delivered_during == 0 {
        bail!("outage: no order reached the backend while the database was cut");
    }
    if t.caught_up.is_none() {
        bail!("outage: the ledger did not catch up");
    }
    drop(ledger);
    drop(proxy);
    Ok(())
}

pub async fn run(args: Args) -> anyhow::Result<bool> {
    nats::server_bin()?;
    for s in STAGES.iter().chain(&["ledger"]) {
        pipeline::stage_bin(s)?;
    }
    let server = PgUrl::parse(&args.database_url)?;
    psql(&server.database("postgres"), "SELECT 1")
        .context("the PostgreSQL server of --database-url")?;
    println!("machine: {}", procs::machine());
    println!("nats-server: {}", nats::server_version());
    println!(
        "postgres: {}",
        psql(&server.database("postgres"), "SHOW server_version")
            .unwrap_or_default()
            .trim()
    );
    println!(
        "ledger bench: {} connections, {} B signed Careem webhooks, {} s warm-up + {} s measured; stage env {:?}, ledger env {:?}",
        args.connections, args.body_bytes, args.warmup, args.seconds, args.env, args.ledger_env
    );
    let mut max = None;
    if args.parts.contains(&Part::Side) {
        max = Some(side_by_side(&args).await?);
    }
    if args.parts.contains(&Part::Insert) {
        insert_rate(&args).await?;
    }
    if args.parts.contains(&Part::Outage) {
        let rate = match (args.outage_rate, max) {
            (Some(r), _) => r,
            (None, Some(m)) => (m * 0.5).round(),
            (None, None) => bail!("--outage-rate is required when the side part does not run"),
        };
        outage(&args, rate).await?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_keep_user_and_query_and_refuse_other_hosts() {
        let u =
            PgUrl::parse("postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable").unwrap();
        assert_eq!(
            u.database("x"),
            "postgres://postgres@127.0.0.1:5432/x?sslmode=disable"
        );
        assert_eq!(
            u.to("127.0.0.1", 6000, "x"),
            "postgres://postgres@127.0.0.1:6000/x?sslmode=disable"
        );
        assert_eq!(u.upstream(), "127.0.0.1:5432");
        let l = PgUrl::parse("postgresql://a:b@localhost/db").unwrap();
        assert_eq!(l.database("y"), "postgres://a:b@localhost:5432/y");
        assert_eq!(l.upstream(), "127.0.0.1:5432");
        assert!(PgUrl::parse("postgres://postgres@db.example.com:5432/postgres").is_err());
        assert!(PgUrl::parse("mysql://127.0.0.1/x").is_err());
    }

    #[test]
    fn sums_a_counter_over_its_labels() {
        let text = "# HELP ledger_rows_inserted Rows\nledger_rows_inserted_total{stream=\"orders\"} 10\nledger_rows_inserted_total{stream=\"webhooks\"} 5\nledger_rows_inserted_totalx 7\n";
        assert_eq!(metric_sum(text, "ledger_rows_inserted_total"), 15.0);
        assert_eq!(metric_sum(text, "ledger_db_up"), 0.0);
    }
}
