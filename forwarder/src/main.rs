use clap::Parser;
use shared::config::{CommonArgs, HubConfig};

/// orderhub forwarder: delivers canonical orders to tenant backends.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Requests in flight per tenant in this process
    #[arg(long, env = "FORWARDER_CONCURRENCY", default_value_t = 64)]
    concurrency: usize,
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
    let concurrency = args.concurrency.max(1);
    let result = shared::app::run_stage(
        &args.common,
        &hub,
        &forwarder::SPEC,
        |registry, _| forwarder::Forwarder::new(&hub, registry),
        |o| o.concurrency = concurrency,
        shared::app::shutdown_on_signals(),
    )
    .await;
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
