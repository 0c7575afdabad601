//! A fake Uber Eats and Wolt API, for tests and for `scripts/dev-up` (the
//! `fake-provider` binary): one loopback server plays both providers' token
//! endpoints and order GETs, with the traps of the real ones, scripted
//! faults, and counters a test asserts on. Point an account's `token_url`
//! and `base_url` at it.
//!
//! | Path | Plays |
//! |---|---|
//! | `POST /oauth/v2/token` | Uber client credentials: form `client_id`, `client_secret`, `grant_type=client_credentials`, `scope` (any other body → 400). Unknown client or wrong secret → 401 `invalid_client`. More mints than the hourly cap within any rolling hour → 429 `rate_limited` with `Retry-After`. A mint that makes more than the live-token limit live revokes the client's oldest live tokens. |
//! | `POST /oauth2/token` | Wolt: HTTP Basic client authentication (Bearer or none → 400 `invalid_request`, wrong client → 401 `invalid_client`); form `grant_type=refresh_token&refresh_token=` or `grant_type=authorization_code&code=`. Every success issues a new access token and a new refresh token; a refresh token is single-use, and presenting a used one revokes what was issued from it (and from its successors) and answers 400 `invalid_grant`. Authorization codes are single-use. |
//! | `GET /v2/eats/order/{id}`, `GET /v1/delivery/order/{id}` | Uber order V2, V1 (the query string is recorded) |
//! | `GET /orders/{id}`, `GET /v2/orders/{id}` | Wolt order V1, V2 |
//!
//! An order GET needs `Authorization: Bearer` with a live access token of
//! that provider (else 401 in the provider's error shape) and answers the
//! stored body byte for byte, or 404 in the provider's error shape.
//!
//! Not modelled: scopes (echoed, never checked); which venue a Wolt token
//! belongs to (any live Wolt token reads any Wolt order); Wolt's V2 media
//! type on `GET /orders/{id}`; refresh-token lifetimes; status calls
//! (accept, deny, ...), which answer 404 like any unknown path.
//!
//! Control over HTTP, for the binary: `POST /_fake/orders/{ubereats|wolt}/{v1|v2}/{id}`
//! (the body is the order), `POST /_fake/faults` (see [`parse_fault`]),
//! `POST /_fake/expire-tokens`, `GET /_fake/stats`. Control requests are
//! neither recorded nor faulted.

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
#[cfg(test)]
mod tests;

pub use http::parse_fault;
use state::State;

/// The providers the fake plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Platform {
    Ubereats,
    Wolt,
}

impl Platform {
    /// The name in `shared::Provider`'s spelling (`ubereats`, `wolt`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Platform::Ubereats => "ubereats",
            Platform::Wolt => "wolt",
        }
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
        match s {
            "ubereats" => Ok(Platform::Ubereats),
            "wolt" => Ok(Platform::Wolt),
            other => Err(format!(
                "provider {other:?} is not one the fake plays (ubereats, wolt)"
            )),
        }
    }
}

impl From<Platform> for shared::Provider {
    fn from(p: Platform) -> shared::Provider {
        match p {
            Platform::Ubereats => shared::Provider::Ubereats,
            Platform::Wolt => shared::Provider::Wolt,
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
}

impl Endpoint {
    /// The path of an order GET.
    pub fn order_path(platform: Platform, api: Api, id: &str) -> String {
        match (platform, api) {
            (Platform::Ubereats, Api::V2) => format!("/v2/eats/order/{id}"),
            (Platform::Ubereats, Api::V1) => format!("/v1/delivery/order/{id}"),
            (Platform::Wolt, Api::V1) => format!("/orders/{id}"),
            (Platform::Wolt, Api::V2) => format!("/v2/orders/{id}"),
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
    /// Any provider request whose path (without the query) starts so.
    PathPrefix(String),
}

impl Matcher {
    fn matches(&self, endpoint: Option<Endpoint>, path: &str) -> bool {
        match (self, endpoint) {
            (Matcher::Token(p), Some(Endpoint::Token(q))) => *p == q,
            (Matcher::Order(p), Some(Endpoint::Order(q, _))) => *p == q,
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
    /// The bearer token of an order request; never a token request's
    /// credentials.
    pub token: Option<String>,
    /// `None` for a path the fake does not play.
    pub endpoint: Option<Endpoint>,
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

    /// `http://127.0.0.1:<port>`: the base URL of both providers' APIs.
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
    pub fn put_order(&self, platform: Platform, api: Api, id: &str, body: impl AsRef<[u8]>) {
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

    /// Every live access token of both providers expires now (refresh
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

    /// Tokens issued for a provider (Uber mints; Wolt refreshes and code
    /// exchanges that succeeded).
    pub fn mints(&self, platform: Platform) -> usize {
        self.state().mints(platform)
    }

    /// Tokens issued for one client of a provider.
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
