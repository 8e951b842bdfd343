#!/usr/bin/env bash
# A tiny dynamic provisioner for the local node's StorageClass
# "pgsteward-local" (provisioner pgsteward.io/local-path, the default class,
# WaitForFirstConsumer): every second it gives each Pending claim of that
# class on which the scheduler has named a node a hostPath PersistentVolume
# of the size asked, in a directory of its own under
# $PGSTEWARD_NODE_DIR/volumes, bound to the claim; a Released volume of its
# own is deleted with its directory. node-up.sh starts it, down.sh stops it.
#
# Exit codes: 0 stopped by a signal; 1 it cannot reach the API server.
set -Eeuo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=e2e/node/lib.sh
. "$here/lib.sh"

PROVISIONER=pgsteward.io/local-path
CLASS=pgsteward-local
VOLUMES="$PGSTEWARD_NODE_DIR/volumes"
k() { kubectl --kubeconfig "$NODE_KUBECONFIG" --request-timeout=10s "$@"; }

provision() { # provision NAMESPACE NAME UID SIZE MODES
  local ns=$1 name=$2 uid=$3 size=$4 modes=$5 pv="pvc-$3" dir="$VOLUMES/pvc-$3"
  mkdir -p "$dir"
  chmod 0777 "$dir"
  k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolume
metadata:
  name: $pv
  annotations: {pv.kubernetes.io/provisioned-by: $PROVISIONER}
spec:
  storageClassName: $CLASS
  capacity: {storage: "$size"}
  accessModes: [${modes:-ReadWriteOnce}]
  persistentVolumeReclaimPolicy: Delete
  claimRef: {namespace: $ns, name: $name, uid: $uid}
  hostPath: {path: $dir, type: DirectoryOrCreate}
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions: [{key: kubernetes.io/hostname, operator: In, values: [$NODE_NAME]}]
EOF
  log "provisioned $pv ($size) for $ns/$name in $dir"
}

reclaim() { # reclaim PV PATH
  case "$2" in
    "$VOLUMES"/pvc-*) rm -rf "$2" ;;
  esac
  k delete pv "$1" --wait=false >/dev/null
  log "deleted $1 and $2"
}

main() {
  local ns name uid size modes pv path
  mkdir -p "$VOLUMES"
  log "provisioning claims of StorageClass $CLASS into $VOLUMES"
  while true; do
    k get pvc -A -o jsonpath='{range .items[?(@.status.phase=="Pending")]}{.metadata.namespace}{"\t"}{.metadata.name}{"\t"}{.metadata.uid}{"\t"}{.spec.storageClassName}{"\t"}{.spec.resources.requests.storage}{"\t"}{.spec.accessModes[*]}{"\t"}{.metadata.annotations.volume\.kubernetes\.io/selected-node}{"\n"}{end}' 2>/dev/null |
      while IFS=$'\t' read -r ns name uid class size modes node; do
        if [ "$class" != "$CLASS" ] || [ -z "$node" ]; then continue; fi
        k get pv "pvc-$uid" >/dev/null 2>&1 || provision "$ns" "$name" "$uid" "$size" "${modes// /, }" || true
      done
    k get pv -o jsonpath='{range .items[?(@.status.phase=="Released")]}{.metadata.name}{"\t"}{.metadata.annotations.pv\.kubernetes\.io/provisioned-by}{"\t"}{.spec.hostPath.path}{"\n"}{end}' 2>/dev/null |
      while IFS=$'\t' read -r pv name path; do
        [ "$name" = "$PROVISIONER" ] || continue
        reclaim "$pv" "$path" || true
      done
    sleep 1
  done
}

main "$@"
