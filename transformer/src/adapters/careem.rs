//! Careem: the payload the old service received (DESIGN §4.1). Careem
//! publishes no order-webhook documentation; the contract is the old
//! service's, and this adapter reads it as follows.
//!
//! Required: `order_id` (string or number), `items[]` with `name`, `price`
//! (one unit, without modifiers) and `quantity` (1 if absent), and
//! `total_amount`, what the customer is charged. Amounts are decimals in
//! major units, as JSON numbers or strings (`2.675`, `"2.675"`), in the
//! payload's `currency` if it has one, else the account's (`currency` in the
//! hub config, e.g. JOD): parsed exactly, never through `f64`.
//!
//! Optional, read when present: `store_id` (→ branch mapping), `created_at`
//! (RFC 3339; else the time the ingress received the webhook),
//! `display_code`, `customer{name, phone, email}`, `items[].id` (→ product
//! mapping), `items[].notes`, `items[].modifiers[]` (the same shape, nested;
//! a modifier's `quantity` and `price` are per one unit of its parent),
//! `subtotal`, `delivery_fee`, `service_fee`, `tax`, `discount`, `tip`,
//! `payment_method` (`cash`, `card`; anything else or absent: paid online
//! through Careem), `type` (`delivery`, the default, or `pickup`),
//! `address{lines, city, area, lat, lng}`, `instructions`, `notes`.
//!
//! Careem's captains deliver (`delivered_by: platform`). A cash order has
//! the whole total due. `subtotal`, when absent, is the sum of the lines;
//! `tax` is read as included in the prices when `total_amount` adds up
//! without it (Jordan's menus are tax-inclusive), as added when it adds up
//! only with it. Only creations are known: the old service had no update or
//! cancellation contract.

use canonical::money::Decimal;
use canonical::order::{
    Address, Courier, Event, Fulfilment, FulfilmentType, Item, Payment, PaymentMethod, Totals,
};
use serde::Deserialize;

use super::{Adapter, Coord, Id, coords, tax_inclusive};
use crate::convert::{
    self, ConvertError, Draft, Input, Money, Problems, Quantity, fill_totals, quantity, text,
};

pub struct Careem;

#[derive(Deserialize)]
struct Payload {
    order_id: Id,
    #[serde(default)]
    store_id: Option<Id>,
    #[serde(default)]
    display_code: Option<String>,
    #[serde(default)]
    created_at: Option<String>,
    #[serde(default)]
    currency: Option<String>,
    #[serde(default)]
    customer: Option<CustomerIn>,
    items: Vec<ItemIn>,
    #[serde(default)]
    subtotal: Option<Decimal>,
    #[serde(default)]
    delivery_fee: Option<Decimal>,
    #[serde(default)]
    service_fee: Option<Decimal>,
    #[serde(default)]
    tax: Option<Decimal>,
    #[serde(default)]
    discount: Option<Decimal>,
    #[serde(default)]
    tip: Option<Decimal>,
    total_amount: Decimal,
    #[serde(default)]
    payment_method: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    address: Option<AddressIn>,
    #[serde(default)]
    instructions: Option<String>,
    #[serde(default)]
    notes: Option<String>,
}

#[derive(Deserialize)]
struct CustomerIn {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    phone: Option<String>,
    #[serde(default)]
    email: Option<String>,
}

#[derive(Deserialize)]
struct ItemIn {
    #[serde(default)]
    id: Option<Id>,
    name: String,
    #[serde(default)]
    quantity: Quantity,
    price: Decimal,
    #[serde(default)]
    notes: Option<String>,
    #[serde(default)]
    modifiers: Vec<ItemIn>,
}

#[derive(Deserialize)]
struct AddressIn {
    #[serde(default)]
    lines: Vec<String>,
    #[serde(default)]
    city: Option<String>,
    #[serde(default)]
    area: Option<String>,
    #[serde(default)]
    lat: Option<Coord>,
    #[serde(default)]
    lng: Option<Coord>,
}

fn line(money: Money, p: &mut Problems, path: &str, item: &ItemIn) -> Item {
    Item {
        provider_item_id: item.id.as_ref().and_then(|id| text(Some(id.as_str()))),
        product_id: None,
        name: item.name.trim().to_owned(),
        quantity: quantity(p, &format!("{path}.quantity"), item.quantity),
        unit_price: money.amount(p, &format!("{path}.unit_price"), &item.price),
        total: 0,
        notes: text(item.notes.as_deref()),
        modifiers: item
            .modifiers
            .iter()
            .enumerate()
            .map(|(j, m)| line(money, p, &format!("{path}.modifiers[{j}]"), m))
            .collect(),
    }
}

impl Adapter for Careem {
    fn convert(&self, input: &Input<'_>, p: &mut Problems) -> Result<Draft, ConvertError> {
        let body: Payload = input.parse()?;
        let mut order = input.order(Event::Created, body.order_id.as_str().trim());
        order.display_code = text(body.display_code.as_deref());
        order.placed_at = match &body.created_at {
            Some(t) => convert::rfc3339(p, "created_at", t),
            None => input.received_at,
        };
        let currency = match &body.currency {
            Some(code) => convert::currency(p, "currency", code),
            None => input.account_currency(p),
        };
        order.currency = currency;
        let money = Money(currency);

        if let Some(c) = &body.customer {
            order.customer.name = text(c.name.as_deref());
            order.customer.phone = text(c.phone.as_deref());
            order.customer.email = text(c.email.as_deref());
        }

        order.items = body
            .items
            .iter()
            .enumerate()
            .map(|(i, item)| line(money, p, &format!("items[{i}]"), item))
            .collect();
        fill_totals(p, &mut order.items);
        let lines: i64 = order.items.iter().map(|i| i.total).sum();

        let mut totals = Totals {
            subtotal: body
                .subtotal
                .as_ref()
                .map_or(lines, |s| money.amount(p, "subtotal", s)),
            delivery_fee: money.opt(p, "delivery_fee", body.delivery_fee.as_ref()),
            service_fee: money.opt(p, "service_fee", body.service_fee.as_ref()),
            tax: money.opt(p, "tax", body.tax.as_ref()),
            discount: money.opt(p, "discount", body.discount.as_ref()),
            tip: money.opt(p, "tip", body.tip.as_ref()),
            total: money.amount(p, "total_amount", &body.total_amount),
            ..Totals::default()
        };
        totals.tax_inclusive = tax_inclusive(&totals, true);

        let method = body
            .payment_method
            .as_deref()
            .map(|m| m.trim().to_ascii_lowercase());
        order.payment = Some(match method.as_deref() {
            Some("cash") => Payment {
                method: PaymentMethod::Cash,
                paid: false,
                amount_due: totals.total,
                change_for: None,
            },
            Some("card") => Payment {
                method: PaymentMethod::Card,
                paid: true,
                amount_due: 0,
                change_for: None,
            },
            _ => Payment {
                method: PaymentMethod::Online,
                paid: true,
                amount_due: 0,
                change_for: None,
            },
        });
        order.totals = Some(totals);

        let kind = match body.kind.as_deref().map(str::trim) {
            None | Some("delivery") => FulfilmentType::Delivery,
            Some("pickup") => FulfilmentType::Pickup,
            Some(other) => {
                p.push(
                    "type",
                    canonical::order::ProblemKind::OutOfRange,
                    format!("{:?} is not delivery or pickup", convert::excerpt(other)),
                );
                FulfilmentType::Delivery
            }
        };
        let address = body.address.as_ref().map(|a| {
            let (lat, lng) = coords(a.lat, a.lng);
            Address {
                lines: a.lines.iter().filter_map(|l| text(Some(l))).collect(),
                city: text(a.city.as_deref()),
                area: text(a.area.as_deref()),
                postcode: None,
                lat,
                lng,
            }
        });
        order.fulfilment = Some(Fulfilment {
            kind,
            delivered_by: (kind == FulfilmentType::Delivery).then_some(Courier::Platform),
            address: address.filter(|_| kind == FulfilmentType::Delivery),
            instructions: text(body.instructions.as_deref()),
            ready_by: None,
            table: None,
        });
        order.notes = text(body.notes.as_deref());

        Ok(Draft::new(order).store(body.store_id.as_ref().map(Id::as_str)))
    }
}
