//! The status worker against a real nats-server and the fake provider API:
//! each test puts an order's context in `ORDER_CONTEXT` and a status
//! command on `STATUS` itself (as the transformer and the status API do),
//! then asserts exactly what the fake provider received, and where the
//! command ended (acked, or in the DLQ with a `status_failed` order for
//! the backend).

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream;
use canonical::status::{Action, Origin, Reason, ReasonCode, StatusCommand, StatusSchemaV1};
use orderhub_tests::fake_provider::{Decision, FakeProvider, FaultReply, Matcher, Platform};
use orderhub_tests::*;
use serde_json::{Value, json};
use shared::Provider;
use shared::answer::{OrderContext, callback};
use shared::failure::FailureClass;
use shared::headers;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Every secret of the test config (client ids, secrets, keys, Wolt's
/// first refresh token).
const SECRET: &str = "whsec_dGVzdA==";

fn hub(fake: &FakeProvider) -> shared::config::HubConfig {
    hub_with(fake, "")
}

/// The test hub with `extra` accounts.
fn hub_with(fake: &FakeProvider, extra: &str) -> shared::config::HubConfig {
    let url = fake.url();
    let deliveroo_token = fake.deliveroo_token_url();
    let text = format!(
        r#"
[[tenant]]
id = "acme"
backend_url = "http://127.0.0.1:9/orders"

[[account]]
id = "acme-ubereats"
provider = "ubereats"
tenant = "acme"
secret_envs = ["S"]
[account.api]
base_url = "{url}"
token_url = "{url}/oauth/v2/token"
client_id_env = "S"
client_secret_env = "S"

[[account]]
id = "acme-wolt"
provider = "wolt"
tenant = "acme"
secret_envs = ["S"]
[account.api]
base_url = "{url}"
token_url = "{url}/oauth2/token"
client_id_env = "S"
client_secret_env = "S"
refresh_token_env = "S"

[[account]]
id = "acme-talabat"
provider = "talabat"
tenant = "acme"
secret_envs = ["S"]
[account.api]
base_url = "{url}"
token_url = "{url}/v2/login"
client_id_env = "S"
client_secret_env = "S"

[[account]]
id = "acme-deliveroo"
provider = "deliveroo"
tenant = "acme"
secret_envs = ["S"]
[account.api]
base_url = "{url}"
token_url = "{deliveroo_token}"
client_id_env = "S"
client_secret_env = "S"

[[account]]
id = "acme-justeat"
provider = "justeat"
tenant = "acme"
secret_envs = ["S"]
[account.api]
base_url = "{url}"
client_secret_env = "S"

[[account]]
id = "acme-justeat-partner"
provider = "justeat"
tenant = "acme"
secret_envs = ["S"]
[account.api]
base_url = "{url}"
client_secret_env = "S"
status_api = "partner"

{extra}

[provider_api]
allowed_private_destinations = ["127.0.0.0/8"]
request_timeout = "2s"
token_lease = "5s"
token_min_mint_interval = "0s"

[status_sync]
schedule = ["200ms"]
max_deliver = 100
late_action_window = "1h"

[streams.consumers.status-sync]
ack_wait = "2s"
"#
    );
    shared::config::HubConfig::from_toml(&text, "test", &|_| Some(SECRET.to_owned()))
        .expect("test hub config is valid")
}

struct Rig {
    _nats: NatsServer,
    fake: FakeProvider,
    hub: shared::config::HubConfig,
    js: jetstream::Context,
    contexts: jetstream::kv::Store,
    url: String,
}

async fn rig() -> anyhow::Result<Rig> {
    let nats = NatsServer::start()?;
    let fake = FakeProvider::start().await?;
    fake.add_uber_client(SECRET, SECRET);
    fake.add_wolt_venue(SECRET, SECRET, SECRET);
    fake.add_talabat_user(SECRET, SECRET);
    fake.add_deliveroo_client(SECRET, SECRET);
    fake.add_justeat_key(SECRET);
    let hub = hub(&fake);
    let client = nats.client().await?;
    let js = jetstream::new(client);
    let defs = shared::streams::Definitions::load(&hub.streams);
    tokio::time::timeout(
        STEP,
        shared::app::ensure_streams(&js, &defs, &["STATUS", "ORDERS", "DLQ", "ADVISORIES"], true),
    )
    .await??;
    let contexts = tokio::time::timeout(
        STEP,
        shared::streams::ensure_bucket(
            &js,
            defs.bucket(shared::answer::ORDER_CONTEXT_BUCKET),
            true,
        ),
    )
    .await??;
    let url = nats.url();
    Ok(Rig {
        _nats: nats,
        fake,
        hub,
        js,
        contexts,
        url,
    })
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc().replace_nanosecond(0).unwrap()
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap()
}

fn ctx(provider: Provider, account: &str, order_id: &str) -> OrderContext {
    OrderContext {
        store_id: None,
        pickup: false,
        tenant: "acme".into(),
        provider,
        account: account.into(),
        provider_order_id: order_id.into(),
        webhook_id: format!("wh-{order_id}"),
        display_code: Some("A1".into()),
        received_at: now(),
        answer_by: now() + Duration::from_secs(600),
        api: None,
        callbacks: BTreeMap::new(),
        self_delivery: false,
        preorder: false,
    }
}

fn command(c: &OrderContext, action: Action) -> StatusCommand {
    StatusCommand {
        schema: StatusSchemaV1,
        status_id: format!("st-{}-{action}", c.provider_order_id),
        tenant: c.tenant.clone(),
        provider: c.provider,
        account: c.account.clone(),
        provider_order_id: c.provider_order_id.clone(),
        action,
        reason: None,
        ready_at: None,
        unavailable_items: vec![],
        origin: Origin::Backend,
        decided_at: now(),
        order_webhook_id: Some(c.webhook_id.clone()),
    }
}

impl Rig {
    async fn put_context(&self, c: &OrderContext) -> anyhow::Result<()> {
        let value = serde_json::to_vec(c)?;
        tokio::time::timeout(STEP, self.contexts.put(c.key(), value.into())).await??;
        Ok(())
    }

    async fn send(&self, cmd: &StatusCommand) -> anyhow::Result<()> {
        let subject = shared::subjects::status_command(cmd.provider, &cmd.account);
        let h = status_sync::auto_reject::command_headers(cmd);
        let body = serde_json::to_vec(cmd)?;
        tokio::time::timeout(STEP, async {
            self.js
                .publish_with_headers(subject, h, body.into())
                .await?
                .await
        })
        .await??;
        Ok(())
    }

    fn stage(&self) -> InProcessStage {
        InProcessStage::status_sync(&self.url, &self.hub, test_token_key())
    }

    /// Waits until the status-sync consumer has nothing pending or unacked.
    async fn settled(&self) -> anyhow::Result<()> {
        eventually(STEP, "status-sync settled", || async {
            let (pending, ack_pending) = consumer_pending(&self.js, "STATUS", "status-sync")
                .await
                .ok()?;
            (pending == 0 && ack_pending == 0).then_some(())
        })
        .await
    }

    /// The `status_failed` orders on `ORDERS`, as (headers, body).
    async fn status_failed_orders(&self) -> anyhow::Result<Vec<(async_nats::HeaderMap, Value)>> {
        let mut out = Vec::new();
        for m in stream_messages(&self.js, "ORDERS").await? {
            if m.headers.get(headers::EVENT).map(|v| v.as_str()) == Some("status_failed") {
                out.push((m.headers.clone(), serde_json::from_slice(&m.payload)?));
            }
        }
        Ok(out)
    }
}

/// What a call looked like, with the call time (`occurred_at`,
/// `happenedAt`, a defaulted `acceptanceTime`/`TimeAcceptedFor`) checked
/// to be now-ish and replaced by `"<now>"`.
fn seen(call: &orderhub_tests::fake_provider::StatusCall) -> (String, String, Option<Value>) {
    let mut body = call.body.clone();
    if let Some(Value::Object(map)) = body.as_mut() {
        for key in [
            "occurred_at",
            "happenedAt",
            "acceptanceTime",
            "TimeAcceptedFor",
        ] {
            if let Some(Value::String(t)) = map.get(key) {
                let at = OffsetDateTime::parse(t, &Rfc3339).expect("an RFC 3339 time");
                if (OffsetDateTime::now_utc() - at).abs() < time::Duration::seconds(120)
                    && !t.starts_with("2099")
                {
                    map.insert(key.into(), json!("<now>"));
                }
            }
        }
    }
    (call.method.clone(), call.path.clone(), body)
}

fn call(method: &str, path: &str, body: Option<Value>) -> (String, String, Option<Value>) {
    (method.into(), path.into(), body)
}

/// Every action of every provider: the exact request, checked by the fake
/// (its auth, body and enums), and answered with success.
#[tokio::test]
async fn every_action_of_every_provider_makes_the_documented_call() -> anyhow::Result<()> {
    let r = rig().await?;
    let stage = r.stage();
    let ready = now() + Duration::from_secs(20 * 60);
    let ready_s = rfc3339(ready);
    let soon = now() + Duration::from_secs(5 * 60);
    let with = |mut c: StatusCommand, f: &dyn Fn(&mut StatusCommand)| {
        f(&mut c);
        c
    };
    let reason = |code, message: Option<&str>| {
        Some(Reason {
            code,
            message: message.map(str::to_owned),
        })
    };
    let talabat = |token: &str| {
        let mut c = ctx(Provider::Talabat, "acme-talabat", token);
        let urls = r.fake.talabat_callback_urls(token);
        for name in [
            callback::ACCEPTED,
            callback::REJECTED,
            callback::PICKED_UP,
            callback::PREPARED,
        ] {
            c.callbacks
                .insert(name.into(), urls[name].as_str().unwrap().to_owned());
        }
        c
    };
    let uber = |id: &str, api: &str| {
        let mut c = ctx(Provider::Ubereats, "acme-ubereats", id);
        c.api = Some(api.into());
        c
    };
    let wolt = |id: &str| ctx(Provider::Wolt, "acme-wolt", id);
    let roo = |id: &str| ctx(Provider::Deliveroo, "acme-deliveroo", id);
    let jet = |id: &str| ctx(Provider::Justeat, "acme-justeat", id);
    let je = |id: &str| ctx(Provider::Justeat, "acme-justeat-partner", id);
    type Case = (
        OrderContext,
        StatusCommand,
        Vec<(String, String, Option<Value>)>,
    );
    let mut cases: Vec<Case> = Vec::new();
    let mut case = |c: OrderContext, cmd: &dyn Fn(&OrderContext) -> StatusCommand, want| {
        let cmd = cmd(&c);
        cases.push((c, cmd, want));
    };
    // Uber Eats, legacy order API.
    case(
        uber("ue2-accept", "v2"),
        &|c| with(command(c, Action::Accept), &|m| m.ready_at = Some(ready)),
        vec![call(
            "POST",
            "/v1/eats/orders/ue2-accept/accept_pos_order",
            Some(json!({"reason": "accepted", "pickup_time": ready.unix_timestamp()})),
        )],
    );
    case(
        uber("ue2-reject", "v2"),
        &|c| {
            with(command(c, Action::Reject), &|m| {
                m.reason = reason(ReasonCode::ItemsUnavailable, Some("No falafel"));
                m.unavailable_items = vec!["plu-1".into()];
            })
        },
        vec![call(
            "POST",
            "/v1/eats/orders/ue2-reject/deny_pos_order",
            Some(
                json!({"reason": {"explanation": "No falafel", "code": "ITEM_AVAILABILITY", "out_of_stock_items": ["plu-1"]}}),
            ),
        )],
    );
    case(
        uber("ue2-cancel", "v2"),
        &|c| {
            with(command(c, Action::Cancel), &|m| {
                m.reason = reason(ReasonCode::TooBusy, None)
            })
        },
        vec![call(
            "POST",
            "/v1/eats/orders/ue2-cancel/cancel",
            Some(json!({"reason": "RESTAURANT_TOO_BUSY", "details": "The restaurant is too busy"})),
        )],
    );
    case(
        uber("ue2-picked", "v2"),
        &|c| command(c, Action::PickedUp),
        vec![call(
            "POST",
            "/v1/eats/orders/ue2-picked/restaurantdelivery/status",
            Some(json!({"status": "started"})),
        )],
    );
    case(
        uber("ue2-delivered", "v2"),
        &|c| command(c, Action::Delivered),
        vec![call(
            "POST",
            "/v1/eats/orders/ue2-delivered/restaurantdelivery/status",
            Some(json!({"status": "delivered"})),
        )],
    );
    // Uber Eats, Order Fulfillment API.
    case(
        uber("ue1-accept", "v1"),
        &|c| with(command(c, Action::Accept), &|m| m.ready_at = Some(ready)),
        vec![call(
            "POST",
            "/v1/delivery/order/ue1-accept/accept",
            Some(json!({"accepted_by": "orderhub", "ready_for_pickup_time": ready_s})),
        )],
    );
    case(
        uber("ue1-reject", "v1"),
        &|c| {
            with(command(c, Action::Reject), &|m| {
                m.reason = reason(ReasonCode::ItemsUnavailable, None);
                m.unavailable_items = vec!["plu-2".into()];
            })
        },
        vec![call(
            "POST",
            "/v1/delivery/order/ue1-reject/deny",
            Some(
                json!({"deny_reason": {"type": "ITEM_ISSUE", "info": "Some items are unavailable",
                "item_metadata": {"invalid_item": [{"id": "plu-2", "type": "OUT_OF_ITEM"}]}}}),
            ),
        )],
    );
    case(
        uber("ue1-cancel", "v1"),
        &|c| {
            with(command(c, Action::Cancel), &|m| {
                m.reason = reason(ReasonCode::StoreClosed, None)
            })
        },
        vec![call(
            "POST",
            "/v1/delivery/order/ue1-cancel/cancel",
            Some(
                json!({"cancellation_reason": {"type": "STORE_CLOSED", "info": "The restaurant is closed"}}),
            ),
        )],
    );
    case(
        uber("ue1-ready", "v1"),
        &|c| command(c, Action::Ready),
        vec![call(
            "POST",
            "/v1/delivery/order/ue1-ready/ready",
            Some(json!({})),
        )],
    );
    case(
        uber("ue1-delay", "v1"),
        &|c| with(command(c, Action::Delay), &|m| m.ready_at = Some(ready)),
        vec![call(
            "POST",
            "/v1/delivery/order/ue1-delay/update-ready-time",
            Some(json!({"ready_for_pickup_time": ready_s})),
        )],
    );
    // Wolt.
    case(
        wolt("w-accept"),
        &|c| command(c, Action::Accept),
        vec![call("PUT", "/orders/w-accept/accept", None)],
    );
    case(
        wolt("w-accept-at"),
        &|c| with(command(c, Action::Accept), &|m| m.ready_at = Some(ready)),
        vec![call(
            "PUT",
            "/orders/w-accept-at/accept",
            Some(json!({"adjusted_pickup_time": ready_s})),
        )],
    );
    case(
        {
            let mut c = wolt("w-self");
            c.self_delivery = true;
            c
        },
        &|c| with(command(c, Action::Accept), &|m| m.ready_at = Some(ready)),
        vec![call(
            "PUT",
            "/orders/w-self/self-delivery/accept",
            Some(json!({"total_delivery_time": ready_s})),
        )],
    );
    case(
        {
            let mut c = wolt("w-pre");
            c.preorder = true;
            c
        },
        &|c| command(c, Action::Accept),
        vec![call("PUT", "/orders/w-pre/confirm-preorder", None)],
    );
    case(
        wolt("w-reject"),
        &|c| {
            with(command(c, Action::Reject), &|m| {
                m.reason = reason(ReasonCode::StoreClosed, Some("Closing"))
            })
        },
        vec![call(
            "PUT",
            "/orders/w-reject/reject",
            Some(json!({"reason": "Closing", "code": "VENUE_CLOSING_SOON"})),
        )],
    );
    case(
        wolt("w-ready"),
        &|c| command(c, Action::Ready),
        vec![call("PUT", "/orders/w-ready/ready", None)],
    );
    case(
        wolt("w-delivered"),
        &|c| command(c, Action::Delivered),
        vec![call("PUT", "/orders/w-delivered/delivered", None)],
    );
    // Talabat (the order's callbacks).
    case(
        talabat("t-accept"),
        &|c| command(c, Action::Accept),
        vec![call(
            "POST",
            "/v2/order/status/t-accept",
            Some(
                json!({"status": "order_accepted", "acceptanceTime": "<now>", "remoteOrderId": "wh-t-accept"}),
            ),
        )],
    );
    case(
        talabat("t-reject"),
        &|c| {
            with(command(c, Action::Reject), &|m| {
                m.reason = reason(ReasonCode::Address, None)
            })
        },
        vec![call(
            "POST",
            "/v2/order/status/t-reject",
            Some(
                json!({"status": "order_rejected", "reason": "ADDRESS_INCOMPLETE_MISSTATED", "message": "The address cannot be served"}),
            ),
        )],
    );
    case(
        talabat("t-ready"),
        &|c| command(c, Action::Ready),
        vec![call(
            "POST",
            "/v2/orders/t-ready/preparation-completed",
            None,
        )],
    );
    case(
        talabat("t-picked"),
        &|c| command(c, Action::PickedUp),
        vec![call(
            "POST",
            "/v2/order/status/t-picked",
            Some(json!({"status": "order_picked_up"})),
        )],
    );
    // Deliveroo.
    case(
        roo("d-accept"),
        &|c| command(c, Action::Accept),
        vec![
            call(
                "POST",
                "/order/v1/orders/d-accept/sync_status",
                Some(json!({"status": "succeeded", "occurred_at": "<now>"})),
            ),
            call(
                "PATCH",
                "/order/v1/orders/d-accept",
                Some(json!({"status": "accepted"})),
            ),
        ],
    );
    case(
        roo("d-reject"),
        &|c| {
            with(command(c, Action::Reject), &|m| {
                m.reason = reason(ReasonCode::TooBusy, None)
            })
        },
        vec![
            call(
                "POST",
                "/order/v1/orders/d-reject/sync_status",
                Some(
                    json!({"status": "failed", "reason": "other", "notes": "The restaurant is too busy", "occurred_at": "<now>"}),
                ),
            ),
            call(
                "PATCH",
                "/order/v1/orders/d-reject",
                Some(
                    json!({"status": "rejected", "reject_reason": "busy", "notes": "The restaurant is too busy"}),
                ),
            ),
        ],
    );
    case(
        roo("d-ready"),
        &|c| command(c, Action::Ready),
        vec![call(
            "POST",
            "/order/v1/orders/d-ready/prep_stage",
            Some(json!({"stage": "ready_for_collection", "occurred_at": "<now>"})),
        )],
    );
    case(
        roo("d-picked"),
        &|c| command(c, Action::PickedUp),
        vec![call(
            "POST",
            "/order/v1/orders/d-picked/prep_stage",
            Some(json!({"stage": "collected", "occurred_at": "<now>"})),
        )],
    );
    case(
        roo("d-delay"),
        &|c| with(command(c, Action::Delay), &|m| m.ready_at = Some(soon)),
        vec![call(
            "POST",
            "/order/v1/orders/d-delay/prep_stage",
            Some(json!({"stage": "in_kitchen", "delay": 6, "occurred_at": "<now>"})),
        )],
    );
    // Just Eat, JET Connect and the partner API.
    case(
        jet("j-accept"),
        &|c| command(c, Action::Accept),
        vec![call(
            "POST",
            "/order/j-accept/sent-to-pos-success",
            Some(json!({"happenedAt": "<now>"})),
        )],
    );
    case(
        jet("j-reject"),
        &|c| {
            with(command(c, Action::Reject), &|m| {
                m.reason = reason(ReasonCode::StoreClosed, None)
            })
        },
        vec![call(
            "POST",
            "/order/j-reject/sent-to-pos-failed",
            Some(
                json!({"happenedAt": "<now>", "errorCode": "STORE_CLOSED", "errorMessage": "The restaurant is closed"}),
            ),
        )],
    );
    case(
        je("je-accept"),
        &|c| with(command(c, Action::Accept), &|m| m.ready_at = Some(ready)),
        vec![call(
            "PUT",
            "/orders/je-accept/accept",
            Some(json!({"TimeAcceptedFor": ready_s})),
        )],
    );
    case(
        je("je-reject"),
        &|c| {
            with(command(c, Action::Reject), &|m| {
                m.reason = reason(ReasonCode::Other, Some("Sorry"))
            })
        },
        vec![call(
            "PUT",
            "/orders/je-reject/reject",
            Some(json!({"Message": "Sorry"})),
        )],
    );
    case(
        je("je-ready"),
        &|c| command(c, Action::Ready),
        vec![call("POST", "/orders/je-ready/readyforcollection", None)],
    );
    case(
        je("je-picked"),
        &|c| command(c, Action::PickedUp),
        vec![call("POST", "/orders/je-picked/dispatchedtocustomer", None)],
    );
    case(
        je("je-delivered"),
        &|c| command(c, Action::Delivered),
        vec![call("POST", "/orders/je-delivered/complete", None)],
    );
    case(
        je("je-delay"),
        &|c| with(command(c, Action::Delay), &|m| m.ready_at = Some(ready)),
        vec![call(
            "PUT",
            "/orders/je-delay/duedate",
            Some(json!({"DueDate": ready_s})),
        )],
    );

    for (c, cmd, _) in &cases {
        r.put_context(c).await?;
        r.send(cmd).await?;
    }
    for (c, cmd, want) in &cases {
        let id = &c.provider_order_id;
        let got = r.fake.wait_status_calls_for(id, want.len(), STEP).await?;
        let shown: Vec<_> = got.iter().map(seen).collect();
        assert_eq!(&shown, want, "{} {}", c.account, cmd.action);
        for s in &got {
            assert!((200..300).contains(&s.answered), "{id}: {s:?}");
            let auth = s.auth.as_deref().unwrap_or("");
            match (c.account.as_str(), s.endpoint.flyt_key()) {
                ("acme-justeat", true) => assert_eq!(auth, SECRET),
                ("acme-justeat-partner", _) => assert_eq!(auth, format!("JE-API-KEY {SECRET}")),
                _ => assert!(auth.starts_with("Bearer "), "{id}: {auth}"),
            }
        }
    }
    r.settled().await?;
    // Nothing retried, nothing more sent, nothing dead-lettered.
    let total: usize = cases.iter().map(|(_, _, w)| w.len()).sum();
    assert_eq!(r.fake.status_calls().len(), total);
    assert!(dead_letters(&r.js).await?.is_empty());
    stage
        .metrics_show(&[
            r#"status_sync_calls_total{provider="deliveroo",action="accept",outcome="done"} 1"#,
            r#"status_sync_calls_total{provider="wolt",action="accept",outcome="done"} 4"#,
            r#"status_sync_deadline_misses_total{provider="wolt"} 0"#,
        ])
        .await?;
    stage.stop().await
}

/// The provider answers 409 "already accepted": success, no retry.
#[tokio::test]
async fn already_accepted_is_success_without_retry() -> anyhow::Result<()> {
    let r = rig().await?;
    let stage = r.stage();
    let c = ctx(Provider::Ubereats, "acme-ubereats", "ue-dup");
    r.fake
        .set_decision(Platform::Ubereats, "ue-dup", Decision::Accepted);
    r.put_context(&c).await?;
    r.send(&command(&c, Action::Accept)).await?;
    let calls = r.fake.wait_status_calls_for("ue-dup", 1, STEP).await?;
    assert_eq!(calls[0].answered, 409);
    r.settled().await?;
    assert_eq!(r.fake.status_calls_for("ue-dup").len(), 1);
    assert!(dead_letters(&r.js).await?.is_empty());
    stage
        .metrics_show(&[
            r#"status_sync_calls_total{provider="ubereats",action="accept",outcome="already_done"} 1"#,
        ])
        .await?;
    stage.stop().await
}

/// 5xx three times, then the provider takes it: accepted.
#[tokio::test]
async fn three_5xx_then_accepted() -> anyhow::Result<()> {
    let r = rig().await?;
    let stage = r.stage();
    let c = ctx(Provider::Wolt, "acme-wolt", "w-flaky");
    r.fake.fault(
        Matcher::Status(Platform::Wolt),
        FaultReply::status(503).times(3),
    );
    r.put_context(&c).await?;
    r.send(&command(&c, Action::Accept)).await?;
    let calls = r.fake.wait_status_calls_for("w-flaky", 4, STEP).await?;
    let answered: Vec<u16> = calls.iter().map(|c| c.answered).collect();
    assert_eq!(answered, vec![503, 503, 503, 202]);
    r.settled().await?;
    assert_eq!(r.fake.status_calls_for("w-flaky").len(), 4);
    assert_eq!(
        r.fake.decision(Platform::Wolt, "w-flaky"),
        Some(Decision::Accepted)
    );
    assert!(dead_letters(&r.js).await?.is_empty());
    stage
        .metrics_show(&[
            r#"status_sync_calls_total{provider="wolt",action="accept",outcome="retried"} 3"#,
            r#"status_sync_calls_total{provider="wolt",action="accept",outcome="done"} 1"#,
        ])
        .await?;
    stage.stop().await
}

/// Still failing at the deadline: the DLQ with `deadline_passed`, and a
/// `status_failed` order for the backend on `ORDERS`.
#[tokio::test]
async fn failing_until_the_deadline_is_dead_lettered_and_told() -> anyhow::Result<()> {
    let r = rig().await?;
    let stage = r.stage();
    let mut c = ctx(Provider::Wolt, "acme-wolt", "w-late");
    c.answer_by = OffsetDateTime::now_utc() + Duration::from_secs(2);
    r.fake.fault(
        Matcher::Status(Platform::Wolt),
        FaultReply::status(503).times(1000),
    );
    r.put_context(&c).await?;
    let cmd = command(&c, Action::Accept);
    r.send(&cmd).await?;
    let (entry, _) = await_dead_letter(&r.js).await?;
    assert_eq!(entry.error_class, FailureClass::DeadlinePassed);
    assert_eq!(entry.stage, "status-sync");
    assert_eq!(entry.stream, "STATUS");
    assert!(entry.error.contains("answered 503"), "{}", entry.error);
    let calls = r.fake.status_calls_for("w-late");
    assert!(!calls.is_empty() && calls.iter().all(|c| c.answered == 503));
    let orders = eventually(STEP, "the status_failed order", || async {
        let o = r.status_failed_orders().await.ok()?;
        (!o.is_empty()).then_some(o)
    })
    .await?;
    assert_eq!(orders.len(), 1);
    let (h, body) = &orders[0];
    assert_eq!(
        h.get("Nats-Msg-Id").map(|v| v.as_str()),
        Some("status-failed:st-w-late-accept")
    );
    assert_eq!(
        h.get(headers::WEBHOOK_ID).map(|v| v.as_str()),
        Some("st-w-late-accept")
    );
    assert_eq!(h.get(headers::TENANT).map(|v| v.as_str()), Some("acme"));
    assert_eq!(body["event"], "status_failed");
    assert_eq!(body["webhook_id"], "st-w-late-accept");
    assert_eq!(body["provider"], "wolt");
    assert_eq!(body["provider_order_id"], "w-late");
    assert_eq!(body["display_code"], "A1");
    assert_eq!(body["items"], json!([]));
    assert_eq!(body["raw"]["stream"], "STATUS");
    assert_eq!(body["raw"]["subject"], "status.wolt.acme-wolt");
    let sc = &body["status_call"];
    assert_eq!(sc["status_id"], "st-w-late-accept");
    assert_eq!(sc["action"], "accept");
    assert_eq!(sc["origin"], "backend");
    assert_eq!(sc["error_class"], "deadline_passed");
    let order: canonical::order::Order = serde_json::from_value(body.clone())?;
    order.validate().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    stage
        .metrics_show(&[
            r#"status_sync_calls_total{provider="wolt",action="accept",outcome="deadline_passed"} 1"#,
            r#"status_sync_deadline_misses_total{provider="wolt"} 1"#,
        ])
        .await?;
    stage.stop().await
}

/// A Talabat callback to a host that is not the account's: refused, no
/// request made, and the backend told.
#[tokio::test]
async fn a_callback_to_a_foreign_host_is_refused_unsent() -> anyhow::Result<()> {
    let r = rig().await?;
    let stage = r.stage();
    let mut c = ctx(Provider::Talabat, "acme-talabat", "t-evil");
    c.callbacks.insert(
        callback::ACCEPTED.into(),
        "https://evil.example/v2/order/status/t-evil".into(),
    );
    r.put_context(&c).await?;
    r.send(&command(&c, Action::Accept)).await?;
    let (entry, _) = await_dead_letter(&r.js).await?;
    assert_eq!(entry.error_class, FailureClass::CallbackRefused);
    assert_eq!(entry.deliveries, 1);
    assert!(entry.error.contains("evil.example"), "{}", entry.error);
    assert!(r.fake.status_calls().is_empty());
    let orders = r.status_failed_orders().await?;
    assert_eq!(orders.len(), 1);
    assert_eq!(
        orders[0].1["status_call"]["error_class"],
        "callback_refused"
    );
    stage.stop().await
}

/// A new order the forwarder dead-lettered (the backend never took it) is
/// rejected at the provider.
#[tokio::test]
async fn a_dead_lettered_new_order_is_rejected_at_the_provider() -> anyhow::Result<()> {
    let r = rig().await?;
    let stage = r.stage();
    let c = ctx(Provider::Wolt, "acme-wolt", "w-orphan");
    r.put_context(&c).await?;
    let mut h = async_nats::HeaderMap::new();
    h.insert(headers::PROVIDER, "wolt");
    h.insert(headers::ACCOUNT, "acme-wolt");
    h.insert(headers::TENANT, "acme");
    h.insert(headers::WEBHOOK_ID, "wh-w-orphan");
    h.insert(headers::EVENT, "created");
    h.insert(headers::dlq::STAGE, "forwarder");
    h.insert(headers::dlq::ERROR_CLASS, "backend_rejected");
    h.insert("Nats-Msg-Id", "dlq:ORDERS:1");
    let body = json!({"schema": "orderhub.order.v1", "webhook_id": "wh-w-orphan", "event": "created",
        "provider": "wolt", "provider_order_id": "w-orphan", "tenant": "acme"});
    tokio::time::timeout(STEP, async {
        r.js.publish_with_headers("dlq.forwarder.wolt", h, serde_json::to_vec(&body)?.into())
            .await?
            .await?;
        anyhow::Ok(())
    })
    .await??;
    let calls = r.fake.wait_status_calls_for("w-orphan", 1, STEP).await?;
    assert_eq!(
        seen(&calls[0]),
        call(
            "PUT",
            "/orders/w-orphan/reject",
            Some(json!({"reason": "The restaurant cannot take this order", "code": "GENERIC"}))
        )
    );
    assert_eq!(calls[0].answered, 202);
    assert_eq!(
        r.fake.decision(Platform::Wolt, "w-orphan"),
        Some(Decision::Rejected)
    );
    let stored = stream_messages(&r.js, "STATUS").await?;
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0].headers.get("Nats-Msg-Id").map(|v| v.as_str()),
        Some("status:auto-reject-wh-w-orphan")
    );
    let cmd: StatusCommand = serde_json::from_slice(&stored[0].payload)?;
    assert_eq!(cmd.origin, Origin::AutoReject);
    r.settled().await?;
    stage
        .metrics_show(&[r#"status_sync_auto_rejects_total{outcome="published"} 1"#])
        .await?;
    stage.stop().await
}

/// The worker dies mid-call; another takes the command again, and the
/// provider's "already done" absorbs the repeat.
#[tokio::test]
async fn a_worker_killed_mid_call_is_absorbed_by_the_retry() -> anyhow::Result<()> {
    let r = rig().await?;
    let first = r.stage();
    let c = ctx(Provider::Wolt, "acme-wolt", "w-kill");
    r.fake
        .fault(Matcher::Status(Platform::Wolt), FaultReply::hang());
    r.put_context(&c).await?;
    r.send(&command(&c, Action::Accept)).await?;
    let calls = r.fake.wait_status_calls_for("w-kill", 1, STEP).await?;
    assert_eq!(calls[0].answered, 0);
    // Killed: no NAK, no ack; the provider had applied the accept before
    // the connection broke.
    first.task.abort();
    first.shutdown.cancel();
    r.fake
        .set_decision(Platform::Wolt, "w-kill", Decision::Accepted);
    let second = r.stage();
    let calls = r.fake.wait_status_calls_for("w-kill", 2, STEP).await?;
    assert_eq!(calls[1].method, "PUT");
    assert_eq!(calls[1].path, "/orders/w-kill/accept");
    assert_eq!(calls[1].answered, 409);
    r.settled().await?;
    assert_eq!(r.fake.status_calls_for("w-kill").len(), 2);
    assert!(dead_letters(&r.js).await?.is_empty());
    second.stop().await
}

/// A `direct` account: the stored command, byte for byte, POSTed to its
/// `status_url` with Standard Webhooks headers (webhook-id = status id).
#[tokio::test]
async fn a_direct_account_gets_the_signed_command() -> anyhow::Result<()> {
    let mut r = rig().await?;
    let backend = TestBackend::start().await?;
    r.hub = hub_with(
        &r.fake,
        &format!(
            r#"
[[account]]
id = "acme-direct"
provider = "direct"
tenant = "acme"
secret_envs = ["S"]
status_url = "{}/status"
"#,
            backend.url()
        ),
    );
    let stage = r.stage();
    let c = ctx(Provider::Direct, "acme-direct", "dir-1");
    r.put_context(&c).await?;
    let cmd = command(&c, Action::Ready);
    r.send(&cmd).await?;
    let got = eventually(STEP, "the direct status call", || async {
        let reqs = backend.requests();
        (!reqs.is_empty()).then_some(reqs)
    })
    .await?;
    r.settled().await?;
    assert_eq!(backend.requests().len(), 1);
    let req = &got[0];
    assert_eq!(req.method, "POST");
    assert!(req.path.ends_with("/status"), "{}", req.path);
    let stored = stream_messages(&r.js, "STATUS").await?;
    assert_eq!(req.body, stored[0].payload);
    let h = |name: &str| req.headers.get(name).unwrap().to_str().unwrap().to_owned();
    assert_eq!(h("webhook-id"), cmd.status_id);
    assert_eq!(h("content-type"), "application/json");
    let at = std::time::UNIX_EPOCH + Duration::from_secs(h("webhook-timestamp").parse()?);
    let want = shared::verify::direct::sign(
        &req.body,
        &secrecy::SecretString::from(SECRET),
        &cmd.status_id,
        at,
    )?;
    assert_eq!(
        h("webhook-signature"),
        want.get("webhook-signature").unwrap().to_str()?
    );
    stage.stop().await
}
