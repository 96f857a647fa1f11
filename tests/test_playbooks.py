"""Static checks of the playbooks, inventories and the collection build."""

import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PLAYBOOKS = sorted((REPO / "playbooks").glob("*.yml"))
INVENTORIES = sorted(p for p in (REPO / "inventories").iterdir() if p.is_dir())


def tool(name):
    """An Ansible CLI from the interpreter's own venv, else from PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name) or name


def run(command, *args):
    return subprocess.run(
        [tool(command), *args], cwd=REPO, capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize("playbook", PLAYBOOKS, ids=lambda p: p.name)
@pytest.mark.parametrize("inventory", INVENTORIES, ids=lambda p: p.name)
def test_syntax_check(playbook, inventory):
    result = run("ansible-playbook", "--syntax-check", "-i", str(inventory), str(playbook))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("inventory", INVENTORIES, ids=lambda p: p.name)
def test_inventory_loads_the_shared_group_vars(inventory):
    result = run("ansible-inventory", "-i", str(inventory), "--list")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    hostvars = data["_meta"]["hostvars"]
    assert hostvars, "inventory has no hosts"
    for host, variables in hostvars.items():
        assert "mlflowops_db_password" in variables, f"{host}: group_vars/all.yml not loaded"


@pytest.mark.parametrize("inventory", INVENTORIES, ids=lambda p: p.name)
def test_inventory_defines_both_tiers(inventory):
    result = run("ansible-inventory", "-i", str(inventory), "--list")
    data = json.loads(result.stdout)
    for group in ("mlflow_db", "mlflow_servers"):
        assert data.get(group, {}).get("hosts"), f"{inventory.name}: group {group} is empty"


def test_collection_builds_with_roles_and_playbooks(tmp_path):
    result = run("ansible-galaxy", "collection", "build", "--output-path", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    (tarball,) = tmp_path.glob("mlflowops-tracking-*.tar.gz")
    with tarfile.open(tarball) as archive:
        names = set(archive.getnames())
    assert "MANIFEST.json" in names
    assert "roles/postgresql/tasks/main.yml" in names
    assert "playbooks/site.yml" in names
    assert "playbooks/files/mlflow_probe.py" in names
    assert not any(n.startswith((".venv", ".cache")) for n in names)


MODULES = sorted((REPO / "plugins" / "modules").glob("*.py"))


@pytest.mark.parametrize("module", MODULES, ids=lambda p: p.stem)
def test_module_documentation_renders(module):
    """DOCUMENTATION, EXAMPLES and RETURN parse (ansible-lint only warns when they do not)."""
    result = run("ansible-doc", "--json", "-M", str(module.parent), module.stem)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)[module.stem]
    assert doc["doc"]["short_description"] and doc["return"] is not None, doc
