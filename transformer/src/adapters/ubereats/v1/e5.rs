//! Uber's Order Fulfillment money: `{amount_e5, currency_code, formatted}`
//! (the value × 100 000) or a summary `{net, tax, gross, is_tax_inclusive}`
//! of three of those, read into exact minor units of the order's currency
//! (see the parent module for which part is read).

use canonical::money::Currency;
use canonical::order::ProblemKind;
use serde::Deserialize;
use serde::de::{self, Deserializer};

use super::Detail;
use crate::convert::{Problems, excerpt, text};

/// An amount: `{amount_e5, currency_code}` itself, or a summary of three.
#[derive(Deserialize)]
pub(super) struct MoneyIn {
    #[serde(default)]
    amount_e5: Option<E5>,
    #[serde(default)]
    currency_code: Option<String>,
    #[serde(default)]
    net: Option<Part>,
    #[serde(default)]
    tax: Option<Part>,
    #[serde(default)]
    gross: Option<Part>,
    #[serde(default)]
    pub is_tax_inclusive: Option<bool>,
}

#[derive(Deserialize)]
struct Part {
    #[serde(default)]
    amount_e5: Option<E5>,
    #[serde(default)]
    currency_code: Option<String>,
}

/// A value × 100 000, as a JSON integer or an integer in a string (how
/// protobuf's JSON writes 64-bit integers). A fraction is no such value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct E5(i64);

impl<'de> Deserialize<'de> for E5 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = E5;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an integer amount_e5 (number or string)")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<E5, E> {
                Ok(E5(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<E5, E> {
                i64::try_from(v)
                    .map(E5)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<E5, E> {
                let t = v.trim();
                let digits = t.strip_prefix('-').unwrap_or(t);
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(E::invalid_value(de::Unexpected::Str(&excerpt(v)), &self));
                }
                t.parse()
                    .map(E5)
                    .map_err(|_| E::invalid_value(de::Unexpected::Str(&excerpt(v)), &self))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// Reads amounts in the order's currency, the part its tax rule says.
pub(super) struct Reader {
    /// `None` when unknown (already reported): every amount reads as 0.
    pub currency: Option<Currency>,
    /// Prices include the tax: read `gross`, else `net`.
    pub inclusive: bool,
}

impl Reader {
    fn e5(&self, p: &mut Problems, path: &str, amount: Option<E5>, code: Option<&str>) -> i64 {
        let Some(c) = self.currency else { return 0 };
        if let Some(code) = code.map(str::trim).filter(|s| !s.is_empty()) {
            match Currency::from_code_ignore_case(code) {
                Ok(own) if own == c => {}
                Ok(other) => {
                    p.push(
                        format!("{path}.currency_code"),
                        ProblemKind::Inconsistent,
                        format!("{other} differs from the order's currency {c}"),
                    );
                    return 0;
                }
                Err(e) => {
                    p.push(
                        format!("{path}.currency_code"),
                        ProblemKind::OutOfRange,
                        e.to_string(),
                    );
                    return 0;
                }
            }
        }
        let Some(E5(v)) = amount else { return 0 };
        c.rescale(v, 5).unwrap_or_else(|e| {
            p.money(&format!("{path}.amount_e5"), &e);
            0
        })
    }

    fn part(&self, p: &mut Problems, path: &str, name: &str, part: Option<&Part>) -> Option<i64> {
        part.map(|x| {
            self.e5(
                p,
                &format!("{path}.{name}"),
                x.amount_e5,
                x.currency_code.as_deref(),
            )
        })
    }

    /// A flat amount, if `m` is one.
    fn flat(&self, p: &mut Problems, path: &str, m: &MoneyIn) -> Option<i64> {
        m.amount_e5
            .map(|_| self.e5(p, path, m.amount_e5, m.currency_code.as_deref()))
    }

    /// The part of `m` the order's tax rule reads: `gross` when prices
    /// include tax, `net` when it is added on top.
    pub(super) fn price(&self, p: &mut Problems, path: &str, m: &MoneyIn) -> i64 {
        if let Some(v) = self.flat(p, path, m) {
            return v;
        }
        let tax = |p: &mut Problems| self.part(p, path, "tax", m.tax.as_ref()).unwrap_or(0);
        if self.inclusive {
            match self.part(p, path, "gross", m.gross.as_ref()) {
                Some(g) => g,
                None => self.part(p, path, "net", m.net.as_ref()).unwrap_or(0) + tax(p),
            }
        } else {
            match self.part(p, path, "net", m.net.as_ref()) {
                Some(n) => n,
                None => self.part(p, path, "gross", m.gross.as_ref()).unwrap_or(0) - tax(p),
            }
        }
    }

    /// What is charged: `gross`, else `net` and `tax`.
    pub(super) fn gross(&self, p: &mut Problems, path: &str, m: &MoneyIn) -> i64 {
        if let Some(v) = self.flat(p, path, m) {
            return v;
        }
        match self.part(p, path, "gross", m.gross.as_ref()) {
            Some(g) => g,
            None => {
                self.part(p, path, "net", m.net.as_ref()).unwrap_or(0)
                    + self.part(p, path, "tax", m.tax.as_ref()).unwrap_or(0)
            }
        }
    }

    pub(super) fn tax(&self, p: &mut Problems, path: &str, m: &MoneyIn) -> i64 {
        self.part(p, path, "tax", m.tax.as_ref()).unwrap_or(0)
    }

    pub(super) fn opt_price(&self, p: &mut Problems, path: &str, m: Option<&MoneyIn>) -> i64 {
        m.map_or(0, |m| self.price(p, path, m))
    }
}

/// The code of the order's currency.
pub(super) fn currency_code(d: &Detail) -> Option<String> {
    text(d.currency_code.as_deref()).or_else(|| {
        let t = d.order_total.as_ref()?;
        [&t.gross, &t.net, &t.tax]
            .into_iter()
            .flatten()
            .find_map(|x| text(x.currency_code.as_deref()))
            .or_else(|| text(t.currency_code.as_deref()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(json: &str) -> Result<E5, String> {
        #[derive(Deserialize)]
        struct W {
            v: E5,
        }
        serde_json::from_str::<W>(json)
            .map(|w| w.v)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn amount_e5_is_an_integer_written_either_way() {
        assert_eq!(read(r#"{"v": 1245000}"#), Ok(E5(1_245_000)));
        assert_eq!(read(r#"{"v": "-300000"}"#), Ok(E5(-300_000)));
        assert!(
            read(r#"{"v": 12.45}"#)
                .unwrap_err()
                .contains("expected an integer amount_e5")
        );
        assert!(
            read(r#"{"v": "12.45"}"#)
                .unwrap_err()
                .contains("invalid value")
        );
        assert!(read(r#"{"v": 18446744073709551615}"#).is_err());
    }

    #[test]
    fn amount_e5_becomes_minor_units_exactly_or_is_a_problem() {
        let usd = Currency::from_code("USD").unwrap();
        let r = Reader {
            currency: Some(usd),
            inclusive: false,
        };
        let mut p = Problems::default();
        assert_eq!(r.e5(&mut p, "x", Some(E5(1_245_000)), Some("usd")), 1245);
        assert_eq!(r.e5(&mut p, "x", None, None), 0);
        assert!(p.is_empty());
        assert_eq!(r.e5(&mut p, "y", Some(E5(1_234_567)), None), 0);
        assert_eq!(r.e5(&mut p, "z", Some(E5(100_000)), Some("EUR")), 0);
        let found: Vec<String> = p.errors().iter().map(ToString::to_string).collect();
        assert_eq!(
            found,
            [
                "y.amount_e5: amount \"12.34567\" has more than 2 decimal places",
                "z.currency_code: EUR differs from the order's currency USD",
            ]
        );
        // Zero-decimal and three-decimal currencies.
        let jpy = Reader {
            currency: Some(Currency::from_code("JPY").unwrap()),
            inclusive: true,
        };
        assert_eq!(jpy.e5(&mut p, "x", Some(E5(128_000_000)), None), 1280);
        let kwd = Reader {
            currency: Some(Currency::from_code("KWD").unwrap()),
            inclusive: true,
        };
        assert_eq!(kwd.e5(&mut p, "x", Some(E5(125_000)), None), 1250);
    }
}
