//! Helpers for the verifier tests.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use secrecy::SecretString;
use warp::http::{HeaderMap, HeaderName, HeaderValue};

/// The secret the research notes' fixture vectors were computed with.
pub(crate) const FIXTURE_SECRET: &str = "test_webhook_secret_do_not_use";

/// The provider fixtures (kept byte for byte; see tests/fixtures/.gitattributes)
/// that the research notes give signature vectors for.
pub(crate) const DELIVEROO_ORDER_CREATED: &[u8] =
    include_bytes!("../../../tests/fixtures/deliveroo/order-created.json");
pub(crate) const UBEREATS_ORDER_NOTIFICATION: &[u8] =
    include_bytes!("../../../tests/fixtures/ubereats/webhook-order-notification.json");
pub(crate) const WOLT_ORDER_CREATED: &[u8] =
    include_bytes!("../../../tests/fixtures/wolt/webhook-order-created.json");
pub(crate) const JUSTEAT_ORDER_CREATED: &[u8] =
    include_bytes!("../../../tests/fixtures/justeat/order-created.json");

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
