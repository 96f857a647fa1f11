"""mlflowops.tracking.verify (playbooks/verify.yml) runs the log-and-load probe from the controller against every
way in (each MLflow host's nginx, or each load balancer): the playbook of the collection the scenario's ansible.cfg
finds (this repository, or in the lifecycle scenario the collection installed from its tarball)."""

import json
import os
from pathlib import Path

from conftest import front_hosts

testinfra_hosts = front_hosts()

REPORTS = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])


def report(host):
    name = host.backend.get_hostname()
    return json.loads((REPORTS / f"probe-{name}.json").read_text())


def test_verify_playbook_passes(verify_run):
    assert verify_run.returncode == 0, verify_run.stdout[-4000:] + verify_run.stderr[-2000:]


def test_probe_logged_registered_loaded_and_predicted(verify_run, host):
    summary = report(host)
    print(json.dumps(summary, indent=2))
    assert summary["ok"] is True
    assert summary["predictions_match"] is True
    assert summary["alias"] == "champion"
    assert summary["artifact_uri"].startswith("mlflow-artifacts:")


def test_model_objects_are_in_the_bucket(verify_run, host, variables):
    summary = report(host)
    # an S3-compatible bucket, or an Azure Blob container (the default scenario's Debian 13 server)
    store = "wasbs://" if "mlflow_azure_storage_connection_string" in variables else "s3://"
    assert summary["bucket"].startswith(store), summary["bucket"]
    # the servers' prefix in the bucket: their own name, or behind load balancers the one all of them share
    prefix = f"{variables.get('mlflowops_test_artifacts_prefix', host.backend.get_hostname())}/"
    objects = summary["bucket_objects"]
    assert any(key.endswith("/MLmodel") for key in objects), objects
    assert all(key.startswith(prefix) for key in objects), objects


def test_no_artifacts_on_the_server_disk(verify_run, host, other_host, variables):
    servers = [host] if "mlflow_proxy" not in variables["groups"] else [
        other_host(name) for name in variables["groups"]["mlflow_servers"]]
    for server in servers:
        found = server.run("find /var/lib/mlflow /opt/mlflow /tmp -name MLmodel -print")
        assert found.stdout.strip() == ""
