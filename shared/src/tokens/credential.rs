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
//! - Talabat (the Delivery Hero middleware): a login, `POST token_url`
//!   (`…/v2/login`) with form `username` (the account's `client_id`),
//!   `password` (its `client_secret`) and `grant_type=client_credentials`,
//!   answering `{access_token, token_type, expires_in}` (about 30 minutes).
//!   A token belongs to the middleware user, so the accounts of one user
//!   share one entry, `talabat.<16 hex of sha256(token_url, username)>`.
//! - Deliveroo: `client_credentials` with HTTP Basic client authentication
//!   (`Authorization: Basic base64(client_id:client_secret)`, form
//!   `grant_type=client_credentials` only), answering `{access_token,
//!   expires_in: 300, token_type}`. A token belongs to the client, so the
//!   entry is `deliveroo.<16 hex of sha256(token_url, client_id)>`. Its
//!   5-minute tokens are renewed ahead like any other (the store renews a
//!   token at most half its lifetime early).
//! - Grab: `client_credentials` with a JSON body (`client_id`,
//!   `client_secret`, `grant_type`, `scope`, default `food.partner_api`)
//!   [SDK], answering `{access_token, token_type, expires_in}` (604799 s,
//!   7 days). A token belongs to the partner app, so accounts sharing one
//!   (token URL, client id and scope) share one entry,
//!   `grab.<16 hex of sha256(token_url, client_id, scope)>`.
//!
//! Just Eat and Glovo (a static key, no token), DoorDash (a JWT the hub
//! signs per call, [`super::doordash`]), Keeta (a static access token and
//! signed calls), Careem and direct accounts (no provider API) have no
//! grant: [`CredentialError::Unsupported`].

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
    /// Talabat: a login of the middleware user.
    Login {
        username: SecretString,
        password: SecretString,
    },
    /// Deliveroo: a new token from the client credentials, presented with
    /// HTTP Basic authentication.
    ClientCredentialsBasic {
        client_id: SecretString,
        client_secret: SecretString,
    },
    /// Grab: a new token from the client credentials, sent as a JSON body.
    ClientCredentialsJson {
        client_id: SecretString,
        client_secret: SecretString,
        scope: Option<String>,
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
    /// A provider whose API takes no token (Just Eat's static key) or that
    /// has no API (Careem, direct).
    #[error(
        "account {account}: {provider} takes no provider token (the token store serves Uber Eats, Wolt, Talabat, Deliveroo and Grab)"
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
        let endpoint = || match (&api.token_url, &api.client_id) {
            (Some(token_url), Some(client_id)) => Ok((token_url, client_id)),
            _ => Err(CredentialError::NoTokenEndpoint {
                account: account.to_owned(),
            }),
        };
        // A key shared by the accounts of one client: the provider and 16
        // hex of sha256 over the token URL and the client's identity (which
        // the key does not reveal).
        let shared_key = |token_url: &Url, parts: &[&[u8]]| {
            let mut all = vec![token_url.as_str().as_bytes()];
            all.extend_from_slice(parts);
            format!("{provider}.{}", &sha256_hex(&all)[..16])
        };
        let (token_url, key, grant) = match provider {
            Provider::Ubereats => {
                let (token_url, client_id) = endpoint()?;
                let scope = api.scope.clone();
                let key = shared_key(
                    token_url,
                    &[
                        client_id.expose_secret().as_bytes(),
                        scope.as_deref().unwrap_or("").as_bytes(),
                    ],
                );
                let grant = Grant::ClientCredentials {
                    client_id: client_id.clone(),
                    client_secret: api.client_secret.clone(),
                    scope,
                };
                (token_url, key, grant)
            }
            Provider::Wolt => {
                let (token_url, client_id) = endpoint()?;
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
                (token_url, format!("wolt.{}", key_part(account)), grant)
            }
            Provider::Talabat => {
                let (token_url, username) = endpoint()?;
                let key = shared_key(token_url, &[username.expose_secret().as_bytes()]);
                let grant = Grant::Login {
                    username: username.clone(),
                    password: api.client_secret.clone(),
                };
                (token_url, key, grant)
            }
            Provider::Deliveroo => {
                let (token_url, client_id) = endpoint()?;
                let key = shared_key(token_url, &[client_id.expose_secret().as_bytes()]);
                let grant = Grant::ClientCredentialsBasic {
                    client_id: client_id.clone(),
                    client_secret: api.client_secret.clone(),
                };
                (token_url, key, grant)
            }
            Provider::Grab => {
                let (token_url, client_id) = endpoint()?;
                let scope = api.scope.clone();
                let key = shared_key(
                    token_url,
                    &[
                        client_id.expose_secret().as_bytes(),
                        scope.as_deref().unwrap_or("").as_bytes(),
                    ],
                );
                let grant = Grant::ClientCredentialsJson {
                    client_id: client_id.clone(),
                    client_secret: api.client_secret.clone(),
                    scope,
                };
                (token_url, key, grant)
            }
            Provider::Justeat
            | Provider::Glovo
            | Provider::Doordash
            | Provider::Keeta
            | Provider::Careem
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
            Grant::ClientCredentials { .. }
            | Grant::Login { .. }
            | Grant::ClientCredentialsBasic { .. }
            | Grant::ClientCredentialsJson { .. } => None,
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
            developer_id: None,
            key_id: None,
            app_id: None,
            access_token: None,
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
    fn talabat_users_and_deliveroo_clients_each_share_a_key() {
        let cred = |provider, account: &str, url: &str, client: &str| {
            Credential::new(provider, account, &api(url, client, None)).unwrap()
        };
        let login = "https://integration-middleware.me.restaurant-partners.com/v2/login";
        let talabat = cred(Provider::Talabat, "acme-talabat", login, "middleware-user");
        assert_eq!(
            talabat.key(),
            format!(
                "talabat.{}",
                &sha256_hex(&[login.as_bytes(), b"middleware-user"])[..16]
            )
        );
        assert!(!talabat.key().contains("middleware-user"));
        // Another account of the same middleware user: the same token.
        assert_eq!(
            cred(
                Provider::Talabat,
                "acme-talabat-2",
                login,
                "middleware-user"
            )
            .key(),
            talabat.key()
        );
        // Another user, or the same user name at another middleware: not.
        assert_ne!(
            cred(Provider::Talabat, "acme-talabat", login, "other-user").key(),
            talabat.key()
        );
        let eu = "https://integration-middleware.eu.restaurant-partners.com/v2/login";
        assert_ne!(
            cred(Provider::Talabat, "acme-talabat", eu, "middleware-user").key(),
            talabat.key()
        );
        assert!(matches!(
            &talabat.grant,
            Grant::Login { username, password }
                if username.expose_secret() == "middleware-user"
                    && password.expose_secret() == "client-secret-value"
        ));

        let token = "https://auth.developers.deliveroo.com/oauth2/token";
        let deliveroo = cred(Provider::Deliveroo, "acme-roo", token, "roo-client");
        assert_eq!(
            deliveroo.key(),
            format!(
                "deliveroo.{}",
                &sha256_hex(&[token.as_bytes(), b"roo-client"])[..16]
            )
        );
        assert_eq!(
            cred(Provider::Deliveroo, "acme-roo-2", token, "roo-client").key(),
            deliveroo.key()
        );
        let sandbox = "https://auth-sandbox.developers.deliveroo.com/oauth2/token";
        assert_ne!(
            cred(Provider::Deliveroo, "acme-roo", sandbox, "roo-client").key(),
            deliveroo.key()
        );
        assert!(matches!(
            &deliveroo.grant,
            Grant::ClientCredentialsBasic { client_id, client_secret }
                if client_id.expose_secret() == "roo-client"
                    && client_secret.expose_secret() == "client-secret-value"
        ));
        assert_eq!(deliveroo.seed_fingerprint(), None);
        // The same client id at Talabat and Deliveroo: two entries.
        assert_ne!(
            cred(Provider::Talabat, "a", token, "roo-client").key(),
            deliveroo.key()
        );
        // Uber Eats keys are computed as before (stored entries stay found).
        let uber = "https://auth.uber.com/oauth/v2/token";
        assert_eq!(
            cred(Provider::Ubereats, "acme-uber", uber, "app-1").key(),
            format!(
                "ubereats.{}",
                &sha256_hex(&[uber.as_bytes(), b"app-1", b"eats.order"])[..16]
            )
        );
    }

    #[test]
    fn providers_without_a_token_and_incomplete_credentials_are_refused() {
        // Just Eat: a static key, no token URL nor client id.
        let static_key = ProviderApi {
            developer_id: None,
            key_id: None,
            app_id: None,
            access_token: None,
            token_url: None,
            client_id: None,
            ..api("http://127.0.0.1:1/unused", "unused", None)
        };
        let e = Credential::new(Provider::Justeat, "acme-je", &static_key).unwrap_err();
        assert_eq!(
            e,
            CredentialError::Unsupported {
                provider: Provider::Justeat,
                account: "acme-je".into()
            }
        );
        assert_eq!(
            e.to_string(),
            "account acme-je: justeat takes no provider token (the token store serves Uber Eats, Wolt, Talabat, Deliveroo and Grab)"
        );
        for provider in [
            Provider::Careem,
            Provider::Direct,
            Provider::Justeat,
            Provider::Glovo,
            Provider::Doordash,
            Provider::Keeta,
        ] {
            assert_eq!(
                Credential::new(
                    provider,
                    "acme",
                    &api("http://127.0.0.1:1/token", "user", None)
                )
                .unwrap_err(),
                CredentialError::Unsupported {
                    provider,
                    account: "acme".into()
                }
            );
        }
        for provider in [
            Provider::Ubereats,
            Provider::Wolt,
            Provider::Talabat,
            Provider::Deliveroo,
            Provider::Grab,
        ] {
            assert_eq!(
                Credential::new(provider, "acme", &static_key).unwrap_err(),
                CredentialError::NoTokenEndpoint {
                    account: "acme".into()
                },
                "{provider}"
            );
        }
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
    fn grab_accounts_of_one_partner_app_share_a_key() {
        let token = "https://api.grab.com/grabid/v1/oauth2/token";
        let grab = |account: &str, client: &str, scope: Option<&str>| {
            let mut a = api(token, client, None);
            a.scope = scope.map(str::to_owned);
            Credential::new(Provider::Grab, account, &a).unwrap()
        };
        let a = grab("acme-grab", "grab-app", Some("food.partner_api"));
        assert_eq!(
            a.key(),
            format!(
                "grab.{}",
                &sha256_hex(&[token.as_bytes(), b"grab-app", b"food.partner_api"])[..16]
            )
        );
        assert!(!a.key().contains("grab-app"));
        assert_eq!(
            grab("acme-grab-2", "grab-app", Some("food.partner_api")).key(),
            a.key()
        );
        assert_ne!(
            grab("acme-grab", "other-app", Some("food.partner_api")).key(),
            a.key()
        );
        assert_ne!(grab("acme-grab", "grab-app", Some("other")).key(), a.key());
        // The same client and scope at Uber Eats: another entry.
        let mut uber = api(token, "grab-app", None);
        uber.scope = Some("food.partner_api".to_owned());
        let uber = Credential::new(Provider::Ubereats, "u", &uber).unwrap();
        assert_eq!(
            uber.key().strip_prefix("ubereats."),
            a.key().strip_prefix("grab.")
        );
        assert_ne!(uber.key(), a.key());
        assert!(matches!(
            &a.grant,
            Grant::ClientCredentialsJson { client_id, client_secret, scope }
                if client_id.expose_secret() == "grab-app"
                    && client_secret.expose_secret() == "client-secret-value"
                    && scope.as_deref() == Some("food.partner_api")
        ));
        assert_eq!(a.seed_fingerprint(), None);
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
        for provider in [Provider::Talabat, Provider::Deliveroo, Provider::Grab] {
            let c = Credential::new(
                provider,
                "acme",
                &api("http://127.0.0.1:1/token", "user-name", None),
            )
            .unwrap();
            let shown = format!("{c:?}");
            assert!(
                !shown.contains("user-name") && !shown.contains("client-secret-value"),
                "{shown}"
            );
        }
    }
}
