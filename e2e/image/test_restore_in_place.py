"""In-place restores on real PostgreSQL: through the entrypoint at start and by
hand while the server runs; rollback when the fetch or the recovery fails;
crash safety with a kill -9 at every step; bad input refused before anything
is stopped or moved. On the file and the S3 backend."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

import harness

from backup_restore import (NO_STORAGE, USING_STANDIN, backup, check_fixture, commit_row, ids, needs_standin, pgdata_fingerprint,
                            restore_env, start_expect_failure, start_primary, switch_wal, timeline, wait_archived)

IN_PLACE_STEPS = ["validate", "check-space", "stop-server", "snapshot", "fetch", "configure", "recover",
                  "verify", "finalize", "cleanup"]
CRASH_POINTS = [p for s in IN_PLACE_STEPS for p in (s, f"{s}:done")]
CRASH_POINTS.insert(CRASH_POINTS.index("snapshot:done"), "snapshot:renamed")
ROLLBACK_CRASH_POINTS = ["rollback", "rollback:aside", "rollback:restored"]

pytestmark = pytest.mark.usefixtures("backend")


def primary_with_history(make_instance, env=None):
    """Rows 1-3, backup, rows 4-6, all archived. Returns (inst, commit points)."""
    inst = start_primary(make_instance, env=env)
    points = {i: commit_row(inst, i) for i in (1, 2, 3)}
    backup(inst, "--id", "base")
    points.update({i: commit_row(inst, i) for i in (4, 5, 6)})
    wait_archived(inst)
    return inst, points


def assert_no_leftovers(inst):
    assert not inst.pgdata.with_name(inst.pgdata.name + ".pre-restore").exists()
    assert not inst.pgdata.with_name(inst.pgdata.name + ".failed-restore").exists()
    assert not (inst.state_dir / "restore-progress.json").exists()


def test_in_place_restore_at_start_replaces_the_data_with_the_target_state(make_instance):
    inst, points = primary_with_history(make_instance)
    inst.stop()
    request = restore_env("in-place", "r-time", "time", points[4]["time_after"])
    inst.start(**request)
    assert ids(inst) == [1, 2, 3, 4]
    assert timeline(inst) == 2
    result = inst.result("restore", "r-time")
    assert result["outcome"] == "succeeded" and result["details"]["timeline"] == 2
    assert_no_leftovers(inst)
    log = (inst.state_dir / "restore-r-time.log").read_text()
    assert "recovery stopping before commit of transaction" in log
    check_fixture("restore-succeeded-in-place", result)
    # The pod template still carries the request: later starts do nothing.
    inst.psql("insert into items (id, note) values (50, 'after the restore')")
    inst.stop()
    inst.start(**request)
    assert ids(inst) == [1, 2, 3, 4, 50]


def test_in_place_restore_rolls_back_when_the_fetch_fails(make_instance):
    """Stand-in only: a backup-fetch that fails half way on demand
    (WALG_STANDIN_FAIL=backup-fetch); the headroom check keeps a real full
    disk from reaching the fetch (the real fault is
    test_in_place_restore_rolls_back_when_the_disk_fills_during_recovery)."""
    needs_standin("WALG_STANDIN_FAIL=backup-fetch")  # noqa
    inst, _ = primary_with_history(make_instance)
    system = inst.query("select system_identifier from pg_control_system()")
    inst.stop()
    request = restore_env("in-place", "r-fetch", "latest")
    rc, out = start_expect_failure(inst, WALG_STANDIN_FAIL="backup-fetch", **request)
    assert rc == 1, out
    result = inst.result("restore", "r-fetch")
    assert result["outcome"] == "rolled_back" and "backup-fetch" in result["message"], result
    assert_no_leftovers(inst)
    inst.start(**request)
    assert ids(inst) == [1, 2, 3, 4, 5, 6]
    assert timeline(inst) == 1
    assert inst.query("select system_identifier from pg_control_system()") == system
    check_fixture("restore-rolled_back-fetch", result)


def test_in_place_restore_rolls_back_when_the_recovery_fails(make_instance):
    inst, points = primary_with_history(make_instance)
    inst.stop()
    # A transaction id that never committed: PostgreSQL reaches the end of
    # the archive without the target and refuses to promote.
    never = str(int(points[6]["xid"]) + 1000)
    request = restore_env("in-place", "r-recovery", "xid", never)
    rc, out = start_expect_failure(inst, **request)
    assert rc == 1, out
    result = inst.result("restore", "r-recovery")
    assert result["outcome"] == "rolled_back", result
    assert "recovery ended before configured recovery target was reached" in result["message"]
    assert_no_leftovers(inst)
    inst.start(**request)
    assert ids(inst) == [1, 2, 3, 4, 5, 6]
    assert timeline(inst) == 1
    check_fixture("restore-rolled_back-recovery", result)


def test_in_place_restore_by_hand_stops_the_running_server_and_leaves_it_stopped(make_instance):
    inst, points = primary_with_history(make_instance)
    run = inst.script("restore.sh", "in-place", "--id", "r-hand", "--target", "name", "--target-value", "nowhere",
                      check=False)
    assert run.returncode == 1, run.stderr  # no such restore point: rolled back
    assert json.loads(run.stdout)["outcome"] == "rolled_back"
    assert inst.wait_exit(timeout=60) is not None, "the server was stopped"
    inst.start()
    assert ids(inst) == [1, 2, 3, 4, 5, 6]
    inst.query("select pg_create_restore_point('before-cleanup')")
    inst.psql("delete from items where id > 2")
    wait_archived(inst)
    run = inst.script("restore.sh", "in-place", "--id", "r-hand-2", "--target", "name",
                      "--target-value", "before-cleanup")
    assert json.loads(run.stdout)["outcome"] == "succeeded"
    assert inst.proc.poll() is not None and not (inst.pgdata / "postmaster.pid").exists(), "left stopped"
    inst.start()
    assert ids(inst) == [1, 2, 3, 4, 5, 6]


def test_restore_killed_at_every_step_finishes_or_rolls_back_at_next_start(make_instance):
    inst, _ = primary_with_history(make_instance)
    backup_rows = [1, 2, 3]
    seen = []
    # The rollback points need a failure to roll back from: a transaction id
    # that never committed, so recovery reaches the end of the archive
    # without its target and PostgreSQL refuses to promote (a real failure,
    # with any wal-g).
    never = str(int(inst.query("select pg_current_xact_id()")) + 100000)
    points = CRASH_POINTS + ROLLBACK_CRASH_POINTS
    for k, point in enumerate(points):
        inst.psql(f"insert into items (id, note) values ({1000 + k}, 'before crash {k}')")
        wait_archived(inst)
        original = ids(inst)
        inst.stop()
        if point.startswith("rollback"):
            request = restore_env("in-place", f"crash-{k}", "xid", never)
        else:
            request = restore_env("in-place", f"crash-{k}", "immediate")
        fault = {"PGSTEWARD_FAULT_AT": point}
        rc, out = start_expect_failure(inst, **request, **fault)
        assert f"killing myself at step '{point}'" in out, f"{point}: fault not reached\n{out}"
        assert rc != 0, f"{point}: the entrypoint must not go on after the kill\n{out}"
        assert (inst.state_dir / "restore-progress.json").exists(), point
        # The next start (no fault) resumes; a finished rollback exits 1 once.
        rc, out = 0, ""
        inst.start(wait=False, **request)
        try:
            inst.wait_ready(timeout=300)
        except AssertionError:
            rc = inst.proc.returncode
            assert rc == 1, f"{point}: {inst.log()[-3000:]}"
            inst.start(**request)
        result = inst.result("restore", f"crash-{k}")
        rows = ids(inst)
        seen.append((point, result["outcome"], len(rows)))
        if point.startswith("rollback"):
            assert result["outcome"] == "rolled_back", (point, result)
            assert rows == original, (point, rows, original)
            assert timeline(inst) >= 1
        else:
            assert result["outcome"] == "succeeded", (point, result)
            assert rows == backup_rows, (point, rows)
        assert_no_leftovers(inst)
    print("\ncrash points (point, outcome, rows):", seen)
    assert len(seen) == len(points)


def test_restore_interrupted_too_often_is_rolled_back(make_instance):
    inst, _ = primary_with_history(make_instance, env={"PGSTEWARD_RESTORE_MAX_ATTEMPTS": "1"})
    inst.stop()
    request = restore_env("in-place", "r-flaky", "immediate")
    for _ in range(2):
        rc, out = start_expect_failure(inst, PGSTEWARD_FAULT_AT="fetch:done", **request)
        assert "killing myself at step 'fetch:done'" in out and rc != 0
    rc, out = start_expect_failure(inst, **request)
    assert rc == 1, out
    result = inst.result("restore", "r-flaky")
    assert result["outcome"] == "rolled_back" and "interrupted 2 times" in result["message"], result
    inst.start(**request)
    assert ids(inst) == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("case", ["target-before-first-backup", "unknown-backup", "no-storage", "not-enough-space"])
def test_bad_input_is_refused_before_anything_stops_or_moves(make_instance, case):
    inst, points = primary_with_history(make_instance)
    first_commit = inst.query("select to_char(min(committed_at) at time zone 'UTC', "
                              "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') from items")
    args, env, code, message = {
        "target-before-first-backup": (["--target", "time", "--target-value", first_commit], {}, 2,
                                       "is before the end of the first backup"),
        "unknown-backup": (["--target", "latest", "--backup", "base_000000010000000000000099"], {}, 2,
                           "does not exist; the storage has: base_"),
        "no-storage": (["--target", "latest"], NO_STORAGE, 3, "no backup storage configured"),
        "not-enough-space": (["--target", "latest"], {"PGSTEWARD_RESTORE_HEADROOM_BYTES": str(10 ** 15)}, 4,
                             "not enough free disk space"),
    }[case]
    before = pgdata_fingerprint(inst)
    pid = inst.query("select pg_backend_pid()")  # any query: the server answers
    run = inst.script("restore.sh", "in-place", "--id", f"bad-{case}", *args, check=False, **env)
    assert run.returncode == code, run.stderr
    result = json.loads(run.stdout)
    assert result["outcome"] == "failed" and message in result["message"], result
    assert message in run.stderr
    assert pid and inst.proc.poll() is None, "the server still runs"
    assert ids(inst) == [1, 2, 3, 4, 5, 6]
    assert pgdata_fingerprint(inst) == before
    if case == "not-enough-space":
        assert "bytes" in result["message"] and "free" in result["message"]
    check_fixture(f"restore-failed-{case}", result)


def test_bad_request_at_start_is_refused_and_the_next_start_runs_the_old_data(make_instance):
    inst, _ = primary_with_history(make_instance)
    inst.stop()
    before = pgdata_fingerprint(inst)
    request = restore_env("in-place", "r-bad", "time", "2001-01-01T00:00:00Z")
    rc, out = start_expect_failure(inst, **request)
    assert rc == 2, out
    assert "before the end of the first backup" in out
    assert pgdata_fingerprint(inst) == before
    inst.start(**request)
    assert ids(inst) == [1, 2, 3, 4, 5, 6]


def test_in_place_restore_rolls_back_when_the_disk_fills_during_recovery(make_instance):
    """A real full disk: the volume is a small tmpfs, filled so that the
    backup fits (PGSTEWARD_RESTORE_HEADROOM_BYTES=0: the user waived the
    headroom) but the WAL that recovery fetches does not. wal-g wal-fetch
    fails with ENOSPC, recovery aborts, the old data comes back and starts."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    inst = make_instance()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600m,mode=0755", "tmpfs", str(inst.volume)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        harness.chown_to_run_user(inst.volume)
        inst.start()
        inst.psql("create table items (id int primary key, note text not null, "
                  "committed_at timestamptz not null default clock_timestamp())")
        backup(inst, "--id", "base")
        size = inst.result("backup", "base")["details"]["backups"][0]["uncompressedSize"]
        for i in range(1, 7):
            commit_row(inst, i)
            inst.psql("insert into items (id, note) select 100 * %d + g, repeat('x', 1000) "
                      "from generate_series(1, 20) g" % i)
            switch_wal(inst)
        wait_archived(inst)
        inst.stop()
        # Leave room for the backup and one WAL segment, not for the replay.
        free = int(subprocess.run(["df", "-P", "-B1", str(inst.volume)], capture_output=True,
                                  text=True).stdout.splitlines()[1].split()[3])
        filler = inst.volume / "filler"
        keep = size + 20 * 1024 * 1024
        if free > keep:
            subprocess.run(["fallocate", "-l", str(free - keep), str(filler)], check=True)
        request = restore_env("in-place", "r-full", "latest")
        rc, out = start_expect_failure(inst, PGSTEWARD_RESTORE_HEADROOM_BYTES=0, PGSTEWARD_WAL_FETCH_ATTEMPTS=2,
                                       PGSTEWARD_WAL_FETCH_BACKOFF=1, **request)
        assert rc == 1, out
        result = inst.result("restore", "r-full")
        assert result["outcome"] == "rolled_back", result
        log = (inst.state_dir / "restore-r-full.log").read_text()
        assert "no space left on device" in log.lower(), log[-3000:]
        assert_no_leftovers(inst)
        filler.unlink(missing_ok=True)
        inst.start(**request)
        assert ids(inst)[:6] == [1, 2, 3, 4, 5, 6] and timeline(inst) == 1
    finally:
        inst.stop()
        subprocess.run(["umount", "-l", str(inst.volume)], check=False)
