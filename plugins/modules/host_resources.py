#!/usr/bin/python
# Copyright: mlflowops maintainers
# Apache License 2.0 (see galaxy.yml)

DOCUMENTATION = r"""
---
module: host_resources
short_description: Memory and CPUs a host may really use, cgroup limits included
description:
  - Reports the memory and the number of CPUs available to the processes of the managed host, as the
    smaller of what the kernel reports (/proc/meminfo, the CPU affinity) and the limits of every cgroup
    above the calling process (cgroup v1 memory.limit_in_bytes and cpu.cfs_quota_us, cgroup v2 memory.max
    and cpu.max).
  - Inside a container, an LXC guest or a VPS slice, Ansible's facts report the memory of the machine
    underneath; the roles size workers, pools and PostgreSQL buffers from this module's figures instead.
  - Reads files only; supports check mode.
options: {}
author: mlflowops maintainers
"""

EXAMPLES = r"""
- name: Read the memory and CPUs this host may use
  mlflowops.tracking.host_resources:
  register: __resources

- name: Show them
  ansible.builtin.debug:
    msg: "{{ __resources.memory_mb }} MB, {{ __resources.cpus }} CPUs"
"""

RETURN = r"""
memory_mb:
  description: Usable memory in MiB, the smaller of MemTotal and every cgroup limit above this process.
  type: int
  returned: always
memory_total_mb:
  description: MemTotal of /proc/meminfo in MiB.
  type: int
  returned: always
memory_limit_mb:
  description: The smallest cgroup memory limit found, in MiB; null when there is none.
  type: int
  returned: always
cpus:
  description: Usable CPUs, the smaller of the affinity mask and every cgroup CPU quota (rounded up), at least 1.
  type: int
  returned: always
cpus_online:
  description: CPUs in this process's affinity mask.
  type: int
  returned: always
"""

import math
import os
import re

from ansible.module_utils.basic import AnsibleModule

CGROUP_ROOT = "/sys/fs/cgroup"


def read(path):
    try:
        with open(path, encoding="ascii") as handle:
            return handle.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


def cgroup_paths():
    """(controller directory, path of this process inside it) for v1 memory/cpu and the v2 hierarchy."""
    found = []
    for line in (read("/proc/self/cgroup") or "").splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            found.append((CGROUP_ROOT, path))
        for name in controllers.split(","):
            if name in ("memory", "cpu"):
                for candidate in (f"{CGROUP_ROOT}/{name}", f"{CGROUP_ROOT}/{controllers}"):
                    if os.path.isdir(candidate):
                        found.append((candidate, path))
                        break
    return found


def ancestors(root, path):
    """Every directory from this process's cgroup up to the root of the mount."""
    parts = [p for p in path.split("/") if p]
    for depth in range(len(parts), -1, -1):
        directory = os.path.join(root, *parts[:depth])
        if os.path.isdir(directory):
            yield directory


def limits():
    """(smallest memory limit in bytes or None, smallest CPU quota in CPUs or None) over all ancestors."""
    memory, cpus = [], []
    for root, path in cgroup_paths():
        for directory in ancestors(root, path):
            for name in ("memory.max", "memory.limit_in_bytes"):
                value = read(os.path.join(directory, name))
                if value and value.isdigit():
                    memory.append(int(value))
            quota = read(os.path.join(directory, "cpu.max"))
            if quota and not quota.startswith("max"):
                q, _, period = quota.partition(" ")
                if q.isdigit() and period.isdigit() and int(period) > 0:
                    cpus.append(int(q) / int(period))
            q = read(os.path.join(directory, "cpu.cfs_quota_us"))
            period = read(os.path.join(directory, "cpu.cfs_period_us"))
            if q and period and q.isdigit() and period.isdigit() and int(period) > 0:
                cpus.append(int(q) / int(period))
    return (min(memory) if memory else None), (min(cpus) if cpus else None)


def main():
    module = AnsibleModule(argument_spec={}, supports_check_mode=True)
    match = re.search(r"^MemTotal:\s+(\d+) kB", read("/proc/meminfo") or "", re.M)
    if not match:
        module.fail_json(msg="cannot read MemTotal from /proc/meminfo")
    total = int(match.group(1)) * 1024
    memory_limit, cpu_quota = limits()
    # cgroup v1 writes "no limit" as a huge number (PAGE_COUNTER_MAX): anything above MemTotal is no limit
    if memory_limit is not None and memory_limit >= total:
        memory_limit = None
    online = len(os.sched_getaffinity(0))
    cpus = max(1, min(online, math.ceil(cpu_quota))) if cpu_quota else online
    module.exit_json(
        changed=False,
        memory_mb=min(total, memory_limit or total) // 1048576,
        memory_total_mb=total // 1048576,
        memory_limit_mb=memory_limit // 1048576 if memory_limit else None,
        cpus=cpus,
        cpus_online=online,
    )


if __name__ == "__main__":
    main()
