#!/usr/bin/env bash
# Stops the local Kubernetes that up.sh started from this state directory
# ($PGSTEWARD_NODE_DIR, default /tmp/pgsteward-node): every process it
# started (by its pid file, never by name), in reverse start order, TERM
# then KILL after 10 s. Leaves nothing running. The certificates and etcd's
# data stay for the next up.sh; --purge removes the state directory too.
#
# Exit codes: 0 nothing of it runs any more; 1 a process would not stop;
# 2 usage.
set -Eeuo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=e2e/node/lib.sh
. "$here/lib.sh"

purge=false
case "${1:-}" in
  "") ;;
  --purge) purge=true ;;
  *) echo "usage: $0 [--purge]" >&2; exit 2 ;;
esac

stop() { # stop NAME: TERM, wait up to 10 s, then KILL
  local name=$1 pid i
  if ! pid=$(pid_of "$name"); then
    rm -f "$NODE_RUN/$name.pid"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    alive "$pid" || break
    sleep 0.1
  done
  if alive "$pid"; then
    log "$name (pid $pid) did not stop on TERM within 10 s; KILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.5
  fi
  ! alive "$pid" || die "$name (pid $pid) still runs"
  rm -f "$NODE_RUN/$name.pid"
  log "stopped $name (pid $pid)"
}

main() {
  local i
  [ -d "$PGSTEWARD_NODE_DIR" ] || return 0
  for ((i = ${#NODE_COMPONENTS[@]} - 1; i >= 0; i--)); do
    stop "${NODE_COMPONENTS[i]}"
  done
  if $purge; then
    rm -rf "$PGSTEWARD_NODE_DIR"
    log "removed $PGSTEWARD_NODE_DIR"
  fi
}

main "$@"
