//! `orderhub-bench e2e` (issue 7): the whole pipeline. The release
//! `ingress`, `transformer` and `forwarder` run as processes against their
//! own fresh nats-server, and the fast backend runs in the bench process.
//! The load generator sends signed 2 KiB Careem webhooks.
//!
//! - **full**: a closed loop on `--connections` keep-alive connections.
//!   Sustained throughput is what reaches the backend in the window.
//! - **paced**: open-loop at a share of the full run's delivered rate (by
//!   default half), or at `--rates`.
//!
//! Each run has a fresh stack. It reports webhooks accepted/s, orders
//! delivered/s, the latency from the 202's arrival at the load generator to
//! the backend having read the order (p50/p99), the consumers' lag
//! (`transformer` on WEBHOOKS, `forwarder-bench` on ORDERS; num_pending +
//! num_ack_pending every 250 ms), each stage's RSS idle and under load, and
//! CPU seconds per process per delivered order. Every accepted webhook must
//! reach the backend after the window (bounded wait).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_nats::jetstream;
use secrecy::SecretString;

use crate::load;
use crate::nats::{self, NatsServer};
use crate::pipeline::{self, BACKEND_KEY, Backend, LagSummary, SIGNING_SECRET, STEP, Sampler};
use crate::procs::{self, Server};

pub(crate) const SECRET: &str = "orderhub-bench-careem-secret-0123456789abcdef";
pub(crate) const ACCOUNT: &str = "bench-careem";
pub(crate) const STAGES: [&str; 3] = ["ingress", "transformer", "forwarder"];

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Length of each measured window, in seconds
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Warm-up before each window (not counted), in seconds
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,
    /// Concurrent keep-alive connections of the load generator
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Size of each webhook body in bytes
    #[arg(long, default_value_t = 2048)]
    pub body_bytes: usize,
    /// Threads of the bench's runtime (load generator and backend)
    #[arg(long, default_value_t = 2)]
    pub client_threads: usize,
    /// Paced runs after the full run, each at this share of its delivered
    /// rate
    #[arg(long, value_delimiter = ',', default_value = "0.5")]
    pub paced_share: Vec<f64>,
    /// Paced runs at these webhooks/s instead (skips the full run if
    /// --no-full)
    #[arg(long, value_delimiter = ',')]
    pub rates: Vec<f64>,
    /// Skip the closed-loop full-load run
    #[arg(long)]
    pub no_full: bool,
    /// Extra environment of every stage, KEY=VALUE (repeatable), e.g.
    /// TRANSFORMER_CONCURRENCY=256
    #[arg(long, value_parser = pipeline::key_value)]
    pub env: Vec<(String, String)>,
    /// Stop a run after this many requests even if the window is not over
    #[arg(long, default_value_t = 2_000_000)]
    pub max_requests: u64,
    /// How long the pipeline may take to deliver what was accepted after
    /// the window, in seconds
    #[arg(long, default_value_t = 120)]
    pub drain_timeout: u64,
    /// Runs during which other processes took more than this share of the
    /// CPU are marked
    #[arg(long, default_value_t = 0.05)]
    pub max_other: f64,
    /// Before each run, wait up to this many seconds for a quiet machine
    #[arg(long, default_value_t = 120)]
    pub quiet_wait: u64,
    /// Run without per-order ordering (`[forwarder] per_order_ordering =
    /// false`): the figures to compare the ordered pipeline with
    #[arg(long)]
    pub no_ordering: bool,
}

fn hub_toml(backend: &str, ordering: bool) -> String {
    format!(
        r#"[[tenant]]
id = "bench"
backend_url = "{backend}"
backend_key_env = "BENCH_BACKEND_KEY"
signing_secret_env = "BENCH_SIGNING_SECRET"

[[account]]
id = "{ACCOUNT}"
provider = "careem"
tenant = "bench"
secret_envs = ["BENCH_CAREEM_SECRET"]
currency = "JOD"
country = "JO"
default = true
[account.branches]
"991" = "amman-abdoun"
[account.products]
"burger-classic" = "prod_1001"

[ingress.rate_limits]
careem = {{ per_second = 1000000000, burst = 1000000000 }}

[forwarder]
allowed_private_destinations = ["127.0.0.0/8"]
per_order_ordering = {ordering}
"#
    )
}

pub(crate) struct Stack {
    // Dropped first: the stages, then the backend, then NATS.
    pub(crate) stages: Vec<Server>,
    pub(crate) backend: Backend,
    pub(crate) nats: NatsServer,
    pub(crate) js: jetstream::Context,
    pub(crate) ingress: std::net::SocketAddr,
    /// Holds the hub file (`hub.toml`) and the stages' logs.
    pub(crate) dir: tempfile::TempDir,
}

pub(crate) async fn start(args: &Args) -> anyhow::Result<Stack> {
    let nats = NatsServer::start()?;
    let client = tokio::time::timeout(STEP, async_nats::connect(nats.url()))
        .await
        .context("connecting to nats-server")??;
    let js = jetstream::new(client);
    let backend = Backend::start(args.max_requests as usize * 2).await?;
    let dir = tempfile::Builder::new()
        .prefix("orderhub-bench-e2e-")
        .tempdir()?;
    let hub_path = dir.path().join("hub.toml");
    std::fs::write(&hub_path, hub_toml(&backend.url(), !args.no_ordering))?;
    let ingress = std::net::SocketAddr::from(([127, 0, 0, 1], nats::free_port()?));
    let mut stages = Vec::new();
    for name in STAGES {
        let ops = std::net::SocketAddr::from(([127, 0, 0, 1], nats::free_port()?));
        let mut env: Vec<(String, String)> = vec![
            ("NATS_URL".into(), nats.url()),
            ("HUB_CONFIG".into(), hub_path.display().to_string()),
            ("OPS_ADDR".into(), ops.to_string()),
            ("LISTEN_ADDR".into(), ingress.to_string()),
            ("LOG_FORMAT".into(), "json".into()),
            ("RUST_LOG".into(), "warn".into()),
            ("BENCH_CAREEM_SECRET".into(), SECRET.into()),
            ("BENCH_BACKEND_KEY".into(), BACKEND_KEY.into()),
            ("BENCH_SIGNING_SECRET".into(), SIGNING_SECRET.into()),
        ];
        env.extend(args.env.iter().cloned());
        let bin = pipeline::stage_bin(name)?;
        let mut s = pipeline::spawn_stage(&bin, dir.path(), name, &env)?;
        pipeline::wait_ready(&mut s, ops)
            .await
            .with_context(|| format!("{name} not ready"))?;
        stages.push(s);
    }
    stages[0].wait_listening(ingress, STEP).await?;
    Ok(Stack {
        stages,
        backend,
        nats,
        js,
        ingress,
        dir,
    })
}

/// What one run measured.
struct Run {
    delivered_rate: f64,
    /// Every consumer's lag stayed flat in the window.
    kept_up: bool,
    p50: f64,
    p99: f64,
}

async fn run_one(args: &Args, label: &str, pace: Option<f64>) -> anyhow::Result<Run> {
    let stack = start(args).await?;
    // Idle figures once everything has settled.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle: Vec<f64> = stack
        .stages
        .iter()
        .map(|s| procs::rss_mib(s.pid()).unwrap_or(f64::NAN))
        .collect();
    procs::wait_quiet(args.max_other, Duration::from_secs(args.quiet_wait)).await;
    let sampler = Sampler::start(
        stack.js.clone(),
        vec![
            ("WEBHOOKS".into(), "transformer".into()),
            ("ORDERS".into(), "forwarder-bench".into()),
        ],
        stack.stages.iter().map(|s| s.pid()).collect(),
        Duration::from_millis(250),
    );
    let opts = load::Options {
        connections: args.connections,
        warmup: Duration::from_secs(args.warmup),
        measure: Duration::from_secs(args.seconds),
        max_requests: args.max_requests,
        request_timeout: Duration::from_secs(10),
        body_bytes: args.body_bytes,
        pace,
        record_accepts: true,
    };
    let target = load::Target {
        addr: stack.ingress,
        path: format!("/api/webhooks/careem/{ACCOUNT}"),
        secret: SecretString::from(SECRET),
    };
    let watch: Vec<(&str, u32)> = STAGES
        .iter()
        .zip(&stack.stages)
        .map(|(n, s)| (*n, s.pid()))
        .chain([("nats-server", stack.nats.pid())])
        .collect();
    let (outcome, ()) = load::run(target, &opts, &watch, || ()).await;
    let window_start = outcome.window_start.expect("set by load::run");
    let window_end = window_start + outcome.window;
    let drain_from = Instant::now();
    let all = stack
        .backend
        .wait_for(outcome.accepted, Duration::from_secs(args.drain_timeout))
        .await;
    let drain = drain_from.elapsed();
    let (lag, load_rss) = sampler.finish().await;
    let (first, dups) = stack.backend.first_arrivals();

    let delivered_in_window = first
        .values()
        .filter(|&&t| t >= window_start && t < window_end)
        .count() as u64;
    let delivered_rate = delivered_in_window as f64 / outcome.window.as_secs_f64();
    let mut missing = 0u64;
    let lat: Vec<Duration> = outcome
        .accepts
        .iter()
        .filter(|a| a.in_window)
        .filter_map(|a| match first.get(&a.n) {
            Some(t) => Some(t.saturating_duration_since(a.at)),
            None => {
                missing += 1;
                None
            }
        })
        .collect();
    let lost = outcome
        .accepts
        .iter()
        .filter(|a| !first.contains_key(&a.n))
        .count();
    let mut sorted = lat.clone();
    sorted.sort_unstable();
    let p = |q| crate::stats::ms(crate::stats::percentile(&sorted, q));
    let (p50, p99) = (p(0.5), p(0.99));

    let offered = outcome.rate();
    println!(
        "{label}: accepted {} webhooks/s (ingress p50 {:.2} ms, p99 {:.2} ms), delivered {} orders/s in the window",
        crate::ingress_bench::thousands(offered),
        crate::stats::ms(crate::stats::percentile(&outcome.latencies, 0.5)),
        crate::stats::ms(crate::stats::percentile(&outcome.latencies, 0.99)),
        crate::ingress_bench::thousands(delivered_rate),
    );
    println!(
        "  acceptance → backend: {}{}",
        pipeline::latency_line(lat),
        if missing > 0 {
            format!(" ({missing} accepted in the window not delivered)")
        } else {
            String::new()
        }
    );
    println!(
        "  after the window: {} accepted in all, {} delivered ({} duplicates, {} unknown), drained in {:.1} s{}",
        outcome.accepted,
        first.len(),
        dups,
        stack.backend.unknown(),
        drain.as_secs_f64(),
        if all && lost == 0 {
            String::new()
        } else {
            format!("; NOT ALL DELIVERED ({lost} missing)")
        }
    );
    if !outcome.failures.is_empty() {
        println!("  FAILURES {:?}", outcome.failures);
    }
    println!(
        "  CPU-s in the {:.1} s window (µs per delivered order): {}",
        outcome.window.as_secs_f64(),
        pipeline::show_cpu(&outcome.cpu, delivered_in_window)
    );
    println!(
        "  RSS MiB idle → max under load: {}",
        STAGES
            .iter()
            .enumerate()
            .map(|(i, n)| format!("{n} {:.1} → {:.1}", idle[i], load_rss[i]))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut kept_up = true;
    for (i, name) in ["transformer (WEBHOOKS)", "forwarder-bench (ORDERS)"]
        .iter()
        .enumerate()
    {
        match LagSummary::of(&lag, i, window_start, window_end) {
            Some(l) => {
                kept_up &= l.flat(offered);
                println!("  {name}: {}", l.show(offered));
            }
            None => {
                kept_up = false;
                println!("  {name}: no lag sample");
            }
        }
    }
    if pipeline::other_share(&outcome.cpu) > args.max_other {
        println!(
            "  (DISTURBED: other processes took {:.0}% of the CPU)",
            pipeline::other_share(&outcome.cpu) * 100.0
        );
    }
    drop(stack);
    if !all || lost > 0 || !outcome.failures.is_empty() {
        bail!("{label}: not every accepted webhook was delivered, or a request failed");
    }
    Ok(Run {
        delivered_rate,
        kept_up,
        p50,
        p99,
    })
}

pub async fn run(args: Args) -> anyhow::Result<bool> {
    nats::server_bin()?;
    for s in STAGES {
        pipeline::stage_bin(s)?;
    }
    println!("machine: {}", procs::machine());
    println!("nats-server: {}", nats::server_version());
    println!(
        "e2e: {} connections, {} B signed Careem webhooks, {} s warm-up + {} s measured per run; stage env {:?}",
        args.connections, args.body_bytes, args.warmup, args.seconds, args.env
    );
    let mut max = None;
    if !args.no_full {
        let r = run_one(&args, "full load (closed loop)", None).await?;
        println!(
            "  → delivered at full load: {} orders/s, workers {}; target ≥ 7,300 with flat lag: {}",
            crate::ingress_bench::thousands(r.delivered_rate),
            if r.kept_up {
                "kept up"
            } else {
                "fell behind the ingress"
            },
            if r.delivered_rate >= 7300.0 && r.kept_up {
                "met"
            } else if r.delivered_rate >= 7300.0 {
                "NOT met at full load (check a paced run at 7300: --no-full --rates 7300)"
            } else {
                "NOT met"
            }
        );
        max = Some(r.delivered_rate);
    }
    let mut paced: Vec<f64> = args.rates.clone();
    if args.rates.is_empty()
        && let Some(m) = max
    {
        paced.extend(args.paced_share.iter().map(|s| (m * s).round()));
    }
    for rate in paced {
        let r = run_one(&args, &format!("paced at {rate:.0}/s"), Some(rate)).await?;
        println!(
            "  → p99 {:.2} ms (p50 {:.2}), workers {}; target p99 ≤ 25 ms at half the max: {}",
            r.p99,
            r.p50,
            if r.kept_up { "kept up" } else { "fell behind" },
            if r.p99 <= 25.0 { "met" } else { "NOT met" }
        );
    }
    Ok(true)
}
