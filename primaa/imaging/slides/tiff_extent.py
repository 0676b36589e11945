"""Does a TIFF-based slide hold all the bytes its directories point at?

OpenSlide opens a truncated SVS or pyramidal TIFF without complaint when its
directories survived, and fails only when a read reaches a missing tile, which
in a tiled job may be hours in. Walking the image file directories (classic
TIFF and BigTIFF, as SVS, NDPI and generic TIFF are) and comparing where the
strips and tiles end with the file's size finds the truncation at once, reading
only the directories and their offset tables.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO, Final

import numpy as np

__all__ = ["TiffExtentError", "tiff_data_end"]

#: A pyramid has tens of directories; more is a loop or a hostile file.
MAX_DIRECTORIES: Final = 4096
#: Entries of an offset table: a 200,000-pixel-square level in 240-pixel tiles has 700,000.
MAX_TABLE_ENTRIES: Final = 50_000_000
_OFFSETS: Final = (273, 324)  # StripOffsets, TileOffsets
_COUNTS: Final = (279, 325)  # StripByteCounts, TileByteCounts
#: ImageWidth, ImageLength, SamplesPerPixel, RowsPerStrip, PlanarConfiguration, TileWidth,
#: TileLength: how many strips or tiles the declared size needs.
_SHAPE: Final = (256, 257, 277, 278, 284, 322, 323)
#: TIFF field types that hold offsets and byte counts: SHORT, LONG, LONG8.
_TYPES: Final = {3: ("u2", 2), 4: ("u4", 4), 16: ("u8", 8)}


class TiffExtentError(Exception):
    """The file's TIFF structure is broken or points past its end; the message is safe."""


def _read(f: BinaryIO, offset: int, size: int, length: int) -> bytes:
    if offset < 0 or offset + size > length:
        raise TiffExtentError(
            f"slide is truncated: its directories point to byte {offset + size:,} "
            f"but the file has {length:,} bytes"
        )
    f.seek(offset)
    data = f.read(size)
    if len(data) != size:
        raise TiffExtentError("slide is truncated: the file ended while being read")
    return data


def tiff_data_end(path: Path) -> tuple[int, int] | None:
    """``(end, size)``: the byte where the last strip or tile ends, and the file's size;
    ``None`` when the file is not a TIFF. Raise :class:`TiffExtentError` when a
    directory lies outside the file or is malformed."""
    with path.open("rb") as f:
        head = f.read(16)
        length = f.seek(0, 2)
        if head[:4] in (b"II*\x00", b"MM\x00*"):
            big = False
        elif head[:4] in (b"II+\x00", b"MM\x00+"):
            big = True
        else:
            return None
        order = "<" if head[:2] == b"II" else ">"
        if big:
            if len(head) < 16:
                raise TiffExtentError("slide is truncated: the BigTIFF header is incomplete")
            next_ifd = struct.unpack(order + "Q", head[8:16])[0]
        else:
            if len(head) < 8:
                raise TiffExtentError("slide is truncated: the TIFF header is incomplete")
            next_ifd = struct.unpack(order + "I", head[4:8])[0]
        end = 0
        seen: set[int] = set()
        while next_ifd:
            if next_ifd in seen or len(seen) >= MAX_DIRECTORIES:
                raise TiffExtentError("slide is corrupt: its image directories form a loop")
            seen.add(next_ifd)
            ifd_end, next_ifd = _directory(f, order, big, next_ifd, length)
            end = max(end, ifd_end)
        return end, length


def _directory(f: BinaryIO, order: str, big: bool, at: int, length: int) -> tuple[int, int]:
    """Where this directory's data ends, and the offset of the next directory (0: none)."""
    count_size, entry_size, inline = (8, 20, 8) if big else (2, 12, 4)
    (count,) = struct.unpack(order + ("Q" if big else "H"), _read(f, at, count_size, length))
    if count > 65535:
        raise TiffExtentError("slide is corrupt: an image directory has too many entries")
    body = _read(f, at + count_size, count * entry_size + inline, length)
    head = order + ("HHQ" if big else "HHI")
    tables: dict[int, np.ndarray] = {}
    for index in range(count):
        entry = body[index * entry_size : (index + 1) * entry_size]
        tag, kind, number = struct.unpack(head, entry[: struct.calcsize(head)])
        if tag not in (*_OFFSETS, *_COUNTS, *_SHAPE):
            continue
        if kind not in _TYPES or number > MAX_TABLE_ENTRIES:
            raise TiffExtentError(f"slide is corrupt: TIFF tag {tag} has type {kind}")
        code, size = _TYPES[kind]
        value = entry[entry_size - inline :]
        if number * size <= inline:
            raw = value[: number * size]
        else:
            where = struct.unpack(order + ("Q" if big else "I"), value)[0]
            raw = _read(f, where, number * size, length)
        tables[tag] = np.frombuffer(raw, dtype=np.dtype(order + code)).astype(np.uint64)
    (next_ifd,) = struct.unpack(order + ("Q" if big else "I"), body[count * entry_size :])
    _check_table_size(tables)
    end = 0
    for offsets_tag, counts_tag in zip(_OFFSETS, _COUNTS, strict=True):
        offsets, counts = tables.get(offsets_tag), tables.get(counts_tag)
        if offsets is None or counts is None:
            continue
        if offsets.shape != counts.shape:
            raise TiffExtentError("slide is corrupt: its tile offsets and sizes do not match")
        if offsets.size:
            # Values past the file's end are reported as they are, before a sum could wrap.
            top = max(int(offsets.max()), int(counts.max()))
            end = max(end, top if top > length else int((offsets + counts).max()))
    return end, int(next_ifd)


def _check_table_size(tables: dict[int, np.ndarray]) -> None:
    """A directory must hold as many strips or tiles as its declared size needs: a file
    claiming 60,000 x 60,000 pixels with four tiles lies about its size."""

    def value(tag: int, default: int) -> int:
        found = tables.get(tag)
        return int(found[0]) if found is not None and found.size else default

    width, height = value(256, 0), value(257, 0)
    if not width or not height:
        return
    planes = value(277, 1) if value(284, 1) == 2 else 1
    if 324 in tables:
        tile_width, tile_height = value(322, 0), value(323, 0)
        if not tile_width or not tile_height:
            raise TiffExtentError("slide is corrupt: a tiled image without a tile size")
        needed = -(-width // tile_width) * -(-height // tile_height) * planes
        held, what = tables[324].size, "tiles"
    elif 273 in tables:
        rows = min(value(278, height), height) or height
        needed = -(-height // rows) * planes
        held, what = tables[273].size, "strips"
    else:
        return
    if held < needed:
        raise TiffExtentError(
            f"slide is corrupt: it declares {width:,}\N{MULTIPLICATION SIGN}{height:,} pixels, "
            f"which take {needed:,} {what}, but holds {held:,}"
        )
