//! The canonical order: the one shape every provider's webhook becomes
//! (DESIGN.md §4), published on `orders.<tenant>.<provider>` and POSTed to the
//! tenant's backend.
//!
//! # Contract
//! - The JSON names of DESIGN.md §4 never change. Fields beyond them are
//!   marked "added" in their docs; new fields in `orderhub.order.v1` must be
//!   `Option` or `#[serde(default)]`, so that orders written by an older
//!   producer still parse. Unknown fields are ignored on input, so an older
//!   reader accepts a newer producer's orders.
//! - Money is exact: every amount is an `i64` count of the minor unit of the
//!   order's [`Currency`] (3.250 JOD is `3250`), never a float. See
//!   [`crate::money`] for turning provider amounts into minor units.
//! - The JSON Schema generated from these types is committed at
//!   `canonical/schema/order.v1.schema.json`; a test fails when it drifts. It
//!   describes orders as the hub writes them: every property is present
//!   (`null` where absent), money is `integer`, enums are closed sets.
//!   After changing a type: `UPDATE_SCHEMA=1 cargo test -p canonical schema`,
//!   then commit the file. `canonical/schema/order.v1.example.json` is a complete
//!   example that a test deserializes, validates and compares.
//!
//! # Events without an order body
//! Several providers announce an update or a cancellation with little more
//! than the order id (Talabat's `posOrderStatus`, Grab's order state, Just
//! Eat's cancel), and the transformer keeps no state. Such an order carries
//! the ids, `event` and `status`, an empty `items`, and `null` for
//! `placed_at`, `currency`, `fulfilment`, `totals` and `payment`. A `created`
//! order always has all of them and at least one item: [`Order::validate`]
//! enforces both.
//!
//! # Arithmetic
//! Every line (an item or a modifier, at any depth) satisfies
//! `total = (unit_price + Σ modifiers[].total) × quantity`: a modifier's
//! `quantity` and `total` are per ONE unit of its parent line. Two burgers,
//! each with one 0.350 cheese: the cheese has `quantity` 1 and `total` 350,
//! and the burger's `total` is `(unit_price + 350) × 2`. Then
//! `subtotal = Σ items[].total` and
//! `total = subtotal + delivery_fee + service_fee + tip − discount`, plus
//! `tax` unless `tax_inclusive`. [`Order::validate`] lists the exact rules.

use std::fmt;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};
use time::OffsetDateTime;

use crate::Provider;
use crate::money::Currency;

/// The value of every order's `schema` field.
pub const SCHEMA_ID: &str = "orderhub.order.v1";

/// The largest `quantity` a line may have; anything above is an adapter or
/// provider error, not an order.
pub const MAX_QUANTITY: u32 = 10_000;

/// One canonical order event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[cfg_attr(test, schemars(title = "orderhub canonical order"))]
pub struct Order {
    /// Always `"orderhub.order.v1"`; a reader refuses any other value.
    pub schema: SchemaV1,
    /// Hub id of the raw webhook: which copy of the event this is (each
    /// webhook the provider sends has its own).
    pub webhook_id: String,
    /// Added. The stable key of this order event, sent to the backend as
    /// `Idempotency-Key`: the same for every copy the provider sends of the
    /// event (a re-send whose body differs in a timestamp or a byte), every
    /// retry, redelivery and replay. Derived by [`Order::event_key`] from
    /// the tenant, the provider, the provider's order id and the event (for
    /// `updated`, also the update's content; for `status_failed`, the
    /// decision's `status_id`). Null only on orders written before it
    /// existed; the backend then keys on `webhook_id`.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// What happened to the order.
    pub event: Event,
    /// Added. The state the provider reports, for `updated` (required) and
    /// `cancelled` events; null on most `created` events.
    pub status: Option<Status>,
    /// The provider the webhook came from.
    pub provider: Provider,
    /// The provider's own order id.
    pub provider_order_id: String,
    /// The short code the courier and the customer see (Deliveroo's
    /// `display_id`, Talabat's `shortCode`); null when the provider has none.
    pub display_code: Option<String>,
    /// Internal id of the restaurant company.
    pub tenant: String,
    /// Internal branch id from the account's store mapping; null if unmapped.
    pub branch: Option<String>,
    /// When the customer placed the order, RFC 3339 with the offset the
    /// provider gave. Required for `created`.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[cfg_attr(test, schemars(with = "Option<String>", extend("format" = "date-time")))]
    pub placed_at: Option<OffsetDateTime>,
    /// Added. For an order placed in advance, when the customer wants it
    /// (delivered or collected), RFC 3339; null for "as soon as possible".
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[cfg_attr(test, schemars(with = "Option<String>", extend("format" = "date-time")))]
    pub scheduled_for: Option<OffsetDateTime>,
    /// Added. The provider marked this as a test order (Talabat `test`, Just
    /// Eat `IsTest`): the backend should not cook it.
    #[serde(default)]
    pub is_test: bool,
    /// ISO 4217 currency of every amount in the order. Required for `created`
    /// and whenever the order carries items, totals or payment.
    pub currency: Option<Currency>,
    /// Who ordered. Providers mask or omit much of this.
    pub customer: Customer,
    /// How the order reaches the customer. Required for `created`.
    pub fulfilment: Option<Fulfilment>,
    /// The ordered lines. At least one for `created`; may be empty for an
    /// update or cancellation that carried no order body.
    pub items: Vec<Item>,
    /// Order-level amounts. Required for `created` and when `items` is not
    /// empty.
    pub totals: Option<Totals>,
    /// How the order is paid. Required for `created`.
    pub payment: Option<Payment>,
    /// Added. The customer's note to the restaurant for the whole order.
    pub notes: Option<String>,
    /// Added. Allergy or dietary note, kept apart from `notes` so a kitchen
    /// screen can show it prominently.
    pub allergy_notes: Option<String>,
    /// Added. Whether the customer asked for cutlery; null if the provider
    /// does not say.
    pub cutlery: Option<bool>,
    /// Where the raw webhook sits in JetStream, for audit and replay (for
    /// `status_failed`: the decision on the `STATUS` stream).
    pub raw: Raw,
    /// Added. Present on `status_failed` events only (absent, not null,
    /// on every other event): the answer that did not reach the provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_call: Option<crate::status::StatusCall>,
}

/// The `schema` field: serializes as [`SCHEMA_ID`] and refuses anything else.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct SchemaV1;

impl Serialize for SchemaV1 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(SCHEMA_ID)
    }
}

impl<'de> Deserialize<'de> for SchemaV1 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let id = String::deserialize(deserializer)?;
        if id == SCHEMA_ID {
            Ok(SchemaV1)
        } else {
            Err(de::Error::custom(format_args!(
                "unsupported order schema {id:?}, expected {SCHEMA_ID:?}"
            )))
        }
    }
}

#[cfg(test)]
impl schemars::JsonSchema for SchemaV1 {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SchemaV1".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "const": SCHEMA_ID })
    }
}

#[cfg(test)]
impl schemars::JsonSchema for Provider {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Provider".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let names: Vec<&str> = Provider::ALL.iter().map(|p| p.as_str()).collect();
        schemars::json_schema!({
            "description": "The provider the webhook came from.",
            "type": "string",
            "enum": names,
        })
    }
}

/// What happened to the order. Added: `status_failed`, not from the
/// provider: the hub could not deliver an answer to the provider (the
/// backend's, or its own `auto_accept` / `auto_reject`) in time;
/// `status_call` says which and why, and the order carries only its ids,
/// like an update without a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Event {
    Created,
    Updated,
    Cancelled,
    StatusFailed,
}

impl Event {
    /// The JSON spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Event::Created => "created",
            Event::Updated => "updated",
            Event::Cancelled => "cancelled",
            Event::StatusFailed => "status_failed",
        }
    }

    /// Where the event stands in an order's life, for per-order ordering:
    /// `created` (0) before every `updated` (1) before `cancelled` (2);
    /// events of one phase keep the order they reached the hub in.
    /// `status_failed` is the hub's own report, not the provider's, and
    /// has none: it is never held back.
    pub const fn phase(self) -> Option<u8> {
        match self {
            Event::Created => Some(0),
            Event::Updated => Some(1),
            Event::Cancelled => Some(2),
            Event::StatusFailed => None,
        }
    }
}

/// Added. The provider's status report that an update or cancellation carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Status {
    /// The state, normalised across providers.
    pub state: OrderState,
    /// The provider's own status, verbatim (`ORDER_CANCELLED`, `canceled`):
    /// for logs, and for whatever `other` stands for.
    pub provider_status: Option<String>,
    /// The reason the provider gives (cancellation or rejection reason).
    pub reason: Option<String>,
    /// When the provider says the change happened, RFC 3339.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[cfg_attr(test, schemars(with = "Option<String>", extend("format" = "date-time")))]
    pub at: Option<OffsetDateTime>,
}

/// Added. An order's state, normalised across providers. `modified`: the
/// order's content changed (items removed or replaced) and the order carries
/// the new content; `other`: a state this list does not have, see
/// `provider_status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum OrderState {
    Placed,
    Accepted,
    Rejected,
    Preparing,
    Ready,
    CourierAssigned,
    CourierArrived,
    PickedUp,
    Delivered,
    Cancelled,
    Modified,
    Other,
}

/// Who ordered. Every field is optional: providers mask or withhold them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Customer {
    pub name: Option<String>,
    /// As the provider gives it; often a masked relay number.
    pub phone: Option<String>,
    pub email: Option<String>,
    /// Added. The code to dial after a masked relay number (Deliveroo's
    /// `contact_access_code`, Just Eat's `phone_masking_code`).
    pub phone_access_code: Option<String>,
}

/// How the order reaches the customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Fulfilment {
    #[serde(rename = "type")]
    pub kind: FulfilmentType,
    /// Added. For `delivery`: whether the platform's courier or the
    /// restaurant's own driver delivers; null for other types or if unknown.
    pub delivered_by: Option<Courier>,
    /// The delivery address; null when the platform's courier delivers and
    /// the provider withholds it, and for pickup and dine-in.
    pub address: Option<Address>,
    /// Instructions for the courier or for handing the order over.
    pub instructions: Option<String>,
    /// Added. When the order must be ready for the courier or the customer to
    /// collect, RFC 3339, where the provider says.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[cfg_attr(test, schemars(with = "Option<String>", extend("format" = "date-time")))]
    pub ready_by: Option<OffsetDateTime>,
    /// Added. The table, for `dine_in`.
    pub table: Option<String>,
}

/// The fulfilment types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum FulfilmentType {
    Delivery,
    Pickup,
    DineIn,
}

/// Added. Who delivers a `delivery` order: `platform`, the provider's
/// courier, collects from the restaurant; `restaurant`, the restaurant's own
/// driver delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Courier {
    Platform,
    Restaurant,
}

/// A delivery address.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Address {
    /// Street lines, most significant first (building, street, floor, flat).
    pub lines: Vec<String>,
    pub city: Option<String>,
    /// District or area, as providers in the Gulf and Levant give it.
    pub area: Option<String>,
    /// Added. Postal code, where the country has them.
    pub postcode: Option<String>,
    /// Latitude in degrees (WGS 84); given together with `lng` or not at all.
    pub lat: Option<f64>,
    /// Longitude in degrees (WGS 84).
    pub lng: Option<f64>,
}

/// An ordered line: an item, or (nested in `modifiers`) a modifier of one.
/// Amounts are integer minor units of the order's currency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Item {
    /// The provider's id for the item or modifier (PLU, POS id); null when
    /// the provider sends none.
    pub provider_item_id: Option<String>,
    /// The internal product id from the account's product mapping; null =
    /// unmapped.
    pub product_id: Option<String>,
    pub name: String,
    /// Units of this line. For a modifier: per ONE unit of its parent line.
    #[cfg_attr(test, schemars(range(min = 1, max = 10_000)))]
    pub quantity: u32,
    /// Price of one unit, without modifiers, in minor units. Not negative for
    /// an item; a modifier may be negative ("no cheese: −0.200").
    pub unit_price: i64,
    /// `(unit_price + Σ modifiers[].total) × quantity`, in minor units. For a
    /// modifier this is per ONE unit of its parent line.
    pub total: i64,
    /// The customer's note on this line.
    pub notes: Option<String>,
    /// Modifiers (options, toppings, choices), nested to any depth.
    pub modifiers: Vec<Item>,
}

/// Order-level amounts, in minor units of the order's currency.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Totals {
    /// `Σ items[].total`.
    #[cfg_attr(test, schemars(range(min = 0)))]
    pub subtotal: i64,
    #[cfg_attr(test, schemars(range(min = 0)))]
    pub delivery_fee: i64,
    /// Every fee other than delivery: service, bag, container, small-order
    /// fees; itemised in `fees`.
    #[cfg_attr(test, schemars(range(min = 0)))]
    pub service_fee: i64,
    /// Tax on the order; added to `total` unless `tax_inclusive`.
    #[cfg_attr(test, schemars(range(min = 0)))]
    pub tax: i64,
    /// Every discount, as a positive amount subtracted from `total`;
    /// itemised in `discounts`.
    #[cfg_attr(test, schemars(range(min = 0)))]
    pub discount: i64,
    #[cfg_attr(test, schemars(range(min = 0)))]
    pub tip: i64,
    /// What the customer is charged: `subtotal + delivery_fee + service_fee
    /// + tip − discount`, plus `tax` unless `tax_inclusive`.
    #[cfg_attr(test, schemars(range(min = 0)))]
    pub total: i64,
    /// Added. Prices already include `tax` (VAT-inclusive menus: UK, EU,
    /// Singapore, the Gulf); `tax` is then the part of `total` that is tax,
    /// for the invoice, and is not added again.
    #[serde(default)]
    pub tax_inclusive: bool,
    /// Added. The fees that make up `service_fee`; empty if not itemised.
    #[serde(default)]
    pub fees: Vec<Fee>,
    /// Added. The discounts that make up `discount`; empty if not itemised.
    #[serde(default)]
    pub discounts: Vec<Discount>,
}

/// Added. One fee within `service_fee`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Fee {
    /// The provider's name for it (`bag_fee`, `containerCharge`).
    pub name: String,
    #[cfg_attr(test, schemars(range(min = 0)))]
    pub amount: i64,
}

/// Added. One discount within `discount`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Discount {
    /// The provider's name for it (promotion or voucher name).
    pub name: String,
    #[cfg_attr(test, schemars(range(min = 0)))]
    pub amount: i64,
    /// Who pays for it; null if the provider does not say. A discount split
    /// between sponsors is listed once per sponsor.
    pub funded_by: Option<Funder>,
}

/// Added. Who pays for a discount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Funder {
    Platform,
    Merchant,
    ThirdParty,
}

/// How the order is paid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Payment {
    pub method: PaymentMethod,
    /// The customer has already paid in full; nothing is to be collected.
    pub paid: bool,
    /// What is still to be collected from the customer, in minor units: 0
    /// when `paid`, at most `totals.total`.
    #[cfg_attr(test, schemars(range(min = 0)))]
    pub amount_due: i64,
    /// Added. For cash: the note the customer will pay with, so the driver
    /// brings change (Talabat's `requiredMoneyChange`); at least `amount_due`.
    #[cfg_attr(test, schemars(range(min = 0)))]
    pub change_for: Option<i64>,
}

/// How the customer pays: `card` (on delivery or in the app, as the provider
/// says), `cash`, `online` (through the provider: wallet, stored card,
/// voucher), `other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum PaymentMethod {
    Card,
    Cash,
    Online,
    Other,
}

/// Where the raw webhook sits in JetStream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Raw {
    /// The stream, `WEBHOOKS`.
    pub stream: String,
    /// The stream sequence of the raw webhook (from 1).
    #[cfg_attr(test, schemars(range(min = 1)))]
    pub seq: u64,
    /// The subject, `webhooks.raw.<provider>.<account>`.
    pub subject: String,
}

impl Item {
    /// `(unit_price + Σ modifiers[].total) × quantity` from the modifiers'
    /// stated totals; `None` if it does not fit in `i64`.
    pub fn expected_total(&self) -> Option<i64> {
        i64::try_from(self.expected_total_wide()).ok()
    }

    fn expected_total_wide(&self) -> i128 {
        // i64 sums and a u32 factor stay far inside i128.
        let modifiers: i128 = self.modifiers.iter().map(|m| i128::from(m.total)).sum();
        (i128::from(self.unit_price) + modifiers) * i128::from(self.quantity)
    }

    /// Sets `total` of this line and of every modifier below it, bottom-up,
    /// from unit prices and quantities; for providers that send no line
    /// totals (Careem). Returns the line's total, or `None` if an amount
    /// does not fit in `i64` (totals are then left partly updated).
    pub fn fill_totals(&mut self) -> Option<i64> {
        for modifier in &mut self.modifiers {
            modifier.fill_totals()?;
        }
        self.total = self.expected_total()?;
        Some(self.total)
    }
}

impl Totals {
    /// `subtotal + delivery_fee + service_fee + tip − discount`, plus `tax`
    /// unless `tax_inclusive`; `None` if it does not fit in `i64`.
    pub fn expected_total(&self) -> Option<i64> {
        i64::try_from(self.expected_total_wide()).ok()
    }

    fn expected_total_wide(&self) -> i128 {
        let tax = if self.tax_inclusive { 0 } else { self.tax };
        [
            self.subtotal,
            self.delivery_fee,
            self.service_fee,
            tax,
            self.tip,
        ]
        .into_iter()
        .map(i128::from)
        .sum::<i128>()
            - i128::from(self.discount)
    }
}

/// One problem [`Order::validate`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The JSON path of the field, e.g. `items[2].modifiers[0].quantity`.
    pub path: String,
    pub kind: ProblemKind,
    /// Lower-case, without the path.
    pub message: String,
}

/// How many problems the text of [`ValidationErrors`] lists, and how many
/// characters of a path or message it copies: that text is a log line and
/// a dead letter's error, and a payload can hold thousands of bad lines or
/// a megabyte-long key. The list itself ([`ValidationErrors::errors`]) is
/// whole.
pub const SHOWN_PROBLEMS: usize = 20;
const SHOWN_CHARS: usize = 256;

/// `text` cut to [`SHOWN_CHARS`] characters, saying how long it was.
fn cut(text: &str) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(SHOWN_CHARS) {
        None => text.into(),
        Some((end, _)) => format!("{}… ({} bytes)", &text[..end], text.len()).into(),
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", cut(&self.path), cut(&self.message))
    }
}

/// The class of a [`FieldError`], for tests and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProblemKind {
    /// A field the event requires is null.
    Missing,
    /// A string is blank or a list is empty where it may not be.
    Empty,
    /// A number outside its allowed range (quantity, coordinates, sequence).
    OutOfRange,
    /// A negative amount where amounts may not be negative.
    Negative,
    /// An amount differs from the one its parts add up to.
    Mismatch,
    /// Fields that contradict each other.
    Inconsistent,
}

impl ProblemKind {
    /// A short stable name for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::Missing => "missing",
            ProblemKind::Empty => "empty",
            ProblemKind::OutOfRange => "out_of_range",
            ProblemKind::Negative => "negative",
            ProblemKind::Mismatch => "mismatch",
            ProblemKind::Inconsistent => "inconsistent",
        }
    }
}

/// Every problem found in an order, in field order. Adapters may push their
/// own conversion problems into the same list before validating.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValidationErrors(Vec<FieldError>);

impl ValidationErrors {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a problem at `path` (lower-case `message`, no trailing period).
    pub fn push(&mut self, path: impl Into<String>, kind: ProblemKind, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            kind,
            message: message.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn errors(&self) -> &[FieldError] {
        &self.0
    }

    pub fn into_vec(self) -> Vec<FieldError> {
        self.0
    }

    /// `Ok(())` when no problem was recorded.
    pub fn into_result(self) -> Result<(), Self> {
        if self.0.is_empty() { Ok(()) } else { Err(self) }
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "invalid order: {n} problem{}",
            if n == 1 { "" } else { "s" }
        )?;
        for (i, e) in self.0.iter().take(SHOWN_PROBLEMS).enumerate() {
            write!(f, "{}{e}", if i == 0 { ": " } else { "; " })?;
        }
        if n > SHOWN_PROBLEMS {
            write!(f, "; and {} more", n - SHOWN_PROBLEMS)?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

/// The version tag hashed into every [`Order::event_key`]: a change to the
/// derivation is a new tag, never a silent change of the keys.
pub const EVENT_KEY_VERSION: &str = "orderhub.event-key.v1";

impl Order {
    /// The stable key of this order event (the `idempotency_key` field, the
    /// backend's `Idempotency-Key`): `<event>-` and 32 lowercase hex digits,
    /// the first 128 bits of SHA-256 over [`EVENT_KEY_VERSION`], the
    /// tenant, the provider, the provider's order id, the event and a
    /// discriminator, each length-prefixed:
    /// - `created`, `cancelled`: none. An order is created once and
    ///   cancelled once, so every copy of its `created` (a re-send with a
    ///   new timestamp, a trailing newline, a changed price) has one key.
    /// - `updated`: SHA-256 of the order as JSON with `webhook_id`, `raw`
    ///   and `idempotency_key` blanked: a re-send of the same update has the
    ///   same key, a different update (another state, another `status.at`,
    ///   other items) another.
    /// - `status_failed`: the failed decision's `status_id`.
    pub fn event_key(&self) -> String {
        use sha2::{Digest, Sha256};
        let discriminator: Vec<u8> = match self.event {
            Event::Created | Event::Cancelled => Vec::new(),
            Event::StatusFailed => self
                .status_call
                .as_ref()
                .map(|c| c.status_id.clone())
                .unwrap_or_else(|| self.webhook_id.clone())
                .into_bytes(),
            Event::Updated => {
                let mut content = self.clone();
                content.webhook_id = String::new();
                content.idempotency_key = None;
                content.raw = Raw {
                    stream: String::new(),
                    seq: 0,
                    subject: String::new(),
                };
                let json = serde_json::to_vec(&content).expect("an order serialises");
                Sha256::digest(&json).to_vec()
            }
        };
        let mut h = Sha256::new();
        for part in [
            EVENT_KEY_VERSION.as_bytes(),
            self.tenant.as_bytes(),
            self.provider.as_str().as_bytes(),
            self.provider_order_id.as_bytes(),
            self.event.as_str().as_bytes(),
            &discriminator,
        ] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        let digest = h.finalize();
        let mut key = String::with_capacity(48);
        key.push_str(self.event.as_str());
        key.push('-');
        for b in &digest[..16] {
            key.push_str(&format!("{b:02x}"));
        }
        key
    }

    /// Checks the order and returns every problem found, not just the first.
    ///
    /// The rules, with the paths they report:
    /// - `webhook_id`, `provider_order_id`, `tenant`: not blank; `branch`,
    ///   `display_code`, and `provider_item_id`/`product_id` of every line:
    ///   not blank when present.
    /// - `created`: `placed_at`, `currency`, `fulfilment`, `totals` and
    ///   `payment` present (Missing), and `items` not empty (Empty).
    /// - Any event: `currency` present when items, totals or payment are;
    ///   `totals` present when items are.
    /// - `updated`: `status` present. `cancelled`: `status.state`, when
    ///   present, is `cancelled` or `rejected`.
    /// - Every line at any depth (`items[i]`, `items[i].modifiers[j]`, ...):
    ///   `name` not blank; `quantity` in 1..=[`MAX_QUANTITY`]; and, when the
    ///   quantity is valid, `total == (unit_price + Σ modifiers[].total) ×
    ///   quantity` using the modifiers' stated totals (each wrong line is
    ///   reported at its own path). Top-level items: `unit_price` and `total`
    ///   not negative; modifiers may be negative.
    /// - When items are present: `totals.subtotal == Σ items[].total`.
    /// - `totals`: every amount, fee and discount not negative;
    ///   `totals.total == subtotal + delivery_fee + service_fee + tip −
    ///   discount (+ tax unless tax_inclusive)`; when itemised,
    ///   `Σ fees[].amount == service_fee` and `Σ discounts[].amount == discount`.
    /// - `payment`: `amount_due` not negative, not above `totals.total`, and 0
    ///   when `paid`; `change_for`, when present, at least `amount_due`.
    /// - `fulfilment`: `delivered_by` only for `delivery`; `address.lat` and
    ///   `address.lng` both present or both null, finite, within ±90 and ±180.
    /// - `raw`: `stream` and `subject` not blank, `seq` at least 1.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = ValidationErrors::new();
        self.check(&mut errors);
        errors.into_result()
    }

    /// Like [`Order::validate`], appending to a list the caller already has.
    pub fn check(&self, errors: &mut ValidationErrors) {
        let e = errors;
        not_blank(e, "webhook_id", &self.webhook_id);
        match (self.event, &self.status) {
            (Event::Updated, None) => e.push(
                "status",
                ProblemKind::Missing,
                "is required for an updated order",
            ),
            (Event::Cancelled, Some(status))
                if !matches!(status.state, OrderState::Cancelled | OrderState::Rejected) =>
            {
                e.push(
                    "status.state",
                    ProblemKind::Inconsistent,
                    "must be cancelled or rejected for a cancelled order",
                )
            }
            _ => {}
        }
        match (self.event, &self.status_call) {
            (Event::StatusFailed, None) => e.push(
                "status_call",
                ProblemKind::Missing,
                "is required for a status_failed event",
            ),
            (Event::Created | Event::Updated | Event::Cancelled, Some(_)) => e.push(
                "status_call",
                ProblemKind::Inconsistent,
                "is only for status_failed events",
            ),
            _ => {}
        }
        not_blank(e, "provider_order_id", &self.provider_order_id);
        opt_not_blank(e, "display_code", &self.display_code);
        not_blank(e, "tenant", &self.tenant);
        opt_not_blank(e, "branch", &self.branch);

        let created = self.event == Event::Created;
        if created && self.placed_at.is_none() {
            e.push(
                "placed_at",
                ProblemKind::Missing,
                "is required for a created order",
            );
        }
        if self.currency.is_none() {
            if created {
                e.push(
                    "currency",
                    ProblemKind::Missing,
                    "is required for a created order",
                );
            } else if !self.items.is_empty() || self.totals.is_some() || self.payment.is_some() {
                e.push(
                    "currency",
                    ProblemKind::Missing,
                    "is required when the order carries amounts",
                );
            }
        }
        match &self.fulfilment {
            Some(f) => check_fulfilment(e, f),
            None if created => e.push(
                "fulfilment",
                ProblemKind::Missing,
                "is required for a created order",
            ),
            None => {}
        }

        if created && self.items.is_empty() {
            e.push(
                "items",
                ProblemKind::Empty,
                "must not be empty for a created order",
            );
        }
        for (i, item) in self.items.iter().enumerate() {
            check_line(e, &format!("items[{i}]"), item, true);
        }

        match &self.totals {
            Some(totals) => check_totals(e, totals, &self.items),
            None if created => e.push(
                "totals",
                ProblemKind::Missing,
                "is required for a created order",
            ),
            None if !self.items.is_empty() => e.push(
                "totals",
                ProblemKind::Missing,
                "is required when items are present",
            ),
            None => {}
        }

        match &self.payment {
            Some(payment) => check_payment(e, payment, self.totals.as_ref()),
            None if created => e.push(
                "payment",
                ProblemKind::Missing,
                "is required for a created order",
            ),
            None => {}
        }

        not_blank(e, "raw.stream", &self.raw.stream);
        if self.raw.seq == 0 {
            e.push("raw.seq", ProblemKind::OutOfRange, "must be at least 1");
        }
        not_blank(e, "raw.subject", &self.raw.subject);
    }
}

fn not_blank(e: &mut ValidationErrors, path: &str, value: &str) {
    if value.trim().is_empty() {
        e.push(path, ProblemKind::Empty, "must not be blank");
    }
}

fn opt_not_blank(e: &mut ValidationErrors, path: &str, value: &Option<String>) {
    if let Some(value) = value {
        not_blank(e, path, value);
    }
}

fn not_negative(e: &mut ValidationErrors, path: &str, amount: i64) {
    if amount < 0 {
        e.push(
            path,
            ProblemKind::Negative,
            format!("must not be negative, got {amount}"),
        );
    }
}

fn check_line(e: &mut ValidationErrors, path: &str, line: &Item, top_level: bool) {
    opt_not_blank(
        e,
        &format!("{path}.provider_item_id"),
        &line.provider_item_id,
    );
    opt_not_blank(e, &format!("{path}.product_id"), &line.product_id);
    not_blank(e, &format!("{path}.name"), &line.name);
    let quantity_ok = (1..=MAX_QUANTITY).contains(&line.quantity);
    if !quantity_ok {
        e.push(
            format!("{path}.quantity"),
            ProblemKind::OutOfRange,
            format!(
                "must be between 1 and {MAX_QUANTITY}, got {}",
                line.quantity
            ),
        );
    }
    if top_level {
        not_negative(e, &format!("{path}.unit_price"), line.unit_price);
        not_negative(e, &format!("{path}.total"), line.total);
    }
    // With a wrong quantity the total is wrong too; one report is enough.
    let expected = line.expected_total_wide();
    if quantity_ok && expected != i128::from(line.total) {
        let modifiers = expected / i128::from(line.quantity) - i128::from(line.unit_price);
        e.push(
            format!("{path}.total"),
            ProblemKind::Mismatch,
            format!(
                "expected {expected} = (unit_price {} + modifiers {modifiers}) × quantity {}, got {}",
                line.unit_price, line.quantity, line.total
            ),
        );
    }
    for (j, modifier) in line.modifiers.iter().enumerate() {
        check_line(e, &format!("{path}.modifiers[{j}]"), modifier, false);
    }
}

fn check_totals(e: &mut ValidationErrors, t: &Totals, items: &[Item]) {
    for (name, amount) in [
        ("subtotal", t.subtotal),
        ("delivery_fee", t.delivery_fee),
        ("service_fee", t.service_fee),
        ("tax", t.tax),
        ("discount", t.discount),
        ("tip", t.tip),
        ("total", t.total),
    ] {
        not_negative(e, &format!("totals.{name}"), amount);
    }
    if !items.is_empty() {
        let sum: i128 = items.iter().map(|i| i128::from(i.total)).sum();
        if sum != i128::from(t.subtotal) {
            e.push(
                "totals.subtotal",
                ProblemKind::Mismatch,
                format!("expected {sum} = sum of items[].total, got {}", t.subtotal),
            );
        }
    }
    let expected = t.expected_total_wide();
    if expected != i128::from(t.total) {
        let formula = if t.tax_inclusive {
            "subtotal + delivery_fee + service_fee + tip - discount (tax inclusive)"
        } else {
            "subtotal + delivery_fee + service_fee + tax + tip - discount"
        };
        e.push(
            "totals.total",
            ProblemKind::Mismatch,
            format!("expected {expected} = {formula}, got {}", t.total),
        );
    }
    for (j, fee) in t.fees.iter().enumerate() {
        not_blank(e, &format!("totals.fees[{j}].name"), &fee.name);
        not_negative(e, &format!("totals.fees[{j}].amount"), fee.amount);
    }
    if !t.fees.is_empty() {
        let sum: i128 = t.fees.iter().map(|f| i128::from(f.amount)).sum();
        if sum != i128::from(t.service_fee) {
            e.push(
                "totals.service_fee",
                ProblemKind::Mismatch,
                format!(
                    "expected {sum} = sum of fees[].amount, got {}",
                    t.service_fee
                ),
            );
        }
    }
    for (j, discount) in t.discounts.iter().enumerate() {
        not_blank(e, &format!("totals.discounts[{j}].name"), &discount.name);
        not_negative(e, &format!("totals.discounts[{j}].amount"), discount.amount);
    }
    if !t.discounts.is_empty() {
        let sum: i128 = t.discounts.iter().map(|d| i128::from(d.amount)).sum();
        if sum != i128::from(t.discount) {
            e.push(
                "totals.discount",
                ProblemKind::Mismatch,
                format!(
                    "expected {sum} = sum of discounts[].amount, got {}",
                    t.discount
                ),
            );
        }
    }
}

fn check_payment(e: &mut ValidationErrors, p: &Payment, totals: Option<&Totals>) {
    not_negative(e, "payment.amount_due", p.amount_due);
    if let Some(t) = totals.filter(|t| p.amount_due > t.total) {
        e.push(
            "payment.amount_due",
            ProblemKind::OutOfRange,
            format!(
                "must not exceed totals.total {}, got {}",
                t.total, p.amount_due
            ),
        );
    }
    if p.paid && p.amount_due != 0 {
        e.push(
            "payment.amount_due",
            ProblemKind::Inconsistent,
            format!("must be 0 when paid is true, got {}", p.amount_due),
        );
    }
    if let Some(change_for) = p.change_for.filter(|&c| c < p.amount_due) {
        e.push(
            "payment.change_for",
            ProblemKind::OutOfRange,
            format!(
                "must be at least amount_due {}, got {change_for}",
                p.amount_due
            ),
        );
    }
}

fn check_fulfilment(e: &mut ValidationErrors, f: &Fulfilment) {
    if f.delivered_by.is_some() && f.kind != FulfilmentType::Delivery {
        e.push(
            "fulfilment.delivered_by",
            ProblemKind::Inconsistent,
            "must be null unless type is delivery",
        );
    }
    opt_not_blank(e, "fulfilment.table", &f.table);
    let Some(address) = &f.address else { return };
    for (j, line) in address.lines.iter().enumerate() {
        not_blank(e, &format!("fulfilment.address.lines[{j}]"), line);
    }
    match (address.lat, address.lng) {
        (Some(_), None) => e.push(
            "fulfilment.address.lng",
            ProblemKind::Missing,
            "is required when lat is present",
        ),
        (None, Some(_)) => e.push(
            "fulfilment.address.lat",
            ProblemKind::Missing,
            "is required when lng is present",
        ),
        _ => {}
    }
    for (name, value, limit) in [("lat", address.lat, 90.0), ("lng", address.lng, 180.0)] {
        // NaN is in no range, so it is reported too.
        if let Some(v) = value.filter(|v| !(-limit..=limit).contains(v)) {
            let got = if v.is_finite() {
                v.to_string()
            } else {
                "a non-finite number".into()
            };
            e.push(
                format!("fulfilment.address.{name}"),
                ProblemKind::OutOfRange,
                format!("must be between -{limit} and {limit}, got {got}"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use proptest::prelude::*;
    use serde_json::Value;
    use time::UtcOffset;
    use time::format_description::well_known::Rfc3339;

    use super::*;

    const EXAMPLE: &str = include_str!("../schema/order.v1.example.json");

    fn schema_path() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schema/order.v1.schema.json")
    }

    /// The schema of orders as the hub writes them: every property present
    /// (null where absent), so `required` lists them all. The Rust type is
    /// more lenient on input: it takes a missing optional or defaulted field
    /// as null or its default.
    fn generated_schema() -> Value {
        let mut schema = serde_json::to_value(schemars::schema_for!(Order)).unwrap();
        require_all_properties(&mut schema);
        schema
    }

    fn require_all_properties(v: &mut Value) {
        match v {
            Value::Object(map) => {
                if let Some(Value::Object(properties)) = map.get("properties") {
                    // `status_call` is written on `status_failed` events only.
                    let mut names: Vec<String> = properties
                        .keys()
                        .filter(|k| *k != "status_call")
                        .cloned()
                        .collect();
                    names.sort();
                    map.insert("required".into(), names.into());
                }
                map.values_mut().for_each(require_all_properties);
            }
            Value::Array(values) => values.iter_mut().for_each(require_all_properties),
            _ => {}
        }
    }

    #[test]
    fn the_example_carries_its_own_event_key() {
        let order: Order = serde_json::from_str(EXAMPLE).unwrap();
        assert_eq!(
            order.idempotency_key.as_deref(),
            Some(order.event_key().as_str())
        );
    }

    #[test]
    fn every_copy_of_an_event_has_one_key_and_other_events_other_keys() {
        let order: Order = serde_json::from_str(EXAMPLE).unwrap();
        let key = order.event_key();
        assert!(key.starts_with("created-"), "{key}");
        assert_eq!(key.len(), "created-".len() + 32);
        // Another copy: another webhook, another place in the stream, a
        // changed body. Still the same order's creation.
        let mut copy = order.clone();
        copy.webhook_id = "another-webhook".into();
        copy.raw.seq = 99;
        copy.notes = Some("re-sent".into());
        copy.idempotency_key = Some("stale".into());
        assert_eq!(copy.event_key(), key);
        let other = |f: &dyn Fn(&mut Order)| {
            let mut o = order.clone();
            f(&mut o);
            o.event_key()
        };
        let keys = [
            key.clone(),
            other(&|o| o.tenant = "other".into()),
            other(&|o| o.provider = Provider::Talabat),
            other(&|o| o.provider_order_id = "TEST124".into()),
            other(&|o| o.event = Event::Cancelled),
        ];
        let distinct: std::collections::HashSet<&String> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len(), "{keys:?}");
        // Length prefixes: moving a byte between fields changes the key.
        let a = other(&|o| {
            o.tenant = "ab".into();
            o.provider_order_id = "c".into();
        });
        let b = other(&|o| {
            o.tenant = "a".into();
            o.provider_order_id = "bc".into();
        });
        assert_ne!(a, b);
    }

    #[test]
    fn an_update_is_keyed_by_its_content_not_by_its_copy() {
        let mut update: Order = serde_json::from_str(EXAMPLE).unwrap();
        update.event = Event::Updated;
        update.status = Some(Status {
            state: OrderState::Preparing,
            provider_status: Some("PREPARING".into()),
            reason: None,
            at: None,
        });
        let key = update.event_key();
        assert!(key.starts_with("updated-"), "{key}");
        let mut copy = update.clone();
        copy.webhook_id = "re-sent".into();
        copy.raw.seq = 7;
        assert_eq!(copy.event_key(), key, "a re-send of the same update");
        let mut later = update.clone();
        later.status.as_mut().unwrap().state = OrderState::Ready;
        assert_ne!(later.event_key(), key, "another update");
    }

    /// The committed schema is what the types generate. To update it after a
    /// change to the types: `UPDATE_SCHEMA=1 cargo test -p canonical schema`.
    #[test]
    fn schema_file_matches_the_type() {
        let generated = generated_schema();
        let path = schema_path();
        if std::env::var_os("UPDATE_SCHEMA").is_some() {
            let text = serde_json::to_string_pretty(&generated).unwrap() + "\n";
            std::fs::write(&path, text).unwrap();
            return;
        }
        let committed = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let committed: Value = serde_json::from_str(&committed).unwrap();
        // Compared as values: key order depends on serde_json's features.
        assert!(
            committed == generated,
            "{} differs from the Order type: run `UPDATE_SCHEMA=1 cargo test -p canonical schema` \
             and commit the file",
            path.display()
        );
    }

    fn def<'a>(schema: &'a Value, name: &str) -> &'a Value {
        &schema["$defs"][name]
    }

    fn strings(v: &Value) -> Vec<&str> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect()
    }

    #[test]
    fn schema_types_money_as_integers_and_enums_as_closed_sets() {
        let s = generated_schema();
        for field in [
            "subtotal",
            "delivery_fee",
            "service_fee",
            "tax",
            "discount",
            "tip",
            "total",
        ] {
            let f = &def(&s, "Totals")["properties"][field];
            assert_eq!(f["type"], "integer", "totals.{field}");
            assert_eq!(f["minimum"], 0, "totals.{field}");
        }
        for field in ["unit_price", "total"] {
            assert_eq!(
                def(&s, "Item")["properties"][field]["type"],
                "integer",
                "{field}"
            );
        }
        assert_eq!(
            def(&s, "Payment")["properties"]["amount_due"]["type"],
            "integer"
        );
        assert_eq!(
            def(&s, "Item")["properties"]["quantity"]["maximum"],
            MAX_QUANTITY
        );
        assert_eq!(s["properties"]["schema"]["const"], SCHEMA_ID);
        assert_eq!(
            strings(&def(&s, "Address")["required"]),
            ["area", "city", "lat", "lines", "lng", "postcode"]
        );

        assert_eq!(
            strings(&def(&s, "Event")["enum"]),
            ["created", "updated", "cancelled", "status_failed"]
        );
        assert_eq!(
            strings(&def(&s, "FulfilmentType")["enum"]),
            ["delivery", "pickup", "dine_in"]
        );
        assert_eq!(
            strings(&def(&s, "PaymentMethod")["enum"]),
            ["card", "cash", "online", "other"]
        );
        let providers: Vec<&str> = Provider::ALL.iter().map(|p| p.as_str()).collect();
        assert_eq!(strings(&def(&s, "Provider")["enum"]), providers);
        let currencies = strings(&def(&s, "Currency")["enum"]);
        assert!(currencies.contains(&"JOD") && !currencies.contains(&"XAU"));

        // Nothing in an order is a JSON number except the coordinates.
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(
            text.matches("\"number\"").count(),
            2,
            "only lat and lng are floats"
        );
    }

    #[test]
    fn example_round_trips_and_validates() {
        let order: Order = serde_json::from_str(EXAMPLE).unwrap();
        order.validate().unwrap();
        let original: Value = serde_json::from_str(EXAMPLE).unwrap();
        assert_eq!(serde_json::to_value(&order).unwrap(), original);

        // What the example is there to show.
        let jod = order.currency.unwrap();
        assert_eq!((jod.code(), jod.exponent()), ("JOD", 3));
        assert_eq!(order.customer.name.as_deref(), Some("ليلى حداد"));
        let placed_at = OffsetDateTime::parse("2025-05-01T18:30:00+03:00", &Rfc3339).unwrap();
        assert_eq!(order.placed_at, Some(placed_at));
        assert_eq!(order.placed_at.unwrap().offset().whole_hours(), 3);
        let meal = &order.items[0].modifiers[1];
        assert_eq!(meal.modifiers[0].total, 250, "a modifier nested two levels");
        let totals = order.totals.as_ref().unwrap();
        assert_eq!(
            (totals.discount, totals.tip, totals.total),
            (1000, 500, 13875)
        );
        assert_eq!(jod.format_amount(totals.total), "13.875");
    }

    fn example() -> Order {
        serde_json::from_str(EXAMPLE).unwrap()
    }

    fn paths(result: Result<(), ValidationErrors>) -> Vec<(String, ProblemKind)> {
        result
            .unwrap_err()
            .into_vec()
            .into_iter()
            .map(|e| (e.path, e.kind))
            .collect()
    }

    fn p(path: &str, kind: ProblemKind) -> (String, ProblemKind) {
        (path.to_owned(), kind)
    }

    #[test]
    fn validation_reports_every_problem_with_its_path() {
        use ProblemKind::*;
        let mut o = example();
        o.webhook_id = " ".into();
        o.items[0].modifiers[1].modifiers[0].quantity = 0;
        o.items[0].modifiers[0].total += 1; // also breaks items[0].total
        o.items[1].quantity = MAX_QUANTITY + 1;
        o.items[1].unit_price = -5;
        let t = o.totals.as_mut().unwrap();
        t.tip = -1;
        t.fees[0].amount += 10;
        let pay = o.payment.as_mut().unwrap();
        pay.amount_due = 1;
        let address = o.fulfilment.as_mut().unwrap().address.as_mut().unwrap();
        address.lat = Some(f64::NAN);
        address.lng = None;
        o.raw.seq = 0;

        let errors = o.validate().unwrap_err();
        assert_eq!(
            errors
                .errors()
                .iter()
                .map(|e| (e.path.clone(), e.kind))
                .collect::<Vec<_>>(),
            [
                p("webhook_id", Empty),
                p("fulfilment.address.lng", Missing),
                p("fulfilment.address.lat", OutOfRange),
                p("items[0].total", Mismatch),
                p("items[0].modifiers[0].total", Mismatch),
                p("items[0].modifiers[1].modifiers[0].quantity", OutOfRange),
                p("items[1].quantity", OutOfRange),
                p("items[1].unit_price", Negative),
                p("totals.tip", Negative),
                p("totals.total", Mismatch),
                p("totals.service_fee", Mismatch),
                p("payment.amount_due", Inconsistent),
                p("raw.seq", OutOfRange),
            ]
        );
        let text = errors.to_string();
        assert!(text.starts_with("invalid order: 13 problems: webhook_id: must not be blank; "));
        assert!(text.contains(
            "items[0].total: expected 10702 = (unit_price 3250 + modifiers 2101) × quantity 2, got 10700"
        ));
        assert!(text.contains("items[1].quantity: must be between 1 and 10000, got 10001"));
        assert_eq!(text, text.to_lowercase(), "messages are lower case");
    }

    #[test]
    fn subtotal_and_total_must_add_up() {
        let mut o = example();
        o.items[1].unit_price += 5;
        o.items[1].total += 5;
        assert_eq!(
            paths(o.validate()),
            [p("totals.subtotal", ProblemKind::Mismatch)],
        );
        let t = o.totals.as_mut().unwrap();
        t.subtotal += 5;
        t.total += 5;
        o.validate().unwrap();

        // Tax is added only when prices exclude it.
        let t = o.totals.as_mut().unwrap();
        t.tax_inclusive = false;
        let err = o.validate().unwrap_err().to_string();
        assert!(
            err.ends_with(
                "totals.total: expected 15690 = subtotal + delivery_fee + service_fee + tax + tip - discount, got 13880"
            ),
            "{err}"
        );
        let t = o.totals.as_mut().unwrap();
        t.total = t.expected_total().unwrap();
        o.validate().unwrap();
    }

    #[test]
    fn payment_rules() {
        let mut o = example();
        let pay = o.payment.as_mut().unwrap();
        pay.paid = false;
        pay.method = PaymentMethod::Cash;
        pay.amount_due = 13_875;
        pay.change_for = Some(20_000);
        o.validate().unwrap();
        let pay = o.payment.as_mut().unwrap();
        pay.amount_due = 13_876;
        pay.change_for = Some(10_000);
        assert_eq!(
            paths(o.validate()),
            [
                p("payment.amount_due", ProblemKind::OutOfRange),
                p("payment.change_for", ProblemKind::OutOfRange),
            ]
        );
        o.payment.as_mut().unwrap().amount_due = -1;
        assert_eq!(
            paths(o.validate()),
            [p("payment.amount_due", ProblemKind::Negative)]
        );
    }

    #[test]
    fn created_orders_need_a_body_and_bodiless_events_are_valid() {
        let mut o = example();
        o.placed_at = None;
        o.currency = None;
        o.fulfilment = None;
        o.items.clear();
        o.totals = None;
        o.payment = None;
        assert_eq!(
            paths(o.validate()),
            [
                p("placed_at", ProblemKind::Missing),
                p("currency", ProblemKind::Missing),
                p("fulfilment", ProblemKind::Missing),
                p("items", ProblemKind::Empty),
                p("totals", ProblemKind::Missing),
                p("payment", ProblemKind::Missing),
            ]
        );

        // Talabat's cancellation: the ids and a status, nothing else.
        o.event = Event::Cancelled;
        o.status = Some(Status {
            state: OrderState::Cancelled,
            provider_status: Some("ORDER_CANCELLED".into()),
            reason: Some("customer asked".into()),
            at: None,
        });
        o.validate().unwrap();
        let json = serde_json::to_value(&o).unwrap();
        assert_eq!(json["items"], serde_json::json!([]));
        assert_eq!(json["totals"], Value::Null);

        o.status.as_mut().unwrap().state = OrderState::Ready;
        assert_eq!(
            paths(o.validate()),
            [p("status.state", ProblemKind::Inconsistent)]
        );
        o.event = Event::Updated;
        o.validate().unwrap();
        o.status = None;
        assert_eq!(paths(o.validate()), [p("status", ProblemKind::Missing)]);

        // An update that carries items must say in which currency, with totals.
        o.status = Some(Status {
            state: OrderState::Modified,
            provider_status: None,
            reason: None,
            at: None,
        });
        o.items = example().items;
        assert_eq!(
            paths(o.validate()),
            [
                p("currency", ProblemKind::Missing),
                p("totals", ProblemKind::Missing)
            ]
        );
    }

    #[test]
    fn fulfilment_rules() {
        let mut o = example();
        let f = o.fulfilment.as_mut().unwrap();
        f.kind = FulfilmentType::Pickup;
        f.address.as_mut().unwrap().lng = Some(180.5);
        assert_eq!(
            paths(o.validate()),
            [
                p("fulfilment.delivered_by", ProblemKind::Inconsistent),
                p("fulfilment.address.lng", ProblemKind::OutOfRange),
            ]
        );
    }

    #[test]
    fn other_schema_versions_are_refused() {
        let text = EXAMPLE.replace("orderhub.order.v1", "orderhub.order.v2");
        let err = serde_json::from_str::<Order>(&text)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "unsupported order schema \"orderhub.order.v2\", expected \"orderhub.order.v1\""
            ),
            "{err}"
        );
        // Money is integers: a decimal in an amount field does not parse.
        let text = EXAMPLE.replace("\"amount_due\": 0", "\"amount_due\": 0.5");
        assert!(serde_json::from_str::<Order>(&text).is_err());
    }

    #[test]
    fn fill_totals_computes_lines_bottom_up() {
        let mut item = example().items[0].clone();
        item.total = 0;
        item.modifiers.iter_mut().for_each(|m| m.total = 0);
        item.modifiers[1]
            .modifiers
            .iter_mut()
            .for_each(|m| m.total = 0);
        assert_eq!(item.fill_totals(), Some(10_700));
        assert_eq!(item, example().items[0]);
        item.unit_price = i64::MAX;
        assert_eq!(item.fill_totals(), None);
    }

    // ---- property tests ----------------------------------------------------

    fn text() -> impl Strategy<Value = String> {
        // Latin, Arabic and anything printable after the first character.
        "[a-zA-Z\u{0621}-\u{064A}0-9][\\PC]{0,15}"
    }

    fn opt_text() -> impl Strategy<Value = Option<String>> {
        prop::option::of(text())
    }

    fn time_strategy() -> impl Strategy<Value = OffsetDateTime> {
        // 2000..2100, any nanosecond, offsets in whole quarter hours.
        (
            946_684_800_i64..4_102_444_800,
            0_u32..1_000_000_000,
            -48_i32..=56,
        )
            .prop_map(|(secs, nanos, quarters)| {
                let offset = UtcOffset::from_whole_seconds(quarters * 15 * 60).unwrap();
                OffsetDateTime::from_unix_timestamp(secs)
                    .unwrap()
                    .replace_nanosecond(nanos)
                    .unwrap()
                    .to_offset(offset)
            })
    }

    /// A line with consistent totals: modifiers up to `depth` levels below.
    fn line(depth: u32) -> BoxedStrategy<Item> {
        let top = depth == 2;
        let price = if top {
            0_i64..100_000
        } else {
            -2_000_i64..20_000
        };
        let quantity = if top { 1_u32..=20 } else { 1_u32..=3 };
        let modifiers = if depth == 0 {
            Just(Vec::new()).boxed()
        } else {
            prop::collection::vec(line(depth - 1), 0..3).boxed()
        };
        (
            opt_text(),
            opt_text(),
            text(),
            quantity,
            price,
            opt_text(),
            modifiers,
        )
            .prop_map(
                move |(
                    provider_item_id,
                    product_id,
                    name,
                    quantity,
                    unit_price,
                    notes,
                    modifiers,
                )| {
                    let mut item = Item {
                        provider_item_id,
                        product_id,
                        name,
                        quantity,
                        unit_price,
                        total: 0,
                        notes,
                        modifiers,
                    };
                    if top {
                        // Negative modifiers must not make an item negative.
                        let m: i64 = item.modifiers.iter().map(|m| m.total).sum();
                        item.unit_price = item.unit_price.max(-m);
                    }
                    item.fill_totals().unwrap();
                    item
                },
            )
            .boxed()
    }

    fn fulfilment() -> impl Strategy<Value = Fulfilment> {
        let coords =
            prop::option::of((-90_000_000_i64..=90_000_000, -180_000_000_i64..=180_000_000));
        let address = prop::option::of((
            prop::collection::vec(text(), 0..3),
            opt_text(),
            opt_text(),
            opt_text(),
            coords,
        ));
        (
            prop_oneof![
                Just(FulfilmentType::Delivery),
                Just(FulfilmentType::Pickup),
                Just(FulfilmentType::DineIn)
            ],
            any::<bool>(),
            address,
            opt_text(),
            prop::option::of(time_strategy()),
            opt_text(),
        )
            .prop_map(
                |(kind, by_platform, address, instructions, ready_by, table)| Fulfilment {
                    kind,
                    delivered_by: (kind == FulfilmentType::Delivery).then_some(if by_platform {
                        Courier::Platform
                    } else {
                        Courier::Restaurant
                    }),
                    address: address.map(|(lines, city, area, postcode, coords)| Address {
                        lines,
                        city,
                        area,
                        postcode,
                        // Micro-degrees: what providers send, and exact through JSON.
                        lat: coords.map(|(lat, _)| lat as f64 / 1e6),
                        lng: coords.map(|(_, lng)| lng as f64 / 1e6),
                    }),
                    instructions,
                    ready_by,
                    table,
                },
            )
    }

    prop_compose! {
        fn totals_for(subtotal: i64)(
            delivery_fee in 0_i64..5_000,
            fees in prop::collection::vec((text(), 0_i64..2_000), 0..3),
            tax in 0_i64..10_000,
            tip in 0_i64..5_000,
            discount_permille in 0_i64..=1_000,
            tax_inclusive in any::<bool>(),
            discounts_split in 0_usize..3,
        ) -> Totals {
            let service_fee = fees.iter().map(|(_, a)| a).sum();
            let discount = (subtotal + delivery_fee + service_fee) * discount_permille / 1_000;
            let discounts = match discounts_split {
                0 => Vec::new(),
                1 => vec![Discount { name: "promo".into(), amount: discount, funded_by: None }],
                _ => vec![
                    Discount { name: "platform".into(), amount: discount / 2, funded_by: Some(Funder::Platform) },
                    Discount { name: "merchant".into(), amount: discount - discount / 2, funded_by: Some(Funder::Merchant) },
                ],
            };
            let mut totals = Totals {
                subtotal,
                delivery_fee,
                service_fee,
                tax,
                discount,
                tip,
                total: 0,
                tax_inclusive,
                fees: fees.into_iter().map(|(name, amount)| Fee { name, amount }).collect(),
                discounts,
            };
            totals.total = totals.expected_total().unwrap();
            totals
        }
    }

    fn status(event: Event) -> BoxedStrategy<Option<Status>> {
        let state = match event {
            Event::Cancelled => {
                prop_oneof![Just(OrderState::Cancelled), Just(OrderState::Rejected)].boxed()
            }
            _ => prop_oneof![
                Just(OrderState::Placed),
                Just(OrderState::Accepted),
                Just(OrderState::PickedUp),
                Just(OrderState::Modified),
                Just(OrderState::Other)
            ]
            .boxed(),
        };
        let status = (
            state,
            opt_text(),
            opt_text(),
            prop::option::of(time_strategy()),
        )
            .prop_map(|(state, provider_status, reason, at)| Status {
                state,
                provider_status,
                reason,
                at,
            });
        if event == Event::Updated {
            status.prop_map(Some).boxed()
        } else {
            prop::option::of(status).boxed()
        }
    }

    /// Orders whose amounts are consistent by construction.
    fn order() -> impl Strategy<Value = Order> {
        let event = prop_oneof![
            Just(Event::Created),
            Just(Event::Updated),
            Just(Event::Cancelled)
        ];
        let currency = prop::sample::select(vec!["JOD", "KWD", "SAR", "AED", "GBP", "EUR", "JPY"])
            .prop_map(|c| Currency::from_code(c).unwrap());
        let ids = (
            text(),
            text(),
            opt_text(),
            text(),
            opt_text(),
            1_u64..u64::MAX,
        );
        let people = (opt_text(), opt_text(), opt_text(), opt_text());
        let notes = (
            opt_text(),
            opt_text(),
            prop::option::of(any::<bool>()),
            any::<bool>(),
        );
        (
            event,
            prop::sample::select(Provider::ALL.to_vec()),
            ids,
            (time_strategy(), prop::option::of(time_strategy())),
            currency,
            people,
            fulfilment(),
            prop::collection::vec(line(2), 1..5),
            notes,
        )
            .prop_flat_map(
                |(event, provider, ids, times, currency, people, fulfilment, items, notes)| {
                    let subtotal = items.iter().map(|i| i.total).sum();
                    (
                        Just((
                            event, provider, ids, times, currency, people, fulfilment, items, notes,
                        )),
                        status(event),
                        totals_for(subtotal),
                        prop_oneof![
                            Just(PaymentMethod::Card),
                            Just(PaymentMethod::Cash),
                            Just(PaymentMethod::Online),
                            Just(PaymentMethod::Other)
                        ],
                        any::<bool>(),
                        0_i64..=1_000,
                        prop::option::of(0_i64..100_000),
                    )
                },
            )
            .prop_map(
                |(
                    (event, provider, ids, times, currency, people, fulfilment, items, notes),
                    status,
                    totals,
                    method,
                    paid,
                    due_permille,
                    change,
                )| {
                    let (webhook_id, provider_order_id, display_code, tenant, branch, seq) = ids;
                    let amount_due = if paid {
                        0
                    } else {
                        totals.total * due_permille / 1_000
                    };
                    Order {
                        schema: SchemaV1,
                        webhook_id,
                        idempotency_key: None,
                        event,
                        status,
                        provider,
                        provider_order_id,
                        display_code,
                        tenant,
                        branch,
                        placed_at: Some(times.0),
                        scheduled_for: times.1,
                        is_test: notes.3,
                        currency: Some(currency),
                        customer: Customer {
                            name: people.0,
                            phone: people.1,
                            email: people.2,
                            phone_access_code: people.3,
                        },
                        fulfilment: Some(fulfilment),
                        items,
                        totals: Some(totals),
                        payment: Some(Payment {
                            method,
                            paid,
                            amount_due,
                            change_for: change.map(|c| amount_due + c),
                        }),
                        notes: notes.0,
                        allergy_notes: notes.1,
                        cutlery: notes.2,
                        raw: Raw {
                            stream: "WEBHOOKS".into(),
                            seq,
                            subject: format!("webhooks.raw.{provider}.acct"),
                        },
                        status_call: None,
                    }
                },
            )
    }

    /// Paths of every line in an order, depth first.
    fn line_paths(items: &[Item], prefix: &str, out: &mut Vec<String>) {
        for (i, item) in items.iter().enumerate() {
            let path = if prefix.is_empty() {
                format!("items[{i}]")
            } else {
                format!("{prefix}.modifiers[{i}]")
            };
            out.push(path.clone());
            line_paths(&item.modifiers, &path, out);
        }
    }

    fn line_at<'a>(items: &'a mut [Item], path: &str) -> &'a mut Item {
        let mut indices = path
            .split('[')
            .skip(1)
            .map(|s| s.split(']').next().unwrap().parse::<usize>().unwrap());
        let mut line = &mut items[indices.next().unwrap()];
        for i in indices {
            line = &mut line.modifiers[i];
        }
        line
    }

    proptest! {
        #[test]
        fn consistent_orders_validate(order in order()) {
            if let Err(e) = order.validate() {
                prop_assert!(false, "{e}");
            }
        }

        #[test]
        fn serde_round_trip_is_identity(order in order()) {
            let json = serde_json::to_string(&order).unwrap();
            let back: Order = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(&back, &order);
            // Equality of OffsetDateTime ignores the offset; the text does not.
            prop_assert_eq!(serde_json::to_string(&back).unwrap(), json);
        }

        #[test]
        fn a_wrong_line_total_is_reported_at_its_path(
            order in order(),
            pick in any::<prop::sample::Index>(),
            delta in prop_oneof![-1_000_i64..0, 1_i64..1_000],
        ) {
            let mut order = order;
            let mut all = Vec::new();
            line_paths(&order.items, "", &mut all);
            let path = pick.get(&all).clone();
            line_at(&mut order.items, &path).total += delta;
            let errors = order.validate().unwrap_err();
            let at = format!("{path}.total");
            prop_assert!(
                errors.errors().iter().any(|e| e.path == at && e.kind == ProblemKind::Mismatch),
                "{} not reported in {}", at, errors
            );
        }
    }
}
