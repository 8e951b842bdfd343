#!/usr/bin/env bash
# Node smoke test: on the local Kubernetes with its node (up.sh, node-up.sh),
# in a fresh namespace, a pod from the debootstrap-made image serves HTTP
# (busybox httpd) behind a Service; another pod reaches it through the
# Service's cluster IP (kube-proxy's iptables rules); kubectl logs and exec
# work (the API server reaches the kubelet); a claim of the default
# StorageClass is provisioned and bound, and a pod writes to it and reads it
# back.
#
#   KUBECONFIG=… e2e/node/smoke.sh
#
# Exit codes: 0 every check passed; 1 a check failed.
set -Eeuo pipefail

passed=0
failed=0
ok() { echo "ok - $*"; passed=$((passed + 1)); }
not_ok() { echo "not ok - $*"; failed=$((failed + 1)); }
log() { printf '%s node-smoke: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

IMAGE=${PGSTEWARD_NODE_IMAGE:-pgsteward.local/debian:bookworm}
ns="pgsteward-node-smoke-$(date +%s)-$RANDOM"
k() { kubectl -n "$ns" "$@"; }
cleanup() {
  local rc=$?
  kubectl delete namespace "$ns" --wait=false >/dev/null 2>&1 || true
  exit "$rc"
}
trap cleanup EXIT

kubectl create namespace "$ns" >/dev/null
# The namespace's default ServiceAccount comes from the controller-manager.
for _ in $(seq 30); do k get serviceaccount default >/dev/null 2>&1 && break; sleep 1; done
log "namespace $ns"

k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  containers:
  - name: web
    image: $IMAGE
    imagePullPolicy: Never
    command: ["/bin/sh", "-c", "mkdir -p /www && echo hello-from-web > /www/index.html && echo serving && exec busybox httpd -f -p 8080 -h /www"]
    ports: [{containerPort: 8080}]
    readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
EOF
if k wait pod/web --for=condition=Ready --timeout=90s >/dev/null 2>&1; then
  ok "a pod of $IMAGE runs and is Ready on node $(k get pod web -o jsonpath='{.spec.nodeName}') ($(k get pod web -o jsonpath='{.status.podIP}'))"
else
  not_ok "the web pod is not Ready within 90 s: $(k get pod web -o jsonpath='{.status.containerStatuses[0].state}' 2>&1)"
fi
if [ "$(k logs web 2>&1)" = serving ]; then ok "kubectl logs reads the pod's output"; else not_ok "kubectl logs: $(k logs web 2>&1 | tail -n 1)"; fi
if [ "$(k exec web -- cat /www/index.html 2>&1)" = hello-from-web ]; then ok "kubectl exec runs in the pod"; else not_ok "kubectl exec: $(k exec web -- cat /www/index.html 2>&1 | tail -n 1)"; fi

# busybox wget without -T (Debian's segfaults with it); timeout bounds it.
k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  restartPolicy: Never
  containers:
  - name: client
    image: $IMAGE
    imagePullPolicy: Never
    command: ["/bin/sh", "-c", "for i in \$(seq 20); do timeout 3 busybox wget -q -O - http://\$WEB_SERVICE_HOST:\$WEB_SERVICE_PORT/ && exit 0; sleep 1; done; exit 1"]
EOF
phase=""
for _ in $(seq 60); do
  phase=$(k get pod client -o jsonpath='{.status.phase}' 2>/dev/null || true)
  case "$phase" in Succeeded | Failed) break ;; esac
  sleep 1
done
ip=$(k get service web -o jsonpath='{.spec.clusterIP}')
if [ "$phase" = Succeeded ] && [ "$(k logs client 2>&1)" = hello-from-web ]; then
  ok "a pod reaches the Service web through its cluster IP $ip"
else
  not_ok "the client pod did not reach the Service ($ip): phase $phase, $(k logs client 2>&1 | tail -n 2 | tr '\n' ' ')"
fi

k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: Pod
metadata: {name: writer}
spec:
  restartPolicy: Never
  containers:
  - name: writer
    image: $IMAGE
    imagePullPolicy: Never
    command: ["/bin/sh", "-c", "echo persisted > /data/file && cat /data/file"]
    volumeMounts: [{name: data, mountPath: /data}]
  volumes: [{name: data, persistentVolumeClaim: {claimName: data}}]
EOF
if k wait pvc/data --for=jsonpath='{.status.phase}'=Bound --timeout=60s >/dev/null 2>&1; then
  ok "a claim of the default StorageClass $(k get pvc data -o jsonpath='{.spec.storageClassName}') is provisioned and Bound ($(k get pvc data -o jsonpath='{.spec.volumeName} {.status.capacity.storage}'))"
else
  not_ok "the claim is not Bound within 60 s: $(k get pvc data -o jsonpath='{.status.phase}') $(k get events --field-selector involvedObject.name=data -o jsonpath='{.items[-1:].message}' 2>&1)"
fi
if k wait pod/writer --for=jsonpath='{.status.phase}'=Succeeded --timeout=60s >/dev/null 2>&1 &&
  [ "$(k logs writer 2>&1)" = persisted ]; then
  ok "a pod writes to the provisioned volume and reads it back"
else
  not_ok "the writer pod: $(k get pod writer -o jsonpath='{.status.phase}' 2>&1) $(k logs writer 2>&1 | tail -n 1)"
fi

echo "node: $passed passed, $failed failed"
((failed == 0))
