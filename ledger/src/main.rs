//! The ledger binary: with no subcommand it serves (consumes the streams
//! into PostgreSQL, answers the query API); `ledger order` and `ledger
//! stats` ask a running ledger's API; `ledger config import|export` move
//! the hub config between a TOML file and its tables.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use secrecy::{ExposeSecret, SecretString};
use shared::config::CommonArgs;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The audit ledger: writes every webhook, canonical order, decision, step
/// and dead letter to PostgreSQL, off the order's path, and answers "what
/// happened to order X?" and per-provider stats.
///
/// The operator token (OPERATOR_TOKEN, or the file OPERATOR_TOKEN_FILE
/// names) guards the API and is what `order` and `stats` present.
#[derive(Debug, Parser)]
#[command(name = "ledger", version)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    common: CommonArgs,

    /// PostgreSQL URL (postgres://user:password@host:5432/db); required to
    /// serve
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_parser = secret)]
    database_url: Option<SecretString>,

    /// Address of the query API (and the API `order`/`stats` ask when
    /// --api is not given)
    #[arg(long, env = "API_ADDR", default_value = "127.0.0.1:3003")]
    api_addr: SocketAddr,

    /// The operator token (16 characters at least)
    #[arg(long, env = "OPERATOR_TOKEN", hide_env_values = true, value_parser = secret)]
    operator_token: Option<SecretString>,

    /// A file holding the operator token (a trailing newline is ignored)
    #[arg(long, env = "OPERATOR_TOKEN_FILE")]
    operator_token_file: Option<PathBuf>,

    /// Days of history kept; older days are dropped whole
    #[arg(long, env = "LEDGER_RETENTION_DAYS", default_value_t = 30)]
    retention_days: u32,

    /// Messages written per transaction, at most 2000
    #[arg(long, env = "LEDGER_BATCH", default_value_t = 500)]
    batch: usize,

    /// How long a pull waits to fill a batch
    #[arg(long, env = "LEDGER_BATCH_WAIT_MS", default_value_t = 500)]
    batch_wait_ms: u64,

    /// Where the hub config comes from: file (HUB_CONFIG or the embedded
    /// default) or postgres (the hub's tables in DATABASE_URL); the ledger
    /// uses only its stream settings, which a restart applies
    #[arg(long, env = "CONFIG_SOURCE", value_enum, default_value = "file")]
    config_source: shared::live::ConfigSource,

    /// How often the config tables' version is compared
    /// (CONFIG_SOURCE=postgres)
    #[arg(long, env = "CONFIG_POLL_INTERVAL_MS", default_value_t = 30_000)]
    config_poll_interval_ms: u64,

    /// PostgreSQL connections per process (the writers and the API); with
    /// fewer than the writers, writers wait for a connection
    #[arg(long, env = "LEDGER_DB_MAX_CONNECTIONS", default_value_t = 12)]
    db_max_connections: u32,

    /// Writer loops per stream, each with a batch of its own in flight
    #[arg(long, env = "LEDGER_WRITERS", default_value_t = 2)]
    writers: usize,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// An order's timeline: every webhook, step, decision, provider call
    /// and dead letter, in time order
    Order {
        /// careem, talabat, ...
        provider: String,
        /// The provider's order id
        provider_order_id: String,
        /// Only this tenant's records
        #[arg(long)]
        tenant: Option<String>,
        /// The API's JSON instead of a table
        #[arg(long)]
        json: bool,
        /// The ledger API's URL (default: http://API_ADDR)
        #[arg(long)]
        api: Option<url::Url>,
    },
    /// The hub config tables (CONFIG_SOURCE=postgres) in DATABASE_URL
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// A provider's counts by outcome, account and tenant, and latency
    Stats {
        provider: String,
        /// The window (humantime: 15m, 1h, 7d)
        #[arg(long, default_value = "1h")]
        since: String,
        #[arg(long)]
        json: bool,
        #[arg(long)]
        api: Option<url::Url>,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigAction {
    /// Validate a TOML hub file fully (every secret it names resolved from
    /// this environment) and replace the tables' rows with it in one
    /// transaction, creating the tables first; an invalid file writes
    /// nothing
    Import {
        /// The hub file (the TOML HUB_CONFIG names)
        file: PathBuf,
    },
    /// Print the tables as a TOML hub file
    Export,
}

fn secret(s: &str) -> Result<SecretString, String> {
    Ok(SecretString::from(s.to_owned()))
}

/// The token from the flag/env or the file; at least 16 characters.
fn token(args: &Args) -> Result<SecretString, String> {
    let token = match (&args.operator_token, &args.operator_token_file) {
        (Some(_), Some(_)) => {
            return Err("set one of OPERATOR_TOKEN and OPERATOR_TOKEN_FILE, not both".into());
        }
        (Some(t), None) => t.expose_secret().trim().to_owned(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| format!("OPERATOR_TOKEN_FILE {}: {e}", path.display()))?
            .trim_end_matches(['\r', '\n'])
            .to_owned(),
        (None, None) => {
            return Err(
                "OPERATOR_TOKEN (or OPERATOR_TOKEN_FILE) is required: the API never runs open"
                    .into(),
            );
        }
    };
    if token.chars().count() < 16 {
        return Err("OPERATOR_TOKEN: at least 16 characters".into());
    }
    Ok(SecretString::from(token))
}

fn parse_args() -> Args {
    // The ledger's own default ops port: it runs beside the other stages.
    let mut matches = Args::command()
        .mut_arg("ops_addr", |a| a.default_value(ledger::DEFAULT_OPS_ADDR))
        .get_matches();
    Args::from_arg_matches_mut(&mut matches).unwrap_or_else(|e| e.exit())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = parse_args();
    match &args.command {
        Some(Command::Config { action }) => config(&args, action).await,
        Some(command) => query(&args, command).await,
        None => serve(args).await,
    }
}

/// `ledger config import|export`: exit 2 for a file that does not
/// validate or a missing DATABASE_URL, 1 when the database fails.
async fn config(args: &Args, action: &ConfigAction) -> ExitCode {
    let Some(url) = args.database_url.as_ref() else {
        eprintln!("error: DATABASE_URL is required for ledger config");
        return ExitCode::from(2);
    };
    let result = match action {
        ConfigAction::Import { file } => ledger::cli::config_import(url, file).await,
        ConfigAction::Export => ledger::cli::config_export(url).await,
    };
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(if e.is_invalid() { 2 } else { 1 })
        }
    }
}

async fn query(args: &Args, command: &Command) -> ExitCode {
    let token = match token(args) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let default_api =
        || url::Url::parse(&format!("http://{}/", args.api_addr)).expect("an address makes a URL");
    let run = async {
        match command {
            Command::Order {
                provider,
                provider_order_id,
                tenant,
                json,
                api,
            } => {
                let client = ledger::cli::Client {
                    api: api.clone().unwrap_or_else(default_api),
                    token,
                    timeout: Duration::from_secs(30),
                };
                client
                    .order(provider, provider_order_id, tenant.as_deref(), *json)
                    .await
            }
            Command::Config { .. } => unreachable!("handled by config()"),
            Command::Stats {
                provider,
                since,
                json,
                api,
            } => {
                let client = ledger::cli::Client {
                    api: api.clone().unwrap_or_else(default_api),
                    token,
                    timeout: Duration::from_secs(30),
                };
                client.stats(provider, since, *json).await
            }
        }
    };
    match run.await {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args) -> ExitCode {
    // Its own settings first: without a token it never starts, whatever
    // the hub config says.
    let options = match options(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let source = shared::live::SourceArgs {
        config_source: args.config_source,
        database_url: args.database_url.clone(),
        config_poll_interval_ms: args.config_poll_interval_ms,
    };
    // The ledger reads only the stream settings (restart-only); the live
    // config gives it the same sources and SIGHUP handling as every stage.
    let hub = match shared::app::init_live(&args.common, &source).await {
        Ok(live) => live.load(),
        Err(code) => return code,
    };
    let shutdown = shared::app::shutdown_on_signals();
    shared::app::exit_code(ledger::run(&args.common, &hub, options, shutdown).await)
}

fn options(args: &Args) -> Result<ledger::Options, String> {
    let token = token(args)?;
    let url = args
        .database_url
        .as_ref()
        .ok_or("DATABASE_URL is required to serve")?;
    let url = url.expose_secret();
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err("DATABASE_URL: not a PostgreSQL URL (postgres://user@host:5432/db)".into());
    }
    let database = url
        .parse()
        // sqlx's message may quote the URL: never shown.
        .map_err(|_| "DATABASE_URL: not a PostgreSQL URL (postgres://user@host:5432/db)")?;
    if args.batch == 0 || args.batch > ledger::MAX_BATCH {
        return Err(format!(
            "LEDGER_BATCH: {} is not within 1..={}",
            args.batch,
            ledger::MAX_BATCH
        ));
    }
    if args.batch_wait_ms == 0 {
        return Err("LEDGER_BATCH_WAIT_MS: must be above 0".into());
    }
    if args.retention_days == 0 {
        return Err("LEDGER_RETENTION_DAYS: must be above 0".into());
    }
    if !(1..=16).contains(&args.writers) {
        return Err(format!(
            "LEDGER_WRITERS: {} is not within 1..=16",
            args.writers
        ));
    }
    if args.db_max_connections < 2 {
        return Err("LEDGER_DB_MAX_CONNECTIONS: at least 2 (writers and the API)".into());
    }
    Ok(ledger::Options {
        database,
        api_addr: args.api_addr,
        token,
        retention_days: args.retention_days,
        batch: args.batch,
        batch_wait: Duration::from_millis(args.batch_wait_ms),
        max_connections: args.db_max_connections,
        writers: args.writers,
        retention_every: Duration::from_secs(3600),
    })
}
