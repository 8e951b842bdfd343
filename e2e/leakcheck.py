#!/usr/bin/env python3
"""The secrets check that every tier shares: no test credential (superuser,
replication, S3, monitoring) appears in anything the run produced that a
person or a log pipeline reads: logs, events, statuses, ConfigMaps, pod and
StatefulSet specs, result documents.

    leakcheck.py cluster [PATH...]
        the credentials: every Secret's values in the cluster of
        KUBECONFIG; searched: events, PgInstances and PgBackups (status
        included), ConfigMaps, StatefulSets, pods, every container's log
        (the previous one too), and the files under PATH
    leakcheck.py files VAR[,VAR...] PATH...
        the credentials: the values of the environment variables VAR;
        searched: the files under PATH

The image tier calls find_leaks() itself (conftest.py), with the credentials
it made. Values shorter than MIN_LENGTH are not searched for: "e2e" would
match everywhere and prove nothing.

Exit codes: 0 nothing found; 1 a credential was found (each hit is printed
with where it was, the credential named by its Secret and key, never shown);
2 usage.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

MIN_LENGTH = 8
# Files that are credential stores by design (0600, read by one process), not
# output: the cron environment of the image's scheduler and password files.
STORES = ("pgsteward-cron.env", ".pgpass", "password")
# Secrets that hold no test credential: Helm's release records (the chart's
# values) and the API server's own tokens. The superuser Secrets are
# kubernetes.io/basic-auth: their username ("postgres") is a name, not a
# credential, and appears everywhere.
NOT_CREDENTIALS = ("helm.sh/release.v1", "kubernetes.io/service-account-token", "bootstrap.kubernetes.io/token")
NAMES = ("username", "user")


def find_leaks(credentials: dict[str, str], sources: Iterable[tuple[str, str]]) -> list[str]:
    """Every (source, credential name) where a credential's value occurs."""
    wanted = {name: value for name, value in credentials.items() if len(value) >= MIN_LENGTH}
    return [f"{where}: contains {name}" for where, text in sources
            for name, value in wanted.items() if value in text]


def file_sources(paths: Iterable[str | Path], max_bytes: int = 16 << 20) -> Iterator[tuple[str, str]]:
    """Every regular file under the paths, but credential stores and files
    over max_bytes (data files and backups, which hold no text we write)."""
    for root in map(Path, paths):
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())
        for path in files:
            if path.name in STORES or path.name.endswith(".password"):
                continue
            try:
                if path.stat().st_size > max_bytes:
                    continue
                yield str(path), path.read_bytes().decode("utf-8", "replace")
            except OSError:
                continue


def kubectl(*args: str) -> str:
    out = subprocess.run(["kubectl", *args], capture_output=True, text=True, timeout=120)
    return out.stdout if out.returncode == 0 else ""


def cluster_credentials() -> dict[str, str]:
    found = {}
    secrets = json.loads(kubectl("get", "secrets", "-A", "-o", "json") or '{"items": []}')
    for s in secrets["items"]:
        if s.get("type") in NOT_CREDENTIALS:
            continue
        for key, value in (s.get("data") or {}).items():
            if key in NAMES:
                continue
            found[f"Secret {s['metadata']['namespace']}/{s['metadata']['name']} key {key}"] = (
                base64.b64decode(value).decode("utf-8", "replace"))
    return found


def cluster_sources() -> Iterator[tuple[str, str]]:
    for kind in ("events", "pginstances", "pgbackups", "configmaps", "statefulsets"):
        yield f"kubectl get {kind} -A", kubectl("get", kind, "-A", "-o", "json")
    text = kubectl("get", "pods", "-A", "-o", "json")
    yield "kubectl get pods -A", text
    pods = json.loads(text or '{"items": []}')
    for pod in pods["items"]:
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        for c in pod["spec"].get("initContainers", []) + pod["spec"]["containers"]:
            for previous in ("false", "true"):
                yield (f"kubectl logs -n {ns} {name} -c {c['name']} --previous={previous}",
                       kubectl("logs", "-n", ns, name, "-c", c["name"], f"--previous={previous}"))


def report(hits: list[str], searched: str) -> int:
    for hit in hits:
        print(f"not ok - a credential leaked: {hit}")
    if not hits:
        print(f"ok - no test credential in {searched}")
    return 1 if hits else 0


def main(argv: list[str]) -> int:
    if len(argv) >= 1 and argv[0] == "cluster":
        credentials = cluster_credentials()
        if not credentials:
            print("not ok - no Secret in the cluster: nothing to search for, so nothing is shown")
            return 1
        sources = [*cluster_sources(), *file_sources(argv[1:])]
        return report(find_leaks(credentials, sources),
                      f"{len(sources)} sources ({len(credentials)} credentials searched for)")
    if len(argv) >= 3 and argv[0] == "files":
        credentials = {var: os.environ.get(var, "") for var in argv[1].split(",")}
        missing = [var for var, value in credentials.items() if len(value) < MIN_LENGTH]
        if missing:
            print(f"not ok - no credential of {MIN_LENGTH}+ characters in {', '.join(missing)}")
            return 1
        sources = list(file_sources(argv[2:]))
        return report(find_leaks(credentials, sources), f"{len(sources)} files")
    print(__doc__.split("\n\n")[1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
