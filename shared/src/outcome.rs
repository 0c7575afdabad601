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
//!
//! # Publishing
//! Stages publish through a [`Publisher`] ([`Step`]: an outcome that
//! borrows its ids from the message, so a step costs its JSON body, its
//! `Nats-Msg-Id` and the header map async-nats needs, nothing more). A
//! publish is split in two ([`Publisher::send`], then [`Pending::wait`]) so
//! that a stage sends the outcome, does its other awaited work (its own
//! publish, an auto-accept), and only then waits for the outcome's ack.
//! A handler's failure is counted in `<stage>_outcome_publish_failures{provider,
//! kind}` ([`PublishFailures`]); the worker's `dead_lettered` in
//! `worker_errors{error_type="dead_letter_publish_failed"}` (the dead letter
//! as a whole was not stored); the mover's is logged and its advisory
//! retried. A handler's and the worker's come back as a
//! transient [`Failure`] (`publish_failed`, or `stream_not_found` when no
//! stream stores `outcomes.>`). A message whose
//! provider this build does not know has no outcome ([`Outcome::provider`]
//! is a known provider): its dead letter is the only record.

use std::borrow::Cow;
use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::{HeaderMap, Subject};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::Provider;
use crate::failure::FailureClass;
use crate::worker::{Delivery, Failure};

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

/// [`subject`], built once per stage and provider (a clone shares it).
fn subject_of(stage: Stage, provider: Provider) -> Subject {
    static ALL: OnceLock<Vec<Subject>> = OnceLock::new();
    let all = ALL.get_or_init(|| {
        Stage::ALL
            .iter()
            .flat_map(|s| Provider::ALL.map(|p| Subject::from(subject(*s, p))))
            .collect()
    });
    let s = Stage::ALL.iter().position(|s| *s == stage).unwrap_or(0);
    let p = Provider::ALL
        .iter()
        .position(|p| *p == provider)
        .unwrap_or(0);
    all[s * Provider::ALL.len() + p].clone()
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
    pub const ALL: [Stage; 6] = [
        Stage::Ingress,
        Stage::Transformer,
        Stage::Fetcher,
        Stage::Forwarder,
        Stage::StatusSync,
        Stage::DlqInspector,
    ];

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

    /// `Nats-Msg-Id`: one per (stage, step, source message, delivery), so
    /// a step recorded twice is stored once; without a source, the webhook
    /// id and the time.
    pub fn msg_id(&self) -> String {
        self.as_step().msg_id()
    }

    /// The same outcome, borrowed (what [`Publisher`] sends).
    pub fn as_step(&self) -> Step<'_> {
        Step {
            schema: SCHEMA,
            stage: self.stage,
            kind: self.kind,
            at: self.at,
            provider: self.provider,
            account: self.account.as_deref(),
            tenant: self.tenant.as_deref(),
            webhook_id: self.webhook_id.as_deref(),
            provider_order_id: self.provider_order_id.as_deref(),
            event: self.event.as_deref(),
            action: self.action.as_deref(),
            status_id: self.status_id.as_deref(),
            ok: self.ok,
            already_done: self.already_done,
            http_status: self.http_status,
            duration_ms: self.duration_ms,
            error_class: self.error_class.as_deref(),
            error: self.error.as_deref().map(Cow::Borrowed),
            source: self.source.as_ref().map(|s| SourceRef {
                stream: &s.stream,
                seq: s.seq,
                delivery: s.delivery,
            }),
            order_seq: self.order_seq,
            step: self.step,
        }
    }
}

/// A stream message a step was about, borrowed ([`Source`]'s wire form).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SourceRef<'a> {
    pub stream: &'a str,
    pub seq: u64,
    pub delivery: u64,
}

/// One step of one message, borrowing its texts from the message it is
/// about: serializes exactly as the [`Outcome`] with the same fields (the
/// same field order, the same empty fields left out).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step<'a> {
    pub schema: &'static str,
    pub stage: Stage,
    pub kind: Kind,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub provider: Provider,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_order_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_id: Option<&'a str>,
    pub ok: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub already_done: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_class: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceRef<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_seq: Option<u64>,
    #[serde(skip_serializing_if = "is_zero")]
    pub step: u32,
}

impl<'a> Step<'a> {
    /// A step with every optional field empty.
    pub fn new(stage: Stage, kind: Kind, provider: Provider, ok: bool) -> Self {
        Step {
            schema: SCHEMA,
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

    /// A step about the worker's delivery `d`: its provider (`None` when
    /// the build does not know it), tenant, webhook id, account and event
    /// headers, and its stream, sequence and delivery count as `source`.
    pub fn of(stage: Stage, kind: Kind, d: &'a Delivery, ok: bool) -> Option<Self> {
        let provider = d.provider.parse::<Provider>().ok()?;
        Some(Step::about(stage, kind, provider, d, ok))
    }

    /// [`Step::of`] with the provider known otherwise (the order's).
    pub fn about(stage: Stage, kind: Kind, provider: Provider, d: &'a Delivery, ok: bool) -> Self {
        let mut s = Step::new(stage, kind, provider, ok);
        s.tenant = d.tenant.as_deref();
        s.webhook_id = d.webhook_id.as_deref();
        s.account = d.header(crate::headers::ACCOUNT);
        s.event = d.header(crate::headers::EVENT);
        s.source = Some(SourceRef {
            stream: &d.stream,
            seq: d.stream_seq,
            delivery: u64::try_from(d.delivered).unwrap_or(0),
        });
        s
    }

    /// Sets `error_class` and `error`: one line, at most [`MAX_ERROR_LEN`]
    /// bytes (copied only when it has a line break or a control
    /// character to flatten).
    pub fn with_error(mut self, class: FailureClass, error: &'a str) -> Self {
        let cut = crate::redact::prefix_within(error.trim(), MAX_ERROR_LEN);
        self.error_class = Some(class.as_str());
        self.error = Some(if cut.chars().any(char::is_control) {
            Cow::Owned(
                cut.chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .collect(),
            )
        } else {
            Cow::Borrowed(cut)
        });
        self
    }

    /// `Nats-Msg-Id`, as [`Outcome::msg_id`].
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
                self.webhook_id.unwrap_or("-"),
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
    let deadline = tokio::time::Instant::now() + timeout;
    let ack = send(js, &outcome.as_step(), deadline)
        .await
        .map_err(|(_, e)| PublishError(e))?;
    wait(ack, deadline, timeout)
        .await
        .map_err(|(_, e)| PublishError(e))
}

/// The step's subject, headers and body: everything the send needs, owned,
/// so that the send's future borrows nothing of the step.
fn encode(step: &Step<'_>) -> Result<(Subject, HeaderMap, Vec<u8>), (FailureClass, String)> {
    let body = serde_json::to_vec(step)
        .map_err(|e| (FailureClass::PublishFailed, format!("cannot encode: {e}")))?;
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", step.msg_id().as_str());
    Ok((subject_of(step.stage, step.provider), headers, body))
}

async fn send(
    js: &jetstream::Context,
    step: &Step<'_>,
    deadline: tokio::time::Instant,
) -> Result<PublishAckFuture, (FailureClass, String)> {
    let encoded = encode(step);
    send_encoded(js, encoded, deadline).await
}

async fn send_encoded(
    js: &jetstream::Context,
    encoded: Result<(Subject, HeaderMap, Vec<u8>), (FailureClass, String)>,
    deadline: tokio::time::Instant,
) -> Result<PublishAckFuture, (FailureClass, String)> {
    let (subject, headers, body) = encoded?;
    let sent = js.publish_with_headers(subject, headers, body.into());
    match tokio::time::timeout_at(deadline, sent).await {
        Ok(Ok(ack)) => Ok(ack),
        Ok(Err(e)) => Err((outcome_class(&e), e.to_string())),
        Err(_) => Err((FailureClass::PublishFailed, "not sent in time".to_owned())),
    }
}

async fn wait(
    ack: PublishAckFuture,
    deadline: tokio::time::Instant,
    timeout: Duration,
) -> Result<(), (FailureClass, String)> {
    match tokio::time::timeout_at(deadline, ack).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err((outcome_class(&e), e.to_string())),
        Err(_) => Err((
            FailureClass::PublishFailed,
            format!("no ack within {}ms", timeout.as_millis()),
        )),
    }
}

/// Always transient: an outcome is small (a `message_too_large` cannot be
/// its fault), and a missing stream is a deployment fault to wait out.
fn outcome_class(e: &jetstream::context::PublishError) -> FailureClass {
    match crate::failure::classify_publish(e) {
        FailureClass::StreamNotFound => FailureClass::StreamNotFound,
        _ => FailureClass::PublishFailed,
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    provider: &'static str,
    kind: &'static str,
}

/// `outcome_publish_failures{provider, kind}`: outcomes not stored (the
/// message was retried instead of acked). Registered once per stage, with
/// the stage's own metrics; every [`Publisher`] of the stage counts in it.
#[derive(Clone, Default)]
pub struct PublishFailures(Family<FailureLabels, Counter>);

impl PublishFailures {
    /// Registers under `registry` (the stage's prefix), every series of the
    /// kinds a stage publishes from 0.
    pub fn register(registry: &mut Registry) -> Self {
        let f = PublishFailures::default();
        registry.register(
            "outcome_publish_failures",
            "Outcome events OUTCOMES did not store in time (the message was retried instead of acked)",
            f.0.clone(),
        );
        for provider in Provider::ALL {
            for kind in [
                Kind::Converted,
                Kind::Refused,
                Kind::Fetched,
                Kind::Attempt,
                Kind::Delivered,
                Kind::StatusCall,
            ] {
                let _ = f.0.get_or_create(&FailureLabels {
                    provider: provider.as_str(),
                    kind: kind.as_str(),
                });
            }
        }
        f
    }
}

/// Publishes a stage's outcomes with its publish timeout and counts the
/// ones that were not stored.
#[derive(Clone)]
pub struct Publisher {
    js: jetstream::Context,
    timeout: Duration,
    failures: Family<FailureLabels, Counter>,
}

impl Publisher {
    /// A publisher whose failures are logged but not exported (a CLI, the
    /// worker's dead-letter path, which counts its own).
    pub fn new(js: jetstream::Context, timeout: Duration) -> Self {
        Publisher::counted(js, timeout, PublishFailures::default())
    }

    /// A publisher counting its failures in `failures`.
    pub fn counted(js: jetstream::Context, timeout: Duration, failures: PublishFailures) -> Self {
        Publisher {
            js,
            timeout,
            failures: failures.0,
        }
    }

    /// The publish timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends `step`; its ack is awaited with [`Pending::wait`], within the
    /// publish timeout counted from now.
    /// The returned future borrows the publisher only, not the step.
    pub fn send<'p>(
        &'p self,
        step: &Step<'_>,
    ) -> impl Future<Output = Result<Pending, Failure>> + Send + use<'p> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let labels = FailureLabels {
            provider: step.provider.as_str(),
            kind: step.kind.as_str(),
        };
        let encoded = encode(step);
        async move {
            match send_encoded(&self.js, encoded, deadline).await {
                Ok(ack) => Ok(Pending {
                    ack,
                    deadline,
                    timeout: self.timeout,
                    labels,
                    failures: self.failures.clone(),
                }),
                Err((class, e)) => Err(failed(&self.failures, &labels, class, &e)),
            }
        }
    }

    /// Sends `step` and waits for its ack.
    pub fn publish<'p>(
        &'p self,
        step: &Step<'_>,
    ) -> impl Future<Output = Result<(), Failure>> + Send + use<'p> {
        let sent = self.send(step);
        async move { sent.await?.wait().await }
    }
}

fn failed(
    failures: &Family<FailureLabels, Counter>,
    labels: &FailureLabels,
    class: FailureClass,
    error: &str,
) -> Failure {
    failures.get_or_create(labels).inc();
    tracing::warn!(
        kind = labels.kind,
        error_type = class.as_str(),
        error,
        "outcome not stored"
    );
    Failure::new(
        class,
        format!("outcome {} not stored: {error}", labels.kind),
    )
}

/// An outcome sent, its ack not yet awaited.
#[must_use = "an outcome counts only once its ack is awaited"]
pub struct Pending {
    ack: PublishAckFuture,
    deadline: tokio::time::Instant,
    timeout: Duration,
    labels: FailureLabels,
    failures: Family<FailureLabels, Counter>,
}

impl Pending {
    /// Waits for JetStream's ack (a duplicate is success), until the
    /// publish timeout counted from the send.
    pub async fn wait(self) -> Result<(), Failure> {
        wait(self.ack, self.deadline, self.timeout)
            .await
            .map_err(|(class, e)| failed(&self.failures, &self.labels, class, &e))
    }
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
    fn a_step_serializes_as_the_outcome_with_the_same_fields() {
        let mut o = Outcome::new(Stage::Transformer, Kind::Converted, Provider::Talabat, true);
        o.account = Some("acme-talabat".into());
        o.tenant = Some("acme".into());
        o.webhook_id = Some("wh_9".into());
        o.provider_order_id = Some("T-1".into());
        o.event = Some("created".into());
        o.order_seq = Some(41);
        o.step = 1;
        o.source = Some(Source {
            stream: "WEBHOOKS".into(),
            seq: 3,
            delivery: 1,
        });
        let mut s = Step::new(Stage::Transformer, Kind::Converted, Provider::Talabat, true);
        s.at = o.at;
        s.account = Some("acme-talabat");
        s.tenant = Some("acme");
        s.webhook_id = Some("wh_9");
        s.provider_order_id = Some("T-1");
        s.event = Some("created");
        s.order_seq = Some(41);
        s.step = 1;
        s.source = Some(SourceRef {
            stream: "WEBHOOKS",
            seq: 3,
            delivery: 1,
        });
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            serde_json::to_string(&o).unwrap()
        );
        assert_eq!(o.as_step(), s);
        assert_eq!(s.msg_id(), "outcome:transformer:converted:WEBHOOKS:3:1:1");
        assert_eq!(
            subject_of(Stage::DlqInspector, Provider::Keeta).as_str(),
            "outcomes.dlq-inspector.keeta"
        );
        assert_eq!(
            subject_of(Stage::Transformer, Provider::Careem).as_str(),
            "outcomes.transformer.careem"
        );
    }

    #[test]
    fn a_step_error_is_one_bounded_line_borrowed_when_it_can_be() {
        let s = Step::new(Stage::Forwarder, Kind::Attempt, Provider::Wolt, false)
            .with_error(FailureClass::Backend5xx, "backend answered 503");
        assert!(matches!(
            s.error,
            Some(Cow::Borrowed("backend answered 503"))
        ));
        assert_eq!(s.error_class, Some("backend_5xx"));
        let long = "x".repeat(5000);
        let s = Step::new(Stage::Forwarder, Kind::Attempt, Provider::Wolt, false)
            .with_error(FailureClass::Backend5xx, &long);
        assert_eq!(s.error.unwrap().len(), MAX_ERROR_LEN);
        let s = Step::new(Stage::Forwarder, Kind::Attempt, Provider::Wolt, false)
            .with_error(FailureClass::Backend5xx, "a\nb\r\n");
        assert_eq!(s.error.as_deref(), Some("a b"));
    }

    #[test]
    fn a_long_error_is_cut_to_the_limit() {
        let o = Outcome::new(Stage::Transformer, Kind::Refused, Provider::Wolt, false)
            .with_error("invalid_payload", &"x".repeat(5000));
        assert_eq!(o.error.unwrap().len(), MAX_ERROR_LEN);
    }
}
