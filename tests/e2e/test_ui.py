"""Real-browser journeys (issue 4): Playwright driving Debian's chromium against a real
``safelight serve`` (the ``live_server`` fixture).  Every journey saves screenshots of its
main states to tests/e2e/artifacts/.

Run: pytest -m e2e tests/e2e
"""

from __future__ import annotations

import json
import os
import re
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

playwright_sync = pytest.importorskip("playwright.sync_api")
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright  # noqa: E402
from tests.browser import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

ARTIFACTS = Path(__file__).parent / "artifacts"
DOCS_SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
JOB_URL = re.compile(r".*/jobs/[A-Za-z0-9_-]+(\?.*)?$")


# ---------------------------------------------------------------- fixtures


# Module scope: sync Playwright keeps an event loop running in this thread while it is
# open, which would break asyncio tests collected after this module.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def new_context(browser: Browser) -> Iterator[Callable[..., BrowserContext]]:
    contexts: list[BrowserContext] = []

    def factory(**kwargs: Any) -> BrowserContext:
        options: dict[str, Any] = {
            "viewport": {"width": 1280, "height": 900},
            "accept_downloads": True,
            "device_scale_factor": 1,
        }
        options.update(kwargs)
        ctx = browser.new_context(**options)
        ctx.set_default_timeout(15_000)
        contexts.append(ctx)
        return ctx

    yield factory
    for ctx in contexts:
        ctx.close()


@pytest.fixture
def page(new_context: Callable[..., BrowserContext]) -> Page:
    pg = new_context().new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.on("dialog", lambda d: (errors.append(f"dialog: {d.message}"), d.dismiss()))
    pg.page_errors = errors  # type: ignore[attr-defined]
    return pg


def shot(page: Page, name: str, *, docs: bool = False, full_page: bool = False) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    # The README's pictures are refreshed on request only, so a test run never changes
    # tracked files: SAFELIGHT_UPDATE_SCREENSHOTS=1 scripts/test tests/e2e
    if docs and os.environ.get("SAFELIGHT_UPDATE_SCREENSHOTS") == "1":
        DOCS_SHOTS.mkdir(parents=True, exist_ok=True)
        (DOCS_SHOTS / f"{name}.png").write_bytes(path.read_bytes())


# ---------------------------------------------------------------- helpers


def fill_form(
    page: Page,
    prompt: str,
    *,
    size: tuple[int, int] | None = None,
    steps: int | None = None,
    seed: int | None = None,
    num_images: int | None = None,
    style_index: int | None = None,
    negative: str | None = None,
) -> None:
    expect(page.locator("#generate-form")).to_have_attribute("data-ready", "true")
    page.fill("#prompt", prompt)
    if negative is not None:
        page.fill("#negative_prompt", negative)
    if size is not None:
        page.check("#size-custom")
        page.fill("#width", str(size[0]))
        page.fill("#height", str(size[1]))
    if steps is not None:
        page.fill("#steps", str(steps))
    if style_index is not None:
        page.select_option("#style", index=style_index)
    if seed is not None:
        page.click("label[for=seed-fixed]")
        page.fill("#seed", str(seed))
    if num_images is not None:
        page.click(f"label[for=num-{num_images}]")


def generate(page: Page, server: Any, prompt: str, query: str = "", **form: Any) -> str:
    """Create a job through the Home form; return its id once its page is open."""
    page.goto(f"{server.url}/{query}")
    fill_form(page, prompt, **form)
    page.click("#generate")
    expect(page.locator("#submit-status")).to_contain_text("Job created")
    page.wait_for_url(JOB_URL)
    return page.url.split("/jobs/")[1].split("?")[0]


def api_create(server: Any, **body: Any) -> dict[str, Any]:
    body.setdefault("prompt", "a quiet harbour at dawn")
    r = httpx.post(f"{server.url}/api/jobs", json=body, timeout=10)
    assert r.status_code == 201, r.text
    return dict(r.json())


def api_job(server: Any, job_id: str) -> dict[str, Any]:
    r = httpx.get(f"{server.url}/api/jobs/{job_id}", timeout=10)
    assert r.status_code == 200, r.text
    return dict(r.json())


def wait_status(page: Page, text: str, timeout: float = 30_000) -> None:
    expect(page.locator("#status-text")).to_have_text(text, timeout=timeout)


def raw_seqs(page: Page) -> list[int]:
    return [int(s) for s in page.locator("#raw-body tr td.raw-seq").all_inner_texts()]


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def record_texts(page: Page, selector: str) -> None:
    """Record every text an element shows (so brief states can be asserted afterwards)."""
    page.evaluate(
        """(sel) => {
          window.__texts = window.__texts || {};
          const seen = (window.__texts[sel] = []);
          const note = () => {
            const el = document.querySelector(sel);
            const t = el ? el.textContent : null;
            if (t !== null && seen[seen.length - 1] !== t) seen.push(t);
          };
          note();
          new MutationObserver(note).observe(
            document.body, {subtree: true, childList: true, characterData: true});
        }""",
        selector,
    )


def recorded(page: Page, selector: str) -> list[str]:
    return list(page.evaluate("(sel) => (window.__texts || {})[sel] || []", selector))


# ---------------------------------------------------------------- journeys


def test_generate_progress_complete_download(
    live_server: Callable[..., Any], page: Page, tmp_path: Path
) -> None:
    server = live_server(step_delay_s=0.06)
    page.goto(server.url + "/")
    fill_form(
        page,
        "A lighthouse on a basalt cliff at dusk, long exposure, soft fog",
        size=(320, 192),
        steps=48,
        seed=1234,
        num_images=2,
        style_index=1,
    )
    expect(page.locator("#prompt-count")).to_have_text(re.compile(r"^63 / 2000$"))
    shot(page, "home", docs=True)

    # A double click makes one job: one request (the button locks) and one id.
    created: list[str] = []
    page.on(
        "response",
        lambda r: (
            created.append(r.json()["id"])
            if r.url.endswith("/api/jobs") and r.request.method == "POST" and r.status in (200, 201)
            else None
        ),
    )
    page.dblclick("#generate")
    expect(page.locator("#submit-status")).to_contain_text("Job created")
    job_id = page.locator("#created-id").inner_text()
    page.wait_for_url(JOB_URL)
    assert page.url.endswith(f"/jobs/{job_id}")
    assert set(created) == {job_id}
    token = page.evaluate(f"localStorage.getItem('safelight:token:{job_id}')")
    assert token, "the manage token is kept in this browser"

    expect(page.locator("#mode-label")).to_have_text("WebSocket")
    expect(page.locator("#progress-step")).to_contain_text(re.compile(r"Step \d+ of 48"))
    expect(page.locator("#preview-img")).to_be_visible()
    expect(page).to_have_title(re.compile(r"^\d+% · "))
    # Functions, not expression strings: a string would be eval'd in the page, which the
    # page's CSP (no 'unsafe-eval') forbids.
    page.wait_for_function(
        "() => document.querySelector('#progress-bar').getAttribute('aria-valuenow') >= 35"
    )
    shot(page, "progress-running", docs=True)

    wait_status(page, "Completed")
    expect(page.locator("#status-sub")).to_contain_text("2 images")
    expect(page).to_have_title(re.compile(r"^✓ Done"))
    expect(page.locator("#mode-label")).to_have_text("Finished · closed")
    results = page.locator("#result-list li")
    expect(results).to_have_count(2)
    expect(page.locator("#timeline li[data-type=completed]")).to_be_visible()
    for t in ("queued", "running", "uploading", "completed"):
        expect(page.locator(f"#timeline li[data-type={t}] time")).to_have_count(1)
    page.wait_for_function(
        "() => [...document.querySelectorAll('#result-list img')]"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )
    shot(page, "completed", docs=True)

    # Open: a new tab on the image; Download: a real file, a PNG of the chosen size.
    open_link = results.nth(0).locator("[data-action=open]")
    expect(open_link).to_have_attribute("target", "_blank")
    with page.expect_download() as dl:
        results.nth(0).locator("[data-action=download]").click()
    saved = tmp_path / "image.png"
    dl.value.save_as(saved)
    assert png_size(saved.read_bytes()) == (320, 192)

    # The raw view: seq 1..N in order, with transport; download as JSON.
    page.click("#raw-details summary")
    job = api_job(server, job_id)
    assert raw_seqs(page) == list(range(1, job["last_seq"] + 1))
    expect(page.locator("#raw-body tr").first.locator(".via")).to_have_text("ws")
    with page.expect_download() as dl:
        page.click("#raw-download")
    events = json.loads(Path(dl.value.path()).read_text())
    assert [e["seq"] for e in events] == list(range(1, job["last_seq"] + 1))
    assert {"seq", "type", "ts", "received_at", "transport", "data"} <= set(events[0])
    page.evaluate("document.querySelector('.raw-card').scrollIntoView({block: 'start'})")
    shot(page, "raw-events", docs=True)
    assert page.page_errors == []  # type: ignore[attr-defined]


def test_cancel_while_running(live_server: Callable[..., Any], page: Page) -> None:
    server = live_server(step_delay_s=0.15)
    job_id = generate(page, server, "A slow sunrise over the dunes", steps=150)
    expect(page.locator("#progress-step")).to_contain_text(re.compile(r"Step ([3-9]|\d\d+) of 150"))
    record_texts(page, "#status-text")
    record_texts(page, "#cancel-btn .btn-label")
    page.click("#cancel-btn")
    wait_status(page, "Cancelled")
    assert "Cancelling…" in recorded(page, "#cancel-btn .btn-label")
    assert "Cancelling…" in recorded(page, "#status-text")
    expect(page.locator("#cancel-btn")).to_be_hidden()
    expect(page.locator("#status-sub")).to_contain_text("Stopped at step")
    expect(page.locator("#mode-label")).to_have_text("Finished · closed")
    shot(page, "cancelled")

    # Nothing further is applied: the log ends with `cancelled` and stays put.
    page.click("#raw-details summary")
    count = len(raw_seqs(page))
    time.sleep(1.0)
    assert len(raw_seqs(page)) == count
    assert page.locator("#raw-body tr").last.get_attribute("data-type") == "cancelled"
    assert api_job(server, job_id)["status"] == "cancelled"


def test_provider_failure_then_retry_succeeds(live_server: Callable[..., Any], page: Page) -> None:
    server = live_server(step_delay_s=0.05)
    generate(page, server, "A fox in the snow [[fail:provider@3]]", steps=10)
    wait_status(page, "Failed")
    expect(page.locator("#error-card")).to_be_visible()
    expect(page.locator("#error-type")).to_have_text("Provider error")
    retry = page.locator("#retry-btn")
    expect(retry).to_be_enabled()
    expect(retry).to_contain_text("Attempt 2 of 3")
    expect(page.locator("#status-sub")).to_contain_text("Attempt 1 of 3")
    shot(page, "failed-retry", docs=True)

    retry.click()
    wait_status(page, "Completed")
    expect(page.locator("#status-sub")).to_contain_text("Attempt 2 of 3")
    expect(page.locator("#attempt-text")).to_have_text("2 of 3")
    expect(page.locator("#timeline li[data-type=retry]")).to_have_count(1)
    expect(page.locator("#error-card")).to_be_hidden()
    shot(page, "retried-completed")


def test_retry_disabled_at_the_cap(live_server: Callable[..., Any], page: Page) -> None:
    server = live_server(step_delay_s=0.03)
    generate(page, server, "Always failing [[fail:provider@2#*]]", steps=6)
    for attempt in (1, 2):
        wait_status(page, "Failed")
        expect(page.locator("#status-sub")).to_contain_text(f"Attempt {attempt} of 3")
        page.click("#retry-btn")
        expect(page.locator("#status-sub")).not_to_contain_text(f"Attempt {attempt} of 3")
    wait_status(page, "Failed")
    expect(page.locator("#status-sub")).to_contain_text("Attempt 3 of 3")
    expect(page.locator("#retry-btn")).to_be_disabled()
    expect(page.locator("#retry-reason")).to_be_visible()
    expect(page.locator("#retry-reason")).to_contain_text("all 3 attempts have been used")
    expect(page.locator("#restart-btn")).to_be_enabled()
    shot(page, "retry-cap")


def test_websocket_blocked_falls_back_to_sse(
    live_server: Callable[..., Any], new_context: Callable[..., BrowserContext]
) -> None:
    server = live_server(step_delay_s=0.1)
    job = api_create(server, prompt="WebSocket is blocked here", steps=30)
    page = new_context().new_page()
    page.route_web_socket(re.compile(r".*/ws(\?.*)?$"), lambda ws: ws.close())
    start = time.monotonic()
    page.goto(f"{server.url}/jobs/{job['id']}")
    expect(page.locator("#mode-label")).to_have_text("SSE", timeout=4_000)
    assert time.monotonic() - start < 4.0
    expect(page.locator("#mode-reason")).to_contain_text("Stepped down from WebSocket")
    shot(page, "sse-fallback")
    wait_status(page, "Completed")
    page.click("#raw-details summary")
    assert raw_seqs(page) == list(range(1, api_job(server, job["id"])["last_seq"] + 1))


def test_websocket_and_sse_blocked_falls_back_to_polling(
    live_server: Callable[..., Any], new_context: Callable[..., BrowserContext]
) -> None:
    server = live_server(step_delay_s=0.1)
    job = api_create(server, prompt="Only polling gets through", steps=40)
    page = new_context().new_page()
    page.route_web_socket(re.compile(r".*/ws(\?.*)?$"), lambda ws: ws.close())
    page.route("**/stream*", lambda route: route.abort())
    start = time.monotonic()
    page.goto(f"{server.url}/jobs/{job['id']}")
    expect(page.locator("#mode-label")).to_have_text("Polling", timeout=8_000)
    assert time.monotonic() - start < 8.0
    expect(page.locator("#mode-reason")).to_contain_text("SSE")
    shot(page, "polling-fallback")
    wait_status(page, "Completed")
    page.click("#raw-details summary")
    assert raw_seqs(page) == list(range(1, api_job(server, job["id"])["last_seq"] + 1))
    assert set(page.locator("#raw-body .via").all_inner_texts()) <= {"poll", "poll (backfill)"}


def test_forced_transport_and_switch_to_polling(
    live_server: Callable[..., Any], page: Page
) -> None:
    server = live_server(step_delay_s=0.1)
    job = api_create(server, prompt="Forced onto SSE", steps=40)
    page.goto(f"{server.url}/jobs/{job['id']}?transport=sse")
    expect(page.locator("#mode-label")).to_have_text("SSE")
    expect(page.locator("#mode-reason")).to_contain_text("chosen by the link")
    page.click("#mode-badge")
    expect(page.locator("#conn-panel")).to_be_visible()
    page.click("#conn-poll")
    expect(page.locator("#mode-label")).to_have_text("Polling")
    wait_status(page, "Completed")
    page.click("#raw-details summary")
    assert raw_seqs(page) == list(range(1, api_job(server, job["id"])["last_seq"] + 1))


def test_server_killed_and_restarted_mid_job(live_server: Callable[..., Any], page: Page) -> None:
    server = live_server(step_delay_s=0.1)
    job_id = generate(
        page, server, "Survives a server crash", steps=60, query="?backoff_cap_ms=1500"
    )
    expect(page.locator("#mode-label")).to_have_text("WebSocket")
    expect(page.locator("#progress-step")).to_contain_text(re.compile(r"Step (1\d|[2-9]\d) of 60"))
    server.kill()
    expect(page.locator("#net-banner")).to_be_visible(timeout=15_000)
    expect(page.locator("#net-banner")).to_contain_text("Network error")
    expect(page.locator("#mode-label")).to_contain_text("Offline")
    shot(page, "offline")
    server.start()
    expect(page.locator("#net-banner")).to_be_hidden(timeout=20_000)
    wait_status(page, "Completed", timeout=60_000)
    page.click("#raw-details summary")
    last_seq = api_job(server, job_id)["last_seq"]
    assert raw_seqs(page) == list(range(1, last_seq + 1)), "no gap, no repeat"
    expect(page.locator("#raw-audit")).to_contain_text("in order, no gaps")
    shot(page, "recovered")


def test_shared_link_is_read_only(
    live_server: Callable[..., Any], page: Page, new_context: Callable[..., BrowserContext]
) -> None:
    server = live_server(step_delay_s=0.1)
    job_id = generate(page, server, "Shared with a friend", steps=40)
    expect(page.locator("#cancel-btn")).to_be_visible()

    friend = new_context(color_scheme="dark").new_page()
    friend.goto(f"{server.url}/jobs/{job_id}")
    expect(friend.locator("#readonly-chip")).to_be_visible()
    expect(friend.locator("#readonly-note")).to_be_visible()
    expect(friend.locator("#progress-step")).to_contain_text(re.compile(r"Step \d+ of 40"))
    expect(friend.locator("#cancel-btn")).to_be_hidden()
    expect(friend.locator("#retry-btn")).to_be_hidden()
    friend.wait_for_function(
        "() => document.querySelector('#progress-bar').getAttribute('aria-valuenow') >= 30"
    )
    shot(friend, "shared-readonly-dark", docs=True)
    wait_status(friend, "Completed")
    expect(friend.locator("#cancel-btn")).to_be_hidden()

    # The friend can still restart it as their own job, which they then control.
    friend.click("#restart-btn")
    friend.wait_for_url(re.compile(r".*/jobs/(?!" + re.escape(job_id) + r")[A-Za-z0-9_-]+$"))
    new_id = friend.url.split("/jobs/")[1]
    assert api_job(server, new_id)["parent_id"] == job_id
    expect(friend.locator("#readonly-chip")).to_be_hidden()


def test_share_link_copy(
    live_server: Callable[..., Any], new_context: Callable[..., BrowserContext]
) -> None:
    server = live_server(step_delay_s=0.01)
    job = api_create(server, prompt="Copy my link", steps=3)
    ctx = new_context()
    ctx.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    page = ctx.new_page()
    page.goto(f"{server.url}/jobs/{job['id']}")
    wait_status(page, "Completed")
    page.click("#share-btn")
    expect(page.locator("#action-status")).to_contain_text("copied")
    assert page.evaluate("navigator.clipboard.readText()") == f"{server.url}/jobs/{job['id']}"

    # Where the Clipboard API is refused, the link is shown selected instead.
    page.evaluate(
        "navigator.clipboard.writeText = () => Promise.reject(new Error('denied'));"
        "document.execCommand = () => false;"
    )
    page.click("#share-btn")
    expect(page.locator("#share-url")).to_be_visible()
    expect(page.locator("#share-url")).to_have_value(f"{server.url}/jobs/{job['id']}")


def test_edit_and_restart_prefills_the_form(live_server: Callable[..., Any], page: Page) -> None:
    server = live_server(step_delay_s=0.01)
    options = httpx.get(f"{server.url}/api/options").json()
    provider = next(p for p in options["providers"] if p["name"] == options["default_provider"])
    style = provider["styles"][-1]
    job = api_create(
        server,
        prompt="An old tram in the rain",
        negative_prompt="people",
        width=256,
        height=384,
        steps=7,
        style=style,
        seed=42,
        num_images=2,
    )
    page.goto(f"{server.url}/jobs/{job['id']}")
    wait_status(page, "Completed")
    page.click("#edit-btn")
    page.wait_for_url(re.compile(r".*/\?from=.+"))
    expect(page.locator("#from-banner")).to_be_visible()
    expect(page.locator("#prompt")).to_have_value("An old tram in the rain")
    expect(page.locator("#negative_prompt")).to_have_value("people")
    expect(page.locator("#width")).to_have_value("256")
    expect(page.locator("#height")).to_have_value("384")
    expect(page.locator("#steps")).to_have_value("7")
    expect(page.locator("#style")).to_have_value(style)
    expect(page.locator("#seed-fixed")).to_be_checked()
    expect(page.locator("#seed")).to_have_value("42")
    expect(page.locator("#num-2")).to_be_checked()
    shot(page, "edit-restart-prefilled")

    page.fill("#prompt", "An old tram in the snow")
    page.click("#generate")
    page.wait_for_url(JOB_URL)
    new_id = page.url.split("/jobs/")[1]
    new = api_job(server, new_id)
    assert new["parent_id"] == job["id"]
    assert new["settings"]["prompt"] == "An old tram in the snow"
    settings = new["settings"]
    assert (settings["width"], settings["height"], settings["seed"]) == (256, 384, 42)


XSS = (
    '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'
    '"><svg onload="window.__xss=3"></svg>&lt;b&gt;{{7*7}}'
)


def test_html_payload_is_shown_literally(live_server: Callable[..., Any], page: Page) -> None:
    server = live_server(step_delay_s=0.01)
    generate(page, server, XSS, steps=3)
    wait_status(page, "Completed")
    expect(page.locator("#set-prompt")).to_have_text(XSS)
    assert page.evaluate("window.__xss") is None
    assert page.locator("img[src=x]").count() == 0
    assert page.locator("main script, main svg[onload]").count() == 0
    page.goto(server.url + "/")
    expect(page.locator("#recent-list li").first).to_contain_text("<img src=x")
    assert page.evaluate("window.__xss") is None
    assert page.page_errors == []  # type: ignore[attr-defined]


def test_validation_errors_land_on_their_fields(
    live_server: Callable[..., Any], page: Page
) -> None:
    server = live_server()
    page.goto(server.url + "/")
    fill_form(page, "   ", size=(100, 4096), steps=0)
    page.click("#generate")
    for field in ("prompt", "width", "height", "steps"):
        expect(page.locator(f"#{field}-error")).to_be_visible()
        expect(page.locator(f"#{field}")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#form-error")).to_contain_text("highlighted fields")
    assert "/jobs/" not in page.url
    expect(page.locator("#prompt")).to_be_focused()
    shot(page, "validation-errors", docs=True, full_page=True)

    # A network failure says so and keeps what was typed; the next press works.
    page.route("**/api/jobs", lambda route: route.abort())
    fill_form(page, "Kept through a network error", size=(512, 512), steps=5)
    page.click("#generate")
    expect(page.locator("#form-error")).to_contain_text("Network error")
    expect(page.locator("#prompt")).to_have_value("Kept through a network error")
    expect(page.locator("#generate")).to_be_enabled()
    page.unroute("**/api/jobs")
    page.click("#generate")
    page.wait_for_url(JOB_URL)


def test_phone_width_and_keyboard(
    live_server: Callable[..., Any], new_context: Callable[..., BrowserContext]
) -> None:
    server = live_server(step_delay_s=0.02)
    page = new_context(
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
    ).new_page()
    page.goto(server.url + "/")
    expect(page.locator("#generate-form")).to_have_attribute("data-ready", "true")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    shot(page, "home-phone", full_page=True)
    # Keyboard only: the prompt, then Ctrl+Enter generates.
    page.keyboard.press("Tab")
    expect(page.locator(".skip-link")).to_be_focused()
    page.keyboard.press("Enter")  # skip to content
    page.keyboard.press("Tab")
    expect(page.locator("#prompt")).to_be_focused()
    page.keyboard.type("Typed with the keyboard only")
    page.keyboard.press("Control+Enter")
    page.wait_for_url(JOB_URL)
    wait_status(page, "Completed")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    shot(page, "completed-phone", full_page=True)


# ---------------------------------------------------------------- issue 9: family + webhooks


def test_family_strip_compare_and_webhook_deliveries(
    live_server: Callable[..., Any], page: Page
) -> None:
    from tests.integration.receiver import Receiver, running

    with running(Receiver(plan=[500])) as receiver:
        server = live_server(
            step_delay_s=0.01,
            webhook_allowed_hosts="127.0.0.1",
            webhook_backoff_base_s=0.05,
            webhook_poll_s=0.05,
        )
        hook = {"url": f"{receiver.url}?token=s3cret", "events": ["failed", "completed"]}
        root = api_create(
            server, prompt="A fox in the snow [[fail:provider@2]]", steps=4, webhook=hook
        )
        deadline = time.monotonic() + 30
        while api_job(server, root["id"])["status"] != "failed":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        r = httpx.post(
            f"{server.url}/api/jobs/{root['id']}/retry",
            headers={"Authorization": f"Bearer {root['manage_token']}"},
        )
        assert r.status_code == 202
        edited_prompt = f"A red fox in the snow {XSS}"
        child = api_create(server, prompt=edited_prompt, steps=4, parent_id=root["id"])
        for job_id in (root["id"], child["id"]):
            while api_job(server, job_id)["status"] != "completed":
                assert time.monotonic() < deadline
                time.sleep(0.05)

        csp: list[str] = []
        page.on(
            "console", lambda m: csp.append(m.text) if "Content Security Policy" in m.text else None
        )
        # A share-link viewer (no token in this browser) of the restart.
        page.goto(f"{server.url}/jobs/{child['id']}")
        wait_status(page, "Completed")
        strip = page.locator("#family-strip li")
        expect(strip).to_have_count(4)
        texts = [t.strip() for t in page.locator("#family-strip li a").all_inner_texts()]
        assert texts[0] == "Attempt 1 failed (provider)"
        assert texts[1] == "Attempt 2 completed"
        assert texts[2] == "Restarted with edited prompt"
        assert texts[3] == "Attempt 1 completed"
        links = page.locator("#family-strip li a")
        assert links.nth(0).get_attribute("href") == f"/jobs/{root['id']}"
        assert links.nth(3).get_attribute("href") == f"/jobs/{child['id']}"
        assert links.nth(3).get_attribute("aria-current") == "step"
        # The prompt diff is text: the XSS payload is shown literally, never parsed.
        expect(page.locator(".family-diff ins").first).to_contain_text("red")
        expect(page.locator(".family-diff")).to_contain_text("<img src=x")
        assert page.evaluate("window.__xss") is None
        assert page.locator("img[src=x]").count() == 0

        # Compare: this job's image next to its parent's, both really loaded.
        expect(page.locator("#compare")).to_be_visible()
        assert page.locator("#compare-a option").count() == 2
        expect(page.locator("#compare-cap-b")).to_have_text("this job · attempt 1")
        expect(page.locator("#compare-cap-a")).to_have_text(f"job {root['id'][:6]} · attempt 2")
        page.wait_for_function(
            "() => ['a', 'b'].every("
            "s => document.getElementById('compare-img-' + s).naturalWidth > 0)"
        )
        page.select_option("#compare-a", index=1)
        expect(page.locator("#compare-cap-a")).to_have_text("this job · attempt 1")
        shot(page, "family-compare", full_page=True)

        # The root's raw view lists its webhook deliveries and every attempt.
        page.click("#family-strip li a >> nth=0")
        page.wait_for_url(re.compile(rf".*/jobs/{re.escape(root['id'])}$"))
        page.click("#raw-details summary")
        rows = page.locator("#hooks-body tr")
        expect(rows).to_have_count(2)
        expect(page.locator("#hooks-body tr[data-status=delivered]")).to_have_count(2)
        expect(page.locator("#hooks-target")).to_contain_text("/hook?…")
        expect(page.locator("#hooks-target")).not_to_contain_text("s3cret")
        expect(rows.first).to_contain_text("#1 retrying: HTTP 500")
        expect(rows.first).to_contain_text("#2 delivered: HTTP 200")
        shot(page, "webhook-deliveries")
        assert csp == []
        assert page.page_errors == []  # type: ignore[attr-defined]
