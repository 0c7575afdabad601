//! The load generator: `connections` tokio tasks, each with its own
//! keep-alive HTTP/1.1 connection (hyper's client connection, no pool),
//! sending one signed webhook after another (closed loop). Every body is
//! unique (a counter inside), so nothing is a duplicate. A warm-up, then a
//! measured window; requests in flight when it ends finish (bounded) and
//! count for the stored-versus-accepted check but not for the figures.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use secrecy::SecretString;

use crate::procs;

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

/// Where the load goes.
pub struct Target {
    pub addr: SocketAddr,
    pub path: String,
    pub secret: SecretString,
}

/// How much load, for how long.
#[derive(Debug, Clone)]
pub struct Options {
    pub connections: usize,
    pub warmup: Duration,
    pub measure: Duration,
    /// No more requests than this in one run (warm-up included).
    pub max_requests: u64,
    /// A request without an answer by then fails the run.
    pub request_timeout: Duration,
    pub body_bytes: usize,
    /// Open-loop pacing: request `n` is not sent before `start + n / pace`
    /// (requests per second over all connections); `None`: closed loop.
    pub pace: Option<f64>,
    /// Keep the moment each 202 arrived, by request number (for the
    /// end-to-end latency to the backend).
    pub record_accepts: bool,
}

/// A 202: the request's number (its body's counter), when the answer
/// arrived, and whether it fell in the measured window.
#[derive(Debug, Clone, Copy)]
pub struct Accept {
    pub n: u64,
    pub at: Instant,
    pub in_window: bool,
}

/// What one run measured.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The measured window's real length.
    pub window: Duration,
    /// Latencies of the requests answered 202 within the window, sorted.
    pub latencies: Vec<Duration>,
    /// 202 answers over the whole run (warm-up and drain included).
    pub accepted: u64,
    /// Anything but a 202, by kind (`status 503`, `timeout`, ...), whole run.
    pub failures: BTreeMap<String, u64>,
    /// CPU seconds during the window, per watched process, then `other`
    /// (every other process on the machine: another build would show
    /// here), `idle` and `steal` (taken by the hypervisor).
    pub cpu: Vec<(String, f64)>,
    /// Every 202 of the run when `record_accepts` (warm-up and drain too).
    pub accepts: Vec<Accept>,
    /// When the measured window started.
    pub window_start: Option<Instant>,
}

impl Outcome {
    pub fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.window.as_secs_f64()
    }
}

/// A ~2 KiB JSON order with a 12-digit counter at a fixed offset.
pub struct Bodies {
    template: Vec<u8>,
    counter_at: usize,
}

const COUNTER_DIGITS: usize = 12;

impl Bodies {
    pub fn new(size: usize) -> Bodies {
        let head = r#"{"order_id":"BENCH-"#;
        let middle = concat!(
            r#"","created_at":"2026-11-28T06:00:00Z","branch_id":"991","#,
            r#""customer":{"name":"Bench Customer","phone":"0791234567"},"#,
            r#""items":[{"id":"burger-classic","name":"Burger","quantity":1,"price":10}],"#,
            r#""total_amount":10,"notes":""#
        );
        let tail = r#""}"#;
        let fixed = head.len() + COUNTER_DIGITS + middle.len() + tail.len();
        let pad: String = (b'a'..=b'z')
            .cycle()
            .take(size.saturating_sub(fixed))
            .map(char::from)
            .collect();
        let template =
            format!("{head}{}{middle}{pad}{tail}", "0".repeat(COUNTER_DIGITS)).into_bytes();
        Bodies {
            template,
            counter_at: head.len(),
        }
    }

    pub fn make(&self, n: u64) -> Bytes {
        let mut body = self.template.clone();
        let digits = format!(
            "{:0w$}",
            n % 10u64.pow(COUNTER_DIGITS as u32),
            w = COUNTER_DIGITS
        );
        body[self.counter_at..self.counter_at + COUNTER_DIGITS].copy_from_slice(digits.as_bytes());
        Bytes::from(body)
    }
}

struct Shared {
    target: Target,
    bodies: Bodies,
    phase: AtomicU8,
    next: AtomicU64,
    max_requests: u64,
    request_timeout: Duration,
    pace: Option<f64>,
    record_accepts: bool,
    started: tokio::time::Instant,
}

#[derive(Default)]
struct TaskResult {
    latencies: Vec<Duration>,
    accepts: Vec<Accept>,
    accepted: u64,
    failures: BTreeMap<String, u64>,
}

impl TaskResult {
    fn fail(&mut self, what: String) {
        *self.failures.entry(what).or_default() += 1;
    }
}

/// One request: its status, or what went wrong.
async fn exchange(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> Result<StatusCode, String> {
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = resp.status();
    resp.into_body()
        .collect()
        .await
        .map_err(|e| format!("response body: {e}"))?;
    Ok(status)
}

async fn connection(shared: Arc<Shared>) -> TaskResult {
    let mut out = TaskResult::default();
    let target = &shared.target;
    let stream = match tokio::net::TcpStream::connect(target.addr).await {
        Ok(s) => s,
        Err(e) => {
            out.fail(format!("connect: {e}"));
            return out;
        }
    };
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) =
        match hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream)).await {
            Ok(pair) => pair,
            Err(e) => {
                out.fail(format!("handshake: {e}"));
                return out;
            }
        };
    // Ends once `sender` is dropped.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let host = target.addr.to_string();
    loop {
        if shared.phase.load(Ordering::Relaxed) == STOP {
            break;
        }
        let n = shared.next.fetch_add(1, Ordering::Relaxed);
        if n >= shared.max_requests {
            break;
        }
        if let Some(pace) = shared.pace {
            let due = shared.started + Duration::from_secs_f64(n as f64 / pace);
            tokio::time::sleep_until(due).await;
            if shared.phase.load(Ordering::Relaxed) == STOP {
                break;
            }
        }
        let body = shared.bodies.make(n);
        let signed = ingress::verify::careem::sign(&body, &target.secret);
        let mut req = Request::post(target.path.as_str())
            .header(header::HOST, host.as_str())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .expect("a valid request");
        req.headers_mut().extend(signed);
        if let Err(e) = sender.ready().await {
            out.fail(format!("connection: {e}"));
            break;
        }
        let started = Instant::now();
        let result = tokio::time::timeout(shared.request_timeout, exchange(&mut sender, req)).await;
        let took = started.elapsed();
        let in_window = shared.phase.load(Ordering::Relaxed) == MEASURE;
        match result {
            Ok(Ok(StatusCode::ACCEPTED)) => {
                out.accepted += 1;
                if shared.record_accepts {
                    out.accepts.push(Accept {
                        n,
                        at: started + took,
                        in_window,
                    });
                }
                if in_window {
                    out.latencies.push(took);
                }
            }
            Ok(Ok(status)) => out.fail(format!("status {}", status.as_u16())),
            Ok(Err(e)) => {
                out.fail(e);
                break;
            }
            Err(_) => {
                out.fail(format!("no answer within {:?}", shared.request_timeout));
                break;
            }
        }
    }
    out
}

/// Loads `target` and measures; `watch` names the processes whose CPU time
/// the window is charged with (the bench itself is added as `client`);
/// `on_window` runs as the measured window starts (e.g. to start `perf`)
/// and what it returns comes back with the outcome.
pub async fn run<T>(
    target: Target,
    opts: &Options,
    watch: &[(&str, u32)],
    on_window: impl FnOnce() -> T,
) -> (Outcome, T) {
    let shared = Arc::new(Shared {
        target,
        bodies: Bodies::new(opts.body_bytes),
        phase: AtomicU8::new(WARMUP),
        next: AtomicU64::new(0),
        max_requests: opts.max_requests,
        request_timeout: opts.request_timeout,
        pace: opts.pace,
        record_accepts: opts.record_accepts,
        started: tokio::time::Instant::now(),
    });
    let tasks: Vec<_> = (0..opts.connections)
        .map(|_| tokio::spawn(connection(shared.clone())))
        .collect();

    let mut watched: Vec<(String, u32)> = watch.iter().map(|(n, p)| (n.to_string(), *p)).collect();
    watched.push(("client".to_owned(), std::process::id()));
    let cpu_now = || -> Vec<f64> {
        let machine = procs::machine_cpu_seconds().unwrap_or([f64::NAN; 3]);
        let mut v: Vec<f64> = watched
            .iter()
            .map(|(_, pid)| procs::cpu_seconds(*pid).unwrap_or(f64::NAN))
            .collect();
        v.extend(machine);
        v
    };

    tokio::time::sleep(opts.warmup).await;
    let cpu_before = cpu_now();
    shared.phase.store(MEASURE, Ordering::Relaxed);
    let started = Instant::now();
    let hook = on_window();
    tokio::time::sleep(opts.measure).await;
    shared.phase.store(STOP, Ordering::Relaxed);
    let window = started.elapsed();
    let cpu_after = cpu_now();

    let delta: Vec<f64> = cpu_before
        .iter()
        .zip(&cpu_after)
        .map(|(b, a)| a - b)
        .collect();
    let (own, machine) = delta.split_at(watched.len());
    let mut cpu: Vec<(String, f64)> = watched
        .iter()
        .zip(own)
        .map(|((name, _), s)| (name.clone(), *s))
        .collect();
    let other = (machine[0] - own.iter().sum::<f64>()).max(0.0);
    cpu.push(("other".to_owned(), other));
    cpu.push(("idle".to_owned(), machine[1]));
    cpu.push(("steal".to_owned(), machine[2]));
    let mut outcome = Outcome {
        window,
        window_start: Some(started),
        cpu,
        ..Outcome::default()
    };
    // Every task ends within one request timeout of the stop.
    let deadline = tokio::time::Instant::now() + opts.request_timeout + Duration::from_secs(5);
    for task in tasks {
        let abort = task.abort_handle();
        match tokio::time::timeout_at(deadline, task).await {
            Ok(Ok(r)) => {
                outcome.latencies.extend(r.latencies);
                outcome.accepted += r.accepted;
                outcome.accepts.extend(r.accepts);
                for (k, v) in r.failures {
                    *outcome.failures.entry(k).or_default() += v;
                }
            }
            Ok(Err(e)) => *outcome.failures.entry(format!("task: {e}")).or_default() += 1,
            Err(_) => {
                abort.abort();
                *outcome
                    .failures
                    .entry("connection task did not stop".to_owned())
                    .or_default() += 1;
            }
        }
    }
    outcome.latencies.sort_unstable();
    (outcome, hook)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_json_of_the_size_asked_and_unique() {
        let b = Bodies::new(2048);
        let (x, y) = (b.make(1), b.make(2));
        assert_eq!(x.len(), 2048);
        assert_ne!(x, y);
        let v: serde_json::Value = serde_json::from_slice(&y).unwrap();
        assert_eq!(v["order_id"], "BENCH-000000000002");
    }
}
