"""OOM kills and memory limits of a test container, read on the build machine (the controller).

On cgroup v1 an OOM kill inside a systemd container is counted only in the sub-cgroup of the unit that lost a
process (.../docker/<id>/system.slice/mlflow.service/memory.oom_control), not in the container's own file:
every memory.oom_control below the container is read. On cgroup v2, memory.events of the container's scope is
hierarchical. The kernel log is read too (`dmesg`): each kill names the cgroup of its victim, and it is the only
count that survives the unit's restart (systemd makes a new sub-cgroup, with new counters, for the new process).
"""

import pathlib
import re
import subprocess

ROOT = pathlib.Path("/sys/fs/cgroup")


def container_id(name):
    return subprocess.run(["docker", "inspect", "--format", "{{.Id}}", name], capture_output=True, text=True,
                          check=True).stdout.strip()


def memory_limit(name):
    """The container's memory limit in MB (None: unlimited)."""
    out = subprocess.run(["docker", "inspect", "--format", "{{.HostConfig.Memory}}", name], capture_output=True,
                         text=True, check=True).stdout.strip()
    return int(out) // 1048576 if out.isdigit() and int(out) > 0 else None


def cgroup_dirs(cid):
    """The container's cgroup directories holding OOM counters (v1 memory controller, or v2 unified)."""
    v1 = ROOT / "memory" / "docker" / cid
    if v1.is_dir():
        return "v1", v1
    return "v2", _v2_dir(cid, "memory.events", "memory")


def _v2_dir(cid, marker, what):
    """The container's cgroup v2 directory: the systemd driver's scope or the cgroupfs driver's, whichever holds
    `marker`."""
    for candidate in (ROOT / "system.slice" / f"docker-{cid}.scope", ROOT / "docker" / cid):
        if (candidate / marker).is_file():
            return candidate
    raise RuntimeError(f"no {what} cgroup found for container {cid[:12]} under {ROOT}")


def oom_kills(name):
    """{'cgroups': kills counted in the container's cgroups, 'kernel_log': kills the kernel logged for it}."""
    cid = container_id(name)
    version, top = cgroup_dirs(cid)
    total = 0
    if version == "v1":
        for path in top.rglob("memory.oom_control"):
            match = re.search(r"^oom_kill (\d+)$", path.read_text(), re.M)
            total += int(match.group(1)) if match else 0
    else:
        match = re.search(r"^oom_kill (\d+)$", (top / "memory.events").read_text(), re.M)
        total = int(match.group(1)) if match else 0
    kernel = subprocess.run(["dmesg"], capture_output=True, text=True, check=True).stdout
    logged = sum(1 for line in kernel.splitlines() if "oom-kill" in line and cid in line)
    return {"cgroups": total, "kernel_log": logged}


def unit_peaks(name, units):
    """Peak memory (MB) of each systemd unit of the container since the unit's cgroup was made (None: unknown)."""
    version, top = cgroup_dirs(container_id(name))
    figures = {}
    leaf = "memory.max_usage_in_bytes" if version == "v1" else "memory.peak"
    for unit in units:
        # template units sit one slice deeper (system.slice/system-postgresql.slice/postgresql@15-main.service)
        path = next((found / leaf for found in top.rglob(unit) if (found / leaf).is_file()), None)
        figures[unit] = round(int(path.read_text()) / 1048576, 1) if path else None
    return figures


def inner_containers(name):
    """Full IDs of the containers a Docker engine inside the container runs (the docker install method): with the
    cgroupfs driver their cgroups are siblings of the outer container's, not below it."""
    script = "command -v docker >/dev/null && docker ps -q --no-trunc"
    result = subprocess.run(["docker", "exec", name, "sh", "-c", script], capture_output=True, text=True, check=False)
    return result.stdout.split() if result.returncode == 0 else []


def cpu_seconds(name):
    """CPU time the container has used so far, in seconds: every process in it, and in the containers its own
    Docker engine runs (cgroup v1 or v2)."""
    return sum(_cpu_seconds(cid) for cid in [container_id(name), *inner_containers(name)])


def _cpu_seconds(cid):
    # v1: the cpuacct controller mounted alone or together with cpu
    for controller in ("cpuacct", "cpu,cpuacct"):
        v1 = ROOT / controller / "docker" / cid / "cpuacct.usage"
        if v1.is_file():
            return int(v1.read_text()) / 1e9
    stat = (_v2_dir(cid, "cpu.stat", "cpu") / "cpu.stat").read_text()
    return int(re.search(r"^usage_usec (\d+)$", stat, re.M).group(1)) / 1e6
