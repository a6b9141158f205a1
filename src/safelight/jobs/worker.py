"""Workers: claim a queued job under a lease, run its provider in a thread, stream its
progress into the event log, and finish it - every write fenced by the lease token.

One ``Worker`` is one slot.  The provider runs in a thread; this coroutine is its
supervisor: it turns step callbacks into throttled ``progress`` events and at most about
one ``preview`` per second (encoded off the event loop), renews the lease (which also
carries ``cancel_requested`` back), and enforces the whole-job and stall deadlines.

Database blips: the claim loop backs off on any store error and never dies.  Inside an
attempt, the heartbeat and every fenced write are retried through ``DatabaseUnavailable``
for as long as the lease can still be valid (judged conservatively from the start of the
last successful renewal); only then is the attempt given up, writing nothing (the reaper
requeues it).  Fencing keeps a retried write safe: if the lease was taken meanwhile, the
write raises ``LeaseLost``.

Shutdown (``service.stopping``): the slot stops claiming, the provider stops at its next
step, and the job is handed back (``SqlStore.release``: queued again, same attempt).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Concatenate, ParamSpec, TypeVar

from PIL import Image

from safelight.blobs import BlobStore, image_name, preview_name
from safelight.errors import (
    Cancelled,
    InternalFailure,
    JobFailure,
    JobTimeout,
    LeaseLost,
    ProviderFailure,
    SafelightError,
    StorageFailure,
    StorageUnavailable,
    Unavailable,
)
from safelight.jobs.service import JobService
from safelight.models import JobRecord
from safelight.providers.base import GenerationRequest, PreviewFn
from safelight.providers.faults import SimulatedCrash
from safelight.retry import Backoff
from safelight.store.sql import SqlStore
from safelight.types import EventType, JobStatus

log = logging.getLogger("safelight.worker")
P = ParamSpec("P")
T = TypeVar("T")


@dataclass
class AttemptState:
    """Shared between the provider thread and its supervisor coroutine.

    The supervisor does not poll for steps: before it waits it leaves a ``wake`` future
    here, and the provider thread resolves it (once) when a step is due for a progress
    write (``progress_due_mono`` has passed, or it is the last step) or a preview is
    ready.  Sleeping out a fixed tick instead made each progress cycle a tick longer
    than its commit and publish, so under load the writer fell behind a 30 ms step pace
    and coalesced steps it could have written (docs/benchmarks.md).
    """

    lock: threading.Lock = field(default_factory=threading.Lock)
    cancel: threading.Event = field(default_factory=threading.Event)
    cancel_reason: str = "user"
    step: int = 0
    total: int = 0
    last_step_mono: float = field(default_factory=time.monotonic)
    preview: tuple[int, Image.Image] | None = None
    last_preview_mono: float = 0.0
    progress_due_mono: float = 0.0
    wake: asyncio.Future[None] | None = None

    def nudge(self) -> None:
        """Provider thread: wake the supervisor if it waits (at most once per wait)."""
        with self.lock:
            wake, self.wake = self.wake, None
        if wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
                wake.get_loop().call_soon_threadsafe(_resolve, wake)


class Worker:
    def __init__(
        self,
        service: JobService,
        blobs: BlobStore,
        name: str,
        threads: ThreadPoolExecutor,
    ) -> None:
        self.service = service
        self.settings = service.settings
        self.store = service.store
        self.blobs = blobs
        self.name = name
        self.threads = threads
        # False while claims fail (the store is unreachable): /readyz reports it.
        self.can_claim = True
        # Monotonic time by which the current lease has surely not expired yet (the DB
        # set expiry = its now + lease, and its now is after our request started).
        self._lease_until = 0.0
        self._try_started = 0.0

    async def run(self) -> None:
        """Claim and execute jobs until the service is stopping.  Survives any error."""
        st = self.settings
        lease_ms = int(st.lease_s * 1000)
        stopping = self.service.stopping
        backoff = Backoff(st.store_retry_initial_s, st.store_retry_max_s)
        while not stopping.is_set():
            self.service.work_available.clear()
            started = time.monotonic()
            try:
                claimed = await self.store.write(
                    SqlStore.claim, self.name, lease_ms, eta=self.service.eta
                )
            except Exception as exc:
                self.can_claim = False
                delay = backoff.next()
                log.warning(
                    "worker %s: cannot claim (%s); retrying in %.2f s", self.name, exc, delay
                )
                await self._idle(delay)
                continue
            self.can_claim = True
            backoff.reset()
            if claimed is None:
                await self._idle(st.worker_idle_poll_s)
                continue
            job, events = claimed
            self._lease_until = started + st.lease_s
            self.service.publish(events)
            try:
                await self.execute(job)
            except LeaseLost as exc:
                log.warning("worker %s gave up job %s: %s", self.name, job.id, exc)
            except Unavailable as exc:
                # The store cannot write (disk full, database down): nothing about this
                # attempt can be recorded, so it is abandoned; once writes work again the
                # reaper requeues the job when its lease lapses (R13).
                log.warning(
                    "worker %s abandoned job %s: store unavailable (%s)", self.name, job.id, exc
                )
            except Exception:
                log.exception("worker %s: unexpected error on job %s", self.name, job.id)

    async def _idle(self, seconds: float) -> None:
        """Wait for work (or shutdown: the runtime sets ``work_available`` then too)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.service.work_available.wait(), seconds)

    async def _write(
        self, method: Callable[Concatenate[SqlStore, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """A fenced write, retried through database blips while the lease may be valid."""
        st = self.settings
        backoff = Backoff(st.store_retry_initial_s, st.store_retry_max_s)
        margin = min(1.0, st.lease_s / 10)
        while True:
            self._try_started = time.monotonic()
            try:
                return await self.store.write(method, *args, **kwargs)
            except StorageUnavailable:
                raise
            except Unavailable as exc:
                delay = backoff.next()
                if time.monotonic() + delay > self._lease_until - margin:
                    raise LeaseLost(
                        f"the database stayed unreachable until the lease could have "
                        f"expired ({exc})"
                    ) from exc
                log.warning("worker %s: write failed (%s); retrying", self.name, exc)
                await asyncio.sleep(delay)

    # -- one attempt ------------------------------------------------------------------

    async def execute(self, job: JobRecord) -> None:
        assert job.lease_token is not None
        token = job.lease_token
        s = job.settings
        provider = self.service.providers[s["provider"]]
        request = GenerationRequest(
            job_id=job.id,
            attempt=job.attempt,
            prompt=s["prompt"],
            negative_prompt=s["negative_prompt"],
            width=s["width"],
            height=s["height"],
            steps=s["steps"],
            style=s["style"],
            seed=s["seed"],
            num_images=s["num_images"],
        )
        state = AttemptState()
        self.service.cancel_signals[job.id] = state.cancel
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        future = loop.run_in_executor(
            self.threads, provider.generate, request, self._on_step_for(state)
        )
        # An abandoned attempt's thread ends later with Cancelled; nobody awaits it then.
        future.add_done_callback(_consume_outcome)
        try:
            outcome = await self._supervise(job, token, state, future, started)
        except BaseException:
            # Lease lost, shutdown, or a bug: abandon the provider thread (it stops at its
            # next step; anything it could still write is fenced).
            state.cancel_reason = "abandoned"
            state.cancel.set()
            raise
        finally:
            self.service.cancel_signals.pop(job.id, None)
        if outcome is None:
            return
        await self._upload(job, token, state, outcome, started)

    def _on_step_for(self, state: AttemptState) -> Any:
        interval = self.settings.preview_interval_s
        stopping = self.service.stopping

        def on_step(step: int, total: int, preview: PreviewFn | None) -> None:
            if state.cancel.is_set() or stopping.is_set():
                raise Cancelled()
            now = time.monotonic()
            with state.lock:
                state.step, state.total, state.last_step_mono = step, total, now
                due = now >= state.progress_due_mono or step == total
            if due:  # before the preview is made: the progress need not wait for it
                state.nudge()
            if preview is not None and now - state.last_preview_mono >= interval:
                image = preview()
                with state.lock:
                    state.preview = (step, image)
                    state.last_preview_mono = now
                state.nudge()

        return on_step

    async def _supervise(
        self,
        job: JobRecord,
        token: str,
        state: AttemptState,
        future: asyncio.Future[list[Image.Image]],
        started: float,
    ) -> list[Image.Image] | None:
        """Returns the images, or None when the attempt ended otherwise (already written)."""
        st = self.settings
        # Steps and previews wake the supervisor (AttemptState.nudge); the tick is for the
        # lease, the deadlines and shutdown.
        tick = max(0.005, min(st.lease_s / 3, 0.25))
        lease_ms = int(st.lease_s * 1000)
        last_beat = time.monotonic()
        last_progress_write = 0.0
        stopping = self.service.stopping
        stop_seen = 0.0
        written_step = 0
        step_times: list[float] = []
        loop = asyncio.get_running_loop()
        while True:
            wake: asyncio.Future[None] = loop.create_future()
            due_at = last_progress_write + st.progress_interval_s
            with state.lock:
                # Installed before the state is read, so a step landing after the read
                # still resolves it: no wake-up is lost.
                state.wake, state.progress_due_mono = wake, due_at
                step, total = state.step, state.total
                ready = state.preview is not None
            if step != written_step:
                ready = ready or step == total or time.monotonic() >= due_at
            if not ready:
                wait = tick
                if step != written_step:  # an early step: write it once the interval ends
                    wait = min(tick, max(0.0, due_at - time.monotonic()))
                either: set[asyncio.Future[Any]] = {future, wake}
                await asyncio.wait(either, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            done = future.done()
            now = time.monotonic()
            with state.lock:
                state.wake = None
                step, total, last_step = state.step, state.total, state.last_step_mono
                preview, state.preview = state.preview, None
            if step != written_step and (now >= due_at or step == total or done):
                step_times.append(now)
                per_step = (now - started) / max(step, 1)
                await self._event(
                    job,
                    token,
                    EventType.PROGRESS,
                    {
                        "step": step,
                        "total_steps": total,
                        "fraction": round(step / total, 4),
                        "eta_s": round((total - step) * per_step, 1),
                    },
                    progress={
                        "step": step,
                        "total_steps": total,
                        "fraction": round(step / total, 4),
                        "eta_s": round((total - step) * per_step, 1),
                    },
                )
                written_step, last_progress_write = step, now
            if preview is not None:
                try:
                    await self._write_preview(job, token, *preview)
                except StorageFailure as exc:
                    state.cancel.set()
                    await self._fail(job, token, exc)
                    return None
            if done:
                break
            if now - last_beat >= st.lease_s / 3:
                if await self._write(SqlStore.heartbeat, job.id, token, lease_ms):
                    state.cancel_reason = "user"
                    state.cancel.set()
                self._lease_until = self._try_started + st.lease_s
                last_beat = now
            if stopping.is_set():
                stop_seen = stop_seen or now
                if now - stop_seen > st.shutdown_grace_s:
                    # The provider is stuck inside one step: hand back anyway (its
                    # thread is abandoned; anything it could still write is fenced).
                    state.cancel_reason = "shutdown"
                    state.cancel.set()
                    await self._hand_back(job, token)
                    return None
            if state.cancel.is_set() and state.cancel_reason == "user":
                # Cooperative: the provider stops at its next step (see _on_step_for).
                pass
            timeout = None
            if now - started > st.job_deadline_s:
                timeout = JobTimeout(
                    f"The job did not finish within {st.job_deadline_s:g} s.",
                    code="job_deadline",
                    detail={"deadline_s": st.job_deadline_s},
                )
            elif now - last_step > st.stall_deadline_s:
                timeout = JobTimeout(
                    f"The generator made no progress for {st.stall_deadline_s:g} s.",
                    code="stalled",
                    detail={"stall_deadline_s": st.stall_deadline_s, "step": step},
                )
            if timeout is not None:
                # The thread may be stuck; abandon it (its next step raises Cancelled and
                # any write it could make is fenced).
                state.cancel_reason = "timeout"
                state.cancel.set()
                await self._fail(job, token, timeout)
                return None
        try:
            return future.result()
        except Cancelled:
            if stopping.is_set() and not state.cancel.is_set():
                await self._hand_back(job, token)
                return None
            await self._event(
                job,
                token,
                EventType.CANCELLED,
                {"reason": "user", "step": state.step},
                status=JobStatus.CANCELLED,
            )
            return None
        except SimulatedCrash:
            # Dev fault: behave exactly like a dead process - write nothing, stop renewing
            # the lease, and let the reaper requeue the job (reason worker_lost).
            log.warning("worker %s: simulated crash on job %s", self.name, job.id)
            return None
        except JobFailure as exc:
            await self._fail(job, token, exc)
            return None
        except Exception as exc:
            log.exception("provider raised on job %s", job.id)
            await self._fail(
                job,
                token,
                InternalFailure(
                    "The generator failed unexpectedly.",
                    detail={"exception": type(exc).__name__},
                ),
            )
            return None

    async def _event(
        self,
        job: JobRecord,
        token: str,
        type_: EventType,
        data: dict[str, Any],
        *,
        status: JobStatus | None = None,
        **updates: Any,
    ) -> JobRecord:
        lease_s = self.settings.lease_s
        record, event = await self._write(
            SqlStore.worker_event,
            job.id,
            token,
            type_,
            data,
            status=status,
            lease_ms=int(lease_s * 1000),
            **updates,
        )
        if record.status.active:  # the write renewed the lease (SqlStore.worker_event)
            self._lease_until = self._try_started + lease_s
        self.service.publish([event])
        return record

    async def _hand_back(self, job: JobRecord, token: str) -> None:
        """Shutdown: return the job to the queue at the same attempt (not counted)."""
        _, events = await self._write(
            SqlStore.release, job.id, token, self.name, eta=self.service.eta
        )
        self.service.publish(events)
        log.info("worker %s handed job %s back (shutting down)", self.name, job.id)

    async def _fail(self, job: JobRecord, token: str, exc: JobFailure) -> None:
        error = exc.to_error()
        await self._event(
            job, token, EventType.FAILED, {"error": error}, status=JobStatus.FAILED, error=error
        )

    async def _write_preview(
        self, job: JobRecord, token: str, step: int, image: Image.Image
    ) -> None:
        loop = asyncio.get_running_loop()
        data, width, height = await loop.run_in_executor(
            self.threads, _encode_preview, image, self.settings.preview_max_side
        )
        name = preview_name(job.id, job.attempt, step, "jpg")
        await loop.run_in_executor(self.threads, self._write_once, name, data)
        preview = {
            "step": step,
            "url": f"/api/jobs/{job.id}/previews/{job.attempt}/{step}",
            "width": width,
            "height": height,
        }
        await self._event(job, token, EventType.PREVIEW, preview, preview=preview)

    def _write_once(self, name: str, data: bytes) -> None:
        """Write a preview unless this attempt already has one for the step: after a
        hand-back the attempt runs again from step 0, and a preview URL that was served
        must keep its bytes (docs/API.md: image bytes never change under a URL)."""
        existing = self.blobs.open(name)
        if existing is not None:
            existing.close()
            return
        self.blobs.write(name, data)

    async def _upload(
        self,
        job: JobRecord,
        token: str,
        state: AttemptState,
        images: list[Image.Image],
        started: float,
    ) -> None:
        s = job.settings
        total = len(images)
        try:
            if total != s["num_images"] or any(
                not isinstance(im, Image.Image) or im.size != (s["width"], s["height"])
                for im in images
            ):
                raise ProviderFailure(
                    "The generator returned something other than images of the requested "
                    "number and size.",
                    code="invalid_output",
                    retryable=True,
                )
            await self._event(
                job,
                token,
                EventType.UPLOADING,
                {"images_done": 0, "images_total": total},
                status=JobStatus.UPLOADING,
            )
            loop = asyncio.get_running_loop()
            out: list[dict[str, Any]] = []
            for index, image in enumerate(images):
                if state.cancel.is_set():
                    await self._event(
                        job,
                        token,
                        EventType.CANCELLED,
                        {"reason": "user", "step": state.step},
                        status=JobStatus.CANCELLED,
                    )
                    return
                data = await loop.run_in_executor(self.threads, _encode_png, image)
                name = image_name(job.id, job.attempt, index)
                await loop.run_in_executor(self.threads, self.blobs.write, name, data)
                out.append(
                    {
                        "url": f"/api/jobs/{job.id}/images/{index}",
                        "width": image.width,
                        "height": image.height,
                        "content_type": "image/png",
                        "bytes": len(data),
                        "seed": s["seed"] + index,
                    }
                )
                if index + 1 < total:
                    await self._event(
                        job,
                        token,
                        EventType.UPLOADING,
                        {"images_done": index + 1, "images_total": total},
                    )
        except JobFailure as exc:
            await self._fail(job, token, exc)
            return
        except SafelightError:
            raise
        duration = round(time.monotonic() - started, 3)
        await self._event(
            job,
            token,
            EventType.COMPLETED,
            {"images": out, "duration_s": duration},
            status=JobStatus.COMPLETED,
            images=out,
        )
        self.service.record_duration(duration)


def _resolve(wake: asyncio.Future[None]) -> None:
    if not wake.done():
        wake.set_result(None)


def _consume_outcome(future: asyncio.Future[list[Image.Image]]) -> None:
    if not future.cancelled():
        future.exception()


def _encode_preview(image: Image.Image, max_side: int) -> tuple[bytes, int, int]:
    image = image.convert("RGB")
    if max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=80)
    return buf.getvalue(), image.width, image.height


def _encode_png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, "PNG", optimize=False, compress_level=6)
    return buf.getvalue()
