//! `orderhub-bench forwarder` (issue 5): the release `forwarder` binary
//! against the fast backend in the bench process, with its own fresh
//! nats-server per run.
//!
//! - **drain**: N canonical orders are pre-loaded into ORDERS (spread round
//!   robin over the tenants, published as the transformer does), then the
//!   forwarder starts; orders/s from the first to the last arrival.
//! - **paced**: the forwarder runs first; orders are published at a fixed
//!   rate (by default half the drain rate) and each one's latency is taken
//!   from the moment the bench hands it to the JetStream client to the
//!   moment the backend has read its body.
//!
//! - **flaky** (`--fail-percent P`): a drain like the first, against a
//!   backend answering 503 to P% of the requests at random, retried on a
//!   100 ms schedule; delivered orders/s (the 200s) next to the healthy
//!   drain of the same round, and how often the tenants' breakers opened
//!   (issue 11: a backend failing a share of requests keeps delivering).
//!
//! Every order must reach the backend; duplicates are counted.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_nats::jetstream;

use crate::nats::{self, NatsServer};
use crate::pipeline::{
    self, BACKEND_KEY, Backend, CpuMeter, LagSummary, SIGNING_SECRET, STEP, Sampler,
};
use crate::procs;
use crate::stats::Spread;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Orders pre-loaded for a drain run
    #[arg(long, default_value_t = 100_000)]
    pub orders: u64,
    /// Tenant counts to measure (one consumer and one backend URL each)
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    pub tenants: Vec<usize>,
    /// Rounds (each measures every tenant count: drain, then paced)
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// Size of each canonical order in bytes (padded)
    #[arg(long, default_value_t = 2048)]
    pub body_bytes: usize,
    /// Paced rate as a share of the drain rate of the same round
    #[arg(long, default_value_t = 0.5)]
    pub paced_share: f64,
    /// Paced rate in orders/s (overrides --paced-share)
    #[arg(long)]
    pub paced_rate: Option<f64>,
    /// Length of a paced run in seconds (after 2 s not counted)
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Extra environment of the forwarder, KEY=VALUE (repeatable), e.g.
    /// FORWARDER_CONCURRENCY=256
    #[arg(long, value_parser = pipeline::key_value)]
    pub env: Vec<(String, String)>,
    /// Runs during which other processes took more than this share of the
    /// CPU are marked
    #[arg(long, default_value_t = 0.05)]
    pub max_other: f64,
    /// Before each run, wait up to this many seconds for a quiet machine
    #[arg(long, default_value_t = 120)]
    pub quiet_wait: u64,
    /// Also drain against a backend answering 503 to this share (%) of the
    /// requests at random, and compare with the healthy drain
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=99))]
    pub fail_percent: u8,
    /// Skip the paced runs (drains only)
    #[arg(long)]
    pub no_paced: bool,
}

/// The hub config: `tenants` tenants `bench-<i>`, each with its own path on
/// the backend, a backend key and a signing secret (so each request is
/// signed, as in production). A failed request is retried after 100 ms
/// (only a flaky backend's are), up to 100 deliveries; breakers as default.
fn hub_toml(tenants: usize, backend: &str) -> String {
    let mut s = String::new();
    for i in 0..tenants {
        s.push_str(&format!(
            "[[tenant]]\nid = \"bench-{i}\"\nbackend_url = \"{backend}/{i}\"\nbackend_key_env = \"BENCH_BACKEND_KEY\"\nsigning_secret_env = \"BENCH_SIGNING_SECRET\"\n\n"
        ));
    }
    s.push_str(
        "[[account]]\nid = \"bench-careem\"\nprovider = \"careem\"\ntenant = \"bench-0\"\nsecret_envs = [\"BENCH_CAREEM_SECRET\"]\ndefault = true\n",
    );
    s.push_str("\n[retry]\nschedule = [\"100ms\"]\nmax_deliver = 100\n");
    // The bench's backend is on loopback.
    s.push_str("\n[forwarder]\nallowed_private_destinations = [\"127.0.0.0/8\"]\n");
    s
}

/// A canonical order (the Careem golden fixture's) with order number `n`,
/// padded to about `size` bytes.
pub struct Orders {
    template: String,
}

impl Orders {
    pub fn new(size: usize) -> Orders {
        let mut v: serde_json::Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/careem/design-example.expected.json"
        ))
        .expect("the fixture is JSON");
        v["provider_order_id"] = "BENCH-@@@@@@@@@@@@".into();
        v["webhook_id"] = "bench-@@@@@@@@@@@@".into();
        v["tenant"] = "@TENANT@".into();
        let base = serde_json::to_string(&v).expect("serializes").len();
        let pad: String = (b'a'..=b'z')
            .cycle()
            .take(size.saturating_sub(base + 20))
            .map(char::from)
            .collect();
        v["notes"] = pad.into();
        Orders {
            template: serde_json::to_string(&v).expect("serializes"),
        }
    }

    pub fn make(&self, n: u64, tenant: &str) -> bytes::Bytes {
        let digits = format!("{n:012}");
        bytes::Bytes::from(
            self.template
                .replace("@@@@@@@@@@@@", &digits)
                .replace("@TENANT@", tenant),
        )
    }
}

/// Publishes orders `range` round robin over `tenants`, as the transformer
/// does (hub headers, `Nats-Msg-Id`), with up to 4096 acks outstanding;
/// paced at `rate`/s if given. Returns when each was handed to the client.
async fn publish(
    js: &jetstream::Context,
    orders: &Orders,
    tenants: usize,
    range: std::ops::Range<u64>,
    rate: Option<f64>,
) -> anyhow::Result<Vec<Instant>> {
    use shared::headers;
    let (tx, acker) = crate::nats::acker();
    let start = tokio::time::Instant::now();
    let mut sent = Vec::with_capacity((range.end - range.start) as usize);
    let first = range.start;
    for n in range {
        if let Some(rate) = rate {
            let due = start + Duration::from_secs_f64((n - first) as f64 / rate);
            tokio::time::sleep_until(due).await;
        }
        let tenant = format!("bench-{}", n as usize % tenants);
        let webhook_id = format!("bench-{n:012}");
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", format!("order:{webhook_id}").as_str());
        h.insert(headers::WEBHOOK_ID, webhook_id.as_str());
        h.insert(headers::PROVIDER, "careem");
        h.insert(headers::TENANT, tenant.as_str());
        h.insert(
            headers::RECEIVED_AT,
            shared::dlq::rfc3339(std::time::SystemTime::now()).as_str(),
        );
        h.insert("Content-Type", "application/json");
        let subject = shared::subjects::order(&tenant, shared::Provider::Careem);
        let body = orders.make(n, &tenant);
        sent.push(Instant::now());
        let ack = tokio::time::timeout(STEP, js.publish_with_headers(subject, h, body))
            .await
            .context("publish timed out")??;
        if tx.send(ack).await.is_err() {
            bail!("acker stopped");
        }
    }
    drop(tx);
    let failed = acker.await?;
    if failed > 0 {
        bail!("{failed} publishes were not acked");
    }
    Ok(sent)
}

struct Setup {
    nats: NatsServer,
    js: jetstream::Context,
    backend: Backend,
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    ops: std::net::SocketAddr,
}

async fn setup(
    tenants: usize,
    cap: usize,
    extra: &[(String, String)],
    fail_percent: u8,
) -> anyhow::Result<Setup> {
    let nats = NatsServer::start()?;
    let client = tokio::time::timeout(STEP, async_nats::connect(nats.url()))
        .await
        .context("connecting to nats-server")??;
    let js = jetstream::new(client);
    let backend = Backend::start_flaky(cap, fail_percent).await?;
    let dir = tempfile::Builder::new()
        .prefix("orderhub-bench-fwd-")
        .tempdir()?;
    let toml = hub_toml(tenants, &backend.url());
    let hub_path = dir.path().join("hub.toml");
    std::fs::write(&hub_path, &toml)?;
    let hub = shared::config::HubConfig::from_toml(&toml, "bench", &|name| {
        Some(
            match name {
                "BENCH_SIGNING_SECRET" => SIGNING_SECRET,
                _ => BACKEND_KEY,
            }
            .to_owned(),
        )
    })?;
    let defs = shared::streams::Definitions::load(&hub.streams);
    tokio::time::timeout(
        STEP,
        shared::app::ensure_streams(&js, &defs, &["ORDERS", "DLQ", "ADVISORIES"], true),
    )
    .await
    .context("creating the streams")??;
    let ops = std::net::SocketAddr::from(([127, 0, 0, 1], nats::free_port()?));
    let mut env: Vec<(String, String)> = vec![
        ("NATS_URL".into(), nats.url()),
        ("HUB_CONFIG".into(), hub_path.display().to_string()),
        ("OPS_ADDR".into(), ops.to_string()),
        ("LOG_FORMAT".into(), "json".into()),
        ("RUST_LOG".into(), "warn".into()),
        ("BENCH_BACKEND_KEY".into(), BACKEND_KEY.into()),
        ("BENCH_SIGNING_SECRET".into(), SIGNING_SECRET.into()),
        ("BENCH_CAREEM_SECRET".into(), "unused".into()),
    ];
    env.extend(extra.iter().cloned());
    Ok(Setup {
        nats,
        js,
        backend,
        dir,
        env,
        ops,
    })
}

struct Drain {
    rate: f64,
    cpu: Vec<(String, f64)>,
    rss: f64,
}

/// A drain against a backend answering 503 to `fail_percent`% (0: healthy).
async fn drain(
    args: &Args,
    tenants: usize,
    orders: &Orders,
    fail_percent: u8,
) -> anyhow::Result<Drain> {
    let s = setup(tenants, args.orders as usize * 2, &args.env, fail_percent).await?;
    publish(&s.js, orders, tenants, 0..args.orders, None).await?;
    procs::wait_quiet(args.max_other, Duration::from_secs(args.quiet_wait)).await;
    let bin = pipeline::stage_bin("forwarder")?;
    let spawned = Instant::now();
    let fwd = pipeline::spawn_stage(&bin, s.dir.path(), "forwarder", &s.env)?;
    let meter = CpuMeter::start(&[("forwarder", fwd.pid()), ("nats-server", s.nats.pid())]);
    let within = Duration::from_secs(60 + args.orders / 500);
    let all = s.backend.wait_for(args.orders, within).await;
    let cpu = meter.read();
    let rss = procs::rss_mib(fwd.pid()).unwrap_or(f64::NAN);
    let (first, dups) = s.backend.first_arrivals();
    if !all || first.len() as u64 != args.orders {
        bail!(
            "drain: {} of {} orders arrived within {within:?}; forwarder log:\n{}",
            first.len(),
            args.orders,
            fwd.log_tail()
        );
    }
    let t0 = *first.values().min().expect("some");
    let t1 = *first.values().max().expect("some");
    let rate = args.orders as f64 / (t1 - t0).as_secs_f64();
    // Without the tail of the last retries (a flaky backend's unluckiest
    // orders wait 100 ms per failure): the rate while the backlog lasts.
    let mut times: Vec<Instant> = first.values().copied().collect();
    times.sort_unstable();
    let n95 = (times.len() as f64 * 0.95).ceil() as usize;
    let rate95 = n95 as f64 / (times[n95 - 1] - t0).as_secs_f64();
    let name = if fail_percent > 0 { "flaky" } else { "drain" };
    println!(
        "  {name}  tenants {tenants}: {} orders in {:.2} s = {} orders/s, the first 95% at {} orders/s (first arrival {:.0} ms after spawn); duplicates {dups}, unknown {}; forwarder RSS {rss:.0} MiB",
        args.orders,
        (t1 - t0).as_secs_f64(),
        crate::ingress_bench::thousands(rate),
        crate::ingress_bench::thousands(rate95),
        (t0 - spawned).as_secs_f64() * 1e3,
        s.backend.unknown(),
    );
    if fail_percent > 0 {
        let failed = s.backend.failed();
        let opens = breaker_opens(&crate::procs::metrics_text(s.ops).await);
        println!(
            "         answered 503 {failed} times ({:.1}% of {} requests); breakers opened: {}",
            failed as f64 * 100.0 / (failed + s.backend.count()) as f64,
            failed + s.backend.count(),
            if opens.is_empty() {
                "never".to_owned()
            } else {
                opens
                    .iter()
                    .map(|(r, n)| format!("{r} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        );
    }
    println!(
        "         CPU-s from spawn to the last order: {}",
        pipeline::show_cpu(&cpu, args.orders)
    );
    if pipeline::other_share(&cpu) > args.max_other {
        println!(
            "         (DISTURBED: other processes took {:.0}% of the CPU)",
            pipeline::other_share(&cpu) * 100.0
        );
    }
    Ok(Drain { rate, cpu, rss })
}

struct Paced {
    p50: f64,
    p99: f64,
}

async fn paced(args: &Args, tenants: usize, rate: f64, orders: &Orders) -> anyhow::Result<Paced> {
    let warm = 2.0;
    let total = ((warm + args.seconds as f64) * rate) as u64;
    let s = setup(tenants, total as usize * 2, &args.env, 0).await?;
    let bin = pipeline::stage_bin("forwarder")?;
    let mut fwd = pipeline::spawn_stage(&bin, s.dir.path(), "forwarder", &s.env)?;
    pipeline::wait_ready(&mut fwd, s.ops).await?;
    procs::wait_quiet(args.max_other, Duration::from_secs(args.quiet_wait)).await;
    let consumers = (0..tenants)
        .map(|i| ("ORDERS".to_owned(), format!("forwarder-bench-{i}")))
        .collect();
    let sampler = Sampler::start(
        s.js.clone(),
        consumers,
        vec![fwd.pid()],
        Duration::from_millis(250),
    );
    let skip = (warm * rate) as u64;
    let started = Instant::now();
    let mut meter = None;
    let js = s.js.clone();
    let pub_task = {
        let orders_template = Orders {
            template: orders.template.clone(),
        };
        tokio::spawn(
            async move { publish(&js, &orders_template, tenants, 0..total, Some(rate)).await },
        )
    };
    tokio::time::sleep(Duration::from_secs_f64(warm)).await;
    let window_start = Instant::now();
    meter.get_or_insert(CpuMeter::start(&[
        ("forwarder", fwd.pid()),
        ("nats-server", s.nats.pid()),
    ]));
    let sent = tokio::time::timeout(Duration::from_secs(args.seconds * 3 + 30), pub_task)
        .await
        .context("paced publishing took too long")???;
    let window_end = Instant::now();
    let cpu = meter.expect("set").read();
    let all = s.backend.wait_for(total, Duration::from_secs(60)).await;
    let (lag, rss) = sampler.finish().await;
    let (first, dups) = s.backend.first_arrivals();
    if !all || first.len() as u64 != total {
        bail!(
            "paced: {} of {total} orders arrived; forwarder log:\n{}",
            first.len(),
            fwd.log_tail()
        );
    }
    let lat: Vec<Duration> = (skip..total)
        .map(|n| first[&n].saturating_duration_since(sent[n as usize]))
        .collect();
    let window_orders = total - skip;
    let offered = window_orders as f64 / (window_end - window_start).as_secs_f64();
    let mut sorted = lat.clone();
    sorted.sort_unstable();
    let p = |q| crate::stats::ms(crate::stats::percentile(&sorted, q));
    println!(
        "  paced  tenants {tenants}: {} orders/s offered for {:.1} s: publish → backend {}; duplicates {dups}; forwarder RSS max {:.0} MiB",
        crate::ingress_bench::thousands(offered),
        (window_end - started).as_secs_f64() - warm,
        pipeline::latency_line(lat),
        rss.first().copied().unwrap_or(f64::NAN),
    );
    println!(
        "         CPU-s in the window: {}",
        pipeline::show_cpu(&cpu, window_orders)
    );
    for i in 0..tenants {
        if let Some(l) = LagSummary::of(&lag, i, window_start, window_end) {
            println!(
                "         forwarder-bench-{i}: {}",
                l.show(offered / tenants as f64)
            );
        }
    }
    if pipeline::other_share(&cpu) > args.max_other {
        println!(
            "         (DISTURBED: other processes took {:.0}% of the CPU)",
            pipeline::other_share(&cpu) * 100.0
        );
    }
    drop(fwd);
    Ok(Paced {
        p50: p(0.5),
        p99: p(0.99),
    })
}

/// `forwarder_breaker_opens_total` summed over the tenants, by reason;
/// reasons that never happened are left out.
fn breaker_opens(metrics: &str) -> Vec<(String, u64)> {
    let mut by = std::collections::BTreeMap::<String, u64>::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("forwarder_breaker_opens_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let reason = labels
            .split(',')
            .find_map(|l| l.strip_prefix("reason=\""))
            .map(|r| r.trim_end_matches('"').to_owned())
            .unwrap_or_default();
        let n = value.trim().parse::<f64>().unwrap_or(0.0) as u64;
        *by.entry(reason).or_default() += n;
    }
    by.into_iter().filter(|(_, n)| *n > 0).collect()
}

/// Tenants, drain orders/s, paced p50 and p99 ms, forwarder CPU µs/order
/// and RSS MiB of the drain, flaky drain orders/s.
type Row = (usize, f64, f64, f64, f64, f64, f64);

pub async fn run(args: Args) -> anyhow::Result<bool> {
    if args.tenants.is_empty() || args.rounds == 0 || args.orders == 0 {
        bail!("need a tenant count, a round and some orders");
    }
    nats::server_bin()?;
    pipeline::stage_bin("forwarder")?;
    println!("machine: {}", procs::machine());
    println!("nats-server: {}", nats::server_version());
    if args.fail_percent > 0 {
        println!(
            "flaky: a drain against a backend answering 503 to {}% of requests at random",
            args.fail_percent
        );
    }
    println!(
        "forwarder: {} pre-loaded {} B orders per drain; paced {} s at {} ; env {:?}",
        args.orders,
        args.body_bytes,
        args.seconds,
        args.paced_rate.map_or(
            format!("{:.0}% of the drain rate", args.paced_share * 100.0),
            |r| format!("{r:.0}/s")
        ),
        args.env
    );
    let orders = Orders::new(args.body_bytes);
    let mut results: Vec<Row> = Vec::new();
    for round in 1..=args.rounds {
        for &tenants in &args.tenants {
            println!("round {round}/{}, {tenants} tenant(s)", args.rounds);
            let d = drain(&args, tenants, &orders, 0).await?;
            let flaky = if args.fail_percent > 0 {
                let f = drain(&args, tenants, &orders, args.fail_percent).await?;
                println!("         flaky / healthy: {:.2}", f.rate / d.rate);
                f.rate
            } else {
                f64::NAN
            };
            let p = if args.no_paced {
                Paced {
                    p50: f64::NAN,
                    p99: f64::NAN,
                }
            } else {
                let rate = args.paced_rate.unwrap_or(d.rate * args.paced_share);
                paced(&args, tenants, rate, &orders).await?
            };
            let fwd_us = pipeline::cpu_of(&d.cpu, "forwarder") * 1e6 / args.orders as f64;
            results.push((tenants, d.rate, p.p50, p.p99, fwd_us, d.rss, flaky));
        }
    }
    println!();
    println!("summary: median (min–max) over {} round(s)", args.rounds);
    for &tenants in &args.tenants {
        let of = |f: &dyn Fn(&Row) -> f64| {
            Spread::of(
                &results
                    .iter()
                    .filter(|r| r.0 == tenants)
                    .map(f)
                    .collect::<Vec<_>>(),
            )
        };
        let paced = if args.no_paced {
            String::new()
        } else {
            format!(
                "; paced p50 {} ms, p99 {} ms",
                of(&|r| r.2).show(2),
                of(&|r| r.3).show(2)
            )
        };
        println!(
            "tenants {tenants}: drain {} orders/s{paced}; forwarder CPU {} µs/order; forwarder RSS {} MiB",
            of(&|r| r.1).show(0),
            of(&|r| r.4).show(1),
            of(&|r| r.5).show(0),
        );
        if args.fail_percent > 0 {
            println!(
                "tenants {tenants}: flaky ({}% 503) {} orders/s; flaky / healthy {}",
                args.fail_percent,
                of(&|r| r.6).show(0),
                of(&|r| r.6 / r.1).show(2),
            );
        }
    }
    Ok(true)
}
