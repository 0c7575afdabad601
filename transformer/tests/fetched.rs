//! Orders the fetcher stage fetched (Uber Eats, Wolt): which API's shape a
//! body is, which event it stands for, and the bodies that must be refused,
//! each problem named by its path. The golden fixtures are in
//! `tests/fixtures/<provider>/fetched/`.

mod support;

use canonical::order::{Event, Order, OrderState};
use serde_json::{Value, json};
use shared::Provider;
use shared::headers::{FETCHED_API, NOTIFICATION_EVENT};
use shared::worker::Delivery;

fn fixture(path: &str) -> Value {
    let text = std::fs::read(format!(
        "{}/../tests/fixtures/{path}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    serde_json::from_slice(&text).unwrap()
}

/// A fetched order as the fetcher publishes it, with its headers when
/// given.
fn fetched(provider: Provider, body: &Value, event: Option<&str>, api: Option<&str>) -> Delivery {
    let body = serde_json::to_vec(body).unwrap();
    let mut extra = Vec::new();
    if let Some(e) = event {
        extra.push((NOTIFICATION_EVENT, e));
    }
    if let Some(a) = api {
        extra.push((FETCHED_API, a));
    }
    support::fetched(provider, &body, &extra)
}

fn uber(body: &Value, event: Option<&str>, api: Option<&str>) -> Delivery {
    fetched(Provider::Ubereats, body, event, api)
}

fn wolt(body: &Value, event: Option<&str>, api: Option<&str>) -> Delivery {
    fetched(Provider::Wolt, body, event, api)
}

fn convert(d: &Delivery) -> Order {
    match transformer::convert(&support::hub(), d) {
        Ok(order) => order,
        Err(e) => panic!("refused: {e}"),
    }
}

fn refuse(d: &Delivery) -> (String, String) {
    match transformer::convert(&support::hub(), d) {
        Ok(order) => panic!("converted: {}", serde_json::to_string(&order).unwrap()),
        Err(e) => {
            assert!(e.class().is_permanent());
            (e.class().as_str().to_owned(), e.to_string())
        }
    }
}

fn invalid(text: &str) -> (String, String) {
    ("invalid_payload".to_owned(), text.to_owned())
}

fn set(body: &mut Value, pointer: &str, value: Value) {
    *body
        .pointer_mut(pointer)
        .unwrap_or_else(|| panic!("no {pointer}")) = value;
}

fn remove(body: &mut Value, pointer: &str) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let parent = body.pointer_mut(parent).unwrap();
    match parent {
        Value::Object(o) => {
            o.remove(key).unwrap_or_else(|| panic!("no {pointer}"));
        }
        Value::Array(a) => {
            a.remove(key.parse().unwrap());
        }
        _ => panic!("{pointer} is in no container"),
    }
}

fn state(order: &Order) -> (Event, OrderState, Option<&str>, Option<&str>) {
    let s = order.status.as_ref().expect("a status");
    (
        order.event,
        s.state,
        s.provider_status.as_deref(),
        s.reason.as_deref(),
    )
}

/// Without the fetcher's headers a body is read by its own shape, and its
/// own state says what happened: every fixture converts to the same order.
#[test]
fn fetched_orders_read_the_same_without_the_fetchers_headers() {
    let mut checked = 0;
    for provider in [Provider::Ubereats, Provider::Wolt] {
        let dir = format!(
            "{}/../tests/fixtures/{provider}/fetched",
            env!("CARGO_MANIFEST_DIR")
        );
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            if name.ends_with(".expected.json") || name.ends_with(".headers.json") {
                continue;
            }
            let stem = name.trim_end_matches(".json");
            let body = fixture(&format!("{provider}/fetched/{name}"));
            let mut d = fetched(provider, &body, None, None);
            d.headers.insert(
                shared::headers::WEBHOOK_ID,
                format!("wh-{provider}-{stem}").as_str(),
            );
            let got = serde_json::to_value(convert(&d)).unwrap();
            let want = fixture(&format!("{provider}/fetched/{stem}.expected.json"));
            assert_eq!(got, want, "{provider}/fetched/{name}");
            checked += 1;
        }
    }
    assert!(checked >= 9, "{checked}");
}

#[test]
fn a_body_of_one_api_labelled_as_the_other_is_refused_naming_both() {
    let v1 = fixture("ubereats/fetched/v1-order-created.json");
    assert_eq!(
        refuse(&uber(&v1, Some("orders.notification"), Some("v2"))),
        invalid(
            "invalid order: 1 problem: Orderhub-Fetched-Api: says v2, but the body is a v1 order (it has `carts` and `state`, or `order`, not `cart` and `current_state`)"
        )
    );
    let v2 = fixture("ubereats/fetched/v2-order-created.json");
    assert_eq!(
        refuse(&uber(&v2, None, Some("v1"))),
        invalid(
            "invalid order: 1 problem: Orderhub-Fetched-Api: says v1, but the body is a v2 order (it has `cart` and `current_state`, not `carts` and `state`, or `order`)"
        )
    );
    let wolt_v1 = fixture("wolt/fetched/v1-order-created.json");
    assert_eq!(
        refuse(&wolt(&wolt_v1, Some("CREATED"), Some("v2"))),
        invalid(
            "invalid order: 1 problem: Orderhub-Fetched-Api: says v2, but the body is a v1 order (it has `price`, not `basket_price`)"
        )
    );
    assert_eq!(
        refuse(&wolt(&wolt_v1, Some("CREATED"), Some("v3"))),
        invalid(
            "invalid order: 1 problem: Orderhub-Fetched-Api: \"v3\" is not an order api this hub reads (v1 or v2)"
        )
    );
    assert_eq!(
        refuse(&uber(&json!({"id": "x"}), None, None)),
        invalid(
            "invalid order: 1 problem: Orderhub-Fetched-Api: is not set and the body is neither a v1 order (`carts` and `state`, or `order`) nor a v2 order (`cart` and `current_state`)"
        )
    );
    // The label is read case-insensitively; a shape it cannot tell is
    // read as labelled, and then names what is missing.
    assert_eq!(
        convert(&wolt(&wolt_v1, Some("CREATED"), Some("V1"))).provider_order_id,
        "66a1f0c2b3d4e5f6a7b8c9d0"
    );
    let (class, text) = refuse(&wolt(
        &json!({"id": "w1", "items": []}),
        Some("CREATED"),
        Some("v1"),
    ));
    assert_eq!(class, "invalid_payload");
    assert!(
        text.starts_with("payload does not parse: missing field `price`"),
        "{text}"
    );
}

#[test]
fn the_uber_eats_notification_event_decides_the_event() {
    let body = fixture("ubereats/fetched/v1-order-created.json");
    let d = |body: &Value, event| uber(body, Some(event), Some("v1"));

    // A cancellation the order does not show yet: the notification wins.
    let order = convert(&d(&body, "orders.failure"));
    assert_eq!(
        state(&order),
        (
            Event::Cancelled,
            OrderState::Cancelled,
            Some("orders.failure"),
            None
        )
    );
    assert!(order.items.is_empty() && order.totals.is_none());
    assert_eq!(order.branch.as_deref(), Some("london-camden"));
    assert_eq!(order.display_code.as_deref(), Some("C7D8E"));

    // The restaurant denied it: a rejection, with Uber's reason.
    let mut denied = body.clone();
    set(&mut denied, "/order/state", json!("FAILED"));
    denied["order"]["failure_info"] =
        json!({"reason": "POS_DENIED", "will_merchant_be_paid": false});
    assert_eq!(
        state(&convert(&d(&denied, "orders.failure"))),
        (
            Event::Cancelled,
            OrderState::Rejected,
            Some("FAILED"),
            Some("POS_DENIED")
        )
    );

    let mut ready = body.clone();
    set(&mut ready, "/order/state", json!("ACCEPTED"));
    ready["order"]["preparation_status"] = json!("READY_FOR_HANDOFF");
    let order = convert(&d(&ready, "orders.release"));
    assert_eq!(
        state(&order),
        (Event::Updated, OrderState::Ready, Some("ACCEPTED"), None)
    );
    assert!(order.items.is_empty());

    let mut courier = body.clone();
    set(
        &mut courier,
        "/order/deliveries/0/status",
        json!("ARRIVED_AT_PICKUP"),
    );
    assert_eq!(
        state(&convert(&d(&courier, "delivery.state_changed"))),
        (
            Event::Updated,
            OrderState::CourierArrived,
            Some("ARRIVED_AT_PICKUP"),
            None
        )
    );

    // The content changed: the whole order travels.
    let order = convert(&d(&body, "orders.fulfillment_issues.resolved"));
    assert_eq!(
        state(&order),
        (
            Event::Updated,
            OrderState::Modified,
            Some("orders.fulfillment_issues.resolved"),
            None
        )
    );
    assert_eq!(order.items.len(), 2);
    assert_eq!(order.totals.unwrap().total, 2908);

    assert_eq!(
        refuse(&d(&body, "store.provisioned")),
        (
            "unsupported_event".to_owned(),
            "ubereats event \"store.provisioned\" is not an order event this hub converts"
                .to_owned()
        )
    );
}

#[test]
fn the_wolt_notification_event_decides_the_event() {
    let body = fixture("wolt/fetched/v2-order-created.json");
    let d = |event| wolt(&body, Some(event), Some("v2"));
    for (event, want) in [
        ("PRODUCTION", OrderState::Preparing),
        ("READY", OrderState::Ready),
        ("DELIVERED", OrderState::Delivered),
        ("PICK-UP-COMPLETED", OrderState::PickedUp),
        ("REVIEW", OrderState::Other),
    ] {
        let order = convert(&d(event));
        assert_eq!(state(&order), (Event::Updated, want, Some(event), None));
        assert_eq!(order.display_code.as_deref(), Some("5122"));
        assert!(order.items.is_empty());
    }
    assert_eq!(
        state(&convert(&d("CANCELED"))),
        (
            Event::Cancelled,
            OrderState::Cancelled,
            Some("CANCELED"),
            None
        )
    );
    assert_eq!(
        state(&convert(&d("REJECTED"))),
        (
            Event::Cancelled,
            OrderState::Rejected,
            Some("REJECTED"),
            None
        )
    );

    // Neither the header nor the order says what happened.
    let mut unknown = body.clone();
    remove(&mut unknown, "/order_status");
    assert_eq!(
        refuse(&wolt(&unknown, None, Some("v2"))),
        invalid(
            "invalid order: 1 problem: order_status: without Orderhub-Notification-Event nothing says what happened to the order"
        )
    );
}

/// A cancellation or a status change reads the ids and the status only:
/// content the adapter would refuse cannot hold it up.
#[test]
fn a_status_change_does_not_read_the_content() {
    let mut uber_order = fixture("ubereats/fetched/v2-order-cancelled.json");
    set(&mut uber_order, "/cart", json!("not a cart"));
    remove(&mut uber_order, "/payment");
    let order = convert(&uber(&uber_order, Some("orders.cancel"), Some("v2")));
    assert_eq!(
        state(&order),
        (
            Event::Cancelled,
            OrderState::Cancelled,
            Some("CANCELED"),
            None
        )
    );
    assert_eq!(order.branch.as_deref(), Some("nyc-astoria"));

    let mut wolt_order = fixture("wolt/fetched/v2-order-canceled.json");
    set(&mut wolt_order, "/items/0/item_price", json!(17));
    let order = convert(&wolt(&wolt_order, Some("CANCELED"), Some("v2")));
    assert_eq!(
        state(&order),
        (
            Event::Cancelled,
            OrderState::Rejected,
            Some("rejected"),
            None
        )
    );
}

#[test]
fn amount_e5_that_is_no_whole_minor_unit_is_refused_at_its_path() {
    // Strings, as protobuf writes 64-bit integers: 24.26001 USD.
    let mut body = fixture("ubereats/fetched/v1-pickup.json");
    set(
        &mut body,
        "/payment/payment_detail/order_total/gross/amount_e5",
        json!("2426001"),
    );
    assert_eq!(
        refuse(&uber(&body, Some("orders.notification"), Some("v1"))),
        invalid(
            "invalid order: 2 problems: \
             payment.payment_detail.order_total.gross.amount_e5: amount \"24.26001\" has more than 2 decimal places; \
             totals.total: expected 2426 = subtotal + delivery_fee + service_fee + tax + tip - discount, got 0"
        )
    );

    // Yen have no minor unit below one: 1280.00001 JPY is no amount.
    let mut body = fixture("ubereats/fetched/v1-scheduled.json");
    set(
        &mut body,
        "/order/payment/payment_detail/item_charges/price_breakdown/0/unit/gross/amount_e5",
        json!(128_000_001),
    );
    assert_eq!(
        refuse(&uber(&body, None, Some("v1"))),
        invalid(
            "invalid order: 2 problems: \
             items[0].unit_price.gross.amount_e5: amount \"1280.00001\" has more than 0 decimal places; \
             totals.subtotal: expected 450 = sum of items[].total, got 3010"
        )
    );

    // A fraction of amount_e5 is not even an amount.
    let mut body = fixture("ubereats/fetched/v1-order-created.json");
    set(
        &mut body,
        "/order/payment/payment_detail/tips/total/gross/amount_e5",
        json!(150000.5),
    );
    let (class, text) = refuse(&uber(&body, None, None));
    assert_eq!(class, "invalid_payload");
    assert!(
        text.starts_with(
            "payload does not parse: order.payment.payment_detail.tips.total.gross.amount_e5: invalid type: floating point `150000.5`, expected an integer amount_e5 (number or string)"
        ),
        "{text}"
    );

    // Every amount is in the order's currency.
    let mut body = fixture("ubereats/fetched/v1-order-created.json");
    set(
        &mut body,
        "/order/payment/payment_detail/tips/total/gross/currency_code",
        json!("EUR"),
    );
    assert_eq!(
        refuse(&uber(&body, None, None)),
        invalid(
            "invalid order: 2 problems: \
             order.payment.payment_detail.tips.total.gross.currency_code: EUR differs from the order's currency GBP; \
             totals.total: expected 2758 = subtotal + delivery_fee + service_fee + tip - discount (tax inclusive), got 2908"
        )
    );
}

#[test]
fn missing_fields_are_named_by_path() {
    // Fetched without ?expand=...: no carts, no payment.
    let mut body = fixture("ubereats/fetched/v1-order-created.json");
    remove(&mut body, "/order/carts");
    remove(&mut body, "/order/payment");
    assert_eq!(
        refuse(&uber(&body, Some("orders.notification"), Some("v1"))),
        invalid(
            "invalid order: 5 problems: \
             order.carts: is absent: the order must be fetched with ?expand=carts,deliveries,payment; \
             currency: is required for a created order; \
             items: must not be empty for a created order; \
             totals: is required for a created order; \
             payment: is required for a created order"
        )
    );

    let mut body = fixture("ubereats/fetched/v1-order-created.json");
    remove(&mut body, "/order/carts/0/items/1/title");
    let (class, text) = refuse(&uber(&body, None, Some("v1")));
    assert_eq!(class, "invalid_payload");
    assert!(
        text.starts_with("payload does not parse: order.carts[0].items[1]: missing field `title`"),
        "{text}"
    );

    // An item whose price Uber did not list.
    let mut body = fixture("ubereats/fetched/v1-order-created.json");
    remove(
        &mut body,
        "/order/payment/payment_detail/item_charges/price_breakdown/4",
    );
    assert_eq!(
        refuse(&uber(&body, None, Some("v1"))),
        invalid(
            "invalid order: 2 problems: \
             items[1].unit_price: order.payment.payment_detail.item_charges.price_breakdown has no entry for cart_item_id \"ci-6\"; \
             totals.subtotal: expected 2410 = sum of items[].total, got 2760"
        )
    );

    let mut body = fixture("ubereats/fetched/v2-order-created.json");
    remove(&mut body, "/payment/charges/total_fee");
    remove(&mut body, "/payment/charges/total");
    assert_eq!(
        refuse(&uber(&body, Some("orders.notification"), Some("v2"))),
        invalid(
            "invalid order: 2 problems: \
             payment.charges.total: neither total_fee nor total is set; \
             totals.total: expected 3201 = subtotal + delivery_fee + service_fee + tax + tip - discount, got 0"
        )
    );
    let mut body = fixture("ubereats/fetched/v2-order-created.json");
    remove(&mut body, "/id");
    let (_, text) = refuse(&uber(&body, None, Some("v2")));
    assert!(
        text.starts_with("payload does not parse: missing field `id`"),
        "{text}"
    );

    let mut body = fixture("wolt/fetched/v2-order-created.json");
    remove(&mut body, "/items/1/item_price");
    assert_eq!(
        refuse(&wolt(&body, Some("CREATED"), Some("v2"))),
        invalid(
            "invalid order: 2 problems: \
             items[1].unit_price: the item has no item_price.unit_price; \
             totals.subtotal: expected 3680 = sum of items[].total, got 4030"
        )
    );
}

/// Where a reading of the provider's amounts is wrong, the order does not
/// add up, and the mismatch says where.
#[test]
fn amounts_that_do_not_add_up_are_named() {
    let mut body = fixture("ubereats/fetched/v1-order-created.json");
    set(
        &mut body,
        "/order/payment/payment_detail/fees/total/gross/amount_e5",
        json!(300_000),
    );
    assert_eq!(
        refuse(&uber(&body, None, None)),
        invalid(
            "invalid order: 1 problem: order.payment.payment_detail.fees.total: the details add up to 298, the total is 300"
        )
    );

    let mut body = fixture("wolt/fetched/v2-order-created.json");
    set(&mut body, "/basket_price/total/amount", json!(3600));
    set(&mut body, "/fees/total/amount", json!(400));
    assert_eq!(
        refuse(&wolt(&body, None, None)),
        invalid(
            "invalid order: 3 problems: \
             basket_price.total: expected 3627 = total_before_discounts 4030 - total_discounts 403, got 3600; \
             fees.total: the parts add up to 389, the total is 400; \
             totals.total: expected 4016 = subtotal + delivery_fee + service_fee + tip - discount (tax inclusive), got 3989"
        )
    );

    let mut body = fixture("wolt/fetched/v1-order-created.json");
    set(&mut body, "/items/0/total_price/amount", json!(3250));
    assert_eq!(
        refuse(&wolt(&body, None, None)),
        invalid(
            "invalid order: 2 problems: \
             items[0].total: expected 3200 = (unit_price 1150 + modifiers 450) × quantity 2, got 3250; \
             totals.total: expected 4290 = subtotal + delivery_fee + service_fee + tip - discount (tax inclusive), got 4240"
        )
    );
}

/// Promotions Uber writes negative, and adjustments either way.
#[test]
fn uber_discounts_count_by_their_size_and_adjustments_by_their_sign() {
    let mut body = fixture("ubereats/fetched/v1-order-created.json");
    for pointer in [
        "/order/payment/payment_detail/promotions/total/gross/amount_e5",
        "/order/payment/payment_detail/promotions/details/0/discount_value/gross/amount_e5",
    ] {
        set(&mut body, pointer, json!(-300_000));
    }
    let totals = convert(&uber(&body, None, None)).totals.unwrap();
    assert_eq!((totals.discount, totals.total), (300, 2908));

    // A price adjustment of -0.50 is a discount, +0.25 a fee.
    for (e5, discount, service_fee) in [(-50_000, 350, 99), (25_000, 300, 124)] {
        let mut body = fixture("ubereats/fetched/v1-order-created.json");
        body["order"]["payment"]["payment_detail"]["adjustment"] =
            json!({"total": {"gross": {"amount_e5": e5, "currency_code": "GBP"}}});
        let total = 2908 - (discount - 300) + (service_fee - 99);
        set(
            &mut body,
            "/order/payment/payment_detail/order_total/gross/amount_e5",
            json!(total * 1000),
        );
        let totals = convert(&uber(&body, None, None)).totals.unwrap();
        assert_eq!(
            (totals.discount, totals.service_fee, totals.total),
            (discount, service_fee, total)
        );
    }
}
