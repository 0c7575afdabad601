//! The deployment files agree with the code: the cluster's hub config loads,
//! every tenant's forwarder consumer has a KEDA trigger, every stage has a
//! Deployment, and the kustomize overlay renders (where kubectl exists).

use orderhub_tests::workspace;

fn read(path: &str) -> String {
    std::fs::read_to_string(workspace().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_cluster_hub_config_is_valid_and_every_tenant_is_scaled() {
    let hub = shared::config::HubConfig::from_toml(
        &read("k8s/base/hub.toml"),
        "k8s/base/hub.toml",
        &|name| {
            Some(if name.ends_with("SIGNING_SECRET") {
                "whsec_c2VjcmV0".to_owned()
            } else {
                "secret".to_owned()
            })
        },
    )
    .expect("k8s/base/hub.toml is valid");
    assert_eq!(hub.streams.replicas, Some(3), "a cluster runs R3 streams");
    let scaling = read("k8s/base/scaling.yaml");
    for t in &hub.tenants {
        let want = format!("consumer: forwarder-{}", t.id);
        assert!(
            scaling.contains(&want),
            "scaling.yaml has no trigger for tenant {}",
            t.id
        );
    }
    assert!(scaling.contains("consumer: transformer"));
}

#[test]
fn every_stage_has_a_deployment_with_probes_on_the_ops_port() {
    for stage in ["ingress", "transformer", "forwarder"] {
        let text = read(&format!("k8s/base/{stage}.yaml"));
        assert!(text.contains("kind: Deployment"), "{stage}");
        assert!(
            text.contains(&format!("image: orderhub/{stage}")),
            "{stage}"
        );
        assert!(
            text.contains("httpGet: {path: /health, port: ops}"),
            "{stage}"
        );
        assert!(
            text.contains("httpGet: {path: /ready, port: ops}"),
            "{stage}"
        );
        assert!(text.contains("name: HUB_CONFIG"), "{stage}");
    }
}

#[test]
fn the_overlay_renders_with_kubectl() {
    let Ok(out) = std::process::Command::new("kubectl")
        .args(["kustomize", "k8s/overlays/cluster"])
        .current_dir(workspace())
        .output()
    else {
        eprintln!("kubectl not installed: rendering not checked");
        return;
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches("\nkind: Deployment").count(), 3);
    for stage in ["ingress", "transformer", "forwarder"] {
        assert!(
            text.contains(&format!("image: registry.example/orderhub/{stage}:0.1.0")),
            "{stage} image not pinned by the overlay"
        );
    }
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
}
