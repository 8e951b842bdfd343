"""Database metrics (issue 16): the real postgres_exporter (built from the Go
module proxy at the version images/postgres/exporter/go.mod pins) against
real PostgreSQL, connected as the monitoring role the entrypoint makes
(monitoring.sh), scraped over HTTP. Each of pgsteward's own metrics
(images/postgres/config/exporter/queries.yaml) is checked after the event
that should move it. Storage faults use the labelled WAL-G stand-in's
outage switch (real WAL-G's file storage has no outage to show)."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

import harness
from backup_restore import backup, needs_standin, switch_wal, wait_archived

EXPORTER = Path(os.environ.get("PGSTEWARD_CACHE", "/var/cache/pgsteward")) / "bin" / "postgres_exporter"
QUERIES = harness.REPO / "images" / "postgres" / "config" / "exporter" / "queries.yaml"
MONITOR = "pgsteward_monitor"
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def parse(text: str) -> dict[str, float]:
    """`name{labels}` -> value, for every sample of a scrape; without the
    `server` label the exporter adds to custom queries (one server here)."""
    out = {}
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if m and not line.startswith("#"):
            labels = [part for part in (m.group(2) or "{}")[1:-1].split(",") if part and not part.startswith("server=")]
            out[m.group(1) + (f"{{{','.join(labels)}}}" if labels else "")] = float(m.group(3))
    return out


class Exporter:
    """postgres_exporter as its own process, as the pod's exporter container
    runs it: over TCP to the server, as the monitoring role."""

    def __init__(self, inst: harness.Instance, password: str):
        assert EXPORTER.exists(), f"{EXPORTER} is missing: e2e/setup/install-exporter.sh (make test-deps) builds it"
        self.port = harness.free_port()
        self.log_path = inst.root / "exporter.log"
        env = {"PATH": "/usr/bin:/bin", "DATA_SOURCE_URI": f"127.0.0.1:{inst.port}/postgres?sslmode=disable",
               "DATA_SOURCE_USER": MONITOR, "DATA_SOURCE_PASS": password}
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [str(EXPORTER), f"--web.listen-address=127.0.0.1:{self.port}",
                 f"--extend.query-path={QUERIES}", "--collector.stat_statements"],
                env=env, stdout=log, stderr=subprocess.STDOUT)

    def scrape(self) -> dict[str, float]:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as r:
                    return parse(r.read().decode())
            except OSError:
                assert self.proc.poll() is None, self.log()
                assert time.monotonic() < deadline, f"no scrape within 30 s\n{self.log()}"
                time.sleep(0.3)

    def wait(self, what: str, predicate, timeout: float = 60) -> dict[str, float]:
        deadline = time.monotonic() + timeout
        while True:
            metrics = self.scrape()
            if predicate(metrics):
                return metrics
            assert time.monotonic() < deadline, f"{what}: not within {timeout} s; pgsteward samples: " + str(
                {k: v for k, v in metrics.items() if k.startswith(("pgsteward_", "pg_up"))})
            time.sleep(0.5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture
def monitored(make_instance):
    """A new instance with the monitoring role, and its exporter."""
    password = secrets.token_urlsafe(18)
    fail_file = None
    inst = make_instance(env={"PGSTEWARD_MONITORING_PASSWORD": password})
    if harness.using_standin():
        fail_file = inst.root / "storage-outage"
        inst.extra_env["WALG_STANDIN_FAIL_FILE"] = str(fail_file)
    inst.start()
    deadline = time.monotonic() + 30
    while inst.query(f"select count(*) from pg_roles where rolname = '{MONITOR}'") != "1":
        assert time.monotonic() < deadline, f"no monitoring role\n{inst.log()}"
        time.sleep(0.2)
    exporter = Exporter(inst, password)
    yield inst, exporter, password, fail_file
    exporter.stop()
    assert password not in exporter.log()
    assert password not in inst.log(), "the monitoring password reached the server log"


def test_the_exporter_connects_as_a_role_that_can_monitor_and_nothing_more(monitored):
    inst, exporter, _, _ = monitored
    metrics = exporter.wait("pg_up", lambda m: m.get("pg_up") == 1)
    assert metrics.get("pg_up") == 1, exporter.log()
    role = inst.query(f"select rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls, "
                      f"pg_has_role('{MONITOR}', 'pg_monitor', 'member') from pg_roles where rolname = '{MONITOR}'")
    assert role == "f|f|f|f|f|t", role
    inst.psql("create table private_rows (secret text); insert into private_rows values ('not for monitoring')")
    as_monitor = inst.psql("set role pgsteward_monitor; select * from private_rows", check=False)
    assert as_monitor.returncode != 0 and "permission denied" in as_monitor.stderr
    # pgsteward.state reads the four result documents and nothing else; only
    # the monitoring role may call it.
    escape = inst.psql("set role pgsteward_monitor; select pgsteward.state('../../../etc/passwd')", check=False)
    assert escape.returncode != 0 and "unknown kind" in escape.stderr, escape.stderr
    inst.psql("create role someone_else login")
    other = inst.psql("set role someone_else; select pgsteward.state('backup')", check=False)
    assert other.returncode != 0 and "permission denied" in other.stderr
    # The built-in collectors the dashboard reads, from this scrape.
    for name in ("pg_stat_database_xact_commit", "pg_locks_count", "pg_stat_database_blks_hit",
                 "pg_settings_max_connections", "pg_stat_bgwriter_buffers_alloc_total"):
        assert any(k.startswith(name) for k in metrics), f"{name} not exported"


def test_a_restart_keeps_the_role_and_takes_a_new_password(monitored):
    inst, exporter, _, _ = monitored
    exporter.stop()
    inst.stop()
    new_password = secrets.token_urlsafe(18)
    inst.extra_env["PGSTEWARD_MONITORING_PASSWORD"] = new_password
    inst.start()
    rotated = Exporter(inst, new_password)
    try:
        rotated.wait("pg_up with the new password", lambda m: m.get("pg_up") == 1, 60)
    finally:
        rotated.stop()
    assert new_password not in inst.log()


def test_transactions_and_statements_show_in_the_metrics(monitored):
    inst, exporter, _, _ = monitored
    key = 'pg_stat_database_xact_commit{datid="5",datname="postgres"}'
    before = exporter.wait("xact_commit", lambda m: key in m)[key]
    inst.psql("create extension if not exists pg_stat_statements")
    for i in range(50):
        inst.psql(f"select {i} + 1")
    metrics = exporter.wait("50 more commits", lambda m: m.get(key, 0) >= before + 50)
    assert metrics[key] >= before + 50
    exporter.wait("pg_stat_statements", lambda m: any(k.startswith("pg_stat_statements_calls_total") for k in m))


def test_a_failing_archive_shows_failing_pending_segments_and_the_last_success(monitored):
    needs_standin("WALG_STANDIN_FAIL_FILE")
    inst, exporter, _, fail_file = monitored
    switch_wal(inst)
    wait_archived(inst)
    ok = exporter.wait("archived", lambda m: m.get("pgsteward_archiver_last_archived_timestamp_seconds", 0) > 0)
    assert ok["pgsteward_archiver_failing"] == 0 and ok["pgsteward_archiver_pending_segments"] == 0
    last_archived = ok["pgsteward_archiver_last_archived_timestamp_seconds"]
    assert abs(time.time() - last_archived) < 120

    fail_file.write_text("wal-push\n")
    inst.psql("create table during_the_outage (i int)")
    switch_wal(inst)
    broken = exporter.wait("archiving failing", lambda m: m.get("pgsteward_archiver_failing") == 1)
    assert broken["pgsteward_archiver_pending_segments"] >= 1
    assert broken["pgsteward_archiver_failed_count"] >= 1
    assert broken["pgsteward_archiver_last_archived_timestamp_seconds"] == last_archived

    fail_file.unlink()
    switch_wal(inst)
    healed = exporter.wait("archiving again", lambda m: m.get("pgsteward_archiver_failing") == 0
                           and m.get("pgsteward_archiver_pending_segments") == 0, 120)
    assert healed["pgsteward_archiver_last_archived_timestamp_seconds"] > last_archived


def test_backup_age_and_a_failed_backup(monitored):
    needs_standin("WALG_STANDIN_FAIL_FILE")
    inst, exporter, _, fail_file = monitored
    none = exporter.wait("backup metrics", lambda m: "pgsteward_backup_last_success_timestamp_seconds" in m)
    assert none["pgsteward_backup_last_success_timestamp_seconds"] == 0
    assert none["pgsteward_backup_last_failed"] == 0

    backup(inst, "--id", "metrics-ok")
    done = exporter.wait("a successful backup", lambda m: m["pgsteward_backup_last_success_timestamp_seconds"] > 0)
    succeeded_at = done["pgsteward_backup_last_success_timestamp_seconds"]
    assert abs(time.time() - succeeded_at) < 120

    fail_file.write_text("backup-push\n")
    assert backup(inst, "--id", "metrics-fails", check=False).returncode != 0
    failed = exporter.wait("the failed backup", lambda m: m["pgsteward_backup_last_failed"] == 1)
    # The failure does not hide the age of the last good backup.
    assert failed["pgsteward_backup_last_success_timestamp_seconds"] == succeeded_at


def test_a_failed_restore_request_and_a_pending_restart(monitored):
    inst, exporter, _, _ = monitored
    idle = exporter.wait("operation metrics", lambda m: 'pgsteward_operation_running{kind="restore"}' in m)
    assert idle['pgsteward_operation_last_failed{kind="restore"}'] == 0
    assert idle['pgsteward_operation_running{kind="upgrade"}'] == 0
    assert idle["pgsteward_pending_restart_settings"] == 0

    # A restore refused before anything moved (no such backup) is a failed one.
    run = inst.script("restore.sh", "in-place", "--id", "metrics-bad", "--target", "latest",
                      "--backup", "base_000000010000000000000099", check=False)
    assert run.returncode == 2, run.stderr
    exporter.wait("the failed restore", lambda m: m['pgsteward_operation_last_failed{kind="restore"}'] == 1)

    (inst.config_dir / "conf.d" / "restart.conf").write_text("max_connections = 150\n")
    inst.psql("select pg_reload_conf()")
    exporter.wait("a setting waiting for a restart", lambda m: m["pgsteward_pending_restart_settings"] == 1)
