#!/usr/bin/python3
# Copyright: mlflowops maintainers
# Apache License 2.0 (see galaxy.yml)
"""mlflow-backup: pg_dump of the MLflow databases, a retention of daily/weekly dumps, an optional bucket copy.

Usage (as the backup user, with the settings below in the environment):

    mlflow_backup.py                       take one dump (the same as "dump")
    mlflow_backup.py dump [--label LABEL]  LABEL: 1-64 of A-Z a-z 0-9 . _ - (e.g. before-3.17.2, manual)
    mlflow_backup.py list                  the complete dumps as JSON, newest first, each with its manifest
    mlflow_backup.py latest                the path of the newest complete dump
    mlflow_backup.py schema                the MLflow schema revision (alembic) of the tracking database, or an
                                           empty line when it holds no MLflow schema yet
    mlflow_backup.py undo-migration DUMP   put the tracking database back as it is in DUMP (a dump directory's
                                           name or path), in place, as the MLflow role: after a failed
                                           `mlflow db upgrade` (the MLflow role runs it with the dump it took
                                           just before)

mlflow-backup.service runs "dump" from its timer with EnvironmentFile=/etc/mlflowops/backup/backup.env. By hand,
take a dump as the unit does (a dump taken as root could not be pruned by the backup user, so "dump" refuses to
run as root in a directory another user owns):

    systemctl start mlflow-backup.service
    systemd-run --wait --pipe --collect --property=User=mlflowbackup --property=Group=mlflowbackup \\
        --property=EnvironmentFile=/etc/mlflowops/backup/backup.env /usr/bin/python3 <this file> dump --label manual

Settings, from the environment only (nothing secret on a command line):

    PGHOST PGPORT PGUSER PGPASSFILE PGSSLMODE PGSSLROOTCERT
        libpq's own, passed to psql and pg_dump untouched. The password is in the PGPASSFILE (.pgpass, 0600),
        never in the environment or on a command line; psql and pg_dump run with --no-password and never prompt.
        PGCONNECT_TIMEOUT defaults to 30 (seconds) and PGAPPNAME to mlflow-backup when they are not set.
    MLFLOWOPS_BACKUP_DIR            where the dumps are kept (required; it must exist)
    MLFLOWOPS_BACKUP_DATABASES      the databases, space separated (required for a dump: "mlflow mlflow_auth")
    MLFLOWOPS_BACKUP_KEEP_DAILY     unlabelled dumps kept: the newest of each of this many days (>= 1, default 7)
    MLFLOWOPS_BACKUP_KEEP_WEEKLY    and the newest of each of this many ISO weeks (>= 0, default 4)
    MLFLOWOPS_BACKUP_S3_URI         s3://bucket/prefix: copy each dump there (empty or unset: no copy)
    MLFLOWOPS_BACKUP_S3_ENDPOINT_URL  the S3 endpoint of a non-AWS store (empty: AWS)
    AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_DEFAULT_REGION   read by boto3 itself

A dump:

1. Versions first, before anything is written: the server's major version (psql: SHOW server_version_num) and
   pg_dump's (pg_dump --version). An older pg_dump than the server fails, naming both.
2. <DIR>/<UTC time YYYYmmddTHHMMSSZ>[-LABEL][-2, -3 ... when taken in the same second]/ (mode 0750) holds
   <database>.pgc (pg_dump --format=custom, under the extension community.postgresql's restore knows) for each
   database and manifest.json (name, label, created in
   ISO-8601 UTC, server_version, server_major, client_version, client_major, databases: {database: {file, bytes,
   sha256}}), mode 0640. It is written as <DIR>/.partial-<name>/, synced, and renamed when complete; on any
   failure (SIGTERM included) the partial directory is removed. One run at a time works in <DIR> (a lock on the
   directory: a second run waits for the first).
3. Retention, after a successful dump: of the unlabelled dumps, the newest of each of the KEEP_DAILY most recent
   UTC days that have dumps and the newest of each of the KEEP_WEEKLY most recent ISO weeks that have dumps are
   kept, with the dump just taken; the other unlabelled dumps are removed, and .partial- directories older than
   a day. Labelled dumps are never removed (remove them by hand). A directory without a readable manifest is
   left alone.
4. With MLFLOWOPS_BACKUP_S3_URI, each file of the new dump is copied to s3://bucket/prefix/<name>/<file>
   (manifest.json last), with boto3 (Debian's python3-boto3). The bucket is never pruned: give the prefix a
   lifecycle rule.

Undoing a migration: the tracking database is the first of MLFLOWOPS_BACKUP_DATABASES (the auth database is not
touched by a migration). The dump file's sha256 is checked against the manifest first; pg_restore then writes the
dump's SQL to <DIR>/.undo-<name>-<pid>.sql (0600; removed afterwards, or by the next undo or retention when the
run was killed), and one psql transaction drops every table, view, sequence, routine and type the login role owns
in that database (what the failed migration may have left included) and runs that SQL (--no-owner: as the login
role, which owns the database; no superuser or CREATEDB needed, so it works on a managed database too). A dump
that cannot be read, or SQL that fails, leaves the database as it was.

Each step prints a line "mlflow-backup: ..." on stdout; an error prints "mlflow-backup: ERROR: <cause>" on stderr.
Exit status: 0 when everything succeeded, 1 when something failed (a dump that failed is removed; a dump whose
retention or bucket copy failed stays), 2 for a usage or configuration error.
"""

import argparse
import datetime
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback

PREFIX = "mlflow-backup:"
LABEL_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
DATABASE_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_$-]{0,62}")
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
NAME_RE = re.compile(r"(\d{8}T\d{6}Z)(?:-([A-Za-z0-9._-]+))?")
PARTIAL = ".partial-"
STALE_PARTIAL_SECONDS = 86400
MANIFEST = "manifest.json"


class Failure(Exception):
    """A failure the run reports on stderr and exits 1 for."""


class ConfigError(Exception):
    """A usage or configuration error: exit 2."""


def say(text):
    print(f"{PREFIX} {text}", flush=True)


def error(text):
    print(f"{PREFIX} ERROR: {text}", file=sys.stderr, flush=True)


def warn(text):
    print(f"{PREFIX} warning: {text}", file=sys.stderr, flush=True)


def one_line(text):
    return "; ".join(line.strip() for line in text.strip().splitlines() if line.strip())


def human(size):
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000:
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


# --- configuration -------------------------------------------------------------------------------------------

def env(name):
    return os.environ.get(name, "").strip()


def backup_dir():
    path = env("MLFLOWOPS_BACKUP_DIR")
    if not path:
        raise ConfigError("MLFLOWOPS_BACKUP_DIR is not set (the directory the dumps are kept in)")
    if not os.path.isabs(path):
        raise ConfigError(f"MLFLOWOPS_BACKUP_DIR must be an absolute path, not {path!r}")
    return os.path.normpath(path)


def keep_setting(name, default, minimum):
    text = env(name)
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise ConfigError(f"{name} must be a whole number of at least {minimum}, not {text!r}")
    return value


class Config:
    def __init__(self):
        self.dir = backup_dir()
        self.databases = env("MLFLOWOPS_BACKUP_DATABASES").split()
        if not self.databases:
            raise ConfigError("MLFLOWOPS_BACKUP_DATABASES is not set (the databases to dump, space separated)")
        for database in self.databases:
            if not DATABASE_RE.fullmatch(database):
                raise ConfigError(f"MLFLOWOPS_BACKUP_DATABASES: {database!r} is not a plain database name")
        if len(set(self.databases)) != len(self.databases):
            raise ConfigError("MLFLOWOPS_BACKUP_DATABASES names a database twice")
        self.keep_daily = keep_setting("MLFLOWOPS_BACKUP_KEEP_DAILY", 7, 1)
        self.keep_weekly = keep_setting("MLFLOWOPS_BACKUP_KEEP_WEEKLY", 4, 0)
        self.s3 = parse_s3_uri(env("MLFLOWOPS_BACKUP_S3_URI"))
        self.s3_endpoint = env("MLFLOWOPS_BACKUP_S3_ENDPOINT_URL") or None
        self.where = f"{os.environ.get('PGHOST') or 'the local socket'}:{os.environ.get('PGPORT') or '5432'}"


def parse_s3_uri(uri):
    """(bucket, prefix without leading, trailing or double slashes), or None when there is no bucket copy."""
    if not uri:
        return None
    match = re.fullmatch(r"s3://([^/\s]+)(/\S*)?", uri)
    if not match:
        raise ConfigError(f"MLFLOWOPS_BACKUP_S3_URI must look like s3://bucket/prefix, not {uri!r}")
    prefix = "/".join(part for part in (match.group(2) or "").split("/") if part)
    return match.group(1), prefix


def s3_key(prefix, *parts):
    return "/".join(part for part in (prefix, *parts) if part)


def child_env():
    """libpq's variables as given, with a connect timeout and an application name when they are not set."""
    environment = dict(os.environ)
    environment.setdefault("PGCONNECT_TIMEOUT", "30")
    environment.setdefault("PGAPPNAME", "mlflow-backup")
    return environment


# --- the dumps in the directory ------------------------------------------------------------------------------

class Dump:
    def __init__(self, path, manifest):
        self.path = path
        self.name = os.path.basename(path)
        self.manifest = manifest
        self.label = manifest.get("label")
        stamp = NAME_RE.fullmatch(self.name).group(1)
        self.time = datetime.datetime.strptime(stamp, STAMP_FORMAT).replace(tzinfo=datetime.timezone.utc)
        # dumps taken in the same second: <base>, <base>-2, <base>-3 ...
        base = stamp + (f"-{self.label}" if self.label else "")
        rest = self.name[len(base) + 1:] if self.name.startswith(base + "-") else ""
        self.sequence = 1 if self.name == base else int(rest) if rest.isdigit() else 0
        self.created = self.time
        for form in ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ"):
            try:
                created = datetime.datetime.strptime(str(manifest.get("created")), form)
            except ValueError:
                continue
            self.created = created.replace(tzinfo=datetime.timezone.utc)
            break

    def sort_key(self):
        # the second in the name, then the microseconds of "created": two dumps of one second are in order too
        return (self.time, self.created, self.sequence, self.name)

    def entry(self):
        entry = {"name": self.name, "path": self.path}
        entry.update((key, value) for key, value in self.manifest.items() if key != "name")
        return entry


def read_manifest(path):
    """The manifest of a complete dump directory, or the reason it is not one."""
    try:
        with open(os.path.join(path, MANIFEST), encoding="utf-8") as handle:
            manifest = json.load(handle)
    except FileNotFoundError:
        return None, f"no {MANIFEST}"
    except OSError as exc:
        return None, f"{MANIFEST} cannot be read: {exc.strerror}"
    except ValueError:
        return None, f"{MANIFEST} is not valid JSON"
    databases = manifest.get("databases") if isinstance(manifest, dict) else None
    if not isinstance(databases, dict) or not databases:
        return None, f"{MANIFEST} lists no databases"
    for entry in databases.values():
        file = entry.get("file") if isinstance(entry, dict) else None
        if not isinstance(file, str) or "/" in file or not os.path.isfile(os.path.join(path, file)):
            return None, f"{MANIFEST} names a dump file that is missing ({file})"
    if manifest.get("label") is not None and not isinstance(manifest.get("label"), str):
        return None, f"{MANIFEST} has a label that is not a string"
    return manifest, None


def scan(directory, quiet=False):
    """The complete dumps in the directory, newest first."""
    try:
        names = os.listdir(directory)
    except OSError as exc:
        raise Failure(f"cannot read the dump directory {directory}: {exc.strerror}") from None
    dumps = []
    for name in names:
        path = os.path.join(directory, name)
        if not NAME_RE.fullmatch(name) or os.path.islink(path) or not os.path.isdir(path):
            continue
        manifest, problem = read_manifest(path)
        if manifest is None:
            if not quiet:
                warn(f"{path} is not a complete dump ({problem}): left alone")
            continue
        dumps.append(Dump(path, manifest))
    dumps.sort(key=Dump.sort_key, reverse=True)
    return dumps


# --- running psql and pg_dump --------------------------------------------------------------------------------

def run(command, what):
    try:
        return subprocess.run(command, env=child_env(), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              check=False)
    except FileNotFoundError:
        raise Failure(f"{command[0]} is not installed or not on PATH ({what} needs it: apt-get install "
                      "postgresql-client)") from None
    except OSError as exc:
        raise Failure(f"cannot run {command[0]}: {exc}") from None


def psql(config, database, *commands, what):
    argv = ["psql", "-X", "-A", "-t", "-q", "-w", "-v", "ON_ERROR_STOP=1", "-d", database]
    for command in commands:
        argv += ["-c", command]
    result = run(argv, what)
    if result.returncode != 0:
        raise Failure(f"{what} on {config.where}/{database} failed: "
                      f"{one_line(result.stderr) or f'psql exit {result.returncode} without a message'}")
    return result.stdout.strip()


def check_passfile():
    """libpq ignores a password file it cannot read or that others can read: say so instead of 'no password'."""
    path = os.environ.get("PGPASSFILE")
    if not path:
        return
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise Failure(f"the password file PGPASSFILE={path} cannot be used: {exc.strerror}") from None
    if not os.access(path, os.R_OK):
        raise Failure(f"the password file PGPASSFILE={path} is not readable by this user (uid {os.getuid()})")
    if mode & 0o077:
        raise Failure(f"the password file PGPASSFILE={path} has mode {mode & 0o777:04o}: libpq ignores it unless "
                      "only its owner can read it (chmod 0600)")


def versions(config):
    """(server_version, server_major, client_version, client_major), failing when pg_dump is older."""
    answer = psql(config, config.databases[0], "SHOW server_version_num", "SHOW server_version",
                  what="the version check")
    lines = answer.splitlines()
    if len(lines) != 2 or not lines[0].strip().isdigit():
        raise Failure(f"unexpected answer of psql to SHOW server_version_num: {one_line(answer)!r}")
    server_major, server_version = int(lines[0]) // 10000, lines[1].strip()

    result = run(["pg_dump", "--version"], "the dump")
    match = re.search(r"\(PostgreSQL\)\s+((\d+)\S*(?:\s.*)?)$", result.stdout.strip())
    if result.returncode != 0 or not match:
        raise Failure(f"cannot read pg_dump's version from: {one_line(result.stdout + result.stderr)!r}")
    client_version, client_major = match.group(1).strip(), int(match.group(2))
    if client_major < server_major:
        raise Failure(f"pg_dump is PostgreSQL {client_major} but the server runs PostgreSQL {server_major}: a dump "
                      "by an older pg_dump may be incomplete; install postgresql-client-"
                      f"{server_major} (or newer) on this host")
    return server_version, server_major, client_version, client_major


# --- a dump --------------------------------------------------------------------------------------------------

def fsync_path(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def hash_and_sync(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
        os.fsync(handle.fileno())
    return digest.hexdigest()


def reserve(directory, base):
    """Create <DIR>/.partial-<name>/ for a name that neither a dump nor another partial dump has."""
    for attempt in range(1, 1000):
        name = base if attempt == 1 else f"{base}-{attempt}"
        if os.path.lexists(os.path.join(directory, name)):
            continue
        partial = os.path.join(directory, PARTIAL + name)
        try:
            os.mkdir(partial, 0o750)
        except FileExistsError:
            continue
        except OSError as exc:
            raise Failure(f"cannot create {partial}: {exc.strerror}") from None
        os.chmod(partial, 0o750)
        return name, partial
    raise Failure(f"no free name for a dump {base} in {directory}")


def take_dump(config, label, server_version, server_major, client_version, client_major):
    now = datetime.datetime.now(datetime.timezone.utc)
    base = now.strftime(STAMP_FORMAT) + (f"-{label}" if label else "")
    name, partial = reserve(config.dir, base)
    try:
        databases = {}
        for database in config.databases:
            file = f"{database}.pgc"
            started = time.monotonic()
            result = run(["pg_dump", "--no-password", "--format=custom", f"--file={os.path.join(partial, file)}",
                          database], "the dump")
            if result.returncode != 0:
                raise Failure(f"pg_dump of {database} failed (exit {result.returncode}): "
                              f"{one_line(result.stderr) or 'no message'}")
            if result.stderr.strip():
                warn(f"pg_dump of {database}: {one_line(result.stderr)}")
            path = os.path.join(partial, file)
            os.chmod(path, 0o640)
            size = os.path.getsize(path)
            databases[database] = {"file": file, "bytes": size, "sha256": hash_and_sync(path)}
            say(f"dumped {database} ({human(size)}, {time.monotonic() - started:.1f} s)")
        manifest = {
            "name": name,
            "label": label,
            "created": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "server_version": server_version,
            "server_major": server_major,
            "client_version": client_version,
            "client_major": client_major,
            "databases": databases,
        }
        manifest_path = os.path.join(partial, MANIFEST)
        with open(manifest_path, "x", encoding="utf-8") as handle:
            json.dump(manifest, handle, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(manifest_path, 0o640)
        fsync_path(partial)
        final = os.path.join(config.dir, name)
        os.rename(partial, final)
    except BaseException as exc:
        shutil.rmtree(partial, ignore_errors=True)
        if isinstance(exc, OSError):
            raise Failure(f"writing the dump {name} failed: {exc}") from None
        raise
    try:
        fsync_path(config.dir)
    except OSError as exc:
        warn(f"cannot sync {config.dir} after the rename: {exc}")
    total = sum(entry["bytes"] for entry in databases.values())
    say(f"dump complete: {final} ({len(databases)} databases, {human(total)})")
    return Dump(final, manifest)


# --- the schema, and undoing a failed migration --------------------------------------------------------------

def schema_revision(config):
    database = config.databases[0]
    if psql(config, database, "SELECT to_regclass('alembic_version') IS NOT NULL",
            what="looking for the MLflow schema") != "t":
        return ""
    return ",".join(psql(config, database, "SELECT version_num FROM alembic_version ORDER BY 1",
                         what="reading the MLflow schema revision").split())


# Every relation, routine and type the login role owns in the database's own schemas (the failed migration's
# leftovers included); sequences after their tables, which take the owned ones along.
DROP_OWNED_SQL = """
SET LOCAL client_min_messages = warning;
DO $undo$
DECLARE item record;
BEGIN
  FOR item IN
    SELECT format('DROP %s IF EXISTS %I.%I CASCADE',
                  CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'S' THEN 'SEQUENCE'
                                 WHEN 'f' THEN 'FOREIGN TABLE' WHEN 'c' THEN 'TYPE' ELSE 'TABLE' END,
                  n.nspname, c.relname) AS sql
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'c') AND c.relowner = current_user::regrole
      AND NOT c.relispartition
      AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
    ORDER BY c.relkind = 'S'
  LOOP
    EXECUTE item.sql;
  END LOOP;
  FOR item IN
    SELECT format('DROP %s IF EXISTS %I.%I(%s) CASCADE',
                  CASE p.prokind WHEN 'a' THEN 'AGGREGATE' ELSE 'ROUTINE' END, n.nspname, p.proname,
                  pg_get_function_identity_arguments(p.oid)) AS sql
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE p.prokind IN ('f', 'p', 'a') AND p.proowner = current_user::regrole
      AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
  LOOP
    EXECUTE item.sql;
  END LOOP;
  FOR item IN
    SELECT format('DROP TYPE IF EXISTS %I.%I CASCADE', n.nspname, t.typname) AS sql
    FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
    WHERE t.typtype IN ('e', 'd', 'c', 'r', 'm') AND t.typrelid = 0 AND t.typowner = current_user::regrole
      AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
  LOOP
    EXECUTE item.sql;
  END LOOP;
END
$undo$;
"""


def find_dump(directory, name):
    path = os.path.normpath(name if os.path.isabs(name) else os.path.join(directory, name))
    if os.path.dirname(path) != directory or not NAME_RE.fullmatch(os.path.basename(path)):
        raise Failure(f"{name} is not a dump directory in {directory}")
    manifest, problem = read_manifest(path)
    if manifest is None:
        raise Failure(f"{path} is not a complete dump ({problem})")
    return Dump(path, manifest)


# pg_restore of PostgreSQL 17 and later writes "SET transaction_timeout = 0;", which older servers refuse (0 is
# the default anyway)
SKIPPED_SETTINGS = re.compile(rb"SET transaction_timeout = ")


UNDO_SCRIPT = ".undo-"


def remove_undo_scripts(directory):
    """The SQL an undo-migration that was killed left behind (the caller holds the directory's lock)."""
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if name.startswith(UNDO_SCRIPT) and name.endswith(".sql") and os.path.isfile(path) \
                and not os.path.islink(path):
            try:
                os.unlink(path)
            except OSError as exc:
                warn(f"cannot remove {path}, which an interrupted undo-migration left: {exc.strerror}")
                continue
            say(f"removed {name}, which an interrupted undo-migration left")


def write_restore_script(dump_path, script):
    """The SQL of a custom-format dump (pg_restore --file=-) written to SCRIPT (0600); a failed read raises."""
    try:
        restore = subprocess.Popen(["pg_restore", "--no-owner", "--no-privileges", "--file=-", dump_path],
                                   env=child_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE)
    except OSError as exc:
        raise Failure(f"cannot run pg_restore (apt-get install postgresql-client): {exc}") from None
    with restore:
        # stderr is read beside stdout, so that a chatty pg_restore cannot block on a full pipe
        errors = []
        reader = threading.Thread(target=lambda: errors.append(restore.stderr.read()), daemon=True)
        reader.start()
        try:
            with open(os.open(script, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
                header = True
                for line in restore.stdout:
                    # only the settings of the header: the data lines are written as they are
                    header = header and not line.startswith((b"CREATE ", b"COPY ", b"ALTER "))
                    if not (header and SKIPPED_SETTINGS.match(line)):
                        out.write(line)
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:
            restore.kill()
            raise Failure(f"cannot write {script}: {exc.strerror}; the database was not changed") from None
        except BaseException:
            # SIGTERM (SystemExit) while reading: pg_restore would block on the pipe nobody reads any more
            restore.kill()
            raise
        finally:
            restore.stdout.close()
            restore.wait()
            reader.join()
    if restore.returncode != 0:
        message = b"".join(errors).decode("utf-8", "replace")
        raise Failure(f"pg_restore could not read {dump_path} (exit {restore.returncode}): "
                      f"{one_line(message) or 'no message'}; the database was not changed")


def command_undo_migration(name):
    config = Config()
    lock(config.dir)
    dump = find_dump(config.dir, name)
    database = config.databases[0]
    entry = dump.manifest["databases"].get(database)
    if entry is None:
        raise Failure(f"{dump.path} holds no dump of {database} (it has {', '.join(dump.manifest['databases'])})")
    path = os.path.join(dump.path, entry["file"])
    if entry.get("sha256") and hash_and_sync(path) != entry["sha256"]:
        raise Failure(f"{path} does not match the sha256 of its manifest: the dump is damaged, nothing was changed")
    check_passfile()
    started = time.monotonic()
    # The dump's SQL goes to a file first (pg_restore has read the whole archive before psql starts), then one
    # psql transaction empties the database and runs that file: a dump that cannot be read changes nothing, and
    # an error in the SQL rolls both back.
    remove_undo_scripts(config.dir)
    script = os.path.join(config.dir, f"{UNDO_SCRIPT}{dump.name}-{os.getpid()}.sql")
    try:
        write_restore_script(path, script)
        result = run(["psql", "-X", "-q", "-w", "-v", "ON_ERROR_STOP=1", "--single-transaction",
                      "-d", database, "-c", DROP_OWNED_SQL, "-f", script], "the undo")
    finally:
        try:
            os.unlink(script)
        except FileNotFoundError:
            pass
    if result.returncode != 0:
        raise Failure(f"restoring {path} into {database} failed, the database was not changed: "
                      f"{one_line(result.stderr) or f'psql exit {result.returncode}'}")
    say(f"{database} is back as in {dump.name} (schema {schema_revision(config) or 'none'}, "
        f"{time.monotonic() - started:.1f} s)")
    return 0


# --- retention -----------------------------------------------------------------------------------------------

def to_keep(dumps, keep_daily, keep_weekly):
    """The names of the unlabelled dumps the retention keeps (dumps: newest first)."""
    newest_of_day, newest_of_week = {}, {}
    for dump in dumps:
        if dump.label is None:
            newest_of_day.setdefault(dump.time.date(), dump.name)
            newest_of_week.setdefault(tuple(dump.time.isocalendar())[:2], dump.name)
    keep = {newest_of_day[day] for day in sorted(newest_of_day, reverse=True)[:keep_daily]}
    keep |= {newest_of_week[week] for week in sorted(newest_of_week, reverse=True)[:keep_weekly]}
    return keep


def retention(config, new):
    """Remove what the retention does not keep; the problems (the removals that failed) as a list."""
    dumps = scan(config.dir)
    keep = to_keep(dumps, config.keep_daily, config.keep_weekly) | {new.name}
    problems, removed = [], 0
    for dump in reversed(dumps):
        if dump.label is None and dump.name not in keep:
            try:
                shutil.rmtree(dump.path)
            except OSError as exc:
                problems.append(f"cannot remove the old dump {dump.path}: {exc}")
                continue
            removed += 1
            say(f"removed old dump {dump.name}")
    for name in sorted(os.listdir(config.dir)):
        path = os.path.join(config.dir, name)
        if not name.startswith(PARTIAL) or not os.path.isdir(path) or os.path.islink(path):
            continue
        try:
            if time.time() - os.stat(path).st_mtime < STALE_PARTIAL_SECONDS:
                continue
            shutil.rmtree(path)
        except OSError as exc:
            problems.append(f"cannot remove the stale partial dump {path}: {exc}")
            continue
        say(f"removed stale partial dump {name}")
    remove_undo_scripts(config.dir)
    kept = sum(1 for dump in dumps if dump.label is None and dump.name in keep)
    labelled = sum(1 for dump in dumps if dump.label is not None)
    say(f"retention: scheduled dumps kept: {kept} (the newest of each of the last {config.keep_daily} days and "
        f"{config.keep_weekly} ISO weeks), labelled kept: {labelled}, removed: {removed}")
    return problems


# --- bucket copy ---------------------------------------------------------------------------------------------

def copy_to_bucket(config, dump):
    bucket, prefix = config.s3
    target = f"s3://{bucket}/{s3_key(prefix, dump.name)}/"
    try:
        import boto3
        from botocore.config import Config as BotoConfig
    except ImportError as exc:
        raise Failure(f"the copy to {target} needs boto3 (apt-get install python3-boto3): {exc}") from None
    try:
        # newer boto3 sends checksums by default that some S3-compatible stores refuse: only when required
        boto_config = BotoConfig(request_checksum_calculation="when_required",
                                 response_checksum_validation="when_required")
    except TypeError:
        boto_config = BotoConfig()
    files = [entry["file"] for entry in dump.manifest["databases"].values()] + [MANIFEST]
    total = 0
    try:
        client = boto3.session.Session().client("s3", endpoint_url=config.s3_endpoint, config=boto_config)
        for file in files:
            path = os.path.join(dump.path, file)
            client.upload_file(path, bucket, s3_key(prefix, dump.name, file))
            total += os.path.getsize(path)
    except Exception as exc:  # boto3's and botocore's errors, and the local file's
        raise Failure(f"the copy to {target} failed: {one_line(str(exc)) or type(exc).__name__} "
                      f"(the dump stays in {dump.path})") from None
    say(f"copied {dump.name} to {target} ({len(files)} files, {human(total)})")


# --- commands ------------------------------------------------------------------------------------------------

def lock(directory):
    """An exclusive lock on the dump directory for this run (a second run waits for the first)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EACCES):
            raise
        say(f"waiting for another mlflow-backup run in {directory} to finish")
        fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def command_dump(label):
    config = Config()
    try:
        owner = os.stat(config.dir).st_uid
    except OSError as exc:
        raise Failure(f"the dump directory {config.dir} cannot be used: {exc.strerror}") from None
    if not os.path.isdir(config.dir):
        raise Failure(f"the dump directory {config.dir} is not a directory")
    if os.geteuid() == 0 and owner != 0:
        raise Failure(f"running as root in {config.dir}, which uid {owner} owns: that user could not prune a dump "
                      "written by root; run as the owner (systemctl start mlflow-backup.service, or systemd-run as "
                      "in this script's docstring)")
    lock(config.dir)  # held until the process exits
    check_passfile()
    server_version, server_major, client_version, client_major = versions(config)
    say(f"server {config.where} runs PostgreSQL {server_version}; pg_dump {client_version}")
    new = take_dump(config, label, server_version, server_major, client_version, client_major)
    problems = retention(config, new)
    if config.s3:
        try:
            copy_to_bucket(config, new)
        except Failure as exc:
            problems.append(str(exc))
    for problem in problems:
        error(problem)
    return 1 if problems else 0


def command_list():
    print(json.dumps([dump.entry() for dump in scan(backup_dir())], indent=2), flush=True)
    return 0


def command_latest():
    directory = backup_dir()
    dumps = scan(directory, quiet=True)
    if not dumps:
        raise Failure(f"no complete dump in {directory}")
    print(dumps[0].path, flush=True)
    return 0


class Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        error(message)
        sys.exit(2)


def label_type(text):
    if not LABEL_RE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"a label is 1 to 64 of A-Z a-z 0-9 . _ - (got {text!r})")
    return text


def parse(argv):
    parser = Parser(prog="mlflow_backup.py", description="Dumps of the MLflow databases (see the docstring).")
    commands = parser.add_subparsers(dest="command", parser_class=Parser)
    dump = commands.add_parser("dump", help="take one dump (the default)")
    dump.add_argument("--label", type=label_type, help="kept until removed by hand, e.g. before-3.17.2")
    commands.add_parser("list", help="the complete dumps as JSON, newest first")
    commands.add_parser("latest", help="the path of the newest complete dump")
    commands.add_parser("schema", help="the MLflow schema revision of the tracking database (empty: none)")
    undo = commands.add_parser("undo-migration", help="put the tracking database back as in a dump, in place")
    undo.add_argument("dump", help="the dump directory's name (or its path in the dump directory)")
    return parser.parse_args(argv)


def stop(signum, _frame):
    raise SystemExit(f"stopped by {signal.Signals(signum).name}")


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, stop)
    try:
        if args.command == "list":
            return command_list()
        if args.command == "latest":
            return command_latest()
        if args.command == "schema":
            print(schema_revision(Config()), flush=True)
            return 0
        if args.command == "undo-migration":
            return command_undo_migration(args.dump)
        return command_dump(getattr(args, "label", None))
    except ConfigError as exc:
        error(str(exc))
        return 2
    except Failure as exc:
        error(str(exc))
        return 1
    except KeyboardInterrupt:
        error("interrupted")
        return 1
    except SystemExit as exc:
        if isinstance(exc.code, str):
            error(exc.code)
            return 1
        raise
    except Exception as exc:  # a bug or an unforeseen failure: the traceback, then the line that names it
        traceback.print_exc()
        error(f"unexpected {type(exc).__name__}: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
