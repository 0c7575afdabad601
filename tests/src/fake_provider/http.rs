//! The fake provider's HTTP side: which endpoint a request is, the checks a
//! real provider makes before it looks at the request (content type, client
//! authentication, bearer token or API key), scripted faults, and the
//! `/_fake/` control routes the binary is driven through.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Value, json};
use warp::http::{HeaderMap, Method, Response};

use super::state::{Answer, State};
use super::status::{self, Refusal, StatusEndpoint};
use super::{Api, Endpoint, FakeRequest, FaultReply, Matcher, Platform, StatusCall};

/// Which provider endpoint a path is, with the order id of an order GET
/// (as received) or of a status request (percent-decoded; `None` for
/// Grab's and Keeta's, whose id is in the body). `je_api_key`:
/// the request's `Authorization` scheme is `JE-API-KEY`, which tells Just
/// Eat's `/orders/{id}/accept` and `/reject` from Wolt's.
pub(super) fn classify(path: &str, je_api_key: bool) -> Option<(Endpoint, Option<String>)> {
    let segments: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
    let order =
        |p, api, id: &str| (!id.is_empty()).then(|| (Endpoint::Order(p, api), Some(id.to_owned())));
    match segments.as_slice() {
        ["oauth", "v2", "token"] => Some((Endpoint::Token(Platform::Ubereats), None)),
        ["oauth2", "token"] => Some((Endpoint::Token(Platform::Wolt), None)),
        ["v2", "login"] => Some((Endpoint::Token(Platform::Talabat), None)),
        ["deliveroo", "oauth2", "token"] => Some((Endpoint::Token(Platform::Deliveroo), None)),
        ["grabid", "v1", "oauth2", "token"] => Some((Endpoint::Token(Platform::Grab), None)),
        ["v2", "eats", "order", id] => order(Platform::Ubereats, Api::V2, id),
        ["v1", "delivery", "order", id] => order(Platform::Ubereats, Api::V1, id),
        ["orders", id] => order(Platform::Wolt, Api::V1, id),
        ["v2", "orders", id] => order(Platform::Wolt, Api::V2, id),
        _ => status::classify(&segments, je_api_key)
            .map(|(e, id)| (Endpoint::Status(e), id.map(percent_decode))),
    }
}

/// `%XX` escapes decoded (anything else as it is; invalid UTF-8 replaced).
fn percent_decode(segment: &str) -> String {
    let b = segment.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One incoming request, as warp hands it over.
pub(super) struct Incoming {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Incoming {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `Authorization` credentials of `scheme`.
    fn credentials(&self, scheme: &str) -> Option<String> {
        let v = self.header("authorization")?;
        let (given, credentials) = v.split_once(' ')?;
        given
            .eq_ignore_ascii_case(scheme)
            .then(|| credentials.trim().to_owned())
    }

    fn bearer(&self) -> Option<String> {
        self.credentials("bearer")
    }

    /// HTTP Basic client authentication: `(client_id, secret)`.
    fn basic(&self) -> Result<(String, String), &'static str> {
        let credentials = self
            .credentials("basic")
            .ok_or("client authentication must be HTTP Basic")?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(credentials)
            .ok()
            .and_then(|b| String::from_utf8(b).ok());
        let Some((id, secret)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
            return Err("the Basic credentials are not base64(client_id:client_secret)");
        };
        Ok((id.to_owned(), secret.to_owned()))
    }

    fn is_json(&self) -> bool {
        self.header("content-type").is_some_and(|ct| {
            ct.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        })
    }

    fn is_form(&self) -> bool {
        self.header("content-type").is_some_and(|ct| {
            ct.split(';')
                .next()
                .is_some_and(|m| m.trim() == "application/x-www-form-urlencoded")
        })
    }

    fn form(&self) -> HashMap<String, String> {
        url::form_urlencoded::parse(&self.body)
            .into_owned()
            .collect()
    }
}

fn respond(status: u16, retry_after: Option<&str>, body: Bytes) -> Response<Bytes> {
    let mut r = Response::builder().status(status);
    if !body.is_empty() {
        r = r.header("content-type", "application/json");
    }
    if let Some(v) = retry_after {
        r = r.header("retry-after", v);
    }
    r.body(body).expect("a valid fake response")
}

fn answer(a: Answer) -> Response<Bytes> {
    respond(a.status, a.retry_after.as_deref(), a.body)
}

fn json_response(status: u16, body: Value) -> Response<Bytes> {
    respond(status, None, Bytes::from(body.to_string()))
}

/// Serves one request: a control route, or a provider endpoint.
pub(super) async fn handle(state: Arc<Mutex<State>>, req: Incoming) -> Response<Bytes> {
    if let Some(rest) = req.path.strip_prefix("/_fake/") {
        return control(&state, rest, &req);
    }
    let now = Instant::now();
    let je_api_key = req.credentials("je-api-key").is_some();
    let endpoint = classify(&req.path, je_api_key);
    let fault = {
        let mut s = state.lock().unwrap();
        s.record(FakeRequest {
            at: now,
            method: req.method.to_string(),
            path: req.path.clone(),
            query: (!req.query.is_empty()).then(|| req.query.clone()),
            // The token endpoints' credentials are secrets: never recorded.
            token: match endpoint {
                Some((Endpoint::Order(..) | Endpoint::Status(_), _)) => req.bearer(),
                _ => None,
            },
            endpoint: endpoint.as_ref().map(|(e, _)| *e),
        });
        let fault = s.take_fault(endpoint.as_ref().map(|(e, _)| *e), &req.path);
        if let (Some(f), Some((Endpoint::Status(e), id))) = (&fault, &endpoint) {
            let answered = if f.hang { 0 } else { f.status };
            let id = order_id(*e, id.as_deref(), &req);
            s.record_status(status_call(*e, &id, &req, answered));
        }
        fault
    };
    if let Some(fault) = fault {
        return faulted(fault).await;
    }
    let Some((endpoint, id)) = endpoint else {
        return json_response(
            404,
            json!({"error": format!("the fake provider has no endpoint {}", req.path)}),
        );
    };
    let wanted = match endpoint {
        Endpoint::Token(_) => Method::POST,
        Endpoint::Order(..) => Method::GET,
        Endpoint::Status(e) => Method::from_bytes(e.method().as_bytes()).expect("a method"),
    };
    let mut s = state.lock().unwrap();
    if req.method != wanted {
        let refused = json_response(
            405,
            json!({"error": format!("{} {} is not allowed", req.method, req.path)}),
        );
        if let Endpoint::Status(e) = endpoint {
            let id = order_id(e, id.as_deref(), &req);
            s.record_status(status_call(e, &id, &req, 405));
        }
        return refused;
    }
    match endpoint {
        Endpoint::Token(Platform::Ubereats) => answer(uber_token(&mut s, &req, now)),
        Endpoint::Token(Platform::Wolt) => answer(wolt_token(&mut s, &req, now)),
        Endpoint::Token(Platform::Talabat) => answer(talabat_token(&mut s, &req, now)),
        Endpoint::Token(Platform::Deliveroo) => answer(deliveroo_token(&mut s, &req, now)),
        Endpoint::Token(Platform::Grab) => answer(grab_token(&mut s, &req, now)),
        Endpoint::Token(
            p @ (Platform::Justeat | Platform::Doordash | Platform::Glovo | Platform::Keeta),
        ) => unreachable!("no path is {p}'s token endpoint"),
        Endpoint::Order(platform, api) => {
            let id = id.expect("order endpoints have an id");
            order(&s, platform, api, &id, &req, now)
        }
        Endpoint::Status(e) => {
            let id = order_id(e, id.as_deref(), &req);
            let a = status_request(&mut s, e, &id, &req, now);
            s.record_status(status_call(e, &id, &req, a.status));
            answer(a)
        }
    }
}

/// A status request's order id: from the path, or Grab's and Keeta's
/// body.
fn order_id(e: StatusEndpoint, from_path: Option<&str>, req: &Incoming) -> String {
    match from_path {
        Some(id) => id.to_owned(),
        None => status::body_order_id(e, &req.body),
    }
}

/// The headers besides auth a status call is recorded with.
const EXTRA_HEADERS: [&str; 2] = ["auth-version", "glovo-store-address-external-id"];

/// The record of a status request answered `answered`.
fn status_call(e: StatusEndpoint, id: &str, req: &Incoming, answered: u16) -> StatusCall {
    let auth = if e.flyt_key() {
        req.header("x-flyt-api-key")
    } else {
        req.header("authorization")
    };
    let extra_headers = EXTRA_HEADERS
        .iter()
        .filter_map(|name| Some(((*name).to_owned(), req.header(name)?.to_owned())))
        .collect();
    StatusCall {
        provider: e.platform().as_str(),
        endpoint: e,
        order_id: id.to_owned(),
        method: req.method.to_string(),
        path: req.path.clone(),
        auth: auth.map(str::to_owned),
        extra_headers,
        body: (!req.body.is_empty()).then(|| {
            serde_json::from_slice(&req.body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&req.body).into_owned()))
        }),
        answered,
    }
}

/// A status request the fake plays: authentication, then the body, then
/// what the order's state allows.
fn status_request(
    s: &mut State,
    e: StatusEndpoint,
    id: &str,
    req: &Incoming,
    now: Instant,
) -> Answer {
    let platform = e.platform();
    let authorized = match platform {
        Platform::Justeat if e.flyt_key() => req
            .header("x-flyt-api-key")
            .is_some_and(|k| s.justeat_key(k)),
        Platform::Justeat => req
            .credentials("je-api-key")
            .is_some_and(|k| s.justeat_key(&k)),
        // A JWT of a registered developer and key, with auth-version v2.
        Platform::Doordash => {
            req.header("auth-version") == Some("v2")
                && req.bearer().is_some_and(|jwt| s.doordash_jwt(&jwt))
        }
        // The partner token itself, no scheme.
        Platform::Glovo => req
            .header("authorization")
            .is_some_and(|t| s.glovo_token(t)),
        // The signature over the URL the request came to and every body
        // parameter, and the app's access token.
        Platform::Keeta => {
            let url = format!("http://{}{}", req.header("host").unwrap_or(""), req.path);
            s.keeta_signed(&url, &req.body)
        }
        _ => req
            .bearer()
            .is_some_and(|t| s.authorized(platform, &t, now)),
    };
    if !authorized {
        let message = match platform {
            Platform::Ubereats => "Invalid OAuth 2.0 credentials provided.",
            Platform::Justeat if e.flyt_key() => "the X-Flyt-Api-Key is missing or unknown",
            Platform::Justeat => "the JE-API-KEY is missing or unknown",
            Platform::Doordash => {
                "the JWT is missing, not DoorDash's, expired or not signed by a known key, or auth-version is not v2"
            }
            Platform::Glovo => "the partner token is missing or unknown",
            Platform::Keeta => "sig, appId or accessToken invalid",
            _ => "the access token is missing, unknown, expired or revoked",
        };
        return Answer::refused(platform, Refusal::Unauthorized, message);
    }
    if e.glovo_store_header()
        && req
            .header("glovo-store-address-external-id")
            .is_none_or(|v| v.trim().is_empty())
    {
        return Answer::refused(
            platform,
            Refusal::BadRequest,
            "missing header Glovo-Store-Address-External-Id",
        );
    }
    let bad = |message: &str| Answer::refused(platform, Refusal::BadRequest, message);
    let body = if req.body.is_empty() {
        None
    } else if !req.is_json() {
        return bad("the body must be application/json");
    } else {
        match serde_json::from_slice::<Value>(&req.body) {
            Ok(v) => Some(v),
            Err(e) => return bad(&format!("the body is not JSON: {e}")),
        }
    };
    match status::validate(e, body.as_ref()) {
        Ok(effect) => s.status(e, id, effect),
        Err(message) => bad(&message),
    }
}

async fn faulted(fault: FaultReply) -> Response<Bytes> {
    // A hanging answer never comes: the client's timeout ends the request,
    // or the fake going down cuts the connection.
    if fault.hang {
        std::future::pending::<()>().await;
    }
    tokio::time::sleep(fault.delay).await;
    respond(
        fault.status,
        fault.retry_after.as_deref(),
        Bytes::from(fault.body),
    )
}

fn uber_token(s: &mut State, req: &Incoming, now: Instant) -> Answer {
    if !req.is_form() {
        return Answer {
            status: 400,
            retry_after: None,
            body: Bytes::from(
                json!({
                    "error": "invalid_request",
                    "error_description": "the body must be application/x-www-form-urlencoded",
                })
                .to_string(),
            ),
        };
    }
    s.uber_mint(&req.form(), now)
}

fn wolt_token(s: &mut State, req: &Incoming, now: Instant) -> Answer {
    let bad = |description: &str| Answer::oauth(400, "invalid_request", description);
    let (client_id, secret) = match req.basic() {
        Ok(credentials) => credentials,
        Err(e) => return bad(e),
    };
    if !req.is_form() {
        return bad("the body must be application/x-www-form-urlencoded");
    }
    s.wolt_token(&client_id, &secret, &req.form(), now)
}

fn talabat_token(s: &mut State, req: &Incoming, now: Instant) -> Answer {
    if !req.is_form() {
        return Answer::refused(
            Platform::Talabat,
            Refusal::BadRequest,
            "the body must be application/x-www-form-urlencoded",
        );
    }
    s.talabat_login(&req.form(), now)
}

/// Grab: client credentials in a JSON body [SDK].
fn grab_token(s: &mut State, req: &Incoming, now: Instant) -> Answer {
    let body = req
        .is_json()
        .then(|| serde_json::from_slice::<Value>(&req.body).ok())
        .flatten();
    match body {
        Some(body) => s.grab_mint(&body, now),
        None => Answer::oauth(
            400,
            "invalid_request",
            "the body must be an application/json object",
        ),
    }
}

/// Deliveroo: a client that does not authenticate with HTTP Basic is
/// refused as an unknown one (401 `invalid_client`, RFC 6749 §5.2).
fn deliveroo_token(s: &mut State, req: &Incoming, now: Instant) -> Answer {
    let (client_id, secret) = match req.basic() {
        Ok(credentials) => credentials,
        Err(e) => return Answer::oauth(401, "invalid_client", e),
    };
    if !req.is_form() {
        return Answer::oauth(
            400,
            "invalid_request",
            "the body must be application/x-www-form-urlencoded",
        );
    }
    s.deliveroo_token(&client_id, &secret, &req.form(), now)
}

fn order(
    s: &State,
    platform: Platform,
    api: Api,
    id: &str,
    req: &Incoming,
    now: Instant,
) -> Response<Bytes> {
    let authorized = req
        .bearer()
        .is_some_and(|t| s.authorized(platform, &t, now));
    if !authorized {
        let message = match platform {
            Platform::Ubereats => "Invalid OAuth 2.0 credentials provided.",
            _ => "the access token is missing, unknown, expired or revoked",
        };
        return answer(Answer::refused(platform, Refusal::Unauthorized, message));
    }
    match s.order(platform, api, id) {
        Some(body) => Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(body)
            .expect("a valid fake response"),
        None => answer(Answer::refused(
            platform,
            Refusal::NotFound,
            &format!("order {id} not found"),
        )),
    }
}

/// The string fields of a control request's JSON object body.
fn control_fields<const N: usize>(body: &[u8], names: [&str; N]) -> Result<[String; N], String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let mut out = names.map(|_| String::new());
    for (name, slot) in names.iter().zip(out.iter_mut()) {
        match v.get(name) {
            Some(Value::String(s)) if !s.is_empty() => *slot = s.clone(),
            _ => return Err(format!("{name} must be a non-empty string")),
        }
    }
    Ok(out)
}

/// `/_fake/...`: orders, credentials, faults, expiry, stats and status
/// calls over HTTP.
fn control(state: &Mutex<State>, rest: &str, req: &Incoming) -> Response<Bytes> {
    let segments: Vec<&str> = rest.split('/').collect();
    let result = match (&req.method, segments.as_slice()) {
        (&Method::POST, ["orders", platform, api, id]) if !id.is_empty() => {
            platform.parse::<Platform>().and_then(|p| {
                let api = api.parse::<Api>()?;
                if !p.pulled() {
                    return Err(format!(
                        "{p} orders are pushed: the fake serves no order GET for them"
                    ));
                }
                state
                    .lock()
                    .unwrap()
                    .put_order(p, api, id, req.body.clone());
                Ok(None)
            })
        }
        (&Method::POST, ["talabat-users"]) => control_fields(&req.body, ["username", "password"])
            .map(|[user, password]| {
                state.lock().unwrap().add_talabat_user(&user, &password);
                None
            }),
        (&Method::POST, ["deliveroo-clients"]) => {
            control_fields(&req.body, ["client_id", "client_secret"]).map(|[id, secret]| {
                state.lock().unwrap().add_deliveroo_client(&id, &secret);
                None
            })
        }
        (&Method::POST, ["justeat-keys"]) => control_fields(&req.body, ["key"]).map(|[key]| {
            state.lock().unwrap().add_justeat_key(&key);
            None
        }),
        (&Method::POST, ["grab-clients"]) => {
            control_fields(&req.body, ["client_id", "client_secret"]).map(|[id, secret]| {
                state.lock().unwrap().add_grab_client(&id, &secret);
                None
            })
        }
        (&Method::POST, ["doordash-keys"]) => {
            control_fields(&req.body, ["developer_id", "key_id", "signing_secret"]).and_then(
                |[developer, key_id, secret]| {
                    state
                        .lock()
                        .unwrap()
                        .add_doordash_key(&developer, &key_id, &secret)
                        .map(|()| None)
                },
            )
        }
        (&Method::POST, ["glovo-tokens"]) => control_fields(&req.body, ["token"]).map(|[token]| {
            state.lock().unwrap().add_glovo_token(&token);
            None
        }),
        (&Method::POST, ["keeta-apps"]) => {
            control_fields(&req.body, ["app_id", "app_secret", "access_token"]).map(
                |[app, secret, token]| {
                    state.lock().unwrap().add_keeta_app(&app, &secret, &token);
                    None
                },
            )
        }
        (&Method::GET, ["status-calls"]) => {
            let order_id = url::form_urlencoded::parse(req.query.as_bytes())
                .find(|(k, _)| k == "order_id")
                .map(|(_, v)| v.into_owned());
            let s = state.lock().unwrap();
            let calls: Vec<Value> = s
                .status_calls()
                .iter()
                .filter(|c| order_id.as_ref().is_none_or(|id| &c.order_id == id))
                .map(StatusCall::to_json)
                .collect();
            Ok(Some(Value::Array(calls)))
        }
        (&Method::POST, ["faults"]) => parse_fault(&req.body).map(|(matcher, reply)| {
            state.lock().unwrap().add_fault(matcher, reply);
            None
        }),
        (&Method::POST, ["expire-tokens"]) => {
            state.lock().unwrap().expire_all(Instant::now());
            Ok(None)
        }
        (&Method::GET, ["stats"]) => Ok(Some(state.lock().unwrap().stats(Instant::now()))),
        _ => {
            return json_response(
                404,
                json!({"error": format!("no control route {} /_fake/{rest}", req.method)}),
            );
        }
    };
    match result {
        Ok(Some(body)) => json_response(200, body),
        Ok(None) => respond(204, None, Bytes::new()),
        Err(e) => json_response(400, json!({ "error": e })),
    }
}

/// A fault from `POST /_fake/faults`: a matcher (`"provider"` and
/// `"endpoint": "token" | "order" | "status"`, or `"path_prefix"`) and the reply
/// (`status`, `retry_after`, `body` (a string, or JSON sent as it is),
/// `times` (default 1), `delay_ms`, `hang`).
pub fn parse_fault(body: &[u8]) -> Result<(Matcher, FaultReply), String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("the fault is not JSON: {e}"))?;
    let obj = v.as_object().ok_or("the fault must be a JSON object")?;
    let text = |k: &str| -> Result<Option<String>, String> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(format!("{k} must be a string, not {other}")),
        }
    };
    let number = |k: &str| -> Result<Option<u64>, String> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(n) => n
                .as_u64()
                .map(Some)
                .ok_or_else(|| format!("{k} must be a non-negative integer, not {n}")),
        }
    };
    let matcher = match (text("path_prefix")?, text("provider")?, text("endpoint")?) {
        (Some(prefix), None, None) => Matcher::PathPrefix(prefix),
        (None, Some(p), Some(e)) => {
            let p = p.parse::<Platform>()?;
            match e.as_str() {
                "token" if p.mints() => Matcher::Token(p),
                "order" if p.pulled() => Matcher::Order(p),
                "status" => Matcher::Status(p),
                "token" | "order" => return Err(format!("{p} has no {e} endpoint")),
                other => {
                    return Err(format!("endpoint {other:?} is not token, order or status"));
                }
            }
        }
        _ => {
            return Err(
                "name either path_prefix, or provider and endpoint (token, order or status)"
                    .to_owned(),
            );
        }
    };
    let hang = match obj.get("hang") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(format!("hang must be true or false, not {other}")),
    };
    let status = match number("status")? {
        Some(s) if (100..=599).contains(&s) => s as u16,
        Some(s) => return Err(format!("status {s} is not an HTTP status")),
        None if hang => 504,
        None => return Err("missing status".to_owned()),
    };
    let times = match number("times")? {
        Some(0) => return Err("times must be at least 1".to_owned()),
        Some(n) => n as usize,
        None => 1,
    };
    let body = match obj.get("body") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(json) => json.to_string(),
    };
    Ok((
        matcher,
        FaultReply {
            status,
            retry_after: text("retry_after")?,
            body,
            times,
            delay: Duration::from_millis(number("delay_ms")?.unwrap_or(0)),
            hang,
        },
    ))
}
