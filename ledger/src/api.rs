//! The query API on `API_ADDR` (DESIGN §8.4): filters, handlers, and one
//! mapping of errors to statuses.
//!
//! - Every `/api/` route wants `Authorization: Bearer <OPERATOR_TOKEN>`,
//!   compared in constant time (SHA-256 digests, so the length does not
//!   show either); missing or wrong: 401 `{"error":"unauthorized"}`, the
//!   same body for both.
//! - `GET /api/webhooks/stats/{provider}?since=<humantime, default 1h>`:
//!   [`crate::query::Stats`]; a bad `since` is 400 naming `since`, an
//!   unknown provider 400.
//! - `GET /api/orders/{provider}/{provider_order_id}[?tenant=]`:
//!   [`crate::query::Timeline`]; 404 for an order the ledger never saw.
//! - PostgreSQL unavailable: 503 `{"error":"database unavailable"}`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use shared::Provider;

/// The longest window `since` may ask for.
pub const MAX_SINCE: Duration = Duration::from_secs(400 * 24 * 3600);

/// The default window.
pub const DEFAULT_SINCE: &str = "1h";

/// What the handlers share.
pub struct ApiState {
    pub pool: PgPool,
    token_digest: [u8; 32],
}

impl ApiState {
    pub fn new(pool: PgPool, token: &secrecy::SecretString) -> ApiState {
        use secrecy::ExposeSecret;
        ApiState {
            pool,
            token_digest: Sha256::digest(token.expose_secret().as_bytes()).into(),
        }
    }

    fn allows(&self, authorization: Option<&str>) -> bool {
        let presented = authorization
            .and_then(|h| h.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .unwrap_or("");
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let same: bool = digest.ct_eq(&self.token_digest).into();
        same && !presented.is_empty()
    }
}

/// Every way a request fails, with its status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("unauthorized")]
    Unauthorized,
    #[error("{0}")]
    BadRequest(String),
    #[error("no record of this order")]
    NotFound,
    #[error("database unavailable")]
    Unavailable,
}

impl warp::reject::Reject for ApiError {}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

fn unavailable(e: sqlx::Error) -> Rejection {
    tracing::warn!(error = %e, "ledger query failed");
    warp::reject::custom(ApiError::Unavailable)
}

fn provider(name: &str) -> Result<Provider, Rejection> {
    name.parse::<Provider>()
        .map_err(|e| warp::reject::custom(ApiError::BadRequest(e.to_string())))
}

fn decoded(segment: &str) -> Result<String, Rejection> {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| {
            warp::reject::custom(ApiError::BadRequest(
                "provider_order_id: not UTF-8".to_owned(),
            ))
        })
}

/// Parses `since` (humantime: `90m`, `1h`, `7d`), at most [`MAX_SINCE`].
pub fn parse_since(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("since: {e} (a duration such as 15m, 1h or 7d)"))?;
    if d.is_zero() || d > MAX_SINCE {
        return Err(format!(
            "since: must be above 0 and at most {}",
            humantime::format_duration(MAX_SINCE)
        ));
    }
    Ok(d)
}

fn authorized(
    state: Arc<ApiState>,
) -> impl Filter<Extract = (), Error = Rejection> + Clone + Send + Sync + 'static {
    warp::header::optional::<String>("authorization")
        .and_then(move |h: Option<String>| {
            let ok = state.allows(h.as_deref());
            async move {
                if ok {
                    Ok(())
                } else {
                    Err(warp::reject::custom(ApiError::Unauthorized))
                }
            }
        })
        .untuple_one()
}

/// The API's routes, errors mapped to JSON bodies.
pub fn routes(
    state: Arc<ApiState>,
) -> impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone + Send + Sync + 'static {
    let with_state = {
        let s = state.clone();
        warp::any().map(move || s.clone())
    };
    let stats = warp::path!("api" / "webhooks" / "stats" / String)
        .and(warp::get())
        .and(authorized(state.clone()))
        .and(warp::query::<HashMap<String, String>>())
        .and(with_state.clone())
        .and_then(
            |name: String, q: HashMap<String, String>, state: Arc<ApiState>| async move {
                let provider = provider(&name)?;
                let since_text = q.get("since").map_or(DEFAULT_SINCE, String::as_str);
                let since = parse_since(since_text)
                    .map_err(|e| warp::reject::custom(ApiError::BadRequest(e)))?;
                let stats = crate::query::stats(
                    &state.pool,
                    provider,
                    since,
                    since_text,
                    time::OffsetDateTime::now_utc(),
                )
                .await
                .map_err(unavailable)?;
                Ok::<_, Rejection>(warp::reply::json(&stats))
            },
        );
    let order = warp::path!("api" / "orders" / String / String)
        .and(warp::get())
        .and(authorized(state.clone()))
        .and(warp::query::<HashMap<String, String>>())
        .and(with_state)
        .and_then(
            |name: String, id: String, q: HashMap<String, String>, state: Arc<ApiState>| async move {
                let provider = provider(&name)?;
                let id = decoded(&id)?;
                let tenant = q.get("tenant").map(String::as_str).filter(|t| !t.is_empty());
                let timeline = crate::query::timeline(&state.pool, provider, &id, tenant)
                    .await
                    .map_err(unavailable)?
                    .ok_or_else(|| warp::reject::custom(ApiError::NotFound))?;
                Ok::<_, Rejection>(warp::reply::json(&timeline))
            },
        );
    stats.or(order).recover(recover)
}

async fn recover(r: Rejection) -> Result<warp::reply::Response, Infallible> {
    let (status, message) = if let Some(e) = r.find::<ApiError>() {
        (e.status(), e.to_string())
    } else if r.is_not_found() {
        (StatusCode::NOT_FOUND, "no such route".to_owned())
    } else if r.find::<warp::reject::MethodNotAllowed>().is_some() {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed".to_owned(),
        )
    } else if r.find::<warp::reject::InvalidQuery>().is_some() {
        (StatusCode::BAD_REQUEST, "invalid query string".to_owned())
    } else {
        (StatusCode::BAD_REQUEST, "bad request".to_owned())
    };
    let body = warp::reply::json(&serde_json::json!({ "error": message }));
    let mut reply = warp::reply::with_status(body, status).into_response();
    if status == StatusCode::UNAUTHORIZED {
        reply.headers_mut().insert(
            "www-authenticate",
            warp::http::HeaderValue::from_static("Bearer"),
        );
    }
    Ok(reply)
}

/// Binds `addr` and serves the API until `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    state: Arc<ApiState>,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let server = warp::serve(routes(state))
        .incoming(listener)
        .graceful(async move { shutdown.cancelled().await });
    Ok((bound, tokio::spawn(async move { server.run().await })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    /// A pool that never connects: every test here is answered before a
    /// query would run.
    fn state() -> Arc<ApiState> {
        let options: sqlx::postgres::PgConnectOptions =
            "postgres://nobody@127.0.0.1:9/none".parse().unwrap();
        let pool = sqlx::postgres::PgPoolOptions::new().connect_lazy_with(options);
        Arc::new(ApiState::new(
            pool,
            &SecretString::from("operator-token-for-tests"),
        ))
    }

    async fn get(path: &str, auth: Option<&str>) -> (StatusCode, serde_json::Value) {
        let mut req = warp::test::request().method("GET").path(path);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = req.reply(&routes(state())).await;
        let body = serde_json::from_slice(resp.body()).unwrap();
        (resp.status(), body)
    }

    #[tokio::test]
    async fn missing_or_wrong_tokens_get_one_401() {
        let want = serde_json::json!({"error": "unauthorized"});
        for auth in [
            None,
            Some("Bearer wrong"),
            Some("Bearer "),
            Some("Basic operator-token-for-tests"),
            Some("Bearer operator-token-for-testsX"),
        ] {
            for path in ["/api/webhooks/stats/careem", "/api/orders/careem/4471"] {
                assert_eq!(
                    get(path, auth).await,
                    (StatusCode::UNAUTHORIZED, want.clone()),
                    "{auth:?} {path}"
                );
            }
        }
        let resp = warp::test::request()
            .path("/api/orders/careem/1")
            .reply(&routes(state()))
            .await;
        assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    }

    #[tokio::test]
    async fn a_bad_since_or_provider_is_400_naming_it() {
        let auth = Some("Bearer operator-token-for-tests");
        let (status, body) = get("/api/webhooks/stats/careem?since=yesterday", auth).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            body["error"].as_str().unwrap().starts_with("since: "),
            "{body}"
        );
        let (status, body) = get("/api/webhooks/stats/careem?since=0s", auth).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body["error"].as_str().unwrap().starts_with("since: "));
        let (status, body) = get("/api/webhooks/stats/careem?since=1000d", auth).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body["error"].as_str().unwrap().starts_with("since: "));
        for path in ["/api/webhooks/stats/nosuch", "/api/orders/Careem/1"] {
            let (status, body) = get(path, auth).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
            assert!(
                body["error"]
                    .as_str()
                    .unwrap()
                    .starts_with("unknown provider"),
                "{body}"
            );
        }
        let (status, _) = get("/api/nothing", auth).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[test]
    fn since_takes_humantime() {
        assert_eq!(parse_since("90m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_since("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert!(parse_since("").is_err());
    }
}
