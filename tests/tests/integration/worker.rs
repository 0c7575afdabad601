//! The shared worker loop against a real nats-server: retries on the
//! configured schedule, dead letters with every field, the advisory mover
//! catching a worker killed on the last delivery, several workers on one
//! consumer, graceful shutdown, and the ops endpoints.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_nats::jetstream;
use orderhub_tests::*;
use shared::dlq::MovedBy;
use shared::failure::FailureClass;
use shared::worker::{Delivery, Failure, Outcome};
use tokio::io::{AsyncBufReadExt, BufReader};

type Log = Arc<Mutex<Vec<(u64, i64, Instant)>>>;

fn record(log: &Log, d: &Delivery) {
    log.lock()
        .unwrap()
        .push((d.stream_seq, d.delivered, Instant::now()));
}

/// A nats-server of the test's own with the streams of `toml` set up.
async fn started(
    toml: &str,
) -> anyhow::Result<(NatsServer, shared::config::HubConfig, jetstream::Context)> {
    let nats = NatsServer::start()?;
    let hub = hub_from(toml);
    let client = nats.client().await?;
    setup_streams(&client, &hub).await?;
    Ok((nats, hub, jetstream::new(client)))
}

#[tokio::test]
async fn retries_follow_the_schedule() -> anyhow::Result<()> {
    let (nats, hub, js) = started(&worker_hub_toml(&["300ms", "600ms", "900ms"], 6, "30s")).await?;

    let log: Log = Arc::default();
    let l = log.clone();
    let worker = InProcessWorker::start(
        &nats.url(),
        &hub,
        FnHandler(move |d: Delivery| {
            record(&l, &d);
            async move {
                if d.delivered <= 3 {
                    Outcome::Retry(Failure::new(
                        FailureClass::BackendUnreachable,
                        format!("try {}", d.delivered),
                    ))
                } else {
                    Outcome::Ack
                }
            }
        }),
        4,
    );
    let seq = publish_raw(&js, "wh-retry", r#"{"order_id":"R1"}"#).await?;

    eventually(STEP, "the fourth delivery is acked", || async {
        let (pending, ack_pending) = consumer_pending(&js, "WEBHOOKS", "transformer")
            .await
            .ok()?;
        (log.lock().unwrap().len() == 4 && pending == 0 && ack_pending == 0).then_some(())
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = log.lock().unwrap().clone();
    let deliveries: Vec<(u64, i64)> = log.iter().map(|(s, d, _)| (*s, *d)).collect();
    assert_eq!(deliveries, [(seq, 1), (seq, 2), (seq, 3), (seq, 4)]);
    let want = [300, 600, 900];
    for (k, pair) in log.windows(2).enumerate() {
        let gap = pair[1].2 - pair[0].2;
        let expected = Duration::from_millis(want[k]);
        assert!(
            gap >= expected && gap < expected + Duration::from_millis(400),
            "gap before delivery {} was {gap:?}, schedule says {expected:?}",
            k + 2
        );
    }
    assert!(dead_letters(&js).await?.is_empty());
    // Success after failures forgets the failure history.
    let kv = js.get_key_value("FAILURES").await?;
    assert_eq!(kv.get(format!("WEBHOOKS.{seq}")).await?, None);
    worker.stop().await
}

/// The lag gauges: a message that keeps failing shows as one message of
/// lag with an ack floor standing still; once it is acked, both are 0.
#[tokio::test]
async fn the_lag_gauges_show_a_waiting_message_and_clear_once_it_is_acked() -> anyhow::Result<()> {
    let (nats, hub, js) = started(&worker_hub_toml(&["500ms"], 100, "30s")).await?;
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let f = fail.clone();
    let worker = InProcessWorker::start(
        &nats.url(),
        &hub,
        FnHandler(move |_d: Delivery| {
            let fail = f.load(std::sync::atomic::Ordering::SeqCst);
            async move {
                if fail {
                    Outcome::Retry(Failure::new(FailureClass::BackendUnreachable, "down"))
                } else {
                    Outcome::Ack
                }
            }
        }),
        4,
    );
    publish_raw(&js, "wh-lag", r#"{"order_id":"L1"}"#).await?;
    let value = |text: &str, name: &str| -> Option<i64> {
        text.lines()
            .find(|l| l.starts_with(&format!("{name}{{consumer=\"transformer\"}} ")))?
            .rsplit(' ')
            .next()?
            .parse()
            .ok()
    };
    eventually(Duration::from_secs(10), "lag 1, stalled 2 s", || async {
        let text = worker.metrics().await;
        (value(&text, "transformer_consumer_lag_messages")? == 1
            && value(&text, "transformer_consumer_stalled_seconds")? >= 2)
            .then_some(())
    })
    .await?;
    fail.store(false, std::sync::atomic::Ordering::SeqCst);
    eventually(Duration::from_secs(10), "lag and stall 0", || async {
        let text = worker.metrics().await;
        (value(&text, "transformer_consumer_lag_messages")? == 0
            && value(&text, "transformer_consumer_stalled_seconds")? == 0)
            .then_some(())
    })
    .await?;
    worker.stop().await
}

#[tokio::test]
async fn exhausted_deliveries_leave_exactly_one_dead_letter_with_every_field() -> anyhow::Result<()>
{
    let (nats, hub, js) = started(&worker_hub_toml(&["150ms"], 3, "30s")).await?;

    let log: Log = Arc::default();
    let l = log.clone();
    let worker = InProcessWorker::start(
        &nats.url(),
        &hub,
        FnHandler(move |d: Delivery| {
            record(&l, &d);
            async {
                Outcome::Retry(Failure::new(
                    FailureClass::Backend5xx,
                    "backend answered 503",
                ))
            }
        }),
        4,
    );
    let before = SystemTime::now();
    let body = r#"{"order_id":"X1","items":[]}"#;
    let seq = publish_raw(&js, "wh-exhaust", body).await?;

    let (entry, msg) = await_dead_letter(&js).await?;
    // Give a second entry (worker and mover racing) every chance to appear.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(dead_letters(&js).await?.len(), 1);
    assert_eq!(log.lock().unwrap().len(), 3);

    assert_eq!(entry.stage, "transformer");
    assert_eq!(entry.stream, "WEBHOOKS");
    assert_eq!(entry.subject, "webhooks.raw.careem.acme-careem");
    assert_eq!(entry.seq, seq);
    assert_eq!(entry.webhook_id.as_deref(), Some("wh-exhaust"));
    assert_eq!(entry.provider, "careem");
    assert_eq!(entry.tenant.as_deref(), Some("acme"));
    assert_eq!(entry.deliveries, 3);
    assert_eq!(entry.error_class.as_str(), "backend_5xx");
    assert_eq!(
        entry.error,
        "deliveries exhausted after 3 attempts: backend answered 503"
    );
    assert_eq!(entry.moved_by, MovedBy::Worker);
    assert!(entry.first_failure >= before - Duration::from_millis(5));
    let span = entry.last_failure.duration_since(entry.first_failure)?;
    assert!(
        span >= Duration::from_millis(300),
        "first failure should be the first delivery's: {span:?}"
    );
    assert_eq!(msg.subject.as_str(), "dlq.transformer.careem");
    assert_eq!(msg.payload.as_ref(), body.as_bytes());
    assert_eq!(msg.headers.get("X-Test").map(|v| v.as_str()), Some("kept"));
    assert_eq!(
        msg.headers
            .get(shared::headers::dlq::ORIGINAL_MSG_ID)
            .map(|v| v.as_str()),
        Some("careem:wh-exhaust")
    );

    assert_eq!(
        consumer_pending(&js, "WEBHOOKS", "transformer").await?,
        (0, 0)
    );
    let kv = js.get_key_value("FAILURES").await?;
    assert_eq!(kv.get(format!("WEBHOOKS.{seq}")).await?, None);
    worker.stop().await
}

#[tokio::test]
async fn a_permanent_error_dead_letters_on_the_first_delivery() -> anyhow::Result<()> {
    let (nats, hub, js) = started(&worker_hub_toml(&["100ms"], 5, "30s")).await?;

    let log: Log = Arc::default();
    let l = log.clone();
    let worker = InProcessWorker::start(
        &nats.url(),
        &hub,
        FnHandler(move |d: Delivery| {
            record(&l, &d);
            async {
                Outcome::DeadLetter(Failure::new(
                    FailureClass::InvalidPayload,
                    "items: must not be empty; total_amount: missing",
                ))
            }
        }),
        4,
    );
    publish_raw(&js, "wh-perm", "{}").await?;
    let (entry, _) = await_dead_letter(&js).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        log.lock().unwrap().len(),
        1,
        "a permanent error is never retried"
    );
    assert_eq!(entry.deliveries, 1);
    assert_eq!(entry.error_class.as_str(), "invalid_payload");
    assert_eq!(
        entry.error,
        "items: must not be empty; total_amount: missing"
    );
    assert_eq!(entry.first_failure, entry.last_failure);
    assert_eq!(dead_letters(&js).await?.len(), 1);
    assert_eq!(
        consumer_pending(&js, "WEBHOOKS", "transformer").await?,
        (0, 0)
    );
    worker.stop().await
}

fn test_worker(nats_url: &str, hub_path: &std::path::Path, mode: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_test-worker"));
    cmd.args(["--mode", mode, "--handle-ms", "300", "--concurrency", "4"])
        .env("NATS_URL", nats_url)
        .env("HUB_CONFIG", hub_path)
        .env("OPS_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("TEST_CAREEM_SECRET", "test-secret")
        .env("LOG_FORMAT", "pretty")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    cmd
}

/// Publishes one webhook to a `test-worker` process that holds every
/// message on its last delivery, and SIGKILLs the process while it holds
/// this one. Returns the sequence and the worker's "holding" line.
async fn killed_on_last_delivery(
    nats: &NatsServer,
    hub_path: &std::path::Path,
    js: &jetstream::Context,
    webhook_id: &str,
    body: &str,
) -> anyhow::Result<(u64, String)> {
    let mut child = test_worker(&nats.url(), hub_path, "hold-last").spawn()?;
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let seq = publish_raw(js, webhook_id, body).await?;
    let holding = tokio::time::timeout(STEP, async {
        while let Some(line) = lines.next_line().await? {
            if line.starts_with("holding ") {
                return anyhow::Ok(line);
            }
        }
        anyhow::bail!("test-worker exited before holding")
    })
    .await??;
    child.start_kill()?;
    child.wait().await?;
    Ok((seq, holding))
}

#[tokio::test]
async fn a_worker_killed_on_the_last_delivery_is_caught_by_the_mover() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let toml = worker_hub_toml(&["100ms"], 3, "2s");
    let hub = hub_from(&toml);
    let dir = tempfile::tempdir()?;
    let hub_path = dir.path().join("hub.toml");
    std::fs::write(&hub_path, &toml)?;
    let client = nats.client().await?;
    setup_streams(&client, &hub).await?;
    let js = jetstream::new(client);

    let (seq, holding) =
        killed_on_last_delivery(&nats, &hub_path, &js, "wh-crash", r#"{"order_id":"C1"}"#).await?;
    assert_eq!(holding, format!("holding {seq} 3"));

    // A fresh worker: its pull makes the server notice the exhausted
    // message (after ack_wait) and its mover dead-letters it. Its handler
    // must never see the message again.
    let log: Log = Arc::default();
    let l = log.clone();
    let worker = InProcessWorker::start(
        &nats.url(),
        &hub,
        FnHandler(move |d: Delivery| {
            record(&l, &d);
            async { Outcome::Ack }
        }),
        4,
    );
    let (entry, msg) = eventually(
        Duration::from_secs(30),
        "the mover's dead letter",
        || async { dead_letters(&js).await.ok()?.into_iter().next() },
    )
    .await?;
    assert_eq!(entry.moved_by, MovedBy::Mover);
    assert_eq!(entry.seq, seq);
    assert_eq!(entry.deliveries, 3);
    assert_eq!(entry.error_class.as_str(), "deliveries_exhausted");
    assert_eq!(
        entry.error,
        "no worker finished the last of 3 deliveries (it crashed, hung or was stopped); last error (backend_error): scripted failure"
    );
    assert_eq!(entry.webhook_id.as_deref(), Some("wh-crash"));
    assert_eq!(entry.tenant.as_deref(), Some("acme"));
    assert!(entry.last_failure > entry.first_failure);
    assert_eq!(msg.payload.as_ref(), br#"{"order_id":"C1"}"#);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(dead_letters(&js).await?.len(), 1);
    assert!(log.lock().unwrap().is_empty());
    assert_eq!(
        consumer_pending(&js, "WEBHOOKS", "transformer").await?,
        (0, 0)
    );
    worker.stop().await
}

#[tokio::test]
async fn two_workers_on_one_consumer_handle_every_message_once() -> anyhow::Result<()> {
    let (nats, hub, js) = started(&worker_hub_toml(&["1s"], 5, "30s")).await?;

    let seen: Arc<Mutex<Vec<(u8, u64)>>> = Arc::default();
    let make = |id: u8| {
        let seen = seen.clone();
        FnHandler(move |d: Delivery| {
            seen.lock().unwrap().push((id, d.stream_seq));
            async {
                tokio::time::sleep(Duration::from_millis(2)).await;
                Outcome::Ack
            }
        })
    };
    let a = InProcessWorker::start(&nats.url(), &hub, make(1), 16);
    let b = InProcessWorker::start(&nats.url(), &hub, make(2), 16);
    let mut published = BTreeSet::new();
    for i in 0..400 {
        published.insert(publish_raw(&js, &format!("wh-{i}"), "{}").await?);
    }
    eventually(STEP, "400 messages handled and acked", || async {
        let (p, ap) = consumer_pending(&js, "WEBHOOKS", "transformer")
            .await
            .ok()?;
        (seen.lock().unwrap().len() >= 400 && p == 0 && ap == 0).then_some(())
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = seen.lock().unwrap().clone();
    let handled: BTreeSet<u64> = seen.iter().map(|(_, s)| *s).collect();
    assert_eq!(seen.len(), 400, "some message was handled twice");
    assert_eq!(handled, published);
    let mut per_worker = BTreeMap::new();
    for (id, _) in &seen {
        *per_worker.entry(*id).or_insert(0) += 1;
    }
    assert_eq!(
        per_worker.len(),
        2,
        "both workers took a share: {per_worker:?}"
    );
    a.stop().await?;
    b.stop().await
}

#[tokio::test]
async fn sigterm_with_messages_in_flight_loses_none() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let toml = worker_hub_toml(&["1s"], 5, "30s");
    let hub = hub_from(&toml);
    let dir = tempfile::tempdir()?;
    let hub_path = dir.path().join("hub.toml");
    std::fs::write(&hub_path, &toml)?;
    let client = nats.client().await?;
    setup_streams(&client, &hub).await?;
    let js = jetstream::new(client);

    let mut published = BTreeSet::new();
    for i in 0..40 {
        published.insert(publish_raw(&js, &format!("wh-{i}"), "{}").await?);
    }
    let mut child = test_worker(&nats.url(), &hub_path, "slow").spawn()?;
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked_by_process = BTreeSet::new();
    // Let it finish a few, with more in flight, then ask it to stop.
    while acked_by_process.len() < 4 {
        let line = tokio::time::timeout(STEP, lines.next_line())
            .await??
            .ok_or_else(|| anyhow::anyhow!("test-worker exited early"))?;
        if let Some(seq) = line
            .strip_prefix("handled ")
            .and_then(|r| r.split(' ').next())
        {
            acked_by_process.insert(seq.parse::<u64>()?);
        }
    }
    let pid = child.id().expect("running") as i32;
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    assert!(sent.success());
    while let Some(line) = tokio::time::timeout(STEP, lines.next_line()).await?? {
        if let Some(seq) = line
            .strip_prefix("handled ")
            .and_then(|r| r.split(' ').next())
        {
            acked_by_process.insert(seq.parse::<u64>()?);
        }
    }
    let status = tokio::time::timeout(STEP, child.wait()).await??;
    assert!(status.success(), "SIGTERM exit: {status}");
    assert!(
        acked_by_process.len() < 40,
        "the process should have been stopped before finishing everything"
    );

    let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
    let s = seen.clone();
    let worker = InProcessWorker::start(
        &nats.url(),
        &hub,
        FnHandler(move |d: Delivery| {
            s.lock().unwrap().push(d.stream_seq);
            async { Outcome::Ack }
        }),
        8,
    );
    let remaining: BTreeSet<u64> = published.difference(&acked_by_process).copied().collect();
    eventually(STEP, "the rest handled by another worker", || async {
        let (p, ap) = consumer_pending(&js, "WEBHOOKS", "transformer")
            .await
            .ok()?;
        (seen.lock().unwrap().len() >= remaining.len() && p == 0 && ap == 0).then_some(())
    })
    .await?;
    let seen: BTreeSet<u64> = seen.lock().unwrap().iter().copied().collect();
    // Exactly the complement: nothing lost, nothing acked twice.
    assert_eq!(seen, remaining);
    assert!(dead_letters(&js).await?.is_empty());
    worker.stop().await
}

#[tokio::test]
async fn an_idle_worker_stops_at_once_on_sigterm_and_its_pull_takes_nothing() -> anyhow::Result<()>
{
    let nats = NatsServer::start()?;
    let toml = worker_hub_toml(&["1s"], 5, "30s");
    let hub = hub_from(&toml);
    let dir = tempfile::tempdir()?;
    let hub_path = dir.path().join("hub.toml");
    std::fs::write(&hub_path, &toml)?;
    let client = nats.client().await?;
    setup_streams(&client, &hub).await?;
    let js = jetstream::new(client);

    // Its pull request waits a minute for messages; stopping must not.
    let mut cmd = test_worker(&nats.url(), &hub_path, "ok");
    cmd.args(["--pull-expires-ms", "60000"]);
    let mut child = cmd.spawn()?;
    eventually(STEP, "the worker's pull is waiting", || async {
        let stream = js.get_stream("WEBHOOKS").await.ok()?;
        let mut consumer = stream
            .get_consumer::<jetstream::consumer::pull::Config>("transformer")
            .await
            .ok()?;
        (consumer.info().await.ok()?.num_waiting > 0).then_some(())
    })
    .await?;
    let pid = child.id().expect("running") as i32;
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    assert!(sent.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .map_err(|_| anyhow::anyhow!("still running 10 s after SIGTERM"))??;
    assert!(status.success(), "SIGTERM exit: {status}");

    // The server dropped the stopped worker's waiting request with its
    // inbox: a message published now goes to the next worker, not to the
    // dead request (where it would wait out the 30 s ack_wait).
    let seen: Arc<Mutex<Vec<(u64, i64)>>> = Arc::default();
    let s = seen.clone();
    let worker = InProcessWorker::start(
        &nats.url(),
        &hub,
        FnHandler(move |d: Delivery| {
            s.lock().unwrap().push((d.stream_seq, d.delivered));
            async { Outcome::Ack }
        }),
        4,
    );
    let seq = publish_raw(&js, "wh-after-stop", "{}").await?;
    eventually(STEP, "the next worker handled it", || async {
        let (p, ap) = consumer_pending(&js, "WEBHOOKS", "transformer")
            .await
            .ok()?;
        (!seen.lock().unwrap().is_empty() && p == 0 && ap == 0).then_some(())
    })
    .await?;
    assert_eq!(*seen.lock().unwrap(), [(seq, 1)]);
    worker.stop().await
}

#[tokio::test]
async fn the_ops_server_reports_health_readiness_and_metrics() -> anyhow::Result<()> {
    let (mut nats, hub, js) = started(&worker_hub_toml(&["100ms"], 2, "30s")).await?;

    let worker = InProcessWorker::start(
        &nats.url(),
        &hub,
        FnHandler(|d: Delivery| async move {
            if d.payload.as_ref() == b"bad" {
                Outcome::DeadLetter(Failure::new(FailureClass::InvalidPayload, "not json"))
            } else {
                Outcome::Ack
            }
        }),
        4,
    );
    let base = format!("http://127.0.0.1:{}", worker.ops_port);
    let http = reqwest::Client::new();
    let get = |path: &'static str| {
        let http = http.clone();
        let url = format!("{base}{path}");
        async move {
            let r = http
                .get(url)
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .ok()?;
            let status = r.status().as_u16();
            Some((status, r.text().await.ok()?))
        }
    };
    eventually(STEP, "/ready answers 200", || async {
        get("/ready").await.filter(|(s, _)| *s == 200)
    })
    .await?;
    assert_eq!(get("/health").await.map(|r| r.0), Some(200));
    // Before the first message, the series alerts take a rate() of exist
    // at 0: per provider, the worker's own errors and the mover's classes.
    let (_, before) = get("/metrics")
        .await
        .ok_or_else(|| anyhow::anyhow!("no /metrics"))?;
    for line in [
        "transformer_messages_received_total{provider=\"careem\"} 0",
        "transformer_messages_acked_total{provider=\"wolt\"} 0",
        "transformer_worker_errors_total{provider=\"careem\",error_type=\"ack_failed\"} 0",
        "transformer_messages_dead_lettered_total{provider=\"talabat\",error_type=\"deliveries_exhausted\"} 0",
    ] {
        assert!(before.contains(line), "missing {line:?} in\n{before}");
    }

    publish_raw(&js, "wh-ok", "{}").await?;
    publish_raw(&js, "wh-bad", "bad").await?;
    let metrics = eventually(STEP, "metrics count both messages", || async {
        let (_, text) = get("/metrics").await?;
        text.contains("transformer_messages_dead_lettered_total{provider=\"careem\",error_type=\"invalid_payload\"} 1")
            .then_some(text)
    })
    .await?;
    for line in [
        "transformer_messages_received_total{provider=\"careem\"} 2",
        "transformer_messages_acked_total{provider=\"careem\"} 1",
        "transformer_messages_in_flight 0",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
    }
    assert!(metrics.contains("transformer_handler_duration_seconds_bucket{"));
    // Acks and terminations were confirmed by the server, not timed out.
    let errors: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("transformer_worker_errors_total{"))
        .collect();
    assert_eq!(errors.len(), 4 * shared::Provider::ALL.len());
    assert!(
        errors.iter().all(|l| l.ends_with(" 0")),
        "worker errors: {errors:#?}"
    );

    nats.kill();
    let (status, body) = eventually(STEP, "/ready turns 503 without NATS", || async {
        get("/ready").await.filter(|(s, _)| *s == 503)
    })
    .await?;
    assert_eq!(status, 503);
    assert!(body.contains("\"nats_connected\":false"), "{body}");
    assert_eq!(get("/health").await.map(|r| r.0), Some(200));
    nats.restart()?;
    eventually(Duration::from_secs(30), "/ready back to 200", || async {
        get("/ready").await.filter(|(s, _)| *s == 200)
    })
    .await?;
    worker.stop().await
}

#[tokio::test]
async fn bad_config_stops_the_binary_naming_the_field() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let good = worker_hub_toml(&["1s"], 3, "30s");
    let cases = [
        (
            good.replace("max_deliver = 3", "max_deliver = \"three\""),
            vec![],
            "max_deliver",
        ),
        (
            good.clone(),
            vec!["TEST_CAREEM_SECRET"],
            "account acme-careem.secret_envs[0]: environment variable TEST_CAREEM_SECRET is not set or empty",
        ),
        (
            good.replace("provider = \"careem\"", "provider = \"kareem\""),
            vec![],
            "account acme-careem.provider: unknown provider \"kareem\"",
        ),
    ];
    for (i, (toml, unset, want)) in cases.into_iter().enumerate() {
        let path = dir.path().join(format!("hub{i}.toml"));
        std::fs::write(&path, toml)?;
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_test-worker"));
        cmd.env("HUB_CONFIG", &path)
            .env("TEST_CAREEM_SECRET", "s")
            .env("NATS_URL", "nats://127.0.0.1:1");
        for name in unset {
            cmd.env_remove(name);
        }
        let out = tokio::time::timeout(STEP, cmd.output()).await??;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "case {i}: {stderr}");
        assert!(stderr.contains(want), "case {i}: {stderr:?} lacks {want:?}");
        assert!(!stderr.contains("test-secret") && !stderr.contains("=s"));
    }
    Ok(())
}

#[tokio::test]
async fn a_handler_longer_than_ack_wait_is_kept_alive_by_progress_acks() -> anyhow::Result<()> {
    // ack_wait 1 s, a handler of 3.5 s: without in-progress acks JetStream
    // would redeliver it three times while it runs.
    let (nats, hub, js) = started(&worker_hub_toml(&["100ms"], 5, "1s")).await?;
    let log: Log = Arc::default();
    let l = log.clone();
    let worker = InProcessWorker::start(
        &nats.url(),
        &hub,
        FnHandler(move |d: Delivery| {
            record(&l, &d);
            async {
                tokio::time::sleep(Duration::from_millis(3500)).await;
                Outcome::Ack
            }
        }),
        4,
    );
    publish_raw(&js, "wh-long", "{}").await?;
    eventually(STEP, "the long handler acked", || async {
        let (p, ap) = consumer_pending(&js, "WEBHOOKS", "transformer")
            .await
            .ok()?;
        (log.lock().unwrap().len() == 1 && p == 0 && ap == 0).then_some(())
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let deliveries: Vec<i64> = log.lock().unwrap().iter().map(|(_, d, _)| *d).collect();
    assert_eq!(
        deliveries,
        [1],
        "one delivery, never redelivered under the handler"
    );
    worker.stop().await
}

#[tokio::test]
async fn on_a_work_queue_the_mover_also_removes_the_original() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let toml = format!(
        "{}\n[streams.overrides.WEBHOOKS]\nretention = \"workqueue\"\n",
        worker_hub_toml(&["100ms"], 2, "1s")
    );
    let hub = hub_from(&toml);
    let dir = tempfile::tempdir()?;
    let hub_path = dir.path().join("hub.toml");
    std::fs::write(&hub_path, &toml)?;
    let client = nats.client().await?;
    setup_streams(&client, &hub).await?;
    let js = jetstream::new(client);

    let (seq, _) =
        killed_on_last_delivery(&nats, &hub_path, &js, "wh-wq", r#"{"order_id":"Q1"}"#).await?;
    let worker =
        InProcessWorker::start(&nats.url(), &hub, FnHandler(|_| async { Outcome::Ack }), 4);
    let (entry, msg) = eventually(
        Duration::from_secs(30),
        "the mover's dead letter",
        || async { dead_letters(&js).await.ok()?.into_iter().next() },
    )
    .await?;
    assert_eq!((entry.seq, entry.moved_by), (seq, MovedBy::Mover));
    assert_eq!(msg.payload.as_ref(), br#"{"order_id":"Q1"}"#);
    eventually(STEP, "the original removed from the work queue", || async {
        let mut s = js.get_stream("WEBHOOKS").await.ok()?;
        (s.info().await.ok()?.state.messages == 0).then_some(())
    })
    .await?;
    worker.stop().await
}
