"""``primaa submit | status | wait``: the service's jobs from a shell, through the client.

Each command prints the job as JSON on stdout (as ``GET /jobs/{id}`` shows it, for
``jq``) and says what happens on stderr; while waiting, a terminal sees the progress.
Exit codes: 0 the job completed (or, without waiting, is not failed), 1 it failed or
was cancelled, the wait timed out or the service could not be reached or failed, 2 the
arguments were wrong, the service refused them (4xx) or the key.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from primaa.client import Client, Job, PrimaaError, ServerError, TooManyRequests, WaitTimeout

COMMANDS = frozenset({"submit", "status", "wait"})
DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV = "PRIMAA_CLIENT_URL"
API_KEY_ENV = "PRIMAA_CLIENT_API_KEY"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the client commands on ``primaa``'s subcommands."""

    def with_service(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub.add_argument(
            "--url",
            default=os.environ.get(URL_ENV, DEFAULT_URL),
            help=f"the service (default ${URL_ENV}, else {DEFAULT_URL})",
        )
        sub.add_argument(
            "--api-key",
            default=os.environ.get(API_KEY_ENV),
            help=f"sent as X-API-Key (default ${API_KEY_ENV})",
        )
        return sub

    def with_wait(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--timeout", type=float, help="give up waiting after S seconds (exit 1)")
        sub.add_argument("--poll", type=float, default=1.0, help="seconds between polls")

    submit = with_service(commands.add_parser("submit", help="submit a job to a service"))
    submit.add_argument("algorithm")
    submit.add_argument("image_url", nargs="?", help="http(s) URL of the image")
    submit.add_argument("--image", type=Path, help="upload this image file instead")
    submit.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="algorithm parameter; VALUE is read as JSON when it parses, else as text",
    )
    submit.add_argument("--callback-url", help="where the service POSTs the result")
    submit.add_argument("--callback-token", help="sent to the callback as a Bearer token")
    submit.add_argument("--wait", action="store_true", help="wait until the job is final")
    with_wait(submit)

    status = with_service(commands.add_parser("status", help="show a job of a service"))
    status.add_argument("job_id")

    wait = with_service(commands.add_parser("wait", help="wait until a job is final"))
    wait.add_argument("job_id")
    with_wait(wait)


def run(args: argparse.Namespace) -> int:
    """Run a client command; the exit code."""
    try:
        with Client(args.url, api_key=args.api_key) as client:
            if args.command == "submit":
                return _submit(client, args)
            job = client.get(args.job_id)
            if args.command == "wait" and not job.done:
                job = _wait(client, job, args)
            _print_job(job)
            return _exit_code(job)
    except WaitTimeout as exc:
        _print_job(exc.job)
        print(f"primaa: {exc.message}", file=sys.stderr)
        return EXIT_FAILED
    except PrimaaError as exc:
        print(f"primaa: {args.url}: {exc}", file=sys.stderr)
        for field, messages in exc.details.items():
            print(f"  {field}: {json.dumps(messages)}", file=sys.stderr)
        refused = exc.status is not None and not isinstance(exc, ServerError | TooManyRequests)
        return EXIT_USAGE if refused else EXIT_FAILED


def _submit(client: Client, args: argparse.Namespace) -> int:
    if (args.image_url is None) == (args.image is None):
        print("primaa: give either IMAGE_URL or --image FILE", file=sys.stderr)
        return EXIT_USAGE
    try:
        parameters = parse_params(args.param)
    except ValueError as exc:
        print(f"primaa: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.image is not None and not args.image.is_file():
        print(f"primaa: {args.image}: no such file", file=sys.stderr)
        return EXIT_USAGE
    job = client.submit(
        args.algorithm,
        image_url=args.image_url,
        image=args.image,
        parameters=parameters,
        callback_url=args.callback_url,
        callback_token=args.callback_token,
    )
    print(f"primaa: submitted job {job.job_id}", file=sys.stderr)
    if args.wait:
        job = _wait(client, job, args)
    _print_job(job)
    return _exit_code(job)


def _wait(client: Client, job: Job, args: argparse.Namespace) -> Job:
    reporter = ProgressReporter(sys.stderr)
    try:
        final = client.wait(
            job.job_id, timeout=args.timeout, poll_interval=args.poll, on_progress=reporter
        )
    finally:
        reporter.end()
    took = ""
    if final.started_at is not None and final.finished_at is not None:
        took = f" in {(final.finished_at - final.started_at).total_seconds():.1f} s"
    error = f": {final.error}" if final.error else ""
    print(f"primaa: job {final.job_id} {final.status}{took}{error}", file=sys.stderr)
    return final


class ProgressReporter:
    """A progress line redrawn in place on a terminal; elsewhere a line per status change
    until the final one, which the command reports (a log wants no hundred percentages)."""

    def __init__(self, stream: TextIO, clock: Callable[[], float] = time.monotonic) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._status: str | None = None
        self._drawn = False
        self._clock = clock
        self._started = clock()

    def __call__(self, job: Job) -> None:
        if self._tty:
            filled = int(job.progress_percent / 5)
            bar = "#" * filled + "." * (20 - filled)
            elapsed = self._clock() - self._started
            line = f"\r{job.job_id} {job.status:<9} [{bar}] {job.progress_percent:5.1f} %"
            self._stream.write(f"{line} {elapsed:4.0f} s")
            self._drawn = True
        elif job.status != self._status and not job.done:
            self._stream.write(f"primaa: job {job.job_id} {job.status}\n")
        self._status = job.status
        self._stream.flush()

    def end(self) -> None:
        """Finish the redrawn line, so what follows starts on a line of its own."""
        if self._drawn:
            self._stream.write("\n")
            self._stream.flush()


def _print_job(job: Job) -> None:
    print(json.dumps(job.raw, indent=2))


def _exit_code(job: Job) -> int:
    return EXIT_FAILED if job.status in {"Failed", "Cancelled"} else EXIT_OK


def parse_params(pairs: Sequence[str]) -> dict[str, Any]:
    """``NAME=VALUE`` pairs; a VALUE that parses as JSON is that JSON (``0.6``, ``true``)."""
    parameters: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"--param takes NAME=VALUE, got {pair!r}")
        try:
            parameters[name] = json.loads(raw)
        except json.JSONDecodeError:
            parameters[name] = raw
    return parameters
