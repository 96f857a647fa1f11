"""What each operating system gave the stack, for README's support table: PostgreSQL, Python and nginx as the
host runs them. Written to .cache/logs/versions-<host>.json; tests/harness/molecule.sh prints them at the end.
The versions come from the host, and the stack must use them: PostgreSQL's online cluster is the distribution's
major version, and the venv runs the host's own python3."""

import json
import os
import re
from pathlib import Path

from conftest import inventory_hosts

testinfra_hosts = ["ansible://mlflow_servers", "ansible://mlflow_db"] + [
    "ansible://" + name for name in inventory_hosts("mlflow_proxy")]

LOGS = Path(os.environ.get("MLFLOWOPS_CACHE") or Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]) / ".cache") / "logs"


def test_the_stack_runs_the_versions_of_its_distribution(host):
    seen = {"host": host.backend.get_hostname(), "os": f"{host.system_info.distribution} {host.system_info.release}"}
    if host.exists("pg_lsclusters"):
        clusters = host.check_output("pg_lsclusters --no-header").split()
        major, status = clusters[0], clusters[3]
        assert status == "online", clusters
        server = host.check_output("sudo -u postgres psql -tAc 'show server_version'")
        assert server.split(".")[0] == major, (server, major)
        seen["postgresql"] = "PostgreSQL " + server.split(" ")[0]
    python = host.check_output("python3 -c 'import platform; print(platform.python_version())'")
    if host.file("/opt/mlflow/venv").is_symlink:
        venv = host.check_output("/opt/mlflow/venv/bin/python -c 'import platform; print(platform.python_version())'")
        assert venv == python, (venv, python)
    seen["python"] = "Python " + python
    if host.exists("nginx"):
        seen["nginx"] = "nginx " + re.search(r"nginx/(\S+)", host.run("nginx -v").stderr).group(1)
    LOGS.mkdir(parents=True, exist_ok=True)
    (LOGS / f"versions-{seen['host']}.json").write_text(json.dumps(seen) + "\n")
    print(seen)
