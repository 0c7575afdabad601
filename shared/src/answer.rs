//! What answering an order at its provider needs, kept per order in the
//! `ORDER_CONTEXT` key-value bucket, and which answers each provider takes.
//!
//! # Contract
//! - The transformer writes one [`OrderContext`] per `created` order before
//!   it publishes the order (so a backend that answers at once finds it):
//!   the provider's ids, the account, the deadline to accept or reject, the
//!   order API generation (Uber Eats, Wolt) and what the provider handed
//!   over for answering (Talabat's `callbackUrls`). A re-sent `created`
//!   overwrites it with the same content.
//! - The ingress reads it to answer the status API: no entry is `404`, an
//!   action the provider cannot take ([`supports`]) is `422`.
//! - The status worker reads it for every call. No database on this path;
//!   entries expire with the bucket's `max_age` (7 days by default,
//!   `[streams.overrides.ORDER_CONTEXT] max_age`).
//! - Keys are [`key`]: `<provider>.<tenant>.<order id>`, the tenant and the
//!   order id base64url-encoded (ids carry `:` and `/`, tenants may be
//!   non-ASCII; a bucket key takes neither).

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use canonical::status::Action;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::Provider;
use crate::config::{Account, StatusApi};

/// The bucket's name (`nats/streams.toml`).
pub const ORDER_CONTEXT_BUCKET: &str = "ORDER_CONTEXT";

/// Talabat's `callbackUrls` names the hub calls (the order's own URLs).
pub mod callback {
    pub const ACCEPTED: &str = "orderAcceptedUrl";
    pub const REJECTED: &str = "orderRejectedUrl";
    pub const PICKED_UP: &str = "orderPickedUpUrl";
    pub const PREPARED: &str = "orderPreparedUrl";
}

/// One order's answering context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderContext {
    pub tenant: String,
    pub provider: Provider,
    pub account: String,
    pub provider_order_id: String,
    /// The webhook id of the `created` order (its `webhook_id`, the
    /// backend's `Idempotency-Key`).
    pub webhook_id: String,
    pub display_code: Option<String>,
    /// When the hub received the order, RFC 3339.
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    /// Accept or reject before this, RFC 3339: the order's own expiry
    /// (Talabat `expiryDate`), else `received_at` plus the account's
    /// `answer_deadline`.
    #[serde(with = "time::serde::rfc3339")]
    pub answer_by: OffsetDateTime,
    /// Which of the provider's order APIs the order came from (`v1`, `v2`;
    /// Uber Eats and Wolt, from the fetcher): the status calls differ.
    pub api: Option<String>,
    /// URLs the provider gave for answering, by the provider's name
    /// (Talabat `callbackUrls`: [`callback`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub callbacks: BTreeMap<String, String>,
    /// The restaurant delivers it itself (Wolt self-delivery).
    #[serde(default)]
    pub self_delivery: bool,
    /// Placed in advance; Wolt confirms a pre-order instead of accepting it.
    #[serde(default)]
    pub preorder: bool,
    /// The provider's store id the order names (the first candidate the
    /// adapter found): Glovo's and Grab's calls name the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_id: Option<String>,
    /// The customer collects it (Glovo's "picked up by customer" differs
    /// from its courier's pick-up).
    #[serde(default)]
    pub pickup: bool,
}

/// The bucket key of an order's context.
pub fn key(tenant: &str, provider: Provider, provider_order_id: &str) -> String {
    format!(
        "{provider}.{}.{}",
        URL_SAFE_NO_PAD.encode(tenant),
        URL_SAFE_NO_PAD.encode(provider_order_id)
    )
}

impl OrderContext {
    pub fn key(&self) -> String {
        key(&self.tenant, self.provider, &self.provider_order_id)
    }
}

/// Whether `account`'s provider takes `action` for this order (the
/// ingress answers `422 unsupported_action` otherwise). The status worker
/// builds a call for exactly these (a test there keeps both the same).
pub fn supports(account: &Account, ctx: &OrderContext, action: Action) -> bool {
    use Action::*;
    if !account.can_answer() {
        return false;
    }
    let status_api = account
        .api
        .as_ref()
        .map_or(StatusApi::Standard, |a| a.status_api);
    match account.provider {
        Provider::Careem => false,
        Provider::Direct => true,
        Provider::Ubereats => match ctx.api.as_deref() {
            // Order Fulfillment API.
            Some("v1") => matches!(action, Accept | Reject | Cancel | Ready | Delay),
            // The legacy order API: no "ready" (Uber's couriers are
            // dispatched by Uber), self-delivery status for the rest.
            _ => matches!(action, Accept | Reject | Cancel | PickedUp | Delivered),
        },
        Provider::Wolt => matches!(action, Accept | Reject | Ready | Delivered),
        Provider::Talabat => matches!(action, Accept | Reject | Ready | PickedUp),
        Provider::Deliveroo => matches!(action, Accept | Reject | Ready | PickedUp | Delay),
        // Confirm (success or fail), ready, cancel [DOC]; a self-delivered
        // order also reports its pick-up and delivery (`/events/...`).
        Provider::Doordash => {
            matches!(action, Accept | Reject | Ready | Cancel)
                || (ctx.self_delivery && matches!(action, PickedUp | Delivered))
        }
        // No reject or cancel API [DOC-3rd]; "ready for pickup" only for
        // Glovo's couriers, "out for delivery" only for the restaurant's
        // own, "picked up by customer" only for collection orders [CODE×2].
        Provider::Glovo => match action {
            Accept => true,
            Ready => !ctx.self_delivery && !ctx.pickup,
            PickedUp => ctx.self_delivery || ctx.pickup,
            _ => false,
        },
        // Accept/reject (manual-accept stores), ready, new ready time,
        // cancel [SDK].
        Provider::Grab => matches!(action, Accept | Reject | Ready | Delay | Cancel),
        // Confirm, cancel (also before confirming: Keeta has no separate
        // reject of a new order), meal ready [DOC]; a self-delivered order
        // also reports dispatch and delivery [DOC].
        Provider::Keeta => {
            matches!(action, Accept | Reject | Ready | Cancel)
                || (ctx.self_delivery && matches!(action, PickedUp | Delivered))
        }
        Provider::Justeat => match status_api {
            StatusApi::JustEatPartner => {
                matches!(
                    action,
                    Accept | Reject | Ready | PickedUp | Delivered | Delay
                )
            }
            _ => matches!(action, Accept | Reject),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_bucket_safe_whatever_the_ids() {
        let k = key("مطعم", Provider::Deliveroo, "gb:5f1c/x y");
        assert_eq!(k, "deliveroo.2YXYt9i52YU.Z2I6NWYxYy94IHk");
        assert!(
            k.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_=.".contains(c)),
            "{k}"
        );
        assert_ne!(
            key("acme", Provider::Wolt, "a"),
            key("acme", Provider::Wolt, "b")
        );
    }

    #[test]
    fn a_context_round_trips_and_old_entries_read() {
        let ctx = OrderContext {
            tenant: "acme".into(),
            provider: Provider::Talabat,
            account: "acme-talabat".into(),
            provider_order_id: "o1".into(),
            webhook_id: "w1".into(),
            display_code: None,
            received_at: OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap(),
            answer_by: OffsetDateTime::from_unix_timestamp(1_800_000_900).unwrap(),
            api: None,
            callbacks: BTreeMap::from([(callback::ACCEPTED.into(), "https://x/a".into())]),
            self_delivery: false,
            preorder: false,
            store_id: Some("s1".into()),
            pickup: false,
        };
        let json = serde_json::to_vec(&ctx).unwrap();
        assert_eq!(serde_json::from_slice::<OrderContext>(&json).unwrap(), ctx);
        let minimal = br#"{"tenant":"acme","provider":"wolt","account":"a","provider_order_id":"o",
            "webhook_id":"w","display_code":null,"received_at":"2026-12-02T18:00:00Z",
            "answer_by":"2026-12-02T18:03:00Z","api":"v2"}"#;
        let read: OrderContext = serde_json::from_slice(minimal).unwrap();
        assert!(read.callbacks.is_empty() && !read.self_delivery && !read.preorder);
    }
}
