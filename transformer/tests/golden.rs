//! Golden files: every payload under `tests/fixtures/<provider>/` (workspace
//! root) is converted and compared, exactly, with `<name>.expected.json`
//! beside it: the canonical order, or `{"error": {"class", "message"}}` for
//! a payload that must be refused. `<name>.headers.json`, when present, adds
//! delivery headers (the ingress's `Orderhub-Path-*`).
//!
//! `UPDATE_GOLDEN=1 cargo test -p transformer --test golden` rewrites the
//! expected files; review every change by hand against the provider docs
//! (money to the last fils) before committing it.

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

fn sibling(payload: &Path, suffix: &str) -> PathBuf {
    let stem = payload.file_stem().and_then(|s| s.to_str()).unwrap();
    payload.with_file_name(format!("{stem}.{suffix}.json"))
}

/// The conversion's result as JSON: the order in its own field order (so
/// that expected files read like the contract), or the error.
fn outcome(provider: Provider, payload: &Path) -> String {
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
    let d = support::delivery(
        provider,
        &format!("acme-{provider}"),
        &format!("wh-{provider}-{stem}"),
        &body,
        &extra,
    );
    let value = match transformer::convert(&support::hub(), &d) {
        Ok(order) => return serde_json::to_string_pretty(&order).unwrap() + "\n",
        Err(e) => json!({ "error": { "class": e.class(), "message": e.to_string() } }),
    };
    serde_json::to_string_pretty(&value).unwrap() + "\n"
}

#[test]
fn every_fixture_converts_to_its_expected_output() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut checked = 0;
    let mut failures = Vec::new();
    for provider in Provider::ALL {
        let dir = fixtures().join(provider.as_str());
        let mut payloads: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (every provider has a fixtures folder)",
                    dir.display()
                )
            })
            .map(|e| e.unwrap().path())
            .filter(|p| is_payload(p))
            .collect();
        payloads.sort();
        assert!(!payloads.is_empty(), "no fixtures for {provider}");
        for payload in payloads {
            let text = outcome(provider, &payload);
            let got: Value = serde_json::from_str(&text).unwrap();
            let expected_path = sibling(&payload, "expected");
            if update {
                std::fs::write(&expected_path, &text).unwrap();
            }
            let expected: Value = match std::fs::read(&expected_path) {
                Ok(text) => serde_json::from_slice(&text).unwrap(),
                Err(e) => panic!("{}: {e}", expected_path.display()),
            };
            if got != expected {
                failures.push(format!("{}:\n{text}", payload.display()));
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
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if is_payload(&path) {
                assert_eq!(
                    outcome(provider, &path),
                    outcome(provider, &path),
                    "{}",
                    path.display()
                );
            }
        }
    }
}
