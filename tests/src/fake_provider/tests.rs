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
