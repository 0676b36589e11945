"""Accept errors (a process out of file descriptors) are logged once per interval."""

from __future__ import annotations

import asyncio
from typing import Any

from structlog.testing import capture_logs

from primaa.connections import quiet_accept_errors


def test_accept_errors_are_logged_once_with_their_count_and_other_errors_pass_on() -> None:
    loop = asyncio.new_event_loop()
    passed_on: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: passed_on.append(context))
    try:
        quiet_accept_errors(loop)
        with capture_logs() as logs:
            for _ in range(100):
                loop.call_exception_handler(
                    {
                        "message": "socket.accept() out of system resource",
                        "exception": OSError(24, "Too many open files"),
                    }
                )
            loop.call_exception_handler({"message": "something else"})
    finally:
        loop.close()
    accept_lines = [entry for entry in logs if entry["event"] == "accept_failed"]
    assert len(accept_lines) == 1
    assert accept_lines[0]["count"] == 1
    assert [context["message"] for context in passed_on] == ["something else"]
