//! The transformer binary: flags, telemetry, then [`transformer::run`].

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use shared::config::CommonArgs;
use shared::live::SourceArgs;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns verified raw webhooks (WEBHOOKS) into canonical orders (ORDERS).
#[derive(Debug, Parser)]
#[command(name = "transformer", version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,

    #[command(flatten)]
    source: SourceArgs,

    /// Webhooks converted and published at once by this process
    #[arg(long, env = "TRANSFORMER_CONCURRENCY", default_value_t = 256)]
    concurrency: usize,

    /// How long a publish to ORDERS may wait for JetStream's ack before the
    /// webhook is retried
    #[arg(long, env = "TRANSFORMER_PUBLISH_TIMEOUT_MS", default_value_t = 5000)]
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
    let options = transformer::Options {
        concurrency: args.concurrency,
        publish_timeout: Duration::from_millis(args.publish_timeout_ms),
    };
    let shutdown = shared::app::shutdown_on_signals();
    shared::app::exit_code(transformer::run_live(&args.common, hub, options, shutdown).await)
}
