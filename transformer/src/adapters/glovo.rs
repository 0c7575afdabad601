//! Glovo (restaurant Partners API): the "order dispatched" and "order
//! cancelled" webhooks, which Glovo sends to separate URLs [CODE×2] and the
//! hub tells apart by their body: a body with `cancel_reason` and no
//! `products` is a cancellation.
//!
//! - Order dispatched (a new order, the whole order) → `created`.
//! - Order cancelled, `{order_id, store_id, cancel_reason,
//!   payment_strategy}` [SDK examples] → `cancelled` of the same order
//!   (`order_id`); `cancel_reason` is `provider_status` and, in words, the
//!   reason, with what Glovo pays the restaurant (`PAY_NOTHING`,
//!   `PAY_PRODUCTS`).
//!
//! Times: `order_time` and `estimated_pickup_time` are the store's local
//! time, `"YYYY-MM-DD HH:MM:SS"` without a zone, and `utc_offset_minutes`
//! (a string, `"120"`, `"-300"`) is the store's offset from UTC [SDK]:
//! `"2024-06-14 17:42:10"` at `"-300"` is `2024-06-14T17:42:10-05:00`, the
//! instant 22:42:10 UTC, kept with the provider's offset the way other
//! providers' times keep theirs. An offset that is not a whole number of
//! minutes within ±18 hours, or none beside a local time, is a problem.
//!
//! Money: integer cents [SDK]; `currency` from the payload, else the
//! account's. A product's `price` is one unit without its attributes; an
//! attribute's `price` is one of it and its `quantity` is per one unit of
//! the product; `sub_products` (combo parts) are read like products, as
//! modifiers per one unit of their parent [GUESS]. A product's own
//! `discount` repeats what the order-level fields say and is not read.
//! `estimated_total_price` is the subtotal (Σ lines, which the order check
//! proves). Discounts, by who funds them: `partner_discounts_products`
//! (the restaurant) and `glovo_discounts_products` (Glovo); each of
//! `partner_discounted_products_total` (subtotal − partner discount) and
//! `discounted_products_total` (subtotal − both), when sent, must agree.
//! Fees: `delivery_fee`, and `minimum_basket_surcharge` and `service_fee`
//! as fees. `total_customer_to_pay` is the total; "normal" (non-marketplace)
//! partners get `null` for it and for the delivery fee and address [SDK],
//! and their total is computed from what is sent. Prices include VAT (EU
//! menus): `tax` 0, `tax_inclusive`.
//!
//! Payment: `CASH` is cash, `amount_due` the total, and
//! `customer_cash_payment_amount`, when at least the total, the note the
//! customer pays with (`change_for`) [GUESS]; `DELAYED` (and anything else)
//! was paid through Glovo.
//!
//! Fulfilment: `is_picked_up_by_customer` → pickup; otherwise a marketplace
//! order (one with a `delivery_address` or a `total_customer_to_pay`) is
//! delivered by the restaurant, at that address; else Glovo's courier
//! delivers [SDK]. `estimated_pickup_time` is `ready_by`. `"N/A"` is a
//! hidden phone: none. `special_requirements` are the notes,
//! `allergy_info` the allergy notes, `order_code` the display code. The
//! branch and the store id Glovo's calls name are `store_id`.

use canonical::order::{
    Courier, Event, Fulfilment, FulfilmentType, Funder, Item, OrderState, Payment, PaymentMethod,
    ProblemKind, Status, Totals,
};
use serde::Deserialize;
use serde::de::IgnoredAny;
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

use super::{Adapter, Coord, Id, coords, discount, fee, nullable, paid_online};
use crate::convert::{
    self, AnswerHints, ConvertError, Draft, Input, Problems, Quantity, excerpt, join, quantity,
    text,
};

pub struct Glovo;

/// The largest offset accepted, in minutes (UTC−12 … UTC+14 are in use).
const MAX_OFFSET_MINUTES: i32 = 18 * 60;

#[derive(Deserialize)]
struct Probe {
    #[serde(default)]
    products: Option<IgnoredAny>,
    #[serde(default)]
    cancel_reason: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct OrderIn {
    order_id: Id,
    #[serde(default)]
    store_id: Option<Id>,
    #[serde(default)]
    order_time: Option<String>,
    #[serde(default)]
    estimated_pickup_time: Option<String>,
    #[serde(default)]
    utc_offset_minutes: Option<Id>,
    #[serde(default)]
    payment_method: Option<String>,
    #[serde(default)]
    currency: Option<String>,
    #[serde(default)]
    order_code: Option<String>,
    #[serde(default)]
    allergy_info: Option<String>,
    #[serde(default)]
    special_requirements: Option<String>,
    estimated_total_price: i64,
    #[serde(default)]
    delivery_fee: Option<i64>,
    #[serde(default)]
    minimum_basket_surcharge: Option<i64>,
    #[serde(default)]
    customer_cash_payment_amount: Option<i64>,
    #[serde(default)]
    customer: Option<CustomerIn>,
    products: Vec<ProductIn>,
    #[serde(default)]
    delivery_address: Option<AddressIn>,
    #[serde(default)]
    is_picked_up_by_customer: Option<bool>,
    #[serde(default)]
    cutlery_requested: Option<bool>,
    #[serde(default)]
    partner_discounts_products: Option<i64>,
    #[serde(default)]
    glovo_discounts_products: Option<i64>,
    #[serde(default)]
    partner_discounted_products_total: Option<i64>,
    #[serde(default)]
    discounted_products_total: Option<i64>,
    #[serde(default)]
    service_fee: Option<i64>,
    #[serde(default)]
    total_customer_to_pay: Option<i64>,
}

#[derive(Deserialize)]
struct CustomerIn {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    phone_number: Option<String>,
}

#[derive(Deserialize)]
struct ProductIn {
    #[serde(default)]
    id: Option<Id>,
    name: String,
    price: i64,
    #[serde(default)]
    quantity: Quantity,
    #[serde(default, deserialize_with = "nullable")]
    attributes: Vec<AttributeIn>,
    #[serde(default, deserialize_with = "nullable")]
    sub_products: Vec<ProductIn>,
}

#[derive(Deserialize)]
struct AttributeIn {
    #[serde(default)]
    id: Option<Id>,
    name: String,
    price: i64,
    #[serde(default)]
    quantity: Quantity,
}

#[derive(Deserialize)]
struct AddressIn {
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    latitude: Option<Coord>,
    #[serde(default)]
    longitude: Option<Coord>,
    #[serde(default)]
    street_name: Option<String>,
    #[serde(default)]
    street_number: Option<String>,
    #[serde(default)]
    province: Option<String>,
    #[serde(default)]
    postal_code: Option<String>,
    #[serde(default)]
    floor_number: Option<String>,
    #[serde(default)]
    door_number: Option<String>,
    #[serde(default)]
    building_name: Option<String>,
    #[serde(default)]
    additional_information: Option<String>,
}

#[derive(Deserialize)]
struct CancelIn {
    order_id: Id,
    #[serde(default)]
    store_id: Option<Id>,
    #[serde(default)]
    cancel_reason: Option<String>,
    #[serde(default)]
    payment_strategy: Option<String>,
}

fn id_text(id: Option<&Id>) -> Option<String> {
    id.and_then(|i| text(Some(i.as_str())))
}

/// The store's UTC offset from `utc_offset_minutes`; a problem when it is
/// not whole minutes within ±18 hours.
fn offset(p: &mut Problems, minutes: &Id) -> Option<UtcOffset> {
    let parsed = minutes
        .as_str()
        .trim()
        .parse::<i32>()
        .ok()
        .filter(|m| m.abs() <= MAX_OFFSET_MINUTES)
        .and_then(|m| UtcOffset::from_whole_seconds(m * 60).ok());
    if parsed.is_none() {
        p.push(
            "utc_offset_minutes",
            ProblemKind::OutOfRange,
            format!(
                "{:?} is not an offset in whole minutes within ±{MAX_OFFSET_MINUTES}",
                excerpt(minutes.as_str())
            ),
        );
    }
    parsed
}

/// A local `"YYYY-MM-DD HH:MM:SS"` at the store's offset (an RFC 3339 time
/// is taken as it is); a problem at `path` otherwise.
fn local_time(
    p: &mut Problems,
    path: &str,
    value: &str,
    offset: Option<UtcOffset>,
) -> Option<OffsetDateTime> {
    let v = value.trim();
    if let Ok(t) = OffsetDateTime::parse(v, &Rfc3339) {
        return Some(t);
    }
    let naive = time::format_description::parse_borrowed::<2>(
        "[year]-[month]-[day] [hour]:[minute]:[second]",
    )
    .expect("valid format description");
    match PrimitiveDateTime::parse(v, &naive) {
        // Without an offset the problem is already reported.
        Ok(t) => offset.map(|o| t.assume_offset(o)),
        Err(_) => {
            p.push(
                path,
                ProblemKind::Inconsistent,
                format!(
                    "{:?} is not a local time \"YYYY-MM-DD HH:MM:SS\"",
                    excerpt(value)
                ),
            );
            None
        }
    }
}

fn attribute(p: &mut Problems, path: &str, a: &AttributeIn) -> Item {
    Item {
        provider_item_id: id_text(a.id.as_ref()),
        product_id: None,
        name: a.name.trim().to_owned(),
        quantity: quantity(p, &format!("{path}.quantity"), a.quantity),
        unit_price: a.price,
        total: 0,
        notes: None,
        modifiers: Vec::new(),
    }
}

fn product(p: &mut Problems, path: &str, pr: &ProductIn) -> Item {
    let attributes = pr
        .attributes
        .iter()
        .enumerate()
        .map(|(j, a)| attribute(p, &format!("{path}.modifiers[{j}]"), a))
        .collect::<Vec<_>>();
    let n = attributes.len();
    let subs = pr
        .sub_products
        .iter()
        .enumerate()
        .map(|(k, s)| product(p, &format!("{path}.modifiers[{}]", n + k), s))
        .collect::<Vec<_>>();
    Item {
        provider_item_id: id_text(pr.id.as_ref()),
        product_id: None,
        name: pr.name.trim().to_owned(),
        quantity: quantity(p, &format!("{path}.quantity"), pr.quantity),
        unit_price: pr.price,
        total: 0,
        notes: None,
        modifiers: attributes.into_iter().chain(subs).collect(),
    }
}

fn fulfilment(o: &OrderIn, ready_by: Option<OffsetDateTime>) -> Fulfilment {
    let marketplace = o.delivery_address.is_some() || o.total_customer_to_pay.is_some();
    if o.is_picked_up_by_customer.unwrap_or(false) {
        return Fulfilment {
            kind: FulfilmentType::Pickup,
            delivered_by: None,
            address: None,
            instructions: None,
            ready_by,
            table: None,
        };
    }
    let a = o.delivery_address.as_ref();
    let address = a.and_then(|a| {
        let street = join([a.street_name.as_deref(), a.street_number.as_deref()], " ");
        let floor = text(a.floor_number.as_deref()).map(|f| format!("Floor {f}"));
        let door = text(a.door_number.as_deref()).map(|d| format!("Door {d}"));
        let mut lines: Vec<String> = [
            text(a.building_name.as_deref()),
            street,
            join([floor.as_deref(), door.as_deref()], ", "),
        ]
        .into_iter()
        .flatten()
        .collect();
        if lines.is_empty() {
            lines.extend(text(a.label.as_deref()));
        }
        super::address(
            lines,
            text(a.province.as_deref()),
            text(a.postal_code.as_deref()),
            coords(a.latitude, a.longitude),
        )
    });
    Fulfilment {
        kind: FulfilmentType::Delivery,
        delivered_by: Some(if marketplace {
            Courier::Restaurant
        } else {
            Courier::Platform
        }),
        address,
        instructions: a.and_then(|a| text(a.additional_information.as_deref())),
        ready_by,
        table: None,
    }
}

/// A stated figure must equal what the others give.
fn agree(p: &mut Problems, path: &str, stated: Option<i64>, expected: i64, how: &str) {
    if let Some(s) = stated
        && s != expected
    {
        p.push(
            path,
            ProblemKind::Mismatch,
            format!("expected {expected} = {how}, got {s}"),
        );
    }
}

fn totals(p: &mut Problems, o: &OrderIn) -> Totals {
    let opt = |v: Option<i64>| v.unwrap_or(0);
    let subtotal = o.estimated_total_price;
    let partner = opt(o.partner_discounts_products);
    let glovo = opt(o.glovo_discounts_products);
    agree(
        p,
        "partner_discounted_products_total",
        o.partner_discounted_products_total,
        subtotal.saturating_sub(partner),
        "estimated_total_price - partner_discounts_products",
    );
    agree(
        p,
        "discounted_products_total",
        o.discounted_products_total,
        subtotal.saturating_sub(partner).saturating_sub(glovo),
        "estimated_total_price - partner_discounts_products - glovo_discounts_products",
    );
    let fees: Vec<_> = [
        fee("minimum_basket_surcharge", opt(o.minimum_basket_surcharge)),
        fee("service_fee", opt(o.service_fee)),
    ]
    .into_iter()
    .flatten()
    .collect();
    let discounts: Vec<_> = [
        discount(
            "partner_discounts_products",
            partner,
            Some(Funder::Merchant),
        ),
        discount("glovo_discounts_products", glovo, Some(Funder::Platform)),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut totals = Totals {
        subtotal,
        delivery_fee: opt(o.delivery_fee),
        service_fee: fees.iter().map(|f| f.amount).sum(),
        tax: 0,
        discount: discounts.iter().map(|d| d.amount).sum(),
        tip: 0,
        total: 0,
        tax_inclusive: true,
        fees,
        discounts,
    };
    totals.total = match o.total_customer_to_pay {
        Some(t) => t,
        None => super::computed_total(p, "totals.total", &totals),
    };
    totals
}

fn created(input: &Input<'_>, p: &mut Problems) -> Result<Draft, ConvertError> {
    let o: OrderIn = input.parse()?;
    let mut order = input.order(Event::Created, o.order_id.as_str().trim());
    let local = [
        ("order_time", o.order_time.as_deref()),
        ("estimated_pickup_time", o.estimated_pickup_time.as_deref()),
    ];
    let offset = match &o.utc_offset_minutes {
        Some(m) => offset(p, m),
        None => {
            if local.iter().any(|(_, t)| text(*t).is_some()) {
                p.push(
                    "utc_offset_minutes",
                    ProblemKind::Missing,
                    "the local times need the store's offset from utc",
                );
            }
            None
        }
    };
    let [placed, ready] =
        local.map(|(path, t)| text(t).and_then(|t| local_time(p, path, &t, offset)));
    order.placed_at = match (&o.order_time, placed) {
        (_, Some(t)) => Some(t),
        (None, None) => input.received_at,
        (Some(_), None) => None,
    };
    order.display_code = text(o.order_code.as_deref());
    order.currency = match text(o.currency.as_deref()) {
        Some(code) => convert::currency(p, "currency", &code),
        None => input.account_currency(p),
    };
    if let Some(c) = &o.customer {
        order.customer.name = text(c.name.as_deref());
        order.customer.phone =
            text(c.phone_number.as_deref()).filter(|ph| !ph.eq_ignore_ascii_case("N/A"));
    }
    order.notes = text(o.special_requirements.as_deref());
    order.allergy_notes = text(o.allergy_info.as_deref());
    order.cutlery = o.cutlery_requested;
    order.fulfilment = Some(fulfilment(&o, ready));

    order.items = o
        .products
        .iter()
        .enumerate()
        .map(|(i, pr)| product(p, &format!("items[{i}]"), pr))
        .collect();
    convert::fill_totals(p, &mut order.items);
    let totals = totals(p, &o);
    let cash = o
        .payment_method
        .as_deref()
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("CASH"));
    order.payment = Some(if cash {
        Payment {
            method: PaymentMethod::Cash,
            paid: false,
            amount_due: totals.total,
            change_for: o
                .customer_cash_payment_amount
                .filter(|&note| note >= totals.total && note > 0),
        }
    } else {
        paid_online()
    });
    order.totals = Some(totals);

    let store = id_text(o.store_id.as_ref());
    let mut draft = Draft::new(order).store(store.clone());
    draft.answer = AnswerHints {
        store_id: store,
        ..AnswerHints::default()
    };
    Ok(draft)
}

/// `cancel_reason` in words [SDK enum]; an unknown one verbatim.
fn reason_text(code: &str) -> String {
    match code.trim().to_ascii_uppercase().as_str() {
        "PRODUCTS_NOT_AVAILABLE" => "products not available".to_owned(),
        "STORE_CAN_NOT_DELIVER" => "the store cannot deliver".to_owned(),
        "PARTNER_PRINTER_ISSUE" => "the partner's printer failed".to_owned(),
        "USER_ERROR" => "customer error".to_owned(),
        "STORE_ERROR" => "store error".to_owned(),
        "ORDER_NOT_FEASIBLE" => "order not feasible".to_owned(),
        "OTHER" => "other".to_owned(),
        _ => code.trim().to_owned(),
    }
}

fn cancelled(input: &Input<'_>, p: &mut Problems) -> Result<Draft, ConvertError> {
    let c: CancelIn = input.parse()?;
    let code = text(c.cancel_reason.as_deref());
    let pays = text(c.payment_strategy.as_deref()).map(|s| match s.to_ascii_uppercase().as_str() {
        "PAY_NOTHING" => "glovo pays nothing".to_owned(),
        "PAY_PRODUCTS" => "glovo pays the products".to_owned(),
        _ => format!("payment {}", excerpt(&s)),
    });
    let reason = join(
        [code.as_deref().map(reason_text).as_deref(), pays.as_deref()],
        "; ",
    );
    let id = c.order_id.as_str().trim().to_owned();
    if id.is_empty() {
        p.push(
            "provider_order_id",
            ProblemKind::Missing,
            "order_id, glovo's order id, is blank",
        );
    }
    let mut order = input.order(Event::Cancelled, id);
    order.status = Some(Status {
        state: OrderState::Cancelled,
        provider_status: code,
        reason,
        at: None,
    });
    let store = id_text(c.store_id.as_ref());
    let mut draft = Draft::new(order).store(store.clone());
    draft.answer.store_id = store;
    Ok(draft)
}

impl Adapter for Glovo {
    fn convert(&self, input: &Input<'_>, p: &mut Problems) -> Result<Draft, ConvertError> {
        let probe: Probe = input.parse()?;
        if probe.cancel_reason.is_some() && probe.products.is_none() {
            cancelled(input, p)
        } else {
            created(input, p)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems_text(p: &Problems) -> Vec<String> {
        p.errors().iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn a_local_time_lands_at_its_offset() {
        let mut p = Problems::default();
        let o = offset(&mut p, &Id("-300".into()));
        let t = local_time(&mut p, "order_time", "2024-06-14 17:42:10", o).unwrap();
        assert!(p.is_empty());
        assert_eq!(t.format(&Rfc3339).unwrap(), "2024-06-14T17:42:10-05:00");
        assert_eq!(
            t.to_offset(UtcOffset::UTC).format(&Rfc3339).unwrap(),
            "2024-06-14T22:42:10Z"
        );
        let o = offset(&mut p, &Id("330".into()));
        let t = local_time(&mut p, "order_time", "2024-06-14 00:10:00", o).unwrap();
        assert_eq!(t.format(&Rfc3339).unwrap(), "2024-06-14T00:10:00+05:30");
        assert!(p.is_empty());
    }

    #[test]
    fn a_bad_offset_or_local_time_is_a_problem() {
        let mut p = Problems::default();
        assert_eq!(offset(&mut p, &Id("1200".into())), None);
        assert_eq!(offset(&mut p, &Id("+2h".into())), None);
        assert_eq!(
            local_time(&mut p, "order_time", "14/06/2024 17:42", None),
            None
        );
        assert_eq!(
            problems_text(&p),
            [
                "utc_offset_minutes: \"1200\" is not an offset in whole minutes within ±1080",
                "utc_offset_minutes: \"+2h\" is not an offset in whole minutes within ±1080",
                "order_time: \"14/06/2024 17:42\" is not a local time \"YYYY-MM-DD HH:MM:SS\"",
            ]
        );
    }

    #[test]
    fn cancel_reasons_read_in_words() {
        assert_eq!(
            reason_text("PRODUCTS_NOT_AVAILABLE"),
            "products not available"
        );
        assert_eq!(
            reason_text("store_can_not_deliver"),
            "the store cannot deliver"
        );
        assert_eq!(reason_text("NEW_REASON"), "NEW_REASON");
    }
}
