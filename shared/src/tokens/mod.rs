//! The fleet's provider API tokens (feature `provider-api`): one entry per
//! credential in the `PROVIDER_TOKENS` key-value bucket, shared by every
//! replica of every stage, sealed with `TOKEN_STORE_KEY`.
//!
//! The grants (see `credential`): Uber Eats client credentials, Wolt's
//! rotating refresh token, the Talabat (Delivery Hero middleware) login,
//! Deliveroo client credentials with HTTP Basic, Grab client credentials
//! as JSON. DoorDash's JWT is signed per call and never stored
//! ([`doordash`]). Just Eat's and Glovo's static keys, Keeta's static
//! access token, Careem and direct accounts take no token.
//!
//! Why a shared store and not a cache per process: Uber Eats allows 100
//! token requests an hour per app and silently revokes the oldest token
//! when a 101st is live, so a fleet minting per process locks itself out;
//! a Wolt refresh token is single-use and rotated, and two replicas
//! refreshing with the same one get both new pairs revoked. Talabat and
//! Deliveroo tokens are shared for economy: one login per middleware user,
//! one 5-minute Deliveroo token per client for the fleet.
//!
//! The contract of [`TokenStore`]:
//! - **One writer per credential at a time, fleet-wide.** A replica that
//!   must call the token endpoint first writes a lease into the entry by
//!   compare-and-set on its revision (`create` when absent, `update` at
//!   the revision read); losing the race means re-reading. It writes the
//!   new token and releases the lease in one more compare-and-set at the
//!   lease's revision. Replicas that find a live lease of another use the
//!   stored token if it still works, else wait (polling the entry) until
//!   the lease's end and look again; an expired lease may be taken over.
//!   Within one process a lock per credential makes one task refresh while
//!   the others wait for its result.
//! - **Refresh ahead, never at start.** A stored token is used while it has
//!   more than `token_refresh_ahead` left, and at least for half its
//!   lifetime (a 5-minute Deliveroo token against a longer
//!   `token_refresh_ahead` is not renewed at every call); a process
//!   starting with a valid stored token does not mint.
//! - **After a 401, at most one refresh, and only for the current token**
//!   ([`TokenStore::token_rejected`]): if the stored token is not the one
//!   rejected (someone refreshed already), that one is returned.
//! - **A mint floor**: no token is issued for a credential less than
//!   `token_min_mint_interval` after the last one (the stored token is
//!   handed out if it still works, else [`TokenError::MintFloor`]); after a
//!   failed call the next waits for `Retry-After` or a growing pause. A
//!   renewal due by the token's age is held back at most half its
//!   lifetime, so that a floor longer than a short token lives never lets
//!   it expire; a mint after a 401 keeps the whole floor.
//! - **Wolt's rotation**: the refresh token presented is the stored one
//!   (the configured one only starts a chain, and only if the entry has
//!   not seen it: the last eight seeds that started chains are remembered
//!   as spent, so a replica still configured with an older one, in a
//!   rolling update or after a config rollback, uses the stored chain and
//!   logs an error); the rotated one is stored,
//!   with the new access token, before anything uses either. If that write
//!   fails the error says the venue may need authorising again.
//! - **Calls outlive their callers**: a token call runs in its own task, so
//!   a caller giving up cannot cut it between the answer and its write;
//!   at shutdown [`TokenStore::settle`] waits for those still running.
//! - **Secrets**: entries are sealed ([`cipher`]); tokens never appear in a
//!   log line, an error or a `Debug` output.
//!
//! [`TokenError::class`] maps failures to the failure vocabulary:
//! `token_rejected` (permanent), `token_unavailable` and
//! `token_store_failed` (transient).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use secrecy::{ExposeSecret, SecretString};

use crate::Provider;
use crate::failure::FailureClass;

pub mod cipher;
mod credential;
pub mod doordash;
mod endpoint;
mod lazy;
mod metrics;
mod state;
mod store;

pub use cipher::{KEY_ENV, KEY_FILE_ENV, OpenError, TokenKey};
pub use credential::{Credential, CredentialError};
pub use lazy::LazyTokenStore;
pub use metrics::TokenMetrics;
pub use store::TokenStore;

/// A bearer token for one credential. Its `Debug` shows its generation
/// only; [`AccessToken::expose`] is for the `Authorization` header.
#[derive(Clone)]
pub struct AccessToken {
    value: SecretString,
    generation: u64,
    expires_at: u64,
}

impl AccessToken {
    /// The bearer value, for `Authorization: Bearer` and nothing else.
    pub fn expose(&self) -> &str {
        self.value.expose_secret()
    }

    /// Which token of the credential this is (counts up with each issued
    /// token): safe to log.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// When the provider said it expires.
    pub fn expires_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.expires_at)
    }
}

/// Two handles of the same token (what [`TokenStore::token_rejected`]
/// compares with the stored one).
impl PartialEq for AccessToken {
    fn eq(&self, other: &AccessToken) -> bool {
        self.value.expose_secret() == other.value.expose_secret()
    }
}

impl Eq for AccessToken {}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("value", &"[redacted]")
            .field("generation", &self.generation)
            .finish()
    }
}

/// Why no token could be had. Texts name the provider and account, never a
/// token or secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The token endpoint refused the credentials: wrong, revoked, or (a
    /// Wolt refresh token) spent. Retrying cannot help; an operator must.
    #[error("{provider} account {account}: the token endpoint refused the credentials: {reason}")]
    Rejected {
        provider: Provider,
        account: String,
        reason: String,
    },
    /// The token endpoint is down, slow or limiting: try later.
    #[error("{provider} account {account}: no token for now: {reason}")]
    Unavailable {
        provider: Provider,
        account: String,
        reason: String,
        retry_after: Option<Duration>,
    },
    /// No usable token, and one was issued less than
    /// `provider_api.token_min_mint_interval` ago.
    #[error(
        "{provider} account {account}: no usable token, and the last was issued less than provider_api.token_min_mint_interval ago: the next may be requested in {}",
        humantime::format_duration(*retry_after)
    )]
    MintFloor {
        provider: Provider,
        account: String,
        retry_after: Duration,
    },
    /// The bucket could not be read or written, or its entry does not
    /// decrypt.
    #[error("{provider} account {account}: token store: {reason}")]
    Store {
        provider: Provider,
        account: String,
        reason: String,
    },
}

impl TokenError {
    /// The failure class of a message that failed for want of a token.
    pub fn class(&self) -> FailureClass {
        match self {
            TokenError::Rejected { .. } => FailureClass::TokenRejected,
            TokenError::Unavailable { .. } | TokenError::MintFloor { .. } => {
                FailureClass::TokenUnavailable
            }
            TokenError::Store { .. } => FailureClass::TokenStoreFailed,
        }
    }

    /// How long to wait before asking again, when known.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            TokenError::Unavailable { retry_after, .. } => *retry_after,
            TokenError::MintFloor { retry_after, .. } => Some(*retry_after),
            TokenError::Rejected { .. } | TokenError::Store { .. } => None,
        }
    }

    /// The `reason` label of `provider_token_failures_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            TokenError::Rejected { .. } => "rejected",
            TokenError::Unavailable { .. } => "unavailable",
            TokenError::MintFloor { .. } => "mint_floor",
            TokenError::Store { .. } => "store_failed",
        }
    }
}

/// Now, in unix milliseconds (the entries' clock).
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_shows_nothing_but_its_generation() {
        let t = AccessToken {
            value: SecretString::from("KA.secret-bearer".to_owned()),
            generation: 4,
            expires_at: 1_000,
        };
        assert_eq!(
            format!("{t:?}"),
            "AccessToken { value: \"[redacted]\", generation: 4 }"
        );
        assert_eq!(t.expose(), "KA.secret-bearer");
        assert_eq!(t.expires_at(), UNIX_EPOCH + Duration::from_secs(1));
    }

    #[test]
    fn errors_map_to_the_failure_vocabulary() {
        let p = Provider::Ubereats;
        let a = || "acme-uber".to_owned();
        let cases = [
            (
                TokenError::Rejected {
                    provider: p,
                    account: a(),
                    reason: "x".into(),
                },
                "token_rejected",
                true,
                "rejected",
            ),
            (
                TokenError::Unavailable {
                    provider: p,
                    account: a(),
                    reason: "x".into(),
                    retry_after: Some(Duration::from_secs(2)),
                },
                "token_unavailable",
                false,
                "unavailable",
            ),
            (
                TokenError::MintFloor {
                    provider: p,
                    account: a(),
                    retry_after: Duration::from_secs(50),
                },
                "token_unavailable",
                false,
                "mint_floor",
            ),
            (
                TokenError::Store {
                    provider: p,
                    account: a(),
                    reason: "x".into(),
                },
                "token_store_failed",
                false,
                "store_failed",
            ),
        ];
        for (e, class, permanent, reason) in cases {
            assert_eq!(e.class().as_str(), class);
            assert_eq!(e.class().is_permanent(), permanent);
            assert_eq!(e.reason(), reason);
            assert!(metrics::REASONS.contains(&reason));
        }
        assert_eq!(
            TokenError::MintFloor {
                provider: p,
                account: a(),
                retry_after: Duration::from_secs(50),
            }
            .to_string(),
            "ubereats account acme-uber: no usable token, and the last was issued less than \
             provider_api.token_min_mint_interval ago: the next may be requested in 50s"
        );
    }
}
