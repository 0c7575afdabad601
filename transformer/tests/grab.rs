//! GrabFood: amounts at the currency's own exponent (SGD 2, VND 0), prices
//! that include their modifiers and tax, promos by who funds them, Grab's
//! own figures checked (logged, never refused), order states, and what is
//! refused.

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
fn promos_are_attributed_and_grabs_own_figures_are_logged_never_refused() {
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

    // Grab's own figures disagreeing: logged with the figures, the order
    // kept as the canonical rules compute it.
    let body = fixture_with(SGD, &[("\"eaterPayment\": 2055", "\"eaterPayment\": 2000")]);
    let (order, logged) = logs_of(|| convert(body.as_bytes()));
    assert_eq!(order.unwrap().totals.unwrap().total, 2055);
    assert_eq!(
        logged,
        [
            "WARN grab figure disagrees with the order's; order kept provider=grab field=price.eaterPayment formula=subtotal + merchantChargeFee + deliveryFee - promos expected=2055 got=2000 order_total=2055 service_charge_fee=0 small_order_fee=0"
        ]
    );
    let body = fixture_with(SGD, &[("\"total\": 1755", "\"total\": 1950")]);
    let (order, logged) = logs_of(|| convert(body.as_bytes()));
    assert_eq!(order.unwrap().totals.unwrap().total, 2055);
    assert_eq!(
        logged,
        [
            "WARN grab figure disagrees with the order's; order kept provider=grab field=price.total formula=subtotal + merchantChargeFee - merchantFundPromo expected=1755 got=1950 order_total=2055 service_charge_fee=0 small_order_fee=0"
        ]
    );
    // Figures that agree log nothing.
    for fixture_path in [SGD, VND] {
        let (order, logged) = logs_of(|| convert(&fixture(fixture_path)));
        assert!(order.is_ok(), "{fixture_path}");
        assert_eq!(logged, Vec::<String>::new(), "{fixture_path}");
    }
    // A cash order with a service charge: the customer pays it, Grab's
    // eaterPayment leaves it out (as the [SDK] formula does); converted.
    let body = fixture_with(
        SGD,
        &[
            ("\"CASHLESS\"", "\"CASH\""),
            ("\"serviceChargeFee\": 0", "\"serviceChargeFee\": 150"),
        ],
    );
    let (order, logged) = logs_of(|| convert(body.as_bytes()));
    let t = order.unwrap().totals.unwrap();
    assert_eq!((t.service_fee, t.total), (150, 2205));
    assert_eq!(logged, Vec::<String>::new());
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

/// Runs `f` with a subscriber that keeps every event as
/// `LEVEL message field=value ...`.
fn logs_of<T>(f: impl FnOnce() -> T) -> (T, Vec<String>) {
    use std::sync::{Arc, Mutex};
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Metadata, Subscriber};

    #[derive(Default)]
    struct Line {
        message: String,
        fields: String,
    }
    impl Visit for Line {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            if field.name() == "message" {
                self.message = format!("{value:?}");
            } else {
                self.fields
                    .push_str(&format!(" {}={value:?}", field.name()));
            }
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            if field.name() == "message" {
                self.message = value.to_owned();
            } else {
                self.fields.push_str(&format!(" {}={value}", field.name()));
            }
        }
    }
    struct Capture(Arc<Mutex<Vec<String>>>);
    impl Subscriber for Capture {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            let mut line = Line::default();
            event.record(&mut line);
            self.0.lock().unwrap().push(format!(
                "{} {}{}",
                event.metadata().level(),
                line.message,
                line.fields
            ));
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }
    let lines = Arc::new(Mutex::new(Vec::new()));
    let out = tracing::subscriber::with_default(Capture(lines.clone()), f);
    let lines = lines.lock().unwrap().clone();
    (out, lines)
}
