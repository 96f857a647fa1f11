# Installed by the mlflowops.tracking mlflow role; basic_auth.ini names it as MLflow's authorization_function.
"""MLflow basic auth with a bounded number of password checks at a time.

MLflow checks a password with werkzeug's scrypt hash (about 32 MB of memory and tens of milliseconds per
check) and then caches the login for auth_cache_ttl_seconds. The cache has no single flight: when an
entry expires, every request of that login in flight checks the hash at once. Sixteen clients of one
login cost a worker about 500 MB for a moment, which kills the server on a 1 GiB host.

This function runs MLflow's own check (authenticate_request_basic_auth: same cache, same answers) under
one of MLFLOWOPS_AUTH_CHECK_CONCURRENCY locks, chosen by the credential. Requests of the same login wait
for the first one, which fills the cache, and then pass on cache hits; at most that many checks run at
once in a worker. Holding a lock for a cache hit costs microseconds.

With --expose-prometheus (the role's mlflow_prometheus_enabled), GET /metrics is answered with the exporter's page
without a login: a scraper has no MLflow user, and nginx serves that path only to the addresses allowed to scrape.

It also puts a gate in front of the tracking store's connection pool. A log-batch request holds one pooled
connection and asks for a second one while holding it (SqlAlchemyStore.log_batch opens a session, then
_log_params and _log_metrics open their own). A worker runs up to 40 requests at once (anyio's thread limit), and
once as many log-batch requests as the pool has connections hold one each, every one of them waits for a second
until SQLAlchemy's pool timeout (30 s) fails them all: sixteen training jobs logging at once stall a server with
the role's pool of 12 + 2. The gate lets at most (connections - 1) // 3 requests run in the Flask app of a worker at
once (see _gate_size); the others wait for their turn holding no connection. Artifact transfers (mlflow-artifacts)
do not use the tracking store and pass beside it. The gate wraps the app's WSGI callable when MLflow first imports
this module, at its first authenticated request; routes that uvicorn serves without Flask (/v1/traces, the artifact
GET and PUT) do not pass through it.
"""

import hashlib
import hmac
import os
import secrets
import threading

from flask import current_app, request
from mlflow.server import app as _app
from mlflow.server.auth import authenticate_request_basic_auth

_KEY = secrets.token_bytes(32)
_LOCKS = [threading.Lock() for _ in range(max(1, int(os.environ.get("MLFLOWOPS_AUTH_CHECK_CONCURRENCY", "4"))))]


# MLflow's artifact proxy (uploads to and downloads from the bucket): no tracking store session
_UNGATED = ("/api/2.0/mlflow-artifacts/", "/ajax-api/2.0/mlflow-artifacts/")


def _gate_size():
    """How many requests may run in the app at once: (connections - 1) // 3, at least 1. The deepest nesting of
    sessions in MLflow's tracking store is four (log-batch with an mlflow.runName tag: log_batch, _set_tags, set_tag,
    update_run_info), so that many requests, each holding three connections and waiting for a fourth, still leave
    one free. MLflow passes a setting of 0 or none on as SQLAlchemy's default (pool 5, overflow 10)."""
    pool = int(os.environ.get("MLFLOW_SQLALCHEMYSTORE_POOL_SIZE") or 0) or 5
    overflow = int(os.environ.get("MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW") or 0) or 10
    return max(1, (pool + overflow - 1) // 3)


class _DatabaseGate:
    """WSGI middleware: at most `size` requests in the app at once. The app's view has run (and its sessions are
    closed) when the app returns the response, so the turn ends there, before the body is sent."""

    def __init__(self, wsgi_app, size):
        self.wsgi_app = wsgi_app
        self.turns = threading.BoundedSemaphore(size)

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO", "").startswith(_UNGATED):
            return self.wsgi_app(environ, start_response)
        with self.turns:
            return self.wsgi_app(environ, start_response)


if not isinstance(_app.wsgi_app, _DatabaseGate):
    _app.wsgi_app = _DatabaseGate(_app.wsgi_app, _gate_size())


def _lock_for(username, password):
    # A keyed digest, so the lock a credential maps to tells nothing about the password.
    digest = hmac.new(_KEY, f"{username}\0{password}".encode("utf-8"), hashlib.sha256).digest()
    return _LOCKS[int.from_bytes(digest[:8], "big") % len(_LOCKS)]


def _metrics_page():
    """The exporter's page for GET /metrics when the exporter is on (None otherwise: the path is not special)."""
    if request.method != "GET" or request.path != "/metrics":
        return None
    view = current_app.view_functions.get("prometheus_metrics")
    return None if view is None else current_app.make_response(view())


def authenticate_request():
    metrics = _metrics_page()
    if metrics is not None:
        return metrics
    authorization = request.authorization
    if authorization is None or authorization.username is None:
        return authenticate_request_basic_auth()
    with _lock_for(authorization.username, authorization.password or ""):
        return authenticate_request_basic_auth()
