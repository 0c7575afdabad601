//! Just Eat Takeaway (JET Connect):
//! `X-JET-Connect-Hash: HMAC-SHA256 t=<unix ms>,signature=<base64>` where the
//! signature is the standard-alphabet base64 HMAC-SHA256 of the raw body
//! alone. The `t=` value is NOT part of the signed input (the JET spec's
//! worked example, secret `key` and body `example`, only reproduces that
//! way), so it proves nothing about freshness and no replay window is
//! enforced on it: anyone replaying a captured request could set it freely.
//!
//! There is no event id: the Receive Order body's `id` is the order's id,
//! shared by that order's later notifications (a cancellation would be taken
//! for a duplicate of the order), and `t=` is unsigned and may change between
//! retries. The caller's body-hash deduplication covers retries of the same
//! payload.

use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::HeaderMap;
use secrecy::{ExposeSecret, SecretString};

use super::common::{self, hmac_sha256, hmac_sha256_matches};
use super::{SignError, Signed, Verified, Verifier, VerifyError, VerifyOptions};

/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-jet-connect-hash";

const SCHEME: &str = "HMAC-SHA256";

/// The Just Eat (JET Connect) scheme.
#[derive(Debug, Clone, Copy, Default)]
pub struct JustEat;

fn malformed(reason: &'static str) -> VerifyError {
    VerifyError::MalformedHeader {
        header: SIGNATURE_HEADER,
        reason,
    }
}

/// The decoded `signature=` parameter of the header.
fn parse(value: &str) -> Result<[u8; 32], VerifyError> {
    let (scheme, params) = value
        .split_once(' ')
        .ok_or_else(|| malformed("expected \"HMAC-SHA256 t=...,signature=...\""))?;
    if !scheme.eq_ignore_ascii_case(SCHEME) {
        return Err(malformed("scheme is not HMAC-SHA256"));
    }
    // Split each parameter at its first '=' only: base64 padding is '='.
    let signature = params
        .split(',')
        .filter_map(|param| param.trim().split_once('='))
        .find_map(|(key, value)| (key == "signature").then_some(value))
        .ok_or_else(|| malformed("no signature parameter"))?;
    let decoded = STANDARD
        .decode(signature)
        .map_err(|_| malformed("signature is not base64"))?;
    decoded
        .try_into()
        .map_err(|_| malformed("signature is not a sha-256 hmac"))
}

impl Verifier for JustEat {
    fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        secrets: &[SecretString],
        _options: &VerifyOptions,
        _now: SystemTime,
    ) -> Result<Verified, VerifyError> {
        common::require_secrets(secrets)?;
        let tag = parse(common::required_header(headers, SIGNATURE_HEADER)?)?;
        let secret_index =
            common::find_secret(secrets, |key| hmac_sha256_matches(key, &[body], &tag))?;
        Ok(Verified {
            event_id: None,
            secret_index,
        })
    }

    fn sign(
        &self,
        body: &[u8],
        secret: &SecretString,
        _options: &VerifyOptions,
        at: SystemTime,
    ) -> Result<Signed, SignError> {
        sign(body, secret, at).map(Signed::headers)
    }
}

/// The headers JET Connect sends with `body` at time `at` (which goes into
/// `t=`, unsigned).
pub fn sign(body: &[u8], secret: &SecretString, at: SystemTime) -> Result<HeaderMap, SignError> {
    let millis = common::unix_millis_for_signing(at)?;
    let tag = hmac_sha256(secret.expose_secret().as_bytes(), &[body]);
    let value = format!("{SCHEME} t={millis},signature={}", STANDARD.encode(tag));
    let mut headers = HeaderMap::new();
    headers.insert(SIGNATURE_HEADER, common::own_header_value(value));
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::verify::testutil::*;

    const FIXTURE_HEADER: &str = JUSTEAT_FIXTURE_HEADER;
    const FIXTURE_AT_MS: u64 = JUSTEAT_FIXTURE_AT_MS;

    fn verify(headers: &HeaderMap, body: &[u8], keys: &[&str]) -> Result<Verified, VerifyError> {
        JustEat.verify(
            headers,
            body,
            &secrets(keys),
            &VerifyOptions::default(),
            at(0),
        )
    }

    fn ok(secret_index: usize) -> Result<Verified, VerifyError> {
        Ok(Verified {
            event_id: None,
            secret_index,
        })
    }

    #[test]
    fn jet_spec_worked_example() {
        let signed = sign(b"example", &secret("key"), at(0)).unwrap();
        assert_eq!(
            value(&signed, SIGNATURE_HEADER),
            "HMAC-SHA256 t=0,signature=FGwot7AqiDIthEv6TippJm35DaRpRac5NSLd/wSp9go="
        );
    }

    #[test]
    fn documented_fixture_vector() {
        let signed_at = std::time::UNIX_EPOCH + Duration::from_millis(FIXTURE_AT_MS);
        let signed = sign(JUSTEAT_ORDER_CREATED, &secret(FIXTURE_SECRET), signed_at).unwrap();
        assert_eq!(value(&signed, SIGNATURE_HEADER), FIXTURE_HEADER);
        let h = headers(&[("X-JET-Connect-Hash", FIXTURE_HEADER)]);
        assert_eq!(verify(&h, JUSTEAT_ORDER_CREATED, &[FIXTURE_SECRET]), ok(0));
    }

    #[test]
    fn timestamp_is_neither_signed_nor_required() {
        for header in [
            "HMAC-SHA256 t=1,signature=ia48hejw+bQqwutFwQNHzusvyObbccBDxJLx1Ff6KoM=",
            "HMAC-SHA256 signature=ia48hejw+bQqwutFwQNHzusvyObbccBDxJLx1Ff6KoM=",
            "hmac-sha256 signature=ia48hejw+bQqwutFwQNHzusvyObbccBDxJLx1Ff6KoM=, t=9",
        ] {
            let h = headers(&[(SIGNATURE_HEADER, header)]);
            assert_eq!(
                verify(&h, JUSTEAT_ORDER_CREATED, &[FIXTURE_SECRET]),
                ok(0),
                "{header}"
            );
        }
    }

    #[test]
    fn missing_header() {
        assert_eq!(
            verify(&HeaderMap::new(), b"{}", &["s"]),
            Err(VerifyError::MissingHeader(SIGNATURE_HEADER))
        );
    }

    #[test]
    fn malformed_headers() {
        let hex_digest = format!(
            "HMAC-SHA256 t=1,signature={}",
            "89ae3c85e8f0f9b42ac2eb45c10347cceb2fc8e6db71c043c492f1d457fa2a83"
        );
        for (header, reason) in [
            (
                "ia48hejw+bQqwutFwQNHzusvyObbccBDxJLx1Ff6KoM=",
                "expected \"HMAC-SHA256 t=...,signature=...\"",
            ),
            (
                "HMAC-SHA1 t=1,signature=ia48hejw+bQqwutFwQNHzusvyObbccBDxJLx1Ff6KoM=",
                "scheme is not HMAC-SHA256",
            ),
            ("HMAC-SHA256 t=1", "no signature parameter"),
            (
                "HMAC-SHA256 t=1,signature=not base64!",
                "signature is not base64",
            ),
            // A hex digest where base64 belongs: a mistake seen in public code.
            (hex_digest.as_str(), "signature is not a sha-256 hmac"),
            (
                "HMAC-SHA256 t=1,signature=aGVsbG8=",
                "signature is not a sha-256 hmac",
            ),
        ] {
            let h = headers(&[(SIGNATURE_HEADER, header)]);
            assert_eq!(
                verify(&h, b"{}", &["s"]),
                Err(VerifyError::MalformedHeader {
                    header: SIGNATURE_HEADER,
                    reason
                }),
                "{header}"
            );
        }
    }
}
