//! Uber Eats: `X-Uber-Signature` = lowercase hex HMAC-SHA256 of the raw body,
//! keyed with the app's client secret (Uber Direct uses a per-webhook signing
//! key instead: configure that as the account's secret if ever needed).
//!
//! No timestamp is signed. The event id (`event_id`) lives in the body, so it
//! is read only after the signature has been checked, and a body that is not
//! JSON (or has no usable `event_id`) still verifies, with no event id.

use std::time::SystemTime;

use http::HeaderMap;
use secrecy::SecretString;
use serde::Deserialize;

use super::common;
use super::{SignError, Signed, Verified, Verifier, VerifyError, VerifyOptions};

/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-uber-signature";

/// The Uber Eats scheme.
#[derive(Debug, Clone, Copy, Default)]
pub struct UberEats;

#[derive(Deserialize)]
struct Envelope {
    event_id: Option<String>,
}

impl Verifier for UberEats {
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
        // Uber documents a bare hex digest, but one public integration guide
        // shows `sha256=<hex>`; accepting the prefix costs nothing.
        let value = value.strip_prefix("sha256=").unwrap_or(value);
        let secret_index = common::verify_hex_body_hmac(SIGNATURE_HEADER, value, body, secrets)?;
        let event_id = serde_json::from_slice::<Envelope>(body)
            .ok()
            .and_then(|e| e.event_id)
            .and_then(|id| common::event_id(&id));
        Ok(Verified {
            event_id,
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

/// The headers Uber Eats sends with `body`.
pub fn sign(body: &[u8], secret: &SecretString) -> HeaderMap {
    common::sign_hex_body_hmac(SIGNATURE_HEADER, body, secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::testutil::*;

    const FIXTURE_SIGNATURE: &str = UBEREATS_FIXTURE_SIGNATURE;

    fn verify(headers: &HeaderMap, body: &[u8], keys: &[&str]) -> Result<Verified, VerifyError> {
        UberEats.verify(
            headers,
            body,
            &secrets(keys),
            &VerifyOptions::default(),
            at(0),
        )
    }

    #[test]
    fn documented_fixture_vector() {
        let body = UBEREATS_ORDER_NOTIFICATION;
        assert_eq!(
            value(&sign(body, &secret(FIXTURE_SECRET)), SIGNATURE_HEADER),
            FIXTURE_SIGNATURE
        );
        let h = headers(&[("X-Uber-Signature", FIXTURE_SIGNATURE)]);
        assert_eq!(
            verify(&h, body, &[FIXTURE_SECRET]),
            Ok(Verified {
                event_id: Some(UBEREATS_FIXTURE_EVENT_ID.to_owned()),
                secret_index: 0
            })
        );
    }

    #[test]
    fn sign_then_verify_round_trips() {
        let h = sign(br#"{"event_id":"e1"}"#, &secret("s"));
        assert_eq!(
            verify(&h, br#"{"event_id":"e1"}"#, &["s"]),
            Ok(Verified {
                event_id: Some("e1".to_owned()),
                secret_index: 0
            })
        );
    }

    #[test]
    fn event_id_is_optional_and_never_fails_verification() {
        for body in [
            &b"not json"[..],
            br#"{"event_type":"orders.notification"}"#,
            br#"{"event_id":42}"#,
            br#"{"event_id":"has space"}"#,
            br#"{"event_id":""}"#,
        ] {
            let h = sign(body, &secret("s"));
            assert_eq!(
                verify(&h, body, &["s"]),
                Ok(Verified {
                    event_id: None,
                    secret_index: 0
                }),
                "body {:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn sha256_prefix_is_tolerated() {
        let h = headers(&[(SIGNATURE_HEADER, &format!("sha256={FIXTURE_SIGNATURE}"))]);
        assert_eq!(
            verify(&h, UBEREATS_ORDER_NOTIFICATION, &[FIXTURE_SECRET]).map(|v| v.secret_index),
            Ok(0)
        );
    }

    #[test]
    fn missing_header() {
        assert_eq!(
            verify(&HeaderMap::new(), UBEREATS_ORDER_NOTIFICATION, &["s"]),
            Err(VerifyError::MissingHeader(SIGNATURE_HEADER))
        );
    }

    #[test]
    fn malformed_header() {
        let h = headers(&[(SIGNATURE_HEADER, "v1,9fdd21f8")]);
        assert_eq!(
            verify(&h, UBEREATS_ORDER_NOTIFICATION, &["s"]),
            Err(VerifyError::MalformedHeader {
                header: SIGNATURE_HEADER,
                reason: "not a 64-digit hex sha-256 hmac"
            })
        );
    }
}
