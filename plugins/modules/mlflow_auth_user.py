#!/usr/bin/python
# Copyright: mlflowops maintainers
# Apache License 2.0 (see galaxy.yml)

DOCUMENTATION = r"""
---
module: mlflow_auth_user
short_description: Manage an MLflow basic-auth user and its permissions through the REST API
description:
  - Creates, updates or deletes a user of MLflow's C(basic-auth) app and sets its permissions on
    experiments (by name) and registered models, using the server's REST API with an admin login.
  - Idempotent; supports check mode. Passwords are never returned.
  - Also rotates the admin's own password when O(name) is the admin. The module then logs in with
    O(password) first and, when that is refused, with O(admin_password), and sets the new one.
options:
  tracking_uri:
    description: Base URL of the tracking server as seen from the managed host.
    type: str
    default: http://127.0.0.1:5000
  admin_username:
    description: Admin user the module logs in as.
    type: str
    required: true
  admin_password:
    description: Password of O(admin_username).
    type: str
    required: true
    no_log: true
  name:
    description: User to manage.
    type: str
    required: true
  password:
    description: Password of the user (at least 12 characters); required when O(state=present).
    type: str
    no_log: true
  is_admin:
    description: Whether the user is an admin. Left unchanged when omitted.
    type: bool
  state:
    description: Whether the user exists.
    type: str
    choices: [present, absent]
    default: present
  experiment_permissions:
    description: Permissions on experiments, by experiment name (experiments must exist).
    type: list
    elements: dict
    default: []
    suboptions:
      experiment:
        description: Experiment name.
        type: str
        required: true
      permission:
        description: Permission to grant.
        type: str
        choices: [READ, USE, EDIT, MANAGE, NO_PERMISSIONS]
        required: true
  registered_model_permissions:
    description: Permissions on registered models, by name.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Registered model name.
        type: str
        required: true
      permission:
        description: Permission to grant.
        type: str
        choices: [READ, USE, EDIT, MANAGE, NO_PERMISSIONS]
        required: true
  create_missing_experiments:
    description: Create experiments named in O(experiment_permissions) that do not exist yet (as the admin).
    type: bool
    default: false
  timeout:
    description: HTTP timeout in seconds.
    type: int
    default: 30
  record:
    description:
      - JSON file on the managed host where the module notes the users it manages and the grants it made
        (names and ids only, no secrets). With O(exclusive), only what this file lists is ever revoked or
        deleted; a missing or unreadable file means nothing is removed.
      - Grants MLflow made by itself (MANAGE for whoever creates an experiment or a model) and users made
        through the UI or the API are never in it.
    type: path
  exclusive:
    description:
      - Revoke the grants of O(name) that O(record) lists but O(experiment_permissions) and
        O(registered_model_permissions) no longer ask for. A recorded grant that someone changed since is
        left alone (and forgotten).
      - With O(state=absent), the user is deleted only when O(record) lists it.
    type: bool
    default: false
author:
  - mlflowops maintainers
"""

EXAMPLES = r"""
- name: Alice loses the grants that were dropped from her list (the record says which ones the role made)
  mlflowops.tracking.mlflow_auth_user:
    admin_username: admin
    admin_password: "{{ vault_mlflow_admin_password }}"
    name: alice
    password: "{{ vault_alice_password }}"
    record: /var/lib/mlflow/mlflowops-auth-record.json
    exclusive: true
    experiment_permissions:
      - experiment: churn
        permission: READ

- name: A read-only data scientist on one experiment
  mlflowops.tracking.mlflow_auth_user:
    admin_username: admin
    admin_password: "{{ vault_mlflow_admin_password }}"
    name: alice
    password: "{{ vault_alice_password }}"
    experiment_permissions:
      - experiment: churn
        permission: READ
"""

RETURN = r"""
created:
  description: Whether the user was created.
  type: bool
  returned: always
password_updated:
  description: Whether the password was changed.
  type: bool
  returned: always
permissions_changed:
  description: Experiment or model permissions that were created or changed.
  type: list
  elements: str
  returned: always
permissions_revoked:
  description: Recorded grants revoked because the lists no longer ask for them (O(exclusive)).
  type: list
  elements: str
  returned: always
recorded_users:
  description: The users O(record) lists after this call (empty without O(record)).
  type: list
  elements: str
  returned: always
login_changed:
  description:
    - Whether an existing login changed (password, admin flag) or was removed. Each server worker caches
      verified logins for C(auth_cache_ttl_seconds) and MLflow drops the entry only in the worker that served
      the change; restart the server when this is true and it runs several workers.
  type: bool
  returned: always
"""

import base64
import json
import os
import tempfile
from urllib.parse import urlencode

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import open_url
from urllib.error import HTTPError, URLError

API = "/api/2.0/mlflow"
API_V3 = "/api/3.0/mlflow"


class Api:
    def __init__(self, module, base, username, password):
        self.module = module
        self.base = base.rstrip("/")
        self.auth = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        self.timeout = module.params["timeout"]

    def call(self, method, path, query=None, body=None, ok=(200,), version=API):
        url = self.base + version + path + ("?" + urlencode(query) if query else "")
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": self.auth, "Content-Type": "application/json"}
        try:
            response = open_url(url, method=method, data=data, headers=headers, timeout=self.timeout,
                                validate_certs=True)
            status, payload = response.getcode(), response.read()
        except HTTPError as exc:
            status, payload = exc.code, exc.read()
        except URLError as exc:
            self.module.fail_json(msg=f"cannot reach {url}: {exc.reason}")
        if status not in ok:
            return status, None
        try:
            return status, json.loads(payload or b"{}")
        except ValueError:
            return status, {}

    def must(self, method, path, query=None, body=None, version=API):
        status, payload = self.call(method, path, query, body, ok=(200,), version=version)
        if status != 200:
            self.module.fail_json(msg=f"{method} {path} answered HTTP {status}")
        return payload


def can_log_in(module, base, username, password):
    api = Api(module, base, username, password)
    status, _ = api.call("GET", "/experiments/search", {"max_results": 1}, ok=(200, 401, 403))
    return status == 200


def main():
    permission = {"type": "str", "required": True, "choices": ["READ", "USE", "EDIT", "MANAGE", "NO_PERMISSIONS"]}
    module = AnsibleModule(
        argument_spec={
            "tracking_uri": {"type": "str", "default": "http://127.0.0.1:5000"},
            "admin_username": {"type": "str", "required": True},
            "admin_password": {"type": "str", "required": True, "no_log": True},
            "name": {"type": "str", "required": True},
            "password": {"type": "str", "no_log": True},
            "is_admin": {"type": "bool"},
            "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
            "experiment_permissions": {
                "type": "list", "elements": "dict", "default": [],
                "options": {"experiment": {"type": "str", "required": True}, "permission": permission},
            },
            "registered_model_permissions": {
                "type": "list", "elements": "dict", "default": [],
                "options": {"name": {"type": "str", "required": True}, "permission": permission},
            },
            "create_missing_experiments": {"type": "bool", "default": False},
            "timeout": {"type": "int", "default": 30},
            "record": {"type": "path"},
            "exclusive": {"type": "bool", "default": False},
        },
        required_if=[("state", "present", ("password",))],
        required_by={"exclusive": "record"},
        supports_check_mode=True,
    )
    p = module.params
    base, name = p["tracking_uri"], p["name"]
    result = {"changed": False, "created": False, "password_updated": False, "permissions_changed": [],
              "permissions_revoked": [], "login_changed": False}
    record = Record(module, p["record"])
    if p["password"] is not None and len(p["password"]) < 12:
        module.fail_json(msg=f"the password of '{name}' must have at least 12 characters")

    admin_password = p["admin_password"]
    rotating_admin = name == p["admin_username"]
    if rotating_admin and p["password"] and can_log_in(module, base, name, p["password"]):
        admin_password = p["password"]
    if not can_log_in(module, base, p["admin_username"], admin_password):
        module.fail_json(msg=f"the admin login '{p['admin_username']}' is refused by {base}")
    api = Api(module, base, p["admin_username"], admin_password)

    status, found = api.call("GET", "/users/get", {"username": name}, ok=(200, 404))
    exists = status == 200

    if p["state"] == "absent":
        if exists and (not p["exclusive"] or name in record.users):
            result.update(changed=True, login_changed=True)
            if not module.check_mode:
                api.must("DELETE", "/users/delete", body={"username": name})
        record.users.pop(name, None)
        record.save()
        module.exit_json(recorded_users=sorted(record.users), **result)

    if not exists:
        result.update(changed=True, created=True)
        if not module.check_mode:
            api.must("POST", "/users/create", body={"username": name, "password": p["password"]})
    elif not can_log_in(module, base, name, p["password"]):
        result.update(changed=True, password_updated=True, login_changed=True)
        if not module.check_mode:
            body = {"username": name, "password": p["password"]}
            if rotating_admin:
                # MLflow asks for the current password when a user changes their own
                body["current_password"] = admin_password
            api.must("PATCH", "/users/update-password", body=body)

    if p["is_admin"] is not None:
        current = bool(found and found.get("user", {}).get("is_admin"))
        if not exists or current != p["is_admin"]:
            result.update(changed=True, login_changed=exists)
            result["permissions_changed"].append(f"is_admin={p['is_admin']}")
            if not module.check_mode:
                api.must("PATCH", "/users/update-admin", body={"username": name, "is_admin": p["is_admin"]})

    # the admin is MLflow's own (created on the first start): never recorded, never removed
    mine = {"experiments": {}, "registered_models": {}} if rotating_admin else \
        record.users.setdefault(name, {"experiments": {}, "registered_models": {}})
    wanted_experiments, wanted_models = set(), set()
    for grant in p["experiment_permissions"]:
        status, experiment = api.call("GET", "/experiments/get-by-name",
                                      {"experiment_name": grant["experiment"]}, ok=(200, 404))
        if status != 200 and p["create_missing_experiments"]:
            result["changed"] = True
            result["permissions_changed"].append(f"experiment {grant['experiment']}: created")
            if module.check_mode:
                continue
            created = api.must("POST", "/experiments/create", body={"name": grant["experiment"]})
            experiment = {"experiment": {"experiment_id": created["experiment_id"]}}
        elif status != 200:
            module.fail_json(msg=f"experiment '{grant['experiment']}' does not exist", **result)
        experiment_id = experiment["experiment"]["experiment_id"]
        sync_permission(module, api, result, name, "experiment", experiment_id,
                        grant["permission"], f"experiment {grant['experiment']}", exists)
        mine["experiments"][experiment_id] = grant["permission"]
        wanted_experiments.add(experiment_id)

    for grant in p["registered_model_permissions"]:
        sync_permission(module, api, result, name, "registered_model", grant["name"],
                        grant["permission"], f"registered model {grant['name']}", exists)
        mine["registered_models"][grant["name"]] = grant["permission"]
        wanted_models.add(grant["name"])

    if p["exclusive"]:
        for resource_type, field, wanted in (("experiment", "experiments", wanted_experiments),
                                             ("registered_model", "registered_models", wanted_models)):
            for resource_id, granted in list(mine[field].items()):
                if resource_id not in wanted:
                    revoke_recorded(module, api, result, name, resource_type, resource_id, granted)
                    del mine[field][resource_id]
    record.save()
    module.exit_json(recorded_users=sorted(record.users), **result)


class Record:
    """The users this module manages and the grants it made, kept in a JSON file on the managed host."""

    def __init__(self, module, path):
        self.module, self.path, self.users = module, path, {}
        if path and os.path.exists(path):
            try:
                with open(path, encoding="utf-8") as handle:
                    self.users = json.load(handle).get("users", {})
            except (OSError, ValueError, AttributeError):
                self.users = {}  # unreadable: remove nothing, start a new record
        self.before = json.dumps(self.users, sort_keys=True)

    def save(self):
        if not self.path or self.module.check_mode or json.dumps(self.users, sort_keys=True) == self.before:
            return
        directory = os.path.dirname(self.path) or "."
        handle, temporary = tempfile.mkstemp(dir=directory, prefix=".mlflowops-auth-record.")
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump({"version": 1, "users": self.users}, out, indent=1, sort_keys=True)
            out.write("\n")
        os.chmod(temporary, 0o640)
        self.module.atomic_move(temporary, self.path)


def revoke_recorded(module, api, result, username, resource_type, resource_id, granted):
    """Revoke a grant this module made, unless someone changed it since."""
    key = {"username": username, "resource_type": resource_type, "resource_id": resource_id}
    status, found = api.call("GET", "/users/permissions/get", key, ok=(200, 404), version=API_V3)
    if status != 200 or found.get("permission") != granted:
        return
    result["changed"] = True
    result["permissions_revoked"].append(f"{resource_type} {resource_id}: {granted}")
    if not module.check_mode:
        api.must("POST", "/users/permissions/revoke", body=key, version=API_V3)


def sync_permission(module, api, result, username, resource_type, resource_id, wanted, label, user_existed):
    """Make the user's effective permission on one resource equal `wanted` (v3 permissions API)."""
    key = {"username": username, "resource_type": resource_type, "resource_id": resource_id}
    current = None
    if user_existed:
        status, found = api.call("GET", "/users/permissions/get", key, ok=(200, 404), version=API_V3)
        if status == 200:
            current = found.get("permission")
    if current == wanted:
        return
    result["changed"] = True
    result["permissions_changed"].append(f"{label}: {current or 'none'} -> {wanted}")
    if module.check_mode:
        return
    # a grant exists at most once per resource: drop an explicit one before granting anew
    api.call("POST", "/users/permissions/revoke", body=key, ok=(200, 400, 404), version=API_V3)
    api.must("POST", "/users/permissions/grant", body=dict(key, permission=wanted), version=API_V3)


if __name__ == "__main__":
    main()
