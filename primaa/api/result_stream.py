"""Results sent a chunk at a time: a large result's gzip file as it is stored (to a client
that accepts gzip) or decompressed on the way, and QuPath collections object by object.

A slide's result can be a hundred megabytes of JSON; neither the file nor the QuPath
document is ever whole in memory, and every read or encoding runs in a thread.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from primaa.appkeys import REQUEST_ID
from primaa.fastjson import dumps
from primaa.results.files import compressed_chunks, plain_chunks
from primaa.results.qupath import qupath_objects

GEOJSON: Final = "application/geo+json"
#: QuPath objects encoded per chunk of the answer.
OBJECTS_PER_CHUNK: Final = 2000
_DONE: Final = object()


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` header names gzip (or ``*``) with a weight above zero."""
    for entry in accept_encoding.split(","):
        coding, *params = (part.strip().lower() for part in entry.split(";"))
        if coding not in ("gzip", "x-gzip", "*"):
            continue
        weights = [param[2:] for param in params if param.startswith("q=")]
        try:
            return not weights or float(weights[0]) > 0
        except ValueError:
            return False
    return False


async def stream_result_file(request: web.Request, path: Path) -> web.StreamResponse:
    """The stored gzip as it is (``Content-Encoding: gzip``, never compressed again) when
    the client accepts it, else its JSON decompressed a chunk at a time."""
    response = _response(request)
    response.headers["Vary"] = "Accept-Encoding"
    if accepts_gzip(request.headers.get("Accept-Encoding", "")):
        response.headers["Content-Encoding"] = "gzip"
        response.content_length = (await asyncio.to_thread(path.stat)).st_size
        return await _send(request, response, compressed_chunks(path))
    return await _send(request, response, plain_chunks(path))


async def stream_qupath(request: web.Request, feature: Mapping[str, Any]) -> web.StreamResponse:
    """The QuPath FeatureCollection of ``feature``, encoded and sent a few objects at a time."""
    objects = qupath_objects(feature)
    return await _send(request, _response(request), _collection_chunks(objects))


def _collection_chunks(objects: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    yield b'{"type":"FeatureCollection","features":['
    separator = b""
    while True:
        batch = [dumps(obj) for obj in itertools.islice(objects, OBJECTS_PER_CHUNK)]
        if not batch:
            break
        yield separator + b",".join(batch)
        separator = b","
    yield b"]}"


def _response(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": GEOJSON})
    # Set now: the request middleware's headers come too late for a streamed answer.
    response.headers["X-Request-ID"] = request[REQUEST_ID]
    return response


async def _send(
    request: web.Request, response: web.StreamResponse, chunks: Iterator[bytes]
) -> web.StreamResponse:
    """Send what ``chunks`` yields, each one read or encoded in a thread.

    A client that leaves cancels this handler while a chunk may still be read in its
    thread: the generator is closed only once that read has returned (closing a running
    generator is an error, "generator already executing").
    """
    await response.prepare(request)
    reading: asyncio.Future[object] | None = None
    try:
        while True:
            reading = asyncio.ensure_future(asyncio.to_thread(next, chunks, _DONE))
            chunk = await asyncio.shield(reading)
            if chunk is _DONE:
                break
            assert isinstance(chunk, bytes)
            await response.write(chunk)
    except ConnectionResetError:
        # The client went away mid-answer: nothing left to send, and nothing went wrong here.
        return response
    finally:
        _close_after(chunks, reading)
    await response.write_eof()
    return response


def _close_after(chunks: Iterator[bytes], reading: asyncio.Future[object] | None) -> None:
    """Close ``chunks`` in a thread (it may close a file) once ``reading`` is done."""
    close = getattr(chunks, "close", None)
    if close is None:
        return

    def closed(_: object = None) -> None:
        asyncio.get_running_loop().run_in_executor(None, close)

    if reading is None or reading.done():
        closed()
    else:
        reading.add_done_callback(closed)
