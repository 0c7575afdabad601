//! The forwarder against a real nats-server and an in-test backend that
//! records requests and fails on command.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use async_nats::jetstream;
use orderhub_tests::*;
use secrecy::SecretString;
use shared::verify::{Verifier, VerifyOptions};

const SIGNING_SECRET: &str = "whsec_dGVzdC1zaWduaW5nLXNlY3JldA==";

fn hub_toml(backends: &[(&str, &str)], schedule: &[&str], max_deliver: i64, extra: &str) -> String {
    let mut tenants = String::new();
    for (id, url) in backends {
        tenants.push_str(&format!(
            "[[tenant]]\nid = \"{id}\"\nbackend_url = \"{url}\"\nbackend_key_env = \"BACKEND_KEY\"\nsigning_secret_env = \"SIGNING_SECRET\"\n\n"
        ));
    }
    let schedule: Vec<String> = schedule.iter().map(|s| format!("{s:?}")).collect();
    // The test backends are on loopback, which the outbound policy refuses
    // unless allowed.
    let allow = "allowed_private_destinations = [\"127.0.0.0/8\"]\n";
    let extra = if extra.contains("[forwarder]\n") {
        extra.replacen("[forwarder]\n", &format!("[forwarder]\n{allow}"), 1)
    } else {
        format!("[forwarder]\n{allow}\n{extra}")
    };
    format!(
        "{tenants}[[account]]\nid = \"acc\"\nprovider = \"careem\"\ntenant = \"{}\"\nsecret_envs = [\"S\"]\n\n[retry]\nschedule = [{}]\nmax_deliver = {max_deliver}\n\n{extra}\n",
        backends[0].0,
        schedule.join(", ")
    )
}

fn env(name: &str) -> Option<String> {
    Some(
        match name {
            "BACKEND_KEY" => "backend-key-1",
            "SIGNING_SECRET" => SIGNING_SECRET,
            _ => "s",
        }
        .to_owned(),
    )
}

fn hub(toml: &str) -> shared::config::HubConfig {
    shared::config::HubConfig::from_toml(toml, "test", &env).expect("valid test hub")
}

async fn setup(
    nats: &NatsServer,
    hub: &shared::config::HubConfig,
) -> anyhow::Result<jetstream::Context> {
    let client = nats.client().await?;
    setup_streams(&client, hub).await?;
    Ok(jetstream::new(client))
}

fn order_body(n: u32) -> String {
    format!(r#"{{"schema":"orderhub.order.v1","provider_order_id":"P-{n}","note":"مطعم"}}"#)
}

#[tokio::test]
async fn each_order_is_posted_once_with_every_header_and_a_valid_signature() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let backend = TestBackend::start().await?;
    let hub = hub(&hub_toml(&[("acme", &backend.url())], &["1s"], 5, ""));
    let js = setup(&nats, &hub).await?;
    let stage = InProcessStage::forwarder(&nats.url(), &hub, 8);

    for n in 0..3 {
        publish_order(&js, "acme", &format!("wh-{n}"), &order_body(n)).await?;
    }
    eventually(STEP, "three requests", || async {
        (backend.requests().len() >= 3).then_some(())
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reqs = backend.requests();
    assert_eq!(reqs.len(), 3, "one request per order");
    let keys: BTreeSet<&str> = reqs
        .iter()
        .map(|r| r.header("idempotency-key").unwrap())
        .collect();
    assert_eq!(keys, BTreeSet::from(["wh-0", "wh-1", "wh-2"]));
    for r in &reqs {
        let n: u32 = r.header("idempotency-key").unwrap()[3..].parse()?;
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/api/v1/orders");
        assert_eq!(
            r.body.as_ref(),
            order_body(n).as_bytes(),
            "the body is the order as published"
        );
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("x-auth"), Some("backend-key-1"));
        assert_eq!(r.header("orderhub-attempt"), Some("1"));
        assert!(
            r.header("user-agent")
                .unwrap()
                .starts_with("orderhub-forwarder/")
        );
        assert_eq!(r.header("webhook-id"), r.header("idempotency-key"));
        // The backend verifies the hub with any Standard Webhooks library.
        let verified = shared::verify::direct::Direct.verify(
            &r.headers,
            &r.body,
            &[SecretString::from(SIGNING_SECRET.to_owned())],
            &VerifyOptions::default(),
            SystemTime::now(),
        );
        assert!(verified.is_ok(), "{verified:?}");
        let tampered = shared::verify::direct::Direct.verify(
            &r.headers,
            b"{}",
            &[SecretString::from(SIGNING_SECRET.to_owned())],
            &VerifyOptions::default(),
            SystemTime::now(),
        );
        assert!(tampered.is_err());
    }
    assert_eq!(
        consumer_pending(&js, "ORDERS", "forwarder-acme").await?,
        (0, 0)
    );
    let metrics = stage.metrics().await;
    assert!(
        metrics.contains("forwarder_backend_requests_total{tenant=\"acme\",outcome=\"success\"} 3"),
        "{metrics}"
    );
    stage.stop().await
}

#[tokio::test]
async fn a_failing_backend_gets_the_same_key_on_the_schedule() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let backend = TestBackend::start().await?;
    let mut calls = 0;
    backend.script(move |_| {
        calls += 1;
        if calls <= 2 {
            Reply::status(503)
        } else {
            Reply::status(201)
        }
    });
    let hub = hub(&hub_toml(
        &[("acme", &backend.url())],
        &["300ms", "600ms"],
        5,
        "[forwarder]\nbreaker_failures = 10\n",
    ));
    let js = setup(&nats, &hub).await?;
    let stage = InProcessStage::forwarder(&nats.url(), &hub, 8);
    publish_order(&js, "acme", "wh-retry", &order_body(1)).await?;
    eventually(STEP, "three attempts", || async {
        (backend.requests().len() >= 3).then_some(())
    })
    .await?;
    eventually(STEP, "acked", || async {
        (consumer_pending(&js, "ORDERS", "forwarder-acme")
            .await
            .ok()?
            == (0, 0))
            .then_some(())
    })
    .await?;
    let reqs = backend.requests();
    assert_eq!(reqs.len(), 3);
    let attempts: Vec<&str> = reqs
        .iter()
        .map(|r| r.header("orderhub-attempt").unwrap())
        .collect();
    assert_eq!(attempts, ["1", "2", "3"]);
    assert!(
        reqs.iter()
            .all(|r| r.header("idempotency-key") == Some("wh-retry"))
    );
    for (k, want) in [300u64, 600].into_iter().enumerate() {
        let gap = reqs[k + 1].at - reqs[k].at;
        let want = Duration::from_millis(want);
        assert!(
            gap >= want && gap < want + Duration::from_millis(500),
            "gap {k}: {gap:?}"
        );
    }
    assert!(dead_letters(&js).await?.is_empty());
    stage.stop().await
}

#[tokio::test]
async fn a_poison_order_is_dead_lettered_while_the_others_flow() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let backend = TestBackend::start().await?;
    backend.script(|r| {
        if r.header("idempotency-key") == Some("wh-poison") {
            Reply::status(500).with_body("NullReferenceException at OrderController")
        } else {
            Reply::status(200)
        }
    });
    let hub = hub(&hub_toml(&[("acme", &backend.url())], &["200ms"], 3, ""));
    let js = setup(&nats, &hub).await?;
    let stage = InProcessStage::forwarder(&nats.url(), &hub, 8);
    publish_order(&js, "acme", "wh-poison", &order_body(0)).await?;
    for n in 1..=6 {
        publish_order(&js, "acme", &format!("wh-{n}"), &order_body(n)).await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (entry, msg) = eventually(STEP, "the poison order's dead letter", || async {
        dead_letters(&js).await.ok()?.into_iter().next()
    })
    .await?;
    eventually(STEP, "the others delivered", || async {
        let ok = backend
            .requests()
            .iter()
            .filter(|r| r.header("idempotency-key") != Some("wh-poison"))
            .count();
        (ok == 6).then_some(())
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(dead_letters(&js).await?.len(), 1);
    assert_eq!(entry.webhook_id.as_deref(), Some("wh-poison"));
    assert_eq!(entry.stage, "forwarder");
    assert_eq!(entry.tenant.as_deref(), Some("acme"));
    assert_eq!(entry.deliveries, 3);
    assert_eq!(entry.error_class.as_str(), "backend_5xx");
    assert_eq!(
        entry.error,
        "deliveries exhausted after 3 attempts: backend answered 500: NullReferenceException at OrderController"
    );
    assert_eq!(msg.payload.as_ref(), order_body(0).as_bytes());
    let poison_requests = backend
        .requests()
        .iter()
        .filter(|r| r.header("idempotency-key") == Some("wh-poison"))
        .count();
    assert_eq!(poison_requests, 3);
    let others: Vec<String> = backend
        .requests()
        .iter()
        .filter_map(|r| r.header("idempotency-key").map(str::to_owned))
        .filter(|k| k != "wh-poison")
        .collect();
    assert_eq!(others.len(), 6, "each other order exactly once: {others:?}");
    stage.stop().await
}

#[tokio::test]
async fn a_400_is_dead_lettered_after_one_request() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let backend = TestBackend::start().await?;
    backend.script(|_| Reply::status(400).with_body(r#"{"error":"unknown branch amman-abdoun"}"#));
    let hub = hub(&hub_toml(&[("acme", &backend.url())], &["100ms"], 5, ""));
    let js = setup(&nats, &hub).await?;
    let stage = InProcessStage::forwarder(&nats.url(), &hub, 8);
    publish_order(&js, "acme", "wh-400", &order_body(1)).await?;
    let (entry, _) = await_dead_letter(&js).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(backend.requests().len(), 1);
    assert_eq!(entry.deliveries, 1);
    assert_eq!(entry.error_class.as_str(), "backend_rejected");
    assert_eq!(
        entry.error,
        r#"backend answered 400: {"error":"unknown branch amman-abdoun"}"#
    );
    stage.stop().await
}

#[tokio::test]
async fn retry_after_on_a_429_is_honoured() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let backend = TestBackend::start().await?;
    let mut calls = 0;
    backend.script(move |_| {
        calls += 1;
        if calls == 1 {
            Reply::status(429).with_header("retry-after", "2")
        } else {
            Reply::status(200)
        }
    });
    let hub = hub(&hub_toml(&[("acme", &backend.url())], &["100ms"], 5, ""));
    let js = setup(&nats, &hub).await?;
    let stage = InProcessStage::forwarder(&nats.url(), &hub, 8);
    publish_order(&js, "acme", "wh-429", &order_body(1)).await?;
    eventually(STEP, "the second try", || async {
        (backend.requests().len() >= 2).then_some(())
    })
    .await?;
    let reqs = backend.requests();
    let gap = reqs[1].at - reqs[0].at;
    assert!(
        gap >= Duration::from_secs(2),
        "retried after {gap:?}, Retry-After said 2s"
    );
    stage.stop().await
}

#[tokio::test]
async fn one_tenant_down_does_not_delay_another_and_spends_no_deliveries() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let mut down = TestBackend::start().await?;
    let up = TestBackend::start().await?;
    let hub = hub(&hub_toml(
        &[("alpha", &down.url()), ("bravo", &up.url())],
        &["100ms"],
        3,
        "[forwarder]\nbreaker_failures = 2\nbreaker_cooldown = \"300ms\"\nbreaker_max_cooldown = \"600ms\"\n",
    ));
    let js = setup(&nats, &hub).await?;
    down.down().await;
    let stage = InProcessStage::forwarder(&nats.url(), &hub, 8);

    for n in 0..5 {
        publish_order(&js, "alpha", &format!("a-{n}"), &order_body(n)).await?;
    }
    // Alpha's breaker opens...
    eventually(STEP, "alpha's breaker open", || async {
        let m = stage.metrics().await;
        (m.contains("forwarder_breaker_state{tenant=\"alpha\"} 1")
            || m.contains("forwarder_breaker_state{tenant=\"alpha\"} 2"))
        .then_some(())
    })
    .await?;
    // ...while bravo's orders go straight through.
    for n in 0..5 {
        publish_order(&js, "bravo", &format!("b-{n}"), &order_body(n)).await?;
    }
    eventually(Duration::from_secs(5), "bravo's orders", || async {
        (up.requests().len() == 5).then_some(())
    })
    .await?;
    // Alpha stays down far longer than 3 deliveries at 100 ms would last.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        dead_letters(&js).await?.is_empty(),
        "an outage must not exhaust deliveries"
    );
    down.up().await?;
    eventually(
        Duration::from_secs(15),
        "alpha's orders after it came back",
        || async {
            let keys: BTreeSet<String> = down
                .requests()
                .iter()
                .filter_map(|r| r.header("idempotency-key").map(str::to_owned))
                .collect();
            (keys.len() == 5).then_some(())
        },
    )
    .await?;
    eventually(STEP, "everything acked", || async {
        let a = consumer_pending(&js, "ORDERS", "forwarder-alpha")
            .await
            .ok()?;
        let b = consumer_pending(&js, "ORDERS", "forwarder-bravo")
            .await
            .ok()?;
        (a == (0, 0) && b == (0, 0)).then_some(())
    })
    .await?;
    assert!(dead_letters(&js).await?.is_empty());
    let m = stage.metrics().await;
    for want in [
        "forwarder_breaker_state{tenant=\"alpha\"} 0",
        // Opened once by the refused connections, then only by failed
        // probes; never by the rate (5 orders are under min_requests).
        "forwarder_breaker_opens_total{tenant=\"alpha\",reason=\"consecutive_failures\"} 1",
        "forwarder_breaker_opens_total{tenant=\"alpha\",reason=\"failure_rate\"} 0",
        "forwarder_breaker_opens_total{tenant=\"bravo\",reason=\"consecutive_failures\"} 0",
    ] {
        assert!(m.contains(want), "{want}\n{m}");
    }
    stage.stop().await
}

/// Whether the backend of the flaky tests answers 503 to the `n`th request
/// (from 0) for `key`: 40% of them, decided by a fixed-seed hash so that
/// each order's sequence of answers is the same in every run, whatever
/// order the requests come in.
fn flaky_503(key: &str, n: u32) -> bool {
    fn mix(mut z: u64) -> u64 {
        // splitmix64
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    let mut h = 0x0dde_4b0b_u64;
    for b in key.bytes() {
        h = mix(h ^ u64::from(b));
    }
    mix(h ^ u64::from(n)) % 100 < 40
}

#[tokio::test]
async fn a_backend_failing_40_percent_at_random_keeps_getting_every_order() -> anyhow::Result<()> {
    const ORDERS: u32 = 300;
    let nats = NatsServer::start()?;
    let backend = TestBackend::start().await?;
    let mut seen = std::collections::HashMap::<String, u32>::new();
    backend.script(move |r| {
        let key = r.header("idempotency-key").unwrap_or_default().to_owned();
        let n = seen.entry(key.clone()).or_default();
        let fail = flaky_503(&key, *n);
        *n += 1;
        Reply::status(if fail { 503 } else { 200 })
    });
    // What the script will do: requests per order until its first 200.
    let keys: Vec<String> = (0..ORDERS).map(|n| format!("wh-{n}")).collect();
    let tries = |k: &str| (0..).find(|&n| !flaky_503(k, n)).unwrap() + 1;
    let expected: u32 = keys.iter().map(|k| tries(k)).sum();
    let worst = keys.iter().map(|k| tries(k)).max().unwrap();
    let failed = expected - ORDERS;
    // The seed's share is near 40%: below the default 50%, and not so
    // close to it that the test is about luck.
    assert!(
        (f64::from(failed) / f64::from(expected) - 0.4).abs() < 0.03,
        "{failed} of {expected}"
    );
    assert!(worst < 20, "an order fails {worst} times in a row");
    // Default breaker settings; deliveries enough for the worst order.
    let hub = hub(&hub_toml(&[("acme", &backend.url())], &["100ms"], 20, ""));
    let js = setup(&nats, &hub).await?;
    let stage = InProcessStage::forwarder(&nats.url(), &hub, 8);
    for k in &keys {
        publish_order(&js, "acme", k, &order_body(0)).await?;
    }
    eventually(Duration::from_secs(60), "every order acked", || async {
        (consumer_pending(&js, "ORDERS", "forwarder-acme")
            .await
            .ok()?
            == (0, 0))
            .then_some(())
    })
    .await?;
    let reqs = backend.requests();
    assert_eq!(
        reqs.len() as u32,
        expected,
        "each order retried until its first 200, no more"
    );
    let delivered: BTreeSet<&str> = reqs
        .iter()
        .filter_map(|r| r.header("idempotency-key"))
        .collect();
    assert_eq!(delivered.len() as u32, ORDERS);
    assert!(dead_letters(&js).await?.is_empty());
    let m = stage.metrics().await;
    for want in [
        "forwarder_breaker_state{tenant=\"acme\"} 0".to_owned(),
        "forwarder_breaker_opens_total{tenant=\"acme\",reason=\"failure_rate\"} 0".to_owned(),
        "forwarder_breaker_opens_total{tenant=\"acme\",reason=\"consecutive_failures\"} 0"
            .to_owned(),
        format!("forwarder_backend_requests_total{{tenant=\"acme\",outcome=\"success\"}} {ORDERS}"),
        format!(
            "forwarder_backend_requests_total{{tenant=\"acme\",outcome=\"transient\"}} {failed}"
        ),
    ] {
        assert!(m.contains(&want), "{want}\n{m}");
    }
    stage.stop().await
}

#[tokio::test]
async fn a_backend_answering_only_503_opens_the_breaker_on_the_rate() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let backend = TestBackend::start().await?;
    backend.script(|_| Reply::status(503));
    let hub = hub(&hub_toml(
        &[("acme", &backend.url())],
        &["100ms"],
        8,
        "[forwarder]\nbreaker_window = \"1s\"\nbreaker_cooldown = \"300ms\"\nbreaker_max_cooldown = \"600ms\"\n",
    ));
    let js = setup(&nats, &hub).await?;
    let stage = InProcessStage::forwarder(&nats.url(), &hub, 8);
    for n in 0..30 {
        publish_order(&js, "acme", &format!("wh-{n}"), &order_body(n)).await?;
    }
    eventually(STEP, "the breaker open on the rate", || async {
        let m = stage.metrics().await;
        m.contains("forwarder_breaker_opens_total{tenant=\"acme\",reason=\"failure_rate\"} 1")
            .then_some(())
    })
    .await?;
    // Held: 2 s at one delivery per 100 ms would exhaust the 8
    // deliveries; held orders spend none.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(dead_letters(&js).await?.is_empty());
    backend.script(|_| Reply::status(200));
    eventually(Duration::from_secs(15), "every order acked", || async {
        (consumer_pending(&js, "ORDERS", "forwarder-acme")
            .await
            .ok()?
            == (0, 0))
            .then_some(())
    })
    .await?;
    assert!(dead_letters(&js).await?.is_empty());
    let m = stage.metrics().await;
    for want in [
        "forwarder_breaker_state{tenant=\"acme\"} 0",
        "forwarder_breaker_opens_total{tenant=\"acme\",reason=\"failure_rate\"} 1",
        "forwarder_breaker_opens_total{tenant=\"acme\",reason=\"consecutive_failures\"} 0",
        "forwarder_backend_requests_total{tenant=\"acme\",outcome=\"success\"} 30",
    ] {
        assert!(m.contains(want), "{want}\n{m}");
    }
    stage.stop().await
}

#[tokio::test]
async fn an_order_older_than_the_maximum_is_dead_lettered_as_stale() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let mut backend = TestBackend::start().await?;
    backend.down().await;
    let hub = hub(&hub_toml(
        &[("acme", &backend.url())],
        &["100ms"],
        10,
        "[forwarder]\nmax_order_age = \"2s\"\nbreaker_failures = 1\nbreaker_cooldown = \"300ms\"\n",
    ));
    let js = setup(&nats, &hub).await?;
    let stage = InProcessStage::forwarder(&nats.url(), &hub, 8);
    publish_order(&js, "acme", "wh-old", &order_body(1)).await?;
    let (entry, _) = await_dead_letter(&js).await?;
    assert_eq!(entry.error_class.as_str(), "stale");
    assert!(entry.error.starts_with("order is "), "{}", entry.error);
    assert!(
        entry.error.ends_with("old, beyond max_order_age 2s"),
        "{}",
        entry.error
    );
    assert!(
        entry.deliveries <= 2,
        "held, not retried: {}",
        entry.deliveries
    );
    stage.stop().await
}

#[tokio::test]
async fn a_forwarder_killed_mid_request_still_delivers_with_the_same_key() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let backend = TestBackend::start().await?;
    let mut calls = 0;
    backend.script(move |_| {
        calls += 1;
        if calls == 1 {
            Reply::status(200).after(Duration::from_secs(30))
        } else {
            Reply::status(200)
        }
    });
    let toml = hub_toml(
        &[("acme", &backend.url())],
        &["100ms"],
        5,
        "[streams.consumers.forwarder]\nack_wait = \"2s\"\n",
    );
    let hub = hub(&toml);
    let js = setup(&nats, &hub).await?;
    let dir = tempfile::tempdir()?;
    let hub_path = dir.path().join("hub.toml");
    std::fs::write(&hub_path, &toml)?;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_forwarder"))
        .env("NATS_URL", nats.url())
        .env("HUB_CONFIG", &hub_path)
        .env("OPS_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("BACKEND_KEY", "backend-key-1")
        .env("SIGNING_SECRET", SIGNING_SECRET)
        .env("S", "s")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    publish_order(&js, "acme", "wh-kill", &order_body(1)).await?;
    eventually(STEP, "the request in flight", || async {
        (!backend.requests().is_empty()).then_some(())
    })
    .await?;
    child.start_kill()?;
    child.wait().await?;

    let stage = InProcessStage::forwarder(&nats.url(), &hub, 8);
    eventually(STEP, "the order delivered by another forwarder", || async {
        (backend.requests().len() >= 2).then_some(())
    })
    .await?;
    eventually(STEP, "acked", || async {
        (consumer_pending(&js, "ORDERS", "forwarder-acme")
            .await
            .ok()?
            == (0, 0))
            .then_some(())
    })
    .await?;
    let keys: BTreeSet<String> = backend
        .requests()
        .iter()
        .filter_map(|r| r.header("idempotency-key").map(str::to_owned))
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(["wh-kill".to_owned()]),
        "a duplicate carries the same key"
    );
    assert!(dead_letters(&js).await?.is_empty());
    stage.stop().await
}

#[tokio::test]
async fn a_replayed_order_is_as_old_as_its_replay() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let backend = TestBackend::start().await?;
    let hub = hub(&hub_toml(
        &[("acme", &backend.url())],
        &["100ms"],
        5,
        "[forwarder]\nmax_order_age = \"1h\"\n",
    ));
    let js = setup(&nats, &hub).await?;
    let stage = InProcessStage::forwarder(&nats.url(), &hub, 8);
    let two_days_ago = SystemTime::now() - Duration::from_secs(2 * 86400);
    for (id, replay) in [("wh-old", false), ("wh-old-replayed", true)] {
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", format!("order:{id}").as_str());
        h.insert(shared::headers::WEBHOOK_ID, id);
        h.insert(shared::headers::TENANT, "acme");
        h.insert(shared::headers::PROVIDER, "careem");
        h.insert(
            shared::headers::RECEIVED_AT,
            shared::dlq::rfc3339(two_days_ago).as_str(),
        );
        if replay {
            h.insert(shared::headers::REPLAY_OF, "17");
        }
        js.publish_with_headers(
            shared::subjects::order("acme", shared::Provider::Careem),
            h,
            order_body(1).into(),
        )
        .await?
        .await?;
    }
    let (entry, _) = await_dead_letter(&js).await?;
    assert_eq!(entry.webhook_id.as_deref(), Some("wh-old"));
    assert_eq!(entry.error_class.as_str(), "stale");
    eventually(STEP, "the replayed order delivered", || async {
        (backend.requests().len() == 1).then_some(())
    })
    .await?;
    assert_eq!(
        backend.requests()[0].header("idempotency-key"),
        Some("wh-old-replayed")
    );
    stage.stop().await
}

#[tokio::test]
async fn a_redirect_is_dead_lettered_and_the_other_host_hears_nothing() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let backend = TestBackend::start().await?;
    let elsewhere = TestBackend::start().await?;
    let target = format!("{}?key=secret", elsewhere.url());
    backend.script(move |r| {
        let status = match r.header("idempotency-key") {
            Some("wh-301") => 301,
            _ => 307,
        };
        Reply::status(status).with_header("location", &target)
    });
    let hub = hub(&hub_toml(&[("acme", &backend.url())], &["100ms"], 5, ""));
    let js = setup(&nats, &hub).await?;
    let stage = InProcessStage::forwarder(&nats.url(), &hub, 8);
    publish_order(&js, "acme", "wh-301", &order_body(1)).await?;
    publish_order(&js, "acme", "wh-307", &order_body(2)).await?;
    let entries = await_dead_letters(&js, 2).await?;
    assert_eq!(entries.len(), 2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        elsewhere.requests().is_empty(),
        "the redirect was followed: {:?}",
        elsewhere.requests()
    );
    assert_eq!(backend.requests().len(), 2, "one request per order");
    for (entry, _) in &entries {
        let status = match entry.webhook_id.as_deref() {
            Some("wh-301") => 301,
            _ => 307,
        };
        assert_eq!(entry.error_class.as_str(), "backend_redirect");
        assert_eq!(entry.deliveries, 1);
        assert_eq!(
            entry.error,
            format!(
                "backend answered {status}, a redirect to 127.0.0.1:{}; redirects are not followed",
                elsewhere.port
            )
        );
    }
    let m = stage.metrics().await;
    assert!(
        m.contains("forwarder_backend_requests_total{tenant=\"acme\",outcome=\"rejected\"} 2"),
        "{m}"
    );
    assert!(!m.contains("outcome=\"success\"} 1"), "{m}");
    stage.stop().await
}

/// A backend that answers 500 with a body of `total` bytes, written as
/// fast as the client reads; says how many bytes it managed to write
/// before the client hung up.
async fn huge_error_backend(
    total: usize,
) -> anyhow::Result<(String, tokio::task::JoinHandle<usize>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://127.0.0.1:{}/orders", listener.local_addr()?.port());
    let task = tokio::spawn(async move {
        let Ok((mut s, _)) = listener.accept().await else {
            return 0;
        };
        let mut buf = vec![0u8; 64 * 1024];
        let _ = s.read(&mut buf).await;
        let head = format!("HTTP/1.1 500 Internal Server Error\r\ncontent-length: {total}\r\n\r\n");
        if s.write_all(head.as_bytes()).await.is_err() {
            return 0;
        }
        let chunk = vec![b'x'; 64 * 1024];
        let mut written = 0;
        while written < total {
            match s.write(&chunk[..chunk.len().min(total - written)]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => written += n,
            }
        }
        written
    });
    Ok((url, task))
}

#[tokio::test]
async fn a_huge_error_answer_is_read_only_up_to_the_bound() -> anyhow::Result<()> {
    const TOTAL: usize = 50 * 1024 * 1024;
    let nats = NatsServer::start()?;
    let (url, server) = huge_error_backend(TOTAL).await?;
    let hub = hub(&hub_toml(&[("acme", &url)], &["100ms"], 1, ""));
    let js = setup(&nats, &hub).await?;
    let stage = InProcessStage::forwarder(&nats.url(), &hub, 8);
    publish_order(&js, "acme", "wh-huge", &order_body(1)).await?;
    let (entry, _) = await_dead_letter(&js).await?;
    assert_eq!(entry.error_class.as_str(), "backend_5xx");
    assert_eq!(
        entry.error,
        format!(
            "deliveries exhausted after 1 attempts: backend answered 500: {}",
            "x".repeat(forwarder::BODY_SNIPPET)
        )
    );
    let written = tokio::time::timeout(STEP, server).await??;
    assert!(
        written < TOTAL,
        "the forwarder read the whole {TOTAL}-byte answer"
    );
    stage.stop().await
}

#[tokio::test]
async fn a_backend_on_loopback_is_refused_unless_allowed() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let backend = TestBackend::start().await?;
    let by_name = format!("http://localhost:{}/api/v1/orders", backend.port);
    let toml = hub_toml(
        &[("acme", &backend.url()), ("bravo", &by_name)],
        &["100ms"],
        5,
        "",
    )
    .replace("allowed_private_destinations = [\"127.0.0.0/8\"]\n", "");
    assert!(!toml.contains("allowed_private_destinations"));
    let hub = hub(&toml);
    let js = setup(&nats, &hub).await?;
    let stage = InProcessStage::forwarder(&nats.url(), &hub, 8);
    publish_order(&js, "acme", "wh-by-address", &order_body(1)).await?;
    publish_order(&js, "bravo", "wh-by-name", &order_body(2)).await?;
    let entries = await_dead_letters(&js, 2).await?;
    assert_eq!(entries.len(), 2);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(backend.requests().is_empty(), "a request reached loopback");
    for (entry, _) in &entries {
        assert_eq!(entry.error_class.as_str(), "backend_address_refused");
        assert_eq!(entry.deliveries, 1);
        match entry.webhook_id.as_deref() {
            Some("wh-by-address") => assert_eq!(
                entry.error,
                "backend address refused: 127.0.0.1 is a loopback address (127.0.0.1), refused by the outbound policy"
            ),
            _ => assert!(
                entry
                    .error
                    .starts_with("backend address refused: localhost is a loopback address ("),
                "{}",
                entry.error
            ),
        }
    }
    // No request was sent: the breakers heard nothing.
    let m = stage.metrics().await;
    assert!(
        m.contains("forwarder_breaker_state{tenant=\"acme\"} 0"),
        "{m}"
    );
    stage.stop().await
}
