# shellcheck shell=bash
# Sourced by the harness scripts: strict mode, where the repository and its cache are, and log().
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# log() prefixes messages with the calling script's name, on stderr.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[1]}")" && pwd)"
repo="$(cd "${here}/../.." && pwd)"
cache="${MLFLOWOPS_CACHE:-${repo}/.cache}"
__harness_name="$(basename "${BASH_SOURCE[1]}" .sh)"

log() { printf '[%s] %s\n' "${__harness_name}" "$*" >&2; }

# apt-get with its lock waited for, retried: other steps of the preparation and the unit tests may hold apt's locks
# for a while, or a mirror may fail once
apt_get() {
  local attempt
  for attempt in 1 2 3 4 5; do
    if apt-get -o DPkg::Lock::Timeout=600 "$@"; then
      return 0
    fi
    log "apt-get $1 failed (attempt ${attempt}); retrying in 10 s"
    sleep 10
  done
  return 1
}
