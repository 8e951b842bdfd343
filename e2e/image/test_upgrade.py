"""Major upgrades, 17 to 18, with the image's upgrade.sh and real binaries.

Each test starts from a PostgreSQL 17 volume that the image's entrypoint made
(data directory and binary stash) and that holds tables with indexes, a
TOASTed and a partitioned table, a sequence, a view, a large object,
pg_stat_statements and a second database, with data checksums off. Moving the
instance to the 18 binaries and starting it again is what moving a pod to the
newer image does: the entrypoint runs `upgrade.sh auto`, then the server, then
`upgrade.sh post` in the background.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest

import harness
from upgrade_support import (
    MANAGED, NEW, NO_STORAGE, OLD, build_old_template, check_fixture, clone_volume, df_used, du_bytes,
    expected_large_object_md5, fingerprint, group_processes, kill_group, new_pgdata, old_pgdata, own_filesystem,
    remove_tree, server_major, start_expecting_exit, tree_digest, wait_post_finished, wait_upgrade_succeeded)

PRE_NO_RETURN_FAULTS = [
    "preflight", "inspect", "inspect:done", "initdb", "initdb:done", "check", "check:done",
    "link", "link:done", "config", "config:done", "swap", "swap:done",
]
START_FAULTS = ["start_new", "start_new:done"]
POST_FAULTS = [
    "analyze", "analyze:done", "update_extensions", "update_extensions:done",
    "backup", "backup:done", "cleanup", "cleanup:done",
]


@pytest.fixture(scope="module")
def old_template():
    for major in (OLD, NEW):
        if major not in harness.majors_available():
            pytest.fail(f"PostgreSQL {major} is not installed in {harness.CACHE}/pg; run `make test-deps`")
    template, fp = build_old_template()
    yield template, fp
    template.stop()
    remove_tree(template.root)


@pytest.fixture
def old_instance(make_instance, old_template):
    """Factory: a new instance holding a copy of the populated 17 volume."""
    template, _ = old_template

    def factory(managed: bool = True, storage: bool = False, env: dict | None = None) -> harness.Instance:
        extra = {**(MANAGED if managed else {}), **({} if storage else NO_STORAGE), **(env or {})}
        inst = make_instance(major=OLD, env=extra)
        clone_volume(template, inst)
        return inst

    return factory


@pytest.fixture
def old_fp(old_template) -> dict:
    return old_template[1]


def assert_upgraded_and_complete(inst: harness.Instance, old_fp: dict) -> None:
    assert server_major(inst) == NEW
    assert fingerprint(inst) == old_fp
    assert not old_pgdata(inst).exists(), "the old data directory should be gone after the post-upgrade clean-up"
    assert not (inst.volume / str(NEW) / "docker.pgsteward-upgrade").exists()


def assert_fault_fired(inst: harness.Instance, step: str) -> None:
    assert f"fault injection: killing myself at step '{step}'" in inst.log(), inst.log()[-3000:]


def startable(pgdata) -> bool:
    return (pgdata / "PG_VERSION").exists() and (pgdata / "global" / "pg_control").exists()


# --- the upgrade ---------------------------------------------------------------

def test_upgrade_17_to_18_keeps_every_row_sequence_view_large_object_and_extension(old_instance, old_fp):
    inst = old_instance(storage=True)
    assert old_fp["data_checksums"] == "off"
    inst.use_major(NEW)
    inst.start()
    assert inst.query("show server_version").startswith("18.")
    result = wait_upgrade_succeeded(inst)

    assert_upgraded_and_complete(inst, old_fp)
    assert fingerprint(inst)["large_object"] == expected_large_object_md5()
    assert inst.query("show data_checksums") == "off"
    # The sequence and the identity column go on where they were.
    assert inst.query("select nextval('invoice_seq')") == "1042"
    assert inst.query("insert into events (account_id, kind) values (1, 'after') returning id") == "20001"
    assert inst.query("select count(*) from account_totals") == "5000"
    # update_extensions.sql brought pg_stat_statements to 18's version; it works.
    assert inst.query("select extversion = default_version from pg_extension e "
                      "join pg_available_extensions a on a.name = e.extname "
                      "where extname = 'pg_stat_statements'") == "t"
    assert int(inst.query("select count(*) from pg_stat_statements")) > 0
    # 18 kept the optimizer statistics and post refreshed them.
    assert inst.query("select count(*) > 0 from pg_stats where tablename = 'events'") == "t"

    details = result["details"]
    assert (details["fromMajor"], details["toMajor"], details["failedStep"], details["cleanedUp"]) == (
        OLD, NEW, None, True)
    assert result["pgMajor"] == NEW and result["id"] == "upgrade-17-to-18" and result["finishedAt"]
    # A new full backup in the new major's prefix; the old stash stays.
    assert inst.result("backup", "post-upgrade-18")["outcome"] == "succeeded"
    assert inst.storage.keys(18, "basebackups_005"), "a backup in the 18 prefix"
    assert (inst.state_dir / "stash" / str(OLD) / "bin" / "postgres").exists()
    check_fixture("succeeded", result)


def test_pg_upgrade_link_hard_links_data_files_and_needs_little_extra_disk(make_instance, old_template, old_fp):
    template, _ = old_template
    inst = make_instance(major=OLD, env={**MANAGED, **NO_STORAGE})
    with own_filesystem(inst, 1400) as private_fs:
        clone_volume(template, inst)
        inst.start()
        # ~200 MB in one table, well above the size of the new catalog.
        inst.psql("create table big (id int primary key, body text); "
                  "insert into big select g, repeat(md5(g::text), 4) from generate_series(1, 1200000) g")
        big = int(inst.query("select pg_total_relation_size('big')"))
        data = int(inst.query("select sum(pg_database_size(datname)) from pg_database"))
        inst.stop()
        old_before = du_bytes(old_pgdata(inst))  # with the WAL of the load
        df_before = df_used(inst.volume)

        # Freeze the moment before the post-upgrade clean-up: the old directory
        # is still there and shares its data files with the new one.
        inst.use_major(NEW)
        inst.start(PGSTEWARD_FAULT_AT="cleanup")
        result = wait_post_finished(inst)
        assert_fault_fired(inst, "cleanup")
        assert (result["outcome"], result["step"]) == ("running", "cleanup")
        check_fixture("running-cleanup", result)

        relpath = inst.query("select pg_relation_filepath('big')")
        new_file, old_file = new_pgdata(inst) / relpath, old_pgdata(inst) / relpath
        assert new_file.stat().st_ino == old_file.stat().st_ino, "pg_upgrade --link should share the inode"
        assert new_file.stat().st_nlink == 2
        linked = sum(p.stat().st_size for p in (new_pgdata(inst) / "base").rglob("*")
                     if p.is_file() and p.stat().st_nlink >= 2)
        assert linked >= big, f"only {linked} bytes of data files are hard links; the table alone has {big}"

        # du counts a hard-linked file once: old + new + work files, minus the
        # old directory before, is what the upgrade added (new catalog, WAL, logs).
        extra_du = du_bytes(old_pgdata(inst), new_pgdata(inst), inst.state_dir / "upgrade") - old_before
        # df on this private filesystem: everything written since, minus the
        # 18 binary stash, which the entrypoint writes at every start anyway.
        extra_df = df_used(inst.volume) - df_before - du_bytes(inst.state_dir / "stash" / str(NEW))
        mib = 2**20
        print(f"\ndatabases {data / mib:.0f} MiB (table big {big / mib:.0f} MiB); added by the upgrade: "
              f"{extra_du / mib:.0f} MiB (du), " + (f"{extra_df / mib:.0f} MiB (df)" if private_fs else
                                                    "df not measured: no private filesystem (mount not allowed)"))
        assert extra_du < data / 3, f"the upgrade added {extra_du} bytes (du) for {data} bytes of data"
        if private_fs:
            assert extra_df < data / 3, f"the upgrade added {extra_df} bytes (df) for {data} bytes of data"

        # The next start finishes the clean-up.
        inst.stop()
        inst.start()
        wait_upgrade_succeeded(inst)
        assert not old_pgdata(inst).exists()
        assert inst.query("select count(*) from big") == "1200000"
        inst.psql("drop table big")
        assert fingerprint(inst) == old_fp


def test_upgrade_runs_twice_harmlessly_the_second_time_doing_nothing(old_instance, old_fp):
    inst = old_instance()
    inst.use_major(NEW)
    inst.start()
    first = wait_upgrade_succeeded(inst)
    result_file = inst.state_dir / "upgrade.json"
    before = result_file.read_text()

    auto = inst.script("upgrade.sh", "auto")
    post = inst.script("upgrade.sh", "post")
    assert auto.returncode == 0 and auto.stderr == "", auto.stderr
    assert post.returncode == 0 and "no upgrade pending: nothing to do" in post.stderr
    inst.stop()
    inst.start()
    time.sleep(2)
    assert wait_post_finished(inst) == first
    assert result_file.read_text() == before
    assert_upgraded_and_complete(inst, old_fp)
    log = inst.log()
    assert log.count("upgrade upgrade-17-to-18: PostgreSQL 17") == 1, "the upgrade ran more than once"
    assert log.count("no upgrade pending: nothing to do") == 1  # the post hook of the second start


# --- failures before the point of no return roll back ----------------------------

def stash_lacks_a_library_the_old_server_loads(inst: harness.Instance) -> str:
    inst.start()
    inst.psql("alter system set shared_preload_libraries = 'pg_stat_statements'")
    inst.stop()
    lib = (inst.state_dir / "stash" / str(OLD) / "lib").resolve() / "pg_stat_statements.so"
    lib.unlink()
    return "pg_stat_statements"


def new_image_lacks_a_library_the_old_cluster_uses(inst: harness.Instance) -> str:
    """A C function of the old cluster whose library (a 17 contrib module under
    another name) the new installation does not have."""
    pkglibdir = inst.run([str(harness.pg_bindir(OLD) / "pg_config"), "--pkglibdir"]).stdout.strip()
    lib = inst.root / "extension-only-in-17" / "pgsteward_only_in_17.so"
    lib.parent.mkdir()
    shutil.copy(f"{pkglibdir}/pg_stat_statements.so", lib)
    harness.chown_to_run_user(lib.parent)
    inst.start()
    inst.psql(f"create function from_an_extension_only_in_17() returns void "
              f"as '{lib}', 'pg_stat_statements_reset' language c")
    inst.stop()
    shutil.rmtree(lib.parent)
    return "pgsteward_only_in_17"


@pytest.mark.parametrize("break_it", [stash_lacks_a_library_the_old_server_loads,
                                      new_image_lacks_a_library_the_old_cluster_uses])
def test_failed_check_rolls_back_and_old_cluster_starts_with_every_row(old_instance, old_fp, break_it):
    inst = old_instance()
    culprit = break_it(inst)

    inst.use_major(NEW)
    assert start_expecting_exit(inst) == 1
    result = inst.result("upgrade")
    assert (result["outcome"], result["step"], result["details"]["failedStep"]) == ("rolled_back", "check", "check")
    assert culprit in result["details"]["pgUpgradeLog"], result["details"]["pgUpgradeLog"]
    assert result["details"]["cleanedUp"] is False
    if break_it is stash_lacks_a_library_the_old_server_loads:
        assert culprit in result["message"]
        check_fixture("rolled_back-check", result)
    else:
        assert "loadable libraries" in result["message"]
    assert not (new_pgdata(inst) / "PG_VERSION").exists()
    assert not (inst.volume / str(NEW) / "docker.pgsteward-upgrade").exists()
    assert (old_pgdata(inst) / "global" / "pg_control").exists()

    # The old image starts the old cluster with every row.
    inst.use_major(OLD)
    inst.start()
    assert server_major(inst) == OLD
    assert fingerprint(inst) == old_fp
    inst.stop()

    # The same request is not run again.
    inst.use_major(NEW)
    assert start_expecting_exit(inst) == 1
    assert "not run again under the same id" in inst.log()
    assert not (new_pgdata(inst) / "PG_VERSION").exists()


def termination_log(inst: harness.Instance):
    """The pod's terminationMessagePath, as the kubelet provides it: an empty
    file the container's user can write."""
    path = inst.root / "termination-log"
    path.write_text("")
    harness.chown_to_run_user(inst.root)
    return path


def test_a_rolled_back_upgrade_is_in_the_termination_message_when_the_container_exits(old_instance):
    inst = old_instance()
    stash_lacks_a_library_the_old_server_loads(inst)
    message_file = termination_log(inst)

    inst.use_major(NEW)
    assert start_expecting_exit(inst, PGSTEWARD_TERMINATION_LOG=str(message_file)) == 1
    raw = message_file.read_bytes()
    assert 0 < len(raw) <= 4000, len(raw)
    published = json.loads(raw)
    assert published["restore"] is None
    message = published["upgrade"]
    result = inst.result("upgrade")
    assert (message["kind"], message["id"], message["outcome"], message["step"]) == (
        "upgrade", result["id"], "rolled_back", "check")
    # The excerpt is the end of pg_upgrade's log, which names the cause.
    assert result["details"]["pgUpgradeLog"].endswith(message["details"]["pgUpgradeLog"])
    assert "pg_stat_statements" in message["details"]["pgUpgradeLog"]
    check_fixture("termination-rolled_back", message)


def test_after_the_point_of_no_return_the_termination_message_says_so_and_the_old_image_refuses(old_instance, old_fp):
    """A new image that dies after starting the new cluster leaves the data
    upgraded. The operator, unable to exec into a container that has exited,
    learns that from the termination message and must not put the previous
    image back; if it did, the previous image refuses and says so there too."""
    inst = old_instance()
    message_file = termination_log(inst)
    env = {"PGSTEWARD_TERMINATION_LOG": str(message_file)}

    inst.use_major(NEW)
    assert start_expecting_exit(inst, PGSTEWARD_FAULT_AT="start_new:done", **env) != 0
    assert_fault_fired(inst, "start_new:done")
    message = json.loads(message_file.read_text())["upgrade"]
    assert (message["kind"], message["outcome"], message["step"]) == ("upgrade", "running", "start_new")
    check_fixture("termination-start_new", message)

    message_file.write_text("")
    inst.use_major(OLD)
    assert start_expecting_exit(inst, **env) == 2
    assert "has passed its point of no return" in inst.log()
    refused = json.loads(message_file.read_text())["upgrade"]
    assert (refused["id"], refused["outcome"], refused["step"]) == (message["id"], "running", "start_new")

    inst.use_major(NEW)
    inst.start(**env)
    wait_upgrade_succeeded(inst)
    assert_upgraded_and_complete(inst, old_fp)
    final = json.loads(message_file.read_text())["upgrade"]
    assert (final["id"], final["outcome"], final["step"]) == (message["id"], "succeeded", "done")


def test_old_cluster_that_crashed_is_recovered_then_upgraded(old_instance, old_fp):
    inst = old_instance()
    inst.start()
    inst.psql("insert into accounts values (5001, 'written just before the crash', 1, current_date)")
    inst.kill()  # SIGKILL: no shutdown checkpoint, as a node loss
    out = inst.run([str(harness.pg_bindir(OLD) / "pg_controldata"), str(old_pgdata(inst))])
    assert "in production" in out.stdout

    inst.use_major(NEW)
    inst.start()
    wait_upgrade_succeeded(inst)
    assert inst.query("select name from accounts where id = 5001") == "written just before the crash"
    inst.psql("delete from accounts where id = 5001")
    assert_upgraded_and_complete(inst, old_fp)


# --- crash safety ----------------------------------------------------------------

@pytest.mark.parametrize("step", PRE_NO_RETURN_FAULTS + START_FAULTS)
def test_kill_before_the_new_server_runs_then_restart_completes_upgrade(old_instance, old_fp, step):
    inst = old_instance()
    inst.use_major(NEW)
    assert start_expecting_exit(inst, PGSTEWARD_FAULT_AT=step) != 0
    assert_fault_fired(inst, step)
    assert not (startable(old_pgdata(inst)) and startable(new_pgdata(inst))), "two startable clusters"

    inst.start()
    wait_upgrade_succeeded(inst)
    assert_upgraded_and_complete(inst, old_fp)


@pytest.mark.parametrize("step", POST_FAULTS)
def test_kill_during_post_upgrade_work_then_restart_finishes_it(old_instance, old_fp, step):
    inst = old_instance()
    inst.use_major(NEW)
    inst.start(PGSTEWARD_FAULT_AT=step)
    result = wait_post_finished(inst)
    assert_fault_fired(inst, step)
    assert (result["outcome"], result["step"]) == ("running", step.split(":")[0])
    assert server_major(inst) == NEW
    assert fingerprint(inst) == old_fp

    inst.stop()
    inst.start()
    wait_upgrade_succeeded(inst)
    assert_upgraded_and_complete(inst, old_fp)


def test_kill_of_every_process_during_pg_upgrade_link_then_restart_completes_upgrade(old_instance, old_fp):
    inst = old_instance()
    inst.use_major(NEW)
    inst.start(wait=False)
    marker = old_pgdata(inst) / "global" / "pg_control.old"
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert time.monotonic() < deadline and inst.proc.poll() is None, inst.log()[-3000:]
        time.sleep(0.01)
    linking = group_processes(inst, "pg_upgrade")
    kill_group(inst)  # upgrade.sh and pg_upgrade, as a node loss would
    assert linking, "pg_upgrade should have been running when pg_control.old appeared"

    inst.start()
    wait_upgrade_succeeded(inst)
    assert_upgraded_and_complete(inst, old_fp)
    assert "rolling it back, then starting again" in inst.log() or "pg_upgrade --link had finished" in inst.log()


@pytest.mark.parametrize("step", ["check", "link:done", "swap:done"])
def test_reverting_the_image_after_an_interrupted_upgrade_returns_to_the_old_cluster(old_instance, old_fp, step):
    inst = old_instance()
    inst.use_major(NEW)
    assert start_expecting_exit(inst, PGSTEWARD_FAULT_AT=step) != 0
    assert_fault_fired(inst, step)

    inst.use_major(OLD)
    inst.start()
    assert server_major(inst) == OLD
    assert fingerprint(inst) == old_fp
    result = inst.result("upgrade")
    assert result["outcome"] == "rolled_back"
    assert not (new_pgdata(inst) / "PG_VERSION").exists()
    assert not (inst.volume / str(NEW) / "docker.pgsteward-upgrade").exists()
    assert not (old_pgdata(inst) / "global" / "pg_control.old").exists()


# --- after the point of no return: forward only ------------------------------------

def test_failed_post_upgrade_backup_keeps_old_data_until_a_backup_succeeds(old_instance, old_fp):
    inst = old_instance(storage=True)
    stub = inst.root / "failing-backup"
    stub.mkdir()
    (stub / "backup.sh").write_text(
        "#!/bin/sh\n# STAND-IN: a backup.sh that fails, as unreachable storage would\n"
        "echo 'stand-in backup.sh: failing on purpose' >&2\nexit 1\n")
    (stub / "backup.sh").chmod(0o755)
    harness.chown_to_run_user(stub)

    inst.use_major(NEW)
    inst.start(PATH=f"{stub}:{inst.env()['PATH']}")
    result = wait_post_finished(inst)
    assert (result["outcome"], result["details"]["failedStep"], result["details"]["cleanedUp"]) == (
        "failed", "backup", False)
    assert "post-upgrade full backup" in result["message"]
    check_fixture("failed-backup", result)
    assert old_pgdata(inst).exists(), "the old data directory must stay until a backup succeeds"
    assert server_major(inst) == NEW and fingerprint(inst) == old_fp

    # With a working backup.sh the next start takes the backup, then cleans up.
    inst.stop()
    inst.start()
    wait_upgrade_succeeded(inst)
    assert inst.result("backup", "post-upgrade-18")["outcome"] == "succeeded"
    assert_upgraded_and_complete(inst, old_fp)


# --- bad input: refused before anything changes -------------------------------------

def test_downgrade_is_refused_and_data_left_unchanged(make_instance):
    inst = make_instance(major=NEW, env={**MANAGED, **NO_STORAGE})
    inst.start()
    inst.psql("create table kept (id int); insert into kept values (1)")
    inst.stop()
    before = tree_digest(new_pgdata(inst))

    inst.use_major(OLD)
    assert start_expecting_exit(inst) == 2
    assert "cannot be downgraded" in inst.log()
    assert tree_digest(new_pgdata(inst)) == before
    assert not (old_pgdata(inst) / "PG_VERSION").exists()
    assert inst.result("upgrade")["outcome"] == "failed"


def test_missing_stash_is_refused_and_data_left_unchanged(old_instance):
    inst = old_instance()
    remove_tree(inst.state_dir / "stash" / str(OLD))
    before = tree_digest(old_pgdata(inst))

    inst.use_major(NEW)
    assert start_expecting_exit(inst) == 2
    result = inst.result("upgrade")
    assert (result["outcome"], result["step"]) == ("failed", "preflight")
    assert "no PostgreSQL 17 binaries in the stash" in result["message"]
    check_fixture("failed-preflight", result)
    assert tree_digest(old_pgdata(inst)) == before
    assert not (new_pgdata(inst) / "PG_VERSION").exists()


def test_unsupported_major_in_the_pre18_layout_is_refused_and_data_left_unchanged(make_instance):
    """No PostgreSQL 12 binaries exist here: the data directory is synthetic
    (PG_VERSION 12 and a few files), which is all the refusal may look at."""
    inst = make_instance(major=NEW, env={**MANAGED, **NO_STORAGE})
    legacy = inst.volume / "data"
    (legacy / "global").mkdir(parents=True)
    (legacy / "PG_VERSION").write_text("12\n")
    (legacy / "global" / "pg_control").write_bytes(os.urandom(8192))
    harness.chown_to_run_user(inst.volume)
    before = tree_digest(legacy)

    assert start_expecting_exit(inst) == 2
    assert "upgrades from PostgreSQL 13 or newer" in inst.log()
    assert tree_digest(legacy) == before
    assert not (new_pgdata(inst) / "PG_VERSION").exists()


def test_docker_run_needs_opt_in_then_upgrades_the_pre18_data_layout(old_instance, old_fp):
    inst = old_instance(managed=False)
    legacy = inst.volume / "data"
    old_pgdata(inst).rename(legacy)  # the official image's layout before 18
    (inst.volume / str(OLD)).rmdir()
    before = tree_digest(legacy)

    inst.use_major(NEW)
    assert start_expecting_exit(inst) == 2
    assert "PGSTEWARD_ALLOW_MAJOR_UPGRADE=1" in inst.result("upgrade")["message"]
    assert tree_digest(legacy) == before
    assert not (new_pgdata(inst) / "PG_VERSION").exists()

    inst.start(PGSTEWARD_ALLOW_MAJOR_UPGRADE="1")
    wait_upgrade_succeeded(inst)
    assert server_major(inst) == NEW
    assert fingerprint(inst) == old_fp
    assert not legacy.exists()


def test_too_little_free_space_is_refused_with_the_numbers_and_data_left_unchanged(make_instance, old_template):
    template, _ = old_template
    inst = make_instance(major=OLD, env={**MANAGED, **NO_STORAGE})
    # A small filesystem of its own: room for the 17 volume and the 18 stash,
    # not for the new catalog and the work files.
    size_mb = (du_bytes(template.volume) + 50 * 2**20) // 2**20
    with own_filesystem(inst, size_mb) as private_fs:
        if not private_fs:
            pytest.skip("needs a filesystem of its own: mounting a tmpfs needs root with CAP_SYS_ADMIN")
        clone_volume(template, inst)
        before = tree_digest(old_pgdata(inst))
        inst.use_major(NEW)
        assert start_expecting_exit(inst) == 4
        message = inst.result("upgrade")["message"]
        assert "not enough free space" in message and " free, about " in message and "MiB" in message
        assert tree_digest(old_pgdata(inst)) == before
        assert not (new_pgdata(inst) / "PG_VERSION").exists()
