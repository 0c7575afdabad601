//! `orderhub-bench pull` (issue 13): the pull path. Uber Eats notifications
//! become canonical orders through the release `fetcher` (which GETs each
//! order from the fake Uber Eats API with a token from the fleet-shared
//! token store) and the release `transformer`, each run against its own
//! nats-server and its own release `fake-provider`, all on 127.0.0.1.
//!
//! - **drain**: after a warm-up (the token mint, the connection pools), N
//!   notifications are published to WEBHOOKS as fast as JetStream acks
//!   them; orders/s is N ÷ (last order stored in ORDERS − first
//!   notification stored in WEBHOOKS), both stamped by the same server.
//! - **paced**: a fresh stack; notifications at a fixed rate (by default
//!   half the drain rate of the same round and concurrency), and each one's
//!   latency from its notification's stored time to its order's.
//! - **fake alone**: the fake provider without the hub, order GETs with one
//!   token over keep-alive connections: whether the fake is the limit.
//! - `--api-delay-ms`: every order GET is held that long by a proxy in the
//!   bench ([`delay`]), as a real API's latency would hold it.
//!
//! Each drain and paced run is repeated for every `FETCHER_CONCURRENCY` of
//! `--concurrency`. A run reports CPU seconds per process (per order and
//! per 1k orders), the peak RSS of the fetcher, transformer and fake, the
//! consumers' lag, the token mints the fake counted, fetch errors, retries
//! and dead letters. Every notification must become exactly one order; the
//! bench fails otherwise, and exits non-zero when a run saw a fetch error,
//! a dead letter or more than one mint.

mod delay;
pub mod fake;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use async_nats::jetstream;
use futures::StreamExt;
use shared::{Provider, headers};

use crate::ingress_bench::thousands;
use crate::nats::{self, NatsServer};
use crate::pipeline::{self, CpuMeter, LagSummary, STEP, Sampler};
use crate::procs::{self, Server};
use crate::stats::Spread;
use fake::Fake;

const ACCOUNT: &str = "bench-ubereats";
const TENANT: &str = "bench";
const WEBHOOK_SECRET: &str = "orderhub-bench-ubereats-webhook-secret";
/// base64 of the 32 bytes `orderhub-bench-only-token-key-32`: the token
/// store key of a benchmark, never a real one.
const TOKEN_STORE_KEY: &str = "b3JkZXJodWItYmVuY2gtb25seS10b2tlbi1rZXktMzI=";
const STAGES: [&str; 2] = ["fetcher", "transformer"];

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Notifications per drain run (after the warm-up)
    #[arg(long, default_value_t = 50_000)]
    pub orders: u64,
    /// Notifications of the warm-up before each measured part (the token
    /// mint, the connection pools)
    #[arg(long, default_value_t = 2_000)]
    pub warmup: u64,
    /// FETCHER_CONCURRENCY values to measure, each in every round
    #[arg(long, value_delimiter = ',', default_value = "16,64,256")]
    pub concurrency: Vec<usize>,
    /// Rounds (each: the fake alone, then every concurrency's drain and
    /// paced run)
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Paced rate as a share of the drain rate of the same round and
    /// concurrency
    #[arg(long, default_value_t = 0.5)]
    pub paced_share: f64,
    /// Paced rate in notifications/s (overrides --paced-share)
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
    /// Hold every order GET this long on its way to the fake provider (a
    /// proxy in the bench), as a real provider API's latency would
    #[arg(long, default_value_t = 0)]
    pub api_delay_ms: u64,
    /// Keep-alive connections of the fake-alone measurement
    #[arg(long, default_value_t = 64)]
    pub fake_connections: usize,
    /// Length of the fake-alone measurement in seconds (0: skip it)
    #[arg(long, default_value_t = 5)]
    pub fake_seconds: u64,
    /// Extra environment of the fetcher and the transformer, KEY=VALUE
    /// (repeatable), e.g. TRANSFORMER_CONCURRENCY=64
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

/// Uber Eats orders and their notifications, numbered: order `n` is the
/// legacy V2 API fixture (`tests/fixtures/ubereats/fetched/v2-order-
/// created.json`, 6.3 KB) with its id's last group replaced by `n`, and its
/// notification is the V2 notification fixture naming that id.
pub struct Orders {
    /// The order before and after its id.
    body: (String, String),
    id_prefix: String,
    notification: String,
}

impl Orders {
    pub fn new() -> Orders {
        let order = include_str!("../../tests/fixtures/ubereats/fetched/v2-order-created.json");
        let v: serde_json::Value = serde_json::from_str(order).expect("the fixture is JSON");
        let id = v["id"].as_str().expect("the fixture has an id");
        let (before, after) = order
            .split_once(&format!("\"{id}\""))
            .expect("the id is there");
        let id_prefix = id[..id.rfind('-').expect("a UUID") + 1].to_owned();
        let mut n: serde_json::Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/ubereats/v2-order-created.json"
        ))
        .expect("the fixture is JSON");
        n["event_id"] = "3e9d7f1a-2b4c-4d6e-8f01-@NUMBER@".into();
        n["meta"]["resource_id"] = "@ID@".into();
        n["resource_href"] = "@BASE@/v2/eats/order/@ID@".into();
        Orders {
            body: (format!("{before}\""), format!("\"{after}")),
            id_prefix,
            notification: n.to_string(),
        }
    }

    /// Order `n`'s id: a UUID whose last group is `n`.
    pub fn id(&self, n: u64) -> String {
        format!("{}{n:012}", self.id_prefix)
    }

    /// Order `n` as the API answers it.
    pub fn body(&self, n: u64) -> bytes::Bytes {
        let (before, after) = &self.body;
        bytes::Bytes::from(format!("{before}{}{after}", self.id(n)))
    }

    /// Order `n`'s notification; its `resource_href` names `base` (only its
    /// path counts: the fetcher fetches from the account's `base_url`).
    pub fn notification(&self, n: u64, base: &str) -> (String, bytes::Bytes) {
        let number = format!("{n:012}");
        let event_id = format!("3e9d7f1a-2b4c-4d6e-8f01-{number}");
        let body = self
            .notification
            .replace("@NUMBER@", &number)
            .replace("@ID@", &self.id(n))
            .replace("@BASE@", base);
        (event_id, bytes::Bytes::from(body))
    }
}

/// The webhook id of notification `n`, and back.
fn webhook_id(n: u64) -> String {
    format!("bench-{n:012}")
}

fn webhook_number(id: &str) -> Option<u64> {
    id.strip_prefix("bench-")?.parse().ok()
}

/// One tenant and its Uber Eats account, with the fixture's store and every
/// item and modifier mapped (the conversion looks each up). Orders are read
/// from `api` (the fake, or the delaying proxy in front of it), tokens from
/// the fake.
fn hub_toml(api: &str, fake: &str) -> String {
    format!(
        r#"[[tenant]]
id = "{TENANT}"
backend_url = "http://127.0.0.1:9/orders"

[[account]]
id = "{ACCOUNT}"
provider = "ubereats"
tenant = "{TENANT}"
secret_envs = ["BENCH_UBEREATS_SECRET"]
default = true
[account.branches]
"CG-NYC-ASTORIA" = "nyc-astoria"
[account.products]
"POS-FAL-PLATE" = "prod_8001"
"POS-BAKLAVA-3" = "prod_8003"
"MOD-TAHINI" = "prod_8100"
"MOD-HUMMUS" = "prod_8101"
[account.api]
base_url = "{api}"
token_url = "{fake}/oauth/v2/token"
client_id_env = "BENCH_UBER_CLIENT_ID"
client_secret_env = "BENCH_UBER_CLIENT_SECRET"

[provider_api]
# The fake provider is on loopback.
allowed_private_destinations = ["127.0.0.0/8"]
"#
    )
}

/// nats-server, the fake provider with its orders, the fetcher and the
/// transformer.
struct Stack {
    // Dropped first: the stages, then the proxy, the fake, then NATS.
    stages: Vec<Server>,
    ops: Vec<std::net::SocketAddr>,
    _delay: Option<delay::Delay>,
    fake: Fake,
    nats: NatsServer,
    js: jetstream::Context,
    _dir: tempfile::TempDir,
}

impl Stack {
    /// Everything up and ready, `orders` orders in the fake.
    async fn start(
        args: &Args,
        concurrency: usize,
        orders: &Arc<Orders>,
        count: u64,
    ) -> anyhow::Result<Stack> {
        let nats = NatsServer::start()?;
        let client = tokio::time::timeout(STEP, async_nats::connect(nats.url()))
            .await
            .context("connecting to nats-server")??;
        let js = jetstream::new(client);
        let dir = tempfile::Builder::new()
            .prefix("orderhub-bench-pull-")
            .tempdir()?;
        let fake = Fake::start(dir.path()).await?;
        fake.load(orders, 0..count).await?;
        let proxy = match args.api_delay_ms {
            0 => None,
            ms => Some(delay::Delay::start(fake.addr, Duration::from_millis(ms)).await?),
        };
        let api = proxy.as_ref().map_or_else(|| fake.url(), delay::Delay::url);
        let toml = hub_toml(&api, &fake.url());
        let hub_path = dir.path().join("hub.toml");
        std::fs::write(&hub_path, &toml)?;
        let hub = shared::config::HubConfig::from_toml(&toml, "bench", &|_| {
            Some("any value: only the streams are read".to_owned())
        })?;
        let defs = shared::streams::Definitions::load(&hub.streams);
        tokio::time::timeout(
            STEP,
            shared::app::ensure_streams(
                &js,
                &defs,
                &["WEBHOOKS", "ORDERS", "DLQ", "ADVISORIES"],
                true,
            ),
        )
        .await
        .context("creating the streams")??;
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
                ("BENCH_UBEREATS_SECRET".into(), WEBHOOK_SECRET.into()),
                ("BENCH_UBER_CLIENT_ID".into(), fake::CLIENT_ID.into()),
                (
                    "BENCH_UBER_CLIENT_SECRET".into(),
                    fake::CLIENT_SECRET.into(),
                ),
                ("FETCHER_CONCURRENCY".into(), concurrency.to_string()),
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
            _delay: proxy,
            fake,
            nats,
            js,
            _dir: dir,
        })
    }

    fn pid(&self, stage: &str) -> u32 {
        let i = STAGES.iter().position(|s| *s == stage).expect("a stage");
        self.stages[i].pid()
    }

    /// The processes a run charges CPU to.
    fn watched(&self) -> Vec<(&'static str, u32)> {
        vec![
            ("fetcher", self.pid("fetcher")),
            ("transformer", self.pid("transformer")),
            ("fake-provider", self.fake.pid()),
            ("nats-server", self.nats.pid()),
        ]
    }

    fn sampler(&self) -> Sampler {
        Sampler::start(
            self.js.clone(),
            STAGES
                .iter()
                .map(|s| ("WEBHOOKS".to_owned(), s.to_string()))
                .collect(),
            vec![
                self.pid("fetcher"),
                self.pid("transformer"),
                self.fake.pid(),
            ],
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

    /// Publishes notifications `range` as the ingress stores them, paced
    /// at `rate`/s if given (else as fast as acks come, up to 4096
    /// outstanding).
    async fn notify(
        &self,
        orders: &Orders,
        range: std::ops::Range<u64>,
        rate: Option<f64>,
    ) -> anyhow::Result<()> {
        let (tx, acker) = crate::nats::acker();
        let base = self.fake.url();
        let subject = shared::subjects::raw_webhook(Provider::Ubereats, ACCOUNT);
        let start = tokio::time::Instant::now();
        let first = range.start;
        for n in range {
            if let Some(rate) = rate {
                let due = start + Duration::from_secs_f64((n - first) as f64 / rate);
                tokio::time::sleep_until(due).await;
            }
            let (event_id, body) = orders.notification(n, &base);
            let msg_id = ingress::pipeline::message_id(
                Provider::Ubereats,
                &ingress::pipeline::Route::Generic,
                &body,
                ACCOUNT,
                Some(&event_id),
            );
            let mut h = async_nats::HeaderMap::new();
            h.insert("Nats-Msg-Id", msg_id.as_str());
            h.insert(headers::WEBHOOK_ID, webhook_id(n).as_str());
            h.insert(headers::PROVIDER, Provider::Ubereats.as_str());
            h.insert(headers::ACCOUNT, ACCOUNT);
            h.insert(headers::TENANT, TENANT);
            h.insert(
                headers::RECEIVED_AT,
                shared::dlq::rfc3339(SystemTime::now()).as_str(),
            );
            // A new, unsampled trace, as the ingress makes by default.
            h.insert(
                headers::TRACEPARENT,
                format!("00-{:032x}-{:016x}-00", u128::from(n) + 1, n + 1).as_str(),
            );
            h.insert("Content-Type", "application/json");
            let ack =
                tokio::time::timeout(STEP, self.js.publish_with_headers(subject.clone(), h, body))
                    .await
                    .context("publish timed out")??;
            if tx.send(ack).await.is_err() {
                bail!("acker stopped");
            }
        }
        drop(tx);
        let failed = acker.await?;
        if failed > 0 {
            bail!("{failed} notifications were not acked");
        }
        Ok(())
    }

    async fn stream_count(&self, stream: &str) -> anyhow::Result<u64> {
        let mut s = tokio::time::timeout(STEP, self.js.get_stream(stream))
            .await
            .with_context(|| format!("{stream}: no answer"))??;
        let info = tokio::time::timeout(STEP, s.info())
            .await
            .with_context(|| format!("{stream}: no answer"))??;
        Ok(info.state.messages)
    }

    /// Waits until ORDERS holds `n` orders, at most `within`.
    async fn wait_orders(&self, n: u64, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let have = self.stream_count("ORDERS").await?;
            if have >= n {
                return Ok(());
            }
            if Instant::now() > deadline {
                let dlq = self.stream_count("DLQ").await.unwrap_or(u64::MAX);
                bail!(
                    "ORDERS holds {have} of {n} orders after {within:?} (DLQ {dlq});\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The warm-up: notifications `0..n`, all become orders.
    async fn warm_up(&self, orders: &Orders, n: u64) -> anyhow::Result<()> {
        self.notify(orders, 0..n, None).await?;
        self.wait_orders(n, Duration::from_secs(60 + n / 50)).await
    }

    /// When each message of `stream` under `filter` was stored, by the
    /// number of its webhook id; read through one ordered consumer that
    /// delivers headers only.
    async fn stored_times(
        &self,
        stream: &str,
        filter: &str,
    ) -> anyhow::Result<HashMap<u64, SystemTime>> {
        use jetstream::consumer::pull::OrderedConfig;
        let s = self.js.get_stream(stream).await?;
        let consumer = s
            .create_consumer(OrderedConfig {
                filter_subject: filter.to_owned(),
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
                .with_context(|| format!("reading {stream}: no message within {STEP:?}"))?
            else {
                break;
            };
            let msg = msg.map_err(|e| anyhow::anyhow!("reading {stream}: {e}"))?;
            let info = msg
                .info()
                .map_err(|e| anyhow::anyhow!("reading {stream}: {e}"))?;
            let number = msg
                .headers
                .as_ref()
                .and_then(|h| h.get(headers::WEBHOOK_ID))
                .and_then(|v| webhook_number(v.as_str()));
            if let Some(n) = number {
                out.insert(n, info.published.into());
            }
            if info.pending == 0 {
                break;
            }
        }
        Ok(out)
    }

    /// Notification-stored and order-stored times of notifications
    /// `range`; fails if one has no order.
    async fn times(
        &self,
        range: std::ops::Range<u64>,
    ) -> anyhow::Result<Vec<(SystemTime, SystemTime)>> {
        let notified = self
            .stored_times(
                "WEBHOOKS",
                &shared::subjects::raw_webhooks_of(Provider::Ubereats),
            )
            .await?;
        let ordered = self.stored_times("ORDERS", "orders.>").await?;
        range
            .map(|n| match (notified.get(&n), ordered.get(&n)) {
                (Some(a), Some(b)) => Ok((*a, *b)),
                _ => bail!("notification {n}: no stored notification or no order"),
            })
            .collect()
    }

    /// The last order in ORDERS was converted with the account's mappings:
    /// its store became the branch, every line and modifier a product.
    async fn check_last_order(&self) -> anyhow::Result<()> {
        let subject = shared::subjects::order(TENANT, Provider::Ubereats);
        let stream = self.js.get_stream("ORDERS").await?;
        let msg = tokio::time::timeout(STEP, stream.get_last_raw_message_by_subject(&subject))
            .await
            .context("ORDERS: no answer")??;
        let order: serde_json::Value =
            serde_json::from_slice(&msg.payload).context("the order is not JSON")?;
        unmapped(&order).map_or(Ok(()), |what| {
            bail!("an order in ORDERS was converted without the mappings: {what}")
        })
    }

    /// What the fake, the stages' metrics and the DLQ say went wrong.
    async fn health(&self, notified: u64) -> anyhow::Result<Health> {
        self.check_last_order().await?;
        let stats = self.fake.stats().await?;
        let fetcher = crate::procs::metrics_text(self.ops[0]).await;
        let transformer = crate::procs::metrics_text(self.ops[1]).await;
        if fetcher.is_empty() || transformer.is_empty() {
            bail!("a stage's /metrics did not answer");
        }
        Ok(Health {
            fetched: metric_sum(&fetcher, "fetcher_fetches_total", |l| {
                l.contains("outcome=\"fetched\"")
            }) as u64,
            converted: metric_sum(&transformer, "transformer_messages_acked_total", |_| true)
                as u64,
            mints: stats.uber_mints,
            extra_requests: stats.requests as i64 - (notified + stats.uber_mints) as i64,
            fetch_errors: metric_sum(&fetcher, "fetcher_fetches_total", |l| {
                !l.contains("outcome=\"fetched\"")
            }) as u64,
            retries: (metric_sum(&fetcher, "fetcher_messages_retried_total", |_| true)
                + metric_sum(&transformer, "transformer_messages_retried_total", |_| true))
                as u64,
            dead_letters: (metric_sum(&fetcher, "fetcher_messages_dead_lettered_total", |_| true)
                + metric_sum(
                    &transformer,
                    "transformer_messages_dead_lettered_total",
                    |_| true,
                )) as u64,
            dlq: self.stream_count("DLQ").await?,
            orders: self.stream_count("ORDERS").await?,
            notified,
        })
    }
}

/// What in a canonical order is not mapped: its branch, or a line's or
/// modifier's product (by provider item id); `None` when all are.
fn unmapped(order: &serde_json::Value) -> Option<String> {
    fn lines(items: &serde_json::Value, out: &mut Vec<String>) {
        for line in items.as_array().into_iter().flatten() {
            if line["product_id"].as_str().is_none() {
                out.push(format!("item {}", line["provider_item_id"]));
            }
            lines(&line["modifiers"], out);
        }
    }
    let mut out = Vec::new();
    if order["branch"] != "nyc-astoria" {
        out.push(format!("branch {}", order["branch"]));
    }
    if order["items"].as_array().is_none_or(|a| a.is_empty()) {
        out.push("no items".to_owned());
    }
    lines(&order["items"], &mut out);
    (!out.is_empty()).then(|| out.join(", "))
}

/// Whether a run went as expected: one mint, no error anywhere, one fetch,
/// one conversion and one order per notification.
#[derive(Debug, Clone, Copy)]
struct Health {
    /// Fetches that succeeded (the fetcher's metrics).
    fetched: u64,
    /// Messages the transformer acked.
    converted: u64,
    mints: u64,
    /// Provider requests beyond one GET per notification and the mints.
    extra_requests: i64,
    fetch_errors: u64,
    retries: u64,
    dead_letters: u64,
    dlq: u64,
    orders: u64,
    notified: u64,
}

impl Health {
    /// Mints after the first per 10k orders.
    fn mints_per_10k(&self) -> f64 {
        self.mints.saturating_sub(1) as f64 * 10_000.0 / self.notified.max(1) as f64
    }

    fn clean(&self) -> bool {
        self.mints == 1
            && self.fetched == self.notified
            && self.converted == self.notified
            && self.extra_requests == 0
            && self.fetch_errors == 0
            && self.retries == 0
            && self.dead_letters == 0
            && self.dlq == 0
            && self.orders == self.notified
    }

    fn show(&self) -> String {
        format!(
            "fetched {}, converted {}; token mints {} (after the first: {:.2} per 10k orders); extra provider requests {}; fetch errors {}, retries {}, dead letters {}, DLQ {}; ORDERS {} for {} notifications{}",
            self.fetched,
            self.converted,
            self.mints,
            self.mints_per_10k(),
            self.extra_requests,
            self.fetch_errors,
            self.retries,
            self.dead_letters,
            self.dlq,
            self.orders,
            self.notified,
            if self.clean() { "" } else { "  UNEXPECTED" }
        )
    }
}

/// The sum of the series of `name` whose labels `keep` accepts.
fn metric_sum(text: &str, name: &str, keep: impl Fn(&str) -> bool) -> f64 {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(r) => r.split_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            keep(labels).then(|| value.trim().parse::<f64>().ok())?
        })
        .sum()
}

/// µs per order of one process.
fn per_order(cpu: &[(String, f64)], who: &str, orders: u64) -> f64 {
    pipeline::cpu_of(cpu, who) * 1e6 / orders.max(1) as f64
}

fn show_rss(rss: &[f64]) -> String {
    ["fetcher", "transformer", "fake-provider"]
        .iter()
        .zip(rss)
        .map(|(n, m)| format!("{n} {m:.1}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn show_lag(lag: &[pipeline::LagSample], from: Instant, to: Instant, rate: f64) -> String {
    STAGES
        .iter()
        .enumerate()
        .map(|(i, s)| match LagSummary::of(lag, i, from, to) {
            Some(l) => format!("{s}: {}", l.show(rate)),
            None => format!("{s}: no lag sample"),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// A drain's backlog starts whole at the fetcher: where it waited is
/// what counts, not whether it was flat.
fn show_backlog(lag: &[pipeline::LagSample], from: Instant, to: Instant) -> String {
    STAGES
        .iter()
        .enumerate()
        .map(|(i, s)| match LagSummary::of(lag, i, from, to) {
            Some(l) => format!("{s} {}", l.max),
            None => format!("{s} no sample"),
        })
        .collect::<Vec<_>>()
        .join(", ")
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

/// What a drain or paced run measured.
struct Measured {
    /// Drain: orders/s; paced: the offered rate.
    rate: f64,
    /// Paced only: notification → order p50 and p99, ms.
    p50: f64,
    p99: f64,
    /// µs per order: fetcher, transformer, fake, nats-server, bench.
    us: [f64; 5],
    /// Peak RSS MiB: fetcher, transformer, fake.
    rss: Vec<f64>,
    health: Health,
}

fn cpu_row(cpu: &[(String, f64)], orders: u64) -> [f64; 5] {
    [
        "fetcher",
        "transformer",
        "fake-provider",
        "nats-server",
        "bench",
    ]
    .map(|who| per_order(cpu, who, orders))
}

async fn drain(args: &Args, concurrency: usize, orders: &Arc<Orders>) -> anyhow::Result<Measured> {
    let (w, n) = (args.warmup, args.orders);
    let stack = Stack::start(args, concurrency, orders, w + n).await?;
    stack.warm_up(orders, w).await?;
    procs::wait_quiet(args.max_other, Duration::from_secs(args.quiet_wait)).await;
    let sampler = stack.sampler();
    let meter = CpuMeter::start(&stack.watched());
    let started = Instant::now();
    stack.notify(orders, w..w + n, None).await?;
    let published = started.elapsed();
    stack
        .wait_orders(w + n, Duration::from_secs(60 + n / 50))
        .await?;
    let cpu = meter.read();
    let ended = Instant::now();
    let (lag, rss) = sampler.finish().await;
    let times = stack.times(w..w + n).await?;
    let first = times.iter().map(|t| t.0).min().expect("some");
    let last = times.iter().map(|t| t.1).max().expect("some");
    let span = last.duration_since(first).unwrap_or_default();
    let rate = n as f64 / span.as_secs_f64();
    let health = stack.health(w + n).await?;
    println!(
        "  drain  FETCHER_CONCURRENCY={concurrency}: {} notifications → orders in {:.2} s = {} orders/s (published in {:.2} s)",
        thousands(n as f64),
        span.as_secs_f64(),
        thousands(rate),
        published.as_secs_f64(),
    );
    println!(
        "         CPU-s from the first publish to the last order: {}",
        pipeline::show_cpu(&cpu, n)
    );
    println!(
        "         CPU-s per 1k orders: fetcher {:.3}, transformer {:.3}; peak RSS MiB: {}",
        pipeline::cpu_of(&cpu, "fetcher") * 1000.0 / n as f64,
        pipeline::cpu_of(&cpu, "transformer") * 1000.0 / n as f64,
        show_rss(&rss)
    );
    println!(
        "         where the backlog waited (max pending + ack pending): {}",
        show_backlog(&lag, started, ended)
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
        us: cpu_row(&cpu, n),
        rss,
        health,
    })
}

async fn paced(
    args: &Args,
    concurrency: usize,
    rate: f64,
    orders: &Arc<Orders>,
) -> anyhow::Result<Measured> {
    let w = args.warmup;
    let n = ((rate * args.seconds as f64).round() as u64).max(1);
    let stack = Stack::start(args, concurrency, orders, w + n).await?;
    stack.warm_up(orders, w).await?;
    procs::wait_quiet(args.max_other, Duration::from_secs(args.quiet_wait)).await;
    let sampler = stack.sampler();
    let meter = CpuMeter::start(&stack.watched());
    let started = Instant::now();
    stack.notify(orders, w..w + n, Some(rate)).await?;
    let window_end = Instant::now();
    let cpu = meter.read();
    stack
        .wait_orders(w + n, Duration::from_secs(60 + n / 50))
        .await?;
    let (lag, rss) = sampler.finish().await;
    let times = stack.times(w..w + n).await?;
    let lat: Vec<Duration> = times
        .iter()
        .map(|(a, b)| b.duration_since(*a).unwrap_or_default())
        .collect();
    let mut sorted = lat.clone();
    sorted.sort_unstable();
    let p = |q| crate::stats::ms(crate::stats::percentile(&sorted, q));
    let offered = n as f64 / (window_end - started).as_secs_f64();
    let health = stack.health(w + n).await?;
    println!(
        "  paced  FETCHER_CONCURRENCY={concurrency}: {} notifications/s for {:.1} s: notification stored → order stored {}",
        thousands(offered),
        (window_end - started).as_secs_f64(),
        pipeline::latency_line(lat),
    );
    println!(
        "         CPU-s in the window: {}; peak RSS MiB: {}",
        pipeline::show_cpu(&cpu, n),
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
        us: cpu_row(&cpu, n),
        rss,
        health,
    })
}

pub async fn run(args: Args) -> anyhow::Result<bool> {
    if args.concurrency.is_empty() || args.concurrency.contains(&0) {
        bail!("--concurrency needs values above 0");
    }
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
        "pull: Uber Eats notifications → release fetcher (GET from the release fake-provider{}) → release transformer → ORDERS; {} notifications per drain after a {}-notification warm-up; FETCHER_CONCURRENCY {:?}; paced {} s at {}; stage env {:?}",
        match args.api_delay_ms {
            0 => String::new(),
            ms => format!(", each GET held {ms} ms by a proxy"),
        },
        args.orders,
        args.warmup,
        args.concurrency,
        args.seconds,
        args.paced_rate.map_or(
            format!("{:.0}% of the drain rate", args.paced_share * 100.0),
            |r| format!("{r:.0}/s")
        ),
        args.env,
    );
    let orders = Arc::new(Orders::new());
    let mut alone = Vec::new();
    let mut results: Vec<Row> = Vec::new();
    for round in 1..=args.rounds {
        println!("round {round}/{}", args.rounds);
        if args.fake_seconds > 0 {
            let a = fake::alone(
                &orders,
                args.orders.min(10_000),
                args.fake_connections,
                args.fake_seconds,
                args.max_other,
                args.quiet_wait,
            )
            .await?;
            println!(
                "  fake alone: {} order GETs/s over {} connections ({} in {} s); CPU-s (µs per GET): {}{}",
                thousands(a.rate),
                args.fake_connections,
                a.requests,
                args.fake_seconds,
                pipeline::show_cpu(&a.cpu, a.requests),
                disturbed(&a.cpu, args.max_other)
            );
            alone.push((a.rate, per_order(&a.cpu, "fake-provider", a.requests)));
        }
        for &c in &args.concurrency {
            let d = if args.no_drain {
                None
            } else {
                Some(drain(&args, c, &orders).await?)
            };
            let p = match (args.no_paced, args.paced_rate, &d) {
                (true, _, _) => None,
                (false, Some(rate), _) => Some(paced(&args, c, rate, &orders).await?),
                (false, None, Some(d)) => {
                    Some(paced(&args, c, d.rate * args.paced_share, &orders).await?)
                }
                (false, None, None) => unreachable!("--no-drain requires --paced-rate"),
            };
            results.push(Row {
                concurrency: c,
                drain: d,
                paced: p,
            });
        }
    }

    println!();
    println!("summary: median (min–max) over {} round(s)", args.rounds);
    if !alone.is_empty() {
        println!(
            "fake alone: {} order GETs/s, fake-provider {} µs/request",
            Spread::of(&alone.iter().map(|a| a.0).collect::<Vec<_>>()).show(0),
            Spread::of(&alone.iter().map(|a| a.1).collect::<Vec<_>>()).show(1),
        );
    }
    for &c in &args.concurrency {
        let of = |pick: &dyn Fn(&Row) -> Option<&Measured>, f: &dyn Fn(&Measured) -> f64| {
            Spread::of(
                &results
                    .iter()
                    .filter(|r| r.concurrency == c)
                    .filter_map(pick)
                    .map(f)
                    .collect::<Vec<_>>(),
            )
        };
        let drained: &dyn Fn(&Row) -> Option<&Measured> = &Row::drained;
        let paced: &dyn Fn(&Row) -> Option<&Measured> = &Row::paced;
        let cost = |pick: &dyn Fn(&Row) -> Option<&Measured>| {
            format!(
                "µs/order fetcher {}, transformer {}, fake-provider {}, nats-server {}, bench {}; peak RSS MiB fetcher {}, transformer {}",
                of(pick, &|m| m.us[0]).show(1),
                of(pick, &|m| m.us[1]).show(1),
                of(pick, &|m| m.us[2]).show(1),
                of(pick, &|m| m.us[3]).show(1),
                of(pick, &|m| m.us[4]).show(1),
                of(pick, &|m| m.rss.first().copied().unwrap_or(f64::NAN)).show(1),
                of(pick, &|m| m.rss.get(1).copied().unwrap_or(f64::NAN)).show(1),
            )
        };
        if !args.no_drain {
            println!(
                "FETCHER_CONCURRENCY={c}: drain {} orders/s; {}",
                of(drained, &|m| m.rate).show(0),
                cost(drained),
            );
        }
        if !args.no_paced {
            println!(
                "FETCHER_CONCURRENCY={c}: paced at {}/s: notification → order p50 {} ms, p99 {} ms; {}",
                of(paced, &|m| m.rate).show(0),
                of(paced, &|m| m.p50).show(2),
                of(paced, &|m| m.p99).show(2),
                cost(paced),
            );
        }
    }
    let all: Vec<&Health> = results
        .iter()
        .flat_map(|r| r.drain.iter().chain(&r.paced).map(|m| &m.health))
        .collect();
    let orders_total: u64 = all.iter().map(|h| h.notified).sum();
    let clean = all.iter().all(|h| h.clean());
    println!(
        "every run: token mints {} for {} orders in {} runs ({} per run, expected 1); after the first of each run {:.2} per 10k orders; fetch errors {}, dead letters {}, DLQ {}: {}",
        all.iter().map(|h| h.mints).sum::<u64>(),
        thousands(orders_total as f64),
        all.len(),
        all.iter()
            .map(|h| h.mints.to_string())
            .collect::<Vec<_>>()
            .join("/"),
        all.iter().map(|h| h.mints.saturating_sub(1)).sum::<u64>() as f64 * 10_000.0
            / orders_total.max(1) as f64,
        all.iter().map(|h| h.fetch_errors).sum::<u64>(),
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

/// One concurrency's runs of one round.
struct Row {
    concurrency: usize,
    drain: Option<Measured>,
    paced: Option<Measured>,
}

impl Row {
    fn drained(&self) -> Option<&Measured> {
        self.drain.as_ref()
    }

    fn paced(&self) -> Option<&Measured> {
        self.paced.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_and_notifications_name_the_same_distinct_ids() {
        let o = Orders::new();
        assert_eq!(o.id(42), "7c3b5e9a-1f4d-4d2a-b8e6-000000000042");
        let body: serde_json::Value = serde_json::from_slice(&o.body(42)).unwrap();
        assert_eq!(body["id"], "7c3b5e9a-1f4d-4d2a-b8e6-000000000042");
        assert_eq!(body["store"]["external_reference_id"], "CG-NYC-ASTORIA");
        let (event_id, n) = o.notification(42, "http://127.0.0.1:1");
        let n: serde_json::Value = serde_json::from_slice(&n).unwrap();
        assert_eq!(event_id, "3e9d7f1a-2b4c-4d6e-8f01-000000000042");
        assert_eq!(n["event_id"], event_id);
        assert_eq!(n["event_type"], "orders.notification");
        assert_eq!(n["meta"]["resource_id"], o.id(42));
        assert_eq!(
            n["resource_href"],
            "http://127.0.0.1:1/v2/eats/order/7c3b5e9a-1f4d-4d2a-b8e6-000000000042"
        );
        assert_ne!(o.body(1), o.body(2));
        assert_eq!(webhook_number(&webhook_id(42)), Some(42));
        assert_eq!(webhook_number("other-1"), None);
    }

    #[test]
    fn the_hub_config_is_valid_and_maps_every_item_of_the_fixture() {
        let hub = shared::config::HubConfig::from_toml(
            &hub_toml("http://127.0.0.1:1", "http://127.0.0.1:2"),
            "bench",
            &|_| Some("x".to_owned()),
        )
        .unwrap();
        let account = hub.account(Provider::Ubereats, ACCOUNT).unwrap();
        let api = account.api.as_ref().unwrap();
        assert_eq!(api.base_url.as_str(), "http://127.0.0.1:1/");
        assert_eq!(
            api.token_url.as_ref().unwrap().as_str(),
            "http://127.0.0.1:2/oauth/v2/token"
        );
        let order = std::str::from_utf8(&Orders::new().body(0))
            .unwrap()
            .to_owned();
        let plus: Vec<&str> = order
            .split("\"external_data\": \"")
            .skip(1)
            .map(|s| s.split('"').next().unwrap())
            .filter(|plu| !plu.starts_with("MG-"))
            .collect();
        assert_eq!(plus.len(), 4, "{plus:?}");
        for plu in plus {
            assert!(account.products.contains_key(plu), "{plu} is not mapped");
        }
    }

    #[test]
    fn an_order_is_mapped_when_its_branch_and_every_line_are() {
        let line = |plu: &str, product: Option<&str>, modifiers: serde_json::Value| serde_json::json!({"provider_item_id": plu, "product_id": product, "modifiers": modifiers});
        let mapped = serde_json::json!({
            "branch": "nyc-astoria",
            "items": [line("A", Some("p1"), serde_json::json!([line("M", Some("p2"), serde_json::json!([]))]))],
        });
        assert_eq!(unmapped(&mapped), None);
        let modifier = serde_json::json!({
            "branch": "nyc-astoria",
            "items": [line("A", Some("p1"), serde_json::json!([line("M", None, serde_json::json!([]))]))],
        });
        assert_eq!(unmapped(&modifier).as_deref(), Some("item \"M\""));
        let branch = serde_json::json!({"branch": null, "items": []});
        assert_eq!(unmapped(&branch).as_deref(), Some("branch null, no items"));
    }

    #[test]
    fn sums_the_series_of_a_metric() {
        let text = "# HELP x\nfetcher_fetches_total{provider=\"ubereats\",outcome=\"fetched\"} 10\nfetcher_fetches_total{provider=\"ubereats\",outcome=\"provider_5xx\"} 2\nfetcher_fetches_total{provider=\"wolt\",outcome=\"provider_429\"} 1\nfetcher_fetches_totally 5\nplain 3\n";
        assert_eq!(
            metric_sum(text, "fetcher_fetches_total", |l| !l
                .contains("outcome=\"fetched\"")),
            3.0
        );
        assert_eq!(metric_sum(text, "fetcher_fetches_total", |_| true), 13.0);
        assert_eq!(metric_sum(text, "plain", |_| true), 3.0);
    }

    #[test]
    fn health_counts_mints_after_the_first() {
        let h = Health {
            fetched: 21_000,
            converted: 21_000,
            mints: 1,
            extra_requests: 0,
            fetch_errors: 0,
            retries: 0,
            dead_letters: 0,
            dlq: 0,
            orders: 21_000,
            notified: 21_000,
        };
        assert!(h.clean());
        assert_eq!(h.mints_per_10k(), 0.0);
        let twice = Health { mints: 3, ..h };
        assert!(!twice.clean());
        assert!((twice.mints_per_10k() - 2.0 * 10_000.0 / 21_000.0).abs() < 1e-9);
        assert!(
            !Health {
                orders: 20_999,
                ..h
            }
            .clean()
        );
        assert!(!Health { fetched: 0, ..h }.clean());
    }
}
