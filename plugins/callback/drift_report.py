# Copyright: mlflowops.tracking contributors
# Apache License 2.0 (see LICENSE)
"""Write what a run changed (or, with --check, would change) to a JSON drift report."""

from __future__ import annotations

DOCUMENTATION = r"""
name: drift_report
type: aggregate
short_description: Write every change of a run, per host, to a JSON drift report
description:
  - >-
    Records each task result that reports a change (with C(--check), a change the run would make) with
    the play, the role, the task, the resource it names (a path, a service, an item's label) and the diff
    (a unified diff where the task compared two texts), under the host it changed (for a delegated task, the
    host it was delegated to).
  - Handlers are listed apart (C(handlers)), since they follow from a change and are not drift themselves.
  - >-
    So are the tasks that carry the variable C(drift_report_follows_change=true) (on the task, its block or
    the include that loads it): the steps of the rolling restart of C(mlflowops.tracking.mlflow) behind load
    balancers, which do the work of its restart handler one server at a time.
  - >-
    Results of C(no_log) tasks are hidden by Ansible before they reach this plugin; in addition, any
    C(name = value) or C(name: value) line whose name looks like a password, secret, key or token has its
    value replaced by C(<redacted>), and so have URL credentials.
  - The report is written when each play starts and when the run ends, so that the last play of
    C(mlflowops.tracking.reconcile) can read the report of every play before it.
  - Enable it with C(ANSIBLE_CALLBACKS_ENABLED=mlflowops.tracking.drift_report).
requirements:
  - enabled in the Ansible configuration (callbacks_enabled) or the environment
options:
  report_path:
    description:
      - Where the JSON report is written, an absolute path (its directory must exist).
      - C(mlflowops.tracking.reconcile) reads the same environment variable to find the report.
    type: path
    default: ~/.ansible/mlflowops-drift.json
    env:
      - name: MLFLOWOPS_DRIFT_REPORT
"""

import datetime
import difflib
import json
import os
import re
import tempfile

from ansible.errors import AnsibleError
from ansible.playbook.handler import Handler
from ansible.plugins.callback import CallbackBase

_SECRET_NAME = r"[\w.-]*(?:password|passwd|secret|token|credential|access_key|private_key|api_key|key_id)[\w.-]*"
# a line of a config file (or of a unified diff of one: a leading +, - or space) that sets a secret-looking name
_SECRET_ASSIGNMENT = re.compile(r"(?im)^([+ -]?\s*(?:export\s+)?[\"']?" + _SECRET_NAME + r"[\"']?\s*[=:]\s*)(\S.*)$")
_URL_CREDENTIALS = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]+:)[^@\s/]+@", re.IGNORECASE)
_RESOURCE_KEYS = ("path", "dest", "name", "rule", "key", "src", "repo", "cmd")


def redact(value):
    """The value with secret-looking assignments and URL passwords replaced, at any depth."""
    if isinstance(value, str):
        return _URL_CREDENTIALS.sub(r"\1<redacted>@", _SECRET_ASSIGNMENT.sub(r"\1<redacted>", value))
    if isinstance(value, dict):
        return {key: "<redacted>" if re.fullmatch(_SECRET_NAME, str(key), re.IGNORECASE) else redact(item)
                for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(item) for item in value]
    return value


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "mlflowops.tracking.drift_report"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._report = {"started": None, "finished": None, "check_mode": None, "playbook": None, "hosts": {}}
        self._play = None

    def set_options(self, task_keys=None, var_options=None, direct=None):
        super().set_options(task_keys=task_keys, var_options=var_options, direct=direct)
        self._path = os.path.expanduser(self.get_option("report_path"))

    def v2_playbook_on_start(self, playbook):
        if not os.path.isabs(self._path):
            raise AnsibleError(f"MLFLOWOPS_DRIFT_REPORT must be an absolute path, not {self._path!r}")
        os.makedirs(os.path.dirname(self._path), exist_ok=True)
        self._report["started"] = _now()
        self._report["playbook"] = os.path.basename(playbook._file_name)
        self._report["check_mode"] = _cli_check_mode()
        self._write()

    def v2_playbook_on_play_start(self, play):
        self._play = play.get_name()
        self._write()

    def v2_runner_on_ok(self, result):
        data = _result_of(result)
        # a loop's items are recorded one by one (v2_runner_item_on_ok), each with its own delegated host; a module
        # may return a results list of its own without a loop (dnf, yum: the packages it changed)
        if data.get("changed") and not _looped(result._task):
            self._record(result, data, None, _task_arguments(result))

    def v2_runner_item_on_ok(self, result):
        data = _result_of(result)
        if data.get("changed"):
            self._record(result, data, data.get("_ansible_item_label", data.get("item")), {})

    def _record(self, result, data, item, arguments):
        task = result._task
        host = self._report["hosts"].setdefault(_changed_host(result), {"changes": [], "handlers": []})
        host["handlers" if _follows_change(task) else "changes"].append(self._entry(task, data, item, arguments))

    def v2_playbook_on_stats(self, stats):
        self._report["finished"] = _now()
        self._write()

    def _entry(self, task, data, item, arguments):
        role = getattr(task, "_role", None)
        entry = {
            "play": self._play,
            "role": role.get_name() if role else None,
            "task": task.get_name(),
            "action": task.action,
            "resource": _resource(data, item, arguments),
        }
        if data.get("censored"):
            entry["diff"] = "hidden (no_log)"
        elif data.get("diff"):
            # redacted before and after the texts become a unified diff
            entry["diff"] = redact(_readable(redact(data["diff"])))
        return entry

    def _write(self):
        # written whole to a file beside the report and renamed: a reader never sees half a report
        directory = os.path.dirname(self._path)
        report = dict(self._report, drift=sum(len(host["changes"]) for host in self._report["hosts"].values()))
        handle, temporary = tempfile.mkstemp(dir=directory, prefix=".drift-report.")
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(report, stream, indent=2, sort_keys=True, default=str)
            stream.write("\n")
        os.chmod(temporary, 0o600)
        os.replace(temporary, self._path)


def _changed_host(result):
    """The host a result changed: the one its task (or loop item) was delegated to, else the task's host."""
    delegated = getattr(result._task, "delegate_to", None)
    if isinstance(delegated, str) and delegated and "{{" not in delegated:
        return delegated
    return result._host.get_name()


def _looped(task):
    """Whether the task runs a loop (loop: or with_*), whose items the callback records one by one."""
    return task.loop is not None or bool(task.loop_with)


def _follows_change(task):
    """A handler, or a task marked as doing a handler's work: what a change set off, not drift itself."""
    if isinstance(task, Handler):
        return True
    return task.get_vars().get("drift_report_follows_change") in (True, "true", "True")


def _result_of(result):
    return getattr(result, "result", None) or result._result


def _readable(diff):
    """A file's before/after texts as a unified diff (the lines that differ, with context); other diffs as is."""
    if isinstance(diff, list):
        return [_readable(part) for part in diff]
    if isinstance(diff, dict) and isinstance(diff.get("before"), str) and isinstance(diff.get("after"), str):
        lines = difflib.unified_diff(diff["before"].splitlines(), diff["after"].splitlines(),
                                     fromfile=f"{diff.get('before_header', '')} (now)".strip(),
                                     tofile=f"{diff.get('before_header', '')} (wanted)".strip(),
                                     lineterm="", n=2)
        return {"unified": list(lines)}
    return diff


def _task_arguments(result):
    """The task's arguments as the worker templated them: the only place a no_log result still names its file."""
    fields = getattr(result, "task_fields", None) or getattr(result, "_task_fields", None) or {}
    return {key: value for key, value in (fields.get("args") or {}).items() if key in ("path", "dest")}


def _resource(data, item, arguments):
    """What the change is about: a file's path, else the loop item's label, else the module's name or rule."""
    arguments = dict(arguments, **((data.get("invocation") or {}).get("module_args") or {}))
    for key in ("path", "dest"):
        if isinstance(data.get(key) or arguments.get(key), str):
            return redact(data.get(key) or arguments.get(key))
    if isinstance(item, (list, tuple)) and all(not isinstance(part, (dict, list)) for part in item):
        item = " ".join(str(part) for part in item)
    if item is not None and not isinstance(item, (dict, list)):
        return redact(str(item))
    for key in _RESOURCE_KEYS:
        value = data.get(key) or arguments.get(key) or (item.get(key) if isinstance(item, dict) else None)
        if isinstance(value, str):
            return redact(value)
    return None


def _cli_check_mode():
    from ansible import context

    return bool(context.CLIARGS.get("check", False))


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
