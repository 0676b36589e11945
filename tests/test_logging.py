"""Log output never carries secrets, in either format."""

from __future__ import annotations

import asyncio
import datetime
import json
import time
from collections.abc import Iterator

import pytest
import structlog

from primaa.logging import configure_logging, log_info_directly

TOKEN = "cb-token-5f1e2d"


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def _fail_holding_a_token(callback_token: str) -> None:
    raise ValueError("the algorithm broke")


@pytest.mark.parametrize("log_format", ["console", "json"])
def test_a_traceback_does_not_print_the_locals_that_hold_a_token(
    log_format: str, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(log_format, "info")
    log = structlog.get_logger("test")
    try:
        _fail_holding_a_token(TOKEN)
    except ValueError:
        log.exception("job_failed")
    err = capsys.readouterr().err
    assert "the algorithm broke" in err
    assert TOKEN not in err


@pytest.mark.parametrize("key", ["callback_token", "api_key", "authorization", "token"])
def test_secret_fields_are_redacted(key: str, capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json", "info")
    structlog.get_logger("test").info("event", **{key: TOKEN})
    err = capsys.readouterr().err
    assert TOKEN not in err
    assert '"***"' in err


def test_the_console_renderer_never_uses_rich_tracebacks() -> None:
    """Where rich is installed its tracebacks show frame locals; the test above can only
    catch that there, so also check which formatter is configured (structlog keeps it
    in a private attribute, the same from 23.1 to today)."""
    configure_logging("console", "info")
    renderers = [
        p
        for p in structlog.get_config()["processors"]
        if isinstance(p, structlog.dev.ConsoleRenderer)
    ]
    assert len(renderers) == 1
    assert renderers[0]._exception_formatter is structlog.dev.plain_traceback


def test_a_log_line_with_values_orjson_refuses_is_still_written(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Integer keys (marshmallow's per-item errors) and integers beyond 64 bits."""
    configure_logging("json", "info")
    structlog.get_logger("test").info("event", details={0: ["bad item"]}, n=2**70)
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["details"] == {"0": ["bad item"]}
    assert line["n"] == 2**70


async def test_lines_logged_on_the_event_loop_are_written_at_the_end_of_the_turn(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("json", "info")
    log = structlog.get_logger("test")
    log.info("first")
    log.info("second")
    assert capsys.readouterr().err == ""
    await asyncio.sleep(0)
    events = [json.loads(line)["event"] for line in capsys.readouterr().err.splitlines()]
    assert events == ["first", "second"]


def _request_fields() -> dict[str, object]:
    return {"method": "GET", "path": "/status/abc", "status": 200, "ms": 1.25}


def test_a_line_written_directly_is_the_line_structlog_writes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("json", "info")
    structlog.contextvars.bind_contextvars(request_id="r-1", client_id="c-1", token=TOKEN)
    try:
        structlog.get_logger("test").info("request", **_request_fields())
        assert log_info_directly("request", _request_fields())
    finally:
        structlog.contextvars.clear_contextvars()
    through_structlog, direct = capsys.readouterr().err.splitlines()
    first, second = json.loads(through_structlog), json.loads(direct)
    assert TOKEN not in direct
    assert list(second) == list(first), "the same fields, in the same order"
    assert {**second, "timestamp": first["timestamp"]} == first
    assert second["timestamp"].endswith("Z")


async def test_a_direct_line_on_the_loop_keeps_its_place_and_the_time_it_was_logged(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """It is rendered when the turn's lines are written, after the lines logged later,
    but with the context it was logged in."""
    configure_logging("json", "info")
    log = structlog.get_logger("test")
    log.info("first")
    structlog.contextvars.bind_contextvars(request_id="r-1", token=TOKEN)
    try:
        assert log_info_directly("request", _request_fields())
        logged = datetime.datetime.now(datetime.UTC)
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id="r-2")
        time.sleep(0.05)  # noqa: ASYNC251 - within this turn of the loop, on purpose
        log.info("third")
        assert capsys.readouterr().err == ""
        await asyncio.sleep(0)
    finally:
        structlog.contextvars.clear_contextvars()
    written = capsys.readouterr().err
    lines = [json.loads(line) for line in written.splitlines()]
    assert [line["event"] for line in lines] == ["first", "request", "third"]
    stamps = [datetime.datetime.fromisoformat(line["timestamp"]) for line in lines]
    assert stamps[1] <= logged < stamps[2] - datetime.timedelta(seconds=0.04)
    assert (lines[1]["path"], lines[1]["request_id"], lines[1]["token"]) == (
        "/status/abc",
        "r-1",
        "***",
    )
    assert lines[2]["request_id"] == "r-2"
    assert TOKEN not in written


@pytest.mark.parametrize("set_up", ["console", "warning", "captured"])
def test_a_line_is_not_written_directly_under_another_set_up(
    set_up: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The caller then logs through structlog, which renders, filters or captures it."""
    if set_up == "console":
        configure_logging("console", "info")
    else:
        configure_logging("json", "warning" if set_up == "warning" else "info")
    if set_up == "captured":
        with structlog.testing.capture_logs():
            assert not log_info_directly("request", _request_fields())
    else:
        assert not log_info_directly("request", _request_fields())
    assert capsys.readouterr().err == ""
