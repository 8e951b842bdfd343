"""backup.sh against a real server: the result file, backup-list parsing,
retention, the lock, idempotent ids, failures, and credentials kept out of
every log. Each test runs on the file and on the S3 backend."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest

import harness
from backup_restore import (NO_STORAGE, archived, backup, backup_names, check_fixture, commit_row,
                            files_containing, needs_standin, start_primary, switch_wal, wait_archived,
                            wait_push_failed, walg)

pytestmark = pytest.mark.usefixtures("backend")


def test_backup_records_name_lsns_times_and_the_parsed_backup_list(make_instance):
    inst = start_primary(make_instance)
    commit_row(inst, 1)
    run = backup(inst, "--id", "b-first")
    result = inst.result("backup", "b-first")
    printed = json.loads(run.stdout)
    assert printed == result, "backup.sh prints its result on stdout"
    assert result["outcome"] == "succeeded" and result["kind"] == "backup" and result["finishedAt"]
    d = result["details"]
    assert d["backupName"] == backup_names(inst)[0]
    assert d["startLsn"].count("/") == 1 and d["finishLsn"].count("/") == 1
    assert int(d["finishLsn"].split("/")[1], 16) >= int(d["startLsn"].split("/")[1], 16)
    assert d["startTime"] <= d["finishTime"]
    assert d["firstRecoverabilityPoint"] == d["finishTime"]
    assert [b["name"] for b in d["backups"]] == [d["backupName"]]
    assert d["backups"][0]["pgstewardId"] == "b-first", "each listed backup keeps the id it was tagged with"
    assert d["backups"][0]["startLsn"] == d["startLsn"] and d["permanent"] is False
    # The backup's own WAL was archived before backup-push returned.
    assert d["backups"][0]["walFileName"] in archived(inst.storage, inst.major)
    assert inst.result("backup") == result, "backup.json is a copy of the latest result"
    check_fixture("backup-succeeded", result)


def test_retention_keeps_exactly_n_full_backups_and_drops_older_wal(make_instance):
    inst = start_primary(make_instance, env={"PGSTEWARD_BACKUP_RETAIN_FULL": "2"})
    first_segment = switch_wal(inst)
    wait_archived(inst)
    taken = []
    for i in range(4):
        commit_row(inst, i)
        switch_wal(inst)
        backup(inst, "--id", f"b{i}")
        taken.append(inst.result("backup", f"b{i}")["details"]["backupName"])
    result = inst.result("backup", "b3")
    assert backup_names(inst) == taken[-2:], "exactly the two newest full backups are kept"
    # Without --confirm, wal-g's retention is a dry run.
    walg(inst, "delete", "retain", "FULL", "1")
    assert backup_names(inst) == taken[-2:]
    assert [b["name"] for b in result["details"]["backups"]] == taken[-2:]
    assert result["details"]["firstRecoverabilityPoint"] == result["details"]["backups"][0]["finishTime"]
    oldest_kept = result["details"]["backups"][0]["walFileName"]
    wal = archived(inst.storage, inst.major)
    assert first_segment not in wal
    assert all(w >= oldest_kept for w in wal if len(w) == 24), f"WAL older than {oldest_kept} left: {wal}"
    assert oldest_kept in wal


def test_permanent_backup_survives_retention(make_instance):
    inst = start_primary(make_instance, env={"PGSTEWARD_BACKUP_RETAIN_FULL": "1"})
    backup(inst, "--id", "keep-me", "--permanent")
    permanent = inst.result("backup", "keep-me")["details"]
    assert permanent["permanent"] is True
    for i in range(2):
        commit_row(inst, i)
        switch_wal(inst)
        backup(inst, "--id", f"b{i}")
    names = backup_names(inst)
    assert names == [permanent["backupName"], inst.result("backup", "b1")["details"]["backupName"]]
    assert [b["permanent"] for b in inst.result("backup", "b1")["details"]["backups"]] == [True, False]


def test_a_backup_id_with_a_result_is_not_run_again(make_instance):
    inst = start_primary(make_instance)
    backup(inst, "--id", "once")
    first = inst.result("backup", "once")
    again = backup(inst, "--id", "once")
    assert "already has a result" in again.stderr
    assert json.loads(again.stdout) == first
    assert len(backup_names(inst)) == 1


def test_second_backup_while_one_holds_the_lock_exits_5_and_records_nothing(make_instance):
    inst = start_primary(make_instance)
    lock = inst.state_dir / "backup.lock"
    inst.run(["touch", str(lock)])
    holder = subprocess.Popen(harness.as_run_user(["flock", str(lock), "sleep", "60"]), start_new_session=True)
    try:
        deadline = 50
        while subprocess.run(["flock", "-n", str(lock), "true"]).returncode == 0 and deadline:
            deadline -= 1
            subprocess.run(["sleep", "0.1"])
        second = backup(inst, "--id", "blocked", check=False)
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
    assert second.returncode == 5, second.stderr
    assert "another backup is running" in second.stderr
    assert not (inst.state_dir / "results" / "backup" / "blocked.json").exists()
    assert backup_names(inst) == []
    backup(inst, "--id", "blocked")
    assert inst.result("backup", "blocked")["outcome"] == "succeeded"


def test_backup_push_failure_is_recorded_with_the_step(make_instance, backend):
    """Stand-in only: its WALG_STANDIN_FAIL makes backup-push fail on file
    storage, which real WAL-G cannot be made to do (the S3 twin is
    test_backup_push_to_a_stopped_s3_server_fails_with_wal_gs_words)."""
    needs_standin("WALG_STANDIN_FAIL=backup-push")
    inst = start_primary(make_instance)
    run = backup(inst, "--id", "b-down", check=False, WALG_STANDIN_FAIL="backup-push")
    assert run.returncode == 1, run.stderr
    result = inst.result("backup", "b-down")
    assert result["outcome"] == "failed" and result["step"] == "backup-push"
    assert "backup-push failed" in result["message"]
    # WAL-G's own message is in the result: under the operator's exec its
    # stderr reaches no log.
    assert "simulated storage failure during backup-push" in result["message"], result["message"]
    assert not list(inst.run_dir.glob("backup-push.*")), "the captured stderr is removed"
    check_fixture("backup-failed-push", result)


def test_backup_without_storage_exits_3(make_instance):
    inst = start_primary(make_instance, env=NO_STORAGE)
    run = backup(inst, "--id", "b-nostorage", check=False)
    assert run.returncode == 3, run.stderr
    result = inst.result("backup", "b-nostorage")
    assert result["outcome"] == "failed" and "no backup storage configured" in result["message"]
    check_fixture("backup-failed-no-storage", result)


def test_credentials_from_env_and_files_never_reach_logs_or_state(make_instance, backend):
    """The key id from the environment, the secret from AWS_SECRET_ACCESS_KEY_FILE.
    On S3 they are the real server's credentials, so a backup and a restore
    prove they reached wal-g; on file storage real WAL-G ignores them and the
    stand-in's WALG_STANDIN_REQUIRE_CREDENTIALS proves it."""
    inst = make_instance()
    if backend == "s3":
        key_id, secret = inst.storage.server.access_key, inst.storage.server.secret_key
    else:
        key_id, secret = "AKIAPGSTEWARDTESTKEY9", "pgsteward-secret-from-file-7f3a9c"
    secret_file = inst.root / "aws-secret"
    secret_file.write_text(secret)
    os.chown(secret_file, *harness.run_user_ids())
    secret_file.chmod(0o600)
    inst.extra_env.update({"AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": "__unset__",
                           "AWS_SECRET_ACCESS_KEY_FILE": str(secret_file), "WALG_STANDIN_REQUIRE_CREDENTIALS": "1"})
    inst.start()
    inst.psql("create table items (id int primary key, note text, committed_at timestamptz)")
    commit_row(inst, 1)
    outputs = []
    outputs.append(backup(inst, "--id", "b-creds"))
    assert inst.result("backup", "b-creds")["outcome"] == "succeeded"
    wait_archived(inst)
    outputs.append(inst.script("pgsteward-status"))
    outputs.append(inst.script("restore.sh", "in-place", "--id", "r-creds", "--target", "latest"))
    assert inst.result("restore", "r-creds")["outcome"] == "succeeded"
    inst.stop()
    inst.start()
    assert inst.query("select count(*) from items") == "1"
    needles = [key_id, secret]
    for out in outputs:
        for stream in (out.stdout, out.stderr):
            assert not [n for n in needles if n in stream], f"credential in script output: {stream}"
    assert not [n for n in needles if n in inst.log()], "credential in the server/entrypoint log"
    assert files_containing(inst.state_dir, needles) == []
    assert files_containing(inst.root / "run", needles) == []
    assert files_containing(inst.volume, needles) == [], "credential somewhere on the volume (PGDATA, state)"
    if backend == "s3" or harness.using_standin():
        # Without the secret the storage refuses: the credentials did reach wal-g.
        denied = backup(inst, "--id", "b-nocreds", check=False, AWS_SECRET_ACCESS_KEY_FILE="__unset__",
                        **({"AWS_SECRET_ACCESS_KEY": "wrong-secret"} if backend == "s3" else {}))
        assert denied.returncode == 1, denied.stderr
        message = inst.result("backup", "b-nocreds")["message"]
        assert "backup-push failed" in message, message
        if backend == "s3":
            assert "failed to upload" in message or "SignatureDoesNotMatch" in message, message
        else:
            assert "credentials missing" in message, message


def test_wrong_s3_credentials_fail_backup_and_restore_and_keep_the_wal(make_instance, backend):
    """Real S3 answers 403: the backup records WAL-G's words, the archiver
    keeps the segment, a restore is refused before anything stops."""
    if backend != "s3":
        pytest.skip("wrong credentials are an S3 fault: file storage has none")
    inst = start_primary(make_instance)
    backup(inst, "--id", "good")
    wrong = {"AWS_SECRET_ACCESS_KEY": "not-the-secret", "WALG_S3_MAX_RETRIES": "1"}
    run = backup(inst, "--id", "b-wrong", check=False, **wrong)
    assert run.returncode == 1, run.stderr
    result = inst.result("backup", "b-wrong")
    # versitygw answers the first upload's PUT with 403 before it has read
    # the body, so WAL-G mostly sees "connection reset by peer", not the 403.
    assert result["step"] == "backup-push" and "failed to upload" in result["message"], result
    assert "not-the-secret" not in json.dumps(result)
    refused = inst.script("restore.sh", "in-place", "--id", "r-wrong", "--target", "latest", check=False, **wrong)
    assert refused.returncode == 1, refused.stderr
    assert "backup-list failed" in json.loads(refused.stdout)["message"]
    assert inst.proc.poll() is None, "the server still runs"
    # The archiver under wrong credentials: the segment stays until they are right again.
    inst.stop()
    inst.start(**wrong)
    inst.psql("create table during_wrong_credentials (i int)")
    segment = switch_wal(inst)
    wait_push_failed(inst, segment, timeout=120)
    assert segment not in archived(inst.storage, inst.major)
    inst.stop()
    inst.start()
    wait_archived(inst, timeout=120)
    assert segment in archived(inst.storage, inst.major)


def test_backup_push_to_a_stopped_s3_server_fails_with_wal_gs_words(make_instance, backend, new_storage,
                                                                     s3_servers):
    """Storage outage during a backup: the S3 server is stopped."""
    if backend != "s3":
        pytest.skip("a stopped S3 server is an S3 fault; the file backend's outage is the stand-in's "
                    "test_backup_push_failure_is_recorded_with_the_step")
    server = s3_servers()
    inst = start_primary(make_instance, storage=new_storage(server=server))
    backup(inst, "--id", "before")
    server.stop()
    try:
        run = backup(inst, "--id", "b-outage", check=False, WALG_S3_MAX_RETRIES="0", timeout=600)
    finally:
        server.start()
    assert run.returncode == 1, run.stderr
    result = inst.result("backup", "b-outage")
    assert result["outcome"] == "failed" and result["step"] == "backup-push", result
    assert "connection refused" in result["message"], result["message"]
