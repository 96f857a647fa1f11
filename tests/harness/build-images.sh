#!/usr/bin/env bash
# Build the local systemd base images the Molecule scenarios and `make demo` run on.
#
#   build-images.sh [12|13|ubuntu-22.04|ubuntu-24.04 ...]     default: 12 13
#
# No registry is needed: each image is a debootstrapped Debian or Ubuntu root filesystem, imported with
# `docker import` as mlflowops/debian:<version> or mlflowops/ubuntu:<version>. Ubuntu's Release files are
# verified with the archive keyring of its `ubuntu-keyring` package, accepted only when it holds the pinned
# Ubuntu Archive Automatic Signing Key (2018). An image is rebuilt only when it is missing or was built from another recipe
# (the recipe hash is stored as an image label), so a second call costs a second or two.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# The Debian mirror apt on this machine is configured with (deb822 .sources first, then sources.list);
# DEBIAN_MIRROR overrides it.
host_mirror() {
  local uri
  uri="$(awk '/^URIs:/ {u = $2} /^Suites:/ && !/-security/ && u != "" {print u; exit}' \
    /etc/apt/sources.list.d/*.sources 2>/dev/null || true)"
  if [[ -z "${uri}" ]]; then
    uri="$(awk '$1 == "deb" && !/security/ {for (i = 2; i <= NF; i++) if ($i ~ /^(https?|file):/) {print $i; exit}}' \
      /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)"
  fi
  echo "${uri}"
}
mirror="${DEBIAN_MIRROR:-$(host_mirror)}"
if [[ -z "${mirror}" ]]; then
  echo "[build-images] no Debian mirror found in this machine's apt sources: set DEBIAN_MIRROR" >&2
  exit 2
fi
repository="${MLFLOWOPS_IMAGE_REPOSITORY:-mlflowops/debian}"
ubuntu_repository="${MLFLOWOPS_UBUNTU_REPOSITORY:-mlflowops/ubuntu}"
# Ubuntu Archive Automatic Signing Key (2018) <ftpmaster@ubuntu.com>
ubuntu_key="F6ECB3762474EDA9D21B7022871920D1991BC93C"

# What Ansible, the roles' preflight and testinfra need on a target: python3 (+ apt bindings),
# systemd as PID 1, dbus for systemctl, ss/ps for socket and process checks, sudo for become.
packages=(
  systemd systemd-sysv dbus python3 python3-apt ca-certificates iproute2 procps sudo
  locales gnupg curl
)


codename_of() {
  case "$1" in
    12) echo bookworm ;;
    13) echo trixie ;;
    ubuntu-22.04) echo jammy ;;
    ubuntu-24.04) echo noble ;;
    *) log "unsupported version '$1' (known: 12, 13, ubuntu-22.04, ubuntu-24.04)"; exit 2 ;;
  esac
}

tag_of() {
  case "$1" in
    ubuntu-*) echo "${ubuntu_repository}:${1#ubuntu-}" ;;
    *) echo "${repository}:$1" ;;
  esac
}

recipe_hash() {
  { printf '%s\n' "$1" "${packages[@]}"; sed -n '/^customise()/,/^}/p' "${BASH_SOURCE[0]}"
    case "$1" in jammy | noble) echo "${ubuntu_key}"; sed -n '/^bootstrap_ubuntu()/,/^}/p' "${BASH_SOURCE[0]}" ;; esac; } \
    | sha256sum | cut -c1-16
}

# Trim the root filesystem so systemd boots cleanly inside a container.
customise() {
  local root="$1"
  # units that need hardware or a console the container does not have
  for unit in getty.target console-getty.service systemd-udevd.service systemd-udev-trigger.service \
              systemd-modules-load.service sys-kernel-config.mount sys-kernel-debug.mount \
              systemd-remount-fs.service systemd-firstboot.service; do
    ln -sf /dev/null "${root}/etc/systemd/system/${unit}"
  done
  : >"${root}/etc/machine-id"
  echo 'LANG=C.UTF-8' >"${root}/etc/default/locale"
  # docs and man pages are never read in a test host
  printf 'path-exclude /usr/share/doc/*\npath-exclude /usr/share/man/*\npath-include /usr/share/doc/*/copyright\n' \
    >"${root}/etc/dpkg/dpkg.cfg.d/01-nodoc"
  printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
    >"${root}/etc/apt/apt.conf.d/01-norecommends"
  rm -rf "${root}/var/lib/apt/lists/"* "${root}/var/cache/apt/archives/"*.deb
}

# true when the image of this Debian version exists and was built from the current recipe
up_to_date() {
  local codename want have
  codename="$(codename_of "$1")"
  want="$(recipe_hash "${codename}")"
  have="$(docker image inspect --format '{{ index .Config.Labels "org.mlflowops.recipe" }}' \
    "$(tag_of "$1")" 2>/dev/null || true)"
  [[ "${have}" == "${want}" ]]
}

# Ubuntu from its archive (debootstrap's own script knows the default mirror: an empty mirror argument), with the
# Release files verified: a first pass downloads the packages unverified; from its `ubuntu-keyring` package only
# the pinned key is exported (nothing else the package may carry is trusted), and the real pass verifies the
# Release files with that key alone (reusing the downloaded packages). The image's apt sources then get
# universe, -updates and -security on the same mirror.
bootstrap_ubuntu() {
  local codename="$1" root="$2" include="$3" log_file="$4" keys package primaries uri
  keys="$(mktemp -d)"
  if ! debootstrap --variant=minbase --download-only --no-check-gpg --include="${include},ubuntu-keyring" \
      "${codename}" "${root}" "" /usr/share/debootstrap/scripts/gutsy >"${log_file}" 2>&1; then
    log "the Ubuntu archive did not answer for ${codename} (debootstrap --download-only failed; ${log_file})"
    rm -rf "${keys}"
    return 1
  fi
  package="$(find "${root}/var/cache/apt/archives" -name 'ubuntu-keyring_*.deb' | head -n 1)"
  if [[ -z "${package}" ]] || ! dpkg-deb -x "${package}" "${keys}/package"; then
    log "no ubuntu-keyring package came with ${codename}: refusing to build it unverified"
    rm -rf "${keys}"
    return 1
  fi
  mkdir -m 0700 "${keys}/gnupg"
  GNUPGHOME="${keys}/gnupg" gpg --batch --quiet --import \
    "${keys}/package/usr/share/keyrings/ubuntu-archive-keyring.gpg" 2>>"${log_file}" || true
  GNUPGHOME="${keys}/gnupg" gpg --batch --quiet --export "${ubuntu_key}" >"${keys}/pinned.gpg" 2>>"${log_file}" || true
  # exactly one primary key, the pinned one
  primaries="$(gpg --show-keys --with-colons "${keys}/pinned.gpg" 2>/dev/null \
    | awk -F: '$1 == "pub" {primary = 1; next} primary && $1 == "fpr" {print $10; primary = 0}')"
  if [[ "${primaries}" != "${ubuntu_key}" ]]; then
    log "ubuntu-keyring of ${codename} does not hold the pinned key ${ubuntu_key}: refusing it"
    rm -rf "${keys}"
    return 1
  fi
  if ! debootstrap --variant=minbase --include="${include}" --keyring="${keys}/pinned.gpg" \
      "${codename}" "${root}" "" /usr/share/debootstrap/scripts/gutsy >>"${log_file}" 2>&1; then
    rm -rf "${keys}"
    return 1
  fi
  rm -rf "${keys}"
  uri="$(awk '$1 == "deb" {print $2; exit}' "${root}/etc/apt/sources.list")"
  printf 'deb %s %s main universe\ndeb %s %s-updates main universe\ndeb %s %s-security main universe\n' \
    "${uri}" "${codename}" "${uri}" "${codename}" "${uri}" "${codename}" >"${root}/etc/apt/sources.list"
}

build() {
  local version="$1" codename tag want root
  codename="$(codename_of "${version}")"
  tag="$(tag_of "${version}")"
  want="$(recipe_hash "${codename}")"
  if up_to_date "${version}"; then
    log "${tag} is up to date (recipe ${want}); skipping"
    return 0
  fi
  root="${cache}/rootfs-${codename}"
  rm -rf "${root}"
  mkdir -p "${root}"
  log "debootstrapping ${codename} into ${root} (about 90 s)"
  local started=$SECONDS
  local joined
  joined="$(IFS=,; echo "${packages[*]}")"
  local status=0
  case "${version}" in
    ubuntu-*) bootstrap_ubuntu "${codename}" "${root}" "${joined}" "${cache}/debootstrap-${codename}.log" \
                || status=$? ;;
    *) debootstrap --variant=minbase --include="${joined}" "${codename}" "${root}" "${mirror}" \
         >"${cache}/debootstrap-${codename}.log" 2>&1 || status=$? ;;
  esac
  if [[ ${status} -ne 0 ]]; then
    log "debootstrap failed; last lines of ${cache}/debootstrap-${codename}.log:"
    tail -n 30 "${cache}/debootstrap-${codename}.log" >&2
    exit 1
  fi
  customise "${root}"
  log "importing ${tag}"
  tar -C "${root}" -c . | docker import \
    --change "LABEL org.mlflowops.recipe=${want}" \
    --change 'CMD ["/lib/systemd/systemd"]' \
    --change 'ENV container=docker' \
    - "${tag}" >/dev/null
  rm -rf "${root}"
  log "${tag} built in $((SECONDS - started)) s"
}

mkdir -p "${cache}"
versions=("$@")
if [[ ${#versions[@]} -eq 0 ]]; then
  versions=(12 13)
fi
# debootstrap is installed once, before the builds run side by side (lib.sh's apt_get waits for the other
# steps of the preparation that install something).
tools=()
for v in "${versions[@]}"; do
  up_to_date "${v}" && continue
  command -v debootstrap >/dev/null 2>&1 || tools+=(debootstrap)
  # the Ubuntu keyring check
  [[ "${v}" == ubuntu-* ]] && ! command -v gpg >/dev/null 2>&1 && tools+=(gpg)
done
if [[ ${#tools[@]} -gt 0 ]]; then
  log "installing $(printf '%s\n' "${tools[@]}" | sort -u | xargs)"
  DEBIAN_FRONTEND=noninteractive apt_get update -qq
  # shellcheck disable=SC2046
  DEBIAN_FRONTEND=noninteractive apt_get install -y -qq --no-install-recommends \
    $(printf '%s\n' "${tools[@]}" | sort -u) >/dev/null
fi
# Builds are mostly download and unpack time: run them side by side.
pids=()
for v in "${versions[@]}"; do
  build "${v}" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do
  wait "${pid}" || status=1
done
exit "${status}"
