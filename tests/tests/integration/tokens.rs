//! The fleet-shared provider token store (`shared::tokens`) against a real
//! nats-server and the fake provider API: "replicas" are token stores with
//! their own NATS connections over one `PROVIDER_TOKENS` bucket; requests
//! are order GETs at the fake, retried once after a 401 with
//! `token_rejected`, as the fetcher does.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use async_nats::jetstream::kv;
use base64::Engine;
use futures::StreamExt;
use orderhub_tests::NatsServer;
use orderhub_tests::fake_provider::{Api, Endpoint, FakeProvider, FaultReply, Matcher, Platform};
use secrecy::SecretString;
use shared::Provider;
use shared::config::{OrderApi, ProviderApi, ProviderApiSettings, StreamSettings};
use shared::failure::FailureClass;
use shared::tokens::{AccessToken, Credential, TokenError, TokenKey, TokenMetrics, TokenStore};
use url::Url;

const UBER_APP: &str = "uber-app";
const UBER_SECRET: &str = "uber-client-secret-1";
const WOLT_CLIENT: &str = "wolt-venue-client";
const WOLT_SECRET: &str = "wolt-client-secret-1";
const WOLT_SEED: &str = "wolt-first-refresh-token-1";
const KEY: [u8; 32] = *b"0123456789abcdef0123456789abcdef";

fn settings(min_mint_interval: Duration) -> ProviderApiSettings {
    ProviderApiSettings {
        allowed_private_destinations: vec!["127.0.0.0/8".parse().unwrap()],
        request_timeout: Duration::from_secs(2),
        token_refresh_ahead: Duration::from_secs(120),
        token_min_mint_interval: min_mint_interval,
        token_lease: Duration::from_secs(5),
        ..ProviderApiSettings::default()
    }
}

fn api(fake: &FakeProvider, provider: Provider, secret: &str) -> ProviderApi {
    let (token_url, client, refresh, scope) = match provider {
        Provider::Ubereats => (fake.uber_token_url(), UBER_APP, None, Some("eats.order")),
        _ => (fake.wolt_token_url(), WOLT_CLIENT, Some(WOLT_SEED), None),
    };
    ProviderApi {
        base_url: Url::parse(&fake.url()).unwrap(),
        token_url: Url::parse(&token_url).unwrap(),
        client_id: SecretString::from(client.to_owned()),
        client_secret: SecretString::from(secret.to_owned()),
        refresh_token: refresh.map(|r| SecretString::from(r.to_owned())),
        scope: scope.map(str::to_owned),
        callback_hosts: Vec::new(),
        order_api: OrderApi::V2,
        fetch_deadline: Duration::from_secs(180),
        venue_id: None,
    }
}

fn uber(fake: &FakeProvider) -> Credential {
    Credential::new(
        Provider::Ubereats,
        "acme-uber",
        &api(fake, Provider::Ubereats, UBER_SECRET),
    )
    .unwrap()
}

fn wolt(fake: &FakeProvider) -> Credential {
    Credential::new(
        Provider::Wolt,
        "acme-wolt",
        &api(fake, Provider::Wolt, WOLT_SECRET),
    )
    .unwrap()
}

/// One replica: its own NATS connection, bucket handle, store and metrics.
struct Replica {
    store: TokenStore,
    kv: kv::Store,
    metrics: TokenMetrics,
    /// Its registry's text exposition.
    scrape: Box<dyn Fn() -> String + Send + Sync>,
}

impl Replica {
    async fn start(nats: &NatsServer, settings: &ProviderApiSettings) -> anyhow::Result<Replica> {
        Replica::with_key(nats, settings, TokenKey::from_bytes(&KEY)).await
    }

    async fn with_key(
        nats: &NatsServer,
        settings: &ProviderApiSettings,
        key: TokenKey,
    ) -> anyhow::Result<Replica> {
        let js = async_nats::jetstream::new(nats.client().await?);
        let defs = shared::streams::Definitions::load(&StreamSettings::default());
        let kv =
            shared::streams::ensure_bucket(&js, defs.bucket(shared::streams::TOKENS_BUCKET), true)
                .await?;
        let mut registry = shared::telemetry::registry("fetcher");
        let metrics = TokenMetrics::register(&mut registry);
        Ok(Replica {
            store: TokenStore::new(kv.clone(), key, settings, metrics.clone()),
            kv,
            metrics,
            scrape: Box::new(move || shared::telemetry::encode(&registry)),
        })
    }

    /// The value of one token counter series (0 if absent).
    fn counter(&self, name: &str, account: &str, label: &str, value: &str) -> u64 {
        let text = (self.scrape)();
        let prefix = format!(
            "fetcher_provider_token_{name}_total{{provider=\"{}\",account=\"{account}\",{label}=\"{value}\"}} ",
            if account.contains("wolt") {
                "wolt"
            } else {
                "ubereats"
            },
        );
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0)
    }

    fn refreshes(&self, account: &str, outcome: &str) -> u64 {
        self.counter("refreshes", account, "outcome", outcome)
    }

    fn failures(&self, account: &str, reason: &str) -> u64 {
        self.counter("failures", account, "reason", reason)
    }
}

/// One order GET at the fake with the credential's token; after a 401,
/// `token_rejected` and one retry. Returns the final status.
async fn get_order(
    http: &reqwest::Client,
    store: &TokenStore,
    cred: &Credential,
    url: &str,
) -> anyhow::Result<u16> {
    let token = store.token(cred).await?;
    let status = http
        .get(url)
        .bearer_auth(token.expose())
        .send()
        .await?
        .status()
        .as_u16();
    if status != 401 {
        return Ok(status);
    }
    let renewed = store.token_rejected(cred, &token).await?;
    Ok(http
        .get(url)
        .bearer_auth(renewed.expose())
        .send()
        .await?
        .status()
        .as_u16())
}

/// `per_replica` concurrent order GETs on each replica; every status.
async fn burst(
    replicas: &[&Replica],
    cred: &Credential,
    url: &str,
    per_replica: usize,
) -> anyhow::Result<Vec<u16>> {
    let http = reqwest::Client::new();
    let mut tasks = Vec::new();
    for r in replicas {
        for _ in 0..per_replica {
            let (http, store, cred, url) =
                (http.clone(), r.store.clone(), cred.clone(), url.to_owned());
            tasks.push(tokio::spawn(async move {
                get_order(&http, &store, &cred, &url).await
            }));
        }
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await??);
    }
    Ok(statuses)
}

async fn fake_with_orders() -> anyhow::Result<(FakeProvider, String, String)> {
    let fake = FakeProvider::start().await?;
    fake.add_uber_client(UBER_APP, UBER_SECRET);
    fake.add_wolt_venue(WOLT_CLIENT, WOLT_SECRET, WOLT_SEED);
    fake.put_order(Platform::Ubereats, Api::V2, "u-1", r#"{"id":"u-1"}"#);
    fake.put_order(Platform::Wolt, Api::V2, "w-1", r#"{"id":"w-1"}"#);
    let uber_url = format!(
        "{}{}",
        fake.url(),
        Endpoint::order_path(Platform::Ubereats, Api::V2, "u-1")
    );
    let wolt_url = format!(
        "{}{}",
        fake.url(),
        Endpoint::order_path(Platform::Wolt, Api::V2, "w-1")
    );
    Ok((fake, uber_url, wolt_url))
}

fn token_requests(fake: &FakeProvider, platform: Platform) -> usize {
    fake.requests()
        .iter()
        .filter(|r| r.endpoint == Some(Endpoint::Token(platform)))
        .count()
}

#[tokio::test]
async fn three_replicas_on_a_cold_store_mint_one_uber_token_and_refresh_it_once()
-> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let (fake, url, _) = fake_with_orders().await?;
    // No mint floor: the second mint below is held back by the lease and
    // the compare-and-set alone.
    let s = settings(Duration::ZERO);
    let replicas = [
        Replica::start(&nats, &s).await?,
        Replica::start(&nats, &s).await?,
        Replica::start(&nats, &s).await?,
    ];
    let all: Vec<&Replica> = replicas.iter().collect();
    let cred = uber(&fake);
    for r in &replicas {
        r.metrics.start_at_zero([&cred]);
    }

    let statuses = burst(&all, &cred, &url, 15).await?;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(fake.mints(Platform::Ubereats), 1);
    let sum = |outcome: &str| -> u64 {
        replicas
            .iter()
            .map(|r| r.refreshes("acme-uber", outcome))
            .sum()
    };
    assert_eq!((sum("minted"), sum("refreshed"), sum("reused")), (1, 0, 2));

    // The token expires mid-run: every replica's requests get 401, one
    // replica refreshes, every request succeeds on its one retry.
    fake.expire_all_tokens();
    let statuses = burst(&all, &cred, &url, 15).await?;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(fake.mints(Platform::Ubereats), 2);
    assert_eq!((sum("minted"), sum("refreshed"), sum("reused")), (1, 1, 4));
    assert_eq!(fake.revoked(), 0);
    for r in &replicas {
        for reason in ["rejected", "unavailable", "mint_floor", "store_failed"] {
            assert_eq!(r.failures("acme-uber", reason), 0, "{reason}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_401_after_another_replica_refreshed_mints_nothing() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let (fake, url, _) = fake_with_orders().await?;
    let s = settings(Duration::ZERO);
    let (a, b) = (
        Replica::start(&nats, &s).await?,
        Replica::start(&nats, &s).await?,
    );
    let cred = uber(&fake);
    let http = reqwest::Client::new();
    assert_eq!(get_order(&http, &a.store, &cred, &url).await?, 200);
    assert_eq!(get_order(&http, &b.store, &cred, &url).await?, 200);
    let old = b.store.token(&cred).await?;
    assert_eq!(fake.mints(Platform::Ubereats), 1);

    // A is answered 401 first and refreshes.
    fake.expire_all_tokens();
    assert_eq!(get_order(&http, &a.store, &cred, &url).await?, 200);
    assert_eq!(fake.mints(Platform::Ubereats), 2);
    let current = a.store.token(&cred).await?;
    assert_ne!(current, old);
    assert_eq!(current.generation(), old.generation() + 1);

    // B still holds the old token in memory, is answered 401 and finds the
    // stored token is already another one: no second mint.
    assert_eq!(b.store.token(&cred).await?, old);
    let renewed = b.store.token_rejected(&cred, &old).await?;
    assert_eq!(renewed, current);
    assert_eq!(get_order(&http, &b.store, &cred, &url).await?, 200);
    assert_eq!(fake.mints(Platform::Ubereats), 2);
    assert_eq!(b.refreshes("acme-uber", "reused"), 2);
    assert_eq!(b.refreshes("acme-uber", "refreshed"), 0);
    Ok(())
}

#[tokio::test]
async fn wolt_replicas_racing_present_each_refresh_token_once() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let (fake, _, url) = fake_with_orders().await?;
    let s = settings(Duration::ZERO);
    let replicas = [
        Replica::start(&nats, &s).await?,
        Replica::start(&nats, &s).await?,
        Replica::start(&nats, &s).await?,
    ];
    let all: Vec<&Replica> = replicas.iter().collect();
    let cred = wolt(&fake);

    let statuses = burst(&all, &cred, &url, 10).await?;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(fake.refresh_uses(WOLT_SEED), 1);
    assert_eq!(fake.mints(Platform::Wolt), 1);
    let rotated = fake
        .live_refresh_token(WOLT_CLIENT)
        .context("the rotated refresh token is live")?;

    // The access token expires: one refresh, with the rotated token.
    fake.expire_all_tokens();
    let statuses = burst(&all, &cred, &url, 10).await?;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(fake.refresh_uses(&rotated), 1);
    assert_eq!(fake.mints(Platform::Wolt), 2);

    // A replica started later (same config, so the same seed) uses the
    // stored chain: the seed is never presented again.
    let late = Replica::start(&nats, &s).await?;
    fake.expire_all_tokens();
    let statuses = burst(&[&late], &cred, &url, 5).await?;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(fake.refresh_uses(WOLT_SEED), 1);
    assert_eq!(fake.mints(Platform::Wolt), 3);

    assert_eq!(fake.refresh_token_reuses(), 0);
    assert_eq!(fake.revoked(), 0);
    let sum = |outcome: &str| -> u64 {
        replicas
            .iter()
            .chain([&late])
            .map(|r| r.refreshes("acme-wolt", outcome))
            .sum()
    };
    assert_eq!((sum("minted"), sum("refreshed")), (1, 2));

    // The venue is authorised again: a new refresh token in the config
    // (read by a restarted replica) starts a new chain at once, though the
    // stored token still works; the old chain is not presented any more.
    let spent_chain = fake
        .live_refresh_token(WOLT_CLIENT)
        .context("the chain's live refresh token")?;
    fake.add_wolt_venue(WOLT_CLIENT, WOLT_SECRET, "wolt-second-seed");
    let mut reauthorised = api(&fake, Provider::Wolt, WOLT_SECRET);
    reauthorised.refresh_token = Some(SecretString::from("wolt-second-seed".to_owned()));
    let reseeded = Credential::new(Provider::Wolt, "acme-wolt", &reauthorised)?;
    let before = late.store.token(&cred).await?;
    let restarted = Replica::start(&nats, &s).await?;
    let after = restarted.store.token(&reseeded).await?;
    assert_ne!(before, after);
    assert_eq!(fake.refresh_uses("wolt-second-seed"), 1);
    assert_eq!(fake.refresh_uses(&spent_chain), 0);
    assert_eq!(restarted.refreshes("acme-wolt", "minted"), 1);
    assert_eq!(fake.refresh_token_reuses(), 0);
    Ok(())
}

#[tokio::test]
async fn the_mint_floor_holds_back_a_second_mint() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let (fake, url, _) = fake_with_orders().await?;
    let s = settings(Duration::from_secs(60));
    let (a, b) = (
        Replica::start(&nats, &s).await?,
        Replica::start(&nats, &s).await?,
    );
    let cred = uber(&fake);
    let http = reqwest::Client::new();
    // Tokens that live 100 s are always within the 120 s refresh-ahead:
    // without the floor every call would mint.
    fake.set_uber_expires_in(Duration::from_secs(100));
    let first = a.store.token(&cred).await?;
    assert_eq!(b.store.token(&cred).await?, first);
    assert_eq!(a.store.token(&cred).await?, first);
    assert_eq!(fake.mints(Platform::Ubereats), 1);

    // A forced refresh (a 401) within the floor does not mint either.
    fake.expire_all_tokens();
    let e = match get_order(&http, &b.store, &cred, &url).await {
        Ok(status) => panic!("answered {status} after a refused refresh"),
        Err(e) => e.downcast::<TokenError>()?,
    };
    let TokenError::MintFloor { retry_after, .. } = &e else {
        panic!("{e}");
    };
    assert!(*retry_after > Duration::ZERO && *retry_after <= Duration::from_secs(60));
    assert_eq!(e.class(), FailureClass::TokenUnavailable);
    assert_eq!(fake.mints(Platform::Ubereats), 1);
    assert_eq!(b.failures("acme-uber", "mint_floor"), 1);
    Ok(())
}

#[tokio::test]
async fn the_bucket_holds_no_token_in_clear_text() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let (fake, uber_url, wolt_url) = fake_with_orders().await?;
    let s = settings(Duration::ZERO);
    let r = Replica::start(&nats, &s).await?;
    let http = reqwest::Client::new();
    let (u, w) = (uber(&fake), wolt(&fake));
    assert_eq!(get_order(&http, &r.store, &u, &uber_url).await?, 200);
    assert_eq!(get_order(&http, &r.store, &w, &wolt_url).await?, 200);
    let secrets = [
        r.store.token(&u).await?.expose().to_owned(),
        r.store.token(&w).await?.expose().to_owned(),
        fake.live_refresh_token(WOLT_CLIENT)
            .context("a live refresh token")?,
        WOLT_SEED.to_owned(),
        UBER_SECRET.to_owned(),
        WOLT_SECRET.to_owned(),
    ];
    let mut forms = Vec::new();
    for s in &secrets {
        forms.push(s.as_bytes().to_vec());
        for engine in [
            base64::engine::general_purpose::STANDARD,
            base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ] {
            forms.push(engine.encode(s).into_bytes());
        }
        forms.push(hex::encode(s).into_bytes());
    }
    let mut keys: Vec<String> = r.kv.keys().await?.map(|k| k.unwrap()).collect().await;
    keys.sort();
    assert_eq!(keys, vec![u.key().to_owned(), w.key().to_owned()]);
    for key in &keys {
        let raw = r.kv.get(key).await?.context("a value")?;
        for form in &forms {
            ensure!(
                !raw.windows(form.len()).any(|w| w == form.as_slice()),
                "entry {key} holds a secret in some form"
            );
        }
    }
    Ok(())
}

#[tokio::test]
async fn token_endpoint_refusals_and_outages_release_the_lease() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let (fake, _, _) = fake_with_orders().await?;
    let s = settings(Duration::ZERO);
    let r = Replica::start(&nats, &s).await?;

    // Wrong secret: 401 invalid_client, permanent, the secret not quoted.
    let wrong = Credential::new(
        Provider::Ubereats,
        "acme-uber",
        &api(&fake, Provider::Ubereats, "not-the-secret"),
    )?;
    let e = r.store.token(&wrong).await.unwrap_err();
    assert!(matches!(e, TokenError::Rejected { .. }), "{e}");
    assert_eq!(e.class(), FailureClass::TokenRejected);
    assert!(e.class().is_permanent());
    assert_eq!(
        e.to_string(),
        "ubereats account acme-uber: the token endpoint refused the credentials: the token \
         endpoint answered 401 invalid_client; check the account's api.client_id, client_secret \
         and scope"
    );
    // The lease was released: the right credentials mint at once.
    let cred = uber(&fake);
    r.store.token(&cred).await?;
    assert_eq!(fake.mints(Platform::Ubereats), 1);

    // 503 with Retry-After: transient, its delay honoured by every caller.
    let replica = Replica::start(&nats, &s).await?;
    fake.expire_all_tokens();
    let old = replica.store.token(&cred).await?;
    fake.fault(
        Matcher::Token(Platform::Ubereats),
        FaultReply::status(503).with_retry_after("2"),
    );
    let e = replica.store.token_rejected(&cred, &old).await.unwrap_err();
    // The pause counts from the answer.
    let answered = Instant::now();
    let TokenError::Unavailable { retry_after, .. } = &e else {
        panic!("{e}");
    };
    assert_eq!(*retry_after, Some(Duration::from_secs(2)));
    assert_eq!(e.class(), FailureClass::TokenUnavailable);
    assert!(!e.class().is_permanent());
    let calls = token_requests(&fake, Platform::Ubereats);
    // Within the Retry-After nobody asks the endpoint again.
    let again = r.store.token_rejected(&cred, &old).await.unwrap_err();
    assert!(
        matches!(again, TokenError::Unavailable { retry_after: Some(d), .. } if d <= Duration::from_secs(2)),
        "{again}"
    );
    assert_eq!(token_requests(&fake, Platform::Ubereats), calls);
    // After it, the next call mints.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let renewed = replica.store.token_rejected(&cred, &old).await?;
    assert_ne!(renewed, old);
    assert!(answered.elapsed() >= Duration::from_secs(2));
    assert_eq!(fake.mints(Platform::Ubereats), 2);
    assert_eq!(replica.failures("acme-uber", "unavailable"), 1);
    assert_eq!(r.failures("acme-uber", "unavailable"), 1);
    assert_eq!(r.failures("acme-uber", "rejected"), 1);

    // A token endpoint that never answers: unavailable after the request
    // timeout, and the lease released.
    fake.expire_all_tokens();
    fake.fault(Matcher::Token(Platform::Ubereats), FaultReply::hang());
    let e = replica
        .store
        .token_rejected(&cred, &renewed)
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "ubereats account acme-uber: no token for now: the token endpoint did not answer within 2s"
    );
    let last = replica.store.token_rejected(&cred, &renewed).await?;
    assert_ne!(last, renewed);
    assert_eq!(fake.mints(Platform::Ubereats), 3);
    Ok(())
}

#[tokio::test]
async fn a_lease_outliving_its_holder_is_taken_over() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let (fake, _, _) = fake_with_orders().await?;
    // A lease shorter than the token call (the config refuses that; here it
    // plays a holder that stopped mid-call).
    let slow = ProviderApiSettings {
        request_timeout: Duration::from_secs(4),
        token_lease: Duration::from_secs(1),
        ..settings(Duration::ZERO)
    };
    let (a, b) = (
        Replica::start(&nats, &slow).await?,
        Replica::start(&nats, &slow).await?,
    );
    let cred = uber(&fake);
    fake.fault(Matcher::Token(Platform::Ubereats), FaultReply::hang());
    let stuck = {
        let (store, cred) = (a.store.clone(), cred.clone());
        tokio::spawn(async move { store.token(&cred).await })
    };
    orderhub_tests::eventually(Duration::from_secs(5), "the first token call", || async {
        (token_requests(&fake, Platform::Ubereats) == 1).then_some(())
    })
    .await?;
    let started = Instant::now();
    let token = b.store.token(&cred).await?;
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert_eq!(fake.mints(Platform::Ubereats), 1);
    // The stuck holder's own call ends in its timeout; what B stored stays.
    let e = stuck.await?.unwrap_err();
    assert!(matches!(e, TokenError::Unavailable { .. }), "{e}");
    assert_eq!(a.store.token(&cred).await?, token);
    assert_eq!(fake.mints(Platform::Ubereats), 1);
    Ok(())
}

#[tokio::test]
async fn an_entry_sealed_with_another_key_is_an_error_until_reseeded() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let (fake, _, _) = fake_with_orders().await?;
    let s = settings(Duration::ZERO);
    let good = Replica::start(&nats, &s).await?;
    let cred = uber(&fake);
    let token = good.store.token(&cred).await?;

    let other = Replica::with_key(&nats, &s, TokenKey::generate()).await?;
    let e = other.store.token(&cred).await.unwrap_err();
    assert_eq!(e.class(), FailureClass::TokenStoreFailed);
    assert_eq!(
        e.to_string(),
        format!(
            "ubereats account acme-uber: token store: token store entry {} does not decrypt: \
             TOKEN_STORE_KEY differs from the one that wrote it (or the entry was copied from \
             another key); give every stage the same key, or re-seed the entry",
            cred.key()
        )
    );
    // Nothing was overwritten: the right key still reads the token.
    let fresh = Replica::start(&nats, &s).await?;
    assert_eq!(fresh.store.token(&cred).await?, token);
    assert_eq!(fake.mints(Platform::Ubereats), 1);
    assert_eq!(other.failures("acme-uber", "store_failed"), 1);

    // An explicit re-seed drops the entry; the new key's store mints.
    other.store.reseed(&cred).await?;
    let minted = other.store.token(&cred).await?;
    assert_ne!(minted, token);
    assert_eq!(fake.mints(Platform::Ubereats), 2);
    Ok(())
}

/// Keeps the tokens' `Debug` honest where the fetcher will print them.
#[tokio::test]
async fn tokens_and_errors_print_no_secret() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let (fake, _, _) = fake_with_orders().await?;
    let r = Replica::start(&nats, &settings(Duration::ZERO)).await?;
    let cred = wolt(&fake);
    let token: AccessToken = r.store.token(&cred).await?;
    let shown = format!("{token:?} {cred:?} {:?}", r.store);
    for secret in [token.expose(), WOLT_SEED, WOLT_SECRET, WOLT_CLIENT] {
        assert!(!shown.contains(secret), "{shown}");
    }
    Ok(())
}
