//! A nats-server of the benchmark's own: the pinned binary (as in
//! `orderhub_tests::NatsServer`, whose few lines this copies so that the
//! benchmark knows the server's pid for its CPU accounting), on a free
//! 127.0.0.1 port with `nats/dev.conf` and a fresh temporary store.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How long a server may take to say it is ready.
const READY_WITHIN: Duration = Duration::from_secs(20);

/// The workspace root (the benchmark runs from its target directory).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ has a parent")
        .to_owned()
}

/// The pinned nats-server (`scripts/install-nats`), or `NATS_SERVER_BIN`.
pub fn server_bin() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("NATS_SERVER_BIN") {
        return Ok(PathBuf::from(p));
    }
    let p = workspace().join(".tools/venv/bin/nats-server");
    if !p.exists() {
        bail!(
            "no nats-server at {}: run scripts/install-nats (or set NATS_SERVER_BIN)",
            p.display()
        );
    }
    Ok(p)
}

/// `nats-server --version`, e.g. `nats-server: v2.15.1`.
pub fn server_version() -> String {
    server_bin()
        .ok()
        .and_then(|b| Command::new(b).arg("--version").output().ok())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A running single-node JetStream server; killed and its store removed on
/// drop.
pub struct NatsServer {
    pub port: u16,
    child: Child,
    // Dropped after the child is killed (field order).
    _store: tempfile::TempDir,
}

impl NatsServer {
    pub fn start() -> anyhow::Result<NatsServer> {
        let store = tempfile::Builder::new()
            .prefix("orderhub-bench-")
            .tempdir()?;
        let port = free_port()?;
        let log = store.path().join("server.log");
        let child = Command::new(server_bin()?)
            .arg("-c")
            .arg(workspace().join("nats/dev.conf"))
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .arg("-sd")
            .arg(store.path().join("js"))
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawn nats-server")?;
        let mut server = NatsServer {
            port,
            child,
            _store: store,
        };
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                && std::fs::read_to_string(&log).is_ok_and(|l| l.contains("Server is ready"))
            {
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                bail!(
                    "nats-server exited ({status}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "nats-server on port {port} not ready within {READY_WITHIN:?}: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Awaits publish acks in the background so a loader can keep publishing:
/// send each ack future to the sender; the task ends when the sender is
/// dropped and returns how many acks failed or took longer than [`crate::pipeline::STEP`].
pub fn acker() -> (
    tokio::sync::mpsc::Sender<async_nats::jetstream::context::PublishAckFuture>,
    tokio::task::JoinHandle<u64>,
) {
    let (tx, mut rx) =
        tokio::sync::mpsc::channel::<async_nats::jetstream::context::PublishAckFuture>(4096);
    let task = tokio::spawn(async move {
        let mut failed = 0u64;
        while let Some(ack) = rx.recv().await {
            if tokio::time::timeout(crate::pipeline::STEP, ack)
                .await
                .map_or(true, |r| r.is_err())
            {
                failed += 1;
            }
        }
        failed
    });
    (tx, task)
}
