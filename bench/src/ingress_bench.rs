//! `orderhub-bench ingress`: the real ingress binary against the bare
//! baseline, each as its own process with its own fresh nats-server, in
//! alternating rounds; medians (min–max) over the rounds and the ratio.
//!
//! After every run the stream must hold exactly as many messages as there
//! were 202 answers: nothing answered 2xx that JetStream did not store.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use async_nats::jetstream;
use secrecy::SecretString;

use crate::load::{self, Outcome};
use crate::nats::{self, NatsServer};
use crate::procs::{self, Server};
use crate::stats::{self, Spread, percentile};

/// The HMAC key of the benchmark's account (not a secret: a benchmark's).
const SECRET: &str = "orderhub-bench-careem-secret-0123456789abcdef";
const SECRET_ENV: &str = "BENCH_CAREEM_SECRET";
const ACCOUNT: &str = "bench-careem";
/// Every await on NATS outside the load is bounded by this.
const STEP: Duration = Duration::from_secs(20);

/// The hub config the ingress runs with: one careem account. The provider
/// rate limit is lifted: the default (5000/s, burst 10000) would answer 429
/// far below this machine's ceiling, and the benchmark measures the path,
/// not the limiter's setting. `trace_sample_percent` is the ingress's
/// setting of that name (100 is its default).
fn hub_toml(trace_sample_percent: u8) -> String {
    format!(
        r#"[[tenant]]
id = "bench"
backend_url = "http://127.0.0.1:9/orders"

[[account]]
id = "{ACCOUNT}"
provider = "careem"
tenant = "bench"
secret_envs = ["{SECRET_ENV}"]
default = true

[ingress]
trace_sample_percent = {trace_sample_percent}

[ingress.rate_limits]
careem = {{ per_second = 1000000000, burst = 1000000000 }}
"#
    )
}

/// The servers a round can measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// The bare baseline
    Baseline,
    /// The real `ingress` binary
    Ingress,
    /// The `ingress` binary again, with --alt-env on top (an A/B of a
    /// setting such as RUST_LOG or GLIBC_TUNABLES in the same rounds)
    IngressAlt,
    /// The baseline plus a `Nats-Msg-Id` on each message
    BaselineMsgid,
    /// The baseline plus `Nats-Msg-Id` and the `Orderhub-*` headers
    BaselineHeaders,
    /// The baseline publishing the ingress's whole message: `Nats-Msg-Id`,
    /// the `Orderhub-*` headers and `traceparent`
    BaselineHub,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Baseline => "baseline",
            Kind::Ingress => "ingress",
            Kind::IngressAlt => "ingress-alt",
            Kind::BaselineMsgid => "baseline-msgid",
            Kind::BaselineHeaders => "baseline-headers",
            Kind::BaselineHub => "baseline-hub",
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Length of each measured window, in seconds
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Warm-up before each window (not counted), in seconds
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,
    /// Concurrent keep-alive connections
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Rounds; each measures every server once, in order
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Size of each webhook body in bytes
    #[arg(long, default_value_t = 2048)]
    pub body_bytes: usize,
    /// The servers each round measures (the ratio is ingress / baseline)
    #[arg(long, value_delimiter = ',', default_value = "baseline,ingress")]
    pub servers: Vec<Kind>,
    /// Threads of the load generator's runtime
    #[arg(long, default_value_t = 1)]
    pub client_threads: usize,
    /// Stop a run after this many requests even if the window is not over
    #[arg(long, default_value_t = 5_000_000)]
    pub max_requests: u64,
    /// The ratio the ingress should reach
    #[arg(long, default_value_t = 0.85)]
    pub target: f64,
    /// Extra environment of the `ingress-alt` server, KEY=VALUE
    /// (repeatable), e.g. RUST_LOG=info
    #[arg(long, value_parser = key_value)]
    pub alt_env: Vec<(String, String)>,
    /// A run during which other processes took more than this share of the
    /// machine's CPU time is measured again (see --retries)
    #[arg(long, default_value_t = 0.05)]
    pub max_other: f64,
    /// How often a disturbed run is measured again before it is kept
    /// (marked) anyway
    #[arg(long, default_value_t = 5)]
    pub retries: usize,
    /// Before each run, wait up to this many seconds for other processes
    /// to leave the CPU (at most --max-other busy)
    #[arg(long, default_value_t = 300)]
    pub quiet_wait: u64,
    /// Record a `perf` profile (cpu-clock) of the server and of nats-server
    /// during each window into this directory
    #[arg(long)]
    pub perf_dir: Option<PathBuf>,
    /// The ingress's `trace_sample_percent`, and the share of sampled
    /// `traceparent`s baseline-hub sends (100 is the ingress's default)
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub trace_sample_percent: u8,
}

fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

/// One measured run.
struct Run {
    kind: Kind,
    outcome: Outcome,
    stored: u64,
    /// Other processes took more than --max-other of the CPU.
    disturbed: bool,
    /// nats-server's resident memory after the run, MiB.
    nats_rss: f64,
}

impl Run {
    fn ok(&self) -> bool {
        self.outcome.failures.is_empty() && self.stored == self.outcome.accepted
    }

    fn rate(&self) -> f64 {
        self.outcome.rate()
    }

    fn p(&self, q: f64) -> f64 {
        stats::ms(percentile(&self.outcome.latencies, q))
    }

    /// CPU seconds of `who` during the window.
    fn cpu_s(&self, who: &str) -> f64 {
        self.outcome
            .cpu
            .iter()
            .find(|(name, _)| name == who)
            .map_or(f64::NAN, |(_, s)| *s)
    }

    /// CPU µs per request answered in the window.
    fn cpu_us(&self, who: &str) -> f64 {
        self.cpu_s(who) * 1e6 / self.outcome.latencies.len().max(1) as f64
    }

    /// Share of the machine's CPU time that was idle during the window.
    fn idle(&self) -> f64 {
        let all: f64 = self.outcome.cpu.iter().map(|(_, s)| s).sum();
        self.cpu_s("idle") / all
    }

    /// The share of the machine's CPU time other processes took.
    fn other_share(&self) -> f64 {
        let all: f64 = self.outcome.cpu.iter().map(|(_, s)| s).sum();
        self.cpu_s("other") / all
    }

    fn line(&self) -> String {
        let o = &self.outcome;
        let cpu: Vec<String> = o
            .cpu
            .iter()
            .map(|(name, s)| format!("{name} {s:.1}"))
            .collect();
        let check = if self.stored == o.accepted {
            format!("202s {} = stored {}", o.accepted, self.stored)
        } else {
            format!("202s {} != STORED {}", o.accepted, self.stored)
        };
        let mut failures = if o.failures.is_empty() {
            String::new()
        } else {
            format!("  FAILURES {:?}", o.failures)
        };
        if self.disturbed {
            failures.push_str("  (DISTURBED by other processes)");
        }
        format!(
            "{:<16} {:>9} req/s  p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  | {check} | CPU-s {} in {:.1} s | nats-server RSS {:.0} MiB{failures}",
            self.kind.name(),
            thousands(self.rate()),
            self.p(0.50),
            self.p(0.99),
            self.p(0.999),
            cpu.join(", "),
            o.window.as_secs_f64(),
            self.nats_rss,
        )
    }
}

pub(crate) fn thousands(x: f64) -> String {
    let s = format!("{:.0}", x);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Runs the rounds and prints the figures; `false` if any run failed.
pub async fn run(args: Args) -> anyhow::Result<bool> {
    if args.servers.is_empty() || args.rounds == 0 || args.connections == 0 {
        bail!("need at least one server, one round and one connection");
    }
    let exe = std::env::current_exe().context("own path")?;
    let ingress_bin = exe.with_file_name("ingress");
    if args
        .servers
        .iter()
        .any(|k| matches!(k, Kind::Ingress | Kind::IngressAlt))
        && !ingress_bin.exists()
    {
        bail!(
            "no ingress binary next to {}: build it with the benchmark \
             (cargo build --release -p bench -p ingress)",
            exe.display()
        );
    }
    if let Some(dir) = &args.perf_dir {
        std::fs::create_dir_all(dir)?;
    }
    nats::server_bin()?;
    println!("machine: {}", procs::machine());
    println!("nats-server: {}", nats::server_version());
    if !args.alt_env.is_empty() {
        let env: Vec<String> = args
            .alt_env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!("ingress-alt: ingress with {}", env.join(" "));
    }
    println!(
        "load: {} connections, {} B signed bodies, {} s warm-up + {} s measured, {} round(s) of {}; client threads {}",
        args.connections,
        args.body_bytes,
        args.warmup,
        args.seconds,
        args.rounds,
        args.servers
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(", "),
        args.client_threads,
    );
    let opts = load::Options {
        connections: args.connections,
        warmup: Duration::from_secs(args.warmup),
        measure: Duration::from_secs(args.seconds),
        max_requests: args.max_requests,
        request_timeout: Duration::from_secs(10),
        body_bytes: args.body_bytes,
        pace: None,
        record_accepts: false,
    };
    let mut runs: Vec<(usize, Run)> = Vec::new();
    for round in 1..=args.rounds {
        for &kind in &args.servers {
            for attempt in 0..=args.retries {
                procs::wait_quiet(args.max_other, Duration::from_secs(args.quiet_wait)).await;
                let mut run = run_one(kind, round, &args, &opts, &exe, &ingress_bin)
                    .await
                    .with_context(|| format!("round {round}, {}", kind.name()))?;
                let other = run.other_share();
                run.disturbed = other > args.max_other;
                if run.disturbed && attempt < args.retries {
                    println!(
                        "round {round}/{}  {:<16} other processes took {:.0}% of the CPU: measuring again",
                        args.rounds,
                        kind.name(),
                        other * 100.0
                    );
                    continue;
                }
                println!("round {round}/{}  {}", args.rounds, run.line());
                runs.push((round, run));
                break;
            }
        }
    }
    summarize(&args, &runs);
    Ok(runs.iter().all(|(_, r)| r.ok()))
}

fn summarize(args: &Args, runs: &[(usize, Run)]) {
    println!();
    println!("summary: median (min–max) over {} round(s)", args.rounds);
    println!(
        "{:<16} {:>26} {:>20} {:>20} {:>20}   CPU µs/request: server, nats-server, client; idle",
        "server", "req/s", "p50 ms", "p99 ms", "p99.9 ms"
    );
    let of = |kind: Kind| runs.iter().filter(move |(_, r)| r.kind == kind);
    for &kind in &args.servers {
        let figure = |f: &dyn Fn(&Run) -> f64| -> Spread {
            Spread::of(&of(kind).map(|(_, r)| f(r)).collect::<Vec<_>>())
        };
        let rate = figure(&|r| r.rate());
        println!(
            "{:<16} {:>26} {:>20} {:>20} {:>20}   {:.1}, {:.1}, {:.1}; {:.0}%",
            kind.name(),
            format!(
                "{} ({}–{})",
                thousands(rate.median),
                thousands(rate.min),
                thousands(rate.max)
            ),
            figure(&|r| r.p(0.50)).show(2),
            figure(&|r| r.p(0.99)).show(2),
            figure(&|r| r.p(0.999)).show(2),
            figure(&|r| r.cpu_us("server")).median,
            figure(&|r| r.cpu_us("nats-server")).median,
            figure(&|r| r.cpu_us("client")).median,
            figure(&|r| r.idle()).median * 100.0,
        );
    }
    let rate_of = |kind: Kind, round: usize| {
        runs.iter()
            .find(|(n, r)| *n == round && r.kind == kind)
            .map(|(_, r)| r.rate())
    };
    let median_rate =
        |kind: Kind| Spread::of(&of(kind).map(|(_, r)| r.rate()).collect::<Vec<_>>()).median;
    for &kind in &args.servers {
        if kind == Kind::Baseline || !args.servers.contains(&Kind::Baseline) {
            continue;
        }
        let per_round: Vec<f64> = (1..=args.rounds)
            .filter_map(|n| Some(rate_of(kind, n)? / rate_of(Kind::Baseline, n)?))
            .collect();
        let ratio = median_rate(kind) / median_rate(Kind::Baseline);
        println!(
            "ratio {}/baseline: {ratio:.2} (of the medians); per round {}",
            kind.name(),
            Spread::of(&per_round).show(2)
        );
        if kind == Kind::Ingress {
            println!(
                "target ingress >= {:.2} x baseline: {}",
                args.target,
                if ratio >= args.target {
                    "met"
                } else {
                    "NOT met"
                }
            );
        }
    }
    let failed: Vec<String> = runs
        .iter()
        .filter(|(_, r)| !r.ok())
        .map(|(n, r)| format!("round {n} {}", r.kind.name()))
        .collect();
    if failed.is_empty() {
        println!("every answer was 202 and every stream held exactly the 202s");
    } else {
        println!("FAILED: {}", failed.join(", "));
    }
    let disturbed = runs.iter().filter(|(_, r)| r.disturbed).count();
    if disturbed > 0 {
        println!(
            "{disturbed} run(s) kept although other processes took more than {:.0}% of the CPU",
            args.max_other * 100.0
        );
    }
}

async fn run_one(
    kind: Kind,
    round: usize,
    args: &Args,
    opts: &load::Options,
    exe: &Path,
    ingress_bin: &Path,
) -> anyhow::Result<Run> {
    let nats = NatsServer::start()?;
    let dir = tempfile::Builder::new()
        .prefix("orderhub-bench-run-")
        .tempdir()?;
    let client = tokio::time::timeout(STEP, async_nats::connect(nats.url()))
        .await
        .context("connecting to nats-server")??;
    let js = jetstream::new(client.clone());
    let hub_path = dir.path().join("hub.toml");
    std::fs::write(&hub_path, hub_toml(args.trace_sample_percent))?;
    let port = nats::free_port()?;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let log = dir.path().join("server.log");
    let out = std::fs::File::create(&log)?;
    let (command, path) = match kind {
        Kind::Ingress | Kind::IngressAlt => {
            let mut c = Command::new(ingress_bin);
            c.env("NATS_URL", nats.url())
                .env("LISTEN_ADDR", addr.to_string())
                .env("OPS_ADDR", format!("127.0.0.1:{}", nats::free_port()?))
                .env("HUB_CONFIG", &hub_path)
                .env(SECRET_ENV, SECRET)
                .env("LOG_FORMAT", "json")
                .env("RUST_LOG", "warn");
            if kind == Kind::IngressAlt {
                c.envs(args.alt_env.iter().map(|(k, v)| (k, v)));
            }
            (c, format!("/api/webhooks/careem/{ACCOUNT}"))
        }
        Kind::Baseline | Kind::BaselineMsgid | Kind::BaselineHeaders | Kind::BaselineHub => {
            // The same WEBHOOKS definition the ingress applies for itself.
            let hub = shared::config::HubConfig::from_toml(
                &hub_toml(args.trace_sample_percent),
                "bench",
                &|_| Some(SECRET.to_owned()),
            )?;
            let defs = shared::streams::Definitions::load(&hub.streams);
            tokio::time::timeout(
                STEP,
                shared::app::ensure_streams(&js, &defs, &[shared::subjects::WEBHOOKS_STREAM], true),
            )
            .await
            .context("creating WEBHOOKS")??;
            let mut c = Command::new(exe);
            c.args(["baseline-server", "--port", &port.to_string()])
                .args(["--nats-url", &nats.url()])
                .args([
                    "--subject",
                    &shared::subjects::raw_webhook(shared::Provider::Careem, ACCOUNT),
                ])
                .env(SECRET_ENV, SECRET);
            if kind != Kind::Baseline {
                c.arg("--msg-id");
            }
            if matches!(kind, Kind::BaselineHeaders | Kind::BaselineHub) {
                c.arg("--hub-headers");
            }
            if kind == Kind::BaselineHub {
                c.args(["--traceparent", &args.trace_sample_percent.to_string()]);
            }
            (c, "/webhook".to_owned())
        }
    };
    let mut command = command;
    let child = command
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {}", kind.name()))?;
    let mut server = Server { child, log };
    server.wait_listening(addr, STEP).await?;

    let target = load::Target {
        addr,
        path,
        secret: SecretString::from(SECRET),
    };
    let watch = [("server", server.pid()), ("nats-server", nats.pid())];
    let perf = |dir: &Path| -> Vec<Child> {
        watch
            .iter()
            .filter_map(|(who, pid)| {
                let file = dir.join(format!("r{round}-{}-{who}.data", kind.name()));
                Command::new("perf")
                    .args(["record", "-q", "-e", "cpu-clock", "-F", "999", "-g"])
                    .arg("-o")
                    .arg(file)
                    .args(["-p", &pid.to_string(), "--", "sleep"])
                    .arg(args.seconds.to_string())
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .map_err(|e| eprintln!("perf: {e}"))
                    .ok()
            })
            .collect()
    };
    let (outcome, mut perfs) = load::run(target, opts, &watch, || {
        args.perf_dir.as_deref().map(perf).unwrap_or_default()
    })
    .await;
    for p in &mut perfs {
        let _ = p.wait();
    }

    let stored = tokio::time::timeout(STEP, async {
        let mut stream = js.get_stream(shared::subjects::WEBHOOKS_STREAM).await?;
        anyhow::Ok(stream.info().await?.state.messages)
    })
    .await
    .context("reading the stream's state")??;
    let nats_rss = procs::rss_mib(nats.pid()).unwrap_or(f64::NAN);
    if !outcome.failures.is_empty() {
        eprintln!("{} log tail:\n{}", kind.name(), server.log_tail());
    }
    drop(server);
    drop(client);
    drop(nats);
    Ok(Run {
        kind,
        outcome,
        stored,
        disturbed: false,
        nats_rss,
    })
}
