"""Fixtures for the image tier. See harness.py for the layout of an instance."""

from __future__ import annotations

import shutil
import subprocess

import pytest

import harness

CURRENT_MAJOR = 18
OLD_MAJOR = 17


def pytest_report_header(config):
    lines = []
    for major in harness.majors_available():
        version = subprocess.run([str(harness.pg_bindir(major) / "postgres"), "--version"],
                                 capture_output=True, text=True).stdout.strip()
        lines.append(f"PostgreSQL {major}: {version} ({harness.pg_bindir(major)})")
    walg = harness.walg_bin()
    label = "STAND-IN (e2e/standins/wal-g), not real WAL-G" if walg.startswith(str(harness.STANDINS)) else "real"
    lines.append(f"WAL-G: {walg} [{label}]")
    return lines


def _require_major(major: int) -> None:
    if major not in harness.majors_available():
        pytest.fail(f"PostgreSQL {major} is not installed in {harness.CACHE}/pg; run `make test-deps`")


@pytest.fixture
def make_instance(request):
    """Factory: make_instance(major=18, storage=None, env=None) -> Instance.
    Every instance made is stopped at the end of the test; its files are kept
    on failure for inspection and removed on success."""
    made: list[harness.Instance] = []

    def factory(major: int = CURRENT_MAJOR, storage=None, env=None, name=None) -> harness.Instance:
        _require_major(major)
        inst = harness.new_instance(name or request.node.name[:40], major, storage=storage, env=env)
        made.append(inst)
        return inst

    yield factory
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for inst in made:
        inst.stop()
        if not failed:
            shutil.rmtree(inst.root, ignore_errors=True)


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
