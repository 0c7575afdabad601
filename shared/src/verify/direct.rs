//! Direct channels (e.g. a restaurant's own web shop): Standard Webhooks 1.0.
//!
//! Headers `webhook-id`, `webhook-timestamp` (integer Unix seconds) and
//! `webhook-signature`: a space-separated list of `v1,<base64>` entries (the
//! sender lists one per secret during its own rotation; any match wins, other
//! versions such as the asymmetric `v1a` are ignored). The signed content is
//! `{id}.{timestamp}.{body}`, HMAC-SHA256, keyed with the secret's bytes:
//! `whsec_<base64>`, or the bare base64 (as the reference libraries accept).
//!
//! The timestamp is signed, so it bounds replays: it must be within the
//! account's tolerance of `now`, in the past or the future. `webhook-id` is
//! the event id (the spec's idempotency key).

use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::HeaderMap;
use secrecy::{ExposeSecret, SecretSlice, SecretString};

use super::common::{self, hmac_sha256, hmac_sha256_tag};
use super::{SignError, Signed, Verified, Verifier, VerifyError, VerifyOptions};

/// The event id header.
pub const ID_HEADER: &str = "webhook-id";
/// The signed Unix-seconds timestamp header.
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// The signatures header.
pub const SIGNATURE_HEADER: &str = "webhook-signature";

/// Prefix of a serialized Standard Webhooks symmetric secret.
pub use crate::secret::STANDARD_WEBHOOKS_PREFIX as SECRET_PREFIX;

/// The Standard Webhooks scheme.
#[derive(Debug, Clone, Copy, Default)]
pub struct Direct;

/// The key bytes of a `whsec_<base64>` (or bare base64) secret; `None` if it
/// is neither (the config loader refuses such a secret at start).
pub use crate::secret::standard_webhooks_key as decode_secret;

fn malformed(header: &'static str, reason: &'static str) -> VerifyError {
    VerifyError::MalformedHeader { header, reason }
}

/// Most `v1` entries a signature header may list. Senders list one per
/// secret they sign with, and rotation means two; a longer list only makes
/// the receiver compare more (issue 12: 4,000 entries once cost 4,000 MACs
/// of the whole body).
pub const MAX_V1_SIGNATURES: usize = 16;

/// The `v1` signatures of the header, decoded. Entries of other versions are
/// skipped, and so are undecodable `v1` entries as long as one is usable:
/// every candidate still has to be a valid MAC. More than
/// [`MAX_V1_SIGNATURES`] `v1` entries is malformed (the header's length is
/// bounded by [`common::header`]).
fn v1_signatures(value: &str) -> Result<Vec<[u8; 32]>, VerifyError> {
    let mut v1 = value
        .split_ascii_whitespace()
        .filter_map(|entry| entry.split_once(','))
        .filter(|(version, _)| *version == "v1");
    let signatures: Vec<[u8; 32]> = v1
        .by_ref()
        .take(MAX_V1_SIGNATURES)
        .filter_map(|(_, sig)| STANDARD.decode(sig).ok()?.try_into().ok())
        .collect();
    if v1.next().is_some() {
        return Err(malformed(SIGNATURE_HEADER, "more than 16 v1 signatures"));
    }
    if signatures.is_empty() {
        return Err(malformed(SIGNATURE_HEADER, "no usable v1 signature"));
    }
    Ok(signatures)
}

fn parse_timestamp(value: &str) -> Result<i64, VerifyError> {
    // Digits only, as the spec's "integer unix timestamp": we sign-check the
    // header text as sent, so a lenient parse ("+17", "17.9") would let other
    // implementations read the same signed text as another time.
    if value.is_empty() || value.len() > 18 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed(TIMESTAMP_HEADER, "not integer unix seconds"));
    }
    value
        .parse()
        .map_err(|_| malformed(TIMESTAMP_HEADER, "not integer unix seconds"))
}

impl Verifier for Direct {
    fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        secrets: &[SecretString],
        options: &VerifyOptions,
        now: SystemTime,
    ) -> Result<Verified, VerifyError> {
        common::require_secrets(secrets)?;
        // Keep each key's position in the configured list for `secret_index`.
        let keys: Vec<(usize, SecretSlice<u8>)> = secrets
            .iter()
            .enumerate()
            .filter_map(|(i, s)| decode_secret(s).map(|key| (i, key)))
            .collect();
        if keys.is_empty() {
            return Err(VerifyError::InvalidSecret);
        }

        let id = common::required_header(headers, ID_HEADER)?;
        let timestamp_text = common::required_header(headers, TIMESTAMP_HEADER)?;
        let signature = common::required_header(headers, SIGNATURE_HEADER)?;
        if id.is_empty() {
            return Err(malformed(ID_HEADER, "empty"));
        }
        // The spec asks that ids carry no '.', the separator of the signed
        // content, so that id and timestamp cannot trade characters.
        if id.contains('.') {
            return Err(malformed(ID_HEADER, "contains '.'"));
        }
        let timestamp = parse_timestamp(timestamp_text)?;
        let signatures = v1_signatures(signature)?;

        // One MAC per secret, compared with every candidate: the work is
        // the account's secret count, whatever the header lists.
        let parts: [&[u8]; 5] = [id.as_bytes(), b".", timestamp_text.as_bytes(), b".", body];
        let secret_index = keys
            .iter()
            .find(|(_, key)| {
                let tag = hmac_sha256_tag(key.expose_secret(), &parts);
                // Every candidate is compared (no short cut), in constant time.
                signatures
                    .iter()
                    .fold(false, |found, candidate| tag.matches(candidate) | found)
            })
            .map(|(i, _)| *i)
            .ok_or(VerifyError::BadSignature)?;

        // Checked after the signature so that `stale_timestamp` counts only
        // genuinely signed requests (replays, skewed clocks), not forgeries.
        let skew_secs = common::unix_secs(now).saturating_sub(timestamp);
        let tolerance_secs = options.timestamp_tolerance.as_secs();
        if skew_secs.unsigned_abs() > tolerance_secs {
            return Err(VerifyError::StaleTimestamp {
                skew_secs,
                tolerance_secs,
            });
        }

        Ok(Verified {
            event_id: common::event_id(id),
            secret_index,
        })
    }

    /// With a `msg_` id derived from `at` and `body`.
    fn sign(
        &self,
        body: &[u8],
        secret: &SecretString,
        _options: &VerifyOptions,
        at: SystemTime,
    ) -> Result<Signed, SignError> {
        let id = format!("msg_{}", common::derived_id(body, at)?);
        sign(body, secret, &id, at).map(Signed::headers)
    }
}

/// The Standard Webhooks headers for `body` as event `id`, sent at `at`.
pub fn sign(
    body: &[u8],
    secret: &SecretString,
    id: &str,
    at: SystemTime,
) -> Result<HeaderMap, SignError> {
    sign_all(body, std::slice::from_ref(secret), id, at)
}

/// [`sign`] with every secret: one `v1,` signature each, space-separated as
/// the scheme allows, so a receiver verifying with any of them accepts
/// (how a tenant rotates its signing secret without a gap).
pub fn sign_all(
    body: &[u8],
    secrets: &[SecretString],
    id: &str,
    at: SystemTime,
) -> Result<HeaderMap, SignError> {
    let id_value = common::header_value(ID_HEADER, id)?;
    let timestamp = at
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| SignError::TimeBeforeEpoch)?
        .as_secs()
        .to_string();
    let mut signatures = Vec::with_capacity(secrets.len());
    for secret in secrets {
        let key = decode_secret(secret).ok_or(SignError::InvalidSecret)?;
        let tag = hmac_sha256(
            key.expose_secret(),
            &[id.as_bytes(), b".", timestamp.as_bytes(), b".", body],
        );
        signatures.push(format!("v1,{}", STANDARD.encode(tag)));
    }
    if signatures.is_empty() {
        return Err(SignError::InvalidSecret);
    }
    let mut headers = HeaderMap::new();
    headers.insert(ID_HEADER, id_value);
    headers.insert(TIMESTAMP_HEADER, common::own_header_value(timestamp));
    headers.insert(
        SIGNATURE_HEADER,
        common::own_header_value(signatures.join(" ")),
    );
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::verify::testutil::*;

    /// The Standard Webhooks reference library's signing test vector.
    const REF_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const REF_ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const REF_TIMESTAMP: u64 = 1_649_367_553;
    const REF_BODY: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;
    const REF_SIGNATURE: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";

    fn verify_at(
        headers: &HeaderMap,
        body: &[u8],
        keys: &[&str],
        now: u64,
    ) -> Result<Verified, VerifyError> {
        Direct.verify(
            headers,
            body,
            &secrets(keys),
            &VerifyOptions::default(),
            at(now),
        )
    }

    fn verify(headers: &HeaderMap, body: &[u8], keys: &[&str]) -> Result<Verified, VerifyError> {
        verify_at(headers, body, keys, REF_TIMESTAMP)
    }

    fn ref_headers(signature: &str) -> HeaderMap {
        headers(&[
            ("webhook-id", REF_ID),
            ("webhook-timestamp", &REF_TIMESTAMP.to_string()),
            ("webhook-signature", signature),
        ])
    }

    fn ok(secret_index: usize) -> Result<Verified, VerifyError> {
        Ok(Verified {
            event_id: Some(REF_ID.to_owned()),
            secret_index,
        })
    }

    #[test]
    fn reference_library_vector() {
        let signed = sign(REF_BODY, &secret(REF_SECRET), REF_ID, at(REF_TIMESTAMP)).unwrap();
        assert_eq!(value(&signed, SIGNATURE_HEADER), REF_SIGNATURE);
        assert_eq!(value(&signed, TIMESTAMP_HEADER), "1649367553");
        assert_eq!(value(&signed, ID_HEADER), REF_ID);
        assert_eq!(
            verify(&ref_headers(REF_SIGNATURE), REF_BODY, &[REF_SECRET]),
            ok(0)
        );
    }

    #[test]
    fn svix_documentation_vector() {
        let h = headers(&[
            ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
            ("webhook-timestamp", "1614265330"),
            (
                "webhook-signature",
                "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            ),
        ]);
        assert_eq!(
            verify_at(
                &h,
                br#"{"test": 2432232314}"#,
                &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
                1_614_265_330
            )
            .map(|v| v.event_id),
            Ok(Some("msg_p5jXN8AQM9LWM0D4loKWxJek".to_owned()))
        );
    }

    #[test]
    fn secret_without_prefix_is_raw_base64() {
        assert_eq!(
            verify(
                &ref_headers(REF_SIGNATURE),
                REF_BODY,
                &["C2FVsBQIhrscChlQIMV+b5sSYspob7oD"]
            ),
            ok(0)
        );
    }

    #[test]
    fn sign_then_verify_round_trips_with_a_derived_id() {
        let signed = Direct
            .sign(
                b"{}",
                &secret(REF_SECRET),
                &VerifyOptions::default(),
                at(REF_TIMESTAMP),
            )
            .unwrap()
            .headers;
        let id = value(&signed, ID_HEADER).to_owned();
        assert!(id.starts_with("msg_"), "{id}");
        assert_eq!(
            verify(&signed, b"{}", &[REF_SECRET]),
            Ok(Verified {
                event_id: Some(id),
                secret_index: 0
            })
        );
    }

    #[test]
    fn any_listed_signature_may_match() {
        let listed = format!(
            "v1a,hnO3f9T8Ytu9HwrXslvumlUpqtNVqkhqw/enGzPCXe5BdqzCInXqYXFymVJaA7AZdpXwVLPo3mNl8EM+m7TBAg== \
             v1,R3PTzyfHASBKHH98a7yexTwaJ4yNIcGhFQc1yuN+BPU= v1,not-base64 {REF_SIGNATURE}"
        );
        assert_eq!(
            verify(&ref_headers(&listed), REF_BODY, &[REF_SECRET]),
            ok(0)
        );
    }

    #[test]
    fn tampered_body_id_or_timestamp_is_a_bad_signature() {
        assert_eq!(
            verify(
                &ref_headers(REF_SIGNATURE),
                &tampered(REF_BODY),
                &[REF_SECRET]
            ),
            Err(VerifyError::BadSignature)
        );
        let mut other_id = ref_headers(REF_SIGNATURE);
        other_id.insert(ID_HEADER, "msg_other".parse().unwrap());
        assert_eq!(
            verify(&other_id, REF_BODY, &[REF_SECRET]),
            Err(VerifyError::BadSignature)
        );
        let mut other_time = ref_headers(REF_SIGNATURE);
        other_time.insert(TIMESTAMP_HEADER, "1649367554".parse().unwrap());
        assert_eq!(
            verify(&other_time, REF_BODY, &[REF_SECRET]),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn wrong_secret_is_a_bad_signature() {
        assert_eq!(
            verify(
                &ref_headers(REF_SIGNATURE),
                REF_BODY,
                &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
            ),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn rotated_second_secret_verifies_and_undecodable_secrets_are_skipped() {
        assert_eq!(
            verify(
                &ref_headers(REF_SIGNATURE),
                REF_BODY,
                &["whsec_!!!", REF_SECRET]
            ),
            ok(1)
        );
    }

    #[test]
    fn no_decodable_secret_is_a_misconfiguration() {
        let err = verify(
            &ref_headers(REF_SIGNATURE),
            REF_BODY,
            &["whsec_!!!", "whsec_"],
        )
        .unwrap_err();
        assert_eq!(err, VerifyError::InvalidSecret);
        assert!(err.is_misconfiguration());
    }

    #[test]
    fn timestamp_tolerance_applies_to_past_and_future() {
        let h = ref_headers(REF_SIGNATURE);
        let five_min = 300;
        for now in [REF_TIMESTAMP - five_min, REF_TIMESTAMP + five_min] {
            assert_eq!(
                verify_at(&h, REF_BODY, &[REF_SECRET], now),
                ok(0),
                "now {now}"
            );
        }
        assert_eq!(
            verify_at(&h, REF_BODY, &[REF_SECRET], REF_TIMESTAMP + five_min + 1),
            Err(VerifyError::StaleTimestamp {
                skew_secs: 301,
                tolerance_secs: 300
            })
        );
        assert_eq!(
            verify_at(&h, REF_BODY, &[REF_SECRET], REF_TIMESTAMP - five_min - 1),
            Err(VerifyError::StaleTimestamp {
                skew_secs: -301,
                tolerance_secs: 300
            })
        );
    }

    #[test]
    fn tolerance_is_configurable() {
        let options = VerifyOptions {
            timestamp_tolerance: Duration::from_secs(10),
            ..VerifyOptions::default()
        };
        let verify_with = |now| {
            Direct.verify(
                &ref_headers(REF_SIGNATURE),
                REF_BODY,
                &secrets(&[REF_SECRET]),
                &options,
                at(now),
            )
        };
        assert_eq!(verify_with(REF_TIMESTAMP + 10), ok(0));
        assert_eq!(
            verify_with(REF_TIMESTAMP + 11).map_err(|e| e.error_type()),
            Err("stale_timestamp")
        );
    }

    #[test]
    fn forged_stale_request_counts_as_a_bad_signature() {
        assert_eq!(
            verify_at(
                &ref_headers("v1,R3PTzyfHASBKHH98a7yexTwaJ4yNIcGhFQc1yuN+BPU="),
                REF_BODY,
                &[REF_SECRET],
                REF_TIMESTAMP + 3600
            ),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn missing_headers() {
        for name in [ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER] {
            let mut h = ref_headers(REF_SIGNATURE);
            h.remove(name);
            assert_eq!(
                verify(&h, REF_BODY, &[REF_SECRET]),
                Err(VerifyError::MissingHeader(name))
            );
        }
    }

    #[test]
    fn malformed_headers() {
        let cases: [(&'static str, &str, &'static str); 7] = [
            (TIMESTAMP_HEADER, "1649367553.5", "not integer unix seconds"),
            (TIMESTAMP_HEADER, "+1649367553", "not integer unix seconds"),
            (
                TIMESTAMP_HEADER,
                "2022-04-07T21:39:13Z",
                "not integer unix seconds",
            ),
            (
                SIGNATURE_HEADER,
                "tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
                "no usable v1 signature",
            ),
            (
                SIGNATURE_HEADER,
                "v2,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
                "no usable v1 signature",
            ),
            (SIGNATURE_HEADER, "v1,aGVsbG8=", "no usable v1 signature"),
            (ID_HEADER, "msg.1", "contains '.'"),
        ];
        for (header, bad, reason) in cases {
            let mut h = ref_headers(REF_SIGNATURE);
            h.insert(header, bad.parse().unwrap());
            assert_eq!(
                verify(&h, REF_BODY, &[REF_SECRET]),
                Err(VerifyError::MalformedHeader { header, reason }),
                "{header}: {bad}"
            );
        }
    }

    #[test]
    fn header_name_case_does_not_matter() {
        let h = headers(&[
            ("Webhook-Id", REF_ID),
            ("WEBHOOK-TIMESTAMP", "1649367553"),
            ("Webhook-Signature", REF_SIGNATURE),
        ]);
        assert_eq!(verify(&h, REF_BODY, &[REF_SECRET]), ok(0));
    }

    #[test]
    fn signing_with_two_secrets_verifies_with_either() {
        let (old, new) = (
            secret("whsec_b2xkLXNlY3JldA=="),
            secret("whsec_bmV3LXNlY3JldA=="),
        );
        let headers = sign_all(
            b"{}",
            &[old.clone(), new.clone()],
            "msg_2",
            at(1_700_000_000),
        )
        .unwrap();
        let value = headers[SIGNATURE_HEADER].to_str().unwrap();
        assert_eq!(value.split(' ').count(), 2, "{value}");
        for only in [old, new] {
            let alone = sign(b"{}", &only, "msg_2", at(1_700_000_000)).unwrap();
            assert!(value.contains(alone[SIGNATURE_HEADER].to_str().unwrap()));
        }
    }

    /// Issue 12, item 1: each listed signature used to cost a MAC of the
    /// whole body per secret. Now the work is one MAC per secret.
    #[test]
    fn a_long_signature_list_costs_one_mac_per_secret() {
        let junk = |i: u8| format!("v1,{}", STANDARD.encode([i; 32]));
        let mut listed: Vec<String> = (0..15).map(junk).collect();
        listed.push(REF_SIGNATURE.to_owned());
        let h = ref_headers(&listed.join(" "));
        let other = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let before = crate::verify::macs_on_this_thread();
        assert_eq!(verify(&h, REF_BODY, &[other, REF_SECRET]), ok(1));
        assert_eq!(crate::verify::macs_on_this_thread() - before, 2);

        let forged = ref_headers(&(0..16).map(junk).collect::<Vec<_>>().join(" "));
        let before = crate::verify::macs_on_this_thread();
        assert_eq!(
            verify(&forged, REF_BODY, &[other, other, REF_SECRET]),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(crate::verify::macs_on_this_thread() - before, 3);
    }

    /// Issue 12, item 1: a 1 MiB body with 4,000 `v1` entries took 2.5 s.
    /// Over 16 entries, or over the header length bound, nothing is hashed.
    #[test]
    fn oversized_signature_lists_are_refused_before_any_mac() {
        let body = vec![b'x'; 1024 * 1024];
        let entry = format!("v1,{}", STANDARD.encode([7u8; 32]));
        let cases = [(4000, "too long"), (17, "more than 16 v1 signatures")];
        for (entries, reason) in cases {
            let h = ref_headers(&vec![entry.as_str(); entries].join(" "));
            let before = crate::verify::macs_on_this_thread();
            assert_eq!(
                verify(&h, &body, &[REF_SECRET]),
                Err(VerifyError::MalformedHeader {
                    header: SIGNATURE_HEADER,
                    reason
                }),
                "{entries} entries"
            );
            assert_eq!(crate::verify::macs_on_this_thread(), before);
        }
        // Other versions count only towards the length bound.
        let v1a = format!("v1a,{}", STANDARD.encode([7u8; 64]));
        let mut listed = vec![v1a.as_str(); 40];
        listed.push(REF_SIGNATURE);
        assert_eq!(
            verify(&ref_headers(&listed.join(" ")), REF_BODY, &[REF_SECRET]),
            ok(0)
        );
    }

    #[test]
    fn sign_refuses_an_invalid_secret() {
        assert_eq!(
            sign(b"{}", &secret("whsec_%%%"), "msg_1", at(1)).unwrap_err(),
            SignError::InvalidSecret
        );
    }
}
