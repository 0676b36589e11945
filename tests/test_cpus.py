"""Worker count from the CPUs the process may use, not the host's."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from primaa.cpus import cgroup_cpu_quota, usable_cpu_count


def test_cgroup_v2_quota_caps_the_count(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_quota(tmp_path) == 1.5
    assert usable_cpu_count(tmp_path) == min(2, len(os.sched_getaffinity(0)))


def test_cgroup_v2_without_limit(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(tmp_path) is None
    assert usable_cpu_count(tmp_path) == len(os.sched_getaffinity(0))


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_quota(tmp_path) == 0.5
    assert usable_cpu_count(tmp_path) == 1, "a fraction of a CPU still gets one worker"
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_quota(tmp_path) is None


def test_affinity_mask_caps_the_count(tmp_path: Path) -> None:
    original = os.sched_getaffinity(0)
    if len(original) < 2:
        pytest.skip("needs two CPUs to pin the process to one")
    os.sched_setaffinity(0, {min(original)})
    try:
        assert usable_cpu_count(tmp_path) == 1
    finally:
        os.sched_setaffinity(0, original)
