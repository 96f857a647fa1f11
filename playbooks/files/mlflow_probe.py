#!/usr/bin/env python3
"""Log-and-load probe: act as a real MLflow user against a tracking server.

Steps, in order (the first failing one is named in the summary and the exit code is 1):
  connect   list experiments (reachability, TLS, login)
  log       create/select an experiment, start a run, log params, metrics and a tag
  model     train a small scikit-learn classifier, log it with signature and input example,
            register it (registered_model_name)
  alias     point an alias at the new version
  load      load models:/<name>@<alias> with pyfunc, predict, compare with the in-memory model
  download  log a text artifact and download it back through the server
  bucket    (with --s3-bucket or --azure-container) list the bucket or Azure Blob container: the model files
            and the text artifact are there

Secrets come from the environment MLflow, boto3 and Azure's SDK already read: MLFLOW_TRACKING_USERNAME,
MLFLOW_TRACKING_PASSWORD, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AZURE_STORAGE_CONNECTION_STRING. TLS: --ca-bundle (sets
MLFLOW_TRACKING_SERVER_CERT_PATH) or, only for throwaway hosts, --insecure.

Prints one JSON object on stdout. Exit codes: 0 all steps passed, 1 a step failed, 2 bad usage.
"""

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path


class StepFailed(Exception):
    def __init__(self, step, reason):
        super().__init__(f"{step}: {reason}")
        self.step = step
        self.reason = reason


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracking-uri", required=True, help="http(s)://host[:port] of the server")
    parser.add_argument("--experiment", default="mlflowops-probe", help="experiment to log into")
    parser.add_argument("--model-name", default="mlflowops-probe-model", help="registered model name")
    parser.add_argument("--alias", default="champion", help="alias set on the new model version")
    tls = parser.add_mutually_exclusive_group()
    tls.add_argument("--ca-bundle", help="CA certificate(s) to trust for an https tracking URI")
    tls.add_argument("--insecure", action="store_true", help="do not verify TLS (throwaway hosts only)")
    parser.add_argument("--s3-bucket", help="bucket that must hold the artifacts (enables the bucket step)")
    parser.add_argument("--s3-prefix", default="", help="key prefix of the artifact destination")
    parser.add_argument("--s3-endpoint-url", help="S3-compatible endpoint (MinIO, Spaces, moto)")
    parser.add_argument("--s3-region", default=None, help="bucket region")
    parser.add_argument("--azure-container",
                        help="Azure Blob container that must hold the artifacts (enables the bucket step; the account "
                             "from AZURE_STORAGE_CONNECTION_STRING)")
    parser.add_argument("--azure-prefix", default="", help="blob name prefix of the artifact destination")
    parser.add_argument("--timeout", type=int, default=60, help="HTTP timeout per request, seconds")
    return parser.parse_args(argv)


def configure_environment(args):
    os.environ["MLFLOW_TRACKING_URI"] = args.tracking_uri
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(args.timeout))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    # Servers with an S3 store advertise presigned multipart downloads: the client would then fetch
    # straight from the bucket endpoint the *server* uses. The probe checks the proxied path that
    # needs only the tracking URL (export MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD=true to test the other).
    os.environ.setdefault("MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD", "false")
    if args.ca_bundle:
        os.environ["MLFLOW_TRACKING_SERVER_CERT_PATH"] = args.ca_bundle
    if args.insecure:
        os.environ["MLFLOW_TRACKING_INSECURE_TLS"] = "true"


class Probe:
    def __init__(self, args):
        self.args = args
        self.summary = {
            "ok": False,
            "tracking_uri": args.tracking_uri,
            "steps": {},
        }
        self.token = uuid.uuid4().hex[:8]

    def run(self):
        steps = [
            ("connect", self.connect),
            ("log", self.log),
            ("model", self.model),
            ("alias", self.alias),
            ("load", self.load),
            ("download", self.download),
        ]
        if self.args.s3_bucket or self.args.azure_container:
            steps.append(("bucket", self.bucket))
        for name, step in steps:
            started = time.monotonic()
            try:
                step()
            except StepFailed:
                raise
            except Exception as exc:  # any library error becomes a named step failure
                raise StepFailed(name, f"{type(exc).__name__}: {exc}") from exc
            finally:
                self.summary["steps"][name] = round(time.monotonic() - started, 2)
        self.summary["ok"] = True
        return self.summary

    def connect(self):
        from mlflow import MlflowClient

        self.client = MlflowClient()
        self.client.search_experiments(max_results=1)

    def log(self):
        import mlflow

        experiment = mlflow.set_experiment(self.args.experiment)
        self.summary["experiment_id"] = experiment.experiment_id
        self.run_ctx = mlflow.start_run(run_name=f"probe-{self.token}")
        self.run_id = self.run_ctx.info.run_id
        self.summary["run_id"] = self.run_id
        mlflow.log_params({"model": "LogisticRegression", "probe_token": self.token})
        mlflow.log_metrics({"probe_metric": 0.5, "probe_step_metric": 1.0}, step=1)
        mlflow.set_tag("mlflowops.probe", self.token)
        data = self.client.get_run(self.run_id).data
        if data.params.get("probe_token") != self.token or data.tags.get("mlflowops.probe") != self.token:
            raise StepFailed("log", "params or tags read back differ from what was logged")
        if data.metrics.get("probe_metric") != 0.5:
            raise StepFailed("log", "metric read back differs from what was logged")

    def model(self):
        import mlflow
        import numpy as np
        from mlflow.models import infer_signature
        from sklearn.linear_model import LogisticRegression

        rng = np.random.default_rng(7)
        features = rng.normal(size=(60, 4))
        labels = (features[:, 0] + features[:, 1] > 0).astype(int)
        self.features = features
        self.sk_model = LogisticRegression().fit(features, labels)
        signature = infer_signature(features, self.sk_model.predict(features))
        info = mlflow.sklearn.log_model(
            self.sk_model,
            name="model",
            signature=signature,
            input_example=features[:3],
            registered_model_name=self.args.model_name,
        )
        self.model_info = info
        self.summary["model_id"] = getattr(info, "model_id", None)
        self.summary["model_uri"] = info.model_uri
        self.summary["artifact_location"] = getattr(info, "artifact_path", None)
        version = info.registered_model_version
        if version is None:
            raise StepFailed("model", "log_model returned no registered model version")
        self.version = str(version)
        self.summary["model_name"] = self.args.model_name
        self.summary["model_version"] = self.version

    def alias(self):
        self.client.set_registered_model_alias(self.args.model_name, self.args.alias, self.version)
        found = self.client.get_model_version_by_alias(self.args.model_name, self.args.alias)
        if str(found.version) != self.version:
            raise StepFailed("alias", f"alias points at version {found.version}, not {self.version}")
        self.summary["alias"] = self.args.alias

    def load(self):
        import mlflow
        import numpy as np

        uri = f"models:/{self.args.model_name}@{self.args.alias}"
        loaded = mlflow.pyfunc.load_model(uri)
        predicted = np.asarray(loaded.predict(self.features))
        expected = self.sk_model.predict(self.features)
        if not np.array_equal(predicted, expected):
            raise StepFailed("load", f"predictions of {uri} differ from the in-memory model")
        self.summary["predictions_match"] = True
        self.summary["predictions"] = int(predicted.size)

    def download(self):
        import mlflow

        text = f"mlflowops probe {self.token}\n"
        mlflow.log_text(text, "probe/hello.txt")
        mlflow.end_run()
        with tempfile.TemporaryDirectory() as tmp:
            local = mlflow.artifacts.download_artifacts(
                run_id=self.run_id, artifact_path="probe/hello.txt", dst_path=tmp
            )
            got = Path(local).read_text()
        if got != text:
            raise StepFailed("download", "downloaded artifact differs from the uploaded one")
        self.summary["artifact_uri"] = self.client.get_run(self.run_id).info.artifact_uri

    def list_s3(self):
        import boto3

        s3 = boto3.client(
            "s3", endpoint_url=self.args.s3_endpoint_url, region_name=self.args.s3_region
        )
        prefix = self.args.s3_prefix.strip("/")
        keys = []
        paginator = s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.args.s3_bucket, Prefix=prefix):
            keys.extend(obj["Key"] for obj in page.get("Contents", []))
        return f"s3://{self.args.s3_bucket}/{prefix}", keys

    def list_azure(self):
        from azure.storage.blob import ContainerClient

        connection = os.environ.get("AZURE_STORAGE_CONNECTION_STRING", "")
        if not connection:
            raise StepFailed("bucket", "--azure-container needs AZURE_STORAGE_CONNECTION_STRING")
        container = ContainerClient.from_connection_string(connection, self.args.azure_container)
        prefix = self.args.azure_prefix.strip("/")
        keys = [blob.name for blob in container.list_blobs(name_starts_with=prefix or None)]
        return f"wasbs://{self.args.azure_container}/{prefix}", keys

    def bucket(self):
        where, keys = self.list_azure() if self.args.azure_container else self.list_s3()
        self.summary["bucket"] = where
        model_ref = self.summary.get("model_id") or self.run_id
        model_keys = [k for k in keys if model_ref in k]
        model_dirs = {k.rsplit("/", 1)[0] for k in model_keys if k.endswith("/MLmodel")}
        # the serialized estimator sits next to MLmodel (model.pkl, model.skops, ... by MLflow version)
        payload = [k for k in model_keys if k.rsplit("/", 1)[0] in model_dirs and "/model." in k]
        if not model_dirs or not payload:
            raise StepFailed(
                "bucket",
                f"model files of {model_ref} not found in {where} "
                f"(found {len(keys)} objects: {sorted(k.rsplit('/', 1)[-1] for k in model_keys)})",
            )
        model_files = sorted(k for k in model_keys if k.rsplit("/", 1)[0] in model_dirs)
        text_files = [k for k in keys if self.run_id in k and k.endswith("probe/hello.txt")]
        if not text_files:
            raise StepFailed("bucket", f"run {self.run_id}'s probe/hello.txt is not in the bucket")
        self.summary["bucket_objects"] = sorted(model_files + text_files)


def main(argv=None):
    args = parse_args(argv if argv is not None else sys.argv[1:])
    configure_environment(args)
    probe = Probe(args)
    try:
        # libraries print progress ("View run ... at ...") on stdout: keep stdout for the JSON alone
        with contextlib.redirect_stdout(sys.stderr):
            summary = probe.run()
    except StepFailed as failure:
        summary = probe.summary
        summary.update(ok=False, failed_step=failure.step, reason=failure.reason)
        print(json.dumps(summary, indent=2))
        print(f"probe failed at step '{failure.step}': {failure.reason}", file=sys.stderr)
        return 1
    finally:
        with contextlib.redirect_stdout(sys.stderr), contextlib.suppress(Exception):
            import mlflow

            mlflow.end_run()
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
