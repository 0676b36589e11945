"""ImageFetcher and spool_part against a real aiohttp server on loopback."""

from __future__ import annotations

import asyncio
import io
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import BaseTestServer, TestServer
from PIL import Image

from primaa.imaging.fetch import FetchError, ImageFetcher, spool_part
from primaa.imaging.urlguard import GuardedResolver, UrlGuard, make_connector

MAX_BYTES = 64 * 1024
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _encoded(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), (200, 10, 10)).save(buf, fmt)
    return buf.getvalue()


PNG = _encoded("PNG")
JPEG = _encoded("JPEG")
HANG_SECONDS = 5.0
BLOB = bytes(range(256)) * (14 * 1024 + 3)  # about 3.5 MiB: several 1 MiB spool flushes


async def _hang(request: web.Request) -> web.Response:
    await asyncio.sleep(HANG_SECONDS)
    return web.Response(body=PNG)


async def _chunked_big(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse()
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    for _ in range(4 * MAX_BYTES // 4096):
        await resp.write(b"x" * 4096)
    await resp.write_eof()
    return resp


async def _drip(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse()
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    for _ in range(100):
        await resp.write(b"x")
        await asyncio.sleep(0.1)
    return resp


async def _redirect_chain(request: web.Request) -> web.Response:
    """Answers with n redirects before the image."""
    hops = int(request.match_info["n"])
    target = "/png" if hops <= 1 else f"/chain/{hops - 1}"
    raise web.HTTPFound(target)


async def _redirect_to(request: web.Request) -> web.Response:
    raise web.HTTPFound(request.query["to"])


def _static(
    body: bytes, content_type: str = "application/octet-stream", status: int = 200
) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type=content_type, status=status)

    return handler


def _app() -> web.Application:
    app = web.Application()
    app.router.add_get("/png", _static(PNG, "image/png"))
    app.router.add_get("/jpeg", _static(JPEG, "image/jpeg"))
    app.router.add_get("/html", _static(b"<!doctype html><p>login</p>", "text/html"))
    app.router.add_get("/empty", _static(b""))
    app.router.add_get("/blob", _static(BLOB))
    app.router.add_get("/big", _static(b"x" * (MAX_BYTES + 1)))
    app.router.add_get("/chunked-big", _chunked_big)
    app.router.add_get("/hang", _hang)
    app.router.add_get("/drip", _drip)
    app.router.add_get("/chain/{n}", _redirect_chain)
    app.router.add_get("/redirect", _redirect_to)
    app.router.add_get("/no-location", _static(b"", status=302))
    return app


@pytest.fixture
async def server() -> AsyncIterator[BaseTestServer]:
    async with TestServer(_app(), host="127.0.0.1") as srv:
        yield srv


@pytest.fixture
def guard() -> UrlGuard:
    return UrlGuard(allow_private=False, allowed_networks=["127.0.0.1/32"])


@pytest.fixture
async def fetcher(guard: UrlGuard, tmp_path: Path) -> AsyncIterator[ImageFetcher]:
    async with aiohttp.ClientSession(connector=make_connector(guard)) as session:
        yield ImageFetcher(
            session,
            guard,
            spool_dir=tmp_path,
            max_bytes=MAX_BYTES,
            connect_timeout=1.0,
            read_timeout=0.3,
            max_redirects=3,
            total_timeout=2.0,
        )


def _url(server: BaseTestServer, path: str) -> str:
    return f"http://127.0.0.1:{server.port}{path}"


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def _assert_spool_clean(tmp_path: Path) -> None:
    assert _names(tmp_path) == []


@pytest.mark.parametrize(("path", "body"), [("/png", PNG), ("/jpeg", JPEG)], ids=["png", "jpeg"])
async def test_fetch_images(
    fetcher: ImageFetcher, server: BaseTestServer, tmp_path: Path, path: str, body: bytes
) -> None:
    result = await fetcher.fetch(_url(server, path), "job-1")
    assert result == tmp_path / "job-1.img"
    assert result.read_bytes() == body
    assert not (tmp_path / "job-1.img.part").exists()


async def test_multi_megabyte_body_is_spooled_intact(
    guard: UrlGuard, server: BaseTestServer, tmp_path: Path
) -> None:
    async with aiohttp.ClientSession(connector=make_connector(guard)) as session:
        fetcher = ImageFetcher(
            session,
            guard,
            spool_dir=tmp_path,
            max_bytes=len(BLOB),
            connect_timeout=1.0,
            read_timeout=1.0,
        )
        result = await fetcher.fetch(_url(server, "/blob"), "job-5")
    assert result.read_bytes() == BLOB


async def _refused(fetcher: ImageFetcher, url: str, match: str, tmp_path: Path) -> str:
    with pytest.raises(FetchError, match=match) as info:
        await fetcher.fetch(url, "job-2")
    _assert_spool_clean(tmp_path)
    assert "Traceback" not in str(info.value)
    return str(info.value)


async def test_404_names_the_status(
    fetcher: ImageFetcher, server: BaseTestServer, tmp_path: Path
) -> None:
    await _refused(fetcher, _url(server, "/missing"), "HTTP 404 Not Found", tmp_path)


async def test_html_page_refused(
    fetcher: ImageFetcher, server: BaseTestServer, tmp_path: Path
) -> None:
    await _refused(fetcher, _url(server, "/html"), "web page", tmp_path)


async def test_empty_body_refused(
    fetcher: ImageFetcher, server: BaseTestServer, tmp_path: Path
) -> None:
    await _refused(fetcher, _url(server, "/empty"), "empty body", tmp_path)


async def test_redirects_within_the_limit_are_followed(
    fetcher: ImageFetcher, server: BaseTestServer
) -> None:
    result = await fetcher.fetch(_url(server, "/chain/3"), "job-3")
    assert result.read_bytes() == PNG


async def test_redirects_over_the_limit(
    fetcher: ImageFetcher, server: BaseTestServer, tmp_path: Path
) -> None:
    await _refused(
        fetcher, _url(server, "/chain/4"), r"too many redirects \(more than 3\)", tmp_path
    )


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.2:{port}/png",
        "http://[::1]:{port}/png",
        "http://169.254.169.254/latest/meta-data/",
        "http://2130706434:{port}/png",  # 127.0.0.2
        "file:///etc/passwd",
    ],
)
async def test_redirect_target_is_rechecked(
    fetcher: ImageFetcher, server: BaseTestServer, tmp_path: Path, target: str
) -> None:
    """The first hop is exempt (127.0.0.1/32); where it redirects to is checked afresh."""
    to = target.format(port=server.port)
    await _refused(
        fetcher, _url(server, f"/redirect?to={to}"), "refused redirect to|scheme", tmp_path
    )


class _FakeDNS(AbstractResolver):
    """Resolves every name to 127.0.0.2, which the test guard does not exempt."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host, host="127.0.0.2", port=port, family=socket.AF_INET, proto=0, flags=0
            )
        ]

    async def close(self) -> None:
        pass


async def test_redirect_to_a_name_is_checked_by_the_resolver(
    guard: UrlGuard, server: BaseTestServer, tmp_path: Path
) -> None:
    connector = aiohttp.TCPConnector(resolver=GuardedResolver(guard, _FakeDNS()))
    async with aiohttp.ClientSession(connector=connector) as session:
        fetcher = ImageFetcher(
            session,
            guard,
            spool_dir=tmp_path,
            max_bytes=MAX_BYTES,
            connect_timeout=1.0,
            read_timeout=1.0,
        )
        to = f"http://images.example:{server.port}/png"
        message = await _refused(
            fetcher, _url(server, f"/redirect?to={to}"), "refused address 127.0.0.2", tmp_path
        )
    assert "images.example" in message


async def test_redirect_without_location(
    fetcher: ImageFetcher, server: BaseTestServer, tmp_path: Path
) -> None:
    await _refused(fetcher, _url(server, "/no-location"), "without a Location", tmp_path)


async def test_declared_length_over_limit_refused_before_reading(
    fetcher: ImageFetcher, server: BaseTestServer, tmp_path: Path
) -> None:
    await _refused(fetcher, _url(server, "/big"), f"larger than {MAX_BYTES} bytes", tmp_path)


async def test_chunked_body_over_limit_aborted(
    fetcher: ImageFetcher, server: BaseTestServer, tmp_path: Path
) -> None:
    await _refused(
        fetcher, _url(server, "/chunked-big"), f"larger than {MAX_BYTES} bytes", tmp_path
    )


async def test_silent_server_times_out_quickly(
    fetcher: ImageFetcher, server: BaseTestServer, tmp_path: Path
) -> None:
    start = time.monotonic()
    await _refused(fetcher, _url(server, "/hang"), r"timed out after 0\.3 s", tmp_path)
    assert time.monotonic() - start < 1.5


async def test_drip_feed_hits_the_total_timeout(
    fetcher: ImageFetcher, server: BaseTestServer, tmp_path: Path
) -> None:
    start = time.monotonic()
    await _refused(fetcher, _url(server, "/drip"), r"timed out after 2 s fetching", tmp_path)
    assert time.monotonic() - start < 3.0


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port nobody listens on (bound, never listening, so never reused meanwhile)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


async def test_connection_refused(fetcher: ImageFetcher, closed_port: int, tmp_path: Path) -> None:
    await _refused(fetcher, f"http://127.0.0.1:{closed_port}/png", "connection refused", tmp_path)


async def test_refused_first_url(fetcher: ImageFetcher, tmp_path: Path) -> None:
    await _refused(fetcher, "http://10.0.0.1/a.png", r"refused address 10\.0\.0\.1", tmp_path)
    await _refused(fetcher, "ftp://example.com/a.png", "scheme", tmp_path)


async def test_messages_hide_credentials_and_query(
    fetcher: ImageFetcher, server: BaseTestServer, tmp_path: Path
) -> None:
    url = f"http://user:secret@127.0.0.1:{server.port}/missing?X-Amz-Signature=abc"
    message = await _refused(fetcher, url, "HTTP 404", tmp_path)
    assert "secret" not in message
    assert "Signature" not in message


async def test_job_id_cannot_escape_the_spool(
    fetcher: ImageFetcher, server: BaseTestServer
) -> None:
    with pytest.raises(ValueError, match="job id"):
        await fetcher.fetch(_url(server, "/png"), "../evil")


async def test_cancellation_removes_the_partial_file(
    fetcher: ImageFetcher, server: BaseTestServer, tmp_path: Path
) -> None:
    task = asyncio.create_task(fetcher.fetch(_url(server, "/drip"), "job-4"))
    for _ in range(100):
        await asyncio.sleep(0.02)
        if (tmp_path / "job-4.img.part").exists():
            break
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    _assert_spool_clean(tmp_path)


async def _upload_app(dest: Path, limit: int) -> web.Application:
    async def upload(request: web.Request) -> web.Response:
        reader = await request.multipart()
        part = await reader.next()
        assert isinstance(part, aiohttp.BodyPartReader)
        try:
            size = await spool_part(part, dest, limit)
        except FetchError as exc:
            return web.Response(status=413, text=str(exc))
        return web.Response(text=str(size))

    app = web.Application()
    app.router.add_post("/upload", upload)
    return app


@pytest.mark.parametrize(
    ("body", "status", "text"),
    [
        (PNG, 200, str(len(PNG))),
        (b"x" * (MAX_BYTES + 1), 413, f"upload larger than {MAX_BYTES} bytes"),
        (b"", 413, "upload is empty"),
    ],
    ids=["fits", "too-large", "empty"],
)
async def test_spool_part(tmp_path: Path, body: bytes, status: int, text: str) -> None:
    dest = tmp_path / "up.img"
    async with (
        TestServer(await _upload_app(dest, MAX_BYTES), host="127.0.0.1") as srv,
        aiohttp.ClientSession() as session,
    ):
        form = aiohttp.FormData()
        form.add_field("image", body, filename="a.png", content_type="image/png")
        async with session.post(f"http://127.0.0.1:{srv.port}/upload", data=form) as resp:
            assert resp.status == status
            assert await resp.text() == text
    if status == 200:
        assert dest.read_bytes() == body
        assert _names(tmp_path) == ["up.img"]
    else:
        _assert_spool_clean(tmp_path)
