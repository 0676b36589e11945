"""A real Chromium (Debian's, not a Playwright download) driving the viewer of a real app
served on a loopback port. Skipped, saying why, where Chromium or Playwright is missing."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from primaa.app import create_app
from primaa.appkeys import STORE
from primaa.config import Settings
from primaa.jobs.model import Job, JobStatus, new_id

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Every CSP violation is reported to the console too; the page records it for the tests.
RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__violations.push(`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}`);
});
"""

try:
    from playwright.async_api import BrowserContext, Page, async_playwright
except ImportError:  # pragma: no cover - depends on the machine
    async_playwright = None


def _skip_reason() -> str | None:
    if async_playwright is None:
        return "the playwright package is not installed (pip install -e .[test])"
    if not CHROMIUM.exists():
        return "no Chromium at /usr/bin/chromium (apt-get install -y chromium)"
    return None


@dataclasses.dataclass
class Viewer:
    """The page, the console errors it logged, and the app it talks to."""

    page: Page
    context: BrowserContext
    server: TestServer
    errors: list[str]
    requests: list[str]

    def url(self, fragment: str = "") -> str:
        return str(self.server.make_url("/")) + fragment

    async def assert_clean(self, *answered: int) -> None:
        """No console error, no uncaught exception, no CSP violation.

        Chromium logs every 4xx answer to a fetch as a console error of its own; the
        statuses in ``answered`` are answers the test expects (a 422 shown next to a
        field, the 401 that brings up the key prompt).
        """
        violations = await self.page.evaluate("window.__violations || []")
        assert violations == [], violations
        expected = {f"the server responded with a status of {status} " for status in answered}
        errors = [e for e in self.errors if not any(text in e for text in expected)]
        assert errors == [], errors


@pytest.fixture
def browser_required() -> None:
    reason = _skip_reason()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture
async def open_viewer(
    browser_required: None, tmp_path: Path
) -> AsyncIterator[Callable[[Settings], Any]]:
    """``await open_viewer(settings)``: serve the app and open a fresh browser profile on it."""
    assert async_playwright is not None
    servers: list[TestServer] = []
    async with async_playwright() as playwright:
        contexts: list[BrowserContext] = []

        async def start(settings: Settings) -> Viewer:
            server = TestServer(create_app(settings), host="127.0.0.1")
            await server.start_server()
            servers.append(server)
            context = await playwright.chromium.launch_persistent_context(
                str(tmp_path / f"profile-{len(contexts)}"),
                executable_path=str(CHROMIUM),
                headless=True,
                args=CHROMIUM_ARGS,
                viewport={"width": 1200, "height": 900},
            )
            contexts.append(context)
            await context.add_init_script(RECORD_VIOLATIONS)
            page = context.pages[0] if context.pages else await context.new_page()
            page.set_default_timeout(30_000)
            errors: list[str] = []
            requests: list[str] = []
            page.on(
                "console",
                lambda m: (
                    errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None
                ),
            )
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.on("request", lambda r: requests.append(r.url))
            return Viewer(page, context, server, errors, requests)

        try:
            yield start
        finally:
            for context in contexts:
                await context.close()
            for server in servers:
                await server.close()


async def insert_finished(
    server: TestServer,
    *,
    status: JobStatus,
    algorithm: str = "poi_detection",
    parameters: Mapping[str, Any] | None = None,
    image_url: str | None = "http://images.invalid/slide.png",
    error: str | None = None,
    result: Mapping[str, Any] | None = None,
    client_id: str | None = None,
) -> str:
    """A finished job written straight to the store, as another replica would have left it."""
    store = server.app[STORE]
    now = time.time()
    running = Job(
        job_id=new_id(),
        algorithm=algorithm,
        parameters=dict(parameters or {}),
        status=JobStatus.RUNNING,
        image_url=image_url,
        client_id=client_id,
        attempts=1,
        started_at=now,
        lease_owner="primaa-elsewhere",
        lease_expires_at=now + 3600,
    )
    await store.create(running)
    final = running.moved_to(status, now=now, error=error)
    await store.finish(final, expected=JobStatus.RUNNING, result=result)
    return running.job_id
