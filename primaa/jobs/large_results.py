"""Where a result goes by its size: whole in the store, or to a file with a reference in
the store; and whether its callback carries it whole, or a summary and a link to it.

A slide can hold a million nuclei, a JSON document of a hundred megabytes: too much
for one database value, and for one callback body. Encoding, compressing and reading
such results block for seconds, so all of it runs in a thread.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Final

import structlog

from primaa.fastjson import dumps
from primaa.jobs.errors import StorageUnavailable
from primaa.jobs.model import Job
from primaa.results.feature import summary_feature
from primaa.results.files import ResultFiles, file_reference, referenced_file

log = structlog.get_logger(__name__)

#: A result file no job names this long after it was written is an orphan.
ORPHAN_AGE: Final = 3600.0
ORPHAN_SWEEP_INTERVAL: Final = 600.0
ORPHAN_CHECKS: Final = 200

#: Reads a job's stored result (``JobStore.get_result``).
StoredResult = Callable[[str], Awaitable[Mapping[str, Any] | None]]


@dataclasses.dataclass(frozen=True, slots=True)
class PreparedResult:
    """A completed job's result, ready for the final write."""

    #: What the store keeps: the Feature, or a reference to its file.
    stored: Mapping[str, Any]
    #: The callback's body: the Feature, or its summary with ``properties.result_url``.
    callback: Mapping[str, Any]
    #: The file written for it, to remove if the final write fails.
    file: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class ResultDocument:
    """A stored result as the API serves it: the Feature itself, or its gzip file."""

    feature: Mapping[str, Any] | None = None
    path: Path | None = None


class LargeResults:
    """The one place that decides "big → file" and "big → summary callback"."""

    def __init__(
        self,
        files: ResultFiles,
        *,
        inline_max_bytes: int,
        callback_max_bytes: int,
        public_url: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._files = files
        self._clock = clock
        self._last_sweep = float("-inf")
        #: Files written up to this time were checked by an earlier sweep.
        self._swept_until = float("-inf")
        self._inline_max_bytes = inline_max_bytes
        self._callback_max_bytes = callback_max_bytes
        self._public_url = public_url.rstrip("/")

    async def prepare(self, job: Job, feature: Mapping[str, Any]) -> PreparedResult:
        """Encode the result once; write it to a file when it is too big for the store."""
        if _at_most(feature, INLINE_ENCODE_VALUES):
            encoded = dumps(feature)
        else:
            encoded = await asyncio.to_thread(dumps, feature)
        stored, name = feature, None
        if len(encoded) > self._inline_max_bytes:
            name = await asyncio.to_thread(self._files.write, job.job_id, encoded)
            stored = file_reference(summary_feature(feature), name, len(encoded))
        callback = feature
        if len(encoded) > self._callback_max_bytes:
            callback = self._linked_summary(job, feature)
        return PreparedResult(stored=stored, callback=callback, file=name)

    def discard(self, prepared: PreparedResult) -> None:
        """Remove the file of a result whose final write failed (the job is not its)."""
        if prepared.file is not None:
            self._files.remove(prepared.file)

    def callback_of(self, job: Job, stored: Mapping[str, Any]) -> Mapping[str, Any]:
        """The callback body of a stored result (for a redelivery that has no earlier one)."""
        if referenced_file(stored) is None:
            return stored
        return self._linked_summary(job, stored)

    async def load(self, stored: Mapping[str, Any]) -> Mapping[str, Any]:
        """The whole result Feature, read from its file when it has one."""
        name = referenced_file(stored)
        if name is None:
            return stored
        return await asyncio.to_thread(self._files.read, name)

    async def document(self, stored: Mapping[str, Any]) -> ResultDocument:
        """The result as the API streams it; ``ResultFileMissing`` when its file is not here."""
        name = referenced_file(stored)
        if name is None:
            return ResultDocument(feature=stored)
        return ResultDocument(path=await asyncio.to_thread(self._files.path, name))

    async def remove(self, stored: Mapping[str, Any]) -> None:
        """Remove the file of a deleted job's result, if it has one."""
        name = referenced_file(stored)
        if name is not None:
            await asyncio.to_thread(self._files.remove, name)

    async def sweep_orphans(self, stored_result: StoredResult) -> None:
        """Remove result files no job names: left by a process that died between writing
        the file and the final write (a write that fails removes its own file).

        Each file is checked once, ``ORPHAN_AGE`` after it was written, by then long
        past the final write's retries; at most every ``ORPHAN_SWEEP_INTERVAL`` and
        ``ORPHAN_CHECKS`` files at a time (the first sweep of a service that has many
        files does not hold up the lease renewals it runs beside).
        """
        now = self._clock()
        if now - self._last_sweep < ORPHAN_SWEEP_INTERVAL:
            return
        self._last_sweep = now
        until = now - ORPHAN_AGE
        written = await asyncio.to_thread(self._files.written_between, self._swept_until, until)
        if len(written) > ORPHAN_CHECKS:
            # The rest at the next sweep, which starts where this one stops.
            until = written[ORPHAN_CHECKS - 1][0]
            written = [entry for entry in written if entry[0] <= until]
            self._last_sweep = float("-inf")
        orphans = []
        try:
            for _, name, job_id in written:
                stored = await stored_result(job_id)
                if stored is None or referenced_file(stored) != name:
                    orphans.append(name)
        except StorageUnavailable as exc:
            log.warning("result_files_sweep_deferred", error=exc.cause)
            return
        for name in orphans:
            await asyncio.to_thread(self._files.remove, name)
        self._swept_until = until
        if orphans:
            log.info("result_files_orphaned", count=len(orphans))

    def _linked_summary(self, job: Job, feature: Mapping[str, Any]) -> dict[str, Any]:
        """The summary a receiver gets instead of a large result, with where to fetch it:
        the ``public_url`` setting, or the address the job was submitted to."""
        summary = summary_feature(feature)
        base = self._public_url or (job.service_url or "").rstrip("/")
        summary["properties"]["result_url"] = f"{base}/jobs/{job.job_id}/result"
        return summary


#: A result of at most this many values (numbers, strings...) is encoded on the event
#: loop, in microseconds: the hand-off to a thread and back would cost more.
INLINE_ENCODE_VALUES: Final = 2000


def _at_most(value: object, budget: int) -> bool:
    """Whether ``value`` holds at most ``budget`` values; stops counting past it."""
    pending = [value]
    while pending:
        item = pending.pop()
        budget -= 1
        if budget < 0:
            return False
        if isinstance(item, Mapping):
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)
    return True
