"""How many CPUs this process may really use: its affinity mask and its cgroup quota.

``os.cpu_count()`` counts the host's CPUs. In a container limited to 2 CPUs on a
64-core host it says 64, and one worker per "CPU" would thrash; a process
pinned with ``taskset`` likewise gets fewer cores than the machine has.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def usable_cpu_count(cgroup_root: Path = CGROUP_ROOT) -> int:
    """The smaller of the CPUs in the affinity mask and the cgroup's CPU quota (rounded up)."""
    try:
        allowed = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        allowed = os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup_root)
    if quota is not None:
        allowed = min(allowed, max(1, math.ceil(quota)))
    return max(1, allowed)


def cgroup_cpu_quota(cgroup_root: Path = CGROUP_ROOT) -> float | None:
    """CPUs' worth of time the cgroup may use (``cpu.max`` of cgroup v2, or v1's
    ``cpu.cfs_quota_us``/``cpu.cfs_period_us``); ``None`` when unlimited or unknown."""
    try:
        text = (cgroup_root / "cpu.max").read_text().split()
        if len(text) == 2 and text[0] != "max":
            return int(text[0]) / int(text[1])
        return None
    except (OSError, ValueError):
        pass
    try:
        quota = int((cgroup_root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((cgroup_root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None
