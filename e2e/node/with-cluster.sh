#!/usr/bin/env bash
# Runs a command against a local Kubernetes of its own: starts one (up.sh) in
# a state directory and on ports of its own, runs the command with KUBECONFIG
# pointing at it, and stops it again (down.sh --purge), also when the command
# fails or is interrupted. `make test` runs the cluster tier through it, so
# the tests never touch the cluster of the user's KUBECONFIG.
#
#   e2e/node/with-cluster.sh [--node] NAME COMMAND [ARGS...]
#
# --node adds the node (node-up.sh: containerd, kubelet, kube-proxy, the
# StorageClass), so pods run.
# NAME says what runs, in the SKIPPED line. The defaults: state directory
# /tmp/pgsteward-node-test, ports from 17000 (PGSTEWARD_NODE_DIR and
# PGSTEWARD_NODE_PORT_BASE override them).
#
# Exit codes: the command's; 0 with a SKIPPED line when this machine cannot
# run the local Kubernetes (it says what is missing; nothing counts as
# passed); 1 the cluster could not be installed or started; 2 usage.
set -Eeuo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export PGSTEWARD_NODE_DIR=${PGSTEWARD_NODE_DIR:-/tmp/pgsteward-node-test}
export PGSTEWARD_NODE_PORT_BASE=${PGSTEWARD_NODE_PORT_BASE:-17000}
# shellcheck source=e2e/node/lib.sh
. "$here/lib.sh"

node=false
if [ "${1:-}" = --node ]; then
  node=true
  shift
fi
[ "$#" -ge 2 ] || { echo "usage: $0 [--node] NAME COMMAND [ARGS...]" >&2; exit 2; }
name=$1
shift

# On success nothing is left; after a failure the logs stay for a look.
# shellcheck disable=SC2317 # run by the EXIT trap
stop_cluster() {
  local rc=$?
  if [ "$rc" -eq 0 ]; then
    "$here/down.sh" --purge || rc=1
  else
    "$here/down.sh" || rc=1
    [ ! -d "$NODE_LOGS" ] || log "the local Kubernetes's logs are kept in $NODE_LOGS"
  fi
  exit "$rc"
}
trap stop_cluster EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A cluster left by an interrupted run is not reused: start from nothing.
"$here/down.sh" --purge
rc=0
kubeconfig=$("$here/up.sh") || rc=$?
if [ "$rc" -eq 3 ]; then
  # up.sh printed what is missing on stdout instead of a kubeconfig.
  echo "$name: SKIPPED - this machine cannot run the local Kubernetes: $kubeconfig; no test ran"
  exit 0
fi
[ "$rc" -eq 0 ] || die "the local Kubernetes did not start (up.sh exited $rc); its logs are in $NODE_LOGS"
if $node; then
  why=$("$here/node-up.sh") || rc=$?
  if [ "$rc" -eq 3 ]; then
    echo "$name: SKIPPED - this machine cannot run the local Kubernetes node: $why; no test ran"
    exit 0
  fi
  [ "$rc" -eq 0 ] || die "the local Kubernetes node did not start (node-up.sh exited $rc); its logs are in $NODE_LOGS"
fi
export KUBECONFIG=$kubeconfig
log "running $* against the local Kubernetes $K8S_VERSION (KUBECONFIG=$KUBECONFIG)"
rc=0
"$@" || rc=$?
exit "$rc"
