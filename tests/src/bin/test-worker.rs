//! A worker process for the integration tests: the shared worker loop (and
//! its mover) on the `WEBHOOKS`/`transformer` consumer with a scripted
//! handler, so tests can SIGKILL or SIGTERM a real process mid-delivery.
//! It prints one line per handled delivery: `handled <seq> <delivered> <outcome>`.

use std::io::Write;
use std::time::Duration;

use clap::Parser;
use shared::app::{StageSpec, run_stage, shutdown_on_signals};
use shared::config::CommonArgs;
use shared::failure::FailureClass;
use shared::worker::{Delivery, Failure, Handler, Outcome};

#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// ok | fail | hold-last | slow
    #[arg(long, default_value = "ok")]
    mode: String,
    /// How long each delivery takes in `slow` mode
    #[arg(long, default_value_t = 200)]
    handle_ms: u64,
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// How long one pull request waits for messages
    #[arg(long, default_value_t = 1000)]
    pull_expires_ms: u64,
}

struct Scripted {
    mode: String,
    handle: Duration,
}

fn say(line: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

impl Handler for Scripted {
    async fn handle(&self, d: &Delivery) -> Outcome {
        let outcome = match self.mode.as_str() {
            "ok" => Outcome::Ack,
            "fail" => Outcome::Retry(Failure::new(FailureClass::BackendError, "scripted failure")),
            "hold-last" if d.is_last => {
                say(format!("holding {} {}", d.stream_seq, d.delivered));
                std::future::pending::<()>().await;
                unreachable!()
            }
            "hold-last" => {
                Outcome::Retry(Failure::new(FailureClass::BackendError, "scripted failure"))
            }
            "slow" => {
                tokio::time::sleep(self.handle).await;
                Outcome::Ack
            }
            other => Outcome::DeadLetter(Failure::new(
                FailureClass::InvalidPayload,
                format!("unknown mode {other}"),
            )),
        };
        let label = match &outcome {
            Outcome::Ack => "ack",
            Outcome::Retry(_) => "retry",
            Outcome::DeadLetter(_) => "dead_letter",
        };
        say(format!("handled {} {} {label}", d.stream_seq, d.delivered));
        outcome
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let hub = match shared::app::init(&args.common) {
        Ok(hub) => hub,
        Err(code) => return code,
    };
    let spec = StageSpec {
        stage: "transformer",
        stream: "WEBHOOKS",
        durable: "transformer",
        streams: &["WEBHOOKS", "DLQ", "ADVISORIES"],
        buckets: &[],
    };
    let handler = Scripted {
        mode: args.mode.clone(),
        handle: Duration::from_millis(args.handle_ms),
    };
    let concurrency = args.concurrency;
    let pull_expires = Duration::from_millis(args.pull_expires_ms);
    let result = run_stage(
        &args.common,
        &hub,
        &spec,
        |_, _| handler,
        |o| {
            o.concurrency = concurrency;
            o.pull_expires = pull_expires;
        },
        shutdown_on_signals(),
    )
    .await;
    shared::app::exit_code(result)
}
