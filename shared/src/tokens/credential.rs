//! Which token a call needs: an account's `[account.api]` credentials, the
//! grant its provider uses, and the bucket key its token lives under.
//!
//! - Uber Eats: `client_credentials` (form `client_id`, `client_secret`,
//!   `grant_type`, `scope`). A token belongs to the app, not to a store, so
//!   accounts sharing an app (token URL, client id and scope) share one
//!   entry, `ubereats.<16 hex of sha256(token_url, client_id, scope)>`: one
//!   token for all of them instead of one mint each against the app's
//!   hourly cap.
//! - Wolt: `refresh_token` grant with HTTP Basic client authentication. A
//!   token belongs to one venue, so the entry is `wolt.<account id>` (an
//!   account id a bucket key cannot hold is hashed: `wolt.=<16 hex>`). The
//!   configured refresh token only seeds the chain; its fingerprint is
//!   stored so that a new one in the config (the venue authorised again)
//!   replaces the chain and the old one is never presented twice.
//!
//! Other providers have no grant yet ([`CredentialError::Unsupported`]);
//! the grant is an enum so that their logins slot in.

use std::fmt;

use ring::digest::{SHA256, digest};
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use crate::Provider;
use crate::config::ProviderApi;

/// How a credential gets a token.
#[derive(Clone)]
pub(crate) enum Grant {
    /// Uber Eats: a new token from the client credentials.
    ClientCredentials {
        client_id: SecretString,
        client_secret: SecretString,
        scope: Option<String>,
    },
    /// Wolt: the chain's current refresh token (or the configured seed)
    /// for a new access token and the next refresh token.
    RefreshToken {
        client_id: SecretString,
        client_secret: SecretString,
        seed: SecretString,
        /// sha256 of `seed`, hex.
        seed_fingerprint: String,
    },
}

/// One account's API credential, as the token store uses it. Cheap to
/// clone; its `Debug` shows the account and the bucket key only.
#[derive(Clone)]
pub struct Credential {
    pub(crate) provider: Provider,
    pub(crate) account: String,
    pub(crate) key: String,
    pub(crate) token_url: Url,
    pub(crate) grant: Grant,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("provider", &self.provider)
            .field("account", &self.account)
            .field("key", &self.key)
            .field("secrets", &"[redacted]")
            .finish()
    }
}

/// An account whose credential the token store cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error(
        "account {account}: the token store has no grant for {provider} yet (Uber Eats and Wolt only)"
    )]
    Unsupported { provider: Provider, account: String },
    #[error(
        "account {account}: a Wolt venue needs the refresh token of its authorisation (api.refresh_token_env or api.refresh_token_file)"
    )]
    MissingRefreshToken { account: String },
    #[error("account {account}: a token needs api.token_url and api.client_id_env")]
    NoTokenEndpoint { account: String },
}

impl Credential {
    /// The credential of `account` (of `provider`) from its `[account.api]`.
    pub fn new(
        provider: Provider,
        account: &str,
        api: &ProviderApi,
    ) -> Result<Credential, CredentialError> {
        let (Some(token_url), Some(client_id)) = (&api.token_url, &api.client_id) else {
            return Err(CredentialError::NoTokenEndpoint {
                account: account.to_owned(),
            });
        };
        let (key, grant) = match provider {
            Provider::Ubereats => {
                let scope = api.scope.clone();
                let key = format!(
                    "ubereats.{}",
                    &sha256_hex(&[
                        token_url.as_str().as_bytes(),
                        client_id.expose_secret().as_bytes(),
                        scope.as_deref().unwrap_or("").as_bytes(),
                    ])[..16]
                );
                let grant = Grant::ClientCredentials {
                    client_id: client_id.clone(),
                    client_secret: api.client_secret.clone(),
                    scope,
                };
                (key, grant)
            }
            Provider::Wolt => {
                let seed = api.refresh_token.clone().ok_or_else(|| {
                    CredentialError::MissingRefreshToken {
                        account: account.to_owned(),
                    }
                })?;
                let grant = Grant::RefreshToken {
                    client_id: client_id.clone(),
                    client_secret: api.client_secret.clone(),
                    seed_fingerprint: sha256_hex(&[seed.expose_secret().as_bytes()]),
                    seed,
                };
                (format!("wolt.{}", key_part(account)), grant)
            }
            Provider::Careem
            | Provider::Talabat
            | Provider::Deliveroo
            | Provider::Justeat
            | Provider::Direct => {
                return Err(CredentialError::Unsupported {
                    provider,
                    account: account.to_owned(),
                });
            }
        };
        Ok(Credential {
            provider,
            account: account.to_owned(),
            key,
            token_url: token_url.clone(),
            grant,
        })
    }

    pub fn provider(&self) -> Provider {
        self.provider
    }

    pub fn account(&self) -> &str {
        &self.account
    }

    /// The bucket key of this credential's entry.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The fingerprint of the configured Wolt refresh token.
    pub(crate) fn seed_fingerprint(&self) -> Option<&str> {
        match &self.grant {
            Grant::RefreshToken {
                seed_fingerprint, ..
            } => Some(seed_fingerprint),
            Grant::ClientCredentials { .. } => None,
        }
    }
}

/// The account id as a bucket key part: as it is when every character is
/// one a key and a subject token take, else `=` and a hash (`=` never
/// appears in a kept id, so the two forms cannot meet).
fn key_part(account: &str) -> String {
    let plain = !account.is_empty()
        && account
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if plain {
        account.to_owned()
    } else {
        format!("={}", &sha256_hex(&[account.as_bytes()])[..16])
    }
}

/// sha256 over the parts, each followed by a newline (none of them can
/// hold one that matters: URLs and ids), in hex.
pub(crate) fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut joined = Vec::new();
    for p in parts {
        joined.extend_from_slice(p);
        joined.push(b'\n');
    }
    let d = digest(&SHA256, &joined);
    secrecy::zeroize::Zeroize::zeroize(&mut joined);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::OrderApi;

    pub(crate) fn api(token_url: &str, client_id: &str, refresh: Option<&str>) -> ProviderApi {
        ProviderApi {
            base_url: Url::parse("http://127.0.0.1:9/").unwrap(),
            token_url: Some(Url::parse(token_url).unwrap()),
            client_id: Some(SecretString::from(client_id.to_owned())),
            client_secret: SecretString::from("client-secret-value".to_owned()),
            refresh_token: refresh.map(|r| SecretString::from(r.to_owned())),
            scope: if refresh.is_none() {
                Some("eats.order".to_owned())
            } else {
                None
            },
            callback_hosts: Vec::new(),
            order_api: OrderApi::V2,
            fetch_deadline: Duration::from_secs(180),
            venue_id: None,
            answer_deadline: Duration::from_secs(180),
            status_api: crate::config::StatusApi::Standard,
        }
    }

    #[test]
    fn uber_accounts_of_one_app_share_a_key_and_other_apps_do_not() {
        let a = Credential::new(
            Provider::Ubereats,
            "acme-uber",
            &api("http://127.0.0.1:1/oauth/v2/token", "app-1", None),
        )
        .unwrap();
        let b = Credential::new(
            Provider::Ubereats,
            "acme-uber-2",
            &api("http://127.0.0.1:1/oauth/v2/token", "app-1", None),
        )
        .unwrap();
        let other_app = Credential::new(
            Provider::Ubereats,
            "acme-uber",
            &api("http://127.0.0.1:1/oauth/v2/token", "app-2", None),
        )
        .unwrap();
        let mut other_scope = api("http://127.0.0.1:1/oauth/v2/token", "app-1", None);
        other_scope.scope = Some("eats.order eats.store".to_owned());
        let other_scope = Credential::new(Provider::Ubereats, "acme-uber", &other_scope).unwrap();
        assert_eq!(a.key(), b.key());
        assert!(a.key().starts_with("ubereats."), "{}", a.key());
        assert_eq!(a.key().len(), "ubereats.".len() + 16);
        assert_ne!(a.key(), other_app.key());
        assert_ne!(a.key(), other_scope.key());
        // The client id is not readable from the key.
        assert!(!a.key().contains("app-1"));
    }

    #[test]
    fn wolt_keys_are_per_account_and_odd_ids_are_hashed() {
        let cred = |account: &str| {
            Credential::new(
                Provider::Wolt,
                account,
                &api("http://127.0.0.1:1/oauth2/token", "venue", Some("rt-1")),
            )
            .unwrap()
        };
        assert_eq!(cred("acme-wolt_1").key(), "wolt.acme-wolt_1");
        let odd = cred("café/1");
        assert!(odd.key().starts_with("wolt.="), "{}", odd.key());
        assert_eq!(odd.key().len(), "wolt.=".len() + 16);
        assert_ne!(odd.key(), cred("café/2").key());
        assert_eq!(
            cred("acme-wolt").seed_fingerprint(),
            Some(sha256_hex(&[b"rt-1"]).as_str())
        );
    }

    #[test]
    fn other_providers_and_a_wolt_venue_without_refresh_token_are_refused() {
        let e = Credential::new(
            Provider::Talabat,
            "acme-talabat",
            &api("http://127.0.0.1:1/v2/login", "user", None),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "account acme-talabat: the token store has no grant for talabat yet (Uber Eats and Wolt only)"
        );
        let e = Credential::new(
            Provider::Wolt,
            "acme-wolt",
            &api("http://127.0.0.1:1/oauth2/token", "venue", None),
        )
        .unwrap_err();
        assert_eq!(
            e,
            CredentialError::MissingRefreshToken {
                account: "acme-wolt".into()
            }
        );
    }

    #[test]
    fn debug_shows_no_secret() {
        let c = Credential::new(
            Provider::Wolt,
            "acme-wolt",
            &api(
                "http://127.0.0.1:1/oauth2/token",
                "venue-client",
                Some("seed-refresh"),
            ),
        )
        .unwrap();
        let shown = format!("{c:?}");
        assert_eq!(
            shown,
            "Credential { provider: Wolt, account: \"acme-wolt\", key: \"wolt.acme-wolt\", secrets: \"[redacted]\" }"
        );
    }
}
