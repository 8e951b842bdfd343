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

# The node (node-up.sh). One per machine: kube-proxy's iptables chains and the
# bridge are the machine's, whatever the state directory.
NODE_NAME=pgsteward-node
NODE_BRIDGE=pgsteward0
POD_CIDR=10.244.0.0/16
POD_SUBNET=10.244.0.0/24
NODE_IP=10.244.0.1
SERVICE_CIDR=10.96.0.0/16
KUBELET_PORT=$((PGSTEWARD_NODE_PORT_BASE + 250))
KUBELET_HEALTHZ_PORT=$((PGSTEWARD_NODE_PORT_BASE + 248))
KUBE_PROXY_HEALTHZ_PORT=$((PGSTEWARD_NODE_PORT_BASE + 256))
KUBE_PROXY_METRICS_PORT=$((PGSTEWARD_NODE_PORT_BASE + 249))
NODE_CNI_CONF="$PGSTEWARD_NODE_DIR/cni/net.d"
NODE_CONTAINERD_SOCK="$PGSTEWARD_NODE_DIR/containerd/containerd.sock"
# Images imported from files made by install.sh node (no registry).
NODE_IMAGES="$PGSTEWARD_CACHE/node/images"
PAUSE_IMAGE=pgsteward.local/pause:e2e
DEBIAN_IMAGE=pgsteward.local/debian:bookworm

# The components, in start order (down.sh stops them in reverse).
CONTROL_PLANE_COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler)
NODE_COMPONENTS=("${CONTROL_PLANE_COMPONENTS[@]}" containerd kubelet kube-proxy provisioner)

# pid_of NAME: the pid of a component this state directory started, when that
# process still runs the same program (a recycled pid is never taken for it).
pid_of() {
  local file="$NODE_RUN/$1.pid" pid exe
  [ -s "$file" ] || return 1
  pid=$(cat "$file")
  alive "$pid" || return 1
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
  if [ "${exe##*/}" != "$1" ]; then
    # A script of ours (provisioner.sh) runs as bash with its path first.
    tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qxF "$node_here/$1.sh" || return 1
  fi
  printf '%s\n' "$pid"
}

# alive PID: the process exists and is not a zombie (whoever reaps it).
alive() {
  [ -r "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}

# cert NAME CN [O] [SAN]: a client or server certificate signed by the CA.
cert() {
  local name=$1 cn=$2 org=${3:-} san=${4:-} subj
  [ -s "$NODE_PKI/$name.crt" ] && return 0
  subj="/CN=$cn${org:+/O=$org}"
  openssl req -new -newkey rsa:2048 -nodes -keyout "$NODE_PKI/$name.key" -subj "$subj" \
    -out "$NODE_PKI/$name.csr" 2>/dev/null
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    if [ -n "$san" ]; then
      echo "extendedKeyUsage=serverAuth,clientAuth"
      echo "subjectAltName=$san"
    else
      echo "extendedKeyUsage=clientAuth"
    fi
  } >"$NODE_PKI/$name.ext"
  openssl x509 -req -in "$NODE_PKI/$name.csr" -CA "$NODE_PKI/ca.crt" -CAkey "$NODE_PKI/ca.key" \
    -CAcreateserial -days 3650 -sha256 -extfile "$NODE_PKI/$name.ext" -out "$NODE_PKI/$name.crt" 2>/dev/null
  rm -f "$NODE_PKI/$name.csr" "$NODE_PKI/$name.ext"
}

# ctr_ ARGS...: ctr on the node's containerd, in the namespace the kubelet uses.
ctr_() { ctr --address "$NODE_CONTAINERD_SOCK" --namespace k8s.io "$@"; }
