//! One stream message read into the row of its table, or kept raw.
//!
//! Reading never fails: a message that lacks what its table needs (a
//! header, a JSON field, the outcome schema) becomes [`Record::Unparsed`],
//! stored whole with the reason, so it neither blocks its batch nor is
//! lost. Text is stored as received except NUL characters, which
//! PostgreSQL's `text` refuses (replaced by U+FFFD).

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::Deserialize;
use time::OffsetDateTime;

use shared::headers;
use shared::outcome::{Outcome, SCHEMA as OUTCOME_SCHEMA};

/// The streams the ledger reads; each has its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    Webhooks,
    Orders,
    Status,
    Outcomes,
    Dlq,
}

impl Source {
    pub const ALL: [Source; 5] = [
        Source::Webhooks,
        Source::Orders,
        Source::Status,
        Source::Outcomes,
        Source::Dlq,
    ];

    /// The JetStream stream.
    pub const fn stream(self) -> &'static str {
        match self {
            Source::Webhooks => "WEBHOOKS",
            Source::Orders => "ORDERS",
            Source::Status => "STATUS",
            Source::Outcomes => shared::outcome::OUTCOMES_STREAM,
            Source::Dlq => "DLQ",
        }
    }

    /// The ledger's durable consumer on it (`nats/streams.toml`).
    pub const fn durable(self) -> &'static str {
        match self {
            Source::Webhooks => "ledger-webhooks",
            Source::Orders => "ledger-orders",
            Source::Status => "ledger-status",
            Source::Outcomes => "ledger-outcomes",
            Source::Dlq => "ledger-dlq",
        }
    }

    /// Its table.
    pub const fn table(self) -> &'static str {
        match self {
            Source::Webhooks => "webhook_logs",
            Source::Orders => "provider_order_logs",
            Source::Status => "status_decisions",
            Source::Outcomes => "order_outcomes",
            Source::Dlq => "delivery_error_logs",
        }
    }

    /// A bounded label for metrics (`webhooks`).
    pub const fn label(self) -> &'static str {
        match self {
            Source::Webhooks => "webhooks",
            Source::Orders => "orders",
            Source::Status => "status",
            Source::Outcomes => "outcomes",
            Source::Dlq => "dlq",
        }
    }
}

/// A stream message as the ledger sees it.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub source: Source,
    pub seq: u64,
    /// When JetStream stored it: the same on every delivery.
    pub time: OffsetDateTime,
    pub subject: String,
    pub headers: Headers,
    pub body: Bytes,
}

/// Headers as `{name: [values]}`, in name order.
pub type Headers = BTreeMap<String, Vec<String>>;

/// The headers of a NATS message, NUL-free.
pub fn headers_of(map: Option<&async_nats::HeaderMap>) -> Headers {
    let mut out = Headers::new();
    if let Some(map) = map {
        for (name, values) in map.iter() {
            let name: &str = name.as_ref();
            out.insert(
                clean(name),
                values.iter().map(|v| clean(v.as_str())).collect(),
            );
        }
    }
    out
}

/// Replaces NUL (refused by PostgreSQL `text`) with U+FFFD.
pub fn clean(s: &str) -> String {
    if s.contains('\0') {
        s.replace('\0', "\u{fffd}")
    } else {
        s.to_owned()
    }
}

fn header<'a>(h: &'a Headers, name: &str) -> Option<&'a str> {
    h.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.first())
        .map(String::as_str)
}

fn required<'a>(h: &'a Headers, name: &str) -> Result<&'a str, String> {
    header(h, name).ok_or_else(|| format!("missing header {name}"))
}

fn opt(h: &Headers, name: &str) -> Option<String> {
    header(h, name).map(str::to_owned)
}

/// One row to write.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Webhook(WebhookRow),
    Order(OrderRow),
    Decision(DecisionRow),
    Outcome(OutcomeRow),
    DeadLetter(DeadLetterRow),
    Unparsed(UnparsedRow),
}

/// Where a row came from: its idempotency key.
#[derive(Debug, Clone, PartialEq)]
pub struct Origin {
    pub seq: i64,
    pub time: OffsetDateTime,
    pub subject: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WebhookRow {
    pub origin: Origin,
    pub kind: &'static str,
    pub provider: String,
    pub account: Option<String>,
    pub tenant: Option<String>,
    pub webhook_id: String,
    pub received_at: OffsetDateTime,
    pub notification_event: Option<String>,
    pub replay_of: Option<String>,
    pub headers: serde_json::Value,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OrderRow {
    pub origin: Origin,
    pub provider: String,
    pub tenant: String,
    pub webhook_id: String,
    pub provider_order_id: String,
    pub event: String,
    pub replay_of: Option<String>,
    pub order: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DecisionRow {
    pub origin: Origin,
    pub provider: String,
    pub account: String,
    pub tenant: String,
    pub status_id: String,
    pub provider_order_id: String,
    pub action: String,
    pub origin_of_decision: String,
    pub decided_at: OffsetDateTime,
    pub order_webhook_id: Option<String>,
    pub decision: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutcomeRow {
    pub origin: Origin,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetterRow {
    pub origin: Origin,
    pub stage: String,
    pub original_stream: String,
    pub original_seq: i64,
    pub original_subject: String,
    pub provider: String,
    pub account: Option<String>,
    pub tenant: Option<String>,
    pub webhook_id: Option<String>,
    pub provider_order_id: Option<String>,
    pub deliveries: i64,
    pub first_failure: OffsetDateTime,
    pub last_failure: OffsetDateTime,
    pub error_class: String,
    pub error: String,
    pub moved_by: String,
    pub headers: serde_json::Value,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UnparsedRow {
    pub stream: &'static str,
    pub origin: Origin,
    pub reason: String,
    pub headers: serde_json::Value,
    pub body: Vec<u8>,
}

impl Record {
    /// The message's day partition key.
    pub fn time(&self) -> OffsetDateTime {
        self.origin().time
    }

    pub fn origin(&self) -> &Origin {
        match self {
            Record::Webhook(r) => &r.origin,
            Record::Order(r) => &r.origin,
            Record::Decision(r) => &r.origin,
            Record::Outcome(r) => &r.origin,
            Record::DeadLetter(r) => &r.origin,
            Record::Unparsed(r) => &r.origin,
        }
    }

    /// The same message kept raw, with `reason` (a row its table refused).
    pub fn unparsed(m: &Incoming, reason: impl Into<String>) -> Record {
        Record::Unparsed(UnparsedRow {
            stream: m.source.stream(),
            origin: origin(m),
            reason: clean(&reason.into()),
            headers: headers_json(&m.headers),
            body: m.body.to_vec(),
        })
    }

    /// Reads a message into its table's row, or keeps it raw.
    pub fn read(m: &Incoming) -> Record {
        let read = match m.source {
            Source::Webhooks => webhook(m),
            Source::Orders => order(m),
            Source::Status => decision(m),
            Source::Outcomes => outcome(m),
            Source::Dlq => dead_letter(m),
        };
        read.unwrap_or_else(|reason| Record::unparsed(m, reason))
    }
}

fn origin(m: &Incoming) -> Origin {
    Origin {
        // JetStream sequences fit i64 (PostgreSQL bigint) for ~9e18 messages.
        seq: i64::try_from(m.seq).unwrap_or(i64::MAX),
        time: m.time,
        subject: clean(&m.subject),
    }
}

fn headers_json(h: &Headers) -> serde_json::Value {
    serde_json::to_value(h).expect("a map of strings is JSON")
}

fn rfc3339(s: &str, what: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("{what}: {e}"))
}

fn json_body<T: for<'de> Deserialize<'de>>(m: &Incoming) -> Result<(T, serde_json::Value), String> {
    let value: serde_json::Value =
        serde_json::from_slice(&m.body).map_err(|e| format!("body is not JSON: {e}"))?;
    let head = T::deserialize(&value).map_err(|e| format!("body: {e}"))?;
    Ok((head, value))
}

fn webhook(m: &Incoming) -> Result<Record, String> {
    let h = &m.headers;
    let kind = match shared::subjects::token(&m.subject, 1) {
        Some("raw") => "raw",
        Some("fetched") => "fetched",
        _ => return Err(format!("subject {} is not a webhook subject", m.subject)),
    };
    // Only the hub's own headers and the content type: a provider's
    // headers (signatures, tokens) never reach the stream, but the ledger
    // keeps to what it needs either way.
    let kept: Headers = h
        .iter()
        .filter(|(k, _)| {
            k.to_ascii_lowercase().starts_with("orderhub-")
                || k.eq_ignore_ascii_case("content-type")
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(Record::Webhook(WebhookRow {
        origin: origin(m),
        kind,
        provider: required(h, headers::PROVIDER)?.to_owned(),
        account: opt(h, headers::ACCOUNT),
        tenant: opt(h, headers::TENANT),
        webhook_id: required(h, headers::WEBHOOK_ID)?.to_owned(),
        received_at: match header(h, headers::RECEIVED_AT) {
            Some(t) => rfc3339(t, headers::RECEIVED_AT)?,
            None => m.time,
        },
        notification_event: opt(h, headers::NOTIFICATION_EVENT),
        replay_of: opt(h, headers::REPLAY_OF),
        headers: headers_json(&kept),
        body: m.body.to_vec(),
    }))
}

/// What the ledger reads of a canonical order (the whole order is kept as
/// jsonb); lenient on purpose: the ledger records, it does not validate.
#[derive(Deserialize)]
struct OrderHead {
    webhook_id: String,
    event: String,
    provider: String,
    provider_order_id: String,
    tenant: String,
}

fn order(m: &Incoming) -> Result<Record, String> {
    let (head, value): (OrderHead, _) = json_body(m)?;
    Ok(Record::Order(OrderRow {
        origin: origin(m),
        provider: clean(&head.provider),
        tenant: clean(&head.tenant),
        webhook_id: clean(&head.webhook_id),
        provider_order_id: clean(&head.provider_order_id),
        event: clean(&head.event),
        replay_of: opt(&m.headers, headers::REPLAY_OF),
        order: value,
    }))
}

#[derive(Deserialize)]
struct DecisionHead {
    status_id: String,
    tenant: String,
    provider: String,
    account: String,
    provider_order_id: String,
    action: String,
    origin: String,
    decided_at: String,
    #[serde(default)]
    order_webhook_id: Option<String>,
}

fn decision(m: &Incoming) -> Result<Record, String> {
    let (head, value): (DecisionHead, _) = json_body(m)?;
    Ok(Record::Decision(DecisionRow {
        origin: origin(m),
        provider: clean(&head.provider),
        account: clean(&head.account),
        tenant: clean(&head.tenant),
        status_id: clean(&head.status_id),
        provider_order_id: clean(&head.provider_order_id),
        action: clean(&head.action),
        origin_of_decision: clean(&head.origin),
        decided_at: rfc3339(&head.decided_at, "decided_at")?,
        order_webhook_id: head.order_webhook_id.as_deref().map(clean),
        decision: value,
    }))
}

fn outcome(m: &Incoming) -> Result<Record, String> {
    let mut o: Outcome =
        serde_json::from_slice(&m.body).map_err(|e| format!("not an outcome: {e}"))?;
    if o.schema != OUTCOME_SCHEMA {
        return Err(format!("schema {:?} is not {OUTCOME_SCHEMA}", o.schema));
    }
    for field in [
        &mut o.account,
        &mut o.tenant,
        &mut o.webhook_id,
        &mut o.provider_order_id,
        &mut o.event,
        &mut o.action,
        &mut o.status_id,
        &mut o.error_class,
        &mut o.error,
    ] {
        if let Some(s) = field.as_mut() {
            *s = clean(s);
        }
    }
    if let Some(s) = o.source.as_mut() {
        s.stream = clean(&s.stream);
    }
    Ok(Record::Outcome(OutcomeRow {
        origin: origin(m),
        outcome: o,
    }))
}

/// The order id in a dead letter's body, where the body is a canonical
/// order or a decision (a raw webhook's is found through its webhook id).
#[derive(Deserialize)]
struct OrderIdOnly {
    provider_order_id: String,
}

fn dead_letter(m: &Incoming) -> Result<Record, String> {
    let mut map = async_nats::HeaderMap::new();
    for (k, vs) in &m.headers {
        for v in vs {
            map.append(k.as_str(), v.as_str());
        }
    }
    let d = shared::dlq::DeadLetter::from_headers(&map)?;
    let provider_order_id = serde_json::from_slice::<OrderIdOnly>(&m.body)
        .ok()
        .map(|o| clean(&o.provider_order_id));
    Ok(Record::DeadLetter(DeadLetterRow {
        origin: origin(m),
        stage: d.stage,
        original_stream: d.stream,
        original_seq: i64::try_from(d.seq).unwrap_or(i64::MAX),
        original_subject: d.subject,
        provider: d.provider,
        account: opt(&m.headers, headers::ACCOUNT),
        tenant: d.tenant,
        webhook_id: d.webhook_id,
        provider_order_id,
        deliveries: d.deliveries,
        first_failure: OffsetDateTime::from(d.first_failure),
        last_failure: OffsetDateTime::from(d.last_failure),
        error_class: d.error_class.as_str().to_owned(),
        error: d.error,
        moved_by: d.moved_by.as_str().to_owned(),
        headers: headers_json(&m.headers),
        body: m.body.to_vec(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incoming(source: Source, subject: &str, h: &[(&str, &str)], body: &str) -> Incoming {
        let mut headers = Headers::new();
        for (k, v) in h {
            headers
                .entry((*k).to_owned())
                .or_default()
                .push((*v).to_owned());
        }
        Incoming {
            source,
            seq: 7,
            time: OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap(),
            subject: subject.to_owned(),
            headers,
            body: Bytes::from(body.to_owned()),
        }
    }

    #[test]
    fn a_raw_webhook_keeps_the_hub_headers_and_the_body() {
        let m = incoming(
            Source::Webhooks,
            "webhooks.raw.careem.acme-careem",
            &[
                (headers::PROVIDER, "careem"),
                (headers::ACCOUNT, "acme-careem"),
                (headers::TENANT, "acme"),
                (headers::WEBHOOK_ID, "wh_1"),
                (headers::RECEIVED_AT, "2027-01-15T08:00:00.250Z"),
                ("Content-Type", "application/json"),
                ("X-Other", "dropped"),
            ],
            "{\"id\":1}",
        );
        let Record::Webhook(w) = Record::read(&m) else {
            panic!("not a webhook row")
        };
        assert_eq!(w.kind, "raw");
        assert_eq!(w.webhook_id, "wh_1");
        assert_eq!(w.account.as_deref(), Some("acme-careem"));
        assert_eq!(
            w.received_at,
            rfc3339("2027-01-15T08:00:00.250Z", "test").unwrap()
        );
        assert_ne!(
            w.received_at, m.time,
            "the ingress's time, not the stream's"
        );
        assert_eq!(w.body, b"{\"id\":1}");
        assert!(w.headers.get("X-Other").is_none());
        assert_eq!(
            w.headers["Content-Type"],
            serde_json::json!(["application/json"])
        );
    }

    #[test]
    fn a_message_its_table_cannot_take_is_kept_raw_with_the_reason() {
        let no_id = incoming(
            Source::Webhooks,
            "webhooks.raw.careem.acme-careem",
            &[(headers::PROVIDER, "careem")],
            "x",
        );
        let Record::Unparsed(u) = Record::read(&no_id) else {
            panic!("kept raw")
        };
        assert_eq!(
            (u.stream, u.reason.as_str(), u.body.as_slice()),
            ("WEBHOOKS", "missing header Orderhub-Webhook-Id", &b"x"[..])
        );
        let not_json = incoming(Source::Orders, "orders.acme.careem", &[], "{");
        let Record::Unparsed(u) = Record::read(&not_json) else {
            panic!("kept raw")
        };
        assert!(u.reason.starts_with("body is not JSON"), "{}", u.reason);
        let wrong_schema = incoming(
            Source::Outcomes,
            "outcomes.forwarder.careem",
            &[],
            r#"{"schema":"orderhub.outcome.v9","stage":"forwarder","kind":"attempt","at":"2027-01-15T08:00:00Z","provider":"careem","ok":true}"#,
        );
        let Record::Unparsed(u) = Record::read(&wrong_schema) else {
            panic!("kept raw")
        };
        assert_eq!(
            u.reason,
            "schema \"orderhub.outcome.v9\" is not orderhub.outcome.v1"
        );
        let no_dlq_fields = incoming(Source::Dlq, "dlq.forwarder.careem", &[], "{}");
        assert!(matches!(Record::read(&no_dlq_fields), Record::Unparsed(_)));
    }

    #[test]
    fn an_order_and_a_decision_are_read_leniently_and_kept_whole() {
        let body = r#"{"schema":"orderhub.order.v1","webhook_id":"wh_1","event":"created","provider":"careem","provider_order_id":"4471","tenant":"acme","extra":{"n":1}}"#;
        let m = incoming(Source::Orders, "orders.acme.careem", &[], body);
        let Record::Order(o) = Record::read(&m) else {
            panic!("an order row")
        };
        assert_eq!(
            (
                o.provider_order_id.as_str(),
                o.event.as_str(),
                o.tenant.as_str()
            ),
            ("4471", "created", "acme")
        );
        assert_eq!(o.order["extra"]["n"], 1);
        let d = r#"{"schema":"orderhub.status.v1","status_id":"st_1","tenant":"acme","provider":"careem","account":"acme-careem","provider_order_id":"4471","action":"accept","reason":null,"origin":"backend","decided_at":"2027-01-15T08:00:01Z","order_webhook_id":"wh_1"}"#;
        let Record::Decision(d) = Record::read(&incoming(
            Source::Status,
            "status.careem.acme-careem",
            &[],
            d,
        )) else {
            panic!("a decision row")
        };
        assert_eq!(
            (
                d.action.as_str(),
                d.origin_of_decision.as_str(),
                d.order_webhook_id.as_deref()
            ),
            ("accept", "backend", Some("wh_1"))
        );
    }

    #[test]
    fn nul_characters_never_reach_a_text_column() {
        assert_eq!(clean("a\0b"), "a\u{fffd}b");
        let o = r#"{"schema":"orderhub.outcome.v1","stage":"forwarder","kind":"attempt","at":"2027-01-15T08:00:00Z","provider":"careem","ok":false,"error":"bad\u0000byte"}"#;
        let Record::Outcome(o) = Record::read(&incoming(
            Source::Outcomes,
            "outcomes.forwarder.careem",
            &[],
            o,
        )) else {
            panic!("an outcome row")
        };
        assert_eq!(o.outcome.error.as_deref(), Some("bad\u{fffd}byte"));
    }
}
