"""The blocking client: :class:`AsyncClient` driven on a private event loop in a thread.

One HTTP implementation serves both: each call is submitted to the loop thread and
awaited from the caller's thread, so the sync client works in scripts, notebooks (which
already run a loop) and threads alike.
"""

from __future__ import annotations

import asyncio
import builtins
import os
import threading
from collections.abc import Callable, Coroutine, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar, overload

from primaa.client.aio import DEFAULT_TIMEOUT, AsyncClient, ResultFormat
from primaa.client.models import Job
from primaa.client.retry import RetryPolicy
from primaa.client.upload import ImageSource

__all__ = ["Client"]

T = TypeVar("T")


class Client:
    """The blocking twin of :class:`AsyncClient`: same arguments, same methods.

    Use it as ``with Client(url) as client:``, or call :meth:`close`, which also stops
    its thread. ``on_progress`` callbacks of :meth:`wait` run on that thread.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int | RetryPolicy = 3,
    ) -> None:
        self._client = AsyncClient(base_url, api_key=api_key, timeout=timeout, retries=retries)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="primaa-client", daemon=True
        )
        self._thread.start()

    @property
    def base_url(self) -> str:
        return self._client.base_url

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP session, stop the loop thread and close the loop; idempotent."""
        if self._loop.is_closed():
            return
        try:
            self._run(self._shutdown())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    async def _shutdown(self) -> None:
        await self._client.close()
        await self._loop.shutdown_asyncgens()
        await self._loop.shutdown_default_executor()

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        if self._loop.is_closed():
            coroutine.close()
            raise RuntimeError("the client is closed")
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result()
        except BaseException:
            # Ctrl-C in the caller's thread: stop the request too, not only the wait.
            future.cancel()
            raise

    def submit(
        self,
        algorithm: str,
        *,
        image_url: str | None = None,
        image: ImageSource | None = None,
        parameters: Mapping[str, Any] | None = None,
        callback_url: str | None = None,
        callback_token: str | None = None,
        timeout: float | None = None,
    ) -> Job:
        """See :meth:`AsyncClient.submit`."""
        return self._run(
            self._client.submit(
                algorithm,
                image_url=image_url,
                image=image,
                parameters=parameters,
                callback_url=callback_url,
                callback_token=callback_token,
                timeout=timeout,
            )
        )

    def get(self, job_id: str) -> Job:
        return self._run(self._client.get(job_id))

    def list(
        self, *, status: str | None = None, algorithm: str | None = None, limit: int = 100
    ) -> Iterator[Job]:
        """Every matching job, newest first, fetched ``limit`` per request as it is read."""
        cursor: str | None = None
        while True:
            jobs, cursor = self._run(
                self._client.page(status=status, algorithm=algorithm, limit=limit, cursor=cursor)
            )
            yield from jobs
            if not cursor:
                return

    def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        poll_interval: float = 1.0,
        on_progress: Callable[[Job], object] | None = None,
    ) -> Job:
        """See :meth:`AsyncClient.wait`; ``on_progress`` runs on the client's thread."""

        def report(job: Job) -> None:
            if on_progress is not None:
                on_progress(job)

        return self._run(
            self._client.wait(
                job_id, timeout=timeout, poll_interval=poll_interval, on_progress=report
            )
        )

    @overload
    def result(
        self, job_id: str, *, format: ResultFormat = ..., to: None = None
    ) -> dict[str, Any]: ...

    @overload
    def result(
        self, job_id: str, *, format: ResultFormat = ..., to: str | os.PathLike[str]
    ) -> Path: ...

    def result(
        self,
        job_id: str,
        *,
        format: ResultFormat = "geojson",
        to: str | os.PathLike[str] | None = None,
    ) -> dict[str, Any] | Path:
        """See :meth:`AsyncClient.result`."""
        if to is None:
            return self._run(self._client.result(job_id, format=format))
        return self._run(self._client.result(job_id, format=format, to=to))

    def cancel(self, job_id: str) -> Job:
        return self._run(self._client.cancel(job_id))

    def redeliver(self, job_id: str) -> Job:
        return self._run(self._client.redeliver(job_id))

    def delete(self, job_id: str) -> None:
        self._run(self._client.delete(job_id))

    def algorithms(self) -> builtins.list[dict[str, Any]]:
        return self._run(self._client.algorithms())

    def algorithm(self, name: str) -> dict[str, Any]:
        return self._run(self._client.algorithm(name))
