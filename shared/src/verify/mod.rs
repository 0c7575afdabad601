//! Provider signature verification: is this request really from the provider
//! the URL names, signed with one of the account's secrets?
//!
//! Every scheme works on the exact raw body bytes as received, before any JSON
//! parsing (a re-serialized body never verifies), compares in constant time
//! (`hmac`'s `verify_slice` for MACs, `subtle` for digests), and reads header
//! names case-insensitively ([`HeaderMap`]). Any of the account's secrets may
//! have signed (rotation), and each secret costs the same work (one MAC, hash
//! or token check), so the ingress can pad every refusal to the same cost.
//!
//! The schemes: HMAC-SHA256 of the body (Careem, Deliveroo, Uber Eats, Wolt,
//! Just Eat, Standard Webhooks for `direct`), a bearer JWT (Talabat), a
//! static token in `Authorization` ([`static_token`]: DoorDash, Glovo), a
//! bearer JWT the hub itself issued ([`grab`]), and a SHA-256 `sig` inside a
//! JSON envelope ([`keeta`]). Schemes that need more than the secrets get it
//! from [`VerifyOptions`] ([`VerifyOptions::for_account`]).
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
//! Each scheme also has a public `sign` (the request the provider would
//! send: headers, and for Keeta the re-signed body), used by the test
//! suites, the sample-traffic command and the benchmarks.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::Provider;
use crate::config::Account;
use http::HeaderMap;
use secrecy::SecretString;

mod common;
pub mod static_token;

pub mod careem;
pub mod deliveroo;
pub mod direct;
pub mod doordash;
pub mod glovo;
pub mod grab;
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

    /// The request this provider would send with `body`, signed with
    /// `secret` at time `at`: its headers, and the body itself where the
    /// scheme signs inside it (Keeta's envelope carries `sig` and
    /// `timestamp`). Where the scheme carries an event id (Deliveroo's
    /// sequence guid, Standard Webhooks' `webhook-id`), one is derived from
    /// `at` and `body`, so distinct events get distinct ids; the module's own
    /// `sign` takes an explicit id.
    fn sign(
        &self,
        body: &[u8],
        secret: &SecretString,
        options: &VerifyOptions,
        at: SystemTime,
    ) -> Result<Signed, SignError>;
}

/// A request [`Verifier::sign`] made.
#[derive(Debug, Clone)]
pub struct Signed {
    pub headers: HeaderMap,
    /// The body to send instead of the one given, for a scheme that signs
    /// inside the body (Keeta); `None`: the body as given.
    pub body: Option<Vec<u8>>,
}

impl Signed {
    /// Headers only: the body is sent as given.
    pub fn headers(headers: HeaderMap) -> Self {
        Signed {
            headers,
            body: None,
        }
    }

    /// The body to send: the rewritten one, or `original`.
    pub fn body<'a>(&'a self, original: &'a [u8]) -> &'a [u8] {
        self.body.as_deref().unwrap_or(original)
    }
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
        Provider::Doordash => &doordash::DoorDash,
        Provider::Glovo => &glovo::Glovo,
        Provider::Grab => &grab::Grab,
        Provider::Keeta => &keeta::Keeta,
        Provider::Direct => &direct::Direct,
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

/// Per-account options for the schemes that need them
/// ([`VerifyOptions::for_account`]).
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// future (Standard Webhooks, Keeta). Unless the account sets one: 5
    /// minutes, for Keeta [`keeta::DEFAULT_TIMESTAMP_TOLERANCE`].
    pub timestamp_tolerance: Duration,
    /// Grab: whom the tokens the hub issues are for ([`grab::Audience`]);
    /// `None` on other accounts. A Grab account without one refuses every
    /// request ([`VerifyError::Unconfigured`]).
    pub grab: Option<Arc<grab::Audience>>,
    /// Keeta: the webhook URL exactly as registered with Keeta, which its
    /// `sig` covers ([`keeta`]); `None` on other accounts.
    pub webhook_url: Option<Arc<str>>,
    /// Keeta: the account's application id (`[account.api] app_id`, digits),
    /// which a push's signed `appId` must equal; `None`: any app's.
    pub keeta_app_id: Option<Arc<str>>,
}

impl VerifyOptions {
    /// The options `account` verifies with: its own settings, the defaults
    /// for the rest.
    pub fn for_account(account: &Account) -> Self {
        let defaults = VerifyOptions::default();
        let grab = account.token_endpoint.as_ref().map(|t| {
            Arc::new(grab::Audience {
                account: account.id.clone(),
                client_id: t.client_id.clone(),
                token_lifetime: t.token_lifetime,
            })
        });
        VerifyOptions {
            jwt_algorithm: account.jwt_algorithm,
            timestamp_tolerance: account
                .timestamp_tolerance
                .unwrap_or(match account.provider {
                    // Covers Keeta's re-sends in case they are not signed
                    // again ([`keeta`]'s header, [GUESS]).
                    Provider::Keeta => keeta::DEFAULT_TIMESTAMP_TOLERANCE,
                    _ => defaults.timestamp_tolerance,
                }),
            jwt_max_lifetime: account
                .jwt_max_lifetime
                .unwrap_or(defaults.jwt_max_lifetime),
            jwt_iat_skew: account.jwt_iat_skew.unwrap_or(defaults.jwt_iat_skew),
            grab,
            webhook_url: account.webhook_url.as_deref().map(Arc::from),
            keeta_app_id: account
                .api
                .as_ref()
                .and_then(|api| api.app_id.as_deref())
                .map(Arc::from),
            ..defaults
        }
    }
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
            grab: None,
            webhook_url: None,
            keeta_app_id: None,
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
    /// A scheme that signs inside the body (Keeta): the body is not the
    /// JSON object it signs (not JSON, not an object, a key twice).
    #[error("malformed body: {0}")]
    MalformedBody(&'static str),
    /// A body field the scheme requires (Keeta's `sig`, `timestamp`) is
    /// absent.
    #[error("missing field {0}")]
    MissingField(&'static str),
    /// A body field is present but not in the scheme's format.
    #[error("malformed field {field}: {reason}")]
    MalformedField {
        field: &'static str,
        reason: &'static str,
    },
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
    /// Signed, but what it claims is not acceptable: a JWT's claims, a
    /// Keeta envelope's `appId`.
    #[error("invalid claims: {0}")]
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
    /// The account lacks a setting the scheme needs (Grab's token
    /// endpoint, Keeta's webhook URL): a configuration fault.
    #[error("the account has no {0} for this scheme")]
    Unconfigured(&'static str),
}

impl VerifyError {
    /// A short stable label for metrics and logs.
    pub fn error_type(&self) -> &'static str {
        match self {
            VerifyError::MissingHeader(_) => "missing_header",
            VerifyError::MalformedBody(_) => "malformed_body",
            VerifyError::MissingField(_) => "missing_field",
            VerifyError::MalformedField { .. } => "malformed_field",
            VerifyError::MalformedHeader { .. } => "malformed_header",
            VerifyError::BadSignature => "bad_signature",
            VerifyError::StaleTimestamp { .. } => "stale_timestamp",
            VerifyError::MalformedToken(_) => "malformed_token",
            VerifyError::DisallowedAlgorithm => "disallowed_algorithm",
            VerifyError::InvalidClaims(_) => "invalid_claims",
            VerifyError::ExpiredToken { .. } => "expired_token",
            VerifyError::NoSecret => "no_secret",
            VerifyError::InvalidSecret => "invalid_secret",
            VerifyError::Unconfigured(_) => "unconfigured",
        }
    }

    /// True when the fault is ours (the account's configuration), not the
    /// sender's: the request still gets the generic 401, but this deserves an
    /// operator's attention rather than a shrug.
    pub fn is_misconfiguration(&self) -> bool {
        matches!(
            self,
            VerifyError::NoSecret | VerifyError::InvalidSecret | VerifyError::Unconfigured(_)
        )
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
    /// The options lack what the scheme signs with (Grab's audience,
    /// Keeta's webhook URL).
    #[error("the options have no {0} for this scheme")]
    Unconfigured(&'static str),
    /// The body cannot carry the scheme's signature (Keeta signs inside a
    /// JSON object).
    #[error("the body cannot be signed by this scheme: {0}")]
    Body(&'static str),
}
