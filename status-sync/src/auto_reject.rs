//! The `auto-reject` reader: a new order the forwarder dead-lettered never
//! reached its restaurant, so (for an account with `auto_reject`) the hub
//! rejects it at the provider rather than leave the customer waiting.
//!
//! # Contract
//! - Reads the forwarder's dead letters (`dlq.forwarder.>` in `DLQ`)
//!   through the durable consumer `auto-reject` (`max_deliver -1`: a dead
//!   letter is read once, so nothing here gives up on one).
//! - An entry whose original is a canonical order with event `created`
//!   (header `Orderhub-Event`, else the body's `event`) of an account
//!   (`Orderhub-Provider`, `Orderhub-Account`) with `auto_reject`, whose
//!   dead-letter class says the backend never took it ([`NEVER_TAKEN`]:
//!   refused, unreachable to the end, stale; not `publish_failed` or the
//!   mover's `deliveries_exhausted`, after which the backend may hold it),
//!   becomes a
//!   [`StatusCommand`] `reject` (reason `other`, origin `auto_reject`,
//!   `status_id` `auto-reject-<order webhook id>`) published to
//!   `status.<provider>.<account>` with `Nats-Msg-Id: status:<status_id>`;
//!   the entry is acked once JetStream acked the command (a redelivery
//!   publishes the same id, which the duplicate window drops).
//! - Anything else is acked and counted as skipped. A failed publish is
//!   NAK'd and comes back after a pause.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind};
use backon::Retryable;
use bytes::Bytes;
use canonical::status::{Action, Origin, Reason, ReasonCode, StatusCommand, StatusSchemaV1};
use futures::StreamExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde_json::Value;
use shared::Provider;
use shared::config::HubConfig;
use shared::failure::FailureClass;
use shared::headers;
use shared::live::LiveConfig;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// The consumer this reader uses (`nats/streams.toml`).
pub const DURABLE: &str = "auto-reject";

/// The `status_id` of the automatic reject of the order `webhook_id`.
pub fn status_id(order_webhook_id: &str) -> String {
    format!("auto-reject-{order_webhook_id}")
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// How a dead letter ended here.
pub const OUTCOMES: [&str; 7] = [
    "published",
    "not_created",
    "backend_may_have_it",
    "auto_reject_off",
    "unknown_account",
    "unreadable",
    "publish_failed",
];

/// The reader's metrics.
#[derive(Clone)]
pub struct Metrics {
    entries: Family<OutcomeLabels, Counter>,
}

impl Metrics {
    /// Registers under `registry` (already prefixed `status_sync_`).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Metrics {
            entries: Family::default(),
        };
        registry.register(
            "auto_rejects",
            "Forwarder dead letters read by auto-reject, by outcome (published, or why skipped)",
            m.entries.clone(),
        );
        for outcome in OUTCOMES {
            let _ = m.entries.get_or_create(&OutcomeLabels { outcome });
        }
        m
    }

    fn count(&self, outcome: &'static str) {
        self.entries.get_or_create(&OutcomeLabels { outcome }).inc();
    }
}

/// What one dead letter asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Publish this reject.
    Reject(StatusCommand),
    /// Ack and skip, for this reason (one of [`OUTCOMES`]).
    Skip(&'static str),
}

/// The forwarder's dead-letter classes that mean the backend never took
/// the order (it refused it, or could not be reached until the last
/// delivery, or the order went stale waiting).
pub const NEVER_TAKEN: &[FailureClass] = &[
    FailureClass::BackendRejected,
    FailureClass::BackendRedirect,
    FailureClass::BackendAddressRefused,
    FailureClass::Backend429,
    FailureClass::Backend408,
    FailureClass::Backend5xx,
    FailureClass::BackendTimeout,
    FailureClass::BackendUnreachable,
    FailureClass::BackendError,
    FailureClass::UnknownTenant,
    FailureClass::Stale,
];

/// Reads a forwarder dead letter (its headers and the original's body).
pub fn decide(hub: &HubConfig, h: &HeaderMap, body: &[u8], now: OffsetDateTime) -> Decision {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(name)?.as_str().map(str::to_owned))
    };
    let event = h
        .get(headers::EVENT)
        .map(|v| v.as_str().to_owned())
        .or_else(|| field("event"));
    if event.as_deref() != Some("created") {
        return Decision::Skip("not_created");
    }
    // Only a dead letter whose class says the backend never took the
    // order. A forwarder that got the backend's 2xx but could not store the
    // auto-accept retries the order and may die on `publish_failed` (or
    // the mover's `deliveries_exhausted`): rejecting then would cancel an
    // order the restaurant took.
    let never_taken = h
        .get(headers::dlq::ERROR_CLASS)
        .and_then(|c| c.as_str().parse::<FailureClass>().ok())
        .is_some_and(|c| NEVER_TAKEN.contains(&c));
    if !never_taken {
        return Decision::Skip("backend_may_have_it");
    }
    let get = |name: &str| h.get(name).map(|v| v.as_str().to_owned());
    let (Some(provider), Some(account_id)) = (
        get(headers::PROVIDER)
            .or_else(|| field("provider"))
            .and_then(|p| p.parse::<Provider>().ok()),
        get(headers::ACCOUNT),
    ) else {
        return Decision::Skip("unknown_account");
    };
    let Some(account) = hub.account(provider, &account_id) else {
        return Decision::Skip("unknown_account");
    };
    if !account.auto_reject {
        return Decision::Skip("auto_reject_off");
    }
    let (Some(webhook_id), Some(order_id)) = (
        field("webhook_id").or_else(|| get(headers::WEBHOOK_ID)),
        field("provider_order_id"),
    ) else {
        return Decision::Skip("unreadable");
    };
    let tenant = get(headers::TENANT)
        .or_else(|| field("tenant"))
        .unwrap_or_else(|| account.tenant.clone());
    Decision::Reject(StatusCommand {
        schema: StatusSchemaV1,
        status_id: status_id(&webhook_id),
        tenant,
        provider,
        account: account.id.clone(),
        provider_order_id: order_id,
        action: Action::Reject,
        reason: Some(Reason {
            code: ReasonCode::Other,
            message: None,
        }),
        ready_at: None,
        unavailable_items: Vec::new(),
        origin: Origin::AutoReject,
        decided_at: now,
        order_webhook_id: Some(webhook_id),
    })
}

/// The headers a status command travels with.
pub fn command_headers(cmd: &StatusCommand) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("Nats-Msg-Id", crate::status_msg_id(&cmd.status_id).as_str());
    h.insert(headers::STATUS_ID, cmd.status_id.as_str());
    h.insert(headers::PROVIDER, cmd.provider.as_str());
    h.insert(headers::ACCOUNT, cmd.account.as_str());
    h.insert(headers::TENANT, cmd.tenant.as_str());
    if let Some(w) = &cmd.order_webhook_id {
        h.insert(headers::WEBHOOK_ID, w.as_str());
    }
    h.insert("Content-Type", "application/json");
    h
}

/// The reader.
pub struct AutoReject {
    /// Read for each dead letter: an account's `auto_reject` reloads.
    live: LiveConfig,
    js: jetstream::Context,
    metrics: Metrics,
    publish_timeout: Duration,
}

impl AutoReject {
    /// A reader on a config that never reloads.
    pub fn new(
        hub: Arc<HubConfig>,
        js: jetstream::Context,
        metrics: Metrics,
        publish_timeout: Duration,
    ) -> Self {
        let live = LiveConfig::new(HubConfig::clone(&hub), "(in process)");
        Self::live(live, js, metrics, publish_timeout)
    }

    /// A reader that decides each dead letter with the config serving then.
    pub fn live(
        live: LiveConfig,
        js: jetstream::Context,
        metrics: Metrics,
        publish_timeout: Duration,
    ) -> Self {
        AutoReject {
            live,
            js,
            metrics,
            publish_timeout,
        }
    }

    /// Reads until `shutdown`; sets up its consumer (retrying while the
    /// `DLQ` stream is not there yet).
    pub async fn run(self, manage: bool, shutdown: CancellationToken) {
        let defs = shared::streams::Definitions::load(&self.live.load().streams);
        let def = defs.consumer(shared::subjects::DLQ_STREAM, DURABLE).clone();
        let setup = || shared::streams::ensure_consumer(&self.js, &def, -1, manage);
        let setup = setup
            .retry(shared::backoff::infra())
            .notify(|e, after| {
                warn!(error = %e, retry_in_ms = after.as_millis() as u64, "auto-reject consumer setup failed")
            });
        let consumer = tokio::select! {
            r = setup => match r {
                Ok(c) => c,
                Err(e) => {
                    warn!(error = %e, "auto-reject consumer setup gave up");
                    return;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let mut pauses = shared::backoff::pauses();
        'open: while !shutdown.is_cancelled() {
            let opened = consumer
                .stream()
                .max_messages_per_batch(16)
                .expires(Duration::from_secs(5))
                .messages()
                .await;
            let mut messages = match opened {
                Ok(m) => m,
                Err(e) => {
                    let pause = pauses.next().unwrap_or(shared::backoff::MAX_DELAY);
                    warn!(error = %e, "auto-reject pull failed");
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => continue 'open,
                        _ = shutdown.cancelled() => return,
                    }
                }
            };
            info!(consumer = DURABLE, "reading forwarder dead letters");
            loop {
                let next = tokio::select! {
                    n = messages.next() => n,
                    _ = shutdown.cancelled() => return,
                };
                match next {
                    Some(Ok(msg)) => {
                        pauses = shared::backoff::pauses();
                        self.handle(&msg).await;
                    }
                    Some(Err(e)) => debug!(error = %e, "auto-reject pull restarted"),
                    None => continue 'open,
                }
            }
        }
    }

    async fn handle(&self, msg: &jetstream::Message) {
        let empty = HeaderMap::new();
        let h = msg.headers.as_ref().unwrap_or(&empty);
        let decision = decide(
            &self.live.load(),
            h,
            &msg.payload,
            OffsetDateTime::now_utc(),
        );
        let cmd = match decision {
            Decision::Skip(why) => {
                debug!(why, subject = %msg.subject, "dead letter not auto-rejected");
                self.metrics.count(why);
                if let Err(e) = msg.ack().await {
                    warn!(error = %e, "auto-reject ack failed");
                }
                return;
            }
            Decision::Reject(cmd) => cmd,
        };
        match self.publish(&cmd).await {
            Ok(()) => {
                self.metrics.count("published");
                info!(
                    provider = %cmd.provider,
                    account = %cmd.account,
                    order = %shared::redact::truncate(&cmd.provider_order_id, 64),
                    status_id = %cmd.status_id,
                    "a new order the backend never took: rejected at the provider"
                );
                if let Err(e) = msg.ack().await {
                    warn!(error = %e, "auto-reject ack failed");
                }
            }
            Err(e) => {
                self.metrics.count("publish_failed");
                warn!(error = %e, status_id = %cmd.status_id, "auto-reject publish failed");
                let _ = msg
                    .ack_with(AckKind::Nak(Some(Duration::from_secs(5))))
                    .await;
            }
        }
    }

    async fn publish(&self, cmd: &StatusCommand) -> Result<(), String> {
        let subject = shared::subjects::status_command(cmd.provider, &cmd.account);
        let body = serde_json::to_vec(cmd).expect("a command encodes");
        let publish = async {
            let ack = self
                .js
                .publish_with_headers(subject.clone(), command_headers(cmd), Bytes::from(body))
                .await
                .map_err(|e| format!("publish to {subject}: {e}"))?;
            ack.await.map_err(|e| format!("no ack for {subject}: {e}"))
        };
        tokio::time::timeout(self.publish_timeout, publish)
            .await
            .map_err(|_| format!("no ack for {subject} in time"))??;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HUB: &str = r#"
[[tenant]]
id = "acme"
backend_url = "https://backend.example/orders"

[[account]]
id = "acme-wolt"
provider = "wolt"
tenant = "acme"
secret_envs = ["S"]
[account.api]
base_url = "https://pos.wolt.com"
token_url = "https://pos.wolt.com/oauth2/token"
client_id_env = "S"
client_secret_env = "S"
refresh_token_env = "S"

[[account]]
id = "acme-wolt-manual"
provider = "wolt"
tenant = "acme"
secret_envs = ["S"]
auto_reject = false
[account.api]
base_url = "https://pos.wolt.com"
token_url = "https://pos.wolt.com/oauth2/token"
client_id_env = "S"
client_secret_env = "S"
refresh_token_env = "S"
"#;

    fn hub() -> HubConfig {
        HubConfig::from_toml(HUB, "test", &|_| Some("s".to_owned())).unwrap()
    }

    fn headers(account: &str, event: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(headers::PROVIDER, "wolt");
        h.insert(headers::ACCOUNT, account);
        h.insert(headers::TENANT, "acme");
        h.insert(headers::dlq::ERROR_CLASS, "backend_rejected");
        if let Some(e) = event {
            h.insert(headers::EVENT, e);
        }
        h
    }

    const BODY: &[u8] =
        br#"{"webhook_id":"wh-9","event":"created","provider_order_id":"o-9","tenant":"acme"}"#;

    #[test]
    fn a_dead_lettered_new_order_becomes_a_reject() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let Decision::Reject(cmd) = decide(&hub(), &headers("acme-wolt", None), BODY, now) else {
            panic!("not a reject");
        };
        assert_eq!(cmd.status_id, "auto-reject-wh-9");
        assert_eq!(cmd.action, Action::Reject);
        assert_eq!(cmd.origin, Origin::AutoReject);
        assert_eq!(cmd.provider_order_id, "o-9");
        assert_eq!(cmd.account, "acme-wolt");
        assert_eq!(cmd.reason.as_ref().unwrap().code, ReasonCode::Other);
        assert_eq!(cmd.order_webhook_id.as_deref(), Some("wh-9"));
        let h = command_headers(&cmd);
        assert_eq!(
            h.get("Nats-Msg-Id").unwrap().as_str(),
            "status:auto-reject-wh-9"
        );
    }

    #[test]
    fn anything_else_is_skipped() {
        let now = OffsetDateTime::now_utc();
        let hub = hub();
        let updated = br#"{"webhook_id":"wh-9","event":"updated","provider_order_id":"o-9"}"#;
        assert_eq!(
            decide(&hub, &headers("acme-wolt", None), updated, now),
            Decision::Skip("not_created")
        );
        assert_eq!(
            decide(
                &hub,
                &headers("acme-wolt", Some("status_failed")),
                BODY,
                now
            ),
            Decision::Skip("not_created")
        );
        assert_eq!(
            decide(&hub, &headers("acme-wolt-manual", None), BODY, now),
            Decision::Skip("auto_reject_off")
        );
        assert_eq!(
            decide(&hub, &headers("nobody", None), BODY, now),
            Decision::Skip("unknown_account")
        );
        assert_eq!(
            decide(
                &hub,
                &headers("acme-wolt", Some("created")),
                b"not json",
                now
            ),
            Decision::Skip("unreadable")
        );
        // The backend may have taken it: never rejected.
        for class in ["publish_failed", "deliveries_exhausted", "nonsense"] {
            let mut h = headers("acme-wolt", None);
            h.insert(headers::dlq::ERROR_CLASS, class);
            assert_eq!(
                decide(&hub, &h, BODY, now),
                Decision::Skip("backend_may_have_it"),
                "{class}"
            );
        }
    }
}
