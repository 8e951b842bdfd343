#!/usr/bin/env bash
# backup-scheduler.sh — runs backup.sh on the cron schedule in
# PGSTEWARD_BACKUP_SCHEDULE.
#
# Two ways, chosen by entrypoint.sh:
#   - Debian cron, when the container starts as root (`docker run`) and the
#     standard image has cron: /etc/cron.d/pgsteward-backup calls
#     `backup-scheduler.sh cron-job ENVFILE` as the user postgres.
#   - this script's own loop, `backup-scheduler.sh run`, when the container
#     runs as uid 999 (every pod under the operator), where Debian cron cannot
#     run, or when cron is missing.
#
# Usage:
#   backup-scheduler.sh check EXPR          is EXPR a valid schedule?
#   backup-scheduler.sh match EXPR [TIME]   does EXPR fire at TIME (anything
#                                           `date -d` reads; default now)?
#   backup-scheduler.sh run [--watch-pid PID]
#                                           the loop; ends when PID is gone
#   backup-scheduler.sh cron-job ENVFILE    one run from cron: load ENVFILE, then
#                                           run the backup
#
# Schedules are the 5 standard cron fields, minute hour day-of-month month
# day-of-week, each `*`, a number, a range `a-b`, a step `*/n`, `a-b/n` or
# `a/n`, or a comma-separated list of those; month and day names (jan, mon)
# are accepted, day-of-week 7 is Sunday like 0. As in cron, when both
# day-of-month and day-of-week are restricted (neither starts with `*`), a day
# matching either one fires. @yearly, @annually, @monthly, @weekly, @daily,
# @midnight and @hourly are accepted. Times are local time ($TZ).
#
# Each scheduled run is `backup.sh --id scheduled-<UTC yyyymmddThhmmssZ>`:
# the `scheduled-` prefix is how the backup list (and the operator's
# BackupHealthy) tells the schedule's backups from on-demand ones.
#
# Environment: PGSTEWARD_BACKUP_SCHEDULE, PGSTEWARD_BACKUP_COMMAND (default
# backup.sh next to this script; it gets the same --id), PGSTEWARD_SCHEDULER_INTERVAL
# (seconds between checks, default 30; each matching minute runs once).
#
# Exit codes:
#   0  check: valid; match: fires; run: the watched process ended; cron-job: the
#      backup succeeded
#   1  match: does not fire; cron-job: the backup failed
#   2  bad input: invalid schedule, unknown subcommand, unreadable ENVFILE
set -Eeuo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PGSTEWARD_LOG_NAME=backup-scheduler.sh

# A cron job starts with cron's bare environment: the variables the library
# and backup.sh need (PG_MAJOR, PGDATA, storage, credentials) come from the
# file entrypoint.sh wrote, so it is loaded before anything else.
if [ "${1:-}" = cron-job ]; then
  if [ -z "${2:-}" ] || [ ! -r "$2" ]; then
    printf '%s [%s] ERROR: cron-job: cannot read the environment file %s\n' \
      "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$PGSTEWARD_LOG_NAME" "'${2:-}'" >&2
    exit 2
  fi
  # shellcheck disable=SC1090 # written by entrypoint.sh at start
  . "$2"
fi
# shellcheck source=images/postgres/scripts/pgsteward-lib.sh
. "$here/pgsteward-lib.sh"

MONTH_NAMES=(jan feb mar apr may jun jul aug sep oct nov dec)
DAY_NAMES=(sun mon tue wed thu fri sat)

# field_value TOKEN KIND: a number, or a month/day name, as a decimal number.
field_value() {
  local token=${1,,} kind=$2 i
  if [[ $token =~ ^[0-9]+$ ]]; then
    printf '%d\n' "$((10#$token))"
    return 0
  fi
  case "$kind" in
    month) for i in "${!MONTH_NAMES[@]}"; do [ "$token" = "${MONTH_NAMES[$i]}" ] && { echo $((i + 1)); return 0; }; done ;;
    dow) for i in "${!DAY_NAMES[@]}"; do [ "$token" = "${DAY_NAMES[$i]}" ] && { echo "$i"; return 0; }; done ;;
  esac
  return 1
}

# expand_field SPEC MIN MAX KIND: prints the set of values SPEC allows,
# as " v1 v2 … " (spaces around every value); fails on invalid SPEC.
expand_field() {
  local spec=$1 min=$2 max=$3 kind=$4 item base step lo hi v out=' '
  local -a items
  [[ -n $spec && $spec != *,,* && $spec != ,* && $spec != *, ]] || return 1
  IFS=, read -ra items <<<"$spec"
  for item in "${items[@]}"; do
    [ -n "$item" ] || return 1
    step=1
    base=$item
    if [[ $item == */* ]]; then
      base=${item%%/*}
      step=${item#*/}
      [[ $step =~ ^[0-9]+$ ]] && [ "$((10#$step))" -ge 1 ] || return 1
      step=$((10#$step))
    fi
    case "$base" in
      '*') lo=$min hi=$max ;;
      *-*)
        lo=$(field_value "${base%%-*}" "$kind") || return 1
        hi=$(field_value "${base#*-}" "$kind") || return 1
        ;;
      *)
        lo=$(field_value "$base" "$kind") || return 1
        if [[ $item == */* ]]; then hi=$max; else hi=$lo; fi
        ;;
    esac
    [ "$lo" -ge "$min" ] && [ "$hi" -le "$max" ] && [ "$lo" -le "$hi" ] || return 1
    for ((v = lo; v <= hi; v += step)); do
      out+="$v "
    done
  done
  printf '%s\n' "$out"
}

# normalize_schedule EXPR: the 5 fields (macros expanded), or fails.
normalize_schedule() {
  local expr
  expr=$(printf '%s' "$1" | tr -s '[:space:]' ' ' | sed 's/^ //; s/ $//')
  case "${expr,,}" in
    @yearly | @annually) expr='0 0 1 1 *' ;;
    @monthly) expr='0 0 1 * *' ;;
    @weekly) expr='0 0 * * 0' ;;
    @daily | @midnight) expr='0 0 * * *' ;;
    @hourly) expr='0 * * * *' ;;
    @*) return 1 ;;
  esac
  local -a fields
  read -ra fields <<<"$expr"
  [ "${#fields[@]}" -eq 5 ] || return 1
  printf '%s\n' "$expr"
}

# schedule_sets EXPR: five lines, the allowed minutes, hours, days of month,
# months and days of week; fails on an invalid EXPR.
schedule_sets() {
  local expr
  local -a f
  expr=$(normalize_schedule "$1") || return 1
  read -ra f <<<"$expr"
  expand_field "${f[0]}" 0 59 minute || return 1
  expand_field "${f[1]}" 0 23 hour || return 1
  expand_field "${f[2]}" 1 31 dom || return 1
  expand_field "${f[3]}" 1 12 month || return 1
  expand_field "${f[4]}" 0 7 dow || return 1
}

# cron_matches EXPR "MINUTE HOUR DOM MONTH DOW": true when EXPR fires then.
cron_matches() {
  local expr sets minute hour dom month dow dom_ok dow_ok
  local -a f s
  expr=$(normalize_schedule "$1") || return 2
  sets=$(schedule_sets "$expr") || return 2
  mapfile -t s <<<"$sets"
  read -ra f <<<"$expr"
  read -r minute hour dom month dow <<<"$2"
  minute=$((10#$minute)) hour=$((10#$hour)) dom=$((10#$dom)) month=$((10#$month)) dow=$((10#$dow))
  [[ ${s[0]} == *" $minute "* ]] || return 1
  [[ ${s[1]} == *" $hour "* ]] || return 1
  [[ ${s[3]} == *" $month "* ]] || return 1
  dom_ok=false dow_ok=false
  [[ ${s[2]} == *" $dom "* ]] && dom_ok=true
  if [[ ${s[4]} == *" $dow "* ]] || { [ "$dow" -eq 0 ] && [[ ${s[4]} == *" 7 "* ]]; }; then
    dow_ok=true
  fi
  if [[ ${f[2]} != \** && ${f[4]} != \** ]]; then
    # Both restricted: cron fires on either.
    $dom_ok || $dow_ok
  else
    $dom_ok && $dow_ok
  fi
}

# time_fields TIME: "MINUTE HOUR DOM MONTH DOW" of TIME (local time).
time_fields() {
  date -d "$1" '+%M %H %d %m %w'
}

backup_command() {
  printf '%s\n' "${PGSTEWARD_BACKUP_COMMAND:-$here/backup.sh}"
}

# main_server_ready [PID]: the server that PID runs (the container's main
# postgres, not the entrypoint's temporary one) accepts connections.
main_server_ready() {
  local pid=${1:-}
  if [ -n "$pid" ]; then
    [ "$(head -n1 "$PGDATA/postmaster.pid" 2>/dev/null)" = "$pid" ] || return 1
  fi
  pg_isready -q >/dev/null 2>&1
}

# scheduled_id: the id of a scheduled backup started now.
scheduled_id() {
  printf 'scheduled-%s\n' "$(date -u +%Y%m%dT%H%M%SZ)"
}

run_backup() {
  local cmd id rc=0
  cmd=$(backup_command)
  id=$(scheduled_id)
  log "scheduled backup: running $cmd --id $id"
  "$cmd" --id "$id" || rc=$?
  if [ "$rc" -eq 0 ]; then
    log "scheduled backup: finished"
  else
    log "scheduled backup: $cmd exited $rc"
  fi
  return "$rc"
}

# sleep_watching SECONDS [PID]: sleep, but return as soon as PID is gone.
sleep_watching() {
  local left=$1 watch=${2:-}
  while [ "$left" -gt 0 ]; do
    [ -z "$watch" ] || kill -0 "$watch" 2>/dev/null || return 0
    sleep 1
    left=$((left - 1))
  done
}

cmd_check() {
  [ "$#" -eq 1 ] || die "usage: backup-scheduler.sh check EXPR" 2
  schedule_sets "$1" >/dev/null || die "invalid backup schedule '$1': expected 5 cron fields (minute hour day-of-month month day-of-week) or @hourly/@daily/@weekly/@monthly/@yearly" 2
}

cmd_match() {
  if [ "$#" -lt 1 ] || [ "$#" -gt 2 ]; then
    die "usage: backup-scheduler.sh match EXPR [TIME]" 2
  fi
  local fields rc=0
  fields=$(time_fields "${2:-now}") || die "cannot read the time '${2:-now}'" 2
  cron_matches "$1" "$fields" || rc=$?
  [ "$rc" -ne 2 ] || die "invalid backup schedule '$1'" 2
  return "$rc"
}

cmd_run() {
  local watch='' schedule=${PGSTEWARD_BACKUP_SCHEDULE:-} interval=${PGSTEWARD_SCHEDULER_INTERVAL:-30} last='' key
  if [ "${1:-}" = --watch-pid ]; then
    watch=${2:?--watch-pid needs a PID}
  fi
  cmd_check "$schedule"
  log "built-in scheduler: '$schedule' runs $(backup_command)"
  while [ -z "$watch" ] || kill -0 "$watch" 2>/dev/null; do
    key=$(date '+%Y-%m-%d %H:%M')
    if [ "$key" != "$last" ] && cron_matches "$schedule" "$(time_fields "$key")" && main_server_ready "$watch"; then
      last=$key
      run_backup || true
    fi
    sleep_watching "$interval" "$watch"
  done
  log "built-in scheduler: the server (pid $watch) is gone; stopping"
}

# cmd_cron_job ENVFILE: ENVFILE is already loaded (see the top of the script).
cmd_cron_job() {
  if [ -n "${PGSTEWARD_CRON_LOG:-}" ] && [ -w "$PGSTEWARD_CRON_LOG" ]; then
    exec >>"$PGSTEWARD_CRON_LOG" 2>&1
  fi
  if ! main_server_ready; then
    log "scheduled backup skipped: the server is not accepting connections"
    return 1
  fi
  run_backup
}

main() {
  local sub=${1:-}
  [ "$#" -eq 0 ] || shift
  case "$sub" in
    check) cmd_check "$@" ;;
    match) cmd_match "$@" ;;
    run) cmd_run "$@" ;;
    cron-job) cmd_cron_job "$@" ;;
    *) die "usage: backup-scheduler.sh check|match|run|cron-job …" 2 ;;
  esac
}

main "$@"
