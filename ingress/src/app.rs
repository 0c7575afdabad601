//! The request path: provider rate → account → verify → allow-list →
//! account rate → publish → answer. No database, no parsing of the body
//! beyond what a verifier needs for an event id.
//!
//! The order of checks is deliberate:
//! - the body limit (in the routes) and the provider's rate limit come
//!   first, before any work on the request;
//! - an unknown account is verified against a dummy secret, so it costs the
//!   same as a bad signature and answers the same 401 (no enumeration);
//! - the allow-list and the account's own rate limit apply only after the
//!   signature verified, so neither 403 nor 429 tells an unsigned caller
//!   whether an account exists.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use async_nats::jetstream;
use bytes::Bytes;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use shared::Provider;
use shared::config::{Account, HubConfig, RateLimit};
use shared::headers;
use tracing::{info, warn};
use warp::http::{HeaderMap, StatusCode};

use crate::net::{NetSet, client_ip};
use crate::verify::{self, JwtAlgorithm, VerifyOptions};

/// A webhook request as the routes hand it over.
#[derive(Debug)]
pub struct Incoming {
    pub provider: Provider,
    /// `None`: the provider's default account (`/api/webhooks/{provider}`).
    pub account: Option<String>,
    pub route: Route,
    pub headers: HeaderMap,
    pub peer: Option<SocketAddr>,
    pub body: Bytes,
}

/// Which route matched: the generic one or a provider-dictated one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Generic,
    /// Delivery Hero POS plugin: `POST .../order/{remoteId}`.
    TalabatOrder {
        remote_id: String,
    },
    /// Delivery Hero POS plugin:
    /// `PUT .../remoteId/{remoteId}/remoteOrder/{remoteOrderId}/posOrderStatus`.
    TalabatStatus {
        remote_id: String,
        remote_order_id: String,
    },
    /// Just Eat partner webhooks append their event name to the URL.
    JustEatEvent {
        event: String,
    },
}

impl Route {
    /// Path parameters, carried to later stages as `Orderhub-Path-<Name>`.
    pub fn params(&self) -> Vec<(&'static str, &str)> {
        match self {
            Route::Generic => vec![],
            Route::TalabatOrder { remote_id } => vec![("Orderhub-Path-Remoteid", remote_id)],
            Route::TalabatStatus {
                remote_id,
                remote_order_id,
            } => vec![
                ("Orderhub-Path-Remoteid", remote_id),
                ("Orderhub-Path-Remoteorderid", remote_order_id),
            ],
            Route::JustEatEvent { event } => vec![("Orderhub-Path-Event", event)],
        }
    }
}

/// Why a request was not accepted. Each maps to one status and one metrics
/// label; the body never says more than the status does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Bad or missing signature, unknown account, stale timestamp: the
    /// verifier's error type, for metrics only.
    Unauthorized(&'static str),
    Forbidden,
    TooLarge {
        limit: u64,
    },
    RateLimited {
        retry_after: Duration,
    },
    BodyTimeout,
    /// JetStream did not ack: nothing was accepted.
    Unavailable(String),
}

impl Rejection {
    pub fn status(&self) -> StatusCode {
        match self {
            Rejection::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Rejection::Forbidden => StatusCode::FORBIDDEN,
            Rejection::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Rejection::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Rejection::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `outcome` label.
    pub fn outcome(&self) -> &'static str {
        match self {
            Rejection::Unauthorized(_) => "unauthorized",
            Rejection::Forbidden => "forbidden",
            Rejection::TooLarge { .. } => "too_large",
            Rejection::RateLimited { .. } => "rate_limited",
            Rejection::BodyTimeout => "body_timeout",
            Rejection::Unavailable(_) => "unavailable",
        }
    }

    /// The `reason` label: the verifier's error type for a 401.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::Unauthorized(r) => r,
            Rejection::Unavailable(_) => "publish_failed",
            _ => "none",
        }
    }
}

/// What happened to an accepted webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    New {
        webhook_id: String,
    },
    /// Stored before under the same event identity; the first webhook id
    /// (`None` only if the first copy could not be read back).
    Duplicate {
        webhook_id: Option<String>,
    },
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    provider: &'static str,
    outcome: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: &'static str,
}

/// The ingress metrics (`ingress_` prefix).
#[derive(Clone)]
struct Metrics {
    requests: Family<RequestLabels, Counter>,
    body_bytes: Family<ProviderLabels, Histogram>,
    duration: Family<ProviderLabels, Histogram>,
    publish_duration: Histogram,
}

impl Metrics {
    fn register(registry: &mut Registry) -> Self {
        let m = Metrics {
            requests: Family::default(),
            body_bytes: Family::new_with_constructor(|| {
                Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                    256.0, 4.0, 9,
                ))
            }),
            duration: Family::new_with_constructor(|| {
                Histogram::new(shared::telemetry::duration_buckets())
            }),
            publish_duration: Histogram::new(shared::telemetry::duration_buckets()),
        };
        registry.register(
            "requests",
            "Webhook requests by provider, outcome and rejection reason",
            m.requests.clone(),
        );
        registry.register(
            "body_bytes",
            "Sizes of webhook bodies read",
            m.body_bytes.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from the body read to the answer",
            m.duration.clone(),
        );
        registry.register(
            "publish_duration_seconds",
            "Time from the JetStream publish to its ack",
            m.publish_duration.clone(),
        );
        m
    }
}

struct AccountState {
    allowed: NetSet,
    options: VerifyOptions,
    limit: Option<DefaultDirectRateLimiter>,
}

fn limiter(r: RateLimit) -> DefaultDirectRateLimiter {
    let nz = |v: u32| NonZeroU32::new(v.max(1)).expect("max(1) is non-zero");
    DefaultDirectRateLimiter::direct(Quota::per_second(nz(r.per_second)).allow_burst(nz(r.burst)))
}

/// Without configuration, a provider may send this many per second.
pub const DEFAULT_PROVIDER_LIMIT: RateLimit = RateLimit {
    per_second: 5000,
    burst: 10000,
};

/// Shared state of the ingress.
pub struct Ingress {
    hub: Arc<HubConfig>,
    js: jetstream::Context,
    webhooks: jetstream::stream::Stream,
    accounts: HashMap<(Provider, String), AccountState>,
    providers: HashMap<Provider, DefaultDirectRateLimiter>,
    trusted: NetSet,
    clock: DefaultClock,
    dummy_secrets: Vec<SecretString>,
    publish_timeout: Duration,
    /// False after a publish failed, until one succeeds: part of `/ready`.
    pub publishing: Arc<AtomicBool>,
    metrics: Metrics,
}

impl Ingress {
    pub fn new(
        hub: Arc<HubConfig>,
        js: jetstream::Context,
        webhooks: jetstream::stream::Stream,
        registry: &mut Registry,
    ) -> Self {
        let limits = &hub.ingress.rate_limits;
        let default_limit = limits
            .get("default")
            .copied()
            .unwrap_or(DEFAULT_PROVIDER_LIMIT);
        let providers = Provider::ALL
            .into_iter()
            .map(|p| {
                let r = limits.get(p.as_str()).copied().unwrap_or(default_limit);
                (p, limiter(r))
            })
            .collect();
        let accounts = hub
            .accounts
            .iter()
            .map(|a| ((a.provider, a.id.clone()), account_state(a)))
            .collect();
        Ingress {
            trusted: NetSet::new(&hub.ingress.trusted_proxies),
            providers,
            accounts,
            clock: DefaultClock::default(),
            // Unknown accounts are checked against this, so they take as
            // long as a bad signature. It can never match: nobody has it.
            dummy_secrets: vec![SecretString::from(format!(
                "whsec_{}",
                uuid::Uuid::new_v4().simple()
            ))],
            publish_timeout: hub.ingress.publish_timeout,
            publishing: Arc::new(AtomicBool::new(true)),
            metrics: Metrics::register(registry),
            hub,
            js,
            webhooks,
        }
    }

    pub fn max_body_bytes(&self) -> u64 {
        self.hub.ingress.max_body_bytes
    }

    /// Records a request refused before it reached [`Ingress::accept`]
    /// (body too large or too slow).
    pub fn record_early(&self, provider: Provider, rejection: &Rejection) {
        self.metrics
            .requests
            .get_or_create(&RequestLabels {
                provider: provider.as_str(),
                outcome: rejection.outcome(),
                reason: rejection.reason(),
            })
            .inc();
        info!(
            provider = %provider,
            outcome = rejection.outcome(),
            status = rejection.status().as_u16(),
            "webhook refused"
        );
    }

    /// Checks, publishes and says what happened; one log line and one
    /// counter per request.
    pub async fn accept(&self, req: Incoming) -> Result<Accepted, Rejection> {
        let started = Instant::now();
        let provider = req.provider;
        self.metrics
            .body_bytes
            .get_or_create(&ProviderLabels {
                provider: provider.as_str(),
            })
            .observe(req.body.len() as f64);
        let account_id = match &req.account {
            Some(a) => Some(a.clone()),
            None => self.hub.default_account(provider).map(|a| a.id.clone()),
        };
        let result = self.check_and_publish(&req, account_id.as_deref()).await;
        let (outcome, reason, status) = match &result {
            Ok(Accepted::New { .. }) => ("accepted", "none", 202),
            Ok(Accepted::Duplicate { .. }) => ("duplicate", "none", 200),
            Err(r) => (r.outcome(), r.reason(), r.status().as_u16()),
        };
        self.metrics
            .requests
            .get_or_create(&RequestLabels {
                provider: provider.as_str(),
                outcome,
                reason,
            })
            .inc();
        self.metrics
            .duration
            .get_or_create(&ProviderLabels {
                provider: provider.as_str(),
            })
            .observe(started.elapsed().as_secs_f64());
        let webhook_id = match &result {
            Ok(Accepted::New { webhook_id }) => Some(webhook_id.as_str()),
            Ok(Accepted::Duplicate { webhook_id }) => webhook_id.as_deref(),
            Err(_) => None,
        };
        // The account id is logged only once the request proved it knows
        // the account's secret.
        let account = match &result {
            Ok(_) => account_id.as_deref(),
            Err(
                Rejection::Forbidden | Rejection::RateLimited { .. } | Rejection::Unavailable(_),
            ) => account_id.as_deref(),
            Err(_) => None,
        };
        match &result {
            Err(Rejection::Unavailable(e)) => warn!(
                provider = %provider,
                account,
                outcome,
                status,
                error = %e,
                duration_us = started.elapsed().as_micros() as u64,
                "webhook not stored"
            ),
            _ => info!(
                webhook_id,
                provider = %provider,
                account,
                outcome,
                reason,
                status,
                body_bytes = req.body.len(),
                duration_us = started.elapsed().as_micros() as u64,
                "webhook"
            ),
        }
        result
    }

    async fn check_and_publish(
        &self,
        req: &Incoming,
        account_id: Option<&str>,
    ) -> Result<Accepted, Rejection> {
        let provider = req.provider;
        self.check_rate(&self.providers[&provider])?;

        let now = SystemTime::now();
        let verifier = verify::verifier(provider);
        let Some(account) = account_id.and_then(|id| self.hub.account(provider, id)) else {
            // Same work as a bad signature, same answer.
            let _ = verifier.verify(
                &req.headers,
                &req.body,
                &self.dummy_secrets,
                &VerifyOptions::default(),
                now,
            );
            return Err(Rejection::Unauthorized("unknown_account"));
        };
        let state = &self.accounts[&(account.provider, account.id.clone())];
        let verified = verifier
            .verify(&req.headers, &req.body, &account.secrets, &state.options, now)
            .map_err(|e| {
                if e.is_misconfiguration() {
                    warn!(provider = %provider, account = %account.id, error = %e, "account misconfigured");
                }
                Rejection::Unauthorized(e.error_type())
            })?;

        if !state.allowed.is_empty() {
            let ip = client_ip(req.peer, &req.headers, &self.trusted);
            if !ip.is_some_and(|ip| state.allowed.contains(ip)) {
                return Err(Rejection::Forbidden);
            }
        }
        if let Some(limit) = &state.limit {
            self.check_rate(limit)?;
        }
        self.publish(req, account, verified.event_id.as_deref())
            .await
    }

    fn check_rate(&self, limit: &DefaultDirectRateLimiter) -> Result<(), Rejection> {
        limit.check().map_err(|not_until| Rejection::RateLimited {
            retry_after: not_until.wait_time_from(self.clock.now()),
        })
    }

    async fn publish(
        &self,
        req: &Incoming,
        account: &Account,
        event_id: Option<&str>,
    ) -> Result<Accepted, Rejection> {
        let webhook_id = uuid::Uuid::now_v7().to_string();
        let msg_id = message_id(req, &account.id, event_id);
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", msg_id.as_str());
        h.insert(headers::WEBHOOK_ID, webhook_id.as_str());
        h.insert(headers::PROVIDER, req.provider.as_str());
        h.insert(headers::ACCOUNT, account.id.as_str());
        h.insert(headers::TENANT, account.tenant.as_str());
        h.insert(
            headers::RECEIVED_AT,
            shared::dlq::rfc3339(SystemTime::now()).as_str(),
        );
        h.insert(headers::TRACEPARENT, traceparent(&req.headers).as_str());
        for (name, value) in req.route.params() {
            h.insert(name, value);
        }
        for (name, value) in forwarded_headers(req.provider, &req.headers) {
            h.insert(name, value.as_str());
        }
        // While disconnected the client would only buffer the publish and
        // the answer would be a 503 after the timeout anyway: say so now.
        if self.js.client().connection_state() != async_nats::connection::State::Connected {
            self.publishing.store(false, Ordering::Relaxed);
            return Err(Rejection::Unavailable("not connected to NATS".to_owned()));
        }
        let subject = shared::subjects::raw_webhook(req.provider, &account.id);
        let started = Instant::now();
        let publish = async {
            self.js
                .publish_with_headers(subject, h, req.body.clone())
                .await
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())
        };
        let ack = match tokio::time::timeout(self.publish_timeout, publish).await {
            Ok(Ok(ack)) => ack,
            Ok(Err(e)) => {
                self.publishing.store(false, Ordering::Relaxed);
                return Err(Rejection::Unavailable(e));
            }
            Err(_) => {
                self.publishing.store(false, Ordering::Relaxed);
                return Err(Rejection::Unavailable(format!(
                    "no ack within {:?}",
                    self.publish_timeout
                )));
            }
        };
        self.publishing.store(true, Ordering::Relaxed);
        self.metrics
            .publish_duration
            .observe(started.elapsed().as_secs_f64());
        if !ack.duplicate {
            return Ok(Accepted::New { webhook_id });
        }
        // The same event was stored before: answer with its webhook id.
        let first = match self.webhooks.direct_get(ack.sequence).await {
            Ok(m) => m
                .headers
                .get(headers::WEBHOOK_ID)
                .map(|v| v.as_str().to_owned()),
            Err(e) => {
                warn!(seq = ack.sequence, error = %e, "cannot read the first copy of a duplicate");
                None
            }
        };
        Ok(Accepted::Duplicate { webhook_id: first })
    }
}

fn account_state(a: &Account) -> AccountState {
    let defaults = VerifyOptions::default();
    AccountState {
        allowed: NetSet::new(&a.allowed_ips),
        options: VerifyOptions {
            jwt_algorithm: a
                .jwt_algorithm
                .as_deref()
                .and_then(|s| s.parse::<JwtAlgorithm>().ok())
                .unwrap_or(defaults.jwt_algorithm),
            timestamp_tolerance: a
                .timestamp_tolerance
                .unwrap_or(defaults.timestamp_tolerance),
            ..defaults
        },
        limit: a.rate_limit.map(limiter),
    }
}

/// `Nats-Msg-Id`: the provider's event identity where it has one, plus a
/// hash of what the request says (method-specific route parameters and the
/// body), so a provider re-sending an event is stored once while two
/// different events that happen to share an id (or a body sent to two
/// routes) never swallow each other.
pub fn message_id(req: &Incoming, account: &str, event_id: Option<&str>) -> String {
    let mut hash = Sha256::new();
    for (name, value) in req.route.params() {
        hash.update(name.as_bytes());
        hash.update([0]);
        hash.update(value.as_bytes());
        hash.update([0]);
    }
    hash.update(&req.body);
    let digest = hex::encode(&hash.finalize()[..16]);
    match event_id {
        Some(id) => format!("{}:{account}:{id}:{digest}", req.provider),
        None => format!("{}:{account}:{digest}", req.provider),
    }
}

/// The incoming W3C `traceparent` if well-formed, else a new trace.
fn traceparent(h: &HeaderMap) -> String {
    if let Some(v) = h.get("traceparent").and_then(|v| v.to_str().ok()) {
        let parts: Vec<&str> = v.split('-').collect();
        let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
        if parts.len() == 4
            && hex(parts[0], 2)
            && hex(parts[1], 32)
            && hex(parts[2], 16)
            && hex(parts[3], 2)
            && parts[1] != "00000000000000000000000000000000"
        {
            return v.to_ascii_lowercase();
        }
    }
    let trace = uuid::Uuid::new_v4().simple().to_string();
    let span = &uuid::Uuid::new_v4().simple().to_string()[..16];
    format!("00-{trace}-{span}-01")
}

/// The provider's own headers later stages need (content type, event
/// metadata). Never credentials or signatures: replay republishes inside
/// the hub and does not need them.
fn forwarded_headers(provider: Provider, h: &HeaderMap) -> Vec<(&'static str, String)> {
    let wanted: &[&'static str] = match provider {
        Provider::Deliveroo => &[
            "X-Deliveroo-Sequence-Guid",
            "X-Deliveroo-Payload-Type",
            "X-Deliveroo-Webhook-Version",
        ],
        Provider::Ubereats => &["X-Environment"],
        Provider::Direct => &["webhook-id", "webhook-timestamp"],
        Provider::Careem | Provider::Talabat | Provider::Wolt | Provider::Justeat => &[],
    };
    ["Content-Type", "User-Agent"]
        .iter()
        .chain(wanted)
        .filter_map(|name| {
            let v = h.get(*name)?.to_str().ok()?;
            let v: String = v.chars().filter(|c| !c.is_control()).take(512).collect();
            Some((*name, v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incoming(route: Route, body: &'static str) -> Incoming {
        Incoming {
            provider: Provider::Talabat,
            account: None,
            route,
            headers: HeaderMap::new(),
            peer: None,
            body: Bytes::from_static(body.as_bytes()),
        }
    }

    #[test]
    fn message_ids_separate_events_and_routes_but_not_resends() {
        let a = incoming(
            Route::TalabatOrder {
                remote_id: "r1".into(),
            },
            "{}",
        );
        let b = incoming(
            Route::TalabatOrder {
                remote_id: "r2".into(),
            },
            "{}",
        );
        let a2 = incoming(
            Route::TalabatOrder {
                remote_id: "r1".into(),
            },
            "{}",
        );
        let c = incoming(
            Route::TalabatOrder {
                remote_id: "r1".into(),
            },
            "{ }",
        );
        assert_eq!(message_id(&a, "acc", None), message_id(&a2, "acc", None));
        assert_ne!(message_id(&a, "acc", None), message_id(&b, "acc", None));
        assert_ne!(message_id(&a, "acc", None), message_id(&c, "acc", None));
        assert_ne!(
            message_id(&a, "acc", Some("e1")),
            message_id(&a, "acc", Some("e2"))
        );
        assert!(message_id(&a, "acc", Some("e1")).starts_with("talabat:acc:e1:"));
    }

    #[test]
    fn traceparent_is_kept_when_valid_and_made_otherwise() {
        let mut h = HeaderMap::new();
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        h.insert("traceparent", tp.parse().unwrap());
        assert_eq!(traceparent(&h), tp);
        h.insert("traceparent", "garbage".parse().unwrap());
        let made = traceparent(&h);
        assert_eq!(made.len(), 55);
        assert!(made.starts_with("00-") && made.ends_with("-01"));
    }

    #[test]
    fn credentials_and_signatures_are_never_forwarded() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer abc"),
            ("x-deliveroo-hmac-sha256", "ff"),
            ("x-deliveroo-sequence-guid", "g-1"),
            ("content-type", "application/json"),
            ("webhook-signature", "v1,xyz"),
        ] {
            h.insert(k, v.parse().unwrap());
        }
        let names: Vec<&str> = forwarded_headers(Provider::Deliveroo, &h)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["Content-Type", "X-Deliveroo-Sequence-Guid"]);
        let names: Vec<&str> = forwarded_headers(Provider::Direct, &h)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["Content-Type"]);
    }
}
