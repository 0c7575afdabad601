//! What happened to a message at a stage: one small event per step on the
//! `OUTCOMES` stream, for the ledger (DESIGN §8.4, issue 16).
//!
//! # Contract (`orderhub.outcome.v1`)
//! - Subject `outcomes.<stage>.<provider>` ([`subject`]); JSON body
//!   [`Outcome`]; `Nats-Msg-Id` [`Outcome::msg_id`], so that a stage that
//!   publishes the same step twice (a retried publish, a redelivery that
//!   repeats a step already recorded) stores it once within the stream's
//!   duplicate window.
//! - A stage publishes the outcome of a message and awaits JetStream's ack
//!   *before* it acks (or dead-letters) the message itself: the ledger
//!   never misses a step of a message the pipeline finished. A failed
//!   outcome publish is a transient failure of the message (it is retried
//!   like a failed publish of the stage's own output).
//! - Steps ([`Kind`]): the ingress's acceptance is the raw webhook on
//!   `WEBHOOKS` itself (no outcome); the transformer's `converted` or
//!   `refused`; each backend `attempt` of the forwarder (status, duration)
//!   and its final `delivered`; each provider `status_call` of the status
//!   worker; `dead_lettered` by any stage; `replayed` and `purged` by the
//!   operator CLI.
//! - Ids: `webhook_id` (the raw webhook's hub id) joins every step of one
//!   webhook; `tenant`, `provider`, `provider_order_id` join an order's
//!   webhooks (created, updated, cancelled, the backend's decisions).
//!   `source` names the stream message the step was about.
//! - Nothing in an outcome is secret: no body, no header, no credential;
//!   `error` is the already-redacted text the stage logs.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::Provider;

/// The stream's name (`nats/streams.toml`).
pub const OUTCOMES_STREAM: &str = "OUTCOMES";

/// All outcomes.
pub const OUTCOMES_ALL: &str = "outcomes.>";

/// The `schema` value of every outcome.
pub const SCHEMA: &str = "orderhub.outcome.v1";

/// Longest `error` text kept in an outcome.
pub const MAX_ERROR_LEN: usize = 1024;

/// `outcomes.<stage>.<provider>`.
pub fn subject(stage: Stage, provider: Provider) -> String {
    format!("outcomes.{}.{provider}", stage.as_str())
}

/// The stage that took the step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    Ingress,
    Transformer,
    Fetcher,
    Forwarder,
    StatusSync,
    DlqInspector,
}

impl Stage {
    /// The stage's binary name (`status-sync`), also its subject token.
    pub const fn as_str(self) -> &'static str {
        match self {
            Stage::Ingress => "ingress",
            Stage::Transformer => "transformer",
            Stage::Fetcher => "fetcher",
            Stage::Forwarder => "forwarder",
            Stage::StatusSync => "status-sync",
            Stage::DlqInspector => "dlq-inspector",
        }
    }
}

/// Which step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The transformer published the canonical order (`order_seq` names it
    /// on `ORDERS`).
    Converted,
    /// The transformer refused the payload (permanently: it is also
    /// dead-lettered).
    Refused,
    /// The fetcher fetched a notified order (`source` the notification).
    Fetched,
    /// One request to the backend: `http_status` (absent when no answer
    /// came), `duration_ms`, `ok`.
    Attempt,
    /// The backend took the order event (its 2xx or 409): the last step of
    /// the way in.
    Delivered,
    /// One call to the provider for a decision (`action`, `http_status`,
    /// `duration_ms`, `ok`; `ok` with `already_done` when the provider had
    /// it already).
    StatusCall,
    /// The message went to the DLQ (`error_class`, `error`).
    DeadLettered,
    /// An operator replayed a dead letter (`source` the DLQ entry).
    Replayed,
    /// An operator purged a dead letter.
    Purged,
}

impl Kind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Converted => "converted",
            Kind::Refused => "refused",
            Kind::Fetched => "fetched",
            Kind::Attempt => "attempt",
            Kind::Delivered => "delivered",
            Kind::StatusCall => "status_call",
            Kind::DeadLettered => "dead_lettered",
            Kind::Replayed => "replayed",
            Kind::Purged => "purged",
        }
    }
}

/// A stream message a step was about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub stream: String,
    pub seq: u64,
    /// Which delivery of that message took the step (1 = the first).
    pub delivery: u64,
}

/// One step of one message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// Always [`SCHEMA`].
    pub schema: String,
    pub stage: Stage,
    pub kind: Kind,
    /// When the step ended, RFC 3339 UTC.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub provider: Provider,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The raw webhook's hub id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_order_id: Option<String>,
    /// The canonical order's event (`created`, `cancelled`, ...), where one
    /// is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// A status call's action (`accept`, ...) and its decision's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_id: Option<String>,
    /// Whether the step succeeded.
    pub ok: bool,
    /// The provider had the decision already (a status call's "already
    /// done" answer).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub already_done: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_class: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The message the step was about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// `converted`: where the canonical order landed on `ORDERS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_seq: Option<u64>,
    /// Which of several steps of one delivery this is (a delivery that
    /// makes two provider calls, say); 0 for the first.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub step: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Outcome {
    /// A step with every optional field empty; fill in what the stage knows.
    pub fn new(stage: Stage, kind: Kind, provider: Provider, ok: bool) -> Self {
        Outcome {
            schema: SCHEMA.to_owned(),
            stage,
            kind,
            at: OffsetDateTime::now_utc(),
            provider,
            account: None,
            tenant: None,
            webhook_id: None,
            provider_order_id: None,
            event: None,
            action: None,
            status_id: None,
            ok,
            already_done: false,
            http_status: None,
            duration_ms: None,
            error_class: None,
            error: None,
            source: None,
            order_seq: None,
            step: 0,
        }
    }

    /// Sets `error`, one line and at most [`MAX_ERROR_LEN`] bytes.
    pub fn with_error(mut self, class: &str, error: &str) -> Self {
        let flat: String = error
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        self.error_class = Some(class.to_owned());
        self.error = Some(crate::redact::prefix_within(flat.trim(), MAX_ERROR_LEN).to_owned());
        self
    }

    /// `Nats-Msg-Id`: one per (stage, step, source message, delivery), so a
    /// step recorded twice is stored once; without a source, the webhook
    /// id and the time.
    pub fn msg_id(&self) -> String {
        match &self.source {
            Some(s) => format!(
                "outcome:{}:{}:{}:{}:{}:{}",
                self.stage.as_str(),
                self.kind.as_str(),
                s.stream,
                s.seq,
                s.delivery,
                self.step
            ),
            None => format!(
                "outcome:{}:{}:{}:{}:{}",
                self.stage.as_str(),
                self.kind.as_str(),
                self.webhook_id.as_deref().unwrap_or("-"),
                self.at.unix_timestamp_nanos(),
                self.step
            ),
        }
    }
}

/// The outcome was not stored.
#[derive(Debug, Clone, thiserror::Error)]
#[error("outcome publish failed: {0}")]
pub struct PublishError(pub String);

/// Publishes `outcome` and waits for JetStream's ack, at most `timeout`.
/// A duplicate (the same step recorded before) is success.
pub async fn publish(
    js: &jetstream::Context,
    outcome: &Outcome,
    timeout: Duration,
) -> Result<(), PublishError> {
    let body = serde_json::to_vec(outcome).map_err(|e| PublishError(e.to_string()))?;
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", outcome.msg_id().as_str());
    let work = async {
        let ack = js
            .publish_with_headers(
                subject(outcome.stage, outcome.provider),
                headers,
                body.into(),
            )
            .await
            .map_err(|e| PublishError(e.to_string()))?;
        ack.await.map_err(|e| PublishError(e.to_string()))?;
        Ok(())
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| PublishError(format!("no ack within {timeout:?}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outcome_round_trips_and_leaves_empty_fields_out() {
        let mut o = Outcome::new(Stage::Forwarder, Kind::Attempt, Provider::Careem, false)
            .with_error("backend_5xx", "backend answered 503:\nbusy");
        o.tenant = Some("acme".into());
        o.webhook_id = Some("wh_1".into());
        o.http_status = Some(503);
        o.duration_ms = Some(12);
        o.source = Some(Source {
            stream: "ORDERS".into(),
            seq: 7,
            delivery: 2,
        });
        let json = serde_json::to_value(&o).unwrap();
        assert_eq!(json["stage"], "forwarder");
        assert_eq!(json["kind"], "attempt");
        assert_eq!(json["error"], "backend answered 503: busy");
        assert!(json.get("provider_order_id").is_none() && json.get("already_done").is_none());
        let back: Outcome = serde_json::from_value(json).unwrap();
        assert_eq!(back, o);
        assert_eq!(o.msg_id(), "outcome:forwarder:attempt:ORDERS:7:2:0");
        assert_eq!(
            subject(Stage::StatusSync, Provider::Wolt),
            "outcomes.status-sync.wolt"
        );
    }

    #[test]
    fn a_long_error_is_cut_to_the_limit() {
        let o = Outcome::new(Stage::Transformer, Kind::Refused, Provider::Wolt, false)
            .with_error("invalid_payload", &"x".repeat(5000));
        assert_eq!(o.error.unwrap().len(), MAX_ERROR_LEN);
    }
}
