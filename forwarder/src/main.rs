use clap::Parser;
use shared::config::CommonArgs;
use shared::live::SourceArgs;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// orderhub forwarder: delivers canonical orders to tenant backends.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    source: SourceArgs,
    /// Requests in flight per tenant in this process
    #[arg(long, env = "FORWARDER_CONCURRENCY", default_value_t = 256)]
    concurrency: usize,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let hub = match shared::app::init_live(&args.common, &args.source).await {
        Ok(hub) => hub,
        Err(code) => return code,
    };
    let concurrency = args.concurrency.max(1);
    let result = shared::app::run_stage_live(
        &args.common,
        &hub,
        &forwarder::SPEC,
        |registry, js| {
            // Events waiting for an earlier event of their order never take
            // more than half the handlers (shared::sequence).
            forwarder::Forwarder::live(hub.clone(), registry, js.clone())
                .with_max_waiting(concurrency / 2)
        },
        |o| o.concurrency = concurrency,
        shared::app::shutdown_on_signals(),
    )
    .await;
    shared::app::exit_code(result)
}
