#!/usr/bin/env bash
# Stops the local Kubernetes that up.sh started from this state directory
# ($PGSTEWARD_NODE_DIR, default /tmp/pgsteward-node): every process it
# started (by its pid file, never by name), in reverse start order, TERM
# then KILL after 10 s. Leaves nothing running. The certificates and etcd's
# data stay for the next up.sh; --purge removes the state directory too.
#
# Exit codes: 0 nothing of it runs any more; 1 a process would not stop;
# 2 usage.
set -Eeuo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=e2e/node/lib.sh
. "$here/lib.sh"

purge=false
case "${1:-}" in
  "") ;;
  --purge) purge=true ;;
  *) echo "usage: $0 [--purge]" >&2; exit 2 ;;
esac

stop() { # stop NAME: TERM, wait up to 10 s, then KILL
  local name=$1 pid i
  if ! pid=$(pid_of "$name"); then
    rm -f "$NODE_RUN/$name.pid"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    alive "$pid" || break
    sleep 0.1
  done
  if alive "$pid"; then
    log "$name (pid $pid) did not stop on TERM within 10 s; KILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.5
  fi
  ! alive "$pid" || die "$name (pid $pid) still runs"
  rm -f "$NODE_RUN/$name.pid"
  log "stopped $name (pid $pid)"
}

ctr_() { ctr --address "$NODE_CONTAINERD_SOCK" --namespace k8s.io "$@"; }

# The node's containers: kill every task (SIGKILL) and delete it, so each
# shim exits, and remember the pods' network namespaces (CNI's bind mounts).
stop_containers() {
  local id netns
  pid_of containerd >/dev/null || return 0
  for id in $(ctr_ tasks ls -q 2>/dev/null); do
    ctr_ tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
  done
  for id in $(ctr_ containers ls -q 2>/dev/null); do
    netns=$(ctr_ containers info "$id" 2>/dev/null |
      python3 -c 'import json, sys; [print(n["path"]) for n in json.load(sys.stdin)["Spec"]["linux"]["namespaces"] if n["type"] == "network" and n.get("path")]' 2>/dev/null || true)
    [ -z "$netns" ] || printf '%s\n' "$netns" >>"$NODE_RUN/netns"
    ctr_ tasks delete -f "$id" >/dev/null 2>&1 || true
  done
}

# The kubelet's own chains (KUBE-FIREWALL, its canaries), in IPv4 and IPv6.
kubelet_iptables_cleanup() {
  local cmd table chain
  for cmd in iptables ip6tables; do
    command -v "$cmd" >/dev/null || continue
    for chain in INPUT OUTPUT; do
      while "$cmd" -w -t filter -D "$chain" -j KUBE-FIREWALL 2>/dev/null; do :; done
    done
    for table in filter nat mangle; do
      for chain in KUBE-FIREWALL KUBE-KUBELET-CANARY KUBE-IPTABLES-HINT; do
        if "$cmd" -w -t "$table" -F "$chain" 2>/dev/null; then
          "$cmd" -w -t "$table" -X "$chain" 2>/dev/null || true
        fi
      done
    done
  done
}

# What containerd and the kubelet leave on the machine once stopped: shims
# started with our socket, mounts under the state directory, the pods'
# network namespaces, kube-proxy's iptables chains, the bridge, sysctls.
clean_node() {
  local pid m ns
  while read -r pid; do
    [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = /usr/bin/containerd-shim-runc-v2 ] || continue
    log "stopping containerd-shim-runc-v2 (pid $pid)"
    kill -KILL "$pid" 2>/dev/null || true
  done < <(grep -lsF -- "$NODE_CONTAINERD_SOCK" /proc/[0-9]*/cmdline | cut -d/ -f3)
  # Deepest first; a mount that is busy is detached (lazy) rather than left.
  while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "WARNING: could not unmount $m"
  done < <(awk -v d="$PGSTEWARD_NODE_DIR/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r)
  if [ -s "$NODE_RUN/netns" ]; then
    sort -u "$NODE_RUN/netns" | while read -r ns; do
      [ -e "$ns" ] || continue
      umount "$ns" 2>/dev/null || true
      rm -f "$ns"
    done
    rm -f "$NODE_RUN/netns"
  fi
  if [ -f "$NODE_RUN/kube-proxy.started" ]; then
    "$K8S_BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
    rm -f "$NODE_RUN/kube-proxy.started"
  fi
  if [ -f "$NODE_RUN/kubelet.started" ]; then
    kubelet_iptables_cleanup
    rm -f "$NODE_RUN/kubelet.started"
  fi
  if ip link show "$NODE_BRIDGE" >/dev/null 2>&1 && [ -f "$NODE_RUN/bridge.created" ]; then
    ip link del "$NODE_BRIDGE"
  fi
  rm -f "$NODE_RUN/bridge.created"
  if [ -s "$NODE_RUN/sysctl.saved" ]; then
    sysctl -q -p "$NODE_RUN/sysctl.saved" >/dev/null 2>&1 || true
    rm -f "$NODE_RUN/sysctl.saved"
  fi
}

main() {
  local i
  [ -d "$PGSTEWARD_NODE_DIR" ] || return 0
  for ((i = ${#NODE_COMPONENTS[@]} - 1; i >= 0; i--)); do
    [ "${NODE_COMPONENTS[i]}" != containerd ] || stop_containers
    stop "${NODE_COMPONENTS[i]}"
  done
  clean_node
  if $purge; then
    rm -rf "$PGSTEWARD_NODE_DIR"
    log "removed $PGSTEWARD_NODE_DIR"
  fi
}

main "$@"
