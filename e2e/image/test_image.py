"""The image (issue "The Postgres image"): entrypoint, config, stash, scheduler
and bad input, on real PostgreSQL binaries.

Every test runs the image's real entrypoint.sh, which wraps the labelled
stand-in for the official docker-entrypoint.sh (e2e/standins), which runs real
initdb and a real postgres. Rows are written and read back over real
connections. Tests that need a size-limited or read-only volume mount a tmpfs
(root and mount(2) needed; otherwise they are skipped and say so).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

import harness
from harness import SCRIPTS, STANDINS, SUPERUSER_PASSWORD

ENTRYPOINT = SCRIPTS / "entrypoint.sh"
SCHEDULER = SCRIPTS / "backup-scheduler.sh"
FIXTURES = harness.REPO / "e2e" / "fixtures" / "state"
MIB = 1024 * 1024


# --- helpers -------------------------------------------------------------------

def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "ERROR:" in line]


def pgdata_manifest(path: Path) -> dict:
    """Every file and directory under PGDATA: mode, size, mtime and content hash."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            st = full.lstat()
            digest = ""
            if stat.S_ISREG(st.st_mode):
                digest = hashlib.sha256(full.read_bytes()).hexdigest()
            out[str(full.relative_to(path))] = (st.st_mode, st.st_size, st.st_mtime_ns, st.st_uid, digest)
    st = path.lstat()
    out["."] = (st.st_mode, st.st_mtime_ns, st.st_uid)
    return out


def tree_identity(path: Path) -> dict:
    """inode and mtime of everything under path (symlinks not followed)."""
    out = {".": (path.lstat().st_ino, path.lstat().st_mtime_ns)}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            st = full.lstat()
            out[str(full.relative_to(path))] = (st.st_ino, st.st_mtime_ns)
    return out


def run_entrypoint_once(inst: harness.Instance, *args: str, as_root: bool = False, timeout: float = 120,
                        **env) -> subprocess.CompletedProcess:
    """The entrypoint in the foreground, for runs that must end by themselves."""
    return inst.run([str(ENTRYPOINT), *args], check=False, as_root=as_root, timeout=timeout, **env)


def start_with_argv(inst: harness.Instance, argv: list[str], as_root: bool = False, **env) -> None:
    """Like Instance.start, but with the container's exact argv (`docker run IMAGE <argv>`)."""
    cmd = [str(ENTRYPOINT), *argv]
    with open(inst.log_path, "a") as log:
        inst.proc = subprocess.Popen(cmd if as_root else harness.as_run_user(cmd), env=inst.env(**env),
                                     cwd=inst.root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    inst.wait_ready()


def process_user(pid: int) -> str:
    return subprocess.run(["ps", "-o", "user=", "-p", str(pid)], capture_output=True, text=True).stdout.strip()


def session_processes(sid: int) -> dict[int, str]:
    """pid -> command line of every process in session sid."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) != sid:
                continue
            out[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except (ProcessLookupError, FileNotFoundError, PermissionError):
            continue
    return out


def wait_for(predicate, timeout: float, what: str, inst: harness.Instance | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{inst.log() if inst else ''}")


def key_structure(value):
    """The shape of a JSON value: dict keys recursively, a list by its first element."""
    if isinstance(value, dict):
        return {k: key_structure(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [key_structure(value[0])] if value else []
    return type(value).__name__ if value is not None else "null"


def check_fixture(name: str, produced: dict) -> None:
    """Write (PGSTEWARD_UPDATE_FIXTURES=1) or compare a committed state-file fixture."""
    path = FIXTURES / name
    if os.environ.get("PGSTEWARD_UPDATE_FIXTURES") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(produced, indent=2, sort_keys=True) + "\n")
        return
    assert path.exists(), f"fixture {path} missing; run with PGSTEWARD_UPDATE_FIXTURES=1 and commit it"
    committed = json.loads(path.read_text())
    assert key_structure(committed) == key_structure(produced), (
        f"{path} no longer has the structure the image produces; regenerate it with PGSTEWARD_UPDATE_FIXTURES=1")


@pytest.fixture
def mounts():
    """Size-limited or read-only volumes: a tmpfs mounted over a directory.
    Request it after make_instance, so it is unmounted before the instance's
    files are removed."""
    mounted: list[Path] = []

    class Mounts:
        @staticmethod
        def tmpfs(path: Path, size_mb: int) -> None:
            if os.geteuid() != 0:
                pytest.skip("needs root to mount a size-limited tmpfs volume (run the tier as root)")
            proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "tmpfs", str(path)],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                pytest.skip(f"cannot mount a tmpfs here (needs CAP_SYS_ADMIN): {proc.stderr.strip()}")
            mounted.append(path)
            harness.chown_to_run_user(path)

        @staticmethod
        def read_only(path: Path) -> None:
            subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)

        @staticmethod
        def fill(path: Path, leave_bytes: int) -> None:
            """Fill the filesystem of path until about leave_bytes stay free."""
            free = shutil.disk_usage(path).free
            filler = path / "filler.bin"
            subprocess.run(["fallocate", "-l", str(max(free - leave_bytes, 0)), str(filler)], check=True)

    yield Mounts()
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


# --- a server with the default configuration --------------------------------------

@pytest.mark.parametrize("major", [18, 17])
def test_default_config_accepts_connections_and_keeps_rows(make_instance, major):
    inst = make_instance(major=major)
    inst.start()
    version = inst.query("select version()")
    print(f"PostgreSQL {major}: {version}")
    assert inst.server_version_num() // 10000 == major
    inst.psql("create table t(id int primary key, note text); insert into t select g, 'row ' || g from generate_series(1, 100) g")
    inst.stop()
    inst.start()
    assert inst.query("select count(*), max(note) from t") == "100|row 99"


def test_show_config_file_is_the_mapped_config_path(make_instance):
    inst = make_instance()
    inst.start()
    assert inst.query("show config_file") == str(inst.config_dir / "postgresql.conf")
    assert inst.query("show hba_file") == str(inst.config_dir / "pg_hba.conf")
    assert inst.query("show ident_file") == str(inst.config_dir / "pg_ident.conf")
    assert inst.query("show unix_socket_directories") == str(inst.run_dir)
    # The file's own settings are the ones in force.
    assert inst.query("show listen_addresses") == "*"
    assert inst.query("show archive_mode") == "on"
    assert inst.query("show archive_command") == "wal-archive.sh %p"
    assert inst.query("show wal_level") == "replica"


def test_conf_d_override_beats_postgresql_conf(make_instance):
    inst = make_instance()
    (inst.config_dir / "conf.d" / "override.conf").write_text("work_mem = 128MB\n")
    inst.start()
    assert inst.query("show work_mem") == "128MB"
    assert inst.query("select sourcefile from pg_settings where name = 'work_mem'") == \
        str(inst.config_dir / "conf.d" / "override.conf")


def test_config_precedence_is_file_then_conf_d_then_alter_system_then_command_line(make_instance):
    inst = make_instance()
    (inst.config_dir / "conf.d" / "override.conf").write_text("work_mem = 128MB\nmaintenance_work_mem = 96MB\n")
    inst.start()
    inst.psql("alter system set work_mem = '256MB'")
    inst.stop()
    inst.start("-c", "maintenance_work_mem=80MB")
    assert inst.query("show work_mem") == "256MB"  # ALTER SYSTEM beats conf.d
    assert inst.query("show maintenance_work_mem") == "80MB"  # -c beats conf.d
    inst.stop()
    inst.start("-c", "work_mem=64MB")
    assert inst.query("show work_mem") == "64MB"  # -c beats ALTER SYSTEM
    assert inst.query("show maintenance_work_mem") == "96MB"
    assert inst.query("show log_min_duration_statement") == "1s"  # the file, untouched by anything


def test_pg_stat_statements_is_preloaded_and_counts_a_query(make_instance):
    inst = make_instance()
    inst.start()
    assert "pg_stat_statements" in inst.query("show shared_preload_libraries")
    inst.psql("create extension pg_stat_statements; create table counted(x int); select pg_stat_statements_reset()")
    for _ in range(3):
        inst.psql("select count(*) from counted where x > 41")
    calls = inst.query("select calls from pg_stat_statements where query like 'select count(*) from counted where x > $1'")
    assert calls == "3"


def test_slow_query_is_logged_and_a_fast_one_is_not(make_instance):
    inst = make_instance()
    inst.start()
    threshold = inst.query("show log_min_duration_statement")
    assert threshold == "1s"
    inst.psql("select pg_sleep(1.2) /* slow-marker */")
    inst.psql("select pg_sleep(0.05) /* fast-marker */")
    inst.psql("select 1 /* after-marker */")
    log = wait_for(lambda: "slow-marker" in inst.log() and inst.log(), 10, "the slow query in the log", inst)
    slow = [line for line in log.splitlines() if "slow-marker" in line]
    assert len(slow) == 1 and "duration:" in slow[0], slow
    # log_line_prefix names the user, database and application of the session.
    assert "postgres@postgres app=psql" in slow[0], slow[0]
    assert "fast-marker" not in log


def test_wrong_password_over_tcp_is_rejected_and_the_right_one_accepted(make_instance):
    inst = make_instance()
    inst.start()
    psql = [str(harness.pg_bindir(inst.major) / "psql"), "-X", "-A", "-t", "-h", "127.0.0.1", "-p", str(inst.port),
            "-U", "postgres", "-d", "postgres", "-c", "select current_user"]
    wrong = inst.run(psql, check=False, PGPASSWORD="not-the-password")
    assert wrong.returncode != 0
    assert 'password authentication failed for user "postgres"' in wrong.stderr
    right = inst.run(psql, check=False, PGPASSWORD=SUPERUSER_PASSWORD)
    assert right.returncode == 0, right.stderr
    assert right.stdout.strip() == "postgres"
    # Without a password at all: refused too (nothing is trust over TCP).
    none = inst.run(psql + ["-w"], check=False, PGPASSWORD="__unset__")
    assert none.returncode != 0


def test_pg_hba_has_no_trust_and_scram_for_every_tcp_line():
    lines = [line.split() for line in (harness.CONFIG / "pg_hba.conf").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    assert lines, "pg_hba.conf has no rules"
    assert all("trust" not in fields for fields in lines)
    tcp = [fields for fields in lines if fields[0].startswith("host")]
    assert tcp and all(fields[-1] == "scram-sha-256" for fields in tcp), tcp
    local = [fields for fields in lines if fields[0] == "local"]
    assert ["local", "all", "postgres", "peer", "map=pgsteward"] in local
    config = (harness.CONFIG / "postgresql.conf").read_text()
    settings = [line for line in config.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert settings[-1].strip() == "include_dir = 'conf.d'", "include_dir must be the last setting"
    assert not any(re.match(r"\s*(port|unix_socket_directories)\s*=", line) for line in settings)


# --- the binary stash -----------------------------------------------------------

def test_stash_appears_and_a_second_start_leaves_it_untouched(make_instance):
    inst = make_instance()
    started = time.monotonic()
    inst.start()
    first_start = time.monotonic() - started
    stash = inst.state_dir / "stash" / "18"
    for sub in ("bin", "lib", "share"):
        assert (stash / sub).is_dir(), f"{stash / sub} missing"
    assert (stash / "bin" / "postgres").exists() and (stash / "bin" / "pg_ctl").exists()
    assert (stash / "lib" / "pg_stat_statements.so").exists()
    assert (stash / "share" / "postgres.bki").exists()
    assert any(p.name.startswith("libpq.so") for p in (stash / "lib").iterdir())
    # The stashed binaries find their own lib and share (PostgreSQL relocates
    # itself relative to the binary's resolved path), not the image's.
    pg_config = inst.run([str(stash / "bin" / "pg_config"), "--pkglibdir", "--sharedir"]).stdout.split()
    assert all(path.startswith(str(stash) + "/root/") for path in pg_config), pg_config
    assert inst.run([str(stash / "bin" / "postgres"), "--version"]).stdout.strip().endswith(
        inst.query("show server_version").split()[0])
    size = int(subprocess.run(["du", "-s", "-B1", str(stash)], capture_output=True, text=True).stdout.split()[0])
    progress = json.loads((inst.state_dir / "entrypoint.json").read_text())
    assert progress["stash"]["path"] == str(stash) and progress["stash"]["bytes"] == size
    print(f"stash size: {size / MIB:.1f} MiB at {stash}; first start {first_start:.1f}s")
    before = tree_identity(stash)

    inst.stop()
    started = time.monotonic()
    inst.start()
    second_start = time.monotonic() - started
    assert tree_identity(stash) == before, "the second start changed the stash"
    assert "is current" in inst.log() and "left untouched" in inst.log()
    print(f"second start (stash current): {second_start:.1f}s")


def test_stash_killed_before_it_is_renamed_into_place_is_redone_on_the_next_start(make_instance):
    inst = make_instance()
    inst.start(wait=False, PGSTEWARD_FAULT_AT="stash-rename")
    assert inst.wait_exit(120) == -9
    stash_dir = inst.state_dir / "stash"
    assert not (stash_dir / "18").exists(), "a half-made stash is in place"
    leftovers = [p.name for p in stash_dir.iterdir() if p.name.startswith(".tmp-18-")]
    assert leftovers, "the fault point was not reached"
    assert not (inst.pgdata / "PG_VERSION").exists(), "PGDATA was initialised before the stash was complete"
    inst.start()
    assert (stash_dir / "18" / ".stash-version").exists()
    assert not [p for p in stash_dir.iterdir() if p.name.startswith((".tmp-", ".old-"))]
    assert "removing the leftover" in inst.log()


def test_stash_that_does_not_fit_is_skipped_with_a_warning_and_the_server_still_starts(make_instance, mounts):
    inst = make_instance()
    mounts.tmpfs(inst.volume, 256)
    inst.start()
    inst.psql("create table kept(x int); insert into kept values (5)")
    inst.stop()
    shutil.rmtree(inst.state_dir / "stash" / "18")  # as after a minor update: the stash must be redone
    mounts.fill(inst.volume, 24 * MIB)  # above the 16 MiB headroom, below headroom + stash
    inst.start()
    assert inst.query("select x from kept") == "5"
    warnings = [line for line in inst.log().splitlines() if "WARNING: stash: skipped" in line]
    assert len(warnings) == 1, inst.log()
    assert not (inst.state_dir / "stash" / "18").exists()


# --- WAL-G and cron -------------------------------------------------------------

def test_walg_version_runs(make_instance):
    inst = make_instance()
    walg = harness.walg_bin()
    label = "the labelled STAND-IN (e2e/standins/wal-g)" if walg.startswith(str(STANDINS)) else "real WAL-G"
    proc = inst.run([walg, "--version"])
    print(f"wal-g --version ({label}): {proc.stdout.strip()}")
    assert proc.stdout.strip()


SCHEDULE_CASES = [
    # expression, local time, fires
    ("*/15 * * * *", "2026-11-21 10:30", True),
    ("*/15 * * * *", "2026-11-21 10:31", False),
    ("0 1 * * *", "2026-11-21 01:00", True),
    ("0 1 * * *", "2026-11-21 01:01", False),
    ("0 1 * * *", "2026-11-21 02:00", False),
    ("30 2 1 * *", "2026-12-01 02:30", True),
    ("30 2 1 * *", "2026-12-02 02:30", False),
    ("5,10-20/5 * * * *", "2026-11-21 10:05", True),
    ("5,10-20/5 * * * *", "2026-11-21 10:15", True),
    ("5,10-20/5 * * * *", "2026-11-21 10:25", False),
    ("0 0 * jan-mar,nov *", "2026-11-21 00:00", True),
    ("0 0 * jan-mar *", "2026-11-21 00:00", False),
    ("0 9-17/2 * * mon-fri", "2026-11-20 13:00", True),   # a Friday
    ("0 9-17/2 * * mon-fri", "2026-11-21 13:00", False),  # a Saturday
    ("0 9-17/2 * * mon-fri", "2026-11-20 14:00", False),
    ("0 0 * * 0", "2026-11-22 00:00", True),  # Sunday as 0
    ("0 0 * * 7", "2026-11-22 00:00", True),  # Sunday as 7
    ("0 0 * * 5-7", "2026-11-22 00:00", True),
    # Both day fields restricted: either one fires, as in cron.
    ("0 0 13 * fri", "2026-11-13 00:00", True),
    ("0 0 13 * fri", "2026-11-20 00:00", True),
    ("0 0 13 * fri", "2026-11-19 00:00", False),
    # Day-of-month restricted, day-of-week `*`: only the day of month.
    ("0 0 13 * *", "2026-11-20 00:00", False),
    ("0 0 */2 * *", "2026-11-21 00:00", True),
    ("0 0 */2 * *", "2026-11-22 00:00", False),
    ("5/20 * * * *", "2026-11-21 00:45", True),
    ("@daily", "2026-11-21 00:00", True),
    ("@hourly", "2026-11-21 07:00", True),
    ("@hourly", "2026-11-21 07:01", False),
    ("@weekly", "2026-11-22 00:00", True),
    ("@monthly", "2026-12-01 00:00", True),
    ("@yearly", "2027-01-01 00:00", True),
    ("@yearly", "2026-12-01 00:00", False),
]


@pytest.mark.parametrize("expr,when,fires", SCHEDULE_CASES)
def test_cron_matcher_fires_exactly_at_scheduled_minutes(expr, when, fires):
    env = {**os.environ, "PG_MAJOR": "18", "TZ": "UTC"}
    proc = subprocess.run([str(SCHEDULER), "match", expr, when], env=env, capture_output=True, text=True)
    assert proc.returncode == (0 if fires else 1), f"{expr!r} at {when}: exit {proc.returncode} {proc.stderr}"


@pytest.mark.parametrize("expr", ["60 * * * *", "* 24 * * *", "* * 0 * *", "* * * 13 *", "* * * * 8",
                                  "* * * *", "* * * * * *", "1,,2 * * * *", "5-1 * * * *", "*/0 * * * *",
                                  "@reboot", "x * * * *", ""])
def test_cron_matcher_rejects_invalid_schedules(expr):
    env = {**os.environ, "PG_MAJOR": "18"}
    proc = subprocess.run([str(SCHEDULER), "check", expr], env=env, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "invalid backup schedule" in proc.stderr


def test_builtin_scheduler_runs_backups_when_not_root(make_instance):
    """Under the operator the pod runs as uid 999: Debian cron cannot run, the
    entrypoint's own scheduler runs backup.sh at the scheduled minutes."""
    inst = make_instance(env={"PGSTEWARD_BACKUP_SCHEDULE": "* * * * *", "PGSTEWARD_SCHEDULER_INTERVAL": "1"})
    inst.start()
    inst.psql("create table before_backup as select generate_series(1, 50) id")
    result = wait_for(lambda: (inst.state_dir / "backup.json").exists() and inst.result("backup"),
                      150, "a scheduled backup result", inst)
    if result["outcome"] == "running":
        result = wait_for(lambda: inst.result("backup")["outcome"] != "running" and inst.result("backup"),
                          150, "the scheduled backup to finish", inst)
    assert result["outcome"] == "succeeded", result
    assert result["details"]["backupName"], result
    # The schedule's backups carry their own id, scheduled-<UTC>, in the
    # result and in the backup list: that is how they are told apart from
    # on-demand backups.
    assert re.fullmatch(r"scheduled-\d{8}T\d{6}Z", result["id"]), result["id"]
    listed = {b["name"]: b["pgstewardId"] for b in result["details"]["backups"]}
    assert listed[result["details"]["backupName"]] == result["id"], listed
    log = inst.log()
    assert "via the built-in scheduler" in log
    assert f"scheduled backup: running {SCRIPTS / 'backup.sh'} --id scheduled-" in log, log
    assert not (inst.config_dir / "cron.d").exists()
    check_fixture("backup-succeeded-scheduled.json", result)

    # An on-demand backup afterwards lists both, each with its id (the
    # scheduler may hold the lock for its next minute: exit 5, retry).
    def on_demand():
        run = inst.script("backup.sh", "--id", "on-demand-after-scheduled", check=False)
        assert run.returncode in (0, 5), run.stdout + run.stderr
        return run.returncode == 0
    wait_for(on_demand, 150, "the on-demand backup to get the lock", inst)
    after = inst.result("backup", "on-demand-after-scheduled")
    ids = [b["pgstewardId"] for b in after["details"]["backups"]]
    assert ids[-1] == "on-demand-after-scheduled" and result["id"] in ids, ids
    assert all(i == "on-demand-after-scheduled" or i.startswith("scheduled-") for i in ids), ids
    check_fixture("backup-succeeded-after-scheduled.json", after)


def test_as_root_without_cron_warns_and_uses_the_builtin_scheduler(make_instance):
    inst = make_instance(env={"PGSTEWARD_BACKUP_SCHEDULE": "* * * * *", "PGSTEWARD_SCHEDULER_INTERVAL": "1",
                              "PGSTEWARD_CRON_BIN": "pgsteward-test-no-such-cron"})
    inst.start(as_root=True, PGSTEWARD_CRON_DIR=str(inst.root / "cron.d"))
    warnings = [line for line in inst.log().splitlines() if "WARNING: cron" in line]
    assert len(warnings) == 1 and "using the built-in scheduler" in warnings[0], inst.log()
    result = wait_for(lambda: (inst.state_dir / "backup.json").exists() and inst.result("backup")["outcome"] != "running"
                      and inst.result("backup"), 150, "a scheduled backup", inst)
    assert result["outcome"] == "succeeded", result
    assert not (inst.root / "cron.d" / "pgsteward-backup").exists()


def running_cron_daemons() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "cron":
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_as_root_with_cron_installs_the_cron_job_and_runs_cron(make_instance):
    """`cron` is expected where the Debian cron package is installed: in the
    standard image (PGSTEWARD_IMAGE_TYPE=standard; the CI smoke test checks
    `command -v cron` there) and on a host that has the package. Without it
    this test cannot run the cron path and is skipped."""
    cron = shutil.which("cron", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if cron is None:
        pytest.skip("the Debian `cron` package is not installed on this host (apt-get install cron); "
                    "the cron path cannot run, the built-in scheduler tests cover the rest")
    if os.geteuid() != 0:
        pytest.skip("the cron path runs only when the container starts as root; run the tier as root")
    others = running_cron_daemons()
    if others:
        pytest.skip(f"a cron daemon already runs on this host (pids {others}); Debian cron allows one per host")
    inst = make_instance(env={"PGSTEWARD_BACKUP_SCHEDULE": "17 3 * * *"})
    cron_dir = inst.root / "cron.d"
    inst.start(as_root=True, PGSTEWARD_CRON_DIR=str(cron_dir))
    cron_file = cron_dir / "pgsteward-backup"
    assert cron_file.exists(), inst.log()
    st = cron_file.stat()
    assert st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o644  # cron ignores group/other-writable files
    lines = [line for line in cron_file.read_text().splitlines() if line and not line.startswith("#")]
    job = lines[-1].split()
    assert job[:5] == ["17", "3", "*", "*", "*"] and job[5] == "postgres", lines
    path_line = next(line for line in lines if line.startswith("PATH="))
    env_file = Path(job[-1])
    est = env_file.stat()
    assert stat.S_IMODE(est.st_mode) == 0o600 and est.st_uid == harness.run_user_ids()[0]
    # The cron daemon runs in the container's process group, as a child of the server.
    daemons = wait_for(lambda: [cmd for cmd in session_processes(inst.proc.pid).values() if cmd.endswith("cron -f")],
                       10, "cron -f in the server's session", inst)
    assert len(daemons) == 1, daemons
    # Run the job exactly as cron would: as postgres, with cron's bare environment.
    command = " ".join(job[6:])
    proc = subprocess.run(harness.as_run_user(["env", "-i", "HOME=/var/lib/postgresql", "LOGNAME=postgres",
                                               "SHELL=/bin/bash", path_line, "/bin/bash", "-c", command]),
                          capture_output=True, text=True, timeout=300, cwd="/")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = inst.result("backup")
    assert result["outcome"] == "succeeded", result
    assert re.fullmatch(r"scheduled-\d{8}T\d{6}Z", result["id"]), result["id"]
    assert "via cron" in inst.log() and "via the built-in scheduler" not in inst.log()
    inst.stop()
    wait_for(lambda: not [c for c in session_processes(inst.proc.pid).values() if c.endswith("cron -f")],
             10, "cron to stop with the server")


# --- `docker run` ---------------------------------------------------------------

def test_docker_run_as_root_initialises_and_serves_as_postgres(make_instance):
    inst = make_instance()
    uid, gid = harness.run_user_ids()
    for path in (inst.volume, inst.run_dir):
        os.chown(path, 0, 0)  # a fresh volume as Docker creates it: owned by root
    inst.start(as_root=True)
    assert process_user(inst.proc.pid) == harness.RUN_USER  # PID 1 became the server, as postgres
    st = inst.pgdata.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (uid, 0o700)
    assert inst.volume.stat().st_uid == uid
    assert (inst.state_dir / "stash" / "18" / ".stash-version").stat().st_uid == uid
    inst.psql("create table r(id int); insert into r select generate_series(1, 10)")
    inst.stop()
    inst.start(as_root=True)
    assert inst.query("select sum(id) from r") == "55"


def test_docker_run_as_root_without_gosu_drops_privileges_with_setpriv(make_instance):
    inst = make_instance()
    # gosu lives in /usr/sbin; a PATH without the sbin directories hides it.
    path = ":".join([str(harness.pg_bindir(inst.major)), str(SCRIPTS), str(STANDINS), "/usr/local/bin", "/usr/bin", "/bin"])
    assert shutil.which("gosu", path=path) is None, "gosu is on the reduced PATH; the test cannot hide it"
    inst.start(as_root=True, PATH=path)
    assert process_user(inst.proc.pid) == harness.RUN_USER
    assert inst.query("select current_setting('data_directory')") == str(inst.pgdata)


def test_docker_run_arguments_reach_postgres(make_instance):
    inst = make_instance()
    start_with_argv(inst, ["-c", "work_mem=1MB"], as_root=True)  # docker run IMAGE -c work_mem=1MB
    assert inst.query("show work_mem") == "1MB"
    assert inst.query("show config_file") == str(inst.config_dir / "postgresql.conf")
    inst.stop()
    start_with_argv(inst, ["postgres", "-c", "work_mem=3MB", "-c", "max_connections=42"])
    assert inst.query("show work_mem") == "3MB"
    assert inst.query("show max_connections") == "42"


def test_docker_run_of_another_command_runs_it_as_is(make_instance):
    inst = make_instance()
    proc = run_entrypoint_once(inst, "bash", "-c", "echo hello-from-bash; id -u", as_root=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["hello-from-bash", "0"]
    version = run_entrypoint_once(inst, "postgres", "--version", as_root=True)
    assert version.returncode == 0 and "(PostgreSQL) 18" in version.stdout
    assert not any(inst.volume.iterdir()), "a non-postgres command changed the volume"


def test_new_cluster_runs_init_scripts_once_with_a_custom_superuser_and_database(make_instance):
    """The official entrypoint's initialisation through our config: a superuser
    other than postgres reaches the temporary server over the socket with its
    password (pg_hba.conf: scram for every role but postgres), POSTGRES_DB is
    created, and /docker-entrypoint-initdb.d runs once."""
    inst = make_instance()
    initdb_d = inst.root / "initdb.d"
    initdb_d.mkdir()
    (initdb_d / "01-schema.sql").write_text("create table seeded(id int primary key);\n"
                                            "insert into seeded select generate_series(1, 5);\n")
    (initdb_d / "02-marker.sh").write_text(f'echo "ran as $(id -un)" >> {inst.root}/initdb-ran\n')
    harness.chown_to_run_user(initdb_d)
    env = {"POSTGRES_USER": "app", "POSTGRES_DB": "appdb", "DOCKER_ENTRYPOINT_INITDB_DIR": str(initdb_d)}
    psql = [str(harness.pg_bindir(inst.major) / "psql"), "-X", "-A", "-t", "-h", "127.0.0.1", "-p", str(inst.port),
            "-U", "app", "-d", "appdb", "-c", "select count(*), current_user from seeded"]

    def seeded():  # the harness's readiness check connects as postgres, which this cluster does not have
        proc = inst.run(psql, check=False, PGPASSWORD=SUPERUSER_PASSWORD)
        assert inst.proc.poll() is None, f"entrypoint exited {inst.proc.returncode}\n{inst.log()}"
        return proc.returncode == 0 and proc.stdout.strip()

    inst.start(wait=False, **env)
    assert wait_for(seeded, 120, "the app database over TCP", inst) == "5|app"
    inst.stop()
    inst.start(wait=False, **env)
    assert wait_for(seeded, 120, "the app database over TCP after a restart", inst) == "5|app"
    assert (inst.root / "initdb-ran").read_text() == "ran as postgres\n"  # once, as the data owner


def test_existing_pgdata_starts_without_a_password(make_instance):
    inst = make_instance()
    inst.start()
    inst.psql("create table kept(x int); insert into kept values (7)")
    inst.stop()
    inst.start(POSTGRES_PASSWORD="__unset__")
    assert inst.query("select x from kept") == "7"


# --- bad input: one clear log line, a non-zero exit, nothing half-made -----------------

def assert_refused(proc: subprocess.CompletedProcess, code: int, *words: str) -> str:
    output = proc.stdout + proc.stderr
    assert proc.returncode == code, f"exit {proc.returncode}, wanted {code}\n{output}"
    errors = error_lines(proc.stderr)
    assert len(errors) == 1, f"wanted one error line, got {errors}\n{output}"
    for word in words:
        assert word in errors[0], f"{word!r} not in {errors[0]!r}"
    assert "stand-in for the official" not in output, "the official entrypoint ran after a refusal"
    return errors[0]


def assert_nothing_initialised(inst: harness.Instance) -> None:
    assert not (inst.pgdata / "PG_VERSION").exists()
    assert not (inst.pgdata.exists() and any(inst.pgdata.iterdir())), "PGDATA is half-made"
    assert not (inst.state_dir / "stash").exists(), "the stash was written before the refusal"


@pytest.mark.parametrize("as_root", [False, True], ids=["uid999", "root"])
def test_missing_password_on_empty_pgdata_is_refused(make_instance, as_root):
    inst = make_instance()
    proc = run_entrypoint_once(inst, "postgres", as_root=as_root, POSTGRES_PASSWORD="__unset__")
    line = assert_refused(proc, 2, "POSTGRES_PASSWORD", str(inst.pgdata))
    print(line)
    assert_nothing_initialised(inst)


def test_invalid_backup_schedule_is_refused(make_instance):
    inst = make_instance()
    proc = run_entrypoint_once(inst, "postgres", PGSTEWARD_BACKUP_SCHEDULE="61 * * * *")
    print(assert_refused(proc, 2, "PGSTEWARD_BACKUP_SCHEDULE", "61 * * * *"))
    assert_nothing_initialised(inst)


@pytest.mark.parametrize("as_root", [False, True], ids=["uid999", "root"])
def test_read_only_volume_is_refused(make_instance, mounts, as_root):
    inst = make_instance()
    mounts.tmpfs(inst.volume, 64)
    mounts.read_only(inst.volume)
    proc = run_entrypoint_once(inst, "postgres", as_root=as_root)
    print(assert_refused(proc, 2, str(inst.volume), "Read-only file system"))
    assert not any(inst.volume.iterdir())


def test_read_only_volume_with_existing_pgdata_is_refused_and_untouched(make_instance, mounts):
    inst = make_instance()
    mounts.tmpfs(inst.volume, 256)
    inst.start()
    inst.psql("create table kept(x int); insert into kept values (1)")
    inst.stop()
    before = pgdata_manifest(inst.pgdata)
    mounts.read_only(inst.volume)
    proc = run_entrypoint_once(inst, "postgres")
    print(assert_refused(proc, 2, "Read-only file system"))
    assert pgdata_manifest(inst.pgdata) == before


def test_full_volume_is_refused_before_initdb(make_instance, mounts):
    inst = make_instance()
    mounts.tmpfs(inst.volume, 200)
    mounts.fill(inst.volume, 20 * MIB)
    proc = run_entrypoint_once(inst, "postgres")
    line = assert_refused(proc, 4, "not enough free space", str(inst.volume), "MiB needed", "initdb")
    print(line)
    assert not (inst.pgdata / "PG_VERSION").exists()
    assert not (inst.state_dir / "stash").exists()


def test_full_volume_with_existing_pgdata_is_refused_and_untouched(make_instance, mounts):
    inst = make_instance()
    mounts.tmpfs(inst.volume, 256)
    inst.start()
    inst.psql("create table kept(x int); insert into kept values (1)")
    inst.stop()
    mounts.fill(inst.volume, 4 * MIB)
    before = pgdata_manifest(inst.pgdata)
    proc = run_entrypoint_once(inst, "postgres")
    print(assert_refused(proc, 4, "not enough free space", "PGSTEWARD_MIN_FREE_MB"))
    assert pgdata_manifest(inst.pgdata) == before


@pytest.mark.parametrize("content,words", [
    ("work_mem = = 128MB\n", ["syntax error", "conf.d/bad.conf", "line 1"]),
    ("# fine\nwork_mem = banana\n", ['invalid value for parameter "work_mem"', "conf.d/bad.conf"]),
    ("shared_bufers = 1GB\n", ['unrecognized configuration parameter "shared_bufers"', "conf.d/bad.conf", "line 1"]),
], ids=["syntax", "value", "name"])
def test_conf_d_error_is_refused_naming_the_file(make_instance, content, words):
    inst = make_instance()
    (inst.config_dir / "conf.d" / "bad.conf").write_text(content)
    proc = run_entrypoint_once(inst, "postgres")
    print(assert_refused(proc, 2, "configuration error", *words))
    assert_nothing_initialised(inst)


def test_conf_d_error_with_existing_pgdata_is_refused_and_untouched(make_instance):
    inst = make_instance()
    inst.start()
    inst.psql("create table kept(x int); insert into kept values (1)")
    inst.stop()
    before = pgdata_manifest(inst.pgdata)
    (inst.config_dir / "conf.d" / "bad.conf").write_text("max_connections = 100\nwal_level = = replica\n")
    proc = run_entrypoint_once(inst, "postgres")
    print(assert_refused(proc, 2, "syntax error", "conf.d/bad.conf", "line 2"))
    assert pgdata_manifest(inst.pgdata) == before
    (inst.config_dir / "conf.d" / "bad.conf").unlink()
    inst.start()
    assert inst.query("select x from kept") == "1"


# --- static checks of the image's files -----------------------------------------------

def test_entrypoint_scheduler_standin_and_smoke_test_are_shellcheck_clean():
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (make test-deps installs it)")
    # This scripts; hack/lint.sh (make lint) runs shellcheck over every script.
    scripts = [SCRIPTS / "entrypoint.sh", SCRIPTS / "backup-scheduler.sh", STANDINS / "docker-entrypoint.sh",
               harness.REPO / "images" / "postgres" / "smoke-test.sh"]
    proc = subprocess.run([shellcheck, "-x", "-P", "SCRIPTDIR", *map(str, scripts)], cwd=harness.REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
