"""Benchmark of a major upgrade (PostgreSQL 17 to 18, pg_upgrade --link)
against data size. Run by e2e/bench/upgrade.sh (`make bench-upgrade`); not a
test, it asserts nothing about time and prints figures.

For each size: the image's entrypoint makes a 17 instance, a table with a
primary key is filled to about that size, then, as when a pod moves to the
newer image:

  stop      the 17 server stops (fast shutdown)           -- downtime starts
  upgrade   upgrade.sh auto, timed on its own: preflight, inspection of the
            old cluster, initdb, pg_upgrade --check, pg_upgrade --link,
            config, swap, first start and stop of the new cluster
  start     the entrypoint starts the 18 server            -- downtime ends
            when it accepts connections
  post      upgrade.sh post in the background (analyze, extension updates,
            removal of the old data directory), not part of the downtime
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "image"))

import harness  # noqa: E402
from upgrade_support import MANAGED, NEW, NO_STORAGE, OLD, wait_upgrade_succeeded  # noqa: E402

# Bytes that one row of the table takes, heap and primary key together.
ROW_BYTES = 190
MIB = 2**20


def run(size_mb: int) -> dict:
    inst = harness.new_instance(f"bench-upgrade-{size_mb}mb", OLD, env={**MANAGED, **NO_STORAGE})
    try:
        inst.start()
        rows = size_mb * MIB // ROW_BYTES
        t = time.monotonic()
        inst.psql("create table bench (id bigint primary key, body text) with (autovacuum_enabled = off)")
        step = 2_000_000
        for first in range(1, rows + 1, step):
            last = min(first + step - 1, rows)
            inst.psql(f"insert into bench select g, repeat(md5(g::text), 4) from generate_series({first}, {last}) g",
                      timeout=3600)
        inst.psql("vacuum (analyze) bench", timeout=3600)
        inst.psql("checkpoint", timeout=3600)
        data = int(inst.query("select sum(pg_database_size(datname)) from pg_database"))
        print(f"  {size_mb} MB: loaded {rows} rows, {data / MIB:.0f} MiB of databases in {time.monotonic() - t:.0f} s",
              file=sys.stderr)

        t_stop = time.monotonic()
        inst.stop()
        t_stopped = time.monotonic()
        inst.use_major(NEW)
        inst.script("upgrade.sh", "auto", timeout=7200)
        t_upgraded = time.monotonic()
        inst.start(timeout=600)
        t_ready = time.monotonic()
        assert inst.server_version_num() // 10000 == NEW
        wait_upgrade_succeeded(inst, timeout=7200)
        t_post = time.monotonic()
        assert inst.query("select count(*) from bench") == str(rows)
        return {
            "size_mb": size_mb,
            "data": data,
            "stop": t_stopped - t_stop,
            "upgrade": t_upgraded - t_stopped,
            "start": t_ready - t_upgraded,
            "downtime": t_ready - t_stop,
            "post": t_post - t_ready,
        }
    finally:
        inst.stop()
        if os.environ.get("PGSTEWARD_BENCH_KEEP") != "1":
            shutil.rmtree(inst.root, ignore_errors=True)


def main(argv: list[str]) -> int:
    sizes = [int(a) for a in argv] or [200, 1600]
    for major in (OLD, NEW):
        if major not in harness.majors_available():
            print(f"PostgreSQL {major} is not installed in {harness.CACHE}/pg: run `make test-deps`", file=sys.stderr)
            return 2
    print(f"major upgrade {OLD} -> {NEW} with pg_upgrade --link, through the image's entrypoint "
          f"({os.cpu_count()} CPUs, work dir {harness.WORK_BASE})", file=sys.stderr)
    results = [run(size) for size in sizes]

    print()
    print(f"{'size':>8}  {'databases':>10}  {'upgrade.sh auto':>15}  {'downtime':>9}  "
          f"{'(stop':>6} {'+ upgrade':>9} {'+ start)':>8}  {'post':>7}")
    for r in results:
        print(f"{r['size_mb']:>5} MB  {r['data'] / MIB:>6.0f} MiB  {r['upgrade']:>13.1f} s  {r['downtime']:>7.1f} s  "
              f"{r['stop']:>6.1f} {r['upgrade']:>9.1f} {r['start']:>8.1f}  {r['post']:>5.1f} s")
    if len(results) >= 2:
        small, large = results[0], results[-1]
        print(f"\n{large['data'] / small['data']:.1f}x the data ({large['size_mb']} MB vs {small['size_mb']} MB): "
              f"upgrade wall time {large['upgrade'] / small['upgrade']:.2f}x, "
              f"downtime {large['downtime'] / small['downtime']:.2f}x")
    print("downtime = from the request to stop the old server to the new server accepting connections;\n"
          "post = analyze, extension updates and removal of the old data, while the new server serves.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
