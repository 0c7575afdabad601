//! The answering context a `created` order leaves for the way back
//! (`shared::answer::OrderContext`): what the provider handed over, the
//! deadline, the order API; nothing for updates and cancellations.

mod support;

use std::collections::BTreeMap;

use shared::Provider;
use shared::answer::{OrderContext, callback};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use support::*;

fn at(t: &str) -> OffsetDateTime {
    OffsetDateTime::parse(t, &Rfc3339).unwrap()
}

fn context(d: &shared::worker::Delivery) -> Option<OrderContext> {
    transformer::convert_with_hints(&hub(), d)
        .expect("the fixture converts")
        .context
}

const WOLT_V2: &[(&str, &str)] = &[
    ("Orderhub-Notification-Event", "CREATED"),
    ("Orderhub-Fetched-Api", "v2"),
];

#[test]
fn a_talabat_order_leaves_its_callback_urls_and_its_expiry() {
    let d = delivery(
        Provider::Talabat,
        "acme-talabat",
        "wh-tb-1",
        &fixture("talabat/order-created.json"),
        &[("Orderhub-Path-Remoteid", "kw-salmiya-01")],
    );
    let base = "https://integration-middleware.example.invalid/v2/order/status/8c1e4b7a-2f3d-4e5a-9b6c-7d8e9f0a1b2c";
    let callbacks: BTreeMap<String, String> = [
        (callback::ACCEPTED, "accepted"),
        (callback::REJECTED, "rejected"),
        (callback::PICKED_UP, "picked-up"),
        (callback::PREPARED, "prepared"),
        ("orderProductModificationUrl", "product-modification"),
        ("orderPreparationTimeAdjustmentUrl", "preparation-time"),
    ]
    .into_iter()
    .map(|(name, tail)| (name.to_owned(), format!("{base}/{tail}")))
    .collect();
    assert_eq!(
        context(&d),
        Some(OrderContext {
            // The first store id candidate: the remoteId of the URL.
            store_id: Some("kw-salmiya-01".into()),
            pickup: false,
            tenant: "acme".into(),
            provider: Provider::Talabat,
            account: "acme-talabat".into(),
            provider_order_id: "tb-kw-2f3d-4e5a".into(),
            webhook_id: "wh-tb-1".into(),
            display_code: Some("8842".into()),
            received_at: at("2024-06-14T18:00:00Z"),
            answer_by: at("2024-06-14T17:15:12Z"),
            api: None,
            callbacks,
            // No riderPickupTime: the restaurant delivers it.
            self_delivery: true,
            preorder: false,
        })
    );
}

#[test]
fn a_talabat_order_without_expiry_or_callbacks_gets_the_account_deadline() {
    let mut body: serde_json::Value =
        serde_json::from_slice(&fixture("talabat/order-created.json")).unwrap();
    let o = body.as_object_mut().unwrap();
    o.remove("expiryDate");
    // Non-string values are no URL to call.
    o.insert(
        "callbackUrls".into(),
        serde_json::json!({"orderAcceptedUrl": 7, "orderRejectedUrl": null}),
    );
    let d = delivery(
        Provider::Talabat,
        "acme-talabat",
        "wh-tb-2",
        &serde_json::to_vec(&body).unwrap(),
        &[("Orderhub-Path-Remoteid", "kw-salmiya-01")],
    );
    let ctx = context(&d).unwrap();
    // acme-talabat has no [account.api]: 15 minutes.
    assert_eq!(ctx.answer_by, at("2024-06-14T18:15:00Z"));
    assert!(ctx.callbacks.is_empty(), "{:?}", ctx.callbacks);
}

#[test]
fn a_wolt_fetched_order_names_its_api_and_wolts_deadline() {
    let d = fetched(
        Provider::Wolt,
        &fixture("wolt/fetched/v2-order-created.json"),
        WOLT_V2,
    );
    let converted = transformer::convert_with_hints(&hub(), &d).unwrap();
    let ctx = converted.context.unwrap();
    assert_eq!(ctx.api.as_deref(), Some("v2"));
    assert_eq!(ctx.account, "acme-wolt");
    assert_eq!(ctx.provider_order_id, "66b2a1d3c4e5f60718293a4b");
    assert_eq!(ctx.display_code, converted.order.display_code);
    // Wolt's 3 minutes from when the hub received it.
    assert_eq!(ctx.answer_by, at("2024-06-14T18:03:00Z"));
    assert!(!ctx.self_delivery && !ctx.preorder);
    assert!(ctx.callbacks.is_empty());
}

#[test]
fn wolt_self_delivery_and_pre_orders_are_told() {
    let text = String::from_utf8(fixture("wolt/fetched/v2-order-created.json")).unwrap();
    assert!(text.contains("\"self_delivery\": false"));
    let own = text.replace("\"self_delivery\": false", "\"self_delivery\": true");
    let d = fetched(Provider::Wolt, own.as_bytes(), WOLT_V2);
    let ctx = context(&d).unwrap();
    assert!(ctx.self_delivery && !ctx.preorder);

    let d = fetched(
        Provider::Wolt,
        &fixture("wolt/fetched/v2-takeaway.json"),
        WOLT_V2,
    );
    let ctx = context(&d).unwrap();
    assert!(ctx.preorder && !ctx.self_delivery);
}

#[test]
fn an_uber_eats_order_names_its_api() {
    for (file, api, event) in [
        (
            "ubereats/fetched/v2-order-created.json",
            "v2",
            "orders.notification",
        ),
        (
            "ubereats/fetched/v1-order-created.json",
            "v1",
            "orders.notification",
        ),
    ] {
        let d = fetched(
            Provider::Ubereats,
            &fixture(file),
            &[
                ("Orderhub-Notification-Event", event),
                ("Orderhub-Fetched-Api", api),
            ],
        );
        let ctx = context(&d).unwrap_or_else(|| panic!("{file}: no context"));
        assert_eq!(ctx.api.as_deref(), Some(api), "{file}");
        // 11.5 minutes.
        assert_eq!(ctx.answer_by, at("2024-06-14T18:11:30Z"), "{file}");
    }
}

#[test]
fn updates_and_cancellations_leave_no_context() {
    let d = delivery(
        Provider::Talabat,
        "acme-talabat",
        "wh-tb-3",
        &fixture("talabat/status-cancelled.json"),
        &[
            ("Orderhub-Path-Remoteid", "kw-salmiya-01"),
            ("Orderhub-Path-Remoteorderid", "wh-tb-1"),
        ],
    );
    assert_eq!(context(&d), None);
    let d = delivery(
        Provider::Talabat,
        "acme-talabat",
        "wh-tb-4",
        &fixture("talabat/status-modified.json"),
        &[
            ("Orderhub-Path-Remoteid", "kw-salmiya-01"),
            ("Orderhub-Path-Remoteorderid", "wh-tb-1"),
        ],
    );
    let converted = transformer::convert_with_hints(&hub(), &d).unwrap();
    assert_eq!(converted.order.event, canonical::order::Event::Updated);
    assert_eq!(converted.context, None);
    let d = fetched(
        Provider::Wolt,
        &fixture("wolt/fetched/v2-order-canceled.json"),
        &[
            ("Orderhub-Notification-Event", "CANCELED"),
            ("Orderhub-Fetched-Api", "v2"),
        ],
    );
    assert_eq!(context(&d), None);
}

/// The store id each provider's calls name, and who delivers.
#[test]
fn doordash_glovo_grab_and_keeta_orders_name_their_store() {
    let cases: [(Provider, &str, &str, bool, bool); 7] = [
        // DoorDash's calls name the order only: the store is the branch id.
        (
            Provider::Doordash,
            "doordash/order-created.json",
            "CG-SFO-MISSION",
            true,
            false,
        ),
        (
            Provider::Doordash,
            "doordash/pickup-merchant-tip.json",
            "CG-SFO-MISSION",
            false,
            true,
        ),
        // A marketplace order: the restaurant delivers.
        (
            Provider::Glovo,
            "glovo/order-created.json",
            "cedar-grill-bcn-gracia",
            true,
            false,
        ),
        (
            Provider::Glovo,
            "glovo/pickup-cash-offset.json",
            "cedar-grill-bcn-sants",
            false,
            true,
        ),
        // Grab's own merchantID, not our partnerMerchantID.
        (
            Provider::Grab,
            "grab/order-created.json",
            "1-CYNGRUNGSBCCC",
            true,
            false,
        ),
        (
            Provider::Grab,
            "grab/order-created-vnd.json",
            "5-C2LEVJRVFFDUAX",
            false,
            false,
        ),
        (
            Provider::Keeta,
            "keeta/self-delivery-bare.json",
            "145541",
            true,
            false,
        ),
    ];
    for (provider, file, store, own, pickup) in cases {
        let d = delivery(
            provider,
            &format!("acme-{provider}"),
            "wh-1",
            &fixture(file),
            &[],
        );
        let ctx = context(&d).unwrap_or_else(|| panic!("{file}: no context"));
        assert_eq!(
            (ctx.store_id.as_deref(), ctx.self_delivery, ctx.pickup),
            (Some(store), own, pickup),
            "{file}"
        );
    }
    let d = acme(Provider::Keeta, &fixture("keeta/order-created.json"));
    let ctx = context(&d).unwrap();
    assert_eq!(ctx.store_id.as_deref(), Some("145541"));
    assert_eq!(ctx.provider_order_id, "553440887574627");
    assert!(!ctx.self_delivery);
    // Keeta cancels after 5 minutes, but the account has no
    // [account.api]: the default 15 minutes apply.
    assert_eq!(ctx.answer_by, at("2024-06-14T18:15:00Z"));
}

#[test]
fn their_cancellations_and_status_updates_leave_no_context() {
    for (provider, file) in [
        (Provider::Doordash, "doordash/order-cancelled.json"),
        (Provider::Doordash, "doordash/dasher-arrived.json"),
        (Provider::Glovo, "glovo/order-cancelled.json"),
        (Provider::Grab, "grab/order-state-cancelled.json"),
        (Provider::Keeta, "keeta/order-accepted.json"),
        (Provider::Keeta, "keeta/order-cancelled.json"),
    ] {
        assert_eq!(context(&acme(provider, &fixture(file))), None, "{file}");
    }
}
