//! The fetcher against a real nats-server and the fake provider API: Uber
//! Eats and Wolt notifications become the fixtures' canonical orders, the
//! fleet shares one token, and every way a provider API answers ends where
//! the issue says (fetched, retried after `Retry-After`, dead-lettered with
//! its class, bounded by the deadline).

use std::time::{Duration, Instant, SystemTime};

use async_nats::jetstream;
use orderhub_tests::fake_provider::{Api, FakeProvider, FaultReply, Matcher, Platform};
use orderhub_tests::fixtures::{GOLDEN_RECEIVED_AT, comparable};
use orderhub_tests::*;
use serde_json::Value;
use shared::Provider;
use shared::failure::FailureClass;
use shared::headers;

/// Every secret of the test configs (client ids, client secrets and Wolt's
/// first refresh token included).
const SECRET: &str = "whsec_dGVzdA==";

/// The fixtures' hub with every Uber Eats and Wolt account's API pointed at
/// the fake provider.
fn fixtures_hub(fake: &FakeProvider) -> shared::config::HubConfig {
    let text = std::fs::read_to_string(workspace().join("tests/fixtures/hub.toml"))
        .unwrap()
        .replace("http://127.0.0.1:9/provider", &fake.url());
    hub_of(&text)
}

/// A hub config whose every secret variable reads as [`SECRET`].
fn hub_of(text: &str) -> shared::config::HubConfig {
    shared::config::HubConfig::from_toml(text, "test", &|name| {
        Some(
            match name {
                "S_WOLT_V1" => WOLT_V1_SEED,
                "S_GRAB" => GRAB_TOKEN_KEY,
                "BAD" => "not-the-client-secret",
                _ => SECRET,
            }
            .to_owned(),
        )
    })
    .expect("test hub config is valid")
}

fn register(fake: &FakeProvider) {
    fake.add_uber_client(SECRET, SECRET);
    fake.add_wolt_venue(SECRET, SECRET, SECRET);
    fake.add_wolt_venue(SECRET, SECRET, WOLT_V1_SEED);
}

/// A small hub: one tenant, an Uber Eats and a Wolt account on the fake,
/// accounts that fail in their own ways, fast retries; `extra` goes into
/// the first two accounts' `[account.api]`.
fn small_hub(fake: &FakeProvider, extra: &str) -> shared::config::HubConfig {
    hub_of(&small_hub_text(fake, extra))
}

fn small_hub_text(fake: &FakeProvider, extra: &str) -> String {
    let url = fake.url();
    format!(
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
{extra}

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
{extra}

[[account]]
id = "acme-ubereats-noapi"
provider = "ubereats"
tenant = "acme"
secret_envs = ["S"]

[[account]]
id = "acme-ubereats-private"
provider = "ubereats"
tenant = "acme"
secret_envs = ["S"]
[account.api]
base_url = "https://10.20.30.40"
token_url = "{url}/oauth/v2/token"
client_id_env = "S"
client_secret_env = "S"

[[account]]
id = "acme-ubereats-badsecret"
provider = "ubereats"
tenant = "acme"
secret_envs = ["S"]
[account.api]
base_url = "{url}"
token_url = "{url}/oauth/v2/token"
client_id_env = "S"
client_secret_env = "BAD"

[[account]]
id = "acme-wolt-venue"
provider = "wolt"
tenant = "acme"
secret_envs = ["S"]
[account.api]
base_url = "{url}"
token_url = "{url}/oauth2/token"
client_id_env = "S"
client_secret_env = "S"
refresh_token_env = "S"
venue_id = "venue-1"

[provider_api]
allowed_private_destinations = ["127.0.0.0/8"]
request_timeout = "2s"
token_lease = "5s"
max_body_bytes = 4096
# Tests expire and refuse tokens right after minting them.
token_min_mint_interval = "0s"

[fetcher]
schedule = ["200ms", "400ms"]
max_deliver = 30
not_found_retries = 5
"#
    )
}

fn uber_notification(order: &str, event: &str) -> String {
    serde_json::json!({
        "event_id": format!("ev-{order}-{event}"),
        "event_time": 1718388131,
        "event_type": event,
        "meta": {"user_id": "store-1", "resource_id": order, "status": "pos"},
        "resource_href": format!("https://api.uber.com/v2/eats/order/{order}"),
    })
    .to_string()
}

/// A notification as the ingress stores it, on `account`'s raw subject.
async fn publish_notification(
    js: &jetstream::Context,
    provider: Provider,
    account: &str,
    webhook_id: &str,
    body: &[u8],
) -> anyhow::Result<()> {
    let mut h = async_nats::HeaderMap::new();
    h.insert("Nats-Msg-Id", format!("{provider}:{webhook_id}").as_str());
    h.insert(headers::WEBHOOK_ID, webhook_id);
    h.insert(headers::PROVIDER, provider.as_str());
    h.insert(headers::ACCOUNT, account);
    h.insert(headers::TENANT, "acme");
    h.insert(headers::RECEIVED_AT, GOLDEN_RECEIVED_AT);
    h.insert(
        headers::TRACEPARENT,
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    );
    let subject = shared::subjects::raw_webhook(provider, account);
    tokio::time::timeout(
        STEP,
        js.publish_with_headers(subject, h, bytes::Bytes::copy_from_slice(body)),
    )
    .await??
    .await?;
    Ok(())
}

/// An Uber Eats notification of `event` for `order`, to `acme-ubereats`.
async fn notify_uber(
    js: &jetstream::Context,
    order: &str,
    event: &str,
    webhook_id: &str,
) -> anyhow::Result<()> {
    let body = uber_notification(order, event);
    publish_notification(
        js,
        Provider::Ubereats,
        "acme-ubereats",
        webhook_id,
        body.as_bytes(),
    )
    .await
}

/// `n` fetcher replicas on the rig's server.
fn replicas(nats: &NatsServer, hub: &shared::config::HubConfig, n: usize) -> Vec<InProcessStage> {
    (0..n)
        .map(|_| InProcessStage::fetcher(&nats.url(), hub, test_token_key()))
        .collect()
}

/// The fetched orders in `WEBHOOKS`, as (subject, headers, body).
async fn fetched(
    js: &jetstream::Context,
) -> anyhow::Result<Vec<jetstream::message::StreamMessage>> {
    Ok(stream_messages(js, "WEBHOOKS")
        .await?
        .into_iter()
        .filter(|m| m.subject.starts_with("webhooks.fetched."))
        .collect())
}

async fn wait_fetched(
    js: &jetstream::Context,
    n: usize,
) -> anyhow::Result<Vec<jetstream::message::StreamMessage>> {
    eventually(
        Duration::from_secs(30),
        &format!("{n} fetched orders"),
        || async {
            let f = fetched(js).await.ok()?;
            (f.len() >= n).then_some(f)
        },
    )
    .await
}

/// A nats-server with the streams set up, the fake provider knowing the
/// test credentials, and the small hub on it.
struct Rig {
    nats: NatsServer,
    fake: FakeProvider,
    hub: shared::config::HubConfig,
    js: jetstream::Context,
}

impl Rig {
    /// With [`small_hub`] and `extra` in its accounts' `[account.api]`.
    async fn start(extra: &str) -> anyhow::Result<Rig> {
        let fake = FakeProvider::start().await?;
        register(&fake);
        let hub = small_hub(&fake, extra);
        Rig::with(fake, hub).await
    }

    async fn with(fake: FakeProvider, hub: shared::config::HubConfig) -> anyhow::Result<Rig> {
        let nats = NatsServer::start()?;
        let client = nats.client().await?;
        setup_streams(&client, &hub).await?;
        Ok(Rig {
            nats,
            fake,
            hub,
            js: jetstream::new(client),
        })
    }
}

#[tokio::test]
async fn every_notification_fixture_becomes_its_expected_order() -> anyhow::Result<()> {
    let fake = FakeProvider::start().await?;
    register(&fake);
    let loaded = fake.load_orders(&workspace().join("tests/fixtures"))?;
    let hub = fixtures_hub(&fake);
    let Rig {
        nats,
        fake,
        hub,
        js,
    } = Rig::with(fake, hub).await?;

    let fixtures: Vec<_> = fixtures::all()
        .into_iter()
        .filter(|f| f.provider.sends_notifications_only())
        .collect();
    assert!(
        fixtures.len() >= 8 && loaded >= fixtures.len(),
        "fixtures went missing: {} notifications, {loaded} fetched bodies",
        fixtures.len()
    );
    let mut apis = std::collections::BTreeSet::new();
    for (i, f) in fixtures.iter().enumerate() {
        let account = f
            .path_headers
            .get(headers::ACCOUNT)
            .cloned()
            .unwrap_or_else(|| format!("acme-{}", f.provider));
        publish_notification(&js, f.provider, &account, &format!("wh-{i}"), &f.body).await?;
    }
    let fetcher = InProcessStage::fetcher(&nats.url(), &hub, test_token_key());
    let transformer = InProcessStage::transformer(&nats.url(), &hub);

    let orders = eventually(Duration::from_secs(60), "every order", || async {
        let m = stream_messages(&js, "ORDERS").await.ok()?;
        (m.len() >= fixtures.len()).then_some(m)
    })
    .await;
    let dead = dead_letters(&js).await?;
    let orders = match orders {
        Ok(o) => o,
        Err(e) => anyhow::bail!(
            "{e}; dead letters: {:#?}",
            dead.iter()
                .map(|(d, _)| (&d.subject, &d.error))
                .collect::<Vec<_>>()
        ),
    };
    assert!(
        dead.is_empty(),
        "{:#?}",
        dead.iter().map(|(d, _)| &d.error).collect::<Vec<_>>()
    );
    assert_eq!(orders.len(), fixtures.len(), "one order per notification");
    for f in &fetched(&js).await? {
        apis.insert((
            f.subject.split('.').nth(2).unwrap().to_owned(),
            f.headers.get(headers::FETCHED_API).unwrap().to_string(),
        ));
    }
    assert_eq!(
        apis.into_iter().collect::<Vec<_>>(),
        [
            ("ubereats".to_owned(), "v1".to_owned()),
            ("ubereats".to_owned(), "v2".to_owned()),
            ("wolt".to_owned(), "v1".to_owned()),
            ("wolt".to_owned(), "v2".to_owned()),
        ],
        "both APIs of both providers were read"
    );
    for f in &fixtures {
        let want = comparable(f.expected.clone(), &f.expected);
        let found = orders.iter().any(|m| {
            let order: Value = serde_json::from_slice(&m.payload).unwrap();
            comparable(order, &f.expected) == want
        });
        assert!(found, "{}: no order matches {want:#}", f.name);
    }
    // One mint per provider app: the Uber token served every Uber order.
    assert_eq!(fake.mints(Platform::Ubereats), 1);
    fetcher.stop().await?;
    transformer.stop().await
}

#[tokio::test]
async fn a_fetched_order_carries_the_notification_headers_and_its_own() -> anyhow::Result<()> {
    let Rig {
        nats,
        fake,
        hub,
        js,
    } = Rig::start("").await?;
    fake.put_order(Platform::Ubereats, Api::V2, "o-1", br#"{"id":"o-1"}"#);
    notify_uber(&js, "o-1", "orders.notification", "wh-1").await?;
    let fetcher = InProcessStage::fetcher(&nats.url(), &hub, test_token_key());
    let got = wait_fetched(&js, 1).await?;
    let m = &got[0];
    assert_eq!(
        m.subject.as_str(),
        "webhooks.fetched.ubereats.acme-ubereats"
    );
    assert_eq!(
        &m.payload[..],
        br#"{"id":"o-1"}"#,
        "the provider's answer, unchanged"
    );
    let h = |name: &str| m.headers.get(name).map(|v| v.to_string());
    assert_eq!(h(headers::WEBHOOK_ID).as_deref(), Some("wh-1"));
    assert_eq!(h(headers::TENANT).as_deref(), Some("acme"));
    assert_eq!(h(headers::RECEIVED_AT).as_deref(), Some(GOLDEN_RECEIVED_AT));
    assert_eq!(
        h(headers::TRACEPARENT).as_deref(),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    );
    assert_eq!(
        h(headers::NOTIFICATION_EVENT).as_deref(),
        Some("orders.notification")
    );
    assert_eq!(h(headers::FETCHED_API).as_deref(), Some("v2"));
    assert_eq!(
        h(headers::FETCHED_FROM).as_deref(),
        Some("/v2/eats/order/o-1")
    );
    assert_eq!(h("Nats-Msg-Id").as_deref(), Some("fetched:wh-1"));
    fetcher
        .metrics_show(&[
            "fetcher_fetches_total{provider=\"ubereats\",outcome=\"fetched\"} 1",
            "fetcher_messages_acked_total{provider=\"ubereats\"} 1",
        ])
        .await?;
    fetcher.stop().await
}

#[tokio::test]
async fn three_replicas_and_an_expired_token_cost_two_mints_and_no_order() -> anyhow::Result<()> {
    let Rig {
        nats,
        fake,
        hub,
        js,
    } = Rig::start("").await?;
    for i in 0..60 {
        fake.put_order(
            Platform::Ubereats,
            Api::V2,
            &format!("o-{i}"),
            format!(r#"{{"id":"o-{i}"}}"#),
        );
    }
    for i in 0..30 {
        notify_uber(
            &js,
            &format!("o-{i}"),
            "orders.notification",
            &format!("wh-{i}"),
        )
        .await?;
    }
    // Three replicas start at once on a cold token store.
    let replicas = replicas(&nats, &hub, 3);
    wait_fetched(&js, 30).await?;
    assert_eq!(fake.mints(Platform::Ubereats), 1, "one mint for the fleet");

    // The token expires mid-run: the next requests get 401, one replica
    // renews, the others see the renewed token in the store.
    fake.expire_all_tokens();
    for i in 30..60 {
        notify_uber(
            &js,
            &format!("o-{i}"),
            "orders.notification",
            &format!("wh-{i}"),
        )
        .await?;
    }
    wait_fetched(&js, 60).await?;
    assert_eq!(
        fake.mints(Platform::Ubereats),
        2,
        "one refresh after the expiry"
    );
    assert!(dead_letters(&js).await?.is_empty(), "no failed order");
    for r in replicas {
        r.stop().await?;
    }
    Ok(())
}

#[tokio::test]
async fn wolt_replicas_racing_to_refresh_use_the_refresh_token_once() -> anyhow::Result<()> {
    let Rig {
        nats,
        fake,
        hub,
        js,
    } = Rig::start("").await?;
    for i in 0..20 {
        let id = format!("w{i}");
        fake.put_order(Platform::Wolt, Api::V2, &id, format!(r#"{{"id":"{id}"}}"#));
        let body = serde_json::json!({
            "id": format!("n{i}"), "type": "order.notification",
            "order": {"id": id, "venue_id": "venue-1", "status": "CREATED", "resource_url": "x"},
            "created_at": "2024-06-14T16:02:11.482913Z",
        });
        publish_notification(
            &js,
            Provider::Wolt,
            "acme-wolt",
            &format!("wh-{i}"),
            body.to_string().as_bytes(),
        )
        .await?;
    }
    let replicas = replicas(&nats, &hub, 3);
    wait_fetched(&js, 20).await?;
    assert_eq!(
        fake.refresh_uses(SECRET),
        1,
        "the venue's refresh token was used once"
    );
    assert_eq!(fake.refresh_token_reuses(), 0);
    assert_eq!(fake.revoked(), 0, "nothing revoked");
    assert_eq!(fake.mints(Platform::Wolt), 1);
    for r in replicas {
        r.stop().await?;
    }
    Ok(())
}

#[tokio::test]
async fn a_429_waits_its_retry_after_and_404s_are_retried_until_readable() -> anyhow::Result<()> {
    let Rig {
        nats,
        fake,
        hub,
        js,
    } = Rig::start("").await?;
    fake.put_order(Platform::Ubereats, Api::V2, "slow", br#"{"id":"slow"}"#);
    fake.put_order(Platform::Ubereats, Api::V2, "late", br#"{"id":"late"}"#);
    fake.fault(
        Matcher::PathPrefix("/v2/eats/order/slow".into()),
        FaultReply::status(429)
            .with_retry_after("2")
            .with_body(r#"{"message":"Exceeded rate limit","code":"rate_limited"}"#),
    );
    fake.fault(
        Matcher::PathPrefix("/v2/eats/order/late".into()),
        FaultReply::status(404)
            .with_body(r#"{"code":"resource_not_found"}"#)
            .times(3),
    );
    let fetcher = InProcessStage::fetcher(&nats.url(), &hub, test_token_key());
    for (i, id) in ["slow", "late"].into_iter().enumerate() {
        notify_uber(&js, id, "orders.notification", &format!("wh-{i}")).await?;
    }
    wait_fetched(&js, 2).await?;
    let times: Vec<Instant> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v2/eats/order/slow")
        .map(|r| r.at)
        .collect();
    assert_eq!(times.len(), 2, "one 429, then the order");
    assert!(
        times[1] - times[0] >= Duration::from_secs(2),
        "Retry-After: 2 was not waited: {:?}",
        times[1] - times[0]
    );
    assert_eq!(
        fake.order_requests("/v2/eats/order/late"),
        4,
        "three 404s, then 200"
    );
    assert!(dead_letters(&js).await?.is_empty());
    fetcher
        .metrics_show(&[
            "fetcher_fetches_total{provider=\"ubereats\",outcome=\"provider_429\"} 1",
            "fetcher_fetches_total{provider=\"ubereats\",outcome=\"order_not_found\"} 3",
            "fetcher_fetches_total{provider=\"ubereats\",outcome=\"fetched\"} 2",
        ])
        .await?;
    fetcher.stop().await
}

/// Publishes one Uber notification for `order` and returns its dead letter.
async fn dead_letter_of(
    fake: &FakeProvider,
    hub: &shared::config::HubConfig,
    account: &str,
    body: &str,
) -> anyhow::Result<(shared::dlq::DeadLetter, Vec<u8>, usize)> {
    let nats = NatsServer::start()?;
    let client = nats.client().await?;
    setup_streams(&client, hub).await?;
    let js = jetstream::new(client);
    let fetcher = InProcessStage::fetcher(&nats.url(), hub, test_token_key());
    let provider = if account.starts_with("acme-wolt") {
        Provider::Wolt
    } else {
        Provider::Ubereats
    };
    publish_notification(&js, provider, account, "wh-dead", body.as_bytes()).await?;
    let (entry, msg) = await_dead_letter(&js).await?;
    let fetched = fetched(&js).await?.len();
    fetcher.stop().await?;
    let _ = fake;
    Ok((entry, msg.payload.to_vec(), fetched))
}

#[tokio::test]
async fn refusals_are_dead_lettered_with_their_class_and_the_notification() -> anyhow::Result<()> {
    let fake = FakeProvider::start().await?;
    register(&fake);
    let hub = small_hub(&fake, "");
    fake.put_order(
        Platform::Ubereats,
        Api::V2,
        "forbidden",
        br#"{"id":"forbidden"}"#,
    );
    fake.fault(
        Matcher::PathPrefix("/v2/eats/order/forbidden".into()),
        FaultReply::status(403)
            .with_body(r#"{"code":"user_not_allowed"}"#)
            .times(10),
    );
    let cases: [(&str, String, FailureClass, &str); 5] = [
        (
            "acme-ubereats",
            uber_notification("forbidden", "orders.notification"),
            FailureClass::ProviderForbidden,
            "ubereats API answered 403 for /v2/eats/order/forbidden: {\"code\":\"user_not_allowed\"}",
        ),
        (
            "acme-ubereats",
            uber_notification("gone", "orders.notification"),
            FailureClass::OrderNotFound,
            "ubereats API answered 404 for /v2/eats/order/gone",
        ),
        (
            "acme-ubereats-noapi",
            uber_notification("x", "orders.notification"),
            FailureClass::FetchRequired,
            "ubereats account acme-ubereats-noapi has no [account.api]: configure its API credentials, then replay",
        ),
        (
            "acme-ubereats",
            uber_notification("x", "store.provisioned"),
            FailureClass::UnsupportedEvent,
            "ubereats event \"store.provisioned\" is not about an order; nothing to fetch",
        ),
        (
            "acme-ubereats",
            uber_notification("../../v1/eats/stores", "orders.notification"),
            FailureClass::InvalidPayload,
            "notification does not parse: meta.resource_id \"../../v1/eats/stores\" is not an order id (letters, digits, - and _, up to 128)",
        ),
    ];
    for (account, body, class, message) in cases {
        let (entry, payload, fetched) = dead_letter_of(&fake, &hub, account, &body).await?;
        assert_eq!(entry.error_class, class, "{body}");
        assert!(
            entry.error.starts_with(message),
            "{}\nwant {message}",
            entry.error
        );
        assert_eq!(entry.stage, "fetcher");
        assert_eq!(payload, body.as_bytes(), "the notification, replayable");
        assert_eq!(fetched, 0);
    }
    Ok(())
}

#[tokio::test]
async fn a_new_order_past_its_deadline_is_dead_lettered() -> anyhow::Result<()> {
    let Rig {
        nats,
        fake,
        hub,
        js,
    } = Rig::start(r#"fetch_deadline = "3s""#).await?;
    fake.put_order(Platform::Ubereats, Api::V2, "down", br#"{"id":"down"}"#);
    fake.fault(
        Matcher::PathPrefix("/v2/eats/order/down".into()),
        FaultReply::status(503).times(1000),
    );
    let fetcher = InProcessStage::fetcher(&nats.url(), &hub, test_token_key());
    let started = SystemTime::now();
    notify_uber(&js, "down", "orders.notification", "wh-down").await?;
    let (entry, _) = await_dead_letter(&js).await?;
    assert_eq!(entry.error_class, FailureClass::FetchDeadlinePassed);
    assert!(
        entry.error.starts_with(
            "new ubereats order down was notified 3s ago, past the account's fetch_deadline of 3s"
        ) || entry.error.starts_with(
            "new ubereats order down was notified 4s ago, past the account's fetch_deadline of 3s"
        ),
        "{}",
        entry.error
    );
    assert!(started.elapsed()? >= Duration::from_secs(3));
    assert!(
        fake.order_requests("/v2/eats/order/down") >= 2,
        "retried until the deadline"
    );
    // A cancellation has no deadline: it is fetched whenever the API answers.
    fetcher.stop().await
}

/// The fixture hub for the whole stack as processes, with the fetcher's
/// `ack_wait` short so a killed fetcher's notification comes back soon.
fn stack_hub_toml() -> String {
    let mut text = std::fs::read_to_string(workspace().join("tests/fixtures/hub.toml"))
        .unwrap()
        .replace("\"http://127.0.0.1:9/orders\"", "\"{{BACKEND_URL}}\"")
        .replace("http://127.0.0.1:9/provider", "{{PROVIDER_URL}}");
    text.push_str("\n[streams.consumers.fetcher]\nack_wait = \"2s\"\n");
    text
}

#[tokio::test]
async fn a_fetcher_killed_mid_fetch_still_delivers_the_order_once() -> anyhow::Result<()> {
    let mut stack = Stack::start(
        &stack_hub_toml(),
        &[("S", SECRET), ("S_GRAB", GRAB_TOKEN_KEY)],
    )
    .await?;
    let js = jetstream::new(stack.nats.client().await?);
    let f = fixtures::all()
        .into_iter()
        .find(|f| f.name == "ubereats/v2-order-created")
        .expect("the Uber Eats legacy fixture");
    let notification: Value = serde_json::from_slice(&f.body)?;
    let order_id = notification["meta"]["resource_id"].as_str().unwrap();
    let path = format!("/v2/eats/order/{order_id}");
    let fetched_body = std::fs::read_to_string(
        workspace().join("tests/fixtures/ubereats/fetched/v2-order-created.json"),
    )?;
    // The first answer takes 5 s: the fetcher is killed while it waits.
    stack.provider.fault(
        Matcher::PathPrefix(path.clone()),
        FaultReply::status(200)
            .with_body(&fetched_body)
            .after(Duration::from_secs(5)),
    );
    let secret = secrecy::SecretString::from(SECRET.to_owned());
    let r = f
        .request(
            &reqwest::Client::new(),
            &stack.ingress_url(),
            "acme-ubereats",
            &secret,
        )
        .timeout(STEP)
        .send()
        .await?;
    assert_eq!(r.status(), 202);
    eventually(STEP, "the fetch under way", || async {
        (stack.provider.order_requests(&path) == 1).then_some(())
    })
    .await?;
    stack.kill("fetcher").await?;
    stack.spawn("fetcher")?;
    stack.wait_ready("fetcher").await?;

    eventually(
        Duration::from_secs(30),
        "the order at the backend",
        || async { (!stack.backend.requests().is_empty()).then_some(()) },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}; fetcher log:\n{}", stack.log("fetcher")))?;
    // Anything duplicated would arrive within the fetcher's ack_wait.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let received = stack.backend.requests();
    assert_eq!(received.len(), 1, "the order arrives once");
    let order: Value = serde_json::from_slice(&received[0].body)?;
    assert_eq!(
        comparable(order, &f.expected),
        comparable(f.expected.clone(), &f.expected)
    );
    assert_eq!(
        stack.provider.order_requests(&path),
        2,
        "fetched again after the kill"
    );
    assert_eq!(fetched(&js).await?.len(), 1);
    assert_eq!(stream_messages(&js, "ORDERS").await?.len(), 1);
    assert!(dead_letters(&js).await?.is_empty());
    stack.stop().await
}

#[tokio::test]
async fn every_other_refusal_names_its_cause() -> anyhow::Result<()> {
    let fake = FakeProvider::start().await?;
    register(&fake);
    let hub = small_hub(&fake, "");
    for (id, status) in [("unauth", 401), ("moved", 302), ("bad", 400)] {
        fake.put_order(Platform::Ubereats, Api::V2, id, br#"{"id":"x"}"#);
        fake.fault(
            Matcher::PathPrefix(format!("/v2/eats/order/{id}")),
            FaultReply::status(status).times(10),
        );
    }
    fake.put_order(Platform::Ubereats, Api::V2, "huge", "x".repeat(5000));
    let wolt_other_venue = serde_json::json!({
        "id": "n1", "type": "order.notification",
        "order": {"id": "w1", "venue_id": "venue-2", "status": "CREATED", "resource_url": "x"},
        "created_at": "2024-06-14T16:02:11.482913Z",
    })
    .to_string();
    let cases: [(&str, String, FailureClass, &str); 8] = [
        (
            "nobody",
            uber_notification("x", "orders.notification"),
            FailureClass::UnknownAccount,
            "ubereats account \"nobody\" is not in the fetcher's config",
        ),
        (
            "acme-ubereats",
            uber_notification("unauth", "orders.notification"),
            FailureClass::ProviderUnauthorized,
            "ubereats answered 401 to a renewed token too: check the account's credentials, scope and environment",
        ),
        (
            "acme-ubereats",
            uber_notification("moved", "orders.notification"),
            FailureClass::ProviderRejected,
            "ubereats API answered 302 for /v2/eats/order/moved",
        ),
        (
            "acme-ubereats",
            uber_notification("bad", "orders.notification"),
            FailureClass::ProviderRejected,
            "ubereats API answered 400 for /v2/eats/order/bad",
        ),
        (
            "acme-ubereats",
            uber_notification("huge", "orders.notification"),
            FailureClass::MessageTooLarge,
            "ubereats order huge is larger than provider_api.max_body_bytes (4096 bytes)",
        ),
        (
            "acme-ubereats-private",
            uber_notification("x", "orders.notification"),
            FailureClass::ProviderAddressRefused,
            "ubereats API address refused: ",
        ),
        (
            "acme-ubereats-badsecret",
            uber_notification("x", "orders.notification"),
            FailureClass::TokenRejected,
            "ubereats account acme-ubereats-badsecret: the token endpoint refused the credentials",
        ),
        (
            "acme-wolt-venue",
            wolt_other_venue,
            FailureClass::InvalidPayload,
            "the notification names venue \"venue-2\"; account acme-wolt-venue is bound to venue \"venue-1\"",
        ),
    ];
    for (account, body, class, message) in cases {
        let (entry, payload, fetched) = dead_letter_of(&fake, &hub, account, &body).await?;
        assert_eq!(entry.error_class, class, "{account}: {}", entry.error);
        assert!(
            entry.error.starts_with(message),
            "{}\nwant {message}",
            entry.error
        );
        assert_eq!(payload, body.as_bytes());
        assert_eq!(fetched, 0);
    }
    assert_eq!(
        fake.requests()
            .iter()
            .filter(|r| r.path.starts_with("/v2/eats/order/x"))
            .count(),
        0,
        "nothing was sent for a refused address or refused credentials"
    );
    Ok(())
}

#[tokio::test]
async fn an_api_that_does_not_answer_in_time_is_tried_again() -> anyhow::Result<()> {
    let Rig {
        nats,
        fake,
        hub,
        js,
    } = Rig::start("").await?;
    fake.put_order(Platform::Ubereats, Api::V2, "stuck", br#"{"id":"stuck"}"#);
    fake.fault(
        Matcher::PathPrefix("/v2/eats/order/stuck".into()),
        FaultReply::hang(),
    );
    fake.fault(
        Matcher::PathPrefix("/v2/eats/order/stuck".into()),
        FaultReply::status(502),
    );
    let fetcher = InProcessStage::fetcher(&nats.url(), &hub, test_token_key());
    notify_uber(&js, "stuck", "orders.notification", "wh-stuck").await?;
    wait_fetched(&js, 1).await?;
    assert_eq!(
        fake.order_requests("/v2/eats/order/stuck"),
        3,
        "a hang, a 502, the order"
    );
    fetcher
        .metrics_show(&[
            "fetcher_fetches_total{provider=\"ubereats\",outcome=\"provider_timeout\"} 1",
            "fetcher_fetches_total{provider=\"ubereats\",outcome=\"provider_5xx\"} 1",
            "fetcher_fetches_total{provider=\"ubereats\",outcome=\"fetched\"} 1",
            "fetcher_messages_retried_total{provider=\"ubereats\",error_type=\"provider_timeout\"} 1",
        ])
        .await?;
    fetcher.stop().await
}

/// `dlq-inspector replay <id>` against `nats`.
async fn replay(nats: &NatsServer, id: u64) -> anyhow::Result<()> {
    let out = tokio::process::Command::new(orderhub_tests::stack::bin("dlq-inspector")?)
        .args(["replay", &id.to_string()])
        .env("NATS_URL", nats.url())
        .output()
        .await?;
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[tokio::test]
async fn the_notification_and_the_fetched_body_both_replay_from_the_dlq() -> anyhow::Result<()> {
    let fake = FakeProvider::start().await?;
    register(&fake);
    fake.load_orders(&workspace().join("tests/fixtures"))?;
    let hub = fixtures_hub(&fake);
    let Rig {
        nats,
        fake,
        hub,
        js,
    } = Rig::with(fake, hub).await?;
    let f = fixtures::all()
        .into_iter()
        .find(|f| f.name == "ubereats/v2-order-created")
        .expect("the Uber Eats legacy fixture");
    let notification: Value = serde_json::from_slice(&f.body)?;
    let path = format!(
        "/v2/eats/order/{}",
        notification["meta"]["resource_id"].as_str().unwrap()
    );
    // The store is not provisioned yet: one 403. And an order whose body
    // the transformer cannot read.
    fake.fault(Matcher::PathPrefix(path.clone()), FaultReply::status(403));
    fake.put_order(
        Platform::Ubereats,
        Api::V2,
        "unreadable",
        br#"{"id":"unreadable"}"#,
    );
    publish_notification(&js, Provider::Ubereats, "acme-ubereats", "wh-a", &f.body).await?;
    notify_uber(&js, "unreadable", "orders.notification", "wh-b").await?;
    let fetcher = InProcessStage::fetcher(&nats.url(), &hub, test_token_key());
    let transformer = InProcessStage::transformer(&nats.url(), &hub);

    let dead = await_dead_letters(&js, 2).await?;
    let ids: Vec<u64> = stream_messages(&js, "DLQ")
        .await?
        .iter()
        .map(|m| m.sequence)
        .collect();
    let find = |stage: &str| {
        dead.iter()
            .zip(&ids)
            .find(|((d, _), _)| d.stage == stage)
            .map(|((d, m), id)| (d.clone(), m.payload.clone(), *id))
            .unwrap()
    };
    let (forbidden, payload, forbidden_id) = find("fetcher");
    assert_eq!(forbidden.error_class, FailureClass::ProviderForbidden);
    assert_eq!(forbidden.subject, "webhooks.raw.ubereats.acme-ubereats");
    assert_eq!(&payload[..], &f.body[..], "the notification");
    let (unreadable, payload, unreadable_id) = find("transformer");
    assert_eq!(unreadable.error_class, FailureClass::InvalidPayload);
    assert_eq!(
        unreadable.subject,
        "webhooks.fetched.ubereats.acme-ubereats"
    );
    assert_eq!(&payload[..], br#"{"id":"unreadable"}"#, "the fetched body");

    // The store is provisioned now: the notification replays into an order.
    replay(&nats, forbidden_id).await?;
    let orders = eventually(STEP, "the replayed order", || async {
        let m = stream_messages(&js, "ORDERS").await.ok()?;
        (!m.is_empty()).then_some(m)
    })
    .await?;
    let order: Value = serde_json::from_slice(&orders[0].payload)?;
    assert_eq!(
        comparable(order, &f.expected),
        comparable(f.expected.clone(), &f.expected)
    );
    assert_eq!(fake.order_requests(&path), 2);

    // The fetched body replays to the transformer as it was fetched: the
    // provider is not asked again.
    replay(&nats, unreadable_id).await?;
    let again = eventually(STEP, "the fetched body dead-lettered again", || async {
        dead_letters(&js)
            .await
            .ok()?
            .into_iter()
            .find(|(d, _)| d.stage == "transformer" && d.seq != unreadable.seq)
    })
    .await?;
    assert_eq!(again.0.subject, "webhooks.fetched.ubereats.acme-ubereats");
    assert_eq!(&again.1.payload[..], br#"{"id":"unreadable"}"#);
    assert_eq!(fake.order_requests("/v2/eats/order/unreadable"), 1);
    fetcher.stop().await?;
    transformer.stop().await
}

#[tokio::test]
async fn a_notification_without_its_webhook_id_is_dead_lettered() -> anyhow::Result<()> {
    let Rig {
        nats,
        fake: _fake,
        hub,
        js,
    } = Rig::start("").await?;
    let mut h = async_nats::HeaderMap::new();
    h.insert(headers::PROVIDER, "ubereats");
    h.insert(headers::ACCOUNT, "acme-ubereats");
    let body = uber_notification("x", "orders.notification");
    js.publish_with_headers(
        shared::subjects::raw_webhook(Provider::Ubereats, "acme-ubereats"),
        h,
        body.clone().into(),
    )
    .await?
    .await?;
    let fetcher = InProcessStage::fetcher(&nats.url(), &hub, test_token_key());
    let (entry, msg) = await_dead_letter(&js).await?;
    assert_eq!(entry.error_class, FailureClass::MissingHeader);
    assert_eq!(entry.error, "Orderhub-Webhook-Id is missing");
    assert_eq!(&msg.payload[..], body.as_bytes());
    fetcher.stop().await
}

#[tokio::test]
async fn a_new_order_fetched_past_its_deadline_is_not_passed_on() -> anyhow::Result<()> {
    let fake = FakeProvider::start().await?;
    register(&fake);
    // The API answers after 3 s, within the request timeout but past the
    // order's 2 s deadline.
    let hub = hub_of(
        &small_hub_text(&fake, r#"fetch_deadline = "2s""#)
            .replace("request_timeout = \"2s\"", "request_timeout = \"6s\"")
            .replace("token_lease = \"5s\"", "token_lease = \"12s\""),
    );
    let Rig {
        nats,
        fake,
        hub,
        js,
    } = Rig::with(fake, hub).await?;
    fake.fault(
        Matcher::PathPrefix("/v2/eats/order/slow".into()),
        FaultReply::status(200)
            .with_body(r#"{"id":"slow"}"#)
            .after(Duration::from_secs(3)),
    );
    let fetcher = InProcessStage::fetcher(&nats.url(), &hub, test_token_key());
    notify_uber(&js, "slow", "orders.notification", "wh-slow").await?;
    let (entry, msg) = await_dead_letter(&js).await?;
    assert_eq!(entry.error_class, FailureClass::FetchDeadlinePassed);
    assert!(
        entry
            .error
            .starts_with("new ubereats order slow was notified 3s ago"),
        "{}",
        entry.error
    );
    assert_eq!(
        &msg.payload[..],
        uber_notification("slow", "orders.notification").as_bytes()
    );
    assert_eq!(fake.order_requests("/v2/eats/order/slow"), 1);
    assert!(fetched(&js).await?.is_empty(), "nothing passed on");
    fetcher.stop().await
}
