//! The provider calls of one decision: which requests (method, where, auth,
//! body) answer a [`StatusCommand`] at its provider, and how each answer
//! reads. Pure: no socket, no clock (the caller passes `now`), so every
//! request is tested as bytes.
//!
//! The contract is the issue's "status calls" table (README, "Your backend
//! answers the provider"); [`plan`] builds a call for exactly the actions
//! [`shared::answer::supports`] allows, so the status API's `422` and this
//! worker never disagree (a test walks every provider, context and action).

use std::time::Duration;

use canonical::status::{Action, Reason, ReasonCode, StatusCommand};
use reqwest::Method;
use serde_json::{Value, json};
use shared::Provider;
use shared::answer::{OrderContext, callback};
use shared::config::{Account, StatusApi};
use shared::failure::FailureClass;
use shared::worker::Failure;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// How a call authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// `Authorization: Bearer <token>` from the fleet's token store.
    Bearer,
    /// JET Connect: `X-Flyt-Api-Key: <the account's static key>`.
    FlytKey,
    /// Just Eat partner API: `Authorization: JE-API-KEY <key>`.
    JeApiKey,
    /// `direct`: Standard Webhooks headers signed with the account's first
    /// secret.
    StandardWebhooks,
}

/// Where a call goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Path segments appended to the account's `api.base_url` (each one
    /// percent-encoded as one segment).
    Api(Vec<String>),
    /// A URL the provider handed over with the order (Talabat's
    /// `callbackUrls`), checked against the account's hosts before use.
    Callback(String),
    /// A `direct` account's `status_url`.
    StatusUrl,
}

/// What a call sends.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    None,
    Json(Value),
    /// The status command exactly as stored on `STATUS` (`direct`).
    Command,
}

/// Which non-2xx answers mean "already done" (the provider has the
/// decision already: a redelivery after a lost ack, the restaurant's
/// tablet first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoneOn {
    /// 409.
    Conflict,
    /// 409, or 404 (Uber's legacy cancel of an order already terminal).
    ConflictOrNotFound,
    /// Talabat: a 409 whose `currentState` is not a transient one.
    TalabatConflict,
}

/// One request to the provider.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub method: Method,
    pub target: Target,
    pub body: Body,
    pub auth: Auth,
    pub done_on: DoneOn,
}

/// Why a decision has no call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("{provider} has no call to {action} this order")]
    Unsupported { provider: Provider, action: Action },
    #[error("the order names no callback {0} to call")]
    CallbackMissing(&'static str),
    #[error("{action} needs {field}, which the command lacks")]
    Missing { action: Action, field: &'static str },
}

impl PlanError {
    pub fn class(&self) -> FailureClass {
        match self {
            PlanError::Unsupported { .. } => FailureClass::UnsupportedAction,
            PlanError::CallbackMissing(_) => FailureClass::CallbackMissing,
            PlanError::Missing { .. } => FailureClass::InvalidPayload,
        }
    }
}

/// RFC 3339 in UTC, whole seconds (`2026-12-02T18:30:00Z`).
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .expect("0 is a valid nanosecond")
        .format(&Rfc3339)
        .expect("a UTC time formats")
}

/// Deliveroo's `delay`: the minutes from `now` to `ready_at`, rounded up
/// to one of 0, 2, 4, 6, 8, 10 (10 at most).
pub fn deliveroo_delay(now: OffsetDateTime, ready_at: OffsetDateTime) -> u64 {
    let secs = (ready_at - now).whole_seconds();
    if secs <= 0 {
        return 0;
    }
    let minutes = (secs as u64).div_ceil(60);
    (minutes.div_ceil(2) * 2).min(10)
}

/// The calls that carry `cmd` to the provider of `account`, in order
/// (Deliveroo's accept and reject take two). `now` is the time the calls
/// are made.
pub fn plan(
    account: &Account,
    ctx: &OrderContext,
    cmd: &StatusCommand,
    now: OffsetDateTime,
) -> Result<Vec<Call>, PlanError> {
    use Action::*;
    let action = cmd.action;
    let unsupported = || PlanError::Unsupported {
        provider: account.provider,
        action,
    };
    if !account.can_answer() {
        return Err(unsupported());
    }
    let id = cmd.provider_order_id.as_str();
    let now_s = rfc3339(now);
    let ready_at = cmd.ready_at.map(rfc3339);
    let need_ready_at = || {
        ready_at.clone().ok_or(PlanError::Missing {
            action,
            field: "ready_at",
        })
    };
    let reason = cmd.reason.clone().unwrap_or(Reason {
        code: ReasonCode::Other,
        message: None,
    });
    let text = reason.text().to_owned();
    let api = |segments: &[&str]| Target::Api(segments.iter().map(|s| (*s).to_owned()).collect());
    let call = |method: Method, target: Target, body: Body, auth: Auth, done_on: DoneOn| Call {
        method,
        target,
        body,
        auth,
        done_on,
    };
    let calls = match account.provider {
        Provider::Careem => return Err(unsupported()),
        // Until their calls land (this change).
        Provider::Doordash | Provider::Glovo | Provider::Grab | Provider::Keeta => {
            return Err(unsupported());
        }
        Provider::Direct => vec![call(
            Method::POST,
            Target::StatusUrl,
            Body::Command,
            Auth::StandardWebhooks,
            DoneOn::Conflict,
        )],
        Provider::Ubereats if ctx.api.as_deref() == Some("v1") => {
            let base = ["v1", "delivery", "order", id];
            let at = |last: &str| {
                let mut s: Vec<&str> = base.to_vec();
                s.push(last);
                api(&s)
            };
            let post = |last: &str, body: Value| {
                call(
                    Method::POST,
                    at(last),
                    Body::Json(body),
                    Auth::Bearer,
                    DoneOn::Conflict,
                )
            };
            let deny_reason = || {
                let mut r = json!({"type": uber_v1_type(reason.code), "info": text});
                if !cmd.unavailable_items.is_empty() {
                    let items: Vec<Value> = cmd
                        .unavailable_items
                        .iter()
                        .map(|i| json!({"id": i, "type": "OUT_OF_ITEM"}))
                        .collect();
                    r["item_metadata"] = json!({ "invalid_item": items });
                }
                r
            };
            match action {
                Accept => {
                    let mut b = json!({"accepted_by": "orderhub"});
                    if let Some(t) = &ready_at {
                        b["ready_for_pickup_time"] = json!(t);
                    }
                    vec![post("accept", b)]
                }
                Reject => vec![post("deny", json!({ "deny_reason": deny_reason() }))],
                Cancel => vec![post(
                    "cancel",
                    json!({ "cancellation_reason": deny_reason() }),
                )],
                Ready => vec![post("ready", json!({}))],
                Delay => vec![post(
                    "update-ready-time",
                    json!({ "ready_for_pickup_time": need_ready_at()? }),
                )],
                PickedUp | Delivered => return Err(unsupported()),
            }
        }
        Provider::Ubereats => {
            let post = |last: &[&str], body: Value, done_on| {
                let mut s = vec!["v1", "eats", "orders", id];
                s.extend_from_slice(last);
                call(
                    Method::POST,
                    api(&s),
                    Body::Json(body),
                    Auth::Bearer,
                    done_on,
                )
            };
            match action {
                Accept => {
                    let mut b = json!({"reason": "accepted"});
                    if let Some(t) = cmd.ready_at {
                        b["pickup_time"] = json!(t.unix_timestamp());
                    }
                    vec![post(&["accept_pos_order"], b, DoneOn::Conflict)]
                }
                Reject => {
                    let mut r = json!({"explanation": text, "code": uber_deny_code(reason.code)});
                    if !cmd.unavailable_items.is_empty() {
                        r["out_of_stock_items"] = json!(cmd.unavailable_items);
                    }
                    vec![post(
                        &["deny_pos_order"],
                        json!({ "reason": r }),
                        DoneOn::Conflict,
                    )]
                }
                Cancel => vec![post(
                    &["cancel"],
                    json!({"reason": uber_cancel_reason(reason.code), "details": text}),
                    DoneOn::ConflictOrNotFound,
                )],
                PickedUp => vec![post(
                    &["restaurantdelivery", "status"],
                    json!({"status": "started"}),
                    DoneOn::Conflict,
                )],
                Delivered => vec![post(
                    &["restaurantdelivery", "status"],
                    json!({"status": "delivered"}),
                    DoneOn::Conflict,
                )],
                Ready | Delay => return Err(unsupported()),
            }
        }
        Provider::Wolt => {
            let put = |segments: &[&str], body: Body| {
                let mut s = vec!["orders", id];
                s.extend_from_slice(segments);
                call(Method::PUT, api(&s), body, Auth::Bearer, DoneOn::Conflict)
            };
            let optional = |key: &str| match &ready_at {
                Some(t) => Body::Json(json!({ key: t })),
                None => Body::None,
            };
            match action {
                Accept if ctx.preorder => vec![put(&["confirm-preorder"], Body::None)],
                Accept if ctx.self_delivery => vec![put(
                    &["self-delivery", "accept"],
                    optional("total_delivery_time"),
                )],
                Accept => vec![put(&["accept"], optional("adjusted_pickup_time"))],
                Reject => vec![put(
                    &["reject"],
                    Body::Json(json!({"reason": text, "code": wolt_code(reason.code)})),
                )],
                Ready => vec![put(&["ready"], Body::None)],
                Delivered => vec![put(&["delivered"], Body::None)],
                PickedUp | Cancel | Delay => return Err(unsupported()),
            }
        }
        Provider::Talabat => {
            let (name, body) = match action {
                Accept => (
                    callback::ACCEPTED,
                    Body::Json(json!({
                        "status": "order_accepted",
                        "acceptanceTime": ready_at.clone().unwrap_or_else(|| now_s.clone()),
                        "remoteOrderId": ctx.webhook_id,
                    })),
                ),
                Reject => (
                    callback::REJECTED,
                    Body::Json(json!({
                        "status": "order_rejected",
                        "reason": talabat_reason(reason.code),
                        "message": text,
                    })),
                ),
                Ready => (callback::PREPARED, Body::None),
                PickedUp => (
                    callback::PICKED_UP,
                    Body::Json(json!({"status": "order_picked_up"})),
                ),
                Delivered | Cancel | Delay => return Err(unsupported()),
            };
            let url = ctx
                .callbacks
                .get(name)
                .ok_or(PlanError::CallbackMissing(name))?;
            vec![call(
                Method::POST,
                Target::Callback(url.clone()),
                body,
                Auth::Bearer,
                DoneOn::TalabatConflict,
            )]
        }
        Provider::Deliveroo => {
            let at = |last: Option<&str>| {
                let mut s = vec!["order", "v1", "orders", id];
                s.extend(last);
                api(&s)
            };
            let post = |last: &str, body: Value| {
                call(
                    Method::POST,
                    at(Some(last)),
                    Body::Json(body),
                    Auth::Bearer,
                    DoneOn::Conflict,
                )
            };
            let patch = |body: Value| {
                call(
                    Method::PATCH,
                    at(None),
                    Body::Json(body),
                    Auth::Bearer,
                    DoneOn::Conflict,
                )
            };
            match action {
                Accept => vec![
                    post(
                        "sync_status",
                        json!({"status": "succeeded", "occurred_at": now_s}),
                    ),
                    patch(json!({"status": "accepted"})),
                ],
                Reject => vec![
                    post(
                        "sync_status",
                        json!({
                            "status": "failed",
                            "reason": deliveroo_sync_reason(reason.code),
                            "notes": text,
                            "occurred_at": now_s,
                        }),
                    ),
                    patch(json!({
                        "status": "rejected",
                        "reject_reason": deliveroo_reject_reason(reason.code),
                        "notes": text,
                    })),
                ],
                Ready => vec![post(
                    "prep_stage",
                    json!({"stage": "ready_for_collection", "occurred_at": now_s}),
                )],
                PickedUp => vec![post(
                    "prep_stage",
                    json!({"stage": "collected", "occurred_at": now_s}),
                )],
                Delay => {
                    let ready = cmd.ready_at.ok_or(PlanError::Missing {
                        action,
                        field: "ready_at",
                    })?;
                    vec![post(
                        "prep_stage",
                        json!({
                            "stage": "in_kitchen",
                            "delay": deliveroo_delay(now, ready),
                            "occurred_at": now_s,
                        }),
                    )]
                }
                Delivered | Cancel => return Err(unsupported()),
            }
        }
        Provider::Justeat => {
            let status_api = account.api.as_ref().map(|a| a.status_api);
            match status_api {
                Some(StatusApi::JustEatPartner) => {
                    let req = |method: Method, last: &str, body: Body| {
                        call(
                            method,
                            api(&["orders", id, last]),
                            body,
                            Auth::JeApiKey,
                            DoneOn::Conflict,
                        )
                    };
                    match action {
                        Accept => vec![req(
                            Method::PUT,
                            "accept",
                            Body::Json(json!({
                                "TimeAcceptedFor": ready_at.clone().unwrap_or_else(|| now_s.clone())
                            })),
                        )],
                        Reject => vec![req(
                            Method::PUT,
                            "reject",
                            Body::Json(json!({ "Message": text })),
                        )],
                        Ready => vec![req(Method::POST, "readyforcollection", Body::None)],
                        PickedUp => vec![req(Method::POST, "dispatchedtocustomer", Body::None)],
                        Delivered => vec![req(Method::POST, "complete", Body::None)],
                        Delay => vec![req(
                            Method::PUT,
                            "duedate",
                            Body::Json(json!({ "DueDate": need_ready_at()? })),
                        )],
                        Cancel => return Err(unsupported()),
                    }
                }
                _ => {
                    let post = |last: &str, body: Value| {
                        call(
                            Method::POST,
                            api(&["order", id, last]),
                            Body::Json(body),
                            Auth::FlytKey,
                            DoneOn::Conflict,
                        )
                    };
                    match action {
                        Accept => vec![post("sent-to-pos-success", json!({"happenedAt": now_s}))],
                        Reject => vec![post(
                            "sent-to-pos-failed",
                            json!({
                                "happenedAt": now_s,
                                "errorCode": jet_error_code(reason.code),
                                "errorMessage": text,
                            }),
                        )],
                        _ => return Err(unsupported()),
                    }
                }
            }
        }
    };
    Ok(calls)
}

fn uber_deny_code(c: ReasonCode) -> &'static str {
    match c {
        ReasonCode::ItemsUnavailable => "ITEM_AVAILABILITY",
        ReasonCode::StoreClosed => "STORE_CLOSED",
        ReasonCode::TooBusy => "CAPACITY",
        ReasonCode::Address => "ADDRESS",
        ReasonCode::Other => "OTHER",
    }
}

fn uber_cancel_reason(c: ReasonCode) -> &'static str {
    match c {
        ReasonCode::ItemsUnavailable => "OUT_OF_ITEMS",
        ReasonCode::StoreClosed => "KITCHEN_CLOSED",
        ReasonCode::TooBusy => "RESTAURANT_TOO_BUSY",
        ReasonCode::Address | ReasonCode::Other => "OTHER",
    }
}

fn uber_v1_type(c: ReasonCode) -> &'static str {
    match c {
        ReasonCode::ItemsUnavailable => "ITEM_ISSUE",
        ReasonCode::StoreClosed => "STORE_CLOSED",
        ReasonCode::TooBusy => "CAPACITY",
        ReasonCode::Address => "ADDRESS",
        ReasonCode::Other => "OTHER",
    }
}

fn wolt_code(c: ReasonCode) -> &'static str {
    match c {
        ReasonCode::ItemsUnavailable => "ITEMS_UNAVAILABLE",
        ReasonCode::StoreClosed => "VENUE_CLOSING_SOON",
        ReasonCode::TooBusy | ReasonCode::Address | ReasonCode::Other => "GENERIC",
    }
}

fn talabat_reason(c: ReasonCode) -> &'static str {
    match c {
        ReasonCode::ItemsUnavailable => "ITEM_UNAVAILABLE",
        ReasonCode::StoreClosed => "CLOSED",
        ReasonCode::TooBusy => "TOO_BUSY",
        ReasonCode::Address => "ADDRESS_INCOMPLETE_MISSTATED",
        ReasonCode::Other => "TECHNICAL_PROBLEM",
    }
}

fn deliveroo_sync_reason(c: ReasonCode) -> &'static str {
    match c {
        ReasonCode::ItemsUnavailable => "items_out_of_stock",
        ReasonCode::StoreClosed => "location_offline",
        ReasonCode::TooBusy | ReasonCode::Address | ReasonCode::Other => "other",
    }
}

fn deliveroo_reject_reason(c: ReasonCode) -> &'static str {
    match c {
        ReasonCode::ItemsUnavailable => "ingredient_unavailable",
        ReasonCode::StoreClosed => "closing_early",
        ReasonCode::TooBusy => "busy",
        ReasonCode::Address | ReasonCode::Other => "other",
    }
}

fn jet_error_code(c: ReasonCode) -> &'static str {
    // [GUESS] JET Connect documents the codes, not which fits which reason.
    match c {
        ReasonCode::ItemsUnavailable => "MENU_ERROR",
        ReasonCode::StoreClosed => "STORE_CLOSED",
        ReasonCode::TooBusy => "INACTIVE",
        ReasonCode::Address => "NOT_SUPPORTED",
        ReasonCode::Other => "INCORRECT_SETUP",
    }
}

/// Talabat's 409 states that mean "not yet" rather than "already done".
const TALABAT_TRANSIENT_STATES: [&str; 2] =
    ["ASSIGNED_TO_TRANSPORT", "WAITING_FOR_ACKNOWLEDGEMENT"];

/// How one answer of the provider reads.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// 2xx: done.
    Done,
    /// The provider had it already (409, or 404 on Uber's legacy cancel).
    AlreadyDone,
    /// 401: renew the token once and try again.
    Unauthorized,
    /// Retry if the class is transient, else dead-letter.
    Failed(Failure),
}

/// Reads an answer: `status`, the start of its body, its `Retry-After`;
/// `what` names the call in a failure's text (no secret, no query).
pub fn classify(
    done_on: DoneOn,
    status: u16,
    body: &[u8],
    retry_after: Option<Duration>,
    what: &str,
) -> Verdict {
    if (200..300).contains(&status) {
        return Verdict::Done;
    }
    let said = match shared::outbound::one_line(body) {
        t if t.is_empty() => t,
        t => format!(": {}", shared::redact::truncate(&t, 256)),
    };
    let failure = |class| Failure::new(class, format!("{what} answered {status}{said}"));
    match (status, done_on) {
        (409, DoneOn::TalabatConflict) => {
            let state = serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| v.get("currentState")?.as_str().map(str::to_owned));
            match state {
                Some(s) if TALABAT_TRANSIENT_STATES.contains(&s.as_str()) => {
                    // Not a final answer: the order is between states.
                    Verdict::Failed(failure(FailureClass::ProviderBusy))
                }
                _ => Verdict::AlreadyDone,
            }
        }
        (409, _) | (404, DoneOn::ConflictOrNotFound) => Verdict::AlreadyDone,
        (401, _) => Verdict::Unauthorized,
        (403, _) => Verdict::Failed(failure(FailureClass::ProviderForbidden)),
        (429, _) => {
            Verdict::Failed(failure(FailureClass::Provider429).with_retry_after(retry_after))
        }
        (408 | 500..=599, _) => {
            Verdict::Failed(failure(FailureClass::Provider5xx).with_retry_after(retry_after))
        }
        _ => Verdict::Failed(failure(FailureClass::ProviderRejected)),
    }
}

/// Whether a callback URL from the order may be called: https (or http
/// to an address the outbound policy allows, checked by the caller like
/// `base_url`) to `base_url`'s host or one of `callback_hosts`.
pub fn callback_allowed(
    url: &url::Url,
    base_url: &url::Url,
    callback_hosts: &[String],
    private_ok: impl Fn(&url::Url) -> bool,
) -> Result<(), String> {
    let Some(host) = url.host_str().map(str::to_ascii_lowercase) else {
        return Err("has no host".to_owned());
    };
    // The port too: another port of an allowed host is another service,
    // which must not receive the account's bearer token. base_url's host:
    // base_url's port; a callback_hosts entry: its scheme's default port.
    let port = url.port_or_known_default();
    let host_ok = (base_url
        .host_str()
        .is_some_and(|b| b.eq_ignore_ascii_case(&host))
        && port == base_url.port_or_known_default())
        || (callback_hosts.contains(&host) && port == default_port(url.scheme()));
    if !host_ok {
        return Err(format!(
            "host {:?} (port {}) is neither the account's api.base_url host and port nor in api.callback_hosts (default port)",
            shared::redact::truncate(&host, 64),
            port.map_or_else(|| "none".to_owned(), |p| p.to_string())
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("carries credentials".to_owned());
    }
    match url.scheme() {
        "https" => Ok(()),
        "http" if private_ok(url) => Ok(()),
        "http" => Err("is http to an address that is not an allowed private one".to_owned()),
        other => Err(format!("has scheme {other:?}, not https")),
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "https" => Some(443),
        "http" => Some(80),
        _ => None,
    }
}

/// The deadline of `cmd`: accept and reject the provider's (`answer_by`),
/// later actions `decided_at + late_action_window`.
pub fn deadline(
    cmd: &StatusCommand,
    ctx_answer_by: Option<OffsetDateTime>,
    late_action_window: Duration,
) -> OffsetDateTime {
    match (cmd.action.answers_new_order(), ctx_answer_by) {
        (true, Some(by)) => by,
        _ => cmd.decided_at + late_action_window,
    }
}

#[cfg(test)]
mod tests;
