"""Helpers for the backup and restore tests (test_backup.py, test_wal_archiving.py,
test_pitr.py, test_restore_in_place.py, test_restore_faults.py, test_status.py).

Everything here drives real programs: the image's scripts, real PostgreSQL
binaries and the chosen wal-g (PGSTEWARD_WALG: real WAL-G, or the stand-in),
on the test's storage backend (file, or S3 on a real S3 server).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

import harness

FIXTURES = harness.REPO / "e2e" / "fixtures" / "state"
UPDATE_FIXTURES = os.environ.get("PGSTEWARD_UPDATE_FIXTURES") == "1"
USING_STANDIN = harness.using_standin()
# Every storage variable unset: "no backup storage configured", on any backend.
NO_STORAGE = {var: "__unset__" for var in ("WALG_FILE_PREFIX", "WALG_S3_PREFIX", "WALG_GS_PREFIX", "WALG_AZ_PREFIX")}
TS_SQL = "to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"


def needs_standin(what: str) -> None:
    """Fault knobs (WALG_STANDIN_FAIL) exist only in the stand-in, and the
    stand-in only has file storage."""
    if not USING_STANDIN:
        pytest.skip(f"needs the WAL-G stand-in's fault injection ({what}); real WAL-G is in use")


def walg(inst: harness.Instance, *args: str, storage=None, check: bool = True, **env) -> subprocess.CompletedProcess:
    """wal-g itself, at <base>/<major> of the instance's (or the given) storage."""
    st = storage or inst.storage
    return inst.run([harness.walg_bin(), *args], check=check, **{**st.walg_env(inst.major), **env})


# --- servers -------------------------------------------------------------------

def start_primary(make_instance, env: dict | None = None, storage=None, name=None) -> harness.Instance:
    """A new instance initialised by the image's entrypoint, with a table."""
    inst = make_instance(env=env, storage=storage, name=name)
    inst.start()
    inst.psql("create table items (id int primary key, note text not null, "
              "committed_at timestamptz not null default clock_timestamp())")
    return inst


def start_expect_failure(inst: harness.Instance, timeout: float = 300, **env) -> tuple[int, str]:
    """Start through the entrypoint when it is expected to exit; (exit code, its log)."""
    before = len(inst.log())
    inst.start(wait=False, **env)
    rc = inst.wait_exit(timeout=timeout)
    return rc, inst.log()[before:]


def restart(inst: harness.Instance, **env) -> None:
    inst.stop()
    inst.start(**env)


def commit_row(inst: harness.Instance, i: int) -> dict:
    """One row in its own transaction; what a PITR target needs to stop right after it."""
    xid = inst.query(f"insert into items (id, note) values ({i}, 'row {i}') returning pg_current_xact_id()")
    after, lsn = inst.query(f"select {TS_SQL}, pg_current_wal_insert_lsn()").split("|")
    return {"id": i, "xid": xid, "time_after": after, "lsn_after": lsn}


def switch_wal(inst: harness.Instance) -> str:
    return inst.query("select pg_walfile_name(pg_switch_wal())")


def wait_archived(inst: harness.Instance, timeout: float = 60) -> None:
    """Switch WAL and wait until the archiver has pushed every finished segment."""
    switch_wal(inst)
    status = inst.pgdata / "pg_wal" / "archive_status"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not list(status.glob("*.ready")):
            return
        time.sleep(0.2)
    raise AssertionError(f"WAL not archived after {timeout}s: {sorted(p.name for p in status.glob('*.ready'))}")


def wait_push_failed(inst: harness.Instance, segment: str, timeout: float) -> None:
    """Wait until the archiver reports a failed push, then check that PostgreSQL
    kept `segment` to push again (its .ready file is still there)."""
    deadline = time.monotonic() + timeout
    while int(inst.query("select failed_count from pg_stat_archiver")) == 0:
        assert time.monotonic() < deadline, "the archiver never reported the failed push"
        time.sleep(0.2)
    assert (inst.pgdata / "pg_wal" / "archive_status" / f"{segment}.ready").exists()


def ids(inst: harness.Instance) -> list[int]:
    out = inst.query("select coalesce(string_agg(id::text, ',' order by id), '') from items")
    return [int(x) for x in out.split(",") if x]


def timeline(inst: harness.Instance) -> int:
    return int(inst.query("select substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"), 16)


def system_identifier(inst: harness.Instance) -> str:
    return inst.query("select system_identifier from pg_control_system()")


def backup(inst: harness.Instance, *args: str, check: bool = True, **env) -> subprocess.CompletedProcess:
    return inst.script("backup.sh", *args, check=check, **env)


def backup_names(inst: harness.Instance, storage=None) -> list[str]:
    """Backup names in the storage, oldest first, through wal-g itself."""
    out = walg(inst, "backup-list", "--json", "--detail", storage=storage).stdout
    rows = json.loads(out or "[]")
    return [r["backup_name"] for r in sorted(rows, key=lambda r: r["start_time"])]


WAL_FOLDER = "wal_005"
COMPRESSION_SUFFIXES = (".lz4", ".zst", ".br", ".lzma", ".gz")  # real WAL-G compresses; the stand-in does not


def strip_compression(name: str) -> str:
    for suffix in COMPRESSION_SUFFIXES:
        name = name.removesuffix(suffix)
    return name


def archived(storage, major: int) -> list[str]:
    """WAL file names in the archive, without WAL-G's compression suffix."""
    return sorted(strip_compression(k) for k in storage.keys(major, WAL_FOLDER))


def remove_from_archive(storage, major: int, wal_name: str) -> list[str]:
    """Delete one WAL file's object(s) from the storage, behind WAL-G's back
    (what a lifecycle rule or a careless operator does). Returns the object names."""
    doomed = [k for k in storage.keys(major, WAL_FOLDER) if strip_compression(k) == wal_name]
    assert doomed, f"{wal_name} is not in the archive: {storage.keys(major, WAL_FOLDER)}"
    for k in doomed:
        storage.delete(major, WAL_FOLDER, k)
    return doomed


def restore_env(mode: str, request_id: str, target: str = "latest", value: str | None = None,
                backup: str | None = None, source: Path | None = None) -> dict:
    env = {"PGSTEWARD_RESTORE_MODE": mode, "PGSTEWARD_RESTORE_ID": request_id, "PGSTEWARD_RESTORE_TARGET": target}
    if value is not None:
        env["PGSTEWARD_RESTORE_TARGET_VALUE"] = value
    if backup is not None:
        env["PGSTEWARD_RESTORE_BACKUP"] = backup
    if source is not None:
        env["PGSTEWARD_RESTORE_SOURCE_PREFIX"] = source if isinstance(source, str) else source.base
    return env


def pgdata_fingerprint(inst: harness.Instance) -> dict:
    """What must not change when a restore is refused: where PGDATA is, which
    cluster it holds, and no snapshot or progress file appeared."""
    pgdata = inst.pgdata
    control = subprocess.run([str(harness.pg_bindir(inst.major) / "pg_controldata"), str(pgdata)],
                             capture_output=True, text=True, env={"LC_ALL": "C"}).stdout
    fields = dict(line.split(":", 1) for line in control.splitlines() if ":" in line)
    return {
        "pg_version": (pgdata / "PG_VERSION").read_text() if (pgdata / "PG_VERSION").exists() else None,
        "system_identifier": fields.get("Database system identifier", "").strip(),
        "timeline": fields.get("Latest checkpoint's TimeLineID", "").strip(),
        "inode": pgdata.stat().st_ino if pgdata.exists() else None,
        "snapshot": Path(f"{pgdata}.pre-restore").exists(),
        "progress": (inst.state_dir / "restore-progress.json").exists(),
    }


# --- state-file fixtures for the operator's unit tests ----------------------------

def shape(value):
    """The key structure of a JSON value: dict keys all the way down; a list by
    the union of its elements' shapes; scalars (and null) carry no structure."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        merged: dict = {}
        for item in value:
            s = shape(item)
            if isinstance(s, dict):
                merged.update(s)
        return [merged] if merged else []
    return None


def check_fixture(name: str, data: dict) -> None:
    """PGSTEWARD_UPDATE_FIXTURES=1 writes e2e/fixtures/state/<name>.json from a
    real run; otherwise the committed fixture must have the same key structure."""
    path = FIXTURES / f"{name}.json"
    if UPDATE_FIXTURES:
        FIXTURES.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        return
    assert path.exists(), f"fixture {path} is missing: run the tier once with PGSTEWARD_UPDATE_FIXTURES=1"
    committed = json.loads(path.read_text())
    assert shape(committed) == shape(data), (
        f"{path.name} no longer matches what the scripts write; regenerate with PGSTEWARD_UPDATE_FIXTURES=1 "
        f"and update the operator.\ncommitted: {json.dumps(shape(committed))}\nnow:       {json.dumps(shape(data))}")


# --- secrets -------------------------------------------------------------------------

def files_containing(root: Path, needles: list[str]) -> list[str]:
    hits = []
    if not root.exists():
        return hits
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                data = path.read_bytes()
            except OSError:
                continue
            hits += [f"{path}: {n!r}" for n in needles if n.encode() in data]
    return hits
