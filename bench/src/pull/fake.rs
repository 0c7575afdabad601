//! The fake Uber Eats API (`orderhub-tests`' release `fake-provider`) as a
//! process of the pull benchmark: started on a free 127.0.0.1 port with the
//! bench's client credentials, loaded with orders through its control API
//! (`POST /_fake/orders/ubereats/v2/{id}`), read back through
//! `GET /_fake/stats`, and measured alone (order GETs per second with one
//! token, no fetcher) so a run can tell whether the fake limits the path.
//!
//! Every request goes to the fake on loopback, over keep-alive HTTP/1.1
//! connections of hyper's (no pool).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;

use super::Orders;
use crate::nats;
use crate::pipeline::{self, CpuMeter};
use crate::procs::{self, Server};

/// The Uber client the fake accepts and the hub config names (a
/// benchmark's, not a secret).
pub const CLIENT_ID: &str = "orderhub-bench-uber-client";
pub const CLIENT_SECRET: &str = "orderhub-bench-uber-client-secret";

/// One keep-alive HTTP/1.1 connection to the fake.
pub struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: String,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> anyhow::Result<Conn> {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect to the fake provider at {addr}"))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) =
            hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream)).await?;
        // Ends once `sender` is dropped.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn {
            sender,
            host: addr.to_string(),
        })
    }

    /// One request; its status and body. Bounded by 20 s.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(header::HeaderName, &str)],
        body: Bytes,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let mut req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(header::HOST, self.host.as_str());
        for (name, value) in headers {
            req = req.header(name, *value);
        }
        let req = req.body(Full::new(body))?;
        let exchange = async {
            self.sender.ready().await?;
            let resp = self.sender.send_request(req).await?;
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, body))
        };
        tokio::time::timeout(pipeline::STEP, exchange)
            .await
            .with_context(|| format!("{method} {path}: no answer within {:?}", pipeline::STEP))?
    }
}

/// The fake provider process; killed on drop.
pub struct Fake {
    server: Server,
    pub addr: SocketAddr,
}

impl Fake {
    /// The release `fake-provider` next to the bench's binary, on a free
    /// port, accepting [`CLIENT_ID`]; its output goes to `dir`.
    pub async fn start(dir: &Path) -> anyhow::Result<Fake> {
        let bin = fake_bin()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], nats::free_port()?));
        let env = [
            ("FAKE_PROVIDER_ADDR".to_owned(), addr.to_string()),
            ("FAKE_UBER_CLIENT_ID".to_owned(), CLIENT_ID.to_owned()),
            (
                "FAKE_UBER_CLIENT_SECRET".to_owned(),
                CLIENT_SECRET.to_owned(),
            ),
        ];
        let mut server = pipeline::spawn_stage(&bin, dir, "fake-provider", &env)?;
        server
            .wait_listening(addr, pipeline::STEP)
            .await
            .context("the fake provider")?;
        Ok(Fake { server, addr })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.server.pid()
    }

    pub fn log_tail(&self) -> String {
        self.server.log_tail()
    }

    /// Stores orders `range` (as the Uber Eats V2 API answers them) through
    /// the control API, over 8 connections.
    pub async fn load(
        &self,
        orders: &Arc<Orders>,
        range: std::ops::Range<u64>,
    ) -> anyhow::Result<()> {
        let next = Arc::new(AtomicU64::new(range.start));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (next, orders, addr, end) = (next.clone(), orders.clone(), self.addr, range.end);
            tasks.spawn(async move {
                let mut conn = Conn::open(addr).await?;
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= end {
                        return anyhow::Ok(());
                    }
                    let path = format!("/_fake/orders/ubereats/v2/{}", orders.id(n));
                    let (status, body) =
                        conn.send(Method::POST, &path, &[], orders.body(n)).await?;
                    if status != StatusCode::NO_CONTENT {
                        bail!(
                            "POST {path}: the fake answered {status}: {}",
                            String::from_utf8_lossy(&body)
                        );
                    }
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        Ok(())
    }

    /// `GET /_fake/stats`.
    pub async fn stats(&self) -> anyhow::Result<Stats> {
        let mut conn = Conn::open(self.addr).await?;
        let (status, body) = conn
            .send(Method::GET, "/_fake/stats", &[], Bytes::new())
            .await?;
        if status != StatusCode::OK {
            bail!("GET /_fake/stats: the fake answered {status}");
        }
        let v: serde_json::Value =
            serde_json::from_slice(&body).context("the fake's stats are not JSON")?;
        let count = |pointer: &str| {
            v.pointer(pointer)
                .and_then(serde_json::Value::as_u64)
                .with_context(|| format!("the fake's stats have no count at {pointer}"))
        };
        Ok(Stats {
            uber_mints: count("/mints/ubereats")?,
            requests: count("/requests")?,
        })
    }

    /// Mints an Uber token as a client would (one mint in the fake's
    /// counters).
    pub async fn mint(&self) -> anyhow::Result<String> {
        let mut conn = Conn::open(self.addr).await?;
        let form = format!(
            "client_id={CLIENT_ID}&client_secret={CLIENT_SECRET}&grant_type=client_credentials&scope=eats.order"
        );
        let (status, body) = conn
            .send(
                Method::POST,
                "/oauth/v2/token",
                &[(header::CONTENT_TYPE, "application/x-www-form-urlencoded")],
                Bytes::from(form),
            )
            .await?;
        if status != StatusCode::OK {
            bail!("the fake refused the bench's token request: {status}");
        }
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        v["access_token"]
            .as_str()
            .map(str::to_owned)
            .context("the fake's token answer has no access_token")
    }
}

/// What the fake counted.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    /// Uber tokens minted.
    pub uber_mints: u64,
    /// Provider requests (token and order), control requests left out.
    pub requests: u64,
}

/// The release `fake-provider` next to the bench's own binary.
fn fake_bin() -> anyhow::Result<std::path::PathBuf> {
    let exe = std::env::current_exe().context("own path")?;
    let bin = exe.with_file_name("fake-provider");
    if !bin.exists() {
        bail!(
            "no fake-provider binary next to {}: cargo build --release --locked -p orderhub-tests --bin fake-provider (scripts/bench-pull does)",
            exe.display()
        );
    }
    Ok(bin)
}

/// What the fake alone sustained.
pub struct Alone {
    pub rate: f64,
    pub cpu: Vec<(String, f64)>,
    pub requests: u64,
}

/// The fake alone: a fresh process with `orders` orders, one token, then
/// `connections` keep-alive connections GET the orders round robin in a
/// closed loop for `seconds` (after 1 s not counted). Every answer must be
/// a 200.
pub async fn alone(
    orders: &Arc<Orders>,
    count: u64,
    connections: usize,
    seconds: u64,
    max_other: f64,
    quiet_wait: u64,
) -> anyhow::Result<Alone> {
    let dir = tempfile::Builder::new()
        .prefix("orderhub-bench-fake-")
        .tempdir()?;
    let fake = Fake::start(dir.path()).await?;
    fake.load(orders, 0..count).await?;
    let token = Arc::new(format!("Bearer {}", fake.mint().await?));
    procs::wait_quiet(max_other, Duration::from_secs(quiet_wait)).await;
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let counted = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections.max(1) {
        let (orders, token, addr) = (orders.clone(), token.clone(), fake.addr);
        let (measuring, stop, counted, next) = (
            measuring.clone(),
            stop.clone(),
            counted.clone(),
            next.clone(),
        );
        tasks.spawn(async move {
            let mut conn = Conn::open(addr).await?;
            while !stop.load(Ordering::Relaxed) {
                let n = next.fetch_add(1, Ordering::Relaxed) % count;
                let path = format!("/v2/eats/order/{}", orders.id(n));
                let (status, _) = conn
                    .send(
                        Method::GET,
                        &path,
                        &[(header::AUTHORIZATION, token.as_str())],
                        Bytes::new(),
                    )
                    .await?;
                if status != StatusCode::OK {
                    bail!("GET {path}: the fake answered {status}");
                }
                if measuring.load(Ordering::Relaxed) {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
            }
            anyhow::Ok(())
        });
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let meter = CpuMeter::start(&[("fake-provider", fake.pid())]);
    let started = Instant::now();
    measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(seconds.max(1))).await;
    measuring.store(false, Ordering::Relaxed);
    let window = started.elapsed();
    let cpu = meter.read();
    stop.store(true, Ordering::Relaxed);
    while let Some(done) = tasks.join_next().await {
        done?.with_context(|| format!("fake provider log:\n{}", fake.log_tail()))?;
    }
    let requests = counted.load(Ordering::Relaxed);
    Ok(Alone {
        rate: requests as f64 / window.as_secs_f64(),
        cpu,
        requests,
    })
}
