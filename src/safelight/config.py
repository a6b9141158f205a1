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
    # The most a long poll woken by a job's event waits for the events that follow it
    # (1 ms per poll parked on the job, up to this): with many pollers and many events per
    # second one answer then carries several (a request costs ~10x a streamed delivery;
    # docs/benchmarks.md); a lone poller is answered at once, 100 pollers within 0.1 s,
    # 1,000 or more at the plain polling cadence (poll_after_ms).  0 = never wait.
    long_poll_coalesce_ms: int = 1000
    sse_retry_min_ms: int = 1000
    sse_retry_max_ms: int = 4000
    stream_queue_size: int = 512
    send_timeout_s: float = 10.0
    # After a terminal event is written to every live stream, each stream's end (WS close
    # 1000, SSE end of body) follows this much later: ending a thousand connections at
    # once competes with delivering that last event to the rest (docs/benchmarks.md).
    # Clients stop at the terminal event; none waits for the end.  0 = at once.
    stream_end_delay_ms: int = 100
    max_streams_per_client: int = 64

    # Reliability (scale-out operations): every background loop backs off on store errors
    # between these bounds; a worker retries its heartbeat and fenced writes through a
    # database blip for as long as its lease can still be valid.
    store_retry_initial_s: float = 0.05
    store_retry_max_s: float = 2.0
    # On SIGTERM a worker stops at the provider's next step and hands its job back; past
    # this it hands it back anyway (a provider stuck in one step) and exits.
    shutdown_grace_s: float = 10.0
    # The LISTEN connection is probed this often, so a silently dead one is replaced.
    listener_probe_s: float = 5.0
    # PostgreSQL ends a session left idle inside a transaction this long (a frozen
    # process must not hold row locks that block the reaper).
    db_idle_tx_timeout_s: float = 5.0

    # Requests
    create_rate_per_min: int = 120
    idempotency_ttl_s: float = 24 * 3600.0
    min_free_bytes: int = 64 * 1024 * 1024

    # Blob store (previews + final images), chosen by name: local | postgres | s3
    # (safelight/blobs/__init__.py).  `local` is a directory under data_dir (in scale-out
    # a shared mount); `postgres` keeps chunked rows in the job database (or
    # blob_database_url); `s3` uses any S3-compatible store, credentials from boto3's
    # standard chain (AWS_* environment, profile, instance role), never from here.
    blob_store: str = "local"
    blob_chunk_bytes: int = 256 * 1024
    blob_database_url: str | None = None
    blob_s3_bucket: str | None = None
    blob_s3_prefix: str = ""
    blob_s3_endpoint_url: str | None = None
    blob_s3_region: str | None = None
    blob_s3_timeout_s: float = 10.0
    # Security and logging (issue 12).  docs/security.md explains each.
    # Host names this server answers to (DNS-rebinding guard).  Empty: loopback names
    # when bound to loopback; otherwise IP literals and localhost.  "*" turns it off.
    allowed_hosts: tuple[str, ...] = ()
    # Peers whose X-Forwarded-For / X-Forwarded-Proto are believed (uvicorn
    # forwarded_allow_ips).  Empty (default): proxy headers are ignored.
    trusted_proxies: tuple[str, ...] = ()
    # Lookups of unknown jobs per client per minute before 429 (id probing).
    miss_rate_per_min: int = 60
    # "json" (one JSON object per line) or "console" (readable, still one line each).
    log_format: str = "auto"
    # -- Webhooks (issue 9; docs/webhooks.md) --
    # Signing secret, Standard Webhooks form "whsec_<base64>".  None: generated once and
    # kept in data_dir/webhook_secret (mode 0600); scale-out nodes share the data dir.
    webhook_secret: str | None = None
    # Hostnames or IPs/CIDRs a webhook may reach although they are not public addresses
    # (loopback, private, link-local...).  Empty: public addresses only.
    webhook_allowed_hosts: tuple[str, ...] = ()
    webhook_connect_timeout_s: float = 5.0
    webhook_read_timeout_s: float = 10.0
    webhook_max_response_bytes: int = 64 * 1024
    # Extra CA certificates (PEM file) trusted for https receivers, e.g. an internal CA.
    webhook_ca_file: str | None = None
    # Retries: min(max, base * 2^(n-1)) scaled by a random factor in [0.5, 1].
    webhook_backoff_base_s: float = 2.0
    webhook_backoff_max_s: float = 600.0
    # A delivery that has not succeeded this long after its event gives up.
    webhook_retry_for_s: float = 6 * 3600.0
    # A sender's claim on a delivery; must outlast connect + read timeouts.
    webhook_lease_s: float = 30.0
    webhook_poll_s: float = 1.0
    webhook_concurrency: int = 8
    webhook_dispatch: bool = True
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
        cls,
        overrides: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
        defaults: Mapping[str, Any] | None = None,
    ) -> Settings:
        """Defaults (the class's, then a command's own ``defaults``, such as the host name
        for a worker's ``node_name``), then ``SAFELIGHT_<NAME>`` variables, then non-None
        ``overrides`` (flags)."""
        env = os.environ if environ is None else environ
        hints = get_type_hints(cls)
        values: dict[str, Any] = dict(defaults or {})
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
        if not 4096 <= self.blob_chunk_bytes <= 16 * 1024 * 1024:
            raise ValueError("blob_chunk_bytes must be between 4096 and 16 MiB")
        if self.blob_store == "s3" and not self.blob_s3_bucket:
            raise ValueError("blob store s3 needs blob_s3_bucket")
        if self.blob_store == "postgres" and not (self.blob_database_url or self.database_url):
            raise ValueError("blob store postgres needs database_url (or blob_database_url)")
        if self.log_format not in ("auto", "json", "console"):
            raise ValueError("log_format must be auto, json or console")
        if self.webhook_lease_s <= self.webhook_connect_timeout_s + self.webhook_read_timeout_s:
            # A sender still waiting on a receiver must never lose its claim to another
            # node mid-request (two senders at once for one delivery).
            raise ValueError("webhook_lease_s must exceed the webhook connect + read timeouts")
        if self.webhook_concurrency < 1:
            raise ValueError("webhook_concurrency must be >= 1")


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
