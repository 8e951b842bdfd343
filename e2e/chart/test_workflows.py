"""The workflows, the kind scripts and the README quickstart agree.

The kind workflow itself needs Docker and a registry, so it runs on GitHub
Actions, not here. What can be proven here is that it runs what it claims:
`make test` in ci.yaml; in e2e-kind.yaml the README's quickstart block word
for word, then the scenario; and that the quickstart's own commands are right
about this repository (the chart accepts its helm flags, the images it builds
are the ones the chart and the operator use, built the way Bake builds them).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess

import pytest
import yaml

from pathlib import Path

from conftest import CACHE, CHART, REPO, find_tool, one, run

WORKFLOWS = REPO / ".github" / "workflows"
# PGSTEWARD_README: check another file the same way (a draft section, say).
README = Path(os.environ.get("PGSTEWARD_README", REPO / "README.md"))
QUICKSTART = REPO / "e2e" / "kind" / "quickstart.sh"
MARKER = "<!-- quickstart -->"


def steps(workflow: str) -> list[dict]:
    doc = yaml.safe_load((WORKFLOWS / workflow).read_text())
    return [s for job in doc["jobs"].values() for s in job["steps"]]


def runs(workflow: str) -> list[str]:
    return [s["run"].strip() for s in steps(workflow) if "run" in s]


def quickstart_lines() -> list[str]:
    proc = run(["bash", str(QUICKSTART), "print"], check=False, env={**os.environ, "README": str(README)})
    assert proc.returncode == 0, f"{README} has no quickstart block after {MARKER}: {proc.stderr}"
    # Join continuation lines; drop comments and blanks.
    text = re.sub(r"\\\n\s*", " ", proc.stdout)
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def commands(prefix: str) -> list[list[str]]:
    return [shlex.split(ln) for ln in quickstart_lines() if ln.startswith(prefix)]


def positional(args: list[str], takes_value: set[str]) -> list[str]:
    """The arguments that are neither flags nor a flag's value."""
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a in takes_value:
            skip = True
        elif not a.startswith("-"):
            out.append(a)
    return out


def test_ci_runs_make_test():
    assert any(r == "bash .ci/run" or r == "make test" for r in runs("ci.yaml")), runs("ci.yaml")
    assert "exec make test" in (REPO / ".ci" / "run").read_text()


def test_kind_workflow_runs_the_readme_quickstart_then_the_scenario():
    doc = yaml.safe_load((WORKFLOWS / "e2e-kind.yaml").read_text())
    assert doc["env"]["E2E_KIND_REQUIRED"] == "1", "the workflow must fail, not skip, without kind"
    order = runs("e2e-kind.yaml")
    wanted = ["e2e/kind/quickstart.sh run", "e2e/kind/run.sh images 17", "e2e/kind/run.sh store",
              "e2e/kind/run.sh scenario"]
    positions = [order.index(w) for w in wanted]
    assert positions == sorted(positions), order
    by_run = {s.get("run", "").strip(): s for s in steps("e2e-kind.yaml")}
    assert by_run["e2e/kind/run.sh diagnose"]["if"] == "failure()"
    assert by_run["e2e/kind/run.sh down"]["if"] == "always()"


def test_make_e2e_kind_runs_the_same_scripts():
    proc = run(["make", "-n", "e2e-kind"], cwd=REPO)
    assert "e2e/kind/run.sh all" in proc.stdout


def test_kind_scripts_skip_plainly_without_docker_and_kind(tmp_path):
    # A PATH with the basic tools only, so that this never starts a real run
    # on a machine that has Docker and kind.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "date", "cat", "sed"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    env = {**os.environ, "PATH": str(bin_dir), "PGSTEWARD_CACHE": str(tmp_path), "E2E_KIND_REQUIRED": "0"}
    proc = subprocess.run([str(bin_dir / "bash"), str(REPO / "e2e/kind/run.sh"), "all"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("SKIP e2e-kind: needs"), proc.stdout
    assert "docker" in proc.stdout and "kind" in proc.stdout
    env["E2E_KIND_REQUIRED"] = "1"
    proc = subprocess.run([str(bin_dir / "bash"), str(REPO / "e2e/kind/run.sh"), "all"], capture_output=True, text=True, env=env)
    assert proc.returncode == 1 and "e2e-kind needs" in proc.stderr


def test_quickstart_extraction_takes_exactly_the_marked_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n```sh\nnot this\n```\n{MARKER}\n```sh\necho one\necho two\n```\n```sh\nnor this\n```\n")
    proc = subprocess.run(["bash", str(QUICKSTART), "print"], capture_output=True, text=True,
                          env={**os.environ, "README": str(readme)})
    assert proc.stdout == "echo one\necho two\n"
    proc = subprocess.run(["bash", str(QUICKSTART), "run"], capture_output=True, text=True,
                          env={**os.environ, "README": str(readme)})
    assert proc.returncode == 0 and proc.stdout == "one\ntwo\n"
    readme.write_text("# no marker\n")
    proc = subprocess.run(["bash", str(QUICKSTART), "run"], capture_output=True, text=True,
                          env={**os.environ, "README": str(readme)})
    assert proc.returncode == 1 and "no fenced block" in proc.stderr


def test_readme_has_the_kind_quickstart_section():
    assert README.is_file(), f"{README} does not exist"
    text = README.read_text()
    assert "## Install with Helm (kind quickstart)" in text
    section = text.split("## Install with Helm (kind quickstart)", 1)[1]
    assert MARKER in section.split("\n## ", 1)[0], f"the section must hold the {MARKER} block the workflow runs"
    kind = commands("kind create cluster")
    assert kind == [["kind", "create", "cluster", "--name", "pgsteward"]]
    assert commands("helm install"), "the quickstart installs the chart with helm"


def test_readme_helm_install_is_accepted_by_the_chart(helm):
    (cmd,) = commands("helm install")
    assert "charts/pgsteward" in cmd
    dry = [helm if c == "helm" else c for c in cmd if c != "--wait"] + ["--dry-run=client"]
    proc = run(dry, cwd=REPO)
    docs = [d for d in yaml.safe_load_all(proc.stdout.split("NOTES:")[0]) if isinstance(d, dict) and d.get("kind")]
    (container,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    loaded = {img for c in commands("kind load docker-image") for img in positional(c[3:], takes_value={"--name", "-n", "--nodes"})}
    built = {c[c.index("-t") + 1] for c in commands("docker build")}
    assert container["image"] in loaded, f"the chart runs {container['image']}, the quickstart loads {loaded}"
    env = {e["name"]: e.get("value") for e in container["env"]}
    postgres = f"{env['PGSTEWARD_POSTGRES_IMAGE_REPOSITORY']}:18-{env['PGSTEWARD_POSTGRES_IMAGE_VARIANT']}"
    assert postgres in loaded, f"a PgInstance on 18 runs {postgres}, the quickstart loads {loaded}"
    assert loaded <= built, f"the quickstart loads {loaded - built} without building it"


def bake_print(*targets: str, registry: str) -> dict:
    buildx = find_tool("docker-buildx")
    if buildx is None:
        pytest.skip(f"docker-buildx is missing: run `make test-deps` (installs it into {CACHE}/bin)")
    proc = run([buildx, "bake", "--print", *targets], cwd=REPO, env={**os.environ, "registry": registry})
    return json.loads(proc.stdout)["target"]


def test_readme_builds_the_postgres_image_the_way_bake_does():
    built = [c for c in commands("docker build") if "images/postgres" in c]
    assert built, "the quickstart builds a PostgreSQL image"
    for cmd in built:
        tag = cmd[cmd.index("-t") + 1]
        registry = tag.rsplit("/", 1)[0]
        (target,) = [t for t in bake_print(registry=registry).values() if tag in t["tags"]]
        assert cmd[-1] == target["context"]
        assert cmd[cmd.index("--target") + 1] == target["target"]
        args = dict(cmd[i + 1].split("=", 1) for i, c in enumerate(cmd) if c == "--build-arg")
        # Arguments that only fill labels (version, build time, commit) need not be passed.
        wanted = {k: v for k, v in target["args"].items() if k not in {"VERSION", "CREATED", "REVISION"}}
        assert args == wanted, f"README builds {tag} with {args}; Bake uses {wanted}"
        assert_label_only(REPO / target["context"] / target.get("dockerfile", "Dockerfile"), {"VERSION", "CREATED", "REVISION"})


def assert_label_only(dockerfile, names: set[str]) -> None:
    """Each of `names` is used in LABEL instructions only, so leaving it out changes no layer."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    for line in text.splitlines():
        used = {n for n in names if re.search(r"\$\{?" + n + r"\b", line)}
        if used:
            assert line.strip().startswith("LABEL"), f"{sorted(used)} used outside LABEL in {dockerfile}: {line.strip()[:120]}"


def test_bake_has_an_operator_target_for_this_dockerfile():
    target = bake_print("operator", registry="ghcr.io/pgsteward")["operator"]
    assert target["context"] == "."
    assert target["dockerfile"] == "images/operator/Dockerfile"
    assert any(t.startswith("ghcr.io/pgsteward/operator:") for t in target["tags"])
    readme_op = [c for c in commands("docker build") if "images/operator/Dockerfile" in c]
    assert readme_op and readme_op[0][readme_op[0].index("-t") + 1] in target["tags"], \
        "the README builds the operator under the tag Bake gives it"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert all(t.startswith(values["image"]["repository"] + ":") for t in target["tags"])
