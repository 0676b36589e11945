"""Write a small MIRAX slide (``x.mrxs`` plus the directory ``x/``) that OpenSlide reads.

The smallest layout the format allows: one zoom level of ``columns`` x ``rows`` JPEG
camera images, one per position with no overlap and no position map, so OpenSlide
lays them edge to edge. ``x/Slidedat.ini`` describes it, ``x/Index.dat`` points at
each image in ``x/Data0000.dat``. Enough to test a format made of several files.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

from PIL import Image

__all__ = ["write_mirax"]

_VERSION = b"01.02"


def _jpeg(side: int, colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (side, side), colour).save(out, format="JPEG", quality=90)
    return out.getvalue()


def write_mirax(
    mrxs: Path, *, columns: int = 2, rows: int = 2, side: int = 256, mpp: float = 0.25
) -> Path:
    """Write ``mrxs`` and its data directory beside it; return the ``.mrxs`` path."""
    if mrxs.suffix != ".mrxs":
        raise ValueError("a MIRAX slide's name ends in .mrxs")
    slide_id = "primaa-test-" + mrxs.stem
    data_dir = mrxs.with_suffix("")
    data_dir.mkdir(parents=True, exist_ok=True)
    mrxs.write_bytes(_jpeg(16, (200, 200, 200)))

    images, records = bytearray(), []
    for index in range(columns * rows):
        jpeg = _jpeg(side, (120 + 40 * (index % 3), 80, 160))
        records.append((index, len(images), len(jpeg), 0))
        images += jpeg
    (data_dir / "Data0000.dat").write_bytes(bytes(images))

    # Index.dat: version and slide id, then the hierarchical root pointer (to the
    # per-level pointer table), the non-hierarchical root (unused here), the table,
    # one data-page list per level and the page of image records.
    header = len(_VERSION) + len(slide_id)
    table = header + 8
    level0 = table + 4
    page = level0 + 8
    index = bytearray(_VERSION + slide_id.encode())
    index += struct.pack("<ii", table, 0)
    index += struct.pack("<i", level0)
    index += struct.pack("<ii", 0, page)
    index += struct.pack("<ii", len(records), 0)
    for record in records:
        index += struct.pack("<iiii", *record)
    (data_dir / "Index.dat").write_bytes(bytes(index))

    (data_dir / "Slidedat.ini").write_text(
        "[GENERAL]\n"
        f"SLIDE_ID={slide_id}\n"
        f"IMAGENUMBER_X={columns}\n"
        f"IMAGENUMBER_Y={rows}\n"
        "OBJECTIVE_MAGNIFICATION=20\n"
        "CameraImageDivisionsPerSide=1\n"
        "[HIERARCHICAL]\n"
        "HIER_COUNT=1\n"
        "HIER_0_NAME=Slide zoom level\n"
        "HIER_0_COUNT=1\n"
        "HIER_0_VAL_0=ZoomLevel_0\n"
        "HIER_0_VAL_0_SECTION=LAYER_0_LEVEL_0_SECTION\n"
        "NONHIER_COUNT=0\n"
        "INDEXFILE=Index.dat\n"
        "[DATAFILE]\n"
        "FILE_COUNT=1\n"
        "FILE_0=Data0000.dat\n"
        "[LAYER_0_LEVEL_0_SECTION]\n"
        "IMAGE_CONCAT_FACTOR=0\n"
        "OVERLAP_X=0\n"
        "OVERLAP_Y=0\n"
        f"MICROMETER_PER_PIXEL_X={mpp}\n"
        f"MICROMETER_PER_PIXEL_Y={mpp}\n"
        "IMAGE_FILL_COLOR_BGR=16777215\n"
        f"DIGITIZER_WIDTH={side}\n"
        f"DIGITIZER_HEIGHT={side}\n"
        "IMAGE_FORMAT=JPEG\n"
    )
    return mrxs
