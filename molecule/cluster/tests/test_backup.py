"""Dumps on the database host: the timer is scheduled, playbooks/backup.yml takes a dump (the service's last run
succeeded), a failed dump shows in systemctl --failed and in the journal with its cause, and playbooks/restore.yml
refuses without its confirm switch, then brings back exactly what a labelled dump held (a later experiment is gone,
the earlier run and its metric are back, users still log in) and the probe passes."""

import json
import time

import requests

testinfra_hosts = ["ansible://mlflowops-docker"]

API = "/api/2.0/mlflow"
SCRIPT = "/usr/local/lib/mlflowops/mlflow_backup.py"
PGPASS = "/etc/mlflowops/backup/pgpass"


def api(base, ca_file, auth, method, path, **kwargs):
    response = requests.request(method, base + API + path, auth=auth, verify=ca_file, timeout=60, **kwargs)
    assert response.status_code == 200, f"{method} {path}: {response.status_code} {response.text}"
    return response.json()


def experiment(base, ca_file, admin, name):
    """The experiment's id, or None when there is none of that name."""
    response = requests.get(base + API + "/experiments/get-by-name", params={"experiment_name": name}, auth=admin,
                            verify=ca_file, timeout=60)
    return response.json()["experiment"]["experiment_id"] if response.status_code == 200 else None


def dumps(db):
    out = db.check_output(f"runuser -u mlflowbackup -- env MLFLOWOPS_BACKUP_DIR=/var/backups/mlflow "
                          f"/usr/bin/python3 {SCRIPT} list")
    return json.loads(out)


def test_the_timer_is_scheduled_and_a_dump_now_succeeds(other_host, variables, run_playbook):
    db = other_host(variables["groups"]["mlflow_db"][0])
    timer = db.service("mlflow-backup.timer")
    assert timer.is_enabled and timer.is_running
    assert db.check_output("systemctl show -P NextElapseUSecRealtime mlflow-backup.timer")
    result = run_playbook("backup.yml")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert db.check_output("systemctl show -P Result mlflow-backup.service") == "success"
    newest = dumps(db)[0]
    assert newest["label"] is None
    assert set(newest["databases"]) == {"mlflow", "mlflow_auth"}, newest
    for entry in newest["databases"].values():
        assert entry["bytes"] > 0
    assert db.file(PGPASS).mode == 0o600 and db.file(PGPASS).user == "mlflowbackup"


def test_a_failed_dump_is_visible_and_the_next_run_repairs_it(other_host, variables, run_playbook):
    db = other_host(variables["groups"]["mlflow_db"][0])
    good = db.file(PGPASS).content_string
    db.run_expect([0], f"sed -i 's/:[^:]*$/:not-the-password/' {PGPASS}")
    try:
        # the dump alone: the role would write the password file back first
        failed = run_playbook("backup.yml", "--tags", "backup_now")
        assert failed.returncode != 0
        assert "password authentication failed" in failed.stdout + failed.stderr, failed.stdout[-3000:]
        assert "mlflow-backup.service" in db.check_output("systemctl --failed --no-legend --plain")
        journal = db.check_output("journalctl -u mlflow-backup.service --no-pager -o cat -n 30")
        assert "mlflow-backup: ERROR:" in journal and "password authentication failed" in journal, journal
        assert "not-the-password" not in failed.stdout + failed.stderr
    finally:
        repaired = run_playbook("backup.yml")
    assert repaired.returncode == 0, repaired.stdout[-3000:]
    assert db.file(PGPASS).content_string == good
    assert db.check_output("systemctl show -P Result mlflow-backup.service") == "success"
    assert "mlflow-backup.service" not in db.check_output("systemctl --failed --no-legend --plain")


def test_restore_brings_back_what_the_dump_held(host, other_host, variables, base, ca_file, admin, run_playbook):
    db = other_host(variables["groups"]["mlflow_db"][0])
    stamp = str(int(time.time()))
    kept = f"before-dump-{stamp}"
    experiment_id = api(base, ca_file, admin, "POST", "/experiments/create", json={"name": kept})["experiment_id"]
    run_id = api(base, ca_file, admin, "POST", "/runs/create",
                 json={"experiment_id": experiment_id})["run"]["info"]["run_id"]
    api(base, ca_file, admin, "POST", "/runs/log-metric",
        json={"run_id": run_id, "key": "kept", "value": 7.0, "timestamp": 0, "step": 3})
    label = f"restore-test-{stamp}"
    taken = run_playbook("backup.yml", "-e", f"backup_label={label}")
    assert taken.returncode == 0, taken.stdout[-3000:] + taken.stderr[-2000:]
    (dump,) = [d for d in dumps(db) if d["label"] == label]
    later = f"after-dump-{stamp}"
    api(base, ca_file, admin, "POST", "/experiments/create", json={"name": later})

    refused = run_playbook("restore.yml", "-e", f"restore_dump={dump['name']}")
    assert refused.returncode != 0 and "restore_confirm" in refused.stdout + refused.stderr, refused.stdout[-3000:]
    assert experiment(base, ca_file, admin, later) is not None
    assert host.service("mlflow").is_running

    started = time.monotonic()
    restored = run_playbook("restore.yml", "-e", "restore_confirm=true", "-e", f"restore_dump={dump['name']}",
                            timeout=1200)
    took = time.monotonic() - started
    assert restored.returncode == 0, restored.stdout[-4000:] + restored.stderr[-2000:]
    print(f"restore of {dump['name']} ({sum(d['bytes'] for d in dump['databases'].values())} bytes) "
          f"took {took:.0f} s with the probe")
    assert experiment(base, ca_file, admin, later) is None
    assert experiment(base, ca_file, admin, kept) == experiment_id
    metric = api(base, ca_file, admin, "GET", "/runs/get", params={"run_id": run_id})["run"]["data"]["metrics"]
    assert [(m["key"], m["value"], m["step"]) for m in metric] == [("kept", 7.0, 3)]
    reader = next(u for u in variables["mlflow_auth_users"] if u["name"] == "reader")
    assert requests.get(base + API + "/experiments/get-by-name", params={"experiment_name": "shared-experiment"},
                        auth=(reader["name"], reader["password"]), verify=ca_file, timeout=60).status_code == 200
