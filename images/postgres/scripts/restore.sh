#!/usr/bin/env bash
# restore.sh — point-in-time restores from WAL-G backups, crash-safe.
#
#   restore.sh auto
#   restore.sh bootstrap|clone|in-place [--id ID] [--target T] [--target-value V]
#                                       [--backup NAME|LATEST] [--source-prefix P]
#
# `auto` is what entrypoint.sh calls at every start, before the server starts.
# It first resumes an unfinished restore (the progress file below), then looks
# at the request in the environment (PGSTEWARD_RESTORE_ID, _MODE, _TARGET,
# _TARGET_VALUE, _BACKUP, _SOURCE_PREFIX; docs/image-contract.md). With nothing
# to do it returns at once. The explicit modes take the same values as flags
# (the environment supplies defaults) and are for `docker run` users and for
# running a restore by hand.
#
# Modes:
#   bootstrap  PGDATA is empty: restore this instance's own storage into it
#              (instead of initdb).
#   clone      PGDATA is empty: restore another instance's storage, at the base
#              prefix --source-prefix (s3://…, gs://…, azure://… or a path).
#   in-place   PGDATA holds a database: replace it by a restore, keeping the old
#              one until the restore is verified, and putting it back on any
#              failure. Needs an id. Normally requested through the pod's
#              environment, so it runs at start before the server does. When
#              run by hand while the server runs, it stops the server (pg_ctl
#              stop -m fast) and leaves it stopped; start it again afterwards
#              (in a container whose main process is that server, the
#              container ends when it stops and the next start resumes the
#              restore from the progress file).
#
# Targets: latest (the end of the archive), time (RFC 3339), lsn (X/Y), xid,
# name (a pg_create_restore_point name) or immediate (the end of the backup).
# Backup: a backup name, or LATEST (default), which means: for latest and
# immediate, the newest backup; for time and lsn, the newest backup that ended
# before the target; for xid and name (whose position in the WAL is unknown
# until replay), the oldest backup kept.
#
# Steps, in order (in-place; bootstrap and clone have `prepare` instead of
# stop-server and snapshot, and no cleanup). Each is recorded in the progress
# file $PGSTEWARD_STATE_DIR/restore-progress.json and in the result file
# before it starts:
#   validate     storage, request, backup list, target vs. backups, archive
#                continuity for `latest`. Refusals here change nothing.
#   check-space  the fresh PGDATA needs the backup's size plus headroom
#                (10% + 128 MiB, or PGSTEWARD_RESTORE_HEADROOM_BYTES); refuses
#                with the exact numbers.
#   stop-server  pg_ctl stop -m fast if the server runs.
#   snapshot     rename PGDATA to $PGDATA.pre-restore (same filesystem, no
#                copy) and create an empty PGDATA.
#   prepare      create the empty PGDATA (bootstrap, clone).
#   fetch        wal-g backup-fetch into the empty PGDATA.
#   configure    recovery.signal, and restore_command plus the target settings
#                (recovery_target_action = promote) in postgresql.auto.conf.
#   recover      start the server with pg_ctl, socket only, archiving held back
#                (archive_command = ''), and wait until it has promoted. Its
#                log is $PGSTEWARD_STATE_DIR/restore-<id>.log.
#   verify       the new timeline's history file must show that recovery
#                stopped at the requested target (PostgreSQL itself refuses to
#                promote when the archive ends before a time/lsn/xid/name
#                target). From here on the restore is committed.
#   finalize     stop the server, remove the recovery settings. The WAL of the
#                new timeline is archived when the server next starts.
#   cleanup      remove $PGDATA.pre-restore.
# On any failure before `verify` passed: `rollback` stops the server, moves
# the failed PGDATA aside, renames the snapshot back and deletes the failed
# copy (bootstrap/clone: empties PGDATA again). The old database then starts
# exactly as before.
#
# Crash safety: after a kill at any point, `auto` (the next start) reads the
# progress file and goes on from the recorded step; every step can be run
# again. A restore interrupted more than PGSTEWARD_RESTORE_MAX_ATTEMPTS times
# (default 3) before it was verified is rolled back instead. Once verified it
# only goes forward. PGDATA is never left half-restored for the server to
# start: until the progress file is gone, `auto` exits non-zero unless it
# finished or rolled back.
#
# A request id that has a result is never run again. The result is
# $PGSTEWARD_STATE_DIR/results/restore/<id>.json (docs/image-contract.md);
# details: mode, target, targetValue, backupName, timeline, reachedLsn.
# Explicit modes print it on stdout at the end.
#
# Exit codes:
#   0  restored (or nothing to do, or the id already succeeded)
#   1  the restore failed; in-place: rolled back, the old data is in place
#   2  bad input, refused before anything was stopped or moved (unknown
#      backup, target before the first backup, no backups, gap in the archive
#      for `latest`, PGDATA not as the mode needs, a leftover snapshot)
#   3  no backup storage configured
#   4  not enough free disk space (the message has the numbers)
#   5  another restore holds the lock
set -Eeuo pipefail
# shellcheck source=images/postgres/scripts/pgsteward-lib.sh
. "$(dirname "$0")/pgsteward-lib.sh"

readonly KIND=restore
readonly PROGRESS="$PGSTEWARD_STATE_DIR/restore-progress.json"
readonly SNAPSHOT="$PGDATA.pre-restore"
readonly FAILED_COPY="$PGDATA.failed-restore"
readonly SEGMENT_BYTES=$((16 * 1024 * 1024)) # WAL-G's and initdb's default
readonly STEPS_IN_PLACE=(validate check-space stop-server snapshot fetch configure recover verify finalize cleanup)
readonly STEPS_EMPTY=(validate check-space prepare fetch configure recover verify finalize)
readonly RECOVERY_KEYS='restore_command|recovery_target|recovery_target_[a-z_]+|recovery_end_command'

# The request and what the steps learned, saved in the progress file.
R_ID='' R_MODE='' R_TARGET='' R_VALUE='' R_BACKUP='' R_SOURCE=''
B_NAME='' B_SIZE=0 B_WAL_FILE='' B_FINISH_LSN='' B_FINISH_TIME=''
STARTED_AT='' STEP='' ATTEMPTS=0 COMMITTED=false SNAPSHOT_TAKEN=false TIMELINE='' REACHED_LSN='' FAILURE=''
EXPLICIT=false

# --- small helpers ------------------------------------------------------------

lsn_num() { # X/Y → integer
  local hi=${1%%/*} lo=${1##*/}
  printf '%d\n' "$(((16#$hi << 32) + 16#$lo))"
}

usec_of() { date -u -d "$1" +%s%6N; }

seg_no() { # 24-hex WAL file name → segment number (16 MiB segments)
  printf '%d\n' "$((16#${1:8:8} * 256 + 16#${1:16:8}))"
}

lsn_seg() { printf '%d\n' "$(($(lsn_num "$1") / SEGMENT_BYTES))"; }

# elapsed_since EPOCHREALTIME: seconds since then, two decimals.
elapsed_since() {
  local now=$EPOCHREALTIME
  awk -v a="$1" -v b="$now" 'BEGIN { printf "%.2f", b - a }'
}

is_empty_dir() { [ -d "$1" ] && [ -z "$(ls -A "$1")" ]; }

# walg_storage ARGS...: wal-g against the storage the backup comes from.
walg_storage() {
  if [ "$R_MODE" = clone ]; then
    walg_from "$R_SOURCE" "$@"
  else
    walg "$@"
  fi
}

details_json() {
  jq -cn --arg mode "$R_MODE" --arg target "$R_TARGET" --arg value "$R_VALUE" --arg backup "$B_NAME" \
    --arg tl "$TIMELINE" --arg lsn "$REACHED_LSN" \
    '{mode: $mode, target: $target, targetValue: (if $value == "" then null else $value end),
      backupName: (if $backup == "" then null else $backup end),
      timeline: (if $tl == "" then null else ($tl | tonumber) end),
      reachedLsn: (if $lsn == "" then null else $lsn end)}'
}

record() { # OUTCOME STEP MESSAGE
  record_result "$KIND" "$R_ID" "$1" "$2" "$3" "$(details_json)" "$STARTED_AT"
}

save_progress() {
  local json
  json=$(jq -cn --arg id "$R_ID" --arg mode "$R_MODE" --arg target "$R_TARGET" --arg value "$R_VALUE" \
    --arg backup "$R_BACKUP" --arg source "$R_SOURCE" --arg bname "$B_NAME" --argjson bsize "$B_SIZE" \
    --arg bwal "$B_WAL_FILE" --arg bfinish "$B_FINISH_LSN" --arg bftime "$B_FINISH_TIME" \
    --arg started "$STARTED_AT" --arg step "$STEP" --argjson attempts "$ATTEMPTS" \
    --argjson committed "$COMMITTED" --argjson snapshot "$SNAPSHOT_TAKEN" --arg tl "$TIMELINE" \
    --arg lsn "$REACHED_LSN" --arg failure "$FAILURE" --arg pgdata "$PGDATA" \
    '{id: $id, mode: $mode, target: $target, targetValue: $value, backup: $backup, sourcePrefix: $source,
      backupName: $bname, backupSize: $bsize, backupWalFile: $bwal, backupFinishLsn: $bfinish,
      backupFinishTime: $bftime, startedAt: $started, step: $step, attempts: $attempts,
      committed: $committed, snapshotTaken: $snapshot, timeline: $tl, reachedLsn: $lsn,
      failure: $failure, pgdata: $pgdata}')
  write_json_atomically "$PROGRESS" "$json"
}

load_progress() {
  local p=$PROGRESS
  R_ID=$(jq -r .id "$p") R_MODE=$(jq -r .mode "$p") R_TARGET=$(jq -r .target "$p")
  R_VALUE=$(jq -r .targetValue "$p") R_BACKUP=$(jq -r .backup "$p") R_SOURCE=$(jq -r .sourcePrefix "$p")
  B_NAME=$(jq -r .backupName "$p") B_SIZE=$(jq -r .backupSize "$p") B_WAL_FILE=$(jq -r .backupWalFile "$p")
  B_FINISH_LSN=$(jq -r .backupFinishLsn "$p") B_FINISH_TIME=$(jq -r .backupFinishTime "$p")
  STARTED_AT=$(jq -r .startedAt "$p") STEP=$(jq -r .step "$p") ATTEMPTS=$(jq -r .attempts "$p")
  COMMITTED=$(jq -r .committed "$p") SNAPSHOT_TAKEN=$(jq -r .snapshotTaken "$p")
  TIMELINE=$(jq -r .timeline "$p") REACHED_LSN=$(jq -r .reachedLsn "$p") FAILURE=$(jq -r .failure "$p")
  [ "$(jq -r .pgdata "$p")" = "$PGDATA" ] ||
    die "the unfinished restore in $p was for PGDATA $(jq -r .pgdata "$p"), not $PGDATA; resolve by hand" 1
}

# enter STEP: record that STEP starts (progress + result), then the fault hook.
enter() {
  STEP=$1
  save_progress
  record running "$STEP" "restore $R_ID: $STEP"
  log "restore $R_ID: step $STEP"
  fault_point "$STEP"
}

# finish_result OUTCOME MESSAGE EXIT: final result, progress gone, exit.
finish_result() {
  local outcome=$1 message=$2 code=$3
  record "$outcome" "$STEP" "$message"
  rm -f "$PROGRESS"
  if [ "$code" -eq 0 ]; then log "restore $R_ID: $message"; else log "ERROR: restore $R_ID: $message"; fi
  if $EXPLICIT; then cat "$(result_path "$KIND" "$R_ID")"; fi
  exit "$code"
}

# refuse CODE MESSAGE: nothing was changed yet (validate, check-space,
# stop-server, prepare): record the failure and exit with CODE.
refuse() {
  finish_result failed "$2" "$1"
}

# --- the request ----------------------------------------------------------------

request_from_env() {
  R_ID=${PGSTEWARD_RESTORE_ID:-}
  R_TARGET=${PGSTEWARD_RESTORE_TARGET:-latest}
  R_VALUE=${PGSTEWARD_RESTORE_TARGET_VALUE:-}
  R_BACKUP=${PGSTEWARD_RESTORE_BACKUP:-LATEST}
  R_SOURCE=${PGSTEWARD_RESTORE_SOURCE_PREFIX:-}
}

parse_args() {
  while [ $# -gt 0 ]; do
    if [ $# -lt 2 ]; then die "option $1 needs a value" 2; fi
    case "$1" in
      --id) R_ID=$2 ;;
      --target) R_TARGET=$2 ;;
      --target-value) R_VALUE=$2 ;;
      --backup) R_BACKUP=$2 ;;
      --source-prefix) R_SOURCE=$2 ;;
      *) die "unknown option $1" 2 ;;
    esac
    shift 2
  done
}

# resolve_id: the request id (bootstrap and clone default to the mode's name).
resolve_id() {
  if [ -z "$R_ID" ]; then
    case "$R_MODE" in
      in-place) die "an in-place restore needs a request id (PGSTEWARD_RESTORE_ID or --id)" 2 ;;
      *) R_ID=$R_MODE ;;
    esac
  fi
  [[ $R_ID =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$ ]] || die "invalid restore id '$R_ID' (letters, digits, . _ -)" 2
}

# check_request: the parts of validation that need no storage. Exits 2/3.
check_request() {
  STARTED_AT=$(now_utc) STEP=validate
  case "$R_TARGET" in
    latest | immediate) R_VALUE='' ;;
    time)
      [ -n "$R_VALUE" ] || refuse 2 "target time needs a value (RFC 3339, e.g. 2026-11-21T10:00:00Z)"
      date -u -d "$R_VALUE" +%s >/dev/null 2>&1 || refuse 2 "target time '$R_VALUE' is not a time (use RFC 3339, e.g. 2026-11-21T10:00:00Z)"
      [ "$(usec_of "$R_VALUE")" -le "$(date -u +%s%6N)" ] || refuse 2 "target time '$R_VALUE' is in the future"
      ;;
    lsn) [[ $R_VALUE =~ ^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$ ]] || refuse 2 "target lsn '$R_VALUE' is not an LSN (X/Y, e.g. 0/3000060)" ;;
    xid) [[ $R_VALUE =~ ^[0-9]+$ ]] || refuse 2 "target xid '$R_VALUE' is not a transaction id (a number)" ;;
    name)
      if [ -z "$R_VALUE" ] || [ "${#R_VALUE}" -ge 64 ]; then
        refuse 2 "target name needs a restore point name (1 to 63 characters)"
      fi
      ;;
    *) refuse 2 "unknown target '$R_TARGET' (latest, time, lsn, xid, name or immediate)" ;;
  esac
  [[ $R_BACKUP =~ ^[A-Za-z0-9_.-]+$ ]] || refuse 2 "invalid backup name '$R_BACKUP'"
  if [ "$R_MODE" = clone ]; then
    [ -n "$R_SOURCE" ] || refuse 2 "a clone needs the source's base prefix (PGSTEWARD_RESTORE_SOURCE_PREFIX or --source-prefix)"
    storage_var_for_prefix "$R_SOURCE" >/dev/null || refuse 2 "cannot tell the storage kind of source prefix '$R_SOURCE' (s3://, gs://, azure:// or a path)"
  else
    storage_configured || refuse 3 "no backup storage configured: set one of ${STORAGE_PREFIX_VARS[*]}"
  fi
}

# --- steps ------------------------------------------------------------------------

# select_backup LIST_JSON: sets B_* from the backup list, or refuses.
select_backup() {
  local list=$1 count chosen='' row target_usec target_lsn first_finish names
  count=$(jq length <<<"$list")
  [ "$count" -gt 0 ] || refuse 2 "there are no backups in the storage to restore from"
  # Oldest first, with numeric LSNs and microsecond times for comparisons.
  list=$(jq -c "$JQ_LSN"'map(.start_time |= us | .finish_time |= us) | sort_by(.start_time)' <<<"$list")
  first_finish=$(jq -r '.[0].finish_time' <<<"$list")
  names=$(jq -r 'map(.backup_name) | join(", ")' <<<"$list")
  if [ "$R_BACKUP" != LATEST ]; then
    chosen=$(jq -c --arg n "$R_BACKUP" 'map(select(.backup_name == $n)) | .[0] // empty' <<<"$list")
    [ -n "$chosen" ] || refuse 2 "backup '$R_BACKUP' does not exist; the storage has: $names"
  fi
  case "$R_TARGET" in
    time)
      target_usec=$(usec_of "$R_VALUE")
      if [ "$target_usec" -lt "$(usec_of "$first_finish")" ]; then
        refuse 2 "target time $R_VALUE is before the end of the first backup ($first_finish); the earliest time you can restore to is $first_finish"
      fi
      if [ -z "$chosen" ]; then
        while read -r row; do
          [ "$(usec_of "$(jq -r .finish_time <<<"$row")")" -le "$target_usec" ] && chosen=$row
        done < <(jq -c '.[]' <<<"$list")
      elif [ "$target_usec" -lt "$(usec_of "$(jq -r .finish_time <<<"$chosen")")" ]; then
        refuse 2 "target time $R_VALUE is before the end of backup $R_BACKUP ($(jq -r .finish_time <<<"$chosen")); choose an older backup or LATEST"
      fi
      ;;
    lsn)
      target_lsn=$(lsn_num "$R_VALUE")
      if [ -z "$chosen" ]; then
        while read -r row; do
          [ "$(lsn_num "$(jq -r .finish_lsn_text <<<"$row")")" -le "$target_lsn" ] && chosen=$row
        done < <(jq -c "$JQ_LSN"'.[] | .finish_lsn_text = (.finish_lsn | lsn)' <<<"$list")
        [ -n "$chosen" ] || refuse 2 "target lsn $R_VALUE is before the end of the first backup ($(jq -r "$JQ_LSN"'.[0].finish_lsn | lsn' <<<"$list")); no backup can reach it"
      else
        row=$(jq -r "$JQ_LSN"'.finish_lsn | lsn' <<<"$chosen")
        [ "$target_lsn" -ge "$(lsn_num "$row")" ] ||
          refuse 2 "target lsn $R_VALUE is before the end of backup $R_BACKUP ($row); choose an older backup or LATEST"
      fi
      ;;
    xid | name) [ -n "$chosen" ] || chosen=$(jq -c '.[0]' <<<"$list") ;;
    *) [ -n "$chosen" ] || chosen=$(jq -c '.[-1]' <<<"$list") ;;
  esac
  B_NAME=$(jq -r .backup_name <<<"$chosen")
  B_SIZE=$(jq -r '.uncompressed_size // 0' <<<"$chosen")
  B_WAL_FILE=$(jq -r .wal_file_name <<<"$chosen")
  B_FINISH_LSN=$(jq -r "$JQ_LSN"'.finish_lsn | lsn' <<<"$chosen")
  B_FINISH_TIME=$(jq -r .finish_time <<<"$chosen")
  log "restore $R_ID: using backup $B_NAME (ended $B_FINISH_TIME at $B_FINISH_LSN) for target $R_TARGET${R_VALUE:+ $R_VALUE}"
}

# check_archive_continuity: for target latest, the WAL from the backup's start
# to the end of the archive, along the timeline recovery will follow, must
# have no missing segment; otherwise PostgreSQL would stop at the gap and
# promote there, silently losing everything after it.
check_archive_continuity() {
  local show tli final chain='' t parent lo hi seg missing next_switch start end
  show=$(walg_storage wal-show --detailed-json --without-backups) ||
    refuse 1 "wal-g wal-show failed; cannot check the archive for gaps (storage unreachable?)"
  [ -n "$show" ] || show='[]'
  tli=$((16#${B_WAL_FILE:0:8}))
  final=$(jq '[.[].id] | max // 0' <<<"$show")
  [ "$final" -ge "$tli" ] || refuse 2 "the archive holds no WAL for the timeline of backup $B_NAME; it cannot be restored to latest"
  # Walk back from the newest timeline to the backup's along parent links.
  t=$final
  while [ "$t" -gt "$tli" ]; do
    chain="$t $chain"
    parent=$(jq --argjson t "$t" '.[] | select(.id == $t) | .parent_id' <<<"$show")
    if [ -z "$parent" ] || [ "$parent" -eq 0 ]; then
      log "WARNING: timeline $t has no history in the archive; cannot check its continuity"
      return 0
    fi
    t=$parent
  done
  [ "$t" -eq "$tli" ] || refuse 2 "the newest timeline in the archive ($final) does not descend from backup $B_NAME's timeline ($tli)"
  chain="$tli $chain"
  local -a tls
  read -ra tls <<<"$chain"
  local i
  for ((i = 0; i < ${#tls[@]}; i++)); do
    t=${tls[$i]}
    row=$(jq -c --argjson t "$t" '.[] | select(.id == $t)' <<<"$show")
    [ -n "$row" ] || refuse 2 "the archive has no WAL segments for timeline $t, which recovery must follow"
    if [ "$i" -eq 0 ]; then lo=$(seg_no "$B_WAL_FILE"); else lo=$(lsn_seg "$(lsn_text "$(jq -r .switch_point_lsn <<<"$row")")"); fi
    if [ "$i" -lt $((${#tls[@]} - 1)) ]; then
      next_switch=$(jq -r --argjson t "${tls[$((i + 1))]}" '.[] | select(.id == $t) | .switch_point_lsn' <<<"$show")
      hi=$(lsn_seg "$(lsn_text "$next_switch")")
    else
      hi=$(seg_no "$(jq -r .end_segment <<<"$row")")
    fi
    start=$(seg_no "$(jq -r .start_segment <<<"$row")")
    end=$(seg_no "$(jq -r .end_segment <<<"$row")")
    missing=''
    if [ "$start" -gt "$lo" ]; then missing="$(printf '%08X%08X%08X' "$t" $((lo / 256)) $((lo % 256)))"; fi
    if [ "$end" -lt "$hi" ]; then missing="$missing $(printf '%08X%08X%08X' "$t" $((hi / 256)) $((hi % 256)))"; fi
    while read -r seg; do
      [ -n "$seg" ] || continue
      if [ "$(seg_no "$seg")" -ge "$lo" ] && [ "$(seg_no "$seg")" -le "$hi" ]; then missing="$missing $seg"; fi
    done < <(jq -r '.missing_segments[]?' <<<"$row")
    missing=${missing# }
    if [ -n "$missing" ]; then
      refuse 2 "gap in the WAL archive: segment(s) $missing missing between backup $B_NAME and the end of the archive; a restore to latest would stop at the gap and lose everything after it. Restore to a time/lsn before the gap, or restore the missing segments"
    fi
  done
  log "restore $R_ID: archive continuous from $B_WAL_FILE along timeline(s) $chain"
}

step_validate() {
  local list
  if [ "$R_MODE" = in-place ]; then
    [ -f "$PGDATA/PG_VERSION" ] || refuse 2 "in-place restore: $PGDATA holds no database (use bootstrap for an empty PGDATA)"
    if [ -e "$SNAPSHOT" ]; then
      refuse 2 "a snapshot from an earlier restore exists at $SNAPSHOT and no restore is in progress; inspect it, then remove or rename it"
    fi
  elif [ -e "$PGDATA" ] && ! is_empty_dir "$PGDATA"; then
    refuse 2 "$R_MODE restore: $PGDATA is not empty; a $R_MODE restore only fills an empty PGDATA (use in-place)"
  fi
  list=$(walg_storage backup-list --json --detail) ||
    refuse 1 "wal-g backup-list failed; the storage is unreachable or refuses the credentials"
  [ -n "$list" ] || list='[]'
  select_backup "$list"
  if [ "$R_TARGET" = latest ]; then check_archive_continuity; fi
}

step_check_space() {
  local dir free headroom need
  dir=$(dirname "$PGDATA")
  mkdir -p "$dir"
  free=$(free_bytes "$dir")
  headroom=${PGSTEWARD_RESTORE_HEADROOM_BYTES:-$((B_SIZE / 10 + 128 * 1024 * 1024))}
  need=$((B_SIZE + headroom))
  if [ "$free" -lt "$need" ]; then
    refuse 4 "not enough free disk space in $dir: the restore needs $need bytes ($(human_bytes "$need"): backup $B_NAME unpacks to $B_SIZE bytes, plus $headroom bytes headroom for WAL replay) but only $free bytes ($(human_bytes "$free")) are free; free up space or grow the volume"
  fi
  log "restore $R_ID: disk space ok: need $need bytes, $free free in $dir"
}

step_stop_server() {
  if server_running; then
    log "restore $R_ID: stopping the running server (fast shutdown); it stays stopped until the restore ends"
    pg_ctl -D "$PGDATA" stop -m fast -w -t "${PGSTEWARD_STOP_TIMEOUT:-300}" >&2 ||
      refuse 1 "could not stop the server; nothing was changed"
  fi
}

step_snapshot() {
  if [ ! -e "$SNAPSHOT" ]; then
    [ -f "$PGDATA/PG_VERSION" ] || die "neither $PGDATA nor $SNAPSHOT holds a database; resolve by hand" 1
    mv -T "$PGDATA" "$SNAPSHOT" || abort "could not rename $PGDATA to $SNAPSHOT (is PGDATA a mount point?)"
  fi
  SNAPSHOT_TAKEN=true
  save_progress
  fault_point snapshot:renamed
  mkdir -p "$PGDATA"
  chmod 700 "$PGDATA"
}

step_prepare() {
  mkdir -p "$PGDATA"
  chmod 700 "$PGDATA"
}

# wipe_fresh_pgdata: empty PGDATA, but only when it is known not to hold the
# original database (in-place: the original is the snapshot).
wipe_fresh_pgdata() {
  if [ "$R_MODE" = in-place ]; then
    [ -f "$SNAPSHOT/PG_VERSION" ] || die "refusing to empty $PGDATA: the snapshot $SNAPSHOT is missing" 1
  fi
  [ -d "$PGDATA" ] || return 0
  find "$PGDATA" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
}

step_fetch() {
  if ! is_empty_dir "$PGDATA"; then
    log "restore $R_ID: emptying $PGDATA left by an interrupted fetch"
    wipe_fresh_pgdata
  fi
  log "restore $R_ID: wal-g backup-fetch $B_NAME into $PGDATA"
  walg_storage backup-fetch "$PGDATA" "$B_NAME" || abort "wal-g backup-fetch of $B_NAME failed (exit $?)"
  [ -f "$PGDATA/PG_VERSION" ] || abort "backup-fetch of $B_NAME finished but left no PG_VERSION in $PGDATA"
  chmod 700 "$PGDATA"
}

# sql_quote VALUE: a single-quoted configuration value.
sql_quote() { printf "'%s'" "${1//\'/\'\'}"; }

clean_recovery_settings() {
  local conf="$PGDATA/postgresql.auto.conf"
  [ -f "$conf" ] || return 0
  sed -i -E "/^[[:space:]]*($RECOVERY_KEYS)[[:space:]]*=/d; /^# pgsteward restore/d" "$conf"
}

step_configure() {
  local conf="$PGDATA/postgresql.auto.conf"
  clean_recovery_settings
  {
    echo "# pgsteward restore $R_ID: the settings below are removed when the restore ends"
    echo "restore_command = 'wal-restore.sh %f %p'"
    # immediate ends inside the backup's own timeline; the others follow the
    # newest timeline in the archive, as PostgreSQL does by default.
    if [ "$R_TARGET" = immediate ]; then
      echo "recovery_target_timeline = 'current'"
    else
      echo "recovery_target_timeline = 'latest'"
    fi
    echo "recovery_target_action = 'promote'"
    case "$R_TARGET" in
      time) echo "recovery_target_time = $(sql_quote "$(date -u -d "$R_VALUE" '+%Y-%m-%d %H:%M:%S.%6N+00')")" ;;
      lsn) echo "recovery_target_lsn = $(sql_quote "$R_VALUE")" ;;
      xid) echo "recovery_target_xid = $(sql_quote "$R_VALUE")" ;;
      name) echo "recovery_target_name = $(sql_quote "$R_VALUE")" ;;
      immediate) echo "recovery_target = 'immediate'" ;;
    esac
  } >>"$conf"
  : >"$PGDATA/recovery.signal"
}

recovery_log() { printf '%s/restore-%s.log\n' "$PGSTEWARD_STATE_DIR" "$R_ID"; }

# server_opts: how the entrypoint runs the server, but socket only, no
# logging collector, and with archiving held back until the restore is
# verified (archive_command = '' keeps every .ready file for later).
server_opts() {
  local -a o=(-c listen_addresses= -c "unix_socket_directories=$PGSTEWARD_RUN_DIR" -c logging_collector=off
    -c archive_command=)
  if [ -f "$PGSTEWARD_CONFIG_DIR/postgresql.conf" ]; then
    o+=(-c "config_file=$PGSTEWARD_CONFIG_DIR/postgresql.conf")
    [ -f "$PGSTEWARD_CONFIG_DIR/pg_hba.conf" ] && o+=(-c "hba_file=$PGSTEWARD_CONFIG_DIR/pg_hba.conf")
    [ -f "$PGSTEWARD_CONFIG_DIR/pg_ident.conf" ] && o+=(-c "ident_file=$PGSTEWARD_CONFIG_DIR/pg_ident.conf")
  fi
  printf '%q ' "${o[@]}"
}

# fatal_lines OFFSET: the server's FATAL/PANIC lines written after OFFSET.
fatal_lines() {
  # Only the server's own processes (no user@database in the line prefix).
  tail -c +"$(($1 + 1))" "$(recovery_log)" 2>/dev/null | grep -E '\[[0-9]+\] (FATAL|PANIC):' | tail -n 3 |
    sed -E 's/^.*(FATAL|PANIC):[[:space:]]*/\1: /' | awk 'NR > 1 { printf "; " } { printf "%s", $0 }' || true
}

step_recover() {
  local logfile offset state deadline down timeout=${PGSTEWARD_RESTORE_TIMEOUT:-0}
  logfile=$(recovery_log)
  offset=$(stat -c %s "$logfile" 2>/dev/null || echo 0)
  if server_running; then
    log "restore $R_ID: the recovery server from an interrupted attempt is still running; waiting for it"
  else
    mkdir -p "$PGSTEWARD_RUN_DIR"
    log "restore $R_ID: starting recovery (server log: $logfile)"
    # fd 8 is our lock: the server must not inherit it and outlive us with it.
    PGSTEWARD_WAL_RESTORE_PREFIX=$([ "$R_MODE" = clone ] && printf '%s' "$R_SOURCE" || true) \
      pg_ctl -D "$PGDATA" -l "$logfile" -W -o "$(server_opts)" start 8>&- >&2 ||
      abort "pg_ctl could not start the recovery server; see $logfile"
  fi
  deadline=$((SECONDS + timeout))
  down=0
  while :; do
    sleep 0.2
    # pg_ctl -W returns before the postmaster has written its pid file, so
    # "not running" counts only when it is seen five times in a row.
    if server_running; then
      down=0
    else
      down=$((down + 1))
      [ "$down" -lt 5 ] || abort "recovery failed: $(fatal_lines "$offset")"
      continue
    fi
    # Line 8 of postmaster.pid is the server's state: "standby" while it
    # replays, "ready" once it has promoted (read, not asked: a connection
    # attempt during recovery would only add noise to the log).
    state=$(sed -n 8p "$PGDATA/postmaster.pid" 2>/dev/null | tr -d '[:space:]' || true)
    if [ "$state" = ready ] && [ "$(psql -XAtq -c 'select pg_is_in_recovery()' 2>/dev/null || true)" = f ]; then
      break
    fi
    if [ "$timeout" -gt 0 ] && [ "$SECONDS" -ge "$deadline" ]; then
      abort "recovery did not finish within PGSTEWARD_RESTORE_TIMEOUT=${timeout}s"
    fi
  done
  grep -E 'recovery stopping|redo done|selected new timeline|archive recovery complete' \
    <(tail -c +"$((offset + 1))" "$logfile") | sed 's/^/  recovery: /' >&2 || true
}

step_verify() {
  local hist line reason switch tli backup_tli ok=false
  hist=$(find "$PGDATA/pg_wal" -maxdepth 1 -name '*.history' -printf '%f\n' | sort | tail -n1)
  [ -n "$hist" ] || abort "recovery ended without a new timeline; the server did not promote"
  tli=$((16#${hist%.history}))
  backup_tli=$((16#${B_WAL_FILE:0:8}))
  [ "$tli" -gt "$backup_tli" ] || abort "recovery ended on timeline $tli, not a new one after backup $B_NAME's ($backup_tli)"
  line=$(grep -v '^#' "$PGDATA/pg_wal/$hist" | awk -F'\t' 'NF >= 3' | tail -n1)
  switch=$(cut -f2 <<<"$line")
  reason=$(cut -f3- <<<"$line")
  case "$R_TARGET" in
    latest) [ "$reason" = "no recovery target specified" ] && ok=true ;;
    immediate) [ "$reason" = "reached consistency" ] && ok=true ;;
    time) [[ $reason =~ ^(before|after)\ [0-9]{4}-[0-9]{2}-[0-9]{2} ]] && ok=true ;;
    lsn) [[ $reason =~ ^(before|after)\ LSN\  ]] && ok=true ;;
    xid) [[ $reason =~ ^(before|after)\ transaction\ ([0-9]+)$ ]] && [ "${BASH_REMATCH[2]}" = "$R_VALUE" ] && ok=true ;;
    name) [ "$reason" = "at restore point \"$R_VALUE\"" ] && ok=true ;;
  esac
  $ok || abort "recovery stopped at '$reason' (LSN $switch), which is not the requested target $R_TARGET${R_VALUE:+ $R_VALUE}"
  [ "$(lsn_num "$switch")" -ge "$(lsn_num "$B_FINISH_LSN")" ] ||
    abort "recovery stopped at $switch, before backup $B_NAME became consistent ($B_FINISH_LSN)"
  TIMELINE=$tli REACHED_LSN=$switch COMMITTED=true
  save_progress
  log "restore $R_ID: verified: stopped $reason at $switch, new timeline $tli"
}

step_finalize() {
  if server_running; then
    pg_ctl -D "$PGDATA" stop -m fast -w -t "${PGSTEWARD_STOP_TIMEOUT:-300}" >&2
  fi
  clean_recovery_settings
  rm -f "$PGDATA/recovery.signal"
}

step_cleanup() {
  if [ -e "$SNAPSHOT" ]; then
    log "restore $R_ID: removing the snapshot $SNAPSHOT"
    rm -rf "$SNAPSHOT"
  fi
}

# --- failure and rollback ------------------------------------------------------------

# abort MESSAGE: a failure after something changed. Before the restore was
# verified that means rollback; after, it means stop and let a person look
# (the restored data is good, only the finishing touches failed).
abort() {
  FAILURE=$1
  log "ERROR: restore $R_ID failed at step $STEP: $FAILURE"
  if $COMMITTED; then
    record running "$STEP" "restore $R_ID: $STEP failed after the restore was verified: $FAILURE; retried at next start"
    exit 1
  fi
  rollback
}

stop_any_server() {
  if server_running; then
    pg_ctl -D "$PGDATA" stop -m immediate -w -t 60 >&2 || true
  fi
}

rollback() {
  STEP=rollback
  save_progress
  record running rollback "restore $R_ID: rolling back: $FAILURE"
  fault_point rollback
  if [ "$R_MODE" != in-place ]; then
    stop_any_server
    wipe_fresh_pgdata
    finish_result failed "$FAILURE; $PGDATA was emptied again" 1
  fi
  if [ -e "$SNAPSHOT" ]; then
    [ -f "$SNAPSHOT/PG_VERSION" ] || die "the snapshot $SNAPSHOT holds no database; not touching anything" 1
    stop_any_server
    if [ -e "$PGDATA" ]; then
      rm -rf "$FAILED_COPY"
      mv -T "$PGDATA" "$FAILED_COPY"
    fi
    fault_point rollback:aside
    mv -T "$SNAPSHOT" "$PGDATA"
    fault_point rollback:restored
    rm -rf "$FAILED_COPY"
  elif [ -e "$FAILED_COPY" ]; then
    rm -rf "$FAILED_COPY"
  fi
  if $SNAPSHOT_TAKEN; then
    finish_result rolled_back "$FAILURE; rolled back, the previous data is back in place" 1
  fi
  finish_result failed "$FAILURE; nothing was changed" 1
}

# --- drivers ------------------------------------------------------------------------

run_step() {
  case "$1" in
    validate) step_validate ;;
    check-space) step_check_space ;;
    stop-server) step_stop_server ;;
    snapshot) step_snapshot ;;
    prepare) step_prepare ;;
    fetch) step_fetch ;;
    configure) step_configure ;;
    recover) step_recover ;;
    verify) step_verify ;;
    finalize) step_finalize ;;
    cleanup) step_cleanup ;;
    *) die "unknown step '$1'" 1 ;;
  esac
}

# run_from STEP: the steps of this mode, from STEP on, then success.
run_from() {
  local from=$1 started=false s t0
  local -a steps
  if [ "$R_MODE" = in-place ]; then steps=("${STEPS_IN_PLACE[@]}"); else steps=("${STEPS_EMPTY[@]}"); fi
  for s in "${steps[@]}"; do
    [ "$s" = "$from" ] && started=true
    $started || continue
    enter "$s"
    t0=$EPOCHREALTIME
    run_step "$s"
    log "restore $R_ID: step $s done in $(elapsed_since "$t0")s"
    fault_point "$s:done"
  done
  $started || die "unknown step '$from' in $PROGRESS; resolve by hand" 1
  STEP=finished
  finish_result succeeded "restored backup $B_NAME to $R_TARGET${R_VALUE:+ $R_VALUE}: timeline $TIMELINE at $REACHED_LSN" 0
}

take_lock() {
  mkdir -p "$PGSTEWARD_STATE_DIR"
  exec 8<>"$PGSTEWARD_STATE_DIR/restore.lock"
  flock -n 8 || die "another restore.sh is running for this instance" 5
}

resume() {
  load_progress
  load_secret_files
  log "restore $R_ID ($R_MODE) was interrupted at step $STEP; resuming"
  if [ "$STEP" = rollback ]; then
    rollback
  fi
  if ! $COMMITTED; then
    ATTEMPTS=$((ATTEMPTS + 1))
    if [ "$ATTEMPTS" -gt "${PGSTEWARD_RESTORE_MAX_ATTEMPTS:-3}" ]; then
      FAILURE="interrupted $ATTEMPTS times before it could be verified (last at step $STEP)"
      rollback
    fi
  fi
  run_from "$STEP"
}

start_new() {
  resolve_id
  if result_exists "$KIND" "$R_ID"; then
    log "restore $R_ID already has a result ($(jq -r .outcome "$(result_path "$KIND" "$R_ID")")); not running it again"
    if $EXPLICIT; then cat "$(result_path "$KIND" "$R_ID")"; fi
    [ "$(jq -r .outcome "$(result_path "$KIND" "$R_ID")")" = succeeded ] || exit 1
    exit 0
  fi
  check_request
  load_secret_files
  run_from validate
}

cmd_auto() {
  if [ -f "$PROGRESS" ]; then
    take_lock
    # resume exits; a finished restore does not fall through to the request.
    resume
  fi
  R_MODE=${PGSTEWARD_RESTORE_MODE:-}
  [ -n "$R_MODE" ] || exit 0
  request_from_env
  case "$R_MODE" in
    bootstrap | clone)
      [ -n "$R_ID" ] || R_ID=$R_MODE
      if [ -f "$PGDATA/PG_VERSION" ]; then
        # Already initialised (by this restore, or otherwise): nothing to do.
        if ! result_exists "$KIND" "$R_ID"; then
          log "restore $R_ID: PGDATA already holds a database; a $R_MODE restore only fills an empty PGDATA. Ignored."
          STARTED_AT=$(now_utc) STEP=validate
          record failed validate "PGDATA already holds a database; a $R_MODE restore only fills an empty PGDATA (use in-place)"
        fi
        exit 0
      fi
      if result_exists "$KIND" "$R_ID"; then
        die "restore $R_ID ($R_MODE) ended '$(jq -r .outcome "$(result_path "$KIND" "$R_ID")")': $(jq -r .message "$(result_path "$KIND" "$R_ID")"). PGDATA is empty and is not initialised over it. Set a new PGSTEWARD_RESTORE_ID to try again, or unset PGSTEWARD_RESTORE_MODE to start an empty database." 1
      fi
      ;;
    in-place)
      [ -n "$R_ID" ] || die "PGSTEWARD_RESTORE_MODE=in-place needs PGSTEWARD_RESTORE_ID" 2
      if result_exists "$KIND" "$R_ID"; then exit 0; fi
      ;;
    *) die "unknown PGSTEWARD_RESTORE_MODE '$R_MODE' (bootstrap, clone or in-place)" 2 ;;
  esac
  take_lock
  start_new
}

main() {
  local cmd=${1:-}
  [ $# -eq 0 ] || shift
  pg_client_env
  case "$cmd" in
    auto)
      [ $# -eq 0 ] || die "usage: restore.sh auto" 2
      cmd_auto
      ;;
    bootstrap | clone | in-place)
      EXPLICIT=true
      R_MODE=$cmd
      request_from_env
      parse_args "$@"
      take_lock
      if [ -f "$PROGRESS" ]; then
        die "an unfinished restore ($(jq -r '.id + " at step " + .step' "$PROGRESS")) must finish first: run restore.sh auto" 5
      fi
      start_new
      ;;
    *) die "usage: restore.sh auto | restore.sh bootstrap|clone|in-place [--id ID] [--target T] [--target-value V] [--backup NAME|LATEST] [--source-prefix P]" 2 ;;
  esac
}

main "$@"
