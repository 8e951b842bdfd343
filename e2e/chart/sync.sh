#!/usr/bin/env bash
# Brings the chart's two copies up to date with their sources, after
# `make crds` or a change to crates/pgsteward-operator/src/rbac.rs:
#   charts/pgsteward/crds/*.yaml     <- crds/*.yaml
#   charts/pgsteward/files/rbac.json <- pgsteward-operator rbac
# The chart tier (e2e/chart/test_crds.py, test_rbac.py) fails until they match.
#
# Exit codes: 0 up to date; 1 the operator could not print its RBAC table.
set -Eeuo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
chart=charts/pgsteward

rm -f "$chart"/crds/*.yaml
cp crds/*.yaml "$chart/crds/"
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
cargo run -q --locked -p pgsteward-operator -- rbac >"$tmp"
chmod 0644 "$tmp"
mv "$tmp" "$chart/files/rbac.json"
trap - EXIT
git status --short -- "$chart/crds" "$chart/files"
