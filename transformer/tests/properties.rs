//! Property tests over generated payloads: the lines and their modifiers
//! add up to the subtotal in minor units, exactly, whichever way the
//! provider writes its decimals; and converting twice gives the same order.

mod support;

use canonical::order::Item;
use proptest::prelude::*;
use shared::Provider;

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
        let order = match transformer::convert(&support::hub(), &d) {
            Ok(o) => o,
            Err(e) => return Err(TestCaseError::fail(format!("{e}\n{body}"))),
        };
        assert_lines(&order.items, &lines)?;
        let totals = order.totals.as_ref().unwrap();
        prop_assert_eq!(totals.subtotal, subtotal);
        prop_assert_eq!(order.items.iter().map(|i| i.total).sum::<i64>(), subtotal);
        prop_assert_eq!(totals.total, total);
        // Converting twice gives the same order, byte for byte.
        let again = transformer::convert(&support::hub(), &d).unwrap();
        prop_assert_eq!(serde_json::to_string(&again).unwrap(), serde_json::to_string(&order).unwrap());
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
        let order = match transformer::convert(&support::hub(), &d) {
            Ok(o) => o,
            Err(e) => return Err(TestCaseError::fail(format!("{e}\n{body}"))),
        };
        assert_lines(&order.items, &lines)?;
        let totals = order.totals.as_ref().unwrap();
        prop_assert_eq!(totals.subtotal, subtotal);
        prop_assert_eq!(order.items.iter().map(|i| i.total).sum::<i64>(), subtotal);
        prop_assert_eq!(totals.total, total);
        let again = transformer::convert(&support::hub(), &d).unwrap();
        prop_assert_eq!(serde_json::to_string(&again).unwrap(), serde_json::to_string(&order).unwrap());
    }
}
