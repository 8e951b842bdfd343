#!/usr/bin/env bash
# Installs the local Kubernetes's programs into $PGSTEWARD_CACHE, once:
#
#   $PGSTEWARD_CACHE/k8s/<version>/bin/  kube-apiserver, kube-controller-manager,
#       kube-scheduler, built from the Go module proxy through our module
#       e2e/node/k8s (go.mod, go.sum); <version> is the one its go.mod requires
#   $PGSTEWARD_CACHE/etcd/trixie/bin/    etcd and etcdctl from Debian's
#       etcd-server package (through a private apt config, lib.sh's suite_apt)
#
# The first run builds for several minutes (it says so, with progress); a
# second one finds everything cached and takes well under a second.
#
# Exit codes: 0 installed; 1 something could not be installed (it says what).
set -Eeuo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=e2e/node/lib.sh
. "$here/lib.sh"

CONTROL_PLANE=(kube-apiserver kube-controller-manager kube-scheduler)
NODE=(kubelet kube-proxy)

# The version the programs report (kubectl version, the Node's kubeletVersion):
# what Kubernetes's own build (hack/lib/version.sh) stamps in with -X. A
# module download has no git commit; the build date is the release's own
# time from the module proxy, so the same inputs give the same binaries.
version_ldflags() {
  local time minor=${K8S_VERSION#v1.} pkg flags="-s -w"
  minor=${minor%%.*}
  time=$(cd "$here/k8s" && go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' k8s.io/kubernetes)
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$time"
  done
  printf '%s\n' "$flags"
}

# build_k8s CMD...: go build what is missing, or what an earlier build made
# from other inputs (go.mod, go.sum, the flags: $K8S_BIN/.inputs says which).
# Go itself: 1.34 needs go >= 1.24, which the machine has. The build's own
# cache stays in $PGSTEWARD_CACHE too, so a version bump rebuilds less.
build_k8s() {
  local missing=() cmd pkgs=() start ldflags inputs
  command -v go >/dev/null || die "go is needed to build Kubernetes $K8S_VERSION (apt-get install golang, >= 1.24)"
  export GOCACHE="$PGSTEWARD_CACHE/go/build" GOFLAGS=-mod=readonly
  ldflags=$(version_ldflags)
  inputs=$(cat "$here/k8s/go.mod" "$here/k8s/go.sum"; printf '%s\n' "$ldflags")
  if [ "$(cat "$K8S_BIN/.inputs" 2>/dev/null)" != "$inputs" ]; then
    rm -rf "$K8S_BIN"
  fi
  for cmd in "$@"; do
    [ -x "$K8S_BIN/$cmd" ] || missing+=("$cmd")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  for cmd in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$cmd"); done
  log "building Kubernetes $K8S_VERSION ${missing[*]} from the Go module proxy into $K8S_BIN"
  log "a first build takes several minutes on 2 cores (about 8 for the control plane); it is cached, later runs take seconds"
  mkdir -p "$K8S_BIN.partial"
  start=$SECONDS
  (
    cd "$here/k8s"
    log "downloading the modules"
    go mod download
    log "compiling (go build -trimpath); a line every 200 packages"
    go build -v -trimpath -ldflags="$ldflags" -o "$K8S_BIN.partial/" "${pkgs[@]}" 2>&1 |
      awk '{n++} n % 200 == 0 {printf "%s [install.sh] ... %d packages compiled (%s)\n", strftime("%H:%M:%S", systime(), 1), n, $0 > "/dev/stderr"; fflush()}
        /^#|: / {print > "/dev/stderr"} END {if (n) printf "%s [install.sh] ... %d packages, linked\n", strftime("%H:%M:%S", systime(), 1), n > "/dev/stderr"}'
    exit "${PIPESTATUS[0]}"
  ) || die "go build of ${missing[*]} failed"
  mkdir -p "$K8S_BIN"
  for cmd in "${missing[@]}"; do
    [ -x "$K8S_BIN.partial/$cmd" ] || die "go build left no $cmd"
    mv "$K8S_BIN.partial/$cmd" "$K8S_BIN/$cmd"
  done
  rmdir "$K8S_BIN.partial" 2>/dev/null || true
  printf '%s\n' "$inputs" >"$K8S_BIN/.inputs"
  log "built ${missing[*]} in $((SECONDS - start)) s"
}

# Like e2e/setup/test-deps.sh's install_buildx: download the .deb through the
# private apt config and unpack it; etcd is a static Go program.
install_etcd() {
  [ -x "$ETCD_BIN/etcd" ] && [ -x "$ETCD_BIN/etcdctl" ] && return 0
  local deb
  mkdir -p "$ETCD_DIR"
  suite_apt_update "$ETCD_SUITE"
  log "downloading etcd-server and etcd-client from $ETCD_SUITE"
  (cd "$ETCD_DIR" && suite_apt "$ETCD_SUITE" download etcd-server etcd-client >/dev/null)
  rm -rf "$ETCD_DIR/root"
  for deb in "$ETCD_DIR"/etcd-server_*.deb "$ETCD_DIR"/etcd-client_*.deb; do
    [ -f "$deb" ] || die "could not download etcd-server and etcd-client from $ETCD_SUITE"
    dpkg-deb -x "$deb" "$ETCD_DIR/root"
  done
  mkdir -p "$ETCD_BIN"
  ln -sfn "$ETCD_DIR/root/usr/bin/etcd" "$ETCD_BIN/etcd"
  ln -sfn "$ETCD_DIR/root/usr/bin/etcdctl" "$ETCD_BIN/etcdctl"
  "$ETCD_BIN/etcd" --version >/dev/null || die "the etcd from $ETCD_SUITE does not run here"
}

# The node's programs from Debian (bookworm: containerd 1.6, runc 1.1, the CNI
# plugins 1.1) and its two images, as OCI archives for `ctr images import`:
# the pause image from k8s.io/kubernetes's own build/pause/linux/pause.c (in
# the module download), and a Debian root filesystem made by debootstrap.
# oci_archive DIR NAME OUT RUNTIME_JSON: DIR as the one layer of an image.
oci_archive() {
  local layer="$3.layer.tar" config="$3.config.json"
  tar --numeric-owner --sort=name -C "$1" -cf "$layer" .
  printf '%s\n' "$4" >"$config"
  python3 "$here/oci_image.py" "$3" "$2" "$config" "$layer"
  rm -f "$layer" "$config"
}

install_node() {
  apt_install containerd runc containernetworking-plugins iptables conntrack debootstrap gcc libc6-dev
  mkdir -p "$NODE_IMAGES"
  local pause_tar="$NODE_IMAGES/pause_e2e.tar" debian_tar="$NODE_IMAGES/debian_bookworm.tar" tmp src
  if [ ! -s "$pause_tar" ]; then
    src="$(cd "$here/k8s" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c"
    [ -f "$src" ] || die "no $src in the k8s.io/kubernetes module"
    tmp=$(mktemp -d "$NODE_IMAGES/pause.XXXXXX")
    gcc -Os -static -DVERSION="$K8S_VERSION-pgsteward" -o "$tmp/pause" "$src"
    strip "$tmp/pause"
    oci_archive "$tmp" "$PAUSE_IMAGE" "$pause_tar" '{"Entrypoint": ["/pause"]}'
    rm -rf "$tmp"
    log "made the pause image $PAUSE_IMAGE ($pause_tar)"
  fi
  if [ ! -s "$debian_tar" ]; then
    local rootfs="$PGSTEWARD_CACHE/node/rootfs/bookworm"
    if [ ! -x "$rootfs/bin/busybox" ]; then
      log "debootstrap --variant=minbase bookworm (with busybox for httpd and wget) into $rootfs (a minute or two, once)"
      rm -rf "$rootfs.partial"
      debootstrap --variant=minbase --include=busybox bookworm "$rootfs.partial" "$(debian_mirror)" >"$NODE_IMAGES/debootstrap.log" 2>&1 ||
        die "debootstrap failed; see $NODE_IMAGES/debootstrap.log"
      rm -rf "$rootfs"
      mv "$rootfs.partial" "$rootfs"
    fi
    oci_archive "$rootfs" "$DEBIAN_IMAGE" "$debian_tar" '{"Cmd": ["/bin/bash"]}'
    log "made the image $DEBIAN_IMAGE ($debian_tar)"
  fi
}

main() {
  local what=${1:-control-plane}
  case "$what" in
    control-plane | node) ;;
    *) echo "usage: $0 [control-plane|node]" >&2; exit 2 ;;
  esac
  command -v openssl >/dev/null || apt_install openssl
  install_etcd
  build_k8s "${CONTROL_PLANE[@]}"
  if [ "$what" = node ]; then
    build_k8s "${NODE[@]}"
    install_node
  fi
  log "local Kubernetes $K8S_VERSION ready: $K8S_BIN, etcd $("$ETCD_BIN/etcd" --version | awk '/etcd Version/ {print $3}')"
}

main "$@"
