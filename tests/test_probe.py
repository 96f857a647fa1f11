"""The probe on its own, against a real `mlflow server` and a real S3 endpoint (moto) on loopback."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

PROBE = Path(__file__).resolve().parent.parent / "playbooks" / "files" / "mlflow_probe.py"
BIN = Path(sys.executable).parent
BUCKET = "probe-bucket"
PREFIX = "artifacts"
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "probe-test-key",
    "AWS_SECRET_ACCESS_KEY": "probe-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback only
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {seconds} s")


def start(command, env, log_path):
    log = log_path.open("w")
    return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)


def stop(process):
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    port = free_port()
    logs = tmp_path_factory.mktemp("moto")
    process = start([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], os.environ, logs / "moto.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/moto-api/", 30)
        import boto3

        endpoint = f"http://127.0.0.1:{port}"
        boto3.client("s3", endpoint_url=endpoint, **_boto_keys()).create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        stop(process)


def _boto_keys():
    return {
        "aws_access_key_id": S3_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": S3_ENV["AWS_SECRET_ACCESS_KEY"],
        "region_name": S3_ENV["AWS_DEFAULT_REGION"],
    }


@pytest.fixture(scope="module")
def server(s3, tmp_path_factory):
    """A stock `mlflow server` with a SQLite backend, proxying artifacts to the moto bucket."""
    state = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    env = dict(os.environ, **S3_ENV, MLFLOW_S3_ENDPOINT_URL=s3)
    command = [
        str(BIN / "mlflow"), "server",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{state}/mlflow.db",
        "--serve-artifacts", "--artifacts-destination", f"s3://{BUCKET}/{PREFIX}",
    ]
    process = start(command, env, state / "server.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/health", 120)
        yield f"http://127.0.0.1:{port}"
    except TimeoutError:
        print((state / "server.log").read_text()[-3000:])
        raise
    finally:
        stop(process)


def run_probe(*args, extra_env=None):
    env = dict(os.environ, **S3_ENV, **(extra_env or {}))
    env.pop("MLFLOW_TRACKING_URI", None)
    result = subprocess.run(
        [sys.executable, str(PROBE), *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    summary = json.loads(result.stdout) if result.stdout.strip().startswith("{") else {}
    return result, summary


def test_probe_passes_end_to_end_and_finds_the_model_in_the_bucket(server, s3):
    result, summary = run_probe(
        "--tracking-uri", server, "--s3-bucket", BUCKET, "--s3-prefix", PREFIX, "--s3-endpoint-url", s3,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert summary["ok"] is True
    assert summary["predictions_match"] is True
    assert list(summary["steps"]) == ["connect", "log", "model", "alias", "load", "download", "bucket"]
    names = {key.rsplit("/", 1)[-1] for key in summary["bucket_objects"]}
    assert {"MLmodel", "hello.txt"} <= names
    assert any(name.startswith("model.") for name in names), names
    assert all(key.startswith(PREFIX + "/") for key in summary["bucket_objects"])


def test_unreachable_server_fails_at_connect():
    result, summary = run_probe(
        "--tracking-uri", f"http://127.0.0.1:{free_port()}", "--timeout", "3",
        extra_env={"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"},
    )
    assert result.returncode == 1
    assert summary["ok"] is False
    assert summary["failed_step"] == "connect"
    assert "probe failed at step 'connect'" in result.stderr


def test_artifacts_missing_from_the_bucket_fail_the_bucket_step(server, s3):
    result, summary = run_probe(
        "--tracking-uri", server, "--s3-bucket", BUCKET, "--s3-prefix", "not-where-artifacts-go",
        "--s3-endpoint-url", s3,
    )
    assert result.returncode == 1
    assert summary["failed_step"] == "bucket"
    assert summary["steps"]["load"] >= 0


def test_bad_usage_exits_2():
    result, _ = run_probe("--no-such-flag")
    assert result.returncode == 2
