//! What waits behind a dead letter (issue 17): a forwarder entry's order
//! event and a status-sync entry's answer are events of their order's
//! sequence ([`shared::sequence`], the `ORDER_SEQUENCE` bucket). While one
//! is `dead_lettered`, the later events of its order wait for it. `show`
//! lists them, `release` lets them go (the event becomes `released`; the
//! entry stays and can still be replayed, which arms the event again) and
//! `purge` releases an entry's event before it deletes the entry.
//!
//! An entry names its event by its body, as the stage read it: the
//! forwarder's is the canonical order (`tenant` as the entry's, `provider`,
//! `provider_order_id`, and the event's key: `idempotency_key`, else the
//! webhook id for an order written before that field existed); the status
//! worker's is the `StatusCommand` (`tenant`, `provider`,
//! `provider_order_id`, key `status_id`). No other stage sequences
//! anything.

use std::time::{Duration, SystemTime};

use async_nats::jetstream::{self, kv};
use shared::sequence::{self, EventRecord, EventState, OrderRecord, SEQUENCE_BUCKET, Sequencer};

use crate::Error;
use crate::entry::{Entry, rfc3339};

/// The stages whose dead letters are events of an order's sequence.
pub const SEQUENCED_STAGES: [&str; 2] = ["forwarder", "status-sync"];

/// How many compare-and-set conflicts one release rides out (each is a
/// stage's change to the same order).
const MAX_CONFLICTS: u32 = 20;

/// Where an entry's event is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The bucket key: `order.<provider>.<tenant>.<id>` or `status.…`.
    pub entry: String,
    /// The event's key in it.
    pub key: String,
    pub tenant: String,
    pub provider_order_id: String,
}

/// Why an entry is no event of any sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoPlace {
    /// Its stage sequences nothing (transformer, fetcher).
    Stage(String),
    /// Its body does not say which order and event it is.
    Unreadable(String),
}

impl NoPlace {
    pub fn reason(&self) -> String {
        match self {
            NoPlace::Stage(stage) => format!(
                "a {stage} entry holds no order's events (only forwarder and status-sync entries are in an order's sequence)"
            ),
            NoPlace::Unreadable(why) => {
                format!("its body does not say which order event it is ({why})")
            }
        }
    }
}

/// The order event `e` (with body `payload`) is, or why it is none.
pub fn place(e: &Entry, payload: &[u8]) -> Result<Place, NoPlace> {
    let stage = e.stage();
    if !SEQUENCED_STAGES.contains(&stage) {
        return Err(NoPlace::Stage(stage.to_owned()));
    }
    let unreadable = |why: &str| NoPlace::Unreadable(why.to_owned());
    if payload.is_empty() {
        return Err(unreadable(
            "the entry has no body: its original was gone when it was dead-lettered",
        ));
    }
    let body: serde_json::Value =
        serde_json::from_slice(payload).map_err(|_| unreadable("the body is not JSON"))?;
    let text = |field: &str| body.get(field).and_then(|v| v.as_str());
    let need = |field: &'static str| text(field).ok_or_else(|| unreadable(&format!("no {field}")));
    let provider_order_id = need("provider_order_id")?;
    let provider: shared::Provider = need("provider")?
        .parse()
        .map_err(|e: shared::provider::UnknownProvider| unreadable(&e.to_string()))?;
    let letter = e.letter.as_ref().ok();
    type EntryKey = fn(&str, shared::Provider, &str) -> String;
    let (tenant, key, entry): (String, String, EntryKey) = if stage == "forwarder" {
        // The forwarder's tenant is the delivery's (its header, else its
        // subject's), its key the order's, else the webhook id.
        let tenant = letter
            .and_then(|l| {
                l.tenant
                    .clone()
                    .or_else(|| shared::subjects::token(&l.subject, 1).map(str::to_owned))
            })
            .or_else(|| text("tenant").map(str::to_owned))
            .ok_or_else(|| unreadable("no tenant"))?;
        let key = text("idempotency_key")
            .map(str::to_owned)
            .or_else(|| letter.and_then(|l| l.webhook_id.clone()))
            .or_else(|| letter.map(|l| format!("{}-{}", l.stream, l.seq)))
            .ok_or_else(|| unreadable("no idempotency_key and no webhook id"))?;
        (tenant, key, sequence::order_key)
    } else {
        (
            need("tenant")?.to_owned(),
            need("status_id")?.to_owned(),
            sequence::status_key,
        )
    };
    Ok(Place {
        entry: entry(&tenant, provider, provider_order_id),
        key,
        tenant,
        provider_order_id: provider_order_id.to_owned(),
    })
}

/// The rank of an event in its order (phase, then arrival).
fn rank(e: &EventRecord) -> (u8, u64) {
    (e.phase, e.seq)
}

/// `key`'s event in `record` and what stands behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Look {
    /// `None`: the order's entry does not hold the event (expired, pruned,
    /// or never sequenced).
    pub event: Option<EventRecord>,
    /// The pending events ranked after it, earliest first (none when it
    /// holds nothing any more).
    pub behind: Vec<EventRecord>,
}

impl Look {
    /// Only an event that still holds (`pending`, `dead_lettered`) has
    /// events waiting behind it.
    fn of(record: &OrderRecord, key: &str) -> Look {
        let event = record.event(key).cloned();
        let behind = match &event {
            Some(e) if e.state.holds() => record.waiting_behind(key).into_iter().cloned().collect(),
            _ => Vec::new(),
        };
        Look { event, behind }
    }
}

/// The events that would go once `key` no longer holds them: pending,
/// ranked after it, and held by no other earlier event.
fn freed_by(record: &OrderRecord, key: &str) -> (Vec<EventRecord>, usize) {
    let behind = record.waiting_behind(key);
    let (mut free, mut held) = (Vec::new(), 0);
    for w in behind {
        let other = record
            .events
            .iter()
            .any(|o| o.key != key && o.key != w.key && rank(o) < rank(w) && o.state.holds());
        if other {
            held += 1;
        } else {
            free.push(w.clone());
        }
    }
    (free, held)
}

/// What a release did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Released {
    /// There is no `ORDER_SEQUENCE` bucket: nothing is sequenced.
    NoBucket,
    /// The order's entry does not hold the event.
    NotInSequence,
    /// The event holds nothing (`done` or `released` already): unchanged.
    Already(EventRecord),
    /// The event was `was` and is `released` now.
    Now {
        event: EventRecord,
        was: EventState,
        /// The events it held that go now.
        let_go: Vec<EventRecord>,
        /// The events behind it that another earlier event still holds.
        still_held: usize,
    },
}

impl Released {
    pub fn let_go(&self) -> usize {
        match self {
            Released::Now { let_go, .. } => let_go.len(),
            _ => 0,
        }
    }

    /// One line for the operator, after `released <id>: `.
    pub fn describe(&self, p: &Place) -> String {
        let order = format!("order {} of {}", p.provider_order_id, p.tenant);
        let text = match self {
            Released::NoBucket => format!(
                "there is no {SEQUENCE_BUCKET} bucket, so nothing waits for it; 0 events let go"
            ),
            Released::NotInSequence => format!(
                "its event ({}) is not in {order}'s sequence (expired, or the order was not sequenced); 0 events let go",
                p.key
            ),
            Released::Already(e) => format!(
                "{} of {order} was {} already; 0 events let go",
                e.name,
                e.state.as_str()
            ),
            Released::Now {
                event,
                was,
                let_go,
                still_held,
            } => {
                let names: Vec<&str> = let_go.iter().map(|e| e.name.as_str()).collect();
                let mut s = format!(
                    "{} of {order} (was {}); {} event{} let go{}",
                    event.name,
                    was.as_str(),
                    let_go.len(),
                    if let_go.len() == 1 { "" } else { "s" },
                    if names.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", names.join(", "))
                    }
                );
                if *still_held > 0 {
                    s.push_str(&format!(
                        ", {still_held} still held by another earlier event"
                    ));
                }
                s
            }
        };
        shared::redact::for_terminal(&text).into_owned()
    }

    pub fn to_json(&self) -> serde_json::Value {
        let state = match self {
            Released::NoBucket => "no_bucket",
            Released::NotInSequence => "not_in_sequence",
            Released::Already(e) => e.state.as_str(),
            Released::Now { .. } => EventState::Released.as_str(),
        };
        let mut v = serde_json::json!({
            "state": state,
            "let_go": self.let_go(),
        });
        if let Released::Now {
            was,
            let_go,
            still_held,
            ..
        } = self
        {
            v["was"] = serde_json::json!(was.as_str());
            v["let_go_events"] = let_go.iter().map(|e| event_json(e, None)).collect();
            v["still_held"] = serde_json::json!(still_held);
        }
        v
    }
}

fn ms(t: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(t)
}

/// One event for `--json`.
pub fn event_json(e: &EventRecord, now: Option<SystemTime>) -> serde_json::Value {
    let mut v = serde_json::json!({
        "name": e.name,
        "key": e.key,
        "state": e.state.as_str(),
        "since": rfc3339(ms(e.changed_ms)),
        "first_seen": rfc3339(ms(e.first_seen_ms)),
    });
    if let Some(now) = now {
        v["since_seconds"] = serde_json::json!(
            now.duration_since(ms(e.changed_ms))
                .unwrap_or_default()
                .as_secs()
        );
    }
    v
}

/// `since <time> (<age> ago)`
pub fn since(e: &EventRecord, now: SystemTime) -> String {
    let t = ms(e.changed_ms);
    format!(
        "since {} ({} ago)",
        rfc3339(t),
        crate::render::short_age(now.duration_since(t).unwrap_or_default())
    )
}

/// Where a shown entry stands in its order's sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// Not an event of any sequence, or its body does not say which.
    NoPlace(NoPlace),
    /// There is no `ORDER_SEQUENCE` bucket.
    NoBucket(Place),
    /// What the order's entry says about it.
    Seen(Place, Look),
    /// The bucket could not be read.
    Failed(Place, String),
}

impl Standing {
    /// Reads where `e` (body `payload`) stands; a read failure is a
    /// [`Standing::Failed`] (the rest of `show` is still worth printing).
    pub async fn of(seq: &mut Sequence, e: &Entry, payload: &[u8]) -> Standing {
        let p = match place(e, payload) {
            Ok(p) => p,
            Err(why) => return Standing::NoPlace(why),
        };
        match seq.look(&p).await {
            Ok(None) => Standing::NoBucket(p),
            Ok(Some(look)) => Standing::Seen(p, look),
            Err(err) => Standing::Failed(p, err.to_string()),
        }
    }

    fn order(p: &Place) -> String {
        format!("order {} of {}", p.provider_order_id, p.tenant)
    }

    /// The `in its order` field of `show`.
    pub fn field(&self, now: SystemTime) -> String {
        match self {
            Standing::NoPlace(NoPlace::Stage(_)) => {
                format!("not sequenced: {}", self.reason().unwrap_or_default())
            }
            Standing::NoPlace(NoPlace::Unreadable(_)) => {
                format!("unknown: {}", self.reason().unwrap_or_default())
            }
            Standing::NoBucket(_) => {
                format!("not in the sequence: there is no {SEQUENCE_BUCKET} bucket")
            }
            Standing::Seen(p, Look { event: None, .. }) => format!(
                "not in the sequence: {}'s entry does not hold its event (key {}): expired, or the order was not sequenced",
                Self::order(p),
                p.key
            ),
            Standing::Seen(
                p,
                Look {
                    event: Some(ev), ..
                },
            ) => format!(
                "{} {}: {} of {}, key {}",
                ev.state.as_str(),
                since(ev, now),
                ev.name,
                Self::order(p),
                p.key
            ),
            Standing::Failed(_, why) => format!("cannot tell: {why}"),
        }
    }

    fn reason(&self) -> Option<String> {
        match self {
            Standing::NoPlace(n) => Some(n.reason()),
            Standing::NoBucket(_) => Some(format!("there is no {SEQUENCE_BUCKET} bucket")),
            Standing::Failed(_, why) => Some(why.clone()),
            Standing::Seen(..) => None,
        }
    }

    /// The events waiting behind it; `None` when that cannot be said.
    pub fn behind(&self) -> Option<&[EventRecord]> {
        match self {
            Standing::NoBucket(_) => Some(&[]),
            Standing::Seen(_, look) => Some(&look.behind),
            Standing::NoPlace(_) | Standing::Failed(..) => None,
        }
    }

    /// The `sequence` field of `show --json`.
    pub fn to_json(&self, now: SystemTime) -> serde_json::Value {
        let state = match self {
            Standing::NoPlace(NoPlace::Stage(_)) => "not_sequenced",
            Standing::NoPlace(NoPlace::Unreadable(_)) => "unknown",
            Standing::NoBucket(_) | Standing::Seen(_, Look { event: None, .. }) => {
                "not_in_sequence"
            }
            Standing::Seen(
                _,
                Look {
                    event: Some(ev), ..
                },
            ) => ev.state.as_str(),
            Standing::Failed(..) => "error",
        };
        let mut v = serde_json::json!({ "state": state });
        if let Some(why) = self.reason() {
            v["reason"] = serde_json::json!(why);
        }
        if let Standing::NoBucket(p) | Standing::Seen(p, _) | Standing::Failed(p, _) = self {
            v["entry"] = serde_json::json!(p.entry);
            v["key"] = serde_json::json!(p.key);
            v["tenant"] = serde_json::json!(p.tenant);
            v["provider_order_id"] = serde_json::json!(p.provider_order_id);
        }
        if let Standing::Seen(
            _,
            Look {
                event: Some(ev), ..
            },
        ) = self
        {
            v["event"] = event_json(ev, Some(now));
        }
        if let Some(behind) = self.behind() {
            v["waiting_behind"] = behind.iter().map(|e| event_json(e, Some(now))).collect();
        }
        v
    }
}

/// The `ORDER_SEQUENCE` bucket as the inspector uses it: opened on first
/// use, absent when no stage of this version ever ran on the server.
pub struct Sequence {
    js: jetstream::Context,
    timeout: Duration,
    /// `None`: not opened yet; `Some(None)`: there is no bucket.
    store: Option<Option<(kv::Store, Sequencer)>>,
}

impl Sequence {
    pub fn new(js: &jetstream::Context, timeout: Duration) -> Sequence {
        Sequence {
            js: js.clone(),
            timeout,
            store: None,
        }
    }

    fn failed(p: &Place, what: &str, reason: impl std::fmt::Display) -> Error {
        Error::Nats {
            op: format!(
                "{what} order {}'s sequence in {SEQUENCE_BUCKET}",
                shared::redact::truncate(&p.provider_order_id, 64)
            ),
            reason: reason.to_string(),
        }
    }

    async fn open(&mut self, p: &Place) -> Result<Option<&(kv::Store, Sequencer)>, Error> {
        if self.store.is_none() {
            let t = self.timeout;
            let stream = format!("KV_{SEQUENCE_BUCKET}");
            let store = match tokio::time::timeout(t, self.js.get_stream(&stream)).await {
                Err(_) => return Err(Self::failed(p, "open", "no answer")),
                Ok(Err(e))
                    if matches!(
                        e.kind(),
                        jetstream::context::GetStreamErrorKind::JetStream(j)
                            if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
                    ) =>
                {
                    None
                }
                Ok(Err(e)) => return Err(Self::failed(p, "open", e)),
                Ok(Ok(_)) => {
                    match tokio::time::timeout(t, self.js.get_key_value(SEQUENCE_BUCKET)).await {
                        Err(_) => return Err(Self::failed(p, "open", "no answer")),
                        Ok(Err(e)) => return Err(Self::failed(p, "open", e)),
                        Ok(Ok(kv)) => Some((kv, Sequencer::new(self.js.clone(), None))),
                    }
                }
            };
            self.store = Some(store);
        }
        Ok(self.store.as_ref().and_then(Option::as_ref))
    }

    /// `p`'s event and what waits behind it; `None`: there is no bucket.
    pub async fn look(&mut self, p: &Place) -> Result<Option<Look>, Error> {
        let Some((_, seq)) = self.open(p).await? else {
            return Ok(None);
        };
        let record = seq
            .read(&p.entry)
            .await
            .map_err(|e| Self::failed(p, "read", e))?
            .map(|(r, _)| r)
            .unwrap_or_default();
        Ok(Some(Look::of(&record, &p.key)))
    }

    /// Marks `p`'s event `released` if it still holds the events after it
    /// (`pending` or `dead_lettered`), by compare-and-set on the order's
    /// entry; a `done` event stays `done` (a later copy of it is still
    /// recognised as a duplicate).
    pub async fn release(&mut self, p: &Place) -> Result<Released, Error> {
        let timeout = self.timeout;
        let Some((kv, seq)) = self.open(p).await? else {
            return Ok(Released::NoBucket);
        };
        for _ in 0..MAX_CONFLICTS {
            let Some((mut record, revision)) = seq
                .read(&p.entry)
                .await
                .map_err(|e| Self::failed(p, "read", e))?
            else {
                return Ok(Released::NotInSequence);
            };
            let Some(event) = record.event(&p.key).cloned() else {
                return Ok(Released::NotInSequence);
            };
            if !event.state.holds() {
                return Ok(Released::Already(event));
            }
            let (let_go, still_held) = freed_by(&record, &p.key);
            let now = u64::try_from(
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis(),
            )
            .unwrap_or(u64::MAX);
            let mut released = event.clone();
            if let Some(e) = record.events.iter_mut().find(|e| e.key == p.key) {
                e.state = EventState::Released;
                e.changed_ms = now;
                released = e.clone();
            }
            let value = serde_json::to_vec(&record).expect("a record serialises");
            match tokio::time::timeout(timeout, kv.update(&p.entry, value.into(), revision)).await {
                Err(_) => return Err(Self::failed(p, "write", "no answer")),
                Ok(Ok(_)) => {
                    return Ok(Released::Now {
                        event: released,
                        was: event.state,
                        let_go,
                        still_held,
                    });
                }
                Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                Ok(Err(e)) => return Err(Self::failed(p, "write", e)),
            }
        }
        Err(Self::failed(
            p,
            "write",
            format!("{MAX_CONFLICTS} conflicting writes in a row"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::dlq::{DeadLetter, MovedBy};
    use shared::failure::FailureClass;

    fn entry(stage: &str, webhook_id: Option<&str>) -> Entry {
        let t = SystemTime::UNIX_EPOCH;
        let l = DeadLetter {
            stage: stage.into(),
            stream: "ORDERS".into(),
            subject: "orders.acme.careem".into(),
            seq: 7,
            webhook_id: webhook_id.map(str::to_owned),
            provider: "careem".into(),
            tenant: Some("acme".into()),
            deliveries: 3,
            first_failure: t,
            last_failure: t,
            error_class: FailureClass::Backend5xx,
            error: "503".into(),
            moved_by: MovedBy::Worker,
        };
        Entry::new(9, &format!("dlq.{stage}.careem"), &l.headers(None), t)
    }

    #[test]
    fn an_entry_names_its_event_as_its_stage_keyed_it() {
        let order = br#"{"tenant":"acme","provider":"careem","provider_order_id":"P-1","idempotency_key":"k-1"}"#;
        let p = place(&entry("forwarder", Some("wh-1")), order).unwrap();
        assert_eq!(
            p.entry,
            sequence::order_key("acme", shared::Provider::Careem, "P-1")
        );
        assert_eq!(p.key, "k-1");
        // An order written before the key existed: its webhook id.
        let old = br#"{"tenant":"acme","provider":"careem","provider_order_id":"P-1"}"#;
        assert_eq!(
            place(&entry("forwarder", Some("wh-1")), old).unwrap().key,
            "wh-1"
        );
        assert_eq!(
            place(&entry("forwarder", None), old).unwrap().key,
            "ORDERS-7"
        );
        let answer = br#"{"status_id":"st-1","tenant":"acme","provider":"careem","provider_order_id":"P-1","action":"ready"}"#;
        let p = place(&entry("status-sync", None), answer).unwrap();
        assert_eq!(
            (p.entry.as_str(), p.key.as_str()),
            (
                sequence::status_key("acme", shared::Provider::Careem, "P-1").as_str(),
                "st-1"
            )
        );
        assert_eq!(
            place(&entry("transformer", None), order),
            Err(NoPlace::Stage("transformer".into()))
        );
        for (body, why) in [
            (&b""[..], "the entry has no body"),
            (b"not json", "the body is not JSON"),
            (br#"{"provider":"careem"}"#, "no provider_order_id"),
            (
                br#"{"provider":"nope","provider_order_id":"P"}"#,
                "unknown provider",
            ),
        ] {
            match place(&entry("forwarder", Some("wh")), body) {
                Err(NoPlace::Unreadable(w)) => assert!(w.contains(why), "{w}"),
                other => panic!("{other:?}"),
            }
        }
    }

    fn ev(key: &str, phase: u8, seq: u64, state: EventState) -> EventRecord {
        EventRecord {
            key: key.into(),
            name: key.into(),
            phase,
            seq,
            state,
            first_seen_ms: 1,
            changed_ms: 1,
        }
    }

    #[test]
    fn a_release_frees_only_what_nothing_else_holds() {
        use EventState::*;
        let r = OrderRecord {
            events: vec![
                ev("created", 0, 1, DeadLettered),
                ev("updated", 1, 2, DeadLettered),
                ev("update2", 1, 3, Pending),
                ev("cancelled", 2, 4, Pending),
            ],
        };
        let (free, held) = freed_by(&r, "created");
        assert_eq!((free.len(), held), (0, 2), "updated still holds both");
        let (free, held) = freed_by(&r, "updated");
        assert_eq!((free.len(), held), (0, 2), "created holds them");
        let r = OrderRecord {
            events: vec![
                ev("created", 0, 1, DeadLettered),
                ev("updated", 1, 2, Done),
                ev("cancelled", 2, 4, Pending),
            ],
        };
        let (free, held) = freed_by(&r, "created");
        assert_eq!(
            (
                free.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
                held
            ),
            (vec!["cancelled"], 0)
        );
    }
}
