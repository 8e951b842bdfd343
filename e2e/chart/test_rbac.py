"""The chart grants exactly what the operator's code uses, not a verb more or less.

The one list is crates/pgsteward-operator/src/rbac.rs; `pgsteward-operator
rbac` prints it as JSON. The chart renders its rules from files/rbac.json, a
copy of that output. These tests run the binary (through cargo, so it is the
code as it is now), and check the copy and every rendered Role/ClusterRole
against it, in cluster-wide and in namespaced mode.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from functools import lru_cache

import pytest

from conftest import CHART, NAMESPACE, REPO, by_kind, render, run

TABLE_FILE = CHART / "files" / "rbac.json"
REGENERATE = "e2e/chart/sync.sh (cargo run -q --locked -p pgsteward-operator -- rbac > charts/pgsteward/files/rbac.json)"


@lru_cache(maxsize=1)
def operator_table() -> list[dict]:
    """`pgsteward-operator rbac`, or a failure that says what is missing."""
    cargo = shutil.which("cargo")
    if cargo is None:
        pytest.fail("cargo is not on PATH: the RBAC check needs the operator binary (rustup installs cargo)")
    cmd = [cargo, "run", "-q", "--locked", "-p", "pgsteward-operator", "--", "rbac"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        pytest.fail(
            f"`{' '.join(cmd[1:])}` exited {proc.returncode}: the operator must print its RBAC table "
            f"(rbac::to_json) for this check.\n--- stderr\n{proc.stderr[-3000:]}"
        )
    try:
        table = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(
            "`pgsteward-operator rbac` did not print JSON (the subcommand that prints "
            f"crates/pgsteward-operator/src/rbac.rs as JSON is missing?); it printed:\n{proc.stdout[:2000]!r}"
        )
    assert isinstance(table, list) and table, f"`pgsteward-operator rbac` printed {table!r}, not a list of rules"
    return table


def triples(rules) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) for every verb a rule list grants."""
    out = set()
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    out.add((group, resource, verb))
    return out


def table_triples(table, scope: str) -> set[tuple[str, str, str]]:
    return {(r["apiGroup"], r["resource"], v) for r in table if r["scope"] == scope for v in r["verbs"]}


def describe(extra: set, missing: set) -> str:
    fmt = lambda s: ", ".join(f"{v} {g or 'core'}/{r}" for g, r, v in sorted(s)) or "nothing"  # noqa: E731
    return f"the chart grants more: {fmt(extra)}; the chart grants less: {fmt(missing)}"


def assert_same(rendered: set, wanted: set, where: str) -> None:
    assert rendered == wanted, f"{where}: {describe(rendered - wanted, wanted - rendered)}"


def test_chart_copy_of_the_table_matches_the_operator():
    table = operator_table()
    copy = json.loads(TABLE_FILE.read_text())
    assert copy == table, f"{TABLE_FILE.relative_to(REPO)} is out of date; regenerate: {REGENERATE}"


def test_the_table_has_only_known_scopes():
    scopes = {r["scope"] for r in operator_table()}
    assert scopes <= {"instances", "leaderElection", "installCrds"}, scopes
    assert "instances" in scopes and "leaderElection" in scopes


def test_cluster_mode_grants_exactly_the_operator_table(helm):
    table = operator_table()
    docs = render(helm)
    (cluster_role,) = by_kind(docs, "ClusterRole")
    assert_same(triples(cluster_role["rules"]), table_triples(table, "instances"), "ClusterRole")
    (lease_role,) = by_kind(docs, "Role")
    assert lease_role["metadata"]["namespace"] == NAMESPACE
    assert_same(triples(lease_role["rules"]), table_triples(table, "leaderElection"), "leader-election Role")


def test_namespaced_mode_grants_exactly_the_operator_table_in_each_namespace(helm):
    table = operator_table()
    docs = render(helm, "namespaced")
    assert not by_kind(docs, "ClusterRole")
    roles = {r["metadata"]["namespace"]: r for r in by_kind(docs, "Role") if not r["metadata"]["name"].endswith("-leader-election")}
    assert sorted(roles) == ["team-a", "team-b"]
    for ns, role in roles.items():
        assert_same(triples(role["rules"]), table_triples(table, "instances"), f"Role in {ns}")


def test_nothing_is_granted_beyond_the_table(helm):
    """No wildcard, no CRD installation (the chart installs them), nothing the table lacks."""
    table = operator_table()
    allowed = {t for scope in ("instances", "leaderElection") for t in table_triples(table, scope)}
    for values in (None, "namespaced", "full"):
        for role in by_kind(render(helm, values), "ClusterRole") + by_kind(render(helm, values), "Role"):
            granted = triples(role["rules"])
            assert not {t for t in granted if "*" in t}, f"{role['metadata']['name']} uses a wildcard"
            assert granted <= allowed, describe(granted - allowed, set())
            assert not {t for t in granted if t[1] == "customresourcedefinitions"}


def test_without_leader_election_there_is_no_lease_permission(helm):
    docs = render(helm, None, "--set", "leaderElection.enabled=false")
    assert not [r for r in by_kind(docs, "Role") if r["metadata"]["name"].endswith("-leader-election")]


def test_a_verb_missing_from_the_chart_is_caught(helm, tmp_path):
    """The comparison is not vacuous: a chart whose table lost one verb fails it."""
    table = operator_table()
    chart = tmp_path / "pgsteward"
    shutil.copytree(CHART, chart)
    edited = json.loads(TABLE_FILE.read_text())
    victim = next(r for r in edited if r["scope"] == "instances" and len(r["verbs"]) > 1)
    dropped = victim["verbs"].pop()
    (chart / "files" / "rbac.json").write_text(json.dumps(edited))
    out = run([helm, "template", "pgs", str(chart), "--namespace", NAMESPACE]).stdout
    import yaml

    (cluster_role,) = [d for d in yaml.safe_load_all(out) if d and d["kind"] == "ClusterRole"]
    with pytest.raises(AssertionError, match=f"the chart grants less: {dropped}"):
        assert_same(triples(cluster_role["rules"]), table_triples(table, "instances"), "ClusterRole")


def test_an_empty_table_refuses_to_render(helm, tmp_path):
    chart = tmp_path / "pgsteward"
    shutil.copytree(CHART, chart)
    (chart / "files" / "rbac.json").write_text("[]")
    proc = run([helm, "template", "pgs", str(chart)], check=False)
    assert proc.returncode != 0 and "files/rbac.json is missing or empty" in proc.stderr
