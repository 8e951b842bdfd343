"""helm lint, and the rendered manifests checked against the Kubernetes schemas.

The schemas come from the kubernetes-validate package, which bundles them
(offline). We check the oldest API the operator supports (1.33: k8s-openapi's
v1_33 feature) and the newest the package knows, in strict mode, so a
misspelt field is an error rather than silently dropped by the API server.
"""

from __future__ import annotations

import kubernetes_validate
import pytest

from conftest import CHART, NAMESPACE, RELEASE, by_kind, one, render, run, values_file

K8S_VERSIONS = ["1.33", "1.37"]
VALUE_SETS = [None, "namespaced", "full"]
# Kinds whose schema kubernetes-validate does not ship (CRD-defined ones).
# They get a structural check in test_service_monitor_scrapes_the_metrics_port.
NO_BUNDLED_SCHEMA = {"ServiceMonitor"}


@pytest.mark.parametrize("values", VALUE_SETS, ids=lambda v: v or "defaults")
def test_helm_lint_is_clean(helm, values):
    cmd = [helm, "lint", "--strict", str(CHART), "--namespace", NAMESPACE]
    if values:
        cmd += ["--values", str(values_file(values))]
    proc = run(cmd, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "0 chart(s) failed" in out, out
    # --strict turns warnings into failures; INFO lines are just as unwelcome.
    for level in ("[INFO]", "[WARNING]", "[ERROR]"):
        assert level not in out, out


@pytest.mark.parametrize("k8s", K8S_VERSIONS)
@pytest.mark.parametrize("values", VALUE_SETS, ids=lambda v: v or "defaults")
def test_rendered_manifests_match_kubernetes_schemas(helm, values, k8s):
    docs = render(helm, values, "--include-crds")
    kinds = {d["kind"] for d in docs}
    assert {"CustomResourceDefinition", "Deployment", "ServiceAccount"} <= kinds
    checked = 0
    for doc in docs:
        if doc["kind"] in NO_BUNDLED_SCHEMA:
            continue
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        try:
            kubernetes_validate.validate(doc, k8s, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{name} is not a valid {k8s} object: {e.message} at {'/'.join(map(str, e.path))}")
        except kubernetes_validate.SchemaNotFoundError as e:
            pytest.fail(f"{name}: {e.message}; add it to NO_BUNDLED_SCHEMA with a check of its own")
        checked += 1
    assert checked == len(docs) - len([d for d in docs if d["kind"] in NO_BUNDLED_SCHEMA])


def test_a_misspelt_field_fails_schema_validation():
    """The validation above is not vacuous: strict mode catches a typo."""
    bad = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "x", "namespace": "y"},
        "automountServiceAcountToken": False,
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, "1.33", strict=True)


def test_every_object_lives_in_the_release_or_a_watched_namespace(helm):
    docs = render(helm, "namespaced")
    allowed = {NAMESPACE, "team-a", "team-b"}
    for doc in docs:
        ns = doc["metadata"].get("namespace")
        assert ns in allowed, f"{doc['kind']}/{doc['metadata']['name']} in namespace {ns!r}"


def test_pod_runs_non_root_read_only_without_capabilities(helm):
    dep = one(render(helm), "Deployment")
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert pod["serviceAccountName"] == f"{RELEASE}-pgsteward"


def test_probes_and_metrics_port(helm):
    docs = render(helm)
    (container,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["ports"] == [{"name": "metrics", "containerPort": 8080, "protocol": "TCP"}]
    svc = one(docs, "Service")
    assert svc["spec"]["ports"][0]["targetPort"] == "metrics"
    assert svc["spec"]["selector"] == one(docs, "Deployment")["spec"]["selector"]["matchLabels"]


def test_image_defaults_to_the_chart_app_version(helm):
    import yaml

    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    (container,) = one(render(helm), "Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"ghcr.io/pgsteward/operator:{app_version}"
    (container,) = one(render(helm, None, "--set", "image.tag=dev"), "Deployment")["spec"]["template"]["spec"][
        "containers"
    ]
    assert container["image"] == "ghcr.io/pgsteward/operator:dev"


def test_defaults_are_cluster_wide_with_one_replica(helm):
    docs = render(helm)
    assert one(docs, "Deployment")["spec"]["replicas"] == 1
    assert len(by_kind(docs, "ClusterRole")) == 1
    assert len(by_kind(docs, "ClusterRoleBinding")) == 1
    # The only Role is leader election's, in the release namespace.
    (role,) = by_kind(docs, "Role")
    assert role["metadata"]["namespace"] == NAMESPACE
    assert {r for rule in role["rules"] for r in rule["resources"]} == {"leases"}
    assert not by_kind(docs, "ServiceMonitor")
    assert not by_kind(docs, "NetworkPolicy")


def test_namespaced_mode_grants_nothing_cluster_wide(helm):
    docs = render(helm, "namespaced")
    assert not by_kind(docs, "ClusterRole")
    assert not by_kind(docs, "ClusterRoleBinding")
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]) for r in by_kind(docs, "Role")}
    assert roles == {
        ("team-a", f"{RELEASE}-pgsteward"),
        ("team-b", f"{RELEASE}-pgsteward"),
        (NAMESPACE, f"{RELEASE}-pgsteward-leader-election"),
    }
    for binding in by_kind(docs, "RoleBinding"):
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["roleRef"]["name"] in {n for ns, n in roles if ns == binding["metadata"]["namespace"]}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": f"{RELEASE}-pgsteward", "namespace": NAMESPACE}]
    env = {e["name"]: e.get("value") for e in one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PGSTEWARD_WATCH_NAMESPACES"] == "team-a,team-b"


def test_two_replicas_use_leader_election_and_spread_over_nodes(helm):
    docs = render(helm, "full")
    dep = one(docs, "Deployment")
    assert dep["spec"]["replicas"] == 2
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PGSTEWARD_LEADER_ELECTION"] == "true"
    assert env["PGSTEWARD_LEASE_NAME"] == "pgsteward-leader"
    anti = dep["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    term = anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert term["labelSelector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    # Renewing the Lease is limited to that one name.
    (role,) = [r for r in by_kind(docs, "Role") if r["metadata"]["name"].endswith("-leader-election")]
    named = [rule for rule in role["rules"] if rule.get("resourceNames")]
    assert named and all(rule["resourceNames"] == ["pgsteward-leader"] for rule in named)
    assert all("create" not in rule["verbs"] for rule in named)


def test_service_monitor_scrapes_the_metrics_port(helm):
    docs = render(helm, "full")
    sm = one(docs, "ServiceMonitor")
    svc = one(docs, "Service")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in svc["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"


def test_network_policy_admits_only_the_metrics_port_from_the_listed_peers(helm):
    docs = render(helm, "full")
    np = one(docs, "NetworkPolicy")
    dep = one(docs, "Deployment")
    assert np["spec"]["podSelector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    assert np["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = np["spec"]["ingress"]
    assert rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    # Without peers it admits nothing at all.
    closed = one(render(helm, None, "--set", "networkPolicy.enabled=true"), "NetworkPolicy")
    assert closed["spec"]["ingress"] == []


def test_notes_tell_the_user_what_to_apply_next(helm):
    proc = run(
        [helm, "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client",
         "--values", str(values_file("namespaced"))]
    )
    notes = proc.stdout.split("NOTES:", 1)[1]
    assert "kind: PgInstance" in notes
    assert "kubectl apply -n team-a" in notes
    assert f"rollout status deployment/{RELEASE}-pgsteward" in notes
    assert "kubectl apply --server-side -f charts/pgsteward/crds/" in notes
