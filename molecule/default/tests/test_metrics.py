"""Prometheus metrics (mlflow_prometheus_enabled): the allowed scraper (the build host, nginx_metrics_sources) reads
MLflow's counters without a login and sees them grow; any other address gets 403."""

import requests

testinfra_hosts = ["ansible://mlflow_servers"]


def request_total(text):
    """Sum of MLflow's request counter over every label set of the exporter's page."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("mlflow_http_request_total{"))


def test_metrics_for_the_allowed_scraper_only(host, neighbour, base, ca_file, admin, evidence):
    before = requests.get(base + "/metrics", verify=ca_file, timeout=30)
    assert before.status_code == 200, before.text[:500]
    for _ in range(3):
        assert requests.get(base + "/api/2.0/mlflow/experiments/search", params={"max_results": 1}, auth=admin,
                            verify=ca_file, timeout=30).status_code == 200
    after = requests.get(base + "/metrics", verify=ca_file, timeout=30)
    assert after.status_code == 200
    series = sorted({line.split("{", 1)[0].split(" ", 1)[0] for line in after.text.splitlines()
                     if line.startswith("mlflow_")})
    evidence(f"metrics-{host.backend.get_hostname()}",
             {"series": series, "mlflow_http_request_total": [request_total(before.text), request_total(after.text)]})
    assert request_total(after.text) >= request_total(before.text) + 3, after.text[:2000]
    # no login needed there, and nothing else opens without one
    assert requests.get(base + "/api/2.0/mlflow/experiments/search", verify=ca_file, timeout=30).status_code == 401
    # any other address: 403 (the object store's container, on the scenario network)
    other = neighbour.run("curl -sk -o /dev/null -w '%{http_code}' --max-time 5 "
                          f"'https://{host.backend.get_hostname()}/metrics'")
    assert other.stdout.strip() == "403", other.stdout
