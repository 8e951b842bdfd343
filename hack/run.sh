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

local_cluster=false
if ! kubectl version --request-timeout=5s >/dev/null 2>&1; then
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
fi

log "building the operator"
cargo build --quiet --locked -p pgsteward-operator

cat >&2 <<EOF

  The operator runs against $(kubectl config current-context) ($(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')).
  In another terminal:

    export KUBECONFIG=${KUBECONFIG:-$HOME/.kube/config}
    kubectl apply -f config/samples/pginstance-minimal.yaml
    kubectl get pginstance -w
$(if $local_cluster; then printf '\n  The local cluster has no node: its pods stay Pending. Stop it with e2e/node/down.sh.\n'; fi)
EOF

# The operator checks the cluster itself too (and says the same in one line).
exec "${CARGO_TARGET_DIR:-target}/debug/pgsteward-operator" run \
  --install-crds \
  --log-format "${PGSTEWARD_LOG_FORMAT:-text}" \
  --metrics-addr "${PGSTEWARD_METRICS_ADDR:-127.0.0.1:8080}" \
  --leader-election "${PGSTEWARD_LEADER_ELECTION:-false}" \
  "$@"
