use std::collections::BTreeMap;

use canonical::status::{Origin, StatusSchemaV1};
use shared::config::HubConfig;

use super::*;

const HUB: &str = r#"
[[tenant]]
id = "acme"
backend_url = "https://backend.example/orders"

[[account]]
id = "a-ubereats"
provider = "ubereats"
tenant = "acme"
secret_envs = ["S"]
[account.api]
base_url = "https://api.uber.com"
token_url = "https://auth.uber.com/oauth/v2/token"
client_id_env = "S"
client_secret_env = "S"

[[account]]
id = "a-wolt"
provider = "wolt"
tenant = "acme"
secret_envs = ["S"]
[account.api]
base_url = "https://pos.wolt.com"
token_url = "https://pos.wolt.com/oauth2/token"
client_id_env = "S"
client_secret_env = "S"
refresh_token_env = "S"

[[account]]
id = "a-talabat"
provider = "talabat"
tenant = "acme"
secret_envs = ["S"]
[account.api]
base_url = "https://middleware.talabat.com"
token_url = "https://middleware.talabat.com/v2/login"
client_id_env = "S"
client_secret_env = "S"
callback_hosts = ["cb.talabat.com"]

[[account]]
id = "a-deliveroo"
provider = "deliveroo"
tenant = "acme"
secret_envs = ["S"]
[account.api]
base_url = "https://api.deliveroo.com"
token_url = "https://auth.deliveroo.com/oauth2/token"
client_id_env = "S"
client_secret_env = "S"

[[account]]
id = "a-justeat"
provider = "justeat"
tenant = "acme"
secret_envs = ["S"]
[account.api]
base_url = "https://connect.just-eat.io"
client_secret_env = "S"

[[account]]
id = "a-justeat-partner"
provider = "justeat"
tenant = "acme"
secret_envs = ["S"]
[account.api]
base_url = "https://uk-partnerapi.just-eat.io"
client_secret_env = "S"
status_api = "partner"

[[account]]
id = "a-careem"
provider = "careem"
tenant = "acme"
secret_envs = ["S"]

[[account]]
id = "a-direct"
provider = "direct"
tenant = "acme"
secret_envs = ["S"]
status_url = "https://backend.example/status"

[[account]]
id = "a-direct-none"
provider = "direct"
tenant = "acme"
secret_envs = ["S"]

[[account]]
id = "a-wolt-noapi"
provider = "wolt"
tenant = "acme"
secret_envs = ["S"]

[[account]]
id = "a-doordash"
provider = "doordash"
tenant = "acme"
secret_envs = ["S"]
[account.api]
base_url = "https://openapi.doordash.com/marketplace"
developer_id = "dev-1"
key_id = "key-1"
client_secret_env = "DOORDASH"

[[account]]
id = "a-glovo"
provider = "glovo"
tenant = "acme"
secret_envs = ["S"]
[account.api]
base_url = "https://api.glovoapp.com"
client_secret_env = "GLOVO"

[[account]]
id = "a-glovo-integrations"
provider = "glovo"
tenant = "acme"
secret_envs = ["S"]
[account.api]
base_url = "https://api.glovoapp.com"
client_secret_env = "GLOVO"
status_api = "integrations"

[[account]]
id = "a-grab"
provider = "grab"
tenant = "acme"
secret_envs = ["GRABKEY"]
[account.token_endpoint]
client_id = "grab-client"
client_secret_envs = ["GRABSECRET"]
[account.api]
base_url = "https://partner-api.grab.com/grabfood"
token_url = "https://api.grab.com/grabid/v1/oauth2/token"
client_id_env = "S"
client_secret_env = "S"

[[account]]
id = "a-keeta"
provider = "keeta"
tenant = "acme"
secret_envs = ["S"]
webhook_url = "https://hub.example/api/webhooks/keeta/a-keeta"
[account.api]
base_url = "https://open.mykeeta.com/api/open"
app_id = "3084446411"
client_secret_env = "KEETA"
access_token_env = "KEETA_TOKEN"
"#;

/// DoorDash's signing secret: base64url of `secret?>`.
const DOORDASH_SECRET: &str = "c2VjcmV0Pz4";

fn hub() -> HubConfig {
    HubConfig::from_toml(HUB, "test", &|name| {
        Some(
            match name {
                "DOORDASH" => DOORDASH_SECRET,
                "GLOVO" => "glovo-partner-token",
                "KEETA" => "SEKRET",
                "KEETA_TOKEN" => "tok",
                "GRABKEY" => "grab-token-signing-key-0123456789abcdef",
                "GRABSECRET" => "grab-client-secret-1",
                _ => "whsec_dGVzdA==",
            }
            .to_owned(),
        )
    })
    .unwrap()
}

fn t(s: &str) -> OffsetDateTime {
    OffsetDateTime::parse(s, &Rfc3339).unwrap()
}

const NOW: &str = "2026-12-02T18:00:00Z";

fn ctx(provider: Provider) -> OrderContext {
    OrderContext {
        store_id: None,
        pickup: false,
        tenant: "acme".into(),
        provider,
        account: "a".into(),
        provider_order_id: "o/1 x".into(),
        webhook_id: "wh-1".into(),
        display_code: None,
        received_at: t("2026-12-02T17:59:00Z"),
        answer_by: t("2026-12-02T18:10:00Z"),
        api: None,
        callbacks: BTreeMap::from([
            (
                callback::ACCEPTED.into(),
                "https://cb.talabat.com/v2/order/status/tok".into(),
            ),
            (
                callback::REJECTED.into(),
                "https://cb.talabat.com/v2/order/status/tok".into(),
            ),
            (
                callback::PICKED_UP.into(),
                "https://cb.talabat.com/v2/order/status/tok".into(),
            ),
            (
                callback::PREPARED.into(),
                "https://cb.talabat.com/v2/orders/tok/preparation-completed".into(),
            ),
        ]),
        self_delivery: false,
        preorder: false,
    }
}

fn cmd(action: Action) -> StatusCommand {
    StatusCommand {
        schema: StatusSchemaV1,
        status_id: "st-1".into(),
        tenant: "acme".into(),
        provider: Provider::Wolt,
        account: "a".into(),
        provider_order_id: "o/1 x".into(),
        action,
        reason: None,
        ready_at: None,
        unavailable_items: vec![],
        origin: Origin::Backend,
        decided_at: t("2026-12-02T17:59:30Z"),
        order_webhook_id: Some("wh-1".into()),
    }
}

fn with_reason(mut c: StatusCommand, code: ReasonCode, message: Option<&str>) -> StatusCommand {
    c.reason = Some(Reason {
        code,
        message: message.map(str::to_owned),
    });
    c
}

fn with_ready(mut c: StatusCommand, at: &str) -> StatusCommand {
    c.ready_at = Some(t(at));
    c
}

/// One call as `METHOD path auth body`, the path as sent under
/// `https://h` (each segment percent-encoded).
fn show(call: &Call) -> (String, String, Auth, Option<Value>) {
    let path = match &call.target {
        Target::Api(segments) => {
            let mut u = url::Url::parse("https://h").unwrap();
            u.path_segments_mut().unwrap().extend(segments);
            u.path().to_owned()
        }
        Target::Callback(u) => u.clone(),
        Target::StatusUrl => "status_url".into(),
    };
    let body = match &call.body {
        Body::None => None,
        Body::Json(v) => Some(v.clone()),
        Body::Command => Some(json!("command")),
    };
    (call.method.to_string(), path, call.auth, body)
}

fn calls(
    account: &str,
    ctx: &OrderContext,
    cmd: &StatusCommand,
) -> Vec<(String, String, Auth, Option<Value>)> {
    let hub = hub();
    let a = hub.accounts.iter().find(|a| a.id == account).unwrap();
    plan(a, ctx, cmd, t(NOW))
        .unwrap()
        .iter()
        .map(show)
        .collect()
}

fn one(
    account: &str,
    ctx: &OrderContext,
    cmd: &StatusCommand,
) -> (String, String, Auth, Option<Value>) {
    let mut all = calls(account, ctx, cmd);
    assert_eq!(all.len(), 1, "{all:?}");
    all.remove(0)
}

fn req(m: &str, p: &str, a: Auth, b: Option<Value>) -> (String, String, Auth, Option<Value>) {
    (m.into(), p.into(), a, b)
}

const ID: &str = "o%2F1%20x";

#[test]
fn uber_legacy_calls() {
    let c = ctx(Provider::Ubereats);
    let p = |s: &str| format!("/v1/eats/orders/{ID}/{s}");
    assert_eq!(
        one("a-ubereats", &c, &cmd(Action::Accept)),
        req(
            "POST",
            &p("accept_pos_order"),
            Auth::Bearer,
            Some(json!({"reason": "accepted"}))
        )
    );
    assert_eq!(
        one(
            "a-ubereats",
            &c,
            &with_ready(cmd(Action::Accept), "2026-12-02T18:20:00Z")
        )
        .3,
        Some(json!({"reason": "accepted", "pickup_time": 1_796_235_600}))
    );
    let mut reject = with_reason(cmd(Action::Reject), ReasonCode::ItemsUnavailable, None);
    reject.unavailable_items = vec!["plu-1".into(), "plu-2".into()];
    assert_eq!(
        one("a-ubereats", &c, &reject),
        req(
            "POST",
            &p("deny_pos_order"),
            Auth::Bearer,
            Some(json!({"reason": {
                "explanation": "Some items are unavailable",
                "code": "ITEM_AVAILABILITY",
                "out_of_stock_items": ["plu-1", "plu-2"],
            }}))
        )
    );
    assert_eq!(
        one(
            "a-ubereats",
            &c,
            &with_reason(cmd(Action::Reject), ReasonCode::TooBusy, Some("Rush"))
        )
        .3,
        Some(json!({"reason": {"explanation": "Rush", "code": "CAPACITY"}}))
    );
    assert_eq!(
        one(
            "a-ubereats",
            &c,
            &with_reason(cmd(Action::Cancel), ReasonCode::StoreClosed, None)
        ),
        req(
            "POST",
            &p("cancel"),
            Auth::Bearer,
            Some(json!({"reason": "KITCHEN_CLOSED", "details": "The restaurant is closed"}))
        )
    );
    assert_eq!(
        one("a-ubereats", &c, &cmd(Action::PickedUp)),
        req(
            "POST",
            &p("restaurantdelivery/status"),
            Auth::Bearer,
            Some(json!({"status": "started"}))
        )
    );
    assert_eq!(
        one("a-ubereats", &c, &cmd(Action::Delivered)).3,
        Some(json!({"status": "delivered"}))
    );
}

#[test]
fn uber_fulfillment_calls() {
    let mut c = ctx(Provider::Ubereats);
    c.api = Some("v1".into());
    let p = |s: &str| format!("/v1/delivery/order/{ID}/{s}");
    assert_eq!(
        one("a-ubereats", &c, &cmd(Action::Accept)),
        req(
            "POST",
            &p("accept"),
            Auth::Bearer,
            Some(json!({"accepted_by": "orderhub"}))
        )
    );
    assert_eq!(
        one(
            "a-ubereats",
            &c,
            &with_ready(cmd(Action::Accept), "2026-12-02T22:20:00+04:00")
        )
        .3,
        Some(json!({"accepted_by": "orderhub", "ready_for_pickup_time": "2026-12-02T18:20:00Z"}))
    );
    let mut reject = with_reason(
        cmd(Action::Reject),
        ReasonCode::ItemsUnavailable,
        Some("No falafel"),
    );
    reject.unavailable_items = vec!["plu-1".into()];
    assert_eq!(
        one("a-ubereats", &c, &reject),
        req(
            "POST",
            &p("deny"),
            Auth::Bearer,
            Some(json!({"deny_reason": {
                "type": "ITEM_ISSUE",
                "info": "No falafel",
                "item_metadata": {"invalid_item": [{"id": "plu-1", "type": "OUT_OF_ITEM"}]},
            }}))
        )
    );
    assert_eq!(
        one(
            "a-ubereats",
            &c,
            &with_reason(cmd(Action::Cancel), ReasonCode::Address, None)
        ),
        req(
            "POST",
            &p("cancel"),
            Auth::Bearer,
            Some(
                json!({"cancellation_reason": {"type": "ADDRESS", "info": "The address cannot be served"}})
            )
        )
    );
    assert_eq!(
        one("a-ubereats", &c, &cmd(Action::Ready)),
        req("POST", &p("ready"), Auth::Bearer, Some(json!({})))
    );
    assert_eq!(
        one(
            "a-ubereats",
            &c,
            &with_ready(cmd(Action::Delay), "2026-12-02T18:30:00Z")
        ),
        req(
            "POST",
            &p("update-ready-time"),
            Auth::Bearer,
            Some(json!({"ready_for_pickup_time": "2026-12-02T18:30:00Z"}))
        )
    );
}

#[test]
fn wolt_calls() {
    let c = ctx(Provider::Wolt);
    let p = |s: &str| format!("/orders/{ID}/{s}");
    assert_eq!(
        one("a-wolt", &c, &cmd(Action::Accept)),
        req("PUT", &p("accept"), Auth::Bearer, None)
    );
    assert_eq!(
        one(
            "a-wolt",
            &c,
            &with_ready(cmd(Action::Accept), "2026-12-02T18:20:00Z")
        )
        .3,
        Some(json!({"adjusted_pickup_time": "2026-12-02T18:20:00Z"}))
    );
    let mut sd = c.clone();
    sd.self_delivery = true;
    assert_eq!(
        one("a-wolt", &sd, &cmd(Action::Accept)),
        req("PUT", &p("self-delivery/accept"), Auth::Bearer, None)
    );
    assert_eq!(
        one(
            "a-wolt",
            &sd,
            &with_ready(cmd(Action::Accept), "2026-12-02T18:45:00Z")
        )
        .3,
        Some(json!({"total_delivery_time": "2026-12-02T18:45:00Z"}))
    );
    let mut pre = c.clone();
    pre.preorder = true;
    assert_eq!(
        one(
            "a-wolt",
            &pre,
            &with_ready(cmd(Action::Accept), "2026-12-02T18:45:00Z")
        ),
        req("PUT", &p("confirm-preorder"), Auth::Bearer, None)
    );
    assert_eq!(
        one(
            "a-wolt",
            &c,
            &with_reason(cmd(Action::Reject), ReasonCode::StoreClosed, None)
        ),
        req(
            "PUT",
            &p("reject"),
            Auth::Bearer,
            Some(json!({"reason": "The restaurant is closed", "code": "VENUE_CLOSING_SOON"}))
        )
    );
    assert_eq!(
        one("a-wolt", &c, &cmd(Action::Ready)),
        req("PUT", &p("ready"), Auth::Bearer, None)
    );
    assert_eq!(
        one("a-wolt", &c, &cmd(Action::Delivered)),
        req("PUT", &p("delivered"), Auth::Bearer, None)
    );
}

#[test]
fn talabat_calls() {
    let c = ctx(Provider::Talabat);
    let status = "https://cb.talabat.com/v2/order/status/tok";
    assert_eq!(
        one("a-talabat", &c, &cmd(Action::Accept)),
        req(
            "POST",
            status,
            Auth::Bearer,
            Some(
                json!({"status": "order_accepted", "acceptanceTime": NOW, "remoteOrderId": "wh-1"})
            )
        )
    );
    assert_eq!(
        one(
            "a-talabat",
            &c,
            &with_ready(cmd(Action::Accept), "2026-12-02T18:25:00Z")
        )
        .3,
        Some(
            json!({"status": "order_accepted", "acceptanceTime": "2026-12-02T18:25:00Z", "remoteOrderId": "wh-1"})
        )
    );
    assert_eq!(
        one(
            "a-talabat",
            &c,
            &with_reason(cmd(Action::Reject), ReasonCode::Address, None)
        ),
        req(
            "POST",
            status,
            Auth::Bearer,
            Some(
                json!({"status": "order_rejected", "reason": "ADDRESS_INCOMPLETE_MISSTATED", "message": "The address cannot be served"})
            )
        )
    );
    assert_eq!(
        one("a-talabat", &c, &cmd(Action::Ready)),
        req(
            "POST",
            "https://cb.talabat.com/v2/orders/tok/preparation-completed",
            Auth::Bearer,
            None
        )
    );
    assert_eq!(
        one("a-talabat", &c, &cmd(Action::PickedUp)),
        req(
            "POST",
            status,
            Auth::Bearer,
            Some(json!({"status": "order_picked_up"}))
        )
    );
    let mut none = c.clone();
    none.callbacks.clear();
    let hub = hub();
    let a = hub.account(Provider::Talabat, "a-talabat").unwrap();
    assert_eq!(
        plan(a, &none, &cmd(Action::Accept), t(NOW)),
        Err(PlanError::CallbackMissing("orderAcceptedUrl"))
    );
}

#[test]
fn deliveroo_calls() {
    let c = ctx(Provider::Deliveroo);
    let order = format!("/order/v1/orders/{ID}");
    let sub = |s: &str| format!("{order}/{s}");
    assert_eq!(
        calls("a-deliveroo", &c, &cmd(Action::Accept)),
        vec![
            req(
                "POST",
                &sub("sync_status"),
                Auth::Bearer,
                Some(json!({"status": "succeeded", "occurred_at": NOW}))
            ),
            req(
                "PATCH",
                &order,
                Auth::Bearer,
                Some(json!({"status": "accepted"}))
            ),
        ]
    );
    assert_eq!(
        calls(
            "a-deliveroo",
            &c,
            &with_reason(
                cmd(Action::Reject),
                ReasonCode::ItemsUnavailable,
                Some("No naan")
            )
        ),
        vec![
            req(
                "POST",
                &sub("sync_status"),
                Auth::Bearer,
                Some(
                    json!({"status": "failed", "reason": "items_out_of_stock", "notes": "No naan", "occurred_at": NOW})
                )
            ),
            req(
                "PATCH",
                &order,
                Auth::Bearer,
                Some(
                    json!({"status": "rejected", "reject_reason": "ingredient_unavailable", "notes": "No naan"})
                )
            ),
        ]
    );
    assert_eq!(
        one("a-deliveroo", &c, &cmd(Action::Ready)),
        req(
            "POST",
            &sub("prep_stage"),
            Auth::Bearer,
            Some(json!({"stage": "ready_for_collection", "occurred_at": NOW}))
        )
    );
    assert_eq!(
        one("a-deliveroo", &c, &cmd(Action::PickedUp)).3,
        Some(json!({"stage": "collected", "occurred_at": NOW}))
    );
    assert_eq!(
        one(
            "a-deliveroo",
            &c,
            &with_ready(cmd(Action::Delay), "2026-12-02T18:05:01Z")
        )
        .3,
        Some(json!({"stage": "in_kitchen", "delay": 6, "occurred_at": NOW}))
    );
}

#[test]
fn just_eat_calls() {
    let c = ctx(Provider::Justeat);
    assert_eq!(
        one("a-justeat", &c, &cmd(Action::Accept)),
        req(
            "POST",
            &format!("/order/{ID}/sent-to-pos-success"),
            Auth::FlytKey,
            Some(json!({"happenedAt": NOW}))
        )
    );
    assert_eq!(
        one(
            "a-justeat",
            &c,
            &with_reason(cmd(Action::Reject), ReasonCode::TooBusy, None)
        ),
        req(
            "POST",
            &format!("/order/{ID}/sent-to-pos-failed"),
            Auth::FlytKey,
            Some(
                json!({"happenedAt": NOW, "errorCode": "INACTIVE", "errorMessage": "The restaurant is too busy"})
            )
        )
    );
    let p = |s: &str| format!("/orders/{ID}/{s}");
    let partner = "a-justeat-partner";
    assert_eq!(
        one(partner, &c, &cmd(Action::Accept)),
        req(
            "PUT",
            &p("accept"),
            Auth::JeApiKey,
            Some(json!({"TimeAcceptedFor": NOW}))
        )
    );
    assert_eq!(
        one(
            partner,
            &c,
            &with_reason(cmd(Action::Reject), ReasonCode::Other, None)
        ),
        req(
            "PUT",
            &p("reject"),
            Auth::JeApiKey,
            Some(json!({"Message": "The restaurant cannot take this order"}))
        )
    );
    assert_eq!(
        one(partner, &c, &cmd(Action::Ready)),
        req("POST", &p("readyforcollection"), Auth::JeApiKey, None)
    );
    assert_eq!(
        one(partner, &c, &cmd(Action::PickedUp)),
        req("POST", &p("dispatchedtocustomer"), Auth::JeApiKey, None)
    );
    assert_eq!(
        one(partner, &c, &cmd(Action::Delivered)),
        req("POST", &p("complete"), Auth::JeApiKey, None)
    );
    assert_eq!(
        one(
            partner,
            &c,
            &with_ready(cmd(Action::Delay), "2026-12-02T18:40:00Z")
        ),
        req(
            "PUT",
            &p("duedate"),
            Auth::JeApiKey,
            Some(json!({"DueDate": "2026-12-02T18:40:00Z"}))
        )
    );
}

#[test]
fn direct_posts_the_command() {
    let c = ctx(Provider::Direct);
    for action in Action::ALL {
        assert_eq!(
            one("a-direct", &c, &cmd(*action)),
            req(
                "POST",
                "status_url",
                Auth::StandardWebhooks,
                Some(json!("command"))
            )
        );
    }
}

fn with_store(provider: Provider, store: &str) -> OrderContext {
    let mut c = ctx(provider);
    c.store_id = Some(store.into());
    c
}

fn plan_err(account: &str, ctx: &OrderContext, cmd: &StatusCommand) -> PlanError {
    let hub = hub();
    let a = hub.accounts.iter().find(|a| a.id == account).unwrap();
    plan(a, ctx, cmd, t(NOW)).unwrap_err()
}

/// A planned call as it goes on the wire: method, URL, headers (sorted,
/// as sent) and body text.
fn wired(
    account: &str,
    ctx: &OrderContext,
    cmd: &StatusCommand,
    token: Option<&str>,
) -> (String, String, Vec<(String, String)>, Option<String>) {
    let hub = hub();
    let a = hub.accounts.iter().find(|a| a.id == account).unwrap();
    let planned = plan(a, ctx, cmd, t(NOW)).unwrap();
    assert_eq!(planned.len(), 1);
    let call = &planned[0];
    let Target::Api(segments) = &call.target else {
        panic!("{call:?}")
    };
    let url = api_url(&a.api.as_ref().unwrap().base_url, segments);
    let w = wire(a, call, url, token, &Bytes::from_static(b"{}"), t(NOW)).unwrap();
    let mut headers: Vec<(String, String)> = w
        .headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().to_owned()))
        .collect();
    headers.sort();
    (
        w.method.to_string(),
        w.url.to_string(),
        headers,
        w.body.map(|b| String::from_utf8(b.to_vec()).unwrap()),
    )
}

fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    v.sort();
    v
}

#[test]
fn doordash_calls() {
    let c = ctx(Provider::Doordash);
    let p = |s: &str| format!("/api/v1/orders/{ID}{s}");
    let dd = "a-doordash";
    assert_eq!(
        one(dd, &c, &cmd(Action::Accept)),
        req(
            "PATCH",
            &p(""),
            Auth::DoordashJwt,
            Some(json!({"merchant_supplied_id": "wh-1", "order_status": "success"}))
        )
    );
    assert_eq!(
        one(
            dd,
            &c,
            &with_ready(cmd(Action::Accept), "2026-12-02T22:20:00+04:00")
        )
        .3,
        Some(json!({
            "merchant_supplied_id": "wh-1",
            "order_status": "success",
            "prep_time": "2026-12-02T18:20:00Z",
        }))
    );
    assert_eq!(
        one(
            dd,
            &c,
            &with_reason(
                cmd(Action::Reject),
                ReasonCode::ItemsUnavailable,
                Some("No falafel")
            )
        ),
        req(
            "PATCH",
            &p(""),
            Auth::DoordashJwt,
            Some(json!({
                "merchant_supplied_id": "wh-1",
                "order_status": "fail",
                "failure_reason": "No falafel",
            }))
        )
    );
    assert_eq!(
        one(dd, &c, &cmd(Action::Ready)),
        req(
            "PATCH",
            &p("/events/order_ready_for_pickup"),
            Auth::DoordashJwt,
            Some(json!({"merchant_supplied_id": "wh-1"}))
        )
    );
    for (code, reason) in [
        (ReasonCode::ItemsUnavailable, "ITEM_OUT_OF_STOCK"),
        (ReasonCode::StoreClosed, "STORE_CLOSED"),
        (ReasonCode::TooBusy, "KITCHEN_BUSY"),
        (ReasonCode::Address, "OTHER"),
        (ReasonCode::Other, "OTHER"),
    ] {
        let (m, path, auth, body) = one(dd, &c, &with_reason(cmd(Action::Cancel), code, Some("x")));
        assert_eq!(
            (m.as_str(), path, auth, body),
            (
                "PATCH",
                p("/cancellation"),
                Auth::DoordashJwt,
                Some(json!({"cancel_reason": reason, "cancel_details": "x"}))
            )
        );
    }
    let mut sd = c.clone();
    sd.self_delivery = true;
    assert_eq!(
        one(dd, &sd, &cmd(Action::PickedUp)).1,
        p("/events/order_picked_up")
    );
    assert_eq!(
        one(dd, &sd, &cmd(Action::Delivered)),
        req(
            "PATCH",
            &p("/events/order_delivered"),
            Auth::DoordashJwt,
            Some(json!({"merchant_supplied_id": "wh-1"}))
        )
    );
    for action in [Action::PickedUp, Action::Delivered, Action::Delay] {
        assert_eq!(
            plan_err(dd, &c, &cmd(action)),
            PlanError::Unsupported {
                provider: Provider::Doordash,
                action
            }
        );
    }
}

#[test]
fn a_doordash_call_carries_a_jwt_signed_for_it() {
    use shared::tokens::doordash;
    let (method, url, sent, body) = wired(
        "a-doordash",
        &ctx(Provider::Doordash),
        &cmd(Action::Accept),
        None,
    );
    assert_eq!(method, "PATCH");
    assert_eq!(
        url,
        format!("https://openapi.doordash.com/marketplace/api/v1/orders/{ID}")
    );
    let iat = t(NOW).unix_timestamp();
    let jwt = doordash::sign(
        &doordash::Claims {
            aud: "doordash".into(),
            iss: "dev-1".into(),
            kid: "key-1".into(),
            exp: iat + 300,
            iat,
        },
        b"secret?>",
    );
    assert_eq!(
        sent,
        headers(&[
            ("accept", "application/json"),
            ("auth-version", "v2"),
            ("authorization", &format!("Bearer {jwt}")),
            ("content-type", "application/json"),
        ])
    );
    assert_eq!(
        body.as_deref(),
        Some(r#"{"merchant_supplied_id":"wh-1","order_status":"success"}"#)
    );
    // The header DoorDash requires, verified with the decoded secret.
    let claims = doordash::verify(&jwt, b"secret?>", iat, Duration::ZERO).unwrap();
    assert_eq!(
        (claims.iss.as_str(), claims.kid.as_str()),
        ("dev-1", "key-1")
    );
}

#[test]
fn glovo_legacy_calls() {
    let g = "a-glovo";
    let c = with_store(Provider::Glovo, "store 7");
    let path = format!("/webhook/stores/store%207/orders/{ID}/status");
    let status = |s: &str| req("PUT", &path, Auth::GlovoToken, Some(json!({ "status": s })));
    assert_eq!(one(g, &c, &cmd(Action::Accept)), status("ACCEPTED"));
    assert_eq!(one(g, &c, &cmd(Action::Ready)), status("READY_FOR_PICKUP"));
    let mut pickup = c.clone();
    pickup.pickup = true;
    assert_eq!(
        one(g, &pickup, &cmd(Action::PickedUp)),
        status("PICKED_UP_BY_CUSTOMER")
    );
    let mut own = c.clone();
    own.self_delivery = true;
    assert_eq!(
        one(g, &own, &cmd(Action::PickedUp)),
        status("OUT_FOR_DELIVERY")
    );
    // Glovo's couriers pick it up: no "picked up" from the restaurant;
    // "ready for pickup" only for them.
    for (ctx, action) in [
        (&c, Action::PickedUp),
        (&pickup, Action::Ready),
        (&own, Action::Ready),
        (&c, Action::Reject),
        (&c, Action::Cancel),
        (&c, Action::Delay),
        (&c, Action::Delivered),
    ] {
        assert_eq!(
            plan_err(g, ctx, &cmd(action)),
            PlanError::Unsupported {
                provider: Provider::Glovo,
                action
            }
        );
    }
    let none = ctx(Provider::Glovo);
    let e = plan_err(g, &none, &cmd(Action::Accept));
    assert_eq!(
        e,
        PlanError::NoStoreId {
            provider: Provider::Glovo,
            action: Action::Accept
        }
    );
    assert_eq!(e.class(), FailureClass::InvalidPayload);
    // The partner token, raw, in Authorization.
    let (_, url, sent, body) = wired(g, &c, &cmd(Action::Accept), None);
    assert_eq!(url, format!("https://api.glovoapp.com{path}"));
    assert_eq!(
        sent,
        headers(&[
            ("accept", "application/json"),
            ("authorization", "glovo-partner-token"),
            ("content-type", "application/json"),
        ])
    );
    assert_eq!(body.as_deref(), Some(r#"{"status":"ACCEPTED"}"#));
}

#[test]
fn glovo_integrations_calls() {
    let g = "a-glovo-integrations";
    let c = with_store(Provider::Glovo, "store-7");
    let p = |s: &str| format!("/api/v0/integrations/orders/{ID}/{s}");
    let accept = |ready: Option<&str>| {
        let mut command = cmd(Action::Accept);
        command.ready_at = ready.map(t);
        one(g, &c, &command)
    };
    assert_eq!(
        accept(None),
        req(
            "PUT",
            &p("accept"),
            Auth::GlovoToken,
            Some(json!({"committedPreparationTime": "2026-12-02T18:10:00Z"}))
        )
    );
    // The backend's time, within [now, now + 10 min].
    for (ready, committed) in [
        ("2026-12-02T18:05:00Z", "2026-12-02T18:05:00Z"),
        ("2026-12-02T18:45:00Z", "2026-12-02T18:10:00Z"),
        ("2026-12-02T17:50:00Z", NOW),
    ] {
        assert_eq!(
            accept(Some(ready)).3,
            Some(json!({ "committedPreparationTime": committed })),
            "{ready}"
        );
    }
    assert_eq!(
        one(g, &c, &cmd(Action::Ready)),
        req("PUT", &p("ready_for_pickup"), Auth::GlovoToken, None)
    );
    let mut pickup = c.clone();
    pickup.pickup = true;
    assert_eq!(
        one(g, &pickup, &cmd(Action::PickedUp)).1,
        p("customer_picked_up")
    );
    let mut own = c.clone();
    own.self_delivery = true;
    assert_eq!(
        one(g, &own, &cmd(Action::PickedUp)).1,
        p("out_for_delivery")
    );
    // The store travels in Glovo's header.
    let (method, url, sent, body) = wired(g, &c, &cmd(Action::Ready), None);
    assert_eq!(
        (method.as_str(), url),
        (
            "PUT",
            format!("https://api.glovoapp.com{}", p("ready_for_pickup"))
        )
    );
    assert_eq!(
        sent,
        headers(&[
            ("accept", "application/json"),
            ("authorization", "glovo-partner-token"),
            ("glovo-store-address-external-id", "store-7"),
        ])
    );
    assert_eq!(body, None);
    assert_eq!(
        plan_err(g, &ctx(Provider::Glovo), &cmd(Action::Ready)),
        PlanError::NoStoreId {
            provider: Provider::Glovo,
            action: Action::Ready
        }
    );
}

#[test]
fn grab_calls() {
    let g = "a-grab";
    let c = with_store(Provider::Grab, "1-CYNGRUNGSBCCC");
    assert_eq!(
        one(g, &c, &cmd(Action::Accept)),
        req(
            "POST",
            "/partner/v1/order/prepare",
            Auth::Bearer,
            Some(json!({"orderID": "o/1 x", "toState": "Accepted"}))
        )
    );
    assert_eq!(
        one(
            g,
            &c,
            &with_reason(cmd(Action::Reject), ReasonCode::TooBusy, None)
        )
        .3,
        Some(json!({"orderID": "o/1 x", "toState": "Rejected"}))
    );
    assert_eq!(
        one(g, &c, &cmd(Action::Ready)),
        req(
            "POST",
            "/partner/v1/orders/mark",
            Auth::Bearer,
            Some(json!({"orderID": "o/1 x", "markStatus": 1}))
        )
    );
    assert_eq!(
        one(
            g,
            &c,
            &with_ready(cmd(Action::Delay), "2026-12-02T18:40:00Z")
        ),
        req(
            "PUT",
            "/partner/v1/order/readytime",
            Auth::Bearer,
            Some(json!({"orderID": "o/1 x", "newOrderReadyTime": "2026-12-02T18:40:00Z"}))
        )
    );
    for (code, cancel_code) in [
        (ReasonCode::ItemsUnavailable, 1001),
        (ReasonCode::TooBusy, 1002),
        (ReasonCode::StoreClosed, 1003),
        (ReasonCode::Other, 1002),
        (ReasonCode::Address, 1002),
    ] {
        assert_eq!(
            one(g, &c, &with_reason(cmd(Action::Cancel), code, None)),
            req(
                "PUT",
                "/partner/v1/order/cancel",
                Auth::Bearer,
                Some(json!({
                    "orderID": "o/1 x",
                    "merchantID": "1-CYNGRUNGSBCCC",
                    "cancelCode": cancel_code,
                }))
            )
        );
    }
    assert_eq!(
        plan_err(g, &ctx(Provider::Grab), &cmd(Action::Cancel)),
        PlanError::NoStoreId {
            provider: Provider::Grab,
            action: Action::Cancel
        }
    );
    assert_eq!(
        plan_err(g, &c, &cmd(Action::Delay)),
        PlanError::Missing {
            action: Action::Delay,
            field: "ready_at"
        }
    );
    let (method, url, sent, body) = wired(g, &c, &cmd(Action::Ready), Some("grab-at-1"));
    assert_eq!(
        (method.as_str(), url.as_str()),
        (
            "POST",
            "https://partner-api.grab.com/grabfood/partner/v1/orders/mark"
        )
    );
    assert_eq!(
        sent,
        headers(&[
            ("accept", "application/json"),
            ("authorization", "Bearer grab-at-1"),
            ("content-type", "application/json"),
        ])
    );
    assert_eq!(
        body.as_deref(),
        Some(r#"{"markStatus":1,"orderID":"o/1 x"}"#)
    );
}

const KEETA_ORDER: &str = "1234567890123456789";

#[test]
fn keeta_calls() {
    let k = "a-keeta";
    let mut c = with_store(Provider::Keeta, "98765");
    c.provider_order_id = KEETA_ORDER.into();
    let command = |action| {
        let mut m = cmd(action);
        m.provider_order_id = KEETA_ORDER.into();
        m
    };
    let ids = json!({"orderViewId": 1_234_567_890_123_456_789_i64, "shopId": 98765});
    let with_ids = |extra: Value| {
        let mut b = ids.clone();
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        Some(b)
    };
    let post = |last: &str, body| req("POST", &format!("/order/{last}"), Auth::KeetaSigned, body);
    assert_eq!(
        one(k, &c, &command(Action::Accept)),
        post("confirm", with_ids(json!({})))
    );
    assert_eq!(
        one(k, &c, &command(Action::Ready)),
        post("prepare", with_ids(json!({})))
    );
    for (action, code, reason) in [
        (Action::Reject, ReasonCode::ItemsUnavailable, 500_001),
        (Action::Cancel, ReasonCode::StoreClosed, 500_002),
        (Action::Reject, ReasonCode::TooBusy, 500_003),
    ] {
        assert_eq!(
            one(k, &c, &with_reason(command(action), code, Some("ignored"))),
            post("cancel", with_ids(json!({ "cancelCode": reason })))
        );
    }
    for code in [ReasonCode::Other, ReasonCode::Address] {
        assert_eq!(
            one(
                k,
                &c,
                &with_reason(command(Action::Cancel), code, Some("Sorry"))
            ),
            post(
                "cancel",
                with_ids(json!({"cancelCode": 500_000, "cancelReason": "Sorry"}))
            )
        );
    }
    let mut sd = c.clone();
    sd.self_delivery = true;
    assert_eq!(
        one(k, &sd, &command(Action::PickedUp)),
        post("dispatched", with_ids(json!({})))
    );
    assert_eq!(
        one(k, &sd, &command(Action::Delivered)),
        post("delivered", with_ids(json!({})))
    );
    assert_eq!(
        plan_err(k, &c, &command(Action::PickedUp)),
        PlanError::Unsupported {
            provider: Provider::Keeta,
            action: Action::PickedUp
        }
    );
    // orderViewId and shopId are Keeta's int64s.
    assert_eq!(
        plan_err(
            k,
            &with_store(Provider::Keeta, "98765"),
            &cmd(Action::Accept)
        ),
        PlanError::NotAnInteger {
            provider: Provider::Keeta,
            field: "orderViewId"
        }
    );
    let mut odd_shop = c.clone();
    odd_shop.store_id = Some("shop-1".into());
    assert_eq!(
        plan_err(k, &odd_shop, &command(Action::Accept)),
        PlanError::NotAnInteger {
            provider: Provider::Keeta,
            field: "shopId"
        }
    );
    let mut no_shop = c.clone();
    no_shop.store_id = None;
    assert_eq!(
        plan_err(k, &no_shop, &command(Action::Accept)).class(),
        FailureClass::InvalidPayload
    );
}

#[test]
fn a_keeta_call_is_signed_over_its_url_and_every_parameter() {
    let mut c = with_store(Provider::Keeta, "98765");
    c.provider_order_id = KEETA_ORDER.into();
    let mut m = cmd(Action::Accept);
    m.provider_order_id = KEETA_ORDER.into();
    let (method, url, sent, body) = wired("a-keeta", &c, &m, None);
    assert_eq!(
        (method.as_str(), url.as_str()),
        ("POST", "https://open.mykeeta.com/api/open/order/confirm")
    );
    assert_eq!(
        sent,
        headers(&[
            ("accept", "application/json"),
            ("content-type", "application/json")
        ])
    );
    // sha256 of url?accessToken=tok&appId=3084446411&orderViewId=...
    // &shopId=98765&timestamp=1796234400 + "SEKRET", computed outside
    // this code (Python's hashlib); the order id's 19 digits exact.
    assert_eq!(
        body.as_deref(),
        Some(concat!(
            r#"{"accessToken":"tok","appId":3084446411,"orderViewId":1234567890123456789,"#,
            r#""shopId":98765,"#,
            r#""sig":"1ebd490fbdc73894100baddc507ab0cede667f56be2230f2c148c7c3c5b3baeb","#,
            r#""timestamp":1796234400}"#
        ))
    );
    let mut cancel = with_reason(
        cmd(Action::Cancel),
        ReasonCode::Other,
        Some("Sorry, no driver"),
    );
    cancel.provider_order_id = KEETA_ORDER.into();
    let (_, url, _, body) = wired("a-keeta", &c, &cancel, None);
    assert_eq!(url, "https://open.mykeeta.com/api/open/order/cancel");
    let body: Value = serde_json::from_str(&body.unwrap()).unwrap();
    assert_eq!(
        body["sig"],
        "8261b930073d29ba804d275d86f31691d8f725fc324c96c3fa26dfb24c3bfa16"
    );
}

/// The ingress answers 422 where `supports` says no; the worker must
/// build a call exactly where it says yes, for every context.
#[test]
fn a_call_is_planned_iff_the_provider_supports_the_action() {
    let hub = hub();
    let mut checked = 0;
    const CONTEXTS: [(bool, bool, bool); 4] = [
        (false, false, false),
        (true, false, false),
        (false, true, false),
        (false, false, true),
    ];
    for account in &hub.accounts {
        for api in [None, Some("v1"), Some("v2")] {
            for (self_delivery, preorder, pickup) in CONTEXTS {
                // Ids every provider takes (Keeta's are integers).
                let mut c = with_store(account.provider, "98765");
                c.provider_order_id = KEETA_ORDER.into();
                c.api = api.map(str::to_owned);
                c.self_delivery = self_delivery;
                c.preorder = preorder;
                c.pickup = pickup;
                for action in Action::ALL {
                    let mut command = with_ready(
                        with_reason(cmd(*action), ReasonCode::Other, None),
                        "2026-12-02T18:30:00Z",
                    );
                    command.provider_order_id = KEETA_ORDER.into();
                    let planned = plan(account, &c, &command, t(NOW));
                    let supported = shared::answer::supports(account, &c, *action);
                    assert_eq!(
                        planned.is_ok(),
                        supported,
                        "{} {api:?} {action}: {planned:?}",
                        account.id
                    );
                    if let Err(e) = planned {
                        assert_eq!(e.class(), FailureClass::UnsupportedAction);
                    }
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(
        checked,
        hub.accounts.len() * 3 * CONTEXTS.len() * Action::ALL.len()
    );
    // The four providers of issue 15 are among them.
    for p in [
        Provider::Doordash,
        Provider::Glovo,
        Provider::Grab,
        Provider::Keeta,
    ] {
        assert!(hub.accounts.iter().any(|a| a.provider == p), "{p}");
    }
}

#[test]
fn answers_are_classified() {
    let v = |done_on, status, body: &str| {
        classify(
            done_on,
            status,
            body.as_bytes(),
            None,
            "wolt PUT /orders/x/accept",
        )
    };
    assert_eq!(v(DoneOn::Conflict, 202, ""), Verdict::Done);
    assert_eq!(v(DoneOn::Conflict, 204, ""), Verdict::Done);
    assert_eq!(
        v(
            DoneOn::Conflict,
            409,
            r#"{"code":"resource_status_conflict"}"#
        ),
        Verdict::AlreadyDone
    );
    assert_eq!(v(DoneOn::ConflictOrNotFound, 404, ""), Verdict::AlreadyDone);
    assert_eq!(v(DoneOn::Conflict, 401, ""), Verdict::Unauthorized);
    let class = |verdict: Verdict| match verdict {
        Verdict::Failed(f) => (f.class, f.message, f.retry_after),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        class(v(DoneOn::Conflict, 404, "")),
        (
            FailureClass::ProviderRejected,
            "wolt PUT /orders/x/accept answered 404".into(),
            None
        )
    );
    assert_eq!(
        class(v(DoneOn::Conflict, 403, "")).0,
        FailureClass::ProviderForbidden
    );
    assert_eq!(
        class(v(DoneOn::Conflict, 400, "bad\nbody")).1,
        "wolt PUT /orders/x/accept answered 400: bad body"
    );
    assert_eq!(
        class(v(DoneOn::Conflict, 301, "")).0,
        FailureClass::ProviderRejected
    );
    assert_eq!(
        class(v(DoneOn::Conflict, 408, "")).0,
        FailureClass::Provider5xx
    );
    assert_eq!(
        class(v(DoneOn::Conflict, 503, "")).0,
        FailureClass::Provider5xx
    );
    let limited = classify(
        DoneOn::Conflict,
        429,
        b"",
        Some(Duration::from_secs(7)),
        "x",
    );
    assert_eq!(
        class(limited),
        (
            FailureClass::Provider429,
            "x answered 429".into(),
            Some(Duration::from_secs(7))
        )
    );
    // Talabat: a transient state is "not yet", any other 409 "already".
    for state in ["ASSIGNED_TO_TRANSPORT", "WAITING_FOR_ACKNOWLEDGEMENT"] {
        let body = format!(r#"{{"currentState":"{state}"}}"#);
        let f = class(v(DoneOn::TalabatConflict, 409, &body));
        assert_eq!(f.0, FailureClass::ProviderBusy);
        assert!(!f.0.is_permanent());
    }
    assert_eq!(
        v(
            DoneOn::TalabatConflict,
            409,
            r#"{"currentState":"ACCEPTED"}"#
        ),
        Verdict::AlreadyDone
    );
    assert_eq!(
        v(DoneOn::TalabatConflict, 409, "not json"),
        Verdict::AlreadyDone
    );
    assert_eq!(v(DoneOn::TalabatConflict, 404, ""), class_rejected());
}

fn class_rejected() -> Verdict {
    Verdict::Failed(Failure::new(
        FailureClass::ProviderRejected,
        "wolt PUT /orders/x/accept answered 404",
    ))
}

#[test]
fn callbacks_go_only_to_the_account_hosts() {
    let base = url::Url::parse("https://middleware.talabat.com").unwrap();
    let hosts = vec!["cb.talabat.com".to_owned()];
    let check = |u: &str| {
        callback_allowed(&url::Url::parse(u).unwrap(), &base, &hosts, |u| {
            u.host_str() == Some("127.0.0.1")
        })
    };
    assert_eq!(
        check("https://middleware.talabat.com/v2/order/status/t"),
        Ok(())
    );
    assert_eq!(check("https://CB.talabat.com/x"), Ok(()));
    assert!(
        check("https://evil.example/x")
            .unwrap_err()
            .contains("evil.example")
    );
    assert!(check("https://talabat.com.evil.example/x").is_err());
    assert!(
        check("http://cb.talabat.com/x")
            .unwrap_err()
            .contains("http")
    );
    assert!(
        check("https://u:p@cb.talabat.com/x")
            .unwrap_err()
            .contains("credentials")
    );
    let local_base = url::Url::parse("http://127.0.0.1:4000").unwrap();
    assert_eq!(
        callback_allowed(
            &url::Url::parse("http://127.0.0.1:4000/v2/x").unwrap(),
            &local_base,
            &[],
            |u| { u.host_str() == Some("127.0.0.1") }
        ),
        Ok(())
    );
    // Another port of an allowed host is another service.
    for other_port in [
        "https://middleware.talabat.com:8443/v2/order/status/t",
        "https://cb.talabat.com:444/x",
    ] {
        assert!(
            check(other_port).unwrap_err().contains("port"),
            "{other_port}"
        );
    }
    assert_eq!(check("https://cb.talabat.com:443/x"), Ok(()));
    assert!(
        callback_allowed(
            &url::Url::parse("http://127.0.0.1:4001/v2/x").unwrap(),
            &local_base,
            &[],
            |u| { u.host_str() == Some("127.0.0.1") }
        )
        .is_err()
    );
}

#[test]
fn deadlines_and_delays() {
    let window = Duration::from_secs(3600);
    let ctx_by = Some(t("2026-12-02T18:10:00Z"));
    assert_eq!(
        deadline(&cmd(Action::Accept), ctx_by, window),
        t("2026-12-02T18:10:00Z")
    );
    assert_eq!(
        deadline(&cmd(Action::Reject), ctx_by, window),
        t("2026-12-02T18:10:00Z")
    );
    for later in [
        Action::Ready,
        Action::PickedUp,
        Action::Delivered,
        Action::Cancel,
        Action::Delay,
    ] {
        assert_eq!(
            deadline(&cmd(later), ctx_by, window),
            t("2026-12-02T18:59:30Z")
        );
    }
    let now = t(NOW);
    let at = |s: &str| deliveroo_delay(now, t(s));
    assert_eq!(at("2026-12-02T17:50:00Z"), 0);
    assert_eq!(at("2026-12-02T18:00:00Z"), 0);
    assert_eq!(at("2026-12-02T18:00:01Z"), 2);
    assert_eq!(at("2026-12-02T18:02:00Z"), 2);
    assert_eq!(at("2026-12-02T18:02:01Z"), 4);
    assert_eq!(at("2026-12-02T18:05:00Z"), 6);
    assert_eq!(at("2026-12-02T18:10:00Z"), 10);
    assert_eq!(at("2026-12-02T19:00:00Z"), 10);
    assert_eq!(rfc3339(t("2026-12-02T22:00:00.5+04:00")), NOW);
}

#[test]
fn doordash_grab_and_keeta_already_done_answers() {
    let v = |done_on, status, body: &str| classify(done_on, status, body.as_bytes(), None, "x");
    let failed = |verdict: Verdict| match verdict {
        Verdict::Failed(f) => (f.class, f.message),
        other => panic!("{other:?}"),
    };
    // DoorDash: its documented 400 is already done, any other a refusal.
    assert_eq!(
        v(
            DoneOn::DoordashProcessed,
            400,
            r#"{"code":"validation_error","message":"Order already processed or expired"}"#
        ),
        Verdict::AlreadyDone
    );
    assert_eq!(v(DoneOn::DoordashProcessed, 409, ""), Verdict::AlreadyDone);
    assert_eq!(v(DoneOn::DoordashProcessed, 202, ""), Verdict::Done);
    assert_eq!(
        failed(v(
            DoneOn::DoordashProcessed,
            400,
            r#"{"message":"prep_time is invalid"}"#
        )),
        (
            FailureClass::ProviderRejected,
            r#"x answered 400: {"message":"prep_time is invalid"}"#.into()
        )
    );
    // Grab: a 400 about the order's state, or a 409 (cancel).
    for body in [
        r#"{"message":"order already marked ready"}"#,
        r#"{"message":"Invalid order state"}"#,
    ] {
        assert_eq!(
            v(DoneOn::GrabState, 400, body),
            Verdict::AlreadyDone,
            "{body}"
        );
    }
    assert_eq!(v(DoneOn::GrabState, 409, ""), Verdict::AlreadyDone);
    assert_eq!(
        failed(v(
            DoneOn::GrabState,
            400,
            r#"{"message":"merchantID is required"}"#
        ))
        .0,
        FailureClass::ProviderRejected
    );
    // Keeta: HTTP 200 always; the code says.
    let k = |body: &str| {
        classify(
            DoneOn::KeetaCode { already_done: true },
            200,
            body.as_bytes(),
            None,
            "keeta POST /order/confirm",
        )
    };
    assert_eq!(
        k(r#"{"code":0,"message":"success","data":null}"#),
        Verdict::Done
    );
    assert_eq!(
        k(r#"{"code":209000000,"message":"order status is not in a valid state for confirm"}"#),
        Verdict::AlreadyDone
    );
    assert_eq!(
        k(
            r#"{"code":209000000,"message":"The order was already accepted through a Keeta POS terminal"}"#
        ),
        Verdict::AlreadyDone
    );
    let f = failed(k(r#"{"code":109000000,"message":"shopId is null"}"#));
    assert_eq!(
        f,
        (
            FailureClass::ProviderRejected,
            "keeta POST /order/confirm answered code 109000000: shopId is null".into()
        )
    );
    assert!(f.0.is_permanent());
    assert_eq!(
        failed(k(r#"{"code":209000101,"message":"Order does not exist"}"#)).0,
        FailureClass::ProviderRejected
    );
    let f = failed(k(r#"{"code":309000000,"message":"System error"}"#));
    assert_eq!(f.0, FailureClass::Provider5xx);
    assert!(!f.0.is_permanent());
    assert_eq!(
        failed(k("<html>bad gateway</html>")),
        (
            FailureClass::Provider5xx,
            "keeta POST /order/confirm answered 200 without Keeta's {code, message}".into()
        )
    );
    // A non-2xx from Keeta's front reads like any other provider's.
    assert_eq!(
        classify(
            DoneOn::KeetaCode { already_done: true },
            401,
            b"",
            None,
            "x"
        ),
        Verdict::Unauthorized
    );
    assert_eq!(
        failed(classify(
            DoneOn::KeetaCode { already_done: true },
            502,
            b"",
            None,
            "x"
        ))
        .0,
        FailureClass::Provider5xx
    );
}

/// How the answer `status` with `body` to the call `account` plans for
/// `action` on `ctx` reads (one call).
fn answer_to(
    account: &str,
    ctx: &OrderContext,
    action: Action,
    status: u16,
    body: &str,
) -> Verdict {
    let hub = hub();
    let a = hub.accounts.iter().find(|a| a.id == account).unwrap();
    let mut c = cmd(action);
    c.provider_order_id = ctx.provider_order_id.clone();
    c.ready_at = Some(t("2026-12-02T18:20:00Z"));
    let planned = plan(a, ctx, &c, t(NOW)).unwrap();
    assert_eq!(planned.len(), 1, "{planned:?}");
    classify(planned[0].done_on, status, body.as_bytes(), None, "x")
}

#[test]
fn only_actions_that_repeat_safely_take_already_done_words() {
    let rejected = |v: Verdict| match v {
        Verdict::Failed(f) => (f.class, f.message),
        other => panic!("{other:?}"),
    };
    let mut self_delivery = with_store(Provider::Doordash, "1");
    self_delivery.self_delivery = true;
    // DoorDash: "already processed" to a confirm or an event is done; to a
    // `fail` or a cancellation (the tablet confirmed first) it is not.
    let processed = r#"{"code":"validation_error","message":"Order already processed or expired"}"#;
    for action in [
        Action::Accept,
        Action::Ready,
        Action::PickedUp,
        Action::Delivered,
    ] {
        assert_eq!(
            answer_to("a-doordash", &self_delivery, action, 400, processed),
            Verdict::AlreadyDone,
            "{action}"
        );
    }
    for action in [Action::Reject, Action::Cancel] {
        assert_eq!(
            rejected(answer_to(
                "a-doordash",
                &self_delivery,
                action,
                400,
                processed
            )),
            (
                FailureClass::ProviderRejected,
                format!("x answered 400: {processed}")
            ),
            "{action}"
        );
    }
    // Grab: its order-state 400 to a reject, a cancel or a delay is a
    // refusal too; a 409 stays done.
    let grab = with_store(Provider::Grab, "1-CYNGRUNGSBCCC");
    let state = r#"{"code":"invalid_state","message":"invalid order state"}"#;
    for action in [Action::Accept, Action::Ready] {
        assert_eq!(
            answer_to("a-grab", &grab, action, 400, state),
            Verdict::AlreadyDone,
            "{action}"
        );
    }
    for action in [Action::Reject, Action::Cancel, Action::Delay] {
        assert_eq!(
            rejected(answer_to("a-grab", &grab, action, 400, state)).0,
            FailureClass::ProviderRejected,
            "{action}"
        );
    }
    assert_eq!(
        answer_to("a-grab", &grab, Action::Cancel, 409, ""),
        Verdict::AlreadyDone
    );
    // Keeta: "already"/"not in a valid state" to a confirm is done; to a
    // cancel (of an order completed or cancelled already) it is not.
    let mut keeta = with_store(Provider::Keeta, "98765");
    keeta.provider_order_id = "123".into();
    keeta.self_delivery = true;
    let k = |action: Action, message: &str| {
        let body = json!({"code": 209_000_000, "message": message}).to_string();
        answer_to("a-keeta", &keeta, action, 200, &body)
    };
    for action in [
        Action::Accept,
        Action::Ready,
        Action::PickedUp,
        Action::Delivered,
    ] {
        assert_eq!(
            k(action, "order status is not in a valid state for this call"),
            Verdict::AlreadyDone,
            "{action}"
        );
    }
    for action in [Action::Reject, Action::Cancel] {
        for message in [
            "order status is not in a valid state for cancel",
            "The order is already cancelled",
        ] {
            assert_eq!(
                rejected(k(action, message)),
                (
                    FailureClass::ProviderRejected,
                    format!("x answered code 209000000: {message}")
                ),
                "{action}: {message}"
            );
        }
    }
}

#[test]
fn grab_state_words_are_phrases_never_field_names() {
    let v = |body: &str| classify(DoneOn::GrabState, 400, body.as_bytes(), None, "x");
    for body in [
        r#"{"code":"invalid_argument","message":"invalid toState value"}"#,
        r#"{"message":"markStatus must be 1 or 2"}"#,
        r#"{"message":"merchantID already exists"}"#,
    ] {
        match v(body) {
            Verdict::Failed(f) => {
                assert_eq!(f.class, FailureClass::ProviderRejected, "{body}");
                assert_eq!(f.message, format!("x answered 400: {body}"));
            }
            other => panic!("{body}: {other:?}"),
        }
    }
    assert_eq!(
        v(r#"{"message":"Order Already Marked Ready"}"#),
        Verdict::AlreadyDone
    );
}
