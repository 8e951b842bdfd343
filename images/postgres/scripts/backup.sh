#!/usr/bin/env bash
# backup.sh — one base backup of the running server, then retention.
#
#   backup.sh [--id ID] [--permanent]
#
# Run by the scheduler (backup-scheduler.sh, cron) and by the operator's exec
# for a PgBackup. Steps, each recorded in the result file as it is reached:
#   lock         take $PGSTEWARD_STATE_DIR/backup.lock (flock). A second
#                backup.sh does NOT wait: it exits 5 at once and records
#                nothing, so the caller can retry later with the same id.
#   check        storage configured; the server is up and not in recovery.
#   backup-push  `wal-g backup-push $PGDATA --add-user-data {"pgstewardId":ID}`
#                (the server waits in pg_backup_stop until the backup's last
#                WAL segment is archived).
#   retention    `wal-g delete retain FULL $PGSTEWARD_BACKUP_RETAIN_FULL --confirm`
#                when that variable is set (unset: keep everything).
#   list         `wal-g backup-list --json --detail`, parsed into the result's
#                details: backupName, startLsn, finishLsn, startTime,
#                finishTime, permanent, backups (every backup in storage, each
#                with the pgstewardId it was tagged with, null if none),
#                firstRecoverabilityPoint.
#
# ID defaults to backup-<UTC time>; the scheduler passes scheduled-<UTC time>,
# the operator a PgBackup's uid. An id that already has a final result is
# not run again: the script prints that result and exits 0 (or 1 if it
# failed). The result JSON (docs/image-contract.md) is also printed on stdout
# at the end of every run; logs go to stderr.
#
# Exit codes:
#   0  backup taken (and retention applied), or the id already succeeded
#   1  the backup failed (result recorded with the step and the reason)
#   2  bad arguments (nothing recorded)
#   3  no backup storage configured (result recorded)
#   5  another backup holds the lock (nothing recorded; retry later)
#   6  backup taken, but retention failed (result "succeeded", message says so)
set -Eeuo pipefail
# shellcheck source=images/postgres/scripts/pgsteward-lib.sh
. "$(dirname "$0")/pgsteward-lib.sh"

KIND=backup
ID=''
PERMANENT=false
STARTED_AT=''
# Until backup-list has been read, every detail is null (same keys either way).
DETAILS='{"backupName":null,"startLsn":null,"finishLsn":null,"startTime":null,"finishTime":null,"permanent":false,"firstRecoverabilityPoint":null,"backups":null}'

usage() { die "usage: backup.sh [--id ID] [--permanent]" 2; }

parse_args() {
  while [ $# -gt 0 ]; do
    case "$1" in
      --id)
        if [ $# -lt 2 ] || [ -z "$2" ]; then usage; fi
        ID=$2
        shift 2
        ;;
      --id=*)
        ID=${1#--id=}
        shift
        ;;
      --permanent)
        PERMANENT=true
        shift
        ;;
      *) usage ;;
    esac
  done
  [ -n "$ID" ] || ID="backup-$(date -u +%Y%m%dT%H%M%SZ)"
  DETAILS=$(jq -c --argjson permanent "$PERMANENT" '.permanent = $permanent' <<<"$DETAILS")
  [[ $ID =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$ ]] || die "invalid backup id '$ID' (letters, digits, . _ -)" 2
}

# record OUTCOME STEP MESSAGE
record() {
  record_result "$KIND" "$ID" "$1" "$2" "$3" "$DETAILS" "$STARTED_AT"
}

# fail STEP MESSAGE [EXIT]: record the failure, print the result, exit.
fail() {
  log "ERROR: backup $ID failed at $1: $2"
  record failed "$1" "$2"
  cat "$(result_path "$KIND" "$ID")"
  exit "${3:-1}"
}

already_done() {
  local path
  path=$(result_path "$KIND" "$ID")
  log "backup $ID already has a result ($(jq -r .outcome "$path")); not running it again"
  cat "$path"
  [ "$(jq -r .outcome "$path")" = succeeded ] || exit 1
  exit 0
}

step_lock() {
  local lock="$PGSTEWARD_STATE_DIR/backup.lock" holder
  mkdir -p "$PGSTEWARD_STATE_DIR"
  exec 9<>"$lock"
  if ! flock -n 9; then
    holder=$(cat "$lock" 2>/dev/null || true)
    log "ERROR: another backup is running (${holder:-unknown}); not starting backup $ID. Retry later."
    exit 5
  fi
  # The holder's description, for the message above; the lock is the flock.
  printf 'backup %s, pid %s, started %s\n' "$ID" "$$" "$STARTED_AT" >"$lock"
  fault_point lock
}

step_check() {
  local in_recovery
  record running check "checking storage and server"
  storage_configured || fail check "no backup storage configured: set one of ${STORAGE_PREFIX_VARS[*]}" 3
  load_secret_files
  in_recovery=$(psql -XAtq -c 'select pg_is_in_recovery()' 2>&1) ||
    fail check "the server is not accepting connections on $PGHOST port $PGPORT: ${in_recovery//$'\n'/ }"
  [ "$in_recovery" = f ] || fail check "the server is in recovery; backups are taken from a running primary"
  fault_point check
}

step_backup_push() {
  local -a args=(backup-push "$PGDATA" --add-user-data "$(jq -cn --arg id "$ID" '{pgstewardId: $id}')")
  $PERMANENT && args+=(--permanent)
  record running backup-push "wal-g backup-push running"
  log "backup $ID: wal-g backup-push of $PGDATA (permanent: $PERMANENT)"
  # wal-g's own words go to stderr as before and, on failure, into the
  # result: under the operator's exec nobody else reads that stderr.
  local errors rc=0
  errors=$(mktemp "$PGSTEWARD_RUN_DIR/backup-push.XXXXXX")
  { walg "${args[@]}" 2>&1 >&3 3>&- | tee "$errors" >&2; } 3>&1 || rc=$?
  if [ "$rc" -ne 0 ]; then
    local said
    said=$(tail -n 3 "$errors" | tr '\n' ' ' | cut -c1-600)
    rm -f "$errors"
    fail backup-push "wal-g backup-push failed (exit $rc): ${said:-no message}"
  fi
  rm -f "$errors"
  fault_point backup-push
}

# step_retention: prints nothing; sets RETENTION_ERROR on failure.
RETENTION_ERROR=''
step_retention() {
  local keep=${PGSTEWARD_BACKUP_RETAIN_FULL:-}
  if [ -z "$keep" ]; then
    log "PGSTEWARD_BACKUP_RETAIN_FULL is not set: keeping every backup"
    return 0
  fi
  if ! [[ $keep =~ ^[1-9][0-9]*$ ]]; then
    RETENTION_ERROR="PGSTEWARD_BACKUP_RETAIN_FULL='$keep' is not a positive number; nothing deleted"
    return 0
  fi
  record running retention "applying retention: keep $keep full backups"
  log "retention: wal-g delete retain FULL $keep --confirm"
  walg delete retain FULL "$keep" --confirm || RETENTION_ERROR="wal-g delete retain FULL $keep failed (exit $?)"
  fault_point retention
}

step_list() {
  local raw
  raw=$(walg backup-list --json --detail) || fail list "wal-g backup-list failed (exit $?)"
  [ -n "$raw" ] || raw='[]'
  DETAILS=$(jq -c --arg id "$ID" --argjson permanent "$PERMANENT" "$JQ_LSN"'
    (map({name: .backup_name, startTime: (.start_time | us), finishTime: (.finish_time | us),
          startLsn: (.start_lsn | lsn), finishLsn: (.finish_lsn | lsn), walFileName: .wal_file_name,
          permanent: (.is_permanent // false), pgVersion: .pg_version,
          uncompressedSize: .uncompressed_size, compressedSize: .compressed_size,
          pgstewardId: (.user_data.pgstewardId // null)})
     | sort_by(.startTime)) as $all
    | ([$all[] | select(.pgstewardId == $id)] | last) as $mine
    | {backupName: $mine.name, startLsn: $mine.startLsn, finishLsn: $mine.finishLsn,
       startTime: $mine.startTime, finishTime: $mine.finishTime, permanent: $permanent,
       firstRecoverabilityPoint: ($all[0].finishTime // null),
       backups: $all}' <<<"$raw") ||
    fail list "could not parse wal-g backup-list output"
  [ "$(jq -r .backupName <<<"$DETAILS")" != null ] ||
    fail list "wal-g backup-push succeeded but no backup with pgstewardId=$ID is listed"
  fault_point list
}

main() {
  parse_args "$@"
  pg_client_env
  STARTED_AT=$(now_utc)
  if result_exists "$KIND" "$ID"; then already_done; fi
  step_lock
  step_check
  step_backup_push
  step_retention
  step_list
  local name
  name=$(jq -r .backupName <<<"$DETAILS")
  if [ -n "$RETENTION_ERROR" ]; then
    log "ERROR: backup $ID ($name) taken, but retention failed: $RETENTION_ERROR"
    record succeeded retention "backup $name taken; retention failed: $RETENTION_ERROR"
    cat "$(result_path "$KIND" "$ID")"
    exit 6
  fi
  record succeeded finished "backup $name taken"
  log "backup $ID succeeded: $name ($(jq '.backups | length' <<<"$DETAILS") backups in storage)"
  cat "$(result_path "$KIND" "$ID")"
}

main "$@"
