//! orderhub's forwarder: delivers each canonical order to its tenant's
//! backend (DESIGN §3.4).
//!
//! Contract:
//! - Consumes `ORDERS` through one durable consumer per tenant,
//!   `forwarder-<tenant>` on `orders.<tenant>.>`, each with its own handlers,
//!   so one tenant's outage never delays another's orders.
//! - POSTs the canonical order, byte for byte as the transformer published
//!   it, to the tenant's `backend_url` with `X-Auth`, `Idempotency-Key` (the
//!   webhook id: the same on every retry, redelivery and DLQ replay), the
//!   Standard Webhooks headers signed with the tenant's secret, a
//!   `User-Agent`, the trace context, and a timeout; connections are reused.
//! - Every request follows the hub's outbound policy
//!   ([`shared::outbound`]): redirects are not followed, a backend on a
//!   loopback, private or link-local address is refused unless
//!   `[forwarder] allowed_private_destinations` lists its network, and at
//!   most [`BODY_SNIPPET`] bytes of an answer are read.
//! - 2xx and 409: ack. 408, 429 (its `Retry-After` honoured), 5xx, timeouts
//!   and refused connections: retry on the JetStream schedule. Any other
//!   4xx: dead-letter at once with the status and the first bytes of the
//!   answer. A 3xx: dead-letter at once as `backend_redirect` (the order
//!   went nowhere else). A refused destination: dead-letter at once as
//!   `backend_address_refused`, no request sent. Last delivery:
//!   dead-letter.
//! - A circuit breaker per tenant ([`breaker`]): it opens when the share of
//!   failed requests over a sliding window reaches `breaker_failure_rate`,
//!   or when `breaker_failures` requests in a row found the backend
//!   unreachable. A backend failing a share of requests below the rate
//!   keeps getting orders, and its failures retry on the schedule. While
//!   the breaker is open no request goes to that backend and the tenant's
//!   orders wait: the ones in hand are held (kept alive with in-progress
//!   acks, spending no delivery) and the rest stay in the stream. Half-open,
//!   `breaker_probes` requests decide; an order whose request failed while
//!   the breaker is not closed (the one that opened it, a failed probe)
//!   waits again inside the same delivery. So an outage spends at most the
//!   deliveries of the failures that opened the breaker. An order older
//!   than `max_order_age` is dead-lettered as stale, breaker or not; a
//!   replayed order (`Orderhub-Replay-Of`) is as old as its replay.
//! - Auto-accept (issue 14): the backend's 2xx or 409 for a `created` order
//!   (`Orderhub-Event`) of an account with `auto_accept` (by
//!   `Orderhub-Provider` and `Orderhub-Account`) is the restaurant's
//!   acceptance. Before the order
//!   is acked, an accept [`StatusCommand`] (origin `auto_accept`, status id
//!   `auto-accept-<webhook id>`) is stored on `STATUS`
//!   (`status.<provider>.<account>`, `Nats-Msg-Id: status:<status id>`, so
//!   a redelivery's second accept is dropped by the duplicate window) and
//!   its ack awaited. If that publish fails the order is retried (the
//!   backend dedupes on `Idempotency-Key`): an order is never acked without
//!   its accept stored. Other events, other accounts: unchanged. A 4xx is
//!   dead-lettered with the order's headers (`Orderhub-Event`, `-Account`,
//!   `-Provider`, `-Tenant`), which the status worker's `auto-reject`
//!   consumer reads from `dlq.forwarder.>`.
//! - Config ([`shared::live`]): each order is delivered with the tenants
//!   (backend URL, key, signing secrets, timeout, breaker settings) and
//!   auto-accept accounts of the config serving when it arrives; a tenant
//!   whose breaker settings did not change keeps its breaker's state. A
//!   tenant added by a reload has no consumer until the forwarder restarts
//!   (the per-tenant consumers are made at start), and one removed is
//!   delivered with its last settings until then.
//! - Outcomes ([`shared::outcome`], `OUTCOMES`): one `attempt` per request
//!   sent (`step` counts them within the delivery; the HTTP status or none,
//!   the duration, the error class and a text without the answer's body),
//!   and with the successful attempt a `delivered` step. Each is stored
//!   (its ack awaited, at most [`STATUS_PUBLISH_TIMEOUT`]) before the order
//!   is acked, retried or dead-lettered; the success's two are awaited
//!   together with the auto-accept's publish. One not stored retries the
//!   order (class `publish_failed`; the backend dedupes the next request on
//!   `Idempotency-Key`). `outcome_publish_failures` counts them.

pub mod breaker;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_nats::HeaderMap;
use async_nats::jetstream;
use backon::Retryable;
use bytes::Bytes;
use canonical::status::{Action, Origin, StatusCommand, StatusSchemaV1};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use secrecy::ExposeSecret;
use serde::Deserialize;
use shared::Provider;
use shared::config::{HubConfig, Tenant};
use shared::failure::{FailureClass, classify_publish};
use shared::headers;
use shared::live::{Derived, Generational, LiveConfig};
use shared::outbound::{OutboundPolicy, RefusedDestination};
use shared::outcome::{self, Kind, PublishFailures, Step};
use shared::sequence::{self, EventState, Sequencer, Turn};
use shared::worker::{Delivery, Failure, Handler, Outcome};
use tracing::{error, info, warn};

use breaker::{Breaker, Change, Reason, Verdict};

/// How many bytes of a refusing backend's answer are read; they go into the
/// dead letter. The rest is never read.
pub const BODY_SNIPPET: usize = 512;

/// The `User-Agent` of every request.
pub const USER_AGENT: &str = concat!("orderhub-forwarder/", env!("CARGO_PKG_VERSION"));

/// What the stage is, for [`shared::app::run_stage`].
pub const SPEC: shared::app::StageSpec = shared::app::StageSpec {
    stage: "forwarder",
    stream: shared::subjects::ORDERS_STREAM,
    durable: "forwarder",
    streams: &[
        shared::subjects::ORDERS_STREAM,
        shared::subjects::STATUS_STREAM,
        "DLQ",
        "ADVISORIES",
        shared::outcome::OUTCOMES_STREAM,
    ],
    buckets: &[shared::sequence::SEQUENCE_BUCKET],
};

/// The transformer's consumer on `WEBHOOKS` (`nats/streams.toml`).
fn transformer_durable() -> &'static str {
    "transformer"
}

/// How long an auto-accept's publish may wait for JetStream's ack before
/// the order is retried.
pub const STATUS_PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

/// The `status_id` of the hub's accept of the order with webhook id
/// `webhook_id` (its `Nats-Msg-Id` is `status:<status_id>`).
pub fn auto_accept_status_id(webhook_id: &str) -> String {
    format!("auto-accept-{webhook_id}")
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderOutcome {
    provider: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantOutcome {
    tenant: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabel {
    tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantReason {
    tenant: String,
    reason: &'static str,
}

/// The forwarder's own metrics (`forwarder_` prefix); tenants are a
/// configured, bounded set.
#[derive(Clone)]
struct Metrics {
    requests: Family<TenantOutcome, Counter>,
    latency: Family<TenantLabel, Histogram>,
    breaker_state: Family<TenantLabel, Gauge>,
    breaker_opens: Family<TenantReason, Counter>,
    held: Family<TenantLabel, Gauge>,
    auto_accepts: Family<ProviderOutcome, Counter>,
}

impl Metrics {
    fn register(registry: &mut Registry) -> Self {
        let m = Metrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(|| {
                Histogram::new(shared::telemetry::duration_buckets())
            }),
            breaker_state: Family::default(),
            breaker_opens: Family::default(),
            held: Family::default(),
            auto_accepts: Family::default(),
        };
        registry.register(
            "backend_requests",
            "Requests to tenant backends by outcome (success, conflict, transient, rejected)",
            m.requests.clone(),
        );
        registry.register(
            "backend_request_duration_seconds",
            "Time for a backend to answer",
            m.latency.clone(),
        );
        registry.register(
            "breaker_state",
            "Circuit breaker per tenant: 0 closed, 1 open, 2 half-open",
            m.breaker_state.clone(),
        );
        registry.register(
            "breaker_opens",
            "Times a tenant's breaker opened, by reason (failure_rate, consecutive_failures, probes_failed)",
            m.breaker_opens.clone(),
        );
        registry.register(
            "orders_held",
            "Orders waiting for their tenant's breaker",
            m.held.clone(),
        );
        registry.register(
            "auto_accepts",
            "Accepts the hub stored on STATUS for new orders the backend took, by provider and outcome (published, failed)",
            m.auto_accepts.clone(),
        );
        for provider in Provider::ALL {
            for outcome in ["published", "failed"] {
                let _ = m.auto_accepts.get_or_create(&ProviderOutcome {
                    provider: provider.as_str(),
                    outcome,
                });
            }
        }
        m
    }

    fn auto_accept(&self, provider: Provider, outcome: &'static str) {
        self.auto_accepts
            .get_or_create(&ProviderOutcome {
                provider: provider.as_str(),
                outcome,
            })
            .inc();
    }
}

/// What the forwarder reads of the canonical order (borrowed from the
/// body): its ids for outcomes, its key and its place in its order's life.
#[derive(Deserialize)]
struct OrderRef<'a> {
    #[serde(borrow)]
    provider_order_id: std::borrow::Cow<'a, str>,
    // Optional: an order without them is still delivered (unsequenced).
    #[serde(default)]
    provider: Option<Provider>,
    #[serde(default)]
    event: Option<canonical::order::Event>,
    #[serde(default, borrow)]
    idempotency_key: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    raw: Option<RawRef>,
}

#[derive(Deserialize)]
struct RawRef {
    seq: u64,
}

/// What an auto-accept reads of the canonical order.
#[derive(Deserialize)]
struct OrderIds {
    webhook_id: String,
    provider_order_id: String,
}

/// How one request ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliverError {
    /// Worth trying again later.
    #[error("backend answered {status}: {snippet}")]
    Status {
        status: u16,
        snippet: String,
        retry_after: Option<Duration>,
    },
    /// A 3xx: not followed, so the order went nowhere. `location` is the
    /// host (and port) it pointed at, never its path or query.
    #[error("backend answered {status}, a redirect to {location}; redirects are not followed")]
    Redirect { status: u16, location: String },
    /// No request was sent: the outbound policy refuses the address.
    #[error("backend address refused: {0}")]
    Refused(RefusedDestination),
    #[error("backend did not answer within {0:?}")]
    Timeout(Duration),
    #[error("backend unreachable: {0}")]
    Connect(String),
    #[error("request failed: {0}")]
    Other(String),
}

impl DeliverError {
    /// Permanent: a 4xx other than 408, 409 and 429, a redirect, a refused
    /// address.
    pub fn is_permanent(&self) -> bool {
        match self {
            DeliverError::Status { status, .. } => {
                (400..500).contains(status) && ![408, 409, 429].contains(status)
            }
            DeliverError::Redirect { .. } | DeliverError::Refused(_) => true,
            DeliverError::Timeout(_) | DeliverError::Connect(_) | DeliverError::Other(_) => false,
        }
    }

    /// Its class in the failure vocabulary (metrics, logs, the DLQ).
    pub fn class(&self) -> FailureClass {
        match self {
            DeliverError::Status { status: 429, .. } => FailureClass::Backend429,
            DeliverError::Status { status: 408, .. } => FailureClass::Backend408,
            DeliverError::Status { status, .. } if *status >= 500 => FailureClass::Backend5xx,
            DeliverError::Status { .. } => FailureClass::BackendRejected,
            DeliverError::Redirect { .. } => FailureClass::BackendRedirect,
            DeliverError::Refused(_) => FailureClass::BackendAddressRefused,
            DeliverError::Timeout(_) => FailureClass::BackendTimeout,
            DeliverError::Connect(_) => FailureClass::BackendUnreachable,
            DeliverError::Other(_) => FailureClass::BackendError,
        }
    }

    /// What the result says about the backend, for its breaker; `None`
    /// when no request was sent.
    fn verdict(&self) -> Option<Verdict> {
        Some(match self {
            DeliverError::Refused(_) => return None,
            // It answered: it is up, if refusing this order.
            _ if self.is_permanent() => Verdict::Success,
            DeliverError::Status { .. } => Verdict::Failed,
            DeliverError::Timeout(_) | DeliverError::Connect(_) | DeliverError::Other(_) => {
                Verdict::Unreachable
            }
            DeliverError::Redirect { .. } => Verdict::Success,
        })
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            DeliverError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

struct TenantState {
    tenant: Tenant,
    /// Kept across reloads that leave the tenant's breaker settings alone.
    breaker: Arc<Breaker>,
}

/// What the forwarder precomputes from one generation of the config.
struct Routing {
    generation: u64,
    tenants: HashMap<String, Arc<TenantState>>,
    /// Accounts whose new orders the hub accepts at the provider.
    auto_accept: HashSet<(Provider, String)>,
    /// `[forwarder] per_order_ordering` and `created_wait`.
    per_order_ordering: bool,
    created_wait: Duration,
}

impl Generational for Routing {
    fn generation(&self) -> u64 {
        self.generation
    }
}

impl Routing {
    fn build(
        hub: &HubConfig,
        generation: u64,
        metrics: &Metrics,
        outbound: &OutboundPolicy,
        old: Option<&Routing>,
    ) -> Routing {
        let tenants = hub
            .tenants
            .iter()
            .map(|t| {
                let kept = old
                    .and_then(|o| o.tenants.get(&t.id))
                    .filter(|o| o.tenant.breaker == t.breaker);
                if kept.is_none() {
                    metrics
                        .breaker_state
                        .get_or_create(&TenantLabel {
                            tenant: t.id.clone(),
                        })
                        .set(0);
                }
                // Every series from the start, at 0.
                for outcome in ["success", "conflict", "transient", "rejected"] {
                    let _ = metrics.requests.get_or_create(&TenantOutcome {
                        tenant: t.id.clone(),
                        outcome,
                    });
                }
                let _ = metrics.held.get_or_create(&TenantLabel {
                    tenant: t.id.clone(),
                });
                for reason in Reason::ALL {
                    metrics
                        .breaker_opens
                        .get_or_create(&TenantReason {
                            tenant: t.id.clone(),
                            reason: reason.as_label(),
                        })
                        .inc_by(0);
                }
                if let Err(e) = outbound.check_url(&t.backend_url) {
                    warn!(tenant = %t.id, error = %e, "every order of this tenant will be dead-lettered");
                }
                (
                    t.id.clone(),
                    Arc::new(TenantState {
                        tenant: t.clone(),
                        breaker: kept
                            .map(|o| o.breaker.clone())
                            .unwrap_or_else(|| Arc::new(Breaker::new(t.breaker))),
                    }),
                )
            })
            .collect::<HashMap<String, Arc<TenantState>>>();
        // A tenant the reload removed keeps its consumer until a restart
        // (the per-tenant consumers are made at start): its orders are
        // still delivered as before rather than dead-lettered as unknown.
        let mut tenants = tenants;
        for (id, state) in old.into_iter().flat_map(|o| o.tenants.iter()) {
            if !tenants.contains_key(id) {
                warn!(tenant = %id, "tenant removed from the config: delivered as before until the forwarder restarts");
                tenants.insert(id.clone(), state.clone());
            }
        }
        let auto_accept = hub
            .accounts
            .iter()
            .filter(|a| a.auto_accept)
            .map(|a| (a.provider, a.id.clone()))
            .collect();
        Routing {
            generation,
            tenants,
            auto_accept,
            per_order_ordering: hub.forwarder.per_order_ordering,
            created_wait: hub.forwarder.created_wait,
        }
    }
}

/// The forwarder's handler.
pub struct Forwarder {
    http: reqwest::Client,
    outbound: OutboundPolicy,
    /// The config; when its generation moves on, `routing` is rebuilt
    /// before the next order.
    live: LiveConfig,
    routing: Derived<Routing>,
    max_order_age: Duration,
    metrics: Metrics,
    /// Where the accepts are stored (`STATUS`).
    js: jetstream::Context,
    outcomes: outcome::Publisher,
    /// Per-order ordering (`ORDER_SEQUENCE`).
    sequence: Sequencer,
}

impl DeliverError {
    /// The HTTP status the backend answered, if it answered.
    fn http_status(&self) -> Option<u16> {
        match self {
            DeliverError::Status { status, .. } | DeliverError::Redirect { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }

    /// The error for an outcome: never the answer's body.
    fn outcome_text(&self) -> std::borrow::Cow<'static, str> {
        match self {
            DeliverError::Status { status, .. } => format!("backend answered {status}").into(),
            other => other.to_string().into(),
        }
    }
}

impl Forwarder {
    /// `js` publishes the auto-accepts. On a config that never reloads.
    pub fn new(hub: &HubConfig, registry: &mut Registry, js: jetstream::Context) -> Self {
        Self::live(LiveConfig::new(hub.clone(), "(in process)"), registry, js)
    }

    /// A forwarder that follows `live`: each order is delivered with the
    /// tenants (URL, key, signing secrets, timeout, breaker settings) and
    /// auto-accept accounts of the config serving when it arrives.
    pub fn live(live: LiveConfig, registry: &mut Registry, js: jetstream::Context) -> Self {
        let metrics = Metrics::register(registry);
        let outcomes = outcome::Publisher::counted(
            js.clone(),
            STATUS_PUBLISH_TIMEOUT,
            PublishFailures::register(registry),
        );
        // The transformer's progress on WEBHOOKS: an order's event goes
        // once every webhook that arrived before it is converted.
        let sequence =
            Sequencer::new(js.clone(), Some(registry)).with_watermark(sequence::Watermark::new(
                js.clone(),
                shared::subjects::WEBHOOKS_STREAM,
                transformer_durable(),
            ));
        let hub = live.load();
        // Restart-only (shared::live): the outbound policy and the age limit.
        let outbound = OutboundPolicy::new(hub.forwarder.allowed_private_destinations.clone());
        let routing = Routing::build(&hub, live.generation(), &metrics, &outbound, None);
        let http = outbound
            .client_builder()
            .user_agent(USER_AGENT)
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .build()
            .expect("the HTTP client's settings are valid");
        Forwarder {
            http,
            outbound,
            routing: Derived::new(routing),
            max_order_age: hub.forwarder.max_order_age,
            live,
            metrics,
            js,
            outcomes,
            sequence,
        }
    }

    /// At most `n` events wait for an earlier event of their order in this
    /// process at once ([`shared::sequence::Sequencer::with_max_waiting`]);
    /// the main sets half its handlers per tenant.
    pub fn with_max_waiting(mut self, n: usize) -> Self {
        self.sequence = self.sequence.with_max_waiting(n);
        self
    }

    /// The routing of the config serving now, rebuilt once per reload.
    fn routing(&self) -> Arc<Routing> {
        self.routing.get(&self.live, |hub, generation, previous| {
            let next = Routing::build(
                &hub,
                generation,
                &self.metrics,
                &self.outbound,
                Some(previous),
            );
            info!(
                generation,
                tenants = next.tenants.len(),
                "forwarder routing rebuilt from the reloaded config"
            );
            next
        })
    }

    /// The provider and account of an order the hub accepts itself once
    /// its backend took it: a `created` order of an `auto_accept` account.
    fn auto_accepted(&self, routing: &Routing, d: &Delivery) -> Option<(Provider, String)> {
        if d.header(headers::EVENT) != Some("created") {
            return None;
        }
        let provider = d.header(headers::PROVIDER)?.parse::<Provider>().ok()?;
        let account = d.header(headers::ACCOUNT)?;
        let key = (provider, account.to_owned());
        routing.auto_accept.contains(&key).then_some(key)
    }

    /// Stores the hub's accept of the order on `STATUS` and waits for the
    /// ack (a duplicate ack: an earlier delivery stored it). `Err`: the
    /// order must be retried, not acked.
    async fn store_accept(
        &self,
        t: &Tenant,
        d: &Delivery,
        provider: Provider,
        account: &str,
    ) -> Result<(), Failure> {
        let ids: OrderIds = match serde_json::from_slice(&d.payload) {
            Ok(ids) => ids,
            Err(e) => {
                return Err(Failure::new(
                    FailureClass::InvalidPayload,
                    format!("cannot read the order's ids to accept it: {e}"),
                ));
            }
        };
        let command = StatusCommand {
            schema: StatusSchemaV1,
            status_id: auto_accept_status_id(&ids.webhook_id),
            tenant: t.id.clone(),
            provider,
            account: account.to_owned(),
            provider_order_id: ids.provider_order_id,
            action: Action::Accept,
            reason: None,
            ready_at: None,
            unavailable_items: Vec::new(),
            origin: Origin::AutoAccept,
            decided_at: time::OffsetDateTime::now_utc(),
            order_webhook_id: Some(ids.webhook_id),
        };
        let body = serde_json::to_vec(&command).map_err(|e| {
            Failure::new(
                FailureClass::InvalidPayload,
                format!("cannot encode the accept: {e}"),
            )
        })?;
        let subject = shared::subjects::status_command(provider, account);
        let mut h = HeaderMap::new();
        h.insert(
            "Nats-Msg-Id",
            format!("status:{}", command.status_id).as_str(),
        );
        h.insert("Content-Type", "application/json");
        h.insert(headers::STATUS_ID, command.status_id.as_str());
        h.insert(headers::TENANT, command.tenant.as_str());
        h.insert(headers::PROVIDER, provider.as_str());
        h.insert(headers::ACCOUNT, account);
        if let Some(tp) = d.header(headers::TRACEPARENT) {
            h.insert(headers::TRACEPARENT, tp);
        }
        let publish = async {
            let ack = self
                .js
                .publish_with_headers(subject.clone(), h, Bytes::from(body))
                .await?;
            ack.await
        };
        match tokio::time::timeout(STATUS_PUBLISH_TIMEOUT, publish).await {
            Ok(Ok(ack)) => {
                info!(
                    tenant = %t.id,
                    status_id = %command.status_id,
                    subject,
                    duplicate = ack.duplicate,
                    "auto-accept stored"
                );
                Ok(())
            }
            Ok(Err(e)) => Err(Failure::new(
                classify_publish(&e),
                format!("cannot store the auto-accept on {subject}: {e}"),
            )),
            Err(_) => Err(Failure::new(
                FailureClass::PublishFailed,
                format!(
                    "no ack for the auto-accept on {subject} within {}ms",
                    STATUS_PUBLISH_TIMEOUT.as_millis()
                ),
            )),
        }
    }

    fn set_breaker_gauge(&self, t: &TenantState) {
        self.metrics
            .breaker_state
            .get_or_create(&TenantLabel {
                tenant: t.tenant.id.clone(),
            })
            .set(t.breaker.state().as_gauge());
    }

    /// One POST to the backend.
    async fn post(
        &self,
        t: &Tenant,
        d: &Delivery,
        idempotency_key: &str,
    ) -> Result<u16, DeliverError> {
        // A name is checked as it resolves; an address, here.
        self.outbound
            .check_url(&t.backend_url)
            .map_err(DeliverError::Refused)?;
        let mut req = self
            .http
            .post(t.backend_url.clone())
            .timeout(t.request_timeout)
            .header("content-type", "application/json")
            .header("idempotency-key", idempotency_key)
            .header("orderhub-attempt", d.delivered.to_string());
        if let Some(key) = &t.backend_key {
            let mut v =
                reqwest::header::HeaderValue::from_str(key.expose_secret()).map_err(|_| {
                    DeliverError::Other("backend key is not a valid header value".into())
                })?;
            v.set_sensitive(true);
            req = req.header("x-auth", v);
        }
        if let Some(tp) = d.header(shared::headers::TRACEPARENT) {
            req = req.header("traceparent", tp);
        }
        if !t.signing_secrets.is_empty() {
            let signed = shared::verify::direct::sign_all(
                &d.payload,
                &t.signing_secrets,
                idempotency_key,
                SystemTime::now(),
            )
            .map_err(|e| DeliverError::Other(format!("cannot sign: {e}")))?;
            req = req.headers(signed);
        }
        let started = std::time::Instant::now();
        let result = req.body(d.payload.clone()).send().await;
        self.metrics
            .latency
            .get_or_create(&TenantLabel {
                tenant: t.id.clone(),
            })
            .observe(started.elapsed().as_secs_f64());
        let resp = result.map_err(|e| {
            if let Some(refused) = shared::outbound::refused(&e) {
                DeliverError::Refused(refused.clone())
            } else if e.is_timeout() {
                DeliverError::Timeout(t.request_timeout)
            } else if e.is_connect() {
                DeliverError::Connect(shared::outbound::error_text(&e, "<backend>"))
            } else {
                DeliverError::Other(shared::outbound::error_text(&e, "<backend>"))
            }
        })?;
        let status = resp.status().as_u16();
        if resp.status().is_success() || status == 409 {
            return Ok(status);
        }
        if resp.status().is_redirection() {
            return Err(DeliverError::Redirect {
                status,
                location: location_host(&t.backend_url, resp.headers()),
            });
        }
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(shared::outbound::parse_retry_after);
        // The first bytes only: a backend answering a 200 MB error page
        // costs 512 bytes of memory, not 200 MB.
        Err(DeliverError::Status {
            status,
            snippet: shared::outbound::answer_text(resp, BODY_SNIPPET).await,
            retry_after,
        })
    }
}

/// Where a redirect pointed, as a log may show it: the host and port of
/// `Location` (resolved against the backend's URL), no path, query or
/// userinfo, cut to a log's length.
fn location_host(base: &reqwest::Url, headers: &reqwest::header::HeaderMap) -> String {
    let Some(location) = headers.get("location") else {
        return "nowhere (no Location)".to_owned();
    };
    let target = location
        .to_str()
        .ok()
        .and_then(|l| base.join(l).ok())
        .and_then(|u| {
            let host = u.host_str()?.to_owned();
            Some(match u.port_or_known_default() {
                Some(port) => format!("{host}:{port}"),
                None => host,
            })
        });
    match target {
        Some(host) => shared::redact::for_terminal(&shared::redact::for_log(&host)).into_owned(),
        None => "an unreadable Location".to_owned(),
    }
}

/// `Retry-After` as seconds or an HTTP date.
impl Handler for Forwarder {
    async fn handle(&self, d: &Delivery) -> Outcome {
        let routing = self.routing();
        let Some(state) = d
            .tenant
            .as_deref()
            .or_else(|| shared::subjects::token(&d.subject, 1))
            .and_then(|t| routing.tenants.get(t))
            .cloned()
        else {
            return Outcome::DeadLetter(Failure::new(
                FailureClass::UnknownTenant,
                format!("no tenant configured for {}", d.subject),
            ));
        };
        let t = &state.tenant;
        // The ingress's acceptance time is the order's age; failing that,
        // when the order was stored. An operator's replay is a deliberate
        // new attempt: its age counts from the replay.
        let born = if d.header(shared::headers::REPLAY_OF).is_some() {
            d.published
        } else {
            d.header(shared::headers::RECEIVED_AT)
                .and_then(|v| humantime::parse_rfc3339(v).ok())
                .unwrap_or(d.published)
        };
        let age = SystemTime::now().duration_since(born).unwrap_or_default();
        let order_id = serde_json::from_slice::<OrderRef>(&d.payload).ok();
        // The order event's own key; an order written before it existed
        // keeps the webhook id.
        let key = order_id
            .as_ref()
            .and_then(|o| o.idempotency_key.as_deref().map(str::to_owned))
            .or_else(|| d.webhook_id.clone())
            .unwrap_or_else(|| format!("{}-{}", d.stream, d.stream_seq));
        let label = TenantLabel {
            tenant: t.id.clone(),
        };
        let about = |kind, ok, n: u32| {
            Step::of(outcome::Stage::Forwarder, kind, d, ok).map(|mut s| {
                s.provider_order_id = order_id.as_ref().map(|o| o.provider_order_id.as_ref());
                s.step = n;
                s
            })
        };
        // Its order's earlier events first (shared::sequence).
        let sequenced = order_id
            .as_ref()
            .filter(|_| routing.per_order_ordering)
            .and_then(|o| {
                let event = o.event?;
                let phase = event.phase()?;
                Some((
                    sequence::order_key(&t.id, o.provider?, &o.provider_order_id),
                    sequence::Event {
                        key: &key,
                        name: event.as_str(),
                        phase,
                        seq: o.raw.as_ref()?.seq,
                    },
                ))
            });
        if age > self.max_order_age {
            if let Some((entry, _)) = &sequenced {
                self.settle(entry, &key, EventState::DeadLettered).await;
            }
            return self.stale(age);
        }
        let deadline = tokio::time::Instant::now() + (self.max_order_age - age);
        // The entry as the turn saw it: finished from it in one write.
        let mut seen = None;
        if let Some((entry, ev)) = &sequenced {
            let first_wait = (!routing.created_wait.is_zero()).then_some(routing.created_wait);
            let order = order_id
                .as_ref()
                .map(|o| shared::redact::truncate(&o.provider_order_id, 64).into_owned())
                .unwrap_or_default();
            match self.sequence.turn(entry, ev, first_wait, deadline).await {
                Err(e) => return Outcome::Retry(Failure::new(FailureClass::PublishFailed, e.0)),
                Ok(Turn::Duplicate) => {
                    info!(tenant = %t.id, %order, event = ev.name, key = %key, "a copy of an event the backend has; not sent again");
                    let step = about(Kind::Delivered, true, 0).map(|mut s| {
                        s.already_done = true;
                        s
                    });
                    if let Some(step) = step
                        && let Err(f) = self.outcomes.publish(&step).await
                    {
                        return Outcome::Retry(f);
                    }
                    return Outcome::Ack;
                }
                Ok(Turn::Busy { behind, .. }) => {
                    return Outcome::Retry(Failure::new(
                        FailureClass::OrderWaiting,
                        format!(
                            "waits for {behind} of order {order}, and this replica holds as many waiting events as it may"
                        ),
                    ));
                }
                Ok(Turn::TimedOut { reason, behind }) => {
                    let f = Failure::new(
                        FailureClass::Stale,
                        format!(
                            "waited for {behind} of order {order} ({}) until the order was older than max_order_age {}",
                            reason.as_str(),
                            humantime::format_duration(self.max_order_age)
                        ),
                    );
                    self.settle(entry, &key, EventState::DeadLettered).await;
                    return Outcome::DeadLetter(f);
                }
                Ok(Turn::Go {
                    waited,
                    alone,
                    late,
                    seen: entry_seen,
                }) => {
                    seen = entry_seen;
                    if alone {
                        warn!(tenant = %t.id, %order, event = ev.name, waited_ms = waited.as_millis() as u64, "the order's created did not come within created_wait; this event goes alone");
                    } else if late {
                        warn!(tenant = %t.id, %order, event = ev.name, "a later event of this order was delivered before this one reached the hub");
                    } else if !waited.is_zero() {
                        info!(tenant = %t.id, %order, event = ev.name, waited_ms = waited.as_millis() as u64, "waited for the order's earlier events");
                    }
                }
            }
        }
        let outcome = self
            .deliver(d, &routing, &state, &key, born, deadline, &about, &label)
            .await;
        let Some((entry, _)) = &sequenced else {
            return outcome;
        };
        match &outcome {
            Outcome::Ack => {
                if let Err(e) = self
                    .sequence
                    .finish_seen(entry, &key, EventState::Done, seen)
                    .await
                {
                    // The backend dedupes the next delivery's request.
                    return Outcome::Retry(Failure::new(
                        FailureClass::PublishFailed,
                        format!("delivered, but not recorded as delivered: {}", e.0),
                    ));
                }
            }
            Outcome::DeadLetter(_) => self.settle(entry, &key, EventState::DeadLettered).await,
            Outcome::Retry(_) if d.is_last => {
                self.settle(entry, &key, EventState::DeadLettered).await
            }
            Outcome::Retry(_) => {}
        }
        outcome
    }
}

impl Forwarder {
    /// The dead letter of an order `age` old, beyond `max_order_age`.
    fn stale(&self, age: Duration) -> Outcome {
        Outcome::DeadLetter(Failure::new(
            FailureClass::Stale,
            format!(
                "order is {} old, beyond max_order_age {}",
                humantime::format_duration(Duration::from_secs(age.as_secs())),
                humantime::format_duration(self.max_order_age)
            ),
        ))
    }

    /// Records that `key` went to the DLQ, a few tries; when they all fail
    /// the order's later events wait until `max_order_age` (or a replay).
    async fn settle(&self, entry: &str, key: &str, state: EventState) {
        let mark = || self.sequence.finish(entry, key, state);
        if let Err(e) = mark.retry(shared::backoff::infra().with_max_times(3)).await {
            error!(error = %e, "cannot record a dead-lettered event in its order's sequence; its order's later events wait for it until they are stale");
        }
    }

    /// One delivery's requests: held by the breaker, retried within the
    /// delivery while the backend is down.
    #[allow(clippy::too_many_arguments)]
    async fn deliver<'a>(
        &self,
        d: &'a Delivery,
        routing: &Routing,
        state: &TenantState,
        key: &str,
        born: SystemTime,
        deadline: tokio::time::Instant,
        about: &(dyn Fn(Kind, bool, u32) -> Option<Step<'a>> + Sync),
        label: &TenantLabel,
    ) -> Outcome {
        let t = &state.tenant;
        // Requests sent in this delivery: each one's `attempt` step.
        let mut sent: u32 = 0;
        loop {
            let permit = match state.breaker.try_acquire() {
                Ok(p) => p,
                Err(_) => {
                    self.metrics.held.get_or_create(label).inc();
                    self.set_breaker_gauge(state);
                    let p = state.breaker.acquire_until(deadline).await;
                    self.metrics.held.get_or_create(label).dec();
                    match p {
                        Some(p) => p,
                        None => {
                            return self
                                .stale(SystemTime::now().duration_since(born).unwrap_or_default());
                        }
                    }
                }
            };
            let started = std::time::Instant::now();
            let result = self.post(t, d, key).await;
            let took = started.elapsed();
            let (verdict, outcome_label) = match &result {
                Ok(409) => (Some(Verdict::Success), "conflict"),
                Ok(_) => (Some(Verdict::Success), "success"),
                Err(e) if e.is_permanent() => (e.verdict(), "rejected"),
                Err(e) => (e.verdict(), "transient"),
            };
            // No request, no verdict: the permit goes back unused.
            let change = match verdict {
                Some(v) => permit.report(v),
                None => {
                    drop(permit);
                    None
                }
            };
            match change {
                Some(Change::Opened(reason)) => {
                    warn!(tenant = %t.id, reason = reason.as_label(), "breaker opened; holding the tenant's orders");
                    self.metrics
                        .breaker_opens
                        .get_or_create(&TenantReason {
                            tenant: t.id.clone(),
                            reason: reason.as_label(),
                        })
                        .inc();
                }
                Some(Change::Closed) => info!(tenant = %t.id, "breaker closed"),
                None => {}
            }
            let now = state.breaker.state();
            self.set_breaker_gauge(state);
            self.metrics
                .requests
                .get_or_create(&TenantOutcome {
                    tenant: t.id.clone(),
                    outcome: outcome_label,
                })
                .inc();
            // One `attempt` per request sent (a refused address sent none).
            let attempt = match &result {
                Err(DeliverError::Refused(_)) => None,
                _ => about(Kind::Attempt, result.is_ok(), sent).map(|mut s| {
                    s.duration_ms = Some(u64::try_from(took.as_millis()).unwrap_or(u64::MAX));
                    s.http_status = match &result {
                        Ok(status) => Some(*status),
                        Err(e) => e.http_status(),
                    };
                    if let Err(e) = &result {
                        s.error_class = Some(e.class().as_str());
                        s.error = Some(e.outcome_text());
                    }
                    s
                }),
            };
            if attempt.is_some() {
                sent += 1;
            }
            if let (Err(_), Some(step)) = (&result, &attempt)
                && let Err(f) = self.outcomes.publish(step).await
            {
                return Outcome::Retry(f);
            }
            return match result {
                Ok(status) => {
                    info!(tenant = %t.id, attempt = d.delivered, status, "delivered");
                    // The attempt and the delivery go out together; their
                    // acks are awaited with the auto-accept's.
                    let delivered = about(Kind::Delivered, true, sent);
                    // Encoded now; the futures borrow no step.
                    let sends = [attempt.as_ref(), delivered.as_ref()]
                        .map(|step| step.map(|s| self.outcomes.send(s)));
                    let recorded = async {
                        let mut pending = [None, None];
                        for (slot, send) in pending.iter_mut().zip(sends) {
                            if let Some(send) = send {
                                *slot = Some(send.await?);
                            }
                        }
                        for p in pending.into_iter().flatten() {
                            p.wait().await?;
                        }
                        Ok::<(), Failure>(())
                    };
                    let Some((provider, account)) = self.auto_accepted(routing, d) else {
                        return match recorded.await {
                            Ok(()) => Outcome::Ack,
                            Err(f) => Outcome::Retry(f),
                        };
                    };
                    // A brief NATS hiccup should not cost the order a
                    // delivery (and the backend a second request): a few
                    // quick tries, then the order's own retry.
                    let store = async {
                        (|| self.store_accept(t, d, provider, &account))
                            .retry(shared::backoff::infra().with_max_times(3))
                            .when(|f: &Failure| f.class != FailureClass::InvalidPayload)
                            .await
                    };
                    let (recorded, stored) = tokio::join!(recorded, store);
                    if let Err(f) = recorded {
                        return Outcome::Retry(f);
                    }
                    match stored {
                        Ok(()) => {
                            self.metrics.auto_accept(provider, "published");
                            Outcome::Ack
                        }
                        // The transformer wrote the body: no later
                        // delivery reads it better, and a dead letter
                        // would have the order rejected at the provider
                        // although the backend took it.
                        Err(f) if f.class == FailureClass::InvalidPayload => {
                            error!(tenant = %t.id, error = %f.message, "auto-accept impossible; the order stays unanswered at the provider");
                            self.metrics.auto_accept(provider, "failed");
                            Outcome::Ack
                        }
                        // Never acked without its accept stored: the
                        // backend dedupes the next delivery's request.
                        Err(f) => {
                            warn!(tenant = %t.id, error = %f.message, "auto-accept not stored; retrying the order");
                            self.metrics.auto_accept(provider, "failed");
                            Outcome::Retry(Failure::new(FailureClass::PublishFailed, f.message))
                        }
                    }
                }
                Err(e) if e.is_permanent() => {
                    warn!(tenant = %t.id, attempt = d.delivered, error = %e, "backend refused the order");
                    Outcome::DeadLetter(Failure::new(e.class(), e.to_string()))
                }
                // The backend is down (this failure opened the breaker, or
                // was a failed probe): hold the order in this delivery until
                // the breaker lets a request through again, so an outage
                // spends no deliveries.
                Err(e) if now != breaker::State::Closed => {
                    warn!(tenant = %t.id, attempt = d.delivered, error = %e, "backend down; holding the order");
                    continue;
                }
                Err(e) => Outcome::Retry(
                    Failure::new(e.class(), e.to_string()).with_retry_after(e.retry_after()),
                ),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_as_the_contract_says() {
        let s = |status| DeliverError::Status {
            status,
            snippet: String::new(),
            retry_after: None,
        };
        for permanent in [400, 401, 403, 404, 410, 422] {
            assert!(s(permanent).is_permanent(), "{permanent}");
        }
        for transient in [408, 429, 500, 502, 503, 504] {
            assert!(!s(transient).is_permanent(), "{transient}");
        }
        assert!(!DeliverError::Timeout(Duration::from_secs(1)).is_permanent());
        assert!(!DeliverError::Connect("refused".into()).is_permanent());
        assert_eq!(s(503).class(), FailureClass::Backend5xx);
        assert_eq!(s(422).class(), FailureClass::BackendRejected);
        let redirect = DeliverError::Redirect {
            status: 302,
            location: "elsewhere.example:443".into(),
        };
        assert!(redirect.is_permanent());
        assert_eq!(redirect.class(), FailureClass::BackendRedirect);
        let refused = DeliverError::Refused(RefusedDestination {
            host: "10.0.0.1".into(),
            ip: "10.0.0.1".parse().unwrap(),
            kind: "private",
        });
        assert!(refused.is_permanent());
        assert_eq!(refused.class(), FailureClass::BackendAddressRefused);
        assert_eq!(
            refused.verdict(),
            None,
            "no request, nothing for the breaker"
        );
    }

    #[test]
    fn a_redirect_is_named_by_host_and_port_only() {
        let base: reqwest::Url = "https://orders.acme.example/api/v1/orders".parse().unwrap();
        let at = |location: &str| {
            let mut h = reqwest::header::HeaderMap::new();
            h.insert("location", location.parse().unwrap());
            location_host(&base, &h)
        };
        assert_eq!(
            at("http://user:pw@evil.example:8080/x?key=secret"),
            "evil.example:8080"
        );
        assert_eq!(at("/elsewhere?token=t"), "orders.acme.example:443");
        assert_eq!(
            location_host(&base, &reqwest::header::HeaderMap::new()),
            "nowhere (no Location)"
        );
        let long = format!("https://{}.example/", "a".repeat(300));
        assert!(at(&long).ends_with("bytes)"), "{}", at(&long));
    }
}
