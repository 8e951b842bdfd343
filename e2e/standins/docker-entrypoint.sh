#!/usr/bin/env bash
# =============================================================================
# STAND-IN for the official postgres image's docker-entrypoint.sh
# (docker-library/postgres). It is NOT that script and never ships in an image.
# =============================================================================
# The image tier runs offline, where the official script is not available. Our
# entrypoint.sh wraps whatever $DOCKER_ENTRYPOINT names; in the image that is
# the real /usr/local/bin/docker-entrypoint.sh, in the tests it is this file.
# It follows the documented contract (see ../shared/reference/postgres-image.md):
#
#   1. A first argument starting with `-` gets `postgres` put in front. Only the
#      command `postgres` (and not --help/--version …) gets the set-up.
#   2. POSTGRES_PASSWORD, POSTGRES_USER (default postgres), POSTGRES_DB (default
#      the user), POSTGRES_INITDB_ARGS, POSTGRES_HOST_AUTH_METHOD, each also as
#      a *_FILE variant (setting both is an error).
#   3. As root: create and chown PGDATA (mode 700) and the socket directory,
#      then run itself again as `postgres` (gosu, or setpriv when gosu is absent).
#   4. Only when $PGDATA/PG_VERSION is missing: refuse without a password
#      (unless the auth method is trust), initdb, append
#      `host all all all <auth>` to $PGDATA/pg_hba.conf, start a temporary
#      server with the same extra arguments on the socket only, create
#      POSTGRES_DB, run $DOCKER_ENTRYPOINT_INITDB_DIR/* (*.sh, *.sql,
#      *.sql.gz|.xz|.zst) in sorted order, stop the temporary server.
#   5. exec "$@".
#
# Differences from the real script, all about running outside a container:
#   - psql reaches the temporary server through $PGHOST when it is set (the test
#     binaries' compiled-in socket directory is /tmp, the image's is
#     /var/run/postgresql); the real script blanks PGHOST and relies on that default.
#   - the socket directory is $PGSTEWARD_RUN_DIR (default /var/run/postgresql).
#   - the init-scripts directory is $DOCKER_ENTRYPOINT_INITDB_DIR
#     (default /docker-entrypoint-initdb.d).
#   - no nss_wrapper for arbitrary uids, no POSTGRES_INITDB_WALDIR, no check for
#     the pre-18 /var/lib/postgresql/data layout.
#
# Exit codes: 1 bad input or a failed initialisation step; otherwise the
# command's own (after exec).
set -Eeuo pipefail

RUN_DIR=${PGSTEWARD_RUN_DIR:-/var/run/postgresql}
INITDB_DIR=${DOCKER_ENTRYPOINT_INITDB_DIR:-/docker-entrypoint-initdb.d}

log() {
  printf '%s [docker-entrypoint.sh] %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2
}

# file_env VAR [DEFAULT]: VAR from the environment or from the file VAR_FILE names.
file_env() {
  local var=$1 def=${2:-} file_var="${1}_FILE" val
  if [ -n "${!var:-}" ] && [ -n "${!file_var:-}" ]; then
    log "error: both $var and $file_var are set (but are exclusive)"
    exit 1
  fi
  val=$def
  if [ -n "${!var:-}" ]; then
    val=${!var}
  elif [ -n "${!file_var:-}" ]; then
    val=$(<"${!file_var}")
  fi
  export "$var=$val"
  unset "$file_var"
}

# postgres --help, --version … skip the set-up, as in the real script.
want_help() {
  local arg
  for arg; do
    case "$arg" in
      -'?' | --help | --describe-config | -V | --version) return 0 ;;
    esac
  done
  return 1
}

setup_env() {
  file_env POSTGRES_PASSWORD
  file_env POSTGRES_USER postgres
  file_env POSTGRES_DB "$POSTGRES_USER"
  file_env POSTGRES_INITDB_ARGS
  : "${POSTGRES_HOST_AUTH_METHOD:=}"
  : "${PGDATA:?PGDATA must be set}"
  DATABASE_ALREADY_EXISTS=
  if [ -s "$PGDATA/PG_VERSION" ]; then
    DATABASE_ALREADY_EXISTS=true
  fi
}

create_db_directories() {
  mkdir -p "$PGDATA"
  chmod 00700 "$PGDATA" || :
  mkdir -p "$RUN_DIR" || :
  chmod 03775 "$RUN_DIR" || :
  if [ "$(id -u)" = 0 ]; then
    find "$PGDATA" \! -user postgres -exec chown postgres '{}' +
    find "$RUN_DIR" \! -user postgres -exec chown postgres '{}' +
  fi
}

verify_minimum_env() {
  if [ -z "$POSTGRES_PASSWORD" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != trust ]; then
    log "error: Database is uninitialized and superuser password is not specified."
    log "       You must specify POSTGRES_PASSWORD to a non-empty value for the superuser."
    log "       (or POSTGRES_HOST_AUTH_METHOD=trust to allow all connections without a password)"
    exit 1
  fi
}

init_database_dir() {
  local pwfile
  pwfile=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  # shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of words, as in the real script
  initdb --username="$POSTGRES_USER" --pwfile="$pwfile" $POSTGRES_INITDB_ARGS
  rm -f "$pwfile"
}

setup_hba_conf() {
  local auth=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}
  printf '\n%s\n' "host all all all $auth" >>"$PGDATA/pg_hba.conf"
}

# psql_temp [--dbname DB] ARGS...: psql on the temporary server (POSTGRES_DB by default).
psql_temp() {
  local db=${POSTGRES_DB:-}
  if [ "${1:-}" = --dbname ]; then
    db=$2
    shift 2
  fi
  local args=(psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc)
  [ -z "$db" ] || args+=(--dbname "$db")
  PGHOST=${PGHOST:-/var/run/postgresql} PGHOSTADDR='' "${args[@]}" "$@"
}

temp_server_start() {
  shift # the command name, postgres
  set -- "$@" -c listen_addresses='' -p "${PGPORT:-5432}"
  NOTIFY_SOCKET='' PGUSER="${PGUSER:-$POSTGRES_USER}" \
    pg_ctl -D "$PGDATA" -o "$(printf '%q ' "$@")" -w start
}

temp_server_stop() {
  PGUSER="${PGUSER:-postgres}" pg_ctl -D "$PGDATA" -m fast -w stop
}

setup_db() {
  local exists
  if [ "$POSTGRES_DB" != postgres ]; then
    exists=$(psql_temp --dbname postgres --tuples-only --no-align --set db="$POSTGRES_DB" <<'SQL'
SELECT 1 FROM pg_database WHERE datname = :'db' ;
SQL
    )
    if [ -z "$exists" ]; then
      psql_temp --dbname postgres --set db="$POSTGRES_DB" <<'SQL'
CREATE DATABASE :"db" ;
SQL
    fi
  fi
}

process_init_files() {
  local f
  [ -d "$INITDB_DIR" ] || return 0
  for f in "$INITDB_DIR"/*; do
    [ -e "$f" ] || continue
    case "$f" in
      *.sh)
        if [ -x "$f" ]; then
          log "running $f"
          "$f"
        else
          log "sourcing $f"
          # shellcheck disable=SC1090 # user-provided init script
          . "$f"
        fi
        ;;
      *.sql) log "running $f"; psql_temp -f "$f" ;;
      *.sql.gz) log "running $f"; gunzip -c "$f" | psql_temp ;;
      *.sql.xz) log "running $f"; xzcat "$f" | psql_temp ;;
      *.sql.zst) log "running $f"; zstd -dc "$f" | psql_temp ;;
      *) log "ignoring $f" ;;
    esac
  done
}

drop_privileges() {
  if command -v gosu >/dev/null 2>&1; then
    exec gosu postgres "${BASH_SOURCE[0]}" "$@"
  fi
  exec setpriv --reuid=postgres --regid=postgres --init-groups -- "${BASH_SOURCE[0]}" "$@"
}

main() {
  if [ "$#" -eq 0 ] || [ "${1:0:1}" = '-' ]; then
    set -- postgres "$@"
  fi
  if [ "$1" = postgres ] && ! want_help "$@"; then
    log "stand-in for the official docker-entrypoint.sh (e2e/standins), not the real script"
    setup_env
    create_db_directories
    if [ "$(id -u)" = 0 ]; then
      drop_privileges "$@"
    fi
    if [ -z "$DATABASE_ALREADY_EXISTS" ]; then
      verify_minimum_env
      init_database_dir
      setup_hba_conf
      export PGPASSWORD="${PGPASSWORD:-$POSTGRES_PASSWORD}"
      temp_server_start "$@"
      setup_db
      process_init_files
      temp_server_stop
      unset PGPASSWORD
      log "PostgreSQL init process complete; ready for start up."
    else
      log "PostgreSQL Database directory appears to contain a database; Skipping initialization"
    fi
  fi
  exec "$@"
}

main "$@"
