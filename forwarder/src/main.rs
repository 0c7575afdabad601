use clap::Parser;
use shared::config::CommonArgs;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// orderhub forwarder: delivers canonical orders to tenant backends.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Requests in flight per tenant in this process
    #[arg(long, env = "FORWARDER_CONCURRENCY", default_value_t = 256)]
    concurrency: usize,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let hub = match shared::app::init(&args.common) {
        Ok(hub) => hub,
        Err(code) => return code,
    };
    let concurrency = args.concurrency.max(1);
    let result = shared::app::run_stage(
        &args.common,
        &hub,
        &forwarder::SPEC,
        |registry, js| forwarder::Forwarder::new(&hub, registry, js.clone()),
        |o| o.concurrency = concurrency,
        shared::app::shutdown_on_signals(),
    )
    .await;
    shared::app::exit_code(result)
}
