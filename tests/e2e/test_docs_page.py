"""``/docs`` works offline (issue 10): Swagger UI's assets come from our own origin, the
page runs under the strict docs CSP with no violation, and it lists the API's operations.
Chromium runs with background networking off and every non-loopback request is failed, so
a CDN dependency cannot load."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

pytest.importorskip("playwright.sync_api")
from playwright.sync_api import Browser, Route, expect, sync_playwright
from tests.conftest import LiveServer
from tests.e2e.test_ui import CHROMIUM, CHROMIUM_ARGS

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def docs_browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def test_docs_page_lists_operations_offline_under_csp(
    live_server: Callable[..., LiveServer], docs_browser: Browser
) -> None:
    server = live_server()
    ctx = docs_browser.new_context()
    page = ctx.new_page()
    problems: list[str] = []
    off_origin: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"pageerror: {exc}"))
    page.on(
        "console",
        lambda msg: problems.append(f"console: {msg.text}") if msg.type == "error" else None,
    )

    def only_loopback(route: Route) -> None:
        host = urlsplit(route.request.url).hostname
        if host in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            off_origin.append(route.request.url)
            route.abort()

    page.route("**/*", only_loopback)
    page.goto(f"{server.url}/docs")
    # Swagger UI renders one block per operation; these are the core routes of docs/API.md.
    ops = page.locator(".opblock")
    expect(ops.first).to_be_visible(timeout=15_000)
    summaries = page.locator(".opblock-summary-path").all_inner_texts()
    paths = {s.replace("\u200b", "").strip() for s in summaries}
    for expected in (
        "/api/jobs",
        "/api/jobs/{job_id}",
        "/api/jobs/{job_id}/cancel",
        "/api/jobs/{job_id}/retry",
        "/api/jobs/{job_id}/events",
        "/api/options",
    ):
        assert expected in paths, f"{expected} missing from /docs: {sorted(paths)}"
    assert off_origin == [], f"/docs reached off the origin: {off_origin}"
    assert problems == [], f"errors on /docs (CSP violations show here): {problems}"
    ctx.close()
