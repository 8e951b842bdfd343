#!/usr/bin/env python3
"""The scale benchmark behind `make bench-scale` (started by bench-scale.sh).

Against the API server that `kubectl proxy` reaches, with an operator already
running (bench-scale.sh starts one, or you point it at yours):

1. create N PgInstances at once and time until every object each one owns
   exists (StatefulSet, Services, ConfigMap, Secret: BENCH_EXPECT);
2. change every instance's spec (spec.resources) and measure, per instance,
   the time from its patch to the StatefulSet carrying the change: p50, p99;
3. touch every instance without changing its spec (an annotation), which makes
   the operator reconcile each once more with nothing to do, and count the
   writes it makes meanwhile (watch events on the owned objects and the
   instances' status, and the API server's own request counters when it
   exposes them): there should be none;
4. report the operator's resident memory (from /proc when it runs here, or
   its metrics' process_resident_memory_bytes).

The pods never start: every instance carries a nodeSelector no node has, so
the benchmark measures the operator and the API server, not 500 PostgreSQLs.
Only the standard library is used; all API traffic goes through a local
`kubectl proxy` on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

GROUP, VERSION = "pgsteward.io", "v1alpha1"
# What the operator makes for one PgInstance (see the PgInstance doc: a
# ConfigMap, a superuser Secret, two Services and a StatefulSet). All but the
# Secret carry an owner reference; all carry the pgsteward labels.
DEFAULT_EXPECT = "StatefulSet=1,Service=2,ConfigMap=1,Secret=1"
OWNED = {
    "StatefulSet": "/apis/apps/v1/namespaces/{ns}/statefulsets",
    "Service": "/api/v1/namespaces/{ns}/services",
    "ConfigMap": "/api/v1/namespaces/{ns}/configmaps",
    "Secret": "/api/v1/namespaces/{ns}/secrets",
}
INSTANCES = "/apis/pgsteward.io/v1alpha1/namespaces/{ns}/pginstances"
WRITE_VERBS = {"POST", "PUT", "PATCH", "DELETE", "APPLY", "CREATE", "UPDATE", "DELETECOLLECTION"}


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} [bench-scale] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- pure helpers


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile {p} is not within 0..100")
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def parse_expect(spec: str) -> dict[str, int]:
    """"StatefulSet=1,Service=2" -> {"StatefulSet": 1, "Service": 2}."""
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        kind, _, count = part.partition("=")
        if kind not in OWNED or not count.isdigit() or int(count) < 1:
            raise ValueError(f"bad BENCH_EXPECT entry {part!r}: want Kind=count with Kind one of {sorted(OWNED)}")
        out[kind] = int(count)
    if not out:
        raise ValueError("BENCH_EXPECT is empty")
    return out


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\d+)?$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Samples of a Prometheus/OpenMetrics text exposition: (name, labels, value)."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        try:
            value = float(m.group(4))
        except ValueError:
            continue
        labels = dict(_LABEL.findall(m.group(3) or ""))
        out.append((m.group(1), labels, value))
    return out


def metric_sum(samples, name: str, **match: str) -> float | None:
    """Sum of the samples called `name` whose labels include `match`; None if none."""
    found = [v for n, labels, v in samples if n == name and all(labels.get(k) == w for k, w in match.items())]
    return sum(found) if found else None


def write_requests(samples, namespace_resources: set[str]) -> dict[str, float]:
    """apiserver_request_total for write verbs on our resources, by 'VERB resource'."""
    out: dict[str, float] = {}
    for name, labels, value in samples:
        if name != "apiserver_request_total":
            continue
        verb = labels.get("verb", "").upper()
        resource = labels.get("resource", "")
        if labels.get("subresource"):
            resource += "/" + labels["subresource"]
        if verb in WRITE_VERBS and resource.split("/")[0] in namespace_resources:
            key = f"{verb} {resource}"
            out[key] = out.get(key, 0.0) + value
    return out


def owner_instance(obj: dict) -> str | None:
    """The PgInstance an object belongs to: its owner reference, or, for what
    the operator creates but deliberately does not own (the superuser Secret
    outlives the instance), its pgsteward labels."""
    meta = obj.get("metadata", {})
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == "PgInstance" and ref.get("apiVersion", "").startswith(GROUP + "/"):
            return ref.get("name")
    labels = meta.get("labels") or {}
    if labels.get("app.kubernetes.io/managed-by") == "pgsteward":
        return labels.get("app.kubernetes.io/instance")
    return None


def instance_manifest(name: str, marker: str, storage_class: str | None = None) -> dict:
    storage = {"size": "100Mi"}
    if storage_class:
        storage["storageClassName"] = storage_class
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "PgInstance",
        "metadata": {"name": name, "labels": {"pgsteward.io/bench": "scale"}},
        "spec": {
            "postgresVersion": 18,
            "storage": storage,
            # No node has this label: the pods stay Pending, nothing is pulled.
            "nodeSelector": {"pgsteward.io/bench-no-such-node": "true"},
            "resources": {"requests": {"cpu": marker, "memory": "64Mi"}},
        },
    }


# ---------------------------------------------------------------- API access


class Api:
    """JSON over a local `kubectl proxy`."""

    def __init__(self, base: str):
        self.base = base.rstrip("/")

    def request(self, method: str, path: str, body=None, content_type="application/json", timeout=60):
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", content_type)
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
        return json.loads(raw) if raw[:1] in (b"{", b"[") else raw.decode(errors="replace")

    def get(self, path: str, **kw):
        return self.request("GET", path, **kw)

    def exists(self, path: str) -> bool:
        try:
            self.get(path, timeout=10)
            return True
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return False
            raise


class Watch(threading.Thread):
    """Streams watch events of one collection, timestamping each on arrival."""

    def __init__(self, api: Api, path: str, on_event):
        super().__init__(daemon=True)
        self.api, self.path, self.on_event = api, path, on_event
        self.ready = threading.Event()
        self.stopped = False
        self.error: Exception | None = None

    def run(self):
        try:
            listing = self.api.get(self.path)
            rv = listing["metadata"]["resourceVersion"]
            for item in listing.get("items", []):
                self.on_event(time.monotonic(), "EXISTING", item)
            while not self.stopped:
                url = f"{self.api.base}{self.path}?watch=1&allowWatchBookmarks=true&resourceVersion={rv}&timeoutSeconds=240"
                with urllib.request.urlopen(url, timeout=300) as resp:
                    self.ready.set()
                    for line in resp:
                        if self.stopped:
                            return
                        ev = json.loads(line)
                        obj = ev.get("object", {})
                        if ev.get("type") == "ERROR":
                            raise RuntimeError(f"watch {self.path}: {obj.get('message')}")
                        rv = obj.get("metadata", {}).get("resourceVersion", rv)
                        if ev.get("type") != "BOOKMARK":
                            self.on_event(time.monotonic(), ev["type"], obj)
        except Exception as e:  # reported by the main thread
            if not self.stopped:
                self.error = e
            self.ready.set()


@dataclass
class State:
    """What the watches saw, keyed by instance name."""

    owned: dict[str, dict[str, set[str]]] = field(default_factory=dict)  # inst -> kind -> names
    complete_at: dict[str, float] = field(default_factory=dict)
    sts_marker_at: dict[str, float] = field(default_factory=dict)
    writes: list[tuple[float, str, str]] = field(default_factory=list)  # (t, kind, name)
    lock: threading.Lock = field(default_factory=threading.Lock)


# ---------------------------------------------------------------- the benchmark


def start_proxy(kubectl: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([kubectl, "proxy", "--address=127.0.0.1", "--port=0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = proc.stdout.readline() if proc.stdout else ""
    m = re.search(r"127\.0\.0\.1:(\d+)", line)
    if not m:
        proc.kill()
        raise RuntimeError(f"kubectl proxy did not start: {line.strip()}")
    return proc, f"http://127.0.0.1:{m.group(1)}"


def scrape(url: str | None):
    if not url:
        return None
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return parse_prometheus(resp.read().decode())
    except (urllib.error.URLError, OSError):
        return None


def rss_bytes(pid: int | None, metrics) -> tuple[float | None, str]:
    if pid:
        try:
            status = open(f"/proc/{pid}/status").read()
            rss = re.search(r"VmRSS:\s+(\d+) kB", status)
            hwm = re.search(r"VmHWM:\s+(\d+) kB", status)
            if rss:
                peak = f", peak {int(hwm.group(1)) / 1024:.1f} MiB" if hwm else ""
                return int(rss.group(1)) * 1024, f"/proc/{pid}/status{peak}"
        except OSError:
            pass
    if metrics:
        v = metric_sum(metrics, "process_resident_memory_bytes")
        if v is not None:
            return v, "the operator's process_resident_memory_bytes"
    return None, "unknown: pass BENCH_OPERATOR_PID or expose process_resident_memory_bytes"


def wait_until(pred, timeout: float, what: str, watches) -> float:
    start = time.monotonic()
    while not pred():
        for w in watches:
            if w.error:
                raise RuntimeError(f"watch failed while waiting for {what}: {w.error}")
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - start


def run(args) -> dict:
    expect = parse_expect(args.expect)
    api = Api(args.proxy)
    ns = args.namespace
    names = [f"bench-{i:04d}" for i in range(args.instances)]
    st = State()
    marker = {"value": "101m", "phase": "create"}

    if not api.exists(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/pginstances.{GROUP}"):
        raise RuntimeError("the PgInstance CRD is not installed: kubectl apply --server-side -f crds/")
    if api.exists(f"/api/v1/namespaces/{ns}"):
        raise RuntimeError(f"namespace {ns} already exists: pick another BENCH_NAMESPACE")
    api.request("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})

    def on_owned(kind):
        def handler(t, typ, obj):
            inst = owner_instance(obj)
            if inst is None:
                return
            name = obj["metadata"]["name"]
            with st.lock:
                if marker["phase"] == "idle":
                    st.writes.append((t, kind, name))
                kinds = st.owned.setdefault(inst, {})
                kinds.setdefault(kind, set()).add(name)
                if inst not in st.complete_at and all(len(kinds.get(k, ())) >= n for k, n in expect.items()):
                    st.complete_at[inst] = t
                if kind == "StatefulSet" and marker["phase"] == "change":
                    template = json.dumps(obj.get("spec", {}).get("template", {}))
                    if f'"{marker["value"]}"' in template and inst not in st.sts_marker_at:
                        st.sts_marker_at[inst] = t
        return handler

    def on_instance(t, typ, obj):
        with st.lock:
            if marker["phase"] == "idle" and typ == "MODIFIED":
                # Our own annotation touch is one MODIFIED per instance; the
                # operator's status writes are the others (counted below).
                st.writes.append((t, "PgInstance", obj["metadata"]["name"] + "@" + obj["metadata"]["resourceVersion"]))

    watches = [Watch(api, path.format(ns=ns), on_owned(kind)) for kind, path in OWNED.items() if kind in expect]
    watches.append(Watch(api, INSTANCES.format(ns=ns), on_instance))
    for w in watches:
        w.start()
    for w in watches:
        w.ready.wait(30)
        if w.error:
            raise RuntimeError(f"cannot watch {w.path}: {w.error}")

    # 1. create N instances at once
    log(f"creating {len(names)} PgInstances in {ns}")
    t0 = time.monotonic()
    for name in names:
        api.request("POST", INSTANCES.format(ns=ns), instance_manifest(name, marker["value"], args.storage_class))
    created_in = time.monotonic() - t0
    log(f"created in {created_in:.1f}s; waiting for their objects ({args.expect})")
    wait_until(lambda: len(st.complete_at) == len(names), args.timeout, "every owned object", watches)
    all_owned = max(st.complete_at.values()) - t0
    per_instance = [st.complete_at[n] - t0 for n in names]

    # 2. change every spec; time to the updated StatefulSet, per instance
    marker.update(value="102m", phase="change")
    patch_at: dict[str, float] = {}
    log(f"changing spec.resources of {len(names)} instances")
    for name in names:
        patch_at[name] = time.monotonic()
        api.request("PATCH", f"{INSTANCES.format(ns=ns)}/{name}",
                    {"spec": {"resources": {"requests": {"cpu": "102m", "memory": "64Mi"}}}},
                    content_type="application/merge-patch+json")
    wait_until(lambda: len(st.sts_marker_at) == len(names), args.timeout, "every updated StatefulSet", watches)
    latencies = [st.sts_marker_at[n] - patch_at[n] for n in names]

    # 3. idle reconciles: touch each instance (no spec change) and count writes
    time.sleep(args.settle)
    metrics_before = scrape(args.metrics_url)
    apiserver_before = write_requests(parse_prometheus(api.get("/metrics")), {"pginstances", *[k.lower() + "s" for k in OWNED]}) \
        if args.apiserver_metrics else None
    marker["phase"] = "idle"
    log(f"touching {len(names)} instances (annotation only) and watching for writes for {args.idle:.0f}s")
    for name in names:
        api.request("PATCH", f"{INSTANCES.format(ns=ns)}/{name}",
                    {"metadata": {"annotations": {"pgsteward.io/bench-touch": str(time.time())}}},
                    content_type="application/merge-patch+json")
    time.sleep(args.idle)
    marker["phase"] = "done"
    metrics_after = scrape(args.metrics_url)
    apiserver_after = write_requests(parse_prometheus(api.get("/metrics")), {"pginstances", *[k.lower() + "s" for k in OWNED]}) \
        if args.apiserver_metrics else None
    with st.lock:
        owned_writes = [w for w in st.writes if w[1] != "PgInstance"]
        instance_events = [w for w in st.writes if w[1] == "PgInstance"]
    # One MODIFIED per instance is our own touch; more are the operator's.
    status_writes = max(0, len(instance_events) - len(names))
    reconciles = None
    operator_counted: dict[str, float] | None = None
    if metrics_before and metrics_after:
        for name in ("pgsteward_reconciliations_total", "pgsteward_reconcile_duration_seconds_count"):
            a, b = metric_sum(metrics_after, name), metric_sum(metrics_before, name)
            if a is not None and b is not None:
                reconciles = a - b
                break
        # What the operator itself counts as writes (pgsteward_object_writes_total
        # by kind, pgsteward_status_writes_total by outcome), as a cross-check.
        operator_counted = {}
        for name, label in (("pgsteward_object_writes_total", "kind"), ("pgsteward_status_writes_total", "outcome")):
            keys = {labels.get(label, "") for n, labels, _ in metrics_after if n == name}
            for key in sorted(keys):
                delta = (metric_sum(metrics_after, name, **{label: key}) or 0) - (metric_sum(metrics_before, name, **{label: key}) or 0)
                if delta:
                    operator_counted[f"{name}{{{label}={key}}}"] = delta
    apiserver_delta = None
    if apiserver_before is not None and apiserver_after is not None:
        apiserver_delta = {k: v - apiserver_before.get(k, 0) for k, v in apiserver_after.items()
                           if v - apiserver_before.get(k, 0) > 0}
        # Our own requests in the window: the N annotation patches.
        key = "PATCH pginstances"
        if key in apiserver_delta:
            apiserver_delta[key] -= len(names)
            if apiserver_delta[key] <= 0:
                del apiserver_delta[key]

    rss, rss_source = rss_bytes(args.operator_pid, metrics_after or scrape(args.metrics_url))
    writes = len(owned_writes) + status_writes
    return {
        "instances": len(names),
        "create_requests_seconds": round(created_in, 3),
        "all_owned_objects_seconds": round(all_owned, 3),
        "owned_objects_p50_seconds": round(percentile(per_instance, 50), 3),
        "owned_objects_p99_seconds": round(percentile(per_instance, 99), 3),
        "spec_to_statefulset_p50_seconds": round(percentile(latencies, 50), 3),
        "spec_to_statefulset_p99_seconds": round(percentile(latencies, 99), 3),
        "spec_to_statefulset_max_seconds": round(max(latencies), 3),
        "idle_window_seconds": args.idle,
        "idle_reconciles_observed": reconciles,
        "idle_writes_total": writes,
        "idle_writes_owned_objects": len(owned_writes),
        "idle_writes_instance_status": status_writes,
        "idle_writes_per_reconcile": (writes / reconciles) if reconciles else (writes / len(names)),
        "apiserver_write_requests_in_idle_window": apiserver_delta,
        "operator_counted_in_idle_window": operator_counted,
        "operator_rss_mib": None if rss is None else round(rss / 2**20, 1),
        "operator_rss_source": rss_source,
    }


def report(r: dict) -> str:
    lines = [
        f"bench-scale: {r['instances']} PgInstances",
        f"  create requests sent in            {r['create_requests_seconds']:8.2f} s",
        f"  every owned object exists after    {r['all_owned_objects_seconds']:8.2f} s"
        f"  (per instance p50 {r['owned_objects_p50_seconds']:.2f} s, p99 {r['owned_objects_p99_seconds']:.2f} s)",
        f"  spec change -> updated StatefulSet p50 {r['spec_to_statefulset_p50_seconds']:.3f} s, "
        f"p99 {r['spec_to_statefulset_p99_seconds']:.3f} s, max {r['spec_to_statefulset_max_seconds']:.3f} s",
        f"  idle reconciles ({r['idle_window_seconds']:.0f} s window, one touch per instance): "
        + (f"{r['idle_reconciles_observed']:.0f} reconciles counted, " if r["idle_reconciles_observed"] is not None
           else "reconciles not counted (no reconcile counter on /metrics), ")
        + f"{r['idle_writes_total']} writes ({r['idle_writes_owned_objects']} to owned objects, "
        f"{r['idle_writes_instance_status']} to instances/status), {r['idle_writes_per_reconcile']:.3f} writes per reconcile",
    ]
    if r["apiserver_write_requests_in_idle_window"] is not None:
        lines.append(f"  API server write requests in the idle window (all clients, ours removed): "
                     f"{json.dumps(r['apiserver_write_requests_in_idle_window']) or '{}'}")
    if r.get("operator_counted_in_idle_window") is not None:
        lines.append(f"  the operator's own write counters in the idle window: "
                     f"{json.dumps(r['operator_counted_in_idle_window'])}")
    rss = r["operator_rss_mib"]
    lines.append(f"  operator RSS                       {'n/a' if rss is None else f'{rss:8.1f} MiB'} ({r['operator_rss_source']})")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kubectl", default="kubectl")
    p.add_argument("--proxy", help="base URL of a running kubectl proxy (default: start one)")
    p.add_argument("--namespace", required=True)
    p.add_argument("--instances", type=int, default=500)
    p.add_argument("--expect", default=os.environ.get("BENCH_EXPECT", DEFAULT_EXPECT))
    p.add_argument("--timeout", type=float, default=900, help="seconds to wait for each phase")
    p.add_argument("--settle", type=float, default=5, help="seconds to let the operator go quiet before the idle phase")
    p.add_argument("--idle", type=float, default=30, help="seconds to watch for writes after the touch")
    p.add_argument("--storage-class", help="storageClassName of the instances' volumes")
    p.add_argument("--metrics-url", help="the operator's /metrics URL")
    p.add_argument("--operator-pid", type=int, help="pid of the operator, for its RSS")
    p.add_argument("--no-apiserver-metrics", dest="apiserver_metrics", action="store_false")
    p.add_argument("--json-out", help="also write the figures here as JSON")
    args = p.parse_args(argv)
    if args.instances < 1:
        p.error("--instances must be at least 1")
    proxy = None
    try:
        if not args.proxy:
            proxy, args.proxy = start_proxy(args.kubectl)
        if args.apiserver_metrics:
            try:
                Api(args.proxy).get("/metrics", timeout=10)
            except (urllib.error.URLError, OSError) as e:
                log(f"the API server's /metrics is not readable ({e}); counting writes from watches only")
                args.apiserver_metrics = False
        result = run(args)
        print(report(result), flush=True)
        if args.json_out:
            with open(args.json_out, "w") as f:
                json.dump(result, f, indent=2)
        return 0
    finally:
        if proxy:
            proxy.terminate()


if __name__ == "__main__":
    sys.exit(main())
