//! Golden files: every payload under `tests/fixtures/<provider>/` (workspace
//! root) is converted and compared, exactly, with `<name>.expected.json`
//! beside it: the canonical order, or `{"error": {"class", "message"}}` for
//! a payload that must be refused. `<name>.headers.json`, when present, adds
//! delivery headers (the ingress's `Orderhub-Path-*`, an `Orderhub-Account`).
//!
//! Providers whose webhooks are notifications (Uber Eats, Wolt) also have
//! `<provider>/fetched/<name>.json`: what the provider's API answers for the
//! order, with the fetcher's headers in `<name>.headers.json`
//! (`Orderhub-Notification-Event`, `Orderhub-Fetched-Api`). Those are
//! converted as the fetcher publishes them, on
//! `webhooks.fetched.<provider>.<account>`. The notification
//! `<provider>/<name>.json` that leads to one is not converted into an
//! order (the transformer refuses it as `fetch_required`); its expected
//! order must be the fetched one's, byte for byte, so the two never drift
//! (the end-to-end suite sends the notification and expects that order).
//!
//! `UPDATE_GOLDEN=1 cargo test -p transformer --test golden` rewrites the
//! expected files (a notification's from its fetched order's); review every
//! change by hand against the provider docs (money to the last fils) before
//! committing it.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use shared::Provider;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn is_payload(path: &Path) -> bool {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    name.ends_with(".json") && !name.ends_with(".expected.json") && !name.ends_with(".headers.json")
}

/// The payloads directly in `dir`, sorted; none when it does not exist.
fn payloads(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().path())
            .filter(|p| is_payload(p))
            .collect(),
        Err(_) => Vec::new(),
    };
    found.sort();
    found
}

fn sibling(payload: &Path, suffix: &str) -> PathBuf {
    let stem = payload.file_stem().and_then(|s| s.to_str()).unwrap();
    payload.with_file_name(format!("{stem}.{suffix}.json"))
}

fn fetched_dir(provider: Provider) -> PathBuf {
    fixtures().join(provider.as_str()).join("fetched")
}

/// The conversion's result as JSON: the order in its own field order (so
/// that expected files read like the contract), or the error. A `fetched`
/// payload arrives on the fetcher's subject.
fn outcome(provider: Provider, payload: &Path, fetched: bool) -> String {
    let body = std::fs::read(payload).unwrap();
    let headers: BTreeMap<String, String> = match std::fs::read(sibling(payload, "headers")) {
        Ok(text) => serde_json::from_slice(&text).unwrap(),
        Err(_) => BTreeMap::new(),
    };
    let extra: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let stem = payload.file_stem().unwrap().to_str().unwrap();
    let mut d = support::delivery(
        provider,
        &format!("acme-{provider}"),
        &format!("wh-{provider}-{stem}"),
        &body,
        &extra,
    );
    if fetched {
        let account = headers
            .get(shared::headers::ACCOUNT)
            .cloned()
            .unwrap_or_else(|| format!("acme-{provider}"));
        d.subject = format!("webhooks.fetched.{provider}.{account}");
    }
    let value = match transformer::convert(&support::hub(), &d) {
        Ok(order) => return serde_json::to_string_pretty(&order).unwrap() + "\n",
        Err(e) => json!({ "error": { "class": e.class(), "message": e.to_string() } }),
    };
    serde_json::to_string_pretty(&value).unwrap() + "\n"
}

fn read_json(path: &Path) -> Value {
    match std::fs::read(path) {
        Ok(text) => serde_json::from_slice(&text).unwrap(),
        Err(e) => panic!("{}: {e}", path.display()),
    }
}

/// Converts `payload` and compares with its expected file (rewriting it
/// first under `UPDATE_GOLDEN`); a difference is pushed to `failures`.
fn check(provider: Provider, payload: &Path, fetched: bool, failures: &mut Vec<String>) {
    let text = outcome(provider, payload, fetched);
    let got: Value = serde_json::from_str(&text).unwrap();
    let expected_path = sibling(payload, "expected");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&expected_path, &text).unwrap();
    }
    if got != read_json(&expected_path) {
        failures.push(format!("{}:\n{text}", payload.display()));
    }
}

/// A notification: the transformer refuses it, and its expected order is
/// its fetched counterpart's.
fn check_notification(provider: Provider, payload: &Path, failures: &mut Vec<String>) {
    let name = payload.file_name().unwrap();
    let fetched = fetched_dir(provider).join(name);
    assert!(
        fetched.exists(),
        "{}: a notification needs the order it leads to, {}",
        payload.display(),
        fetched.display()
    );
    let refused: Value = serde_json::from_str(&outcome(provider, payload, false)).unwrap();
    if refused["error"]["class"] != "fetch_required" {
        failures.push(format!(
            "{}: the raw notification is not refused as fetch_required: {refused:#}",
            payload.display()
        ));
    }
    let fetched_expected = sibling(&fetched, "expected");
    let expected_path = sibling(payload, "expected");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::copy(&fetched_expected, &expected_path).unwrap();
    }
    if std::fs::read(&expected_path).ok() != std::fs::read(&fetched_expected).ok() {
        failures.push(format!(
            "{}: differs from {}",
            expected_path.display(),
            fetched_expected.display()
        ));
    }
}

#[test]
fn every_fixture_converts_to_its_expected_output() {
    let mut checked = 0;
    let mut failures = Vec::new();
    for provider in Provider::ALL {
        let dir = fixtures().join(provider.as_str());
        assert!(
            dir.is_dir(),
            "{}: every provider has a fixtures folder",
            dir.display()
        );
        let top = payloads(&dir);
        assert!(!top.is_empty(), "no fixtures for {provider}");
        // Fetched orders first: a notification's expected file copies one.
        let fetched = payloads(&fetched_dir(provider));
        let notifies = matches!(provider, Provider::Ubereats | Provider::Wolt);
        assert_eq!(
            notifies,
            !fetched.is_empty(),
            "{provider}: fetched orders are for the providers that notify"
        );
        for payload in &fetched {
            check(provider, payload, true, &mut failures);
            checked += 1;
        }
        for payload in &top {
            if notifies {
                check_notification(provider, payload, &mut failures);
            } else {
                check(provider, payload, false, &mut failures);
            }
            checked += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} differ:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// Converting the same delivery twice gives the same bytes.
#[test]
fn conversion_is_deterministic() {
    for provider in Provider::ALL {
        let dir = fixtures().join(provider.as_str());
        for (path, fetched) in payloads(&dir).into_iter().map(|p| (p, false)).chain(
            payloads(&fetched_dir(provider))
                .into_iter()
                .map(|p| (p, true)),
        ) {
            assert_eq!(
                outcome(provider, &path, fetched),
                outcome(provider, &path, fetched),
                "{}",
                path.display()
            );
        }
    }
}
