"""Fixtures shared by the scenarios' testinfra tests: the host's inventory variables, the secrets no output
may show, and the way in through nginx's port published on the build host's 127.0.0.1 (with the
deployment's CA and admin login)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest


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
