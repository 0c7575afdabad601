//! What the `forwarder` and `e2e` benchmarks share: the fast backend inside
//! the bench process, the stage processes, CPU and memory accounting per
//! process, and the consumers' lag sampled while a run goes on.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream;
use bytes::Bytes;
use warp::Filter;

use crate::nats;
use crate::procs::{self, Server};

/// Every await on NATS outside the load is bounded by this.
pub const STEP: Duration = Duration::from_secs(20);

/// The tenants' backend key and Standard Webhooks signing secret (a
/// benchmark's, not secrets): the forwarder signs every request, as in
/// production.
pub const BACKEND_KEY: &str = "orderhub-bench-backend-key";
pub const SIGNING_SECRET: &str = "whsec_dGVzdC1zaWduaW5nLXNlY3JldA==";

/// The order number in a body: the 12 digits after the first `"BENCH-`
/// (the Careem `order_id` the load generator writes, which the transformer
/// keeps as `provider_order_id`).
pub fn order_number(body: &[u8]) -> Option<u64> {
    const MARK: &[u8] = b"\"BENCH-";
    let at = body.windows(MARK.len()).position(|w| w == MARK)? + MARK.len();
    let digits = body.get(at..at + 12)?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

struct Received {
    arrivals: Mutex<Vec<(u64, Instant)>>,
    count: AtomicU64,
    unknown: AtomicU64,
    /// Requests answered 503 on purpose (a flaky backend).
    failed: AtomicU64,
    /// Dice thrown so far, the flaky backend's random sequence.
    draws: AtomicU64,
    cap: usize,
}

/// A minimal fast tenant backend in the bench process: warp, any POST,
/// 200 at once, recording when each order arrived (its number and the
/// moment its whole body was read).
pub struct Backend {
    pub addr: SocketAddr,
    received: Arc<Received>,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    /// Serves on a free 127.0.0.1 port; keeps at most `cap` arrivals.
    pub async fn start(cap: usize) -> anyhow::Result<Backend> {
        Self::start_flaky(cap, 0).await
    }

    /// Like [`Backend::start`], but answers 503 to `fail_percent`% of the
    /// requests at random (a fixed seed); only the 200s count as arrivals.
    pub async fn start_flaky(cap: usize, fail_percent: u8) -> anyhow::Result<Backend> {
        let received = Arc::new(Received {
            arrivals: Mutex::new(Vec::with_capacity(cap.min(4_000_000))),
            count: AtomicU64::new(0),
            unknown: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            draws: AtomicU64::new(0),
            cap,
        });
        let r = received.clone();
        let route = warp::post()
            .and(warp::body::bytes())
            .map(move |body: Bytes| {
                let now = Instant::now();
                if fail_percent > 0
                    && splitmix64(r.draws.fetch_add(1, Ordering::Relaxed)) % 100
                        < u64::from(fail_percent)
                {
                    r.failed.fetch_add(1, Ordering::Relaxed);
                    return warp::http::StatusCode::SERVICE_UNAVAILABLE;
                }
                match order_number(&body) {
                    Some(n) => {
                        let mut a = r.arrivals.lock().expect("not poisoned");
                        if a.len() < r.cap {
                            a.push((n, now));
                        }
                        drop(a);
                        r.count.fetch_add(1, Ordering::Relaxed);
                    }
                    None => {
                        r.unknown.fetch_add(1, Ordering::Relaxed);
                    }
                }
                warp::http::StatusCode::OK
            });
        let port = nats::free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let task = tokio::spawn(warp::serve(route).run(addr));
        let deadline = Instant::now() + STEP;
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if Instant::now() > deadline {
                anyhow::bail!("the bench backend is not listening on {addr}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(Backend {
            addr,
            received,
            task,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}/orders", self.addr)
    }

    /// Orders received so far (duplicates included).
    pub fn count(&self) -> u64 {
        self.received.count.load(Ordering::Relaxed)
    }

    /// Requests answered 503 on purpose.
    pub fn failed(&self) -> u64 {
        self.received.failed.load(Ordering::Relaxed)
    }

    /// Requests whose body held no order number.
    pub fn unknown(&self) -> u64 {
        self.received.unknown.load(Ordering::Relaxed)
    }

    /// The first arrival of each order number, and how many arrivals were
    /// duplicates.
    pub fn first_arrivals(&self) -> (HashMap<u64, Instant>, u64) {
        let a = self.received.arrivals.lock().expect("not poisoned");
        let mut first = HashMap::with_capacity(a.len());
        let mut dups = 0;
        for &(n, at) in a.iter() {
            if first.insert(n, at).is_some() {
                dups += 1;
                // Keep the earliest.
                first.insert(n, at.min(first[&n]));
            }
        }
        (first, dups)
    }

    /// Waits until `n` orders arrived, at most `within`; true if they did.
    pub async fn wait_for(&self, n: u64, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while self.count() < n {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A well-mixed 64-bit value of `x` (splitmix64): the flaky backend's dice.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The CPU seconds of some processes and of the machine, to charge a window.
#[derive(Clone)]
pub struct CpuMeter {
    watched: Vec<(String, u32)>,
    before: Vec<f64>,
}

impl CpuMeter {
    /// Starts counting for `watch`; the bench itself is added as `bench`.
    pub fn start(watch: &[(&str, u32)]) -> CpuMeter {
        let mut watched: Vec<(String, u32)> =
            watch.iter().map(|(n, p)| (n.to_string(), *p)).collect();
        watched.push(("bench".to_owned(), std::process::id()));
        let before = Self::now(&watched);
        CpuMeter { watched, before }
    }

    fn now(watched: &[(String, u32)]) -> Vec<f64> {
        let machine = procs::machine_cpu_seconds().unwrap_or([f64::NAN; 3]);
        let mut v: Vec<f64> = watched
            .iter()
            .map(|(_, pid)| procs::cpu_seconds(*pid).unwrap_or(f64::NAN))
            .collect();
        v.extend(machine);
        v
    }

    /// CPU seconds since `start`: each watched process, then `other`,
    /// `idle` and `steal`.
    pub fn read(&self) -> Vec<(String, f64)> {
        let after = Self::now(&self.watched);
        let d: Vec<f64> = after.iter().zip(&self.before).map(|(a, b)| a - b).collect();
        let (own, machine) = d.split_at(self.watched.len());
        let mut cpu: Vec<(String, f64)> = self
            .watched
            .iter()
            .zip(own)
            .map(|((name, _), s)| (name.clone(), *s))
            .collect();
        let other = (machine[0] - own.iter().sum::<f64>()).max(0.0);
        cpu.push(("other".to_owned(), other));
        cpu.push(("idle".to_owned(), machine[1]));
        cpu.push(("steal".to_owned(), machine[2]));
        cpu
    }
}

pub fn cpu_of(cpu: &[(String, f64)], who: &str) -> f64 {
    cpu.iter()
        .find(|(n, _)| n == who)
        .map_or(f64::NAN, |(_, s)| *s)
}

/// Share of all CPU time other processes took.
pub fn other_share(cpu: &[(String, f64)]) -> f64 {
    let all: f64 = cpu.iter().map(|(_, s)| s).sum();
    cpu_of(cpu, "other") / all
}

/// `name s` for each entry, and µs per order for the processes.
pub fn show_cpu(cpu: &[(String, f64)], orders: u64) -> String {
    cpu.iter()
        .map(|(name, s)| {
            if ["other", "idle", "steal"].contains(&name.as_str()) {
                format!("{name} {s:.1}")
            } else {
                format!(
                    "{name} {s:.1} ({:.1} µs/order)",
                    s * 1e6 / orders.max(1) as f64
                )
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One sample of the consumers' lag: pending + ack pending of each.
#[derive(Debug, Clone)]
pub struct LagSample {
    pub at: Instant,
    pub lag: Vec<u64>,
}

/// Samples the lag of `consumers` ((stream, durable)) every `every` until
/// stopped, and the RSS of `pids` (the maximum seen, MiB).
pub struct Sampler {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<(Vec<LagSample>, Vec<f64>)>,
}

impl Sampler {
    pub fn start(
        js: jetstream::Context,
        consumers: Vec<(String, String)>,
        pids: Vec<u32>,
        every: Duration,
    ) -> Sampler {
        let (stop, mut token) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut rss = vec![0.0f64; pids.len()];
            // Bounded: an hour of samples at most.
            for _ in 0..(3_600_000 / every.as_millis().max(1) as u64) {
                let at = Instant::now();
                let mut lag = Vec::with_capacity(consumers.len());
                for (stream, durable) in &consumers {
                    lag.push(consumer_lag(&js, stream, durable).await.unwrap_or(u64::MAX));
                }
                samples.push(LagSample { at, lag });
                for (i, pid) in pids.iter().enumerate() {
                    if let Some(m) = procs::rss_mib(*pid) {
                        rss[i] = rss[i].max(m);
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = &mut token => break,
                }
            }
            (samples, rss)
        });
        Sampler { stop, task }
    }

    pub async fn finish(self) -> (Vec<LagSample>, Vec<f64>) {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}

/// num_pending + num_ack_pending of a durable consumer.
pub async fn consumer_lag(js: &jetstream::Context, stream: &str, durable: &str) -> Option<u64> {
    let get = async {
        let mut c: jetstream::consumer::PullConsumer =
            js.get_consumer_from_stream(durable, stream).await.ok()?;
        let info = c.info().await.ok()?;
        Some(info.num_pending + info.num_ack_pending as u64)
    };
    tokio::time::timeout(Duration::from_secs(5), get)
        .await
        .ok()
        .flatten()
}

/// Lag over a window: first, max and last sample, and the least-squares
/// slope in messages per second.
#[derive(Debug, Clone, Copy)]
pub struct LagSummary {
    pub first: u64,
    pub max: u64,
    pub last: u64,
    pub slope: f64,
}

impl LagSummary {
    pub fn of(samples: &[LagSample], i: usize, from: Instant, to: Instant) -> Option<LagSummary> {
        let pts: Vec<(f64, f64)> = samples
            .iter()
            .filter(|s| s.at >= from && s.at <= to && s.lag[i] != u64::MAX)
            .map(|s| (s.at.duration_since(from).as_secs_f64(), s.lag[i] as f64))
            .collect();
        if pts.is_empty() {
            return None;
        }
        let n = pts.len() as f64;
        let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
        let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
        let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
        let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
        Some(LagSummary {
            first: pts[0].1 as u64,
            max: pts.iter().map(|p| p.1 as u64).max().unwrap_or(0),
            last: pts[pts.len() - 1].1 as u64,
            slope: if sxx > 0.0 { sxy / sxx } else { 0.0 },
        })
    }

    /// Flat: the consumer fell behind by less than 2% of the offered rate
    /// and its backlog stayed within a second of that rate (or a 1000
    /// message batch).
    pub fn flat(&self, rate: f64) -> bool {
        self.slope < 0.02 * rate && (self.max as f64) < rate.max(1000.0)
    }

    pub fn show(&self, rate: f64) -> String {
        format!(
            "lag first {} max {} last {}, slope {:+.0}/s: {}",
            self.first,
            self.max,
            self.last,
            self.slope,
            if self.flat(rate) {
                "flat (kept up)"
            } else {
                "GROWING (fell behind)"
            }
        )
    }
}

/// A stage binary as a child process with the environment the stages take.
pub fn spawn_stage(
    bin: &Path,
    dir: &Path,
    name: &str,
    env: &[(String, String)],
) -> anyhow::Result<Server> {
    let log = dir.join(format!("{name}.log"));
    let out = std::fs::File::create(&log)?;
    let child = Command::new(bin)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    Ok(Server { child, log })
}

/// A release stage binary next to the bench's own.
pub fn stage_bin(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("own path")?;
    let bin = exe.with_file_name(name);
    if !bin.exists() {
        anyhow::bail!(
            "no {name} binary next to {}: cargo build --release --locked -p bench -p ingress -p transformer -p forwarder",
            exe.display()
        );
    }
    Ok(bin)
}

/// Waits until the stage's `/ready` on `ops` answers 200 (or fails with its
/// log).
pub async fn wait_ready(server: &mut Server, ops: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + STEP;
    loop {
        if ready(ops).await {
            return Ok(());
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            anyhow::bail!("stage exited ({status}): {}", server.log_tail());
        }
        if Instant::now() > deadline {
            anyhow::bail!("stage not ready within {STEP:?}: {}", server.log_tail());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn ready(ops: SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(ops).await.ok()?;
        s.write_all(b"GET /ready HTTP/1.0\r\nHost: x\r\n\r\n")
            .await
            .ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        Some(buf.starts_with(b"HTTP/1.1 200") || buf.starts_with(b"HTTP/1.0 200"))
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// Nearest-rank percentiles of latencies in ms: p50, p99, p99.9, max.
pub fn latency_line(mut v: Vec<Duration>) -> String {
    v.sort_unstable();
    let p = |q| crate::stats::ms(crate::stats::percentile(&v, q));
    format!(
        "p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms (n={})",
        p(0.5),
        p(0.99),
        p(0.999),
        p(1.0),
        v.len()
    )
}

pub fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_order_number_in_a_raw_and_a_canonical_order() {
        let raw = crate::load::Bodies::new(2048).make(42);
        assert_eq!(order_number(&raw), Some(42));
        let canonical = crate::forwarder_bench::Orders::new(2048).make(7, "bench-0");
        assert_eq!(order_number(&canonical), Some(7));
        assert!(serde_json::from_slice::<serde_json::Value>(&canonical).is_ok());
        assert_eq!(order_number(br#"{"order_id":"X"}"#), None);
    }

    #[test]
    fn lag_slope_and_flatness() {
        let t0 = Instant::now();
        let samples: Vec<LagSample> = (0..10)
            .map(|i| LagSample {
                at: t0 + Duration::from_secs(i),
                lag: vec![100 * i, 5],
            })
            .collect();
        let end = t0 + Duration::from_secs(10);
        let growing = LagSummary::of(&samples, 0, t0, end).unwrap();
        assert!((growing.slope - 100.0).abs() < 1e-6);
        assert!(!growing.flat(1000.0));
        let flat = LagSummary::of(&samples, 1, t0, end).unwrap();
        assert!(flat.flat(1000.0));
    }
}
