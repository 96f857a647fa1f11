"""Firewall sources, a certificate near its expiry and a bad input to site.yml: the firewall and nginx roles
and the whole-site preflight follow the inventory, and the run after is quiet. Their logic does not depend on the
distribution or the install method: once, on the first MLflow server of this scenario whose certificate is from the
deployment's CA; test_security.py checks every server's firewall and TLS as converged."""

import os
import re
import socket
import ssl
import time

import requests
from cryptography import x509
from testinfra.utils.ansible_runner import AnsibleRunner

# (the certificate test needs a server whose nginx serves the deployment CA's certificate: not an ACME host)
_RUNNER = AnsibleRunner.get_runner(os.environ["MOLECULE_INVENTORY_FILE"])
testinfra_hosts = ["ansible://" + [name for name in _RUNNER.get_hosts("mlflow_servers")
                                   if name not in _RUNNER.get_hosts("mlflowops_test_acme")][0]]


def test_narrowed_sources_remove_the_rules_they_replace(host, neighbour, reachable, run_playbook, changed):
    """Reconciliation: the role deletes the rules it made that the variables no longer ask for, nothing else."""
    target = host.backend.get_hostname()
    host.run_expect([0], "ufw allow 8081/tcp")  # made by hand: never touched
    try:
        narrowed = run_playbook("firewall.yml", "-e",
                                '{"firewall_web_sources": ["192.0.2.10"], "firewall_ssh_sources": ["192.0.2.0/24"]}',
                                limit=target)
        assert narrowed.returncode == 0, narrowed.stdout[-3000:]
        status = host.check_output("ufw status")
        assert re.search(r"^443/tcp\s+ALLOW\s+192\.0\.2\.10\s", status, re.M), status
        assert re.search(r"^22/tcp\s+ALLOW\s+192\.0\.2\.0/24\s", status, re.M), status
        assert not re.search(r"^(22|80|443)/tcp(\s+\(v6\))?\s+ALLOW\s+Anywhere", status, re.M), status
        assert re.search(r"^8081/tcp\s+ALLOW\s+Anywhere", status, re.M), status
        assert not reachable(neighbour, target, 443)
    finally:
        restored = run_playbook("firewall.yml", limit=target)
    assert restored.returncode == 0, restored.stdout[-3000:]
    status = host.check_output("ufw status")
    assert "192.0.2." not in status, status
    assert re.search(r"^8081/tcp\s+ALLOW\s+Anywhere", status, re.M), status
    assert reachable(neighbour, target, 443)
    again = run_playbook("firewall.yml", limit=target)
    assert again.returncode == 0 and changed(again) == 0, again.stdout[-3000:]
    host.run_expect([0], "ufw delete allow 8081/tcp")


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
        renewed = run_playbook("proxy.yml", limit=host.backend.get_hostname())
        assert renewed.returncode == 0 and changed(renewed) > 0, renewed.stdout[-3000:]
        assert served_after_reload(base, lambda days: days > 800) > 800
        assert requests.get(base + "/health", verify=ca_file, timeout=30).status_code == 200
    finally:
        if served_certificate_days_left(base) < 800:
            # leave the host as converged for the tests after this one
            run_playbook("proxy.yml", limit=host.backend.get_hostname())
    again = run_playbook("proxy.yml", limit=host.backend.get_hostname())
    assert again.returncode == 0 and changed(again) == 0, again.stdout[-3000:]


SNAPSHOT = "ufw status; stat -c '%n %a %Y' /etc/mlflow/mlflow.env /etc/mlflow/basic_auth.ini /etc/nginx/nginx.conf"


def test_a_bad_input_stops_the_site_before_any_host_changes(host, run_playbook, changed):
    """site.yml checks every role on every host first: an admin password too short (checked by the mlflow role,
    which runs after the firewall) fails the run before the narrowed firewall sources reach any host."""
    before = host.check_output(SNAPSHOT)
    result = run_playbook("site.yml", "-e",
                          '{"mlflow_auth_admin_password": "too-short", "firewall_web_sources": ["192.0.2.10"]}',
                          timeout=600)
    assert result.returncode != 0, result.stdout[-3000:]
    # Molecule's ansible.cfg (display_failed_stderr) sends a failed task's message to stderr
    assert "mlflow_auth_admin_password" in result.stdout + result.stderr, result.stdout[-3000:]
    assert "PLAY [Host firewall" not in result.stdout, result.stdout[-3000:]
    assert changed(result) == 0, result.stdout.split("PLAY RECAP")[-1]
    assert host.check_output(SNAPSHOT) == before
