//! orderhub's transformer: every verified raw webhook becomes exactly one
//! canonical order (DESIGN §4), whatever the provider.
//!
//! # Contract
//! - Consumes the `WEBHOOKS` stream (`webhooks.raw.<provider>.<account>`)
//!   through the durable pull consumer `transformer`, with the shared
//!   worker loop ([`shared::worker`]).
//! - Converts with the provider's adapter ([`adapters`]), maps the store to
//!   the account's branch and items to its products, normalises the phone
//!   ([`phone`]), and checks the order's rules, collecting every problem
//!   ([`convert`]).
//! - For a `created` order, first writes its answering context
//!   ([`shared::answer::OrderContext`]: ids, account, deadline, what the
//!   provider handed over for answering) to the `ORDER_CONTEXT` bucket, so
//!   a backend answering the order at once finds it; a failed write is
//!   transient (retried, class `publish_failed`) and nothing is published.
//!   A re-delivered order writes the same context again.
//! - Every order carries its `idempotency_key`
//!   ([`canonical::order::Order::event_key`]): one key for every copy of an
//!   order event. Before publishing, a provider's event (not
//!   `status_failed`) is registered in its order's entry of
//!   `ORDER_SEQUENCE` ([`shared::sequence`]) with its phase and its
//!   `WEBHOOKS` sequence, so the forwarder holds the order's later events
//!   behind it; a failed registration is transient (class
//!   `publish_failed`) and nothing is published. With `[forwarder]
//!   per_order_ordering = false` nothing is registered.
//! - Publishes the order as JSON to `orders.<tenant>.<provider>` with
//!   `Nats-Msg-Id: order:<webhook_id>`, `Content-Type: application/json`,
//!   `Orderhub-Event` (its `event`: the forwarder auto-accepts `created`
//!   orders by it) and the hub headers copied forward (`Orderhub-*`,
//!   `traceparent`), awaits
//!   JetStream's ack (a `duplicate` ack is success: the order was stored by
//!   an earlier delivery), and only then lets the loop ack the raw message.
//!   A transformer killed between the two is redelivered and its second
//!   publish is dropped by the stream's duplicate window.
//! - A payload that cannot be converted (does not parse, breaks an order
//!   rule, names an unmapped product or branch where the tenant requires
//!   mappings, an unknown account, an event that is no order event, a
//!   notification whose order must be fetched) is permanent: dead-lettered
//!   at once with every problem listed (`; `-separated, each with its field
//!   path), never retried. A failed or timed-out publish is transient:
//!   retried on the configured schedule (class `publish_failed`).
//! - Outcomes ([`shared::outcome`], `OUTCOMES`): after the order's ack, a
//!   `converted` step (the order's `ORDERS` sequence as `order_seq`, its
//!   provider order id and event) is published and its ack awaited before
//!   the raw message is acked; a payload that cannot be converted gets a
//!   `refused` step (class, error) before it is dead-lettered (the worker
//!   adds `dead_lettered`). An outcome that is not stored in
//!   `publish_timeout` retries the message like a failed order publish
//!   (the order's second publish is deduplicated).
//! - Config: each webhook is converted with the hub config serving when
//!   it arrives ([`shared::live`]): accounts, tenants and branch and product
//!   mappings reload without a restart.
//! - Metrics (prefix `transformer_`): the worker loop's received, acked,
//!   retried and dead-lettered by provider and error type, plus
//!   `orders_published` by provider and event, `conversion_errors` by
//!   provider and error type, `conversion_duration_seconds` by provider and
//!   `outcome_publish_failures` by provider and kind.

pub mod adapters;
pub mod convert;
pub mod phone;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream;
use async_nats::jetstream::context::PublishError;
use async_nats::jetstream::kv;
use bytes::Bytes;
use canonical::order::{Event, Order};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use shared::answer::{ORDER_CONTEXT_BUCKET, OrderContext};
use shared::app::{StageError, StageSpec};
use shared::config::{CommonArgs, HubConfig};
use shared::failure::{FailureClass, classify_publish};
use shared::headers;
use shared::live::LiveConfig;
use shared::outcome::{self, Kind, PublishFailures, Step};
use shared::sequence::{self, SEQUENCE_BUCKET, Sequencer};
use shared::worker::{Delivery, Failure, Handler, Outcome};
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use convert::{ConvertError, Converted, convert, convert_with_hints};

/// The stage: its consumer and the streams it reads and writes.
pub const SPEC: StageSpec = StageSpec {
    stage: "transformer",
    stream: "WEBHOOKS",
    durable: "transformer",
    streams: &["WEBHOOKS", "ORDERS", "DLQ", "ADVISORIES", "OUTCOMES"],
    buckets: &[ORDER_CONTEXT_BUCKET, SEQUENCE_BUCKET],
};

/// The headers of the raw webhook that travel on with its order.
pub const FORWARDED_HEADERS: [&str; 8] = [
    headers::WEBHOOK_ID,
    headers::PROVIDER,
    headers::ACCOUNT,
    headers::TENANT,
    headers::RECEIVED_AT,
    headers::TRACEPARENT,
    "tracestate",
    headers::REPLAY_OF,
];

/// The `Nats-Msg-Id` of the order made from webhook `webhook_id`.
pub fn order_msg_id(webhook_id: &str) -> String {
    format!("order:{webhook_id}")
}

/// How the stage runs, beyond the common flags.
#[derive(Debug, Clone)]
pub struct Options {
    /// Handlers running at once in this process.
    pub concurrency: usize,
    /// How long a publish may wait for JetStream's ack before it is retried.
    pub publish_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            concurrency: 256,
            publish_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PublishedLabels {
    provider: &'static str,
    event: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    provider: &'static str,
    error_type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: &'static str,
}

/// The classes a conversion can fail with (`ConvertError::class`).
const CONVERSION_CLASSES: [FailureClass; 8] = [
    FailureClass::InvalidPayload,
    FailureClass::MissingHeader,
    FailureClass::UnknownProvider,
    FailureClass::UnknownAccount,
    FailureClass::UnsupportedEvent,
    FailureClass::FetchRequired,
    FailureClass::UnmappedProduct,
    FailureClass::UnmappedBranch,
];

/// The transformer's own metrics; each event is one method that logs and
/// counts together.
#[derive(Clone)]
pub struct Metrics {
    published: Family<PublishedLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    duration: Family<ProviderLabels, Histogram>,
    outcome_failures: PublishFailures,
}

impl Metrics {
    /// Registers under `registry` (already prefixed `transformer_`).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Metrics {
            published: Family::default(),
            errors: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(shared::telemetry::duration_buckets())
            }),
            outcome_failures: PublishFailures::register(registry),
        };
        registry.register(
            "orders_published",
            "Canonical orders stored in ORDERS, by provider and event",
            m.published.clone(),
        );
        registry.register(
            "conversion_errors",
            "Webhooks that could not become an order, by provider and error type",
            m.errors.clone(),
        );
        registry.register(
            "conversion_duration_seconds",
            "Time to convert one webhook into a canonical order",
            m.duration.clone(),
        );
        m.start_at_zero();
        m
    }

    /// Every series whose labels are known before the first webhook exists
    /// at 0, so `rate()` and `increase()` alerts work from the first scrape:
    /// per provider, each event published and each conversion failure class.
    fn start_at_zero(&self) {
        for provider in shared::Provider::ALL.map(shared::Provider::as_str) {
            for event in [Event::Created, Event::Updated, Event::Cancelled] {
                let event = event_name(event);
                let _ = self
                    .published
                    .get_or_create(&PublishedLabels { provider, event });
            }
            for class in CONVERSION_CLASSES {
                let _ = self.errors.get_or_create(&ErrorLabels {
                    provider,
                    error_type: class.as_str(),
                });
            }
        }
    }

    fn converted(&self, provider: &'static str, took: Duration) {
        self.duration
            .get_or_create(&ProviderLabels { provider })
            .observe(took.as_secs_f64());
    }

    fn published(&self, order: &Order, subject: &str, duplicate: bool) {
        info!(
            event = event_name(order.event),
            subject,
            provider_order_id = %shared::redact::for_log(&order.provider_order_id),
            duplicate,
            "order published"
        );
        self.published
            .get_or_create(&PublishedLabels {
                provider: order.provider.as_str(),
                event: event_name(order.event),
            })
            .inc();
    }

    fn conversion_failed(&self, provider: &'static str, error: &ConvertError) {
        warn!(error_type = error.class().as_str(), error = %error, "conversion failed");
        self.errors
            .get_or_create(&ErrorLabels {
                provider,
                error_type: error.class().as_str(),
            })
            .inc();
    }
}

fn event_name(event: Event) -> &'static str {
    event.as_str()
}

/// The stage's handler: convert, publish, await the ack.
pub struct Transformer {
    /// Loaded once per webhook: a reload applies from the next one.
    hub: LiveConfig,
    js: jetstream::Context,
    /// `ORDER_CONTEXT`, opened on first use (the stage runner creates it).
    contexts: OnceCell<kv::Store>,
    /// `ORDER_SEQUENCE`.
    sequence: Sequencer,
    metrics: Metrics,
    publish_timeout: Duration,
    outcomes: outcome::Publisher,
}

impl Transformer {
    /// A handler on a config that never reloads.
    pub fn new(
        hub: Arc<HubConfig>,
        js: jetstream::Context,
        metrics: Metrics,
        publish_timeout: Duration,
    ) -> Self {
        let live = LiveConfig::new(HubConfig::clone(&hub), "(in process)");
        Self::live(live, js, metrics, publish_timeout)
    }

    /// A handler that converts each webhook with the config serving then.
    pub fn live(
        hub: LiveConfig,
        js: jetstream::Context,
        metrics: Metrics,
        publish_timeout: Duration,
    ) -> Self {
        let outcomes = outcome::Publisher::counted(
            js.clone(),
            publish_timeout,
            metrics.outcome_failures.clone(),
        );
        Transformer {
            hub,
            sequence: Sequencer::new(js.clone(), None),
            js,
            contexts: OnceCell::new(),
            metrics,
            publish_timeout,
            outcomes,
        }
    }

    /// Stores a new order's answering context (before its order, so a
    /// backend answering at once finds it); any failure is transient.
    async fn store_context(&self, ctx: &OrderContext) -> Result<(), Failure> {
        let failed = |what: String| Failure::new(FailureClass::PublishFailed, what);
        let write = async {
            let kv = self
                .contexts
                .get_or_try_init(|| async {
                    self.js
                        .get_key_value(ORDER_CONTEXT_BUCKET)
                        .await
                        .map_err(|e| {
                            failed(format!("cannot open bucket {ORDER_CONTEXT_BUCKET}: {e}"))
                        })
                })
                .await?;
            let value = serde_json::to_vec(ctx).map_err(|e| {
                Failure::new(
                    FailureClass::InvalidPayload,
                    format!("cannot encode order context: {e}"),
                )
            })?;
            kv.put(ctx.key(), Bytes::from(value)).await.map_err(|e| {
                failed(format!(
                    "cannot write the order context to {ORDER_CONTEXT_BUCKET}: {e}"
                ))
            })
        };
        tokio::time::timeout(self.publish_timeout, write)
            .await
            .map_err(|_| {
                failed(format!(
                    "no ack for the order context in {ORDER_CONTEXT_BUCKET} within {}",
                    humanize(self.publish_timeout)
                ))
            })??;
        Ok(())
    }

    /// Registers the order event in its order's sequence (before the
    /// order is published, so the forwarder knows of it before any later
    /// event of the order can go); any failure is transient.
    async fn register(&self, order: &Order) -> Result<(), Failure> {
        let (Some(phase), Some(key)) = (order.event.phase(), order.idempotency_key.as_deref())
        else {
            return Ok(());
        };
        let failed = |e: sequence::SequenceError| Failure::new(FailureClass::PublishFailed, e.0);
        let ev = sequence::Event {
            key,
            name: event_name(order.event),
            phase,
            seq: order.raw.seq,
        };
        self.sequence
            .register(
                &sequence::order_key(&order.tenant, order.provider, &order.provider_order_id),
                &ev,
            )
            .await
            .map_err(failed)?;
        Ok(())
    }

    /// Publishes the order and waits for its ack; a failure keeps its
    /// class (a message too large for the server or the stream is
    /// permanent, a missing stream a deployment fault, the rest transient).
    async fn publish(&self, delivery: &Delivery, order: &Order) -> Result<u64, Failure> {
        let subject = shared::subjects::order(&order.tenant, order.provider);
        let mut h = HeaderMap::new();
        for name in FORWARDED_HEADERS {
            if let Some(v) = delivery.headers.get(name) {
                h.insert(name, v.as_str());
            }
        }
        h.insert(headers::EVENT, event_name(order.event));
        h.insert("Content-Type", "application/json");
        h.insert("Nats-Msg-Id", order_msg_id(&order.webhook_id).as_str());
        let body = serde_json::to_vec(order).map_err(|e| {
            Failure::new(
                FailureClass::InvalidPayload,
                format!("cannot encode order: {e}"),
            )
        })?;
        let size = body.len();
        let failed = |what: &str, e: &PublishError| {
            Failure::new(
                classify_publish(e),
                format!("{what} {subject} ({size} bytes): {e}"),
            )
        };
        let publish = async {
            let ack = self
                .js
                .publish_with_headers(subject.clone(), h, Bytes::from(body))
                .await
                .map_err(|e| failed("publish to", &e))?;
            ack.await.map_err(|e| failed("no ack for", &e))
        };
        let ack = tokio::time::timeout(self.publish_timeout, publish)
            .await
            .map_err(|_| {
                Failure::new(
                    FailureClass::PublishFailed,
                    format!(
                        "no ack for {subject} within {}",
                        humanize(self.publish_timeout)
                    ),
                )
            })??;
        self.metrics.published(order, &subject, ack.duplicate);
        // A duplicate's sequence is the order stored by an earlier delivery.
        Ok(ack.sequence)
    }
}

fn humanize(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

impl Handler for Transformer {
    async fn handle(&self, delivery: &Delivery) -> Outcome {
        let started = Instant::now();
        let hub = self.hub.load();
        let converted = convert_with_hints(&hub, delivery);
        let ordering = hub.forwarder.per_order_ordering;
        drop(hub);
        let provider = delivery
            .provider
            .parse::<shared::Provider>()
            .map(|p| p.as_str())
            .unwrap_or("unknown");
        self.metrics.converted(provider, started.elapsed());
        // The step's time is the conversion's, not the publish's: by the
        // time ORDERS acks, the forwarder may already have delivered the
        // order, and a timeline must not show it converted after that.
        let converted_at = time::OffsetDateTime::now_utc();
        let Converted { order, context, .. } = match converted {
            Ok(c) => c,
            Err(e) => {
                self.metrics.conversion_failed(provider, &e);
                let f = Failure::new(e.class(), e.to_string());
                // An unknown provider has no outcome: the dead letter says it.
                if let Some(step) =
                    Step::of(outcome::Stage::Transformer, Kind::Refused, delivery, false)
                    && let Err(not_stored) = self
                        .outcomes
                        .publish(&step.with_error(f.class, &f.message))
                        .await
                {
                    return Outcome::Retry(not_stored);
                }
                return Outcome::DeadLetter(f);
            }
        };
        if let Some(ctx) = &context
            && let Err(f) = self.store_context(ctx).await
        {
            return if f.class.is_permanent() {
                Outcome::DeadLetter(f)
            } else {
                Outcome::Retry(f)
            };
        }
        if ordering && let Err(f) = self.register(&order).await {
            return Outcome::Retry(f);
        }
        let order_seq = match self.publish(delivery, &order).await {
            Ok(seq) => seq,
            Err(f) if f.class.is_permanent() => return Outcome::DeadLetter(f),
            Err(f) => return Outcome::Retry(f),
        };
        // The order's sequence is part of the step: published after it.
        let mut step = Step::about(
            outcome::Stage::Transformer,
            Kind::Converted,
            order.provider,
            delivery,
            true,
        );
        step.tenant = Some(&order.tenant);
        step.webhook_id = Some(&order.webhook_id);
        step.provider_order_id = Some(&order.provider_order_id);
        step.event = Some(event_name(order.event));
        step.order_seq = Some(order_seq);
        step.at = converted_at;
        match self.outcomes.publish(&step).await {
            Ok(()) => Outcome::Ack,
            Err(f) => Outcome::Retry(f),
        }
    }
}

/// Runs the transformer stage until `shutdown` on a config that never
/// reloads: [`run_live`] with `hub`.
pub async fn run(
    args: &CommonArgs,
    hub: HubConfig,
    options: Options,
    shutdown: CancellationToken,
) -> Result<(), StageError> {
    run_live(
        args,
        LiveConfig::new(hub, "(in process)"),
        options,
        shutdown,
    )
    .await
}

/// Runs the transformer stage until `shutdown`: the shared stage runner
/// with this crate's handler, which converts each webhook with the config
/// serving when it arrives (mappings, accounts and tenants reload).
pub async fn run_live(
    args: &CommonArgs,
    live: LiveConfig,
    options: Options,
    shutdown: CancellationToken,
) -> Result<(), StageError> {
    let handler_hub = live.clone();
    let publish_timeout = options.publish_timeout;
    let concurrency = options.concurrency;
    shared::app::run_stage_live(
        args,
        &live,
        &SPEC,
        move |registry, js| {
            Transformer::live(
                handler_hub,
                js.clone(),
                Metrics::register(registry),
                publish_timeout,
            )
        },
        move |o| {
            o.concurrency = concurrency;
            o.outcome_timeout = publish_timeout;
        },
        shutdown,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    const HUB: &str = r#"
[[tenant]]
id = "acme"
backend_url = "http://127.0.0.1:9/orders"

[[account]]
id = "acme-careem"
provider = "careem"
tenant = "acme"
secret_envs = ["S"]
currency = "JOD"
"#;

    fn delivery(body: &str) -> Delivery {
        let mut h = HeaderMap::new();
        h.insert(headers::WEBHOOK_ID, "wh-1");
        h.insert(headers::PROVIDER, "careem");
        h.insert(headers::ACCOUNT, "acme-careem");
        h.insert(headers::TENANT, "acme");
        h.insert(headers::RECEIVED_AT, "2025-05-01T18:30:00+03:00");
        Delivery {
            subject: "webhooks.raw.careem.acme-careem".into(),
            headers: h,
            payload: Bytes::from(body.to_owned()),
            stream: "WEBHOOKS".into(),
            stream_seq: 1,
            delivered: 1,
            published: std::time::SystemTime::UNIX_EPOCH,
            is_last: false,
            provider: "careem".into(),
            tenant: Some("acme".into()),
            webhook_id: Some("wh-1".into()),
        }
    }

    /// A handler whose NATS server does not exist: conversion needs none,
    /// and every publish times out.
    async fn offline() -> (Transformer, Registry) {
        let hub = HubConfig::from_toml(HUB, "test", &|_| Some("s".into())).unwrap();
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect("127.0.0.1:1")
            .await
            .unwrap();
        let mut registry = shared::telemetry::registry("transformer");
        let metrics = Metrics::register(&mut registry);
        let t = Transformer::new(
            Arc::new(hub),
            jetstream::new(client),
            metrics,
            Duration::from_millis(200),
        );
        (t, registry)
    }

    /// The refusal is an outcome that must be stored before the payload is
    /// dead-lettered: without NATS it is not, and the webhook is retried
    /// (counted), never dead-lettered without its `refused` step.
    #[tokio::test]
    async fn a_payload_that_cannot_convert_is_retried_while_its_refusal_is_not_stored() {
        let (t, registry) = offline().await;
        let outcome = tokio::time::timeout(
            Duration::from_secs(5),
            t.handle(&delivery(r#"{"order_id":"1","items":[]"#)),
        )
        .await
        .unwrap();
        assert_eq!(
            outcome,
            Outcome::Retry(Failure::new(
                FailureClass::PublishFailed,
                "outcome refused not stored: no ack within 200ms"
            ))
        );
        let text = shared::telemetry::encode(&registry);
        for line in [
            "transformer_conversion_errors_total{provider=\"careem\",error_type=\"invalid_payload\"} 1",
            "transformer_conversion_duration_seconds_count{provider=\"careem\"} 1",
            "transformer_outcome_publish_failures_total{provider=\"careem\",kind=\"refused\"} 1",
            "transformer_outcome_publish_failures_total{provider=\"careem\",kind=\"converted\"} 0",
        ] {
            assert!(text.contains(line), "{line}\n{text}");
        }
    }

    /// A new order's context is written first: without NATS that write
    /// times out, and the order is retried without being published.
    #[tokio::test]
    async fn a_new_order_whose_context_is_not_stored_is_retried_unpublished() {
        let (t, registry) = offline().await;
        let body = r#"{"order_id":"T1","items":[{"name":"Burger","price":10}],"total_amount":10}"#;
        let outcome = tokio::time::timeout(Duration::from_secs(5), t.handle(&delivery(body)))
            .await
            .unwrap();
        assert_eq!(
            outcome,
            Outcome::Retry(Failure::new(
                FailureClass::PublishFailed,
                "no ack for the order context in ORDER_CONTEXT within 200ms"
            ))
        );
        let text = shared::telemetry::encode(&registry);
        assert!(
            text.contains(
                "transformer_orders_published_total{provider=\"careem\",event=\"created\"} 0"
            ),
            "{text}"
        );
    }

    #[test]
    fn order_ids_derive_from_the_webhook_id() {
        assert_eq!(order_msg_id("0196885c-7e2a"), "order:0196885c-7e2a");
    }
}
