//! Talabat (Delivery Hero POS middleware, `MiddlewareJWTAuth`):
//! `Authorization: Bearer <JWT>`, HMAC-signed with the account's secret (its
//! UTF-8 bytes, as configured).
//!
//! - The algorithm is pinned per account ([`VerifyOptions::jwt_algorithm`],
//!   HS256 unless configured HS384/HS512). A token naming any other algorithm,
//!   `none` included, is refused before any key is tried.
//! - `exp` is required and enforced with [`VerifyOptions::jwt_leeway`]; `nbf`
//!   is enforced when present. Both are checked against the `now` passed in.
//! - A token may not live longer than [`VerifyOptions::jwt_max_lifetime`]:
//!   `exp - iat` is bounded, and so is `exp - now` (plus
//!   [`VerifyOptions::jwt_iat_skew`]) for a token without `iat`; an `iat`
//!   more than `jwt_iat_skew` in the future is refused (issue 12: `exp` in
//!   the year 9999 was accepted).
//! - A `crit` header is refused: it names extensions the recipient must
//!   understand, and we understand none (RFC 7515 §4.1.11).
//! - No other claim is checked: the one public hint at Delivery Hero's
//!   claims (`service: middleware`) is unconfirmed.
//! - The token does not cover the body: it authenticates the sender, not the
//!   payload, and whoever holds a captured token can replay it with any body
//!   until it expires. That is the provider's design; HTTPS and short `exp`
//!   are the mitigation. There is no event id either.
//!
//! Why `jsonwebtoken` without its crypto features: the crate handles the JWT
//! format (segments, base64url, header, the algorithm allow-list) and is well
//! kept, but both of its backends are heavy for three HMACs: `aws_lc_rs`
//! builds C code, and `rust_crypto` adds 21 crates to this workspace (RSA,
//! P-256/384, a second `hmac`), among them `rsa` 0.9, which audits flag
//! (RUSTSEC-2023-0071, no fixed release). Instead we install a process-wide
//! `CryptoProvider` that does HS256/384/512 only, with the workspace's
//! `hmac` 0.13 / `sha2` 0.11 and constant-time `verify_slice`. The crate then
//! adds only itself to the tree (its `signature` and `zeroize` are already
//! there through `async-nats` and `secrecy`). Hand-written JWT
//! parsing was the other option; the library keeps the format handling (and
//! a second check of the pinned algorithm) out of our code.

use std::sync::Once;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use http::HeaderMap;
use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{ErrorKind, new_error};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Sha256, Sha384, Sha512};

use super::common;
use super::{SignError, Signed, Verified, Verifier, VerifyError, VerifyOptions};

/// The header carrying the bearer token.
pub const AUTHORIZATION_HEADER: &str = "authorization";

/// Lifetime of the tokens [`sign`] issues.
pub const SIGNED_TOKEN_TTL: Duration = Duration::from_secs(5 * 60);

/// The JWT algorithms an account may pin (parsed by the config loader).
pub use crate::config::JwtAlgorithm;

fn jose(algorithm: JwtAlgorithm) -> Algorithm {
    match algorithm {
        JwtAlgorithm::Hs256 => Algorithm::HS256,
        JwtAlgorithm::Hs384 => Algorithm::HS384,
        JwtAlgorithm::Hs512 => Algorithm::HS512,
    }
}

/// The Talabat scheme.
#[derive(Debug, Clone, Copy, Default)]
pub struct Talabat;

fn malformed_header(reason: &'static str) -> VerifyError {
    VerifyError::MalformedHeader {
        header: AUTHORIZATION_HEADER,
        reason,
    }
}

/// The `alg` the token's header declares, read before the library sees it so
/// that a wrong algorithm (`none` included, which the library cannot even
/// parse) is classified as such rather than as a malformed token.
fn declared_alg(token: &str) -> Result<String, VerifyError> {
    #[derive(Deserialize)]
    struct JoseHeader {
        alg: String,
        #[serde(default)]
        crit: Option<serde::de::IgnoredAny>,
    }
    let (header, _) = token.split_once('.').ok_or(VerifyError::MalformedToken(
        "not three dot-separated segments",
    ))?;
    let json = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| VerifyError::MalformedToken("header is not base64url"))?;
    let header = serde_json::from_slice::<JoseHeader>(&json)
        .map_err(|_| VerifyError::MalformedToken("header is not json with a string alg"))?;
    if header.crit.is_some() {
        // RFC 7515 §4.1.11: a recipient that does not understand every
        // listed extension must refuse the token; we understand none.
        return Err(VerifyError::MalformedToken("crit header is not supported"));
    }
    Ok(header.alg)
}

/// A JWT NumericDate: seconds, possibly fractional (RFC 7519 §2).
fn numeric_date(value: &Value) -> Option<i64> {
    value.as_i64().or_else(|| {
        value
            .as_f64()
            .filter(|f| f.is_finite() && f.abs() < 1e15)
            .map(|f| f.floor() as i64)
    })
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

fn check_time_claims(claims: &Value, now: i64, options: &VerifyOptions) -> Result<(), VerifyError> {
    // The library already refuses claims that are not an object; this only
    // gets at the fields.
    let claims = claims
        .as_object()
        .ok_or(VerifyError::InvalidClaims("claims are not a json object"))?;
    let leeway = secs(options.jwt_leeway);
    let max_lifetime = secs(options.jwt_max_lifetime);
    let iat_skew = secs(options.jwt_iat_skew);
    let exp = claims
        .get("exp")
        .ok_or(VerifyError::InvalidClaims("missing exp"))?;
    let exp = numeric_date(exp).ok_or(VerifyError::InvalidClaims("exp is not a numeric date"))?;
    if now > exp.saturating_add(leeway) {
        return Err(VerifyError::ExpiredToken {
            expired_secs: now.saturating_sub(exp).unsigned_abs(),
        });
    }
    if let Some(nbf) = claims.get("nbf") {
        let nbf =
            numeric_date(nbf).ok_or(VerifyError::InvalidClaims("nbf is not a numeric date"))?;
        if nbf > now.saturating_add(leeway) {
            return Err(VerifyError::InvalidClaims("not valid yet (nbf)"));
        }
    }
    if let Some(iat) = claims.get("iat") {
        let iat =
            numeric_date(iat).ok_or(VerifyError::InvalidClaims("iat is not a numeric date"))?;
        if iat > now.saturating_add(iat_skew) {
            return Err(VerifyError::InvalidClaims("issued in the future (iat)"));
        }
        if exp.saturating_sub(iat) > max_lifetime {
            return Err(VerifyError::InvalidClaims("lifetime over the maximum"));
        }
    }
    // Also without `iat`: a token may not be valid further ahead than a
    // token issued now (give or take the skew) could be.
    if exp.saturating_sub(now) > max_lifetime.saturating_add(iat_skew) {
        return Err(VerifyError::InvalidClaims("lifetime over the maximum"));
    }
    Ok(())
}

/// Checks `token` against each key in turn: the index of the one that signed
/// it, once its time claims hold at `now`.
fn verify_token<'k>(
    token: &str,
    keys: impl Iterator<Item = &'k [u8]>,
    options: &VerifyOptions,
    now: SystemTime,
) -> Result<usize, VerifyError> {
    verify_jwt(token, keys, options.jwt_algorithm, options, now).map(|(index, _)| index)
}

/// Checks `token`, signed with `algorithm` only, against each key in turn:
/// the index of the one that signed it and its claims, once its time claims
/// hold at `now` ([`VerifyOptions`]' leeway, lifetime and skew). The
/// caller checks any other claim.
pub(crate) fn verify_jwt<'k>(
    token: &str,
    keys: impl Iterator<Item = &'k [u8]>,
    algorithm: JwtAlgorithm,
    options: &VerifyOptions,
    now: SystemTime,
) -> Result<(usize, Value), VerifyError> {
    if declared_alg(token)? != algorithm.as_str() {
        return Err(VerifyError::DisallowedAlgorithm);
    }

    ensure_crypto_provider();
    // The library's own exp/nbf checks read the system clock; ours use `now`.
    // The library still enforces the pinned algorithm (a second line behind
    // `declared_alg`) and the signature.
    let mut validation = Validation::new(jose(algorithm));
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();

    for (index, key) in keys.enumerate() {
        let key = DecodingKey::from_secret(key);
        match jsonwebtoken::decode::<Value>(token, &key, &validation) {
            Ok(data) => {
                check_time_claims(&data.claims, common::unix_secs(now), options)?;
                return Ok((index, data.claims));
            }
            Err(e) => match e.kind() {
                // Another key may have signed it.
                ErrorKind::InvalidSignature => continue,
                // Anything else is about the token itself and would be the
                // same with every key.
                ErrorKind::InvalidAlgorithm => return Err(VerifyError::DisallowedAlgorithm),
                ErrorKind::InvalidToken => {
                    return Err(VerifyError::MalformedToken(
                        "not three dot-separated segments",
                    ));
                }
                ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
                    return Err(VerifyError::MalformedToken("segment is not base64url"));
                }
                ErrorKind::Json(_) => {
                    return Err(VerifyError::MalformedToken(
                        "header or claims are not valid json",
                    ));
                }
                _ => return Err(VerifyError::MalformedToken("refused by the jwt library")),
            },
        }
    }
    Err(VerifyError::BadSignature)
}

impl Verifier for Talabat {
    fn verify(
        &self,
        headers: &HeaderMap,
        _body: &[u8],
        secrets: &[SecretString],
        options: &VerifyOptions,
        now: SystemTime,
    ) -> Result<Verified, VerifyError> {
        common::require_secrets(secrets)?;
        let value = common::required_header(headers, AUTHORIZATION_HEADER)?;
        let (scheme, token) = value
            .split_once(' ')
            .ok_or_else(|| malformed_header("not a bearer token"))?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(malformed_header("not a bearer token"));
        }
        let keys = secrets.iter().map(|s| s.expose_secret().as_bytes());
        let secret_index = verify_token(token.trim(), keys, options, now)?;
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
        sign(secret, options.jwt_algorithm, at).map(Signed::headers)
    }
}

#[derive(Serialize)]
struct MiddlewareClaims {
    iat: u64,
    exp: u64,
    service: &'static str,
}

/// The headers the middleware sends: a bearer token issued at `at`, expiring
/// [`SIGNED_TOKEN_TTL`] later, with the (unconfirmed) `service: middleware`
/// claim. The body is not signed by this scheme.
pub fn sign(
    secret: &SecretString,
    algorithm: JwtAlgorithm,
    at: SystemTime,
) -> Result<HeaderMap, SignError> {
    let iat = at
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| SignError::TimeBeforeEpoch)?
        .as_secs();
    let claims = MiddlewareClaims {
        iat,
        exp: iat + SIGNED_TOKEN_TTL.as_secs(),
        service: "middleware",
    };
    let token = token(secret, algorithm, &claims)?;
    let mut headers = HeaderMap::new();
    headers.insert(
        AUTHORIZATION_HEADER,
        common::own_header_value(format!("Bearer {token}")),
    );
    Ok(headers)
}

/// A JWT with arbitrary `claims`, for tests and sample traffic that need
/// specific ones.
pub fn token(
    secret: &SecretString,
    algorithm: JwtAlgorithm,
    claims: &impl Serialize,
) -> Result<String, SignError> {
    ensure_crypto_provider();
    let key = EncodingKey::from_secret(secret.expose_secret().as_bytes());
    jsonwebtoken::encode(&Header::new(jose(algorithm)), claims, &key).map_err(|_| SignError::Token)
}

// --- the HMAC-only crypto provider for jsonwebtoken ---

static HMAC_ONLY_PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: hmac_signer,
    verifier_factory: hmac_verifier,
    // JWKs are never used here; these panic if something ever asks.
    key_utils: KeyUtils::new_unimplemented(),
};

/// Installs the HMAC-only provider as jsonwebtoken's process default, once.
/// If something else installed one first, that one stays (an `Err` from
/// `install_default`): any full provider does HS256/384/512 just as well.
fn ensure_crypto_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let _ = HMAC_ONLY_PROVIDER.install_default();
    });
}

#[derive(Clone)]
enum HsMac {
    Hs256(Hmac<Sha256>),
    Hs384(Hmac<Sha384>),
    Hs512(Hmac<Sha512>),
}

impl HsMac {
    fn new(algorithm: Algorithm, key: &[u8]) -> jsonwebtoken::errors::Result<Self> {
        // HMAC accepts keys of any length, so `new_from_slice` cannot fail.
        let invalid_key = |_| new_error(ErrorKind::InvalidKeyFormat);
        Ok(match algorithm {
            Algorithm::HS256 => HsMac::Hs256(Hmac::new_from_slice(key).map_err(invalid_key)?),
            Algorithm::HS384 => HsMac::Hs384(Hmac::new_from_slice(key).map_err(invalid_key)?),
            Algorithm::HS512 => HsMac::Hs512(Hmac::new_from_slice(key).map_err(invalid_key)?),
            _ => return Err(new_error(ErrorKind::InvalidAlgorithm)),
        })
    }

    fn algorithm(&self) -> Algorithm {
        match self {
            HsMac::Hs256(_) => Algorithm::HS256,
            HsMac::Hs384(_) => Algorithm::HS384,
            HsMac::Hs512(_) => Algorithm::HS512,
        }
    }

    fn tag(&self, msg: &[u8]) -> Vec<u8> {
        match self.clone() {
            HsMac::Hs256(m) => m.chain_update(msg).finalize().into_bytes().to_vec(),
            HsMac::Hs384(m) => m.chain_update(msg).finalize().into_bytes().to_vec(),
            HsMac::Hs512(m) => m.chain_update(msg).finalize().into_bytes().to_vec(),
        }
    }

    fn matches(&self, msg: &[u8], tag: &[u8]) -> bool {
        common::count_mac();
        match self.clone() {
            HsMac::Hs256(m) => m.chain_update(msg).verify_slice(tag).is_ok(),
            HsMac::Hs384(m) => m.chain_update(msg).verify_slice(tag).is_ok(),
            HsMac::Hs512(m) => m.chain_update(msg).verify_slice(tag).is_ok(),
        }
    }
}

struct HsSigner(HsMac);
struct HsVerifier(HsMac);

impl jsonwebtoken::signature::Signer<Vec<u8>> for HsSigner {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, jsonwebtoken::signature::Error> {
        Ok(self.0.tag(msg))
    }
}

impl JwtSigner for HsSigner {
    fn algorithm(&self) -> Algorithm {
        self.0.algorithm()
    }
}

impl jsonwebtoken::signature::Verifier<Vec<u8>> for HsVerifier {
    fn verify(
        &self,
        msg: &[u8],
        signature: &Vec<u8>,
    ) -> Result<(), jsonwebtoken::signature::Error> {
        if self.0.matches(msg, signature) {
            Ok(())
        } else {
            Err(jsonwebtoken::signature::Error::new())
        }
    }
}

impl JwtVerifier for HsVerifier {
    fn algorithm(&self) -> Algorithm {
        self.0.algorithm()
    }
}

fn hmac_signer(
    algorithm: &Algorithm,
    key: &EncodingKey,
) -> jsonwebtoken::errors::Result<Box<dyn JwtSigner>> {
    if key.family() != AlgorithmFamily::Hmac {
        return Err(new_error(ErrorKind::InvalidKeyFormat));
    }
    Ok(Box::new(HsSigner(HsMac::new(*algorithm, key.as_bytes())?)))
}

fn hmac_verifier(
    algorithm: &Algorithm,
    key: &DecodingKey,
) -> jsonwebtoken::errors::Result<Box<dyn JwtVerifier>> {
    if key.family() != AlgorithmFamily::Hmac {
        return Err(new_error(ErrorKind::InvalidKeyFormat));
    }
    Ok(Box::new(HsVerifier(HsMac::new(
        *algorithm,
        key.try_get_as_bytes()?,
    )?)))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::verify::testutil::*;

    const NOW: u64 = 1_718_388_131;

    fn options(algorithm: JwtAlgorithm) -> VerifyOptions {
        VerifyOptions {
            jwt_algorithm: algorithm,
            ..VerifyOptions::default()
        }
    }

    fn verify_with(
        headers: &HeaderMap,
        keys: &[&str],
        options: &VerifyOptions,
        now: u64,
    ) -> Result<Verified, VerifyError> {
        Talabat.verify(headers, b"{}", &secrets(keys), options, at(now))
    }

    fn verify(headers: &HeaderMap, keys: &[&str]) -> Result<Verified, VerifyError> {
        verify_with(headers, keys, &VerifyOptions::default(), NOW)
    }

    fn bearer(token: &str) -> HeaderMap {
        headers(&[("Authorization", &format!("Bearer {token}"))])
    }

    fn ok(secret_index: usize) -> Result<Verified, VerifyError> {
        Ok(Verified {
            event_id: None,
            secret_index,
        })
    }

    fn b64(json: &Value) -> String {
        URL_SAFE_NO_PAD.encode(json.to_string())
    }

    #[test]
    fn rfc7515_appendix_a1_hs256_example() {
        // Its key is binary, which a configured (UTF-8) secret cannot be, so
        // this goes one level below `verify`. The header has CRLFs in it and
        // exp is 1300819380 (2011), so it is checked just before that.
        let key = URL_SAFE_NO_PAD
            .decode("AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow")
            .unwrap();
        let token = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let defaults = VerifyOptions::default();
        let check = |now| {
            verify_token(
                token,
                [b"wrong".as_slice(), &key].into_iter(),
                &defaults,
                at(now),
            )
        };
        assert_eq!(check(1_300_819_380), Ok(1));
        assert_eq!(
            check(1_300_819_380 + 61),
            Err(VerifyError::ExpiredToken { expired_secs: 61 })
        );
    }

    #[test]
    fn library_encoder_matches_a_hand_made_token() {
        // Header and claims in the field order the library serializes them.
        let header = r#"{"typ":"JWT","alg":"HS256"}"#;
        let claims = format!(
            r#"{{"iat":{NOW},"exp":{},"service":"middleware"}}"#,
            NOW + 300
        );
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(&claims)
        );
        let tag = common::hmac_sha256(b"s3cret", &[signing_input.as_bytes()]);
        let hand_made = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(tag));

        let signed = sign(&secret("s3cret"), JwtAlgorithm::Hs256, at(NOW)).unwrap();
        assert_eq!(
            value(&signed, AUTHORIZATION_HEADER),
            format!("Bearer {hand_made}")
        );
        assert_eq!(verify(&bearer(&hand_made), &["s3cret"]), ok(0));
    }

    #[test]
    fn sign_then_verify_round_trips_for_each_pinned_algorithm() {
        for algorithm in [
            JwtAlgorithm::Hs256,
            JwtAlgorithm::Hs384,
            JwtAlgorithm::Hs512,
        ] {
            let signed = sign(&secret("s3cret"), algorithm, at(NOW)).unwrap();
            assert_eq!(
                verify_with(&signed, &["s3cret"], &options(algorithm), NOW),
                ok(0),
                "{algorithm}"
            );
        }
    }

    #[test]
    fn an_algorithm_other_than_the_pinned_one_is_refused() {
        let hs512 = sign(&secret("s3cret"), JwtAlgorithm::Hs512, at(NOW)).unwrap();
        assert_eq!(
            verify(&hs512, &["s3cret"]),
            Err(VerifyError::DisallowedAlgorithm)
        );
        let hs256 = sign(&secret("s3cret"), JwtAlgorithm::Hs256, at(NOW)).unwrap();
        assert_eq!(
            verify_with(&hs256, &["s3cret"], &options(JwtAlgorithm::Hs384), NOW),
            Err(VerifyError::DisallowedAlgorithm)
        );
    }

    #[test]
    fn alg_none_and_unknown_algorithms_are_refused() {
        let claims = b64(&json!({"exp": NOW + 300}));
        for alg in ["none", "None", "hs256", "RS256", "ES256"] {
            let header = b64(&json!({"alg": alg, "typ": "JWT"}));
            for signature in ["", "c2ln"] {
                let token = format!("{header}.{claims}.{signature}");
                assert_eq!(
                    verify(&bearer(&token), &["s3cret"]),
                    Err(VerifyError::DisallowedAlgorithm),
                    "alg {alg}, signature {signature:?}"
                );
            }
        }
    }

    #[test]
    fn tampered_claims_are_a_bad_signature() {
        let signed = token(
            &secret("s3cret"),
            JwtAlgorithm::Hs256,
            &json!({"exp": NOW + 300}),
        )
        .unwrap();
        let mut parts: Vec<String> = signed.split('.').map(str::to_owned).collect();
        parts[1] = b64(&json!({"exp": NOW + 3000}));
        assert_eq!(
            verify(&bearer(&parts.join(".")), &["s3cret"]),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn wrong_secret_is_a_bad_signature() {
        let signed = sign(&secret("s3cret"), JwtAlgorithm::Hs256, at(NOW)).unwrap();
        assert_eq!(verify(&signed, &["other"]), Err(VerifyError::BadSignature));
    }

    #[test]
    fn rotated_second_secret_verifies() {
        let signed = sign(&secret("next"), JwtAlgorithm::Hs256, at(NOW)).unwrap();
        assert_eq!(verify(&signed, &["current", "next"]), ok(1));
    }

    #[test]
    fn exp_is_enforced_with_leeway() {
        let signed = sign(&secret("s"), JwtAlgorithm::Hs256, at(NOW)).unwrap();
        let exp = NOW + SIGNED_TOKEN_TTL.as_secs();
        let defaults = VerifyOptions::default();
        assert_eq!(verify_with(&signed, &["s"], &defaults, exp + 60), ok(0));
        assert_eq!(
            verify_with(&signed, &["s"], &defaults, exp + 61),
            Err(VerifyError::ExpiredToken { expired_secs: 61 })
        );
        let no_leeway = VerifyOptions {
            jwt_leeway: Duration::ZERO,
            ..defaults
        };
        assert_eq!(
            verify_with(&signed, &["s"], &no_leeway, exp + 1),
            Err(VerifyError::ExpiredToken { expired_secs: 1 })
        );
    }

    #[test]
    fn exp_is_required_and_must_be_a_date() {
        for (claims, reason) in [
            (json!({"iat": NOW}), "missing exp"),
            (json!({"exp": "tomorrow"}), "exp is not a numeric date"),
        ] {
            let t = token(&secret("s"), JwtAlgorithm::Hs256, &claims).unwrap();
            assert_eq!(
                verify(&bearer(&t), &["s"]),
                Err(VerifyError::InvalidClaims(reason)),
                "{claims}"
            );
        }
        // The library reads claims as an object before handing them over.
        let array = token(&secret("s"), JwtAlgorithm::Hs256, &json!([NOW])).unwrap();
        assert_eq!(
            verify(&bearer(&array), &["s"]),
            Err(VerifyError::MalformedToken(
                "header or claims are not valid json"
            ))
        );
        let fractional = token(
            &secret("s"),
            JwtAlgorithm::Hs256,
            &json!({"exp": NOW as f64 + 0.5}),
        )
        .unwrap();
        assert_eq!(verify(&bearer(&fractional), &["s"]), ok(0));
    }

    #[test]
    fn nbf_in_the_future_is_refused() {
        let t = token(
            &secret("s"),
            JwtAlgorithm::Hs256,
            &json!({"exp": NOW + 600, "nbf": NOW + 61}),
        )
        .unwrap();
        assert_eq!(
            verify(&bearer(&t), &["s"]),
            Err(VerifyError::InvalidClaims("not valid yet (nbf)"))
        );
        assert_eq!(
            verify_with(&bearer(&t), &["s"], &VerifyOptions::default(), NOW + 1),
            ok(0)
        );
    }

    #[test]
    fn missing_header() {
        assert_eq!(
            verify(&HeaderMap::new(), &["s"]),
            Err(VerifyError::MissingHeader(AUTHORIZATION_HEADER))
        );
    }

    #[test]
    fn malformed_header_and_tokens() {
        let signed = sign(&secret("s"), JwtAlgorithm::Hs256, at(NOW)).unwrap();
        let token = value(&signed, AUTHORIZATION_HEADER)
            .trim_start_matches("Bearer ")
            .to_owned();
        for (value, expected) in [
            (token.clone(), malformed_header("not a bearer token")),
            (
                format!("Basic {token}"),
                malformed_header("not a bearer token"),
            ),
            (
                "Bearer abc".to_owned(),
                VerifyError::MalformedToken("not three dot-separated segments"),
            ),
            (
                "Bearer !!.e30.x".to_owned(),
                VerifyError::MalformedToken("header is not base64url"),
            ),
            (
                format!("Bearer {}.e30.x", URL_SAFE_NO_PAD.encode("{}")),
                VerifyError::MalformedToken("header is not json with a string alg"),
            ),
            (
                format!("Bearer {}.e30", b64(&json!({"alg": "HS256"}))),
                VerifyError::MalformedToken("not three dot-separated segments"),
            ),
            (
                format!("Bearer {}.e30.!!", b64(&json!({"alg": "HS256"}))),
                VerifyError::MalformedToken("segment is not base64url"),
            ),
        ] {
            let h = headers(&[(AUTHORIZATION_HEADER, &value)]);
            assert_eq!(verify(&h, &["s"]), Err(expected), "{value}");
        }
    }

    #[test]
    fn header_name_and_scheme_case_do_not_matter() {
        let signed = sign(&secret("s"), JwtAlgorithm::Hs256, at(NOW)).unwrap();
        let token = value(&signed, AUTHORIZATION_HEADER)
            .trim_start_matches("Bearer ")
            .to_owned();
        let h = headers(&[("AUTHORIZATION", &format!("bearer {token}"))]);
        assert_eq!(verify(&h, &["s"]), ok(0));
    }

    /// Issue 12, item 10: tokens signed with the right secret whose claims
    /// or header the scheme must not accept.
    #[test]
    fn overlong_future_and_critical_tokens_are_refused() {
        let forged =
            |claims: Value| bearer(&token(&secret("s"), JwtAlgorithm::Hs256, &claims).unwrap());
        let hour = 3600;
        let year_9999 = 253_402_300_799_u64;
        for (claims, reason) in [
            (json!({"exp": year_9999}), "lifetime over the maximum"),
            (
                json!({"iat": NOW, "exp": year_9999}),
                "lifetime over the maximum",
            ),
            (
                json!({"iat": NOW - 60, "exp": NOW - 60 + hour + 1}),
                "lifetime over the maximum",
            ),
            (
                json!({"iat": NOW + 301, "exp": NOW + 600}),
                "issued in the future (iat)",
            ),
            (
                json!({"iat": year_9999, "exp": year_9999 + 60}),
                "issued in the future (iat)",
            ),
            (
                json!({"iat": "now", "exp": NOW + 60}),
                "iat is not a numeric date",
            ),
        ] {
            assert_eq!(
                verify(&forged(claims.clone()), &["s"]),
                Err(VerifyError::InvalidClaims(reason)),
                "{claims}"
            );
        }
        // At the bounds: an hour's lifetime, iat five minutes ahead, and a
        // token without iat valid for the hour and the skew.
        for claims in [
            json!({"iat": NOW, "exp": NOW + hour}),
            json!({"iat": NOW + 300, "exp": NOW + 300 + hour}),
            json!({"exp": NOW + hour + 300}),
        ] {
            assert_eq!(verify(&forged(claims.clone()), &["s"]), ok(0), "{claims}");
        }
        // Both bounds are the account's to set.
        let day = VerifyOptions {
            jwt_max_lifetime: Duration::from_secs(24 * hour),
            jwt_iat_skew: Duration::ZERO,
            ..VerifyOptions::default()
        };
        let long = forged(json!({"iat": NOW, "exp": NOW + 20 * hour}));
        assert_eq!(verify_with(&long, &["s"], &day, NOW), ok(0));
        let ahead = forged(json!({"iat": NOW + 1, "exp": NOW + hour}));
        assert_eq!(
            verify_with(&ahead, &["s"], &day, NOW),
            Err(VerifyError::InvalidClaims("issued in the future (iat)"))
        );

        // A crit header, whatever it lists, signed with the right secret.
        let claims = b64(&json!({"exp": NOW + 300}));
        for crit in [json!(["exp"]), json!(["http://example.com/ext"]), json!([])] {
            let header = b64(&json!({"alg": "HS256", "typ": "JWT", "crit": crit}));
            let input = format!("{header}.{claims}");
            let tag = common::hmac_sha256(b"s", &[input.as_bytes()]);
            let t = format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag));
            assert_eq!(
                verify(&bearer(&t), &["s"]),
                Err(VerifyError::MalformedToken("crit header is not supported")),
                "{crit}"
            );
        }
    }

    #[test]
    fn algorithm_names_parse_exactly() {
        assert_eq!("HS384".parse(), Ok(JwtAlgorithm::Hs384));
        assert_eq!(
            "none".parse::<JwtAlgorithm>(),
            Err("\"none\" is not HS256, HS384 or HS512".to_owned())
        );
        assert_eq!(JwtAlgorithm::default(), JwtAlgorithm::Hs256);
    }
}
