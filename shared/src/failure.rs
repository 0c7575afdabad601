//! The one failure vocabulary: every way a message can fail, by a stable
//! snake_case class and whether it is permanent.
//!
//! A class is what a DLQ entry's `error_class` holds, what the
//! `error_type` label of every stage's error and dead-letter metrics holds,
//! what logs write as `error_type`, and what `dlq-inspector --error` filters
//! on. Renaming a class breaks operators' filters and alerts: add a class,
//! never rename one. The README's operator section lists them (a test keeps
//! that list and [`FailureClass::ALL`] the same).
//!
//! Permanent classes are dead-lettered at once, whatever the delivery;
//! transient ones are retried on the schedule until the last delivery.
//! Request rejections at the ingress (a bad signature, 413, 429) are not
//! message failures: the provider is answered and nothing is stored.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

macro_rules! failure_classes {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal, $permanent:literal; )*) => {
        /// Why a message failed. See the module docs.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum FailureClass {
            $( $(#[$doc])* $variant, )*
        }

        impl FailureClass {
            /// Every class, in the order the README lists them.
            pub const ALL: &'static [FailureClass] = &[$(FailureClass::$variant,)*];

            /// The stable name: DLQ entries, metric labels, logs, CLI filters.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(FailureClass::$variant => $name,)*
                }
            }

            /// Retrying cannot help: dead-letter at once.
            pub const fn is_permanent(self) -> bool {
                match self {
                    $(FailureClass::$variant => $permanent,)*
                }
            }
        }
    };
}

failure_classes! {
    // The transformer.
    /// The webhook's body is not what the provider's adapter reads, or the
    /// order it makes breaks the canonical order's rules.
    InvalidPayload = "invalid_payload", true;
    /// A header the ingress sets is missing from the stored webhook.
    MissingHeader = "missing_header", true;
    /// The subject names a provider this build does not know.
    UnknownProvider = "unknown_provider", true;
    /// The account is not in this stage's config (a config rolled out to
    /// the ingress before the transformer): replay after the rollout.
    UnknownAccount = "unknown_account", true;
    /// An event of the provider the hub does not turn into an order.
    UnsupportedEvent = "unsupported_event", true;
    /// A notification whose order must be fetched from the provider's API.
    FetchRequired = "fetch_required", true;
    /// An item has no product mapping and the tenant requires one.
    UnmappedProduct = "unmapped_product", true;
    /// The store has no branch mapping and the tenant requires one.
    UnmappedBranch = "unmapped_branch", true;
    /// The message can never be stored: larger than the server's
    /// `max_payload` or the stream's `max_msg_size`.
    MessageTooLarge = "message_too_large", true;
    /// No stream stores the subject: a deployment fault, retried so that
    /// nothing is lost while an operator fixes it.
    StreamNotFound = "stream_not_found", false;
    /// Publishing to the next stream failed or was not acknowledged in time.
    PublishFailed = "publish_failed", false;

    // The forwarder.
    /// The order's tenant is not in this stage's config.
    UnknownTenant = "unknown_tenant", true;
    /// The backend answered 429 (its `Retry-After` is honoured).
    Backend429 = "backend_429", false;
    /// The backend answered 408.
    Backend408 = "backend_408", false;
    /// The backend answered 5xx.
    Backend5xx = "backend_5xx", false;
    /// The backend answered a 4xx other than 408, 409 and 429: it refuses
    /// the order.
    BackendRejected = "backend_rejected", true;
    /// The backend answered a redirect; the hub does not follow them.
    BackendRedirect = "backend_redirect", true;
    /// The backend's address is loopback, private, link-local or another
    /// special-purpose address the outbound policy refuses: no request was
    /// sent. Replay after the config allows the network or the backend
    /// moves.
    BackendAddressRefused = "backend_address_refused", true;
    /// The backend did not answer within the tenant's `request_timeout`.
    BackendTimeout = "backend_timeout", false;
    /// The backend could not be reached (refused, DNS, TLS).
    BackendUnreachable = "backend_unreachable", false;
    /// Any other failure of the request.
    BackendError = "backend_error", false;
    /// Older than `max_order_age` (a replay counts from the replay).
    Stale = "stale", true;
    /// An event had to wait for an earlier event of its order while as
    /// many events as the replica holds waiting already waited: it is
    /// retried on the schedule instead of taking a handler from the orders
    /// that need none (`shared::sequence`).
    OrderWaiting = "order_waiting", false;

    // The fetcher (provider order APIs).
    /// The provider's API still answers 404 for the order after
    /// `[fetcher] not_found_retries` tries (wrong environment, or an order
    /// of another store); retried until then: a new order may not be
    /// readable yet.
    OrderNotFound = "order_not_found", false;
    /// A new order's notification is older than the account's
    /// `fetch_deadline`: the provider has cancelled it unanswered.
    FetchDeadlinePassed = "fetch_deadline_passed", true;
    /// The provider's API answered 429 (its `Retry-After` is honoured).
    Provider429 = "provider_429", false;
    /// The provider's API answered 408 or 5xx.
    Provider5xx = "provider_5xx", false;
    /// The provider's API answered 401 to a token that was just renewed:
    /// revoked credentials, a missing scope, or a sandbox token on a
    /// production host.
    ProviderUnauthorized = "provider_unauthorized", true;
    /// The provider's API answered 403: the store is not provisioned for
    /// this app, or the token belongs to another venue.
    ProviderForbidden = "provider_forbidden", true;
    /// The provider's API answered another 4xx, or a redirect (never
    /// followed).
    ProviderRejected = "provider_rejected", true;
    /// The provider API's address is special-purpose and not in
    /// `[provider_api] allowed_private_destinations`: nothing was sent.
    ProviderAddressRefused = "provider_address_refused", true;
    /// No answer from the provider's API within `request_timeout`.
    ProviderTimeout = "provider_timeout", false;
    /// The provider's API could not be reached (refused, DNS, TLS) or the
    /// request failed otherwise.
    ProviderUnreachable = "provider_unreachable", false;

    // The status worker (the way back).
    /// The answer's deadline passed before the provider took it (accept or
    /// reject: the provider's; later actions: `[status_sync]
    /// late_action_window`); the backend hears it as `status_failed`.
    DeadlinePassed = "deadline_passed", true;
    /// The order names no callback URL for this answer (Talabat's
    /// `callbackUrls`).
    CallbackMissing = "callback_missing", true;
    /// A callback URL from the order's payload names a host that is not the
    /// account's `api.base_url` host nor in `api.callback_hosts`: never
    /// called (no request forgery through a payload).
    CallbackRefused = "callback_refused", true;
    /// The provider has no call for this action on this order (the status
    /// API refuses it with 422; an automatic decision can meet it).
    UnsupportedAction = "unsupported_action", true;
    /// No context for the order in `ORDER_CONTEXT` (expired, or the order
    /// never became a canonical `created` order), or its account is gone.
    UnknownOrder = "unknown_order", true;
    /// The provider says the order is between states and the answer may be
    /// taken shortly (Talabat's 409 `ASSIGNED_TO_TRANSPORT` or
    /// `WAITING_FOR_ACKNOWLEDGEMENT`): retried until the deadline.
    ProviderBusy = "provider_busy", false;
    /// The `ORDER_CONTEXT` bucket could not be read (NATS unavailable or
    /// slow): retried.
    ContextUnavailable = "context_unavailable", false;

    // Provider API tokens (`shared::tokens`).
    /// The provider's token endpoint refused the account's credentials
    /// (wrong, revoked, or a spent Wolt refresh token): an operator must
    /// fix the config or authorise the venue again, then replay.
    TokenRejected = "token_rejected", true;
    /// No token for now: the token endpoint failed, limited or timed out,
    /// or the mint floor holds the next mint back.
    TokenUnavailable = "token_unavailable", false;
    /// The token store's bucket could not be read or written, or an entry
    /// does not decrypt with this stage's `TOKEN_STORE_KEY`.
    TokenStoreFailed = "token_store_failed", false;

    // The worker loop and the dead-letter mover.
    /// Every allowed delivery failed (the mover's class for a message whose
    /// worker died on its last delivery).
    DeliveriesExhausted = "deliveries_exhausted", true;
    /// Terminated by something other than a worker's dead-lettering.
    Terminated = "terminated", true;
    /// A success could not be acknowledged: JetStream delivers it again.
    AckFailed = "ack_failed", false;
    /// A retry's delay could not be sent: JetStream redelivers after `ack_wait`.
    NakFailed = "nak_failed", false;
    /// The DLQ did not store an entry: the message is retried instead.
    DeadLetterPublishFailed = "dead_letter_publish_failed", false;
    /// The original could not be terminated after its dead letter was stored.
    TermFailed = "term_failed", false;
}

impl FailureClass {
    /// The classes a worker or the mover records for themselves, whatever
    /// the stage's handler: their metric series exist from start.
    pub const WORKER: &'static [FailureClass] = &[
        FailureClass::AckFailed,
        FailureClass::NakFailed,
        FailureClass::DeadLetterPublishFailed,
        FailureClass::TermFailed,
    ];

    /// The classes the dead-letter mover writes.
    pub const MOVER: &'static [FailureClass] =
        &[FailureClass::DeliveriesExhausted, FailureClass::Terminated];
}

// By name, exactly as `as_str` spells it (serde's renaming would write
// `backend5xx`).
impl Serialize for FailureClass {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for FailureClass {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name is not a failure class.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown failure class {0:?} (known: {known})", known = known_names())]
pub struct UnknownFailureClass(pub String);

fn known_names() -> String {
    FailureClass::ALL
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl FromStr for FailureClass {
    type Err = UnknownFailureClass;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FailureClass::ALL
            .iter()
            .copied()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownFailureClass(s.to_owned()))
    }
}

/// How an async-nats JetStream publish failed, kept as its kind until here
/// (never flattened to a string first): a message too large for the server
/// or the stream is permanent, a missing stream is a deployment fault, the
/// rest is transient.
pub fn classify_publish(error: &async_nats::jetstream::context::PublishError) -> FailureClass {
    use async_nats::jetstream::context::PublishErrorKind as Kind;
    match error.kind() {
        Kind::MaxPayloadExceeded => FailureClass::MessageTooLarge,
        Kind::StreamNotFound => FailureClass::StreamNotFound,
        Kind::Other if exceeds_stream_maximum(error) => FailureClass::MessageTooLarge,
        Kind::Other
        | Kind::TimedOut
        | Kind::BrokenPipe
        | Kind::MaxAckPending
        | Kind::WrongLastMessageId
        | Kind::WrongLastSequence => FailureClass::PublishFailed,
    }
}

/// The server refused the message for the stream's `max_msg_size`
/// (JetStream error 10054), which async-nats reports as `Other`.
fn exceeds_stream_maximum(error: &async_nats::jetstream::context::PublishError) -> bool {
    use async_nats::jetstream::ErrorCode;
    std::error::Error::source(error)
        .and_then(|s| s.downcast_ref::<async_nats::jetstream::Error>())
        .is_some_and(|e| e.error_code() == ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn names_are_unique_snake_case_and_parse_back() {
        let mut seen = BTreeSet::new();
        for &c in FailureClass::ALL {
            let name = c.as_str();
            assert!(seen.insert(name), "{name} twice");
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{name}"
            );
            assert_eq!(name.parse::<FailureClass>(), Ok(c));
            assert_eq!(serde_json::to_string(&c).unwrap(), format!("\"{name}\""));
        }
        assert_eq!(
            "backend5xx"
                .parse::<FailureClass>()
                .unwrap_err()
                .to_string(),
            format!(
                "unknown failure class \"backend5xx\" (known: {})",
                known_names()
            )
        );
    }

    #[test]
    fn permanence_is_what_operators_are_told() {
        let permanent: Vec<&str> = FailureClass::ALL
            .iter()
            .filter(|c| c.is_permanent())
            .map(|c| c.as_str())
            .collect();
        assert_eq!(
            permanent,
            [
                "invalid_payload",
                "missing_header",
                "unknown_provider",
                "unknown_account",
                "unsupported_event",
                "fetch_required",
                "unmapped_product",
                "unmapped_branch",
                "message_too_large",
                "unknown_tenant",
                "backend_rejected",
                "backend_redirect",
                "backend_address_refused",
                "stale",
                "fetch_deadline_passed",
                "provider_unauthorized",
                "provider_forbidden",
                "provider_rejected",
                "provider_address_refused",
                "deadline_passed",
                "callback_missing",
                "callback_refused",
                "unsupported_action",
                "unknown_order",
                "token_rejected",
                "deliveries_exhausted",
                "terminated",
            ]
        );
    }

    /// The README's operator section lists every class with its meaning.
    #[test]
    fn the_readme_lists_every_class() {
        let readme = include_str!("../../README.md");
        for c in FailureClass::ALL {
            assert!(
                readme.contains(&format!("| `{}` |", c.as_str())),
                "README.md does not list {c}"
            );
        }
    }
}
