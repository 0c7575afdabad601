//! Sends a mix of webhooks to a running local hub (`scripts/dev-up`), so a
//! newcomer sees every outcome: every provider fixture signed with the
//! example secrets (accepted, then delivered or dead-lettered), a re-sent
//! one (duplicate), a bad signature and an unknown account (401), and a
//! payload that can never become an order (accepted, then dead-lettered).
//! Uber Eats and Wolt fixtures are notifications: dev-up's fetcher reads
//! their orders from its fake provider API before they reach the backend.
//! Grab first gets its bearer token from the hub's token endpoint (printed
//! without the token) and sends its fixtures with it; Keeta's envelopes are
//! re-signed now over the account's configured webhook URL. Each fixture is
//! signed with its account's secret from the hub config.
//! A fixture addressed to an account the hub config (`HUB_CONFIG`, else the
//! embedded example) does not have is skipped, not sent to be refused.
//! Prints one line per request.

use clap::Parser;
use orderhub_tests::fixtures::{Fixture, Signer};
use secrecy::{ExposeSecret, SecretString};
use shared::Provider;
use shared::config::HubConfig;
use shared::verify::{self, Signed};

#[derive(Debug, Parser)]
struct Args {
    /// The ingress
    #[arg(long, default_value = "http://127.0.0.1:3002")]
    ingress: String,
}

/// The example secret dev-up exports for a provider's account, for when
/// the hub config does not load here.
fn env_secret(p: Provider) -> Option<SecretString> {
    let name = format!("ACME_{}_SECRET", p.as_str().to_uppercase());
    std::env::var(&name).ok().map(SecretString::from)
}

async fn show(what: &str, r: reqwest::RequestBuilder) {
    match r.timeout(std::time::Duration::from_secs(10)).send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            println!("{status}  {what:<48} {text}");
        }
        Err(e) => println!("ERR  {what:<48} {e}"),
    }
}

/// The hub config dev-up runs; `None` when it does not load here (then
/// every fixture is sent, signed with the `ACME_<PROVIDER>_SECRET`s).
fn configured() -> Option<HubConfig> {
    let path = std::env::var_os("HUB_CONFIG").map(std::path::PathBuf::from);
    match HubConfig::load(path.as_deref()) {
        Ok(hub) => Some(hub),
        Err(e) => {
            eprintln!("the hub config does not load here ({e}): sending every fixture");
            None
        }
    }
}

/// What signs a fixture for `account`: the config's account, or the
/// example secret when there is no config. `Err` says why it is skipped.
fn signer_for(
    hub: Option<&HubConfig>,
    provider: Provider,
    account: &str,
) -> Result<Option<Signer>, String> {
    match hub {
        Some(hub) => match hub.account(provider, account) {
            Some(a) => Ok(Some(Signer::of(a))),
            None => Err(format!(
                "skipped: the hub config has no {provider} account {account}"
            )),
        },
        None => Ok(env_secret(provider).map(Signer::new)),
    }
}

/// Grab's first step: a token from the hub's token endpoint with the
/// account's client credentials (its JSON request, as Grab's SDK sends it).
/// Prints the answer without the token.
async fn grab_token(
    client: &reqwest::Client,
    ingress: &str,
    hub: &HubConfig,
) -> Option<(String, String)> {
    let account = hub.account(Provider::Grab, "acme-grab")?;
    let endpoint = account.token_endpoint.as_ref()?;
    let what = "grab token endpoint (client credentials)";
    let r = client
        .post(format!(
            "{ingress}/api/webhooks/grab/{}/oauth/token",
            account.id
        ))
        .json(&serde_json::json!({
            "client_id": endpoint.client_id,
            "client_secret": endpoint.client_secrets.first()?.expose_secret(),
            "grant_type": "client_credentials",
            "scope": "food.partner_api",
        }))
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await;
    let resp = match r {
        Ok(resp) => resp,
        Err(e) => {
            println!("ERR  {what:<48} {e}");
            return None;
        }
    };
    let status = resp.status().as_u16();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    let token = body["access_token"].as_str().map(str::to_owned);
    let mut shown = body.clone();
    if let Some(o) = shown.as_object_mut()
        && o.contains_key("access_token")
    {
        o.insert("access_token".into(), "<redacted>".into());
    }
    println!("{status}  {what:<48} {shown}");
    Some((account.id.clone(), token?))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let client = reqwest::Client::new();
    let fixtures = orderhub_tests::fixtures::all();
    let hub = configured();
    // Grab sends its webhooks with the token it got from the hub.
    let grab = match &hub {
        Some(hub) => grab_token(&client, &args.ingress, hub).await,
        None => None,
    };
    for f in &fixtures {
        let account = format!("acme-{}", f.provider);
        let target = f.target_account(&account);
        let signer = match signer_for(hub.as_ref(), f.provider, &target) {
            Ok(Some(signer)) => signer,
            Ok(None) => {
                eprintln!(
                    "no ACME_{}_SECRET in the environment: run with the secrets scripts/dev-up prints",
                    f.provider.as_str().to_uppercase()
                );
                return std::process::ExitCode::from(2);
            }
            Err(why) => {
                println!("---  {:<48} {why}", f.name);
                continue;
            }
        };
        let expect = if f.is_refused() {
            "-> DLQ"
        } else {
            "-> backend"
        };
        let what = format!("{} {expect}", f.name);
        let signed = match (&grab, f.provider) {
            (Some((grab_account, token)), Provider::Grab) if *grab_account == target => {
                let mut headers = reqwest::header::HeaderMap::new();
                headers.insert(
                    "authorization",
                    format!("Bearer {token}")
                        .parse()
                        .expect("a jwt is a header value"),
                );
                Ok(Signed::headers(headers))
            }
            _ => verify::verifier(f.provider).sign(
                &f.body,
                &signer.secret,
                &signer.options,
                std::time::SystemTime::now(),
            ),
        };
        match signed {
            Ok(signed) => show(&what, f.send(&client, &args.ingress, &account, signed)).await,
            Err(e) => println!("---  {what:<48} skipped: cannot sign without the hub config: {e}"),
        }
    }
    let Some(careem) = fixtures.iter().find(|f| f.provider == Provider::Careem) else {
        return std::process::ExitCode::SUCCESS;
    };
    let Ok(Some(signer)) = signer_for(hub.as_ref(), Provider::Careem, "acme-careem") else {
        return std::process::ExitCode::SUCCESS;
    };
    extras(&client, &args.ingress, careem, &signer).await;
    std::process::ExitCode::SUCCESS
}

/// A re-send, a wrong secret, an unknown account and a payload that can
/// never become an order, all on Careem's account.
async fn extras(client: &reqwest::Client, ingress: &str, careem: &Fixture, signer: &Signer) {
    show(
        "careem again (a provider re-send)",
        careem.request(client, ingress, "acme-careem", signer),
    )
    .await;
    let wrong = SecretString::from("not-the-secret".to_owned());
    show(
        "careem, wrong secret",
        careem.request(client, ingress, "acme-careem", &wrong),
    )
    .await;
    show(
        "careem, unknown account",
        careem.request(client, ingress, "nobody", signer),
    )
    .await;
    let junk = br#"{"order_id":"JUNK-1","items":"none"}"#;
    show(
        "careem, malformed order -> DLQ",
        client
            .post(format!("{ingress}/api/webhooks/careem/acme-careem"))
            .headers(shared::verify::careem::sign(junk, &signer.secret))
            .body(&junk[..]),
    )
    .await;
}
