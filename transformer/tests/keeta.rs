//! Keeta: the envelope's `message` parsed twice, the order wrapped or bare,
//! ids kept to their digits, events by `eventId`, and what is refused.

mod support;

use canonical::order::{Event, Funder, OrderState};
use serde_json::{Value, json};
use shared::Provider;
use support::{acme, fixture, hub, hub_from, outcome};

fn convert(body: &[u8]) -> Result<canonical::order::Order, (String, String)> {
    outcome(&hub(), &acme(Provider::Keeta, body))
}

/// An envelope of `event` with `message` encoded as Keeta does, a string.
fn envelope(event: Value, message: &Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "sig": "0".repeat(64),
        "eventId": event,
        "appId": 3762772727_u64,
        "messageId": "m-1",
        "shopId": 145541,
        "message": message.to_string(),
        "timestamp": 1718388101,
    }))
    .unwrap()
}

/// The message of a fixture, decoded.
fn message_of(file: &str) -> Value {
    let env: Value = serde_json::from_slice(&fixture(file)).unwrap();
    serde_json::from_str(env["message"].as_str().unwrap()).unwrap()
}

#[test]
fn the_order_reads_the_same_wrapped_in_order_info_or_bare() {
    let wrapped = convert(&fixture("keeta/order-created.json")).unwrap();
    let info = message_of("keeta/order-created.json")["orderInfo"].clone();
    let bare = convert(&envelope(json!(1001), &info)).unwrap();
    assert_eq!(bare.items, wrapped.items);
    assert_eq!(bare.totals, wrapped.totals);
    assert_eq!(bare.provider_order_id, "553440887574627");
    // An event id as a string is the same event.
    let text = convert(&envelope(json!("1001"), &info)).unwrap();
    assert_eq!(text.items, wrapped.items);
}

#[test]
fn money_is_minor_units_and_discounts_are_split_only_when_they_add_up() {
    let order = convert(&fixture("keeta/order-created.json")).unwrap();
    let t = order.totals.unwrap();
    // 6400 + delivery 900 + platform fee 200 + courier tip 500 − 1000.
    assert_eq!(
        (
            t.subtotal,
            t.delivery_fee,
            t.service_fee,
            t.tip,
            t.discount,
            t.total
        ),
        (6400, 900, 200, 500, 1000, 7000)
    );
    let funders: Vec<_> = t
        .discounts
        .iter()
        .map(|d| (d.amount, d.funded_by))
        .collect();
    assert_eq!(
        funders,
        [(600, Some(Funder::Merchant)), (400, Some(Funder::Platform))]
    );

    let mut m = message_of("keeta/order-created.json");
    m["orderInfo"]["orderPromotionDtlList"][0]["platformActivityFee"] = json!(300);
    let t = convert(&envelope(json!(1001), &m)).unwrap().totals.unwrap();
    let one: Vec<_> = t
        .discounts
        .iter()
        .map(|d| (d.name.as_str(), d.amount, d.funded_by))
        .collect();
    assert_eq!(one, [("discounts", 1000, None)]);

    // A total to pay that does not add up is the order check's finding.
    let mut m = message_of("keeta/order-created.json");
    m["orderInfo"]["feeDtl"]["customerFee"]["payTotal"] = json!(7500);
    assert_eq!(
        convert(&envelope(json!(1001), &m)).unwrap_err().1,
        "invalid order: 1 problem: totals.total: expected 7000 = subtotal + delivery_fee + service_fee + tip - discount (tax inclusive), got 7500"
    );
}

#[test]
fn the_currency_is_the_payloads_else_the_accounts() {
    let mut m = message_of("keeta/order-created.json");
    m["orderInfo"]["feeDtl"]["customerFee"]["i18n"] = json!({});
    for p in m["orderInfo"]["products"].as_array_mut().unwrap() {
        p.as_object_mut().unwrap().remove("currency");
    }
    let body = envelope(json!(1001), &m);
    assert_eq!(
        convert(&body).unwrap().currency.map(|c| c.code()),
        Some("SAR")
    );
    let toml = support::HUB.replace(
        "# For orders whose fees and products name no currency.\ncurrency = \"SAR\"\n",
        "",
    );
    assert_ne!(toml, support::HUB);
    assert_eq!(
        outcome(&hub_from(&toml), &acme(Provider::Keeta, &body))
            .unwrap_err()
            .1,
        "invalid order: 1 problem: currency: the payload has no currency and account \"acme-keeta\" configures none"
    );
    m["orderInfo"]["feeDtl"]["customerFee"]["i18n"] = json!({"currency": "AED"});
    assert_eq!(
        convert(&envelope(json!(1001), &m))
            .unwrap()
            .currency
            .map(|c| c.code()),
        Some("AED")
    );
}

#[test]
fn an_order_id_keeps_its_digits() {
    // 2^53 + 1: a float would make it ...992.
    let m = json!({"opTime": 1718388160123_i64, "orderViewId": 9007199254740993_i64, "shopId": 145541, "status": 30});
    let order = convert(&envelope(json!(1002), &m)).unwrap();
    assert_eq!(order.provider_order_id, "9007199254740993");
    let m = json!({"opTime": 1718388160123_i64, "orderViewId": "553440887574627", "status": 30});
    assert_eq!(
        convert(&envelope(json!(1002), &m))
            .unwrap()
            .provider_order_id,
        "553440887574627"
    );
}

#[test]
fn status_events_update_complete_or_cancel_the_order() {
    let created = convert(&fixture("keeta/order-created.json")).unwrap();
    for (file, event, state) in [
        (
            "keeta/order-accepted.json",
            Event::Updated,
            OrderState::Accepted,
        ),
        (
            "keeta/order-cancelled.json",
            Event::Cancelled,
            OrderState::Cancelled,
        ),
        (
            "keeta/delivery-courier-assigned.json",
            Event::Updated,
            OrderState::CourierAssigned,
        ),
    ] {
        let order = convert(&fixture(file)).unwrap();
        assert_eq!(order.provider_order_id, created.provider_order_id, "{file}");
        assert_eq!(
            (order.event, order.status.unwrap().state),
            (event, state),
            "{file}"
        );
    }
    let m = json!({"orderViewId": 553440887574627_i64, "shopId": 145541, "status": 40, "opTime": 1718390000000_i64});
    let done = convert(&envelope(json!(1003), &m)).unwrap();
    let s = done.status.unwrap();
    assert_eq!(
        (done.event, s.state, s.provider_status.as_deref()),
        (Event::Updated, OrderState::Delivered, Some("40"))
    );
    // Without opTime, the envelope's time (seconds).
    let m = json!({"orderViewId": 553440887574627_i64, "logisticsStatus": 10});
    let o = convert(&envelope(json!(1006), &m)).unwrap();
    let s = o.status.unwrap();
    assert_eq!(s.state, OrderState::Other);
    assert_eq!(
        s.at.unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap(),
        "2024-06-14T18:01:41Z"
    );
}

#[test]
fn refunds_and_other_events_are_refused_as_no_order_events() {
    for (event, named) in [
        (json!(1005), "1005 (refund initiation)"),
        (json!(1007), "1007 (partial refund initiation)"),
        (json!(1201), "1201"),
        (json!("1302"), "1302"),
    ] {
        let body = envelope(event, &json!({"shopId": 145541}));
        // Permanent: the handler dead-letters it at once.
        let e = transformer::convert(&hub(), &acme(Provider::Keeta, &body)).unwrap_err();
        assert!(e.class().is_permanent());
        assert_eq!(
            convert(&body).unwrap_err(),
            (
                "unsupported_event".to_owned(),
                format!("keeta event \"{named}\" is not an order event this hub converts")
            )
        );
    }
}

#[test]
fn a_message_that_is_no_json_string_is_refused() {
    let body = br#"{"eventId":1002,"shopId":1,"message":{"orderViewId":1},"timestamp":1}"#;
    assert_eq!(
        convert(body).unwrap_err(),
        (
            "invalid_payload".to_owned(),
            "payload does not parse: message: invalid type: map, expected a string at line 1 column 37".to_owned()
        )
    );
    let body = br#"{"eventId":1002,"shopId":1,"message":"{orderViewId: 1}","timestamp":1}"#;
    assert_eq!(
        convert(body).unwrap_err().1,
        "payload does not parse: message (json text): key must be a string at line 1 column 2"
    );
    let m = json!({"orderInfo": {"baseOrder": {"orderViewId": 1.5}}});
    assert_eq!(
        convert(&envelope(json!(1001), &m)).unwrap_err().1,
        "payload does not parse: message (json text): orderInfo.baseOrder.orderViewId: invalid type: floating point `1.5`, expected an id (string or integer) at line 1 column 44"
    );
    assert_eq!(
        convert(br#"{"shopId":1,"message":"{}"}"#).unwrap_err().1,
        "payload does not parse: missing field `eventId` at line 1 column 27"
    );
}

#[test]
fn events_without_an_order_id_are_refused() {
    let m = json!({"shopId": 145541, "status": 50, "cancelReason": "x"});
    assert_eq!(
        convert(&envelope(json!(1004), &m)).unwrap_err(),
        (
            "invalid_payload".to_owned(),
            "invalid order: 1 problem: provider_order_id: message.orderViewId, keeta's order id, is missing".to_owned()
        )
    );
    let mut m = message_of("keeta/order-created.json");
    m["orderInfo"]["baseOrder"]
        .as_object_mut()
        .unwrap()
        .remove("orderViewId");
    m["orderInfo"]["merchantOrder"]
        .as_object_mut()
        .unwrap()
        .remove("orderViewId");
    assert_eq!(
        convert(&envelope(json!(1001), &m)).unwrap_err().1,
        "invalid order: 1 problem: provider_order_id: baseOrder.orderViewId, keeta's order id, is missing"
    );
    let m = json!({"orderViewId": 5});
    assert_eq!(
        convert(&envelope(json!(1006), &m)).unwrap_err().1,
        "invalid order: 1 problem: message.logisticsStatus: a delivery status update needs logisticsStatus"
    );
}
