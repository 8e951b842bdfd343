#!/usr/bin/env bash
# monitoring.sh — what the metrics exporter (postgres_exporter, a process of
# its own beside PostgreSQL) connects as and reads:
#
#   monitoring.sh setup
#
# run by the entrypoint once the server accepts connections, when
# PGSTEWARD_MONITORING_PASSWORD is set. Idempotent, in one transaction:
#   - the role $PGSTEWARD_MONITORING_USER (default pgsteward_monitor): LOGIN,
#     member of pg_monitor, nothing else (never superuser), at most 3
#     connections, its password set from the environment on every start (so
#     a rotated Secret takes effect at the next start);
#   - pgsteward.state(kind): the image's latest result documents (backup,
#     backup-succeeded, upgrade, restore) from $PGSTEWARD_STATE_DIR, as jsonb,
#     for the exporter's queries (images/postgres/config/exporter/queries.yaml).
#     SECURITY DEFINER with a fixed search_path: it reads those four files
#     and nothing else, whatever it is passed; only the monitoring role may
#     run it.
# A server in recovery (a replica) is left alone: it gets both from its
# primary. The password never reaches the server's log: the session turns
# statement and error-statement logging off before it is sent.
#
# Exit codes: 0 done (or nothing to do); 1 the server refused it; 2 usage.
set -Eeuo pipefail
PGSTEWARD_LOG_NAME=monitoring
# shellcheck source=images/postgres/scripts/pgsteward-lib.sh
. "$(dirname "$0")/pgsteward-lib.sh"

MONITORING_USER=${PGSTEWARD_MONITORING_USER:-pgsteward_monitor}

setup() {
  # Without a password there is no exporter to connect: nothing to do.
  [ -n "${PGSTEWARD_MONITORING_PASSWORD:-}" ] || return 0
  [[ "$MONITORING_USER" =~ ^[a-z_][a-z0-9_]{0,62}$ ]] ||
    die "PGSTEWARD_MONITORING_USER must be 1-63 lower-case letters, digits or '_', starting with a letter or '_'" 2
  if [ "$(psql -XAtq -c 'select pg_is_in_recovery()')" = t ]; then
    log "in recovery: the monitoring role and pgsteward.state come from the primary"
    return 0
  fi
  # psql reads the password from its environment (\getenv), never from argv.
  psql -XAtq -v ON_ERROR_STOP=1 -v role="$MONITORING_USER" -v state_dir="$PGSTEWARD_STATE_DIR" >/dev/null <<'SQL' ||
\getenv password PGSTEWARD_MONITORING_PASSWORD
set log_statement = 'none';
set log_min_duration_statement = -1;
set log_min_error_statement = panic;
begin;
select format('create role %I', :'role')
 where not exists (select from pg_roles where rolname = :'role') \gexec
alter role :"role" with login nosuperuser nocreatedb nocreaterole noreplication nobypassrls
  connection limit 3 password :'password';
grant pg_monitor to :"role";
create schema if not exists pgsteward;
revoke all on schema pgsteward from public;
grant usage on schema pgsteward to :"role";
select format($f$
create or replace function pgsteward.state(kind text) returns jsonb
language plpgsql stable security definer set search_path = pg_catalog, pg_temp as $body$
begin
  if kind is null or kind not in ('backup', 'backup-succeeded', 'upgrade', 'restore') then
    raise exception 'pgsteward.state: unknown kind %%', kind;
  end if;
  return pg_read_file(%L || '/' || kind || '.json', true)::jsonb;
exception when invalid_text_representation then
  return null;
end $body$$f$, :'state_dir') \gexec
revoke all on function pgsteward.state(text) from public;
grant execute on function pgsteward.state(text) to :"role";
commit;
SQL
    die "setting up the monitoring role $MONITORING_USER failed (see the server log)" 1
  log "monitoring role $MONITORING_USER and pgsteward.state ready"
}

case "${1:-}" in
  setup) setup ;;
  *) echo "usage: $0 setup" >&2; exit 2 ;;
esac
