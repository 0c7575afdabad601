//! The monitoring files agree with what the binaries export: every metric
//! the alert rules (k8s/monitoring/alerts.yaml), their unit tests' input
//! series (alerts.test.yaml) and the Grafana dashboard
//! (k8s/monitoring/dashboard.json) query is on some stage binary's
//! `/metrics`, scraped from the whole hub (every stage a process, the ledger
//! binary beside it on a database of its own) after traffic went through;
//! and every scrape passes `promtool check metrics` where promtool is
//! installed (scripts/check-deploy installs it; CI runs that first).

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use orderhub_tests::fixtures::{self, Signer};
use orderhub_tests::pg::TestDb;
use orderhub_tests::stack::{STAGES, bin};
use orderhub_tests::*;
use secrecy::SecretString;
use shared::Provider;
use shared::config::HubConfig;
use tokio::io::AsyncWriteExt;

const SECRET: &str = "whsec_dGVzdA==";
const ENV: [(&str, &str); 2] = [("S", SECRET), ("S_GRAB", GRAB_TOKEN_KEY)];

/// Metrics Prometheus makes itself, not a binary.
const PROMETHEUS_OWN: [&str; 1] = ["up"];

/// Families whose labels exist only with their first event, which this
/// test's traffic does not cause (a transformer, fetcher or status call
/// retried; a ledger write failing): a scrape shows them only after it.
/// Each must be registered by its stage (checked in the source), and no
/// other queried name may be missing from the scrapes.
const FIRST_EVENT_ONLY: [(&str, &str); 4] = [
    ("transformer_messages_retried_total", "shared/src/worker.rs"),
    ("fetcher_messages_retried_total", "shared/src/worker.rs"),
    ("status_sync_messages_retried_total", "shared/src/worker.rs"),
    ("ledger_write_errors_total", "ledger/src/metrics.rs"),
];

/// Whether `name` is one of [`FIRST_EVENT_ONLY`] and its family is
/// registered where that says.
fn registered_first_event_only(name: &str) -> bool {
    let Some((_, file)) = FIRST_EVENT_ONLY.iter().find(|(n, _)| *n == name) else {
        return false;
    };
    let stage_prefix = ["transformer_", "fetcher_", "status_sync_", "ledger_"]
        .into_iter()
        .find(|p| name.starts_with(p))
        .expect("a stage's metric");
    let family = name[stage_prefix.len()..].trim_end_matches("_total");
    let source = std::fs::read_to_string(workspace().join(file)).unwrap();
    source.contains(&format!("registry.register(\n            \"{family}\","))
}

fn hub_toml() -> String {
    std::fs::read_to_string(workspace().join("tests/fixtures/hub.toml"))
        .unwrap()
        .replace("\"http://127.0.0.1:9/orders\"", "\"{{BACKEND_URL}}\"")
        .replace("http://127.0.0.1:9/provider", "{{PROVIDER_URL}}")
}

fn hub() -> HubConfig {
    let text = std::fs::read_to_string(workspace().join("tests/fixtures/hub.toml")).unwrap();
    HubConfig::from_toml(&text, "hub.toml", &|name| {
        ENV.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
            .or_else(|| (name == "S_WOLT_V1").then(|| WOLT_V1_SEED.to_owned()))
    })
    .expect("the fixtures' hub config loads")
}

/// The sample names an exposition declares: a counter `x` is sampled as
/// `x_total`, a histogram as `x_bucket`, `x_sum` and `x_count`. Declared
/// families count even before their first sample (a family's labels may
/// appear only with its first event).
fn exported(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            continue;
        };
        match kind {
            "counter" => {
                names.insert(format!("{}_total", name.trim_end_matches("_total")));
            }
            "histogram" => {
                for suffix in ["bucket", "sum", "count"] {
                    names.insert(format!("{name}_{suffix}"));
                }
            }
            _ => {
                names.insert(name.to_owned());
            }
        }
    }
    names
}

/// The metric names a PromQL expression selects: identifiers outside label
/// matchers, ranges, strings and grouping clauses that are neither a
/// function call nor a keyword.
fn queried(expr: &str) -> BTreeSet<String> {
    // Aggregations may put their `by (...)` before the parenthesis.
    const KEYWORDS: [&str; 22] = [
        "and",
        "or",
        "unless",
        "by",
        "without",
        "on",
        "ignoring",
        "bool",
        "offset",
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "group",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
        "limitk",
    ];
    const GROUPING: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    // Blank out strings, label matchers and ranges.
    let mut plain = String::with_capacity(expr.len());
    let mut depth_brace = 0;
    let mut depth_bracket = 0;
    let mut quote: Option<char> = None;
    for c in expr.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => {
                quote = None;
                plain.push(' ');
            }
            (Some(_), _) => plain.push(' '),
            (None, '"' | '\'' | '`') => {
                quote = Some(c);
                plain.push(' ');
            }
            (None, '{') => {
                depth_brace += 1;
                plain.push(' ');
            }
            (None, '}') => {
                depth_brace -= 1;
                plain.push(' ');
            }
            (None, '[') => {
                depth_bracket += 1;
                plain.push(' ');
            }
            (None, ']') => {
                depth_bracket -= 1;
                plain.push(' ');
            }
            (None, _) if depth_brace > 0 || depth_bracket > 0 => plain.push(' '),
            (None, c) => plain.push(c),
        }
    }
    let chars: Vec<char> = plain.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let mut skip_group = false;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            let call = chars.get(j) == Some(&'(');
            if GROUPING.contains(&word.as_str()) {
                skip_group = call;
            } else if !call && !KEYWORDS.contains(&word.as_str()) {
                names.insert(word);
            }
        } else if c.is_ascii_digit() || c == '.' {
            // A number (0.5, 1e3, 0x1f): no name inside.
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c == '(' && skip_group {
            // The label list of `by (...)` and the like.
            while i < chars.len() && chars[i] != ')' {
                i += 1;
            }
            skip_group = false;
            i += 1;
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn queried_finds_metric_names_only() {
    let got = queried(
        r#"sum by (job, provider) (increase(a_total{x="b_c", y=~"d|e"}[5m])) > 0.5 * on (job) group_left (pod) max(c_bucket{le="1"}[$__rate_interval]) or absent(up{job="ingress"}) and histogram_quantile(0.99, rate(d_sum[1m])) > 1e3"#,
    );
    assert_eq!(
        got.into_iter().collect::<Vec<_>>(),
        ["a_total", "c_bucket", "d_sum", "up"]
    );
}

/// Every expression of alerts.yaml: the `expr: |` blocks.
fn rule_expressions() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(workspace().join("k8s/monitoring/alerts.yaml")).unwrap();
    let mut out = Vec::new();
    let mut alert = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if let Some(name) = trimmed.strip_prefix("- alert: ") {
            alert = name.to_owned();
        }
        if trimmed == "expr: |" {
            let indent = line.len() - trimmed.len();
            let mut expr = String::new();
            while let Some(next) = lines.peek() {
                let t = next.trim_start();
                if !t.is_empty() && next.len() - t.len() <= indent {
                    break;
                }
                expr.push_str(next);
                expr.push('\n');
                lines.next();
            }
            out.push((alert.clone(), expr));
        } else {
            assert!(
                !trimmed.starts_with("expr:"),
                "alerts.yaml: write {alert}'s expr as a `expr: |` block"
            );
        }
    }
    out
}

/// The dashboard's queries, by panel title.
fn dashboard_expressions() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(workspace().join("k8s/monitoring/dashboard.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).expect("dashboard.json is JSON");
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            out.push((
                format!("dashboard panel {}", panel["title"]),
                target["expr"].as_str().expect("a target's expr").to_owned(),
            ));
        }
    }
    out
}

/// The input series of the rules' unit tests.
fn test_series() -> Vec<(String, String)> {
    let text =
        std::fs::read_to_string(workspace().join("k8s/monitoring/alerts.test.yaml")).unwrap();
    text.lines()
        .filter_map(|l| l.split_once("series: '"))
        .map(|(_, rest)| {
            let name = rest.split(['{', '\'']).next().unwrap_or_default();
            ("alerts.test.yaml".to_owned(), name.to_owned())
        })
        .collect()
}

#[test]
fn the_rules_and_dashboard_query_something() {
    let rules = rule_expressions();
    assert!(
        rules.len() >= 15,
        "alerts.yaml lost its rules: {}",
        rules.len()
    );
    assert!(
        dashboard_expressions().len() >= 40,
        "dashboard.json lost its queries"
    );
    for (alert, expr) in rules {
        assert!(!queried(&expr).is_empty(), "{alert} queries no metric");
    }
}

/// An OpenMetrics exposition in the classic text format that `promtool
/// check metrics` (2.42, Debian 12) parses: a counter family declared as
/// `x` (its samples `x_total`, as Prometheus stores them) is declared as
/// `x_total`, and the `# EOF` line goes.
fn classic(text: &str) -> String {
    let counters: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|r| r.strip_suffix(" counter"))
        .filter(|name| !name.ends_with("_total"))
        .collect();
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line == "# EOF" {
            continue;
        }
        let mut written = false;
        for prefix in ["# HELP ", "# TYPE "] {
            if let Some(rest) = line.strip_prefix(prefix) {
                let name = rest.split(' ').next().unwrap_or_default();
                if counters.contains(name) {
                    out.push_str(&format!("{prefix}{name}_total{}", &rest[name.len()..]));
                    written = true;
                }
            }
        }
        if !written {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

#[test]
fn classic_declares_counters_by_their_sample_name() {
    let open = "# HELP a_requests Requests.\n# TYPE a_requests counter\na_requests_total{p=\"x\"} 1\n# HELP a_up Up.\n# TYPE a_up gauge\na_up 1\n# EOF\n";
    assert_eq!(
        classic(open),
        "# HELP a_requests_total Requests.\n# TYPE a_requests_total counter\na_requests_total{p=\"x\"} 1\n# HELP a_up Up.\n# TYPE a_up gauge\na_up 1\n"
    );
}

/// `promtool check metrics` on one scrape, or `None` without promtool.
async fn promtool_check(text: &str) -> anyhow::Result<Option<(bool, String)>> {
    let Ok(mut child) = tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
    else {
        return Ok(None);
    };
    let mut stdin = child.stdin.take().expect("piped");
    stdin.write_all(text.as_bytes()).await?;
    drop(stdin);
    let out = tokio::time::timeout(STEP, child.wait_with_output()).await??;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(Some((out.status.success(), said)))
}

async fn scrape(ops: &str) -> anyhow::Result<String> {
    let resp = tokio::time::timeout(STEP, reqwest::get(format!("{ops}/metrics"))).await??;
    anyhow::ensure!(resp.status() == 200, "{ops}/metrics: {}", resp.status());
    Ok(resp.text().await?)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_metric_the_rules_and_dashboard_query_is_exported() -> anyhow::Result<()> {
    let stack = Stack::start(&hub_toml(), &ENV).await?;
    // The ledger binary beside the hub, on a database of its own.
    let db = TestDb::create().await?;
    let ledger_ops = format!("http://127.0.0.1:{}", free_port());
    let mut ledger = tokio::process::Command::new(bin("ledger")?)
        .env("NATS_URL", stack.nats.url())
        .env("HUB_CONFIG", stack.hub_path())
        .envs(ENV)
        .env("S_WOLT_V1", WOLT_V1_SEED)
        .env("TOKEN_STORE_KEY", TEST_TOKEN_STORE_KEY)
        .env("DATABASE_URL", db.url()?)
        .env("OPERATOR_TOKEN", "metrics-test-operator-token")
        .env("OPS_ADDR", ledger_ops.trim_start_matches("http://"))
        .env("API_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("LEDGER_BATCH_WAIT_MS", "50")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    eventually(Duration::from_secs(30), "the ledger ready", || async {
        let r = reqwest::get(format!("{ledger_ops}/ready")).await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await?;

    // Traffic: every fixture signed (orders, notifications to fetch, dead
    // letters) to a backend that fails its first request (a retry), one
    // forged webhook (a 401), a token request with a wrong secret and an
    // unsigned status call.
    let mut failed_once = false;
    stack.backend.script(move |_| {
        if std::mem::replace(&mut failed_once, true) {
            Reply::status(200)
        } else {
            Reply::status(503)
        }
    });
    let client = reqwest::Client::new();
    let hub = hub();
    for f in fixtures::all() {
        let account = format!("acme-{}", f.provider);
        let target = f.target_account(&account);
        let config = hub
            .account(f.provider, &target)
            .unwrap_or_else(|| panic!("{}: no account {target}", f.name));
        let r = f
            .request(&client, &stack.ingress_url(), &account, Signer::of(config))
            .timeout(STEP)
            .send()
            .await?;
        assert!(r.status().is_success(), "{}: {}", f.name, r.status());
    }
    let careem = fixtures::all()
        .into_iter()
        .find(|f| f.provider == Provider::Careem)
        .expect("a Careem fixture");
    let forged = careem
        .request(
            &client,
            &stack.ingress_url(),
            "acme-careem",
            &SecretString::from("whsec_Zm9yZ2Vk"),
        )
        .timeout(STEP)
        .send()
        .await?;
    assert_eq!(forged.status(), 401);
    let token = client
        .post(format!(
            "{}/api/webhooks/grab/acme-grab/oauth/token",
            stack.ingress_url()
        ))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "acme-grab"),
            ("client_secret", "wrong"),
        ])
        .timeout(STEP)
        .send()
        .await?;
    assert!(token.status().is_client_error(), "{}", token.status());
    let status = client
        .post(format!(
            "{}/api/tenants/acme/orders/careem/o-1/status",
            stack.ingress_url()
        ))
        .header("content-type", "application/json")
        .body(r#"{"action":"accept"}"#)
        .timeout(STEP)
        .send()
        .await?;
    assert_eq!(status.status(), 401);
    eventually(
        Duration::from_secs(60),
        "the forwarder retrying after the backend's 503",
        || async {
            let text = scrape(&stack.ops_url("forwarder")).await.ok()?;
            text.lines()
                .any(|l| l.starts_with("forwarder_messages_retried_total{"))
                .then_some(())
        },
    )
    .await?;
    eventually(
        Duration::from_secs(30),
        "the ledger writing rows",
        || async {
            let text = scrape(&ledger_ops).await.ok()?;
            text.lines()
                .any(|l| l.starts_with("ledger_rows_inserted_total{") && !l.ends_with(" 0"))
                .then_some(())
        },
    )
    .await?;

    let mut exports = BTreeSet::new();
    let mut failed_checks = Vec::new();
    let mut checked = 0;
    let targets = STAGES
        .iter()
        .map(|s| ((*s).to_owned(), stack.ops_url(s)))
        .chain([("ledger".to_owned(), ledger_ops.clone())]);
    for (stage, ops) in targets {
        let text = scrape(&ops).await?;
        let names = exported(&text);
        let prefix = format!("{}_", stage.replace('-', "_"));
        assert!(
            names.iter().any(|n| n.starts_with(&prefix)),
            "{stage} exports no {prefix}* metric"
        );
        exports.extend(names);
        match promtool_check(&classic(&text)).await? {
            Some((true, _)) => checked += 1,
            Some((false, said)) => failed_checks.push(format!("{stage}: {said}")),
            None => {}
        }
    }
    assert!(
        failed_checks.is_empty(),
        "promtool check metrics:\n{}",
        failed_checks.join("\n")
    );
    if checked == 0 {
        eprintln!("promtool not installed (scripts/check-deploy installs it): scrapes not linted");
    }

    let mut missing = Vec::new();
    let mut wanted = 0;
    for (whence, expr) in rule_expressions()
        .into_iter()
        .chain(dashboard_expressions())
    {
        for name in queried(&expr) {
            wanted += 1;
            if !exports.contains(&name)
                && !PROMETHEUS_OWN.contains(&name.as_str())
                && !registered_first_event_only(&name)
            {
                missing.push(format!("{whence}: {name}"));
            }
        }
    }
    for (whence, name) in test_series() {
        wanted += 1;
        if !exports.contains(&name)
            && !PROMETHEUS_OWN.contains(&name.as_str())
            && !registered_first_event_only(&name)
        {
            missing.push(format!("{whence}: {name}"));
        }
    }
    assert!(wanted > 50, "only {wanted} names queried");
    assert!(
        missing.is_empty(),
        "queried but exported by no binary:\n{}",
        missing.join("\n")
    );

    ledger.start_kill()?;
    let _ = tokio::time::timeout(STEP, ledger.wait()).await;
    stack.stop().await
}
