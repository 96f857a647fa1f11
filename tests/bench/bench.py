#!/usr/bin/env python3
"""`make bench`: the secured stack against a stock `mlflow server`, side by side on the same host, one run.

    make bench                     the demo container (brought up with S3 artifacts when absent)
    make bench BENCH_MODE=small    a demo limited to 1 GiB (role defaults decide workers, jobs, PostgreSQL
                                   memory): memory after warm-up, 60 s of log-batch load, errors, OOM kills
    make bench BENCH_MODE=cluster  the cluster scenario's hosts (molecule converge -s cluster, run here when its
                                   load balancer is not up): 1 server against 2 servers behind the load
                                   balancer, at 16 and 64 clients (BENCH_CLUSTER_CLIENTS), with each host's CPU

Environment: BENCH_TARGET (container name; default the demo), BENCH_ROUNDS (2), BENCH_SECONDS (20),
BENCH_CLIENTS (16), BENCH_ARTIFACT_MB (200), BENCH_WORKLOADS (comma list; default all).

Everything the load goes through runs in the target container, over its loopback: the stock server is started
there (transient unit mlflowops-bench-stock, same venv, same PostgreSQL, same worker count, no auth, no proxy)
and the load generator (tests/bench/load.py) runs there with the MLflow venv's Python. Rounds alternate:
for each round and workload, stock, then secured as the admin, then secured as a non-admin user holding EDIT
on its experiment. Prints a table and writes JSON under .cache/bench/.
"""

import datetime
import json
import os
import pathlib
import re
import secrets
import statistics
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[2]
CACHE = pathlib.Path(os.environ.get("MLFLOWOPS_CACHE", REPO / ".cache"))
sys.path.insert(0, str(REPO / "tests" / "bench"))
import cgroups  # noqa: E402  (tests/bench/cgroups.py)

MODE = os.environ.get("BENCH_MODE", "stack")
CLUSTER_CLIENTS = [int(n) for n in os.environ.get("BENCH_CLUSTER_CLIENTS", "16,64").split(",")]
# the cluster scenario (molecule/cluster/molecule.yml): the load balancer, the servers in upstream order, the host
# the load runs on (the object store's container: outside the tiers, with requests in moto's venv) and the database
CLUSTER = {"balancer": "mlflowops-lb", "servers": ["mlflowops-docker", "mlflowops-venv"],
           "client": "mlflowops-docker-s3", "database": "mlflowops-cluster-db"}
CLIENT_PYTHON = "/opt/moto/bin/python"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "20"))
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "16"))
ARTIFACT_MB = int(os.environ.get("BENCH_ARTIFACT_MB", "200"))
WORKLOADS = os.environ.get("BENCH_WORKLOADS", "log-batch-1,log-batch-100,runs-search,runs-get").split(",")
DEMOS = {
    "stack": {"DEMO_CONTAINER": "mlflowops-demo", "DEMO_ARTIFACTS": "s3"},
    "small": {"DEMO_CONTAINER": "mlflowops-bench-small", "DEMO_PORT": "8453", "DEMO_MEMORY": "1g",
              "DEMO_STATE": str(CACHE / "bench" / "small-host")},
}
STOCK_PORT = 5001
VENV = "/opt/mlflow/venv"
WORK = "/root/mlflowops-bench"
CA = "/etc/nginx/tls/ca.crt"


def log(message):
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def sh(*argv, stdin=None, check=True):
    result = subprocess.run(argv, input=stdin, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])}...: exit {result.returncode}\n{result.stderr[-2000:]}")
    return result.stdout


class Target:
    """The container under test, reached with docker exec."""

    def __init__(self, name, state, python=f"{VENV}/bin/python"):
        self.name, self.state, self.python = name, state, python

    def run(self, *argv, stdin=None, check=True):
        return sh("docker", "exec", "-i", self.name, *argv, stdin=stdin, check=check)

    def install_load(self):
        """Copy the load generator into the container."""
        self.run("install", "-d", "-m", "0700", WORK)
        sh("docker", "cp", str(REPO / "tests/bench/load.py"), f"{self.name}:{WORK}/load.py")

    def load(self, job):
        """Run one job of load.py in the container; the job (with its passwords) goes on stdin."""
        out = self.run(self.python, f"{WORK}/load.py", stdin=json.dumps(job))
        return json.loads(out)

    def env_file(self):
        return dict(line.split("=", 1) for line in self.run("cat", "/etc/mlflow/mlflow.env").splitlines()
                    if "=" in line and not line.startswith("#"))

    def workers(self):
        unit = self.run("cat", "/etc/systemd/system/mlflow.service")
        return int(re.search(r"--workers (\d+)", unit).group(1))

    def memory(self):
        """MemoryCurrent of each unit of the stack, in MB."""
        units = ["mlflow.service", "nginx.service"] + [
            u for u in self.run("systemctl", "list-units", "--plain", "--no-legend", "--type=service",
                                "postgresql@*").split() if u.startswith("postgresql@")]
        figures = {}
        for unit in units:
            value = self.run("systemctl", "show", "--value", "--property", "MemoryCurrent", unit).strip()
            figures[unit] = round(int(value) / 1048576, 1) if value.isdigit() else None
        figures["total"] = round(sum(v for v in figures.values() if v), 1)
        return figures


def bring_up(mode):
    env = dict(os.environ, **DEMOS[mode])
    name = os.environ.get("BENCH_TARGET") or env["DEMO_CONTAINER"]
    state = pathlib.Path(env.get("DEMO_STATE", CACHE / "demo"))
    if not os.environ.get("BENCH_TARGET"):
        log(f"bringing up {name} (tests/harness/demo.sh up; a converged demo only re-checks)")
        subprocess.run(["bash", str(REPO / "tests/harness/demo.sh"), "up"], env=env, check=True,
                       stdout=sys.stderr)
    return Target(name, state)


def admin_password(target):
    secrets_file = target.state / "inventory" / "group_vars" / "all" / "10-demo.yml"
    match = re.search(r'^vault_mlflow_admin_password: "([^"]+)"', secrets_file.read_text(), re.M)
    return match.group(1)


def start_stock(target, workers):
    """A stock server as the blog posts start it: PostgreSQL backend, no auth, no proxy, on 127.0.0.1."""
    env = target.env_file()
    lines = [f"MLFLOW_BACKEND_STORE_URI={env['MLFLOW_BACKEND_STORE_URI']}"]
    lines += [f"{k}={v}" for k, v in env.items() if k.startswith(("AWS_", "MLFLOW_S3_"))]
    # the credentials go into a 0600 file read by systemd, never on the command line
    target.run("sh", "-c", f"umask 077; cat > {WORK}/stock.env", stdin="\n".join(lines) + "\n")
    target.run("systemctl", "stop", "mlflowops-bench-stock", check=False)
    target.run("systemctl", "reset-failed", "mlflowops-bench-stock", check=False)
    target.run("systemd-run", "--unit", "mlflowops-bench-stock", "--property", f"EnvironmentFile={WORK}/stock.env",
               "--property", "WorkingDirectory=/tmp", "--uid", "mlflow", "--gid", "mlflow",
               f"{VENV}/bin/mlflow", "server", "--host", "127.0.0.1", "--port", str(STOCK_PORT),
               "--workers", str(workers))
    wait_health(target, f"http://127.0.0.1:{STOCK_PORT}/health")


def wait_health(target, url, timeout=180):
    """A stock server needs 15-25 s on 2 cores before /health answers: be patient."""
    deadline = time.monotonic() + timeout
    probe = "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)"
    while time.monotonic() < deadline:
        if subprocess.run(["docker", "exec", target.name, f"{VENV}/bin/python", "-c", probe, url],
                          capture_output=True).returncode == 0:
            return
        time.sleep(2)
    raise SystemExit(f"{url} did not answer within {timeout} s: docker exec {target.name} journalctl -u "
                     "mlflowops-bench-stock")


def ratio(value, base):
    return round(value / base, 2) if value and base else None


def stack(target):
    workers = target.workers()
    password = admin_password(target)
    secured = {"base": "https://127.0.0.1", "verify": CA}
    admin = dict(secured, auth=["admin", password])
    editor = {"name": "bench-editor", "password": secrets.token_hex(16)}
    log(f"target {target.name}: {workers} workers; starting the stock server on 127.0.0.1:{STOCK_PORT}")
    start_stock(target, workers)
    stock = {"base": f"http://127.0.0.1:{STOCK_PORT}"}
    made = {
        "stock": target.load(dict(stock, kind="setup", experiment="bench-stock", runs=CLIENTS)),
        "admin": target.load(dict(admin, kind="setup", experiment="bench-admin", runs=CLIENTS)),
        "editor": target.load(dict(admin, kind="setup", experiment="bench-editor", runs=CLIENTS, editor=editor)),
    }
    logins = {"stock": stock, "admin": admin, "editor": dict(secured, auth=[editor["name"], editor["password"]])}
    results = {w: {t: [] for t in logins} for w in WORKLOADS}
    log("warm-up: 5 s of each workload on each server")
    for workload in WORKLOADS:
        for who, login in logins.items():
            target.load(dict(login, kind="http", workload=workload, clients=CLIENTS, seconds=5, **made[who]))
    for round_ in range(1, ROUNDS + 1):
        for workload in WORKLOADS:
            for who, login in logins.items():
                got = target.load(dict(login, kind="http", workload=workload, clients=CLIENTS, seconds=SECONDS,
                                       **made[who]))
                results[workload][who].append(got)
                log(f"round {round_} {workload:13} {who:6}: {got['rps']:7} req/s  p50 {got['p50_ms']} ms  "
                    f"p99 {got['p99_ms']} ms  errors {got['errors']}")
    memory = target.memory()
    target.run("systemctl", "stop", "mlflowops-bench-stock", check=False)
    ui = {"admin": target.load(dict(admin, kind="ui"))}
    transfers = artifact_transfers(target, admin)
    return {"workers": workers, "http": results, "memory_mb": memory, "ui": ui, "transfer": transfers}


def artifact_transfers(target, admin):
    env = target.env_file()
    destination = env.get("MLFLOW_ARTIFACTS_DESTINATION", "")
    if not destination.startswith("s3://"):
        log("artifact transfer skipped: the target keeps artifacts on disk (DEMO_ARTIFACTS=s3 puts them in a bucket)")
        return {}
    bucket, _, prefix = destination[5:].partition("/")
    direct = {"kind": "transfer", "via": "bucket", "megabytes": ARTIFACT_MB, "key_prefix": "bench",
              "endpoint": env["MLFLOW_S3_ENDPOINT_URL"], "region": env.get("AWS_DEFAULT_REGION", "us-east-1"),
              "key_id": env["AWS_ACCESS_KEY_ID"], "secret": env["AWS_SECRET_ACCESS_KEY"],
              "bucket": bucket, "bucket_prefix": prefix}
    proxied = dict(admin, kind="transfer", via="proxy", megabytes=ARTIFACT_MB, key_prefix="bench")
    out = {"direct": [], "proxy": []}
    for round_ in range(1, ROUNDS + 1):
        for via, job in (("direct", direct), ("proxy", proxied)):
            got = target.load(job)
            out[via].append(got)
            log(f"round {round_} {ARTIFACT_MB} MB {via:6}: up {got['upload_mb_s']} MB/s, "
                f"down {got['download_mb_s']} MB/s, intact {got['intact']}")
    return out


def small(target, password):
    """Memory after warm-up, then a long log-batch load: errors and OOM kills, during the load and since the
    container started (also the lifecycle scenario's small-host check)."""
    admin = {"base": "https://127.0.0.1", "verify": CA, "auth": ["admin", password]}
    made = target.load(dict(admin, kind="setup", experiment="bench-small", runs=CLIENTS))
    before = cgroups.oom_kills(target.name)
    log("warm-up: 10 s of log-batch")
    target.load(dict(admin, kind="http", workload="log-batch-1", clients=CLIENTS, seconds=10, **made))
    memory = target.memory()
    log(f"memory after warm-up: {memory}")
    seconds = max(SECONDS, 60)
    log(f"{seconds} s of log-batch at {CLIENTS} clients")
    got = target.load(dict(admin, kind="http", workload="log-batch-1", clients=CLIENTS, seconds=seconds, **made))
    after = cgroups.oom_kills(target.name)
    memory_after_load = target.memory()
    peaks = cgroups.unit_peaks(target.name, [unit for unit in memory_after_load if unit != "total"])
    return {"workers": target.workers(), "memory_limit_mb": cgroups.memory_limit(target.name), "memory_mb": memory,
            "memory_after_load_mb": memory_after_load, "peak_memory_mb": peaks, "load": got,
            "oom_kills": {key: after[key] - before[key] for key in after}, "oom_kills_since_start": after}


def running(name):
    return subprocess.run(["docker", "inspect", "--format", "{{.State.Running}}", name], capture_output=True,
                          text=True).stdout.strip() == "true"


def cluster_up():
    """The cluster scenario's hosts, converged (molecule converge -s cluster when the load balancer is not up)."""
    if not running(CLUSTER["balancer"]):
        log("bringing up the cluster scenario (molecule converge -s cluster; molecule destroy -s cluster removes it)")
        subprocess.run(["bash", str(REPO / "tests/harness/molecule.sh"), "--prepare"], check=True, stdout=sys.stderr)
        # the docker-method server loads MLflow's image from its archive (pulling is off)
        subprocess.run(["bash", str(REPO / "tests/harness/build-mlflow-image.sh")], check=True, stdout=sys.stderr)
        subprocess.run(["molecule", "converge", "-s", "cluster"], cwd=REPO, check=True, stdout=sys.stderr)
    client = Target(CLUSTER["client"], None, python=CLIENT_PYTHON)
    client.install_load()
    ca = Target(CLUSTER["balancer"], None).run("cat", CA)
    client.run("sh", "-c", f"cat > {WORK}/ca.crt", stdin=ca)
    return client


def cluster_admin_password():
    text = (REPO / "molecule/cluster/group_vars/all/10-scenario.yml").read_text()
    return re.search(r'^vault_mlflow_admin_password: "([^"]+)"', text, re.M).group(1)


def container_address(name):
    return sh("docker", "inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
              name).strip()


UPSTREAM_EDIT = r"""
import re, sys
path, address, down = "/etc/nginx/nginx.conf", sys.argv[1], sys.argv[2] == "down"
text = open(path).read()
line = re.compile(r"^(\s*server " + re.escape(address) + r":\d+ [^;\n]*?)( down)?;$", re.M)
assert line.search(text), "no upstream line for " + address
open(path, "w").write(line.sub(lambda m: m.group(1) + (" down;" if down else ";"), text))
"""


def set_servers(count):
    """The first `count` servers in the load balancer's upstream, the others marked down; nginx reloaded and its old
    workers gone."""
    balancer = Target(CLUSTER["balancer"], None)
    for index, server in enumerate(CLUSTER["servers"]):
        balancer.run("python3", "-c", UPSTREAM_EDIT, container_address(server), "up" if index < count else "down")
    balancer.run("nginx", "-t")
    balancer.run("systemctl", "reload", "nginx")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and "shutting down" in balancer.run("ps", "-eo", "args"):
        time.sleep(0.5)


def cluster(client):
    password = cluster_admin_password()
    login = {"base": f"https://{CLUSTER['balancer']}", "verify": f"{WORK}/ca.crt", "auth": ["admin", password]}
    hosts = [CLUSTER["balancer"], *CLUSTER["servers"], CLUSTER["database"], CLUSTER["client"]]
    workers = {server: Target(server, None).workers() for server in CLUSTER["servers"]}
    made = client.load(dict(login, kind="setup", experiment="bench-cluster", runs=max(CLUSTER_CLIENTS)))
    results = {w: {c: {1: [], 2: []} for c in CLUSTER_CLIENTS} for w in WORKLOADS}
    try:
        log("warm-up: 5 s of each workload on both servers")
        set_servers(2)
        for workload in WORKLOADS:
            client.load(dict(login, kind="http", workload=workload, clients=16, seconds=5, **made))
        for round_ in range(1, ROUNDS + 1):
            for workload in WORKLOADS:
                for clients in CLUSTER_CLIENTS:
                    for count in (1, 2):
                        set_servers(count)
                        before = {host: cgroups.cpu_seconds(host) for host in hosts}
                        started = time.monotonic()
                        got = client.load(dict(login, kind="http", workload=workload, clients=clients,
                                               seconds=SECONDS, **made))
                        wall = time.monotonic() - started
                        got["cpu_cores"] = {host: round((cgroups.cpu_seconds(host) - before[host]) / wall, 2)
                                            for host in hosts}
                        results[workload][clients][count].append(got)
                        log(f"round {round_} {workload:13} {clients:3} clients, {count} server(s): {got['rps']:7} "
                            f"req/s  p50 {got['p50_ms']} ms  p99 {got['p99_ms']} ms  errors {got['errors']}  "
                            f"cores {got['cpu_cores']}")
    finally:
        set_servers(2)
    return {"workers": workers, "http": results, "hosts": hosts}


def print_cluster(result):
    print(f"\nmake bench BENCH_MODE=cluster: {result['machine']}, MLflow {result['mlflow']}, the cluster scenario "
          f"(workers per server: {json.dumps(result['workers'])}), {ROUNDS} alternating rounds of {SECONDS} s; "
          "every host shares this machine's cores: the load generator and the load balancer too\n")
    hosts = result["hosts"]
    print("| workload | clients | servers | req/s (rounds) | p50 ms | p99 ms | errors | × 1 server | cores used: "
          + ", ".join(hosts) + " |")
    print("|---|---|---|---|---|---|---|---|---|")
    for workload, by_clients in result["http"].items():
        for clients, by_count in by_clients.items():
            base = statistics.mean(r["rps"] for r in by_count[1])
            for count, rounds in by_count.items():
                rps = statistics.mean(r["rps"] for r in rounds)
                cores = {host: round(statistics.mean(r["cpu_cores"][host] for r in rounds), 2) for host in hosts}
                print(f"| {workload} | {clients} | {count} | {rps:.1f} ({' / '.join(str(r['rps']) for r in rounds)}) | "
                      f"{max(r['p50_ms'] or 0 for r in rounds)} | {max(r['p99_ms'] or 0 for r in rounds)} | "
                      f"{sum(r['errors'] for r in rounds)} | {ratio(rps, base)} | "
                      f"{', '.join(str(cores[host]) for host in hosts)} |")


def fmt(value, unit=""):
    return "-" if value is None else f"{value}{unit}"


def print_stack(result):
    http = result["http"]
    print(f"\nmake bench: {result['machine']}, MLflow {result['mlflow']}, {result['workers']} workers each, "
          f"{CLIENTS} keep-alive clients, {ROUNDS} alternating rounds of {SECONDS} s\n")
    print("| workload | server | req/s (rounds) | p50 ms | p99 ms | errors | × stock |")
    print("|---|---|---|---|---|---|---|")
    labels = {"stock": "stock (no auth, no proxy)", "admin": "secured, admin", "editor": "secured, EDIT user"}
    for workload, by_who in http.items():
        base = statistics.mean(r["rps"] for r in by_who["stock"])
        for who, rounds in by_who.items():
            rps = statistics.mean(r["rps"] for r in rounds)
            print(f"| {workload} | {labels[who]} | {rps:.1f} ({' / '.join(str(r['rps']) for r in rounds)}) | "
                  f"{max(r['p50_ms'] or 0 for r in rounds)} | {max(r['p99_ms'] or 0 for r in rounds)} | "
                  f"{sum(r['errors'] for r in rounds)} | {ratio(rps, base)} |")
    transfer = result["transfer"]
    if transfer:
        print(f"\n| {ARTIFACT_MB} MB artifact | upload MB/s | download MB/s | intact |")
        print("|---|---|---|---|")
        for via, label in (("direct", "straight to the bucket"), ("proxy", "through nginx + MLflow")):
            rounds = transfer[via]
            print(f"| {label} | {' / '.join(str(r['upload_mb_s']) for r in rounds)} | "
                  f"{' / '.join(str(r['download_mb_s']) for r in rounds)} | {all(r['intact'] for r in rounds)} |")
        up = ratio(statistics.mean(r["upload_mb_s"] for r in transfer["proxy"]),
                   statistics.mean(r["upload_mb_s"] for r in transfer["direct"]))
        down = ratio(statistics.mean(r["download_mb_s"] for r in transfer["proxy"]),
                     statistics.mean(r["download_mb_s"] for r in transfer["direct"]))
        print(f"proxy / direct: upload {up}×, download {down}×")
    ui = result["ui"]["admin"]
    print(f"\nUI first load: {ui['files']} files, {ui['wire_bytes']} bytes on the wire of {ui['uncompressed_bytes']} "
          f"({fmt(ui['ratio'] and round(ui['ratio'] * 100, 1), ' %')}), {ui['seconds']} s"
          + (f"; not found: {ui['missing']}" if ui["missing"] else ""))
    print(f"memory after the load (MB): {json.dumps(result['memory_mb'])}")


def print_small(result):
    load = result["load"]
    print(f"\nmake bench BENCH_MODE=small: {result['machine']}, MLflow {result['mlflow']}, container limited to "
          f"{result['memory_limit_mb']} MB, {result['workers']} workers (role defaults)\n")
    print(f"memory after warm-up (MB): {json.dumps(result['memory_mb'])}")
    print(f"memory after the load (MB): {json.dumps(result['memory_after_load_mb'])}")
    print(f"peak since each unit started (MB): {json.dumps(result['peak_memory_mb'])}")
    print(f"log-batch, {CLIENTS} clients, {load['seconds']} s: {load['rps']} req/s, p50 {load['p50_ms']} ms, "
          f"p99 {load['p99_ms']} ms, {load['errors']} errors of {load['requests']}")
    print(f"OOM kills: {result['oom_kills']['cgroups']} in the container's cgroups, "
          f"{result['oom_kills']['kernel_log']} in the kernel log")


def main():
    if MODE not in [*DEMOS, "cluster"]:
        raise SystemExit(f"BENCH_MODE must be one of {sorted([*DEMOS, 'cluster'])}")
    if MODE == "cluster":
        client = cluster_up()
        result = cluster(client)
        server = Target(CLUSTER["servers"][-1], None)
        result.update(mode=MODE, machine=machine(), rounds=ROUNDS, seconds=SECONDS,
                      mlflow=server.run(f"{VENV}/bin/python", "-c", "import mlflow; print(mlflow.__version__)").strip(),
                      at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
        out = CACHE / "bench" / f"cluster-{time.strftime('%Y%m%d-%H%M%S')}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print_cluster(result)
        print(f"\nJSON: {out}")
        return
    target = bring_up(MODE)
    target.install_load()
    result = stack(target) if MODE == "stack" else small(target, admin_password(target))
    result.update(mode=MODE, target=target.name, machine=machine(), rounds=ROUNDS, seconds=SECONDS,
                  clients=CLIENTS, mlflow=target.run(f"{VENV}/bin/python", "-c",
                                                     "import mlflow; print(mlflow.__version__)").strip(),
                  at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    out = CACHE / "bench" / f"{MODE}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    (print_stack if MODE == "stack" else print_small)(result)
    print(f"\nJSON: {out}")


def machine():
    cpus = os.cpu_count()
    memory = int(re.search(r"MemTotal:\s+(\d+)", pathlib.Path("/proc/meminfo").read_text()).group(1)) // 1048576
    model = re.search(r"model name\s*:\s*(.+)", pathlib.Path("/proc/cpuinfo").read_text())
    return f"{cpus} cores ({model.group(1).strip() if model else 'unknown CPU'}), {memory} GiB"


if __name__ == "__main__":
    main()
