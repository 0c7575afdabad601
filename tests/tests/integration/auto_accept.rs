//! Auto-accept (issue 14): the backend's 2xx for a `created` order of an
//! `auto_accept` account makes the forwarder store the hub's accept on
//! `STATUS` before it acks the order; other accounts and other events make
//! none; a second delivery stores no second accept; an accept that cannot
//! be stored keeps the order unacked. Real nats-server, in-test backend.

use async_nats::jetstream;
use canonical::status::{Action, Origin, StatusCommand, StatusSchemaV1};
use orderhub_tests::*;
use shared::Provider;
use shared::headers;

fn hub_toml(backend: &str) -> String {
    format!(
        r#"
[[tenant]]
id = "acme"
backend_url = "{backend}"

[[account]]
id = "acme-pos"
provider = "direct"
tenant = "acme"
secret_envs = ["S"]
status_url = "https://pos.acme.example/orderhub/status"
auto_accept = true

[[account]]
id = "acme-pos-manual"
provider = "direct"
tenant = "acme"
secret_envs = ["S"]
status_url = "https://pos.acme.example/orderhub/status"
auto_accept = false

[forwarder]
allowed_private_destinations = ["127.0.0.0/8"]

[retry]
schedule = ["200ms"]
max_deliver = 100
"#
    )
}

async fn setup(
    nats: &NatsServer,
    backend: &TestBackend,
) -> anyhow::Result<(shared::config::HubConfig, jetstream::Context)> {
    // A direct account's secret is a Standard Webhooks secret.
    let hub = shared::config::HubConfig::from_toml(&hub_toml(&backend.url()), "test", &|_| {
        Some("whsec_dGVzdC1zaWduaW5nLXNlY3JldA==".to_owned())
    })?;
    let client = nats.client().await?;
    setup_streams(&client, &hub).await?;
    Ok((hub, jetstream::new(client)))
}

/// Publishes a canonical order of `account` as the transformer does:
/// the hub headers, `Orderhub-Event`, `Nats-Msg-Id: <msg_id>`.
async fn publish(
    js: &jetstream::Context,
    account: &str,
    event: &str,
    webhook_id: &str,
    msg_id: &str,
) -> anyhow::Result<()> {
    let mut h = async_nats::HeaderMap::new();
    h.insert("Nats-Msg-Id", msg_id);
    h.insert(headers::WEBHOOK_ID, webhook_id);
    h.insert(headers::PROVIDER, "direct");
    h.insert(headers::ACCOUNT, account);
    h.insert(headers::TENANT, "acme");
    h.insert(headers::EVENT, event);
    h.insert(
        headers::RECEIVED_AT,
        shared::dlq::rfc3339(std::time::SystemTime::now()).as_str(),
    );
    h.insert("Content-Type", "application/json");
    let body = format!(
        r#"{{"schema":"orderhub.order.v1","webhook_id":"{webhook_id}","event":"{event}","provider":"direct","provider_order_id":"PO-{webhook_id}","tenant":"acme"}}"#
    );
    tokio::time::timeout(
        STEP,
        js.publish_with_headers(
            shared::subjects::order("acme", Provider::Direct),
            h,
            bytes::Bytes::from(body),
        ),
    )
    .await??
    .await?;
    Ok(())
}

/// Waits until the backend has `n` requests and the forwarder acked every
/// order: whatever the forwarder stores before an ack is stored by then.
async fn settled(js: &jetstream::Context, backend: &TestBackend, n: usize) -> anyhow::Result<()> {
    eventually(STEP, &format!("{n} backend request(s)"), || async {
        (backend.requests().len() >= n).then_some(())
    })
    .await?;
    eventually(STEP, "every order acked", || async {
        let p = consumer_pending(js, "ORDERS", "forwarder-acme")
            .await
            .ok()?;
        (p == (0, 0)).then_some(())
    })
    .await
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

async fn commands(
    js: &jetstream::Context,
) -> anyhow::Result<Vec<jetstream::message::StreamMessage>> {
    stream_messages(js, shared::subjects::STATUS_STREAM).await
}

#[tokio::test]
async fn a_new_order_the_backend_took_is_accepted_once() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let backend = TestBackend::start().await?;
    let (hub, js) = setup(&nats, &backend).await?;
    let stage = InProcessStage::forwarder(&nats.url(), &hub, 4);
    let before = unix_now();

    publish(&js, "acme-pos", "created", "wh-a1", "order:wh-a1").await?;
    settled(&js, &backend, 1).await?;
    let after = unix_now();

    let stored = commands(&js).await?;
    assert_eq!(stored.len(), 1);
    let m = &stored[0];
    assert_eq!(m.subject.as_str(), "status.direct.acme-pos");
    let h = |name: &str| m.headers.get(name).map(|v| v.as_str().to_owned());
    assert_eq!(
        h("Nats-Msg-Id").as_deref(),
        Some("status:auto-accept-wh-a1")
    );
    assert_eq!(h(headers::STATUS_ID).as_deref(), Some("auto-accept-wh-a1"));
    assert_eq!(h(headers::TENANT).as_deref(), Some("acme"));
    assert_eq!(h(headers::PROVIDER).as_deref(), Some("direct"));
    assert_eq!(h(headers::ACCOUNT).as_deref(), Some("acme-pos"));
    let command: StatusCommand = serde_json::from_slice(&m.payload)?;
    let decided = command.decided_at.unix_timestamp();
    assert!(
        (before..=after).contains(&decided),
        "{decided} not within {before}..={after}"
    );
    assert_eq!(
        command,
        StatusCommand {
            schema: StatusSchemaV1,
            status_id: "auto-accept-wh-a1".into(),
            tenant: "acme".into(),
            provider: Provider::Direct,
            account: "acme-pos".into(),
            provider_order_id: "PO-wh-a1".into(),
            action: Action::Accept,
            reason: None,
            ready_at: None,
            unavailable_items: vec![],
            origin: Origin::AutoAccept,
            decided_at: command.decided_at,
            order_webhook_id: Some("wh-a1".into()),
        }
    );

    // The same order again (a redelivery, a replay): the backend hears it
    // again, the accept is not stored twice.
    publish(&js, "acme-pos", "created", "wh-a1", "replay:wh-a1").await?;
    settled(&js, &backend, 2).await?;
    assert_eq!(commands(&js).await?.len(), 1);

    let metrics = stage.metrics().await;
    assert!(
        metrics
            .contains(r#"forwarder_auto_accepts_total{provider="direct",outcome="published"} 2"#),
        "{metrics}"
    );
    stage.stop().await
}

#[tokio::test]
async fn no_accept_for_other_accounts_other_events_or_a_refused_order() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let backend = TestBackend::start().await?;
    let (hub, js) = setup(&nats, &backend).await?;
    let stage = InProcessStage::forwarder(&nats.url(), &hub, 4);

    publish(&js, "acme-pos-manual", "created", "wh-m1", "order:wh-m1").await?;
    publish(&js, "acme-pos", "updated", "wh-u1", "order:wh-u1").await?;
    publish(&js, "acme-pos", "cancelled", "wh-c1", "order:wh-c1").await?;
    settled(&js, &backend, 3).await?;
    assert_eq!(commands(&js).await?.len(), 0);

    // A backend refusing a new order: dead-lettered with the order's
    // headers, which the auto-reject consumer reads; no accept.
    backend.script(|_| Reply::status(422).with_body("unknown branch"));
    publish(&js, "acme-pos", "created", "wh-r1", "order:wh-r1").await?;
    let (entry, m) = await_dead_letter(&js).await?;
    assert_eq!(
        entry.error_class,
        shared::failure::FailureClass::BackendRejected
    );
    let h = |name: &str| m.headers.get(name).map(|v| v.as_str().to_owned());
    assert_eq!(h(headers::EVENT).as_deref(), Some("created"));
    assert_eq!(h(headers::ACCOUNT).as_deref(), Some("acme-pos"));
    assert_eq!(h(headers::PROVIDER).as_deref(), Some("direct"));
    assert_eq!(h(headers::TENANT).as_deref(), Some("acme"));
    assert_eq!(h(headers::WEBHOOK_ID).as_deref(), Some("wh-r1"));
    assert_eq!(m.subject.as_str(), "dlq.forwarder.direct");
    assert_eq!(commands(&js).await?.len(), 0);
    stage.stop().await
}

#[tokio::test]
async fn an_order_whose_accept_cannot_be_stored_is_not_acked() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let backend = TestBackend::start().await?;
    let (hub, js) = setup(&nats, &backend).await?;
    let stage = InProcessStage::forwarder(&nats.url(), &hub, 4);
    eventually(STEP, "the STATUS stream", || async {
        js.get_stream(shared::subjects::STATUS_STREAM).await.ok()
    })
    .await?;
    tokio::time::timeout(STEP, js.delete_stream(shared::subjects::STATUS_STREAM)).await??;

    publish(&js, "acme-pos", "created", "wh-s1", "order:wh-s1").await?;
    // The backend took it, the accept had nowhere to go: retried.
    eventually(STEP, "the order retried", || async {
        (backend.requests().len() >= 2).then_some(())
    })
    .await?;
    let (pending, ack_pending) = consumer_pending(&js, "ORDERS", "forwarder-acme").await?;
    assert_eq!(pending + ack_pending as u64, 1, "the order is not acked");
    assert!(
        backend
            .requests()
            .iter()
            .all(|r| r.header("idempotency-key") == Some("wh-s1"))
    );

    let defs = shared::streams::Definitions::load(&hub.streams);
    tokio::time::timeout(
        STEP,
        shared::app::ensure_streams(&js, &defs, &[shared::subjects::STATUS_STREAM], true),
    )
    .await??;
    eventually(STEP, "the accept stored", || async {
        let c = commands(&js).await.ok()?;
        (c.len() == 1).then_some(())
    })
    .await?;
    eventually(STEP, "the order acked", || async {
        let p = consumer_pending(&js, "ORDERS", "forwarder-acme")
            .await
            .ok()?;
        (p == (0, 0)).then_some(())
    })
    .await?;
    assert_eq!(commands(&js).await?.len(), 1);
    let metrics = stage.metrics().await;
    assert!(
        !metrics.contains(r#"forwarder_auto_accepts_total{provider="direct",outcome="failed"} 0"#),
        "{metrics}"
    );
    stage.stop().await
}
