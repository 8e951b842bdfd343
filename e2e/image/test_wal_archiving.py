"""WAL archiving (wal-archive.sh as archive_command) and the exit codes of
wal-restore.sh (restore_command), on a real PostgreSQL server, on the file
and the S3 backend."""

from __future__ import annotations

import time

import pytest

from backup_restore import (NO_STORAGE, archived, needs_standin, start_primary, switch_wal, wait_archived,
                            wait_push_failed)

pytestmark = pytest.mark.usefixtures("backend")


def test_without_storage_archiving_is_off_logged_once_and_segments_are_recycled(make_instance):
    inst = start_primary(make_instance, env=NO_STORAGE)
    for i in range(5):
        inst.psql(f"insert into items (id, note) values ({i}, 'x')")
        switch_wal(inst)
    wait_archived(inst)
    stats = inst.query("select archived_count, failed_count from pg_stat_archiver").split("|")
    assert int(stats[0]) >= 5, f"PostgreSQL should count the segments as done: {stats}"
    assert stats[1] == "0", f"no archive failures (they would keep segments and fill the disk): {stats}"
    ready = list((inst.pgdata / "pg_wal" / "archive_status").glob("*.ready"))
    assert ready == [], f"segments left waiting for the archiver: {ready}"
    assert inst.log().count("WAL archiving is off") == 1, inst.log()
    assert archived(inst.storage, inst.major) == []


def test_archiving_pushes_segments_under_the_major_prefix(make_instance):
    inst = start_primary(make_instance)
    segment = switch_wal(inst)
    wait_archived(inst)
    assert segment in archived(inst.storage, inst.major), archived(inst.storage, inst.major)
    # Nothing directly under the base prefix: every major has its own.
    assert inst.storage.top_level() == [str(inst.major)]


def test_failed_push_to_a_stopped_s3_server_keeps_the_segment_until_it_is_back(make_instance, backend,
                                                                              new_storage, s3_servers):
    """Storage outage while archiving: the S3 server is stopped, then started again."""
    if backend != "s3":
        pytest.skip("a stopped S3 server is an S3 fault; on file storage the stand-in's "
                    "test_failed_push_keeps_the_segment_and_retries_until_storage_is_back covers it")
    server = s3_servers()
    inst = make_instance(storage=new_storage(server=server), env={"WALG_S3_MAX_RETRIES": "1"})
    inst.start()
    wait_archived(inst)
    server.stop()
    try:
        inst.psql("create table written_during_the_outage (i int)")
        segment = switch_wal(inst)
        wait_push_failed(inst, segment, timeout=120)
        assert "PostgreSQL keeps the segment and retries" in inst.log()
    finally:
        server.start()
    assert segment not in archived(inst.storage, inst.major)
    wait_archived(inst, timeout=180)
    assert segment in archived(inst.storage, inst.major)


def test_failed_push_keeps_the_segment_and_retries_until_storage_is_back(make_instance):
    """Stand-in only: a file storage that fails on demand (WALG_STANDIN_FAIL_FILE);
    real WAL-G's file storage has no outage to show."""
    needs_standin("WALG_STANDIN_FAIL_FILE")
    inst = make_instance()
    fail_file = inst.root / "storage-outage"
    inst.extra_env["WALG_STANDIN_FAIL_FILE"] = str(fail_file)
    inst.start()
    wait_archived(inst)
    fail_file.write_text("wal-push\n")
    inst.psql("create table written_during_the_outage (i int)")
    segment = switch_wal(inst)
    wait_push_failed(inst, segment, timeout=60)
    assert segment not in archived(inst.storage, inst.major)
    assert "PostgreSQL keeps the segment and retries" in inst.log()
    fail_file.unlink()
    # PostgreSQL retries a failed segment after a minute at most; a new
    # request (pg_switch_wal signals the archiver) makes it try sooner.
    wait_archived(inst, timeout=120)
    assert segment in archived(inst.storage, inst.major)


def test_wal_restore_maps_not_found_to_1_and_storage_errors_to_200(make_instance, backend, new_storage,
                                                                    s3_servers):
    """Not found (wal-g exit 74) is 1; a storage error is 200 after the retries:
    the stand-in's WALG_STANDIN_FAIL on file storage, a stopped S3 server on S3
    (real WAL-G's file storage has no outage to show)."""
    if backend == "file":
        needs_standin("WALG_STANDIN_FAIL")
    server = s3_servers() if backend == "s3" else None
    inst = start_primary(make_instance, storage=new_storage(server=server) if server else None)
    segment = switch_wal(inst)
    wait_archived(inst)
    dest = inst.root / "fetched"
    ok = inst.script("wal-restore.sh", segment, str(dest), check=False)
    assert ok.returncode == 0, ok.stderr
    assert dest.stat().st_size == 16 * 1024 * 1024

    missing = inst.script("wal-restore.sh", "0000000100000000000000FF", str(inst.root / "nope"), check=False)
    assert missing.returncode == 1, missing.stderr

    if server:
        server.stop()
    started = time.monotonic()
    broken = inst.script("wal-restore.sh", segment, str(inst.root / "broken"), check=False,
                         WALG_STANDIN_FAIL=f"wal-fetch:{segment}", PGSTEWARD_WAL_FETCH_ATTEMPTS=3,
                         PGSTEWARD_WAL_FETCH_BACKOFF=1, WALG_S3_MAX_RETRIES=0)
    took = time.monotonic() - started
    if server:
        server.start()
    assert broken.returncode == 200, broken.stderr
    assert broken.stderr.count("retrying in") == 2, broken.stderr
    assert took >= 3, f"backoff 1s + 2s expected, took {took:.1f}s"
    assert "Aborting recovery" in broken.stderr

    # No storage at all is not "end of archive" either.
    nostorage = inst.script("wal-restore.sh", segment, str(inst.root / "x"), check=False, **NO_STORAGE)
    assert nostorage.returncode == 200, nostorage.stderr
    # Nor is an unreadable credentials file.
    badfile = inst.script("wal-restore.sh", segment, str(inst.root / "y"), check=False,
                          AWS_SECRET_ACCESS_KEY="__unset__", AWS_SECRET_ACCESS_KEY_FILE=str(inst.root / "no-such-file"))
    assert badfile.returncode == 200, badfile.stderr
