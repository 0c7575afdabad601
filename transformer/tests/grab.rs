//! GrabFood: amounts at the currency's own exponent (SGD 2, VND 0), prices
//! that include their modifiers and tax, promos by who funds them, Grab's
//! own figures checked, order states, and what is refused.

mod support;

use canonical::order::{Courier, Event, FulfilmentType, Funder, OrderState};
use shared::Provider;
use support::{acme, fixture, fixture_with, hub, outcome};

const SGD: &str = "grab/order-created.json";
const VND: &str = "grab/order-created-vnd.json";

fn convert(body: &[u8]) -> Result<canonical::order::Order, (String, String)> {
    outcome(&hub(), &acme(Provider::Grab, body))
}

#[test]
fn amounts_are_minor_units_of_the_currencys_own_exponent() {
    let sgd = convert(&fixture(SGD)).unwrap();
    let t = sgd.totals.unwrap();
    assert_eq!(sgd.currency.map(|c| c.code()), Some("SGD"));
    // 1950 + delivery 300 − merchant promo 195; GST 145 inside.
    assert_eq!(
        (
            t.subtotal,
            t.delivery_fee,
            t.discount,
            t.total,
            t.tax,
            t.tax_inclusive
        ),
        (1950, 300, 195, 2055, 145, true)
    );

    let vnd = convert(&fixture(VND)).unwrap();
    assert_eq!(vnd.currency.map(|c| c.code()), Some("VND"));
    let t = vnd.totals.unwrap();
    assert_eq!((t.subtotal, t.total), (135_000, 141_000));
    assert_eq!(vnd.items[0].unit_price, 50_000);
}

#[test]
fn an_exponent_that_is_not_the_currencys_is_refused_not_rescaled() {
    let body = fixture_with(SGD, &[("\"exponent\": 2", "\"exponent\": 0")]);
    assert_eq!(
        convert(body.as_bytes()).unwrap_err(),
        (
            "invalid_payload".to_owned(),
            "invalid order: 1 problem: currency.exponent: 0 does not match SGD, which has 2 decimals".to_owned()
        )
    );
    let body = fixture_with(VND, &[("\"exponent\": 0", "\"exponent\": 2")]);
    assert_eq!(
        convert(body.as_bytes()).unwrap_err().1,
        "invalid order: 1 problem: currency.exponent: 2 does not match VND, which has 0 decimals"
    );
    let body = fixture_with(SGD, &[("\"code\": \"SGD\"", "\"code\": \"S$\"")]);
    assert_eq!(
        convert(body.as_bytes()).unwrap_err().1,
        "invalid order: 1 problem: currency: currency code \"S$\" is not three upper-case letters"
    );
}

#[test]
fn an_items_price_includes_its_modifiers() {
    let order = convert(&fixture(SGD)).unwrap();
    let nasi = &order.items[0];
    // 850 with the egg: 750 of its own, 100 the egg, per plate.
    assert_eq!(
        (
            nasi.unit_price,
            nasi.modifiers[0].unit_price,
            nasi.quantity,
            nasi.total
        ),
        (750, 100, 2, 1700)
    );
    // Grab names no items: the partner's id is the name.
    assert_eq!(nasi.name, "ITEM-NASI-01");
    assert_eq!(nasi.provider_item_id.as_deref(), Some("ITEM-NASI-01"));

    let body = fixture_with(SGD, &[("\"price\": 100,", "\"price\": 900,")]);
    assert_eq!(
        convert(body.as_bytes()).unwrap_err().1,
        "invalid order: 2 problems: \
         items[0].unit_price: price 850 (one unit with its modifiers) is below its modifiers' 900; \
         totals.subtotal: expected 2050 = sum of items[].total, got 1950"
    );
}

#[test]
fn promos_are_attributed_and_grabs_own_figures_must_agree() {
    let t = convert(&fixture(VND)).unwrap().totals.unwrap();
    let split: Vec<_> = t
        .discounts
        .iter()
        .map(|d| (d.name.as_str(), d.amount, d.funded_by))
        .collect();
    assert_eq!(
        split,
        [
            ("merchantFundPromo", 10_000, Some(Funder::Merchant)),
            ("grabFundPromo", 5_000, Some(Funder::Platform)),
        ]
    );
    assert_eq!(
        (t.service_fee, t.fees[0].name.as_str()),
        (3_000, "merchantChargeFee")
    );

    let body = fixture_with(SGD, &[("\"eaterPayment\": 2055", "\"eaterPayment\": 2000")]);
    assert_eq!(
        convert(body.as_bytes()).unwrap_err(),
        (
            "invalid_payload".to_owned(),
            "invalid order: 1 problem: price.eaterPayment: expected 2055 = subtotal + deliveryFee + merchantChargeFee + serviceChargeFee - promos, got 2000".to_owned()
        )
    );
    let body = fixture_with(SGD, &[("\"total\": 1755", "\"total\": 1950")]);
    assert_eq!(
        convert(body.as_bytes()).unwrap_err().1,
        "invalid order: 1 problem: price.total: expected 1755 = subtotal + merchantChargeFee - merchantFundPromo, got 1950"
    );
    // Grab's small-order fee is the customer's to pay but not in
    // eaterPayment; a Grab-delivered cashless order has no eaterPayment.
    let body = fixture_with(SGD, &[("\"smallOrderFee\": 0", "\"smallOrderFee\": 100")]);
    let t = convert(body.as_bytes()).unwrap().totals.unwrap();
    assert_eq!((t.service_fee, t.total), (100, 2155));
    let body = fixture_with(
        SGD,
        &[
            ("\"DeliveredByRestaurant\"", "\"DeliveredByGrab\""),
            ("\"deliveryFee\": 300", "\"deliveryFee\": 0"),
            ("\"eaterPayment\": 2055", "\"eaterPayment\": 0"),
        ],
    );
    let order = convert(body.as_bytes()).unwrap();
    assert_eq!(order.totals.unwrap().total, 1755);
    // Grab's driver delivers; an address Grab sends anyway is kept.
    let f = order.fulfilment.unwrap();
    assert_eq!(
        (f.delivered_by, f.address.map(|a| a.postcode)),
        (Some(Courier::Platform), Some(Some("120999".to_owned())))
    );
}

#[test]
fn order_types_are_fulfilments() {
    for (kind, want) in [
        ("TakeAway", FulfilmentType::Pickup),
        ("DineIn", FulfilmentType::DineIn),
        ("DeliveredByGrab", FulfilmentType::Delivery),
    ] {
        let body = fixture_with(
            SGD,
            &[("\"DeliveredByRestaurant\"", &format!("\"{kind}\""))],
        );
        let order = convert(body.as_bytes()).unwrap();
        assert_eq!(order.fulfilment.unwrap().kind, want, "{kind}");
    }
    let body = fixture_with(SGD, &[("\"DeliveredByRestaurant\"", "\"Teleport\"")]);
    assert_eq!(
        convert(body.as_bytes()).unwrap_err().1,
        "invalid order: 1 problem: featureFlags.orderType: unknown order type \"Teleport\""
    );
}

#[test]
fn order_states_update_or_cancel_the_order() {
    let created = convert(&fixture(SGD)).unwrap();
    let cancelled = convert(&fixture("grab/order-state-cancelled.json")).unwrap();
    assert_eq!(cancelled.event, Event::Cancelled);
    assert_eq!(cancelled.provider_order_id, created.provider_order_id);
    assert_eq!(cancelled.branch.as_deref(), Some("singapore-clementi"));
    for (state, event, want) in [
        ("FAILED", Event::Cancelled, OrderState::Cancelled),
        ("ACCEPTED", Event::Updated, OrderState::Accepted),
        (
            "DRIVER_ALLOCATED",
            Event::Updated,
            OrderState::CourierAssigned,
        ),
        ("DRIVER_ARRIVED", Event::Updated, OrderState::CourierArrived),
        ("COLLECTED", Event::Updated, OrderState::PickedUp),
        ("DELIVERED", Event::Updated, OrderState::Delivered),
        ("NEW_STATE", Event::Updated, OrderState::Other),
    ] {
        let body =
            format!(r#"{{"merchantID":"1-X","orderID":"o-1","state":"{state}","code":"c"}}"#);
        let order = convert(body.as_bytes()).unwrap();
        let s = order.status.unwrap();
        assert_eq!(
            (order.event, s.state, s.reason.as_deref()),
            (event, want, Some("c")),
            "{state}"
        );
    }
    assert_eq!(
        convert(br#"{"merchantID":"1-X","orderID":"","state":"CANCELLED"}"#).unwrap_err(),
        (
            "invalid_payload".to_owned(),
            "invalid order: 1 problem: provider_order_id: orderID, grab's order id, is blank"
                .to_owned()
        )
    );
    assert_eq!(
        convert(br#"{"merchantID":"1-X","state":"CANCELLED"}"#)
            .unwrap_err()
            .1,
        "payload does not parse: missing field `orderID` at line 1 column 40"
    );
}
