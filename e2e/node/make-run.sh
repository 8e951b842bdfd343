#!/usr/bin/env bash
# `make run` on a machine without a cluster, as the README tells a newcomer:
# with no reachable kube context, `make run` starts the local Kubernetes and
# its node, installs the CRDs and runs the operator; `kubectl apply` of the
# minimal sample then ends with READY True and a PostgreSQL that psql reaches.
#
#   e2e/node/make-run.sh
#
# It runs the real `make run` (hack/run.sh) with KUBECONFIG pointing at no
# cluster, in a state directory and on ports of its own, and stops it all
# again (down.sh --purge). Run it after the node tier, never beside it: a
# machine has room for one kubelet.
#
# Exit codes: 0 every check passed, or SKIPPED (not root: the node needs it;
# it says so and nothing counts as passed); 1 a check failed.
set -Eeuo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
export PGSTEWARD_CACHE=${PGSTEWARD_CACHE:-/var/cache/pgsteward}
export PATH="$PGSTEWARD_CACHE/bin:$PATH"

if [ "$(id -u)" -ne 0 ]; then
  echo "make-run: SKIPPED - the local node needs root (containerd, runc, CNI); make run would start a cluster without one; no test ran"
  exit 0
fi

export PGSTEWARD_NODE_DIR=/tmp/pgsteward-make-run PGSTEWARD_NODE_PORT_BASE=17200
work=$(mktemp -d)
kubeconfig="$PGSTEWARD_NODE_DIR/admin.kubeconfig"
passed=0 failed=0 run_pid=""
ok() { echo "ok - $*"; passed=$((passed + 1)); }
not_ok() { echo "not ok - $*"; failed=$((failed + 1)); }
log() { printf '%s make-run: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
k() { KUBECONFIG=$kubeconfig kubectl "$@"; }
wait_for() { # wait_for SECONDS COMMAND...: poll until the command succeeds
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 1
  done
}

# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
  local rc=$?
  if [ -n "$run_pid" ]; then
    kill -INT -- "-$run_pid" 2>/dev/null || true
    wait "$run_pid" 2>/dev/null || true
  fi
  if ((failed > 0)) || [ "$rc" -ne 0 ]; then
    echo "--- last lines of make run ---" >&2
    tail -n 40 "$work/make-run.log" >&2 || true
  fi
  "$here/down.sh" --purge >&2 || rc=1
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT

cd "$repo"
log "make run with no reachable cluster (KUBECONFIG=$work/none)"
start=$SECONDS
# Its own process group, so the cleanup stops make, hack/run.sh and the
# operator together (Ctrl-C, as a user would).
KUBECONFIG="$work/none" PGSTEWARD_METRICS_ADDR=127.0.0.1:0 \
  setsid make --no-print-directory run >"$work/make-run.log" 2>&1 &
run_pid=$!

# The first run on a new machine builds Kubernetes and PostgreSQL: minutes.
if wait_for 1800 bash -c "kill -0 $run_pid && KUBECONFIG=$kubeconfig kubectl get crd pginstances.pgsteward.io"; then
  ok "make run started the local cluster and installed the CRDs ($((SECONDS - start)) s)"
else
  not_ok "make run did not install the CRDs into a local cluster"
  echo "make-run: $passed passed, $failed failed"
  exit 1
fi
for line in "kubectl apply -f config/samples/pginstance-minimal.yaml" "kubectl get pginstance -w"; do
  if wait_for 60 grep -qF -- "$line" "$work/make-run.log"; then ok "make run printed: $line"; else not_ok "make run did not print: $line"; fi
done
if k get node -o jsonpath='{.items[*].status.conditions[?(@.type=="Ready")].status}' | grep -q True; then
  ok "the local cluster has a Ready node"
else
  not_ok "the local cluster has no Ready node"
fi

applied=$SECONDS
k apply -f config/samples/pginstance-minimal.yaml >/dev/null
if k wait --for=condition=Ready --timeout=300s pginstance/minimal >/dev/null 2>&1; then
  ok "kubectl apply of the minimal sample: READY True after $((SECONDS - applied)) s"
else
  not_ok "the minimal sample is not Ready within 300 s: $(k get pginstance minimal -o jsonpath='{.status.conditions}' 2>&1 | head -c 600)"
fi
# The READY column, found by its header (the table is what a user reads).
ready=$(k get pginstance minimal 2>/dev/null |
  awk 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "READY") col = i } NR == 2 && col { print $col }' || true)
if [ "$ready" = True ]; then ok "kubectl get pginstance shows READY True"; else not_ok "kubectl get pginstance shows READY '$ready'"; fi
psql_in_pod() { k exec minimal-0 -c postgres -- psql -U postgres -XAtq -v ON_ERROR_STOP=1 -c "$1"; }
row=$(psql_in_pod "create table if not exists make_run(v text); insert into make_run values ('kept'); select v from make_run" 2>&1 || true)
if [ "$row" = kept ]; then ok "psql in the pod writes and reads a row"; else not_ok "psql in the pod: $row"; fi

# Delete while the operator still runs, so its finalizer lets go.
k delete pginstance minimal --timeout=120s >/dev/null 2>&1 || not_ok "the minimal sample was not deleted within 120 s"
echo "make-run: $passed passed, $failed failed"
((failed == 0))
