#!/usr/bin/env python3
"""Load generator of `make bench`, run on the host under test (inside the demo container).

It needs only the standard library, requests and boto3, which the MLflow venv on the host has. The job
comes as JSON on stdin (so no password is ever on a command line) and the result goes to stdout as JSON:

    {"kind": "http", "base": "https://127.0.0.1", "auth": ["user", "pw"], "verify": "/path/ca.crt",
     "workload": "log-batch-1", "run_ids": [...], "experiment_id": "1", "clients": 16, "seconds": 20}
    {"kind": "setup", ...}     users, experiments and runs the workloads write to
    {"kind": "ui", ...}        the UI's first load: bytes on the wire against uncompressed bytes
    {"kind": "transfer", ...}  one artifact upload + download, through the server or straight to the bucket

Every client thread keeps one requests.Session (keep-alive, as MlflowClient does) and passes `verify=`
on each call: requests ignores Session.verify when REQUESTS_CA_BUNDLE is set in the environment.
"""

import gzip
import hashlib
import json
import os
import re
import sys
import tempfile
import threading
import time
import zlib

import requests

API = "/api/2.0/mlflow"
API_V3 = "/api/3.0/mlflow"


def percentile(values, q):
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100.0 * (len(ordered) - 1))))]


def workload_request(job, client, i):
    """(method, path, json body or None, query) of request i of one client."""
    name = job["workload"]
    run_id = job["run_ids"][client % len(job["run_ids"])]
    now = int(time.time() * 1000)
    if name.startswith("log-batch-"):
        count = int(name.rsplit("-", 1)[1])
        metrics = [{"key": f"m{k}", "value": float(i % 97) + k, "timestamp": now, "step": i} for k in range(count)]
        return "POST", API + "/runs/log-batch", {"run_id": run_id, "metrics": metrics}, None
    if name == "runs-search":
        body = {"experiment_ids": [job["experiment_id"]], "max_results": 50, "order_by": ["attributes.start_time DESC"]}
        return "POST", API + "/runs/search", body, None
    if name == "runs-get":
        return "GET", API + "/runs/get", None, {"run_id": run_id}
    raise SystemExit(f"unknown workload {name}")


def http_load(job):
    """`clients` threads send requests back to back for `seconds`; latency of every request is kept."""
    deadline = time.monotonic() + job["seconds"]
    latencies, errors, samples = [], [0], []
    lock = threading.Lock()
    auth = tuple(job["auth"]) if job.get("auth") else None
    verify = job.get("verify", True)

    def client(n):
        session = requests.Session()
        mine, failed, i = [], 0, 0
        while time.monotonic() < deadline:
            method, path, body, query = workload_request(job, n, i)
            i += 1
            started = time.monotonic()
            try:
                response = session.request(method, job["base"] + path, json=body, params=query, auth=auth,
                                           verify=verify, timeout=30)
                ok = response.status_code == 200
                if not ok and len(samples) < 5:
                    samples.append(f"{response.status_code} {response.text[:160]}")
            except requests.RequestException as exc:
                ok = False
                if len(samples) < 5:
                    samples.append(type(exc).__name__ + ": " + str(exc)[:160])
            mine.append(time.monotonic() - started)
            failed += 0 if ok else 1
        with lock:
            latencies.extend(mine)
            errors[0] += failed

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(job["clients"])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    return {
        "requests": len(latencies),
        "errors": errors[0],
        "error_samples": samples,
        "seconds": round(elapsed, 2),
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(percentile(latencies, 50) * 1000, 1) if latencies else None,
        "p99_ms": round(percentile(latencies, 99) * 1000, 1) if latencies else None,
    }


class Api:
    def __init__(self, base, auth, verify):
        self.base, self.auth, self.verify = base, tuple(auth) if auth else None, verify
        self.session = requests.Session()

    def call(self, method, path, body=None, query=None, ok=(200,), version=API):
        response = self.session.request(method, self.base + version + path, json=body, params=query,
                                        auth=self.auth, verify=self.verify, timeout=60)
        if response.status_code not in ok:
            raise SystemExit(f"{method} {path}: {response.status_code} {response.text[:300]}")
        return response.status_code, (response.json() if response.content else {})


def setup(job):
    """Experiment + runs for each target; with auth, a non-admin user holding EDIT on the experiment."""
    api = Api(job["base"], job.get("auth"), job.get("verify", True))
    status, found = api.call("GET", "/experiments/get-by-name", query={"experiment_name": job["experiment"]},
                             ok=(200, 404))
    if status == 200:
        experiment_id = found["experiment"]["experiment_id"]
    else:
        experiment_id = api.call("POST", "/experiments/create", {"name": job["experiment"]})[1]["experiment_id"]
    run_ids = []
    for n in range(job["runs"]):
        created = api.call("POST", "/runs/create", {"experiment_id": experiment_id, "run_name": f"bench-{n}",
                                                    "start_time": int(time.time() * 1000)})[1]
        run_id = created["run"]["info"]["run_id"]
        api.call("POST", "/runs/log-batch", {"run_id": run_id, "params": [
            {"key": f"p{k}", "value": str(k)} for k in range(10)], "tags": [{"key": "bench", "value": "yes"}]})
        run_ids.append(run_id)
    editor = job.get("editor")
    if editor:
        status, _ = api.call("GET", "/users/get", query={"username": editor["name"]}, ok=(200, 404))
        if status == 404:
            api.call("POST", "/users/create", {"username": editor["name"], "password": editor["password"]})
        else:
            api.call("PATCH", "/users/update-password", {"username": editor["name"], "password": editor["password"]})
        key = {"username": editor["name"], "resource_type": "experiment", "resource_id": experiment_id}
        api.call("POST", "/users/permissions/revoke", key, ok=(200, 400, 404), version=API_V3)
        api.call("POST", "/users/permissions/grant", dict(key, permission="EDIT"), version=API_V3)
    return {"experiment_id": experiment_id, "run_ids": run_ids}


def ui(job):
    """Fetch the UI page and every script and stylesheet it references, as a browser with gzip would."""
    session = requests.Session()
    auth, verify = tuple(job["auth"]) if job.get("auth") else None, job.get("verify", True)
    headers = {"Accept-Encoding": "gzip, deflate"}
    started = time.monotonic()
    wire = plain = 0
    queue, seen, missing = ["/"], set(), []
    while queue:
        path = queue.pop(0)
        if path in seen:
            continue
        seen.add(path)
        response = session.get(job["base"] + path, auth=auth, verify=verify, headers=headers, stream=True, timeout=60)
        raw = response.raw.read(decode_content=False)
        wire += len(raw)
        if response.status_code != 200:
            missing.append(f"{path}: {response.status_code}")
            continue
        encoding = response.headers.get("Content-Encoding", "")
        body = decode(raw, encoding)
        plain += len(body)
        if path == "/" or path.endswith(".html"):
            text = body.decode("utf-8", "replace")
            for ref in re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', text):
                queue.append(ref if ref.startswith("/") else "/" + ref.lstrip("./"))
    return {"files": len(seen), "wire_bytes": wire, "uncompressed_bytes": plain, "missing": missing,
            "seconds": round(time.monotonic() - started, 3),
            "ratio": round(wire / plain, 3) if plain else None}


def decode(raw, encoding):
    if encoding == "gzip":
        return gzip.decompress(raw)
    if encoding == "deflate":
        return zlib.decompress(raw)
    return raw


def transfer(job):
    """Upload then download `megabytes` of random data, through the server's artifact proxy or to the bucket."""
    size = job["megabytes"] * 1024 * 1024
    path = os.path.join(tempfile.gettempdir(), f"mlflowops-bench-{size}.bin")
    if not os.path.exists(path) or os.path.getsize(path) != size:
        with open(path, "wb") as out:
            for _ in range(job["megabytes"]):
                out.write(os.urandom(1024 * 1024))
    digest = hashlib.sha256()
    key = f"{job['key_prefix']}/bench-{time.time_ns()}.bin"
    if job["via"] == "proxy":
        session, auth, verify = requests.Session(), tuple(job["auth"]), job.get("verify", True)
        url = f"{job['base']}/api/2.0/mlflow-artifacts/artifacts/{key}"
        started = time.monotonic()
        with open(path, "rb") as body:
            response = session.put(url, data=body, auth=auth, verify=verify, timeout=600)
        response.raise_for_status()
        up = time.monotonic() - started
        started = time.monotonic()
        with session.get(url, auth=auth, verify=verify, stream=True, timeout=600) as response:
            response.raise_for_status()
            received = 0
            for chunk in response.iter_content(1024 * 1024):
                received += len(chunk)
                digest.update(chunk)
        down = time.monotonic() - started
    else:
        import boto3
        s3 = boto3.client("s3", endpoint_url=job["endpoint"], region_name=job.get("region", "us-east-1"),
                          aws_access_key_id=job["key_id"], aws_secret_access_key=job["secret"])
        object_key = f"{job['bucket_prefix']}/{key}".lstrip("/")
        started = time.monotonic()
        s3.upload_file(path, job["bucket"], object_key)
        up = time.monotonic() - started
        started = time.monotonic()
        body = s3.get_object(Bucket=job["bucket"], Key=object_key)["Body"]
        received = 0
        for chunk in iter(lambda: body.read(1024 * 1024), b""):
            received += len(chunk)
            digest.update(chunk)
        down = time.monotonic() - started
        s3.delete_object(Bucket=job["bucket"], Key=object_key)
    expected = hashlib.sha256()
    with open(path, "rb") as source:
        for chunk in iter(lambda: source.read(1024 * 1024), b""):
            expected.update(chunk)
    return {"megabytes": job["megabytes"], "upload_s": round(up, 2), "download_s": round(down, 2),
            "upload_mb_s": round(job["megabytes"] / up, 1), "download_mb_s": round(job["megabytes"] / down, 1),
            "intact": received == size and digest.hexdigest() == expected.hexdigest()}


def main():
    job = json.load(sys.stdin)
    kinds = {"http": http_load, "setup": setup, "ui": ui, "transfer": transfer}
    print(json.dumps(kinds[job["kind"]](job)))


if __name__ == "__main__":
    main()
