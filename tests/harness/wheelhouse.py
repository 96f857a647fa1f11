#!/usr/bin/env python3
"""Fill the test wheelhouse (.cache/wheels) that test hosts install MLflow and moto from.

    wheelhouse.py [--dest DIR]

The pins come from where the product keeps them: `mlflow_version` and `mlflow_pip_packages` in
roles/mlflow/defaults/main.yml, the auth extra in roles/mlflow/vars/main.yml and moto's pin in
requirements.txt. Wheels are downloaded once, on the controller, for every Python the test images
carry (Ubuntu 22.04: 3.10, Debian 12: 3.11, Ubuntu 24.04: 3.12, Debian 13: 3.13). Test hosts then run pip with `--no-index --find-links`,
exactly as an operator does on an air-gapped host, instead of each fetching ~120 packages again.
The lifecycle scenario's MLflow 2.x (molecule/lifecycle/files/legacy-requirements.txt) joins them, for the
Python of its Debian 12 host only.

A stamp (hash of the requirement list, Pythons and platforms) skips the download when nothing changed.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
# Python versions of the test images (tests/harness/build-images.sh): Ubuntu 22.04, Debian 12, Ubuntu 24.04, Debian 13.
PYTHONS = ("3.10", "3.11", "3.12", "3.13")
# glibc of Ubuntu 22.04 is 2.35 (Debian 12: 2.36): every tag listed here runs on every test image.
PLATFORMS = (
    "manylinux2014_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux_2_28_x86_64",
    "manylinux_2_34_x86_64",
    "linux_x86_64",
)


def requirements() -> list[str]:
    defaults = yaml.safe_load((REPO / "roles/mlflow/defaults/main.yml").read_text())
    role_vars = yaml.safe_load((REPO / "roles/mlflow/vars/main.yml").read_text())
    reqs = [f"mlflow=={defaults['mlflow_version']}", *defaults["mlflow_pip_packages"]]
    reqs += role_vars["_mlflow_auth_packages"] + role_vars["_mlflow_prometheus_packages"]
    # the default scenario's Azure host (wasbs://), and Azurite's client in its object store
    reqs += role_vars["_mlflow_scheme_packages"]["wasbs"]
    moto = [
        line.strip()
        for line in (REPO / "requirements.txt").read_text().splitlines()
        if re.match(r"^moto\[server\]==", line.strip())
    ]
    if len(moto) != 1:
        sys.exit("wheelhouse: requirements.txt must pin moto[server]==X exactly once")
    return reqs + moto


# The lifecycle scenario seeds a database with MLflow 2.x on its Debian 12 host (Python 3.11).
LEGACY_FILE = REPO / "molecule" / "lifecycle" / "files" / "legacy-requirements.txt"
LEGACY_PYTHONS = ("3.11",)


def legacy_requirements() -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in LEGACY_FILE.read_text().splitlines())
    return [line for line in lines if line]


def marker_gap(dest: Path, python: str) -> set[str]:
    """Requirements of the wheels in dest whose markers hold for the target Python and not for this interpreter.

    `pip download --python-version` picks wheels for the target but evaluates environment markers with the
    interpreter it runs on: downloading for 3.10 from 3.11 leaves out `async-timeout; python_version < "3.11"`.
    """
    here = default_environment()
    there = dict(here, python_version=python, python_full_version=f"{python}.0",
                 implementation_version=f"{python}.0")
    gap = set()
    for wheel in dest.glob("*.whl"):
        with zipfile.ZipFile(wheel) as archive:
            metadata = [name for name in archive.namelist() if name.endswith(".dist-info/METADATA")]
            if not metadata:
                continue
            for line in archive.read(metadata[0]).decode("utf-8", "replace").splitlines():
                if not line.startswith("Requires-Dist:"):
                    continue
                requirement = Requirement(line.split(":", 1)[1].strip())
                marker = requirement.marker
                if marker and marker.evaluate(dict(there, extra="")) and not marker.evaluate(dict(here, extra="")):
                    extras = f"[{','.join(sorted(requirement.extras))}]" if requirement.extras else ""
                    gap.add(f"{requirement.name}{extras}{requirement.specifier}")
    return gap


def download(cmd: list[str], python: str, reqs: list[str]) -> None:
    result = subprocess.run([*cmd, *reqs], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if result.returncode != 0:
        # the machine's pip config may add warnings; show only the lines that explain the failure
        lines = [line for line in result.stdout.splitlines() if "is ignored" not in line]
        print("\n".join(lines[-30:]), file=sys.stderr)
        sys.exit(f"wheelhouse: pip download for Python {python} failed")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=REPO / ".cache" / "wheels")
    args = parser.parse_args()

    reqs = requirements()
    legacy = legacy_requirements()
    recipe = "\n".join([*reqs, *PYTHONS, *PLATFORMS, "markers", "legacy", *legacy, *LEGACY_PYTHONS])
    digest = hashlib.sha256(recipe.encode()).hexdigest()[:16]
    stamp = args.dest / ".recipe"
    if stamp.is_file() and stamp.read_text().strip() == digest:
        print(f"[wheelhouse] {args.dest} is up to date (recipe {digest}); skipping", file=sys.stderr)
        return 0

    args.dest.mkdir(parents=True, exist_ok=True)
    (args.dest / "requirements.txt").write_text("\n".join(reqs) + "\n")
    started = time.monotonic()
    for python in PYTHONS:
        # each Python's wheels land in a directory of their own first, so that the marker gap is read from the
        # wheels of this Python alone; then they join the wheelhouse
        own = args.dest / f".python-{python}"
        shutil.rmtree(own, ignore_errors=True)
        own.mkdir()
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
               "--dest", str(own), "--only-binary=:all:", "--python-version", python]
        for platform in PLATFORMS:
            cmd += ["--platform", platform]
        print(f"[wheelhouse] downloading wheels for Python {python}", file=sys.stderr)
        download(cmd, python, reqs)
        if python in LEGACY_PYTHONS:
            print(f"[wheelhouse] and the lifecycle scenario's MLflow 2.x for Python {python}", file=sys.stderr)
            download(cmd, python, legacy)
        # then what pip left out for this Python's markers, until nothing is missing
        fetched: set[str] = set()
        while gap := marker_gap(own, python) - fetched:
            print(f"[wheelhouse] Python {python} also needs {', '.join(sorted(gap))}", file=sys.stderr)
            download(cmd, python, sorted(gap))
            fetched |= gap
        for wheel in own.glob("*.whl"):
            wheel.replace(args.dest / wheel.name)
        shutil.rmtree(own)
    stamp.write_text(digest + "\n")
    wheels = len(list(args.dest.glob("*.whl")))
    print(f"[wheelhouse] {wheels} wheels in {args.dest} after {time.monotonic() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
