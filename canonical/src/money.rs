//! Exact money: ISO 4217 currencies, and decimal amounts turned into integer
//! minor units without ever passing through `f64`.
//!
//! Every amount in a canonical order is an `i64` count of the currency's minor
//! unit: 3.250 JOD is `3250`, 12.99 GBP is `1299`, 500 JPY is `500`. Providers
//! write money in one of three ways, and each has one exact path here:
//!
//! | the provider sends | the adapter uses |
//! |---|---|
//! | integer minor units (Deliveroo `fractional`, Uber Eats, Wolt, Just Eat Connect, Grab) | the integer as it is; where the provider states its own exponent (Grab's `currency.exponent`), [`Currency::rescale`] |
//! | decimal strings in major units (Talabat `"25.50"`, `"0.375"` in KWD) | a [`Decimal`] field, or [`Currency::parse_amount`] on a `&str` |
//! | JSON numbers in major units (Careem `2.675`, Just Eat partner API) | a [`Decimal`] field: it keeps the number exactly as written |
//!
//! # Why not `f64`
//! Most decimals have no exact binary form: `1.001` is 1.00099999… as an
//! `f64`, so `(x * 1000.0) as i64` gives `1000` JOD fils, not `1001`.
//! [`Decimal`] deserializes through `serde_json::value::RawValue` (the
//! `raw_value` feature), so it sees the literal text `2.675` and never a
//! float. serde_json's `arbitrary_precision`
//! feature would do the same for every number in the workspace and change how
//! `serde_json::Value` behaves everywhere, so it stays off.
//!
//! Because [`Decimal`] needs the raw text, adapters must deserialize provider
//! structs straight from the body bytes (`serde_json::from_slice`). Going
//! through a `serde_json::Value` first, or putting a `Decimal` inside
//! `#[serde(flatten)]`, an untagged or an internally tagged enum (serde buffers
//! those and turns numbers into `f64`), fails with an error rather than giving a
//! wrong amount.
//!
//! # Decimal grammar
//! `-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?`, the same text for JSON numbers and
//! for decimal strings:
//! - accepted: `"10"`, `"-1.5"`, `"007.50"` (leading zeros, strings only: JSON
//!   numbers cannot have them), `"-0"`, and exponents: `"1e2"` is 100 major
//!   units, `"2675e-3"` is 2.675, computed exactly, however large the exponent;
//! - refused: `""`, any whitespace, a leading `+`, `".5"`, `"5."`, `"1,5"`,
//!   `"1_000"`, `"NaN"`, `"Infinity"`, hex, currency symbols;
//! - more fractional digits than the currency has are refused when one of
//!   them is not zero (`"2.6755"` JOD, `"0.5"` JPY): nothing is ever rounded.
//!   Extra zeros are accepted (`"3.2500"` JOD is 3250, `10.0` JPY is 10),
//!   since they lose nothing (Python's `json` writes `10.0` for a float 10);
//! - a value outside `i64` minor units is refused as out of range.
//!
//! # The currency table
//! A static table of ISO 4217 list one (codes with a minor unit), not the
//! `iso_currency` crate: all the hub needs is code → exponent, and that crate
//! brings `iso_country` (0.1.4, unchanged for years, with `lazy_static`) and a
//! build script that generates names, symbols and country lists we would not
//! use. The table below is taken from `iso_currency` 0.7.1's data (which
//! tracks ISO amendments, e.g. XCG in 2025 and ZWG in 2024), checked against
//! the exponents DESIGN.md relies on by the tests. Codes without a minor unit
//! (metals, SDR, testing, XXX, the Arab Accounting Dinar XAD) are refused; codes
//! that ISO has superseded but providers may still send for a while (HRK, SLL,
//! ZWL, CUC, BGN) are kept. To follow a new ISO amendment, edit the table:
//! it must stay sorted (a test checks).

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

/// ISO 4217 alphabetic code → number of digits after the decimal point
/// (the minor unit exponent), sorted by code.
#[rustfmt::skip]
const CURRENCIES: &[(&str, u8)] = &[
    ("AED", 2), ("AFN", 2), ("ALL", 2), ("AMD", 2), ("AOA", 2), ("ARS", 2), ("AUD", 2), ("AWG", 2),
    ("AZN", 2), ("BAM", 2), ("BBD", 2), ("BDT", 2), ("BGN", 2), ("BHD", 3), ("BIF", 0), ("BMD", 2),
    ("BND", 2), ("BOB", 2), ("BOV", 2), ("BRL", 2), ("BSD", 2), ("BTN", 2), ("BWP", 2), ("BYN", 2),
    ("BZD", 2), ("CAD", 2), ("CDF", 2), ("CHE", 2), ("CHF", 2), ("CHW", 2), ("CLF", 4), ("CLP", 0),
    ("CNY", 2), ("COP", 2), ("COU", 2), ("CRC", 2), ("CUC", 2), ("CUP", 2), ("CVE", 2), ("CZK", 2),
    ("DJF", 0), ("DKK", 2), ("DOP", 2), ("DZD", 2), ("EGP", 2), ("ERN", 2), ("ETB", 2), ("EUR", 2),
    ("FJD", 2), ("FKP", 2), ("GBP", 2), ("GEL", 2), ("GHS", 2), ("GIP", 2), ("GMD", 2), ("GNF", 0),
    ("GTQ", 2), ("GYD", 2), ("HKD", 2), ("HNL", 2), ("HRK", 2), ("HTG", 2), ("HUF", 2), ("IDR", 2),
    ("ILS", 2), ("INR", 2), ("IQD", 3), ("IRR", 2), ("ISK", 0), ("JMD", 2), ("JOD", 3), ("JPY", 0),
    ("KES", 2), ("KGS", 2), ("KHR", 2), ("KMF", 0), ("KPW", 2), ("KRW", 0), ("KWD", 3), ("KYD", 2),
    ("KZT", 2), ("LAK", 2), ("LBP", 2), ("LKR", 2), ("LRD", 2), ("LSL", 2), ("LYD", 3), ("MAD", 2),
    ("MDL", 2), ("MGA", 2), ("MKD", 2), ("MMK", 2), ("MNT", 2), ("MOP", 2), ("MRU", 2), ("MUR", 2),
    ("MVR", 2), ("MWK", 2), ("MXN", 2), ("MXV", 2), ("MYR", 2), ("MZN", 2), ("NAD", 2), ("NGN", 2),
    ("NIO", 2), ("NOK", 2), ("NPR", 2), ("NZD", 2), ("OMR", 3), ("PAB", 2), ("PEN", 2), ("PGK", 2),
    ("PHP", 2), ("PKR", 2), ("PLN", 2), ("PYG", 0), ("QAR", 2), ("RON", 2), ("RSD", 2), ("RUB", 2),
    ("RWF", 0), ("SAR", 2), ("SBD", 2), ("SCR", 2), ("SDG", 2), ("SEK", 2), ("SGD", 2), ("SHP", 2),
    ("SLE", 2), ("SLL", 2), ("SOS", 2), ("SRD", 2), ("SSP", 2), ("STN", 2), ("SVC", 2), ("SYP", 2),
    ("SZL", 2), ("THB", 2), ("TJS", 2), ("TMT", 2), ("TND", 3), ("TOP", 2), ("TRY", 2), ("TTD", 2),
    ("TWD", 2), ("TZS", 2), ("UAH", 2), ("UGX", 0), ("USD", 2), ("USN", 2), ("UYI", 0), ("UYU", 2),
    ("UYW", 4), ("UZS", 2), ("VED", 2), ("VES", 2), ("VND", 0), ("VUV", 0), ("WST", 2), ("XAF", 0),
    ("XCD", 2), ("XCG", 2), ("XOF", 0), ("XPF", 0), ("YER", 2), ("ZAR", 2), ("ZMW", 2), ("ZWG", 2),
    ("ZWL", 2),
];

/// ISO 4217 codes that exist but have no minor unit, so no amount can be
/// expressed in them; refused with a message of their own.
const NO_MINOR_UNIT: &[&str] = &[
    "XAD", "XAG", "XAU", "XBA", "XBB", "XBC", "XBD", "XDR", "XPD", "XPT", "XSU", "XTS", "XUA",
    "XXX",
];

/// How much of a rejected input an error message repeats: enough to find the
/// field, never a whole payload.
const EXCERPT_CHARS: usize = 32;

fn excerpt(text: &str) -> String {
    match text.char_indices().nth(EXCERPT_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// An ISO 4217 currency that has a minor unit.
///
/// Serialized as its three-letter code (`"JOD"`). Deserialization is strict:
/// upper case, known, with a minor unit. Adapters reading a provider's
/// lower-case code use [`Currency::from_code_ignore_case`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency(u8); // index into CURRENCIES

impl Currency {
    /// The currency for an upper-case ISO 4217 code, e.g. `"KWD"`.
    pub fn from_code(code: &str) -> Result<Self, CurrencyError> {
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(CurrencyError::Malformed(excerpt(code)));
        }
        match CURRENCIES.binary_search_by(|(c, _)| (*c).cmp(code)) {
            // The table has fewer than 256 rows (a test checks).
            Ok(index) => Ok(Currency(index as u8)),
            Err(_) if NO_MINOR_UNIT.contains(&code) => {
                Err(CurrencyError::NoMinorUnit(code.to_owned()))
            }
            Err(_) => Err(CurrencyError::Unknown(code.to_owned())),
        }
    }

    /// Like [`Currency::from_code`], but accepts `"jod"` and `"Jod"`, as some
    /// providers write codes in lower case. Whitespace is still refused.
    pub fn from_code_ignore_case(code: &str) -> Result<Self, CurrencyError> {
        if code.len() != 3 {
            return Err(CurrencyError::Malformed(excerpt(code)));
        }
        Self::from_code(&code.to_ascii_uppercase())
    }

    /// The three-letter code, e.g. `"JOD"`.
    pub fn code(self) -> &'static str {
        CURRENCIES[usize::from(self.0)].0
    }

    /// Digits after the decimal point: 3 for JOD, 2 for EUR, 0 for JPY.
    pub fn exponent(self) -> u8 {
        CURRENCIES[usize::from(self.0)].1
    }

    /// Every currency [`Currency::from_code`] accepts, in code order.
    pub fn all() -> impl Iterator<Item = Currency> {
        (0..CURRENCIES.len()).map(|i| Currency(i as u8))
    }

    /// Parses a decimal amount in major units (`"3.250"`) into minor units
    /// (`3250` for JOD). See the module docs for the grammar.
    pub fn parse_amount(self, text: &str) -> Result<i64, MoneyError> {
        parse_minor_units(text, self.exponent())
    }

    /// Formats minor units as a decimal in major units: `3250` JOD is `"3.250"`.
    pub fn format_amount(self, minor: i64) -> String {
        format_minor_units(minor, self.exponent())
    }

    /// Converts an integer amount written with `from_exponent` decimal digits
    /// (a provider's own idea of the minor unit, such as Grab's
    /// `currency.exponent`) into this currency's minor units, exactly:
    /// `1500` at exponent 0 is `150000` in a 2-decimal currency; `1500` at
    /// exponent 2 is `15` in JPY, while `1550` at exponent 2 is refused.
    pub fn rescale(self, amount: i64, from_exponent: u8) -> Result<i64, MoneyError> {
        let to = self.exponent();
        if from_exponent <= to {
            10_i64
                .checked_pow(u32::from(to - from_exponent))
                .and_then(|factor| amount.checked_mul(factor))
                .ok_or_else(|| MoneyError::Overflow(format_minor_units(amount, from_exponent)))
        } else {
            let exact = match 10_i64.checked_pow(u32::from(from_exponent - to)) {
                Some(divisor) if amount % divisor == 0 => Some(amount / divisor),
                // |amount| < 10^19 <= divisor: only zero divides evenly.
                None if amount == 0 => Some(0),
                _ => None,
            };
            exact.ok_or_else(|| MoneyError::TooPrecise {
                text: excerpt(&format_minor_units(amount, from_exponent)),
                max_decimals: to,
            })
        }
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Currency {
    type Err = CurrencyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_code(s)
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = String::deserialize(deserializer)?;
        Currency::from_code(&code).map_err(de::Error::custom)
    }
}

#[cfg(test)]
impl schemars::JsonSchema for Currency {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Currency".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let codes: Vec<&str> = Currency::all().map(Currency::code).collect();
        schemars::json_schema!({
            "description": "ISO 4217 alphabetic code of a currency with a minor unit; every amount in the order is an integer count of its minor unit (3.250 JOD is 3250).",
            "type": "string",
            "enum": codes,
        })
    }
}

/// A currency code was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CurrencyError {
    #[error("currency code {0:?} is not three upper-case letters")]
    Malformed(String),
    #[error("unknown currency code {0:?}")]
    Unknown(String),
    #[error("currency code {0:?} has no minor unit")]
    NoMinorUnit(String),
}

/// An amount could not be turned into minor units exactly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("amount is empty")]
    Empty,
    #[error("amount {0:?} is not a decimal number")]
    Invalid(String),
    #[error("amount {text:?} has more than {max_decimals} decimal places")]
    TooPrecise { text: String, max_decimals: u8 },
    #[error("amount {0:?} is out of range")]
    Overflow(String),
    #[error("expected a decimal number or string, found {0}")]
    NotADecimal(&'static str),
}

impl MoneyError {
    /// A short stable name for metrics and logs.
    pub fn error_type(&self) -> &'static str {
        match self {
            MoneyError::Empty => "empty",
            MoneyError::Invalid(_) => "invalid",
            MoneyError::TooPrecise { .. } => "too_precise",
            MoneyError::Overflow(_) => "overflow",
            MoneyError::NotADecimal(_) => "not_a_decimal",
        }
    }
}

/// A decimal as split by the grammar: `-`, integer digits, fraction digits,
/// and the exponent (saturated: anything that large overflows or is too
/// precise anyway).
struct Parts<'a> {
    negative: bool,
    int: &'a str,
    frac: &'a str,
    exp: i64,
}

/// Larger exponents behave the same (any non-zero digit overflows or is too
/// precise), so the exponent is clamped here instead of overflowing.
const EXP_CLAMP: i64 = 1 << 40;

fn split(text: &str) -> Result<Parts<'_>, MoneyError> {
    if text.is_empty() {
        return Err(MoneyError::Empty);
    }
    let invalid = || MoneyError::Invalid(excerpt(text));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());

    let (negative, rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exp_text) = match rest.find(['e', 'E']) {
        Some(at) => (&rest[..at], Some(&rest[at + 1..])),
        None => (rest, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((int, frac)) if digits(frac) => (int, frac),
        Some(_) => return Err(invalid()),
        None => (mantissa, ""),
    };
    if !digits(int) {
        return Err(invalid());
    }
    let exp = match exp_text {
        None => 0,
        Some(e) => {
            let (exp_negative, e) = match e.as_bytes().first() {
                Some(b'-') => (true, &e[1..]),
                Some(b'+') => (false, &e[1..]),
                _ => (false, e),
            };
            if !digits(e) {
                return Err(invalid());
            }
            let magnitude = e.bytes().fold(0_i64, |acc, b| {
                (acc * 10 + i64::from(b - b'0')).min(EXP_CLAMP)
            });
            if exp_negative { -magnitude } else { magnitude }
        }
    };
    Ok(Parts {
        negative,
        int,
        frac,
        exp,
    })
}

/// Why digits could not become minor units; the caller adds the text.
enum Inexact {
    TooPrecise,
    Overflow,
}

impl Parts<'_> {
    fn to_minor(&self, exponent: u8) -> Result<i64, Inexact> {
        let all = self.int.bytes().chain(self.frac.bytes());
        let leading_zeros = all.clone().take_while(|&d| d == b'0').count();
        let significant = all.skip(leading_zeros);
        let count = self.int.len() + self.frac.len() - leading_zeros;
        if count == 0 {
            return Ok(0); // "0", "-0.000", "0e99"
        }
        // value in minor units = significant digits × 10^shift
        let frac_len = i64::try_from(self.frac.len()).unwrap_or(i64::MAX);
        let shift = self
            .exp
            .saturating_sub(frac_len)
            .saturating_add(i64::from(exponent));
        let (keep, zeros) = if shift < 0 {
            let drop = usize::try_from(shift.unsigned_abs()).unwrap_or(usize::MAX);
            // The first significant digit is not zero, so it may not be dropped.
            if drop >= count {
                return Err(Inexact::TooPrecise);
            }
            if significant.clone().skip(count - drop).any(|d| d != b'0') {
                return Err(Inexact::TooPrecise);
            }
            (count - drop, 0)
        } else {
            (count, shift.unsigned_abs())
        };
        let limit: u128 = if self.negative {
            1 << 63 // |i64::MIN|
        } else {
            i64::MAX as u128
        };
        let mut value: u128 = 0;
        for d in significant.take(keep) {
            value = value * 10 + u128::from(d - b'0');
            if value > limit {
                return Err(Inexact::Overflow);
            }
        }
        // value >= 1 here, so this loop ends within 20 rounds.
        for _ in 0..zeros {
            value *= 10;
            if value > limit {
                return Err(Inexact::Overflow);
            }
        }
        let signed = value as i128; // value <= 2^63
        Ok(if self.negative { -signed } else { signed } as i64)
    }
}

/// Parses a decimal in major units into minor units with `exponent` decimal
/// digits: `("3.250", 3)` is `3250`, `("-1.5", 2)` is `-150`, `("1e2", 2)` is
/// `10000`. See the module docs for the grammar and what is refused.
pub fn parse_minor_units(text: &str, exponent: u8) -> Result<i64, MoneyError> {
    split(text)?.to_minor(exponent).map_err(|e| match e {
        Inexact::TooPrecise => MoneyError::TooPrecise {
            text: excerpt(text),
            max_decimals: exponent,
        },
        Inexact::Overflow => MoneyError::Overflow(excerpt(text)),
    })
}

/// Formats minor units as a decimal in major units with exactly `exponent`
/// fractional digits: `(3250, 3)` is `"3.250"`, `(-5, 2)` is `"-0.05"`,
/// `(500, 0)` is `"500"`. [`parse_minor_units`] reads it back unchanged.
pub fn format_minor_units(minor: i64, exponent: u8) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let digits = minor.unsigned_abs().to_string();
    let exponent = usize::from(exponent);
    if exponent == 0 {
        return format!("{sign}{digits}");
    }
    let padded = if digits.len() <= exponent {
        format!("{}{digits}", "0".repeat(exponent + 1 - digits.len()))
    } else {
        digits
    };
    let (int, frac) = padded.split_at(padded.len() - exponent);
    format!("{sign}{int}.{frac}")
}

/// A decimal amount exactly as the provider wrote it: a JSON number
/// (`2.675`) or a JSON string (`"2.675"`), syntax-checked, not yet scaled.
///
/// Use it as the type of a money field in a provider's payload struct, then
/// [`Decimal::to_minor_units`] with the order's currency. Equality compares
/// the text (`2.50` and `2.5` differ); compare minor units instead.
///
/// ```
/// use canonical::money::{Currency, Decimal};
///
/// #[derive(serde::Deserialize)]
/// struct Line { price: Decimal }
///
/// let line: Line = serde_json::from_str(r#"{"price": 2.675}"#).unwrap();
/// let jod = Currency::from_code("JOD").unwrap();
/// assert_eq!(line.price.to_minor_units(jod), Ok(2675));
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Decimal(Box<str>);

impl Decimal {
    /// Checks `text` against the decimal grammar and keeps it.
    pub fn parse(text: &str) -> Result<Self, MoneyError> {
        split(text)?;
        Ok(Decimal(text.into()))
    }

    /// The text of one JSON value: a number literal, or a string holding a
    /// decimal. `null`, booleans, arrays and objects are refused.
    pub fn from_json(raw: &str) -> Result<Self, MoneyError> {
        let raw = raw.trim_matches([' ', '\t', '\n', '\r']);
        match raw.as_bytes().first() {
            Some(b'"') => {
                let text: String =
                    serde_json::from_str(raw).map_err(|_| MoneyError::Invalid(excerpt(raw)))?;
                Self::parse(&text)
            }
            // JSON's number grammar is a subset of ours.
            Some(b'-' | b'0'..=b'9') => Self::parse(raw),
            Some(b'n') => Err(MoneyError::NotADecimal("null")),
            Some(b't' | b'f') => Err(MoneyError::NotADecimal("a boolean")),
            Some(b'[') => Err(MoneyError::NotADecimal("an array")),
            Some(b'{') => Err(MoneyError::NotADecimal("an object")),
            _ => Err(MoneyError::Invalid(excerpt(raw))),
        }
    }

    /// The decimal text as written (without the quotes of a JSON string).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The amount in `currency`'s minor units, exactly.
    pub fn to_minor_units(&self, currency: Currency) -> Result<i64, MoneyError> {
        parse_minor_units(&self.0, currency.exponent())
    }

    /// The amount in minor units with `exponent` decimal digits, exactly.
    pub fn to_minor_units_with_exponent(&self, exponent: u8) -> Result<i64, MoneyError> {
        parse_minor_units(&self.0, exponent)
    }
}

impl fmt::Debug for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Decimal({})", self.0)
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Decimal {
    type Err = MoneyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Serialized as a JSON string, which keeps every digit.
impl Serialize for Decimal {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// Reads the JSON value's literal text through `RawValue`; works with
/// `serde_json::from_slice`, `from_str` and `from_reader`.
impl<'de> Deserialize<'de> for Decimal {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        Decimal::from_json(raw.get()).map_err(de::Error::custom)
    }
}

/// For `Option<Decimal>` fields of providers that write "not set" as an empty
/// string (Talabat's `""`): `null`, `""` and, with `#[serde(default)]`, a
/// missing field are `None`; anything else must be a decimal.
///
/// ```
/// # use canonical::money::Decimal;
/// #[derive(serde::Deserialize)]
/// struct Price {
///     #[serde(default, deserialize_with = "canonical::money::empty_as_none")]
///     rider_tip: Option<Decimal>,
/// }
/// let p: Price = serde_json::from_str(r#"{"rider_tip": ""}"#).unwrap();
/// assert_eq!(p.rider_tip, None);
/// ```
pub fn empty_as_none<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Decimal>, D::Error> {
    match Option::<Box<RawValue>>::deserialize(deserializer)? {
        None => Ok(None),
        Some(raw) if raw.get().trim() == "\"\"" => Ok(None),
        Some(raw) => Decimal::from_json(raw.get())
            .map(Some)
            .map_err(de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cur(code: &str) -> Currency {
        Currency::from_code(code).unwrap()
    }

    #[test]
    fn table_is_sorted_unique_and_fits_an_index() {
        assert!(CURRENCIES.len() <= 256);
        assert!(
            CURRENCIES.windows(2).all(|w| w[0].0 < w[1].0),
            "sorted, no duplicates"
        );
        for (code, _) in CURRENCIES {
            assert!(code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()));
            assert!(!NO_MINOR_UNIT.contains(code), "{code}");
        }
        assert_eq!(Currency::all().count(), CURRENCIES.len());
    }

    #[test]
    fn exponents_follow_iso_4217() {
        for code in ["JOD", "KWD", "BHD", "OMR", "TND", "LYD", "IQD"] {
            assert_eq!(cur(code).exponent(), 3, "{code}");
        }
        for code in [
            "JPY", "KRW", "CLP", "ISK", "VND", "UGX", "XAF", "XOF", "XPF", "PYG", "RWF", "BIF",
            "DJF", "GNF", "KMF", "VUV", "UYI",
        ] {
            assert_eq!(cur(code).exponent(), 0, "{code}");
        }
        for code in [
            "USD", "EUR", "GBP", "SAR", "AED", "QAR", "EGP", "SGD", "HUF", "XCG",
        ] {
            assert_eq!(cur(code).exponent(), 2, "{code}");
        }
        for code in ["CLF", "UYW"] {
            assert_eq!(cur(code).exponent(), 4, "{code}");
        }
        let counts = [0, 2, 3, 4].map(|e| Currency::all().filter(|c| c.exponent() == e).count());
        assert_eq!(counts, [17, 143, 7, 2]);
    }

    #[test]
    fn currency_codes_are_validated() {
        assert_eq!(cur("JOD").code(), "JOD");
        assert_eq!("KWD".parse::<Currency>(), Ok(cur("KWD")));
        assert_eq!(
            Currency::from_code("jod"),
            Err(CurrencyError::Malformed("jod".into()))
        );
        assert_eq!(
            Currency::from_code("JO"),
            Err(CurrencyError::Malformed("JO".into()))
        );
        assert_eq!(
            Currency::from_code(""),
            Err(CurrencyError::Malformed("".into()))
        );
        assert_eq!(
            Currency::from_code("JOD "),
            Err(CurrencyError::Malformed("JOD ".into()))
        );
        assert_eq!(
            Currency::from_code("ABC"),
            Err(CurrencyError::Unknown("ABC".into()))
        );
        assert_eq!(
            Currency::from_code("XAU"),
            Err(CurrencyError::NoMinorUnit("XAU".into()))
        );
        assert_eq!(
            Currency::from_code("XXX"),
            Err(CurrencyError::NoMinorUnit("XXX".into()))
        );
        assert_eq!(Currency::from_code_ignore_case("jod"), Ok(cur("JOD")));
        assert_eq!(Currency::from_code_ignore_case("Kwd"), Ok(cur("KWD")));
        assert_eq!(
            Currency::from_code_ignore_case("jo d"),
            Err(CurrencyError::Malformed("jo d".into()))
        );
        assert_eq!(
            Currency::from_code("ÄÖÜ").unwrap_err().to_string(),
            "currency code \"ÄÖÜ\" is not three upper-case letters"
        );
    }

    #[test]
    fn currency_serde_is_the_strict_code() {
        assert_eq!(serde_json::to_string(&cur("BHD")).unwrap(), "\"BHD\"");
        assert_eq!(
            serde_json::from_str::<Currency>("\"OMR\"").unwrap(),
            cur("OMR")
        );
        let err = serde_json::from_str::<Currency>("\"omr\"").unwrap_err();
        assert!(
            err.to_string().starts_with("currency code \"omr\" is not"),
            "{err}"
        );
        let err = serde_json::from_str::<Currency>("\"ZZZ\"").unwrap_err();
        assert!(
            err.to_string().starts_with("unknown currency code \"ZZZ\""),
            "{err}"
        );
    }

    #[test]
    fn parses_decimals_exactly() {
        let ok: &[(&str, u8, i64)] = &[
            ("3.250", 3, 3250),
            ("3.25", 3, 3250),
            ("2.675", 3, 2675),
            ("10", 2, 1000),
            ("-1.5", 2, -150),
            ("-0", 2, 0),
            ("-0.000", 3, 0),
            ("0.005", 3, 5),
            ("007.50", 2, 750),
            ("1e2", 2, 10000),
            ("1E+2", 0, 100),
            ("2675e-3", 3, 2675),
            ("0.2675E1", 3, 2675),
            ("3.2500", 3, 3250),
            ("10.0", 0, 10),
            ("1.000000000000000000000000", 2, 100),
            ("0e999999999999999999999", 2, 0),
            ("500", 0, 500),
            ("9223372036854775807", 0, i64::MAX),
            ("-9223372036854775808", 0, i64::MIN),
            ("-92233720368547758.08", 2, i64::MIN),
            ("92233720368547758.07", 2, i64::MAX),
        ];
        for &(text, exp, want) in ok {
            assert_eq!(
                parse_minor_units(text, exp),
                Ok(want),
                "{text} at exponent {exp}"
            );
        }
    }

    #[test]
    fn refuses_what_it_cannot_represent_exactly() {
        let too_precise = |text: &str, max| MoneyError::TooPrecise {
            text: text.into(),
            max_decimals: max,
        };
        assert_eq!(
            parse_minor_units("2.6755", 3),
            Err(too_precise("2.6755", 3))
        );
        assert_eq!(parse_minor_units("0.5", 0), Err(too_precise("0.5", 0)));
        assert_eq!(
            parse_minor_units("0.0001", 3),
            Err(too_precise("0.0001", 3))
        );
        assert_eq!(parse_minor_units("1e-3", 2), Err(too_precise("1e-3", 2)));
        assert_eq!(
            parse_minor_units("1e-99999999999999999999", 2),
            Err(too_precise("1e-99999999999999999999", 2))
        );
        assert_eq!(
            parse_minor_units("2.6755", 3).unwrap_err().to_string(),
            "amount \"2.6755\" has more than 3 decimal places"
        );

        let overflow = |text: &str| MoneyError::Overflow(text.into());
        assert_eq!(
            parse_minor_units("9223372036854775808", 0),
            Err(overflow("9223372036854775808"))
        );
        assert_eq!(
            parse_minor_units("-9223372036854775809", 0),
            Err(overflow("-9223372036854775809"))
        );
        assert_eq!(
            parse_minor_units("92233720368547758.08", 2),
            Err(overflow("92233720368547758.08"))
        );
        assert_eq!(parse_minor_units("1e19", 0), Err(overflow("1e19")));
        assert_eq!(
            parse_minor_units("1e999999999999999999999", 0),
            Err(overflow("1e999999999999999999999"))
        );

        assert_eq!(parse_minor_units("", 2), Err(MoneyError::Empty));
        for bad in [
            " 1", "1 ", "+1", ".5", "5.", "1,5", "1_000", "NaN", "nan", "Infinity", "-inf", "0x10",
            "1e", "1e+", "--1", "-", "1.2.3", "١٢", "$5", "5 JOD", "1.5e2.0",
        ] {
            assert_eq!(
                parse_minor_units(bad, 2),
                Err(MoneyError::Invalid(bad.into())),
                "{bad:?}"
            );
        }
        let long = "9".repeat(100);
        assert_eq!(
            parse_minor_units(&long, 2).unwrap_err().to_string(),
            format!("amount \"{}…\" is out of range", "9".repeat(32))
        );
    }

    #[test]
    fn formats_minor_units() {
        assert_eq!(format_minor_units(3250, 3), "3.250");
        assert_eq!(format_minor_units(-5, 2), "-0.05");
        assert_eq!(format_minor_units(0, 2), "0.00");
        assert_eq!(format_minor_units(500, 0), "500");
        assert_eq!(format_minor_units(i64::MIN, 2), "-92233720368547758.08");
        assert_eq!(cur("JOD").format_amount(2675), "2.675");
        assert_eq!(cur("JPY").format_amount(-7), "-7");
    }

    #[test]
    fn rescales_provider_exponents_exactly() {
        assert_eq!(cur("IDR").rescale(15_000, 0), Ok(1_500_000));
        assert_eq!(cur("JPY").rescale(1_500, 2), Ok(15));
        assert_eq!(
            cur("JPY").rescale(1_550, 2),
            Err(MoneyError::TooPrecise {
                text: "15.50".into(),
                max_decimals: 0
            })
        );
        assert_eq!(cur("KWD").rescale(-125, 3), Ok(-125));
        assert_eq!(cur("KWD").rescale(0, 30), Ok(0));
        assert!(matches!(
            cur("KWD").rescale(1, 30),
            Err(MoneyError::TooPrecise { .. })
        ));
        assert!(matches!(
            cur("KWD").rescale(i64::MAX, 0),
            Err(MoneyError::Overflow(_))
        ));
    }

    #[derive(Debug, Deserialize)]
    struct Line {
        price: Decimal,
        #[serde(default)]
        tax: Option<Decimal>,
        #[serde(default, deserialize_with = "empty_as_none")]
        tip: Option<Decimal>,
    }

    #[test]
    fn json_numbers_are_read_as_written() {
        // The trap this module exists for: through f64 an amount loses a unit.
        assert_eq!((1.001_f64 * 1000.0) as i64, 1000);
        let jod = cur("JOD");
        let line: Line = serde_json::from_str(r#"{"price": 1.001}"#).unwrap();
        assert_eq!(line.price.to_minor_units(jod), Ok(1001));

        let line: Line = serde_json::from_str(r#"{"price": 2.675}"#).unwrap();
        assert_eq!(line.price.as_str(), "2.675");
        assert_eq!(line.price.to_minor_units(jod), Ok(2675));
        assert_eq!(line.tax, None);
        assert_eq!(line.tip, None);

        let line: Line =
            serde_json::from_slice(br#"{"price":"3.250","tax":null,"tip":"0.500"}"#).unwrap();
        assert_eq!(line.price.to_minor_units(jod), Ok(3250));
        assert_eq!(line.tax, None);
        assert_eq!(line.tip.unwrap().to_minor_units(jod), Ok(500));

        let line: Line =
            serde_json::from_reader(&br#"{ "price" : 1.5e1 , "tip": "" }"#[..]).unwrap();
        assert_eq!(line.price.to_minor_units(jod), Ok(15000));
        assert_eq!(line.tip, None);

        // A precision a float cannot hold at all.
        let line: Line = serde_json::from_str(r#"{"price": 92233720368547758.07}"#).unwrap();
        assert_eq!(line.price.to_minor_units_with_exponent(2), Ok(i64::MAX));

        let line: Line = serde_json::from_str(r#"{"price": 2.6755}"#).unwrap();
        assert_eq!(
            line.price.to_minor_units(jod),
            Err(MoneyError::TooPrecise {
                text: "2.6755".into(),
                max_decimals: 3
            })
        );
    }

    #[test]
    fn json_values_that_are_not_decimals_are_refused() {
        let err = |json: &str| serde_json::from_str::<Line>(json).unwrap_err().to_string();
        assert!(
            err(r#"{"price": null}"#)
                .starts_with("expected a decimal number or string, found null")
        );
        assert!(
            err(r#"{"price": true}"#)
                .starts_with("expected a decimal number or string, found a boolean")
        );
        assert!(
            err(r#"{"price": [1]}"#)
                .starts_with("expected a decimal number or string, found an array")
        );
        assert!(
            err(r#"{"price": {}}"#)
                .starts_with("expected a decimal number or string, found an object")
        );
        assert!(err(r#"{"price": ""}"#).starts_with("amount is empty"));
        assert!(err(r#"{"price": "1,50"}"#).starts_with("amount \"1,50\" is not a decimal number"));
        assert!(err(r#"{"price": "NaN"}"#).starts_with("amount \"NaN\" is not a decimal number"));
        assert!(
            err(r#"{"price": 1, "tip": "abc"}"#)
                .starts_with("amount \"abc\" is not a decimal number")
        );
        assert_eq!(
            Decimal::from_json("\"\\u0031.5\""),
            Ok(Decimal::parse("1.5").unwrap())
        );
    }

    #[test]
    fn buffered_deserialization_fails_instead_of_rounding() {
        // serde buffers untagged enums and turns numbers into f64: a Decimal in
        // there must refuse, never hand back a float's idea of the amount.
        #[derive(Debug, Deserialize)]
        #[serde(untagged)]
        #[allow(dead_code)]
        enum Either {
            Line(Line),
        }
        assert!(serde_json::from_str::<Either>(r#"{"price": 2.675}"#).is_err());
        let value: serde_json::Value = serde_json::from_str(r#"{"price": 2.675}"#).unwrap();
        // From a Value, serde_json re-renders the f64: right for short literals,
        // but not the raw text. Adapters deserialize from bytes instead.
        if let Ok(line) = serde_json::from_value::<Line>(value) {
            assert_eq!(line.price.to_minor_units(cur("JOD")), Ok(2675));
        }
    }

    #[test]
    fn decimal_serializes_as_a_string() {
        let d = Decimal::parse("2.675").unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"2.675\"");
        assert_eq!(format!("{d} {d:?}"), "2.675 Decimal(2.675)");
        assert_eq!(
            "abc".parse::<Decimal>(),
            Err(MoneyError::Invalid("abc".into()))
        );
    }

    proptest! {
        #[test]
        fn format_then_parse_is_identity(minor in any::<i64>(), exponent in 0_u8..=30) {
            let text = format_minor_units(minor, exponent);
            prop_assert_eq!(parse_minor_units(&text, exponent), Ok(minor));
            // And the same text as a JSON number literal, through RawValue.
            let json = format!(r#"{{"price": {text}}}"#);
            let line: Line = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(line.price.to_minor_units_with_exponent(exponent), Ok(minor));
        }

        #[test]
        fn every_currency_round_trips(minor in any::<i64>(), index in 0..CURRENCIES.len()) {
            let currency = Currency(index as u8);
            prop_assert_eq!(currency.parse_amount(&currency.format_amount(minor)), Ok(minor));
            prop_assert_eq!(currency.code().parse::<Currency>(), Ok(currency));
        }

        #[test]
        fn scientific_notation_matches_plain(mantissa in 0_i64..1_000_000_000, shift in -6_i64..6, exponent in 0_u8..=4) {
            // mantissa × 10^shift written as "<mantissa>e<shift>"; compare with an
            // integer reference computed without any decimal parsing.
            let text = format!("{mantissa}e{shift}");
            let scale = shift + i64::from(exponent);
            let want = if scale >= 0 {
                Ok(mantissa * 10_i64.pow(scale as u32))
            } else {
                let divisor = 10_i64.pow(scale.unsigned_abs() as u32);
                if mantissa % divisor == 0 { Ok(mantissa / divisor) } else {
                    Err(MoneyError::TooPrecise { text: text.clone(), max_decimals: exponent })
                }
            };
            prop_assert_eq!(parse_minor_units(&text, exponent), want);
        }
    }
}
