//! Helpers for the verifier tests.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};
use secrecy::SecretString;

/// The secret the research notes' fixture vectors were computed with.
pub(crate) const FIXTURE_SECRET: &str = "test_webhook_secret_do_not_use";

/// The provider fixtures (kept byte for byte; see tests/fixtures/.gitattributes)
/// that the research notes give signature vectors for.
pub(crate) const DELIVEROO_ORDER_CREATED: &[u8] =
    include_bytes!("../../../tests/fixtures/deliveroo/order-created.json");
pub(crate) const UBEREATS_ORDER_NOTIFICATION: &[u8] =
    include_bytes!("../../../tests/fixtures/ubereats/v2-order-created.json");
pub(crate) const WOLT_ORDER_CREATED: &[u8] =
    include_bytes!("../../../tests/fixtures/wolt/v1-order-created.json");
pub(crate) const JUSTEAT_ORDER_CREATED: &[u8] =
    include_bytes!("../../../tests/fixtures/justeat/order-created.json");

// The documented signatures of those fixtures with [`FIXTURE_SECRET`]: each
// provider module checks its own, and `tests.rs` drives the HMAC schemes'
// shared checks (tampered body, wrong secret, rotation) from all of them.

/// DESIGN §4.1's sample body; its signature was computed independently
/// (Python's `hmac`) with the fixture secret.
pub(crate) const CAREEM_SAMPLE: &[u8] = br#"{"order_id":"TEST123","customer":{"name":"Test User","phone":"0791234567"},"items":[{"name":"Burger","quantity":1,"price":10}],"total_amount":10}"#;
pub(crate) const CAREEM_SAMPLE_SIGNATURE: &str =
    "48eb14974e0bbbda5cadc061509a00ba548d9f853d7be60d5eaa3a127b5b5f02";
/// From the research notes' "Signature test vectors for the fixtures".
pub(crate) const DELIVEROO_FIXTURE_GUID: &str = "1718388131042";
pub(crate) const DELIVEROO_FIXTURE_CURRENT: &str =
    "5f25376814eb688e417aaeb9325cc9884abc7e04169cf8b1175bd1c432cc997b";
pub(crate) const DELIVEROO_FIXTURE_LEGACY: &str =
    "e713554b42b7d6a25abaefe962fbb3677dc5ed21d191080cc7b47e15d2830d68";
pub(crate) const UBEREATS_FIXTURE_SIGNATURE: &str =
    "9fdd21f88feb39d3c520c952dac27fd534ef64019c64b9c8a25d51db90bb7016";
pub(crate) const UBEREATS_FIXTURE_EVENT_ID: &str = "3e9d7f1a-2b4c-4d6e-8f01-a2b3c4d5e6f7";
pub(crate) const WOLT_FIXTURE_SIGNATURE: &str =
    "491a2e895a67bdd5f34dc20e1093e33da72b84db6ef683e40761c56637e43099";
pub(crate) const WOLT_FIXTURE_EVENT_ID: &str = "66a1f0c2b3d4e5f6a7b8c9e1";
pub(crate) const JUSTEAT_FIXTURE_HEADER: &str =
    "HMAC-SHA256 t=1718384531000,signature=ia48hejw+bQqwutFwQNHzusvyObbccBDxJLx1Ff6KoM=";
pub(crate) const JUSTEAT_FIXTURE_AT_MS: u64 = 1_718_384_531_000;

pub(crate) fn secrets(values: &[&str]) -> Vec<SecretString> {
    values.iter().map(|v| SecretString::from(*v)).collect()
}

pub(crate) fn secret(value: &str) -> SecretString {
    SecretString::from(value)
}

/// `secs` after the Unix epoch.
pub(crate) fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// A header map from (name, value) pairs, names given in any case.
pub(crate) fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).expect("valid header name"),
            HeaderValue::from_str(value).expect("valid header value"),
        );
    }
    map
}

/// `map` with the value of `name` replaced by raw bytes (e.g. non-ASCII).
pub(crate) fn with_raw_header(mut map: HeaderMap, name: &'static str, value: &[u8]) -> HeaderMap {
    map.insert(
        name,
        HeaderValue::from_bytes(value).expect("valid header bytes"),
    );
    map
}

/// The value of `name` in `map` as text.
pub(crate) fn value<'m>(map: &'m HeaderMap, name: &str) -> &'m str {
    map.get(name)
        .unwrap_or_else(|| panic!("header {name} present"))
        .to_str()
        .expect("ascii header")
}

/// `body` with its first byte changed.
pub(crate) fn tampered(body: &[u8]) -> Vec<u8> {
    let mut body = body.to_vec();
    body[0] ^= 0x01;
    body
}
