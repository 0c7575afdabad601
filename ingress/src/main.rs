use clap::Parser;
use shared::config::CommonArgs;
use shared::live::SourceArgs;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// orderhub ingress: verifies provider webhooks and stores them in JetStream.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    source: SourceArgs,
    #[command(flatten)]
    ingress: ingress::IngressArgs,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let hub = match shared::app::init_live(&args.common, &args.source).await {
        Ok(hub) => hub,
        Err(code) => return code,
    };
    let shutdown = shared::app::shutdown_on_signals();
    let result = match ingress::start_live(&args.common, &args.ingress, hub, shutdown).await {
        Ok(running) => running.task.await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    shared::app::exit_code(result)
}
