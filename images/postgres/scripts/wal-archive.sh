#!/usr/bin/env bash
# wal-archive.sh — PostgreSQL's archive_command: `wal-archive.sh %p`.
#
# Pushes one finished WAL segment (or history/backup file) to the backup
# storage with `wal-g wal-push`, under this major's prefix (<base>/<major>).
#
# With no storage configured, archiving is off in a way that never fills the
# disk: the script exits 0, so PostgreSQL marks the segment done and recycles
# it. It says so once in the log (a marker file in the state directory
# remembers that it did), and again only after storage was configured and then
# removed.
#
# Exit codes:
#   0  pushed, or no storage configured (nothing to do, segment may be recycled)
#   1  the push failed: PostgreSQL keeps the segment and retries
#   2  usage error (no path given)
set -Eeuo pipefail
# shellcheck source=images/postgres/scripts/pgsteward-lib.sh
. "$(dirname "$0")/pgsteward-lib.sh"

DISABLED_MARKER="$PGSTEWARD_STATE_DIR/wal-archive-disabled"

# archive_disabled: storage is not configured. Log that once, then stay quiet.
archive_disabled() {
  if [ ! -e "$DISABLED_MARKER" ]; then
    log "no backup storage configured (${STORAGE_PREFIX_VARS[*]} all unset): WAL archiving is off;" \
      "segments are recycled, not kept. This is logged once."
    mkdir -p "$PGSTEWARD_STATE_DIR"
    : >"$DISABLED_MARKER"
  fi
  exit 0
}

# push_segment PATH: wal-g wal-push, non-zero on any failure.
push_segment() {
  local path=$1 rc=0
  rm -f "$DISABLED_MARKER"
  load_secret_files
  walg wal-push "$path" || rc=$?
  if [ "$rc" -ne 0 ]; then
    log "wal-push of ${path##*/} failed (wal-g exit $rc); PostgreSQL keeps the segment and retries"
    exit 1
  fi
}

main() {
  if [ $# -ne 1 ] || [ -z "$1" ]; then die "usage: wal-archive.sh %p" 2; fi
  storage_configured || archive_disabled
  push_segment "$1"
}

main "$@"
