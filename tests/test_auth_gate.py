"""The role's authorization function (roles/mlflow/files/mlflowops_auth.py) in a real `mlflow server` with basic auth
over a real PostgreSQL (test_postgresql_check's server), with a tracking store pool of two connections (1 + 1
overflow; MLflow passes an overflow of 0 on as SQLAlchemy's default, 10).

MLflow's log-batch holds one pooled connection while it asks for a second (log_batch opens a session, _log_metrics
another). Sixteen clients sending log-batch requests together take both connections as first ones, and those wait
for a second until SQLAlchemy's pool timeout (30 s) fails them: with MLflow's own authorization function this load
failed 40 of 48 requests (QueuePool limit of size 1 overflow 1 reached) when the test was written. With the role's
function, its gate lets one request into the app at a time, and every request succeeds."""

import os
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
import requests
import test_postgresql_check as postgresql
from test_probe import start, stop

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ADMIN = ("admin", "gate-admin-password-4711")
server = postgresql.server  # the fixture: a PostgreSQL of its own on loopback
CLIENTS = 16
BATCHES = 3


def psql(database_server, sql):
    subprocess.run([str(database_server.bin_dir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
                    "-h", str(database_server.base), "-p", str(database_server.port), "-U", "postgres",
                    "-d", "postgres", "-c", sql], check=True, capture_output=True, text=True)


@pytest.fixture
def tracking(server, tmp_path):
    """An authenticated `mlflow server` with the role's authorization function, on fresh databases."""
    for database in ("gate", "gate_auth"):
        psql(server, f"DROP DATABASE IF EXISTS {database}")
        psql(server, f"CREATE DATABASE {database} OWNER mlflow")

    def uri(database):
        password = urllib.parse.quote(postgresql.PASSWORD, safe="")
        return f"postgresql+psycopg2://mlflow:{password}@127.0.0.1:{server.port}/{database}?sslmode=require"

    (tmp_path / "basic_auth.ini").write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = {uri('gate_auth').replace('%', '%%')}\n"
        f"admin_username = {ADMIN[0]}\nadmin_password = {ADMIN[1]}\n"
        "authorization_function = mlflowops_auth:authenticate_request\n"
    )
    port = postgresql.free_port()
    env = dict(os.environ, MLFLOW_AUTH_CONFIG_PATH=str(tmp_path / "basic_auth.ini"),
               MLFLOW_FLASK_SERVER_SECRET_KEY="gate-test-flask-secret", PYTHONPATH=str(REPO / "roles/mlflow/files"),
               MLFLOWOPS_AUTH_CHECK_CONCURRENCY="4", MLFLOW_SQLALCHEMYSTORE_POOL_SIZE="1",
               MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW="1")
    process = start([str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                     "--backend-store-uri", uri("gate"), "--default-artifact-root", str(tmp_path / "a"),
                     "--app-name", "basic-auth"], env, tmp_path / "server.log")
    try:
        deadline = time.monotonic() + 180
        while not healthy(port):
            assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "server.log").read_text()[-3000:]
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/api/2.0/mlflow"
    finally:
        stop(process)


def healthy(port):
    try:
        return requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def call(session, url, body):
    try:
        response = session.post(url, json=body, auth=ADMIN, timeout=180)
        return None if response.status_code == 200 else f"{response.status_code} {response.text[:160]}"
    except requests.RequestException as exception:
        return repr(exception)[:160]


def test_concurrent_log_batch_beyond_the_pool(tracking):
    api = tracking
    with requests.Session() as session:
        # the first authenticated request imports the authorization function (and with it, the gate)
        created = session.post(api + "/experiments/create", json={"name": "gate"}, auth=ADMIN, timeout=60)
        assert created.status_code == 200, created.text
        experiment_id = created.json()["experiment_id"]
        runs = [session.post(api + "/runs/create", json={"experiment_id": experiment_id}, auth=ADMIN,
                             timeout=60).json()["run"]["info"]["run_id"] for _ in range(CLIENTS)]
    failures, barrier = [], threading.Barrier(CLIENTS)

    def client(run_id):
        # a login check first (it is cached), so that the log-batch requests reach the store together
        with requests.Session() as session:
            session.get(api + "/experiments/get", params={"experiment_id": experiment_id}, auth=ADMIN, timeout=180)
        barrier.wait()
        # a new connection after the barrier: the server closes a connection idle for 5 s (uvicorn's keep-alive
        # timeout), and a request sent on one it is closing at that moment is reset, whatever the gate does
        with requests.Session() as session:
            for batch in range(BATCHES):
                metrics = [{"key": f"m{index}", "value": batch, "timestamp": int(time.time() * 1000), "step": batch}
                           for index in range(20)]
                error = call(session, api + "/runs/log-batch", {"run_id": run_id, "metrics": metrics})
                if error:
                    failures.append(error)

    threads = [threading.Thread(target=client, args=(run_id,)) for run_id in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(f"{len(failures)} of {CLIENTS * BATCHES} log-batch requests failed", sorted(set(failures))[:3])
    assert failures == []
