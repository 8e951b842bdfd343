#!/usr/bin/env bash
# The scale benchmark (`make bench-scale`): 500 PgInstances against whatever
# API server KUBECONFIG reaches. It prints:
#   - the time until every object the instances own exists;
#   - p50/p99 from a spec change to the updated StatefulSet;
#   - writes per idle reconcile (should be 0);
#   - the operator's RSS.
# Without a reachable API server it prints one SKIP line and exits 0.
#
# The pods it causes never start (a nodeSelector no node has), but on a real
# cluster the StatefulSets still create 500 PVCs: with a StorageClass that
# binds immediately, set BENCH_STORAGE_CLASS to one that waits for a consumer.
#
# Environment:
#   BENCH_INSTANCES     how many PgInstances (default 500)
#   BENCH_NAMESPACE     a namespace that must not exist yet (default pgsteward-bench-<time>)
#   BENCH_OPERATOR      "local" (default): build the operator and run it here
#                       against the same server; "external": one already runs
#                       there (for example installed with the chart)
#   BENCH_METRICS_URL   the operator's /metrics (default with "local": the one it serves here)
#   BENCH_OPERATOR_PID  its pid for the RSS figure, when it runs here but "external"
#   BENCH_CARGO_PROFILE cargo profile for the local build (default release)
#   BENCH_KEEP=1        leave the namespace and its objects behind
#   BENCH_JSON          also write the figures to this file as JSON
#   BENCH_EXPECT        owned objects per instance (default StatefulSet=1,Service=2,ConfigMap=1,Secret=1)
#
# Exit codes: 0 figures printed, or skipped (it says why); 1 the benchmark failed.
set -Eeuo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
PGSTEWARD_CACHE=${PGSTEWARD_CACHE:-/var/cache/pgsteward}
export PATH="$PGSTEWARD_CACHE/bin:$PATH"

log() { printf '%s [%s] %s\n' "$(date -u +%H:%M:%S)" "${0##*/}" "$*" >&2; }
skip() {
  echo "SKIP bench-scale: $*"
  exit 0
}

command -v kubectl >/dev/null || skip "kubectl is not installed (run \`make test-deps\`, which puts it in $PGSTEWARD_CACHE/bin)"

# Reachability: a bounded request that fails fast when KUBECONFIG points
# nowhere (a missing file makes kubectl try localhost:8080).
if ! probe=$(kubectl --request-timeout=5s get --raw /readyz 2>&1); then
  skip "no Kubernetes API server reachable (KUBECONFIG=${KUBECONFIG:-~/.kube/config}): $(printf '%s' "$probe" | tail -n1)"
fi
server=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}' 2>/dev/null || true)
log "API server ${server:-(in-cluster)} is ready"

python=$PGSTEWARD_CACHE/venv/bin/python3
[ -x "$python" ] || python=python3
instances=${BENCH_INSTANCES:-500}
namespace=${BENCH_NAMESPACE:-pgsteward-bench-$(date -u +%Y%m%d%H%M%S)}
mode=${BENCH_OPERATOR:-local}
metrics_url=${BENCH_METRICS_URL:-}
operator_pid=${BENCH_OPERATOR_PID:-}
workdir=$(mktemp -d)

cleanup() {
  local rc=$?
  if [ -n "${local_pid:-}" ] && kill -0 "$local_pid" 2>/dev/null; then
    kill "$local_pid" 2>/dev/null || true
    wait "$local_pid" 2>/dev/null || true
  fi
  if [ "${BENCH_KEEP:-0}" != 1 ] && kubectl get namespace "$namespace" >/dev/null 2>&1; then
    log "deleting the benchmark's objects and namespace $namespace"
    # Explicitly, not only through the namespace: an API server without a
    # controller manager garbage-collects nothing.
    kubectl -n "$namespace" delete pginstances,statefulsets,services,configmaps,secrets --all --wait=false >/dev/null 2>&1 || true
    kubectl delete namespace "$namespace" --wait=false >/dev/null 2>&1 || true
  fi
  rm -rf "$workdir"
  exit "$rc"
}
trap cleanup EXIT

# The CRDs the benchmark creates instances of.
if ! kubectl get crd pginstances.pgsteward.io >/dev/null 2>&1; then
  log "installing the CRDs from crds/"
  kubectl apply --server-side -f "$repo/crds/" >/dev/null
  kubectl wait --for=condition=Established --timeout=60s crd/pginstances.pgsteward.io >/dev/null
fi

case "$mode" in
  local)
    profile=${BENCH_CARGO_PROFILE:-release}
    log "building the operator (cargo profile $profile)"
    (cd "$repo" && cargo build --quiet --locked --profile "$profile" -p pgsteward-operator)
    target_dir=$(cd "$repo" && cargo metadata --format-version 1 --no-deps | "$python" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
    [ "$profile" = dev ] && profile_dir=debug || profile_dir=$profile
    binary="$target_dir/$profile_dir/pgsteward-operator"
    port=$("$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    metrics_url=${metrics_url:-http://127.0.0.1:$port/metrics}
    log "starting the operator for namespace $namespace (metrics on 127.0.0.1:$port, log in $workdir/operator.log)"
    PGSTEWARD_WATCH_NAMESPACES=$namespace \
      PGSTEWARD_LEADER_ELECTION=false \
      PGSTEWARD_METRICS_ADDR=127.0.0.1:$port \
      RUST_LOG=${RUST_LOG:-warn} \
      "$binary" >"$workdir/operator.log" 2>&1 &
    local_pid=$!
    operator_pid=$local_pid
    for _ in $(seq 1 100); do
      "$python" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
        "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
      kill -0 "$local_pid" 2>/dev/null || { tail -n 20 "$workdir/operator.log" >&2; log "the operator exited"; exit 1; }
      sleep 0.2
    done
    ;;
  external) log "using the operator already running against this server" ;;
  *) log "BENCH_OPERATOR must be local or external, not '$mode'"; exit 1 ;;
esac

args=(--kubectl kubectl --namespace "$namespace" --instances "$instances")
[ -n "$metrics_url" ] && args+=(--metrics-url "$metrics_url")
[ -n "$operator_pid" ] && args+=(--operator-pid "$operator_pid")
[ -n "${BENCH_JSON:-}" ] && args+=(--json-out "$BENCH_JSON")
[ -n "${BENCH_STORAGE_CLASS:-}" ] && args+=(--storage-class "$BENCH_STORAGE_CLASS")
"$python" "$here/bench_scale.py" "${args[@]}"
