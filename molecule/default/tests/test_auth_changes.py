"""The users, grants and admin password of the inventory, changed and changed back: each run follows the
inventory, and the run after is quiet. The mlflow role's own logic through MLflow's REST API, the same on every
distribution and install method: tested once, on this scenario's first MLflow server, where one server holds the
logins (behind the cluster scenario's load balancer another server's login cache would answer for up to
mlflow_auth_cache_ttl); test_security.py checks every way in as converged."""

import json

import requests
from conftest import API, first_server, get, post, users

testinfra_hosts = first_server()


def permission(base, ca_file, admin, username, experiment_id):
    response = requests.get(base + "/api/3.0/mlflow/users/permissions/get", auth=admin, verify=ca_file, timeout=30,
                            params={"username": username, "resource_type": "experiment",
                                    "resource_id": experiment_id})
    return response.json().get("permission") if response.status_code == 200 else response.status_code


def test_dropped_grants_and_users_are_removed_and_nothing_else(host, base, ca_file, variables, admin, run_playbook,
                                                               changed):
    """mlflow_auth_exclusive: the role revokes the grants and deletes the users it recorded once they leave
    the inventory; MLflow's own creator grants and users made through the API stay."""
    name = host.backend.get_hostname()
    reader, outsider = users(variables)["reader"], users(variables)["outsider"]
    handmade = (f"handmade-{name}", "handmade-password-1b2c")
    made = post(base, ca_file, "/users/create", {"username": handmade[0], "password": handmade[1]}, admin)
    assert made.status_code == 200, made.text
    own = post(base, ca_file, "/experiments/create", {"name": f"reader-own-{name}"}, reader)
    assert own.status_code == 200, own.text
    own_id = own.json()["experiment_id"]
    shared = get(base, ca_file, "/experiments/get-by-name", auth=admin, experiment_name="shared-experiment")
    shared_id = shared.json()["experiment"]["experiment_id"]
    assert permission(base, ca_file, admin, reader[0], shared_id) == "READ"
    try:
        narrowed = run_playbook("mlflow.yml", "--tags", "mlflow_run", "-e",
                                '{"mlflow_auth_users": [{"name": "%s", "password": "%s"}]}' % reader, limit=name)
        assert narrowed.returncode == 0, narrowed.stdout[-3000:]
        assert get(base, ca_file, "/experiments/get", auth=reader, experiment_id=shared_id).status_code == 403
        assert get(base, ca_file, "/experiments/search", auth=outsider, max_results=1).status_code == 401
        assert permission(base, ca_file, admin, reader[0], own_id) == "MANAGE"
        assert get(base, ca_file, "/users/get", auth=admin, username=handmade[0]).status_code == 200
        assert get(base, ca_file, "/experiments/search", auth=handmade, max_results=1).status_code == 200
    finally:
        restored = run_playbook("mlflow.yml", "--tags", "mlflow_run", limit=name)
        requests.delete(base + API + "/users/delete", json={"username": handmade[0]}, auth=admin, verify=ca_file,
                        timeout=30)
        post(base, ca_file, "/experiments/delete", {"experiment_id": own_id}, admin)
    assert restored.returncode == 0, restored.stdout[-3000:]
    assert get(base, ca_file, "/experiments/get", auth=reader, experiment_id=shared_id).status_code == 200
    assert get(base, ca_file, "/experiments/search", auth=outsider, max_results=1).status_code == 200
    again = run_playbook("mlflow.yml", "--tags", "mlflow_run", limit=name)
    assert again.returncode == 0 and changed(again) == 0, again.stdout[-3000:]


def test_an_interrupted_admin_rotation_is_finished_by_the_next_run(host, base, ca_file, admin, run_playbook, changed):
    """A run killed after basic_auth.ini got the new admin password (here: mlflow_configure alone) but before
    the API step: check mode reports the pending rotation, the next run finishes it."""
    name = host.backend.get_hostname()
    new = (admin[0], admin[1] + "-rotated")
    extra = json.dumps({"vault_mlflow_admin_password": new[1]})
    try:
        half = run_playbook("mlflow.yml", "--tags", "mlflow_configure", "-e", extra, limit=name)
        assert half.returncode == 0, half.stdout[-3000:]
        pending = run_playbook("mlflow.yml", "--check", "--tags", "mlflow_configure,mlflow_run", "-e", extra,
                               limit=name)
        assert pending.returncode == 0 and changed(pending) > 0, pending.stdout[-3000:]
        assert host.file("/etc/mlflow/admin-password.previous").mode == 0o600
        finished = run_playbook("mlflow.yml", "--tags", "mlflow_configure,mlflow_run", "-e", extra, limit=name)
        assert finished.returncode == 0, finished.stdout[-3000:]
        assert get(base, ca_file, "/experiments/search", auth=new, max_results=1).status_code == 200
        assert get(base, ca_file, "/experiments/search", auth=admin, max_results=1).status_code == 401
        assert not host.file("/etc/mlflow/admin-password.previous").exists
    finally:
        restored = run_playbook("mlflow.yml", "--tags", "mlflow_configure,mlflow_run", limit=name)
    assert restored.returncode == 0, restored.stdout[-3000:]
    assert get(base, ca_file, "/experiments/search", auth=admin, max_results=1).status_code == 200
    assert get(base, ca_file, "/experiments/search", auth=new, max_results=1).status_code == 401
