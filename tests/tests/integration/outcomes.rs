//! Outcome events (issue 16, point 1) against a real nats-server: the exact
//! steps each stage stores on `OUTCOMES` for a message (kinds, order,
//! fields), published before the message is acked or dead-lettered; a
//! redelivered step stored once; and a message whose outcome cannot be
//! stored is not acked and comes back.

use async_nats::jetstream;
use orderhub_tests::*;
use serde_json::{Value, json};
use shared::outcome::Outcome;

const TRANSFORMER_HUB: &str = r#"
[[tenant]]
id = "acme"
backend_url = "http://127.0.0.1:9/orders"

[[account]]
id = "acme-careem"
provider = "careem"
tenant = "acme"
secret_envs = ["TEST_CAREEM_SECRET"]
currency = "JOD"
country = "JO"
default = true
[account.branches]
"991" = "amman-abdoun"
[account.products]
"burger-classic" = "prod_1001"

[retry]
schedule = ["200ms"]
max_deliver = 50

[streams.consumers.transformer]
ack_wait = "2s"
"#;

const ORDER: &str = r#"{"order_id":"TEST123","store_id":"991","created_at":"2025-05-01T18:30:00+03:00","customer":{"name":"Laila","phone":"0791234567"},"items":[{"id":"burger-classic","name":"Burger","quantity":2,"price":2.675}],"total_amount":"5.350"}"#;

/// The stored outcomes as JSON without their time (the one field a test
/// cannot know), each checked to read as the contract's [`Outcome`].
async fn outcomes(js: &jetstream::Context) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    for m in stream_messages(js, "OUTCOMES").await? {
        let o: Outcome = serde_json::from_slice(&m.payload)?;
        assert_eq!(
            m.headers.get("Nats-Msg-Id").map(|v| v.as_str().to_owned()),
            Some(o.msg_id())
        );
        assert_eq!(
            m.subject.as_str(),
            shared::outcome::subject(o.stage, o.provider)
        );
        let mut v: Value = serde_json::from_slice(&m.payload)?;
        v.as_object_mut().unwrap().remove("at");
        // A duration is measured: present, its value unknown.
        if let Some(d) = v.as_object_mut().unwrap().get_mut("duration_ms") {
            assert!(d.is_u64(), "{d}");
            *d = json!("measured");
        }
        out.push(v);
    }
    Ok(out)
}

async fn wait_outcomes(js: &jetstream::Context, n: usize) -> anyhow::Result<Vec<Value>> {
    eventually(STEP, &format!("{n} outcomes"), || async {
        let o = outcomes(js).await.ok()?;
        (o.len() >= n).then_some(o)
    })
    .await
}

async fn transformer_setup(
    nats: &NatsServer,
) -> anyhow::Result<(shared::config::HubConfig, jetstream::Context)> {
    let hub = hub_from(TRANSFORMER_HUB);
    let client = nats.client().await?;
    setup_streams(&client, &hub).await?;
    Ok((hub, jetstream::new(client)))
}

#[tokio::test]
async fn a_converted_webhook_records_its_order_sequence_before_it_is_acked() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let (hub, js) = transformer_setup(&nats).await?;
    let stage = InProcessStage::transformer(&nats.url(), &hub);
    let seq = publish_raw(&js, "wh-conv", ORDER).await?;
    eventually(STEP, "the webhook acked", || async {
        let p = consumer_pending(&js, "WEBHOOKS", "transformer")
            .await
            .ok()?;
        (p == (0, 0)).then_some(())
    })
    .await?;
    let orders = stream_messages(&js, "ORDERS").await?;
    assert_eq!(orders.len(), 1);
    assert_eq!(
        outcomes(&js).await?,
        vec![json!({
            "schema": "orderhub.outcome.v1",
            "stage": "transformer",
            "kind": "converted",
            "provider": "careem",
            "account": "acme-careem",
            "tenant": "acme",
            "webhook_id": "wh-conv",
            "provider_order_id": "TEST123",
            "event": "created",
            "ok": true,
            "source": {"stream": "WEBHOOKS", "seq": seq, "delivery": 1},
            "order_seq": orders[0].sequence,
        })]
    );
    stage.stop().await
}

#[tokio::test]
async fn a_refused_webhook_records_refused_then_dead_lettered() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let (hub, js) = transformer_setup(&nats).await?;
    let stage = InProcessStage::transformer(&nats.url(), &hub);
    let seq = publish_raw(&js, "wh-bad", r#"{"order_id":"1","items":[]"#).await?;
    await_dead_letter(&js).await?;
    let error = "payload does not parse: EOF while parsing an object at line 1 column 26";
    let step = |kind: &str| {
        json!({
            "schema": "orderhub.outcome.v1",
            "stage": "transformer",
            "kind": kind,
            "provider": "careem",
            "account": "acme-careem",
            "tenant": "acme",
            "webhook_id": "wh-bad",
            "ok": false,
            "error_class": "invalid_payload",
            "error": error,
            "source": {"stream": "WEBHOOKS", "seq": seq, "delivery": 1},
        })
    };
    assert_eq!(
        wait_outcomes(&js, 2).await?,
        vec![step("refused"), step("dead_lettered")]
    );
    stage.stop().await
}

/// OUTCOMES gone: the webhook's order is published but the webhook is not
/// acked (it comes back, delivery after delivery); once the stream is back
/// the next delivery records its step and is acked, and ORDERS holds the
/// order once.
#[tokio::test]
async fn a_webhook_whose_outcome_is_not_stored_is_not_acked_and_comes_back() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let (hub, js) = transformer_setup(&nats).await?;
    let stage = InProcessStage::transformer(&nats.url(), &hub);
    // Ready: its streams are set up, so it will not create OUTCOMES again.
    let ready = format!("{}/ready", stage.ops_url());
    eventually(STEP, "the stage ready", || async {
        let r = reqwest::get(&ready).await.ok()?;
        r.status().is_success().then_some(())
    })
    .await?;
    js.delete_stream("OUTCOMES").await?;
    let seq = publish_raw(&js, "wh-later", ORDER).await?;
    let failures =
        "transformer_outcome_publish_failures_total{provider=\"careem\",kind=\"converted\"} 2";
    eventually(STEP, "two failed outcome publishes", || async {
        stage.metrics().await.contains(failures).then_some(())
    })
    .await?;
    let pending = consumer_pending(&js, "WEBHOOKS", "transformer").await?;
    assert_ne!(pending, (0, 0), "the webhook was acked without its outcome");
    assert!(dead_letters(&js).await?.is_empty());

    let defs = shared::streams::Definitions::load(&hub.streams);
    shared::streams::ensure_stream(&js, defs.stream("OUTCOMES"), true).await?;
    eventually(STEP, "the webhook acked", || async {
        let p = consumer_pending(&js, "WEBHOOKS", "transformer")
            .await
            .ok()?;
        (p == (0, 0)).then_some(())
    })
    .await?;
    let recorded = outcomes(&js).await?;
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0]["kind"], "converted");
    assert_eq!(recorded[0]["source"]["seq"], seq);
    assert!(recorded[0]["source"]["delivery"].as_u64().unwrap() >= 3);
    assert_eq!(stream_messages(&js, "ORDERS").await?.len(), 1);
    stage.stop().await
}

fn forwarder_hub(backend: &str) -> shared::config::HubConfig {
    hub_from(&format!(
        r#"
[[tenant]]
id = "acme"
backend_url = "{backend}"

[[account]]
id = "acme-careem"
provider = "careem"
tenant = "acme"
secret_envs = ["TEST_CAREEM_SECRET"]
currency = "JOD"

[forwarder]
breaker_failures = 10
allowed_private_destinations = ["127.0.0.0/8"]

[retry]
schedule = ["200ms"]
max_deliver = 10
"#
    ))
}

const CANONICAL: &str = r#"{"webhook_id":"wh-fwd","provider_order_id":"C-77","items":[]}"#;

async fn forwarder_setup(
    nats: &NatsServer,
    backend: &TestBackend,
) -> anyhow::Result<(InProcessStage, jetstream::Context)> {
    let hub = forwarder_hub(&backend.url());
    let client = nats.client().await?;
    setup_streams(&client, &hub).await?;
    let js = jetstream::new(client);
    let stage = InProcessStage::forwarder(&nats.url(), &hub, 2);
    Ok((stage, js))
}

fn forwarder_step(kind: &str, seq: u64, delivery: u64, step: u32) -> Value {
    let mut v = json!({
        "schema": "orderhub.outcome.v1",
        "stage": "forwarder",
        "kind": kind,
        "provider": "careem",
        "tenant": "acme",
        "webhook_id": "wh-fwd",
        "provider_order_id": "C-77",
        "ok": true,
        "source": {"stream": "ORDERS", "seq": seq, "delivery": delivery},
    });
    if step > 0 {
        v["step"] = json!(step);
    }
    v
}

/// A backend that fails once: attempt (503, no body in the error), then on
/// the next delivery attempt (200) and delivered, in that order.
#[tokio::test]
async fn a_backend_failing_once_records_two_attempts_then_delivered() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let backend = TestBackend::start().await?;
    let mut calls = 0;
    backend.script(move |_| {
        calls += 1;
        if calls == 1 {
            Reply::status(503).with_body("secret backend page")
        } else {
            Reply::status(200)
        }
    });
    let (stage, js) = forwarder_setup(&nats, &backend).await?;
    let seq = publish_order(&js, "acme", "wh-fwd", CANONICAL).await?;
    let got = wait_outcomes(&js, 3).await?;
    let mut failed = forwarder_step("attempt", seq, 1, 0);
    failed["ok"] = json!(false);
    failed["http_status"] = json!(503);
    failed["duration_ms"] = json!("measured");
    failed["error_class"] = json!("backend_5xx");
    failed["error"] = json!("backend answered 503");
    let mut ok = forwarder_step("attempt", seq, 2, 0);
    ok["http_status"] = json!(200);
    ok["duration_ms"] = json!("measured");
    assert_eq!(
        got,
        vec![failed, ok, forwarder_step("delivered", seq, 2, 1)]
    );
    eventually(STEP, "the order acked", || async {
        let p = consumer_pending(&js, "ORDERS", "forwarder-acme")
            .await
            .ok()?;
        (p == (0, 0)).then_some(())
    })
    .await?;
    stage.stop().await
}

/// A refusing backend: its attempt, then the worker's dead_lettered.
#[tokio::test]
async fn a_refused_order_records_its_attempt_then_dead_lettered() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let backend = TestBackend::start().await?;
    backend.script(|_| Reply::status(422).with_body("bad"));
    let (stage, js) = forwarder_setup(&nats, &backend).await?;
    let seq = publish_order(&js, "acme", "wh-fwd", CANONICAL).await?;
    await_dead_letter(&js).await?;
    let got = wait_outcomes(&js, 2).await?;
    let mut attempt = forwarder_step("attempt", seq, 1, 0);
    attempt["ok"] = json!(false);
    attempt["http_status"] = json!(422);
    attempt["duration_ms"] = json!("measured");
    attempt["error_class"] = json!("backend_rejected");
    attempt["error"] = json!("backend answered 422");
    let dead = json!({
        "schema": "orderhub.outcome.v1",
        "stage": "forwarder",
        "kind": "dead_lettered",
        "provider": "careem",
        "tenant": "acme",
        "webhook_id": "wh-fwd",
        "ok": false,
        "error_class": "backend_rejected",
        "error": "backend answered 422: bad",
        "source": {"stream": "ORDERS", "seq": seq, "delivery": 1},
    });
    assert_eq!(got, vec![attempt, dead]);
    stage.stop().await
}

/// The same step published twice (a redelivery after a lost ack repeats
/// it with the same delivery count only when the publish itself is
/// retried) is stored once: the stream deduplicates on the step's id.
#[tokio::test]
async fn a_step_published_twice_is_stored_once() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let (hub, js) = transformer_setup(&nats).await?;
    let defs = shared::streams::Definitions::load(&hub.streams);
    shared::streams::ensure_stream(&js, defs.stream("OUTCOMES"), true).await?;
    let mut o = Outcome::new(
        shared::outcome::Stage::Forwarder,
        shared::outcome::Kind::Delivered,
        shared::Provider::Careem,
        true,
    );
    o.source = Some(shared::outcome::Source {
        stream: "ORDERS".into(),
        seq: 9,
        delivery: 2,
    });
    o.step = 1;
    let publisher = shared::outcome::Publisher::new(js.clone(), STEP);
    let publish = |o: &Outcome| {
        let sent = publisher.publish(&o.as_step());
        async move { sent.await.map_err(|f| anyhow::anyhow!(f.message)) }
    };
    publish(&o).await?;
    o.at += std::time::Duration::from_secs(1);
    publish(&o).await?;
    let stored = stream_messages(&js, "OUTCOMES").await?;
    assert_eq!(stored.len(), 1);
    Ok(())
}

/// Deliveroo's accept is two calls: two `status_call` steps of one
/// delivery (step 0 and 1), with the action, the decision's id and each
/// call's status, stored before the command is acked.
#[tokio::test]
async fn a_two_call_accept_records_one_status_call_per_request() -> anyhow::Result<()> {
    use orderhub_tests::fake_provider::FakeProvider;
    let nats = NatsServer::start()?;
    let fake = FakeProvider::start().await?;
    fake.add_deliveroo_client("test-secret", "test-secret");
    let hub = hub_from(&format!(
        r#"
[[tenant]]
id = "acme"
backend_url = "http://127.0.0.1:9/orders"

[[account]]
id = "acme-deliveroo"
provider = "deliveroo"
tenant = "acme"
secret_envs = ["S"]
[account.api]
base_url = "{url}"
token_url = "{token}"
client_id_env = "S"
client_secret_env = "S"

[provider_api]
allowed_private_destinations = ["127.0.0.0/8"]
request_timeout = "2s"

[status_sync]
schedule = ["200ms"]
max_deliver = 10
"#,
        url = fake.url(),
        token = fake.deliveroo_token_url(),
    ));
    let client = nats.client().await?;
    let js = jetstream::new(client);
    let defs = shared::streams::Definitions::load(&hub.streams);
    shared::app::ensure_streams(&js, &defs, &["STATUS", "ORDERS", "DLQ", "ADVISORIES"], true)
        .await?;
    let contexts = shared::streams::ensure_bucket(
        &js,
        defs.bucket(shared::answer::ORDER_CONTEXT_BUCKET),
        true,
    )
    .await?;
    let now = time::OffsetDateTime::now_utc();
    let ctx = shared::answer::OrderContext {
        store_id: None,
        pickup: false,
        tenant: "acme".into(),
        provider: shared::Provider::Deliveroo,
        account: "acme-deliveroo".into(),
        provider_order_id: "dr-1".into(),
        webhook_id: "wh-dr-1".into(),
        display_code: None,
        received_at: now,
        answer_by: now + std::time::Duration::from_secs(600),
        api: None,
        callbacks: Default::default(),
        self_delivery: false,
        preorder: false,
    };
    contexts
        .put(ctx.key(), serde_json::to_vec(&ctx)?.into())
        .await?;
    let cmd = canonical::status::StatusCommand {
        schema: canonical::status::StatusSchemaV1,
        status_id: "st-dr-1".into(),
        tenant: "acme".into(),
        provider: shared::Provider::Deliveroo,
        account: "acme-deliveroo".into(),
        provider_order_id: "dr-1".into(),
        action: canonical::status::Action::Accept,
        reason: None,
        ready_at: None,
        unavailable_items: vec![],
        origin: canonical::status::Origin::Backend,
        decided_at: now,
        order_webhook_id: Some("wh-dr-1".into()),
    };
    let stage = InProcessStage::status_sync(&nats.url(), &hub, test_token_key());
    let seq = js
        .publish_with_headers(
            shared::subjects::status_command(cmd.provider, &cmd.account),
            status_sync::auto_reject::command_headers(&cmd),
            serde_json::to_vec(&cmd)?.into(),
        )
        .await?
        .await?
        .sequence;
    let calls = fake.wait_status_calls_for("dr-1", 2, STEP).await?;
    let got = wait_outcomes(&js, 2).await?;
    let step = |n: u32, status: u16| {
        let mut v = json!({
            "schema": "orderhub.outcome.v1",
            "stage": "status-sync",
            "kind": "status_call",
            "provider": "deliveroo",
            "account": "acme-deliveroo",
            "tenant": "acme",
            "webhook_id": "wh-dr-1",
            "provider_order_id": "dr-1",
            "action": "accept",
            "status_id": "st-dr-1",
            "ok": true,
            "http_status": status,
            "duration_ms": "measured",
            "source": {"stream": "STATUS", "seq": seq, "delivery": 1},
        });
        if n > 0 {
            v["step"] = json!(n);
        }
        v
    };
    assert!(calls.iter().all(|c| (200..300).contains(&c.answered)));
    assert_eq!(
        got,
        vec![step(0, calls[0].answered), step(1, calls[1].answered)]
    );
    eventually(STEP, "the command acked", || async {
        let p = consumer_pending(&js, "STATUS", "status-sync").await.ok()?;
        (p == (0, 0)).then_some(())
    })
    .await?;
    stage.stop().await
}
