#!/usr/bin/env bash
# The node tier, on a local Kubernetes with its node (with-cluster.sh --node):
# the node's smoke checks (smoke.sh); the cluster tier's checks
# (e2e/cluster/run.sh), here with a kubelet, a scheduler that has a node and
# a provisioner behind the default StorageClass; then the operator's
# scenarios on the real kubelet (test_operator.py): the operator and
# PostgreSQL 17 and 18 images are built as root filesystems (image.sh) and
# imported into the node's containerd first.
#
#   KUBECONFIG=… e2e/node/tier.sh [PYTEST-ARGS...]
#
# The operator image is made from the debug binary that the Rust tier built
# (target/debug/pgsteward-operator; built here when missing): the release
# build would add minutes of compiling to every CI run for no extra coverage.
#
# Exit codes: 0 every check passed; 1 a check failed.
set -Eeuo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=e2e/node/lib.sh
. "$here/lib.sh"

rc=0
"$here/smoke.sh" || rc=1
"$repo/e2e/cluster/run.sh" || rc=1

binary="${CARGO_TARGET_DIR:-$repo/target}/debug/pgsteward-operator"
if [ ! -x "$binary" ]; then
  log "building the operator ($binary)"
  (cd "$repo" && cargo build --quiet --locked -p pgsteward-operator)
fi
"$here/image.sh" import operator "$binary" >/dev/null
for major in ${PGSTEWARD_TEST_MAJORS:-17 18}; do
  "$here/image.sh" import postgres "$major" >/dev/null
done

cd "$here"
"$PGSTEWARD_CACHE/venv/bin/pytest" -ra -p no:cacheprovider "$@" test_operator.py || rc=1
exit "$rc"
