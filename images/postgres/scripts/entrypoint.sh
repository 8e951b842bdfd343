#!/usr/bin/env bash
# entrypoint.sh — the image's ENTRYPOINT. It wraps the official
# docker-entrypoint.sh ($DOCKER_ENTRYPOINT) and adds what pgsteward needs.
#
# Commands other than `postgres` (bash, psql …) and `postgres --version`-style
# calls go straight to the official entrypoint. A first argument starting with
# `-` means `postgres <args>`, as in the official image. For `postgres`:
#
#   as root (`docker run`):
#     preflight        refuse bad input before anything changes
#     prepare_dirs     volume, PGDATA (700), state and socket directories
#     setup_cron       /etc/cron.d/pgsteward-backup + `cron -f`, when a backup
#                      schedule and storage are configured (a warning and the
#                      built-in scheduler when cron is missing)
#     drop_privileges  run this script again as postgres (gosu, else setpriv)
#   as postgres (pods run as uid 999; also after the drop):
#     preflight        missing password, read-only or full volume, invalid
#                      configuration or schedule: one log line, non-zero exit
#     stash_binaries   this major's bin/lib/share → $PGSTEWARD_STASH_DIR/$PG_MAJOR
#     upgrade.sh auto  a major upgrade when the data is older (no-op otherwise)
#     restore.sh auto  a requested restore (no-op otherwise)
#     start_scheduler  the built-in backup scheduler, unless cron has it
#     start_post_hooks `monitoring.sh setup`, then `upgrade.sh post`, once this
#                      server accepts connections
#     exec $DOCKER_ENTRYPOINT postgres -c config_file=… -c hba_file=…
#          -c ident_file=… -c unix_socket_directories=… <the docker run args>
#
# Progress is recorded in $PGSTEWARD_STATE_DIR/entrypoint.json.
#
# Environment (defaults are the image's values; see docs/image-contract.md):
#   PGSTEWARD_BACKUP_SCHEDULE  cron expression for scheduled backups
#   PGSTEWARD_MIN_FREE_MB      free space always required on the volume (16)
#   PGSTEWARD_CRON_DIR         where the cron file goes (/etc/cron.d)
#   PGSTEWARD_CRON_BIN         the cron daemon (cron)
#   DOCKER_ENTRYPOINT          the official entrypoint (docker-entrypoint.sh)
#   PGSTEWARD_MONITORING_PASSWORD  when set, the exporter's role (monitoring.sh)
#   PGSTEWARD_MONITORING_USER  that role's name (pgsteward_monitor)
#
# Exit codes (before the exec; afterwards the exit code is postgres's own):
#   1  a step failed, or a script of the image is missing; the log says which
#   2  bad input refused before anything changed: missing password, volume not
#      writable, configuration error, invalid schedule
#   4  not enough free disk space on the volume (the log says how much is needed)
#   *  upgrade.sh / restore.sh exit codes are passed through
set -Eeuo pipefail
here=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
self="$here/$(basename "${BASH_SOURCE[0]}")"
PGSTEWARD_LOG_NAME=entrypoint.sh
# shellcheck source=images/postgres/scripts/pgsteward-lib.sh
. "$here/pgsteward-lib.sh"

DOCKER_ENTRYPOINT=${DOCKER_ENTRYPOINT:-docker-entrypoint.sh}
PGSTEWARD_CRON_DIR=${PGSTEWARD_CRON_DIR:-/etc/cron.d}
PGSTEWARD_CRON_BIN=${PGSTEWARD_CRON_BIN:-cron}
PGSTEWARD_MIN_FREE_MB=${PGSTEWARD_MIN_FREE_MB:-16}
# A new cluster after initdb and its first starts: about 25 MB of files and
# up to 3 WAL segments of 16 MB (measured with PostgreSQL 18), rounded up.
INITDB_BYTES=$((96 * 1024 * 1024))
CRON_FILE_NAME=pgsteward-backup
CRON_ENV_FILE="$PGSTEWARD_RUN_DIR/pgsteward-cron.env"
STASH_MARKER=.stash-version

# --- small helpers -------------------------------------------------------------

is_root() { [ "$(id -u)" -eq 0 ]; }

# as_data_owner CMD...: CMD as the user postgres (we may still be root).
as_data_owner() {
  if ! is_root; then
    "$@"
  elif command -v gosu >/dev/null 2>&1; then
    gosu postgres "$@"
  else
    setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"
  fi
}

mib() { echo $((($1 + 1048575) / 1048576)); }

# record_progress STEP [JSON]: the step reached at this start, merged into
# $PGSTEWARD_STATE_DIR/entrypoint.json (kept across steps and starts).
record_progress() {
  local step=$1 extra=${2:-'{}'} file="$PGSTEWARD_STATE_DIR/entrypoint.json" previous='{}' json
  if [ -s "$file" ] && jq -e 'type == "object"' "$file" >/dev/null 2>&1; then
    previous=$(cat "$file")
  fi
  json=$(jq -cn --argjson previous "$previous" --arg step "$step" --arg at "$(now_utc)" \
    --argjson major "$PG_MAJOR" --argjson extra "$extra" \
    '$previous + {step: $step, updatedAt: $at, pgMajor: $major} + $extra')
  write_json_atomically "$file" "$json"
}

# The official entrypoint's *_FILE variables, resolved while we may still be
# root: a secret mounted readable by root only must still work after the drop,
# as it does in the official image. Setting both VAR and VAR_FILE is an error.
resolve_file_env() {
  local var file_var
  for var in POSTGRES_PASSWORD POSTGRES_USER POSTGRES_DB POSTGRES_INITDB_ARGS; do
    file_var="${var}_FILE"
    [ -n "${!file_var:-}" ] || continue
    [ -z "${!var:-}" ] || die "both $var and $file_var are set; set only one" 2
    [ -r "${!file_var}" ] || die "$file_var names ${!file_var}, which is not readable" 2
    export "$var=$(<"${!file_var}")"
    unset "$file_var"
  done
  load_secret_files
}

# --- arguments -----------------------------------------------------------------

# want_help ARGS...: postgres --help/--version … skip every set-up step, as in the official image.
want_help() {
  local arg
  for arg; do
    case "$arg" in
      -'?' | --help | --describe-config | -V | --version) return 0 ;;
    esac
  done
  return 1
}

# port_from_args ARGS...: the port given on the command line, if any.
port_from_args() {
  local port='' prev='' arg
  for arg; do
    case "$prev" in
      -p) port=$arg ;;
      -c) [[ $arg == port=* ]] && port=${arg#port=} ;;
    esac
    case "$arg" in
      -p?*) port=${arg#-p} ;;
      -cport=*) port=${arg#-cport=} ;;
      --port=*) port=${arg#--port=} ;;
    esac
    prev=$arg
  done
  [ -z "$port" ] || printf '%s\n' "$port"
}

# --- preflight: bad input is refused before anything changes --------------------

fresh_cluster() { [ ! -s "$PGDATA/PG_VERSION" ]; }

restore_requested() { [ -n "${PGSTEWARD_RESTORE_ID:-}" ]; }

# older_data_present: another major's data on this volume (an upgrade source).
older_data_present() {
  local version
  for version in "$PGSTEWARD_VOLUME"/*/docker/PG_VERSION; do
    [ -s "$version" ] || continue
    [ "$(dirname "$version")" != "$PGDATA" ] && return 0
  done
  return 1
}

# initdb_expected: the official entrypoint will initialise a new cluster.
initdb_expected() { fresh_cluster && ! restore_requested && ! older_data_present; }

check_schedule() {
  [ -n "${PGSTEWARD_BACKUP_SCHEDULE:-}" ] || return 0
  "$here/backup-scheduler.sh" check "$PGSTEWARD_BACKUP_SCHEDULE" 2>/dev/null ||
    die "invalid PGSTEWARD_BACKUP_SCHEDULE '$PGSTEWARD_BACKUP_SCHEDULE': expected 5 cron fields (minute hour day-of-month month day-of-week) or @hourly/@daily/@weekly/@monthly/@yearly" 2
}

check_password() {
  initdb_expected || return 0
  [ -z "${POSTGRES_PASSWORD:-}" ] || return 0
  [ "${POSTGRES_HOST_AUTH_METHOD:-}" != trust ] || return 0
  die "PGDATA $PGDATA is empty and no superuser password is set: set POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE); nothing was initialised" 2
}

# The volume must be writable by the user that will own the data.
check_volume_writable() {
  local probe err
  [ -d "$PGSTEWARD_VOLUME" ] || mkdir -p "$PGSTEWARD_VOLUME" 2>/dev/null ||
    die "volume $PGSTEWARD_VOLUME does not exist and cannot be created (uid $(id -u))" 2
  probe="$PGSTEWARD_VOLUME/.pgsteward-write-test.$$"
  if ! err=$( { : >"$probe"; } 2>&1); then
    err=${err##*: }
    die "volume $PGSTEWARD_VOLUME is not writable by uid $(id -u): ${err:-write failed}; nothing was changed" 2
  fi
  rm -f "$probe"
}

# stash_wanted_bytes: what stash_binaries will write (0 when the stash is current).
stash_wanted_bytes() {
  stash_sources
  if stash_current; then
    echo 0
    return 0
  fi
  du -s -B1 "$STASH_BINDIR" "$STASH_PKGLIBDIR" "$STASH_SHAREDIR" 2>/dev/null | awk '{s += $1} END {print s + 0}'
}

check_free_space() {
  local free need headroom stash initdb=0 what
  free=$(free_bytes "$PGSTEWARD_VOLUME")
  headroom=$((PGSTEWARD_MIN_FREE_MB * 1024 * 1024))
  stash=$(stash_wanted_bytes)
  if initdb_expected; then
    initdb=$INITDB_BYTES
    need=$((initdb + stash + headroom))
    what="initdb $(mib "$initdb") MiB + binary stash $(mib "$stash") MiB + headroom $(mib "$headroom") MiB"
    [ "$free" -ge "$need" ] ||
      die "not enough free space on $PGSTEWARD_VOLUME: $(mib "$free") MiB free, $(mib "$need") MiB needed ($what); nothing was initialised" 4
    return 0
  fi
  # Existing data: only refuse below the headroom; a stash that does not fit
  # is skipped with a warning rather than keeping the database down.
  [ "$free" -ge "$headroom" ] ||
    die "not enough free space on $PGSTEWARD_VOLUME: $(mib "$free") MiB free, at least $(mib "$headroom") MiB needed (PGSTEWARD_MIN_FREE_MB) to start safely; free space or grow the volume" 4
}

# check_config ARGS...: the server's own parser over postgresql.conf, conf.d,
# postgresql.auto.conf and the -c flags, before anything starts.
check_config() {
  local datadir=$PGDATA tmp='' out rc=0 msg
  if ! as_data_owner test -r "$PGDATA/PG_VERSION" 2>/dev/null; then
    tmp=$(mktemp -d)
    chmod 0755 "$tmp"
    datadir=$tmp
  fi
  out=$(cd / && as_data_owner postgres -C config_file -D "$datadir" "$@" 2>&1) || rc=$?
  [ -z "$tmp" ] || rm -rf "$tmp"
  [ "$rc" -ne 0 ] || return 0
  # One line: the server's messages without their prefixes, joined.
  msg=$(printf '%s\n' "$out" | grep -v 'skipping missing configuration file' |
    sed -E 's/^[0-9-]+ [0-9:.]+ [A-Za-z0-9+:-]+ \[[0-9]+\] //; s/^(LOG|FATAL|HINT|DETAIL|ERROR):[[:space:]]+//' |
    grep -v '^[[:space:]]*$' | paste -sd ';' | sed 's/;/; /g')
  die "configuration error: ${msg:-postgres -C exited $rc}" 2
}

preflight() {
  check_schedule
  check_volume_writable
  check_password
  check_free_space
  check_config "${SERVER_ARGS[@]}"
}

# --- root only ------------------------------------------------------------------

# The same directories the official entrypoint prepares, plus ours. PGDATA is
# only created and chowned, as the official image does; its contents are not
# otherwise touched.
prepare_dirs() {
  local dir
  for dir in "$PGSTEWARD_VOLUME" "$(dirname "$PGDATA")"; do
    mkdir -p "$dir"
    [ "$(stat -c %U "$dir")" = postgres ] || chown postgres:postgres "$dir"
  done
  mkdir -p "$PGDATA" "$PGSTEWARD_STATE_DIR" "$PGSTEWARD_RUN_DIR"
  chmod 0700 "$PGDATA"
  chmod 03775 "$PGSTEWARD_RUN_DIR"
  find "$PGDATA" "$PGSTEWARD_STATE_DIR" "$PGSTEWARD_RUN_DIR" \! -user postgres -exec chown postgres:postgres '{}' +
}

scheduled_backups_wanted() {
  [ -n "${PGSTEWARD_BACKUP_SCHEDULE:-}" ] || return 1
  if ! storage_configured; then
    log "WARNING: PGSTEWARD_BACKUP_SCHEDULE is set but no backup storage is (set one of ${STORAGE_PREFIX_VARS[*]}); scheduled backups are off"
    return 1
  fi
}

# The environment a cron job needs, which cron itself does not pass on.
write_cron_env() {
  local name tmp
  tmp=$(mktemp "$CRON_ENV_FILE.XXXXXX")
  chmod 0600 "$tmp"
  {
    for name in $(compgen -e); do
      case "$name" in
        PATH | TZ | LANG | LC_* | PG_MAJOR | PGDATA | PGHOST | PGPORT | PGUSER | PGDATABASE | \
          PGSTEWARD_* | WALG_* | AWS_* | GOOGLE_* | AZURE_* | _PGSTEWARD_*)
          printf 'export %s=%q\n' "$name" "${!name}"
          ;;
      esac
    done
    printf 'export PGSTEWARD_CRON_LOG=%q\n' "/proc/$$/fd/2"
  } >"$tmp"
  chown postgres:postgres "$tmp"
  mv -f "$tmp" "$CRON_ENV_FILE"
}

setup_cron() {
  scheduled_backups_wanted || return 0
  if ! command -v "$PGSTEWARD_CRON_BIN" >/dev/null 2>&1; then
    log "WARNING: cron ($PGSTEWARD_CRON_BIN) is not installed${PGSTEWARD_IMAGE_TYPE:+ in this $PGSTEWARD_IMAGE_TYPE image}; using the built-in scheduler for '$PGSTEWARD_BACKUP_SCHEDULE'"
    return 0
  fi
  local cron_file="$PGSTEWARD_CRON_DIR/$CRON_FILE_NAME" tmp
  mkdir -p "$PGSTEWARD_CRON_DIR"
  write_cron_env
  tmp=$(mktemp "$PGSTEWARD_CRON_DIR/.$CRON_FILE_NAME.XXXXXX")
  cat >"$tmp" <<EOF
# Written by entrypoint.sh at each container start; edits are overwritten.
SHELL=/bin/bash
PATH=$PATH
$PGSTEWARD_BACKUP_SCHEDULE postgres $here/backup-scheduler.sh cron-job $CRON_ENV_FILE
EOF
  chmod 0644 "$tmp"
  mv -f "$tmp" "$cron_file"
  run_helper "$PGSTEWARD_CRON_BIN" -f
  export _PGSTEWARD_SCHEDULER=cron
  log "scheduled backups: '$PGSTEWARD_BACKUP_SCHEDULE' via cron ($cron_file)"
}

drop_privileges() {
  if command -v gosu >/dev/null 2>&1; then
    exec gosu postgres "$self" "$@"
  fi
  exec setpriv --reuid=postgres --regid=postgres --init-groups -- "$self" "$@"
}

# --- binary stash ---------------------------------------------------------------
# $PGSTEWARD_STASH_DIR/$PG_MAJOR keeps this major's binaries on the volume, so
# that after the image moves to a newer major upgrade.sh can run the old ones
# (pg_upgrade -b). Layout:
#   root/<original absolute paths>   copies of bindir, pkglibdir (+ libpq), sharedir
#   bin, lib, share                  relative symlinks into root/
#   .stash-version                   what was copied (written last)
# Keeping the original paths under root/ lets PostgreSQL relocate itself: a
# binary finds its pkglibdir and sharedir relative to its own (resolved)
# location only when the directory layout around it is the one it was built
# with. The copy is made in a temporary directory and renamed into place.

stash_sources() {
  [ -z "${STASH_BINDIR:-}" ] || return 0
  local postgres_bin
  postgres_bin=$(command -v postgres) || die "postgres is not on PATH" 1
  STASH_BINDIR=$(dirname "$(readlink -f "$postgres_bin")")
  if [ -x "$STASH_BINDIR/pg_config" ]; then
    STASH_PKGLIBDIR=$("$STASH_BINDIR/pg_config" --pkglibdir)
    STASH_SHAREDIR=$("$STASH_BINDIR/pg_config" --sharedir)
  else
    # Debian layout without pg_config: /usr/lib/postgresql/<M>/{bin,lib}, /usr/share/postgresql/<M>
    STASH_PKGLIBDIR=$(readlink -f "$STASH_BINDIR/../lib")
    STASH_SHAREDIR=/usr/share/postgresql/$PG_MAJOR
  fi
  [ -d "$STASH_PKGLIBDIR" ] || die "cannot find PostgreSQL's library directory ($STASH_PKGLIBDIR)" 1
  [ -d "$STASH_SHAREDIR" ] || die "cannot find PostgreSQL's share directory ($STASH_SHAREDIR)" 1
  # libpq, which the client binaries link; it lives in the system libdir.
  STASH_LIBPQ=$(ldd "$STASH_BINDIR/psql" 2>/dev/null | awk '$1 ~ /^libpq\.so/ && $3 ~ /^\// {print $3; exit}')
  STASH_VERSION=$(printf '%s\n' "$("$STASH_BINDIR/postgres" --version)" "arch=$(uname -m)" \
    "base=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-unknown}")" \
    "bindir=$STASH_BINDIR" "pkglibdir=$STASH_PKGLIBDIR" "sharedir=$STASH_SHAREDIR" "libpq=${STASH_LIBPQ:-none}")
}

stash_current() {
  [ -f "$PGSTEWARD_STASH_DIR/$PG_MAJOR/$STASH_MARKER" ] &&
    [ "$(cat "$PGSTEWARD_STASH_DIR/$PG_MAJOR/$STASH_MARKER")" = "$STASH_VERSION" ]
}

# Leftovers of an interrupted stash of this major (never another major's).
stash_clean_leftovers() {
  local leftover
  for leftover in "$PGSTEWARD_STASH_DIR/.tmp-$PG_MAJOR-"* "$PGSTEWARD_STASH_DIR/.old-$PG_MAJOR-"*; do
    [ -e "$leftover" ] || continue
    log "stash: removing the leftover $leftover of an interrupted start"
    rm -rf "$leftover"
  done
}

stash_copy_tree() {
  local src=$1 root=$2
  mkdir -p "$root$src"
  cp -RP --preserve=mode,timestamps "$src/." "$root$src/"
}

stash_binaries() {
  local target="$PGSTEWARD_STASH_DIR/$PG_MAJOR" tmp old bytes free lib
  stash_sources
  mkdir -p "$PGSTEWARD_STASH_DIR"
  stash_clean_leftovers
  if stash_current; then
    bytes=$(dir_bytes "$target")
    log "stash: $target is current ($(mib "$bytes") MiB), left untouched"
    STASH_BYTES=$bytes
    return 0
  fi
  bytes=$(stash_wanted_bytes)
  free=$(free_bytes "$PGSTEWARD_VOLUME")
  if [ "$free" -lt $((bytes + PGSTEWARD_MIN_FREE_MB * 1024 * 1024)) ]; then
    log "WARNING: stash: skipped, $(mib "$free") MiB free on $PGSTEWARD_VOLUME and the stash needs $(mib "$bytes") MiB; a later major upgrade will not find this major's binaries"
    STASH_BYTES=0
    return 0
  fi
  tmp="$PGSTEWARD_STASH_DIR/.tmp-$PG_MAJOR-$$"
  mkdir -p "$tmp/root"
  stash_copy_tree "$STASH_BINDIR" "$tmp/root"
  stash_copy_tree "$STASH_PKGLIBDIR" "$tmp/root"
  stash_copy_tree "$STASH_SHAREDIR" "$tmp/root"
  if [ -n "$STASH_LIBPQ" ]; then
    lib="$tmp/root$STASH_PKGLIBDIR"
    cp -P "$STASH_LIBPQ" "$lib/" 2>/dev/null || true
    cp --preserve=mode,timestamps "$(readlink -f "$STASH_LIBPQ")" "$lib/"
  fi
  ln -s "root$STASH_BINDIR" "$tmp/bin"
  ln -s "root$STASH_PKGLIBDIR" "$tmp/lib"
  ln -s "root$STASH_SHAREDIR" "$tmp/share"
  printf '%s\n' "$STASH_VERSION" >"$tmp/$STASH_MARKER"
  sync -f "$tmp" 2>/dev/null || true
  fault_point stash-rename
  if [ -e "$target" ]; then
    old="$PGSTEWARD_STASH_DIR/.old-$PG_MAJOR-$$"
    mv "$target" "$old"
  fi
  mv "$tmp" "$target"
  [ -z "${old:-}" ] || rm -rf "$old"
  STASH_BYTES=$(dir_bytes "$target")
  log "stash: copied PostgreSQL $PG_MAJOR's bin, lib and share to $target ($(mib "$STASH_BYTES") MiB)"
}

# --- hooks of the restore and upgrade work ---------------------------------------

run_hook() {
  local script="$here/$1" rc=0
  shift
  [ -x "$script" ] || die "missing $script: this image is incomplete" 1
  "$script" "$@" || rc=$?
  if [ "$rc" -ne 0 ]; then
    # Also after a refusal that recorded nothing new (the previous image
    # finding data past an upgrade's point of no return exits 2; a failed
    # bootstrap restore is not run again).
    publish_results
    die "$(basename "$script") $* failed (exit $rc); its result file in $PGSTEWARD_STATE_DIR says why" "$rc"
  fi
}

# --- background helpers -----------------------------------------------------------
# Helpers started here become children of the postmaster after the exec (and
# in a container every orphan is reaped by PID 1, the postmaster too).
# PostgreSQL treats an untracked child that exits with anything but 0 or 1,
# or is killed by a signal, as a crashed backend and restarts every session
# (postmaster.c, "untracked child process"). So the process the postmaster
# inherits is always a wrapper subshell that exits 0.

# run_helper CMD...: CMD in the background for as long as this server runs;
# stopped when the server's process is gone.
run_helper() {
  local main=$$
  (
    set +e
    "$@" &
    child=$!
    while kill -0 "$main" 2>/dev/null && kill -0 "$child" 2>/dev/null; do
      sleep 2
    done
    kill "$child" 2>/dev/null
    wait "$child" 2>/dev/null
    exit 0
  ) &
}

start_scheduler() {
  [ "${_PGSTEWARD_SCHEDULER:-}" != cron ] || return 0
  scheduled_backups_wanted || return 0
  if is_root; then
    return 0
  fi
  log "scheduled backups: '$PGSTEWARD_BACKUP_SCHEDULE' via the built-in scheduler (Debian cron needs root)"
  run_helper "$here/backup-scheduler.sh" run --watch-pid "$$"
}

# start_post_hooks: in the background, once the server this process becomes
# accepts connections (not the official entrypoint's temporary init server),
# the monitoring role (monitoring.sh setup), then upgrade.sh post (analyze,
# extension updates, a new full backup, clean-up of the old data).
start_post_hooks() {
  local main=$$
  (
    set +e
    while kill -0 "$main" 2>/dev/null; do
      if [ "$(head -n1 "$PGDATA/postmaster.pid" 2>/dev/null)" = "$main" ] && pg_isready -q >/dev/null 2>&1; then
        "$here/monitoring.sh" setup || log "monitoring.sh setup exited $?; the exporter cannot connect until the next start"
        "$here/upgrade.sh" post || log "upgrade.sh post exited $?; see $PGSTEWARD_STATE_DIR/upgrade.json"
        break
      fi
      sleep 1
    done
    exit 0
  ) &
}

# --- main -------------------------------------------------------------------------

main() {
  if [ "$#" -eq 0 ] || [ "${1:0:1}" = '-' ]; then
    set -- postgres "$@"
  fi
  if [ "$1" != postgres ] || want_help "$@"; then
    exec "$DOCKER_ENTRYPOINT" "$@"
  fi
  shift
  SERVER_ARGS=(
    -c "config_file=$PGSTEWARD_CONFIG_DIR/postgresql.conf"
    -c "hba_file=$PGSTEWARD_CONFIG_DIR/pg_hba.conf"
    -c "ident_file=$PGSTEWARD_CONFIG_DIR/pg_ident.conf"
    -c "unix_socket_directories=$PGSTEWARD_RUN_DIR"
    "$@"
  )
  local port
  port=$(port_from_args "$@")
  [ -z "$port" ] || export PGPORT=$port
  export PGHOST=${PGHOST:-$PGSTEWARD_RUN_DIR}

  resolve_file_env
  preflight
  if is_root; then
    prepare_dirs
    setup_cron
    drop_privileges postgres "$@"
  fi

  record_progress preflight
  stash_binaries
  record_progress stash "$(jq -cn --arg path "$PGSTEWARD_STASH_DIR/$PG_MAJOR" --argjson bytes "${STASH_BYTES:-0}" \
    --arg version "$STASH_VERSION" '{stash: {path: $path, bytes: $bytes, version: $version}}')"
  run_hook upgrade.sh auto
  record_progress upgrade
  run_hook restore.sh auto
  record_progress restore
  start_scheduler
  start_post_hooks
  record_progress exec
  exec "$DOCKER_ENTRYPOINT" postgres "${SERVER_ARGS[@]}"
}

main "$@"
