"""Fixtures shared by the scenarios' testinfra tests: the host's inventory variables, the secrets no output
may show, and the way in through nginx's port published on the build host's 127.0.0.1 (with the
deployment's CA and admin login)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def other_host(host):
    """Another host of the scenario's inventory, by name (testinfra's host of it)."""
    def get(name):
        return host.get_host(f"ansible://{name}?ansible_inventory=" + os.environ["MOLECULE_INVENTORY_FILE"])
    return get


@pytest.fixture(scope="module")
def neighbour(other_host, variables):
    """The object-store container: another machine on the scenario's network, outside the MLflow tiers."""
    return other_host(variables["groups"]["object_store"][0])


@pytest.fixture(scope="session")
def reachable():
    """Whether `from_host` (a testinfra host) opens a TCP connection to `target`:`port` within 5 s."""
    def connect(from_host, target, port):
        return from_host.run(f"timeout 5 bash -c '</dev/tcp/{target}/{port}'").rc == 0
    return connect


@pytest.fixture(scope="module")
def variables(host):
    return host.ansible.get_variables()


@pytest.fixture(scope="module")
def secrets(host, variables):
    """Every secret of a deployment with authentication: database, bucket, admin, Flask key, users."""
    flask_key = host.file("/etc/mlflow/flask-secret-key").content_string.strip()
    return [
        variables["vault_mlflow_db_password"], variables["vault_mlflow_admin_password"],
        variables["mlflow_s3_secret_access_key"], flask_key,
    ] + [user["password"] for user in variables["mlflow_auth_users"]]


@pytest.fixture(scope="module")
def base(variables, host):
    port = variables["mlflowops_test_published_ports"][host.backend.get_hostname()]["https"]
    return f"https://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def ca_file(host, tmp_path_factory):
    path = tmp_path_factory.mktemp("ca") / "ca.crt"
    path.write_text(host.file("/etc/nginx/tls/ca.crt").content_string)
    return str(path)


@pytest.fixture(scope="module")
def admin(variables):
    return ("admin", variables["vault_mlflow_admin_password"])


@pytest.fixture(scope="session")
def check_converge():
    """The scenario's converge run again in check + diff mode with -v, on the converged hosts (after idempotence):
    test_check_mode.py wants no change reported, test_security.py no secret in its output."""
    playbook = Path(sys.executable).parent / "ansible-playbook"
    return subprocess.run(
        [str(playbook), "-v", "--check", "--diff", "-i", os.environ["MOLECULE_INVENTORY_FILE"],
         str(Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"]) / "converge.yml")],
        capture_output=True, text=True, check=False, timeout=900,
    )


def _run_playbook(playbook, *extra, limit=None, inventory=None, timeout=900, env=None):
    """ansible-playbook of the controller venv: a playbook of playbooks/ by name (or any path), on the scenario's
    inventory unless another is given, limited to `limit` (a host name) when set."""
    command = Path(sys.executable).parent / "ansible-playbook"
    path = Path(playbook) if "/" in str(playbook) else Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]) / "playbooks" / playbook
    argv = [str(command), "-i", str(inventory or os.environ["MOLECULE_INVENTORY_FILE"]), str(path), *extra]
    if limit:
        argv += ["--limit", limit]
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout,
                          env=dict(os.environ, **(env or {})))


def _changed(result, name=None):
    """changed= of the run's recap: of host `name`, else the sum over its hosts."""
    # Molecule may force colours: the recap then wraps names and counts in escape sequences
    recap = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout.split("PLAY RECAP")[-1])
    pattern = re.escape(name) if name else r"\S+"
    counts = re.findall(r"^" + pattern + r"\s+:.*?changed=(\d+)", recap, re.M)
    assert counts, result.stdout[-3000:] + result.stderr[-2000:]
    return sum(int(count) for count in counts)


@pytest.fixture(scope="session")
def run_playbook():
    """Runs a playbook as an operator would (see _run_playbook); returns the CompletedProcess."""
    return _run_playbook


@pytest.fixture(scope="session")
def changed():
    """The number of changes a run's recap reports (see _changed)."""
    return _changed
