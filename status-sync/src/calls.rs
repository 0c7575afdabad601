//! The provider calls of one decision: which requests (method, where, auth,
//! body) answer a [`StatusCommand`] at its provider, and how each answer
//! reads. Pure: no socket, no clock (the caller passes `now`), so every
//! request is tested as bytes.
//!
//! The contract is the issue's "status calls" table (README, "Your backend
//! answers the provider"); [`plan`] builds a call for exactly the actions
//! [`shared::answer::supports`] allows, so the status API's `422` and this
//! worker never disagree (a test walks every provider, context and action).
//! [`wire`] turns a call into its bytes (auth, headers, body).
//!
//! Issue 15's providers, and the facts each rests on:
//! - DoorDash [DOC]: `PATCH /api/v1/orders/{id}` confirms (`order_status`
//!   `success`, `prep_time` from `ready_at`) or fails it (`fail`,
//!   `failure_reason`); `…/events/order_ready_for_pickup`,
//!   `order_picked_up`, `order_delivered` (self-delivery);
//!   `…/cancellation`. `merchant_supplied_id` is the created order's
//!   webhook id (the backend's `Idempotency-Key`; DoorDash echoes it as
//!   `client_order_id`). A JWT per call ([`shared::tokens::doordash`]).
//!   "Already processed or expired" (400): already done for a call that
//!   repeats safely ([`DOORDASH_PROCESSED`] says why; [`repeats_safely`]).
//! - Glovo [CODE×5]: the partner token raw in `Authorization`; the legacy
//!   `PUT /webhook/stores/{store}/orders/{id}/status` or, with
//!   `status_api = "integrations"` [CODE×4], `PUT
//!   /api/v0/integrations/orders/{id}/{accept|ready_for_pickup|
//!   out_for_delivery|customer_picked_up}` with the store in
//!   [`GLOVO_STORE_HEADER`] and `committedPreparationTime`
//!   ([`glovo_committed_time`]). The store is the order context's
//!   `store_id`; without one the decision is dead-lettered
//!   (`invalid_payload`). No reject or cancel API.
//! - Grab [SDK]: Bearer from the token store; `POST
//!   /partner/v1/order/prepare`, `/partner/v1/orders/mark`, `PUT
//!   /partner/v1/order/readytime`, `/partner/v1/order/cancel` (the context's
//!   store id as `merchantID`). Its 400 "invalid order state" or "already
//!   marked ready" ([`GRAB_STATE`]) is already done for a call that repeats
//!   safely; a 409 is already done.
//! - Keeta [DOC]: `POST /order/{confirm|cancel|prepare|dispatched|delivered}`
//!   with `orderViewId` and `shopId` as JSON integers (exact digits) and the
//!   signed parameters ([`keeta_body`]); the outcome is the body's `code`
//!   ([`keeta_verdict`], with its [GUESS]es).
//!
//! A provider's "already done" words (DoorDash's "already processed",
//! Grab's order-state 400, Keeta's "already" and "not in a valid state")
//! count as done only for an action that lands the order where it would be
//! anyway ([`repeats_safely`]: accept, ready, picked up, delivered). For a
//! reject, a cancel or a delay they say the order moved on without it (the
//! tablet confirmed first, the order was completed), so they are a
//! `provider_rejected` failure: the backend gets `status_failed` and an
//! operator sees it, instead of a refusal the provider never took.

use std::time::Duration;

use bytes::Bytes;
use canonical::status::{Action, Reason, ReasonCode, StatusCommand};
use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
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
    /// DoorDash: `Authorization: Bearer <a JWT signed for this call>` and
    /// `auth-version: v2` ([`shared::tokens::doordash`]).
    DoordashJwt,
    /// Glovo: `Authorization: <the partner token>`, no scheme.
    GlovoToken,
    /// Keeta: no header; the body carries `appId`, `accessToken`,
    /// `timestamp` and `sig` ([`keeta_body`]).
    KeetaSigned,
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
    /// DoorDash: 409, or the 400 "order already processed or expired"
    /// ([`DOORDASH_PROCESSED`]). Only for calls that repeat safely.
    DoordashProcessed,
    /// Grab: 409, or the 400 "invalid order state" / "already marked
    /// ready" ([`GRAB_STATE`]). Only for calls that repeat safely.
    GrabState,
    /// Keeta: every answer is HTTP 200 with a `code` in the body
    /// ([`keeta_verdict`]); `already_done`: whether its "not in a valid
    /// state" messages ([`KEETA_ALREADY_DONE`]) count as done (a call that
    /// repeats safely) or as a refusal.
    KeetaCode { already_done: bool },
}

/// Whether `action`, done a second time or after the provider moved the
/// order on by itself, leaves the order where the restaurant wanted it:
/// accept (the tablet confirmed first), ready, picked up, delivered. A
/// reject, a cancel or a delay the provider says it cannot take any more
/// did not happen, and is reported as failed.
pub fn repeats_safely(action: Action) -> bool {
    match action {
        Action::Accept | Action::Ready | Action::PickedUp | Action::Delivered => true,
        Action::Reject | Action::Cancel | Action::Delay => false,
    }
}

/// One request to the provider.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub method: Method,
    pub target: Target,
    pub body: Body,
    pub auth: Auth,
    pub done_on: DoneOn,
    /// Headers of the call itself besides auth and content type (Glovo's
    /// store header); never a secret.
    pub headers: Vec<(&'static str, String)>,
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
    #[error(
        "{provider}'s call to {action} names the store, and the order's context has no store id (the order's payload named none)"
    )]
    NoStoreId { provider: Provider, action: Action },
    #[error("{provider} takes {field} as a 64-bit integer, and the order's is not one")]
    NotAnInteger {
        provider: Provider,
        field: &'static str,
    },
}

impl PlanError {
    pub fn class(&self) -> FailureClass {
        match self {
            PlanError::Unsupported { .. } => FailureClass::UnsupportedAction,
            PlanError::CallbackMissing(_) => FailureClass::CallbackMissing,
            PlanError::Missing { .. }
            | PlanError::NoStoreId { .. }
            | PlanError::NotAnInteger { .. } => FailureClass::InvalidPayload,
        }
    }
}

/// `base_url` with `segments` appended, each percent-encoded as one path
/// segment; no query, no fragment.
pub fn api_url(base_url: &url::Url, segments: &[String]) -> url::Url {
    let mut url = base_url.clone();
    url.set_query(None);
    url.set_fragment(None);
    url.path_segments_mut()
        .expect("an http base_url")
        .pop_if_empty()
        .extend(segments);
    url
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
        headers: Vec::new(),
    };
    let store_id = || {
        ctx.store_id
            .clone()
            .filter(|s| !s.is_empty())
            .ok_or(PlanError::NoStoreId {
                provider: account.provider,
                action,
            })
    };
    let calls = match account.provider {
        Provider::Careem => return Err(unsupported()),
        Provider::Doordash => {
            // merchant_supplied_id: the webhook id of the created order,
            // the backend's Idempotency-Key for it (DoorDash echoes it back
            // as client_order_id).
            let merchant = ctx.webhook_id.as_str();
            let done_on = if repeats_safely(action) {
                DoneOn::DoordashProcessed
            } else {
                DoneOn::Conflict
            };
            let patch = |segments: &[&str], body: Value| {
                let mut s = vec!["api", "v1", "orders", id];
                s.extend_from_slice(segments);
                call(
                    Method::PATCH,
                    api(&s),
                    Body::Json(body),
                    Auth::DoordashJwt,
                    done_on,
                )
            };
            let event = |name: &str| {
                patch(
                    &["events", name],
                    json!({ "merchant_supplied_id": merchant }),
                )
            };
            match action {
                Accept => {
                    let mut b =
                        json!({"merchant_supplied_id": merchant, "order_status": "success"});
                    if let Some(t) = &ready_at {
                        b["prep_time"] = json!(t);
                    }
                    vec![patch(&[], b)]
                }
                Reject => vec![patch(
                    &[],
                    json!({
                        "merchant_supplied_id": merchant,
                        "order_status": "fail",
                        "failure_reason": text,
                    }),
                )],
                Ready => vec![event("order_ready_for_pickup")],
                Cancel => vec![patch(
                    &["cancellation"],
                    json!({
                        "cancel_reason": doordash_cancel_reason(reason.code),
                        "cancel_details": text,
                    }),
                )],
                PickedUp if ctx.self_delivery => vec![event("order_picked_up")],
                Delivered if ctx.self_delivery => vec![event("order_delivered")],
                PickedUp | Delivered | Delay => return Err(unsupported()),
            }
        }
        Provider::Glovo => {
            let status_api = account.api.as_ref().map(|a| a.status_api);
            // Which "picked up": the customer's own (collection) or the
            // restaurant's courier leaving (self-delivery).
            let picked_up = match action {
                PickedUp if ctx.pickup => Some(("PICKED_UP_BY_CUSTOMER", "customer_picked_up")),
                PickedUp if ctx.self_delivery => Some(("OUT_FOR_DELIVERY", "out_for_delivery")),
                _ => None,
            };
            let (status, last) = match (action, picked_up) {
                (Accept, _) => ("ACCEPTED", "accept"),
                (Ready, _) if !ctx.pickup && !ctx.self_delivery => {
                    ("READY_FOR_PICKUP", "ready_for_pickup")
                }
                (PickedUp, Some(p)) => p,
                _ => return Err(unsupported()),
            };
            let store = store_id()?;
            match status_api {
                Some(StatusApi::GlovoIntegrations) => {
                    let body = match action {
                        Accept => Body::Json(json!({
                            "committedPreparationTime": rfc3339(glovo_committed_time(now, cmd.ready_at)),
                        })),
                        _ => Body::None,
                    };
                    let mut c = call(
                        Method::PUT,
                        api(&["api", "v0", "integrations", "orders", id, last]),
                        body,
                        Auth::GlovoToken,
                        DoneOn::Conflict,
                    );
                    c.headers.push((GLOVO_STORE_HEADER, store));
                    vec![c]
                }
                _ => vec![call(
                    Method::PUT,
                    api(&["webhook", "stores", &store, "orders", id, "status"]),
                    Body::Json(json!({ "status": status })),
                    Auth::GlovoToken,
                    DoneOn::Conflict,
                )],
            }
        }
        Provider::Grab => {
            let order = json!(id);
            let done_on = if repeats_safely(action) {
                DoneOn::GrabState
            } else {
                DoneOn::Conflict
            };
            let req = |method: Method, segments: &[&str], body: Value| {
                let mut s = vec!["partner", "v1"];
                s.extend_from_slice(segments);
                call(method, api(&s), Body::Json(body), Auth::Bearer, done_on)
            };
            match action {
                Accept | Reject => vec![req(
                    Method::POST,
                    &["order", "prepare"],
                    json!({
                        "orderID": order,
                        "toState": if action == Accept { "Accepted" } else { "Rejected" },
                    }),
                )],
                Ready => vec![req(
                    Method::POST,
                    &["orders", "mark"],
                    json!({"orderID": order, "markStatus": 1}),
                )],
                Delay => vec![req(
                    Method::PUT,
                    &["order", "readytime"],
                    json!({"orderID": order, "newOrderReadyTime": need_ready_at()?}),
                )],
                Cancel => vec![req(
                    Method::PUT,
                    &["order", "cancel"],
                    json!({
                        "orderID": order,
                        "merchantID": store_id()?,
                        "cancelCode": grab_cancel_code(reason.code),
                    }),
                )],
                PickedUp | Delivered => return Err(unsupported()),
            }
        }
        Provider::Keeta => {
            let order_view_id: i64 = id.parse().map_err(|_| PlanError::NotAnInteger {
                provider: account.provider,
                field: "orderViewId",
            })?;
            let store = store_id()?;
            let shop_id: i64 = store.parse().map_err(|_| PlanError::NotAnInteger {
                provider: account.provider,
                field: "shopId",
            })?;
            let post = |last: &str, mut body: Value| {
                body["orderViewId"] = json!(order_view_id);
                body["shopId"] = json!(shop_id);
                call(
                    Method::POST,
                    api(&["order", last]),
                    Body::Json(body),
                    Auth::KeetaSigned,
                    DoneOn::KeetaCode {
                        already_done: repeats_safely(action),
                    },
                )
            };
            match action {
                Accept => vec![post("confirm", json!({}))],
                Reject | Cancel => {
                    let code = keeta_cancel_code(reason.code);
                    let mut b = json!({ "cancelCode": code });
                    // Keeta asks for a reason with "other" only.
                    if code == KEETA_CANCEL_OTHER {
                        b["cancelReason"] = json!(text);
                    }
                    vec![post("cancel", b)]
                }
                Ready => vec![post("prepare", json!({}))],
                PickedUp if ctx.self_delivery => vec![post("dispatched", json!({}))],
                Delivered if ctx.self_delivery => vec![post("delivered", json!({}))],
                PickedUp | Delivered | Delay => return Err(unsupported()),
            }
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

/// Glovo's header naming the store on the integrations API.
pub const GLOVO_STORE_HEADER: &str = "Glovo-Store-Address-External-Id";

/// The furthest Glovo's `committedPreparationTime` may be from now
/// [CODE×1].
pub const GLOVO_MAX_PREPARATION: Duration = Duration::from_secs(600);

/// Glovo's `committedPreparationTime`: the backend's `ready_at`, else the
/// most Glovo takes (so no courier is sent before the kitchen said it can
/// be ready), never before `now` nor after `now +`
/// [`GLOVO_MAX_PREPARATION`].
pub fn glovo_committed_time(
    now: OffsetDateTime,
    ready_at: Option<OffsetDateTime>,
) -> OffsetDateTime {
    let latest = now + GLOVO_MAX_PREPARATION;
    ready_at.unwrap_or(latest).clamp(now, latest)
}

fn doordash_cancel_reason(c: ReasonCode) -> &'static str {
    match c {
        ReasonCode::ItemsUnavailable => "ITEM_OUT_OF_STOCK",
        ReasonCode::StoreClosed => "STORE_CLOSED",
        ReasonCode::TooBusy => "KITCHEN_BUSY",
        ReasonCode::Address | ReasonCode::Other => "OTHER",
    }
}

fn grab_cancel_code(c: ReasonCode) -> u32 {
    match c {
        ReasonCode::ItemsUnavailable => 1001,
        ReasonCode::StoreClosed => 1003,
        // [GUESS] Grab has no "other" code: "too many orders" is the one
        // that says the restaurant cannot take it on.
        ReasonCode::TooBusy | ReasonCode::Address | ReasonCode::Other => 1002,
    }
}

/// Keeta's "other" cancel code, the one that takes a `cancelReason`.
pub const KEETA_CANCEL_OTHER: u32 = 500_000;

fn keeta_cancel_code(c: ReasonCode) -> u32 {
    match c {
        ReasonCode::ItemsUnavailable => 500_001,
        ReasonCode::StoreClosed => 500_002,
        ReasonCode::TooBusy => 500_003,
        ReasonCode::Address | ReasonCode::Other => KEETA_CANCEL_OTHER,
    }
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
    if let DoneOn::KeetaCode { already_done } = done_on
        && (200..300).contains(&status)
    {
        return keeta_verdict(body, already_done, what);
    }
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
        (400, DoneOn::DoordashProcessed) if mentions(body, &DOORDASH_PROCESSED) => {
            Verdict::AlreadyDone
        }
        (400, DoneOn::GrabState) if mentions(body, &GRAB_STATE) => Verdict::AlreadyDone,
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

/// A call as it goes out. No `Debug`: its headers carry credentials
/// (marked sensitive).
pub struct Wire {
    pub method: Method,
    pub url: url::Url,
    pub headers: HeaderMap,
    pub body: Option<Bytes>,
}

/// The request of `call` to `url` for `account` at `now`: its auth
/// ([`Auth`]), `Accept: application/json`, the call's own headers, and its
/// body (`application/json`). `token` is the token store's bearer token
/// ([`Auth::Bearer`]); `command` the stored command ([`Body::Command`]). A
/// `direct` call's Standard Webhooks headers are the worker's to add (they
/// sign the body with the account's webhook secret).
pub fn wire(
    account: &Account,
    call: &Call,
    url: url::Url,
    token: Option<&str>,
    command: &Bytes,
    now: OffsetDateTime,
) -> Result<Wire, Failure> {
    use secrecy::ExposeSecret;
    let lacks = |what: &str| {
        Failure::new(
            FailureClass::TokenRejected,
            format!("account {} has no {what}", account.id),
        )
    };
    let api = account.api.as_ref();
    let key = || {
        api.map(|a| a.client_secret.expose_secret().to_owned())
            .ok_or_else(|| lacks("api.client_secret"))
    };
    let mut headers = HeaderMap::new();
    let mut put = |name: &'static str, value: String, secret: bool| -> Result<(), Failure> {
        let mut v = HeaderValue::from_str(&value).map_err(|_| {
            Failure::new(
                FailureClass::InvalidPayload,
                format!("{name} of the call is not a valid header value"),
            )
        })?;
        v.set_sensitive(secret);
        headers.insert(
            HeaderName::from_bytes(name.as_bytes()).expect("a header name"),
            v,
        );
        Ok(())
    };
    put("accept", "application/json".into(), false)?;
    let mut body: Option<Bytes> = match &call.body {
        Body::None => None,
        Body::Json(v) => Some(Bytes::from(
            serde_json::to_vec(v).expect("a JSON value encodes"),
        )),
        Body::Command => Some(command.clone()),
    };
    match call.auth {
        Auth::Bearer => put(
            "authorization",
            format!("Bearer {}", token.ok_or_else(|| lacks("token"))?),
            true,
        )?,
        Auth::FlytKey => put("x-flyt-api-key", key()?, true)?,
        Auth::JeApiKey => put("authorization", format!("JE-API-KEY {}", key()?), true)?,
        Auth::StandardWebhooks => {}
        Auth::DoordashJwt => {
            let signer = api
                .and_then(shared::tokens::doordash::Signer::new)
                .ok_or_else(|| lacks("DoorDash developer_id, key_id and signing secret"))?;
            put(
                "authorization",
                format!("Bearer {}", signer.token(now.unix_timestamp())),
                true,
            )?;
            put("auth-version", "v2".into(), false)?;
        }
        Auth::GlovoToken => put("authorization", key()?, true)?,
        Auth::KeetaSigned => {
            let fields = match &call.body {
                Body::Json(v) => v,
                _ => &Value::Object(Default::default()),
            };
            let api = api.ok_or_else(|| lacks("[account.api]"))?;
            let signed = keeta_body(api, fields, &url, now)
                .ok_or_else(|| lacks("Keeta app_id and access token"))?;
            body = Some(Bytes::from(signed));
        }
    }
    for (name, value) in &call.headers {
        put(name, value.clone(), false)?;
    }
    if body.is_some() {
        put("content-type", "application/json".into(), false)?;
    }
    Ok(Wire {
        method: call.method.clone(),
        url,
        headers,
        body,
    })
}

/// A Keeta call's body: the call's `fields` with `appId` (a number),
/// `accessToken`, `timestamp` (Unix seconds) and their `sig` over `url`
/// ([`shared::verify::keeta::signature`]). `None` without an app id or an
/// access token.
pub fn keeta_body(
    api: &shared::config::ProviderApi,
    fields: &Value,
    url: &url::Url,
    now: OffsetDateTime,
) -> Option<Vec<u8>> {
    use secrecy::ExposeSecret;
    use shared::verify::keeta;
    let app_id: u64 = api.app_id.as_deref()?.parse().ok()?;
    let mut body = fields.clone();
    body["appId"] = json!(app_id);
    body["accessToken"] = json!(api.access_token.as_ref()?.expose_secret());
    body["timestamp"] = json!(now.unix_timestamp());
    let unsigned = serde_json::to_vec(&body).expect("a JSON value encodes");
    let params = keeta::json_params(&unsigned).expect("a JSON object with unique keys");
    let pairs: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    body[keeta::SIG_FIELD] = json!(keeta::signature(url.as_str(), &pairs, &api.client_secret));
    Some(serde_json::to_vec(&body).expect("a JSON value encodes"))
}

/// DoorDash's 400 to a confirm or an event of an order it has "already
/// processed or expired" [DOC] reads as already done for a call that
/// repeats safely: the hub never calls past the answer deadline (3
/// minutes, the low end of DoorDash's 3-8), so within it the order was
/// processed (an earlier try whose answer was lost, or the tablet). To a
/// `fail` or a cancellation it says the order went on without the refusal:
/// a failure. Any other 400 is a refusal.
pub const DOORDASH_PROCESSED: [&str; 1] = ["already processed"];

/// Grab's 400 about the order's state ("invalid order state", "already
/// marked ready" [SDK]) reads as already done for a call that repeats
/// safely; any other 400 is a refusal. Phrases, never a field name: a
/// validation error names `toState` or `markStatus` ("invalid toState
/// value") and is a refusal.
pub const GRAB_STATE: [&str; 2] = ["invalid order state", "already marked ready"];

/// [GUESS] Keeta's message for a call the order's status no longer takes
/// ("order status is not in a valid state for ..." [DOC, Open Delivery
/// FAQ]; "already accepted through a Keeta POS terminal", "already
/// progressed beyond the initial state" [DOC, confirm]): already done.
pub const KEETA_ALREADY_DONE: [&str; 2] = ["valid state", "already"];

/// Whether `body` says one of `words` (ASCII case ignored).
fn mentions(body: &[u8], words: &[&str]) -> bool {
    let text = String::from_utf8_lossy(body).to_ascii_lowercase();
    words.iter().any(|w| text.contains(w))
}

/// Reads a Keeta answer (always HTTP 200, the outcome in `code` [DOC]):
/// - `0`: done;
/// - a message saying the order's status does not take the call
///   ([`KEETA_ALREADY_DONE`]): already done [GUESS] when `already_done`
///   (a call that repeats safely), else `provider_rejected` (a cancel of
///   an order already completed or cancelled did not cancel);
/// - a code of the system-error family (`309000000` [DOC]: a leading 3):
///   `provider_5xx`, retried;
/// - any other (`109000000` parameter error, `209000101` order does not
///   exist [DOC], signature and token errors): `provider_rejected`;
/// - a body that is not `{code, message}`: `provider_5xx`, retried (an
///   answer cut short or an error page in front of the API).
pub fn keeta_verdict(body: &[u8], already_done: bool, what: &str) -> Verdict {
    #[derive(serde::Deserialize)]
    struct Answer {
        code: i64,
        #[serde(default)]
        message: Option<String>,
    }
    let answer = match serde_json::from_slice::<Answer>(body) {
        Ok(a) => a,
        Err(_) => {
            return Verdict::Failed(Failure::new(
                FailureClass::Provider5xx,
                format!("{what} answered 200 without Keeta's {{code, message}}"),
            ));
        }
    };
    if answer.code == 0 {
        return Verdict::Done;
    }
    let message = answer.message.unwrap_or_default();
    if already_done && mentions(message.as_bytes(), &KEETA_ALREADY_DONE) {
        return Verdict::AlreadyDone;
    }
    let said =
        shared::redact::truncate(&shared::outbound::one_line(message.as_bytes()), 256).into_owned();
    let class = if answer.code.to_string().starts_with('3') {
        FailureClass::Provider5xx
    } else {
        FailureClass::ProviderRejected
    };
    Verdict::Failed(Failure::new(
        class,
        format!("{what} answered code {}: {said}", answer.code),
    ))
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
