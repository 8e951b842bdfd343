#!/usr/bin/env bash
# wal-restore.sh — PostgreSQL's restore_command: `wal-restore.sh %f %p`.
#
# Fetches one WAL segment or history file with `wal-g wal-fetch` and maps its
# exit codes to what PostgreSQL's recovery expects:
#   * wal-g 74 (not in the archive) → exit 1: PostgreSQL treats it as the end
#     of the archive (or a history file that does not exist) and goes on.
#   * any other failure (storage down, bad credentials, …) is retried
#     PGSTEWARD_WAL_FETCH_ATTEMPTS times (default 5) with a doubling pause
#     starting at PGSTEWARD_WAL_FETCH_BACKOFF seconds (default 1). If it still
#     fails, exit 200: PostgreSQL treats an exit status above 125 like a
#     signal and ABORTS recovery (FATAL) instead of promoting at what only
#     looks like the end of the archive. The restore then fails and rolls back;
#     it never forks a timeline at a gap.
#
# Storage: this instance's prefix (<base>/<major>), or, while restore.sh runs
# a clone, the source's base prefix in PGSTEWARD_WAL_RESTORE_PREFIX (set by
# restore.sh for the server it starts, never by the user).
#
# Exit codes:
#   0    fetched into the destination path
#   1    not in the archive (wal-g exit 74), and only that
#   200  anything else: storage failure after retries, no storage configured,
#        an unreadable *_FILE secret, a usage error or any unexpected error.
#        PostgreSQL aborts recovery.
set -Eeuo pipefail

readonly EXIT_ABORT_RECOVERY=200
readonly WALG_NOT_FOUND=74
not_found=0

# Exit 1 means "end of archive" to PostgreSQL, so it must come only from a
# real 74. Every other way out of this script (die, set -e, a typo) becomes
# 200, which aborts recovery instead of promoting early.
on_exit() {
  local rc=$?
  if [ "$rc" -ne 0 ] && ! { [ "$rc" -eq 1 ] && [ "$not_found" -eq 1 ]; }; then
    exit "$EXIT_ABORT_RECOVERY"
  fi
}
trap on_exit EXIT

# shellcheck source=images/postgres/scripts/pgsteward-lib.sh
. "$(dirname "$0")/pgsteward-lib.sh"

# storage_walg ARGS...: wal-g against this instance's storage, or the clone
# source's while restore.sh runs a clone.
storage_walg() {
  if [ -n "${PGSTEWARD_WAL_RESTORE_PREFIX:-}" ]; then
    walg_from "$PGSTEWARD_WAL_RESTORE_PREFIX" "$@"
  else
    walg "$@"
  fi
}

# fetch_with_retries NAME DEST
fetch_with_retries() {
  local name=$1 dest=$2 attempts=${PGSTEWARD_WAL_FETCH_ATTEMPTS:-5} pause=${PGSTEWARD_WAL_FETCH_BACKOFF:-1}
  local attempt rc
  for ((attempt = 1; attempt <= attempts; attempt++)); do
    rc=0
    storage_walg wal-fetch "$name" "$dest" || rc=$?
    case "$rc" in
      0) return 0 ;;
      "$WALG_NOT_FOUND")
        not_found=1
        exit 1
        ;;
    esac
    if [ "$attempt" -lt "$attempts" ]; then
      log "wal-fetch of $name failed (wal-g exit $rc), attempt $attempt of $attempts; retrying in ${pause}s"
      sleep "$pause"
      pause=$((pause * 2))
    fi
  done
  log "ERROR: wal-fetch of $name failed $attempts times (last wal-g exit $rc): the storage is unreachable" \
    "or refuses us. Aborting recovery (exit $EXIT_ABORT_RECOVERY) rather than ending it early at a gap."
  exit "$EXIT_ABORT_RECOVERY"
}

main() {
  if [ $# -ne 2 ] || [ -z "$1" ] || [ -z "$2" ]; then die "usage: wal-restore.sh %f %p" 2; fi
  if [ -z "${PGSTEWARD_WAL_RESTORE_PREFIX:-}" ] && ! storage_configured; then
    log "ERROR: restore_command called for $1 but no backup storage is configured; aborting recovery"
    exit "$EXIT_ABORT_RECOVERY"
  fi
  load_secret_files
  fetch_with_retries "$1" "$2"
}

main "$@"
