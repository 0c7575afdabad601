//! The status-sync binary: flags, telemetry, the token key, then
//! [`status_sync::run`].

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use shared::config::CommonArgs;
use shared::live::SourceArgs;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Carries the restaurants' answers (accept, reject, ready, ...) from the
/// STATUS stream to the providers' APIs before their deadlines, and rejects
/// new orders the forwarder dead-lettered (accounts with auto_reject).
///
/// Provider tokens are kept in the PROVIDER_TOKENS bucket, encrypted with
/// TOKEN_STORE_KEY (base64 of 32 random bytes) or the file named by
/// TOKEN_STORE_KEY_FILE: the same key for every replica and stage.
#[derive(Debug, Parser)]
#[command(name = "status-sync", version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,

    #[command(flatten)]
    source: SourceArgs,

    /// Commands carried at once by this process
    #[arg(long, env = "STATUS_SYNC_CONCURRENCY", default_value_t = 64)]
    concurrency: usize,

    /// How long a publish (a status_failed order, an automatic reject) may
    /// wait for JetStream's ack before it is retried
    #[arg(long, env = "STATUS_SYNC_PUBLISH_TIMEOUT_MS", default_value_t = 5000)]
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
    let prepared = match status_sync::Prepared::new(hub.load(), key) {
        Ok(p) => p.follow(hub),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let options = status_sync::Options {
        concurrency: args.concurrency,
        publish_timeout: Duration::from_millis(args.publish_timeout_ms),
    };
    let shutdown = shared::app::shutdown_on_signals();
    shared::app::exit_code(status_sync::run(&args.common, prepared, options, shutdown).await)
}
