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

# apt-get one at a time, retried: the preparation's steps run side by side and each may install something (the
# harness's own calls wait for each other on a lock file; DPkg::Lock::Timeout waits for dpkg's lock held by anyone
# else, but not for the lock of `apt-get update`, which fails at once), and a mirror may fail once
apt_get() {
  local attempt
  for attempt in 1 2 3 4 5; do
    if flock /run/lock/mlflowops-harness-apt.lock apt-get -o DPkg::Lock::Timeout=600 "$@"; then
      return 0
    fi
    log "apt-get $1 failed (attempt ${attempt}); retrying in 10 s"
    sleep 10
  done
  return 1
}
