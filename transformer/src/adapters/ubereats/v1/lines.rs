//! The Order Fulfillment order's lines (cart items priced from the
//! payment's breakdown) and order amounts (see the parent module for the
//! readings).

use std::collections::BTreeMap;

use canonical::order::{Discount, Fee, Item, ProblemKind, Totals};
use serde_json::Value;

use super::e5::Reader;
use super::{Breakdown, Detail, ItemIn};
use crate::convert::{Problems, excerpt, join, quantity, text};

/// Builds lines from the cart and their prices from the breakdown.
pub(super) struct Lines<'a> {
    pub r: &'a Reader,
    /// `price_breakdown` by `cart_item_id`.
    pub prices: &'a BTreeMap<&'a str, &'a Breakdown>,
    /// The breakdown's path, for messages.
    pub breakdown: String,
}

impl Lines<'_> {
    /// One line and its modifiers (totals are filled afterwards).
    pub(super) fn line(
        &self,
        p: &mut Problems,
        path: &str,
        item: &ItemIn,
        top: bool,
        allergies: &mut Vec<String>,
    ) -> Item {
        let mut modifiers = Vec::new();
        let mut notes = vec![
            item.customer_request
                .as_ref()
                .and_then(|r| text(r.special_instructions.as_deref())),
        ];
        for g in &item.selected_modifier_groups {
            for s in &g.selected_items {
                let at = format!("{path}.modifiers[{}]", modifiers.len());
                modifiers.push(self.line(p, &at, s, false, allergies));
            }
            notes.extend(g.removed().map(Some));
        }
        let title = item.title.trim();
        if let Some(a) = item
            .customer_request
            .as_ref()
            .and_then(|r| r.allergy.as_ref())
        {
            let allergens: Vec<&str> = a
                .allergens
                .iter()
                .filter_map(|v| match v {
                    Value::String(s) => Some(s.as_str()),
                    Value::Object(o) => o.get("type").or(o.get("name")).and_then(Value::as_str),
                    _ => None,
                })
                .collect();
            let said = join(
                [
                    join(allergens.iter().map(|s| Some(*s)), ", ").as_deref(),
                    a.instructions.as_deref(),
                ],
                ". ",
            );
            if let Some(said) = said {
                allergies.push(format!("{title}: {said}"));
            }
        }
        let quantity = quantity(
            p,
            &format!("{path}.quantity"),
            item.quantity
                .as_ref()
                .and_then(|q| q.amount)
                .unwrap_or_default(),
        );
        let key = text(item.cart_item_id.as_deref()).or_else(|| text(item.id.as_deref()));
        let entry = key.as_deref().and_then(|k| self.prices.get(k));
        let at = format!("{path}.unit_price");
        let unit_price = match (entry, top) {
            (Some(b), _) => match &b.unit {
                Some(u) => self.r.price(p, &at, u),
                None => {
                    p.push(
                        at,
                        ProblemKind::Missing,
                        format!(
                            "the {} entry for cart_item_id {:?} has no unit",
                            self.breakdown,
                            excerpt(key.as_deref().unwrap_or_default())
                        ),
                    );
                    0
                }
            },
            (None, false) => 0,
            (None, true) => {
                p.push(
                    at,
                    ProblemKind::Missing,
                    match &key {
                        Some(k) => format!(
                            "{} has no entry for cart_item_id {:?}",
                            self.breakdown,
                            excerpt(k)
                        ),
                        None => "the item has no cart_item_id to find its price by".to_owned(),
                    },
                );
                0
            }
        };
        Item {
            provider_item_id: text(item.external_data.as_deref())
                .or_else(|| text(item.id.as_deref())),
            product_id: None,
            name: title.to_owned(),
            quantity,
            unit_price,
            total: 0,
            notes: join(notes.iter().map(Option::as_deref), "; "),
            modifiers,
        }
    }
}

/// The order's amounts from `payment_detail`.
pub(super) fn totals(
    p: &mut Problems,
    detail: &str,
    r: &Reader,
    d: &Detail,
    items: &[Item],
) -> Totals {
    let subtotal = match d.item_charges.as_ref().and_then(|c| c.total.as_ref()) {
        Some(t) => r.price(p, &format!("{detail}.item_charges.total"), t),
        None => items.iter().map(|i| i.total).sum(),
    };

    let mut delivery_fee = 0;
    let mut fees = Vec::new();
    if let Some(f) = &d.fees {
        let total = f.total.as_ref().map(|t| {
            (
                format!("{detail}.fees.total"),
                r.price(p, &format!("{detail}.fees.total"), t),
            )
        });
        let mut sum = 0;
        for (k, x) in f.details.iter().enumerate() {
            let amount = r.opt_price(
                p,
                &format!("{detail}.fees.details[{k}].amount"),
                x.amount.as_ref(),
            );
            sum += amount;
            let name = text(x.id.as_deref())
                .or_else(|| text(x.kind.as_deref()))
                .unwrap_or_else(|| "fee".to_owned());
            if name.to_ascii_uppercase().contains("DELIVERY") {
                delivery_fee += amount;
            } else if amount != 0 {
                fees.push(Fee { name, amount });
            }
        }
        match total {
            Some((path, total)) if !f.details.is_empty() && total != sum => p.push(
                path,
                ProblemKind::Mismatch,
                format!("the details add up to {sum}, the total is {total}"),
            ),
            Some((_, total)) if f.details.is_empty() && total != 0 => fees.push(Fee {
                name: "fees".to_owned(),
                amount: total,
            }),
            _ => {}
        }
    }

    let mut discounts = Vec::new();
    if let Some(pr) = &d.promotions {
        let path = format!("{detail}.promotions");
        let total = pr
            .total
            .as_ref()
            .map(|t| r.price(p, &format!("{path}.total"), t).abs());
        let valued =
            !pr.details.is_empty() && pr.details.iter().all(|x| x.discount_value.is_some());
        if valued {
            for (k, x) in pr.details.iter().enumerate() {
                let amount = r
                    .opt_price(
                        p,
                        &format!("{path}.details[{k}].discount_value"),
                        x.discount_value.as_ref(),
                    )
                    .abs();
                discounts.push(Discount {
                    name: text(x.external_promotion_id.as_deref())
                        .or_else(|| text(x.kind.as_deref()))
                        .unwrap_or_else(|| "promotion".to_owned()),
                    amount,
                    funded_by: None,
                });
            }
            let sum: i64 = discounts.iter().map(|x| x.amount).sum();
            if let Some(total) = total.filter(|t| *t != sum) {
                p.push(
                    format!("{path}.total"),
                    ProblemKind::Mismatch,
                    format!("the details add up to {sum}, the total is {total}"),
                );
            }
        } else if let Some(total) = total.filter(|t| *t != 0) {
            let names: Vec<String> = pr
                .details
                .iter()
                .filter_map(|x| {
                    text(x.external_promotion_id.as_deref()).or_else(|| text(x.kind.as_deref()))
                })
                .collect();
            discounts.push(Discount {
                name: if names.is_empty() {
                    "promotions".to_owned()
                } else {
                    names.join(", ")
                },
                amount: total,
                funded_by: None,
            });
        }
    }

    let adjustment = d
        .adjustment
        .as_ref()
        .and_then(|a| a.total.as_ref())
        .map_or(0, |t| r.price(p, &format!("{detail}.adjustment.total"), t));
    match adjustment {
        a if a > 0 => fees.push(Fee {
            name: "adjustment".to_owned(),
            amount: a,
        }),
        a if a < 0 => discounts.push(Discount {
            name: "adjustment".to_owned(),
            amount: -a,
            funded_by: None,
        }),
        _ => {}
    }

    let (tax, total) = match &d.order_total {
        Some(t) => (
            r.tax(p, &format!("{detail}.order_total"), t),
            r.gross(p, &format!("{detail}.order_total"), t),
        ),
        None => {
            p.push(
                format!("{detail}.order_total"),
                ProblemKind::Missing,
                "is required for an order's amounts",
            );
            (0, 0)
        }
    };
    Totals {
        subtotal,
        delivery_fee,
        service_fee: fees.iter().map(|f| f.amount).sum(),
        tax,
        discount: discounts.iter().map(|x| x.amount).sum(),
        tip: d
            .tips
            .as_ref()
            .and_then(|t| t.total.as_ref())
            .map_or(0, |t| r.price(p, &format!("{detail}.tips.total"), t)),
        total,
        tax_inclusive: r.inclusive,
        fees,
        discounts,
    }
}
