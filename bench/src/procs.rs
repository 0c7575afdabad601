//! Processes: the servers under test as children (killed on drop), their CPU
//! time from `/proc`, and the machine's description.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::bail;

/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`, 100 on Linux).
const USER_HZ: f64 = 100.0;

/// User + system CPU seconds of `pid` so far (all its threads).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields start after its ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime and stime are fields 14, 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

/// Resident memory of `pid` in MiB.
pub fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// The machine's busy, idle (with iowait) and stolen CPU seconds so far
/// (all cores), from `/proc/stat`.
pub fn machine_cpu_seconds() -> Option<[f64; 3]> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // user nice system idle iowait irq softirq steal guest guest_nice;
    // guest time is already counted in user.
    let busy: f64 = v.iter().take(8).sum::<f64>() - v.get(3)? - v.get(4)? - v.get(7)?;
    let idle = v.get(3)? + v.get(4)?;
    Some([busy / USER_HZ, idle / USER_HZ, v.get(7)? / USER_HZ])
}

/// Waits (at most `within`) until the rest of the machine is quiet: the
/// busy share of all CPU time stays at or below `max_busy` for five
/// consecutive seconds (a build pauses between crates). Another engineer's build would skew a run. Returns
/// the last share seen.
pub async fn wait_quiet(max_busy: f64, within: Duration) -> f64 {
    let deadline = Instant::now() + within;
    let mut quiet_seconds = 0;
    let mut announced = false;
    let mut before = machine_cpu_seconds();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = machine_cpu_seconds();
        let share = match (before, after) {
            (Some(b), Some(a)) => {
                let d: Vec<f64> = a.iter().zip(&b).map(|(a, b)| a - b).collect();
                d[0] / (d[0] + d[1] + d[2]).max(f64::MIN_POSITIVE)
            }
            _ => return f64::NAN,
        };
        before = after;
        if share <= max_busy {
            quiet_seconds += 1;
            if quiet_seconds >= 5 {
                return share;
            }
        } else {
            quiet_seconds = 0;
            if !announced {
                println!(
                    "  (the machine is {:.0}% busy with other processes: waiting up to {within:?} for it to calm down)",
                    share * 100.0
                );
                announced = true;
            }
        }
        if Instant::now() > deadline {
            return share;
        }
    }
}

/// A server process under test; SIGKILLed on drop.
pub struct Server {
    pub child: Child,
    pub log: PathBuf,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `addr` accepts connections, or fails with the log.
    pub async fn wait_listening(
        &mut self,
        addr: SocketAddr,
        within: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!("server exited ({status}): {}", self.log_tail());
            }
            if Instant::now() > deadline {
                bail!(
                    "server not listening on {addr} within {within:?}: {}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The last lines of its output.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Cores, CPU model and kernel.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned());
    format!("{cores} cores, {model}, Linux {kernel}")
}

/// `GET /metrics` of a stage's ops address (empty if it does not answer).
pub async fn metrics_text(ops: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(ops).await.ok()?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
            .await
            .ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        Some(String::from_utf8_lossy(&buf).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or_default()
}
