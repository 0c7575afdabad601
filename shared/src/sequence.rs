//! Per-order ordering (issue 17): the events of one order reach the
//! backend, and the answers about one order reach the provider, in the
//! order of the order's life, while events of other orders never wait.
//!
//! # Design (docs/DECISIONS.md, "Per-order ordering")
//! - One entry per order in the `ORDER_SEQUENCE` key-value bucket
//!   ([`order_key`] for the events to the backend, [`status_key`] for the
//!   answers to the provider): the order's events the hub knows of, each
//!   with its rank and its state ([`EventState`]). Written only by
//!   compare-and-set on the entry's revision, so replicas agree.
//! - An event's rank is `(phase, arrival)`: the phase of the order's life
//!   (`created` before `updated` before `cancelled`; `accept`/`reject`
//!   before `ready` before `picked_up` before `delivered`), then the
//!   sequence of the message the provider's (or backend's) copy arrived in
//!   (`WEBHOOKS` for order events, `STATUS` for answers). So a
//!   cancellation the provider sent before its order still goes second.
//! - The stage that first sees an event registers it as `pending` before
//!   it is published downstream (the transformer, before `ORDERS`) or
//!   handled (the status worker). The stage that delivers it asks for its
//!   [`Turn`]: it goes when no event of lower rank is `pending` or
//!   `dead_lettered`. An event that must wait waits inside its delivery
//!   (the worker keeps it alive with in-progress acks), so it spends no
//!   delivery, and only that event's handler waits: other orders go on.
//! - An event with no first event (`created`) known waits up to
//!   `first_wait` for it, then goes alone, counted and logged.
//! - Delivered: `done`; dead-lettered: `dead_lettered`, which holds every
//!   later event of the order until it is replayed (its replay registers
//!   it `pending` again and delivers it first), or an operator releases it
//!   (`released`: `dlq-inspector release`, or purging it).
//! - A copy of an event already `done` is a [`Turn::Duplicate`]: the
//!   stage acks it without a second delivery.
//! - Waiting: a handler is woken at once by its own replica's change to
//!   the entry, and otherwise re-reads the entry on a backoff (25 ms up to
//!   [`MAX_POLL`]): another replica's change is seen within that.
//! - The entry keeps at most [`MAX_EVENTS`] events; the oldest finished
//!   ones go first. Entries expire with the bucket's `max_age`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_nats::jetstream::{self, kv};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::Provider;

/// The bucket's name (`nats/streams.toml`).
pub const SEQUENCE_BUCKET: &str = "ORDER_SEQUENCE";

/// The most events one entry keeps.
pub const MAX_EVENTS: usize = 64;

/// The longest a waiting event goes without re-reading its entry.
pub const MAX_POLL: Duration = Duration::from_millis(500);

/// How long one read or write of the bucket may take.
pub const KV_TIMEOUT: Duration = Duration::from_secs(5);

/// How many compare-and-set conflicts one change tolerates before it is
/// reported as an error (each conflict is another replica's change).
const MAX_CONFLICTS: u32 = 50;

/// The entry of one order's events to its tenant's backend:
/// `order.<provider>.<tenant>.<order id>`, tenant and id base64url (a key
/// takes neither `:` nor `/`).
pub fn order_key(tenant: &str, provider: Provider, provider_order_id: &str) -> String {
    format!(
        "order.{provider}.{}.{}",
        URL_SAFE_NO_PAD.encode(tenant),
        URL_SAFE_NO_PAD.encode(provider_order_id)
    )
}

/// The entry of the answers about one order to its provider:
/// `status.<provider>.<tenant>.<order id>`.
pub fn status_key(tenant: &str, provider: Provider, provider_order_id: &str) -> String {
    format!(
        "status.{provider}.{}.{}",
        URL_SAFE_NO_PAD.encode(tenant),
        URL_SAFE_NO_PAD.encode(provider_order_id)
    )
}

/// The phase of an answer in an order's life: `accept` and `reject` (0)
/// before `delay`, `ready` and `cancel` (1), before `picked_up` (2),
/// before `delivered` (3).
pub fn action_phase(action: canonical::status::Action) -> u8 {
    use canonical::status::Action::*;
    match action {
        Accept | Reject => 0,
        Delay | Ready | Cancel => 1,
        PickedUp => 2,
        Delivered => 3,
    }
}

/// Where an event stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventState {
    /// Known, not delivered yet: later events wait for it.
    Pending,
    /// Delivered.
    Done,
    /// In the DLQ: later events wait until it is replayed or released.
    DeadLettered,
    /// An operator let the later events go without it.
    Released,
}

impl EventState {
    pub const fn as_str(self) -> &'static str {
        match self {
            EventState::Pending => "pending",
            EventState::Done => "done",
            EventState::DeadLettered => "dead_lettered",
            EventState::Released => "released",
        }
    }

    /// Still holds the events after it.
    pub const fn holds(self) -> bool {
        matches!(self, EventState::Pending | EventState::DeadLettered)
    }
}

/// One event of an order, as its entry keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// The event's key: the order event's `idempotency_key`, or the
    /// answer's `status_id`.
    pub key: String,
    /// `created`, `cancelled`, `accept`, ...: for people.
    pub name: String,
    pub phase: u8,
    /// The arrival: the sequence of the message it came in.
    pub seq: u64,
    pub state: EventState,
    /// When the hub first registered it, Unix milliseconds.
    pub first_seen_ms: u64,
    /// When it last changed state, Unix milliseconds.
    pub changed_ms: u64,
}

impl EventRecord {
    fn rank(&self) -> (u8, u64) {
        (self.phase, self.seq)
    }
}

/// One order's entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRecord {
    pub events: Vec<EventRecord>,
}

impl OrderRecord {
    pub fn event(&self, key: &str) -> Option<&EventRecord> {
        self.events.iter().find(|e| e.key == key)
    }

    /// The events that wait behind `key`: later in rank, not finished.
    pub fn waiting_behind(&self, key: &str) -> Vec<&EventRecord> {
        let Some(me) = self.event(key) else {
            return Vec::new();
        };
        let mut behind: Vec<&EventRecord> = self
            .events
            .iter()
            .filter(|e| e.key != key && e.rank() > me.rank() && e.state == EventState::Pending)
            .collect();
        behind.sort_by_key(|e| e.rank());
        behind
    }

    /// Adds `ev` as pending, or re-arms it when it was dead-lettered or
    /// released (a replay is a new attempt). `false`: nothing changed.
    fn register(&mut self, ev: &Event<'_>, now_ms: u64) -> bool {
        if let Some(known) = self.events.iter_mut().find(|e| e.key == ev.key) {
            return match known.state {
                EventState::Pending | EventState::Done => false,
                EventState::DeadLettered | EventState::Released => {
                    known.state = EventState::Pending;
                    known.changed_ms = now_ms;
                    true
                }
            };
        }
        self.events.push(EventRecord {
            key: ev.key.to_owned(),
            name: ev.name.to_owned(),
            phase: ev.phase,
            seq: ev.seq,
            state: EventState::Pending,
            first_seen_ms: now_ms,
            changed_ms: now_ms,
        });
        self.prune();
        true
    }

    /// Sets `key`'s state; `false` when it is not there or already so.
    fn set(&mut self, key: &str, state: EventState, now_ms: u64) -> bool {
        match self.events.iter_mut().find(|e| e.key == key) {
            Some(e) if e.state != state => {
                e.state = state;
                e.changed_ms = now_ms;
                true
            }
            _ => false,
        }
    }

    /// Drops the oldest finished events beyond [`MAX_EVENTS`]; events that
    /// hold others are never dropped.
    fn prune(&mut self) {
        while self.events.len() > MAX_EVENTS {
            let oldest = self
                .events
                .iter()
                .enumerate()
                .filter(|(_, e)| !e.state.holds())
                .min_by_key(|(_, e)| e.rank())
                .map(|(i, _)| i);
            match oldest {
                Some(i) => {
                    self.events.remove(i);
                }
                None => break,
            }
        }
    }

    /// Whether `ev` may go now (see the module's rules).
    pub fn gate(&self, ev: &Event<'_>, now_ms: u64, first_wait: Option<Duration>) -> Gate {
        let rank = (ev.phase, ev.seq);
        let mine = self.event(ev.key);
        if mine.is_some_and(|e| e.state == EventState::Done) {
            return Gate::Duplicate;
        }
        let rank = mine.map(|e| e.rank()).unwrap_or(rank);
        let mut earlier: Vec<&EventRecord> = self
            .events
            .iter()
            .filter(|e| e.key != ev.key && e.rank() < rank && e.state.holds())
            .collect();
        earlier.sort_by_key(|e| e.rank());
        if let Some(first) = earlier.first() {
            let reason = if earlier.iter().any(|e| e.state == EventState::DeadLettered) {
                WaitReason::DeadLettered
            } else {
                WaitReason::Earlier
            };
            return Gate::Wait {
                reason,
                behind: first.name.clone(),
                until_ms: None,
            };
        }
        let late = self
            .events
            .iter()
            .any(|e| e.key != ev.key && e.rank() > rank && e.state == EventState::Done);
        if ev.phase > 0
            && !self.events.iter().any(|e| e.phase == 0)
            && let Some(wait) = first_wait
        {
            let since = mine.map(|e| e.first_seen_ms).unwrap_or(now_ms);
            let until = since.saturating_add(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX));
            if now_ms < until {
                return Gate::Wait {
                    reason: WaitReason::FirstEvent,
                    behind: "the first event".to_owned(),
                    until_ms: Some(until),
                };
            }
            return Gate::Go { alone: true, late };
        }
        Gate::Go { alone: false, late }
    }
}

/// An event as a stage describes it.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    pub key: &'a str,
    pub name: &'a str,
    pub phase: u8,
    pub seq: u64,
}

/// Why an event waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

/// Why an event waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WaitReason {
    /// An earlier event of the order is on its way.
    Earlier,
    /// An earlier event of the order is in the DLQ.
    DeadLettered,
    /// The order's first event (`created`) has not been seen yet.
    FirstEvent,
}

impl WaitReason {
    pub const ALL: [WaitReason; 3] = [
        WaitReason::Earlier,
        WaitReason::DeadLettered,
        WaitReason::FirstEvent,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            WaitReason::Earlier => "earlier_event",
            WaitReason::DeadLettered => "dead_lettered_event",
            WaitReason::FirstEvent => "first_event",
        }
    }
}

/// The verdict on one look at an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Go. `alone`: the first event never came within the wait; `late`: a
    /// later event of the order was delivered already (this one reached
    /// the hub after it had gone).
    Go { alone: bool, late: bool },
    /// This event was delivered already.
    Duplicate,
    /// Wait: behind the event named, or until `until_ms` for the first.
    Wait {
        reason: WaitReason,
        behind: String,
        until_ms: Option<u64>,
    },
}

/// What [`Sequencer::turn`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Turn {
    /// Deliver now. `waited`: how long it waited (zero when it did not).
    Go {
        waited: Duration,
        alone: bool,
        late: bool,
        /// The entry as last read, and its revision, for
        /// [`Sequencer::finish_seen`].
        seen: Option<(OrderRecord, u64)>,
    },
    /// A copy of an event already delivered: ack it, deliver nothing.
    Duplicate,
    /// `deadline` came while it still waited.
    TimedOut { reason: WaitReason, behind: String },
    /// It would have to wait, and this replica holds [`Sequencer::max_waiting`]
    /// waiting events already: try again later, so that waiting events
    /// never take every handler from the events that need not wait.
    Busy { reason: WaitReason, behind: String },
}

/// How far the stage before has come: the ack floor of its consumer (the
/// transformer's on `WEBHOOKS`). An event of an order that has other
/// events goes only when every message that arrived before it has been
/// through that stage, so an earlier event of its order that was still
/// being converted has registered; without this, two events of one order
/// converted at once by two handlers could register, and go, the wrong way
/// round. Read at most every [`WATERMARK_REFRESH`], shared by the replica's
/// handlers; a missing consumer (no stage before) holds nothing.
pub struct Watermark {
    js: jetstream::Context,
    stream: String,
    consumer: String,
    floor: std::sync::atomic::AtomicU64,
    last_read: tokio::sync::Mutex<Option<tokio::time::Instant>>,
}

/// The shortest time between two reads of a [`Watermark`].
pub const WATERMARK_REFRESH: Duration = Duration::from_millis(10);

/// The longest an event waits for the stage before to finish the messages
/// that arrived before it (a message retried there holds the floor); then
/// it goes, logged.
pub const ARRIVAL_WAIT: Duration = Duration::from_secs(10);

impl Watermark {
    pub fn new(js: jetstream::Context, stream: &str, consumer: &str) -> Self {
        Watermark {
            js,
            stream: stream.to_owned(),
            consumer: consumer.to_owned(),
            floor: Default::default(),
            last_read: Default::default(),
        }
    }

    /// Whether every message up to `seq` has been through the stage
    /// before, waiting for it until `until`.
    pub async fn reached(
        &self,
        seq: u64,
        until: tokio::time::Instant,
    ) -> Result<bool, SequenceError> {
        use std::sync::atomic::Ordering::SeqCst;
        loop {
            if self.floor.load(SeqCst) >= seq {
                return Ok(true);
            }
            let mut last = self.last_read.lock().await;
            if self.floor.load(SeqCst) >= seq {
                return Ok(true);
            }
            let now = tokio::time::Instant::now();
            if now >= until {
                return Ok(false);
            }
            if let Some(at) = *last
                && now < at + WATERMARK_REFRESH
            {
                tokio::time::sleep_until((at + WATERMARK_REFRESH).min(until)).await;
            }
            *last = Some(tokio::time::Instant::now());
            let stream = self.js.get_stream_no_info(&self.stream).await;
            let info = match stream {
                Ok(s) => {
                    timed(
                        "reading the stage before's progress",
                        s.consumer_info(&self.consumer),
                    )
                    .await
                }
                Err(e) => Err(SequenceError(format!("stream {}: {e}", self.stream))),
            };
            match info {
                Ok(info) => self.floor.fetch_max(info.ack_floor.stream_sequence, SeqCst),
                // No stage before: nothing to wait for.
                Err(e) if e.0.contains("consumer not found") => return Ok(true),
                Err(e) => return Err(e),
            };
        }
    }
}

/// The bucket could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SequenceError(pub String);

#[derive(Clone)]
struct Metrics {
    waits: Family<ReasonLabel, Counter>,
    waiting: Family<ReasonLabel, Gauge>,
    wait_seconds: Histogram,
    alone: Counter,
    late: Counter,
    duplicates: Counter,
}

impl Metrics {
    fn register(registry: &mut Registry) -> Self {
        let m = Metrics {
            waits: Family::default(),
            waiting: Family::default(),
            wait_seconds: Histogram::new(crate::telemetry::duration_buckets()),
            alone: Counter::default(),
            late: Counter::default(),
            duplicates: Counter::default(),
        };
        for r in WaitReason::ALL {
            let label = ReasonLabel { reason: r.as_str() };
            let _ = m.waits.get_or_create(&label);
            let _ = m.waiting.get_or_create(&label);
        }
        registry.register(
            "sequence_waits",
            "Events that waited for an earlier event of their order, by reason (earlier_event, dead_lettered_event, first_event)",
            m.waits.clone(),
        );
        registry.register(
            "sequence_waiting",
            "Events waiting for an earlier event of their order now, by reason",
            m.waiting.clone(),
        );
        registry.register(
            "sequence_wait_seconds",
            "How long events that waited for an earlier event of their order waited",
            m.wait_seconds.clone(),
        );
        registry.register(
            "sequence_went_alone",
            "Events that went without their order's first event, which did not come within the wait",
            m.alone.clone(),
        );
        registry.register(
            "sequence_late",
            "Events delivered after a later event of their order (they reached the hub after it had gone)",
            m.late.clone(),
        );
        registry.register(
            "sequence_duplicates",
            "Copies of events already delivered, acked without a second delivery",
            m.duplicates.clone(),
        );
        m
    }
}

/// A stage's view of the `ORDER_SEQUENCE` bucket.
#[derive(Clone)]
pub struct Sequencer {
    js: jetstream::Context,
    /// Opened on first use (the stage runner sets the bucket up).
    kv: Arc<tokio::sync::OnceCell<kv::Store>>,
    /// Handlers of this replica waiting on an entry, by key.
    local: Arc<Mutex<HashMap<String, Arc<Notify>>>>,
    metrics: Option<Metrics>,
    /// Events waiting in this replica now, and the most that may.
    waiting: Arc<std::sync::atomic::AtomicUsize>,
    max_waiting: usize,
    watermark: Option<Arc<Watermark>>,
}

/// The default of [`Sequencer::with_max_waiting`]: half a stage's default
/// 256 handlers.
pub const DEFAULT_MAX_WAITING: usize = 128;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

async fn timed<T, E: std::fmt::Display>(
    what: &str,
    f: impl Future<Output = Result<T, E>>,
) -> Result<T, SequenceError> {
    match tokio::time::timeout(KV_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(SequenceError(format!("{what} in {SEQUENCE_BUCKET}: {e}"))),
        Err(_) => Err(SequenceError(format!(
            "{what} in {SEQUENCE_BUCKET}: no answer within {}s",
            KV_TIMEOUT.as_secs()
        ))),
    }
}

/// The revision a compare-and-set write made; `None` when `conflict` says
/// another writer came first, an error for anything else.
fn written<E: std::fmt::Display>(
    result: Result<Result<u64, E>, tokio::time::error::Elapsed>,
    conflict: impl Fn(&E) -> bool,
) -> Result<Option<u64>, SequenceError> {
    match result {
        Ok(Ok(revision)) => Ok(Some(revision)),
        Ok(Err(e)) if conflict(&e) => Ok(None),
        Ok(Err(e)) => Err(SequenceError(format!(
            "writing an order in {SEQUENCE_BUCKET}: {e}"
        ))),
        Err(_) => Err(SequenceError(format!(
            "writing an order in {SEQUENCE_BUCKET}: no answer within {}s",
            KV_TIMEOUT.as_secs()
        ))),
    }
}

impl Sequencer {
    /// The bucket on `js` (opened on first use; the stage runner sets it
    /// up). With a registry, the `sequence_*` metrics are registered in it.
    pub fn new(js: jetstream::Context, registry: Option<&mut Registry>) -> Self {
        Sequencer {
            js,
            kv: Arc::default(),
            local: Arc::default(),
            metrics: registry.map(Metrics::register),
            waiting: Arc::default(),
            max_waiting: DEFAULT_MAX_WAITING,
            watermark: None,
        }
    }

    /// Events of an order with other events also wait for `watermark`
    /// to pass them (at most [`ARRIVAL_WAIT`]).
    pub fn with_watermark(mut self, watermark: Watermark) -> Self {
        self.watermark = Some(Arc::new(watermark));
        self
    }

    /// At most `n` events wait in this replica at once (at least 1); the
    /// next one that would have to wait is [`Turn::Busy`].
    pub fn with_max_waiting(mut self, n: usize) -> Self {
        self.max_waiting = n.max(1);
        self
    }

    async fn kv(&self) -> Result<&kv::Store, SequenceError> {
        self.kv
            .get_or_try_init(|| timed("opening the bucket", self.js.get_key_value(SEQUENCE_BUCKET)))
            .await
    }

    /// The entry of `order` and its revision (`None`: no entry).
    pub async fn read(&self, order: &str) -> Result<Option<(OrderRecord, u64)>, SequenceError> {
        let kv = self.kv().await?;
        let entry = timed("reading an order", kv.entry(order)).await?;
        let Some(entry) = entry else {
            return Ok(None);
        };
        if entry.operation != kv::Operation::Put {
            return Ok(Some((OrderRecord::default(), entry.revision)));
        }
        match serde_json::from_slice::<OrderRecord>(&entry.value) {
            Ok(r) => Ok(Some((r, entry.revision))),
            // Not ours to read (a newer version's?): start over rather than
            // hold the order forever; its events register again.
            Err(e) => {
                tracing::warn!(entry = order, error = %e, "unreadable order sequence entry; starting it over");
                Ok(Some((OrderRecord::default(), entry.revision)))
            }
        }
    }

    /// Applies `change` to the entry by compare-and-set, reading again on
    /// each conflict. `change` returns whether it changed anything; the
    /// record as written (or as read, when nothing changed) is returned.
    ///
    /// `assume`: the entry as the caller last saw it (and its revision,
    /// `None`: no entry), tried first without reading it; a conflict
    /// reads it as usual. Saves a round trip where the caller knows.
    async fn change(
        &self,
        order: &str,
        assume: Option<(OrderRecord, Option<u64>)>,
        mut change: impl FnMut(&mut OrderRecord) -> bool,
    ) -> Result<(OrderRecord, Option<u64>), SequenceError> {
        let mut assume = assume;
        for _ in 0..MAX_CONFLICTS {
            let (mut record, revision) = match assume.take() {
                Some(seen) => seen,
                None => match self.read(order).await? {
                    Some((r, rev)) => (r, Some(rev)),
                    None => (OrderRecord::default(), None),
                },
            };
            if !change(&mut record) {
                return Ok((record, revision));
            }
            let value = Bytes::from(serde_json::to_vec(&record).expect("a record serialises"));
            let kv = self.kv().await?;
            let written = match revision {
                None => written(
                    tokio::time::timeout(KV_TIMEOUT, kv.create(order, value)).await,
                    |e: &kv::CreateError| e.kind() == kv::CreateErrorKind::AlreadyExists,
                )?,
                Some(rev) => written(
                    tokio::time::timeout(KV_TIMEOUT, kv.update(order, value, rev)).await,
                    |e: &kv::UpdateError| e.kind() == kv::UpdateErrorKind::WrongLastRevision,
                )?,
            };
            if let Some(revision) = written {
                self.wake(order);
                return Ok((record, Some(revision)));
            }
        }
        Err(SequenceError(format!(
            "writing an order in {SEQUENCE_BUCKET}: {MAX_CONFLICTS} conflicting writes in a row"
        )))
    }

    /// Registers `ev` of `order` as pending (see [`OrderRecord`]): a new
    /// event is added, a dead-lettered or released one is armed again.
    pub async fn register(
        &self,
        order: &str,
        ev: &Event<'_>,
    ) -> Result<OrderRecord, SequenceError> {
        Ok(self.register_seen(order, ev).await?.0)
    }

    /// [`Sequencer::register`], returning the entry's revision too. An
    /// order's first event (phase 0) is usually its entry's first: it is
    /// created without reading the entry first.
    async fn register_seen(
        &self,
        order: &str,
        ev: &Event<'_>,
    ) -> Result<(OrderRecord, Option<u64>), SequenceError> {
        let now = now_ms();
        let assume = (ev.phase == 0).then(|| (OrderRecord::default(), None));
        self.change(order, assume, |r| r.register(ev, now)).await
    }

    /// Marks `key` of `order` `state`; an event the entry does not hold is
    /// left alone.
    pub async fn finish(
        &self,
        order: &str,
        key: &str,
        state: EventState,
    ) -> Result<OrderRecord, SequenceError> {
        self.finish_seen(order, key, state, None).await
    }

    /// [`Sequencer::finish`] starting from the entry as [`Turn::Go`] saw
    /// it: one write instead of a read and a write, unless another writer
    /// changed the entry since.
    pub async fn finish_seen(
        &self,
        order: &str,
        key: &str,
        state: EventState,
        seen: Option<(OrderRecord, u64)>,
    ) -> Result<OrderRecord, SequenceError> {
        let now = now_ms();
        let assume = seen.map(|(r, rev)| (r, Some(rev)));
        Ok(self
            .change(order, assume, |r| r.set(key, state, now))
            .await?
            .0)
    }

    /// The entry again while `ev` waits; when it no longer holds `ev` (it
    /// expired, or an operator removed it), `ev` registers again.
    async fn reread(
        &self,
        order: &str,
        ev: &Event<'_>,
    ) -> Result<(OrderRecord, Option<u64>), SequenceError> {
        match self.read(order).await? {
            Some((r, rev)) if r.event(ev.key).is_some() => Ok((r, Some(rev))),
            _ => self.register_seen(order, ev).await,
        }
    }

    /// Registers `ev` (when it is not yet) and waits for its turn, at most
    /// until `deadline`. `first_wait`: how long an event waits for its
    /// order's first event (`None`: it does not).
    pub async fn turn(
        &self,
        order: &str,
        ev: &Event<'_>,
        first_wait: Option<Duration>,
        deadline: tokio::time::Instant,
    ) -> Result<Turn, SequenceError> {
        let started = tokio::time::Instant::now();
        let (mut record, mut revision) = match self.read(order).await? {
            Some((r, rev))
                if r.event(ev.key)
                    .is_some_and(|e| matches!(e.state, EventState::Pending | EventState::Done)) =>
            {
                (r, Some(rev))
            }
            _ => self.register_seen(order, ev).await?,
        };
        let mut poll = Duration::from_millis(25);
        let mut waiting: Option<WaitReason> = None;
        let mut arrived = self.watermark.is_none();
        let result = loop {
            match record.gate(ev, now_ms(), first_wait) {
                Gate::Duplicate => break Ok(Turn::Duplicate),
                // Alone in its order: nothing to be out of order with.
                Gate::Go { .. } if !arrived && record.events.len() > 1 => {
                    arrived = true;
                    let watermark = self.watermark.as_ref().expect("set when not arrived");
                    let until = deadline.min(tokio::time::Instant::now() + ARRIVAL_WAIT);
                    match watermark.reached(ev.seq, until).await {
                        Ok(true) => {}
                        Ok(false) => tracing::warn!(
                            entry = order,
                            event = ev.name,
                            "the stage before did not finish the messages that arrived before this event within {}s; it goes without knowing whether an earlier event of its order is among them",
                            ARRIVAL_WAIT.as_secs()
                        ),
                        Err(e) => break Err(e),
                    }
                    // An earlier event may have registered meanwhile.
                    match self.reread(order, ev).await {
                        Ok(seen) => (record, revision) = seen,
                        Err(e) => break Err(e),
                    }
                }
                Gate::Go { alone, late } => {
                    break Ok(Turn::Go {
                        waited: started.elapsed(),
                        alone,
                        late,
                        seen: revision.map(|rev| (record.clone(), rev)),
                    });
                }
                Gate::Wait {
                    reason,
                    behind,
                    until_ms,
                } => {
                    if waiting.is_none() {
                        use std::sync::atomic::Ordering::SeqCst;
                        let held = self.waiting.fetch_add(1, SeqCst);
                        if held >= self.max_waiting {
                            self.waiting.fetch_sub(1, SeqCst);
                            break Ok(Turn::Busy { reason, behind });
                        }
                    }
                    if waiting != Some(reason) {
                        self.count_waiting(waiting, Some(reason));
                        waiting = Some(reason);
                    }
                    let now = tokio::time::Instant::now();
                    if now >= deadline {
                        break Ok(Turn::TimedOut { reason, behind });
                    }
                    let mut nap = poll.min(deadline - now);
                    if let Some(until) = until_ms {
                        nap = nap.min(Duration::from_millis(until.saturating_sub(now_ms()) + 1));
                    }
                    let notify = self.waiter(order);
                    let notified = notify.notified();
                    let _ = tokio::time::timeout(nap, notified).await;
                    poll = (poll * 2).min(MAX_POLL);
                    match self.reread(order, ev).await {
                        Ok(seen) => (record, revision) = seen,
                        Err(e) => break Err(e),
                    }
                }
            }
        };
        if waiting.is_some() {
            self.waiting
                .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
        self.count_waiting(waiting, None);
        self.unwait(order);
        if let Some(m) = &self.metrics {
            match &result {
                Ok(Turn::Go {
                    waited,
                    alone,
                    late,
                    ..
                }) => {
                    if waiting.is_some() {
                        m.wait_seconds.observe(waited.as_secs_f64());
                    }
                    if *alone {
                        m.alone.inc();
                    }
                    if *late {
                        m.late.inc();
                    }
                }
                Ok(Turn::Duplicate) => {
                    m.duplicates.inc();
                }
                _ => {}
            }
        }
        result
    }

    fn count_waiting(&self, from: Option<WaitReason>, to: Option<WaitReason>) {
        let Some(m) = &self.metrics else {
            return;
        };
        if let Some(from) = from {
            m.waiting
                .get_or_create(&ReasonLabel {
                    reason: from.as_str(),
                })
                .dec();
        }
        if let Some(to) = to {
            let label = ReasonLabel {
                reason: to.as_str(),
            };
            m.waiting.get_or_create(&label).inc();
            m.waits.get_or_create(&label).inc();
        }
    }

    fn waiter(&self, order: &str) -> Arc<Notify> {
        self.local
            .lock()
            .expect("not poisoned")
            .entry(order.to_owned())
            .or_default()
            .clone()
    }

    /// Forgets `order`'s notifier when no other handler holds it.
    fn unwait(&self, order: &str) {
        let mut local = self.local.lock().expect("not poisoned");
        if local.get(order).is_some_and(|n| Arc::strong_count(n) == 1) {
            local.remove(order);
        }
    }

    fn wake(&self, order: &str) {
        if let Some(n) = self.local.lock().expect("not poisoned").get(order) {
            n.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev<'a>(key: &'a str, phase: u8, seq: u64) -> Event<'a> {
        Event {
            key,
            name: key,
            phase,
            seq,
        }
    }

    fn record(events: &[(&str, u8, u64, EventState)]) -> OrderRecord {
        OrderRecord {
            events: events
                .iter()
                .map(|(k, p, s, st)| EventRecord {
                    key: (*k).to_owned(),
                    name: (*k).to_owned(),
                    phase: *p,
                    seq: *s,
                    state: *st,
                    first_seen_ms: 1_000,
                    changed_ms: 1_000,
                })
                .collect(),
        }
    }

    use EventState::*;

    #[test]
    fn an_event_waits_only_behind_earlier_unfinished_events_of_its_order() {
        let r = record(&[
            ("created", 0, 10, Pending),
            ("updated", 1, 11, Pending),
            ("cancelled", 2, 12, Pending),
        ]);
        assert_eq!(
            r.gate(&ev("created", 0, 10), 2_000, Some(Duration::from_secs(5))),
            Gate::Go {
                alone: false,
                late: false
            }
        );
        let waits = |key, phase, seq| match r.gate(&ev(key, phase, seq), 2_000, None) {
            Gate::Wait { reason, behind, .. } => (reason, behind),
            other => panic!("{key}: {other:?}"),
        };
        assert_eq!(
            waits("updated", 1, 11),
            (WaitReason::Earlier, "created".to_owned())
        );
        assert_eq!(
            waits("cancelled", 2, 12),
            (WaitReason::Earlier, "created".to_owned())
        );
        // Done and released events hold nothing; a dead letter holds.
        let r = record(&[
            ("created", 0, 10, Done),
            ("updated", 1, 11, DeadLettered),
            ("cancelled", 2, 12, Pending),
        ]);
        assert!(matches!(
            r.gate(&ev("cancelled", 2, 12), 2_000, None),
            Gate::Wait {
                reason: WaitReason::DeadLettered,
                ..
            }
        ));
        let r = record(&[
            ("created", 0, 10, Done),
            ("updated", 1, 11, Released),
            ("cancelled", 2, 12, Pending),
        ]);
        assert_eq!(
            r.gate(&ev("cancelled", 2, 12), 2_000, None),
            Gate::Go {
                alone: false,
                late: false
            }
        );
        assert_eq!(r.gate(&ev("created", 0, 10), 2_000, None), Gate::Duplicate);
    }

    #[test]
    fn a_cancellation_that_arrived_first_still_goes_after_its_order() {
        // The provider sent the cancellation first (seq 5): its phase puts
        // it after the created that arrived later (seq 9).
        let r = record(&[("cancelled", 2, 5, Pending), ("created", 0, 9, Pending)]);
        assert!(matches!(
            r.gate(&ev("cancelled", 2, 5), 2_000, Some(Duration::from_secs(5))),
            Gate::Wait {
                reason: WaitReason::Earlier,
                ..
            }
        ));
        assert_eq!(
            r.gate(&ev("created", 0, 9), 2_000, Some(Duration::from_secs(5))),
            Gate::Go {
                alone: false,
                late: false
            }
        );
    }

    #[test]
    fn without_its_first_event_an_event_waits_then_goes_alone() {
        let r = record(&[("cancelled", 2, 5, Pending)]);
        let wait = Some(Duration::from_secs(5));
        assert_eq!(
            r.gate(&ev("cancelled", 2, 5), 2_000, wait),
            Gate::Wait {
                reason: WaitReason::FirstEvent,
                behind: "the first event".into(),
                until_ms: Some(6_000)
            }
        );
        assert_eq!(
            r.gate(&ev("cancelled", 2, 5), 6_000, wait),
            Gate::Go {
                alone: true,
                late: false
            }
        );
        // With no first-event wait (the answers to a provider), it goes.
        assert_eq!(
            r.gate(&ev("cancelled", 2, 5), 2_000, None),
            Gate::Go {
                alone: false,
                late: false
            }
        );
        // The created that comes after the cancellation went is late.
        let r = record(&[("cancelled", 2, 5, Done), ("created", 0, 9, Pending)]);
        assert_eq!(
            r.gate(&ev("created", 0, 9), 9_000, wait),
            Gate::Go {
                alone: false,
                late: true
            }
        );
    }

    #[test]
    fn a_replay_re_arms_its_event_and_copies_change_nothing() {
        let mut r = record(&[
            ("created", 0, 10, DeadLettered),
            ("cancelled", 2, 12, Pending),
        ]);
        assert!(r.register(&ev("created", 0, 99), 5_000));
        let created = r.event("created").unwrap();
        assert_eq!(created.state, Pending);
        assert_eq!(created.seq, 10, "the rank is the first copy's");
        assert!(!r.register(&ev("created", 0, 99), 6_000), "already pending");
        assert!(r.set("created", Done, 7_000));
        assert!(
            !r.register(&ev("created", 0, 100), 8_000),
            "a copy of a done event"
        );
        assert_eq!(
            r.waiting_behind("created")
                .iter()
                .map(|e| e.key.as_str())
                .collect::<Vec<_>>(),
            vec!["cancelled"],
            "what has not gone yet behind it"
        );
    }

    #[test]
    fn an_entry_keeps_its_holding_events_when_it_is_full() {
        let mut r = OrderRecord::default();
        r.register(&ev("first", 0, 1), 1);
        r.set("first", DeadLettered, 2);
        for i in 0..(MAX_EVENTS as u64 + 10) {
            let key = format!("u{i}");
            r.register(&ev(&key, 1, 10 + i), 3);
            r.set(&key, Done, 4);
        }
        assert_eq!(r.events.len(), MAX_EVENTS);
        assert_eq!(r.event("first").unwrap().state, DeadLettered);
        assert!(r.event("u0").is_none(), "the oldest finished one went");
        assert!(r.event(&format!("u{}", MAX_EVENTS as u64 + 9)).is_some());
    }

    #[test]
    fn keys_take_any_order_id() {
        let k = order_key("acmé", Provider::Wolt, "a/b:c d");
        assert!(
            k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
            "{k}"
        );
        assert!(k.starts_with("order.wolt."));
        assert_ne!(k, status_key("acmé", Provider::Wolt, "a/b:c d"));
    }
}
