//! Property tests over generated payloads: the lines and their modifiers
//! add up to the subtotal in minor units, exactly, whichever way the
//! provider writes its decimals (or Uber its `amount_e5`); and converting
//! twice gives the same order.

mod support;

use canonical::money::format_minor_units;
use canonical::order::{Item, Order};
use proptest::prelude::*;
use shared::Provider;
use shared::headers::{FETCHED_API, NOTIFICATION_EVENT};
use shared::worker::Delivery;

/// A line as generated: minor units, quantity, modifiers below.
#[derive(Debug, Clone)]
struct Line {
    price: i64,
    quantity: u32,
    modifiers: Vec<Line>,
}

impl Line {
    /// `(price + Σ modifier totals) × quantity`, computed wide.
    fn total(&self) -> i128 {
        let m: i128 = self.modifiers.iter().map(Line::total).sum();
        (i128::from(self.price) + m) * i128::from(self.quantity)
    }
}

fn line(depth: u32) -> BoxedStrategy<Line> {
    let top = depth == 2;
    let price = if top { 0_i64..200_000 } else { 0_i64..20_000 };
    let quantity = if top { 1_u32..=20 } else { 1_u32..=3 };
    let modifiers = if depth == 0 {
        Just(Vec::new()).boxed()
    } else {
        prop::collection::vec(line(depth - 1), 0..3).boxed()
    };
    (price, quantity, modifiers)
        .prop_map(|(price, quantity, modifiers)| Line {
            price,
            quantity,
            modifiers,
        })
        .boxed()
}

/// Minor units of a 3-decimal currency written the ways providers write
/// them: a JSON number with all three decimals, a trimmed number (`2.5`),
/// a string, or an exponent.
fn write_amount(minor: i64, style: u8) -> String {
    let exact = format!("{}.{:03}", minor / 1000, minor % 1000);
    match style % 5 {
        0 => exact,
        1 => {
            let t = exact.trim_end_matches('0').trim_end_matches('.');
            t.to_owned()
        }
        2 => format!("\"{exact}\""),
        3 => format!("{minor}e-3"),
        _ => format!("\"{}0\"", exact), // an extra zero: "2.6750"
    }
}

fn careem_items(lines: &[Line], styles: &mut impl Iterator<Item = u8>, key: &str) -> String {
    let parts: Vec<String> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            format!(
                r#"{{"id":"p{i}","name":"صنف {i}","quantity":{},"price":{},"{key}":[{}]}}"#,
                l.quantity,
                write_amount(l.price, styles.next().unwrap()),
                careem_items(&l.modifiers, styles, key)
            )
        })
        .collect();
    parts.join(",")
}

/// The converted lines match the generated ones, totals included.
fn assert_lines(got: &[Item], want: &[Line]) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        prop_assert_eq!(g.unit_price, w.price);
        prop_assert_eq!(g.quantity, w.quantity);
        prop_assert_eq!(i128::from(g.total), w.total());
        assert_lines(&g.modifiers, &w.modifiers)?;
    }
    Ok(())
}

/// The order `d` converts to (refused: a failure naming the body); and
/// converting it again gives the same order, byte for byte.
fn converted(d: &Delivery, body: &str) -> Result<Order, TestCaseError> {
    let order = transformer::convert(&support::hub(), d)
        .map_err(|e| TestCaseError::fail(format!("{e}\n{body}")))?;
    let again = transformer::convert(&support::hub(), d).unwrap();
    prop_assert_eq!(
        serde_json::to_string(&again).unwrap(),
        serde_json::to_string(&order).unwrap()
    );
    Ok(order)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn careem_decimals_add_up_exactly(
        lines in prop::collection::vec(line(2), 1..5),
        styles in prop::collection::vec(any::<u8>(), 64),
        delivery in 0_i64..5_000,
        tip in 0_i64..5_000,
        discount_permille in 0_i64..=1_000,
    ) {
        let mut styles = styles.into_iter().cycle();
        let subtotal: i128 = lines.iter().map(Line::total).sum();
        let subtotal = i64::try_from(subtotal).unwrap();
        let discount = (subtotal + delivery) * discount_permille / 1_000;
        let total = subtotal + delivery + tip - discount;
        let body = format!(
            r#"{{"order_id":"P1","items":[{}],"delivery_fee":{},"tip":{},"discount":{},"total_amount":{}}}"#,
            careem_items(&lines, &mut styles, "modifiers"),
            write_amount(delivery, styles.next().unwrap()),
            write_amount(tip, styles.next().unwrap()),
            write_amount(discount, styles.next().unwrap()),
            write_amount(total, styles.next().unwrap()),
        );
        let d = support::acme(Provider::Careem, body.as_bytes());
        let order = converted(&d, &body)?;
        assert_lines(&order.items, &lines)?;
        let totals = order.totals.as_ref().unwrap();
        prop_assert_eq!(totals.subtotal, subtotal);
        prop_assert_eq!(order.items.iter().map(|i| i.total).sum::<i64>(), subtotal);
        prop_assert_eq!(totals.total, total);
    }

    /// Talabat: toppings priced "based on quantity" (their price covers
    /// their own quantity), decimal strings, product quantities as strings.
    #[test]
    fn talabat_toppings_add_up_exactly(
        lines in prop::collection::vec(line(2), 1..5),
        delivery in 0_i64..2_000,
        discount_permille in 0_i64..=500,
    ) {
        fn fils(minor: i64) -> String {
            format!("\"{}.{:03}\"", minor / 1000, minor % 1000)
        }
        fn toppings(lines: &[Line]) -> String {
            lines
                .iter()
                .enumerate()
                .map(|(j, t)| {
                    format!(
                        r#"{{"remoteCode":"t{j}","name":"إضافة {j}","price":{},"quantity":{},"children":[{}]}}"#,
                        fils(t.price * i64::from(t.quantity)),
                        t.quantity,
                        toppings(&t.modifiers)
                    )
                })
                .collect::<Vec<_>>()
                .join(",")
        }
        let products: Vec<String> = lines
            .iter()
            .enumerate()
            .map(|(i, l)| {
                format!(
                    r#"{{"remoteCode":"p{i}","name":"Dish {i}","quantity":"{}","unitPrice":{},"paidPrice":{},"selectedToppings":[{}]}}"#,
                    l.quantity,
                    fils(l.price),
                    fils(l.price * i64::from(l.quantity)),
                    toppings(&l.modifiers)
                )
            })
            .collect();
        let subtotal = i64::try_from(lines.iter().map(Line::total).sum::<i128>()).unwrap();
        let discount = (subtotal + delivery) * discount_permille / 1_000;
        let total = subtotal + delivery - discount;
        let body = format!(
            r#"{{"code":"tb-1","createdAt":"2024-06-14T17:05:12.000Z","expeditionType":"pickup","localInfo":{{"countryCode":"KW","decimalDigits":"3"}},"products":[{}],"discounts":[{{"name":"promo","amount":{},"sponsorships":[]}}],"price":{{"subTotal":{},"deliveryFee":{},"vatTotal":"0.000","riderTip":"","grandTotal":{},"collectFromCustomer":"0.000"}}}}"#,
            products.join(","),
            fils(discount),
            fils(subtotal),
            fils(delivery),
            fils(total),
        );
        let d = support::acme(Provider::Talabat, body.as_bytes());
        let order = converted(&d, &body)?;
        assert_lines(&order.items, &lines)?;
        let totals = order.totals.as_ref().unwrap();
        prop_assert_eq!(totals.subtotal, subtotal);
        prop_assert_eq!(order.items.iter().map(|i| i.total).sum::<i64>(), subtotal);
        prop_assert_eq!(totals.total, total);
    }

    /// Uber Eats' Order Fulfillment API: money as `amount_e5` (integers or
    /// strings) in currencies of 0, 2 and 3 decimals, prices in the
    /// payment's breakdown by cart item, nested modifiers; wrapped or bare.
    #[test]
    fn uber_amount_e5_adds_up_exactly(
        lines in prop::collection::vec(line(2), 1..5),
        currency in 0_usize..3,
        as_strings in any::<bool>(),
        wrapped in any::<bool>(),
        delivery in 0_i64..2_000,
        tip in 0_i64..2_000,
        discount_permille in 0_i64..=500,
    ) {
        let (code, exp) = [("JPY", 0_u32), ("USD", 2), ("KWD", 3)][currency];
        let e5 = |minor: i64| {
            let v = minor * 10_i64.pow(5 - exp);
            if as_strings { format!("\"{v}\"") } else { v.to_string() }
        };
        let money = |minor: i64| format!(r#"{{"gross":{{"amount_e5":{},"currency_code":"{code}"}}}}"#, e5(minor));
        fn cart(lines: &[Line], prefix: &str, prices: &mut Vec<(String, i64)>) -> String {
            lines
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    let id = format!("{prefix}{i}");
                    prices.push((id.clone(), l.price));
                    format!(
                        r#"{{"id":"{id}","cart_item_id":"{id}","title":"Dish {id}","quantity":{{"amount":{}}},"selected_modifier_groups":[{{"selected_items":[{}]}}]}}"#,
                        l.quantity,
                        cart(&l.modifiers, &format!("{id}-"), prices)
                    )
                })
                .collect::<Vec<_>>()
                .join(",")
        }
        let mut prices = Vec::new();
        let items = cart(&lines, "c", &mut prices);
        let breakdown: Vec<String> = prices
            .iter()
            .map(|(id, price)| format!(r#"{{"cart_item_id":"{id}","unit":{}}}"#, money(*price)))
            .collect();
        let subtotal = i64::try_from(lines.iter().map(Line::total).sum::<i128>()).unwrap();
        let discount = (subtotal + delivery) * discount_permille / 1_000;
        let total = subtotal + delivery + tip - discount;
        let order = format!(
            r#"{{"id":"u-1","state":"OFFERED","created_time":"2024-06-14T18:00:00Z","carts":[{{"items":[{items}]}}],"payment":{{"payment_detail":{{"currency_code":"{code}","order_total":{{"gross":{{"amount_e5":{}}},"is_tax_inclusive":true}},"item_charges":{{"total":{},"price_breakdown":[{}]}},"fees":{{"total":{},"details":[{{"id":"DELIVERY_FEE","amount":{}}}]}},"tips":{{"total":{}}},"promotions":{{"total":{}}}}}}}}}"#,
            e5(total),
            money(subtotal),
            breakdown.join(","),
            money(delivery),
            money(delivery),
            money(tip),
            money(-discount),
        );
        let body = if wrapped { format!(r#"{{"order":{order}}}"#) } else { order };
        let d = support::fetched(
            Provider::Ubereats,
            body.as_bytes(),
            &[(NOTIFICATION_EVENT, "orders.notification"), (FETCHED_API, "v1")],
        );
        let order = converted(&d, &body)?;
        assert_lines(&order.items, &lines)?;
        prop_assert_eq!(order.currency.map(|c| c.code()), Some(code));
        let totals = order.totals.as_ref().unwrap();
        prop_assert_eq!(
            (totals.subtotal, totals.delivery_fee, totals.tip, totals.discount, totals.total),
            (subtotal, delivery, tip, discount, total)
        );
    }

    /// An `amount_e5` that is not a whole number of the currency's minor
    /// units is refused at its path, never rounded.
    #[test]
    fn uber_amount_e5_below_the_minor_unit_is_refused(
        minor in 0_i64..1_000_000,
        currency in 0_usize..3,
        rest in 1_i64..100_000,
    ) {
        let (code, exp) = [("JPY", 0_u32), ("USD", 2), ("KWD", 3)][currency];
        let unit = 10_i64.pow(5 - exp);
        prop_assume!(rest % unit != 0);
        let e5 = minor * unit + rest % unit;
        let body = format!(
            r#"{{"id":"u-2","state":"OFFERED","carts":[{{"items":[{{"cart_item_id":"a","title":"Tea","quantity":{{"amount":1}}}}]}}],"payment":{{"payment_detail":{{"currency_code":"{code}","order_total":{{"gross":{{"amount_e5":{e5}}}}},"item_charges":{{"price_breakdown":[{{"cart_item_id":"a","unit":{{"net":{{"amount_e5":{}}}}}}}]}}}}}}}}"#,
            minor * unit,
        );
        let d = support::fetched(Provider::Ubereats, body.as_bytes(), &[]);
        let e = transformer::convert(&support::hub(), &d).unwrap_err();
        prop_assert_eq!(e.class().as_str(), "invalid_payload");
        let text = e.to_string();
        let want = format!(
            "payment.payment_detail.order_total.gross.amount_e5: amount \"{}\" has more than {exp} decimal places",
            format_minor_units(e5, 5)
        );
        prop_assert!(text.contains(&want), "{} lacks {}", text, want);
    }

    /// Wolt v2: options nested in options, each priced for one and counted
    /// per unit of its parent; the item's unit price includes its options.
    #[test]
    fn wolt_v2_options_add_up_exactly(
        lines in prop::collection::vec(line(2), 1..5),
        delivery in 0_i64..1_000,
        discount_permille in 0_i64..=300,
    ) {
        fn eur(minor: i64) -> String {
            format!(r#"{{"amount":{minor},"currency":"EUR"}}"#)
        }
        fn options(lines: &[Line]) -> String {
            lines
                .iter()
                .enumerate()
                .map(|(j, o)| {
                    format!(
                        r#"{{"id":"o{j}","name":"Choice","value":"Valinta {j}","value_pos_id":"v{j}","count":{},"price_breakdown":{{"unit_price":{}}},"options":[{}]}}"#,
                        o.quantity,
                        eur(o.price),
                        options(&o.modifiers)
                    )
                })
                .collect::<Vec<_>>()
                .join(",")
        }
        let items: Vec<String> = lines
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let per_unit = i64::try_from(l.total()).unwrap() / i64::from(l.quantity);
                format!(
                    r#"{{"id":"i{i}","name":"Ruoka {i}","count":{},"item_price":{{"unit_price":{},"total":{}}},"options":[{}]}}"#,
                    l.quantity,
                    eur(per_unit),
                    eur(i64::try_from(l.total()).unwrap()),
                    options(&l.modifiers)
                )
            })
            .collect();
        let subtotal = i64::try_from(lines.iter().map(Line::total).sum::<i128>()).unwrap();
        let discount = subtotal * discount_permille / 1_000;
        let body = format!(
            r#"{{"id":"w-1","order_status":"received","created_at":"2024-06-14T17:00:00Z","venue":{{"id":"v"}},"delivery":{{"type":"homedelivery"}},"basket_price":{{"total":{},"price_breakdown":{{"total_before_discounts":{},"total_discounts":{}}}}},"fees":{{"total":{},"parts":[{{"type":"DELIVERY_FEE","total":{}}}]}},"items":[{}]}}"#,
            eur(subtotal - discount),
            eur(subtotal),
            eur(discount),
            eur(delivery),
            eur(delivery),
            items.join(","),
        );
        let d = support::fetched(Provider::Wolt, body.as_bytes(), &[]);
        let order = converted(&d, &body)?;
        assert_lines(&order.items, &lines)?;
        let totals = order.totals.as_ref().unwrap();
        prop_assert_eq!(
            (totals.subtotal, totals.delivery_fee, totals.discount, totals.total),
            (subtotal, delivery, discount, subtotal - discount + delivery)
        );
    }

    /// DoorDash: integer cents, options one group each under `extras` or
    /// `extra`, counted per unit of their parent, and the grand total it
    /// does not send computed (tax on top).
    #[test]
    fn doordash_options_add_up_and_its_total_is_computed(
        lines in prop::collection::vec(line(2), 1..5),
        extra in any::<bool>(),
        tax in 0_i64..5_000,
        delivery in 0_i64..1_000,
        tip in 0_i64..2_000,
    ) {
        fn groups(lines: &[Line], key: &str) -> String {
            let parts: Vec<String> = lines
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    format!(
                        r#"{{"name":"g{i}","options":[{{"merchant_supplied_id":"o{i}","name":"Option {i}","quantity":{},"price":{},"{key}":[{}]}}]}}"#,
                        l.quantity,
                        l.price,
                        groups(&l.modifiers, key)
                    )
                })
                .collect();
            parts.join(",")
        }
        let key = if extra { "extra" } else { "extras" };
        let items: Vec<String> = lines
            .iter()
            .enumerate()
            .map(|(i, l)| {
                format!(
                    r#"{{"merchant_supplied_id":"i{i}","name":"Item {i}","quantity":{},"price":{},"{key}":[{}]}}"#,
                    l.quantity,
                    l.price,
                    groups(&l.modifiers, key)
                )
            })
            .collect();
        let subtotal = i64::try_from(lines.iter().map(Line::total).sum::<i128>()).unwrap();
        let body = format!(
            r#"{{"event":{{"type":"OrderCreate"}},"order":{{"id":"P1","categories":[{{"items":[{}]}}],"subtotal":{subtotal},"tax":{tax},"delivery_fee":{delivery},"tip_amount":{tip}}}}}"#,
            items.join(",")
        );
        let d = support::acme(Provider::Doordash, body.as_bytes());
        let order = converted(&d, &body)?;
        assert_lines(&order.items, &lines)?;
        let t = order.totals.as_ref().unwrap();
        prop_assert_eq!(t.subtotal, subtotal);
        prop_assert_eq!(t.total, subtotal + tax + delivery + tip);
    }

    /// Grab: an item's price is one unit WITH its modifiers; the canonical
    /// unit price is what is left, in VND (exponent 0) or SGD (2).
    #[test]
    fn grab_prices_with_their_modifiers_split_exactly(
        lines in prop::collection::vec(line(1), 1..5),
        vnd in any::<bool>(),
        promo_permille in 0_i64..=1_000,
    ) {
        let items: Vec<String> = lines
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let mods: Vec<String> = l
                    .modifiers
                    .iter()
                    .enumerate()
                    .map(|(j, m)| format!(r#"{{"id":"m{i}-{j}","price":{},"quantity":{}}}"#, m.price, m.quantity))
                    .collect();
                let with: i64 = l.modifiers.iter().map(|m| m.price * i64::from(m.quantity)).sum();
                format!(
                    r#"{{"id":"i{i}","quantity":{},"price":{},"modifiers":[{}]}}"#,
                    l.quantity,
                    l.price + with,
                    mods.join(",")
                )
            })
            .collect();
        let subtotal = i64::try_from(lines.iter().map(Line::total).sum::<i128>()).unwrap();
        let promo = subtotal * promo_permille / 1_000;
        let (code, exponent) = if vnd { ("VND", 0) } else { ("SGD", 2) };
        let body = format!(
            r#"{{"orderID":"G1","merchantID":"m","currency":{{"code":"{code}","exponent":{exponent}}},"featureFlags":{{"orderType":"DeliveredByGrab"}},"items":[{}],"price":{{"subtotal":{subtotal},"merchantFundPromo":{promo},"deliveryFee":0,"eaterPayment":0,"total":{}}}}}"#,
            items.join(","),
            subtotal - promo
        );
        let d = support::acme(Provider::Grab, body.as_bytes());
        let order = converted(&d, &body)?;
        assert_lines(&order.items, &lines)?;
        prop_assert_eq!(order.currency.map(|c| c.code()), Some(code));
        prop_assert_eq!(order.totals.as_ref().unwrap().total, subtotal - promo);
    }
}
