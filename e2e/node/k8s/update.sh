#!/usr/bin/env bash
# Points e2e/node/k8s at another Kubernetes release: writes go.mod (a
# requirement on k8s.io/kubernetes VERSION and, for each staging module that
# its go.mod replaces with ./staging, a replace with the published
# v0.<minor>.<patch>), then go mod tidy writes go.sum. Commit both.
#
#   e2e/node/k8s/update.sh v1.34.4
#
# Exit codes: 0 updated; 1 the release or one of its modules is not served;
# 2 usage.
set -Eeuo pipefail
here=$(cd "$(dirname "$0")" && pwd)
log() { printf '%s [%s] %s\n' "$(date -u +%H:%M:%S)" "${0##*/}" "$*" >&2; }

version=${1:-}
[[ "$version" =~ ^v1\.[0-9]+\.[0-9]+$ ]] || { echo "usage: $0 v1.MINOR.PATCH" >&2; exit 2; }
staging="v0.${version#v1.}"

mod=$(go mod download -json "k8s.io/kubernetes@$version" | python3 -c 'import json, sys; print(json.load(sys.stdin)["GoMod"])') ||
  { log "k8s.io/kubernetes $version is not served by the Go module proxy"; exit 1; }
go_version=$(awk '$1 == "go" {print $2; exit}' "$mod")
godebug=$(awk '$1 == "godebug" {print; exit}' "$mod")
mapfile -t modules < <(awk '$2 == "=>" && $3 ~ /^\.\/staging\// {print $1}' "$mod")
[ "${#modules[@]}" -gt 0 ] || { log "no staging replaces in k8s.io/kubernetes $version's go.mod"; exit 1; }

{
  echo "// The Kubernetes release the local cluster builds (e2e/node/install.sh). Only"
  echo "// this file and go.sum are ours: every module comes from the Go module proxy."
  echo "// k8s.io/kubernetes points its staging modules at ./staging, which a module"
  echo "// download does not have; each is replaced by its published v0.<minor>.<patch>."
  echo "// Regenerate for another release with e2e/node/k8s/update.sh VERSION."
  echo "module pgsteward.io/e2e/node/k8s"
  echo
  echo "go $go_version"
  if [ -n "$godebug" ]; then echo; echo "$godebug"; fi
  echo
  echo "require k8s.io/kubernetes $version"
  echo
  echo "replace ("
  for m in "${modules[@]}"; do printf '\t%s => %s %s\n' "$m" "$m" "$staging"; done
  echo ")"
} >"$here/go.mod"
rm -f "$here/go.sum"
(cd "$here" && go mod tidy)
log "e2e/node/k8s now builds Kubernetes $version (${#modules[@]} staging modules at $staging); commit go.mod and go.sum"
