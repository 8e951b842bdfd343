#!/usr/bin/env bash
# Installs real PostgreSQL binaries for the image tier, once, into the cache.
#
#   install-postgres.sh MAJOR...        e.g. install-postgres.sh 17 18
#
# For each major it leaves $PGSTEWARD_CACHE/pg/<major>/bin/pg_config, either a
# link to the host's apt package or a build from the Debian source package.
# The source comes from the Debian suite that carries that major (17: trixie,
# 18: sid), through the machine's own mirror and a private apt configuration.
#
# Exit codes: 0 every major ready; 1 a major could not be installed.
set -Eeuo pipefail
# shellcheck source=e2e/setup/lib.sh
. "$(dirname "$0")/lib.sh"

BUILD_DEPS=(build-essential bison flex perl pkg-config dpkg-dev
  libreadline-dev zlib1g-dev libicu-dev liblz4-dev libzstd-dev libssl-dev)

suites_for_major() {
  case "$1" in
    17) echo trixie sid ;;
    18) echo sid trixie ;;
    *) echo sid ;;
  esac
}

ready() {
  local prefix="$PGSTEWARD_CACHE/pg/$1"
  [ -x "$prefix/bin/postgres" ] && [ -x "$prefix/bin/pg_upgrade" ] &&
    [ -f "$("$prefix/bin/pg_config" --pkglibdir)/pg_stat_statements.so" ]
}

install_from_host_apt() {
  local major=$1
  apt-cache show "postgresql-$major" >/dev/null 2>&1 || return 1
  apt_install "postgresql-$major" "postgresql-contrib" 2>/dev/null || apt_install "postgresql-$major"
  mkdir -p "$PGSTEWARD_CACHE/pg"
  ln -sfn "/usr/lib/postgresql/$major" "$PGSTEWARD_CACHE/pg/$major"
}

build_from_source() {
  local major=$1 suite src dsc prefix="$PGSTEWARD_CACHE/pg/$1" work
  apt_install "${BUILD_DEPS[@]}"
  work="$PGSTEWARD_CACHE/src/$major"
  mkdir -p "$work"
  for suite in $(suites_for_major "$major"); do
    suite_apt_update "$suite"
    if (cd "$work" && suite_apt "$suite" source --download-only "postgresql-$major") >/dev/null 2>&1; then
      break
    fi
  done
  dsc=$(find "$work" -maxdepth 1 -name "postgresql-${major}_*.dsc" | sort | tail -n1)
  [ -n "$dsc" ] || die "no source package postgresql-$major in $(suites_for_major "$major")"
  src="$work/build"
  rm -rf "$src"
  log "unpacking $(basename "$dsc")"
  dpkg-source --no-check -x "$dsc" "$src" >/dev/null
  log "building PostgreSQL $major into $prefix (a few minutes, once)"
  rm -rf "$prefix" && mkdir -p "$prefix"
  (
    cd "$src"
    ./configure --prefix="$prefix" --with-icu --with-lz4 --with-zstd --with-openssl \
      --without-llvm --without-perl --without-python --without-tcl >"$work/configure.log" 2>&1
    {
      make -j"$(nproc)"
      make -C contrib -j"$(nproc)"
      make install
      make -C contrib install
    } >"$work/make.log" 2>&1
  ) || die "building PostgreSQL $major failed; see $work/*.log"
  rm -rf "$src"
}

main() {
  [ "$#" -gt 0 ] || die "usage: $0 MAJOR..."
  local major
  for major in "$@"; do
    if ready "$major"; then
      log "PostgreSQL $major: cached ($("$PGSTEWARD_CACHE/pg/$major/bin/postgres" --version))"
      continue
    fi
    install_from_host_apt "$major" || build_from_source "$major"
    ready "$major" || die "PostgreSQL $major is incomplete after install"
    log "PostgreSQL $major: ready ($("$PGSTEWARD_CACHE/pg/$major/bin/postgres" --version))"
  done
}

main "$@"
