//! The Order Fulfillment API's order, `GET /v1/delivery/order/{id}
//! ?expand=carts,deliveries,payment`. No example body is public: this reads
//! the field list of a summary of Uber's OpenAPI file and two public
//! clients, and every reading marked [GUESS] is an assumption to verify
//! against a real answer.
//!
//! - Envelope: `{"order": {...}}` (the OpenAPI's Get Order response, per
//!   one client) or the order bare (per others); both are read, and problem
//!   paths name the field as the body has it (`order.carts`).
//! - Ids: `id`, `display_id`. The branch comes from
//!   `store.partner_identifiers[].value` in order (our ids for the store:
//!   `INTEGRATOR_STORE_ID`, `MERCHANT_STORE_ID`), else Uber's `store.id`.
//! - State: `state` (`CREATED`, `OFFERED`, `ACCEPTED`, `HANDED_OFF`,
//!   `SUCCEEDED`, `FAILED`) refined by `preparation_status` (`PREPARING`,
//!   `READY_FOR_HANDOFF`) and `failure_info.reason` (`POS_DENIED` is a
//!   rejection, the others a cancellation; it is the status's reason).
//!   `status` `SCHEDULED` (or the `orders.scheduled.notification` event)
//!   schedules the order for the start of
//!   `scheduled_order_target_delivery_time_range`.
//! - Money: every amount is `{amount_e5, currency_code, formatted}` with
//!   `amount_e5` the value × 100 000 (a JSON integer or an integer in a
//!   string), or a summary `{net, tax, gross, is_tax_inclusive}` of three
//!   of those. `amount_e5` becomes minor units exactly, in integers: one
//!   that is not a whole number of the currency's minor units (1.234 USD)
//!   is a problem at its path, never rounded. An absent `amount_e5` is 0
//!   (protobuf's JSON leaves zeros out) [GUESS]. The currency is
//!   `payment.payment_detail.currency_code`, else `order_total`'s; every
//!   code must agree.
//! - Tax: `order_total.is_tax_inclusive` (absent is false, protobuf again)
//!   decides which part of each summary is read: `gross` for a
//!   tax-inclusive order, `net` otherwise (each falling back to the other
//!   part and the `tax`); the order's `tax` is `order_total.tax` and its
//!   total `order_total.gross`, so a US order's lines carry menu prices and
//!   the tax is added once.
//! - Lines: `carts[].items[]`, modifiers in
//!   `selected_modifier_groups[].selected_items[]` (same shape, nested),
//!   `quantity.amount` (a modifier's per one unit of its parent [GUESS]).
//!   `external_data` (our POS id) is the item id, else Uber's `id`. Prices
//!   are not in the cart: `payment.payment_detail.item_charges
//!   .price_breakdown[]` has one entry per `cart_item_id`, whose `unit` is
//!   one unit of that line without its modifiers [GUESS]; a modifier
//!   without an entry is free, an item without one is a problem. The entries'
//!   `total` is not read (whether it includes the modifiers is not known):
//!   line totals are computed, and `item_charges.total` must equal their
//!   sum, which proves the reading on every order.
//!   `customer_request.special_instructions` and removed items ("No
//!   <title>") are the line's notes; `customer_request.allergy` (allergens
//!   and instructions) goes, per item, into the order's `allergy_notes`.
//! - Order amounts in `payment.payment_detail`: `fees.details[]` by their
//!   `id`/`type` (one naming delivery is the delivery fee, the rest fees;
//!   they must add up to `fees.total`, which is one fee when not
//!   detailed); `tips.total`; `promotions.total` is the discount (its size:
//!   the sign Uber writes is not known), itemised from `details[]` when
//!   each has a `discount_value` [GUESS] and then checked against the
//!   total; `adjustment.total` is a fee when positive and a discount when
//!   negative; `cash_amount_due` above 0 makes a cash order with that much
//!   due, otherwise Uber took the payment.
//! - Fulfilment by `fulfillment_type`: `DELIVERY_BY_UBER` (Uber's courier),
//!   `DELIVERY_BY_MERCHANT` (ours, to the first delivery's `location`, read
//!   like the legacy location `{street_address, unit_number, business_name,
//!   latitude, longitude}` [GUESS], with its `instructions` when they are
//!   text), `PICKUP`, `DINE_IN`; any case, and plain `delivery` with no
//!   courier named. `preparation_time.ready_for_pickup_time` is `ready_by`.
//!   `created_time` (RFC 3339 or unix seconds) is `placed_at`.
//! - Customer: the primary one of `customers[]` (else the first):
//!   `name.display_name` (else first and last name), `contact.phone.number`
//!   and its `pin_code` (the code for Uber's relay number).
//!   `carts[].include_single_use_items` says whether to add cutlery.
//! - A body fetched without `?expand=...` has no `carts` or `payment`: a
//!   created order then names the missing expansion.

use std::collections::BTreeMap;

use canonical::order::{Courier, Fulfilment, FulfilmentType, Order, OrderState, ProblemKind};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use self::e5::{MoneyIn, Reader, currency_code};
use self::lines::{Lines, totals};
use super::{Group, Location, Reported, courier_state, currency, state_of};
use crate::adapters::cash_if_due;
use crate::adapters::fetched::list;
use crate::convert::{self, ConvertError, Draft, Input, Problems, Quantity, excerpt, join, text};

mod e5;
mod lines;

#[derive(Deserialize)]
struct Wrapped<T> {
    order: T,
}

/// The order, wrapped in `{"order": ...}` or bare.
fn parse<T: DeserializeOwned>(input: &Input<'_>, wrapped: bool) -> Result<T, ConvertError> {
    if wrapped {
        Ok(input.parse::<Wrapped<T>>()?.order)
    } else {
        input.parse()
    }
}

/// What every event reads.
#[derive(Deserialize)]
struct Head {
    id: String,
    #[serde(default)]
    display_id: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    preparation_status: Option<String>,
    #[serde(default)]
    store: Option<Store>,
    #[serde(default, deserialize_with = "list")]
    deliveries: Vec<DeliveryState>,
    #[serde(default)]
    failure_info: Option<FailureInfo>,
}

#[derive(Deserialize)]
struct Store {
    #[serde(default)]
    id: Option<String>,
    #[serde(default, deserialize_with = "list")]
    partner_identifiers: Vec<PartnerId>,
}

#[derive(Deserialize)]
struct PartnerId {
    #[serde(default)]
    value: Option<String>,
}

#[derive(Deserialize)]
struct DeliveryState {
    #[serde(default)]
    status: Option<String>,
}

#[derive(Deserialize)]
struct FailureInfo {
    #[serde(default)]
    reason: Option<String>,
}

/// The order's content, for created orders and content changes.
#[derive(Deserialize)]
struct Content {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    fulfillment_type: Option<String>,
    #[serde(default)]
    created_time: Option<Value>,
    #[serde(default)]
    scheduled_order_target_delivery_time_range: Option<Range>,
    #[serde(default)]
    preparation_time: Option<Preparation>,
    #[serde(default, deserialize_with = "list")]
    customers: Vec<Customer>,
    #[serde(default, deserialize_with = "list")]
    deliveries: Vec<DeliveryIn>,
    #[serde(default)]
    carts: Option<Vec<Cart>>,
    #[serde(default)]
    payment: Option<PaymentIn>,
}

#[derive(Deserialize)]
struct Range {
    #[serde(default)]
    start_time: Option<String>,
}

#[derive(Deserialize)]
struct Preparation {
    #[serde(default)]
    ready_for_pickup_time: Option<String>,
}

#[derive(Deserialize)]
struct Customer {
    #[serde(default)]
    is_primary_customer: Option<bool>,
    #[serde(default)]
    name: Option<Name>,
    #[serde(default)]
    contact: Option<Contact>,
}

#[derive(Deserialize)]
struct Name {
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    first_name: Option<String>,
    #[serde(default)]
    last_name: Option<String>,
}

#[derive(Deserialize)]
struct Contact {
    #[serde(default)]
    phone: Option<Phone>,
}

#[derive(Deserialize)]
struct Phone {
    #[serde(default)]
    number: Option<String>,
    #[serde(default)]
    pin_code: Option<String>,
}

#[derive(Deserialize)]
struct DeliveryIn {
    #[serde(default)]
    location: Option<Location>,
    #[serde(default)]
    instructions: Option<Value>,
}

#[derive(Deserialize)]
struct Cart {
    #[serde(default, deserialize_with = "list")]
    items: Vec<ItemIn>,
    #[serde(default)]
    special_instructions: Option<String>,
    #[serde(default)]
    include_single_use_items: Option<bool>,
}

#[derive(Deserialize)]
struct ItemIn {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    cart_item_id: Option<String>,
    title: String,
    #[serde(default)]
    external_data: Option<String>,
    #[serde(default)]
    quantity: Option<QuantityIn>,
    #[serde(default)]
    customer_request: Option<Request>,
    #[serde(default, deserialize_with = "list")]
    selected_modifier_groups: Vec<Group<ItemIn>>,
}

#[derive(Deserialize)]
struct QuantityIn {
    #[serde(default)]
    amount: Option<Quantity>,
}

#[derive(Deserialize)]
struct Request {
    #[serde(default)]
    special_instructions: Option<String>,
    #[serde(default)]
    allergy: Option<Allergy>,
}

#[derive(Deserialize)]
struct Allergy {
    /// Strings, or objects naming one (`type`, `name`): the shape is not
    /// known, so neither is refused.
    #[serde(default, deserialize_with = "list")]
    allergens: Vec<Value>,
    #[serde(default)]
    instructions: Option<String>,
}

#[derive(Deserialize)]
struct PaymentIn {
    #[serde(default)]
    payment_detail: Option<Detail>,
}

#[derive(Deserialize)]
struct Detail {
    #[serde(default)]
    currency_code: Option<String>,
    #[serde(default)]
    order_total: Option<MoneyIn>,
    #[serde(default)]
    item_charges: Option<ItemCharges>,
    #[serde(default)]
    fees: Option<Fees>,
    #[serde(default)]
    tips: Option<Total>,
    #[serde(default)]
    promotions: Option<Promotions>,
    #[serde(default)]
    adjustment: Option<Total>,
    #[serde(default)]
    cash_amount_due: Option<MoneyIn>,
}

#[derive(Deserialize)]
struct ItemCharges {
    #[serde(default)]
    total: Option<MoneyIn>,
    #[serde(default, deserialize_with = "list")]
    price_breakdown: Vec<Breakdown>,
}

#[derive(Deserialize)]
struct Breakdown {
    #[serde(default)]
    cart_item_id: Option<String>,
    #[serde(default)]
    unit: Option<MoneyIn>,
}

#[derive(Deserialize)]
struct Fees {
    #[serde(default)]
    total: Option<MoneyIn>,
    #[serde(default, deserialize_with = "list")]
    details: Vec<FeeDetail>,
}

#[derive(Deserialize)]
struct FeeDetail {
    #[serde(default)]
    id: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    amount: Option<MoneyIn>,
}

#[derive(Deserialize)]
struct Total {
    #[serde(default)]
    total: Option<MoneyIn>,
}

#[derive(Deserialize)]
struct Promotions {
    #[serde(default)]
    total: Option<MoneyIn>,
    #[serde(default, deserialize_with = "list")]
    details: Vec<Promotion>,
}

#[derive(Deserialize)]
struct Promotion {
    #[serde(default)]
    external_promotion_id: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    discount_value: Option<MoneyIn>,
}

pub(super) fn convert(
    input: &Input<'_>,
    p: &mut Problems,
    wrapped: bool,
) -> Result<Draft, ConvertError> {
    let root = if wrapped { "order." } else { "" };
    let head: Head = parse(input, wrapped)?;
    let reason = head
        .failure_info
        .as_ref()
        .and_then(|f| text(f.reason.as_deref()));
    let preparation = head
        .preparation_status
        .as_deref()
        .map(|s| s.trim().to_ascii_uppercase());
    let state = text(head.state.as_deref()).map(|s| {
        let state = match (state_of(&s), preparation.as_deref(), reason.as_deref()) {
            (OrderState::Cancelled, _, Some(r)) if r.eq_ignore_ascii_case("POS_DENIED") => {
                OrderState::Rejected
            }
            (OrderState::Accepted, Some("READY_FOR_HANDOFF"), _) => OrderState::Ready,
            (OrderState::Accepted, Some("PREPARING"), _) => OrderState::Preparing,
            (state, _, _) => state,
        };
        (state, s)
    });
    let reported = Reported {
        state,
        state_path: format!("{root}state"),
        courier: head
            .deliveries
            .first()
            .and_then(|d| text(d.status.as_deref()))
            .map(|s| (courier_state(&s), s)),
        reason,
    };
    let (mut order, content) =
        super::order(input, p, &head.id, head.display_id.as_deref(), reported)?;
    if let Some(scheduled) = content {
        let c: Content = parse(input, wrapped)?;
        fill(input, p, root, &mut order, &c, scheduled);
    }
    let mut draft = Draft::new(order);
    if let Some(s) = &head.store {
        for id in &s.partner_identifiers {
            draft = draft.store(id.value.as_deref());
        }
        draft = draft.store(s.id.as_deref());
    }
    Ok(draft)
}

fn fill(
    input: &Input<'_>,
    p: &mut Problems,
    root: &str,
    order: &mut Order,
    c: &Content,
    scheduled: bool,
) {
    order.placed_at = match &c.created_time {
        None | Some(Value::Null) => input.received_at,
        Some(Value::String(t)) => convert::any_time(p, &format!("{root}created_time"), t),
        Some(Value::Number(n)) => {
            convert::unix_seconds(p, &format!("{root}created_time"), &n.to_string())
        }
        Some(_) => {
            p.push(
                format!("{root}created_time"),
                ProblemKind::Inconsistent,
                "is neither an RFC 3339 time nor unix seconds",
            );
            None
        }
    };
    let is_scheduled = scheduled
        || c.status
            .as_deref()
            .is_some_and(|s| s.trim().eq_ignore_ascii_case("SCHEDULED"));
    if is_scheduled {
        order.scheduled_for = c
            .scheduled_order_target_delivery_time_range
            .as_ref()
            .and_then(|r| text(r.start_time.as_deref()))
            .and_then(|t| {
                convert::rfc3339(
                    p,
                    &format!("{root}scheduled_order_target_delivery_time_range.start_time"),
                    &t,
                )
            });
    }

    let customer = c
        .customers
        .iter()
        .find(|x| x.is_primary_customer == Some(true))
        .or(c.customers.first());
    if let Some(x) = customer {
        order.customer.name = x.name.as_ref().and_then(|n| {
            text(n.display_name.as_deref())
                .or_else(|| join([n.first_name.as_deref(), n.last_name.as_deref()], " "))
        });
        let phone = x.contact.as_ref().and_then(|k| k.phone.as_ref());
        order.customer.phone = phone.and_then(|ph| text(ph.number.as_deref()));
        order.customer.phone_access_code = phone.and_then(|ph| text(ph.pin_code.as_deref()));
    }
    order.fulfilment = Some(fulfilment(p, root, c));

    let Some(carts) = &c.carts else {
        p.push(
            format!("{root}carts"),
            ProblemKind::Missing,
            "is absent: the order must be fetched with ?expand=carts,deliveries,payment",
        );
        return;
    };
    order.notes = join(
        carts.iter().map(|k| k.special_instructions.as_deref()),
        "; ",
    );
    let cutlery: Vec<bool> = carts
        .iter()
        .filter_map(|k| k.include_single_use_items)
        .collect();
    order.cutlery = (!cutlery.is_empty()).then(|| cutlery.iter().any(|&x| x));

    let Some(d) = c.payment.as_ref().and_then(|x| x.payment_detail.as_ref()) else {
        let (path, message) = match &c.payment {
            None => (
                format!("{root}payment"),
                "is absent: the order must be fetched with ?expand=carts,deliveries,payment",
            ),
            Some(_) => (
                format!("{root}payment.payment_detail"),
                "is required for an order's amounts",
            ),
        };
        p.push(path, ProblemKind::Missing, message);
        return;
    };
    let detail = format!("{root}payment.payment_detail");
    let currency = currency(p, &format!("{detail}.currency_code"), currency_code(d));
    order.currency = currency;
    let inclusive = d
        .order_total
        .as_ref()
        .and_then(|t| t.is_tax_inclusive)
        .unwrap_or(false);
    let r = Reader {
        currency,
        inclusive,
    };

    let prices: BTreeMap<&str, &Breakdown> = d
        .item_charges
        .iter()
        .flat_map(|ic| ic.price_breakdown.iter())
        .filter_map(|b| Some((b.cart_item_id.as_deref()?.trim(), b)))
        .rev() // the first entry of an id wins
        .collect();
    let lines = Lines {
        r: &r,
        prices: &prices,
        breakdown: format!("{detail}.item_charges.price_breakdown"),
    };
    let mut allergies = Vec::new();
    order.items = carts
        .iter()
        .flat_map(|k| &k.items)
        .enumerate()
        .map(|(i, item)| lines.line(p, &format!("items[{i}]"), item, true, &mut allergies))
        .collect();
    convert::fill_totals(p, &mut order.items);
    order.allergy_notes = join(allergies.iter().map(|a| Some(a.as_str())), "; ");

    order.totals = Some(totals(p, &detail, &r, d, &order.items));
    let due = d
        .cash_amount_due
        .as_ref()
        .map_or(0, |m| r.gross(p, &format!("{detail}.cash_amount_due"), m));
    order.payment = Some(cash_if_due(due));
}

fn fulfilment(p: &mut Problems, root: &str, c: &Content) -> Fulfilment {
    let ready_by = c
        .preparation_time
        .as_ref()
        .and_then(|x| text(x.ready_for_pickup_time.as_deref()))
        .and_then(|t| {
            convert::rfc3339(
                p,
                &format!("{root}preparation_time.ready_for_pickup_time"),
                &t,
            )
        });
    let kind = c
        .fulfillment_type
        .as_deref()
        .map(|k| k.trim().to_ascii_uppercase());
    let (kind, delivered_by) = match kind.as_deref() {
        None | Some("DELIVERY_BY_UBER") => (FulfilmentType::Delivery, Some(Courier::Platform)),
        Some("DELIVERY_BY_MERCHANT" | "DELIVERY_BY_RESTAURANT") => {
            (FulfilmentType::Delivery, Some(Courier::Restaurant))
        }
        Some("DELIVERY") => (FulfilmentType::Delivery, None),
        Some("PICKUP" | "PICK_UP") => (FulfilmentType::Pickup, None),
        Some("DINE_IN") => (FulfilmentType::DineIn, None),
        Some(other) => {
            p.push(
                format!("{root}fulfillment_type"),
                ProblemKind::OutOfRange,
                format!("unknown fulfilment type {:?}", excerpt(other)),
            );
            (FulfilmentType::Delivery, None)
        }
    };
    let delivery = c
        .deliveries
        .first()
        .filter(|_| kind == FulfilmentType::Delivery);
    Fulfilment {
        kind,
        delivered_by,
        address: delivery.and_then(|d| d.location.as_ref()?.address()),
        instructions: delivery
            .and_then(|d| d.instructions.as_ref())
            .and_then(|v| text(v.as_str())),
        ready_by,
        table: None,
    }
}
