"""Worker processes end when the service process ends, however it ends (``kill -9`` too).

Orphaned workers would keep their CPU and memory, and the jobs they were running are
handed to another worker by the restarted service anyway. Two mechanisms, because
neither is enough alone:

* The lifeline: a pipe whose write end only the service holds (its descriptors are not
  inheritable, and a spawned worker gets only the descriptors passed to it). Each worker
  blocks on the read end in a daemon thread; when the service dies the kernel closes its
  descriptors, the read returns EOF and the thread ends the worker. It works however the
  service dies, on any POSIX system, but it needs the GIL: a worker inside a C call that
  holds the GIL leaves only when that call returns.
* On Linux, ``prctl(PR_SET_PDEATHSIG, SIGKILL)``: the kernel kills the worker at once.
  But it fires when the *thread* that forked the worker ends, not the process.
  ``ProcessPoolExecutor`` (3.11, spawn) forks in ``submit`` on the caller's thread (and,
  with ``max_tasks_per_child``, on its manager thread, which ends with the pool), so a
  worker forked from a thread that ends early would be killed for nothing. It is asked
  for only when the workers are forked from the main thread, which lives as long as the
  process; see :func:`death_signal_is_safe`.

The multiprocessing resource tracker needs neither: it exits when every holder of its
pipe (the service and each worker) is gone.

Only the standard library is imported here: workers import this module.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext

#: Exit code of a worker that saw its service die (nobody is left to read it).
ORPHANED_EXIT_CODE = 75

_PR_SET_PDEATHSIG = 1


class Lifeline:
    """The service's side of the lifeline: a write end that is held and never written to."""

    def __init__(self, context: BaseContext) -> None:
        #: The read end, passed to each worker (its own descriptor in every worker).
        self.end: Connection
        self.end, self._held = context.Pipe(duplex=False)

    def close(self) -> None:
        """Release the workers still alive: they exit as if the service had died."""
        self._held.close()
        self.end.close()


def death_signal_is_safe() -> bool:
    """Whether workers forked from the current thread may die with it (it is the main thread)."""
    return sys.platform == "linux" and threading.current_thread() is threading.main_thread()


def watch(lifeline: Connection, *, death_signal: bool) -> None:
    """In a worker: end this process as soon as the service is gone."""
    if death_signal:
        set_death_signal(signal.SIGKILL)
    threading.Thread(
        target=_exit_at_eof, args=(lifeline,), name="primaa-lifeline", daemon=True
    ).start()


def set_death_signal(signum: signal.Signals) -> bool:
    """Ask Linux for ``signum`` when the thread that forked this process ends; False elsewhere."""
    if sys.platform != "linux":
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return int(libc.prctl(_PR_SET_PDEATHSIG, ctypes.c_ulong(signum), 0, 0, 0)) == 0


def _exit_at_eof(lifeline: Connection) -> None:
    """Block until every write end is closed (the service is dead), then exit at once.

    ``os._exit``: no cleanup may wait on a dead service (a queue's feeder, a lock it held).
    """
    descriptor = lifeline.fileno()
    while True:
        try:
            if not os.read(descriptor, 1):
                break
        except OSError:
            break
    os._exit(ORPHANED_EXIT_CODE)
