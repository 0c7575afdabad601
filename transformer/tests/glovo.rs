//! Glovo: local times at their string offset, discounts by who funds them,
//! the marketplace's fees and total, the cancellation of the same order, and
//! what is refused.

mod support;

use canonical::order::{Courier, Event, Funder, OrderState, PaymentMethod};
use shared::Provider;
use support::{acme, fixture, fixture_with, hub, outcome};
use time::UtcOffset;
use time::format_description::well_known::Rfc3339;

const CREATED: &str = "glovo/order-created.json";
const PICKUP: &str = "glovo/pickup-cash-offset.json";

fn convert(body: &[u8]) -> Result<canonical::order::Order, (String, String)> {
    outcome(&hub(), &acme(Provider::Glovo, body))
}

fn utc(t: time::OffsetDateTime) -> String {
    t.to_offset(UtcOffset::UTC).format(&Rfc3339).unwrap()
}

#[test]
fn a_local_time_at_minus_300_lands_at_the_right_instant() {
    let order = convert(&fixture(PICKUP)).unwrap();
    let placed = order.placed_at.unwrap();
    assert_eq!(placed.offset(), UtcOffset::from_hms(-5, 0, 0).unwrap());
    assert_eq!(utc(placed), "2024-06-14T17:05:00Z");
    assert_eq!(
        utc(order.fulfilment.unwrap().ready_by.unwrap()),
        "2024-06-14T17:25:00Z"
    );
    // "120": two hours ahead of UTC.
    let order = convert(&fixture(CREATED)).unwrap();
    assert_eq!(utc(order.placed_at.unwrap()), "2024-06-14T15:42:10Z");
}

#[test]
fn a_bad_or_missing_offset_is_refused() {
    let bad = fixture_with(PICKUP, &[("\"-300\"", "\"-5h\"")]);
    assert_eq!(
        convert(bad.as_bytes()).unwrap_err(),
        (
            "invalid_payload".to_owned(),
            "invalid order: 2 problems: \
             utc_offset_minutes: \"-5h\" is not an offset in whole minutes within ±1080; \
             placed_at: is required for a created order"
                .to_owned()
        )
    );
    let far = fixture_with(PICKUP, &[("\"-300\"", "\"-1500\"")]);
    assert!(
        convert(far.as_bytes())
            .unwrap_err()
            .1
            .contains("utc_offset_minutes: \"-1500\" is not an offset"),
    );
    let none = fixture_with(PICKUP, &[("\"utc_offset_minutes\": \"-300\",\n", "")]);
    assert_eq!(
        convert(none.as_bytes()).unwrap_err(),
        (
            "invalid_payload".to_owned(),
            "invalid order: 2 problems: \
             utc_offset_minutes: the local times need the store's offset from utc; \
             placed_at: is required for a created order"
                .to_owned()
        )
    );
    let garbled = fixture_with(
        PICKUP,
        &[("\"2024-06-14 12:05:00\"", "\"14/06/2024 12:05\"")],
    );
    assert_eq!(
        convert(garbled.as_bytes()).unwrap_err().1,
        "invalid order: 2 problems: \
         order_time: \"14/06/2024 12:05\" is not a local time \"YYYY-MM-DD HH:MM:SS\"; \
         placed_at: is required for a created order"
    );
}

#[test]
fn partner_and_glovo_discounts_are_attributed_to_who_funds_them() {
    let order = convert(&fixture(CREATED)).unwrap();
    let t = order.totals.unwrap();
    // 3250 − partner 325 + delivery 299 + service 99.
    assert_eq!(
        (
            t.subtotal,
            t.discount,
            t.delivery_fee,
            t.service_fee,
            t.total
        ),
        (3250, 325, 299, 99, 3323)
    );
    assert_eq!(t.discounts.len(), 1);
    assert_eq!(t.discounts[0].funded_by, Some(Funder::Merchant));

    let both = fixture_with(
        CREATED,
        &[
            (
                "\"glovo_discounts_products\": 0",
                "\"glovo_discounts_products\": 100",
            ),
            (
                "\"discounted_products_total\": 2925",
                "\"discounted_products_total\": 2825",
            ),
            (
                "\"total_customer_to_pay\": 3323",
                "\"total_customer_to_pay\": 3223",
            ),
        ],
    );
    let t = convert(both.as_bytes()).unwrap().totals.unwrap();
    let split: Vec<_> = t
        .discounts
        .iter()
        .map(|d| (d.name.as_str(), d.amount, d.funded_by))
        .collect();
    assert_eq!(
        split,
        [
            ("partner_discounts_products", 325, Some(Funder::Merchant)),
            ("glovo_discounts_products", 100, Some(Funder::Platform)),
        ]
    );
    assert_eq!((t.discount, t.total), (425, 3223));
}

#[test]
fn discounted_totals_that_disagree_are_refused() {
    let body = fixture_with(
        CREATED,
        &[(
            "\"partner_discounted_products_total\": 2925",
            "\"partner_discounted_products_total\": 2950",
        )],
    );
    assert_eq!(
        convert(body.as_bytes()).unwrap_err(),
        (
            "invalid_payload".to_owned(),
            "invalid order: 1 problem: partner_discounted_products_total: expected 2925 = estimated_total_price - partner_discounts_products, got 2950".to_owned()
        )
    );
    // A total to pay that does not add up is the order check's finding.
    let body = fixture_with(CREATED, &[("\"service_fee\": 99", "\"service_fee\": 199")]);
    assert_eq!(
        convert(body.as_bytes()).unwrap_err().1,
        "invalid order: 1 problem: totals.total: expected 3423 = subtotal + delivery_fee + service_fee + tip - discount (tax inclusive), got 3323"
    );
}

#[test]
fn a_normal_partners_order_is_delivered_by_glovo_and_totalled_from_what_is_sent() {
    let body = fixture_with(
        CREATED,
        &[
            ("\"delivery_fee\": 299", "\"delivery_fee\": null"),
            ("\"service_fee\": 99", "\"service_fee\": null"),
            (
                "\"total_customer_to_pay\": 3323",
                "\"total_customer_to_pay\": null",
            ),
        ],
    );
    let mut v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["delivery_address"] = serde_json::Value::Null;
    let order = convert(&serde_json::to_vec(&v).unwrap()).unwrap();
    let f = order.fulfilment.unwrap();
    assert_eq!((f.delivered_by, f.address), (Some(Courier::Platform), None));
    assert_eq!(order.totals.unwrap().total, 2925);
}

#[test]
fn cash_hidden_phones_and_the_accounts_currency() {
    let order = convert(&fixture(PICKUP)).unwrap();
    assert_eq!(order.customer.phone, None, "\"N/A\" is no phone");
    assert_eq!(order.currency.map(|c| c.code()), Some("EUR"));
    let pay = order.payment.unwrap();
    assert_eq!(
        (pay.method, pay.paid, pay.amount_due, pay.change_for),
        (PaymentMethod::Cash, false, 1860, Some(2000))
    );
    // A cash amount below the bill is no note to change.
    let small = fixture_with(
        PICKUP,
        &[(
            "\"customer_cash_payment_amount\": 2000",
            "\"customer_cash_payment_amount\": 1000",
        )],
    );
    assert_eq!(
        convert(small.as_bytes())
            .unwrap()
            .payment
            .unwrap()
            .change_for,
        None
    );
    let unknown = fixture_with(PICKUP, &[("\"currency\": null", "\"currency\": \"EUX\"")]);
    assert_eq!(
        convert(unknown.as_bytes()).unwrap_err().1,
        "invalid order: 1 problem: currency: unknown currency code \"EUX\""
    );
}

#[test]
fn a_cancellation_is_the_created_orders_with_its_reason_in_words() {
    let created = convert(&fixture(CREATED)).unwrap();
    let cancelled = convert(&fixture("glovo/order-cancelled.json")).unwrap();
    assert_eq!(cancelled.event, Event::Cancelled);
    assert_eq!(cancelled.provider_order_id, created.provider_order_id);
    assert_eq!(cancelled.branch, created.branch);
    let s = cancelled.status.unwrap();
    assert_eq!(
        (s.state, s.provider_status.as_deref(), s.reason.as_deref()),
        (
            OrderState::Cancelled,
            Some("PRODUCTS_NOT_AVAILABLE"),
            Some("products not available; glovo pays the products")
        )
    );
    let body = br#"{"order_id":100988776655,"store_id":"s","cancel_reason":"USER_ERROR","payment_strategy":"PAY_NOTHING"}"#;
    let s = convert(body).unwrap();
    assert_eq!(s.provider_order_id, "100988776655");
    assert_eq!(
        s.status.unwrap().reason.as_deref(),
        Some("customer error; glovo pays nothing")
    );
    let blank = br#"{"order_id":" ","store_id":"s","cancel_reason":"OTHER","payment_strategy":"PAY_NOTHING"}"#;
    assert_eq!(
        convert(blank).unwrap_err(),
        (
            "invalid_payload".to_owned(),
            "invalid order: 1 problem: provider_order_id: order_id, glovo's order id, is blank"
                .to_owned()
        )
    );
    assert_eq!(
        convert(br#"{"store_id":"s","cancel_reason":"OTHER"}"#).unwrap_err(),
        (
            "invalid_payload".to_owned(),
            "payload does not parse: missing field `order_id` at line 1 column 40".to_owned()
        )
    );
}
