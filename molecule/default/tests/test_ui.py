"""The MLflow UI in a real browser: Debian's chromium driven by playwright-core (tests/ui/ui.cjs), headless,
through nginx with the basic-auth login. It finds the probe's experiment in the list, the logged metric on its run
page, the registered model and its alias; a wrong password gets the 401 page. Screenshots stay in
.cache/ui/screenshots/ for people to look at. The UI is the same bundle on every host: once, on the first MLflow
server of this scenario, after the probe (the verify_run fixture, shared with test_probe.py) has logged there."""

import json
import os
import subprocess
from pathlib import Path

import requests
from conftest import first_server

testinfra_hosts = first_server()

REPO = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
CACHE = Path(os.environ.get("MLFLOWOPS_CACHE", REPO / ".cache"))
API = "/api/2.0/mlflow"


def api(base, ca_file, admin, path, **params):
    response = requests.get(base + API + path, params=params, auth=admin, verify=ca_file, timeout=30)
    assert response.status_code == 200, f"{path}: {response.status_code} {response.text[:300]}"
    return response.json()


def test_ui_in_a_real_browser(host, base, ca_file, admin, verify_run, evidence):
    assert verify_run.returncode == 0, verify_run.stdout[-3000:]
    # what the probe made (verify.yml): its experiment, latest run, model and alias
    name = host.backend.get_hostname()
    experiment = api(base, ca_file, admin, "/experiments/get-by-name",
                     experiment_name=f"mlflowops-probe-{name}")["experiment"]
    runs = requests.post(base + API + "/runs/search", auth=admin, verify=ca_file, timeout=30, json={
        "experiment_ids": [experiment["experiment_id"]], "max_results": 1, "order_by": ["attributes.start_time DESC"],
    }).json()["runs"]
    run_id = runs[0]["info"]["run_id"]
    model = "mlflowops-probe-model"
    assert "champion" in {a["alias"] for a in api(base, ca_file, admin, "/registered-models/get",
                                                   name=model)["registered_model"].get("aliases", [])}

    located = subprocess.run(["bash", str(REPO / "tests/harness/node-tools.sh")], capture_output=True, text=True,
                             check=False, timeout=900)
    assert located.returncode == 0, located.stderr[-3000:]
    shots = CACHE / "ui" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    spec = {
        "base": base, "user": admin[0], "password": admin[1], "outDir": str(shots),
        "prefix": name,
        "pages": [
            {"name": "experiments", "path": "/#/experiments", "expect": [f"mlflowops-probe-{name}"]},
            {"name": "run", "path": f"/#/experiments/{experiment['experiment_id']}/runs/{run_id}",
             "expect": ["probe_metric"]},
            {"name": "models", "path": "/#/models", "expect": [model]},
            {"name": "model", "path": f"/#/models/{model}", "expect": ["champion"]},
        ],
    }
    env = dict(os.environ, PLAYWRIGHT_CORE=located.stdout.strip().splitlines()[-1])
    ran = subprocess.run(["node", str(REPO / "tests/ui/ui.cjs"), json.dumps(spec)], capture_output=True, text=True,
                         check=False, timeout=600, env=env)
    assert ran.returncode == 0, ran.stderr[-3000:]
    results = json.loads(ran.stdout.strip().splitlines()[-1])
    evidence("ui", [{"page": r["name"], "status": r["status"], "found": r.get("found"), "screenshot": r["screenshot"],
                     "bytes": Path(r["screenshot"]).stat().st_size} for r in results])
    pages = {result["name"]: result for result in results}
    for name in ("experiments", "run", "models", "model"):
        assert pages[name]["status"] == 200, pages[name]
        assert all(pages[name]["found"].values()), pages[name]
        assert Path(pages[name]["screenshot"]).stat().st_size > 10_000
    assert pages["wrong-password"]["status"] == 401, pages["wrong-password"]
