"""Two MLflow servers behind a load balancer (group mlflow_proxy): requests are spread over both, MLflow's port
opens to the load balancer alone, a stopped server costs the clients nothing, and a re-converge that restarts the
servers (a new mlflow_workers) goes through them one at a time, each out of the upstream meanwhile, while a load
generator sees no failed request."""

import re
import threading
import time
import uuid

import pytest
import requests
from conftest import mlflow_address, mlflow_health, private_address, record_evidence

testinfra_hosts = ["ansible://mlflow_proxy"]

API = "/api/2.0/mlflow"


def servers(other_host, variables):
    return {name: other_host(name) for name in variables["groups"]["mlflow_servers"]}


def upstreams_tried(line):
    """The servers nginx tried for a request of its access log, in order ($upstream_addr: "a:5000, b:5000" when the
    first failed)."""
    return re.search(r"upstream=([^,\s]+(?:, [^,\s]+)*)", line).group(1).split(", ")


def answered_by(line):
    return upstreams_tried(line)[-1]


def test_requests_are_spread_over_both_servers(host, other_host, variables, base, ca_file, admin):
    marker = f"spread-{uuid.uuid4().hex[:12]}"
    with requests.Session() as session:
        for _ in range(20):
            response = session.get(base + API + "/experiments/search", params={"max_results": 1}, auth=admin,
                                   verify=ca_file, timeout=30, headers={"User-Agent": marker})
            assert response.status_code == 200, response.text
    lines = [line for line in host.check_output("tail -n 400 /var/log/nginx/access.log").splitlines() if marker in line]
    upstreams = [answered_by(line) for line in lines]
    addresses = {mlflow_address(server) for server in servers(other_host, variables).values()}
    counts = {address: upstreams.count(address) for address in addresses}
    record_evidence("balancer-spread", counts)
    assert len(lines) == 20, lines
    assert all(count > 0 for count in counts.values()) and sum(counts.values()) == 20, counts


def test_mlflow_port_opens_to_the_load_balancer_only(host, other_host, variables, neighbour, reachable):
    database = other_host(variables["groups"]["mlflow_db"][0])
    for name, server in servers(other_host, variables).items():
        address, port = mlflow_address(server).split(":")
        assert reachable(host, address, port), name
        assert not reachable(neighbour, address, port), name
        assert not reachable(database, address, port), name
        # "5000/tcp  ALLOW  <source>  # comment": the load balancer's address alone
        status = server.check_output("ufw status")
        assert re.findall(rf"^{port}/tcp\s+ALLOW\s+(\S+)", status, re.M) == [private_address(host)], status


def test_the_probe_passes_with_one_server_stopped(host, other_host, variables, run_playbook):
    nodes = servers(other_host, variables)
    stopped = nodes["mlflowops-venv"]
    address, running = mlflow_address(stopped), mlflow_address(nodes["mlflowops-docker"])
    logged = int(host.check_output("wc -l < /var/log/nginx/access.log"))
    stopped.check_output("systemctl stop mlflow.service")
    try:
        probe = run_playbook("verify.yml", timeout=900)
        # what nginx logged while the server was stopped
        lines = host.check_output(f"tail -n +{logged + 1} /var/log/nginx/access.log").splitlines()
    finally:
        stopped.check_output("systemctl start mlflow.service")
        stopped.run(f"for i in $(seq 90); do curl -fsS http://{address}/health && exit 0; sleep 2; done; exit 1")
    assert probe.returncode == 0, probe.stdout[-4000:] + probe.stderr[-2000:]
    assert mlflow_health(stopped) == "OK"
    # nginx tried the stopped server and passed those requests on to the running one
    tried = [upstreams_tried(line) for line in lines if "upstream=" in line and "upstream=-" not in line]
    assert [address, running] in tried, tried[-20:]
    assert all(attempts[-1] == running for attempts in tried), tried[-20:]


class Load:
    """Clients through the load balancer until stopped: searches and metric writes, every answer counted. Each request
    on a new connection: nginx closes its idle client connections at each reload, and a client that reuses one at
    that moment sees a reset whatever the servers do (MLflow's own client retries it)."""

    def __init__(self, base, ca_file, admin, experiment_id, clients=4):
        self.base, self.ca_file, self.admin, self.experiment_id = base, ca_file, admin, experiment_id
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.sent, self.failed, self.failures = 0, 0, []
        self.threads = [threading.Thread(target=self.client) for _ in range(clients)]

    def client(self):
        # (verify= on each call: requests ignores Session.verify when REQUESTS_CA_BUNDLE is set)
        with requests.Session() as session:
            session.auth = self.admin
            session.headers["Connection"] = "close"
            run_id, step = None, 0
            while not self.stop.is_set():
                step += 1
                try:
                    if run_id is None:
                        response = session.post(self.base + API + "/runs/create", verify=self.ca_file, timeout=60,
                                                json={"experiment_id": self.experiment_id})
                        if response.status_code == 200:
                            run_id = response.json()["run"]["info"]["run_id"]
                    elif step % 2:
                        response = session.get(self.base + API + "/experiments/search", params={"max_results": 5},
                                               verify=self.ca_file, timeout=60)
                    else:
                        response = session.post(self.base + API + "/runs/log-metric", verify=self.ca_file, timeout=60,
                                                json={"run_id": run_id, "key": "load", "value": step,
                                                      "timestamp": int(time.time() * 1000), "step": step})
                    error = None if response.status_code == 200 else f"{response.status_code} {response.text[:200]}"
                except requests.RequestException as exception:
                    error = repr(exception)[:200]
                with self.lock:
                    self.sent += 1
                    if error:
                        self.failed += 1
                        self.failures.append(error)

    def __enter__(self):
        self.started = time.monotonic()
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_):
        self.stop.set()
        for thread in self.threads:
            thread.join()
        self.seconds = round(time.monotonic() - self.started, 1)


def restarted_in_turn(result, names):
    """The run's output names each server's restart (the rolling restart's delegated task) as a change."""
    out = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout)
    # within the task's own lines: up to the next TASK header
    return {name: bool(re.search(r"Restart MLflow, " + re.escape(name) + r"\][^\n]*\n(?:(?!TASK \[)[^\n]*\n)*?"
                                 r"[^\n]*changed: \[[^\]]*" + re.escape(name) + r"\]", out)) for name in names}


@pytest.mark.reshapes(1)
def test_a_rolling_change_of_workers_fails_no_request(host, other_host, variables, base, ca_file, admin,
                                                       run_playbook):
    nodes = servers(other_host, variables)
    created = requests.post(base + API + "/experiments/create", json={"name": f"load-{uuid.uuid4().hex[:8]}"},
                            auth=admin, verify=ca_file, timeout=60)
    assert created.status_code == 200, created.text
    experiment_id = created.json()["experiment_id"]
    seen = {}
    # another worker count than the one converged (left so: the scenario's last tests converge again or not at all)
    converged = int(re.search(r"--workers (\d+)", nodes["mlflowops-venv"].file(
        "/etc/systemd/system/mlflow.service").content_string).group(1))
    step = f"workers {converged} to {converged + 1}"
    try:
        pids = {name: node.service("mlflow").systemd_properties["MainPID"] for name, node in nodes.items()}
        with Load(base, ca_file, admin, experiment_id) as load:
            time.sleep(3)
            result = run_playbook("mlflow.yml", "-e", f"mlflow_workers={converged + 1}", timeout=1200)
            time.sleep(3)
        after = {name: node.service("mlflow").systemd_properties["MainPID"] for name, node in nodes.items()}
        seen[step] = {"requests": load.sent, "failed": load.failed, "seconds": load.seconds,
                      "restarted": restarted_in_turn(result, nodes), "failures": load.failures[:5]}
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
        assert all(after[name] != pids[name] for name in nodes), (pids, after)
        assert all(seen[step]["restarted"].values()), result.stdout[-6000:]
        assert load.sent > 100 and load.failed == 0, seen[step]
    finally:
        record_evidence("rolling-restart", seen)
        requests.post(base + API + "/experiments/delete", json={"experiment_id": experiment_id}, auth=admin,
                      verify=ca_file, timeout=60)
    # both servers back in the upstream, each with the new worker count
    upstream = [line.strip() for line in host.file("/etc/nginx/nginx.conf").content_string.splitlines()
                if re.match(r"\s*server \S+:5000 ", line)]
    assert len(upstream) == 2 and not any(" down" in line for line in upstream), upstream
    for name, node in nodes.items():
        assert f"--workers {converged + 1}" in node.file("/etc/systemd/system/mlflow.service").content_string, name
