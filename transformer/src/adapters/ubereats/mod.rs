//! Uber Eats: orders the fetcher stage fetched from Uber's API
//! (`webhooks.fetched.ubereats.<account>`), in either of Uber's two shapes:
//! the legacy `GET /v2/eats/order/{id}` ([`v2`]) and the Order Fulfillment
//! API's `GET /v1/delivery/order/{id}?expand=carts,deliveries,payment`
//! ([`v1`]). Which one: `Orderhub-Fetched-Api`, checked against the body's
//! shape (v1 has `carts`/`state`, or is wrapped as `{"order": {...}}`; v2
//! has `cart`/`current_state`), else the shape alone.
//!
//! A body that is still the webhook itself (`{event_id, event_type, meta
//! {user_id, resource_id}, resource_href}`: it has `event_type`) is refused
//! as `fetch_required`, naming the event and the order: the fetcher stage
//! fetches these, and the transformer converts what it publishes. No order
//! is made up from a notification.
//!
//! # Event
//! From `Orderhub-Notification-Event` (the notification's `event_type`):
//! - `orders.notification`, `orders.scheduled.notification` → `created`,
//!   with the whole order.
//! - `orders.cancel`, `orders.failure` → `cancelled`: the order's state
//!   when it says cancelled or denied (`rejected`), else `cancelled`; the
//!   reason is v1's `failure_info.reason`.
//! - `orders.release`, `delivery.state_changed` → `updated` with the state
//!   the order reports (for a courier change, the first delivery's state:
//!   `EN_ROUTE_TO_PICKUP` courier assigned, `ARRIVED_AT_PICKUP` courier
//!   arrived, `EN_ROUTE_TO_DROPOFF` picked up, `COMPLETED` delivered).
//! - `orders.fulfillment_issues.resolved` (also spelled `order.…`) and
//!   `orders.customer_order_edit` → `updated`/`modified` with the whole
//!   order: the content changed.
//! - any other event type (`store.provisioned`, ...) is not an order event:
//!   `unsupported_event`.
//!
//! Without the header, the order's own state decides: `CREATED`/`OFFERED`
//! is `created`, `CANCELED`/`DENIED`/`FAILED` `cancelled`, anything else
//! `updated` with that state. Cancellations and status updates carry the
//! ids, the store and the status only, and read nothing else of the order,
//! so a status change cannot fail on the order's content.

use canonical::money::Currency;
use canonical::order::{Address, Event, Order, OrderState, ProblemKind, Status};
use serde::Deserialize;
use serde::de::IgnoredAny;
use shared::headers;

use super::fetched::{self, Api, Shapes, list};
use super::{Adapter, Coord, coords};
use crate::convert::{self, ConvertError, Draft, Input, Problems, excerpt, text};

mod v1;
mod v2;

pub struct UberEats;

/// The webhook itself, for the `fetch_required` message.
#[derive(Deserialize)]
struct Notification {
    event_type: String,
    meta: Meta,
}

#[derive(Deserialize)]
struct Meta {
    resource_id: String,
}

/// The fields that tell the shapes apart.
#[derive(Deserialize)]
struct Probe {
    #[serde(default)]
    event_type: Option<IgnoredAny>,
    #[serde(default)]
    order: Option<IgnoredAny>,
    #[serde(default)]
    carts: Option<IgnoredAny>,
    #[serde(default)]
    state: Option<IgnoredAny>,
    #[serde(default)]
    cart: Option<IgnoredAny>,
    #[serde(default)]
    current_state: Option<IgnoredAny>,
}

impl Probe {
    fn shape(&self) -> Option<Api> {
        Api::by_shape(
            self.order.is_some() || self.carts.is_some() || self.state.is_some(),
            self.cart.is_some() || self.current_state.is_some(),
        )
    }
}

const SHAPES: Shapes = Shapes {
    v1: "`carts` and `state`, or `order`",
    v2: "`cart` and `current_state`",
};

/// What the notification said happened, by its `event_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Said {
    Created { scheduled: bool },
    Cancelled,
    Released,
    CourierChanged,
    ContentChanged,
}

impl Said {
    fn of(event_type: &str) -> Option<Said> {
        Some(match event_type {
            "orders.notification" => Said::Created { scheduled: false },
            "orders.scheduled.notification" => Said::Created { scheduled: true },
            "orders.cancel" | "orders.failure" => Said::Cancelled,
            "orders.release" => Said::Released,
            "delivery.state_changed" => Said::CourierChanged,
            "orders.fulfillment_issues.resolved"
            | "order.fulfillment_issues.resolved"
            | "orders.customer_order_edit" => Said::ContentChanged,
            _ => return None,
        })
    }
}

/// An order state as Uber writes it (both APIs, any case).
fn state_of(state: &str) -> OrderState {
    match state.trim().to_ascii_uppercase().as_str() {
        "CREATED" | "OFFERED" => OrderState::Placed,
        "ACCEPTED" => OrderState::Accepted,
        "DENIED" | "REJECTED" => OrderState::Rejected,
        "HANDED_OFF" => OrderState::PickedUp,
        "SUCCEEDED" | "FINISHED" | "COMPLETED" => OrderState::Delivered,
        "CANCELED" | "CANCELLED" | "FAILED" => OrderState::Cancelled,
        _ => super::state_of(state),
    }
}

/// A courier's state (`deliveries[].status` / `current_state`).
fn courier_state(state: &str) -> OrderState {
    match state.trim().to_ascii_uppercase().as_str() {
        "EN_ROUTE_TO_PICKUP" => OrderState::CourierAssigned,
        "ARRIVED_AT_PICKUP" => OrderState::CourierArrived,
        "EN_ROUTE_TO_DROPOFF" | "ARRIVED_AT_DROPOFF" => OrderState::PickedUp,
        "COMPLETED" => OrderState::Delivered,
        _ => OrderState::Other,
    }
}

/// A delivery's location: the legacy `eater.delivery.location`, and v1's
/// `deliveries[].location` read the same way [GUESS].
#[derive(Deserialize)]
struct Location {
    #[serde(default)]
    street_address: Option<String>,
    #[serde(default)]
    unit_number: Option<String>,
    #[serde(default)]
    business_name: Option<String>,
    #[serde(default)]
    latitude: Option<Coord>,
    #[serde(default)]
    longitude: Option<Coord>,
}

impl Location {
    /// Business name, street and unit as the lines, with the coordinates.
    fn address(&self) -> Option<Address> {
        super::address(
            [&self.business_name, &self.street_address, &self.unit_number]
                .into_iter()
                .filter_map(|v| text(v.as_deref()))
                .collect(),
            None,
            None,
            coords(self.latitude, self.longitude),
        )
    }
}

/// A line's modifier group (both APIs): the chosen modifiers, shaped like
/// the API's cart items (`I`), and the removed ingredients.
#[derive(Deserialize)]
#[serde(bound(deserialize = "I: Deserialize<'de>"))]
struct Group<I> {
    #[serde(default, deserialize_with = "list")]
    selected_items: Vec<I>,
    #[serde(default, deserialize_with = "list")]
    removed_items: Vec<Removed>,
}

#[derive(Deserialize)]
struct Removed {
    #[serde(default)]
    title: Option<String>,
}

impl<I> Group<I> {
    /// "No <title>" for each removed ingredient, for the line's notes.
    fn removed(&self) -> impl Iterator<Item = String> + '_ {
        self.removed_items
            .iter()
            .filter_map(|r| text(r.title.as_deref()))
            .map(|t| format!("No {t}"))
    }
}

/// The order's currency from the code the first amount names, at `path`.
fn currency(p: &mut Problems, path: &str, code: Option<String>) -> Option<Currency> {
    match code {
        Some(code) => convert::currency(p, path, &code),
        None => {
            p.push(
                path,
                ProblemKind::Missing,
                "no amount of the order names its currency",
            );
            None
        }
    }
}

/// What the body itself says, as each shape reads it.
struct Reported {
    /// The order's state, normalised, and as Uber wrote it.
    state: Option<(OrderState, String)>,
    /// The field it comes from, for the problem when it is missing.
    state_path: String,
    /// The first delivery's courier state, normalised and as written.
    courier: Option<(OrderState, String)>,
    /// Why the order failed (v1 `failure_info.reason`).
    reason: Option<String>,
}

/// What the fetched order stands for.
struct Happened {
    event: Event,
    status: Option<Status>,
    /// The whole order is read (created orders and content changes).
    content: bool,
    /// The notification was `orders.scheduled.notification`.
    scheduled: bool,
}

fn status(state: OrderState, provider_status: Option<String>, reason: Option<String>) -> Status {
    Status {
        state,
        provider_status,
        reason,
        at: None,
    }
}

/// The event: the notification's when the fetcher passed it on, else the
/// order's own state.
fn happened(input: &Input<'_>, p: &mut Problems, body: Reported) -> Result<Happened, ConvertError> {
    let said =
        match input.header(headers::NOTIFICATION_EVENT) {
            Some(event) => Some(Said::of(event).map(|s| (s, event.to_owned())).ok_or_else(
                || ConvertError::UnsupportedEvent {
                    provider: input.provider,
                    event: excerpt(event),
                },
            )?),
            None => None,
        };
    let plain = |event, status| Happened {
        event,
        status,
        content: false,
        scheduled: false,
    };
    Ok(match said {
        Some((Said::Created { scheduled }, _)) => Happened {
            event: Event::Created,
            status: None,
            content: true,
            scheduled,
        },
        Some((Said::Cancelled, event)) => {
            let (state, written) = match body.state {
                Some((s @ (OrderState::Cancelled | OrderState::Rejected), written)) => (s, written),
                _ => (OrderState::Cancelled, event),
            };
            plain(
                Event::Cancelled,
                Some(status(state, Some(written), body.reason)),
            )
        }
        Some((Said::Released, event)) => {
            let (state, written) = body.state.unwrap_or((OrderState::Other, event));
            plain(Event::Updated, Some(status(state, Some(written), None)))
        }
        Some((Said::CourierChanged, event)) => {
            let (state, written) = body
                .courier
                .or(body.state)
                .unwrap_or((OrderState::Other, event));
            plain(Event::Updated, Some(status(state, Some(written), None)))
        }
        Some((Said::ContentChanged, event)) => Happened {
            event: Event::Updated,
            status: Some(status(OrderState::Modified, Some(event), None)),
            content: true,
            scheduled: false,
        },
        None => match body.state {
            Some((OrderState::Placed, _)) => Happened {
                event: Event::Created,
                status: None,
                content: true,
                scheduled: false,
            },
            Some((state @ (OrderState::Cancelled | OrderState::Rejected), written)) => plain(
                Event::Cancelled,
                Some(status(state, Some(written), body.reason)),
            ),
            Some((state, written)) => {
                plain(Event::Updated, Some(status(state, Some(written), None)))
            }
            None => {
                p.push(
                    body.state_path,
                    ProblemKind::Missing,
                    format!(
                        "without {} nothing says what happened to the order",
                        headers::NOTIFICATION_EVENT
                    ),
                );
                plain(Event::Updated, Some(status(OrderState::Other, None, None)))
            }
        },
    })
}

/// The order the event stands for, with its ids and status; and whether
/// its content is to be read: `Some(scheduled)`, `scheduled` when the
/// notification was `orders.scheduled.notification`.
fn order(
    input: &Input<'_>,
    p: &mut Problems,
    id: &str,
    display_id: Option<&str>,
    body: Reported,
) -> Result<(Order, Option<bool>), ConvertError> {
    let Happened {
        event,
        status,
        content,
        scheduled,
    } = happened(input, p, body)?;
    let mut order = input.order(event, id.trim());
    order.display_code = text(display_id);
    order.status = status;
    Ok((order, content.then_some(scheduled)))
}

impl Adapter for UberEats {
    fn convert(&self, input: &Input<'_>, p: &mut Problems) -> Result<Draft, ConvertError> {
        let probe: Probe = input.parse()?;
        if probe.event_type.is_some() {
            let n: Notification = input.parse()?;
            return Err(ConvertError::FetchRequired(format!(
                "ubereats sent only a notification ({} for order {}): the order must be fetched from the uber eats api by the fetcher stage; this is the raw notification",
                excerpt(n.event_type.trim()),
                excerpt(n.meta.resource_id.trim()),
            )));
        }
        let api = fetched::api(input, probe.shape(), &SHAPES)?;
        let mut draft = match api {
            Api::V2 => v2::convert(input, p)?,
            Api::V1 => v1::convert(input, p, probe.order.is_some())?,
        };
        // The status calls differ between the two APIs.
        draft.answer.api = Some(api.as_str());
        Ok(draft)
    }
}
