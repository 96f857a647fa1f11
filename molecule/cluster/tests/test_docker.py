"""The docker install method: engine, image, container hardening, and switching methods."""

import json

import pytest
import requests
from conftest import mlflow_address

testinfra_hosts = ["ansible://mlflowops-docker"]

API = "/api/2.0/mlflow"


@pytest.fixture(scope="module")
def container(host):
    return json.loads(host.check_output("docker inspect mlflow"))[0]


def test_engine_running_enabled_with_daemon_json(host):
    service = host.service("docker")
    assert service.is_running
    assert service.is_enabled
    config = json.loads(host.file("/etc/docker/daemon.json").content_string)
    assert config["log-driver"] == "json-file"
    assert config["log-opts"]["max-size"] == "10m"
    info = json.loads(host.check_output("docker info --format '{{json .}}'"))
    assert info["LiveRestoreEnabled"] is True
    assert info["LoggingDriver"] == "json-file"


def test_container_runs_the_derived_image(host, container, variables):
    assert container["State"]["Running"] is True
    assert container["Config"]["Image"] == "mlflowops/mlflow-server:3.17.2"  # mlflow_docker_build_image
    base = json.loads(host.check_output(f"docker image inspect {variables['mlflow_docker_image']}"))[0]
    derived = json.loads(host.check_output(f"docker image inspect {container['Image']}"))[0]
    # built FROM the loaded image: its layers come first
    assert derived["RootFS"]["Layers"][: len(base["RootFS"]["Layers"])] == base["RootFS"]["Layers"]


def test_container_publishes_nothing_and_binds_one_address(host, container):
    # host network: the server binds its address itself (its private one here, behind the load balancer), Docker
    # publishes no port (no NAT rule that would bypass ufw, no docker-proxy on 0.0.0.0)
    assert container["HostConfig"]["NetworkMode"] == "host"
    assert not container["HostConfig"]["PortBindings"]
    assert not container["NetworkSettings"]["Ports"]
    listening = [s for s in host.socket.get_listening_sockets() if s.endswith(":5000")]
    assert listening == [f"tcp://{host.interface('eth0').addresses[0]}:5000"], listening
    assert host.run("pgrep -x docker-proxy").rc == 1
    nat = host.check_output("iptables -t nat -S")
    assert ":5000" not in nat, nat


def test_container_is_confined(host, container):
    config, hostconfig = container["Config"], container["HostConfig"]
    uid = host.user("mlflow").uid
    gid = host.group("mlflow").gid
    assert config["User"] == f"{uid}:{gid}"
    assert hostconfig["ReadonlyRootfs"] is True
    assert hostconfig["CapDrop"] == ["ALL"]
    assert "no-new-privileges" in hostconfig["SecurityOpt"]
    assert hostconfig["Privileged"] is False
    assert hostconfig["RestartPolicy"]["Name"] in ("", "no"), "systemd owns restarts"
    servers = host.check_output("ps -o user= -C gunicorn -C uvicorn -C mlflow -C python3 | sort -u").split()
    assert servers and set(servers) == {"mlflow"}, servers


def test_systemd_owns_the_container(host):
    props = host.service("mlflow").systemd_properties
    assert "docker.service" in props["Requires"]
    assert "docker run --rm --name mlflow" in props["ExecStart"]
    # a killed server comes back through systemd's Restart=always
    before = host.check_output("docker inspect --format '{{.Id}}' mlflow")
    address = mlflow_address(host)
    host.run("docker kill mlflow")
    result = host.run(
        f"for i in $(seq 90); do curl -fsS http://{address}/health && exit 0; sleep 2; done; exit 1")
    assert result.rc == 0, host.run("journalctl -u mlflow.service --no-pager -n 40").stdout
    assert host.check_output("docker inspect --format '{{.Id}}' mlflow") != before


def api(base, ca_file, auth, method, path, **kwargs):
    response = requests.request(method, base + API + path, auth=auth, verify=ca_file, timeout=60, **kwargs)
    assert response.status_code == 200, response.text
    return response.json()


def test_switching_to_venv_and_back_keeps_the_data(host, variables, base, ca_file, admin, run_playbook):
    """Same unit, env file, state and database: a host moves between methods without losing runs."""
    name = "switch-methods"
    found = requests.get(base + API + "/experiments/get-by-name", params={"experiment_name": name},
                         auth=admin, verify=ca_file, timeout=60)
    if found.status_code == 200:
        experiment_id = found.json()["experiment"]["experiment_id"]
    else:
        experiment_id = api(base, ca_file, admin, "POST", "/experiments/create", json={"name": name})["experiment_id"]
    run_id = api(base, ca_file, admin, "POST", "/runs/create", json={"experiment_id": experiment_id})["run"]["info"]["run_id"]
    api(base, ca_file, admin, "POST", "/runs/log-metric",
        json={"run_id": run_id, "key": "kept", "value": 42.0, "timestamp": 0, "step": 0})

    for method in ("venv", "docker"):
        # playbooks/mlflow.yml, the tier that changes, as an operator re-runs it with the other method for this host
        result = run_playbook("mlflow.yml", "-e", f"mlflow_install_method={method}", timeout=1200,
                              limit=host.backend.get_hostname())
        assert result.returncode == 0, f"switch to {method}:\n" + result.stdout[-4000:] + result.stderr[-2000:]
        running_in_docker = host.run("docker inspect --format '{{.State.Running}}' mlflow").stdout.strip() == "true"
        assert running_in_docker is (method == "docker"), method
        run = api(base, ca_file, admin, "GET", "/runs/get", params={"run_id": run_id})["run"]
        assert run["data"]["metrics"][0]["value"] == 42.0, method
        # the users and their permissions live in the auth database and survive too
        reader = next(u for u in variables["mlflow_auth_users"] if u["name"] == "reader")
        assert requests.get(base + API + "/experiments/get-by-name", params={"experiment_name": "shared-experiment"},
                            auth=(reader["name"], reader["password"]), verify=ca_file, timeout=60).status_code == 200
