//! Pieces every scheme shares: header access, HMAC-SHA256 over the signed
//! parts, trying each secret, and vetting event ids.

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use http::{HeaderMap, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use super::{SignError, VerifyError};

type HmacSha256 = Hmac<Sha256>;

/// Longest header value a scheme reads. The longest legitimate one is a
/// Standard Webhooks signature list (16 entries of under 100 bytes) or a JWT;
/// anything longer is refused before it is parsed or hashed, so header
/// parsing and token MACs cost a bounded amount before the caller is known.
pub const MAX_HEADER_BYTES: usize = 8 * 1024;

thread_local! {
    /// MACs computed on this thread ([`macs_on_this_thread`]).
    static MACS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How many MACs (over a body or a token) verification has computed on the
/// calling thread so far: how tests and benchmarks measure verification work
/// without timing it. A thread-local add per MAC, next to hashing the body.
pub fn macs_on_this_thread() -> u64 {
    MACS.with(std::cell::Cell::get)
}

/// Counts one MAC for [`macs_on_this_thread`].
pub(crate) fn count_mac() {
    MACS.with(|n| n.set(n.get() + 1));
}

/// The value of header `name`, if present. A value that is not visible ASCII
/// cannot carry any of the formats we accept, so it is malformed rather than
/// absent; neither can one over [`MAX_HEADER_BYTES`].
pub(crate) fn header<'h>(
    headers: &'h HeaderMap,
    name: &'static str,
) -> Result<Option<&'h str>, VerifyError> {
    match headers.get(name) {
        None => Ok(None),
        Some(value) if value.len() > MAX_HEADER_BYTES => Err(VerifyError::MalformedHeader {
            header: name,
            reason: "too long",
        }),
        Some(value) => {
            value
                .to_str()
                .map(|s| Some(s.trim()))
                .map_err(|_| VerifyError::MalformedHeader {
                    header: name,
                    reason: "not visible ascii",
                })
        }
    }
}

/// The value of header `name`, which the scheme requires.
pub(crate) fn required_header<'h>(
    headers: &'h HeaderMap,
    name: &'static str,
) -> Result<&'h str, VerifyError> {
    header(headers, name)?.ok_or(VerifyError::MissingHeader(name))
}

/// A lowercase or uppercase hex HMAC-SHA256 tag.
pub(crate) fn decode_hex_tag(header: &'static str, value: &str) -> Result<[u8; 32], VerifyError> {
    let mut tag = [0u8; 32];
    hex::decode_to_slice(value, &mut tag).map_err(|_| VerifyError::MalformedHeader {
        header,
        reason: "not a 64-digit hex sha-256 hmac",
    })?;
    Ok(tag)
}

fn mac(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    count_mac();
    // HMAC takes keys of any length (long ones are hashed), so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(key).expect("hmac accepts keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac
}

/// HMAC-SHA256 of the concatenation of `parts`, without concatenating them.
pub(crate) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    mac(key, parts).finalize().into_bytes().into()
}

/// The HMAC-SHA256 of `parts`, to compare in constant time against several
/// candidate tags ([`HmacTag::matches`]) with one MAC computation.
pub(crate) fn hmac_sha256_tag(key: &[u8], parts: &[&[u8]]) -> HmacTag {
    HmacTag(mac(key, parts).finalize())
}

/// A computed HMAC-SHA256, compared only in constant time.
pub(crate) struct HmacTag(hmac::digest::CtOutput<HmacSha256>);

impl HmacTag {
    /// Constant-time equality with a candidate tag.
    pub(crate) fn matches(&self, candidate: &[u8; 32]) -> bool {
        self.0 == hmac::digest::CtOutput::new((*candidate).into())
    }
}

/// Constant-time check of `tag` against the HMAC-SHA256 of `parts`.
pub(crate) fn hmac_sha256_matches(key: &[u8], parts: &[&[u8]], tag: &[u8]) -> bool {
    mac(key, parts).verify_slice(tag).is_ok()
}

/// Refuses an account without secrets before looking at the request, so a
/// configuration fault shows as one on every request.
pub(crate) fn require_secrets(secrets: &[SecretString]) -> Result<(), VerifyError> {
    if secrets.is_empty() {
        Err(VerifyError::NoSecret)
    } else {
        Ok(())
    }
}

/// Verifies a hex HMAC-SHA256 of the raw body (Careem, Uber Eats, Wolt):
/// the index of the matching secret.
pub(crate) fn verify_hex_body_hmac(
    header: &'static str,
    value: &str,
    body: &[u8],
    secrets: &[SecretString],
) -> Result<usize, VerifyError> {
    let tag = decode_hex_tag(header, value)?;
    find_secret(secrets, |key| hmac_sha256_matches(key, &[body], &tag))
}

/// The header a hex HMAC-SHA256-of-the-body scheme sends (Careem, Uber
/// Eats, Wolt): `header: <lowercase hex>`.
pub(crate) fn sign_hex_body_hmac(
    header: &'static str,
    body: &[u8],
    secret: &SecretString,
) -> HeaderMap {
    let tag = hmac_sha256(secret.expose_secret().as_bytes(), &[body]);
    let mut headers = HeaderMap::new();
    headers.insert(header, own_header_value(hex::encode(tag)));
    headers
}

/// The index of the first secret for which `matches` holds.
pub(crate) fn find_secret(
    secrets: &[SecretString],
    mut matches: impl FnMut(&[u8]) -> bool,
) -> Result<usize, VerifyError> {
    if secrets.is_empty() {
        return Err(VerifyError::NoSecret);
    }
    secrets
        .iter()
        .position(|secret| matches(secret.expose_secret().as_bytes()))
        .ok_or(VerifyError::BadSignature)
}

/// Longest event id we pass on; ids become `Nats-Msg-Id` header values.
const MAX_EVENT_ID_LEN: usize = 256;

/// `raw` as an event id if it is fit to be a message id header value:
/// non-empty, bounded, visible ASCII without spaces. Anything else yields
/// `None` (the caller falls back to a body hash) rather than an error: a
/// verified request is never refused for its id.
pub(crate) fn event_id(raw: &str) -> Option<String> {
    let fit = !raw.is_empty()
        && raw.len() <= MAX_EVENT_ID_LEN
        && raw.bytes().all(|b| b.is_ascii_graphic());
    fit.then(|| raw.to_owned())
}

/// Seconds since the Unix epoch, negative before it.
pub(crate) fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

/// Milliseconds since the Unix epoch, for signing.
pub(crate) fn unix_millis_for_signing(t: SystemTime) -> Result<u128, SignError> {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .map_err(|_| SignError::TimeBeforeEpoch)
}

/// A header value built by `sign`.
pub(crate) fn header_value(name: &'static str, value: &str) -> Result<HeaderValue, SignError> {
    HeaderValue::from_str(value).map_err(|_| SignError::InvalidHeaderValue(name))
}

/// A header value from text we produced ourselves (hex, base64, digits), which
/// is always valid.
pub(crate) fn own_header_value(value: String) -> HeaderValue {
    HeaderValue::try_from(value).expect("hex, base64 and digits are valid header values")
}

/// A short id derived from `at` and `body`: distinct events signed by `sign`
/// get distinct ids, and signing the same event twice gives the same id.
pub(crate) fn derived_id(body: &[u8], at: SystemTime) -> Result<String, SignError> {
    let millis = unix_millis_for_signing(at)?;
    let digest = Sha256::new()
        .chain_update(millis.to_be_bytes())
        .chain_update(body)
        .finalize();
    Ok(hex::encode(&digest[..8]))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn event_id_accepts_visible_ascii_only() {
        assert_eq!(event_id("msg_2a"), Some("msg_2a".to_owned()));
        assert_eq!(event_id(""), None);
        assert_eq!(event_id("a b"), None);
        assert_eq!(event_id("a\nb"), None);
        assert_eq!(event_id("é"), None);
        assert_eq!(event_id(&"x".repeat(256)), Some("x".repeat(256)));
        assert_eq!(event_id(&"x".repeat(257)), None);
    }

    #[test]
    fn unix_secs_is_signed() {
        assert_eq!(unix_secs(UNIX_EPOCH + Duration::from_secs(42)), 42);
        assert_eq!(unix_secs(UNIX_EPOCH - Duration::from_secs(42)), -42);
    }

    #[test]
    fn find_secret_reports_the_first_match_and_refuses_no_secrets() {
        let secrets = [SecretString::from("a"), SecretString::from("b")];
        assert_eq!(find_secret(&secrets, |s| s == b"b"), Ok(1));
        assert_eq!(
            find_secret(&secrets, |_| false),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(find_secret(&[], |_| true), Err(VerifyError::NoSecret));
    }

    #[test]
    fn hmac_over_parts_equals_hmac_over_concatenation() {
        let whole = hmac_sha256(b"k", &[b"a.b.c"]);
        assert_eq!(hmac_sha256(b"k", &[b"a", b".b", b".c"]), whole);
        assert!(hmac_sha256_matches(b"k", &[b"a.", b"b.c"], &whole));
        assert!(!hmac_sha256_matches(b"k", &[b"a.b.d"], &whole));
        assert!(!hmac_sha256_matches(b"k", &[b"a.b.c"], &whole[..31]));
    }
}
