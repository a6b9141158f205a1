"""Settings, read once (flags over ``SAFELIGHT_*`` environment variables over defaults)
and passed down.  Nothing else in Safelight reads the environment.

Every interval is a setting so tests can run in milliseconds.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import platformdirs

from safelight.types import Transport


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("safelight", appauthor=False))


@dataclass(frozen=True)
class Settings:
    # Serving
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = field(default_factory=default_data_dir)
    # None: SQLite in data_dir.  postgresql://... for scale-out.
    database_url: str | None = None
    # Extra origins allowed to open WebSockets (the server's own origin always is).
    allowed_origins: tuple[str, ...] = ()
    transports: tuple[Transport, ...] = (Transport.WS, Transport.SSE, Transport.POLL)
    log_level: str = "info"

    # Workers
    concurrency: int = 1
    # Names this node's workers (lease owner, `running` events); unique per machine.
    node_name: str = "embedded"
    run_workers: bool = True
    provider: str = "builtin"
    providers: tuple[str, ...] = ("builtin",)
    max_attempts: int = 3
    queue_limit: int = 200
    job_deadline_s: float = 900.0
    stall_deadline_s: float = 120.0
    lease_s: float = 30.0
    reaper_interval_s: float = 5.0
    worker_idle_poll_s: float = 1.0
    progress_interval_s: float = 0.2
    preview_interval_s: float = 1.0
    preview_max_side: int = 384

    # Builtin provider
    step_delay_s: float = 0.25
    # Accept ``[[fail:...]]`` fault directives in prompts (tests and demos only).
    dev_faults: bool = False

    # Diffusers provider
    diffusers_model: str | None = None
    diffusers_device: str = "auto"
    diffusers_allow_download: bool = False
    diffusers_cancel_grace_s: float = 10.0

    # Streaming
    ping_interval_s: float = 15.0
    # WebSocket protocol ping/pong (uvicorn): a peer that stops reading stops answering,
    # and is dropped after interval + timeout.
    ws_ping_interval_s: float = 20.0
    ws_ping_timeout_s: float = 20.0
    poll_after_ms: int = 1000
    long_poll_max_s: float = 25.0
    sse_retry_min_ms: int = 1000
    sse_retry_max_ms: int = 4000
    stream_queue_size: int = 512
    send_timeout_s: float = 10.0
    max_streams_per_client: int = 64

    # Requests
    create_rate_per_min: int = 120
    idempotency_ttl_s: float = 24 * 3600.0
    min_free_bytes: int = 64 * 1024 * 1024

    # Polling answers (streaming/polls.py): shared per job and cursor, invalidated by the
    # job's next publish; the TTL only bounds staleness when publishes arrive late
    # (scale-out with the LISTEN connection down).
    poll_cache_ttl_s: float = 0.5

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "safelight.db"

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @classmethod
    def load(
        cls, overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
    ) -> Settings:
        """Defaults, then ``SAFELIGHT_<NAME>`` variables, then non-None ``overrides``."""
        env = os.environ if environ is None else environ
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(f"SAFELIGHT_{f.name.upper()}")
            if raw is not None:
                values[f.name] = _coerce(f.name, hints[f.name], raw)
        for key, value in (overrides or {}).items():
            if value is not None:
                values[key] = _coerce(key, hints[key], value) if isinstance(value, str) else value
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.concurrency < 0:
            raise ValueError("concurrency must be >= 0")
        if self.provider not in self.providers:
            raise ValueError(f"default provider {self.provider!r} is not in providers")
        if not self.transports:
            raise ValueError("at least one transport must be enabled")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")


def _coerce(name: str, hint: Any, raw: str) -> Any:
    text = str(hint)
    try:
        if hint is bool or text == "bool":
            low = raw.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        if hint is int:
            return int(raw)
        if hint is float:
            return float(raw)
        if hint is Path:
            return Path(raw).expanduser()
        if "tuple" in text:
            items = tuple(p.strip() for p in raw.split(",") if p.strip())
            if "Transport" in text:
                return tuple(Transport(i) for i in items)
            return items
        if text.startswith("str") or hint is str:
            return raw or None if "None" in text else raw
    except ValueError as exc:
        raise ValueError(f"setting {name}: cannot read {raw!r} as {text}") from exc
    return raw
