"""A real webhook receiver for tests: a threaded HTTP server on a loopback port.

``plan`` decides each answer in turn (an int status, or ``("sleep", seconds, status)``
to answer late, e.g. after the sender's read timeout); once the plan is used up every
request gets ``default``.  Every request is recorded with its headers and body, and the
receiver counts overlapping requests per ``webhook-id`` (two senders at once).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Step = int | tuple[str, float, int]


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def json(self) -> dict[str, Any]:
        return dict(json.loads(self.body))

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]


@dataclass
class Receiver:
    plan: list[Step] = field(default_factory=list)
    default: int = 200
    hold_s: float = 0.0  # every request takes at least this long (overlap detection)
    received: list[Received] = field(default_factory=list)
    overlaps: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    _active: Counter[str] = field(default_factory=Counter)
    url: str = ""

    def next_step(self) -> Step:
        with self.lock:
            return self.plan.pop(0) if self.plan else self.default

    def wait_for(self, n: int, timeout: float = 20.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.received) >= n:
                    return list(self.received)
            time.sleep(0.02)
        raise AssertionError(f"expected {n} requests, got {len(self.received)}")


@contextmanager
def running(receiver: Receiver) -> Iterator[Receiver]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            wid = self.headers.get("webhook-id", "")
            with receiver.lock:
                receiver._active[wid] += 1
                if receiver._active[wid] > 1:
                    receiver.overlaps += 1
                receiver.received.append(
                    Received(
                        self.path,
                        {k.lower(): v for k, v in self.headers.items()},
                        body,
                        time.time(),
                    )
                )
            step = receiver.next_step()
            try:
                if receiver.hold_s:
                    time.sleep(receiver.hold_s)
                status = step
                if isinstance(step, tuple):
                    _, seconds, status = step
                    time.sleep(seconds)
                assert isinstance(status, int)
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
            except OSError:
                pass  # the sender gave up first (read timeout)
            finally:
                with receiver.lock:
                    receiver._active[wid] -= 1

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
