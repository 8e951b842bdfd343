#!/usr/bin/env bash
# Adds a real node to the local Kubernetes that up.sh started (same state
# directory): containerd (Debian's, with runc and its own root, state and
# socket in the state directory), CNI (bridge + host-local + loopback +
# portmap from Debian's containernetworking-plugins) on a bridge of its own,
# kubelet registered as node "pgsteward-node", kube-proxy in iptables mode,
# and the images it needs imported from files (no registry): a pause image
# built from k8s.io/kubernetes's build/pause/linux/pause.c and a Debian
# bookworm root filesystem made by debootstrap (install.sh node).
#
# Needs root, cgroups (v1 or v2), overlayfs, bridge, veth and iptables.
# Idempotent like up.sh. down.sh stops it all and unmounts what it mounted.
#
# The node's address is the bridge's (10.244.0.1, the pods' gateway): the
# kubelet refuses a loopback address. Every address is on this machine's own
# interfaces or in the pods' network namespaces; the pods have routes to
# their own subnet and to the Services' range only, and no masquerading, so
# nothing they send leaves the machine.
#
# Exit codes: 0 the node is Ready; 1 it did not start (the failing
# component's last log lines are shown); 3 this machine cannot run it (one
# line on stdout and stderr says exactly what is missing).
set -Eeuo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=e2e/node/lib.sh
. "$here/lib.sh"

READY_TIMEOUT=${PGSTEWARD_NODE_READY_TIMEOUT:-120}

cannot_run() {
  log "this machine cannot run the local Kubernetes node: $*"
  printf '%s\n' "$*"
  exit 3
}

preflight() {
  [ "$(id -u)" -eq 0 ] || cannot_run "the node needs root (containerd, runc, mounts, network namespaces); this is uid $(id -u)"
  grep -qw overlay /proc/filesystems || cannot_run "no overlayfs in this kernel (/proc/filesystems)"
  [ -d /sys/fs/cgroup/memory ] || [ -f /sys/fs/cgroup/cgroup.controllers ] ||
    cannot_run "no memory cgroup (neither /sys/fs/cgroup/memory nor cgroup2 at /sys/fs/cgroup)"
  [ -d /proc/sys/net/bridge ] || cannot_run "no bridge netfilter in this kernel (/proc/sys/net/bridge)"
  ip link add pgst-probe type bridge 2>/dev/null || cannot_run "cannot create a bridge interface (ip link add type bridge)"
  ip link del pgst-probe
}

# ------------------------------------------------------------ set-up
node_pki() {
  local san="IP:$NODE_IP,IP:127.0.0.1,DNS:$NODE_NAME,DNS:localhost"
  node_cert kubelet "system:node:$NODE_NAME" system:nodes "$san"
  node_cert kube-proxy system:kube-proxy
}

# node_cert NAME CN [O] [SAN]: lib.sh's cert, and a kubeconfig that uses it.
node_cert() {
  cert "$@"
  node_kubeconfig "$1"
}

node_kubeconfig() {
  local file="$PGSTEWARD_NODE_DIR/$1.kubeconfig"
  sed -e "s|client-certificate-data: .*|client-certificate-data: $(base64 -w0 <"$NODE_PKI/$1.crt")|" \
    -e "s|client-key-data: .*|client-key-data: $(base64 -w0 <"$NODE_PKI/$1.key")|" \
    -e "s|^- name: admin$|- name: $1|" -e "s|user: admin}|user: $1}|" "$NODE_KUBECONFIG" >"$file"
  chmod 600 "$file"
}

network() {
  local key
  if [ ! -s "$NODE_RUN/sysctl.saved" ]; then # down.sh puts them back
    for key in net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables; do
      printf '%s = %s\n' "$key" "$(sysctl -n "$key")"
    done >"$NODE_RUN/sysctl.saved"
  fi
  sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1
  if ! ip link show "$NODE_BRIDGE" >/dev/null 2>&1; then
    ip link add "$NODE_BRIDGE" type bridge
    touch "$NODE_RUN/bridge.created"
  fi
  ip addr replace "$NODE_IP/24" dev "$NODE_BRIDGE"
  ip link set "$NODE_BRIDGE" up
  mkdir -p "$NODE_CNI_CONF"
  cat >"$NODE_CNI_CONF/10-pgsteward.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "pgsteward",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$NODE_BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$POD_SUBNET", "rangeStart": "${POD_SUBNET%.0/24}.10", "gateway": "$NODE_IP"}]],
        "routes": [{"dst": "$SERVICE_CIDR"}],
        "dataDir": "$PGSTEWARD_NODE_DIR/cni/ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "loopback"}
  ]
}
EOF
}

# CAP_SYS_RESOURCE is bit 24 of the effective capabilities.
has_sys_resource() { (( (0x$(awk '/^CapEff:/ {print $2}' /proc/self/status) >> 24) & 1 )); }

start_containerd() {
  local dir="$PGSTEWARD_NODE_DIR/containerd" restrict_oom=false
  has_sys_resource || restrict_oom=true
  mkdir -p "$dir"
  cat >"$dir/config.toml" <<EOF
version = 2
root = "$dir/root"
state = "$dir/state"
[grpc]
  address = "$NODE_CONTAINERD_SOCK"
[ttrpc]
  address = "$NODE_CONTAINERD_SOCK.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # Without CAP_SYS_RESOURCE (some sandboxes drop it) no process may lower its
  # oom_score_adj, and runc fails on the pause container's -998 ("can't get
  # final child's PID from pipe"); clamp every container's to containerd's.
  restrict_oom_score_adj = $restrict_oom
  enable_cdi = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$NODE_CNI_CONF"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
EOF
  start_node containerd containerd --config "$dir/config.toml"
  wait_node containerd ctr_ version
}

import_images() {
  local name tar
  for name in "$PAUSE_IMAGE" "$DEBIAN_IMAGE"; do
    if ctr_ images check "name==$name" 2>/dev/null | grep -q complete; then continue; fi
    tar="$NODE_IMAGES/${name##*/}.tar"
    tar=${tar//:/_}
    [ -s "$tar" ] || die "no image archive $tar (e2e/node/install.sh node makes it)"
    log "importing $name from $tar"
    ctr_ images import --no-unpack=false "$tar" >/dev/null
  done
}

start_kubelet() {
  local dir="$PGSTEWARD_NODE_DIR/kubelet" oom=-999
  has_sys_resource || oom=0
  mkdir -p "$dir"
  cat >"$PGSTEWARD_NODE_DIR/kubelet-config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $NODE_PKI/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $NODE_PKI/kubelet.crt
tlsPrivateKeyFile: $NODE_PKI/kubelet.key
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$NODE_CONTAINERD_SOCK
failSwapOn: false
failCgroupV1: false
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%}
registerNode: true
podLogsDir: $PGSTEWARD_NODE_DIR/pod-logs
EOF
  touch "$NODE_RUN/kubelet.started" # down.sh removes its iptables chains
  start_node kubelet "$K8S_BIN/kubelet" \
    --config "$PGSTEWARD_NODE_DIR/kubelet-config.yaml" \
    --kubeconfig "$PGSTEWARD_NODE_DIR/kubelet.kubeconfig" \
    --root-dir "$dir" \
    --cert-dir "$dir/pki" \
    --hostname-override "$NODE_NAME" \
    --node-ip "$NODE_IP" \
    --oom-score-adj "$oom" \
    --v 1
  wait_node kubelet curl -fsS --max-time 2 "http://127.0.0.1:$KUBELET_HEALTHZ_PORT/healthz"
}

start_kube_proxy() {
  local oom=-999
  has_sys_resource || oom=0
  cat >"$PGSTEWARD_NODE_DIR/kube-proxy-config.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: $PGSTEWARD_NODE_DIR/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
clusterCIDR: $POD_CIDR
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:$KUBE_PROXY_HEALTHZ_PORT
metricsBindAddress: 127.0.0.1:$KUBE_PROXY_METRICS_PORT
conntrack: {maxPerCore: 0}
oomScoreAdj: $oom
EOF
  touch "$NODE_RUN/kube-proxy.started" # down.sh runs kube-proxy --cleanup
  start_node kube-proxy "$K8S_BIN/kube-proxy" --config "$PGSTEWARD_NODE_DIR/kube-proxy-config.yaml" --v 1
  wait_node kube-proxy curl -fsS --max-time 2 "http://127.0.0.1:$KUBE_PROXY_HEALTHZ_PORT/healthz"
}

start_node() { # like up.sh's start
  local name=$1 pid
  shift
  if pid=$(pid_of "$name"); then
    return 0
  fi
  setsid "$@" </dev/null >>"$NODE_LOGS/$name.log" 2>&1 &
  pid=$!
  printf '%s\n' "$pid" >"$NODE_RUN/$name.pid"
  log "started $name (pid $pid, log $NODE_LOGS/$name.log)"
}

wait_node() {
  local name=$1 deadline=$((SECONDS + READY_TIMEOUT))
  shift
  until "$@" >/dev/null 2>&1; do
    if ! pid_of "$name" >/dev/null || ((SECONDS >= deadline)); then
      tail -n 30 "$NODE_LOGS/$name.log" >&2 || true
      die "$name did not become healthy (log: $NODE_LOGS/$name.log)"
    fi
    sleep 0.5
  done
}

# The default StorageClass, served by provisioner.sh (hostPath volumes).
# WaitForFirstConsumer: the scheduler picks the node, names it on the claim
# and waits in its binding cycle until the provisioner has bound a volume.
# With Immediate, a pod created beside its claim (a StatefulSet's) was
# unschedulable until the claim bound, and the scheduler sometimes retried
# it only after its 5 min unschedulable timeout (the node tier's writer pod
# stayed Pending). The binding mode is immutable: a class of an older run
# with another one is replaced.
start_provisioner() {
  local mode
  mode=$(kubectl --kubeconfig "$NODE_KUBECONFIG" get storageclass pgsteward-local \
    -o jsonpath='{.volumeBindingMode}' 2>/dev/null || true)
  if [ -n "$mode" ] && [ "$mode" != WaitForFirstConsumer ]; then
    kubectl --kubeconfig "$NODE_KUBECONFIG" delete storageclass pgsteward-local >/dev/null
  fi
  kubectl --kubeconfig "$NODE_KUBECONFIG" apply -f - >/dev/null <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: pgsteward-local
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: pgsteward.io/local-path
reclaimPolicy: Delete
volumeBindingMode: WaitForFirstConsumer
EOF
  start_node provisioner "$here/provisioner.sh"
}

# The kubernetes Service's endpoint, for pods (in-cluster clients such as the
# operator installed by Helm): the API server on the bridge address. up.sh
# runs it with --endpoint-reconciler-type none, since the address it
# advertises (127.0.0.1) is not one a pod can reach.
publish_apiserver() {
  kubectl --kubeconfig "$NODE_KUBECONFIG" apply -f - >/dev/null <<EOF
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kubernetes
  namespace: default
  labels: {kubernetes.io/service-name: kubernetes, endpointslice.kubernetes.io/managed-by: node-up.pgsteward.io}
addressType: IPv4
endpoints:
- addresses: ["$NODE_IP"]
  conditions: {ready: true}
ports:
- {name: https, port: $APISERVER_PORT, protocol: TCP}
EOF
}

node_ready() {
  [ "$(kubectl --kubeconfig "$NODE_KUBECONFIG" get node "$NODE_NAME" \
    -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

main() {
  preflight
  [ -s "$NODE_KUBECONFIG" ] || die "no control plane in $PGSTEWARD_NODE_DIR: run e2e/node/up.sh first"
  "$here/install.sh" node
  mkdir -p "$NODE_LOGS" "$NODE_RUN"
  node_pki
  network
  start_containerd
  import_images
  start_kubelet
  start_kube_proxy
  start_provisioner
  publish_apiserver
  local deadline=$((SECONDS + READY_TIMEOUT))
  until node_ready; do
    ((SECONDS < deadline)) || { tail -n 30 "$NODE_LOGS/kubelet.log" >&2; die "node $NODE_NAME not Ready within $READY_TIMEOUT s"; }
    sleep 1
  done
  log "node $NODE_NAME Ready (kubelet $K8S_VERSION, containerd $(containerd --version | awk '{print $3}'))"
}

main "$@"
