#!/usr/bin/env bash
# Run Molecule scenarios the way `make test` and CI do:
#   1. make sure a Docker engine answers (installing/starting one if needed),
#   2. build the local systemd base images, the wheelhouse test hosts install from and (for the docker
#      scenario) the offline MLflow image, each only when missing or out of date,
#   3. run `molecule test -s NAME` for each scenario given, printing the wall time of each (scenarios
#      joined with + run side by side; they must not share container names or published ports),
#   4. stop the Docker engine again if (and only if) this script started it.
#
#   molecule.sh postgresql default ...      one after the other
#   molecule.sh postgresql+docker default   postgresql and docker side by side, then default
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "${repo}"
# the controller venv of `make setup` (wheelhouse.py reads the role defaults with PyYAML)
python="${repo}/.venv/bin/python"
[[ -x "${python}" ]] || python=python3
bin="$(dirname "$(command -v "${python}")")"

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
bash "${here}/build-images.sh" 12 13 ubuntu-22.04 ubuntu-24.04
"${python}" "${here}/wheelhouse.py"
echo "[molecule] base images and wheels ready in $((SECONDS - t0)) s"

# The collection as a Galaxy user gets it: built into a tarball and installed into an empty directory. The
# small scenario converges and probes through it alone (its ansible.cfg has no other path to this repository).
t0=$SECONDS
galaxy="${cache}/galaxy"
rm -rf "${galaxy}"
mkdir -p "${galaxy}/build"
"${bin}/ansible-galaxy" collection build --force --output-path "${galaxy}/build" "${repo}" >/dev/null
# (its only collections path is the empty directory: the repository's own link must not count as installed)
ANSIBLE_COLLECTIONS_PATH="${galaxy}/collections" "${bin}/ansible-galaxy" collection install --no-deps \
  --collections-path "${galaxy}/collections" "${galaxy}"/build/mlflowops-tracking-*.tar.gz >/dev/null
echo "[molecule] collection built and installed into ${galaxy}/collections in $((SECONDS - t0)) s"

logs="${cache}/logs"
mkdir -p "${logs}"
rm -f "${logs}"/versions-*.json "${logs}"/evidence-*.json

# The cluster scenario's MLflow image (its docker-method host) builds in the background meanwhile.
image_build=""
if [[ " ${*//+/ } " == *" cluster "* ]]; then
  echo "[molecule] building the offline MLflow image in the background (log: ${logs}/build-mlflow-image.log)"
  bash "${here}/build-mlflow-image.sh" >"${logs}/build-mlflow-image.log" 2>&1 &
  image_build=$!
fi
wait_for_image() {
  [[ -n "${image_build}" ]] || return 0
  local status=0
  wait "${image_build}" || status=$?
  image_build=""
  cat "${logs}/build-mlflow-image.log"
  if [[ ${status} -ne 0 ]]; then
    echo "[molecule] building the MLflow image failed" >&2
    exit 1
  fi
}
declare -A took=()
failed=()
scenarios=()

# One scenario, output to stdout (alone) or to its log file (side by side with others).
run_scenario() {
  local scenario="$1" started=$SECONDS
  if molecule test -s "${scenario}"; then
    echo "passed in $((SECONDS - started)) s" >"${logs}/${scenario}.result"
  else
    echo "FAILED after $((SECONDS - started)) s" >"${logs}/${scenario}.result"
  fi
}

for group in "$@"; do
  IFS=+ read -r -a members <<<"${group}"
  scenarios+=("${members[@]}")
  if [[ "+${group}+" == *"+cluster+"* ]]; then
    wait_for_image
  fi
  if [[ ${#members[@]} -eq 1 ]]; then
    echo "[molecule] scenario ${group}: start"
    run_scenario "${group}"
  else
    # Scenarios joined with + share no container names or ports: run them side by side, each logging
    # to its own file, printed when the group is done.
    echo "[molecule] scenarios ${members[*]}: start side by side (logs in ${logs}/)"
    pids=()
    for scenario in "${members[@]}"; do
      run_scenario "${scenario}" >"${logs}/${scenario}.log" 2>&1 &
      pids+=($!)
    done
    wait "${pids[@]}" || true
    for scenario in "${members[@]}"; do
      echo "[molecule] ---------------- output of scenario ${scenario} ----------------"
      cat "${logs}/${scenario}.log"
    done
  fi
  for scenario in "${members[@]}"; do
    took[${scenario}]="$(cat "${logs}/${scenario}.result" 2>/dev/null || echo "FAILED (no result)")"
    [[ "${took[${scenario}]}" == passed* ]] || failed+=("${scenario}")
    echo "[molecule] scenario ${scenario}: ${took[${scenario}]}"
  done
done

echo "[molecule] versions seen (host, OS, and what it runs):"
for seen in "${logs}"/versions-*.json; do
  [[ -f "${seen}" ]] && "${python}" -c 'import json, sys; v = json.load(open(sys.argv[1])); print("  " + ", ".join(v.values()))' "${seen}"
done
for seen in "${logs}"/evidence-*.json; do
  [[ -f "${seen}" ]] && echo "[molecule] $(basename "${seen}" .json): $(cat "${seen}")"
done
echo "[molecule] summary:"
for scenario in "${scenarios[@]}"; do
  echo "  ${scenario}: ${took[${scenario}]}"
done
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "[molecule] failed scenarios: ${failed[*]}" >&2
  exit 1
fi
