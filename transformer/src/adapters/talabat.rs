//! Talabat (Delivery Hero POS middleware): the plugin's two webhooks.
//!
//! - `POST /order/{remoteId}`: a new order (the ingress passes `remoteId` as
//!   `Orderhub-Path-Remoteid`) → `created`.
//! - `PUT /remoteId/{remoteId}/remoteOrder/{remoteOrderId}/posOrderStatus`:
//!   `{status, message, updatedOrder?}` (`Orderhub-Path-Remoteorderid`) →
//!   `ORDER_CANCELLED` is `cancelled` (reason: `message`);
//!   `ORDER_PICKED_UP`, `COURIER_ARRIVED_AT_VENDOR`,
//!   `PRODUCT_ORDER_MODIFICATION_FAILED` and statuses added later are
//!   `updated` with the state they name (or `other`);
//!   `PRODUCT_ORDER_MODIFICATION_SUCCESSFUL` is `updated`/`modified` and
//!   carries the whole `updatedOrder`.
//!
//! Told apart by the `Orderhub-Path-Remoteorderid` header, or, without it,
//! by the body (an order has `code`; a status update has `status`).
//!
//! Ids: an order's `provider_order_id` is its `code`. A status update
//! carries no order code, only the `remoteOrderId` our plugin answered for
//! the order; its `provider_order_id` is that `remoteOrderId`, verbatim. The
//! ingress answers the order webhook's hub id, so today a status update's
//! `provider_order_id` equals the `webhook_id` of the order it is about
//! (the backend links them by it); should the plugin answer the `code`
//! instead, both ids would match with no change here. The branch comes from
//! `remoteId` (our id for the vendor), else `platformRestaurant.id`.
//!
//! Money: decimal strings in major units (`"1.250"` KWD), some fields JSON
//! numbers, `""` for unset. The payload has no ISO currency: the account's
//! `currency`, else the one of `localInfo.countryCode`; `decimalDigits` must
//! agree with it. Following Talabat's price mapping: `unitPrice` is one unit
//! without toppings or discounts (`paidPrice` = `unitPrice × quantity`, not
//! read); a topping's `price` is for its own `quantity` ("based on
//! quantity") and per one unit of the product, as the canonical modifier is.
//! Item-level discounts are repeated in the top-level `discounts`, which are
//! the ones read, once per sponsor (`VENDOR` → merchant). `subTotal`,
//! `deliveryFee`, `serviceFeeTotal` + `containerCharge` (fees),
//! `vatTotal`, `riderTip` and `grandTotal` map one to one; the order check
//! proves the interpretation on every order (Σ lines = `subTotal`, and the
//! grand total adds up). Tax counts as included when `grandTotal` adds up
//! without `vatTotal` (Gulf menus are VAT-inclusive).
//!
//! Answering (the order context, not the canonical order): a new order's
//! `expiryDate` is its deadline to accept or reject, and its
//! `callbackUrls` the URLs the status worker calls.
//!
//! A product's `variation` (size) is appended to its name in parentheses
//! when it differs from the name. `selectedChoices` are read like toppings.

use std::collections::BTreeMap;

use canonical::money::{Currency, Decimal, empty_as_none};
use canonical::order::{
    Address, Courier, Discount, Event, Fee, Fulfilment, FulfilmentType, Funder, Item, Order,
    OrderState, Payment, PaymentMethod, ProblemKind, Status, Totals,
};
use serde::Deserialize;
use serde::de::IgnoredAny;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{Adapter, Coord, Id, coords, event_of, tax_inclusive};
use crate::convert::{
    self, AnswerHints, ConvertError, Draft, Input, Money, Problems, Quantity, excerpt, join,
    quantity, text,
};

pub struct Talabat;

/// Currencies of Delivery Hero's Middle East markets, for accounts that do
/// not configure one.
const MARKET_CURRENCIES: &[(&str, &str)] = &[
    ("AE", "AED"),
    ("BH", "BHD"),
    ("EG", "EGP"),
    ("IQ", "IQD"),
    ("JO", "JOD"),
    ("KW", "KWD"),
    ("OM", "OMR"),
    ("QA", "QAR"),
    ("SA", "SAR"),
];

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OrderIn {
    code: String,
    #[serde(default)]
    short_code: Option<String>,
    #[serde(default)]
    created_at: Option<String>,
    /// Until when Talabat takes an accept or a reject (the order context).
    #[serde(default)]
    expiry_date: Option<String>,
    /// The order's own status URLs by name (the order context); any JSON,
    /// of which string values are kept.
    #[serde(default)]
    callback_urls: Option<serde_json::Value>,
    #[serde(default)]
    pre_order: bool,
    #[serde(default)]
    test: bool,
    #[serde(default)]
    expedition_type: Option<String>,
    #[serde(default)]
    local_info: Option<LocalInfo>,
    #[serde(default)]
    platform_restaurant: Option<Restaurant>,
    #[serde(default)]
    customer: Option<CustomerIn>,
    #[serde(default)]
    comments: Option<Comments>,
    #[serde(default)]
    payment: Option<PaymentIn>,
    #[serde(default)]
    delivery: Option<DeliveryIn>,
    #[serde(default)]
    pickup: Option<PickupIn>,
    products: Vec<Product>,
    #[serde(default)]
    discounts: Vec<DiscountIn>,
    price: PriceIn,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LocalInfo {
    #[serde(default)]
    country_code: Option<String>,
    #[serde(default)]
    decimal_digits: Option<Id>,
}

#[derive(Deserialize)]
struct Restaurant {
    #[serde(default)]
    id: Option<Id>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CustomerIn {
    #[serde(default)]
    first_name: Option<String>,
    #[serde(default)]
    last_name: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    mobile_phone: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Comments {
    #[serde(default)]
    customer_comment: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PaymentIn {
    #[serde(default)]
    status: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    remote_code: Option<String>,
    #[serde(default, deserialize_with = "empty_as_none")]
    required_money_change: Option<Decimal>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeliveryIn {
    #[serde(default)]
    expected_delivery_time: Option<String>,
    #[serde(default)]
    rider_pickup_time: Option<String>,
    #[serde(default)]
    address: Option<AddressIn>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PickupIn {
    #[serde(default)]
    pickup_time: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AddressIn {
    #[serde(default)]
    line1: Option<String>,
    #[serde(default)]
    line2: Option<String>,
    #[serde(default)]
    line3: Option<String>,
    #[serde(default)]
    line4: Option<String>,
    #[serde(default)]
    line5: Option<String>,
    #[serde(default)]
    street: Option<String>,
    #[serde(default)]
    number: Option<String>,
    #[serde(default)]
    building: Option<String>,
    #[serde(default)]
    floor: Option<String>,
    #[serde(default)]
    flat_number: Option<String>,
    #[serde(default)]
    room: Option<String>,
    #[serde(default)]
    entrance: Option<String>,
    #[serde(default)]
    intercom: Option<String>,
    #[serde(default)]
    company: Option<String>,
    #[serde(default)]
    other: Option<String>,
    #[serde(default)]
    district: Option<String>,
    #[serde(default)]
    city: Option<String>,
    #[serde(default)]
    postcode: Option<String>,
    #[serde(default)]
    delivery_area: Option<String>,
    #[serde(default)]
    delivery_instructions: Option<String>,
    #[serde(default)]
    latitude: Option<Coord>,
    #[serde(default)]
    longitude: Option<Coord>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Product {
    #[serde(default)]
    id: Option<Id>,
    #[serde(default)]
    remote_code: Option<String>,
    #[serde(default)]
    sku: Option<String>,
    name: String,
    #[serde(default)]
    variation: Option<Variation>,
    #[serde(default)]
    quantity: Quantity,
    #[serde(default, deserialize_with = "empty_as_none")]
    unit_price: Option<Decimal>,
    #[serde(default, deserialize_with = "empty_as_none")]
    paid_price: Option<Decimal>,
    #[serde(default)]
    comment: Option<String>,
    #[serde(default)]
    selected_toppings: Vec<Topping>,
    #[serde(default)]
    selected_choices: Vec<Topping>,
}

#[derive(Deserialize)]
struct Variation {
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Topping {
    #[serde(default)]
    id: Option<Id>,
    #[serde(default)]
    remote_code: Option<String>,
    #[serde(default)]
    sku: Option<String>,
    name: String,
    #[serde(default, deserialize_with = "empty_as_none")]
    price: Option<Decimal>,
    #[serde(default)]
    quantity: Quantity,
    #[serde(default)]
    children: Vec<Topping>,
}

#[derive(Deserialize)]
struct DiscountIn {
    #[serde(default)]
    name: Option<String>,
    #[serde(default, deserialize_with = "empty_as_none")]
    amount: Option<Decimal>,
    #[serde(default)]
    sponsorships: Vec<Sponsorship>,
}

#[derive(Deserialize)]
struct Sponsorship {
    #[serde(default)]
    sponsor: Option<String>,
    #[serde(default, deserialize_with = "empty_as_none")]
    amount: Option<Decimal>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PriceIn {
    sub_total: Decimal,
    #[serde(default, deserialize_with = "empty_as_none")]
    delivery_fee: Option<Decimal>,
    #[serde(default)]
    delivery_fees: Vec<DeliveryFeeIn>,
    #[serde(default, deserialize_with = "empty_as_none")]
    container_charge: Option<Decimal>,
    #[serde(default, deserialize_with = "empty_as_none")]
    service_fee_total: Option<Decimal>,
    #[serde(default, deserialize_with = "empty_as_none")]
    delivery_fee_discount: Option<Decimal>,
    #[serde(default, deserialize_with = "empty_as_none")]
    discount_amount_total: Option<Decimal>,
    #[serde(default, deserialize_with = "empty_as_none")]
    vat_total: Option<Decimal>,
    #[serde(default, deserialize_with = "empty_as_none")]
    rider_tip: Option<Decimal>,
    grand_total: Decimal,
    #[serde(default, deserialize_with = "empty_as_none")]
    collect_from_customer: Option<Decimal>,
}

#[derive(Deserialize)]
struct DeliveryFeeIn {
    #[serde(default)]
    value: Option<Decimal>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusIn {
    status: String,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    updated_order: Option<OrderIn>,
}

/// Which of the two webhooks a body is, when no path header says.
#[derive(Deserialize)]
struct Probe {
    #[serde(default)]
    code: Option<IgnoredAny>,
    #[serde(default)]
    status: Option<IgnoredAny>,
}

fn currency_of(input: &Input<'_>, p: &mut Problems, local: Option<&LocalInfo>) -> Option<Currency> {
    let country = local.and_then(|l| text(l.country_code.as_deref()));
    let currency = if input.account.currency.is_some() {
        input.account_currency(p)
    } else {
        let code = country.as_deref().and_then(|c| {
            MARKET_CURRENCIES
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(c))
                .map(|(_, v)| *v)
        });
        match code {
            Some(code) => convert::currency(p, "currency", code),
            None => {
                p.push(
                    "localInfo.countryCode",
                    ProblemKind::Missing,
                    format!(
                        "no currency: country {:?} is not a known Talabat market and account {:?} configures none",
                        country.as_deref().map(excerpt).unwrap_or_default(),
                        input.account.id
                    ),
                );
                None
            }
        }
    };
    let digits = local.and_then(|l| l.decimal_digits.as_ref());
    if let (Some(c), Some(d)) = (currency, digits)
        && d.as_str().trim().parse::<u8>().ok() != Some(c.exponent())
    {
        p.push(
            "localInfo.decimalDigits",
            ProblemKind::Inconsistent,
            format!(
                "{:?} does not match {c}, which has {} decimals",
                excerpt(d.as_str()),
                c.exponent()
            ),
        );
    }
    currency
}

/// A topping as a canonical modifier: its `price` covers its own quantity.
fn modifier(money: Money, p: &mut Problems, path: &str, t: &Topping) -> Item {
    let quantity = quantity(p, &format!("{path}.quantity"), t.quantity);
    let price = money.opt(p, &format!("{path}.unit_price"), t.price.as_ref());
    let unit_price = match quantity {
        0 => 0,
        q if price % i64::from(q) == 0 => price / i64::from(q),
        q => {
            p.push(
                format!("{path}.unit_price"),
                ProblemKind::Inconsistent,
                format!("{price} minor units cannot be split evenly over quantity {q}"),
            );
            0
        }
    };
    Item {
        provider_item_id: item_id(t.remote_code.as_deref(), t.sku.as_deref(), t.id.as_ref()),
        product_id: None,
        name: t.name.trim().to_owned(),
        quantity,
        unit_price,
        total: 0,
        notes: None,
        modifiers: t
            .children
            .iter()
            .enumerate()
            .map(|(k, c)| modifier(money, p, &format!("{path}.modifiers[{k}]"), c))
            .collect(),
    }
}

/// Our PLU (`remoteCode`) first, then the SKU, then Talabat's own id.
fn item_id(remote_code: Option<&str>, sku: Option<&str>, id: Option<&Id>) -> Option<String> {
    text(remote_code)
        .or_else(|| text(sku))
        .or_else(|| id.and_then(|i| text(Some(i.as_str()))))
}

fn product(money: Money, p: &mut Problems, path: &str, pr: &Product) -> Item {
    let quantity = quantity(p, &format!("{path}.quantity"), pr.quantity);
    let unit_price = match (&pr.unit_price, &pr.paid_price) {
        (Some(u), _) => money.amount(p, &format!("{path}.unit_price"), u),
        (None, Some(paid)) => {
            let paid = money.amount(p, &format!("{path}.unit_price"), paid);
            match quantity {
                0 => 0,
                q if paid % i64::from(q) == 0 => paid / i64::from(q),
                q => {
                    p.push(
                        format!("{path}.unit_price"),
                        ProblemKind::Inconsistent,
                        format!("{paid} minor units cannot be split evenly over quantity {q}"),
                    );
                    0
                }
            }
        }
        (None, None) => {
            p.push(
                format!("{path}.unit_price"),
                ProblemKind::Missing,
                "neither unitPrice nor paidPrice is set",
            );
            0
        }
    };
    let name = pr.name.trim();
    let name = match pr.variation.as_ref().and_then(|v| text(v.name.as_deref())) {
        Some(v) if v != name => format!("{name} ({v})"),
        _ => name.to_owned(),
    };
    let modifiers = pr
        .selected_toppings
        .iter()
        .chain(&pr.selected_choices)
        .enumerate()
        .map(|(j, t)| modifier(money, p, &format!("{path}.modifiers[{j}]"), t))
        .collect();
    Item {
        provider_item_id: item_id(pr.remote_code.as_deref(), pr.sku.as_deref(), pr.id.as_ref()),
        product_id: None,
        name,
        quantity,
        unit_price,
        total: 0,
        notes: text(pr.comment.as_deref()),
        modifiers,
    }
}

fn address(a: &AddressIn) -> Address {
    let street = join([a.street.as_deref(), a.number.as_deref()], " ");
    let floor = a
        .floor
        .as_deref()
        .and_then(|f| text(Some(f)))
        .map(|f| format!("Floor {f}"));
    let flat = a
        .flat_number
        .as_deref()
        .and_then(|f| text(Some(f)))
        .map(|f| format!("Flat {f}"));
    let candidates = [
        a.line1.clone(),
        a.line2.clone(),
        a.line3.clone(),
        a.line4.clone(),
        a.line5.clone(),
        a.company.clone(),
        a.building.clone(),
        street,
        join([floor.as_deref(), flat.as_deref(), a.room.as_deref()], ", "),
        a.entrance.clone(),
        a.intercom.clone(),
        a.other.clone(),
    ];
    let (lat, lng) = coords(a.latitude, a.longitude);
    Address {
        lines: candidates
            .iter()
            .filter_map(|l| text(l.as_deref()))
            .collect(),
        city: text(a.city.as_deref()),
        area: text(a.delivery_area.as_deref()).or_else(|| text(a.district.as_deref())),
        postcode: text(a.postcode.as_deref()),
        lat,
        lng,
    }
}

fn funder(sponsor: Option<&str>) -> Option<Funder> {
    match sponsor.map(|s| s.trim().to_ascii_uppercase()).as_deref() {
        Some("VENDOR") => Some(Funder::Merchant),
        Some("PLATFORM") => Some(Funder::Platform),
        Some("THIRD_PARTY") => Some(Funder::ThirdParty),
        _ => None,
    }
}

/// What a new order hands over for answering it: `expiryDate` (an
/// unreadable one is left out: the account's `answer_deadline` applies, and
/// the order itself is not refused for it) and the string values of
/// `callbackUrls`, by name.
fn answer_hints(o: &OrderIn) -> AnswerHints {
    let expires_at = o
        .expiry_date
        .as_deref()
        .and_then(|t| OffsetDateTime::parse(t.trim(), &Rfc3339).ok());
    let callbacks = match &o.callback_urls {
        Some(serde_json::Value::Object(urls)) => urls
            .iter()
            .filter_map(|(name, url)| {
                let url = text(url.as_str())?;
                Some((name.clone(), url))
            })
            .collect(),
        _ => BTreeMap::new(),
    };
    AnswerHints {
        expires_at,
        callbacks,
        ..AnswerHints::default()
    }
}

/// Fills `order` with the content of a Talabat order; returns the store id
/// candidates it names.
fn fill(input: &Input<'_>, p: &mut Problems, order: &mut Order, o: &OrderIn) -> Option<String> {
    order.display_code = text(o.short_code.as_deref());
    order.placed_at = match &o.created_at {
        Some(t) => convert::rfc3339(p, "createdAt", t),
        None => input.received_at,
    };
    order.is_test = o.test;
    let currency = currency_of(input, p, o.local_info.as_ref());
    order.currency = currency;
    let money = Money(currency);

    if let Some(c) = &o.customer {
        order.customer.name = join([c.first_name.as_deref(), c.last_name.as_deref()], " ");
        order.customer.phone = text(c.mobile_phone.as_deref());
        order.customer.email = text(c.email.as_deref());
    }
    order.notes = o
        .comments
        .as_ref()
        .and_then(|c| text(c.customer_comment.as_deref()));

    let expedition = o.expedition_type.as_deref().map(str::trim);
    let delivery = o.delivery.as_ref();
    let rider_pickup = delivery.and_then(|d| text(d.rider_pickup_time.as_deref()));
    let fulfilment = match expedition {
        Some("pickup") => Fulfilment {
            kind: FulfilmentType::Pickup,
            delivered_by: None,
            address: None,
            instructions: None,
            ready_by: o
                .pickup
                .as_ref()
                .and_then(|pk| text(pk.pickup_time.as_deref()))
                .and_then(|t| convert::rfc3339(p, "pickup.pickupTime", &t)),
            table: None,
        },
        Some("delivery") | None => {
            let address = delivery.and_then(|d| d.address.as_ref());
            let own = rider_pickup.is_none();
            Fulfilment {
                kind: FulfilmentType::Delivery,
                delivered_by: Some(if own {
                    Courier::Restaurant
                } else {
                    Courier::Platform
                }),
                address: address.map(self::address).filter(|a| !a.lines.is_empty()),
                instructions: address.and_then(|a| text(a.delivery_instructions.as_deref())),
                ready_by: rider_pickup
                    .as_deref()
                    .and_then(|t| convert::rfc3339(p, "delivery.riderPickupTime", t)),
                table: None,
            }
        }
        Some(other) => {
            p.push(
                "expeditionType",
                ProblemKind::OutOfRange,
                format!("{:?} is not delivery or pickup", excerpt(other)),
            );
            Fulfilment {
                kind: FulfilmentType::Delivery,
                delivered_by: None,
                address: None,
                instructions: None,
                ready_by: None,
                table: None,
            }
        }
    };
    if o.pre_order {
        let wanted = match fulfilment.kind {
            FulfilmentType::Delivery => delivery
                .and_then(|d| text(d.expected_delivery_time.as_deref()))
                .map(|t| ("delivery.expectedDeliveryTime", t)),
            _ => o
                .pickup
                .as_ref()
                .and_then(|pk| text(pk.pickup_time.as_deref()))
                .map(|t| ("pickup.pickupTime", t)),
        };
        order.scheduled_for = wanted.and_then(|(path, t)| convert::rfc3339(p, path, &t));
    }
    order.fulfilment = Some(fulfilment);

    order.items = o
        .products
        .iter()
        .enumerate()
        .map(|(i, pr)| product(money, p, &format!("items[{i}]"), pr))
        .collect();
    convert::fill_totals(p, &mut order.items);

    let pr = &o.price;
    let delivery_fee = match &pr.delivery_fee {
        Some(fee) => money.amount(p, "price.deliveryFee", fee),
        None => super::sum_amounts(
            money,
            p,
            pr.delivery_fees.iter().enumerate().filter_map(|(k, f)| {
                f.value
                    .as_ref()
                    .map(|v| (format!("price.deliveryFees[{k}].value"), v))
            }),
        ),
    };
    let mut fees = Vec::new();
    for (name, path, value) in [
        ("serviceFee", "price.serviceFeeTotal", &pr.service_fee_total),
        (
            "containerCharge",
            "price.containerCharge",
            &pr.container_charge,
        ),
    ] {
        let amount = money.opt(p, path, value.as_ref());
        if amount != 0 {
            fees.push(Fee {
                name: name.to_owned(),
                amount,
            });
        }
    }
    let mut discounts = Vec::new();
    for (k, d) in o.discounts.iter().enumerate() {
        let path = format!("discounts[{k}]");
        let name = text(d.name.as_deref()).unwrap_or_else(|| "discount".to_owned());
        let amount = money.opt(p, &format!("{path}.amount"), d.amount.as_ref());
        let shares: Vec<(Option<Funder>, i64)> = d
            .sponsorships
            .iter()
            .enumerate()
            .map(|(s, sp)| {
                let at = format!("{path}.sponsorships[{s}].amount");
                (
                    funder(sp.sponsor.as_deref()),
                    money.opt(p, &at, sp.amount.as_ref()),
                )
            })
            .filter(|(_, a)| *a != 0)
            .collect();
        let shared: i64 = shares.iter().map(|(_, a)| a).sum();
        if shares.is_empty() {
            discounts.push(Discount {
                name,
                amount,
                funded_by: None,
            });
        } else {
            if shared != amount {
                p.push(
                    format!("{path}.sponsorships"),
                    ProblemKind::Mismatch,
                    format!("sponsorships add up to {shared}, the discount is {amount}"),
                );
            }
            discounts.extend(shares.into_iter().map(|(funded_by, amount)| Discount {
                name: name.clone(),
                amount,
                funded_by,
            }));
        }
    }
    let fee_discount = money.opt(
        p,
        "price.deliveryFeeDiscount",
        pr.delivery_fee_discount.as_ref(),
    );
    if fee_discount != 0 {
        discounts.push(Discount {
            name: "deliveryFeeDiscount".to_owned(),
            amount: fee_discount,
            funded_by: None,
        });
    }
    let discount = if discounts.is_empty() {
        money.opt(
            p,
            "price.discountAmountTotal",
            pr.discount_amount_total.as_ref(),
        )
    } else {
        discounts.iter().map(|d| d.amount).sum()
    };
    let mut totals = Totals {
        subtotal: money.amount(p, "price.subTotal", &pr.sub_total),
        delivery_fee,
        service_fee: fees.iter().map(|f| f.amount).sum(),
        tax: money.opt(p, "price.vatTotal", pr.vat_total.as_ref()),
        discount,
        tip: money.opt(p, "price.riderTip", pr.rider_tip.as_ref()),
        total: money.amount(p, "price.grandTotal", &pr.grand_total),
        tax_inclusive: true,
        fees,
        discounts,
    };
    totals.tax_inclusive = tax_inclusive(&totals, true);

    let pay = o.payment.as_ref();
    let due = money.opt(
        p,
        "price.collectFromCustomer",
        pr.collect_from_customer.as_ref(),
    );
    let says = |needle: &str| {
        pay.is_some_and(|x| {
            [&x.kind, &x.remote_code, &x.status].iter().any(|v| {
                v.as_deref()
                    .is_some_and(|v| v.to_ascii_lowercase().contains(needle))
            })
        })
    };
    let method = if says("cash") {
        PaymentMethod::Cash
    } else if due == 0 {
        PaymentMethod::Online
    } else if says("card") {
        PaymentMethod::Card
    } else {
        PaymentMethod::Other
    };
    let change_for = pay
        .and_then(|x| x.required_money_change.as_ref())
        .map(|c| money.amount(p, "payment.requiredMoneyChange", c))
        .filter(|c| *c != 0);
    order.payment = Some(Payment {
        method,
        paid: due == 0,
        amount_due: due,
        change_for,
    });
    order.totals = Some(totals);

    o.platform_restaurant
        .as_ref()
        .and_then(|r| r.id.as_ref())
        .map(|id| id.as_str().to_owned())
}

impl Adapter for Talabat {
    fn convert(&self, input: &Input<'_>, p: &mut Problems) -> Result<Draft, ConvertError> {
        let remote_id = input.path_param("Remoteid").map(str::to_owned);
        let remote_order_id = input.path_param("Remoteorderid");
        let is_status = match remote_order_id {
            Some(_) => true,
            None => {
                let probe: Probe = input.parse()?;
                probe.status.is_some() && probe.code.is_none()
            }
        };
        if !is_status {
            let o: OrderIn = input.parse()?;
            let mut order = input.order(Event::Created, o.code.trim());
            let platform_id = fill(input, p, &mut order, &o);
            let answer = answer_hints(&o);
            let country = o.local_info.and_then(|l| text(l.country_code.as_deref()));
            let mut draft = Draft::new(order).store(remote_id).store(platform_id);
            draft.country = country;
            draft.answer = answer;
            return Ok(draft);
        }

        let s: StatusIn = input.parse()?;
        let provider_status = s.status.trim().to_owned();
        let state = match provider_status.to_ascii_uppercase().as_str() {
            "ORDER_CANCELLED" | "ORDER_CANCELED" => OrderState::Cancelled,
            "ORDER_PICKED_UP" => OrderState::PickedUp,
            "COURIER_ARRIVED_AT_VENDOR" => OrderState::CourierArrived,
            "PRODUCT_ORDER_MODIFICATION_SUCCESSFUL" => OrderState::Modified,
            "ORDER_ACCEPTED" => OrderState::Accepted,
            "ORDER_REJECTED" => OrderState::Rejected,
            _ => OrderState::Other,
        };
        let id = remote_order_id
            .map(str::to_owned)
            .or_else(|| s.updated_order.as_ref().map(|o| o.code.trim().to_owned()))
            .unwrap_or_default();
        if id.is_empty() {
            p.push(
                "provider_order_id",
                ProblemKind::Missing,
                "a status update needs the remoteOrderId path parameter (Orderhub-Path-Remoteorderid)",
            );
        }
        let mut order = input.order(event_of(state), id);
        order.status = Some(Status {
            state,
            provider_status: Some(provider_status),
            reason: text(s.message.as_deref()),
            at: None,
        });
        let mut draft_country = None;
        let mut platform_id = None;
        if state == OrderState::Modified {
            match &s.updated_order {
                Some(o) => {
                    platform_id = fill(input, p, &mut order, o);
                    draft_country = o
                        .local_info
                        .as_ref()
                        .and_then(|l| text(l.country_code.as_deref()));
                    // The modification keeps the order's own time; the
                    // status has none of its own.
                }
                None => p.push(
                    "updatedOrder",
                    ProblemKind::Missing,
                    "is required for PRODUCT_ORDER_MODIFICATION_SUCCESSFUL",
                ),
            }
        }
        let mut draft = Draft::new(order).store(remote_id).store(platform_id);
        draft.country = draft_country;
        Ok(draft)
    }
}
