//! Per-order ordering and one key per order event (issue 17), against a
//! real nats-server: the transformer registers each event of an order in
//! `ORDER_SEQUENCE`, the forwarder delivers an order's events in the order
//! of its life, and nothing else waits.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use orderhub_tests::stack::Stack;
use orderhub_tests::*;
use serde_json::{Value, json};
use shared::Provider;
use shared::sequence::{EventState, Sequencer, order_key};

/// One tenant whose backend is the test's, one direct account.
fn toml(backend: &str, created_wait: &str, extra: &str) -> String {
    direct_hub_toml(backend, 20, created_wait, extra)
}

fn created(id: &str) -> Value {
    let mut v: Value = serde_json::from_str(
        &std::fs::read_to_string(workspace().join("tests/fixtures/direct/order-created.json"))
            .unwrap(),
    )
    .unwrap();
    v["provider_order_id"] = json!(id);
    v
}

fn updated(id: &str, step: u32) -> Value {
    json!({
        "schema": "orderhub.order.v1",
        "event": "updated",
        "status": {"state": "preparing", "provider_status": format!("step-{step}"), "reason": null, "at": null},
        "provider_order_id": id,
    })
}

fn cancelled(id: &str) -> Value {
    let mut v: Value = serde_json::from_str(
        &std::fs::read_to_string(workspace().join("tests/fixtures/direct/order-cancelled.json"))
            .unwrap(),
    )
    .unwrap();
    v["provider_order_id"] = json!(id);
    v
}

/// Stores a direct webhook on `WEBHOOKS` as the ingress does.
async fn send(js: &jetstream::Context, webhook_id: &str, body: &Value) -> anyhow::Result<u64> {
    publish_direct(js, webhook_id, body).await
}

/// What the backend got: (order id, event or update step, status, key,
/// attempt), in arrival order.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Got {
    order: String,
    what: String,
    status: u16,
    key: String,
    attempt: String,
}

fn what(body: &Value) -> String {
    match body["event"].as_str().unwrap_or("?") {
        "updated" => body["status"]["provider_status"]
            .as_str()
            .unwrap_or("?")
            .to_owned(),
        other => other.to_owned(),
    }
}

/// The requests the backend took, with the status its script answered.
struct Backend {
    inner: TestBackend,
    got: std::sync::Arc<std::sync::Mutex<Vec<Got>>>,
}

impl Backend {
    /// A backend answering `answer(order, what, attempts of that event so
    /// far)` and recording each request.
    async fn start(
        answer: impl Fn(&str, &str, usize, &[Got]) -> u16 + Send + 'static,
    ) -> anyhow::Result<Backend> {
        let inner = TestBackend::start().await?;
        let got: std::sync::Arc<std::sync::Mutex<Vec<Got>>> = Default::default();
        let log = got.clone();
        inner.script(move |r| {
            let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            let order = body["provider_order_id"].as_str().unwrap_or("?").to_owned();
            let what = what(&body);
            let mut log = log.lock().unwrap();
            let tries = log
                .iter()
                .filter(|g| g.order == order && g.what == what)
                .count();
            let status = answer(&order, &what, tries, &log);
            log.push(Got {
                order,
                what,
                status,
                key: r.header("idempotency-key").unwrap_or_default().to_owned(),
                attempt: r.header("orderhub-attempt").unwrap_or_default().to_owned(),
            });
            Reply::status(status)
        });
        Ok(Backend { inner, got })
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    /// Per order, what the backend took (2xx), in order.
    fn taken(&self) -> BTreeMap<String, Vec<String>> {
        let mut per: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for g in self.got() {
            if (200..300).contains(&g.status) {
                per.entry(g.order).or_default().push(g.what);
            }
        }
        per
    }
}

async fn rig(
    toml: &str,
) -> anyhow::Result<(NatsServer, jetstream::Context, shared::config::HubConfig)> {
    let nats = NatsServer::start()?;
    let hub = direct_hub(toml)?;
    let client = nats.client().await?;
    setup_streams(&client, &hub).await?;
    Ok((nats, jetstream::new(client), hub))
}

/// Waits until `order`'s entry is `want` (the forwarder records a
/// delivery just after the backend's answer) and returns it.
async fn settled_entry(
    js: &jetstream::Context,
    order: &str,
    want: &[(&str, EventState)],
) -> anyhow::Result<()> {
    let want: Vec<(String, EventState)> = want.iter().map(|(n, s)| ((*n).to_owned(), *s)).collect();
    let got = eventually(STEP, &format!("{order}'s entry"), || async {
        let got = entry(js, order).await.ok()?;
        (got == want).then_some(got)
    })
    .await;
    match got {
        Ok(_) => Ok(()),
        Err(e) => anyhow::bail!("{e}: want {want:?}, have {:?}", entry(js, order).await?),
    }
}

async fn entry(js: &jetstream::Context, order: &str) -> anyhow::Result<Vec<(String, EventState)>> {
    let seq = Sequencer::new(js.clone(), None);
    let (record, _) = seq
        .read(&order_key("acme", Provider::Direct, order))
        .await?
        .ok_or_else(|| anyhow::anyhow!("no sequence entry for {order}"))?;
    let mut events: Vec<_> = record.events.iter().collect();
    events.sort_by_key(|e| (e.phase, e.seq));
    Ok(events
        .into_iter()
        .map(|e| (e.name.clone(), e.state))
        .collect())
}

/// The backend fails an order's `created` until it has seen the 100
/// other orders sent with it (at least three times); the cancellation sent
/// meanwhile waits for it, spending no delivery, and goes after it; the
/// other orders never waited.
#[tokio::test]
async fn a_retried_created_holds_its_cancellation_and_nothing_else() -> anyhow::Result<()> {
    let backend = Backend::start(|order, what, tries, log| {
        let others = log
            .iter()
            .filter(|g| g.order.starts_with("O-") && g.status == 200)
            .count();
        if order == "HELD" && what == "created" && (tries < 3 || others < 100) {
            503
        } else {
            200
        }
    })
    .await?;
    let (nats, js, hub) = rig(&toml(&backend.inner.url(), "30s", "")).await?;
    let transformer = InProcessStage::transformer(&nats.url(), &hub);
    let forwarder = InProcessStage::forwarder(&nats.url(), &hub, 32);

    send(&js, "held-created", &created("HELD")).await?;
    send(&js, "held-cancelled", &cancelled("HELD")).await?;
    for n in 0..100 {
        send(&js, &format!("other-{n}"), &created(&format!("O-{n}"))).await?;
    }
    eventually(Duration::from_secs(60), "every order delivered", || async {
        let taken = backend.taken();
        (taken.len() == 101 && taken["HELD"].len() == 2).then_some(())
    })
    .await?;

    let got = backend.got();
    let held: Vec<(String, u16, String)> = got
        .iter()
        .filter(|g| g.order == "HELD")
        .map(|g| (g.what.clone(), g.status, g.attempt.clone()))
        .collect();
    let tries = held.iter().filter(|(w, _, _)| w == "created").count();
    assert!(tries >= 4, "{held:?}");
    let mut want: Vec<(String, u16, String)> = (1..tries)
        .map(|n| ("created".to_owned(), 503, n.to_string()))
        .collect();
    want.push(("created".into(), 200, tries.to_string()));
    // The cancellation: once, after its created, on its first delivery.
    want.push(("cancelled".into(), 200, "1".into()));
    assert_eq!(held, want);
    // Every other order arrived while the held one still failed.
    let first_held_success = got
        .iter()
        .position(|g| g.order == "HELD" && g.status == 200)
        .unwrap();
    let others_before = got[..first_held_success]
        .iter()
        .filter(|g| g.order.starts_with("O-") && g.status == 200)
        .count();
    assert_eq!(others_before, 100);
    // One key per event, the same on every try.
    let keys: std::collections::BTreeSet<&str> = got
        .iter()
        .filter(|g| g.order == "HELD" && g.what == "created")
        .map(|g| g.key.as_str())
        .collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(keys.iter().all(|k| k.starts_with("created-")), "{keys:?}");
    settled_entry(
        &js,
        "HELD",
        &[
            ("created", EventState::Done),
            ("cancelled", EventState::Done),
        ],
    )
    .await?;
    forwarder
        .metrics_show(&[
            // (It may first have waited for a created not yet registered:
            // the two are converted at once.)
            r#"forwarder_sequence_waits_total{reason="earlier_event"} 1"#,
            "forwarder_sequence_went_alone_total 0",
            "forwarder_sequence_late_total 0",
        ])
        .await?;
    transformer.stop().await?;
    forwarder.stop().await
}

/// The provider sends the cancellation before its order: the backend
/// still gets the created first. A cancellation whose created never comes
/// waits `created_wait`, then goes alone, counted.
#[tokio::test]
async fn a_cancellation_sent_first_goes_second_or_alone_after_the_wait() -> anyhow::Result<()> {
    let backend = Backend::start(|_, _, _, _| 200).await?;
    let (nats, js, hub) = rig(&toml(&backend.inner.url(), "3s", "")).await?;
    let transformer = InProcessStage::transformer(&nats.url(), &hub);
    let forwarder = InProcessStage::forwarder(&nats.url(), &hub, 16);

    let sent_alone = Instant::now();
    send(&js, "alone-cancelled", &cancelled("ALONE")).await?;
    send(&js, "early-cancelled", &cancelled("EARLY")).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    send(&js, "early-created", &created("EARLY")).await?;

    eventually(Duration::from_secs(30), "both orders delivered", || async {
        let taken = backend.taken();
        (taken.get("EARLY").map(Vec::len) == Some(2) && taken.contains_key("ALONE")).then_some(())
    })
    .await?;
    let alone_took = sent_alone.elapsed();
    let taken = backend.taken();
    assert_eq!(taken["EARLY"], ["created", "cancelled"]);
    assert_eq!(taken["ALONE"], ["cancelled"]);
    // It waited the whole created_wait, counted from when the hub first
    // saw it (after it was sent).
    assert!(alone_took >= Duration::from_secs(3), "{alone_took:?}");
    settled_entry(&js, "ALONE", &[("cancelled", EventState::Done)]).await?;
    forwarder
        .metrics_show(&[
            // Both cancellations waited for their created; EARLY's came.
            r#"forwarder_sequence_waits_total{reason="first_event"} 2"#,
            "forwarder_sequence_went_alone_total 1",
        ])
        .await?;

    // A created that comes after its cancellation went alone is still
    // delivered (nothing is dropped), and counted as late.
    send(&js, "alone-created", &created("ALONE")).await?;
    eventually(STEP, "the late created", || async {
        (backend.taken()["ALONE"].len() == 2).then_some(())
    })
    .await?;
    assert_eq!(backend.taken()["ALONE"], ["cancelled", "created"]);
    forwarder
        .metrics_show(&["forwarder_sequence_late_total 1"])
        .await?;
    transformer.stop().await?;
    forwarder.stop().await
}

/// The same order sent twice, the bodies differing only in a timestamp
/// (and a trailing newline): one created at the backend; the second copy
/// is acked as a duplicate with its key.
#[tokio::test]
async fn a_re_sent_order_with_another_timestamp_is_delivered_once() -> anyhow::Result<()> {
    let backend = Backend::start(|_, _, _, _| 200).await?;
    let (nats, js, hub) = rig(&toml(&backend.inner.url(), "30s", "")).await?;
    let transformer = InProcessStage::transformer(&nats.url(), &hub);
    let forwarder = InProcessStage::forwarder(&nats.url(), &hub, 16);

    let first = created("TWICE");
    send(&js, "twice-1", &first).await?;
    eventually(STEP, "the first copy", || async {
        backend.taken().contains_key("TWICE").then_some(())
    })
    .await?;
    let mut again = first.clone();
    again["placed_at"] = json!("2025-05-01T18:30:01+03:00");
    // Another body: the ingress gives it another webhook id.
    send(&js, "twice-2", &again).await?;
    eventually(STEP, "the second copy acked", || async {
        let (pending, ack_pending) = consumer_pending(&js, "ORDERS", "forwarder-acme")
            .await
            .ok()?;
        let converted = stream_messages(&js, "ORDERS").await.ok()?.len();
        (pending == 0 && ack_pending == 0 && converted == 2).then_some(())
    })
    .await?;
    let got = backend.got();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].what, "created");
    // Both copies on ORDERS carry the one key the backend got.
    let keys: Vec<String> = stream_messages(&js, "ORDERS")
        .await?
        .iter()
        .map(|m| {
            let v: Value = serde_json::from_slice(&m.payload).unwrap();
            v["idempotency_key"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(keys, [got[0].key.clone(), got[0].key.clone()]);
    forwarder
        .metrics_show(&["forwarder_sequence_duplicates_total 1"])
        .await?;
    transformer.stop().await?;
    forwarder.stop().await
}

/// The backend refuses an order's created (a 4xx: the DLQ); the order's
/// later events wait behind the dead letter; replaying it with
/// dlq-inspector delivers the created, then the others, in order.
#[tokio::test]
async fn a_dead_lettered_created_holds_its_order_until_it_is_replayed() -> anyhow::Result<()> {
    let refuse = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let refusing = refuse.clone();
    let backend = Backend::start(move |order, what, _, _| {
        if order == "DL" && what == "created" && refusing.load(std::sync::atomic::Ordering::SeqCst)
        {
            422
        } else {
            200
        }
    })
    .await?;
    let (nats, js, hub) = rig(&toml(&backend.inner.url(), "30s", "")).await?;
    let transformer = InProcessStage::transformer(&nats.url(), &hub);
    let forwarder = InProcessStage::forwarder(&nats.url(), &hub, 16);

    send(&js, "dl-created", &created("DL")).await?;
    let (_, dead) = await_dead_letter(&js).await?;
    assert_eq!(dead.subject.as_str(), "dlq.forwarder.direct");
    send(&js, "dl-updated", &updated("DL", 1)).await?;
    send(&js, "dl-cancelled", &cancelled("DL")).await?;
    send(&js, "free-created", &created("FREE")).await?;
    eventually(STEP, "the free order", || async {
        backend.taken().contains_key("FREE").then_some(())
    })
    .await?;
    eventually(STEP, "the later events registered", || async {
        (entry(&js, "DL").await.ok()?.len() == 3).then_some(())
    })
    .await?;
    assert_eq!(
        entry(&js, "DL").await?,
        vec![
            ("created".to_owned(), EventState::DeadLettered),
            ("updated".to_owned(), EventState::Pending),
            ("cancelled".to_owned(), EventState::Pending),
        ]
    );
    forwarder
        .metrics_show(&[r#"forwarder_sequence_waiting{reason="dead_lettered_event"} 2"#])
        .await?;
    assert_eq!(backend.taken().get("DL"), None);

    refuse.store(false, std::sync::atomic::Ordering::SeqCst);
    let out = tokio::process::Command::new(stack::bin("dlq-inspector")?)
        .args(["replay", &dead.sequence.to_string()])
        .env("NATS_URL", nats.url())
        .output()
        .await?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(STEP, "the order after its replay", || async {
        (backend.taken().get("DL").map(Vec::len) == Some(3)).then_some(())
    })
    .await?;
    assert_eq!(backend.taken()["DL"], ["created", "step-1", "cancelled"]);
    let later: Vec<String> = backend
        .got()
        .iter()
        .filter(|g| g.order == "DL" && g.what != "created")
        .map(|g| g.attempt.clone())
        .collect();
    assert_eq!(later, ["1", "1"], "the waiting events spent no delivery");
    settled_entry(
        &js,
        "DL",
        &[
            ("created", EventState::Done),
            ("updated", EventState::Done),
            ("cancelled", EventState::Done),
        ],
    )
    .await?;
    transformer.stop().await?;
    forwarder.stop().await
}

/// Two forwarder processes, one SIGKILLed mid-run; 200 orders of ten
/// events each (created, eight updates, cancelled), sent in each order's
/// sequence with the orders interleaved: per order the backend took them
/// in the provider's order (a SIGKILL may repeat an event under its one
/// key, right after itself), and none is missing.
#[tokio::test]
async fn two_forwarders_one_killed_keep_every_orders_events_in_order() -> anyhow::Result<()> {
    let toml = toml(
        "{{BACKEND_URL}}",
        "30s",
        "[streams.consumers.forwarder]\nack_wait = \"3s\"\n",
    );
    let mut stack = Stack::start(&toml, &[("S", DIRECT_SECRET)]).await?;
    stack.backend.script(|_| Reply::status(200));
    stack.spawn_replica("forwarder-2", "forwarder")?;
    stack.wait_ready("forwarder-2").await?;
    let js = jetstream::new(stack.nats.client().await?);

    const ORDERS: usize = 200;
    const EVENTS: u32 = 10;
    let event = |k: usize, i: u32| -> Value {
        let id = format!("K-{k}");
        match i {
            0 => created(&id),
            i if i == EVENTS - 1 => cancelled(&id),
            i => updated(&id, i),
        }
    };
    let want: Vec<String> = (0..EVENTS)
        .map(|i| match i {
            0 => "created".to_owned(),
            i if i == EVENTS - 1 => "cancelled".to_owned(),
            i => format!("step-{i}"),
        })
        .collect();
    let sender = {
        let js = js.clone();
        tokio::spawn(async move {
            for i in 0..EVENTS {
                for k in 0..ORDERS {
                    send(&js, &format!("k{k}-e{i}"), &event(k, i)).await?;
                }
            }
            anyhow::Ok(())
        })
    };
    let taken = |stack: &Stack| -> BTreeMap<String, Vec<(String, String)>> {
        let mut per: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
        for r in stack.backend.requests() {
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            per.entry(body["provider_order_id"].as_str().unwrap().to_owned())
                .or_default()
                .push((
                    what(&body),
                    r.header("idempotency-key").unwrap_or_default().to_owned(),
                ));
        }
        per
    };
    eventually(Duration::from_secs(60), "a fifth of the events", || async {
        (stack.backend.requests().len() >= 400).then_some(())
    })
    .await?;
    stack.kill("forwarder-2").await?;
    sender.await??;
    eventually(Duration::from_secs(180), "every event", || async {
        let t = taken(&stack);
        (t.len() == ORDERS
            && t.values().all(|v| {
                let mut seen: Vec<&str> = v.iter().map(|(w, _)| w.as_str()).collect();
                seen.dedup();
                seen.len() == EVENTS as usize
            }))
        .then_some(())
    })
    .await
    .map_err(|e| {
        anyhow::anyhow!(
            "{e}\nforwarder log:\n{}\nforwarder-2 log:\n{}",
            stack.log("forwarder"),
            stack.log("forwarder-2")
        )
    })?;
    let mut repeated = 0;
    for (order, events) in taken(&stack) {
        // A repeat is the same event under the same key, right after itself.
        let mut seen: Vec<(String, String)> = events.clone();
        seen.dedup();
        repeated += events.len() - seen.len();
        let names: Vec<String> = seen.iter().map(|(w, _)| w.clone()).collect();
        assert_eq!(names, want, "{order}: {events:?}");
        let keys: std::collections::BTreeSet<&String> = seen.iter().map(|(_, k)| k).collect();
        assert_eq!(keys.len(), EVENTS as usize, "{order}: one key per event");
    }
    eprintln!(
        "{} requests for {} events ({repeated} repeated after the SIGKILL)",
        stack.backend.requests().len(),
        ORDERS * EVENTS as usize
    );
    stack.stop().await
}
