//! What the transformer's tests share: a hub config with one account per
//! provider, and deliveries built the way the worker loop hands them over.

#![allow(dead_code)]

use async_nats::HeaderMap;
use bytes::Bytes;
use shared::Provider;
use shared::config::HubConfig;
use shared::headers;
use shared::worker::Delivery;

/// One tenant (`acme`, lenient), one tenant that requires mappings
/// (`strict`), and an account per provider for each.
pub const HUB: &str = include_str!("../../../tests/fixtures/hub.toml");

pub fn hub() -> HubConfig {
    hub_from(HUB)
}

/// A hub config from `toml` (a variant of [`HUB`]). Every secret is `S`, a
/// Standard Webhooks secret; Grab's (`S_GRAB`) signs the tokens the hub
/// issues and must be 32 bytes at least.
pub fn hub_from(toml: &str) -> HubConfig {
    HubConfig::from_toml(toml, "test", &|name| {
        Some(match name {
            "S_GRAB" => "grab-token-signing-key-for-tests-only-32b".to_owned(),
            _ => "whsec_dGVzdA==".to_owned(),
        })
    })
    .expect("test hub")
}

/// A fixture's bytes, `path` under `tests/fixtures/`.
pub fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/../tests/fixtures/{path}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A fixture's text with each `(from, to)` replaced once; a replacement
/// that finds nothing fails the test (the fixture changed under it).
pub fn fixture_with(path: &str, edits: &[(&str, &str)]) -> String {
    let mut text = String::from_utf8(fixture(path)).unwrap();
    for (from, to) in edits {
        assert!(text.contains(from), "{path} has no {from:?}");
        text = text.replacen(from, to, 1);
    }
    text
}

/// The conversion of `d`: the order, or the refusal as `(class, text)`.
pub fn outcome(hub: &HubConfig, d: &Delivery) -> Result<canonical::order::Order, (String, String)> {
    transformer::convert(hub, d).map_err(|e| (e.class().as_str().to_owned(), e.to_string()))
}

/// A delivery of `payload` for `provider`'s account `account`, with the hub
/// headers the ingress sets and `extra` headers.
pub fn delivery(
    provider: Provider,
    account: &str,
    webhook_id: &str,
    payload: &[u8],
    extra: &[(&str, &str)],
) -> Delivery {
    let tenant = if account.starts_with("strict") {
        "strict"
    } else {
        "acme"
    };
    let mut h = HeaderMap::new();
    h.insert(headers::WEBHOOK_ID, webhook_id);
    h.insert(headers::PROVIDER, provider.as_str());
    h.insert(headers::ACCOUNT, account);
    h.insert(headers::TENANT, tenant);
    h.insert(headers::RECEIVED_AT, "2024-06-14T18:00:00Z");
    h.insert(
        headers::TRACEPARENT,
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    );
    for (k, v) in extra {
        h.insert(*k, *v);
    }
    Delivery {
        subject: shared::subjects::raw_webhook(provider, account),
        headers: h,
        payload: Bytes::copy_from_slice(payload),
        stream: "WEBHOOKS".to_owned(),
        stream_seq: 42,
        delivered: 1,
        published: std::time::SystemTime::UNIX_EPOCH,
        is_last: false,
        provider: provider.as_str().to_owned(),
        tenant: Some(tenant.to_owned()),
        webhook_id: Some(webhook_id.to_owned()),
    }
}

/// An order the fetcher fetched for the default (`acme-<provider>`)
/// account, on `webhooks.fetched.<provider>.<account>`, with `extra` headers
/// (the fetcher's `Orderhub-Fetched-Api` and `Orderhub-Notification-Event`).
pub fn fetched(provider: Provider, payload: &[u8], extra: &[(&str, &str)]) -> Delivery {
    let account = format!("acme-{provider}");
    let mut d = delivery(provider, &account, "wh-test", payload, extra);
    d.subject = shared::subjects::fetched_webhook(provider, &account);
    d
}

/// The default (`acme-<provider>`) account's delivery.
pub fn acme(provider: Provider, payload: &[u8]) -> Delivery {
    delivery(
        provider,
        &format!("acme-{provider}"),
        "wh-test",
        payload,
        &[],
    )
}
