"""Data safety over time, on the host that adopted an MLflow 2.x database (prepare.yml seeded it).

In order: every entity MLflow 2.x wrote is there through the API after the adoption (and a dump labelled
before-adopting-<revision> was taken first); a dump, both databases dropped, restore.yml, and the same comparison
holds and users log in; a migration forced to fail is undone (the database is as it was, the play names the
migration's error) and the next run adopts it; gc removes a run deleted long enough ago, with its objects in the
bucket (artifacts straight in the bucket as the 2.x server wrote them, and artifacts proxied by the server), and
leaves the rest; the backup timer is scheduled and its last run succeeded.
"""

import json
import re
import shlex
import time

import boto3
import pytest
import requests
from conftest import record_evidence

testinfra_hosts = ["ansible://mlflow_servers"]

# the scenario runs the collection installed from its tarball: its playbooks by name, not the repository's files
COLLECTION = "mlflowops.tracking"
SEEDED = "/root/mlflow2-entities.json"
SEEDED_RUNS = "/root/mlflow2-runs.json"
ENTITIES = "/root/mlflow_entities.py"
BACKUP = ("runuser -u mlflowbackup -- env MLFLOWOPS_BACKUP_DIR=/var/backups/mlflow "
          "/usr/bin/python3 /usr/local/lib/mlflowops/mlflow_backup.py")
LEGACY_VENV = "/opt/mlflow2"
SERVER_VENV = "/opt/mlflow/venv"
SEEN = {}


def record(key, value):
    """One figure more in the run's evidence-lifecycle.json."""
    SEEN[key] = value
    record_evidence("lifecycle", SEEN)


def psql(host, query, database="mlflow"):
    return host.check_output(f"runuser -u postgres -- psql -d {database} -XtA -c {shlex.quote(query)}")


def seeded_part(entities, seeded):
    """The experiments and registered models MLflow 2.x wrote (the probe and the tests add their own)."""
    return {
        "experiments": {name: entry for name, entry in entities["experiments"].items()
                        if name in seeded["experiments"]},
        "registered_models": {name: entry for name, entry in entities["registered_models"].items()
                              if name in seeded["registered_models"]},
    }


def same_as_seeded(entities, seeded):
    return seeded_part(entities, seeded) == seeded_part(seeded, seeded)


@pytest.fixture(scope="module")
def seeded(host):
    return json.loads(host.file(SEEDED).content_string)


@pytest.fixture(scope="module")
def seeded_runs(host):
    return json.loads(host.file(SEEDED_RUNS).content_string)


@pytest.fixture(scope="module")
def through_api(host, variables):
    """Every entity, read through the server's REST API with MLflow 3 (the admin login)."""
    def read():
        env = (f"MLFLOW_HTTP_REQUEST_MAX_RETRIES=1 MLFLOW_TRACKING_USERNAME=admin "
               f"MLFLOW_TRACKING_PASSWORD={shlex.quote(variables['vault_mlflow_admin_password'])}")
        out = host.check_output(f"env {env} {SERVER_VENV}/bin/python {ENTITIES} dump http://127.0.0.1:5000")
        return json.loads(out)
    return read


@pytest.fixture(scope="module")
def bucket(variables):
    client = boto3.client("s3", endpoint_url=variables["mlflowops_probe_s3_endpoint_url"],
                          aws_access_key_id=variables["mlflow_s3_access_key_id"],
                          aws_secret_access_key=variables["mlflow_s3_secret_access_key"],
                          region_name=variables["mlflow_s3_region"])

    def keys(uri):
        name, _, prefix = uri.removeprefix("s3://").partition("/")
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=name, Prefix=prefix.rstrip("/") + "/")
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))
    return keys


def dumps(host):
    return json.loads(host.check_output(f"{BACKUP} list"))


def adoption_dump(host):
    """The dump converge took before it adopted the 2.x database (the oldest labelled before-adopting-)."""
    return [dump for dump in dumps(host) if (dump["label"] or "").startswith("before-adopting-")][-1]


def schema_revision(host):
    return psql(host, "SELECT version_num FROM alembic_version")


def test_the_adopted_database_holds_everything_mlflow2_wrote(host, seeded, through_api):
    assert seeded["mlflow_version"].startswith("2."), seeded["mlflow_version"]
    adopted = through_api()
    assert adopted["mlflow_version"] != seeded["mlflow_version"]
    assert set(seeded["experiments"]) <= set(adopted["experiments"])
    assert same_as_seeded(adopted, seeded)
    record("entities_seeded_by_mlflow", seeded["mlflow_version"])
    record("entities", seeded["counts"])
    record("entities_after_adoption", "equal")

    # the dump converge took before migrating, named after the schema it held
    before = adoption_dump(host)
    assert set(before["databases"]) == {"mlflow", "mlflow_auth"}
    record("dump_before_adopting", {name: entry["bytes"] for name, entry in before["databases"].items()})
    marker = host.file("/var/lib/mlflow/.schema-version").content_string.split()
    assert marker[0] == adopted["mlflow_version"]


def test_backup_drop_restore_keeps_every_entity_and_login(host, variables, base, ca_file, admin, seeded,
                                                          through_api, run_playbook):
    before = through_api()
    taken = run_playbook(f"{COLLECTION}.backup")
    assert taken.returncode == 0, taken.stdout[-3000:] + taken.stderr[-2000:]
    newest = dumps(host)[0]
    assert newest["label"] is None
    record("dump_after_adoption", {name: entry["bytes"] for name, entry in newest["databases"].items()})

    host.run_expect([0], "systemctl stop mlflow.service")
    for database in ("mlflow", "mlflow_auth"):
        host.run_expect([0], f"runuser -u postgres -- dropdb --force {database}")
    assert "mlflow" not in psql(host, "SELECT datname FROM pg_database", database="postgres").split()

    started = time.monotonic()
    restored = run_playbook(f"{COLLECTION}.restore", "-e", "restore_confirm=true", timeout=1200)
    took = time.monotonic() - started
    assert restored.returncode == 0, restored.stdout[-4000:] + restored.stderr[-2000:]
    record("restore_seconds_with_probe", round(took))

    after = through_api()
    assert same_as_seeded(after, seeded)
    # and what was logged since the adoption (the probe's): every run and model version is back (the probe of
    # restore.yml adds one more of each)
    for name, experiment in before["experiments"].items():
        assert set(experiment["runs"]) <= set(after["experiments"][name]["runs"]), name
    for name, model in before["registered_models"].items():
        assert set(model["versions"]) <= set(after["registered_models"][name]["versions"]), name
    record("entities_after_restore", "equal")
    record("all_entities_after_restore", after["counts"])
    analyst = next(user for user in variables["mlflow_auth_users"] if user["name"] == "analyst")
    for login, expected in ((admin, 200), ((analyst["name"], analyst["password"]), 200),
                            ((analyst["name"], analyst["password"] + "-wrong"), 401), (None, 401)):
        response = requests.get(base + "/api/2.0/mlflow/experiments/search", params={"max_results": 10},
                                auth=login, verify=ca_file, timeout=60)
        assert response.status_code == expected, (login and login[0], response.status_code)


def test_a_failed_migration_is_undone(host, variables, seeded, through_api, run_playbook):
    """The 2.x database again (its before-adopting dump, restored by hand), with a table in the way of a 3.x
    migration: the play takes a dump, the migration fails, the database is put back from that dump, the play
    names the migration's error; without the table in the way the next run adopts it."""
    before = adoption_dump(host)
    legacy_revision = before["label"].removeprefix("before-adopting-")
    host.run_expect([0], "systemctl stop mlflow.service")
    host.run_expect([0], "runuser -u postgres -- dropdb --force mlflow")
    host.run_expect([0], "runuser -u postgres -- createdb --owner mlflow mlflow")
    # (only the backup user reads the dump directory: the file comes in on stdin)
    host.run_expect([0], f"runuser -u postgres -- pg_restore --no-owner --role=mlflow --exit-on-error -d mlflow "
                         f"< {before['path']}/mlflow.pgc")
    assert schema_revision(host) == legacy_revision
    psql(host, "SET ROLE mlflow; CREATE TABLE logged_models (planted integer)")
    # the marker named the 3.x schema of this database: without it the database counts as one to adopt
    host.run_expect([0], "rm -f /var/lib/mlflow/.schema-version")
    names_before = {dump["name"] for dump in dumps(host)}
    # the undo drops the tables and restores them from the dump: new tables (PostgreSQL would instead roll the
    # failed migration back and leave these)
    oids_before = psql(host, "SELECT 'experiments'::regclass::oid, 'logged_models'::regclass::oid")

    failed = run_playbook(f"{COLLECTION}.mlflow")
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0, failed.stdout[-3000:]
    assert "mlflow db upgrade to MLflow" in output and 'relation "logged_models" already exists' in output, \
        failed.stdout[-4000:]
    assert "The database was put back from" in output and "mlflow.service is stopped" in output, failed.stdout[-4000:]
    assert variables["vault_mlflow_db_password"] not in output
    taken = [dump for dump in dumps(host) if dump["name"] not in names_before]
    assert [dump["label"] for dump in taken] == [before["label"]], taken
    assert f"The database was put back from {taken[0]['path']}" in output, failed.stdout[-4000:]
    oids_after = psql(host, "SELECT 'experiments'::regclass::oid, 'logged_models'::regclass::oid")
    assert all(old != new for old, new in zip(oids_before.split("|"), oids_after.split("|"), strict=True)), \
        (oids_before, oids_after)
    # as it was: the 2.x schema, the table in the way, and every entity MLflow 2.x wrote
    assert schema_revision(host) == legacy_revision
    assert psql(host, "SELECT to_regclass('logged_models') IS NOT NULL") == "t"
    as_it_was = json.loads(host.check_output(
        f"{LEGACY_VENV}/bin/python {ENTITIES} dump "
        f"postgresql://mlflow:{shlex.quote(variables['vault_mlflow_db_password'])}@127.0.0.1:5432/mlflow"))
    assert same_as_seeded(as_it_was, seeded)
    assert not host.service("mlflow").is_running
    record("failed_migration_error", 'relation "logged_models" already exists')

    psql(host, "DROP TABLE logged_models")
    adopted = run_playbook(f"{COLLECTION}.mlflow")
    assert adopted.returncode == 0, adopted.stdout[-4000:] + adopted.stderr[-2000:]
    assert same_as_seeded(through_api(), seeded)


def test_gc_removes_runs_deleted_long_enough_ago_with_their_objects(host, variables, seeded, seeded_runs, bucket):
    """A run of the 2.x server (artifacts straight in the bucket) and a run logged through the server now
    (proxied artifacts, mlflow-artifacts:/ URIs: gc deletes them through the server), both deleted and aged past
    mlflow_gc_older_than; a run deleted just now and every other run stay."""
    env = (f"MLFLOW_HTTP_REQUEST_MAX_RETRIES=1 MLFLOW_TRACKING_URI=http://127.0.0.1:5000 "
           f"MLFLOW_TRACKING_USERNAME=admin "
           f"MLFLOW_TRACKING_PASSWORD={shlex.quote(variables['vault_mlflow_admin_password'])}")
    script = (
        "import mlflow, tempfile, os\n"
        "client = mlflow.MlflowClient()\n"
        "experiment = client.get_experiment_by_name('gc-proxied') or None\n"
        "experiment_id = experiment.experiment_id if experiment else client.create_experiment('gc-proxied')\n"
        "run = client.create_run(experiment_id)\n"
        "path = os.path.join(tempfile.mkdtemp(), 'proxied.txt')\n"
        "open(path, 'w').write('proxied artifact')\n"
        "client.log_artifact(run.info.run_id, path)\n"
        "client.delete_run(run.info.run_id)\n"
        "client.delete_run('" + seeded_runs["forecast-2"] + "')\n"
        "print(run.info.run_id, client.get_run(run.info.run_id).info.artifact_uri)\n"
    )
    proxied_run, proxied_uri = host.check_output(
        f"env {env} {SERVER_VENV}/bin/python -c {shlex.quote(script)}").split()
    assert proxied_uri.startswith("mlflow-artifacts:/"), proxied_uri
    legacy_run = seeded_runs["forecast-2"]
    server_env = host.file("/etc/mlflow/mlflow.env").content_string
    destination = re.search(r"^MLFLOW_ARTIFACTS_DESTINATION=(\S+)$", server_env, re.M).group(1)
    proxied_objects = destination + "/" + proxied_uri.removeprefix("mlflow-artifacts:/")
    legacy_objects = seeded["experiments"]["forecast"]["runs"][legacy_run]["artifact_uri"]
    kept_objects = seeded["experiments"]["churn"]["runs"][seeded_runs["churn-0"]]["artifact_uri"]
    for uri in (proxied_objects, legacy_objects, kept_objects):
        assert bucket(uri), uri

    aged = f"'{proxied_run}', '{legacy_run}'"
    psql(host, f"UPDATE runs SET deleted_time = deleted_time - 2 * 86400000 WHERE run_uuid IN ({aged})")
    host.run_expect([0], "systemctl start mlflow-gc.service")
    journal = host.check_output("journalctl -u mlflow-gc.service --no-pager -o cat -n 50")
    for run_id in (proxied_run, legacy_run):
        assert f"Run with ID {run_id} has been permanently deleted" in journal, journal

    assert psql(host, f"SELECT count(*) FROM runs WHERE run_uuid IN ({aged})") == "0"
    assert bucket(proxied_objects) == [] and bucket(legacy_objects) == []
    assert bucket(kept_objects)
    # deleted in prepare, just now as far as the threshold goes: kept
    young = seeded_runs["forecast-1"]
    assert psql(host, f"SELECT lifecycle_stage FROM runs WHERE run_uuid = '{young}'") == "deleted"
    assert host.check_output("systemctl show -P Result mlflow-gc.service") == "success"
    timer = host.service("mlflow-gc.timer")
    assert timer.is_enabled and timer.is_running
    record("gc_removed", {"runs": 2, "objects_left": 0})


def test_the_backup_timer_is_scheduled_and_its_last_run_succeeded(host):
    timer = host.service("mlflow-backup.timer")
    assert timer.is_enabled and timer.is_running
    assert host.check_output("systemctl show -P NextElapseUSecRealtime mlflow-backup.timer")
    # its service ran (backup.yml starts it) and exited 0
    assert int(host.check_output("systemctl show -P ExecMainStartTimestampMonotonic mlflow-backup.service")) > 0
    assert host.check_output("systemctl show -P Result mlflow-backup.service") == "success"
    assert host.check_output("systemctl show -P ExecMainStatus mlflow-backup.service") == "0"
