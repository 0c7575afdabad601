//! Wolt's v1 order, `GET /orders/{id}`: its lines and amounts (what both
//! versions share is read in the parent module).
//!
//! - Lines: `items[]{id, name, count, pos_id, sku, base_price, unit_price,
//!   total_price, options[]}`. Our POS id is `pos_id`, else `sku`, else
//!   Wolt's `id`. Following the public clients' arithmetic, `unit_price` is
//!   `base_price` plus each option's `price × count`, and `total_price` is
//!   `unit_price × count` [CODE]: the canonical unit price is `base_price`
//!   (else `unit_price` minus the options) and `total_price` is used as sent
//!   and checked.
//! - Options: `{id, name, value, price, pos_id, count, value_pos_id}` are
//!   modifiers named `<name>: <value>` (the group and the choice), with
//!   `value_pos_id` (else `pos_id`, `id`) as their id, `price` for one and
//!   `count` per one unit of the item.
//! - Amounts: `price` is the total (currency: `price.currency`),
//!   `delivery.fee` the delivery fee, `delivery.small_order_surcharge` a
//!   fee; the subtotal is the lines' sum. v1 carries no discount and no
//!   payment method: the order was paid through Wolt.

use canonical::order::{Fee, Item, Order, Totals};
use serde::Deserialize;

use super::{Amounts, Choice, Line, MoneyIn};
use crate::adapters::fetched::list;
use crate::adapters::paid_online;
use crate::convert::{ConvertError, Input, Problems, Quantity};

#[derive(Deserialize)]
struct Prices {
    price: MoneyIn,
    #[serde(default)]
    delivery: Option<DeliveryPrices>,
    #[serde(deserialize_with = "list")]
    items: Vec<ItemIn>,
}

#[derive(Deserialize)]
struct DeliveryPrices {
    #[serde(default)]
    fee: Option<MoneyIn>,
    #[serde(default)]
    small_order_surcharge: Option<MoneyIn>,
}

#[derive(Deserialize)]
struct ItemIn {
    #[serde(default)]
    id: Option<String>,
    name: String,
    #[serde(default)]
    count: Quantity,
    #[serde(default)]
    pos_id: Option<String>,
    #[serde(default)]
    sku: Option<String>,
    #[serde(default)]
    base_price: Option<MoneyIn>,
    #[serde(default)]
    unit_price: Option<MoneyIn>,
    #[serde(default)]
    total_price: Option<MoneyIn>,
    #[serde(default, deserialize_with = "list")]
    options: Vec<OptionIn>,
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
    price: Option<MoneyIn>,
    #[serde(default)]
    pos_id: Option<String>,
    #[serde(default)]
    value_pos_id: Option<String>,
    #[serde(default)]
    count: Quantity,
}

pub(super) fn fill(
    input: &Input<'_>,
    p: &mut Problems,
    order: &mut Order,
) -> Result<(), ConvertError> {
    let x: Prices = input.parse()?;
    let m = Amounts::of_order(p, order, "price", &x.price);

    order.items = x
        .items
        .iter()
        .enumerate()
        .map(|(i, item)| line(&m, p, &format!("items[{i}]"), item))
        .collect();

    let d = x.delivery.as_ref();
    let surcharge = m.opt(
        p,
        "delivery.small_order_surcharge",
        d.and_then(|d| d.small_order_surcharge.as_ref()),
    );
    let fees: Vec<Fee> = (surcharge != 0)
        .then(|| Fee {
            name: "small_order_surcharge".to_owned(),
            amount: surcharge,
        })
        .into_iter()
        .collect();
    order.totals = Some(Totals {
        subtotal: order.items.iter().map(|i| i.total).sum(),
        delivery_fee: m.opt(p, "delivery.fee", d.and_then(|d| d.fee.as_ref())),
        service_fee: surcharge,
        tax: 0,
        discount: 0,
        tip: 0,
        total: m.of(p, "price", &x.price),
        tax_inclusive: true,
        fees,
        discounts: Vec::new(),
    });
    order.payment = Some(paid_online());
    Ok(())
}

/// One item and its options; `path` is the canonical line's.
fn line(m: &Amounts, p: &mut Problems, path: &str, item: &ItemIn) -> Item {
    let modifiers: Vec<Item> = item
        .options
        .iter()
        .enumerate()
        .map(|(j, o)| {
            let choice = Choice {
                id: o.id.as_deref(),
                pos_id: o.pos_id.as_deref(),
                value_pos_id: o.value_pos_id.as_deref(),
                name: o.name.as_deref(),
                value: o.value.as_deref(),
                count: o.count,
                price: o.price.as_ref(),
            };
            choice.item(m, p, &format!("{path}.modifiers[{j}]"), |_| Vec::new())
        })
        .collect();
    let unit = match (&item.base_price, &item.unit_price) {
        (Some(base), _) => Ok((base, false)),
        (None, Some(unit)) => Ok((unit, true)),
        (None, None) => Err("the item has neither base_price nor unit_price"),
    };
    let line = Line {
        id: item.id.as_deref(),
        pos_id: item.pos_id.as_deref(),
        sku: item.sku.as_deref(),
        name: &item.name,
        count: item.count,
        unit,
        total: item.total_price.as_ref(),
    };
    line.item(m, p, path, modifiers)
}
