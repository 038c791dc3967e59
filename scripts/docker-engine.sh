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
#
# State (pidfile, log): $DYUPS_ENGINE_DIR, default /tmp/dyups-docker-engine.
set -euo pipefail

STATE_DIR=${DYUPS_ENGINE_DIR:-/tmp/dyups-docker-engine}
PIDFILE=$STATE_DIR/dockerd.pid
LOG=$STATE_DIR/dockerd.log
WAIT_SECONDS=${DYUPS_ENGINE_WAIT:-60}

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

start() {
  if answers; then
    if pid=$(our_pid); then say "running (started by docker-engine.sh, pid $pid)"
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
  rm -f "$PIDFILE"
  say "stopped"
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
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
