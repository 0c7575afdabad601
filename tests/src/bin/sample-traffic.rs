//! Sends a mix of webhooks to a running local hub (`scripts/dev-up`), so a
//! newcomer sees every outcome: every provider fixture signed with the
//! example secrets (accepted, then delivered or dead-lettered), a re-sent
//! one (duplicate), a bad signature and an unknown account (401), and a
//! payload that can never become an order (accepted, then dead-lettered).
//! Uber Eats and Wolt fixtures are notifications: dev-up's fetcher reads
//! their orders from its fake provider API before they reach the backend.
//! A fixture addressed to an account the hub config (`HUB_CONFIG`, else the
//! embedded example) does not have is skipped, not sent to be refused.
//! Prints one line per request.

use clap::Parser;
use secrecy::SecretString;
use shared::Provider;

#[derive(Debug, Parser)]
struct Args {
    /// The ingress
    #[arg(long, default_value = "http://127.0.0.1:3002")]
    ingress: String,
}

/// The example secret dev-up exports for a provider's account.
fn secret(p: Provider) -> Option<SecretString> {
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

/// The accounts of the hub config dev-up runs, as (provider, id); `None`
/// when it does not load here (then every fixture is sent).
fn configured_accounts() -> Option<Vec<(Provider, String)>> {
    let path = std::env::var_os("HUB_CONFIG").map(std::path::PathBuf::from);
    match shared::config::HubConfig::load(path.as_deref()) {
        Ok(hub) => Some(
            hub.accounts
                .into_iter()
                .map(|a| (a.provider, a.id))
                .collect(),
        ),
        Err(e) => {
            eprintln!("the hub config does not load here ({e}): sending every fixture");
            None
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let client = reqwest::Client::new();
    let fixtures = orderhub_tests::fixtures::all();
    let accounts = configured_accounts();
    for f in &fixtures {
        let Some(secret) = secret(f.provider) else {
            eprintln!(
                "no ACME_{}_SECRET in the environment: run with the secrets scripts/dev-up prints",
                f.provider.as_str().to_uppercase()
            );
            return std::process::ExitCode::from(2);
        };
        let account = format!("acme-{}", f.provider);
        let target = f
            .path_headers
            .get(shared::headers::ACCOUNT)
            .cloned()
            .unwrap_or_else(|| account.clone());
        if let Some(accounts) = &accounts
            && !accounts.contains(&(f.provider, target.clone()))
        {
            println!(
                "---  {:<48} skipped: the hub config has no {} account {target}",
                f.name, f.provider
            );
            continue;
        }
        let expect = if f.is_refused() {
            "-> DLQ"
        } else {
            "-> backend"
        };
        show(
            &format!("{} {expect}", f.name),
            f.request(&client, &args.ingress, &account, &secret),
        )
        .await;
    }
    let careem = &fixtures
        .iter()
        .find(|f| f.provider == Provider::Careem)
        .expect("a careem fixture");
    let secret = secret(Provider::Careem).expect("checked above");
    show(
        "careem again (a provider re-send)",
        careem.request(&client, &args.ingress, "acme-careem", &secret),
    )
    .await;
    let wrong = SecretString::from("not-the-secret".to_owned());
    show(
        "careem, wrong secret",
        careem.request(&client, &args.ingress, "acme-careem", &wrong),
    )
    .await;
    show(
        "careem, unknown account",
        careem.request(&client, &args.ingress, "nobody", &secret),
    )
    .await;
    let junk = br#"{"order_id":"JUNK-1","items":"none"}"#;
    show(
        "careem, malformed order -> DLQ",
        client
            .post(format!("{}/api/webhooks/careem/acme-careem", args.ingress))
            .headers(shared::verify::careem::sign(junk, &secret))
            .body(&junk[..]),
    )
    .await;
    std::process::ExitCode::SUCCESS
}
