//! One loop per stream: pull a batch, write it in one transaction, then ack.
//!
//! Contract:
//! - A batch is up to `batch` messages, or what arrived within
//!   `batch_wait`. It is acked only after [`Store::write`] committed it. A
//!   message older than the retention (its day would be dropped at once)
//!   is acked without a row.
//! - PostgreSQL unavailable: the batch is kept and written again on the
//!   infrastructure backoff, with in-progress acks so JetStream does not
//!   hand it out again meanwhile; nothing is acked, the consumer's lag
//!   grows, and the outage is logged once (when it starts and when it
//!   ends), never per batch. The ledger never dead-letters (its consumers
//!   have `max_deliver = -1`).
//! - Shutdown with a batch not written: its messages are NAKed, so the
//!   next ledger process gets them at once rather than after `ack_wait`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use futures::StreamExt;
use time::OffsetDateTime;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::metrics::Metrics;
use crate::record::{Incoming, Record, Source, headers_of};
use crate::store::{Store, WriteError, retention_cutoff, utc_day};

/// How the loops batch and wait.
#[derive(Debug, Clone)]
pub struct BatchOptions {
    pub batch: usize,
    pub batch_wait: Duration,
    pub retention_days: u32,
    /// The consumers' `ack_wait`: in-progress acks go out at a third of it.
    pub ack_wait: Duration,
}

/// Whether PostgreSQL answers, shared by the loops: the outage is logged
/// by the first loop that meets it and closed by the first that writes.
pub struct Health {
    down_since: std::sync::Mutex<Option<Instant>>,
    /// `/ready`'s `database` condition.
    pub up: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
}

impl Health {
    pub fn new(metrics: Arc<Metrics>) -> Health {
        Health {
            down_since: std::sync::Mutex::new(None),
            up: Arc::new(AtomicBool::new(false)),
            metrics,
        }
    }

    /// A write or the migrations failed.
    pub fn failed(&self, error: &WriteError) {
        let mut down = self.down_since.lock().expect("health lock");
        self.metrics.write_error(error);
        self.up.store(false, Ordering::Relaxed);
        self.metrics.db_up.set(0);
        if down.is_none() {
            *down = Some(Instant::now());
            warn!(%error, "postgres unavailable: nothing is acked, the ledger retries until it answers");
        }
    }

    /// A write or the migrations succeeded.
    pub fn succeeded(&self) {
        let mut down = self.down_since.lock().expect("health lock");
        if let Some(since) = down.take() {
            let outage = since.elapsed();
            self.metrics
                .db_outage_seconds_total
                .inc_by(outage.as_secs_f64());
            info!(
                outage_ms = outage.as_millis() as u64,
                "postgres back: catching up"
            );
        }
        self.up.store(true, Ordering::Relaxed);
        self.metrics.db_up.set(1);
        self.metrics.db_outage_seconds.set(0.0);
    }

    /// The current outage's length so far (zero when up), for the gauge.
    pub fn tick(&self) {
        let down = self.down_since.lock().expect("health lock");
        if let Some(since) = *down {
            self.metrics
                .db_outage_seconds
                .set(since.elapsed().as_secs_f64());
        }
    }
}

/// One stream's loop.
pub struct Loop {
    pub source: Source,
    pub consumer: PullConsumer,
    pub store: Arc<Store>,
    pub health: Arc<Health>,
    pub metrics: Arc<Metrics>,
    pub options: BatchOptions,
}

impl Loop {
    /// Runs until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut pauses = shared::backoff::pauses();
        while !shutdown.is_cancelled() {
            let batch = tokio::select! {
                b = self.fetch() => b,
                _ = shutdown.cancelled() => break,
            };
            let messages = match batch {
                Ok(m) => {
                    pauses = shared::backoff::pauses();
                    m
                }
                Err(e) => {
                    let pause = pauses.next().unwrap_or(shared::backoff::MAX_DELAY);
                    warn!(stream = self.source.stream(), error = %e, retry_in_ms = pause.as_millis() as u64, "pull failed");
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => continue,
                        _ = shutdown.cancelled() => break,
                    }
                }
            };
            if messages.is_empty() {
                continue;
            }
            if !self.write_then_ack(messages, &shutdown).await {
                break;
            }
        }
        debug!(stream = self.source.stream(), "ledger loop stopped");
    }

    async fn fetch(&self) -> anyhow::Result<Vec<jetstream::Message>> {
        let mut stream = self
            .consumer
            .batch()
            .max_messages(self.options.batch)
            .expires(self.options.batch_wait)
            .messages()
            .await?;
        let mut out = Vec::new();
        while let Some(m) = stream.next().await {
            match m {
                Ok(m) => out.push(m),
                // What arrived is written; the rest comes with the next pull.
                Err(e) => {
                    debug!(stream = self.source.stream(), error = %e, "pull ended early");
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Writes the batch (retrying while PostgreSQL is away) and acks it;
    /// false when shutdown came first (the batch was NAKed).
    async fn write_then_ack(
        &self,
        messages: Vec<jetstream::Message>,
        shutdown: &CancellationToken,
    ) -> bool {
        let label = self.source.label();
        self.metrics.received(label, messages.len());
        let cutoff = retention_cutoff(OffsetDateTime::now_utc(), self.options.retention_days);
        let mut records = Vec::with_capacity(messages.len());
        let mut expired = 0;
        for m in &messages {
            let incoming = match self.incoming(m) {
                Ok(i) => i,
                Err(e) => {
                    // Not a JetStream message (no reply subject): nothing
                    // to store or ack.
                    warn!(stream = self.source.stream(), error = %e, "message without stream info");
                    continue;
                }
            };
            if utc_day(incoming.time) < cutoff {
                expired += 1;
                continue;
            }
            records.push(Record::read(&incoming));
        }
        let unparsed = records
            .iter()
            .filter(|r| matches!(r, Record::Unparsed(_)))
            .count();
        let mut pauses = shared::backoff::pauses();
        let mut last_progress = Instant::now();
        let written = loop {
            let started = Instant::now();
            match self.store.write(&records).await {
                Ok(w) => {
                    self.metrics
                        .write_duration
                        .observe(started.elapsed().as_secs_f64());
                    self.health.succeeded();
                    break w;
                }
                Err(e) => {
                    self.health.failed(&e);
                    debug!(stream = self.source.stream(), error = %e, "batch not written");
                }
            }
            if last_progress.elapsed() >= self.options.ack_wait / 3 {
                for m in &messages {
                    let _ = m.ack_with(AckKind::Progress).await;
                }
                last_progress = Instant::now();
            }
            let pause = pauses.next().unwrap_or(shared::backoff::MAX_DELAY);
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.cancelled() => {
                    for m in &messages {
                        let _ = m.ack_with(AckKind::Nak(None)).await;
                    }
                    return false;
                }
            }
        };
        self.metrics
            .stored(label, records.len(), written, unparsed, expired);
        for m in &messages {
            if let Err(e) = m.ack().await {
                // The rows are committed: a redelivery is stored once.
                debug!(stream = self.source.stream(), error = %e, "ack failed");
            }
        }
        true
    }

    fn incoming(&self, m: &jetstream::Message) -> anyhow::Result<Incoming> {
        let info = m.info().map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Incoming {
            source: self.source,
            seq: info.stream_sequence,
            time: info.published,
            subject: m.subject.to_string(),
            headers: headers_of(m.headers.as_ref()),
            body: m.payload.clone(),
        })
    }
}
