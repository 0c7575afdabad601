//! A timing proxy in front of the fake provider (the account's `base_url`):
//! the fake's control API tells which status calls it answered but not
//! when, so every provider call passes through this proxy in the bench
//! process (127.0.0.1), which forwards it to the fake with its method,
//! path, query, headers and body, answers with what the fake said, and
//! records the moment the fake's answer came back. A call's order number
//! is read from its path (`BENCH-<12 digits>`, the order id).
//!
//! The token endpoint stays the fake's own. Connections to the fake are
//! kept and reused; `--api-delay-ms` holds every call that long first, as
//! a real provider's latency would. The proxy is dropped with its run.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::{Method, header};
use warp::Filter;

use crate::pull::fake::Conn;

/// Headers not passed on: the connection's own (the proxy's connection to
/// the fake sets its `Host` and length).
const HOP: [header::HeaderName; 5] = [
    header::HOST,
    header::CONNECTION,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// One call that went through.
#[derive(Debug, Clone, Copy)]
pub struct Call {
    /// The order number in its path, if any.
    pub number: Option<u64>,
    /// `POST .../accept_pos_order` (Uber Eats' legacy accept).
    pub accept: bool,
    /// What the fake answered (502: the proxy could not reach it).
    pub status: u16,
    /// When the proxy had the request, and when the fake's answer came.
    pub received: Instant,
    pub answered: Instant,
}

/// The proxy; stops serving when dropped.
pub struct Proxy {
    pub addr: SocketAddr,
    calls: Arc<Mutex<Vec<Call>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Serves on a free 127.0.0.1 port, forwarding to `fake` after `delay`.
    pub async fn start(fake: SocketAddr, delay: Duration) -> anyhow::Result<Proxy> {
        let idle: Arc<Mutex<Vec<Conn>>> = Arc::default();
        let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
        let recorded = calls.clone();
        let query = warp::query::raw().or(warp::any().map(String::new)).unify();
        let route = warp::method()
            .and(warp::path::full())
            .and(query)
            .and(warp::header::headers_cloned())
            .and(warp::body::bytes())
            .then(
                move |method: Method,
                      path: warp::path::FullPath,
                      query: String,
                      headers: header::HeaderMap,
                      body: Bytes| {
                    let (idle, calls) = (idle.clone(), recorded.clone());
                    async move {
                        let received = Instant::now();
                        if !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                        let target = if query.is_empty() {
                            path.as_str().to_owned()
                        } else {
                            format!("{}?{query}", path.as_str())
                        };
                        let answer = forward(&idle, fake, &method, &target, &headers, body).await;
                        let status = answer.as_ref().map_or(502, |(s, _)| s.as_u16());
                        calls.lock().expect("not poisoned").push(Call {
                            number: order_number(path.as_str()),
                            accept: method == Method::POST
                                && path.as_str().ends_with("/accept_pos_order"),
                            status,
                            received,
                            answered: Instant::now(),
                        });
                        let reply = match answer {
                            Ok((status, body)) => {
                                let mut r = warp::http::Response::builder().status(status);
                                if !body.is_empty() {
                                    r = r.header(header::CONTENT_TYPE, "application/json");
                                }
                                r.body(body)
                            }
                            Err(e) => warp::http::Response::builder()
                                .status(502)
                                .body(Bytes::from(format!("the timing proxy: {e:#}"))),
                        };
                        reply.expect("a valid response")
                    }
                },
            );
        let addr = SocketAddr::from(([127, 0, 0, 1], crate::nats::free_port()?));
        let task = tokio::spawn(warp::serve(route).run(addr));
        let deadline = Instant::now() + crate::pipeline::STEP;
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if Instant::now() > deadline {
                anyhow::bail!("the timing proxy is not listening on {addr}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(Proxy { addr, calls, task })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("not poisoned").clone()
    }

    /// Accepts the fake answered with a 2xx so far.
    pub fn accepted(&self) -> usize {
        self.calls
            .lock()
            .expect("not poisoned")
            .iter()
            .filter(|c| c.accept && (200..300).contains(&c.status))
            .count()
    }

    /// When each order's first 2xx accept came back from the fake.
    pub fn accept_times(&self) -> HashMap<u64, Instant> {
        let mut out = HashMap::new();
        for c in self.calls.lock().expect("not poisoned").iter() {
            if let (true, Some(n), true) = (c.accept, c.number, (200..300).contains(&c.status)) {
                let at = out.entry(n).or_insert(c.answered);
                *at = (*at).min(c.answered);
            }
        }
        out
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The number after `BENCH-` (or `bench-`) in `s`: 12 digits.
pub fn order_number(s: &str) -> Option<u64> {
    let at = s
        .find("BENCH-")
        .or_else(|| s.find("bench-"))
        .map(|i| i + "BENCH-".len())?;
    let digits = s.get(at..at + 12)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// One request to the fake on an idle connection (or a new one), which
/// goes back to the idle ones if the exchange went well.
async fn forward(
    idle: &Mutex<Vec<Conn>>,
    fake: SocketAddr,
    method: &Method,
    target: &str,
    headers: &header::HeaderMap,
    body: Bytes,
) -> anyhow::Result<(hyper::StatusCode, Bytes)> {
    let pooled = idle.lock().expect("not poisoned").pop();
    let mut conn = match pooled {
        Some(c) => c,
        None => Conn::open(fake).await?,
    };
    let pass: Vec<(header::HeaderName, &str)> = headers
        .iter()
        .filter(|(name, _)| !HOP.contains(name))
        .filter_map(|(name, v)| Some((name.clone(), v.to_str().ok()?)))
        .collect();
    let answer = conn.send(method.clone(), target, &pass, body).await?;
    idle.lock().expect("not poisoned").push(conn);
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_order_number_of_a_path_or_an_id() {
        assert_eq!(
            order_number("/v1/eats/orders/BENCH-000000000042/accept_pos_order"),
            Some(42)
        );
        assert_eq!(order_number("auto-accept-bench-000000001234"), Some(1234));
        assert_eq!(
            order_number("/v1/eats/orders/BENCH-42/accept_pos_order"),
            None
        );
        assert_eq!(order_number("/oauth/v2/token"), None);
    }
}
