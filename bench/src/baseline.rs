//! The bare baseline: the least a durable webhook endpoint must do. warp,
//! `POST /webhook`, the body read under a content-length limit, one hex
//! HMAC-SHA256 header verified in constant time, a JetStream publish whose
//! PubAck is awaited, then 202 JSON.
//!
//! Variants isolate what the ingress's NATS message costs on top: `--msg-id`
//! adds a `Nats-Msg-Id` (the server's duplicate tracking), `--hub-headers`
//! the other `Orderhub-*` headers and the content type the ingress puts on
//! each message, and `--traceparent` its W3C `traceparent` (same names and
//! sizes, values made cheaply).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_nats::jetstream;
use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use warp::Filter;
use warp::http::StatusCode;

/// Same limit as the ingress's default.
pub const MAX_BODY: u64 = 1024 * 1024;

/// The signature header (Careem's).
pub const SIGNATURE_HEADER: &str = "x-careem-signature";

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Port on 127.0.0.1
    #[arg(long)]
    pub port: u16,
    /// NATS server URL
    #[arg(long)]
    pub nats_url: String,
    /// Subject to publish to (in a stream)
    #[arg(long, default_value = "webhooks.raw.careem.bench-careem")]
    pub subject: String,
    /// The HMAC key
    #[arg(long, env = "BENCH_CAREEM_SECRET", hide_env_values = true)]
    pub secret: String,
    /// Add a `Nats-Msg-Id` (hash of the body) as the ingress does
    #[arg(long)]
    pub msg_id: bool,
    /// Add the ingress's `Orderhub-*` and content-type message headers
    #[arg(long)]
    pub hub_headers: bool,
    /// Add a `traceparent` message header as the ingress does, this
    /// percentage of them marked sampled
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub traceparent: Option<u8>,
}

struct State {
    js: jetstream::Context,
    key: Vec<u8>,
    subject: String,
    msg_id: bool,
    hub_headers: bool,
    traceparent: Option<u8>,
    seq: AtomicU64,
}

fn json(status: StatusCode, value: serde_json::Value) -> warp::reply::Response {
    use warp::Reply;
    warp::reply::with_status(warp::reply::json(&value), status).into_response()
}

fn verified(key: &[u8], signature: Option<&str>, body: &[u8]) -> bool {
    let mut tag = [0u8; 32];
    let Some(sig) = signature else { return false };
    if hex::decode_to_slice(sig.trim(), &mut tag).is_err() {
        return false;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("hmac takes any key length");
    mac.update(body);
    mac.verify_slice(&tag).is_ok()
}

impl State {
    fn headers(&self, body: &[u8]) -> async_nats::HeaderMap {
        let mut h = async_nats::HeaderMap::new();
        if self.msg_id {
            let digest = xxhash_rust::xxh3::xxh3_128(body);
            h.insert(
                "Nats-Msg-Id",
                format!("careem:bench-careem:{digest:032x}").as_str(),
            );
        }
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        if self.hub_headers {
            // Same sizes as a UUIDv7 and an RFC 3339 time in ms.
            h.insert(
                "Orderhub-Webhook-Id",
                format!("01900000-0000-7000-8000-{n:012x}").as_str(),
            );
            h.insert("Orderhub-Provider", "careem");
            h.insert("Orderhub-Account", "bench-careem");
            h.insert("Orderhub-Tenant", "bench");
            h.insert("Orderhub-Received-At", "2026-11-28T06:00:00.000Z");
            h.insert("Content-Type", "application/json");
        }
        if let Some(percent) = self.traceparent {
            let flags = if n % 100 < u64::from(percent) {
                "01"
            } else {
                "00"
            };
            h.insert(
                "traceparent",
                format!("00-{n:032x}-{n:016x}-{flags}").as_str(),
            );
        }
        h
    }

    async fn handle(&self, signature: Option<String>, body: Bytes) -> warp::reply::Response {
        if !verified(&self.key, signature.as_deref(), &body) {
            return json(
                StatusCode::UNAUTHORIZED,
                serde_json::json!({"error": "unauthorized"}),
            );
        }
        let subject = self.subject.clone();
        let publish = if self.msg_id || self.hub_headers || self.traceparent.is_some() {
            let h = self.headers(&body);
            self.js.publish_with_headers(subject, h, body).await
        } else {
            self.js.publish(subject, body).await
        };
        let acked = match publish {
            Ok(ack) => ack.await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match acked {
            Ok(_) => json(
                StatusCode::ACCEPTED,
                serde_json::json!({"status": "accepted"}),
            ),
            Err(e) => json(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"error": e}),
            ),
        }
    }
}

/// Serves until killed.
pub async fn serve(args: Args) -> anyhow::Result<bool> {
    let client = async_nats::connect(&args.nats_url).await?;
    let state = Arc::new(State {
        js: jetstream::new(client),
        key: args.secret.into_bytes(),
        subject: args.subject,
        msg_id: args.msg_id,
        hub_headers: args.hub_headers,
        traceparent: args.traceparent,
        seq: AtomicU64::new(0),
    });
    let route = warp::post()
        .and(warp::path("webhook"))
        .and(warp::path::end())
        .and(warp::body::content_length_limit(MAX_BODY))
        .and(warp::header::optional::<String>(SIGNATURE_HEADER))
        .and(warp::body::bytes())
        .then(move |signature: Option<String>, body: Bytes| {
            let state = state.clone();
            async move { state.handle(signature, body).await }
        });
    warp::serve(route).run(([127, 0, 0, 1], args.port)).await;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    #[test]
    fn verifies_what_the_careem_scheme_signs() {
        let body = br#"{"order_id":"x"}"#;
        let signed = ingress::verify::careem::sign(body, &SecretString::from("k"));
        let sig = signed[SIGNATURE_HEADER].to_str().unwrap();
        assert!(verified(b"k", Some(sig), body));
        assert!(!verified(b"other", Some(sig), body));
        assert!(!verified(b"k", Some(sig), b"{}"));
        assert!(!verified(b"k", Some("zz"), body));
        assert!(!verified(b"k", None, body));
    }
}
