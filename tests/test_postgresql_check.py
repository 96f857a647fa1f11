"""The postgresql_check module against a real PostgreSQL server on loopback, started for this session.

The server (initdb + pg_ctl of Debian's postgresql package, installed when missing) listens on 127.0.0.1 and
127.0.0.2 with TLS: a test CA signed its certificate for localhost and 127.0.0.1 only, so 127.0.0.2 reaches the
same server under an address the certificate does not name. pg_hba.conf: scram-sha-256 over TLS for everyone,
and without TLS only md5, clear-text password and trust for three extra roles.
"""

import contextlib
import datetime
import fcntl
import glob
import importlib.util
import io
import ipaddress
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from ansible.module_utils.testing import patch_module_args
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

REPO = Path(__file__).resolve().parent.parent
MODULE_FILE = REPO / "plugins" / "modules" / "postgresql_check.py"
BIN = Path(sys.executable).parent

spec = importlib.util.spec_from_file_location("postgresql_check", MODULE_FILE)
postgresql_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(postgresql_check)

PASSWORD = "Ml@fl/ow%pass:w0rd"  # the characters a URL would need escaped
MD5_PASSWORD = "Md5@role/%:secret"
CLEAR_PASSWORD = "Clear@text/%:secret"
# SASLprep matters: a no-break space (mapped to a space), a soft hyphen (mapped to nothing), a ligature (NFKC)
UTF8_PASSWORD = "p\u00e4ss\u00a0wo\u00adrd \ufb01x"
WRONG_PASSWORD = "Wr0ng@/%:guess"


# --- the server ----------------------------------------------------------------------------------------------

def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def newest_initdb():
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    found.sort(key=lambda path: [int(part) for part in Path(path).parts[-3].split(".") if part.isdigit()])
    return Path(found[-1]).parent if found else None


def clusters_online():
    """Debian's clusters (pg_lsclusters) that are running, as (version, name)."""
    if not shutil.which("pg_lsclusters"):
        return set()
    listing = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=False)
    online = set()
    for line in listing.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[3].startswith("online"):
            online.add((fields[0], fields[1]))
    return online


def install_postgresql():
    """apt-get install Debian's server when it is missing; stop a cluster the package started by itself. make unit's
    processes install it one at a time (apt's lock covers dpkg, not an `apt-get update` of another process); the
    ones that waited find it installed."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.fail("no PostgreSQL server binaries in /usr/lib/postgresql, and no root apt-get to install them")
    with open(Path(tempfile.gettempdir()) / "mlflowops-unit-postgresql.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return newest_initdb() or _install_postgresql()


def _install_postgresql():
    before = clusters_online()
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # make test prepares the scenarios meanwhile, which may run apt-get too: one at a time, on the lock file of
    # tests/harness/lib.sh's apt_get (dpkg's own lock does not cover `apt-get update`)
    command = ["apt-get", "-o", "DPkg::Lock::Timeout=600", "install", "-y", "--no-install-recommends", "postgresql"]
    started = time.monotonic()
    with open("/run/lock/mlflowops-harness-apt.lock", "w") as apt_lock:
        fcntl.flock(apt_lock, fcntl.LOCK_EX)
        if subprocess.run(command, env=env, stdout=subprocess.DEVNULL, check=False).returncode != 0:
            subprocess.run(["apt-get", "-o", "DPkg::Lock::Timeout=600", "update"], env=env,
                           stdout=subprocess.DEVNULL, check=True)
            subprocess.run(command, env=env, stdout=subprocess.DEVNULL, check=True)
    print(f"installed PostgreSQL in {time.monotonic() - started:.0f} s", file=sys.stderr)
    # the package creates its cluster "main" and may start it: this suite does not use it, so it does not run
    for version, name in clusters_online() - before:
        subprocess.run(["pg_ctlcluster", version, name, "stop"], check=False)
    return newest_initdb()


def tls_files(directory):
    """A CA with a server certificate for localhost and 127.0.0.1, and an unrelated second CA."""
    now = datetime.datetime.now(datetime.timezone.utc)

    def name(text):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    def ca(text):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder().subject_name(name(text)).issuer_name(name(text))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return key, cert

    ca_key, ca_cert = ca("mlflowops test CA")
    _, other_cert = ca("an unrelated CA")
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder().subject_name(name("mlflowops test server")).issuer_name(ca_cert.subject)
        .public_key(server_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (directory / "server.crt").write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    (directory / "server.key").write_bytes(server_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (directory / "server.key").chmod(0o600)
    return (ca_cert.public_bytes(serialization.Encoding.PEM).decode(),
            other_cert.public_bytes(serialization.Encoding.PEM).decode())


def sql_literal(text):
    return "'" + text.replace("'", "''") + "'"


class Server:
    def __init__(self, bin_dir, base, port, ca, other_ca):
        self.bin_dir, self.base, self.port, self.ca, self.other_ca = bin_dir, base, port, ca, other_ca
        self.major = int(bin_dir.parent.name.split(".")[0])


@pytest.fixture(scope="session")
def server():
    bin_dir = newest_initdb() or install_postgresql()
    base = Path(tempfile.mkdtemp(prefix="mlflowops-pgcheck-"))
    # initdb and postgres refuse root: as root, the server runs as nobody in a directory nobody owns
    as_user = {}
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.chown(base, nobody.pw_uid, nobody.pw_gid)
        as_user = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
    env = dict(os.environ, HOME=str(base), PGCLIENTENCODING="UTF8", LC_ALL="C.UTF-8")

    def run(*command, **kwargs):
        return subprocess.run(command, env=env, cwd=base, check=True, capture_output=True, text=True,
                              **as_user, **kwargs)

    data, port = base / "data", free_port()
    run(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-E", "UTF8", "--no-locale",
        "--auth=trust", "--no-sync")
    ca, other_ca = tls_files(data)
    if as_user:
        for path in ("server.crt", "server.key"):
            os.chown(data / path, as_user["user"], as_user["group"])
    with (data / "postgresql.conf").open("a") as conf:
        conf.write(
            f"listen_addresses = '127.0.0.1,127.0.0.2'\nport = {port}\nunix_socket_directories = '{base}'\n"
            "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n"
            "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            "max_connections = 20\nshared_buffers = 16MB\nlog_connections = on\n"
        )
    (data / "pg_hba.conf").write_text(
        "local     all all          trust\n"
        "hostnossl all mlflow_md5   127.0.0.1/32 md5\n"
        "hostnossl all mlflow_clear 127.0.0.1/32 password\n"
        "hostnossl all mlflow_trust 127.0.0.1/32 trust\n"
        "hostssl   all all          127.0.0.1/32 scram-sha-256\n"
        "hostssl   all all          127.0.0.2/32 scram-sha-256\n"
    )
    log = base / "postgresql.log"
    try:
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "30", "start")
        run(str(bin_dir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(base), "-p", str(port),
            "-U", "postgres", "-d", "postgres", input=f"""
            CREATE ROLE mlflow LOGIN PASSWORD {sql_literal(PASSWORD)};
            CREATE DATABASE mlflow OWNER mlflow;
            CREATE ROLE mlflow_clear LOGIN PASSWORD {sql_literal(CLEAR_PASSWORD)};
            CREATE ROLE mlflow_trust LOGIN;
            CREATE ROLE mlflow_utf8 LOGIN PASSWORD {sql_literal(UTF8_PASSWORD)};
            SET password_encryption = 'md5';
            CREATE ROLE mlflow_md5 LOGIN PASSWORD {sql_literal(MD5_PASSWORD)};
            """)
        yield Server(bin_dir, base, port, ca, other_ca)
    except subprocess.CalledProcessError as exc:
        server_log = log.read_text() if log.exists() else ""
        pytest.fail(f"{exc.cmd[0]} failed: {exc.stderr}\n{server_log}")
    finally:
        subprocess.run([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"], env=env,
                       cwd=base, capture_output=True, check=False, **as_user)
        shutil.rmtree(base, ignore_errors=True)


# --- running the module --------------------------------------------------------------------------------------

def run_module(**args):
    """The module's main() as Ansible runs it; the JSON it prints, and that JSON as text."""
    out = io.StringIO()
    with patch_module_args(args), contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        postgresql_check.main()
    text = out.getvalue()
    return json.loads(text), text


def check(server, **overrides):
    args = {"host": "127.0.0.1", "port": server.port, "user": "mlflow", "password": PASSWORD,
            "database": "mlflow", "sslmode": "verify-full", "ca_content": server.ca, "timeout": 5}
    args.update(overrides)
    return run_module(**args)


def failed(result, stage):
    assert result.get("failed") is True, result
    assert result["stage"] == stage, result
    print(result["msg"])  # the exact messages show with pytest -s
    return result["msg"]


# --- success -------------------------------------------------------------------------------------------------

def test_verify_full_by_address(server):
    result, _ = check(server)
    assert not result.get("failed"), result
    assert result["changed"] is False
    assert result["tls"] is True and result["tls_version"] in ("TLSv1.2", "TLSv1.3") and result["cipher"]
    assert result["authentication"] == "scram-sha-256"
    assert result["server_version_num"] == server.major
    assert result["server_version"].startswith(f"{server.major}.")
    assert (result["host"], result["port"], result["address"]) == ("127.0.0.1", server.port, "127.0.0.1")


def test_verify_full_by_name_in_check_mode(server):
    result, _ = check(server, host="localhost", _ansible_check_mode=True)
    assert not result.get("failed"), result
    assert result["changed"] is False and result["tls"] is True and result["address"] == "127.0.0.1"


def test_verify_ca_ignores_the_name(server):
    result, _ = check(server, host="127.0.0.2", sslmode="verify-ca")
    assert not result.get("failed"), result
    assert result["tls"] is True and result["address"] == "127.0.0.2"


def test_require_does_not_verify(server):
    result, _ = check(server, sslmode="require", ca_content=server.other_ca)
    assert not result.get("failed"), result
    assert result["tls"] is True and result["authentication"] == "scram-sha-256"


def test_saslprep_password(server):
    result, _ = check(server, user="mlflow_utf8", database="postgres", password=UTF8_PASSWORD)
    assert not result.get("failed"), result
    assert result["authentication"] == "scram-sha-256"


@pytest.mark.parametrize("sslmode", ["disable", "prefer"])
def test_md5_without_tls(server, sslmode):
    """prefer: the TLS login is refused (scram-sha-256 against an md5 secret), libpq retries without TLS."""
    result, _ = check(server, user="mlflow_md5", password=MD5_PASSWORD, database="postgres", sslmode=sslmode)
    assert not result.get("failed"), result
    assert (result["tls"], result["tls_version"], result["cipher"]) == (False, None, None)
    assert result["authentication"] == "md5"


def test_allow_retries_with_tls(server):
    result, _ = check(server, sslmode="allow")
    assert not result.get("failed"), result
    assert result["tls"] is True and result["authentication"] == "scram-sha-256"


@pytest.mark.parametrize(("user", "password", "method"), [
    ("mlflow_clear", CLEAR_PASSWORD, "password"),
    ("mlflow_trust", "unused", "trust"),
])
def test_other_methods(server, user, password, method):
    result, _ = check(server, user=user, password=password, database="postgres", sslmode="disable")
    assert not result.get("failed"), result
    assert result["authentication"] == method


# --- failures ------------------------------------------------------------------------------------------------

def test_unrelated_ca(server):
    msg = failed(check(server, ca_content=server.other_ca)[0], "tls_verify")
    assert msg.startswith(f"PostgreSQL at 127.0.0.1:{server.port}: its TLS certificate does not verify against "
                          "the given CA bundle: certificate verify failed: "), msg


def test_name_mismatch(server):
    msg = failed(check(server, host="127.0.0.2")[0], "tls_verify")
    assert msg == (f"PostgreSQL at 127.0.0.2:{server.port}: the certificate is not valid for the name/address "
                   "127.0.0.2 (it names DNS:localhost, IP:127.0.0.1, CN:mlflowops test server)")


def test_wrong_password(server):
    result, text = check(server, password=WRONG_PASSWORD)
    msg = failed(result, "auth")
    assert result["sqlstate"] == "28P01"
    assert msg.startswith(f"PostgreSQL at 127.0.0.1:{server.port}: password authentication failed for user mlflow")
    assert WRONG_PASSWORD not in text and PASSWORD not in text


def test_wrong_password_prefer(server):
    """prefer: refused over TLS, then refused without TLS by pg_hba.conf; the password failure leads."""
    result, text = check(server, password=WRONG_PASSWORD, sslmode="prefer")
    msg = failed(result, "auth")
    assert result["sqlstate"] == "28P01"
    assert "password authentication failed for user mlflow" in msg.split("; without TLS: ")[0], msg
    assert "no pg_hba.conf entry" in msg.split("; without TLS: ")[1], msg
    assert WRONG_PASSWORD not in text


def test_missing_database(server):
    result, _ = check(server, database="no_such_db")
    assert failed(result, "database") == f"PostgreSQL at 127.0.0.1:{server.port}: database no_such_db does not exist"
    assert result["sqlstate"] == "3D000"


def test_no_tls_refused_by_pg_hba(server):
    result, _ = check(server, sslmode="disable")
    msg = failed(result, "auth")
    assert msg.startswith(f"PostgreSQL at 127.0.0.1:{server.port}: the server refuses this client (no pg_hba.conf "
                          "entry for this address/user/database, or TLS required): "), msg
    assert "no pg_hba.conf entry" in msg.split("TLS required): ", 1)[1]
    assert result["sqlstate"] == "28000"


def test_refused_port(server):
    port = free_port()
    msg = failed(check(server, port=port)[0], "tcp")
    assert msg == f"PostgreSQL at 127.0.0.1:{port}: TCP connection refused"


def test_unresolvable_name(server):
    msg = failed(check(server, host="no-such-host.invalid")[0], "dns")
    assert msg.startswith(f"PostgreSQL at no-such-host.invalid:{server.port}: the name does not resolve (DNS: "), msg


@pytest.mark.parametrize("sslmode", ["verify-full", "verify-ca"])
def test_verify_without_ca(server, sslmode):
    msg = failed(check(server, sslmode=sslmode, ca_content="")[0], "tls_verify")
    assert msg == (f"PostgreSQL at 127.0.0.1:{server.port}: sslmode={sslmode} verifies the server's certificate "
                   "and needs ca_content, the PEM text of the CA bundle; it is empty")


def test_ca_content_not_pem(server):
    msg = failed(check(server, ca_content="/etc/ssl/certs/db-ca.pem")[0], "tls_verify")
    assert "ca_content is not a usable PEM CA bundle" in msg


# --- servers that are not quite PostgreSQL (loopback stand-ins) ----------------------------------------------

@contextlib.contextmanager
def stand_in(answer):
    """A TCP server on loopback that reads the SSL request and answers `answer` (None: never answers)."""
    listener = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def serve():
        with contextlib.suppress(OSError):
            connection, _ = listener.accept()
            with connection:
                connection.recv(8)
                if answer is not None:
                    connection.sendall(answer)
                done.wait(10)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        done.set()
        listener.close()
        thread.join(5)


def test_server_without_tls():
    with stand_in(b"N") as port:
        msg = failed(run_module(host="127.0.0.1", port=port, user="mlflow", password=PASSWORD, database="mlflow",
                                sslmode="require")[0], "tls")
    assert msg == f"PostgreSQL at 127.0.0.1:{port}: the server does not accept TLS (sslmode=require needs it)"


@pytest.mark.parametrize(("answer", "expected"), [
    (b"HTTP/1.1 400 Bad Request\r\n\r\n", "the server answered the SSL request with 'H', not 'S' or 'N'"),
    (b"SSH-2.0-OpenSSH_9.2\r\n", "the server sent unencrypted data after accepting TLS"),
    (None, "no answer within 0.5 s after the SSL request (is this a PostgreSQL server?)"),
])
def test_not_postgresql(answer, expected):
    with stand_in(answer) as port:
        msg = failed(run_module(host="127.0.0.1", port=port, user="mlflow", password=PASSWORD, database="mlflow",
                                sslmode="require", timeout=0.5)[0], "protocol")
    assert msg.startswith(f"PostgreSQL at 127.0.0.1:{port}: {expected}"), msg


def test_tcp_timeout():
    """A listener whose accept queue is full drops new connection requests: the client hears nothing."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=0)
    fillers = []
    try:
        for _ in range(8):
            filler = socket.socket()
            filler.settimeout(0.3)
            fillers.append(filler)
            try:
                filler.connect(listener.getsockname())
            except OSError:
                break
        else:
            pytest.skip("this network stack accepts connections beyond a full backlog")
        port = listener.getsockname()[1]
        msg = failed(run_module(host="127.0.0.1", port=port, user="mlflow", password=PASSWORD, database="mlflow",
                                sslmode="disable", timeout=0.5)[0], "tcp")
        assert msg == (f"PostgreSQL at 127.0.0.1:{port}: no answer within 0.5 s "
                       "(a firewall dropping packets, or a wrong address/port)")
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


# --- pieces --------------------------------------------------------------------------------------------------

SAN = {"subject": ((("commonName", "db.example.com"),),),
       "subjectAltName": (("DNS", "*.db.example.com"), ("DNS", "mlflow-db"), ("IP Address", "10.0.0.5"))}
CN_ONLY = {"subject": ((("commonName", "db.example.com"),),)}


@pytest.mark.parametrize(("host", "cert", "matches"), [
    ("a.db.example.com", SAN, True),
    ("A.DB.example.COM", SAN, True),
    ("a.b.db.example.com", SAN, False),   # the wildcard is one label
    ("db.example.com", SAN, False),       # a DNS SAN exists: the CN does not count for a name
    ("mlflow-db", SAN, True),
    ("10.0.0.5", SAN, True),
    ("10.0.0.6", SAN, False),
    ("db.example.com", CN_ONLY, True),    # no SAN at all: the CN counts
    ("other.example.com", CN_ONLY, False),
])
def test_name_matches(host, cert, matches):
    assert postgresql_check.name_matches(host, cert) is matches


@pytest.mark.parametrize(("password", "prepared"), [
    ("I\u00adX", b"IX"),                   # RFC 4013 examples: soft hyphen mapped to nothing
    ("\u00aa", b"a"),                      # NFKC
    ("\u2168", b"IX"),
    ("a\u00a0b", b"a b"),                  # non-ASCII space mapped to a space
    ("plain ascii\x07", b"plain ascii\x07"),  # ASCII is used as is, as PostgreSQL does
    ("\u0627\u0031", "\u0627\u0031".encode()),  # bidi rule broken: the raw bytes, as PostgreSQL does
])
def test_saslprep(password, prepared):
    assert postgresql_check.saslprep(password) == prepared


# --- through ansible, on the controller's and on other Pythons -----------------------------------------------

def works(path):
    """A real interpreter (a pyenv shim without that version installed is not)."""
    try:
        return subprocess.run([path, "-c", "import ssl"], capture_output=True, timeout=30, check=False).returncode == 0
    except OSError:
        return False


def other_pythons():
    """The managed-host Pythons the module supports that this machine has besides the controller's."""
    found = []
    for minor in (10, 11, 12, 13):
        paths = sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/3.{minor}.*/bin/python3.{minor}")))
        paths += [path for path in (shutil.which(f"python3.{minor}"),) if path]
        path = next((path for path in paths if works(path)), None)
        if path and Path(path).resolve() != Path(sys.executable).resolve():
            found.append(pytest.param(path, id=f"python3.{minor}"))
    return found


def ansible_check(server, interpreter, password):
    args = {"host": "127.0.0.1", "port": server.port, "user": "mlflow", "password": password,
            "database": "mlflow", "sslmode": "verify-full", "ca_content": server.ca}
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json",
               ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_NOCOLOR="1", PATH=f"{BIN}:{os.environ['PATH']}")
    result = subprocess.run(
        [str(BIN / "ansible"), "localhost", "-c", "local", "-i", "localhost,",
         "-m", "mlflowops.tracking.postgresql_check", "-a", json.dumps(args),
         "-e", f"ansible_python_interpreter={interpreter}"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )
    return result


@pytest.mark.parametrize("interpreter", [pytest.param(sys.executable, id="controller")] + other_pythons())
def test_through_ansible(server, interpreter):
    result = ansible_check(server, interpreter, PASSWORD)
    assert result.returncode == 0, result.stdout + result.stderr
    task = json.loads(result.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    assert task["tls"] is True and task["authentication"] == "scram-sha-256", task
    assert task["server_version_num"] == server.major


def test_through_ansible_wrong_password(server):
    result = ansible_check(server, sys.executable, WRONG_PASSWORD)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    task = json.loads(result.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    assert task["stage"] == "auth" and "password authentication failed for user mlflow" in task["msg"], task
    assert WRONG_PASSWORD not in output
