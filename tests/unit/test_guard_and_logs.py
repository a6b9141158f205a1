"""The Host policy's parsing rules and the log formatters' one-line guarantee."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from safelight.api.guard import HostPolicy, host_name
from safelight.api.security import RateLimiter
from safelight.logs import ConsoleFormatter, JsonFormatter, escape_controls


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("127.0.0.1:8000", "127.0.0.1"),
        ("LocalHost:80", "localhost"),
        ("[::1]:8000", "[::1]"),
        ("[::1]", "[::1]"),
        ("example.com.", "example.com"),
        ("::1", "::1"),
        ("evil.test:1:2", "evil.test:1:2"),
    ],
)
def test_host_name_strips_port_and_trailing_dot(header: str, name: str) -> None:
    assert host_name(header) == name


def test_loopback_bind_answers_only_loopback_names() -> None:
    policy = HostPolicy("127.0.0.1", ())
    for ok in ("127.0.0.1:1", "localhost:1", "[::1]:1", "127.5.6.7", None):
        assert policy.allows(ok), ok
    for bad in ("rebind.evil.test:1", "10.0.0.1:1", "127.0.0.1.evil.test", "", "[::ffff:1.2.3.4]"):
        assert not policy.allows(bad), bad


def test_public_bind_answers_ip_literals_and_listed_names() -> None:
    policy = HostPolicy("0.0.0.0", ("Safelight.Example",))
    for ok in ("10.0.0.1:8000", "[2001:db8::1]:80", "safelight.example", "localhost"):
        assert policy.allows(ok), ok
    assert not policy.allows("rebind.evil.test")
    assert HostPolicy("0.0.0.0", ("*",)).allows("anything.test")


def test_rate_limiter_spend_then_wait() -> None:
    limiter = RateLimiter(2)
    assert limiter.wait_s("a") == 0
    limiter.spend("a")
    limiter.spend("a")
    assert limiter.wait_s("a") >= 1
    assert limiter.wait_s("b") == 0


def record(msg: str, **fields: object) -> logging.LogRecord:
    rec = logging.LogRecord("safelight.test", logging.INFO, __file__, 1, msg, (), None)
    rec.__dict__.update(fields)
    return rec


NASTY = "a\nb\r\x1b[2J\x00\u2028\u202e\ud800z"


def test_json_formatter_one_ascii_line_with_fields() -> None:
    line = JsonFormatter().format(record(NASTY, path=NASTY, status=200))
    assert "\n" not in line and "\r" not in line and line.isascii()
    parsed = json.loads(line)
    assert parsed["msg"] == NASTY and parsed["path"] == NASTY and parsed["status"] == 200
    assert parsed["level"] == "info" and parsed["ts"].endswith("Z")


def test_json_formatter_keeps_the_traceback_on_the_line() -> None:
    try:
        raise ValueError("boom\nline")
    except ValueError:
        rec = record("failed")
        rec.exc_info = sys.exc_info()
    line = JsonFormatter().format(rec)
    assert "\n" not in line and "Traceback" in json.loads(line)["exc"]


def test_console_formatter_escapes_controls() -> None:
    line = ConsoleFormatter().format(record(NASTY, path=NASTY))
    assert not any(c in line for c in "\n\r\x1b\x00\u2028\u202e")
    assert "path=a\\nb\\r\\x1b[2J" in line
    assert escape_controls("plain text é") == "plain text é"
