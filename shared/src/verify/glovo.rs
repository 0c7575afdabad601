//! Glovo (restaurant Partners API): Glovo issues a shared token with the
//! webhook set-up and sends it in `Authorization` \[CODE×5\], raw (no
//! `Bearer`); the header name is a \[GUESS\] of the research notes, and
//! `Bearer <token>` is accepted too. No HMAC, no timestamp, no event id
//! (the body hash deduplicates). The account's secrets are the tokens,
//! compared in constant time against every one ([`super::static_token`]).
//!
//! Orders ("order dispatched") and cancellations go to two URLs configured
//! at Glovo; both may be the account's one URL
//! (`/api/webhooks/glovo/{account}`): the transformer tells them apart by
//! the body, so the ingress has no event segment for Glovo (one the token
//! does not cover would only be something else to keep consistent).

use http::HeaderMap;
use secrecy::SecretString;

use super::SignError;
use super::static_token;

/// The header carrying the token \[GUESS\].
pub const AUTHORIZATION_HEADER: &str = static_token::AUTHORIZATION_HEADER;

/// The Glovo scheme: its token in `Authorization`.
pub use static_token::AuthorizationToken as Glovo;

/// The headers Glovo sends: `Authorization: <token>`.
pub fn sign(token: &SecretString) -> Result<HeaderMap, SignError> {
    static_token::sign_authorization(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::testutil::*;
    use crate::verify::{Verified, Verifier, VerifyError, VerifyOptions};

    fn verify(h: &HeaderMap, keys: &[&str]) -> Result<Verified, VerifyError> {
        Glovo.verify(h, b"{}", &secrets(keys), &VerifyOptions::default(), at(0))
    }

    #[test]
    fn the_token_raw_or_bearer_against_every_secret() {
        for value in ["glovo-shared", "Bearer glovo-shared"] {
            let h = headers(&[("AUTHORIZATION", value)]);
            assert_eq!(
                verify(&h, &["glovo-old", "glovo-shared"]),
                Ok(Verified {
                    event_id: None,
                    secret_index: 1
                }),
                "{value}"
            );
        }
        let signed = sign(&secret("glovo-shared")).unwrap();
        assert_eq!(value(&signed, "authorization"), "glovo-shared");
        assert_eq!(signed.len(), 1);
    }

    #[test]
    fn refusals() {
        let bad = |v: &str| verify(&headers(&[("authorization", v)]), &["glovo-shared"]);
        assert_eq!(bad("glovo-shared2"), Err(VerifyError::BadSignature));
        assert_eq!(bad("Token glovo-shared"), Err(VerifyError::BadSignature));
        assert_eq!(
            verify(&HeaderMap::new(), &["glovo-shared"]),
            Err(VerifyError::MissingHeader(AUTHORIZATION_HEADER))
        );
        assert_eq!(
            verify(&headers(&[("authorization", "x")]), &[]),
            Err(VerifyError::NoSecret)
        );
    }
}
