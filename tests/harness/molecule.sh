#!/usr/bin/env bash
# Run Molecule scenarios the way `make test` and CI do:
#   1. make sure a Docker engine answers (installing/starting one if needed),
#   2. build the local systemd base images, the wheelhouse test hosts install from and (for the docker
#      scenario) the offline MLflow image, each only when missing or out of date,
#   3. run `molecule test -s NAME` for each scenario given, printing the wall time of each (scenarios
#      joined with + run side by side; they must not share container names or published ports; scenarios
#      joined with , form a lane, one after the other, beside the other lanes of the group),
#   4. stop the Docker engine again if (and only if) this script started it.
#
#   molecule.sh lifecycle default ...       one after the other
#   molecule.sh cluster+lifecycle default   cluster and lifecycle side by side, then default
#   molecule.sh cluster+lifecycle,default   two lanes side by side: cluster, and lifecycle then default
#   molecule.sh --prepare                   step 1 and the base images and wheels of step 2 only (make test runs
#                                           them beside lint and unit); the engine it starts is stopped by the
#                                           next run that starts scenarios (or by make test when it fails)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "${repo}"
# the controller venv of `make setup` (wheelhouse.py reads the role defaults with PyYAML)
python="${repo}/.venv/bin/python"
[[ -x "${python}" ]] || python=python3
bin="$(dirname "$(command -v "${python}")")"

prepare_only=false
if [[ "${1:-}" == --prepare ]]; then
  prepare_only=true
  shift
fi
if [[ $# -eq 0 && "${prepare_only}" == false ]]; then
  echo "usage: $0 [--prepare] SCENARIO [SCENARIO ...]" >&2
  exit 2
fi

# (an engine a --prepare run started is this run's to stop)
started_by_prepare="${cache}/dockerd.started-by-prepare"
started_engine=false
if [[ ! -f "${cache}/dockerd.pid" ]]; then
  bash "${here}/docker-engine.sh" start
  [[ -f "${cache}/dockerd.pid" ]] && started_engine=true
else
  bash "${here}/docker-engine.sh" start
  if [[ -f "${started_by_prepare}" && "${prepare_only}" == false ]]; then
    # (the marker names the daemon it means: an engine started since by someone else is not this run's)
    [[ "$(cat "${started_by_prepare}")" == "$(cat "${cache}/dockerd.pid")" ]] && started_engine=true
    rm -f "${started_by_prepare}"
  fi
fi
if [[ "${prepare_only}" == true && "${started_engine}" == true ]]; then
  cp "${cache}/dockerd.pid" "${started_by_prepare}"
  started_engine=false
fi
cleanup() {
  if [[ "${started_engine}" == true && "${MLFLOWOPS_KEEP_ENGINE:-0}" != 1 ]]; then
    bash "${here}/docker-engine.sh" stop
  fi
}
trap cleanup EXIT

# The base images (debootstrap) and the wheelhouse (pip download, on the controller) need nothing of each other:
# side by side.
# The default scenario's tools (chromium, playwright-core, Azurite) install meanwhile too.
t0=$SECONDS
"${python}" "${here}/wheelhouse.py" &
wheels=$!
browser_pid=""
if [[ " ${*//[+,]/ } " == *" default "* || "${prepare_only}" == true ]]; then
  bash "${here}/node-tools.sh" >/dev/null &
  browser_pid=$!
fi
images_status=0
bash "${here}/build-images.sh" 12 13 ubuntu-22.04 ubuntu-24.04 || images_status=$?
wheels_status=0
wait "${wheels}" || wheels_status=$?
browser_status=0
[[ -z "${browser_pid}" ]] || wait "${browser_pid}" || browser_status=$?
if [[ "${images_status}" != 0 || "${wheels_status}" != 0 || "${browser_status}" != 0 ]]; then
  echo "[molecule] preparation failed: base images exited ${images_status}, wheelhouse ${wheels_status}," \
    "the default scenario's tools ${browser_status}" >&2
  exit 1
fi
echo "[molecule] base images, wheels and the default scenario's tools ready in $((SECONDS - t0)) s"
if [[ "${prepare_only}" == true ]]; then
  exit 0
fi

# The collection as a Galaxy user gets it: built into a tarball and installed into an empty directory. The
# lifecycle scenario converges, probes and runs its playbooks through it alone (its ansible.cfg has no other path to this repository).
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
# every scenario named (groups joined with +, lanes with ,); nothing of an earlier run of them may count as this
# run's result
read -r -a all_named <<<"${*//[+,]/ }"
for scenario in "${all_named[@]}"; do
  rm -f "${logs}/${scenario}.result" "${logs}/${scenario}.log"
done

# The cluster scenario's MLflow image (its docker-method host) builds in the background meanwhile.
# (its exit status goes to a file, so that a lane, a subshell, can wait for it too)
image_build=""
image_status="${logs}/build-mlflow-image.status"
rm -f "${image_status}" "${image_status}.tmp"
if [[ " ${all_named[*]} " == *" cluster "* ]]; then
  echo "[molecule] building the offline MLflow image in the background (log: ${logs}/build-mlflow-image.log)"
  (
    status=0
    bash "${here}/build-mlflow-image.sh" >"${logs}/build-mlflow-image.log" 2>&1 || status=$?
    echo "${status}" >"${image_status}.tmp"
    mv "${image_status}.tmp" "${image_status}"
  ) &
  image_build=$!
fi
wait_for_image() {
  [[ -n "${image_build}" ]] || return 0
  # (a builder killed before it wrote its status: no status, a failure)
  while [[ ! -f "${image_status}" ]] && kill -0 "${image_build}" 2>/dev/null; do
    sleep 2
  done
  image_build=""
  cat "${logs}/build-mlflow-image.log"
  if [[ "$(cat "${image_status}" 2>/dev/null)" != 0 ]]; then
    echo "[molecule] building the MLflow image failed" >&2
    return 1
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

# The scenarios of one lane, one after the other, each logging to its own file (cluster waits for its image).
run_lane() {
  local scenario
  for scenario in "$@"; do
    : >"${logs}/${scenario}.log"
    if [[ "${scenario}" == cluster ]] && ! wait_for_image >>"${logs}/${scenario}.log" 2>&1; then
      echo "FAILED: the MLflow image did not build" >"${logs}/${scenario}.result"
      continue
    fi
    echo "[molecule] scenario ${scenario}: start"
    run_scenario "${scenario}" >>"${logs}/${scenario}.log" 2>&1
    echo "[molecule] scenario ${scenario}: $(cat "${logs}/${scenario}.result" 2>/dev/null)"
  done
}

for group in "$@"; do
  IFS=+ read -r -a members <<<"${group}"
  lane_scenarios="${group//[+,]/ }"
  read -r -a named <<<"${lane_scenarios}"
  scenarios+=("${named[@]}")
  if [[ "${group}" == cluster ]]; then
    wait_for_image || exit 1
  fi
  if [[ ${#members[@]} -eq 1 && "${group}" != *,* ]]; then
    echo "[molecule] scenario ${group}: start"
    run_scenario "${group}"
  else
    # Scenarios joined with + share no container names or ports: run them side by side, each logging
    # to its own file, printed when the group is done.
    lanes="$(IFS='|'; echo "${members[*]}")"
    lanes="${lanes//,/ then }"
    echo "[molecule] side by side: ${lanes//|/ | } (logs in ${logs}/)"
    pids=()
    for lane in "${members[@]}"; do
      IFS=, read -r -a lane_members <<<"${lane}"
      run_lane "${lane_members[@]}" &
      pids+=($!)
    done
    wait "${pids[@]}" || true
    for scenario in "${named[@]}"; do
      echo "[molecule] ---------------- output of scenario ${scenario} ----------------"
      cat "${logs}/${scenario}.log"
    done
  fi
  for scenario in "${named[@]}"; do
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
