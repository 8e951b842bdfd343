"""values.schema.json: helm refuses bad values before anything reaches the cluster."""

from __future__ import annotations

import json

import jsonschema
import pytest
import yaml

from conftest import CHART, VALUES_DIR, run, template_args

SCHEMA = json.loads((CHART / "values.schema.json").read_text())

# (what is wrong, --set arguments, a fragment of helm's message)
BAD_VALUES = [
    ("replicas is not a number", ["--set-string", "replicas=two"], "/replicas"),
    ("negative replicas", ["--set", "replicas=-1"], "/replicas"),
    ("two replicas without leader election", ["--set", "replicas=2", "--set", "leaderElection.enabled=false"],
     "/leaderElection/enabled"),
    ("namespace that is not a DNS label", ["--set", "watchNamespaces={Team_A}"], "/watchNamespaces/0"),
    ("the same namespace twice", ["--set", "watchNamespaces={a,a}"], "/watchNamespaces"),
    ("unknown log format", ["--set", "logging.format=xml"], "/logging/format"),
    ("root allowed", ["--set", "podSecurityContext.runAsNonRoot=false"], "/podSecurityContext/runAsNonRoot"),
    ("port out of range", ["--set", "metrics.port=70000"], "/metrics/port"),
    ("bad pull policy", ["--set", "image.pullPolicy=Sometimes"], "/image/pullPolicy"),
    ("misspelt top-level key", ["--set", "replica=2"], "replica"),
    ("bad scrape interval", ["--set", "serviceMonitor.interval=often"], "/serviceMonitor/interval"),
]


@pytest.mark.parametrize("case", BAD_VALUES, ids=[c[0] for c in BAD_VALUES])
def test_helm_refuses_a_bad_value(helm, case):
    _, args, fragment = case
    proc = run(template_args(helm, None, *args), check=False)
    assert proc.returncode != 0, f"helm accepted {args}:\n{proc.stdout[:500]}"
    assert "values don't meet the specifications of the schema" in proc.stderr or "schema" in proc.stderr, proc.stderr
    assert fragment in proc.stderr, proc.stderr


def test_template_guard_catches_replicas_without_leader_election_even_without_the_schema(helm):
    """Belt and braces: the template's own `fail`, with --skip-schema-validation."""
    proc = run(template_args(helm, None, "--skip-schema-validation", "--set", "replicas=3",
                             "--set", "leaderElection.enabled=false"), check=False)
    assert proc.returncode != 0
    assert "needs leaderElection.enabled: true" in proc.stderr, proc.stderr


def deep_merge(base: dict, override: dict) -> dict:
    """Helm's own merge of a values file over values.yaml."""
    out = dict(base)
    for k, v in override.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@pytest.mark.parametrize("path", [CHART / "values.yaml", *sorted(VALUES_DIR.glob("*.yaml"))],
                         ids=lambda p: p.name)
def test_shipped_values_satisfy_the_schema(path):
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    override = yaml.safe_load(path.read_text()) or {}
    merged = deep_merge(values, override)
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    errors = sorted(jsonschema.Draft7Validator(SCHEMA).iter_errors(merged), key=str)
    assert not errors, "\n".join(e.message for e in errors)
