#!/usr/bin/env bash
# Builds the images the node tier runs, without a Docker engine: root
# filesystems from Debian's packages (debootstrap, the machine's own mirror),
# laid out as images/postgres/Dockerfile and images/operator/Dockerfile lay
# them out (same paths, same users, same entrypoints), written as OCI image
# archives that `ctr images import` takes.
#
#   image.sh postgres MAJOR [OUT.tar]   PostgreSQL MAJOR from the cached build
#   image.sh operator BINARY [OUT.tar]  the operator's release binary
#   image.sh import postgres MAJOR | import operator BINARY
#                                       build it, then import it into the
#                                       running node's containerd
#
# Prints the archive's path and the image name on stdout, tab-separated.
#
# What differs from the Dockerfiles, because their bases cannot be pulled
# here: the base is Debian bookworm (the suite the cached PostgreSQL builds
# link against), so the images are named <major>-standard-bookworm; the
# official entrypoint is the labelled stand-in e2e/standins/docker-entrypoint.sh;
# WAL-G is $PGSTEWARD_WALG when set, else the labelled stand-in e2e/standins/wal-g
# (real WAL-G cannot be had from a registry here: docs/walg.md). The operator
# runs on the same base instead of distroless/cc, as uid 65532 like there.
#
# Layers, lowest first, each cached in $PGSTEWARD_CACHE/node/images/ and
# rebuilt only when what it is made from changes:
#   base       debootstrap minbase + the runtime packages, users postgres (999)
#              and nonroot (65532), the en_US.UTF-8 locale
#   pg-MAJOR   /usr/lib/postgresql/MAJOR, the cached build
#   pgsteward  /etc/postgresql and /usr/local/bin: the image's config and
#              scripts, WAL-G, and postgres_exporter (install-exporter.sh)
#
# Exit codes: 0 built; 1 a step failed (it says which); 2 usage.
set -Eeuo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=e2e/node/lib.sh
. "$here/lib.sh"

SUITE=bookworm
IMAGES="$PGSTEWARD_CACHE/node/images"
REPOSITORY=${PGSTEWARD_IMAGE_REPOSITORY:-ghcr.io/pgsteward/postgres}
OPERATOR_IMAGE=${PGSTEWARD_OPERATOR_IMAGE:-ghcr.io/pgsteward/operator:dev}
# What the Dockerfiles install on top of the official image, and what the
# official image itself brings that the scripts use.
# python3 is for the WAL-G stand-in only (a Python script); the Dockerfile
# installs none, real WAL-G being one Go binary.
BASE_PACKAGES=(ca-certificates locales tzdata jq gosu cron procps xz-utils zstd
  libicu72 libssl3 liblz4-1 libzstd1 libreadline8 zlib1g libxml2 python3)

# layer_tar DIR OUT: an uncompressed layer, owners by number. The layer's
# "./" entry sets the mode of the image's / : a mktemp -d staging directory
# (0700) would shut every user but root out of the whole filesystem.
layer_tar() {
  chmod 0755 "$1"
  tar --numeric-owner --sort=name -C "$1" -cf "$2.partial" . && mv "$2.partial" "$2"
}

base_layer() {
  local key out root
  key=$( (printf '%s\n' "$SUITE" "${BASE_PACKAGES[@]}"; sed -n '/^base_layer()/,/^}/p' "$here/image.sh") |
    sha256sum | cut -c1-16)
  out="$IMAGES/base-$SUITE-$key.tar"
  if [ -f "$out" ]; then
    echo "$out"
    return 0
  fi
  apt_install debootstrap
  rm -f "$IMAGES/base-$SUITE-"*.tar
  root="$IMAGES/rootfs-base"
  as_root rm -rf "$root"
  log "debootstrap $SUITE into $root (a few minutes, once)"
  as_root debootstrap --variant=minbase --include="$(
    IFS=,
    echo "${BASE_PACKAGES[*]}"
  )" "$SUITE" "$root" "$(debian_mirror)" >"$IMAGES/debootstrap.log" 2>&1 ||
    die "debootstrap failed; see $IMAGES/debootstrap.log"
  # As the official postgres image and distroless's nonroot do.
  as_root chroot "$root" sh -eu -c '
    groupadd -r postgres --gid=999
    useradd -r -g postgres --uid=999 --home-dir=/var/lib/postgresql --shell=/bin/bash postgres
    groupadd -r -K SYS_GID_MAX=65532 nonroot --gid=65532
    useradd -r -K SYS_UID_MAX=65532 -g nonroot --uid=65532 --home-dir=/home/nonroot --shell=/sbin/nologin nonroot
    install -d -o postgres -g postgres -m 0755 /var/lib/postgresql
    install -d -o postgres -g postgres -m 3777 /var/run/postgresql
    localedef -i en_US -c -f UTF-8 -A /usr/share/locale/locale.alias en_US.UTF-8
    apt-get clean
    rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/*.log
  ' || die "preparing the base root filesystem failed"
  # The stand-in's interpreter and the modules it imports: without them every
  # wal-push in a pod exits 127 (found on the node tier's first backup).
  as_root chroot "$root" python3 -c 'import json, shutil, socket, subprocess, tarfile, tempfile' ||
    die "the base root filesystem cannot run the WAL-G stand-in (python3)"
  layer_tar "$root" "$out"
  as_root rm -rf "$root"
  echo "$out"
}

pg_layer() {
  local major=$1 src="$PGSTEWARD_CACHE/pg/$1" key out root pkglibdir sharedir
  [ -x "$src/bin/postgres" ] || die "PostgreSQL $major is not in $src; run make test-deps"
  # The build is relocatable: lib and share follow bin, as in Debian's
  # /usr/lib/postgresql/<major>/{bin,lib} (install-postgres.sh keeps the
  # modules in the prefix), so it is laid out there as in the official image.
  pkglibdir=$("$src/bin/pg_config" --pkglibdir)
  sharedir=$("$src/bin/pg_config" --sharedir)
  [ "$pkglibdir" = "$src/lib" ] || die "unexpected module directory $pkglibdir for $src (an older build: run e2e/setup/install-postgres.sh $major)"
  [ "$sharedir" = "$src/share/postgresql" ] || die "unexpected share directory $sharedir for $src"
  key=$( (cat "$src/.pgsteward-source" 2>/dev/null || readlink -f "$src"
    echo "$pkglibdir $sharedir"
    sed -n '/^pg_layer()/,/^}/p' "$here/image.sh") |
    sha256sum | cut -c1-16)
  out="$IMAGES/pg-$major-$key.tar"
  if [ -f "$out" ]; then
    echo "$out"
    return 0
  fi
  rm -f "$IMAGES/pg-$major-"*.tar
  root=$(mktemp -d "$IMAGES/rootfs-pg-$major.XXXXXX")
  install -d "$root/usr/lib/postgresql/$major/lib" "$root/usr/share/postgresql"
  cp -a "$src/bin" "$src/share" "$root/usr/lib/postgresql/$major/"
  cp -a "$src/lib/." "$root/usr/lib/postgresql/$major/lib/"
  # Where Debian's packages keep it, for whatever looks there.
  ln -sfn "../../lib/postgresql/$major/share/postgresql" "$root/usr/share/postgresql/$major"
  # The build's rpath and compiled-in paths name the cache; the same path
  # inside the image leads to the same files.
  mkdir -p "$root$(dirname "$src")"
  ln -sfn "/usr/lib/postgresql/$major" "$root$src"
  layer_tar "$root" "$out"
  rm -rf "$root"
  echo "$out"
}

pgsteward_layer() {
  local out="$IMAGES/pgsteward.tar" root walg=${PGSTEWARD_WALG:-$repo/e2e/standins/wal-g}
  root=$(mktemp -d "$IMAGES/rootfs-pgsteward.XXXXXX")
  install -d "$root/etc/postgresql/conf.d" "$root/usr/local/bin"
  # As the Dockerfile's COPY lines do.
  install -m 0644 "$repo/images/postgres/config/"{postgresql.conf,pg_hba.conf,pg_ident.conf} "$root/etc/postgresql/"
  install -m 0755 "$repo/images/postgres/scripts/"* "$root/usr/local/bin/"
  install -m 0755 "$repo/e2e/standins/docker-entrypoint.sh" "$root/usr/local/bin/docker-entrypoint.sh"
  install -m 0755 "$walg" "$root/usr/local/bin/wal-g"
  # The Dockerfile's exporter stage builds the same module as install-exporter.sh.
  "$repo/e2e/setup/install-exporter.sh"
  install -m 0755 "$(readlink -f "$PGSTEWARD_CACHE/bin/postgres_exporter")" "$root/usr/local/bin/postgres_exporter"
  install -d "$root/etc/postgresql/exporter"
  install -m 0644 "$repo/images/postgres/config/exporter/queries.yaml" "$root/etc/postgresql/exporter/"
  layer_tar "$root" "$out"
  rm -rf "$root"
  echo "$out"
}

runtime_config() { # runtime_config MAJOR: the Dockerfile's ENV, ENTRYPOINT, CMD, …
  jq -n --arg major "$1" '{
    Env: [
      "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/lib/postgresql/\($major)/bin",
      "PG_MAJOR=\($major)", "LANG=en_US.utf8",
      "PGDATA=/var/lib/postgresql/\($major)/docker", "PGSTEWARD_IMAGE_TYPE=standard"],
    Entrypoint: ["/usr/local/bin/entrypoint.sh"], Cmd: ["postgres"],
    StopSignal: "SIGINT", ExposedPorts: {"5432/tcp": {}}, Volumes: {"/var/lib/postgresql": {}},
    Labels: {"org.opencontainers.image.title": "pgsteward-postgres",
             "io.pgsteward.test-image": "root filesystem from e2e/node/image.sh, stand-ins labelled"}}'
}

operator_config() {
  jq -n '{Env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
    Entrypoint: ["/usr/local/bin/pgsteward-operator"], User: "65532:65532",
    ExposedPorts: {"8080/tcp": {}},
    Labels: {"org.opencontainers.image.title": "pgsteward-operator"}}'
}

build_postgres() {
  local major=$1 out=${2:-} name base pg ours config
  name="$REPOSITORY:$major-standard-$SUITE"
  out=${out:-$IMAGES/postgres-$major.oci.tar}
  base=$(base_layer)
  pg=$(pg_layer "$major")
  ours=$(pgsteward_layer)
  config="$IMAGES/postgres-$major.config.json"
  runtime_config "$major" >"$config"
  python3 "$here/oci_image.py" "$out" "$name" "$config" "$base" "$pg" "$ours"
  printf '%s\t%s\n' "$out" "$name"
}

build_operator() {
  local binary=$1 out=${2:-$IMAGES/operator.oci.tar} base root layer config
  [ -x "$binary" ] || die "no operator binary at $binary (cargo build --release -p pgsteward-operator)"
  base=$(base_layer)
  root=$(mktemp -d "$IMAGES/rootfs-operator.XXXXXX")
  install -D -m 0755 "$binary" "$root/usr/local/bin/pgsteward-operator"
  layer="$IMAGES/operator-layer.tar"
  layer_tar "$root" "$layer"
  rm -rf "$root"
  config="$IMAGES/operator.config.json"
  operator_config >"$config"
  python3 "$here/oci_image.py" "$out" "$OPERATOR_IMAGE" "$config" "$base" "$layer"
  printf '%s\t%s\n' "$out" "$OPERATOR_IMAGE"
}

# import KIND ARG: build, then import into the node (node-up.sh running).
import_image() {
  local archive name
  IFS=$'\t' read -r archive name < <(main "$@")
  [ -S "$NODE_CONTAINERD_SOCK" ] || die "no node containerd at $NODE_CONTAINERD_SOCK (e2e/node/node-up.sh starts it)"
  ctr_ images import "$archive" >/dev/null
  log "imported $name into the node"
  printf '%s\t%s\n' "$archive" "$name"
}

main() {
  mkdir -p "$IMAGES"
  case "${1:-}" in
    import) shift; import_image "$@" ;;
    postgres) [ "$#" -ge 2 ] || exit 2; build_postgres "$2" "${3:-}" ;;
    operator) [ "$#" -ge 2 ] || exit 2; build_operator "$2" "${3:-}" ;;
    *) echo "usage: $0 postgres MAJOR [OUT.tar] | operator BINARY [OUT.tar] | import postgres MAJOR | import operator BINARY" >&2; exit 2 ;;
  esac
}

main "$@"
