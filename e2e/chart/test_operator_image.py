"""images/operator/Dockerfile: multi-stage, distroless, non-root, hadolint-clean."""

from __future__ import annotations

import re

import pytest

from conftest import CACHE, REPO, find_tool, run

DOCKERFILE = REPO / "images" / "operator" / "Dockerfile"


def stages() -> list[list[str]]:
    """Instructions per stage (continuation lines joined, comments dropped)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            out.append([])
        if out:
            out[-1].append(line)
    return out


def test_hadolint_is_clean():
    hadolint = find_tool("hadolint")
    if hadolint is None:
        pytest.skip(f"hadolint is missing: run `make test-deps` (installs it into {CACHE}/bin)")
    proc = run([hadolint, str(DOCKERFILE)], check=False)
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


def test_builds_in_one_stage_and_ships_only_the_binary_on_distroless():
    build, final = stages()
    assert re.match(r"FROM rust:\S+ AS build", build[0])
    assert any("cargo build --release --locked -p pgsteward-operator" in i for i in build)
    assert final[0].startswith("FROM gcr.io/distroless/")
    copies = [i for i in final if i.upper().startswith("COPY")]
    assert copies == ["COPY --from=build /out/pgsteward-operator /usr/local/bin/pgsteward-operator"]
    assert not [i for i in final if i.upper().startswith("RUN")], "the final stage has no shell to RUN with"


def test_runs_as_a_numeric_non_root_user():
    final = stages()[-1]
    (user,) = [i for i in final if i.upper().startswith("USER ")]
    uid = user.split()[1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, user
    assert final[-1] == 'ENTRYPOINT ["/usr/local/bin/pgsteward-operator"]'


def test_chart_runs_the_image_as_its_own_user():
    import yaml

    from conftest import CHART

    (user,) = [i for i in stages()[-1] if i.upper().startswith("USER ")]
    uid, gid = user.split()[1].split(":")
    pod = yaml.safe_load((CHART / "values.yaml").read_text())["podSecurityContext"]
    assert (pod["runAsUser"], pod["runAsGroup"]) == (int(uid), int(gid))
