#!/usr/bin/env bash
# The kind end-to-end path (`make e2e-kind`, and the e2e-kind workflow, step by
# step): the built images on a kind cluster, installed with the chart the way
# the README says, then backups, a point-in-time restore and a major upgrade,
# with rows counted at each step.
#
#   e2e/kind/run.sh [all|quickstart|images|store|scenario|diagnose|down] [majors...]
#
#   quickstart  the README's "Install with Helm (kind quickstart)" block, word
#               for word: kind cluster, images, helm install, a first instance
#   images M..  build the PostgreSQL images of majors M.. (default 17) and load them
#   store       MinIO (e2e/kind/minio.yaml) and the bucket
#   scenario    instance on 17 with S3 backups; rows; a PgBackup; a clone to a
#               point in time (rows checked); upgrade 17 -> 18 (rows checked);
#               delete (owned objects gone, PVC per deleteClaimOnDelete)
#   diagnose    print what a failed run needs to be understood
#   down        delete the kind cluster
#   all         quickstart, images 17, store, scenario, then down unless KEEP=1
#
# Without docker (and a daemon), kind, helm and kubectl it prints a SKIP line
# and exits 0, unless E2E_KIND_REQUIRED=1 (the workflow sets it): then 1.
#
# Exit codes: 0 passed (or skipped, saying why); 1 a step failed; 2 usage.
set -Eeuo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=e2e/kind/lib.sh
. "$here/lib.sh"
cd "$repo"
PGSTEWARD_CACHE=${PGSTEWARD_CACHE:-/var/cache/pgsteward}
export PATH="$PATH:$PGSTEWARD_CACHE/bin"

S3_SECRET=e2e-s3
S3_ENDPOINT=http://minio.minio.svc:9000
S3_BUCKET=pgsteward

require_tools() {
  local missing=() t
  for t in docker kind helm kubectl; do
    command -v "$t" >/dev/null || missing+=("$t")
  done
  if command -v docker >/dev/null && ! docker info >/dev/null 2>&1; then
    missing+=("a running Docker daemon")
  fi
  [ "${#missing[@]}" -eq 0 ] && return 0
  local list
  list=$(printf '%s, ' "${missing[@]}")
  list=${list%, }
  if [ "${E2E_KIND_REQUIRED:-0}" = 1 ]; then
    die "e2e-kind needs $list"
  fi
  echo "SKIP e2e-kind: needs $list (kind runs the built images in Docker)"
  exit 0
}

# `docker build` arguments for the Bake target tagged $1, read from
# `docker buildx bake --print`: the same context, Dockerfile, stage and build
# arguments, without the index annotations and attestations of the release
# build (which a single-platform --load refuses). NUL-separated.
docker_build_args_for_tag() {
  docker buildx bake --print 2>/dev/null | TAG="$1" python3 -c '
import json, os, sys
tag = os.environ["TAG"]
for name, t in json.load(sys.stdin).get("target", {}).items():
    if tag in (t.get("tags") or []):
        args = ["--tag", tag, "--file", os.path.join(t["context"], t.get("dockerfile", "Dockerfile"))]
        if t.get("target"):
            args += ["--target", t["target"]]
        for k, v in sorted((t.get("args") or {}).items()):
            args += ["--build-arg", f"{k}={v}"]
        sys.stdout.write("\0".join(args + [t["context"]]))
        break
else:
    sys.exit(f"no target in docker-bake.hcl is tagged {tag} (docker buildx bake --print)")'
}

cmd_quickstart() {
  log "running the README quickstart word for word"
  "$here/quickstart.sh" run
}

cmd_images() {
  local majors=("$@") major tag args=()
  [ "${#majors[@]}" -gt 0 ] || majors=(17)
  for major in "${majors[@]}"; do
    tag="$POSTGRES_REPOSITORY:$major-$POSTGRES_VARIANT"
    mapfile -d '' -t args < <(registry=${POSTGRES_REPOSITORY%/*} docker_build_args_for_tag "$tag")
    [ "${#args[@]}" -gt 0 ] || die "cannot build $tag"
    log "docker build ${args[*]}"
    docker build "${args[@]}"
    kind load docker-image --name "$KIND_CLUSTER" "$tag"
  done
}

cmd_store() {
  log "installing MinIO and the bucket $S3_BUCKET"
  kubectl apply -f "$here/minio.yaml"
  kubectl -n minio rollout status deployment/minio --timeout=300s
  kubectl -n minio wait job/make-bucket --for=condition=Complete --timeout=300s
}

apply_instance() {
  local name=$1 major=$2 delete_claim=$3 extra=${4:-}
  kubectl -n "$E2E_NAMESPACE" apply -f - <<YAML
apiVersion: pgsteward.io/v1alpha1
kind: PgInstance
metadata:
  name: $name
spec:
  postgresVersion: $major
  storage:
    size: 1Gi
    deleteClaimOnDelete: $delete_claim
  backup:
    s3:
      prefix: s3://$S3_BUCKET/$name
      endpoint: $S3_ENDPOINT
      region: us-east-1
      forcePathStyle: true
      credentialsSecretRef:
        name: $S3_SECRET
$extra
YAML
}

backup_finished() {
  local phase
  phase=$(kubectl -n "$E2E_NAMESPACE" get pgbackup "$1" -o jsonpath='{.status.phase}')
  [ "$phase" = Succeeded ] || [ "$phase" = Failed ]
}

# Whether the WAL segment $2 of instance $1 (or a later one) has been archived.
wal_archived() {
  [ "$(psql_in "$1" -c "SELECT coalesce(last_archived_wal >= '$2', false) FROM pg_stat_archiver")" = t ]
}

# StatefulSets, Services, ConfigMaps (and Secrets) whose owner is a PgInstance.
owned_objects() {
  kubectl -n "$E2E_NAMESPACE" get statefulsets,services,configmaps,secrets -o json | python3 -c '
import json, sys
for o in json.load(sys.stdin)["items"]:
    if any(r.get("kind") == "PgInstance" for r in o["metadata"].get("ownerReferences") or []):
        print(o["kind"] + "/" + o["metadata"]["name"])'
}

no_owned_objects() {
  [ -z "$(owned_objects)" ]
}

no_pvc_of() {
  ! kubectl -n "$E2E_NAMESPACE" get pvc -o name | grep -q -- "-$1-0\$"
}

cmd_scenario() {
  local source=e2e-pg clone=e2e-pitr target_time backup_phase segment
  kubectl create namespace "$E2E_NAMESPACE" --dry-run=client -o yaml | kubectl apply -f -
  kubectl -n "$E2E_NAMESPACE" create secret generic "$S3_SECRET" \
    --from-literal=AWS_ACCESS_KEY_ID=pgsteward-e2e \
    --from-literal=AWS_SECRET_ACCESS_KEY=pgsteward-e2e-secret \
    --dry-run=client -o yaml | kubectl apply -f -

  log "5. an instance on PostgreSQL 17 with backups to MinIO; rows; a PgBackup"
  apply_instance "$source" 17 false
  wait_ready "$source" 900 17
  psql_in "$source" -c 'CREATE TABLE e2e_rows (id int PRIMARY KEY, batch text NOT NULL, at timestamptz NOT NULL DEFAULT now())'
  psql_in "$source" -c "INSERT INTO e2e_rows (id, batch) SELECT g, 'before-backup' FROM generate_series(1, 100) g"
  kubectl -n "$E2E_NAMESPACE" apply -f - <<YAML
apiVersion: pgsteward.io/v1alpha1
kind: PgBackup
metadata:
  name: $source-first
spec:
  instanceRef:
    name: $source
YAML
  retry_for 900 backup_finished "$source-first" || die "pgbackup/$source-first did not finish in 900s"
  backup_phase=$(kubectl -n "$E2E_NAMESPACE" get pgbackup "$source-first" -o jsonpath='{.status.phase}')
  [ "$backup_phase" = Succeeded ] ||
    die "pgbackup/$source-first: $backup_phase: $(kubectl -n "$E2E_NAMESPACE" get pgbackup "$source-first" -o jsonpath='{.status.message}')"
  log "pgbackup/$source-first succeeded: $(kubectl -n "$E2E_NAMESPACE" get pgbackup "$source-first" -o jsonpath='{.status.backupName}')"

  # Rows after the backup and before the target time come back with the
  # restore (WAL replay); rows after the target time must not.
  psql_in "$source" -c "INSERT INTO e2e_rows (id, batch) SELECT g, 'after-backup' FROM generate_series(101, 200) g"
  sleep 2
  target_time=$(psql_in "$source" -c "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')")
  sleep 2
  psql_in "$source" -c "INSERT INTO e2e_rows (id, batch) SELECT g, 'after-target' FROM generate_series(201, 300) g"
  # At a segment boundary pg_walfile_name names the segment just completed:
  # the last one the restore needs.
  segment=$(psql_in "$source" -c 'SELECT pg_walfile_name(pg_switch_wal())')
  expect_rows "$source" 300
  log "waiting for WAL segment $segment (the last rows) to be archived"
  retry_for 300 wal_archived "$source" "$segment" || die "WAL segment $segment was not archived within 300s"

  log "6. restore to $target_time: a clone of $source at that time"
  apply_instance "$clone" 17 true "  bootstrap:
    recovery:
      sourcePrefix: s3://$S3_BUCKET/$source
      target:
        time: \"$target_time\""
  wait_ready "$clone" 900 17
  expect_rows "$clone" 200
  [ "$(psql_in "$clone" -c "SELECT count(*) FROM e2e_rows WHERE batch = 'after-target'")" = 0 ] ||
    die "the clone has rows written after the target time"

  log "7. upgrade $source from 17 to 18"
  kubectl -n "$E2E_NAMESPACE" patch pginstance "$source" --type merge -p '{"spec":{"postgresVersion":18}}'
  wait_ready "$source" 1200 18
  [ "$(psql_in "$source" -c 'SHOW server_version_num' | cut -c1-2)" = 18 ] || die "the server is not PostgreSQL 18"
  expect_rows "$source" 300

  log "8. delete both instances"
  kubectl -n "$E2E_NAMESPACE" delete pginstance "$source" "$clone" --wait=true --timeout=300s
  retry_for 300 no_owned_objects || die "objects owned by a PgInstance are still there: $(owned_objects | tr '\n' ' ')"
  # deleteClaimOnDelete: the clone's volume goes, the source's (default) stays.
  retry_for 300 no_pvc_of "$clone" || die "the clone's PVC survived although deleteClaimOnDelete was true"
  no_pvc_of "$source" && die "the source's PVC was deleted although deleteClaimOnDelete was false"
  log "scenario passed"
}

cmd_diagnose() {
  set +e
  kubectl get nodes -o wide
  kubectl get pginstances,pgbackups -A -o wide
  kubectl get pods,pvc,statefulsets -A -o wide
  kubectl -n "$E2E_NAMESPACE" get pginstances -o yaml
  kubectl -n "$OPERATOR_NAMESPACE" logs deployment/pgsteward --tail=300
  for pod in $(kubectl -n "$E2E_NAMESPACE" get pods -o name); do
    echo "--- $pod"
    kubectl -n "$E2E_NAMESPACE" logs "$pod" --all-containers --tail=200
  done
  kubectl get events -A --sort-by=.lastTimestamp | tail -n 100
  return 0
}

cmd_down() {
  kind delete cluster --name "$KIND_CLUSTER"
}

main() {
  local step=${1:-all}
  [ $# -gt 0 ] && shift
  case "$step" in
    all)
      require_tools
      cmd_quickstart
      cmd_images 17
      cmd_store
      # A separate process, so that errexit holds inside the scenario.
      "$0" scenario || {
        "$0" diagnose
        exit 1
      }
      [ "${KEEP:-0}" = 1 ] || cmd_down
      ;;
    quickstart | images | store | scenario)
      require_tools
      "cmd_$step" "$@"
      ;;
    diagnose | down) "cmd_$step" ;;
    *)
      sed -n '2,22p' "$0" >&2
      exit 2
      ;;
  esac
}

main "$@"
