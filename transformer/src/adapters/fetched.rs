//! What the adapters of fetched orders (Uber Eats, Wolt) share.
//!
//! Their webhooks are notifications; the fetcher stage GETs the order from
//! the provider's API and publishes the answer unchanged on
//! `webhooks.fetched.<provider>.<account>`, adding two headers the adapters
//! read:
//! - `Orderhub-Fetched-Api` ([`headers::FETCHED_API`]): `v1` or `v2`, which
//!   of the provider's two order APIs answered. [`api`] checks it against
//!   the body's own shape, so that a body of one API labelled as the other
//!   is refused with both named instead of failing on a missing field; a
//!   body without the header is read by its shape alone.
//! - `Orderhub-Notification-Event` ([`headers::NOTIFICATION_EVENT`]): what
//!   the notification said happened, as the provider spells it; each
//!   adapter turns it into the canonical event.
//!
//! Money in both providers' v2 (and Wolt's v1) bodies is integer minor units
//! beside a currency code: [`Minor`] checks every code against the order's
//! currency.

use canonical::money::Currency;
use canonical::order::{Item, ProblemKind, ValidationErrors};
use serde::{Deserialize, Deserializer};
use shared::failure::FailureClass;
use shared::headers;

use crate::convert::{ConvertError, Input, Problems, excerpt};

/// One of a provider's two order APIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    V1,
    V2,
}

impl Api {
    /// The API a body is by its shape: the one whose distinguishing fields
    /// it has, if it has one's only.
    pub fn by_shape(has_v1: bool, has_v2: bool) -> Option<Api> {
        match (has_v1, has_v2) {
            (true, false) => Some(Api::V1),
            (false, true) => Some(Api::V2),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Api::V1 => "v1",
            Api::V2 => "v2",
        }
    }
}

/// How a body of each API is recognised, for the messages of [`api`]:
/// the fields that tell them apart (`` `carts` and `state` ``).
pub(crate) struct Shapes {
    pub v1: &'static str,
    pub v2: &'static str,
}

impl Shapes {
    fn of(&self, api: Api) -> &'static str {
        match api {
            Api::V1 => self.v1,
            Api::V2 => self.v2,
        }
    }
}

/// A conversion error with one problem, for what stops a conversion before
/// there is an order to check.
pub(crate) fn refuse(path: &str, kind: ProblemKind, message: impl Into<String>) -> ConvertError {
    let mut errors = ValidationErrors::new();
    errors.push(path, kind, message);
    ConvertError::Invalid {
        class: FailureClass::InvalidPayload,
        errors,
    }
}

/// Which API answered: the fetcher's `Orderhub-Fetched-Api`, which must
/// agree with the body's shape when the shape is recognised (`detected`);
/// without the header, the shape. Neither is an error that names both.
pub(crate) fn api(
    input: &Input<'_>,
    detected: Option<Api>,
    shapes: &Shapes,
) -> Result<Api, ConvertError> {
    let path = headers::FETCHED_API;
    let labelled = match input.header(path) {
        None => None,
        Some(v) if v.eq_ignore_ascii_case("v1") => Some(Api::V1),
        Some(v) if v.eq_ignore_ascii_case("v2") => Some(Api::V2),
        Some(other) => {
            return Err(refuse(
                path,
                ProblemKind::OutOfRange,
                format!(
                    "{:?} is not an order api this hub reads (v1 or v2)",
                    excerpt(other)
                ),
            ));
        }
    };
    match (labelled, detected) {
        (Some(l), Some(d)) if l != d => Err(refuse(
            path,
            ProblemKind::Inconsistent,
            format!(
                "says {}, but the body is a {} order (it has {}, not {})",
                l.as_str(),
                d.as_str(),
                shapes.of(d),
                shapes.of(l),
            ),
        )),
        (Some(api), _) | (None, Some(api)) => Ok(api),
        (None, None) => Err(refuse(
            path,
            ProblemKind::Missing,
            format!(
                "is not set and the body is neither a v1 order ({}) nor a v2 order ({})",
                shapes.v1, shapes.v2
            ),
        )),
    }
}

/// Integer minor-unit amounts, each beside its own currency code, in one
/// order currency.
pub(crate) struct Minor {
    /// `None` when the order's currency is unknown (already reported):
    /// every amount then reads as 0.
    pub currency: Option<Currency>,
    /// The name of the code's field beside each amount (`currency_code`,
    /// `currency`), for problem paths.
    pub code_field: &'static str,
}

impl Minor {
    /// `amount` at `path`, whose currency code (when the provider writes
    /// one) must be the order's.
    pub fn get(&self, p: &mut Problems, path: &str, amount: i64, code: Option<&str>) -> i64 {
        let Some(c) = self.currency else { return 0 };
        let Some(code) = code.map(str::trim).filter(|s| !s.is_empty()) else {
            return amount;
        };
        match Currency::from_code_ignore_case(code) {
            Ok(own) if own == c => amount,
            Ok(other) => {
                p.push(
                    format!("{path}.{}", self.code_field),
                    ProblemKind::Inconsistent,
                    format!("{other} differs from the order's currency {c}"),
                );
                0
            }
            Err(e) => {
                p.push(
                    format!("{path}.{}", self.code_field),
                    ProblemKind::OutOfRange,
                    e.to_string(),
                );
                0
            }
        }
    }
}

/// A list that may be `null` or absent (both providers write `null` for
/// "none"): use with `#[serde(default, deserialize_with = "list")]`.
pub(crate) fn list<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(deserializer)?.unwrap_or_default())
}

/// `(unit_price + Σ modifiers[].total) × quantity` of a line whose
/// modifiers' totals are set, for shapes that send no line total; one that
/// does not fit is reported at `path` and is 0.
pub(crate) fn line_total(p: &mut Problems, path: &str, line: &Item) -> i64 {
    line.expected_total().unwrap_or_else(|| {
        p.push(
            format!("{path}.total"),
            ProblemKind::OutOfRange,
            "does not fit in 64-bit minor units",
        );
        0
    })
}
