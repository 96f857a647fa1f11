"""Behaviour of the postgresql role on a converged host."""

import pytest

testinfra_hosts = ["ansible://mlflow_db"]

MLFLOW_DBS = ("mlflow", "mlflow_auth")


@pytest.fixture(scope="module")
def password(host):
    return host.ansible.get_variables()["vault_mlflow_db_password"]


@pytest.fixture(scope="module")
def cluster(host):
    """(version, name) of the one cluster the role manages."""
    out = host.check_output("pg_lsclusters --no-header")
    version, name = out.split()[:2]
    return version, name


def psql_admin(host, sql, db="postgres"):
    return host.check_output(f"runuser -u postgres -- psql -d {db} -XtAc \"{sql}\"")


def psql_as_mlflow(host, password, db="mlflow", sql="select current_user"):
    return host.run(
        f"PGPASSWORD='{password}' psql -X -h 127.0.0.1 -U mlflow -d {db} -tAc '{sql}'"
    )


def test_service_running_and_enabled(host, cluster):
    version, name = cluster
    unit = host.service(f"postgresql@{version}-{name}")
    if not unit.is_running:
        print(host.run(f"journalctl -u postgresql@{version}-{name} --no-pager -n 50").stdout)
    assert unit.is_running
    assert host.service("postgresql").is_enabled


def test_listens_on_loopback_only(host):
    listening = [s for s in host.socket.get_listening_sockets() if s.endswith(":5432")]
    assert listening, "nothing listens on port 5432"
    assert set(listening) == {"tcp://127.0.0.1:5432"}, listening


def test_password_encryption_is_scram(host):
    assert psql_admin(host, "SHOW password_encryption") == "scram-sha-256"


def test_mlflow_role_has_no_admin_attributes(host):
    row = psql_admin(
        host,
        "select rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolreplication "
        "from pg_roles where rolname = 'mlflow'",
    )
    assert row == "t|f|f|f|f"


def test_password_is_stored_as_scram(host):
    stored = psql_admin(host, "select rolpassword from pg_authid where rolname = 'mlflow'")
    assert stored.startswith("SCRAM-SHA-256$")


@pytest.mark.parametrize("db", MLFLOW_DBS)
def test_databases_owned_by_mlflow(host, db):
    owner = psql_admin(
        host, f"select pg_get_userbyid(datdba) from pg_database where datname = '{db}'"
    )
    assert owner == "mlflow"


@pytest.mark.parametrize("db", MLFLOW_DBS)
def test_mlflow_connects_with_its_password(host, password, db):
    result = psql_as_mlflow(host, password, db=db)
    assert result.rc == 0, result.stderr
    assert result.stdout.strip() == "mlflow"


def test_mlflow_can_create_tables(host, password):
    result = psql_as_mlflow(
        host, password, sql="create table probe_t (id int); drop table probe_t; select 1"
    )
    assert result.rc == 0, result.stderr


def test_wrong_password_is_refused(host, password):
    result = psql_as_mlflow(host, password + "-wrong")
    assert result.rc != 0
    assert "password authentication failed" in result.stderr


def test_mlflow_cannot_reach_other_databases(host, password):
    result = psql_as_mlflow(host, password, db="postgres")
    assert result.rc != 0
    assert "no pg_hba.conf entry" in result.stderr


def test_host_rules_use_scram_only(host):
    methods = psql_admin(
        host, "select distinct auth_method from pg_hba_file_rules where type like 'host%'"
    )
    assert methods.split() == ["scram-sha-256"]
    errors = psql_admin(host, "select count(*) from pg_hba_file_rules where error is not null")
    assert errors == "0"


def test_local_rules_use_peer(host):
    methods = psql_admin(
        host, "select distinct auth_method from pg_hba_file_rules where type = 'local'"
    )
    assert methods.split() == ["peer"]


def test_config_files_owner_and_mode(host, cluster):
    version, name = cluster
    hba = host.file(f"/etc/postgresql/{version}/{name}/pg_hba.conf")
    assert hba.user == "postgres"
    assert hba.mode == 0o640
    conf = host.file(f"/etc/postgresql/{version}/{name}/conf.d/50-mlflowops.conf")
    assert conf.user == "postgres"
    assert conf.contains("password_encryption = 'scram-sha-256'")
