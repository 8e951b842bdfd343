# shellcheck shell=bash
# pgsteward-lib.sh — sourced by every script in the image, never executed.
#
# Paths are variables whose defaults are the image's own values, so the same
# scripts run on a host against real PostgreSQL binaries in the test tier.
# The contract with the operator (paths, state file format, request
# variables) is written down in docs/image-contract.md.

: "${PG_MAJOR:?PG_MAJOR must be set (the official image sets it)}"
PGSTEWARD_VOLUME=${PGSTEWARD_VOLUME:-/var/lib/postgresql}
PGDATA=${PGDATA:-$PGSTEWARD_VOLUME/$PG_MAJOR/docker}
PGSTEWARD_CONFIG_DIR=${PGSTEWARD_CONFIG_DIR:-/etc/postgresql}
PGSTEWARD_STATE_DIR=${PGSTEWARD_STATE_DIR:-$PGSTEWARD_VOLUME/pgsteward}
PGSTEWARD_STASH_DIR=${PGSTEWARD_STASH_DIR:-$PGSTEWARD_STATE_DIR/stash}
PGSTEWARD_RUN_DIR=${PGSTEWARD_RUN_DIR:-/var/run/postgresql}
WALG_BIN=${WALG_BIN:-wal-g}
export PGDATA PGSTEWARD_VOLUME PGSTEWARD_CONFIG_DIR PGSTEWARD_STATE_DIR \
  PGSTEWARD_STASH_DIR PGSTEWARD_RUN_DIR WALG_BIN

# One log line: UTC timestamp, script name, message; always on stderr so that
# stdout stays free for machine-readable output.
log() {
  printf '%s [%s] %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "${PGSTEWARD_LOG_NAME:-${0##*/}}" "$*" >&2
}

# die MESSAGE [EXIT_CODE]
die() {
  log "ERROR: $1"
  exit "${2:-1}"
}

now_utc() { date -u +%Y-%m-%dT%H:%M:%SZ; }

# Fault injection for the crash-safety tests: PGSTEWARD_FAULT_AT=<step> makes
# the script SIGKILL itself when it reaches that step, exactly as an OOM kill
# or a node loss would. Unset in production, where this is a no-op.
fault_point() {
  if [ -n "${PGSTEWARD_FAULT_AT:-}" ] && [ "$PGSTEWARD_FAULT_AT" = "$1" ]; then
    log "fault injection: killing myself at step '$1'"
    kill -9 $$
  fi
}

# --- state files -------------------------------------------------------------
# Every operation (backup, restore, upgrade) records its result as JSON in
#   $PGSTEWARD_STATE_DIR/results/<kind>/<id>.json   (one per request id)
#   $PGSTEWARD_STATE_DIR/<kind>.json                 (a copy of the latest)
# Writes go to a temporary file and are renamed into place, so a reader (the
# operator's exec) never sees half a file, even after a kill -9.

# write_json_atomically PATH JSON
write_json_atomically() {
  local path=$1 json=$2 tmp
  mkdir -p "$(dirname "$path")"
  tmp=$(mktemp "$path.XXXXXX")
  printf '%s\n' "$json" >"$tmp"
  sync "$tmp" 2>/dev/null || true
  mv -f "$tmp" "$path"
}

result_path() { printf '%s/results/%s/%s.json\n' "$PGSTEWARD_STATE_DIR" "$1" "$2"; }

# result_exists KIND ID: true when that request already has a final outcome.
result_exists() {
  local path
  path=$(result_path "$1" "$2")
  [ -f "$path" ] && jq -e '.outcome != "running"' "$path" >/dev/null 2>&1
}

# record_result KIND ID OUTCOME STEP MESSAGE [DETAILS_JSON] [STARTED_AT]
# OUTCOME is one of: running, succeeded, failed, rolled_back.
record_result() {
  local kind=$1 id=$2 outcome=$3 step=$4 message=$5 details=${6:-'{}'} started=${7:-} json finished=null
  [ -n "$started" ] || started=$(now_utc)
  [ "$outcome" = running ] || finished="\"$(now_utc)\""
  json=$(jq -cn --arg kind "$kind" --arg id "$id" --arg outcome "$outcome" --arg step "$step" \
    --arg message "$message" --arg started "$started" --argjson finished "$finished" \
    --argjson details "$details" --argjson major "$PG_MAJOR" \
    '{kind: $kind, id: $id, outcome: $outcome, step: $step, message: $message,
      startedAt: $started, finishedAt: $finished, pgMajor: $major, details: $details}')
  write_json_atomically "$(result_path "$kind" "$id")" "$json"
  write_json_atomically "$PGSTEWARD_STATE_DIR/$kind.json" "$json"
  # The newest success too: a failed backup after it must not hide how old
  # the last good one is (the exporter's backup age, monitoring.sh).
  [ "$outcome" != succeeded ] || write_json_atomically "$PGSTEWARD_STATE_DIR/$kind-succeeded.json" "$json"
  case $kind in upgrade | restore) publish_results ;; esac
}

# publish_results: the latest upgrade and restore results, as
# {"upgrade": …, "restore": …} (null when there is none), in the container's
# termination message, $PGSTEWARD_TERMINATION_LOG (the operator sets it to
# the pod's terminationMessagePath; unset under `docker run`: nothing to do).
# When the container exits before the operator can exec into it, this is
# how the operator learns whether an upgrade passed its point of no return
# (and so whether putting the previous image back is safe), and why a
# restore before the first start refused to go on. Kubernetes keeps at most
# 4096 bytes: pg_upgrade's log excerpt is shortened, then dropped.
TERMINATION_MESSAGE_MAX_BYTES=4000
publish_results() {
  local path=${PGSTEWARD_TERMINATION_LOG:-} upgrade=null restore=null json
  [ -n "$path" ] || return 0
  [ ! -f "$PGSTEWARD_STATE_DIR/upgrade.json" ] || upgrade=$(jq -c . "$PGSTEWARD_STATE_DIR/upgrade.json" 2>/dev/null) || upgrade=null
  [ ! -f "$PGSTEWARD_STATE_DIR/restore.json" ] || restore=$(jq -c . "$PGSTEWARD_STATE_DIR/restore.json" 2>/dev/null) || restore=null
  json=$(jq -cn --argjson u "$upgrade" --argjson r "$restore" '
    def short: if type == "string" then .[:800] else . end;
    {upgrade: ($u | if . == null then . else
                (.message |= short | .details.pgUpgradeLog |= (if type == "string" then .[-1200:] else . end)) end),
     restore: ($r | if . == null then . else .message |= short end)}') || return 0
  if [ "$(printf '%s' "$json" | wc -c)" -gt "$TERMINATION_MESSAGE_MAX_BYTES" ]; then
    json=$(jq -c 'if .upgrade then .upgrade.details.pgUpgradeLog = null else . end' <<<"$json") || return 0
  fi
  printf '%s' "$json" 2>/dev/null >"$path" || log "could not write the termination message $path"
}

# --- WAL-G storage -----------------------------------------------------------
# The user (or the operator) gives one base prefix in the usual WAL-G variable.
# Every script appends the PostgreSQL major, because pg_upgrade resets the
# timeline and system identifier and WAL-G's retention would otherwise delete
# the new major's backups (see reference/walg.md).

STORAGE_PREFIX_VARS=(WALG_S3_PREFIX WALG_GS_PREFIX WALG_AZ_PREFIX WALG_FILE_PREFIX)

# storage_configured: true when exactly one base prefix is set.
storage_configured() {
  local var count=0
  for var in "${STORAGE_PREFIX_VARS[@]}"; do
    [ -n "${!var:-}" ] && count=$((count + 1))
  done
  [ "$count" -eq 1 ]
}

# storage_prefix_var: the name of the variable that holds the base prefix.
storage_prefix_var() {
  local var
  for var in "${STORAGE_PREFIX_VARS[@]}"; do
    if [ -n "${!var:-}" ]; then
      printf '%s\n' "$var"
      return 0
    fi
  done
  return 1
}

# walg [ARGS...]: wal-g with the per-major prefix of this instance's storage.
# PGSTEWARD_STORAGE_MAJOR overrides the major (a clone from an older source).
# Real WAL-G (v3.0.8) refuses a WALG_FILE_PREFIX directory that does not
# exist ("FS storage root directory doesn't exist or is inaccessible"), so
# the per-major directory of this instance's own file storage is created
# first (a clone's source, read through walg_from, is never created).
walg() {
  local var base prefix
  var=$(storage_prefix_var) || die "no backup storage configured (set one of ${STORAGE_PREFIX_VARS[*]})" 3
  base=${!var}
  prefix="${base%/}/${PGSTEWARD_STORAGE_MAJOR:-$PG_MAJOR}"
  if [ "$var" = WALG_FILE_PREFIX ] && [ ! -d "$prefix" ]; then
    mkdir -p "$prefix" || log "could not create the file storage directory $prefix"
  fi
  env "$var=$prefix" "$WALG_BIN" "$@"
}

# storage_var_for_prefix PREFIX: the WAL-G variable for a base prefix given as
# a URL (s3://, gs://, azure://) or a local path (a clone's source prefix).
storage_var_for_prefix() {
  case "$1" in
    s3://*) echo WALG_S3_PREFIX ;;
    gs://*) echo WALG_GS_PREFIX ;;
    azure://*) echo WALG_AZ_PREFIX ;;
    /*) echo WALG_FILE_PREFIX ;;
    *) return 1 ;;
  esac
}

# walg_from BASE ARGS...: wal-g against another instance's base prefix (a
# clone's source), with the same per-major layout; this instance's own
# prefix variables are not passed on.
walg_from() {
  local base=$1 var
  shift
  var=$(storage_var_for_prefix "$base") || die "cannot tell the storage kind of prefix '$base'" 2
  env -u WALG_S3_PREFIX -u WALG_GS_PREFIX -u WALG_AZ_PREFIX -u WALG_FILE_PREFIX \
    "$var=${base%/}/${PGSTEWARD_STORAGE_MAJOR:-$PG_MAJOR}" "$WALG_BIN" "$@"
}

# lsn_text LSN: WAL-G's numeric LSN (or X/Y text) as PostgreSQL's X/Y text.
lsn_text() {
  case "$1" in
    */*) printf '%s\n' "$1" ;;
    *) printf '%X/%X\n' "$(($1 >> 32))" "$(($1 & 0xFFFFFFFF))" ;;
  esac
}

# JQ_LSN: jq definitions; `lsn` turns WAL-G's numeric LSNs into X/Y text;
# `us` turns WAL-G's times into RFC 3339 with exactly six fraction digits.
# Real WAL-G (v3.0.8) writes Go's RFC3339Nano, which drops trailing zeros
# ("…:29.35099Z", "…:29Z"; `time` has nanoseconds): as text those neither
# have the contract's microseconds nor sort in time order.
# shellcheck disable=SC2034 # used by the scripts that source this file
JQ_LSN='
  def hex: if . < 16 then "0123456789ABCDEF"[.:. + 1]
           else ((. / 16 | floor) | hex) + ("0123456789ABCDEF"[(. % 16):(. % 16) + 1]) end;
  def lsn: if type == "number" then "\((. / 4294967296 | floor) | hex)/\((. % 4294967296) | hex)" else . end;
  def us: if type == "string" and test("^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}([.][0-9]+)?Z$")
          then (capture("^(?<s>[^.Z]+)([.](?<f>[0-9]+))?Z$") | "\(.s).\(((.f // "") + "000000")[:6])Z")
          else . end;'

# _FILE variants: WAL-G and AWS credentials may come from mounted files.
# Exported by value, never logged.
load_secret_files() {
  local var file
  for var in AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY WALG_LIBSODIUM_KEY AZURE_STORAGE_KEY AZURE_STORAGE_SAS_TOKEN; do
    file="${var}_FILE"
    if [ -n "${!file:-}" ] && [ -z "${!var:-}" ]; then
      [ -r "${!file}" ] || die "$file points to ${!file}, which is not readable" 2
      export "$var=$(<"${!file}")"
    fi
  done
}

# --- server helpers ----------------------------------------------------------

# pg_client_env: the PG* variables that psql, pg_isready and wal-g use to reach
# this instance's server over its Unix socket, unless the caller set them.
pg_client_env() {
  export PGHOST="${PGHOST:-$PGSTEWARD_RUN_DIR}" PGPORT="${PGPORT:-5432}" \
    PGUSER="${PGUSER:-${POSTGRES_USER:-postgres}}" PGDATABASE="${PGDATABASE:-postgres}"
}

# pg_ctl_as_owner ARGS...: pg_ctl for this PGDATA. The scripts already run as
# the data owner (the entrypoint drops privileges before calling them).
server_running() { pg_ctl -D "$PGDATA" status >/dev/null 2>&1; }

# free_bytes DIR: bytes available to a non-root user on DIR's filesystem.
free_bytes() { df -P -B1 "$1" | awk 'NR == 2 {print $4}'; }

# dir_bytes DIR: bytes used under DIR (apparent size is not what matters here).
dir_bytes() { du -s -B1 "$1" 2>/dev/null | awk '{print $1}'; }

human_bytes() { numfmt --to=iec-i --suffix=B "$1" 2>/dev/null || printf '%sB\n' "$1"; }
