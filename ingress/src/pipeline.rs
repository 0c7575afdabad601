//! The request path: client budget → body → account → verify → allow-list
//! → provider rate → account rate → publish → answer. No database, no
//! parsing of the body beyond what a verifier needs for an event id.
//!
//! The order of checks is deliberate:
//! - the client address's budget for unauthenticated work ([`clients`])
//!   comes first, before the body is read; every refusal before the
//!   signature verified (401, 413, 408) is charged to it;
//! - the body limit (in the routes) before any work on the body;
//! - verification costs the same whoever the caller claims to be: an
//!   unknown account is verified against as many dummy secrets as the
//!   provider's account with the most secrets has (with the options of one
//!   of the provider's accounts, so Grab's and Keeta's schemes do their
//!   full work), and a bad signature on a known account with fewer is
//!   topped up with dummies to that count, so
//!   neither existence nor rotation shows in the time taken (issue 12);
//!   each scheme does one MAC per secret ([`crate::verify`]). Bodies of
//!   [`OFFLOAD_BODY_BYTES`] or more are verified on a blocking thread, at
//!   most a fixed number at a time, so hashing them never holds up the
//!   async workers that answer everyone else;
//! - Just Eat's event path segment is not signed, so it may not choose the
//!   event: a body that names its event decides it (a route that disagrees
//!   is a 401), any other body is accepted only on the event route the
//!   account was configured with, and the segment is not part of the
//!   message id ([`justeat_route`]);
//! - the allow-list and the provider's and account's rate limits apply only
//!   after the signature verified: unsigned traffic cannot use up a
//!   provider's quota, and neither 403 nor 429 tells an unsigned caller
//!   whether an account exists.
//!
//! [`clients`]: crate::clients

use std::borrow::Cow;
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
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use secrecy::SecretString;
use shared::Provider;
use shared::config::{Account, HubConfig, RateLimit};
use shared::headers;
use shared::live::{Derived, Generational, LiveConfig};
use tracing::{info, warn};
use warp::http::{HeaderMap, StatusCode};
use xxhash_rust::xxh3::Xxh3;

use crate::clients::{ChargeOutcome, ClientLimits};
use crate::net::{Client, NetSet, client_ip};
use crate::verify::{self, Verified, VerifyError, VerifyOptions};

/// A webhook request as the routes hand it over.
#[derive(Debug)]
pub struct Incoming {
    pub provider: Provider,
    /// `None`: the provider's default account (`/api/webhooks/{provider}`).
    pub account: Option<String>,
    pub route: Route,
    pub headers: HeaderMap,
    /// The client ([`Ingress::client_ip`]).
    pub client: Option<Client>,
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
    pub fn params(&self) -> impl Iterator<Item = (&'static str, &str)> {
        let pair = match self {
            Route::Generic => [None, None],
            Route::TalabatOrder { remote_id } => {
                [Some(("Orderhub-Path-Remoteid", remote_id)), None]
            }
            Route::TalabatStatus {
                remote_id,
                remote_order_id,
            } => [
                Some(("Orderhub-Path-Remoteid", remote_id)),
                Some(("Orderhub-Path-Remoteorderid", remote_order_id)),
            ],
            Route::JustEatEvent { event } => [Some(("Orderhub-Path-Event", event)), None],
        };
        pair.into_iter().flatten().map(|(n, v)| (n, v.as_str()))
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
        /// Whose limit: `client` (the address's budget for refusals),
        /// `provider` or `account`.
        limit: &'static str,
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

    /// The `reason` label: the verifier's error type for a 401, whose
    /// limit for a 429.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::Unauthorized(r) => r,
            Rejection::RateLimited { limit, .. } => limit,
            Rejection::Unavailable(_) => "publish_failed",
            _ => "none",
        }
    }

    /// Refused before the signature verified, so charged to the client
    /// address's budget for unauthenticated work.
    fn is_unauthenticated(&self) -> bool {
        matches!(
            self,
            Rejection::Unauthorized(_) | Rejection::TooLarge { .. } | Rejection::BodyTimeout
        )
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
    client_addresses: Gauge,
    client_limit_overflows: Counter,
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
            client_addresses: Gauge::default(),
            client_limit_overflows: Counter::default(),
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
        registry.register(
            "client_addresses",
            "Client addresses tracked by the budget for unauthenticated work (at the last sweep)",
            m.client_addresses.clone(),
        );
        registry.register(
            "client_limit_overflows",
            "Refusals not charged to their address because the budget tracked too many addresses",
            m.client_limit_overflows.clone(),
        );
        m
    }

    fn request(&self, provider: Provider, outcome: &'static str, reason: &'static str) -> Counter {
        self.requests
            .get_or_create(&RequestLabels {
                provider: provider.as_str(),
                outcome,
                reason,
            })
            .clone()
    }
}

/// One provider's series, looked up once at start rather than per request
/// (a family look-up hashes its labels under a lock).
struct ProviderMetrics {
    body_bytes: Histogram,
    duration: Histogram,
    accepted: Counter,
    duplicate: Counter,
}

impl ProviderMetrics {
    fn new(m: &Metrics, provider: Provider) -> Self {
        let labels = ProviderLabels {
            provider: provider.as_str(),
        };
        ProviderMetrics {
            body_bytes: m.body_bytes.get_or_create(&labels).clone(),
            duration: m.duration.get_or_create(&labels).clone(),
            accepted: m.request(provider, "accepted", "none"),
            duplicate: m.request(provider, "duplicate", "none"),
        }
    }
}

/// What the ingress keeps per provider for its whole run, indexed by
/// `Provider::index`: the provider's quota is a restart-only setting.
struct ProviderState {
    limit: DefaultDirectRateLimiter,
    metrics: ProviderMetrics,
}

/// A provider's accounts in one generation of the config.
struct ProviderAccounts {
    /// By account id.
    accounts: HashMap<String, AccountState>,
    /// The account `/api/webhooks/{provider}` addresses.
    default_account: Option<String>,
    /// The most secrets any of the provider's accounts has: every refusal
    /// costs this many secrets' verification.
    max_secrets: usize,
    /// The options an unknown account is verified with (against dummies):
    /// one of the provider's accounts' own, so that a scheme that needs an
    /// account setting (Grab's audience, Keeta's URL) does its full work.
    pad_options: VerifyOptions,
}

/// What the ingress precomputes from one generation of the hub config:
/// rebuilt before the first request after a reload, so accounts, their
/// secrets, allowed addresses and rate limits, tenants' signing secrets
/// and Grab token clients apply without a restart. An account's own rate
/// limiter starts full again after a reload.
pub(crate) struct Snapshot {
    generation: u64,
    pub(crate) hub: Arc<HubConfig>,
    /// Indexed by `Provider::index`.
    providers: Vec<ProviderAccounts>,
    /// Secrets nobody has, as many as the most any account, tenant or
    /// token client has.
    pub(crate) dummy_secrets: Arc<[SecretString]>,
    /// Every refusal of the status API costs this many secrets' work.
    pub(crate) max_tenant_secrets: usize,
    /// Grab's token endpoint's accounts.
    pub(crate) token: crate::token::TokenAccounts,
}

impl Generational for Snapshot {
    fn generation(&self) -> u64 {
        self.generation
    }
}

impl Snapshot {
    fn build(hub: Arc<HubConfig>, generation: u64) -> Snapshot {
        let providers = Provider::ALL
            .into_iter()
            .map(|p| ProviderAccounts {
                accounts: hub
                    .accounts
                    .iter()
                    .enumerate()
                    .filter(|(_, a)| a.provider == p)
                    .map(|(index, a)| (a.id.clone(), account_state(index, a)))
                    .collect(),
                default_account: hub.default_account(p).map(|a| a.id.clone()),
                max_secrets: hub
                    .accounts
                    .iter()
                    .filter(|a| a.provider == p)
                    .map(|a| a.secrets.len())
                    .max()
                    .unwrap_or(0)
                    .max(1),
                pad_options: hub
                    .accounts
                    .iter()
                    .find(|a| a.provider == p)
                    .map(VerifyOptions::for_account)
                    .unwrap_or_default(),
            })
            .collect::<Vec<ProviderAccounts>>();
        let token = crate::token::TokenAccounts::of(&hub);
        // The status API verifies with tenants' signing secrets, Grab's
        // token endpoint with client secrets: as many dummies as the most
        // of either, too.
        let max_tenant_secrets = max_tenant_secrets(&hub);
        let dummies = providers
            .iter()
            .map(|p| p.max_secrets)
            .chain([max_tenant_secrets, token.max_client_secrets])
            .max()
            .unwrap_or(1);
        Snapshot {
            generation,
            hub,
            providers,
            // Random, so they never match; `whsec_` and base64 (hex digits
            // are base64), so every scheme, `direct` included, does its full
            // work with them.
            dummy_secrets: (0..dummies)
                .map(|_| SecretString::from(format!("whsec_{}", uuid::Uuid::new_v4().simple())))
                .collect(),
            max_tenant_secrets,
            token,
        }
    }
}

struct AccountState {
    /// Index into `HubConfig::accounts`.
    index: usize,
    /// `webhooks.raw.<provider>.<account>`, made once.
    subject: async_nats::Subject,
    allowed: NetSet,
    options: VerifyOptions,
    limit: Option<DefaultDirectRateLimiter>,
}

pub(crate) fn limiter(r: RateLimit) -> DefaultDirectRateLimiter {
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
    /// The config; [`Ingress::snapshot`] follows its generation.
    live: LiveConfig,
    snapshot: Derived<Snapshot>,
    /// Publishes raw webhooks (and status commands), with
    /// `publish_timeout` as its ack timeout.
    pub(crate) publisher: jetstream::Context,
    webhooks: jetstream::stream::Stream,
    providers: Vec<ProviderState>,
    trusted: NetSet,
    clients: ClientLimits,
    clock: DefaultClock,
    /// Verifications of large bodies running on blocking threads.
    pub(crate) heavy_verifications: Arc<tokio::sync::Semaphore>,
    pub(crate) publish_timeout: Duration,
    /// False after a publish failed, until one succeeds: part of `/ready`.
    pub publishing: Arc<AtomicBool>,
    metrics: Metrics,
}

impl Ingress {
    /// An ingress on a config that never reloads.
    pub fn new(
        hub: Arc<HubConfig>,
        client: async_nats::Client,
        webhooks: jetstream::stream::Stream,
        registry: &mut Registry,
    ) -> Self {
        let live = LiveConfig::new(HubConfig::clone(&hub), "(in process)");
        Self::live(live, client, webhooks, registry)
    }

    /// An ingress that verifies each request with the config serving when
    /// it arrives.
    pub fn live(
        live: LiveConfig,
        client: async_nats::Client,
        webhooks: jetstream::stream::Stream,
        registry: &mut Registry,
    ) -> Self {
        let metrics = Metrics::register(registry);
        let hub = live.load();
        let limits = &hub.ingress.rate_limits;
        let providers = Provider::ALL
            .into_iter()
            .map(|p| ProviderState {
                limit: limiter(limits.for_provider(p).unwrap_or(DEFAULT_PROVIDER_LIMIT)),
                metrics: ProviderMetrics::new(&metrics, p),
            })
            .collect::<Vec<ProviderState>>();
        let publish_timeout = hub.ingress.publish_timeout;
        Ingress {
            trusted: NetSet::new(&hub.ingress.trusted_proxies),
            clients: ClientLimits::new(hub.ingress.unauthenticated_rate_limit),
            providers,
            clock: DefaultClock::default(),
            // One core short of all, so large bodies never take every core.
            heavy_verifications: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism()
                    .map_or(1, |n| n.get().saturating_sub(1))
                    .max(1),
            )),
            publisher: jetstream::ContextBuilder::new()
                .timeout(publish_timeout)
                .build(client),
            publish_timeout,
            publishing: Arc::new(AtomicBool::new(true)),
            metrics,
            snapshot: Derived::new(Snapshot::build(hub, live.generation())),
            live,
            webhooks,
        }
    }

    /// The accounts, tenants and secrets of the config serving now,
    /// rebuilt once per reload.
    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.get(&self.live, |hub, generation, _| {
            info!(
                generation,
                "ingress accounts rebuilt from the reloaded config"
            );
            Snapshot::build(hub, generation)
        })
    }

    pub fn max_body_bytes(&self) -> u64 {
        self.snapshot.peek().hub.ingress.max_body_bytes
    }

    /// The client: the peer, or behind a trusted proxy the forwarded
    /// address ([`client_ip`]).
    pub fn client_ip(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> Option<Client> {
        client_ip(peer, headers, &self.trusted)
    }

    /// Refuses an address that spent its budget for unauthenticated work,
    /// before its body is read.
    pub fn check_client(&self, client: Option<Client>) -> Result<(), Rejection> {
        match client.map(|c| self.clients.check(c.budget_key())) {
            Some(Err(retry_after)) => Err(Rejection::RateLimited {
                retry_after,
                limit: "client",
            }),
            _ => Ok(()),
        }
    }

    /// Charges a refusal before verification to the client's budget.
    pub(crate) fn charge_client(&self, client: Option<Client>, rejection: &Rejection) {
        if let Some(c) = client
            && rejection.is_unauthenticated()
            && self.clients.charge(c.budget_key()) == ChargeOutcome::Overflow
        {
            self.metrics.client_limit_overflows.inc();
        }
    }

    /// Forgets client addresses whose budget is full again (bounded
    /// memory); the ingress runs it every few seconds.
    pub fn sweep_clients(&self) {
        let tracked = self.clients.sweep();
        self.metrics.client_addresses.set(tracked as i64);
    }

    /// Records a request refused before it reached [`Ingress::accept`]
    /// (client over its budget, body too large or too slow).
    pub fn record_early(&self, provider: Provider, client: Option<Client>, rejection: &Rejection) {
        self.charge_client(client, rejection);
        self.metrics
            .request(provider, rejection.outcome(), rejection.reason())
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
        let p = &self.providers[provider.index()];
        let snapshot = self.snapshot();
        let accounts = &snapshot.providers[provider.index()];
        p.metrics.body_bytes.observe(req.body.len() as f64);
        let account_id = req
            .account
            .as_deref()
            .or(accounts.default_account.as_deref());
        let result = self
            .check_and_publish(&req, p, &snapshot, accounts, account_id)
            .await;
        if let Err(r) = &result {
            self.charge_client(req.client, r);
        }
        let (outcome, reason, status) = match &result {
            Ok(Accepted::New { .. }) => ("accepted", "none", 202),
            Ok(Accepted::Duplicate { .. }) => ("duplicate", "none", 200),
            Err(r) => (r.outcome(), r.reason(), r.status().as_u16()),
        };
        match &result {
            Ok(Accepted::New { .. }) => p.metrics.accepted.inc(),
            Ok(Accepted::Duplicate { .. }) => p.metrics.duplicate.inc(),
            Err(_) => self.metrics.request(provider, outcome, reason).inc(),
        };
        p.metrics.duration.observe(started.elapsed().as_secs_f64());
        let webhook_id = match &result {
            Ok(Accepted::New { webhook_id }) => Some(webhook_id.as_str()),
            Ok(Accepted::Duplicate { webhook_id }) => webhook_id.as_deref(),
            Err(_) => None,
        };
        // The account id is logged only once the request proved it knows
        // the account's secret.
        let account = match &result {
            Ok(_) => account_id,
            Err(
                Rejection::Forbidden | Rejection::RateLimited { .. } | Rejection::Unavailable(_),
            ) => account_id,
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
        p: &ProviderState,
        snapshot: &Arc<Snapshot>,
        accounts: &ProviderAccounts,
        account_id: Option<&str>,
    ) -> Result<Accepted, Rejection> {
        let provider = req.provider;
        let state = account_id.and_then(|id| accounts.accounts.get(id));
        let (verified, state) = self.verify(req, snapshot, accounts, state).await?;
        let account = &snapshot.hub.accounts[state.index];

        if !state.allowed.is_empty()
            && !req
                .client
                .and_then(Client::ip)
                .is_some_and(|ip| state.allowed.contains(ip))
        {
            return Err(Rejection::Forbidden);
        }
        let route = match provider {
            Provider::Justeat => {
                Cow::Owned(justeat_route(&req.route, &req.body, account.event.as_deref()).inspect_err(|_| {
                    warn!(provider = %provider, account = %account.id, "signed body on another event's route refused");
                })?)
            }
            _ => Cow::Borrowed(&req.route),
        };
        // Only verified requests draw on the provider's and the account's
        // quotas: unsigned junk must not make real webhooks answer 429.
        self.check_rate(&p.limit, "provider")?;
        if let Some(limit) = &state.limit {
            self.check_rate(limit, "account")?;
        }
        self.publish(
            req,
            &route,
            account,
            state,
            verified.event_id.as_deref(),
            snapshot.hub.ingress.trace_sample_percent,
        )
        .await
    }

    /// Verifies the request against the account's secrets (`state` `None`:
    /// an unknown account, against dummies), with the same work for every
    /// refusal ([`verify_padded`]); a large body on a blocking thread.
    async fn verify<'s>(
        &self,
        req: &Incoming,
        snapshot: &Arc<Snapshot>,
        p: &ProviderAccounts,
        state: Option<&'s AccountState>,
    ) -> Result<(Verified, &'s AccountState), Rejection> {
        let now = SystemTime::now();
        let (provider, pad_to) = (req.provider, p.max_secrets);
        let result = if req.body.len() < OFFLOAD_BODY_BYTES {
            let account = state.map(|s| (&snapshot.hub.accounts[s.index].secrets[..], &s.options));
            verify_padded(
                provider,
                &req.headers,
                &req.body,
                account,
                &p.pad_options,
                &snapshot.dummy_secrets,
                pad_to,
                now,
            )
        } else {
            let account = state.map(|s| (s.index, s.options.clone()));
            let pad_options = p.pad_options.clone();
            let _permit = self
                .heavy_verifications
                .acquire()
                .await
                .expect("the semaphore is never closed");
            let (hub, dummies) = (snapshot.hub.clone(), snapshot.dummy_secrets.clone());
            let (headers, body) = (req.headers.clone(), req.body.clone());
            tokio::task::spawn_blocking(move || {
                let account = account
                    .as_ref()
                    .map(|(i, o)| (&hub.accounts[*i].secrets[..], o));
                verify_padded(
                    provider,
                    &headers,
                    &body,
                    account,
                    &pad_options,
                    &dummies,
                    pad_to,
                    now,
                )
            })
            .await
            .map_err(|_| Rejection::Unavailable("verification did not finish".to_owned()))?
        };
        match (result, state) {
            (Ok(verified), Some(state)) => Ok((verified, state)),
            (_, None) => Err(Rejection::Unauthorized("unknown_account")),
            (Err(e), Some(state)) => {
                if e.is_misconfiguration() {
                    let account = &snapshot.hub.accounts[state.index];
                    warn!(provider = %provider, account = %account.id, error = %e, "account misconfigured");
                }
                Err(Rejection::Unauthorized(e.error_type()))
            }
        }
    }

    fn check_rate(
        &self,
        limit: &DefaultDirectRateLimiter,
        which: &'static str,
    ) -> Result<(), Rejection> {
        limit.check().map_err(|not_until| Rejection::RateLimited {
            retry_after: not_until.wait_time_from(self.clock.now()),
            limit: which,
        })
    }

    async fn publish(
        &self,
        req: &Incoming,
        route: &Route,
        account: &Account,
        state: &AccountState,
        event_id: Option<&str>,
        trace_sample_percent: u8,
    ) -> Result<Accepted, Rejection> {
        let webhook_id = uuid_string(uuid::Uuid::now_v7());
        let h = message_headers(
            req,
            route,
            account,
            event_id,
            &webhook_id,
            SystemTime::now(),
            trace_sample_percent,
        );
        // While disconnected the client would only buffer the publish and
        // the answer would be a 503 after the timeout anyway: say so now.
        if self.publisher.client().connection_state() != async_nats::connection::State::Connected {
            self.publishing.store(false, Ordering::Relaxed);
            return Err(Rejection::Unavailable("not connected to NATS".to_owned()));
        }
        let started = Instant::now();
        // One deadline for handing the message to the client (which waits
        // only when async-nats' in-flight ack limit or queue is full) and
        // for the PubAck. The context's own ack timer has the same length
        // and so never fires first.
        let publish = async {
            self.publisher
                .publish_with_headers(state.subject.clone(), h, req.body.clone())
                .await?
                .await
        };
        let ack = match tokio::time::timeout(self.publish_timeout, publish).await {
            Ok(Ok(ack)) => ack,
            Ok(Err(e)) => {
                self.publishing.store(false, Ordering::Relaxed);
                return Err(Rejection::Unavailable(e.to_string()));
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

/// The most signing secrets any tenant has (at least 1): every refusal of
/// the status API costs this many secrets' verification.
pub(crate) fn max_tenant_secrets(hub: &HubConfig) -> usize {
    hub.tenants
        .iter()
        .map(|t| t.signing_secrets.len())
        .max()
        .unwrap_or(0)
        .max(1)
}

fn account_state(index: usize, a: &Account) -> AccountState {
    AccountState {
        index,
        subject: shared::subjects::raw_webhook(a.provider, &a.id).into(),
        allowed: NetSet::new(&a.allowed_ips),
        options: VerifyOptions::for_account(a),
        limit: a.rate_limit.map(limiter),
    }
}

/// Bodies this large or larger are verified on a blocking thread. A MAC
/// over 64 KiB took ~57 µs, over 1 MiB ~1.2 ms (release build, SHA-NI;
/// DECISIONS.md): below this the hand-off to another thread and back is
/// not worth it, above it a few secrets' MACs would hold a worker for
/// milliseconds.
pub const OFFLOAD_BODY_BYTES: usize = 64 * 1024;

/// Verifies with `account`'s secrets and options, or, for an unknown account
/// (`None`), with `pad_to` dummy secrets and `pad_options`, whose result is
/// meaningless (they never match). A bad signature on a known account with fewer than
/// `pad_to` secrets is topped up with dummies to `pad_to` secrets' work,
/// so every refusal costs the same: an unknown account, an account with one
/// secret and one in rotation with two all take as long (issue 12, item 7).
#[allow(clippy::too_many_arguments)]
pub fn verify_padded(
    provider: Provider,
    headers: &HeaderMap,
    body: &[u8],
    account: Option<(&[SecretString], &VerifyOptions)>,
    pad_options: &VerifyOptions,
    dummies: &[SecretString],
    pad_to: usize,
    now: SystemTime,
) -> Result<Verified, VerifyError> {
    let verifier = verify::verifier(provider);
    let pad = |n: usize| &dummies[..n.min(dummies.len())];
    let Some((secrets, options)) = account else {
        let _ = verifier.verify(headers, body, pad(pad_to), pad_options, now);
        return Err(VerifyError::BadSignature);
    };
    let result = verifier.verify(headers, body, secrets, options, now);
    if result == Err(VerifyError::BadSignature) && secrets.len() < pad_to {
        let _ = verifier.verify(headers, body, pad(pad_to - secrets.len()), options, now);
    }
    result
}

/// The route a verified Just Eat request is accepted on, or a 401.
///
/// Its signature covers the body only, so the event path segment must not
/// choose what the body means (issue 12, item 3: a signed order re-sent to
/// `.../order-cancelled` became a cancellation). A partner body that names
/// its event (`"Event": "OrderRejected"`) decides it: on the bare account
/// URL the event is taken from it, and a route must name the same event
/// (`order-rejected`; `-sync`/`-async` variants included). Any other body
/// is accepted only on the route the account is bound to (`event` in its
/// configuration; none: the bare URL, where JET Connect posts and the
/// body's shape tells its kind).
pub fn justeat_route(route: &Route, body: &[u8], bound: Option<&str>) -> Result<Route, Rejection> {
    let mismatch = Rejection::Unauthorized("event_mismatch");
    let path = match route {
        Route::Generic => None,
        Route::JustEatEvent { event } => Some(event.as_str()),
        Route::TalabatOrder { .. } | Route::TalabatStatus { .. } => return Err(mismatch),
    };
    match (justeat_body_event(body), path) {
        (Some(event), None) => Ok(Route::JustEatEvent { event }),
        (Some(event), Some(path)) => {
            let same = path
                .strip_prefix(event.as_str())
                .is_some_and(|rest| ["", "-sync", "-async"].contains(&rest));
            if same {
                Ok(route.clone())
            } else {
                Err(mismatch)
            }
        }
        (None, path) if path == bound => Ok(route.clone()),
        (None, _) => Err(mismatch),
    }
}

/// The event a Just Eat partner body names in its top-level `Event`, as the
/// route segment it is sent to (`OrderRejected` → `order-rejected`); `None`
/// when there is none, or it is not a short alphanumeric name.
fn justeat_body_event(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Named {
        #[serde(rename = "Event")]
        event: Option<serde_json::Value>,
    }
    let named = serde_json::from_slice::<Named>(body).ok()?.event?;
    let name = named.as_str()?;
    if name.is_empty() || name.len() > 64 || !name.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let mut segment = String::with_capacity(name.len() + 8);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            segment.push('-');
        }
        segment.push(c.to_ascii_lowercase());
    }
    Some(segment)
}

/// The raw message's headers: `Nats-Msg-Id`, the hub headers, the path
/// parameters and the provider headers later stages read.
fn message_headers(
    req: &Incoming,
    route: &Route,
    account: &Account,
    event_id: Option<&str>,
    webhook_id: &str,
    received: SystemTime,
    trace_sample_percent: u8,
) -> async_nats::HeaderMap {
    use async_nats::{HeaderName, HeaderValue};
    // Static names and owned values: no copy of either per header.
    let name = HeaderName::from_static;
    let mut h = async_nats::HeaderMap::new();
    h.insert(
        name("Nats-Msg-Id"),
        HeaderValue::from(message_id(
            req.provider,
            route,
            &req.body,
            &account.id,
            event_id,
        )),
    );
    h.insert(name(headers::WEBHOOK_ID), webhook_id);
    h.insert(name(headers::PROVIDER), req.provider.as_str());
    h.insert(name(headers::ACCOUNT), account.id.as_str());
    h.insert(name(headers::TENANT), account.tenant.as_str());
    h.insert(
        name(headers::RECEIVED_AT),
        HeaderValue::from(shared::dlq::rfc3339(received)),
    );
    h.insert(
        name(headers::TRACEPARENT),
        HeaderValue::from(traceparent(&req.headers, trace_sample_percent)),
    );
    for (n, value) in route.params() {
        h.insert(name(n), value);
    }
    forward_headers(req.provider, &req.headers, &mut h);
    h
}

/// `Nats-Msg-Id`: the provider's event identity where it has one, plus a
/// hash of what the request says (method-specific route parameters and the
/// body), so a provider re-sending an event is stored once while two
/// different events that happen to share an id (or a body sent to two
/// routes) never swallow each other. Just Eat's event segment is left out:
/// the signature does not cover it, so the same signed body is one event
/// whichever event route brought it ([`justeat_route`]; issue 12). Keeta's
/// body is left out when it has a `messageId`: a re-send is re-signed.
///
/// The hash is XXH3-128, not a cryptographic hash: only a request that
/// verified against the account's secret gets here, and the account is part
/// of the id, so the only party that could craft a collision is the
/// account's own signer, who can drop its own events more simply by not
/// sending them. XXH3 costs ~0.1 µs on a 2 KiB body where SHA-256 cost
/// ~1.5 µs (BENCHMARKS.md).
pub fn message_id(
    provider: Provider,
    route: &Route,
    body: &[u8],
    account: &str,
    event_id: Option<&str>,
) -> String {
    let mut hash = Xxh3::new();
    let identifying = !matches!(route, Route::JustEatEvent { .. });
    for (name, value) in route.params().filter(|_| identifying) {
        hash.update(name.as_bytes());
        hash.update(&[0]);
        hash.update(value.as_bytes());
        hash.update(&[0]);
    }
    // Keeta's signed envelope carries its signing time, so a re-send may
    // differ from the first copy in `timestamp` and `sig` alone: its
    // `messageId` (unique per message [DOC], covered by the sig) is the
    // whole identity. The verifier admits only the documented envelope with
    // `messageId` all digits, so no other envelope signs the same string
    // with another `messageId` (review of issue 15, finding 4).
    if !(provider == Provider::Keeta && event_id.is_some()) {
        hash.update(body);
    }
    let digest = hash.digest128();
    let mut hex = [0u8; 32];
    hex::encode_to_slice(digest.to_be_bytes(), &mut hex).expect("32 hex digits for 16 bytes");
    let hex = std::str::from_utf8(&hex).expect("hex is ascii");
    let provider = provider.as_str();
    let mut id = String::with_capacity(
        provider.len() + account.len() + event_id.map_or(0, |e| e.len() + 1) + 34,
    );
    for part in [provider, ":", account, ":"] {
        id.push_str(part);
    }
    if let Some(event) = event_id {
        id.push_str(event);
        id.push(':');
    }
    id.push_str(hex);
    id
}

/// A UUID as hyphenated text without going through `fmt` (per request).
fn uuid_string(id: uuid::Uuid) -> String {
    let mut buf = uuid::Uuid::encode_buffer();
    id.hyphenated().encode_lower(&mut buf).to_owned()
}

/// The incoming W3C `traceparent` if well-formed, else a new trace.
///
/// A new trace is marked sampled (`-01`) with probability `sample_percent`
/// (decided from the trace id, so the same for everyone who sees it).
/// orderhub records no spans itself, but the restaurant's backend receives
/// this context with the order, and a parent-based sampler there (the
/// OpenTelemetry default) records only sampled ones. The cost of sampled:
/// nats-server parses every header of a message whose `traceparent` is
/// sampled, for its own message tracing (BENCHMARKS.md).
fn traceparent(h: &HeaderMap, sample_percent: u8) -> String {
    if let Some(v) = incoming_traceparent(h) {
        return v;
    }
    // Version-4 UUIDs are 122 random bits from a thread-local generator;
    // the fixed version and variant bits keep both ids non-zero (the span id
    // is the half with the variant bits).
    let trace = uuid::Uuid::new_v4();
    let sampled = trace.as_u128() % 100 < u128::from(sample_percent);
    let mut buf = uuid::Uuid::encode_buffer();
    let mut tp = String::with_capacity(55);
    tp.push_str("00-");
    tp.push_str(trace.simple().encode_lower(&mut buf));
    tp.push('-');
    tp.push_str(&uuid::Uuid::new_v4().simple().encode_lower(&mut buf)[16..]);
    tp.push_str(if sampled { "-01" } else { "-00" });
    tp
}

/// The request's W3C `traceparent`, lowercased, if it is well-formed.
pub(crate) fn incoming_traceparent(h: &HeaderMap) -> Option<String> {
    let v = h.get("traceparent")?.to_str().ok()?;
    let mut parts = v.split('-');
    fn hex(s: Option<&str>, n: usize) -> Option<&str> {
        s.filter(|s| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit()))
    }
    match (
        hex(parts.next(), 2),
        hex(parts.next(), 32),
        hex(parts.next(), 16),
        hex(parts.next(), 2),
        parts.next(),
    ) {
        (Some(_), Some(trace), Some(_), Some(_), None)
            if trace != "00000000000000000000000000000000" =>
        {
            Some(v.to_ascii_lowercase())
        }
        _ => None,
    }
}

/// Copies the provider's own headers later stages need (content type, event
/// metadata) into `out`. Never credentials or signatures: replay republishes
/// inside the hub and does not need them.
fn forward_headers(provider: Provider, h: &HeaderMap, out: &mut async_nats::HeaderMap) {
    let wanted: &[&'static str] = match provider {
        Provider::Deliveroo => &[
            "X-Deliveroo-Sequence-Guid",
            "X-Deliveroo-Payload-Type",
            "X-Deliveroo-Webhook-Version",
        ],
        Provider::Ubereats => &["X-Environment"],
        Provider::Direct => &["webhook-id", "webhook-timestamp"],
        Provider::Careem
        | Provider::Talabat
        | Provider::Wolt
        | Provider::Justeat
        | Provider::Doordash
        | Provider::Glovo
        | Provider::Grab
        | Provider::Keeta => &[],
    };
    for name in ["Content-Type", "User-Agent"].iter().chain(wanted) {
        let Some(v) = h.get(*name).and_then(|v| v.to_str().ok()) else {
            continue;
        };
        // `to_str` already refused anything but visible ASCII and tabs.
        let v = if v.len() <= 512 && !v.contains('\t') {
            v.to_owned()
        } else {
            v.chars().filter(|c| !c.is_control()).take(512).collect()
        };
        out.insert(async_nats::HeaderName::from_static(name), v.as_str());
    }
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
            client: None,
            body: Bytes::from_static(body.as_bytes()),
        }
    }

    fn mid(req: &Incoming, account: &str, event_id: Option<&str>) -> String {
        message_id(req.provider, &req.route, &req.body, account, event_id)
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
        assert_eq!(mid(&a, "acc", None), mid(&a2, "acc", None));
        assert_ne!(mid(&a, "acc", None), mid(&b, "acc", None));
        assert_ne!(mid(&a, "acc", None), mid(&c, "acc", None));
        assert_ne!(mid(&a, "acc", Some("e1")), mid(&a, "acc", Some("e2")));
        assert!(mid(&a, "acc", Some("e1")).starts_with("talabat:acc:e1:"));
    }

    /// Issue 12, item 3: the same signed Just Eat body is one event whichever
    /// event route it came by; Talabat's path parameters still count.
    #[test]
    fn justeat_message_ids_leave_the_event_segment_out() {
        let body = br#"{"OrderId":"r4p-1"}"#;
        let id = |route: Route| message_id(Provider::Justeat, &route, body, "acc", None);
        let event = |e: &str| Route::JustEatEvent { event: e.into() };
        let first = id(event("order-ready-for-preparation-sync"));
        assert_eq!(id(event("order-cancelled")), first);
        assert_eq!(id(Route::Generic), first);
        assert_ne!(
            message_id(Provider::Justeat, &Route::Generic, b"{}", "acc", None),
            first
        );
    }

    /// Issue 12, item 3.
    #[test]
    fn a_justeat_event_comes_from_the_body_or_the_accounts_binding() {
        let event = |e: &str| Route::JustEatEvent { event: e.into() };
        let mismatch = Err(Rejection::Unauthorized("event_mismatch"));
        let rejected = br#"{"Event":"OrderRejected","OrderId":"r4p-1"}"#;
        // The body names its event: a route must agree; the bare URL takes it.
        for bound in [None, Some("order-ready-for-preparation-sync")] {
            assert_eq!(
                justeat_route(&event("order-rejected"), rejected, bound),
                Ok(event("order-rejected"))
            );
            assert_eq!(
                justeat_route(&Route::Generic, rejected, bound),
                Ok(event("order-rejected"))
            );
            assert_eq!(
                justeat_route(&event("order-cancelled"), rejected, bound),
                mismatch
            );
        }
        let ready = br#"{"Event":"OrderReadyForPreparation","OrderId":"r4p-1"}"#;
        for route in [
            "order-ready-for-preparation-sync",
            "order-ready-for-preparation-async",
        ] {
            assert_eq!(justeat_route(&event(route), ready, None), Ok(event(route)));
        }
        assert_eq!(
            justeat_route(&event("order-ready-for-preparation-later"), ready, None),
            mismatch
        );
        // It does not: only the account's own route.
        let silent = br#"{"OrderId":"r4p-1","Items":[]}"#;
        let bound = Some("order-ready-for-preparation-sync");
        assert_eq!(
            justeat_route(&event("order-ready-for-preparation-sync"), silent, bound),
            Ok(event("order-ready-for-preparation-sync"))
        );
        for route in [
            event("order-cancelled"),
            event("order-ready-for-preparation-async"),
            Route::Generic,
        ] {
            assert_eq!(justeat_route(&route, silent, bound), mismatch, "{route:?}");
        }
        // An unbound account (JET Connect) takes the bare URL only.
        assert_eq!(
            justeat_route(&Route::Generic, silent, None),
            Ok(Route::Generic)
        );
        assert_eq!(
            justeat_route(&event("order-cancelled"), silent, None),
            mismatch
        );
        // A name that is not a plain word does not count as one.
        for odd in [
            &br#"{"Event":"order rejected","OrderId":"x"}"#[..],
            br#"{"Event":7}"#,
            br#"{"Event":""}"#,
            b"not json",
        ] {
            assert_eq!(justeat_route(&event("order-rejected"), odd, None), mismatch);
        }
    }

    /// Issue 12, items 1 and 7: every refusal costs the work of the
    /// provider's largest secret list, known account or not.
    #[test]
    fn every_refusal_costs_the_largest_accounts_work() {
        let secret = |s: &str| SecretString::from(s.to_owned());
        let (one, two) = (
            vec![secret("whsec_b25lLXNlY3JldA==")],
            vec![
                secret("whsec_b2xkLXNlY3JldA=="),
                secret("whsec_bmV3LXNlY3JldA=="),
            ],
        );
        let dummies: Vec<SecretString> = (0..3).map(|_| secret("whsec_ZHVtbXktc2VjcmV0")).collect();
        let body = b"{}";
        let at = SystemTime::now();
        let forged = verify::direct::sign(body, &secret("whsec_Zm9yZ2Vy"), "msg_1", at).unwrap();
        let genuine = verify::direct::sign(body, &two[1], "msg_1", at).unwrap();
        let opts = VerifyOptions::default();
        let work = |headers: &HeaderMap, account: Option<&[SecretString]>| {
            let before = verify::macs_on_this_thread();
            let result = verify_padded(
                Provider::Direct,
                headers,
                body,
                account.map(|s| (s, &opts)),
                &opts,
                &dummies,
                3,
                at,
            );
            (
                result.map(|v| v.secret_index),
                verify::macs_on_this_thread() - before,
            )
        };
        let refused = (Err(VerifyError::BadSignature), 3);
        assert_eq!(work(&forged, None), refused);
        assert_eq!(work(&forged, Some(&one)), refused);
        assert_eq!(work(&forged, Some(&two)), refused);
        // A genuine request costs only what finding its secret costs.
        assert_eq!(work(&genuine, Some(&two)), (Ok(1), 2));
    }

    /// The same for the schemes that need an account setting: an unknown
    /// account is verified with a real account's options (Grab's audience,
    /// Keeta's URL), so it does the full work rather than stopping at the
    /// missing setting.
    #[test]
    fn every_refusal_costs_the_same_for_the_new_schemes_too() {
        use std::sync::Arc as StdArc;
        let secret = |s: &str| SecretString::from(s.to_owned());
        let options = |p: Provider| match p {
            Provider::Grab => VerifyOptions {
                grab: Some(StdArc::new(verify::grab::Audience {
                    account: "acme-grab".into(),
                    client_id: "acme-grab-client".into(),
                    token_lifetime: Duration::from_secs(3600),
                })),
                ..VerifyOptions::default()
            },
            Provider::Keeta => VerifyOptions {
                webhook_url: Some("https://hub.example/api/webhooks/keeta/acme-keeta".into()),
                ..VerifyOptions::default()
            },
            _ => VerifyOptions::default(),
        };
        let one = vec![secret("the-accounts-only-secret-0123456789")];
        let dummies: Vec<SecretString> = (0..3)
            .map(|_| secret("dummy-secret-0123456789abcdef"))
            .collect();
        let at = SystemTime::now();
        // Keeta's documented envelope (any other is refused unhashed).
        let unsigned = br#"{"eventId":1001,"appId":1,"messageId":"1","shopId":1,"message":"{}","timestamp":0}"#;
        for p in [
            Provider::Doordash,
            Provider::Glovo,
            Provider::Grab,
            Provider::Keeta,
        ] {
            let opts = options(p);
            let forged = verify::verifier(p)
                .sign(
                    unsigned,
                    &secret("forger-secret-0123456789abcdef"),
                    &opts,
                    at,
                )
                .unwrap();
            let body = forged.body(unsigned).to_vec();
            let work = |account: Option<&[SecretString]>| {
                let before = verify::macs_on_this_thread();
                let result = verify_padded(
                    p,
                    &forged.headers,
                    &body,
                    account.map(|s| (s, &opts)),
                    &opts,
                    &dummies,
                    3,
                    at,
                );
                (result, verify::macs_on_this_thread() - before)
            };
            let refused = (Err(VerifyError::BadSignature), 3);
            assert_eq!(work(None), refused, "{p}: unknown account");
            assert_eq!(work(Some(&one)), refused, "{p}: one secret");
        }
    }

    /// Message ids are what deduplicates a provider's re-send, also across
    /// a rolling upgrade where the first copy came through the old version:
    /// changing how they are made must be a deliberate, noted decision.
    /// The digests are XXH3-128 in its canonical (big-endian) hex, as other
    /// implementations print it (e.g. Python's `xxhash.xxh3_128_hexdigest`).
    /// A Keeta re-send is the same message with a new `timestamp` and
    /// `sig`: one id. Without a `messageId` the body decides, as elsewhere.
    #[test]
    fn keeta_message_ids_are_the_message_id() {
        let id = |body: &[u8], event: Option<&str>| {
            message_id(Provider::Keeta, &Route::Generic, body, "acc", event)
        };
        let first = br#"{"sig":"aa","messageId":"m-1","timestamp":1}"#;
        let resent = br#"{"sig":"bb","messageId":"m-1","timestamp":61}"#;
        assert_eq!(id(first, Some("m-1")), id(resent, Some("m-1")));
        assert_ne!(id(first, Some("m-1")), id(first, Some("m-2")));
        assert!(id(first, Some("m-1")).starts_with("keeta:acc:m-1:"));
        assert_ne!(id(first, None), id(resent, None));
    }

    #[test]
    fn message_ids_are_stable_across_releases() {
        let mut a = incoming(Route::Generic, r#"{"order_id":"A-1"}"#);
        a.provider = Provider::Careem;
        assert_eq!(
            mid(&a, "acc", None),
            "careem:acc:d3c1f7e9ce53a89dc50c18e50141b5c1"
        );
        let b = incoming(
            Route::TalabatOrder {
                remote_id: "r1".into(),
            },
            "{}",
        );
        assert_eq!(
            mid(&b, "acc", Some("e1")),
            "talabat:acc:e1:3d1f4e99ffb5f6e0b29b1c2db345560a"
        );
    }

    #[test]
    fn traceparent_is_kept_when_valid_and_made_otherwise() {
        let mut h = HeaderMap::new();
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        h.insert("traceparent", tp.parse().unwrap());
        assert_eq!(traceparent(&h, 0), tp);
        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        h.insert("traceparent", unsampled.parse().unwrap());
        assert_eq!(traceparent(&h, 100), unsampled);
        for bad in [
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            h.insert("traceparent", bad.parse().unwrap());
            let made = traceparent(&h, 100);
            assert_eq!(made.len(), 55, "{bad} -> {made}");
            assert!(made.starts_with("00-") && made.ends_with("-01"), "{made}");
            assert_ne!(&made[3..35], "00000000000000000000000000000000");
            assert!(traceparent(&h, 0).ends_with("-00"));
        }
        let sampled = (0..1000)
            .filter(|_| traceparent(&h, 30).ends_with("-01"))
            .count();
        assert!((200..400).contains(&sampled), "{sampled} of 1000 at 30%");
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
        let forwarded = |provider| {
            let mut out = async_nats::HeaderMap::new();
            forward_headers(provider, &h, &mut out);
            let mut names: Vec<String> = out.iter().map(|(n, _)| n.to_string()).collect();
            names.sort();
            names
        };
        assert_eq!(
            forwarded(Provider::Deliveroo),
            ["Content-Type", "X-Deliveroo-Sequence-Guid"]
        );
        assert_eq!(forwarded(Provider::Direct), ["Content-Type"]);
    }
}
