//! Tokens at rest: the key every stage reads from `TOKEN_STORE_KEY` (or
//! `TOKEN_STORE_KEY_FILE`) and the sealed value layout of a bucket entry.
//!
//! A value is `[version][96-bit nonce][ciphertext + tag]`, sealed with
//! ChaCha20-Poly1305 under a fresh random nonce per write. The additional
//! data is the version byte and the entry's bucket key, so a value copied
//! under another key (or read as another version) does not open. A value
//! that does not open is an error naming the key, never a reason to
//! overwrite it: the usual cause is a replica started with another key.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use secrecy::zeroize::Zeroize;

/// The environment variable holding the key (base64 of 32 random bytes).
pub const KEY_ENV: &str = "TOKEN_STORE_KEY";
/// The environment variable naming a file that holds the same base64.
pub const KEY_FILE_ENV: &str = "TOKEN_STORE_KEY_FILE";

/// The layout written now; a reader refuses any other.
const VERSION: u8 = 1;
const KEY_LEN: usize = 32;

/// The key that seals the token store's entries. The same for every stage
/// and replica (they share the bucket); its `Debug` shows nothing of it.
pub struct TokenKey {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenKey([redacted])")
    }
}

impl TokenKey {
    /// Reads `TOKEN_STORE_KEY` or `TOKEN_STORE_KEY_FILE` through `env`
    /// (tests pass a map; binaries `std::env::var`). Exactly one must be
    /// set; the value is base64 of exactly 32 bytes. No error repeats the
    /// value or the file's content.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<TokenKey, String> {
        let inline = env(KEY_ENV).filter(|v| !v.trim().is_empty());
        let file = env(KEY_FILE_ENV).filter(|v| !v.trim().is_empty());
        let (mut text, from) = match (inline, file) {
            (Some(_), Some(_)) => {
                return Err(format!("set {KEY_ENV} or {KEY_FILE_ENV}, not both"));
            }
            (None, None) => {
                return Err(format!(
                    "{KEY_ENV} (or {KEY_FILE_ENV}) is not set: the provider token store \
                     encrypts tokens with it; make one with `head -c 32 /dev/urandom | base64` \
                     and give every stage the same one"
                ));
            }
            (Some(v), None) => (v, KEY_ENV.to_owned()),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path.trim()).map_err(|e| {
                    format!("{KEY_FILE_ENV}: cannot read {}: {}", path.trim(), e.kind())
                })?;
                (text, format!("the file {KEY_FILE_ENV} names"))
            }
        };
        let decoded = STANDARD.decode(text.trim());
        text.zeroize();
        let mut bytes = decoded.map_err(|_| {
            format!("{from} is not base64 (make one with `head -c 32 /dev/urandom | base64`)")
        })?;
        let key = if let Ok(exact) = <&[u8; KEY_LEN]>::try_from(bytes.as_slice()) {
            Ok(TokenKey::from_bytes(exact))
        } else {
            Err(format!(
                "{from} decodes to {} bytes, not {KEY_LEN} (make one with `head -c 32 /dev/urandom | base64`)",
                bytes.len()
            ))
        };
        bytes.zeroize();
        key
    }

    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> TokenKey {
        let unbound =
            UnboundKey::new(&CHACHA20_POLY1305, bytes).expect("32 bytes is the key length");
        TokenKey {
            key: LessSafeKey::new(unbound),
            rng: SystemRandom::new(),
        }
    }

    /// A fresh random key (tests; an operator makes one with
    /// `head -c 32 /dev/urandom | base64`).
    pub fn generate() -> TokenKey {
        let mut bytes = [0u8; KEY_LEN];
        SystemRandom::new()
            .fill(&mut bytes)
            .expect("the system random source works");
        let key = TokenKey::from_bytes(&bytes);
        bytes.zeroize();
        key
    }

    /// Seals `plaintext` for the bucket entry `bucket_key`.
    pub fn seal(&self, bucket_key: &str, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .expect("the system random source works");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + plaintext.len() + 16);
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        let mut body = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(bucket_key).as_slice()),
                &mut body,
            )
            .expect("a token state is far below the AEAD's length limit");
        out.extend_from_slice(&body);
        body.zeroize();
        out
    }

    /// Opens a value written by [`TokenKey::seal`] for `bucket_key`.
    pub fn open(&self, bucket_key: &str, value: &[u8]) -> Result<Vec<u8>, OpenError> {
        let Some((&version, rest)) = value.split_first() else {
            return Err(OpenError::Malformed {
                key: bucket_key.to_owned(),
                what: "is empty",
            });
        };
        if version != VERSION {
            return Err(OpenError::Malformed {
                key: bucket_key.to_owned(),
                what: "has an unknown layout version",
            });
        }
        if rest.len() < NONCE_LEN + CHACHA20_POLY1305.tag_len() {
            return Err(OpenError::Malformed {
                key: bucket_key.to_owned(),
                what: "is too short",
            });
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).expect("split at the nonce length");
        let mut body = sealed.to_vec();
        let aad = aad(bucket_key);
        match self
            .key
            .open_in_place(nonce, Aad::from(aad.as_slice()), &mut body)
        {
            Ok(plain) => {
                let n = plain.len();
                body.truncate(n);
                Ok(body)
            }
            Err(_) => {
                body.zeroize();
                Err(OpenError::WrongKey {
                    key: bucket_key.to_owned(),
                })
            }
        }
    }
}

/// The additional data: the layout version and the bucket key.
fn aad(bucket_key: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(1 + bucket_key.len());
    aad.push(VERSION);
    aad.extend_from_slice(bucket_key.as_bytes());
    aad
}

/// A bucket value that does not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error(
        "token store entry {key} does not decrypt: {KEY_ENV} differs from the one that wrote it \
         (or the entry was copied from another key); give every stage the same key, or \
         re-seed the entry"
    )]
    WrongKey { key: String },
    #[error("token store entry {key} {what}: it was not written by this hub's token store")]
    Malformed { key: String, what: &'static str },
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const SECRET_B64: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn a_sealed_value_opens_with_the_same_key_and_key_name_only() {
        let key = TokenKey::generate();
        let plain = br#"{"access_token":"secret-access"}"#;
        let sealed = key.seal("ubereats.0011223344556677", plain);
        assert_eq!(sealed[0], VERSION);
        assert_eq!(
            key.open("ubereats.0011223344556677", &sealed).unwrap(),
            plain
        );
        // The plaintext is nowhere in the value.
        assert!(!sealed.windows(13).any(|w| w == b"secret-access"));
        // Two seals of the same text differ (a fresh nonce each).
        assert_ne!(sealed, key.seal("ubereats.0011223344556677", plain));

        // Another key: the error names the entry and the cause.
        let other = TokenKey::generate();
        let e = other
            .open("ubereats.0011223344556677", &sealed)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "token store entry ubereats.0011223344556677 does not decrypt: TOKEN_STORE_KEY \
             differs from the one that wrote it (or the entry was copied from another key); \
             give every stage the same key, or re-seed the entry"
        );
        // The same key, another entry (a value copied from one key to another).
        assert_eq!(
            key.open("wolt.acme-wolt", &sealed).unwrap_err(),
            OpenError::WrongKey {
                key: "wolt.acme-wolt".into()
            }
        );
    }

    #[test]
    fn damaged_values_are_refused_by_what_is_wrong() {
        let key = TokenKey::generate();
        let sealed = key.seal("k", b"{}");
        let what = |v: &[u8]| match key.open("k", v).unwrap_err() {
            OpenError::Malformed { what, .. } => what,
            e => panic!("{e}"),
        };
        assert_eq!(what(b""), "is empty");
        assert_eq!(what(&[2, 0, 0]), "has an unknown layout version");
        assert_eq!(what(&sealed[..10]), "is too short");
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(matches!(
            key.open("k", &flipped),
            Err(OpenError::WrongKey { .. })
        ));
    }

    #[test]
    fn the_key_comes_from_the_environment_or_a_file_and_is_never_echoed() {
        let key = TokenKey::from_env(&env_of(&[(KEY_ENV, SECRET_B64)])).unwrap();
        assert_eq!(format!("{key:?}"), "TokenKey([redacted])");
        // The same bytes from a file (with its trailing newline) open what
        // the inline key sealed.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, format!("{SECRET_B64}\n")).unwrap();
        let from_file =
            TokenKey::from_env(&env_of(&[(KEY_FILE_ENV, path.to_str().unwrap())])).unwrap();
        assert_eq!(from_file.open("k", &key.seal("k", b"x")).unwrap(), b"x");

        let err = |pairs: &[(&str, &str)]| TokenKey::from_env(&env_of(pairs)).unwrap_err();
        assert_eq!(
            err(&[]),
            "TOKEN_STORE_KEY (or TOKEN_STORE_KEY_FILE) is not set: the provider token store \
             encrypts tokens with it; make one with `head -c 32 /dev/urandom | base64` and \
             give every stage the same one"
        );
        assert_eq!(
            err(&[(KEY_ENV, SECRET_B64), (KEY_FILE_ENV, "/k")]),
            "set TOKEN_STORE_KEY or TOKEN_STORE_KEY_FILE, not both"
        );
        let short = "c2hvcnQtc2VjcmV0LXZhbHVl"; // "short-secret-value"
        let e = err(&[(KEY_ENV, short)]);
        assert_eq!(
            e,
            "TOKEN_STORE_KEY decodes to 18 bytes, not 32 (make one with `head -c 32 /dev/urandom | base64`)"
        );
        let e = err(&[(KEY_ENV, "not*base64!secret")]);
        assert_eq!(
            e,
            "TOKEN_STORE_KEY is not base64 (make one with `head -c 32 /dev/urandom | base64`)"
        );
        assert!(!e.contains("secret"));
        std::fs::write(&path, short).unwrap();
        let e = err(&[(KEY_FILE_ENV, path.to_str().unwrap())]);
        assert!(
            e.starts_with("the file TOKEN_STORE_KEY_FILE names decodes to 18 bytes"),
            "{e}"
        );
        assert!(!e.contains(short));
        let e = err(&[(KEY_FILE_ENV, "/nonexistent/orderhub-token-key")]);
        assert_eq!(
            e,
            "TOKEN_STORE_KEY_FILE: cannot read /nonexistent/orderhub-token-key: entity not found"
        );
    }
}
