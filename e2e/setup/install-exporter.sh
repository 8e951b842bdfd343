#!/usr/bin/env bash
# Builds the database metrics exporter the image runs beside PostgreSQL:
# prometheus-community/postgres_exporter, from the Go module proxy, at the
# version and hashes pinned by images/postgres/exporter/go.mod and go.sum
# (the module the Dockerfile builds too), once, into
#
#   $PGSTEWARD_CACHE/exporter/<version>-<go.sum hash>/postgres_exporter
#   $PGSTEWARD_CACHE/bin/postgres_exporter -> the above
#
# Module downloads and the build cache live in $PGSTEWARD_CACHE/go. A second
# run finds the binary and takes well under a second.
#
#   e2e/setup/install-exporter.sh
#
# Environment: PGSTEWARD_CACHE (default /var/cache/pgsteward); GO (default
# `go` on PATH); GOPROXY and GOSUMDB as the machine sets them.
#
# Exit codes: 0 installed (or already there); 1 the build failed or no Go
# toolchain (it says which).
set -Eeuo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=e2e/setup/lib.sh
. "$here/lib.sh"

MODULE_DIR="$repo/images/postgres/exporter"
EXPORTER=github.com/prometheus-community/postgres_exporter

main() {
  local go=${GO:-go} version key dir start
  version=$(awk -v m="$EXPORTER" '$1 == "require" && $2 == m { print $3 }' "$MODULE_DIR/go.mod")
  [ -n "$version" ] || die "no '$EXPORTER' requirement in $MODULE_DIR/go.mod"
  key=$(cat "$MODULE_DIR/go.mod" "$MODULE_DIR/go.sum" | sha256sum | cut -c1-12)
  dir="$PGSTEWARD_CACHE/exporter/$version-$key"
  mkdir -p "$PGSTEWARD_CACHE/bin"
  if [ -x "$dir/postgres_exporter" ]; then
    ln -sfn "$dir/postgres_exporter" "$PGSTEWARD_CACHE/bin/postgres_exporter"
    return 0
  fi
  command -v "$go" >/dev/null || die "no Go toolchain ('$go'): needed to build postgres_exporter $version"
  export GOMODCACHE="$PGSTEWARD_CACHE/go/mod" GOCACHE="$PGSTEWARD_CACHE/go/build"
  export GOFLAGS="-modcacherw -mod=readonly" GOTOOLCHAIN=local CGO_ENABLED=0
  start=$(date +%s)
  log "building postgres_exporter $version from the Go module proxy (first run only)"
  mkdir -p "$dir.tmp"
  (cd "$MODULE_DIR" && "$go" build -trimpath -o "$dir.tmp/postgres_exporter" \
    -ldflags "-s -w -X github.com/prometheus/common/version.Version=${version#v} -X github.com/prometheus/common/version.Branch=module-proxy" \
    "$EXPORTER/cmd/postgres_exporter") || die "building postgres_exporter $version failed"
  rm -rf "$dir"
  mv "$dir.tmp" "$dir"
  chmod -R a+rX "$dir"
  ln -sfn "$dir/postgres_exporter" "$PGSTEWARD_CACHE/bin/postgres_exporter"
  log "postgres_exporter $version built in $(($(date +%s) - start)) s: $dir/postgres_exporter"
}

main "$@"
