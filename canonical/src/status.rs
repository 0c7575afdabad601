//! The way back: what a backend tells the hub about an order (accept,
//! reject, ready, ...) and what the hub stores and carries to the provider.
//!
//! # Contract
//! - [`StatusRequest`] is the body of the backend's
//!   `POST /api/tenants/{tenant}/orders/{provider}/{provider_order_id}/status`
//!   (DESIGN §8.3). [`StatusRequest::parse`] reads it from the exact bytes
//!   and reports every problem at once, each naming its field, so a backend
//!   fixes a bad request in one round.
//! - [`StatusCommand`] (`orderhub.status.v1`) is what the hub stores on the
//!   `STATUS` stream once the request is accepted (or once the hub decided
//!   itself: [`Origin`]), and what a `direct` account's `status_url`
//!   receives. JSON names never change within `orderhub.status.v1`; new
//!   fields are optional.
//! - [`StatusCall`] is carried on a canonical order event `status_failed`
//!   when the hub could not deliver an answer to the provider: the backend
//!   hears that its accept (or the hub's automatic one) did not arrive.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::Provider;

/// The value of every status command's `schema` field.
pub const STATUS_SCHEMA_ID: &str = "orderhub.status.v1";

/// The longest `reason.message` accepted (providers show it to the customer).
pub const MAX_MESSAGE_CHARS: usize = 500;
/// The most `unavailable_items` one request may name.
pub const MAX_UNAVAILABLE_ITEMS: usize = 100;
/// The longest provider item id accepted.
pub const MAX_ITEM_ID_CHARS: usize = 128;

macro_rules! word_enum {
    ($(#[$doc:meta])* $name:ident { $( $(#[$vdoc:meta])* $variant:ident = $text:literal, )* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $( $(#[$vdoc])* $variant, )*
        }

        impl $name {
            /// Every value, in the documented order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The JSON spelling.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = ();
            fn from_str(s: &str) -> Result<$name, ()> {
                match s {
                    $($text => Ok($name::$variant),)*
                    _ => Err(()),
                }
            }
        }
    };
}

word_enum! {
    /// What the restaurant does with the order.
    Action {
        /// Takes the order (before the provider's deadline).
        Accept = "accept",
        /// Refuses a new order (before the provider's deadline).
        Reject = "reject",
        /// The food is ready for the courier or the customer.
        Ready = "ready",
        /// The courier or the customer collected it.
        PickedUp = "picked_up",
        /// Delivered by the restaurant's own courier, or handed over.
        Delivered = "delivered",
        /// Cancels an order it had accepted.
        Cancel = "cancel",
        /// The food will be ready later than announced (`ready_at`).
        Delay = "delay",
    }
}

word_enum! {
    /// Why the restaurant rejects or cancels; each provider's own code is
    /// mapped from it (README, "Your backend answers the provider").
    ReasonCode {
        ItemsUnavailable = "items_unavailable",
        StoreClosed = "store_closed",
        TooBusy = "too_busy",
        Address = "address",
        Other = "other",
    }
}

word_enum! {
    /// Who decided.
    Origin {
        /// The backend, through the status API.
        Backend = "backend",
        /// The hub: the backend's 2xx for a new order (`auto_accept`).
        AutoAccept = "auto_accept",
        /// The hub: the order was dead-lettered before the backend took it
        /// (`auto_reject`).
        AutoReject = "auto_reject",
    }
}

impl Action {
    /// The provider's answer to a new order: it has the provider's
    /// deadline. Other actions come later in the order's life.
    pub const fn answers_new_order(self) -> bool {
        matches!(self, Action::Accept | Action::Reject)
    }
}

impl ReasonCode {
    /// What the customer is told when the backend gave no message.
    pub const fn default_message(self) -> &'static str {
        match self {
            ReasonCode::ItemsUnavailable => "Some items are unavailable",
            ReasonCode::StoreClosed => "The restaurant is closed",
            ReasonCode::TooBusy => "The restaurant is too busy",
            ReasonCode::Address => "The address cannot be served",
            ReasonCode::Other => "The restaurant cannot take this order",
        }
    }
}

/// Why the order is rejected or cancelled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    pub code: ReasonCode,
    /// Shown to the customer by most providers; `None`: a default text per
    /// code ([`ReasonCode::default_message`]).
    pub message: Option<String>,
}

impl Reason {
    /// The message, or the code's default text.
    pub fn text(&self) -> &str {
        self.message
            .as_deref()
            .unwrap_or_else(|| self.code.default_message())
    }
}

/// The backend's request, as the status API reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRequest {
    pub action: Action,
    /// Required for `reject` and `cancel`; refused on other actions.
    pub reason: Option<Reason>,
    /// When the food will be ready: required for `delay`, optional for
    /// `accept` (the provider's pickup time), refused on other actions.
    pub ready_at: Option<OffsetDateTime>,
    /// Provider item ids that ran out; only with `reject` or `cancel`.
    pub unavailable_items: Vec<String>,
}

/// One problem of a status request: the field (a JSON path such as
/// `reason.code` or `unavailable_items[2]`) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl StatusRequest {
    /// Reads a request body, collecting every problem (unknown fields
    /// included: a misspelt `ready_at` must not be silently ignored).
    pub fn parse(body: &[u8]) -> Result<StatusRequest, Vec<FieldError>> {
        let value: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                return Err(vec![FieldError::new(
                    "body",
                    format!(
                        "is not JSON (line {}, column {}: {})",
                        e.line(),
                        e.column(),
                        classify(&e)
                    ),
                )]);
            }
        };
        let Value::Object(mut map) = value else {
            return Err(vec![FieldError::new("body", "must be a JSON object")]);
        };
        let mut errors = Vec::new();
        let action = match map.remove("action") {
            None | Some(Value::Null) => {
                errors.push(FieldError::new("action", "is required"));
                None
            }
            Some(Value::String(s)) => match Action::from_str(&s) {
                Ok(a) => Some(a),
                Err(()) => {
                    errors.push(FieldError::new(
                        "action",
                        format!("{} is not one of {}", quote(&s), list(Action::ALL)),
                    ));
                    None
                }
            },
            Some(_) => {
                errors.push(FieldError::new("action", "must be a string"));
                None
            }
        };
        let reason = match map.remove("reason") {
            None | Some(Value::Null) => None,
            Some(Value::Object(r)) => parse_reason(r, &mut errors),
            Some(_) => {
                errors.push(FieldError::new("reason", "must be an object"));
                None
            }
        };
        let ready_at = match map.remove("ready_at") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => match OffsetDateTime::parse(&s, &Rfc3339) {
                Ok(t) => Some(t),
                Err(_) => {
                    errors.push(FieldError::new(
                        "ready_at",
                        format!(
                            "{} is not an RFC 3339 time (2026-12-02T18:30:00Z)",
                            quote(&s)
                        ),
                    ));
                    None
                }
            },
            Some(_) => {
                errors.push(FieldError::new("ready_at", "must be an RFC 3339 string"));
                None
            }
        };
        let unavailable_items = match map.remove("unavailable_items") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => parse_items(items, &mut errors),
            Some(_) => {
                errors.push(FieldError::new(
                    "unavailable_items",
                    "must be an array of provider item ids",
                ));
                Vec::new()
            }
        };
        for key in map.keys() {
            errors.push(FieldError::new(
                key.clone(),
                "is not a field of a status request (action, reason, ready_at, unavailable_items)",
            ));
        }
        if let Some(action) = action {
            let needs_reason = matches!(action, Action::Reject | Action::Cancel);
            match (needs_reason, reason.is_some()) {
                (true, false) if !errors.iter().any(|e| e.field.starts_with("reason")) => errors
                    .push(FieldError::new(
                        "reason",
                        format!("is required to {action}"),
                    )),
                (false, true) => errors.push(FieldError::new(
                    "reason",
                    format!("is only for reject and cancel, not {action}"),
                )),
                _ => {}
            }
            if !needs_reason && !unavailable_items.is_empty() {
                errors.push(FieldError::new(
                    "unavailable_items",
                    format!("is only for reject and cancel, not {action}"),
                ));
            }
            match (action, ready_at.is_some()) {
                (Action::Delay, false) if !errors.iter().any(|e| e.field == "ready_at") => {
                    errors.push(FieldError::new("ready_at", "is required to delay"))
                }
                (Action::Accept | Action::Delay, _) | (_, false) => {}
                (other, true) => errors.push(FieldError::new(
                    "ready_at",
                    format!("is only for accept and delay, not {other}"),
                )),
            }
        }
        match action {
            Some(action) if errors.is_empty() => Ok(StatusRequest {
                action,
                reason,
                ready_at,
                unavailable_items,
            }),
            _ => Err(errors),
        }
    }
}

fn parse_reason(mut r: Map<String, Value>, errors: &mut Vec<FieldError>) -> Option<Reason> {
    let code = match r.remove("code") {
        None | Some(Value::Null) => {
            errors.push(FieldError::new("reason.code", "is required"));
            None
        }
        Some(Value::String(s)) => match ReasonCode::from_str(&s) {
            Ok(c) => Some(c),
            Err(()) => {
                errors.push(FieldError::new(
                    "reason.code",
                    format!("{} is not one of {}", quote(&s), list(ReasonCode::ALL)),
                ));
                None
            }
        },
        Some(_) => {
            errors.push(FieldError::new("reason.code", "must be a string"));
            None
        }
    };
    let message = match r.remove("message") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            let trimmed = s.trim();
            if trimmed.is_empty() {
                errors.push(FieldError::new(
                    "reason.message",
                    "is blank; leave it out for the default text",
                ));
                None
            } else if trimmed.chars().count() > MAX_MESSAGE_CHARS {
                errors.push(FieldError::new(
                    "reason.message",
                    format!("is longer than {MAX_MESSAGE_CHARS} characters"),
                ));
                None
            } else if trimmed.chars().any(char::is_control) {
                errors.push(FieldError::new(
                    "reason.message",
                    "contains control characters",
                ));
                None
            } else {
                Some(trimmed.to_owned())
            }
        }
        Some(_) => {
            errors.push(FieldError::new("reason.message", "must be a string"));
            None
        }
    };
    for key in r.keys() {
        errors.push(FieldError::new(
            format!("reason.{key}"),
            "is not a field of a reason (code, message)",
        ));
    }
    code.map(|code| Reason { code, message })
}

fn parse_items(items: Vec<Value>, errors: &mut Vec<FieldError>) -> Vec<String> {
    if items.len() > MAX_UNAVAILABLE_ITEMS {
        errors.push(FieldError::new(
            "unavailable_items",
            format!("names more than {MAX_UNAVAILABLE_ITEMS} items"),
        ));
        return Vec::new();
    }
    let mut out = Vec::with_capacity(items.len());
    let mut seen = BTreeSet::new();
    for (k, item) in items.into_iter().enumerate() {
        let field = format!("unavailable_items[{k}]");
        match item {
            Value::String(s) if s.trim().is_empty() => {
                errors.push(FieldError::new(field, "is blank"))
            }
            Value::String(s) if s.chars().count() > MAX_ITEM_ID_CHARS => {
                errors.push(FieldError::new(
                    field,
                    format!("is longer than {MAX_ITEM_ID_CHARS} characters"),
                ))
            }
            Value::String(s) if s.chars().any(char::is_control) => {
                errors.push(FieldError::new(field, "contains control characters"))
            }
            Value::String(s) => {
                if seen.insert(s.clone()) {
                    out.push(s);
                }
            }
            _ => errors.push(FieldError::new(
                field,
                "must be a string (a provider item id)",
            )),
        }
    }
    out
}

fn classify(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Eof => "unexpected end",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "unexpected data",
        serde_json::error::Category::Io => "read error",
    }
}

/// A value from the request, quoted and cut short: error messages go back
/// to the backend and into logs.
fn quote(s: &str) -> String {
    let cut: String = s.chars().take(40).collect();
    if cut.len() < s.len() {
        format!("{:?}...", cut)
    } else {
        format!("{cut:?}")
    }
}

fn list<T: fmt::Display>(all: &[T]) -> String {
    all.iter().map(T::to_string).collect::<Vec<_>>().join(", ")
}

/// The `schema` field of a status command: `orderhub.status.v1` only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct StatusSchemaV1;

impl Serialize for StatusSchemaV1 {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(STATUS_SCHEMA_ID)
    }
}

impl<'de> Deserialize<'de> for StatusSchemaV1 {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let id = String::deserialize(deserializer)?;
        if id == STATUS_SCHEMA_ID {
            Ok(StatusSchemaV1)
        } else {
            Err(serde::de::Error::custom(format_args!(
                "schema {id:?} is not {STATUS_SCHEMA_ID:?}"
            )))
        }
    }
}

/// One decision about one order, as stored on the `STATUS` stream and sent
/// to a `direct` account's `status_url`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusCommand {
    /// Always `"orderhub.status.v1"`.
    pub schema: StatusSchemaV1,
    /// The hub's id of this decision: the same for a re-sent request (the
    /// status API answers `duplicate` with it), the `webhook-id` of a
    /// `direct` status call.
    pub status_id: String,
    pub tenant: String,
    pub provider: Provider,
    /// The provider account the order came through.
    pub account: String,
    pub provider_order_id: String,
    pub action: Action,
    pub reason: Option<Reason>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub ready_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub unavailable_items: Vec<String>,
    pub origin: Origin,
    /// When the hub stored the decision, RFC 3339.
    #[serde(with = "time::serde::rfc3339")]
    pub decided_at: OffsetDateTime,
    /// The webhook id of the order's `created` event (its `webhook_id`).
    pub order_webhook_id: Option<String>,
}

/// On a `status_failed` order event: the answer that did not reach the
/// provider, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct StatusCall {
    /// The [`StatusCommand::status_id`] of the decision.
    pub status_id: String,
    /// `accept`, `reject`, ... (see the status API).
    pub action: String,
    /// `backend`, `auto_accept` or `auto_reject`.
    pub origin: String,
    /// The failure class (`deadline_passed`, `provider_rejected`, ...), as
    /// in the DLQ and the README's failure table.
    pub error_class: String,
    /// What went wrong, one line, no secret.
    pub error: String,
    /// When the decision was stored, RFC 3339.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(test, schemars(with = "String", extend("format" = "date-time")))]
    pub decided_at: OffsetDateTime,
    /// When the hub gave up, RFC 3339.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(test, schemars(with = "String", extend("format" = "date-time")))]
    pub failed_at: OffsetDateTime,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(body: &str) -> Vec<(String, String)> {
        StatusRequest::parse(body.as_bytes())
            .unwrap_err()
            .into_iter()
            .map(|e| (e.field, e.message))
            .collect()
    }

    #[test]
    fn a_full_reject_reads_with_every_field() {
        let r = StatusRequest::parse(
            br#"{"action":"reject","reason":{"code":"items_unavailable","message":" Out of falafel "},
                 "unavailable_items":["plu-1","plu-2","plu-1"]}"#,
        )
        .unwrap();
        assert_eq!(r.action, Action::Reject);
        assert_eq!(
            r.reason,
            Some(Reason {
                code: ReasonCode::ItemsUnavailable,
                message: Some("Out of falafel".into())
            })
        );
        assert_eq!(r.unavailable_items, vec!["plu-1", "plu-2"]);
        assert_eq!(r.ready_at, None);
        let accept =
            StatusRequest::parse(br#"{"action":"accept","ready_at":"2026-12-02T18:30:00+04:00"}"#)
                .unwrap();
        assert_eq!(
            accept.ready_at.unwrap().unix_timestamp(),
            OffsetDateTime::parse("2026-12-02T14:30:00Z", &Rfc3339)
                .unwrap()
                .unix_timestamp()
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        assert_eq!(
            errors(
                r#"{"action":"approve","reason":{"code":"sold_out","message":"","extra":1},
                    "ready_at":"soon","unavailable_items":["",7],"note":"x"}"#
            ),
            vec![
                (
                    "action".into(),
                    "\"approve\" is not one of accept, reject, ready, picked_up, delivered, cancel, delay".into()
                ),
                (
                    "reason.code".into(),
                    "\"sold_out\" is not one of items_unavailable, store_closed, too_busy, address, other".into()
                ),
                (
                    "reason.message".into(),
                    "is blank; leave it out for the default text".into()
                ),
                (
                    "reason.extra".into(),
                    "is not a field of a reason (code, message)".into()
                ),
                (
                    "ready_at".into(),
                    "\"soon\" is not an RFC 3339 time (2026-12-02T18:30:00Z)".into()
                ),
                ("unavailable_items[0]".into(), "is blank".into()),
                (
                    "unavailable_items[1]".into(),
                    "must be a string (a provider item id)".into()
                ),
                (
                    "note".into(),
                    "is not a field of a status request (action, reason, ready_at, unavailable_items)".into()
                ),
            ]
        );
    }

    #[test]
    fn fields_must_fit_the_action() {
        assert_eq!(
            errors(r#"{"action":"reject"}"#),
            vec![("reason".into(), "is required to reject".into())]
        );
        assert_eq!(
            errors(r#"{"action":"delay"}"#),
            vec![("ready_at".into(), "is required to delay".into())]
        );
        assert_eq!(
            errors(
                r#"{"action":"ready","reason":{"code":"other"},"ready_at":"2026-12-02T18:30:00Z","unavailable_items":["a"]}"#
            ),
            vec![
                (
                    "reason".into(),
                    "is only for reject and cancel, not ready".into()
                ),
                (
                    "unavailable_items".into(),
                    "is only for reject and cancel, not ready".into()
                ),
                (
                    "ready_at".into(),
                    "is only for accept and delay, not ready".into()
                ),
            ]
        );
        assert_eq!(errors("{}"), vec![("action".into(), "is required".into())]);
        assert_eq!(
            errors("[1]"),
            vec![("body".into(), "must be a JSON object".into())]
        );
        assert_eq!(
            errors("{\"action\""),
            vec![(
                "body".into(),
                "is not JSON (line 1, column 9: unexpected end)".into()
            )]
        );
    }

    #[test]
    fn a_command_round_trips_and_refuses_another_schema() {
        let c = StatusCommand {
            schema: StatusSchemaV1,
            status_id: "st_1".into(),
            tenant: "acme".into(),
            provider: Provider::Wolt,
            account: "acme-wolt".into(),
            provider_order_id: "o-1".into(),
            action: Action::Reject,
            reason: Some(Reason {
                code: ReasonCode::TooBusy,
                message: None,
            }),
            ready_at: None,
            unavailable_items: vec![],
            origin: Origin::AutoReject,
            decided_at: OffsetDateTime::parse("2026-12-02T18:00:00Z", &Rfc3339).unwrap(),
            order_webhook_id: Some("0193...".into()),
        };
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.starts_with(r#"{"schema":"orderhub.status.v1","status_id":"st_1""#));
        assert!(json.contains(r#""origin":"auto_reject""#), "{json}");
        assert_eq!(serde_json::from_str::<StatusCommand>(&json).unwrap(), c);
        let other = json.replace("orderhub.status.v1", "orderhub.status.v2");
        assert!(serde_json::from_str::<StatusCommand>(&other).is_err());
        assert_eq!(c.reason.unwrap().text(), "The restaurant is too busy");
    }
}
