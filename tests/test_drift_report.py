"""The drift_report callback on a real ansible-playbook run against this machine (files under tmp_path only)."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

PLAYBOOK = """
- name: A small run with drift
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Write a file with a password in it
      ansible.builtin.copy:
        dest: "{{ where }}/app.conf"
        content: "db_password = hunter2-hunter2\\nurl = postgresql://mlflow:s3cret-s3cret@db/mlflow\\nworkers = 2\\n"
        mode: "0644"
      notify: Say it changed

    - name: Make two directories
      ansible.builtin.file:
        path: "{{ where }}/{{ item }}"
        state: directory
        mode: "0755"
      loop: [one, two]

    - name: Keep a secret file
      ansible.builtin.copy:
        dest: "{{ where }}/secret"
        content: "topsecret-value"
        mode: "0600"
      no_log: true

    - name: Leave this one alone
      ansible.builtin.file:
        path: "{{ where }}"
        state: directory

    - name: Run the handler now
      ansible.builtin.meta: flush_handlers

    - name: Restart by hand what the change set off, elsewhere
      ansible.builtin.include_tasks:
        file: restart.yml
        apply:
          tags: [always]
      vars:
        drift_report_follows_change: true
      loop: [one]
      run_once: true
      when: app_conf_changed | default(false)
  handlers:
    - name: Say it changed
      ansible.builtin.set_fact:
        app_conf_changed: true
      changed_when: true
"""


# what a change set off, on another host (as the rolling restart's steps, delegated to the servers and load balancers)
RESTART = """
- name: Touch the restart stamp
  ansible.builtin.copy:
    dest: "{{ where }}/restarted-{{ item }}"
    content: "restarted"
    mode: "0644"
  delegate_to: elsewhere

- name: Put it back
  ansible.builtin.copy:
    dest: "{{ where }}/back-{{ target }}"
    content: "back"
    mode: "0644"
  delegate_to: "{{ target }}"
  loop: [elsewhere]
  loop_control:
    loop_var: target
"""


# a module that answers as dnf and yum do: the packages it changed in a results list of its own, with no loop
PACKAGE_MODULE = """#!/usr/bin/python
from ansible.module_utils.basic import AnsibleModule

module = AnsibleModule(argument_spec={"name": {"type": "str", "required": True}}, supports_check_mode=True)
module.exit_json(changed=True, results=["Installed: " + module.params["name"]])
"""

PACKAGES = """
- name: Packages the dnf way
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Install one package
      demo_package:
        name: alpha

    - name: Install two packages, one at a time
      demo_package:
        name: "{{ item }}"
      loop: [beta, gamma]
"""


def run(tmp_path, *extra, playbook_text=PLAYBOOK):
    playbook = tmp_path / "play.yml"
    playbook.write_text(playbook_text)
    (tmp_path / "library").mkdir(exist_ok=True)
    (tmp_path / "library" / "demo_package.py").write_text(PACKAGE_MODULE)
    (tmp_path / "restart.yml").write_text(RESTART)
    (tmp_path / "files").mkdir(exist_ok=True)
    report = tmp_path / "report.json"
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), MLFLOWOPS_DRIFT_REPORT=str(report),
               ANSIBLE_CALLBACKS_ENABLED="mlflowops.tracking.drift_report")
    executable = Path(sys.executable).parent / "ansible-playbook"
    result = subprocess.run(
        [str(executable) if executable.exists() else shutil.which("ansible-playbook"), "-i", "localhost,elsewhere,",
         "-c", "local", "-e", f"ansible_python_interpreter={sys.executable}", "-e", f"where={tmp_path / 'files'}",
         str(playbook), *extra],
        cwd=REPO, capture_output=True, text=True, check=False, env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(report.read_text()), report.read_text()


def test_check_mode_lists_each_change_with_its_resource_and_no_secret(tmp_path):
    report, text = run(tmp_path, "--check", "--diff")
    files = tmp_path / "files"
    assert report["check_mode"] is True
    assert report["drift"] == 4
    changes = report["hosts"]["localhost"]["changes"]
    assert [(change["task"], change["resource"]) for change in changes] == [
        ("Write a file with a password in it", str(files / "app.conf")),
        ("Make two directories", str(files / "one")),
        ("Make two directories", str(files / "two")),
        ("Keep a secret file", str(files / "secret")),
    ]
    assert changes[3]["diff"] == "hidden (no_log)"
    assert "db_password = <redacted>" in json.dumps(changes[0]["diff"])
    assert "workers = 2" in json.dumps(changes[0]["diff"])
    for secret in ("hunter2-hunter2", "s3cret-s3cret", "topsecret-value"):
        assert secret not in text
    assert [handler["task"] for handler in report["hosts"]["localhost"]["handlers"]] == ["Say it changed"]
    followed = report["hosts"]["elsewhere"]
    assert followed["changes"] == []
    assert [(entry["task"], entry["resource"]) for entry in followed["handlers"]] == [
        ("Touch the restart stamp", str(files / "restarted-one")), ("Put it back", str(files / "back-elsewhere"))]
    assert not (files / "app.conf").exists()
    assert not (files / "restarted-one").exists()
    assert oct(os.stat(tmp_path / "report.json").st_mode & 0o777) == "0o600"


def test_a_converged_run_reports_no_drift(tmp_path):
    applied, _ = run(tmp_path)
    assert applied["check_mode"] is False and applied["drift"] == 4
    assert [handler["task"] for handler in applied["hosts"]["localhost"]["handlers"]] == ["Say it changed"]
    assert [handler["task"] for handler in applied["hosts"]["elsewhere"]["handlers"]] == [
        "Touch the restart stamp", "Put it back"]
    assert (tmp_path / "files" / "restarted-one").exists()
    clean, _ = run(tmp_path, "--check", "--diff")
    assert clean["drift"] == 0 and clean["hosts"] == {}


def test_a_results_list_without_a_loop_is_one_change(tmp_path):
    report, _ = run(tmp_path, "--check", playbook_text=PACKAGES)
    assert report["drift"] == 3, json.dumps(report, indent=1)
    assert [(change["task"], change["resource"]) for change in report["hosts"]["localhost"]["changes"]] == [
        ("Install one package", "alpha"), ("Install two packages, one at a time", "beta"),
        ("Install two packages, one at a time", "gamma")]


def test_redaction_of_config_lines_diff_lines_urls_and_keys():
    spec = importlib.util.spec_from_file_location("drift_report", REPO / "plugins" / "callback" / "drift_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = ("AWS_SECRET_ACCESS_KEY=abc123\n+admin_password = p4ss\n- export MLFLOW_TRACKING_TOKEN=t0k\n"
            "password: y4ml\nbackend = postgresql+psycopg2://mlflow:dbp4ss@127.0.0.1/mlflow\nworkers = 2\n")
    redacted = module.redact({"content": text, "db_password": "plain", "nested": [{"api_key": "k3y"}]})
    for secret in ("abc123", "p4ss", "t0k", "y4ml", "dbp4ss", "plain", "k3y"):
        assert secret not in json.dumps(redacted)
    assert "workers = 2" in redacted["content"]
    assert "postgresql+psycopg2://mlflow:<redacted>@127.0.0.1/mlflow" in redacted["content"]
