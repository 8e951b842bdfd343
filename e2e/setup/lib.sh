# shellcheck shell=bash
# Shared helpers for the test set-up scripts. Sourced, never executed.
#
# Everything the tests install lives in $PGSTEWARD_CACHE, outside the
# repository, so a second `make test` reuses it. The default is world-readable
# on purpose: PostgreSQL refuses to run as root, so the tests run it as the
# unprivileged `postgres` user, which must be able to execute the binaries.

PGSTEWARD_CACHE=${PGSTEWARD_CACHE:-/var/cache/pgsteward}
export PGSTEWARD_CACHE

log() { printf '%s [%s] %s\n' "$(date -u +%H:%M:%S)" "${0##*/}" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# apt-get update once per set-up run, and only when something must be installed.
APT_UPDATED=${APT_UPDATED:-}
apt_install() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  if [ -z "$APT_UPDATED" ]; then
    as_root apt-get update -qq
    APT_UPDATED=1
  fi
  log "apt-get install ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The Debian mirror this machine already uses, read from its own apt sources,
# so no registry host is ever written into the repository.
debian_mirror() {
  local uri
  uri=$(grep -hE '^[[:space:]]*URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null |
    awk '{print $2}' | grep -v -- '-security' | head -n1)
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' /etc/apt/sources.list)
  fi
  [ -n "$uri" ] || die "no Debian mirror found in /etc/apt/sources.list{,.d}"
  printf '%s\n' "${uri%/}"
}

# A private apt configuration for another Debian suite (trixie, sid), kept in
# the cache. It never touches the machine's own apt sources or package state.
suite_apt() {
  local suite=$1
  shift
  local dir="$PGSTEWARD_CACHE/apt/$suite"
  local keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  mkdir -p "$dir/lists/partial" "$dir/archives/partial"
  if [ ! -s "$dir/sources.list" ]; then
    printf 'deb [signed-by=%s] %s %s main\ndeb-src [signed-by=%s] %s %s main\n' \
      "$keyring" "$(debian_mirror)" "$suite" "$keyring" "$(debian_mirror)" "$suite" >"$dir/sources.list"
  fi
  apt-get -qq \
    -o Dir::Etc::SourceList="$dir/sources.list" \
    -o Dir::Etc::SourceParts=/nonexistent \
    -o Dir::State::Lists="$dir/lists" \
    -o Dir::State::Status="$dir/status" \
    -o Dir::Cache::Archives="$dir/archives" \
    -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache= \
    -o APT::Sandbox::User=root \
    "$@"
}

suite_apt_update() {
  local suite=$1 dir="$PGSTEWARD_CACHE/apt/$1"
  mkdir -p "$dir"
  touch "$dir/status"
  if [ -z "$(find "$dir/lists" -name '*Sources*' -mmin -1440 2>/dev/null | head -n1)" ]; then
    log "refreshing the package lists of $suite (private apt config in $dir)"
    suite_apt "$suite" update
  fi
}
