//! `orderhub-bench status` (issue 14): the way back. A `created` order the
//! backend took (2xx) is accepted at the provider: the release `forwarder`
//! delivers it to a fast backend in the bench process and, the account
//! having `auto_accept`, stores an accept command on STATUS; the release
//! `status-sync` reads the order's context from ORDER_CONTEXT and calls
//! the release `fake-provider` (Uber Eats' legacy `accept_pos_order`,
//! with a token from the fleet-shared token store). Each run has its own
//! nats-server and its own fake, all on 127.0.0.1.
//!
//! The bench writes one order context per order to ORDER_CONTEXT (as the
//! transformer does) and publishes canonical `created` Uber Eats orders to
//! ORDERS with the transformer's headers. Every provider call passes a
//! timing proxy in the bench ([`proxy`]): the fake records which calls it
//! answered, the proxy when.
//!
//! - **drain**: after a warm-up (the token mint, the connection pools), N
//!   orders as fast as JetStream acks them; status calls/s = N ÷ (the last
//!   accept answered by the fake − the first backend 2xx).
//! - **paced**: a fresh stack; orders at a fixed rate (by default half the
//!   drain rate of the same round), and each one's latency from the
//!   backend's 2xx to the fake's answer to its accept, split at the moment
//!   the accept command was stored on STATUS.
//!
//! A run reports CPU seconds per process per 1k orders, the peak RSS of the
//! forwarder and status-sync, the consumers' lag, the fake's token mints
//! and the dead letters. Every order must reach the backend and be accepted
//! at the fake exactly once, with one token mint and no dead letter; the
//! bench exits non-zero otherwise.

mod proxy;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use async_nats::jetstream;
use bytes::Bytes;
use futures::StreamExt;
use hyper::{Method, StatusCode};
use shared::{Provider, headers};

use crate::ingress_bench::thousands;
use crate::nats::{self, NatsServer};
use crate::pipeline::{
    self, BACKEND_KEY, Backend, CpuMeter, LagSummary, SIGNING_SECRET, STEP, Sampler,
};
use crate::procs::{self, Server};
use crate::pull::fake::{self, Conn, Fake};
use crate::stats::Spread;
use proxy::Proxy;

const TENANT: &str = "bench";
const ACCOUNT: &str = "bench-ubereats";
const WEBHOOK_SECRET: &str = "orderhub-bench-ubereats-webhook-secret";
/// base64 of the 32 bytes `orderhub-bench-only-token-key-32`: the token
/// store key of a benchmark, never a real one.
const TOKEN_STORE_KEY: &str = "b3JkZXJodWItYmVuY2gtb25seS10b2tlbi1rZXktMzI=";
const STAGES: [&str; 2] = ["forwarder", "status-sync"];
/// The processes a run charges CPU to, in the order of [`Measured::us`].
const CHARGED: [&str; 5] = [
    "forwarder",
    "status-sync",
    "fake-provider",
    "nats-server",
    "bench",
];

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Orders per drain run (after the warm-up)
    #[arg(long, default_value_t = 20_000)]
    pub orders: u64,
    /// Orders of the warm-up before each measured part (the token mint,
    /// the connection pools)
    #[arg(long, default_value_t = 500)]
    pub warmup: u64,
    /// Rounds (each: a drain, then a paced run)
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// Paced rate as a share of the drain rate of the same round
    #[arg(long, default_value_t = 0.5)]
    pub paced_share: f64,
    /// Paced rate in orders/s (overrides --paced-share)
    #[arg(long)]
    pub paced_rate: Option<f64>,
    /// Length of a paced run in seconds (after the warm-up)
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Skip the paced runs (drains only)
    #[arg(long)]
    pub no_paced: bool,
    /// Skip the drains (paced runs only, at --paced-rate)
    #[arg(long, requires = "paced_rate")]
    pub no_drain: bool,
    /// Hold every provider call this long on its way to the fake (in the
    /// timing proxy), as a real provider API's latency would
    #[arg(long, default_value_t = 0)]
    pub api_delay_ms: u64,
    /// Extra environment of the forwarder and status-sync, KEY=VALUE
    /// (repeatable)
    #[arg(long, value_parser = pipeline::key_value)]
    pub env: Vec<(String, String)>,
    /// Runs during which other processes took more than this share of the
    /// CPU are marked
    #[arg(long, default_value_t = 0.05)]
    pub max_other: f64,
    /// Before each measured part, wait up to this many seconds for a quiet
    /// machine
    #[arg(long, default_value_t = 120)]
    pub quiet_wait: u64,
}

/// Canonical `created` Uber Eats orders, numbered: the golden fixture of
/// the legacy V2 API (`tests/fixtures/ubereats/fetched/v2-order-created.
/// expected.json`) with order id `BENCH-<n>` (which the bench backend
/// reads) and webhook id `bench-<n>`.
struct Orders {
    template: String,
}

impl Orders {
    fn new() -> Orders {
        let mut v: serde_json::Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/ubereats/fetched/v2-order-created.expected.json"
        ))
        .expect("the fixture is JSON");
        v["provider_order_id"] = "BENCH-@@@@@@@@@@@@".into();
        v["webhook_id"] = "bench-@@@@@@@@@@@@".into();
        v["tenant"] = TENANT.into();
        v["event"] = "created".into();
        Orders {
            template: serde_json::to_string(&v).expect("serializes"),
        }
    }

    fn make(&self, n: u64) -> Bytes {
        Bytes::from(self.template.replace("@@@@@@@@@@@@", &format!("{n:012}")))
    }
}

fn provider_order_id(n: u64) -> String {
    format!("BENCH-{n:012}")
}

fn webhook_id(n: u64) -> String {
    format!("bench-{n:012}")
}

/// Order `n`'s context as the transformer writes it: legacy API (`v2`),
/// eleven and a half minutes to answer.
fn context(n: u64, received: SystemTime) -> shared::answer::OrderContext {
    let v = serde_json::json!({
        "tenant": TENANT,
        "provider": "ubereats",
        "account": ACCOUNT,
        "provider_order_id": provider_order_id(n),
        "webhook_id": webhook_id(n),
        "display_code": null,
        "received_at": shared::dlq::rfc3339(received),
        "answer_by": shared::dlq::rfc3339(received + Duration::from_secs(690)),
        "api": "v2",
    });
    serde_json::from_value(v).expect("a valid order context")
}

/// One tenant with the bench backend (requests signed, as in production)
/// and its Uber Eats account with `auto_accept`: status calls go to `api`
/// (the timing proxy), tokens come from the fake.
fn hub_toml(backend: &str, api: &str, fake: &str) -> String {
    format!(
        r#"[[tenant]]
id = "{TENANT}"
backend_url = "{backend}"
backend_key_env = "BENCH_BACKEND_KEY"
signing_secret_env = "BENCH_SIGNING_SECRET"

[[account]]
id = "{ACCOUNT}"
provider = "ubereats"
tenant = "{TENANT}"
secret_envs = ["BENCH_UBEREATS_SECRET"]
default = true
auto_accept = true
[account.api]
base_url = "{api}"
token_url = "{fake}/oauth/v2/token"
client_id_env = "BENCH_UBER_CLIENT_ID"
client_secret_env = "BENCH_UBER_CLIENT_SECRET"

[forwarder]
# The bench backend is on loopback.
allowed_private_destinations = ["127.0.0.0/8"]

[provider_api]
# The fake provider (and the timing proxy) are on loopback.
allowed_private_destinations = ["127.0.0.0/8"]
"#
    )
}

/// The secrets the hub config names, as the bench gives them to the stages.
fn bench_secret(name: &str) -> Option<String> {
    Some(
        match name {
            "BENCH_SIGNING_SECRET" => SIGNING_SECRET,
            "BENCH_BACKEND_KEY" => BACKEND_KEY,
            "BENCH_UBER_CLIENT_ID" => fake::CLIENT_ID,
            "BENCH_UBER_CLIENT_SECRET" => fake::CLIENT_SECRET,
            _ => WEBHOOK_SECRET,
        }
        .to_owned(),
    )
}

/// nats-server, the bench backend, the fake and its timing proxy, the
/// forwarder and status-sync.
struct Stack {
    // Dropped first: the stages, then the proxy, the fake, the backend,
    // then NATS.
    stages: Vec<Server>,
    ops: Vec<std::net::SocketAddr>,
    proxy: Proxy,
    fake: Fake,
    backend: Backend,
    nats: NatsServer,
    js: jetstream::Context,
    contexts: jetstream::kv::Store,
    orders: Arc<Orders>,
    _dir: tempfile::TempDir,
}

impl Stack {
    /// Everything up and ready; the backend keeps up to `cap` arrivals.
    async fn start(args: &Args, cap: usize) -> anyhow::Result<Stack> {
        let nats = NatsServer::start()?;
        let client = tokio::time::timeout(STEP, async_nats::connect(nats.url()))
            .await
            .context("connecting to nats-server")??;
        let js = jetstream::new(client);
        let dir = tempfile::Builder::new()
            .prefix("orderhub-bench-status-")
            .tempdir()?;
        let backend = Backend::start(cap).await?;
        let fake = Fake::start(dir.path()).await?;
        let proxy = Proxy::start(fake.addr, Duration::from_millis(args.api_delay_ms)).await?;
        let toml = hub_toml(&backend.url(), &proxy.url(), &fake.url());
        let hub_path = dir.path().join("hub.toml");
        std::fs::write(&hub_path, &toml)?;
        let hub = shared::config::HubConfig::from_toml(&toml, "bench", &bench_secret)?;
        let defs = shared::streams::Definitions::load(&hub.streams);
        tokio::time::timeout(
            STEP,
            shared::app::ensure_streams(
                &js,
                &defs,
                &["ORDERS", "STATUS", "DLQ", "ADVISORIES"],
                true,
            ),
        )
        .await
        .context("creating the streams")??;
        let contexts = tokio::time::timeout(
            STEP,
            shared::app::ensure_bucket_retrying(
                &js,
                defs.bucket(shared::answer::ORDER_CONTEXT_BUCKET),
                true,
            ),
        )
        .await
        .context("creating the order context bucket")??;
        let mut stages = Vec::new();
        let mut ops = Vec::new();
        for name in STAGES {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], nats::free_port()?));
            let mut env: Vec<(String, String)> = vec![
                ("NATS_URL".into(), nats.url()),
                ("HUB_CONFIG".into(), hub_path.display().to_string()),
                ("OPS_ADDR".into(), addr.to_string()),
                ("LOG_FORMAT".into(), "json".into()),
                ("RUST_LOG".into(), "warn".into()),
                ("TOKEN_STORE_KEY".into(), TOKEN_STORE_KEY.into()),
                ("BENCH_BACKEND_KEY".into(), BACKEND_KEY.into()),
                ("BENCH_SIGNING_SECRET".into(), SIGNING_SECRET.into()),
                ("BENCH_UBEREATS_SECRET".into(), WEBHOOK_SECRET.into()),
                ("BENCH_UBER_CLIENT_ID".into(), fake::CLIENT_ID.into()),
                (
                    "BENCH_UBER_CLIENT_SECRET".into(),
                    fake::CLIENT_SECRET.into(),
                ),
            ];
            env.extend(args.env.iter().cloned());
            let bin = pipeline::stage_bin(name)?;
            let mut s = pipeline::spawn_stage(&bin, dir.path(), name, &env)?;
            pipeline::wait_ready(&mut s, addr)
                .await
                .with_context(|| format!("{name} not ready"))?;
            stages.push(s);
            ops.push(addr);
        }
        Ok(Stack {
            stages,
            ops,
            proxy,
            fake,
            backend,
            nats,
            js,
            contexts,
            orders: Arc::new(Orders::new()),
            _dir: dir,
        })
    }

    fn pid(&self, stage: &str) -> u32 {
        let i = STAGES.iter().position(|s| *s == stage).expect("a stage");
        self.stages[i].pid()
    }

    fn watched(&self) -> Vec<(&'static str, u32)> {
        vec![
            ("forwarder", self.pid("forwarder")),
            ("status-sync", self.pid("status-sync")),
            ("fake-provider", self.fake.pid()),
            ("nats-server", self.nats.pid()),
        ]
    }

    fn sampler(&self) -> Sampler {
        Sampler::start(
            self.js.clone(),
            vec![
                ("ORDERS".to_owned(), format!("forwarder-{TENANT}")),
                ("STATUS".to_owned(), "status-sync".to_owned()),
            ],
            vec![self.pid("forwarder"), self.pid("status-sync")],
            Duration::from_millis(250),
        )
    }

    fn logs(&self) -> String {
        STAGES
            .iter()
            .zip(&self.stages)
            .map(|(n, s)| format!("{n} log:\n{}", s.log_tail()))
            .chain([format!("fake-provider log:\n{}", self.fake.log_tail())])
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Writes the contexts of orders `range` to ORDER_CONTEXT, 8 at a time.
    async fn write_contexts(&self, range: std::ops::Range<u64>) -> anyhow::Result<()> {
        let next = Arc::new(AtomicU64::new(range.start));
        let received = SystemTime::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (next, kv, end) = (next.clone(), self.contexts.clone(), range.end);
            tasks.spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= end {
                        return anyhow::Ok(());
                    }
                    let ctx = context(n, received);
                    let value = Bytes::from(serde_json::to_vec(&ctx)?);
                    tokio::time::timeout(STEP, kv.put(ctx.key(), value))
                        .await
                        .context("writing an order context: no answer")??;
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        Ok(())
    }

    /// Publishes orders `range` to ORDERS as the transformer does, paced at
    /// `rate`/s if given (else as fast as acks come, up to 4096
    /// outstanding).
    async fn publish(&self, range: std::ops::Range<u64>, rate: Option<f64>) -> anyhow::Result<()> {
        let (tx, acker) = crate::nats::acker();
        let subject = shared::subjects::order(TENANT, Provider::Ubereats);
        let start = tokio::time::Instant::now();
        let first = range.start;
        for n in range {
            if let Some(rate) = rate {
                let due = start + Duration::from_secs_f64((n - first) as f64 / rate);
                tokio::time::sleep_until(due).await;
            }
            let id = webhook_id(n);
            let mut h = async_nats::HeaderMap::new();
            h.insert("Nats-Msg-Id", format!("order:{id}").as_str());
            h.insert(headers::WEBHOOK_ID, id.as_str());
            h.insert(headers::PROVIDER, Provider::Ubereats.as_str());
            h.insert(headers::ACCOUNT, ACCOUNT);
            h.insert(headers::TENANT, TENANT);
            h.insert(
                headers::RECEIVED_AT,
                shared::dlq::rfc3339(SystemTime::now()).as_str(),
            );
            h.insert(headers::EVENT, "created");
            h.insert("Content-Type", "application/json");
            let ack = tokio::time::timeout(
                STEP,
                self.js
                    .publish_with_headers(subject.clone(), h, self.orders.make(n)),
            )
            .await
            .context("publish timed out")??;
            if tx.send(ack).await.is_err() {
                bail!("acker stopped");
            }
        }
        drop(tx);
        let failed = acker.await?;
        if failed > 0 {
            bail!("{failed} orders were not acked");
        }
        Ok(())
    }

    /// Waits until the fake accepted `n` orders, at most `within`.
    async fn wait_accepted(&self, n: u64, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let have = self.proxy.accepted() as u64;
            if have >= n {
                return Ok(());
            }
            if Instant::now() > deadline {
                let dlq = stream_count(&self.js, "DLQ").await.unwrap_or(u64::MAX);
                bail!(
                    "the fake accepted {have} of {n} orders after {within:?} (backend {}, DLQ {dlq});\n{}",
                    self.backend.count(),
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Contexts, then orders `0..n`, all accepted.
    async fn warm_up(&self, n: u64) -> anyhow::Result<()> {
        self.write_contexts(0..n).await?;
        self.publish(0..n, None).await?;
        self.wait_accepted(n, Duration::from_secs(60 + n / 50))
            .await
    }

    /// When each accept command was stored on STATUS, by order number; read
    /// through one ordered consumer that delivers headers only.
    async fn commands_stored(&self) -> anyhow::Result<HashMap<u64, SystemTime>> {
        use jetstream::consumer::pull::OrderedConfig;
        let s = self.js.get_stream(shared::subjects::STATUS_STREAM).await?;
        let consumer = s
            .create_consumer(OrderedConfig {
                filter_subject: shared::subjects::STATUS_ALL.to_owned(),
                headers_only: true,
                ..Default::default()
            })
            .await?;
        let mut out = HashMap::new();
        if consumer.cached_info().num_pending == 0 {
            return Ok(out);
        }
        let mut messages = consumer.messages().await?;
        loop {
            let Some(msg) = tokio::time::timeout(STEP, messages.next())
                .await
                .context("reading STATUS: no message in time")?
            else {
                break;
            };
            let msg = msg.map_err(|e| anyhow::anyhow!("reading STATUS: {e}"))?;
            let info = msg
                .info()
                .map_err(|e| anyhow::anyhow!("reading STATUS: {e}"))?;
            let number = msg.headers.as_ref().and_then(|h| {
                [headers::STATUS_ID, "Nats-Msg-Id", headers::WEBHOOK_ID]
                    .iter()
                    .find_map(|name| proxy::order_number(h.get(*name)?.as_str()))
            });
            if let Some(n) = number {
                out.entry(n).or_insert_with(|| info.published.into());
            }
            if info.pending == 0 {
                break;
            }
        }
        Ok(out)
    }

    /// What the fake, the backend, the stages' metrics and the DLQ say.
    async fn health(&self, total: u64) -> anyhow::Result<Health> {
        let stats = self.fake.stats().await?;
        let calls = fake_status_calls(&self.fake).await?;
        let accepted: std::collections::HashSet<&str> = calls
            .iter()
            .filter(|c| c.accept && (200..300).contains(&c.answered))
            .map(|c| c.order_id.as_str())
            .collect();
        let mut metrics = String::new();
        for ops in &self.ops {
            let text = procs::metrics_text(*ops).await;
            if text.is_empty() {
                bail!("a stage's /metrics did not answer");
            }
            metrics.push_str(&text);
        }
        let (first, duplicates) = self.backend.first_arrivals();
        Ok(Health {
            delivered: first.len() as u64,
            backend_duplicates: duplicates,
            status_calls: calls.len() as u64,
            accepted: accepted.len() as u64,
            other_calls: calls
                .iter()
                .filter(|c| !c.accept || !(200..300).contains(&c.answered))
                .count() as u64,
            mints: stats.uber_mints,
            retries: metric_sum(&metrics, "_messages_retried_total") as u64,
            dead_letters: metric_sum(&metrics, "_messages_dead_lettered_total") as u64,
            dlq: stream_count(&self.js, "DLQ").await?,
            orders: total,
        })
    }
}

async fn stream_count(js: &jetstream::Context, stream: &str) -> anyhow::Result<u64> {
    let mut s = tokio::time::timeout(STEP, js.get_stream(stream))
        .await
        .with_context(|| format!("{stream}: no answer"))??;
    let info = tokio::time::timeout(STEP, s.info())
        .await
        .with_context(|| format!("{stream}: no answer"))??;
    Ok(info.state.messages)
}

/// One status call the fake recorded (`GET /_fake/status-calls`).
struct FakeCall {
    order_id: String,
    accept: bool,
    answered: u16,
}

async fn fake_status_calls(fake: &Fake) -> anyhow::Result<Vec<FakeCall>> {
    let mut conn = Conn::open(fake.addr).await?;
    let (status, body) = conn
        .send(Method::GET, "/_fake/status-calls", &[], Bytes::new())
        .await?;
    if status != StatusCode::OK {
        bail!("GET /_fake/status-calls: the fake answered {status}");
    }
    let v: Vec<serde_json::Value> =
        serde_json::from_slice(&body).context("the fake's status calls are not a JSON array")?;
    Ok(v.iter()
        .map(|c| FakeCall {
            order_id: c["order_id"].as_str().unwrap_or_default().to_owned(),
            accept: c["method"] == "POST"
                && c["path"]
                    .as_str()
                    .is_some_and(|p| p.ends_with("/accept_pos_order")),
            answered: c["answered"].as_u64().unwrap_or(0) as u16,
        })
        .collect())
}

/// The sum of every series whose metric name ends with `suffix` (both
/// stages' worker counters).
fn metric_sum(text: &str, suffix: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let (name, value) = match line.split_once('{') {
                Some((name, rest)) => (name, rest.split_once("} ")?.1),
                None => line.split_once(' ')?,
            };
            name.ends_with(suffix)
                .then(|| value.trim().parse::<f64>().ok())?
        })
        .sum()
}

/// Whether a run went as expected: every order delivered and accepted at
/// the fake exactly once, one mint, no dead letter.
#[derive(Debug, Clone, Copy)]
struct Health {
    /// Orders the backend got (distinct).
    delivered: u64,
    backend_duplicates: u64,
    /// Status calls the fake recorded, accepted orders (distinct, 2xx),
    /// and calls that were not a 2xx accept.
    status_calls: u64,
    accepted: u64,
    other_calls: u64,
    mints: u64,
    retries: u64,
    dead_letters: u64,
    dlq: u64,
    /// Orders published (warm-up included).
    orders: u64,
}

impl Health {
    fn clean(&self) -> bool {
        self.delivered == self.orders
            && self.accepted == self.orders
            && self.status_calls == self.orders
            && self.other_calls == 0
            && self.mints == 1
            && self.dead_letters == 0
            && self.dlq == 0
    }

    fn show(&self) -> String {
        format!(
            "backend got {} (duplicates {}); the fake accepted {} in {} status calls ({} not a 2xx accept); token mints {}; retries {}, dead letters {}, DLQ {}; for {} orders{}",
            self.delivered,
            self.backend_duplicates,
            self.accepted,
            self.status_calls,
            self.other_calls,
            self.mints,
            self.retries,
            self.dead_letters,
            self.dlq,
            self.orders,
            if self.clean() { "" } else { "  UNEXPECTED" }
        )
    }
}

/// What a drain or paced run measured.
struct Measured {
    /// Drain: status calls/s; paced: the offered rate.
    rate: f64,
    /// Paced only: backend 2xx → accept answered, p50, p99 and max ms.
    p50: f64,
    p99: f64,
    max: f64,
    /// µs per order of [`CHARGED`].
    us: [f64; 5],
    /// Peak RSS MiB: forwarder, status-sync.
    rss: Vec<f64>,
    health: Health,
}

fn cpu_row(cpu: &[(String, f64)], orders: u64) -> [f64; 5] {
    CHARGED.map(|who| pipeline::cpu_of(cpu, who) * 1e6 / orders.max(1) as f64)
}

fn show_per_1k(cpu: &[(String, f64)], orders: u64) -> String {
    CHARGED
        .iter()
        .map(|who| {
            format!(
                "{who} {:.3}",
                pipeline::cpu_of(cpu, who) * 1000.0 / orders.max(1) as f64
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn show_rss(rss: &[f64]) -> String {
    STAGES
        .iter()
        .zip(rss)
        .map(|(n, m)| format!("{n} {m:.1}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn show_lag(lag: &[pipeline::LagSample], from: Instant, to: Instant, rate: f64) -> String {
    ["forwarder", "status-sync"]
        .iter()
        .enumerate()
        .map(|(i, s)| match LagSummary::of(lag, i, from, to) {
            Some(l) => format!("{s}: {}", l.show(rate)),
            None => format!("{s}: no lag sample"),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn disturbed(cpu: &[(String, f64)], max_other: f64) -> String {
    let share = pipeline::other_share(cpu);
    if share > max_other {
        format!(
            "\n         (DISTURBED: other processes took {:.0}% of the CPU)",
            share * 100.0
        )
    } else {
        String::new()
    }
}

/// Backend 2xx and accept answered of orders `range`; fails if one is
/// missing.
fn times(stack: &Stack, range: std::ops::Range<u64>) -> anyhow::Result<Vec<(Instant, Instant)>> {
    let (delivered, _) = stack.backend.first_arrivals();
    let accepted = stack.proxy.accept_times();
    range
        .map(|n| match (delivered.get(&n), accepted.get(&n)) {
            (Some(a), Some(b)) => Ok((*a, *b)),
            _ => bail!("order {n}: not delivered to the backend or not accepted at the fake"),
        })
        .collect()
}

async fn drain(args: &Args) -> anyhow::Result<Measured> {
    let (w, n) = (args.warmup, args.orders);
    let stack = Stack::start(args, (w + n) as usize * 2).await?;
    stack.warm_up(w).await?;
    stack.write_contexts(w..w + n).await?;
    procs::wait_quiet(args.max_other, Duration::from_secs(args.quiet_wait)).await;
    let sampler = stack.sampler();
    let meter = CpuMeter::start(&stack.watched());
    let started = Instant::now();
    stack.publish(w..w + n, None).await?;
    let published = started.elapsed();
    stack
        .wait_accepted(w + n, Duration::from_secs(60 + n / 50))
        .await?;
    let cpu = meter.read();
    let ended = Instant::now();
    let (lag, rss) = sampler.finish().await;
    let t = times(&stack, w..w + n)?;
    let first = t.iter().map(|t| t.0).min().expect("some");
    let last = t.iter().map(|t| t.1).max().expect("some");
    let last_delivered = t.iter().map(|t| t.0).max().expect("some");
    let span = last.duration_since(first);
    let rate = n as f64 / span.as_secs_f64();
    let health = stack.health(w + n).await?;
    println!(
        "  drain: {} orders, first backend 2xx → last accept at the fake {:.2} s = {} status calls/s (published in {:.2} s; the backend had them all {:.2} s after its first)",
        thousands(n as f64),
        span.as_secs_f64(),
        thousands(rate),
        published.as_secs_f64(),
        last_delivered.duration_since(first).as_secs_f64(),
    );
    println!(
        "         CPU-s from the first publish to the last accept: {}",
        pipeline::show_cpu(&cpu, n)
    );
    println!(
        "         CPU-s per 1k orders: {}; peak RSS MiB: {}",
        show_per_1k(&cpu, n),
        show_rss(&rss)
    );
    println!(
        "         backlog (max pending + ack pending): {}",
        ["forwarder", "status-sync"]
            .iter()
            .enumerate()
            .map(|(i, s)| match LagSummary::of(&lag, i, started, ended) {
                Some(l) => format!("{s} {}", l.max),
                None => format!("{s} no sample"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "         {}{}",
        health.show(),
        disturbed(&cpu, args.max_other)
    );
    Ok(Measured {
        rate,
        p50: f64::NAN,
        p99: f64::NAN,
        max: f64::NAN,
        us: cpu_row(&cpu, n),
        rss,
        health,
    })
}

async fn paced(args: &Args, rate: f64) -> anyhow::Result<Measured> {
    let w = args.warmup;
    let n = ((rate * args.seconds as f64).round() as u64).max(1);
    let stack = Stack::start(args, (w + n) as usize * 2).await?;
    stack.warm_up(w).await?;
    stack.write_contexts(w..w + n).await?;
    procs::wait_quiet(args.max_other, Duration::from_secs(args.quiet_wait)).await;
    let sampler = stack.sampler();
    let meter = CpuMeter::start(&stack.watched());
    let started = Instant::now();
    stack.publish(w..w + n, Some(rate)).await?;
    let window_end = Instant::now();
    let cpu = meter.read();
    stack
        .wait_accepted(w + n, Duration::from_secs(60 + n / 50))
        .await?;
    let (lag, rss) = sampler.finish().await;
    let t = times(&stack, w..w + n)?;
    let lat: Vec<Duration> = t.iter().map(|(a, b)| b.duration_since(*a)).collect();
    let mut sorted = lat.clone();
    sorted.sort_unstable();
    let p = |q| crate::stats::ms(crate::stats::percentile(&sorted, q));
    // The split at the command's stored time (nats-server's clock, the
    // same machine's): the bench's instants as wall-clock times.
    let (anchor_instant, anchor_wall) = (Instant::now(), SystemTime::now());
    let wall = |i: Instant| anchor_wall - anchor_instant.duration_since(i);
    let stored = stack.commands_stored().await?;
    let (mut to_status, mut to_accept) = (Vec::new(), Vec::new());
    for (k, (a, b)) in (w..w + n).zip(&t) {
        if let Some(s) = stored.get(&k) {
            to_status.push(s.duration_since(wall(*a)).unwrap_or_default());
            to_accept.push(wall(*b).duration_since(*s).unwrap_or_default());
        }
    }
    let fake_time: Vec<Duration> = stack
        .proxy
        .calls()
        .iter()
        .filter(|c| c.number.is_some_and(|k| k >= w))
        .map(|c| c.answered.duration_since(c.received))
        .collect();
    let offered = n as f64 / (window_end - started).as_secs_f64();
    let health = stack.health(w + n).await?;
    println!(
        "  paced: {} orders/s for {:.1} s: backend 2xx → accept answered by the fake {}",
        thousands(offered),
        (window_end - started).as_secs_f64(),
        pipeline::latency_line(lat),
    );
    println!(
        "         backend 2xx → accept command stored on STATUS {}",
        pipeline::latency_line(to_status)
    );
    println!(
        "         command stored → accept answered {}",
        pipeline::latency_line(to_accept)
    );
    println!(
        "         the call at the proxy (proxy → fake → proxy{}) {}",
        match args.api_delay_ms {
            0 => String::new(),
            ms => format!(", {ms} ms held"),
        },
        pipeline::latency_line(fake_time)
    );
    println!(
        "         CPU-s in the window: {}; per 1k orders: {}; peak RSS MiB: {}",
        pipeline::show_cpu(&cpu, n),
        show_per_1k(&cpu, n),
        show_rss(&rss)
    );
    println!(
        "         {}",
        show_lag(&lag, started + Duration::from_secs(1), window_end, offered)
    );
    println!(
        "         {}{}",
        health.show(),
        disturbed(&cpu, args.max_other)
    );
    Ok(Measured {
        rate: offered,
        p50: p(0.5),
        p99: p(0.99),
        max: p(1.0),
        us: cpu_row(&cpu, n),
        rss,
        health,
    })
}

pub async fn run(args: Args) -> anyhow::Result<bool> {
    if args.rounds == 0 || args.orders == 0 || args.warmup == 0 {
        bail!("need a round, some orders and a warm-up");
    }
    if args.no_drain && args.no_paced {
        bail!("--no-drain and --no-paced leave nothing to measure");
    }
    nats::server_bin()?;
    for s in STAGES {
        pipeline::stage_bin(s)?;
    }
    println!("machine: {}", procs::machine());
    println!("nats-server: {}", nats::server_version());
    println!(
        "status: canonical created Uber Eats orders in ORDERS → release forwarder → bench backend (2xx) → auto-accept command on STATUS → release status-sync → accept_pos_order at the release fake-provider (through a timing proxy{}); {} orders per drain after a {}-order warm-up; paced {} s at {}; stage env {:?}",
        match args.api_delay_ms {
            0 => String::new(),
            ms => format!(" holding each call {ms} ms"),
        },
        args.orders,
        args.warmup,
        args.seconds,
        args.paced_rate.map_or(
            format!("{:.0}% of the drain rate", args.paced_share * 100.0),
            |r| format!("{r:.0}/s")
        ),
        args.env,
    );
    let mut drains = Vec::new();
    let mut paceds = Vec::new();
    for round in 1..=args.rounds {
        println!("round {round}/{}", args.rounds);
        let d = if args.no_drain {
            None
        } else {
            Some(drain(&args).await?)
        };
        let rate = args
            .paced_rate
            .or_else(|| d.as_ref().map(|d| d.rate * args.paced_share));
        if let (false, Some(rate)) = (args.no_paced, rate) {
            paceds.push(paced(&args, rate).await?);
        }
        drains.extend(d);
    }
    println!();
    println!("summary: median (min–max) over {} round(s)", args.rounds);
    let of = |runs: &[Measured], f: &dyn Fn(&Measured) -> f64| {
        Spread::of(&runs.iter().map(f).collect::<Vec<_>>())
    };
    let cost = |runs: &[Measured]| {
        format!(
            "CPU ms per 1k orders: forwarder {}, status-sync {}, fake-provider {}, nats-server {}, bench {}; peak RSS MiB forwarder {}, status-sync {}",
            of(runs, &|m| m.us[0]).show(0),
            of(runs, &|m| m.us[1]).show(0),
            of(runs, &|m| m.us[2]).show(0),
            of(runs, &|m| m.us[3]).show(0),
            of(runs, &|m| m.us[4]).show(0),
            of(runs, &|m| m.rss.first().copied().unwrap_or(f64::NAN)).show(1),
            of(runs, &|m| m.rss.get(1).copied().unwrap_or(f64::NAN)).show(1),
        )
    };
    if !drains.is_empty() {
        println!(
            "drain: {} status calls/s; {}",
            of(&drains, &|m| m.rate).show(0),
            cost(&drains)
        );
    }
    if !paceds.is_empty() {
        println!(
            "paced at {}/s: backend 2xx → provider accept p50 {} ms, p99 {} ms, max {} ms; {}",
            of(&paceds, &|m| m.rate).show(0),
            of(&paceds, &|m| m.p50).show(2),
            of(&paceds, &|m| m.p99).show(2),
            of(&paceds, &|m| m.max).show(2),
            cost(&paceds)
        );
    }
    let all: Vec<&Health> = drains.iter().chain(&paceds).map(|m| &m.health).collect();
    let clean = all.iter().all(|h| h.clean());
    println!(
        "every run: token mints {} ({} runs, expected 1 each); status calls {} for {} orders; dead letters {}, DLQ {}: {}",
        all.iter()
            .map(|h| h.mints.to_string())
            .collect::<Vec<_>>()
            .join("/"),
        all.len(),
        all.iter().map(|h| h.status_calls).sum::<u64>(),
        all.iter().map(|h| h.orders).sum::<u64>(),
        all.iter().map(|h| h.dead_letters).sum::<u64>(),
        all.iter().map(|h| h.dlq).sum::<u64>(),
        if clean {
            "as expected"
        } else {
            "UNEXPECTED (see the runs above)"
        }
    );
    Ok(clean)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_are_valid_created_orders_the_backend_can_number() {
        let o = Orders::new();
        let body = o.make(42);
        let order: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(order["provider_order_id"], "BENCH-000000000042");
        assert_eq!(order["webhook_id"], "bench-000000000042");
        assert_eq!(order["event"], "created");
        assert_eq!(order["tenant"], TENANT);
        assert_eq!(order["provider"], "ubereats");
        assert_eq!(pipeline::order_number(&body), Some(42));
        assert_ne!(o.make(1), o.make(2));
    }

    #[test]
    fn an_order_context_names_the_order_and_its_account() {
        let ctx = context(7, SystemTime::UNIX_EPOCH);
        assert_eq!(ctx.provider_order_id, "BENCH-000000000007");
        assert_eq!(ctx.webhook_id, "bench-000000000007");
        assert_eq!(ctx.account, ACCOUNT);
        assert_eq!(ctx.api.as_deref(), Some("v2"));
        assert_eq!(
            ctx.key(),
            shared::answer::key(TENANT, Provider::Ubereats, "BENCH-000000000007")
        );
    }

    #[test]
    fn the_hub_config_auto_accepts_at_the_proxy_with_the_fakes_tokens() {
        let hub = shared::config::HubConfig::from_toml(
            &hub_toml(
                "http://127.0.0.1:1/orders",
                "http://127.0.0.1:2",
                "http://127.0.0.1:3",
            ),
            "bench",
            &bench_secret,
        )
        .unwrap();
        let account = hub.account(Provider::Ubereats, ACCOUNT).unwrap();
        assert!(account.auto_accept);
        let api = account.api.as_ref().unwrap();
        assert_eq!(api.base_url.as_str(), "http://127.0.0.1:2/");
        assert_eq!(
            api.token_url.as_ref().unwrap().as_str(),
            "http://127.0.0.1:3/oauth/v2/token"
        );
    }

    #[test]
    fn sums_the_worker_counters_of_both_stages() {
        let text = "# HELP x\nforwarder_messages_dead_lettered_total{error_type=\"a\"} 2\nstatus_sync_messages_dead_lettered_total{error_type=\"b\"} 1\nstatus_sync_messages_dead_lettered_totally 5\nforwarder_messages_retried_total 3\n";
        assert_eq!(metric_sum(text, "_messages_dead_lettered_total"), 3.0);
        assert_eq!(metric_sum(text, "_messages_retried_total"), 3.0);
    }

    #[test]
    fn health_wants_one_accept_per_order_and_one_mint() {
        let h = Health {
            delivered: 100,
            backend_duplicates: 0,
            status_calls: 100,
            accepted: 100,
            other_calls: 0,
            mints: 1,
            retries: 0,
            dead_letters: 0,
            dlq: 0,
            orders: 100,
        };
        assert!(h.clean());
        assert!(!Health { mints: 2, ..h }.clean());
        assert!(
            !Health {
                status_calls: 101,
                ..h
            }
            .clean()
        );
        assert!(!Health { accepted: 99, ..h }.clean());
        assert!(!Health { dlq: 1, ..h }.clean());
    }
}
