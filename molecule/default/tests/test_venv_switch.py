"""A new package set (the same path a new MLflow version takes) builds its venv beside the one the server runs,
and the server is stopped only after that venv is complete: stop -> migrate -> switch -> start. Setting the
variables back switches to the kept venv again without building anything (the rollback), and the run after it
changes nothing. Venv method only (the default scenario); one host, the MLflow tier's playbook alone."""

import json
import os
from pathlib import Path

import pytest
import yaml

testinfra_hosts = ["ansible://mlflowops-ubuntu2404"]

REPO = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
LINK = "/opt/mlflow/venv"
# in the test wheelhouse (a dependency of the moto server), not a dependency of MLflow
EXTRA = "xmltodict"
VERSION = yaml.safe_load((REPO / "roles/mlflow/defaults/main.yml").read_text())["mlflow_version"]


def systemd_time(host, prop):
    """A timestamp of the unit, as seconds since the epoch (systemd prints @<seconds>)."""
    return int(host.check_output(f"systemctl show --timestamp=unix -P {prop} mlflow.service").lstrip("@"))


def healthy(host):
    return host.run("curl -fsS http://127.0.0.1:5000/health").stdout.strip() == "OK"


@pytest.fixture(scope="module")
def switched(host, run_playbook):
    before = host.file(LINK).linked_to
    assert host.run(f"{LINK}/bin/python -c 'import {EXTRA}'").rc != 0, f"{EXTRA} is in the server's venv already"
    result = run_playbook("mlflow.yml", "--limit", host.backend.get_hostname(),
                          "-e", json.dumps({"mlflow_pip_extra_packages": [EXTRA]}))
    yield before, result
    if host.file(LINK).linked_to != before:
        # a test failed before the rollback: leave the host as the scenario converged it for the tests after
        run_playbook("mlflow.yml", "--limit", host.backend.get_hostname())


def test_a_new_package_set_gets_a_venv_beside_the_old_one(host, switched):
    before, result = switched
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    after = host.file(LINK).linked_to
    assert after != before and after.startswith(f"/opt/mlflow/venvs/{VERSION}-")
    assert host.file(before).is_directory, "the venv the server ran is kept for a rollback"
    assert host.run(f"{LINK}/bin/python -c 'import {EXTRA}'").rc == 0
    assert healthy(host)


def test_the_server_stopped_only_after_the_new_venv_was_complete(host, switched):
    after = host.file(LINK).linked_to
    # pip's last write into the new venv: the newest RECORD of its packages
    built = float(host.check_output(f"find {after} -name RECORD -printf '%T@\\n' | sort -n | tail -1"))
    stopped_at = systemd_time(host, "InactiveEnterTimestamp")
    started_at = systemd_time(host, "ActiveEnterTimestamp")
    # whole seconds from systemd: stopped in the second pip finished or later
    assert stopped_at >= int(built), (stopped_at, built)
    assert started_at >= stopped_at


def test_setting_the_variables_back_switches_to_the_kept_venv(host, switched, run_playbook, changed):
    before, _ = switched
    new = host.file(LINK).linked_to
    venvs = host.check_output("ls /opt/mlflow/venvs")
    back = run_playbook("mlflow.yml", "--limit", host.backend.get_hostname())
    assert back.returncode == 0, back.stdout[-3000:]
    assert host.file(LINK).linked_to == before
    assert host.check_output("ls /opt/mlflow/venvs") == venvs, "the rollback built no venv"
    assert host.run(f"{LINK}/bin/python -c 'import {EXTRA}'").rc != 0
    assert host.file(new).is_directory, "mlflow_venv_keep 2: the venv just left is kept"
    assert healthy(host)
    again = run_playbook("mlflow.yml", "--limit", host.backend.get_hostname())
    assert again.returncode == 0 and changed(again) == 0, again.stdout[-3000:]


def test_an_older_release_than_the_database_is_refused_before_anything_changes(host, run_playbook):
    """Migrations only go forward: preflight refuses a release older than the one that migrated the database."""
    major, minor, patch = (int(part) for part in VERSION.split("."))
    older = f"{major}.{minor}.{patch - 1}" if patch else f"{major}.{minor - 1}.0"
    pid = host.check_output("systemctl show -P MainPID mlflow.service")
    refused = run_playbook("mlflow.yml", "--limit", host.backend.get_hostname(), "-e", f"mlflow_version={older}")
    assert refused.returncode != 0
    assert f"The database was migrated by MLflow {VERSION}" in refused.stdout + refused.stderr, refused.stdout[-3000:]
    recap = refused.stdout.split("PLAY RECAP")[-1]
    assert "changed=0" in recap, recap
    assert host.check_output("systemctl show -P MainPID mlflow.service") == pid

