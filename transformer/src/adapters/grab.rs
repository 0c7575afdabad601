//! GrabFood: Submit Order and Push Order State, told apart by their body
//! (an order has `items`; a state push has `state` and none).
//!
//! - Submit Order [SDK] → `created`.
//! - Push Order State `{merchantID, partnerMerchantID, orderID, state,
//!   driverETA, code, message}` [SDK] → `CANCELLED` and `FAILED` are
//!   `cancelled` (reason: `message`, else `code`); `ACCEPTED`,
//!   `DRIVER_ALLOCATED` (`courier_assigned`), `DRIVER_ARRIVED`
//!   (`courier_arrived`), `COLLECTED` (`picked_up`), `DELIVERED` and states
//!   added later (`other`) are `updated`.
//!
//! Money: integer minor units with `currency{code, symbol, exponent}`
//! [SDK]: exponent 0 for VND, 2 for SGD/MYR/... The exponent must be the ISO
//! currency's own; a mismatch is a problem, never a silent rescale. Prices
//! are tax-inclusive [SDK]: an item's `price` is ONE unit INCLUDING its
//! modifiers and tax, so the canonical `unit_price` is `price − Σ modifier
//! price × quantity`; a modifier's `price` is one of it, its `quantity`
//! (always 1 [SDK]) per unit of the item. `subtotal` = Σ `price ×
//! quantity` (the order check proves it). Fees: `merchantChargeFee`,
//! `serviceChargeFee`, `smallOrderFee`; `deliveryFee` the delivery fee
//! (filled only for cash or restaurant-delivered orders [SDK]). Discounts by
//! funder: `merchantFundPromo` (the restaurant), `grabFundPromo` (Grab).
//! The total is what the customer pays: subtotal + delivery + fees −
//! discounts. Two of Grab's own figures are checked where sent:
//! `eaterPayment` (non-zero only for cash or restaurant-delivered orders)
//! = subtotal + `merchantChargeFee` + `deliveryFee` − promos, and `total`
//! (the merchant's amount) = subtotal + `merchantChargeFee` −
//! `merchantFundPromo` [SDK]. Both formulas are [SDK] text with one worked
//! example and no fee in it: where `serviceChargeFee` and `smallOrderFee`
//! sit in them is unknown ([GUESS]: in neither). So a disagreement never
//! refuses the order (a real cash order with a service charge would be
//! dead-lettered): it is logged at warn level with the field, Grab's
//! figure and the one computed (`grab figure disagrees`; the transformer's
//! metrics are not reachable from an adapter, so it is not counted), and
//! the order is converted by the canonical rules. `tax` is the tax inside
//! the total (`tax_inclusive`).
//!
//! Grab sends no item or modifier names [SDK]: a line is named by its
//! partner id (`id`, the menu's externalID), else Grab's `grabItemID`, for
//! the backend to look up (a `name`, should Grab add one, wins). The
//! partner id is `provider_item_id`, else `grabItemID`. `specifications` is
//! the line's note.
//!
//! Fulfilment (`featureFlags.orderType`): `DeliveredByGrab` → delivery by
//! Grab's driver; `DeliveredByRestaurant` → by the restaurant, to
//! `receiver.address` (sent for restaurant delivery [SDK]; sent anyway, it
//! is kept); `TakeAway`, `TakeAwayOrder`, `PosDineOutOrder` →
//! pickup; `DineIn`, `ScanToOrder` → dine-in at `dineIn.tableID`; another
//! value is a problem. `orderTime` is `placed_at`, a non-empty
//! `scheduledTime` is `scheduled_for`, `orderReadyEstimation`'s
//! `newOrderReadyTime` (else `estimatedOrderReadyTime`) is `ready_by`.
//! `paymentType` `CASH` is cash with the total due; `CASHLESS` was paid
//! through Grab. `shortOrderNumber` (unique per merchant per day) is the
//! display code.
//!
//! The branch is `partnerMerchantID` (our id for the store), else
//! `merchantID`; the store id Grab's calls name is `merchantID`.

use canonical::money::Currency;
use canonical::order::{
    Address, Courier, Event, Fulfilment, FulfilmentType, Funder, Item, OrderState, Payment,
    PaymentMethod, ProblemKind, Status, Totals,
};
use serde::Deserialize;
use serde::de::IgnoredAny;

use super::{Adapter, Coord, coords, discount, event_of, fee, nullable, paid_online};
use crate::convert::{
    self, AnswerHints, ConvertError, Draft, Input, Problems, Quantity, excerpt, quantity, text,
};

pub struct Grab;

#[derive(Deserialize)]
struct Probe {
    #[serde(default)]
    items: Option<IgnoredAny>,
    #[serde(default)]
    state: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OrderIn {
    #[serde(rename = "orderID")]
    order_id: String,
    #[serde(default)]
    short_order_number: Option<String>,
    #[serde(default, rename = "merchantID")]
    merchant_id: Option<String>,
    #[serde(default, rename = "partnerMerchantID")]
    partner_merchant_id: Option<String>,
    #[serde(default)]
    payment_type: Option<String>,
    #[serde(default)]
    cutlery: Option<bool>,
    #[serde(default)]
    order_time: Option<String>,
    #[serde(default)]
    scheduled_time: Option<String>,
    currency: CurrencyIn,
    #[serde(default)]
    feature_flags: Option<FlagsIn>,
    items: Vec<ItemIn>,
    price: PriceIn,
    #[serde(default)]
    dine_in: Option<DineInIn>,
    #[serde(default)]
    receiver: Option<ReceiverIn>,
    #[serde(default)]
    order_ready_estimation: Option<ReadyIn>,
}

#[derive(Deserialize)]
struct CurrencyIn {
    code: String,
    exponent: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FlagsIn {
    #[serde(default)]
    order_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ItemIn {
    #[serde(default)]
    id: Option<String>,
    #[serde(default, rename = "grabItemID")]
    grab_item_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    quantity: Quantity,
    price: i64,
    #[serde(default)]
    specifications: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    modifiers: Vec<ModifierIn>,
}

#[derive(Deserialize)]
struct ModifierIn {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    price: i64,
    #[serde(default)]
    quantity: Quantity,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PriceIn {
    subtotal: i64,
    #[serde(default)]
    tax: Option<i64>,
    #[serde(default)]
    merchant_charge_fee: Option<i64>,
    #[serde(default)]
    service_charge_fee: Option<i64>,
    #[serde(default)]
    grab_fund_promo: Option<i64>,
    #[serde(default)]
    merchant_fund_promo: Option<i64>,
    #[serde(default)]
    delivery_fee: Option<i64>,
    #[serde(default)]
    small_order_fee: Option<i64>,
    #[serde(default)]
    eater_payment: Option<i64>,
    #[serde(default)]
    total: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DineInIn {
    #[serde(default, rename = "tableID")]
    table_id: Option<String>,
}

#[derive(Deserialize)]
struct ReceiverIn {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    phones: Option<String>,
    #[serde(default)]
    address: Option<AddressIn>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AddressIn {
    #[serde(default)]
    unit_number: Option<String>,
    #[serde(default)]
    delivery_instruction: Option<String>,
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    postcode: Option<String>,
    #[serde(default)]
    coordinates: Option<CoordinatesIn>,
}

#[derive(Deserialize)]
struct CoordinatesIn {
    #[serde(default)]
    latitude: Option<Coord>,
    #[serde(default)]
    longitude: Option<Coord>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReadyIn {
    #[serde(default)]
    estimated_order_ready_time: Option<String>,
    #[serde(default)]
    new_order_ready_time: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StateIn {
    #[serde(default, rename = "merchantID")]
    merchant_id: Option<String>,
    #[serde(default, rename = "partnerMerchantID")]
    partner_merchant_id: Option<String>,
    #[serde(rename = "orderID")]
    order_id: String,
    state: String,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// The ISO currency of `currency.code`; a problem when `currency.exponent`
/// is not its own (the amounts would be read at the wrong scale: the order
/// is refused, nothing is rescaled).
fn currency_of(p: &mut Problems, c: &CurrencyIn) -> Option<Currency> {
    // Reported at `currency`: the order check would repeat it there.
    let currency = convert::currency(p, "currency", &c.code)?;
    if c.exponent != i64::from(currency.exponent()) {
        p.push(
            "currency.exponent",
            ProblemKind::Inconsistent,
            format!(
                "{} does not match {currency}, which has {} decimals",
                c.exponent,
                currency.exponent()
            ),
        );
    }
    Some(currency)
}

fn line(p: &mut Problems, path: &str, item: &ItemIn) -> Item {
    let modifiers: Vec<Item> = item
        .modifiers
        .iter()
        .enumerate()
        .map(|(j, m)| {
            let at = format!("{path}.modifiers[{j}]");
            let id = text(m.id.as_deref());
            Item {
                name: text(m.name.as_deref())
                    .or_else(|| id.clone())
                    .unwrap_or_else(|| "modifier".to_owned()),
                provider_item_id: id,
                product_id: None,
                quantity: quantity(p, &format!("{at}.quantity"), m.quantity),
                unit_price: m.price,
                total: 0,
                notes: None,
                modifiers: Vec::new(),
            }
        })
        .collect();
    // `price` holds the modifiers: what is left is the item's own price.
    let with_modifiers: i128 = modifiers
        .iter()
        .map(|m| i128::from(m.unit_price) * i128::from(m.quantity))
        .sum();
    let unit_price = match i64::try_from(i128::from(item.price) - with_modifiers) {
        Ok(u) if u >= 0 => u,
        _ => {
            p.push(
                format!("{path}.unit_price"),
                ProblemKind::Inconsistent,
                format!(
                    "price {} (one unit with its modifiers) is below its modifiers' {with_modifiers}",
                    item.price
                ),
            );
            0
        }
    };
    let id = text(item.id.as_deref()).or_else(|| text(item.grab_item_id.as_deref()));
    Item {
        name: text(item.name.as_deref())
            .or_else(|| id.clone())
            .unwrap_or_else(|| "item".to_owned()),
        provider_item_id: id,
        product_id: None,
        quantity: quantity(p, &format!("{path}.quantity"), item.quantity),
        unit_price,
        total: 0,
        notes: text(item.specifications.as_deref()),
        modifiers,
    }
}

fn fulfilment(p: &mut Problems, o: &OrderIn) -> Fulfilment {
    let ready_by = o.order_ready_estimation.as_ref().and_then(|r| {
        [
            (
                "orderReadyEstimation.newOrderReadyTime",
                &r.new_order_ready_time,
            ),
            (
                "orderReadyEstimation.estimatedOrderReadyTime",
                &r.estimated_order_ready_time,
            ),
        ]
        .into_iter()
        .find_map(|(path, t)| text(t.as_deref()).map(|t| (path, t)))
        .and_then(|(path, t)| convert::rfc3339(p, path, &t))
    });
    let kind = o
        .feature_flags
        .as_ref()
        .and_then(|f| text(f.order_type.as_deref()));
    let (kind, delivered_by) = match kind.as_deref() {
        Some("DeliveredByGrab") => (FulfilmentType::Delivery, Some(Courier::Platform)),
        Some("DeliveredByRestaurant") => (FulfilmentType::Delivery, Some(Courier::Restaurant)),
        Some("TakeAway" | "TakeAwayOrder" | "PosDineOutOrder") => (FulfilmentType::Pickup, None),
        Some("DineIn" | "ScanToOrder") => (FulfilmentType::DineIn, None),
        other => {
            p.push(
                "featureFlags.orderType",
                ProblemKind::OutOfRange,
                match other {
                    Some(o) => format!("unknown order type {:?}", excerpt(o)),
                    None => "is required to tell delivery from pickup".to_owned(),
                },
            );
            (FulfilmentType::Delivery, None)
        }
    };
    let a = o
        .receiver
        .as_ref()
        .and_then(|r| r.address.as_ref())
        .filter(|_| kind == FulfilmentType::Delivery);
    let address = a.and_then(|a| {
        let street = text(a.address.as_deref());
        let unit = text(a.unit_number.as_deref())
            .filter(|u| !street.as_deref().is_some_and(|s| s.contains(u.as_str())));
        let lines: Vec<String> = [unit, street].into_iter().flatten().collect();
        let (lat, lng) = a
            .coordinates
            .as_ref()
            .map_or((None, None), |c| coords(c.latitude, c.longitude));
        (!lines.is_empty()).then_some(Address {
            lines,
            city: None,
            area: None,
            postcode: text(a.postcode.as_deref()),
            lat,
            lng,
        })
    });
    Fulfilment {
        kind,
        delivered_by,
        address,
        instructions: a.and_then(|a| text(a.delivery_instruction.as_deref())),
        ready_by,
        table: o
            .dine_in
            .as_ref()
            .and_then(|d| text(d.table_id.as_deref()))
            .filter(|_| kind == FulfilmentType::DineIn),
    }
}

fn totals(p: &mut Problems, pr: &PriceIn) -> Totals {
    let opt = |v: Option<i64>| v.unwrap_or(0);
    let fees: Vec<_> = [
        fee("merchantChargeFee", opt(pr.merchant_charge_fee)),
        fee("serviceChargeFee", opt(pr.service_charge_fee)),
        fee("smallOrderFee", opt(pr.small_order_fee)),
    ]
    .into_iter()
    .flatten()
    .collect();
    let discounts: Vec<_> = [
        discount(
            "merchantFundPromo",
            opt(pr.merchant_fund_promo),
            Some(Funder::Merchant),
        ),
        discount(
            "grabFundPromo",
            opt(pr.grab_fund_promo),
            Some(Funder::Platform),
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut totals = Totals {
        subtotal: pr.subtotal,
        delivery_fee: opt(pr.delivery_fee),
        service_fee: fees.iter().map(|f| f.amount).sum(),
        tax: opt(pr.tax),
        discount: discounts.iter().map(|d| d.amount).sum(),
        tip: 0,
        total: 0,
        tax_inclusive: true,
        fees,
        discounts,
    };
    totals.total = super::computed_total(p, "totals.total", &totals);
    // Grab's own figures, checked and never refused (the header says why).
    let promos = i128::from(opt(pr.merchant_fund_promo)) + i128::from(opt(pr.grab_fund_promo));
    let eater = i128::from(pr.subtotal)
        + i128::from(opt(pr.merchant_charge_fee))
        + i128::from(opt(pr.delivery_fee))
        - promos;
    if let Some(got) = pr.eater_payment.filter(|&e| e != 0) {
        disagrees(
            "price.eaterPayment",
            "subtotal + merchantChargeFee + deliveryFee - promos",
            eater,
            got,
            &totals,
        );
    }
    let merchant = i128::from(pr.subtotal) + i128::from(opt(pr.merchant_charge_fee))
        - i128::from(opt(pr.merchant_fund_promo));
    if let Some(got) = pr.total {
        disagrees(
            "price.total",
            "subtotal + merchantChargeFee - merchantFundPromo",
            merchant,
            got,
            &totals,
        );
    }
    totals
}

/// Logs Grab's figure `got` of `field` when it is not `expected` (by
/// `formula`), with the order's own total beside it; the order is kept.
fn disagrees(field: &str, formula: &str, expected: i128, got: i64, totals: &Totals) {
    if expected != i128::from(got) {
        tracing::warn!(
            provider = "grab",
            field,
            formula,
            expected = %expected,
            got,
            order_total = totals.total,
            service_charge_fee = totals.fees.iter().find(|f| f.name == "serviceChargeFee").map_or(0, |f| f.amount),
            small_order_fee = totals.fees.iter().find(|f| f.name == "smallOrderFee").map_or(0, |f| f.amount),
            "grab figure disagrees with the order's; order kept"
        );
    }
}

fn created(input: &Input<'_>, p: &mut Problems) -> Result<Draft, ConvertError> {
    let o: OrderIn = input.parse()?;
    let mut order = input.order(Event::Created, o.order_id.trim());
    order.display_code = text(o.short_order_number.as_deref());
    order.placed_at = match text(o.order_time.as_deref()) {
        Some(t) => convert::rfc3339(p, "orderTime", &t),
        None => input.received_at,
    };
    order.scheduled_for =
        text(o.scheduled_time.as_deref()).and_then(|t| convert::rfc3339(p, "scheduledTime", &t));
    order.currency = currency_of(p, &o.currency);
    order.cutlery = o.cutlery;
    if let Some(r) = &o.receiver {
        order.customer.name = text(r.name.as_deref());
        order.customer.phone = text(r.phones.as_deref());
    }
    order.fulfilment = Some(fulfilment(p, &o));
    order.items = o
        .items
        .iter()
        .enumerate()
        .map(|(i, item)| line(p, &format!("items[{i}]"), item))
        .collect();
    convert::fill_totals(p, &mut order.items);
    let totals = totals(p, &o.price);
    let cash = o
        .payment_type
        .as_deref()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("CASH"));
    order.payment = Some(if cash {
        Payment {
            method: PaymentMethod::Cash,
            paid: false,
            amount_due: totals.total,
            change_for: None,
        }
    } else {
        paid_online()
    });
    order.totals = Some(totals);

    let grab_store = text(o.merchant_id.as_deref());
    let mut draft = Draft::new(order)
        .store(o.partner_merchant_id.as_deref())
        .store(grab_store.as_deref());
    draft.answer = AnswerHints {
        store_id: grab_store,
        ..AnswerHints::default()
    };
    Ok(draft)
}

fn state_of(state: &str) -> OrderState {
    match state.trim().to_ascii_uppercase().as_str() {
        "ACCEPTED" => OrderState::Accepted,
        "DRIVER_ALLOCATED" => OrderState::CourierAssigned,
        "DRIVER_ARRIVED" => OrderState::CourierArrived,
        "COLLECTED" => OrderState::PickedUp,
        "DELIVERED" => OrderState::Delivered,
        "FAILED" | "CANCELLED" | "CANCELED" => OrderState::Cancelled,
        _ => OrderState::Other,
    }
}

fn state_push(input: &Input<'_>, p: &mut Problems) -> Result<Draft, ConvertError> {
    let s: StateIn = input.parse()?;
    let id = s.order_id.trim().to_owned();
    if id.is_empty() {
        p.push(
            "provider_order_id",
            ProblemKind::Missing,
            "orderID, grab's order id, is blank",
        );
    }
    let state = state_of(&s.state);
    let mut order = input.order(event_of(state), id);
    order.status = Some(Status {
        state,
        provider_status: text(Some(&s.state)),
        reason: text(s.message.as_deref()).or_else(|| text(s.code.as_deref())),
        at: None,
    });
    let grab_store = text(s.merchant_id.as_deref());
    let mut draft = Draft::new(order)
        .store(s.partner_merchant_id.as_deref())
        .store(grab_store.as_deref());
    draft.answer.store_id = grab_store;
    Ok(draft)
}

impl Adapter for Grab {
    fn convert(&self, input: &Input<'_>, p: &mut Problems) -> Result<Draft, ConvertError> {
        let probe: Probe = input.parse()?;
        if probe.state.is_some() && probe.items.is_none() {
            state_push(input, p)
        } else {
            created(input, p)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exponent_must_be_the_currencys_own() {
        let mut p = Problems::default();
        let vnd = CurrencyIn {
            code: "VND".into(),
            exponent: 0,
        };
        assert_eq!(currency_of(&mut p, &vnd).map(|c| c.code()), Some("VND"));
        let sgd = CurrencyIn {
            code: "sgd".into(),
            exponent: 2,
        };
        assert_eq!(currency_of(&mut p, &sgd).map(|c| c.code()), Some("SGD"));
        assert!(p.is_empty());
        let wrong = CurrencyIn {
            code: "VND".into(),
            exponent: 2,
        };
        assert_eq!(currency_of(&mut p, &wrong).map(|c| c.code()), Some("VND"));
        let text: Vec<String> = p.errors().iter().map(|e| e.to_string()).collect();
        assert_eq!(
            text,
            ["currency.exponent: 2 does not match VND, which has 0 decimals"]
        );
    }

    #[test]
    fn states_map_to_canonical_states() {
        assert_eq!(state_of("CANCELLED"), OrderState::Cancelled);
        assert_eq!(state_of("FAILED"), OrderState::Cancelled);
        assert_eq!(state_of("DRIVER_ALLOCATED"), OrderState::CourierAssigned);
        assert_eq!(state_of("COLLECTED"), OrderState::PickedUp);
        assert_eq!(state_of("unknown_default_open_api"), OrderState::Other);
    }
}
