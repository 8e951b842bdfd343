#!/usr/bin/env bash
# Cluster tier: the operator against a real Kubernetes API server.
#
# `make test` (e2e/run-tier.sh cluster) runs it against a local Kubernetes of
# its own, started and stopped around it by e2e/node/with-cluster.sh. Run
# alone, it uses kubectl's current context (KUBECONFIG): a kind cluster, the
# local one of `make run`, or a bare kube-apiserver (pods never start there,
# and the checks below do not need them to). Without a reachable API server
# it prints one line saying why it SKIPPED and exits 0 without reporting any
# test as passed.
#
# What it shows, in a fresh namespace:
#   1. the CRDs install (pgsteward-operator install-crds, server-side apply);
#   2. every CEL rule rejects a bad object with its message
#      (kubectl apply --dry-run=server; cases from e2e/cluster/cel-cases.json,
#      which `cargo test` keeps equal to the Rust CEL tests; an old object's
#      status is written through the status subresource); a restore target
#      is compared with status.firstRecoverabilityPoint only when
#      spec.restore changes; the spec-fuzzing sample (e2e/cluster/fuzz-cases.json)
#      gets the offline verdict (accept or refuse) from the API server;
#   3. accepted samples produce the expected objects and sizes;
#   4. status and printer columns through `kubectl get pginstance`;
#   5. a second reconcile changes no object's resourceVersion and writes
#      nothing (checked on the objects and on the operator's metrics);
#   6. a missing Secret gives Degraded=True naming it, and a Warning event;
#      a PgBackup of a missing instance is Failed, one of an instance that is
#      not Ready waits (Pending) and says so; `kubectl get pgbackup` columns;
#      a restore target in the future is refused by the operator;
#   7. deleting an instance runs cleanup and keeps the data's Secret.
#
# Exit codes: 0 every check passed, or the tier was skipped (it says so);
# 1 a check failed; 2 the operator could not be built.
set -Eeuo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"

log() { printf '%s cluster: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

if ! command -v kubectl >/dev/null 2>&1; then
  echo "cluster tier: SKIPPED - kubectl is not on PATH (make test-deps installs it); no test ran"
  exit 0
fi
if ! kubectl version --request-timeout=5s >/dev/null 2>&1; then
  context=$(kubectl config current-context 2>/dev/null || true)
  echo "cluster tier: SKIPPED - no reachable Kubernetes API server${context:+ in context \"$context\"}${KUBECONFIG:+ (KUBECONFIG=$KUBECONFIG)}; \`make test-cluster\` runs it on a local Kubernetes of its own; no test ran"
  exit 0
fi

passed=0
failed=0
ok() { echo "ok - $*"; passed=$((passed + 1)); }
not_ok() { echo "not ok - $*"; failed=$((failed + 1)); }
check() { # check DESCRIPTION COMMAND...: ok when the command succeeds
  local what=$1
  shift
  if "$@" >/dev/null 2>&1; then ok "$what"; else not_ok "$what"; fi
}
same() { # same DESCRIPTION ACTUAL EXPECTED
  if [ "$2" = "$3" ]; then ok "$1"; else not_ok "$1: got '$2', expected '$3'"; fi
}
wait_for() { # wait_for SECONDS COMMAND...: poll until the command succeeds
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 1
  done
}

log "building the operator"
if ! cargo build --quiet --locked -p pgsteward-operator; then
  echo "cluster tier: the operator does not build" >&2
  exit 2
fi
# cargo builds into CARGO_TARGET_DIR when it is set (a shared target dir).
op="${CARGO_TARGET_DIR:-$repo/target}/debug/pgsteward-operator"

ns="pgsteward-e2e-$(date +%s)-$RANDOM"
work=$(mktemp -d)
op_pid=""
op_log="$work/operator.log"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
k() { kubectl -n "$ns" "$@"; }

cleanup() {
  local rc=$?
  if [ -n "$op_pid" ]; then kill "$op_pid" 2>/dev/null || true; wait "$op_pid" 2>/dev/null || true; fi
  if ((failed > 0)) && [ -s "$op_log" ]; then
    echo "--- last operator log lines ---" >&2
    tail -n 60 "$op_log" >&2 || true
  fi
  # Without the operator, finalizers would hold the namespace forever.
  for obj in $(k get pginstances -o name 2>/dev/null); do
    k patch "$obj" --type merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1 || true
  done
  kubectl delete namespace "$ns" --wait=false >/dev/null 2>&1 || true
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT

kubectl create namespace "$ns" >/dev/null
log "namespace $ns"

# ------------------------------------------------------------------ 1. CRDs
if "$op" install-crds >"$work/install.log" 2>&1; then
  ok "CRDs installed by server-side apply and Established"
else
  not_ok "CRDs install: $(tail -n 1 "$work/install.log")"
fi
for crd in pginstances.pgsteward.io pgbackups.pgsteward.io; do
  check "CRD $crd is served" kubectl get crd "$crd" -o name
done
check "the installed PgInstance CRD has the status subresource and short name pgi" \
  bash -c "kubectl get crd pginstances.pgsteward.io -o jsonpath='{.spec.versions[0].subresources.status}{\" \"}{.spec.names.shortNames[0]}' | grep -q '{} pgi'"
# Every later check creates PgInstances or PgBackups: without both CRDs they
# would only repeat this failure (and `set -e` would stop the script half-way
# with no summary), so stop here with the count.
if ! kubectl wait --for=condition=Established --timeout=30s \
  crd/pginstances.pgsteward.io crd/pgbackups.pgsteward.io >/dev/null 2>&1; then
  echo "Bail out! the PgInstance and PgBackup CRDs are not both Established; no later check can run"
  echo "cluster: $passed passed, $failed failed"
  exit 1
fi

# ------------------------------------------------------------------ 2. CEL rules
# Split the shared cases into manifests: cases.tsv holds, per case, its index,
# whether it has an old object, and its name.
python3 - "$repo/e2e/cluster/cel-cases.json" "$work" "$ns" <<'PY'
import json, sys
cases, work, ns = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
with open(f"{work}/cases.tsv", "w") as tsv:
    for i, c in enumerate(cases):
        for which in ("old", "new"):
            obj = c[which]
            if obj is None:
                continue
            # Cases about the name keep theirs; the others get a unique one.
            name = obj["metadata"]["name"]
            keep = name not in ("db", "b")
            obj["metadata"] = {"name": name if keep else f"cel-{i}", "namespace": ns}
            # Status cannot be created with the object (the status
            # subresource drops it): the old one's goes through that
            # subresource after the create; on an update the server keeps
            # it whatever the new object says, as the offline test assumes.
            if which == "old" and "status" in obj:
                json.dump({"status": obj["status"]}, open(f"{work}/case-{i}-old-status.json", "w"))
            json.dump(obj, open(f"{work}/case-{i}-{which}.json", "w"))
        with open(f"{work}/case-{i}-parts", "w") as f:
            f.write("\n".join(c["messageParts"]) + "\n")
        tsv.write(f"{i}\t{'old' if c['old'] else 'new'}\t{c['name']}\n")
PY
while IFS=$'\t' read -r i has_old name; do
  if [ "$has_old" = old ] && ! k create -f "$work/case-$i-old.json" >"$work/case-$i-create.log" 2>&1; then
    not_ok "CEL: $name (the valid old object was refused: $(tail -n 1 "$work/case-$i-create.log"))"
    continue
  fi
  if [ -f "$work/case-$i-old-status.json" ] &&
    ! k patch -f "$work/case-$i-old.json" --subresource=status --type merge \
      --patch-file "$work/case-$i-old-status.json" >"$work/case-$i-status.log" 2>&1; then
    not_ok "CEL: $name (the old object's status was refused: $(tail -n 1 "$work/case-$i-status.log"))"
    continue
  fi
  if k apply --dry-run=server -f "$work/case-$i-new.json" >"$work/case-$i.out" 2>&1; then
    not_ok "CEL: $name (accepted)"
    continue
  fi
  missing=""
  while IFS= read -r part; do
    [ -z "$part" ] || grep -qF -- "$part" "$work/case-$i.out" || missing+=" [$part]"
  done <"$work/case-$i-parts"
  first=$(head -n 1 "$work/case-$i-parts")
  message=$(grep -m1 -F -- "$first" "$work/case-$i.out" | head -c 400 || true)
  if [ -z "$missing" ]; then
    ok "CEL rejects: $name -> $message"
  else
    not_ok "CEL: $name: message lacks$missing; server said: $(tail -n 1 "$work/case-$i.out")"
  fi
done <"$work/cases.tsv"
# Spec fuzzing: the generated sample (e2e/cluster/fuzz-cases.json, kept
# equal to `cargo test -p pgsteward-api --test spec_fuzz`) must get the
# offline verdict, accept or refuse, from the real API server.
if python3 "$repo/e2e/cluster/fuzz_replay.py" "$repo/e2e/cluster/fuzz-cases.json" "$ns" "$work" >"$work/fuzz.out" 2>&1; then
  ok "$(tail -n 1 "$work/fuzz.out")"
else
  cat "$work/fuzz.out"
  not_ok "spec fuzzing: the API server and the offline check disagree: $(tail -n 1 "$work/fuzz.out")"
fi
k delete pginstances,pgbackups --all --wait=false >/dev/null 2>&1 || true
# The restore window, through real writes (not dry-run): the rule at the
# root compares a changed spec.restore with the status the operator wrote,
# and never refuses a status write because of a request already made.
cat >"$work/window.yaml" <<EOF
apiVersion: pgsteward.io/v1alpha1
kind: PgInstance
metadata: {name: window}
spec:
  postgresVersion: 17
  storage: {size: 1Gi}
  backup: {s3: {prefix: s3://bucket/window}}
EOF
status_patch() { k patch pginstance window --subresource=status --type merge \
  -p "{\"status\":{\"firstRecoverabilityPoint\":\"$1\"}}"; }
restore_patch() { k patch pginstance window --type merge \
  -p "{\"spec\":{\"restore\":{\"requestId\":\"$1\",\"target\":{\"time\":\"$2\"}}}}"; }
if k create -f "$work/window.yaml" >/dev/null 2>&1 && status_patch 2026-11-20T03:00:00Z >/dev/null 2>&1; then
  ok "restore window: status.firstRecoverabilityPoint written through the status subresource"
  if restore_patch early 2026-11-20T02:00:00Z >"$work/window-early.out" 2>&1; then
    not_ok "restore window: a target before the first recoverability point was accepted"
  elif grep -q "the earliest time you can restore to is 2026-11-20T03:00:00Z" "$work/window-early.out"; then
    ok "restore window: a target before it is refused -> $(grep -o "spec.restore.target.time 2026.*" "$work/window-early.out" | head -c 300)"
  else
    not_ok "restore window: refused without the earliest time: $(tail -n 1 "$work/window-early.out")"
  fi
  check "restore window: a target after it is accepted" restore_patch r1 2026-11-20T04:00:00Z
  check "restore window: a status write moving the point past that request is accepted" \
    status_patch 2026-11-21T00:00:00Z
  check "restore window: another spec change while that request stays is accepted" \
    k patch pginstance window --type merge -p '{"spec":{"storage":{"size":"2Gi"}}}'
  if restore_patch r2 2026-11-20T04:00:00Z >"$work/window-r2.out" 2>&1; then
    not_ok "restore window: a new request with a time before the moved point was accepted"
  else
    check "restore window: a new request with that time, now before the point, is refused" \
      grep -q "the earliest time you can restore to is 2026-11-21T00:00:00Z" "$work/window-r2.out"
  fi
else
  not_ok "restore window: the instance or its status could not be written"
fi

k delete pginstances,pgbackups --all --wait=false >/dev/null 2>&1 || true
wait_for 30 bash -c "[ -z \"\$(kubectl -n $ns get pginstances,pgbackups -o name 2>/dev/null)\" ]" || true

for sample in config/samples/*.yaml; do
  check "sample $(basename "$sample") is accepted (dry-run=server)" \
    bash -c "kubectl -n $ns apply --dry-run=server -f $sample >/dev/null"
done

# ------------------------------------------------------------------ 3. objects
# The pods are kept unschedulable, so what the operator sees stays still on a
# cluster with nodes too; the API objects are what this tier checks.
k create secret generic orders-s3 \
  --from-literal=AWS_ACCESS_KEY_ID=PGSTEWARDE2EACCESS --from-literal=AWS_SECRET_ACCESS_KEY="e2e-secret-$RANDOM$RANDOM$RANDOM" >/dev/null
unschedulable='{"spec":{"nodeSelector":{"pgsteward.io/e2e":"no-such-node"}}}'
for sample in pginstance-minimal pginstance-s3; do
  k apply -f "config/samples/$sample.yaml" >/dev/null
done
k patch pginstance minimal --type merge -p "$unschedulable" >/dev/null
k patch pginstance orders --type merge -p "$unschedulable" >/dev/null

log "starting the operator (metrics on 127.0.0.1:$port)"
"$op" run --leader-election=false --watch-namespaces "$ns" --metrics-addr "127.0.0.1:$port" \
  --log-format text >"$op_log" 2>&1 &
op_pid=$!

for obj in configmap/minimal-config secret/minimal-superuser service/minimal service/minimal-hl statefulset/minimal; do
  if wait_for 60 k get "$obj"; then ok "minimal: $obj created"; else not_ok "minimal: $obj not created within 60 s"; fi
done
jp() { k get "$1" -o "jsonpath=$2" 2>/dev/null; }
size=$(jp statefulset/minimal '{.spec.volumeClaimTemplates[0].spec.resources.requests.storage}')
same "minimal: claim template is 25Gi (10Gi x 2.5)" "$size" 25Gi
image=$(jp statefulset/minimal '{.spec.template.spec.containers[0].image}')
same "minimal: default image" "$image" ghcr.io/pgsteward/postgres:18-standard-trixie
pgdata=$(jp statefulset/minimal '{.spec.template.spec.containers[0].env[?(@.name=="PGDATA")].value}')
same "minimal: PGDATA" "$pgdata" /var/lib/postgresql/18/docker
for obj in configmap/minimal-config service/minimal service/minimal-hl statefulset/minimal; do
  owner=$(jp "$obj" '{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}')
  same "minimal: $obj is owned by PgInstance/minimal" "$owner" PgInstance/minimal
done
managers=$(k get statefulset/minimal configmap/minimal-config service/minimal -o jsonpath='{range .items[*]}{range .metadata.managedFields[?(@.operation=="Apply")]}{.manager}{"\n"}{end}{end}' | sort -u | tr '\n' ' ')
same "one field manager applies the objects" "$managers" "pgsteward "
same "minimal: the superuser Secret has no owner (kept with the data)" "$(jp secret/minimal-superuser '{.metadata.ownerReferences}')" ""
conf=$(jp configmap/minimal-config '{.data.00-slow-query-log\.conf}')
check "minimal: conf.d turns slow-query logging off" grep -q "log_min_duration_statement = '-1'" <<<"$conf"

if wait_for 60 k get statefulset/orders; then
  size=$(jp statefulset/orders '{.spec.volumeClaimTemplates[0].spec.resources.requests.storage}')
  same "orders: claim template is 125Gi (50Gi x 2.5)" "$size" 125Gi
  prefix=$(jp statefulset/orders '{.spec.template.spec.containers[0].env[?(@.name=="WALG_S3_PREFIX")].value}')
  same "orders: WALG_S3_PREFIX" "$prefix" s3://acme-backups/orders
  ref=$(jp statefulset/orders '{.spec.template.spec.containers[0].env[?(@.name=="AWS_SECRET_ACCESS_KEY")].valueFrom.secretKeyRef.name}')
  same "orders: S3 credentials come from Secret orders-s3 by secretKeyRef" "$ref" orders-s3
  params=$(jp configmap/orders-config '{.data.10-parameters\.conf}')
  check "orders: conf.d has the parameters, quoted" grep -q "shared_buffers = '512MB'" <<<"$params"
else
  not_ok "orders: statefulset not created within 60 s"
fi

# ------------------------------------------------------------------ 4. status
settled() { # the status describes the current generation, with 6 conditions
  [ "$(jp "pginstance/$1" '{.status.observedGeneration}')" = "$(jp "pginstance/$1" '{.metadata.generation}')" ] &&
    [ "$(jp "pginstance/$1" '{range .status.conditions[*]}{.type}{" "}{end}')" = "Ready Progressing Degraded BackupHealthy Upgrading Restoring " ]
}
if wait_for 60 settled minimal; then
  ok "minimal: status has observedGeneration and the six conditions"
else
  not_ok "minimal: status: $(jp pginstance/minimal '{.status}')"
fi
table=$(k get pginstance 2>&1 || true)
while IFS= read -r line; do echo "    $line"; done <<<"$table"
header=$(head -n 1 <<<"$table" | tr -s ' ')
same "printer columns" "$header" "NAME VERSION READY STATUS LAST BACKUP AGE"
reason=$(jp pginstance/minimal '{.status.conditions[?(@.type=="Ready")].reason}')
check "the Status column shows the Ready reason ($reason)" grep -q " $reason " <<<"$(grep '^minimal ' <<<"$table") "
backup=$(jp pginstance/minimal '{.status.conditions[?(@.type=="BackupHealthy")].reason}')
same "minimal: BackupHealthy says NotConfigured" "$backup" NotConfigured

# ------------------------------------------------------------------ 5. idle
metric() { # metric NAME [LABEL-FILTER]: the sum of a metric's samples
  curl -fsS "http://127.0.0.1:$port/metrics" 2>/dev/null |
    awk -v n="$1" -v f="${2:-}" '$1 ~ "^"n"({|$)" && index($1, f) { s += $2 } END { print s + 0 }'
}
rvs() {
  k get configmap/minimal-config secret/minimal-superuser service/minimal service/minimal-hl statefulset/minimal \
    -o jsonpath='{range .items[*]}{.kind}/{.metadata.name}={.metadata.resourceVersion} {end}'
}
applied_at() { # when pgsteward last applied the StatefulSet and the status
  k get statefulset/minimal -o jsonpath='{.metadata.managedFields[?(@.manager=="pgsteward")].time}'
  k get pginstance/minimal -o jsonpath='{.metadata.managedFields[?(@.manager=="pgsteward")].time}'
}
sleep 5 # let the first reconciles and their follow-ups finish
before_rvs=$(rvs)
before_applied=$(applied_at)
before_objects=$(metric pgsteward_object_writes_total)
before_status=$(metric pgsteward_status_writes_total 'outcome="written"')
before_runs=$(metric pgsteward_reconciliations_total)
k annotate pginstance minimal pgsteward.io/e2e-poke="$(date +%s)" --overwrite >/dev/null
if wait_for 30 bash -c "[ \"\$(curl -fsS http://127.0.0.1:$port/metrics | awk '/^pgsteward_reconciliations_total/ {print \$2}')\" -gt $before_runs ]"; then
  ok "a second reconcile ran (reconciliations $before_runs -> $(metric pgsteward_reconciliations_total))"
else
  not_ok "no second reconcile within 30 s"
fi
sleep 3
after_rvs=$(rvs)
same "second reconcile changed no resourceVersion ($before_rvs)" "$after_rvs" "$before_rvs"
same "second reconcile applied nothing (pgsteward managedFields times unchanged)" "$(applied_at)" "$before_applied"
after_objects=$(metric pgsteward_object_writes_total)
after_status=$(metric pgsteward_status_writes_total 'outcome="written"')
same "metrics: no object or status write during the idle reconcile" "$after_objects/$after_status" "$before_objects/$before_status"

# ------------------------------------------------------------------ 6. Degraded
cat >"$work/broken.yaml" <<EOF
apiVersion: pgsteward.io/v1alpha1
kind: PgInstance
metadata:
  name: broken
spec:
  postgresVersion: 17
  storage: {size: 1Gi}
  superuserSecretRef: {name: missing-secret}
EOF
k apply -f "$work/broken.yaml" >/dev/null
degraded() { [ "$(jp pginstance/broken '{.status.conditions[?(@.type=="Degraded")].status}')" = True ]; }
if wait_for 60 degraded; then
  msg=$(jp pginstance/broken '{.status.conditions[?(@.type=="Degraded")].reason}: {.status.conditions[?(@.type=="Degraded")].message}')
  check "missing Secret: Degraded=True, $msg" grep -q "SecretNotFound: Secret $ns/missing-secret" <<<"$msg"
else
  not_ok "missing Secret: no Degraded=True within 60 s"
fi
check "missing Secret: no StatefulSet is created" bash -c "! kubectl -n $ns get statefulset/broken >/dev/null 2>&1"
warned() { k get events --field-selector "involvedObject.name=broken,type=Warning" -o jsonpath='{.items[*].reason}' | grep -q InvalidSpec; }
check "missing Secret: a Warning event with reason InvalidSpec" wait_for 30 warned

# ------------------------------------------------------------------ 6b. PgBackup
# Pods never run here, so a backup cannot be taken: what this shows is the
# controller's refusals and waits, with their messages, and the columns.
cat >"$work/backups.yaml" <<EOF
apiVersion: pgsteward.io/v1alpha1
kind: PgBackup
metadata: {name: orphan}
spec: {instanceRef: {name: no-such-instance}}
---
apiVersion: pgsteward.io/v1alpha1
kind: PgBackup
metadata: {name: early}
spec: {instanceRef: {name: orders}, permanent: true}
EOF
k apply -f "$work/backups.yaml" >/dev/null
phase_is() { [ "$(jp "pgbackup/$1" '{.status.phase}')" = "$2" ]; }
if wait_for 60 phase_is orphan Failed; then
  msg=$(jp pgbackup/orphan '{.status.message}')
  check "PgBackup of a missing instance: Failed, $msg" grep -q "PgInstance $ns/no-such-instance does not exist" <<<"$msg"
else
  not_ok "PgBackup of a missing instance: not Failed within 60 s ($(jp pgbackup/orphan '{.status}'))"
fi
if wait_for 60 phase_is early Pending; then
  msg=$(jp pgbackup/early '{.status.message}')
  check "PgBackup of an instance that is not Ready: Pending, $msg" grep -q "waiting for PgInstance orders to be Ready" <<<"$msg"
else
  not_ok "PgBackup of an instance that is not Ready: not Pending within 60 s ($(jp pgbackup/early '{.status}'))"
fi
table=$(k get pgbackup 2>&1 || true)
while IFS= read -r line; do echo "    $line"; done <<<"$table"
same "PgBackup printer columns" "$(head -n 1 <<<"$table" | tr -s ' ')" "NAME INSTANCE PHASE BACKUP FINISHED AGE"
check "kubectl get pgbackup shows the phase" grep -q "^orphan .* Failed " <<<"$table"
# Read kubectl's whole output first: `kubectl … | head -n 1` can kill kubectl
# with SIGPIPE, which pipefail and set -e turn into an exit of the tier (141).
wide=$(k get pgbackup -o wide 2>&1 || true)
# -o wide keeps the CRD's column order and puts the priority-1 columns in place.
same "PgBackup wide columns" "$(head -n 1 <<<"$wide" | tr -s ' ')" "NAME INSTANCE PHASE BACKUP BEGIN LSN END LSN FINISHED MESSAGE AGE"

# A restore target in the future cannot be a CEL rule (CEL has no clock):
# the operator refuses it before anything is touched.
k patch pginstance orders --type merge \
  -p '{"spec":{"restore":{"requestId":"in-the-future","target":{"time":"2099-01-01T00:00:00Z"}}}}' >/dev/null
future() { [ "$(jp pginstance/orders '{.status.conditions[?(@.type=="Degraded")].reason}')" = RestoreTargetInFuture ]; }
if wait_for 60 future; then
  ok "restore target in the future: Degraded=True RestoreTargetInFuture, $(jp pginstance/orders '{.status.lastRestore.outcome}')"
else
  not_ok "restore target in the future: no RestoreTargetInFuture within 60 s ($(jp pginstance/orders '{.status.conditions[?(@.type=="Degraded")]}'))"
fi
restore_env=$(jp statefulset/orders '{.spec.template.spec.containers[0].env[?(@.name=="PGSTEWARD_RESTORE_ID")].value}')
same "restore target in the future: nothing is put on the pod template" "$restore_env" ""

# ------------------------------------------------------------------ 7. delete
if k delete pginstance minimal --timeout=60s >/dev/null 2>&1; then
  ok "deleting minimal completes (cleanup ran, finalizer removed)"
else
  not_ok "deleting minimal did not complete within 60 s"
fi
check "the superuser Secret is kept with the data" k get secret/minimal-superuser -o name
if wait_for 30 bash -c "! kubectl -n $ns get configmap/minimal-config"; then
  ok "owned objects are garbage-collected"
else
  echo "# owned objects still present after 30 s: this server may run no garbage collector (not counted)"
fi

# ------------------------------------------------------------ 8. secrets
# The leak check every tier shares: no Secret's value (the generated
# superuser passwords, the S3 keys) in events, statuses, ConfigMaps,
# StatefulSets, pods, pod logs or the operator's log.
if leaks=$(python3 "$repo/e2e/leakcheck.py" cluster "$op_log" 2>&1); then
  ok "${leaks#ok - }"
else
  not_ok "$(grep -m 3 'not ok' <<<"$leaks" | tr '\n' ' ')"
fi

echo "cluster: $passed passed, $failed failed"
((failed == 0))
