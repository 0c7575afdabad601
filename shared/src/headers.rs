//! Header names the hub puts on NATS messages. The ingress sets the webhook
//! headers; every later stage copies them forward, so a message anywhere in
//! the pipeline says which webhook, provider, account and tenant it is about.

/// Hub id of the raw webhook (UUIDv7): the root of every downstream
/// `Nats-Msg-Id` and of the backend's `Idempotency-Key`.
pub const WEBHOOK_ID: &str = "Orderhub-Webhook-Id";
pub const PROVIDER: &str = "Orderhub-Provider";
pub const ACCOUNT: &str = "Orderhub-Account";
pub const TENANT: &str = "Orderhub-Tenant";
/// RFC 3339 time the ingress accepted the webhook.
pub const RECEIVED_AT: &str = "Orderhub-Received-At";
/// W3C trace context, carried from the ingress to the backend.
pub const TRACEPARENT: &str = "traceparent";
/// Prefix of the headers carrying URL path parameters a provider dictates
/// (`Orderhub-Path-Remoteid`, `Orderhub-Path-Remoteorderid`,
/// `Orderhub-Path-Event`), set by the ingress.
pub const PATH_PREFIX: &str = "Orderhub-Path-";
/// On a canonical order: its `event` (`created`, `updated`, ...), so the
/// forwarder knows a new order (auto-accept) without parsing the body.
pub const EVENT: &str = "Orderhub-Event";
/// On a status command: its `status_id`.
pub const STATUS_ID: &str = "Orderhub-Status-Id";
/// Set on a message republished by `dlq-inspector replay`.
pub const REPLAY_OF: &str = "Orderhub-Replay-Of";

/// On an order the fetcher fetched (`webhooks.fetched.<provider>.<account>`):
/// what the provider's notification said happened, as the provider spells
/// it (Uber Eats `event_type`, e.g. `orders.notification`, `orders.cancel`;
/// Wolt `order.status`, e.g. `CREATED`, `CANCELED`). The transformer's
/// adapter reads the canonical event from it.
pub const NOTIFICATION_EVENT: &str = "Orderhub-Notification-Event";
/// On a fetched order: which of the provider's order APIs answered, so the
/// adapter reads the right shape: `v2` (Uber Eats `GET /v2/eats/order/{id}`,
/// Wolt `GET /v2/orders/{id}`) or `v1` (Uber Eats
/// `GET /v1/delivery/order/{id}`, Wolt `GET /orders/{id}`).
pub const FETCHED_API: &str = "Orderhub-Fetched-Api";
/// On a fetched order: the path (and query) the order was fetched from,
/// for audit (`/v2/eats/order/7c3b...`).
pub const FETCHED_FROM: &str = "Orderhub-Fetched-From";

/// Dead-letter fields (DESIGN §2), on top of the original message's headers.
pub mod dlq {
    pub const STAGE: &str = "Orderhub-Dlq-Stage";
    pub const STREAM: &str = "Orderhub-Dlq-Stream";
    pub const SUBJECT: &str = "Orderhub-Dlq-Subject";
    pub const SEQ: &str = "Orderhub-Dlq-Seq";
    pub const DELIVERIES: &str = "Orderhub-Dlq-Deliveries";
    pub const FIRST_FAILURE: &str = "Orderhub-Dlq-First-Failure";
    pub const LAST_FAILURE: &str = "Orderhub-Dlq-Last-Failure";
    pub const ERROR_CLASS: &str = "Orderhub-Dlq-Error-Class";
    pub const ERROR: &str = "Orderhub-Dlq-Error";
    /// `worker` (the handler gave up) or `mover` (the worker died on the last delivery).
    pub const MOVED_BY: &str = "Orderhub-Dlq-Moved-By";
    /// The original's `Nats-Msg-Id`, which the entry itself cannot carry.
    pub const ORIGINAL_MSG_ID: &str = "Orderhub-Dlq-Original-Msg-Id";
}
