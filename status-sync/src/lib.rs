//! orderhub's status worker: the way back. Carries the restaurants'
//! answers (accept, reject, ready, ...) from the `STATUS` stream to the
//! providers' APIs before each answer's deadline, and tells the backend
//! when one could not be delivered.
//!
//! # Contract
//! - Consumes `status.<provider>.<account>` (one `orderhub.status.v1`
//!   [`StatusCommand`] each) through the durable pull consumer
//!   `status-sync`, with the shared worker loop and the `[status_sync]`
//!   retry schedule (seconds).
//! - For each command: reads the order's [`OrderContext`] from
//!   `ORDER_CONTEXT` (none, or its account gone: `unknown_order`), checks
//!   that the provider takes the action ([`shared::answer::supports`], the
//!   same table as the status API's 422: else `unsupported_action`), and
//!   computes the deadline: accept and reject the order's `answer_by`,
//!   later actions `decided_at + [status_sync] late_action_window`. At or
//!   past it: `deadline_passed`, no call.
//! - Makes the provider call(s) of [`calls::plan`] with the account's token
//!   from the fleet's token store ([`shared::tokens`]: Uber Eats, Wolt,
//!   Talabat, Deliveroo, Grab), its static key (Just Eat, Glovo), a JWT
//!   signed for the call (DoorDash) or Keeta's signed body ([`calls::wire`]),
//!   through the outbound policy (timeouts, no redirects, bounded bodies,
//!   `[provider_api] allowed_private_destinations`). A callback URL from the
//!   order (Talabat) is called only on `api.base_url`'s host or one of
//!   `api.callback_hosts`, over https (or http to an allowed private
//!   address): else `callback_refused`, nothing sent.
//! - Answers ([`calls::classify`]): 2xx done; the provider's "already done"
//!   (409; Uber's 404 to a cancel; DoorDash's 400 "already processed",
//!   Grab's 400 "invalid order state" / "already marked ready" and Keeta's
//!   "not in a valid state", these three only for an action that repeats
//!   safely: [`calls::repeats_safely`]) done too, so a redelivery after a
//!   lost ack is harmless; Keeta's 200
//!   read by its body's `code`; Talabat's 409 in a transient state retried; 401
//!   renews the token once and tries once more, then
//!   `provider_unauthorized`; 403 `provider_forbidden`; 429 retried after
//!   `Retry-After`; 408, 5xx, timeouts and unreachable APIs retried; other
//!   4xx and redirects `provider_rejected`.
//! - A retry whose delay would land at or past the deadline is dead-lettered
//!   as `deadline_passed` at once, logged at error level with the tenant,
//!   provider, order and action.
//! - Whenever a command is dead-lettered, a canonical `status_failed` order
//!   (ids, no items, `status_call` saying which answer and why) is first
//!   published to `orders.<tenant>.<provider>` with
//!   `Nats-Msg-Id: status-failed:<status_id>`; the forwarder delivers it to
//!   the backend like any order. If that publish fails, the command is
//!   retried instead of dead-lettered silently.
//! - Config ([`shared::live`]): each command is carried with the accounts
//!   (status URLs, `[account.api]`, token credentials) of the config
//!   serving when it arrives, and the auto-reject reader decides each dead
//!   letter with the config serving then; the `[status_sync]` schedule and
//!   the `[provider_api]` settings need a restart.
//! - Outcomes ([`shared::outcome`], `OUTCOMES`): one `status_call` per
//!   request sent to the provider (`step` counts them within the delivery:
//!   Deliveroo's two calls, a call again after a 401), with the action, the
//!   decision's `status_id`, the HTTP status (none without an answer), the
//!   duration, `ok` and `already_done`, or the failure's class and text.
//!   Each is sent when its call ends and its ack awaited while the next
//!   call runs, the last before the command is acked, retried or
//!   dead-lettered; one not stored (within `publish_timeout`) retries the
//!   command (class `publish_failed`; the provider's "already done" answers
//!   the repeated call of an accept or ready). `outcome_publish_failures`
//!   counts them.
//! - A second consumer, `auto-reject` ([`auto_reject`]), runs in the same
//!   process.
//! - Metrics (prefix `status_sync_`): the worker loop's; `calls` by
//!   provider, action and outcome (done, already_done, retried, failed,
//!   deadline_passed); `answer_seconds` from the decision to the
//!   provider's success by provider and action; `deadline_misses` by
//!   provider; `auto_rejects` by outcome; the token store's
//!   `provider_token_*`.

pub mod auto_reject;
pub mod calls;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_nats::HeaderMap;
use async_nats::jetstream;
use backon::Retryable;
use bytes::Bytes;
use canonical::order::{Customer, Event, Order, Raw, SchemaV1};
use canonical::status::{Action, StatusCall, StatusCommand};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use shared::Provider;
use shared::answer::{self, ORDER_CONTEXT_BUCKET, OrderContext};
use shared::app::{StageError, StageSpec};
use shared::config::{Account, CommonArgs, HubConfig};
use shared::failure::{FailureClass, classify_publish};
use shared::headers;
use shared::live::{Derived, Generational, LiveConfig};
use shared::outbound::OutboundPolicy;
use shared::outcome::{self, Pending, PublishFailures, Step};
use shared::sequence::{self, EventState, Sequencer, Turn};
use shared::tokens::{AccessToken, Credential, LazyTokenStore, TokenKey, TokenMetrics, TokenStore};
use shared::worker::{Delivery, Failure, Handler, Outcome};
use time::OffsetDateTime;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use calls::{Auth, Call, Target, Verdict};

/// The stage: its consumer, the streams and the buckets it uses.
pub const SPEC: StageSpec = StageSpec {
    stage: "status-sync",
    stream: "STATUS",
    durable: "status-sync",
    streams: &["STATUS", "ORDERS", "DLQ", "ADVISORIES", "OUTCOMES"],
    buckets: &[
        shared::streams::TOKENS_BUCKET,
        ORDER_CONTEXT_BUCKET,
        shared::sequence::SEQUENCE_BUCKET,
    ],
};

/// The `Nats-Msg-Id` of the `status_failed` order of decision `status_id`.
pub fn status_failed_msg_id(status_id: &str) -> String {
    format!("status-failed:{status_id}")
}

/// The `Nats-Msg-Id` of a status command.
pub fn status_msg_id(status_id: &str) -> String {
    format!("status:{status_id}")
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
struct CallLabels {
    provider: &'static str,
    action: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    provider: &'static str,
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: &'static str,
}

/// How a command ended, for `status_sync_calls`.
pub const OUTCOMES: [&str; 5] = [
    "done",
    "already_done",
    "retried",
    "failed",
    "deadline_passed",
];

/// The status worker's own metrics.
#[derive(Clone)]
pub struct Metrics {
    calls: Family<CallLabels, Counter>,
    answer: Family<ActionLabels, Histogram>,
    deadline_misses: Family<ProviderLabels, Counter>,
}

/// Decision to answer: seconds to minutes.
fn answer_buckets() -> impl Iterator<Item = f64> {
    [
        0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    ]
    .into_iter()
}

impl Metrics {
    /// Registers under `registry` (already prefixed `status_sync_`).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Metrics {
            calls: Family::default(),
            answer: Family::new_with_constructor(|| Histogram::new(answer_buckets())),
            deadline_misses: Family::default(),
        };
        registry.register(
            "calls",
            "Status commands carried to providers, by provider, action and outcome (done, already_done, retried, failed, deadline_passed)",
            m.calls.clone(),
        );
        registry.register(
            "answer_seconds",
            "Time from the decision (decided_at) to the provider's successful answer",
            m.answer.clone(),
        );
        registry.register(
            "deadline_misses",
            "Answers that could not reach the provider before their deadline",
            m.deadline_misses.clone(),
        );
        for p in Provider::ALL {
            let provider = p.as_str();
            let _ = m
                .deadline_misses
                .get_or_create(&ProviderLabels { provider });
            for action in Action::ALL {
                let action = action.as_str();
                for outcome in OUTCOMES {
                    let _ = m.calls.get_or_create(&CallLabels {
                        provider,
                        action,
                        outcome,
                    });
                }
                let _ = m.answer.get_or_create(&ActionLabels { provider, action });
            }
        }
        m
    }

    fn ended(&self, cmd: &StatusCommand, outcome: &'static str) {
        self.calls
            .get_or_create(&CallLabels {
                provider: cmd.provider.as_str(),
                action: cmd.action.as_str(),
                outcome,
            })
            .inc();
    }

    fn answered(&self, cmd: &StatusCommand, outcome: &'static str) {
        self.ended(cmd, outcome);
        let took = OffsetDateTime::now_utc() - cmd.decided_at;
        self.answer
            .get_or_create(&ActionLabels {
                provider: cmd.provider.as_str(),
                action: cmd.action.as_str(),
            })
            .observe(took.as_seconds_f64().max(0.0));
    }

    fn deadline_missed(&self, provider: Provider) {
        self.deadline_misses
            .get_or_create(&ProviderLabels {
                provider: provider.as_str(),
            })
            .inc();
    }
}

/// What the stage needs besides NATS, checked before it connects: every
/// account's credential and the HTTP client.
pub struct Prepared {
    hub: Arc<HubConfig>,
    /// The config to follow after start ([`Prepared::follow`]); `None`:
    /// `hub` for the whole run.
    live: Option<LiveConfig>,
    credentials: HashMap<(Provider, String), Credential>,
    http: reqwest::Client,
    outbound: OutboundPolicy,
    token_key: Option<TokenKey>,
    tokens: Arc<OnceCell<TokenStore>>,
}

/// Why the stage cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("account {account}.api: {message}")]
    Account { account: String, message: String },
    #[error("TOKEN_STORE_KEY is required when an account's provider API takes a token: {0}")]
    NoTokenKey(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// Whether the provider's API takes a token from the token store.
fn takes_token(p: Provider) -> bool {
    matches!(
        p,
        Provider::Ubereats
            | Provider::Wolt
            | Provider::Talabat
            | Provider::Deliveroo
            | Provider::Grab
    )
}

impl Prepared {
    /// `token_key` is the key from `TOKEN_STORE_KEY`(`_FILE`), or why it
    /// could not be read; needed only when an account's API takes a token.
    pub fn new(
        hub: Arc<HubConfig>,
        token_key: Result<TokenKey, String>,
    ) -> Result<Self, SetupError> {
        let mut credentials = HashMap::new();
        for a in hub.accounts.iter().filter(|a| takes_token(a.provider)) {
            let Some(api) = &a.api else { continue };
            let credential =
                Credential::new(a.provider, &a.id, api).map_err(|e| SetupError::Account {
                    account: a.id.clone(),
                    message: e.to_string(),
                })?;
            credentials.insert((a.provider, a.id.clone()), credential);
        }
        let token_key = match token_key {
            Ok(k) => Some(k),
            Err(_) if credentials.is_empty() => None,
            Err(why) => return Err(SetupError::NoTokenKey(why)),
        };
        let outbound = OutboundPolicy::new(hub.provider_api.allowed_private_destinations.clone());
        let http = outbound
            .client_builder()
            .user_agent(concat!("orderhub-status-sync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SetupError::Client(e.to_string()))?;
        for a in &hub.accounts {
            let url = match (&a.api, &a.status_url) {
                (Some(api), _) => &api.base_url,
                (None, Some(u)) => u,
                _ => continue,
            };
            if let Err(refused) = outbound.check_url(url) {
                warn!(
                    provider = %a.provider,
                    account = a.id,
                    %refused,
                    "the account's API address is refused by the outbound policy: its answers will be dead-lettered as provider_address_refused"
                );
            }
        }
        Ok(Prepared {
            hub,
            live: None,
            credentials,
            http,
            outbound,
            token_key,
            tokens: Arc::new(OnceCell::new()),
        })
    }
}

impl Prepared {
    /// Follows `live` after start: each command is carried with the
    /// accounts and token credentials of the config serving when it
    /// arrives. `live` must be the config this was prepared with.
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

/// The token credentials of a config's accounts; an account whose
/// credential cannot be built after a reload is logged and left out (its
/// commands are dead-lettered as `token_rejected`), the others apply.
fn credentials_of(hub: &HubConfig) -> HashMap<(Provider, String), Credential> {
    let mut credentials = HashMap::new();
    for a in hub.accounts.iter().filter(|a| takes_token(a.provider)) {
        let Some(api) = &a.api else { continue };
        match Credential::new(a.provider, &a.id, api) {
            Ok(c) => {
                credentials.insert((a.provider, a.id.clone()), c);
            }
            Err(e) => {
                error!(provider = %a.provider, account = a.id, error = %e, "the reloaded account's API credential is refused; its commands will be dead-lettered");
            }
        }
    }
    credentials
}

/// The accounts of one generation of the config.
struct Accounts {
    generation: u64,
    hub: Arc<HubConfig>,
    credentials: HashMap<(Provider, String), Credential>,
}

impl Generational for Accounts {
    fn generation(&self) -> u64 {
        self.generation
    }
}

/// The stage's handler.
pub struct StatusSync {
    /// The config at start, for what only a restart changes (the
    /// `[status_sync]` and `[provider_api]` sections).
    hub: Arc<HubConfig>,
    live: LiveConfig,
    accounts: Derived<Accounts>,
    js: jetstream::Context,
    http: reqwest::Client,
    outbound: OutboundPolicy,
    tokens: LazyTokenStore,
    contexts: OnceCell<jetstream::kv::Store>,
    metrics: Metrics,
    publish_timeout: Duration,
    outcomes: outcome::Publisher,
    /// Per-order ordering of the answers (`ORDER_SEQUENCE`).
    sequence: Sequencer,
}

/// The `status_call` steps of one delivery: at most one awaiting its ack
/// while the next call runs; the first that was not stored.
#[derive(Default)]
struct Recorded {
    steps: u32,
    pending: Option<Pending>,
    failed: Option<Failure>,
}

impl Recorded {
    async fn settle_pending(&mut self) {
        if let Some(p) = self.pending.take()
            && let Err(f) = p.wait().await
        {
            self.failed.get_or_insert(f);
        }
    }

    /// Every step stored, or the first failure.
    async fn finish(mut self) -> Result<(), Failure> {
        self.settle_pending().await;
        self.failed.map_or(Ok(()), Err)
    }
}

/// How far one command got before it stopped.
struct Stop {
    outcome: Outcome,
    /// The order's context, when it was read (for the deadline and the
    /// `status_failed` event).
    ctx: Option<OrderContext>,
    deadline: Option<OffsetDateTime>,
}

impl StatusSync {
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
        let sequence = Sequencer::new(js.clone(), Some(registry));
        let live = prepared.live();
        let token_metrics = TokenMetrics::register(registry);
        token_metrics.start_at_zero(prepared.credentials.values());
        let tokens = LazyTokenStore::new(
            js.clone(),
            prepared.token_key,
            prepared.tokens,
            &prepared.hub.provider_api,
            token_metrics,
            (
                FailureClass::TokenRejected,
                "no TOKEN_STORE_KEY: the status worker cannot keep provider tokens",
            ),
        );
        StatusSync {
            accounts: Derived::new(Accounts {
                generation: live.generation(),
                hub: live.load(),
                credentials: prepared.credentials,
            }),
            live,
            hub: prepared.hub,
            js,
            http: prepared.http,
            outbound: prepared.outbound,
            tokens,
            contexts: OnceCell::new(),
            metrics,
            publish_timeout,
            outcomes,
            sequence,
        }
    }

    /// The accounts of the config serving now, rebuilt once per reload.
    fn accounts(&self) -> Arc<Accounts> {
        self.accounts.get(&self.live, |hub, generation, _| {
            info!(
                generation,
                "status worker accounts rebuilt from the reloaded config"
            );
            Accounts {
                generation,
                credentials: credentials_of(&hub),
                hub,
            }
        })
    }

    async fn tokens(&self) -> Result<&TokenStore, Failure> {
        self.tokens.get().await
    }

    async fn context(&self, cmd: &StatusCommand) -> Result<Option<OrderContext>, Failure> {
        let kv_failed = |e: String| {
            Failure::new(
                FailureClass::ContextUnavailable,
                format!("cannot read bucket {ORDER_CONTEXT_BUCKET}: {e}"),
            )
        };
        let kv = self
            .contexts
            .get_or_try_init(|| async {
                self.js
                    .get_key_value(ORDER_CONTEXT_BUCKET)
                    .await
                    .map_err(|e| kv_failed(e.to_string()))
            })
            .await?;
        let key = answer::key(&cmd.tenant, cmd.provider, &cmd.provider_order_id);
        let Some(bytes) = kv.get(&key).await.map_err(|e| kv_failed(e.to_string()))? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Failure::new(
                FailureClass::UnknownOrder,
                format!("the order's context in {ORDER_CONTEXT_BUCKET} does not read: {e}"),
            )
        })
    }

    /// Carries one command to its provider: `Ok(already_done)` once the
    /// provider has it.
    async fn carry(
        &self,
        d: &Delivery,
        cmd: &StatusCommand,
        rec: &mut Recorded,
    ) -> Result<bool, Stop> {
        let dead = |class, message: String| Outcome::DeadLetter(Failure::new(class, message));
        let order = shared::redact::truncate(&cmd.provider_order_id, 64).into_owned();
        let ctx = match self.context(cmd).await {
            Ok(Some(ctx)) => ctx,
            Ok(None) => {
                return Err(Stop {
                    outcome: dead(
                        FailureClass::UnknownOrder,
                        format!(
                            "no context for {} order {order} of tenant {} in {ORDER_CONTEXT_BUCKET}: expired, or never a created order",
                            cmd.provider, cmd.tenant
                        ),
                    ),
                    ctx: None,
                    deadline: None,
                });
            }
            Err(f) => {
                let outcome = if f.class.is_permanent() {
                    Outcome::DeadLetter(f)
                } else {
                    Outcome::Retry(f)
                };
                return Err(Stop {
                    outcome,
                    ctx: None,
                    deadline: None,
                });
            }
        };
        let deadline = calls::deadline(
            cmd,
            Some(ctx.answer_by),
            self.hub.status_sync.late_action_window,
        );
        let stop = |outcome| Stop {
            outcome,
            ctx: Some(ctx.clone()),
            deadline: Some(deadline),
        };
        let accounts = self.accounts();
        let Some(account) = accounts.hub.account(cmd.provider, &cmd.account) else {
            return Err(stop(dead(
                FailureClass::UnknownOrder,
                format!(
                    "{} account {:?} is not in the status worker's config",
                    cmd.provider,
                    shared::redact::truncate(&cmd.account, 64)
                ),
            )));
        };
        if !answer::supports(account, &ctx, cmd.action) {
            return Err(stop(dead(
                FailureClass::UnsupportedAction,
                format!(
                    "{} has no call to {} this order (account {})",
                    cmd.provider, cmd.action, account.id
                ),
            )));
        }
        if let Some(late) = past(cmd, deadline, Duration::ZERO) {
            return Err(stop(Outcome::DeadLetter(late)));
        }
        let planned = calls::plan(account, &ctx, cmd, OffsetDateTime::now_utc())
            .map_err(|e| stop(dead(e.class(), e.to_string())))?;
        // Every callback is checked before the first call.
        let mut urls = Vec::with_capacity(planned.len());
        for call in &planned {
            urls.push(
                self.url(account, call)
                    .map_err(|f| stop(Outcome::DeadLetter(f)))?,
            );
        }
        let mut already = false;
        for (call, url) in planned.iter().zip(urls) {
            // Getting a token may have waited on another replica's lease.
            if let Some(late) = past(cmd, deadline, Duration::ZERO) {
                return Err(stop(Outcome::DeadLetter(late)));
            }
            already = self
                .call(d, account, cmd, call, url, rec)
                .await
                .map_err(&stop)?;
        }
        Ok(already)
    }

    /// Where `call` goes, checked.
    fn url(&self, account: &Account, call: &Call) -> Result<url::Url, Failure> {
        let refused = |why: String| {
            Failure::new(
                FailureClass::CallbackRefused,
                format!(
                    "{} callback URL refused for account {}: {why}",
                    account.provider, account.id
                ),
            )
        };
        let url = match &call.target {
            Target::Api(segments) => {
                let api = account.api.as_ref().expect("planned only with an api");
                // The url crate drops a `.` or `..` segment (and an empty
                // one would change the path): such an order id would call
                // another endpoint than the documented one.
                if let Some(bad) = segments
                    .iter()
                    .find(|s| matches!(s.as_str(), "" | "." | ".."))
                {
                    return Err(Failure::new(
                        FailureClass::InvalidPayload,
                        format!(
                            "order id {bad:?} cannot be a path segment of {} account {}",
                            account.provider, account.id
                        ),
                    ));
                }
                calls::api_url(&api.base_url, segments)
            }
            Target::StatusUrl => account
                .status_url
                .clone()
                .expect("planned only with a status_url"),
            Target::Callback(raw) => {
                let api = account.api.as_ref().expect("planned only with an api");
                let url = url::Url::parse(raw).map_err(|e| refused(format!("not a URL: {e}")))?;
                calls::callback_allowed(&url, &api.base_url, &api.callback_hosts, |u| {
                    // http only to a special-purpose address the operator
                    // listed (the fake provider, an on-premises middleware).
                    let ip = match u.host() {
                        Some(url::Host::Ipv4(v4)) => std::net::IpAddr::V4(v4),
                        Some(url::Host::Ipv6(v6)) => std::net::IpAddr::V6(v6),
                        _ => return false,
                    };
                    shared::outbound::special_purpose(ip).is_some()
                        && self.outbound.check_ip(ip).is_ok()
                })
                .map_err(refused)?;
                url
            }
        };
        if let Err(refused) = self.outbound.check_url(&url) {
            return Err(Failure::new(
                FailureClass::ProviderAddressRefused,
                format!("{} API address refused: {refused}", account.provider),
            ));
        }
        Ok(url)
    }

    /// One call, with one more try on a renewed token after a 401:
    /// `Ok(already_done)`.
    async fn call(
        &self,
        d: &Delivery,
        account: &Account,
        cmd: &StatusCommand,
        call: &Call,
        url: url::Url,
        rec: &mut Recorded,
    ) -> Result<bool, Outcome> {
        let what = format!("{} {} {}", account.provider, call.method, url.path());
        if call.auth != Auth::Bearer {
            return match self
                .send(d, account, cmd, call, &url, None, &what, rec)
                .await
            {
                Verdict::Done => Ok(false),
                Verdict::AlreadyDone => Ok(true),
                Verdict::Unauthorized => Err(Outcome::DeadLetter(Failure::new(
                    FailureClass::ProviderUnauthorized,
                    format!("{what} answered 401: check the account's key"),
                ))),
                Verdict::Failed(f) => Err(failed(f)),
            };
        }
        let accounts = self.accounts();
        let credential = accounts
            .credentials
            .get(&(account.provider, account.id.clone()))
            .ok_or_else(|| {
                Outcome::DeadLetter(Failure::new(
                    FailureClass::TokenRejected,
                    format!("account {} has no token credential", account.id),
                ))
            })?;
        let tokens = self.tokens().await.map_err(failed)?;
        let token = tokens.token(credential).await.map_err(token_outcome)?;
        match self
            .send(d, account, cmd, call, &url, Some(&token), &what, rec)
            .await
        {
            Verdict::Done => return Ok(false),
            Verdict::AlreadyDone => return Ok(true),
            Verdict::Failed(f) => return Err(failed(f)),
            Verdict::Unauthorized => {}
        }
        let renewed = tokens
            .token_rejected(credential, &token)
            .await
            .map_err(token_outcome)?;
        match self
            .send(d, account, cmd, call, &url, Some(&renewed), &what, rec)
            .await
        {
            Verdict::Done => Ok(false),
            Verdict::AlreadyDone => Ok(true),
            Verdict::Failed(f) => Err(failed(f)),
            Verdict::Unauthorized => Err(Outcome::DeadLetter(Failure::new(
                FailureClass::ProviderUnauthorized,
                format!(
                    "{what} answered 401 to a renewed token too: check the account's credentials, scope and environment"
                ),
            ))),
        }
    }

    /// One request ([`StatusSync::send_once`]), and its `status_call`
    /// step if it was sent.
    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        d: &Delivery,
        account: &Account,
        cmd: &StatusCommand,
        call: &Call,
        url: &url::Url,
        token: Option<&AccessToken>,
        what: &str,
        rec: &mut Recorded,
    ) -> Verdict {
        let started = std::time::Instant::now();
        let (verdict, sent) = self
            .send_once(d, account, cmd, call, url, token, what)
            .await;
        let Some(http_status) = sent else {
            return verdict;
        };
        let ok = matches!(verdict, Verdict::Done | Verdict::AlreadyDone);
        let mut step = Step::about(
            outcome::Stage::StatusSync,
            outcome::Kind::StatusCall,
            cmd.provider,
            d,
            ok,
        );
        step.tenant = Some(&cmd.tenant);
        step.account = Some(&cmd.account);
        step.provider_order_id = Some(&cmd.provider_order_id);
        step.action = Some(cmd.action.as_str());
        step.status_id = Some(&cmd.status_id);
        step.already_done = matches!(verdict, Verdict::AlreadyDone);
        step.http_status = http_status;
        step.duration_ms = Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
        step.step = rec.steps;
        rec.steps += 1;
        let step = match &verdict {
            Verdict::Failed(f) => step.with_error(f.class, &f.message),
            Verdict::Unauthorized => step.with_error(
                FailureClass::ProviderUnauthorized,
                "the provider answered 401",
            ),
            Verdict::Done | Verdict::AlreadyDone => step,
        };
        // The previous call's step is stored by now or never; this one's
        // ack is awaited during the next call, or at the end.
        rec.settle_pending().await;
        match self.outcomes.send(&step).await {
            Ok(p) => rec.pending = Some(p),
            Err(f) => {
                rec.failed.get_or_insert(f);
            }
        }
        verdict
    }

    #[allow(clippy::too_many_arguments)]
    async fn send_once(
        &self,
        d: &Delivery,
        account: &Account,
        cmd: &StatusCommand,
        call: &Call,
        url: &url::Url,
        token: Option<&AccessToken>,
        what: &str,
    ) -> (Verdict, Option<Option<u16>>) {
        let settings = &self.hub.provider_api;
        let wire = match calls::wire(
            account,
            call,
            url.clone(),
            token.map(AccessToken::expose),
            &d.payload,
            OffsetDateTime::now_utc(),
        ) {
            Ok(w) => w,
            Err(f) => return (Verdict::Failed(f), None),
        };
        let mut req = self
            .http
            .request(wire.method, wire.url)
            .timeout(settings.request_timeout)
            .headers(wire.headers);
        if call.auth == Auth::StandardWebhooks {
            let Some(secret) = account.secrets.first() else {
                return (
                    Verdict::Failed(Failure::new(
                        FailureClass::ProviderRejected,
                        format!("account {} has no secret to sign with", account.id),
                    )),
                    None,
                );
            };
            let payload = wire.body.clone().unwrap_or_default();
            match shared::verify::direct::sign(&payload, secret, &cmd.status_id, SystemTime::now())
            {
                Ok(signed) => req = req.headers(signed),
                Err(e) => {
                    return (
                        Verdict::Failed(Failure::new(
                            FailureClass::InvalidPayload,
                            format!("cannot sign the status call: {e}"),
                        )),
                        None,
                    );
                }
            }
        }
        if let Some(b) = wire.body {
            req = req.body(b);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                let (class, text) = if let Some(refused) = shared::outbound::refused(&e) {
                    (
                        FailureClass::ProviderAddressRefused,
                        format!("{} API address refused: {refused}", account.provider),
                    )
                } else if e.is_timeout() {
                    (
                        FailureClass::ProviderTimeout,
                        format!(
                            "{what} did not answer within {}s",
                            settings.request_timeout.as_secs_f32()
                        ),
                    )
                } else {
                    (
                        FailureClass::ProviderUnreachable,
                        format!(
                            "{what} unreachable: {}",
                            shared::outbound::error_text(&e, url.path())
                        ),
                    )
                };
                // A refused address sent nothing; anything else was a call
                // that got no answer.
                let sent = (class != FailureClass::ProviderAddressRefused).then_some(None);
                return (Verdict::Failed(Failure::new(class, text)), sent);
            }
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(shared::outbound::parse_retry_after);
        // Keeta says how a call went in the body of its 200.
        let keeta = matches!(call.done_on, calls::DoneOn::KeetaCode { .. });
        let text = if resp.status().is_success() && !keeta {
            String::new()
        } else {
            shared::outbound::answer_text(resp, 4096).await
        };
        (
            calls::classify(call.done_on, status, text.as_bytes(), retry_after, what),
            Some(Some(status)),
        )
    }

    /// Publishes the `status_failed` order telling the backend that `cmd`
    /// did not reach the provider.
    async fn publish_failed(
        &self,
        d: &Delivery,
        cmd: &StatusCommand,
        ctx: Option<&OrderContext>,
        f: &Failure,
    ) -> Result<(), Failure> {
        let order = status_failed_order(d, cmd, ctx, f, OffsetDateTime::now_utc());
        let subject = shared::subjects::order(&cmd.tenant, cmd.provider);
        let mut h = HeaderMap::new();
        h.insert(headers::WEBHOOK_ID, cmd.status_id.as_str());
        h.insert(headers::PROVIDER, cmd.provider.as_str());
        h.insert(headers::ACCOUNT, cmd.account.as_str());
        h.insert(headers::TENANT, cmd.tenant.as_str());
        h.insert(
            headers::RECEIVED_AT,
            shared::dlq::rfc3339(SystemTime::now()).as_str(),
        );
        h.insert(headers::EVENT, "status_failed");
        h.insert(headers::STATUS_ID, cmd.status_id.as_str());
        if let Some(tp) = d.header(headers::TRACEPARENT) {
            h.insert(headers::TRACEPARENT, tp);
        }
        h.insert("Content-Type", "application/json");
        h.insert("Nats-Msg-Id", status_failed_msg_id(&cmd.status_id).as_str());
        let body = serde_json::to_vec(&order).expect("an order encodes");
        let failed = |what: &str, e: &jetstream::context::PublishError| {
            Failure::new(classify_publish(e), format!("{what} {subject}: {e}"))
        };
        let publish = async {
            let ack = self
                .js
                .publish_with_headers(subject.clone(), h, Bytes::from(body))
                .await
                .map_err(|e| failed("publish to", &e))?;
            ack.await.map_err(|e| failed("no ack for", &e))
        };
        tokio::time::timeout(self.publish_timeout, publish)
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
        Ok(())
    }

    /// Dead-letters `cmd` with `f`, after the backend's `status_failed`
    /// order is stored; retries instead if it could not be.
    async fn give_up(
        &self,
        d: &Delivery,
        cmd: &StatusCommand,
        ctx: Option<&OrderContext>,
        f: Failure,
    ) -> Outcome {
        if f.class == FailureClass::DeadlinePassed {
            self.metrics.ended(cmd, "deadline_passed");
            self.metrics.deadline_missed(cmd.provider);
            error!(
                tenant = %cmd.tenant,
                provider = %cmd.provider,
                account = %cmd.account,
                order = %shared::redact::truncate(&cmd.provider_order_id, 64),
                action = %cmd.action,
                origin = %cmd.origin,
                status_id = %cmd.status_id,
                error = %f.message,
                "an answer missed the provider's deadline"
            );
        } else {
            self.metrics.ended(cmd, "failed");
        }
        match self.publish_failed(d, cmd, ctx, &f).await {
            Ok(()) => Outcome::DeadLetter(f),
            // The last delivery: the decision goes to the DLQ with its own
            // class rather than as "deliveries exhausted", and the missing
            // event is said loudly (the DLQ entry is then the only trace).
            Err(e) if d.is_last => {
                error!(
                    tenant = %cmd.tenant,
                    provider = %cmd.provider,
                    order = %shared::redact::truncate(&cmd.provider_order_id, 64),
                    action = %cmd.action,
                    status_id = %cmd.status_id,
                    error = %e.message,
                    "the backend was not told that an answer failed: the status_failed order could not be stored"
                );
                Outcome::DeadLetter(Failure::new(
                    f.class,
                    format!("{} (the backend was not told: {})", f.message, e.message),
                ))
            }
            Err(e) => Outcome::Retry(Failure::new(
                if e.class.is_permanent() {
                    FailureClass::PublishFailed
                } else {
                    e.class
                },
                format!(
                    "the status_failed order could not be stored ({}); not dead-lettered yet: {}",
                    e.message, f.message
                ),
            )),
        }
    }

    /// [`StatusSync::decide`], then every `status_call` step stored: else
    /// the command is retried, whatever it came to.
    async fn handle_command(&self, d: &Delivery, cmd: &StatusCommand) -> Outcome {
        let mut rec = Recorded::default();
        let outcome = self.decide(d, cmd, &mut rec).await;
        match rec.finish().await {
            Ok(()) => outcome,
            Err(f) => Outcome::Retry(f),
        }
    }

    async fn decide(&self, d: &Delivery, cmd: &StatusCommand, rec: &mut Recorded) -> Outcome {
        let stop = match self.carry(d, cmd, rec).await {
            Ok(already) => {
                let outcome = if already { "already_done" } else { "done" };
                self.metrics.answered(cmd, outcome);
                info!(
                    order = %shared::redact::truncate(&cmd.provider_order_id, 64),
                    action = %cmd.action,
                    status_id = %cmd.status_id,
                    already_done = already,
                    "answer delivered"
                );
                return Outcome::Ack;
            }
            Err(stop) => stop,
        };
        let ctx = stop.ctx.as_ref();
        match stop.outcome {
            Outcome::Ack => Outcome::Ack,
            Outcome::DeadLetter(f) => self.give_up(d, cmd, ctx, f).await,
            Outcome::Retry(f) if f.class.is_permanent() => self.give_up(d, cmd, ctx, f).await,
            Outcome::Retry(f) => {
                let delay = self.hub.status_sync.retry.delay_after(
                    d.delivered,
                    d.stream_seq,
                    f.retry_after,
                );
                if let Some(late) = stop.deadline.and_then(|dl| past(cmd, dl, delay)) {
                    let message = format!("{}; last failure: {}", late.message, f.message);
                    return self
                        .give_up(d, cmd, ctx, Failure::new(late.class, message))
                        .await;
                }
                if d.is_last {
                    let message = format!(
                        "deliveries exhausted after {} attempts: {}",
                        d.delivered, f.message
                    );
                    return self
                        .give_up(d, cmd, ctx, Failure::new(f.class, message))
                        .await;
                }
                self.metrics.ended(cmd, "retried");
                Outcome::Retry(f)
            }
        }
    }
}

/// `Some(deadline_passed)` when `now + wait` is at or past `deadline`.
fn past(cmd: &StatusCommand, deadline: OffsetDateTime, wait: Duration) -> Option<Failure> {
    let now = OffsetDateTime::now_utc();
    if now + wait < deadline {
        return None;
    }
    let which = if cmd.action.answers_new_order() {
        "the provider's answer deadline"
    } else {
        "decided_at + [status_sync] late_action_window"
    };
    let when = if wait.is_zero() {
        "now".to_owned()
    } else {
        format!("a retry in {}ms", wait.as_millis())
    };
    Some(Failure::new(
        FailureClass::DeadlinePassed,
        format!(
            "{} {} of order {}: {when} is past {which} ({})",
            cmd.provider,
            cmd.action,
            shared::redact::truncate(&cmd.provider_order_id, 64),
            calls::rfc3339(deadline)
        ),
    ))
}

fn failed(f: Failure) -> Outcome {
    if f.class.is_permanent() {
        Outcome::DeadLetter(f)
    } else {
        Outcome::Retry(f)
    }
}

fn token_outcome(e: shared::tokens::TokenError) -> Outcome {
    failed(Failure::new(e.class(), e.to_string()).with_retry_after(e.retry_after()))
}

/// The canonical `status_failed` order of `cmd`: its ids, no items, the
/// decision and why it failed.
pub fn status_failed_order(
    d: &Delivery,
    cmd: &StatusCommand,
    ctx: Option<&OrderContext>,
    f: &Failure,
    now: OffsetDateTime,
) -> Order {
    let mut order = Order {
        schema: SchemaV1,
        webhook_id: cmd.status_id.clone(),
        idempotency_key: None,
        event: Event::StatusFailed,
        status: None,
        provider: cmd.provider,
        provider_order_id: cmd.provider_order_id.clone(),
        display_code: ctx.and_then(|c| c.display_code.clone()),
        tenant: cmd.tenant.clone(),
        branch: None,
        placed_at: None,
        scheduled_for: None,
        is_test: false,
        currency: None,
        customer: Customer::default(),
        fulfilment: None,
        items: Vec::new(),
        totals: None,
        payment: None,
        notes: None,
        allergy_notes: None,
        cutlery: None,
        raw: Raw {
            stream: d.stream.clone(),
            seq: d.stream_seq,
            subject: d.subject.clone(),
        },
        status_call: Some(StatusCall {
            status_id: cmd.status_id.clone(),
            action: cmd.action.as_str().to_owned(),
            origin: cmd.origin.as_str().to_owned(),
            error_class: f.class.as_str().to_owned(),
            error: shared::outbound::one_line(f.message.as_bytes()),
            decided_at: cmd.decided_at,
            failed_at: now,
        }),
    };
    order.idempotency_key = Some(order.event_key());
    order
}

impl Handler for StatusSync {
    async fn handle(&self, d: &Delivery) -> Outcome {
        let cmd: StatusCommand = match serde_json::from_slice(&d.payload) {
            Ok(c) => c,
            Err(e) => {
                // Without its ids the backend cannot be told: the DLQ keeps it.
                return Outcome::DeadLetter(Failure::new(
                    FailureClass::InvalidPayload,
                    format!("not an orderhub.status.v1 command: {e}"),
                ));
            }
        };
        let outcome = if self.hub.status_sync.per_order_ordering {
            self.in_turn(d, &cmd).await
        } else {
            self.handle_command(d, &cmd).await
        };
        if let Outcome::Retry(f) | Outcome::DeadLetter(f) = &outcome {
            warn!(
                error_type = f.class.as_str(),
                error = %f.message,
                action = %cmd.action,
                status_id = %cmd.status_id,
                "answer not delivered"
            );
        }
        outcome
    }
}

impl StatusSync {
    /// [`StatusSync::handle_command`] after the answers about the same
    /// order that came before it in the order's life
    /// ([`shared::sequence`]): `ready` waits for an `accept` still on its
    /// way, inside its delivery, at most until its own deadline
    /// (`decided_at + late_action_window`).
    async fn in_turn(&self, d: &Delivery, cmd: &StatusCommand) -> Outcome {
        let entry = sequence::status_key(&cmd.tenant, cmd.provider, &cmd.provider_order_id);
        let ev = sequence::Event {
            key: &cmd.status_id,
            name: cmd.action.as_str(),
            phase: sequence::action_phase(cmd.action),
            seq: d.stream_seq,
        };
        let until = cmd.decided_at + self.hub.status_sync.late_action_window;
        let left = (until - OffsetDateTime::now_utc())
            .try_into()
            .unwrap_or(Duration::ZERO);
        let deadline = tokio::time::Instant::now() + left;
        let order = shared::redact::truncate(&cmd.provider_order_id, 64);
        match self.sequence.turn(&entry, &ev, None, deadline).await {
            Err(e) => return Outcome::Retry(Failure::new(FailureClass::PublishFailed, e.0)),
            Ok(Turn::Duplicate) => {
                info!(%order, action = %cmd.action, status_id = %cmd.status_id, "this answer was delivered already; not sent again");
                return Outcome::Ack;
            }
            Ok(Turn::Busy { behind, .. }) => {
                return Outcome::Retry(Failure::new(
                    FailureClass::OrderWaiting,
                    format!(
                        "waits for the order's {behind} answer, and this replica holds as many waiting answers as it may"
                    ),
                ));
            }
            Ok(Turn::TimedOut { behind, .. }) => {
                let f = Failure::new(
                    FailureClass::DeadlinePassed,
                    format!(
                        "waited for the order's {behind} answer until the deadline ({})",
                        until
                            .format(&time::format_description::well_known::Rfc3339)
                            .unwrap_or_default()
                    ),
                );
                let outcome = self.give_up(d, cmd, None, f).await;
                // A dead letter: settle never fails it.
                let _ = self.settle(&entry, cmd, &outcome, true).await;
                return outcome;
            }
            Ok(Turn::Go { waited, late, .. }) => {
                if late {
                    warn!(%order, action = %cmd.action, "a later answer about this order was delivered before this one arrived");
                } else if !waited.is_zero() {
                    info!(%order, action = %cmd.action, waited_ms = waited.as_millis() as u64, "waited for the order's earlier answers");
                }
            }
        }
        let outcome = self.handle_command(d, cmd).await;
        if let Err(f) = self.settle(&entry, cmd, &outcome, d.is_last).await {
            return Outcome::Retry(f);
        }
        outcome
    }

    /// Records how the answer ended in its order's sequence: delivered
    /// (an error: the answer is retried, the provider's "already done"
    /// makes that harmless), dead-lettered (a few tries, then logged: the
    /// later answers wait until their own deadlines).
    async fn settle(
        &self,
        entry: &str,
        cmd: &StatusCommand,
        outcome: &Outcome,
        last: bool,
    ) -> Result<(), Failure> {
        let state = match outcome {
            Outcome::Ack => EventState::Done,
            Outcome::DeadLetter(_) => EventState::DeadLettered,
            Outcome::Retry(_) if last => EventState::DeadLettered,
            Outcome::Retry(_) => return Ok(()),
        };
        let mark = || self.sequence.finish(entry, &cmd.status_id, state);
        match mark.retry(shared::backoff::infra().with_max_times(3)).await {
            Ok(_) => Ok(()),
            Err(e) if state == EventState::Done => Err(Failure::new(
                FailureClass::PublishFailed,
                format!("delivered, but not recorded as delivered: {}", e.0),
            )),
            Err(e) => {
                error!(error = %e, status_id = %cmd.status_id, "cannot record a dead-lettered answer in its order's sequence; the order's later answers wait for it until their deadlines");
                Ok(())
            }
        }
    }
}

/// Runs the status worker (and the auto-reject reader) until `shutdown`,
/// with what [`Prepared::new`] checked.
pub async fn run(
    args: &CommonArgs,
    prepared: Prepared,
    options: Options,
    shutdown: CancellationToken,
) -> Result<(), StageError> {
    let live = prepared.live();
    let prepared = prepared.follow(live.clone());
    let hub = prepared.hub.clone();
    let retry = hub.status_sync.retry.clone();
    let tokens = prepared.tokens.clone();
    let auto_reject_task = Arc::new(std::sync::Mutex::new(None));
    let task_slot = auto_reject_task.clone();
    let manage = args.manage_streams;
    let reader_shutdown = shutdown.clone();
    let reader_live = live.clone();
    let result = shared::app::run_stage_live(
        args,
        &live,
        &SPEC,
        move |registry, js| {
            let metrics = auto_reject::Metrics::register(registry);
            let reader = auto_reject::AutoReject::live(
                reader_live,
                js.clone(),
                metrics,
                options.publish_timeout,
            );
            *task_slot.lock().expect("not poisoned") =
                Some(tokio::spawn(reader.run(manage, reader_shutdown)));
            let mut stage =
                StatusSync::new(prepared, js.clone(), registry, options.publish_timeout);
            // Answers waiting for an earlier answer of their order never
            // take more than half the handlers (shared::sequence).
            stage.sequence = stage
                .sequence
                .clone()
                .with_max_waiting(options.concurrency / 2);
            stage
        },
        move |o| {
            o.concurrency = options.concurrency;
            o.retry = retry;
            o.outcome_timeout = options.publish_timeout;
        },
        shutdown.clone(),
    )
    .await;
    shutdown.cancel();
    let task = auto_reject_task.lock().expect("not poisoned").take();
    if let Some(task) = task
        && let Err(e) = task.await
    {
        warn!(error = %e, "the auto-reject reader failed");
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use canonical::status::{Origin, StatusSchemaV1};

    #[test]
    fn a_status_failed_order_is_a_valid_canonical_order() {
        let cmd = StatusCommand {
            schema: StatusSchemaV1,
            status_id: "st-1".into(),
            tenant: "acme".into(),
            provider: Provider::Wolt,
            account: "acme-wolt".into(),
            provider_order_id: "o-1".into(),
            action: Action::Accept,
            reason: None,
            ready_at: None,
            unavailable_items: vec![],
            origin: Origin::AutoAccept,
            decided_at: OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap(),
            order_webhook_id: Some("wh-1".into()),
        };
        let d = Delivery {
            subject: "status.wolt.acme-wolt".into(),
            headers: HeaderMap::new(),
            payload: Bytes::from(serde_json::to_vec(&cmd).unwrap()),
            stream: "STATUS".into(),
            stream_seq: 7,
            delivered: 3,
            published: SystemTime::now(),
            is_last: false,
            provider: "wolt".into(),
            tenant: Some("acme".into()),
            webhook_id: None,
        };
        let f = Failure::new(FailureClass::DeadlinePassed, "too late\nreally");
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_200).unwrap();
        let order = status_failed_order(&d, &cmd, None, &f, now);
        order.validate().expect("valid");
        let json = serde_json::to_value(&order).unwrap();
        assert_eq!(json["event"], "status_failed");
        assert_eq!(json["webhook_id"], "st-1");
        assert_eq!(json["items"], serde_json::json!([]));
        assert_eq!(
            json["raw"],
            serde_json::json!({"stream": "STATUS", "seq": 7, "subject": "status.wolt.acme-wolt"})
        );
        assert_eq!(
            json["status_call"],
            serde_json::json!({
                "status_id": "st-1",
                "action": "accept",
                "origin": "auto_accept",
                "error_class": "deadline_passed",
                "error": "too late really",
                "decided_at": "2027-01-15T08:00:00Z",
                "failed_at": "2027-01-15T08:03:20Z",
            })
        );
    }
}
