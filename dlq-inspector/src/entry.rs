//! Reading the DLQ: one entry by id, or every entry a filter selects,
//! streamed by an ordered consumer that delivers headers only (an entry's
//! body can be up to a MiB and `list`, `stats` and the selection of a bulk
//! replay never need it).

use std::time::{Duration, SystemTime};

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use async_nats::jetstream::stream::{RawMessageErrorKind, Stream};
use futures::StreamExt;
use shared::dlq::DeadLetter;
use shared::headers;

use crate::Error;
use crate::cli::Filter;

/// What `list`, `stats` and a bulk selection know about an entry.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The DLQ stream sequence: what `show`, `replay` and `purge` take.
    pub id: u64,
    /// `dlq.<stage>.<provider>`
    pub dlq_subject: String,
    /// When the DLQ stored it (the dead-letter time).
    pub stored_at: SystemTime,
    /// The dead-letter fields, or why they cannot be read (a message some
    /// other tool put on `dlq.>`).
    pub letter: Result<DeadLetter, String>,
    /// When the ingress accepted the webhook (`Orderhub-Received-At`).
    pub received_at: Option<SystemTime>,
    /// The original message id (`Orderhub-Dlq-Original-Msg-Id`).
    pub original_msg_id: Option<String>,
}

impl Entry {
    pub fn new(id: u64, dlq_subject: &str, headers: &HeaderMap, stored_at: SystemTime) -> Entry {
        let get = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
        Entry {
            id,
            dlq_subject: dlq_subject.to_owned(),
            stored_at,
            letter: DeadLetter::from_headers(headers),
            received_at: get(headers::RECEIVED_AT)
                .and_then(|v| humantime::parse_rfc3339_weak(&v).ok()),
            original_msg_id: get(headers::dlq::ORIGINAL_MSG_ID),
        }
    }

    pub fn stage(&self) -> &str {
        match &self.letter {
            Ok(l) => &l.stage,
            Err(_) => shared::subjects::token(&self.dlq_subject, 1).unwrap_or("?"),
        }
    }

    pub fn provider(&self) -> &str {
        match &self.letter {
            Ok(l) => &l.provider,
            Err(_) => shared::subjects::token(&self.dlq_subject, 2).unwrap_or("?"),
        }
    }

    pub fn tenant(&self) -> Option<&str> {
        self.letter.as_ref().ok().and_then(|l| l.tenant.as_deref())
    }

    pub fn webhook_id(&self) -> Option<&str> {
        self.letter
            .as_ref()
            .ok()
            .and_then(|l| l.webhook_id.as_deref())
    }

    pub fn deliveries(&self) -> Option<i64> {
        self.letter.as_ref().ok().map(|l| l.deliveries)
    }

    pub fn error_class(&self) -> &'static str {
        match &self.letter {
            Ok(l) => l.error_class.as_str(),
            Err(_) => "unreadable",
        }
    }

    pub fn error(&self) -> String {
        match &self.letter {
            Ok(l) => l.error.clone(),
            Err(e) => format!("not a readable dead letter: {e}"),
        }
    }

    /// `Ok` if replay can republish it; else why not.
    pub fn replayable(&self) -> Result<(), String> {
        match &self.letter {
            Err(e) => Err(format!("not a readable dead letter ({e})")),
            Ok(l) if l.subject.is_empty() => Err(format!(
                "the original had already left {} when it was dead-lettered (entry written by the {} \
                 without subject or body): there is nothing to republish; find the webhook by its id \
                 in the provider's dashboard or the logs, then purge this entry",
                l.stream,
                l.moved_by.as_str()
            )),
            Ok(_) => Ok(()),
        }
    }

    pub fn age(&self, now: SystemTime) -> Duration {
        now.duration_since(self.stored_at).unwrap_or_default()
    }

    /// The `--json` object (DESIGN §3.5: at least id, stage, provider,
    /// tenant, webhook_id, deliveries, error).
    pub fn to_json(&self, now: SystemTime) -> serde_json::Value {
        let l = self.letter.as_ref().ok();
        serde_json::json!({
            "id": self.id,
            "stage": self.stage(),
            "provider": self.provider(),
            "tenant": self.tenant(),
            "webhook_id": self.webhook_id(),
            "deliveries": self.deliveries(),
            "error_class": self.error_class(),
            "error": self.error(),
            "dead_lettered_at": rfc3339(self.stored_at),
            "age_seconds": self.age(now).as_secs(),
            "first_failure": l.map(|l| rfc3339(l.first_failure)),
            "last_failure": l.map(|l| rfc3339(l.last_failure)),
            "stream": l.map(|l| l.stream.as_str()),
            "subject": l.map(|l| l.subject.as_str()),
            "seq": l.map(|l| l.seq),
            "moved_by": l.map(|l| l.moved_by.as_str()),
            "received_at": self.received_at.map(rfc3339),
            "replayable": self.replayable().is_ok(),
        })
    }
}

pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The filters that the server cannot apply (it filters by subject and
/// start time); `since` is checked again here for an exact cut.
pub fn matches(filter: &Filter, since: Option<SystemTime>, e: &Entry) -> bool {
    let eq =
        |want: &Option<String>, got: Option<&str>| want.as_deref().is_none_or(|w| Some(w) == got);
    eq(&filter.stage, Some(e.stage()))
        && eq(&filter.provider, Some(e.provider()))
        && eq(&filter.tenant, e.tenant())
        && since.is_none_or(|s| e.stored_at >= s)
        && filter
            .error
            .is_none_or(|class| e.letter.as_ref().is_ok_and(|l| l.error_class == class))
        && filter
            .text
            .as_deref()
            .is_none_or(|needle| e.error().to_lowercase().contains(&needle.to_lowercase()))
}

/// Every entry `filter` selects, oldest first, streamed by one ordered
/// consumer (no round trip per entry).
pub async fn scan(
    dlq: &Stream,
    filter: &Filter,
    now: SystemTime,
    timeout: Duration,
) -> Result<Vec<Entry>, Error> {
    let nats = |op: &str| {
        let op = op.to_owned();
        move |e: &dyn std::fmt::Display| Error::Nats {
            op: op.clone(),
            reason: e.to_string(),
        }
    };
    let info = tokio::time::timeout(timeout, dlq.get_info())
        .await
        .map_err(|_| nats("read the DLQ stream's state")(&"timed out"))?
        .map_err(|e| nats("read the DLQ stream's state")(&e))?;
    if info.state.messages == 0 {
        return Ok(Vec::new());
    }
    let last = info.state.last_sequence;
    let since = filter.since.map(|s| s.resolve(now));
    let deliver_policy = match since {
        Some(t) => DeliverPolicy::ByStartTime {
            start_time: t.into(),
        },
        None => DeliverPolicy::All,
    };
    let consumer = dlq
        .create_consumer(OrderedConfig {
            filter_subject: filter.subject(),
            deliver_policy,
            headers_only: true,
            ..Default::default()
        })
        .await
        .map_err(|e| nats("read the DLQ")(&e))?;
    let mut out = Vec::new();
    if consumer.cached_info().num_pending == 0 {
        return Ok(out);
    }
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| nats("read the DLQ")(&e))?;
    loop {
        let next = tokio::time::timeout(timeout, messages.next())
            .await
            .map_err(|_| nats("read the DLQ")(&"no message within the timeout"))?;
        let Some(msg) = next else { break };
        let msg = msg.map_err(|e| nats("read the DLQ")(&e))?;
        let info = msg.info().map_err(|e| nats("read the DLQ")(&e))?;
        let (seq, pending) = (info.stream_sequence, info.pending);
        let stored_at: SystemTime = info.published.into();
        let empty = HeaderMap::new();
        let entry = Entry::new(
            seq,
            msg.subject.as_str(),
            msg.headers.as_ref().unwrap_or(&empty),
            stored_at,
        );
        if matches(filter, since, &entry) {
            out.push(entry);
        }
        // Entries that arrive while we read are left for the next run.
        if pending == 0 || seq >= last {
            break;
        }
    }
    Ok(out)
}

/// One entry with its body, by id.
pub async fn fetch(
    dlq: &Stream,
    id: u64,
    timeout: Duration,
) -> Result<async_nats::jetstream::message::StreamMessage, Error> {
    match tokio::time::timeout(timeout, dlq.get_raw_message(id)).await {
        Err(_) => Err(Error::Nats {
            op: format!("read DLQ entry {id}"),
            reason: "timed out".into(),
        }),
        Ok(Ok(m)) => Ok(m),
        Ok(Err(e)) if e.kind() == RawMessageErrorKind::NoMessageFound => Err(Error::NotFound(id)),
        Ok(Err(e)) => Err(Error::Nats {
            op: format!("read DLQ entry {id}"),
            reason: e.to_string(),
        }),
    }
}

/// The entries named by id, in the order given (each once).
pub async fn by_ids(dlq: &Stream, ids: &[u64], timeout: Duration) -> Result<Vec<Entry>, Error> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for &id in ids {
        if !seen.insert(id) {
            continue;
        }
        let m = fetch(dlq, id, timeout).await?;
        out.push(Entry::new(
            id,
            m.subject.as_str(),
            &m.headers,
            m.time.into(),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use shared::failure::FailureClass;

    use super::*;
    use crate::cli::Since;
    use shared::dlq::MovedBy;

    fn letter() -> DeadLetter {
        let t = humantime::parse_rfc3339("2026-05-01T03:00:00Z").unwrap();
        DeadLetter {
            stage: "forwarder".into(),
            stream: "ORDERS".into(),
            subject: "orders.acme.careem".into(),
            seq: 7,
            webhook_id: Some("wh-1".into()),
            provider: "careem".into(),
            tenant: Some("acme".into()),
            deliveries: 10,
            first_failure: t,
            last_failure: t,
            error_class: FailureClass::Backend5xx,
            error: "backend answered 503: Service Unavailable".into(),
            moved_by: MovedBy::Worker,
        }
    }

    fn entry(l: &DeadLetter) -> Entry {
        Entry::new(
            42,
            "dlq.forwarder.careem",
            &l.headers(None),
            humantime::parse_rfc3339("2026-05-01T03:00:01Z").unwrap(),
        )
    }

    #[test]
    fn filters_match_every_field_given() {
        let e = entry(&letter());
        let f = |f: Filter| matches(&f, f.since.map(|s| s.resolve(e.stored_at)), &e);
        assert!(f(Filter::default()));
        assert!(f(Filter {
            tenant: Some("acme".into()),
            stage: Some("forwarder".into()),
            provider: Some("careem".into()),
            error: Some(FailureClass::Backend5xx),
            text: Some("SERVICE unavail".into()),
            since: Some(Since::Ago(Duration::ZERO)),
        }));
        assert!(f(Filter {
            text: Some("503".into()),
            ..Filter::default()
        }));
        assert!(!f(Filter {
            tenant: Some("globex".into()),
            ..Filter::default()
        }));
        assert!(!f(Filter {
            error: Some(FailureClass::BackendTimeout),
            ..Filter::default()
        }));
        assert!(!f(Filter {
            text: Some("timeout".into()),
            ..Filter::default()
        }));
        assert!(!matches(
            &Filter::default(),
            Some(e.stored_at + Duration::from_millis(1)),
            &e
        ));
    }

    #[test]
    fn a_mover_entry_without_its_original_cannot_be_replayed() {
        let mut l = letter();
        assert_eq!(entry(&l).replayable(), Ok(()));
        l.subject = String::new();
        l.moved_by = MovedBy::Mover;
        let why = entry(&l).replayable().unwrap_err();
        assert!(why.contains("nothing to republish"), "{why}");
        let foreign = Entry::new(
            1,
            "dlq.forwarder.wolt",
            &HeaderMap::new(),
            SystemTime::now(),
        );
        assert_eq!(foreign.stage(), "forwarder");
        assert_eq!(foreign.provider(), "wolt");
        assert_eq!(foreign.error_class(), "unreadable");
        assert!(foreign.replayable().is_err());
    }

    #[test]
    fn json_has_the_contract_fields() {
        let e = entry(&letter());
        let v = e.to_json(e.stored_at + Duration::from_secs(90));
        for k in [
            "id",
            "stage",
            "provider",
            "tenant",
            "webhook_id",
            "deliveries",
            "error",
        ] {
            assert!(v.get(k).is_some(), "{k}");
        }
        assert_eq!(v["id"], 42);
        assert_eq!(v["tenant"], "acme");
        assert_eq!(v["deliveries"], 10);
        assert_eq!(v["age_seconds"], 90);
        assert_eq!(v["replayable"], true);
    }
}
