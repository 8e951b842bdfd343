#!/usr/bin/env bash
# Installs real PostgreSQL binaries for the image tier, once, into the cache.
#
#   install-postgres.sh MAJOR...          e.g. install-postgres.sh 17 18
#   install-postgres.sh fetch MAJOR DIR   download and verify one major's source
#                                         into DIR; prints the version it got
#   install-postgres.sh build SRC PREFIX  configure, build and install an
#                                         unpacked source tree into PREFIX
#
# For each major it leaves $PGSTEWARD_CACHE/pg/<major>/bin/pg_config: a link
# to the host's apt package when the host's suite carries that major, else a
# build from the Debian source package pinned in postgres-sources.tsv (17 from
# trixie, 18 from sid), fetched through the machine's own mirror. A pinned
# file the mirror no longer serves falls back to the version the suite's
# signed index names; the log says which version was used. A build records
# its pinned and used versions in <prefix>/.pgsteward-source, so a new pin
# rebuilds and an unchanged one is reused.
#
# Exit codes: 0 every major ready; 1 a major could not be installed (one line
# says why); 2 usage.
set -Eeuo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=e2e/setup/lib.sh
. "$here/lib.sh"

SOURCES=${PGSTEWARD_PG_SOURCES:-$here/postgres-sources.tsv}
BUILD_DEPS=(build-essential bison flex perl pkg-config dpkg-dev
  libreadline-dev zlib1g-dev libicu-dev liblz4-dev libzstd-dev libssl-dev)
APT_HELPER=/usr/lib/apt/apt-helper

# pinned_rows MAJOR: "suite version sha256 file" for each pinned file.
pinned_rows() {
  awk -F '\t' -v major="$1" '$1 == major && $0 !~ /^#/ {print $2, $3, $4, $5}' "$SOURCES"
}

pinned_version() {
  pinned_rows "$1" | awk 'NR == 1 {print $2}'
}

suites_for_major() {
  local pinned
  pinned=$(pinned_rows "$1" | awk 'NR == 1 {print $1}')
  case "$1" in
    17) echo "${pinned:-trixie}" sid ;;
    *) echo "${pinned:-sid}" trixie ;;
  esac | tr ' ' '\n' | awk '!seen[$0]++' | tr '\n' ' '
}

ready() {
  local prefix="$PGSTEWARD_CACHE/pg/$1"
  [ -x "$prefix/bin/postgres" ] && [ -x "$prefix/bin/pg_upgrade" ] &&
    [ -f "$("$prefix/bin/pg_config" --pkglibdir)/pg_stat_statements.so" ] || return 1
  # A link to the host's package has no stamp; a build must match its pin,
  # and keep its modules inside the prefix (builds of older set-ups did not).
  [ -L "$prefix" ] && return 0
  [ "$("$prefix/bin/pg_config" --pkglibdir)" = "$prefix/lib" ] || return 1
  grep -qxF "pinned=$(pinned_version "$1")" "$prefix/.pgsteward-source" 2>/dev/null
}

install_from_host_apt() {
  local major=$1
  apt-cache show "postgresql-$major" >/dev/null 2>&1 || return 1
  apt_install "postgresql-$major" "postgresql-contrib" 2>/dev/null || apt_install "postgresql-$major"
  mkdir -p "$PGSTEWARD_CACHE/pg"
  ln -sfn "/usr/lib/postgresql/$major" "$PGSTEWARD_CACHE/pg/$major"
}

# fetch_pinned MAJOR DIR: the pinned files, each checked against its sha256.
# Returns 1 when the mirror does not serve one of them; a file that arrives
# with another sum stops everything: that is corruption or tampering, not a
# moved index.
fetch_pinned() {
  local major=$1 dir=$2 suite version sum file url got
  [ -n "$(pinned_rows "$major")" ] || return 1
  while read -r suite version sum file; do
    url="$(debian_mirror)/pool/main/p/postgresql-$major/$file"
    if ! "$APT_HELPER" download-file "$url" "$dir/$file" >"$dir/fetch.log" 2>&1; then
      log "the mirror does not serve the pinned $file ($suite $version)"
      return 1
    fi
    got=$(sha256sum "$dir/$file" | awk '{print $1}')
    [ "$got" = "$sum" ] || die "$file: sha256 $got, but postgres-sources.tsv pins $sum; refusing to build it"
  done < <(pinned_rows "$major")
}

# fetch_from_index MAJOR DIR: the version a suite's signed index names. apt
# checks every file against the index; dpkg-source checks them against the
# .dsc again when it unpacks.
fetch_from_index() {
  local major=$1 dir=$2 suite
  for suite in $(suites_for_major "$major"); do
    suite_apt_update "$suite"
    if (cd "$dir" && suite_apt "$suite" source --download-only "postgresql-$major") >"$dir/fetch.log" 2>&1; then
      return 0
    fi
  done
  return 1
}

dsc_version() {
  awk '/^Version:/ {print $2; exit}' "$1"
}

# fetch MAJOR DIR: prints the Debian version whose source is now in DIR.
fetch() {
  local major=$1 dir=$2 dsc pinned
  pinned=$(pinned_version "$major")
  rm -rf "$dir" && mkdir -p "$dir"
  if ! fetch_pinned "$major" "$dir"; then
    find "$dir" -maxdepth 1 -name "postgresql-${major}_*" -delete
    fetch_from_index "$major" "$dir" ||
      die "no source of postgresql-$major can be had: the pinned ${pinned:-(none)} is not served and neither $(suites_for_major "$major")index names one the mirror serves"
  fi
  dsc=$(find "$dir" -maxdepth 1 -name "postgresql-${major}_*.dsc" | sort | tail -n1)
  [ -n "$dsc" ] || die "no .dsc of postgresql-$major in $dir"
  if [ "$(dsc_version "$dsc")" != "$pinned" ]; then
    log "PostgreSQL $major: using $(dsc_version "$dsc") from the suite's index instead of the pinned ${pinned:-(none)}"
  fi
  dsc_version "$dsc"
}

# build SRC PREFIX: the build must not see the make that called us. PostgreSQL
# generates its headers (utils/errcodes.h, …) only at MAKELEVEL 0, and a
# jobserver inherited through MAKEFLAGS is not ours to use.
build() {
  local src=$1 prefix=$2 logs
  logs=$(dirname "$src")
  rm -rf "$prefix" && mkdir -p "$prefix"
  # Each step is chained with &&: under `|| die`, bash ignores set -e, and a
  # failed first make would otherwise be hidden by the steps after it.
  (
    unset MAKELEVEL MAKEFLAGS MFLAGS MAKEOVERRIDES GNUMAKEFLAGS
    cd "$src" &&
      ./configure --prefix="$prefix" --with-icu --with-lz4 --with-zstd --with-openssl \
        --without-llvm --without-perl --without-python --without-tcl >"$logs/configure.log" 2>&1 &&
      {
        env | grep -E '^(MAKE|MFLAGS)' || true
        make -j"$(nproc)" &&
          make -C contrib -j"$(nproc)" &&
          make install &&
          make -C contrib install
      } >"$logs/make.log" 2>&1
  ) || die "building PostgreSQL from $src failed; see $logs/configure.log and $logs/make.log"
}

# keep_pkglibdir_in_prefix SRC: Debian's per-version-dirs patch fixes the
# modules' directory at /usr/lib/postgresql/<M>/lib whatever the prefix. Built
# into the cache, that put them outside it, on the host, and broke
# PostgreSQL's relocation: a binary finds its pkglibdir relative to itself
# only when both share the layout they were built with ($prefix/bin and
# $prefix/lib, as Debian's /usr/lib/postgresql/<M>/{bin,lib}). The binary
# stash depends on that relocation; the node tier's 17 -> 18 upgrade failed
# with "could not open directory /usr/lib/postgresql/17/lib".
keep_pkglibdir_in_prefix() {
  local makefile="$1/src/Makefile.global.in"
  grep -q '^override pkglibdir := /usr/lib/postgresql/@PG_MAJORVERSION@/lib$' "$makefile" ||
    die "$makefile does not set pkglibdir as Debian's per-version-dirs patch did: check keep_pkglibdir_in_prefix"
  # shellcheck disable=SC2016 # $(libdir) is make's, written literally
  sed -i 's|^override pkglibdir := /usr/lib/postgresql/@PG_MAJORVERSION@/lib$|override pkglibdir := $(libdir)|' "$makefile"
}

build_from_source() {
  local major=$1 prefix="$PGSTEWARD_CACHE/pg/$1" work version
  apt_install "${BUILD_DEPS[@]}"
  work="$PGSTEWARD_CACHE/src/$major"
  version=$(fetch "$major" "$work/files")
  rm -rf "$work/build"
  dpkg-source -x "$(find "$work/files" -maxdepth 1 -name "postgresql-${major}_*.dsc" | head -n1)" "$work/build" \
    >"$work/unpack.log" 2>&1 || die "unpacking postgresql-$major $version failed; see $work/unpack.log"
  keep_pkglibdir_in_prefix "$work/build"
  log "building PostgreSQL $major ($version) into $prefix (a few minutes, once)"
  build "$work/build" "$prefix"
  printf 'pinned=%s\nused=%s\n' "$(pinned_version "$major")" "$version" >"$prefix/.pgsteward-source"
  rm -rf "$work"
}

install_majors() {
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

main() {
  case "${1:-}" in
    "") echo "usage: $0 MAJOR... | fetch MAJOR DIR | build SRC PREFIX" >&2; exit 2 ;;
    fetch) [ "$#" -eq 3 ] || exit 2; fetch "$2" "$3" ;;
    build) [ "$#" -eq 3 ] || exit 2; build "$2" "$3" ;;
    *) install_majors "$@" ;;
  esac
}

main "$@"
