"""The image source the jobs core sees: file:// checked at submission and again at run time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from primaa.imaging.fetch import ImageFetcher
from primaa.imaging.file_roots import FileRoots, FileUrlRefused
from primaa.imaging.sources import ImageSources, ImageUnreadable
from primaa.imaging.urlguard import UnsafeUrl, UrlGuard, make_connector

SVS = Path(__file__).resolve().parents[1] / "data" / "CMU-1-Small-Region.svs"


@pytest.fixture
async def sources(tmp_path: Path) -> AsyncIterator[ImageSources]:
    guard = UrlGuard()
    session = aiohttp.ClientSession(connector=make_connector(guard))
    fetcher = ImageFetcher(
        session,
        guard,
        spool_dir=tmp_path / "spool",
        max_bytes=1 << 20,
        connect_timeout=1.0,
        read_timeout=1.0,
    )
    yield ImageSources(
        fetcher,
        guard,
        FileRoots([tmp_path / "root"]),
        max_flat_bytes=1 << 20,
        max_flat_pixels=1 << 24,
    )
    await session.close()


async def test_a_file_swapped_for_a_link_out_after_submission_is_refused_at_run_time(
    sources: ImageSources, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    slide = root / "a.svs"
    slide.write_bytes(SVS.read_bytes())
    secret = tmp_path / "secret"
    secret.write_bytes(b"not yours")
    url = f"file://{slide}"
    await sources.check(url)
    assert await sources.fetch(url, "job-1") == slide
    assert (await sources.describe(slide))["format"] == "aperio"
    slide.unlink()
    slide.symlink_to(secret)
    with pytest.raises(ImageUnreadable, match="outside the directories"):
        await sources.fetch(url, "job-1")
    with pytest.raises(FileUrlRefused):
        await sources.check(url)


async def test_http_urls_are_still_guarded_at_submission(sources: ImageSources) -> None:
    with pytest.raises(UnsafeUrl, match="loopback"):
        await sources.check("http://127.0.0.1/a.svs")
    with pytest.raises(UnsafeUrl, match="scheme"):
        await sources.check("ftp://example.org/a.svs")


async def test_a_broken_image_is_unreadable_not_a_crash(
    sources: ImageSources, tmp_path: Path
) -> None:
    path = tmp_path / "cut.svs"
    path.write_bytes(SVS.read_bytes()[:50_000])
    with pytest.raises(ImageUnreadable, match="truncated"):
        await sources.describe(path)
