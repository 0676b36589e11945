"""Typed errors from the real app, and retries against real loopback servers that refuse
(503/429 with ``Retry-After``), drop connections, or answer like a broken proxy."""

from __future__ import annotations

import datetime
import email.utils
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from primaa.app import create_app
from primaa.client import (
    AsyncClient,
    ConnectionFailed,
    InvalidRequest,
    NotFound,
    PrimaaError,
    RetryPolicy,
    ServerError,
    TooManyRequests,
    Unauthorized,
    Unavailable,
)
from primaa.client.retry import retry_after
from tests.conftest import make_settings, synthetic_he_png
from tests.e2e.harness import free_port

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def test_error_answers_are_typed(api: AsyncClient, he_png: Path) -> None:
    with pytest.raises(NotFound) as not_found:
        await api.get("no-such-job")
    error = not_found.value
    assert error.status == 404
    assert error.type == "not_found"
    assert error.request_id
    assert "no-such-job" in error.message
    assert isinstance(error, PrimaaError)
    assert str(error).startswith("HTTP 404 not_found: ")
    with pytest.raises(NotFound):  # an id cannot reach another endpoint
        await api.get("../algorithms")

    with pytest.raises(InvalidRequest) as unknown:
        await api.submit("no_such_algorithm", image=he_png)
    assert unknown.value.type == "unknown_algorithm"
    assert "test_sleep" in unknown.value.details["available"]

    with pytest.raises(InvalidRequest) as invalid:
        await api.submit("poi_detection", image=he_png, parameters={"sensitivity": 7})
    assert invalid.value.status == 422
    assert invalid.value.type == "invalid_parameters"
    assert "sensitivity" in invalid.value.details["parameters"]
    assert invalid.value.body["code"] == 422


async def test_api_keys(aiohttp_server: Callable[..., Any], tmp_path: Path, he_png: Path) -> None:
    settings = make_settings(tmp_path / "data", api_keys=("key-one", "key-two"))
    server: TestServer = await aiohttp_server(create_app(settings))
    url = str(server.make_url(""))
    async with AsyncClient(url) as anonymous, AsyncClient(url, api_key="wrong") as wrong:
        for client in (anonymous, wrong):
            with pytest.raises(Unauthorized) as caught:
                await client.algorithms()
            assert caught.value.status == 401
            assert caught.value.type == "unauthorized"
    async with (
        AsyncClient(url, api_key="key-one") as one,
        AsyncClient(url, api_key="key-two") as two,
    ):
        job = await one.submit("test_sleep", image=he_png, parameters={"seconds": 0})
        assert (await one.get(job.job_id)).job_id == job.job_id
        with pytest.raises(NotFound):
            await two.get(job.job_id)


async def flaky(
    aiohttp_server: Callable[..., Any], answers: list[int], upstream: str | None, **headers: str
) -> tuple[str, list[web.Request], list[bytes]]:
    """A real server answering ``answers`` (with ``headers``) in turn, then proxying to
    ``upstream``; it records each request and each body it got."""
    requests: list[web.Request] = []
    bodies: list[bytes] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        requests.append(request)
        body = await request.read()
        bodies.append(body)
        if answers:
            status = answers.pop(0)
            error = {"code": status, "error": "not now", "type": "unavailable"}
            return web.json_response(error, status=status, headers=headers)
        assert upstream is not None
        forwarded = {"Content-Type": request.headers.get("Content-Type", "application/json")}
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                request.method, upstream + request.path_qs, data=body, headers=forwarded
            ) as response,
        ):
            return web.Response(
                body=await response.read(),
                status=response.status,
                content_type=response.content_type,
            )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    server: TestServer = await aiohttp_server(app)
    return str(server.make_url("")), requests, bodies


async def test_503_is_retried_after_retry_after(
    aiohttp_server: Callable[..., Any], app_server: TestServer
) -> None:
    url, requests, _ = await flaky(
        aiohttp_server, [503, 503], str(app_server.make_url("")), **{"Retry-After": "1"}
    )
    started = time.monotonic()
    async with AsyncClient(url) as client:
        names = [a["name"] for a in await client.algorithms()]
    assert "test_sleep" in names
    assert len(requests) == 3
    # Each wait is Retry-After plus at most 10 % jitter.
    assert 2.0 <= time.monotonic() - started < 3.5


async def test_429_upload_is_sent_again_whole(
    aiohttp_server: Callable[..., Any], app_server: TestServer, he_png: Path
) -> None:
    url, requests, bodies = await flaky(
        aiohttp_server, [429], str(app_server.make_url("")), **{"Retry-After": "1"}
    )
    async with AsyncClient(url) as client:
        job = await client.submit("test_sleep", image=he_png, parameters={"seconds": 0})
        assert (await client.wait(job.job_id, poll_interval=0.05, timeout=20)).ok
    assert [r.method for r in requests[:2]] == ["POST", "POST"]
    assert bodies[0].count(synthetic_he_png()) == 1
    assert bodies[1].count(synthetic_he_png()) == 1


async def test_retries_are_bounded(aiohttp_server: Callable[..., Any]) -> None:
    url, requests, _ = await flaky(aiohttp_server, [503] * 10, None, **{"Retry-After": "1"})
    async with AsyncClient(url, retries=1) as client:
        with pytest.raises(Unavailable) as caught:
            await client.get("some-job")
    assert len(requests) == 2
    assert caught.value.retry_after == 1.0
    assert isinstance(caught.value, ServerError)


async def test_a_wait_beyond_the_budget_is_not_waited(
    aiohttp_server: Callable[..., Any],
) -> None:
    url, requests, _ = await flaky(aiohttp_server, [429], None, **{"Retry-After": "120"})
    started = time.monotonic()
    async with AsyncClient(url, retries=RetryPolicy(retries=5, max_wait=30)) as client:
        with pytest.raises(TooManyRequests) as caught:
            await client.submit("test_sleep", image=b"png")
    assert len(requests) == 1
    assert caught.value.retry_after == 120
    assert time.monotonic() - started < 1


async def dropping(aiohttp_server: Callable[..., Any], drops: int) -> tuple[str, list[str]]:
    """A real server that closes the first ``drops`` connections unanswered."""
    seen: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request.method)
        if len(seen) <= drops:
            assert request.transport is not None
            request.transport.close()
        return web.json_response({"algorithms": [], "broken_plugins": []})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    server: TestServer = await aiohttp_server(app)
    return str(server.make_url("")), seen


async def test_gets_are_retried_after_a_dropped_connection(
    aiohttp_server: Callable[..., Any],
) -> None:
    url, seen = await dropping(aiohttp_server, drops=2)
    async with AsyncClient(url, retries=RetryPolicy(backoff=0.01)) as client:
        assert await client.algorithms() == []
    assert seen == ["GET", "GET", "GET"]


async def test_posts_are_not_retried_after_a_dropped_connection(
    aiohttp_server: Callable[..., Any],
) -> None:
    url, seen = await dropping(aiohttp_server, drops=1)
    async with AsyncClient(url, retries=RetryPolicy(backoff=0.01)) as client:
        with pytest.raises(ConnectionFailed) as caught:
            await client.cancel("job")
    assert seen == ["POST"]
    assert caught.value.status is None


async def test_no_service_is_connection_failed() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with AsyncClient(url, retries=RetryPolicy(retries=2, backoff=0.01)) as client:
        with pytest.raises(ConnectionFailed, match="GET"):
            await client.get("job")


async def test_a_proxy_error_page_is_a_server_error(aiohttp_server: Callable[..., Any]) -> None:
    async def bad_gateway(_: web.Request) -> web.Response:
        return web.Response(status=502, text="<html><h1>502 Bad Gateway</h1></html>")

    app = web.Application()
    app.router.add_get("/algorithms", bad_gateway)
    server: TestServer = await aiohttp_server(app)
    async with AsyncClient(str(server.make_url(""))) as client:
        with pytest.raises(ServerError) as caught:
            await client.algorithms()
    assert caught.value.status == 502
    assert caught.value.type == "http_error"
    assert "502 Bad Gateway" in caught.value.message


def test_retry_after_forms() -> None:
    now = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)
    later = email.utils.format_datetime(now + datetime.timedelta(seconds=30), usegmt=True)
    assert retry_after({"Retry-After": "7"}) == 7
    assert retry_after({"Retry-After": later}, now=now) == 30
    assert retry_after({"Retry-After": "soon"}) is None
    assert retry_after({}) is None


def test_jitter_only_adds() -> None:
    policy = RetryPolicy(jitter=0.1)
    delays = [policy.delay(1, 2.0) for _ in range(200)]
    assert all(2.0 <= d <= 2.2 for d in delays)
    assert len(set(delays)) > 1
    assert 0.5 <= RetryPolicy(backoff=0.5).delay(1, None) <= 0.55
    assert 2.0 <= RetryPolicy(backoff=0.5).delay(3, None) <= 2.2
