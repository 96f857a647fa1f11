"""Every tag the role READMEs document runs alone on a converged host: in check mode, rc 0 and no change.

Each tag runs with its tier's own playbook, limited to one host: where its role runs (the backup role on the first
database host, nginx on the load balancer where there is one). The tags are spread over the scenario's MLflow hosts
(the servers of one install method share its tags: the venv method's, or the docker method's with the roles it
adds and the backup role's), three at a time, so the whole set costs a few minutes. A host's
`mlflowops_test_tag_roles` narrows the roles (a scenario leaves tags to another that runs them in the same place).
"""

import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from conftest import inventory_variables

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
    # a scenario may leave a role's tags to another scenario that runs them in the same placement
    roles = variables.get("mlflowops_test_tag_roles", roles)
    tags = [(role, tag) for role in roles for tag in documented_tags(role)]
    # the tags of this install method, shared among the servers that have it
    method = variables.get("mlflow_install_method", "venv")
    hosts = [server for server in sorted(variables["groups"]["mlflow_servers"])
             if inventory_variables(server).get("mlflow_install_method", "venv") == method]
    name = host.backend.get_hostname()
    mine = tags[hosts.index(name)::len(hosts)]
    assert mine
    groups = variables["groups"]
    # each role's tags where that role runs: the backup role's on the first database host, the postgresql role's on
    # this host or the first database host, the nginx role's on this host or the first load balancer
    where = {"backup": groups["mlflow_db"][0],
             "postgresql": name if name in groups.get("mlflow_db", []) else groups["mlflow_db"][0],
             "nginx": (groups.get("mlflow_proxy") or [name])[0]}
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda item: check_alone(
            run_playbook, changed, item[0], item[1], where.get(item[0], name)), mine))
    print({tag: (rc, changed) for tag, rc, changed, _ in results})
    failed = [f"--tags {tag}: rc {rc}, changed={changed}\n{out}" for tag, rc, changed, out in results
              if rc != 0 or changed != 0]
    assert not failed, "\n\n".join(failed)
