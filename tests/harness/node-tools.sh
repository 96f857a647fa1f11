#!/usr/bin/env bash
# The default scenario's tools from npm, with the machine's Node.js, into .cache/node (mounted read-only into the
# object store's container at /srv/node): playwright-core, which drives Debian's chromium (the package, no browser
# download) in the UI test, and Azurite, the Azure Blob endpoint there. Each only when missing or not the pinned
# version.
#   bash tests/harness/node-tools.sh        prints where playwright-core is
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PLAYWRIGHT_CORE_VERSION=1.65.1
# (3.37 needs Node.js 22; the object store's Debian 12 has 18)
AZURITE_VERSION=3.35.0
# (the containers mount it from the repository's cache, like the wheelhouse)
node_dir="${repo}/.cache/node"

if ! command -v chromium >/dev/null 2>&1; then
  if [[ "$(id -u)" -ne 0 ]]; then
    log "chromium is missing and installing it needs root: apt-get install chromium"
    exit 1
  fi
  log "installing Debian's chromium"
  export DEBIAN_FRONTEND=noninteractive
  apt_get update -qq
  apt_get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null
fi
installed() {
  node -p "require('${node_dir}/node_modules/$1/package.json').version" 2>/dev/null || true
}
if [[ "$(installed playwright-core)" != "${PLAYWRIGHT_CORE_VERSION}" || "$(installed azurite)" != "${AZURITE_VERSION}" ]]
then
  log "installing playwright-core ${PLAYWRIGHT_CORE_VERSION} and azurite ${AZURITE_VERSION} into ${node_dir}"
  mkdir -p "${node_dir}"
  npm install --no-audit --no-fund --silent --prefix "${node_dir}" \
    "playwright-core@${PLAYWRIGHT_CORE_VERSION}" "azurite@${AZURITE_VERSION}" >&2
fi
log "$(chromium --version 2>/dev/null | head -1), playwright-core ${PLAYWRIGHT_CORE_VERSION} and azurite" \
  "${AZURITE_VERSION} ready"
echo "${node_dir}/node_modules/playwright-core"
