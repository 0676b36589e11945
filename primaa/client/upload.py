"""The multipart body of an upload, built afresh for each attempt of the request.

A retried upload must send the whole image again: a path is reopened, bytes are
reused, and a file object is sought back to where it was (one that cannot seek is sent
once, never retried). The client reads a caller's file object but never closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import aiohttp

#: What ``submit(image=...)`` takes: a path, the bytes, or a binary file object.
ImageSource = os.PathLike[str] | bytes | bytearray | memoryview | IO[bytes]

CHUNK = 1 << 20


class Upload:
    """An image and the form fields that go with it."""

    def __init__(self, image: ImageSource, fields: Mapping[str, Any]) -> None:
        self._image = image
        self._fields = {name: value for name, value in fields.items() if value is not None}
        self._start: int | None = None
        self.replayable = True
        if isinstance(image, os.PathLike):
            self.filename = Path(image).name
        elif isinstance(image, bytes | bytearray | memoryview):
            self.filename = "image"
        else:
            name = getattr(image, "name", None)
            self.filename = os.path.basename(name) if isinstance(name, str) else "image"
            try:
                self._start = image.tell() if image.seekable() else None
            except (OSError, ValueError):
                self._start = None
            self.replayable = self._start is not None

    @contextlib.contextmanager
    def form(self) -> Iterator[aiohttp.FormData]:
        """The body of one attempt; files the client opened are closed on leaving."""
        with contextlib.ExitStack() as stack:
            form = aiohttp.FormData()
            for name, value in self._fields.items():
                if name == "parameters":
                    form.add_field(name, json.dumps(value), content_type="application/json")
                else:
                    form.add_field(name, str(value))
            form.add_field(
                "image",
                self._payload(stack),
                filename=self.filename,
                content_type="application/octet-stream",
            )
            yield form

    def _payload(self, stack: contextlib.ExitStack) -> Any:
        image = self._image
        if isinstance(image, os.PathLike):
            return stack.enter_context(open(image, "rb"))
        if isinstance(image, bytes | bytearray | memoryview):
            return io.BytesIO(bytes(image))
        if self._start is not None:
            image.seek(self._start)
        else:
            self.replayable = False
        return _chunks(image)


async def _chunks(file: IO[bytes]) -> AsyncIterator[bytes]:
    """A caller's file, read off the event loop, and left open: it is theirs."""
    while chunk := await asyncio.to_thread(file.read, CHUNK):
        yield chunk
