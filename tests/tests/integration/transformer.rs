//! The transformer stage against a real nats-server: a raw webhook on
//! WEBHOOKS becomes exactly one canonical order on ORDERS; a malformed one
//! is dead-lettered at once with every problem; and a transformer killed
//! after publishing but before acking does not make a second order (the
//! redelivery's publish is deduplicated by its `Nats-Msg-Id`).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer};
use canonical::order::{Event, Order};
use futures::StreamExt;
use orderhub_tests::*;
use shared::config::HubConfig;
use shared::worker::{Delivery, Handler, Outcome};

/// One tenant, a Jordanian careem account, fast retries, and a 1 s
/// `ack_wait` so that an unacked delivery comes back quickly.
const HUB: &str = r#"
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
max_deliver = 5

[streams.consumers.transformer]
ack_wait = "1s"
"#;

const ORDER: &str = r#"{"order_id":"TEST123","store_id":"991","created_at":"2025-05-01T18:30:00+03:00","customer":{"name":"ليلى","phone":"0791234567"},"items":[{"id":"burger-classic","name":"Burger","quantity":2,"price":2.675}],"total_amount":"5.350"}"#;

async fn setup(nats: &NatsServer) -> anyhow::Result<(HubConfig, jetstream::Context)> {
    let hub = hub_from(HUB);
    let client = nats.client().await?;
    setup_streams(&client, &hub).await?;
    Ok((hub, jetstream::new(client)))
}

fn header<'a>(m: &'a jetstream::message::StreamMessage, name: &str) -> Option<&'a str> {
    m.headers.get(name).map(|v| v.as_str())
}

/// The order `ORDER` must become, given its webhook and stream sequence.
fn expected(webhook_id: &str, seq: u64) -> serde_json::Value {
    serde_json::json!({
        "schema": "orderhub.order.v1",
        "webhook_id": webhook_id,
        // acme's careem order TEST123's creation, whatever the copy.
        "idempotency_key": "created-58e7b9caefb40a868c163f9268c651d0",
        "event": "created",
        "status": null,
        "provider": "careem",
        "provider_order_id": "TEST123",
        "display_code": null,
        "tenant": "acme",
        "branch": "amman-abdoun",
        "placed_at": "2025-05-01T18:30:00+03:00",
        "scheduled_for": null,
        "is_test": false,
        "currency": "JOD",
        "customer": {"name": "ليلى", "phone": "+962791234567", "email": null, "phone_access_code": null},
        "fulfilment": {"type": "delivery", "delivered_by": "platform", "address": null, "instructions": null, "ready_by": null, "table": null},
        "items": [{
            "provider_item_id": "burger-classic", "product_id": "prod_1001", "name": "Burger",
            "quantity": 2, "unit_price": 2675, "total": 5350, "notes": null, "modifiers": []
        }],
        "totals": {
            "subtotal": 5350, "delivery_fee": 0, "service_fee": 0, "tax": 0, "discount": 0,
            "tip": 0, "total": 5350, "tax_inclusive": true, "fees": [], "discounts": []
        },
        "payment": {"method": "online", "paid": true, "amount_due": 0, "change_for": null},
        "notes": null,
        "allergy_notes": null,
        "cutlery": null,
        "raw": {"stream": "WEBHOOKS", "seq": seq, "subject": "webhooks.raw.careem.acme-careem"}
    })
}

/// The order as stored: a valid canonical order, as JSON.
fn stored(m: &jetstream::message::StreamMessage) -> anyhow::Result<serde_json::Value> {
    let order: Order = serde_json::from_slice(&m.payload)?;
    assert_eq!(order.event, Event::Created);
    assert_eq!(order.validate(), Ok(()));
    Ok(serde_json::from_slice(&m.payload)?)
}

#[tokio::test]
async fn a_raw_webhook_becomes_exactly_one_canonical_order() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let (hub, js) = setup(&nats).await?;
    let stage = InProcessStage::transformer(&nats.url(), &hub);
    let seq = publish_raw(&js, "wh-one", ORDER).await?;

    let orders = eventually(STEP, "an order on ORDERS", || async {
        let m = stream_messages(&js, "ORDERS").await.ok()?;
        (!m.is_empty()).then_some(m)
    })
    .await?;
    eventually(STEP, "the raw webhook acked", || async {
        let p = consumer_pending(&js, "WEBHOOKS", "transformer")
            .await
            .ok()?;
        (p == (0, 0)).then_some(())
    })
    .await?;
    assert_eq!(orders.len(), 1);
    let m = &orders[0];
    assert_eq!(m.subject.as_str(), "orders.acme.careem");
    assert_eq!(stored(m)?, expected("wh-one", seq));
    assert_eq!(header(m, "Nats-Msg-Id"), Some("order:wh-one"));
    assert_eq!(header(m, "Content-Type"), Some("application/json"));
    assert_eq!(header(m, shared::headers::WEBHOOK_ID), Some("wh-one"));
    assert_eq!(header(m, shared::headers::PROVIDER), Some("careem"));
    assert_eq!(header(m, shared::headers::ACCOUNT), Some("acme-careem"));
    assert_eq!(header(m, shared::headers::TENANT), Some("acme"));
    // Only the hub's headers travel on, not whatever else the raw message had.
    assert_eq!(header(m, "X-Test"), None);

    stage
        .metrics_show(&[
            "transformer_orders_published_total{provider=\"careem\",event=\"created\"} 1",
            "transformer_conversion_duration_seconds_count{provider=\"careem\"} 1",
            "transformer_messages_acked_total{provider=\"careem\"} 1",
        ])
        .await?;
    assert!(dead_letters(&js).await?.is_empty());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(stream_messages(&js, "ORDERS").await?.len(), 1);
    stage.stop().await
}

/// Waits for a dead letter and for its raw webhook to leave the consumer,
/// then checks that nothing more comes: no second entry and no order, well
/// past `ack_wait` and the retry delay.
async fn the_only_dead_letter(
    js: &jetstream::Context,
) -> anyhow::Result<(shared::dlq::DeadLetter, jetstream::message::StreamMessage)> {
    let first = await_dead_letter(js).await?;
    eventually(STEP, "the raw webhook terminated", || async {
        let p = consumer_pending(js, "WEBHOOKS", "transformer").await.ok()?;
        (p == (0, 0)).then_some(())
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(dead_letters(js).await?.len(), 1);
    assert!(stream_messages(js, "ORDERS").await?.is_empty());
    Ok(first)
}

#[tokio::test]
async fn a_malformed_webhook_is_dead_lettered_once_with_every_problem() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let (hub, js) = setup(&nats).await?;
    let stage = InProcessStage::transformer(&nats.url(), &hub);
    let body = r#"{"order_id":"BAD1","currency":"XYZ","items":[{"name":"Burger","quantity":0,"price":1},{"name":" ","price":1}],"total_amount":1}"#;
    let seq = publish_raw(&js, "wh-bad", body).await?;

    let (entry, msg) = the_only_dead_letter(&js).await?;

    assert_eq!(entry.stage, "transformer");
    assert_eq!(entry.seq, seq);
    assert_eq!(entry.webhook_id.as_deref(), Some("wh-bad"));
    assert_eq!(entry.deliveries, 1);
    assert_eq!(entry.error_class.as_str(), "invalid_payload");
    assert_eq!(
        entry.error,
        "invalid order: 3 problems: \
         currency: unknown currency code \"XYZ\"; \
         items[0].quantity: must be between 1 and 10000, got 0; \
         items[1].name: must not be blank"
    );
    assert_eq!(msg.subject.as_str(), "dlq.transformer.careem");
    assert_eq!(msg.payload.as_ref(), body.as_bytes());

    let metrics = stage
        .metrics_show(&[
            "transformer_conversion_errors_total{provider=\"careem\",error_type=\"invalid_payload\"} 1",
            "transformer_messages_dead_lettered_total{provider=\"careem\",error_type=\"invalid_payload\"} 1",
        ])
        .await?;
    assert!(
        !metrics.contains("transformer_messages_retried_total{"),
        "{metrics}"
    );
    stage.stop().await
}

/// An order larger than ORDERS stores can never be published: it is
/// dead-lettered on its first delivery as `message_too_large`, not retried
/// through the whole schedule as a publish failure.
#[tokio::test]
async fn an_order_too_large_for_its_stream_is_dead_lettered_at_once() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let hub = hub_from(&format!(
        "{HUB}\n[streams.overrides.ORDERS]\nmax_msg_size = 1024\n"
    ));
    let client = nats.client().await?;
    setup_streams(&client, &hub).await?;
    let js = jetstream::new(client);
    let stage = InProcessStage::transformer(&nats.url(), &hub);
    let seq = publish_raw(&js, "wh-large", ORDER).await?;

    let (entry, msg) = the_only_dead_letter(&js).await?;
    assert_eq!(entry.seq, seq);
    assert_eq!(entry.deliveries, 1);
    assert_eq!(entry.error_class.as_str(), "message_too_large");
    assert!(
        entry.error.starts_with("no ack for orders.acme.careem (")
            && entry.error.contains(" bytes): "),
        "{}",
        entry.error
    );
    assert_eq!(msg.payload.as_ref(), ORDER.as_bytes());
    let metrics = stage
        .metrics_show(&[
            "transformer_messages_dead_lettered_total{provider=\"careem\",error_type=\"message_too_large\"} 1",
        ])
        .await?;
    assert!(
        !metrics.contains("transformer_messages_retried_total{"),
        "{metrics}"
    );
    stage.stop().await
}

/// The transformer publishes the order, then dies before acking the raw
/// webhook: JetStream redelivers it after `ack_wait`, the restarted stage
/// publishes again under the same `Nats-Msg-Id`, ORDERS drops the
/// duplicate, and the raw webhook is acked.
#[tokio::test]
async fn killed_after_publishing_before_acking_still_makes_one_order() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let (hub, js) = setup(&nats).await?;
    let defs = shared::streams::Definitions::load(&hub.streams);
    let def = defs.consumer("WEBHOOKS", "transformer");
    let consumer: PullConsumer = tokio::time::timeout(
        STEP,
        shared::streams::ensure_consumer(&js, def, hub.retry.max_deliver(), true),
    )
    .await??;
    let seq = publish_raw(&js, "wh-killed", ORDER).await?;

    // The first transformer: takes the message, converts and publishes...
    let mut batch = consumer.fetch().max_messages(1).messages().await?;
    let msg = tokio::time::timeout(STEP, batch.next())
        .await?
        .ok_or_else(|| anyhow::anyhow!("no message"))?
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let info = msg.info().map_err(|e| anyhow::anyhow!("{e}"))?;
    assert_eq!((info.stream_sequence, info.delivered), (seq, 1));
    let headers = msg.headers.clone().unwrap_or_default();
    let delivery = Delivery {
        subject: msg.subject.to_string(),
        payload: msg.payload.clone(),
        stream: info.stream.to_owned(),
        stream_seq: info.stream_sequence,
        delivered: info.delivered,
        published: std::time::SystemTime::from(info.published),
        is_last: false,
        provider: "careem".to_owned(),
        tenant: Some("acme".to_owned()),
        webhook_id: Some("wh-killed".to_owned()),
        headers,
    };
    // The stage runner sets up the buckets a new order's context and its
    // sequence go to; this handler runs without it.
    let defs = shared::streams::Definitions::load(&hub.streams);
    for bucket in [
        shared::answer::ORDER_CONTEXT_BUCKET,
        shared::sequence::SEQUENCE_BUCKET,
    ] {
        tokio::time::timeout(
            STEP,
            shared::app::ensure_bucket_retrying(&js, defs.bucket(bucket), true),
        )
        .await??;
    }
    let mut registry = shared::telemetry::registry("transformer");
    let first = transformer::Transformer::new(
        Arc::new(hub.clone()),
        js.clone(),
        transformer::Metrics::register(&mut registry),
        Duration::from_secs(5),
    );
    let outcome = tokio::time::timeout(STEP, first.handle(&delivery)).await?;
    assert_eq!(outcome, Outcome::Ack);
    // ... and dies here: no ack. The order is stored, the webhook is not done.
    drop(msg);
    assert_eq!(stream_messages(&js, "ORDERS").await?.len(), 1);
    assert_eq!(
        consumer_pending(&js, "WEBHOOKS", "transformer").await?,
        (0, 1)
    );

    // The replacement takes the redelivery once ack_wait (1 s) has passed.
    let stage = InProcessStage::transformer(&nats.url(), &hub);
    eventually(STEP, "the redelivered webhook acked", || async {
        let p = consumer_pending(&js, "WEBHOOKS", "transformer")
            .await
            .ok()?;
        (p == (0, 0)).then_some(())
    })
    .await?;
    // The stage saw the message once, published it (a duplicate), acked it.
    stage
        .metrics_show(&[
            "transformer_messages_received_total{provider=\"careem\"} 1",
            "transformer_orders_published_total{provider=\"careem\",event=\"created\"} 1",
            "transformer_messages_acked_total{provider=\"careem\"} 1",
        ])
        .await?;
    let orders = stream_messages(&js, "ORDERS").await?;
    assert_eq!(orders.len(), 1);
    assert_eq!(stored(&orders[0])?, expected("wh-killed", seq));
    let info = js.get_stream("ORDERS").await?.info().await?.clone();
    assert_eq!(info.state.last_sequence, 1, "a second order was stored");
    assert!(dead_letters(&js).await?.is_empty());
    stage.stop().await
}

#[tokio::test]
async fn a_new_order_leaves_its_context_before_it_is_published() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let (hub, js) = setup(&nats).await?;
    let stage = InProcessStage::transformer(&nats.url(), &hub);
    publish_raw(&js, "wh-ctx", ORDER).await?;

    let orders = eventually(STEP, "an order on ORDERS", || async {
        let m = stream_messages(&js, "ORDERS").await.ok()?;
        (!m.is_empty()).then_some(m)
    })
    .await?;
    assert_eq!(header(&orders[0], shared::headers::EVENT), Some("created"));
    let kv = js
        .get_key_value(shared::answer::ORDER_CONTEXT_BUCKET)
        .await?;
    let key = shared::answer::key("acme", shared::Provider::Careem, "TEST123");
    let entry = tokio::time::timeout(STEP, kv.get(&key))
        .await??
        .ok_or_else(|| anyhow::anyhow!("no context at {key}"))?;
    let ctx: shared::answer::OrderContext = serde_json::from_slice(&entry)?;
    assert_eq!(ctx.webhook_id, "wh-ctx");
    assert_eq!(ctx.account, "acme-careem");
    assert_eq!(ctx.provider_order_id, "TEST123");
    // Careem has no [account.api]: 15 minutes from when the hub received it.
    assert_eq!((ctx.answer_by - ctx.received_at).whole_seconds(), 15 * 60);
    assert_eq!(ctx.api, None);
    assert!(ctx.callbacks.is_empty());
    stage.stop().await
}
