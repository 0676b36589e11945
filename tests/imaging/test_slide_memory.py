"""Reading tiles of a large slide costs memory by the tile, never by the slide."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.imaging.conftest import SOURCES
from tests.support.slides import BuiltSlide, build_slide, scatter

SIZE = 20_000

#: What a worker does with a slide: mask, plan, and read tiles at two resolutions.
_WORKER = textwrap.dedent(
    """
    import json, sys
    from primaa.imaging.slides import open_slide, plan_slide, tissue_mask

    def peak():
        # VmHWM, not ru_maxrss: that one keeps the parent's peak across fork and exec.
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024

    with open_slide(sys.argv[1]) as slide:
        slide.read_region(0, 0, 16, 16)
        before = peak()
        mask = tissue_mask(slide)
        tiles = plan_slide(slide, mpp=0.5, border=64, mask=mask)
        for tile in tiles[:3]:
            tile.read(slide)
        for tile in plan_slide(slide, mpp=0.75, border=64, mask=mask)[:3]:
            tile.read(slide)
    print(json.dumps({"before": before, "after": peak(), "tiles": len(tiles)}))
    """
)


@pytest.fixture(scope="session")
def large(slides_dir: Path) -> BuiltSlide:
    """20,000 pixels square (1.2 GB of RGB at level 0), JPEG-tiled, with 30 H&E tiles."""
    size = (SIZE, SIZE)
    return build_slide(
        slides_dir / "large.tif",
        size=size,
        sources=SOURCES,
        positions=scatter(size, 30, (512, 512), gap=256, seed=2),
        quality=75,
    )


def test_peak_memory_follows_the_tile_not_the_slide(large: BuiltSlide) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _WORKER, str(large.path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    report = json.loads(done.stdout)
    growth = report["after"] - report["before"]
    # Tiles of 2048 px (12 MB of RGB, 16 MB as OpenSlide's RGBA) and OpenSlide's tile
    # cache; level 0 of this slide alone would be 1,200 MB.
    assert report["tiles"] >= 30
    assert growth < 256 * 2**20, f"peak grew by {growth / 2**20:.0f} MB"
