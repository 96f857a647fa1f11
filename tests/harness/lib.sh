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
