"""Helpers for test_upgrade.py: an old (17) cluster with known content, its
fingerprint, the processes of an instance, and the state-file fixtures.

Every cluster here is made by the image's own entrypoint (`Instance.start()`)
from real PostgreSQL binaries; the upgrade runs because the instance is moved
to the newer binaries (`use_major`) and started again, as a pod is when its
image changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import harness

OLD = 17
NEW = 18
MANAGED = {"PGSTEWARD_MANAGED": "1"}
NO_STORAGE = {"WALG_FILE_PREFIX": "__unset__"}
FIXTURES = harness.REPO / "e2e" / "fixtures" / "state"
LO_OID = 424242
LO_TEXT = "pgsteward large object " * 1000

# Several tables with indexes (btree, GIN, a primary key, a foreign key), a
# TOASTed table, a partitioned table, a sequence, a view, a large object and
# pg_stat_statements; a second database. Small: a few MB.
SCHEMA = [
    "create extension pg_stat_statements",
    """create table accounts (id int primary key, name text not null, balance numeric(12,2), opened date);
       create index accounts_name on accounts (name);
       insert into accounts select g, 'account ' || g, (g * 37 % 10000) / 100.0, date '2020-01-01' + g % 1000
         from generate_series(1, 5000) g""",
    """create table events (id bigint generated always as identity primary key,
         account_id int not null references accounts, kind text, payload jsonb, at timestamptz);
       create index events_account on events (account_id, at);
       create index events_payload on events using gin (payload);
       insert into events (account_id, kind, payload, at)
         select 1 + g % 5000, (array['open', 'pay', 'close'])[1 + g % 3],
                jsonb_build_object('n', g, 'tag', md5(g::text)), timestamptz '2024-01-01 00:00:00+00' + g * interval '1 minute'
         from generate_series(1, 20000) g""",
    """create table documents (id int primary key, title text, body text);
       insert into documents
         select g, 'doc ' || g, (select string_agg(md5(g::text || ':' || i), '') from generate_series(1, 300) i)
         from generate_series(1, 60) g""",
    """create table measurements (city int, at date, temp numeric) partition by range (at);
       create table measurements_2024 partition of measurements for values from ('2024-01-01') to ('2025-01-01');
       create table measurements_2025 partition of measurements for values from ('2025-01-01') to ('2026-01-01');
       create index on measurements (city, at);
       insert into measurements select g % 10, date '2024-01-01' + g % 700, (g % 40) - 5 from generate_series(1, 7000) g""",
    "create sequence invoice_seq start 1000; select nextval('invoice_seq') from generate_series(1, 42)",
    """create view account_totals as
         select a.id, a.name, count(e.id) as events, sum(a.balance) as balance
         from accounts a left join events e on e.account_id = a.id group by a.id, a.name""",
    f"select lo_from_bytea({LO_OID}, convert_to('{LO_TEXT}', 'UTF8'))",
]
APPDB_SCHEMA = """create table orders (id int primary key, customer text, amount int);
  create index orders_customer on orders (customer);
  insert into orders select g, 'c' || g % 97, g * 3 from generate_series(1, 3000) g"""

TABLES = ["accounts", "events", "documents", "measurements"]


def populate(inst: harness.Instance) -> None:
    for sql in SCHEMA:
        inst.psql(sql)
    inst.psql("create database appdb")
    inst.psql(APPDB_SCHEMA, dbname="appdb")
    inst.psql("checkpoint")


def table_hash(inst: harness.Instance, table: str, dbname: str = "postgres") -> str:
    return inst.query(
        f"select count(*) || ':' || md5(coalesce(string_agg(t::text, ',' order by t::text), '')) from {table} t",
        dbname=dbname)


def fingerprint(inst: harness.Instance) -> dict:
    """Everything the old cluster holds, in a form that must not change."""
    fp = {t: table_hash(inst, t) for t in TABLES}
    fp["appdb.orders"] = table_hash(inst, "orders", dbname="appdb")
    fp["invoice_seq"] = inst.query("select last_value || ',' || is_called from invoice_seq")
    fp["account_totals"] = inst.query(
        "select count(*) || ':' || md5(string_agg(v::text, ',' order by v.id)) from account_totals v")
    fp["large_object"] = inst.query(f"select md5(lo_get({LO_OID}))")
    fp["extensions"] = inst.query("select string_agg(extname, ',' order by extname) from pg_extension")
    fp["indexes"] = inst.query(
        "select string_agg(indexrelid::regclass::text, ',' order by indexrelid::regclass::text) "
        "from pg_index i join pg_class c on c.oid = i.indrelid join pg_namespace n on n.oid = c.relnamespace "
        "where n.nspname = 'public'")
    fp["data_checksums"] = inst.query("show data_checksums")
    return fp


def expected_large_object_md5() -> str:
    return hashlib.md5(LO_TEXT.encode()).hexdigest()


# --- instances -----------------------------------------------------------------

def build_old_template() -> tuple[harness.Instance, dict]:
    """A PostgreSQL 17 instance made by the entrypoint (data, stash), holding
    SCHEMA, stopped. Returns it with its fingerprint."""
    inst = harness.new_instance("upgrade-template", OLD, env={**MANAGED, **NO_STORAGE})
    inst.start()
    populate(inst)
    fp = fingerprint(inst)
    inst.stop()
    return inst, fp


def clone_volume(template: harness.Instance, inst: harness.Instance) -> None:
    """The template's whole volume (data and stash) into a new instance."""
    subprocess.run(["cp", "-a", f"{template.volume}/.", f"{inst.volume}/"], check=True)


def old_pgdata(inst: harness.Instance) -> Path:
    return inst.volume / str(OLD) / "docker"


def new_pgdata(inst: harness.Instance) -> Path:
    return inst.volume / str(NEW) / "docker"


def tree_digest(path: Path) -> str:
    """A digest of every file under path: name, mode, size and content."""
    h = hashlib.sha256()
    if not path.exists():
        return "absent"
    for dirpath, dirnames, filenames in sorted(os.walk(path)):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            st = p.lstat()
            h.update(f"{p.relative_to(path)}\0{st.st_mode:o}\0{st.st_size}\0".encode())
            if p.is_file() and not p.is_symlink():
                h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def group_processes(inst: harness.Instance, needle: str) -> list[int]:
    """Live processes of the instance's process group whose command line
    contains needle."""
    if inst.proc is None:
        return []
    pgid = inst.proc.pid
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            if fields[0] == "Z" or int(fields[2]) != pgid:
                continue
            if needle in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                pids.append(int(entry.name))
        except (OSError, ValueError):
            continue
    return pids


def wait_post_finished(inst: harness.Instance, timeout: float = 300) -> dict:
    """Wait until no `upgrade.sh post` runs any more; return the upgrade result."""
    deadline = time.monotonic() + timeout
    # The entrypoint's post hook (a forked entrypoint.sh) waits for the server,
    # runs `upgrade.sh post`, then exits.
    while time.monotonic() < deadline:
        if not group_processes(inst, "upgrade.sh") and not group_processes(inst, "entrypoint.sh"):
            return inst.result("upgrade")
        time.sleep(0.3)
    raise AssertionError(f"upgrade.sh post still running after {timeout}s\n{inst.log()[-4000:]}")


def wait_upgrade_succeeded(inst: harness.Instance, timeout: float = 300) -> dict:
    result = wait_post_finished(inst, timeout)
    assert result["outcome"] == "succeeded", json.dumps(result, indent=1) + "\n" + inst.log()[-4000:]
    return result


def start_expecting_exit(inst: harness.Instance, timeout: float = 300, **env) -> int:
    """Start the entrypoint and wait for it to exit (a refusal or a failure)."""
    inst.start(wait=False, **env)
    try:
        return inst.wait_exit(timeout)
    except subprocess.TimeoutExpired:
        inst.kill()
        raise AssertionError(f"the entrypoint did not exit within {timeout}s\n{inst.log()[-4000:]}")


def kill_group(inst: harness.Instance) -> None:
    os.killpg(inst.proc.pid, signal.SIGKILL)
    inst.proc.wait()


def server_major(inst: harness.Instance) -> int:
    return inst.server_version_num() // 10000


# --- state-file fixtures for the operator ----------------------------------------

def _shape(value):
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [_shape(v) for v in value[:1]]
    return type(value).__name__


def check_fixture(name: str, result: dict) -> None:
    """With PGSTEWARD_UPDATE_FIXTURES=1, write the real result as the fixture;
    otherwise the committed fixture must have the same keys and value types."""
    path = FIXTURES / f"upgrade-{name}.json"
    if os.environ.get("PGSTEWARD_UPDATE_FIXTURES") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
        return
    assert path.exists(), f"{path} is missing: run the test with PGSTEWARD_UPDATE_FIXTURES=1 and commit it"
    committed = json.loads(path.read_text())
    assert _shape(committed) == _shape(result), (
        f"{path} no longer matches what upgrade.sh writes; regenerate it with PGSTEWARD_UPDATE_FIXTURES=1\n"
        f"committed: {json.dumps(_shape(committed))}\nfresh:     {json.dumps(_shape(result))}")


def du_bytes(*paths: Path) -> int:
    """Disk used by paths together; a hard-linked file is counted once."""
    out = subprocess.run(["du", "-s", "-B1", "-c", *map(str, paths)], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1].split()[0])


def df_used(path: Path) -> int:
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


@contextmanager
def own_filesystem(inst: harness.Instance, size_mb: int):
    """Mount a tmpfs of size_mb at the instance's (empty) volume, so that df
    sees this instance's writes only. Yields False, without mounting, where
    mounting is not allowed (no root or no CAP_SYS_ADMIN)."""
    assert not any(inst.volume.iterdir()), "own_filesystem needs an empty volume"
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0700", "tmpfs", str(inst.volume)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        yield False
        return
    try:
        os.chown(inst.volume, *harness.run_user_ids())
        yield True
    finally:
        inst.stop()
        subprocess.run(["umount", "--lazy", str(inst.volume)], check=False)
