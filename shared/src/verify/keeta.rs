//! Keeta (Meituan), Standard Keeta API: the `sig` of a JSON envelope
//! `{sig, eventId, appId, messageId, shopId, message, timestamp}`.
//!
//! The recipe is Keeta's Authorization Guide [DOC], reproduced by its worked
//! example (the known-answer test below): `sig` = lowercase hex of the plain
//! SHA-256 (not an HMAC) of
//!
//! ```text
//! URL + "?" + k1=v1&k2=v2… + AppSecret
//! ```
//!
//! over every parameter but `sig`, sorted by key in ASCII order, empty ones
//! included, nothing URL-encoded, JSON values not re-sorted. The same
//! [`signature`] signs the hub's own calls to Keeta (the status worker).
//!
//! What Keeta does not document for a push, and is therefore configured or
//! inferred here:
//! - [GUESS] the URL of a push is the receiver's webhook URL exactly as
//!   registered with Keeta: the account's `webhook_url`
//!   ([`VerifyOptions::webhook_url`]), never derived from the request (a
//!   proxy may rewrite it). The notes' candidates without the `?` are not
//!   tried: one recipe, so a wrong guess fails loudly rather than half-works.
//! - [GUESS] a parameter's value is the text of its JSON value: a string's
//!   decoded content (so `message` is the embedded JSON text itself, as
//!   received), a number's literal digits (parsed as [`RawValue`], so Java
//!   longs like `appId` keep every digit), anything else (object, array,
//!   `true`, `null`) its JSON text as received.
//! - Every top-level field but `sig` is signed, also ones Keeta may add
//!   later. A body with a key twice is refused (what we verify and what the
//!   transformer reads must be the same field).
//!
//! The signed `timestamp` (Unix seconds [DOC]) is the replay protection: a
//! verified envelope further than the account's `timestamp_tolerance` from
//! now is refused as [`VerifyError::StaleTimestamp`]. The event id is
//! `messageId` ("Unique identifier for the message" [DOC]).
//!
//! Keeta expects `200 {"code":0,"message":"Success"}` from the receiver
//! [DOC]; the ingress answers that (`routes::answer`).

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserializer;
use serde::de::{MapAccess, Visitor};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

/// The envelope field carrying the signature.
pub const SIG_FIELD: &str = "sig";
/// The envelope field carrying the signing time (Unix seconds).
pub const TIMESTAMP_FIELD: &str = "timestamp";
/// The envelope field carrying the event id.
pub const MESSAGE_ID_FIELD: &str = "messageId";

/// Keeta's `sig` of `params` for `url` with `secret`: lowercase hex SHA-256
/// of `url + "?" + k=v&… + secret`, the parameters sorted by key (bytewise,
/// i.e. ASCII order), `sig` itself left out, empty values included.
///
/// `url` is the full URL without a query string: the endpoint for a call
/// the hub makes (`https://open.mykeeta.com/api/open/order/confirm`), the
/// registered webhook URL for a push. Values are the texts
/// [`json_params`] gives for a JSON body.
pub fn signature(url: &str, params: &[(&str, &str)], secret: &SecretString) -> String {
    let mut digest = Sha256::new();
    digest.update(preimage_prefix(url, params).as_bytes());
    digest.update(secret.expose_secret().as_bytes());
    hex::encode(digest.finalize())
}

/// `url?k=v&…` (sorted, without `sig`): everything the digest covers but
/// the secret.
fn preimage_prefix(url: &str, params: &[(&str, &str)]) -> String {
    let mut sorted: Vec<&(&str, &str)> = params.iter().filter(|(k, _)| *k != SIG_FIELD).collect();
    // Stable: a key given twice keeps its order (a JSON body cannot have
    // one twice: `json_params` refuses it).
    sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let len = url.len()
        + 1
        + sorted
            .iter()
            .map(|(k, v)| k.len() + v.len() + 2)
            .sum::<usize>();
    let mut out = String::with_capacity(len);
    out.push_str(url);
    out.push('?');
    for (i, (k, v)) in sorted.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// Why a body is not a signable JSON object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    #[error("body is not a json object")]
    NotAnObject,
    #[error("body has a key more than once")]
    DuplicateKey,
}

/// The top-level fields of a JSON object body as Keeta signs them, in body
/// order: (key, value text), the value text as the module header says (a
/// string's content, any other value's JSON text). `sig` is included when
/// present; [`signature`] leaves it out.
pub fn json_params(body: &[u8]) -> Result<Vec<(String, String)>, ParamsError> {
    Ok(fields(body)?
        .into_iter()
        .map(|(k, v)| {
            let text = value_text(&v).into_owned();
            (k, text)
        })
        .collect())
}

/// The top-level fields of `body` in order, values as received.
pub(crate) fn fields(body: &[u8]) -> Result<Vec<(String, Box<RawValue>)>, ParamsError> {
    let duplicate = Cell::new(false);
    let mut de = serde_json::Deserializer::from_slice(body);
    let fields = de
        .deserialize_map(FieldsVisitor {
            duplicate: &duplicate,
        })
        .map_err(|_| {
            if duplicate.get() {
                ParamsError::DuplicateKey
            } else {
                ParamsError::NotAnObject
            }
        })?;
    de.end().map_err(|_| ParamsError::NotAnObject)?;
    Ok(fields)
}

/// The text a field's value is signed as.
pub(crate) fn value_text(raw: &RawValue) -> Cow<'_, str> {
    let text = raw.get();
    if text.starts_with('"') {
        // A valid JSON string (serde_json produced the RawValue).
        match serde_json::from_str::<Cow<'_, str>>(text) {
            Ok(s) => s,
            Err(_) => Cow::Borrowed(text),
        }
    } else {
        Cow::Borrowed(text)
    }
}

/// Collects an object's fields; sets `duplicate` when it refuses one (so
/// the caller tells that from any other parse error without reading the
/// message).
struct FieldsVisitor<'c> {
    duplicate: &'c Cell<bool>,
}

impl<'de> Visitor<'de> for FieldsVisitor<'_> {
    type Value = Vec<(String, Box<RawValue>)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a json object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out: Vec<(String, Box<RawValue>)> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.iter().any(|(k, _)| *k == key) {
                self.duplicate.set(true);
                return Err(serde::de::Error::custom("duplicate key"));
            }
            let value = map.next_value::<Box<RawValue>>()?;
            out.push((key, value));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_owned())
    }

    /// The Authorization Guide's worked example [DOC]: its pre-encryption
    /// string and its signature with AppSecret `abc`.
    #[test]
    fn the_authorization_guides_worked_example() {
        let url = "https://open.mykeeta.com/api/open/product/shopcategory/update";
        let params = [
            ("shopId", "123"),
            ("timestamp", "1682566749"),
            ("accessToken", "abc"),
            (
                "shopCategory",
                r#"{"id":123,"name":"test","type":0,"description":null}"#,
            ),
            ("appId", "123"),
        ];
        assert_eq!(
            format!("{}abc", preimage_prefix(url, &params)),
            r#"https://open.mykeeta.com/api/open/product/shopcategory/update?accessToken=abc&appId=123&shopCategory={"id":123,"name":"test","type":0,"description":null}&shopId=123&timestamp=1682566749abc"#
        );
        assert_eq!(
            signature(url, &params, &secret("abc")),
            "48eb6d562bb0673e3db753831f032be237fc19d1e5c33fcb5386d89c0eebca86"
        );
        // The same from the guide's JSON request body, `sig` included (it
        // is left out of what is signed) and `timestamp` a string there.
        let body = br#"{ "appId": 123, "shopId": 123, "accessToken": "abc",
      "shopCategory": {"id":123,"name":"test","type":0,"description":null},
      "timestamp": "1682566749", "sig": "ignored" }"#;
        let params = json_params(body).unwrap();
        let refs: Vec<(&str, &str)> = params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            signature(url, &refs, &secret("abc")),
            "48eb6d562bb0673e3db753831f032be237fc19d1e5c33fcb5386d89c0eebca86"
        );
    }

    /// A second vector (a third party's test, recomputed in the research
    /// notes with sha256sum): a call without a JSON parameter.
    #[test]
    fn an_order_get_call() {
        let params = [
            ("timestamp", "1700000000"),
            ("appId", "3084446411"),
            ("accessToken", "tok"),
        ];
        assert_eq!(
            signature(
                "https://open.mykeeta.com/api/open/order/get",
                &params,
                &secret("SEKRET")
            ),
            "fdb0c75a74946eb58dbfcd5ebe6b7f42a9a12f4302c697e750de9691277e6965"
        );
    }

    #[test]
    fn empty_values_are_signed_and_sig_is_not() {
        let a = signature("u", &[("b", ""), ("a", "1")], &secret("s"));
        let mut digest = Sha256::new();
        digest.update(b"u?a=1&b=s");
        assert_eq!(a, hex::encode(digest.finalize()));
        assert_eq!(
            signature("u", &[("b", ""), ("sig", "x"), ("a", "1")], &secret("s")),
            a
        );
    }

    #[test]
    fn json_values_are_signed_as_keeta_sends_them() {
        let body = br#"{"sig":"ab","eventId":1002,"appId":37627727270000000001,"messageId":"19301","shopId":145541,"message":"{\"opTime\":1749008143025,\"status\":30}","timestamp":1749008143,"flag":true,"none":null,"arr":[2, 1],"text":"\u00e9\n"}"#;
        let params = json_params(body).unwrap();
        let got: Vec<(&str, &str)> = params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("sig", "ab"),
                ("eventId", "1002"),
                // Beyond u64 and f64 precision: the digits as sent.
                ("appId", "37627727270000000001"),
                ("messageId", "19301"),
                ("shopId", "145541"),
                ("message", r#"{"opTime":1749008143025,"status":30}"#),
                ("timestamp", "1749008143"),
                ("flag", "true"),
                ("none", "null"),
                ("arr", "[2, 1]"),
                ("text", "é\n"),
            ]
        );
    }

    #[test]
    fn bodies_that_are_not_one_object_are_refused() {
        for bad in [
            &b"[]"[..],
            b"\"x\"",
            b"",
            b"{",
            b"{} {}",
            b"not json",
            b"{\"a\":1,}",
        ] {
            assert_eq!(
                json_params(bad),
                Err(ParamsError::NotAnObject),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            json_params(br#"{"sig":"a","x":1,"sig":"b"}"#),
            Err(ParamsError::DuplicateKey)
        );
        assert_eq!(json_params(b" {} ").unwrap(), vec![]);
    }
}
