//! GrabFood: Grab obtains its bearer token from the partner \[SDK\]: it posts
//! its client credentials to the hub's token endpoint (the ingress's
//! `POST /api/webhooks/grab/{account}/oauth/token`, `PartnerOauthRequest`)
//! and sends Submit Order and Push Order State with
//! `Authorization: Bearer <token>` \[SDK + GUESS on the header form\]. No
//! HMAC, no timestamp, no event id (the body hash deduplicates).
//!
//! The tokens are the hub's own, so every ingress replica must accept what
//! any other issued, with no shared state: they are HS256 JWTs ([`issue`])
//! signed with the account's first secret and verified with any of its
//! secrets, with the claims
//! - `iss` [`ISSUER`], `aud` `grab:<account id>`: a token opens its own
//!   account's routes only;
//! - `sub` the account's client id (a token issued before the client id
//!   changed is refused);
//! - `iat`, `exp` (`iat` + the account's `token_lifetime`), `jti` (random).
//!
//! The algorithm is pinned to HS256 whatever the account's `jwt_algorithm`;
//! `exp` is enforced with [`VerifyOptions::jwt_leeway`], and a token may
//! not claim more than the account's `token_lifetime`
//! ([`super::talabat`]'s time checks). The token covers no body: whoever
//! holds a live one can post anything to the account until it expires (the
//! provider's design; HTTPS and the short lifetime are the mitigation).
//!
//! Rotating the signing secret takes two phases, because during a rolling
//! deploy a replica already on the new config issues tokens that replicas
//! still on the old one must accept (a token lives up to
//! `token_lifetime`, and Grab may send it to any replica):
//! 1. add the new secret *second* (`[old, new]`) on every replica: they
//!    still sign with the old one, and accept both;
//! 2. once every replica has it, move it *first* (`[new, old]`): tokens
//!    signed with the new one are accepted everywhere; keep the old one
//!    until the tokens it signed have expired (`token_lifetime` after the
//!    last replica moved), then drop it (dropping it earlier revokes them).
//!
//! Adding the new secret first in one step would make each updated replica
//! issue tokens the others refuse (401 on Submit Order) until the deploy
//! finishes.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde_json::Value;

use super::common;
use super::talabat::{self, JwtAlgorithm};
use super::{SignError, Signed, Verified, Verifier, VerifyError, VerifyOptions};

/// The header carrying the bearer token.
pub const AUTHORIZATION_HEADER: &str = "authorization";

/// The `iss` of every token the hub issues.
pub const ISSUER: &str = "orderhub";

/// The one algorithm the hub signs and accepts its tokens with.
const ALGORITHM: JwtAlgorithm = JwtAlgorithm::Hs256;

/// Whom an account's tokens are for: what [`issue`] puts in a token and
/// verification requires of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audience {
    /// The account id (`aud` is `grab:<account>`).
    pub account: String,
    /// The client id Grab presents (`sub`); not a secret.
    pub client_id: String,
    /// How long an issued token is valid.
    pub token_lifetime: Duration,
}

impl Audience {
    /// The `aud` claim of this account's tokens.
    pub fn aud(&self) -> String {
        format!("grab:{}", self.account)
    }
}

/// The Grab scheme.
#[derive(Debug, Clone, Copy, Default)]
pub struct Grab;

fn audience(options: &VerifyOptions) -> Option<&Arc<Audience>> {
    options.grab.as_ref()
}

fn malformed_header(reason: &'static str) -> VerifyError {
    VerifyError::MalformedHeader {
        header: AUTHORIZATION_HEADER,
        reason,
    }
}

impl Verifier for Grab {
    fn verify(
        &self,
        headers: &HeaderMap,
        _body: &[u8],
        secrets: &[SecretString],
        options: &VerifyOptions,
        now: SystemTime,
    ) -> Result<Verified, VerifyError> {
        common::require_secrets(secrets)?;
        let audience = audience(options).ok_or(VerifyError::Unconfigured("token endpoint"))?;
        let value = common::required_header(headers, AUTHORIZATION_HEADER)?;
        let token = match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => return Err(malformed_header("not a bearer token")),
        };
        let secret_index = verify_token(token, secrets, audience, options, now)?;
        Ok(Verified {
            event_id: None,
            secret_index,
        })
    }

    fn sign(
        &self,
        _body: &[u8],
        secret: &SecretString,
        options: &VerifyOptions,
        at: SystemTime,
    ) -> Result<Signed, SignError> {
        let audience = audience(options).ok_or(SignError::Unconfigured("grab audience"))?;
        sign(secret, audience, at).map(Signed::headers)
    }
}

/// Checks a token the hub issued for `audience`: the index of the secret
/// that signed it.
pub fn verify_token(
    token: &str,
    secrets: &[SecretString],
    audience: &Audience,
    options: &VerifyOptions,
    now: SystemTime,
) -> Result<usize, VerifyError> {
    common::require_secrets(secrets)?;
    let options = VerifyOptions {
        jwt_max_lifetime: audience.token_lifetime,
        ..options.clone()
    };
    let keys = secrets.iter().map(|s| s.expose_secret().as_bytes());
    let (index, claims) = talabat::verify_jwt(token, keys, ALGORITHM, &options, now)?;
    check_claims(&claims, audience)?;
    Ok(index)
}

fn check_claims(claims: &Value, audience: &Audience) -> Result<(), VerifyError> {
    let text = |name| claims.get(name).and_then(Value::as_str);
    if text("iss") != Some(ISSUER) {
        return Err(VerifyError::InvalidClaims("iss is not the hub"));
    }
    if text("aud") != Some(audience.aud().as_str()) {
        return Err(VerifyError::InvalidClaims("aud is not this account"));
    }
    if text("sub") != Some(audience.client_id.as_str()) {
        return Err(VerifyError::InvalidClaims(
            "sub is not the account's client",
        ));
    }
    if claims.get("iat").is_none() {
        return Err(VerifyError::InvalidClaims("missing iat"));
    }
    if text("jti").is_none_or(str::is_empty) {
        return Err(VerifyError::InvalidClaims("missing jti"));
    }
    Ok(())
}

/// The claims of a token the hub issues.
#[derive(Serialize)]
struct Claims<'a> {
    iss: &'static str,
    aud: String,
    sub: &'a str,
    iat: u64,
    exp: u64,
    jti: String,
}

/// A token issued to Grab.
#[derive(Clone)]
pub struct IssuedToken {
    /// The JWT: a credential, never logged.
    pub access_token: String,
    /// Its lifetime, for `expires_in`.
    pub expires_in: Duration,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("access_token", &"[redacted]")
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// A token for `audience` issued at `at`, signed with `secret` (the
/// account's first: [module docs](self)).
pub fn issue(
    secret: &SecretString,
    audience: &Audience,
    at: SystemTime,
) -> Result<IssuedToken, SignError> {
    let iat = at
        .duration_since(UNIX_EPOCH)
        .map_err(|_| SignError::TimeBeforeEpoch)?
        .as_secs();
    let claims = Claims {
        iss: ISSUER,
        aud: audience.aud(),
        sub: &audience.client_id,
        iat,
        exp: iat.saturating_add(audience.token_lifetime.as_secs()),
        jti: uuid::Uuid::new_v4().simple().to_string(),
    };
    Ok(IssuedToken {
        access_token: talabat::token(secret, ALGORITHM, &claims)?,
        expires_in: audience.token_lifetime,
    })
}

/// The headers Grab sends with a token issued at `at`.
pub fn sign(
    secret: &SecretString,
    audience: &Audience,
    at: SystemTime,
) -> Result<HeaderMap, SignError> {
    let token = issue(secret, audience, at)?;
    let mut headers = HeaderMap::new();
    headers.insert(
        AUTHORIZATION_HEADER,
        common::own_header_value(format!("Bearer {}", token.access_token)),
    );
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;
    use crate::verify::testutil::*;

    const KEY: &str = "grab-signing-secret-of-32-bytes!";
    const OLD_KEY: &str = "grab-old-signing-secret-32-bytes";
    const AT: u64 = 1_718_388_131;

    fn acme() -> Audience {
        Audience {
            account: "acme-grab".into(),
            client_id: "acme-grab-client".into(),
            token_lifetime: Duration::from_secs(3600),
        }
    }

    fn options(audience: Audience) -> VerifyOptions {
        VerifyOptions {
            grab: Some(Arc::new(audience)),
            ..VerifyOptions::default()
        }
    }

    fn verify(h: &HeaderMap, keys: &[&str], now: u64) -> Result<Verified, VerifyError> {
        Grab.verify(h, b"{}", &secrets(keys), &options(acme()), at(now))
    }

    fn bearer(token: &str) -> HeaderMap {
        headers(&[("Authorization", &format!("Bearer {token}"))])
    }

    /// A token with `claims`, signed with `key` and `alg` (HS256 unless
    /// asked).
    fn token_with(claims: &Value, key: &str, alg: JwtAlgorithm) -> String {
        talabat::token(&secret(key), alg, claims).unwrap()
    }

    fn claims() -> Value {
        serde_json::json!({
            "iss": "orderhub", "aud": "grab:acme-grab", "sub": "acme-grab-client",
            "iat": AT, "exp": AT + 3600, "jti": "j-1",
        })
    }

    #[test]
    fn an_issued_token_verifies_with_any_of_the_accounts_secrets() {
        let issued = issue(&secret(KEY), &acme(), at(AT)).unwrap();
        assert_eq!(issued.expires_in, Duration::from_secs(3600));
        assert!(!format!("{issued:?}").contains(&issued.access_token));
        let h = bearer(&issued.access_token);
        let ok = |secret_index| {
            Ok(Verified {
                event_id: None,
                secret_index,
            })
        };
        assert_eq!(verify(&h, &[KEY], AT), ok(0));
        assert_eq!(verify(&h, &[OLD_KEY, KEY], AT + 3599), ok(1));
        // The header and the claims as documented.
        let parts: Vec<&str> = issued.access_token.split('.').collect();
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["alg"], "HS256");
        let body: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(body["iss"], "orderhub");
        assert_eq!(body["aud"], "grab:acme-grab");
        assert_eq!(body["sub"], "acme-grab-client");
        assert_eq!(body["iat"], AT);
        assert_eq!(body["exp"], AT + 3600);
        assert_eq!(body["jti"].as_str().unwrap().len(), 32);
        let again = issue(&secret(KEY), &acme(), at(AT)).unwrap();
        assert_ne!(again.access_token, issued.access_token, "distinct jti");
        // The trait's sign: the same, as a bearer header.
        let signed = Grab
            .sign(b"{}", &secret(KEY), &options(acme()), at(AT))
            .unwrap();
        assert!(signed.body.is_none());
        assert_eq!(verify(&signed.headers, &[KEY], AT), ok(0));
    }

    /// The two-phase rotation of the module header, replica by replica
    /// (review of issue 15, finding 7): every replica accepts what any
    /// other issues at every step; adding the new secret first in one step
    /// does not.
    #[test]
    fn a_two_phase_rotation_keeps_every_replicas_tokens_valid() {
        let issued_by = |keys: &[&str]| {
            bearer(
                &issue(&secret(keys[0]), &acme(), at(AT))
                    .unwrap()
                    .access_token,
            )
        };
        let accepted = |token: &HeaderMap, keys: &[&str]| verify(token, keys, AT).is_ok();
        let steps: [&[&[&str]]; 3] = [
            // Phase 1 half deployed, then phase 2 half deployed, then done.
            &[&[OLD_KEY], &[OLD_KEY, KEY]],
            &[&[OLD_KEY, KEY], &[KEY, OLD_KEY]],
            &[&[KEY, OLD_KEY], &[KEY, OLD_KEY]],
        ];
        for replicas in steps {
            for issuer in replicas {
                for verifier in replicas {
                    assert!(
                        accepted(&issued_by(issuer), verifier),
                        "{issuer:?} -> {verifier:?}"
                    );
                }
            }
        }
        // The one-step rotation: the updated replica's tokens are refused
        // by those not yet updated.
        assert!(!accepted(&issued_by(&[KEY, OLD_KEY]), &[OLD_KEY]));
    }

    #[test]
    fn another_accounts_or_clients_token_is_refused() {
        for (field, value, reason) in [
            ("aud", "grab:other-grab", "aud is not this account"),
            ("iss", "someone", "iss is not the hub"),
            ("sub", "other-client", "sub is not the account's client"),
        ] {
            let mut c = claims();
            c[field] = value.into();
            assert_eq!(
                verify(&bearer(&token_with(&c, KEY, ALGORITHM)), &[KEY], AT),
                Err(VerifyError::InvalidClaims(reason)),
                "{field}"
            );
        }
        // Issued for another account with the same secret: its audience.
        let other = Audience {
            account: "other-grab".into(),
            ..acme()
        };
        let h = sign(&secret(KEY), &other, at(AT)).unwrap();
        assert_eq!(
            verify(&h, &[KEY], AT),
            Err(VerifyError::InvalidClaims("aud is not this account"))
        );
        // Issued for another account with its own secret: no key of ours.
        let h = sign(&secret(OLD_KEY), &other, at(AT)).unwrap();
        assert_eq!(verify(&h, &[KEY], AT), Err(VerifyError::BadSignature));
        // An audience list is not this account's audience.
        let mut c = claims();
        c["aud"] = serde_json::json!(["grab:acme-grab"]);
        assert_eq!(
            verify(&bearer(&token_with(&c, KEY, ALGORITHM)), &[KEY], AT),
            Err(VerifyError::InvalidClaims("aud is not this account"))
        );
    }

    #[test]
    fn expired_forged_and_overlong_tokens_are_refused() {
        let h = sign(&secret(KEY), &acme(), at(AT)).unwrap();
        // Past exp beyond the 60 s leeway.
        assert_eq!(
            verify(&h, &[KEY], AT + 3600 + 61),
            Err(VerifyError::ExpiredToken { expired_secs: 61 })
        );
        assert_eq!(
            verify(&h, &[KEY], AT + 3600 + 60).map(|v| v.secret_index),
            Ok(0)
        );
        // Forged: another key, or one character of the signature changed.
        assert_eq!(verify(&h, &[OLD_KEY], AT), Err(VerifyError::BadSignature));
        let token = value(&h, "authorization").strip_prefix("Bearer ").unwrap();
        let mut forged = token.to_owned();
        let last = forged.pop().unwrap();
        forged.push(if last == 'A' { 'B' } else { 'A' });
        assert_eq!(
            verify(&bearer(&forged), &[KEY], AT),
            Err(VerifyError::BadSignature)
        );
        // Longer than the account's token lifetime.
        let mut c = claims();
        c["exp"] = (AT + 3601).into();
        assert_eq!(
            verify(&bearer(&token_with(&c, KEY, ALGORITHM)), &[KEY], AT),
            Err(VerifyError::InvalidClaims("lifetime over the maximum"))
        );
        // Without iat or jti.
        for (field, reason) in [("iat", "missing iat"), ("jti", "missing jti")] {
            let mut c = claims();
            c.as_object_mut().unwrap().remove(field);
            assert_eq!(
                verify(&bearer(&token_with(&c, KEY, ALGORITHM)), &[KEY], AT),
                Err(VerifyError::InvalidClaims(reason)),
                "{field}"
            );
        }
        // Another algorithm, even an HMAC one with the right key.
        assert_eq!(
            verify(
                &bearer(&token_with(&claims(), KEY, JwtAlgorithm::Hs512)),
                &[KEY],
                AT
            ),
            Err(VerifyError::DisallowedAlgorithm)
        );
        // `alg: none`.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(claims().to_string())
        );
        assert_eq!(
            verify(&bearer(&none), &[KEY], AT),
            Err(VerifyError::DisallowedAlgorithm)
        );
    }

    #[test]
    fn malformed_and_missing_headers_and_configuration() {
        assert_eq!(
            verify(&HeaderMap::new(), &[KEY], AT),
            Err(VerifyError::MissingHeader(AUTHORIZATION_HEADER))
        );
        let issued = issue(&secret(KEY), &acme(), at(AT)).unwrap();
        // The raw token without `Bearer`: not Grab's form.
        assert_eq!(
            verify(
                &headers(&[("authorization", &issued.access_token)]),
                &[KEY],
                AT
            ),
            Err(malformed_header("not a bearer token"))
        );
        assert_eq!(
            verify(&bearer("not-a-jwt"), &[KEY], AT),
            Err(VerifyError::MalformedToken(
                "not three dot-separated segments"
            ))
        );
        assert_eq!(
            Grab.verify(
                &bearer(&issued.access_token),
                b"{}",
                &secrets(&[KEY]),
                &VerifyOptions::default(),
                at(AT)
            ),
            Err(VerifyError::Unconfigured("token endpoint"))
        );
        assert!(VerifyError::Unconfigured("token endpoint").is_misconfiguration());
        assert_eq!(
            Grab.sign(b"{}", &secret(KEY), &VerifyOptions::default(), at(AT))
                .unwrap_err(),
            SignError::Unconfigured("grab audience")
        );
        assert_eq!(verify(&bearer("x"), &[], AT), Err(VerifyError::NoSecret));
    }
}
