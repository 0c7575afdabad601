//! The whole hub, every binary a separate process, against a real
//! nats-server and the test backend: every fixture of every provider goes
//! in signed at the ingress (Grab's with a token minted for its account,
//! Keeta's envelope re-signed now over the account's webhook URL) and comes
//! out at the backend as its expected canonical order (or lands in the DLQ
//! with its expected error), and nothing unsigned or forged gets past the
//! ingress.

use std::time::{Duration, SystemTime};

use async_nats::jetstream;
use orderhub_tests::fixtures::{Fixture, Signer, comparable};
use orderhub_tests::*;
use secrecy::SecretString;
use serde_json::Value;
use shared::Provider;
use shared::config::HubConfig;
use shared::verify::{self, Signed};

/// Every account of tests/fixtures/hub.toml but Grab's signs with this
/// (Standard Webhooks needs a whsec_ key; the other schemes take any bytes).
const SECRET: &str = "whsec_dGVzdA==";
pub(crate) const ENV: [(&str, &str); 2] = [("S", SECRET), ("S_GRAB", GRAB_TOKEN_KEY)];

/// The fixtures' hub config, as the stages load it.
fn hub() -> HubConfig {
    let text = std::fs::read_to_string(workspace().join("tests/fixtures/hub.toml")).unwrap();
    HubConfig::from_toml(&text, "hub.toml", &|name| {
        ENV.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
            .or_else(|| (name == "S_WOLT_V1").then(|| WOLT_V1_SEED.to_owned()))
    })
    .expect("the fixtures' hub config loads")
}

/// The account a fixture goes to, and what its provider signs with there.
fn target(hub: &HubConfig, f: &Fixture) -> (String, Signer) {
    let account = format!("acme-{}", f.provider);
    let target = f.target_account(&account);
    let config = hub
        .account(f.provider, &target)
        .unwrap_or_else(|| panic!("{}: no account {target}", f.name));
    (account, Signer::of(config))
}

pub(crate) fn hub_toml() -> String {
    std::fs::read_to_string(workspace().join("tests/fixtures/hub.toml"))
        .unwrap()
        .replace("\"http://127.0.0.1:9/orders\"", "\"{{BACKEND_URL}}\"")
        .replace("http://127.0.0.1:9/provider", "{{PROVIDER_URL}}")
}

async fn start() -> anyhow::Result<Stack> {
    Stack::start(&hub_toml(), &ENV).await
}

/// What sending every fixture should produce.
pub(crate) struct Sent {
    /// The expected orders, comparable with [`comparable`].
    pub(crate) orders: Vec<Value>,
    /// The expected dead letters' (class, message).
    pub(crate) dead: Vec<(String, String)>,
    /// Per provider: the webhooks stored, and how many of them are refused.
    per_provider: std::collections::BTreeMap<Provider, (usize, usize)>,
}

/// Sends every fixture of every provider, signed, to the stack's ingress;
/// each must be answered as stored.
pub(crate) async fn send_every_fixture(stack: &Stack) -> anyhow::Result<Sent> {
    let fixtures = fixtures::all();
    assert!(
        fixtures.len() >= 20,
        "fixtures went missing: {}",
        fixtures.len()
    );
    for p in [
        Provider::Doordash,
        Provider::Glovo,
        Provider::Grab,
        Provider::Keeta,
    ] {
        assert!(fixtures.iter().any(|f| f.provider == p), "no {p} fixture");
    }
    let client = reqwest::Client::new();
    let hub = hub();
    let mut sent = Sent {
        orders: Vec::new(),
        dead: Vec::new(),
        per_provider: Default::default(),
    };
    for f in &fixtures {
        let (account, signer) = target(&hub, f);
        let r = f
            .request(&client, &stack.ingress_url(), &account, &signer)
            .timeout(STEP)
            .send()
            .await?;
        let status = r.status();
        let text = r.text().await?;
        if f.provider == Provider::Keeta {
            // Keeta dictates its answer.
            assert_eq!(
                (status.as_u16(), text.as_str()),
                (200, r#"{"code":0,"message":"Success"}"#),
                "{}",
                f.name
            );
        } else {
            assert_eq!(status, 202, "{}: {text}", f.name);
        }
        let counts = sent.per_provider.entry(f.provider).or_default();
        counts.0 += 1;
        if f.is_refused() {
            counts.1 += 1;
            sent.dead.push((
                f.expected["error"]["class"].as_str().unwrap().to_owned(),
                f.expected["error"]["message"].as_str().unwrap().to_owned(),
            ));
        } else {
            sent.orders
                .push(comparable(f.expected.clone(), &f.expected));
        }
    }
    Ok(sent)
}

/// Waits until every expected order is at the backend and every expected
/// dead letter in the DLQ; when one never comes, names the missing orders,
/// the DLQ and each stage's log, so a failure can be read without
/// re-running.
pub(crate) async fn await_every_order(
    stack: &Stack,
    js: &jetstream::Context,
    sent: &Sent,
) -> anyhow::Result<()> {
    let want_orders = &sent.orders;
    let arrived = eventually(
        Duration::from_secs(60),
        "every order at the backend",
        || async { (stack.backend.requests().len() >= want_orders.len()).then_some(()) },
    )
    .await;
    if let Err(e) = arrived {
        let got: Vec<Value> = stack
            .backend
            .requests()
            .iter()
            .filter_map(|r| serde_json::from_slice(&r.body).ok())
            .collect();
        let missing: Vec<&Value> = want_orders
            .iter()
            .filter(|want| !got.iter().any(|o| comparable(o.clone(), want) == **want))
            .map(|want| &want["provider_order_id"])
            .collect();
        let dead: Vec<String> = dead_letters(js)
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|(e, _)| format!("{} {}: {}", e.stage, e.error_class.as_str(), e.error))
            .collect();
        let logs: String = orderhub_tests::stack::STAGES
            .iter()
            .map(|s| format!("--- {s}:\n{}\n", stack.log(s)))
            .collect();
        anyhow::bail!("{e}: missing {missing:?}\ndead letters: {dead:#?}\n{logs}");
    }
    eventually(
        Duration::from_secs(30),
        "every refused payload in the DLQ",
        || async { (dead_letters(js).await.ok()?.len() >= sent.dead.len()).then_some(()) },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn every_fixture_arrives_as_its_expected_order_or_dead_letter() -> anyhow::Result<()> {
    let stack = start().await?;
    let js = jetstream::new(stack.nats.client().await?);
    let sent = send_every_fixture(&stack).await?;
    await_every_order(&stack, &js, &sent).await?;
    let (want_orders, mut want_dead) = (sent.orders, sent.dead);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let received = stack.backend.requests();
    assert_eq!(received.len(), want_orders.len(), "one request per order");
    let mut unmatched = want_orders.clone();
    for r in &received {
        let order: Value = serde_json::from_slice(&r.body)?;
        let key = r.header("idempotency-key").unwrap();
        assert_eq!(order["idempotency_key"], key, "the key is the event's");
        let pos = unmatched
            .iter()
            .position(|want| comparable(order.clone(), want) == *want)
            .ok_or_else(|| anyhow::anyhow!("unexpected order at the backend: {order:#}"))?;
        unmatched.remove(pos);
    }
    assert!(unmatched.is_empty(), "never arrived: {unmatched:#?}");

    let mut dead: Vec<(String, String)> = dead_letters(&js)
        .await?
        .into_iter()
        .map(|(e, _)| {
            assert_eq!(e.stage, "transformer");
            assert_eq!(e.deliveries, 1, "refused payloads are never retried");
            (e.error_class.as_str().to_owned(), e.error)
        })
        .collect();
    dead.sort();
    want_dead.sort();
    assert_eq!(dead, want_dead);
    stack.stop().await
}

/// Every fixture through the whole hub with the ledger beside it and its
/// PostgreSQL cut off (a loopback proxy refusing connections): every order
/// reaches the backend meanwhile, the ledger is not ready and acks nothing;
/// once the database is back the ledger holds each message of each stream
/// exactly once, with no gap, every order's timeline runs in the
/// pipeline's order, and each provider's stats count what was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_catches_up_on_every_fixture_after_its_database_was_away() -> anyhow::Result<()>
{
    use crate::ledger::{Ledger, TOKEN, count};
    use orderhub_tests::pg::TestDb;
    use orderhub_tests::tcp_proxy::TcpProxy;

    let stack = start().await?;
    let js = jetstream::new(stack.nats.client().await?);
    let db = TestDb::create().await?;
    let pool = db.pool().await?;
    let mut proxy = TcpProxy::start("127.0.0.1:5432".parse()?).await?;
    let ledger = Ledger::start(&stack.nats, db.options_via(proxy.port));
    eventually(STEP, "the ledger ready", || async {
        (ledger.ready().await?.0 == 200).then_some(())
    })
    .await?;

    proxy.down();
    let sent = send_every_fixture(&stack).await?;
    await_every_order(&stack, &js, &sent).await?;
    let (_, ready) = eventually(Duration::from_secs(30), "the ledger not ready", || async {
        ledger.ready().await.filter(|(s, _)| *s == 503)
    })
    .await?;
    assert_eq!(ready["checks"]["database"], false);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM provider_order_logs").await,
        0,
        "nothing written while the database is away"
    );

    proxy.up().await?;
    // Caught up: each table holds its stream's messages 1..=n, each once.
    let tables = [
        ("WEBHOOKS", "webhook_logs"),
        ("ORDERS", "provider_order_logs"),
        ("OUTCOMES", "order_outcomes"),
        ("STATUS", "status_decisions"),
        ("DLQ", "delivery_error_logs"),
    ];
    let caught_up = eventually(Duration::from_secs(60), "the ledger caught up", || async {
        for (stream, table) in tables {
            let n = js
                .get_stream(stream)
                .await
                .ok()?
                .info()
                .await
                .ok()?
                .state
                .messages as i64;
            let sql = format!(
                "SELECT count(*) FROM {table} WHERE stream_seq BETWEEN 1 AND {n} \
                 HAVING count(DISTINCT stream_seq) = count(*)"
            );
            if n == 0 || count(&pool, &sql).await != n {
                return None;
            }
        }
        Some(())
    })
    .await;
    if let Err(e) = caught_up {
        let mut shown = String::new();
        for (stream, table) in tables {
            let n = js.get_stream(stream).await?.info().await?.state.messages;
            let rows = count(&pool, &format!("SELECT count(*) FROM {table}")).await;
            shown.push_str(&format!("{stream}: {n} messages, {table}: {rows} rows\n"));
        }
        anyhow::bail!("{e}:\n{shown}");
    }
    assert_eq!(
        count(&pool, "SELECT count(*) FROM ledger_unparsed").await,
        0
    );

    // Each delivered order's timeline: per webhook, received (or fetched),
    // then converted, then an attempt, then delivered.
    for want in &sent.orders {
        let (provider, id) = (
            want["provider"].as_str().unwrap(),
            want["provider_order_id"].as_str().unwrap(),
        );
        let (status, timeline) = ledger
            .get(&format!("/api/orders/{provider}/{id}"), Some(TOKEN))
            .await?;
        assert_eq!(status, 200, "{provider} {id}: {timeline}");
        let entries = timeline["entries"].as_array().unwrap();
        let webhook = want["webhook_id"].as_str();
        let position = |kind: &str| {
            entries.iter().position(|e| {
                e["kind"] == kind && (webhook.is_none() || e["webhook_id"].as_str() == webhook)
            })
        };
        let steps = [
            position("webhook_received"),
            position("converted"),
            position("attempt"),
            position("delivered"),
        ];
        assert!(
            steps.iter().all(Option::is_some) && steps.is_sorted(),
            "{provider} {id}: {steps:?} in {timeline:#}"
        );
    }

    // Stats count what was sent, by provider.
    for (provider, (stored, refused)) in &sent.per_provider {
        let (status, stats) = ledger
            .get(
                &format!("/api/webhooks/stats/{provider}?since=1h"),
                Some(TOKEN),
            )
            .await?;
        assert_eq!(status, 200, "{stats}");
        let delivered = sent
            .orders
            .iter()
            .filter(|o| o["provider"] == provider.as_str())
            .count();
        let total = &stats["counts"];
        assert_eq!(
            (
                total["received"].as_u64(),
                total["refused"].as_u64(),
                total["converted"].as_u64(),
                total["delivered"].as_u64()
            ),
            (
                Some(*stored as u64),
                Some(*refused as u64),
                Some(delivered as u64),
                Some(delivered as u64)
            ),
            "{provider}: {stats:#}"
        );
    }
    ledger.stop().await?;
    stack.stop().await
}

/// The whole hub against a nats-server that speaks only TLS and admits
/// only clients with a certificate its CA signed: every stage connects
/// with `NATS_TLS_CA`, `NATS_TLS_CERT` and `NATS_TLS_KEY`, and every
/// fixture arrives as in the plain run; a client without a certificate is
/// refused.
#[tokio::test]
async fn every_fixture_arrives_over_tls_with_client_certificates() -> anyhow::Result<()> {
    let tls = orderhub_tests::tls::TlsFiles::generate()?;
    let stack = Stack::start_tls(&hub_toml(), &ENV, &tls).await?;
    let js = jetstream::new(stack.nats.client().await?);
    let sent = send_every_fixture(&stack).await?;
    await_every_order(&stack, &js, &sent).await?;
    assert_eq!(stack.backend.requests().len(), sent.orders.len());

    // Without a client certificate, or without TLS: refused.
    let with_ca_only = async_nats::ConnectOptions::new()
        .add_root_certificates(tls.ca.clone())
        .require_tls(true)
        .connect(stack.nats.url());
    let refused = tokio::time::timeout(STEP, with_ca_only).await?;
    assert!(refused.is_err(), "a client without a certificate got in");
    let plain = tokio::time::timeout(STEP, async_nats::connect(stack.nats.url())).await?;
    assert!(plain.is_err(), "a plain client got in");
    stack.stop().await
}

#[tokio::test]
async fn nothing_unsigned_gets_past_the_ingress() -> anyhow::Result<()> {
    let stack = start().await?;
    let js = jetstream::new(stack.nats.client().await?);
    let fixtures = fixtures::all();
    let hub = hub();
    let client = reqwest::Client::new();
    for f in &fixtures {
        // Signed with another secret (for Grab: a token the hub never
        // issued; for Keeta: a sig over the right URL with another app
        // secret), and not signed at all (Keeta's fixtures carry a zero sig
        // and an old timestamp).
        let p = f.provider;
        let (account, signer) = target(&hub, f);
        let forger = signer.with_secret(SecretString::from(
            "whsec_b3RoZXItc2VjcmV0LW9mLWF0LWxlYXN0LTMyLWJ5dGVz".to_owned(),
        ));
        let wrong = verify::verifier(p)
            .sign(&f.body, &forger.secret, &forger.options, SystemTime::now())
            .unwrap();
        for signed in [wrong, Signed::headers(Default::default())] {
            let r = f
                .send(&client, &stack.ingress_url(), &account, signed)
                .timeout(STEP)
                .send()
                .await?;
            assert_eq!(r.status(), 401, "{}", f.name);
            assert_eq!(r.text().await?, r#"{"error":"unauthorized"}"#, "{}", f.name);
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(stream_messages(&js, "WEBHOOKS").await?.is_empty());
    assert!(stream_messages(&js, "ORDERS").await?.is_empty());
    assert!(stack.backend.requests().is_empty());
    stack.stop().await
}

#[tokio::test]
async fn a_dead_letter_replays_through_todays_config_once_its_cause_is_fixed() -> anyhow::Result<()>
{
    let strict_account = "[account.products]\n\"burger-classic\" = \"prod_1001\"\n\n[[account]]\nid = \"acme-talabat\"";
    let toml = hub_toml();
    assert!(
        toml.contains(strict_account),
        "the strict account's mapping moved"
    );
    let mut stack = start().await?;
    let js = jetstream::new(stack.nats.client().await?);

    // The strict tenant requires every product mapped; fries are not.
    let body = br#"{"order_id":"R-1","store_id":991,"created_at":"2025-05-02T12:05:41Z","customer":{"name":"Omar"},"items":[{"id":"burger-classic","name":"Burger","quantity":1,"price":"3.500"},{"id":"fries-large","name":"Fries","quantity":2,"price":"1.250"}],"total_amount":"6.000"}"#;
    let signed = shared::verify::careem::sign(body, &SecretString::from(SECRET.to_owned()));
    let r = reqwest::Client::new()
        .post(format!(
            "{}/api/webhooks/careem/strict-careem",
            stack.ingress_url()
        ))
        .headers(signed)
        .body(&body[..])
        .timeout(STEP)
        .send()
        .await?;
    assert_eq!(r.status(), 202);
    let (entry, _) = await_dead_letter(&js).await?;
    assert_eq!(entry.error_class.as_str(), "unmapped_product");
    assert!(stack.backend.requests().is_empty());
    let dlq_id = stream_messages(&js, "DLQ").await?[0].sequence;

    // The operator adds the mapping and restarts the transformer...
    let fixed = toml.replace(
        strict_account,
        "[account.products]\n\"burger-classic\" = \"prod_1001\"\n\"fries-large\" = \"prod_3101\"\n\n[[account]]\nid = \"acme-talabat\"",
    );
    std::fs::write(
        stack.hub_path(),
        fixed
            .replace("{{BACKEND_URL}}", &stack.backend.url())
            .replace("{{PROVIDER_URL}}", &stack.provider.url()),
    )?;
    stack.kill("transformer").await?;
    stack.spawn("transformer")?;
    stack.wait_ready("transformer").await?;
    // ...and replays the dead letter with the operator's CLI.
    let out = tokio::process::Command::new(orderhub_tests::stack::bin("dlq-inspector")?)
        .args(["replay", &dlq_id.to_string()])
        .env("NATS_URL", stack.nats.url())
        .output()
        .await?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let req = eventually(STEP, "the corrected order at the backend", || async {
        stack.backend.requests().into_iter().next()
    })
    .await?;
    let order: Value = serde_json::from_slice(&req.body)?;
    assert_eq!(order["provider_order_id"], "R-1");
    assert_eq!(order["tenant"], "strict");
    assert_eq!(order["items"][1]["product_id"], "prod_3101");
    assert_eq!(order["totals"]["total"], 6000);
    // The webhook id survived the replay, and the backend's key is the
    // order event's.
    assert_eq!(
        Some(order["webhook_id"].as_str().unwrap()),
        entry.webhook_id.as_deref()
    );
    assert_eq!(
        req.header("idempotency-key"),
        order["idempotency_key"].as_str()
    );
    assert!(
        order["idempotency_key"]
            .as_str()
            .is_some_and(|k| k.starts_with("created-"))
    );
    assert!(
        dead_letters(&js).await?.is_empty(),
        "the replayed entry is gone"
    );
    stack.stop().await
}
