//! `orderhub-bench`: load benchmarks of orderhub's stages, each against its
//! own nats-server on 127.0.0.1 with a fresh store, next to a bare baseline
//! measured in the same run. One subcommand per stage (`ingress`,
//! `forwarder`), one for the whole pipeline (`e2e`), one for the pull path
//! of Uber Eats notifications (`pull`) and one for the way back to the
//! provider (`status`), one for the pipeline with the audit ledger beside
//! it (`ledger`), plus the internal servers they start as separate
//! processes (`baseline-server`).

mod baseline;
mod e2e;
mod forwarder_bench;
mod ingress_bench;
mod ledger_bench;
mod load;
mod nats;
mod pipeline;
mod procs;
mod pull;
mod stats;
mod status;

use clap::{Parser, Subcommand};

/// Load benchmarks of orderhub's stages against real nats-server processes.
#[derive(Debug, Parser)]
#[command(name = "orderhub-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The ingress (signed 2 KiB webhooks over keep-alive connections)
    /// against a bare warp+HMAC+JetStream baseline, alternating rounds
    Ingress(ingress_bench::Args),
    /// The release forwarder against a fast backend in the bench process:
    /// orders/s to drain pre-loaded orders, and publish-to-backend latency
    /// at a paced rate
    Forwarder(forwarder_bench::Args),
    /// The whole pipeline (ingress → transformer → forwarder → a fast
    /// backend in the bench process): sustained webhooks/s, acceptance-to-
    /// backend latency at full and paced load, RSS, consumer lag
    E2e(e2e::Args),
    /// The pull path (Uber Eats notification → fetcher → fake provider API
    /// → transformer → ORDERS): sustained notifications/s, notification-
    /// to-order latency when paced, token mints, errors, CPU and RSS, for
    /// several FETCHER_CONCURRENCY values; and the fake provider alone
    Pull(pull::Args),
    /// The way back (backend 2xx → auto-accept → status-sync → the fake
    /// Uber Eats API): status calls/s to drain, 2xx-to-accept latency when
    /// paced, CPU and RSS of the forwarder and status-sync
    Status(status::Args),
    /// The pipeline with the release ledger beside it (issue 16): orders/s
    /// and p99 without and with it in alternating rounds, the ledger's
    /// insert rate against a backlog, and its catch-up after a database
    /// outage behind a loopback proxy; on a database the bench creates
    Ledger(ledger_bench::Args),
    /// (internal) The bare baseline server the `ingress` benchmark measures
    /// against: warp, POST /webhook, one HMAC, publish, await the ack, 202
    BaselineServer(baseline::Args),
}

/// SIGINT or SIGTERM.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = tokio::signal::ctrl_c() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        },
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}

/// The pipeline benchmarks' runtime: the load generator and the backend
/// share it, so it gets two threads by default (it is charged as `bench`).
fn two_threads(
    run: impl std::future::Future<Output = anyhow::Result<bool>>,
) -> anyhow::Result<bool> {
    with_threads(2, run)
}

fn with_threads(
    threads: usize,
    run: impl std::future::Future<Output = anyhow::Result<bool>>,
) -> anyhow::Result<bool> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?;
    rt.block_on(async {
        tokio::select! {
            result = run => result,
            signal = interrupted() => {
                eprintln!("interrupted ({signal}): servers stopped");
                Ok(false)
            }
        }
    })
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Ingress(args) => {
            // The load generator's runtime: one thread by default, like
            // `wrk -t1`, so it takes no more of the two cores than it needs.
            let rt = if args.client_threads <= 1 {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
            } else {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(args.client_threads)
                    .enable_all()
                    .build()
            };
            rt.map_err(anyhow::Error::from).and_then(|rt| {
                rt.block_on(async {
                    // Interrupted: dropping the run kills its servers.
                    tokio::select! {
                        result = ingress_bench::run(args) => result,
                        signal = interrupted() => {
                            eprintln!("interrupted ({signal}): servers stopped");
                            Ok(false)
                        }
                    }
                })
            })
        }
        Command::Forwarder(args) => two_threads(forwarder_bench::run(args)),
        Command::E2e(args) => {
            let threads = args.client_threads;
            with_threads(threads, e2e::run(args))
        }
        Command::Pull(args) => two_threads(pull::run(args)),
        Command::Status(args) => two_threads(status::run(args)),
        Command::Ledger(args) => {
            let threads = args.client_threads;
            with_threads(threads, ledger_bench::run(args))
        }
        // The same runtime as the ingress's `#[tokio::main]`: one worker
        // per core.
        Command::BaselineServer(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(baseline::serve(args))),
    };
    match result {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
