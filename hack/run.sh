#!/usr/bin/env bash
# make run: install the CRDs into the current kube context and run the
# operator against it, logging as text. Ctrl-C stops it.
#
# Exit codes: 0 stopped normally; 2 no reachable cluster (one line on stderr
# says how to get one); anything else: the build or the operator failed.
set -Eeuo pipefail
cd "$(dirname "$0")/.."

# shellcheck disable=SC2016 # the backquotes are literal text
hint='create one with `kind create cluster` (https://kind.sigs.k8s.io) or point KUBECONFIG at one, then run `make run` again'

# Fail fast, before a long first compile, when kubectl can tell.
if command -v kubectl >/dev/null 2>&1; then
  if ! kubectl version --request-timeout=5s >/dev/null 2>&1; then
    context=$(kubectl config current-context 2>/dev/null || true)
    echo "make run: no reachable Kubernetes cluster${context:+ in context \"$context\"}; $hint" >&2
    exit 2
  fi
fi

cargo build --quiet --locked -p pgsteward-operator
# The operator checks the cluster itself too (and says the same in one line).
exec target/debug/pgsteward-operator run \
  --install-crds \
  --log-format "${PGSTEWARD_LOG_FORMAT:-text}" \
  --metrics-addr "${PGSTEWARD_METRICS_ADDR:-127.0.0.1:8080}" \
  --leader-election "${PGSTEWARD_LEADER_ELECTION:-false}" \
  "$@"
