"""``AsyncClient`` and ``Client``: the Safelight HTTP API from Python.

Both speak API.md through httpx and map every error response back to the
``safelight.errors`` tree (``safelight.client.errors``).  Each call is described once (a
``_Call``: method, path, body, how to read the answer) and sent by either client, so the
two cannot drift apart.  ``Client.events`` runs the async ladder on a private event-loop
thread (``safelight.client._sync``).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import urljoin

import httpx

import safelight
from safelight.client._sync import SyncEventStream
from safelight.client.errors import (
    ConnectionFailed,
    UnexpectedResponse,
    exception_from_problem,
    parse_problem,
)
from safelight.client.models import EventPage, Image, Job
from safelight.client.stream import Connector, EventStream, StreamSettings
from safelight.client.transports import (
    Connection,
    PollConnection,
    SSEConnection,
    WebSocketConnection,
)
from safelight.errors import IdempotencyInFlight
from safelight.types import Transport

T = TypeVar("T")

DEFAULT_SERVER = "http://127.0.0.1:8000"
USER_AGENT = f"safelight-client/{safelight.__version__}"
# Settings a job records and ``restart`` carries over (API.md, POST /api/jobs).
SETTING_FIELDS = (
    "prompt",
    "negative_prompt",
    "width",
    "height",
    "steps",
    "style",
    "seed",
    "num_images",
    "provider",
)


class TokenKeeper(Protocol):
    """Where manage tokens are kept: ``MemoryTokens`` (default) or ``TokenStore`` (file)."""

    def get(self, server: str, job_id: str) -> str | None: ...

    def put(self, server: str, job_id: str, token: str) -> None: ...


class MemoryTokens:
    """Tokens of jobs this client created, for this process only."""

    def __init__(self) -> None:
        self._tokens: dict[tuple[str, str], str] = {}

    def get(self, server: str, job_id: str) -> str | None:
        return self._tokens.get((server.rstrip("/"), job_id))

    def put(self, server: str, job_id: str, token: str) -> None:
        self._tokens[(server.rstrip("/"), job_id)] = token


@dataclass
class _Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    json: dict[str, Any] | None = None
    params: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float | None = None


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError as exc:
        raise UnexpectedResponse(
            f"{response.request.method} {response.request.url.path}: the body is not JSON",
            status=response.status_code,
        ) from exc
    if not isinstance(body, dict):
        raise UnexpectedResponse("expected a JSON object", status=response.status_code)
    return body


def _job(response: httpx.Response) -> Job:
    return Job.from_dict(_json_object(response))


def _raise_for_status(response: httpx.Response) -> None:
    if response.is_success:
        return
    raise exception_from_problem(
        response.status_code, parse_problem(response.content), response.headers
    )


def _connection_failed(exc: httpx.HTTPError, url: str) -> ConnectionFailed:
    kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "failed"
    return ConnectionFailed(f"connection to {url} {kind}: {exc or type(exc).__name__}")


def _setting_body(settings: Mapping[str, Any]) -> dict[str, Any]:
    # None means "not given": the server applies its default (a null seed or provider means
    # the same thing on the wire).
    return {k: v for k, v in settings.items() if v is not None}


def image_filename(job_id: str, index: int, image: Image) -> str:
    suffix = ".png" if image.content_type == "image/png" else ".img"
    return f"{job_id}-{index}{suffix}"


def _write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        # mkstemp makes the file private (0600); a saved image gets the user's usual mode.
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class _Spec:
    """What each API call is: shared by the sync and async clients."""

    def __init__(self, tokens: TokenKeeper, server: str) -> None:
        self.tokens = tokens
        self.server = server

    def options(self) -> _Call[dict[str, Any]]:
        return _Call("GET", "/api/options", _json_object)

    def create(self, body: dict[str, Any], idempotency_key: str) -> _Call[Job]:
        return _Call(
            "POST",
            "/api/jobs",
            _job,
            json=body,
            headers={"Idempotency-Key": idempotency_key},
        )

    def get(self, job_id: str) -> _Call[Job]:
        return _Call("GET", f"/api/jobs/{job_id}", _job)

    def _auth(self, job_id: str, token: str | None) -> dict[str, str]:
        token = token or self.tokens.get(self.server, job_id)
        # No token known: ask anyway, so the answer (403) comes from the server.
        return {"Authorization": f"Bearer {token}"} if token else {}

    def cancel(self, job_id: str, token: str | None) -> _Call[Job]:
        return _Call("POST", f"/api/jobs/{job_id}/cancel", _job, headers=self._auth(job_id, token))

    def retry(self, job_id: str, token: str | None) -> _Call[Job]:
        return _Call("POST", f"/api/jobs/{job_id}/retry", _job, headers=self._auth(job_id, token))

    def poll(self, job_id: str, after: int, wait: float, timeout: float) -> _Call[EventPage]:
        return _Call(
            "GET",
            f"/api/jobs/{job_id}/events",
            lambda r: EventPage.from_dict(_json_object(r)),
            params={"after": after, "wait": f"{wait:g}"},
            # The server holds a long poll for up to ``wait``: give it that and a margin.
            timeout=timeout + wait,
        )

    def family(self, job_id: str) -> _Call[dict[str, Any]]:
        return _Call("GET", f"/api/jobs/{job_id}/family", _json_object)

    def deliveries(self, job_id: str) -> _Call[dict[str, Any]]:
        return _Call("GET", f"/api/jobs/{job_id}/webhook-deliveries", _json_object)

    def image(self, url: str) -> _Call[bytes]:
        return _Call("GET", url, lambda r: r.content)

    def restart_body(self, parent: Job, changes: Mapping[str, Any]) -> dict[str, Any]:
        unknown = set(changes) - set(SETTING_FIELDS)
        if unknown:
            raise TypeError(f"restart() got unknown settings: {', '.join(sorted(unknown))}")
        settings = {k: parent.settings.raw.get(k) for k in SETTING_FIELDS}
        settings.update(changes)
        body = _setting_body(settings)
        body["parent_id"] = parent.id
        return body

    def remember(self, job: Job) -> Job:
        if job.manage_token:
            self.tokens.put(self.server, job.id, job.manage_token)
        return job


def _create_body(
    prompt: str,
    parent_id: str | None,
    settings: Mapping[str, Any],
    webhook: str | Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    body = _setting_body({"prompt": prompt, **settings})
    if parent_id is not None:
        body["parent_id"] = parent_id
    if webhook is not None:
        body["webhook"] = {"url": webhook} if isinstance(webhook, str) else dict(webhook)
    return body


class _Base:
    def __init__(
        self,
        base_url: str | None,
        *,
        timeout: float,
        stream_settings: StreamSettings | None,
        tokens: TokenKeeper | None,
        create_retries: int,
        retry_backoff_s: float,
    ) -> None:
        self.base_url = (base_url or DEFAULT_SERVER).rstrip("/")
        self.timeout = timeout
        self.stream_settings = stream_settings or StreamSettings()
        self.tokens: TokenKeeper = tokens if tokens is not None else MemoryTokens()
        self.create_retries = create_retries
        self.retry_backoff_s = retry_backoff_s
        self._spec = _Spec(self.tokens, self.base_url)
        self._headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}

    def url(self, path: str) -> str:
        """An absolute URL for a server path (``/api/jobs/...``) or an absolute URL."""
        return urljoin(self.base_url + "/", path.lstrip("/")) if "://" not in path else path

    def page_url(self, job_id: str) -> str:
        return self.url(f"/jobs/{job_id}")

    def _retry_delay(self, attempt: int) -> float:
        return float(self.retry_backoff_s * 2**attempt)


class AsyncClient(_Base):
    """The Safelight API over asyncio.

    ``async with AsyncClient("http://127.0.0.1:8000") as client:``

    * ``create(prompt, **settings)`` -> ``Job`` with ``manage_token`` (an Idempotency-Key is
      generated when not given, and a create that hit a connection error is re-sent with
      the same key, so it never makes two jobs);
    * ``get``, ``cancel``, ``retry``, ``restart(job_id, **changes)``, ``download``;
    * ``events(job_id, after=0, transport=None)`` -> ``EventStream`` (the ladder);
    * ``wait(job_id)`` -> the finished ``Job``.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        timeout: float = 10.0,
        stream_settings: StreamSettings | None = None,
        tokens: TokenKeeper | None = None,
        create_retries: int = 2,
        retry_backoff_s: float = 0.25,
        http_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(
            base_url,
            timeout=timeout,
            stream_settings=stream_settings,
            tokens=tokens,
            create_retries=create_retries,
            retry_backoff_s=retry_backoff_s,
        )
        self.http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=timeout,
            headers=self._headers,
            transport=http_transport,
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _send(self, call: _Call[T]) -> T:
        try:
            response = await self.http.request(
                call.method,
                call.path,
                json=call.json,
                params=call.params,
                headers=call.headers,
                timeout=call.timeout if call.timeout is not None else self.timeout,
            )
        except httpx.HTTPError as exc:
            raise _connection_failed(exc, self.url(call.path)) from exc
        _raise_for_status(response)
        return call.parse(response)

    async def options(self) -> dict[str, Any]:
        """``GET /api/options``: providers, styles, size presets, limits, ``transports``."""
        return await self._send(self._spec.options())

    async def create(
        self,
        prompt: str,
        *,
        parent_id: str | None = None,
        idempotency_key: str | None = None,
        webhook: str | Mapping[str, Any] | None = None,
        **settings: Any,
    ) -> Job:
        """``POST /api/jobs``.  ``settings``: negative_prompt, width, height, steps, style,
        seed, num_images, provider (None or absent: the server's default).  ``webhook``:
        a URL (terminal events) or ``{"url", "events"}`` (docs/webhooks.md)."""
        body = _create_body(prompt, parent_id, settings, webhook)
        return await self._create(body, idempotency_key)

    async def family(self, job_id: str) -> dict[str, Any]:
        """``GET /api/jobs/{id}/family``: the job's restart tree and attempts."""
        return await self._send(self._spec.family(job_id))

    async def webhook_deliveries(self, job_id: str) -> dict[str, Any]:
        """``GET /api/jobs/{id}/webhook-deliveries``: deliveries and every attempt."""
        return await self._send(self._spec.deliveries(job_id))

    async def _create(self, body: dict[str, Any], idempotency_key: str | None) -> Job:
        call = self._spec.create(body, idempotency_key or secrets.token_urlsafe(18))
        for attempt in range(self.create_retries + 1):
            try:
                return self._spec.remember(await self._send(call))
            except (ConnectionFailed, IdempotencyInFlight):
                # Same key, same body: the server answers with the job the first try made.
                if attempt == self.create_retries:
                    raise
                await asyncio.sleep(self._retry_delay(attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    async def get(self, job_id: str) -> Job:
        return await self._send(self._spec.get(job_id))

    async def cancel(self, job_id: str, *, token: str | None = None) -> Job:
        """Cancel (needs the manage token: given, or remembered from ``create``)."""
        return await self._send(self._spec.cancel(job_id, token))

    async def retry(self, job_id: str, *, token: str | None = None) -> Job:
        """Retry a failed job: the same job, next attempt.  At the cap this raises
        ``MaxAttemptsReached``."""
        return await self._send(self._spec.retry(job_id, token))

    async def restart(
        self, job_id: str, *, idempotency_key: str | None = None, **changes: Any
    ) -> Job:
        """A new job with ``parent_id=job_id`` and the parent's settings updated by
        ``changes`` (pass ``seed=None`` for a fresh seed)."""
        parent = await self.get(job_id)
        return await self._create(self._spec.restart_body(parent, changes), idempotency_key)

    async def poll_events(self, job_id: str, *, after: int = 0, wait: float = 0) -> EventPage:
        """One ``GET /api/jobs/{id}/events`` (``wait`` > 0: long poll)."""
        return await self._send(self._spec.poll(job_id, after, wait, self.timeout))

    async def download(self, job: Job | str, directory: str | os.PathLike[str]) -> list[Path]:
        """Save a completed job's images as ``<dir>/<job id>-<n>.png``; return the paths."""
        if isinstance(job, str) or not job.images:
            job = await self.get(job if isinstance(job, str) else job.id)
        target = Path(directory)
        await asyncio.to_thread(target.mkdir, parents=True, exist_ok=True)
        paths = []
        for index, image in enumerate(job.images, start=1):
            data = await self._send(self._spec.image(image.url))
            path = target / image_filename(job.id, index, image)
            await asyncio.to_thread(_write_atomically, path, data)
            paths.append(path)
        return paths

    def events(
        self,
        job_id: str,
        *,
        after: int = 0,
        transport: Transport | str | None = None,
        settings: StreamSettings | None = None,
    ) -> EventStream:
        """The job's events with ``seq > after``, live, until the terminal event."""
        return EventStream(
            self,
            job_id,
            after=after,
            transport=transport,
            settings=settings or self.stream_settings,
        )

    async def wait(
        self, job_id: str, *, after: int = 0, transport: Transport | str | None = None
    ) -> Job:
        """Follow the events to the end; return the job as it finished."""
        async with self.events(job_id, after=after, transport=transport) as stream:
            async for _ in stream:
                pass
        return await self.get(job_id)

    def connector(self, job_id: str, settings: StreamSettings) -> Connector:
        """How ``EventStream`` opens each transport (tests may pass their own)."""

        def connect(transport: Transport, after: int) -> Connection:
            if transport is Transport.WS:
                return WebSocketConnection(
                    self.base_url,
                    job_id,
                    after,
                    open_timeout_s=settings.ws_open_timeout_s,
                    dead_after_s=settings.dead_after_s,
                    headers={"User-Agent": USER_AGENT},
                )
            if transport is Transport.SSE:
                return SSEConnection(
                    self.http,
                    job_id,
                    after,
                    open_timeout_s=settings.sse_open_timeout_s,
                    dead_after_s=settings.dead_after_s,
                )
            return PollConnection(
                lambda cursor, wait: self.poll_events(job_id, after=cursor, wait=wait),
                after,
                wait_s=settings.long_poll_s,
            )

        return connect


class Client(_Base):
    """The Safelight API, synchronously; the same methods as ``AsyncClient``.

    ``events()`` returns a ``SyncEventStream``: a plain iterator driven by the async ladder
    on a private event-loop thread.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        timeout: float = 10.0,
        stream_settings: StreamSettings | None = None,
        tokens: TokenKeeper | None = None,
        create_retries: int = 2,
        retry_backoff_s: float = 0.25,
        http_transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(
            base_url,
            timeout=timeout,
            stream_settings=stream_settings,
            tokens=tokens,
            create_retries=create_retries,
            retry_backoff_s=retry_backoff_s,
        )
        self.http = httpx.Client(
            base_url=self.base_url,
            timeout=timeout,
            headers=self._headers,
            transport=http_transport,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _send(self, call: _Call[T]) -> T:
        try:
            response = self.http.request(
                call.method,
                call.path,
                json=call.json,
                params=call.params,
                headers=call.headers,
                timeout=call.timeout if call.timeout is not None else self.timeout,
            )
        except httpx.HTTPError as exc:
            raise _connection_failed(exc, self.url(call.path)) from exc
        _raise_for_status(response)
        return call.parse(response)

    def options(self) -> dict[str, Any]:
        return self._send(self._spec.options())

    def create(
        self,
        prompt: str,
        *,
        parent_id: str | None = None,
        idempotency_key: str | None = None,
        webhook: str | Mapping[str, Any] | None = None,
        **settings: Any,
    ) -> Job:
        """See ``AsyncClient.create``."""
        return self._create(_create_body(prompt, parent_id, settings, webhook), idempotency_key)

    def family(self, job_id: str) -> dict[str, Any]:
        """See ``AsyncClient.family``."""
        return self._send(self._spec.family(job_id))

    def webhook_deliveries(self, job_id: str) -> dict[str, Any]:
        """See ``AsyncClient.webhook_deliveries``."""
        return self._send(self._spec.deliveries(job_id))

    def _create(self, body: dict[str, Any], idempotency_key: str | None) -> Job:
        call = self._spec.create(body, idempotency_key or secrets.token_urlsafe(18))
        for attempt in range(self.create_retries + 1):
            try:
                return self._spec.remember(self._send(call))
            except (ConnectionFailed, IdempotencyInFlight):
                if attempt == self.create_retries:
                    raise
                time.sleep(self._retry_delay(attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    def get(self, job_id: str) -> Job:
        return self._send(self._spec.get(job_id))

    def cancel(self, job_id: str, *, token: str | None = None) -> Job:
        return self._send(self._spec.cancel(job_id, token))

    def retry(self, job_id: str, *, token: str | None = None) -> Job:
        return self._send(self._spec.retry(job_id, token))

    def restart(self, job_id: str, *, idempotency_key: str | None = None, **changes: Any) -> Job:
        parent = self.get(job_id)
        return self._create(self._spec.restart_body(parent, changes), idempotency_key)

    def poll_events(self, job_id: str, *, after: int = 0, wait: float = 0) -> EventPage:
        return self._send(self._spec.poll(job_id, after, wait, self.timeout))

    def download(self, job: Job | str, directory: str | os.PathLike[str]) -> list[Path]:
        if isinstance(job, str) or not job.images:
            job = self.get(job if isinstance(job, str) else job.id)
        target = Path(directory)
        target.mkdir(parents=True, exist_ok=True)
        paths = []
        for index, image in enumerate(job.images, start=1):
            data = self._send(self._spec.image(image.url))
            path = target / image_filename(job.id, index, image)
            _write_atomically(path, data)
            paths.append(path)
        return paths

    def events(
        self,
        job_id: str,
        *,
        after: int = 0,
        transport: Transport | str | None = None,
        settings: StreamSettings | None = None,
    ) -> SyncEventStream:
        return SyncEventStream(
            lambda: AsyncClient(
                self.base_url,
                timeout=self.timeout,
                stream_settings=self.stream_settings,
                tokens=self.tokens,
            ),
            job_id,
            after=after,
            transport=transport,
            settings=settings or self.stream_settings,
        )

    def wait(self, job_id: str, *, after: int = 0, transport: Transport | str | None = None) -> Job:
        with self.events(job_id, after=after, transport=transport) as stream:
            for _ in stream:
                pass
        return self.get(job_id)
