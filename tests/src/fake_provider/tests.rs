//! The fake itself: a fake that lies makes every test built on it
//! meaningless, so each trap and fault is checked over real HTTP on
//! 127.0.0.1.

use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

use super::*;
use crate::STEP;

const UBER_ORDER: &str = r#"{"id":"uber-1","display_id":"A1","store":{"id":"s"}}"#;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(STEP)
        .build()
        .expect("a client")
}

async fn json_of(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.expect("a body");
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| json!({ "text": text })),
    )
}

/// Mints an Uber token; `(status, body)`.
async fn uber_mint(fake: &FakeProvider, id: &str, secret: &str) -> (u16, Value) {
    let r = client()
        .post(fake.uber_token_url())
        .form(&[
            ("client_id", id),
            ("client_secret", secret),
            ("grant_type", "client_credentials"),
            ("scope", "eats.order eats.store.orders.read"),
        ])
        .send()
        .await
        .expect("token request");
    json_of(r).await
}

async fn uber_token(fake: &FakeProvider) -> String {
    let (status, body) = uber_mint(fake, "uber-app", "uber-secret").await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

fn basic(id: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    )
}

async fn wolt_refresh(fake: &FakeProvider, secret: &str, refresh: &str) -> (u16, Value) {
    let r = client()
        .post(fake.wolt_token_url())
        .header("authorization", basic("venue-1", secret))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", refresh)])
        .send()
        .await
        .expect("token request");
    json_of(r).await
}

async fn get(fake: &FakeProvider, path: &str, token: &str) -> reqwest::Response {
    client()
        .get(format!("{}{path}", fake.url()))
        .bearer_auth(token)
        .send()
        .await
        .expect("order request")
}

async fn uber_fake() -> FakeProvider {
    let fake = FakeProvider::start().await.expect("fake starts");
    fake.add_uber_client("uber-app", "uber-secret");
    fake.put_order(Platform::Ubereats, Api::V2, "uber-1", UBER_ORDER);
    fake
}

async fn wolt_fake() -> FakeProvider {
    let fake = FakeProvider::start().await.expect("fake starts");
    fake.add_wolt_venue("venue-1", "wolt-secret", "rt-0");
    fake.put_order(Platform::Wolt, Api::V2, "wolt-1", r#"{"id":"wolt-1"}"#);
    fake
}

#[tokio::test]
async fn fake_provider_uber_mint_then_order_get_with_the_token() {
    let fake = uber_fake().await;
    let (status, body) = uber_mint(&fake, "uber-app", "uber-secret").await;
    assert_eq!(status, 200);
    let token = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        body,
        json!({
            "access_token": token,
            "expires_in": 2_592_000,
            "token_type": "Bearer",
            "scope": "eats.order eats.store.orders.read",
            "refresh_token": "",
        })
    );

    let r = get(&fake, "/v2/eats/order/uber-1", &token).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.text().await.unwrap(), UBER_ORDER);

    fake.put_order(Platform::Ubereats, Api::V1, "uber-1", "{\"order\":{}}");
    let r = get(
        &fake,
        "/v1/delivery/order/uber-1?expand=carts,deliveries,payment",
        &token,
    )
    .await;
    assert_eq!(r.text().await.unwrap(), "{\"order\":{}}");

    assert_eq!(fake.mints(Platform::Ubereats), 1);
    assert_eq!(fake.mints_by(Platform::Ubereats, "uber-app"), 1);
    assert_eq!(fake.mints(Platform::Wolt), 0);
    assert_eq!(fake.order_requests("/v2/eats/order/uber-1"), 1);
    let requests = fake.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(
        requests[0].endpoint,
        Some(Endpoint::Token(Platform::Ubereats))
    );
    assert_eq!(requests[0].token, None, "token requests carry no token");
    assert_eq!(
        (requests[1].method.as_str(), requests[1].token.as_deref()),
        ("GET", Some(token.as_str()))
    );
    assert_eq!(
        requests[2].endpoint,
        Some(Endpoint::Order(Platform::Ubereats, Api::V1))
    );
    assert_eq!(requests[2].path, "/v1/delivery/order/uber-1");
    assert_eq!(
        requests[2].query.as_deref(),
        Some("expand=carts,deliveries,payment")
    );
}

#[tokio::test]
async fn fake_provider_uber_token_endpoint_refuses_json_and_wrong_clients() {
    let fake = uber_fake().await;
    let r = client()
        .post(fake.uber_token_url())
        .json(&json!({
            "client_id": "uber-app",
            "client_secret": "uber-secret",
            "grant_type": "client_credentials",
            "scope": "eats.order",
        }))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(r).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request"))
    );

    for (id, secret) in [("uber-app", "wrong"), ("nobody", "uber-secret")] {
        let (status, body) = uber_mint(&fake, id, secret).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_client"))
        );
    }
    let r = client().get(fake.uber_token_url()).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(fake.mints(Platform::Ubereats), 0);
}

#[tokio::test]
async fn fake_provider_refuses_expired_revoked_unknown_and_foreign_tokens() {
    let fake = uber_fake().await;
    fake.add_wolt_venue("venue-1", "wolt-secret", "rt-0");
    fake.put_order(Platform::Wolt, Api::V2, "wolt-1", "{}");
    let token = uber_token(&fake).await;

    let (status, body) = json_of(get(&fake, "/v2/eats/order/nope", &token).await).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("resource_not_found"))
    );
    // An Uber token does not open Wolt's API.
    let (status, body) = json_of(get(&fake, "/v2/orders/wolt-1", &token).await).await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (401, Some("UNAUTHORIZED"))
    );
    let (status, body) = json_of(get(&fake, "/v2/eats/order/uber-1", "KA.unknown").await).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));
    let r = client()
        .get(format!("{}/v2/eats/order/uber-1", fake.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "no Authorization");

    fake.expire_all_tokens();
    assert!(!fake.token_live(&token));
    let (status, body) = json_of(get(&fake, "/v2/eats/order/uber-1", &token).await).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));

    let fresh = uber_token(&fake).await;
    assert_eq!(
        get(&fake, "/v2/eats/order/uber-1", &fresh).await.status(),
        200
    );
    assert!(fake.revoke_token(&fresh));
    assert_eq!(
        get(&fake, "/v2/eats/order/uber-1", &fresh).await.status(),
        401
    );
    assert_eq!(fake.revoked(), 1);
    assert!(!fake.revoke_token("never-issued"));

    fake.set_uber_expires_in(Duration::ZERO);
    let (_, body) = uber_mint(&fake, "uber-app", "uber-secret").await;
    assert_eq!(body["expires_in"], 0);
    let born_dead = body["access_token"].as_str().unwrap();
    assert_eq!(
        get(&fake, "/v2/eats/order/uber-1", born_dead)
            .await
            .status(),
        401
    );
}

#[tokio::test]
async fn fake_provider_uber_101st_live_token_revokes_the_oldest() {
    let fake = uber_fake().await;
    // The hourly cap is 100 too: lift it to reach the live-token limit.
    fake.set_uber_hourly_cap(1000);
    let mut tokens = Vec::new();
    for _ in 0..100 {
        tokens.push(uber_token(&fake).await);
    }
    assert_eq!(fake.revoked(), 0);
    assert_eq!(
        get(&fake, "/v2/eats/order/uber-1", &tokens[0])
            .await
            .status(),
        200
    );

    let newest = uber_token(&fake).await;
    assert_eq!(fake.revoked(), 1);
    assert_eq!(
        get(&fake, "/v2/eats/order/uber-1", &tokens[0])
            .await
            .status(),
        401
    );
    assert_eq!(
        get(&fake, "/v2/eats/order/uber-1", &tokens[1])
            .await
            .status(),
        200
    );
    assert_eq!(
        get(&fake, "/v2/eats/order/uber-1", &newest).await.status(),
        200
    );
    assert_eq!(fake.mints(Platform::Ubereats), 101);
}

#[tokio::test]
async fn fake_provider_uber_hourly_cap_answers_429_with_retry_after() {
    let fake = uber_fake().await;
    fake.set_uber_hourly_cap(2);
    uber_token(&fake).await;
    uber_token(&fake).await;
    let r = client()
        .post(fake.uber_token_url())
        .form(&[
            ("client_id", "uber-app"),
            ("client_secret", "uber-secret"),
            ("grant_type", "client_credentials"),
            ("scope", "eats.order"),
        ])
        .send()
        .await
        .unwrap();
    let retry_after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3600).contains(&retry_after), "{retry_after}");
    let (status, body) = json_of(r).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (429, Some("rate_limited"))
    );
    assert_eq!(fake.mints(Platform::Ubereats), 2);
}

#[tokio::test]
async fn fake_provider_wolt_refresh_rotates_single_use_tokens() {
    let fake = wolt_fake().await;
    let (status, first) = wolt_refresh(&fake, "wolt-secret", "rt-0").await;
    assert_eq!(status, 200, "{first}");
    let access = first["access_token"].as_str().unwrap();
    let rt1 = first["refresh_token"].as_str().unwrap();
    assert_eq!(
        (first["token_type"].as_str(), first["expires_in"].as_u64()),
        (Some("Bearer"), Some(3600))
    );
    assert_ne!(rt1, "rt-0");
    assert!(!fake.token_live("rt-0"));
    assert_eq!(fake.live_refresh_token("venue-1").as_deref(), Some(rt1));

    let r = get(&fake, "/v2/orders/wolt-1", access).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), r#"{"id":"wolt-1"}"#);
    let (status, body) = json_of(get(&fake, "/orders/wolt-1", access).await).await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (404, Some("NOT_FOUND"))
    );

    fake.set_wolt_expires_in(Duration::from_secs(60));
    let (status, second) = wolt_refresh(&fake, "wolt-secret", rt1).await;
    assert_eq!((status, second["expires_in"].as_u64()), (200, Some(60)));
    assert_ne!(second["refresh_token"], first["refresh_token"]);
    // Rotation alone revokes nothing: the first access token lives on.
    assert_eq!(get(&fake, "/v2/orders/wolt-1", access).await.status(), 200);
    assert_eq!(fake.mints(Platform::Wolt), 2);
    assert_eq!(fake.mints_by(Platform::Wolt, "venue-1"), 2);
    assert_eq!((fake.refresh_uses("rt-0"), fake.refresh_uses(rt1)), (1, 1));
    assert_eq!((fake.refresh_token_reuses(), fake.revoked()), (0, 0));
}

#[tokio::test]
async fn fake_provider_wolt_reuse_revokes_the_new_pair_and_answers_invalid_grant() {
    let fake = wolt_fake().await;
    let (_, issued) = wolt_refresh(&fake, "wolt-secret", "rt-0").await;
    let access = issued["access_token"].as_str().unwrap();
    let rt1 = issued["refresh_token"].as_str().unwrap();

    let (status, body) = wolt_refresh(&fake, "wolt-secret", "rt-0").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert_eq!(fake.refresh_token_reuses(), 1);
    assert_eq!(fake.refresh_uses("rt-0"), 2);
    assert_eq!(fake.revoked(), 1);
    assert!(!fake.token_live(access) && !fake.token_live(rt1));
    assert_eq!(fake.live_refresh_token("venue-1"), None);
    assert_eq!(get(&fake, "/v2/orders/wolt-1", access).await.status(), 401);
    // The venue is locked out until it is authorized again.
    let (status, body) = wolt_refresh(&fake, "wolt-secret", rt1).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert_eq!(fake.mints(Platform::Wolt), 1);
}

#[tokio::test]
async fn fake_provider_wolt_concurrent_refreshes_with_one_token_are_a_reuse() {
    let fake = wolt_fake().await;
    let (a, b) = tokio::join!(
        wolt_refresh(&fake, "wolt-secret", "rt-0"),
        wolt_refresh(&fake, "wolt-secret", "rt-0")
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [200, 400]);
    let winner = if a.0 == 200 { a.1 } else { b.1 };
    assert!(!fake.token_live(winner["access_token"].as_str().unwrap()));
    assert_eq!(fake.refresh_token_reuses(), 1);
}

#[tokio::test]
async fn fake_provider_wolt_client_authentication_and_codes() {
    let fake = wolt_fake().await;
    let post = |auth: Option<String>| {
        let mut r = client()
            .post(fake.wolt_token_url())
            .form(&[("grant_type", "refresh_token"), ("refresh_token", "rt-0")]);
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        r.send()
    };
    for auth in [
        None,
        Some("Bearer abc".to_owned()),
        Some("Basic !!".to_owned()),
    ] {
        let (status, body) = json_of(post(auth.clone()).await.unwrap()).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_request")),
            "{auth:?}"
        );
    }
    let (status, body) = wolt_refresh(&fake, "wrong", "rt-0").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    let (status, body) = wolt_refresh(&fake, "wolt-secret", "unknown").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    // None of these used the refresh token up.
    assert!(fake.token_live("rt-0"));
    assert_eq!(fake.refresh_uses("rt-0"), 0);

    fake.add_wolt_code("venue-1", "code-1");
    let exchange = || {
        client()
            .post(fake.wolt_token_url())
            .header("authorization", basic("venue-1", "wolt-secret"))
            .form(&[("grant_type", "authorization_code"), ("code", "code-1")])
            .send()
    };
    let (status, body) = json_of(exchange().await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert!(fake.token_live(body["refresh_token"].as_str().unwrap()));
    let (status, body) = json_of(exchange().await.unwrap()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
}

#[tokio::test]
async fn fake_provider_fault_queue_answers_the_next_matching_requests() {
    let fake = uber_fake().await;
    let token = uber_token(&fake).await;
    fake.fault(
        Matcher::Order(Platform::Ubereats),
        FaultReply::status(404)
            .with_body(r#"{"code":"resource_not_found"}"#)
            .times(3),
    );
    fake.fault(Matcher::Token(Platform::Ubereats), FaultReply::status(500));
    assert_eq!(fake.faults_pending(), 4);
    for left in [3, 2, 1] {
        let r = get(&fake, "/v2/eats/order/uber-1", &token).await;
        assert_eq!(r.status(), 404, "{left} left");
        assert_eq!(r.text().await.unwrap(), r#"{"code":"resource_not_found"}"#);
    }
    assert_eq!(
        get(&fake, "/v2/eats/order/uber-1", &token).await.status(),
        200
    );
    assert_eq!(fake.order_requests("/v2/eats/order/uber-1"), 4);

    // The token fault waited for a token request; it mints nothing.
    let (status, _) = uber_mint(&fake, "uber-app", "uber-secret").await;
    assert_eq!(status, 500);
    assert_eq!(fake.mints(Platform::Ubereats), 1);
    assert_eq!(fake.faults_pending(), 0);

    // By path prefix, and a 401 as if the token had been revoked.
    fake.fault(
        Matcher::PathPrefix("/v1/delivery/".to_owned()),
        FaultReply::status(401).with_body(r#"{"code":"unauthorized"}"#),
    );
    assert_eq!(
        get(&fake, "/v2/eats/order/uber-1", &token).await.status(),
        200
    );
    assert_eq!(
        get(&fake, "/v1/delivery/order/x", &token).await.status(),
        401
    );
    assert_eq!(
        get(&fake, "/v1/delivery/order/x", &token).await.status(),
        404
    );
}

#[tokio::test]
async fn fake_provider_retry_after_passes_through() {
    let fake = wolt_fake().await;
    fake.fault(
        Matcher::Order(Platform::Wolt),
        FaultReply::status(429).with_retry_after("2"),
    );
    let r = get(&fake, "/v2/orders/wolt-1", "any").await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "2");
    assert!(r.headers().get("content-type").is_none());
    assert_eq!(r.text().await.unwrap(), "");
}

#[tokio::test]
async fn fake_provider_delayed_fault_waits_before_answering() {
    let fake = wolt_fake().await;
    fake.fault(
        Matcher::Token(Platform::Wolt),
        FaultReply::status(503).after(Duration::from_millis(300)),
    );
    let sent = std::time::Instant::now();
    let (status, _) = wolt_refresh(&fake, "wolt-secret", "rt-0").await;
    assert_eq!(status, 503);
    assert!(sent.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn fake_provider_hang_never_answers_and_down_cuts_it() {
    let mut fake = uber_fake().await;
    let token = uber_token(&fake).await;
    fake.fault(Matcher::Order(Platform::Ubereats), FaultReply::hang());
    let short = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let err = short
        .get(format!("{}/v2/eats/order/uber-1", fake.url()))
        .bearer_auth(&token)
        .send()
        .await
        .expect_err("a hanging fault never answers");
    assert!(err.is_timeout(), "{err}");
    assert_eq!(
        get(&fake, "/v2/eats/order/uber-1", &token).await.status(),
        200
    );

    // A hanging request while the fake goes down: the connection is cut.
    fake.fault(Matcher::Order(Platform::Ubereats), FaultReply::hang());
    let url = format!("{}/v2/eats/order/uber-1", fake.url());
    let hanging = tokio::spawn(client().get(url).bearer_auth(token.clone()).send());
    crate::eventually(STEP, "the hanging request", || async {
        (fake.order_requests("/v2/eats/order/uber-1") == 3).then_some(())
    })
    .await
    .unwrap();
    fake.down().await;
    let err = hanging.await.unwrap().expect_err("cut, not answered");
    assert!(!err.is_timeout(), "{err}");
    let refused = client()
        .get(format!("{}/v2/eats/order/uber-1", fake.url()))
        .send()
        .await
        .expect_err("down refuses connections");
    assert!(refused.is_connect(), "{refused}");

    // Back on the same port, with the tokens it had issued.
    let port = fake.port();
    fake.up().await.unwrap();
    assert_eq!(fake.port(), port);
    assert_eq!(
        get(&fake, "/v2/eats/order/uber-1", &token).await.status(),
        200
    );
}

#[tokio::test]
async fn fake_provider_http_control_routes() {
    let fake = uber_fake().await;
    let c = client();
    let r = c
        .post(format!("{}/_fake/orders/wolt/v1/w-9", fake.url()))
        .body(r#"{"id":"w-9"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = c
        .post(format!("{}/_fake/faults", fake.url()))
        .json(&json!({
            "provider": "ubereats", "endpoint": "order",
            "status": 429, "retry_after": "7", "body": {"code": "rate_limited"}, "times": 2,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(fake.faults_pending(), 2);
    for (bad, names) in [
        (
            json!({"provider": "uber", "endpoint": "order", "status": 500}),
            "\"uber\"",
        ),
        (
            json!({"path_prefix": "/v2/", "status": 500, "times": 0}),
            "times",
        ),
        (json!({"path_prefix": "/v2/"}), "status"),
        (json!({"status": 500}), "path_prefix"),
    ] {
        let r = c
            .post(format!("{}/_fake/faults", fake.url()))
            .json(&bad)
            .send()
            .await
            .unwrap();
        let (status, body) = json_of(r).await;
        assert_eq!(status, 400, "{bad}");
        assert!(body["error"].as_str().unwrap().contains(names), "{body}");
    }
    let r = c
        .post(format!("{}/_fake/orders/glovo/v1/x", fake.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    let token = uber_token(&fake).await;
    let r = get(&fake, "/v2/eats/order/uber-1", &token).await;
    assert_eq!(r.headers()["retry-after"], "7");
    assert_eq!(r.text().await.unwrap(), r#"{"code":"rate_limited"}"#);

    fake.add_wolt_venue("venue-1", "wolt-secret", "rt-0");
    let (_, issued) = wolt_refresh(&fake, "wolt-secret", "rt-0").await;
    let wolt = issued["access_token"].as_str().unwrap();
    assert_eq!(get(&fake, "/orders/w-9", wolt).await.status(), 200);

    let r = c
        .post(format!("{}/_fake/expire-tokens", fake.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(get(&fake, "/orders/w-9", wolt).await.status(), 401);

    let (status, stats) = json_of(
        c.get(format!("{}/_fake/stats", fake.url()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        stats,
        json!({
            "mints": {"ubereats": 1, "wolt": 1},
            "mints_by_client": {"ubereats:uber-app": 1, "wolt:venue-1": 1},
            "live_access_tokens": {"ubereats": 0, "wolt": 0},
            "refresh_token_reuses": 0,
            "revoked": 0,
            "requests": 5,
            "requests_by_path": {
                "/oauth/v2/token": 1,
                "/oauth2/token": 1,
                "/v2/eats/order/uber-1": 1,
                "/orders/w-9": 2,
            },
            "status_calls": {},
            "faults_pending": 1,
        })
    );
    assert!(!stats.to_string().contains(&token), "stats show no token");
    assert_eq!(fake.stats(), stats);
}

#[test]
fn fake_provider_reads_orders_laid_out_as_fixtures() {
    let dir = tempfile::tempdir().unwrap();
    let write = |path: &str, body: &str| {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    };
    write("ubereats/fetched/a.json", r#"{"id":"u-2"}"#);
    write("ubereats/fetched/b.json", r#"{"order":{"id":"u-1"}}"#);
    write(
        "ubereats/fetched/b.headers.json",
        r#"{"Orderhub-Fetched-Api":"v1"}"#,
    );
    write("ubereats/fetched/b.expected.json", r#"{"not":"an order"}"#);
    write("ubereats/webhook.json", r#"{"not":"fetched"}"#);
    write("wolt/fetched/c.json", r#"{"id":"w-1"}"#);
    write(
        "wolt/fetched/c.headers.json",
        r#"{"Orderhub-Notification-Event":"CREATED"}"#,
    );

    let orders: Vec<_> = read_orders(dir.path())
        .unwrap()
        .into_iter()
        .map(|o| (o.platform, o.api, o.id, o.body))
        .collect();
    assert_eq!(
        orders,
        vec![
            (
                Platform::Ubereats,
                Api::V2,
                "u-2".to_owned(),
                bytes::Bytes::from(r#"{"id":"u-2"}"#)
            ),
            (
                Platform::Ubereats,
                Api::V1,
                "u-1".to_owned(),
                bytes::Bytes::from(r#"{"order":{"id":"u-1"}}"#)
            ),
            (
                Platform::Wolt,
                Api::V2,
                "w-1".to_owned(),
                bytes::Bytes::from(r#"{"id":"w-1"}"#)
            ),
        ]
    );

    write(
        "wolt/fetched/c.headers.json",
        r#"{"Orderhub-Fetched-Api":"v3"}"#,
    );
    let err = read_orders(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("c.headers.json") && err.contains("\"v3\""),
        "{err}"
    );
    write("wolt/fetched/c.headers.json", "{}");
    write("wolt/fetched/d.json", r#"{"order":{"id":"w-2"}}"#);
    let err = read_orders(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("d.json") && err.contains("no order id"),
        "{err}"
    );
}

// ---- Status endpoints (issue 14) ----

/// Sends a request with `headers`, and a JSON body if any; `(status,
/// body)`, the body `Null` when empty.
async fn send(
    fake: &FakeProvider,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = client().request(
        reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
        format!("{}{path}", fake.url()),
    );
    for (name, value) in headers {
        r = r.header(*name, *value);
    }
    if let Some(body) = body {
        r = r.json(&body);
    }
    let r = r.send().await.expect("status request");
    let status = r.status().as_u16();
    let text = r.text().await.expect("a body");
    if text.is_empty() {
        return (status, Value::Null);
    }
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| json!({ "text": text })),
    )
}

async fn talabat_login(fake: &FakeProvider, user: &str, password: &str) -> (u16, Value) {
    let r = client()
        .post(fake.talabat_token_url())
        .form(&[
            ("username", user),
            ("password", password),
            ("grant_type", "client_credentials"),
        ])
        .send()
        .await
        .expect("login request");
    json_of(r).await
}

async fn deliveroo_mint(url: &str, secret: &str) -> (u16, Value) {
    let r = client()
        .post(url)
        .header("authorization", basic("roo-app", secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .expect("token request");
    json_of(r).await
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

const NOW: &str = "2026-03-01T12:00:00Z";

#[tokio::test]
async fn fake_provider_talabat_login_answers_a_bearer_token_for_its_users_only() {
    let fake = FakeProvider::start().await.unwrap();
    fake.add_talabat_user("tb-user", "tb-pass");
    let (status, body) = talabat_login(&fake, "tb-user", "tb-pass").await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap();
    assert!(token.starts_with("talabat-at-"), "{token}");
    assert_eq!(
        body,
        json!({"access_token": token, "token_type": "Bearer", "expires_in": 1800})
    );
    assert!(fake.token_live(token));
    assert_eq!(fake.mints_by(Platform::Talabat, "tb-user"), 1);

    for (user, password) in [("tb-user", "wrong"), ("nobody", "tb-pass")] {
        let (status, body) = talabat_login(&fake, user, password).await;
        assert_eq!((status, body["code"].as_str()), (401, Some("UNAUTHORIZED")));
    }
    let r = client()
        .post(fake.talabat_token_url())
        .json(&json!({"username": "tb-user", "password": "tb-pass", "grant_type": "client_credentials"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "a JSON login");
    let r = client()
        .post(fake.talabat_token_url())
        .form(&[
            ("username", "tb-user"),
            ("password", "tb-pass"),
            ("grant_type", "password"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "another grant");

    fake.set_talabat_expires_in(Duration::from_secs(60));
    let (_, body) = talabat_login(&fake, "tb-user", "tb-pass").await;
    assert_eq!(body["expires_in"], 60);
    assert_eq!(fake.mints(Platform::Talabat), 2);
}

#[tokio::test]
async fn fake_provider_talabat_callbacks_take_the_first_answer_and_409_the_next() {
    let fake = FakeProvider::start().await.unwrap();
    fake.add_talabat_user("tb-user", "tb-pass");
    let (_, body) = talabat_login(&fake, "tb-user", "tb-pass").await;
    let auth = bearer(body["access_token"].as_str().unwrap());
    let h = [("authorization", auth.as_str())];

    // The token goes in as one path segment.
    let urls = fake.talabat_callback_urls("tok 1/a");
    let status_url = format!("{}/v2/order/status/tok%201%2Fa", fake.url());
    assert_eq!(
        urls,
        json!({
            "orderAcceptedUrl": status_url,
            "orderRejectedUrl": status_url,
            "orderPickedUpUrl": status_url,
            "orderPreparedUrl": format!("{}/v2/orders/tok%201%2Fa/preparation-completed", fake.url()),
        })
    );
    let path = "/v2/order/status/tok%201%2Fa";
    let accepted = json!({"status": "order_accepted", "acceptanceTime": "2026-03-01T12:20:00.000Z", "remoteOrderId": "OH-1"});
    assert_eq!(
        send(&fake, "POST", path, &h, Some(accepted.clone())).await,
        (200, Value::Null)
    );
    assert_eq!(
        fake.decision(Platform::Talabat, "tok 1/a"),
        Some(Decision::Accepted)
    );
    assert_eq!(
        send(&fake, "POST", path, &h, Some(accepted.clone())).await,
        (409, json!({"currentState": "ACCEPTED"}))
    );
    let rejected = json!({"status": "order_rejected", "reason": "TOO_BUSY", "message": "Busy"});
    assert_eq!(
        send(&fake, "POST", path, &h, Some(rejected.clone())).await,
        (409, json!({"currentState": "ACCEPTED"}))
    );
    assert_eq!(
        send(
            &fake,
            "POST",
            path,
            &h,
            Some(json!({"status": "order_picked_up"}))
        )
        .await,
        (200, Value::Null)
    );
    let prepared = "/v2/orders/tok%201%2Fa/preparation-completed";
    assert_eq!(send(&fake, "POST", prepared, &h, None).await.0, 200);

    // A reject first: the accept after it meets REJECTED.
    let other = "/v2/order/status/tok-2";
    assert_eq!(send(&fake, "POST", other, &h, Some(rejected)).await.0, 200);
    assert_eq!(
        send(&fake, "POST", other, &h, Some(accepted.clone())).await,
        (409, json!({"currentState": "REJECTED"}))
    );

    let calls = fake.status_calls_for("tok 1/a");
    let seen: Vec<_> = calls
        .iter()
        .map(|c| (c.endpoint, c.method.as_str(), c.answered))
        .collect();
    assert_eq!(
        seen,
        vec![
            (StatusEndpoint::TalabatOrderStatus, "POST", 200),
            (StatusEndpoint::TalabatOrderStatus, "POST", 409),
            (StatusEndpoint::TalabatOrderStatus, "POST", 409),
            (StatusEndpoint::TalabatOrderStatus, "POST", 200),
            (StatusEndpoint::TalabatPreparationCompleted, "POST", 200),
        ]
    );
    assert_eq!(
        calls[0],
        StatusCall {
            provider: "talabat",
            endpoint: StatusEndpoint::TalabatOrderStatus,
            order_id: "tok 1/a".to_owned(),
            method: "POST".to_owned(),
            path: path.to_owned(),
            auth: Some(auth.clone()),
            extra_headers: vec![],
            body: Some(accepted),
            answered: 200,
        }
    );
    assert_eq!(calls[4].body, None);
    assert_eq!(fake.status_calls().len(), 7);
}

#[tokio::test]
async fn fake_provider_talabat_refuses_bad_bodies_and_foreign_tokens() {
    let fake = FakeProvider::start().await.unwrap();
    fake.add_talabat_user("tb-user", "tb-pass");
    fake.add_uber_client("uber-app", "uber-secret");
    let (_, body) = talabat_login(&fake, "tb-user", "tb-pass").await;
    let auth = bearer(body["access_token"].as_str().unwrap());
    let h = [("authorization", auth.as_str())];
    let path = "/v2/order/status/tok-1";
    for (bad, names) in [
        (
            json!({"status": "order_rejected", "reason": "SOLD_OUT"}),
            "SOLD_OUT",
        ),
        (json!({"status": "order_rejected"}), "missing reason"),
        (
            json!({"status": "order_accepted", "acceptanceTime": "in 20 minutes"}),
            "acceptanceTime",
        ),
        (
            json!({"status": "order_accepted"}),
            "missing acceptanceTime",
        ),
        (json!({"status": "order_prepared"}), "order_prepared"),
        (
            json!({"status": "order_picked_up", "at": NOW}),
            "unknown field at",
        ),
        (json!(["order_accepted"]), "JSON object"),
    ] {
        let (status, body) = send(&fake, "POST", path, &h, Some(bad.clone())).await;
        assert_eq!(status, 400, "{bad}");
        assert_eq!(body["code"], "BAD_REQUEST", "{bad}");
        assert!(
            body["message"].as_str().unwrap().contains(names),
            "{bad}: {body}"
        );
    }
    // Every one of the documented reasons is taken.
    for (i, reason) in TALABAT_REJECT_REASONS.iter().enumerate() {
        let body = json!({"status": "order_rejected", "reason": reason});
        let (status, _) = send(
            &fake,
            "POST",
            &format!("/v2/order/status/r-{i}"),
            &h,
            Some(body),
        )
        .await;
        assert_eq!(status, 200, "{reason}");
    }
    let (status, _) = send(
        &fake,
        "POST",
        "/v2/orders/tok-1/preparation-completed",
        &h,
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 400, "prepared takes no body");

    let uber = uber_token(&fake).await;
    let accepted = json!({"status": "order_accepted", "acceptanceTime": NOW});
    for auth in [
        bearer(&uber),
        bearer("talabat-at-unknown"),
        "tb-user:tb-pass".to_owned(),
    ] {
        let (status, body) = send(
            &fake,
            "POST",
            path,
            &[("authorization", &auth)],
            Some(accepted.clone()),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (401, Some("UNAUTHORIZED")),
            "{auth}"
        );
    }
    fake.expire_all_tokens();
    assert_eq!(
        send(&fake, "POST", path, &h, Some(accepted.clone()))
            .await
            .0,
        401
    );
    // Nothing above decided the order.
    assert_eq!(fake.decision(Platform::Talabat, "tok-1"), None);
    let calls = fake.status_calls_for("tok-1");
    assert!(
        calls.iter().all(|c| [400, 401].contains(&c.answered)),
        "{calls:?}"
    );
}

#[tokio::test]
async fn fake_provider_deliveroo_token_and_status_calls() {
    let fake = FakeProvider::start().await.unwrap();
    fake.add_deliveroo_client("roo-app", "roo-secret");
    fake.add_wolt_venue("venue-1", "wolt-secret", "rt-0");
    let (status, body) = deliveroo_mint(&fake.deliveroo_token_url(), "roo-secret").await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        body,
        json!({"access_token": token, "expires_in": 300, "token_type": "Bearer"})
    );
    assert_eq!(fake.mints_by(Platform::Deliveroo, "roo-app"), 1);
    let (status, body) = deliveroo_mint(&fake.deliveroo_token_url(), "wrong").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    // Wolt's token endpoint does not know Deliveroo's clients.
    let (status, body) = deliveroo_mint(&fake.wolt_token_url(), "roo-secret").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    let r = client()
        .post(fake.deliveroo_token_url())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "roo-app"),
            ("client_secret", "roo-secret"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "credentials in the body, not Basic");
    let r = client()
        .post(fake.deliveroo_token_url())
        .header("authorization", basic("roo-app", "roo-secret"))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(r).await.1["error"], "unsupported_grant_type");
    assert_eq!(fake.mints(Platform::Deliveroo), 1);

    let auth = bearer(&token);
    let h = [("authorization", auth.as_str())];
    let id = "gb:0d5a-7c1e";
    let sync = format!("/order/v1/orders/{id}/sync_status");
    let order = format!("/order/v1/orders/{id}");
    let succeeded = json!({"status": "succeeded", "occurred_at": NOW});
    // Accept: sync_status, then the PATCH; each once.
    assert_eq!(
        send(&fake, "POST", &sync, &h, Some(succeeded.clone())).await,
        (204, Value::Null)
    );
    assert_eq!(
        send(
            &fake,
            "PATCH",
            &order,
            &h,
            Some(json!({"status": "accepted"}))
        )
        .await,
        (204, Value::Null)
    );
    let (status, body) = send(&fake, "POST", &sync, &h, Some(succeeded)).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("conflict")));
    let rejected = json!({"status": "rejected", "reject_reason": "busy", "notes": "Busy"});
    let (status, body) = send(&fake, "PATCH", &order, &h, Some(rejected.clone())).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("conflict")));
    assert_eq!(
        send(
            &fake,
            "PATCH",
            &order,
            &h,
            Some(json!({"status": "confirmed"}))
        )
        .await
        .0,
        204
    );
    assert_eq!(
        fake.decision(Platform::Deliveroo, id),
        Some(Decision::Accepted)
    );
    for stage in [
        json!({"stage": "in_kitchen", "delay": 4, "occurred_at": NOW}),
        json!({"stage": "ready_for_collection", "occurred_at": NOW}),
        json!({"stage": "collected", "occurred_at": "2026-03-01T13:00:00.5+01:00"}),
    ] {
        let path = format!("/order/v1/orders/{id}/prep_stage");
        assert_eq!(
            send(&fake, "POST", &path, &h, Some(stage.clone())).await.0,
            204,
            "{stage}"
        );
    }

    let other = "/order/v1/orders/gb:2";
    for (method, path, bad) in [
        ("PATCH", other.to_owned(), json!({"status": "rejected"})),
        (
            "PATCH",
            other.to_owned(),
            json!({"status": "rejected", "reject_reason": "sold_out"}),
        ),
        (
            "PATCH",
            other.to_owned(),
            json!({"status": "accepted", "reject_reason": "busy"}),
        ),
        ("PATCH", other.to_owned(), json!({"status": "delivered"})),
        (
            "POST",
            format!("{other}/sync_status"),
            json!({"status": "failed", "occurred_at": NOW}),
        ),
        (
            "POST",
            format!("{other}/sync_status"),
            json!({"status": "succeeded"}),
        ),
        (
            "POST",
            format!("{other}/sync_status"),
            json!({"status": "succeeded", "occurred_at": "2026-02-30T10:00:00Z"}),
        ),
        (
            "POST",
            format!("{other}/prep_stage"),
            json!({"stage": "in_kitchen", "delay": 3, "occurred_at": NOW}),
        ),
        (
            "POST",
            format!("{other}/prep_stage"),
            json!({"stage": "collected", "delay": 2, "occurred_at": NOW}),
        ),
        (
            "POST",
            format!("{other}/prep_stage"),
            json!({"stage": "cooking", "occurred_at": NOW}),
        ),
    ] {
        let (status, body) = send(&fake, method, &path, &h, Some(bad.clone())).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("bad_request")),
            "{bad}: {body}"
        );
    }
    assert_eq!(fake.decision(Platform::Deliveroo, "gb:2"), None);
    let (status, _) = send(
        &fake,
        "POST",
        other,
        &h,
        Some(json!({"status": "accepted"})),
    )
    .await;
    assert_eq!(status, 405, "the order call is a PATCH");

    let (_, wolt) = wolt_refresh(&fake, "wolt-secret", "rt-0").await;
    let wolt = bearer(wolt["access_token"].as_str().unwrap());
    let (status, body) = send(
        &fake,
        "PATCH",
        other,
        &[("authorization", &wolt)],
        Some(json!({"status": "accepted"})),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("unauthorized")),
        "a Wolt token"
    );
    assert_eq!(fake.decision(Platform::Deliveroo, "gb:2"), None);
}

#[tokio::test]
async fn fake_provider_uber_status_calls_both_generations() {
    let fake = uber_fake().await;
    let auth = bearer(&uber_token(&fake).await);
    let h = [("authorization", auth.as_str())];

    let accept = json!({"reason": "accepted", "pickup_time": 1_772_366_400});
    assert_eq!(
        send(
            &fake,
            "POST",
            "/v1/eats/orders/u-1/accept_pos_order",
            &h,
            Some(accept.clone())
        )
        .await,
        (204, Value::Null)
    );
    let (status, body) = send(
        &fake,
        "POST",
        "/v1/eats/orders/u-1/accept_pos_order",
        &h,
        Some(accept),
    )
    .await;
    assert_eq!(status, 409);
    assert_eq!(body["code"], "resource_status_conflict");
    assert!(
        body["message"].as_str().unwrap().contains("accepted"),
        "{body}"
    );
    let deny = json!({"reason": {"explanation": "Sold out", "code": "ITEM_AVAILABILITY", "out_of_stock_items": ["i-1"]}});
    let (status, body) = send(
        &fake,
        "POST",
        "/v1/eats/orders/u-1/deny_pos_order",
        &h,
        Some(deny.clone()),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("resource_status_conflict"))
    );
    let delivered = json!({"status": "delivered"});
    assert_eq!(
        send(
            &fake,
            "POST",
            "/v1/eats/orders/u-1/restaurantdelivery/status",
            &h,
            Some(delivered)
        )
        .await
        .0,
        204
    );
    // Cancel: 200, then 404 (the order is terminal).
    let cancel = json!({"reason": "KITCHEN_CLOSED", "details": "Closed"});
    assert_eq!(
        send(
            &fake,
            "POST",
            "/v1/eats/orders/u-1/cancel",
            &h,
            Some(cancel.clone())
        )
        .await,
        (200, Value::Null)
    );
    let (status, body) = send(
        &fake,
        "POST",
        "/v1/eats/orders/u-1/cancel",
        &h,
        Some(cancel),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("resource_not_found"))
    );

    assert_eq!(
        send(
            &fake,
            "POST",
            "/v1/eats/orders/u-2/deny_pos_order",
            &h,
            Some(deny)
        )
        .await
        .0,
        204
    );
    assert_eq!(
        fake.decision(Platform::Ubereats, "u-2"),
        Some(Decision::Rejected)
    );

    // Order Fulfillment.
    let v1 = |call: &str| format!("/v1/delivery/order/u-3/{call}");
    let deny_v1 = json!({"deny_reason": {"type": "ITEM_ISSUE", "info": "Sold out",
        "item_metadata": {"invalid_item": [{"id": "i-1", "type": "OUT_OF_ITEM"}]}}});
    assert_eq!(
        send(&fake, "POST", &v1("deny"), &h, Some(deny_v1)).await.0,
        204
    );
    let (status, body) = send(
        &fake,
        "POST",
        &v1("accept"),
        &h,
        Some(json!({"accepted_by": "orderhub", "ready_for_pickup_time": "2026-03-01T12:20:00+01:00"})),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("resource_status_conflict"))
    );
    let (status, _) = send(
        &fake,
        "POST",
        &v1("cancel"),
        &h,
        Some(json!({"cancellation_reason": {"type": "OTHER", "info": "x"}})),
    )
    .await;
    assert_eq!(status, 409, "a denied order cannot be cancelled");
    let v1 = |call: &str| format!("/v1/delivery/order/u-4/{call}");
    assert_eq!(
        send(
            &fake,
            "POST",
            &v1("accept"),
            &h,
            Some(json!({"accepted_by": "orderhub"}))
        )
        .await
        .0,
        204
    );
    assert_eq!(
        send(&fake, "POST", &v1("ready"), &h, Some(json!({})))
            .await
            .0,
        204
    );
    assert_eq!(
        send(
            &fake,
            "POST",
            &v1("update-ready-time"),
            &h,
            Some(json!({"ready_for_pickup_time": NOW}))
        )
        .await
        .0,
        204
    );

    let u5 = "/v1/eats/orders/u-5";
    for (path, bad, names) in [
        (
            format!("{u5}/deny_pos_order"),
            json!({"reason": {"code": "SOLD_OUT"}}),
            "reason.code",
        ),
        (
            format!("{u5}/deny_pos_order"),
            json!({"reason": "ITEM_AVAILABILITY"}),
            "reason must be an object",
        ),
        (
            format!("{u5}/accept_pos_order"),
            json!({"reason": "ok", "pickup_time": "12:20"}),
            "pickup_time",
        ),
        (
            format!("{u5}/accept_pos_order"),
            json!({"reasons": "ok"}),
            "unknown field reasons",
        ),
        (
            format!("{u5}/cancel"),
            json!({"reason": "TOO_BUSY"}),
            "TOO_BUSY",
        ),
        (
            format!("{u5}/restaurantdelivery/status"),
            json!({"status": "ready"}),
            "ready",
        ),
        (
            "/v1/delivery/order/u-5/deny".to_owned(),
            json!({"deny_reason": {"type": "ITEM_ISSUE",
            "item_metadata": {"invalid_item": [{"id": "i-1", "type": "GONE"}]}}}),
            "deny_reason.item_metadata.invalid_item[0].type",
        ),
        (
            "/v1/delivery/order/u-5/update-ready-time".to_owned(),
            json!({}),
            "missing ready_for_pickup_time",
        ),
        (
            "/v1/delivery/order/u-5/accept".to_owned(),
            json!({"ready_for_pickup_time": "2026-03-01 12:20"}),
            "RFC 3339",
        ),
    ] {
        let (status, body) = send(&fake, "POST", &path, &h, Some(bad.clone())).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("invalid_payload")),
            "{bad}"
        );
        assert!(
            body["message"].as_str().unwrap().contains(names),
            "{bad}: {body}"
        );
    }
    let (status, _) = send(&fake, "POST", "/v1/delivery/order/u-5/ready", &h, None).await;
    assert_eq!(status, 400, "ready takes {{}}");
    let r = client()
        .post(format!(
            "{}/v1/eats/orders/u-5/accept_pos_order",
            fake.url()
        ))
        .header("authorization", &auth)
        .body(r#"{"reason":"accepted"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        400,
        "JSON without Content-Type: application/json"
    );
    assert_eq!(fake.decision(Platform::Ubereats, "u-5"), None);

    let (status, body) = send(
        &fake,
        "POST",
        "/v1/eats/orders/u-5/accept_pos_order",
        &[("authorization", "Bearer KA.unknown")],
        Some(json!({"reason": "accepted"})),
    )
    .await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));
}

#[tokio::test]
async fn fake_provider_wolt_status_calls() {
    let fake = wolt_fake().await;
    fake.add_uber_client("uber-app", "uber-secret");
    let (_, issued) = wolt_refresh(&fake, "wolt-secret", "rt-0").await;
    let auth = bearer(issued["access_token"].as_str().unwrap());
    let h = [("authorization", auth.as_str())];

    assert_eq!(
        send(&fake, "PUT", "/orders/w-1/accept", &h, None).await,
        (202, Value::Null)
    );
    let (status, body) = send(&fake, "PUT", "/orders/w-1/accept", &h, None).await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (409, Some("INVALID_ORDER_STATE"))
    );
    let reject = json!({"reason": "Sold out", "code": "ITEMS_UNAVAILABLE"});
    assert_eq!(
        send(&fake, "PUT", "/orders/w-1/reject", &h, Some(reject.clone()))
            .await
            .0,
        409
    );
    assert_eq!(
        send(&fake, "PUT", "/orders/w-1/ready", &h, None).await,
        (202, Value::Null)
    );
    assert_eq!(
        send(&fake, "PUT", "/orders/w-1/delivered", &h, None)
            .await
            .0,
        202
    );

    let pickup = json!({"adjusted_pickup_time": "2026-03-01T12:20:00.631Z"});
    assert_eq!(
        send(&fake, "PUT", "/orders/w-2/accept", &h, Some(pickup))
            .await
            .0,
        202
    );
    let delivery = json!({"total_delivery_time": NOW});
    assert_eq!(
        send(
            &fake,
            "PUT",
            "/orders/w-3/self-delivery/accept",
            &h,
            Some(delivery)
        )
        .await
        .0,
        202
    );
    assert_eq!(
        send(&fake, "PUT", "/orders/w-3/accept", &h, None).await.0,
        409
    );
    assert_eq!(
        send(&fake, "PUT", "/orders/w-4/confirm-preorder", &h, None).await,
        (204, Value::Null)
    );
    assert_eq!(
        send(&fake, "PUT", "/orders/w-5/reject", &h, Some(reject))
            .await
            .0,
        202
    );
    assert_eq!(
        fake.decision(Platform::Wolt, "w-5"),
        Some(Decision::Rejected)
    );
    let null_code = json!({"reason": "Closing", "code": null});
    assert_eq!(
        send(&fake, "PUT", "/orders/w-6/reject", &h, Some(null_code))
            .await
            .0,
        202
    );

    for (path, bad) in [
        ("/orders/w-7/reject", Some(json!({"code": "GENERIC"}))),
        (
            "/orders/w-7/reject",
            Some(json!({"reason": "", "code": "GENERIC"})),
        ),
        (
            "/orders/w-7/reject",
            Some(json!({"reason": "x", "code": "CLOSED"})),
        ),
        ("/orders/w-7/reject", None),
        (
            "/orders/w-7/accept",
            Some(json!({"adjusted_pickup_time": 15})),
        ),
        ("/orders/w-7/accept", Some(json!({"eta_minutes": 15}))),
        ("/orders/w-7/ready", Some(json!({}))),
        ("/orders/w-7/confirm-preorder", Some(json!({}))),
    ] {
        let (status, body) = send(&fake, "PUT", path, &h, bad.clone()).await;
        assert_eq!(
            (status, body["error_code"].as_str()),
            (400, Some("INVALID_PAYLOAD")),
            "{path} {bad:?}"
        );
    }
    assert_eq!(
        send(&fake, "POST", "/orders/w-7/accept", &h, None).await.0,
        405
    );
    let uber = bearer(&uber_token(&fake).await);
    let (status, body) = send(
        &fake,
        "PUT",
        "/orders/w-7/accept",
        &[("authorization", &uber)],
        None,
    )
    .await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (401, Some("UNAUTHORIZED"))
    );
    assert_eq!(
        send(&fake, "PUT", "/orders/w-7/accept", &[], None).await.0,
        401
    );
    assert_eq!(fake.decision(Platform::Wolt, "w-7"), None);
}

#[tokio::test]
async fn fake_provider_just_eat_status_calls_with_its_keys() {
    let fake = wolt_fake().await;
    fake.add_justeat_key("je-key");
    let flyt = [("x-flyt-api-key", "je-key")];
    let success = json!({"happenedAt": NOW});
    assert_eq!(
        send(
            &fake,
            "POST",
            "/order/je-1/sent-to-pos-success",
            &flyt,
            Some(success.clone())
        )
        .await,
        (204, Value::Null)
    );
    let (status, body) = send(
        &fake,
        "POST",
        "/order/je-1/sent-to-pos-success",
        &flyt,
        Some(success.clone()),
    )
    .await;
    assert_eq!(
        (status, body["errors"][0]["errorCode"].as_str()),
        (409, Some("Conflict"))
    );
    let failed =
        json!({"happenedAt": NOW, "errorCode": "MENU_ERROR", "errorMessage": "Unknown PLU"});
    assert_eq!(
        send(
            &fake,
            "POST",
            "/order/je-1/sent-to-pos-failed",
            &flyt,
            Some(failed.clone())
        )
        .await
        .0,
        409
    );
    assert_eq!(
        send(
            &fake,
            "POST",
            "/order/je-2/sent-to-pos-failed",
            &flyt,
            Some(failed)
        )
        .await
        .0,
        204
    );
    let bad_code = json!({"happenedAt": NOW, "errorCode": "SOLD_OUT", "errorMessage": "x"});
    let (status, body) = send(
        &fake,
        "POST",
        "/order/je-3/sent-to-pos-failed",
        &flyt,
        Some(bad_code),
    )
    .await;
    assert_eq!(
        (status, body["errors"][0]["errorCode"].as_str()),
        (400, Some("BadRequest"))
    );
    for wrong in [
        vec![("x-flyt-api-key", "other")],
        vec![("authorization", "JE-API-KEY je-key")],
        vec![],
    ] {
        let (status, body) = send(
            &fake,
            "POST",
            "/order/je-3/sent-to-pos-success",
            &wrong,
            Some(success.clone()),
        )
        .await;
        assert_eq!(
            (status, body["errors"][0]["errorCode"].as_str()),
            (401, Some("Unauthorized")),
            "{wrong:?}"
        );
        assert!(body["faultId"].is_string());
    }

    // The partner API: accept and reject share Wolt's paths.
    let key = [("authorization", "JE-API-KEY je-key")];
    let accept = json!({"TimeAcceptedFor": "2026-03-01T12:45:00+01:00"});
    assert_eq!(
        send(
            &fake,
            "PUT",
            "/orders/je-4/accept",
            &key,
            Some(accept.clone())
        )
        .await,
        (200, Value::Null)
    );
    let (status, body) = send(
        &fake,
        "PUT",
        "/orders/je-4/reject",
        &key,
        Some(json!({"Message": "x"})),
    )
    .await;
    assert_eq!(
        (status, body["errors"][0]["errorCode"].as_str()),
        (409, Some("Conflict"))
    );
    assert_eq!(
        fake.decision(Platform::Justeat, "je-4"),
        Some(Decision::Accepted)
    );
    assert_eq!(fake.decision(Platform::Wolt, "je-4"), None);
    for call in ["readyforcollection", "dispatchedtocustomer", "complete"] {
        let path = format!("/orders/je-4/{call}");
        assert_eq!(
            send(&fake, "POST", &path, &key, None).await.0,
            204,
            "{call}"
        );
    }
    assert_eq!(
        send(
            &fake,
            "PUT",
            "/orders/je-4/duedate",
            &key,
            Some(json!({"DueDate": NOW}))
        )
        .await
        .0,
        200
    );
    for (path, bad) in [
        ("/orders/je-5/reject", json!({"message": "lower case"})),
        ("/orders/je-5/accept", json!({})),
        ("/orders/je-5/duedate", json!({"DueDate": "tomorrow"})),
    ] {
        assert_eq!(
            send(&fake, "PUT", path, &key, Some(bad.clone())).await.0,
            400,
            "{bad}"
        );
    }
    let (status, _) = send(
        &fake,
        "PUT",
        "/orders/je-5/accept",
        &[("authorization", "JE-API-KEY other")],
        Some(accept.clone()),
    )
    .await;
    assert_eq!(status, 401);
    // A Bearer token makes the same path Wolt's.
    let (status, body) = send(
        &fake,
        "PUT",
        "/orders/je-5/accept",
        &[("authorization", "Bearer x")],
        Some(accept),
    )
    .await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (401, Some("UNAUTHORIZED"))
    );

    let calls = fake.status_calls_for("je-4");
    assert_eq!(calls[0].provider, "justeat");
    assert_eq!(calls[0].endpoint, StatusEndpoint::JustEatAccept);
    assert_eq!(calls[0].auth.as_deref(), Some("JE-API-KEY je-key"));
    let jet = &fake.status_calls_for("je-1")[0];
    assert_eq!(
        (jet.endpoint, jet.auth.as_deref()),
        (StatusEndpoint::JetSentToPosSuccess, Some("je-key"))
    );
}

#[tokio::test]
async fn fake_provider_faults_answer_status_calls_and_are_recorded() {
    let fake = FakeProvider::start().await.unwrap();
    fake.add_deliveroo_client("roo-app", "roo-secret");
    let (_, body) = deliveroo_mint(&fake.deliveroo_token_url(), "roo-secret").await;
    let auth = bearer(body["access_token"].as_str().unwrap());
    let h = [("authorization", auth.as_str())];
    fake.fault(Matcher::Status(Platform::Wolt), FaultReply::status(500));
    fake.fault(
        Matcher::Status(Platform::Deliveroo),
        FaultReply::status(503).with_retry_after("1"),
    );
    fake.fault(
        Matcher::PathPrefix("/order/v1/orders/gb:1/prep_stage".to_owned()),
        FaultReply::status(429),
    );
    let accepted = json!({"status": "accepted"});
    assert_eq!(
        send(
            &fake,
            "PATCH",
            "/order/v1/orders/gb:1",
            &h,
            Some(accepted.clone())
        )
        .await
        .0,
        503
    );
    assert_eq!(
        fake.decision(Platform::Deliveroo, "gb:1"),
        None,
        "a faulted call decides nothing"
    );
    assert_eq!(
        send(&fake, "PATCH", "/order/v1/orders/gb:1", &h, Some(accepted))
            .await
            .0,
        204
    );
    let stage = json!({"stage": "collected", "occurred_at": NOW});
    assert_eq!(
        send(
            &fake,
            "POST",
            "/order/v1/orders/gb:1/prep_stage",
            &h,
            Some(stage.clone())
        )
        .await
        .0,
        429
    );
    assert_eq!(
        send(
            &fake,
            "POST",
            "/order/v1/orders/gb:1/prep_stage",
            &h,
            Some(stage)
        )
        .await
        .0,
        204
    );
    assert_eq!(
        fake.faults_pending(),
        1,
        "the Wolt fault waits for a Wolt call"
    );

    fake.fault(Matcher::Status(Platform::Deliveroo), FaultReply::hang());
    let short = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let err = short
        .post(format!("{}/order/v1/orders/gb:1/sync_status", fake.url()))
        .header("authorization", &auth)
        .json(&json!({"status": "succeeded", "occurred_at": NOW}))
        .send()
        .await
        .expect_err("a hanging fault never answers");
    assert!(err.is_timeout(), "{err}");

    let answered: Vec<_> = fake
        .status_calls_for("gb:1")
        .iter()
        .map(|c| c.answered)
        .collect();
    assert_eq!(answered, [503, 204, 429, 204, 0]);
    let calls = fake.status_calls_for("gb:1");
    assert_eq!(calls[0].body, Some(json!({"status": "accepted"})));
    assert_eq!(calls[0].auth.as_deref(), Some(auth.as_str()));
}

#[tokio::test]
async fn fake_provider_wait_status_calls_wakes_on_the_call_or_times_out() {
    let fake = FakeProvider::start().await.unwrap();
    fake.add_justeat_key("je-key");
    let err = fake
        .wait_status_calls(1, Duration::from_millis(100))
        .await
        .expect_err("no call came");
    assert!(err.to_string().contains("0 status calls"), "{err}");

    let url = format!("{}/order/je-1/sent-to-pos-success", fake.url());
    let waiting = fake.wait_status_calls_for("je-1", 2, STEP);
    let sending = async {
        for _ in 0..2 {
            client()
                .post(&url)
                .header("x-flyt-api-key", "je-key")
                .json(&json!({"happenedAt": NOW}))
                .send()
                .await
                .unwrap();
        }
    };
    let (calls, ()) = tokio::join!(waiting, sending);
    let answered: Vec<_> = calls.unwrap().iter().map(|c| c.answered).collect();
    assert_eq!(answered, [204, 409]);
    let err = fake
        .wait_status_calls_for("je-2", 1, Duration::from_millis(50))
        .await
        .expect_err("none for je-2");
    assert!(err.to_string().contains("\"je-2\""), "{err}");
}

#[tokio::test]
async fn fake_provider_http_control_routes_for_status_providers() {
    let fake = FakeProvider::start().await.unwrap();
    let c = client();
    let control = |route: &str, body: Value| {
        c.post(format!("{}/_fake/{route}", fake.url()))
            .json(&body)
            .send()
    };
    let r = control(
        "talabat-users",
        json!({"username": "tb-user", "password": "tb-pass"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 204);
    let r = control(
        "deliveroo-clients",
        json!({"client_id": "roo-app", "client_secret": "roo-secret"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 204);
    let r = control("justeat-keys", json!({"key": "je-key"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (status, body) = json_of(control("justeat-keys", json!({"key": ""})).await.unwrap()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("key must be a non-empty string"))
    );
    let (status, body) = json_of(
        control("talabat-users", json!({"username": "u"}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("password must be a non-empty string"))
    );
    let (status, body) = json_of(control("orders/talabat/v1/t-1", json!({})).await.unwrap()).await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("pushed"), "{body}");
    let (status, body) = json_of(
        control(
            "faults",
            json!({"provider": "justeat", "endpoint": "token", "status": 500}),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("justeat has no token endpoint"))
    );
    let r = control(
        "faults",
        json!({"provider": "talabat", "endpoint": "status", "status": 502}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 204);

    let (_, login) = talabat_login(&fake, "tb-user", "tb-pass").await;
    let auth = bearer(login["access_token"].as_str().unwrap());
    let h = [("authorization", auth.as_str())];
    let accepted = json!({"status": "order_accepted", "acceptanceTime": NOW});
    assert_eq!(
        send(
            &fake,
            "POST",
            "/v2/order/status/t-1",
            &h,
            Some(accepted.clone())
        )
        .await
        .0,
        502
    );
    assert_eq!(
        send(
            &fake,
            "POST",
            "/v2/order/status/t-1",
            &h,
            Some(accepted.clone())
        )
        .await
        .0,
        200
    );
    let (status, _) = send(
        &fake,
        "POST",
        "/order/je-1/sent-to-pos-success",
        &[("x-flyt-api-key", "je-key")],
        Some(json!({"happenedAt": NOW})),
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = deliveroo_mint(&fake.deliveroo_token_url(), "roo-secret").await;
    assert_eq!(status, 200);

    let (status, calls) = json_of(
        c.get(format!("{}/_fake/status-calls", fake.url()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        calls,
        json!([
            {"provider": "talabat", "endpoint": "TalabatOrderStatus", "order_id": "t-1", "method": "POST",
             "path": "/v2/order/status/t-1", "auth": "Bearer", "body": accepted, "answered": 502},
            {"provider": "talabat", "endpoint": "TalabatOrderStatus", "order_id": "t-1", "method": "POST",
             "path": "/v2/order/status/t-1", "auth": "Bearer", "body": accepted, "answered": 200},
            {"provider": "justeat", "endpoint": "JetSentToPosSuccess", "order_id": "je-1", "method": "POST",
             "path": "/order/je-1/sent-to-pos-success", "auth": "X-Flyt-Api-Key", "body": {"happenedAt": NOW},
             "answered": 204},
        ])
    );
    assert!(
        !calls.to_string().contains("je-key"),
        "no key in the control view"
    );
    let (_, only) = json_of(
        c.get(format!("{}/_fake/status-calls?order_id=je-1", fake.url()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(only, json!([calls[2]]));

    let stats = fake.stats();
    assert_eq!(stats["mints"], json!({"talabat": 1, "deliveroo": 1}));
    assert_eq!(
        stats["live_access_tokens"],
        json!({"talabat": 1, "deliveroo": 1})
    );
    assert_eq!(stats["status_calls"], json!({"justeat": 1, "talabat": 2}));
    assert!(
        !stats
            .to_string()
            .contains(login["access_token"].as_str().unwrap())
    );
}

#[test]
fn fake_provider_status_paths_classify_back_to_their_endpoint() {
    for e in StatusEndpoint::ALL {
        let je = matches!(
            e,
            StatusEndpoint::JustEatAccept | StatusEndpoint::JustEatReject
        );
        let id = (!e.id_in_body()).then(|| "id/1".to_owned());
        assert_eq!(
            http::classify(&e.path("id%2F1"), je),
            Some((Endpoint::Status(e), id)),
            "{e:?}"
        );
        let method = match e.platform() {
            Platform::Wolt | Platform::Glovo => "PUT",
            Platform::Doordash => "PATCH",
            _ => e.method(),
        };
        assert_eq!(e.method(), method);
        assert!((200..300).contains(&e.success()), "{e:?}");
    }
    // The pull paths keep their meaning.
    assert_eq!(
        http::classify("/v2/orders/w-1", false),
        Some((
            Endpoint::Order(Platform::Wolt, Api::V2),
            Some("w-1".to_owned())
        ))
    );
    assert_eq!(
        http::classify("/orders/w-1", true),
        Some((
            Endpoint::Order(Platform::Wolt, Api::V1),
            Some("w-1".to_owned())
        ))
    );
    assert_eq!(http::classify("/orders//accept", false), None);
    assert_eq!(http::classify("/v1/eats/orders/x/approve", false), None);
}

#[test]
fn fake_provider_rfc3339_check() {
    for good in [
        "2026-03-01T12:00:00Z",
        "2026-03-01t12:00:00z",
        "2026-03-01T12:00:00.123456789Z",
        "2026-03-01T12:00:00+01:00",
        "2024-02-29T23:59:60-05:30",
    ] {
        assert!(status::is_rfc3339(good), "{good}");
    }
    for bad in [
        "",
        "2026-03-01",
        "2026-03-01 12:00:00Z",
        "2026-03-01T12:00:00",
        "2026-03-01T12:00Z",
        "2026-03-01T12:00:00.Z",
        "2026-03-01T12:00:00+0100",
        "2026-03-01T12:00:00+01:00 ",
        "2025-02-29T12:00:00Z",
        "2026-13-01T12:00:00Z",
        "2026-04-31T12:00:00Z",
        "2026-03-01T24:00:00Z",
        "2026-03-01T12:00:00+24:00",
        "1772366400",
    ] {
        assert!(!status::is_rfc3339(bad), "{bad}");
    }
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A DoorDash JWT of `dev-1`/`key-1` issued at `iat`, living `life` s.
fn doordash_jwt(key: &[u8], kid: &str, iat: i64, life: i64) -> String {
    shared::tokens::doordash::sign(
        &shared::tokens::doordash::Claims {
            aud: "doordash".into(),
            iss: "dev-1".into(),
            kid: kid.into(),
            exp: iat + life,
            iat,
        },
        key,
    )
}

#[tokio::test]
async fn fake_provider_doordash_takes_only_its_own_jwts() {
    let fake = FakeProvider::start().await.unwrap();
    // base64url of "secret?>".
    fake.add_doordash_key("dev-1", "key-1", "c2VjcmV0Pz4");
    let key = b"secret?>";
    let now = unix_now();
    let good = bearer(&doordash_jwt(key, "key-1", now, 300));
    let h = |auth: &str| {
        vec![
            ("authorization", auth.to_owned()),
            ("auth-version", "v2".to_owned()),
        ]
    };
    let call = |auth: Vec<(&'static str, String)>, path: &'static str, body: Value| {
        let fake = &fake;
        async move {
            let headers: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
            send(fake, "PATCH", path, &headers, Some(body)).await
        }
    };
    let confirm =
        json!({"merchant_supplied_id": "wh-1", "order_status": "success", "prep_time": NOW});
    assert_eq!(
        call(h(&good), "/api/v1/orders/dd-1", confirm.clone()).await,
        (202, Value::Null)
    );
    assert_eq!(
        fake.decision(Platform::Doordash, "dd-1"),
        Some(Decision::Accepted)
    );
    // Its documented "already processed or expired".
    let (status, body) = call(h(&good), "/api/v1/orders/dd-1", confirm.clone()).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (400, Some("Order already processed or expired"))
    );
    let fail =
        json!({"merchant_supplied_id": "wh-2", "order_status": "fail", "failure_reason": "Closed"});
    assert_eq!(call(h(&good), "/api/v1/orders/dd-2", fail).await.0, 202);
    assert_eq!(
        fake.decision(Platform::Doordash, "dd-2"),
        Some(Decision::Rejected)
    );
    // Every way a JWT is not DoorDash's: 401, nothing decided.
    let forged = [
        bearer(&doordash_jwt(b"other key", "key-1", now, 300)),
        bearer(&doordash_jwt(key, "key-2", now, 300)),
        bearer(&doordash_jwt(key, "key-1", now - 1000, 300)),
        bearer(&doordash_jwt(key, "key-1", now + 600, 300)),
        bearer(&doordash_jwt(key, "key-1", now, 1801)),
        doordash_jwt(key, "key-1", now, 300),
    ];
    for auth in &forged {
        let (status, _) = call(h(auth), "/api/v1/orders/dd-3", confirm.clone()).await;
        assert_eq!(status, 401, "{auth}");
    }
    let no_version = vec![("authorization", good.clone())];
    assert_eq!(
        call(no_version, "/api/v1/orders/dd-3", confirm.clone())
            .await
            .0,
        401
    );
    assert_eq!(fake.decision(Platform::Doordash, "dd-3"), None);
    // Ready once; the events and the cancellation check their bodies.
    let ready = json!({"merchant_supplied_id": "wh-1"});
    let path = "/api/v1/orders/dd-1/events/order_ready_for_pickup";
    assert_eq!(call(h(&good), path, ready.clone()).await.0, 202);
    assert_eq!(call(h(&good), path, ready.clone()).await.0, 400);
    assert_eq!(
        call(
            h(&good),
            "/api/v1/orders/dd-1/events/order_delivered",
            ready.clone()
        )
        .await
        .0,
        202
    );
    assert_eq!(
        call(
            h(&good),
            "/api/v1/orders/dd-1/events/order_picked_up",
            json!({})
        )
        .await
        .0,
        400
    );
    let cancel = |reason: &str| json!({"cancel_reason": reason, "cancel_details": "x"});
    assert_eq!(
        call(
            h(&good),
            "/api/v1/orders/dd-1/cancellation",
            cancel("TOO_BUSY")
        )
        .await
        .0,
        400
    );
    assert_eq!(
        call(
            h(&good),
            "/api/v1/orders/dd-1/cancellation",
            cancel("KITCHEN_BUSY")
        )
        .await
        .0,
        202
    );
    let calls = fake.status_calls_for("dd-1");
    assert_eq!(calls[0].endpoint, StatusEndpoint::DoordashConfirm);
    assert_eq!(calls[0].auth.as_deref(), Some(good.as_str()));
    assert_eq!(
        calls[0].extra_headers,
        vec![("auth-version".to_owned(), "v2".to_owned())]
    );
    assert_eq!(calls[0].to_json()["auth"], "Bearer");
}

#[tokio::test]
async fn fake_provider_glovo_takes_its_raw_token_and_the_store() {
    let fake = FakeProvider::start().await.unwrap();
    fake.add_glovo_token("glovo-partner-token");
    let raw = [("authorization", "glovo-partner-token")];
    let legacy = "/webhook/stores/store-7/orders/g-1/status";
    let status = |s: &str| json!({ "status": s });
    assert_eq!(
        send(&fake, "PUT", legacy, &raw, Some(status("ACCEPTED"))).await,
        (204, Value::Null)
    );
    assert_eq!(
        fake.decision(Platform::Glovo, "g-1"),
        Some(Decision::Accepted)
    );
    assert_eq!(
        send(&fake, "PUT", legacy, &raw, Some(status("ACCEPTED")))
            .await
            .0,
        409
    );
    assert_eq!(
        send(&fake, "PUT", legacy, &raw, Some(status("READY_FOR_PICKUP")))
            .await
            .0,
        204
    );
    assert_eq!(
        send(&fake, "PUT", legacy, &raw, Some(status("REJECTED")))
            .await
            .0,
        400
    );
    // With a scheme, or another token: not Glovo's.
    for auth in ["Bearer glovo-partner-token", "other-token"] {
        let (code, body) = send(
            &fake,
            "PUT",
            legacy,
            &[("authorization", auth)],
            Some(status("ACCEPTED")),
        )
        .await;
        assert_eq!(
            (code, body["code"].as_str()),
            (401, Some("UNAUTHORIZED")),
            "{auth}"
        );
    }
    // The integrations API names the store in a header.
    let store = [
        ("authorization", "glovo-partner-token"),
        ("glovo-store-address-external-id", "store-7"),
    ];
    let soon = time::OffsetDateTime::now_utc() + Duration::from_secs(300);
    let at = |t: time::OffsetDateTime| json!({"committedPreparationTime": t.format(&time::format_description::well_known::Rfc3339).unwrap()});
    let accept = "/api/v0/integrations/orders/g-2/accept";
    let (code, body) = send(&fake, "PUT", accept, &raw, Some(at(soon))).await;
    assert_eq!(
        (code, body["message"].as_str()),
        (400, Some("missing header Glovo-Store-Address-External-Id"))
    );
    let late = time::OffsetDateTime::now_utc() + Duration::from_secs(20 * 60);
    assert_eq!(
        send(&fake, "PUT", accept, &store, Some(at(late))).await.0,
        400
    );
    assert_eq!(
        send(&fake, "PUT", accept, &store, Some(at(soon))).await,
        (204, Value::Null)
    );
    let ready = "/api/v0/integrations/orders/g-2/ready_for_pickup";
    assert_eq!(
        send(&fake, "PUT", ready, &store, Some(json!({}))).await.0,
        400
    );
    assert_eq!(
        send(&fake, "PUT", ready, &store, None).await,
        (204, Value::Null)
    );
    let calls = fake.status_calls_for("g-2");
    assert_eq!(
        calls.last().unwrap().extra_headers,
        vec![(
            "glovo-store-address-external-id".to_owned(),
            "store-7".to_owned()
        )]
    );
    // The raw token never reaches the control API's listing.
    assert_eq!(calls.last().unwrap().to_json()["auth"], "token");
}

#[tokio::test]
async fn fake_provider_grab_mints_from_json_and_plays_its_order_calls() {
    let fake = FakeProvider::start().await.unwrap();
    fake.add_grab_client("grab-app", "grab-secret");
    let mint = |body: Value| {
        let url = fake.grab_token_url();
        async move { json_of(client().post(url).json(&body).send().await.unwrap()).await }
    };
    let creds = json!({"client_id": "grab-app", "client_secret": "grab-secret",
        "grant_type": "client_credentials", "scope": "food.partner_api"});
    let (status, token) = mint(creds.clone()).await;
    assert_eq!(status, 200, "{token}");
    assert_eq!(
        (token["token_type"].as_str(), token["expires_in"].as_u64()),
        (Some("Bearer"), Some(604_799))
    );
    let token = token["access_token"].as_str().unwrap().to_owned();
    let mut wrong = creds.clone();
    wrong["client_secret"] = json!("nope");
    assert_eq!(
        mint(wrong).await,
        (
            401,
            json!({"error": "invalid_client", "error_description": "unknown client or wrong secret"})
        )
    );
    let mut no_scope = creds.clone();
    no_scope.as_object_mut().unwrap().remove("scope");
    assert_eq!(mint(no_scope).await.0, 400);
    let form = client()
        .post(fake.grab_token_url())
        .form(&[("client_id", "grab-app"), ("client_secret", "grab-secret")])
        .send()
        .await
        .unwrap();
    assert_eq!(form.status().as_u16(), 400);
    assert_eq!(fake.mints_by(Platform::Grab, "grab-app"), 1);

    let auth = bearer(&token);
    let h = [("authorization", auth.as_str())];
    let prepare = json!({"orderID": "gr-1", "toState": "Accepted"});
    assert_eq!(
        send(
            &fake,
            "POST",
            "/partner/v1/order/prepare",
            &h,
            Some(prepare.clone())
        )
        .await,
        (204, Value::Null)
    );
    assert_eq!(
        fake.decision(Platform::Grab, "gr-1"),
        Some(Decision::Accepted)
    );
    let (status, body) = send(
        &fake,
        "POST",
        "/partner/v1/order/prepare",
        &h,
        Some(prepare),
    )
    .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (400, Some("invalid order state"))
    );
    let mark = json!({"orderID": "gr-1", "markStatus": 1});
    assert_eq!(
        send(
            &fake,
            "POST",
            "/partner/v1/orders/mark",
            &h,
            Some(mark.clone())
        )
        .await
        .0,
        204
    );
    let (status, body) = send(&fake, "POST", "/partner/v1/orders/mark", &h, Some(mark)).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (400, Some("order already marked ready"))
    );
    let later = json!({"orderID": "gr-1", "newOrderReadyTime": NOW});
    assert_eq!(
        send(&fake, "PUT", "/partner/v1/order/readytime", &h, Some(later))
            .await
            .0,
        204
    );
    let cancel = |code: u64| json!({"orderID": "gr-1", "merchantID": "1-CYN", "cancelCode": code});
    assert_eq!(
        send(
            &fake,
            "PUT",
            "/partner/v1/order/cancel",
            &h,
            Some(cancel(9999))
        )
        .await
        .0,
        400
    );
    assert_eq!(
        send(
            &fake,
            "PUT",
            "/partner/v1/order/cancel",
            &h,
            Some(cancel(1003))
        )
        .await,
        (200, Value::Null)
    );
    assert_eq!(
        send(
            &fake,
            "PUT",
            "/partner/v1/order/cancel",
            &h,
            Some(cancel(1003))
        )
        .await
        .0,
        409
    );
    // Another provider's token, or none: 401.
    let (status, _) = send(
        &fake,
        "POST",
        "/partner/v1/orders/mark",
        &[("authorization", "Bearer KA.nope")],
        Some(json!({"orderID": "gr-2", "markStatus": 1})),
    )
    .await;
    assert_eq!(status, 401);
    // The order id came from the bodies.
    let calls = fake.status_calls_for("gr-1");
    assert_eq!(calls.len(), 8);
    assert!(calls.iter().all(|c| c.provider == "grab"));
}

/// A Keeta call's body, signed for `url` with `secret`.
fn keeta_signed(url: &str, mut body: Value, secret: &str) -> Value {
    let bytes = serde_json::to_vec(&body).unwrap();
    let params = shared::verify::keeta::json_params(&bytes).unwrap();
    let pairs: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    body["sig"] = json!(shared::verify::keeta::signature(
        url,
        &pairs,
        &secret.to_owned().into()
    ));
    body
}

#[tokio::test]
async fn fake_provider_keeta_checks_the_sig_and_answers_in_the_body() {
    let fake = FakeProvider::start().await.unwrap();
    fake.add_keeta_app("3084446411", "SEKRET", "tok");
    let base = json!({
        "appId": 3_084_446_411_u64, "accessToken": "tok", "timestamp": unix_now(),
        "orderViewId": 1_234_567_890_123_456_789_i64, "shopId": 98765,
    });
    let post = |path: &'static str, body: Value| {
        let fake = &fake;
        async move { send(fake, "POST", path, &[], Some(body)).await }
    };
    let url = |path: &str| format!("{}{path}", fake.url());
    let ok = json!({"code": 0, "message": "success", "data": null});
    let confirm = keeta_signed(&url("/order/confirm"), base.clone(), "SEKRET");
    assert_eq!(
        post("/order/confirm", confirm.clone()).await,
        (200, ok.clone())
    );
    assert_eq!(
        fake.decision(Platform::Keeta, "1234567890123456789"),
        Some(Decision::Accepted)
    );
    assert_eq!(
        post("/order/confirm", confirm.clone()).await,
        (
            200,
            json!({"code": 209_000_000, "message": "order status is not in a valid state for confirm", "data": null})
        )
    );
    // Signed for another URL, with another secret, or with another token.
    let mut other_token = base.clone();
    other_token["accessToken"] = json!("stolen");
    for forged in [
        keeta_signed(&url("/order/prepare"), base.clone(), "SEKRET"),
        keeta_signed(&url("/order/confirm"), base.clone(), "WRONG"),
        keeta_signed(&url("/order/confirm"), other_token, "SEKRET"),
        base.clone(),
    ] {
        let (status, body) = post("/order/confirm", forged).await;
        assert_eq!((status, body["code"].as_i64()), (200, Some(115_000_203)));
    }
    // Ids as strings, or a cancel "other" without its reason: 109000000.
    let mut string_id = base.clone();
    string_id["orderViewId"] = json!("1234567890123456789");
    let (_, body) = post(
        "/order/confirm",
        keeta_signed(&url("/order/confirm"), string_id, "SEKRET"),
    )
    .await;
    assert_eq!(body["code"], 109_000_000);
    let mut other = base.clone();
    other["cancelCode"] = json!(500_000);
    let (_, body) = post(
        "/order/cancel",
        keeta_signed(&url("/order/cancel"), other.clone(), "SEKRET"),
    )
    .await;
    assert_eq!(body["code"], 109_000_000);
    other["cancelReason"] = json!("No driver");
    assert_eq!(
        post(
            "/order/cancel",
            keeta_signed(&url("/order/cancel"), other, "SEKRET")
        )
        .await,
        (200, ok.clone())
    );
    assert_eq!(
        post(
            "/order/prepare",
            keeta_signed(&url("/order/prepare"), base.clone(), "SEKRET")
        )
        .await,
        (200, ok)
    );
    let calls = fake.status_calls_for("1234567890123456789");
    assert!(calls.iter().all(|c| c.answered == 200 && c.auth.is_none()));
    assert_eq!(calls[0].endpoint, StatusEndpoint::KeetaConfirm);
    assert_eq!(calls[0].to_json()["body"]["accessToken"], "[redacted]");
}

#[tokio::test]
async fn fake_provider_control_routes_register_the_new_providers() {
    let fake = FakeProvider::start().await.unwrap();
    let control = |path: &'static str, body: Value| {
        let url = format!("{}/_fake/{path}", fake.url());
        async move {
            client()
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(control("glovo-tokens", json!({"token": "gt"})).await, 204);
    assert_eq!(
        control(
            "grab-clients",
            json!({"client_id": "g", "client_secret": "s"})
        )
        .await,
        204
    );
    assert_eq!(
        control(
            "doordash-keys",
            json!({"developer_id": "dev-1", "key_id": "key-1", "signing_secret": "c2VjcmV0Pz4"})
        )
        .await,
        204
    );
    assert_eq!(
        control(
            "doordash-keys",
            json!({"developer_id": "d", "key_id": "k", "signing_secret": "not base64!"})
        )
        .await,
        400
    );
    assert_eq!(
        control(
            "keeta-apps",
            json!({"app_id": "1", "app_secret": "s", "access_token": "t"})
        )
        .await,
        204
    );
    let raw = [("authorization", "gt")];
    assert_eq!(
        send(
            &fake,
            "PUT",
            "/webhook/stores/s/orders/g/status",
            &raw,
            Some(json!({"status": "ACCEPTED"}))
        )
        .await
        .0,
        204
    );
    let jwt = bearer(&doordash_jwt(b"secret?>", "key-1", unix_now(), 300));
    assert_eq!(
        send(
            &fake,
            "PATCH",
            "/api/v1/orders/d/cancellation",
            &[("authorization", jwt.as_str()), ("auth-version", "v2")],
            Some(json!({"cancel_reason": "OTHER"}))
        )
        .await
        .0,
        202
    );
    let stats = fake.stats();
    assert_eq!(stats["status_calls"], json!({"doordash": 1, "glovo": 1}));
    assert_eq!(stats["mints"]["grab"], 0);
}
