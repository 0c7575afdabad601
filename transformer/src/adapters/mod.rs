//! Provider adapters: one module per provider, one registry.
//!
//! An adapter parses the raw bytes into the provider's own typed structs
//! (serde, straight from the bytes so that [`Decimal`] money keeps its exact
//! text), then converts them into a [`Draft`] of the canonical order,
//! recording every problem it meets in [`Problems`] instead of stopping at
//! the first. What every provider shares (branch and product mapping, phone
//! numbers, the order's own rules) happens after it, in
//! [`crate::convert`].
//!
//! Adding a provider: a variant in `shared::Provider`, a module here
//! implementing [`Adapter`], its line in [`adapter`] (the `match` is
//! exhaustive, so the compiler asks for it), and a fixtures folder
//! `tests/fixtures/<provider>/` with the expected canonical output beside
//! each payload.

use canonical::money::Decimal;
use canonical::order::{Address, Event, OrderState, Payment, PaymentMethod, Totals};
use serde::Deserialize;
use serde::de::{self, Deserializer};
use shared::Provider;

use crate::convert::{ConvertError, Draft, Input, Problems};

mod careem;
mod deliveroo;
mod direct;
mod doordash;
mod fetched;
mod glovo;
mod grab;
mod justeat;
mod keeta;
mod talabat;
mod ubereats;
mod wolt;

/// A provider's conversion from its raw webhook to a canonical order.
pub trait Adapter: Sync {
    /// Converts one raw webhook. A payload that cannot be read at all is an
    /// `Err`; problems in a readable payload go into `problems`, and the
    /// draft is still returned so that the rest can be checked too.
    fn convert(&self, input: &Input<'_>, problems: &mut Problems) -> Result<Draft, ConvertError>;
}

/// The adapter of `provider`.
pub fn adapter(provider: Provider) -> &'static dyn Adapter {
    match provider {
        Provider::Careem => &careem::Careem,
        Provider::Talabat => &talabat::Talabat,
        Provider::Deliveroo => &deliveroo::Deliveroo,
        Provider::Ubereats => &ubereats::UberEats,
        Provider::Wolt => &wolt::Wolt,
        Provider::Justeat => &justeat::JustEat,
        Provider::Doordash => &doordash::DoorDash,
        Provider::Glovo => &glovo::Glovo,
        Provider::Grab => &grab::Grab,
        Provider::Keeta => &keeta::Keeta,
        Provider::Direct => &direct::Direct,
    }
}

/// An id written as a JSON string or number (`"991"` or `991`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Id(pub String);

impl Id {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Id;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an id (string or integer)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Id, E> {
                Ok(Id(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Id, E> {
                Ok(Id(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Id, E> {
                Ok(Id(v.to_string()))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// A coordinate written as a JSON number or a numeric string. Coordinates
/// are not money: `f64` is their canonical type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Coord(pub f64);

impl<'de> Deserialize<'de> for Coord {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Coord;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a coordinate (number or numeric string)")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Coord, E> {
                Ok(Coord(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Coord, E> {
                Ok(Coord(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Coord, E> {
                Ok(Coord(v as f64))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Coord, E> {
                v.trim().parse().map(Coord).map_err(|_| {
                    E::invalid_value(de::Unexpected::Str(&crate::convert::excerpt(v)), &self)
                })
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// Latitude and longitude together, or neither; `(0, 0)` is what providers
/// send for "unknown" and is dropped.
pub(crate) fn coords(lat: Option<Coord>, lng: Option<Coord>) -> (Option<f64>, Option<f64>) {
    match (lat, lng) {
        (Some(Coord(lat)), Some(Coord(lng))) if !(lat == 0.0 && lng == 0.0) => {
            (Some(lat), Some(lng))
        }
        _ => (None, None),
    }
}

/// An address from its street lines and what else is known; none without a
/// street line (coordinates or a city alone lead to no door).
pub(crate) fn address(
    lines: Vec<String>,
    city: Option<String>,
    postcode: Option<String>,
    (lat, lng): (Option<f64>, Option<f64>),
) -> Option<Address> {
    (!lines.is_empty()).then_some(Address {
        lines,
        city,
        area: None,
        postcode,
        lat,
        lng,
    })
}

/// Paid through the provider: nothing to collect.
pub(crate) fn paid_online() -> Payment {
    Payment {
        method: PaymentMethod::Online,
        paid: true,
        amount_due: 0,
        change_for: None,
    }
}

/// Cash at the door, `due` to collect.
pub(crate) fn cash(due: i64) -> Payment {
    Payment {
        method: PaymentMethod::Cash,
        paid: false,
        amount_due: due,
        change_for: None,
    }
}

/// For providers that say only how much is due at the door: cash when that
/// is above 0, else paid through the provider.
pub(crate) fn cash_if_due(due: i64) -> Payment {
    if due > 0 { cash(due) } else { paid_online() }
}

/// Whether the provider's total already includes the tax, read from the
/// amounts themselves: inclusive when the total adds up without the tax,
/// exclusive when it adds up only with it, else `default` (the order check
/// then reports the mismatch). With no tax both add up and `default` wins.
pub(crate) fn tax_inclusive(totals: &Totals, default: bool) -> bool {
    let with = |inclusive| {
        Totals {
            tax_inclusive: inclusive,
            fees: Vec::new(),
            discounts: Vec::new(),
            ..*totals
        }
        .expected_total()
            == Some(totals.total)
    };
    match (with(true), with(false)) {
        (true, false) => true,
        (false, true) => false,
        _ => default,
    }
}

/// `Σ amounts` of decimals, each converted at its own path.
pub(crate) fn sum_amounts<'a>(
    money: crate::convert::Money,
    problems: &mut Problems,
    parts: impl IntoIterator<Item = (String, &'a Decimal)>,
) -> i64 {
    parts
        .into_iter()
        .map(|(path, d)| money.amount(problems, &path, d))
        .fold(0_i64, i64::saturating_add)
}

/// A provider status, normalised (both spellings of cancel, any case).
pub(crate) fn state_of(status: &str) -> OrderState {
    match status
        .trim()
        .to_ascii_lowercase()
        .replace([' ', '-'], "_")
        .as_str()
    {
        "pending" | "placed" | "new" | "created" => OrderState::Placed,
        "accepted" | "confirmed" | "acknowledged" => OrderState::Accepted,
        "rejected" | "declined" | "denied" => OrderState::Rejected,
        "preparing" | "in_preparation" | "production" => OrderState::Preparing,
        "ready" | "ready_for_pickup" | "prepared" => OrderState::Ready,
        "picked_up" | "collected" => OrderState::PickedUp,
        "delivered" | "completed" => OrderState::Delivered,
        "canceled" | "cancelled" | "order_cancelled" | "order_canceled" => OrderState::Cancelled,
        _ => OrderState::Other,
    }
}

/// The event a state stands for: a cancellation or rejection ends the
/// order, anything else updates it.
pub(crate) fn event_of(state: OrderState) -> Event {
    match state {
        OrderState::Cancelled | OrderState::Rejected => Event::Cancelled,
        _ => Event::Updated,
    }
}

/// A value that may be `null` where its default is meant (Glovo's and
/// Grab's `null` lists are empty ones).
pub(crate) fn nullable<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// JSON text nested in a payload's string `field` (Keeta's `message`),
/// parsed like [`Input::parse`]: the error names the field, the path inside
/// its text and the position in that text, cut to a log line's length.
pub(crate) fn parse_nested<T: serde::de::DeserializeOwned>(
    field: &str,
    text: &str,
) -> Result<T, ConvertError> {
    let refuse = |path: &str, e: serde_json::Error| {
        let text = if path.is_empty() || path == "." {
            format!("{field} (json text): {e}")
        } else {
            format!("{field} (json text): {path}: {e}")
        };
        ConvertError::Parse(
            shared::redact::truncate(&text, 2 * shared::redact::LOG_VALUE_CHARS).into_owned(),
        )
    };
    let mut de = serde_json::Deserializer::from_str(text);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let full = e.path().to_string();
        let path = full.trim_end_matches(".?").trim_end_matches('?').to_owned();
        refuse(&path, e.into_inner())
    })?;
    de.end().map_err(|e| refuse("", e))?;
    Ok(value)
}

/// A time in unix milliseconds (Keeta); a problem at `path` when out of
/// range.
pub(crate) fn unix_millis(
    problems: &mut Problems,
    path: &str,
    ms: i64,
) -> Option<time::OffsetDateTime> {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok();
    if t.is_none() {
        problems.push(
            path,
            canonical::order::ProblemKind::OutOfRange,
            format!("{ms} is not a time in unix milliseconds"),
        );
    }
    t
}

/// A discount worth listing: `None` for 0.
pub(crate) fn discount(
    name: &str,
    amount: i64,
    funded_by: Option<canonical::order::Funder>,
) -> Option<canonical::order::Discount> {
    (amount != 0).then(|| canonical::order::Discount {
        name: name.to_owned(),
        amount,
        funded_by,
    })
}

/// A fee worth listing: `None` for 0.
pub(crate) fn fee(name: &str, amount: i64) -> Option<canonical::order::Fee> {
    (amount != 0).then(|| canonical::order::Fee {
        name: name.to_owned(),
        amount,
    })
}

/// The total of `totals` from its parts; a problem at `path` when it does
/// not fit in 64 bits (then 0).
pub(crate) fn computed_total(problems: &mut Problems, path: &str, totals: &Totals) -> i64 {
    totals.expected_total().unwrap_or_else(|| {
        problems.push(
            path,
            canonical::order::ProblemKind::OutOfRange,
            "the sum of the order's amounts does not fit in 64-bit minor units",
        );
        0
    })
}
