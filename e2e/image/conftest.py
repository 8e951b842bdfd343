"""Fixtures for the image tier. See harness.py for the layout of an instance
and storage.py for the storage backends.

Which wal-g runs: PGSTEWARD_WALG=/path/to/wal-g (default: the labelled
stand-in e2e/standins/wal-g). The S3 server: versitygw from
e2e/setup/install-s3.sh ($PGSTEWARD_CACHE/bin/versitygw, or
PGSTEWARD_S3_SERVER). Both are named, with their versions, in the header.

Tests of the backup storage take the `backend` fixture (the storage modules
say `pytestmark = pytest.mark.usefixtures("backend")`): each runs once on
`file` and once on `s3`. A backend the chosen wal-g cannot use, or an S3
server that is not installed, makes that run SKIPPED with the reason, never
passed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import harness
import s3
from storage import FileStorage, S3Storage

# The leak check every tier shares lives in e2e/.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import leakcheck  # noqa: E402

CURRENT_MAJOR = 18
OLD_MAJOR = 17
BACKENDS = ["file", "s3"]
BUCKET = "pgsteward-e2e"


def pytest_report_header(config):
    lines = []
    for major in harness.majors_available():
        version = subprocess.run([str(harness.pg_bindir(major) / "postgres"), "--version"],
                                 capture_output=True, text=True).stdout.strip()
        lines.append(f"PostgreSQL {major}: {version} ({harness.pg_bindir(major)})")
    walg = harness.walg_bin()
    label = "STAND-IN (e2e/standins/wal-g), not real WAL-G" if harness.using_standin() else "real"
    lines.append(f"WAL-G: {walg} [{label}]: {harness.walg_version()}")
    binary = s3.server_bin()
    if binary:
        lines.append(f"S3 server: {binary}: {s3.server_version(binary)}")
    else:
        lines.append("S3 server: not installed (e2e/setup/install-s3.sh); the s3 backend is skipped")
    for kind in BACKENDS:
        why = harness.walg_supports(kind)
        lines.append(f"backend {kind}: {'runs' if why is None else 'SKIPPED: ' + why}")
    return lines


def _require_major(major: int) -> None:
    if major not in harness.majors_available():
        pytest.fail(f"PostgreSQL {major} is not installed in {harness.CACHE}/pg; run `make test-deps`")


@pytest.fixture(scope="session")
def s3_servers():
    """Factory for S3 servers (each its own process, port and data); all are
    stopped at the end of the session."""
    binary = s3.server_bin()
    started: list[s3.S3Server] = []

    def factory() -> s3.S3Server:
        if not binary:
            pytest.skip("no S3 server: run e2e/setup/install-s3.sh (or set PGSTEWARD_S3_SERVER)")
        server = s3.S3Server(binary, harness.make_workdir("s3-server"))
        server.start()
        server.create_bucket(BUCKET)
        harness.CREDENTIALS[f"the secret key of S3 server {server.root.name}"] = server.secret_key
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture(scope="session")
def s3_server(s3_servers):
    """The session's shared S3 server, started on first use."""
    return s3_servers()


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request):
    """The storage backend of this run of the test: "file" or "s3"."""
    why = harness.walg_supports(request.param)
    if why is not None:
        pytest.skip(f"backend {request.param}: {why}")
    if request.param == "s3" and not s3.server_bin():
        pytest.skip("backend s3: no S3 server installed (e2e/setup/install-s3.sh)")
    return request.param


@pytest.fixture
def new_storage(request):
    """Factory: a fresh, empty storage on this test's backend (file without
    the backend fixture). new_storage(server=...) puts an S3 storage on
    another S3 server (an outage test stops its own server)."""
    kind = request.getfixturevalue("backend") if "backend" in request.fixturenames else "file"

    def factory(server: s3.S3Server | None = None):
        if kind == "file":
            return FileStorage(harness.make_workdir("storage"))
        server = server or request.getfixturevalue("s3_server")
        return S3Storage(server, BUCKET, f"{request.node.name[:40]}-{uuid.uuid4().hex[:8]}")

    return factory


@pytest.fixture
def make_instance(request, new_storage):
    """Factory: make_instance(major=18, storage=None, env=None) -> Instance.
    With storage=None the instance gets its own storage on the test's
    backend (a directory inside the instance for tests without one). Every
    instance made is stopped at the end of the test; its files are kept on
    failure for inspection and removed on success."""
    made: list[harness.Instance] = []
    on_backend = "backend" in request.fixturenames

    def factory(major: int = CURRENT_MAJOR, storage=None, env=None, name=None) -> harness.Instance:
        _require_major(major)
        if storage is None and on_backend:
            storage = new_storage()
        inst = harness.new_instance(name or request.node.name[:40], major, storage=storage, env=env)
        made.append(inst)
        return inst

    yield factory
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for inst in made:
        inst.stop()
    # What the instances wrote (logs, results, status documents, termination
    # messages) holds no credential of the tier.
    leaks = [hit for inst in made for hit in leakcheck.find_leaks(
        harness.CREDENTIALS, leakcheck.file_sources([inst.root]))]
    for inst in made:
        if not failed and not leaks:
            shutil.rmtree(inst.root, ignore_errors=True)
            if isinstance(inst.storage, FileStorage) and not str(inst.storage.path).startswith(str(inst.root)):
                shutil.rmtree(inst.storage.path, ignore_errors=True)
    assert not leaks, "a credential leaked (files kept): " + "; ".join(leaks)


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
