#!/usr/bin/env bash
# e2e/bench/upgrade.sh — wall time of a major upgrade (17 to 18 with
# pg_upgrade --link) against data size, and the downtime it causes.
#
#   e2e/bench/upgrade.sh [SIZE_MB ...]      default: 200 1600
#
# `make bench-upgrade` runs it (through e2e/run-tier.sh bench-upgrade). Not a
# test: it prints figures and the ratio between the largest and the smallest
# size; with --link the upgrade should hardly grow with the data. The work is
# in upgrade_bench.py, on the image tier's harness: real binaries, the image's
# entrypoint and upgrade.sh. It needs the disk for the largest size about
# three times over (data, the WAL of the load, headroom) under
# $PGSTEWARD_TEST_WORKDIR (default /tmp/pgsteward-e2e).
#
# Exit codes: 0 figures printed; 1 a run failed; 2 bad arguments or missing
# dependencies (the message says how to get them).
set -Eeuo pipefail
here=$(cd "$(dirname "$0")" && pwd)
PGSTEWARD_CACHE=${PGSTEWARD_CACHE:-/var/cache/pgsteward}
python="$PGSTEWARD_CACHE/venv/bin/python"

log() { printf '%s [bench/upgrade.sh] %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }

check_args() {
  local size
  for size in "$@"; do
    [[ $size =~ ^[1-9][0-9]*$ ]] || {
      log "usage: $0 [SIZE_MB ...] (sizes in MB, e.g. 200 1600)"
      exit 2
    }
  done
}

check_deps() {
  [ -x "$python" ] || {
    log "no Python venv in $PGSTEWARD_CACHE/venv: run \`make test-deps\`"
    exit 2
  }
}

main() {
  check_args "$@"
  check_deps
  "$python" "$here/upgrade_bench.py" "$@" || {
    local rc=$?
    [ "$rc" -eq 2 ] && exit 2
    log "the benchmark failed (exit $rc)"
    exit 1
  }
}

main "$@"
