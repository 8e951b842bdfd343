# shellcheck shell=bash
# shellcheck disable=SC2034 # the settings are read by the scripts that source this file
# Shared settings of the local Kubernetes (e2e/node/). Sourced, never executed.
#
# Everything built or downloaded lives in $PGSTEWARD_CACHE, keyed by version;
# everything a running cluster writes (certificates, kubeconfig, etcd data,
# logs, pid files) lives in its state directory, $PGSTEWARD_NODE_DIR.

node_here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=e2e/setup/lib.sh
. "$node_here/../setup/lib.sh"

# The Kubernetes release is the one e2e/node/k8s/go.mod requires.
K8S_VERSION=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3}' "$node_here/k8s/go.mod")
[ -n "$K8S_VERSION" ] || die "no k8s.io/kubernetes requirement in $node_here/k8s/go.mod"
K8S_BIN="$PGSTEWARD_CACHE/k8s/$K8S_VERSION/bin"
# etcd: Debian's etcd-server package of this suite (kube-apiserver 1.34 wants
# etcd 3.5 or newer; bookworm has 3.4).
ETCD_SUITE=trixie
ETCD_DIR="$PGSTEWARD_CACHE/etcd/$ETCD_SUITE"
ETCD_BIN="$ETCD_DIR/bin"

# One cluster per state directory. `make run` uses the default one; `make test`
# its own, on other ports, so the tests never touch a cluster someone uses.
PGSTEWARD_NODE_DIR=${PGSTEWARD_NODE_DIR:-/tmp/pgsteward-node}
# Ports on 127.0.0.1: the API server on BASE+443, etcd on BASE+379 and
# BASE+380, the controller-manager on BASE+257 and the scheduler on BASE+259.
PGSTEWARD_NODE_PORT_BASE=${PGSTEWARD_NODE_PORT_BASE:-16000}
export PGSTEWARD_NODE_DIR PGSTEWARD_NODE_PORT_BASE
APISERVER_PORT=$((PGSTEWARD_NODE_PORT_BASE + 443))
ETCD_CLIENT_PORT=$((PGSTEWARD_NODE_PORT_BASE + 379))
ETCD_PEER_PORT=$((PGSTEWARD_NODE_PORT_BASE + 380))
KCM_PORT=$((PGSTEWARD_NODE_PORT_BASE + 257))
SCHEDULER_PORT=$((PGSTEWARD_NODE_PORT_BASE + 259))

NODE_KUBECONFIG="$PGSTEWARD_NODE_DIR/admin.kubeconfig"
NODE_PKI="$PGSTEWARD_NODE_DIR/pki"
NODE_LOGS="$PGSTEWARD_NODE_DIR/logs"
NODE_RUN="$PGSTEWARD_NODE_DIR/run"

# The components, in start order (down.sh stops them in reverse).
NODE_COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler)

# pid_of NAME: the pid of a component this state directory started, when that
# process still runs the same program (a recycled pid is never taken for it).
pid_of() {
  local file="$NODE_RUN/$1.pid" pid exe
  [ -s "$file" ] || return 1
  pid=$(cat "$file")
  alive "$pid" || return 1
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
  [ "${exe##*/}" = "$1" ] || return 1
  printf '%s\n' "$pid"
}

# alive PID: the process exists and is not a zombie (whoever reaps it).
alive() {
  [ -r "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}
