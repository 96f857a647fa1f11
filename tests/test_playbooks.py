"""Static checks of the playbooks, inventories and the collection build."""

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PLAYBOOKS = sorted((REPO / "playbooks").glob("*.yml"))
INVENTORIES = sorted(p for p in (REPO / "inventories").iterdir() if p.is_dir())


def tool(name):
    """An Ansible CLI from the interpreter's own venv, else from PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name) or name


def run(command, *args):
    return subprocess.run(
        [tool(command), *args], cwd=REPO, capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize("inventory", INVENTORIES, ids=lambda p: p.name)
def test_syntax_check(inventory):
    """Every playbook against the inventory, in one ansible-playbook run (it names the playbook that fails)."""
    result = run("ansible-playbook", "--syntax-check", "-i", str(inventory), *map(str, PLAYBOOKS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("playbook: ") == len(PLAYBOOKS), result.stdout


WIRING_PLAYBOOK = """
- name: The wiring every role sees
  hosts: all
  gather_facts: "{{ gather | default(true) | bool }}"
  roles:
    - {role: mlflowops.tracking.postgresql, when: false}
    - {role: mlflowops.tracking.mlflow, when: false}
    - {role: mlflowops.tracking.nginx, when: false}
    - {role: mlflowops.tracking.firewall, when: false}
  tasks:
    - name: wiring
      ansible.builtin.debug:
        msg:
          address: "{{ ansible_facts['default_ipv4']['address'] | default('') }}"
          postgresql: "{{ [postgresql_listen_addresses, postgresql_allowed_clients, postgresql_port,
                           postgresql_mlflow_database, postgresql_mlflow_auth_database, postgresql_mlflow_user,
                           postgresql_max_connections]
                          if inventory_hostname in groups['mlflow_db'] else [] }}"
          firewall: "{{ _firewall_postgresql_sources }}"
          mlflow: "{{ [mlflow_backend_host, mlflow_backend_port, mlflow_backend_database, mlflow_auth_database,
                       mlflow_backend_user, mlflow_backend_max_connections, mlflow_allowed_hosts[-1]]
                      if inventory_hostname in groups['mlflow_servers'] else [] }}"
          nginx: "{{ [nginx_upstream, nginx_server_name] if inventory_hostname in groups['mlflow_servers'] else [] }}"
          same_password: "{{ postgresql_mlflow_password == mlflow_backend_password == 'from-the-vault-1234' }}"
          admin: "{{ mlflow_auth_admin_password == 'admin-from-the-vault' }}"
          tls: "{{ [postgresql_tls | bool] if inventory_hostname in groups['mlflow_db'] else [] }}"
          backend: "{{ [_mlflow_backend_sslmode, _mlflow_backend_managed | bool, _mlflow_backend_uri]
                       if inventory_hostname in groups['mlflow_servers'] else [] }}"
          ca_host: "{{ mlflowops_ca_host }}"
          cluster: "{{ [_mlflow_db_peers, _mlflow_periodic_here | bool, _mlflow_gc_here | bool,
                        _mlflow_env['MLFLOW_SERVER_JOB_ENABLE_PERIODIC_TASKS'] | default('')]
                       if inventory_hostname in groups['mlflow_servers'] else [] }}"
          listen: "{{ [mlflow_host, mlflow_port] if inventory_hostname in groups['mlflow_servers'] else [] }}"
          mlflow_firewall: "{{ [firewall_mlflow_port | int, _firewall_mlflow_sources] }}"
          proxy: "{{ [nginx_upstream, nginx_server_name]
                     if inventory_hostname in groups['mlflow_proxy'] | default([]) else [] }}"

    - name: Run the proxy preflight
      ansible.builtin.include_role:
        name: mlflowops.tracking.nginx
        tasks_from: preflight.yml
      when: inventory_hostname in groups['mlflow_proxy'] | default([])
"""


def wiring(tmp_path, inventory, *extra):
    (tmp_path / "hosts.yml").write_text(inventory)
    (tmp_path / "wiring.yml").write_text(WIRING_PLAYBOOK)
    result = subprocess.run(
        [tool("ansible-playbook"), "-i", str(tmp_path / "hosts.yml"), str(tmp_path / "wiring.yml"), *extra],
        cwd=REPO, capture_output=True, text=True, check=False,
        env={**os.environ, "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json"},
    )
    if result.returncode != 0:
        return result, {}
    tasks = json.loads(result.stdout)["plays"][0]["tasks"]
    (task,) = [t for t in tasks if t["task"]["name"] == "wiring"]
    return result, {host: r["msg"] for host, r in task["hosts"].items()}


SECRETS = """
  vars:
    ansible_connection: local
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
    vault_mlflow_db_password: from-the-vault-1234
    vault_mlflow_admin_password: admin-from-the-vault
"""


def test_wiring_of_a_database_host_and_two_servers_comes_from_the_inventory(tmp_path):
    """Hosts and secrets only: the tiers find each other by private address, never by ansible_host."""
    result, seen = wiring(tmp_path, """
all:
  children:
    mlflow_db:
      hosts:
        db1: {ansible_host: 203.0.113.5, mlflowops_private_address: 10.0.0.5}
    mlflow_servers:
      hosts:
        app1: {ansible_host: 203.0.113.6, mlflowops_private_address: 10.0.0.6, mlflow_port: 5001}
        app2: {ansible_host: tracking.example.com}
""" + SECRETS + """    mlflow_job_execution: enabled""")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    app2 = seen["app2"]["address"]  # no mlflowops_private_address: its default IPv4 route's address
    assert app2
    assert seen["db1"]["postgresql"] == [
        ["127.0.0.1", "10.0.0.5"], ["10.0.0.6/32", f"{app2}/32"], 5432, "mlflow", "mlflow_auth", "mlflow", 100
    ]
    assert seen["db1"]["firewall"] == ["10.0.0.6", app2]
    assert seen["app1"]["mlflow"] == ["10.0.0.5", 5432, "mlflow", "mlflow_auth", "mlflow", 100, "203.0.113.6"]
    assert seen["app1"]["nginx"] == [["127.0.0.1:5001"], "203.0.113.6"]
    assert seen["app2"]["nginx"] == [["127.0.0.1:5000"], "tracking.example.com"]
    assert seen["app1"]["firewall"] == seen["app2"]["firewall"] == []
    assert all(host["same_password"] and host["admin"] for host in seen.values())
    # TLS on the database host for its remote clients, verified by them against the deployment's CA on app1
    assert seen["db1"]["tls"] == [True]
    assert seen["app1"]["backend"][:2] == ["verify-full", False]
    assert seen["app1"]["backend"][2].endswith(
        "@10.0.0.5:5432/mlflow?sslmode=verify-full&sslrootcert=/etc/mlflow/db-ca.crt")
    assert {host["ca_host"] for host in seen.values()} == {"app1"}
    # one database, two servers: MLflow's periodic jobs and gc on the first only
    assert seen["app1"]["cluster"] == [["app1", "app2"], True, True, ""]
    assert seen["app2"]["cluster"] == [["app1", "app2"], False, False, "false"]


def test_hosts_in_both_groups_keep_their_own_database(tmp_path):
    """Two all-in-one hosts and a server without a database: only that server uses the first database host."""
    result, seen = wiring(tmp_path, """
all:
  children:
    mlflow_db:
      hosts:
        aio1: {mlflowops_private_address: 10.0.0.1}
        aio2: {mlflowops_private_address: 10.0.0.2}
    mlflow_servers:
      hosts:
        aio1:
        aio2:
        app3: {mlflowops_private_address: 10.0.0.3}
""" + SECRETS, "-e", "gather=false")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert seen["aio1"]["postgresql"][:2] == [["127.0.0.1", "10.0.0.1"], ["10.0.0.3/32"]]
    assert seen["aio2"]["postgresql"][:2] == [["127.0.0.1"], []]
    assert [seen[h]["mlflow"][0] for h in ("aio1", "aio2", "app3")] == ["127.0.0.1", "127.0.0.1", "10.0.0.1"]
    assert seen["aio1"]["firewall"] == ["10.0.0.3"] and seen["aio2"]["firewall"] == []
    # the servers of each database: one migrates it, runs gc and MLflow's periodic jobs
    assert [seen[h]["cluster"][:3] for h in ("aio1", "aio2", "app3")] == [
        [["aio1", "app3"], True, True], [["aio2"], True, True], [["aio1", "app3"], False, False]]


def test_wiring_of_one_host_stays_on_loopback_without_facts(tmp_path):
    result, seen = wiring(tmp_path, """
all:
  children:
    mlflow_db: {hosts: {solo: {ansible_host: 198.51.100.7}}}
    mlflow_servers: {hosts: {solo: {}}}
""" + SECRETS, "-e", "gather=false")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert seen["solo"]["postgresql"][:2] == [["127.0.0.1"], []]
    assert seen["solo"]["mlflow"][0] == "127.0.0.1"
    assert seen["solo"]["firewall"] == []
    assert seen["solo"]["nginx"] == [["127.0.0.1:5000"], "198.51.100.7"]
    assert seen["solo"]["tls"] == [False]
    assert seen["solo"]["backend"][:2] == ["disable", False]
    assert seen["solo"]["backend"][2].endswith("@127.0.0.1:5432/mlflow?sslmode=disable")


def test_wiring_of_a_managed_database(tmp_path):
    """mlflow_db empty and an endpoint: every server uses it with verify-full; the password is URL-encoded."""
    result, seen = wiring(tmp_path, """
all:
  children:
    mlflow_db: {hosts: {}}
    mlflow_servers: {hosts: {app1: {}, app2: {}}}
  vars:
    ansible_connection: local
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
    vault_mlflow_db_password: "p@ss/w%41rd:x-1234"
    vault_mlflow_admin_password: admin-from-the-vault
    mlflowops_db_endpoint: db.example.com
    mlflowops_db_port: 25060
""", "-e", "gather=false")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    for name in ("app1", "app2"):
        assert seen[name]["backend"] == [
            "verify-full", True, "postgresql+psycopg2://mlflow:p%40ss%2Fw%2541rd%3Ax-1234@db.example.com:25060/mlflow"
            "?sslmode=verify-full&sslrootcert=/etc/mlflow/db-ca.crt"]
        assert seen[name]["firewall"] == []
    assert seen["app1"]["cluster"][:3] == [["app1", "app2"], True, True]
    assert seen["app2"]["cluster"][:3] == [["app1", "app2"], False, False]


def test_wiring_names_the_host_whose_private_address_is_unknown(tmp_path):
    result, _ = wiring(tmp_path, """
all:
  children:
    mlflow_db: {hosts: {db1: {mlflowops_private_address: 10.0.0.5}}}
    mlflow_servers: {hosts: {app9: {}}}
""" + SECRETS, "-e", "gather=false")
    assert result.returncode != 0
    assert "the private address of app9 is unknown" in result.stdout + result.stderr


BALANCED = """
all:
  children:
    mlflow_db: {hosts: {db1: {mlflowops_private_address: 10.0.0.5}}}
    mlflow_servers:
      hosts:
        app1: {ansible_host: 203.0.113.6, mlflowops_private_address: 10.0.0.6, mlflow_port: 5001}
        app2: {ansible_host: 203.0.113.7, mlflowops_private_address: 10.0.0.7}
    mlflow_proxy:
      hosts:
"""


def balanced(tmp_path, proxies, *extra):
    return wiring(tmp_path, BALANCED + proxies + SECRETS, "-e", "gather=false", *extra)


def test_wiring_behind_a_load_balancer_comes_from_the_inventory(tmp_path):
    """The servers listen on their private address, open their port to the load balancer alone, and the load
    balancer's upstream holds each of them at its own port under the load balancer's public name."""
    result, seen = balanced(tmp_path, "        lb1: {ansible_host: 203.0.113.9, mlflowops_private_address: 10.0.0.9}\n")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert seen["app1"]["listen"] == ["10.0.0.6", 5001]
    assert seen["app2"]["listen"] == ["10.0.0.7", 5000]
    assert seen["app1"]["mlflow_firewall"] == [5001, ["10.0.0.9"]]
    assert seen["app2"]["mlflow_firewall"] == [5000, ["10.0.0.9"]]
    assert seen["lb1"]["mlflow_firewall"] == [5000, []]
    assert seen["lb1"]["proxy"] == [["10.0.0.6:5001", "10.0.0.7:5000"], "203.0.113.9"]


def test_several_load_balancers_need_a_shared_name(tmp_path):
    two = ("        lb1: {ansible_host: 203.0.113.9, mlflowops_private_address: 10.0.0.9}\n"
           "        lb2: {ansible_host: 203.0.113.10, mlflowops_private_address: 10.0.0.10}\n")
    refused, _ = balanced(tmp_path, two)
    assert refused.returncode != 0
    assert "2 load balancers serve this site under the first one's address (203.0.113.9)" in refused.stdout
    named, seen = balanced(tmp_path, two, "-e", "mlflowops_server_name=tracking.example.com")
    assert named.returncode == 0, named.stdout[-3000:] + named.stderr
    assert seen["lb2"]["proxy"] == [["10.0.0.6:5001", "10.0.0.7:5000"], "tracking.example.com"]


@pytest.mark.parametrize("inventory", INVENTORIES, ids=lambda p: p.name)
def test_inventory_defines_both_tiers(inventory):
    """MLflow servers always; database hosts unless the inventory names a managed PostgreSQL, then none."""
    result = run("ansible-inventory", "-i", str(inventory), "--list")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    hostvars = data.get("_meta", {}).get("hostvars", {})

    def hosts(group):
        return data.get(group, {}).get("hosts", [])

    servers, databases = hosts("mlflow_servers"), hosts("mlflow_db")
    assert servers, f"{inventory.name}: group mlflow_servers is empty"
    # both groups exist, so groups['mlflow_db'] is a list (empty for a managed database) in every play
    assert {"mlflow_db", "mlflow_servers"} <= set(data.get("all", {}).get("children", [])), inventory.name
    # vars as written (templates unrendered): a managed database is one with a non-empty endpoint
    managed = [h for h in servers if str(hostvars.get(h, {}).get("mlflowops_db_endpoint") or "").strip()]
    if managed:
        assert managed == servers, f"{inventory.name}: mlflowops_db_endpoint only on {managed}"
        assert not databases, f"{inventory.name}: a managed database and mlflow_db hosts {databases}"
        for host in servers:
            bundle = str(hostvars[host].get("mlflowops_db_ca_bundle") or "").strip()
            assert bundle, f"{inventory.name}: {host} has mlflowops_db_endpoint but no mlflowops_db_ca_bundle"
    else:
        assert databases, f"{inventory.name}: group mlflow_db is empty and no mlflowops_db_endpoint is set"


def test_collection_builds_with_roles_and_playbooks(tmp_path):
    result = run("ansible-galaxy", "collection", "build", "--output-path", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    (tarball,) = tmp_path.glob("mlflowops-tracking-*.tar.gz")
    with tarfile.open(tarball) as archive:
        names = set(archive.getnames())
    assert "MANIFEST.json" in names
    assert "roles/postgresql/tasks/main.yml" in names
    assert "playbooks/site.yml" in names
    assert "playbooks/files/mlflow_probe.py" in names
    assert not any(n.startswith((".venv", ".cache")) for n in names)


MODULES = sorted((REPO / "plugins" / "modules").glob("*.py"))


@pytest.mark.parametrize("module", MODULES, ids=lambda p: p.stem)
def test_module_documentation_renders(module):
    """DOCUMENTATION, EXAMPLES and RETURN parse (ansible-lint only warns when they do not)."""
    result = run("ansible-doc", "--json", "-M", str(module.parent), module.stem)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)[module.stem]
    assert doc["doc"]["short_description"] and doc["return"] is not None, doc


# every filter a FilterModule of plugins/filter returns, each with its own documentation (a .py file holding several
# filters documents them in .yml files of their names)
FILTERS = sorted(name for path in (REPO / "plugins" / "filter").glob("*.py")
                 for name in re.findall(r'"([a-z_]+)": ', path.read_text().partition("def filters")[2]))


@pytest.mark.parametrize("name", FILTERS)
def test_filter_documentation_renders(name):
    result = run("ansible-doc", "--json", "-t", "filter", f"mlflowops.tracking.{name}")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)[f"mlflowops.tracking.{name}"]
    assert doc["doc"]["name"] == name and doc["doc"]["short_description"] and doc["return"], doc
