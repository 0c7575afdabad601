//! Payloads that must be refused: each is a permanent conversion error that
//! names every problem it has, with its path, and the handler dead-letters
//! it at once (see `handler_outcomes` in the crate's unit tests).

mod support;

use shared::Provider;
use support::{acme, delivery, hub};
use transformer::ConvertError;

fn refuse(d: &shared::worker::Delivery) -> ConvertError {
    match transformer::convert(&hub(), d) {
        Ok(order) => panic!("converted: {}", serde_json::to_string(&order).unwrap()),
        Err(e) => {
            assert!(e.class().is_permanent());
            e
        }
    }
}

fn careem(body: &str) -> (String, String) {
    let e = refuse(&acme(Provider::Careem, body.as_bytes()));
    (e.class().as_str().to_owned(), e.to_string())
}

#[test]
fn truncated_json_is_refused_with_its_position() {
    let body = r#"{"order_id":"T1","items":[{"name":"Burger","quantity":1,"pri"#;
    assert_eq!(
        careem(body),
        (
            "invalid_payload".into(),
            "payload does not parse: items[0]: EOF while parsing a string at line 1 column 60"
                .into()
        )
    );
    assert_eq!(
        careem(""),
        (
            "invalid_payload".into(),
            "payload does not parse: EOF while parsing a value at line 1 column 0".into()
        )
    );
}

#[test]
fn a_wrong_type_is_refused_with_its_path() {
    let body = r#"{"order_id":"T1","items":[{"name":"Burger","quantity":true,"price":10}],"total_amount":10}"#;
    assert_eq!(
        careem(body),
        (
            "invalid_payload".into(),
            "payload does not parse: items[0].quantity: invalid type: boolean `true`, expected an integer quantity (number or string) at line 1 column 58".into()
        )
    );
    // Money given as a float-looking text in a string is still exact, but
    // an object is no amount.
    let body = r#"{"order_id":"T1","items":[{"name":"Burger","price":{"v":1}}],"total_amount":10}"#;
    assert_eq!(
        careem(body).1,
        "payload does not parse: items[0].price: expected a decimal number or string, found an object at line 1 column 59"
    );
}

#[test]
fn a_huge_or_negative_quantity_is_reported_with_the_other_problems() {
    let body = r#"{"order_id":"T1","items":[
        {"name":"Burger","quantity":99999999999,"price":1},
        {"name":"Fries","quantity":-2,"price":"0.5"},
        {"name":"Cola","quantity":100000000000000000000000,"price":"0.5"}
    ],"total_amount":1}"#;
    assert_eq!(
        careem(body),
        (
            "invalid_payload".into(),
            "invalid order: 4 problems: \
             items[0].quantity: must be between 1 and 10000, got 99999999999; \
             items[1].quantity: must be between 1 and 10000, got -2; \
             items[2].quantity: must be between 1 and 10000, got a number beyond 2^64; \
             totals.total: expected 0 = subtotal + delivery_fee + service_fee + tip - discount (tax inclusive), got 1000"
                .into()
        )
    );
}

#[test]
fn an_unknown_currency_is_refused() {
    let body = r#"{"order_id":"T1","currency":"XYZ","items":[{"name":"Burger","price":10}],"total_amount":10}"#;
    assert_eq!(
        careem(body),
        (
            "invalid_payload".into(),
            "invalid order: 1 problem: currency: unknown currency code \"XYZ\"".into()
        )
    );
    // A currency the account configures must exist too: the config loader
    // refuses it at start, before any order could dead-letter for it.
    let toml = support::HUB.replace("currency = \"JOD\"\ncountry = \"JO\"\n[account.branches]\n\"991\" = \"amman-abdoun\"\n[account.products]\n\"burger-classic\" = \"prod_1001\"\n\"extra", "currency = \"ABC\"\ncountry = \"JO\"\n[account.branches]\n\"991\" = \"amman-abdoun\"\n[account.products]\n\"burger-classic\" = \"prod_1001\"\n\"extra");
    let e = shared::config::HubConfig::from_toml(&toml, "test", &|_| Some("x".into())).unwrap_err();
    assert_eq!(
        e.to_string(),
        "hub config test: account acme-careem.currency: \"ABC\" is not an ISO 4217 currency: unknown currency code \"ABC\""
    );
}

#[test]
fn an_empty_item_list_is_refused() {
    let body = r#"{"order_id":"T1","items":[],"total_amount":10}"#;
    assert_eq!(
        careem(body),
        (
            "invalid_payload".into(),
            "invalid order: 2 problems: \
             items: must not be empty for a created order; \
             totals.total: expected 0 = subtotal + delivery_fee + service_fee + tip - discount (tax inclusive), got 10000"
                .into()
        )
    );
}

#[test]
fn every_problem_of_one_payload_is_listed() {
    // A blank id, a fils too precise, a negative item, a blank name, a
    // subtotal and a total that do not add up.
    let body = r#"{
        "order_id": " ",
        "items": [
            {"name": "Burger", "quantity": 2, "price": 2.6755},
            {"name": " ", "quantity": 1, "price": -1}
        ],
        "subtotal": "5.000",
        "total_amount": 4
    }"#;
    assert_eq!(
        careem(body),
        (
            "invalid_payload".into(),
            "invalid order: 7 problems: \
             items[0].unit_price: amount \"2.6755\" has more than 3 decimal places; \
             provider_order_id: must not be blank; \
             items[1].name: must not be blank; \
             items[1].unit_price: must not be negative, got -1000; \
             items[1].total: must not be negative, got -1000; \
             totals.subtotal: expected -1000 = sum of items[].total, got 5000; \
             totals.total: expected 5000 = subtotal + delivery_fee + service_fee + tip - discount (tax inclusive), got 4000"
                .into()
        )
    );
}

#[test]
fn unmapped_products_and_branches_are_errors_where_the_tenant_requires_mappings() {
    let body = r#"{"order_id":"S1","store_id":"992","items":[
        {"id":"burger-classic","name":"Burger","price":1,"modifiers":[{"id":"cheese","name":"Cheese","price":0}]},
        {"name":"Water","price":0.5}
    ],"total_amount":1.5}"#;
    let d = delivery(
        Provider::Careem,
        "strict-careem",
        "wh-s1",
        body.as_bytes(),
        &[],
    );
    let e = refuse(&d);
    assert_eq!(e.class().as_str(), "unmapped_product");
    assert_eq!(
        e.to_string(),
        "invalid order: 3 problems: \
         branch: no branch mapping for store id \"992\" in account \"strict-careem\"; \
         items[0].modifiers[0].product_id: no product mapping for provider item id \"cheese\" in account \"strict-careem\"; \
         items[1].product_id: the line has no provider item id to map"
    );

    // Only the branch missing.
    let body = r#"{"order_id":"S2","items":[{"id":"burger-classic","name":"Burger","price":1}],"total_amount":1}"#;
    let d = delivery(
        Provider::Careem,
        "strict-careem",
        "wh-s2",
        body.as_bytes(),
        &[],
    );
    let e = refuse(&d);
    assert_eq!(e.class().as_str(), "unmapped_branch");
    assert_eq!(
        e.to_string(),
        "invalid order: 1 problem: branch: the payload names no store to map to a branch"
    );

    // Mapping problems beside a real one: the payload is what is wrong.
    let body = r#"{"order_id":"S3","store_id":"991","items":[{"id":"x","name":"X","price":1}],"total_amount":2}"#;
    let d = delivery(
        Provider::Careem,
        "strict-careem",
        "wh-s3",
        body.as_bytes(),
        &[],
    );
    assert_eq!(refuse(&d).class().as_str(), "invalid_payload");

    // The same payloads convert for a lenient tenant, unmapped ids as null.
    let body = r#"{"order_id":"S1","store_id":"992","items":[{"id":"cheese","name":"Cheese","price":1}],"total_amount":1}"#;
    let order = transformer::convert(&hub(), &acme(Provider::Careem, body.as_bytes())).unwrap();
    assert_eq!(order.branch, None);
    assert_eq!(order.items[0].product_id, None);
}

#[test]
fn deliveries_the_hub_cannot_place_are_refused() {
    let body = br#"{"order_id":"T1","items":[{"name":"B","price":1}],"total_amount":1}"#;
    let e = refuse(&delivery(Provider::Careem, "nobody", "wh-1", body, &[]));
    assert_eq!(e.class().as_str(), "unknown_account");
    assert_eq!(
        e.to_string(),
        "no account \"nobody\" for provider careem in the hub config"
    );

    let mut d = acme(Provider::Careem, body);
    d.headers = async_nats::HeaderMap::new();
    d.headers.insert(shared::headers::PROVIDER, "careem");
    d.headers.insert(shared::headers::ACCOUNT, "acme-careem");
    let e = refuse(&d);
    assert_eq!(
        (e.class().as_str(), e.to_string()),
        (
            "missing_header",
            "missing header Orderhub-Webhook-Id".to_owned()
        )
    );

    let mut d = acme(Provider::Careem, body);
    d.headers.insert(shared::headers::PROVIDER, "jahez");
    let e = refuse(&d);
    assert_eq!(
        (e.class().as_str(), e.to_string()),
        ("unknown_provider", "unknown provider \"jahez\"".to_owned())
    );
}

#[test]
fn events_that_are_no_order_events_are_refused() {
    let body = br#"{"event":"rider.status_update","body":{"rider":{"status":"arrived"}}}"#;
    let e = refuse(&acme(Provider::Deliveroo, body));
    assert_eq!(
        (e.class().as_str(), e.to_string()),
        (
            "unsupported_event",
            "deliveroo event \"rider.status_update\" is not an order event this hub converts"
                .to_owned()
        )
    );
    let body = br#"{"orderID":"o-1","driverStatus":{"code":"ARRIVED"},"happenedAt":"2024-06-14T17:00:00Z"}"#;
    assert_eq!(
        refuse(&acme(Provider::Justeat, body)).class().as_str(),
        "unsupported_event"
    );
    let d = delivery(
        Provider::Justeat,
        "acme-justeat",
        "wh-1",
        b"{}",
        &[("Orderhub-Path-Event", "acceptance-requested")],
    );
    assert_eq!(refuse(&d).class().as_str(), "unsupported_event");
}

#[test]
fn notifications_are_refused_as_fetch_required() {
    // Uber Eats and Wolt notify; the fetcher stage fetches the order and
    // the transformer converts what it publishes, never the notification.
    let body = br#"{"event_id":"e1","event_time":1,"event_type":"orders.cancel","meta":{"user_id":"s","resource_id":"o-9","status":"CANCELED"},"resource_href":"x"}"#;
    let e = refuse(&acme(Provider::Ubereats, body));
    assert_eq!(
        (e.class().as_str(), e.to_string()),
        (
            "fetch_required",
            "ubereats sent only a notification (orders.cancel for order o-9): the order must be fetched from the uber eats api by the fetcher stage; this is the raw notification".to_owned()
        )
    );
    let body = br#"{"id":"n1","type":"order.notification","order":{"id":"w-9","venue_id":"v","status":"CANCELED"},"created_at":"2024-06-14T16:02:11Z"}"#;
    let e = refuse(&acme(Provider::Wolt, body));
    assert_eq!(
        (e.class().as_str(), e.to_string()),
        (
            "fetch_required",
            "wolt sent only a notification (order.notification CANCELED for order w-9): the order must be fetched from the wolt api by the fetcher stage; this is the raw notification".to_owned()
        )
    );
    // A notification that is not even whole is named by what it lacks.
    let e = refuse(&acme(
        Provider::Wolt,
        br#"{"id":"n","type":"order.notification"}"#,
    ));
    assert_eq!(
        (e.class().as_str(), e.to_string()),
        (
            "invalid_payload",
            "payload does not parse: missing field `order` at line 1 column 38".to_owned()
        )
    );
}

#[test]
fn direct_orders_are_read_strictly() {
    let body = br#"{"schema":"orderhub.order.v1","event":"cancelled","provider_order_id":"W1","colour":"red"}"#;
    let e = refuse(&acme(Provider::Direct, body));
    assert_eq!(e.class().as_str(), "invalid_payload");
    assert!(
        e.to_string()
            .starts_with("payload does not parse: colour: unknown field `colour`"),
        "{e}"
    );

    let body = br#"{"schema":"orderhub.order.v2","event":"cancelled","provider_order_id":"W1"}"#;
    assert!(
        refuse(&acme(Provider::Direct, body))
            .to_string()
            .contains("unsupported order schema")
    );

    // Money in a canonical order is integer minor units, never a decimal.
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/direct/order-created.json"
    ))
    .unwrap()
    .replace("\"tip\": 500", "\"tip\": 0.5");
    let e = refuse(&acme(Provider::Direct, text.as_bytes()));
    assert!(
        e.to_string()
            .starts_with("payload does not parse: totals.tip: invalid type: floating point `0.5`"),
        "{e}"
    );

    // Hub-owned fields are the delivery's, whatever the sender wrote.
    let body = br#"{"schema":"orderhub.order.v1","webhook_id":"forged","tenant":"other","provider":"careem","raw":{"stream":"X","seq":9,"subject":"y"},"event":"cancelled","provider_order_id":"W1"}"#;
    let order = transformer::convert(&hub(), &acme(Provider::Direct, body)).unwrap();
    assert_eq!(
        (
            order.webhook_id.as_str(),
            order.tenant.as_str(),
            order.provider,
            order.raw.seq
        ),
        ("wh-test", "acme", Provider::Direct, 42)
    );
}

#[test]
fn provider_specific_consistency_is_checked() {
    // Deliveroo: every amount in the order's currency.
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/deliveroo/order-created.json"
    ))
    .unwrap();
    let mixed = text.replacen(
        "\"fractional\": 550,\n            \"currency_code\": \"GBP\"",
        "\"fractional\": 550,\n            \"currency_code\": \"EUR\"",
        1,
    );
    assert_ne!(mixed, text);
    let e = refuse(&acme(Provider::Deliveroo, mixed.as_bytes()));
    assert_eq!(
        e.to_string(),
        "invalid order: 2 problems: \
         items[1].unit_price.currency_code: EUR differs from the order's currency GBP; \
         items[1].total: expected 0 = (unit_price 0 + modifiers 0) × quantity 1, got 550"
    );

    // Talabat: decimalDigits must agree with the currency.
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/talabat/order-created.json"
    ))
    .unwrap();
    let wrong = text.replace("\"countryCode\": \"KW\"", "\"countryCode\": \"AE\"");
    // Every amount of the fixture ends in 0 and would read as AED: only
    // the check of decimalDigits tells that the currency is wrong.
    let e = refuse(&acme(Provider::Talabat, wrong.as_bytes()));
    assert_eq!(
        (e.class().as_str(), e.to_string()),
        (
            "invalid_payload",
            "invalid order: 1 problem: localInfo.decimalDigits: \"3\" does not match AED, which has 2 decimals".to_owned()
        )
    );
}

/// Not a refusal: the partner API's amounts split by name are added up, and
/// one that does not add up is named by its part.
#[test]
fn partner_amounts_split_by_name_add_up() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/justeat/order-ready-for-preparation.json"
    ))
    .unwrap();
    let event = [("Orderhub-Path-Event", "order-ready-for-preparation-async")];
    let split = text
        .replace(
            "\"Tips\": 0,",
            "\"Tips\": { \"Driver\": 1.00, \"Restaurant\": \"0.50\" },",
        )
        .replace("\"TotalPrice\": 27.47", "\"TotalPrice\": 28.97");
    let d = delivery(
        Provider::Justeat,
        "acme-justeat",
        "wh-1",
        split.as_bytes(),
        &event,
    );
    let order = transformer::convert(&hub(), &d).unwrap();
    let totals = order.totals.unwrap();
    assert_eq!((totals.tip, totals.total), (150, 2897));

    let wrong = split.replace("\"0.50\"", "\"0.505\"");
    let d = delivery(
        Provider::Justeat,
        "acme-justeat",
        "wh-1",
        wrong.as_bytes(),
        &event,
    );
    assert_eq!(
        refuse(&d).to_string(),
        "invalid order: 2 problems: \
         PriceBreakdown.Tips.Restaurant: amount \"0.505\" has more than 2 decimal places; \
         totals.total: expected 2847 = subtotal + delivery_fee + service_fee + tip - discount (tax inclusive), got 2897"
    );
}

/// A provider's value is quoted, never copied whole: the error text is a
/// log line and a dead letter's error (issue 12, item 9).
#[test]
fn a_huge_value_is_cut_in_the_error_text() {
    let huge = "x".repeat(500_000);
    let body = format!(
        r#"{{"order_id":"T1","items":[{{"name":"Burger","quantity":"{huge}","price":10}}],"total_amount":10}}"#
    );
    let (class, text) = careem(&body);
    assert_eq!(class, "invalid_payload");
    assert!(text.len() < 1024, "{} bytes: {}", text.len(), &text[..200]);
    assert_eq!(
        text,
        format!(
            "payload does not parse: items[0].quantity: invalid value: string \"{}…\", expected an integer quantity (number or string) at line 1 column 500056",
            "x".repeat(64)
        )
    );
}

#[test]
fn thousands_of_problems_are_counted_not_listed() {
    let items: Vec<String> = (0..5000)
        .map(|i| format!(r#"{{"name":"Item {i}","quantity":0,"price":1}}"#))
        .collect();
    let body = format!(
        r#"{{"order_id":"T1","items":[{}],"total_amount":5000}}"#,
        items.join(",")
    );
    let e = refuse(&acme(Provider::Careem, body.as_bytes()));
    let ConvertError::Invalid { errors, .. } = &e else {
        panic!("{e}");
    };
    let n = errors.len();
    assert!(n >= 5000, "{n}");
    let text = e.to_string();
    assert!(text.len() < 4096, "{} bytes", text.len());
    assert!(
        text.starts_with(&format!(
            "invalid order: {n} problems: items[0].quantity: must be between 1 and 10000, got 0; "
        )),
        "{text}"
    );
    assert!(
        text.ends_with(&format!(
            "; and {} more",
            n - canonical::order::SHOWN_PROBLEMS
        )),
        "{text}"
    );
}
