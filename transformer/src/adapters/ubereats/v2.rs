//! The legacy order, `GET /v2/eats/order/{id}` (Uber's documented example).
//!
//! - Ids: `id` is the order, `display_id` the code the customer and the
//!   courier see. The branch comes from `store.integrator_store_id`, else
//!   `merchant_store_id`, `external_reference_id` (our ids for the store,
//!   set at provisioning), else Uber's `store.id`.
//! - Money: `{amount, currency_code, formatted_amount}`, `amount` in minor
//!   units; every code must be the order's currency (`payment.charges.total`'s).
//! - Lines: `cart.items[]`, modifiers in
//!   `selected_modifier_groups[].selected_items[]` (same shape, nested to
//!   any depth). `external_data` (our POS id) is the item id, else Uber's
//!   `id`. A line's `unit_price` includes its modifiers and
//!   `base_unit_price` does not [GUESS, from the docs example's arithmetic:
//!   1095 + 150 = 1245]: the canonical unit price is `base_unit_price` (else
//!   `unit_price` minus the modifiers), and `total_price` is used as sent and
//!   checked; a modifier's quantity and `total_price` are per one unit of
//!   its parent [GUESS, same example]. `removed_items` become "No <title>"
//!   in the line's notes, beside `special_instructions`.
//! - Charges: `sub_total` is the subtotal, `tax` (plus `total_fee_tax`) the
//!   tax, `bag_fee` a fee and `tip` the tip where sent [CODE]. The docs
//!   example's `total` equals `sub_total` and its `total_fee` is `total +
//!   tax` and equals `cash_amount_due`: `total_fee` is read as what the
//!   customer is charged [GUESS], `total` only when `total_fee` is absent.
//!   The tax counts as added on top (US menus) unless the total adds up
//!   without it. `cash_amount_due` above 0 is a cash order with that much
//!   due; otherwise the order was paid through Uber. Legacy charges name no
//!   discount or delivery fee: an order with one would not add up and is
//!   refused with the mismatch.
//! - Fulfilment by `type`: `DELIVERY_BY_UBER` (Uber's courier),
//!   `DELIVERY_BY_RESTAURANT` (ours, to `eater.delivery.location`, with
//!   `eater.delivery.notes` as instructions [GUESS: the docs were not
//!   retrieved for these]), `PICK_UP`, `DINE_IN`; absent means Uber's
//!   courier. `placed_at`; `estimated_ready_for_pickup_at` is `ready_by`.
//!   This API announces no scheduled orders.
//! - Customer: `eater{first_name, last_name, phone, phone_code}`;
//!   `phone_code` is the code to dial after Uber's relay number.

use canonical::order::{
    Courier, Fee, Fulfilment, FulfilmentType, Item, Order, ProblemKind, Totals,
};
use serde::Deserialize;

use super::{Group, Location, Reported, courier_state, currency, state_of};
use crate::adapters::fetched::{Minor, line_total, list};
use crate::adapters::{cash_if_due, tax_inclusive};
use crate::convert::{
    self, ConvertError, Draft, Input, Problems, Quantity, excerpt, join, quantity, text,
};

/// What every event reads.
#[derive(Deserialize)]
struct Head {
    id: String,
    #[serde(default)]
    display_id: Option<String>,
    #[serde(default)]
    current_state: Option<String>,
    #[serde(default)]
    store: Option<Store>,
    #[serde(default, deserialize_with = "list")]
    deliveries: Vec<Delivery>,
}

#[derive(Deserialize)]
struct Store {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    external_reference_id: Option<String>,
    #[serde(default)]
    integrator_store_id: Option<String>,
    #[serde(default)]
    merchant_store_id: Option<String>,
}

#[derive(Deserialize)]
struct Delivery {
    #[serde(default)]
    current_state: Option<String>,
}

/// The order's content, for created orders and content changes.
#[derive(Deserialize)]
struct Content {
    #[serde(default)]
    placed_at: Option<String>,
    #[serde(default)]
    estimated_ready_for_pickup_at: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    eater: Option<Eater>,
    cart: Cart,
    payment: PaymentIn,
}

#[derive(Deserialize)]
struct Eater {
    #[serde(default)]
    first_name: Option<String>,
    #[serde(default)]
    last_name: Option<String>,
    #[serde(default)]
    phone: Option<String>,
    #[serde(default)]
    phone_code: Option<String>,
    #[serde(default)]
    delivery: Option<EaterDelivery>,
}

#[derive(Deserialize)]
struct EaterDelivery {
    #[serde(default)]
    location: Option<Location>,
    #[serde(default)]
    notes: Option<String>,
}

#[derive(Deserialize)]
struct Cart {
    #[serde(deserialize_with = "list")]
    items: Vec<ItemIn>,
    #[serde(default)]
    special_instructions: Option<String>,
}

#[derive(Deserialize)]
struct ItemIn {
    #[serde(default)]
    id: Option<String>,
    title: String,
    #[serde(default)]
    external_data: Option<String>,
    #[serde(default)]
    quantity: Quantity,
    #[serde(default)]
    price: Option<Price>,
    #[serde(default)]
    special_instructions: Option<String>,
    #[serde(default, deserialize_with = "list")]
    selected_modifier_groups: Vec<Group<ItemIn>>,
}

#[derive(Deserialize)]
struct Price {
    #[serde(default)]
    unit_price: Option<MoneyIn>,
    #[serde(default)]
    total_price: Option<MoneyIn>,
    #[serde(default)]
    base_unit_price: Option<MoneyIn>,
}

#[derive(Deserialize)]
struct MoneyIn {
    amount: i64,
    #[serde(default)]
    currency_code: Option<String>,
}

#[derive(Deserialize)]
struct PaymentIn {
    charges: Charges,
}

#[derive(Deserialize)]
struct Charges {
    #[serde(default)]
    total: Option<MoneyIn>,
    #[serde(default)]
    sub_total: Option<MoneyIn>,
    #[serde(default)]
    tax: Option<MoneyIn>,
    #[serde(default)]
    total_fee: Option<MoneyIn>,
    #[serde(default)]
    total_fee_tax: Option<MoneyIn>,
    #[serde(default)]
    bag_fee: Option<MoneyIn>,
    #[serde(default)]
    tip: Option<MoneyIn>,
    #[serde(default)]
    cash_amount_due: Option<MoneyIn>,
}

/// Amounts of this shape in the order's currency.
struct Amounts(Minor);

impl Amounts {
    fn of(&self, p: &mut Problems, path: &str, m: &MoneyIn) -> i64 {
        self.0.get(p, path, m.amount, m.currency_code.as_deref())
    }

    fn opt(&self, p: &mut Problems, path: &str, m: Option<&MoneyIn>) -> i64 {
        m.map_or(0, |m| self.of(p, path, m))
    }
}

pub(super) fn convert(input: &Input<'_>, p: &mut Problems) -> Result<Draft, ConvertError> {
    let head: Head = input.parse()?;
    let reported = Reported {
        state: text(head.current_state.as_deref()).map(|s| (state_of(&s), s)),
        state_path: "current_state".to_owned(),
        courier: head
            .deliveries
            .first()
            .and_then(|d| text(d.current_state.as_deref()))
            .map(|s| (courier_state(&s), s)),
        reason: None,
    };
    let (mut order, content) =
        super::order(input, p, &head.id, head.display_id.as_deref(), reported)?;
    if content.is_some() {
        let c: Content = input.parse()?;
        fill(input, p, &mut order, &c);
    }
    let mut draft = Draft::new(order);
    if let Some(s) = &head.store {
        draft = draft
            .store(s.integrator_store_id.as_deref())
            .store(s.merchant_store_id.as_deref())
            .store(s.external_reference_id.as_deref())
            .store(s.id.as_deref());
    }
    Ok(draft)
}

fn fill(input: &Input<'_>, p: &mut Problems, order: &mut Order, c: &Content) {
    order.placed_at = match text(c.placed_at.as_deref()) {
        Some(t) => convert::rfc3339(p, "placed_at", &t),
        None => input.received_at,
    };
    let ch = &c.payment.charges;
    let code = [&ch.total, &ch.total_fee, &ch.sub_total]
        .into_iter()
        .flatten()
        .chain(
            c.cart
                .items
                .iter()
                .filter_map(|i| i.price.as_ref()?.unit_price.as_ref()),
        )
        .find_map(|m| text(m.currency_code.as_deref()));
    let currency = currency(p, "payment.charges.total.currency_code", code);
    order.currency = currency;
    let m = Amounts(Minor {
        currency,
        code_field: "currency_code",
    });

    if let Some(e) = &c.eater {
        order.customer.name = join([e.first_name.as_deref(), e.last_name.as_deref()], " ");
        order.customer.phone = text(e.phone.as_deref());
        order.customer.phone_access_code = text(e.phone_code.as_deref());
    }
    order.notes = text(c.cart.special_instructions.as_deref());
    order.fulfilment = Some(fulfilment(p, c));

    order.items = c
        .cart
        .items
        .iter()
        .enumerate()
        .map(|(i, item)| line(&m, p, &format!("items[{i}]"), item))
        .collect();

    let mut fees = Vec::new();
    let bag = m.opt(p, "payment.charges.bag_fee", ch.bag_fee.as_ref());
    if bag != 0 {
        fees.push(Fee {
            name: "bag_fee".to_owned(),
            amount: bag,
        });
    }
    let subtotal = match &ch.sub_total {
        Some(s) => m.of(p, "payment.charges.sub_total", s),
        None => order.items.iter().map(|i| i.total).sum(),
    };
    let total = match (&ch.total_fee, &ch.total) {
        (Some(t), _) => m.of(p, "payment.charges.total_fee", t),
        (None, Some(t)) => m.of(p, "payment.charges.total", t),
        (None, None) => {
            p.push(
                "payment.charges.total",
                ProblemKind::Missing,
                "neither total_fee nor total is set",
            );
            0
        }
    };
    let mut totals = Totals {
        subtotal,
        delivery_fee: 0,
        service_fee: bag,
        tax: m.opt(p, "payment.charges.tax", ch.tax.as_ref())
            + m.opt(
                p,
                "payment.charges.total_fee_tax",
                ch.total_fee_tax.as_ref(),
            ),
        discount: 0,
        tip: m.opt(p, "payment.charges.tip", ch.tip.as_ref()),
        total,
        tax_inclusive: false,
        fees,
        discounts: Vec::new(),
    };
    totals.tax_inclusive = tax_inclusive(&totals, false);
    order.totals = Some(totals);

    let due = m.opt(
        p,
        "payment.charges.cash_amount_due",
        ch.cash_amount_due.as_ref(),
    );
    order.payment = Some(cash_if_due(due));
}

fn fulfilment(p: &mut Problems, c: &Content) -> Fulfilment {
    let ready_by = text(c.estimated_ready_for_pickup_at.as_deref())
        .and_then(|t| convert::rfc3339(p, "estimated_ready_for_pickup_at", &t));
    let (kind, delivered_by) = match c.kind.as_deref().map(|k| k.trim().to_ascii_uppercase()) {
        None => (FulfilmentType::Delivery, Some(Courier::Platform)),
        Some(k) => match k.as_str() {
            "DELIVERY_BY_UBER" => (FulfilmentType::Delivery, Some(Courier::Platform)),
            "DELIVERY_BY_RESTAURANT" => (FulfilmentType::Delivery, Some(Courier::Restaurant)),
            "PICK_UP" | "PICKUP" => (FulfilmentType::Pickup, None),
            "DINE_IN" => (FulfilmentType::DineIn, None),
            _ => {
                p.push(
                    "type",
                    ProblemKind::OutOfRange,
                    format!("unknown fulfilment type {:?}", excerpt(&k)),
                );
                (FulfilmentType::Delivery, None)
            }
        },
    };
    let d = c
        .eater
        .as_ref()
        .and_then(|e| e.delivery.as_ref())
        .filter(|_| kind == FulfilmentType::Delivery);
    Fulfilment {
        kind,
        delivered_by,
        address: d.and_then(|d| d.location.as_ref()?.address()),
        instructions: d.and_then(|d| text(d.notes.as_deref())),
        ready_by,
        table: None,
    }
}

/// One line and its modifiers; `path` is the canonical line's.
fn line(m: &Amounts, p: &mut Problems, path: &str, item: &ItemIn) -> Item {
    let mut modifiers = Vec::new();
    let mut removed = Vec::new();
    for g in &item.selected_modifier_groups {
        for s in &g.selected_items {
            let at = format!("{path}.modifiers[{}]", modifiers.len());
            modifiers.push(line(m, p, &at, s));
        }
        removed.extend(g.removed());
    }
    let quantity = quantity(p, &format!("{path}.quantity"), item.quantity);
    let price = item.price.as_ref();
    let with_modifiers = |p: &mut Problems, u: &MoneyIn| {
        m.of(p, &format!("{path}.unit_price"), u) - modifiers.iter().map(|x| x.total).sum::<i64>()
    };
    let unit_price = match price.map(|pr| (&pr.base_unit_price, &pr.unit_price)) {
        Some((Some(base), _)) => m.of(p, &format!("{path}.unit_price"), base),
        Some((None, Some(unit))) => with_modifiers(p, unit),
        _ => {
            p.push(
                format!("{path}.unit_price"),
                ProblemKind::Missing,
                "the line has neither price.base_unit_price nor price.unit_price",
            );
            0
        }
    };
    let mut out = Item {
        provider_item_id: text(item.external_data.as_deref()).or_else(|| text(item.id.as_deref())),
        product_id: None,
        name: item.title.trim().to_owned(),
        quantity,
        unit_price,
        total: 0,
        notes: join(
            std::iter::once(item.special_instructions.as_deref())
                .chain(removed.iter().map(|r| Some(r.as_str()))),
            "; ",
        ),
        modifiers,
    };
    out.total = match price.and_then(|pr| pr.total_price.as_ref()) {
        Some(t) => m.of(p, &format!("{path}.total"), t),
        None => line_total(p, path, &out),
    };
    out
}

#[cfg(test)]
mod tests {
    use canonical::order::OrderState;

    use super::*;

    #[test]
    fn state_words_map_to_canonical_states() {
        assert_eq!(state_of("CREATED"), OrderState::Placed);
        assert_eq!(state_of("canceled"), OrderState::Cancelled);
        assert_eq!(state_of("DENIED"), OrderState::Rejected);
        assert_eq!(state_of("FINISHED"), OrderState::Delivered);
        assert_eq!(state_of("SOMETHING_NEW"), OrderState::Other);
    }
}
