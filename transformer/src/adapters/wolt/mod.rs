//! Wolt: orders the fetcher stage fetched from Wolt's order API
//! (`webhooks.fetched.wolt.<account>`): v1 (`GET /orders/{id}`, [`v1`]) or
//! v2 (`GET /v2/orders/{id}`, [`v2`]). Which one: `Orderhub-Fetched-Api`,
//! checked against the body's shape (v1 has `price`, v2 `basket_price`),
//! else the shape alone.
//!
//! A body that is still the webhook itself (`{id, type: "order.notification",
//! order{id, venue_id, status, resource_url}, created_at}`: its `type`
//! starts with `order.`, where an order's own `type` is `instant` or
//! `preorder`) is refused as `fetch_required`, naming the status and the
//! order: the fetcher stage fetches these. No order is made up from a
//! notification.
//!
//! # Event
//! From `Orderhub-Notification-Event` (the notification's `order.status`):
//! `CREATED` → `created` with the whole order; `CANCELED` and `REJECTED` →
//! `cancelled` (`rejected` when the header or the order's `order_status`
//! says so: Wolt notifies a rejection as `CANCELED`); any other status
//! (`PRODUCTION`, `READY`, `DELIVERED`, and those Wolt adds) → `updated` with
//! the state it names, or `other`. Without the header, the order's own
//! `order_status` decides: `received`/`fetched`/`acknowledged` are
//! `created`, `rejected`/`canceled` `cancelled`, anything else `updated`.
//! Cancellations and updates carry the ids, the venue and the status only:
//! a status change cannot fail on the order's content.
//!
//! # What both versions share
//! Names from Wolt's docs, structure from public clients; v2 is assumed to
//! keep v1's top-level fields beside its new prices [GUESS]:
//! - `id`; `order_number` (the code the customer sees; it repeats over
//!   time) is `display_code`; the branch comes from `venue.id`.
//! - `delivery.type`: `homedelivery` (to `delivery.location`: street
//!   address, apartment, city, coordinates), `takeaway` (pickup) or `eatin`
//!   (dine-in). Who delivers is `delivery.self_delivery` (true: the
//!   venue's own courier) [GUESS: not in the v1 field list]; unknown when
//!   absent.
//! - `created_at` is `placed_at`, `pickup_eta` `ready_by`. A `preorder`
//!   (`type`, or a `pre_order` object) is scheduled for
//!   `pre_order.preorder_time` [GUESS], else `delivery.time`.
//! - `consumer_name`, `consumer_phone_number` (often null),
//!   `consumer_comment` (the order's notes).
//! - Money: `{amount, currency}` in minor units; every currency must be the
//!   order's. Wolt's markets list VAT-inclusive prices and the bodies carry
//!   no tax amount: `tax` 0, `tax_inclusive`.
//! - For answering (the order context): the API (`v1`, `v2`), a
//!   self-delivered home delivery, a pre-order.

use canonical::money::Currency;
use canonical::order::{
    Courier, Event, Fulfilment, FulfilmentType, Item, Order, OrderState, ProblemKind, Status,
};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;
use shared::headers;

use super::fetched::{self, Api, Minor, Shapes, line_total};
use super::{Adapter, Coord, Id, address, coords};
use crate::convert::{
    self, AnswerHints, ConvertError, Draft, Input, Problems, Quantity, excerpt, quantity, text,
};

mod v1;
mod v2;

pub struct Wolt;

/// The webhook itself, for the `fetch_required` message.
#[derive(Deserialize)]
struct Notification {
    #[serde(rename = "type")]
    kind: String,
    order: OrderRef,
}

#[derive(Deserialize)]
struct OrderRef {
    id: String,
    #[serde(default)]
    status: Option<String>,
}

/// The fields that tell the shapes apart.
#[derive(Deserialize)]
struct Probe {
    #[serde(default, rename = "type")]
    kind: Option<Value>,
    #[serde(default)]
    price: Option<IgnoredAny>,
    #[serde(default)]
    basket_price: Option<IgnoredAny>,
}

impl Probe {
    fn is_notification(&self) -> bool {
        matches!(&self.kind, Some(Value::String(k)) if k.trim().starts_with("order."))
    }

    fn shape(&self) -> Option<Api> {
        Api::by_shape(self.price.is_some(), self.basket_price.is_some())
    }
}

const SHAPES: Shapes = Shapes {
    v1: "`price`",
    v2: "`basket_price`",
};

/// What every event reads.
#[derive(Deserialize)]
struct Ids {
    id: String,
    #[serde(default)]
    order_number: Option<Id>,
    #[serde(default)]
    order_status: Option<String>,
    #[serde(default)]
    venue: Option<Venue>,
}

#[derive(Deserialize)]
struct Venue {
    #[serde(default)]
    id: Option<String>,
}

/// What both versions share of an order's content.
#[derive(Deserialize)]
struct Common {
    #[serde(default)]
    created_at: Option<String>,
    #[serde(default)]
    pickup_eta: Option<String>,
    #[serde(default)]
    consumer_comment: Option<String>,
    #[serde(default)]
    consumer_name: Option<String>,
    #[serde(default)]
    consumer_phone_number: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    pre_order: Option<PreOrder>,
    #[serde(default)]
    delivery: Option<DeliveryIn>,
}

#[derive(Deserialize)]
struct PreOrder {
    #[serde(default)]
    preorder_time: Option<String>,
}

#[derive(Deserialize)]
struct DeliveryIn {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    time: Option<String>,
    #[serde(default)]
    self_delivery: Option<bool>,
    #[serde(default)]
    location: Option<LocationIn>,
}

#[derive(Deserialize)]
struct LocationIn {
    #[serde(default)]
    street_address: Option<String>,
    #[serde(default)]
    apartment: Option<String>,
    #[serde(default)]
    city: Option<String>,
    #[serde(default)]
    formatted_address: Option<String>,
    #[serde(default)]
    coordinates: Option<Coordinates>,
}

#[derive(Deserialize)]
struct Coordinates {
    #[serde(default)]
    lat: Option<Coord>,
    #[serde(default)]
    lon: Option<Coord>,
}

/// `{amount, currency}`, minor units.
#[derive(Deserialize)]
struct MoneyIn {
    amount: i64,
    #[serde(default)]
    currency: Option<String>,
}

/// Amounts in the order's currency.
struct Amounts(Minor);

impl Amounts {
    /// The order's amounts, in the currency of the amount at `path` (which
    /// is set on the order).
    fn of_order(p: &mut Problems, order: &mut Order, path: &str, m: &MoneyIn) -> Self {
        order.currency = currency_of(p, path, m);
        Amounts(Minor {
            currency: order.currency,
            code_field: "currency",
        })
    }

    fn of(&self, p: &mut Problems, path: &str, m: &MoneyIn) -> i64 {
        self.0.get(p, path, m.amount, m.currency.as_deref())
    }

    fn opt(&self, p: &mut Problems, path: &str, m: Option<&MoneyIn>) -> i64 {
        m.map_or(0, |m| self.of(p, path, m))
    }
}

/// The order's currency from the amount that names it (`path`).
fn currency_of(p: &mut Problems, path: &str, m: &MoneyIn) -> Option<Currency> {
    match text(m.currency.as_deref()) {
        Some(code) => convert::currency(p, &format!("{path}.currency"), &code),
        None => {
            p.push(
                format!("{path}.currency"),
                ProblemKind::Missing,
                "the order's currency is required",
            );
            None
        }
    }
}

/// An item as both versions write it, its prices found.
struct Line<'a> {
    id: Option<&'a str>,
    pos_id: Option<&'a str>,
    sku: Option<&'a str>,
    name: &'a str,
    count: Quantity,
    /// One unit's price as sent, and whether it includes the options;
    /// else why the item has none.
    unit: Result<(&'a MoneyIn, bool), &'static str>,
    /// The line's total as sent.
    total: Option<&'a MoneyIn>,
}

impl Line<'_> {
    /// The canonical line at `path` with its options: our POS id is
    /// `pos_id`, else `sku`, else Wolt's `id`; the unit price is without
    /// the options; the total is used as sent (and checked), else computed.
    fn item(self, m: &Amounts, p: &mut Problems, path: &str, modifiers: Vec<Item>) -> Item {
        let at = format!("{path}.unit_price");
        let unit_price = match self.unit {
            Ok((base, false)) => m.of(p, &at, base),
            Ok((unit, true)) => m.of(p, &at, unit) - modifiers.iter().map(|o| o.total).sum::<i64>(),
            Err(message) => {
                p.push(at, ProblemKind::Missing, message);
                0
            }
        };
        let mut out = Item {
            provider_item_id: text(self.pos_id)
                .or_else(|| text(self.sku))
                .or_else(|| text(self.id)),
            product_id: None,
            name: self.name.trim().to_owned(),
            quantity: quantity(p, &format!("{path}.quantity"), self.count),
            unit_price,
            total: 0,
            notes: None,
            modifiers,
        };
        out.total = match self.total {
            Some(t) => m.of(p, &format!("{path}.total"), t),
            None => line_total(p, path, &out),
        };
        out
    }
}

/// An option as both versions write it.
struct Choice<'a> {
    id: Option<&'a str>,
    pos_id: Option<&'a str>,
    value_pos_id: Option<&'a str>,
    /// The group (`Size`).
    name: Option<&'a str>,
    /// The choice (`Large`).
    value: Option<&'a str>,
    /// Per one unit of the item.
    count: Quantity,
    /// One unit's price.
    price: Option<&'a MoneyIn>,
}

impl Choice<'_> {
    /// The option as a modifier at `path`, its total computed: named
    /// `<name>: <value>` (or whichever is set), its id the chosen value's
    /// POS id, else the option's, else Wolt's. `sub` reads its sub-options,
    /// after the option itself.
    fn item(
        self,
        m: &Amounts,
        p: &mut Problems,
        path: &str,
        sub: impl FnOnce(&mut Problems) -> Vec<Item>,
    ) -> Item {
        let mut out = Item {
            provider_item_id: text(self.value_pos_id)
                .or_else(|| text(self.pos_id))
                .or_else(|| text(self.id)),
            product_id: None,
            name: match (text(self.name), text(self.value)) {
                (Some(n), Some(v)) => format!("{n}: {v}"),
                (Some(one), None) | (None, Some(one)) => one,
                (None, None) => String::new(),
            },
            quantity: quantity(p, &format!("{path}.quantity"), self.count),
            unit_price: m.opt(p, &format!("{path}.unit_price"), self.price),
            total: 0,
            notes: None,
            modifiers: sub(p),
        };
        out.total = line_total(p, path, &out);
        out
    }
}

/// A Wolt order status (notification or `order_status`), any case.
fn state_of(status: &str) -> OrderState {
    match status
        .trim()
        .to_ascii_lowercase()
        .replace([' ', '-'], "_")
        .as_str()
    {
        "received" | "fetched" | "created" => OrderState::Placed,
        "acknowledged" => OrderState::Accepted,
        "production" => OrderState::Preparing,
        "courier_arrival" | "courier_arrived" => OrderState::CourierArrived,
        "pick_up_completed" | "pickup_completed" => OrderState::PickedUp,
        other => super::state_of(other),
    }
}

fn status(state: OrderState, provider_status: String) -> Option<Status> {
    Some(Status {
        state,
        provider_status: Some(provider_status),
        reason: None,
        at: None,
    })
}

/// The event, its status, and whether the whole order is read.
fn happened(input: &Input<'_>, p: &mut Problems, ids: &Ids) -> (Event, Option<Status>, bool) {
    let body = text(ids.order_status.as_deref()).map(|s| (state_of(&s), s));
    match input.header(headers::NOTIFICATION_EVENT) {
        Some(said) => match said.to_ascii_uppercase().as_str() {
            "CREATED" => (Event::Created, None, true),
            "CANCELED" | "CANCELLED" | "REJECTED" => {
                let (state, written) = match body {
                    Some((s @ (OrderState::Cancelled | OrderState::Rejected), w)) => (s, w),
                    _ if said.eq_ignore_ascii_case("REJECTED") => {
                        (OrderState::Rejected, said.to_owned())
                    }
                    _ => (OrderState::Cancelled, said.to_owned()),
                };
                (Event::Cancelled, status(state, written), false)
            }
            _ => (
                Event::Updated,
                status(state_of(said), said.to_owned()),
                false,
            ),
        },
        None => match body {
            Some((OrderState::Placed | OrderState::Accepted, _)) => (Event::Created, None, true),
            Some((s @ (OrderState::Cancelled | OrderState::Rejected), w)) => {
                (Event::Cancelled, status(s, w), false)
            }
            Some((s, w)) => (Event::Updated, status(s, w), false),
            None => {
                p.push(
                    "order_status",
                    ProblemKind::Missing,
                    format!(
                        "without {} nothing says what happened to the order",
                        headers::NOTIFICATION_EVENT
                    ),
                );
                let unknown = Status {
                    state: OrderState::Other,
                    provider_status: None,
                    reason: None,
                    at: None,
                };
                (Event::Updated, Some(unknown), false)
            }
        },
    }
}

/// Fills what both versions share: times, customer, fulfilment, notes;
/// and what answering the order needs (self-delivery, pre-order).
fn fill_common(
    input: &Input<'_>,
    p: &mut Problems,
    order: &mut Order,
    c: &Common,
    answer: &mut AnswerHints,
) {
    order.placed_at = match text(c.created_at.as_deref()) {
        Some(t) => convert::rfc3339(p, "created_at", &t),
        None => input.received_at,
    };
    order.customer.name = text(c.consumer_name.as_deref());
    order.customer.phone = text(c.consumer_phone_number.as_deref());
    order.notes = text(c.consumer_comment.as_deref());

    let d = c.delivery.as_ref();
    let (kind, delivered_by) = match d.and_then(|d| d.kind.as_deref()).map(str::trim) {
        None => (FulfilmentType::Delivery, None),
        Some(k) if k.eq_ignore_ascii_case("homedelivery") => (
            FulfilmentType::Delivery,
            d.and_then(|d| d.self_delivery).map(|own| {
                if own {
                    Courier::Restaurant
                } else {
                    Courier::Platform
                }
            }),
        ),
        Some(k) if k.eq_ignore_ascii_case("takeaway") => (FulfilmentType::Pickup, None),
        Some(k) if k.eq_ignore_ascii_case("eatin") => (FulfilmentType::DineIn, None),
        Some(other) => {
            p.push(
                "delivery.type",
                ProblemKind::OutOfRange,
                format!(
                    "{:?} is not homedelivery, takeaway or eatin",
                    excerpt(other)
                ),
            );
            (FulfilmentType::Delivery, None)
        }
    };
    let address = d
        .filter(|_| kind == FulfilmentType::Delivery)
        .and_then(|d| d.location.as_ref())
        .and_then(|l| {
            let street =
                text(l.street_address.as_deref()).or_else(|| text(l.formatted_address.as_deref()));
            address(
                [street, text(l.apartment.as_deref())]
                    .into_iter()
                    .flatten()
                    .collect(),
                text(l.city.as_deref()),
                None,
                l.coordinates
                    .as_ref()
                    .map_or((None, None), |c| coords(c.lat, c.lon)),
            )
        });
    order.fulfilment = Some(Fulfilment {
        kind,
        delivered_by,
        address,
        instructions: None,
        ready_by: text(c.pickup_eta.as_deref()).and_then(|t| convert::rfc3339(p, "pickup_eta", &t)),
        table: None,
    });
    let preorder = c.pre_order.is_some()
        || c.kind
            .as_deref()
            .is_some_and(|k| k.trim().eq_ignore_ascii_case("preorder"));
    // Wolt takes a different accept for each (self-delivery accept,
    // pre-order confirm).
    answer.self_delivery =
        kind == FulfilmentType::Delivery && delivered_by == Some(Courier::Restaurant);
    answer.preorder = preorder;
    if preorder {
        let wanted = c
            .pre_order
            .as_ref()
            .and_then(|x| text(x.preorder_time.as_deref()))
            .map(|t| ("pre_order.preorder_time", t))
            .or_else(|| {
                d.and_then(|d| text(d.time.as_deref()))
                    .map(|t| ("delivery.time", t))
            });
        order.scheduled_for = wanted.and_then(|(path, t)| convert::rfc3339(p, path, &t));
    }
}

impl Adapter for Wolt {
    fn convert(&self, input: &Input<'_>, p: &mut Problems) -> Result<Draft, ConvertError> {
        let probe: Probe = input.parse()?;
        if probe.is_notification() {
            let n: Notification = input.parse()?;
            return Err(ConvertError::FetchRequired(format!(
                "wolt sent only a notification ({} {} for order {}): the order must be fetched from the wolt api by the fetcher stage; this is the raw notification",
                excerpt(n.kind.trim()),
                excerpt(n.order.status.as_deref().unwrap_or("").trim()),
                excerpt(n.order.id.trim()),
            )));
        }
        let api = fetched::api(input, probe.shape(), &SHAPES)?;
        let ids: Ids = input.parse()?;
        let (event, status, content) = happened(input, p, &ids);
        let mut order = input.order(event, ids.id.trim());
        order.display_code = ids
            .order_number
            .as_ref()
            .and_then(|n| text(Some(n.as_str())));
        order.status = status;
        let mut answer = AnswerHints {
            api: Some(api.as_str()),
            ..AnswerHints::default()
        };
        if content {
            let common: Common = input.parse()?;
            fill_common(input, p, &mut order, &common, &mut answer);
            match api {
                Api::V1 => v1::fill(input, p, &mut order)?,
                Api::V2 => v2::fill(input, p, &mut order)?,
            }
        }
        let mut draft = Draft::new(order).store(ids.venue.as_ref().and_then(|v| v.id.as_deref()));
        draft.answer = answer;
        Ok(draft)
    }
}
