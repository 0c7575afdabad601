"""Structural checks of the rendered manifests (run by scripts/check-deploy).

Usage: check_deploy.py WORKDIR, where WORKDIR holds the renders
k8s_base.yaml, k8s_overlays_cluster.yaml and k8s_monitoring.yaml. Checks
what kubernetes-validate cannot (the custom kinds, and what orderhub wants
of every Deployment), then writes into WORKDIR:
  builtin_<render>.yaml   the built-in kinds, for kubernetes-validate
  alerts.rules.full.yaml  the PrometheusRule's groups, for promtool check
  alerts.rules.yaml       the same without annotations, for promtool test
  dashboard.rules.yaml    every dashboard query as a recording rule, so
                          promtool parses it
Exits 1 naming every problem found.
"""

import json
import re
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
problems = []


def problem(msg):
    problems.append(msg)


def load(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def is_builtin(doc):
    group = doc["apiVersion"].split("/")[0] if "/" in doc["apiVersion"] else ""
    return group == "" or "." not in group or group.endswith(".k8s.io")


# --- KEDA ScaledObjects against their fields, streams.toml and hub.toml ---

SCALED_OBJECT_SPEC = {
    "scaleTargetRef", "minReplicaCount", "maxReplicaCount", "triggers",
    "pollingInterval", "cooldownPeriod", "idleReplicaCount", "fallback",
    "advanced", "initialCooldownPeriod",
}
TARGET_REF = {"name", "kind", "apiVersion", "envSourceContainerName"}
TRIGGER = {"type", "metadata", "name", "authenticationRef", "metricType", "useCachedMetrics"}
# KEDA's nats-jetstream scaler (keda.sh docs, scalers/nats-jetstream).
NATS_JETSTREAM_METADATA = {
    "natsServerMonitoringEndpoint", "account", "stream", "consumer",
    "lagThreshold", "activationLagThreshold", "useHttps",
}
NATS_JETSTREAM_REQUIRED = {"natsServerMonitoringEndpoint", "account", "stream", "consumer"}


def consumers():
    """(stream, consumer name) -> the stage (Deployment) that reads it."""
    streams = tomllib.loads((ROOT / "nats/streams.toml").read_text())
    hub = tomllib.loads((ROOT / "k8s/base/hub.toml").read_text())
    tenants = [t["id"] for t in hub.get("tenant", [])]
    out = {}
    for c in streams.get("consumer", []):
        stream, durable = c["stream"], c["durable"]
        if stream == "ADVISORIES" or (stream == "DLQ" and not durable.startswith("ledger-")):
            # The movers and the status worker's auto-reject consumer run
            # inside their stage's process; KEDA does not scale on them.
            continue
        stage = "ledger" if durable.startswith("ledger-") else durable
        names = [f"{durable}-{t}" for t in tenants] if c.get("per_tenant") else [durable]
        for name in names:
            out[(stream, name)] = stage
    return out


def check_scaled_objects(docs, deployments):
    known = consumers()
    seen = set()
    for d in docs:
        if d["kind"] != "ScaledObject":
            continue
        name = d["metadata"]["name"]
        where = f"ScaledObject {name}"
        if d["apiVersion"] != "keda.sh/v1alpha1":
            problem(f"{where}: apiVersion {d['apiVersion']}")
        spec = d.get("spec", {})
        for k in set(spec) - SCALED_OBJECT_SPEC:
            problem(f"{where}: unknown field spec.{k}")
        ref = spec.get("scaleTargetRef", {})
        for k in set(ref) - TARGET_REF:
            problem(f"{where}: unknown field spec.scaleTargetRef.{k}")
        target = ref.get("name")
        if target not in deployments:
            problem(f"{where}: scales {target!r}, which is no Deployment")
        lo, hi = spec.get("minReplicaCount"), spec.get("maxReplicaCount")
        if not (isinstance(lo, int) and isinstance(hi, int) and 1 <= lo <= hi):
            problem(f"{where}: replicas {lo}..{hi} (minimum 1: the dead-letter mover needs a waiting pull)")
        triggers = spec.get("triggers") or []
        if not triggers:
            problem(f"{where}: no triggers")
        for i, t in enumerate(triggers):
            tw = f"{where} trigger {i}"
            for k in set(t) - TRIGGER:
                problem(f"{tw}: unknown field {k}")
            if t.get("type") != "nats-jetstream":
                problem(f"{tw}: type {t.get('type')!r}, not nats-jetstream")
                continue
            meta = t.get("metadata", {})
            for k in set(meta) - NATS_JETSTREAM_METADATA:
                problem(f"{tw}: unknown metadata {k}")
            for k in NATS_JETSTREAM_REQUIRED - set(meta):
                problem(f"{tw}: metadata {k} missing")
            for k, v in meta.items():
                if not isinstance(v, str):
                    problem(f"{tw}: metadata {k} must be a string, is {v!r}")
            for k in ("lagThreshold", "activationLagThreshold"):
                if k in meta and not re.fullmatch(r"\d+", str(meta[k])):
                    problem(f"{tw}: {k} {meta[k]!r} is not a count")
            key = (meta.get("stream"), meta.get("consumer"))
            if key not in known:
                problem(f"{tw}: no consumer {key[1]!r} on stream {key[0]!r} in nats/streams.toml (per tenant: hub.toml's tenants)")
            elif known[key] != target:
                problem(f"{tw}: consumer {key[1]} is read by {known[key]}, but the trigger scales {target}")
            seen.add(key)
    for key, stage in known.items():
        if key not in seen:
            problem(f"consumer {key[1]} on {key[0]} ({stage}) has no KEDA trigger")


# --- What every Deployment needs in production ---

def check_deployments(docs):
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    pdbs = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    for name, d in deployments.items():
        where = f"Deployment {name}"
        pod = d["spec"]["template"]["spec"]
        labels = d["spec"]["template"]["metadata"].get("labels", {})
        if labels.get("app.kubernetes.io/part-of") != "orderhub":
            problem(f"{where}: pods lack app.kubernetes.io/part-of=orderhub (the PodMonitor and policies select on it)")
        psc = pod.get("securityContext", {})
        if psc.get("runAsNonRoot") is not True or not psc.get("runAsUser"):
            problem(f"{where}: pod securityContext must run as a non-root user")
        if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problem(f"{where}: seccompProfile RuntimeDefault")
        for c in pod["containers"]:
            cw = f"{where} container {c['name']}"
            ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
            if "ops" not in ports:
                problem(f"{cw}: no port named ops")
            for probe, path in (("livenessProbe", "/health"), ("readinessProbe", "/ready")):
                get = c.get(probe, {}).get("httpGet", {})
                if get.get("path") != path or get.get("port") != "ops":
                    problem(f"{cw}: {probe} must GET {path} on port ops")
            res = c.get("resources", {})
            if not res.get("requests", {}).get("cpu") or not res.get("requests", {}).get("memory"):
                problem(f"{cw}: cpu and memory requests")
            if not res.get("limits", {}).get("memory"):
                problem(f"{cw}: a memory limit")
            sc = c.get("securityContext", {})
            if sc.get("readOnlyRootFilesystem") is not True:
                problem(f"{cw}: readOnlyRootFilesystem")
            if sc.get("allowPrivilegeEscalation") is not False:
                problem(f"{cw}: allowPrivilegeEscalation false")
            if sc.get("capabilities", {}).get("drop") != ["ALL"]:
                problem(f"{cw}: capabilities drop ALL")
            ops = [e["value"] for e in c.get("env", []) if e["name"] == "OPS_ADDR"]
            if ops != [f"0.0.0.0:{ports.get('ops')}"]:
                problem(f"{cw}: OPS_ADDR {ops} does not listen on the ops port {ports.get('ops')}")
            scrape = d["spec"]["template"]["metadata"].get("annotations", {}).get("prometheus.io/port")
            if scrape != str(ports.get("ops")):
                problem(f"{cw}: prometheus.io/port {scrape} is not the ops port")
        selected = [p for p in pdbs if matches(p["spec"]["selector"], labels)]
        if len(selected) != 1:
            problem(f"{where}: {len(selected)} PodDisruptionBudgets select it, want 1")
    check_policies(policies, deployments)
    return deployments


def matches(selector, labels):
    if set(selector) - {"matchLabels"}:
        raise SystemExit(f"selector {selector}: only matchLabels is checked here")
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def check_policies(policies, deployments):
    """Default deny; the webhook port open to all on the ingress only; the
    ledger API from the namespace only; ops ports from monitoring only."""
    by_name = {p["metadata"]["name"]: p for p in policies}
    deny = by_name.get("default-deny-ingress")
    if not deny or deny["spec"].get("podSelector") != {} or deny["spec"].get("ingress"):
        problem("NetworkPolicy default-deny-ingress must select every pod and admit nothing")
    for p in policies:
        name = p["metadata"]["name"]
        spec = p["spec"]
        if spec.get("policyTypes") != ["Ingress"]:
            problem(f"NetworkPolicy {name}: policyTypes {spec.get('policyTypes')}, want [Ingress]")
        for rule in spec.get("ingress", []):
            peers = rule.get("from")
            ports = [x.get("port") for x in rule.get("ports", [])]
            if not ports:
                problem(f"NetworkPolicy {name}: a rule admits every port")
            targets = [n for n, d in deployments.items()
                       if matches(spec["podSelector"], d["spec"]["template"]["metadata"]["labels"])]
            if peers is None:
                # Open to the world: only the ingress's webhook port.
                if targets != ["ingress"] or ports != ["http"]:
                    problem(f"NetworkPolicy {name}: admits anyone to {targets} ports {ports}; only the ingress's http port may be public")
            else:
                for peer in peers:
                    if "ipBlock" in peer:
                        problem(f"NetworkPolicy {name}: ipBlock peers are not expected")
                    if "namespaceSelector" in peer and ports != ["ops"]:
                        problem(f"NetworkPolicy {name}: another namespace reaches {ports}; only ops (metrics) may be")
                if "api" in ports and (targets != ["ledger"] or peers != [{"podSelector": {}}]):
                    problem(f"NetworkPolicy {name}: the ledger API is for the namespace only")


# --- The PrometheusRule, the PodMonitor and the dashboard ---

RULE_FIELDS = {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}
SEVERITIES = {"page", "ticket"}


def check_monitoring(docs, out):
    kinds = {}
    for d in docs:
        kinds.setdefault(d["kind"], []).append(d)
    if sorted(kinds) != ["ConfigMap", "PodMonitor", "PrometheusRule"]:
        problem(f"k8s/monitoring renders {sorted(kinds)}")
    for pm in kinds.get("PodMonitor", []):
        spec = pm["spec"]
        if pm["apiVersion"] != "monitoring.coreos.com/v1":
            problem(f"PodMonitor: apiVersion {pm['apiVersion']}")
        for k in set(spec) - {"jobLabel", "selector", "podMetricsEndpoints", "namespaceSelector"}:
            problem(f"PodMonitor: unknown field spec.{k}")
        if spec.get("jobLabel") != "app.kubernetes.io/name":
            problem("PodMonitor: the rules need job = the stage's name (jobLabel app.kubernetes.io/name)")
        for e in spec.get("podMetricsEndpoints", []):
            if e.get("port") != "ops" or e.get("path") != "/metrics":
                problem(f"PodMonitor: endpoint {e}, want port ops path /metrics")
    rules = kinds.get("PrometheusRule", [])
    if len(rules) != 1:
        problem(f"{len(rules)} PrometheusRules, want 1")
        return
    pr = rules[0]
    if pr["apiVersion"] != "monitoring.coreos.com/v1":
        problem(f"PrometheusRule: apiVersion {pr['apiVersion']}")
    if set(pr["spec"]) != {"groups"}:
        problem(f"PrometheusRule: spec fields {sorted(pr['spec'])}, want groups")
    names = set()
    for g in pr["spec"]["groups"]:
        if set(g) - {"name", "rules", "interval"}:
            problem(f"group {g.get('name')}: fields {sorted(g)}")
        for r in g["rules"]:
            a = r.get("alert", r.get("record"))
            for k in set(r) - RULE_FIELDS:
                problem(f"rule {a}: unknown field {k}")
            if "alert" not in r:
                problem(f"rule {a}: only alerts are expected")
                continue
            if a in names:
                problem(f"alert {a} defined twice")
            names.add(a)
            if r.get("labels", {}).get("severity") not in SEVERITIES:
                problem(f"alert {a}: severity {r.get('labels', {}).get('severity')}, want one of {sorted(SEVERITIES)}")
            ann = r.get("annotations", {})
            for k in ("summary", "description"):
                if not ann.get(k, "").strip():
                    problem(f"alert {a}: no {k} annotation")
            # Every description tells the operator where to look next.
            if not re.search(r'README "|dlq-inspector|ledger order|kubectl', ann.get("description", "")):
                problem(f"alert {a}: the description points at no README section or tool")
    # Every alert has a unit test where it fires and one where it stays
    # silent.
    fires, silent = set(), set()
    for test in yaml.safe_load((ROOT / "k8s/monitoring/alerts.test.yaml").read_text())["tests"]:
        for case in test.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else silent).add(case["alertname"])
    for a in sorted(names - fires):
        problem(f"alert {a}: no unit test in alerts.test.yaml where it fires")
    for a in sorted(names - silent):
        problem(f"alert {a}: no unit test in alerts.test.yaml where it stays silent")
    for a in sorted((fires | silent) - names):
        problem(f"alerts.test.yaml tests {a}, which alerts.yaml does not define")
    (out / "alerts.rules.full.yaml").write_text(yaml.safe_dump(pr["spec"], sort_keys=False))
    bare = json.loads(json.dumps(pr["spec"]))
    for g in bare["groups"]:
        for r in g["rules"]:
            r.pop("annotations", None)
    (out / "alerts.rules.yaml").write_text(yaml.safe_dump(bare, sort_keys=False))

    cms = [c for c in kinds.get("ConfigMap", []) if c["metadata"]["name"] == "orderhub-dashboard"]
    if len(cms) != 1 or cms[0]["metadata"].get("labels", {}).get("grafana_dashboard") != "1":
        problem("the dashboard ConfigMap orderhub-dashboard with label grafana_dashboard=1")
    dash = json.loads((ROOT / "k8s/monitoring/dashboard.json").read_text())
    for k in ("title", "uid", "panels", "schemaVersion"):
        if k not in dash:
            problem(f"dashboard: no {k}")
    ids, queries = set(), []
    for p in dash.get("panels", []):
        if p["id"] in ids:
            problem(f"dashboard: panel id {p['id']} twice")
        ids.add(p["id"])
        if p["type"] == "row":
            continue
        if p.get("datasource", {}).get("uid") != "${datasource}":
            problem(f"dashboard panel {p['title']!r}: datasource is not the ${{datasource}} variable")
        targets = p.get("targets") or []
        if not targets:
            problem(f"dashboard panel {p['title']!r}: no queries")
        for t in targets:
            queries.append((p["title"], t["expr"]))
    recording = [
        {"record": f"dashboard:query_{i}", "expr": e.replace("$__rate_interval", "5m")}
        for i, (_, e) in enumerate(queries)
    ]
    (out / "dashboard.rules.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recording}]}, sort_keys=False)
    )
    print(f"monitoring: {len(names)} alerts, {len(queries)} dashboard queries")


def main():
    out = Path(sys.argv[1])
    renders = {}
    for name in ("k8s_base", "k8s_overlays_cluster", "k8s_monitoring"):
        docs = load(out / f"{name}.yaml")
        renders[name] = docs
        (out / f"builtin_{name}.yaml").write_text(
            yaml.safe_dump_all([d for d in docs if is_builtin(d)], sort_keys=False)
        )
    for name in ("k8s_base", "k8s_overlays_cluster"):
        deployments = check_deployments(renders[name])
        check_scaled_objects(renders[name], deployments)
        custom = sorted({d["kind"] for d in renders[name] if not is_builtin(d)})
        if custom != ["ScaledObject"]:
            problem(f"{name}: custom kinds {custom}, only ScaledObject is checked")
    check_monitoring(renders["k8s_monitoring"], out)
    if problems:
        for p in problems:
            print(f"check-deploy: {p}", file=sys.stderr)
        sys.exit(1)
    print(f"manifests: {len(renders['k8s_overlays_cluster'])} objects checked")


main()
