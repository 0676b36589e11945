"""The asyncio client: one ``aiohttp.ClientSession``, retries, typed errors."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, overload
from urllib.parse import quote

import aiohttp

from primaa.client.errors import ConnectionFailed, PrimaaError, WaitTimeout, error_for
from primaa.client.models import Job
from primaa.client.retry import RETRY_STATUSES, RetryPolicy, retry_after
from primaa.client.upload import ImageSource, Upload

__all__ = ["DEFAULT_TIMEOUT", "AsyncClient", "JobPage", "ResultFormat"]

#: Seconds to connect, and then between two reads of an answer.
DEFAULT_TIMEOUT = 30.0
ResultFormat = Literal["geojson", "qupath"]
#: Called with each new state of a job :meth:`AsyncClient.wait` sees; may be async.
ProgressCallback = Callable[[Job], Awaitable[None] | None]
JobPage = tuple[builtins.list[Job], str | None]
_Form = Callable[[], contextlib.AbstractContextManager[aiohttp.FormData]]


class AsyncClient:
    """A primaa service at ``base_url``, e.g. ``http://127.0.0.1:8000``.

    Use it as ``async with AsyncClient(url) as client:``, or call :meth:`close`. 429 and
    503 answers are retried after the service's ``Retry-After`` (``retries`` re-sends at
    most; pass a :class:`RetryPolicy` to bound the total wait too); GETs are also
    retried after connection errors. Error answers raise :class:`PrimaaError` subclasses.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int | RetryPolicy = 3,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"Accept": "application/json"}
        if api_key:
            self._headers["X-API-Key"] = api_key
        # A total limit would cut off long result downloads; a stall is what to catch.
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout)
        self._retry = retries if isinstance(retries, RetryPolicy) else RetryPolicy(retries)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # Jobs

    async def submit(
        self,
        algorithm: str,
        *,
        image_url: str | None = None,
        image: ImageSource | None = None,
        parameters: Mapping[str, Any] | None = None,
        callback_url: str | None = None,
        callback_token: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (the job's limit, sent to the service)
    ) -> Job:
        """Submit a job on the image at ``image_url``, or upload ``image`` (a path, bytes
        or a binary file object). ``timeout`` is the job's time limit on the service."""
        if (image_url is None) == (image is None):
            raise ValueError("give either image_url or image")
        fields: dict[str, Any] = {
            "algorithm_name": algorithm,
            "parameters": dict(parameters or {}),
            "callback_url": callback_url,
            "callback_token": callback_token,
            "timeout": timeout,
        }
        if image is None:
            sent = {"image_url": image_url, **{k: v for k, v in fields.items() if v is not None}}
            return Job.from_json(await self._json("POST", "/jobs", json=sent))
        upload = Upload(image, fields)
        return Job.from_json(
            await self._json(
                "POST", "/jobs", form=upload.form, replayable=lambda: upload.replayable
            )
        )

    async def get(self, job_id: str) -> Job:
        return Job.from_json(await self._json("GET", f"/jobs/{_segment(job_id)}"))

    async def page(
        self,
        *,
        status: str | None = None,
        algorithm: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> JobPage:
        """One page of ``GET /jobs``, newest first, and the cursor of the next (or ``None``)."""
        params: dict[str, str] = {"limit": str(limit)}
        if status is not None:
            params["status"] = status
        if algorithm is not None:
            params["algorithm_name"] = algorithm
        if cursor:
            params["cursor"] = cursor
        body = await self._json("GET", "/jobs", params=params)
        return [Job.from_json(j) for j in body["jobs"]], body.get("next_cursor")

    async def list(
        self, *, status: str | None = None, algorithm: str | None = None, limit: int = 100
    ) -> AsyncIterator[Job]:
        """Every matching job, newest first, fetched ``limit`` per request as it is read."""
        cursor: str | None = None
        while True:
            jobs, cursor = await self.page(
                status=status, algorithm=algorithm, limit=limit, cursor=cursor
            )
            for job in jobs:
                yield job
            if not cursor:
                return

    async def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (the sync client has the same signature)
        poll_interval: float = 1.0,
        on_progress: ProgressCallback | None = None,
    ) -> Job:
        """Poll until the job is final and return it (Completed, Failed or Cancelled: check
        ``job.ok``). ``on_progress`` gets each state whose status or progress changed.
        Raises :class:`WaitTimeout` after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        seen: tuple[str, float] | None = None
        while True:
            job = await self.get(job_id)
            if on_progress is not None and (job.status, job.progress_percent) != seen:
                seen = (job.status, job.progress_percent)
                outcome = on_progress(job)
                if outcome is not None:
                    await outcome
            if job.done:
                return job
            pause = poll_interval
            if deadline is not None:
                left = deadline - loop.time()
                if left <= 0:
                    raise WaitTimeout(f"job {job_id} still {job.status} after {timeout} s", job=job)
                pause = min(pause, left)
            await asyncio.sleep(pause)

    @overload
    async def result(
        self, job_id: str, *, format: ResultFormat = ..., to: None = None
    ) -> dict[str, Any]: ...

    @overload
    async def result(
        self, job_id: str, *, format: ResultFormat = ..., to: str | os.PathLike[str]
    ) -> Path: ...

    async def result(
        self,
        job_id: str,
        *,
        format: ResultFormat = "geojson",
        to: str | os.PathLike[str] | None = None,
    ) -> dict[str, Any] | Path:
        """A completed job's result: the parsed GeoJSON Feature (``format="qupath"``: a
        FeatureCollection for QuPath), or, with ``to``, written to that file as it
        arrives (never whole in memory) and its path returned. :class:`Conflict` while
        the job has no result."""
        path = f"/jobs/{_segment(job_id)}/result"
        params = {"format": format}
        if to is None:
            body: dict[str, Any] = await self._json("GET", path, params=params)
            return body
        target = Path(to)
        partial = target.with_name(target.name + ".part")
        async with self._request("GET", path, params=params) as response:
            try:
                with partial.open("wb") as file:
                    async for chunk in response.content.iter_chunked(1 << 20):
                        await asyncio.to_thread(file.write, chunk)
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
        partial.replace(target)
        return target

    async def cancel(self, job_id: str) -> Job:
        """Ask to cancel: a Pending job is cancelled at once, a Running one soon after."""
        return Job.from_json(await self._json("POST", f"/jobs/{_segment(job_id)}/cancel"))

    async def redeliver(self, job_id: str) -> Job:
        """Send a finished job's callback again, as a new message (a new ``delivery_id``)."""
        return Job.from_json(await self._json("POST", f"/jobs/{_segment(job_id)}/callback"))

    async def delete(self, job_id: str) -> None:
        """Delete a finished job with its result; :class:`Conflict` while it is unfinished."""
        async with self._request("DELETE", f"/jobs/{_segment(job_id)}"):
            pass

    # Algorithms

    async def algorithms(self) -> builtins.list[dict[str, Any]]:
        """The installed algorithms: ``name``, ``version``, ``summary``, ``plugin``..."""
        body = await self._json("GET", "/algorithms")
        algorithms: builtins.list[dict[str, Any]] = body["algorithms"]
        return algorithms

    async def algorithm(self, name: str) -> dict[str, Any]:
        """One algorithm, with its description and its parameters' JSON Schema."""
        body: dict[str, Any] = await self._json("GET", f"/algorithms/{_segment(name)}")
        return body

    # HTTP

    async def _json(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        form: _Form | None = None,
        replayable: Callable[[], bool] = lambda: True,
    ) -> Any:
        async with self._request(
            method, path, params=params, json=json, form=form, replayable=replayable
        ) as response:
            return await response.json(content_type=None)

    @contextlib.asynccontextmanager
    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        form: _Form | None = None,
        replayable: Callable[[], bool] = lambda: True,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A 2xx answer, after the retries the policy allows; else the typed error."""
        session = self._open()
        url = self.base_url + path
        waited = 0.0
        attempt = 0
        while True:
            attempt += 1
            with form() if form is not None else contextlib.nullcontext() as data:
                try:
                    response = await session.request(
                        method, url, params=params, json=json, data=data
                    )
                except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                    # Only a GET may be sent twice: a POST may have been done before the
                    # connection broke.
                    delay = self._retry.delay(attempt, None)
                    if method != "GET" or not self._retry.allows(attempt, waited, delay):
                        raise ConnectionFailed(
                            f"{method} {url}: {exc or type(exc).__name__}", type="connection_error"
                        ) from exc
                    waited += delay
                    await asyncio.sleep(delay)
                    continue
            try:
                if response.status < 400:
                    yield response
                    return
                error = await _error_of(response)
            finally:
                response.release()
            if response.status in RETRY_STATUSES and replayable():
                delay = self._retry.delay(attempt, error.retry_after)
                if self._retry.allows(attempt, waited, delay):
                    waited += delay
                    await asyncio.sleep(delay)
                    continue
            raise error

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        return self._session


async def _error_of(response: aiohttp.ClientResponse) -> PrimaaError:
    text = await response.text(errors="replace")
    try:
        body = await response.json(content_type=None)
    except ValueError:
        body = None
    return error_for(response.status, body, text=text, retry_after=retry_after(response.headers))


def _segment(value: str) -> str:
    """A path segment: an id with a ``/`` or ``?`` must not reach another endpoint."""
    return quote(value, safe="")
