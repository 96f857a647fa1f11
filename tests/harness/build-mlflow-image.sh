#!/usr/bin/env bash
# Build the MLflow server image the `docker` scenario runs, offline, and save it as an archive.
#
#   build-mlflow-image.sh
#
# No registry is reachable here, so the image the role would pull (ghcr.io/mlflow/mlflow) is replaced
# by one built locally: the Debian 12 base image plus a venv with mlflow and its drivers from the
# test wheelhouse (tests/harness/wheelhouse.py). It is saved to .cache/images/ so the scenario can
# hand it to the role as an air-gapped host would (mlflow_docker_pull: false + an image archive).
# Rebuilt only when the recipe (this script and the wheel list) changed.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
wheels="${cache}/wheels"
base="${MLFLOWOPS_IMAGE_REPOSITORY:-mlflowops/debian}:12"


if [[ ! -s "${wheels}/requirements.txt" ]]; then
  log "no wheelhouse in ${wheels}: run tests/harness/wheelhouse.py first"
  exit 2
fi
version="$(sed -n 's/^mlflow==//p' "${wheels}/requirements.txt")"
tag="mlflowops/mlflow-offline:${version}"
archive="${cache}/images/mlflow-offline-${version}.tar"
want="$( { cat "${BASH_SOURCE[0]}" "${wheels}/requirements.txt"; docker image inspect --format '{{.Id}}' "${base}"; } \
  | sha256sum | cut -c1-16)"
have="$(docker image inspect --format '{{ index .Config.Labels "org.mlflowops.recipe" }}' "${tag}" 2>/dev/null || true)"

if [[ "${have}" == "${want}" && -s "${archive}" && "$(cat "${archive}.recipe" 2>/dev/null)" == "${want}" ]]; then
  log "${tag} and ${archive} are up to date (recipe ${want}); skipping"
  exit 0
fi

started=$SECONDS
if [[ "${have}" != "${want}" ]]; then
  builder="mlflowops-mlflow-image-build"
  docker rm --force "${builder}" >/dev/null 2>&1 || true
  log "installing mlflow ${version} into ${base} (wheels from ${wheels})"
  # Like the official image: python3 and mlflow on PATH, no entrypoint, runs as any user.
  docker run --name "${builder}" --volume "${wheels}:/wheels:ro" --env DEBIAN_FRONTEND=noninteractive \
    "${base}" /bin/sh -euc '
      apt-get update -qq
      apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
      python3 -m venv /opt/venv
      /opt/venv/bin/pip install --quiet --no-cache-dir --disable-pip-version-check --no-index \
        --find-links /wheels -r /wheels/requirements.txt
      rm -rf /var/lib/apt/lists/*
      /opt/venv/bin/mlflow --version' >&2
  docker commit \
    --change "LABEL org.mlflowops.recipe=${want}" \
    --change 'ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV container=' \
    --change 'CMD ["mlflow", "server"]' \
    "${builder}" "${tag}" >/dev/null
  docker rm "${builder}" >/dev/null
fi
mkdir -p "$(dirname "${archive}")"
log "saving ${tag} to ${archive}"
docker save --output "${archive}.tmp" "${tag}"
mv "${archive}.tmp" "${archive}"
echo "${want}" >"${archive}.recipe"
log "${tag} ready in $((SECONDS - started)) s ($(du -h "${archive}" | cut -f1))"
