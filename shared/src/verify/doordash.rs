//! DoorDash Marketplace: each webhook subscription is configured in the
//! Developer Portal with an auth token \[DOC\] that DoorDash sends in
//! `Authorization` \[CODE×1\]. Whether raw or as `Bearer <token>` is not
//! documented, so both are accepted; [`sign`] sends the raw form. No HMAC,
//! no timestamp, no event id: a resend is caught by the body hash
//! downstream. The account's secrets are the subscriptions' tokens, compared
//! in constant time against every one of them ([`super::static_token`]).
//!
//! Public code that checks an `X-DoorDash-Signature` header has no official
//! source and is not followed.

use http::HeaderMap;
use secrecy::SecretString;

use super::SignError;
use super::static_token;

/// The header carrying the token.
pub const AUTHORIZATION_HEADER: &str = static_token::AUTHORIZATION_HEADER;

/// The DoorDash scheme: its token in `Authorization`.
pub use static_token::AuthorizationToken as DoorDash;

/// The headers DoorDash sends: `Authorization: <token>`.
pub fn sign(token: &SecretString) -> Result<HeaderMap, SignError> {
    static_token::sign_authorization(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::testutil::*;
    use crate::verify::{Verified, Verifier, VerifyError, VerifyOptions};

    fn verify(h: &HeaderMap, keys: &[&str]) -> Result<Verified, VerifyError> {
        DoorDash.verify(h, b"{}", &secrets(keys), &VerifyOptions::default(), at(0))
    }

    #[test]
    fn the_token_raw_or_bearer_against_every_secret() {
        let ok = |secret_index| {
            Ok(Verified {
                event_id: None,
                secret_index,
            })
        };
        for value in ["dd-token-2", "Bearer dd-token-2", "bearer dd-token-2"] {
            let h = headers(&[("Authorization", value)]);
            assert_eq!(verify(&h, &["dd-token-2"]), ok(0), "{value}");
            assert_eq!(verify(&h, &["dd-token-1", "dd-token-2"]), ok(1), "{value}");
        }
        assert_eq!(
            value(&sign(&secret("dd-token-2")).unwrap(), "authorization"),
            "dd-token-2"
        );
    }

    #[test]
    fn refusals() {
        let bad = |v: &str| verify(&headers(&[("authorization", v)]), &["dd-token"]);
        assert_eq!(bad("dd-token-x"), Err(VerifyError::BadSignature));
        assert_eq!(bad("dd-toke"), Err(VerifyError::BadSignature));
        assert_eq!(bad("Basic dd-token"), Err(VerifyError::BadSignature));
        assert_eq!(
            verify(&HeaderMap::new(), &["dd-token"]),
            Err(VerifyError::MissingHeader(AUTHORIZATION_HEADER))
        );
        assert_eq!(
            verify(
                &with_raw_header(HeaderMap::new(), "authorization", "é".as_bytes()),
                &["dd-token"]
            ),
            Err(VerifyError::MalformedHeader {
                header: AUTHORIZATION_HEADER,
                reason: "not visible ascii"
            })
        );
        assert_eq!(
            verify(&headers(&[("authorization", "dd-token")]), &[]),
            Err(VerifyError::NoSecret)
        );
        // A header the scheme does not read does not stand in for it.
        assert_eq!(
            verify(
                &headers(&[("x-doordash-signature", "dd-token")]),
                &["dd-token"]
            ),
            Err(VerifyError::MissingHeader(AUTHORIZATION_HEADER))
        );
    }
}
