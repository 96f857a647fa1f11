"""roles/backup/files/mlflow_backup.py against a real PostgreSQL server on loopback, started for this module.

The server (initdb + pg_ctl of Debian's postgresql package, installed when missing by test_postgresql_check.py)
accepts TCP logins on 127.0.0.1 with scram-sha-256 only: the script's .pgpass is really used. The MLflow role's
password has ':' and '\\' in it, which .pgpass escapes. The script runs as the host runs it: the system python3
(standard library only), the settings in its environment. The bucket copy goes to a moto server on loopback.
"""

import datetime
import fcntl
import glob
import hashlib
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import test_postgresql_check as postgresql

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "roles" / "backup" / "files" / "mlflow_backup.py"
SYSTEM_PYTHON = "/usr/bin/python3"
PASSWORD = "Back:up\\p@ss:w0rd\\"
WRONG_PASSWORD = "Wr0ng:guess\\"
NAME = re.compile(r"\d{8}T\d{6}Z(-.+)?")


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, bin_dir, base, port):
        self.bin_dir, self.base, self.port = bin_dir, base, port
        self.major = int(bin_dir.parent.name)

    def psql(self, database, sql):
        """SQL as the superuser over the socket (trust); the unaligned output."""
        return subprocess.run([str(self.bin_dir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                               "-h", str(self.base), "-p", str(self.port), "-U", "postgres", "-d", database],
                              input=sql, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture(scope="module")
def server():
    bin_dir = postgresql.newest_initdb() or postgresql.install_postgresql()
    base = Path(tempfile.mkdtemp(prefix="mlflowops-backup-"))
    as_user = {}
    if os.geteuid() == 0:  # initdb and postgres refuse root
        nobody = pwd.getpwnam("nobody")
        os.chown(base, nobody.pw_uid, nobody.pw_gid)
        as_user = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
    env = dict(os.environ, HOME=str(base), LC_ALL="C.UTF-8")
    data, port, log = base / "data", free_port(), base / "postgresql.log"

    def run(*command):
        return subprocess.run(command, env=env, cwd=base, check=True, capture_output=True, text=True, **as_user)

    try:
        run(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-E", "UTF8", "--no-locale",
            "--auth=trust", "--no-sync")
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(f"listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{base}'\n"
                       "fsync = off\nsynchronous_commit = off\nmax_connections = 20\nshared_buffers = 16MB\n")
        (data / "pg_hba.conf").write_text("local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n")
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "30", "start")
        server = Server(bin_dir, base, port)
        literal = "'" + PASSWORD.replace("'", "''") + "'"
        server.psql("postgres", f"""
            CREATE ROLE mlflow LOGIN PASSWORD {literal};
            CREATE DATABASE mlflow OWNER mlflow;
            CREATE DATABASE mlflow_auth OWNER mlflow;
            \\c mlflow mlflow
            CREATE TABLE experiments (id int PRIMARY KEY, name text NOT NULL);
            INSERT INTO experiments SELECT n, 'experiment ' || n FROM generate_series(1, 50) AS n;
            \\c mlflow_auth mlflow
            CREATE TABLE users (id int PRIMARY KEY, username text NOT NULL);
            INSERT INTO users VALUES (1, 'admin'), (2, 'alice'), (3, 'bob');
            """)
        yield server
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"{exc.cmd} failed: {exc.stderr}\n{log.read_text() if log.exists() else ''}")
    finally:
        subprocess.run([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"], env=env,
                       cwd=base, capture_output=True, check=False, **as_user)
        shutil.rmtree(base, ignore_errors=True)


def pgpass_line(port, password):
    """host:port:database:user:password, with ':' and '\\' escaped as libpq reads them."""
    return f"127.0.0.1:{port}:*:mlflow:{password.replace(chr(92), chr(92) * 2).replace(':', chr(92) + ':')}\n"


class Host:
    """The backup host's side: the dump directory, the password file, the environment of the unit."""

    def __init__(self, server, tmp_path):
        self.server, self.dir, self.pgpass = server, tmp_path / "backups", tmp_path / "pgpass"
        self.dir.mkdir(mode=0o750)
        self.write_pgpass(PASSWORD)
        self.env = {
            "PATH": f"{server.bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8",
            "PGHOST": "127.0.0.1", "PGPORT": str(server.port), "PGUSER": "mlflow", "PGPASSFILE": str(self.pgpass),
            "PGSSLMODE": "disable", "MLFLOWOPS_BACKUP_DIR": str(self.dir),
            "MLFLOWOPS_BACKUP_DATABASES": "mlflow mlflow_auth",
        }

    def write_pgpass(self, password):
        self.pgpass.write_text(pgpass_line(self.server.port, password))
        self.pgpass.chmod(0o600)

    def run(self, *args, python=(SYSTEM_PYTHON,), **env):
        result = subprocess.run([*python, str(SCRIPT), *args], env={**self.env, **env}, capture_output=True,
                                text=True, timeout=60, check=False)
        print(result.stdout, result.stderr, sep="\n")  # shown with pytest -s, or when a test fails
        for text in (result.stdout, result.stderr):
            assert PASSWORD not in text and WRONG_PASSWORD not in text
            assert pgpass_line(self.server.port, PASSWORD).strip() not in text
        return result

    def entries(self):
        return sorted(path.name for path in self.dir.iterdir())


@pytest.fixture
def host(server, tmp_path):
    return Host(server, tmp_path)


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# --- a dump --------------------------------------------------------------------------------------------------

def test_a_dump(host, server):
    result = host.run()
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    [name] = host.entries()
    assert NAME.fullmatch(name) and not name.count("-")
    dump = host.dir / name
    assert dump.stat().st_mode & 0o777 == 0o750
    assert sorted(path.name for path in dump.iterdir()) == ["manifest.json", "mlflow.pgc", "mlflow_auth.pgc"]
    manifest = json.loads((dump / "manifest.json").read_text())
    assert manifest["name"] == name and manifest["label"] is None
    stamp = datetime.datetime.strptime(name, "%Y%m%dT%H%M%SZ")
    assert re.fullmatch(stamp.strftime("%Y-%m-%dT%H:%M:%S") + r"\.\d{6}Z", manifest["created"]), manifest
    assert manifest["server_major"] == server.major == manifest["client_major"]
    assert manifest["server_version"] == server.psql("postgres", "SHOW server_version")
    assert set(manifest["databases"]) == {"mlflow", "mlflow_auth"}
    for database, entry in manifest["databases"].items():
        path = dump / entry["file"]
        assert entry["file"] == f"{database}.pgc"
        assert entry["bytes"] == path.stat().st_size > 0 and entry["sha256"] == sha256(path)
    listing = subprocess.run([str(server.bin_dir / "pg_restore"), "--list", str(dump / "mlflow.pgc")],
                             capture_output=True, text=True, check=True).stdout
    assert "TABLE DATA public experiments" in listing
    listing = subprocess.run([str(server.bin_dir / "pg_restore"), "--list", str(dump / "mlflow_auth.pgc")],
                             capture_output=True, text=True, check=True).stdout
    assert "TABLE DATA public users" in listing
    # and it restores: the rows are back in a fresh database
    server.psql("postgres", "DROP DATABASE IF EXISTS restored; CREATE DATABASE restored;")
    subprocess.run([str(server.bin_dir / "pg_restore"), "-h", str(server.base), "-p", str(server.port), "-U",
                    "postgres", "-d", "restored", "--no-owner", "--exit-on-error", str(dump / "mlflow.pgc")],
                   capture_output=True, text=True, check=True)
    assert server.psql("restored", "SELECT count(*) FROM experiments") == "50"
    lines = result.stdout.splitlines()
    assert all(line.startswith("mlflow-backup: ") for line in lines), lines
    assert lines[0].startswith(f"mlflow-backup: server 127.0.0.1:{server.port} runs PostgreSQL {server.major}.")
    assert re.fullmatch(r"mlflow-backup: dumped mlflow \(\d+(\.\d)? k?B, \d+\.\d s\)", lines[1]), lines
    assert lines[2].startswith("mlflow-backup: dumped mlflow_auth (")
    assert lines[3].startswith(f"mlflow-backup: dump complete: {dump} (2 databases, ")
    assert lines[-1].startswith("mlflow-backup: retention: scheduled dumps kept: 1 (")


def test_a_label_names_the_dump_and_a_second_in_use_gets_a_suffix(host):
    # the names of the next seconds are taken already: the dump takes <time>-manual-2
    now = datetime.datetime.now(datetime.timezone.utc)
    taken = [(now + datetime.timedelta(seconds=n)).strftime("%Y%m%dT%H%M%SZ") + "-manual" for n in range(-1, 15)]
    for name in taken:
        (host.dir / name).mkdir()
    result = host.run("dump", "--label", "manual")
    assert result.returncode == 0, result.stderr
    [name] = set(host.entries()) - set(taken)
    assert name.endswith("-manual-2") and name[:-2] in taken
    assert json.loads((host.dir / name / "manifest.json").read_text())["label"] == "manual"

    result = host.run("dump", "--label", "before-3.17.2")
    assert result.returncode == 0, result.stderr
    [name] = [entry for entry in host.entries() if entry.endswith("-before-3.17.2")]
    manifest = json.loads((host.dir / name / "manifest.json").read_text())
    assert manifest["label"] == "before-3.17.2" and manifest["name"] == name


@pytest.mark.parametrize("label", ["has space", "a/b", "x" * 65, "", "ünï"])
def test_a_bad_label_is_a_usage_error(host, label):
    result = host.run("dump", "--label", label)
    assert result.returncode == 2
    assert "mlflow-backup: ERROR: argument --label: a label is 1 to 64 of A-Z a-z 0-9 . _ -" in result.stderr
    assert host.entries() == []


def test_list_and_latest(host):
    assert host.run("list").stdout.strip() == "[]"
    result = host.run("latest")
    assert result.returncode == 1
    assert result.stderr.strip() == f"mlflow-backup: ERROR: no complete dump in {host.dir}"

    assert host.run().returncode == 0
    assert host.run("dump", "--label", "manual").returncode == 0
    listing = json.loads(host.run("list").stdout)
    assert [entry["label"] for entry in listing] == ["manual", None]
    assert [entry["name"] for entry in listing] == sorted(host.entries(), key=lambda name: name.endswith("manual"),
                                                          reverse=True)
    for entry in listing:
        assert entry["path"] == str(host.dir / entry["name"])
        assert set(entry["databases"]) == {"mlflow", "mlflow_auth"}
    # list and latest need the directory only (restore.yml runs them so)
    only_dir = {key: "" for key in host.env if key.startswith("PG") or key == "MLFLOWOPS_BACKUP_DATABASES"}
    result = host.run("latest", **only_dir)
    assert result.returncode == 0 and result.stdout == listing[0]["path"] + "\n"


def other_pythons():
    """The hosts' Pythons (3.10-3.13) this machine has besides the system one (pyenv's)."""
    found = []
    for minor in (10, 11, 12, 13):
        paths = sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/3.{minor}.*/bin/python3.{minor}")))
        if paths and Path(paths[-1]).resolve() != Path(SYSTEM_PYTHON).resolve():
            found.append(pytest.param(paths[-1], id=f"python3.{minor}"))
    return found


@pytest.mark.parametrize("python", other_pythons())
def test_other_pythons(host, python):
    result = host.run("dump", "--label", "x", python=(python, "-I"))
    assert result.returncode == 0, result.stderr
    assert json.loads(host.run("list", python=(python, "-I")).stdout)[0]["label"] == "x"


# --- retention -----------------------------------------------------------------------------------------------

def fabricate(host, name, label=None):
    """An old dump directory with a valid manifest."""
    path = host.dir / name
    path.mkdir()
    (path / "mlflow.pgc").write_bytes(b"PGDMP")
    stamp = datetime.datetime.strptime(name[:16], "%Y%m%dT%H%M%SZ")
    (path / "manifest.json").write_text(json.dumps({
        "name": name, "label": label, "created": stamp.strftime("%Y-%m-%dT%H:%M:%SZ"), "server_version": "15.1",
        "server_major": 15, "client_major": 15,
        "databases": {"mlflow": {"file": "mlflow.pgc", "bytes": 5, "sha256": sha256(path / "mlflow.pgc")}},
    }))


@pytest.mark.parametrize(("daily", "weekly", "old_kept"), [
    # 2025-01-01..05 is ISO week 1, 2025-01-06..10 week 2; the new dump's day and week are the newest
    (3, 2, ["20250109T150000Z", "20250110T150000Z"]),
    (3, 3, ["20250105T150000Z", "20250109T150000Z", "20250110T150000Z"]),
    (1, 0, []),
    (12, 0, [f"202501{day:02d}T150000Z" for day in range(1, 11)]),
])
def test_retention(host, daily, weekly, old_kept):
    old = [f"202501{day:02d}T{hour}0000Z" for day in range(1, 11) for hour in ("03", "15")]
    for name in old:
        fabricate(host, name)
    fabricate(host, "20241201T030000Z-before-3.17.2", label="before-3.17.2")
    (host.dir / "20250102T120000Z").mkdir()  # no manifest: not a dump the script knows, left alone
    for name, age in ((".partial-20250103T030000Z", 2 * 86400), (".partial-20251130T000000Z", 3600)):
        (host.dir / name).mkdir()
        (host.dir / name / "mlflow.pgc").write_bytes(b"PG")
        os.utime(host.dir / name, (time.time() - age, time.time() - age))
    before = set(host.entries())

    result = host.run(MLFLOWOPS_BACKUP_KEEP_DAILY=str(daily), MLFLOWOPS_BACKUP_KEEP_WEEKLY=str(weekly))
    assert result.returncode == 0, result.stderr
    [new] = set(host.entries()) - before
    assert set(host.entries()) == {new, *old_kept, "20241201T030000Z-before-3.17.2", "20250102T120000Z",
                                   ".partial-20251130T000000Z"}
    removed = sorted(set(old) - set(old_kept))
    assert re.findall(r"^mlflow-backup: removed old dump (\S+)$", result.stdout, re.M) == removed
    assert "mlflow-backup: removed stale partial dump .partial-20250103T030000Z" in result.stdout
    assert (f"mlflow-backup: retention: scheduled dumps kept: {len(old_kept) + 1} (the newest of each of the last "
            f"{daily} days and {weekly} ISO weeks), labelled kept: 1, removed: {len(removed)}\n") in result.stdout
    assert "20250102T120000Z is not a complete dump" in result.stderr


# --- failures ------------------------------------------------------------------------------------------------

def test_an_older_pg_dump_is_refused(host, server, tmp_path):
    fake = tmp_path / "fake-bin"
    fake.mkdir()
    (fake / "pg_dump").write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 9.6.1'\n")
    (fake / "pg_dump").chmod(0o755)
    result = host.run(PATH=f"{fake}:{host.env['PATH']}")
    assert result.returncode == 1
    assert result.stderr == (
        f"mlflow-backup: ERROR: pg_dump is PostgreSQL 9 but the server runs PostgreSQL {server.major}: a dump by an "
        f"older pg_dump may be incomplete; install postgresql-client-{server.major} (or newer) on this host\n")
    assert host.entries() == []


def test_a_wrong_password_fails_with_the_servers_message(host, server):
    host.write_pgpass(WRONG_PASSWORD)
    result = host.run()
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("mlflow-backup: ERROR: "), line
    assert f'"127.0.0.1", port {server.port} failed' in line
    assert 'password authentication failed for user "mlflow"' in line
    assert result.stdout == "" and host.entries() == []


def test_a_failed_pg_dump_leaves_nothing(host):
    result = host.run(MLFLOWOPS_BACKUP_DATABASES="mlflow no_such_db")
    assert result.returncode == 1
    assert "mlflow-backup: dumped mlflow (" in result.stdout
    assert result.stderr.startswith("mlflow-backup: ERROR: pg_dump of no_such_db failed (exit 1): ")
    assert 'database "no_such_db" does not exist' in result.stderr
    assert host.entries() == []


@pytest.mark.parametrize(("env", "message"), [
    ({"MLFLOWOPS_BACKUP_DIR": ""}, "MLFLOWOPS_BACKUP_DIR is not set"),
    ({"MLFLOWOPS_BACKUP_DATABASES": ""}, "MLFLOWOPS_BACKUP_DATABASES is not set"),
    ({"MLFLOWOPS_BACKUP_KEEP_DAILY": "0"}, "MLFLOWOPS_BACKUP_KEEP_DAILY must be a whole number of at least 1"),
    ({"MLFLOWOPS_BACKUP_KEEP_WEEKLY": "two"}, "MLFLOWOPS_BACKUP_KEEP_WEEKLY must be a whole number of at least 0"),
    ({"MLFLOWOPS_BACKUP_S3_URI": "https://bucket/x"}, "MLFLOWOPS_BACKUP_S3_URI must look like s3://bucket/prefix"),
])
def test_a_configuration_error(host, env, message):
    result = host.run(**env)
    assert result.returncode == 2
    assert result.stderr.startswith(f"mlflow-backup: ERROR: {message}"), result.stderr
    assert host.entries() == []


def test_a_password_file_others_can_read(host):
    host.pgpass.chmod(0o644)
    result = host.run()
    assert result.returncode == 1
    assert result.stderr == (f"mlflow-backup: ERROR: the password file PGPASSFILE={host.pgpass} has mode 0644: libpq "
                             "ignores it unless only its owner can read it (chmod 0600)\n")


def test_root_refuses_a_directory_another_user_owns(host):
    if os.geteuid() != 0:
        pytest.skip("only root can run into this")
    os.chown(host.dir, pwd.getpwnam("nobody").pw_uid, -1)
    result = host.run()
    assert result.returncode == 1
    assert result.stderr.startswith(f"mlflow-backup: ERROR: running as root in {host.dir}, which uid ")
    assert host.entries() == []


def fake_pg_dump(host, tmp_path, script):
    """A pg_dump first on PATH that answers --version as the real one does and runs `script` otherwise."""
    fake = tmp_path / "fake-bin"
    fake.mkdir()
    real = host.server.bin_dir / "pg_dump"
    (fake / "pg_dump").write_text(f'#!/bin/sh\n[ "$1" = --version ] && exec {real} --version\n{script}\n')
    (fake / "pg_dump").chmod(0o755)
    return {"PATH": f"{fake}:{host.env['PATH']}"}


def test_sigterm_removes_the_partial_dump(host, tmp_path):
    env = fake_pg_dump(host, tmp_path, 'for arg; do case $arg in --file=*) touch "${arg#--file=}";; esac; done\n'
                                       "exec sleep 30")
    sigterm_once_there(host, env, [], ".partial-*/mlflow.pgc", "pg_dump did not start")
    assert host.entries() == []


def sigterm_once_there(host, env, args, pattern, what):
    """Run the script with ARGS, send it SIGTERM once PATTERN exists in the dump directory: it stops, saying so."""
    process = subprocess.Popen([SYSTEM_PYTHON, str(SCRIPT), *args], env={**host.env, **env}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 10
    while not list(host.dir.glob(pattern)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(host.dir.glob(pattern)), what
    process.terminate()
    _, stderr = process.communicate(timeout=10)
    assert process.returncode == 1
    assert stderr == "mlflow-backup: ERROR: stopped by SIGTERM\n"


def test_a_second_run_waits_for_the_first(host):
    fd = os.open(host.dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        process = subprocess.Popen([SYSTEM_PYTHON, str(SCRIPT)], env=host.env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        assert process.stdout.readline() == \
            f"mlflow-backup: waiting for another mlflow-backup run in {host.dir} to finish\n"
        time.sleep(0.2)
        assert host.entries() == []
    finally:
        os.close(fd)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert "mlflow-backup: dump complete: " in stdout and len(host.entries()) == 1


# --- the bucket copy -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def s3():
    from moto.server import ThreadedMotoServer

    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    yield f"http://127.0.0.1:{port}"
    moto.stop()


def bucket_env(s3, uri):
    return {"MLFLOWOPS_BACKUP_S3_URI": uri, "MLFLOWOPS_BACKUP_S3_ENDPOINT_URL": s3, "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing-secret", "AWS_DEFAULT_REGION": "us-east-1"}


def test_the_bucket_copy(host, s3):
    import boto3

    client = boto3.client("s3", endpoint_url=s3, aws_access_key_id="testing",
                          aws_secret_access_key="testing-secret", region_name="us-east-1")
    client.create_bucket(Bucket="backups")
    # boto3 is the host's python3-boto3: this interpreter has it
    result = host.run(python=(sys.executable,), **bucket_env(s3, "s3://backups//mlflow-backups/site/"))
    assert result.returncode == 0, result.stderr
    [name] = host.entries()
    objects = client.list_objects_v2(Bucket="backups")["Contents"]
    assert sorted(item["Key"] for item in objects) == [
        f"mlflow-backups/site/{name}/{file}" for file in ("manifest.json", "mlflow.pgc", "mlflow_auth.pgc")]
    for file in ("manifest.json", "mlflow.pgc", "mlflow_auth.pgc"):
        body = client.get_object(Bucket="backups", Key=f"mlflow-backups/site/{name}/{file}")["Body"].read()
        assert hashlib.sha256(body).hexdigest() == sha256(host.dir / name / file)
    assert (f"mlflow-backup: copied {name} to s3://backups/mlflow-backups/site/{name}/ (3 files, "
            in result.stdout)
    assert "testing-secret" not in result.stdout + result.stderr

    # no prefix: the dump's directory at the top of the bucket
    result = host.run(python=(sys.executable,), **bucket_env(s3, "s3://backups"))
    assert result.returncode == 0, result.stderr
    newest = json.loads(host.run("list").stdout)[0]["name"]
    assert client.head_object(Bucket="backups", Key=f"{newest}/manifest.json")["ContentLength"] > 0


def test_a_failed_bucket_copy_keeps_the_dump(host, s3):
    result = host.run(python=(sys.executable,), **bucket_env(s3, "s3://no-such-bucket/x"))
    assert result.returncode == 1
    [name] = host.entries()
    assert (host.dir / name / "manifest.json").is_file()
    assert result.stderr.startswith(f"mlflow-backup: ERROR: the copy to s3://no-such-bucket/x/{name}/ failed: ")
    assert "NoSuchBucket" in result.stderr or "does not exist" in result.stderr
    assert result.stderr.rstrip().endswith(f"(the dump stays in {host.dir / name})")


def test_a_bucket_copy_without_boto3(host, s3):
    # python3 -S: no site-packages, so no boto3 even where the host has python3-boto3
    result = host.run(python=(SYSTEM_PYTHON, "-S"), **bucket_env(s3, "s3://backups/x"))
    assert result.returncode == 1
    [name] = host.entries()
    assert result.stderr.startswith(f"mlflow-backup: ERROR: the copy to s3://backups/x/{name}/ needs boto3 "
                                    "(apt-get install python3-boto3)")


# --- the schema revision, and undoing a failed migration ----------------------------------------------------

@pytest.fixture
def schema(server):
    """An MLflow-like schema revision in the tracking database for one test (as the MLflow role: it owns it)."""
    server.psql("mlflow", "SET ROLE mlflow; CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY);"
                          "INSERT INTO alembic_version VALUES ('0584bdc529eb');")
    yield
    server.psql("mlflow", "DROP TABLE IF EXISTS alembic_version; DROP TABLE IF EXISTS logged_models;"
                          "DROP FUNCTION IF EXISTS guard() CASCADE; DROP SEQUENCE IF EXISTS spare_seq;")


def test_schema_of_a_database_without_mlflow_tables_is_empty(host):
    result = host.run("schema")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "\n"


def test_schema_names_the_revision(host, schema):
    result = host.run("schema")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "0584bdc529eb\n"


def test_undo_migration_puts_the_database_back_as_in_the_dump(host, server, schema):
    assert host.run("dump", "--label", "before-3.16.0").returncode == 0
    [name] = host.entries()
    # a migration that went half way: rows changed, tables, a sequence, a function with its trigger added
    server.psql("mlflow", """
        SET ROLE mlflow;
        UPDATE alembic_version SET version_num = 'dc11669786a5';
        DELETE FROM experiments WHERE id > 10;
        CREATE TABLE logged_models (id int);
        CREATE SEQUENCE spare_seq;
        CREATE FUNCTION guard() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END; $$;
        CREATE TRIGGER guard_experiments BEFORE UPDATE ON experiments FOR EACH ROW EXECUTE FUNCTION guard();
        """)
    result = host.run("undo-migration", name)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(rf"mlflow-backup: mlflow is back as in {name} \(schema 0584bdc529eb, \d+\.\d s\)\n",
                        result.stdout), result.stdout
    assert server.psql("mlflow", "SELECT count(*) FROM experiments") == "50"
    assert server.psql("mlflow", "SELECT version_num FROM alembic_version") == "0584bdc529eb"
    assert server.psql("mlflow", "SELECT to_regclass('logged_models') IS NULL AND to_regclass('spare_seq') IS NULL"
                                 " AND to_regprocedure('guard()') IS NULL") == "t"
    assert server.psql("mlflow", "SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class WHERE relname IN "
                                 "('experiments', 'alembic_version')") == "mlflow"
    # the auth database is not a migration's: untouched
    assert server.psql("mlflow_auth", "SELECT count(*) FROM users") == "3"


def test_undo_migration_that_cannot_restore_changes_nothing(host, server, schema):
    assert host.run("dump", "--label", "before-3.16.0").returncode == 0
    [name] = host.entries()
    # a table of the dump's name that the MLflow role does not own: the drop leaves it, the restore fails on it
    server.psql("mlflow", "ALTER TABLE experiments RENAME TO experiments_kept;"
                          "CREATE TABLE experiments (id int);")
    try:
        result = host.run("undo-migration", name)
        assert result.returncode == 1
        assert "the database was not changed" in result.stderr and "experiments" in result.stderr, result.stderr
        # one transaction: the MLflow role's tables were not dropped either
        assert server.psql("mlflow", "SELECT count(*) FROM experiments_kept") == "50"
        assert server.psql("mlflow", "SELECT version_num FROM alembic_version") == "0584bdc529eb"
    finally:
        server.psql("mlflow", "DROP TABLE experiments; ALTER TABLE experiments_kept RENAME TO experiments;")


def test_undo_migration_refuses_a_damaged_dump(host, server, schema):
    assert host.run("dump", "--label", "before-3.16.0").returncode == 0
    [name] = host.entries()
    dump = host.dir / name / "mlflow.pgc"
    dump.write_bytes(dump.read_bytes()[:-10] + b"0123456789")
    server.psql("mlflow", "SET ROLE mlflow; UPDATE alembic_version SET version_num = 'dc11669786a5';")
    result = host.run("undo-migration", name)
    assert result.returncode == 1
    assert "does not match the sha256 of its manifest" in result.stderr and "nothing was changed" in result.stderr
    assert server.psql("mlflow", "SELECT version_num FROM alembic_version") == "dc11669786a5"


def fake_pg_restore(host, tmp_path, script):
    """pg_restore replaced by SCRIPT, which may call the real one as $REAL."""
    fake = tmp_path / "fake-restore-bin"
    fake.mkdir()
    (fake / "pg_restore").write_text(f'#!/bin/sh\nREAL={host.server.bin_dir}/pg_restore\n{script}\n')
    (fake / "pg_restore").chmod(0o755)
    return {"PATH": f"{fake}:{host.env['PATH']}"}


HALF_MIGRATION = """
    SET ROLE mlflow;
    UPDATE alembic_version SET version_num = 'dc11669786a5';
    CREATE TABLE logged_models (id int);
    CREATE TYPE model_ref AS (id int, name text);
    CREATE AGGREGATE spare_sum(int) (SFUNC = int4pl, STYPE = int);
    """


def test_undo_migration_drops_composite_types_and_aggregates_and_takes_a_newer_pg_restore(host, server, schema,
                                                                                          tmp_path):
    assert host.run("dump", "--label", "before-3.16.0").returncode == 0
    [name] = host.entries()
    server.psql("mlflow", HALF_MIGRATION)
    # the setting a pg_restore of PostgreSQL 17 writes, which this PostgreSQL 15 server refuses
    env = fake_pg_restore(host, tmp_path, 'echo "SET transaction_timeout = 0;"\nexec "$REAL" "$@"')
    try:
        result = host.run("undo-migration", name, **env)
        assert result.returncode == 0, result.stderr
        assert server.psql("mlflow", "SELECT version_num FROM alembic_version") == "0584bdc529eb"
        assert server.psql("mlflow", "SELECT to_regclass('logged_models') IS NULL AND to_regtype('model_ref') IS NULL"
                                     " AND to_regprocedure('spare_sum(int)') IS NULL") == "t"
    finally:
        server.psql("mlflow", "DROP AGGREGATE IF EXISTS spare_sum(int); DROP TYPE IF EXISTS model_ref;")


def test_undo_migration_with_a_pg_restore_that_fails_half_way_changes_nothing(host, server, schema, tmp_path):
    assert host.run("dump", "--label", "before-3.16.0").returncode == 0
    [name] = host.entries()
    server.psql("mlflow", HALF_MIGRATION)
    # more SQL than a pipe holds, then a failure: nothing of it may run
    env = fake_pg_restore(host, tmp_path, '"$REAL" "$@"\nyes "/* more of the dump */" | head -c 200000\n'
                                          'echo "pg_restore: error: could not read input file" >&2\nexit 1')
    try:
        result = host.run("undo-migration", name, **env)
        assert result.returncode == 1
        assert "pg_restore could not read" in result.stderr and "could not read input file" in result.stderr
        assert "the database was not changed" in result.stderr, result.stderr
        assert server.psql("mlflow", "SELECT version_num FROM alembic_version") == "dc11669786a5"
        assert server.psql("mlflow", "SELECT count(*) FROM experiments") == "50"
        assert server.psql("mlflow", "SELECT to_regclass('logged_models') IS NOT NULL") == "t"
        assert [entry for entry in host.entries() if entry.startswith(".undo-")] == []
    finally:
        server.psql("mlflow", "DROP AGGREGATE IF EXISTS spare_sum(int); DROP TYPE IF EXISTS model_ref;")


def test_sigterm_stops_an_undo_migration_and_removes_its_sql(host, server, schema, tmp_path):
    assert host.run("dump", "--label", "before-3.16.0").returncode == 0
    [name] = host.entries()
    env = fake_pg_restore(host, tmp_path, 'exec yes "/* a dump that never ends */"')
    sigterm_once_there(host, env, ["undo-migration", name], ".undo-*.sql", "the undo did not start")
    assert host.entries() == [name]
    assert server.psql("mlflow", "SELECT version_num FROM alembic_version") == "0584bdc529eb"


def test_an_undo_script_left_behind_is_removed_by_the_next_run(host, schema):
    assert host.run("dump", "--label", "before-3.16.0").returncode == 0
    [name] = host.entries()
    (host.dir / f".undo-{name}-4242.sql").write_text("-- left by a killed run\n")
    result = host.run("undo-migration", name)
    assert result.returncode == 0, result.stderr
    assert f"removed .undo-{name}-4242.sql" in result.stdout
    assert host.entries() == [name]


@pytest.mark.parametrize("name", ["../etc", "/etc", "20990101T000000Z-missing"])
def test_undo_migration_of_something_not_a_dump(host, name):
    result = host.run("undo-migration", name)
    assert result.returncode == 1
    assert "is not a dump directory" in result.stderr or "is not a complete dump" in result.stderr, result.stderr
