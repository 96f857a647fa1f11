"""The small-host profile: the lifecycle host, limited to 1 GiB and sized by the role defaults, survives the bench's
load (after the lifecycle tests: the experiments the load makes are not among those they compare).

The role derives one worker, no job execution and PostgreSQL memory from the cgroup limit (Ansible's facts
report the build host's memory). 60 s of log-batch at 16 keep-alive clients (tests/bench/bench.py, the same
routine as `make bench BENCH_MODE=small`) must give 0 failed requests and 0 OOM kills, counted in every
cgroup below the container and in the kernel log, during the load and since the container started. The load
outlasts the 60 s login cache, so an expiry that makes every request in flight check the password at once (about
32 MB each) would show here. The memory figures are printed, not asserted: targets belong to `make bench`.
"""

import json
import os
import sys
from pathlib import Path

import pytest

testinfra_hosts = ["ansible://mlflow_servers"]

sys.path.insert(0, str(Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]) / "tests" / "bench"))
import bench  # noqa: E402


def test_the_role_sized_the_server_for_one_gib(host):
    unit = host.file("/etc/systemd/system/mlflow.service").content_string
    assert "--workers 1 " in unit
    env = host.file("/etc/mlflow/mlflow.env").content_string
    assert "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false" in env.splitlines()
    # bounded password checks: the expiry of a cached login must not make 16 requests hash at once
    assert "MLFLOWOPS_AUTH_CHECK_CONCURRENCY=4" in env.splitlines()
    ini = host.file("/etc/mlflow/basic_auth.ini").content_string
    assert "authorization_function = mlflowops_auth:authenticate_request" in ini.splitlines()
    conf = host.run("sh -c 'cat /etc/postgresql/*/main/conf.d/50-mlflowops.conf'").stdout
    # 1/8 of 1024 MB beside MLflow
    assert "shared_buffers = '128MB'" in conf
    assert host.service("mlflow.service").is_running


@pytest.fixture(scope="module")
def loaded(host, variables):
    target = bench.Target(host.backend.get_hostname(), None)
    target.install_load()
    result = bench.small(target, variables["vault_mlflow_admin_password"])
    print(json.dumps(result, indent=2))
    return result


def test_no_failed_request_under_load(loaded):
    load = loaded["load"]
    assert load["requests"] > 0
    assert load["errors"] == 0, load["error_samples"]


def test_no_oom_kill(loaded):
    assert loaded["memory_limit_mb"] == 1024
    assert loaded["oom_kills"] == {"cgroups": 0, "kernel_log": 0}
    # nor before it: the converge, the adoption, backup and restore, the failed migration and gc on this 1 GiB host
    assert loaded["oom_kills_since_start"] == {"cgroups": 0, "kernel_log": 0}


def test_the_scenario_ran_the_installed_collection():
    """Converge, idempotence and probe found mlflowops.tracking only where the built tarball was installed."""
    import subprocess

    galaxy = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]) / ".cache" / "galaxy" / "collections"
    listing = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-galaxy"), "collection", "list", "mlflowops.tracking",
         "--format", "json"],
        capture_output=True, text=True, check=True,
    )
    paths = list(json.loads(listing.stdout))
    assert paths == [str(galaxy / "ansible_collections")], paths
    installed = galaxy / "ansible_collections" / "mlflowops" / "tracking"
    assert (installed / "MANIFEST.json").is_file() and not installed.is_symlink()
