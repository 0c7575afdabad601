//! Wolt (Marketplace): `WOLT-SIGNATURE` = lowercase hex HMAC-SHA256 of the raw
//! body with the webhook client secret. Some integrations send or expect
//! `x-wolt-signature`; either header is read.
//!
//! No timestamp is signed. The event id is the notification's `id` in the
//! body, read only after the signature has been checked; a body without a
//! usable one still verifies.

use std::time::SystemTime;

use http::HeaderMap;
use secrecy::SecretString;
use serde::Deserialize;

use super::common;
use super::{SignError, Signed, Verified, Verifier, VerifyError, VerifyOptions};

/// The signature header Wolt documents.
pub const SIGNATURE_HEADER: &str = "wolt-signature";
/// The alternative spelling some senders use.
pub const ALT_SIGNATURE_HEADER: &str = "x-wolt-signature";

/// The Wolt scheme.
#[derive(Debug, Clone, Copy, Default)]
pub struct Wolt;

#[derive(Deserialize)]
struct Notification {
    id: Option<String>,
}

impl Verifier for Wolt {
    fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        secrets: &[SecretString],
        _options: &VerifyOptions,
        _now: SystemTime,
    ) -> Result<Verified, VerifyError> {
        common::require_secrets(secrets)?;
        let (header, value) = match common::header(headers, SIGNATURE_HEADER)? {
            Some(value) => (SIGNATURE_HEADER, value),
            None => (
                ALT_SIGNATURE_HEADER,
                common::header(headers, ALT_SIGNATURE_HEADER)?
                    .ok_or(VerifyError::MissingHeader(SIGNATURE_HEADER))?,
            ),
        };
        let secret_index = common::verify_hex_body_hmac(header, value, body, secrets)?;
        let event_id = serde_json::from_slice::<Notification>(body)
            .ok()
            .and_then(|n| n.id)
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

/// The headers Wolt sends with `body` (the documented `WOLT-SIGNATURE`).
pub fn sign(body: &[u8], secret: &SecretString) -> HeaderMap {
    common::sign_hex_body_hmac(SIGNATURE_HEADER, body, secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::testutil::*;

    const FIXTURE_SIGNATURE: &str = WOLT_FIXTURE_SIGNATURE;
    const FIXTURE_EVENT_ID: &str = WOLT_FIXTURE_EVENT_ID;

    fn verify(headers: &HeaderMap, body: &[u8], keys: &[&str]) -> Result<Verified, VerifyError> {
        Wolt.verify(
            headers,
            body,
            &secrets(keys),
            &VerifyOptions::default(),
            at(0),
        )
    }

    fn fixture_verified(secret_index: usize) -> Result<Verified, VerifyError> {
        Ok(Verified {
            event_id: Some(FIXTURE_EVENT_ID.to_owned()),
            secret_index,
        })
    }

    #[test]
    fn documented_fixture_vector_under_either_header() {
        assert_eq!(
            value(
                &sign(WOLT_ORDER_CREATED, &secret(FIXTURE_SECRET)),
                SIGNATURE_HEADER
            ),
            FIXTURE_SIGNATURE
        );
        for name in [
            "WOLT-SIGNATURE",
            "Wolt-Signature",
            "x-wolt-signature",
            "X-Wolt-Signature",
        ] {
            let h = headers(&[(name, FIXTURE_SIGNATURE)]);
            assert_eq!(
                verify(&h, WOLT_ORDER_CREATED, &[FIXTURE_SECRET]),
                fixture_verified(0),
                "header {name}"
            );
        }
    }

    #[test]
    fn documented_header_wins_over_the_alternative() {
        let h = headers(&[
            (SIGNATURE_HEADER, FIXTURE_SIGNATURE),
            (ALT_SIGNATURE_HEADER, &"0".repeat(64)),
        ]);
        assert_eq!(
            verify(&h, WOLT_ORDER_CREATED, &[FIXTURE_SECRET]),
            fixture_verified(0)
        );
    }

    #[test]
    fn missing_header_names_the_documented_header() {
        assert_eq!(
            verify(&HeaderMap::new(), WOLT_ORDER_CREATED, &["s"]),
            Err(VerifyError::MissingHeader(SIGNATURE_HEADER))
        );
    }

    #[test]
    fn malformed_header_names_the_header_it_read() {
        let h = headers(&[(ALT_SIGNATURE_HEADER, "not-hex")]);
        assert_eq!(
            verify(&h, WOLT_ORDER_CREATED, &["s"]),
            Err(VerifyError::MalformedHeader {
                header: ALT_SIGNATURE_HEADER,
                reason: "not a 64-digit hex sha-256 hmac"
            })
        );
    }
}
