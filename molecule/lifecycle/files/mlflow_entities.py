"""Seed an MLflow database as a 2.x server of a blog post leaves it, and read every entity back.

    python mlflow_entities.py seed TRACKING_URI ARTIFACT_ROOT    (MLflow 2.x: straight to the database)
    python mlflow_entities.py dump TRACKING_URI                 (any MLflow: the database, or a server's API)

Both print JSON on stdout. `dump` reads experiments (every lifecycle stage), their runs (params, tags, the full
history of every metric, status, times, artifact URI), registered models (description, tags, aliases) and every
model version (run, source, stage, description, tags), in an order that does not depend on the server, so that two
dumps compare equal exactly when the entities are the same. It runs with the MLflow 2.x of the seeding venv and
with the MLflow 3 of the server's venv alike (the client API both have). Credentials of a server come from
MLFLOW_TRACKING_USERNAME/PASSWORD, the bucket's from the AWS_* variables and MLFLOW_S3_ENDPOINT_URL.
"""

import json
import os
import sys
import tempfile

import mlflow
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

STEPS = 6


def seed(uri, artifact_root):
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    work = tempfile.mkdtemp()
    notes = os.path.join(work, "notes.txt")
    weights = os.path.join(work, "weights.bin")
    runs = {}
    for experiment_index, (name, tags) in enumerate([
        ("churn", {"team": "growth", "owner": "ana"}),
        ("forecast", {"team": "planning"}),
        ("old-trials", {"team": "research"}),
    ]):
        experiment_id = client.create_experiment(name, artifact_location=f"{artifact_root}/{name}", tags=tags)
        for run_index in range(3):
            run_name = f"{name}-{run_index}"
            run = client.create_run(experiment_id, run_name=run_name,
                                    tags={"stage": "tuning" if run_index else "baseline", "seed": str(run_index)},
                                    start_time=1_700_000_000_000 + 3_600_000 * (experiment_index * 3 + run_index))
            run_id = run.info.run_id
            client.log_param(run_id, "learning_rate", str(0.1 / (run_index + 1)))
            client.log_param(run_id, "depth", str(4 + run_index))
            for step in range(STEPS):
                timestamp = run.info.start_time + 1000 * step
                client.log_metric(run_id, "loss", 1.0 / (step + 1 + run_index), timestamp=timestamp, step=step)
                client.log_metric(run_id, "accuracy", 0.5 + 0.07 * step - 0.01 * run_index, timestamp=timestamp,
                                  step=step)
            with open(notes, "w", encoding="utf-8") as handle:
                handle.write(f"{run_name}: notes of the run\n")
            with open(weights, "wb") as handle:
                handle.write(os.urandom(2048 + run_index))
            client.log_artifact(run_id, notes)
            client.log_artifact(run_id, weights, "model")
            client.set_terminated(run_id, status="FAILED" if run_index == 2 and name == "forecast" else "FINISHED",
                                  end_time=run.info.start_time + 1000 * STEPS)
            runs[run_name] = run_id
    # a run deleted on the old server, and a deleted experiment: both stay deleted (younger than the gc threshold)
    client.delete_run(runs["forecast-1"])
    client.delete_experiment(client.get_experiment_by_name("old-trials").experiment_id)

    client.create_registered_model("churn-model", tags={"domain": "retention"}, description="Churn classifier")
    for run_name, stage in (("churn-0", "Archived"), ("churn-1", "Staging"), ("churn-2", "Production")):
        version = client.create_model_version("churn-model", f"{artifact_root}/churn/{runs[run_name]}/artifacts/model",
                                              runs[run_name], tags={"from": run_name},
                                              description=f"trained in {run_name}")
        client.transition_model_version_stage("churn-model", version.version, stage)
    client.set_registered_model_alias("churn-model", "champion", "3")
    client.set_registered_model_alias("churn-model", "challenger", "2")
    client.create_registered_model("forecast-model")
    client.create_model_version("forecast-model", f"{artifact_root}/forecast/{runs['forecast-0']}/artifacts/model",
                                runs["forecast-0"])
    return runs


def experiments(client):
    found, token = [], None
    while True:
        page = client.search_experiments(view_type=ViewType.ALL, max_results=1000, page_token=token)
        found.extend(page)
        token = page.token
        if not token:
            return found


def runs_of(client, experiment_id):
    found, token = [], None
    while True:
        page = client.search_runs([experiment_id], run_view_type=ViewType.ALL, max_results=1000, page_token=token)
        found.extend(page)
        token = page.token
        if not token:
            return found


def dump(uri):
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    result = {"experiments": {}, "registered_models": {}}
    for experiment in sorted(experiments(client), key=lambda item: item.name):
        entry = {
            "experiment_id": experiment.experiment_id,
            "lifecycle_stage": experiment.lifecycle_stage,
            "artifact_location": experiment.artifact_location,
            "tags": dict(sorted(experiment.tags.items())),
            "runs": {},
        }
        for run in runs_of(client, experiment.experiment_id):
            metrics = {}
            for key in sorted(run.data.metrics):
                history = client.get_metric_history(run.info.run_id, key)
                metrics[key] = sorted([metric.step, metric.timestamp, metric.value] for metric in history)
            entry["runs"][run.info.run_id] = {
                "name": run.info.run_name,
                "status": run.info.status,
                "lifecycle_stage": run.info.lifecycle_stage,
                "start_time": run.info.start_time,
                "end_time": run.info.end_time,
                "artifact_uri": run.info.artifact_uri,
                "params": dict(sorted(run.data.params.items())),
                "tags": dict(sorted(run.data.tags.items())),
                "metrics": metrics,
            }
        entry["runs"] = dict(sorted(entry["runs"].items()))
        result["experiments"][experiment.name] = entry
    for model in sorted(client.search_registered_models(max_results=1000), key=lambda item: item.name):
        versions = client.search_model_versions(f"name = '{model.name}'")
        result["registered_models"][model.name] = {
            "description": model.description or "",
            "tags": dict(sorted(model.tags.items())),
            "aliases": dict(sorted((alias, str(version)) for alias, version in model.aliases.items())),
            "versions": {
                str(version.version): {
                    "run_id": version.run_id,
                    "source": version.source,
                    "current_stage": version.current_stage,
                    "description": version.description or "",
                    "tags": dict(sorted(version.tags.items())),
                    "status": version.status,
                }
                for version in sorted(versions, key=lambda item: int(item.version))
            },
        }
    runs = [run for experiment in result["experiments"].values() for run in experiment["runs"].values()]
    result["counts"] = {
        "experiments": len(result["experiments"]),
        "runs": len(runs),
        "params": sum(len(run["params"]) for run in runs),
        "tags": sum(len(run["tags"]) for run in runs),
        "metric_points": sum(len(points) for run in runs for points in run["metrics"].values()),
        "registered_models": len(result["registered_models"]),
        "model_versions": sum(len(model["versions"]) for model in result["registered_models"].values()),
        "aliases": sum(len(model["aliases"]) for model in result["registered_models"].values()),
    }
    result["mlflow_version"] = mlflow.__version__
    return result


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "seed":
        print(json.dumps(seed(sys.argv[2], sys.argv[3])))
    elif len(sys.argv) == 3 and sys.argv[1] == "dump":
        print(json.dumps(dump(sys.argv[2]), indent=1))
    else:
        sys.exit(__doc__)
