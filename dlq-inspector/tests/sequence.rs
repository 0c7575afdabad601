//! What waits behind a dead letter (issue 17), against a real nats-server
//! with the `ORDER_SEQUENCE` bucket as the stages set it up: `show` lists
//! the order's later events that wait for an entry's event, `release` lets
//! them go and keeps the entry, `purge` releases before it deletes (and
//! deletes nothing it could not release), and an entry of a stage that
//! sequences nothing is refused.

mod common;

use std::time::{Duration, SystemTime};

use async_nats::jetstream;
use common::*;
use orderhub_tests::identities::Identities;
use orderhub_tests::*;
use shared::Provider;
use shared::sequence::{self, EventRecord, EventState, SEQUENCE_BUCKET, Sequencer};

/// The bucket as the stages set it up (`nats/streams.toml`).
async fn ensure_bucket(js: &jetstream::Context) -> anyhow::Result<()> {
    let defs = shared::streams::Definitions::load(&Default::default());
    tokio::time::timeout(
        STEP,
        shared::streams::ensure_bucket(js, defs.bucket(SEQUENCE_BUCKET), true),
    )
    .await??;
    Ok(())
}

async fn server_with_bucket() -> anyhow::Result<(NatsServer, jetstream::Context)> {
    let (nats, js) = server_with_streams().await?;
    ensure_bucket(&js).await?;
    Ok((nats, js))
}

fn order_entry(order: &str) -> String {
    sequence::order_key("acme", Provider::Careem, order)
}

/// Order `order` of acme on careem as the stages leave it when its
/// `created` is dead-lettered and its `cancelled` waits: the sequence entry
/// and the forwarder's DLQ entry (the canonical order as published on
/// ORDERS). Returns the DLQ entry's id.
async fn held_order(js: &jetstream::Context, order: &str) -> anyhow::Result<u64> {
    let seq = Sequencer::new(js.clone(), None);
    let entry = order_entry(order);
    let (created, cancelled) = (format!("created-{order}"), format!("cancelled-{order}"));
    for (key, name, phase, arrival) in [
        (&created, "created", 0, 10),
        (&cancelled, "cancelled", 2, 11),
    ] {
        let ev = sequence::Event {
            key,
            name,
            phase,
            seq: arrival,
        };
        tokio::time::timeout(STEP, seq.register(&entry, &ev)).await??;
    }
    tokio::time::timeout(STEP, seq.finish(&entry, &created, EventState::DeadLettered)).await??;
    let body = serde_json::json!({
        "schema": "orderhub.order.v1",
        "webhook_id": format!("wh-{order}"),
        "idempotency_key": created,
        "event": "created",
        "provider": "careem",
        "provider_order_id": order,
        "tenant": "acme",
    });
    let mut l = letter(
        "forwarder",
        "careem",
        Some("acme"),
        "backend_5xx",
        "deliveries exhausted after 3 attempts: backend answered 503",
    );
    l.webhook_id = Some(format!("wh-{order}"));
    seed(js, l, None, &body.to_string()).await
}

/// The events of `entry` by key: (name, state).
async fn states(js: &jetstream::Context, entry: &str) -> anyhow::Result<Vec<(String, EventState)>> {
    let seq = Sequencer::new(js.clone(), None);
    let (record, _) = tokio::time::timeout(STEP, seq.read(entry))
        .await??
        .ok_or_else(|| anyhow::anyhow!("no entry {entry}"))?;
    Ok(record
        .events
        .iter()
        .map(|e| (e.name.clone(), e.state))
        .collect())
}

async fn event(js: &jetstream::Context, entry: &str, key: &str) -> anyhow::Result<EventRecord> {
    let seq = Sequencer::new(js.clone(), None);
    let (record, _) = tokio::time::timeout(STEP, seq.read(entry))
        .await??
        .ok_or_else(|| anyhow::anyhow!("no entry {entry}"))?;
    record
        .event(key)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no event {key}"))
}

fn at(ms: u64) -> String {
    humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
        .to_string()
}

/// The line of `text` that starts with `prefix`.
fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting {prefix:?} in:\n{text}"))
}

/// `line` is `head`, an age (`<n><unit> ago`), then `tail`.
fn assert_aged(line: &str, head: &str, tail: &str) {
    let age = line
        .strip_prefix(head)
        .and_then(|rest| rest.strip_suffix(tail))
        .unwrap_or_else(|| panic!("{line:?} is not {head:?} <age> {tail:?}"));
    let n = age.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    assert!(
        !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) && age.len() <= 6,
        "{age:?} in {line:?}"
    );
}

use EventState::{Pending, Released};

#[tokio::test]
async fn show_lists_what_waits_and_release_lets_it_go_keeping_the_entry() -> anyhow::Result<()> {
    let (nats, js) = server_with_bucket().await?;
    let url = nats.url();
    let id = held_order(&js, "P-1").await?;
    let entry = order_entry("P-1");
    let created = event(&js, &entry, "created-P-1").await?;
    let cancelled = event(&js, &entry, "cancelled-P-1").await?;

    let r = inspector(&url, &["show", &id.to_string()]).await?;
    assert_eq!(r.code, 0, "{r:?}");
    assert_aged(
        line(&r.stdout, "  in its order"),
        &format!(
            "  in its order    dead_lettered since {} (",
            at(created.changed_ms)
        ),
        " ago): created of order P-1 of acme, key created-P-1",
    );
    let waiting = r
        .stdout
        .split_once("\nwaiting behind it:\n")
        .map(|(_, rest)| rest)
        .expect("a waiting section");
    let mut rest = waiting.lines();
    assert_aged(
        rest.next().unwrap_or_default(),
        &format!("  cancelled  pending since {} (", at(cancelled.changed_ms)),
        &format!(
            " ago), first seen {}, key cancelled-P-1",
            at(cancelled.first_seen_ms)
        ),
    );
    assert_eq!(rest.next(), Some(""));
    assert_eq!(rest.next(), Some("error:"));

    let r = inspector(&url, &["show", &id.to_string(), "--json"]).await?;
    assert_eq!(r.code, 0, "{r:?}");
    let mut v = r.json_lines().remove(0)["sequence"].take();
    for path in ["/event", "/waiting_behind/0"] {
        let age = v
            .pointer_mut(path)
            .and_then(|e| e.as_object_mut())
            .and_then(|o| o.remove("since_seconds"))
            .and_then(|a| a.as_u64());
        assert!(age.is_some_and(|a| a < 60), "{age:?}");
    }
    assert_eq!(
        v,
        serde_json::json!({
            "state": "dead_lettered",
            "entry": entry,
            "key": "created-P-1",
            "tenant": "acme",
            "provider_order_id": "P-1",
            "event": {
                "name": "created", "key": "created-P-1", "state": "dead_lettered",
                "since": at(created.changed_ms), "first_seen": at(created.first_seen_ms),
            },
            "waiting_behind": [{
                "name": "cancelled", "key": "cancelled-P-1", "state": "pending",
                "since": at(cancelled.changed_ms), "first_seen": at(cancelled.first_seen_ms),
            }],
        })
    );

    // No terminal to ask and no --yes: nothing released.
    let r = inspector(&url, &["release", &id.to_string()]).await?;
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(
        r.stderr,
        "dlq-inspector: release would let the later events of 1 entries' orders go without them: \
         pass --yes (stdin is not a terminal, so there is no one to ask); nothing released\n"
    );
    assert_eq!(
        states(&js, &entry).await?,
        [
            ("created".into(), EventState::DeadLettered),
            ("cancelled".into(), Pending)
        ]
    );

    let r = inspector(&url, &["release", &id.to_string(), "--yes"]).await?;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        r.stdout,
        format!(
            "released {id}: created of order P-1 of acme (was dead_lettered); 1 event let go (cancelled)\n"
        )
    );
    assert_eq!(r.stderr, "released 1 of 1\n");
    assert_eq!(
        states(&js, &entry).await?,
        [("created".into(), Released), ("cancelled".into(), Pending)]
    );
    assert_eq!(dlq_ids(&js).await?, [id], "the entry stays, replayable");

    // Released: nothing waits behind it any more; a second release
    // changes nothing.
    let released = event(&js, &entry, "created-P-1").await?;
    let r = inspector(&url, &["show", &id.to_string()]).await?;
    assert_eq!(r.code, 0, "{r:?}");
    assert_aged(
        line(&r.stdout, "  in its order"),
        &format!(
            "  in its order    released since {} (",
            at(released.changed_ms)
        ),
        " ago): created of order P-1 of acme, key created-P-1",
    );
    assert!(
        r.stdout
            .contains("\nwaiting behind it:\n  nothing waits behind it\n\nerror:\n"),
        "{}",
        r.stdout
    );
    let r = inspector(&url, &["release", &id.to_string(), "--yes", "--json"]).await?;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        r.json_lines(),
        [serde_json::json!({
            "id": id, "action": "released",
            "sequence": {
                "state": "released", "let_go": 0, "entry": entry, "key": "created-P-1",
                "tenant": "acme", "provider_order_id": "P-1",
            },
        })]
    );
    assert_eq!(event(&js, &entry, "created-P-1").await?, released);
    Ok(())
}

#[tokio::test]
async fn release_asks_on_a_terminal() -> anyhow::Result<()> {
    let (nats, js) = server_with_bucket().await?;
    let id = held_order(&js, "P-4").await?;
    let url = nats.url();
    let mut asked = Vec::new();
    for answer in [false, true] {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut confirm = |q: &str| {
            asked.push(q.to_owned());
            Ok::<bool, std::io::Error>(answer)
        };
        let code = tokio::time::timeout(
            STEP,
            dlq_inspector::run(
                [
                    "dlq-inspector",
                    "--nats-url",
                    &url,
                    "release",
                    "--stage",
                    "forwarder",
                ],
                dlq_inspector::Console {
                    out: &mut out,
                    err: &mut err,
                    confirm: Some(&mut confirm),
                    progress: false,
                },
            ),
        )
        .await?;
        let (out, err) = (String::from_utf8(out)?, String::from_utf8(err)?);
        if answer {
            assert_eq!(code, 0, "{out}{err}");
            assert_eq!(
                out,
                format!(
                    "released {id}: created of order P-4 of acme (was dead_lettered); 1 event let go (cancelled)\n"
                )
            );
        } else {
            assert_eq!(
                (code, out.as_str(), err.as_str()),
                (
                    1,
                    "",
                    "dlq-inspector: release not confirmed: nothing released\n"
                )
            );
            assert_eq!(
                states(&js, &order_entry("P-4")).await?[0],
                ("created".into(), EventState::DeadLettered)
            );
        }
    }
    let q = format!(
        "let the later events of 1 dead letters' orders go without them (ids {id})? the entries stay and can still be replayed"
    );
    assert_eq!(asked, [q.clone(), q]);
    Ok(())
}

#[tokio::test]
async fn purge_releases_first_and_keeps_what_it_could_not_release() -> anyhow::Result<()> {
    let (nats, js) = server_with_bucket().await?;
    let url = nats.url();
    let a = held_order(&js, "P-2").await?;
    let b = held_order(&js, "P-3").await?;

    let r = inspector(&url, &["purge", &a.to_string(), "--yes"]).await?;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        r.stdout,
        format!(
            "released {a}: created of order P-2 of acme (was dead_lettered); 1 event let go (cancelled)\npurged 1 of 1\n"
        )
    );
    assert_eq!(
        states(&js, &order_entry("P-2")).await?,
        [("created".into(), Released), ("cancelled".into(), Pending)]
    );
    assert_eq!(dlq_ids(&js).await?, [b]);

    // The bucket takes no writes (sealed): the release fails, so the entry
    // is not deleted and its order still holds.
    let mut config = js
        .get_stream(format!("KV_{SEQUENCE_BUCKET}"))
        .await?
        .cached_info()
        .config
        .clone();
    config.sealed = true;
    js.update_stream(config).await?;
    let r = inspector(&url, &["purge", &b.to_string(), "--yes"]).await?;
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.stdout, "purged 0 of 1\n");
    let prefix = format!(
        "entry {b} kept (nothing deleted): cannot release entry {b}'s event before the purge: \
         cannot write order P-3's sequence in ORDER_SEQUENCE: "
    );
    assert!(r.stderr.starts_with(&prefix), "{}", r.stderr);
    assert!(
        r.stderr
            .ends_with("\ndlq-inspector: 1 of 1 entries were not purged\n"),
        "{}",
        r.stderr
    );
    assert_eq!(dlq_ids(&js).await?, [b]);
    assert_eq!(
        states(&js, &order_entry("P-3")).await?,
        [
            ("created".into(), EventState::DeadLettered),
            ("cancelled".into(), Pending)
        ]
    );
    Ok(())
}

#[tokio::test]
async fn an_entry_of_a_stage_that_sequences_nothing_is_refused() -> anyhow::Result<()> {
    let (nats, js) = server_with_bucket().await?;
    let url = nats.url();
    let held = held_order(&js, "P-5").await?;
    let raw = seed(
        &js,
        letter(
            "transformer",
            "careem",
            Some("acme"),
            "unmapped_product",
            "invalid order: 1 problem: items[0].product_id: no product mapping for \"fries\"",
        ),
        None,
        r#"{"order_id":"P-5"}"#,
    )
    .await?;
    let why = "a transformer entry holds no order's events (only forwarder and status-sync entries are in an order's sequence)";

    let r = inspector(&url, &["show", &raw.to_string()]).await?;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        line(&r.stdout, "  in its order"),
        format!("  in its order    not sequenced: {why}")
    );
    assert!(!r.stdout.contains("waiting behind it"), "{}", r.stdout);

    // Named, alone or with a forwarder entry: nothing is released.
    for args in [
        vec!["release".to_owned(), raw.to_string(), "--yes".into()],
        vec![
            "release".to_owned(),
            held.to_string(),
            raw.to_string(),
            "--yes".into(),
        ],
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = inspector(&url, &args).await?;
        assert_eq!(r.code, 1, "{r:?}");
        assert_eq!(r.stdout, "");
        assert_eq!(
            r.stderr,
            format!(
                "dlq-inspector: DLQ entry {raw} cannot be released: {why}; nothing was released\n"
            )
        );
        assert_eq!(
            states(&js, &order_entry("P-5")).await?[0],
            ("created".into(), EventState::DeadLettered)
        );
    }

    // Selected by a filter: skipped and said so; the forwarder entry is
    // released and the run succeeds (nothing to release is no failure).
    let r = inspector(&url, &["release", "--tenant", "acme", "--yes"]).await?;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        r.stdout,
        format!(
            "released {held}: created of order P-5 of acme (was dead_lettered); 1 event let go (cancelled)\n\
             skipped {raw}: nothing to release: {why}\n"
        )
    );
    assert_eq!(r.stderr, "released 1 of 2; 1 hold no order's events\n");
    assert_eq!(dlq_ids(&js).await?, [held, raw]);

    // A forwarder entry whose body names no order: refused by id, and a
    // failure when a filter selects it.
    let mut ghost = letter(
        "forwarder",
        "careem",
        Some("acme"),
        "deliveries_exhausted",
        "the original is no longer in ORDERS",
    );
    ghost.subject = String::new();
    ghost.moved_by = shared::dlq::MovedBy::Mover;
    let ghost = seed(&js, ghost, None, "").await?;
    let unreadable = "its body does not say which order event it is (the entry has no body: its original was gone when it was dead-lettered)";
    let r = inspector(&url, &["release", &ghost.to_string(), "--yes"]).await?;
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (
            1,
            format!(
                "dlq-inspector: DLQ entry {ghost} cannot be released: {unreadable}; nothing was released\n"
            )
            .as_str()
        )
    );
    let r = inspector(
        &url,
        &["release", "--stage", "forwarder", "--yes", "--json"],
    )
    .await?;
    assert_eq!(r.code, 1, "{r:?}");
    let lines = r.json_lines();
    assert_eq!(lines.len(), 2, "{}", r.stdout);
    assert_eq!(lines[0]["sequence"]["state"], "released");
    assert_eq!(
        lines[1],
        serde_json::json!({"id": ghost, "action": "skipped", "reason": unreadable})
    );
    assert_eq!(
        r.stderr,
        "dlq-inspector: 1 of 2 entries were not released\n"
    );

    // Purged, it goes (nothing can be found to wait for it) and says so.
    let r = inspector(&url, &["purge", &ghost.to_string(), "--yes"]).await?;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        r.stderr,
        format!("entry {ghost}: {unreadable}: nothing released\n")
    );
    assert_eq!(dlq_ids(&js).await?, [held, raw]);
    Ok(())
}

/// The answers to a provider: a dead-lettered `accept` holds the `ready`.
#[tokio::test]
async fn a_status_sync_entry_holds_the_later_answers() -> anyhow::Result<()> {
    let (nats, js) = server_with_bucket().await?;
    let entry = sequence::status_key("acme", Provider::Careem, "P-6");
    let seq = Sequencer::new(js.clone(), None);
    for (key, name, phase, arrival) in [("st-accept", "accept", 0, 3), ("st-ready", "ready", 1, 4)]
    {
        let ev = sequence::Event {
            key,
            name,
            phase,
            seq: arrival,
        };
        seq.register(&entry, &ev).await?;
    }
    seq.finish(&entry, "st-accept", EventState::DeadLettered)
        .await?;
    let command = serde_json::json!({
        "schema": "orderhub.status.v1",
        "status_id": "st-accept",
        "tenant": "acme",
        "provider": "careem",
        "account": "acme-careem",
        "provider_order_id": "P-6",
        "action": "accept",
        "reason": null,
        "origin": "backend",
        "decided_at": "2026-05-01T03:00:00Z",
        "order_webhook_id": "wh-P-6",
    });
    let mut l = letter(
        "status-sync",
        "careem",
        Some("acme"),
        "provider_5xx",
        "careem answered 503",
    );
    l.stream = "STATUS".into();
    l.subject = "status.acme.careem".into();
    let id = seed(&js, l, None, &command.to_string()).await?;

    let r = inspector(&nats.url(), &["show", &id.to_string(), "--json"]).await?;
    assert_eq!(r.code, 0, "{r:?}");
    let v = &r.json_lines()[0]["sequence"];
    assert_eq!(v["state"], "dead_lettered");
    assert_eq!(v["entry"], entry.as_str());
    assert_eq!(v["waiting_behind"][0]["name"], "ready");
    assert_eq!(v["waiting_behind"].as_array().map(Vec::len), Some(1));

    let r = inspector(&nats.url(), &["release", &id.to_string(), "--yes"]).await?;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        r.stdout,
        format!(
            "released {id}: accept of order P-6 of acme (was dead_lettered); 1 event let go (ready)\n"
        )
    );
    assert_eq!(
        states(&js, &entry).await?,
        [("accept".into(), Released), ("ready".into(), Pending)]
    );
    Ok(())
}

/// `show`, `release` and `purge` need nothing beyond what
/// `nats/identities.toml` gives the dlq-inspector identity.
#[tokio::test]
async fn the_inspector_identity_may_show_and_release() -> anyhow::Result<()> {
    let ids = Identities::generate(true)?;
    let nats = NatsServer::start_with_identities(&ids)?;
    let keys = tempfile::tempdir()?;
    ids.write(keys.path())?;
    let me = Identities::seed_path(keys.path(), "dlq-inspector");
    let client = nats.client().await?;
    let hub = hub_from(&worker_hub_toml(&["1s"], 3, "30s"));
    setup_streams(&client, &hub).await?;
    let js = jetstream::new(client);
    ensure_bucket(&js).await?;
    let a = held_order(&js, "P-7").await?;
    let b = held_order(&js, "P-8").await?;

    let r = inspector_as(&nats.url(), Some(&me), &["show", &a.to_string()]).await?;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("\n  cancelled  pending since "),
        "{}",
        r.stdout
    );
    let r = inspector_as(
        &nats.url(),
        Some(&me),
        &["release", &a.to_string(), "--yes"],
    )
    .await?;
    assert_eq!(r.code, 0, "{r:?}");
    let r = inspector_as(&nats.url(), Some(&me), &["purge", &b.to_string(), "--yes"]).await?;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        states(&js, &order_entry("P-7")).await?[0],
        ("created".into(), Released)
    );
    assert_eq!(
        states(&js, &order_entry("P-8")).await?[0],
        ("created".into(), Released)
    );
    let log = nats.log();
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" Violation - "))
        .collect();
    assert!(refused.is_empty(), "{refused:#?}");
    Ok(())
}

/// Through the real transformer and forwarder: the backend refuses an
/// order's `created` (a 4xx: the DLQ), the cancellation sent after it
/// waits behind the dead letter, and `release` lets it reach the backend
/// on its first delivery; the entry stays for a replay.
#[tokio::test]
async fn a_release_lets_the_forwarder_deliver_what_waited() -> anyhow::Result<()> {
    use serde_json::{Value, json};
    let backend = TestBackend::start().await?;
    backend.script(|r| {
        let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        if body["provider_order_id"] == "DL" && body["event"] == "created" {
            Reply::status(422).with_body("unknown branch")
        } else {
            Reply::status(200)
        }
    });
    let hub = direct_hub(&direct_hub_toml(&backend.url(), 5, "30s", ""))?;
    let nats = NatsServer::start()?;
    let client = nats.client().await?;
    setup_streams(&client, &hub).await?;
    let js = jetstream::new(client);
    let transformer = InProcessStage::transformer(&nats.url(), &hub);
    let forwarder = InProcessStage::forwarder(&nats.url(), &hub, 8);

    let fixture = |name: &str| -> anyhow::Result<Value> {
        let path = workspace().join(format!("tests/fixtures/direct/{name}.json"));
        let mut v: Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
        v["provider_order_id"] = json!("DL");
        Ok(v)
    };
    let send = |webhook_id: &'static str, body: Value| {
        let js = js.clone();
        async move { publish_direct(&js, webhook_id, &body).await.map(|_| ()) }
    };
    send("dl-created", fixture("order-created")?).await?;
    let (letter, dead) = await_dead_letter(&js).await?;
    assert_eq!(letter.stage, "forwarder");
    let id = dead.sequence;
    send("dl-cancelled", fixture("order-cancelled")?).await?;
    forwarder
        .metrics_show(&[r#"forwarder_sequence_waiting{reason="dead_lettered_event"} 1"#])
        .await?;
    let entry = sequence::order_key("acme", Provider::Direct, "DL");
    assert_eq!(
        states(&js, &entry).await?,
        [
            ("created".into(), EventState::DeadLettered),
            ("cancelled".into(), Pending)
        ]
    );

    let r = inspector(&nats.url(), &["show", &id.to_string()]).await?;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout
            .contains("\nwaiting behind it:\n  cancelled  pending since "),
        "{}",
        r.stdout
    );
    let r = inspector(&nats.url(), &["release", &id.to_string(), "--yes"]).await?;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        r.stdout,
        format!(
            "released {id}: created of order DL of acme (was dead_lettered); 1 event let go (cancelled)\n"
        )
    );
    eventually(STEP, "the cancellation delivered", || async {
        (states(&js, &entry).await.ok()?.get(1)? == &("cancelled".to_owned(), EventState::Done))
            .then_some(())
    })
    .await?;
    let got: Vec<(String, String)> = backend
        .requests()
        .iter()
        .map(|r| {
            let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            (
                body["event"].as_str().unwrap_or("?").to_owned(),
                r.header("orderhub-attempt").unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!((got[0].0.as_str(), got[0].1.as_str()), ("created", "1"));
    assert_eq!(
        (got[1].0.as_str(), got[1].1.as_str()),
        ("cancelled", "1"),
        "it waited without spending a delivery"
    );
    assert_eq!(
        states(&js, &entry).await?,
        [
            ("created".into(), Released),
            ("cancelled".into(), EventState::Done)
        ]
    );
    assert_eq!(dlq_ids(&js).await?, [id], "the entry stays for a replay");
    transformer.stop().await?;
    forwarder.stop().await
}
