//! Provider signature verification: is this request really from the provider
//! the URL names, signed with one of the account's secrets?
//!
//! Every scheme works on the exact raw body bytes as received, before any JSON
//! parsing (a re-serialized body never verifies), compares MACs in constant
//! time (`hmac`'s `verify_slice`), and reads header names case-insensitively
//! ([`HeaderMap`]). Any of the account's secrets may have signed (rotation).
//!
//! One [`Verifier`] per scheme, one module per provider, one registry:
//! [`verifier`] matches exhaustively on [`Provider`], so a new provider does not
//! compile until it has a verifier here.
//!
//! Every failure is a [`VerifyError`]; the HTTP layer answers one generic 401
//! for all of them and uses [`VerifyError::error_type`] only for metrics and
//! logs. No error message or `Debug` output carries a secret or a computed
//! signature.
//!
//! Each scheme also has a public `sign` (the headers the provider would send),
//! used by the test suites, the sample-traffic command and the benchmarks.

use std::time::{Duration, SystemTime};

use crate::Provider;
use http::HeaderMap;
use secrecy::SecretString;

mod common;

pub mod careem;
pub mod deliveroo;
pub mod direct;
pub mod justeat;
pub mod keeta;
pub mod talabat;
pub mod ubereats;
pub mod wolt;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod testutil;

pub use common::{MAX_HEADER_BYTES, macs_on_this_thread};
pub use talabat::JwtAlgorithm;

/// A provider's signature scheme.
pub trait Verifier: Send + Sync {
    /// Checks `headers` and the raw `body` against the account's `secrets`
    /// (any may match). `now` is a parameter so that time-bound schemes can be
    /// tested deterministically.
    fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        secrets: &[SecretString],
        options: &VerifyOptions,
        now: SystemTime,
    ) -> Result<Verified, VerifyError>;

    /// The headers this provider would send with `body`, signed with `secret`
    /// at time `at`. Where the scheme carries an event id (Deliveroo's
    /// sequence guid, Standard Webhooks' `webhook-id`), one is derived from
    /// `at` and `body`, so distinct events get distinct ids; the module's own
    /// `sign` takes an explicit id.
    fn sign(
        &self,
        body: &[u8],
        secret: &SecretString,
        options: &VerifyOptions,
        at: SystemTime,
    ) -> Result<HeaderMap, SignError>;
}

/// The verifier for `provider`.
pub fn verifier(provider: Provider) -> &'static dyn Verifier {
    match provider {
        Provider::Careem => &careem::Careem,
        Provider::Talabat => &talabat::Talabat,
        Provider::Deliveroo => &deliveroo::Deliveroo,
        Provider::Ubereats => &ubereats::UberEats,
        Provider::Wolt => &wolt::Wolt,
        Provider::Justeat => &justeat::JustEat,
        Provider::Direct => &direct::Direct,
        // Until their schemes land (this change): every request refused.
        Provider::Doordash | Provider::Glovo | Provider::Grab | Provider::Keeta => &Pending,
    }
}

/// Refuses everything (a provider whose scheme is being written).
struct Pending;

impl Verifier for Pending {
    fn verify(
        &self,
        _: &HeaderMap,
        _: &[u8],
        _: &[SecretString],
        _: &VerifyOptions,
        _: SystemTime,
    ) -> Result<Verified, VerifyError> {
        Err(VerifyError::InvalidSecret)
    }

    fn sign(
        &self,
        _: &[u8],
        _: &SecretString,
        _: &VerifyOptions,
        _: SystemTime,
    ) -> Result<HeaderMap, SignError> {
        Err(SignError::InvalidSecret)
    }
}

/// A request that passed verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The provider's own id of this event, for deduplication, where the
    /// scheme has one: Deliveroo's sequence guid, Uber Eats' `event_id`,
    /// Wolt's notification `id`, Standard Webhooks' `webhook-id`. `None` when
    /// the provider has none (Careem, Just Eat, Talabat) or when it is absent
    /// or unfit for a message id (empty, over 256 bytes, not visible ASCII);
    /// the caller then falls back to a hash of the body. Never a reason to
    /// fail verification.
    pub event_id: Option<String>,
    /// Position in the configured secret list of the secret that matched, so
    /// operators can see when an old secret stops being used during rotation.
    pub secret_index: usize,
}

/// Per-account options for the schemes that need them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyOptions {
    /// The only JWT algorithm accepted (Talabat). Pinned per account so that
    /// a token cannot choose its own algorithm.
    pub jwt_algorithm: JwtAlgorithm,
    /// Clock skew allowed on a JWT's `exp` and `nbf` (Talabat).
    pub jwt_leeway: Duration,
    /// Longest lifetime a JWT may claim (Talabat): `exp - iat`, and `exp`
    /// no further than this (plus [`VerifyOptions::jwt_iat_skew`]) from now,
    /// so a captured token cannot stay usable for years.
    pub jwt_max_lifetime: Duration,
    /// How far in the future a JWT's `iat` may be (Talabat).
    pub jwt_iat_skew: Duration,
    /// How far a signed timestamp may be from `now`, into the past or the
    /// future (Standard Webhooks).
    pub timestamp_tolerance: Duration,
}

/// [`VerifyOptions::jwt_max_lifetime`] unless configured: the Delivery Hero
/// middleware's token lifetime is not published; an hour would cover its
/// retries (up to ten, ~30 s growing to 240 s apart) even if it reused one
/// token for all of them.
pub const DEFAULT_JWT_MAX_LIFETIME: Duration = Duration::from_secs(60 * 60);

/// [`VerifyOptions::jwt_iat_skew`] unless configured: the Standard Webhooks
/// timestamp tolerance, for the same reason (clocks that are off).
pub const DEFAULT_JWT_IAT_SKEW: Duration = Duration::from_secs(5 * 60);

impl Default for VerifyOptions {
    fn default() -> Self {
        Self {
            jwt_algorithm: JwtAlgorithm::Hs256,
            jwt_leeway: Duration::from_secs(60),
            jwt_max_lifetime: DEFAULT_JWT_MAX_LIFETIME,
            jwt_iat_skew: DEFAULT_JWT_IAT_SKEW,
            // The Standard Webhooks reference libraries' default.
            timestamp_tolerance: Duration::from_secs(5 * 60),
        }
    }
}

/// Why a request failed verification.
///
/// Messages name headers and reasons, never a secret, a signature or body
/// content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// A header the scheme requires is absent.
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    /// A header is present but not in the scheme's format (not ASCII, bad
    /// hex or base64, wrong length, unknown structure).
    #[error("malformed header {header}: {reason}")]
    MalformedHeader {
        header: &'static str,
        reason: &'static str,
    },
    /// Well-formed, but no configured secret produces this signature.
    #[error("signature matches none of the account's secrets")]
    BadSignature,
    /// The signed timestamp is further from now than the tolerance, in the
    /// past (a replay) or the future (a clock far off). `skew_secs` is now
    /// minus the timestamp: positive when the timestamp is in the past.
    #[error(
        "signed timestamp is {skew_secs}s before now (negative: after), beyond the {tolerance_secs}s tolerance"
    )]
    StaleTimestamp { skew_secs: i64, tolerance_secs: u64 },
    /// The bearer token is not a well-formed JWT.
    #[error("malformed token: {0}")]
    MalformedToken(&'static str),
    /// The JWT names an algorithm other than the one pinned for the account
    /// (including `none`).
    #[error("token algorithm is not the one configured for the account")]
    DisallowedAlgorithm,
    /// The JWT's signature is valid but its claims are not acceptable.
    #[error("invalid token claims: {0}")]
    InvalidClaims(&'static str),
    /// The JWT's `exp` is past, beyond the leeway.
    #[error("token expired {expired_secs}s ago")]
    ExpiredToken { expired_secs: u64 },
    /// The account has no secret configured: a configuration fault.
    #[error("no secret configured for the account")]
    NoSecret,
    /// None of the account's secrets can be used by this scheme (e.g. not a
    /// `whsec_` base64 secret): a configuration fault.
    #[error("no configured secret is valid for this scheme")]
    InvalidSecret,
}

impl VerifyError {
    /// A short stable label for metrics and logs.
    pub fn error_type(&self) -> &'static str {
        match self {
            VerifyError::MissingHeader(_) => "missing_header",
            VerifyError::MalformedHeader { .. } => "malformed_header",
            VerifyError::BadSignature => "bad_signature",
            VerifyError::StaleTimestamp { .. } => "stale_timestamp",
            VerifyError::MalformedToken(_) => "malformed_token",
            VerifyError::DisallowedAlgorithm => "disallowed_algorithm",
            VerifyError::InvalidClaims(_) => "invalid_claims",
            VerifyError::ExpiredToken { .. } => "expired_token",
            VerifyError::NoSecret => "no_secret",
            VerifyError::InvalidSecret => "invalid_secret",
        }
    }

    /// True when the fault is ours (the account's configuration), not the
    /// sender's: the request still gets the generic 401, but this deserves an
    /// operator's attention rather than a shrug.
    pub fn is_misconfiguration(&self) -> bool {
        matches!(self, VerifyError::NoSecret | VerifyError::InvalidSecret)
    }
}

/// Why `sign` could not produce headers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// The secret cannot be used by this scheme (e.g. bad `whsec_` base64).
    #[error("secret is not valid for this scheme")]
    InvalidSecret,
    /// A caller-supplied value (an event id) cannot be sent as a header value.
    #[error("value for header {0} is not a valid header value")]
    InvalidHeaderValue(&'static str),
    /// `at` is before the Unix epoch.
    #[error("signing time is before the unix epoch")]
    TimeBeforeEpoch,
    /// The JWT library refused to encode the token.
    #[error("token could not be encoded")]
    Token,
}
