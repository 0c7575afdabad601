//! The provider fixtures under `tests/fixtures/<provider>/` and the request
//! a provider would make for each: used by the end-to-end tests and by the
//! `sample-traffic` command.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use secrecy::SecretString;
use serde_json::Value;
use shared::Provider;
use shared::config::Account;
use shared::verify::{self, VerifyOptions};

/// What the golden tests give as the ingress's acceptance time; an order
/// whose payload has no time of its own carries it as placed_at.
pub const GOLDEN_RECEIVED_AT: &str = "2024-06-14T18:00:00Z";

/// An order without what differs between runs: the hub's ids, the stream
/// position, and the acceptance time where the payload has no time.
pub fn comparable(mut order: Value, expected: &Value) -> Value {
    if let Some(o) = order.as_object_mut() {
        o.remove("webhook_id");
        o.remove("raw");
        if expected["placed_at"] == GOLDEN_RECEIVED_AT {
            o.insert("placed_at".into(), GOLDEN_RECEIVED_AT.into());
            // An update's key covers its content, here the receipt time.
            if expected["event"] == "updated" {
                o.insert(
                    "idempotency_key".into(),
                    expected["idempotency_key"].clone(),
                );
            }
        }
    }
    order
}

/// One payload with what the transformer must make of it.
pub struct Fixture {
    pub provider: Provider,
    /// `<provider>/<file>`
    pub name: String,
    pub body: Vec<u8>,
    /// `Orderhub-Path-*` values: the URL the provider calls (and
    /// `Orderhub-Account` where it is not the caller's account: a Just Eat
    /// body that does not name its event goes to the account bound to it).
    pub path_headers: BTreeMap<String, String>,
    /// The canonical order, or `{"error": {"class", "message"}}`.
    pub expected: Value,
}

/// What a provider signs one account's requests with: a secret and the
/// account's verify options (Grab's token audience, Keeta's webhook URL).
#[derive(Clone)]
pub struct Signer {
    pub secret: SecretString,
    pub options: VerifyOptions,
}

impl Signer {
    /// `secret` with default options (every scheme but Grab's and Keeta's).
    pub fn new(secret: SecretString) -> Self {
        Signer {
            secret,
            options: VerifyOptions::default(),
        }
    }

    /// `account`'s first secret and its options.
    pub fn of(account: &Account) -> Self {
        Signer {
            secret: account
                .secrets
                .first()
                .expect("every account has a secret")
                .clone(),
            options: VerifyOptions::for_account(account),
        }
    }

    /// The same options with another secret (a forger's).
    pub fn with_secret(&self, secret: SecretString) -> Self {
        Signer {
            secret,
            options: self.options.clone(),
        }
    }
}

/// A bare secret signs with default options, as every scheme but Grab's
/// and Keeta's can.
impl From<&SecretString> for Signer {
    fn from(secret: &SecretString) -> Self {
        Signer::new(secret.clone())
    }
}

impl From<&Signer> for Signer {
    fn from(signer: &Signer) -> Self {
        signer.clone()
    }
}

impl Fixture {
    pub fn is_refused(&self) -> bool {
        self.expected.get("error").is_some()
    }

    /// The account the provider sends this fixture to when `account` is
    /// the provider's usual one: `Orderhub-Account` where the fixture names
    /// another (a Just Eat body that does not name its event goes to the
    /// account bound to it).
    pub fn target_account(&self, account: &str) -> String {
        self.path_headers
            .get("Orderhub-Account")
            .cloned()
            .unwrap_or_else(|| account.to_owned())
    }

    /// The URL the provider posts this fixture to (`account` as in
    /// [`Fixture::target_account`]), and whether with PUT.
    fn url(&self, ingress: &str, account: &str) -> (bool, String) {
        let p = self.provider;
        let h = |k: &str| self.path_headers.get(k).cloned();
        let base = format!(
            "{ingress}/api/webhooks/{p}/{}",
            self.target_account(account)
        );
        match (
            p,
            h("Orderhub-Path-Remoteid"),
            h("Orderhub-Path-Remoteorderid"),
            h("Orderhub-Path-Event"),
        ) {
            (Provider::Talabat, Some(remote), Some(order), _) => (
                true,
                format!("{base}/remoteId/{remote}/remoteOrder/{order}/posOrderStatus"),
            ),
            (Provider::Talabat, Some(remote), None, _) => (false, format!("{base}/order/{remote}")),
            (Provider::Justeat, _, _, Some(event)) => (false, format!("{base}/{event}")),
            _ => (false, base),
        }
    }

    /// The provider's request to `ingress` for `account`, signed by
    /// `signer` (the target account's: [`Fixture::target_account`]; a bare
    /// secret for the schemes that need no account options) now: Grab's
    /// with a token minted for the account, Keeta's envelope re-signed over
    /// the account's webhook URL with the current time.
    pub fn request(
        &self,
        client: &reqwest::Client,
        ingress: &str,
        account: &str,
        signer: impl Into<Signer>,
    ) -> reqwest::RequestBuilder {
        let signer = signer.into();
        let signed = verify::verifier(self.provider)
            .sign(
                &self.body,
                &signer.secret,
                &signer.options,
                SystemTime::now(),
            )
            .expect("fixtures can be signed");
        self.send(client, ingress, account, signed)
    }

    /// This fixture's request with `signed`'s headers and body (as
    /// [`Verifier::sign`](verify::Verifier::sign) made them).
    pub fn send(
        &self,
        client: &reqwest::Client,
        ingress: &str,
        account: &str,
        signed: verify::Signed,
    ) -> reqwest::RequestBuilder {
        let (put, url) = self.url(ingress, account);
        let req = if put {
            client.put(url)
        } else {
            client.post(url)
        };
        let body = signed.body.clone().unwrap_or_else(|| self.body.clone());
        req.headers(signed.headers)
            .header("content-type", "application/json")
            .body(body)
    }
}

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Every fixture of every provider, in a stable order.
pub fn all() -> Vec<Fixture> {
    let root = crate::workspace().join("tests/fixtures");
    let mut out = Vec::new();
    for provider in Provider::ALL {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(root.join(provider.as_str()))
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        paths.retain(|p| {
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            n.ends_with(".json") && !n.ends_with(".expected.json") && !n.ends_with(".headers.json")
        });
        paths.sort();
        for p in paths {
            let stem = p
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_owned();
            let sibling = |suffix: &str| p.with_file_name(format!("{stem}.{suffix}.json"));
            out.push(Fixture {
                provider,
                name: format!("{provider}/{stem}"),
                body: std::fs::read(&p).expect("fixture readable"),
                path_headers: read_json(&sibling("headers"))
                    .and_then(|v| serde_json::from_value(v).ok())
                    .unwrap_or_default(),
                expected: read_json(&sibling("expected")).unwrap_or(Value::Null),
            });
        }
    }
    out
}
