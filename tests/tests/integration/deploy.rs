//! The deployment files agree with the code: the cluster's hub config loads,
//! every stage binary has a Deployment that gets what the binary needs at
//! start, every worker consumer (per tenant where it is one per tenant) has
//! a KEDA trigger, every stage a disruption budget, only the ingress is open
//! to the outside, and the kustomize overlay and the monitoring render
//! (where kubectl exists). scripts/check-deploy validates the renders
//! (kubernetes-validate, the custom kinds' fields, promtool); metrics.rs
//! ties the rules and the dashboard to what the binaries export.

use orderhub_tests::workspace;
use shared::config::HubConfig;

fn read(path: &str) -> String {
    std::fs::read_to_string(workspace().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The cluster's hub config, with every secret it names set (as the
/// Deployments' Secrets set them).
fn cluster_hub() -> HubConfig {
    HubConfig::from_toml(&read("k8s/base/hub.toml"), "k8s/base/hub.toml", &|name| {
        Some(if name.ends_with("SIGNING_SECRET") {
            "whsec_c2VjcmV0".to_owned()
        } else {
            "secret".to_owned()
        })
    })
    .expect("k8s/base/hub.toml is valid")
}

/// The worker consumers of `nats/streams.toml` (the movers on `ADVISORIES`
/// and the status worker's `auto-reject` on the DLQ run inside their
/// stage's process; the ledger's `ledger-dlq` is a worker consumer).
fn worker_consumers(hub: &HubConfig) -> Vec<shared::streams::ConsumerDef> {
    shared::streams::Definitions::load(&hub.streams)
        .consumers
        .into_iter()
        .filter(|c| match c.stream.as_str() {
            "ADVISORIES" => false,
            "DLQ" => c.durable.starts_with("ledger-"),
            _ => true,
        })
        .collect()
}

/// The stage that reads a consumer: a worker stage is named after its
/// consumer; the ledger reads one consumer per stream, `ledger-<stream>`.
fn stage_of(durable: &str) -> &str {
    if durable.starts_with("ledger-") {
        "ledger"
    } else {
        durable
    }
}

/// Every stage binary: the ingress and one per worker consumer.
fn stages(hub: &HubConfig) -> Vec<String> {
    let mut stages = vec!["ingress".to_owned()];
    for c in worker_consumers(hub) {
        let stage = stage_of(&c.durable).to_owned();
        if !stages.contains(&stage) {
            stages.push(stage);
        }
    }
    stages
}

#[test]
fn the_cluster_hub_config_is_valid_and_every_consumer_is_scaled() {
    let hub = cluster_hub();
    assert_eq!(hub.streams.replicas, Some(3), "a cluster runs R3 streams");
    let scaling = read("k8s/base/scaling.yaml");
    let consumers = worker_consumers(&hub);
    assert!(
        consumers.iter().any(|c| c.durable == "fetcher"),
        "the fetcher's consumer is defined"
    );
    for c in &consumers {
        let names = if c.per_tenant {
            hub.tenants
                .iter()
                .map(|t| format!("{}-{}", c.durable, t.id))
                .collect()
        } else {
            vec![c.durable.clone()]
        };
        for name in names {
            let want = format!("stream: {}\n        consumer: {name}\n", c.stream);
            assert!(
                scaling.contains(&want),
                "scaling.yaml has no trigger on {} consumer {name}",
                c.stream
            );
        }
    }
}

#[test]
fn the_cluster_fetches_from_the_real_provider_apis() {
    let hub = cluster_hub();
    let notified: Vec<_> = hub
        .accounts
        .iter()
        .filter(|a| a.provider.sends_notifications_only())
        .collect();
    assert!(!notified.is_empty(), "an Uber Eats or Wolt example account");
    for a in notified {
        let api = a.api.as_ref().unwrap_or_else(|| {
            panic!(
                "account {} has no [account.api]: its orders would dead-letter as fetch_required",
                a.id
            )
        });
        for url in [Some(&api.base_url), api.token_url.as_ref()]
            .into_iter()
            .flatten()
        {
            assert_eq!(url.scheme(), "https", "account {}: {url}", a.id);
        }
    }
    assert!(
        hub.provider_api.allowed_private_destinations.is_empty(),
        "a cluster calls provider APIs on public addresses only"
    );
}

#[test]
fn every_stage_has_a_deployment_with_probes_secrets_and_scaling() {
    let hub = cluster_hub();
    let stages = stages(&hub);
    // Every binary that runs as a stage (loads the hub config) is listed.
    let manifest = read("Cargo.toml");
    let members = manifest
        .lines()
        .find_map(|l| l.strip_prefix("members = ["))
        .expect("Cargo.toml lists the workspace members on one line");
    for member in members.split('"').skip(1).step_by(2) {
        let main = workspace().join(member).join("src/main.rs");
        let Ok(text) = std::fs::read_to_string(&main) else {
            continue;
        };
        if text.contains("shared::app::init") {
            assert!(
                stages.iter().any(|s| s == member),
                "{member} is a stage binary without a consumer or Deployment"
            );
        }
    }
    let kustomization = read("k8s/base/kustomization.yaml");
    let overlay = read("k8s/overlays/cluster/kustomization.yaml");
    for stage in &stages {
        assert!(
            workspace().join(stage).join("src/main.rs").exists(),
            "no binary crate {stage}/"
        );
        let text = read(&format!("k8s/base/{stage}.yaml"));
        for want in [
            "kind: Deployment".to_owned(),
            format!("image: orderhub/{stage}\n"),
            "httpGet: {path: /health, port: ops}".to_owned(),
            "httpGet: {path: /ready, port: ops}".to_owned(),
            "name: HUB_CONFIG".to_owned(),
            // Every binary resolves every secret the hub config names.
            "secretRef: {name: orderhub-provider-secrets}".to_owned(),
            "secretRef: {name: orderhub-tenant-secrets}".to_owned(),
            "readOnlyRootFilesystem: true".to_owned(),
        ] {
            assert!(text.contains(&want), "k8s/base/{stage}.yaml lacks {want:?}");
        }
        assert!(
            kustomization.contains(&format!("  - {stage}.yaml\n")),
            "kustomization.yaml does not list {stage}.yaml"
        );
        assert!(
            overlay.contains(&format!(
                "{{name: orderhub/{stage}, newName: registry.example/orderhub/{stage}"
            )),
            "the overlay does not pin the {stage} image"
        );
    }
    // The ledger's database and operator token come from its own Secret.
    let ledger = read("k8s/base/ledger.yaml");
    for key in ["DATABASE_URL", "OPERATOR_TOKEN"] {
        assert!(
            ledger.contains(&format!(
                "name: {key}\n              valueFrom:\n                secretKeyRef: {{name: orderhub-ledger, key: {key}}}"
            )),
            "ledger.yaml takes {key} from the orderhub-ledger Secret"
        );
    }
    // The token store's key reaches the stages that call providers, from
    // its own Secret.
    for stage in ["fetcher", "status-sync"] {
        let text = read(&format!("k8s/base/{stage}.yaml"));
        assert!(
            text.contains(
                "name: TOKEN_STORE_KEY\n              valueFrom:\n                secretKeyRef: {name: orderhub-token-store, key: TOKEN_STORE_KEY}"
            ),
            "{stage}.yaml takes TOKEN_STORE_KEY from the orderhub-token-store Secret"
        );
    }
}

/// The pinned kubectl scripts/check-deploy installs, else one on the PATH.
fn kubectl() -> std::path::PathBuf {
    let pinned = workspace().join(".tools/deploy-venv/bin/kubectl");
    if pinned.exists() {
        pinned
    } else {
        "kubectl".into()
    }
}

#[test]
fn the_overlay_renders_with_kubectl() {
    let Ok(out) = std::process::Command::new(kubectl())
        .args(["kustomize", "k8s/overlays/cluster"])
        .current_dir(workspace())
        .output()
    else {
        eprintln!(
            "kubectl not installed (scripts/check-deploy installs it): rendering not checked"
        );
        return;
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let stages = stages(&cluster_hub());
    assert_eq!(
        text.matches("\nkind: Deployment").count(),
        stages.len(),
        "one Deployment per stage: {stages:?}"
    );
    for stage in &stages {
        assert!(
            text.contains(&format!("image: registry.example/orderhub/{stage}:0.1.0")),
            "{stage} image not pinned by the overlay"
        );
    }
}

#[test]
fn the_monitoring_renders_with_kubectl() {
    let Ok(out) = std::process::Command::new(kubectl())
        .args(["kustomize", "k8s/monitoring"])
        .current_dir(workspace())
        .output()
    else {
        eprintln!(
            "kubectl not installed (scripts/check-deploy installs it): rendering not checked"
        );
        return;
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for kind in ["ConfigMap", "PodMonitor", "PrometheusRule"] {
        assert_eq!(
            text.matches(&format!("\nkind: {kind}\n")).count(),
            1,
            "k8s/monitoring renders one {kind}"
        );
    }
    // The dashboard travels whole in its ConfigMap.
    assert!(text.contains("  orderhub-dashboard.json: |\n"));
    assert!(text.contains("grafana_dashboard: \"1\""));
}

/// Every stage has a disruption budget; the policies deny by default and
/// open the webhook port of the ingress only to the outside.
#[test]
fn every_stage_has_a_disruption_budget_and_only_the_ingress_is_public() {
    let stages = stages(&cluster_hub());
    let mut files = String::new();
    for entry in std::fs::read_dir(workspace().join("k8s/base")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            files.push_str(&std::fs::read_to_string(&path).unwrap());
            files.push_str("\n---\n");
        }
    }
    let docs: Vec<&str> = files.split("\n---\n").collect();
    let of_kind = |kind: &str| -> Vec<&str> {
        docs.iter()
            .copied()
            .filter(|d| d.contains(&format!("kind: {kind}\n")))
            .collect()
    };
    let budgets = of_kind("PodDisruptionBudget");
    for stage in &stages {
        let selector = format!("matchLabels: {{app.kubernetes.io/name: {stage}}}");
        assert_eq!(
            budgets.iter().filter(|d| d.contains(&selector)).count(),
            1,
            "{stage} has one PodDisruptionBudget"
        );
    }
    let policies = of_kind("NetworkPolicy");
    let deny = policies
        .iter()
        .find(|d| d.contains("name: default-deny-ingress"))
        .expect("a default-deny NetworkPolicy");
    assert!(deny.contains("podSelector: {}") && !deny.contains("ingress:"));
    // A rule without `from` admits every source: only the ingress's.
    for p in &policies {
        if p.contains("ingress:\n    - ports:") {
            assert!(
                p.contains("matchLabels: {app.kubernetes.io/name: ingress}")
                    && p.contains("- {protocol: TCP, port: http}"),
                "a NetworkPolicy opens more than the ingress's webhook port to all:\n{p}"
            );
        }
    }
    let ledger_api = policies
        .iter()
        .find(|d| d.contains("port: api}"))
        .expect("a policy for the ledger API");
    assert!(
        ledger_api.contains("matchLabels: {app.kubernetes.io/name: ledger}")
            && ledger_api.contains("- from:\n        - podSelector: {}\n"),
        "the ledger API is open to the namespace only:\n{ledger_api}"
    );
    assert!(
        read("k8s/base/kustomization.yaml").contains("  - policies.yaml\n"),
        "kustomization.yaml lists policies.yaml"
    );
}

#[test]
fn the_readme_config_example_is_valid() {
    let readme = read("README.md");
    let start = readme.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let end = start + readme[start..].find("```").expect("its end");
    let hub = shared::config::HubConfig::from_toml(&readme[start..end], "README.md", &|name| {
        Some(if name.ends_with("SIGNING_SECRET") {
            "whsec_c2VjcmV0".to_owned()
        } else {
            "secret".to_owned()
        })
    })
    .expect("the README's example config is valid");
    assert_eq!(hub.accounts[0].secrets.len(), 2);
    assert_eq!(hub.tenants[0].breaker.failures, 5);
    assert_eq!(
        hub.ingress
            .rate_limits
            .for_provider(shared::Provider::Talabat)
            .map(|r| r.per_second),
        Some(200)
    );
    // The provider API keys, at the values the README gives as defaults.
    let api = hub.accounts[1]
        .api
        .as_ref()
        .expect("the Uber Eats account's [account.api]");
    assert_eq!(api.base_url.as_str(), "https://api.uber.com/");
    assert_eq!(api.scope.as_deref(), Some("eats.order"));
    assert_eq!(api.order_api, shared::config::OrderApi::Auto);
    assert_eq!(api.fetch_deadline, std::time::Duration::from_secs(690));
    let defaults = shared::config::ProviderApiSettings::default();
    assert_eq!(
        hub.provider_api, defaults,
        "[provider_api] shows the defaults"
    );
    assert_eq!(hub.fetcher.not_found_retries, 5);
    assert_eq!(hub.fetcher.retry.max_deliver(), 20);
}
