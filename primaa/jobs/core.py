"""Assembles the jobs core from its ports: the manager (what clients call) and the
dispatcher (what runs jobs), sharing one view of the jobs this process runs."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

from primaa.jobs.admission import Admission
from primaa.jobs.claim_plan import ClaimPlan
from primaa.jobs.dispatcher import Dispatcher, DispatchPolicy
from primaa.jobs.images import JobImages
from primaa.jobs.large_results import LargeResults
from primaa.jobs.manager import JobManager
from primaa.jobs.outcomes import FailurePolicy, Outcomes
from primaa.jobs.ports import Executor, ImageSource, JobMetrics, Notifier
from primaa.jobs.runner import JobRunner, RunnerLimits
from primaa.jobs.running import RunningJobs
from primaa.jobs.storage import JobStore
from primaa.plugins.registry import AlgorithmRegistry
from primaa.results.files import RESULTS_DIR_NAME, ResultFiles


@dataclasses.dataclass(frozen=True, slots=True)
class CorePolicy:
    """The knobs of the jobs core, taken from Settings in app.py."""

    cpu_slots: int
    io_slots: int
    lease_seconds: float
    max_attempts: int
    job_timeout: float
    max_job_timeout: float
    max_unfinished: int
    spool_dir: Path
    #: Seconds a finished job's image is kept for the viewer; 0: removed when it ends.
    image_retention: float = 0.0
    #: Where results too big for the store are written (gzip files); beside the spool.
    results_dir: Path | None = None
    #: A result whose JSON is larger is stored as a file, not in the store.
    result_inline_max_bytes: int = 1_048_576
    #: A callback whose result is larger carries its summary and ``result_url`` instead.
    callback_max_result_bytes: int = 1_048_576
    #: The service's address as its clients reach it, for ``result_url``; empty: as submitted.
    public_url: str = ""
    housekeeping_interval: float = 1.0
    #: Seconds between claims when nothing wakes the dispatcher.
    poll_interval: float = 1.0


@dataclasses.dataclass(frozen=True, slots=True)
class JobsCore:
    manager: JobManager
    dispatcher: Dispatcher


def build_jobs_core(
    *,
    store: JobStore,
    registry: AlgorithmRegistry,
    cpu_executor: Executor,
    io_executor: Executor,
    images: ImageSource,
    notifier: Notifier,
    metrics: JobMetrics,
    policy: CorePolicy,
    check_url: Callable[[str], object] | None = None,
    clock: Callable[[], float] = time.time,
) -> JobsCore:
    running = RunningJobs()
    for executor in (cpu_executor, io_executor):
        # Reporting the same fraction twice (one executor for both) changes nothing.
        executor.on_progress(running.report)
    admission = Admission(store, max_unfinished=policy.max_unfinished, clock=clock)
    job_images = JobImages(policy.spool_dir, retention=policy.image_retention, clock=clock)
    large_results = LargeResults(
        ResultFiles(policy.results_dir or policy.spool_dir.parent / RESULTS_DIR_NAME),
        inline_max_bytes=policy.result_inline_max_bytes,
        callback_max_bytes=policy.callback_max_result_bytes,
        public_url=policy.public_url,
        clock=clock,
    )
    outcomes = Outcomes(
        store=store,
        notifier=notifier,
        metrics=metrics,
        admission=admission,
        images=job_images,
        results=large_results,
        clock=clock,
    )
    manager = JobManager(
        store=store,
        registry=registry,
        admission=admission,
        running=running,
        outcomes=outcomes,
        notifier=notifier,
        wake_dispatcher=lambda: dispatcher.wake(),
        max_job_timeout=policy.max_job_timeout,
        check_url=check_url,
        sources=images,
        images=job_images,
        results=large_results,
        clock=clock,
    )
    runner = JobRunner(
        lookup=manager.algorithm,
        cpu=cpu_executor,
        io=io_executor,
        images=images,
        record_image=store.set_image,
        outcomes=outcomes,
        failures=FailurePolicy(max_attempts=policy.max_attempts),
        limits=RunnerLimits(
            cpu_slots=policy.cpu_slots,
            io_slots=policy.io_slots,
            job_timeout=policy.job_timeout,
            max_job_timeout=policy.max_job_timeout,
        ),
    )
    dispatcher = Dispatcher(
        store=store,
        running=running,
        runner=runner,
        outcomes=outcomes,
        admission=admission,
        policy=DispatchPolicy(
            plan=ClaimPlan.of(
                {name: entry.algorithm for name, entry in registry.algorithms.items()},
                cpu_slots=policy.cpu_slots,
                io_slots=policy.io_slots,
            ),
            lease_seconds=policy.lease_seconds,
            max_attempts=policy.max_attempts,
            housekeeping_interval=policy.housekeeping_interval,
            poll_interval=policy.poll_interval,
        ),
        images=job_images,
        results=large_results,
        clock=clock,
    )
    return JobsCore(manager=manager, dispatcher=dispatcher)
