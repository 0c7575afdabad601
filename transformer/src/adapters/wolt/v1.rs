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

use canonical::order::{Fee, Item, Order, Payment, PaymentMethod, ProblemKind, Totals};
use serde::Deserialize;

use super::{Amounts, MoneyIn, currency_of};
use crate::adapters::fetched::{line_total, list};
use crate::convert::{ConvertError, Input, Problems, Quantity, quantity, text};

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
    let currency = currency_of(p, "price", &x.price);
    order.currency = currency;
    let m = Amounts::new(currency);

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
    order.payment = Some(Payment {
        method: PaymentMethod::Online,
        paid: true,
        amount_due: 0,
        change_for: None,
    });
    Ok(())
}

/// One item and its options; `path` is the canonical line's.
fn line(m: &Amounts, p: &mut Problems, path: &str, item: &ItemIn) -> Item {
    let modifiers: Vec<Item> = item
        .options
        .iter()
        .enumerate()
        .map(|(j, o)| {
            let at = format!("{path}.modifiers[{j}]");
            let mut modifier = Item {
                provider_item_id: super::option_id(&o.value_pos_id, &o.pos_id, &o.id),
                product_id: None,
                name: super::option_name(o.name.as_deref(), o.value.as_deref()),
                quantity: quantity(p, &format!("{at}.quantity"), o.count),
                unit_price: m.opt(p, &format!("{at}.unit_price"), o.price.as_ref()),
                total: 0,
                notes: None,
                modifiers: Vec::new(),
            };
            modifier.total = line_total(p, &at, &modifier);
            modifier
        })
        .collect();
    let options: i64 = modifiers.iter().map(|o| o.total).sum();
    let unit_price = match (&item.base_price, &item.unit_price) {
        (Some(base), _) => m.of(p, &format!("{path}.unit_price"), base),
        (None, Some(unit)) => m.of(p, &format!("{path}.unit_price"), unit) - options,
        (None, None) => {
            p.push(
                format!("{path}.unit_price"),
                ProblemKind::Missing,
                "the item has neither base_price nor unit_price",
            );
            0
        }
    };
    let mut out = Item {
        provider_item_id: text(item.pos_id.as_deref())
            .or_else(|| text(item.sku.as_deref()))
            .or_else(|| text(item.id.as_deref())),
        product_id: None,
        name: item.name.trim().to_owned(),
        quantity: quantity(p, &format!("{path}.quantity"), item.count),
        unit_price,
        total: 0,
        notes: None,
        modifiers,
    };
    out.total = match &item.total_price {
        Some(t) => m.of(p, &format!("{path}.total"), t),
        None => line_total(p, path, &out),
    };
    out
}
