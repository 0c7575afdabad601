//! Wolt's v2 order, `GET /v2/orders/{id}`: its lines and amounts (what both
//! versions share is read in the parent module). Wolt's example of this
//! shape was not available; this follows the field descriptions, and the
//! readings marked [GUESS] are assumptions to verify against a real answer.
//! Wolt says new fields and enum values appear without notice: unknown ones
//! are ignored.
//!
//! - Lines: `items[]{id, name, count, pos_id, sku, item_price{unit_price,
//!   total}, options[]}`. As in v1, `item_price.unit_price` is one unit
//!   with its options and `item_price.total` is `unit_price × count`, before
//!   discounts [GUESS]: the canonical unit price is `unit_price` minus the
//!   options, and `total` is used as sent and checked.
//! - Options: `{id, name, value, pos_id, value_pos_id, count,
//!   price_breakdown{unit_price}}` (else v1's `price`), named `<name>:
//!   <value>`; `count` is per one unit of the item. An option's own
//!   `options[]` are its sub-options, nested the same way [GUESS].
//! - `basket_price{total, price_breakdown{total_before_discounts,
//!   total_discounts}}`: the subtotal is `total_before_discounts` (else
//!   `total`) and must be the lines' sum; `total_discounts` (its size) is
//!   the discount, and the subtotal less it must be `total`.
//! - `fees{total, parts[{type, total}]}`: a part whose `type` names
//!   delivery is the delivery fee, the others (service fee, small-order
//!   surcharge, ...) fees by their `type`; the parts must add up to
//!   `total`, which is one fee when there are no parts.
//! - The total is `basket_price.total` plus the fees: no total of the whole
//!   order is described [GUESS].
//! - `cash_payment`: null when paid through Wolt; otherwise a cash order
//!   with `cash_payment.amount_to_collect` due [GUESS: the field's name],
//!   else the whole total.

use canonical::order::{Discount, Fee, Item, Order, ProblemKind, Totals};
use serde::Deserialize;

use super::{Amounts, Choice, Line, MoneyIn};
use crate::adapters::fetched::list;
use crate::adapters::{cash, paid_online};
use crate::convert::{ConvertError, Input, Problems, Quantity, text};

#[derive(Deserialize)]
struct Prices {
    basket_price: Basket,
    #[serde(default)]
    fees: Option<Fees>,
    #[serde(deserialize_with = "list")]
    items: Vec<ItemIn>,
    #[serde(default)]
    cash_payment: Option<Cash>,
}

#[derive(Deserialize)]
struct Basket {
    total: MoneyIn,
    #[serde(default)]
    price_breakdown: Option<BasketBreakdown>,
}

#[derive(Deserialize)]
struct BasketBreakdown {
    #[serde(default)]
    total_before_discounts: Option<MoneyIn>,
    #[serde(default)]
    total_discounts: Option<MoneyIn>,
}

#[derive(Deserialize)]
struct Fees {
    #[serde(default)]
    total: Option<MoneyIn>,
    #[serde(default, deserialize_with = "list")]
    parts: Vec<FeePart>,
}

#[derive(Deserialize)]
struct FeePart {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    total: MoneyIn,
}

#[derive(Deserialize)]
struct ItemIn {
    #[serde(default)]
    id: Option<String>,
    name: String,
    #[serde(default, alias = "quantity")]
    count: Quantity,
    #[serde(default)]
    pos_id: Option<String>,
    #[serde(default)]
    sku: Option<String>,
    #[serde(default)]
    item_price: Option<ItemPrice>,
    #[serde(default, deserialize_with = "list")]
    options: Vec<OptionIn>,
}

#[derive(Deserialize)]
struct ItemPrice {
    #[serde(default)]
    unit_price: Option<MoneyIn>,
    #[serde(default)]
    total: Option<MoneyIn>,
}

#[derive(Deserialize)]
struct OptionIn {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    pos_id: Option<String>,
    #[serde(default)]
    value_pos_id: Option<String>,
    #[serde(default, alias = "quantity")]
    count: Quantity,
    #[serde(default)]
    price_breakdown: Option<OptionPrice>,
    #[serde(default)]
    price: Option<MoneyIn>,
    #[serde(default, deserialize_with = "list")]
    options: Vec<OptionIn>,
}

#[derive(Deserialize)]
struct OptionPrice {
    #[serde(default)]
    unit_price: Option<MoneyIn>,
}

#[derive(Deserialize)]
struct Cash {
    #[serde(default)]
    amount_to_collect: Option<MoneyIn>,
}

pub(super) fn fill(
    input: &Input<'_>,
    p: &mut Problems,
    order: &mut Order,
) -> Result<(), ConvertError> {
    let x: Prices = input.parse()?;
    let m = Amounts::of_order(p, order, "basket_price.total", &x.basket_price.total);

    order.items = x
        .items
        .iter()
        .enumerate()
        .map(|(i, item)| line(&m, p, &format!("items[{i}]"), item))
        .collect();

    let basket = m.of(p, "basket_price.total", &x.basket_price.total);
    let breakdown = x.basket_price.price_breakdown.as_ref();
    let before = breakdown.and_then(|b| b.total_before_discounts.as_ref());
    let subtotal = match before {
        Some(b) => m.of(p, "basket_price.price_breakdown.total_before_discounts", b),
        None => basket,
    };
    let discount = m
        .opt(
            p,
            "basket_price.price_breakdown.total_discounts",
            breakdown.and_then(|b| b.total_discounts.as_ref()),
        )
        .abs();
    if subtotal - discount != basket {
        p.push(
            "basket_price.total",
            ProblemKind::Mismatch,
            format!(
                "expected {} = total_before_discounts {subtotal} - total_discounts {discount}, got {basket}",
                subtotal - discount
            ),
        );
    }
    let discounts = if discount == 0 {
        Vec::new()
    } else {
        vec![Discount {
            name: "total_discounts".to_owned(),
            amount: discount,
            funded_by: None,
        }]
    };

    let mut delivery_fee = 0;
    let mut fees = Vec::new();
    let mut fee_total = 0;
    if let Some(f) = &x.fees {
        for (k, part) in f.parts.iter().enumerate() {
            let amount = m.of(p, &format!("fees.parts[{k}].total"), &part.total);
            fee_total += amount;
            let name = text(part.kind.as_deref()).unwrap_or_else(|| "fee".to_owned());
            if name.to_ascii_uppercase().contains("DELIVERY") {
                delivery_fee += amount;
            } else if amount != 0 {
                fees.push(Fee { name, amount });
            }
        }
        if let Some(t) = &f.total {
            let total = m.of(p, "fees.total", t);
            if f.parts.is_empty() {
                fee_total = total;
                if total != 0 {
                    fees.push(Fee {
                        name: "fees".to_owned(),
                        amount: total,
                    });
                }
            } else if total != fee_total {
                p.push(
                    "fees.total",
                    ProblemKind::Mismatch,
                    format!("the parts add up to {fee_total}, the total is {total}"),
                );
            }
        }
    }

    let total = basket + fee_total;
    order.totals = Some(Totals {
        subtotal,
        delivery_fee,
        service_fee: fees.iter().map(|f| f.amount).sum(),
        tax: 0,
        discount,
        tip: 0,
        total,
        tax_inclusive: true,
        fees,
        discounts,
    });
    order.payment = Some(match &x.cash_payment {
        None => paid_online(),
        Some(c) => cash(match &c.amount_to_collect {
            Some(a) => m.of(p, "cash_payment.amount_to_collect", a),
            None => total,
        }),
    });
    Ok(())
}

/// One option and its sub-options, totals filled.
fn option(m: &Amounts, p: &mut Problems, path: &str, o: &OptionIn) -> Item {
    let choice = Choice {
        id: o.id.as_deref(),
        pos_id: o.pos_id.as_deref(),
        value_pos_id: o.value_pos_id.as_deref(),
        name: o.name.as_deref(),
        value: o.value.as_deref(),
        count: o.count,
        price: o
            .price_breakdown
            .as_ref()
            .and_then(|b| b.unit_price.as_ref())
            .or(o.price.as_ref()),
    };
    choice.item(m, p, path, |p| {
        o.options
            .iter()
            .enumerate()
            .map(|(j, sub)| option(m, p, &format!("{path}.modifiers[{j}]"), sub))
            .collect()
    })
}

/// One item and its options; `path` is the canonical line's.
fn line(m: &Amounts, p: &mut Problems, path: &str, item: &ItemIn) -> Item {
    let modifiers: Vec<Item> = item
        .options
        .iter()
        .enumerate()
        .map(|(j, o)| option(m, p, &format!("{path}.modifiers[{j}]"), o))
        .collect();
    let price = item.item_price.as_ref();
    let line = Line {
        id: item.id.as_deref(),
        pos_id: item.pos_id.as_deref(),
        sku: item.sku.as_deref(),
        name: &item.name,
        count: item.count,
        unit: price
            .and_then(|x| x.unit_price.as_ref())
            .map(|u| (u, true))
            .ok_or("the item has no item_price.unit_price"),
        total: price.and_then(|x| x.total.as_ref()),
    };
    line.item(m, p, path, modifiers)
}
