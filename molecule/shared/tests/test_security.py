"""Authentication, TLS and the firewall of every MLflow server, seen from the build host and from a second
container. The changes a later run must follow (users, grants, the admin password, firewall sources, certificates)
are tested once per scenario: test_auth_changes.py and the default scenario's test_site_changes.py."""

import socket
import ssl

import pytest
import requests

testinfra_hosts = ["ansible://mlflow_servers"]

API = "/api/2.0/mlflow"


def users(variables):
    return {u["name"]: (u["name"], u["password"]) for u in variables["mlflow_auth_users"]}


def get(base, ca_file, path, auth=None, **params):
    return requests.get(base + API + path, params=params, auth=auth, verify=ca_file, timeout=30)


def post(base, ca_file, path, body, auth):
    return requests.post(base + API + path, json=body, auth=auth, verify=ca_file, timeout=30)


def test_unauthenticated_request_is_refused(base, ca_file):
    assert get(base, ca_file, "/experiments/search", max_results=1).status_code == 401


def test_wrong_password_is_refused(base, ca_file):
    response = get(base, ca_file, "/experiments/search", auth=("admin", "not-the-password-at-all"), max_results=1)
    assert response.status_code == 401


def test_admin_is_accepted(base, ca_file, admin):
    assert get(base, ca_file, "/experiments/search", auth=admin, max_results=1).status_code == 200


def test_reader_can_read_but_not_write(base, ca_file, variables):
    reader = users(variables)["reader"]
    found = get(base, ca_file, "/experiments/get-by-name", auth=reader, experiment_name="shared-experiment")
    assert found.status_code == 200, found.text
    experiment_id = found.json()["experiment"]["experiment_id"]
    created = post(base, ca_file, "/runs/create", {"experiment_id": experiment_id}, reader)
    assert created.status_code == 403, created.text


def test_user_without_permission_cannot_see_others_experiment(base, ca_file, variables, admin, host):
    name = f"private-{host.backend.get_hostname()}"
    existing = get(base, ca_file, "/experiments/get-by-name", auth=admin, experiment_name=name)
    if existing.status_code == 200:
        experiment_id = existing.json()["experiment"]["experiment_id"]
    else:
        experiment_id = post(base, ca_file, "/experiments/create", {"name": name}, admin).json()["experiment_id"]
    outsider = users(variables)["outsider"]
    assert get(base, ca_file, "/experiments/get", auth=outsider, experiment_id=experiment_id).status_code == 403
    listed = get(base, ca_file, "/experiments/search", auth=outsider, max_results=100)
    assert listed.status_code == 200
    assert name not in {e["name"] for e in listed.json().get("experiments", [])}


@pytest.mark.parametrize("version,accepted", [
    (ssl.TLSVersion.TLSv1_1, False),
    (ssl.TLSVersion.TLSv1_2, True),
    (ssl.TLSVersion.TLSv1_3, True),
])
def test_only_tls_1_2_and_1_3(base, ca_file, version, accepted):
    port = int(base.rsplit(":", 1)[1])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(ca_file)
    context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    if version < ssl.TLSVersion.TLSv1_2:
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.minimum_version = version
    context.maximum_version = version
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                negotiated = tls.version()
    except (ssl.SSLError, ConnectionResetError):
        negotiated = None
    assert (negotiated is not None) is accepted, negotiated


def test_hsts_and_no_server_version(base, ca_file):
    response = requests.get(base + "/health", verify=ca_file, timeout=30)
    assert response.status_code == 200
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")
    assert response.headers.get("Server") == "nginx"


def test_http_redirects_to_https(host, variables):
    port = variables["mlflowops_test_published_ports"][host.backend.get_hostname()]["http"]
    response = requests.get(f"http://127.0.0.1:{port}/health", allow_redirects=False, timeout=30)
    assert response.status_code == 301
    assert response.headers["Location"].startswith("https://")


def test_ufw_denies_incoming_by_default(host):
    status = host.check_output("ufw status verbose")
    assert "Status: active" in status
    assert "deny (incoming)" in status


def test_second_host_reaches_https_only(host, neighbour, reachable):
    target = host.backend.get_hostname()
    assert reachable(neighbour, target, 443)
    assert not reachable(neighbour, target, 5000)
    assert not reachable(neighbour, target, 5432)
    assert not reachable(neighbour, target, 8080)


def test_no_secret_in_verbose_converge_output(check_converge, secrets):
    """The converge again (check + diff, -v: diffs are where a secret would show first)."""
    assert check_converge.returncode == 0, check_converge.stdout[-3000:]
    output = check_converge.stdout + check_converge.stderr
    for secret in secrets:
        assert secret not in output, "a secret appears in the converge output"


def test_basic_auth_config_owner_mode_and_settings(host):
    # the admin password and Flask key are among the secrets test_mlflow.py looks for in the unit,
    # `systemctl show` and the process command lines
    config = host.file("/etc/mlflow/basic_auth.ini")
    assert (config.user, config.group, config.mode) == ("root", "mlflow", 0o640)
    assert config.contains("default_permission = NO_PERMISSIONS")
    assert config.contains("database_uri = postgresql")


def test_nginx_effective_protocols(host):
    config = host.check_output("nginx -T 2>/dev/null")
    protocols = {line.strip() for line in config.splitlines() if line.strip().startswith("ssl_protocols")}
    assert protocols == {"ssl_protocols TLSv1.2 TLSv1.3;"}, protocols
    assert "server_tokens off;" in config
