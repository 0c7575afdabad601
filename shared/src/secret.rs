//! Secrets as the config loader checks them and the signers use them.
//!
//! Standard Webhooks secrets (a tenant's signing secret, a `direct`
//! channel's secret) are `whsec_<base64>`, or the bare base64 as the
//! reference libraries accept. The loader decodes each at start, so a
//! secret that cannot sign or verify stops the binary instead of refusing
//! every webhook later.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use secrecy::{ExposeSecret, SecretSlice, SecretString};

/// The prefix of a Standard Webhooks secret.
pub const STANDARD_WEBHOOKS_PREFIX: &str = "whsec_";

/// The key bytes of a `whsec_<base64>` (or bare base64) secret; `None` if it
/// is not valid base64 or decodes to nothing.
pub fn standard_webhooks_key(secret: &SecretString) -> Option<SecretSlice<u8>> {
    let text = secret.expose_secret();
    let b64 = text.strip_prefix(STANDARD_WEBHOOKS_PREFIX).unwrap_or(text);
    match STANDARD.decode(b64) {
        Ok(key) if !key.is_empty() => Some(key.into()),
        _ => None,
    }
}

/// The key bytes of a DoorDash signing secret: the portal shows it
/// base64url-encoded and the JWT is signed with the decoded bytes [DOC]
/// (with or without `=` padding; plain base64's `+` and `/` too, as a
/// copy from another tool may have them). `None` if it decodes to nothing.
pub fn doordash_signing_key(secret: &SecretString) -> Option<SecretSlice<u8>> {
    let text = secret.expose_secret().trim();
    let key = URL_SAFE_NO_PAD
        .decode(text)
        .or_else(|_| URL_SAFE.decode(text))
        .or_else(|_| STANDARD.decode(text))
        .ok()?;
    (!key.is_empty()).then(|| key.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doordash_secrets_decode_as_base64url_with_or_without_padding() {
        let key = |s: &str| doordash_signing_key(&SecretString::from(s.to_owned()));
        // "secret?>" has a byte that base64url writes as '_' or '-'.
        assert_eq!(key("c2VjcmV0Pz4").unwrap().expose_secret(), b"secret?>");
        assert_eq!(key("c2VjcmV0Pz4=").unwrap().expose_secret(), b"secret?>");
        assert_eq!(key("c2VjcmV0").unwrap().expose_secret(), b"secret");
        assert!(key("").is_none());
        assert!(key("not base64!").is_none());
    }

    #[test]
    fn prefixed_and_bare_base64_decode_and_anything_else_does_not() {
        let key = |s: &str| standard_webhooks_key(&SecretString::from(s.to_owned()));
        assert_eq!(key("whsec_c2VjcmV0").unwrap().expose_secret(), b"secret");
        assert_eq!(key("c2VjcmV0").unwrap().expose_secret(), b"secret");
        assert!(key("whsec_").is_none());
        assert!(key("whsec_!!!").is_none());
        assert!(key("not a secret").is_none());
    }
}
