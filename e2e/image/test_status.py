"""pgsteward-status: the one JSON object the operator reads through exec."""

from __future__ import annotations

import json

from backup_restore import (backup, check_fixture, commit_row, restore_env, start_expect_failure, start_primary,
                            wait_archived)


def status(inst) -> dict:
    run = inst.script("pgsteward-status")
    assert run.returncode == 0
    return json.loads(run.stdout)


def test_status_gathers_results_archiver_pending_restart_and_config_errors(make_instance):
    inst = start_primary(make_instance)
    commit_row(inst, 1)
    backup(inst, "--id", "b-status")
    wait_archived(inst)
    inst.psql("alter system set shared_buffers = '64MB'")
    (inst.config_dir / "conf.d" / "zz-broken.conf").write_text("work_mem = 'lots'\n")
    inst.query("select pg_reload_conf()")
    s = status(inst)
    assert s["pgMajor"] == 18 and s["server"]["running"] is True and s["server"]["inRecovery"] is False
    assert s["server"]["timeline"] == 1
    assert s["storage"] == {"configured": True, "kind": "file", "major": 18}
    assert s["results"]["backup"] == inst.result("backup", "b-status")
    assert s["results"]["restore"] is None and s["inProgress"] is None
    assert s["archiver"]["archivedCount"] >= 2 and s["archiver"]["failedCount"] == 0
    assert s["archiver"]["lastArchivedWal"] and s["archiver"]["lastArchivedTime"].endswith("Z")
    assert [(p["name"], p["pendingSetting"]) for p in s["pendingRestart"]] == [("shared_buffers", "64MB")]
    assert [(e["name"], e["file"].endswith("zz-broken.conf")) for e in s["configErrors"]] == [("work_mem", True)]
    check_fixture("status", s)


def test_status_with_the_server_down_and_a_restore_in_progress(make_instance):
    inst = start_primary(make_instance)
    backup(inst, "--id", "b")
    inst.stop()
    rc, out = start_expect_failure(inst, PGSTEWARD_FAULT_AT="fetch",
                                   **restore_env("in-place", "r-status", "immediate"))
    assert rc != 0 and "killing myself at step 'fetch'" in out
    s = status(inst)
    assert s["server"] == {"running": False}
    assert s["archiver"] is None and s["pendingRestart"] is None and s["configErrors"] is None
    assert s["inProgress"]["kind"] == "restore" and s["inProgress"]["id"] == "r-status"
    assert s["inProgress"]["step"] == "fetch" and s["inProgress"]["mode"] == "in-place"
    assert s["results"]["restore"]["outcome"] == "running" and s["results"]["restore"]["step"] == "fetch"
    check_fixture("status-server-down-restore-running", s)
    check_fixture("restore-running-fetch", s["results"]["restore"])
    inst.start(**restore_env("in-place", "r-status", "immediate"))
    assert status(inst)["results"]["restore"]["outcome"] == "succeeded"
