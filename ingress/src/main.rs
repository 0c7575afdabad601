use clap::Parser;
use shared::config::{CommonArgs, HubConfig};

/// orderhub ingress: verifies provider webhooks and stores them in JetStream.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    ingress: ingress::IngressArgs,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    shared::telemetry::init_tracing(args.common.log_format);
    let hub = match HubConfig::load(args.common.hub_config.as_deref()) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let shutdown = shared::app::shutdown_on_signals();
    match ingress::start(&args.common, &args.ingress, hub, shutdown).await {
        Ok(running) => {
            let _ = running.task.await;
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
