"""The database off the MLflow host.

A database host of mlflow_db: MLflow's connections to it are TLS with the certificate verified (verify-full against
the deployment's CA), pg_hba.conf admits the MLflow host over TLS alone, and no host outside the MLflow group
reaches port 5432. A managed database (the stand-in of managed_db.yml, which the roles never touch): bad input
stops the run in preflight with a message naming what failed while the running server stays as it is; the managed
shape converges (the admin creates the MLflow role and both databases), a second run changes nothing, the probe
passes and the connections are TLS. That test runs last (reshapes): nothing puts the host back before the scenario
is destroyed.
"""

import json
import os
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import yaml
from conftest import mlflow_health, private_address, record_evidence as record

testinfra_hosts = ["ansible://mlflowops-docker"]

SCENARIO = Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"])
EPHEMERAL = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
API = "/api/2.0/mlflow"
ENV_FILE = "/etc/mlflow/mlflow.env"
SSL_OF_MLFLOW = ("SELECT s.ssl, s.version, a.client_addr, a.datname FROM pg_stat_ssl s JOIN pg_stat_activity a "
                 "USING (pid) WHERE a.usename = 'mlflow' ORDER BY a.datname")


def psql(db_host, query):
    """Rows of a query run as postgres on the database host, fields split."""
    out = db_host.check_output(f"runuser -u postgres -- psql -tA -F '|' -c \"{query}\"")
    return [line.split("|") for line in out.splitlines() if line]


def touch_the_database(base, ca_file, admin):
    """A request that queries both databases (the login checks the auth database), so the pools hold connections."""
    response = requests.get(base + API + "/experiments/search", params={"max_results": 1}, auth=admin,
                            verify=ca_file, timeout=60)
    assert response.status_code == 200, response.text


def test_mlflow_reaches_the_database_host_over_verified_tls(host, other_host, variables, base, ca_file, admin):
    db_name = variables["groups"]["mlflow_db"][0]
    db = other_host(db_name)
    db_address = private_address(db)
    env = host.file(ENV_FILE).content_string
    assert f"@{db_address}:5432/mlflow?sslmode=verify-full&sslrootcert=/etc/mlflow/db-ca.crt" in env
    # the database's certificate chains to the deployment's CA and names the address MLflow connects to
    handshake = host.run(f"openssl s_client -starttls postgres -connect {db_address}:5432 -verify_ip {db_address} "
                         "-CAfile /etc/mlflow/db-ca.crt -verify_return_error </dev/null")
    assert "Verify return code: 0 (ok)" in handshake.stdout, handshake.stdout + handshake.stderr
    assert host.file("/etc/mlflow/db-ca.crt").content_string == deployment_ca(other_host, variables)
    touch_the_database(base, ca_file, admin)
    rows = psql(db, SSL_OF_MLFLOW)
    record("database-host-pg_stat_ssl", rows)
    assert {row[3] for row in rows} == {"mlflow", "mlflow_auth"}, rows
    assert all(row[0] == "t" and row[1] in ("TLSv1.2", "TLSv1.3") for row in rows), rows
    # from the MLflow servers (the load balancer sent the request to one of them)
    servers = set(server_addresses(other_host, variables))
    assert rows and {row[2] for row in rows} <= servers, rows


def server_addresses(other_host, variables):
    """The private addresses of the MLflow servers, in the inventory's order."""
    return [private_address(other_host(name)) for name in variables["groups"]["mlflow_servers"]]


def deployment_ca(other_host, variables):
    """The deployment's CA certificate, from the host that keeps its key (mlflowops_ca_host: the first load balancer,
    else the first MLflow server)."""
    groups = variables["groups"]
    ca_host = (groups.get("mlflow_proxy") or groups["mlflow_servers"])[0]
    return other_host(ca_host).file("/etc/mlflowops/ca/ca.crt").content_string


def test_the_database_host_admits_the_mlflow_hosts_over_tls_only(other_host, variables):
    db = other_host(variables["groups"]["mlflow_db"][0])
    rules = [line.split() for line in db.file(db.check_output("runuser -u postgres -- psql -tAc 'SHOW hba_file'"))
             .content_string.splitlines() if line.strip() and not line.startswith("#")]
    remote = [rule for rule in rules if rule[0].startswith("host") and rule[3] not in ("127.0.0.1/32", "::1/128")]
    servers = server_addresses(other_host, variables)
    assert remote == [["hostssl", "mlflow,mlflow_auth", "mlflow", f"{server}/32", "scram-sha-256"]
                      for server in servers], rules
    assert psql(db, "SHOW ssl") == [["on"]]


def test_only_the_mlflow_host_reaches_postgresql(host, other_host, variables):
    db_name = variables["groups"]["mlflow_db"][0]
    outsider = other_host(variables["groups"]["object_store"][0])
    probe = f"timeout 5 bash -c '</dev/tcp/{db_name}/5432'"
    assert host.run(probe).rc == 0
    assert outsider.run(probe).rc != 0
    status = other_host(db_name).check_output("ufw status")
    # "5432/tcp  ALLOW  <source>  # comment": the sources, one rule per MLflow server
    sources = re.findall(r"^5432/tcp\s+ALLOW\s+(\S+)", status, re.M)
    servers = server_addresses(other_host, variables)
    assert sorted(sources) == sorted(servers), status


# ---- the managed shape: the same MLflow host against the stand-in of managed_db.yml ----

@pytest.fixture(scope="module")
def managed(host, variables, tmp_path_factory):
    """An inventory of the managed shape (mlflow_db empty, the endpoint, its CA bundle and admin login) next to a copy
    of the scenario's group_vars, with the MLflow host's connection settings from Molecule's inventory."""
    name = host.backend.get_hostname()
    stand_in = variables["mlflowops_test_managed"]
    molecule_inventory = yaml.safe_load(Path(os.environ["MOLECULE_INVENTORY_FILE"]).read_text())
    balancers = variables["groups"].get("mlflow_proxy", [])
    connections = {host_name: (molecule_inventory.get("all", {}).get("hosts") or {}).get(host_name) or {}
                   for host_name in [name] + balancers}
    directory = tmp_path_factory.mktemp("managed")
    shutil.copytree(SCENARIO / "group_vars", directory / "group_vars")
    # this MLflow host alone behind the scenario's load balancer
    (directory / "hosts.yml").write_text(yaml.safe_dump({"all": {
        "hosts": connections,
        "children": {"mlflow_servers": {"hosts": {name: None}}, "mlflow_db": {"hosts": {}},
                     "mlflow_proxy": {"hosts": {balancer: None for balancer in balancers}}},
    }}))
    settings = {
        "mlflowops_db_endpoint": stand_in["endpoint"],
        "mlflowops_db_ca_bundle": str(EPHEMERAL / "managed-db-ca.crt"),
        "mlflowops_db_admin_user": stand_in["admin_user"],
        "vault_mlflow_db_admin_password": stand_in["admin_password"],
        "vault_mlflow_db_password": stand_in["db_password"],
    }
    (directory / "group_vars" / "all" / "90-managed.yml").write_text("---\n" + yaml.safe_dump(settings))
    return directory / "hosts.yml"


def untouched(host):
    return host.check_output(f"sha256sum {ENV_FILE} /etc/mlflow/basic_auth.ini; systemctl show -P ActiveEnterTimestamp "
                             "mlflow.service")


BAD_INPUT = {
    # the deployment's own CA did not sign the service's certificate
    "wrong CA": ({"mlflowops_db_ca_bundle": "DEPLOYMENT_CA"}, "does not verify"),
    "wrong admin password": ({"vault_mlflow_db_admin_password": "not-the-admin-password-9"},
                             "password authentication failed for user dbadmin"),
    "unknown host": ({"mlflowops_db_endpoint": "no-such-database.invalid"}, "does not resolve"),
    "closed port": ({"mlflowops_db_port": 5999}, "refused"),
    "sslmode disable": ({"mlflow_backend_sslmode": "disable"}, "plain text"),
    # no admin login and nothing created yet: the play says what it expects to exist
    "no admin, nothing created": ({"mlflowops_db_admin_user": "", "mlflowops_db_user": "mlflow_not_created"},
                                  "expects"),
}


def test_bad_input_to_a_managed_database_stops_in_preflight(host, other_host, variables, managed, run_playbook,
                                                            changed, tmp_path):
    deployment_ca_file = tmp_path / "deployment-ca.crt"
    deployment_ca_file.write_text(deployment_ca(other_host, variables))
    before = untouched(host)

    def attempt(case):
        extra, _ = BAD_INPUT[case]
        extra = {key: str(deployment_ca_file) if value == "DEPLOYMENT_CA" else value for key, value in extra.items()}
        return case, run_playbook("site.yml", "-e", json.dumps(extra), inventory=managed)

    with ThreadPoolExecutor(max_workers=len(BAD_INPUT)) as pool:
        results = dict(pool.map(attempt, BAD_INPUT))
    messages = {}
    for case, result in results.items():
        output = result.stdout + result.stderr
        assert result.returncode != 0, f"{case}: the run went on\n{result.stdout[-3000:]}"
        assert "PLAY [Host firewall" not in result.stdout, f"{case}: the run got past preflight"
        assert changed(result) == 0, f"{case}\n{result.stdout[-3000:]}"
        assert BAD_INPUT[case][1] in output, f"{case}: the message does not say '{BAD_INPUT[case][1]}'\n{output[-3000:]}"
        messages[case] = next((line.strip() for line in output.splitlines()
                               if BAD_INPUT[case][1] in line), "")[:400]
        for secret in ("not-the-admin-password-9", managed_secret(host)):
            assert secret not in output, f"{case}: a password appears in the output"
    record("managed-bad-input", messages)
    assert untouched(host) == before
    assert mlflow_health(host) == "OK"


def managed_secret(host):
    return host.ansible.get_variables()["mlflowops_test_managed"]["admin_password"]


@pytest.mark.reshapes(2)
def test_the_managed_shape_converges_and_probes(host, other_host, variables, managed, run_playbook, changed):
    stand_in = variables["mlflowops_test_managed"]
    managed_db = other_host(stand_in["endpoint"])
    first = run_playbook("site.yml", inventory=managed, timeout=1200)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    # again, the tier the shape changes (the admin's role, databases and grants included): nothing to do
    second = run_playbook("mlflow.yml", inventory=managed, timeout=1200)
    assert second.returncode == 0 and changed(second) == 0, second.stdout[-4000:]
    for secret in (stand_in["admin_password"], stand_in["db_password"]):
        assert secret not in first.stdout + first.stderr + second.stdout + second.stderr
    # the password's @ / % : are URL-encoded in the DSN (and % not decoded twice: the login works)
    env = host.file(ENV_FILE).content_string
    assert ("mlflow:m%40naged%2Fpw%2541%3Ax-7f2c19@mlflowops-managed-db:5432/mlflow"
            "?sslmode=verify-full&sslrootcert=/etc/mlflow/db-ca.crt") in env
    probe = run_playbook("verify.yml", inventory=managed, timeout=900)
    assert probe.returncode == 0, probe.stdout[-4000:] + probe.stderr[-2000:]
    # made by the admin: a login role without createdb/createrole/superuser, owning both databases
    assert psql(managed_db, "SELECT rolcanlogin, rolcreatedb, rolcreaterole, rolsuper FROM pg_roles "
                            "WHERE rolname = 'mlflow'") == [["t", "f", "f", "f"]]
    assert psql(managed_db, "SELECT datname, pg_get_userbyid(datdba) FROM pg_database "
                            "WHERE datname LIKE 'mlflow%' ORDER BY 1") == [["mlflow", "mlflow"],
                                                                            ["mlflow_auth", "mlflow"]]
    rows = psql(managed_db, SSL_OF_MLFLOW)
    record("managed-pg_stat_ssl", rows)
    assert rows and all(row[0] == "t" for row in rows), rows
