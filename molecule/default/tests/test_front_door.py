"""A password guesser is banned (fail2ban on nginx's access log) while another address still logs in. The jail is
the same on every install method and distribution: tested once, on the first MLflow server of this scenario
(test_metrics.py checks every server's /metrics)."""

import re
import time

import requests
from conftest import first_server

testinfra_hosts = first_server()
JAIL = "mlflowops-nginx-auth"


def banned(host):
    status = host.run(f"fail2ban-client status {JAIL}")
    assert status.rc == 0, status.stderr
    found = re.search(r"Banned IP list:\s*(.*)$", status.stdout, re.M)
    return set(found.group(1).split()) if found else set()


def status_codes(from_host, url, count, user, password_prefix):
    """`count` requests from `from_host` with a wrong password each; the HTTP status of each (000: refused)."""
    loop = (f"for i in $(seq {count}); do curl -sk -o /dev/null -w '%{{http_code}}\\n' --max-time 3 "
            f"-u '{user}:{password_prefix}'$i '{url}'; done")
    # run, not check_output: once the ban holds, curl exits non-zero, and so does the loop
    return from_host.run(loop).stdout.split()


def test_failed_logins_ban_the_address_and_no_other(host, neighbour, variables, base, ca_file, admin, evidence):
    target = host.backend.get_hostname()
    address = neighbour.check_output("hostname -I").split()[0]
    url = f"https://{target}/api/2.0/mlflow/experiments/search?max_results=1"
    host.run(f"fail2ban-client set {JAIL} unbanip {address}")
    start = time.monotonic()
    try:
        codes = status_codes(neighbour, url, 50, "admin", "wrong-password-")
        deadline = time.monotonic() + 30
        while address not in banned(host) and time.monotonic() < deadline:
            time.sleep(1)
        elapsed = time.monotonic() - start
        jail = host.check_output(f"fail2ban-client status {JAIL}")
        failures = re.search(r"Total failed:\s*(\d+)", jail)
        evidence("ban", {"from": address, "wrong_passwords": 50, "answered_401": codes.count("401"),
                         "refused": sum(c == "000" for c in codes), "failures_counted": failures and failures.group(1),
                         "banned_after_s": round(elapsed, 1), "max_retry": variables["nginx_ban_max_retry"]})
        assert address in banned(host), jail
        assert codes.count("401") < 50, codes
        # the banned address: refused on 443 and 80, even with the right password
        right = neighbour.run(f"curl -sk -o /dev/null -w '%{{http_code}}' --max-time 5 -u 'admin:{admin[1]}' '{url}'")
        assert right.stdout.strip() == "000", right.stdout
        plain = neighbour.run(f"curl -s -o /dev/null -w '%{{http_code}}' --max-time 5 'http://{target}/health'")
        assert plain.stdout.strip() == "000", plain.stdout
        # another address (the build host) still logs in
        response = requests.get(base + "/api/2.0/mlflow/experiments/search", params={"max_results": 1},
                                auth=admin, verify=ca_file, timeout=30)
        assert response.status_code == 200, response.text
        assert int(variables["nginx_ban_max_retry"]) <= 50
    finally:
        host.run(f"fail2ban-client set {JAIL} unbanip {address}")
    assert address not in banned(host)
    after = neighbour.run(f"curl -sk -o /dev/null -w '%{{http_code}}' --max-time 5 'https://{target}/health'")
    assert after.stdout.strip() == "200", after.stdout



def test_turning_the_ban_off_removes_the_jail_and_on_again_restores_it(host, run_playbook, changed):
    """Reconciliation: nginx_ban_enabled false removes the role's jail (fail2ban keeps running), true puts it back,
    and the run after is quiet."""
    name = host.backend.get_hostname()
    try:
        off = run_playbook("proxy.yml", "--tags", "nginx_ban", "-e", '{"nginx_ban_enabled": false}', limit=name)
        assert off.returncode == 0 and changed(off) > 0, off.stdout[-3000:]
        assert not host.file("/etc/fail2ban/jail.d/mlflowops.local").exists
        assert JAIL not in host.check_output("fail2ban-client status")
        assert host.service("fail2ban").is_running
    finally:
        on = run_playbook("proxy.yml", "--tags", "nginx_ban", limit=name)
    assert on.returncode == 0, on.stdout[-3000:]
    assert JAIL in host.check_output("fail2ban-client status")
    again = run_playbook("proxy.yml", "--tags", "nginx_ban", limit=name)
    assert again.returncode == 0 and changed(again) == 0, again.stdout[-3000:]
