"""structlog set-up: JSON lines in production, console rendering on a terminal.

Configured once by the entry point (and once per worker process); modules
just call ``structlog.get_logger()``. ``request_id`` and ``job_id`` travel in
contextvars, merged first so every line about a request or job carries them.

The service logs a line per request, so a line must be cheap: JSON is rendered
by orjson, the timestamp's date and time are formatted once a second, and the
lines logged during one turn of the event loop go out in one write.
"""

from __future__ import annotations

import asyncio
import atexit
import datetime
import logging
import sys
import threading
import time
from collections.abc import MutableMapping
from typing import Any, TextIO

import orjson
import structlog

#: Keys whose values must never reach a log line, whoever passes them.
SECRET_KEYS = frozenset({"callback_token", "token", "api_key", "authorization", "webhook_secret"})


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in SECRET_KEYS.intersection(event):
        event[key] = "***"
    return event


def _orjson_dumps(value: Any, **kwargs: Any) -> str:
    return orjson.dumps(value, default=kwargs.get("default")).decode()


class _UtcTimestamp:
    """``timestamp`` in ISO 8601 UTC with microseconds, like ``TimeStamper(fmt="iso")``;
    the part up to the seconds is formatted once per second."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(
        self, _: Any, __: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        now = time.time()
        second = int(now)
        if second != self._second:
            moment = datetime.datetime.fromtimestamp(second, datetime.UTC)
            self._prefix = moment.strftime("%Y-%m-%dT%H:%M:%S")
            self._second = second
        event["timestamp"] = f"{self._prefix}.{int((now - second) * 1_000_000):06d}Z"
        return event


class LineWriter:
    """Writes log lines to a text stream: at once off the event loop, and on it all the
    lines of one loop turn in one write, at the end of that turn.

    One write system call per request line was a tenth of a status read's time.
    Lines wait at most for the rest of the current turn; whatever is pending at
    interpreter exit is written then.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._pending: list[str] = []
        self._lock = threading.Lock()
        atexit.register(self.flush)

    def msg(self, message: str) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            with self._lock:
                self._pending.append(message)
            self.flush()
            return
        with self._lock:
            if not self._pending:
                loop.call_soon(self.flush)
            self._pending.append(message)

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg

    def flush(self) -> None:
        with self._lock:
            if self._pending:
                self._stream.write("\n".join(self._pending) + "\n")
                self._stream.flush()
                self._pending = []


def configure_logging(log_format: str = "auto", level: str = "info") -> None:
    renderer: structlog.typing.Processor
    writer = LineWriter(sys.stderr)
    json_output = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    if json_output:
        renderer = structlog.processors.JSONRenderer(serializer=_orjson_dumps)
    else:
        # Plain tracebacks: rich's would print frame locals, and a local may hold a token.
        renderer = structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _UtcTimestamp(),
            _redact,
            structlog.processors.format_exc_info if json_output else structlog.dev.set_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=lambda *_: writer,
        cache_logger_on_first_use=True,
    )
