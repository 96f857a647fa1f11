"""nginx_tls_mode acme on the Debian 13 server: its certificate comes from the ACME test CA (pebble, in the object
store's container) through the HTTP-01 challenge; clients that trust the CA's root (as browsers trust Let's
Encrypt's) verify it by name; certbot's timer renews it on the host, with no controller run, and nginx serves the
new one without a failed request."""

import socket
import ssl
import threading
import time
from urllib.parse import urlparse

import requests
from cryptography import x509

testinfra_hosts = ["ansible://mlflowops_test_acme"]

LIVE = "/etc/letsencrypt/live/mlflowops"
RENEWAL = "/etc/letsencrypt/renewal/mlflowops.conf"


def served(base, ca_file):
    """The certificate nginx serves, verified against the ACME CA's root by the host's name."""
    name, port = urlparse(base).hostname, urlparse(base).port
    context = ssl.create_default_context(cafile=ca_file)
    with socket.create_connection((name, port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=name) as tls:
            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


def test_certificate_from_the_acme_ca(host, base, ca_file, evidence):
    certificate = served(base, ca_file)
    issuer = certificate.issuer.rfc4514_string()
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    evidence(f"acme-certificate-{host.backend.get_hostname()}",
             {"issuer": issuer, "names": names.get_values_for_type(x509.DNSName),
              "not_after": certificate.not_valid_after_utc.isoformat()})
    assert "Pebble" in issuer, issuer
    assert host.file(f"{LIVE}/fullchain.pem").exists
    config = host.check_output("nginx -T 2>/dev/null")
    assert f"ssl_certificate {LIVE}/fullchain.pem;" in config
    assert "location ^~ /.well-known/acme-challenge/" in config
    timer = host.service("certbot.timer")
    assert timer.is_enabled and timer.is_running
    assert host.file("/etc/letsencrypt/renewal-hooks/deploy/mlflowops-nginx-reload").mode == 0o755
    # the API through it, logged in
    response = requests.get(base + "/api/2.0/mlflow/experiments/search", params={"max_results": 1},
                            auth=("admin", host.ansible.get_variables()["vault_mlflow_admin_password"]),
                            verify=ca_file, timeout=30)
    assert response.status_code == 200, response.text


def test_timer_renews_on_the_host_without_a_failed_request(host, base, ca_file, evidence):
    """certbot.service (what the timer starts) run by hand, with the renewal made due: a new certificate, nginx
    reloaded by the deploy hook, and no request of a client polling meanwhile fails."""
    before = served(base, ca_file).serial_number
    results = []
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            try:
                ok = requests.get(base + "/health", verify=ca_file, timeout=10).status_code == 200
            except requests.RequestException:
                ok = False
            results.append(ok)
            time.sleep(0.05)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        # due now: pebble's certificates live for years, certbot renews within renew_before_expiry of the end
        host.run_expect([0], f"sed -i '1i renew_before_expiry = 3650 days' {RENEWAL}")
        started = time.monotonic()
        host.run_expect([0], "systemctl start certbot.service")
        deadline = time.monotonic() + 60
        after = before
        while after == before and time.monotonic() < deadline:
            time.sleep(0.5)
            after = served(base, ca_file).serial_number
        took = time.monotonic() - started
        time.sleep(2)
    finally:
        stop.set()
        poller.join()
        host.run(f"sed -i '/^renew_before_expiry = 3650 days$/d' {RENEWAL}")
    journal = host.check_output("journalctl -u certbot.service --no-pager -n 20")
    evidence(f"acme-renewal-{host.backend.get_hostname()}",
             {"seconds": round(took, 1), "serial_before": f"{before:x}", "serial_after": f"{after:x}",
              "requests": len(results), "failed": results.count(False)})
    assert after != before, journal
    assert results and all(results), f"{results.count(False)} of {len(results)} requests failed"
