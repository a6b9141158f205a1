"""Security scenarios in a real browser (Debian chromium through Playwright): S2
cross-site WebSocket, S3 CSRF (forms and no-cors fetch), DNS rebinding as a page sees it,
and S9 XSS through the prompt.  The attacker's pages come from a second local HTTP server
on another port (and, for rebinding, from a name Chromium resolves to 127.0.0.1)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.chaos.conftest import Scenario
from tests.conftest import LiveServer
from tests.integration.helpers import create, job_count, wait_status

playwright_sync = pytest.importorskip("playwright.sync_api")
from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402

from tests.browser import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

REBIND = "rebind.evil.test"
Server = Callable[..., LiveServer]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed")
    args = [
        *CHROMIUM_ARGS,
        # The attacker's rebinding name: what its DNS would answer after the rebind.
        f"--host-resolver-rules=MAP {REBIND} 127.0.0.1",
        # Chromium's own Local/Private Network Access checks would block the rebound
        # page's requests before they reach us; other browsers do not have them, so the
        # server must hold on its own.
        "--disable-features=LocalNetworkAccessChecks,BlockInsecurePrivateNetworkRequests,"
        "PrivateNetworkAccessSendPreflights,PrivateNetworkAccessRespectPreflightResults",
    ]
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=args, headless=True)
        yield b
        b.close()


class Attacker:
    """A plain HTTP server on another port serving the attacker's pages."""

    def __init__(self) -> None:
        self.pages: dict[str, bytes] = {}
        pages = self.pages

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = pages.get(self.path.split("?")[0])
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.httpd.server_address[1])
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def attacker() -> Iterator[Attacker]:
    a = Attacker()
    yield a
    a.close()


def open_page(browser: Browser, url: str) -> Page:
    context = browser.new_context()
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.goto(url)
    return page


def request_records(server: LiveServer) -> list[dict[str, Any]]:
    out = []
    for line in server.log().splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("msg") == "request":
                out.append(record)
    return out


# ---------------------------------------------------------------- S2

WS_PAGE = """<!doctype html><meta charset="utf-8"><title>evil</title><script>
window.result = {opened: 0, messages: 0, closed: 0, errors: 0};
const ws = new WebSocket("ws://127.0.0.1:%(port)d/api/jobs/%(job)s/ws?after=0");
ws.onopen = () => { window.result.opened++; };
ws.onmessage = () => { window.result.messages++; };
ws.onerror = () => { window.result.errors++; };
ws.onclose = () => { window.result.closed++; };
</script>"""


def test_s2_cross_site_websocket_from_a_real_page(
    scenario: Callable[..., Scenario], live_server: Server, browser: Browser, attacker: Attacker
) -> None:
    run = scenario("S2", "cross-site WebSocket from a page on another origin (Chromium)")
    server = live_server(step_delay_s=0.05, log_level="info")
    job = create(server.url, steps=40)
    attacker.pages["/ws"] = (WS_PAGE % {"port": server.port, "job": job["id"]}).encode()
    origins = [f"http://localhost:{attacker.port}", f"http://127.0.0.1:{attacker.port}"]
    for _ in run.trials():
        for origin in origins:  # cross-site, then same-site but cross-origin
            page = open_page(browser, f"{origin}/ws")
            page.wait_for_function("window.result.closed > 0")
            result = page.evaluate("window.result")
            run.count(lost=result["messages"] + result["opened"])
            page.context.close()
        # The same handshake from our own origin is accepted (the guard is not just closed).
        own = open_page(browser, f"{server.url}/jobs/{job['id']}")
        got = own.evaluate(
            """(url) => new Promise((done) => { const s = new WebSocket(url);
                 s.onmessage = () => done(1); s.onclose = () => done(0); })""",
            f"ws://127.0.0.1:{server.port}/api/jobs/{job['id']}/ws?after=0",
        )
        assert got == 1, "our own origin could not open the WebSocket"
        own.context.close()
    refused = [r for r in request_records(server) if r["method"] == "WS" and r["status"] == 403]
    assert len(refused) >= len(origins) * run.trials_run
    run.figure("foreign_handshakes_refused", len(refused))
    assert run.lost == 0, run.row()


# ---------------------------------------------------------------- S3

CSRF_PAGE = """<!doctype html><meta charset="utf-8"><title>evil</title><body>
<iframe name="sink1"></iframe><iframe name="sink2"></iframe><iframe name="sink3"></iframe>
<form id="f1" method="POST" enctype="text/plain" target="sink1"
      action="%(base)s/api/jobs"><input name='{"prompt":"csrf","x":"' value='"}'></form>
<form id="f2" method="POST" target="sink2" action="%(base)s/api/jobs/%(running)s/cancel">
  <input name="a" value="b"></form>
<form id="f3" method="POST" enctype="multipart/form-data" target="sink3"
      action="%(base)s/api/jobs/%(failed)s/retry"><input name="a" value="b"></form>
<script>
window.done = 0;
for (const id of ["f1", "f2", "f3"]) document.getElementById(id).submit();
const shots = [
  ["/api/jobs", '{"prompt":"csrf","steps":2,"width":64,"height":64}'],
  ["/api/jobs/%(running)s/cancel", ""],
  ["/api/jobs/%(failed)s/retry", ""],
];
Promise.allSettled(shots.map(([path, body]) => fetch("%(base)s" + path, {
  method: "POST", mode: "no-cors", credentials: "include",
  headers: {"Content-Type": "text/plain"}, body,
}))).then(() => { window.done = 1; });
</script>"""


def test_s3_csrf_forms_and_no_cors_fetch(
    scenario: Callable[..., Scenario], live_server: Server, browser: Browser, attacker: Attacker
) -> None:
    run = scenario("S3", "CSRF from another origin: forms and no-cors fetch change nothing")
    server = live_server(step_delay_s=0.5, concurrency=2, log_level="info")
    running = create(server.url, steps=100)
    failed = wait_status(
        server.url,
        create(server.url, prompt="x [[fail:provider@1#*]]", steps=2)["id"],
        {"failed"},
    )
    attacker.pages["/csrf"] = (
        CSRF_PAGE % {"base": server.url, "running": running["id"], "failed": failed["id"]}
    ).encode()
    origins = [f"http://localhost:{attacker.port}", f"http://127.0.0.1:{attacker.port}"]
    for _ in run.trials():
        before = job_count(server.data_dir)
        seen_before = len([r for r in request_records(server) if r["method"] == "POST"])
        for origin in origins:
            page = open_page(browser, f"{origin}/csrf")
            page.wait_for_function("window.done === 1")
            page.context.close()
        # Wait until every attacking POST reached the server (6 per origin).
        expected = seen_before + 6 * len(origins)
        deadline = time.monotonic() + 10
        while len([r for r in request_records(server) if r["method"] == "POST"]) < expected:
            assert time.monotonic() < deadline, "the attacking requests never reached the server"
            time.sleep(0.05)
        posts = [r for r in request_records(server) if r["method"] == "POST"][seen_before:]
        statuses = sorted({r["status"] for r in posts})
        changed = job_count(server.data_dir) - before
        r_state = httpx.get(f"{server.url}/api/jobs/{running['id']}", timeout=10).json()
        f_state = httpx.get(f"{server.url}/api/jobs/{failed['id']}", timeout=10).json()
        changed += int(r_state["cancel_requested"]) + int(f_state["status"] != "failed")
        run.count(duplicated=changed, lost=sum(1 for r in posts if r["status"] < 400))
        run.figure("attacking_posts", len(posts))
        run.figure("statuses", statuses)
    assert run.duplicated == 0 and run.lost == 0, run.row()


def test_dns_rebinding_page_cannot_create_jobs(
    scenario: Callable[..., Scenario], live_server: Server, browser: Browser
) -> None:
    """The attacker's page is at http://rebind.evil.test:PORT (same port as ours); after
    the rebind its name resolves to 127.0.0.1, so its same-origin fetches reach us with
    ``Host: rebind.evil.test:PORT`` and a matching Origin: only the Host check stops it."""
    run = scenario("S2", "DNS rebinding: a page on a rebound name cannot use the API")
    server = live_server(concurrency=0)
    origin = f"http://{REBIND}:{server.port}"
    context = browser.new_context()
    context.route(
        f"{origin}/",
        lambda route: route.fulfill(
            content_type="text/html", body="<!doctype html><title>rebound</title>"
        ),
    )
    page = context.new_page()
    for _ in run.trials():
        before = job_count(server.data_dir)
        page.goto(f"{origin}/")
        result = page.evaluate(
            """async () => {
              const r = await fetch("/api/jobs", {method: "POST",
                headers: {"Content-Type": "application/json"},
                body: JSON.stringify({prompt: "rebound", steps: 2, width: 64, height: 64})});
              const ws = await new Promise((done) => {
                const s = new WebSocket(location.origin.replace("http", "ws") +
                                        "/api/jobs/x/ws");
                s.onmessage = () => done("message"); s.onclose = () => done("closed");
              });
              return {status: r.status, body: await r.json(), ws};
            }"""
        )
        assert result["status"] == 400 and result["body"]["code"] == "host_not_allowed"
        assert result["ws"] == "closed"
        run.count(duplicated=job_count(server.data_dir) - before)
    context.close()
    assert run.duplicated == 0


# ---------------------------------------------------------------- S9

XSS = [
    '<img src=x onerror="window.__xss=1">',
    "<script>window.__xss=1</script>",
    "</script><script>window.__xss=1</script>",
    '"><img src=x onerror=window.__xss=1>',
    "'><svg onload=window.__xss=1>",
    "<svg><script>window.__xss=1</script></svg>",
    "javascript:window.__xss=1",
    '<a href="javascript:window.__xss=1">click</a>',
    '<iframe src="javascript:window.__xss=1"></iframe>',
    '<iframe srcdoc="<script>parent.__xss=1</script>"></iframe>',
    "<body onload=window.__xss=1>",
    "<details open ontoggle=window.__xss=1>",
    "<input autofocus onfocus=window.__xss=1>",
    "<math><mtext><table><mglyph><style><img src=x onerror=window.__xss=1>",
    "<style>@import 'javascript:window.__xss=1';</style>",
    '<object data="javascript:window.__xss=1">',
    '<embed src="data:text/html,<script>parent.__xss=1</script>">',
    '<meta http-equiv="refresh" content="0;url=javascript:window.__xss=1">',
    '<base href="javascript:window.__xss=1//">',
    "{{constructor.constructor('window.__xss=1')()}}",
    "${window.__xss=1}",
    "#{window.__xss=1}",
    "<%= window.__xss=1 %>",
    "\u202eRTL override <img src=x onerror=window.__xss=1>",
    "txt\u202egnp.exe<script>window.__xss=1</script>",
    "<scr<script>ipt>window.__xss=1</scr</script>ipt>",
    "&lt;img src=x onerror=window.__xss=1&gt;",
    "%3Cscript%3Ewindow.__xss=1%3C/script%3E",
    '<img src="x" onerror="&#119;indow.__xss=1">',
    "<svg/onload=window.__xss=1>",
    '<video><source onerror="window.__xss=1">',
    "<form><button formaction=javascript:window.__xss=1>x</button></form>",
    '"onmouseover="window.__xss=1',
    "data:text/html;base64,PHNjcmlwdD53aW5kb3cuX194c3M9MTwvc2NyaXB0Pg==",
]

JSON_VIEWS = 3
WATCH = """
window.__csp = 0;
document.addEventListener("securitypolicyviolation", (e) => {
  if (e.violatedDirective.startsWith("script")) window.__csp++;
});
"""
INJECTED = """() => ({
  xss: window.__xss || 0,
  csp: window.__csp || 0,
  injected: document.querySelectorAll(
    'img[src="x"], img[src=x], svg[onload], iframe, object, embed, video, base, '
    + 'meta[http-equiv], body[onload], details[ontoggle], input[onfocus], button[formaction]'
  ).length,
})"""


def test_s9_xss_through_the_prompt(
    scenario: Callable[..., Scenario], live_server: Server, browser: Browser
) -> None:
    run = scenario("S9", "XSS payloads in prompts: owner page, share page, raw views")
    server = live_server(concurrency=2)
    pairs = [(XSS[i], XSS[(i + 1) % len(XSS)]) for i in range(0, len(XSS), 2)]
    jobs = [create(server.url, prompt=p, negative_prompt=n, steps=2) for p, n in pairs]
    for job in jobs:
        wait_status(server.url, job["id"], {"completed"})
    tokens = {j["id"]: j["manage_token"] for j in jobs}
    owner = browser.new_context()
    owner.add_init_script(
        WATCH
        + f"for (const [id, t] of Object.entries({json.dumps(tokens)})) "
        + "localStorage.setItem('safelight:token:' + id, t);"
    )
    viewer = browser.new_context()  # the share link: no token
    viewer.add_init_script(WATCH)
    dialogs: list[str] = []
    for ctx in (owner, viewer):
        ctx.set_default_timeout(15_000)
    owner_page, viewer_page = owner.new_page(), viewer.new_page()
    for page in (owner_page, viewer_page):
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    for _ in run.trials():
        for job, (prompt, negative) in zip(jobs, pairs, strict=True):
            views = ((owner_page, "owner"), (viewer_page, "viewer"))
            for page, _ in views:  # both load at once
                page.goto(f"{server.url}/jobs/{job['id']}", wait_until="commit")
            for page, role in views:
                expect(page.locator("main")).to_have_attribute("data-status", "completed")
                page.click("#raw-details summary")
                page.wait_for_selector("#raw-body tr")
                shown = page.evaluate(
                    "[document.getElementById('set-prompt').textContent,"
                    " document.getElementById('set-negative').textContent,"
                    " document.getElementById('readonly-chip').hidden]"
                )
                found = page.evaluate(INJECTED)
                bad = found["xss"] + found["csp"] + found["injected"]
                if shown[0] != prompt.strip() or shown[1] != negative:
                    run.fail(f"{role}: prompt not shown literally for {prompt!r}")
                if shown[2] != (role == "owner"):
                    run.fail(f"{role}: view-only chip wrong")
                run.count(lost=bad)
            if job not in jobs[:JSON_VIEWS]:
                continue
            # The raw JSON of the job, as a browser shows it (served as application/json
            # under `default-src 'none'`, so a few suffice).
            viewer_page.goto(f"{server.url}/api/jobs/{job['id']}")
            raw = viewer_page.evaluate("JSON.parse(document.body.innerText).settings.prompt")
            found = viewer_page.evaluate(INJECTED)
            run.count(lost=found["xss"] + found["csp"] + found["injected"])
            if raw != prompt.strip():
                run.fail(f"raw JSON changed the prompt {prompt!r}")
        owner_page.goto(f"{server.url}/")  # the recent-jobs list shows prompts too
        owner_page.wait_for_selector("#generate-form[data-ready=true]")
        found = owner_page.evaluate(INJECTED)
        run.count(lost=found["xss"] + found["csp"] + found["injected"] + len(dialogs))
        run.figure("payloads", len(XSS))
        run.figure("page_views", len(jobs) * 2 + JSON_VIEWS + 1)
    owner.close()
    viewer.close()
    assert run.lost == 0 and run.passed == run.trials_run, run.row()


# ---------------------------------------------------------------- S10 (EventSource)

FOLLOW = """(url) => new Promise((done) => {
  const got = [];
  const es = new EventSource(url);
  const keep = (e) => got.push({type: e.type, id: e.lastEventId, data: e.data});
  es.onmessage = keep;
  for (const name of ["welcome", "ping", "completed", "succeeded"]) es.addEventListener(name, keep);
  // The stream ends after the terminal event (an error event, then a 204 reconnect):
  // everything the server sent is in `got` by then.
  const ended = () => got.some((g) => g.data && JSON.parse(g.data).type === "completed");
  es.onerror = () => {
    if (ended() || es.readyState === EventSource.CLOSED) { es.close(); done(got); }
  };
  setTimeout(() => { es.close(); done(got); }, 10000);
})"""


def test_s10_eventsource_sees_exactly_the_log(
    scenario: Callable[..., Scenario], live_server: Server, browser: Browser
) -> None:
    run = scenario("S10", "SSE field injection seen by a browser EventSource")
    server = live_server()
    injections = "x\nevent: completed\ndata: {}\n\n\rid: 999\r\r\ndata: spoof\r\n\r\n"
    for _ in run.trials():
        job = create(server.url, prompt=f"p {injections}", negative_prompt=injections, steps=3)
        job = wait_status(server.url, job["id"], {"completed"})
        page = open_page(browser, f"{server.url}/jobs/{job['id']}")
        got = page.evaluate(FOLLOW, f"/api/jobs/{job['id']}/stream")
        page.context.close()
        messages = [g for g in got if g["type"] == "message"]
        others = {g["type"] for g in got} - {"message", "welcome", "ping"}
        ids = [int(m["id"]) for m in messages]
        events = [json.loads(m["data"]) for m in messages]
        spoofed = int(ids != list(range(1, job["last_seq"] + 1))) + len(others)
        spoofed += sum(1 for e, i in zip(events, ids, strict=True) if e["seq"] != i)
        run.count(duplicated=spoofed)
        run.figure("events_seen", len(messages))
    assert run.duplicated == 0, run.row()
