#!/usr/bin/env bash
# Starts the local Kubernetes control plane on 127.0.0.1: etcd,
# kube-apiserver (service-account keys, authorization Node,RBAC),
# kube-controller-manager and kube-scheduler, with certificates and an admin
# kubeconfig made by openssl in the state directory ($PGSTEWARD_NODE_DIR,
# default /tmp/pgsteward-node). Installs what is missing first (install.sh,
# cached). Waits until the API server's /readyz is ok and both controllers
# are healthy, then prints the kubeconfig's path on stdout (nothing else).
#
# Idempotent: with this state directory's cluster running it only prints the
# path. The etcd data and the certificates stay between runs; down.sh stops
# the processes (down.sh --purge also removes the state directory).
#
#   PGSTEWARD_NODE_DIR=…        the state directory
#   PGSTEWARD_NODE_PORT_BASE=…  ports used: base+443 (API), +379/+380 (etcd),
#                               +257 (controller-manager), +259 (scheduler)
#
# Exit codes: 0 running and ready; 1 it could not be installed or did not
# start (the failing component's last log lines are shown); 3 this machine
# cannot run it (one line on stdout and on stderr says exactly what is missing).
set -Eeuo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=e2e/node/lib.sh
. "$here/lib.sh"

READY_TIMEOUT=${PGSTEWARD_NODE_READY_TIMEOUT:-90}
SERVICE_IP=10.96.0.1

# Exit 3 prints what is missing on stdout too, where a caller reads it.
cannot_run() {
  log "this machine cannot run the local Kubernetes: $*"
  printf '%s\n' "$*"
  exit 3
}

# What the control plane needs of the machine: an address on loopback. It
# runs as any user (the node's kubelet, later, needs root).
preflight() {
  python3 -c 'import socket; socket.socket().bind(("127.0.0.1", 0))' 2>/dev/null ||
    cannot_run "no socket can be bound to 127.0.0.1 (no loopback interface up)"
}

ports_free() {
  local port
  for port in "$APISERVER_PORT" "$ETCD_CLIENT_PORT" "$ETCD_PEER_PORT" "$KCM_PORT" "$SCHEDULER_PORT"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      die "port 127.0.0.1:$port is taken by another program; set PGSTEWARD_NODE_PORT_BASE to use other ports"
    fi
  done
}

# ------------------------------------------------------------ certificates

# kubeconfig NAME CERT: a kubeconfig for the API server with a client certificate.
kubeconfig() {
  local file="$PGSTEWARD_NODE_DIR/$1.kubeconfig" crt=$2
  cat >"$file.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: pgsteward-local
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 <"$NODE_PKI/ca.crt")
users:
- name: $1
  user:
    client-certificate-data: $(base64 -w0 <"$NODE_PKI/$crt.crt")
    client-key-data: $(base64 -w0 <"$NODE_PKI/$crt.key")
contexts:
- name: pgsteward-local
  context: {cluster: pgsteward-local, user: $1}
current-context: pgsteward-local
EOF
  chmod 600 "$file.tmp"
  mv "$file.tmp" "$file"
}

make_pki() {
  mkdir -p "$NODE_PKI"
  chmod 700 "$NODE_PKI"
  if [ ! -s "$NODE_PKI/ca.crt" ]; then
    log "making the certificates in $NODE_PKI"
    openssl req -x509 -new -newkey rsa:2048 -nodes -keyout "$NODE_PKI/ca.key" -days 3650 -sha256 \
      -subj "/CN=pgsteward-local-ca" -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" -out "$NODE_PKI/ca.crt" 2>/dev/null
  fi
  # NODE_IP: pods reach the API server there (the kubernetes Service's
  # endpoint, node-up.sh). A certificate of an older run without it is remade.
  if [ -s "$NODE_PKI/apiserver.crt" ] &&
    ! openssl x509 -in "$NODE_PKI/apiserver.crt" -noout -ext subjectAltName 2>/dev/null | grep -q "IP Address:$NODE_IP\b"; then
    rm -f "$NODE_PKI/apiserver.crt" "$NODE_PKI/apiserver.key"
  fi
  cert apiserver kube-apiserver "" \
    "IP:127.0.0.1,IP:$NODE_IP,IP:$SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
  cert admin pgsteward-admin system:masters
  cert controller-manager system:kube-controller-manager
  cert scheduler system:kube-scheduler
  if [ ! -s "$NODE_PKI/sa.key" ]; then
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$NODE_PKI/sa.key" 2>/dev/null
    openssl pkey -in "$NODE_PKI/sa.key" -pubout -out "$NODE_PKI/sa.pub" 2>/dev/null
  fi
  kubeconfig admin admin
  kubeconfig controller-manager controller-manager
  kubeconfig scheduler scheduler
}

# ------------------------------------------------------------ processes
# start NAME PROGRAM ARGS...: run it in its own session, detached from this
# shell, with its log in $NODE_LOGS and its pid in $NODE_RUN.
start() {
  local name=$1 pid
  shift
  if pid=$(pid_of "$name"); then
    log "$name already runs (pid $pid)"
    return 0
  fi
  setsid "$@" </dev/null >>"$NODE_LOGS/$name.log" 2>&1 &
  pid=$!
  printf '%s\n' "$pid" >"$NODE_RUN/$name.pid"
  log "started $name (pid $pid, log $NODE_LOGS/$name.log)"
}

# wait_healthy NAME SECONDS COMMAND...: poll until the command succeeds; on
# failure (or when the component exited) show its last log lines.
wait_healthy() {
  local name=$1 deadline=$((SECONDS + $2))
  shift 2
  until "$@" >/dev/null 2>&1; do
    if ! pid_of "$name" >/dev/null; then
      tail -n 30 "$NODE_LOGS/$name.log" >&2 || true
      die "$name exited (log: $NODE_LOGS/$name.log)"
    fi
    if ((SECONDS >= deadline)); then
      tail -n 30 "$NODE_LOGS/$name.log" >&2 || true
      die "$name not healthy within $READY_TIMEOUT s (log: $NODE_LOGS/$name.log)"
    fi
    sleep 0.5
  done
}

healthz() { # healthz PORT PATH [CLIENT-CERT]
  curl -fsS --max-time 2 --cacert "$NODE_PKI/ca.crt" \
    ${3:+--cert "$NODE_PKI/$3.crt" --key "$NODE_PKI/$3.key"} "https://127.0.0.1:$1$2"
}

start_etcd() {
  mkdir -p "$PGSTEWARD_NODE_DIR/etcd"
  chmod 700 "$PGSTEWARD_NODE_DIR/etcd"
  start etcd "$ETCD_BIN/etcd" \
    --name pgsteward-local \
    --data-dir "$PGSTEWARD_NODE_DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "pgsteward-local=http://127.0.0.1:$ETCD_PEER_PORT" \
    --unsafe-no-fsync \
    --log-level warn
  wait_healthy etcd "$READY_TIMEOUT" curl -fsS --max-time 2 "http://127.0.0.1:$ETCD_CLIENT_PORT/health"
}

# On every address: pods reach it on NODE_IP, the node's bridge, which
# node-up.sh makes later. Anonymous requests are refused: every client
# presents a certificate or a service-account token.
start_apiserver() {
  start kube-apiserver "$K8S_BIN/kube-apiserver" \
    --bind-address 0.0.0.0 \
    --advertise-address 127.0.0.1 \
    --anonymous-auth=false \
    --secure-port "$APISERVER_PORT" \
    --etcd-servers "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --tls-cert-file "$NODE_PKI/apiserver.crt" \
    --tls-private-key-file "$NODE_PKI/apiserver.key" \
    --client-ca-file "$NODE_PKI/ca.crt" \
    --kubelet-client-certificate "$NODE_PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$NODE_PKI/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority "$NODE_PKI/ca.crt" \
    --kubelet-preferred-address-types InternalIP \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$NODE_PKI/sa.pub" \
    --service-account-signing-key-file "$NODE_PKI/sa.key" \
    --api-audiences https://kubernetes.default.svc.cluster.local \
    --authorization-mode Node,RBAC \
    --enable-admission-plugins NodeRestriction \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --endpoint-reconciler-type none \
    --allow-privileged=true \
    --profiling=false \
    --v 1
  wait_healthy kube-apiserver "$READY_TIMEOUT" kubectl --kubeconfig "$NODE_KUBECONFIG" get --raw /readyz
}

start_controllers() {
  start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
    --kubeconfig "$PGSTEWARD_NODE_DIR/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$PGSTEWARD_NODE_DIR/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$PGSTEWARD_NODE_DIR/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 \
    --secure-port "$KCM_PORT" \
    --tls-cert-file "$NODE_PKI/apiserver.crt" \
    --tls-private-key-file "$NODE_PKI/apiserver.key" \
    --client-ca-file "$NODE_PKI/ca.crt" \
    --service-account-private-key-file "$NODE_PKI/sa.key" \
    --root-ca-file "$NODE_PKI/ca.crt" \
    --cluster-signing-cert-file "$NODE_PKI/ca.crt" \
    --cluster-signing-key-file "$NODE_PKI/ca.key" \
    --use-service-account-credentials=true \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --leader-elect=false \
    --profiling=false \
    --v 1
  start kube-scheduler "$K8S_BIN/kube-scheduler" \
    --kubeconfig "$PGSTEWARD_NODE_DIR/scheduler.kubeconfig" \
    --authentication-kubeconfig "$PGSTEWARD_NODE_DIR/scheduler.kubeconfig" \
    --authorization-kubeconfig "$PGSTEWARD_NODE_DIR/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 \
    --secure-port "$SCHEDULER_PORT" \
    --tls-cert-file "$NODE_PKI/apiserver.crt" \
    --tls-private-key-file "$NODE_PKI/apiserver.key" \
    --client-ca-file "$NODE_PKI/ca.crt" \
    --leader-elect=false \
    --profiling=false \
    --v 1
  wait_healthy kube-controller-manager "$READY_TIMEOUT" healthz "$KCM_PORT" /healthz
  wait_healthy kube-scheduler "$READY_TIMEOUT" healthz "$SCHEDULER_PORT" /healthz
}

running() { # every component runs and the API server is ready
  local c
  for c in "${CONTROL_PLANE_COMPONENTS[@]}"; do pid_of "$c" >/dev/null || return 1; done
  kubectl --kubeconfig "$NODE_KUBECONFIG" --request-timeout=5s get --raw /readyz >/dev/null 2>&1
}

main() {
  command -v kubectl >/dev/null || die "kubectl is not on PATH (make test-deps installs it into $PGSTEWARD_CACHE/bin)"
  if [ -s "$NODE_KUBECONFIG" ] && running; then
    log "the local Kubernetes in $PGSTEWARD_NODE_DIR already runs"
    printf '%s\n' "$NODE_KUBECONFIG"
    return 0
  fi
  preflight
  "$here/install.sh" control-plane
  local start=$SECONDS c
  mkdir -p "$NODE_LOGS" "$NODE_RUN"
  # Whatever is left of an earlier, half-started run is stopped first.
  for c in "${CONTROL_PLANE_COMPONENTS[@]}"; do
    if ! pid_of "$c" >/dev/null; then
      "$here/down.sh"
      break
    fi
  done
  ports_free
  make_pki
  start_etcd
  start_apiserver
  start_controllers
  log "Kubernetes $K8S_VERSION control plane ready in $((SECONDS - start)) s: KUBECONFIG=$NODE_KUBECONFIG"
  printf '%s\n' "$NODE_KUBECONFIG"
}

main "$@"
