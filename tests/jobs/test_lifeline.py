"""The lifeline: a worker ends when its service process ends, with real processes.

A "service" process is spawned from the test; it spawns a "worker" that watches it,
reports the worker's pid, and is then killed with SIGKILL, so the worker becomes an
orphan exactly as under a ``kill -9`` of ``primaa serve``.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from primaa.execution.lifeline import (
    ORPHANED_EXIT_CODE,
    Lifeline,
    death_signal_is_safe,
    set_death_signal,
    watch,
)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes and signals")

SPAWN = multiprocessing.get_context("spawn")
#: The requirement for ``primaa serve``: orphans are gone within this many seconds.
DEADLINE = 5.0


def _worker(lifeline: Connection, mode: str, report: Connection) -> None:
    """Watch the service as ``mode`` says, say so, then be busy until killed."""
    if mode in ("lifeline", "both", "both-holding-gil"):
        watch(lifeline, death_signal=mode != "lifeline")
    elif mode == "death-signal":
        assert set_death_signal(signal.SIGKILL)
    report.send(os.getpid())
    if mode == "both-holding-gil":
        sum(range(10**12))  # one C call that never releases the GIL
    time.sleep(60)


def _service(mode: str, report: Connection) -> None:
    """Hold a lifeline, start one worker watching it, and wait to be killed."""
    lifeline = Lifeline(SPAWN)
    worker = SPAWN.Process(target=_worker, args=(lifeline.end, mode, report), daemon=False)
    worker.start()
    time.sleep(60)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (an orphan's zombie, waiting for a reaper, is dead)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return text[text.rindex(")") + 2] not in "ZX"


@contextmanager
def _orphan_of_killed_service(mode: str) -> Iterator[int]:
    """Start a service and its worker, SIGKILL the service; yield the worker's pid."""
    receiver, sender = SPAWN.Pipe(duplex=False)
    service = SPAWN.Process(target=_service, args=(mode, sender))
    service.start()
    try:
        assert receiver.poll(30), "the worker never reported"
        pid: int = receiver.recv()
        assert _alive(pid)
        os.kill(service.pid or 0, signal.SIGKILL)
        service.join(5)
        yield pid
    finally:
        service.kill()
        service.join(5)
        receiver.close()
        sender.close()


def _gone_within(pid: int, seconds: float) -> float | None:
    """Seconds until ``pid`` is dead, or None if it outlived ``seconds``."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if not _alive(pid):
            return time.monotonic() - started
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    return None


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
@pytest.mark.parametrize("mode", ["lifeline", "death-signal", "both", "both-holding-gil"])
def test_a_worker_dies_soon_after_its_service_is_killed(mode: str) -> None:
    with _orphan_of_killed_service(mode) as pid:
        took = _gone_within(pid, DEADLINE)
        assert took is not None, f"the worker ({mode}) outlived its service by {DEADLINE} s"


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_without_a_watch_the_worker_outlives_its_service() -> None:
    """The control: what the tests above see is the watch's doing."""
    with _orphan_of_killed_service("none") as pid:
        assert _gone_within(pid, 1.0) is None


def _watch_forever(lifeline: Connection, ready: Connection) -> None:
    watch(lifeline, death_signal=False)
    ready.send(True)
    time.sleep(60)


def test_closing_the_lifeline_releases_the_workers_and_holding_it_keeps_them() -> None:
    lifeline = Lifeline(SPAWN)
    receiver, sender = SPAWN.Pipe(duplex=False)
    worker = SPAWN.Process(target=_watch_forever, args=(lifeline.end, sender))
    worker.start()
    try:
        assert receiver.poll(30), "the worker never started watching"
        worker.join(0.5)
        assert worker.exitcode is None, "the worker left while the lifeline was held"
        lifeline.close()
        worker.join(DEADLINE)
        assert worker.exitcode == ORPHANED_EXIT_CODE
    finally:
        worker.kill()
        worker.join(5)
        receiver.close()
        sender.close()


def test_a_death_signal_is_asked_for_only_on_the_main_thread() -> None:
    """A worker forked from another thread would be killed when that thread ends."""
    assert death_signal_is_safe() is (sys.platform == "linux")
    seen: list[bool] = []
    thread = threading.Thread(target=lambda: seen.append(death_signal_is_safe()))
    thread.start()
    thread.join()
    assert seen == [False]
