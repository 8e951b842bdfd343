#!/usr/bin/env bash
# smoke-test.sh — checks a built pgsteward PostgreSQL image in Docker, the way
# the image tier (e2e/image) checks the scripts on a host. Run by
# .github/workflows/bake.yaml after the build; runs locally too:
#
#   images/postgres/smoke-test.sh IMAGE TYPE
#   images/postgres/smoke-test.sh localhost:5000/postgres:18-standard-trixie standard
#
# Each step names what it proves. Containers and volumes it creates are
# removed at the end, whatever happens.
#
# Exit codes: 0 every check passed; 1 a check failed (the log says which);
# 2 usage or no Docker.
set -Eeuo pipefail

IMAGE=${1:-}
TYPE=${2:-}
PASSWORD=smoke-test-password
NAME="pgsteward-smoke-$$"
VOLUME="$NAME-data"
CONFD=''

log() { printf '%s [smoke-test.sh] %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }
fail() {
  log "FAIL: $*"
  docker logs "$NAME" 2>&1 | tail -n 50 >&2 || true
  exit 1
}
pass() { log "ok: $*"; }

usage() {
  echo "usage: $0 IMAGE minimal|standard" >&2
  exit 2
}

cleanup() {
  docker rm -f "$NAME" "$NAME-uid999" >/dev/null 2>&1 || true
  docker volume rm -f "$VOLUME" "$VOLUME-uid999" >/dev/null 2>&1 || true
  [ -z "$CONFD" ] || rm -rf "$CONFD"
}

psql_exec() {
  docker exec -i "$NAME" psql -X -A -t -q -v ON_ERROR_STOP=1 -U postgres -d postgres "$@"
}

wait_healthy() {
  local name=$1 state='' i
  for i in $(seq 1 90); do
    state=$(docker inspect -f '{{.State.Status}} {{.State.Health.Status}}' "$name" 2>/dev/null || echo gone)
    case "$state" in
      'running healthy') return 0 ;;
      running*) ;;
      *) fail "$name stopped while starting ($state, exit code $(docker inspect -f '{{.State.ExitCode}}' "$name" 2>/dev/null))" ;;
    esac
    sleep 2
  done
  fail "$name not healthy after $((i * 2))s ($state)"
}

start_server() {
  docker run -d --name "$NAME" -e POSTGRES_PASSWORD="$PASSWORD" \
    -v "$VOLUME:/var/lib/postgresql" -v "$CONFD:/etc/postgresql/conf.d:ro" \
    "$IMAGE" "$@" >/dev/null
  wait_healthy "$NAME"
}

stash_listing() {
  docker exec "$NAME" sh -c 'cd "/var/lib/postgresql/pgsteward/stash/$PG_MAJOR" && find . -printf "%i %T@ %p\n" | sort'
}

check_defaults() {
  [ "$(psql_exec -c 'show config_file')" = /etc/postgresql/postgresql.conf ] || fail "config_file is not /etc/postgresql/postgresql.conf"
  pass "SHOW config_file is /etc/postgresql/postgresql.conf"
  [ "$(psql_exec -c 'show work_mem')" = 128MB ] || fail "conf.d/override.conf did not set work_mem"
  pass "conf.d/override.conf work_mem = 128MB is in force"
  psql_exec -c 'create extension pg_stat_statements' -c 'create table counted(x int)' >/dev/null
  for _ in 1 2 3; do psql_exec -c 'select count(*) from counted where x > 41' >/dev/null; done
  [ "$(psql_exec -c "select calls from pg_stat_statements where query like 'select count(*) from counted where x > \$1'")" = 3 ] ||
    fail "pg_stat_statements did not count 3 calls"
  pass "pg_stat_statements is preloaded and counts queries"
  psql_exec -c 'select pg_sleep(1.2) /* slow-marker */' -c 'select pg_sleep(0.05) /* fast-marker */' >/dev/null
  sleep 1
  local logs
  logs=$(docker logs "$NAME" 2>&1)
  grep -q 'duration: .*slow-marker' <<<"$logs" || fail "the slow query is not in the log"
  ! grep -q 'fast-marker' <<<"$logs" || fail "a fast query was logged"
  pass "a slow query is logged, a fast one is not"
  if docker exec -e PGPASSWORD=wrong "$NAME" psql -h 127.0.0.1 -U postgres -c 'select 1' >/dev/null 2>&1; then
    fail "a wrong password was accepted over TCP"
  fi
  docker exec -e PGPASSWORD="$PASSWORD" "$NAME" psql -h 127.0.0.1 -U postgres -Atc 'select 1' >/dev/null ||
    fail "the right password was refused over TCP"
  pass "a wrong password over TCP is rejected, the right one accepted"
}

check_type() {
  if [ "$TYPE" = standard ]; then
    docker run --rm --entrypoint wal-g "$IMAGE" --version >/dev/null || fail "wal-g --version failed"
    docker run --rm --entrypoint sh "$IMAGE" -c 'command -v cron' >/dev/null || fail "cron is missing from the standard image"
    ! docker run --rm --entrypoint sh "$IMAGE" -c 'command -v curl' >/dev/null || fail "curl was not purged"
    pass "standard: wal-g --version runs, cron is installed, curl is gone"
  else
    ! docker run --rm --entrypoint sh "$IMAGE" -c 'command -v wal-g || command -v cron' >/dev/null ||
      fail "the minimal image contains wal-g or cron"
    pass "minimal: no wal-g, no cron"
  fi
  docker run --rm --entrypoint sh "$IMAGE" -c 'command -v jq' >/dev/null || fail "jq is missing"
}

check_docker_run_paths() {
  local out
  out=$(docker run --rm "$IMAGE" bash -c 'echo hello-from-bash') || fail "docker run IMAGE bash failed"
  [ "$out" = hello-from-bash ] || fail "docker run IMAGE bash printed '$out'"
  out=$(docker run --rm "$IMAGE" postgres --version) || fail "postgres --version failed"
  grep -q '(PostgreSQL)' <<<"$out" || fail "postgres --version printed '$out'"
  pass "docker run IMAGE bash / postgres --version run as-is"
  local rc=0
  out=$(docker run --rm "$IMAGE" 2>&1) || rc=$?
  [ "$rc" -eq 2 ] || fail "a missing password exited $rc, not 2"
  [ "$(printf '%s\n' "$out" | grep -c 'ERROR:')" -eq 1 ] || fail "a missing password did not give exactly one error line"
  pass "a missing password is refused with one log line and exit 2"
  # As the operator runs it: uid 999, no root at all.
  docker run -d --name "$NAME-uid999" --user 999:999 -e POSTGRES_PASSWORD="$PASSWORD" \
    -v "$VOLUME-uid999:/var/lib/postgresql" "$IMAGE" >/dev/null
  wait_healthy "$NAME-uid999"
  pass "runs as uid 999 (runAsUser, as under the operator)"
}

main() {
  case "$TYPE" in minimal | standard) ;; *) usage ;; esac
  [ -n "$IMAGE" ] || usage
  if ! docker info >/dev/null 2>&1; then
    echo "smoke-test.sh needs docker and a running Docker daemon" >&2
    exit 2
  fi
  trap cleanup EXIT
  CONFD=$(mktemp -d)
  printf 'work_mem = 128MB\n' >"$CONFD/override.conf"
  chmod 0755 "$CONFD" && chmod 0644 "$CONFD/override.conf"

  log "image $IMAGE ($TYPE): $(docker run --rm "$IMAGE" postgres --version)"
  start_server
  pass "accepts connections with the default config"
  check_defaults
  psql_exec -c 'create table kept as select generate_series(1, 100) id' >/dev/null
  docker exec "$NAME" sh -c 'test -x "/var/lib/postgresql/pgsteward/stash/$PG_MAJOR/bin/postgres"' ||
    fail "the binary stash is missing"
  local before after
  before=$(stash_listing)
  log "stash: $(docker exec "$NAME" sh -c 'du -sh "/var/lib/postgresql/pgsteward/stash/$PG_MAJOR" | cut -f1')"
  docker restart "$NAME" >/dev/null
  wait_healthy "$NAME"
  after=$(stash_listing)
  [ "$before" = "$after" ] || fail "the second start changed the stash"
  [ "$(psql_exec -c 'select count(*) from kept')" = 100 ] || fail "rows lost across a restart"
  pass "the stash appears and a restart leaves it (and the rows) untouched"
  docker rm -f "$NAME" >/dev/null
  start_server -c work_mem=1MB
  [ "$(psql_exec -c 'show work_mem')" = 1MB ] || fail "docker run IMAGE -c work_mem=1MB did not reach postgres"
  pass "docker run arguments reach postgres"
  check_type
  check_docker_run_paths
  log "all smoke tests passed for $IMAGE"
}

main "$@"
