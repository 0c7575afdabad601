//! The fake provider's HTTP side: which endpoint a request is, the checks a
//! real provider makes before it looks at the request (content type, client
//! authentication, bearer token), scripted faults, and the `/_fake/`
//! control routes the binary is driven through.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Value, json};
use warp::http::{HeaderMap, Method, Response};

use super::state::{Answer, State};
use super::{Api, Endpoint, FakeRequest, FaultReply, Matcher, Platform};

/// Which provider endpoint a path is, with the order id of an order GET.
pub(super) fn classify(path: &str) -> Option<(Endpoint, Option<String>)> {
    let segments: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
    let order =
        |p, api, id: &str| (!id.is_empty()).then(|| (Endpoint::Order(p, api), Some(id.to_owned())));
    match segments.as_slice() {
        ["oauth", "v2", "token"] => Some((Endpoint::Token(Platform::Ubereats), None)),
        ["oauth2", "token"] => Some((Endpoint::Token(Platform::Wolt), None)),
        ["v2", "eats", "order", id] => order(Platform::Ubereats, Api::V2, id),
        ["v1", "delivery", "order", id] => order(Platform::Ubereats, Api::V1, id),
        ["orders", id] => order(Platform::Wolt, Api::V1, id),
        ["v2", "orders", id] => order(Platform::Wolt, Api::V2, id),
        _ => None,
    }
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

    fn bearer(&self) -> Option<String> {
        let v = self.header("authorization")?;
        let (scheme, token) = v.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_owned())
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
    let endpoint = classify(&req.path);
    let fault = {
        let mut s = state.lock().unwrap();
        s.record(FakeRequest {
            at: now,
            method: req.method.to_string(),
            path: req.path.clone(),
            query: (!req.query.is_empty()).then(|| req.query.clone()),
            // The token endpoints' credentials are secrets: never recorded.
            token: match endpoint {
                Some((Endpoint::Order(..), _)) => req.bearer(),
                _ => None,
            },
            endpoint: endpoint.as_ref().map(|(e, _)| *e),
        });
        s.take_fault(endpoint.as_ref().map(|(e, _)| *e), &req.path)
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
    };
    if req.method != wanted {
        return json_response(
            405,
            json!({"error": format!("{} {} is not allowed", req.method, req.path)}),
        );
    }
    let mut s = state.lock().unwrap();
    match endpoint {
        Endpoint::Token(Platform::Ubereats) => answer(uber_token(&mut s, &req, now)),
        Endpoint::Token(Platform::Wolt) => answer(wolt_token(&mut s, &req, now)),
        Endpoint::Order(platform, api) => {
            let id = id.expect("order endpoints have an id");
            order(&s, platform, api, &id, &req, now)
        }
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
    let bad = |description: &str| Answer {
        status: 400,
        retry_after: None,
        body: Bytes::from(
            json!({"error": "invalid_request", "error_description": description}).to_string(),
        ),
    };
    let Some((scheme, credentials)) = req.header("authorization").and_then(|v| v.split_once(' '))
    else {
        return bad("client authentication must be HTTP Basic");
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return bad("client authentication must be HTTP Basic");
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(credentials.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok());
    let Some((client_id, secret)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
        return bad("the Basic credentials are not base64(client_id:client_secret)");
    };
    if !req.is_form() {
        return bad("the body must be application/x-www-form-urlencoded");
    }
    s.wolt_token(client_id, secret, &req.form(), now)
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
        return json_response(
            401,
            match platform {
                Platform::Ubereats => json!({
                    "code": "unauthorized",
                    "message": "Invalid OAuth 2.0 credentials provided.",
                }),
                Platform::Wolt => json!({
                    "error_code": "UNAUTHORIZED",
                    "reason": "the access token is missing, unknown, expired or revoked",
                }),
            },
        );
    }
    match s.order(platform, api, id) {
        Some(body) => Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(body)
            .expect("a valid fake response"),
        None => json_response(
            404,
            match platform {
                Platform::Ubereats => json!({
                    "code": "resource_not_found",
                    "message": format!("order {id} not found"),
                }),
                Platform::Wolt => json!({
                    "error_code": "NOT_FOUND",
                    "reason": format!("order {id} not found"),
                }),
            },
        ),
    }
}

/// `/_fake/...`: orders, faults, expiry and stats over HTTP.
fn control(state: &Mutex<State>, rest: &str, req: &Incoming) -> Response<Bytes> {
    let segments: Vec<&str> = rest.split('/').collect();
    let result = match (&req.method, segments.as_slice()) {
        (&Method::POST, ["orders", platform, api, id]) if !id.is_empty() => {
            platform.parse::<Platform>().and_then(|p| {
                let api = api.parse::<Api>()?;
                state
                    .lock()
                    .unwrap()
                    .put_order(p, api, id, req.body.clone());
                Ok(None)
            })
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
/// `"endpoint": "token" | "order"`, or `"path_prefix"`) and the reply
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
                "token" => Matcher::Token(p),
                "order" => Matcher::Order(p),
                other => return Err(format!("endpoint {other:?} is not token or order")),
            }
        }
        _ => {
            return Err(
                "name either path_prefix, or provider and endpoint (token or order)".to_owned(),
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
