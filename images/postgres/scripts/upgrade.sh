#!/usr/bin/env bash
# upgrade.sh — major upgrades in place with `pg_upgrade --link`.
#
#   upgrade.sh auto   the entrypoint, before the server starts, as the data owner
#   upgrade.sh post   the entrypoint, in the background, once the upgraded
#                     server accepts connections
#
# auto is a fast no-op unless the volume holds a cluster of an older major than
# this image's ($PG_MAJOR): in $PGSTEWARD_VOLUME/<major>/docker, or in the
# pre-18 layout of the official image, $PGSTEWARD_VOLUME/data. Then it resumes
# an interrupted upgrade or starts one, and leaves the new cluster in $PGDATA,
# stopped, for the entrypoint to start. It runs under the operator
# (PGSTEWARD_MANAGED=1) and, for `docker run`, only with
# PGSTEWARD_ALLOW_MAJOR_UPGRADE=1. Sources older than PostgreSQL 13 are refused.
#
# Steps, each recorded in the state file ($PGSTEWARD_STATE_DIR/upgrade-state.json)
# and in the result file (kind `upgrade`, docs/image-contract.md) as reached:
#   preflight  read-only: consent, supported major, the old major's binaries in
#              the stash, pg_controldata (checksums, WAL segment size, state),
#              one filesystem, free space for the new catalog and work files
#   inspect    start and stop the old cluster on a private socket with the
#              stashed binaries: its install user, encoding and locale
#              (template0), and a clean shutdown after a crash
#   initdb     the new cluster in $PGSTEWARD_VOLUME/<new>/docker.pgsteward-upgrade,
#              matching encoding, locale, WAL segment size and checksums
#   check      pg_upgrade --check --link
#   link       pg_upgrade --link (the old global/pg_control becomes pg_control.old)
#   config     carry postgresql{,.auto}.conf, pg_hba.conf, pg_ident.conf and
#              other top-level files over; validate them with the new server
#   swap       rename the new cluster to $PGDATA; the old one stays where it is
#   start_new  POINT OF NO RETURN (recorded before the start): start the new
#              cluster privately, check its version, stop it
# post, once the server is up:
#   analyze            vacuumdb --analyze-in-stages --missing-stats-only, then
#                      --analyze-only (18+); --analyze-in-stages before 18
#   update_extensions  pg_upgrade's update_extensions.sql, when it wrote one
#   backup             backup.sh --id post-upgrade-<new> when storage is
#                      configured (WAL-G's prefix already ends in the new major)
#   cleanup            remove the old data directory; the old stash stays
#
# Failure before the point of no return rolls back: stray servers stopped,
# pg_control.old renamed back, the new directories removed; the old cluster is
# as it was (outcome rolled_back, with pg_upgrade's log excerpt). A request id
# that was rolled back is not retried: set a new PGSTEWARD_UPGRADE_ID. After a
# kill at any point the next `auto` finishes what `pg_upgrade --link` completed,
# and otherwise rolls the partial attempt back and starts again (at most 3
# attempts). After the point of no return only forward: a failing post step
# records `failed`, keeps the old directory and is retried by the next `post`.
#
# Fault injection (tests): PGSTEWARD_FAULT_AT=<step> kills this script with
# SIGKILL as the step begins, <step>:done after its work but before it is
# recorded as done.
#
# Exit codes:
#   0  nothing to do; auto: the new cluster is ready to start; post: finished
#   1  the upgrade failed: rolled back before the point of no return, failed
#      after it (the result says which), or a rolled-back id was requested again
#   2  refused before anything changed: no consent, downgrade, unsupported
#      major, missing or broken stash, standby, ambiguous or unusable layout
#   4  not enough free disk space (refused before anything changed)
#   5  another upgrade.sh holds the lock
set -Eeuo pipefail
PGSTEWARD_LOG_NAME=upgrade.sh
# shellcheck source=images/postgres/scripts/pgsteward-lib.sh
. "$(dirname "$0")/pgsteward-lib.sh"

KIND=upgrade
MIN_SOURCE_MAJOR=13
MAX_ATTEMPTS=3
STATE_FILE="$PGSTEWARD_STATE_DIR/upgrade-state.json"
LOCK_FILE="$PGSTEWARD_STATE_DIR/upgrade.lock"
START_TIMEOUT=${PGSTEWARD_UPGRADE_START_TIMEOUT:-3600}
OLD_PORT=50432
NEW_PORT=50433
PRE_STEPS=(inspect initdb check link config swap)
POST_STEPS=(analyze update_extensions backup cleanup)
# Top-level files of a data directory that belong to one cluster's life and
# are not carried over to the new one.
NOT_CARRIED=(PG_VERSION postmaster.pid postmaster.opts current_logfiles backup_label
  backup_label.old tablespace_map tablespace_map.old standby.signal recovery.signal
  recovery.done)

# The upgrade at hand: from detection, then from the state file.
ID='' FROM='' TO=$PG_MAJOR OLD_DATA='' NEW_DATA=$PGDATA NEW_TMP='' WORK='' RUN='' STARTED_AT=''
OLD_BINDIR='' NEW_BINDIR='' INSTALL_USER=''
STEP='' FAILED_STEP='' PGU_LOG='' CLEANED_UP=false SOCKET_DIR=''

# --- small helpers -------------------------------------------------------------

# data_major DIR: the major in DIR/PG_VERSION (9.6 → 9).
data_major() {
  local v
  v=$(head -n1 "$1/PG_VERSION" 2>/dev/null) || return 1
  v=${v%%.*}
  [[ $v =~ ^[0-9]+$ ]] || return 1
  printf '%s\n' "$v"
}

# binary_major BINARY: the major `BINARY --version` reports.
binary_major() {
  local out v
  out=$("$1" --version 2>&1) || return 1
  v=${out##* }
  v=${v%%[!0-9]*}
  [ -n "$v" ] || return 1
  printf '%s\n' "$v"
}

one_line() { tr '\n' ' ' <<<"$1" | tr -s ' ' | sed 's/ *$//' | cut -c1-"${2:-600}"; }

# last_lines FILE N: the last N non-empty lines of FILE.
last_lines() {
  [ -f "$1" ] || return 0
  grep -v '^[[:space:]]*$' "$1" | tail -n "$2" || true
}

sync_path() { sync "$1" 2>/dev/null || true; }

# parallel_jobs: for pg_upgrade and vacuumdb. nproc counts the node's CPUs,
# not the container's limit, and each vacuumdb job is a connection: at most 4.
parallel_jobs() {
  local n
  n=$(nproc 2>/dev/null || echo 1)
  [ "$n" -le 4 ] || n=4
  printf '%s\n' "$n"
}

# postmaster_pid DIR: the pid of a live postmaster whose data directory is DIR.
# The pid in postmaster.pid alone is not trusted (pids repeat in containers):
# the process must also have DIR as its working directory.
postmaster_pid() {
  local dir=$1 pid
  [ -f "$dir/postmaster.pid" ] || return 1
  pid=$(head -n1 "$dir/postmaster.pid" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] && [ "$pid" != $$ ] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  [ "$(readlink -f "/proc/$pid/cwd" 2>/dev/null)" = "$(readlink -f "$dir")" ] || return 1
  printf '%s\n' "$pid"
}

# stop_postmaster DIR SIGNAL: SIGINT is a fast shutdown (a shutdown
# checkpoint), SIGQUIT an immediate one (nothing written).
stop_postmaster() {
  local dir=$1 sig=$2 pid waited=0
  pid=$(postmaster_pid "$dir") || return 0
  log "stopping the server left running in $dir (pid $pid, SIG$sig)"
  kill "-$sig" "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    waited=$((waited + 1))
    if [ "$waited" -eq 120 ]; then
      log "the server in $dir ignored SIG$sig for 120 s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
}

open_socket_dir() {
  [ -z "$SOCKET_DIR" ] || return 0
  # Short: a Unix socket path must fit in 107 bytes.
  SOCKET_DIR=$(mktemp -d "${TMPDIR:-/tmp}/pgsteward-upgrade.XXXXXX" 2>/dev/null) ||
    SOCKET_DIR=$(mktemp -d "$PGSTEWARD_RUN_DIR/pgsteward-upgrade.XXXXXX")
  chmod 0700 "$SOCKET_DIR"
}

cleanup_on_exit() { [ -z "$SOCKET_DIR" ] || rm -rf "$SOCKET_DIR"; }

# The servers this script starts listen on no TCP address, only on a socket in
# a directory that only the data owner can enter; they trust that socket.
write_private_hba() {
  printf '# written by upgrade.sh for its private servers (socket only, mode 0700)\nlocal all all trust\n' \
    >"$RUN/pg_hba.conf"
}

private_server_options() { # PORT
  printf "%s" "-c listen_addresses='' -c unix_socket_directories='$SOCKET_DIR' -c port=$1 -c archive_mode=off -c hba_file='$RUN/pg_hba.conf'"
}

# --- state file and result -----------------------------------------------------

state_load() {
  local json
  json=$(cat "$STATE_FILE")
  IFS=$'\t' read -r ID FROM TO OLD_DATA NEW_DATA NEW_TMP WORK RUN STARTED_AT INSTALL_USER < <(
    jq -r '[.id, .fromMajor, .toMajor, .oldData, .newData, .newTmp, .work, .run, .startedAt,
      (.inspect.installUser // "")] | @tsv' <<<"$json")
  if jq -e '.done.cleanup' <<<"$json" >/dev/null; then CLEANED_UP=true; fi
}

# state_update FILTER [JQ ARGS...]
state_update() {
  local filter=$1 json
  shift
  json=$(jq -c "$@" "$filter" "$STATE_FILE")
  write_json_atomically "$STATE_FILE" "$json"
}

step_done() { jq -e --arg s "$1" '.done[$s] != null' "$STATE_FILE" >/dev/null 2>&1; }
# jq filters are single-quoted on purpose: $names are jq variables.
# shellcheck disable=SC2016
mark_done() { state_update '.done[$s] = $t' --arg s "$1" --arg t "$(now_utc)"; }
ponr_passed() { [ -f "$STATE_FILE" ] && jq -e '.pointOfNoReturn == true' "$STATE_FILE" >/dev/null 2>&1; }
inspected() { jq -r --arg k "$1" '.inspect[$k] // ""' "$STATE_FILE"; }

# interrupted_step: the first step before the point of no return not done.
interrupted_step() {
  local s
  for s in "${PRE_STEPS[@]}"; do
    step_done "$s" || {
      printf '%s\n' "$s"
      return 0
    }
  done
  printf 'start_new\n'
}

details_json() {
  jq -cn --argjson from "${FROM:-null}" --argjson to "$TO" --arg failed "$FAILED_STEP" \
    --arg log "$PGU_LOG" --argjson cleaned "$CLEANED_UP" \
    '{fromMajor: $from, toMajor: $to,
      failedStep: (if $failed == "" then null else $failed end),
      pgUpgradeLog: (if $log == "" then null else $log end),
      cleanedUp: $cleaned}'
}

# report OUTCOME STEP MESSAGE
report() {
  [ -n "$STARTED_AT" ] || STARTED_AT=$(now_utc)
  record_result "$KIND" "$ID" "$1" "$2" "$3" "$(details_json)" "$STARTED_AT"
}

# The state file of a finished (or rolled back) upgrade is kept with its logs.
finish_state() {
  [ -f "$STATE_FILE" ] || return 0
  mkdir -p "$WORK"
  mv -f "$STATE_FILE" "$WORK/state-$(date -u +%Y%m%dT%H%M%SZ).json"
  sync_path "$PGSTEWARD_STATE_DIR"
}

# refuse CODE STEP MESSAGE: nothing has changed; say why and stop.
refuse() {
  FAILED_STEP=$2
  [ -z "$ID" ] || report failed "$2" "$3"
  die "$3" "$1"
}

# fail STEP MESSAGE: a step failed. Before the point of no return, roll back.
fail() {
  local step=$1 msg=$2
  trap - ERR
  set +e
  FAILED_STEP=$step
  log "ERROR: step $step failed: $msg"
  if ponr_passed; then
    report failed "$step" "upgrade to PostgreSQL $TO failed at step $step after the point of no return: $msg. The new cluster is in $NEW_DATA; the old one ($OLD_DATA) shares its files and must not be started. The step is retried at the next start."
    exit 1
  fi
  if rollback_old; then
    report rolled_back "$step" "upgrade to PostgreSQL $TO failed at step $step: $msg. Rolled back: the PostgreSQL $FROM cluster in $OLD_DATA is as it was; run the PostgreSQL $FROM image again, or fix the cause and retry with a new PGSTEWARD_UPGRADE_ID."
    finish_state
  else
    report failed "$step" "upgrade to PostgreSQL $TO failed at step $step: $msg. The rollback did not complete (see the log); the next start tries it again."
  fi
  exit 1
}

on_error() {
  local rc=$1 line=$2
  # In a subshell or command substitution: let the parent handle it.
  [ "$BASHPID" = $$ ] || exit "$rc"
  if [ -n "$STEP" ] && [ -f "$STATE_FILE" ]; then
    fail "$STEP" "unexpected error (exit $rc at line $line of upgrade.sh)"
  fi
  log "ERROR: exit $rc at line $line"
  exit 1
}

take_lock() {
  mkdir -p "$PGSTEWARD_STATE_DIR"
  exec 9>>"$LOCK_FILE"
  flock -n 9 || die "another upgrade.sh is running (lock $LOCK_FILE)" 5
}

# --- rollback ------------------------------------------------------------------

stop_stray_servers() {
  stop_postmaster "$OLD_DATA" INT
  [ -z "$NEW_TMP" ] || stop_postmaster "$NEW_TMP" QUIT
  stop_postmaster "$NEW_DATA" QUIT
}

# Only ever called before the point of no return: the new cluster has never
# run as itself, so the old cluster's files are untouched and the new
# directories are ours (detection refuses a non-empty $PGDATA).
rollback_old() {
  local ok=0
  stop_stray_servers
  if [ ! -f "$OLD_DATA/global/pg_control" ] && [ -f "$OLD_DATA/global/pg_control.old" ]; then
    mv "$OLD_DATA/global/pg_control.old" "$OLD_DATA/global/pg_control" || ok=1
    sync_path "$OLD_DATA/global"
    log "rollback: renamed $OLD_DATA/global/pg_control.old back to pg_control"
  fi
  if [ ! -f "$OLD_DATA/global/pg_control" ]; then
    log "ERROR: rollback: $OLD_DATA/global/pg_control is missing"
    ok=1
  fi
  if [ -n "$NEW_TMP" ] && [ -e "$NEW_TMP" ]; then
    rm -rf "$NEW_TMP" || ok=1
    log "rollback: removed $NEW_TMP"
  fi
  if [ -e "$NEW_DATA/PG_VERSION" ] || [ -e "$NEW_DATA/global" ]; then
    rm -rf "$NEW_DATA" || ok=1
    log "rollback: removed $NEW_DATA"
  fi
  rmdir "$(dirname "$NEW_DATA")" 2>/dev/null || true
  sync_path "$PGSTEWARD_VOLUME"
  return "$ok"
}

# --- detection -----------------------------------------------------------------

candidate_dirs() {
  local d
  for d in "$PGSTEWARD_VOLUME"/*/docker "$PGSTEWARD_VOLUME/data"; do
    [ -s "$d/PG_VERSION" ] && printf '%s\n' "$d"
  done
  return 0
}

default_id() { printf 'upgrade-%s-to-%s\n' "$1" "$PG_MAJOR"; }

refuse_downgrade() {
  local d m
  while IFS= read -r d; do
    m=$(data_major "$d") || continue
    [ "$m" -gt "$PG_MAJOR" ] || continue
    FROM=$m
    ID=${PGSTEWARD_UPGRADE_ID:-$(default_id "$m")}
    refuse 2 preflight "the volume holds PostgreSQL $m data ($d), newer than this image's PostgreSQL $PG_MAJOR. A major version cannot be downgraded: run an image of PostgreSQL $m or newer (to go back, restore a backup into a new instance). Nothing was changed."
  done < <(candidate_dirs)
}

# find_old_cluster: the newest older-major cluster on the volume, if any.
find_old_cluster() {
  local d m best='' best_m=0 tie='' dead=''
  while IFS= read -r d; do
    [ "$d" != "$PGDATA" ] || continue
    m=$(data_major "$d") || continue
    [ "$m" -lt "$PG_MAJOR" ] || continue
    if [ ! -f "$d/global/pg_control" ]; then
      log "$d: PostgreSQL $m data that pg_upgrade --link already moved on (no global/pg_control); not a source"
      dead=$d
      continue
    fi
    if [ "$m" -gt "$best_m" ]; then
      best=$d best_m=$m tie=''
    elif [ "$m" -eq "$best_m" ]; then
      tie=$d
    fi
  done < <(candidate_dirs)
  if [ -z "$best" ]; then
    [ -z "$dead" ] || die "$dead holds PostgreSQL data whose global/pg_control was renamed by pg_upgrade --link, no upgrade is in progress and $PGDATA is empty. Refusing to initialise a new, empty cluster over it: if its upgrade never started the new server, rename global/pg_control.old back to global/pg_control and start again; otherwise move it away." 2
    return 1
  fi
  FROM=$best_m OLD_DATA=$best
  ID=${PGSTEWARD_UPGRADE_ID:-$(default_id "$FROM")}
  [[ $ID =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] || die "PGSTEWARD_UPGRADE_ID '$ID' is not a valid id (letters, digits, . _ -)" 2
  [ -z "$tie" ] || refuse 2 preflight "two PostgreSQL $FROM data directories on the volume ($best and $tie): keep the one in use, move the other off the volume. Nothing was changed."
}

# --- preflight (read-only) -----------------------------------------------------

check_request_id() {
  local path outcome step message from
  path=$(result_path "$KIND" "$ID")
  result_exists "$KIND" "$ID" || return 0
  IFS=$'\t' read -r outcome step message from < <(jq -r '[.outcome, .step, .message, (.details.fromMajor // "")] | @tsv' "$path")
  if [ "$outcome" = failed ] && [ "$step" = preflight ]; then
    return 0 # refused before anything changed: evaluate again
  fi
  if [ "$outcome" = rolled_back ] || [ "$outcome" = failed ]; then
    die "upgrade $ID already ran and ended '$outcome' at step $step: $message -- it is not run again under the same id. Run the PostgreSQL $FROM image, or fix the cause and set PGSTEWARD_UPGRADE_ID to a new id." 1
  fi
  [ "$from" = "$FROM" ] ||
    die "the id $ID already names another upgrade ($outcome, from PostgreSQL $from); set PGSTEWARD_UPGRADE_ID to a new id" 2
}

check_consent() {
  [ "${PGSTEWARD_MANAGED:-}" = 1 ] && return 0
  [ "${PGSTEWARD_ALLOW_MAJOR_UPGRADE:-}" = 1 ] && return 0
  refuse 2 preflight "the volume holds a PostgreSQL $FROM cluster ($OLD_DATA) and this image runs PostgreSQL $PG_MAJOR. Upgrading it (pg_upgrade --link, in place) is one-way once the new server has started, so it needs your consent: take a backup, then set PGSTEWARD_ALLOW_MAJOR_UPGRADE=1 to upgrade at this start -- or keep running the PostgreSQL $FROM image. Nothing was changed."
}

check_supported() {
  [ "$FROM" -ge "$MIN_SOURCE_MAJOR" ] ||
    refuse 2 preflight "the cluster in $OLD_DATA is PostgreSQL $FROM; pgsteward upgrades from PostgreSQL $MIN_SOURCE_MAJOR or newer. Upgrade it to $MIN_SOURCE_MAJOR+ first (pg_upgrade or dump and restore). Nothing was changed."
}

locate_old_binaries() {
  local stash="$PGSTEWARD_STASH_DIR/$FROM" b major share root
  [ -d "$stash" ] ||
    refuse 2 preflight "no PostgreSQL $FROM binaries in the stash ($stash). pg_upgrade needs the old major's binaries, which the PostgreSQL $FROM image copies there at each start: start the $FROM image once, stop it, then start this one. Nothing was changed."
  OLD_BINDIR=$(readlink -f "$stash/bin" 2>/dev/null || true)
  for b in postgres pg_ctl pg_controldata; do
    [ -n "$OLD_BINDIR" ] && [ -x "$OLD_BINDIR/$b" ] && continue
    refuse 2 preflight "the stash of PostgreSQL $FROM ($stash) is incomplete: bin/$b is missing. Start the PostgreSQL $FROM image once to stash its binaries again. Nothing was changed."
  done
  major=$(binary_major "$OLD_BINDIR/postgres") ||
    refuse 2 preflight "the stashed PostgreSQL $FROM server does not run in this image: $(one_line "$("$OLD_BINDIR/postgres" --version 2>&1 || true)"). Its shared libraries differ from this image's (pgsteward upgrades within one base OS). Nothing was changed."
  [ "$major" = "$FROM" ] ||
    refuse 2 preflight "the stash $stash holds PostgreSQL $major binaries, not $FROM. Nothing was changed."
  # PostgreSQL finds its lib and share directories relative to the (resolved)
  # binary; a stash that keeps the original layout makes that work.
  root=$(readlink -f "$stash")
  if [ -x "$OLD_BINDIR/pg_config" ]; then
    share=$("$OLD_BINDIR/pg_config" --sharedir 2>/dev/null || true)
    case "$share" in
      "$root"/*) ;;
      *) log "WARNING: the stashed PostgreSQL $FROM binaries look for their share directory in $share, outside the stash" ;;
    esac
  fi
}

locate_new_binaries() {
  local pgu
  pgu=$(command -v pg_upgrade) || refuse 1 preflight "pg_upgrade is not on PATH: this image is incomplete"
  NEW_BINDIR=$(dirname "$(readlink -f "$pgu")")
  [ "$(binary_major "$NEW_BINDIR/postgres")" = "$PG_MAJOR" ] ||
    refuse 1 preflight "$NEW_BINDIR/postgres is not PostgreSQL $PG_MAJOR: this image is inconsistent"
}

controldata_field() { # OUTPUT FIELD
  awk -F': *' -v f="$2" '$1 == f {print $2; exit}' <<<"$1"
}

read_controldata() {
  local out
  out=$(LC_ALL=C "$OLD_BINDIR/pg_controldata" "$OLD_DATA" 2>&1) ||
    refuse 2 preflight "pg_controldata cannot read $OLD_DATA: $(one_line "$out"). Nothing was changed."
  OLD_CLUSTER_STATE=$(controldata_field "$out" "Database cluster state")
  OLD_CHECKSUMS=$(controldata_field "$out" "Data page checksum version")
  OLD_WALSEG=$(controldata_field "$out" "Bytes per WAL segment")
  if ! [[ ${OLD_WALSEG:-} =~ ^[0-9]+$ && ${OLD_CHECKSUMS:-} =~ ^[0-9]+$ ]]; then
    refuse 2 preflight "pg_controldata of $OLD_DATA did not report the WAL segment size and checksum version. Nothing was changed."
  fi
  log "old cluster: PostgreSQL $FROM in $OLD_DATA, state '$OLD_CLUSTER_STATE', data checksums $([ "$OLD_CHECKSUMS" -eq 0 ] && echo off || echo on), WAL segments of $((OLD_WALSEG / 1048576)) MiB"
}

check_old_cluster() {
  local f pid
  for f in standby.signal recovery.signal backup_label; do
    [ ! -e "$OLD_DATA/$f" ] ||
      refuse 2 preflight "$OLD_DATA has $f: it is a standby or in the middle of a restore. Only a primary that has finished recovery can be upgraded; promote it or let the restore finish first. Nothing was changed."
  done
  case "$OLD_CLUSTER_STATE" in
    "shut down" | "in production" | "in crash recovery") ;;
    *) refuse 2 preflight "the cluster in $OLD_DATA is '$OLD_CLUSTER_STATE' (a standby or an archive recovery): only a primary can be upgraded. Nothing was changed." ;;
  esac
  if pid=$(postmaster_pid "$OLD_DATA"); then
    refuse 2 preflight "the PostgreSQL $FROM server is running on $OLD_DATA (pid $pid): stop it first. Nothing was changed."
  fi
}

# Hard links need one filesystem for the old and the new data directory.
check_filesystem() {
  local probe=$NEW_DATA old_dev new_dev
  while [ ! -e "$probe" ]; do probe=$(dirname "$probe"); done
  old_dev=$(stat -c %d "$OLD_DATA")
  new_dev=$(stat -c %d "$probe")
  [ "$old_dev" = "$new_dev" ] ||
    refuse 2 preflight "$OLD_DATA and $NEW_DATA are on different filesystems, and pg_upgrade --link needs one: mount the volume at $PGSTEWARD_VOLUME (not at $OLD_DATA). Nothing was changed."
  if [ -e "$NEW_DATA" ] && ! { [ -d "$NEW_DATA" ] && [ -z "$(ls -A "$NEW_DATA")" ]; }; then
    refuse 2 preflight "$NEW_DATA is not empty but holds no PostgreSQL $PG_MAJOR cluster: move it away. Nothing was changed."
  fi
}

# catalog_bytes DIR: bytes of the system catalogs (relfilenodes below 16384)
# in every database; pg_upgrade recreates them in the new cluster.
catalog_bytes() {
  find "$1/base" -type f -printf '%f %s\n' 2>/dev/null |
    awk '{n = $1; sub(/[_.].*/, "", n); if (n ~ /^[0-9]+$/ && n + 0 < 16384) s += $2} END {printf "%d\n", s}'
}

check_free_space() {
  local catalog free need
  catalog=$(($(catalog_bytes "$OLD_DATA") + $(dir_bytes "$OLD_DATA/global")))
  need=$((3 * catalog + 4 * OLD_WALSEG + 64 * 1024 * 1024))
  free=$(free_bytes "$PGSTEWARD_VOLUME")
  NEED_SUMMARY="about $(human_bytes "$need"): 3 x the old catalog of $(human_bytes "$catalog") (new catalog, schema dump, its WAL), 4 WAL segments of $(human_bytes "$OLD_WALSEG") and 64 MiB of headroom; the data files are hard-linked, not copied"
  log "disk: $(human_bytes "$free") free on $PGSTEWARD_VOLUME; the upgrade needs $NEED_SUMMARY"
  [ "$free" -ge "$need" ] ||
    refuse 4 preflight "not enough free space on $PGSTEWARD_VOLUME to upgrade: $(human_bytes "$free") free, $NEED_SUMMARY. Grow the volume or free space. Nothing was changed."
}

preflight() {
  STEP=preflight
  fault_point preflight
  check_consent
  check_supported
  locate_old_binaries
  locate_new_binaries
  read_controldata
  check_old_cluster
  check_filesystem
  check_free_space
}

# --- the steps before the point of no return -----------------------------------

step_inspect() {
  local logf="$RUN/inspect-old.log" user out json
  open_socket_dir
  write_private_hba
  # shared_preload_libraries off: reading the catalog needs no extension.
  if ! "$OLD_BINDIR/pg_ctl" -D "$OLD_DATA" -w -t "$START_TIMEOUT" -l "$logf" \
    -o "$(private_server_options "$OLD_PORT") -c shared_preload_libraries=''" start >/dev/null 9>&-; then
    fail inspect "the PostgreSQL $FROM cluster did not start with the stashed binaries: $(one_line "$(last_lines "$logf" 5)")"
  fi
  for user in "${POSTGRES_USER:-}" "${PGUSER:-}" postgres "$(id -un)"; do
    [ -n "$user" ] || continue
    if out=$(old_psql "$user" template1 -c 'select rolname from pg_authid where oid = 10' 2>&1); then
      INSTALL_USER=$out
      break
    fi
  done
  [ -n "$INSTALL_USER" ] || fail inspect "cannot connect to the old cluster to read its install user: $(one_line "$out")"
  json=$(old_psql "$INSTALL_USER" template1 -c \
    "select json_build_object('encoding', pg_encoding_to_char(encoding), 'db', row_to_json(d))
       from pg_database d where datname = 'template0'")
  "$OLD_BINDIR/pg_ctl" -D "$OLD_DATA" -m fast -w -t "$START_TIMEOUT" stop >/dev/null
  json=$(jq -c --arg user "$INSTALL_USER" --argjson checksums "$OLD_CHECKSUMS" --argjson walseg "$OLD_WALSEG" \
    '{installUser: $user, encoding: .encoding, lcCollate: .db.datcollate, lcCtype: .db.datctype,
      localeProvider: (.db.datlocprovider // "c"), locale: (.db.datlocale // .db.daticulocale // ""),
      icuRules: (.db.daticurules // ""), checksums: ($checksums != 0), walSegmentBytes: $walseg}' <<<"$json")
  # shellcheck disable=SC2016
  state_update '.inspect = $i' --argjson i "$json"
  log "old cluster: install user $INSTALL_USER; template0: $(jq -r '"\(.encoding), collate \(.lcCollate), ctype \(.lcCtype), provider \(.localeProvider) \(.locale)"' <<<"$json")"
}

old_psql() { # USER DB ARGS...
  local user=$1 db=$2
  shift 2
  "$NEW_BINDIR/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h "$SOCKET_DIR" -p "$OLD_PORT" -U "$user" -d "$db" "$@"
}

step_initdb() {
  local args provider locale rules logf="$RUN/initdb.log"
  rm -rf "$NEW_TMP"
  mkdir -p "$(dirname "$NEW_TMP")"
  args=(-D "$NEW_TMP" -U "$(inspected installUser)" --encoding="$(inspected encoding)"
    --locale="$(inspected lcCtype)" --lc-collate="$(inspected lcCollate)" --lc-ctype="$(inspected lcCtype)"
    --wal-segsize=$(($(inspected walSegmentBytes) / 1048576))
    --auth-local=peer --auth-host=scram-sha-256 --no-instructions --no-sync)
  provider=$(inspected localeProvider) locale=$(inspected locale) rules=$(inspected icuRules)
  case "$provider" in
    c) [ "$TO" -lt 15 ] || args+=(--locale-provider=libc) ;;
    i)
      args+=(--locale-provider=icu --icu-locale="$locale")
      [ -z "$rules" ] || args+=(--icu-rules="$rules")
      ;;
    b) args+=(--locale-provider=builtin --builtin-locale="$locale") ;;
    *) fail initdb "unknown locale provider '$provider' in the old cluster" ;;
  esac
  # PostgreSQL 18 turns data checksums on by default; pg_upgrade needs both
  # clusters to agree.
  if [ "$(inspected checksums)" = true ]; then
    args+=(--data-checksums)
  elif [ "$TO" -ge 18 ]; then
    args+=(--no-data-checksums)
  fi
  log "initdb ${args[*]}"
  "$NEW_BINDIR/initdb" "${args[@]}" >"$logf" 2>&1 ||
    fail initdb "initdb of the new cluster failed: $(one_line "$(last_lines "$logf" 4)")"
}

# run_pg_upgrade NAME [--check]
run_pg_upgrade() {
  local name=$1 rc=0 out saved args
  shift
  out="$RUN/pg_upgrade-$name.out"
  saved="$RUN/pg_upgrade_output.d-$name"
  open_socket_dir
  write_private_hba
  args=(--old-bindir="$OLD_BINDIR" --new-bindir="$NEW_BINDIR"
    --old-datadir="$OLD_DATA" --new-datadir="$NEW_TMP"
    --link --jobs="$(parallel_jobs)" --socketdir="$SOCKET_DIR" --username="$(inspected installUser)"
    --old-port="$OLD_PORT" --new-port="$NEW_PORT"
    --old-options="-c hba_file='$RUN/pg_hba.conf' -c archive_mode=off"
    --new-options="-c hba_file='$RUN/pg_hba.conf'")
  [ "$TO" -lt 17 ] || args+=(--sync-method=syncfs)
  log "pg_upgrade --link${1:+ $1}: output in $out"
  (cd "$RUN" && "$NEW_BINDIR/pg_upgrade" "${args[@]}" "$@") >"$out" 2>&1 9>&- || rc=$?
  if [ "$rc" -ne 0 ]; then
    rm -rf "$saved"
    [ ! -d "$NEW_TMP/pg_upgrade_output.d" ] || cp -a "$NEW_TMP/pg_upgrade_output.d" "$saved"
    PGU_LOG=$(pg_upgrade_excerpt "$out" "$saved")
    fail "$name" "pg_upgrade $([ "$name" = check ] && echo --check || echo --link) failed (exit $rc): $(pg_upgrade_reason "$out" "$saved"). Logs: $RUN"
  fi
}

# pg_upgrade_reason OUT SAVED: one line: what pg_upgrade called fatal, or the
# server's FATAL line when a server did not start.
pg_upgrade_reason() {
  local out=$1 saved=$2 reason fatal='' which=server
  reason=$(awk '/fatal$/ {on = 1; print; next} on && /^Failure, exiting/ {exit} on && NF {print}' "$out")
  if [ -d "$saved" ]; then
    fatal=$(find "$saved" -name 'pg_upgrade_server*.log' -exec grep -h 'FATAL:' {} + 2>/dev/null | tail -n1 | sed 's/.*FATAL: *//' || true)
  fi
  if grep -q 'source postmaster' "$out"; then
    which="the PostgreSQL $FROM server (stashed binaries)"
  elif grep -q 'target postmaster' "$out"; then
    which="the new PostgreSQL $TO server"
  fi
  if [ -z "$reason" ] && [ -n "$fatal" ]; then
    reason="$which did not start: $fatal"
  elif [ -n "$fatal" ]; then
    reason="$reason -- server: $fatal"
  elif [ -z "$reason" ]; then
    reason=$(last_lines "$out" 3 | grep -v '^Failure, exiting' || true)
  fi
  one_line "$reason" 700
}

# pg_upgrade_excerpt OUT SAVED: the end of pg_upgrade's output, its reports
# (*.txt) and the servers' errors, for the result file.
pg_upgrade_excerpt() {
  local out=$1 saved=$2 text f
  text=$(
    echo "pg_upgrade output (last lines):"
    last_lines "$out" 25
    if [ -d "$saved" ]; then
      while IFS= read -r f; do
        echo "--- ${f##*/}:"
        sed -n '1,15p' "$f"
      done < <(find "$saved" -type f -name '*.txt' | sort)
      while IFS= read -r f; do
        if grep -qE '(FATAL|ERROR|PANIC):' "$f"; then
          echo "--- ${f##*/} (errors):"
          grep -E '(FATAL|ERROR|PANIC|DETAIL|HINT):' "$f" | tail -n 10
        fi
      done < <(find "$saved" -type f -name '*.log' | sort)
    fi
  )
  printf '%s' "${text:0:6000}"
}

step_check() { run_pg_upgrade check --check; }

step_link() {
  run_pg_upgrade link
  # Kept for the post-upgrade work, which runs from another process.
  if [ -f "$RUN/update_extensions.sql" ]; then
    cp "$RUN/update_extensions.sql" "$WORK/update_extensions.sql"
  else
    rm -f "$WORK/update_extensions.sql"
  fi
}

# shared_preload_libraries that this image cannot load would keep the new
# server from starting after the point of no return: check them before.
check_preload_libraries() {
  local libs=$1 pkglibdir lib name
  pkglibdir=$("$NEW_BINDIR/pg_config" --pkglibdir 2>/dev/null) || {
    log "WARNING: no pg_config in $NEW_BINDIR: shared_preload_libraries not checked"
    return 0
  }
  IFS=',' read -ra libs <<<"$libs"
  for lib in "${libs[@]}"; do
    lib=$(tr -d " \"'" <<<"$lib")
    [ -n "$lib" ] || continue
    name=${lib#\$libdir/}
    if [ "${name:0:1}" = / ]; then
      [ -e "$name" ] || [ -e "$name.so" ] || fail config "shared_preload_libraries names $lib, which does not exist in this image"
    else
      [ -e "$pkglibdir/$name.so" ] || [ -e "$pkglibdir/$name" ] ||
        fail config "shared_preload_libraries names $lib, which PostgreSQL $TO in this image does not have (not in $pkglibdir)"
    fi
  done
}

step_config() {
  local f n name skip out libs
  for f in postgresql.conf postgresql.auto.conf pg_hba.conf pg_ident.conf; do
    [ ! -f "$OLD_DATA/$f" ] || cp -p "$OLD_DATA/$f" "$NEW_TMP/$f"
  done
  # Other top-level files (a server certificate and key, for example).
  for f in "$OLD_DATA"/* "$OLD_DATA"/.[!.]*; do
    [ -f "$f" ] || continue
    name=${f##*/}
    skip=false
    for n in "${NOT_CARRIED[@]}"; do [ "$name" != "$n" ] || skip=true; done
    if [ "$skip" = true ] || [ -e "$NEW_TMP/$name" ]; then continue; fi
    cp -p "$f" "$NEW_TMP/$name"
    log "carried $name over to the new cluster"
  done
  # The server's own parser: the files in the data directory, then the image's
  # configuration as the entrypoint passes it.
  out=$(cd / && "$NEW_BINDIR/postgres" -D "$NEW_TMP" -C shared_preload_libraries 2>&1) ||
    fail config "the configuration carried over from $OLD_DATA is not valid for PostgreSQL $TO: $(one_line "$out" 400)"
  libs=$out
  if [ -f "$PGSTEWARD_CONFIG_DIR/postgresql.conf" ]; then
    out=$(cd / && "$NEW_BINDIR/postgres" -D "$NEW_TMP" -c "config_file=$PGSTEWARD_CONFIG_DIR/postgresql.conf" \
      -C shared_preload_libraries 2>&1) ||
      fail config "postgresql.auto.conf carried over from $OLD_DATA and $PGSTEWARD_CONFIG_DIR/postgresql.conf are not valid together for PostgreSQL $TO: $(one_line "$out" 400)"
    libs="$libs,$out"
  fi
  check_preload_libraries "$libs"
}

step_swap() {
  if [ -d "$NEW_TMP" ]; then
    if [ -d "$NEW_DATA" ]; then
      rmdir "$NEW_DATA" 2>/dev/null || fail swap "$NEW_DATA is not empty (or is a mount point)"
    fi
    mv -T "$NEW_TMP" "$NEW_DATA"
    sync_path "$(dirname "$NEW_DATA")"
  fi
  [ "$(data_major "$NEW_DATA" || true)" = "$TO" ] || fail swap "$NEW_DATA holds no PostgreSQL $TO cluster after the rename"
  log "the new cluster is $NEW_DATA; the old one stays in $OLD_DATA until the post-upgrade clean-up"
}

run_pre_steps() {
  local step
  for step in "${PRE_STEPS[@]}"; do
    step_done "$step" && continue
    STEP=$step
    report running "$step" "upgrading PostgreSQL $FROM to $TO: $step"
    fault_point "$step"
    "step_$step"
    fault_point "$step:done"
    mark_done "$step"
  done
  point_of_no_return
}

# --- the point of no return ----------------------------------------------------

point_of_no_return() {
  if ! ponr_passed; then
    # shellcheck disable=SC2016
    state_update '.pointOfNoReturn = true | .pointOfNoReturnAt = $t' --arg t "$(now_utc)"
    sync_path "$STATE_FILE"
  fi
  if ! step_done start_new; then
    STEP=start_new
    report running start_new "point of no return: starting the new PostgreSQL $TO cluster; the PostgreSQL $FROM cluster cannot be used again"
    fault_point start_new
    step_start_new
    fault_point start_new:done
    mark_done start_new
  fi
  STEP=''
  report running ready "upgraded to PostgreSQL $TO; the server starts now, then the post-upgrade work (analyze, extension updates, a new full backup, removal of the old data) runs in the background"
  log "upgraded to PostgreSQL $TO in $NEW_DATA; ready to start"
}

step_start_new() {
  local logf="$RUN/start-new.log" opts version
  open_socket_dir
  write_private_hba
  opts=$(private_server_options "$NEW_PORT")
  if [ -f "$PGSTEWARD_CONFIG_DIR/postgresql.conf" ]; then
    opts="-c config_file='$PGSTEWARD_CONFIG_DIR/postgresql.conf' $opts"
  fi
  if ! "$NEW_BINDIR/pg_ctl" -D "$NEW_DATA" -w -t "$START_TIMEOUT" -l "$logf" -o "$opts" start >/dev/null 9>&-; then
    fail start_new "the upgraded cluster did not start: $(one_line "$(last_lines "$logf" 5)")"
  fi
  version=$("$NEW_BINDIR/psql" -X -q -A -t -h "$SOCKET_DIR" -p "$NEW_PORT" -U "$INSTALL_USER" -d template1 \
    -c 'show server_version_num')
  "$NEW_BINDIR/pg_ctl" -D "$NEW_DATA" -m fast -w -t "$START_TIMEOUT" stop >/dev/null
  [ "$((version / 10000))" = "$TO" ] || fail start_new "the new cluster reports server_version_num $version, not PostgreSQL $TO"
  log "the new cluster started and stopped cleanly (server_version_num $version)"
}

# --- auto ----------------------------------------------------------------------

new_state() {
  local attempts_file="$WORK/attempts" attempt=1
  mkdir -p "$WORK"
  [ ! -f "$attempts_file" ] || attempt=$(($(cat "$attempts_file") + 1))
  printf '%s\n' "$attempt" >"$attempts_file"
  RUN="$WORK/attempt-$attempt"
  rm -rf "$RUN"
  mkdir -p "$RUN"
  NEW_TMP="$(dirname "$NEW_DATA")/$(basename "$NEW_DATA").pgsteward-upgrade"
  [ -n "$STARTED_AT" ] || STARTED_AT=$(now_utc)
  write_json_atomically "$STATE_FILE" "$(jq -cn --arg id "$ID" --argjson from "$FROM" --argjson to "$TO" \
    --arg old "$OLD_DATA" --arg new "$NEW_DATA" --arg tmp "$NEW_TMP" --arg work "$WORK" --arg run "$RUN" \
    --arg started "$STARTED_AT" --argjson attempt "$attempt" \
    '{id: $id, fromMajor: $from, toMajor: $to, oldData: $old, newData: $new, newTmp: $tmp, work: $work,
      run: $run, startedAt: $started, attempt: $attempt, pointOfNoReturn: false, done: {}}')"
  if [ "$attempt" -gt "$MAX_ATTEMPTS" ]; then
    STEP=preflight
    fail preflight "$((attempt - 1)) attempts were interrupted (killed or crashed); giving up"
  fi
  log "upgrade $ID: PostgreSQL $FROM ($OLD_DATA) to $TO ($NEW_DATA), attempt $attempt; logs in $RUN"
}

begin_upgrade() {
  check_request_id
  WORK="$PGSTEWARD_STATE_DIR/upgrade/$ID"
  preflight
  new_state
  run_pre_steps
}

resume() {
  state_load
  log "resuming upgrade $ID (PostgreSQL $FROM to $TO) found in $STATE_FILE"
  if ponr_passed; then
    [ "$TO" = "$PG_MAJOR" ] ||
      die "upgrade $ID to PostgreSQL $TO has passed its point of no return; the data is PostgreSQL $TO now and this image runs $PG_MAJOR: run the PostgreSQL $TO image" 2
    locate_new_binaries
    point_of_no_return
    return 0
  fi
  STEP=$(interrupted_step)
  if [ "$TO" != "$PG_MAJOR" ]; then
    log "this image runs PostgreSQL $PG_MAJOR, not $TO: rolling the interrupted upgrade back"
    rollback_old || die "the rollback of the interrupted upgrade $ID did not complete; see the log above" 1
    FAILED_STEP=$STEP
    report rolled_back "$STEP" "the interrupted upgrade to PostgreSQL $TO was rolled back because the image now runs PostgreSQL $PG_MAJOR; the PostgreSQL $FROM cluster in $OLD_DATA is as it was"
    finish_state
    STEP='' FAILED_STEP=''
    detect_and_upgrade
    return 0
  fi
  if step_done link; then
    log "pg_upgrade --link had finished: going on from there"
    locate_new_binaries
    run_pre_steps
    return 0
  fi
  log "the interrupted attempt stopped before pg_upgrade --link finished: rolling it back, then starting again"
  rollback_old || fail "$STEP" "the rollback of the interrupted attempt did not complete"
  finish_state
  STEP=''
  begin_upgrade
}

detect_and_upgrade() {
  local m
  refuse_downgrade
  if [ -s "$PGDATA/PG_VERSION" ]; then
    m=$(data_major "$PGDATA") || die "cannot read $PGDATA/PG_VERSION" 2
    if [ "$m" != "$PG_MAJOR" ]; then
      die "$PGDATA holds a PostgreSQL $m cluster and this image runs $PG_MAJOR. Upgrades work with the per-major layout ($PGSTEWARD_VOLUME/<major>/docker): leave PGDATA unset. Nothing was changed." 2
    fi
    if [ ! -f "$PGDATA/global/pg_control" ] && [ -f "$PGDATA/global/pg_control.old" ]; then
      die "$PGDATA was upgraded to a newer major by pg_upgrade --link (global/pg_control.old) and must not be started again" 2
    fi
    return 0 # nothing to do
  fi
  find_old_cluster || return 0 # a new, empty volume
  begin_upgrade
}

cmd_auto() {
  take_lock
  if [ -f "$STATE_FILE" ]; then
    resume
  else
    detect_and_upgrade
  fi
}

# --- post ----------------------------------------------------------------------

wait_for_server() {
  local i
  for i in $(seq 1 120); do
    pg_isready -q 2>/dev/null && return 0
    [ "$i" -lt 120 ] && sleep 1
  done
  return 1
}

step_analyze() {
  local jobs logf="$WORK/analyze.log"
  jobs=$(parallel_jobs)
  if [ "$TO" -ge 18 ]; then
    # 18 kept the statistics pg_upgrade carried over; fill in the missing ones
    # first (fast), then refresh everything.
    if ! vacuumdb --all --analyze-in-stages --missing-stats-only --jobs="$jobs" >"$logf" 2>&1 ||
      ! vacuumdb --all --analyze-only --jobs="$jobs" >>"$logf" 2>&1; then
      fail analyze "vacuumdb failed: $(one_line "$(last_lines "$logf" 3)")"
    fi
  else
    vacuumdb --all --analyze-in-stages --jobs="$jobs" >"$logf" 2>&1 ||
      fail analyze "vacuumdb failed: $(one_line "$(last_lines "$logf" 3)")"
  fi
}

step_update_extensions() {
  local sql="$WORK/update_extensions.sql" logf="$WORK/update_extensions.log"
  if [ ! -f "$sql" ]; then
    log "no extension needs an update"
    return 0
  fi
  psql -X -v ON_ERROR_STOP=1 -d postgres -f "$sql" >"$logf" 2>&1 ||
    fail update_extensions "update_extensions.sql failed: $(one_line "$(last_lines "$logf" 3)")"
  log "extensions updated ($(grep -c 'ALTER EXTENSION' "$sql" || true) statements)"
}

# post_backup_id: post-upgrade-<major>, or a fresh id when that one failed.
post_backup_id() {
  local base="post-upgrade-$TO" id n=1 path
  id=$base
  while path=$(result_path backup "$id") && [ -f "$path" ] &&
    [ "$(jq -r .outcome "$path" 2>/dev/null)" = failed ]; do
    n=$((n + 1))
    id="$base-$n"
  done
  printf '%s\n' "$id"
}

step_backup() {
  local id rc tries=0
  if ! storage_configured; then
    log "no backup storage configured: no post-upgrade backup"
    return 0
  fi
  command -v backup.sh >/dev/null || fail backup "backup.sh is not on PATH: this image is incomplete"
  id=$(post_backup_id)
  while :; do
    rc=0
    log "a new full backup of PostgreSQL $TO: backup.sh --id $id"
    backup.sh --id "$id" >"$WORK/backup-$id.json" 2>>"$WORK/backup.log" || rc=$?
    if [ "$rc" -ne 5 ] || [ "$tries" -ge 60 ]; then break; fi
    tries=$((tries + 1))
    sleep 10
  done
  case "$rc" in
    0 | 6) log "post-upgrade backup $id taken" ;;
    3) log "backup.sh found no storage: no post-upgrade backup" ;;
    *) fail backup "the post-upgrade full backup $id failed (backup.sh exit $rc; result in $(result_path backup "$id")). The old data directory is kept until a backup succeeds" ;;
  esac
}

step_cleanup() {
  local tblspc target parent
  if [ -d "$OLD_DATA" ]; then
    case "$OLD_DATA" in
      "$PGSTEWARD_VOLUME"/?*) ;;
      *) fail cleanup "refusing to remove $OLD_DATA, which is not under $PGSTEWARD_VOLUME" ;;
    esac
    [ "$OLD_DATA" != "$NEW_DATA" ] || fail cleanup "the old and the new data directory are the same"
    # The old major's directories inside each tablespace.
    for tblspc in "$NEW_DATA"/pg_tblspc/*; do
      [ -L "$tblspc" ] || continue
      target=$(readlink -f "$tblspc")
      rm -rf "$target"/PG_"$FROM"_*
    done
    rm -rf "$OLD_DATA"
    parent=$(dirname "$OLD_DATA")
    [ "$parent" = "$PGSTEWARD_VOLUME" ] || rmdir "$parent" 2>/dev/null || true
    sync_path "$PGSTEWARD_VOLUME"
    log "removed the old data directory $OLD_DATA; the PostgreSQL $FROM stash stays in $PGSTEWARD_STASH_DIR/$FROM"
  fi
  CLEANED_UP=true
}

cmd_post() {
  local step
  take_lock
  if [ ! -f "$STATE_FILE" ]; then
    log "no upgrade pending: nothing to do"
    return 0
  fi
  state_load
  if ! ponr_passed || ! step_done start_new || [ "$TO" != "$PG_MAJOR" ]; then
    log "upgrade $ID has not reached its new server yet: nothing to do after start"
    return 0
  fi
  pg_client_env
  wait_for_server || die "the server is not accepting connections; the post-upgrade work runs at the next start" 1
  for step in "${POST_STEPS[@]}"; do
    step_done "$step" && continue
    STEP=$step
    report running "$step" "upgraded to PostgreSQL $TO; post-upgrade work: $step"
    fault_point "$step"
    "step_$step"
    fault_point "$step:done"
    mark_done "$step"
  done
  STEP=''
  CLEANED_UP=true
  report succeeded "done" "upgraded from PostgreSQL $FROM to $TO: statistics refreshed, extensions updated, new full backup taken when storage is configured, old data directory removed"
  finish_state
}

main() {
  trap 'on_error $? $LINENO' ERR
  trap cleanup_on_exit EXIT
  umask 0077
  case "${1:-}" in
    auto) cmd_auto ;;
    post) cmd_post ;;
    *) die "usage: upgrade.sh auto|post" 2 ;;
  esac
}

main "$@"
