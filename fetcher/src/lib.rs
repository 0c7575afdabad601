//! orderhub's fetcher: Uber Eats and Wolt never push an order, they notify;
//! this stage fetches each notified order from the provider's API and puts
//! it in the pipeline, where the transformer converts it like a pushed one.
//!
//! # Contract
//! - Consumes the notifications of providers that send notifications only
//!   (`webhooks.raw.ubereats.>`, `webhooks.raw.wolt.>` in `WEBHOOKS`)
//!   through the durable pull consumer `fetcher`, with the shared worker
//!   loop and the `[fetcher]` retry schedule (seconds, not minutes).
//! - Reads which order the notification names ([`notification`]), gets the
//!   account's API token from the fleet-shared token store
//!   ([`shared::tokens`]), and `GET`s the order from the account's
//!   configured `base_url` (never from the notification's href).
//! - Publishes the provider's answer unchanged to
//!   `webhooks.fetched.<provider>.<account>` with the notification's
//!   headers, `Orderhub-Notification-Event`, `Orderhub-Fetched-Api`,
//!   `Orderhub-Fetched-From` and `Nats-Msg-Id: fetched:<webhook_id>`, awaits
//!   JetStream's ack, and only then acks the notification. A fetcher killed
//!   between the two fetches again; the second publish is dropped by the
//!   stream's duplicate window, so the order arrives once.
//! - Answers: 2xx published; 401 renews the token once (only if no other
//!   request or replica already did) and tries once more, a second 401 is
//!   `provider_unauthorized`; 403 `provider_forbidden`; 404 retried
//!   `[fetcher] not_found_retries` times (a new order may not be readable
//!   yet), then dead-lettered as `order_not_found`; 429 retried after its
//!   `Retry-After`; 408 and 5xx, timeouts and unreachable APIs retried;
//!   other 4xx and redirects dead-lettered. A new order whose notification
//!   is older than the account's `fetch_deadline` (Uber Eats 11.5 min, Wolt
//!   3 min: the provider cancels it unanswered) is dead-lettered as
//!   `fetch_deadline_passed` instead of fetched; a replay counts from the
//!   replay. Cancellations and updates have no deadline.
//! - Outcomes ([`shared::outcome`], `OUTCOMES`): a `fetched` step (the
//!   order id, the GET's duration) is sent with the fetched order's publish
//!   and its ack awaited with that one's, within `publish_timeout`, before
//!   the notification is acked; not stored: retried like a failed publish
//!   (`outcome_publish_failures` counts it).
//! - Config ([`shared::live`]): each notification is fetched with the
//!   accounts (added, removed, their `[account.api]` and credentials) of
//!   the config serving when it arrives; the `[fetcher]` schedule and the
//!   `[provider_api]` settings need a restart.
//! - Both the notification (fetcher dead letters) and the fetched body
//!   (transformer dead letters) stay replayable from the DLQ.
//! - Metrics (prefix `fetcher_`): the worker loop's, plus `fetches` by
//!   provider and outcome and `fetch_duration_seconds` by provider; the
//!   token store's `provider_token_*`.

pub mod notification;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_nats::HeaderMap;
use async_nats::jetstream;
use bytes::Bytes;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use shared::Provider;
use shared::app::{StageError, StageSpec};
use shared::config::{CommonArgs, HubConfig, OrderApi};
use shared::failure::{FailureClass, classify_publish};
use shared::headers;
use shared::live::{Derived, Generational, LiveConfig};
use shared::outbound::OutboundPolicy;
use shared::outcome::{self, PublishFailures, Step};
use shared::tokens::{AccessToken, Credential, LazyTokenStore, TokenKey, TokenMetrics, TokenStore};
use shared::worker::{Delivery, Failure, Handler, Outcome};
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use notification::{Kind, Plan, PlanError};

/// The stage: its consumer, the streams and the bucket it uses.
pub const SPEC: StageSpec = StageSpec {
    stage: "fetcher",
    stream: "WEBHOOKS",
    durable: "fetcher",
    streams: &["WEBHOOKS", "DLQ", "ADVISORIES", "OUTCOMES"],
    buckets: &[shared::streams::TOKENS_BUCKET],
};

/// The `Nats-Msg-Id` of the order fetched for notification `webhook_id`.
pub fn fetched_msg_id(webhook_id: &str) -> String {
    format!("fetched:{webhook_id}")
}

/// How the stage runs, beyond the common flags and the hub file.
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
            concurrency: 64,
            publish_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    provider: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: &'static str,
}

/// The outcomes a fetch can have, besides `fetched`.
const FETCH_CLASSES: [FailureClass; 12] = [
    FailureClass::OrderNotFound,
    FailureClass::FetchDeadlinePassed,
    FailureClass::Provider429,
    FailureClass::Provider5xx,
    FailureClass::ProviderUnauthorized,
    FailureClass::ProviderForbidden,
    FailureClass::ProviderRejected,
    FailureClass::ProviderAddressRefused,
    FailureClass::ProviderTimeout,
    FailureClass::ProviderUnreachable,
    FailureClass::MessageTooLarge,
    FailureClass::FetchRequired,
];

/// The fetcher's own metrics.
#[derive(Clone)]
pub struct Metrics {
    fetches: Family<OutcomeLabels, Counter>,
    duration: Family<ProviderLabels, Histogram>,
}

impl Metrics {
    /// Registers under `registry` (already prefixed `fetcher_`).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Metrics {
            fetches: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(shared::telemetry::duration_buckets())
            }),
        };
        registry.register(
            "fetches",
            "Order fetches from provider APIs, by provider and outcome (fetched, or the failure class)",
            m.fetches.clone(),
        );
        registry.register(
            "fetch_duration_seconds",
            "Time of one order request to a provider's API, token included",
            m.duration.clone(),
        );
        for p in Provider::ALL
            .into_iter()
            .filter(|p| p.sends_notifications_only())
        {
            let provider = p.as_str();
            let _ = m.fetches.get_or_create(&OutcomeLabels {
                provider,
                outcome: "fetched",
            });
            for class in FETCH_CLASSES {
                let _ = m.fetches.get_or_create(&OutcomeLabels {
                    provider,
                    outcome: class.as_str(),
                });
            }
        }
        m
    }

    fn fetched(&self, provider: Provider, outcome: &'static str, took: Option<Duration>) {
        let provider = provider.as_str();
        self.fetches
            .get_or_create(&OutcomeLabels { provider, outcome })
            .inc();
        if let Some(took) = took {
            self.duration
                .get_or_create(&ProviderLabels { provider })
                .observe(took.as_secs_f64());
        }
    }
}

/// An account the fetcher can fetch for.
struct ApiAccount {
    credential: Credential,
    api: shared::config::ProviderApi,
}

/// What the fetcher needs besides NATS, checked before it connects: every
/// account's credential and the HTTP client.
pub struct Prepared {
    hub: Arc<HubConfig>,
    /// The config to follow after start ([`Prepared::follow`]); `None`:
    /// `hub` for the whole run.
    live: Option<LiveConfig>,
    accounts: HashMap<(Provider, String), ApiAccount>,
    http: reqwest::Client,
    outbound: OutboundPolicy,
    token_key: Option<TokenKey>,
    /// The token store, once the handler opened it; shared with [`run`]
    /// so that shutdown waits for refreshes under way.
    tokens: Arc<OnceCell<TokenStore>>,
}

/// Why the fetcher cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("account {account}.api: {message}")]
    Account { account: String, message: String },
    #[error("TOKEN_STORE_KEY is required when an account has [account.api]: {0}")]
    NoTokenKey(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

impl Prepared {
    /// `token_key` is the key from `TOKEN_STORE_KEY`(`_FILE`), or why it
    /// could not be read; it is needed only when an Uber Eats or Wolt
    /// account has `[account.api]`.
    pub fn new(
        hub: Arc<HubConfig>,
        token_key: Result<TokenKey, String>,
    ) -> Result<Self, SetupError> {
        let mut accounts = HashMap::new();
        for a in hub
            .accounts
            .iter()
            .filter(|a| a.provider.sends_notifications_only())
        {
            let Some(api) = a.api.clone() else { continue };
            let credential =
                Credential::new(a.provider, &a.id, &api).map_err(|e| SetupError::Account {
                    account: a.id.clone(),
                    message: e.to_string(),
                })?;
            accounts.insert((a.provider, a.id.clone()), ApiAccount { credential, api });
        }
        let token_key = match token_key {
            Ok(k) => Some(k),
            Err(_) if accounts.is_empty() => None,
            Err(why) => return Err(SetupError::NoTokenKey(why)),
        };
        let settings = &hub.provider_api;
        let outbound = OutboundPolicy::new(settings.allowed_private_destinations.clone());
        let http = outbound
            .client_builder()
            .user_agent(concat!("orderhub-fetcher/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SetupError::Client(e.to_string()))?;
        for (provider, account) in accounts.keys() {
            let api = &accounts[&(*provider, account.clone())].api;
            if let Err(refused) = outbound.check_url(&api.base_url) {
                warn!(
                    %provider,
                    account,
                    %refused,
                    "the account's API address is refused by the outbound policy: its orders will be dead-lettered as provider_address_refused"
                );
            }
        }
        Ok(Prepared {
            hub,
            live: None,
            accounts,
            http,
            outbound,
            token_key,
            tokens: Arc::new(OnceCell::new()),
        })
    }
}

impl Prepared {
    /// Follows `live` after start: each notification is fetched with the
    /// accounts and API settings of the config serving when it arrives.
    /// `live` must be the config this was prepared with.
    pub fn follow(mut self, live: LiveConfig) -> Self {
        self.live = Some(live);
        self
    }

    fn live(&self) -> LiveConfig {
        self.live
            .clone()
            .unwrap_or_else(|| LiveConfig::new(HubConfig::clone(&self.hub), "(in process)"))
    }
}

/// The API accounts of a config; an account whose credential cannot be
/// built after a reload is logged and left out (its notifications are
/// dead-lettered as `fetch_required`), the others apply.
fn api_accounts_of(hub: &HubConfig) -> HashMap<(Provider, String), ApiAccount> {
    let mut accounts = HashMap::new();
    for a in hub
        .accounts
        .iter()
        .filter(|a| a.provider.sends_notifications_only())
    {
        let Some(api) = a.api.clone() else { continue };
        match Credential::new(a.provider, &a.id, &api) {
            Ok(credential) => {
                accounts.insert((a.provider, a.id.clone()), ApiAccount { credential, api });
            }
            Err(e) => {
                warn!(provider = %a.provider, account = a.id, error = %e, "the reloaded account's API credential is refused; its notifications will be dead-lettered");
            }
        }
    }
    accounts
}

/// The accounts of one generation of the config.
struct Accounts {
    generation: u64,
    hub: Arc<HubConfig>,
    api: HashMap<(Provider, String), ApiAccount>,
}

impl Generational for Accounts {
    fn generation(&self) -> u64 {
        self.generation
    }
}

/// The stage's handler.
pub struct Fetcher {
    /// The config at start, for what only a restart changes (the
    /// `[fetcher]` and `[provider_api]` sections).
    hub: Arc<HubConfig>,
    live: LiveConfig,
    accounts: Derived<Accounts>,
    js: jetstream::Context,
    http: reqwest::Client,
    outbound: OutboundPolicy,
    tokens: LazyTokenStore,
    metrics: Metrics,
    publish_timeout: Duration,
    outcomes: outcome::Publisher,
}

impl Fetcher {
    pub fn new(
        prepared: Prepared,
        js: jetstream::Context,
        registry: &mut Registry,
        publish_timeout: Duration,
    ) -> Self {
        let metrics = Metrics::register(registry);
        let outcomes = outcome::Publisher::counted(
            js.clone(),
            publish_timeout,
            PublishFailures::register(registry),
        );
        let live = prepared.live();
        let token_metrics = TokenMetrics::register(registry);
        token_metrics.start_at_zero(prepared.accounts.values().map(|a| &a.credential));
        let tokens = LazyTokenStore::new(
            js.clone(),
            prepared.token_key,
            prepared.tokens,
            &prepared.hub.provider_api,
            token_metrics,
            (
                FailureClass::FetchRequired,
                "no TOKEN_STORE_KEY: the fetcher cannot keep provider tokens",
            ),
        );
        Fetcher {
            accounts: Derived::new(Accounts {
                generation: live.generation(),
                hub: live.load(),
                api: prepared.accounts,
            }),
            live,
            hub: prepared.hub,
            js,
            http: prepared.http,
            outbound: prepared.outbound,
            tokens,
            metrics,
            publish_timeout,
            outcomes,
        }
    }

    /// The accounts of the config serving now, rebuilt once per reload.
    fn accounts(&self) -> Arc<Accounts> {
        self.accounts.get(&self.live, |hub, generation, _| {
            info!(
                generation,
                "fetcher accounts rebuilt from the reloaded config"
            );
            Accounts {
                generation,
                api: api_accounts_of(&hub),
                hub,
            }
        })
    }

    async fn tokens(&self) -> Result<&TokenStore, Failure> {
        self.tokens.get().await
    }

    /// The whole fetch of one notification.
    async fn fetch(&self, d: &Delivery) -> Result<(), Outcome> {
        let dead = |class, message: String| Outcome::DeadLetter(Failure::new(class, message));
        let provider: Provider = d.provider.parse().map_err(|_| {
            dead(
                FailureClass::UnknownProvider,
                format!(
                    "provider {:?} is unknown",
                    shared::redact::truncate(&d.provider, 64)
                ),
            )
        })?;
        let account_id = d
            .header(headers::ACCOUNT)
            .or_else(|| shared::subjects::token(&d.subject, 3))
            .ok_or_else(|| {
                dead(
                    FailureClass::MissingHeader,
                    format!("{} is missing", headers::ACCOUNT),
                )
            })?;
        let webhook_id = d.webhook_id.as_deref().ok_or_else(|| {
            dead(
                FailureClass::MissingHeader,
                format!("{} is missing", headers::WEBHOOK_ID),
            )
        })?;
        let accounts = self.accounts();
        let Some(account) = accounts.hub.account(provider, account_id) else {
            return Err(dead(
                FailureClass::UnknownAccount,
                format!(
                    "{provider} account {:?} is not in the fetcher's config",
                    shared::redact::truncate(account_id, 64)
                ),
            ));
        };
        let Some(target) = accounts.api.get(&(provider, account.id.clone())) else {
            return Err(dead(
                FailureClass::FetchRequired,
                format!(
                    "{provider} account {} has no [account.api]: configure its API credentials, then replay",
                    account.id
                ),
            ));
        };
        let plan =
            notification::plan(provider, &d.payload, target.api.order_api).map_err(
                |e| match e {
                    PlanError::Invalid(_) => dead(FailureClass::InvalidPayload, e.to_string()),
                    PlanError::Unsupported { .. } => {
                        dead(FailureClass::UnsupportedEvent, e.to_string())
                    }
                },
            )?;
        if let (Some(want), Some(got)) = (&target.api.venue_id, &plan.venue_id)
            && want != got
        {
            return Err(dead(
                FailureClass::InvalidPayload,
                format!(
                    "the notification names venue {:?}; account {} is bound to venue {want:?}",
                    shared::redact::truncate(got, 64),
                    account.id
                ),
            ));
        }
        if let Some(late) = self.past_deadline(provider, d, target, &plan) {
            return Err(late);
        }
        let started = Instant::now();
        let answer = self.get(target, &plan, d.delivered).await;
        let took = started.elapsed();
        let body = match answer {
            Ok(body) => {
                self.metrics
                    .fetched(provider, "fetched", Some(started.elapsed()));
                body
            }
            Err(outcome) => {
                if let Outcome::Retry(f) | Outcome::DeadLetter(f) = &outcome {
                    self.metrics
                        .fetched(provider, f.class.as_str(), Some(started.elapsed()));
                }
                return Err(outcome);
            }
        };
        // Getting a token may have waited on another replica's lease: an
        // order the provider has cancelled meanwhile is not passed on.
        if let Some(late) = self.past_deadline(provider, d, target, &plan) {
            return Err(late);
        }
        let mut step = Step::about(
            outcome::Stage::Fetcher,
            outcome::Kind::Fetched,
            provider,
            d,
            true,
        );
        step.account = Some(&account.id);
        step.provider_order_id = Some(&plan.order_id);
        step.duration_ms = Some(u64::try_from(took.as_millis()).unwrap_or(u64::MAX));
        // Sent first, awaited after the order's publish: one round trip.
        let sent = self.outcomes.send(&step).await;
        let published = self
            .publish(d, provider, &account.id, webhook_id, &plan, body)
            .await;
        let recorded = match sent {
            Ok(pending) => pending.wait().await,
            Err(f) => Err(f),
        };
        published.and(recorded).map_err(|f| {
            if f.class.is_permanent() {
                Outcome::DeadLetter(f)
            } else {
                Outcome::Retry(f)
            }
        })
    }

    /// A new order whose notification is older than the account's
    /// `fetch_deadline`: dead-lettered, not fetched or passed on.
    fn past_deadline(
        &self,
        provider: Provider,
        d: &Delivery,
        target: &ApiAccount,
        plan: &Plan,
    ) -> Option<Outcome> {
        if plan.kind != Kind::New {
            return None;
        }
        let age = SystemTime::now()
            .duration_since(d.published)
            .unwrap_or_default();
        if age <= target.api.fetch_deadline {
            return None;
        }
        self.metrics
            .fetched(provider, FailureClass::FetchDeadlinePassed.as_str(), None);
        Some(Outcome::DeadLetter(Failure::new(
            FailureClass::FetchDeadlinePassed,
            format!(
                "new {provider} order {} was notified {}s ago, past the account's fetch_deadline of {}s: the provider cancels orders left unanswered that long",
                plan.order_id,
                age.as_secs(),
                target.api.fetch_deadline.as_secs()
            ),
        )))
    }

    /// `GET`s the order with the account's token; one more try with a
    /// renewed token after a 401.
    async fn get(
        &self,
        target: &ApiAccount,
        plan: &Plan,
        delivered: i64,
    ) -> Result<Bytes, Outcome> {
        let tokens = self.tokens().await.map_err(Outcome::Retry)?;
        let token = tokens
            .token(&target.credential)
            .await
            .map_err(token_outcome)?;
        match self.request(target, plan, &token, delivered).await {
            Err(Answer::Unauthorized) => {}
            other => return other.map_err(Answer::into_outcome),
        }
        let renewed = tokens
            .token_rejected(&target.credential, &token)
            .await
            .map_err(token_outcome)?;
        match self.request(target, plan, &renewed, delivered).await {
            Err(Answer::Unauthorized) => Err(Outcome::DeadLetter(Failure::new(
                FailureClass::ProviderUnauthorized,
                format!(
                    "{} answered 401 to a renewed token too: check the account's credentials, scope and environment",
                    target.credential.provider()
                ),
            ))),
            other => other.map_err(Answer::into_outcome),
        }
    }

    async fn request(
        &self,
        target: &ApiAccount,
        plan: &Plan,
        token: &AccessToken,
        delivered: i64,
    ) -> Result<Bytes, Answer> {
        let provider = target.credential.provider();
        let url = join(&target.api.base_url, &plan.path);
        let settings = &self.hub.provider_api;
        // An address in the URL never goes through the resolver's check.
        if let Err(refused) = self.outbound.check_url(&url) {
            return Err(Answer::Failed(Failure::new(
                FailureClass::ProviderAddressRefused,
                format!("{provider} API address refused: {refused}"),
            )));
        }
        let sent = self
            .http
            .get(url)
            .bearer_auth(token.expose())
            .header("Accept", "application/json")
            .timeout(settings.request_timeout)
            .send()
            .await;
        let resp = sent.map_err(|e| {
            let (class, text) = if let Some(refused) = shared::outbound::refused(&e) {
                (
                    FailureClass::ProviderAddressRefused,
                    format!("{provider} API address refused: {refused}"),
                )
            } else if e.is_timeout() {
                (
                    FailureClass::ProviderTimeout,
                    format!(
                        "{provider} API did not answer {} within {}s",
                        plan.path,
                        settings.request_timeout.as_secs_f32()
                    ),
                )
            } else {
                (
                    FailureClass::ProviderUnreachable,
                    format!(
                        "{provider} API unreachable: {}",
                        shared::outbound::error_text(&e, e.url().map_or("", |u| u.path()))
                    ),
                )
            };
            Answer::Failed(Failure::new(class, text))
        })?;
        let status = resp.status().as_u16();
        if resp.status().is_success() {
            let read = shared::outbound::read_bounded(resp, settings.max_body_bytes + 1)
                .await
                .map_err(|e| {
                    Answer::Failed(Failure::new(
                        FailureClass::ProviderUnreachable,
                        format!(
                            "{provider} API answer cut off: {}",
                            shared::outbound::error_text(&e, e.url().map_or("", |u| u.path()))
                        ),
                    ))
                })?;
            if read.bytes.len() > settings.max_body_bytes {
                return Err(Answer::Failed(Failure::new(
                    FailureClass::MessageTooLarge,
                    format!(
                        "{provider} order {} is larger than provider_api.max_body_bytes ({} bytes)",
                        plan.order_id, settings.max_body_bytes
                    ),
                )));
            }
            return Ok(read.bytes);
        }
        if status == 401 {
            return Err(Answer::Unauthorized);
        }
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(shared::outbound::parse_retry_after);
        let said = match shared::outbound::answer_text(resp, 256).await {
            t if t.is_empty() => t,
            t => format!(": {t}"),
        };
        let what = format!("{provider} API answered {status} for {}{said}", plan.path);
        let failure = |class| Answer::Failed(Failure::new(class, what.clone()));
        Err(match status {
            403 => failure(FailureClass::ProviderForbidden),
            404 => {
                let allowed = i64::from(self.hub.fetcher.not_found_retries);
                if delivered > allowed {
                    Answer::Final(Failure::new(
                        FailureClass::OrderNotFound,
                        format!(
                            "{what}, {delivered} times: the order does not exist for this account (wrong environment, or another store's order)"
                        ),
                    ))
                } else {
                    failure(FailureClass::OrderNotFound)
                }
            }
            429 => Answer::Failed(
                Failure::new(FailureClass::Provider429, what.clone()).with_retry_after(retry_after),
            ),
            408 | 500..=599 => Answer::Failed(
                Failure::new(FailureClass::Provider5xx, what.clone()).with_retry_after(retry_after),
            ),
            _ => failure(FailureClass::ProviderRejected),
        })
    }

    async fn publish(
        &self,
        d: &Delivery,
        provider: Provider,
        account: &str,
        webhook_id: &str,
        plan: &Plan,
        body: Bytes,
    ) -> Result<(), Failure> {
        let subject = shared::subjects::fetched_webhook(provider, account);
        let mut h = HeaderMap::new();
        for (name, values) in d.headers.iter() {
            let n: &str = name.as_ref();
            if n.len() >= 5 && n[..5].eq_ignore_ascii_case("nats-") {
                continue;
            }
            for v in values {
                h.append(name.clone(), v.clone());
            }
        }
        h.insert(headers::NOTIFICATION_EVENT, plan.event.as_str());
        h.insert(
            headers::FETCHED_API,
            match plan.api {
                OrderApi::V1 => "v1",
                _ => "v2",
            },
        );
        h.insert(headers::FETCHED_FROM, plan.path.as_str());
        h.insert("Content-Type", "application/json");
        h.insert("Nats-Msg-Id", fetched_msg_id(webhook_id).as_str());
        let size = body.len();
        let failed = |what: &str, e: &jetstream::context::PublishError| {
            Failure::new(
                classify_publish(e),
                format!("{what} {subject} ({size} bytes): {e}"),
            )
        };
        let publish = async {
            let ack = self
                .js
                .publish_with_headers(subject.clone(), h, body)
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
                        "no ack for {subject} within {}ms",
                        self.publish_timeout.as_millis()
                    ),
                )
            })??;
        info!(
            subject,
            order = %plan.order_id,
            event = %plan.event,
            duplicate = ack.duplicate,
            "order fetched"
        );
        Ok(())
    }
}

/// How one request to the provider ended, short of a body.
enum Answer {
    /// 401: the token may be stale.
    Unauthorized,
    /// Retry if the class is transient, else dead-letter.
    Failed(Failure),
    /// Dead-letter whatever the class (a run of 404s is over).
    Final(Failure),
}

impl Answer {
    fn into_outcome(self) -> Outcome {
        match self {
            Answer::Unauthorized => Outcome::DeadLetter(Failure::new(
                FailureClass::ProviderUnauthorized,
                "the provider answered 401",
            )),
            Answer::Failed(f) if f.class.is_permanent() => Outcome::DeadLetter(f),
            Answer::Failed(f) => Outcome::Retry(f),
            Answer::Final(f) => Outcome::DeadLetter(f),
        }
    }
}

fn token_outcome(e: shared::tokens::TokenError) -> Outcome {
    let f = Failure::new(e.class(), e.to_string()).with_retry_after(e.retry_after());
    if f.class.is_permanent() {
        Outcome::DeadLetter(f)
    } else {
        Outcome::Retry(f)
    }
}

/// `base` with `path_and_query` appended to its path (a base of
/// `http://host/sandbox` keeps its `/sandbox`).
fn join(base: &url::Url, path_and_query: &str) -> url::Url {
    let (path, query) = path_and_query
        .split_once('?')
        .map_or((path_and_query, None), |(p, q)| (p, Some(q)));
    let mut url = base.clone();
    let joined = format!("{}{}", base.path().trim_end_matches('/'), path);
    url.set_path(&joined);
    url.set_query(query);
    url.set_fragment(None);
    url
}

impl Handler for Fetcher {
    async fn handle(&self, delivery: &Delivery) -> Outcome {
        match self.fetch(delivery).await {
            Ok(()) => Outcome::Ack,
            Err(outcome) => {
                if let Outcome::Retry(f) | Outcome::DeadLetter(f) = &outcome {
                    warn!(error_type = f.class.as_str(), error = %f.message, "fetch failed");
                }
                outcome
            }
        }
    }
}

/// Runs the fetcher stage until `shutdown`, with what [`Prepared::new`]
/// checked.
pub async fn run(
    args: &CommonArgs,
    prepared: Prepared,
    options: Options,
    shutdown: CancellationToken,
) -> Result<(), StageError> {
    let live = prepared.live();
    let prepared = prepared.follow(live.clone());
    let hub = prepared.hub.clone();
    let without_api: Vec<&str> = hub
        .accounts
        .iter()
        .filter(|a| a.provider.sends_notifications_only() && a.api.is_none())
        .map(|a| a.id.as_str())
        .collect();
    if !without_api.is_empty() {
        warn!(
            accounts = ?without_api,
            "these accounts have no [account.api]: their notifications are dead-lettered as fetch_required"
        );
    }
    let retry = hub.fetcher.retry.clone();
    let tokens = prepared.tokens.clone();
    let result = shared::app::run_stage_live(
        args,
        &live,
        &SPEC,
        move |registry, js| Fetcher::new(prepared, js.clone(), registry, options.publish_timeout),
        move |o| {
            o.concurrency = options.concurrency;
            o.retry = retry;
            o.outcome_timeout = options.publish_timeout;
        },
        shutdown,
    )
    .await;
    // A token call under way when the worker stopped may be a Wolt refresh
    // whose rotated token is not stored yet: wait for it (its lease bounds
    // it) rather than lose the venue's chain with the process.
    if let Some(store) = tokens.get() {
        let within = hub.provider_api.request_timeout + Duration::from_secs(5);
        if !store.settle(within).await {
            warn!(
                waited_ms = within.as_millis() as u64,
                "a provider token call was still running at exit"
            );
        }
    }
    result
}
