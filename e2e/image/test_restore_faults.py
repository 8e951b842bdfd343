"""Restores against a damaged or unreachable archive, on real PostgreSQL: a gap
in the WAL never becomes a silent early promotion, and a storage outage
during recovery aborts it. On the file and the S3 backend; the archive gap
is an object deleted from the storage behind WAL-G's back."""

from __future__ import annotations

import json
import time

import pytest

from backup_restore import (archived, backup, check_fixture, commit_row, ids, needs_standin, pgdata_fingerprint,
                            remove_from_archive as remove_wal_object, restore_env, start_expect_failure,
                            start_primary, switch_wal, timeline, wait_archived)

pytestmark = pytest.mark.usefixtures("backend")


def primary_over_many_segments(make_instance, storage=None):
    """Backup, then rows 1-6, each committed in its own WAL segment. Returns
    (inst, points, segment holding row 3's commit)."""
    inst = start_primary(make_instance, storage=storage)
    backup(inst, "--id", "base")
    points, segment_of = {}, {}
    for i in range(1, 7):
        points[i] = commit_row(inst, i)
        segment_of[i] = inst.query(f"select pg_walfile_name('{points[i]['lsn_after']}')")
        switch_wal(inst)
    wait_archived(inst)
    assert len(set(segment_of.values())) == 6
    return inst, points, segment_of[3]


def remove_from_archive(inst, segment):
    remove_wal_object(inst.storage, inst.major, segment)


def test_gap_in_archive_refuses_a_restore_to_latest_before_anything_stops(make_instance):
    inst, _, gap = primary_over_many_segments(make_instance)
    remove_from_archive(inst, gap)
    before = pgdata_fingerprint(inst)
    run = inst.script("restore.sh", "in-place", "--id", "r-gap", "--target", "latest", check=False)
    assert run.returncode == 2, run.stderr
    result = json.loads(run.stdout)
    assert result["outcome"] == "failed" and "gap in the WAL archive" in result["message"]
    assert gap in result["message"], "the message names the missing segment"
    assert inst.proc.poll() is None and ids(inst) == [1, 2, 3, 4, 5, 6]
    assert pgdata_fingerprint(inst) == before
    check_fixture("restore-failed-gap", result)


def test_gap_before_a_time_target_stops_recovery_with_an_error_and_never_promotes(make_instance):
    src, points, gap = primary_over_many_segments(make_instance)
    remove_from_archive(src, gap)
    request = restore_env("clone", "c-gap", "time", points[5]["time_after"], source=src.storage)
    inst = make_instance(env=request)
    rc, out = start_expect_failure(inst)
    assert rc == 1, out
    result = inst.result("restore", "c-gap")
    assert result["outcome"] == "failed"
    assert "recovery ended before configured recovery target was reached" in result["message"], result
    log = (inst.state_dir / "restore-c-gap.log").read_text()
    assert "selected new timeline" not in log and "archive recovery complete" not in log
    assert not [w for w in archived(src.storage, src.major) if w.endswith(".history")]
    assert not [p for p in inst.pgdata.iterdir()], "PGDATA is empty again, nothing half-restored"
    # The same request at the next start does not initialise an empty
    # database in its place either: it says what to do.
    rc, out = start_expect_failure(inst)
    assert rc == 1 and "Set a new PGSTEWARD_RESTORE_ID" in out, out
    assert not (inst.pgdata / "PG_VERSION").exists()


def test_stopped_s3_server_during_recovery_aborts_instead_of_promoting(make_instance, backend, new_storage,
                                                                       s3_servers):
    """Storage outage during recovery: the S3 server is stopped once the backup
    is fetched (the restore's step `configure`), before the WAL is replayed."""
    if backend != "s3":
        pytest.skip("a stopped S3 server is an S3 fault; on file storage the stand-in's "
                    "test_storage_outage_during_recovery_aborts_instead_of_promoting covers it")
    server = s3_servers()
    inst, _, _ = primary_over_many_segments(make_instance, storage=new_storage(server=server))
    inst.stop()
    request = restore_env("in-place", "r-s3-outage", "latest")
    progress = inst.state_dir / "restore-progress.json"
    before = len(inst.log())
    inst.start(wait=False, PGSTEWARD_WAL_FETCH_ATTEMPTS=2, PGSTEWARD_WAL_FETCH_BACKOFF=1, WALG_S3_MAX_RETRIES=0,
               **request)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                step = json.loads(progress.read_text())["step"]
            except (OSError, ValueError):
                step = None
            if step in ("configure", "recover"):
                break
            assert inst.proc.poll() is None, inst.log()[before:]
            assert time.monotonic() < deadline, "the restore never reached configure"
            time.sleep(0.02)
        server.stop()
        rc = inst.wait_exit(timeout=300)
    finally:
        server.start()
    assert rc == 1, inst.log()[before:]
    result = inst.result("restore", "r-s3-outage")
    assert result["outcome"] == "rolled_back", result
    assert "could not restore file" in result["message"] and "exit code 200" in result["message"], result
    log = (inst.state_dir / "restore-r-s3-outage.log").read_text()
    assert "Aborting recovery" in log and "connection refused" in log
    assert "selected new timeline" not in log and "archive recovery complete" not in log
    assert not [w for w in archived(inst.storage, inst.major) if w.endswith(".history")]
    inst.start(**request)
    assert ids(inst) == [1, 2, 3, 4, 5, 6] and timeline(inst) == 1


def test_storage_outage_during_recovery_aborts_instead_of_promoting(make_instance):
    """Stand-in only: one segment's fetch fails on file storage
    (WALG_STANDIN_FAIL=wal-fetch:<segment>); real WAL-G's file storage has no
    outage to show (the S3 twin stops the server)."""
    needs_standin("WALG_STANDIN_FAIL=wal-fetch:<segment>")
    inst, _, segment = primary_over_many_segments(make_instance)
    inst.stop()
    request = restore_env("in-place", "r-outage", "latest")
    rc, out = start_expect_failure(inst, WALG_STANDIN_FAIL=f"wal-fetch:{segment}", PGSTEWARD_WAL_FETCH_ATTEMPTS=2,
                                   PGSTEWARD_WAL_FETCH_BACKOFF=1, **request)
    assert rc == 1, out
    result = inst.result("restore", "r-outage")
    assert result["outcome"] == "rolled_back", result
    assert f'could not restore file "{segment}" from archive' in result["message"], result
    assert "exit code 200" in result["message"]
    log = (inst.state_dir / "restore-r-outage.log").read_text()
    assert "Aborting recovery" in log and "retrying in 1s" in log
    assert "selected new timeline" not in log and "archive recovery complete" not in log
    assert not [w for w in archived(inst.storage, inst.major) if w.endswith(".history")]
    inst.start(**request)
    assert ids(inst) == [1, 2, 3, 4, 5, 6] and timeline(inst) == 1
    check_fixture("restore-rolled_back-outage", result)


def test_restore_to_latest_follows_the_newest_timeline_and_checks_it_for_gaps(make_instance):
    inst = start_primary(make_instance)
    backup(inst, "--id", "base")
    points = {i: commit_row(inst, i) for i in (1, 2, 3)}
    wait_archived(inst)
    inst.stop()
    inst.start(**restore_env("in-place", "r-1", "time", points[2]["time_after"]))
    assert ids(inst) == [1, 2] and timeline(inst) == 2
    commit_row(inst, 7)
    row7_segment = inst.query("select pg_walfile_name(pg_current_wal_lsn())")
    switch_wal(inst)
    commit_row(inst, 8)
    wait_archived(inst)
    assert row7_segment.startswith("00000002")
    inst.stop()
    # From the timeline-1 backup, through the switch to timeline 2, to its end.
    inst.start(**restore_env("in-place", "r-2", "latest"))
    assert ids(inst) == [1, 2, 7, 8] and timeline(inst) == 3
    assert "along timeline(s) 1 2" in (inst.log())
    wait_archived(inst)
    remove_from_archive(inst, row7_segment)
    run = inst.script("restore.sh", "in-place", "--id", "r-3", "--target", "latest", check=False)
    assert run.returncode == 2, run.stderr
    assert row7_segment in json.loads(run.stdout)["message"]
    assert inst.proc.poll() is None and ids(inst) == [1, 2, 7, 8]
