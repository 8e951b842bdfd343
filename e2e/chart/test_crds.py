"""The chart's CRDs are the repository's crds/, byte for byte.

The chart keeps them in Helm's crds/ folder rather than templates/: Helm then
installs them before anything that needs them, and `helm uninstall` never
deletes them. Deleting a CRD deletes every PgInstance in the cluster, and with
it the StatefulSets that own the data. The price is that `helm upgrade` does
not update them either (NOTES.txt and the README say to apply them first), and
that they must be copied here whenever `make crds` changes them. This test
catches a copy forgotten.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from conftest import CHART, REPO, render

SOURCE = REPO / "crds"
COPY = CHART / "crds"
FIX = "e2e/chart/sync.sh (copies crds/*.yaml into charts/pgsteward/crds/)"


def yaml_files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.glob("*.yaml"))} if d.is_dir() else {}


def test_repository_has_generated_crds():
    assert yaml_files(SOURCE), f"{SOURCE} holds no CRD yet: run `make crds`"


def test_chart_crds_are_byte_identical_to_the_repository_crds():
    source, copy = yaml_files(SOURCE), yaml_files(COPY)
    assert source, f"{SOURCE} holds no CRD yet: run `make crds`"
    assert sorted(copy) == sorted(source), f"chart crds/ has {sorted(copy)}, repository has {sorted(source)}; fix: {FIX}"
    differ = [name for name in source if source[name] != copy[name]]
    assert not differ, f"{differ} differ from {SOURCE.relative_to(REPO)}/; fix: {FIX}"


def test_helm_renders_exactly_those_crds(helm):
    rendered = [d for d in render(helm, None, "--include-crds") if d["kind"] == "CustomResourceDefinition"]
    expected = [d for p in sorted(SOURCE.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]
    assert expected, f"{SOURCE} holds no CRD yet: run `make crds`"
    key = lambda d: d["metadata"]["name"]  # noqa: E731
    assert sorted(rendered, key=key) == sorted(expected, key=key)
    # And none of them is a template: no CRD may be deleted by `helm uninstall`.
    assert not [d for d in render(helm) if d["kind"] == "CustomResourceDefinition"]
