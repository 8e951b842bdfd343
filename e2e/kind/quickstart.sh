#!/usr/bin/env bash
# The README's kind quickstart, word for word: the fenced block that follows
# the line `<!-- quickstart -->` in README.md. The e2e-kind workflow runs it
# through this script, so the README cannot drift from what is tested.
#
#   e2e/kind/quickstart.sh print   print the commands
#   e2e/kind/quickstart.sh run     run them, from the repository root, with
#                                  bash -Eeuxo pipefail (the first failing
#                                  command fails the step)
#
# Exit codes: 0 printed / ran; 1 a command failed or README.md has no such
# block; 2 usage.
set -Eeuo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
README=${README:-$repo/README.md}
MARKER='<!-- quickstart -->'

extract() {
  [ -f "$README" ] || { echo "quickstart: $README does not exist" >&2; return 1; }
  awk -v marker="$MARKER" '
    $0 == marker { armed = 1; next }
    armed && !inside && /^```/ { inside = 1; next }
    inside && /^```/ { done = 1; exit }
    inside { print }
    END { if (!done) exit 1 }
  ' "$README" || { echo "quickstart: no fenced block after '$MARKER' in $README" >&2; return 1; }
}

case "${1:-}" in
  print) extract ;;
  run)
    script=$(extract)
    [ -n "$script" ] || { echo "quickstart: the block after '$MARKER' is empty" >&2; exit 1; }
    cd "$repo"
    exec bash -Eeuxo pipefail -c "$script"
    ;;
  *)
    echo "usage: $0 print|run" >&2
    exit 2
    ;;
esac
