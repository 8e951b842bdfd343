"""`make bench-scale`: the skip without a server, and the measuring code.

No API server exists on most machines that run `make test`, so the real
benchmark only runs where KUBECONFIG reaches one. Here we prove two things:
the script skips plainly (exit 0, one SKIP line) when there is no server, and
the figures it prints are computed correctly, against an in-process stand-in
API server and operator (fake_apiserver.py) whose behaviour is known.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys

import pytest

from conftest import CACHE, REPO, find_tool
from fake_apiserver import FakeCluster

SCRIPT = REPO / "e2e" / "cluster" / "bench-scale.sh"

spec = importlib.util.spec_from_file_location("bench_scale", REPO / "e2e" / "cluster" / "bench_scale.py")
bench = importlib.util.module_from_spec(spec)
sys.modules["bench_scale"] = bench
spec.loader.exec_module(bench)


def run_script(tmp_path, kubeconfig: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_SERVICE_")}  # no in-cluster fallback
    env.update(KUBECONFIG=kubeconfig, PGSTEWARD_CACHE=str(CACHE), HOME=str(tmp_path))
    return subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=60)


@pytest.fixture
def kubectl():
    path = find_tool("kubectl")
    if path is None:
        pytest.skip(f"kubectl is missing: run `make test-deps` (installs it into {CACHE}/bin)")
    return path


def test_skips_with_exit_0_when_kubeconfig_points_nowhere(tmp_path, kubectl):
    proc = run_script(tmp_path, str(tmp_path / "no-such-kubeconfig"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("SKIP bench-scale: no Kubernetes API server reachable"), proc.stdout


def test_skips_with_exit_0_when_the_server_refuses_connections(tmp_path, kubectl):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: nowhere\n"
        "clusters: [{name: nowhere, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: nobody, user: {token: x}}]\n"
        "contexts: [{name: nowhere, context: {cluster: nowhere, user: nobody}}]\n"
    )
    proc = run_script(tmp_path, str(kubeconfig))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("SKIP bench-scale: no Kubernetes API server reachable"), proc.stdout
    assert "127.0.0.1:1" in proc.stdout


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert bench.percentile(values, 50) == 50
    assert bench.percentile(values, 99) == 99
    assert bench.percentile(values, 100) == 100
    assert bench.percentile([3.0], 99) == 3.0
    assert bench.percentile([5.0, 1.0, 3.0], 50) == 3.0
    with pytest.raises(ValueError):
        bench.percentile([], 50)
    with pytest.raises(ValueError):
        bench.percentile([1.0], 101)


def test_prometheus_text_is_parsed_with_labels():
    text = (
        "# HELP x y\n# TYPE pgsteward_reconcile_duration_seconds histogram\n"
        'pgsteward_reconcile_duration_seconds_count{result="ok"} 7\n'
        'pgsteward_reconcile_duration_seconds_count{result="error"} 2\n'
        "process_resident_memory_bytes 1.5e+07\n"
        'apiserver_request_total{code="200",resource="statefulsets",verb="APPLY"} 3\n'
        'apiserver_request_total{code="200",resource="pods",verb="APPLY"} 9\n'
        'apiserver_request_total{code="200",resource="pginstances",subresource="status",verb="PATCH"} 4\n'
        'apiserver_request_total{code="200",resource="statefulsets",verb="LIST"} 11\n'
    )
    samples = bench.parse_prometheus(text)
    assert bench.metric_sum(samples, "pgsteward_reconcile_duration_seconds_count") == 9
    assert bench.metric_sum(samples, "pgsteward_reconcile_duration_seconds_count", result="ok") == 7
    assert bench.metric_sum(samples, "process_resident_memory_bytes") == 15_000_000
    assert bench.metric_sum(samples, "missing") is None
    writes = bench.write_requests(samples, {"statefulsets", "pginstances"})
    assert writes == {"APPLY statefulsets": 3, "PATCH pginstances/status": 4}


def test_objects_are_attributed_by_owner_reference_or_pgsteward_labels():
    owned = {"metadata": {"ownerReferences": [{"apiVersion": "pgsteward.io/v1alpha1", "kind": "PgInstance", "name": "a"}]}}
    labelled = {"metadata": {"labels": {"app.kubernetes.io/managed-by": "pgsteward", "app.kubernetes.io/instance": "b"}}}
    foreign = {"metadata": {"labels": {"app.kubernetes.io/instance": "c"},
                            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "c"}]}}
    assert bench.owner_instance(owned) == "a"
    assert bench.owner_instance(labelled) == "b"
    assert bench.owner_instance(foreign) is None


def test_bad_expectation_is_refused_with_a_message():
    assert bench.parse_expect("StatefulSet=1,Service=2") == {"StatefulSet": 1, "Service": 2}
    for bad in ("", "Pod=1", "Service=0", "Service=two"):
        with pytest.raises(ValueError, match="BENCH_EXPECT"):
            bench.parse_expect(bad)


def bench_args(url: str, instances: int, metrics: bool = False) -> argparse.Namespace:
    return argparse.Namespace(
        proxy=url, namespace="bench-test", instances=instances, expect=bench.DEFAULT_EXPECT,
        timeout=60, settle=0.3, idle=1.0, metrics_url=f"{url}/operator-metrics" if metrics else None,
        operator_pid=os.getpid(),
        apiserver_metrics=True, storage_class=None,
    )


def test_figures_against_a_quiet_operator():
    with FakeCluster(delay=0.05) as cluster:
        r = bench.run(bench_args(cluster.url, 12))
    assert r["instances"] == 12
    assert 0.05 <= r["owned_objects_p50_seconds"] <= r["owned_objects_p99_seconds"] <= r["all_owned_objects_seconds"]
    # The stand-in operator takes `delay` before each write: no latency below it.
    assert 0.05 <= r["spec_to_statefulset_p50_seconds"] <= r["spec_to_statefulset_p99_seconds"]
    assert r["spec_to_statefulset_p99_seconds"] <= r["spec_to_statefulset_max_seconds"] < 30
    assert r["idle_writes_total"] == 0
    assert r["idle_writes_per_reconcile"] == 0
    assert r["apiserver_write_requests_in_idle_window"] == {}
    assert r["operator_rss_mib"] > 1 and r["operator_rss_source"].startswith(f"/proc/{os.getpid()}/status")
    out = bench.report(r)
    assert "spec change -> updated StatefulSet p50" in out and "0 writes" in out


def test_idle_writes_are_counted_when_the_operator_writes_status_for_nothing():
    with FakeCluster(delay=0.01, noisy=True) as cluster:
        r = bench.run(bench_args(cluster.url, 8, metrics=True))
    assert r["idle_writes_instance_status"] == 8
    assert r["idle_writes_owned_objects"] == 0
    assert r["idle_reconciles_observed"] == 8
    assert r["idle_writes_per_reconcile"] == 1
    assert r["apiserver_write_requests_in_idle_window"] == {"PATCH pginstances": 8}
    assert r["operator_counted_in_idle_window"] == {"pgsteward_status_writes_total{outcome=written}": 8}
    assert "8 reconciles counted, 8 writes" in bench.report(r)


def test_reconciles_are_read_from_the_operator_metrics_when_quiet():
    with FakeCluster(delay=0.01) as cluster:
        r = bench.run(bench_args(cluster.url, 5, metrics=True))
    assert r["idle_reconciles_observed"] == 5
    assert r["idle_writes_total"] == 0 and r["idle_writes_per_reconcile"] == 0
    assert r["operator_counted_in_idle_window"] == {}


def test_an_existing_namespace_is_refused():
    with FakeCluster() as cluster:
        cluster.namespaces.add("bench-test")
        with pytest.raises(RuntimeError, match="already exists"):
            bench.run(bench_args(cluster.url, 1))
