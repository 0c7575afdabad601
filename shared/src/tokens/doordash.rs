//! DoorDash's token: a JWT the hub signs itself for every call [DOC]. No
//! token endpoint, nothing stored: each call gets a fresh one, so none is
//! ever used past its `exp`.
//!
//! - Header, exactly: `{"alg":"HS256","typ":"JWT","dd-ver":"DD-JWT-V1"}`.
//! - Claims: `{"aud":"doordash","iss":<developer_id>,"kid":<key_id>,
//!   "exp":<iat + LIFETIME>,"iat":<now>}` (whole seconds).
//! - Signed HMAC-SHA256 with the base64url-DECODED signing secret
//!   ([`crate::secret::doordash_signing_key`]), sent as
//!   `Authorization: Bearer <jwt>` with `auth-version: v2`.
//!
//! [`LIFETIME`] is 5 minutes, well under DoorDash's 30-minute cap
//! ([`MAX_LIFETIME`]): a token is minted for one request and used at once,
//! so its lifetime only has to cover the request (`request_timeout`) and a
//! few minutes of clock difference between the hub and DoorDash, and a
//! leaked one is worth little.
//!
//! [`verify`] is the other side, for the fake provider and the tests: the
//! signature in constant time, the exact header, `aud`, and a lifetime of
//! at most [`MAX_LIFETIME`].

use std::fmt;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use secrecy::{ExposeSecret, SecretSlice};
use serde::{Deserialize, Serialize};

use crate::config::ProviderApi;

/// The JOSE header DoorDash requires, byte for byte as sent.
pub const HEADER: &str = r#"{"alg":"HS256","typ":"JWT","dd-ver":"DD-JWT-V1"}"#;
/// How long a minted token is valid (see the module docs).
pub const LIFETIME: Duration = Duration::from_secs(300);
/// DoorDash refuses a token living longer than this [DOC].
pub const MAX_LIFETIME: Duration = Duration::from_secs(1800);
/// The `aud` claim.
pub const AUDIENCE: &str = "doordash";

/// A JWT's claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub aud: String,
    pub iss: String,
    pub kid: String,
    pub exp: i64,
    pub iat: i64,
}

/// Signs DoorDash JWTs for one account. Its `Debug` shows the ids only.
#[derive(Clone)]
pub struct Signer {
    developer_id: String,
    key_id: String,
    key: SecretSlice<u8>,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("developer_id", &self.developer_id)
            .field("key_id", &self.key_id)
            .field("key", &"[redacted]")
            .finish()
    }
}

impl Signer {
    /// The signer of a DoorDash account's `[account.api]`: `None` when it
    /// lacks the developer id, the key id or a decodable secret (the config
    /// refuses such a DoorDash account at start).
    pub fn new(api: &ProviderApi) -> Option<Signer> {
        Some(Signer {
            developer_id: api.developer_id.clone()?,
            key_id: api.key_id.clone()?,
            key: crate::secret::doordash_signing_key(&api.client_secret)?,
        })
    }

    /// A token issued at `now` (Unix seconds), valid for [`LIFETIME`].
    pub fn token(&self, now: i64) -> String {
        let claims = Claims {
            aud: AUDIENCE.to_owned(),
            iss: self.developer_id.clone(),
            kid: self.key_id.clone(),
            exp: now + LIFETIME.as_secs() as i64,
            iat: now,
        };
        sign(&claims, self.key.expose_secret())
    }
}

/// A JWT with DoorDash's header and `claims`, signed with `key` (already
/// decoded).
pub fn sign(claims: &Claims, key: &[u8]) -> String {
    let claims = serde_json::to_vec(claims).expect("claims encode");
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(HEADER),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

/// Why a token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("not three base64url parts")]
    Malformed,
    #[error("the signature does not match")]
    BadSignature,
    #[error("the header is not DoorDash's ({HEADER})")]
    BadHeader,
    #[error("the claims do not read: {0}")]
    BadClaims(String),
    #[error("aud is not doordash")]
    BadAudience,
    #[error("issued in the future")]
    NotYetValid,
    #[error("expired")]
    Expired,
    #[error("lives longer than 30 minutes")]
    TooLong,
}

/// The claims of `token` if it is DoorDash's header signed with `key` and
/// valid at `now` (Unix seconds; `skew` allowed on `iat`). The caller
/// checks `iss` and `kid`.
pub fn verify(token: &str, key: &[u8], now: i64, skew: Duration) -> Result<Claims, JwtError> {
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let tag = URL_SAFE_NO_PAD.decode(s).map_err(|_| JwtError::Malformed)?;
    let input = &token[..h.len() + 1 + c.len()];
    hmac::verify(
        &hmac::Key::new(hmac::HMAC_SHA256, key),
        input.as_bytes(),
        &tag,
    )
    .map_err(|_| JwtError::BadSignature)?;
    let header = URL_SAFE_NO_PAD.decode(h).map_err(|_| JwtError::Malformed)?;
    let header: serde_json::Value =
        serde_json::from_slice(&header).map_err(|_| JwtError::BadHeader)?;
    let want: serde_json::Value = serde_json::from_str(HEADER).expect("a JSON header");
    if header != want {
        return Err(JwtError::BadHeader);
    }
    let claims = URL_SAFE_NO_PAD.decode(c).map_err(|_| JwtError::Malformed)?;
    let claims: Claims =
        serde_json::from_slice(&claims).map_err(|e| JwtError::BadClaims(e.to_string()))?;
    if claims.aud != AUDIENCE {
        return Err(JwtError::BadAudience);
    }
    if claims.iat > now + skew.as_secs() as i64 {
        return Err(JwtError::NotYetValid);
    }
    if claims.exp <= now {
        return Err(JwtError::Expired);
    }
    if claims.exp - claims.iat > MAX_LIFETIME.as_secs() as i64 {
        return Err(JwtError::TooLong);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;

    /// Computed outside this code (Python's hmac and base64) from the ids
    /// of `api/doordash-jwt-payload.json`, `exp = iat + 300` and the
    /// signing secret `c2VjcmV0Pz4` (base64url of `secret?>`).
    const VECTOR: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImRkLXZlciI6IkRELUpXVC1WMSJ9.eyJhdWQiOiJkb29yZGFzaCIsImlzcyI6IjJiN2E0YzFlLTAwMDAtNDAwMC04MDAwLTAwMDAwMDAwMDAwMSIsImtpZCI6IjZmMWQyZTNjLTAwMDAtNDAwMC04MDAwLTAwMDAwMDAwMDAwMiIsImV4cCI6MTcxODM4MTEwMCwiaWF0IjoxNzE4MzgwODAwfQ.7_buHWgWKN1xInYheGZ-_RaerCvIIG0Fb1C14mESkI8";
    const IAT: i64 = 1_718_380_800;

    fn signer() -> Signer {
        let mut api = super::super::credential::tests::api("http://127.0.0.1:1/x", "u", None);
        api.developer_id = Some("2b7a4c1e-0000-4000-8000-000000000001".into());
        api.key_id = Some("6f1d2e3c-0000-4000-8000-000000000002".into());
        api.client_secret = SecretString::from("c2VjcmV0Pz4".to_owned());
        Signer::new(&api).unwrap()
    }

    #[test]
    fn a_token_is_the_documented_jwt_byte_for_byte() {
        assert_eq!(signer().token(IAT), VECTOR);
        let claims = verify(VECTOR, b"secret?>", IAT + 10, Duration::ZERO).unwrap();
        assert_eq!(
            claims,
            Claims {
                aud: "doordash".into(),
                iss: "2b7a4c1e-0000-4000-8000-000000000001".into(),
                kid: "6f1d2e3c-0000-4000-8000-000000000002".into(),
                exp: IAT + 300,
                iat: IAT,
            }
        );
    }

    #[test]
    fn a_forged_stale_or_odd_token_is_refused() {
        let key = b"secret?>";
        let at = |now| verify(VECTOR, key, now, Duration::from_secs(60));
        assert_eq!(at(IAT + 300), Err(JwtError::Expired));
        assert_eq!(at(IAT - 61), Err(JwtError::NotYetValid));
        assert!(at(IAT - 60).is_ok());
        assert_eq!(
            verify(VECTOR, b"secret?<", IAT, Duration::ZERO),
            Err(JwtError::BadSignature)
        );
        // Tampered claims, the signature kept.
        let (_, rest) = VECTOR.split_once('.').unwrap();
        let (_, sig) = rest.split_once('.').unwrap();
        let other = URL_SAFE_NO_PAD
            .encode(br#"{"aud":"doordash","iss":"x","kid":"y","exp":1718381100,"iat":1718380800}"#);
        let forged = format!("{}.{other}.{sig}", URL_SAFE_NO_PAD.encode(HEADER));
        assert_eq!(
            verify(&forged, key, IAT, Duration::ZERO),
            Err(JwtError::BadSignature)
        );
        // Signed right, but not DoorDash's header, audience or lifetime.
        let signed = |header: &str, claims: &str| {
            let input = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header),
                URL_SAFE_NO_PAD.encode(claims)
            );
            let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), input.as_bytes());
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
        };
        let claims = r#"{"aud":"doordash","iss":"i","kid":"k","exp":1718381100,"iat":1718380800}"#;
        assert_eq!(
            verify(
                &signed(r#"{"alg":"HS256","typ":"JWT"}"#, claims),
                key,
                IAT,
                Duration::ZERO
            ),
            Err(JwtError::BadHeader)
        );
        assert_eq!(
            verify(
                &signed(
                    HEADER,
                    r#"{"aud":"uber","iss":"i","kid":"k","exp":1718381100,"iat":1718380800}"#
                ),
                key,
                IAT,
                Duration::ZERO
            ),
            Err(JwtError::BadAudience)
        );
        assert_eq!(
            verify(
                &signed(
                    HEADER,
                    r#"{"aud":"doordash","iss":"i","kid":"k","exp":1718382601,"iat":1718380800}"#
                ),
                key,
                IAT,
                Duration::ZERO
            ),
            Err(JwtError::TooLong)
        );
        assert!(matches!(
            verify(
                &signed(HEADER, r#"{"aud":"doordash"}"#),
                key,
                IAT,
                Duration::ZERO
            ),
            Err(JwtError::BadClaims(_))
        ));
        assert_eq!(
            verify("a.b", key, IAT, Duration::ZERO),
            Err(JwtError::Malformed)
        );
        assert_eq!(
            verify(&format!("{VECTOR}.x"), key, IAT, Duration::ZERO),
            Err(JwtError::Malformed)
        );
    }

    #[test]
    fn debug_shows_no_key_and_a_non_doordash_api_has_no_signer() {
        let shown = format!("{:?}", signer());
        assert!(
            !shown.contains("c2VjcmV0") && !shown.contains("secret"),
            "{shown}"
        );
        let api = super::super::credential::tests::api("http://127.0.0.1:1/x", "u", None);
        assert!(Signer::new(&api).is_none());
    }
}
