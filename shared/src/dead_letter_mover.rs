//! The safety net: moves a message whose worker died (or hung) during its
//! last delivery into the DLQ.
//!
//! JetStream keeps such a message in its stream and only says so with a
//! one-off `MAX_DELIVERIES` advisory (emitted when the consumer next has a
//! pull waiting). The `ADVISORIES` stream captures those, and each worker
//! process runs a mover on its consumer's advisories: it fetches the original
//! by stream sequence, publishes the DLQ entry with the same `Nats-Msg-Id` a
//! worker would use (`dlq:<stream>:<seq>`, so a message dead-lettered by both
//! is stored once), deletes the original where the source's retention needs
//! it, and only then acks the advisory. Any failure NAKs the advisory for a
//! later try: it is the only record of the message.
//!
//! `MSG_TERMINATED` advisories whose reason starts with `dlq:` come from a
//! worker that already dead-lettered the message and are skipped; a message
//! terminated by anything else is dead-lettered too.
//!
//! A stage that publishes outcomes also gets a `dead_lettered` outcome
//! (source: the original's stream, sequence and the advisory's delivery
//! count; the ids from the original's headers), sent before the DLQ entry
//! and awaited after it: the advisory is acked only when both are stored.
//! An original that is gone has no headers, hence no provider: no outcome.

use std::time::{Duration, SystemTime};

use async_nats::jetstream::{self, AckKind, consumer::PullConsumer, kv};
use bytes::Bytes;
use futures::StreamExt;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::dlq::{self, DeadLetter, MovedBy};
use crate::failure::FailureClass;
use crate::failure_history;
use crate::headers;
use crate::outcome::{Kind, SourceRef, Step};
use crate::streams::StreamDef;
use crate::worker::{Outcomes, WorkerMetrics};

/// The fields of a consumer advisory the mover needs.
#[derive(Debug, Clone, Deserialize)]
pub struct Advisory {
    #[serde(rename = "type")]
    pub kind: String,
    pub stream: String,
    pub consumer: String,
    pub stream_seq: u64,
    #[serde(default)]
    pub deliveries: i64,
    #[serde(default)]
    pub reason: Option<String>,
}

const MAX_DELIVER_TYPE: &str = "io.nats.jetstream.advisory.v1.max_deliver";
const TERMINATED_TYPE: &str = "io.nats.jetstream.advisory.v1.terminated";

/// Moves exhausted messages of one work consumer into the DLQ.
pub struct Mover {
    js: jetstream::Context,
    stage: String,
    source: StreamDef,
    /// The consumer, or per-tenant prefix, whose advisories this mover takes.
    owner: String,
    failures: kv::Store,
    metrics: WorkerMetrics,
    outcomes: Option<Outcomes>,
}

/// What the mover did with an advisory.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Handled {
    Moved,
    Skipped(&'static str),
}

impl Mover {
    pub fn new(
        js: jetstream::Context,
        stage: String,
        source: StreamDef,
        owner: String,
        failures: kv::Store,
        metrics: WorkerMetrics,
    ) -> Self {
        Mover {
            js,
            stage,
            source,
            owner,
            failures,
            metrics,
            outcomes: None,
        }
    }

    /// Publishes a `dead_lettered` outcome with each entry.
    pub(crate) fn with_outcomes(mut self, outcomes: Outcomes) -> Self {
        self.outcomes = Some(outcomes);
        self
    }

    /// Reads advisories until `shutdown`; one at a time (they are rare).
    /// A failed pull pauses on the infrastructure backoff; an advisory that
    /// could not be handled comes back after the same backoff's delay for
    /// its delivery count.
    pub async fn run(self, advisories: PullConsumer, shutdown: CancellationToken) {
        let mut pauses = crate::backoff::pauses();
        while !shutdown.is_cancelled() {
            let batch = advisories
                .batch()
                .max_messages(16)
                .expires(Duration::from_secs(5))
                .messages()
                .await;
            let mut batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    let pause = pauses.next().unwrap_or(crate::backoff::MAX_DELAY);
                    debug!(error = %e, retry_in_ms = pause.as_millis() as u64, "mover pull failed");
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => continue,
                        _ = shutdown.cancelled() => break,
                    }
                }
            };
            pauses = crate::backoff::pauses();
            loop {
                // Advisories are rare: on shutdown, stop waiting for one. A
                // late one goes unacked and comes back to another mover.
                let msg = tokio::select! {
                    next = batch.next() => match next {
                        Some(Ok(m)) => m,
                        _ => break,
                    },
                    _ = shutdown.cancelled() => break,
                };
                let result = match serde_json::from_slice::<Advisory>(&msg.payload) {
                    Ok(adv) => self.handle(&adv).await,
                    Err(e) => {
                        warn!(error = %e, "unreadable advisory; dropped");
                        Ok(Handled::Skipped("unreadable"))
                    }
                };
                match result {
                    Ok(h) => {
                        debug!(?h, "advisory handled");
                        let _ = msg.double_ack().await;
                    }
                    Err(e) => {
                        let delivered = msg.info().map(|i| i.delivered).unwrap_or(1);
                        let delay = crate::backoff::delay(usize::try_from(delivered).unwrap_or(1));
                        warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "advisory not handled; retrying later");
                        let _ = msg.ack_with(AckKind::Nak(Some(delay))).await;
                    }
                }
            }
        }
    }

    async fn handle(&self, adv: &Advisory) -> Result<Handled, String> {
        let owned = adv.consumer == self.owner
            || adv
                .consumer
                .strip_prefix(self.owner.as_str())
                .is_some_and(|rest| rest.starts_with('-'));
        if adv.stream != self.source.name || !owned {
            return Ok(Handled::Skipped("other consumer"));
        }
        let (class, message) = match adv.kind.as_str() {
            MAX_DELIVER_TYPE => {
                let history =
                    failure_history::load(&self.failures, &adv.stream, adv.stream_seq).await;
                let last = history
                    .as_ref()
                    .map(|h| format!("; last error ({}): {}", h.error_class, h.error))
                    .unwrap_or_default();
                (
                    FailureClass::DeliveriesExhausted,
                    format!(
                        "no worker finished the last of {} deliveries (it crashed, hung or was stopped){last}",
                        adv.deliveries
                    ),
                )
            }
            TERMINATED_TYPE => match adv.reason.as_deref() {
                Some(r) if r.starts_with("dlq:") => {
                    return Ok(Handled::Skipped("already dead-lettered"));
                }
                other => (
                    FailureClass::Terminated,
                    format!(
                        "terminated without a dead letter (reason: {})",
                        other.unwrap_or("none")
                    ),
                ),
            },
            _ => return Ok(Handled::Skipped("other advisory")),
        };
        self.move_to_dlq(adv, class, &message).await?;
        Ok(Handled::Moved)
    }

    async fn move_to_dlq(
        &self,
        adv: &Advisory,
        class: FailureClass,
        message: &str,
    ) -> Result<(), String> {
        let stream = self
            .js
            .get_stream(&adv.stream)
            .await
            .map_err(|e| format!("stream {}: {e}", adv.stream))?;
        let now = SystemTime::now();
        let history = failure_history::load(&self.failures, &adv.stream, adv.stream_seq).await;
        let original = match stream.get_raw_message(adv.stream_seq).await {
            Ok(m) => Some(m),
            Err(e) if e.kind() == jetstream::stream::RawMessageErrorKind::NoMessageFound => None,
            Err(e) => return Err(format!("fetch {}#{}: {e}", adv.stream, adv.stream_seq)),
        };
        let (subject, orig_headers, body, error) = match &original {
            Some(m) => (
                m.subject.to_string(),
                Some(m.headers.clone()),
                m.payload.clone(),
                message.to_owned(),
            ),
            // Gone (max_age, a purge): still record that it failed, so an
            // operator sees it instead of nothing.
            None => (
                String::new(),
                None,
                Bytes::new(),
                format!("{message}; the original is no longer in {}", adv.stream),
            ),
        };
        let get = |name: &str| {
            orig_headers
                .as_ref()
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_owned())
        };
        let provider = get(headers::PROVIDER)
            .filter(|p| crate::subjects::check_token(p).is_ok())
            .unwrap_or_else(|| "unknown".to_owned());
        let entry = DeadLetter {
            stage: self.stage.clone(),
            stream: adv.stream.clone(),
            subject,
            seq: adv.stream_seq,
            webhook_id: get(headers::WEBHOOK_ID),
            provider: provider.clone(),
            tenant: get(headers::TENANT),
            deliveries: adv.deliveries,
            first_failure: history.as_ref().map(|h| h.first_failure).unwrap_or(now),
            last_failure: now,
            error_class: class,
            error,
            moved_by: MovedBy::Mover,
        };
        let header = |name: &str| {
            orig_headers
                .as_ref()
                .and_then(|h| h.get(name))
                .map(|v| v.as_str())
        };
        let step = self.outcomes.as_ref().and_then(|out| {
            let provider = provider.parse::<crate::Provider>().ok()?;
            let mut step = Step::new(out.stage, Kind::DeadLettered, provider, false)
                .with_error(class, &entry.error);
            step.tenant = header(headers::TENANT);
            step.webhook_id = header(headers::WEBHOOK_ID);
            step.account = header(headers::ACCOUNT);
            step.event = header(headers::EVENT);
            step.source = Some(SourceRef {
                stream: &adv.stream,
                seq: adv.stream_seq,
                delivery: u64::try_from(adv.deliveries).unwrap_or(0),
            });
            Some(step)
        });
        let pending = match (&self.outcomes, &step) {
            (Some(out), Some(step)) => Some(out.publisher.send(step).await),
            _ => None,
        };
        let stored = dlq::publish(&self.js, &entry, orig_headers.as_ref(), body.clone())
            .await
            .map_err(|e| e.to_string());
        let outcome_stored = match pending {
            None => Ok(()),
            Some(Ok(p)) => p.wait().await.map_err(|f| f.message),
            Some(Err(f)) => Err(f.message),
        };
        stored.and(outcome_stored)?;
        if original.is_some() && self.source.deletes_on_ack() {
            stream
                .delete_message(adv.stream_seq)
                .await
                .map_err(|e| format!("delete {}#{}: {e}", adv.stream, adv.stream_seq))?;
        }
        failure_history::forget(&self.failures, &adv.stream, adv.stream_seq).await;
        info!(stream = %adv.stream, seq = adv.stream_seq, "mover dead-lettered an exhausted message");
        self.metrics
            .dead_lettered(&provider, class, &entry.error, MovedBy::Mover);
        Ok(())
    }
}
