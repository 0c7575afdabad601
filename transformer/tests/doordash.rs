//! DoorDash Marketplace: the total it does not send, its options under
//! either spelling, the cancellation of the same order, Dasher statuses,
//! and what is refused.

mod support;

use canonical::order::{Courier, Event, FulfilmentType, OrderState};
use shared::Provider;
use support::{acme, fixture, fixture_with, hub, hub_from, outcome};

const CREATED: &str = "doordash/order-created.json";

fn convert(body: &[u8]) -> Result<canonical::order::Order, (String, String)> {
    outcome(&hub(), &acme(Provider::Doordash, body))
}

#[test]
fn the_total_doordash_does_not_send_is_computed_from_its_parts() {
    let order = convert(&fixture(CREATED)).unwrap();
    let t = order.totals.unwrap();
    // 3597 + tax 297 + delivery 299 + tip 500, tax on top (US).
    assert_eq!(
        (
            t.subtotal,
            t.tax,
            t.delivery_fee,
            t.tip,
            t.total,
            t.tax_inclusive
        ),
        (3597, 297, 299, 500, 4693, false)
    );

    // Tax on fees is tax, the small-cart fee a fee, the merchant's tip a tip.
    let body = fixture_with(
        CREATED,
        &[
            ("\"taxes_on_fees\": 0", "\"taxes_on_fees\": 25"),
            (
                "\"extra_cart_order_fee\": 0",
                "\"extra_cart_order_fee\": 200",
            ),
            ("\"merchant_tip_amount\": 0", "\"merchant_tip_amount\": 150"),
            ("\"tip_amount\": 500", "\"tip_amount\": 0"),
        ],
    );
    let t = convert(body.as_bytes()).unwrap().totals.unwrap();
    assert_eq!(
        (t.tax, t.service_fee, t.tip, t.total),
        (322, 200, 150, 3597 + 322 + 299 + 200 + 150)
    );
    assert_eq!(t.fees.len(), 1);
    assert_eq!(
        (t.fees[0].name.as_str(), t.fees[0].amount),
        ("extra_cart_order_fee", 200)
    );
}

#[test]
fn options_nest_under_either_spelling_and_count_per_unit_of_their_parent() {
    let extras = convert(&fixture(CREATED)).unwrap();
    let extra = fixture_with(
        CREATED,
        &[(
            "\"extras\": [\n              {",
            "\"extra\": [\n              {",
        )],
    );
    assert_eq!(convert(extra.as_bytes()).unwrap().items, extras.items);

    // Two of an option on each of two bowls: 2 × 300 per bowl.
    let body = fixture_with(
        CREATED,
        &[(
            "\"quantity\": 1,\n                    \"price\": 300",
            "\"quantity\": 2,\n                    \"price\": 300",
        )],
    );
    let e = convert(body.as_bytes()).unwrap_err();
    assert_eq!(
        e,
        (
            "invalid_payload".to_owned(),
            "invalid order: 1 problem: totals.subtotal: expected 4197 = sum of items[].total, got 3597"
                .to_owned()
        )
    );
}

#[test]
fn a_cancellation_is_the_created_orders_and_may_come_in_the_envelope() {
    let created = convert(&fixture(CREATED)).unwrap();
    let cancelled = convert(&fixture("doordash/order-cancelled.json")).unwrap();
    assert_eq!(cancelled.event, Event::Cancelled);
    assert_eq!(cancelled.provider_order_id, created.provider_order_id);
    assert_eq!(cancelled.branch.as_deref(), Some("sf-mission"));
    assert!(cancelled.items.is_empty() && cancelled.totals.is_none());

    let wrapped = br#"{"event":{"type":"OrderCancel"},"order":{"external_order_id":"4f6a2b8c-9d1e-4a3f-b5c7-d8e9f0a1b2c3","client_order_id":"pos-1","store":{"merchant_supplied_id":"CG-SFO-MISSION"}}}"#;
    let order = convert(wrapped).unwrap();
    assert_eq!(order.event, Event::Cancelled);
    assert_eq!(order.provider_order_id, created.provider_order_id);
    let status = order.status.unwrap();
    assert_eq!(
        (status.state, status.provider_status.as_deref()),
        (OrderState::Cancelled, Some("OrderCancel"))
    );
}

#[test]
fn a_cancellation_without_doordashs_order_id_is_refused() {
    let e = convert(br#"{"external_order_id":"","client_order_id":"pos-1","is_asap":true}"#)
        .unwrap_err();
    assert_eq!(
        e,
        (
            "invalid_payload".to_owned(),
            "invalid order: 1 problem: provider_order_id: external_order_id, doordash's order id, is missing".to_owned()
        )
    );
}

#[test]
fn dasher_statuses_are_updates_of_the_order() {
    for (said, state) in [
        ("dasher_confirmed", OrderState::CourierAssigned),
        ("arriving_at_store", OrderState::CourierAssigned),
        ("arrived_at_store", OrderState::CourierArrived),
        ("dasher_out_for_delivery", OrderState::PickedUp),
        ("dropoff", OrderState::Delivered),
        ("something_new", OrderState::Other),
    ] {
        let body = format!(
            r#"{{"dasher_status":"{said}","external_order_id":"dd-1","client_order_id":null,"created_at":"2024-06-14T18:41:07Z"}}"#
        );
        let order = convert(body.as_bytes()).unwrap();
        assert_eq!(order.event, Event::Updated, "{said}");
        let status = order.status.unwrap();
        assert_eq!(
            (status.state, status.provider_status.as_deref()),
            (state, Some(said))
        );
    }
}

#[test]
fn pickup_and_self_delivery_are_told_apart() {
    let own = convert(&fixture(CREATED)).unwrap().fulfilment.unwrap();
    assert_eq!(
        (own.kind, own.delivered_by, own.address.is_some()),
        (FulfilmentType::Delivery, Some(Courier::Restaurant), true)
    );
    let dasher = fixture_with(CREATED, &[("\"mx_delivery\"", "\"dx_delivery\"")]);
    let f = convert(dasher.as_bytes()).unwrap().fulfilment.unwrap();
    // DoorDash sends the address for self-delivery only; sent, it is kept.
    assert_eq!(
        (f.kind, f.delivered_by, f.address.map(|a| a.lines)),
        (
            FulfilmentType::Delivery,
            Some(Courier::Platform),
            Some(vec!["2100 Example St".to_owned(), "Unit 3".to_owned()])
        )
    );
    let pickup = convert(&fixture("doordash/pickup-merchant-tip.json")).unwrap();
    assert_eq!(pickup.fulfilment.unwrap().kind, FulfilmentType::Pickup);

    let odd = fixture_with(CREATED, &[("\"mx_delivery\"", "\"drone\"")]);
    assert_eq!(
        convert(odd.as_bytes()).unwrap_err(),
        (
            "invalid_payload".to_owned(),
            "invalid order: 1 problem: fulfillment_type: unknown fulfilment type \"drone\" (dx_delivery, mx_delivery or is_pickup)".to_owned()
        )
    );
}

#[test]
fn without_the_accounts_currency_the_order_is_refused() {
    let toml = support::HUB.replace(
        "# DoorDash's payloads name no currency.\ncurrency = \"USD\"\n",
        "",
    );
    assert_ne!(toml, support::HUB);
    let e = outcome(
        &hub_from(&toml),
        &acme(Provider::Doordash, &fixture(CREATED)),
    )
    .unwrap_err();
    assert_eq!(
        e,
        (
            "invalid_payload".to_owned(),
            "invalid order: 1 problem: currency: the payload has no currency and account \"acme-doordash\" configures none".to_owned()
        )
    );
}

#[test]
fn what_is_no_order_event_or_no_amount_is_refused() {
    let adjust = br#"{"event":{"type":"OrderAdjust","event_time":"2024-05-06T19:50:43+00:00"},"order":{"id":"x"}}"#;
    assert_eq!(
        convert(adjust).unwrap_err(),
        (
            "unsupported_event".to_owned(),
            "doordash event \"OrderAdjust\" is not an order event this hub converts".to_owned()
        )
    );
    assert_eq!(
        convert(br#"{"menu":{"id":"m1"}}"#).unwrap_err(),
        (
            "invalid_payload".to_owned(),
            "payload does not parse: neither an order (`order`), a cancellation (`external_order_id`) nor a dasher status (`dasher_status`)".to_owned()
        )
    );
    // Cents are integers: a decimal price is no amount.
    let body = fixture_with(CREATED, &[("\"price\": 1299", "\"price\": 12.99")]);
    let (class, text) = convert(body.as_bytes()).unwrap_err();
    assert_eq!(class, "invalid_payload");
    assert!(
        text.starts_with("payload does not parse: order.categories[0].items[0].price: invalid type: floating point `12.99`, expected i64"),
        "{text}"
    );
}
