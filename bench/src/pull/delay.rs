//! A provider API with latency: a proxy in the bench process (127.0.0.1)
//! that holds every order GET for a fixed time, then forwards it to the
//! fake provider and answers with what the fake said. A real provider API
//! is tens to hundreds of milliseconds away, the fake on loopback answers in
//! microseconds; with the proxy, a run shows whether the fetcher really
//! keeps `FETCHER_CONCURRENCY` fetches in flight (Little's law: at most
//! concurrency ÷ delay orders/s per replica) and what that costs.
//!
//! Only order GETs pass through it (the account's `base_url`); the token
//! endpoint stays the fake's own. Connections to the fake are kept and
//! reused; the proxy is dropped with its run.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hyper::{Method, header};
use warp::Filter;

use super::fake::Conn;

/// The proxy; stops serving when dropped.
pub struct Delay {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Delay {
    /// Serves on a free 127.0.0.1 port: every GET waits `delay`, then goes
    /// to `fake` with its path, `Authorization` and `Accept`.
    pub async fn start(fake: SocketAddr, delay: Duration) -> anyhow::Result<Delay> {
        let idle: Arc<Mutex<Vec<Conn>>> = Arc::default();
        let route = warp::get()
            .and(warp::path::full())
            .and(warp::header::headers_cloned())
            .then(
                move |path: warp::path::FullPath, headers: header::HeaderMap| {
                    let idle = idle.clone();
                    async move {
                        tokio::time::sleep(delay).await;
                        match forward(&idle, fake, path.as_str(), &headers).await {
                            Ok((status, body)) => warp::http::Response::builder()
                                .status(status)
                                .header(header::CONTENT_TYPE, "application/json")
                                .body(body),
                            Err(e) => warp::http::Response::builder()
                                .status(502)
                                .body(Bytes::from(format!("the delaying proxy: {e:#}"))),
                        }
                        .expect("a valid response")
                    }
                },
            );
        let addr = SocketAddr::from(([127, 0, 0, 1], crate::nats::free_port()?));
        let task = tokio::spawn(warp::serve(route).run(addr));
        let deadline = std::time::Instant::now() + crate::pipeline::STEP;
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if std::time::Instant::now() > deadline {
                anyhow::bail!("the delaying proxy is not listening on {addr}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(Delay { addr, task })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Delay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One request to the fake on an idle connection (or a new one), which
/// goes back to the idle ones if the exchange went well.
async fn forward(
    idle: &Mutex<Vec<Conn>>,
    fake: SocketAddr,
    path: &str,
    headers: &header::HeaderMap,
) -> anyhow::Result<(hyper::StatusCode, Bytes)> {
    let pooled = idle.lock().expect("not poisoned").pop();
    let mut conn = match pooled {
        Some(c) => c,
        None => Conn::open(fake).await?,
    };
    let mut pass = Vec::new();
    for name in [header::AUTHORIZATION, header::ACCEPT] {
        if let Some(v) = headers.get(&name).and_then(|v| v.to_str().ok()) {
            pass.push((name, v));
        }
    }
    let answer = conn.send(Method::GET, path, &pass, Bytes::new()).await?;
    idle.lock().expect("not poisoned").push(conn);
    Ok(answer)
}
