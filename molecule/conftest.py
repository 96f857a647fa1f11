"""Fixtures shared by the scenarios' testinfra tests: the host's inventory variables, the secrets no output
may show, and the way in through nginx's port published on the build host's 127.0.0.1 (with the
deployment's CA and admin login)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "reshapes(order): the test leaves the scenario in another shape and does not put it back (a run "
        "saved in CI): it runs after every other test of the scenario, the lowest order first")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    """Tests marked reshapes run last, by their order; every other test keeps its place (the sort is stable). After
    pytest's own reordering (trylast), which groups the tests of a parametrized fixture."""
    def order(item):
        marker = item.get_closest_marker("reshapes")
        return marker.args[0] if marker else 0
    items.sort(key=order)


def _inventory():
    from testinfra.utils.ansible_runner import AnsibleRunner
    return AnsibleRunner.get_runner(os.environ["MOLECULE_INVENTORY_FILE"])


def inventory_hosts(group):
    """The hosts of a group of the scenario's inventory, sorted by name ([] when it has no such group)."""
    return _inventory().get_hosts(group)


def inventory_variables(name):
    """The inventory variables of a host of the scenario, by name."""
    return _inventory().get_variables(name)


def front_hosts():
    """Where clients come in (testinfra host specs): the load balancers of mlflow_proxy, else every MLflow host."""
    return ["ansible://" + name for name in (inventory_hosts("mlflow_proxy") or inventory_hosts("mlflow_servers"))]


def first_server():
    """The MLflow server first by name, for the tests that run once per scenario (testinfra host specs)."""
    return ["ansible://" + inventory_hosts("mlflow_servers")[0]]


def mlflow_address(host):
    """host:port the MLflow server of a (testinfra) host listens on: loopback, or its private address behind load
    balancers."""
    listening = [s.split("://")[1] for s in host.socket.get_listening_sockets() if s.endswith(":5000")]
    assert len(listening) == 1, listening
    return listening[0]


def private_address(host):
    """The address a (testinfra) host's traffic to the other containers of the scenario leaves from."""
    return host.check_output("ip -4 -o route get 1.1.1.1 | sed -n 's/.* src \\([0-9.]*\\).*/\\1/p'")


def mlflow_health(host):
    """What the server's /health answers, asked on the host itself."""
    return host.run(f"curl -fsS http://{mlflow_address(host)}/health").stdout.strip()


API = "/api/2.0/mlflow"


def users(variables):
    """The inventory's MLflow users as (name, password) logins, by name."""
    return {u["name"]: (u["name"], u["password"]) for u in variables["mlflow_auth_users"]}


def get(base, ca_file, path, auth=None, **params):
    """GET of MLflow's REST API through nginx."""
    return requests.get(base + API + path, params=params, auth=auth, verify=ca_file, timeout=30)


def post(base, ca_file, path, body, auth):
    """POST of MLflow's REST API through nginx."""
    return requests.post(base + API + path, json=body, auth=auth, verify=ca_file, timeout=30)


def record_evidence(name, seen):
    """Figures a test saw, for the run's summary: the harness prints every logs/evidence-*.json at the end."""
    logs = Path(os.environ.get("MLFLOWOPS_CACHE") or Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]) / ".cache") / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    (logs / f"evidence-{name}.json").write_text(json.dumps(seen) + "\n")


@pytest.fixture(scope="session")
def evidence():
    return record_evidence


@pytest.fixture(scope="module")
def other_host(host):
    """Another host of the scenario's inventory, by name (testinfra's host of it)."""
    def get(name):
        return host.get_host(f"ansible://{name}?ansible_inventory=" + os.environ["MOLECULE_INVENTORY_FILE"])
    return get


@pytest.fixture(scope="module")
def neighbour(other_host, variables):
    """The object-store container: another machine on the scenario's network, outside the MLflow tiers."""
    return other_host(variables["groups"]["object_store"][0])


@pytest.fixture(scope="session")
def reachable():
    """Whether `from_host` (a testinfra host) opens a TCP connection to `target`:`port` within 5 s."""
    def connect(from_host, target, port):
        return from_host.run(f"timeout 5 bash -c '</dev/tcp/{target}/{port}'").rc == 0
    return connect


@pytest.fixture(scope="module")
def variables(host):
    return host.ansible.get_variables()


@pytest.fixture(scope="module")
def secrets(other_host, variables):
    """Every secret of a deployment with authentication: database, bucket, admin, Flask key, users."""
    # the inventory's Flask key (several servers share it), else the one the role generated on the host
    flask_key = variables.get("vault_mlflow_flask_secret_key") or other_host(
        variables["groups"]["mlflow_servers"][0]).file("/etc/mlflow/flask-secret-key").content_string.strip()
    azure = re.findall(r"AccountKey=([^;]+)", variables.get("mlflowops_test_azurite_connection_string", ""))
    return [
        variables["vault_mlflow_db_password"], variables["vault_mlflow_admin_password"],
        variables["mlflow_s3_secret_access_key"], flask_key,
    ] + azure + [user["password"] for user in variables["mlflow_auth_users"]]


def acme(variables):
    """Whether the host's certificate comes from the scenario's ACME CA (its names only, no IP address in it)."""
    return variables.get("nginx_tls_mode") == "acme"


@pytest.fixture(scope="module")
def front(host, variables, other_host):
    """The host's own nginx, or behind load balancers the first of them: (its name, its testinfra host)."""
    name = host.backend.get_hostname()
    if name in variables["mlflowops_test_published_ports"]:
        return name, host
    name = variables["groups"]["mlflow_proxy"][0]
    return name, other_host(name)


@pytest.fixture(scope="module")
def base(variables, front):
    """nginx's published port (of the host's front: see front), by the host's name where its certificate is from
    the ACME CA (the default scenario's prepare step maps that name to 127.0.0.1 on the build host), else by
    address."""
    name = front[0]
    port = variables["mlflowops_test_published_ports"][name]["https"]
    return f"https://{name if acme(variables) else '127.0.0.1'}:{port}"


@pytest.fixture(scope="module")
def ca_file(front, variables, tmp_path_factory):
    """What a client trusts: the ACME CA's root (pebble's, fetched by the prepare step), else the deployment's CA."""
    if acme(variables):
        return os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "acme-root.pem")
    path = tmp_path_factory.mktemp("ca") / "ca.crt"
    path.write_text(front[1].file("/etc/nginx/tls/ca.crt").content_string)
    return str(path)


@pytest.fixture(scope="module")
def admin(variables):
    return ("admin", variables["vault_mlflow_admin_password"])


@pytest.fixture(scope="session")
def verify_run():
    """One run of the verify playbook (the log-and-load probe) over all servers: the probe is slow, so hosts and
    tests share it (test_probe.py checks it; the default scenario's UI test looks at what it logged)."""
    reports = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
    for old in reports.glob("probe-*.json"):
        old.unlink()
    playbook = Path(sys.executable).parent / "ansible-playbook"
    result = subprocess.run(
        [str(playbook), "-i", os.environ["MOLECULE_INVENTORY_FILE"], "mlflowops.tracking.verify"],
        capture_output=True, text=True, check=False, timeout=900,
    )
    print(result.stdout[-6000:])
    return result


@pytest.fixture(scope="session")
def check_converge():
    """The scenario's converge run again in check + diff mode with -v, on the converged hosts (after idempotence):
    test_check_mode.py wants no change reported, test_security.py no secret in its output."""
    playbook = Path(sys.executable).parent / "ansible-playbook"
    return subprocess.run(
        [str(playbook), "-v", "--check", "--diff", "-i", os.environ["MOLECULE_INVENTORY_FILE"],
         str(Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"]) / "converge.yml")],
        capture_output=True, text=True, check=False, timeout=900,
    )


def _run_playbook(playbook, *extra, limit=None, inventory=None, timeout=900, env=None):
    """ansible-playbook of the controller venv: a playbook of playbooks/ by file name, a collection's playbook by
    its full name (mlflowops.tracking.backup: from the collection the scenario's ansible.cfg finds) or any path, on
    the scenario's inventory unless another is given, limited to `limit` (a host name) when set."""
    command = Path(sys.executable).parent / "ansible-playbook"
    if "/" in str(playbook) or re.fullmatch(r"\w+\.\w+\.\w+", str(playbook)):
        path = playbook
    else:
        path = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]) / "playbooks" / playbook
    argv = [str(command), "-i", str(inventory or os.environ["MOLECULE_INVENTORY_FILE"]), str(path), *extra]
    if limit:
        argv += ["--limit", limit]
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout,
                          env=dict(os.environ, **(env or {})))


def _changed(result, name=None):
    """changed= of the run's recap: of host `name`, else the sum over its hosts."""
    # Molecule may force colours: the recap then wraps names and counts in escape sequences
    recap = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout.split("PLAY RECAP")[-1])
    pattern = re.escape(name) if name else r"\S+"
    counts = re.findall(r"^" + pattern + r"\s+:.*?changed=(\d+)", recap, re.M)
    assert counts, result.stdout[-3000:] + result.stderr[-2000:]
    return sum(int(count) for count in counts)


@pytest.fixture(scope="session")
def run_playbook():
    """Runs a playbook as an operator would (see _run_playbook); returns the CompletedProcess."""
    return _run_playbook


@pytest.fixture(scope="session")
def changed():
    """The number of changes a run's recap reports (see _changed)."""
    return _changed
