//! DoorDash Marketplace: the Orders, Order Canceled and Dasher Status
//! webhooks, told apart by their body.
//!
//! - `{"event": {"type": "OrderCreate", ...}, "order": {...}}` [DOC] →
//!   `created`. The docs' sample orders are the bare `order` object; one
//!   (with `categories`, no `event`) is read the same way.
//! - Order Canceled, `{external_order_id, client_order_id, store
//!   {provider_type, merchant_supplied_id}, is_asap}` [DOC], flat as the
//!   docs show it, or inside the orders' envelope (`event.type` naming a
//!   cancel, the fields at the top or in `order`) → `cancelled`.
//!   `external_order_id` is "the unique UUID of the order sent to the
//!   Merchant from DoorDash" [DOC], the created order's `id`: it is the
//!   `provider_order_id`, so the cancellation names the same order.
//!   `client_order_id` is our own id echoed back (the `merchant_supplied_id`
//!   of the confirmation) and is not read. DoorDash gives no reason [DOC].
//! - Dasher Status, `{dasher_status, external_order_id, client_order_id,
//!   created_at}` [DOC] → `updated`: `dasher_confirmed` and
//!   `arriving_at_store` → `courier_assigned`, `arrived_at_store` →
//!   `courier_arrived`, `dasher_out_for_delivery` → `picked_up`, `dropoff`
//!   → `delivered`, anything else `other` (the value is `provider_status`).
//! - Any other `event.type` (`OrderAdjust`, the auto order release event,
//!   menu events) is not an order event this hub converts.
//!
//! Money: integer cents [DOC]; the payload names no currency, so the
//! account's `currency` applies (a problem without one). An item's `price`
//! is one unit without its options, an option's `price` is one of the
//! option, and its `quantity` is per one unit of its parent [DOC sample
//! arithmetic; GUESS for an option quantity above 1]. Options sit in
//! `extras[].options[]` and nest the same way below an option; one doc
//! sample spells the nested key `extra`, read as well. `subtotal` is used as
//! sent (the order check proves it is Σ lines). DoorDash sends NO grand
//! total [DOC]: it is computed, `subtotal + tax + taxes_on_fees +
//! delivery_fee + extra_cart_order_fee + tip_amount + merchant_tip_amount`
//! (US menus are tax-exclusive; `tax` is the order's tax plus
//! `taxes_on_fees`, whether or not `is_tax_remitted_by_doordash`). [GUESS]
//! that `tax` leaves the fees' tax out: the docs do not say, and if `tax`
//! already includes `taxes_on_fees` the computed total (and `tax`) are
//! overstated by `taxes_on_fees`. The payload carries no figure to check it
//! against; a real order with non-zero `taxes_on_fees` settles it. The
//! order was paid through DoorDash.
//!
//! Fulfilment: `is_pickup` (or `fulfillment_type` `pickup`) → pickup;
//! `fulfillment_type` `dx_delivery` (or none) → delivery by a Dasher,
//! `mx_delivery` → delivery by the restaurant [DOC]; another value is a
//! problem. `delivery_address` (its `lat`/`lng` are strings [DOC]) comes
//! with self-delivery orders; an object sent with any delivery is kept, a
//! placeholder string is not an address. `estimated_pickup_time` is `ready_by`. Every time
//! DoorDash sends carries its offset, so the store's legacy `timezone` name
//! (`US/Pacific`) is not needed and not read. `placed_at` is the event's
//! `event_time` where given, else the ingress's acceptance time.
//! `delivery_short_code` is the display code, `is_plastic_ware_option_selected`
//! the cutlery wish. The branch is `store.merchant_supplied_id`.

use canonical::order::{
    Courier, Event, Fulfilment, FulfilmentType, Item, OrderState, ProblemKind, Status, Totals,
};
use serde::Deserialize;
use serde::de::IgnoredAny;

use super::{Adapter, Coord, Id, address, coords, fee, nullable, paid_online};
use crate::convert::{
    self, ConvertError, Draft, Input, Problems, Quantity, excerpt, join, quantity, text,
};

pub struct DoorDash;

/// Which webhook a body is.
#[derive(Deserialize)]
struct Probe {
    #[serde(default)]
    event: Option<EventIn>,
    #[serde(default)]
    order: Option<IgnoredAny>,
    #[serde(default)]
    categories: Option<IgnoredAny>,
    #[serde(default)]
    external_order_id: Option<IgnoredAny>,
    #[serde(default)]
    dasher_status: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct EventIn {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    event_time: Option<String>,
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    event: Option<EventIn>,
    order: OrderIn,
}

#[derive(Deserialize)]
struct StoreIn {
    #[serde(default)]
    merchant_supplied_id: Option<Id>,
}

#[derive(Deserialize)]
struct OrderIn {
    id: Id,
    #[serde(default)]
    store: Option<StoreIn>,
    #[serde(default)]
    consumer: Option<ConsumerIn>,
    #[serde(default)]
    is_pickup: Option<bool>,
    #[serde(default)]
    fulfillment_type: Option<String>,
    #[serde(default)]
    estimated_pickup_time: Option<String>,
    #[serde(default)]
    order_special_instructions: Option<String>,
    #[serde(default)]
    is_plastic_ware_option_selected: Option<bool>,
    #[serde(default)]
    delivery_short_code: Option<String>,
    /// An object for self-delivery orders; other orders have none, or a
    /// placeholder string (`"REDACTED"` in an adjustment sample).
    #[serde(default)]
    delivery_address: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "nullable")]
    categories: Vec<CategoryIn>,
    subtotal: i64,
    #[serde(default)]
    tax: Option<i64>,
    #[serde(default)]
    taxes_on_fees: Option<i64>,
    #[serde(default)]
    delivery_fee: Option<i64>,
    #[serde(default)]
    extra_cart_order_fee: Option<i64>,
    #[serde(default)]
    tip_amount: Option<i64>,
    #[serde(default)]
    merchant_tip_amount: Option<i64>,
}

#[derive(Deserialize)]
struct ConsumerIn {
    #[serde(default)]
    first_name: Option<String>,
    #[serde(default)]
    last_name: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    phone: Option<String>,
}

#[derive(Deserialize)]
struct AddressIn {
    #[serde(default)]
    street: Option<String>,
    #[serde(default)]
    subpremise: Option<String>,
    #[serde(default)]
    city: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    zip_code: Option<String>,
    #[serde(default)]
    lat: Option<Coord>,
    #[serde(default)]
    lng: Option<Coord>,
    #[serde(default)]
    address_instructions: Option<String>,
}

#[derive(Deserialize)]
struct CategoryIn {
    #[serde(default, deserialize_with = "nullable")]
    items: Vec<ItemIn>,
}

#[derive(Deserialize)]
struct ItemIn {
    #[serde(default)]
    merchant_supplied_id: Option<Id>,
    name: String,
    #[serde(default)]
    quantity: Quantity,
    price: i64,
    #[serde(default)]
    special_instructions: Option<String>,
    #[serde(default, alias = "extra", deserialize_with = "nullable")]
    extras: Vec<ExtraIn>,
}

/// A group of options ("Choose Base").
#[derive(Deserialize)]
struct ExtraIn {
    #[serde(default, deserialize_with = "nullable")]
    options: Vec<OptionIn>,
}

#[derive(Deserialize)]
struct OptionIn {
    #[serde(default)]
    merchant_supplied_id: Option<Id>,
    name: String,
    #[serde(default)]
    quantity: Quantity,
    price: i64,
    #[serde(default, alias = "extra", deserialize_with = "nullable")]
    extras: Vec<ExtraIn>,
}

/// A cancellation or a Dasher status: what they read of the order.
#[derive(Deserialize)]
struct NoticeIn {
    #[serde(default)]
    external_order_id: Option<Id>,
    #[serde(default)]
    store: Option<StoreIn>,
    #[serde(default)]
    dasher_status: Option<String>,
    #[serde(default)]
    created_at: Option<String>,
}

/// A notice inside the orders' envelope, its fields in `order`.
#[derive(Deserialize)]
struct WrappedNotice {
    #[serde(default)]
    order: Option<NoticeIn>,
}

fn id_text(id: Option<&Id>) -> Option<String> {
    id.and_then(|i| text(Some(i.as_str())))
}

fn options(p: &mut Problems, path: &str, extras: &[ExtraIn]) -> Vec<Item> {
    extras
        .iter()
        .flat_map(|e| &e.options)
        .enumerate()
        .map(|(j, o)| {
            let path = format!("{path}.modifiers[{j}]");
            Item {
                provider_item_id: id_text(o.merchant_supplied_id.as_ref()),
                product_id: None,
                name: o.name.trim().to_owned(),
                quantity: quantity(p, &format!("{path}.quantity"), o.quantity),
                unit_price: o.price,
                total: 0,
                notes: None,
                modifiers: options(p, &path, &o.extras),
            }
        })
        .collect()
}

fn line(p: &mut Problems, path: &str, item: &ItemIn) -> Item {
    Item {
        provider_item_id: id_text(item.merchant_supplied_id.as_ref()),
        product_id: None,
        name: item.name.trim().to_owned(),
        quantity: quantity(p, &format!("{path}.quantity"), item.quantity),
        unit_price: item.price,
        total: 0,
        notes: text(item.special_instructions.as_deref()),
        modifiers: options(p, path, &item.extras),
    }
}

fn fulfilment(p: &mut Problems, o: &OrderIn) -> Fulfilment {
    let ready_by = text(o.estimated_pickup_time.as_deref())
        .and_then(|t| convert::rfc3339(p, "estimated_pickup_time", &t));
    let kind = text(o.fulfillment_type.as_deref()).map(|k| k.to_ascii_lowercase());
    let (kind, delivered_by) = match (o.is_pickup.unwrap_or(false), kind.as_deref()) {
        (true, _) | (false, Some("pickup")) => (FulfilmentType::Pickup, None),
        (false, None | Some("dx_delivery")) => (FulfilmentType::Delivery, Some(Courier::Platform)),
        (false, Some("mx_delivery")) => (FulfilmentType::Delivery, Some(Courier::Restaurant)),
        (false, Some(other)) => {
            p.push(
                "fulfillment_type",
                ProblemKind::OutOfRange,
                format!(
                    "unknown fulfilment type {:?} (dx_delivery, mx_delivery or is_pickup)",
                    excerpt(other)
                ),
            );
            (FulfilmentType::Delivery, None)
        }
    };
    let a = match &o.delivery_address {
        Some(v @ serde_json::Value::Object(_)) if kind == FulfilmentType::Delivery => {
            match AddressIn::deserialize(v) {
                Ok(a) => Some(a),
                Err(e) => {
                    p.push(
                        "delivery_address",
                        ProblemKind::Inconsistent,
                        shared::redact::truncate(&e.to_string(), shared::redact::LOG_VALUE_CHARS)
                            .into_owned(),
                    );
                    None
                }
            }
        }
        _ => None,
    };
    Fulfilment {
        kind,
        delivered_by,
        address: a.as_ref().and_then(|a| {
            let mut addr = address(
                [&a.street, &a.subpremise]
                    .into_iter()
                    .filter_map(|l| text(l.as_deref()))
                    .collect(),
                text(a.city.as_deref()),
                text(a.zip_code.as_deref()),
                coords(a.lat, a.lng),
            )?;
            addr.area = text(a.state.as_deref());
            Some(addr)
        }),
        instructions: a.and_then(|a| text(a.address_instructions.as_deref())),
        ready_by,
        table: None,
    }
}

fn created(input: &Input<'_>, p: &mut Problems, bare: bool) -> Result<Draft, ConvertError> {
    let (event, o) = if bare {
        (None, input.parse::<OrderIn>()?)
    } else {
        let e = input.parse::<Envelope>()?;
        (e.event, e.order)
    };
    let mut order = input.order(Event::Created, o.id.as_str().trim());
    order.placed_at = match event.and_then(|e| text(e.event_time.as_deref())) {
        Some(t) => convert::rfc3339(p, "event.event_time", &t),
        None => input.received_at,
    };
    order.display_code = text(o.delivery_short_code.as_deref());
    order.currency = input.account_currency(p);
    if let Some(c) = &o.consumer {
        order.customer.name = join([c.first_name.as_deref(), c.last_name.as_deref()], " ");
        order.customer.phone = text(c.phone.as_deref());
        order.customer.email = text(c.email.as_deref());
    }
    order.notes = text(o.order_special_instructions.as_deref());
    order.cutlery = o.is_plastic_ware_option_selected;
    order.fulfilment = Some(fulfilment(p, &o));

    order.items = o
        .categories
        .iter()
        .flat_map(|c| &c.items)
        .enumerate()
        .map(|(i, item)| line(p, &format!("items[{i}]"), item))
        .collect();
    convert::fill_totals(p, &mut order.items);

    let opt = |v: Option<i64>| v.unwrap_or(0);
    let fees: Vec<_> = fee("extra_cart_order_fee", opt(o.extra_cart_order_fee))
        .into_iter()
        .collect();
    let mut totals = Totals {
        subtotal: o.subtotal,
        delivery_fee: opt(o.delivery_fee),
        service_fee: fees.iter().map(|f| f.amount).sum(),
        tax: opt(o.tax).saturating_add(opt(o.taxes_on_fees)),
        discount: 0,
        tip: opt(o.tip_amount).saturating_add(opt(o.merchant_tip_amount)),
        total: 0,
        tax_inclusive: false,
        fees,
        discounts: Vec::new(),
    };
    totals.total = super::computed_total(p, "totals.total", &totals);
    order.totals = Some(totals);
    order.payment = Some(paid_online());

    let store = o
        .store
        .as_ref()
        .and_then(|s| id_text(s.merchant_supplied_id.as_ref()));
    Ok(Draft::new(order).store(store))
}

fn courier_state(status: &str) -> OrderState {
    match status.trim().to_ascii_lowercase().as_str() {
        "dasher_confirmed" | "arriving_at_store" => OrderState::CourierAssigned,
        "arrived_at_store" => OrderState::CourierArrived,
        "dasher_out_for_delivery" => OrderState::PickedUp,
        "dropoff" => OrderState::Delivered,
        _ => OrderState::Other,
    }
}

/// A cancellation (`dasher` false) or a Dasher status; `event` is the
/// envelope's type, when there is one.
fn notice(
    input: &Input<'_>,
    p: &mut Problems,
    event: Option<&str>,
    dasher: bool,
) -> Result<Draft, ConvertError> {
    let n = match input.parse::<WrappedNotice>()?.order {
        Some(inner) => inner,
        None => input.parse::<NoticeIn>()?,
    };
    let id = id_text(n.external_order_id.as_ref()).unwrap_or_default();
    if id.is_empty() {
        p.push(
            "provider_order_id",
            ProblemKind::Missing,
            "external_order_id, doordash's order id, is missing",
        );
    }
    let status = if dasher {
        let said = text(n.dasher_status.as_deref()).unwrap_or_default();
        if said.is_empty() {
            p.push(
                "dasher_status",
                ProblemKind::Missing,
                "a dasher status update needs dasher_status",
            );
        }
        Status {
            state: courier_state(&said),
            at: text(n.created_at.as_deref()).and_then(|t| convert::any_time(p, "created_at", &t)),
            provider_status: Some(said).filter(|s| !s.is_empty()),
            reason: None,
        }
    } else {
        Status {
            state: OrderState::Cancelled,
            provider_status: Some(event.unwrap_or("order_canceled").to_owned()),
            reason: None,
            at: None,
        }
    };
    let mut order = input.order(
        if dasher {
            Event::Updated
        } else {
            Event::Cancelled
        },
        id,
    );
    order.status = Some(status);
    let store = n
        .store
        .as_ref()
        .and_then(|s| id_text(s.merchant_supplied_id.as_ref()));
    Ok(Draft::new(order).store(store))
}

impl Adapter for DoorDash {
    fn convert(&self, input: &Input<'_>, p: &mut Problems) -> Result<Draft, ConvertError> {
        let probe: Probe = input.parse()?;
        let kind = probe.event.as_ref().and_then(|e| text(e.kind.as_deref()));
        match kind {
            Some(k) => {
                let word = k.to_ascii_lowercase().replace(['_', ' ', '-'], "");
                if word == "ordercreate" {
                    created(input, p, false)
                } else if word.contains("cancel") {
                    notice(input, p, Some(&k), false)
                } else if word.contains("dasher") {
                    notice(input, p, Some(&k), true)
                } else {
                    Err(ConvertError::UnsupportedEvent {
                        provider: input.provider,
                        event: excerpt(&k),
                    })
                }
            }
            None if probe.order.is_some() => created(input, p, false),
            None if probe.categories.is_some() => created(input, p, true),
            None if probe.dasher_status.is_some() => notice(input, p, None, true),
            None if probe.external_order_id.is_some() => notice(input, p, None, false),
            None => Err(ConvertError::Parse(
                "neither an order (`order`), a cancellation (`external_order_id`) nor a dasher status (`dasher_status`)".to_owned(),
            )),
        }
    }
}
