#!/usr/bin/env bash
# Run Molecule scenarios the way `make test` and CI do:
#   1. make sure a Docker engine answers (installing/starting one if needed),
#   2. build the local systemd base images, the wheelhouse test hosts install from and (for the docker
#      scenario) the offline MLflow image, each only when missing or out of date,
#   3. run `molecule test -s NAME` for each scenario given, printing the wall time of each,
#   4. stop the Docker engine again if (and only if) this script started it.
#
#   molecule.sh postgresql default ...
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${here}/../.." && pwd)"
cache="${MLFLOWOPS_CACHE:-${repo}/.cache}"
cd "${repo}"
# the controller venv of `make setup` (wheelhouse.py reads the role defaults with PyYAML)
python="${repo}/.venv/bin/python"
[[ -x "${python}" ]] || python=python3

if [[ $# -eq 0 ]]; then
  echo "usage: $0 SCENARIO [SCENARIO ...]" >&2
  exit 2
fi

started_engine=false
if [[ ! -f "${cache}/dockerd.pid" ]]; then
  bash "${here}/docker-engine.sh" start
  [[ -f "${cache}/dockerd.pid" ]] && started_engine=true
else
  bash "${here}/docker-engine.sh" start
fi
cleanup() {
  if [[ "${started_engine}" == true && "${MLFLOWOPS_KEEP_ENGINE:-0}" != 1 ]]; then
    bash "${here}/docker-engine.sh" stop
  fi
}
trap cleanup EXIT

t0=$SECONDS
bash "${here}/build-images.sh" 12 13
"${python}" "${here}/wheelhouse.py"
if [[ " $* " == *" docker "* ]]; then
  bash "${here}/build-mlflow-image.sh"
fi
echo "[molecule] base images and wheels ready in $((SECONDS - t0)) s"

declare -A took=()
failed=()
for scenario in "$@"; do
  t0=$SECONDS
  echo "[molecule] scenario ${scenario}: start"
  if molecule test -s "${scenario}"; then
    took[${scenario}]="passed in $((SECONDS - t0)) s"
  else
    took[${scenario}]="FAILED after $((SECONDS - t0)) s"
    failed+=("${scenario}")
  fi
  echo "[molecule] scenario ${scenario}: ${took[${scenario}]}"
done

echo "[molecule] summary:"
for scenario in "$@"; do
  echo "  ${scenario}: ${took[${scenario}]}"
done
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "[molecule] failed scenarios: ${failed[*]}" >&2
  exit 1
fi
