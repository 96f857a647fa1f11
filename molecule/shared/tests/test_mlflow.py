"""The mlflow role's service contract on a converged host."""

import re

import pytest
from conftest import inventory_hosts, mlflow_address, mlflow_health

testinfra_hosts = ["ansible://mlflow_servers"]

ENV_FILE = "/etc/mlflow/mlflow.env"


@pytest.fixture(scope="module")
def method(host):
    return host.ansible.get_variables().get("mlflow_install_method", "venv")


def journal(host):
    return host.run("journalctl -u mlflow.service --no-pager -n 60").stdout


def test_service_running_and_enabled(host):
    service = host.service("mlflow")
    if not service.is_running:
        print(journal(host))
    assert service.is_running
    assert service.is_enabled


def test_health_answers(host):
    assert mlflow_health(host) == "OK"


def test_listens_on_loopback_or_the_private_address_only(host):
    """Loopback behind the host's own nginx; behind load balancers its private address (the firewall lets them in
    alone: the cluster scenario's test_balancer.py)."""
    listening = [s for s in host.socket.get_listening_sockets() if s.endswith(":5000")]
    if inventory_hosts("mlflow_proxy"):
        address = host.interface("eth0").addresses[0]
        assert listening == [f"tcp://{address}:5000"], listening
    else:
        assert listening == ["tcp://127.0.0.1:5000"], listening


def test_basic_auth_config_owner_mode_and_settings(host):
    # the admin password and Flask key are among the secrets test_no_secret_in_unit_show_or_cmdline looks for in the
    # unit, `systemctl show` and the process command lines
    config = host.file("/etc/mlflow/basic_auth.ini")
    assert (config.user, config.group, config.mode) == ("root", "mlflow", 0o640)
    assert config.contains("default_permission = NO_PERMISSIONS")
    assert config.contains("database_uri = postgresql")


def test_unit_runs_sandboxed_as_mlflow(host, method):
    props = host.service("mlflow").systemd_properties
    assert props["User"] == "mlflow"
    assert props["Group"] == "mlflow"
    assert props["NoNewPrivileges"] == "yes"
    assert props["ProtectSystem"] == "strict"
    assert props["PrivateTmp"] == "yes"
    capabilities = host.check_output("systemctl show mlflow.service -p CapabilityBoundingSet --value")
    assert capabilities == "", capabilities
    assert props["Restart"] == "always"
    if method == "venv":
        assert ENV_FILE in props["EnvironmentFiles"]
    else:
        # the docker client hands the file to the container; the unit itself carries no secrets
        assert f"--env-file {ENV_FILE}" in props["ExecStart"]


def test_a_killed_server_process_comes_back(host):
    """`mlflow server` exits 0 when its uvicorn process dies (an OOM kill, say): systemd must restart it anyway."""
    before = host.service("mlflow").systemd_properties
    address = mlflow_address(host)
    # the oldest uvicorn process is the one `mlflow server` started (in the container too, for docker)
    assert host.run("pkill -KILL --oldest --full 'python[0-9.]* -m uvicorn '").rc == 0
    result = host.run(
        f"for i in $(seq 90); do sleep 2; curl -fsS http://{address}/health && exit 0; done; exit 1")
    assert result.rc == 0, host.run("journalctl -u mlflow.service --no-pager -n 40").stdout
    after = host.service("mlflow").systemd_properties
    assert after["MainPID"] != before["MainPID"]
    assert int(after["NRestarts"]) > int(before["NRestarts"])


def test_exposure_score_at_most_2(host):
    out = host.check_output("systemd-analyze security mlflow.service --no-pager")
    score = float(re.search(r"Overall exposure level for mlflow\.service: ([0-9.]+)", out).group(1))
    print(f"exposure score: {score}")
    assert score <= 2.0, out[-2000:]


def test_env_file_owner_mode_and_content(host, variables):
    env = host.file(ENV_FILE)
    assert env.user == "root"
    assert env.group == "mlflow"
    assert env.mode == 0o640
    content = env.content_string
    assert re.search(r"^MLFLOW_BACKEND_STORE_URI=postgresql\+psycopg2://mlflow:", content, re.M)
    if "mlflow_azure_storage_connection_string" in variables:
        # Azure Blob Storage (the default scenario's Debian 13 server): the connection string holds the account key
        assert re.search(r"^MLFLOW_ARTIFACTS_DESTINATION=wasbs://mlflow-artifacts@", content, re.M)
        assert re.search(r"^AZURE_STORAGE_CONNECTION_STRING=\S*AccountKey=", content, re.M)
        return
    assert re.search(r"^MLFLOW_ARTIFACTS_DESTINATION=s3://mlflow-artifacts/", content, re.M)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL", "AWS_DEFAULT_REGION"):
        assert re.search(rf"^{name}=\S+", content, re.M), name


def test_user_cannot_log_in(host):
    user = host.user("mlflow")
    assert user.shell == "/usr/sbin/nologin"
    assert user.group == "mlflow"


def test_no_secret_in_unit_show_or_cmdline(host, secrets):
    places = {
        "unit file": host.file("/etc/systemd/system/mlflow.service").content_string,
        "systemctl show": host.check_output("systemctl show mlflow.service"),
        "process command lines": host.check_output(
            "for p in $(pgrep -u mlflow); do tr '\\0' ' ' < /proc/$p/cmdline; echo; done"
        ),
    }
    assert places["process command lines"].strip(), "no mlflow processes found"
    for where, text in places.items():
        for secret in secrets:
            assert secret not in text, f"a secret appears in the {where}"


def test_schema_migrated_for_this_version(host, method):
    version = host.ansible.get_variables().get("mlflow_version", "3.17.2")
    # "<version> <host>:<port>/<database>": the release that migrated the database, and which database that was
    marked, database = host.file("/var/lib/mlflow/.schema-version").content_string.split()
    assert marked == version
    assert re.fullmatch(r"[\w.-]+:5432/mlflow", database), database
    if method == "venv":
        python = "/opt/mlflow/venv/bin/python"
    else:
        image = host.check_output("docker inspect --format '{{.Config.Image}}' mlflow")
        python = f"docker run --rm --pull never --entrypoint python3 {image}"
    # the installed distribution's metadata (importing mlflow costs seconds of CPU; the role checks the import)
    installed = host.check_output(f"{python} -c \"from importlib.metadata import version; print(version('mlflow'))\"")
    assert installed == version
