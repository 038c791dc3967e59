#!/usr/bin/env bash
# A Docker engine for the container tests, started only when none answers.
#
#   scripts/docker-engine.sh start    use the engine that answers `docker info`; else install Debian's docker.io
#                                     (+ docker-compose) if missing and start `dockerd --bridge=none --iptables=false`
#                                     in the background (no private-range network is created: containers use host
#                                     networking). Waits until `docker info` answers. Exit 1, loudly, if no engine runs.
#   scripts/docker-engine.sh stop     stops the dockerd this script started (pidfile), and nothing else.
#   scripts/docker-engine.sh status   prints "running (started by docker-engine.sh, pid N)", "running (not ours)"
#                                     or "not running"; exit 0 only when an engine answers.
#   scripts/docker-engine.sh release  for scripts that share the engine (scripts/containers.sh): `start` with
#                                     DYUPS_ENGINE_HOLDER=<their pid> registers them; `release` unregisters them and
#                                     stops the engine only when it was started for a holder and no holder is alive.
#                                     So two runs at once never stop the engine under each other, and an engine
#                                     started by hand (no holder) or not by this script is never stopped by them.
#
# State (pidfile, log, holders): $DYUPS_ENGINE_DIR, default /tmp/dyups-docker-engine.
set -euo pipefail

STATE_DIR=${DYUPS_ENGINE_DIR:-/tmp/dyups-docker-engine}
PIDFILE=$STATE_DIR/dockerd.pid
LOG=$STATE_DIR/dockerd.log
WAIT_SECONDS=${DYUPS_ENGINE_WAIT:-60}
HOLDERS=$STATE_DIR/holders
AUTOSTOP=$STATE_DIR/autostop   # present: the engine was started for a holder; the last release stops it
HOLDER=${DYUPS_ENGINE_HOLDER:-}

say() { echo "docker-engine: $*"; }
die() {
  {
    echo
    echo "######################################################################"
    echo "docker-engine: ERROR: $*"
    echo "######################################################################"
  } >&2
  exit 1
}

answers() { docker info >/dev/null 2>&1; }

# pid of the dockerd we started, if it is still that process
our_pid() {
  [ -f "$PIDFILE" ] || return 1
  local pid
  pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 1
  grep -q dockerd "/proc/$pid/cmdline" 2>/dev/null || return 1
  echo "$pid"
}

install_engine() {
  local missing=""
  command -v dockerd >/dev/null 2>&1 || missing="$missing docker.io"
  command -v docker >/dev/null 2>&1 || missing="$missing docker.io"
  command -v docker-compose >/dev/null 2>&1 || missing="$missing docker-compose"
  [ -n "$missing" ] || return 0
  [ "$(id -u)" = 0 ] || die "need root to install:$missing"
  say "installing$missing (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || die "apt-get update failed"
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $(echo "$missing" | tr ' ' '\n' | sort -u) >/dev/null \
    || die "apt-get install$missing failed"
}

hold() { [ -z "$HOLDER" ] || { mkdir -p "$HOLDERS"; : >"$HOLDERS/$HOLDER"; }; }

live_holders() {
  local f pid
  for f in "$HOLDERS"/*; do
    [ -e "$f" ] || continue
    pid=${f##*/}
    if [ -d "/proc/$pid" ]; then echo "$pid"; else rm -f "$f"; fi
  done
}

start() {
  hold
  if answers; then
    if pid=$(our_pid); then
      say "running (started by docker-engine.sh, pid $pid)"
      # started by hand now: keep it running after the test runs that share it
      [ -n "$HOLDER" ] || rm -f "$AUTOSTOP"
    else say "an engine already answers; using it (this script will not stop it)"; fi
    return 0
  fi
  install_engine
  command -v dockerd >/dev/null 2>&1 || die "dockerd is not installed and could not be installed"
  [ "$(id -u)" = 0 ] || die "dockerd must be started as root (no engine answers \`docker info\`)"
  mkdir -p "$STATE_DIR"
  if pid=$(our_pid); then
    say "our dockerd (pid $pid) is running but does not answer yet; waiting"
  else
    rm -f "$PIDFILE"
    say "starting dockerd --bridge=none --iptables=false (log: $LOG)"
    # setsid: its own session, so it outlives this shell and no job-control signal reaches it
    setsid dockerd --bridge=none --iptables=false --ip6tables=false >>"$LOG" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$PIDFILE"
    if [ -n "$HOLDER" ]; then : >"$AUTOSTOP"; else rm -f "$AUTOSTOP"; fi
  fi
  local t0=$SECONDS
  until answers; do
    if ! [ -d "/proc/$pid" ]; then
      rm -f "$PIDFILE"
      tail -n 30 "$LOG" >&2 || true
      die "dockerd exited during start (see $LOG); no Docker engine can run here"
    fi
    if (( SECONDS - t0 > WAIT_SECONDS )); then
      tail -n 30 "$LOG" >&2 || true
      kill "$pid" 2>/dev/null || true
      rm -f "$PIDFILE"
      die "dockerd did not answer \`docker info\` within ${WAIT_SECONDS}s (see $LOG)"
    fi
    sleep 0.2
  done
  say "dockerd (pid $pid) answers after $((SECONDS - t0))s: $(docker version -f '{{.Server.Version}}' 2>/dev/null)"
}

stop() {
  local pid
  if ! pid=$(our_pid); then
    rm -f "$PIDFILE"
    if answers; then say "the running engine was not started by this script; leaving it alone"
    else say "not running"; fi
    return 0
  fi
  say "stopping dockerd (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  local i
  for i in $(seq 1 150); do [ -d "/proc/$pid" ] || break; sleep 0.2; done
  if [ -d "/proc/$pid" ]; then
    say "dockerd did not stop in 30s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$PIDFILE" "$AUTOSTOP"
  say "stopped"
}

release() {
  [ -z "$HOLDER" ] || rm -f "$HOLDERS/$HOLDER"
  local others
  others=$(live_holders | tr '\n' ' ')
  if [ "${DYUPS_KEEP_ENGINE:-0}" = 1 ]; then say "DYUPS_KEEP_ENGINE=1: leaving it running"; return 0; fi
  if [ -n "$others" ]; then say "still used by pid(s) ${others% }; leaving it running"; return 0; fi
  if our_pid >/dev/null && [ -f "$AUTOSTOP" ]; then stop
  else say "leaving the engine as it was (not started for a test run)"; fi
}

status() {
  local pid
  if answers; then
    if pid=$(our_pid); then echo "running (started by docker-engine.sh, pid $pid)"
    else echo "running (not ours)"; fi
    return 0
  fi
  if pid=$(our_pid); then echo "starting or stuck (our dockerd pid $pid does not answer; log $LOG)"; return 1; fi
  echo "not running"
  return 1
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  release) release ;;
  *) echo "usage: $0 start|stop|status|release" >&2; exit 2 ;;
esac
