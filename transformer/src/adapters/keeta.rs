//! Keeta (Meituan; the Standard Keeta API): one signed envelope for every
//! event, `{sig, eventId, appId, messageId, shopId, message, timestamp}`
//! [DOC], whose `message` is a JSON-encoded STRING [DOC]: it is parsed
//! twice, the envelope, then the text of `message`. An unparsable `message`
//! refuses the delivery, naming the path inside it.
//!
//! Events by `eventId` [DOC]:
//! - 1001, order placed → `created`, the order in `message`. Keeta's docs
//!   wrap it as `{"orderInfo": {...}}` [DOC]; one production integration
//!   reads it bare [GUESS]: both are read.
//! - 1002, order accepted (`status` 30) → `updated`/`accepted`.
//! - 1003, order completed → `updated`/`delivered`.
//! - 1004, order cancelled (`status` 50) → `cancelled`, its `cancelReason`
//!   the reason.
//! - 1006, delivery status → `updated` with `logisticsStatus` [GUESS
//!   values]: 20 `courier_assigned`, 25 `courier_arrived`, 30 `picked_up`,
//!   50 `delivered`, any other `other`.
//! - 1005 and 1007 (refunds), menu, store and authorization events, and
//!   anything else are not order events this hub converts.
//!
//! The status events carry `{orderViewId, shopId, status, opTime}` [DOC];
//! `opTime` (unix MILLISECONDS) is the status time, else the envelope's
//! `timestamp` (unix seconds). `orderViewId` is the provider order id: a
//! Java long, read from its JSON digits (a number or a string), never
//! through a float. The envelope's `messageId` is the event's identity (the
//! ingress's webhook id), not read here.
//!
//! The order's content (1001) is mostly [GUESS]: only `baseOrder`'s ids,
//! times and `chooseTableware` are in Keeta's own text; the rest follows
//! third-party transcriptions of Keeta's OpenAPI and is unverified until a
//! live test-store order is compared with it. The fixtures were built from
//! these field descriptions, not from a payload Keeta published:
//! - ids: `baseOrder.orderViewId` (else `orderViewIdStr`, else
//!   `merchantOrder.orderViewId`); `merchantOrder.seqNoStr` is the display
//!   code; the branch and the store id Keeta's calls name are the envelope's
//!   `shopId` (else the order's `merchantOrder.shopId`).
//! - times (unix milliseconds [DOC]): `baseOrder.ctime` is `placed_at`;
//!   for a pickup, `estimatedDiningReadyUrgeTime` is `ready_by`.
//! - money: integer minor units of the currency [GUESS], the currency from
//!   `feeDtl.customerFee.i18n.currency`, else a product's `currency`, else
//!   the account's. A product's unit price is `priceWithoutGroup.unitPrice`
//!   (else `price`), without its options; its options are
//!   `groups[].shopProductGroupSkuList[]`, each with `price` for one and
//!   `count` per ONE unit of the product, nesting through their own
//!   `groups`. `customerFee`: `productPrice` is the subtotal (the order check
//!   proves Σ lines), `shippingFee` the delivery fee, `platformFee` and
//!   `diffPrice` (small-order top-up) fees, `tip` the courier's tip,
//!   `discounts` the discount, `payTotal` the total (computed when absent).
//!   The discount is itemised by funder from `orderPromotionDtlList`
//!   (`merchantActivityFee`, `platformActivityFee`) only when those add up
//!   to `discounts`; otherwise it is one discount of unknown funder. Prices
//!   include VAT (Gulf menus): `tax` 0, `tax_inclusive`.
//! - fulfilment: `merchantOrder.userGetMode` `pickup` → pickup; otherwise
//!   delivery, by the restaurant when the first
//!   `merchantOrderDeliveries[].deliveryMode` is `9001` (to
//!   `recipientInfo`'s address), else by Keeta's courier. Customer details
//!   still encrypted (`ENC_…`) are left out.
//! - `payType` `cash` is cash with the total due; anything else was paid
//!   through Keeta. `chooseTableware` 1/0 is the cutlery wish [DOC], a
//!   product's `remark` its note.

use std::collections::BTreeMap;

use canonical::money::Currency;
use canonical::order::{
    Address, Courier, Event, Fulfilment, FulfilmentType, Funder, Item, OrderState, Payment,
    PaymentMethod, ProblemKind, Status, Totals,
};
use serde::Deserialize;
use serde::de::IgnoredAny;
use time::OffsetDateTime;

use super::{
    Adapter, Coord, Id, coords, discount, event_of, fee, nullable, paid_online, parse_nested,
    unix_millis,
};
use crate::convert::{
    self, AnswerHints, ConvertError, Draft, Input, Problems, Quantity, excerpt, quantity, text,
};

pub struct Keeta;

/// `merchantOrderDeliveries[].deliveryMode` of an order the restaurant
/// delivers itself [GUESS].
const SELF_DELIVERY_MODE: &str = "9001";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    event_id: Id,
    #[serde(default)]
    shop_id: Option<Id>,
    message: String,
    #[serde(default)]
    timestamp: Option<i64>,
}

/// Whether the order comes wrapped in `orderInfo`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    #[serde(default)]
    order_info: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wrapped {
    order_info: OrderInfo,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OrderInfo {
    #[serde(default)]
    base_order: Option<BaseOrder>,
    #[serde(default)]
    merchant_order: Option<MerchantOrder>,
    #[serde(default, deserialize_with = "nullable")]
    merchant_order_deliveries: Vec<DeliveryIn>,
    #[serde(default)]
    recipient_info: Option<RecipientIn>,
    #[serde(default)]
    fee_dtl: Option<FeeDtl>,
    #[serde(default, deserialize_with = "nullable")]
    order_promotion_dtl_list: Vec<PromotionIn>,
    #[serde(default, deserialize_with = "nullable")]
    products: Vec<ProductIn>,
    #[serde(default, deserialize_with = "nullable")]
    sub_order_info_list: Vec<SubOrderIn>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BaseOrder {
    #[serde(default)]
    order_view_id: Option<Id>,
    #[serde(default)]
    order_view_id_str: Option<String>,
    #[serde(default)]
    ctime: Option<i64>,
    #[serde(default)]
    choose_tableware: Option<i64>,
    #[serde(default)]
    estimated_dining_ready_urge_time: Option<i64>,
    #[serde(default)]
    pay_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MerchantOrder {
    #[serde(default)]
    order_view_id: Option<Id>,
    #[serde(default)]
    shop_id: Option<Id>,
    #[serde(default)]
    seq_no_str: Option<String>,
    #[serde(default)]
    user_get_mode: Option<String>,
    #[serde(default)]
    ctime: Option<i64>,
    #[serde(default)]
    estimated_dining_ready_urge_time: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeliveryIn {
    #[serde(default)]
    delivery_mode: Option<Id>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RecipientIn {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    phone: Option<String>,
    #[serde(default)]
    inter_code: Option<String>,
    #[serde(default)]
    address_name: Option<String>,
    #[serde(default)]
    house_number: Option<String>,
    #[serde(default)]
    point: Option<PointIn>,
}

#[derive(Deserialize)]
struct PointIn {
    #[serde(default)]
    latitude: Option<Coord>,
    #[serde(default)]
    longitude: Option<Coord>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FeeDtl {
    #[serde(default)]
    customer_fee: Option<CustomerFee>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CustomerFee {
    #[serde(default)]
    i18n: Option<I18nIn>,
    #[serde(default)]
    product_price: Option<i64>,
    #[serde(default)]
    shipping_fee: Option<i64>,
    #[serde(default)]
    platform_fee: Option<i64>,
    #[serde(default)]
    diff_price: Option<i64>,
    #[serde(default)]
    discounts: Option<i64>,
    #[serde(default)]
    tip: Option<i64>,
    #[serde(default)]
    pay_total: Option<i64>,
}

#[derive(Deserialize)]
struct I18nIn {
    #[serde(default)]
    currency: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromotionIn {
    #[serde(default)]
    type_name: Option<String>,
    #[serde(default)]
    merchant_activity_fee: Option<i64>,
    #[serde(default)]
    platform_activity_fee: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubOrderIn {
    #[serde(default, deserialize_with = "nullable")]
    products: Vec<ProductIn>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProductIn {
    #[serde(default)]
    spu_id: Option<Id>,
    #[serde(default)]
    sku_id: Option<Id>,
    #[serde(default)]
    count: Quantity,
    #[serde(default)]
    price: Option<i64>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    name_i18n: Option<BTreeMap<String, String>>,
    #[serde(default)]
    spec: Option<String>,
    #[serde(default)]
    remark: Option<String>,
    #[serde(default)]
    spu_open_item_code: Option<String>,
    #[serde(default)]
    sku_open_item_code: Option<String>,
    #[serde(default)]
    currency: Option<String>,
    #[serde(default)]
    price_without_group: Option<UnitPriceIn>,
    #[serde(default, deserialize_with = "nullable")]
    groups: Vec<GroupIn>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UnitPriceIn {
    #[serde(default)]
    unit_price: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GroupIn {
    #[serde(default, deserialize_with = "nullable")]
    shop_product_group_sku_list: Vec<GroupSkuIn>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GroupSkuIn {
    #[serde(default)]
    group_sku_id: Option<Id>,
    #[serde(default)]
    spu_name: Option<String>,
    #[serde(default)]
    spu_name_i18n: Option<BTreeMap<String, String>>,
    #[serde(default)]
    price: Option<i64>,
    #[serde(default)]
    count: Quantity,
    #[serde(default)]
    group_sku_open_item_code: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    groups: Vec<GroupIn>,
}

/// A status event's message (1002, 1003, 1004, 1006).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusIn {
    #[serde(default)]
    order_view_id: Option<Id>,
    #[serde(default)]
    shop_id: Option<Id>,
    #[serde(default)]
    status: Option<i64>,
    #[serde(default)]
    op_time: Option<i64>,
    #[serde(default)]
    cancel_reason: Option<String>,
    #[serde(default)]
    logistics_status: Option<i64>,
}

/// What an event id stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Placed,
    /// A status event and the state it reports (1006's comes from the
    /// message).
    Status(Option<OrderState>),
}

/// The event ids this hub converts; anything else is refused, named.
fn kind_of(event_id: &str) -> Result<Kind, String> {
    match event_id.trim() {
        "1001" => Ok(Kind::Placed),
        "1002" => Ok(Kind::Status(Some(OrderState::Accepted))),
        "1003" => Ok(Kind::Status(Some(OrderState::Delivered))),
        "1004" => Ok(Kind::Status(Some(OrderState::Cancelled))),
        "1006" => Ok(Kind::Status(None)),
        "1005" => Err("1005 (refund initiation)".to_owned()),
        "1007" => Err("1007 (partial refund initiation)".to_owned()),
        other => Err(excerpt(other)),
    }
}

/// A delivery's `logisticsStatus` [GUESS values].
fn logistics_state(status: i64) -> OrderState {
    match status {
        20 => OrderState::CourierAssigned,
        25 => OrderState::CourierArrived,
        30 => OrderState::PickedUp,
        50 => OrderState::Delivered,
        _ => OrderState::Other,
    }
}

fn id_text(id: Option<&Id>) -> Option<String> {
    id.and_then(|i| text(Some(i.as_str())))
}

/// Customer details Keeta did not let us decrypt are no details.
fn plain(value: Option<&str>) -> Option<String> {
    text(value).filter(|v| !v.starts_with("ENC_"))
}

/// A name: the plain one, else the English one, else any translation.
fn name_of(name: Option<&str>, i18n: Option<&BTreeMap<String, String>>) -> Option<String> {
    text(name).or_else(|| {
        let i18n = i18n?;
        i18n.get("en")
            .and_then(|n| text(Some(n)))
            .or_else(|| i18n.values().find_map(|n| text(Some(n))))
    })
}

fn options(p: &mut Problems, path: &str, groups: &[GroupIn]) -> Vec<Item> {
    groups
        .iter()
        .flat_map(|g| &g.shop_product_group_sku_list)
        .enumerate()
        .map(|(j, o)| {
            let at = format!("{path}.modifiers[{j}]");
            let id = text(o.group_sku_open_item_code.as_deref())
                .or_else(|| id_text(o.group_sku_id.as_ref()));
            let unit_price = o.price.unwrap_or_else(|| {
                p.push(
                    format!("{at}.unit_price"),
                    ProblemKind::Missing,
                    "the option has no price",
                );
                0
            });
            Item {
                name: name_of(o.spu_name.as_deref(), o.spu_name_i18n.as_ref())
                    .or_else(|| id.clone())
                    .unwrap_or_default(),
                provider_item_id: id,
                product_id: None,
                quantity: quantity(p, &format!("{at}.quantity"), o.count),
                unit_price,
                total: 0,
                notes: None,
                modifiers: options(p, &at, &o.groups),
            }
        })
        .collect()
}

fn line(p: &mut Problems, path: &str, pr: &ProductIn) -> Item {
    let id = text(pr.sku_open_item_code.as_deref())
        .or_else(|| text(pr.spu_open_item_code.as_deref()))
        .or_else(|| id_text(pr.sku_id.as_ref()))
        .or_else(|| id_text(pr.spu_id.as_ref()));
    let name = name_of(pr.name.as_deref(), pr.name_i18n.as_ref())
        .or_else(|| id.clone())
        .unwrap_or_default();
    let name = match text(pr.spec.as_deref()) {
        Some(spec) if !name.contains(&spec) => format!("{name} ({spec})"),
        _ => name,
    };
    let unit_price = pr
        .price_without_group
        .as_ref()
        .and_then(|u| u.unit_price)
        .or(pr.price)
        .unwrap_or_else(|| {
            p.push(
                format!("{path}.unit_price"),
                ProblemKind::Missing,
                "neither priceWithoutGroup.unitPrice nor price is set",
            );
            0
        });
    Item {
        provider_item_id: id,
        product_id: None,
        name,
        quantity: quantity(p, &format!("{path}.quantity"), pr.count),
        unit_price,
        total: 0,
        notes: text(pr.remark.as_deref()),
        modifiers: options(p, path, &pr.groups),
    }
}

fn currency_of(input: &Input<'_>, p: &mut Problems, o: &OrderInfo) -> Option<Currency> {
    let named = o
        .fee_dtl
        .as_ref()
        .and_then(|f| f.customer_fee.as_ref())
        .and_then(|c| c.i18n.as_ref())
        .and_then(|i| text(i.currency.as_deref()))
        .or_else(|| {
            o.products
                .iter()
                .find_map(|pr| text(pr.currency.as_deref()))
        });
    match named {
        Some(code) => convert::currency(p, "currency", &code),
        None => input.account_currency(p),
    }
}

fn totals(p: &mut Problems, o: &OrderInfo, items: &[Item]) -> Totals {
    let fee_of = o.fee_dtl.as_ref().and_then(|f| f.customer_fee.as_ref());
    let get = |f: fn(&CustomerFee) -> Option<i64>| fee_of.and_then(f).unwrap_or(0);
    let fees: Vec<_> = [
        fee("platformFee", get(|c| c.platform_fee)),
        fee("diffPrice", get(|c| c.diff_price)),
    ]
    .into_iter()
    .flatten()
    .collect();
    let discount_total = get(|c| c.discounts);
    let shares: Vec<_> = o
        .order_promotion_dtl_list
        .iter()
        .flat_map(|pr| {
            let name = text(pr.type_name.as_deref()).unwrap_or_else(|| "promotion".to_owned());
            [
                discount(
                    &name,
                    pr.merchant_activity_fee.unwrap_or(0),
                    Some(Funder::Merchant),
                ),
                discount(
                    &name,
                    pr.platform_activity_fee.unwrap_or(0),
                    Some(Funder::Platform),
                ),
            ]
        })
        .flatten()
        .collect();
    let shared: i128 = shares.iter().map(|d| i128::from(d.amount)).sum();
    let discounts = if !shares.is_empty() && shared == i128::from(discount_total) {
        shares
    } else {
        discount("discounts", discount_total, None)
            .into_iter()
            .collect()
    };
    let subtotal = match fee_of.and_then(|c| c.product_price) {
        Some(s) => s,
        None => items.iter().map(|i| i.total).fold(0, i64::saturating_add),
    };
    let mut totals = Totals {
        subtotal,
        delivery_fee: get(|c| c.shipping_fee),
        service_fee: fees.iter().map(|f| f.amount).sum(),
        tax: 0,
        discount: discount_total,
        tip: get(|c| c.tip),
        total: 0,
        tax_inclusive: true,
        fees,
        discounts,
    };
    totals.total = match fee_of.and_then(|c| c.pay_total) {
        Some(t) => t,
        None => super::computed_total(p, "totals.total", &totals),
    };
    totals
}

fn fulfilment(p: &mut Problems, o: &OrderInfo) -> Fulfilment {
    let mo = o.merchant_order.as_ref();
    let pickup = mo
        .and_then(|m| text(m.user_get_mode.as_deref()))
        .is_some_and(|m| m.eq_ignore_ascii_case("pickup"));
    if pickup {
        let ready = o
            .base_order
            .as_ref()
            .and_then(|b| b.estimated_dining_ready_urge_time)
            .map(|t| ("baseOrder.estimatedDiningReadyUrgeTime", t))
            .or_else(|| {
                mo.and_then(|m| m.estimated_dining_ready_urge_time)
                    .map(|t| ("merchantOrder.estimatedDiningReadyUrgeTime", t))
            })
            .filter(|(_, t)| *t > 0);
        return Fulfilment {
            kind: FulfilmentType::Pickup,
            delivered_by: None,
            address: None,
            instructions: None,
            ready_by: ready.and_then(|(path, t)| unix_millis(p, path, t)),
            table: None,
        };
    }
    let own = o
        .merchant_order_deliveries
        .first()
        .and_then(|d| id_text(d.delivery_mode.as_ref()))
        .is_some_and(|m| m == SELF_DELIVERY_MODE);
    let address = o.recipient_info.as_ref().filter(|_| own).and_then(|r| {
        let lines: Vec<String> = [
            plain(r.house_number.as_deref()),
            plain(r.address_name.as_deref()),
        ]
        .into_iter()
        .flatten()
        .collect();
        let (lat, lng) = r
            .point
            .as_ref()
            .map_or((None, None), |pt| coords(pt.latitude, pt.longitude));
        (!lines.is_empty()).then_some(Address {
            lines,
            city: None,
            area: None,
            postcode: None,
            lat,
            lng,
        })
    });
    Fulfilment {
        kind: FulfilmentType::Delivery,
        delivered_by: Some(if own {
            Courier::Restaurant
        } else {
            Courier::Platform
        }),
        address,
        instructions: None,
        ready_by: None,
        table: None,
    }
}

fn placed(input: &Input<'_>, p: &mut Problems, envelope: &Envelope) -> Result<Draft, ConvertError> {
    let probe: Probe = parse_nested("message", &envelope.message)?;
    let o = if probe.order_info.is_some() {
        parse_nested::<Wrapped>("message", &envelope.message)?.order_info
    } else {
        parse_nested::<OrderInfo>("message", &envelope.message)?
    };
    let bo = o.base_order.as_ref();
    let mo = o.merchant_order.as_ref();
    let id = id_text(bo.and_then(|b| b.order_view_id.as_ref()))
        .or_else(|| text(bo.and_then(|b| b.order_view_id_str.as_deref())))
        .or_else(|| id_text(mo.and_then(|m| m.order_view_id.as_ref())))
        .unwrap_or_default();
    if id.is_empty() {
        p.push(
            "provider_order_id",
            ProblemKind::Missing,
            "baseOrder.orderViewId, keeta's order id, is missing",
        );
    }
    let mut order = input.order(Event::Created, id);
    let ctime = bo
        .and_then(|b| b.ctime)
        .map(|t| ("baseOrder.ctime", t))
        .or_else(|| mo.and_then(|m| m.ctime).map(|t| ("merchantOrder.ctime", t)))
        .filter(|(_, t)| *t > 0);
    order.placed_at = match ctime {
        Some((path, t)) => unix_millis(p, path, t),
        None => input.received_at,
    };
    order.display_code = text(mo.and_then(|m| m.seq_no_str.as_deref()));
    order.currency = currency_of(input, p, &o);
    order.cutlery = match bo.and_then(|b| b.choose_tableware) {
        Some(1) => Some(true),
        Some(0) => Some(false),
        _ => None,
    };
    if let Some(r) = &o.recipient_info {
        order.customer.name = plain(r.name.as_deref());
        order.customer.phone =
            plain(r.phone.as_deref()).map(|phone| match plain(r.inter_code.as_deref()) {
                Some(code) if !phone.starts_with('+') => {
                    format!("+{}{phone}", code.trim_start_matches('+'))
                }
                _ => phone,
            });
    }
    order.fulfilment = Some(fulfilment(p, &o));

    let products = if o.products.is_empty() {
        // A big order split for delivery may list its products only in
        // its sub-orders [GUESS].
        o.sub_order_info_list
            .iter()
            .flat_map(|s| &s.products)
            .collect()
    } else {
        o.products.iter().collect::<Vec<_>>()
    };
    order.items = products
        .iter()
        .enumerate()
        .map(|(i, pr)| line(p, &format!("items[{i}]"), pr))
        .collect();
    convert::fill_totals(p, &mut order.items);
    let totals = totals(p, &o, &order.items);
    let cash = bo
        .and_then(|b| text(b.pay_type.as_deref()))
        .is_some_and(|t| t.eq_ignore_ascii_case("cash"));
    order.payment = Some(if cash {
        Payment {
            method: PaymentMethod::Cash,
            paid: false,
            amount_due: totals.total,
            change_for: None,
        }
    } else {
        paid_online()
    });
    order.totals = Some(totals);

    let shop =
        id_text(envelope.shop_id.as_ref()).or_else(|| id_text(mo.and_then(|m| m.shop_id.as_ref())));
    let mut draft = Draft::new(order).store(shop.clone());
    draft.answer = AnswerHints {
        store_id: shop,
        ..AnswerHints::default()
    };
    Ok(draft)
}

fn status(
    input: &Input<'_>,
    p: &mut Problems,
    envelope: &Envelope,
    said: Option<OrderState>,
) -> Result<Draft, ConvertError> {
    let s: StatusIn = parse_nested("message", &envelope.message)?;
    let id = id_text(s.order_view_id.as_ref()).unwrap_or_default();
    if id.is_empty() {
        p.push(
            "provider_order_id",
            ProblemKind::Missing,
            "message.orderViewId, keeta's order id, is missing",
        );
    }
    let (state, provider_status) = match said {
        Some(state) => (state, s.status.map(|n| n.to_string())),
        None => match s.logistics_status {
            Some(n) => (logistics_state(n), Some(format!("logisticsStatus {n}"))),
            None => {
                p.push(
                    "message.logisticsStatus",
                    ProblemKind::Missing,
                    "a delivery status update needs logisticsStatus",
                );
                (OrderState::Other, None)
            }
        },
    };
    let at: Option<OffsetDateTime> = match (s.op_time.filter(|t| *t > 0), envelope.timestamp) {
        (Some(ms), _) => unix_millis(p, "message.opTime", ms),
        (None, Some(secs)) => OffsetDateTime::from_unix_timestamp(secs).ok(),
        (None, None) => None,
    };
    let mut order = input.order(event_of(state), id);
    order.status = Some(Status {
        state,
        provider_status,
        reason: text(s.cancel_reason.as_deref()).filter(|_| state == OrderState::Cancelled),
        at,
    });
    let shop = id_text(envelope.shop_id.as_ref()).or_else(|| id_text(s.shop_id.as_ref()));
    let mut draft = Draft::new(order).store(shop.clone());
    draft.answer.store_id = shop;
    Ok(draft)
}

impl Adapter for Keeta {
    fn convert(&self, input: &Input<'_>, p: &mut Problems) -> Result<Draft, ConvertError> {
        let envelope: Envelope = input.parse()?;
        match kind_of(envelope.event_id.as_str()) {
            Ok(Kind::Placed) => placed(input, p, &envelope),
            Ok(Kind::Status(said)) => status(input, p, &envelope, said),
            Err(event) => Err(ConvertError::UnsupportedEvent {
                provider: input.provider,
                event,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_name_what_they_are() {
        assert_eq!(kind_of("1001"), Ok(Kind::Placed));
        assert_eq!(
            kind_of(" 1004"),
            Ok(Kind::Status(Some(OrderState::Cancelled)))
        );
        assert_eq!(kind_of("1006"), Ok(Kind::Status(None)));
        assert_eq!(kind_of("1005"), Err("1005 (refund initiation)".to_owned()));
        assert_eq!(kind_of("1201"), Err("1201".to_owned()));
    }

    #[test]
    fn logistics_statuses_map_where_known() {
        assert_eq!(logistics_state(20), OrderState::CourierAssigned);
        assert_eq!(logistics_state(30), OrderState::PickedUp);
        assert_eq!(logistics_state(50), OrderState::Delivered);
        assert_eq!(logistics_state(10), OrderState::Other);
        assert_eq!(logistics_state(99), OrderState::Other);
    }

    #[test]
    fn encrypted_details_are_none() {
        assert_eq!(plain(Some("ENC_a1b2")), None);
        assert_eq!(plain(Some(" Sara ")), Some("Sara".to_owned()));
    }

    #[test]
    fn a_nested_message_is_parsed_with_its_path() {
        let e = parse_nested::<StatusIn>("message", r#"{"orderViewId": 1.5}"#)
            .err()
            .unwrap();
        assert_eq!(
            e.to_string(),
            "payload does not parse: message (json text): orderViewId: invalid type: floating point `1.5`, expected an id (string or integer) at line 1 column 19"
        );
        let e = parse_nested::<StatusIn>("message", "{\"orderViewId\": 1")
            .err()
            .unwrap();
        assert_eq!(
            e.to_string(),
            "payload does not parse: message (json text): EOF while parsing an object at line 1 column 17"
        );
        // Beyond 64 bits an id is a float to the parser: refused, never
        // rounded.
        let e = parse_nested::<StatusIn>("message", r#"{"orderViewId":123456789012345678901}"#)
            .err()
            .unwrap();
        assert!(
            e.to_string().contains("invalid type: floating point"),
            "{e}"
        );
        let s: StatusIn = parse_nested("message", r#"{"orderViewId":9007199254740993}"#).unwrap();
        assert_eq!(s.order_view_id.unwrap().as_str(), "9007199254740993");
    }
}
