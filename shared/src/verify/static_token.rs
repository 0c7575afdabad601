//! Static shared tokens (DoorDash's per-subscription auth token, Glovo's
//! shared token, the client secrets at the hub's Grab token endpoint):
//! the sender presents the secret itself, so there is no MAC to check, only
//! equality, which must not leak which secret matched, how much of it, or
//! how long it is.
//!
//! The presented value and every configured secret are hashed with SHA-256
//! and the digests compared with `subtle`'s constant-time equality, for
//! every secret, without stopping at a match: the work is one hash per
//! configured secret plus one, whatever was presented, and a digest
//! comparison says nothing about lengths or common prefixes.

use std::time::SystemTime;

use http::HeaderMap;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use super::common;
use super::{SignError, Signed, Verified, Verifier, VerifyError, VerifyOptions};

/// The header DoorDash and Glovo send their token in.
pub const AUTHORIZATION_HEADER: &str = "authorization";

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The index of the first of `secrets` equal to `presented`, compared in
/// constant time against all of them ([module docs](self)).
pub fn find(presented: &[u8], secrets: &[SecretString]) -> Result<usize, VerifyError> {
    common::require_secrets(secrets)?;
    find_in(presented, secrets).ok_or(VerifyError::BadSignature)
}

/// [`find`] over any sequence of secrets (an account's followed by padding
/// dummies): one hash of `presented` and one per secret.
pub fn find_in<'s>(
    presented: &[u8],
    secrets: impl IntoIterator<Item = &'s SecretString>,
) -> Option<usize> {
    let presented = digest(presented);
    let mut found = subtle::Choice::from(0);
    let mut index = 0u64;
    for (i, secret) in secrets.into_iter().enumerate() {
        common::count_mac();
        let matches = digest(secret.expose_secret().as_bytes()).ct_eq(&presented);
        // The first match wins: take `i` only while nothing matched yet.
        index.conditional_assign(&(i as u64), matches & !found);
        found |= matches;
    }
    bool::from(found).then_some(index as usize)
}

/// Constant-time equality of two public-but-guessable values (a client id),
/// by digest, so neither its length nor a common prefix shows.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    bool::from(digest(a).ct_eq(&digest(b)))
}

/// The token in an `Authorization` header, raw or as `Bearer <token>`
/// (DoorDash's form is not documented, Glovo's is raw [CODE]: both are
/// accepted). A token that itself starts with `Bearer ` cannot be told from
/// the bearer form and is read as it: configure tokens without it.
pub(crate) fn authorization_token(headers: &HeaderMap) -> Result<&str, VerifyError> {
    let value = common::required_header(headers, AUTHORIZATION_HEADER)?;
    let token = match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ => value,
    };
    if token.is_empty() {
        return Err(VerifyError::MalformedHeader {
            header: AUTHORIZATION_HEADER,
            reason: "empty token",
        });
    }
    Ok(token)
}

/// Verifies the `Authorization` token against `secrets`: the index of the
/// one it equals.
pub(crate) fn verify_authorization(
    headers: &HeaderMap,
    secrets: &[SecretString],
) -> Result<usize, VerifyError> {
    common::require_secrets(secrets)?;
    let token = authorization_token(headers)?;
    find(token.as_bytes(), secrets)
}

/// `Authorization: <secret>`, the raw form.
pub(crate) fn sign_authorization(secret: &SecretString) -> Result<HeaderMap, SignError> {
    let mut headers = HeaderMap::new();
    headers.insert(
        AUTHORIZATION_HEADER,
        common::header_value(AUTHORIZATION_HEADER, secret.expose_secret())?,
    );
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::testutil::*;

    #[test]
    fn every_secret_costs_one_hash_and_the_first_match_wins() {
        let keys = secrets(&["old-token", "new-token", "new-token"]);
        let before = common::macs_on_this_thread();
        assert_eq!(find(b"new-token", &keys), Ok(1));
        assert_eq!(common::macs_on_this_thread() - before, 3);
        let before = common::macs_on_this_thread();
        assert_eq!(find(b"old-token", &keys), Ok(0));
        assert_eq!(common::macs_on_this_thread() - before, 3);
        assert_eq!(find(b"new-toke", &keys), Err(VerifyError::BadSignature));
        assert_eq!(find(b"", &keys), Err(VerifyError::BadSignature));
        assert_eq!(find(b"x", &[]), Err(VerifyError::NoSecret));
    }

    #[test]
    fn same_compares_whole_values() {
        assert!(same(b"client", b"client"));
        assert!(!same(b"client", b"clien"));
        assert!(!same(b"client", b"Client"));
    }

    #[test]
    fn the_token_is_read_raw_or_as_bearer() {
        for (value, token) in [
            ("tok-1", "tok-1"),
            ("Bearer tok-1", "tok-1"),
            ("bearer   tok-1 ", "tok-1"),
            ("BEARER tok-1", "tok-1"),
            ("Basic dXNlcg==", "Basic dXNlcg=="),
        ] {
            let h = headers(&[("Authorization", value)]);
            assert_eq!(authorization_token(&h), Ok(token), "{value}");
        }
        // Values are trimmed: a bare "Bearer " is the raw token "Bearer".
        assert_eq!(
            authorization_token(&headers(&[("authorization", "Bearer  ")])),
            Ok("Bearer")
        );
        assert_eq!(
            authorization_token(&headers(&[("authorization", " ")])),
            Err(VerifyError::MalformedHeader {
                header: AUTHORIZATION_HEADER,
                reason: "empty token"
            })
        );
        assert_eq!(
            authorization_token(&HeaderMap::new()),
            Err(VerifyError::MissingHeader(AUTHORIZATION_HEADER))
        );
    }
}

/// The scheme of a provider that sends a static token in `Authorization`
/// (DoorDash, Glovo): the token against every secret, nothing else to
/// check (no MAC, no timestamp, no event id).
#[derive(Debug, Clone, Copy, Default)]
pub struct AuthorizationToken;

impl Verifier for AuthorizationToken {
    fn verify(
        &self,
        headers: &HeaderMap,
        _body: &[u8],
        secrets: &[SecretString],
        _options: &VerifyOptions,
        _now: SystemTime,
    ) -> Result<Verified, VerifyError> {
        let secret_index = verify_authorization(headers, secrets)?;
        Ok(Verified {
            event_id: None,
            secret_index,
        })
    }

    fn sign(
        &self,
        _body: &[u8],
        secret: &SecretString,
        _options: &VerifyOptions,
        _at: SystemTime,
    ) -> Result<Signed, SignError> {
        sign_authorization(secret).map(Signed::headers)
    }
}
