//! The backend's status API on the ingress (issue 14, point 1) over real
//! sockets against a real nats-server: what it stores on `STATUS`, what it
//! answers, and that it never answers 2xx for a decision JetStream did not
//! store. The order contexts are put into `ORDER_CONTEXT` by the test (the
//! transformer writes them in production).

use std::time::{Duration, SystemTime};

use async_nats::jetstream;
use canonical::status::{Action, Origin, StatusCommand};
use ingress::verify::direct;
use orderhub_tests::*;
use secrecy::SecretString;
use shared::Provider;
use shared::answer::OrderContext;
use tokio_util::sync::CancellationToken;

/// The tenant's signing secrets: an old one still valid (rotation) and the
/// current one.
const OLD_SECRET: &str = "whsec_c3RhdHVzLWFwaS1vbGQtc2VjcmV0";
const SECRET: &str = "whsec_c3RhdHVzLWFwaS1zaWduaW5nLXNlY3JldA==";
const FOREIGN_SECRET: &str = "whsec_c29tZW9uZS1lbHNlcy1zZWNyZXQ=";

const HUB: &str = r#"
[[tenant]]
id = "acme"
backend_url = "http://127.0.0.1:9/orders"
signing_secret_envs = ["ACME_OLD", "ACME_NEW"]

[[tenant]]
id = "bistro"
backend_url = "http://127.0.0.1:9/orders"

[[account]]
id = "acme-direct"
provider = "direct"
tenant = "acme"
secret_envs = ["WHSEC"]
status_url = "https://pos.acme.example/orderhub/status"

[[account]]
id = "acme-careem"
provider = "careem"
tenant = "acme"
secret_envs = ["S"]
currency = "JOD"

[[account]]
id = "acme-glovo"
provider = "glovo"
tenant = "acme"
secret_envs = ["S"]
[account.api]
base_url = "https://api.glovoapp.com"
client_secret_env = "S"

[ingress]
publish_timeout = "1s"
"#;

fn hub_config() -> shared::config::HubConfig {
    shared::config::HubConfig::from_toml(HUB, "test", &|name| {
        Some(
            match name {
                "ACME_OLD" => OLD_SECRET,
                "ACME_NEW" | "WHSEC" => SECRET,
                _ => "test-secret",
            }
            .to_owned(),
        )
    })
    .expect("valid test hub")
}

struct Hub {
    nats: NatsServer,
    js: jetstream::Context,
    base: String,
    ops: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

async fn start() -> anyhow::Result<Hub> {
    let nats = NatsServer::start()?;
    let js = jetstream::new(nats.client().await?);
    let args = ingress::IngressArgs {
        listen_addr: "127.0.0.1:0".parse()?,
        header_read_timeout_ms: 2000,
        body_read_timeout_ms: 2000,
        shutdown_drain_ms: 2000,
    };
    let shutdown = CancellationToken::new();
    let running = tokio::time::timeout(
        STEP,
        ingress::start(
            &common_args(&nats.url(), 0),
            &args,
            hub_config(),
            shutdown.clone(),
        ),
    )
    .await??;
    Ok(Hub {
        nats,
        js,
        base: format!("http://{}", running.addr),
        ops: format!("http://{}", running.ops_addr),
        shutdown,
        task: running.task,
    })
}

impl Hub {
    async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(STEP, self.task).await??;
        Ok(())
    }

    fn url(&self, tenant: &str, provider: &str, order: &str) -> String {
        format!(
            "{}/api/tenants/{tenant}/orders/{provider}/{order}/status",
            self.base
        )
    }

    /// Puts an order's context where the transformer would.
    async fn put_context(
        &self,
        provider: Provider,
        account: &str,
        provider_order_id: &str,
    ) -> anyhow::Result<()> {
        let ctx: OrderContext = serde_json::from_value(serde_json::json!({
            "tenant": "acme",
            "provider": provider,
            "account": account,
            "provider_order_id": provider_order_id,
            "webhook_id": format!("wh-{provider_order_id}"),
            "display_code": null,
            "received_at": "2026-12-02T18:00:00Z",
            "answer_by": "2026-12-02T18:10:00Z",
            "api": null,
        }))?;
        let kv = tokio::time::timeout(STEP, self.js.get_key_value("ORDER_CONTEXT")).await??;
        tokio::time::timeout(STEP, kv.put(ctx.key(), serde_json::to_vec(&ctx)?.into())).await??;
        Ok(())
    }

    async fn status_messages(&self) -> anyhow::Result<Vec<jetstream::message::StreamMessage>> {
        tokio::time::timeout(STEP, stream_messages(&self.js, "STATUS")).await?
    }
}

fn secret(s: &str) -> SecretString {
    SecretString::from(s.to_owned())
}

/// Standard Webhooks headers for `body`, signed with `secret` at `at`.
fn signed_at(
    body: &[u8],
    secret_text: &str,
    id: &str,
    at: SystemTime,
) -> reqwest::header::HeaderMap {
    let h = direct::sign(body, &secret(secret_text), id, at).expect("sign");
    let mut out = reqwest::header::HeaderMap::new();
    for (k, v) in h.iter() {
        out.insert(
            reqwest::header::HeaderName::from_bytes(k.as_str().as_bytes()).unwrap(),
            reqwest::header::HeaderValue::from_bytes(v.as_bytes()).unwrap(),
        );
    }
    out.insert("content-type", "application/json".parse().unwrap());
    out
}

fn signed(body: &[u8], id: &str) -> reqwest::header::HeaderMap {
    signed_at(body, SECRET, id, SystemTime::now())
}

async fn post(
    url: &str,
    headers: reqwest::header::HeaderMap,
    body: &[u8],
) -> anyhow::Result<reqwest::Response> {
    Ok(reqwest::Client::new()
        .post(url)
        .headers(headers)
        .body(body.to_vec())
        .timeout(STEP)
        .send()
        .await?)
}

/// Status and body, as text.
async fn answer(r: reqwest::Response) -> anyhow::Result<(u16, String)> {
    let status = r.status().as_u16();
    Ok((status, String::from_utf8(r.bytes().await?.to_vec())?))
}

/// The status id of a decision about `ORDER_ID` of the direct account.
fn sha256_id(tenant: &str, webhook_id: &str) -> String {
    ingress::status::status_id(tenant, Provider::Direct, ORDER_ID, webhook_id)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

/// The provider order id carries `:` and `/` (percent-encoded in the path).
const ORDER_ID: &str = "pos:1/7";
const ORDER_PATH: &str = "pos%3A1%2F7";

#[tokio::test]
async fn a_decision_is_stored_once_and_a_resend_is_a_duplicate() -> anyhow::Result<()> {
    let hub = start().await?;
    hub.put_context(Provider::Direct, "acme-direct", ORDER_ID)
        .await?;
    let url = hub.url("acme", "direct", ORDER_PATH);
    let body = br#"{"action":"accept","ready_at":"2026-12-02T18:30:00Z"}"#;
    let status_id = sha256_id("acme", "msg_accept_1");
    let mut headers = signed(body, "msg_accept_1");
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    headers.insert("traceparent", traceparent.parse()?);
    let before = unix_now();
    let r = post(&url, headers, body).await?;
    let after = unix_now();
    assert_eq!(
        answer(r).await?,
        (
            202,
            format!(r#"{{"statusId":"{status_id}","status":"queued"}}"#)
        )
    );

    let msgs = hub.status_messages().await?;
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    assert_eq!(m.subject.as_str(), "status.direct.acme-direct");
    let header = |n: &str| m.headers.get(n).map(|v| v.as_str().to_owned());
    assert_eq!(header("Nats-Msg-Id"), Some(format!("status:{status_id}")));
    assert_eq!(header("Orderhub-Status-Id"), Some(status_id.clone()));
    assert_eq!(header("Orderhub-Tenant").as_deref(), Some("acme"));
    assert_eq!(header("Orderhub-Provider").as_deref(), Some("direct"));
    assert_eq!(header("Orderhub-Account").as_deref(), Some("acme-direct"));
    assert_eq!(header("traceparent").as_deref(), Some(traceparent));
    let stored: StatusCommand = serde_json::from_slice(&m.payload)?;
    let decided = stored.decided_at.unix_timestamp();
    assert!(
        (before..=after).contains(&decided),
        "decided_at {decided} outside {before}..={after}"
    );
    let expected = StatusCommand {
        schema: Default::default(),
        status_id: status_id.clone(),
        tenant: "acme".into(),
        provider: Provider::Direct,
        account: "acme-direct".into(),
        provider_order_id: ORDER_ID.into(),
        action: Action::Accept,
        reason: None,
        ready_at: stored.ready_at,
        unavailable_items: vec![],
        origin: Origin::Backend,
        decided_at: stored.decided_at,
        order_webhook_id: Some(format!("wh-{ORDER_ID}")),
    };
    assert_eq!(stored, expected);
    // 2026-12-02T18:30:00Z
    assert_eq!(
        stored.ready_at.map(|t| t.unix_timestamp()),
        Some(1_796_236_200)
    );
    let raw: serde_json::Value = serde_json::from_slice(&m.payload)?;
    assert_eq!(raw["schema"], "orderhub.status.v1");
    assert_eq!(raw["origin"], "backend");

    // The backend re-sends (say it missed the 202), signed again with the
    // old secret: the same id, 200, still one message.
    let again = signed_at(body, OLD_SECRET, "msg_accept_1", SystemTime::now());
    assert_eq!(
        answer(post(&url, again, body).await?).await?,
        (
            200,
            format!(r#"{{"statusId":"{status_id}","status":"duplicate"}}"#)
        )
    );
    assert_eq!(hub.status_messages().await?.len(), 1);

    // Another decision (another webhook-id) is a second message.
    let reject = br#"{"action":"reject","reason":{"code":"items_unavailable"},"unavailable_items":["plu-9"]}"#;
    let r = post(&url, signed(reject, "msg_reject_1"), reject).await?;
    assert_eq!(r.status(), 202);
    let msgs = hub.status_messages().await?;
    assert_eq!(msgs.len(), 2);
    let second: StatusCommand = serde_json::from_slice(&msgs[1].payload)?;
    assert_eq!(
        (
            second.status_id,
            second.action,
            second.reason.map(|r| r.code.as_str()),
            second.unavailable_items
        ),
        (
            sha256_id("acme", "msg_reject_1"),
            Action::Reject,
            Some("items_unavailable"),
            vec!["plu-9".to_owned()]
        )
    );

    let text = tokio::time::timeout(
        STEP,
        reqwest::get(format!("{}/metrics", hub.ops)).await?.text(),
    )
    .await??;
    for line in [
        "ingress_status_requests_total{provider=\"direct\",outcome=\"queued\"} 2",
        "ingress_status_requests_total{provider=\"direct\",outcome=\"duplicate\"} 1",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    hub.stop().await
}

#[tokio::test]
async fn every_field_error_comes_in_one_400() -> anyhow::Result<()> {
    let hub = start().await?;
    hub.put_context(Provider::Direct, "acme-direct", ORDER_ID)
        .await?;
    let url = hub.url("acme", "direct", ORDER_PATH);
    let body = br#"{"action":"cancel","reason":{"code":"sold_out"},"ready_at":"soon","unavailable_items":[""],"note":1}"#;
    let (status, text) = answer(post(&url, signed(body, "msg_bad_1"), body).await?).await?;
    assert_eq!(status, 400);
    let json: serde_json::Value = serde_json::from_str(&text)?;
    assert_eq!(
        json,
        serde_json::json!({
            "error": "invalid_request",
            "errors": [
                {"field": "reason.code", "message": "\"sold_out\" is not one of items_unavailable, store_closed, too_busy, address, other"},
                {"field": "ready_at", "message": "\"soon\" is not an RFC 3339 time (2026-12-02T18:30:00Z)"},
                {"field": "unavailable_items[0]", "message": "is blank"},
                {"field": "note", "message": "is not a field of a status request (action, reason, ready_at, unavailable_items)"},
            ]
        })
    );
    // Not JSON at all: one error naming the body.
    let junk = b"{\"action\":";
    let (status, text) = answer(post(&url, signed(junk, "msg_bad_2"), junk).await?).await?;
    assert_eq!(status, 400);
    let json: serde_json::Value = serde_json::from_str(&text)?;
    assert_eq!(json["errors"][0]["field"], "body");
    assert_eq!(json["errors"].as_array().map(Vec::len), Some(1));
    assert!(hub.status_messages().await?.is_empty());
    hub.stop().await
}

#[tokio::test]
async fn every_auth_failure_is_the_same_401() -> anyhow::Result<()> {
    let hub = start().await?;
    hub.put_context(Provider::Direct, "acme-direct", ORDER_ID)
        .await?;
    let body = br#"{"action":"accept"}"#;
    let acme = hub.url("acme", "direct", ORDER_PATH);
    let stale = SystemTime::now() - Duration::from_secs(10 * 60);
    let mut missing = signed(body, "msg_auth_5");
    missing.remove("webhook-signature");
    let cases = [
        (
            "bad signature",
            acme.clone(),
            signed_at(body, FOREIGN_SECRET, "msg_auth_1", SystemTime::now()),
        ),
        (
            "unknown tenant",
            hub.url("nobody", "direct", ORDER_PATH),
            signed(body, "msg_auth_2"),
        ),
        (
            "stale timestamp",
            acme.clone(),
            signed_at(body, SECRET, "msg_auth_3", stale),
        ),
        (
            "tenant without a secret",
            hub.url("bistro", "direct", ORDER_PATH),
            signed(body, "msg_auth_4"),
        ),
        ("missing header", acme.clone(), missing),
    ];
    let mut answers = Vec::new();
    for (what, url, headers) in cases {
        let r = post(&url, headers, body).await?;
        let content_type = r.headers().get("content-type").cloned();
        let retry_after = r.headers().get("retry-after").cloned();
        let (status, text) = answer(r).await?;
        answers.push((what, status, text, content_type, retry_after));
    }
    for (what, status, text, content_type, retry_after) in &answers {
        assert_eq!(
            (
                *status,
                text.as_str(),
                content_type.as_ref().map(|v| v.to_str().unwrap()),
                retry_after
            ),
            (
                401,
                r#"{"error":"unauthorized"}"#,
                Some("application/json"),
                &None
            ),
            "{what}"
        );
    }
    assert!(hub.status_messages().await?.is_empty());
    let text = tokio::time::timeout(
        STEP,
        reqwest::get(format!("{}/metrics", hub.ops)).await?.text(),
    )
    .await??;
    let line = "ingress_status_requests_total{provider=\"direct\",outcome=\"unauthorized\"} 5";
    assert!(text.contains(line), "missing {line:?} in\n{text}");
    hub.stop().await
}

#[tokio::test]
async fn an_order_the_hub_never_saw_is_404() -> anyhow::Result<()> {
    let hub = start().await?;
    hub.put_context(Provider::Direct, "acme-direct", ORDER_ID)
        .await?;
    // A context whose account is not configured (any more).
    hub.put_context(Provider::Direct, "acme-gone", "pos-gone")
        .await?;
    let body = br#"{"action":"accept"}"#;
    for (n, url) in [
        hub.url("acme", "direct", "pos-never-seen"),
        // The undecoded id is another order.
        hub.url("acme", "direct", "pos:1%252F7"),
        hub.url("acme", "direct", "pos-gone"),
    ]
    .iter()
    .enumerate()
    {
        let r = post(url, signed(body, &format!("msg_unknown_{n}")), body).await?;
        assert_eq!(
            answer(r).await?,
            (404, r#"{"error":"unknown_order"}"#.to_owned()),
            "{url}"
        );
    }
    // An unknown provider: no such route.
    let r = post(
        &hub.url("acme", "foodora", ORDER_PATH),
        signed(body, "msg_unknown_9"),
        body,
    )
    .await?;
    assert_eq!(r.status(), 404);
    assert!(hub.status_messages().await?.is_empty());
    hub.stop().await
}

#[tokio::test]
async fn an_action_the_provider_has_no_call_for_is_422() -> anyhow::Result<()> {
    let hub = start().await?;
    hub.put_context(Provider::Careem, "acme-careem", "C-1001")
        .await?;
    let body = br#"{"action":"accept"}"#;
    let r = post(
        &hub.url("acme", "careem", "C-1001"),
        signed(body, "msg_careem_1"),
        body,
    )
    .await?;
    assert_eq!(
        answer(r).await?,
        (
            422,
            r#"{"error":"unsupported_action","message":"careem has no call to accept this order"}"#
                .to_owned()
        )
    );
    assert!(hub.status_messages().await?.is_empty());
    hub.stop().await
}

/// Glovo has no reject or cancel API: the backend hears 422 at once,
/// nothing is stored.
#[tokio::test]
async fn a_glovo_reject_or_cancel_is_422() -> anyhow::Result<()> {
    let hub = start().await?;
    hub.put_context(Provider::Glovo, "acme-glovo", "G-1001")
        .await?;
    for (action, id) in [("reject", "msg_glovo_1"), ("cancel", "msg_glovo_2")] {
        let body = format!(r#"{{"action":"{action}","reason":{{"code":"too_busy"}}}}"#);
        let r = post(
            &hub.url("acme", "glovo", "G-1001"),
            signed(body.as_bytes(), id),
            body.as_bytes(),
        )
        .await?;
        assert_eq!(
            answer(r).await?,
            (
                422,
                format!(
                    r#"{{"error":"unsupported_action","message":"glovo has no call to {action} this order"}}"#
                )
            )
        );
    }
    assert!(hub.status_messages().await?.is_empty());
    hub.stop().await
}

#[tokio::test]
async fn without_nats_the_answer_is_503_and_nothing_is_stored() -> anyhow::Result<()> {
    let mut hub = start().await?;
    hub.put_context(Provider::Direct, "acme-direct", ORDER_ID)
        .await?;
    let url = hub.url("acme", "direct", ORDER_PATH);
    let body = br#"{"action":"ready"}"#;

    hub.nats.kill();
    let r = post(&url, signed(body, "msg_down_1"), body).await?;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(
        answer(r).await?.1,
        r#"{"error":"unavailable: nothing was accepted, retry later"}"#
    );

    hub.nats.restart()?;
    // Nothing half-stored: the stream is empty once NATS is back.
    let js = jetstream::new(hub.nats.client().await?);
    let msgs = tokio::time::timeout(STEP, stream_messages(&js, "STATUS")).await??;
    assert!(msgs.is_empty(), "{} stored", msgs.len());
    // The backend's retry with the same webhook-id is then stored once.
    let r = eventually(
        Duration::from_secs(30),
        "a 2xx after NATS is back",
        || async {
            let r = post(&url, signed(body, "msg_down_1"), body).await.ok()?;
            r.status().is_success().then_some(r)
        },
    )
    .await?;
    assert_eq!(
        answer(r).await?,
        (
            202,
            format!(
                r#"{{"statusId":"{}","status":"queued"}}"#,
                sha256_id("acme", "msg_down_1")
            )
        )
    );
    let msgs = tokio::time::timeout(STEP, stream_messages(&js, "STATUS")).await??;
    assert_eq!(msgs.len(), 1);
    hub.stop().await
}
