//! A fake provider API, for tests and for `scripts/dev-up` (the
//! `fake-provider` binary): one loopback server plays Uber Eats', Wolt's,
//! Talabat's (the Delivery Hero middleware), Deliveroo's, Just Eat's and
//! Grab's token endpoints, Uber's and Wolt's order GETs, and every status
//! call the hub makes (accept, reject, ready, ...) to those and to DoorDash,
//! Glovo and Keeta, with the traps of the real ones,
//! scripted faults, and counters a test asserts on. Point an account's
//! `token_url` and `base_url` at it.
//!
//! | Path | Plays |
//! |---|---|
//! | `POST /oauth/v2/token` | Uber client credentials: form `client_id`, `client_secret`, `grant_type=client_credentials`, `scope` (any other body → 400). Unknown client or wrong secret → 401 `invalid_client`. More mints than the hourly cap within any rolling hour → 429 `rate_limited` with `Retry-After`. A mint that makes more than the live-token limit live revokes the client's oldest live tokens. |
//! | `POST /oauth2/token` | Wolt: HTTP Basic client authentication (Bearer or none → 400 `invalid_request`, wrong client → 401 `invalid_client`); form `grant_type=refresh_token&refresh_token=` or `grant_type=authorization_code&code=`. Every success issues a new access token and a new refresh token; a refresh token is single-use, and presenting a used one revokes what was issued from it (and from its successors) and answers 400 `invalid_grant`. Authorization codes are single-use. |
//! | `POST /v2/login` | Talabat middleware login: form `username`, `password`, `grant_type=client_credentials` → `{access_token, token_type: "Bearer", expires_in}` (default 1800). Unknown user or wrong password → 401; any other body → 400. |
//! | `POST /deliveroo/oauth2/token` | Deliveroo: HTTP Basic client authentication (missing or wrong → 401 `invalid_client`), form `grant_type=client_credentials` (other → 400) → `{access_token, expires_in, token_type}` (default 300). Under `/deliveroo/` because Wolt's token endpoint is `/oauth2/token` with the same client authentication: [`FakeProvider::deliveroo_token_url`]. |
//! | `GET /v2/eats/order/{id}`, `GET /v1/delivery/order/{id}` | Uber order V2, V1 (the query string is recorded) |
//! | `GET /orders/{id}`, `GET /v2/orders/{id}` | Wolt order V1, V2 |
//! | `POST /v1/eats/orders/{id}/accept_pos_order`, `deny_pos_order`, `cancel`, `restaurantdelivery/status` | Uber legacy status: 204 (cancel 200; a cancel of a denied or cancelled order → 404) |
//! | `POST /v1/delivery/order/{id}/accept`, `deny`, `cancel`, `ready`, `update-ready-time` | Uber Order Fulfillment status: 204 |
//! | `PUT /orders/{id}/accept`, `self-delivery/accept`, `confirm-preorder`, `reject`, `ready`, `delivered` | Wolt status (Bearer): 202, confirm-preorder 204 |
//! | `POST /v2/order/status/{token}`, `POST /v2/orders/{token}/preparation-completed` | Talabat callbacks ([`FakeProvider::talabat_callback_urls`]): accepted, rejected (`reason` one of [`TALABAT_REJECT_REASONS`]) or picked up, told apart by the body's `status`; prepared has no body. 200 |
//! | `PATCH /order/v1/orders/{id}`, `POST .../sync_status`, `POST .../prep_stage` | Deliveroo status: 204; `sync_status` once per order |
//! | `POST /order/{id}/sent-to-pos-success`, `sent-to-pos-failed` | Just Eat's JET Connect (`X-Flyt-Api-Key`): 204 |
//! | `PUT /orders/{id}/accept`, `reject`, `duedate`; `POST /orders/{id}/readyforcollection`, `dispatchedtocustomer`, `complete` | Just Eat partner API (`Authorization: JE-API-KEY <key>`): PUT 200, POST 204. Accept and reject share Wolt's paths: a request whose `Authorization` scheme is `JE-API-KEY` is Just Eat's, any other Wolt's. |
//! | `POST /grabid/v1/oauth2/token` | Grab client credentials as a JSON body (`client_id`, `client_secret`, `grant_type=client_credentials`, `scope`; a form or a missing field → 400 `invalid_request`, wrong client → 401 `invalid_client`) → `{access_token, token_type, expires_in}` (default 604799). |
//! | `PATCH /api/v1/orders/{id}`, `…/events/order_ready_for_pickup`, `…/events/order_picked_up`, `…/events/order_delivered`, `…/cancellation` | DoorDash ([`FakeProvider::add_doordash_key`]): `Authorization: Bearer <JWT>` verified with the developer's decoded signing secret (DoorDash's exact header, `aud`, `iss`/`kid` of a registered key, not expired, `iat` at most 60 s ahead, at most 30 minutes' lifetime) and `auth-version: v2`; 202. A second confirm or ready: 400 "Order already processed or expired". |
//! | `PUT /webhook/stores/{store}/orders/{id}/status`; `PUT /api/v0/integrations/orders/{id}/accept`, `ready_for_pickup`, `out_for_delivery`, `customer_picked_up` | Glovo ([`FakeProvider::add_glovo_token`]): the partner token raw in `Authorization`; the integrations API needs `Glovo-Store-Address-External-Id` (else 400) and a `committedPreparationTime` at most ~10 minutes ahead; 204. |
//! | `POST /partner/v1/order/prepare`, `/partner/v1/orders/mark`; `PUT /partner/v1/order/readytime`, `/partner/v1/order/cancel` | Grab (a live Bearer token of its endpoint; `orderID` in the body): 204, cancel 200. A repeated prepare or mark: 400 ("invalid order state", "order already marked ready"); a repeated cancel 409. |
//! | `POST /order/confirm`, `cancel`, `prepare`, `dispatched`, `delivered` | Keeta ([`FakeProvider::add_keeta_app`]): always HTTP 200, the outcome in `{code, message, data}`. The body's `sig` is checked over `http://<Host><path>` and every other body parameter with the app's secret (`shared::verify::keeta`), with the app's `accessToken` (else code 115000203); `orderViewId`/`shopId` int64 numbers (else 109000000); a repeated call: code 209000000 "order status is not in a valid state for <call>". |
//!
//! An order GET needs `Authorization: Bearer` with a live access token of
//! that provider (else 401 in the provider's error shape) and answers the
//! stored body byte for byte, or 404 in the provider's error shape.
//!
//! A status request is checked as the real API would, in this order:
//! authentication (a live bearer token of that provider that the fake
//! issued, or a Just Eat key given with [`FakeProvider::add_justeat_key`];
//! else 401 in the provider's error shape), then the body (JSON with
//! `Content-Type: application/json`, the fields and enums of the
//! provider's API, times in RFC 3339; else 400, see `status.rs`), then the
//! order's state, kept per (provider, order id) with no need to store the
//! order first: the first accept or reject wins, and a repeated or
//! conflicting one gets the provider's "already done" answer (409: Uber
//! `{"code":"resource_status_conflict",...}`, Wolt, Deliveroo and Just Eat
//! their error shape, Talabat `{"currentState":"ACCEPTED"}` or
//! `"REJECTED"`). Every status request, faulted or not, is recorded as a
//! [`StatusCall`] (with the credentials it carried, for tests to assert).
//!
//! Not modelled: scopes (echoed, never checked); which venue, restaurant or
//! brand a token or key belongs to (any live token of the provider works
//! for any of its orders); Wolt's V2 media type on `GET /orders/{id}`;
//! refresh-token lifetimes; status order rules beyond accept/reject (ready
//! before accept is taken); Deliveroo's `occurred_at` window and per-order
//! rate limits; Talabat's and Deliveroo's exact error bodies (nobody
//! published them: `{code, message}`); Talabat's transient 409 states
//! (`ASSIGNED_TO_TRANSPORT`, play them with a fault); DoorDash's, Glovo's
//! and Grab's error bodies (`{code, message}`, guesses); Keeta's code for a
//! bad signature (115000203, from third-party code); which store a Glovo,
//! Grab or Keeta call names.
//!
//! Control over HTTP, for the binary: `POST /_fake/orders/{ubereats|wolt}/{v1|v2}/{id}`
//! (the body is the order), `POST /_fake/talabat-users` (`{"username",
//! "password"}`), `POST /_fake/deliveroo-clients` (`{"client_id",
//! "client_secret"}`), `POST /_fake/justeat-keys` (`{"key"}`),
//! `POST /_fake/grab-clients` (`{"client_id", "client_secret"}`),
//! `POST /_fake/doordash-keys` (`{"developer_id", "key_id",
//! "signing_secret"}`), `POST /_fake/glovo-tokens` (`{"token"}`),
//! `POST /_fake/keeta-apps` (`{"app_id", "app_secret", "access_token"}`),
//! `POST /_fake/faults` (see [`parse_fault`]), `POST /_fake/expire-tokens`,
//! `GET /_fake/stats`, `GET /_fake/status-calls[?order_id=]` (the recorded
//! status calls as a JSON array, see [`StatusCall::to_json`]: only the
//! scheme of their credentials, Keeta's `accessToken` redacted). Control
//! requests are neither recorded nor faulted.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

mod http;
mod state;
mod status;
#[cfg(test)]
mod tests;

pub use http::parse_fault;
use state::State;
pub use status::{StatusEndpoint, TALABAT_REJECT_REASONS};

/// The providers the fake plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Platform {
    Ubereats,
    Wolt,
    Talabat,
    Deliveroo,
    Justeat,
    Doordash,
    Glovo,
    Grab,
    Keeta,
}

impl Platform {
    pub const ALL: [Platform; 9] = [
        Platform::Ubereats,
        Platform::Wolt,
        Platform::Talabat,
        Platform::Deliveroo,
        Platform::Justeat,
        Platform::Doordash,
        Platform::Glovo,
        Platform::Grab,
        Platform::Keeta,
    ];

    /// The name in `shared::Provider`'s spelling (`ubereats`, `wolt`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            Platform::Ubereats => "ubereats",
            Platform::Wolt => "wolt",
            Platform::Talabat => "talabat",
            Platform::Deliveroo => "deliveroo",
            Platform::Justeat => "justeat",
            Platform::Doordash => "doordash",
            Platform::Glovo => "glovo",
            Platform::Grab => "grab",
            Platform::Keeta => "keeta",
        }
    }

    /// Whether the hub fetches this provider's orders (Uber, Wolt): the
    /// others push the whole order, and the fake serves no order GET for
    /// them.
    pub const fn pulled(self) -> bool {
        matches!(self, Platform::Ubereats | Platform::Wolt)
    }

    /// Whether the provider has a token endpoint (Just Eat's and Glovo's
    /// keys are static, DoorDash's JWT is signed by the caller, Keeta's
    /// access token comes with the app's authorisation).
    pub const fn mints(self) -> bool {
        !matches!(
            self,
            Platform::Justeat | Platform::Doordash | Platform::Glovo | Platform::Keeta
        )
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Platform {
    type Err = String;
    fn from_str(s: &str) -> Result<Platform, String> {
        Platform::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "provider {s:?} is not one the fake plays (ubereats, wolt, talabat, deliveroo, justeat, doordash, glovo, grab, keeta)"
                )
            })
    }
}

impl From<Platform> for shared::Provider {
    fn from(p: Platform) -> shared::Provider {
        match p {
            Platform::Ubereats => shared::Provider::Ubereats,
            Platform::Wolt => shared::Provider::Wolt,
            Platform::Talabat => shared::Provider::Talabat,
            Platform::Deliveroo => shared::Provider::Deliveroo,
            Platform::Justeat => shared::Provider::Justeat,
            Platform::Doordash => shared::Provider::Doordash,
            Platform::Glovo => shared::Provider::Glovo,
            Platform::Grab => shared::Provider::Grab,
            Platform::Keeta => shared::Provider::Keeta,
        }
    }
}

impl TryFrom<shared::Provider> for Platform {
    type Error = String;
    fn try_from(p: shared::Provider) -> Result<Platform, String> {
        p.as_str().parse()
    }
}

/// Which of a provider's order APIs (`shared::headers::FETCHED_API`): Uber
/// `V2` = `/v2/eats/order/{id}`, `V1` = `/v1/delivery/order/{id}`; Wolt
/// `V2` = `/v2/orders/{id}`, `V1` = `/orders/{id}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Api {
    V1,
    V2,
}

impl Api {
    pub const fn as_str(self) -> &'static str {
        match self {
            Api::V1 => "v1",
            Api::V2 => "v2",
        }
    }
}

impl FromStr for Api {
    type Err = String;
    fn from_str(s: &str) -> Result<Api, String> {
        match s {
            "v1" => Ok(Api::V1),
            "v2" => Ok(Api::V2),
            other => Err(format!("api {other:?} is not v1 or v2")),
        }
    }
}

/// A provider endpoint of the fake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Token(Platform),
    Order(Platform, Api),
    Status(StatusEndpoint),
}

impl Endpoint {
    /// The path of an order GET.
    ///
    /// Panics for a provider whose orders are pushed ([`Platform::pulled`]).
    pub fn order_path(platform: Platform, api: Api, id: &str) -> String {
        match (platform, api) {
            (Platform::Ubereats, Api::V2) => format!("/v2/eats/order/{id}"),
            (Platform::Ubereats, Api::V1) => format!("/v1/delivery/order/{id}"),
            (Platform::Wolt, Api::V1) => format!("/orders/{id}"),
            (Platform::Wolt, Api::V2) => format!("/v2/orders/{id}"),
            (
                Platform::Talabat
                | Platform::Deliveroo
                | Platform::Justeat
                | Platform::Doordash
                | Platform::Glovo
                | Platform::Grab
                | Platform::Keeta,
                _,
            ) => {
                panic!("{platform} orders are pushed: the fake serves no order GET for them")
            }
        }
    }
}

/// Which requests a fault answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matcher {
    /// The provider's token endpoint.
    Token(Platform),
    /// The provider's order GETs, both APIs.
    Order(Platform),
    /// Every status endpoint of the provider.
    Status(Platform),
    /// Any provider request whose path (without the query) starts so.
    PathPrefix(String),
}

impl Matcher {
    fn matches(&self, endpoint: Option<Endpoint>, path: &str) -> bool {
        match (self, endpoint) {
            (Matcher::Token(p), Some(Endpoint::Token(q))) => *p == q,
            (Matcher::Order(p), Some(Endpoint::Order(q, _))) => *p == q,
            (Matcher::Status(p), Some(Endpoint::Status(e))) => *p == e.platform(),
            (Matcher::PathPrefix(prefix), _) => path.starts_with(prefix.as_str()),
            _ => false,
        }
    }
}

/// A scripted answer: the next `times` requests a [`Matcher`] matches get
/// it instead of what the provider would say (they are still recorded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultReply {
    pub status: u16,
    /// The `Retry-After` header, as sent (`"2"`, or an HTTP date).
    pub retry_after: Option<String>,
    /// Sent as it is, with `Content-Type: application/json` unless empty.
    pub body: String,
    /// How many matching requests it answers (at least 1).
    pub times: usize,
    /// How long it waits before answering.
    pub delay: Duration,
    /// Never answers: the client's timeout ends the request (or the fake
    /// going down cuts the connection). `status` and `body` are not sent.
    pub hang: bool,
}

impl FaultReply {
    /// `status` once, with no body.
    pub fn status(status: u16) -> FaultReply {
        FaultReply {
            status,
            retry_after: None,
            body: String::new(),
            times: 1,
            delay: Duration::ZERO,
            hang: false,
        }
    }

    /// A request that is never answered, once.
    pub fn hang() -> FaultReply {
        FaultReply {
            hang: true,
            ..FaultReply::status(504)
        }
    }

    pub fn with_body(mut self, body: &str) -> FaultReply {
        self.body = body.to_owned();
        self
    }

    pub fn with_retry_after(mut self, value: &str) -> FaultReply {
        self.retry_after = Some(value.to_owned());
        self
    }

    pub fn times(mut self, times: usize) -> FaultReply {
        self.times = times;
        self
    }

    pub fn after(mut self, delay: Duration) -> FaultReply {
        self.delay = delay;
        self
    }
}

/// One provider request the fake received (control requests are not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeRequest {
    pub at: Instant,
    pub method: String,
    /// Without the query.
    pub path: String,
    pub query: Option<String>,
    /// The bearer token of an order or status request; never a token
    /// request's credentials.
    pub token: Option<String>,
    /// `None` for a path the fake does not play.
    pub endpoint: Option<Endpoint>,
}

/// One status request, as the provider received it and as the fake
/// answered it. Requests a fault answered are recorded too.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusCall {
    /// The provider, in `shared::Provider`'s spelling.
    pub provider: &'static str,
    pub endpoint: StatusEndpoint,
    /// The order id (Talabat: the callback token) from the path,
    /// percent-decoded; Grab's `orderID` and Keeta's `orderViewId` from the
    /// body (empty when the body names none).
    pub order_id: String,
    pub method: String,
    /// As received: still percent-encoded, without the query.
    pub path: String,
    /// The `Authorization` header as received, or `X-Flyt-Api-Key` for JET
    /// Connect; `None` if absent (Keeta signs its body instead).
    pub auth: Option<String>,
    /// DoorDash's `auth-version` header, Glovo's
    /// `Glovo-Store-Address-External-Id`, as received.
    pub extra_headers: Vec<(String, String)>,
    /// `None` for an empty body; a body that is not JSON is kept as a JSON
    /// string of its text.
    pub body: Option<Value>,
    /// The status the fake answered; 0 for a hanging fault (never
    /// answered).
    pub answered: u16,
}

impl StatusCall {
    /// The call without its credentials, for `GET /_fake/status-calls`:
    /// `auth` is only the scheme (`Bearer`, `JE-API-KEY`), the header name
    /// (`X-Flyt-Api-Key`) or `token` (Glovo's raw token); Keeta's
    /// `accessToken` in the body is `[redacted]`.
    pub fn to_json(&self) -> Value {
        let auth = self.auth.as_ref().map(|a| {
            if self.endpoint.flyt_key() {
                "X-Flyt-Api-Key"
            } else if self.endpoint.platform() == Platform::Glovo {
                "token"
            } else {
                a.split(' ').next().unwrap_or("")
            }
        });
        let mut body = self.body.clone();
        if let Some(Value::Object(map)) = body.as_mut()
            && map.contains_key("accessToken")
        {
            map.insert("accessToken".into(), Value::from("[redacted]"));
        }
        serde_json::json!({
            "provider": self.provider,
            "endpoint": format!("{:?}", self.endpoint),
            "order_id": self.order_id,
            "method": self.method,
            "path": self.path,
            "auth": auth,
            "body": body,
            "answered": self.answered,
        })
    }
}

/// The first accept or reject an order got: later ones are answered with
/// the provider's conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    Accepted,
    Rejected,
}

/// The running fake. Every method takes `&self` and may be called while
/// requests are served; [`FakeProvider::down`] and [`FakeProvider::up`]
/// take the server away and bring it back on the same port, with
/// everything it knew (tokens, orders, counters, faults).
pub struct FakeProvider {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    /// Cancels the accept loop and every open connection.
    stop: Option<CancellationToken>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl FakeProvider {
    /// On a free port of 127.0.0.1.
    pub async fn start() -> anyhow::Result<FakeProvider> {
        FakeProvider::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// On `addr` (port 0: a free one).
    pub async fn start_on(addr: SocketAddr) -> anyhow::Result<FakeProvider> {
        let mut fake = FakeProvider {
            addr,
            state: Default::default(),
            stop: None,
            task: None,
        };
        fake.serve().await?;
        Ok(fake)
    }

    async fn serve(&mut self) -> anyhow::Result<()> {
        use warp::Filter;
        let state = self.state.clone();
        let route = warp::method()
            .and(warp::path::full())
            .and(warp::query::raw().or(warp::any().map(String::new)).unify())
            .and(warp::header::headers_cloned())
            .and(warp::body::bytes())
            .then(
                move |method, path: warp::path::FullPath, query, headers, body| {
                    let req = http::Incoming {
                        method,
                        path: path.as_str().to_owned(),
                        query,
                        headers,
                        body,
                    };
                    http::handle(state.clone(), req)
                },
            );
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .with_context(|| format!("fake provider: bind {}", self.addr))?;
        self.addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        self.stop = Some(stop.clone());
        self.task = Some(tokio::spawn(async move {
            let service = warp::service(route);
            loop {
                let stream = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        // Out of file descriptors and the like: try again.
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    },
                    _ = stop.cancelled() => return,
                };
                let service = hyper_util::service::TowerToHyperService::new(service.clone());
                let stop = stop.clone();
                tokio::spawn(async move {
                    let conn = warp::hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                    // Going down drops the connection, answered or not, as
                    // a dead server's would be.
                    tokio::select! {
                        _ = conn => {}
                        _ = stop.cancelled() => {}
                    }
                });
            }
        }));
        Ok(())
    }

    /// Goes away: the port refuses connections and every open one is cut,
    /// including requests waiting for a delayed or hanging fault.
    pub async fn down(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.cancel();
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Comes back on the same port.
    pub async fn up(&mut self) -> anyhow::Result<()> {
        self.down().await;
        self.serve().await
    }

    /// `http://127.0.0.1:<port>`: the base URL of every provider's API.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Uber's token endpoint.
    pub fn uber_token_url(&self) -> String {
        format!("{}/oauth/v2/token", self.url())
    }

    /// Wolt's token endpoint.
    pub fn wolt_token_url(&self) -> String {
        format!("{}/oauth2/token", self.url())
    }

    /// Talabat's (Delivery Hero middleware's) login.
    pub fn talabat_token_url(&self) -> String {
        format!("{}/v2/login", self.url())
    }

    /// Deliveroo's token endpoint: under `/deliveroo/`, Wolt's being at
    /// `/oauth2/token` with the same client authentication.
    pub fn deliveroo_token_url(&self) -> String {
        format!("{}/deliveroo/oauth2/token", self.url())
    }

    /// Grab's token endpoint (`POST`, a JSON body).
    pub fn grab_token_url(&self) -> String {
        format!("{}/grabid/v1/oauth2/token", self.url())
    }

    /// The `callbackUrls` object of a Talabat order whose callback token
    /// is `order_token`, pointing at the fake (the token percent-encoded
    /// as one path segment). Put it in a Talabat payload.
    pub fn talabat_callback_urls(&self, order_token: &str) -> Value {
        let url = |segments: &[&str]| {
            let mut u = url::Url::parse(&self.url()).expect("the fake's URL");
            u.path_segments_mut()
                .expect("an http URL")
                .pop_if_empty()
                .extend(segments);
            u.to_string()
        };
        let status = url(&["v2", "order", "status", order_token]);
        serde_json::json!({
            "orderAcceptedUrl": status,
            "orderRejectedUrl": status,
            "orderPickedUpUrl": status,
            "orderPreparedUrl": url(&["v2", "orders", order_token, "preparation-completed"]),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Accepts an Uber client (a second call replaces its secret).
    pub fn add_uber_client(&self, client_id: &str, secret: &str) {
        self.state().add_uber_client(client_id, secret);
    }

    /// Accepts a Wolt venue's client and its first refresh token.
    pub fn add_wolt_venue(&self, client_id: &str, secret: &str, first_refresh_token: &str) {
        self.state()
            .add_wolt_venue(client_id, secret, first_refresh_token);
    }

    /// A single-use authorization code for a Wolt venue's client.
    pub fn add_wolt_code(&self, client_id: &str, code: &str) {
        self.state().add_wolt_code(client_id, code);
    }

    /// Accepts a Talabat middleware login (a second call replaces its
    /// password).
    pub fn add_talabat_user(&self, username: &str, password: &str) {
        self.state().add_talabat_user(username, password);
    }

    /// Accepts a Deliveroo client (a second call replaces its secret).
    pub fn add_deliveroo_client(&self, client_id: &str, secret: &str) {
        self.state().add_deliveroo_client(client_id, secret);
    }

    /// Accepts a Just Eat API key, for JET Connect (`X-Flyt-Api-Key`) and
    /// the partner API (`Authorization: JE-API-KEY`).
    pub fn add_justeat_key(&self, key: &str) {
        self.state().add_justeat_key(key);
    }

    /// Accepts a Grab partner app's client credentials (a second call
    /// replaces its secret).
    pub fn add_grab_client(&self, client_id: &str, secret: &str) {
        self.state().add_grab_client(client_id, secret);
    }

    /// Accepts DoorDash JWTs of `developer_id` and `key_id` signed with
    /// `signing_secret` (base64url, as DoorDash's portal shows it; it
    /// panics if it does not decode).
    pub fn add_doordash_key(&self, developer_id: &str, key_id: &str, signing_secret: &str) {
        self.state()
            .add_doordash_key(developer_id, key_id, signing_secret)
            .expect("a base64url DoorDash signing secret");
    }

    /// Accepts a Glovo partner token (raw `Authorization`).
    pub fn add_glovo_token(&self, token: &str) {
        self.state().add_glovo_token(token);
    }

    /// Accepts Keeta calls of app `app_id` signed with `app_secret` and
    /// carrying `access_token`.
    pub fn add_keeta_app(&self, app_id: &str, app_secret: &str, access_token: &str) {
        self.state().add_keeta_app(app_id, app_secret, access_token);
    }

    /// Lifetime of Grab tokens minted from now on (default 604799 s).
    pub fn set_grab_expires_in(&self, d: Duration) {
        self.state().grab_expires_in = d;
    }

    /// Lifetime of Talabat tokens issued from now on (default 1800 s).
    pub fn set_talabat_expires_in(&self, d: Duration) {
        self.state().talabat_expires_in = d;
    }

    /// Lifetime of Deliveroo tokens issued from now on (default 300 s).
    pub fn set_deliveroo_expires_in(&self, d: Duration) {
        self.state().deliveroo_expires_in = d;
    }

    /// Lifetime of Uber tokens minted from now on (default 30 days;
    /// zero: expired as soon as minted).
    pub fn set_uber_expires_in(&self, d: Duration) {
        self.state().uber_expires_in = d;
    }

    /// Lifetime of Wolt access tokens issued from now on (default 1 hour).
    pub fn set_wolt_expires_in(&self, d: Duration) {
        self.state().wolt_expires_in = d;
    }

    /// Uber mints allowed per client in any rolling hour (default 100).
    pub fn set_uber_hourly_cap(&self, n: usize) {
        self.state().uber_hourly_cap = n;
    }

    /// Live Uber tokens per client before a mint evicts the oldest
    /// (default 100).
    pub fn set_uber_live_limit(&self, n: usize) {
        self.state().uber_live_limit = n;
    }

    /// Stores an order the fake answers with, byte for byte.
    ///
    /// Panics for a provider whose orders are pushed ([`Platform::pulled`]).
    pub fn put_order(&self, platform: Platform, api: Api, id: &str, body: impl AsRef<[u8]>) {
        assert!(
            platform.pulled(),
            "{platform} orders are pushed: the fake serves no order GET for them"
        );
        self.state()
            .put_order(platform, api, id, Bytes::copy_from_slice(body.as_ref()));
    }

    /// Loads every order under `dir` laid out as `tests/fixtures`; see
    /// [`read_orders`]. Returns how many.
    pub fn load_orders(&self, dir: &Path) -> anyhow::Result<usize> {
        let orders = read_orders(dir)?;
        let mut s = self.state();
        for o in &orders {
            s.put_order(o.platform, o.api, &o.id, o.body.clone());
        }
        Ok(orders.len())
    }

    /// Queues a fault. Faults are tried in the order they were queued.
    ///
    /// Panics if `reply.times` is 0 (a fault that answers nothing is a
    /// mistake in the test).
    pub fn fault(&self, matcher: Matcher, reply: FaultReply) {
        assert!(reply.times > 0, "FaultReply.times must be at least 1");
        self.state().add_fault(matcher, reply);
    }

    /// Matching requests the queued faults will still answer.
    pub fn faults_pending(&self) -> usize {
        self.state().faults_pending()
    }

    /// Every live access token of every provider expires now (refresh
    /// tokens stay usable).
    pub fn expire_all_tokens(&self) {
        self.state().expire_all(Instant::now());
    }

    /// Revokes an access token or a refresh token; false if the fake never
    /// issued (or was given) it.
    pub fn revoke_token(&self, token: &str) -> bool {
        self.state().revoke(token)
    }

    /// Whether an access token or a refresh token can still be used.
    pub fn token_live(&self, token: &str) -> bool {
        self.state().live(token, Instant::now())
    }

    /// The Wolt venue's refresh token that can still be used, if any.
    pub fn live_refresh_token(&self, client_id: &str) -> Option<String> {
        self.state().live_refresh_token(client_id)
    }

    /// Tokens issued for a provider (Uber and Deliveroo mints, Talabat
    /// logins; Wolt refreshes and code exchanges that succeeded).
    pub fn mints(&self, platform: Platform) -> usize {
        self.state().mints(platform)
    }

    /// Tokens issued for one client (Talabat: user) of a provider.
    pub fn mints_by(&self, platform: Platform, client_id: &str) -> usize {
        self.state().mints_by(platform, client_id)
    }

    /// Times a Wolt refresh token was presented by its own client, the
    /// first use and every reuse.
    pub fn refresh_uses(&self, refresh_token: &str) -> usize {
        self.state().refresh_uses(refresh_token)
    }

    /// Presentations of an already used Wolt refresh token.
    pub fn refresh_token_reuses(&self) -> usize {
        self.state().refresh_token_reuses()
    }

    /// Access tokens revoked so far: evicted by Uber's live-token limit,
    /// revoked by a Wolt refresh-token reuse, or by [`FakeProvider::revoke_token`].
    pub fn revoked(&self) -> usize {
        self.state().revoked()
    }

    /// Requests to `path` (without the query) so far.
    pub fn order_requests(&self, path: &str) -> usize {
        self.state()
            .requests()
            .iter()
            .filter(|r| r.path == path)
            .count()
    }

    /// Every provider request so far, in arrival order.
    pub fn requests(&self) -> Vec<FakeRequest> {
        self.state().requests().to_vec()
    }

    /// Every status request so far, in arrival order.
    pub fn status_calls(&self) -> Vec<StatusCall> {
        self.state().status_calls().to_vec()
    }

    /// The status requests for one order id (of any provider), in arrival
    /// order.
    pub fn status_calls_for(&self, order_id: &str) -> Vec<StatusCall> {
        self.state()
            .status_calls()
            .iter()
            .filter(|c| c.order_id == order_id)
            .cloned()
            .collect()
    }

    /// Waits until at least `n` status requests were recorded, and returns
    /// them all; an error naming what came if `timeout` passes first.
    pub async fn wait_status_calls(
        &self,
        n: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<StatusCall>> {
        self.wait_for(n, timeout, None).await
    }

    /// [`FakeProvider::wait_status_calls`] for one order id.
    pub async fn wait_status_calls_for(
        &self,
        order_id: &str,
        n: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<StatusCall>> {
        self.wait_for(n, timeout, Some(order_id)).await
    }

    async fn wait_for(
        &self,
        n: usize,
        timeout: Duration,
        order_id: Option<&str>,
    ) -> anyhow::Result<Vec<StatusCall>> {
        let recorded = self.state().recorded.clone();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Registered before looking, so a call recorded in between
            // still wakes this wait.
            let notified = recorded.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let calls = match order_id {
                Some(id) => self.status_calls_for(id),
                None => self.status_calls(),
            };
            if calls.len() >= n {
                return Ok(calls);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let seen: Vec<String> = calls
                    .iter()
                    .map(|c| format!("{} {} → {}", c.method, c.path, c.answered))
                    .collect();
                bail!(
                    "{} status calls{} after {timeout:?}, not {n}: {seen:?}",
                    calls.len(),
                    order_id
                        .map(|id| format!(" for {id:?}"))
                        .unwrap_or_default(),
                );
            }
        }
    }

    /// Whether an order was accepted or rejected at its provider (the
    /// first accept or reject that the fake took).
    pub fn decision(&self, platform: Platform, order_id: &str) -> Option<Decision> {
        self.state().decision(platform, order_id)
    }

    /// Marks an order decided, as if the restaurant's tablet (or Wolt's
    /// auto-accept) had answered first: the hub's accept or reject then
    /// meets the provider's conflict.
    pub fn set_decision(&self, platform: Platform, order_id: &str, decision: Decision) {
        self.state().set_decision(platform, order_id, decision);
    }

    /// The counters, as `GET /_fake/stats` shows them.
    pub fn stats(&self) -> Value {
        self.state().stats(Instant::now())
    }
}

impl Drop for FakeProvider {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.cancel();
        }
    }
}

/// An order read from a fixtures directory.
#[derive(Debug, Clone)]
pub struct StoredOrder {
    pub platform: Platform,
    pub api: Api,
    pub id: String,
    pub body: Bytes,
}

/// Every `<dir>/<provider>/fetched/<name>.json` (not `.headers.json` nor
/// `.expected.json`) for ubereats and wolt, by file name. The order id is
/// read from the body (Uber V2 and Wolt: `id`; Uber V1: `id` or
/// `order.id`); the API from `Orderhub-Fetched-Api` in `<name>.headers.json`
/// when there is one, else V2. A provider without a `fetched` directory
/// has no orders.
pub fn read_orders(dir: &Path) -> anyhow::Result<Vec<StoredOrder>> {
    let mut out = Vec::new();
    for platform in [Platform::Ubereats, Platform::Wolt] {
        let fetched = dir.join(platform.as_str()).join("fetched");
        if !fetched.is_dir() {
            continue;
        }
        let mut files: Vec<_> = std::fs::read_dir(&fetched)
            .with_context(|| format!("read {}", fetched.display()))?
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .map(|e| e.path())
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                name.ends_with(".json")
                    && !name.ends_with(".headers.json")
                    && !name.ends_with(".expected.json")
            })
            .collect();
        files.sort();
        for file in files {
            out.push(read_order(platform, &file)?);
        }
    }
    Ok(out)
}

fn read_order(platform: Platform, file: &Path) -> anyhow::Result<StoredOrder> {
    let body = std::fs::read(file).with_context(|| format!("read {}", file.display()))?;
    let headers = file.with_extension("headers.json");
    let api = if headers.exists() {
        let h: HashMap<String, Value> = serde_json::from_slice(&std::fs::read(&headers)?)
            .with_context(|| format!("{} is not a JSON object", headers.display()))?;
        match h.get(shared::headers::FETCHED_API) {
            None => Api::V2,
            Some(Value::String(v)) => v
                .parse()
                .map_err(|e| anyhow::anyhow!("{}: {e}", headers.display()))?,
            Some(other) => bail!(
                "{}: {} is {other}, not \"v1\" or \"v2\"",
                headers.display(),
                shared::headers::FETCHED_API
            ),
        }
    } else {
        Api::V2
    };
    let v: Value =
        serde_json::from_slice(&body).with_context(|| format!("{} is not JSON", file.display()))?;
    let id = match (platform, api) {
        (Platform::Ubereats, Api::V1) => v.get("id").or_else(|| v.pointer("/order/id")),
        _ => v.get("id"),
    };
    let Some(Value::String(id)) = id else {
        bail!(
            "{}: no order id (a string at {})",
            file.display(),
            if (platform, api) == (Platform::Ubereats, Api::V1) {
                "id or order.id"
            } else {
                "id"
            }
        );
    };
    Ok(StoredOrder {
        platform,
        api,
        id: id.clone(),
        body: Bytes::from(body),
    })
}
