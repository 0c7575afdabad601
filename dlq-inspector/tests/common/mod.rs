//! Helpers shared by the dlq-inspector tests: run the real binary, seed
//! dead letters in the entry format the stages write.
#![allow(dead_code)] // each test file uses a part

use std::process::Stdio;
use std::time::SystemTime;

use async_nats::HeaderMap;
use async_nats::jetstream;
use orderhub_tests::*;
use shared::dlq::{DeadLetter, MovedBy};

/// What a run of the binary did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The stdout lines parsed as JSON (one object per line).
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
            .collect()
    }

    /// The `id` of each JSON line.
    pub fn ids(&self) -> Vec<u64> {
        self.json_lines()
            .iter()
            .map(|v| v["id"].as_u64().expect("id"))
            .collect()
    }
}

/// Runs `dlq-inspector` with `NATS_URL=url`, stdin not a terminal.
pub async fn inspector(url: &str, args: &[&str]) -> anyhow::Result<Run> {
    inspector_as(url, None, args).await
}

/// [`inspector`], signed in with the NKey seed file `nkey` if given.
pub async fn inspector_as(
    url: &str,
    nkey: Option<&std::path::Path>,
    args: &[&str],
) -> anyhow::Result<Run> {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_dlq-inspector"));
    match nkey {
        Some(path) => cmd.env("NATS_NKEY", path),
        None => cmd.env_remove("NATS_NKEY"),
    };
    let child = cmd
        .args(args)
        .env("NATS_URL", url)
        .env_remove("NATS_CREDS")
        .env_remove("NATS_TLS_CA")
        .env_remove("NATS_TLS_CERT")
        .env_remove("NATS_TLS_KEY")
        .env("DLQ_INSPECTOR_TIMEOUT_MS", "3000")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(STEP, child).await??;
    Ok(Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout)?,
        stderr: String::from_utf8(out.stderr)?,
    })
}

/// A dead letter as a stage writes it.
pub fn letter(
    stage: &str,
    provider: &str,
    tenant: Option<&str>,
    class: &str,
    error: &str,
) -> DeadLetter {
    let now = SystemTime::now();
    let (stream, subject) = if stage == "transformer" {
        (
            "WEBHOOKS",
            format!("webhooks.raw.{provider}.{provider}-acc"),
        )
    } else {
        (
            "ORDERS",
            format!("orders.{}.{provider}", tenant.unwrap_or("acme")),
        )
    };
    DeadLetter {
        stage: stage.to_owned(),
        stream: stream.to_owned(),
        subject,
        seq: 0,
        webhook_id: Some(format!("wh-{provider}-{class}")),
        provider: provider.to_owned(),
        tenant: tenant.map(str::to_owned),
        deliveries: 3,
        first_failure: now,
        last_failure: now,
        error_class: class.parse().expect("a failure class"),
        error: error.to_owned(),
        moved_by: MovedBy::Worker,
    }
}

/// Stores `entry` in the DLQ (its `seq` made unique) and returns its id.
pub async fn seed(
    js: &jetstream::Context,
    mut entry: DeadLetter,
    original: Option<&HeaderMap>,
    body: &str,
) -> anyhow::Result<u64> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1000);
    if entry.seq == 0 {
        entry.seq = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    let before = dlq_ids(js).await?;
    tokio::time::timeout(
        STEP,
        shared::dlq::publish(js, &entry, original, bytes::Bytes::from(body.to_owned())),
    )
    .await??;
    let after = dlq_ids(js).await?;
    let new: Vec<u64> = after
        .into_iter()
        .filter(|id| !before.contains(id))
        .collect();
    anyhow::ensure!(new.len() == 1, "one new DLQ entry, got {new:?}");
    Ok(new[0])
}

/// The ids (DLQ sequences) in the DLQ, oldest first.
pub async fn dlq_ids(js: &jetstream::Context) -> anyhow::Result<Vec<u64>> {
    Ok(stream_messages(js, "DLQ")
        .await?
        .iter()
        .map(|m| m.sequence)
        .collect())
}

/// A server with the hub's streams set up; its JetStream context.
pub async fn server_with_streams() -> anyhow::Result<(NatsServer, jetstream::Context)> {
    let nats = NatsServer::start()?;
    let hub = hub_from(&worker_hub_toml(&["1s"], 3, "30s"));
    let client = nats.client().await?;
    setup_streams(&client, &hub).await?;
    let js = jetstream::new(client);
    // Replays and purges record their outcomes there (the stages set it up).
    let defs = shared::streams::Definitions::load(&hub.streams);
    shared::streams::ensure_stream(&js, defs.stream(shared::outcome::OUTCOMES_STREAM), true)
        .await?;
    Ok((nats, js))
}
