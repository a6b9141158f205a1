"""Structured logs: one line per record, JSON by default (``log_format``).

Records carry their fields as ``extra`` attributes (``log.info("request", extra={...})``);
both formatters put every field on the record's single line.  Nothing a client sent can
break a line or drive a terminal: JSON escapes every control and non-ASCII character, and
the console format escapes control characters the same way (research S11).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from safelight.config import Settings

# Attributes every LogRecord has; anything else on a record is a field someone passed
# (uvicorn's "color_message" is its message again, with terminal colours).
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """The record's own fields; None-valued ones are left out."""
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and v is not None}


def _timestamp(record: logging.LogRecord) -> str:
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{whole}.{int(record.msecs):03d}Z"


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", ...fields, "exc"?}`` on one ASCII line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in fields_of(record).items():
            out.setdefault(key, value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=True, default=str, separators=(",", ":"))


def escape_controls(text: str) -> str:
    """Control characters (C0, DEL, C1) as ``\\xNN``; everything else unchanged."""
    if text.isprintable():
        return text
    return "".join(
        c if c.isprintable() or c == " " else c.encode("unicode_escape").decode("ascii")
        for c in text
    )


class ConsoleFormatter(logging.Formatter):
    """Readable: ``TIME LEVEL logger: msg key=value ...``, still one line per record."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [
            _timestamp(record),
            record.levelname,
            f"{record.name}:",
            escape_controls(record.getMessage()),
        ]
        parts += [f"{k}={escape_controls(str(v))}" for k, v in fields_of(record).items()]
        line = " ".join(parts)
        if record.exc_info:
            line += " exc=" + escape_controls(self.formatException(record.exc_info))
        return line


def configure_logging(settings: Settings) -> None:
    """Root handler on stderr in the chosen format; uvicorn's loggers propagate to it."""
    handler = logging.StreamHandler(sys.stderr)
    fmt = settings.log_format
    if fmt == "auto":  # a person at a terminal reads lines; a supervisor collects JSON
        fmt = "console" if sys.stderr.isatty() else "json"
    handler.setFormatter(JsonFormatter() if fmt == "json" else ConsoleFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
