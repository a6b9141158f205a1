"""Workers: claim a queued job under a lease, run its provider in a thread, stream its
progress into the event log, and finish it - every write fenced by the lease token.

One ``Worker`` is one slot.  The provider runs in a thread; this coroutine is its
supervisor: it turns step callbacks into throttled ``progress`` events and at most about
one ``preview`` per second (encoded off the event loop), renews the lease (which also
carries ``cancel_requested`` back), and enforces the whole-job and stall deadlines.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from safelight.blobs import BlobStore
from safelight.errors import (
    Cancelled,
    InternalFailure,
    JobFailure,
    JobTimeout,
    LeaseLost,
    ProviderFailure,
    SafelightError,
    StorageFailure,
    Unavailable,
)
from safelight.jobs.service import JobService
from safelight.models import JobRecord
from safelight.providers.base import GenerationRequest, PreviewFn
from safelight.providers.faults import SimulatedCrash
from safelight.store.sql import SqlStore
from safelight.types import EventType, JobStatus

log = logging.getLogger("safelight.worker")


@dataclass
class AttemptState:
    """Shared between the provider thread and its supervisor coroutine."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    cancel: threading.Event = field(default_factory=threading.Event)
    cancel_reason: str = "user"
    step: int = 0
    total: int = 0
    last_step_mono: float = field(default_factory=time.monotonic)
    preview: tuple[int, Image.Image] | None = None
    last_preview_mono: float = 0.0


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

    async def run(self) -> None:
        """Claim and execute jobs until cancelled."""
        lease_ms = int(self.settings.lease_s * 1000)
        while True:
            self.service.work_available.clear()
            try:
                claimed = await self.store.write(
                    SqlStore.claim, self.name, lease_ms, eta=self.service.eta
                )
            except Unavailable:
                log.warning("store unavailable; worker %s backing off", self.name)
                claimed = None
            if claimed is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self.service.work_available.wait(), self.settings.worker_idle_poll_s
                    )
                continue
            job, events = claimed
            self.service.publish(events)
            try:
                await self.execute(job)
            except LeaseLost:
                log.info("worker %s lost the lease of job %s; stopped", self.name, job.id)
            except Unavailable as exc:
                # The store cannot write (disk full, database down): nothing about this
                # attempt can be recorded, so it is abandoned; once writes work again the
                # reaper requeues the job when its lease lapses (R13).
                log.warning(
                    "worker %s abandoned job %s: store unavailable (%s)", self.name, job.id, exc
                )
            except Exception:
                log.exception("worker %s: unexpected error on job %s", self.name, job.id)

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
            if preview is not None and now - state.last_preview_mono >= interval:
                image = preview()
                with state.lock:
                    state.preview = (step, image)
                    state.last_preview_mono = now

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
        tick = max(0.005, min(st.progress_interval_s, st.lease_s / 3, 0.25))
        lease_ms = int(st.lease_s * 1000)
        last_beat = time.monotonic()
        last_progress_write = 0.0
        written_step = 0
        step_times: list[float] = []
        while True:
            done, _ = await asyncio.wait({future}, timeout=tick)
            now = time.monotonic()
            with state.lock:
                step, total, last_step = state.step, state.total, state.last_step_mono
                preview, state.preview = state.preview, None
            if step != written_step and (
                now - last_progress_write >= st.progress_interval_s or step == total or done
            ):
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
                if await self.store.write(SqlStore.heartbeat, job.id, token, lease_ms):
                    state.cancel_reason = "user"
                    state.cancel.set()
                last_beat = now
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
        record, event = await self.store.write(
            SqlStore.worker_event, job.id, token, type_, data, status=status, **updates
        )
        self.service.publish([event])
        return record

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
        name = self.blobs.preview_name(job.id, job.attempt, step, "jpg")
        await loop.run_in_executor(self.threads, self.blobs.write, name, data)
        preview = {
            "step": step,
            "url": f"/api/jobs/{job.id}/previews/{job.attempt}/{step}",
            "width": width,
            "height": height,
        }
        await self._event(job, token, EventType.PREVIEW, preview, preview=preview)

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
                im.size != (s["width"], s["height"]) for im in images
            ):
                raise ProviderFailure(
                    "The generator returned images of the wrong number or size.",
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
                name = self.blobs.image_name(job.id, job.attempt, index)
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
