//! The way back (issue 14) end to end, every stage a separate process
//! against a real nats-server, the test backend and the fake provider API:
//! orders go in signed at the ingress like a provider sends them, and the
//! test asserts what the provider hears back: the hub's accept when the
//! backend took a new order, its reject when the backend refused one, the
//! backend's own decision through the status API, a call still failing at
//! the deadline told to the backend, and a status worker SIGKILLed
//! mid-call absorbed by the provider's "already done". One stack serves
//! every case; each case has its own orders.

use std::time::{Duration, SystemTime};

use async_nats::jetstream;
use orderhub_tests::fake_provider::{
    Api, Decision, FakeProvider, FaultReply, Matcher, Platform, StatusCall,
};
use orderhub_tests::fixtures::Fixture;
use orderhub_tests::*;
use secrecy::SecretString;
use serde_json::{Value, json};
use shared::Provider;
use shared::failure::FailureClass;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Every secret of the config: the accounts' webhook secrets, the API
/// credentials the fake accepts, and the tenant's signing secret (a
/// Standard Webhooks key).
const SECRET: &str = "whsec_dGVzdA==";

fn hub_toml() -> String {
    r#"
[[tenant]]
id = "acme"
backend_url = "{{BACKEND_URL}}"
signing_secret_envs = ["S"]

[[account]]
id = "acme-talabat"
provider = "talabat"
tenant = "acme"
secret_envs = ["S"]
country = "KW"
[account.api]
base_url = "{{PROVIDER_URL}}"
token_url = "{{PROVIDER_URL}}/v2/login"
client_id_env = "S"
client_secret_env = "S"

# A backend that answers the provider itself.
[[account]]
id = "acme-talabat-manual"
provider = "talabat"
tenant = "acme"
secret_envs = ["S"]
country = "KW"
auto_accept = false
auto_reject = false
[account.api]
base_url = "{{PROVIDER_URL}}"
token_url = "{{PROVIDER_URL}}/v2/login"
client_id_env = "S"
client_secret_env = "S"

[[account]]
id = "acme-ubereats"
provider = "ubereats"
tenant = "acme"
secret_envs = ["S"]
[account.api]
base_url = "{{PROVIDER_URL}}"
token_url = "{{PROVIDER_URL}}/oauth/v2/token"
client_id_env = "S"
client_secret_env = "S"

[[account]]
id = "acme-wolt"
provider = "wolt"
tenant = "acme"
secret_envs = ["S"]
[account.api]
base_url = "{{PROVIDER_URL}}"
token_url = "{{PROVIDER_URL}}/oauth2/token"
client_id_env = "S"
client_secret_env = "S"
refresh_token_env = "S"

[retry]
schedule = ["200ms"]
max_deliver = 100

[forwarder]
allowed_private_destinations = ["127.0.0.0/8"]

# The default request_timeout (10 s) keeps a hanging provider call in
# flight while the status worker is killed.
[provider_api]
allowed_private_destinations = ["127.0.0.0/8"]

[status_sync]
schedule = ["500ms"]
max_deliver = 100
late_action_window = "1h"

[streams.consumers.status-sync]
ack_wait = "3s"
"#
    .to_owned()
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).expect("a time formats")
}

/// A new Talabat order with its own `code` (the provider order id) and
/// callback `token`, its callbacks at the fake, expiring at `expires`.
fn talabat_order(
    fake: &FakeProvider,
    account: &str,
    code: &str,
    token: &str,
    expires: OffsetDateTime,
) -> anyhow::Result<(String, Fixture)> {
    let path = workspace().join("tests/fixtures/talabat/order-created.json");
    let mut body: Value = serde_json::from_slice(&std::fs::read(path)?)?;
    body["code"] = code.into();
    body["token"] = token.into();
    body["expiryDate"] = rfc3339(expires).into();
    body["callbackUrls"] = fake.talabat_callback_urls(token);
    let fixture = Fixture {
        provider: Provider::Talabat,
        name: format!("talabat/{code}"),
        body: serde_json::to_vec(&body)?,
        path_headers: [(
            "Orderhub-Path-Remoteid".to_owned(),
            "kw-salmiya-01".to_owned(),
        )]
        .into(),
        expected: Value::Null,
    };
    Ok((account.to_owned(), fixture))
}

/// A new Uber Eats order `id`: the order at the fake, and its
/// notification.
fn uber_order(fake: &FakeProvider, id: &str) -> anyhow::Result<(String, Fixture)> {
    let dir = workspace().join("tests/fixtures/ubereats");
    let mut order: Value =
        serde_json::from_slice(&std::fs::read(dir.join("fetched/v2-order-created.json"))?)?;
    order["id"] = id.into();
    fake.put_order(Platform::Ubereats, Api::V2, id, serde_json::to_vec(&order)?);
    let mut note: Value =
        serde_json::from_slice(&std::fs::read(dir.join("v2-order-created.json"))?)?;
    note["event_id"] = format!("event-{id}").into();
    note["meta"]["resource_id"] = id.into();
    note["resource_href"] = format!("https://api.uber.com/v2/eats/order/{id}").into();
    let fixture = Fixture {
        provider: Provider::Ubereats,
        name: format!("ubereats/{id}"),
        body: serde_json::to_vec(&note)?,
        path_headers: Default::default(),
        expected: Value::Null,
    };
    Ok(("acme-ubereats".to_owned(), fixture))
}

/// A new Wolt order `id`: the order at the fake, and its notification.
fn wolt_order(fake: &FakeProvider, id: &str) -> anyhow::Result<(String, Fixture)> {
    let dir = workspace().join("tests/fixtures/wolt");
    let mut order: Value =
        serde_json::from_slice(&std::fs::read(dir.join("fetched/v2-order-created.json"))?)?;
    order["id"] = id.into();
    fake.put_order(Platform::Wolt, Api::V2, id, serde_json::to_vec(&order)?);
    let mut note: Value =
        serde_json::from_slice(&std::fs::read(dir.join("v2-order-created.json"))?)?;
    note["id"] = format!("note-{id}").into();
    note["order"]["id"] = id.into();
    note["order"]["resource_url"] =
        format!("https://pos-integration-service.wolt.com/orders/{id}").into();
    let fixture = Fixture {
        provider: Provider::Wolt,
        name: format!("wolt/{id}"),
        body: serde_json::to_vec(&note)?,
        path_headers: Default::default(),
        expected: Value::Null,
    };
    Ok(("acme-wolt".to_owned(), fixture))
}

/// Sends an order's webhook signed, as its provider would; the ingress
/// must take it.
async fn send(stack: &Stack, (account, fixture): &(String, Fixture)) -> anyhow::Result<()> {
    let r = fixture
        .request(
            &reqwest::Client::new(),
            &stack.ingress_url(),
            account,
            &SecretString::from(SECRET.to_owned()),
        )
        .timeout(STEP)
        .send()
        .await?;
    let status = r.status();
    anyhow::ensure!(
        status == 202,
        "{}: {status} {}",
        fixture.name,
        r.text().await?
    );
    Ok(())
}

/// The orders (and events) the backend received for a provider order id,
/// in arrival order.
fn at_backend(stack: &Stack, provider_order_id: &str) -> Vec<Value> {
    stack
        .backend
        .requests()
        .iter()
        .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok())
        .filter(|o| o["provider_order_id"] == provider_order_id)
        .collect()
}

/// Waits until the backend has received the order's `created` event and
/// returns it.
async fn created_at_backend(stack: &Stack, provider_order_id: &str) -> anyhow::Result<Value> {
    eventually(
        Duration::from_secs(60),
        &format!("order {provider_order_id} at the backend"),
        || async {
            at_backend(stack, provider_order_id)
                .into_iter()
                .find(|o| o["event"] == "created")
        },
    )
    .await
}

/// (method, path, body) of a status call.
fn seen(call: &StatusCall) -> (String, String, Option<Value>) {
    (call.method.clone(), call.path.clone(), call.body.clone())
}

fn call(method: &str, path: &str, body: Option<Value>) -> (String, String, Option<Value>) {
    (method.to_owned(), path.to_owned(), body)
}

/// Gives a stage time to make a call it should not make, before the test
/// asserts it was not made (bounded, not a timing assertion).
async fn quiet() {
    tokio::time::sleep(Duration::from_secs(2)).await;
}

/// Case 1: a Talabat, an Uber Eats and a Wolt order the backend took are
/// each accepted at the fake exactly once, with the documented request.
async fn auto_accept(stack: &Stack) -> anyhow::Result<()> {
    let fake = &stack.provider;
    let expires = OffsetDateTime::now_utc() + Duration::from_secs(600);
    let talabat = talabat_order(
        fake,
        "acme-talabat",
        "tb-wb-accept",
        "tok-wb-accept",
        expires,
    )?;
    let uber = uber_order(fake, "ue-wb-accept")?;
    let wolt = wolt_order(fake, "wo-wb-accept")?;
    for order in [&talabat, &uber, &wolt] {
        send(stack, order).await?;
    }

    let order = created_at_backend(stack, "tb-wb-accept").await?;
    let calls = fake.wait_status_calls_for("tok-wb-accept", 1, STEP).await?;
    let (method, path, body) = seen(&calls[0]);
    assert_eq!(
        (method.as_str(), path.as_str()),
        ("POST", "/v2/order/status/tok-wb-accept")
    );
    let mut body = body.expect("a Talabat accept has a body");
    let at = body["acceptanceTime"]
        .as_str()
        .map(|t| OffsetDateTime::parse(t, &Rfc3339))
        .transpose()?;
    assert!(at.is_some(), "acceptanceTime is RFC 3339: {body}");
    body.as_object_mut().unwrap().remove("acceptanceTime");
    assert_eq!(
        body,
        json!({"status": "order_accepted", "remoteOrderId": order["webhook_id"]})
    );
    assert!(
        calls[0]
            .auth
            .as_deref()
            .is_some_and(|a| a.starts_with("Bearer ")),
        "a Talabat callback carries the login's bearer token"
    );
    assert_eq!(calls[0].answered, 200);
    assert_eq!(
        fake.decision(Platform::Talabat, "tok-wb-accept"),
        Some(Decision::Accepted)
    );

    created_at_backend(stack, "ue-wb-accept").await?;
    let calls = fake.wait_status_calls_for("ue-wb-accept", 1, STEP).await?;
    assert_eq!(
        seen(&calls[0]),
        call(
            "POST",
            "/v1/eats/orders/ue-wb-accept/accept_pos_order",
            Some(json!({"reason": "accepted"}))
        )
    );
    assert!(
        calls[0]
            .auth
            .as_deref()
            .is_some_and(|a| a.starts_with("Bearer "))
    );
    assert_eq!(calls[0].answered, 204);

    created_at_backend(stack, "wo-wb-accept").await?;
    let calls = fake.wait_status_calls_for("wo-wb-accept", 1, STEP).await?;
    assert_eq!(
        seen(&calls[0]),
        call("PUT", "/orders/wo-wb-accept/accept", None)
    );
    assert!(
        calls[0]
            .auth
            .as_deref()
            .is_some_and(|a| a.starts_with("Bearer "))
    );
    assert_eq!(calls[0].answered, 202);

    quiet().await;
    for id in ["tok-wb-accept", "ue-wb-accept", "wo-wb-accept"] {
        assert_eq!(fake.status_calls_for(id).len(), 1, "{id} accepted once");
    }
    Ok(())
}

/// Case 2: the backend refuses a new Wolt order (422): the forwarder
/// dead-letters it and the provider hears a reject with reason `other`.
async fn backend_refusal_rejects(stack: &Stack, js: &jetstream::Context) -> anyhow::Result<()> {
    let fake = &stack.provider;
    stack.backend.script(|r| {
        let refused = serde_json::from_slice::<Value>(&r.body)
            .is_ok_and(|o| o["provider_order_id"] == "wo-wb-refused");
        Reply::status(if refused { 422 } else { 200 })
    });
    send(stack, &wolt_order(fake, "wo-wb-refused")?).await?;

    let calls = fake.wait_status_calls_for("wo-wb-refused", 1, STEP).await?;
    assert_eq!(
        seen(&calls[0]),
        call(
            "PUT",
            "/orders/wo-wb-refused/reject",
            Some(json!({"reason": "The restaurant cannot take this order", "code": "GENERIC"}))
        )
    );
    assert_eq!(calls[0].answered, 202);
    assert_eq!(
        fake.decision(Platform::Wolt, "wo-wb-refused"),
        Some(Decision::Rejected)
    );
    let refused = at_backend(stack, "wo-wb-refused");
    assert_eq!(refused.len(), 1, "a 4xx is not retried");
    let dead = dead_letters(js).await?;
    let entries: Vec<_> = dead
        .iter()
        .filter(|(e, _)| e.webhook_id.as_deref() == refused[0]["webhook_id"].as_str())
        .collect();
    assert_eq!(entries.len(), 1, "{dead:?}");
    assert_eq!(entries[0].0.stage, "forwarder");
    assert_eq!(entries[0].0.error_class, FailureClass::BackendRejected);
    assert_eq!(entries[0].0.deliveries, 1);

    quiet().await;
    assert_eq!(fake.status_calls_for("wo-wb-refused").len(), 1);
    Ok(())
}

/// Standard Webhooks headers for a status request, signed with the
/// tenant's signing secret.
fn signed(body: &[u8], webhook_id: &str) -> anyhow::Result<reqwest::header::HeaderMap> {
    let h = shared::verify::direct::sign(
        body,
        &SecretString::from(SECRET.to_owned()),
        webhook_id,
        SystemTime::now(),
    )?;
    let mut out = reqwest::header::HeaderMap::new();
    for (k, v) in h.iter() {
        out.insert(
            reqwest::header::HeaderName::from_bytes(k.as_str().as_bytes())?,
            reqwest::header::HeaderValue::from_bytes(v.as_bytes())?,
        );
    }
    out.insert("content-type", "application/json".parse()?);
    Ok(out)
}

/// Case 3: an account without auto-accept; the backend rejects the order
/// itself through the status API, and a re-send is a duplicate.
async fn backend_answers_itself(stack: &Stack) -> anyhow::Result<()> {
    let fake = &stack.provider;
    let expires = OffsetDateTime::now_utc() + Duration::from_secs(600);
    let order = talabat_order(
        fake,
        "acme-talabat-manual",
        "tb-wb-manual",
        "tok-wb-manual",
        expires,
    )?;
    send(stack, &order).await?;
    created_at_backend(stack, "tb-wb-manual").await?;
    quiet().await;
    assert!(
        fake.status_calls_for("tok-wb-manual").is_empty(),
        "no auto-accept on this account"
    );

    let url = format!(
        "{}/api/tenants/acme/orders/talabat/tb-wb-manual/status",
        stack.ingress_url()
    );
    let body = br#"{"action":"reject","reason":{"code":"too_busy"}}"#;
    let post = || async {
        let r = reqwest::Client::new()
            .post(&url)
            .headers(signed(body, "msg_wb_manual")?)
            .body(&body[..])
            .timeout(STEP)
            .send()
            .await?;
        let status = r.status().as_u16();
        let answer: Value = serde_json::from_slice(&r.bytes().await?)?;
        anyhow::Ok((status, answer))
    };
    let (status, queued) = post().await?;
    assert_eq!((status, &queued["status"]), (202, &json!("queued")));
    // The status id is derived from the tenant and the webhook-id (the
    // status API suite checks how): a re-send gets the same one.
    let status_id = queued["statusId"].as_str().unwrap_or_default().to_owned();
    assert!(
        status_id.len() == 32 && status_id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{queued}"
    );
    assert_eq!(queued.as_object().map(|o| o.len()), Some(2), "{queued}");
    let calls = fake.wait_status_calls_for("tok-wb-manual", 1, STEP).await?;
    assert_eq!(
        seen(&calls[0]),
        call(
            "POST",
            "/v2/order/status/tok-wb-manual",
            Some(json!({"status": "order_rejected", "reason": "TOO_BUSY",
                "message": "The restaurant is too busy"}))
        )
    );
    assert_eq!(calls[0].answered, 200);
    assert_eq!(
        fake.decision(Platform::Talabat, "tok-wb-manual"),
        Some(Decision::Rejected)
    );

    assert_eq!(
        post().await?,
        (200, json!({"statusId": status_id, "status": "duplicate"}))
    );
    quiet().await;
    assert_eq!(fake.status_calls_for("tok-wb-manual").len(), 1);
    Ok(())
}

/// Case 4: the provider answers 503 until the order's deadline: the
/// decision is dead-lettered `deadline_passed` and the backend receives a
/// `status_failed` event through the forwarder.
async fn deadline_passed_is_told(stack: &Stack, js: &jetstream::Context) -> anyhow::Result<()> {
    let fake = &stack.provider;
    fake.fault(
        Matcher::PathPrefix("/v2/order/status/tok-wb-late".into()),
        FaultReply::status(503).times(10_000),
    );
    let expires = OffsetDateTime::now_utc() + Duration::from_secs(10);
    let order = talabat_order(fake, "acme-talabat", "tb-wb-late", "tok-wb-late", expires)?;
    send(stack, &order).await?;

    let event = eventually(
        Duration::from_secs(60),
        "the status_failed event at the backend",
        || async {
            at_backend(stack, "tb-wb-late")
                .into_iter()
                .find(|o| o["event"] == "status_failed")
        },
    )
    .await?;
    let created = created_at_backend(stack, "tb-wb-late").await?;
    let status_id = format!("auto-accept-{}", created["webhook_id"].as_str().unwrap());
    assert_eq!(event["provider"], "talabat");
    assert_eq!(event["tenant"], "acme");
    assert_eq!(event["provider_order_id"], "tb-wb-late");
    assert_eq!(event["items"], json!([]));
    let sc = &event["status_call"];
    assert_eq!(sc["status_id"], status_id.as_str());
    assert_eq!(sc["action"], "accept");
    assert_eq!(sc["origin"], "auto_accept");
    assert_eq!(sc["error_class"], "deadline_passed");

    let dead = dead_letters(js).await?;
    let entries: Vec<_> = dead
        .iter()
        .filter(|(e, _)| e.stage == "status-sync")
        .collect();
    assert_eq!(entries.len(), 1, "{dead:?}");
    assert_eq!(entries[0].0.error_class, FailureClass::DeadlinePassed);
    assert_eq!(entries[0].0.stream, "STATUS");
    let calls = fake.status_calls_for("tok-wb-late");
    assert!(
        !calls.is_empty() && calls.iter().all(|c| c.answered == 503),
        "{calls:?}"
    );
    assert_eq!(fake.decision(Platform::Talabat, "tok-wb-late"), None);
    Ok(())
}

/// Case 5: the status worker is SIGKILLed while the provider holds its
/// accept; started again, it makes the call again and the order is
/// accepted once, with nothing dead-lettered.
async fn killed_mid_call(stack: &mut Stack, js: &jetstream::Context) -> anyhow::Result<()> {
    let dead_before = dead_letters(js).await?.len();
    stack.provider.fault(
        Matcher::PathPrefix("/v1/eats/orders/ue-wb-kill/".into()),
        FaultReply::hang(),
    );
    let order = uber_order(&stack.provider, "ue-wb-kill")?;
    send(stack, &order).await?;
    let calls = stack
        .provider
        .wait_status_calls_for("ue-wb-kill", 1, Duration::from_secs(60))
        .await?;
    assert_eq!(calls[0].answered, 0, "the first call hangs");
    stack.kill("status-sync").await?;
    stack.spawn("status-sync")?;
    stack.wait_ready("status-sync").await?;

    let calls = stack
        .provider
        .wait_status_calls_for("ue-wb-kill", 2, STEP)
        .await?;
    let accept = call(
        "POST",
        "/v1/eats/orders/ue-wb-kill/accept_pos_order",
        Some(json!({"reason": "accepted"})),
    );
    assert_eq!(seen(&calls[0]), accept);
    assert_eq!(seen(&calls[1]), accept);
    assert!(
        [204, 409].contains(&calls[1].answered),
        "answered {}",
        calls[1].answered
    );
    assert_eq!(
        stack.provider.decision(Platform::Ubereats, "ue-wb-kill"),
        Some(Decision::Accepted)
    );
    quiet().await;
    let calls = stack.provider.status_calls_for("ue-wb-kill");
    assert_eq!(
        calls.iter().filter(|c| c.answered == 204).count(),
        1,
        "{calls:?}"
    );
    assert_eq!(dead_letters(js).await?.len(), dead_before);
    Ok(())
}

#[tokio::test]
async fn the_provider_hears_every_answer() -> anyhow::Result<()> {
    let mut stack = Stack::start(&hub_toml(), &[("S", SECRET)]).await?;
    stack.provider.add_talabat_user(SECRET, SECRET);
    let js = jetstream::new(stack.nats.client().await?);

    auto_accept(&stack).await?;
    backend_refusal_rejects(&stack, &js).await?;
    backend_answers_itself(&stack).await?;
    deadline_passed_is_told(&stack, &js).await?;
    killed_mid_call(&mut stack, &js).await?;
    stack.stop().await
}
