//! Replays through the real pipeline: a forwarder dead letter reaches the
//! recovered backend once with its original `Idempotency-Key`; a
//! transformer dead letter goes through today's transformer, so a fixed
//! product mapping yields the corrected order.

mod common;

use std::time::Duration;

use async_nats::jetstream;
use common::*;
use orderhub_tests::*;
use shared::config::HubConfig;
use shared::headers;

fn header<'a>(m: &'a jetstream::message::StreamMessage, name: &str) -> Option<&'a str> {
    m.headers.get(name).map(|v| v.as_str())
}

#[tokio::test]
async fn a_forwarder_dead_letter_reaches_the_recovered_backend_once() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let backend = TestBackend::start().await?;
    backend.script(|_| Reply::status(500).with_body("database is down"));
    let hub = hub_from(&format!(
        r#"
[[tenant]]
id = "acme"
backend_url = "{}"

[[account]]
id = "acme-careem"
provider = "careem"
tenant = "acme"
secret_envs = ["S"]

[retry]
schedule = ["100ms"]
max_deliver = 2

[forwarder]
breaker_failures = 10
allowed_private_destinations = ["127.0.0.0/8"]
"#,
        backend.url()
    ));
    let client = nats.client().await?;
    setup_streams(&client, &hub).await?;
    let js = jetstream::new(client);
    let stage = InProcessStage::forwarder(&nats.url(), &hub, 4);

    let body =
        r#"{"schema":"orderhub.order.v1","webhook_id":"wh-replay","provider_order_id":"P-9"}"#;
    let order_seq = publish_order(&js, "acme", "wh-replay", body).await?;
    let (entry, _) = await_dead_letter(&js).await?;
    assert_eq!(entry.stage, "forwarder");
    assert_eq!(entry.seq, order_seq);
    assert_eq!(entry.deliveries, 2);
    assert_eq!(entry.error_class.as_str(), "backend_5xx");
    assert_eq!(backend.requests().len(), 2);
    let id = dlq_ids(&js).await?[0];

    // The backend is fixed; the operator replays.
    backend.script(|_| Reply::status(201));
    let r = inspector(&nats.url(), &["replay", &id.to_string()]).await?;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        r.stdout,
        format!(
            "replayed {id} -> orders.acme.careem (ORDERS #{})\n",
            order_seq + 1
        )
    );
    assert_eq!(r.stderr, "replayed 1 of 1\n");

    eventually(STEP, "the replayed order delivered", || async {
        (backend.requests().len() >= 3).then_some(())
    })
    .await?;
    eventually(STEP, "the replayed order acked", || async {
        (consumer_pending(&js, "ORDERS", "forwarder-acme")
            .await
            .ok()?
            == (0, 0))
            .then_some(())
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let reqs = backend.requests();
    assert_eq!(reqs.len(), 3, "two failures, then the replay once");
    for r in &reqs {
        assert_eq!(r.header("idempotency-key"), Some("wh-replay"));
        assert_eq!(r.body.as_ref(), body.as_bytes());
    }
    assert!(dead_letters(&js).await?.is_empty());

    let orders = stream_messages(&js, "ORDERS").await?;
    assert_eq!(orders.len(), 2);
    let replayed = &orders[1];
    assert_eq!(replayed.subject.as_str(), "orders.acme.careem");
    assert_eq!(replayed.payload.as_ref(), body.as_bytes());
    assert_eq!(
        header(replayed, "Nats-Msg-Id"),
        Some(format!("replay:{id}").as_str())
    );
    assert_eq!(
        header(replayed, headers::REPLAY_OF),
        Some(id.to_string().as_str())
    );
    assert_eq!(header(replayed, headers::WEBHOOK_ID), Some("wh-replay"));
    assert_eq!(header(replayed, headers::TENANT), Some("acme"));
    assert_eq!(header(replayed, headers::dlq::ERROR), None);
    assert_eq!(
        header(replayed, headers::RECEIVED_AT),
        header(&orders[0], headers::RECEIVED_AT)
    );

    // The entry is gone: a second replay has nothing to send.
    let r = inspector(&nats.url(), &["replay", &id.to_string()]).await?;
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(backend.requests().len(), 3);
    stage.stop().await
}

const ORDER: &str = r#"{"order_id":"MAP-1","store_id":"991","created_at":"2025-05-01T18:30:00+03:00","customer":{"name":"ليلى","phone":"0791234567"},"items":[{"id":"burger-classic","name":"Burger","quantity":2,"price":2.675}],"total_amount":"5.350"}"#;

fn mapping_hub(products: &str) -> HubConfig {
    hub_from(&format!(
        r#"
[[tenant]]
id = "acme"
backend_url = "http://127.0.0.1:9/orders"
require_product_mapping = true

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
{products}

[retry]
schedule = ["200ms"]
max_deliver = 3
"#
    ))
}

#[tokio::test]
async fn a_transformer_dead_letter_replayed_after_the_mapping_fix_becomes_the_right_order()
-> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let broken = mapping_hub(r#""fries" = "prod_2002""#);
    let client = nats.client().await?;
    setup_streams(&client, &broken).await?;
    let js = jetstream::new(client);
    let stage = InProcessStage::transformer(&nats.url(), &broken);
    let raw_seq = publish_raw(&js, "wh-map", ORDER).await?;

    let (entry, _) = await_dead_letter(&js).await?;
    assert_eq!(entry.stage, "transformer");
    assert_eq!(entry.seq, raw_seq);
    assert_eq!(entry.error_class.as_str(), "unmapped_product");
    assert!(stream_messages(&js, "ORDERS").await?.is_empty());
    let id = dlq_ids(&js).await?[0];
    stage.stop().await?;

    // The mapping is fixed and the transformer restarted with it.
    let fixed = mapping_hub(r#""burger-classic" = "prod_1001""#);
    let stage = InProcessStage::transformer(&nats.url(), &fixed);
    let r = inspector(
        &nats.url(),
        &[
            "replay",
            "--stage",
            "transformer",
            "--provider",
            "careem",
            "--rate",
            "5",
        ],
    )
    .await?;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        r.stdout,
        format!(
            "replayed {id} -> webhooks.raw.careem.acme-careem (WEBHOOKS #{})\n",
            raw_seq + 1
        )
    );

    let orders = eventually(STEP, "the corrected order", || async {
        let m = stream_messages(&js, "ORDERS").await.ok()?;
        (!m.is_empty()).then_some(m)
    })
    .await?;
    eventually(STEP, "the replayed webhook acked", || async {
        (consumer_pending(&js, "WEBHOOKS", "transformer")
            .await
            .ok()?
            == (0, 0))
            .then_some(())
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(stream_messages(&js, "ORDERS").await?.len(), 1);
    assert!(dead_letters(&js).await?.is_empty());
    let m = &orders[0];
    assert_eq!(m.subject.as_str(), "orders.acme.careem");
    assert_eq!(header(m, "Nats-Msg-Id"), Some("order:wh-map"));
    assert_eq!(header(m, headers::REPLAY_OF), Some(id.to_string().as_str()));
    let order: serde_json::Value = serde_json::from_slice(&m.payload)?;
    assert_eq!(order["webhook_id"], "wh-map");
    assert_eq!(order["provider_order_id"], "MAP-1");
    assert_eq!(order["items"][0]["provider_item_id"], "burger-classic");
    assert_eq!(order["items"][0]["product_id"], "prod_1001");
    assert_eq!(order["raw"]["seq"], raw_seq + 1);

    let raw = stream_messages(&js, "WEBHOOKS").await?;
    assert_eq!(raw.len(), 2);
    assert_eq!(raw[1].payload.as_ref(), ORDER.as_bytes());
    assert_eq!(
        header(&raw[1], "Nats-Msg-Id"),
        Some(format!("replay:{id}").as_str())
    );
    assert_eq!(header(&raw[1], "X-Test"), Some("kept"));
    assert_eq!(header(&raw[1], headers::ACCOUNT), Some("acme-careem"));
    stage.stop().await
}
