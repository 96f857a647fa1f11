"""Every tag the role READMEs document runs alone on a converged host: in check mode, rc 0 and no change.

Each tag runs with its tier's own playbook, limited to one host. The tags are spread over the scenario's MLflow
hosts (the default scenario's two hosts share the venv tags; the cluster scenario's docker-method host runs the
tags of the roles its install method adds, and the backup role's run on its database host, where that role
runs), three at a time, so the whole set costs a few minutes.
"""

import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

testinfra_hosts = ["ansible://mlflow_servers"]

REPO = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
PLAYBOOKS = {"postgresql": "database.yml", "firewall": "firewall.yml", "docker": "mlflow.yml",
             "mlflow": "mlflow.yml", "nginx": "proxy.yml", "backup": "backup.yml"}


def documented_tags(role):
    readme = (REPO / "roles" / role / "README.md").read_text()
    line = re.search(r"^Tags: (.+?)\.$", readme, re.M | re.S)
    assert line, f"roles/{role}/README.md has no 'Tags:' line"
    return re.findall(r"`([a-z_]+)`", line.group(1))


def check_alone(run_playbook, changed, role, tag, host):
    """The tag in check mode on `host`: rc and the host's changed= count."""
    result = run_playbook(PLAYBOOKS[role], "--check", "--diff", "--tags", tag, "--limit", host)
    return tag, result.returncode, changed(result, host) if result.returncode == 0 else None, result.stdout[-2500:]


def test_every_documented_tag_runs_alone_in_check_mode(host, variables, run_playbook, changed):
    docker = variables.get("mlflow_install_method", "venv") == "docker"
    roles = ["docker", "mlflow", "backup"] if docker else ["postgresql", "firewall", "mlflow", "nginx"]
    tags = [(role, tag) for role in roles for tag in documented_tags(role)]
    hosts = sorted(variables["groups"]["mlflow_servers"])
    name = host.backend.get_hostname()
    mine = tags[hosts.index(name)::len(hosts)]
    assert mine
    with ThreadPoolExecutor(max_workers=3) as pool:
        # the backup role's tags where it runs: the first database host
        results = list(pool.map(lambda item: check_alone(
            run_playbook, changed, item[0], item[1],
            variables["groups"]["mlflow_db"][0] if item[0] == "backup" else name), mine))
    print({tag: (rc, changed) for tag, rc, changed, _ in results})
    failed = [f"--tags {tag}: rc {rc}, changed={changed}\n{out}" for tag, rc, changed, out in results
              if rc != 0 or changed != 0]
    assert not failed, "\n\n".join(failed)
