//! Direct channels (the restaurant's own web shop): the payload already is
//! a canonical order (`orderhub.order.v1`, DESIGN §4). It is read strictly:
//! `schema` must be `orderhub.order.v1`, unknown top-level fields are
//! refused (a typo must not silently drop data), money is integer minor
//! units (a decimal does not parse). The hub owns `webhook_id`, `tenant`,
//! `provider` and `raw`: a sender may omit them, and whatever it sends is
//! replaced by the delivery's. `branch` and `product_id`s the sender gives
//! are kept (they already are internal ids); missing ones are mapped from
//! the account like any provider's. Then the order's rules apply as for
//! every provider.

use canonical::money::Currency;
use canonical::order::{Customer, Event, Fulfilment, Item, Payment, SchemaV1, Status, Totals};
use serde::Deserialize;
use serde::de::IgnoredAny;
use time::OffsetDateTime;

use super::Adapter;
use crate::convert::{ConvertError, Draft, Input, Problems};

pub struct Direct;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DirectOrder {
    #[allow(dead_code)]
    schema: SchemaV1,
    #[serde(default)]
    #[allow(dead_code)]
    webhook_id: Option<IgnoredAny>,
    /// The hub derives it (`Order::event_key`); a sender echoing an order
    /// it received is not refused for it.
    #[serde(default)]
    #[allow(dead_code)]
    idempotency_key: Option<IgnoredAny>,
    event: Event,
    #[serde(default)]
    status: Option<Status>,
    #[serde(default)]
    #[allow(dead_code)]
    provider: Option<IgnoredAny>,
    provider_order_id: String,
    #[serde(default)]
    display_code: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    tenant: Option<IgnoredAny>,
    #[serde(default)]
    branch: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    placed_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    scheduled_for: Option<OffsetDateTime>,
    #[serde(default)]
    is_test: bool,
    #[serde(default)]
    currency: Option<Currency>,
    #[serde(default)]
    customer: Customer,
    #[serde(default)]
    fulfilment: Option<Fulfilment>,
    #[serde(default)]
    items: Vec<Item>,
    #[serde(default)]
    totals: Option<Totals>,
    #[serde(default)]
    payment: Option<Payment>,
    #[serde(default)]
    notes: Option<String>,
    #[serde(default)]
    allergy_notes: Option<String>,
    #[serde(default)]
    cutlery: Option<bool>,
    #[serde(default)]
    #[allow(dead_code)]
    raw: Option<IgnoredAny>,
}

impl Adapter for Direct {
    fn convert(&self, input: &Input<'_>, _: &mut Problems) -> Result<Draft, ConvertError> {
        let d: DirectOrder = input.parse()?;
        let mut order = input.order(d.event, d.provider_order_id);
        order.status = d.status;
        order.display_code = d.display_code;
        order.branch = d.branch;
        order.placed_at = d.placed_at;
        order.scheduled_for = d.scheduled_for;
        order.is_test = d.is_test;
        order.currency = d.currency;
        order.customer = d.customer;
        order.fulfilment = d.fulfilment;
        order.items = d.items;
        order.totals = d.totals;
        order.payment = d.payment;
        order.notes = d.notes;
        order.allergy_notes = d.allergy_notes;
        order.cutlery = d.cutlery;
        Ok(Draft::new(order))
    }
}
