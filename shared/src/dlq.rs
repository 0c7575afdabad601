//! Dead-letter entries: the original message (body untouched, headers kept)
//! plus the `Orderhub-Dlq-*` fields of DESIGN §2, published to
//! `dlq.<stage>.<provider>` with `Nats-Msg-Id: dlq:<stream>:<seq>` so that a
//! worker and the advisory mover dead-lettering the same message store it
//! once. An entry's first failure time comes from the failure history
//! ([`crate::failure_history`]).

use std::time::{Duration, SystemTime};

use async_nats::HeaderMap;
use async_nats::jetstream;
use bytes::Bytes;

use crate::failure::FailureClass;
use crate::headers;
use crate::subjects;

/// NATS header values are one line; an error text longer than this is cut
/// (the entry is for a human, the full payload is in the body).
const MAX_ERROR_LEN: usize = 4096;

/// Who wrote the entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MovedBy {
    /// The worker's handler gave up (permanent error or last delivery).
    Worker,
    /// The advisory mover: the worker died or hung on the last delivery.
    Mover,
}

impl MovedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            MovedBy::Worker => "worker",
            MovedBy::Mover => "mover",
        }
    }
}

/// Everything a dead-letter entry says about its original.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub stage: String,
    pub stream: String,
    pub subject: String,
    pub seq: u64,
    pub webhook_id: Option<String>,
    pub provider: String,
    pub tenant: Option<String>,
    pub deliveries: i64,
    pub first_failure: SystemTime,
    pub last_failure: SystemTime,
    pub error_class: FailureClass,
    pub error: String,
    pub moved_by: MovedBy,
}

impl DeadLetter {
    /// `Nats-Msg-Id` of the entry; the same from the worker and the mover.
    pub fn msg_id(&self) -> String {
        format!("dlq:{}:{}", self.stream, self.seq)
    }

    /// `dlq.<stage>.<provider>`
    pub fn subject(&self) -> String {
        subjects::dead_letter(&self.stage, &self.provider)
    }

    /// The entry's headers: the original's (minus `Nats-*` control headers,
    /// which would make JetStream treat the entry as a duplicate of, or an
    /// expectation on, the original) and the dead-letter fields.
    pub fn headers(&self, original: Option<&HeaderMap>) -> HeaderMap {
        let mut out = HeaderMap::new();
        if let Some(orig) = original {
            for (name, values) in orig.iter() {
                let n: &str = name.as_ref();
                if n.eq_ignore_ascii_case("Nats-Msg-Id") {
                    if let Some(v) = values.first() {
                        out.insert(headers::dlq::ORIGINAL_MSG_ID, v.as_str());
                    }
                    continue;
                }
                if n.len() >= 5 && n[..5].eq_ignore_ascii_case("Nats-") {
                    continue;
                }
                if n.starts_with("Orderhub-Dlq-") {
                    // A replayed entry that failed again: the new fields win.
                    continue;
                }
                for v in values {
                    out.append(name.clone(), v.clone());
                }
            }
        }
        out.insert("Nats-Msg-Id", self.msg_id().as_str());
        out.insert(headers::dlq::STAGE, self.stage.as_str());
        out.insert(headers::dlq::STREAM, self.stream.as_str());
        out.insert(headers::dlq::SUBJECT, self.subject.as_str());
        out.insert(headers::dlq::SEQ, self.seq.to_string().as_str());
        out.insert(
            headers::dlq::DELIVERIES,
            self.deliveries.to_string().as_str(),
        );
        out.insert(
            headers::dlq::FIRST_FAILURE,
            rfc3339(self.first_failure).as_str(),
        );
        out.insert(
            headers::dlq::LAST_FAILURE,
            rfc3339(self.last_failure).as_str(),
        );
        out.insert(headers::dlq::ERROR_CLASS, self.error_class.as_str());
        out.insert(headers::dlq::ERROR, one_line(&self.error).as_str());
        out.insert(headers::dlq::MOVED_BY, self.moved_by.as_str());
        if let Some(id) = &self.webhook_id {
            out.insert(headers::WEBHOOK_ID, id.as_str());
        }
        if let Some(t) = &self.tenant {
            out.insert(headers::TENANT, t.as_str());
        }
        out.insert(headers::PROVIDER, self.provider.as_str());
        out
    }

    /// Reads the fields back from an entry's headers (what `dlq-inspector`
    /// and the tests see); `None` names the first missing or bad field.
    pub fn from_headers(h: &HeaderMap) -> Result<DeadLetter, String> {
        let get = |name: &str| -> Result<String, String> {
            h.get(name)
                .map(|v| v.as_str().to_owned())
                .ok_or_else(|| format!("missing header {name}"))
        };
        let time = |name: &str| -> Result<SystemTime, String> {
            humantime::parse_rfc3339(&get(name)?).map_err(|e| format!("{name}: {e}"))
        };
        Ok(DeadLetter {
            stage: get(headers::dlq::STAGE)?,
            stream: get(headers::dlq::STREAM)?,
            subject: get(headers::dlq::SUBJECT)?,
            seq: get(headers::dlq::SEQ)?
                .parse()
                .map_err(|e| format!("{}: {e}", headers::dlq::SEQ))?,
            webhook_id: get(headers::WEBHOOK_ID).ok(),
            provider: get(headers::PROVIDER)?,
            tenant: get(headers::TENANT).ok(),
            deliveries: get(headers::dlq::DELIVERIES)?
                .parse()
                .map_err(|e| format!("{}: {e}", headers::dlq::DELIVERIES))?,
            first_failure: time(headers::dlq::FIRST_FAILURE)?,
            last_failure: time(headers::dlq::LAST_FAILURE)?,
            error_class: get(headers::dlq::ERROR_CLASS)?
                .parse()
                .map_err(|e| format!("{}: {e}", headers::dlq::ERROR_CLASS))?,
            error: get(headers::dlq::ERROR)?,
            moved_by: match get(headers::dlq::MOVED_BY)?.as_str() {
                "worker" => MovedBy::Worker,
                "mover" => MovedBy::Mover,
                other => return Err(format!("{}: {other:?}", headers::dlq::MOVED_BY)),
            },
        })
    }
}

/// Publishes the entry and waits for JetStream's ack. A duplicate ack (the
/// other of worker and mover was first) is success.
pub async fn publish(
    js: &jetstream::Context,
    entry: &DeadLetter,
    original_headers: Option<&HeaderMap>,
    body: Bytes,
) -> Result<(), PublishError> {
    let ack = js
        .publish_with_headers(entry.subject(), entry.headers(original_headers), body)
        .await
        .map_err(|e| PublishError(e.to_string()))?;
    ack.await.map_err(|e| PublishError(e.to_string()))?;
    Ok(())
}

/// The dead-letter entry was not stored.
#[derive(Debug, Clone, thiserror::Error)]
#[error("dead-letter publish failed: {0}")]
pub struct PublishError(pub String);

/// RFC 3339 with milliseconds, UTC.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Header-safe: one line, bounded.
fn one_line(s: &str) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    crate::redact::prefix_within(flat.trim(), MAX_ERROR_LEN).to_owned()
}

/// How long an entry has been in trouble (for display).
pub fn age(since: SystemTime) -> Duration {
    SystemTime::now().duration_since(since).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> DeadLetter {
        let t0 = humantime::parse_rfc3339("2026-11-28T06:00:00.125Z").unwrap();
        DeadLetter {
            stage: "forwarder".into(),
            stream: "ORDERS".into(),
            subject: "orders.acme.careem".into(),
            seq: 42,
            webhook_id: Some("0193-abc".into()),
            provider: "careem".into(),
            tenant: Some("acme".into()),
            deliveries: 10,
            first_failure: t0,
            last_failure: t0 + Duration::from_secs(90),
            error_class: FailureClass::Backend5xx,
            error: "backend answered 503\r\nretry later".into(),
            moved_by: MovedBy::Worker,
        }
    }

    #[test]
    fn headers_round_trip_and_strip_nats_control_headers() {
        let mut orig = HeaderMap::new();
        orig.insert("Nats-Msg-Id", "deliveroo:guid-1");
        orig.insert("Nats-Expected-Stream", "WEBHOOKS");
        orig.insert("Content-Type", "application/json");
        orig.insert(headers::dlq::ERROR, "an older failure");
        let e = entry();
        let h = e.headers(Some(&orig));
        assert_eq!(h.get("Nats-Msg-Id").unwrap().as_str(), "dlq:ORDERS:42");
        assert!(h.get("Nats-Expected-Stream").is_none());
        assert_eq!(h.get("Content-Type").unwrap().as_str(), "application/json");
        assert_eq!(
            h.get(headers::dlq::ORIGINAL_MSG_ID).unwrap().as_str(),
            "deliveroo:guid-1"
        );
        assert_eq!(
            h.get(headers::dlq::FIRST_FAILURE).unwrap().as_str(),
            "2026-11-28T06:00:00.125Z"
        );
        let back = DeadLetter::from_headers(&h).unwrap();
        assert_eq!(
            back,
            DeadLetter {
                error: "backend answered 503  retry later".into(),
                ..e
            }
        );
        assert_eq!(back.subject(), "dlq.forwarder.careem");
    }

    #[test]
    fn long_errors_are_cut_on_a_char_boundary() {
        let mut e = entry();
        e.error = "ب".repeat(5000);
        let h = e.headers(None);
        let v = h.get(headers::dlq::ERROR).unwrap().as_str();
        assert!(v.len() <= MAX_ERROR_LEN && v.len() >= MAX_ERROR_LEN - 1);
        assert!(v.chars().all(|c| c == 'ب'));
    }
}
