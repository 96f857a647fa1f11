"""The drift report of playbooks/reconcile.yml: three changes made by hand on converged hosts (nginx's config and
the firewall of the load balancer, the env file of an MLflow server) are reported, exactly those and no secret;
--check exits 2 while they stand; the apply switch converges; the next report is clean (exit 0). It runs in the
cluster scenario only (three whole-site runs, limited to those two hosts)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

testinfra_hosts = ["ansible://mlflowops-docker"]

REPO = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
NGINX_CONF = "/etc/nginx/nginx.conf"
ENV_FILE = "/etc/mlflow/mlflow.env"


def reconcile(hosts, report, *extra):
    playbook = Path(sys.executable).parent / "ansible-playbook"
    env = dict(os.environ, ANSIBLE_CALLBACKS_ENABLED="mlflowops.tracking.drift_report",
               MLFLOWOPS_DRIFT_REPORT=str(report))
    result = subprocess.run(
        [str(playbook), "-i", os.environ["MOLECULE_INVENTORY_FILE"], str(REPO / "playbooks" / "reconcile.yml"),
         "--limit", ",".join(hosts), *extra],
        capture_output=True, text=True, check=False, timeout=900, env=env,
    )
    return result, json.loads(report.read_text())


def delete_http_rule(host):
    """Delete the IPv4 rule that opens port 80, by number (as an operator tidying ufw by hand would)."""
    numbered = host.check_output("ufw status numbered")
    number = re.search(r"^\[\s*(\d+)\]\s+80/tcp\s+ALLOW IN\s+Anywhere\s", numbered, re.M)
    assert number, numbered
    host.run_expect([0], f"ufw --force delete {number.group(1)}")


def test_the_drift_report_names_three_hand_changes_and_apply_clears_them(host, other_host, variables, secrets,
                                                                         tmp_path):
    name = host.backend.get_hostname()
    balancer_name = variables["groups"]["mlflow_proxy"][0]
    balancer = other_host(balancer_name)
    hosts = [name, balancer_name]
    balancer.run_expect([0], f"sed -i 's/^    server_tokens off;$/    server_tokens on;/' {NGINX_CONF}")
    assert balancer.file(NGINX_CONF).contains("server_tokens on;")
    host.run_expect([0], f"chmod 0644 {ENV_FILE}")
    delete_http_rule(balancer)
    try:
        drifted, report = reconcile(hosts, tmp_path / "drift.json", "--check", "--diff")
        assert drifted.returncode == 2, drifted.stdout[-3000:]
        assert report["check_mode"] is True and report["drift"] == 3, json.dumps(report, indent=1)
        assert sorted(report["hosts"]) == sorted(hosts), json.dumps(report, indent=1)
        changes = report["hosts"][name]["changes"] + report["hosts"][balancer_name]["changes"]
        assert sorted(change["role"] for change in changes) == ["firewall", "mlflow", "nginx"], changes
        by_role = {change["role"]: change for change in changes}
        assert by_role["nginx"]["resource"] == NGINX_CONF
        assert "server_tokens on;" in json.dumps(by_role["nginx"]["diff"])
        assert by_role["mlflow"]["resource"] == ENV_FILE
        assert by_role["mlflow"]["diff"] == "hidden (no_log)"
        assert "80" in by_role["firewall"]["resource"], by_role["firewall"]
        text = (tmp_path / "drift.json").read_text() + drifted.stdout + drifted.stderr
        for secret in secrets:
            assert secret not in text, "a secret appears in the drift report or its run"
    finally:
        applied, report = reconcile(hosts, tmp_path / "applied.json", "-e", "reconcile_apply=true")
    assert applied.returncode == 0, applied.stdout[-3000:]
    assert report["check_mode"] is False and report["drift"] == 3, json.dumps(report, indent=1)
    # the env file's mode restarted the server: behind the load balancer, by the rolling restart's steps, which the
    # report lists with the handlers
    # (task names as Ansible shows them: "mlflow : Restart MLflow, <host>")
    followed = [entry["task"].split(" : ")[-1] for entry in report["hosts"][name]["handlers"]]
    assert f"Restart MLflow, {name}" in followed, json.dumps(report, indent=1)
    clean, report = reconcile(hosts, tmp_path / "clean.json", "--check", "--diff")
    assert clean.returncode == 0, clean.stdout[-3000:]
    assert report["drift"] == 0 and report["hosts"] == {}, json.dumps(report, indent=1)
    assert host.file(ENV_FILE).mode == 0o640
    assert balancer.file(NGINX_CONF).contains("server_tokens off;")
    assert re.search(r"^80/tcp\s+ALLOW\s+Anywhere\s", balancer.check_output("ufw status"), re.M)


def test_reconcile_refuses_to_converge_without_the_apply_switch(host, tmp_path):
    result, report = reconcile([host.backend.get_hostname()], tmp_path / "refused.json")
    assert result.returncode != 0, result.stdout[-3000:]
    assert "reconcile_apply" in result.stdout + result.stderr, result.stdout[-3000:]
    assert report["hosts"] == {}
