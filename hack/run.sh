#!/usr/bin/env bash
# make run: install the CRDs into a cluster and run the operator against it,
# logging as text. Ctrl-C stops the operator.
#
# The cluster is the current kube context's (KUBECONFIG) when it answers;
# otherwise a local Kubernetes started on 127.0.0.1 by e2e/node/up.sh (its
# first start builds it from the Go module proxy, for several minutes; later
# ones take seconds). That one keeps running after the operator stops, so
# kubectl keeps working; e2e/node/down.sh stops it.
#
# Exit codes: 0 stopped normally; 1 the local cluster could not be installed
# or started; 3 this machine cannot run the local cluster and no other is
# reachable (it says why); anything else: the build or the operator failed.
set -Eeuo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

log() { printf '%s [run] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

PGSTEWARD_CACHE=${PGSTEWARD_CACHE:-/var/cache/pgsteward}
export PATH="$PGSTEWARD_CACHE/bin:$PATH" PGSTEWARD_CACHE

command -v kubectl >/dev/null 2>&1 || e2e/setup/test-deps.sh kubectl

# start_local_node: a node for the local cluster, with the PostgreSQL images
# the operator gives a PgInstance (e2e/node/image.sh, no registry involved),
# so `kubectl apply` of a sample ends with a running PostgreSQL. Without root
# the cluster stays without a node, and says so.
node_ready=false
start_local_node() {
  local rc=0 major
  [ "$(id -u)" -eq 0 ] || return 0
  e2e/node/node-up.sh >&2 || rc=$?
  [ "$rc" -eq 0 ] || { log "the local node did not start (exit $rc): pods will stay Pending"; return 0; }
  log "PostgreSQL images for the node: the first run builds PostgreSQL 17 and 18 from Debian's sources (minutes, once)"
  e2e/setup/install-postgres.sh 17 18
  for major in 17 18; do
    e2e/node/image.sh import postgres "$major" >/dev/null
  done
  # image.sh builds on bookworm, the suite the cached builds link against.
  export PGSTEWARD_POSTGRES_IMAGE_VARIANT=standard-bookworm
  node_ready=true
}

local_cluster=false
local_kubeconfig="${PGSTEWARD_NODE_DIR:-/tmp/pgsteward-node}/admin.kubeconfig"
if [ "${KUBECONFIG:-}" = "$local_kubeconfig" ] && kubectl version --request-timeout=5s >/dev/null 2>&1; then
  # The local cluster of an earlier `make run`, still running.
  local_cluster=true
  start_local_node
elif ! kubectl version --request-timeout=5s >/dev/null 2>&1; then
  context=$(kubectl config current-context 2>/dev/null || true)
  log "no reachable Kubernetes cluster${context:+ in context \"$context\"}: starting a local one (e2e/node/up.sh)"
  log "its first start builds Kubernetes from the Go module proxy: several minutes, with progress below; later starts take seconds"
  rc=0
  kubeconfig=$(e2e/node/up.sh) || rc=$?
  if [ "$rc" -ne 0 ]; then
    log "the local cluster did not start; point KUBECONFIG at a cluster and run \`make run\` again"
    exit "$rc"
  fi
  export KUBECONFIG=$kubeconfig
  local_cluster=true
  start_local_node
fi

log "building the operator"
cargo build --quiet --locked -p pgsteward-operator

cat >&2 <<EOF

  The operator runs against $(kubectl config current-context) ($(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')).
  In another terminal:

    export KUBECONFIG=${KUBECONFIG:-$HOME/.kube/config}
    kubectl apply -f config/samples/pginstance-minimal.yaml
    kubectl get pginstance -w
$(if $local_cluster && ! $node_ready; then printf '\n  The local cluster has no node (it needs root): its pods stay Pending.\n'; fi)
$(if $local_cluster; then printf '\n  The local cluster keeps running after the operator stops; stop it with e2e/node/down.sh.\n'; fi)
EOF

# The operator checks the cluster itself too (and says the same in one line).
exec "${CARGO_TARGET_DIR:-target}/debug/pgsteward-operator" run \
  --install-crds \
  --log-format "${PGSTEWARD_LOG_FORMAT:-text}" \
  --metrics-addr "${PGSTEWARD_METRICS_ADDR:-127.0.0.1:8080}" \
  --leader-election "${PGSTEWARD_LEADER_ELECTION:-false}" \
  "$@"
