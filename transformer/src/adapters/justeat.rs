//! Just Eat Takeaway: JET Connect's Receive Order and its cancel
//! notification, and the partner API's `order-ready-for-preparation`.
//!
//! Which one a body is: the partner API appends the event to the URL (the
//! ingress passes it as `Orderhub-Path-Event`); JET Connect posts everything
//! to one URL and the body's shape tells (an order has `id` and `items`, a
//! cancellation `orderID`). Other notifications (driver status, restaurant
//! offline, failed order, the partner API's other events) are not order
//! events and are refused as such.
//!
//! # JET Connect Receive Order → `created`
//! Money is integer minor units with no currency field: the account's
//! `currency`. An item's `price` is one unit without its `children`
//! (modifiers, per one unit of their parent, nested); a missing `quantity`
//! means 1. `payment.items_in_cart.inc_tax` is the subtotal; adjustments
//! named `deliveryFee` are the delivery fee, negative ones or those named
//! like `discount` are discounts, those named like `tip` tips, the rest
//! fees; `payment.final` is the total and its tax (UK prices include VAT),
//! falling back to the top-level `total`. `created_at` and `collect_at` are
//! unix seconds (as strings): `placed_at` and `ready_by`. `deliver_at` is
//! not read: it is set for ASAP orders too, so it cannot say "scheduled".
//! `type`: `delivery-by-delivery-partner` (platform courier),
//! `delivery-by-merchant` (the restaurant's driver), `collection-by-customer`
//! (pickup). `CASH` orders have the total due; `CARD` and others were paid.
//! The branch comes from `posLocationId`, else `location.id`.
//!
//! # JET Connect cancellation → `cancelled`
//! `{orderID, reason, happenedAt}`; `orderID` is the order's `id`.
//! `happenedAt` is read as RFC 3339, a date-time without offset (UTC), or
//! unix seconds or milliseconds.
//!
//! # Partner API `order-cancelled`, `order-rejected` → `cancelled`
//! Their bodies are not documented beyond `order-rejected {Event,
//! RejectedAt, RejectedBy, RejectedReason}`; read leniently: `OrderId`
//! (required), `Reason`/`CancelledReason`/`RejectedReason`,
//! `CancelledAt`/`RejectedAt`.
//!
//! # Partner API `order-ready-for-preparation-{sync,async}` → `created`
//! PascalCase, money as decimal numbers in major units, in `Currency`:
//! `Items[]{Reference, Name, Quantity, UnitPrice, Items[]}` (sub-items per
//! one unit of their parent), `PriceBreakdown{Items, Fees{name: amount},
//! Taxes, Tips, Discount}` (a fee named like `Delivery` is the delivery
//! fee; taxes, tips and discount may be one amount or split by name, and
//! a negative discount counts as its size), `TotalPrice`, `Payment.Lines[]{Type, Value, Paid}` (what is not
//! paid is due; no lines: paid). `Fulfilment.Method` `Delivery` or
//! `Collection`; `PrepareFor` is `ready_by`; `CustomerDueDate` is scheduled
//! when `CustomerDueAsap` is false. The branch comes from
//! `Restaurant.Reference`, else `Restaurant.Id`.

use std::collections::BTreeMap;

use canonical::money::Decimal;
use canonical::order::{
    Address, Courier, Discount, Event, Fee, Fulfilment, FulfilmentType, Item, OrderState, Payment,
    PaymentMethod, ProblemKind, Status, Totals,
};
use serde::Deserialize;
use serde::de::IgnoredAny;

use super::{Adapter, Coord, Id, coords, tax_inclusive};
use crate::convert::{
    self, ConvertError, Draft, Input, Money, Problems, Quantity, excerpt, fill_totals, join,
    quantity, text,
};

pub struct JustEat;

const READY_FOR_PREPARATION: [&str; 2] = [
    "order-ready-for-preparation-sync",
    "order-ready-for-preparation-async",
];

#[derive(Deserialize)]
struct Probe {
    #[serde(default)]
    id: Option<IgnoredAny>,
    #[serde(default)]
    items: Option<IgnoredAny>,
    #[serde(default, rename = "orderID", alias = "orderId")]
    order_id: Option<IgnoredAny>,
    #[serde(default, rename = "OrderId")]
    partner_order_id: Option<IgnoredAny>,
    #[serde(default, rename = "driverStatus")]
    driver_status: Option<IgnoredAny>,
    #[serde(default, rename = "restaurantId")]
    restaurant_id: Option<IgnoredAny>,
    #[serde(default, rename = "validationError")]
    validation_error: Option<IgnoredAny>,
}

// ---- JET Connect Receive Order -------------------------------------------

#[derive(Deserialize)]
struct OrderIn {
    id: String,
    #[serde(default)]
    third_party_order_reference: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default, rename = "posLocationId")]
    pos_location_id: Option<String>,
    #[serde(default)]
    location: Option<LocationIn>,
    #[serde(default)]
    created_at: Option<Id>,
    #[serde(default)]
    collect_at: Option<Id>,
    #[serde(default)]
    payment_method: Option<String>,
    #[serde(default)]
    kitchen_notes: Option<String>,
    #[serde(default)]
    delivery_notes: Option<String>,
    #[serde(default)]
    collection_notes: Option<String>,
    items: Vec<ItemIn>,
    #[serde(default)]
    payment: Option<PaymentIn>,
    #[serde(default)]
    total: Option<i64>,
    #[serde(default)]
    delivery: Option<PersonIn>,
    #[serde(default)]
    collector: Option<PersonIn>,
}

#[derive(Deserialize)]
struct LocationIn {
    #[serde(default)]
    id: Option<Id>,
}

#[derive(Deserialize)]
struct ItemIn {
    #[serde(default)]
    plu: Option<String>,
    name: String,
    price: i64,
    #[serde(default)]
    quantity: Quantity,
    #[serde(default)]
    notes: Option<String>,
    #[serde(default)]
    children: Vec<ItemIn>,
}

#[derive(Deserialize)]
struct PaymentIn {
    items_in_cart: Amount,
    #[serde(default)]
    adjustments: Vec<Adjustment>,
    #[serde(default, rename = "final")]
    final_: Option<Amount>,
}

#[derive(Deserialize)]
struct Amount {
    inc_tax: i64,
    #[serde(default)]
    tax: i64,
}

#[derive(Deserialize)]
struct Adjustment {
    name: String,
    price: Amount,
}

#[derive(Deserialize)]
struct PersonIn {
    #[serde(default)]
    first_name: Option<String>,
    #[serde(default)]
    last_name: Option<String>,
    #[serde(default)]
    phone_number: Option<String>,
    #[serde(default)]
    phone_masking_code: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    line_one: Option<String>,
    #[serde(default)]
    line_two: Option<String>,
    #[serde(default)]
    city: Option<String>,
    #[serde(default)]
    postcode: Option<String>,
    #[serde(default)]
    coordinates: Option<CoordinatesIn>,
}

#[derive(Deserialize)]
struct CoordinatesIn {
    #[serde(default)]
    latitude: Option<Coord>,
    #[serde(default)]
    longitude: Option<Coord>,
}

fn connect_line(p: &mut Problems, path: &str, item: &ItemIn) -> Item {
    Item {
        provider_item_id: text(item.plu.as_deref()),
        product_id: None,
        name: item.name.trim().to_owned(),
        quantity: quantity(p, &format!("{path}.quantity"), item.quantity),
        unit_price: item.price,
        total: 0,
        notes: text(item.notes.as_deref()),
        modifiers: item
            .children
            .iter()
            .enumerate()
            .map(|(j, c)| connect_line(p, &format!("{path}.modifiers[{j}]"), c))
            .collect(),
    }
}

fn connect_order(input: &Input<'_>, p: &mut Problems) -> Result<Draft, ConvertError> {
    let o: OrderIn = input.parse()?;
    let mut order = input.order(Event::Created, o.id.trim());
    order.display_code = text(o.third_party_order_reference.as_deref());
    order.placed_at = match &o.created_at {
        Some(t) => convert::unix_seconds(p, "created_at", t.as_str()),
        None => input.received_at,
    };
    order.currency = input.account_currency(p);

    let (kind, delivered_by) = match o.kind.as_deref().map(str::trim) {
        Some("delivery-by-delivery-partner") => (FulfilmentType::Delivery, Some(Courier::Platform)),
        Some("delivery-by-merchant") => (FulfilmentType::Delivery, Some(Courier::Restaurant)),
        Some("collection-by-customer") => (FulfilmentType::Pickup, None),
        other => {
            p.push(
                "type",
                ProblemKind::OutOfRange,
                format!(
                    "unknown order type {:?}",
                    excerpt(other.unwrap_or_default())
                ),
            );
            (FulfilmentType::Delivery, None)
        }
    };
    let person = o.delivery.as_ref().or(o.collector.as_ref());
    if let Some(who) = person {
        order.customer.name = join([who.first_name.as_deref(), who.last_name.as_deref()], " ");
        order.customer.phone = text(who.phone_number.as_deref());
        order.customer.phone_access_code = text(who.phone_masking_code.as_deref());
        order.customer.email = text(who.email.as_deref());
    }
    let address = o
        .delivery
        .as_ref()
        .filter(|_| kind == FulfilmentType::Delivery)
        .and_then(|d| {
            let (lat, lng) = match &d.coordinates {
                Some(c) => coords(c.latitude, c.longitude),
                None => (None, None),
            };
            let a = Address {
                lines: [&d.line_one, &d.line_two]
                    .into_iter()
                    .filter_map(|l| text(l.as_deref()))
                    .collect(),
                city: text(d.city.as_deref()),
                area: None,
                postcode: text(d.postcode.as_deref()),
                lat,
                lng,
            };
            (!a.lines.is_empty()).then_some(a)
        });
    let instructions = match kind {
        FulfilmentType::Pickup => text(o.collection_notes.as_deref()),
        _ => text(o.delivery_notes.as_deref()),
    };
    order.fulfilment = Some(Fulfilment {
        kind,
        delivered_by,
        address,
        instructions,
        ready_by: o
            .collect_at
            .as_ref()
            .and_then(|t| convert::unix_seconds(p, "collect_at", t.as_str())),
        table: None,
    });
    order.notes = text(o.kitchen_notes.as_deref());

    order.items = o
        .items
        .iter()
        .enumerate()
        .map(|(i, item)| connect_line(p, &format!("items[{i}]"), item))
        .collect();
    fill_totals(p, &mut order.items);

    let mut totals = Totals {
        tax_inclusive: true,
        ..Totals::default()
    };
    match &o.payment {
        Some(pay) => {
            totals.subtotal = pay.items_in_cart.inc_tax;
            for adj in &pay.adjustments {
                let name = adj.name.trim();
                let lower = name.to_ascii_lowercase();
                let amount = adj.price.inc_tax;
                if lower == "deliveryfee" {
                    totals.delivery_fee += amount;
                } else if amount < 0 || lower.contains("discount") {
                    totals.discounts.push(Discount {
                        name: name.to_owned(),
                        amount: amount.abs(),
                        funded_by: None,
                    });
                } else if lower.contains("tip") {
                    totals.tip += amount;
                } else if amount > 0 {
                    totals.fees.push(Fee {
                        name: name.to_owned(),
                        amount,
                    });
                }
            }
            totals.discount = totals.discounts.iter().map(|d| d.amount).sum();
            totals.service_fee = totals.fees.iter().map(|f| f.amount).sum();
            match &pay.final_ {
                Some(f) => {
                    totals.total = f.inc_tax;
                    totals.tax = f.tax;
                }
                None => totals.total = o.total.unwrap_or_default(),
            }
        }
        None => {
            p.push(
                "payment",
                ProblemKind::Missing,
                "the order has no payment breakdown",
            );
            totals.subtotal = order.items.iter().map(|i| i.total).sum();
            totals.total = o.total.unwrap_or_default();
        }
    }
    totals.tax_inclusive = tax_inclusive(&totals, true);

    order.payment = Some(
        match o
            .payment_method
            .as_deref()
            .map(|m| m.trim().to_ascii_uppercase())
            .as_deref()
        {
            Some("CASH") => Payment {
                method: PaymentMethod::Cash,
                paid: false,
                amount_due: totals.total,
                change_for: None,
            },
            Some("CARD") => Payment {
                method: PaymentMethod::Card,
                paid: true,
                amount_due: 0,
                change_for: None,
            },
            _ => Payment {
                method: PaymentMethod::Other,
                paid: true,
                amount_due: 0,
                change_for: None,
            },
        },
    );
    order.totals = Some(totals);

    let location_id = o
        .location
        .as_ref()
        .and_then(|l| l.id.as_ref())
        .map(Id::as_str);
    Ok(Draft::new(order)
        .store(o.pos_location_id.as_deref())
        .store(location_id))
}

// ---- JET Connect cancellation ------------------------------------------------

#[derive(Deserialize)]
struct CancelIn {
    #[serde(rename = "orderID", alias = "orderId")]
    order_id: Id,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default, rename = "happenedAt")]
    happened_at: Option<Id>,
}

fn connect_cancel(input: &Input<'_>, p: &mut Problems) -> Result<Draft, ConvertError> {
    let c: CancelIn = input.parse()?;
    let mut order = input.order(Event::Cancelled, c.order_id.as_str().trim());
    order.status = Some(Status {
        state: OrderState::Cancelled,
        provider_status: None,
        reason: text(c.reason.as_deref()),
        at: c
            .happened_at
            .as_ref()
            .and_then(|t| convert::any_time(p, "happenedAt", t.as_str())),
    });
    Ok(Draft::new(order))
}

// ---- Partner API order-cancelled / order-rejected -------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PartnerEnd {
    order_id: Id,
    #[serde(default, alias = "CancelledReason", alias = "RejectedReason")]
    reason: Option<String>,
    #[serde(default, alias = "CancelledAt", alias = "RejectedAt")]
    happened_at: Option<Id>,
}

fn partner_end(
    input: &Input<'_>,
    p: &mut Problems,
    event: &str,
    state: OrderState,
) -> Result<Draft, ConvertError> {
    let e: PartnerEnd = input.parse()?;
    let mut order = input.order(Event::Cancelled, e.order_id.as_str().trim());
    order.status = Some(Status {
        state,
        provider_status: Some(event.to_owned()),
        reason: text(e.reason.as_deref()),
        at: e
            .happened_at
            .as_ref()
            .and_then(|t| convert::any_time(p, "CancelledAt", t.as_str())),
    });
    Ok(Draft::new(order))
}

// ---- Partner API order-ready-for-preparation ----------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PartnerOrder {
    order_id: Id,
    #[serde(default)]
    friendly_order_reference: Option<String>,
    #[serde(default)]
    is_test: bool,
    #[serde(default)]
    placed_date: Option<String>,
    #[serde(default)]
    currency: Option<String>,
    #[serde(default)]
    restaurant: Option<PartnerRestaurant>,
    #[serde(default)]
    customer: Option<PartnerCustomer>,
    #[serde(default)]
    customer_notes: Option<PartnerNotes>,
    fulfilment: PartnerFulfilment,
    items: Vec<PartnerItem>,
    #[serde(default)]
    price_breakdown: Option<PartnerPrice>,
    #[serde(default)]
    payment: Option<PartnerPayment>,
    total_price: Decimal,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PartnerRestaurant {
    #[serde(default)]
    id: Option<Id>,
    #[serde(default)]
    reference: Option<Id>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PartnerCustomer {
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PartnerNotes {
    #[serde(default)]
    note_for_restaurant: Option<String>,
    #[serde(default)]
    note_for_delivery: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PartnerFulfilment {
    method: String,
    #[serde(default)]
    customer_due_asap: Option<bool>,
    #[serde(default)]
    customer_due_date: Option<String>,
    #[serde(default)]
    prepare_for: Option<String>,
    #[serde(default)]
    phone_number: Option<String>,
    #[serde(default)]
    address: Option<PartnerAddress>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PartnerAddress {
    #[serde(default)]
    lines: Vec<String>,
    #[serde(default)]
    city: Option<String>,
    #[serde(default)]
    postal_code: Option<String>,
    #[serde(default)]
    geolocation: Option<PartnerGeo>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PartnerGeo {
    #[serde(default)]
    latitude: Option<Coord>,
    #[serde(default)]
    longitude: Option<Coord>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PartnerItem {
    #[serde(default)]
    reference: Option<Id>,
    name: String,
    #[serde(default)]
    quantity: Quantity,
    unit_price: Decimal,
    #[serde(default)]
    items: Vec<PartnerItem>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PartnerPrice {
    #[serde(default)]
    items: Option<Decimal>,
    #[serde(default)]
    fees: BTreeMap<String, Option<Decimal>>,
    #[serde(default)]
    taxes: Option<Parts>,
    #[serde(default)]
    tips: Option<Parts>,
    #[serde(default)]
    discount: Option<Parts>,
}

/// An amount the partner API may give as one decimal or split by name
/// (`{"Delivery": 0.5, "Restaurant": 1}`); split ones are added up.
struct Parts(Vec<(String, Decimal)>);

impl<'de> Deserialize<'de> for Parts {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        // The raw text keeps decimals exact whichever form it has.
        let raw = Box::<serde_json::value::RawValue>::deserialize(deserializer)?;
        let text = raw.get().trim_start();
        if text.starts_with('{') {
            let parts: BTreeMap<String, Option<Decimal>> =
                serde_json::from_str(text).map_err(D::Error::custom)?;
            Ok(Parts(
                parts
                    .into_iter()
                    .filter_map(|(k, v)| v.map(|v| (k, v)))
                    .collect(),
            ))
        } else {
            Decimal::from_json(text)
                .map(|d| Parts(vec![(String::new(), d)]))
                .map_err(D::Error::custom)
        }
    }
}

impl Parts {
    fn minor(&self, money: Money, p: &mut Problems, path: &str) -> i64 {
        self.0
            .iter()
            .map(|(name, d)| {
                let at = if name.is_empty() {
                    path.to_owned()
                } else {
                    format!("{path}.{name}")
                };
                money.amount(p, &at, d)
            })
            .sum()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PartnerPayment {
    #[serde(default)]
    lines: Vec<PartnerPaymentLine>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PartnerPaymentLine {
    #[serde(default, rename = "Type")]
    kind: Option<String>,
    #[serde(default)]
    value: Option<Decimal>,
    #[serde(default)]
    paid: Option<bool>,
}

fn partner_line(money: Money, p: &mut Problems, path: &str, item: &PartnerItem) -> Item {
    Item {
        provider_item_id: item.reference.as_ref().and_then(|r| text(Some(r.as_str()))),
        product_id: None,
        name: item.name.trim().to_owned(),
        quantity: quantity(p, &format!("{path}.quantity"), item.quantity),
        unit_price: money.amount(p, &format!("{path}.unit_price"), &item.unit_price),
        total: 0,
        notes: None,
        modifiers: item
            .items
            .iter()
            .enumerate()
            .map(|(j, m)| partner_line(money, p, &format!("{path}.modifiers[{j}]"), m))
            .collect(),
    }
}

fn partner_order(input: &Input<'_>, p: &mut Problems) -> Result<Draft, ConvertError> {
    let o: PartnerOrder = input.parse()?;
    let mut order = input.order(Event::Created, o.order_id.as_str().trim());
    order.display_code = text(o.friendly_order_reference.as_deref());
    order.is_test = o.is_test;
    order.placed_at = match &o.placed_date {
        Some(t) => convert::rfc3339(p, "PlacedDate", t),
        None => input.received_at,
    };
    let currency = match &o.currency {
        Some(code) => convert::currency(p, "Currency", code),
        None => input.account_currency(p),
    };
    order.currency = currency;
    let money = Money(currency);

    order.customer.name = o.customer.as_ref().and_then(|c| text(c.name.as_deref()));
    order.customer.phone = text(o.fulfilment.phone_number.as_deref());
    let notes = o.customer_notes.as_ref();
    order.notes = notes.and_then(|n| text(n.note_for_restaurant.as_deref()));

    let f = &o.fulfilment;
    let kind = match f.method.trim().to_ascii_lowercase().as_str() {
        "delivery" => FulfilmentType::Delivery,
        "collection" => FulfilmentType::Pickup,
        other => {
            p.push(
                "Fulfilment.Method",
                ProblemKind::OutOfRange,
                format!("{:?} is not Delivery or Collection", excerpt(other)),
            );
            FulfilmentType::Delivery
        }
    };
    let address = f
        .address
        .as_ref()
        .filter(|_| kind == FulfilmentType::Delivery)
        .map(|a| {
            let (lat, lng) = match &a.geolocation {
                Some(g) => coords(g.latitude, g.longitude),
                None => (None, None),
            };
            Address {
                lines: a.lines.iter().filter_map(|l| text(Some(l))).collect(),
                city: text(a.city.as_deref()),
                area: None,
                postcode: text(a.postal_code.as_deref()),
                lat,
                lng,
            }
        })
        .filter(|a| !a.lines.is_empty());
    order.fulfilment = Some(Fulfilment {
        kind,
        delivered_by: None,
        address,
        instructions: notes
            .and_then(|n| text(n.note_for_delivery.as_deref()))
            .filter(|_| kind == FulfilmentType::Delivery),
        ready_by: text(f.prepare_for.as_deref())
            .and_then(|t| convert::rfc3339(p, "Fulfilment.PrepareFor", &t)),
        table: None,
    });
    if f.customer_due_asap == Some(false) {
        order.scheduled_for = text(f.customer_due_date.as_deref())
            .and_then(|t| convert::rfc3339(p, "Fulfilment.CustomerDueDate", &t));
    }

    order.items = o
        .items
        .iter()
        .enumerate()
        .map(|(i, item)| partner_line(money, p, &format!("items[{i}]"), item))
        .collect();
    fill_totals(p, &mut order.items);
    let lines: i64 = order.items.iter().map(|i| i.total).sum();

    let mut totals = Totals {
        subtotal: lines,
        total: money.amount(p, "TotalPrice", &o.total_price),
        tax_inclusive: true,
        ..Totals::default()
    };
    if let Some(pb) = &o.price_breakdown {
        if let Some(items) = &pb.items {
            totals.subtotal = money.amount(p, "PriceBreakdown.Items", items);
        }
        for (name, value) in &pb.fees {
            let Some(value) = value else { continue };
            let amount = money.amount(p, &format!("PriceBreakdown.Fees.{name}"), value);
            if name.to_ascii_lowercase().contains("delivery") {
                totals.delivery_fee += amount;
            } else if amount != 0 {
                totals.fees.push(Fee {
                    name: name.clone(),
                    amount,
                });
            }
        }
        totals.service_fee = totals.fees.iter().map(|f| f.amount).sum();
        let sum = |p: &mut Problems, path: &str, parts: Option<&Parts>| {
            parts.map_or(0, |x| x.minor(money, p, path))
        };
        totals.tax = sum(p, "PriceBreakdown.Taxes", pb.taxes.as_ref());
        totals.tip = sum(p, "PriceBreakdown.Tips", pb.tips.as_ref());
        totals.discount = sum(p, "PriceBreakdown.Discount", pb.discount.as_ref()).abs();
        if totals.discount != 0 {
            totals.discounts.push(Discount {
                name: "Discount".to_owned(),
                amount: totals.discount,
                funded_by: None,
            });
        }
    }
    totals.tax_inclusive = tax_inclusive(&totals, true);

    let lines = o
        .payment
        .as_ref()
        .map(|x| x.lines.as_slice())
        .unwrap_or_default();
    let mut due = 0;
    for (k, line) in lines.iter().enumerate() {
        if line.paid != Some(true) {
            due += money.opt(p, &format!("Payment.Lines[{k}].Value"), line.value.as_ref());
        }
    }
    let method = match lines
        .first()
        .and_then(|l| l.kind.as_deref())
        .map(|k| k.trim().to_ascii_lowercase())
        .as_deref()
    {
        Some("card") => PaymentMethod::Card,
        Some("cash") => PaymentMethod::Cash,
        Some(_) => PaymentMethod::Other,
        None => PaymentMethod::Online,
    };
    order.payment = Some(Payment {
        method,
        paid: due == 0,
        amount_due: due,
        change_for: None,
    });
    order.totals = Some(totals);

    let restaurant = o.restaurant.as_ref();
    Ok(Draft::new(order)
        .store(
            restaurant
                .and_then(|r| r.reference.as_ref())
                .map(Id::as_str),
        )
        .store(restaurant.and_then(|r| r.id.as_ref()).map(Id::as_str)))
}

impl Adapter for JustEat {
    fn convert(&self, input: &Input<'_>, p: &mut Problems) -> Result<Draft, ConvertError> {
        if let Some(event) = input.path_param("Event") {
            return if READY_FOR_PREPARATION.contains(&event) {
                partner_order(input, p)
            } else if event == "order-cancelled" {
                partner_end(input, p, event, OrderState::Cancelled)
            } else if event == "order-rejected" {
                partner_end(input, p, event, OrderState::Rejected)
            } else {
                Err(ConvertError::UnsupportedEvent {
                    provider: input.provider,
                    event: excerpt(event),
                })
            };
        }
        let probe: Probe = input.parse()?;
        let unsupported = |event: &str| ConvertError::UnsupportedEvent {
            provider: input.provider,
            event: event.to_owned(),
        };
        if probe.partner_order_id.is_some() {
            partner_order(input, p)
        } else if probe.id.is_some() && probe.items.is_some() {
            connect_order(input, p)
        } else if probe.driver_status.is_some() {
            Err(unsupported("driver status"))
        } else if probe.order_id.is_some() {
            connect_cancel(input, p)
        } else if probe.restaurant_id.is_some() {
            Err(unsupported("restaurant offline"))
        } else if probe.validation_error.is_some() {
            Err(unsupported("failed order"))
        } else {
            Err(ConvertError::Parse(
                "not a JET Connect order or cancellation, nor a partner API order".to_owned(),
            ))
        }
    }
}
