"""Authentication, TLS and the firewall, seen from the build host and from a second container."""

import json
import os
import re
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from cryptography import x509

testinfra_hosts = ["ansible://mlflow_servers"]

SCENARIO = Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"])
REPO = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
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


@pytest.fixture(scope="module")
def neighbour(host, variables):
    """The object-store container: another machine on the scenario's network."""
    name = variables["groups"]["object_store"][0]
    return host.get_host(f"ansible://{name}?ansible_inventory=" + os.environ["MOLECULE_INVENTORY_FILE"])


def reachable(neighbour, target, port):
    return neighbour.run(f"timeout 5 bash -c '</dev/tcp/{target}/{port}'").rc == 0


def test_second_host_reaches_https_only(host, neighbour):
    target = host.backend.get_hostname()
    assert reachable(neighbour, target, 443)
    assert not reachable(neighbour, target, 5000)
    assert not reachable(neighbour, target, 5432)
    assert not reachable(neighbour, target, 8080)


def test_narrowed_sources_remove_the_rules_they_replace(host, neighbour, run_playbook, changed):
    """Reconciliation: the role deletes the rules it made that the variables no longer ask for, nothing else."""
    target = host.backend.get_hostname()
    host.run_expect([0], "ufw allow 8081/tcp")  # made by hand: never touched
    try:
        narrowed = run_playbook("firewall.yml", "--limit", host.backend.get_hostname(), "-e",
                                '{"firewall_web_sources": ["192.0.2.10"], "firewall_ssh_sources": ["192.0.2.0/24"]}')
        assert narrowed.returncode == 0, narrowed.stdout[-3000:]
        status = host.check_output("ufw status")
        assert re.search(r"^443/tcp\s+ALLOW\s+192\.0\.2\.10\s", status, re.M), status
        assert re.search(r"^22/tcp\s+ALLOW\s+192\.0\.2\.0/24\s", status, re.M), status
        assert not re.search(r"^(22|80|443)/tcp(\s+\(v6\))?\s+ALLOW\s+Anywhere", status, re.M), status
        assert re.search(r"^8081/tcp\s+ALLOW\s+Anywhere", status, re.M), status
        assert not reachable(neighbour, target, 443)
    finally:
        restored = run_playbook("firewall.yml", "--limit", host.backend.get_hostname())
    assert restored.returncode == 0, restored.stdout[-3000:]
    status = host.check_output("ufw status")
    assert "192.0.2." not in status, status
    assert re.search(r"^8081/tcp\s+ALLOW\s+Anywhere", status, re.M), status
    assert reachable(neighbour, target, 443)
    again = run_playbook("firewall.yml", "--limit", host.backend.get_hostname())
    assert again.returncode == 0 and changed(again) == 0, again.stdout[-3000:]
    host.run_expect([0], "ufw delete allow 8081/tcp")


def permission(base, ca_file, admin, username, experiment_id):
    response = requests.get(base + "/api/3.0/mlflow/users/permissions/get", auth=admin, verify=ca_file, timeout=30,
                            params={"username": username, "resource_type": "experiment",
                                    "resource_id": experiment_id})
    return response.json().get("permission") if response.status_code == 200 else response.status_code


def test_dropped_grants_and_users_are_removed_and_nothing_else(host, base, ca_file, variables, admin, run_playbook,
                                                               changed):
    """mlflow_auth_exclusive: the role revokes the grants and deletes the users it recorded once they leave
    the inventory; MLflow's own creator grants and users made through the API stay."""
    reader, outsider = users(variables)["reader"], users(variables)["outsider"]
    handmade = (f"handmade-{host.backend.get_hostname()}", "handmade-password-1b2c")
    made = post(base, ca_file, "/users/create", {"username": handmade[0], "password": handmade[1]}, admin)
    assert made.status_code == 200, made.text
    own = post(base, ca_file, "/experiments/create", {"name": f"reader-own-{host.backend.get_hostname()}"}, reader)
    assert own.status_code == 200, own.text
    own_id = own.json()["experiment_id"]
    shared = get(base, ca_file, "/experiments/get-by-name", auth=admin, experiment_name="shared-experiment")
    shared_id = shared.json()["experiment"]["experiment_id"]
    assert permission(base, ca_file, admin, reader[0], shared_id) == "READ"
    try:
        narrowed = run_playbook("mlflow.yml", "--limit", host.backend.get_hostname(), "--tags", "mlflow_run", "-e",
                            '{"mlflow_auth_users": [{"name": "%s", "password": "%s"}]}' % reader)
        assert narrowed.returncode == 0, narrowed.stdout[-3000:]
        assert get(base, ca_file, "/experiments/get", auth=reader, experiment_id=shared_id).status_code == 403
        assert get(base, ca_file, "/experiments/search", auth=outsider, max_results=1).status_code == 401
        assert permission(base, ca_file, admin, reader[0], own_id) == "MANAGE"
        assert get(base, ca_file, "/users/get", auth=admin, username=handmade[0]).status_code == 200
        assert get(base, ca_file, "/experiments/search", auth=handmade, max_results=1).status_code == 200
    finally:
        restored = run_playbook("mlflow.yml", "--limit", host.backend.get_hostname(), "--tags", "mlflow_run")
        requests.delete(base + API + "/users/delete", json={"username": handmade[0]}, auth=admin, verify=ca_file,
                        timeout=30)
        post(base, ca_file, "/experiments/delete", {"experiment_id": own_id}, admin)
    assert restored.returncode == 0, restored.stdout[-3000:]
    assert get(base, ca_file, "/experiments/get", auth=reader, experiment_id=shared_id).status_code == 200
    assert get(base, ca_file, "/experiments/search", auth=outsider, max_results=1).status_code == 200
    again = run_playbook("mlflow.yml", "--limit", host.backend.get_hostname(), "--tags", "mlflow_run")
    assert again.returncode == 0 and changed(again) == 0, again.stdout[-3000:]


def test_an_interrupted_admin_rotation_is_finished_by_the_next_run(host, base, ca_file, admin, run_playbook, changed):
    """A run killed after basic_auth.ini got the new admin password (here: mlflow_configure alone) but before
    the API step: check mode reports the pending rotation, the next run finishes it."""
    new = (admin[0], admin[1] + "-rotated")
    extra = json.dumps({"vault_mlflow_admin_password": new[1]})
    try:
        half = run_playbook("mlflow.yml", "--limit", host.backend.get_hostname(), "--tags", "mlflow_configure", "-e", extra)
        assert half.returncode == 0, half.stdout[-3000:]
        pending = run_playbook("mlflow.yml", "--limit", host.backend.get_hostname(), "--check", "--tags", "mlflow_configure,mlflow_run", "-e", extra)
        assert pending.returncode == 0 and changed(pending) > 0, pending.stdout[-3000:]
        assert host.file("/etc/mlflow/admin-password.previous").mode == 0o600
        finished = run_playbook("mlflow.yml", "--limit", host.backend.get_hostname(), "--tags", "mlflow_configure,mlflow_run", "-e", extra)
        assert finished.returncode == 0, finished.stdout[-3000:]
        assert get(base, ca_file, "/experiments/search", auth=new, max_results=1).status_code == 200
        assert get(base, ca_file, "/experiments/search", auth=admin, max_results=1).status_code == 401
        assert not host.file("/etc/mlflow/admin-password.previous").exists
    finally:
        restored = run_playbook("mlflow.yml", "--limit", host.backend.get_hostname(), "--tags", "mlflow_configure,mlflow_run")
    assert restored.returncode == 0, restored.stdout[-3000:]
    assert get(base, ca_file, "/experiments/search", auth=admin, max_results=1).status_code == 200
    assert get(base, ca_file, "/experiments/search", auth=new, max_results=1).status_code == 401


def served_certificate_days_left(base):
    """Days until the certificate nginx serves expires, read over a real TLS handshake (without verifying it: the
    renewal test has nginx serve a certificate of its own for a while)."""
    port = int(base.rsplit(":", 1)[1])
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            served = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
    return (served.not_valid_after_utc.timestamp() - time.time()) / 86400


def served_after_reload(base, wanted):
    """Days left of the served certificate once `wanted(days)` holds: a reload hands over to new nginx workers
    within moments, and the old ones finish their connections first. Gives up after 30 s."""
    for _ in range(30):
        days = served_certificate_days_left(base)
        if wanted(days):
            break
        time.sleep(1)
    return days


def test_a_certificate_near_its_expiry_is_renewed(host, other_host, variables, base, ca_file, run_playbook, changed):
    """A server certificate the deployment's CA signed for the same key, names and extensions, but valid for 2 more
    days only (so nothing but its expiry differs from what the role would sign), is inside the 30-day renewal
    window: the next run has the CA sign a new one for nginx_tls_selfsigned_days, nginx serves it (clients verify it
    against the CA), the run after is quiet."""
    tls = "/etc/nginx/tls"
    ca = other_host(variables["groups"]["mlflow_servers"][0])  # mlflowops_ca_host by default
    request = host.check_output(f"openssl x509 -x509toreq -copy_extensions copyall -in {tls}/server.crt "
                                f"-signkey {tls}/server.key | base64 -w0")
    ca.run_expect([0], f"echo {request} | base64 -d > /tmp/short.csr && openssl x509 -req -in /tmp/short.csr "
                       "-copy_extensions copyall -CA /etc/mlflowops/ca/ca.crt -CAkey /etc/mlflowops/ca/ca.key "
                       "-days 2 -out /tmp/short.crt")
    short = ca.check_output("base64 -w0 /tmp/short.crt && rm -f /tmp/short.csr /tmp/short.crt")
    try:
        host.run_expect([0], f"echo {short} | base64 -d > {tls}/server.crt && systemctl reload nginx")
        assert served_after_reload(base, lambda days: days < 3) < 3
        renewed = run_playbook("proxy.yml", "--limit", host.backend.get_hostname())
        assert renewed.returncode == 0 and changed(renewed) > 0, renewed.stdout[-3000:]
        assert served_after_reload(base, lambda days: days > 800) > 800
        assert requests.get(base + "/health", verify=ca_file, timeout=30).status_code == 200
    finally:
        if served_certificate_days_left(base) < 800:
            # leave the host as converged for the tests after this one
            run_playbook("proxy.yml", "--limit", host.backend.get_hostname())
    again = run_playbook("proxy.yml", "--limit", host.backend.get_hostname())
    assert again.returncode == 0 and changed(again) == 0, again.stdout[-3000:]


SNAPSHOT = "ufw status; stat -c '%n %a %Y' /etc/mlflow/mlflow.env /etc/mlflow/basic_auth.ini /etc/nginx/nginx.conf"


def test_a_bad_input_stops_the_site_before_any_host_changes(host):
    """site.yml checks every role on every host first: an admin password too short (checked by the mlflow role,
    which runs after the firewall) fails the run before the narrowed firewall sources reach any host."""
    before = host.check_output(SNAPSHOT)
    playbook = Path(sys.executable).parent / "ansible-playbook"
    result = subprocess.run(
        [str(playbook), "-i", os.environ["MOLECULE_INVENTORY_FILE"], str(REPO / "playbooks" / "site.yml"),
         "-e", '{"mlflow_auth_admin_password": "too-short", "firewall_web_sources": ["192.0.2.10"]}'],
        capture_output=True, text=True, check=False, timeout=600,
    )
    assert result.returncode != 0, result.stdout[-3000:]
    # Molecule's ansible.cfg (display_failed_stderr) sends a failed task's message to stderr
    assert "mlflow_auth_admin_password" in result.stdout + result.stderr, result.stdout[-3000:]
    assert "PLAY [Host firewall" not in result.stdout, result.stdout[-3000:]
    recap = result.stdout.split("PLAY RECAP")[-1]
    assert re.findall(r"changed=(\d+)", recap) and set(re.findall(r"changed=(\d+)", recap)) == {"0"}, recap
    assert host.check_output(SNAPSHOT) == before


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
