#!/usr/bin/env bash
# Make sure a Docker engine answers on /var/run/docker.sock.
#
#   docker-engine.sh start   install Debian's docker.io if dockerd is missing, start dockerd
#                            only when no engine answers, wait until `docker info` works
#   docker-engine.sh stop    stop the daemon *this script* started (recorded in a pid file);
#                            an engine that was already running is never touched
#   docker-engine.sh status  say whether an engine answers and who started it
#
# The pid file lives in .cache/ of the repository, so `make` targets and .ci/run agree on it.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
pid_file="${cache}/dockerd.pid"
log_file="${cache}/dockerd.log"
wait_seconds="${DOCKER_WAIT_SECONDS:-60}"


engine_answers() { docker info >/dev/null 2>&1; }

need_root() {
  if [[ "$(id -u)" -ne 0 ]]; then
    log "no Docker engine answers and starting one needs root (run as root or start Docker yourself)"
    exit 1
  fi
}

install_engine() {
  if command -v dockerd >/dev/null 2>&1; then
    return 0
  fi
  need_root
  log "dockerd not found: installing Debian's docker.io"
  export DEBIAN_FRONTEND=noninteractive
  # (make test runs the unit tests meanwhile, which may run apt-get too: wait for its lock)
  apt_get update -qq
  apt_get install -y -qq --no-install-recommends docker.io >/dev/null
}

start() {
  if engine_answers; then
    log "an engine already answers: $(docker info --format '{{.ServerVersion}} ({{.Driver}})')"
    return 0
  fi
  install_engine
  need_root
  mkdir -p "${cache}"
  if [[ -S /var/run/docker.sock ]] && ! engine_answers; then
    log "/var/run/docker.sock exists but nothing answers; checking for a dockerd process"
    if pgrep -x dockerd >/dev/null 2>&1; then
      log "a dockerd process exists and is still starting; waiting for it instead of starting another"
    fi
  fi
  if ! pgrep -x dockerd >/dev/null 2>&1; then
    log "starting dockerd (log: ${log_file})"
    nohup dockerd >"${log_file}" 2>&1 &
    echo $! >"${pid_file}"
  fi
  local waited=0
  until engine_answers; do
    if (( waited >= wait_seconds )); then
      log "dockerd did not answer within ${wait_seconds}s; last lines of its log:"
      tail -n 30 "${log_file}" >&2 || true
      exit 1
    fi
    sleep 1
    waited=$((waited + 1))
  done
  log "engine ready after ${waited}s: $(docker info --format '{{.ServerVersion}} ({{.Driver}})')"
}

stop() {
  if [[ ! -f "${pid_file}" ]]; then
    log "no daemon was started by this script; nothing to stop"
    return 0
  fi
  local pid
  pid="$(cat "${pid_file}")"
  if kill -0 "${pid}" 2>/dev/null && [[ "$(cat "/proc/${pid}/comm" 2>/dev/null)" == "dockerd" ]]; then
    log "stopping dockerd (pid ${pid}) started by this script"
    kill "${pid}"
    for _ in $(seq 1 30); do
      kill -0 "${pid}" 2>/dev/null || break
      sleep 1
    done
  fi
  rm -f "${pid_file}" "${cache}/dockerd.started-by-prepare"
}

status() {
  if engine_answers; then
    if [[ -f "${pid_file}" ]]; then
      echo "running (started by this harness, pid $(cat "${pid_file}"))"
    else
      echo "running (not started by this harness)"
    fi
  else
    echo "not running"
    return 1
  fi
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
