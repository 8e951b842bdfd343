"""Every setting the chart passes to the operator is one the operator reads.

The chart configures the operator through environment variables; clap reads
each of them for one flag and prints it as `[env: NAME=]` in `run --help`. A
renamed flag would otherwise be ignored silently, so the chart would install
an operator that watches the wrong namespaces or never elects a leader.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from functools import lru_cache

import pytest

from conftest import CHART, REPO, one, render

# Read by tracing's EnvFilter, not by a flag.
NOT_A_FLAG = {"RUST_LOG"}


@lru_cache(maxsize=1)
def run_help() -> str:
    cargo = shutil.which("cargo")
    if cargo is None:
        pytest.fail("cargo is not on PATH: this check needs the operator binary (rustup installs cargo)")
    cmd = [cargo, "run", "-q", "--locked", "-p", "pgsteward-operator", "--", "run", "--help"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, f"`{' '.join(cmd[1:])}` exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    return proc.stdout


def flag_envs() -> dict[str, str]:
    """env var -> the help paragraph of its flag."""
    out = {}
    for block in re.split(r"\n(?=\s+-)", run_help()):
        for name in re.findall(r"\[env: ([A-Z0-9_]+)=", block):
            out[name] = block
    return out


@pytest.mark.parametrize("values", [None, "namespaced", "full"], ids=lambda v: v or "defaults")
def test_every_variable_the_chart_sets_is_an_operator_flag(helm, values):
    (container,) = one(render(helm, values), "Deployment")["spec"]["template"]["spec"]["containers"]
    names = {e["name"] for e in container["env"]} - NOT_A_FLAG
    unknown = names - set(flag_envs())
    assert not unknown, f"the operator reads no flag from {sorted(unknown)} (see `pgsteward-operator run --help`)"


def test_chart_values_are_values_the_flags_accept(helm):
    envs = flag_envs()
    schema = json.loads((CHART / "values.schema.json").read_text())
    formats = set(schema["properties"]["logging"]["properties"]["format"]["enum"])
    possible = re.search(r"\[possible values: ([^\]]+)\]", envs["PGSTEWARD_LOG_FORMAT"]).group(1)
    assert formats == {v.strip() for v in possible.split(",")}
    for values in (None, "full"):
        (container,) = one(render(helm, values), "Deployment")["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["PGSTEWARD_LEADER_ELECTION"] in {"true", "false"}
        host, port = env["PGSTEWARD_METRICS_ADDR"].rsplit(":", 1)
        assert host == "0.0.0.0" and int(port) == container["ports"][0]["containerPort"]
        # The downward API gives the Lease's namespace and this replica's identity.
        fields = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"] if "valueFrom" in e}
        assert fields == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}
