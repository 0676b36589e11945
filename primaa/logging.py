"""structlog set-up: JSON lines in production, console rendering on a terminal.

Configured once by the entry point (and once per worker process); modules
just call ``structlog.get_logger()``. ``request_id`` and ``job_id`` travel in
contextvars, merged first so every line about a request or job carries them.

The service logs a line per request, so a line must be cheap: JSON is rendered
by :func:`primaa.fastjson.dumps`, the timestamp's date and time are formatted
once a second, and the lines logged during one turn of the event loop go out in
one write (:class:`LineWriter`). The request line skips structlog's bound-logger
machinery altogether (:func:`log_info_directly`) while the JSON set-up is in force,
and is rendered with the turn's other lines, at its end.
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import datetime
import logging
import sys
import threading
import time
from collections.abc import Callable, MutableMapping
from typing import Any, NamedTuple, TextIO

import structlog

from primaa.fastjson import dumps

#: Keys whose values must never reach a log line, whoever passes them.
SECRET_KEYS = frozenset({"callback_token", "token", "api_key", "authorization", "webhook_secret"})


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in SECRET_KEYS.intersection(event):
        event[key] = "***"
    return event


def _render_json(value: Any, **kwargs: Any) -> str:
    return dumps(value, kwargs.get("default")).decode()


def _json_default(value: Any) -> Any:
    """What is not JSON, as structlog's JSONRenderer writes it: ``__structlog__()``, else repr."""
    try:
        return value.__structlog__()
    except AttributeError:
        return repr(value)


class _UtcTimestamp:
    """``timestamp`` in ISO 8601 UTC with microseconds, like ``TimeStamper(fmt="iso")``;
    the part up to the seconds is formatted once per second."""

    def __init__(self) -> None:
        #: (second, its formatted date and time), replaced as one value: threads log too.
        self._cached = (-1, "")

    def __call__(
        self, _: Any, __: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        event["timestamp"] = self.format(time.time())
        return event

    def format(self, now: float) -> str:
        second = int(now)
        cached_second, prefix = self._cached
        if second != cached_second:
            moment = datetime.datetime.fromtimestamp(second, datetime.UTC)
            prefix = moment.strftime("%Y-%m-%dT%H:%M:%S")
            self._cached = (second, prefix)
        return f"{prefix}.{int((now - second) * 1_000_000):06d}Z"


class LineWriter:
    """Writes log lines to a text stream: at once off the event loop, and on it all the
    lines of one loop turn in one write, at the end of that turn.

    A flushed write per request line was ~7 % of the service's time under a status
    read load (py-spy). Lines wait at most for the rest of the current turn; what is
    pending when the interpreter exits (a loop closed before its turn ended) is
    written then.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        #: Lines, and (render, its arguments) of lines to render (:meth:`defer`), in order.
        self._pending: list[str | tuple[Callable[..., str], tuple[Any, ...]]] = []
        self._lock = threading.Lock()

    def msg(self, message: str) -> None:
        self._add(message)

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg

    def defer(self, render: Callable[..., str], *args: Any) -> None:
        """Log the line ``render(*args)``, rendered when the turn's lines are written.

        Rendering a turn's request lines one after another (42 a turn, on average, under a
        status-read load) keeps that code in the CPU's caches: the request line then took
        6.4 us of CPU fewer of the 14 it took rendered between its request's other work
        (status reads at 100,000 jobs, a prototype of this against the service with the
        line switched off).
        """
        self._add((render, args))

    def _add(self, line: str | tuple[Callable[..., str], tuple[Any, ...]]) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            with self._lock:
                self._pending.append(line)
            self.flush()
            return
        with self._lock:
            if not self._pending:
                loop.call_soon(self.flush)
            self._pending.append(line)

    def flush(self) -> None:
        with self._lock:
            if self._pending:
                lines = [
                    line if isinstance(line, str) else line[0](*line[1]) for line in self._pending
                ]
                self._stream.write("\n".join(lines) + "\n")
                self._stream.flush()
                self._pending = []


#: The writer of the current configuration, flushed at exit.
_writer: LineWriter | None = None


class _JsonChain(NamedTuple):
    """The JSON set-up of :func:`configure_logging`, for :func:`log_info_directly`."""

    #: The processor list given to structlog, in force while structlog has it and it ends
    #: with ``renderer``.
    processors: list[structlog.typing.Processor]
    timestamp: _UtcTimestamp
    renderer: structlog.processors.JSONRenderer
    writer: LineWriter

    def render_direct(
        self, fields: dict[str, Any], context: contextvars.Context, now: float
    ) -> str:
        """The line :func:`log_info_directly` was given, with the ``context`` and time
        it was logged in, as structlog's processors would have rendered it then.

        No exc_info there, so format_exc_info has nothing to do: the renderer's serializer
        and default, called without it.
        """
        context.run(structlog.contextvars.merge_contextvars, None, "info", fields)
        fields["level"] = "info"
        fields["timestamp"] = self.timestamp.format(now)
        if not SECRET_KEYS.isdisjoint(fields):
            _redact(None, "info", fields)
        return dumps(fields, _json_default).decode()


#: Set while info lines are rendered as JSON; ``None`` for console output or a higher level.
_json_chain: _JsonChain | None = None


def log_info_directly(event: str, fields: dict[str, Any]) -> bool:
    """Write ``fields`` as the info line ``event``, the very line ``log.info(event, **fields)``
    writes under the JSON set-up, without structlog's bound logger (a third of the cost).

    Returns ``False``, having written nothing, when that set-up is not the one in force
    (console output, a level above info, a test capturing logs): the caller logs through
    structlog then. For the request line, logged on every request: ``fields`` is used up.
    """
    chain = _json_chain
    if chain is None:
        return False
    # structlog.testing.capture_logs swaps the list's contents, keeping the list.
    processors = structlog.get_config()["processors"]
    if processors is not chain.processors or processors[-1] is not chain.renderer:
        return False
    fields["event"] = event
    # The context is a snapshot (copying it is constant-time): rendered later, the line
    # is what it would have been now.
    chain.writer.defer(chain.render_direct, fields, contextvars.copy_context(), time.time())
    return True


@atexit.register
def _flush_at_exit() -> None:
    if _writer is not None:
        _writer.flush()


def configure_logging(log_format: str = "auto", level: str = "info") -> None:
    global _writer, _json_chain
    renderer: structlog.typing.Processor
    json_renderer: structlog.processors.JSONRenderer | None = None
    if _writer is not None:
        _writer.flush()
    writer = _writer = LineWriter(sys.stderr)
    json_output = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    if json_output:
        renderer = json_renderer = structlog.processors.JSONRenderer(
            serializer=_render_json, default=_json_default
        )
    else:
        # Plain tracebacks: rich's would print frame locals, and a local may hold a token.
        renderer = structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)
    timestamp = _UtcTimestamp()
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        timestamp,
        _redact,
        structlog.processors.format_exc_info if json_output else structlog.dev.set_exc_info,
        renderer,
    ]
    threshold = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=lambda *_: writer,
        cache_logger_on_first_use=True,
    )
    _json_chain = (
        _JsonChain(processors, timestamp, json_renderer, writer)
        if json_renderer is not None and threshold <= logging.INFO
        else None
    )
