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
"#;

fn hub() -> HubConfig {
    HubConfig::from_toml(HUB, "test", &|_| Some("whsec_dGVzdA==".to_owned())).unwrap()
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

/// The ingress answers 422 where `supports` says no; the worker must
/// build a call exactly where it says yes, for every context.
#[test]
fn a_call_is_planned_iff_the_provider_supports_the_action() {
    let hub = hub();
    let mut checked = 0;
    for account in &hub.accounts {
        for api in [None, Some("v1"), Some("v2")] {
            for (self_delivery, preorder) in [(false, false), (true, false), (false, true)] {
                let mut c = ctx(account.provider);
                c.api = api.map(str::to_owned);
                c.self_delivery = self_delivery;
                c.preorder = preorder;
                for action in Action::ALL {
                    let command = with_ready(
                        with_reason(cmd(*action), ReasonCode::Other, None),
                        "2026-12-02T18:30:00Z",
                    );
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
    assert_eq!(checked, hub.accounts.len() * 3 * 3 * Action::ALL.len());
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
