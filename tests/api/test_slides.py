"""Slides through the API: file:// under file_roots, http(s) streamed within the slide limit,
uploads, the job's ``image``, and broken slides, on the real app and loopback servers."""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image

from primaa.app import create_app
from tests.conftest import make_settings, wait_for_job
from tests.support.mirax import write_mirax

SVS = Path(__file__).resolve().parents[1] / "data" / "CMU-1-Small-Region.svs"
SVS_BYTES = SVS.read_bytes()
Client = TestClient[Any, Any]
MakeClient = Callable[..., Awaitable[Client]]
#: An algorithm that needs no worker: a bad slide must fail before any algorithm runs.
QUICK = {"algorithm_name": "test_async", "parameters": {"seconds": 0.01, "steps": 1}}
#: The flat limit of these tests: the 1.9 MB slide is far above it.
FLAT_LIMIT = 100_000


def noisy_png(side: int) -> bytes:
    """A PNG that does not compress: about 3 bytes per pixel."""
    pixels = np.random.default_rng(side).integers(0, 256, (side, side, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG", compress_level=0)
    return out.getvalue()


async def start(aiohttp_client: MakeClient, data_dir: Path, **settings: Any) -> Client:
    return await aiohttp_client(create_app(make_settings(data_dir, **settings)))


@pytest.fixture
async def slide_server(aiohttp_server: Callable[..., Any]) -> TestServer:
    """The CMU slide whole, truncated, without a length and endless, and a big flat PNG."""

    async def svs(_: web.Request) -> web.Response:
        return web.Response(body=SVS_BYTES, content_type="image/tiff")

    async def truncated(_: web.Request) -> web.Response:
        return web.Response(body=SVS_BYTES[: len(SVS_BYTES) // 2], content_type="image/tiff")

    async def endless(request: web.Request) -> web.StreamResponse:
        # No Content-Length and no end: only a fetcher that counts while it streams stops.
        response = web.StreamResponse(headers={"Content-Type": "image/tiff"})
        await response.prepare(request)
        chunk = SVS_BYTES[: 256 * 1024]
        for _ in range(100_000):
            await response.write(chunk)
        return response

    async def big_png(_: web.Request) -> web.Response:
        return web.Response(body=noisy_png(256), content_type="image/png")

    app = web.Application()
    app.router.add_get("/cmu.svs", svs)
    app.router.add_get("/cut.svs", truncated)
    app.router.add_get("/endless.svs", endless)
    app.router.add_get("/big.png", big_png)
    server: TestServer = await aiohttp_server(app)
    return server


@pytest.fixture
def slide_root(tmp_path: Path) -> Path:
    root = tmp_path / "slides"
    root.mkdir()
    (root / "cmu.svs").write_bytes(SVS_BYTES)
    return root


async def submit(client: Client, image_url: str, **body: Any) -> dict[str, Any]:
    response = await client.post("/jobs", json={**QUICK, "image_url": image_url, **body})
    assert response.status == 202, await response.text()
    job: dict[str, Any] = await response.json()
    assert job["image"] is None, "nothing is known before a run opens the image"
    return job


async def refused(client: Client, image_url: str) -> dict[str, Any]:
    response = await client.post("/jobs", json={**QUICK, "image_url": image_url})
    body: dict[str, Any] = await response.json()
    assert response.status == 422, body
    assert body["type"] == "invalid_request", body
    assert "image_url" in body["details"], body
    return body


# -- file:// ------------------------------------------------------------------------------------


async def test_file_urls_are_refused_until_roots_are_set(
    aiohttp_client: MakeClient, tmp_path: Path, slide_root: Path
) -> None:
    client = await start(aiohttp_client, tmp_path / "data")
    body = await refused(client, f"file://{slide_root}/cmu.svs")
    assert "PRIMAA_FILE_ROOTS" in body["error"]


async def test_a_slide_under_a_root_is_read_in_place_and_described(
    aiohttp_client: MakeClient, tmp_path: Path, slide_root: Path
) -> None:
    data = tmp_path / "data"
    client = await start(aiohttp_client, data, file_roots=(slide_root,))
    job = await submit(client, f"file://{slide_root}/cmu.svs")
    assert job["image_url"] == f"file://{slide_root}/cmu.svs"
    done = await wait_for_job(client, job["job_id"])
    image = done["image"]
    assert image["format"] == "aperio"
    assert image["kind"] == "slide"
    assert (image["width"], image["height"]) == (2220, 2967)
    assert image["mpp"] == pytest.approx(0.499, abs=1e-3)
    assert image["levels"] == [{"width": 2220, "height": 2967, "downsample": 1.0}]
    assert (slide_root / "cmu.svs").read_bytes() == SVS_BYTES, "the slide is left as it was"
    spooled = [p for p in (data / "spool").rglob("*") if p.is_file()]
    assert spooled == [], "a file:// slide is never copied to the spool"


async def test_file_urls_out_of_the_roots_are_422(
    aiohttp_client: MakeClient, tmp_path: Path, slide_root: Path
) -> None:
    secret = tmp_path / "secret.svs"
    secret.write_bytes(SVS_BYTES)
    (slide_root / "link.svs").symlink_to(secret)
    (slide_root / "empty.svs").write_bytes(b"")
    client = await start(aiohttp_client, tmp_path / "data", file_roots=(slide_root,))
    for url, message in [
        (f"file://{slide_root}/link.svs", "outside the directories"),
        (f"file://{slide_root}/../secret.svs", "outside the directories"),
        (f"file://{slide_root}/%2E%2E/secret.svs", "outside the directories"),
        (f"file://{tmp_path}/secret.svs", "outside the directories"),
        (f"file://{slide_root}", "is a directory"),
        (f"file://{slide_root}/empty.svs", "is empty"),
        (f"file://{slide_root}/missing.svs", "no such file"),
        (f"file://fileserver{slide_root}/cmu.svs", "host 'fileserver'"),
    ]:
        body = await refused(client, url)
        assert message in body["error"], (url, body)
        if str(secret) not in url:
            assert str(secret) not in body["error"], "never where a link leads"


async def test_a_mirax_slide_and_its_data_directory_are_read_through_file_urls(
    aiohttp_client: MakeClient, tmp_path: Path, slide_root: Path
) -> None:
    inside = write_mirax(slide_root / "case" / "mx.mrxs", columns=3, rows=2, mpp=0.24)
    outside = write_mirax(tmp_path / "elsewhere" / "out.mrxs")
    (slide_root / "out.mrxs").symlink_to(outside)
    (slide_root / "split.mrxs").write_bytes(outside.read_bytes())
    (slide_root / "split").symlink_to(outside.with_suffix(""), target_is_directory=True)
    client = await start(aiohttp_client, tmp_path / "data", file_roots=(slide_root,))
    done = await wait_for_job(client, (await submit(client, f"file://{inside}"))["job_id"])
    image = done["image"]
    assert image["format"] == "mirax", done
    assert (image["width"], image["height"]) == (768, 512)
    assert image["mpp"] == pytest.approx(0.24)
    body = await refused(client, f"file://{slide_root}/out.mrxs")
    assert "outside the directories" in body["error"]
    body = await refused(client, f"file://{slide_root}/split.mrxs")
    assert "the data directory of" in body["error"], body


async def test_the_callback_url_stays_http_only(
    aiohttp_client: MakeClient, tmp_path: Path, slide_root: Path
) -> None:
    client = await start(aiohttp_client, tmp_path / "data", file_roots=(slide_root,))
    response = await client.post(
        "/jobs",
        json={
            **QUICK,
            "image_url": f"file://{slide_root}/cmu.svs",
            "callback_url": f"file://{slide_root}/cmu.svs",
        },
    )
    assert response.status == 422
    assert "callback_url" in (await response.json())["details"]


async def test_openapi_says_image_url_takes_file_urls(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    client = await start(aiohttp_client, tmp_path / "data")
    spec = await (await client.get("/openapi.json")).json()
    text = str(spec["components"]["schemas"])
    assert "file://" in text
    assert "file_roots" in text


# -- http(s) and uploads ------------------------------------------------------------------------


async def test_a_slide_over_the_flat_limit_is_fetched_and_described(
    aiohttp_client: MakeClient, tmp_path: Path, slide_server: TestServer
) -> None:
    assert len(SVS_BYTES) > 10 * FLAT_LIMIT
    client = await start(
        aiohttp_client, tmp_path / "data", max_image_bytes=FLAT_LIMIT, max_slide_bytes=5_000_000
    )
    job = await submit(client, str(slide_server.make_url("/cmu.svs")))
    done = await wait_for_job(client, job["job_id"])
    assert done["image"]["format"] == "aperio", done
    assert done["image"]["bytes"] == len(SVS_BYTES)
    assert done["image"]["mpp"] == pytest.approx(0.499, abs=1e-3)

    flat = await wait_for_job(
        client, (await submit(client, str(slide_server.make_url("/big.png"))))["job_id"]
    )
    assert flat["status"] == "Failed"
    assert "larger than the limit for flat images" in flat["error"], flat


async def test_slides_over_the_slide_limit_are_refused_while_streaming(
    aiohttp_client: MakeClient, tmp_path: Path, slide_server: TestServer
) -> None:
    data = tmp_path / "data"
    client = await start(
        aiohttp_client, data, max_image_bytes=FLAT_LIMIT, max_slide_bytes=1_000_000
    )
    with_length = await submit(client, str(slide_server.make_url("/cmu.svs")))
    # 25 GB would come without a length: the fetch stops at the limit, not at the end.
    endless = await submit(client, str(slide_server.make_url("/endless.svs")))
    for job in (with_length, endless):
        done = await wait_for_job(client, job["job_id"])
        assert done["status"] == "Failed"
        assert "larger than 1000000 bytes" in done["error"], done
        assert done["image"] is None
    assert [p for p in (data / "spool").rglob("*") if p.is_file()] == []


def upload(content: bytes, name: str = "slide.svs") -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("algorithm_name", QUICK["algorithm_name"])
    form.add_field("parameters", '{"seconds": 0.01, "steps": 1}')
    form.add_field(
        "image", io.BytesIO(content), filename=name, content_type="application/octet-stream"
    )
    return form


async def test_an_uploaded_slide_is_held_to_the_slide_limit_not_the_flat_one(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    client = await start(
        aiohttp_client, data, max_image_bytes=FLAT_LIMIT, max_slide_bytes=5_000_000
    )
    response = await client.post("/jobs", data=upload(SVS_BYTES))
    assert response.status == 202, await response.text()
    done = await wait_for_job(client, (await response.json())["job_id"])
    assert done["image"]["format"] == "aperio", done
    assert (done["image"]["width"], done["image"]["height"]) == (2220, 2967)

    response = await client.post("/jobs", data=upload(noisy_png(256), "tile.png"))
    assert response.status == 413, await response.text()
    assert "limit for flat images" in (await response.json())["error"]

    small = await start(
        aiohttp_client, tmp_path / "small", max_image_bytes=FLAT_LIMIT, max_slide_bytes=1_000_000
    )
    response = await small.post("/jobs", data=upload(SVS_BYTES))
    assert response.status == 413, await response.text()
    uploads = data / "spool" / "uploads"
    assert not any(p.name.endswith((".part",)) for p in uploads.iterdir())


async def test_a_flat_png_has_no_mpp(
    aiohttp_client: MakeClient, tmp_path: Path, slide_server: TestServer
) -> None:
    client = await start(aiohttp_client, tmp_path / "data")
    done = await wait_for_job(
        client, (await submit(client, str(slide_server.make_url("/big.png"))))["job_id"]
    )
    assert done["status"] == "Completed", done
    assert done["image"]["format"] == "png"
    assert done["image"]["kind"] == "flat"
    assert done["image"]["mpp"] is None
    assert (done["image"]["width"], done["image"]["height"]) == (256, 256)


# -- bad slides ---------------------------------------------------------------------------------


@pytest.fixture
def bad_slides(slide_root: Path) -> Path:
    (slide_root / "cut.svs").write_bytes(SVS_BYTES[: len(SVS_BYTES) // 2])
    noise = bytearray(SVS_BYTES)
    n = len(noise)
    noise[n // 10 : n // 10 + n // 2] = np.random.default_rng(0).bytes(n // 2)
    (slide_root / "noise.svs").write_bytes(bytes(noise))
    (slide_root / "anim.svs").write_bytes(b"GIF89a" + bytes(200))
    return slide_root


async def test_bad_slides_fail_their_job_with_the_cause_and_the_service_goes_on(
    aiohttp_client: MakeClient, tmp_path: Path, bad_slides: Path, slide_server: TestServer
) -> None:
    client = await start(aiohttp_client, tmp_path / "data", file_roots=(bad_slides,))
    cases = {
        f"file://{bad_slides}/cut.svs": "truncated",
        f"file://{bad_slides}/noise.svs": "corrupt",
        f"file://{bad_slides}/anim.svs": "unsupported image format (GIF)",
        str(slide_server.make_url("/cut.svs")): "truncated",
    }
    jobs = {url: await submit(client, url, algorithm_name="test_sleep") for url in cases}
    for url, message in cases.items():
        done = await wait_for_job(client, jobs[url]["job_id"])
        assert done["status"] == "Failed", (url, done)
        assert message in done["error"], (url, done["error"])
        assert "Traceback" not in done["error"]
        assert done["attempts"] == 1, "a broken file is not retried"
    good = await submit(
        client, f"file://{bad_slides}/cmu.svs", algorithm_name="test_sleep", parameters={}
    )
    done = await wait_for_job(client, good["job_id"])
    assert done["image"]["format"] == "aperio"
    health = await (await client.get("/health")).json()
    assert health["status"] == "ok", health
