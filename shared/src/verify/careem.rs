//! Careem: `x-careem-signature` = lowercase hex HMAC-SHA256 of the raw body.
//!
//! Careem publishes nothing; this is the contract the old service had with it
//! (DESIGN §4.1). No timestamp is signed and the payload carries no event id,
//! so replays are caught only by the body-hash deduplication downstream.

use std::time::SystemTime;

use http::HeaderMap;
use secrecy::SecretString;

use super::common;
use super::{SignError, Signed, Verified, Verifier, VerifyError, VerifyOptions};

/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-careem-signature";

/// The Careem scheme.
#[derive(Debug, Clone, Copy, Default)]
pub struct Careem;

impl Verifier for Careem {
    fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        secrets: &[SecretString],
        _options: &VerifyOptions,
        _now: SystemTime,
    ) -> Result<Verified, VerifyError> {
        common::require_secrets(secrets)?;
        let value = common::required_header(headers, SIGNATURE_HEADER)?;
        let secret_index = common::verify_hex_body_hmac(SIGNATURE_HEADER, value, body, secrets)?;
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
        _at: SystemTime,
    ) -> Result<Signed, SignError> {
        Ok(Signed::headers(sign(body, secret)))
    }
}

/// The headers Careem sends with `body`.
pub fn sign(body: &[u8], secret: &SecretString) -> HeaderMap {
    common::sign_hex_body_hmac(SIGNATURE_HEADER, body, secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::testutil::*;

    const SAMPLE: &[u8] = CAREEM_SAMPLE;
    const SAMPLE_SIGNATURE: &str = CAREEM_SAMPLE_SIGNATURE;

    fn verify(headers: &HeaderMap, body: &[u8], keys: &[&str]) -> Result<Verified, VerifyError> {
        Careem.verify(
            headers,
            body,
            &secrets(keys),
            &VerifyOptions::default(),
            at(0),
        )
    }

    #[test]
    fn known_answer_from_an_independent_implementation() {
        assert_eq!(
            value(&sign(SAMPLE, &secret(FIXTURE_SECRET)), SIGNATURE_HEADER),
            SAMPLE_SIGNATURE
        );
        let h = headers(&[("x-careem-signature", SAMPLE_SIGNATURE)]);
        assert_eq!(
            verify(&h, SAMPLE, &[FIXTURE_SECRET]),
            Ok(Verified {
                event_id: None,
                secret_index: 0
            })
        );
    }

    #[test]
    fn missing_header() {
        assert_eq!(
            verify(&HeaderMap::new(), SAMPLE, &["s3cret"]),
            Err(VerifyError::MissingHeader(SIGNATURE_HEADER))
        );
    }

    #[test]
    fn malformed_headers() {
        for bad in ["zz", "48eb14", &"0".repeat(66), "sha1=abcdef"] {
            let err = verify(&headers(&[(SIGNATURE_HEADER, bad)]), SAMPLE, &["s"]).unwrap_err();
            assert_eq!(err.error_type(), "malformed_header", "value {bad:?}");
        }
        let non_ascii = with_raw_header(HeaderMap::new(), SIGNATURE_HEADER, "é".as_bytes());
        assert_eq!(
            verify(&non_ascii, SAMPLE, &["s"]),
            Err(VerifyError::MalformedHeader {
                header: SIGNATURE_HEADER,
                reason: "not visible ascii"
            })
        );
    }

    #[test]
    fn header_name_and_hex_case_do_not_matter() {
        let upper = SAMPLE_SIGNATURE.to_uppercase();
        for name in ["X-Careem-Signature", "X-CAREEM-SIGNATURE"] {
            for sig in [SAMPLE_SIGNATURE, upper.as_str()] {
                let h = headers(&[(name, sig)]);
                assert_eq!(
                    verify(&h, SAMPLE, &[FIXTURE_SECRET]).map(|v| v.secret_index),
                    Ok(0)
                );
            }
        }
    }
}
