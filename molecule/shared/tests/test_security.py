"""Authentication, TLS and the firewall of every way in (each MLflow host's nginx, or the load balancers), seen
from the build host and from a second container. The changes a later run must follow (users, grants, the admin
password, firewall sources, certificates) are tested once: the default scenario's test_auth_changes.py and
test_site_changes.py."""

import socket
import ssl
from urllib.parse import urlparse

import pytest
import requests
from conftest import front_hosts, get, post, users

testinfra_hosts = front_hosts()


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
def test_only_tls_1_2_and_1_3(base, ca_file, variables, version, accepted):
    if version == ssl.TLSVersion.TLSv1_2 and variables.get("nginx_tls_profile") == "modern":
        accepted = False  # the modern profile: TLS 1.3 only
    name, port = urlparse(base).hostname, urlparse(base).port
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(ca_file)
    context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    if version < ssl.TLSVersion.TLSv1_2:
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.minimum_version = version
    context.maximum_version = version
    try:
        with socket.create_connection((name, port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname=name) as tls:
                negotiated = tls.version()
    except (ssl.SSLError, ConnectionResetError):
        negotiated = None
    assert (negotiated is not None) is accepted, negotiated


def test_hsts_as_the_inventory_asks_and_no_server_version(base, ca_file, variables):
    """nginx_hsts: auto sends HSTS with a provided certificate only (browsers would otherwise forbid clicking
    through the unknown-CA warning); the default scenario sets true, the cluster scenario keeps auto."""
    hsts = variables.get("nginx_hsts", "auto")
    wanted = hsts if isinstance(hsts, bool) else variables.get("nginx_tls_mode", "selfsigned") != "selfsigned"
    response = requests.get(base + "/health", verify=ca_file, timeout=30)
    assert response.status_code == 200
    assert ("Strict-Transport-Security" in response.headers) is wanted, response.headers
    if wanted:
        assert response.headers["Strict-Transport-Security"].startswith("max-age=")
    assert response.headers.get("Server") == "nginx"


# Mozilla's intermediate profile, version 6: the TLS 1.2 suites with ECDHE and AEAD
INTERMEDIATE_TLS12 = {
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
}


def accepts_tls12_suite(name, port, ca_file, suite):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.set_ciphers(f"{suite}:@SECLEVEL=0")
    except ssl.SSLError:
        return False
    try:
        with socket.create_connection((name, port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname=name) as tls:
                return tls.cipher()[0] == suite
    except (ssl.SSLError, ConnectionResetError):
        return False


def test_cipher_scan_finds_only_the_profiles_suites(host, base, ca_file, variables, evidence):
    """Every suite before TLS 1.3 this build host's OpenSSL knows, offered alone in a TLS 1.2 handshake: nginx accepts only the profile's (the
    ECDSA ones: the deployment's CA issues ECDSA certificates, and certbot asks for ECDSA ones); TLS 1.3 is
    OpenSSL's AEAD suites."""
    name, port = urlparse(base).hostname, urlparse(base).port
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.set_ciphers("ALL:COMPLEMENTOFALL:@SECLEVEL=0")
    # (OpenSSL labels a suite with the version that introduced it: the CBC-SHA1 ones say SSLv3 or TLSv1.0)
    known = sorted({c["name"] for c in context.get_ciphers() if c["protocol"] != "TLSv1.3"})
    accepted = {suite for suite in known if accepts_tls12_suite(name, port, ca_file, suite)}
    assert len(known) > 30, known
    if variables.get("nginx_tls_profile", "intermediate") == "modern":
        assert accepted == set()
    else:
        assert accepted == {s for s in INTERMEDIATE_TLS12 if s.startswith("ECDHE-ECDSA-")}
    with socket.create_connection((name, port), timeout=10) as raw:
        tls13 = ssl.create_default_context(cafile=ca_file)
        tls13.minimum_version = ssl.TLSVersion.TLSv1_3
        with tls13.wrap_socket(raw, server_hostname=name) as tls:
            suite = tls.cipher()[0]
    evidence(f"cipher-scan-{host.backend.get_hostname()}",
             {"tls12_offered": len(known), "tls12_accepted": sorted(accepted), "tls13_negotiated": suite})
    assert suite in {"TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256", "TLS_CHACHA20_POLY1305_SHA256"}, suite


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


def test_nginx_effective_protocols(host, variables):
    config = host.check_output("nginx -T 2>/dev/null")
    protocols = {line.strip() for line in config.splitlines() if line.strip().startswith("ssl_protocols")}
    modern = variables.get("nginx_tls_profile", "intermediate") == "modern"
    assert protocols == {"ssl_protocols TLSv1.3;" if modern else "ssl_protocols TLSv1.2 TLSv1.3;"}, protocols
    assert "server_tokens off;" in config
