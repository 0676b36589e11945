"""Schemathesis fuzzes every documented operation of a real app on loopback.

Bounded and deterministic (fixed example count, derandomized), with every check
schemathesis has (as ``--checks all``): every answer must be non-5xx, use a documented
status code, content type and headers, and match its documented schema; a request the
schema allows is not refused as malformed, one it forbids is refused, and so on.
Run alone with ``tox -e fuzz``; skipped when schemathesis is not installed.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")

from aiohttp import web  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis import checks  # noqa: E402

from primaa.app import create_app  # noqa: E402
from primaa.appkeys import OPENAPI, URL_GUARD  # noqa: E402
from primaa.imaging.urlguard import IPAddress, UnsafeUrl, UrlGuard  # noqa: E402
from tests.conftest import make_settings  # noqa: E402

MAX_EXAMPLES = 100
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.positive_data_acceptance,
    checks.negative_data_rejection,
    checks.missing_required_header,
    checks.use_after_free,
    checks.ensure_resource_availability,
    checks.ignored_auth,
    checks.unsupported_method,
    checks.allow_header_conformance,
    checks.response_headers_conformance,
]


def _document() -> dict[str, Any]:
    """The OpenAPI document the service serves (built without starting anything)."""
    with tempfile.TemporaryDirectory() as data_dir:
        document: dict[str, Any] = create_app(make_settings(Path(data_dir)))[OPENAPI]
    return document


schema = schemathesis.openapi.from_dict(_document())
# A request the schema allows must not be refused as malformed (400), but may be refused
# for what only the server knows (422: an unknown algorithm, a refused address).
schema.config.checks.positive_data_acceptance.expected_statuses = [
    *schema.config.checks.positive_data_acceptance.expected_statuses,
    "422",
]


class _RefuseAll(UrlGuard):
    def check_address(self, ip: IPAddress | str) -> None:
        raise UnsafeUrl(f"refused address {ip} (no outgoing connections while fuzzing)")


#: Examples run per operation, printed at the end (the size of the run).
CALLS: Counter[str] = Counter()


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real app on 127.0.0.1, on its own event loop in a thread (schemathesis is sync)."""
    loop = asyncio.new_event_loop()
    app = create_app(make_settings(tmp_path_factory.mktemp("fuzz"), allow_private_urls=False))
    # The image and callback URLs the fuzzer invents must not reach any server.
    app[URL_GUARD] = _RefuseAll()
    runner = web.AppRunner(app)

    async def start() -> str:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}"

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    url = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=60)
    try:
        yield url
    finally:
        total = sum(CALLS.values())
        print(f"\nfuzzed {len(CALLS)} operations with {total} requests: {dict(CALLS)}")
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_every_operation_answers_as_documented(case: Any, base_url: str) -> None:
    CALLS[f"{case.method} {case.path}"] += 1
    case.call_and_validate(base_url=base_url, checks=CHECKS, timeout=30)
