# shellcheck shell=bash
# Helpers for the kind end-to-end scripts. Sourced, never executed.

KIND_CLUSTER=${KIND_CLUSTER:-pgsteward}
E2E_NAMESPACE=${E2E_NAMESPACE:-pgsteward-e2e}
OPERATOR_NAMESPACE=${OPERATOR_NAMESPACE:-pgsteward-system}
# Where the chart and the images come from; the README quickstart uses the same.
OPERATOR_IMAGE=${OPERATOR_IMAGE:-ghcr.io/pgsteward/operator:dev}
POSTGRES_REPOSITORY=${POSTGRES_REPOSITORY:-ghcr.io/pgsteward/postgres}
POSTGRES_VARIANT=${POSTGRES_VARIANT:-standard-trixie}

log() { printf '%s [%s] %s\n' "$(date -u +%H:%M:%S)" "${0##*/}" "$*" >&2; }
die() {
  log "FAIL: $*"
  exit 1
}

# Run "$@" until it succeeds, at most $1 seconds.
retry_for() {
  local budget=$1 start=$SECONDS
  shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS - start < budget)) || return 1
    sleep 3
  done
}

# The status of one condition of a PgInstance ("True", "False" or "").
condition() {
  kubectl -n "$E2E_NAMESPACE" get pginstance "$1" \
    -o jsonpath="{.status.conditions[?(@.type==\"$2\")].status}" 2>/dev/null
}

# Wait until the PgInstance $1 is Ready for the spec it has now, with no
# upgrade or restore under way (and, with $3, running that major).
wait_ready() {
  local name=$1 budget=${2:-900} major=${3:-} start=$SECONDS
  log "waiting for pginstance/$name to be Ready${major:+ on PostgreSQL $major}"
  until settled "$name" "$major"; do
    if ((SECONDS - start > budget)); then
      kubectl -n "$E2E_NAMESPACE" get pginstance "$name" -o yaml >&2 || true
      die "pginstance/$name not Ready${major:+ on $major} after ${budget}s"
    fi
    sleep 5
  done
}

settled() {
  local name=$1 major=$2 gen observed
  gen=$(kubectl -n "$E2E_NAMESPACE" get pginstance "$name" -o jsonpath='{.metadata.generation}')
  observed=$(kubectl -n "$E2E_NAMESPACE" get pginstance "$name" -o jsonpath='{.status.observedGeneration}' 2>/dev/null || true)
  [ "$gen" = "$observed" ] &&
    [ "$(condition "$name" Ready)" = True ] &&
    [ "$(condition "$name" Upgrading)" != True ] &&
    [ "$(condition "$name" Restoring)" != True ] &&
    { [ -z "$major" ] || [ "$(kubectl -n "$E2E_NAMESPACE" get pginstance "$name" -o jsonpath='{.status.postgresVersion}')" = "$major" ]; }
}

# psql as the superuser inside the instance's pod, over the local socket.
psql_in() {
  local name=$1
  shift
  kubectl -n "$E2E_NAMESPACE" exec "$name-0" -- psql -U postgres -d postgres -v ON_ERROR_STOP=1 -qAt "$@"
}

count_rows() {
  psql_in "$1" -c 'SELECT count(*) FROM e2e_rows'
}

expect_rows() {
  local name=$1 want=$2 got
  got=$(count_rows "$name")
  [ "$got" = "$want" ] || die "pginstance/$name has $got rows in e2e_rows, expected $want"
  log "pginstance/$name has the expected $want rows"
}
