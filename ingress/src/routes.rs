//! The HTTP surface (DESIGN §3.1): warp filters that extract a request into
//! an [`Incoming`], one function that turns the result into the provider's
//! expected answer, and one mapping of rejections to statuses.
//!
//! A body the ingress refuses (413, or any answer given before the body was
//! read) is read and thrown away first, up to a bound: a client that writes
//! its whole request before reading would otherwise see a reset or a broken
//! pipe instead of the answer (closing a socket with unread data sends a
//! TCP reset, which can destroy the answer on its way).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use shared::Provider;
use warp::http::{HeaderMap, Method, StatusCode};
use warp::{Filter, Reply};

use crate::net::Client;
use crate::pipeline::{Accepted, Incoming, Ingress, Rejection, Route};
use crate::status::{StatusApi, StatusIncoming, StatusRejection, Stored, percent_decode};
use crate::token::{TokenEndpoint, TokenRejection, TokenRequest};
use crate::verify::grab::IssuedToken;

/// The peer address of the connection, put on each request by the server.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// Every webhook route, as in `openapi.json` (a test checks both agree).
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/api/webhooks/{provider}"),
    ("POST", "/api/webhooks/{provider}/{account}"),
    ("POST", "/api/webhooks/talabat/{account}/order/{remoteId}"),
    (
        "PUT",
        "/api/webhooks/talabat/{account}/remoteId/{remoteId}/remoteOrder/{remoteOrderId}/posOrderStatus",
    ),
    ("POST", "/api/webhooks/justeat/{account}/{event}"),
    ("POST", crate::token::ROUTE),
    ("POST", crate::status::ROUTE),
];

/// What the routes extract before the body is read.
#[derive(Debug)]
struct Target {
    provider: Provider,
    account: Option<String>,
    route: Route,
}

fn provider() -> impl Filter<Extract = (Provider,), Error = warp::Rejection> + Clone {
    warp::path::param::<String>().and_then(|p: String| async move {
        p.parse::<Provider>().map_err(|_| warp::reject::not_found())
    })
}

fn fixed(expected: Provider) -> impl Filter<Extract = (), Error = warp::Rejection> + Clone {
    warp::path(expected.as_str())
}

/// Matches a webhook route and says which one. Methods are checked after
/// the path, so an unknown path is a 404 and only a known one a 405.
fn target() -> impl Filter<Extract = (Target,), Error = warp::Rejection> + Clone {
    let base = warp::path("api").and(warp::path("webhooks"));
    let default_account = provider()
        .and(warp::path::end())
        .and(warp::post())
        .map(|provider| Target {
            provider,
            account: None,
            route: Route::Generic,
        });
    let account = provider()
        .and(warp::path::param::<String>())
        .and(warp::path::end())
        .and(warp::post())
        .map(|provider, account| Target {
            provider,
            account: Some(account),
            route: Route::Generic,
        });
    let talabat_order = fixed(Provider::Talabat)
        .and(warp::path::param::<String>())
        .and(warp::path("order"))
        .and(warp::path::param::<String>())
        .and(warp::path::end())
        .and(warp::post())
        .map(|account, remote_id| Target {
            provider: Provider::Talabat,
            account: Some(account),
            route: Route::TalabatOrder { remote_id },
        });
    let talabat_status = fixed(Provider::Talabat)
        .and(warp::path::param::<String>())
        .and(warp::path("remoteId"))
        .and(warp::path::param::<String>())
        .and(warp::path("remoteOrder"))
        .and(warp::path::param::<String>())
        .and(warp::path("posOrderStatus"))
        .and(warp::path::end())
        .and(warp::put())
        .map(|account, remote_id, remote_order_id| Target {
            provider: Provider::Talabat,
            account: Some(account),
            route: Route::TalabatStatus {
                remote_id,
                remote_order_id,
            },
        });
    let justeat_event = fixed(Provider::Justeat)
        .and(warp::path::param::<String>())
        .and(warp::path::param::<String>())
        .and(warp::path::end())
        .and(warp::post())
        .map(|account, event| Target {
            provider: Provider::Justeat,
            account: Some(account),
            route: Route::JustEatEvent { event },
        });
    base.and(
        talabat_order
            .or(talabat_status)
            .unify()
            .or(justeat_event)
            .unify()
            .or(account)
            .unify()
            .or(default_account)
            .unify(),
    )
}

/// What the status route extracts before the body is read.
#[derive(Debug, PartialEq, Eq)]
struct StatusTarget {
    tenant: String,
    provider: Provider,
    provider_order_id: String,
}

/// A percent-decoded path segment; one that does not decode is no route.
fn decoded() -> impl Filter<Extract = (String,), Error = warp::Rejection> + Clone {
    warp::path::param::<String>()
        .and_then(|s: String| async move { percent_decode(&s).ok_or_else(warp::reject::not_found) })
}

/// Matches the status route ([`crate::status::ROUTE`]); an unknown
/// provider is a 404, as on the webhook routes.
fn status_target() -> impl Filter<Extract = (StatusTarget,), Error = warp::Rejection> + Clone {
    warp::path("api")
        .and(warp::path("tenants"))
        .and(decoded())
        .and(warp::path("orders"))
        .and(provider())
        .and(decoded())
        .and(warp::path("status"))
        .and(warp::path::end())
        .and(warp::post())
        .map(|tenant, provider, provider_order_id| StatusTarget {
            tenant,
            provider,
            provider_order_id,
        })
}

/// A refused body is read and thrown away up to this many times
/// `max_body_bytes` (within the body timeout) before the answer; a larger
/// one is not worth the bandwidth, and its client gets the connection
/// closed unread.
const DRAIN_FACTOR: u64 = 4;

/// Reads the body, refusing one over `max` bytes by its `Content-Length` or
/// as soon as it grows past `max` (chunked), and one that trickles in
/// slower than `timeout`. A body over `max` is not kept: unless `drain` is
/// false (the client waits for `100 Continue`, so has not sent it), up to
/// [`DRAIN_FACTOR`] × `max` of it is read and dropped before the 413.
async fn read_body<S, B>(
    declared: Option<u64>,
    drain: bool,
    stream: S,
    max: u64,
    timeout: Duration,
) -> Result<Bytes, Rejection>
where
    S: futures::Stream<Item = Result<B, warp::Error>> + Send,
    B: warp::Buf,
{
    enum Read {
        Whole(Bytes),
        /// Over the limit after this many bytes.
        Over(u64),
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let drain_cap = if drain {
        max.saturating_mul(DRAIN_FACTOR)
    } else {
        0
    };
    futures::pin_mut!(stream);
    if let Some(n) = declared.filter(|n| *n > max) {
        if n <= drain_cap {
            discard(stream, n, deadline).await;
        }
        return Err(Rejection::TooLarge { limit: max });
    }
    let read = async {
        let mut buf = BytesMut::with_capacity(declared.unwrap_or(4096).min(max) as usize);
        while let Some(chunk) = stream.next().await {
            let mut chunk = chunk.map_err(|_| Rejection::BodyTimeout)?;
            let total = (buf.len() + chunk.remaining()) as u64;
            if total > max {
                return Ok(Read::Over(total));
            }
            while chunk.has_remaining() {
                let part = chunk.chunk();
                let n = part.len();
                buf.extend_from_slice(part);
                chunk.advance(n);
            }
        }
        Ok(Read::Whole(buf.freeze()))
    };
    match tokio::time::timeout_at(deadline, read).await {
        Ok(Ok(Read::Whole(body))) => Ok(body),
        Ok(Ok(Read::Over(read))) => {
            discard(stream, drain_cap.saturating_sub(read), deadline).await;
            Err(Rejection::TooLarge { limit: max })
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(Rejection::BodyTimeout),
    }
}

/// Reads and drops up to `left` more bytes of a body, until it ends or
/// `deadline`. With `left` 0 the body is not touched (no `100 Continue`).
async fn discard<S, B>(mut stream: Pin<&mut S>, mut left: u64, deadline: tokio::time::Instant)
where
    S: futures::Stream<Item = Result<B, warp::Error>>,
    B: warp::Buf,
{
    if left == 0 {
        return;
    }
    let drain = async {
        while let Some(Ok(chunk)) = stream.next().await {
            let n = chunk.remaining() as u64;
            if n > left {
                return;
            }
            left -= n;
        }
    };
    let _ = tokio::time::timeout_at(deadline, drain).await;
}

/// Whether the client waits for `100 Continue` before sending its body.
fn expects_continue(headers: &HeaderMap) -> bool {
    headers
        .get(warp::http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// What every POST route does before its handler: the client's budget
/// (refused unread, draining what the client may already be writing so it
/// reads the 429), then the body within the size limit and the body
/// timeout. `Err` carries the client too, for the route's own accounting.
async fn guarded_body<S, B>(
    ingress: &Ingress,
    headers: &HeaderMap,
    peer: Option<Peer>,
    declared: Option<u64>,
    body: S,
    body_timeout: Duration,
) -> (Option<Client>, Result<Bytes, Rejection>)
where
    S: futures::Stream<Item = Result<B, warp::Error>> + Send,
    B: warp::Buf,
{
    let client = ingress.client_ip(peer.map(|p| p.0), headers);
    let max = ingress.max_body_bytes();
    let drain = !expects_continue(headers);
    if let Err(r) = ingress.check_client(client) {
        if drain && declared.is_none_or(|n| n <= max) {
            let deadline = tokio::time::Instant::now() + body_timeout;
            futures::pin_mut!(body);
            discard(body, declared.unwrap_or(max), deadline).await;
        }
        return (client, Err(r));
    }
    (
        client,
        read_body(declared, drain, body, max, body_timeout).await,
    )
}

/// The webhook routes with their handler.
pub fn webhooks(
    ingress: Arc<Ingress>,
    body_timeout: Duration,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection>
+ Clone
+ Send
+ Sync
+ 'static {
    target()
        .and(warp::header::optional::<u64>("content-length"))
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<Peer>())
        .and(warp::body::stream())
        .then(
            move |t: Target,
                  declared: Option<u64>,
                  headers: HeaderMap,
                  peer: Option<Peer>,
                  body| {
                let ingress = ingress.clone();
                async move {
                    let (client, body) =
                        guarded_body(&ingress, &headers, peer, declared, body, body_timeout).await;
                    let body = match body {
                        Ok(b) => b,
                        Err(r) => {
                            ingress.record_early(t.provider, client, &r);
                            return answer(t.provider, &t.route, Err(r), &Bytes::new());
                        }
                    };
                    let route = t.route.clone();
                    let result = ingress
                        .accept(Incoming {
                            provider: t.provider,
                            account: t.account,
                            route: t.route,
                            headers,
                            client,
                            body: body.clone(),
                        })
                        .await;
                    answer(t.provider, &route, result, &body)
                }
            },
        )
}

/// The backend's status API ([`crate::status`]), with the webhook routes'
/// client budget, body limit and body timeout.
pub fn status(
    api: Arc<StatusApi>,
    body_timeout: Duration,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection>
+ Clone
+ Send
+ Sync
+ 'static {
    status_target()
        .and(warp::header::optional::<u64>("content-length"))
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<Peer>())
        .and(warp::body::stream())
        .then(
            move |t: StatusTarget,
                  declared: Option<u64>,
                  headers: HeaderMap,
                  peer: Option<Peer>,
                  body| {
                let api = api.clone();
                async move {
                    let (client, body) =
                        guarded_body(api.ingress(), &headers, peer, declared, body, body_timeout)
                            .await;
                    let body = match body {
                        Ok(b) => b,
                        Err(r) => {
                            api.record_early(t.provider, client, &r);
                            return status_answer(Err(StatusRejection::Webhook(r)));
                        }
                    };
                    let result = api
                        .handle(StatusIncoming {
                            tenant: t.tenant,
                            provider: t.provider,
                            provider_order_id: t.provider_order_id,
                            headers,
                            client,
                            body,
                        })
                        .await;
                    status_answer(result)
                }
            },
        )
}

/// Matches [`crate::token::ROUTE`]: the account.
fn grab_token_target() -> impl Filter<Extract = (String,), Error = warp::Rejection> + Clone {
    warp::path("api")
        .and(warp::path("webhooks"))
        .and(fixed(Provider::Grab))
        .and(warp::path::param::<String>())
        .and(warp::path("oauth"))
        .and(warp::path("token"))
        .and(warp::path::end())
        .and(warp::post())
}

/// Grab's token endpoint ([`crate::token`]), with the webhook routes'
/// client budget, body limit and body timeout.
pub fn grab_token(
    endpoint: Arc<TokenEndpoint>,
    body_timeout: Duration,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection>
+ Clone
+ Send
+ Sync
+ 'static {
    grab_token_target()
        .and(warp::header::optional::<u64>("content-length"))
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<Peer>())
        .and(warp::body::stream())
        .then(
            move |account: String,
                  declared: Option<u64>,
                  headers: HeaderMap,
                  peer: Option<Peer>,
                  body| {
                let endpoint = endpoint.clone();
                async move {
                    let (client, body) = guarded_body(
                        endpoint.ingress(),
                        &headers,
                        peer,
                        declared,
                        body,
                        body_timeout,
                    )
                    .await;
                    let body = match body {
                        Ok(b) => b,
                        Err(r) => {
                            endpoint.record_early(client, &r);
                            return token_answer(Err(TokenRejection::Webhook(r)));
                        }
                    };
                    token_answer(endpoint.handle(TokenRequest {
                        account,
                        headers,
                        client,
                        body,
                    }))
                }
            },
        )
}

/// The token endpoint's answer (RFC 6749 §5.1): the token as `Bearer` with
/// its lifetime in seconds.
#[derive(serde::Serialize)]
struct TokenAnswer<'a> {
    access_token: &'a str,
    token_type: &'static str,
    expires_in: u64,
}

/// 200 with the token, 400 with an RFC 6749 error code, and the webhook
/// routes' bodies (the one 401 among them) for everything else. A token
/// or an error about one is never cached (`Cache-Control: no-store`).
pub fn token_answer(result: Result<IssuedToken, TokenRejection>) -> warp::reply::Response {
    let mut resp = match &result {
        Ok(token) => json(
            StatusCode::OK,
            &TokenAnswer {
                access_token: &token.access_token,
                token_type: "Bearer",
                expires_in: token.expires_in.as_secs(),
            },
        ),
        Err(TokenRejection::Webhook(r)) => return reject(Provider::Grab, r),
        Err(r @ TokenRejection::InvalidRequest(_)) => {
            json(r.status(), &serde_json::json!({"error": "invalid_request"}))
        }
        Err(r @ TokenRejection::UnsupportedGrantType) => json(
            r.status(),
            &serde_json::json!({"error": "unsupported_grant_type"}),
        ),
    };
    let h = resp.headers_mut();
    h.insert(
        "cache-control",
        warp::http::HeaderValue::from_static("no-store"),
    );
    h.insert("pragma", warp::http::HeaderValue::from_static("no-cache"));
    resp
}

/// `{"statusId": ..., "status": "queued" | "duplicate"}`.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusAnswer<'a> {
    status_id: &'a str,
    status: &'static str,
}

/// The status API's answer: 202 / 200 with the status id, 400 with every
/// field error, 404 `unknown_order`, 422 `unsupported_action`, and the
/// webhook routes' bodies for 401, 408, 413, 429 and 503.
pub fn status_answer(result: Result<Stored, StatusRejection>) -> warp::reply::Response {
    match result {
        Ok(Stored::Queued { status_id }) => json(
            StatusCode::ACCEPTED,
            &StatusAnswer {
                status_id: &status_id,
                status: "queued",
            },
        ),
        Ok(Stored::Duplicate { status_id }) => json(
            StatusCode::OK,
            &StatusAnswer {
                status_id: &status_id,
                status: "duplicate",
            },
        ),
        Err(r) => {
            let status = r.status();
            match r {
                StatusRejection::Webhook(r) => rejection(status, &r),
                StatusRejection::Invalid(errors) => json(
                    status,
                    &serde_json::json!({"error": "invalid_request", "errors": errors}),
                ),
                StatusRejection::UnknownOrder => {
                    json(status, &serde_json::json!({"error": "unknown_order"}))
                }
                StatusRejection::Unsupported { provider, action } => json(
                    status,
                    &serde_json::json!({
                        "error": "unsupported_action",
                        "message": format!("{provider} has no call to {action} this order"),
                    }),
                ),
            }
        }
    }
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> warp::reply::Response {
    warp::reply::with_status(warp::reply::json(value), status).into_response()
}

/// `{"webhookId": ..., "status": ...}`: the generic answer.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct WebhookAnswer<'a> {
    webhook_id: Option<&'a str>,
    status: &'static str,
}

/// `{"remoteResponse": {"remoteOrderId": ...}}`: the Delivery Hero POS
/// middleware's answer.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct RemoteAnswer<'a> {
    remote_response: RemoteResponse<'a>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct RemoteResponse<'a> {
    remote_order_id: Option<&'a str>,
}

/// The id handed to the Delivery Hero POS middleware for a new order: the
/// order's own `code` (the platform's order code), which the middleware puts
/// into the status-update URL, so an update names its order the way the
/// order itself does (`provider_order_id`). Without a usable code, the
/// webhook id.
fn talabat_remote_order_id(body: &[u8], webhook_id: Option<String>) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Code {
        code: Option<String>,
    }
    serde_json::from_slice::<Code>(body)
        .ok()
        .and_then(|c| c.code)
        .filter(|c| {
            !c.is_empty()
                && c.len() <= 128
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_~".contains(&b))
        })
        .or(webhook_id)
}

/// `{"code": 0, "message": "Success"}`: the answer Keeta requires of a
/// webhook receiver \[DOC\]; anything else (a non-zero code, another
/// status) makes it retry.
#[derive(serde::Serialize)]
struct KeetaAnswer {
    code: u8,
    message: &'static str,
}

/// The answer the provider expects; `body` is the request's (for
/// provider-dictated answers that echo a field of it).
pub fn answer(
    provider: Provider,
    route: &Route,
    result: Result<Accepted, Rejection>,
    body: &[u8],
) -> warp::reply::Response {
    match result {
        Ok(accepted) => {
            let (status, webhook_id, label) = match accepted {
                Accepted::New { webhook_id } => {
                    (StatusCode::ACCEPTED, Some(webhook_id), "accepted")
                }
                Accepted::Duplicate { webhook_id } => (StatusCode::OK, webhook_id, "duplicate"),
            };
            fn remote(id: Option<&str>) -> RemoteAnswer<'_> {
                RemoteAnswer {
                    remote_response: RemoteResponse {
                        remote_order_id: id,
                    },
                }
            }
            if provider == Provider::Keeta {
                // Keeta dictates 200 and its body, for a new event and a
                // re-sent one alike.
                return json(
                    StatusCode::OK,
                    &KeetaAnswer {
                        code: 0,
                        message: "Success",
                    },
                );
            }
            match route {
                // The POS middleware keeps this id and sends it back in the
                // status-update URL, which ties updates to their order.
                Route::TalabatOrder { .. } => json(
                    status,
                    &remote(talabat_remote_order_id(body, webhook_id).as_deref()),
                ),
                Route::TalabatStatus {
                    remote_order_id, ..
                } => json(status, &remote(Some(remote_order_id))),
                Route::Generic | Route::JustEatEvent { .. } => json(
                    status,
                    &WebhookAnswer {
                        webhook_id: webhook_id.as_deref(),
                        status: label,
                    },
                ),
            }
        }
        Err(r) => reject(provider, &r),
    }
}

/// One body per status, never more specific than the status: the 401 is the
/// same for an unknown account, a bad signature and a missing header.
fn reject(provider: Provider, r: &Rejection) -> warp::reply::Response {
    rejection(provider_status(provider, r.status()), r)
}

/// A refusal's body and `Retry-After`, with `status`.
fn rejection(status: StatusCode, r: &Rejection) -> warp::reply::Response {
    let body = match r {
        Rejection::Unauthorized(_) => serde_json::json!({"error": "unauthorized"}),
        Rejection::Forbidden => serde_json::json!({"error": "forbidden"}),
        Rejection::TooLarge { limit } => {
            serde_json::json!({"error": "payload too large", "limit_bytes": limit})
        }
        Rejection::RateLimited { .. } => serde_json::json!({"error": "rate limited"}),
        Rejection::BodyTimeout => serde_json::json!({"error": "request body too slow"}),
        Rejection::Unavailable(_) => {
            serde_json::json!({"error": "unavailable: nothing was accepted, retry later"})
        }
    };
    let mut resp = json(status, &body);
    let retry_after = match r {
        Rejection::RateLimited { retry_after, .. } => {
            Some(retry_after.as_secs_f64().ceil().max(1.0) as u64)
        }
        Rejection::Unavailable(_) => Some(1),
        _ => None,
    };
    if let Some(secs) = retry_after {
        resp.headers_mut()
            .insert("retry-after", secs.to_string().parse().expect("digits"));
    }
    resp
}

/// Statuses a provider does not accept, replaced by the nearest it does.
/// The Delivery Hero POS middleware (Talabat) allows only 200, 201, 202,
/// 400, 401, 429, 450, 500 and 502, and retries 429 and 5xx.
pub fn provider_status(provider: Provider, status: StatusCode) -> StatusCode {
    match provider {
        Provider::Talabat => match status.as_u16() {
            403 => StatusCode::UNAUTHORIZED,
            408 | 413 => StatusCode::BAD_REQUEST,
            503 => StatusCode::BAD_GATEWAY,
            _ => status,
        },
        Provider::Careem
        | Provider::Deliveroo
        | Provider::Ubereats
        | Provider::Wolt
        | Provider::Justeat
        | Provider::Doordash
        | Provider::Glovo
        | Provider::Grab
        | Provider::Keeta
        | Provider::Direct => status,
    }
}

/// 404 and 405 as JSON; anything else warp rejects is a 400.
pub async fn recover(
    r: warp::Rejection,
) -> Result<warp::reply::Response, std::convert::Infallible> {
    let status = if r.is_not_found() {
        StatusCode::NOT_FOUND
    } else if r.find::<warp::reject::MethodNotAllowed>().is_some() {
        StatusCode::METHOD_NOT_ALLOWED
    } else {
        StatusCode::BAD_REQUEST
    };
    let text = status
        .canonical_reason()
        .unwrap_or("error")
        .to_ascii_lowercase();
    Ok(json(status, &serde_json::json!({"error": text})))
}

/// The method of a route template, for the OpenAPI check.
pub fn method_of(m: &str) -> Method {
    m.parse().expect("route methods are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn target_of(method: &str, path: &str) -> Option<Target> {
        warp::test::request()
            .method(method)
            .path(path)
            .filter(&target())
            .await
            .ok()
    }

    #[tokio::test]
    async fn routes_pick_the_provider_account_and_path_parameters() {
        let t = target_of("POST", "/api/webhooks/careem").await.unwrap();
        assert_eq!(
            (t.provider, t.account, t.route),
            (Provider::Careem, None, Route::Generic)
        );
        let t = target_of("POST", "/api/webhooks/careem/acme-careem")
            .await
            .unwrap();
        assert_eq!(t.account.as_deref(), Some("acme-careem"));
        let t = target_of("POST", "/api/webhooks/talabat/acme-talabat/order/vendor-9")
            .await
            .unwrap();
        assert_eq!(
            t.route,
            Route::TalabatOrder {
                remote_id: "vendor-9".into()
            }
        );
        let t = target_of(
            "PUT",
            "/api/webhooks/talabat/acme-talabat/remoteId/vendor-9/remoteOrder/0193/posOrderStatus",
        )
        .await
        .unwrap();
        assert_eq!(
            t.route,
            Route::TalabatStatus {
                remote_id: "vendor-9".into(),
                remote_order_id: "0193".into()
            }
        );
        let t = target_of("POST", "/api/webhooks/justeat/acme-justeat/order-cancelled")
            .await
            .unwrap();
        assert_eq!(
            t.route,
            Route::JustEatEvent {
                event: "order-cancelled".into()
            }
        );
        let grab = |method: &'static str, path: &'static str| async move {
            warp::test::request()
                .method(method)
                .path(path)
                .filter(&grab_token_target())
                .await
                .ok()
        };
        assert_eq!(
            grab("POST", "/api/webhooks/grab/acme-grab/oauth/token").await,
            Some("acme-grab".to_owned())
        );
        for (method, path) in [
            ("GET", "/api/webhooks/grab/acme-grab/oauth/token"),
            ("POST", "/api/webhooks/glovo/acme-glovo/oauth/token"),
            ("POST", "/api/webhooks/grab/acme-grab/oauth/token/x"),
            ("POST", "/api/webhooks/grab/oauth/token"),
        ] {
            assert_eq!(grab(method, path).await, None, "{method} {path}");
        }
        // The token path is not a webhook route.
        assert!(
            target_of("POST", "/api/webhooks/grab/acme-grab/oauth/token")
                .await
                .is_none()
        );
        assert!(
            target_of("POST", "/api/webhooks/glovo/acme-glovo/order-cancelled")
                .await
                .is_none(),
            "glovo has no event segment"
        );
        // Unknown provider, wrong method, too deep: no route.
        assert!(target_of("POST", "/api/webhooks/foodora/x").await.is_none());
        assert!(target_of("GET", "/api/webhooks/careem/x").await.is_none());
        assert!(
            target_of("POST", "/api/webhooks/careem/x/y")
                .await
                .is_none()
        );
        assert!(
            target_of("PUT", "/api/webhooks/talabat/a/order/r")
                .await
                .is_none()
        );
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_refused_before_or_while_reading() {
        let chunks = |n: usize| {
            futures::stream::iter(
                (0..n).map(|_| Ok::<_, warp::Error>(Bytes::from_static(&[b'x'; 100]))),
            )
        };
        let t = Duration::from_secs(1);
        assert_eq!(
            read_body(Some(1001), true, chunks(0), 1000, t).await,
            Err(Rejection::TooLarge { limit: 1000 })
        );
        assert_eq!(
            read_body(None, true, chunks(11), 1000, t).await,
            Err(Rejection::TooLarge { limit: 1000 })
        );
        assert_eq!(
            read_body(None, true, chunks(10), 1000, t)
                .await
                .unwrap()
                .len(),
            1000
        );
        let slow = futures::stream::once(async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<_, warp::Error>(Bytes::from_static(b"x"))
        });
        assert_eq!(
            read_body(None, true, slow, 1000, Duration::from_millis(50)).await,
            Err(Rejection::BodyTimeout)
        );
    }

    #[tokio::test]
    async fn refused_bodies_are_drained_up_to_a_bound() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        // Counts the 100-byte chunks the reader took.
        let taken = Arc::new(AtomicUsize::new(0));
        let chunks = |n: usize| {
            let taken = taken.clone();
            taken.store(0, Ordering::Relaxed);
            futures::stream::iter((0..n).map(move |_| {
                taken.fetch_add(1, Ordering::Relaxed);
                Ok::<_, warp::Error>(Bytes::from_static(&[b'x'; 100]))
            }))
        };
        let t = Duration::from_secs(1);
        let too_large = Err(Rejection::TooLarge { limit: 1000 });
        // Declared 2000 of a 1000 limit: all of it read, then the 413.
        assert_eq!(
            read_body(Some(2000), true, chunks(20), 1000, t).await,
            too_large
        );
        assert_eq!(taken.load(Ordering::Relaxed), 20);
        // Declared over 4 × the limit: not worth reading.
        assert_eq!(
            read_body(Some(4100), true, chunks(41), 1000, t).await,
            too_large
        );
        assert_eq!(taken.load(Ordering::Relaxed), 0);
        // The client waits for 100 Continue: nothing read.
        assert_eq!(
            read_body(Some(2000), false, chunks(20), 1000, t).await,
            too_large
        );
        assert_eq!(taken.load(Ordering::Relaxed), 0);
        // Chunked: read to its end when that is within 4 × the limit...
        assert_eq!(read_body(None, true, chunks(35), 1000, t).await, too_large);
        assert_eq!(taken.load(Ordering::Relaxed), 35);
        // ...and no further than that otherwise.
        assert_eq!(read_body(None, true, chunks(100), 1000, t).await, too_large);
        assert_eq!(taken.load(Ordering::Relaxed), 41);
    }

    #[test]
    fn talabat_remote_order_ids_are_the_order_code_when_usable() {
        let id = Some("wh-1".to_owned());
        assert_eq!(
            talabat_remote_order_id(br#"{"code":"KW-1a_b"}"#, id.clone()).as_deref(),
            Some("KW-1a_b")
        );
        assert_eq!(
            talabat_remote_order_id(br#"{"code":"a/b"}"#, id.clone()).as_deref(),
            Some("wh-1")
        );
        assert_eq!(
            talabat_remote_order_id(br#"{"code":""}"#, id.clone()).as_deref(),
            Some("wh-1")
        );
        assert_eq!(
            talabat_remote_order_id(b"not json", id).as_deref(),
            Some("wh-1")
        );
    }

    #[test]
    fn talabat_gets_only_the_statuses_it_accepts() {
        let allowed = [200, 201, 202, 400, 401, 429, 450, 500, 502];
        for s in [401, 403, 408, 413, 429, 503] {
            let got = provider_status(Provider::Talabat, StatusCode::from_u16(s).unwrap());
            assert!(allowed.contains(&got.as_u16()), "{s} -> {got}");
        }
        assert_eq!(
            provider_status(Provider::Careem, StatusCode::PAYLOAD_TOO_LARGE),
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }

    #[tokio::test]
    async fn rejections_carry_retry_after_where_a_retry_helps() {
        let r = reject(
            Provider::Careem,
            &Rejection::RateLimited {
                retry_after: Duration::from_millis(1500),
                limit: "account",
            },
        );
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "2");
        let r = reject(Provider::Talabat, &Rejection::Unavailable("x".into()));
        assert_eq!(r.status(), 502);
        assert_eq!(r.headers()["retry-after"], "1");
        let body = warp::hyper::body::Bytes::from(
            http_body_util_collect(reject(
                Provider::Careem,
                &Rejection::Unauthorized("bad_signature"),
            ))
            .await,
        );
        assert_eq!(body.as_ref(), br#"{"error":"unauthorized"}"#);
    }

    #[tokio::test]
    async fn the_status_route_decodes_its_segments_and_knows_its_providers() {
        let target = |method: &'static str, path: &'static str| async move {
            warp::test::request()
                .method(method)
                .path(path)
                .filter(&status_target())
                .await
                .ok()
        };
        assert_eq!(
            target(
                "POST",
                "/api/tenants/%D9%85%D8%B7%D8%B9%D9%85/orders/deliveroo/gb%3A5f1c%2Fx%20y/status"
            )
            .await,
            Some(StatusTarget {
                tenant: "مطعم".into(),
                provider: Provider::Deliveroo,
                provider_order_id: "gb:5f1c/x y".into(),
            })
        );
        for (method, path) in [
            ("POST", "/api/tenants/acme/orders/foodora/o1/status"),
            ("GET", "/api/tenants/acme/orders/wolt/o1/status"),
            ("POST", "/api/tenants/acme/orders/wolt/o1/status/x"),
            ("POST", "/api/tenants/acme/orders/wolt/%FF/status"),
            ("POST", "/api/tenants/acme/orders/wolt/status"),
        ] {
            assert_eq!(target(method, path).await, None, "{method} {path}");
        }
    }

    #[tokio::test]
    async fn status_answers_have_their_documented_bodies() {
        use canonical::status::{Action, FieldError};
        let answer = |r| async move {
            let resp = status_answer(r);
            let status = resp.status().as_u16();
            let retry = resp
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            let body = String::from_utf8(http_body_util_collect(resp).await).unwrap();
            (status, body, retry)
        };
        assert_eq!(
            answer(Ok(Stored::Queued {
                status_id: "s1".into()
            }))
            .await,
            (202, r#"{"statusId":"s1","status":"queued"}"#.into(), None)
        );
        assert_eq!(
            answer(Ok(Stored::Duplicate {
                status_id: "s1".into()
            }))
            .await,
            (
                200,
                r#"{"statusId":"s1","status":"duplicate"}"#.into(),
                None
            )
        );
        let errors =
            canonical::status::StatusRequest::parse(br#"{"action":"reject","x":1}"#).unwrap_err();
        assert_eq!(
            errors,
            vec![
                FieldError {
                    field: "x".into(),
                    message: "is not a field of a status request (action, reason, ready_at, unavailable_items)".into()
                },
                FieldError {
                    field: "reason".into(),
                    message: "is required to reject".into()
                }
            ]
        );
        assert_eq!(
            answer(Err(StatusRejection::Invalid(errors))).await,
            (
                400,
                r#"{"error":"invalid_request","errors":[{"field":"x","message":"is not a field of a status request (action, reason, ready_at, unavailable_items)"},{"field":"reason","message":"is required to reject"}]}"#.into(),
                None
            )
        );
        assert_eq!(
            answer(Err(StatusRejection::UnknownOrder)).await,
            (404, r#"{"error":"unknown_order"}"#.into(), None)
        );
        assert_eq!(
            answer(Err(StatusRejection::Unsupported {
                provider: Provider::Careem,
                action: Action::Accept
            }))
            .await,
            (
                422,
                r#"{"error":"unsupported_action","message":"careem has no call to accept this order"}"#.into(),
                None
            )
        );
        // Every 401 is the webhook routes' one body, whatever the reason.
        for reason in [
            "unknown_tenant",
            "bad_signature",
            "stale_timestamp",
            "missing_header",
        ] {
            assert_eq!(
                answer(Err(StatusRejection::Webhook(Rejection::Unauthorized(
                    reason
                ))))
                .await,
                (401, r#"{"error":"unauthorized"}"#.into(), None)
            );
        }
        let (status, _, retry) = answer(Err(StatusRejection::Webhook(Rejection::Unavailable(
            "x".into(),
        ))))
        .await;
        assert_eq!((status, retry.as_deref()), (503, Some("1")));
    }

    async fn parts(resp: warp::reply::Response) -> (u16, String, Option<String>) {
        let status = resp.status().as_u16();
        let cache = resp
            .headers()
            .get("cache-control")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = String::from_utf8(http_body_util_collect(resp).await).unwrap();
        (status, body, cache)
    }

    #[tokio::test]
    async fn keeta_gets_its_dictated_answer_and_failures_keep_their_status() {
        let body = br#"{"messageId":"m1"}"#;
        for accepted in [
            Accepted::New {
                webhook_id: "w1".into(),
            },
            Accepted::Duplicate {
                webhook_id: Some("w1".into()),
            },
        ] {
            assert_eq!(
                parts(answer(Provider::Keeta, &Route::Generic, Ok(accepted), body)).await,
                (200, r#"{"code":0,"message":"Success"}"#.into(), None)
            );
        }
        let refused = Err(Rejection::Unauthorized("bad_signature"));
        assert_eq!(
            parts(answer(Provider::Keeta, &Route::Generic, refused, body)).await,
            (401, r#"{"error":"unauthorized"}"#.into(), None)
        );
        let (status, _, _) = parts(answer(
            Provider::Keeta,
            &Route::Generic,
            Err(Rejection::Unavailable("x".into())),
            body,
        ))
        .await;
        assert_eq!(status, 503);
    }

    #[tokio::test]
    async fn token_answers_are_rfc_6749_and_the_webhook_401() {
        let token = IssuedToken {
            access_token: "eyJ.a.b".into(),
            expires_in: Duration::from_secs(3600),
        };
        assert_eq!(
            parts(token_answer(Ok(token))).await,
            (
                200,
                r#"{"access_token":"eyJ.a.b","token_type":"Bearer","expires_in":3600}"#.into(),
                Some("no-store".into())
            )
        );
        assert_eq!(
            parts(token_answer(Err(TokenRejection::InvalidRequest("x")))).await,
            (
                400,
                r#"{"error":"invalid_request"}"#.into(),
                Some("no-store".into())
            )
        );
        assert_eq!(
            parts(token_answer(Err(TokenRejection::UnsupportedGrantType))).await,
            (
                400,
                r#"{"error":"unsupported_grant_type"}"#.into(),
                Some("no-store".into())
            )
        );
        // The same response as a webhook's 401, whatever the reason.
        let webhook = parts(reject(
            Provider::Grab,
            &Rejection::Unauthorized("bad_signature"),
        ))
        .await;
        for reason in [
            "bad_client_credentials",
            "unknown_account",
            "missing_credentials",
        ] {
            assert_eq!(
                parts(token_answer(Err(TokenRejection::Webhook(
                    Rejection::Unauthorized(reason)
                ))))
                .await,
                webhook
            );
        }
        let limited = token_answer(Err(TokenRejection::Webhook(Rejection::RateLimited {
            retry_after: Duration::from_millis(200),
            limit: "token",
        })));
        assert_eq!(limited.status(), 429);
        assert_eq!(limited.headers()["retry-after"], "1");
    }

    async fn http_body_util_collect(r: warp::reply::Response) -> Vec<u8> {
        use warp::hyper::body::Body as _;
        let mut body = r.into_body();
        let mut out = Vec::new();
        while let Some(frame) =
            std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
        {
            if let Ok(data) = frame.unwrap().into_data() {
                out.extend_from_slice(&data);
            }
        }
        out
    }
}
