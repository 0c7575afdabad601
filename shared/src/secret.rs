//! Secrets as the config loader checks them and the signers use them.
//!
//! Standard Webhooks secrets (a tenant's signing secret, a `direct`
//! channel's secret) are `whsec_<base64>`, or the bare base64 as the
//! reference libraries accept. The loader decodes each at start, so a
//! secret that cannot sign or verify stops the binary instead of refusing
//! every webhook later.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
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

#[cfg(test)]
mod tests {
    use super::*;

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
