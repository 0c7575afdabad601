//! What a provider's notification asks for: which order to fetch, from
//! which of the provider's order APIs, and what kind of change it is.
//!
//! The fetch URL is built from the account's configured `base_url` and the
//! order id, never taken from the notification's `resource_href` /
//! `resource_url`: a signed notification still must not choose where the
//! hub sends its bearer token. The href's path only chooses between Uber
//! Eats' two order APIs (when the account says `order_api = "auto"`).

use serde::Deserialize;
use shared::Provider;
use shared::config::OrderApi;

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A new order: bounded by the account's `fetch_deadline`.
    New,
    /// The order was cancelled (or rejected, or failed).
    Cancelled,
    /// Something else happened to the order.
    Updated,
}

/// One order to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub kind: Kind,
    /// The provider's order id, checked to be one path segment.
    pub order_id: String,
    /// The event as the provider spelled it (`orders.notification`,
    /// `CANCELED`): passed on to the transformer.
    pub event: String,
    pub api: OrderApi,
    /// Path and query below `base_url`.
    pub path: String,
    /// Wolt: the venue the notification names.
    pub venue_id: Option<String>,
}

/// Why a notification cannot be fetched; all permanent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("notification does not parse: {0}")]
    Invalid(String),
    #[error("{provider} event {event:?} is not about an order; nothing to fetch")]
    Unsupported { provider: Provider, event: String },
}

#[derive(Deserialize)]
struct UberNotification {
    event_type: String,
    meta: UberMeta,
    #[serde(default)]
    resource_href: Option<String>,
}

#[derive(Deserialize)]
struct UberMeta {
    resource_id: String,
}

#[derive(Deserialize)]
struct WoltNotification {
    #[serde(rename = "type")]
    kind: String,
    order: WoltOrderRef,
}

#[derive(Deserialize)]
struct WoltOrderRef {
    id: String,
    #[serde(default)]
    venue_id: Option<String>,
    #[serde(default)]
    status: Option<String>,
}

/// Reads `payload`, a notification of `provider` (Uber Eats or Wolt), for
/// an account configured with `api`.
pub fn plan(provider: Provider, payload: &[u8], api: OrderApi) -> Result<Plan, PlanError> {
    match provider {
        Provider::Ubereats => uber(payload, api),
        Provider::Wolt => wolt(payload, api),
        other => Err(PlanError::Invalid(format!(
            "{other} pushes whole orders; the fetcher reads only notifications"
        ))),
    }
}

fn parse<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, PlanError> {
    serde_json::from_slice(payload)
        .map_err(|e| PlanError::Invalid(shared::redact::truncate(&e.to_string(), 256).into_owned()))
}

fn uber(payload: &[u8], api: OrderApi) -> Result<Plan, PlanError> {
    let n: UberNotification = parse(payload)?;
    let event = n.event_type.trim().to_owned();
    let kind = match event.as_str() {
        "orders.notification" | "orders.scheduled.notification" => Kind::New,
        // `orders.failure` is the cancel of stores on API version 1.0.0.
        "orders.cancel" | "orders.failure" => Kind::Cancelled,
        "orders.release" | "delivery.state_changed" | "orders.fulfillment_issues.resolved" => {
            Kind::Updated
        }
        _ => {
            return Err(PlanError::Unsupported {
                provider: Provider::Ubereats,
                event: shared::redact::truncate(&event, 64).into_owned(),
            });
        }
    };
    let order_id = order_id(&n.meta.resource_id, "meta.resource_id")?;
    let api = match api {
        OrderApi::Auto => match n.resource_href.as_deref() {
            Some(href) if href_path(href).contains("/v1/delivery/order/") => OrderApi::V1,
            _ => OrderApi::V2,
        },
        fixed => fixed,
    };
    let path = match api {
        // The Order Fulfillment API leaves these out unless asked.
        OrderApi::V1 => format!("/v1/delivery/order/{order_id}?expand=carts,deliveries,payment"),
        _ => format!("/v2/eats/order/{order_id}"),
    };
    Ok(Plan {
        kind,
        order_id,
        event,
        api,
        path,
        venue_id: None,
    })
}

fn wolt(payload: &[u8], api: OrderApi) -> Result<Plan, PlanError> {
    let n: WoltNotification = parse(payload)?;
    if n.kind.trim() != "order.notification" {
        return Err(PlanError::Unsupported {
            provider: Provider::Wolt,
            event: shared::redact::truncate(n.kind.trim(), 64).into_owned(),
        });
    }
    let event = n.order.status.as_deref().unwrap_or("").trim().to_owned();
    let kind = match event.as_str() {
        "CREATED" => Kind::New,
        "CANCELED" | "CANCELLED" | "REJECTED" => Kind::Cancelled,
        "" => return Err(PlanError::Invalid("order.status is missing".to_owned())),
        _ => Kind::Updated,
    };
    let order_id = order_id(&n.order.id, "order.id")?;
    // Wolt's resource_url may point at the v1 shape; v2 is read unless the
    // venue is configured for v1.
    let api = match api {
        OrderApi::V1 => OrderApi::V1,
        _ => OrderApi::V2,
    };
    let path = match api {
        OrderApi::V1 => format!("/orders/{order_id}"),
        _ => format!("/v2/orders/{order_id}"),
    };
    Ok(Plan {
        kind,
        order_id,
        event,
        api,
        path,
        venue_id: n.order.venue_id.map(|v| v.trim().to_owned()),
    })
}

/// An order id becomes a path segment: letters, digits, `-` and `_`, up to
/// 128 characters, so no notification can steer the request elsewhere
/// (`../`, `?`, `#`, `%2F`).
fn order_id(raw: &str, field: &str) -> Result<String, PlanError> {
    let id = raw.trim();
    if id.is_empty()
        || id.len() > 128
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(PlanError::Invalid(format!(
            "{field} {:?} is not an order id (letters, digits, - and _, up to 128)",
            shared::redact::truncate(id, 64)
        )));
    }
    Ok(id.to_owned())
}

/// The path of an href, or the text itself when it is not a URL.
fn href_path(href: &str) -> String {
    url::Url::parse(href)
        .map(|u| u.path().to_owned())
        .unwrap_or_else(|_| href.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uber_body(event: &str, id: &str, href: &str) -> Vec<u8> {
        serde_json::json!({
            "event_id": "e1", "event_time": 1718388131, "event_type": event,
            "meta": {"user_id": "store-1", "resource_id": id, "status": "pos"},
            "resource_href": href,
        })
        .to_string()
        .into_bytes()
    }

    fn wolt_body(kind: &str, status: &str, id: &str) -> Vec<u8> {
        serde_json::json!({
            "id": "n1", "type": kind,
            "order": {"id": id, "venue_id": "v1", "status": status,
                      "resource_url": format!("https://pos-integration-service.wolt.com/orders/{id}")},
            "created_at": "2024-06-14T16:02:11.482913Z",
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn uber_chooses_the_api_from_the_href_path_only() {
        let legacy = uber_body(
            "orders.notification",
            "abc-1",
            "https://api.uber.com/v2/eats/order/abc-1",
        );
        let p = plan(Provider::Ubereats, &legacy, OrderApi::Auto).unwrap();
        assert_eq!(
            (p.kind, p.api, p.path.as_str()),
            (Kind::New, OrderApi::V2, "/v2/eats/order/abc-1")
        );
        let v1 = uber_body(
            "orders.cancel",
            "abc-2",
            "https://api.uber.com/v1/delivery/order/abc-2",
        );
        let p = plan(Provider::Ubereats, &v1, OrderApi::Auto).unwrap();
        assert_eq!(
            (p.kind, p.api, p.path.as_str()),
            (
                Kind::Cancelled,
                OrderApi::V1,
                "/v1/delivery/order/abc-2?expand=carts,deliveries,payment"
            )
        );
        // The host of the href is never used, and a configured API wins.
        let elsewhere = uber_body(
            "orders.notification",
            "abc-3",
            "https://evil.example/v1/delivery/order/abc-3",
        );
        let p = plan(Provider::Ubereats, &elsewhere, OrderApi::V2).unwrap();
        assert_eq!(p.path, "/v2/eats/order/abc-3");
    }

    #[test]
    fn uber_events_map_to_kinds_and_others_are_refused() {
        let href = "https://api.uber.com/v2/eats/order/o";
        for (event, kind) in [
            ("orders.scheduled.notification", Kind::New),
            ("orders.failure", Kind::Cancelled),
            ("orders.release", Kind::Updated),
        ] {
            assert_eq!(
                plan(
                    Provider::Ubereats,
                    &uber_body(event, "o", href),
                    OrderApi::Auto
                )
                .unwrap()
                .kind,
                kind
            );
        }
        assert_eq!(
            plan(
                Provider::Ubereats,
                &uber_body("store.provisioned", "o", href),
                OrderApi::Auto
            ),
            Err(PlanError::Unsupported {
                provider: Provider::Ubereats,
                event: "store.provisioned".into()
            })
        );
    }

    #[test]
    fn wolt_reads_v2_unless_configured_for_v1() {
        let b = wolt_body("order.notification", "CREATED", "66a1f0c2b3d4e5f6a7b8c9d0");
        let p = plan(Provider::Wolt, &b, OrderApi::V2).unwrap();
        assert_eq!(
            (p.kind, p.path.as_str()),
            (Kind::New, "/v2/orders/66a1f0c2b3d4e5f6a7b8c9d0")
        );
        assert_eq!(p.venue_id.as_deref(), Some("v1"));
        let p = plan(Provider::Wolt, &b, OrderApi::V1).unwrap();
        assert_eq!(p.path, "/orders/66a1f0c2b3d4e5f6a7b8c9d0");
        let cancelled = wolt_body("order.notification", "CANCELED", "x");
        assert_eq!(
            plan(Provider::Wolt, &cancelled, OrderApi::V2).unwrap().kind,
            Kind::Cancelled
        );
        let ready = wolt_body("order.notification", "READY", "x");
        assert_eq!(
            plan(Provider::Wolt, &ready, OrderApi::V2).unwrap().kind,
            Kind::Updated
        );
        let drive = wolt_body("delivery.status", "READY", "x");
        assert!(matches!(
            plan(Provider::Wolt, &drive, OrderApi::V2),
            Err(PlanError::Unsupported { .. })
        ));
    }

    #[test]
    fn order_ids_cannot_steer_the_path() {
        for bad in [
            "../v2/eats/stores",
            "a/b",
            "a?x=1",
            "a#b",
            "a%2Fb",
            "",
            " ",
            &"a".repeat(129),
        ] {
            let b = uber_body(
                "orders.notification",
                bad,
                "https://api.uber.com/v2/eats/order/x",
            );
            assert!(
                matches!(plan(Provider::Ubereats, &b, OrderApi::Auto), Err(PlanError::Invalid(m)) if m.contains("is not an order id")),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn unreadable_notifications_are_invalid() {
        assert!(matches!(
            plan(Provider::Ubereats, b"{", OrderApi::Auto),
            Err(PlanError::Invalid(_))
        ));
        assert!(
            matches!(plan(Provider::Wolt, br#"{"type":"order.notification","order":{"id":"x"}}"#, OrderApi::V2), Err(PlanError::Invalid(m)) if m.contains("status"))
        );
        assert!(matches!(
            plan(Provider::Careem, b"{}", OrderApi::V2),
            Err(PlanError::Invalid(_))
        ));
    }
}
