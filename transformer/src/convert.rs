//! One raw webhook in, one canonical order out: what every adapter shares.
//!
//! [`convert`] finds the provider, account and tenant of a delivery, hands
//! the raw bytes to the provider's [`Adapter`](crate::adapters::Adapter),
//! and finishes the adapter's [`Draft`] the same way for every provider:
//! branch and product ids from the account's mappings, the customer's phone
//! in E.164, then [`Order::check`]. Problems accumulate in [`Problems`]
//! (the adapter's own, the mappings', the order's rules) so that one dead
//! letter lists every one of them.
//!
//! Problem paths name the canonical field for lines (`items[1].quantity`,
//! `items[0].modifiers[2].unit_price`: the order check reports there too)
//! and the provider's own field elsewhere (`price.grandTotal`,
//! `localInfo.decimalDigits`), so each points at what to look at.
//!
//! Conversion is pure: no I/O, no clock (a missing provider timestamp falls
//! back to the ingress's `Orderhub-Received-At`), so the same delivery
//! always gives the same order; golden and property tests call it directly.
//!
//! A `created` order also gets its answering context
//! ([`shared::answer::OrderContext`], [`convert_with_hints`]) from the
//! adapter's [`AnswerHints`] and the account: the canonical order does not
//! change for it.

use std::collections::{BTreeMap, BTreeSet};

use async_nats::HeaderMap;
use canonical::money::{Currency, Decimal, MoneyError};
use canonical::order::{
    Customer, Event, FieldError, Item, MAX_QUANTITY, Order, ProblemKind, Raw, SchemaV1,
    ValidationErrors,
};
use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer};
use shared::Provider;
use shared::answer::OrderContext;
use shared::config::{Account, HubConfig, Tenant};
use shared::failure::FailureClass;
use shared::headers;
use shared::worker::Delivery;
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, PrimitiveDateTime};

use crate::adapters;
use crate::phone;

/// How much of a parse error's text is kept (see [`Input::parse`]).
const MAX_PARSE_ERROR_CHARS: usize = 2 * shared::redact::LOG_VALUE_CHARS;

/// Prefix of the headers that carry a provider's URL path parameters
/// (`Orderhub-Path-Remoteid`), set by the ingress.
pub const PATH_HEADER_PREFIX: &str = "Orderhub-Path-";

/// Why a delivery cannot become an order. Every kind is permanent: the
/// same bytes fail the same way on every delivery, so none is retried.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("unknown provider {0:?}")]
    UnknownProvider(String),
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("no account {account:?} for provider {provider} in the hub config")]
    UnknownAccount { provider: Provider, account: String },
    #[error("payload does not parse: {0}")]
    Parse(String),
    #[error("{provider} event {event:?} is not an order event this hub converts")]
    UnsupportedEvent { provider: Provider, event: String },
    /// The provider sent a notification only (Uber Eats, Wolt); the order
    /// itself must be fetched from its API.
    #[error("{0}")]
    FetchRequired(String),
    /// Every problem found; `class` says what kind dominates.
    #[error("{errors}")]
    Invalid {
        class: FailureClass,
        errors: ValidationErrors,
    },
}

impl ConvertError {
    /// Its class in the failure vocabulary (metrics, logs, the DLQ); every
    /// one is permanent: converting the same bytes again gives the same
    /// answer.
    pub fn class(&self) -> FailureClass {
        match self {
            ConvertError::UnknownProvider(_) => FailureClass::UnknownProvider,
            ConvertError::MissingHeader(_) => FailureClass::MissingHeader,
            ConvertError::UnknownAccount { .. } => FailureClass::UnknownAccount,
            ConvertError::Parse(_) => FailureClass::InvalidPayload,
            ConvertError::UnsupportedEvent { .. } => FailureClass::UnsupportedEvent,
            ConvertError::FetchRequired(_) => FailureClass::FetchRequired,
            ConvertError::Invalid { class, .. } => *class,
        }
    }
}

/// What an adapter sees of one delivery.
pub struct Input<'a> {
    pub provider: Provider,
    /// The raw body, exactly as the provider sent it.
    pub payload: &'a [u8],
    pub headers: &'a HeaderMap,
    pub account: &'a Account,
    pub tenant: &'a Tenant,
    pub webhook_id: &'a str,
    pub raw: Raw,
    /// When the ingress accepted the webhook (`Orderhub-Received-At`).
    pub received_at: Option<OffsetDateTime>,
}

impl Input<'_> {
    /// A header's value (name compared case-insensitively), trimmed; `None`
    /// when absent or blank.
    pub fn header(&self, name: &str) -> Option<&str> {
        header_of(self.headers, name)
    }

    /// A provider URL path parameter the ingress passed as
    /// `Orderhub-Path-<Name>` (e.g. `path_param("Remoteid")`).
    pub fn path_param(&self, name: &str) -> Option<&str> {
        self.header(&format!("{PATH_HEADER_PREFIX}{name}"))
    }

    /// Parses the raw bytes into the provider's typed payload. The error
    /// names the field path (`items[2].price`) and the position.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ConvertError> {
        let mut de = serde_json::Deserializer::from_slice(self.payload);
        let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            // `?` stands for a key the input ended inside of: drop it.
            let full = e.path().to_string();
            let path = full.trim_end_matches(".?").trim_end_matches('?');
            let inner = e.into_inner();
            let text = if path == "." || path.is_empty() {
                inner.to_string()
            } else {
                format!("{path}: {inner}")
            };
            // serde copies a refused value whole (`invalid type: string
            // "..."`) and a path may hold a provider's map key: the text is
            // a log line and a dead letter's error, so it is cut.
            ConvertError::Parse(shared::redact::truncate(&text, MAX_PARSE_ERROR_CHARS).into_owned())
        })?;
        de.end().map_err(|e| ConvertError::Parse(e.to_string()))?;
        Ok(value)
    }

    /// An order with the hub-owned fields filled from the delivery and
    /// everything else empty, for the adapter to complete.
    pub fn order(&self, event: Event, provider_order_id: impl Into<String>) -> Order {
        Order {
            schema: SchemaV1,
            webhook_id: self.webhook_id.to_owned(),
            idempotency_key: None,
            event,
            status: None,
            provider: self.provider,
            provider_order_id: provider_order_id.into(),
            display_code: None,
            tenant: self.tenant.id.clone(),
            branch: None,
            placed_at: None,
            scheduled_for: None,
            is_test: false,
            currency: None,
            customer: Customer::default(),
            fulfilment: None,
            items: Vec::new(),
            totals: None,
            payment: None,
            notes: None,
            allergy_notes: None,
            cutlery: None,
            raw: self.raw.clone(),
            status_call: None,
        }
    }

    /// The account's configured currency, for providers whose payloads
    /// carry none; a problem at `currency` when it is unset or unknown.
    pub fn account_currency(&self, problems: &mut Problems) -> Option<Currency> {
        match self.account.currency {
            Some(c) => Some(c),
            None => {
                problems.push(
                    "currency",
                    ProblemKind::Missing,
                    format!(
                        "the payload has no currency and account {:?} configures none",
                        self.account.id
                    ),
                );
                None
            }
        }
    }
}

fn header_of<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(n, _)| {
            let n: &str = n.as_ref();
            n.eq_ignore_ascii_case(name)
        })
        .and_then(|(_, values)| values.first())
        .map(|v| v.as_str().trim())
        .filter(|v| !v.is_empty())
}

/// What an adapter produces: the order (hub fields set, ids not yet
/// mapped) and what the common finish needs to map it.
pub struct Draft {
    pub order: Order,
    /// Provider store ids to look up in the account's `branches`, most
    /// specific first; the first mapped one wins.
    pub store_ids: Vec<String>,
    /// The country the payload itself names (Talabat's `countryCode`), for
    /// phone numbers; the account's `country` otherwise.
    pub country: Option<String>,
    /// What answering the order at its provider needs, beyond the order
    /// (a `created` order's [`shared::answer::OrderContext`]).
    pub answer: AnswerHints,
}

/// What a provider's payload says about answering its order, for the
/// order's [`shared::answer::OrderContext`]; not part of the canonical
/// order. Empty (the default) for providers that hand over nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnswerHints {
    /// The order's own deadline to accept or reject (Talabat `expiryDate`);
    /// `None`: the account's `answer_deadline` applies.
    pub expires_at: Option<OffsetDateTime>,
    /// Which of the provider's order APIs the order came from (`v1`, `v2`;
    /// Uber Eats and Wolt): their status calls differ.
    pub api: Option<&'static str>,
    /// URLs the provider gave for answering, by its own names (Talabat
    /// `callbackUrls`).
    pub callbacks: BTreeMap<String, String>,
    /// The restaurant delivers it itself (Wolt `delivery.self_delivery`).
    pub self_delivery: bool,
    /// Placed in advance (Wolt `type: preorder` or a `pre_order`).
    pub preorder: bool,
    /// The provider's store id its calls name; `None`: the first store id
    /// candidate of the draft.
    pub store_id: Option<String>,
}

impl Draft {
    pub fn new(order: Order) -> Self {
        Draft {
            order,
            store_ids: Vec::new(),
            country: None,
            answer: AnswerHints::default(),
        }
    }

    /// Adds a store id candidate, ignoring blanks.
    pub fn store(mut self, id: Option<impl AsRef<str>>) -> Self {
        if let Some(id) = id
            .as_ref()
            .map(|s| s.as_ref().trim())
            .filter(|s| !s.is_empty())
        {
            self.store_ids.push(id.to_owned());
        }
        self
    }
}

/// Every problem found while converting one delivery.
#[derive(Debug, Default)]
pub struct Problems {
    errors: ValidationErrors,
    /// Paths an adapter explained; the order check's own report at the same
    /// path would only repeat it less precisely.
    explained: BTreeSet<String>,
    /// Problems other than missing mappings.
    other: usize,
    unmapped_products: usize,
    unmapped_branch: bool,
}

impl Problems {
    /// Records a conversion problem at `path` (lower-case message, no
    /// trailing period).
    pub fn push(&mut self, path: impl Into<String>, kind: ProblemKind, message: impl Into<String>) {
        let path = path.into();
        self.explained.insert(path.clone());
        self.errors.push(path, kind, message);
        self.other += 1;
    }

    /// Records an amount that has no exact minor-unit value.
    pub fn money(&mut self, path: &str, error: &MoneyError) {
        let kind = match error {
            MoneyError::Empty => ProblemKind::Missing,
            MoneyError::TooPrecise { .. } | MoneyError::Overflow(_) => ProblemKind::OutOfRange,
            MoneyError::Invalid(_) | MoneyError::NotADecimal(_) => ProblemKind::Inconsistent,
        };
        self.push(path, kind, error.to_string());
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    pub fn errors(&self) -> &[FieldError] {
        self.errors.errors()
    }

    fn unmapped(&mut self, path: String, message: String, product: bool) {
        self.errors.push(path, ProblemKind::Missing, message);
        if product {
            self.unmapped_products += 1;
        } else {
            self.unmapped_branch = true;
        }
    }

    fn class(&self) -> FailureClass {
        if self.other > 0 {
            FailureClass::InvalidPayload
        } else if self.unmapped_products > 0 {
            FailureClass::UnmappedProduct
        } else {
            FailureClass::UnmappedBranch
        }
    }

    /// Appends the order check's findings, minus those at paths an adapter
    /// already explained.
    fn check(&mut self, order: &Order) {
        let mut found = ValidationErrors::new();
        order.check(&mut found);
        for e in found.into_vec() {
            if !self.explained.contains(&e.path) {
                self.other += 1;
                self.errors.push(e.path, e.kind, e.message);
            }
        }
    }
}

/// A currency from a provider's code (case-insensitive); a problem at
/// `path` when unknown.
pub fn currency(problems: &mut Problems, path: &str, code: &str) -> Option<Currency> {
    match Currency::from_code_ignore_case(code.trim()) {
        Ok(c) => Some(c),
        Err(e) => {
            problems.push(path, ProblemKind::OutOfRange, e.to_string());
            None
        }
    }
}

/// Decimal amounts to minor units in the order's currency. Without a
/// currency (already reported) every amount reads as 0, so one unknown
/// currency does not bury the other problems under mismatches.
#[derive(Debug, Clone, Copy)]
pub struct Money(pub Option<Currency>);

impl Money {
    pub fn amount(&self, problems: &mut Problems, path: &str, value: &Decimal) -> i64 {
        let Some(currency) = self.0 else { return 0 };
        value.to_minor_units(currency).unwrap_or_else(|e| {
            problems.money(path, &e);
            0
        })
    }

    /// An optional amount; absent is 0.
    pub fn opt(&self, problems: &mut Problems, path: &str, value: Option<&Decimal>) -> i64 {
        value.map_or(0, |v| self.amount(problems, path, v))
    }
}

/// A line quantity as providers write it: a JSON integer or an integer in a
/// string (Talabat's `"2"`). Kept wide so that `-1` or `1e12` can be
/// reported as out of range rather than failing the parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity(pub i128);

impl Default for Quantity {
    /// Providers that omit the quantity mean one.
    fn default() -> Self {
        Quantity(1)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Quantity;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an integer quantity (number or string)")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Quantity, E> {
                Ok(Quantity(i128::from(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Quantity, E> {
                Ok(Quantity(i128::from(v)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Quantity, E> {
                // serde_json reads integers beyond u64 as floats; those are
                // out of range anyway. A fraction is no quantity.
                if v.is_finite() && v.fract() == 0.0 {
                    Ok(Quantity(if v > 0.0 { i128::MAX } else { i128::MIN }))
                } else {
                    Err(E::invalid_value(de::Unexpected::Float(v), &self))
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Quantity, E> {
                let t = v.trim();
                let digits = t.strip_prefix('-').unwrap_or(t);
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(E::invalid_value(de::Unexpected::Str(&excerpt(v)), &self));
                }
                Ok(Quantity(t.parse::<i128>().unwrap_or(
                    if t.starts_with('-') {
                        i128::MIN
                    } else {
                        i128::MAX
                    },
                )))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// The quantity as a canonical `u32`; outside 1..=[`MAX_QUANTITY`] it is
/// reported at `path` and becomes 0, which keeps every total computable.
pub fn quantity(problems: &mut Problems, path: &str, q: Quantity) -> u32 {
    match u32::try_from(q.0) {
        Ok(n) if (1..=MAX_QUANTITY).contains(&n) => n,
        _ => {
            let shown = match q.0 {
                i128::MAX => "a number beyond 2^64".to_owned(),
                i128::MIN => "a number below -2^63".to_owned(),
                n => n.to_string(),
            };
            problems.push(
                path,
                ProblemKind::OutOfRange,
                format!("must be between 1 and {MAX_QUANTITY}, got {shown}"),
            );
            0
        }
    }
}

/// Sets every line's `total` from unit prices and quantities, for providers
/// that send none; a line whose total does not fit is reported.
pub fn fill_totals(problems: &mut Problems, items: &mut [Item]) {
    for (i, item) in items.iter_mut().enumerate() {
        if item.fill_totals().is_none() {
            problems.push(
                format!("items[{i}].total"),
                ProblemKind::OutOfRange,
                "does not fit in 64-bit minor units",
            );
            item.total = 0;
        }
    }
}

/// `Some(text)` trimmed, `None` when blank.
pub fn text(value: Option<&str>) -> Option<String> {
    value
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// Non-blank parts joined with `sep`; `None` when all are blank.
pub fn join<'a>(parts: impl IntoIterator<Item = Option<&'a str>>, sep: &str) -> Option<String> {
    let parts: Vec<&str> = parts
        .into_iter()
        .flatten()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    (!parts.is_empty()).then(|| parts.join(sep))
}

/// An RFC 3339 time; a problem at `path` otherwise.
pub fn rfc3339(problems: &mut Problems, path: &str, value: &str) -> Option<OffsetDateTime> {
    match OffsetDateTime::parse(value.trim(), &Rfc3339) {
        Ok(t) => Some(t),
        Err(_) => {
            problems.push(
                path,
                ProblemKind::Inconsistent,
                format!("{:?} is not an RFC 3339 time", excerpt(value)),
            );
            None
        }
    }
}

/// Unix seconds (JET Connect writes them as strings); a problem otherwise.
pub fn unix_seconds(problems: &mut Problems, path: &str, value: &str) -> Option<OffsetDateTime> {
    let parsed = value
        .trim()
        .parse::<i64>()
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok());
    if parsed.is_none() {
        problems.push(
            path,
            ProblemKind::Inconsistent,
            format!("{:?} is not a time in unix seconds", excerpt(value)),
        );
    }
    parsed
}

/// A time in whatever form a loosely specified field uses: RFC 3339, an ISO
/// 8601 date-time without offset (read as UTC), or unix seconds or
/// milliseconds; a problem otherwise.
pub fn any_time(problems: &mut Problems, path: &str, value: &str) -> Option<OffsetDateTime> {
    let v = value.trim();
    if let Ok(t) = OffsetDateTime::parse(v, &Rfc3339) {
        return Some(t);
    }
    let naive = time::format_description::parse_borrowed::<2>(
        "[year]-[month]-[day]T[hour]:[minute]:[second][optional [.[subsecond]]]",
    )
    .expect("valid format description");
    if let Ok(t) = PrimitiveDateTime::parse(v, &naive) {
        return Some(t.assume_utc());
    }
    if let Ok(n) = v.parse::<i64>() {
        // Milliseconds from 2001-09-09 on have 13 digits; seconds have 10.
        let t = if n.abs() >= 100_000_000_000 {
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(n) * 1_000_000).ok()
        } else {
            OffsetDateTime::from_unix_timestamp(n).ok()
        };
        if t.is_some() {
            return t;
        }
    }
    problems.push(
        path,
        ProblemKind::Inconsistent,
        format!("{:?} is not a time", excerpt(value)),
    );
    None
}

/// Enough of a value to recognise it (an id, a rejected field), never a
/// whole payload.
pub fn excerpt(text: &str) -> String {
    match text.char_indices().nth(64) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// How long a provider takes an answer to a new order when neither the
/// order nor the account's `[account.api] answer_deadline` says.
pub const DEFAULT_ANSWER_DEADLINE: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// One converted delivery: the canonical order and, for a `created` order,
/// what answering it at its provider needs.
#[derive(Debug)]
pub struct Converted {
    pub order: Order,
    pub answer: AnswerHints,
    /// `Some` for a `created` order only.
    pub context: Option<OrderContext>,
}

/// Converts one delivery of a raw webhook into its canonical order.
pub fn convert(hub: &HubConfig, delivery: &Delivery) -> Result<Order, ConvertError> {
    convert_with_hints(hub, delivery).map(|c| c.order)
}

/// [`convert`], keeping what the payload says about answering the order.
pub fn convert_with_hints(hub: &HubConfig, delivery: &Delivery) -> Result<Converted, ConvertError> {
    let h = &delivery.headers;
    let provider_name = header_of(h, headers::PROVIDER)
        .or_else(|| shared::subjects::token(&delivery.subject, 2))
        .unwrap_or_default();
    let provider: Provider = provider_name
        .parse()
        .map_err(|_| ConvertError::UnknownProvider(excerpt(provider_name)))?;
    let account_id = header_of(h, headers::ACCOUNT)
        .or_else(|| shared::subjects::token(&delivery.subject, 3))
        .ok_or(ConvertError::MissingHeader(headers::ACCOUNT))?;
    let unknown = || ConvertError::UnknownAccount {
        provider,
        account: excerpt(account_id),
    };
    let account = hub.account(provider, account_id).ok_or_else(unknown)?;
    let tenant = hub.tenant(&account.tenant).ok_or_else(unknown)?;
    let webhook_id = header_of(h, headers::WEBHOOK_ID)
        .ok_or(ConvertError::MissingHeader(headers::WEBHOOK_ID))?;
    let received_at =
        header_of(h, headers::RECEIVED_AT).and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok());
    let input = Input {
        provider,
        payload: &delivery.payload,
        headers: h,
        account,
        tenant,
        webhook_id,
        raw: Raw {
            stream: delivery.stream.clone(),
            seq: delivery.stream_seq,
            subject: delivery.subject.clone(),
        },
        received_at,
    };
    let mut problems = Problems::default();
    let draft = adapters::adapter(provider).convert(&input, &mut problems)?;
    let mut converted = finish(&input, draft, problems)?;
    // Last: the key covers the order as the backend receives it.
    converted.order.idempotency_key = Some(converted.order.event_key());
    if converted.order.event == Event::Created {
        let received_at = received_at.unwrap_or_else(|| OffsetDateTime::from(delivery.published));
        converted.context = Some(context(
            account,
            &converted.order,
            &converted.answer,
            received_at,
        ));
    }
    Ok(converted)
}

/// A new order's answering context: its deadline is the order's own
/// expiry, else `received_at` plus the account's `answer_deadline` (or
/// [`DEFAULT_ANSWER_DEADLINE`] without an `[account.api]`).
pub fn context(
    account: &Account,
    order: &Order,
    answer: &AnswerHints,
    received_at: OffsetDateTime,
) -> OrderContext {
    let deadline = account
        .api
        .as_ref()
        .map_or(DEFAULT_ANSWER_DEADLINE, |api| api.answer_deadline);
    OrderContext {
        tenant: order.tenant.clone(),
        provider: order.provider,
        account: account.id.clone(),
        provider_order_id: order.provider_order_id.clone(),
        webhook_id: order.webhook_id.clone(),
        display_code: order.display_code.clone(),
        received_at,
        answer_by: answer.expires_at.unwrap_or(received_at + deadline),
        api: answer.api.map(str::to_owned),
        callbacks: answer.callbacks.clone(),
        self_delivery: answer.self_delivery
            || order
                .fulfilment
                .as_ref()
                .is_some_and(|f| f.delivered_by == Some(canonical::order::Courier::Restaurant)),
        preorder: answer.preorder,
        store_id: answer.store_id.clone(),
        pickup: order
            .fulfilment
            .as_ref()
            .is_some_and(|f| f.kind == canonical::order::FulfilmentType::Pickup),
    }
}

/// The part every provider shares: mappings, phone, the order's rules.
fn finish(
    input: &Input<'_>,
    draft: Draft,
    mut problems: Problems,
) -> Result<Converted, ConvertError> {
    let Draft {
        mut order,
        store_ids,
        country,
        mut answer,
    } = draft;
    if answer.store_id.is_none() {
        answer.store_id = store_ids.first().cloned();
    }
    let account = input.account;

    if order.branch.is_none() {
        order.branch = store_ids
            .iter()
            .find_map(|id| account.branches.get(id))
            .cloned();
        let required = input.tenant.require_branch_mapping
            && (order.event == Event::Created || !store_ids.is_empty());
        if order.branch.is_none() && required {
            let message = match store_ids.first() {
                Some(id) => format!(
                    "no branch mapping for store id {:?} in account {:?}",
                    excerpt(id),
                    account.id
                ),
                None => "the payload names no store to map to a branch".to_owned(),
            };
            problems.unmapped("branch".to_owned(), message, false);
        }
    }

    let require = input.tenant.require_product_mapping;
    for (i, item) in order.items.iter_mut().enumerate() {
        map_products(
            &mut problems,
            account,
            require,
            &format!("items[{i}]"),
            item,
        );
    }

    let country = country.as_deref().or(account.country.as_deref());
    if let Some(phone) = &order.customer.phone {
        order.customer.phone = Some(phone::normalize(phone, country));
    }

    problems.check(&order);
    if problems.is_empty() {
        Ok(Converted {
            order,
            answer,
            context: None,
        })
    } else {
        Err(ConvertError::Invalid {
            class: problems.class(),
            errors: problems.errors,
        })
    }
}

fn map_products(
    problems: &mut Problems,
    account: &Account,
    require: bool,
    path: &str,
    line: &mut Item,
) {
    if line.product_id.is_none() {
        line.product_id = line
            .provider_item_id
            .as_ref()
            .and_then(|id| account.products.get(id))
            .cloned();
        if line.product_id.is_none() && require {
            let message = match &line.provider_item_id {
                Some(id) => format!(
                    "no product mapping for provider item id {:?} in account {:?}",
                    excerpt(id),
                    account.id
                ),
                None => "the line has no provider item id to map".to_owned(),
            };
            problems.unmapped(format!("{path}.product_id"), message, true);
        }
    }
    for (j, m) in line.modifiers.iter_mut().enumerate() {
        map_products(
            problems,
            account,
            require,
            &format!("{path}.modifiers[{j}]"),
            m,
        );
    }
}
