//! The command line: verbs, connection options and filters (DESIGN §3.5).

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap::{Args, Parser, Subcommand};
use shared::failure::FailureClass;

const EXAMPLES: &str = "\
Examples:
  dlq-inspector list                                   newest first, as a table
  dlq-inspector list --tenant acme --since 2h          one tenant, the last two hours
  dlq-inspector list --stage forwarder --error backend_5xx --json | jq .webhook_id
  dlq-inspector list --text \"unknown branch\"         entries whose error text says so
  dlq-inspector show 42                                every field, headers (secrets redacted), body
  dlq-inspector replay 42 43                           republish to the original subjects
  dlq-inspector replay --stage transformer --provider careem --dry-run
  dlq-inspector replay --tenant acme --since 2026-05-01T03:00:00Z --rate 5
  dlq-inspector release 42 --yes                       let the order's later events go without it
  dlq-inspector purge 17 --yes
  dlq-inspector stats --json
  dlq-inspector completions bash > /etc/bash_completion.d/dlq-inspector

An entry's id is its DLQ stream sequence. Replay republishes the original body
and headers to the original subject with `Nats-Msg-Id: replay:<id>` and
`Orderhub-Replay-Of: <id>`, keeps the webhook id (so the backend's
Idempotency-Key), waits for JetStream's ack, and only then deletes the entry.

A forwarder or status-sync entry's event holds the later events of its order
(ORDER_SEQUENCE) until it is replayed, released or purged: `show` lists what
waits behind it; `release` marks it released and keeps the entry (a replay
arms it again); `purge` releases it before it deletes the entry.

Exit status: 0 success, 1 failure (nothing or not everything done), 2 bad usage.";

/// The operator's CLI over orderhub's DLQ stream.
#[derive(Debug, Parser)]
#[command(
    name = "dlq-inspector",
    version,
    about = "See, understand, replay, release and purge orderhub's dead letters (the DLQ stream)",
    after_help = EXAMPLES
)]
pub struct Cli {
    #[command(flatten)]
    pub conn: ConnArgs,

    /// One JSON object per line instead of a table (for scripts)
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

/// Where NATS is and how to reach it.
#[derive(Debug, Clone, Args)]
pub struct ConnArgs {
    /// NATS server URL(s), comma separated
    #[arg(
        long,
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        global = true
    )]
    pub nats_url: String,

    /// NATS credentials file (.creds)
    #[arg(long, env = "NATS_CREDS", global = true)]
    pub creds: Option<PathBuf>,

    /// File holding the operator's NATS NKey seed (`SU...`)
    #[arg(long, env = "NATS_NKEY", global = true, conflicts_with = "creds")]
    pub nkey: Option<PathBuf>,

    #[command(flatten)]
    pub tls: shared::config::NatsTlsArgs,

    /// How long to wait for the connection and for each NATS request
    #[arg(
        long,
        env = "DLQ_INSPECTOR_TIMEOUT_MS",
        default_value_t = 5000,
        global = true
    )]
    pub timeout_ms: u64,
}

impl ConnArgs {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.max(1))
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Dead letters, newest first: id, age, stage, provider, tenant,
    /// deliveries, error class, short reason
    List {
        #[command(flatten)]
        filter: Filter,
        /// Show at most this many (the newest)
        #[arg(long)]
        limit: Option<usize>,
    },
    /// One entry: every field, the original headers (secrets redacted), the
    /// body (pretty-printed if JSON) and the full error
    Show {
        /// The entry's id (its DLQ stream sequence, from `list`)
        id: u64,
    },
    /// Republish entries to their original subjects so the pipeline takes
    /// them again, oldest first; each entry is deleted once JetStream acked
    /// its republish
    Replay {
        /// Entry ids; or select with the filters (or --all)
        #[arg(conflicts_with_all = ["provider", "tenant", "stage", "since", "error", "all"])]
        ids: Vec<u64>,
        #[command(flatten)]
        filter: Filter,
        /// Every entry in the DLQ
        #[arg(long)]
        all: bool,
        /// Replay at most this many (the oldest first): a canary
        #[arg(long)]
        limit: Option<usize>,
        /// Republishes per second, so a replay cannot flood a recovering
        /// backend; 0 = no limit
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
        /// List what would be replayed and change nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Let the later events of each entry's order go without it: its event
    /// becomes `released` in ORDER_SEQUENCE; the entry stays and can still
    /// be replayed (asks on a terminal unless --yes)
    Release {
        /// Entry ids; or select with the filters (or --all)
        #[arg(conflicts_with_all = ["provider", "tenant", "stage", "since", "error", "all"])]
        ids: Vec<u64>,
        #[command(flatten)]
        filter: Filter,
        /// Every entry in the DLQ
        #[arg(long)]
        all: bool,
        /// Do not ask; required when stdin is not a terminal
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Delete entries for good, releasing what waits behind each (asks on a
    /// terminal unless --yes)
    Purge {
        /// Entry ids; or select with the filters (or --all)
        #[arg(conflicts_with_all = ["provider", "tenant", "stage", "since", "error", "all"])]
        ids: Vec<u64>,
        #[command(flatten)]
        filter: Filter,
        /// Every entry in the DLQ
        #[arg(long)]
        all: bool,
        /// Do not ask; required when stdin is not a terminal
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Counts by stage, provider, tenant and error class; the oldest entry
    Stats {
        #[command(flatten)]
        filter: Filter,
    },
    /// Print a shell completion script
    Completions {
        /// bash, zsh, fish, elvish or powershell
        shell: clap_complete::Shell,
    },
}

/// Which entries a verb applies to; all given filters must match.
#[derive(Debug, Clone, Default, Args)]
pub struct Filter {
    /// Only this provider (careem, talabat, ...)
    #[arg(long, value_parser = token)]
    pub provider: Option<String>,
    /// Only this tenant (restaurant company id)
    #[arg(long, value_parser = token)]
    pub tenant: Option<String>,
    /// Only this stage (fetcher, transformer, forwarder, status-sync)
    #[arg(long, value_parser = token)]
    pub stage: Option<String>,
    /// Only entries dead-lettered since: a duration ago (`90m`, `2h`, `3d`)
    /// or an RFC 3339 time (`2026-05-01T03:00:00Z`)
    #[arg(long, value_parser = parse_since)]
    pub since: Option<Since>,
    /// Only entries of this failure class (the README's operator section
    /// lists them: backend_5xx, unmapped_product, stale, ...)
    #[arg(long, value_parser = failure_class)]
    pub error: Option<FailureClass>,
    /// Only entries whose error text contains this (any case)
    #[arg(long)]
    pub text: Option<String>,
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        self.provider.is_none()
            && self.tenant.is_none()
            && self.stage.is_none()
            && self.since.is_none()
            && self.error.is_none()
            && self.text.is_none()
    }

    /// The DLQ subject the server can filter on (`dlq.<stage>.<provider>`,
    /// `*` for an unset token).
    pub fn subject(&self) -> String {
        if self.stage.is_none() && self.provider.is_none() {
            return shared::subjects::DLQ_ALL.to_owned();
        }
        shared::subjects::dead_letter(
            self.stage.as_deref().unwrap_or("*"),
            self.provider.as_deref().unwrap_or("*"),
        )
    }
}

/// `--since`: a moment, resolved against the clock when the command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    Ago(Duration),
    At(SystemTime),
}

impl Since {
    pub fn resolve(self, now: SystemTime) -> SystemTime {
        match self {
            Since::Ago(d) => now.checked_sub(d).unwrap_or(SystemTime::UNIX_EPOCH),
            Since::At(t) => t,
        }
    }
}

pub fn parse_since(s: &str) -> Result<Since, String> {
    let s = s.trim();
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(Since::Ago(d));
    }
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(|t| Since::At(t.into()))
        .map_err(|_| {
            format!("{s:?} is neither a duration (`2h`, `90m`) nor an RFC 3339 time (`2026-05-01T03:00:00Z`)")
        })
}

/// Ids become subject tokens: a wildcard or dot would widen the filter.
fn token(s: &str) -> Result<String, String> {
    shared::subjects::check_token(s)
        .map(|()| s.to_owned())
        .map_err(|e| e.to_string())
}

/// A class of the failure vocabulary; anything else is refused with the list.
fn failure_class(s: &str) -> Result<FailureClass, String> {
    s.parse()
        .map_err(|e: shared::failure::UnknownFailureClass| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn since_takes_a_duration_or_a_time() {
        assert_eq!(parse_since("2h"), Ok(Since::Ago(Duration::from_secs(7200))));
        assert_eq!(
            parse_since("2026-05-01T03:00:00+03:00"),
            Ok(Since::At(
                humantime::parse_rfc3339("2026-05-01T00:00:00Z").unwrap()
            ))
        );
        assert!(parse_since("yesterday-ish").is_err());
        let now = humantime::parse_rfc3339("2026-05-01T03:00:00Z").unwrap();
        assert_eq!(
            Since::Ago(Duration::from_secs(3600)).resolve(now),
            humantime::parse_rfc3339("2026-05-01T02:00:00Z").unwrap()
        );
    }

    #[test]
    fn filters_narrow_the_subject_and_refuse_wildcards() {
        let f = |stage: Option<&str>, provider: Option<&str>| Filter {
            stage: stage.map(str::to_owned),
            provider: provider.map(str::to_owned),
            ..Filter::default()
        };
        assert_eq!(f(None, None).subject(), "dlq.>");
        assert_eq!(f(Some("forwarder"), None).subject(), "dlq.forwarder.*");
        assert_eq!(f(None, Some("careem")).subject(), "dlq.*.careem");
        assert_eq!(
            f(Some("transformer"), Some("talabat")).subject(),
            "dlq.transformer.talabat"
        );
        assert!(token("a.b").is_err());
        assert!(token(">").is_err());
        assert_eq!(token("acme"), Ok("acme".to_owned()));
    }
}
