"""Results too big for a database column, as gzip files under ``data_dir/results``.

A large result is written once, compressed, to a file whose name is unique to that
write (two replicas finishing the same job never touch each other's file), then
the store keeps a small reference in its place: the result's summary Feature
(``geometry: null``, the measurements) with a ``result_file`` member naming the
file. Replicas share ``data_dir``, so any of them serves a file another wrote.

Every function here blocks: callers run them in a thread.
"""

from __future__ import annotations

import gzip
import os
import re
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import orjson

#: The directory of result files in ``data_dir``.
RESULTS_DIR_NAME: Final = "results"
#: The member of a stored result that names its file (``{"name": ..., "bytes": ...}``).
FILE_MEMBER: Final = "result_file"
#: Chunks read from a result file while it is streamed.
CHUNK_BYTES: Final = 256 * 1024
#: Fast and still about a tenth of the JSON's size (coordinates compress well).
_COMPRESS_LEVEL: Final = 5
_SUFFIX: Final = ".geojson.gz"
_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,200}\.geojson\.gz")


class ResultFileMissing(FileNotFoundError):
    """The store names a result file this process cannot find (a ``data_dir`` not shared
    between replicas, or a job deleted meanwhile)."""


def referenced_file(stored: Mapping[str, Any]) -> str | None:
    """The file a stored result names, or ``None`` for a result stored whole."""
    member = stored.get(FILE_MEMBER)
    name = member.get("name") if isinstance(member, Mapping) else None
    return name if isinstance(name, str) else None


def file_reference(summary: Mapping[str, Any], name: str, size: int) -> dict[str, Any]:
    """What the store keeps for a result written to file ``name`` (``size`` bytes of JSON)."""
    return {**summary, FILE_MEMBER: {"name": name, "bytes": size}}


class ResultFiles:
    """The directory of large results: write, find, read and remove their files."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def write(self, job_id: str, document: bytes) -> str:
        """Compress ``document`` (the result's JSON) to a new file; return its name.

        Written under a temporary name and renamed, so a reader never sees half a
        file and a failed write leaves nothing behind.
        """
        name = f"{job_id}.{uuid.uuid4().hex}{_SUFFIX}"
        if not _NAME.fullmatch(name):
            raise ValueError(f"job id {job_id!r} cannot name a result file")
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.directory / name
        temporary = self.directory / f".{name}.tmp"
        try:
            with open(temporary, "wb") as raw:
                with gzip.GzipFile(
                    filename="", mode="wb", fileobj=raw, compresslevel=_COMPRESS_LEVEL, mtime=0
                ) as compressed:
                    compressed.write(document)
                raw.flush()
                os.fsync(raw.fileno())
            os.replace(temporary, final)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        return name

    def path(self, name: str) -> Path:
        """The file of ``name``; :class:`ResultFileMissing` when it is not here."""
        path = self.directory / name if _NAME.fullmatch(name) else None
        if path is None or not path.is_file():
            raise ResultFileMissing(f"result file {name!r} is not in {self.directory}")
        return path

    def read(self, name: str) -> dict[str, Any]:
        """The whole result Feature of file ``name``."""
        with gzip.open(self.path(name), "rb") as compressed:
            feature: dict[str, Any] = orjson.loads(compressed.read())
        return feature

    def written_between(self, after: float, until: float) -> list[tuple[float, str, str]]:
        """``(written, name, job_id)`` of the files last written in ``(after, until]``
        (epoch seconds), oldest first."""
        found = []
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return []
        for entry in entries:
            if not _NAME.fullmatch(entry.name):
                continue
            try:
                written = entry.stat().st_mtime
            except OSError:
                continue
            if after < written <= until:
                job_id = entry.name.removesuffix(_SUFFIX).rsplit(".", 1)[0]
                found.append((written, entry.name, job_id))
        return sorted(found)

    def remove(self, name: str) -> None:
        if _NAME.fullmatch(name):
            (self.directory / name).unlink(missing_ok=True)


def compressed_chunks(path: Path) -> Iterator[bytes]:
    """The file as stored (gzip), in chunks."""
    with open(path, "rb") as raw:
        while chunk := raw.read(CHUNK_BYTES):
            yield chunk


def plain_chunks(path: Path) -> Iterator[bytes]:
    """The file's JSON, decompressed a chunk at a time (never whole in memory)."""
    with gzip.open(path, "rb") as compressed:
        while chunk := compressed.read(CHUNK_BYTES):
            yield chunk
