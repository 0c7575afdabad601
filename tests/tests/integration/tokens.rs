//! The fleet-shared provider token store (`shared::tokens`) against a real
//! nats-server and the fake provider API: "replicas" are token stores with
//! their own NATS connections over one `PROVIDER_TOKENS` bucket; requests
//! are order GETs at the fake, retried once after a 401 with
//! `token_rejected`, as the fetcher does (Uber Eats, Wolt), or status calls
//! (Talabat, Deliveroo: their orders are pushed, never fetched).

use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, ensure};
use async_nats::jetstream::kv;
use base64::Engine;
use futures::StreamExt;
use orderhub_tests::fake_provider::{
    Api, Endpoint, FakeProvider, FaultReply, Matcher, Platform, StatusEndpoint,
};
use orderhub_tests::{NatsServer, STEP};
use secrecy::SecretString;
use shared::Provider;
use shared::config::{OrderApi, ProviderApi, ProviderApiSettings, StatusApi, StreamSettings};
use shared::failure::FailureClass;
use shared::tokens::{AccessToken, Credential, TokenError, TokenKey, TokenMetrics, TokenStore};
use url::Url;

const UBER_APP: &str = "uber-app";
const UBER_SECRET: &str = "uber-client-secret-1";
const WOLT_CLIENT: &str = "wolt-venue-client";
const WOLT_SECRET: &str = "wolt-client-secret-1";
const WOLT_SEED: &str = "wolt-first-refresh-token-1";
const TALABAT_USER: &str = "talabat-middleware-user";
const TALABAT_PASSWORD: &str = "talabat-middleware-password-1";
const ROO_CLIENT: &str = "deliveroo-client";
const ROO_SECRET: &str = "deliveroo-client-secret-1";
const GRAB_CLIENT: &str = "grab-partner-app";
const GRAB_SECRET: &str = "grab-client-secret-1";
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

/// A test's world: a nats-server, the fake provider with the Uber Eats app,
/// the Wolt venue and an order at each, and the settings of every replica.
struct Rig {
    nats: NatsServer,
    fake: FakeProvider,
    /// The orders' URLs at the fake.
    uber_url: String,
    wolt_url: String,
    settings: ProviderApiSettings,
}

impl Rig {
    async fn start(settings: ProviderApiSettings) -> anyhow::Result<Rig> {
        let nats = NatsServer::start()?;
        let fake = FakeProvider::start().await?;
        fake.add_uber_client(UBER_APP, UBER_SECRET);
        fake.add_wolt_venue(WOLT_CLIENT, WOLT_SECRET, WOLT_SEED);
        fake.add_talabat_user(TALABAT_USER, TALABAT_PASSWORD);
        fake.add_deliveroo_client(ROO_CLIENT, ROO_SECRET);
        fake.add_grab_client(GRAB_CLIENT, GRAB_SECRET);
        fake.put_order(Platform::Ubereats, Api::V2, "u-1", r#"{"id":"u-1"}"#);
        fake.put_order(Platform::Wolt, Api::V2, "w-1", r#"{"id":"w-1"}"#);
        let url = |platform, id| {
            format!(
                "{}{}",
                fake.url(),
                Endpoint::order_path(platform, Api::V2, id)
            )
        };
        Ok(Rig {
            uber_url: url(Platform::Ubereats, "u-1"),
            wolt_url: url(Platform::Wolt, "w-1"),
            nats,
            fake,
            settings,
        })
    }

    /// The account's API config at the fake, with `secret` as its client
    /// secret.
    fn api(&self, provider: Provider, secret: &str) -> ProviderApi {
        let (token_url, client, refresh, scope) = match provider {
            Provider::Ubereats => (
                self.fake.uber_token_url(),
                UBER_APP,
                None,
                Some("eats.order"),
            ),
            Provider::Talabat => (self.fake.talabat_token_url(), TALABAT_USER, None, None),
            Provider::Deliveroo => (self.fake.deliveroo_token_url(), ROO_CLIENT, None, None),
            Provider::Grab => (
                self.fake.grab_token_url(),
                GRAB_CLIENT,
                None,
                Some("food.partner_api"),
            ),
            _ => (
                self.fake.wolt_token_url(),
                WOLT_CLIENT,
                Some(WOLT_SEED),
                None,
            ),
        };
        ProviderApi {
            developer_id: None,
            key_id: None,
            app_id: None,
            access_token: None,
            base_url: Url::parse(&self.fake.url()).unwrap(),
            token_url: Some(Url::parse(&token_url).unwrap()),
            client_id: Some(SecretString::from(client.to_owned())),
            client_secret: SecretString::from(secret.to_owned()),
            refresh_token: refresh.map(|r| SecretString::from(r.to_owned())),
            scope: scope.map(str::to_owned),
            callback_hosts: Vec::new(),
            order_api: OrderApi::V2,
            fetch_deadline: Duration::from_secs(180),
            venue_id: None,
            answer_deadline: Duration::from_secs(180),
            status_api: StatusApi::Standard,
        }
    }

    /// The credential of the provider's account (`acme-uber`, `acme-wolt`,
    /// `acme-talabat`, `acme-roo`) with `secret`.
    fn credential(&self, provider: Provider, secret: &str) -> anyhow::Result<Credential> {
        let account = match provider {
            Provider::Ubereats => "acme-uber",
            Provider::Talabat => "acme-talabat",
            Provider::Deliveroo => "acme-roo",
            Provider::Grab => "acme-grab",
            _ => "acme-wolt",
        };
        Ok(Credential::new(
            provider,
            account,
            &self.api(provider, secret),
        )?)
    }

    fn uber(&self) -> anyhow::Result<Credential> {
        self.credential(Provider::Ubereats, UBER_SECRET)
    }

    fn wolt(&self) -> anyhow::Result<Credential> {
        self.credential(Provider::Wolt, WOLT_SECRET)
    }

    fn talabat(&self) -> anyhow::Result<Credential> {
        self.credential(Provider::Talabat, TALABAT_PASSWORD)
    }

    fn deliveroo(&self) -> anyhow::Result<Credential> {
        self.credential(Provider::Deliveroo, ROO_SECRET)
    }

    /// One replica sealing with the fleet's key.
    async fn replica(&self) -> anyhow::Result<Replica> {
        self.replica_with_key(TokenKey::from_bytes(&KEY)).await
    }

    /// One replica: its own NATS connection, bucket handle, store and
    /// metrics.
    async fn replica_with_key(&self, key: TokenKey) -> anyhow::Result<Replica> {
        let js = async_nats::jetstream::new(self.nats.client().await?);
        let defs = shared::streams::Definitions::load(&StreamSettings::default());
        let kv =
            shared::streams::ensure_bucket(&js, defs.bucket(shared::streams::TOKENS_BUCKET), true)
                .await?;
        let mut registry = shared::telemetry::registry("fetcher");
        let metrics = TokenMetrics::register(&mut registry);
        Ok(Replica {
            store: TokenStore::new(kv.clone(), key, &self.settings, metrics.clone()),
            kv,
            metrics,
            scrape: Box::new(move || shared::telemetry::encode(&registry)),
        })
    }

    async fn replicas<const N: usize>(&self) -> anyhow::Result<[Replica; N]> {
        let mut all = Vec::with_capacity(N);
        for _ in 0..N {
            all.push(self.replica().await?);
        }
        Ok(all
            .try_into()
            .unwrap_or_else(|_| unreachable!("{N} replicas")))
    }

    fn token_requests(&self, platform: Platform) -> usize {
        self.fake
            .requests()
            .iter()
            .filter(|r| r.endpoint == Some(Endpoint::Token(platform)))
            .count()
    }
}

/// One replica of the fetcher's token store.
struct Replica {
    store: TokenStore,
    kv: kv::Store,
    metrics: TokenMetrics,
    /// Its registry's text exposition.
    scrape: Box<dyn Fn() -> String + Send + Sync>,
}

impl Replica {
    /// The value of one token counter series (0 if absent).
    fn counter(&self, name: &str, account: &str, label: &str, value: &str) -> u64 {
        let text = (self.scrape)();
        let prefix = format!(
            "fetcher_provider_token_{name}_total{{provider=\"{}\",account=\"{account}\",{label}=\"{value}\"}} ",
            if account.contains("wolt") {
                "wolt"
            } else if account.contains("talabat") {
                "talabat"
            } else if account.contains("roo") {
                "deliveroo"
            } else if account.contains("grab") {
                "grab"
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

/// The refreshes of `account` over `replicas` by outcome: minted,
/// refreshed, reused.
fn outcomes<'a>(replicas: impl IntoIterator<Item = &'a Replica>, account: &str) -> [u64; 3] {
    let mut sum = [0; 3];
    for r in replicas {
        for (n, outcome) in sum.iter_mut().zip(["minted", "refreshed", "reused"]) {
            *n += r.refreshes(account, outcome);
        }
    }
    sum
}

/// One GET of `url` with `token`; the status.
async fn get(http: &reqwest::Client, url: &str, token: &AccessToken) -> anyhow::Result<u16> {
    Ok(http
        .get(url)
        .bearer_auth(token.expose())
        .send()
        .await?
        .status()
        .as_u16())
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
    match get(http, url, &token).await? {
        401 => get(http, url, &store.token_rejected(cred, &token).await?).await,
        status => Ok(status),
    }
}

/// `per_replica` concurrent order GETs on each replica, every one of which
/// must be answered 200.
async fn burst<'a>(
    replicas: impl IntoIterator<Item = &'a Replica>,
    cred: &Credential,
    url: &str,
    per_replica: usize,
) -> anyhow::Result<()> {
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
    ensure!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    Ok(())
}

#[tokio::test]
async fn three_replicas_on_a_cold_store_mint_one_uber_token_and_refresh_it_once()
-> anyhow::Result<()> {
    // No mint floor: the second mint below is held back by the lease and
    // the compare-and-set alone.
    let rig = Rig::start(settings(Duration::ZERO)).await?;
    let fake = &rig.fake;
    let replicas: [Replica; 3] = rig.replicas().await?;
    let cred = rig.uber()?;
    for r in &replicas {
        r.metrics.start_at_zero([&cred]);
    }

    burst(&replicas, &cred, &rig.uber_url, 15).await?;
    assert_eq!(fake.mints(Platform::Ubereats), 1);
    assert_eq!(outcomes(&replicas, "acme-uber"), [1, 0, 2]);

    // The token expires mid-run: every replica's requests get 401, one
    // replica refreshes, every request succeeds on its one retry.
    fake.expire_all_tokens();
    burst(&replicas, &cred, &rig.uber_url, 15).await?;
    assert_eq!(fake.mints(Platform::Ubereats), 2);
    assert_eq!(outcomes(&replicas, "acme-uber"), [1, 1, 4]);
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
    let rig = Rig::start(settings(Duration::ZERO)).await?;
    let (fake, url) = (&rig.fake, &rig.uber_url);
    let [a, b] = rig.replicas().await?;
    let cred = rig.uber()?;
    let http = reqwest::Client::new();
    assert_eq!(get_order(&http, &a.store, &cred, url).await?, 200);
    assert_eq!(get_order(&http, &b.store, &cred, url).await?, 200);
    let old = b.store.token(&cred).await?;
    assert_eq!(fake.mints(Platform::Ubereats), 1);

    // A is answered 401 first and refreshes.
    fake.expire_all_tokens();
    assert_eq!(get_order(&http, &a.store, &cred, url).await?, 200);
    assert_eq!(fake.mints(Platform::Ubereats), 2);
    let current = a.store.token(&cred).await?;
    assert_ne!(current, old);
    assert_eq!(current.generation(), old.generation() + 1);

    // B still holds the old token in memory, is answered 401 and finds the
    // stored token is already another one: no second mint.
    assert_eq!(b.store.token(&cred).await?, old);
    let renewed = b.store.token_rejected(&cred, &old).await?;
    assert_eq!(renewed, current);
    assert_eq!(get_order(&http, &b.store, &cred, url).await?, 200);
    assert_eq!(fake.mints(Platform::Ubereats), 2);
    assert_eq!(b.refreshes("acme-uber", "reused"), 2);
    assert_eq!(b.refreshes("acme-uber", "refreshed"), 0);
    Ok(())
}

#[tokio::test]
async fn wolt_replicas_racing_present_each_refresh_token_once() -> anyhow::Result<()> {
    let rig = Rig::start(settings(Duration::ZERO)).await?;
    let (fake, url) = (&rig.fake, &rig.wolt_url);
    let replicas: [Replica; 3] = rig.replicas().await?;
    let cred = rig.wolt()?;

    burst(&replicas, &cred, url, 10).await?;
    assert_eq!(fake.refresh_uses(WOLT_SEED), 1);
    assert_eq!(fake.mints(Platform::Wolt), 1);
    let rotated = fake
        .live_refresh_token(WOLT_CLIENT)
        .context("the rotated refresh token is live")?;

    // The access token expires: one refresh, with the rotated token.
    fake.expire_all_tokens();
    burst(&replicas, &cred, url, 10).await?;
    assert_eq!(fake.refresh_uses(&rotated), 1);
    assert_eq!(fake.mints(Platform::Wolt), 2);

    // A replica started later (same config, so the same seed) uses the
    // stored chain: the seed is never presented again.
    let late = rig.replica().await?;
    fake.expire_all_tokens();
    burst([&late], &cred, url, 5).await?;
    assert_eq!(fake.refresh_uses(WOLT_SEED), 1);
    assert_eq!(fake.mints(Platform::Wolt), 3);

    assert_eq!(fake.refresh_token_reuses(), 0);
    assert_eq!(fake.revoked(), 0);
    let [minted, refreshed, _] = outcomes(replicas.iter().chain([&late]), "acme-wolt");
    assert_eq!((minted, refreshed), (1, 2));

    // The venue is authorised again: a new refresh token in the config
    // (read by a restarted replica) starts a new chain at once, though the
    // stored token still works; the old chain is not presented any more.
    let spent_chain = fake
        .live_refresh_token(WOLT_CLIENT)
        .context("the chain's live refresh token")?;
    fake.add_wolt_venue(WOLT_CLIENT, WOLT_SECRET, "wolt-second-seed");
    let mut reauthorised = rig.api(Provider::Wolt, WOLT_SECRET);
    reauthorised.refresh_token = Some(SecretString::from("wolt-second-seed".to_owned()));
    let reseeded = Credential::new(Provider::Wolt, "acme-wolt", &reauthorised)?;
    let before = late.store.token(&cred).await?;
    let restarted = rig.replica().await?;
    let after = restarted.store.token(&reseeded).await?;
    assert_ne!(before, after);
    assert_eq!(fake.refresh_uses("wolt-second-seed"), 1);
    assert_eq!(fake.refresh_uses(&spent_chain), 0);
    assert_eq!(restarted.refreshes("acme-wolt", "minted"), 1);
    assert_eq!(fake.refresh_token_reuses(), 0);
    Ok(())
}

#[tokio::test]
async fn a_replica_configured_with_a_spent_seed_uses_the_stored_chain() -> anyhow::Result<()> {
    let rig = Rig::start(settings(Duration::ZERO)).await?;
    let fake = &rig.fake;
    // Replica A (the old config, seed S1) starts the chain.
    let old = rig.wolt()?;
    let a = rig.replica().await?;
    let first = a.store.token(&old).await?;
    assert_eq!(fake.refresh_uses(WOLT_SEED), 1);

    // The venue is authorised again; replica B (the new config, S2)
    // starts a new chain during the rolling update.
    fake.add_wolt_venue(WOLT_CLIENT, WOLT_SECRET, "wolt-second-seed");
    let mut reauthorised = rig.api(Provider::Wolt, WOLT_SECRET);
    reauthorised.refresh_token = Some(SecretString::from("wolt-second-seed".to_owned()));
    let new = Credential::new(Provider::Wolt, "acme-wolt", &reauthorised)?;
    let b = rig.replica().await?;
    let second = b.store.token(&new).await?;
    assert_ne!(first, second);
    assert_eq!(fake.refresh_uses("wolt-second-seed"), 1);

    // An S1 replica (restarted, or rolled back to) uses B's token, and
    // after a 401 refreshes the stored chain: S1 is not presented again.
    let a_again = rig.replica().await?;
    assert_eq!(a_again.store.token(&old).await?, second);
    let third = a_again.store.token_rejected(&old, &second).await?;
    assert_ne!(third, second);
    assert_eq!(fake.refresh_uses(WOLT_SEED), 1);
    // And an S2 replica goes on with that chain, not with S2 again.
    let b_again = rig.replica().await?;
    assert_eq!(b_again.store.token(&new).await?, third);
    let fourth = b_again.store.token_rejected(&new, &third).await?;
    assert_ne!(fourth, third);
    assert_eq!(fake.refresh_uses("wolt-second-seed"), 1);
    assert_eq!(fake.mints(Platform::Wolt), 4);
    assert_eq!(fake.refresh_token_reuses(), 0);
    assert_eq!(fake.revoked(), 0);
    Ok(())
}

#[tokio::test]
async fn the_mint_floor_holds_back_a_second_mint() -> anyhow::Result<()> {
    let rig = Rig::start(settings(Duration::from_secs(60))).await?;
    let fake = &rig.fake;
    let [a, b] = rig.replicas().await?;
    let cred = rig.uber()?;
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
    let e = match get_order(&http, &b.store, &cred, &rig.uber_url).await {
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
    let rig = Rig::start(settings(Duration::ZERO)).await?;
    let r = rig.replica().await?;
    let http = reqwest::Client::new();
    let (u, w) = (rig.uber()?, rig.wolt()?);
    assert_eq!(get_order(&http, &r.store, &u, &rig.uber_url).await?, 200);
    assert_eq!(get_order(&http, &r.store, &w, &rig.wolt_url).await?, 200);
    let secrets = [
        r.store.token(&u).await?.expose().to_owned(),
        r.store.token(&w).await?.expose().to_owned(),
        rig.fake
            .live_refresh_token(WOLT_CLIENT)
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
    let rig = Rig::start(settings(Duration::ZERO)).await?;
    let fake = &rig.fake;
    let r = rig.replica().await?;

    // Wrong secret: 401 invalid_client, permanent, the secret not quoted.
    let wrong = rig.credential(Provider::Ubereats, "not-the-secret")?;
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
    let cred = rig.uber()?;
    r.store.token(&cred).await?;
    assert_eq!(fake.mints(Platform::Ubereats), 1);

    // 503 with Retry-After: transient, its delay honoured by every caller.
    let replica = rig.replica().await?;
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
    let calls = rig.token_requests(Platform::Ubereats);
    // Within the Retry-After nobody asks the endpoint again.
    let again = r.store.token_rejected(&cred, &old).await.unwrap_err();
    assert!(
        matches!(again, TokenError::Unavailable { retry_after: Some(d), .. } if d <= Duration::from_secs(2)),
        "{again}"
    );
    assert_eq!(rig.token_requests(Platform::Ubereats), calls);
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
    // A lease shorter than the token call (the config refuses that; here it
    // plays a holder that stopped mid-call).
    let rig = Rig::start(ProviderApiSettings {
        request_timeout: Duration::from_secs(4),
        token_lease: Duration::from_secs(1),
        ..settings(Duration::ZERO)
    })
    .await?;
    let fake = &rig.fake;
    let [a, b] = rig.replicas().await?;
    let cred = rig.uber()?;
    fake.fault(Matcher::Token(Platform::Ubereats), FaultReply::hang());
    let stuck = {
        let (store, cred) = (a.store.clone(), cred.clone());
        tokio::spawn(async move { store.token(&cred).await })
    };
    orderhub_tests::eventually(Duration::from_secs(5), "the first token call", || async {
        (rig.token_requests(Platform::Ubereats) == 1).then_some(())
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
async fn settle_waits_for_a_token_call_its_caller_gave_up_on() -> anyhow::Result<()> {
    let rig = Rig::start(settings(Duration::ZERO)).await?;
    let fake = &rig.fake;
    let [a, b] = rig.replicas().await?;
    let cred = rig.uber()?;
    assert!(a.store.settle(Duration::ZERO).await, "nothing runs yet");
    fake.fault(Matcher::Token(Platform::Ubereats), FaultReply::hang());
    let caller = {
        let (store, cred) = (a.store.clone(), cred.clone());
        tokio::spawn(async move { store.token(&cred).await })
    };
    orderhub_tests::eventually(Duration::from_secs(5), "the token call", || async {
        (rig.token_requests(Platform::Ubereats) == 1).then_some(())
    })
    .await?;
    caller.abort();
    // The call goes on without its caller until its timeout (2 s), then
    // settles: the failure counted, the lease released.
    assert!(!a.store.settle(Duration::from_millis(100)).await);
    assert!(a.store.settle(Duration::from_secs(10)).await);
    assert_eq!(a.failures("acme-uber", "unavailable"), 1);
    b.store.token(&cred).await?;
    assert_eq!(fake.mints(Platform::Ubereats), 1);
    Ok(())
}

#[tokio::test]
async fn an_entry_sealed_with_another_key_is_an_error_until_reseeded() -> anyhow::Result<()> {
    let rig = Rig::start(settings(Duration::ZERO)).await?;
    let good = rig.replica().await?;
    let cred = rig.uber()?;
    let token = good.store.token(&cred).await?;

    let other = rig.replica_with_key(TokenKey::generate()).await?;
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
    let fresh = rig.replica().await?;
    assert_eq!(fresh.store.token(&cred).await?, token);
    assert_eq!(rig.fake.mints(Platform::Ubereats), 1);
    assert_eq!(other.failures("acme-uber", "store_failed"), 1);

    // An explicit re-seed drops the entry; the new key's store mints.
    other.store.reseed(&cred).await?;
    let minted = other.store.token(&cred).await?;
    assert_ne!(minted, token);
    assert_eq!(rig.fake.mints(Platform::Ubereats), 2);
    Ok(())
}

/// Keeps the tokens' `Debug` honest where the fetcher will print them.
#[tokio::test]
async fn tokens_and_errors_print_no_secret() -> anyhow::Result<()> {
    let rig = Rig::start(settings(Duration::ZERO)).await?;
    let r = rig.replica().await?;
    let cred = rig.wolt()?;
    let token: AccessToken = r.store.token(&cred).await?;
    let shown = format!("{token:?} {cred:?} {:?}", r.store);
    for secret in [token.expose(), WOLT_SEED, WOLT_SECRET, WOLT_CLIENT] {
        assert!(!shown.contains(secret), "{shown}");
    }
    Ok(())
}

/// One status call at the fake with `token`, as the status worker makes
/// it: Talabat's "prepared" callback (no body), Deliveroo's prep stage.
/// `id` is the order (Talabat: the callback token). The fake answers it
/// 200 (Talabat) or 204 (Deliveroo) only with a live token of the
/// provider, else 401.
async fn status_call(
    http: &reqwest::Client,
    fake_url: &str,
    provider: Provider,
    id: &str,
    token: &AccessToken,
) -> anyhow::Result<u16> {
    let request = match provider {
        Provider::Talabat => http.post(format!(
            "{fake_url}{}",
            StatusEndpoint::TalabatPreparationCompleted.path(id)
        )),
        Provider::Deliveroo => http
            .post(format!(
                "{fake_url}{}",
                StatusEndpoint::DeliverooPrepStage.path(id)
            ))
            .json(&serde_json::json!({
                "stage": "in_kitchen",
                "occurred_at": shared::dlq::rfc3339(SystemTime::now()),
            })),
        other => anyhow::bail!("no status call for {other} here"),
    };
    let answer = tokio::time::timeout(STEP, request.bearer_auth(token.expose()).send()).await??;
    Ok(answer.status().as_u16())
}

#[tokio::test]
async fn talabat_and_deliveroo_tokens_come_from_the_fake_and_one_mint_serves_many_calls()
-> anyhow::Result<()> {
    let rig = Rig::start(settings(Duration::from_secs(60))).await?;
    let fake = &rig.fake;
    let replicas: [Replica; 2] = rig.replicas().await?;
    let (talabat, deliveroo) = (rig.talabat()?, rig.deliveroo()?);
    for r in &replicas {
        r.metrics.start_at_zero([&talabat, &deliveroo]);
    }
    let http = reqwest::Client::new();

    // 2 replicas × 10 concurrent status calls per provider, each with the
    // token its store hands out.
    let mut calls = Vec::new();
    for (k, r) in replicas.iter().enumerate() {
        for n in 0..10 {
            for (cred, id) in [
                (&talabat, format!("tal-{k}-{n}")),
                (&deliveroo, format!("gb:roo-{k}-{n}")),
            ] {
                let (http, store, cred, url) =
                    (http.clone(), r.store.clone(), cred.clone(), fake.url());
                calls.push(tokio::spawn(async move {
                    let token = tokio::time::timeout(STEP, store.token(&cred)).await??;
                    let provider = cred.provider();
                    anyhow::Ok((
                        provider,
                        status_call(&http, &url, provider, &id, &token).await?,
                    ))
                }));
            }
        }
    }
    let mut answered = Vec::new();
    for call in calls {
        answered.push(tokio::time::timeout(STEP, call).await???);
    }
    assert_eq!(answered.len(), 40);
    for (provider, status) in &answered {
        let expected = if *provider == Provider::Talabat {
            200
        } else {
            204
        };
        assert_eq!(*status, expected, "{provider}");
    }
    assert_eq!(fake.mints_by(Platform::Talabat, TALABAT_USER), 1);
    assert_eq!(fake.mints_by(Platform::Deliveroo, ROO_CLIENT), 1);
    assert_eq!(rig.token_requests(Platform::Talabat), 1);
    assert_eq!(rig.token_requests(Platform::Deliveroo), 1);
    // One replica minted each; the other read what it stored.
    assert_eq!(outcomes(&replicas, "acme-talabat"), [1, 0, 1]);
    assert_eq!(outcomes(&replicas, "acme-roo"), [1, 0, 1]);
    for r in &replicas {
        for account in ["acme-talabat", "acme-roo"] {
            for reason in ["rejected", "unavailable", "mint_floor", "store_failed"] {
                assert_eq!(r.failures(account, reason), 0, "{account} {reason}");
            }
        }
    }

    // Another account of the same middleware user shares the login.
    let [a, b] = &replicas;
    let second = Credential::new(
        Provider::Talabat,
        "acme-talabat-2",
        &rig.api(Provider::Talabat, TALABAT_PASSWORD),
    )?;
    assert_eq!(second.key(), talabat.key());
    let shared_token = tokio::time::timeout(STEP, b.store.token(&second)).await??;
    assert_eq!(
        shared_token,
        tokio::time::timeout(STEP, a.store.token(&talabat)).await??
    );
    assert_eq!(fake.mints_by(Platform::Talabat, TALABAT_USER), 1);
    // The two providers' tokens are their own.
    let roo_token = tokio::time::timeout(STEP, a.store.token(&deliveroo)).await??;
    assert_ne!(roo_token, shared_token);
    assert_eq!(
        status_call(&http, &fake.url(), Provider::Talabat, "tal-x", &roo_token).await?,
        401
    );
    Ok(())
}

#[tokio::test]
async fn a_short_deliveroo_token_is_renewed_ahead_under_the_default_floor() -> anyhow::Result<()> {
    // The defaults: renewed 2 min ahead, at most one mint a minute. A
    // token living 12 s is renewed at half its life (6 s), not held back
    // by the floor until it expired.
    let rig = Rig::start(settings(Duration::from_secs(60))).await?;
    let fake = &rig.fake;
    fake.set_deliveroo_expires_in(Duration::from_secs(12));
    let r = rig.replica().await?;
    let cred = rig.deliveroo()?;
    r.metrics.start_at_zero([&cred]);
    let http = reqwest::Client::new();

    let first = tokio::time::timeout(STEP, r.store.token(&cred)).await??;
    assert_eq!(first.generation(), 1);
    let mut n = 0;
    let renewed = loop {
        n += 1;
        ensure!(n <= 200, "no renewal after {n} calls");
        let token = tokio::time::timeout(STEP, r.store.token(&cred)).await??;
        // Every call's token works: none is handed out expired.
        let status = status_call(
            &http,
            &fake.url(),
            Provider::Deliveroo,
            &format!("gb:{n}"),
            &token,
        )
        .await?;
        assert_eq!(
            status,
            204,
            "call {n}, token generation {}",
            token.generation()
        );
        if token != first {
            break token;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(renewed.generation(), 2);
    assert!(renewed.expires_at() > first.expires_at());
    // Many calls on the first token, one renewal, no error of any kind.
    assert!(n > 2, "{n}");
    assert_eq!(fake.mints_by(Platform::Deliveroo, ROO_CLIENT), 2);
    assert_eq!(outcomes([&r], "acme-roo"), [1, 1, 0]);
    for reason in ["rejected", "unavailable", "mint_floor", "store_failed"] {
        assert_eq!(r.failures("acme-roo", reason), 0, "{reason}");
    }
    Ok(())
}

#[tokio::test]
async fn a_wrong_talabat_password_or_deliveroo_secret_is_refused_naming_no_secret()
-> anyhow::Result<()> {
    let rig = Rig::start(settings(Duration::from_secs(60))).await?;
    let r = rig.replica().await?;
    for (provider, account, secret, hint) in [
        (
            Provider::Talabat,
            "acme-talabat",
            "wrong-talabat-password",
            "check the account's api.client_id (the middleware user name) and client_secret (its password)",
        ),
        (
            Provider::Deliveroo,
            "acme-roo",
            "wrong-deliveroo-secret",
            "check the account's api.client_id and client_secret",
        ),
    ] {
        let cred = rig.credential(provider, secret)?;
        let e = tokio::time::timeout(STEP, r.store.token(&cred))
            .await?
            .unwrap_err();
        assert_eq!(e.class(), FailureClass::TokenRejected);
        let said = match provider {
            Provider::Deliveroo => "401 invalid_client",
            _ => "401",
        };
        assert_eq!(
            e.to_string(),
            format!(
                "{provider} account {account}: the token endpoint refused the credentials: \
                 the token endpoint answered {said}; {hint}"
            )
        );
        for secret in [secret, TALABAT_USER, ROO_CLIENT] {
            assert!(!e.to_string().contains(secret), "{e}");
        }
        assert_eq!(r.failures(account, "rejected"), 1);
    }
    assert_eq!(rig.fake.mints(Platform::Talabat), 0);
    assert_eq!(rig.fake.mints(Platform::Deliveroo), 0);
    Ok(())
}

/// Grab: the token comes from Grab's endpoint as a JSON grant, one mint
/// serves every replica's calls, and wrong credentials are refused naming
/// no secret.
#[tokio::test]
async fn grab_tokens_come_from_a_json_grant_and_one_mint_serves_the_fleet() -> anyhow::Result<()> {
    let rig = Rig::start(settings(Duration::from_secs(60))).await?;
    let fake = &rig.fake;
    let replicas: [Replica; 2] = rig.replicas().await?;
    let grab = rig.credential(Provider::Grab, GRAB_SECRET)?;
    for r in &replicas {
        r.metrics.start_at_zero([&grab]);
    }
    let http = reqwest::Client::new();
    let mut calls = Vec::new();
    for (k, r) in replicas.iter().enumerate() {
        for n in 0..10 {
            let (http, store, cred, url) =
                (http.clone(), r.store.clone(), grab.clone(), fake.url());
            calls.push(tokio::spawn(async move {
                let token = tokio::time::timeout(STEP, store.token(&cred)).await??;
                let answer = tokio::time::timeout(
                    STEP,
                    http.post(format!("{url}{}", StatusEndpoint::GrabMark.path("")))
                        .bearer_auth(token.expose())
                        .json(
                            &serde_json::json!({"orderID": format!("gr-{k}-{n}"), "markStatus": 1}),
                        )
                        .send(),
                )
                .await??;
                anyhow::Ok(answer.status().as_u16())
            }));
        }
    }
    for call in calls {
        assert_eq!(tokio::time::timeout(STEP, call).await???, 204);
    }
    assert_eq!(fake.mints_by(Platform::Grab, GRAB_CLIENT), 1);
    assert_eq!(rig.token_requests(Platform::Grab), 1);
    assert_eq!(outcomes(&replicas, "acme-grab"), [1, 0, 1]);
    // Another account of the same partner app shares the token.
    let second = Credential::new(
        Provider::Grab,
        "acme-grab-2",
        &rig.api(Provider::Grab, GRAB_SECRET),
    )?;
    assert_eq!(second.key(), grab.key());
    let [a, b] = &replicas;
    assert_eq!(
        tokio::time::timeout(STEP, b.store.token(&second)).await??,
        tokio::time::timeout(STEP, a.store.token(&grab)).await??
    );
    assert_eq!(fake.mints(Platform::Grab), 1);

    // Wrong credentials (another app, so no stored token answers for
    // them): refused, permanent, no secret named.
    let mut api = rig.api(Provider::Grab, "wrong-grab-secret");
    api.client_id = Some(SecretString::from("grab-unknown-app".to_owned()));
    let wrong = Credential::new(Provider::Grab, "acme-grab-wrong", &api)?;
    assert_ne!(wrong.key(), grab.key());
    let e = tokio::time::timeout(STEP, a.store.token(&wrong))
        .await?
        .unwrap_err();
    assert_eq!(e.class(), FailureClass::TokenRejected);
    assert_eq!(
        e.to_string(),
        "grab account acme-grab-wrong: the token endpoint refused the credentials: \
         the token endpoint answered 401 invalid_client; \
         check the account's api.client_id, client_secret and scope"
    );
    for secret in ["wrong-grab-secret", "grab-unknown-app", GRAB_SECRET] {
        assert!(!e.to_string().contains(secret), "{e}");
    }
    assert_eq!(fake.mints(Platform::Grab), 1);
    Ok(())
}
