#!/usr/bin/env bash
# Builds the S3-compatible server the image tier stores backups in: Versity
# S3 Gateway (versitygw, Apache-2.0) with its posix backend, from the Go
# module proxy, pinned to one version and built once into
#
#   $PGSTEWARD_CACHE/s3/versitygw-<version>/bin/versitygw
#   $PGSTEWARD_CACHE/bin/versitygw -> the above
#
# Its module downloads and build cache live in $PGSTEWARD_CACHE/go, so the
# build does not touch the user's Go caches. A second run finds the binary
# and takes well under a second. (MinIO would do too, but it is AGPL.)
#
#   e2e/setup/install-s3.sh
#
# Environment: PGSTEWARD_CACHE (default /var/cache/pgsteward); GO (default
# `go` on PATH, 1.25 or newer); GOPROXY and GOSUMDB as the machine sets them.
#
# Exit codes: 0 installed (or already there); 1 the build failed or no Go
# toolchain (it says which).
set -Eeuo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=e2e/setup/lib.sh
. "$here/lib.sh"

VERSITYGW_MODULE=github.com/versity/versitygw
VERSITYGW_VERSION=v1.8.0
# The module's go.sum line for that version (go.sum "h1:" hash of the zip):
# `go install` checks the download against it before building.
VERSITYGW_SUM=h1:au+wI+aybno/STsQiSm35Uu6Q6iK5MWReQxgO6SEMFc=

main() {
  local go=${GO:-go} dir="$PGSTEWARD_CACHE/s3/versitygw-$VERSITYGW_VERSION" got start
  local bin="$dir/bin/versitygw"
  mkdir -p "$PGSTEWARD_CACHE/bin"
  if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "$VERSITYGW_VERSION"; then
    ln -sfn "$bin" "$PGSTEWARD_CACHE/bin/versitygw"
    return 0
  fi
  command -v "$go" >/dev/null || die "no Go toolchain ('$go'): needed to build versitygw $VERSITYGW_VERSION"
  export GOMODCACHE="$PGSTEWARD_CACHE/go/mod" GOCACHE="$PGSTEWARD_CACHE/go/build"
  export GOFLAGS="-modcacherw" GOTOOLCHAIN=local CGO_ENABLED=0
  start=$(date +%s)
  log "building versitygw $VERSITYGW_VERSION (first run only; several minutes on 2 cores)"
  got=$("$go" mod download -json "$VERSITYGW_MODULE@$VERSITYGW_VERSION" | sed -n 's/^[[:space:]]*"Sum": "\(.*\)",\{0,1\}$/\1/p')
  [ "$got" = "$VERSITYGW_SUM" ] || die "versitygw $VERSITYGW_VERSION has sum '$got', expected $VERSITYGW_SUM"
  mkdir -p "$dir/bin.tmp"
  GOBIN="$dir/bin.tmp" "$go" install -trimpath \
    -ldflags "-s -w -X=main.Version=$VERSITYGW_VERSION -X=main.Build=module-proxy -X=main.BuildTime=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    "$VERSITYGW_MODULE/cmd/versitygw@$VERSITYGW_VERSION"
  rm -rf "${dir:?}/bin"
  mv "$dir/bin.tmp" "$dir/bin"
  chmod -R a+rX "$dir"
  ln -sfn "$bin" "$PGSTEWARD_CACHE/bin/versitygw"
  log "versitygw $VERSITYGW_VERSION built in $(($(date +%s) - start)) s: $bin"
}

main "$@"
