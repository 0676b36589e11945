"""Hostile input through the API: SSRF spellings, malformed requests, broken images.

The guard, the fetcher and the decoder have unit tests of their own (tests/imaging);
these check that the service, driven over HTTP, applies them and never answers 5xx.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import resource
import struct
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image

from primaa.app import create_app
from tests.conftest import (
    CallbackReceiver,
    ImageServer,
    make_settings,
    synthetic_he_png,
    wait_for_callback,
    wait_for_job,
)

Client = TestClient[Any, Any]
MakeClient = Callable[..., Awaitable[Client]]
QUICK = {"seconds": 0.01, "steps": 1}


async def start(aiohttp_client: MakeClient, data_dir: Path, **settings: Any) -> Client:
    return await aiohttp_client(create_app(make_settings(data_dir, **settings)))


def assert_error_shape(status: int, body: Any, what: object) -> None:
    assert isinstance(body, dict), (what, body)
    assert body.get("code") == status, (what, body)
    for key in ("error", "type"):
        assert isinstance(body.get(key), str), (what, body)
        assert body[key], (what, body)


# -- SSRF ---------------------------------------------------------------------------------------

#: Hosts that all mean a loopback, private, link-local or unspecified address.
REFUSED_HOSTS = [
    "127.0.0.1",
    "127.0.0.1.",
    "2130706433",
    "127.1",
    "0x7f.1",
    "0177.0.0.1",
    "0x7f000001",
    "0.0.0.0",
    "0",
    "[::1]",
    "[::]",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "[0:0:0:0:0:ffff:127.0.0.1]",
    "10.0.0.1",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",
    "100.64.0.1",
    "[fe80::1]",
    "[fc00::1]",
    "[64:ff9b::7f00:1]",
    "[2002:7f00:1::]",
]


@pytest.fixture
async def guarded(aiohttp_client: MakeClient, tmp_path: Path) -> Client:
    return await start(aiohttp_client, tmp_path, allow_private_urls=False)


@pytest.mark.parametrize("field", ["image_url", "callback_url"])
@pytest.mark.parametrize("host", REFUSED_HOSTS)
async def test_literal_private_addresses_are_refused_at_submission(
    guarded: Client, field: str, host: str
) -> None:
    body = {
        "image_url": "http://images.example.com/tile.png",
        "algorithm_name": "test_async",
        field: f"http://{host}:8080/x",
    }
    response = await guarded.post("/jobs", json=body)
    assert response.status == 422, (host, await response.text())
    error = await response.json()
    assert_error_shape(422, error, host)
    assert field in error["details"]
    # Refused by the guard (naming the address), or by the URL schema for spellings it
    # does not accept as a URL at all; never by a later, accidental failure.
    assert "refused address" in error["error"] or error["type"] == "validation_error", error
    assert (await (await guarded.get("/jobs")).json())["jobs"] == []


async def test_a_name_of_loopback_is_refused_when_the_image_is_fetched(
    guarded: Client, image_server: ImageServer
) -> None:
    url = image_server.url("/tile.png").replace("127.0.0.1", "localhost")
    response = await guarded.post("/jobs", json={"image_url": url, "algorithm_name": "test_async"})
    assert response.status == 202, "a name is only judged by what it resolves to"
    job = await wait_for_job(guarded, (await response.json())["job_id"])
    assert job["status"] == "Failed"
    assert "refused address" in job["error"]
    assert "localhost" in job["error"]


async def test_a_callback_to_a_name_of_loopback_is_a_failed_attempt_never_sent(
    guarded: Client, callback_receiver: CallbackReceiver, image_server: ImageServer
) -> None:
    form = aiohttp.FormData()
    form.add_field("algorithm_name", "test_async")
    form.add_field("parameters", json.dumps(QUICK))
    form.add_field("callback_url", callback_receiver.url.replace("127.0.0.1", "localhost"))
    form.add_field("image", image_server.png, filename="tile.png", content_type="image/png")
    response = await guarded.post("/jobs", data=form)
    assert response.status == 202, await response.text()
    job_id = (await response.json())["job_id"]
    state = (await wait_for_callback(guarded, job_id, "Failed"))["callback"]
    assert len(state["attempts"]) == 4
    for attempt in state["attempts"]:
        assert attempt["status_code"] is None
        assert attempt["error"].startswith("refused callback URL: refused address"), attempt
    assert callback_receiver.received == []


@pytest.fixture
async def decoy(aiohttp_server: Callable[..., Any]) -> tuple[TestServer, list[str]]:
    """A real image server on 127.0.0.2: what a redirect must never reach."""
    hits: list[str] = []
    png = synthetic_he_png()

    async def tile(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(body=png, content_type="image/png")

    app = web.Application()
    app.router.add_get("/{name}", tile)
    return await aiohttp_server(app, host="127.0.0.2"), hits


@pytest.mark.parametrize("target", ["127.0.0.2", "[::1]"])
async def test_a_redirect_from_an_allowed_server_to_a_private_address_is_refused(
    aiohttp_client: MakeClient,
    aiohttp_server: Callable[..., Any],
    tmp_path: Path,
    decoy: tuple[TestServer, list[str]],
    target: str,
) -> None:
    decoy_server, hits = decoy
    port = decoy_server.port if target == "127.0.0.2" else 9
    location = f"http://{target}:{port}/tile.png"

    async def redirect(_: web.Request) -> web.Response:
        raise web.HTTPFound(location)

    app = web.Application()
    app.router.add_get("/tile.png", redirect)
    allowed = await aiohttp_server(app)
    client = await start(
        aiohttp_client, tmp_path, allow_private_urls=False, allowed_networks=["127.0.0.1/32"]
    )
    url = str(allowed.make_url("/tile.png"))
    response = await client.post("/jobs", json={"image_url": url, "algorithm_name": "test_async"})
    assert response.status == 202, "127.0.0.1 is in allowed_networks"
    job = await wait_for_job(client, (await response.json())["job_id"])
    assert job["status"] == "Failed"
    assert job["error"].startswith(f"refused redirect to {location}"), job["error"]
    assert "loopback" in job["error"]
    assert hits == []


# -- malformed requests -------------------------------------------------------------------------

JOB = "00000000-0000-4000-8000-000000000000"
ENDPOINTS = [
    ("POST", "/jobs"),
    ("POST", "/job-submission"),
    ("GET", "/jobs"),
    ("GET", f"/jobs/{JOB}"),
    ("GET", f"/jobs/{JOB}/result"),
    ("POST", f"/jobs/{JOB}/cancel"),
    ("POST", f"/jobs/{JOB}/callback"),
    ("GET", f"/status/{JOB}"),
    ("GET", "/algorithms"),
    ("GET", "/algorithms/poi_detection"),
    ("GET", "/health"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
]
_VALID = {"image_url": "http://images.example.com/t.png", "algorithm_name": "poi_detection"}
_JSON = "application/json"


def _with(**fields: Any) -> bytes:
    return json.dumps({**_VALID, **fields}).encode()


def _multipart(*parts: tuple[str, bytes]) -> tuple[bytes, str]:
    boundary = "primaa-hostile-boundary"
    chunks = []
    for name, value in parts:
        filename = '; filename="x.png"' if name == "image" else ""
        chunks.append(
            f"--{boundary}\r\n".encode()
            + f'Content-Disposition: form-data; name="{name}"{filename}\r\n\r\n'.encode()
            + value
            + b"\r\n"
        )
    body = b"".join(chunks) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


_FORM_OK = [("algorithm_name", b"test_async"), ("parameters", b"{}")]
_MISSING_IMAGE = _multipart(*_FORM_OK)
_TWO_IMAGES = _multipart(*_FORM_OK, ("image", b"\x89PNG..."), ("image", b"\x89PNG..."))

#: (name, body, content type): sent to every endpoint.
BODIES: list[tuple[str, bytes, str]] = [
    ("empty", b"", _JSON),
    ("json array", b"[1, 2]", _JSON),
    ("json string", b'"text"', _JSON),
    ("json null", b"null", _JSON),
    ("json number", b"5", _JSON),
    ("not json", b"{", _JSON),
    ("invalid utf-8", b'{"image_url": "\xff\xfe"}', _JSON),
    ("utf-16 json", json.dumps(_VALID).encode("utf-16"), _JSON),
    ("wrong types", b'{"image_url": 5, "algorithm_name": ["x"], "parameters": "p"}', _JSON),
    ("missing fields", b"{}", _JSON),
    ("unknown field", _with(extra=1), _JSON),
    ("unknown algorithm", _with(algorithm_name="nope"), _JSON),
    ("unknown parameter", _with(parameters={"no_such": 1}), _JSON),
    ("out-of-range parameter", _with(parameters={"sensitivity": 7}), _JSON),
    ("parameters not an object", _with(parameters=[1]), _JSON),
    ("huge float", _with(timeout=1e308 * 10), _JSON),
    ("huge integer", _with(timeout=10**300), _JSON),
    ("huge parameter", _with(parameters={"sensitivity": 10**300}), _JSON),
    ("5000-digit integer", b'{"timeout": ' + b"9" * 5000 + b"}", _JSON),
    ("NaN", b'{"timeout": NaN, "image_url": "http://a.b/c", "algorithm_name": "x"}', _JSON),
    ("deeply nested", b"[" * 100_000 + b"]" * 100_000, _JSON),
    ("deeply nested object", b'{"a":' * 50_000 + b"1" + b"}" * 50_000, _JSON),
    ("long string", _with(algorithm_name="x" * 500_000), _JSON),
    ("null bytes", _with(algorithm_name="poi\x00detection", callback_token="\x00"), _JSON),
    ("bad url", _with(image_url="http://[::1"), _JSON),
    ("file url", _with(image_url="file:///etc/passwd"), _JSON),
    ("10 MB", b'{"a": "' + b"x" * 10_000_000 + b'"}', _JSON),
    ("text/plain", json.dumps(_VALID).encode(), "text/plain"),
    ("xml", b"<job/>", "application/xml"),
    ("form-urlencoded", b"image_url=x&algorithm_name=y", "application/x-www-form-urlencoded"),
    ("no content type", json.dumps(_VALID).encode(), ""),
    ("multipart without image", *_MISSING_IMAGE),
    ("multipart with two images", *_TWO_IMAGES),
    ("multipart without boundary", b"--x\r\n", "multipart/form-data"),
    ("multipart garbage", b"garbage", "multipart/form-data; boundary=zzz"),
]

#: (what, method, path): query strings and path ids, each on its own.
ODD_REQUESTS: list[tuple[str, str, str]] = [
    ("limit=-1", "GET", "/jobs?limit=-1"),
    ("limit=0", "GET", "/jobs?limit=0"),
    ("limit=abc", "GET", "/jobs?limit=abc"),
    ("limit huge", "GET", "/jobs?limit=99999999999999999999999"),
    ("limit twice", "GET", "/jobs?limit=1&limit=2"),
    ("status=x", "GET", "/jobs?status=x"),
    ("status lowercase", "GET", "/jobs?status=pending"),
    ("bad cursor", "GET", "/jobs?cursor=garbage"),
    ("base64 cursor", "GET", "/jobs?cursor=eyJ4IjogMX0="),
    ("cursor with NUL", "GET", "/jobs?cursor=%00"),
    ("unknown query", "GET", "/jobs?nope=1"),
    ("bad percent", "GET", "/jobs?status=%ff%fe"),
    ("result format", "GET", f"/jobs/{JOB}/result?format=svg"),
    ("result extra", "GET", f"/jobs/{JOB}/result?x=1"),
    ("id with NUL", "GET", "/jobs/%00"),
    ("id traversal", "GET", "/jobs/..%2F..%2Fetc%2Fpasswd"),
    ("id unicode", "GET", "/jobs/%C3%BC%F0%9F%92%A9"),
    ("id invalid utf-8", "GET", "/jobs/%ff%fe"),
    ("id quote", "GET", "/jobs/'%3B%20DROP%20TABLE%20jobs%3B--"),
    ("id 4k", "GET", "/jobs/" + "a" * 4_000),
    # Longer than aiohttp's 8190-byte request line: its parser answers a plain-text 400
    # before any middleware runs (checked for status only).
    ("id 10k", "GET", "/jobs/" + "a" * 10_000),
    ("id spaces", "POST", "/jobs/a%20b/cancel"),
    ("id for callback", "POST", "/jobs/%00/callback"),
    ("status id", "GET", "/status/%ff"),
    ("algorithm name", "GET", "/algorithms/%00..%2F"),
    ("wrong method", "DELETE", "/jobs"),
    ("wrong method on id", "PUT", f"/jobs/{JOB}"),
    ("unknown path", "GET", "/jobs/a/b/c"),
]


@pytest.fixture
async def hostile_client(aiohttp_client: MakeClient, tmp_path: Path) -> Client:
    return await start(aiohttp_client, tmp_path)


async def _send(client: Client, method: str, path: str, body: bytes, ctype: str) -> tuple[int, Any]:
    headers = {"Content-Type": ctype} if ctype else {}
    # skip_auto_headers: "no content type" must reach the server without one.
    response = await client.request(
        method,
        path,
        data=io.BytesIO(body) if body else None,
        headers=headers,
        skip_auto_headers=["Content-Type"],
    )
    raw = await response.read()
    try:
        return response.status, json.loads(raw)
    except ValueError:
        return response.status, raw[:200]


async def test_malformed_requests_are_4xx_in_the_error_shape(hostile_client: Client) -> None:
    """Every body to every endpoint, then odd query strings and path ids: never a 5xx."""
    table: list[tuple[str, str, str, int, Any]] = []
    for method, path in ENDPOINTS:
        for name, body, ctype in BODIES:
            status, answer = await _send(hostile_client, method, path, body, ctype)
            table.append((method, path, name, status, answer))
    for name, method, path in ODD_REQUESTS:
        status, answer = await _send(hostile_client, method, path, b"", "")
        table.append((method, path[:40], name, status, answer))
    print("\n".join(f"{m} {p} [{n}] -> {s}" for m, p, n, s, _ in table))

    for method, path, name, status, answer in table:
        assert status < 500, (method, path, name, answer)
        # The original API's status answers 404 in its own documented shape.
        if status >= 400 and not path.startswith("/status/") and name != "id 10k":
            assert_error_shape(status, answer, (method, path, name))
    by_name = {(m, p, n): s for m, p, n, s, _ in table}
    invalid_queries = (
        "limit=-1",
        "limit=0",
        "limit=abc",
        "limit huge",
        "status=x",
        "result format",
    )
    unknown_cursors = ("bad cursor", "base64 cursor", "cursor with NUL")
    for name in (*invalid_queries, *unknown_cursors):
        assert any(s == 422 for (_, _, n), s in by_name.items() if n == name), name
    submit = {n: s for (m, p, n), s in by_name.items() if (m, p) == ("POST", "/jobs")}
    assert submit["10 MB"] == 413
    assert submit["text/plain"] == submit["xml"] == submit["no content type"] == 415
    assert submit["empty"] == submit["not json"] == submit["deeply nested"] == 400
    assert submit["5000-digit integer"] == submit["invalid utf-8"] == 400
    assert submit["multipart without image"] == 422
    assert submit["multipart with two images"] == submit["multipart without boundary"] == 400
    for name in ("unknown algorithm", "unknown parameter", "huge float", "huge integer", "NaN"):
        assert submit[name] == 422, name
    # Of all these, /jobs accepts only UTF-16 JSON (which JSON parsers accept). The
    # original API also takes any content type and ignores unknown fields, as it did.
    assert [n for n, s in submit.items() if s < 400] == ["utf-16 json"]


# -- broken images ------------------------------------------------------------------------------


def _png_declaring(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" + b"\x00" * 3 * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )


def _truncated_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(synthetic_he_png(640, 480))).save(buffer, format="JPEG", quality=90)
    data = buffer.getvalue()
    return data[: len(data) // 3]


@pytest.fixture
async def broken_images(aiohttp_server: Callable[..., Any]) -> AsyncIterator[TestServer]:
    released = asyncio.Event()
    bodies = {"/truncated.jpg": (_truncated_jpeg(), "image/jpeg")}
    bodies["/bomb.png"] = (_png_declaring(30_000, 30_000), "image/png")
    bodies["/good.png"] = (synthetic_he_png(), "image/png")
    bodies["/page.html"] = (b"<!doctype html><html><body>login</body></html>", "text/html")

    async def serve(request: web.Request) -> web.Response:
        if request.path == "/hang.png":
            await released.wait()
        if request.path not in bodies:
            raise web.HTTPNotFound()
        body, ctype = bodies[request.path]
        return web.Response(body=body, content_type=ctype)

    app = web.Application()
    app.router.add_get("/{name}", serve)
    yield await aiohttp_server(app)
    released.set()


BROKEN = [
    ("/missing.png", "HTTP 404"),
    ("/page.html", "returned a web page"),
    ("/truncated.jpg", "truncated"),
    ("/bomb.png", "30000"),
    ("/hang.png", "timed out"),
]


def _tree() -> list[int]:
    """This process and its descendants (the worker pool), from /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    tree = [os.getpid()]
    for pid in tree:
        tree.extend(child for child, parent in parents.items() if parent == pid)
    return tree


def _reset_peaks() -> bool:
    """Reset VmHWM of the tree (Linux >= 4.0), so the next reading is this test's own peak."""
    try:
        for pid in _tree():
            Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _peak_rss_mb() -> float:
    """The largest peak RSS in the tree; ru_maxrss of this process where /proc is missing."""
    peaks = [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024]
    for pid in _tree():
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]) / 1024)
    return max(peaks[1:] or peaks)


async def _warm_up(client: Client, server: TestServer, algorithm: str) -> str:
    """One good image first, so the baseline includes a worker that has decoded an image."""
    body: dict[str, Any] = {
        "image_url": str(server.make_url("/good.png")),
        "algorithm_name": algorithm,
    }
    response = await client.post("/jobs", json=body)
    assert response.status == 202, await response.text()
    job_id: str = (await response.json())["job_id"]
    return job_id


@pytest.mark.parametrize("algorithm", ["test_async", "poi_detection"])
async def test_broken_images_fail_quickly_with_the_cause_and_little_memory(
    aiohttp_client: MakeClient, tmp_path: Path, broken_images: TestServer, algorithm: str
) -> None:
    client = await start(
        aiohttp_client,
        tmp_path,
        # Long enough that a loaded machine still gets the 404 and the HTML page in
        # time (this process serves them too); short enough for the hanging server.
        fetch_connect_timeout=3.0,
        fetch_read_timeout=3.0,
        fetch_total_timeout=4.0,
    )
    # test_async decodes in this process, poi_detection in a worker process: the peak
    # RSS of both (the largest in the process tree) is measured.
    await wait_for_job(client, await _warm_up(client, broken_images, algorithm))
    _reset_peaks()
    peak_before = _peak_rss_mb()
    started = time.monotonic()
    ids = {}
    for path, _ in BROKEN:
        body = {"image_url": str(broken_images.make_url(path)), "algorithm_name": algorithm}
        if algorithm == "test_async":
            body["parameters"] = QUICK
        response = await client.post("/jobs", json=body)
        assert response.status == 202, await response.text()
        ids[path] = (await response.json())["job_id"]
    for path, cause in BROKEN:
        job = await wait_for_job(client, ids[path], within=15)
        assert job["status"] == "Failed", (path, job)
        assert cause in job["error"], (path, job["error"])
    elapsed = time.monotonic() - started
    growth = _peak_rss_mb() - peak_before
    print(
        f"{algorithm}: {len(BROKEN)} broken images failed in {elapsed:.2f} s,"
        f" peak RSS +{growth:.1f} MB"
    )
    assert elapsed < 10
    # Decoding the declared 30,000 x 30,000 RGB image would need 2.7 GB.
    assert growth < 200, f"peak RSS grew by {growth:.0f} MB"
