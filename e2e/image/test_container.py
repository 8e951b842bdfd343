"""The image as a real container: the root filesystem e2e/node/image.sh
assembles (debootstrap, the cached PostgreSQL build, our scripts and config
laid out as images/postgres/Dockerfile lays them out), imported into a
containerd of the test's own and run by runc, as the kubelet will run it.

Needs root, overlayfs, and Debian's containerd and runc (make test-deps
installs them); without them each test says what is missing and is skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

import harness

IMAGE_SH = harness.REPO / "e2e" / "node" / "image.sh"
NAMESPACE = "pgsteward-test"


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "containerd and runc need root"
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "the kernel has no overlayfs"
    for tool in ("containerd", "ctr", "runc"):
        if not shutil.which(tool):
            return f"{tool} is not installed (make test-deps installs Debian's containerd and runc)"
    return None


class Containerd:
    """A containerd of this test module's own: own root, state and socket."""

    def __init__(self, root: Path):
        self.root = root
        self.socket = root / "containerd.sock"
        (root / "config.toml").write_text(
            'version = 2\n'
            f'root = "{root}/root"\nstate = "{root}/state"\n'
            f'[grpc]\n  address = "{self.socket}"\n'
            '[plugins."io.containerd.grpc.v1.cri"]\n  disable_tcp_service = true\n')
        self.log = (root / "containerd.log").open("w")
        self.proc = subprocess.Popen(["containerd", "--config", str(root / "config.toml")],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while self.ctr("version", check=False).returncode != 0:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"containerd did not start; see {root}/containerd.log")
            time.sleep(0.2)

    def ctr(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        done = subprocess.run(["ctr", "--address", str(self.socket), "--namespace", NAMESPACE, *args],
                              capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"ctr {' '.join(args)}: {done.stderr}")
        return done

    def stop(self) -> None:
        for task in self.ctr("tasks", "list", "-q", check=False).stdout.split():
            self.ctr("tasks", "kill", "-s", "SIGKILL", task, check=False)
        for container in self.ctr("containers", "list", "-q", check=False).stdout.split():
            self.ctr("tasks", "delete", "-f", container, check=False)
            self.ctr("containers", "delete", container, check=False)
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()
        subprocess.run(["umount", "-R", str(self.root / "root")], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def containerd(tmp_path_factory):
    missing = _missing()
    if missing:
        pytest.skip(f"no container runtime here: {missing}")
    daemon = Containerd(Path(tmp_path_factory.mktemp("containerd")))
    yield daemon
    daemon.stop()


@pytest.fixture(scope="module")
def postgres_image(containerd):
    built = subprocess.run([str(IMAGE_SH), "postgres", "18"], capture_output=True, text=True, timeout=1800)
    assert built.returncode == 0, built.stderr
    archive, name = built.stdout.strip().split("\t")
    containerd.ctr("images", "import", archive)
    return name


def _exec(containerd: Containerd, container: str, *argv: str, user: str = "999") -> subprocess.CompletedProcess:
    exec_id = f"x{time.monotonic_ns()}"
    return containerd.ctr("tasks", "exec", "--exec-id", exec_id, "--user", user, container, *argv,
                          check=False, timeout=60)


def _wait_ready(containerd: Containerd, container: str, log: Path) -> None:
    deadline = time.monotonic() + 120
    while _exec(containerd, container, "pg_isready", "-q").returncode != 0:
        assert time.monotonic() < deadline, f"not ready in 120 s; the container printed:\n{log.read_text()[-3000:]}"
        time.sleep(0.5)


def test_the_image_runs_as_a_container_and_keeps_its_rows(containerd, postgres_image, tmp_path):
    volume = tmp_path / "volume"
    volume.mkdir()
    os.chown(volume, 999, 999)
    container = "pg18"
    log = tmp_path / "first.log"
    containerd.ctr("run", "-d", "--log-uri", f"file://{log}",
                   "--mount", f"type=bind,src={volume},dst=/var/lib/postgresql,options=rbind:rw",
                   "--env", "POSTGRES_PASSWORD=container-test-password",
                   postgres_image, container)
    _wait_ready(containerd, container, log)
    # The Dockerfile's contract: PGDATA under the volume, the server as 999.
    assert (volume / "18" / "docker" / "PG_VERSION").read_text().strip() == "18"
    assert (volume / "18" / "docker").stat().st_uid == 999
    wrote = _exec(containerd, container, "psql", "-v", "ON_ERROR_STOP=1", "-c",
                  "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 100) g")
    assert wrote.returncode == 0, wrote.stderr
    # SIGINT, the image's STOPSIGNAL: a fast shutdown, then the same volume again.
    containerd.ctr("tasks", "kill", "-s", "SIGINT", container)
    deadline = time.monotonic() + 60
    while "RUNNING" in containerd.ctr("tasks", "list", check=False).stdout:
        assert time.monotonic() < deadline
        time.sleep(0.5)
    containerd.ctr("tasks", "delete", container, check=False)
    containerd.ctr("containers", "delete", container)
    log = tmp_path / "second.log"
    containerd.ctr("run", "-d", "--log-uri", f"file://{log}",
                   "--mount", f"type=bind,src={volume},dst=/var/lib/postgresql,options=rbind:rw",
                   postgres_image, container)
    _wait_ready(containerd, container, log)
    count = _exec(containerd, container, "psql", "-Atc", "SELECT count(*) FROM t")
    assert count.stdout.strip() == "100", count.stderr
    whoami = _exec(containerd, container, "sh", "-c", "ps -o user= -C postgres | sort -u")
    assert whoami.stdout.split() == ["postgres"], whoami.stdout
