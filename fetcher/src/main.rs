//! The fetcher binary: flags, telemetry, the token key, then [`fetcher::run`].

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use shared::config::CommonArgs;
use shared::live::SourceArgs;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Fetches the orders Uber Eats and Wolt only notify about from their APIs
/// (WEBHOOKS `webhooks.raw.{ubereats,wolt}.>` to `webhooks.fetched.>`).
///
/// Provider tokens are kept in the PROVIDER_TOKENS bucket, encrypted with
/// TOKEN_STORE_KEY (base64 of 32 random bytes) or the file named by
/// TOKEN_STORE_KEY_FILE: the same key for every replica and stage.
#[derive(Debug, Parser)]
#[command(name = "fetcher", version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,

    #[command(flatten)]
    source: SourceArgs,

    /// Orders fetched at once by this process
    #[arg(long, env = "FETCHER_CONCURRENCY", default_value_t = 64)]
    concurrency: usize,

    /// How long a publish to WEBHOOKS may wait for JetStream's ack before
    /// the notification is retried
    #[arg(long, env = "FETCHER_PUBLISH_TIMEOUT_MS", default_value_t = 5000)]
    publish_timeout_ms: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let hub = match shared::app::init_live(&args.common, &args.source).await {
        Ok(hub) => hub,
        Err(code) => return code,
    };
    if args.concurrency == 0 || args.publish_timeout_ms == 0 {
        eprintln!("error: --concurrency and --publish-timeout-ms must be above 0");
        return ExitCode::from(2);
    }
    let key = shared::tokens::TokenKey::from_env(&|name| std::env::var(name).ok());
    let prepared = match fetcher::Prepared::new(hub.load(), key) {
        Ok(p) => p.follow(hub),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let options = fetcher::Options {
        concurrency: args.concurrency,
        publish_timeout: Duration::from_millis(args.publish_timeout_ms),
    };
    let shutdown = shared::app::shutdown_on_signals();
    shared::app::exit_code(fetcher::run(&args.common, prepared, options, shutdown).await)
}
