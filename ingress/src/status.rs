//! The backend's status API (DESIGN §8.3, issue 14): a restaurant's
//! backend tells the hub what it does with an order (accept, reject, ready,
//! ...), and the hub stores that decision for the status worker, which
//! carries it to the provider.
//!
//! Contract:
//! - Consumes `POST /api/tenants/{tenant}/orders/{provider}/{provider_order_id}/status`
//!   ([`ROUTE`]), signed with Standard Webhooks headers (`webhook-id`,
//!   `webhook-timestamp`, `webhook-signature`) over the exact raw body with
//!   any of the tenant's `signing_secrets`, within the ingress's Standard
//!   Webhooks timestamp tolerance. The path segments are percent-decoded.
//! - Checks, in this order: the client address's budget for
//!   unauthenticated work (429), the body limit and timeout (413, 408), the
//!   signature (401: one body for an unknown tenant, a tenant without a
//!   signing secret, a missing header, a bad signature and a stale
//!   timestamp, and the same verification work for each, padded with
//!   dummy secrets like the webhook routes), the body
//!   ([`StatusRequest::parse`]: 400 with every field error), the order's
//!   context in the `ORDER_CONTEXT` bucket (404 `unknown_order` without one,
//!   or when its account is no longer configured for the tenant), the
//!   provider's capability ([`answer::supports`]: 422 `unsupported_action`).
//! - Publishes a [`StatusCommand`] (origin `backend`) to
//!   `status.<provider>.<account>` on the `STATUS` stream with
//!   `Nats-Msg-Id: status:<status_id>`, `status_id` being the first 32 hex
//!   digits of SHA-256(tenant `\n` provider `\n` order id `\n` webhook-id): a re-sent request is stored
//!   once. 202 `queued` only after JetStream acked; a duplicate ack is 200
//!   `duplicate` with the same id. No connection, no ack in time, a
//!   publish or bucket read that fails: 503 with `Retry-After`.
//! - Metrics: `ingress_status_requests_total{provider, outcome}`; no
//!   tenant, order or status id as a label.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use async_nats::jetstream::kv;
use bytes::Bytes;
use canonical::status::{Action, FieldError, Origin, StatusCommand, StatusRequest};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use sha2::{Digest, Sha256};
use shared::Provider;
use shared::answer::{self, OrderContext};
use shared::headers;
use tracing::{info, warn};
use warp::http::{HeaderMap, StatusCode};

use crate::net::Client;
use crate::pipeline::{
    Ingress, OFFLOAD_BODY_BYTES, Rejection, Snapshot, incoming_traceparent, verify_padded,
};
use crate::verify::{self, Verified, VerifyOptions};

/// The route, as in `openapi.json`.
pub const ROUTE: &str = "/api/tenants/{tenant}/orders/{provider}/{provider_order_id}/status";

/// A status request as the route hands it over.
#[derive(Debug)]
pub struct StatusIncoming {
    /// Percent-decoded path segments.
    pub tenant: String,
    pub provider: Provider,
    pub provider_order_id: String,
    pub headers: HeaderMap,
    pub client: Option<Client>,
    pub body: Bytes,
}

/// A stored decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// New: JetStream acked it.
    Queued { status_id: String },
    /// The same `webhook-id` was stored before (within the `STATUS`
    /// stream's duplicate window).
    Duplicate { status_id: String },
}

/// Why a status request was not stored. Each maps to one status and one
/// `outcome` label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusRejection {
    /// Refused like a webhook: the client's budget (429), the body (413,
    /// 408), the signature or tenant (401), NATS (503).
    Webhook(Rejection),
    /// The body, with every problem in it.
    Invalid(Vec<FieldError>),
    /// No context for the order (the hub never saw it, or it expired), or
    /// its account is not configured for the tenant any more.
    UnknownOrder,
    /// The provider has no call for this action on this order.
    Unsupported { provider: Provider, action: Action },
}

impl StatusRejection {
    pub fn status(&self) -> StatusCode {
        match self {
            StatusRejection::Webhook(r) => r.status(),
            StatusRejection::Invalid(_) => StatusCode::BAD_REQUEST,
            StatusRejection::UnknownOrder => StatusCode::NOT_FOUND,
            StatusRejection::Unsupported { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }

    /// The `outcome` label.
    pub fn outcome(&self) -> &'static str {
        match self {
            StatusRejection::Webhook(r) => r.outcome(),
            StatusRejection::Invalid(_) => "invalid",
            StatusRejection::UnknownOrder => "unknown_order",
            StatusRejection::Unsupported { .. } => "unsupported",
        }
    }

    fn unavailable(e: impl Into<String>) -> StatusRejection {
        StatusRejection::Webhook(Rejection::Unavailable(e.into()))
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    provider: &'static str,
    outcome: &'static str,
}

/// The status API.
pub struct StatusApi {
    ingress: Arc<Ingress>,
    contexts: kv::Store,
    requests: Family<StatusLabels, Counter>,
}

impl StatusApi {
    /// `contexts` is the `ORDER_CONTEXT` bucket.
    pub fn new(ingress: Arc<Ingress>, contexts: kv::Store, registry: &mut Registry) -> StatusApi {
        let requests = Family::<StatusLabels, Counter>::default();
        registry.register(
            "status_requests",
            "Status API requests by provider and outcome",
            requests.clone(),
        );
        StatusApi {
            ingress,
            contexts,
            requests,
        }
    }

    pub fn ingress(&self) -> &Ingress {
        &self.ingress
    }

    fn count(&self, provider: Provider, outcome: &'static str) {
        self.requests
            .get_or_create(&StatusLabels {
                provider: provider.as_str(),
                outcome,
            })
            .inc();
    }

    /// Records a request refused before [`StatusApi::handle`] (client
    /// over its budget, body too large or too slow).
    pub fn record_early(&self, provider: Provider, client: Option<Client>, rejection: &Rejection) {
        self.ingress.charge_client(client, rejection);
        self.count(provider, rejection.outcome());
        info!(
            provider = %provider,
            outcome = rejection.outcome(),
            status = rejection.status().as_u16(),
            "status request refused"
        );
    }

    /// Checks, stores and says what happened; one log line and one counter
    /// per request.
    pub async fn handle(&self, req: StatusIncoming) -> Result<Stored, StatusRejection> {
        let started = Instant::now();
        let result = self.check_and_store(&req).await;
        if let Err(StatusRejection::Webhook(r)) = &result {
            self.ingress.charge_client(req.client, r);
        }
        let outcome = match &result {
            Ok(Stored::Queued { .. }) => "queued",
            Ok(Stored::Duplicate { .. }) => "duplicate",
            Err(r) => r.outcome(),
        };
        self.count(req.provider, outcome);
        let status = match &result {
            Ok(Stored::Queued { .. }) => 202,
            Ok(Stored::Duplicate { .. }) => 200,
            Err(r) => r.status().as_u16(),
        };
        let status_id = match &result {
            Ok(Stored::Queued { status_id } | Stored::Duplicate { status_id }) => {
                Some(status_id.as_str())
            }
            Err(_) => None,
        };
        // The tenant and the order are logged only once the request proved
        // it holds the tenant's secret.
        let verified = !matches!(
            result,
            Err(StatusRejection::Webhook(
                Rejection::Unauthorized(_)
                    | Rejection::TooLarge { .. }
                    | Rejection::BodyTimeout
                    | Rejection::RateLimited { .. }
            ))
        );
        let (tenant, order) = if verified {
            (
                Some(req.tenant.as_str()),
                Some(req.provider_order_id.as_str()),
            )
        } else {
            (None, None)
        };
        let duration_us = started.elapsed().as_micros() as u64;
        match &result {
            Err(StatusRejection::Webhook(Rejection::Unavailable(e))) => warn!(
                provider = %req.provider,
                tenant,
                provider_order_id = order,
                outcome,
                status,
                error = %e,
                duration_us,
                "status request not stored"
            ),
            _ => info!(
                status_id,
                provider = %req.provider,
                tenant,
                provider_order_id = order,
                outcome,
                status,
                duration_us,
                "status request"
            ),
        }
        result
    }

    async fn check_and_store(&self, req: &StatusIncoming) -> Result<Stored, StatusRejection> {
        // One config for the whole request: the tenant index verified is
        // the tenant used.
        let snapshot = self.ingress.snapshot();
        let hub = &*snapshot.hub;
        let tenant = hub.tenants.iter().position(|t| t.id == req.tenant);
        self.verify(&snapshot, tenant, req).await?;
        let tenant = &hub.tenants[tenant.expect("verified against a known tenant")];
        let webhook_id = req
            .headers
            .get(verify::direct::ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .expect("a verified request has its webhook-id");
        let status_id = status_id(&tenant.id, req.provider, &req.provider_order_id, webhook_id);
        let request = StatusRequest::parse(&req.body).map_err(StatusRejection::Invalid)?;
        let ctx = self
            .context(&tenant.id, req.provider, &req.provider_order_id)
            .await?;
        let account = hub
            .account(req.provider, &ctx.account)
            .filter(|a| a.tenant == tenant.id)
            .ok_or(StatusRejection::UnknownOrder)?;
        if !answer::supports(account, &ctx, request.action) {
            return Err(StatusRejection::Unsupported {
                provider: req.provider,
                action: request.action,
            });
        }
        let command = StatusCommand {
            schema: Default::default(),
            status_id,
            tenant: tenant.id.clone(),
            provider: req.provider,
            account: account.id.clone(),
            provider_order_id: ctx.provider_order_id,
            action: request.action,
            reason: request.reason,
            ready_at: request.ready_at,
            unavailable_items: request.unavailable_items,
            origin: Origin::Backend,
            decided_at: time::OffsetDateTime::now_utc(),
            order_webhook_id: Some(ctx.webhook_id),
        };
        self.publish(command, incoming_traceparent(&req.headers))
            .await
    }

    /// Verifies with the tenant's signing secrets (`tenant` an index into
    /// the hub's tenants; `None`, or a tenant without a secret: against
    /// dummies), the same work for every refusal; a large body on a
    /// blocking thread.
    async fn verify(
        &self,
        snapshot: &Snapshot,
        tenant: Option<usize>,
        req: &StatusIncoming,
    ) -> Result<Verified, StatusRejection> {
        let now = SystemTime::now();
        let options = VerifyOptions::default();
        // Every refusal costs this many secrets' verification: the most
        // any tenant has.
        let pad_to = snapshot.max_tenant_secrets;
        let tenant = tenant.filter(|&i| !snapshot.hub.tenants[i].signing_secrets.is_empty());
        let result = if req.body.len() < OFFLOAD_BODY_BYTES {
            let secrets = tenant.map(|i| (&snapshot.hub.tenants[i].signing_secrets[..], &options));
            verify_padded(
                Provider::Direct,
                &req.headers,
                &req.body,
                secrets,
                &options,
                &snapshot.dummy_secrets,
                pad_to,
                now,
            )
        } else {
            let _permit = self
                .ingress
                .heavy_verifications
                .acquire()
                .await
                .expect("the semaphore is never closed");
            let (hub, dummies) = (snapshot.hub.clone(), snapshot.dummy_secrets.clone());
            let (headers, body) = (req.headers.clone(), req.body.clone());
            tokio::task::spawn_blocking(move || {
                let secrets = tenant.map(|i| (&hub.tenants[i].signing_secrets[..], &options));
                verify_padded(
                    Provider::Direct,
                    &headers,
                    &body,
                    secrets,
                    &options,
                    &dummies,
                    pad_to,
                    now,
                )
            })
            .await
            .map_err(|_| StatusRejection::unavailable("verification did not finish"))?
        };
        match (result, tenant) {
            (Ok(verified), Some(_)) => Ok(verified),
            (_, None) => Err(StatusRejection::Webhook(Rejection::Unauthorized(
                "unknown_tenant",
            ))),
            (Err(e), Some(_)) => Err(StatusRejection::Webhook(Rejection::Unauthorized(
                e.error_type(),
            ))),
        }
    }

    /// The order's context, or why there is none to use.
    async fn context(
        &self,
        tenant: &str,
        provider: Provider,
        provider_order_id: &str,
    ) -> Result<OrderContext, StatusRejection> {
        let ingress = &self.ingress;
        if ingress.publisher.client().connection_state() != async_nats::connection::State::Connected
        {
            return Err(StatusRejection::unavailable("not connected to NATS"));
        }
        let key = answer::key(tenant, provider, provider_order_id);
        let entry =
            match tokio::time::timeout(ingress.publish_timeout, self.contexts.get(key)).await {
                Ok(Ok(entry)) => entry,
                Ok(Err(e)) => {
                    return Err(StatusRejection::unavailable(format!(
                        "order context read failed: {e}"
                    )));
                }
                Err(_) => {
                    return Err(StatusRejection::unavailable(format!(
                        "no order context answer within {:?}",
                        ingress.publish_timeout
                    )));
                }
            };
        let bytes = entry.ok_or(StatusRejection::UnknownOrder)?;
        serde_json::from_slice(&bytes).map_err(|e| {
            warn!(provider = %provider, error = %e, "unreadable order context");
            StatusRejection::UnknownOrder
        })
    }

    async fn publish(
        &self,
        command: StatusCommand,
        traceparent: Option<String>,
    ) -> Result<Stored, StatusRejection> {
        use async_nats::{HeaderName, HeaderValue};
        let ingress = &self.ingress;
        let name = HeaderName::from_static;
        let mut h = async_nats::HeaderMap::new();
        h.insert(
            name("Nats-Msg-Id"),
            HeaderValue::from(format!("status:{}", command.status_id)),
        );
        h.insert(name(headers::STATUS_ID), command.status_id.as_str());
        h.insert(name(headers::TENANT), command.tenant.as_str());
        h.insert(name(headers::PROVIDER), command.provider.as_str());
        h.insert(name(headers::ACCOUNT), command.account.as_str());
        if let Some(tp) = traceparent {
            h.insert(name(headers::TRACEPARENT), HeaderValue::from(tp));
        }
        let subject = shared::subjects::status_command(command.provider, &command.account);
        let payload = Bytes::from(serde_json::to_vec(&command).expect("a command serializes"));
        if ingress.publisher.client().connection_state() != async_nats::connection::State::Connected
        {
            ingress
                .publishing
                .store(false, std::sync::atomic::Ordering::Relaxed);
            return Err(StatusRejection::unavailable("not connected to NATS"));
        }
        // One deadline for the hand-over and the PubAck, as for webhooks.
        let publish = async {
            ingress
                .publisher
                .publish_with_headers(subject, h, payload)
                .await?
                .await
        };
        let ack = match tokio::time::timeout(ingress.publish_timeout, publish).await {
            Ok(Ok(ack)) => ack,
            Ok(Err(e)) => {
                ingress
                    .publishing
                    .store(false, std::sync::atomic::Ordering::Relaxed);
                return Err(StatusRejection::unavailable(e.to_string()));
            }
            Err(_) => {
                ingress
                    .publishing
                    .store(false, std::sync::atomic::Ordering::Relaxed);
                return Err(StatusRejection::unavailable(format!(
                    "no ack within {:?}",
                    ingress.publish_timeout
                )));
            }
        };
        ingress
            .publishing
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let status_id = command.status_id;
        Ok(if ack.duplicate {
            Stored::Duplicate { status_id }
        } else {
            Stored::Queued { status_id }
        })
    }
}

/// The id of a backend's decision: the first 32 hex digits of
/// SHA-256(tenant `\n` provider `\n` order id `\n` webhook-id), so a re-send
/// (same `webhook-id`, same order) gets the same id and JetStream's
/// duplicate window stores it once, while a `webhook-id` reused for another
/// order (the signature covers the body, not the path) is another decision,
/// never answered `duplicate` unstored; two tenants' ids never meet.
pub fn status_id(
    tenant: &str,
    provider: Provider,
    provider_order_id: &str,
    webhook_id: &str,
) -> String {
    let digest = Sha256::new()
        .chain_update(tenant.as_bytes())
        .chain_update(b"\n")
        .chain_update(provider.as_str().as_bytes())
        .chain_update(b"\n")
        .chain_update(provider_order_id.as_bytes())
        .chain_update(b"\n")
        .chain_update(webhook_id.as_bytes())
        .finalize();
    hex::encode(&digest[..16])
}

/// A path segment percent-decoded, or `None` when it does not decode to
/// UTF-8 (or a `%` is not followed by two hex digits).
pub fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let text = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(text, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_ids_are_the_same_for_a_resend_and_apart_across_tenants() {
        let of = |tenant, order, msg| status_id(tenant, Provider::Wolt, order, msg);
        let id = of("acme", "o1", "msg_1");
        assert_eq!(id.len(), 32);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(of("acme", "o1", "msg_1"), id);
        assert_ne!(of("other", "o1", "msg_1"), id);
        assert_ne!(of("acme", "o1", "msg_2"), id);
        // The same webhook-id for another order is another decision.
        assert_ne!(of("acme", "o2", "msg_1"), id);
        assert_ne!(status_id("acme", Provider::Talabat, "o1", "msg_1"), id);
        // SHA-256("acme\nwolt\no1\nmsg_1"), first 16 bytes: stable across
        // releases, as the duplicate window depends on it.
        assert_eq!(id, "2d806707e96f73a776bfb2d51444cc73");
    }

    #[test]
    fn path_segments_are_percent_decoded() {
        assert_eq!(
            percent_decode("gb%3A5f1c%2Fx").as_deref(),
            Some("gb:5f1c/x")
        );
        assert_eq!(percent_decode("plain-1").as_deref(), Some("plain-1"));
        assert_eq!(
            percent_decode("%D9%85%D8%B7%D8%B9%D9%85").as_deref(),
            Some("مطعم")
        );
        assert_eq!(percent_decode("a+b").as_deref(), Some("a+b"));
        for bad in ["%", "%4", "%zz", "%FF"] {
            assert_eq!(percent_decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn rejections_map_to_their_statuses_and_labels() {
        let cases = [
            (
                StatusRejection::Webhook(Rejection::Unauthorized("bad_signature")),
                401,
                "unauthorized",
            ),
            (StatusRejection::Invalid(vec![]), 400, "invalid"),
            (StatusRejection::UnknownOrder, 404, "unknown_order"),
            (
                StatusRejection::Unsupported {
                    provider: Provider::Careem,
                    action: Action::Accept,
                },
                422,
                "unsupported",
            ),
            (StatusRejection::unavailable("x"), 503, "unavailable"),
        ];
        for (r, status, outcome) in cases {
            assert_eq!((r.status().as_u16(), r.outcome()), (status, outcome));
        }
    }
}
