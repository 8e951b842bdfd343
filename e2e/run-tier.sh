#!/usr/bin/env bash
# Runs one test tier with the cached test dependencies on PATH.
#
#   e2e/run-tier.sh image|chart|cluster|node|make-run|bench-upgrade|bench-scale
#
# The image tier runs the wal-g named by PGSTEWARD_WALG (default: the labelled
# stand-in e2e/standins/wal-g, file storage only) and, for its S3 backend, the
# versitygw that e2e/setup/install-s3.sh put in $PGSTEWARD_CACHE/bin (or
# PGSTEWARD_S3_SERVER). Its header says which ran; docs/walg.md says how
# real WAL-G differed.
#
# Exit codes: 0 the tier passed (or skipped, saying why); 1 it failed; 2 usage.
set -Eeuo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
PGSTEWARD_CACHE=${PGSTEWARD_CACHE:-/var/cache/pgsteward}
export PATH="$PGSTEWARD_CACHE/bin:$PATH" PGSTEWARD_CACHE
pytest_bin="$PGSTEWARD_CACHE/venv/bin/pytest"

tier=${1:-}
case "$tier" in
  image)
    cd "$repo/e2e/image"
    exec "$pytest_bin" -ra -p no:cacheprovider "${@:2}" .
    ;;
  chart)
    cd "$repo/e2e/chart"
    exec "$pytest_bin" -ra -p no:cacheprovider "${@:2}" .
    ;;
  cluster)
    # Always against a local Kubernetes of its own, never the user's cluster
    # (e2e/cluster/run.sh alone runs against the current KUBECONFIG).
    exec "$repo/e2e/node/with-cluster.sh" "cluster tier" "$repo/e2e/cluster/run.sh" "${@:2}"
    ;;
  node)
    # A local Kubernetes with a node of its own (root: containerd, runc, CNI).
    exec "$repo/e2e/node/with-cluster.sh" --node "node tier" "$repo/e2e/node/tier.sh" "${@:2}"
    ;;
  make-run)
    # `make run` itself, on a machine without a cluster (after the node tier:
    # one kubelet per machine).
    exec "$repo/e2e/node/make-run.sh" "${@:2}"
    ;;
  bench-upgrade)
    exec "$repo/e2e/bench/upgrade.sh" "${@:2}"
    ;;
  bench-scale)
    exec "$repo/e2e/cluster/bench-scale.sh" "${@:2}"
    ;;
  *)
    echo "usage: $0 image|chart|cluster|node|make-run|bench-upgrade|bench-scale" >&2
    exit 2
    ;;
esac
