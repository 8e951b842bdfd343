"""Shared helpers for the chart tier (`e2e/run-tier.sh chart`).

Everything here runs real programs: the helm binary that `e2e/setup/test-deps.sh`
installs into $PGSTEWARD_CACHE/bin, and the operator itself through cargo. A
tool that is missing is a skip that says how to get it, never a pass.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "pgsteward"
VALUES_DIR = Path(__file__).resolve().parent / "values"
CACHE = Path(os.environ.get("PGSTEWARD_CACHE", "/var/cache/pgsteward"))

RELEASE = "pgs"
NAMESPACE = "pgsteward-system"


def find_tool(name: str) -> str | None:
    cached = CACHE / "bin" / name
    if cached.is_file() and os.access(cached, os.X_OK):
        return str(cached)
    return shutil.which(name)


@pytest.fixture(scope="session")
def helm() -> str:
    path = find_tool("helm")
    if path is None:
        pytest.skip(f"helm is missing: run `make test-deps` (installs it into {CACHE}/bin)")
    return path


def run(cmd: list[str], *, check: bool = True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        )
    return proc


def values_file(name: str) -> Path:
    path = VALUES_DIR / f"{name}.yaml"
    assert path.is_file(), f"missing values file {path}"
    return path


def template_args(helm: str, values: str | None, *extra: str) -> list[str]:
    cmd = [helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    if values is not None:
        cmd += ["--values", str(values_file(values))]
    return cmd + list(extra)


def render(helm: str, values: str | None = None, *extra: str) -> list[dict]:
    """`helm template` the chart and return its documents (empty ones dropped)."""
    out = run(template_args(helm, values, *extra)).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d.get("kind") == kind]


def one(docs: list[dict], kind: str) -> dict:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected exactly one {kind}, rendered {len(found)}"
    return found[0]
