//! The worker loop every consuming stage runs: fetch from a durable pull
//! consumer shared by all replicas → handle → ack, retry later, or
//! dead-letter. A stage supplies only its [`Handler`].
//!
//! Contract:
//! - Retries are JetStream redeliveries. On [`Outcome::Retry`] the worker
//!   answers `-NAK {"delay": d}` with `d` from the configured schedule for
//!   this delivery (a `Retry-After` hint raises it within bounds). The
//!   consumer has no `backoff` list, so `d` is exactly the wait.
//! - On the last allowed delivery (`max_deliver`) a retry becomes a
//!   dead-letter. [`Outcome::DeadLetter`] dead-letters at once.
//! - Dead-lettering publishes the DLQ entry, awaits its ack, and only then
//!   terminates the original with `+TERM dlq:<class>`. If the DLQ publish
//!   fails the message is NAK'd instead, so it is never lost: it comes back,
//!   or, on its last delivery, the advisory mover takes it.
//! - Success is acked with a confirmed (double) ack, so a stage that
//!   published downstream before acking is effectively-once together with
//!   the downstream `Nats-Msg-Id`. The handler's slot is released as soon as
//!   its verdict is in, before the ack (or NAK, or dead letter) is
//!   confirmed: an ack whose confirmation fails is counted
//!   (`worker_errors{error_type="ack_failed"}`) and the message comes back
//!   after `ack_wait`, so delivery stays at-least-once, as before.
//! - One pull stays open per consumer ([`crate::pull`]), asking for exactly
//!   as many messages as there are free slots.
//! - While a handler runs, the worker sends in-progress acks so a long
//!   handler is not redelivered under it.
//! - Shutdown: no new pulls; the pull's inbox is closed at once (an idle
//!   worker stops without waiting for its request to expire) and the
//!   messages that had already arrived are handled; in-flight handlers get
//!   `shutdown_grace` to finish; whatever is still running then is NAK'd for
//!   immediate redelivery elsewhere.
//! - Infrastructure failures (consumer setup, a failed pull) are retried on
//!   [`crate::backoff`]; message redeliveries follow only the schedule.
//! - Each worker also runs the advisory mover for its consumer
//!   ([`crate::dead_letter_mover`]), the safety net for a worker that dies on a
//!   message's last delivery.
//! - Outcomes ([`crate::outcome`]): a worker whose stage is one of
//!   [`crate::outcome::Stage`] makes sure the `OUTCOMES` stream exists at
//!   setup, and dead-lettering also publishes a `dead_lettered` outcome
//!   (class, error, source = the message's stream, sequence and delivery),
//!   sent before the DLQ entry and awaited after it: the message is
//!   terminated only when both are stored, else NAK'd like a failed DLQ
//!   publish (`worker_errors{error_type="dead_letter_publish_failed"}`).
//!   The handler publishes its own steps before it returns its verdict.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind, consumer::PullConsumer, kv};
use backon::Retryable;
use bytes::Bytes;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::dlq::{self, DeadLetter, MovedBy};
use crate::failure::FailureClass;
use crate::failure_history;
use crate::headers;
use crate::outcome::{self, Step};
use crate::pull::{OpenPull, PullError};
use crate::retry::RetrySchedule;
use crate::streams::{BucketDef, ConsumerDef, Definitions, StreamDef};

/// What went wrong in a handler: its class from the one vocabulary
/// ([`FailureClass`]: metrics, logs, the DLQ) and a human text (never a
/// secret or a whole payload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub class: FailureClass,
    pub message: String,
    /// A `Retry-After` hint; the schedule's delay is raised to it, within
    /// the configured bound.
    pub retry_after: Option<Duration>,
}

/// The longest failure text kept, in characters: it is logged on every
/// retry and stored with the dead letter. Handlers cut the untrusted values
/// they quote ([`crate::redact`]); this bounds the whole.
pub const MAX_FAILURE_CHARS: usize = 4096;

impl Failure {
    pub fn new(class: FailureClass, message: impl Into<String>) -> Self {
        let message = message.into();
        let message = match crate::redact::truncate(&message, MAX_FAILURE_CHARS) {
            std::borrow::Cow::Borrowed(_) => message,
            std::borrow::Cow::Owned(cut) => cut,
        };
        Failure {
            class,
            message,
            retry_after: None,
        }
    }

    pub fn with_retry_after(mut self, hint: Option<Duration>) -> Self {
        self.retry_after = hint;
        self
    }
}

/// A handler's verdict on one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done: ack.
    Ack,
    /// Transient: redeliver after the schedule's delay (dead-letter if this
    /// was the last allowed delivery).
    Retry(Failure),
    /// Permanent: dead-letter now, no more deliveries.
    DeadLetter(Failure),
}

/// One delivery of a message, as a handler sees it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub subject: String,
    pub headers: HeaderMap,
    pub payload: Bytes,
    pub stream: String,
    pub stream_seq: u64,
    /// 1-based; counts NAK'd and timed-out deliveries too.
    pub delivered: i64,
    /// When JetStream stored the message.
    pub published: SystemTime,
    /// True when a retry would exceed `max_deliver`.
    pub is_last: bool,
    /// Provider token: the `Orderhub-Provider` header, else `unknown`.
    pub provider: String,
    pub tenant: Option<String>,
    pub webhook_id: Option<String>,
}

impl Delivery {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.as_str())
    }
}

/// A stage's message handler.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, delivery: &Delivery) -> impl Future<Output = Outcome> + Send;
}

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// `transformer`, `forwarder`: the `<stage>` of `dlq.<stage>.<provider>`.
    pub stage: String,
    pub source: StreamDef,
    /// The consumers to read: one, or one per tenant (the forwarder). Each
    /// has its own loop and its own `concurrency` handlers, so one
    /// consumer's slow or held messages never block another's.
    pub consumers: Vec<ConsumerDef>,
    /// The durable name (or per-tenant prefix) whose advisories the mover
    /// takes: `transformer`, `forwarder` (for `forwarder-<tenant>`).
    pub owner: String,
    pub mover: ConsumerDef,
    /// The bucket remembering failure history between deliveries.
    pub failures: BucketDef,
    pub retry: RetrySchedule,
    /// Handlers running at once in this process, per consumer.
    pub concurrency: usize,
    /// How often a running handler tells JetStream it is still working.
    pub progress_interval: Duration,
    /// How long shutdown waits for in-flight handlers.
    pub shutdown_grace: Duration,
    /// How long one pull request waits for messages.
    pub pull_expires: Duration,
    /// Create or update the consumers (else only check they exist).
    pub manage: bool,
    /// `OUTCOMES`, set up with the consumers when the stage publishes
    /// outcomes.
    pub outcomes: StreamDef,
    /// How long a `dead_lettered` outcome may wait for its ack.
    pub outcome_timeout: Duration,
    /// How often the consumers' state is read for the lag gauges.
    pub lag_probe_every: Duration,
}

impl WorkerOptions {
    /// The outcome vocabulary's name of this worker's stage, if it has
    /// one (a test's or another binary's worker publishes no outcomes).
    pub fn outcome_stage(&self) -> Option<outcome::Stage> {
        outcome::Stage::ALL
            .into_iter()
            .find(|s| s.as_str() == self.stage)
    }
}

impl WorkerOptions {
    /// The worker of consumer `stream`/`durable` in `defs` (for a
    /// per-tenant consumer, one per tenant in `tenants`), with defaults
    /// derived from the consumer: progress every third of `ack_wait`, 20 s
    /// grace, 5 s pulls, 256 handlers at once (BENCHMARKS.md: 64 could not
    /// keep up with the ingress on two cores).
    pub fn new(
        stage: impl Into<String>,
        defs: &Definitions,
        stream: &str,
        durable: &str,
        tenants: &[&str],
        retry: RetrySchedule,
    ) -> Self {
        let template = defs.consumer(stream, durable).clone();
        let progress_interval = template.ack_wait / 3;
        let consumers = if template.per_tenant {
            tenants.iter().map(|t| template.for_tenant(t)).collect()
        } else {
            vec![template.clone()]
        };
        WorkerOptions {
            stage: stage.into(),
            source: defs.stream(stream).clone(),
            mover: defs.mover_of(&template).clone(),
            owner: template.durable.clone(),
            failures: defs.bucket(crate::streams::FAILURES_BUCKET).clone(),
            consumers,
            retry,
            concurrency: 256,
            progress_interval,
            shutdown_grace: Duration::from_secs(20),
            pull_expires: Duration::from_secs(5),
            manage: true,
            outcomes: defs.stream(outcome::OUTCOMES_STREAM).clone(),
            outcome_timeout: Duration::from_secs(5),
            lag_probe_every: Duration::from_secs(15),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConsumerLabels {
    consumer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    provider: String,
    error_type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    provider: String,
    outcome: &'static str,
}

/// The worker's metrics. Each event is one method that logs and counts.
#[derive(Clone)]
pub struct WorkerMetrics {
    received: Family<ProviderLabels, Counter>,
    acked: Family<ProviderLabels, Counter>,
    retried: Family<ErrorLabels, Counter>,
    dead_lettered: Family<ErrorLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    duration: Family<OutcomeLabels, Histogram>,
    in_flight: Gauge,
    lag: Family<ConsumerLabels, Gauge>,
    stalled: Family<ConsumerLabels, Gauge>,
}

impl WorkerMetrics {
    /// Registers under `registry` (already prefixed with the stage).
    pub fn register(registry: &mut Registry) -> Self {
        let m = WorkerMetrics {
            received: Family::default(),
            acked: Family::default(),
            retried: Family::default(),
            dead_lettered: Family::default(),
            errors: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(crate::telemetry::duration_buckets())
            }),
            in_flight: Gauge::default(),
            lag: Family::default(),
            stalled: Family::default(),
        };
        registry.register(
            "consumer_lag_messages",
            "Messages of the consumer's stream not yet acked: waiting plus in flight (read every 15 s)",
            m.lag.clone(),
        );
        registry.register(
            "consumer_stalled_seconds",
            "How long the consumer's ack floor has not moved while messages wait (0 when none wait)",
            m.stalled.clone(),
        );
        registry.register(
            "messages_received",
            "Deliveries taken from the consumer",
            m.received.clone(),
        );
        registry.register(
            "messages_acked",
            "Messages handled and acked",
            m.acked.clone(),
        );
        registry.register(
            "messages_retried",
            "Deliveries NAK'd for a later redelivery",
            m.retried.clone(),
        );
        registry.register(
            "messages_dead_lettered",
            "Messages moved to the DLQ stream",
            m.dead_lettered.clone(),
        );
        registry.register(
            "worker_errors",
            "Failures of the worker itself (acks, dead-letter publishes)",
            m.errors.clone(),
        );
        registry.register(
            "handler_duration_seconds",
            "Handler run time by outcome",
            m.duration.clone(),
        );
        registry.register(
            "messages_in_flight",
            "Handlers running now",
            m.in_flight.clone(),
        );
        m.start_at_zero();
        m
    }

    /// Sets the lag gauges of the consumer `info` describes, at `now`.
    fn consumer_state(&self, info: &jetstream::consumer::Info, now: time::OffsetDateTime) {
        let labels = ConsumerLabels {
            consumer: info.name.clone(),
        };
        let waiting = info.num_pending + info.num_ack_pending as u64;
        let stalled = if waiting == 0 {
            0
        } else {
            let since = info.ack_floor.last_active.unwrap_or(info.created);
            (now - since).whole_seconds().max(0)
        };
        self.lag
            .get_or_create(&labels)
            .set(i64::try_from(waiting).unwrap_or(i64::MAX));
        self.stalled.get_or_create(&labels).set(stalled);
    }

    /// Creates at 0 every series whose labels are known before the first
    /// message, so an alert on `rate()` works from the first scrape: per
    /// provider, the received and acked counts, the worker's own errors and
    /// the dead-letter mover's classes. A handler's own failure classes
    /// appear with their first use.
    fn start_at_zero(&self) {
        for provider in crate::Provider::ALL.map(crate::Provider::as_str) {
            let p = || ProviderLabels {
                provider: provider.to_owned(),
            };
            let _ = self.received.get_or_create(&p());
            let _ = self.acked.get_or_create(&p());
            let e = |class: &FailureClass| ErrorLabels {
                provider: provider.to_owned(),
                error_type: class.as_str(),
            };
            for class in FailureClass::WORKER {
                let _ = self.errors.get_or_create(&e(class));
            }
            for class in FailureClass::MOVER {
                let _ = self.dead_lettered.get_or_create(&e(class));
            }
        }
    }

    fn received(&self, d: &Delivery) {
        debug!(delivered = d.delivered, "received");
        self.received
            .get_or_create(&ProviderLabels {
                provider: d.provider.clone(),
            })
            .inc();
    }

    fn acked(&self, d: &Delivery) {
        debug!("acked");
        self.acked
            .get_or_create(&ProviderLabels {
                provider: d.provider.clone(),
            })
            .inc();
    }

    fn retried(&self, d: &Delivery, f: &Failure, delay: Duration) {
        warn!(
            error_type = f.class.as_str(),
            error = %f.message,
            delivered = d.delivered,
            retry_in_ms = delay.as_millis() as u64,
            "retry later"
        );
        self.retried
            .get_or_create(&ErrorLabels {
                provider: d.provider.clone(),
                error_type: f.class.as_str(),
            })
            .inc();
    }

    pub(crate) fn dead_lettered(
        &self,
        provider: &str,
        class: FailureClass,
        error: &str,
        by: MovedBy,
    ) {
        warn!(
            error_type = class.as_str(),
            error,
            moved_by = by.as_str(),
            "dead-lettered"
        );
        self.dead_lettered
            .get_or_create(&ErrorLabels {
                provider: provider.to_owned(),
                error_type: class.as_str(),
            })
            .inc();
    }

    fn error(&self, provider: &str, class: FailureClass, error: &str) {
        warn!(error_type = class.as_str(), error, "worker error");
        self.errors
            .get_or_create(&ErrorLabels {
                provider: provider.to_owned(),
                error_type: class.as_str(),
            })
            .inc();
    }
}

/// The worker of one stage: its consumer, its mover, its handler.
pub struct Worker<H> {
    client: async_nats::Client,
    js: jetstream::Context,
    options: WorkerOptions,
    handler: Arc<H>,
    metrics: WorkerMetrics,
    /// Set while pulls succeed; part of `/ready`.
    ready: Arc<AtomicBool>,
}

/// Where the worker and its mover publish `dead_lettered`.
#[derive(Clone)]
pub(crate) struct Outcomes {
    pub(crate) stage: outcome::Stage,
    pub(crate) publisher: outcome::Publisher,
}

/// The worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Setup(#[from] crate::streams::SetupError),
}

impl<H: Handler> Worker<H> {
    pub fn new(
        client: async_nats::Client,
        options: WorkerOptions,
        handler: H,
        metrics: WorkerMetrics,
        ready: Arc<AtomicBool>,
    ) -> Self {
        let js = jetstream::new(client.clone());
        Worker {
            client,
            js,
            options,
            handler: Arc::new(handler),
            metrics,
            ready,
        }
    }

    /// Runs the consumer loops and the advisory mover until `shutdown`.
    /// Expects the streams to exist (see [`crate::app::ensure_streams`]);
    /// retries setting up its consumers on the infrastructure backoff until
    /// they are set up or `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), WorkerError> {
        let o = &self.options;
        // Setting up consumers takes a round of the JetStream cluster each;
        // a busy or failing-over cluster times out now and then: retry,
        // unless the definition itself conflicts.
        let setup = || async {
            let mut consumers = Vec::with_capacity(o.consumers.len());
            for def in &o.consumers {
                consumers.push(
                    crate::streams::ensure_consumer(&self.js, def, o.retry.max_deliver(), o.manage)
                        .await?,
                );
            }
            if o.outcome_stage().is_some() {
                crate::streams::ensure_stream(&self.js, &o.outcomes, o.manage).await?;
            }
            // Set up with the streams (crate::app::ensure_streams): only opened here.
            let failures = crate::streams::ensure_bucket(&self.js, &o.failures, false).await?;
            let mover_consumer =
                crate::streams::ensure_consumer(&self.js, &o.mover, -1, o.manage).await?;
            Ok::<_, crate::streams::SetupError>((consumers, failures, mover_consumer))
        };
        let setup = setup
            .retry(crate::backoff::infra())
            .when(|e: &crate::streams::SetupError| !e.is_permanent())
            .notify(|e, after| {
                warn!(error = %e, retry_in_ms = after.as_millis() as u64, "consumer setup failed")
            });
        let (consumers, failures, mover_consumer) = tokio::select! {
            r = setup => r?,
            _ = shutdown.cancelled() => return Ok(()),
        };
        let outcomes = o.outcome_stage().map(|stage| Outcomes {
            stage,
            publisher: outcome::Publisher::new(self.js.clone(), o.outcome_timeout),
        });
        let mut mover = crate::dead_letter_mover::Mover::new(
            self.js.clone(),
            o.stage.clone(),
            o.source.clone(),
            o.owner.clone(),
            failures.clone(),
            self.metrics.clone(),
        );
        if let Some(out) = &outcomes {
            mover = mover.with_outcomes(out.clone());
        }
        let mover_task = tokio::spawn(mover.run(mover_consumer, shutdown.clone()));
        let probe_task = tokio::spawn(probe_lag(
            consumers.clone(),
            o.lag_probe_every,
            self.metrics.clone(),
            shutdown.clone(),
        ));

        let ctx = Arc::new(Ctx {
            client: self.client.clone(),
            js: self.js.clone(),
            options: self.options.clone(),
            handler: self.handler.clone(),
            metrics: self.metrics.clone(),
            failures,
            outcomes,
        });
        let loops: Vec<_> = consumers
            .into_iter()
            .map(|c| {
                tokio::spawn(consume(
                    ctx.clone(),
                    c,
                    self.ready.clone(),
                    shutdown.clone(),
                ))
            })
            .collect();
        for l in loops {
            if let Err(e) = l.await {
                warn!(error = %e, "consumer loop failed");
            }
        }
        if let Err(e) = mover_task.await {
            warn!(error = %e, "mover task failed");
        }
        probe_task.abort();
        Ok(())
    }
}

/// Reads each consumer's state every `lag_probe_every` into the lag
/// gauges, so an alert sees a stage falling behind without NATS's own
/// monitoring: `consumer_lag_messages` (pending plus unacked) and
/// `consumer_stalled_seconds` (how long the ack floor has stood still while
/// messages wait: a message being retried, or a stage too slow, holds it).
/// A failed read keeps the last values and is logged at debug: the lag of
/// a stage cut off from NATS is not knowable, and `/ready` says so.
async fn probe_lag(
    consumers: Vec<PullConsumer>,
    every: Duration,
    metrics: WorkerMetrics,
    shutdown: CancellationToken,
) {
    let mut every = tokio::time::interval(every);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        for c in &consumers {
            match c.get_info().await {
                Ok(info) => metrics.consumer_state(&info, time::OffsetDateTime::now_utc()),
                Err(e) => debug!(error = %e, "consumer info for the lag gauges failed"),
            }
        }
    }
}

struct Ctx<H> {
    client: async_nats::Client,
    js: jetstream::Context,
    options: WorkerOptions,
    handler: Arc<H>,
    metrics: WorkerMetrics,
    failures: kv::Store,
    outcomes: Option<Outcomes>,
}

async fn consume<H: Handler>(
    ctx: Arc<Ctx<H>>,
    consumer: PullConsumer,
    ready: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    let o = &ctx.options;
    let slots = Slots {
        permits: Arc::new(Semaphore::new(o.concurrency)),
        freed: Arc::new(Notify::new()),
    };
    let hard_stop = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut pauses = crate::backoff::pauses();
    let mut pull: Option<OpenPull> = None;

    while !shutdown.is_cancelled() {
        while tasks.try_join_next().is_some() {}
        let next = match pull.as_mut() {
            None => match OpenPull::open(
                &ctx.client,
                &ctx.js,
                consumer.clone(),
                o.concurrency,
                o.pull_expires,
            )
            .await
            {
                Ok(p) => {
                    pull = Some(p);
                    continue;
                }
                Err(e) => Err(e),
            },
            Some(p) => match p.top_up(slots.permits.available_permits()).await {
                Err(e) => Err(e),
                Ok(()) => {
                    ready.store(true, Ordering::Relaxed);
                    tokio::select! {
                        biased;
                        _ = shutdown.cancelled() => break,
                        // A slot came free: ask for more.
                        _ = slots.freed.notified() => continue,
                        next = p.next() => next,
                    }
                }
            },
        };
        match next {
            Ok(Some(msg)) => {
                pauses = crate::backoff::pauses();
                start(&mut tasks, &ctx, msg, &slots, &hard_stop);
            }
            // A request expired or ended: ask again.
            Ok(None) => pauses = crate::backoff::pauses(),
            // The requests are gone with a reconnect; ask again at once.
            Err(e @ PullError::Silent(_)) => debug!(error = %e, "pull restarted"),
            Err(e) => {
                ready.store(false, Ordering::Relaxed);
                if matches!(e, PullError::Closed) {
                    pull = None;
                }
                let pause = pauses.next().unwrap_or(crate::backoff::MAX_DELAY);
                warn!(error = %e, retry_in_ms = pause.as_millis() as u64, "pull failed");
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = shutdown.cancelled() => break,
                }
            }
        }
    }

    ready.store(false, Ordering::Relaxed);
    // Messages that already arrived are ours: handle them rather than let
    // them wait out ack_wait. An idle worker has none and goes on at once.
    if let Some(p) = pull.take() {
        let left = p.close().await;
        if !left.is_empty() {
            info!(
                count = left.len(),
                "shutdown: handling messages already received"
            );
        }
        for msg in left {
            start(&mut tasks, &ctx, msg, &slots, &hard_stop);
        }
    }
    while tasks.try_join_next().is_some() {}
    let in_flight = tasks.len();
    if in_flight > 0 {
        info!(in_flight, "shutdown: waiting for in-flight handlers");
    }
    let grace = tokio::time::sleep(o.shutdown_grace);
    tokio::pin!(grace);
    loop {
        tokio::select! {
            next = tasks.join_next() => if next.is_none() { break },
            _ = &mut grace, if !hard_stop.is_cancelled() => {
                warn!(in_flight = tasks.len(), "shutdown grace over: handing the rest back");
                hard_stop.cancel();
            }
        }
    }
}

/// The handler slots of one consumer loop; the loop is told when one frees.
struct Slots {
    permits: Arc<Semaphore>,
    freed: Arc<Notify>,
}

/// A handler slot, held while the handler runs.
struct Slot {
    _permit: OwnedSemaphorePermit,
    freed: Arc<Notify>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.freed.notify_one();
    }
}

/// Starts handling `msg` in a slot. The pull asks only for free slots, so
/// one is normally free; after a restarted pull the server may send a few
/// more, which wait here for a slot.
fn start<H: Handler>(
    tasks: &mut tokio::task::JoinSet<()>,
    ctx: &Arc<Ctx<H>>,
    msg: jetstream::Message,
    slots: &Slots,
    hard_stop: &CancellationToken,
) {
    let ready = slots.permits.clone().try_acquire_owned().ok();
    let permits = slots.permits.clone();
    let freed = slots.freed.clone();
    let ctx = ctx.clone();
    let hard_stop = hard_stop.clone();
    tasks.spawn(async move {
        let permit = match ready {
            Some(p) => p,
            None => tokio::select! {
                p = permits.acquire_owned() => p.expect("semaphore never closed"),
                _ = hard_stop.cancelled() => {
                    let _ = msg.ack_with(AckKind::Nak(None)).await;
                    return;
                }
            },
        };
        let slot = Slot {
            _permit: permit,
            freed,
        };
        process(&ctx, msg, slot, hard_stop).await;
    });
}

/// Handles one delivery end to end; never panics on a bad message.
async fn process<H: Handler>(
    ctx: &Ctx<H>,
    msg: jetstream::Message,
    slot: Slot,
    hard_stop: CancellationToken,
) {
    let o = &ctx.options;
    let Some(delivery) = delivery_of(&msg, &o.retry) else {
        warn!(subject = %msg.subject, "message without JetStream metadata; ignored");
        return;
    };
    let span = info_span!(
        "handle",
        stage = %o.stage,
        webhook_id = delivery.webhook_id.as_deref().unwrap_or(""),
        provider = %delivery.provider,
        seq = delivery.stream_seq,
        delivered = delivery.delivered,
    );
    async {
        ctx.metrics.received(&delivery);
        ctx.metrics.in_flight.inc();
        let started = Instant::now();
        let outcome = tokio::select! {
            o = with_progress(ctx.handler.handle(&delivery), &msg, o.progress_interval) => Some(o),
            _ = hard_stop.cancelled() => None,
        };
        ctx.metrics.in_flight.dec();
        // The handler is done: its slot takes the next message while this
        // one's outcome is settled with the server (acks, NAKs and dead
        // letters still awaiting their confirmation are bounded by the
        // consumer's max_ack_pending, not by the slots).
        drop(slot);
        let Some(outcome) = outcome else {
            // Shutdown took too long: give it back for immediate redelivery.
            let _ = msg.ack_with(AckKind::Nak(None)).await;
            return;
        };
        let label = match &outcome {
            Outcome::Ack => "ack",
            Outcome::Retry(_) => "retry",
            Outcome::DeadLetter(_) => "dead_letter",
        };
        ctx.metrics
            .duration
            .get_or_create(&OutcomeLabels {
                provider: delivery.provider.clone(),
                outcome: label,
            })
            .observe(started.elapsed().as_secs_f64());
        settle(ctx, &msg, &delivery, outcome).await;
    }
    .instrument(span)
    .await
}

fn delivery_of(msg: &jetstream::Message, retry: &RetrySchedule) -> Option<Delivery> {
    let info = msg.info().ok()?;
    let headers = msg.headers.clone().unwrap_or_default();
    let get = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
    let provider = get(headers::PROVIDER)
        .filter(|p| crate::subjects::check_token(p).is_ok())
        .unwrap_or_else(|| "unknown".to_owned());
    Some(Delivery {
        subject: msg.subject.to_string(),
        stream: info.stream.to_owned(),
        stream_seq: info.stream_sequence,
        delivered: info.delivered,
        published: SystemTime::from(info.published),
        is_last: retry.is_last(info.delivered),
        provider,
        tenant: get(headers::TENANT),
        webhook_id: get(headers::WEBHOOK_ID),
        headers,
        payload: msg.payload.clone(),
    })
}

/// Runs `fut`, sending `+WPI` every `every` until it completes.
async fn with_progress<F: Future<Output = Outcome>>(
    fut: F,
    msg: &jetstream::Message,
    every: Duration,
) -> Outcome {
    tokio::pin!(fut);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            out = &mut fut => return out,
            _ = tick.tick() => {
                if let Err(e) = msg.ack_with(AckKind::Progress).await {
                    debug!(error = %e, "in-progress ack failed");
                }
            }
        }
    }
}

async fn settle<H: Handler>(
    ctx: &Ctx<H>,
    msg: &jetstream::Message,
    d: &Delivery,
    outcome: Outcome,
) {
    let o = &ctx.options;
    match outcome {
        Outcome::Ack => {
            match ack_confirmed(&ctx.client, msg, Bytes::from_static(b"+ACK")).await {
                Ok(()) => ctx.metrics.acked(d),
                // The message comes back after ack_wait; downstream dedup
                // (Nats-Msg-Id, Idempotency-Key) absorbs the second run.
                Err(e) => ctx.metrics.error(&d.provider, FailureClass::AckFailed, &e),
            }
            if d.delivered > 1 {
                failure_history::forget(&ctx.failures, &d.stream, d.stream_seq).await;
            }
        }
        // A permanent class is dead-lettered at once, whatever the handler
        // asked: retrying cannot help it, and days of retries hide it.
        Outcome::Retry(f) if !d.is_last && !f.class.is_permanent() => {
            let delay = o
                .retry
                .delay_after(d.delivered, d.stream_seq, f.retry_after);
            if failure_history::worth_recording(d.delivered, o.retry.is_last(d.delivered + 1)) {
                failure_history::record(
                    &ctx.failures,
                    &d.stream,
                    d.stream_seq,
                    d.delivered,
                    f.class,
                    &f.message,
                )
                .await;
            }
            ctx.metrics.retried(d, &f, delay);
            if let Err(e) = msg.ack_with(AckKind::Nak(Some(delay))).await {
                // Without the NAK the message still comes back after ack_wait.
                ctx.metrics
                    .error(&d.provider, FailureClass::NakFailed, &e.to_string());
            }
        }
        Outcome::Retry(f) if !f.class.is_permanent() => {
            let message = format!(
                "deliveries exhausted after {} attempts: {}",
                d.delivered, f.message
            );
            dead_letter(ctx, msg, d, f.class, &message).await;
        }
        Outcome::Retry(f) | Outcome::DeadLetter(f) => {
            dead_letter(ctx, msg, d, f.class, &f.message).await
        }
    }
}

async fn dead_letter<H: Handler>(
    ctx: &Ctx<H>,
    msg: &jetstream::Message,
    d: &Delivery,
    class: FailureClass,
    message: &str,
) {
    let o = &ctx.options;
    let now = SystemTime::now();
    let history = if d.delivered > 1 {
        failure_history::load(&ctx.failures, &d.stream, d.stream_seq).await
    } else {
        None
    };
    let entry = DeadLetter {
        stage: o.stage.clone(),
        stream: d.stream.clone(),
        subject: d.subject.clone(),
        seq: d.stream_seq,
        webhook_id: d.webhook_id.clone(),
        provider: d.provider.clone(),
        tenant: d.tenant.clone(),
        deliveries: d.delivered,
        first_failure: history.map(|h| h.first_failure).unwrap_or(now),
        last_failure: now,
        error_class: class,
        error: message.to_owned(),
        moved_by: MovedBy::Worker,
    };
    // The outcome goes out first and its ack is awaited with the entry's:
    // one round trip for both.
    let step = ctx.outcomes.as_ref().and_then(|out| {
        Some(Step::of(out.stage, outcome::Kind::DeadLettered, d, false)?.with_error(class, message))
    });
    let pending = match (&ctx.outcomes, &step) {
        (Some(out), Some(step)) => Some(out.publisher.send(step).await),
        _ => None,
    };
    let stored = dlq::publish(&ctx.js, &entry, Some(&d.headers), d.payload.clone())
        .await
        .map_err(|e| e.to_string());
    let outcome_stored = match pending {
        None => Ok(()),
        Some(Ok(p)) => p.wait().await.map_err(|f| f.message),
        Some(Err(f)) => Err(f.message),
    };
    if let Err(e) = stored.and(outcome_stored) {
        // Not stored: keep the message in the retry cycle. On its last
        // delivery the NAK exhausts it and the mover dead-letters it.
        ctx.metrics
            .error(&d.provider, FailureClass::DeadLetterPublishFailed, &e);
        let delay = o.retry.delay_after(d.delivered, d.stream_seq, None);
        let _ = msg.ack_with(AckKind::Nak(Some(delay))).await;
        return;
    }
    let reason = Bytes::from(format!("+TERM dlq:{class}"));
    if let Err(e) = ack_confirmed(&ctx.client, msg, reason).await {
        // Stored in the DLQ but not terminated: a redelivery dead-letters it
        // again under the same Nats-Msg-Id, which the DLQ drops.
        ctx.metrics.error(&d.provider, FailureClass::TermFailed, &e);
    }
    if d.delivered > 1 {
        failure_history::forget(&ctx.failures, &d.stream, d.stream_seq).await;
    }
    ctx.metrics
        .dead_lettered(&d.provider, class, message, MovedBy::Worker);
}

/// Sends an ack of any kind on the message's reply subject and waits for
/// the server to confirm it (AckSync), through the client's shared request
/// inbox rather than a subscription per ack.
pub(crate) async fn ack_confirmed(
    client: &async_nats::Client,
    msg: &jetstream::Message,
    payload: Bytes,
) -> Result<(), String> {
    let reply = msg
        .reply
        .clone()
        .ok_or_else(|| "message has no reply subject".to_owned())?;
    match tokio::time::timeout(Duration::from_secs(10), client.request(reply, payload)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("ack confirmation timed out".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_text_is_bounded() {
        let short = Failure::new(FailureClass::Backend5xx, "backend answered 503");
        assert_eq!(short.message, "backend answered 503");
        let long = Failure::new(FailureClass::InvalidPayload, "x".repeat(500_000));
        assert_eq!(
            long.message,
            format!("{}… (500000 bytes)", "x".repeat(MAX_FAILURE_CHARS))
        );
    }
}
