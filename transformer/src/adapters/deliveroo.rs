//! Deliveroo: the Order Events webhook (`order.new`, `order.status_update`)
//! and the deprecated POS webhook (`new_order`, `cancel_order`), all in the
//! envelope `{"event": ..., "body": {"order": {...}}}` (the legacy events are
//! read with the same order shape).
//!
//! - `order.new`, `new_order` → `created` with the whole order.
//! - `order.status_update`, `cancel_order` → `cancelled` when the status is
//!   `canceled`/`cancelled` (`cancel_order` always) or `rejected`, else
//!   `updated` with the normalised state. Deliveroo does not change an
//!   order's content after it is placed (a remake is a new order id), so
//!   these carry the ids and the status only, and read nothing else of the
//!   order: a status update cannot fail on the order's content. The status
//!   time is the `status_log` entry of that status (the last one).
//! - anything else (`rider.status_update`, ...) is not an order event.
//!
//! Money: `{fractional, currency_code}` integer minor units; every amount
//! must be in the currency of `total_price`. A line's `total_price` is used
//! as sent and checked (`(unit_price + Σ modifiers) × quantity`, modifiers
//! per one unit of their parent); `subtotal` must be their sum. Fees:
//! `bag_fee`, `surcharge` and each `fee_breakdown` entry; `offer_discount`
//! is the discount (who funds it is not said); `total_price` is the total,
//! and UK prices include VAT (`tax` 0, `tax_inclusive`). `cash_due` above 0
//! makes a cash order with that amount due; otherwise it was paid online.
//!
//! Fulfilment: `deliveroo` and `autonomous` → delivery by the platform;
//! `restaurant` → delivery by the restaurant, with the `delivery` address;
//! `customer` → pickup; `table_service` → dine-in at `table_number`.
//! `placed_at` is the `placed` entry of `status_log` (else its first entry);
//! `ready_by` is `prepare_for`; a non-`asap` order is scheduled for the
//! delivery's `deliver_by`, else `prepare_for`. `cutlery_notes` says
//! whether to add cutlery (`ADD CUTLERY` / `NO CUTLERY ...`).

use canonical::money::Currency;
use canonical::order::{
    Courier, Discount, Event, Fee, Fulfilment, FulfilmentType, Item, OrderState, ProblemKind,
    Status, Totals,
};
use serde::Deserialize;
use time::OffsetDateTime;

use super::{Adapter, Coord, address, cash_if_due, coords, event_of, state_of};
use crate::convert::{self, ConvertError, Draft, Input, Problems, Quantity, quantity, text};

pub struct Deliveroo;

#[derive(Deserialize)]
struct Probe {
    event: String,
}

#[derive(Deserialize)]
struct Envelope<O> {
    body: Body<O>,
}

#[derive(Deserialize)]
struct Body<O> {
    order: O,
}

#[derive(Deserialize)]
struct MoneyIn {
    fractional: i64,
    currency_code: String,
}

#[derive(Deserialize)]
struct StatusEntry {
    at: String,
    status: String,
}

#[derive(Deserialize)]
struct OrderIn {
    id: String,
    #[serde(default)]
    display_id: Option<String>,
    #[serde(default)]
    location_id: Option<String>,
    #[serde(default)]
    status_log: Vec<StatusEntry>,
    #[serde(default)]
    fulfillment_type: Option<String>,
    #[serde(default)]
    order_notes: Option<String>,
    #[serde(default)]
    cutlery_notes: Option<String>,
    #[serde(default = "yes")]
    asap: bool,
    #[serde(default)]
    prepare_for: Option<String>,
    #[serde(default)]
    table_number: Option<String>,
    subtotal: MoneyIn,
    #[serde(default)]
    offer_discount: Option<MoneyIn>,
    #[serde(default)]
    bag_fee: Option<MoneyIn>,
    #[serde(default)]
    surcharge: Option<MoneyIn>,
    #[serde(default)]
    fee_breakdown: Vec<FeeIn>,
    total_price: MoneyIn,
    #[serde(default)]
    cash_due: Option<MoneyIn>,
    items: Vec<ItemIn>,
    #[serde(default)]
    customer: Option<CustomerIn>,
    #[serde(default)]
    delivery: Option<DeliveryIn>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
struct FeeIn {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    amount: MoneyIn,
}

#[derive(Deserialize)]
struct ItemIn {
    #[serde(default)]
    pos_item_id: Option<String>,
    name: String,
    #[serde(default)]
    quantity: Quantity,
    unit_price: MoneyIn,
    total_price: MoneyIn,
    #[serde(default)]
    modifiers: Vec<ItemIn>,
}

#[derive(Deserialize)]
struct CustomerIn {
    #[serde(default)]
    first_name: Option<String>,
    #[serde(default)]
    contact_number: Option<String>,
    #[serde(default)]
    contact_access_code: Option<String>,
}

#[derive(Deserialize)]
struct DeliveryIn {
    #[serde(default)]
    delivery_fee: Option<MoneyIn>,
    #[serde(default)]
    deliver_by: Option<String>,
    #[serde(default)]
    customer_name: Option<String>,
    #[serde(default)]
    contact_number: Option<String>,
    #[serde(default)]
    contact_access_code: Option<String>,
    #[serde(default)]
    line1: Option<String>,
    #[serde(default)]
    line2: Option<String>,
    #[serde(default)]
    city: Option<String>,
    #[serde(default, alias = "postal_code")]
    postcode: Option<String>,
    #[serde(default)]
    delivery_notes: Option<String>,
    #[serde(default)]
    location: Option<LocationIn>,
}

#[derive(Deserialize)]
struct LocationIn {
    #[serde(default)]
    latitude: Option<Coord>,
    #[serde(default)]
    longitude: Option<Coord>,
}

/// What a status update reads of the order.
#[derive(Deserialize)]
struct StatusOrderIn {
    id: String,
    #[serde(default)]
    display_id: Option<String>,
    #[serde(default)]
    location_id: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    status_log: Vec<StatusEntry>,
}

/// Amounts in one currency: the first one read sets it.
struct Amounts {
    currency: Option<Currency>,
}

impl Amounts {
    fn get(&self, p: &mut Problems, path: &str, m: &MoneyIn) -> i64 {
        let Some(c) = self.currency else { return 0 };
        match Currency::from_code_ignore_case(m.currency_code.trim()) {
            Ok(code) if code == c => m.fractional,
            Ok(other) => {
                p.push(
                    format!("{path}.currency_code"),
                    ProblemKind::Inconsistent,
                    format!("{other} differs from the order's currency {c}"),
                );
                0
            }
            Err(e) => {
                p.push(
                    format!("{path}.currency_code"),
                    ProblemKind::OutOfRange,
                    e.to_string(),
                );
                0
            }
        }
    }

    fn opt(&self, p: &mut Problems, path: &str, m: Option<&MoneyIn>) -> i64 {
        m.map_or(0, |m| self.get(p, path, m))
    }
}

fn line(a: &Amounts, p: &mut Problems, path: &str, item: &ItemIn) -> Item {
    Item {
        provider_item_id: text(item.pos_item_id.as_deref()),
        product_id: None,
        name: item.name.trim().to_owned(),
        quantity: quantity(p, &format!("{path}.quantity"), item.quantity),
        unit_price: a.get(p, &format!("{path}.unit_price"), &item.unit_price),
        total: a.get(p, &format!("{path}.total"), &item.total_price),
        notes: None,
        modifiers: item
            .modifiers
            .iter()
            .enumerate()
            .map(|(j, m)| line(a, p, &format!("{path}.modifiers[{j}]"), m))
            .collect(),
    }
}

fn time_of(p: &mut Problems, path: &str, value: Option<&str>) -> Option<OffsetDateTime> {
    text(value).and_then(|t| convert::rfc3339(p, path, &t))
}

/// The time of the last `status_log` entry with `status`.
fn logged_at(p: &mut Problems, log: &[StatusEntry], status: &str) -> Option<OffsetDateTime> {
    log.iter()
        .enumerate()
        .rev()
        .find(|(_, e)| e.status.eq_ignore_ascii_case(status))
        .and_then(|(k, e)| convert::rfc3339(p, &format!("status_log[{k}].at"), &e.at))
}

fn created(input: &Input<'_>, p: &mut Problems) -> Result<Draft, ConvertError> {
    let Envelope {
        body: Body { order: o },
    } = input.parse::<Envelope<OrderIn>>()?;
    let mut order = input.order(Event::Created, o.id.trim());
    order.display_code = text(o.display_id.as_deref());
    order.placed_at = match logged_at(p, &o.status_log, "placed") {
        Some(t) => Some(t),
        None => match o.status_log.first() {
            Some(e) => convert::rfc3339(p, "status_log[0].at", &e.at),
            None => input.received_at,
        },
    };
    let currency = convert::currency(p, "total_price.currency_code", &o.total_price.currency_code);
    order.currency = currency;
    let a = Amounts { currency };

    let d = o.delivery.as_ref();
    let c = o.customer.as_ref();
    order.customer.name = text(d.and_then(|d| d.customer_name.as_deref()))
        .or_else(|| text(c.and_then(|c| c.first_name.as_deref())));
    order.customer.phone = text(d.and_then(|d| d.contact_number.as_deref()))
        .or_else(|| text(c.and_then(|c| c.contact_number.as_deref())));
    order.customer.phone_access_code = text(d.and_then(|d| d.contact_access_code.as_deref()))
        .or_else(|| text(c.and_then(|c| c.contact_access_code.as_deref())));

    let ready_by = time_of(p, "prepare_for", o.prepare_for.as_deref());
    let kind = o.fulfillment_type.as_deref().map(str::trim);
    let (kind, delivered_by) = match kind {
        Some("deliveroo" | "autonomous") | None => {
            (FulfilmentType::Delivery, Some(Courier::Platform))
        }
        Some("restaurant") => (FulfilmentType::Delivery, Some(Courier::Restaurant)),
        Some("customer") => (FulfilmentType::Pickup, None),
        Some("table_service") => (FulfilmentType::DineIn, None),
        Some(other) => {
            p.push(
                "fulfillment_type",
                ProblemKind::OutOfRange,
                format!("unknown fulfilment type {:?}", convert::excerpt(other)),
            );
            (FulfilmentType::Delivery, None)
        }
    };
    let address = d
        .filter(|_| kind == FulfilmentType::Delivery)
        .and_then(|d| {
            address(
                [&d.line1, &d.line2]
                    .into_iter()
                    .filter_map(|l| text(l.as_deref()))
                    .collect(),
                text(d.city.as_deref()),
                text(d.postcode.as_deref()),
                d.location
                    .as_ref()
                    .map_or((None, None), |l| coords(l.latitude, l.longitude)),
            )
        });
    order.fulfilment = Some(Fulfilment {
        kind,
        delivered_by,
        address,
        instructions: text(d.and_then(|d| d.delivery_notes.as_deref())),
        ready_by,
        table: text(o.table_number.as_deref()).filter(|_| kind == FulfilmentType::DineIn),
    });
    if !o.asap {
        order.scheduled_for = match d.and_then(|d| text(d.deliver_by.as_deref())) {
            Some(t) => convert::rfc3339(p, "delivery.deliver_by", &t),
            None => ready_by,
        };
    }
    order.notes = text(o.order_notes.as_deref());
    order.cutlery = o.cutlery_notes.as_deref().and_then(|n| {
        let n = n.to_ascii_uppercase();
        if n.contains("NO CUTLERY") {
            Some(false)
        } else if n.contains("ADD CUTLERY") {
            Some(true)
        } else {
            None
        }
    });

    order.items = o
        .items
        .iter()
        .enumerate()
        .map(|(i, item)| line(&a, p, &format!("items[{i}]"), item))
        .collect();

    let mut fees = Vec::new();
    for (name, path, m) in [
        ("bag_fee", "bag_fee", o.bag_fee.as_ref()),
        ("surcharge", "surcharge", o.surcharge.as_ref()),
    ] {
        let amount = a.opt(p, path, m);
        if amount != 0 {
            fees.push(Fee {
                name: name.to_owned(),
                amount,
            });
        }
    }
    for (k, f) in o.fee_breakdown.iter().enumerate() {
        let amount = a.get(p, &format!("fee_breakdown[{k}].amount"), &f.amount);
        if amount != 0 {
            fees.push(Fee {
                name: text(f.kind.as_deref()).unwrap_or_else(|| "fee".to_owned()),
                amount,
            });
        }
    }
    let offer = a.opt(p, "offer_discount", o.offer_discount.as_ref());
    let discounts = if offer == 0 {
        Vec::new()
    } else {
        vec![Discount {
            name: "offer_discount".to_owned(),
            amount: offer,
            funded_by: None,
        }]
    };
    let total = a.get(p, "total_price", &o.total_price);
    let totals = Totals {
        subtotal: a.get(p, "subtotal", &o.subtotal),
        delivery_fee: a.opt(
            p,
            "delivery.delivery_fee",
            d.and_then(|d| d.delivery_fee.as_ref()),
        ),
        service_fee: fees.iter().map(|f| f.amount).sum(),
        tax: 0,
        discount: offer,
        tip: 0,
        total,
        tax_inclusive: true,
        fees,
        discounts,
    };
    let cash_due = a.opt(p, "cash_due", o.cash_due.as_ref());
    order.payment = Some(cash_if_due(cash_due));
    order.totals = Some(totals);
    Ok(Draft::new(order).store(o.location_id.as_deref()))
}

fn status_update(input: &Input<'_>, p: &mut Problems, cancel: bool) -> Result<Draft, ConvertError> {
    let Envelope {
        body: Body { order: o },
    } = input.parse::<Envelope<StatusOrderIn>>()?;
    let logged = text(o.status.as_deref())
        .or_else(|| o.status_log.last().map(|e| e.status.trim().to_owned()));
    let state = match logged.as_deref().map(state_of) {
        Some(s @ (OrderState::Cancelled | OrderState::Rejected)) => s,
        _ if cancel => OrderState::Cancelled,
        Some(s) => s,
        None => {
            p.push(
                "status",
                ProblemKind::Missing,
                "a status update needs a status",
            );
            OrderState::Other
        }
    };
    let at = match &logged {
        Some(s) => logged_at(p, &o.status_log, s),
        None => None,
    };
    // The legacy cancellation names no status: its event is the word.
    let provider_status = logged.or_else(|| cancel.then(|| "cancel_order".to_owned()));
    let mut order = input.order(event_of(state), o.id.trim());
    order.display_code = text(o.display_id.as_deref());
    order.status = Some(Status {
        state,
        provider_status,
        reason: None,
        at,
    });
    Ok(Draft::new(order).store(o.location_id.as_deref()))
}

impl Adapter for Deliveroo {
    fn convert(&self, input: &Input<'_>, p: &mut Problems) -> Result<Draft, ConvertError> {
        let Probe { event } = input.parse()?;
        match event.trim() {
            "order.new" | "new_order" => created(input, p),
            "order.status_update" => status_update(input, p, false),
            "cancel_order" => status_update(input, p, true),
            other => Err(ConvertError::UnsupportedEvent {
                provider: input.provider,
                event: convert::excerpt(other),
            }),
        }
    }
}
