"""structlog set-up: JSON lines in production, console rendering on a terminal.

Configured once by the entry point (and once per worker process); modules
just call ``structlog.get_logger()``. ``request_id`` and ``job_id`` travel in
contextvars, merged first so every line about a request or job carries them.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

#: Keys whose values must never reach a log line, whoever passes them.
SECRET_KEYS = frozenset({"callback_token", "token", "api_key", "authorization", "webhook_secret"})


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in SECRET_KEYS.intersection(event):
        event[key] = "***"
    return event


def configure_logging(log_format: str = "auto", level: str = "info") -> None:
    renderer: structlog.typing.Processor
    json_output = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    if json_output:
        renderer = structlog.processors.JSONRenderer()
    else:
        # Plain tracebacks: rich's would print frame locals, and a local may hold a token.
        renderer = structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            structlog.processors.format_exc_info if json_output else structlog.dev.set_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
