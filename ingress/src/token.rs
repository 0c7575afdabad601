//! Grab's token endpoint, `POST /api/webhooks/grab/{account}/oauth/token`:
//! GrabFood obtains the bearer token for its webhooks from the partner
//! ("partner OAuth" \[SDK\]), by OAuth 2.0 client credentials (RFC 6749
//! §4.4).
//!
//! - The request: Grab's SDK posts JSON (`PartnerOauthRequest`:
//!   `client_id`, `client_secret`, `grant_type`, `scope`; camelCase
//!   spellings are read too), and any OAuth client may post
//!   `application/x-www-form-urlencoded` or authenticate with HTTP Basic
//!   (RFC 6749 §2.3.1: form-encoded id and secret). Without a content type,
//!   a body starting with `{` is JSON, any other a form. `scope` is
//!   accepted and ignored (the token opens the account's webhook routes,
//!   nothing else).
//! - Success: 200 `{"access_token", "token_type": "Bearer", "expires_in"}`
//!   with `Cache-Control: no-store` (RFC 6749 §5.1): a JWT for the account
//!   ([`grab::issue`]), signed with its first secret, which every ingress
//!   replica verifies without shared state (so a new signing secret is
//!   added second on every replica before it is moved first: [`grab`]'s
//!   header).
//! - Refusals, decided in this order:
//!   1. a body that is no JSON object or form, a parameter twice, or
//!      credentials both in the header and the body: 400
//!      `{"error": "invalid_request"}`; a `grant_type` other than
//!      `client_credentials`: 400 `{"error": "unsupported_grant_type"}`
//!      (RFC 6749 §5.2; they depend on the body only, so they tell nothing
//!      about the account);
//!   2. no credentials, a wrong client id or secret, an unknown account or
//!      one that is not Grab's: the webhook routes' one 401 body, after the
//!      same work in every case (the client id and the secret compared by
//!      digest, in constant time, against as many secrets as the Grab
//!      account with the most client secrets has; [`static_token`]);
//!   3. the account's `token_endpoint.rate_limit` (429 + `Retry-After`),
//!      drawn only by a request that presented the account's client
//!      credentials.
//!
//!   Every 400 and 401 is charged to the client address's budget for
//!   unauthenticated work, as a webhook's 401 is, and to nothing else: a
//!   failed request never draws on an account's quota, so wrong
//!   credentials from anywhere cannot make Grab's own request answer 429
//!   (its token expires, and every Submit Order after it would be a 401),
//!   and no quota empties differently for an account that exists than for
//!   one that does not (a 429 tells nothing about which accounts exist).
//!   Guessing is bounded by the per-address budget alone, which is enough:
//!   a client secret is 16 bytes or more of randomness.
//! - Metrics: `ingress_token_requests_total{provider, outcome}`.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use governor::DefaultDirectRateLimiter;
use governor::clock::{Clock, DefaultClock};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use shared::Provider;
use tracing::{info, warn};
use warp::http::{HeaderMap, StatusCode};

use crate::net::Client;
use shared::config::HubConfig;

use crate::pipeline::{Ingress, Rejection, Snapshot, limiter};
use crate::status::percent_decode;
use crate::verify::grab::{self, IssuedToken};
use crate::verify::static_token;

/// The route, as in `openapi.json`.
pub const ROUTE: &str = "/api/webhooks/grab/{account}/oauth/token";

/// The only grant the endpoint serves.
pub const GRANT_TYPE: &str = "client_credentials";

/// A token request as the route hands it over. Its `Debug` shows the
/// header names and the body's length only: the body and `Authorization`
/// carry the client secret.
pub struct TokenRequest {
    pub account: String,
    pub headers: HeaderMap,
    pub client: Option<Client>,
    pub body: Bytes,
}

impl fmt::Debug for TokenRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header_names: Vec<&str> = self.headers.keys().map(|k| k.as_str()).collect();
        f.debug_struct("TokenRequest")
            .field("account", &self.account)
            .field("headers", &header_names)
            .field("client", &self.client)
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

/// Why no token was issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRejection {
    /// What the webhook routes answer too: 401 (the reason for metrics),
    /// 429, 413, 408, 503.
    Webhook(Rejection),
    /// 400 `invalid_request`.
    InvalidRequest(&'static str),
    /// 400 `unsupported_grant_type`.
    UnsupportedGrantType,
}

impl TokenRejection {
    pub fn status(&self) -> StatusCode {
        match self {
            TokenRejection::Webhook(r) => r.status(),
            TokenRejection::InvalidRequest(_) | TokenRejection::UnsupportedGrantType => {
                StatusCode::BAD_REQUEST
            }
        }
    }

    /// The `outcome` label.
    pub fn outcome(&self) -> &'static str {
        match self {
            TokenRejection::Webhook(r) => r.outcome(),
            TokenRejection::InvalidRequest(_) => "invalid_request",
            TokenRejection::UnsupportedGrantType => "unsupported_grant_type",
        }
    }
}

/// A client's credentials as presented.
struct Credentials {
    client_id: String,
    client_secret: SecretString,
}

/// The body's parameters (RFC 6749 §4.4.2, §2.3.1).
#[derive(Default)]
struct Params {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<SecretString>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    provider: &'static str,
    outcome: &'static str,
}

/// One Grab account's token endpoint.
pub(crate) struct Account {
    /// Index into `HubConfig::accounts`.
    index: usize,
    audience: grab::Audience,
    /// Starts full again after a config reload.
    limit: DefaultDirectRateLimiter,
}

/// The Grab accounts with a token endpoint, in one generation of the
/// config (part of the ingress's snapshot).
pub(crate) struct TokenAccounts {
    /// Grab accounts by id.
    accounts: HashMap<String, Account>,
    /// The most client secrets any Grab account has (at least 1).
    pub(crate) max_client_secrets: usize,
}

impl TokenAccounts {
    pub(crate) fn of(hub: &HubConfig) -> TokenAccounts {
        let accounts: HashMap<String, Account> = hub
            .accounts
            .iter()
            .enumerate()
            .filter(|(_, a)| a.provider == Provider::Grab)
            .filter_map(|(index, a)| {
                let t = a.token_endpoint.as_ref()?;
                Some((
                    a.id.clone(),
                    Account {
                        index,
                        audience: grab::Audience {
                            account: a.id.clone(),
                            client_id: t.client_id.clone(),
                            token_lifetime: t.token_lifetime,
                        },
                        limit: limiter(t.rate_limit),
                    },
                ))
            })
            .collect();
        let max_client_secrets = hub
            .accounts
            .iter()
            .filter_map(|a| a.token_endpoint.as_ref())
            .map(|t| t.client_secrets.len())
            .max()
            .unwrap_or(0)
            .max(1);
        TokenAccounts {
            accounts,
            max_client_secrets,
        }
    }
}

/// The token endpoint's state; its accounts come from the ingress's
/// snapshot of the config serving.
pub struct TokenEndpoint {
    ingress: Arc<Ingress>,
    clock: DefaultClock,
    requests: Family<Labels, Counter>,
}

impl TokenEndpoint {
    pub fn new(ingress: Arc<Ingress>, registry: &mut Registry) -> Self {
        let requests = Family::<Labels, Counter>::default();
        registry.register(
            "token_requests",
            "Requests at a provider's token endpoint (Grab) by outcome",
            requests.clone(),
        );
        TokenEndpoint {
            ingress,
            clock: DefaultClock::default(),
            requests,
        }
    }

    pub fn ingress(&self) -> &Ingress {
        &self.ingress
    }

    /// Issues a token, or says why not; one log line and one counter per
    /// request.
    pub fn handle(&self, req: TokenRequest) -> Result<IssuedToken, TokenRejection> {
        let snapshot = self.ingress.snapshot();
        let account = snapshot.token.accounts.get(&req.account);
        let result = self.issue(&req, &snapshot, account);
        if let Err(
            r @ (TokenRejection::InvalidRequest(_)
            | TokenRejection::UnsupportedGrantType
            | TokenRejection::Webhook(Rejection::Unauthorized(_))),
        ) = &result
        {
            let reason = match r {
                TokenRejection::Webhook(Rejection::Unauthorized(reason)) => reason,
                other => other.outcome(),
            };
            self.ingress
                .charge_client(req.client, &Rejection::Unauthorized(reason));
        }
        let (outcome, reason) = match &result {
            Ok(_) => ("issued", "none"),
            Err(TokenRejection::Webhook(r)) => (r.outcome(), r.reason()),
            Err(r @ TokenRejection::InvalidRequest(why)) => (r.outcome(), *why),
            Err(r) => (r.outcome(), "none"),
        };
        self.record(outcome);
        // The account id only once the request proved it knows the
        // account's credentials.
        let shown = result.is_ok().then_some(req.account.as_str());
        let status = match &result {
            Ok(_) => 200,
            Err(r) => r.status().as_u16(),
        };
        info!(
            provider = %Provider::Grab,
            account = shown,
            outcome,
            reason,
            status,
            "token request"
        );
        result
    }

    /// Records a request refused before [`TokenEndpoint::handle`] (client
    /// over its budget, body too large or too slow).
    pub fn record_early(&self, client: Option<Client>, rejection: &Rejection) {
        self.ingress.charge_client(client, rejection);
        self.record(rejection.outcome());
        info!(
            provider = %Provider::Grab,
            outcome = rejection.outcome(),
            status = rejection.status().as_u16(),
            "token request refused"
        );
    }

    fn record(&self, outcome: &'static str) {
        self.requests
            .get_or_create(&Labels {
                provider: Provider::Grab.as_str(),
                outcome,
            })
            .inc();
    }

    fn issue(
        &self,
        req: &TokenRequest,
        snapshot: &Snapshot,
        account: Option<&Account>,
    ) -> Result<IssuedToken, TokenRejection> {
        let credentials = credentials(&req.headers, &req.body)?;
        let hub = &snapshot.hub;
        let configured = account.map(|a| {
            let t = hub.accounts[a.index]
                .token_endpoint
                .as_ref()
                .expect("grab accounts here have a token endpoint");
            (a, t)
        });
        let client = configured.map(|(_, t)| (t.client_id.as_str(), &t.client_secrets[..]));
        let authentic = client_matches(
            &credentials,
            client,
            &snapshot.dummy_secrets,
            snapshot.token.max_client_secrets,
        );
        let (account, _) = match configured {
            Some(found) if authentic => found,
            Some(_) => {
                return Err(TokenRejection::Webhook(Rejection::Unauthorized(
                    "bad_client_credentials",
                )));
            }
            None => {
                return Err(TokenRejection::Webhook(Rejection::Unauthorized(
                    "unknown_account",
                )));
            }
        };
        // Only the account's own client draws on its quota (module header).
        account.limit.check().map_err(|not_until| {
            TokenRejection::Webhook(Rejection::RateLimited {
                retry_after: not_until.wait_time_from(self.clock.now()),
                limit: "token",
            })
        })?;
        let signing = hub.accounts[account.index]
            .secrets
            .first()
            .expect("config requires a secret on every account");
        grab::issue(signing, &account.audience, SystemTime::now()).map_err(|e| {
            warn!(provider = %Provider::Grab, account = %account.audience.account, error = %e, "token not issued");
            TokenRejection::Webhook(Rejection::Unavailable(format!("token not issued: {e}")))
        })
    }
}

/// Whether `credentials` are the account's `client` (its client id and one
/// of its client secrets; `None`: an unknown account), with the same work
/// whoever is asked for: the client id compared by digest (against an empty
/// one for an unknown account), the secret against `pad_to` secrets, the
/// account's topped up with `dummies` (which never match).
fn client_matches(
    credentials: &Credentials,
    client: Option<(&str, &[SecretString])>,
    dummies: &[SecretString],
    pad_to: usize,
) -> bool {
    let (expected_id, secrets) = client.unwrap_or(("", &[]));
    let id_matches = static_token::same(credentials.client_id.as_bytes(), expected_id.as_bytes());
    let pad = pad_to.saturating_sub(secrets.len());
    let candidates = secrets.iter().chain(&dummies[..pad.min(dummies.len())]);
    let presented = credentials.client_secret.expose_secret().as_bytes();
    let secret_matches =
        static_token::find_in(presented, candidates).is_some_and(|i| i < secrets.len());
    client.is_some() && id_matches && secret_matches
}

/// The client's credentials from the request: HTTP Basic or the body, not
/// both; the grant must be `client_credentials`.
fn credentials(headers: &HeaderMap, body: &[u8]) -> Result<Credentials, TokenRejection> {
    let params = params(headers, body)?;
    match params.grant_type.as_deref() {
        None => return Err(TokenRejection::InvalidRequest("missing grant_type")),
        Some(GRANT_TYPE) => {}
        Some(_) => return Err(TokenRejection::UnsupportedGrantType),
    }
    let unauthorized = |reason| TokenRejection::Webhook(Rejection::Unauthorized(reason));
    let basic = basic_credentials(headers)?;
    let in_body = params.client_id.is_some() || params.client_secret.is_some();
    match (basic, in_body) {
        (Some(_), true) => Err(TokenRejection::InvalidRequest(
            "credentials both in the header and the body",
        )),
        (Some(c), false) => Ok(c),
        (None, _) => match (params.client_id, params.client_secret) {
            (Some(client_id), Some(client_secret)) => Ok(Credentials {
                client_id,
                client_secret,
            }),
            _ => Err(unauthorized("missing_credentials")),
        },
    }
}

/// `Authorization: Basic base64(id:secret)`, each part form-encoded
/// (RFC 6749 §2.3.1). Another scheme there is none (`Ok(None)`); a
/// malformed Basic value fails client authentication.
fn basic_credentials(headers: &HeaderMap) -> Result<Option<Credentials>, TokenRejection> {
    let Some(value) = headers.get(warp::http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let unauthorized = TokenRejection::Webhook(Rejection::Unauthorized("malformed_header"));
    let value = value.to_str().map_err(|_| unauthorized.clone())?.trim();
    let Some((scheme, encoded)) = value.split_once(' ') else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(None);
    }
    let decoded = STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|d| String::from_utf8(d).ok())
        .ok_or_else(|| unauthorized.clone())?;
    let (id, secret) = decoded
        .split_once(':')
        .ok_or_else(|| unauthorized.clone())?;
    let form = |s: &str| percent_decode(&s.replace('+', " "));
    match (form(id), form(secret)) {
        (Some(client_id), Some(secret)) => Ok(Some(Credentials {
            client_id,
            client_secret: SecretString::from(secret),
        })),
        _ => Err(unauthorized),
    }
}

/// JSON as Grab's SDK sends it (either spelling of each key).
#[derive(Deserialize)]
struct JsonParams {
    #[serde(alias = "grantType")]
    grant_type: Option<String>,
    #[serde(alias = "clientId")]
    client_id: Option<String>,
    #[serde(alias = "clientSecret")]
    client_secret: Option<String>,
    #[allow(dead_code)]
    scope: Option<String>,
}

fn params(headers: &HeaderMap, body: &[u8]) -> Result<Params, TokenRejection> {
    let content_type = headers
        .get(warp::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        });
    let json = match content_type.as_deref() {
        Some("application/json") => true,
        Some("application/x-www-form-urlencoded") => false,
        Some(_) => return Err(TokenRejection::InvalidRequest("unsupported content type")),
        None => body.trim_ascii_start().starts_with(b"{"),
    };
    if json {
        // serde_json refuses a key given twice in a struct.
        let p: JsonParams = serde_json::from_slice(body)
            .map_err(|_| TokenRejection::InvalidRequest("not a json object of strings"))?;
        return Ok(Params {
            grant_type: p.grant_type,
            client_id: p.client_id,
            client_secret: p.client_secret.map(SecretString::from),
        });
    }
    let mut out = Params::default();
    let twice = TokenRejection::InvalidRequest("a parameter more than once");
    for (key, value) in url::form_urlencoded::parse(body) {
        let slot_taken = match key.as_ref() {
            "grant_type" => out.grant_type.replace(value.into_owned()).is_some(),
            "client_id" => out.client_id.replace(value.into_owned()).is_some(),
            "client_secret" => out
                .client_secret
                .replace(SecretString::from(value.into_owned()))
                .is_some(),
            _ => false,
        };
        if slot_taken {
            return Err(twice);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    fn creds(h: &HeaderMap, body: &str) -> Result<(String, String), TokenRejection> {
        credentials(h, body.as_bytes())
            .map(|c| (c.client_id, c.client_secret.expose_secret().to_owned()))
    }

    const JSON: (&str, &str) = ("content-type", "application/json");
    const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

    /// Review of issue 15, finding 9: the derived `Debug` printed the body
    /// and the headers, so the client secret (in the JSON, the form or HTTP
    /// Basic) reached any log line that formatted the request.
    #[test]
    fn debug_of_a_token_request_shows_no_secret() {
        let secret = "s3cret-client-value-0123456789";
        let basic = format!("Basic {}", STANDARD.encode(format!("grab-client:{secret}")));
        let req = TokenRequest {
            account: "acme-grab".into(),
            headers: headers(&[FORM, ("authorization", &basic)]),
            client: None,
            body: Bytes::from(format!(
                "grant_type=client_credentials&client_secret={secret}"
            )),
        };
        let shown = format!("{req:?}");
        assert_eq!(
            shown,
            r#"TokenRequest { account: "acme-grab", headers: ["content-type", "authorization"], client: None, body_bytes: 74 }"#
        );
        assert!(!shown.contains(secret) && !shown.contains(&basic[6..]));
    }

    #[test]
    fn client_checks_cost_the_same_for_any_account_and_outcome() {
        let secret = |s: &str| SecretString::from(s.to_owned());
        let presented = |id: &str, s: &str| Credentials {
            client_id: id.to_owned(),
            client_secret: secret(s),
        };
        let secrets = [secret("client-secret-new"), secret("client-secret-old")];
        let dummies: Vec<SecretString> = (0..3).map(|_| secret("dummy")).collect();
        let work = |c: &Credentials, client: Option<(&str, &[SecretString])>| {
            let before = crate::verify::macs_on_this_thread();
            let ok = client_matches(c, client, &dummies, 3);
            (ok, crate::verify::macs_on_this_thread() - before)
        };
        let account = Some(("grab-client", &secrets[..]));
        assert_eq!(
            work(&presented("grab-client", "client-secret-old"), account),
            (true, 3)
        );
        assert_eq!(
            work(&presented("grab-client", "client-secret-new"), account),
            (true, 3)
        );
        for c in [
            presented("grab-client", "client-secret-x"),
            presented("grab-clien", "client-secret-new"),
            presented("", "dummy"),
        ] {
            assert_eq!(work(&c, account), (false, 3));
            assert_eq!(work(&c, None), (false, 3));
        }
        // A dummy is never a client secret, even presented verbatim.
        assert_eq!(
            work(&presented("grab-client", "dummy"), account),
            (false, 3)
        );
    }

    #[test]
    fn credentials_come_as_grabs_json_a_form_or_basic() {
        let want = Ok(("grab-client".to_owned(), "s3cret value".to_owned()));
        // The fixture's spelling (api/grab-token-request.json).
        let grab = r#"{"client_id":"grab-client","client_secret":"s3cret value","grant_type":"client_credentials","scope":"food.partner_api"}"#;
        assert_eq!(creds(&headers(&[JSON]), grab), want);
        assert_eq!(creds(&HeaderMap::new(), grab), want, "no content type");
        let camel = r#"{"clientId":"grab-client","clientSecret":"s3cret value","grantType":"client_credentials"}"#;
        assert_eq!(creds(&headers(&[JSON]), camel), want);
        let form = "grant_type=client_credentials&client_id=grab-client&client_secret=s3cret+value&scope=food.partner_api";
        assert_eq!(creds(&headers(&[FORM]), form), want);
        assert_eq!(creds(&HeaderMap::new(), form), want);
        // Basic: form-encoded parts, base64 of `id:secret`.
        let basic = format!("Basic {}", STANDARD.encode("grab-client:s3cret+value"));
        assert_eq!(
            creds(
                &headers(&[FORM, ("authorization", &basic)]),
                "grant_type=client_credentials"
            ),
            want
        );
        let colon = format!("basic {}", STANDARD.encode("grab%3Aclient:a:b"));
        assert_eq!(
            creds(
                &headers(&[JSON, ("authorization", &colon)]),
                r#"{"grant_type":"client_credentials"}"#
            ),
            Ok(("grab:client".to_owned(), "a:b".to_owned()))
        );
    }

    #[test]
    fn malformed_requests_and_other_grants_are_400s() {
        let invalid = |why| Err(TokenRejection::InvalidRequest(why));
        assert_eq!(
            creds(&headers(&[JSON]), "not json"),
            invalid("not a json object of strings")
        );
        assert_eq!(
            creds(&headers(&[JSON]), r#"{"grant_type":1}"#),
            invalid("not a json object of strings")
        );
        assert_eq!(
            creds(
                &headers(&[JSON]),
                r#"{"grant_type":"client_credentials","grant_type":"client_credentials"}"#
            ),
            invalid("not a json object of strings")
        );
        assert_eq!(
            creds(
                &headers(&[FORM]),
                "grant_type=client_credentials&client_id=a&client_id=b&client_secret=c"
            ),
            invalid("a parameter more than once")
        );
        assert_eq!(
            creds(&headers(&[("content-type", "text/plain")]), "x"),
            invalid("unsupported content type")
        );
        assert_eq!(
            creds(&headers(&[FORM]), "client_id=a&client_secret=b"),
            invalid("missing grant_type")
        );
        let basic = format!("Basic {}", STANDARD.encode("a:b"));
        assert_eq!(
            creds(
                &headers(&[FORM, ("authorization", &basic)]),
                "grant_type=client_credentials&client_id=a&client_secret=b"
            ),
            invalid("credentials both in the header and the body")
        );
        for grant in ["password", "authorization_code", ""] {
            assert_eq!(
                creds(
                    &headers(&[FORM]),
                    &format!("grant_type={grant}&client_id=a&client_secret=b")
                ),
                Err(TokenRejection::UnsupportedGrantType),
                "{grant}"
            );
        }
    }

    #[test]
    fn missing_or_malformed_credentials_are_the_uniform_401() {
        let unauthorized = |r| Err(TokenRejection::Webhook(Rejection::Unauthorized(r)));
        assert_eq!(
            creds(
                &headers(&[FORM]),
                "grant_type=client_credentials&client_id=a"
            ),
            unauthorized("missing_credentials")
        );
        assert_eq!(
            creds(
                &headers(&[FORM, ("authorization", "Bearer abc")]),
                "grant_type=client_credentials"
            ),
            unauthorized("missing_credentials")
        );
        for bad in ["Basic !!!", "Basic YWJj", "Basic JUZGOmI="] {
            assert_eq!(
                creds(
                    &headers(&[FORM, ("authorization", bad)]),
                    "grant_type=client_credentials"
                ),
                unauthorized("malformed_header"),
                "{bad}"
            );
        }
    }
}
