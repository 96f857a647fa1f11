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
"""

import hashlib
import hmac
import os
import secrets
import threading

from flask import current_app, request
from mlflow.server.auth import authenticate_request_basic_auth

_KEY = secrets.token_bytes(32)
_LOCKS = [threading.Lock() for _ in range(max(1, int(os.environ.get("MLFLOWOPS_AUTH_CHECK_CONCURRENCY", "4"))))]


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
