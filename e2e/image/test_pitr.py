"""Point-in-time restores on real PostgreSQL: real WAL across several
segments, real recovery, targets by time, LSN, restore point and xid; clones
and bootstrap through the entrypoint; the cost of our orchestration. On the
file and the S3 backend."""

from __future__ import annotations

import json
import re
import shutil
import time

import pytest

import harness
from backup_restore import (archived, backup, check_fixture, commit_row, ids, restore_env, start_primary,
                            switch_wal, system_identifier, timeline, wait_archived)

pytestmark = pytest.mark.usefixtures("backend")


@pytest.fixture(scope="module")
def source(backend, request):
    """One primary: backup B1, rows 1-3, backup B2, rows 4-6, each row in its
    own transaction and WAL segment, with a restore point after row 5."""
    major = 18
    storage = None
    if backend == "s3":
        from storage import S3Storage
        storage = S3Storage(request.getfixturevalue("s3_server"), "pgsteward-e2e", f"pitr-source-{id(request)}")
    inst = harness.new_instance("pitr-source", major, storage=storage)
    try:
        inst.start()
        inst.psql("create table items (id int primary key, note text not null, "
                  "committed_at timestamptz not null default clock_timestamp())")
        backup(inst, "--id", "b1")
        points = {}
        for i in range(1, 7):
            if i == 4:
                backup(inst, "--id", "b2")
            points[i] = commit_row(inst, i)
            if i == 5:
                inst.query("select pg_create_restore_point('after-row-5')")
            switch_wal(inst)
            time.sleep(0.3)  # commit times well apart
        wait_archived(inst)
        segments = [w for w in archived(inst.storage, major) if len(w) == 24]
        assert len(segments) >= 8, f"the rows should span several segments: {segments}"
        yield {"inst": inst, "points": points,
               "b1": inst.result("backup", "b1")["details"]["backupName"],
               "b2": inst.result("backup", "b2")["details"]["backupName"]}
        inst.stop()
        shutil.rmtree(inst.root, ignore_errors=True)
    except BaseException:
        inst.stop()
        raise


def clone(make_instance, src, request_id, target, value=None, backup_name=None):
    inst = make_instance(env=restore_env("clone", request_id, target, value, backup_name,
                                         source=src["inst"].storage.base))
    inst.start()
    return inst


# (target, value from the source's points, rows expected, backup LATEST picks)
CASES = {
    "time-between-rows-2-and-3": ("time", lambda p: p[2]["time_after"], [1, 2], "b1"),
    "time-between-rows-5-and-6": ("time", lambda p: p[5]["time_after"], [1, 2, 3, 4, 5], "b2"),
    "lsn-after-row-4": ("lsn", lambda p: p[4]["lsn_after"], [1, 2, 3, 4], "b2"),
    "restore-point-after-row-5": ("name", lambda p: "after-row-5", [1, 2, 3, 4, 5], "b1"),
    "xid-of-row-3": ("xid", lambda p: p[3]["xid"], [1, 2, 3], "b1"),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_clone_to_target_has_exactly_the_rows_committed_before_it(make_instance, source, case):
    target, value_of, expected, picked = CASES[case]
    value = value_of(source["points"])
    inst = clone(make_instance, source, f"pitr-{case}", target, value)
    assert ids(inst) == expected
    result = inst.result("restore", f"pitr-{case}")
    assert result["outcome"] == "succeeded", result
    d = result["details"]
    assert (d["mode"], d["target"], d["targetValue"]) == ("clone", target, value)
    assert d["backupName"] == source[picked], f"LATEST for {target} should pick {picked}"
    assert d["timeline"] == timeline(inst) == 2
    assert result["step"] == "finished" and result["finishedAt"]
    # The recovery settings are gone and the server is a normal primary.
    assert inst.query("select pg_is_in_recovery()") == "f"
    assert inst.query("show restore_command") == ""
    assert not (inst.pgdata / "recovery.signal").exists()
    if case == "time-between-rows-2-and-3":
        check_fixture("restore-succeeded-pitr", result)


def test_clone_has_the_same_data_and_a_new_timeline_and_never_writes_to_the_source(make_instance, source):
    src = source["inst"]
    inst = clone(make_instance, source, "clone-latest", "latest")
    assert ids(inst) == ids(src) == [1, 2, 3, 4, 5, 6]
    assert system_identifier(inst) == system_identifier(src)
    assert timeline(src) == 1 and timeline(inst) == 2
    inst.psql("insert into items (id, note) values (100, 'clone only')")
    wait_archived(inst)
    own = archived(inst.storage, inst.major)
    assert "00000002.history" in own, own
    assert not [w for w in archived(src.storage, src.major) if w.startswith("00000002")], \
        "the clone must not archive into the source's storage"
    assert 100 not in ids(src)
    result = inst.result("restore", "clone-latest")
    assert result["details"]["backupName"] == source["b2"]
    check_fixture("restore-succeeded-clone", result)
    # A later start with the same request is a no-op.
    inst.stop()
    inst.start()
    assert ids(inst)[-1] == 100 and timeline(inst) == 2


def test_bootstrap_restores_an_instance_from_its_own_storage(make_instance):
    first = start_primary(make_instance, name="bootstrap-origin")
    backup(first, "--id", "b")
    for i in range(1, 4):
        commit_row(first, i)
    wait_archived(first)
    first.stop()
    # The volume is lost; a new one bootstraps from the same storage.
    again = make_instance(storage=first.storage, name="bootstrap-again",
                          env=restore_env("bootstrap", "boot-1", "latest"))
    again.start()
    assert ids(again) == [1, 2, 3]
    assert again.result("restore", "boot-1")["outcome"] == "succeeded"
    assert timeline(again) == 2
    wait_archived(again)
    assert "00000002.history" in archived(first.storage, first.major)


def test_a_refused_bootstrap_says_why_in_the_termination_message_and_never_initialises(make_instance):
    """Before the first start the container exits and exec cannot reach it:
    the operator reads why from the termination message."""
    first = start_primary(make_instance, name="bootstrap-early-origin")
    before = first.query("select to_char(now() at time zone 'utc', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
    time.sleep(1)
    backup(first, "--id", "b")
    first.stop()
    again = make_instance(storage=first.storage, name="bootstrap-early",
                          env=restore_env("bootstrap", "boot-early", "time", before))
    message_file = again.root / "termination-log"
    message_file.write_text("")
    harness.chown_to_run_user(again.root)
    for attempt in (1, 2):
        again.start(wait=False, PGSTEWARD_TERMINATION_LOG=str(message_file))
        assert again.wait_exit(120) != 0, again.log()[-2000:]
        published = json.loads(message_file.read_text())
        restore = published["restore"]
        assert (restore["kind"], restore["id"], restore["outcome"], restore["step"]) == (
            "restore", "boot-early", "failed", "validate"), restore
        assert "earliest time you can restore to" in restore["message"], restore["message"]
        assert published["upgrade"] is None
        assert not (again.pgdata / "PG_VERSION").exists(), f"attempt {attempt}: an empty database was created"
        message_file.write_text("")
    assert "not initialised over it" in again.log()
    check_fixture("termination-restore-failed-bootstrap", published)


def test_restore_wall_time_versus_raw_fetch_and_replay(make_instance, source):
    """Prints how long restore.sh takes against wal-g backup-fetch plus a plain
    recovery by hand of the same backup to the same target."""
    src = source["inst"]
    value = source["points"][5]["time_after"]
    inst = make_instance(name="timing-clone")
    started = time.monotonic()
    run = inst.script("restore.sh", "clone", "--id", "timed", "--target", "time", "--target-value", value,
                      "--source-prefix", src.storage.base)
    ours = time.monotonic() - started
    assert json.loads(run.stdout)["outcome"] == "succeeded"
    backup_name = json.loads(run.stdout)["details"]["backupName"]
    steps = re.findall(r"step (\S+) done in ([0-9.]+)s", run.stderr)
    assert [k for k, _ in steps] == ["validate", "check-space", "prepare", "fetch", "configure", "recover",
                                     "verify", "finalize"]

    raw = make_instance(name="timing-raw")
    walg = harness.walg_bin()
    walg_env = src.storage.walg_env(src.major)
    started = time.monotonic()
    raw.run([walg, "backup-fetch", str(raw.pgdata), backup_name], **walg_env)
    fetched = time.monotonic() - started
    (raw.pgdata / "recovery.signal").touch()
    with open(raw.pgdata / "postgresql.auto.conf", "a") as conf:
        conf.write(f"restore_command = '{walg} wal-fetch %f %p'\n"
                   f"recovery_target_time = '{value.replace('T', ' ').replace('Z', '+00')}'\n"
                   "recovery_target_action = 'promote'\n")
    harness.chown_to_run_user(raw.pgdata)
    pg_ctl = str(harness.pg_bindir(raw.major) / "pg_ctl")
    raw.run([pg_ctl, "-D", str(raw.pgdata), "-l", str(raw.root / "raw.log"), "-w", "-t", "300",
             "-o", f"-c listen_addresses= -c unix_socket_directories={raw.run_dir} -c archive_mode=off", "start"],
            **walg_env)
    while raw.query("select pg_is_in_recovery()", check=False) != "f":
        time.sleep(0.05)
    replayed = time.monotonic() - started
    raw.run([pg_ctl, "-D", str(raw.pgdata), "stop", "-m", "fast", "-w"])
    handmade = time.monotonic() - started
    inst.start()
    raw.run([pg_ctl, "-D", str(raw.pgdata), "-l", str(raw.root / "raw.log"), "-w",
             "-o", f"-c listen_addresses= -c unix_socket_directories={raw.run_dir}", "start"])
    assert ids(inst) == ids(raw) == [1, 2, 3, 4, 5]
    print(f"\nTIMING restore to a time, backup {backup_name}, 5 rows over ~8 WAL segments "
          f"(WAL-G: {'stand-in' if harness.using_standin() else 'real'}, {src.storage.kind} storage):\n"
          f"  restore.sh clone (validate, space check, fetch, configure, recover, verify, stop): {ours:.2f}s\n"
          f"  raw by hand: backup-fetch {fetched:.2f}s + replay to promotion {replayed - fetched:.2f}s "
          f"= {replayed:.2f}s, + stop {handmade - replayed:.2f}s = {handmade:.2f}s\n"
          f"  orchestration overhead: {ours - handmade:+.2f}s\n"
          f"  restore.sh steps: {', '.join(f'{k} {v}s' for k, v in steps)}")
