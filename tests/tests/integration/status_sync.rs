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
/// DoorDash's signing secret, base64url as its portal shows it (the JWT
/// key is what it decodes to).
const DOORDASH_SECRET: &str = "c2VjcmV0Pz4";
const DOORDASH_KEY: &[u8] = b"secret?>";
/// Keeta's app id; its app secret and access token are `SECRET`.
const KEETA_APP: &str = "1000001";

fn hub(fake: &FakeProvider) -> shared::config::HubConfig {
    hub_with(fake, "")
}

/// The test hub with `extra` accounts.
fn hub_with(fake: &FakeProvider, extra: &str) -> shared::config::HubConfig {
    let url = fake.url();
    let deliveroo_token = fake.deliveroo_token_url();
    let grab_token = fake.grab_token_url();
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

[[account]]
id = "acme-doordash"
provider = "doordash"
tenant = "acme"
secret_envs = ["S"]
[account.api]
base_url = "{url}"
developer_id = "dev-1"
key_id = "key-1"
client_secret_env = "DOORDASH"

[[account]]
id = "acme-glovo"
provider = "glovo"
tenant = "acme"
secret_envs = ["S"]
[account.api]
base_url = "{url}"
client_secret_env = "S"

[[account]]
id = "acme-glovo-integrations"
provider = "glovo"
tenant = "acme"
secret_envs = ["S"]
[account.api]
base_url = "{url}"
client_secret_env = "S"
status_api = "integrations"

[[account]]
id = "acme-grab"
provider = "grab"
tenant = "acme"
secret_envs = ["GRAB_KEY"]
[account.token_endpoint]
client_id = "grab-as-client"
client_secret_envs = ["GRAB_SECRET"]
[account.api]
base_url = "{url}"
token_url = "{grab_token}"
client_id_env = "S"
client_secret_env = "S"

[[account]]
id = "acme-keeta"
provider = "keeta"
tenant = "acme"
secret_envs = ["S"]
webhook_url = "http://127.0.0.1:9/api/webhooks/keeta/acme-keeta"
[account.api]
base_url = "{url}"
app_id = "{KEETA_APP}"
client_secret_env = "S"
access_token_env = "S"

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
    shared::config::HubConfig::from_toml(&text, "test", &|name| {
        Some(
            match name {
                "DOORDASH" => DOORDASH_SECRET,
                "GRAB_KEY" => "grab-token-signing-key-0123456789abcdef",
                "GRAB_SECRET" => "grab-client-secret-1",
                _ => SECRET,
            }
            .to_owned(),
        )
    })
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
    fake.add_doordash_key("dev-1", "key-1", DOORDASH_SECRET);
    fake.add_glovo_token(SECRET);
    fake.add_grab_client(SECRET, SECRET);
    fake.add_keeta_app(KEETA_APP, SECRET, SECRET);
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

/// Per-order ordering of the answers: a `ready` stored while the order's
/// `accept` is being retried waits for it (inside its delivery) and is
/// sent after it.
#[tokio::test]
async fn a_ready_queued_while_its_accept_retries_is_sent_after_it() -> anyhow::Result<()> {
    let r = rig().await?;
    let stage = r.stage();
    let c = ctx(Provider::Wolt, "acme-wolt", "w-in-turn");
    r.fake.fault(
        Matcher::Status(Platform::Wolt),
        FaultReply::status(503).times(3),
    );
    r.put_context(&c).await?;
    r.send(&command(&c, Action::Accept)).await?;
    // The accept has failed once at least: the ready is stored while it
    // is being retried.
    r.fake.wait_status_calls_for("w-in-turn", 1, STEP).await?;
    r.send(&command(&c, Action::Ready)).await?;
    let calls = r.fake.wait_status_calls_for("w-in-turn", 5, STEP).await?;
    let seen: Vec<(String, u16)> = calls
        .iter()
        .map(|c| (format!("{:?}", c.endpoint), c.answered))
        .collect();
    let accept = seen[0].0.clone();
    let ready = seen[4].0.clone();
    assert_ne!(accept, ready);
    assert_eq!(
        seen,
        vec![
            (accept.clone(), 503),
            (accept.clone(), 503),
            (accept.clone(), 503),
            (accept, 202),
            (ready, seen[4].1),
        ]
    );
    assert!((200..300).contains(&seen[4].1), "{seen:?}");
    r.settled().await?;
    stage
        .metrics_show(&[
            r#"status_sync_sequence_waits_total{reason="earlier_event"} 1"#,
            r#"status_sync_calls_total{provider="wolt",action="ready",outcome="retried"} 0"#,
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

/// DoorDash: every answer carries a JWT signed for the call; the one the
/// fake received verifies with the shared secret and has exactly
/// DoorDash's header and the documented claims (5 minutes' lifetime).
#[tokio::test]
async fn doordash_calls_carry_a_jwt_signed_with_the_shared_secret() -> anyhow::Result<()> {
    use base64::Engine;
    let r = rig().await?;
    let stage = r.stage();
    let before = OffsetDateTime::now_utc().unix_timestamp();
    let c = ctx(Provider::Doordash, "acme-doordash", "dd-accept");
    let ready = now() + Duration::from_secs(15 * 60);
    let mut accept = command(&c, Action::Accept);
    accept.ready_at = Some(ready);
    r.put_context(&c).await?;
    r.send(&accept).await?;
    let calls = r.fake.wait_status_calls_for("dd-accept", 1, STEP).await?;
    let after = OffsetDateTime::now_utc().unix_timestamp();
    assert_eq!(
        seen(&calls[0]),
        call(
            "PATCH",
            "/api/v1/orders/dd-accept",
            Some(json!({
                "merchant_supplied_id": "wh-dd-accept",
                "order_status": "success",
                "prep_time": rfc3339(ready),
            }))
        )
    );
    assert_eq!(calls[0].answered, 202);
    assert_eq!(
        calls[0].extra_headers,
        vec![("auth-version".to_owned(), "v2".to_owned())]
    );
    let jwt = calls[0]
        .auth
        .as_deref()
        .and_then(|a| a.strip_prefix("Bearer "))
        .expect("a Bearer JWT")
        .to_owned();
    // Read without the hub's code: three base64url parts.
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3);
    let decode = |p: &str| -> Value {
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(parts[0])?,
        br#"{"alg":"HS256","typ":"JWT","dd-ver":"DD-JWT-V1"}"#
    );
    let claims = decode(parts[1]);
    let iat = claims["iat"].as_i64().expect("iat");
    assert!((before..=after).contains(&iat), "{claims}");
    assert_eq!(
        claims,
        json!({"aud": "doordash", "iss": "dev-1", "kid": "key-1", "iat": iat, "exp": iat + 300})
    );
    // Signed with the base64url-decoded secret.
    shared::tokens::doordash::verify(&jwt, DOORDASH_KEY, iat, Duration::ZERO)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    assert!(
        shared::tokens::doordash::verify(&jwt, DOORDASH_SECRET.as_bytes(), iat, Duration::ZERO)
            .is_err()
    );
    // A ready for the same order gets a JWT of its own.
    let ready_cmd = command(&c, Action::Ready);
    r.send(&ready_cmd).await?;
    let calls = r.fake.wait_status_calls_for("dd-accept", 2, STEP).await?;
    assert_eq!(
        seen(&calls[1]),
        call(
            "PATCH",
            "/api/v1/orders/dd-accept/events/order_ready_for_pickup",
            Some(json!({"merchant_supplied_id": "wh-dd-accept"}))
        )
    );
    assert_eq!(calls[1].answered, 202);
    r.settled().await?;
    assert_eq!(
        r.fake.decision(Platform::Doordash, "dd-accept"),
        Some(Decision::Accepted)
    );
    assert!(dead_letters(&r.js).await?.is_empty());
    stage
        .metrics_show(&[
            r#"status_sync_calls_total{provider="doordash",action="accept",outcome="done"} 1"#,
            r#"status_sync_calls_total{provider="doordash",action="ready",outcome="done"} 1"#,
        ])
        .await?;
    stage.stop().await
}

/// A DoorDash confirm decided after the order's deadline: never sent, the
/// DLQ with `deadline_passed`, the backend told.
#[tokio::test]
async fn a_doordash_confirm_after_the_deadline_is_dead_lettered_unsent() -> anyhow::Result<()> {
    let r = rig().await?;
    let stage = r.stage();
    let mut c = ctx(Provider::Doordash, "acme-doordash", "dd-late");
    c.received_at = now() - Duration::from_secs(400);
    c.answer_by = now() - Duration::from_secs(220);
    r.put_context(&c).await?;
    r.send(&command(&c, Action::Accept)).await?;
    let (entry, _) = await_dead_letter(&r.js).await?;
    assert_eq!(entry.error_class, FailureClass::DeadlinePassed);
    assert_eq!(entry.stream, "STATUS");
    assert!(
        entry.error.starts_with(
            "doordash accept of order dd-late: now is past the provider's answer deadline"
        ),
        "{}",
        entry.error
    );
    let orders = eventually(STEP, "the status_failed order", || async {
        let o = r.status_failed_orders().await.ok()?;
        (!o.is_empty()).then_some(o)
    })
    .await?;
    assert_eq!(orders.len(), 1);
    assert_eq!(orders[0].1["status_call"]["error_class"], "deadline_passed");
    assert_eq!(orders[0].1["provider"], "doordash");
    assert!(r.fake.status_calls_for("dd-late").is_empty());
    stage
        .metrics_show(&[
            r#"status_sync_calls_total{provider="doordash",action="accept",outcome="deadline_passed"} 1"#,
            r#"status_sync_deadline_misses_total{provider="doordash"} 1"#,
        ])
        .await?;
    stage.stop().await
}

/// Glovo: accept and ready reach the fake with the partner token raw, the
/// store in the path (legacy) or in Glovo's header (integrations).
#[tokio::test]
async fn glovo_accept_and_ready_name_the_store() -> anyhow::Result<()> {
    let r = rig().await?;
    let stage = r.stage();
    let mut legacy = ctx(Provider::Glovo, "acme-glovo", "g-1");
    legacy.store_id = Some("store 7".into());
    let mut integrations = ctx(Provider::Glovo, "acme-glovo-integrations", "g-2");
    integrations.store_id = Some("store-8".into());
    let mut no_store = ctx(Provider::Glovo, "acme-glovo", "g-3");
    no_store.store_id = None;
    for c in [&legacy, &integrations, &no_store] {
        r.put_context(c).await?;
    }
    r.send(&command(&legacy, Action::Accept)).await?;
    r.send(&command(&integrations, Action::Accept)).await?;
    let legacy_calls = r.fake.wait_status_calls_for("g-1", 1, STEP).await?;
    let integration_calls = r.fake.wait_status_calls_for("g-2", 1, STEP).await?;
    r.send(&command(&legacy, Action::Ready)).await?;
    r.send(&command(&integrations, Action::Ready)).await?;
    let legacy_calls = [
        legacy_calls,
        r.fake.wait_status_calls_for("g-1", 2, STEP).await?[1..].to_vec(),
    ]
    .concat();
    let integration_calls = [
        integration_calls,
        r.fake.wait_status_calls_for("g-2", 2, STEP).await?[1..].to_vec(),
    ]
    .concat();
    let shown: Vec<_> = legacy_calls.iter().map(seen).collect();
    assert_eq!(
        shown,
        vec![
            call(
                "PUT",
                "/webhook/stores/store%207/orders/g-1/status",
                Some(json!({"status": "ACCEPTED"}))
            ),
            call(
                "PUT",
                "/webhook/stores/store%207/orders/g-1/status",
                Some(json!({"status": "READY_FOR_PICKUP"}))
            ),
        ]
    );
    let committed = integration_calls[0].body.as_ref().unwrap()["committedPreparationTime"]
        .as_str()
        .unwrap()
        .to_owned();
    let at = OffsetDateTime::parse(&committed, &Rfc3339)?;
    let ahead = at - OffsetDateTime::now_utc();
    assert!(
        ahead > time::Duration::minutes(8) && ahead <= time::Duration::minutes(10),
        "{committed}"
    );
    let shown: Vec<_> = integration_calls.iter().map(seen).collect();
    assert_eq!(
        shown,
        vec![
            call(
                "PUT",
                "/api/v0/integrations/orders/g-2/accept",
                Some(json!({ "committedPreparationTime": committed }))
            ),
            call(
                "PUT",
                "/api/v0/integrations/orders/g-2/ready_for_pickup",
                None
            ),
        ]
    );
    for c in legacy_calls.iter().chain(&integration_calls) {
        assert_eq!((c.answered, c.auth.as_deref()), (204, Some(SECRET)));
    }
    for c in &integration_calls {
        assert_eq!(
            c.extra_headers,
            vec![(
                "glovo-store-address-external-id".to_owned(),
                "store-8".to_owned()
            )]
        );
    }
    // An order whose context names no store: dead-lettered, nothing sent.
    r.send(&command(&no_store, Action::Accept)).await?;
    let (entry, _) = await_dead_letter(&r.js).await?;
    assert_eq!(entry.error_class, FailureClass::InvalidPayload);
    assert!(entry.error.contains("no store id"), "{}", entry.error);
    assert!(r.fake.status_calls_for("g-3").is_empty());
    r.settled().await?;
    assert_eq!(
        r.fake.decision(Platform::Glovo, "g-1"),
        Some(Decision::Accepted)
    );
    stage.stop().await
}

/// Grab: the token comes from Grab's endpoint (a JSON grant) and is
/// shared; a second "ready" meets Grab's 400 "already marked ready",
/// which counts as done.
#[tokio::test]
async fn grab_accepts_with_a_json_grant_token_and_a_repeated_ready_is_done() -> anyhow::Result<()> {
    let r = rig().await?;
    let stage = r.stage();
    let mut c = ctx(Provider::Grab, "acme-grab", "gr-1");
    c.store_id = Some("1-CYNGRUNGSBCCC".into());
    r.put_context(&c).await?;
    r.send(&command(&c, Action::Accept)).await?;
    let calls = r.fake.wait_status_calls_for("gr-1", 1, STEP).await?;
    assert_eq!(
        seen(&calls[0]),
        call(
            "POST",
            "/partner/v1/order/prepare",
            Some(json!({"orderID": "gr-1", "toState": "Accepted"}))
        )
    );
    assert_eq!(calls[0].answered, 204);
    let token = calls[0]
        .auth
        .as_deref()
        .and_then(|a| a.strip_prefix("Bearer "))
        .expect("a Bearer token");
    assert!(token.starts_with("grab-at-"), "{token}");
    assert!(r.fake.token_live(token));
    assert_eq!(r.fake.mints_by(Platform::Grab, SECRET), 1);
    let mut ready = command(&c, Action::Ready);
    r.send(&ready).await?;
    r.fake.wait_status_calls_for("gr-1", 2, STEP).await?;
    ready.status_id = "st-gr-1-ready-again".into();
    r.send(&ready).await?;
    let calls = r.fake.wait_status_calls_for("gr-1", 3, STEP).await?;
    let answered: Vec<u16> = calls.iter().map(|c| c.answered).collect();
    assert_eq!(answered, vec![204, 204, 400]);
    assert_eq!(
        seen(&calls[2]),
        call(
            "POST",
            "/partner/v1/orders/mark",
            Some(json!({"orderID": "gr-1", "markStatus": 1}))
        )
    );
    r.settled().await?;
    assert_eq!(r.fake.status_calls_for("gr-1").len(), 3);
    assert!(dead_letters(&r.js).await?.is_empty());
    // One token for the three calls.
    assert_eq!(r.fake.mints(Platform::Grab), 1);
    stage
        .metrics_show(&[
            r#"status_sync_calls_total{provider="grab",action="accept",outcome="done"} 1"#,
            r#"status_sync_calls_total{provider="grab",action="ready",outcome="done"} 1"#,
            r#"status_sync_calls_total{provider="grab",action="ready",outcome="already_done"} 1"#,
        ])
        .await?;
    stage.stop().await
}

/// Keeta: a confirm signed right is taken (code 0); its codes are read
/// from the 200's body: a system error retried, a parameter error
/// dead-lettered, "not in a valid state" done.
#[tokio::test]
async fn keeta_confirms_signed_and_its_codes_are_classified() -> anyhow::Result<()> {
    let r = rig().await?;
    let stage = r.stage();
    let order = "1234567890123456789";
    let keeta = |id: &str| {
        let mut c = ctx(Provider::Keeta, "acme-keeta", id);
        c.store_id = Some("98765".into());
        c
    };
    let c = keeta(order);
    r.put_context(&c).await?;
    // Two system errors first: retried, then taken.
    r.fake.fault(
        Matcher::Status(Platform::Keeta),
        FaultReply::status(200)
            .with_body(r#"{"code":309000000,"message":"System error","data":null}"#)
            .times(2),
    );
    r.send(&command(&c, Action::Accept)).await?;
    let calls = r.fake.wait_status_calls_for(order, 3, STEP).await?;
    assert!(calls.iter().all(|c| c.answered == 200 && c.auth.is_none()));
    let body = calls[2].body.clone().expect("a body");
    assert_eq!(
        body["orderViewId"].as_i64(),
        Some(1_234_567_890_123_456_789)
    );
    assert_eq!(body["shopId"], 98765);
    assert_eq!(body["appId"], 1_000_001);
    assert_eq!(body["accessToken"], SECRET);
    let sig = body["sig"].as_str().expect("a sig");
    assert_eq!(sig.len(), 64);
    assert!(
        sig.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    let ts = body["timestamp"].as_i64().expect("Unix seconds");
    assert!((OffsetDateTime::now_utc().unix_timestamp() - ts).abs() < 120);
    assert_eq!(
        r.fake.decision(Platform::Keeta, order),
        Some(Decision::Accepted)
    );
    // Confirmed again (a re-sent decision): Keeta's "not in a valid
    // state" is done.
    let mut again = command(&c, Action::Accept);
    again.status_id = "st-keeta-again".into();
    r.send(&again).await?;
    let calls = r.fake.wait_status_calls_for(order, 4, STEP).await?;
    assert_eq!(calls[3].answered, 200);
    // A parameter error: permanent.
    let bad = keeta("42");
    r.put_context(&bad).await?;
    r.fake.fault(
        Matcher::Status(Platform::Keeta),
        FaultReply::status(200)
            .with_body(r#"{"code":109000000,"message":"shopId is null","data":null}"#),
    );
    r.send(&command(&bad, Action::Ready)).await?;
    let (entry, _) = await_dead_letter(&r.js).await?;
    assert_eq!(entry.error_class, FailureClass::ProviderRejected);
    assert!(
        entry
            .error
            .ends_with("answered code 109000000: shopId is null"),
        "{}",
        entry.error
    );
    assert_eq!(r.fake.status_calls_for("42").len(), 1);
    r.settled().await?;
    stage
        .metrics_show(&[
            r#"status_sync_calls_total{provider="keeta",action="accept",outcome="retried"} 2"#,
            r#"status_sync_calls_total{provider="keeta",action="accept",outcome="done"} 1"#,
            r#"status_sync_calls_total{provider="keeta",action="accept",outcome="already_done"} 1"#,
            r#"status_sync_calls_total{provider="keeta",action="ready",outcome="failed"} 1"#,
        ])
        .await?;
    stage.stop().await
}

/// DoorDash: the tablet confirmed the order first, so the backend's
/// reject meets the 400 "already processed or expired": DoorDash still
/// expects the food, so the reject failed (`provider_rejected`), and the
/// backend hears it as a `status_failed` order.
#[tokio::test]
async fn a_doordash_reject_after_the_tablet_confirmed_is_a_failure() -> anyhow::Result<()> {
    let r = rig().await?;
    let stage = r.stage();
    let c = ctx(Provider::Doordash, "acme-doordash", "dd-tablet");
    r.fake
        .set_decision(Platform::Doordash, "dd-tablet", Decision::Accepted);
    r.put_context(&c).await?;
    r.send(&command(&c, Action::Reject)).await?;
    let (entry, _) = await_dead_letter(&r.js).await?;
    assert_eq!(entry.error_class, FailureClass::ProviderRejected);
    assert_eq!(
        entry.error,
        r#"doordash PATCH /api/v1/orders/dd-tablet answered 400: {"code":"validation_error","message":"Order already processed or expired"}"#
    );
    let calls = r.fake.status_calls_for("dd-tablet");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].answered, 400);
    assert_eq!(
        r.fake.decision(Platform::Doordash, "dd-tablet"),
        Some(Decision::Accepted)
    );
    let orders = eventually(STEP, "the status_failed order", || async {
        let o = r.status_failed_orders().await.ok()?;
        (!o.is_empty()).then_some(o)
    })
    .await?;
    assert_eq!(orders.len(), 1);
    let sc = &orders[0].1["status_call"];
    assert_eq!(sc["status_id"], "st-dd-tablet-reject");
    assert_eq!(sc["action"], "reject");
    assert_eq!(sc["error_class"], "provider_rejected");
    r.settled().await?;
    stage
        .metrics_show(&[
            r#"status_sync_calls_total{provider="doordash",action="reject",outcome="failed"} 1"#,
        ])
        .await?;
    stage.stop().await
}

/// Grab: a 400 that names a field ("invalid toState value") is a refusal,
/// not Grab's "invalid order state".
#[tokio::test]
async fn a_grab_validation_error_naming_to_state_is_a_refusal() -> anyhow::Result<()> {
    let r = rig().await?;
    let stage = r.stage();
    let mut c = ctx(Provider::Grab, "acme-grab", "gr-bad");
    c.store_id = Some("1-CYNGRUNGSBCCC".into());
    let refusal = r#"{"code":"invalid_argument","message":"invalid toState value"}"#;
    r.fake.fault(
        Matcher::Status(Platform::Grab),
        FaultReply::status(400).with_body(refusal),
    );
    r.put_context(&c).await?;
    r.send(&command(&c, Action::Accept)).await?;
    let (entry, _) = await_dead_letter(&r.js).await?;
    assert_eq!(entry.error_class, FailureClass::ProviderRejected);
    assert_eq!(
        entry.error,
        format!("grab POST /partner/v1/order/prepare answered 400: {refusal}")
    );
    let calls = r.fake.status_calls_for("gr-bad");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].answered, 400);
    assert_eq!(r.fake.decision(Platform::Grab, "gr-bad"), None);
    r.settled().await?;
    stage
        .metrics_show(&[
            r#"status_sync_calls_total{provider="grab",action="accept",outcome="failed"} 1"#,
        ])
        .await?;
    stage.stop().await
}
