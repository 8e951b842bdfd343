#!/usr/bin/env bash
# Static checks run by `make lint` (and so by `make test`): Rust formatting and
# clippy, shellcheck on every shell script, hadolint on every Dockerfile.
#
# Exit codes: 0 clean; 1 a check failed (its output says which).
set -Eeuo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
PGSTEWARD_CACHE=${PGSTEWARD_CACHE:-/var/cache/pgsteward}
export PATH="$PGSTEWARD_CACHE/bin:$PATH"

step() { printf '\n== lint: %s\n' "$*" >&2; }

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked --quiet -- -D warnings

step "shellcheck"
# Every tracked shell script: by extension, or by a shell shebang.
mapfile -t scripts < <(git ls-files -co --exclude-standard |
  while read -r f; do
    [ -f "$f" ] || continue
    case "$f" in
      *.sh) echo "$f" ;;
      *) head -n1 "$f" 2>/dev/null | grep -qE '^#!.*\b(ba)?sh\b' && echo "$f" ;;
    esac
  done | sort -u)
shellcheck -x -P SCRIPTDIR "${scripts[@]}"
echo "shellcheck: ${#scripts[@]} scripts clean" >&2

step "hadolint"
mapfile -t dockerfiles < <(git ls-files -co --exclude-standard -- '*Dockerfile*')
hadolint "${dockerfiles[@]}"
echo "hadolint: ${#dockerfiles[@]} Dockerfiles clean" >&2
