//! Deliveroo: `X-Deliveroo-Hmac-Sha256` = lowercase hex HMAC-SHA256, keyed
//! with the webhook secret (not the API secret), of
//! `<X-Deliveroo-Sequence-Guid> + " " + <raw body>` (Order Events and every
//! newer webhook) or `<guid> + " \n " + <raw body>` (the legacy POS webhook).
//! The route does not say which kind of webhook it is, so either form is
//! accepted; both bind the guid and the whole body, so accepting both lets
//! nothing unsigned through.
//!
//! No timestamp is signed. Deliveroo documents the sequence guid as a
//! globally unique identifier of the webhook event, so it is the event id.

use std::time::SystemTime;

use http::HeaderMap;
use secrecy::{ExposeSecret, SecretString};

use super::common::{self, hmac_sha256, hmac_sha256_matches};
use super::{SignError, Signed, Verified, Verifier, VerifyError, VerifyOptions};

/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-deliveroo-hmac-sha256";
/// The header carrying the signed sequence guid.
pub const GUID_HEADER: &str = "x-deliveroo-sequence-guid";

/// Which of Deliveroo's two signed-message layouts to produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageForm {
    /// `guid + " " + body`: Order Events and all newer webhooks.
    Current,
    /// `guid + " \n " + body`: the deprecated POS `new_order`/`cancel_order`.
    Legacy,
}

impl MessageForm {
    fn separator(self) -> &'static [u8] {
        match self {
            MessageForm::Current => b" ",
            MessageForm::Legacy => b" \n ",
        }
    }
}

/// The Deliveroo scheme.
#[derive(Debug, Clone, Copy, Default)]
pub struct Deliveroo;

impl Verifier for Deliveroo {
    fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        secrets: &[SecretString],
        _options: &VerifyOptions,
        _now: SystemTime,
    ) -> Result<Verified, VerifyError> {
        common::require_secrets(secrets)?;
        let signature = common::required_header(headers, SIGNATURE_HEADER)?;
        let guid = common::required_header(headers, GUID_HEADER)?;
        if guid.is_empty() {
            return Err(VerifyError::MalformedHeader {
                header: GUID_HEADER,
                reason: "empty",
            });
        }
        let tag = common::decode_hex_tag(SIGNATURE_HEADER, signature)?;
        let secret_index = common::find_secret(secrets, |key| {
            [MessageForm::Current, MessageForm::Legacy]
                .into_iter()
                .any(|form| {
                    hmac_sha256_matches(key, &[guid.as_bytes(), form.separator(), body], &tag)
                })
        })?;
        Ok(Verified {
            event_id: common::event_id(guid),
            secret_index,
        })
    }

    /// Current form, with a sequence guid derived from `at` and `body`.
    fn sign(
        &self,
        body: &[u8],
        secret: &SecretString,
        _options: &VerifyOptions,
        at: SystemTime,
    ) -> Result<Signed, SignError> {
        let guid = common::derived_id(body, at)?;
        sign(body, secret, &guid, MessageForm::Current).map(Signed::headers)
    }
}

/// The headers Deliveroo sends with `body` under sequence guid `guid`.
pub fn sign(
    body: &[u8],
    secret: &SecretString,
    guid: &str,
    form: MessageForm,
) -> Result<HeaderMap, SignError> {
    let guid_value = common::header_value(GUID_HEADER, guid)?;
    let tag = hmac_sha256(
        secret.expose_secret().as_bytes(),
        &[guid.as_bytes(), form.separator(), body],
    );
    let mut headers = HeaderMap::new();
    headers.insert(GUID_HEADER, guid_value);
    headers.insert(SIGNATURE_HEADER, common::own_header_value(hex::encode(tag)));
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::testutil::*;

    const FIXTURE_GUID: &str = DELIVEROO_FIXTURE_GUID;
    const FIXTURE_CURRENT: &str = DELIVEROO_FIXTURE_CURRENT;
    const FIXTURE_LEGACY: &str = DELIVEROO_FIXTURE_LEGACY;

    fn verify(headers: &HeaderMap, body: &[u8], keys: &[&str]) -> Result<Verified, VerifyError> {
        Deliveroo.verify(
            headers,
            body,
            &secrets(keys),
            &VerifyOptions::default(),
            at(0),
        )
    }

    fn fixture_headers(signature: &str) -> HeaderMap {
        headers(&[
            ("X-Deliveroo-Sequence-Guid", FIXTURE_GUID),
            ("X-Deliveroo-Hmac-Sha256", signature),
        ])
    }

    fn verified(guid: &str, secret_index: usize) -> Result<Verified, VerifyError> {
        Ok(Verified {
            event_id: Some(guid.to_owned()),
            secret_index,
        })
    }

    #[test]
    fn documented_fixture_vectors_in_both_forms() {
        let key = secret(FIXTURE_SECRET);
        for (form, expected) in [
            (MessageForm::Current, FIXTURE_CURRENT),
            (MessageForm::Legacy, FIXTURE_LEGACY),
        ] {
            let signed = sign(DELIVEROO_ORDER_CREATED, &key, FIXTURE_GUID, form).unwrap();
            assert_eq!(value(&signed, SIGNATURE_HEADER), expected, "{form:?}");
            assert_eq!(value(&signed, GUID_HEADER), FIXTURE_GUID);
            assert_eq!(
                verify(
                    &fixture_headers(expected),
                    DELIVEROO_ORDER_CREATED,
                    &[FIXTURE_SECRET]
                ),
                verified(FIXTURE_GUID, 0),
                "{form:?}"
            );
        }
    }

    #[test]
    fn documentation_placeholder_vector() {
        // Deliveroo's docs placeholders, legacy separator (research notes §1).
        let signed = sign(
            b"our_payload",
            &secret("your_webhook_secret"),
            "our_sequence_guid",
            MessageForm::Legacy,
        )
        .unwrap();
        assert_eq!(
            value(&signed, SIGNATURE_HEADER),
            "d02f355fdf9ee543b950df1c7812054d3c89a71ea504165a5093672e3a83fe0a"
        );
    }

    #[test]
    fn sign_then_verify_round_trips_with_a_derived_guid() {
        let key = secret("s");
        let options = VerifyOptions::default();
        let signed = Deliveroo
            .sign(b"{}", &key, &options, at(1_718_388_131))
            .unwrap()
            .headers;
        let guid = value(&signed, GUID_HEADER).to_owned();
        assert_eq!(guid.len(), 16);
        assert_eq!(verify(&signed, b"{}", &["s"]), verified(&guid, 0));

        // Another event signed at the same instant gets another guid.
        let other = Deliveroo
            .sign(b"[]", &key, &options, at(1_718_388_131))
            .unwrap()
            .headers;
        assert_ne!(value(&other, GUID_HEADER), guid);
    }

    #[test]
    fn guid_is_signed() {
        let h = headers(&[
            (GUID_HEADER, "1718388131043"),
            (SIGNATURE_HEADER, FIXTURE_CURRENT),
        ]);
        assert_eq!(
            verify(&h, DELIVEROO_ORDER_CREATED, &[FIXTURE_SECRET]),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn missing_headers() {
        let only_guid = headers(&[(GUID_HEADER, FIXTURE_GUID)]);
        assert_eq!(
            verify(&only_guid, b"{}", &["s"]),
            Err(VerifyError::MissingHeader(SIGNATURE_HEADER))
        );
        let only_signature = headers(&[(SIGNATURE_HEADER, FIXTURE_CURRENT)]);
        assert_eq!(
            verify(&only_signature, b"{}", &["s"]),
            Err(VerifyError::MissingHeader(GUID_HEADER))
        );
    }

    #[test]
    fn malformed_headers() {
        let short = headers(&[(GUID_HEADER, FIXTURE_GUID), (SIGNATURE_HEADER, "cc2825")]);
        assert_eq!(
            verify(&short, b"{}", &["s"]).map_err(|e| e.error_type()),
            Err("malformed_header")
        );
        let empty_guid = headers(&[(GUID_HEADER, ""), (SIGNATURE_HEADER, FIXTURE_CURRENT)]);
        assert_eq!(
            verify(&empty_guid, b"{}", &["s"]),
            Err(VerifyError::MalformedHeader {
                header: GUID_HEADER,
                reason: "empty"
            })
        );
    }

    #[test]
    fn sign_refuses_a_guid_that_is_not_a_header_value() {
        assert_eq!(
            sign(b"{}", &secret("s"), "a\nb", MessageForm::Current).unwrap_err(),
            SignError::InvalidHeaderValue(GUID_HEADER)
        );
    }
}
