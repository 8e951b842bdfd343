"""A tiny in-process stand-in for the Kubernetes API and an operator, for
testing the scale benchmark's measuring code (e2e/cluster/bench_scale.py)
where no API server exists. It is labelled as a stand-in: it implements only
the requests the benchmark makes (list, watch, create, merge-patch of a few
namespaced collections, and /metrics), on 127.0.0.1.

The fake operator owns a StatefulSet, two Services, a ConfigMap and a Secret
per PgInstance, copies spec.resources into the StatefulSet's pod template after
`delay` seconds, and, when `noisy`, writes the instance's status on every
reconcile even when nothing changed (the bug the idle figure is there to catch).
"""

from __future__ import annotations

import copy
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COLLECTION = re.compile(r"^/(api/v1|apis/[^/]+/[^/]+)/namespaces/([^/]+)/([a-z]+)(?:/([^/?]+))?$")


class FakeCluster:
    def __init__(self, delay: float = 0.02, noisy: bool = False):
        self.delay, self.noisy = delay, noisy
        self.lock = threading.Condition()
        self.rv = 100
        self.namespaces: set[str] = set()
        self.objects: dict[tuple[str, str], dict[str, dict]] = {}  # (ns, resource) -> name -> obj
        self.events: list[tuple[int, str, str, str, dict]] = []  # (rv, ns, resource, type, obj)
        self.requests: dict[tuple[str, str], int] = {}
        # The fake operator's own /metrics counters (names as the real one's).
        self.reconciles = 0
        self.object_writes: dict[str, int] = {}
        self.status_writes: dict[str, int] = {}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        with self.lock:
            self.lock.notify_all()

    # -- storage
    def _store(self, ns: str, resource: str, obj: dict, typ: str) -> dict:
        with self.lock:
            self.rv += 1
            obj = copy.deepcopy(obj)
            obj.setdefault("metadata", {})["resourceVersion"] = str(self.rv)
            obj["metadata"]["namespace"] = ns
            self.objects.setdefault((ns, resource), {})[obj["metadata"]["name"]] = obj
            self.events.append((self.rv, ns, resource, typ, obj))
            self.lock.notify_all()
            return obj

    def count(self, verb: str, resource: str) -> None:
        with self.lock:
            self.requests[(verb, resource)] = self.requests.get((verb, resource), 0) + 1

    # -- the fake operator
    def reconcile(self, ns: str, inst: dict, spec_changed: bool) -> None:
        time.sleep(self.delay)
        with self.lock:
            self.reconciles += 1
        name = inst["metadata"]["name"]
        owner = [{"apiVersion": "pgsteward.io/v1alpha1", "kind": "PgInstance", "name": name, "uid": name}]
        existing = self.objects.get((ns, "statefulsets"), {})
        if name not in existing or spec_changed:
            template = {"spec": {"containers": [{"name": "postgres", "resources": inst["spec"].get("resources", {})}]}}
            for resource, kind, obj_name in (("statefulsets", "StatefulSet", name), ("services", "Service", name),
                                             ("services", "Service", f"{name}-headless"),
                                             ("configmaps", "ConfigMap", f"{name}-config"),
                                             ("secrets", "Secret", f"{name}-superuser")):
                if resource != "statefulsets" and obj_name in self.objects.get((ns, resource), {}):
                    continue
                labels = {"app.kubernetes.io/managed-by": "pgsteward", "app.kubernetes.io/instance": name}
                # Like the real operator: the superuser Secret is labelled, not owned.
                body = {"kind": kind, "metadata": {"name": obj_name, "labels": labels}}
                if kind != "Secret":
                    body["metadata"]["ownerReferences"] = owner
                if resource == "statefulsets":
                    body["spec"] = {"template": template}
                typ = "MODIFIED" if obj_name in self.objects.get((ns, resource), {}) else "ADDED"
                self.count("APPLY" if typ == "MODIFIED" else "CREATE", resource)
                with self.lock:
                    self.object_writes[kind] = self.object_writes.get(kind, 0) + 1
                self._store(ns, resource, body, typ)
        elif self.noisy:
            current = self.objects[(ns, "pginstances")][name]
            current = copy.deepcopy(current)
            current["status"] = {"lastReconcile": time.time()}
            self.count("PATCH", "pginstances")  # counted like the real status subresource write
            with self.lock:
                self.status_writes["written"] = self.status_writes.get("written", 0) + 1
            self._store(ns, "pginstances", current, "MODIFIED")

    # -- HTTP
    def _handler(self):
        cluster = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *a):
                pass

            def reply(self, code: int, body) -> None:
                data = json.dumps(body).encode() if not isinstance(body, bytes) else body
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def body(self):
                return json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")

            def do_GET(self):
                path, _, query = self.path.partition("?")
                params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
                if path == "/metrics":
                    lines = [f'apiserver_request_total{{verb="{v}",resource="{r}",code="200"}} {n}'
                             for (v, r), n in sorted(cluster.requests.items())]
                    return self.reply(200, ("\n".join(lines) + "\n").encode())
                if path == "/operator-metrics":
                    with cluster.lock:
                        lines = ["# TYPE pgsteward_reconciliations counter",
                                 f"pgsteward_reconciliations_total {cluster.reconciles}"]
                        lines += [f'pgsteward_object_writes_total{{kind="{k}"}} {n}' for k, n in cluster.object_writes.items()]
                        lines += [f'pgsteward_status_writes_total{{outcome="{k}"}} {n}' for k, n in cluster.status_writes.items()]
                    return self.reply(200, ("\n".join(lines) + "\n").encode())
                if path.startswith("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"):
                    return self.reply(200, {"kind": "CustomResourceDefinition"})
                m = re.match(r"^/api/v1/namespaces/([^/]+)$", path)
                if m:
                    return self.reply(200 if m.group(1) in cluster.namespaces else 404, {})
                m = COLLECTION.match(path)
                if not m:
                    return self.reply(404, {})
                ns, resource = m.group(2), m.group(3)
                if params.get("watch") != "1":
                    with cluster.lock:
                        items = list(cluster.objects.get((ns, resource), {}).values())
                        return self.reply(200, {"items": items, "metadata": {"resourceVersion": str(cluster.rv)}})
                since = int(params.get("resourceVersion", "0"))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                deadline = time.monotonic() + float(params.get("timeoutSeconds", "30"))
                while time.monotonic() < deadline:
                    with cluster.lock:
                        batch = [(rv, t, o) for rv, n, r, t, o in cluster.events if rv > since and n == ns and r == resource]
                        if not batch:
                            cluster.lock.wait(0.2)
                            continue
                    for rv, typ, obj in batch:
                        self.wfile.write(json.dumps({"type": typ, "object": obj}).encode() + b"\n")
                        since = rv
                    self.wfile.flush()

            def do_POST(self):
                body = self.body()
                if self.path == "/api/v1/namespaces":
                    cluster.namespaces.add(body["metadata"]["name"])
                    return self.reply(201, body)
                m = COLLECTION.match(self.path)
                if not m or m.group(3) != "pginstances":
                    return self.reply(404, {})
                ns = m.group(2)
                cluster.count("CREATE", "pginstances")
                obj = cluster._store(ns, "pginstances", body, "ADDED")
                threading.Thread(target=cluster.reconcile, args=(ns, obj, True), daemon=True).start()
                self.reply(201, obj)

            def do_PATCH(self):
                patch = self.body()
                m = COLLECTION.match(self.path)
                if not m or m.group(3) != "pginstances" or not m.group(4):
                    return self.reply(404, {})
                ns, name = m.group(2), m.group(4)
                cluster.count("PATCH", "pginstances")
                with cluster.lock:
                    current = copy.deepcopy(cluster.objects[(ns, "pginstances")][name])
                spec_changed = "spec" in patch
                merge(current, patch)
                obj = cluster._store(ns, "pginstances", current, "MODIFIED")
                threading.Thread(target=cluster.reconcile, args=(ns, obj, spec_changed), daemon=True).start()
                self.reply(200, obj)

        return Handler


def merge(target: dict, patch: dict) -> None:
    """RFC 7386 JSON merge patch, in place."""
    for k, v in patch.items():
        if v is None:
            target.pop(k, None)
        elif isinstance(v, dict) and isinstance(target.get(k), dict):
            merge(target[k], v)
        else:
            target[k] = copy.deepcopy(v)
