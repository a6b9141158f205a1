"""``DiffusersProvider``: the parent side of the diffusers provider.

The pipeline lives in a long-lived model process (``child.py``, ``spawn`` start method) so
the model stays warm between jobs and a stuck or crashed pipeline can be killed without
taking the server down.  ``generate`` runs in a worker thread: it sends one request, then
relays the child's step messages to ``on_step`` until the images arrive.

* ``on_step`` raising (``Cancelled``, or anything else): the child is told to stop through a
  shared flag checked at every step end; if it has not acknowledged within
  ``diffusers_cancel_grace_s`` it is killed (a fresh one starts on the next job).  The
  exception is then re-raised unchanged.
* No message from the child for ``stall_deadline_s``: the child is killed, ``JobTimeout``
  (``step_timeout``).
* The child dies: ``ProviderFailure`` (``provider_crashed``); a fresh one starts next time.

Jobs are serialised: one model process runs one pipeline at a time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing as mp
import threading
import time
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from PIL import Image

from safelight.config import Settings
from safelight.errors import JobFailure
from safelight.providers.base import GenerationRequest, PreviewFn, ProviderInfo, StepCallback
from safelight.providers.diffusers import errors as e
from safelight.providers.diffusers import protocol as p
from safelight.providers.diffusers.previews import frame_to_image, preview_size
from safelight.providers.diffusers.styles import DEFAULT_STYLE, STYLES, apply_style

log = logging.getLogger("safelight.providers.diffusers")

# Loading a model is not a step: it gets its own, longer deadline.
MODEL_LOAD_TIMEOUT_S = 600.0
MODEL_DOWNLOAD_TIMEOUT_S = 3600.0
# How long ``close`` waits for a clean shutdown before killing.
SHUTDOWN_GRACE_S = 5.0


class _ChildGone(Exception):
    def __init__(self, exitcode: int | None) -> None:
        super().__init__(f"model process exited ({exitcode})")
        self.exitcode = exitcode


class _Stalled(Exception):
    pass


class _Child:
    """One model process and its pipe."""

    def __init__(self, config: p.ChildConfig) -> None:
        from safelight.providers.diffusers.child import child_main

        ctx = mp.get_context("spawn")
        self.cancel = p.CancelFlag(ctx)
        self.conn, child_conn = ctx.Pipe(duplex=True)
        self.process = ctx.Process(
            target=child_main,
            args=(child_conn, self.cancel, config),
            name="safelight-diffusers",
            daemon=True,
        )
        self.process.start()
        child_conn.close()  # so the parent sees EOF when the child dies
        self.info: p.ReadyInfo | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def recv(self, timeout: float | None) -> tuple[Any, ...]:
        """The next message; ``_Stalled`` after ``timeout`` s of silence, ``_ChildGone`` if
        the process ended."""
        try:
            ready = wait([self.conn, self.process.sentinel], timeout)
            if not ready:
                raise _Stalled
            if self.conn.poll():
                msg: tuple[Any, ...] = self.conn.recv()
                return msg
        except (EOFError, OSError):
            pass
        self.process.join(1.0)
        raise _ChildGone(self.process.exitcode)

    def send(self, msg: tuple[Any, ...]) -> None:
        try:
            self.conn.send(msg)
        except OSError:
            self.process.join(1.0)
            raise _ChildGone(self.process.exitcode) from None

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5.0)
        self.conn.close()

    def shutdown(self, grace: float) -> None:
        if self.process.is_alive():
            with contextlib.suppress(OSError):
                self.conn.send((p.SHUTDOWN,))
            self.process.join(grace)
        self.kill()


class _LatestPreview:
    """The newest preview of the running job, turned into a PIL image only when asked."""

    def __init__(self, frame: p.PreviewFrame, size: tuple[int, int]) -> None:
        self._frame = frame
        self._size = size
        self._image: Image.Image | None = None

    def __call__(self) -> Image.Image:
        if self._image is None:
            self._image = frame_to_image(self._frame, self._size)
        return self._image.copy()


class DiffusersProvider:
    """Stable Diffusion family (SD 1.x/2.x, SDXL) text-to-image through diffusers."""

    def __init__(self, settings: Settings, *, test_fault: tuple[str, int] | None = None) -> None:
        self.settings = settings
        # Test only: ("oom" | "hang", step) makes the child fail or hang at that step.
        self.test_fault = test_fault
        self._lock = threading.Lock()
        self._child: _Child | None = None
        self._closed = False
        self._job_ids = 0
        self._info = ProviderInfo(
            name="diffusers",
            title="Stable Diffusion (diffusers)",
            styles=tuple(STYLES),
            default_style=DEFAULT_STYLE,
            style_descriptions={name: s.description for name, s in STYLES.items()},
            seconds_per_step=2.0 if settings.diffusers_device == "cpu" else 0.15,
        )

    # -- Provider protocol ---------------------------------------------------------------

    @property
    def info(self) -> ProviderInfo:
        return self._info

    def generate(self, request: GenerationRequest, on_step: StepCallback) -> list[Image.Image]:
        try:
            prompt, negative = apply_style(request.style, request.prompt, request.negative_prompt)
        except KeyError:
            raise e.failure(
                e.UNKNOWN_STYLE,
                f"Unknown style {request.style!r}; this provider offers {', '.join(STYLES)}.",
            ) from None
        with self._lock:
            if self._closed:
                raise e.failure(e.PROVIDER_CLOSED, "The diffusers provider is shut down.")
            child = self._ready_child()
            self._job_ids += 1
            job = p.JobRequest(
                job_id=self._job_ids,
                prompt=prompt,
                negative_prompt=negative,
                width=request.width,
                height=request.height,
                steps=request.steps,
                seed=request.seed,
                num_images=request.num_images,
                preview_interval_s=self._preview_interval(),
                fault=self.test_fault,
            )
            return self._run(child, job, request, on_step)

    def close(self) -> None:
        """Stop the model process.  Idempotent.  A running job gets up to
        ``diffusers_cancel_grace_s`` to end (the server cancels its jobs before closing
        providers); after that the process is killed and the job fails with
        ``provider_closed``."""
        self._closed = True
        child = self._child
        if child is None:
            return
        if self._lock.acquire(timeout=self.settings.diffusers_cancel_grace_s):
            try:
                self._drop_child(graceful=True)
            finally:
                self._lock.release()
        elif child.process.is_alive():
            # A job is running in another thread: end the process; that thread sees it
            # gone, cleans up and reports provider_closed.
            child.process.kill()

    # -- extras --------------------------------------------------------------------------

    def start(self, wait_ready: bool = False) -> None:
        """Start the model process now (so the model loads before the first job)."""
        with self._lock:
            if self._closed:
                raise e.failure(e.PROVIDER_CLOSED, "The diffusers provider is shut down.")
            if wait_ready:
                self._ready_child()
            elif self._child is None:
                self._child = _Child(self._child_config())

    @property
    def child_pid(self) -> int | None:
        """The model process's pid, or None when none is running."""
        child = self._child
        return child.pid if child is not None and child.process.is_alive() else None

    @property
    def runtime(self) -> p.ReadyInfo | None:
        """Device, dtype and pipeline of the loaded model, once loaded."""
        child = self._child
        return child.info if child is not None else None

    # -- internals -----------------------------------------------------------------------

    def _child_config(self) -> p.ChildConfig:
        model = self.settings.diffusers_model
        if not model:
            raise e.failure(e.MODEL_NOT_FOUND, "No diffusers model is configured.")
        if _is_path(model) and not Path(model).expanduser().is_dir():
            # Clearly a path, not a model id: say so now rather than after a model
            # process has started and imported torch.
            raise e.failure(e.MODEL_NOT_FOUND, f"Model directory {model!r} does not exist.")
        return p.ChildConfig(
            model=model,
            device=self.settings.diffusers_device,
            allow_download=self.settings.diffusers_allow_download,
        )

    def _preview_interval(self) -> float | None:
        if self.settings.preview_max_side <= 0 or self.settings.preview_interval_s < 0:
            return None
        return self.settings.preview_interval_s

    def _ready_child(self) -> _Child:
        """The warm child, starting one and waiting for its model to load if needed."""
        child = self._child
        if child is not None and child.info is not None and child.process.is_alive():
            return child
        if child is None or not child.process.is_alive():
            if child is not None:
                child.kill()
            child = self._child = _Child(self._child_config())
        timeout = (
            MODEL_DOWNLOAD_TIMEOUT_S
            if self.settings.diffusers_allow_download
            else max(MODEL_LOAD_TIMEOUT_S, self.settings.stall_deadline_s)
        )
        try:
            msg = child.recv(timeout)
        except _Stalled:
            self._drop_child()
            raise e.failure(
                e.MODEL_LOAD_TIMEOUT, f"Loading the model took longer than {timeout:.0f} s."
            ) from None
        except _ChildGone as gone:
            self._drop_child()
            raise self._crashed(gone, "while loading the model") from None
        if msg[0] == p.READY:
            child.info = msg[1]
            log.info("diffusers model ready: %s", child.info)
            if child.info is not None and child.info.device == "cpu":
                self._info = dataclasses.replace(self._info, seconds_per_step=2.0)
            return child
        self._drop_child()
        if msg[0] == p.LOAD_ERROR:
            raise e.failure(msg[1], msg[2])
        raise e.failure(e.PIPELINE_ERROR, f"Unexpected message from the model process: {msg[0]}")

    def _run(
        self, child: _Child, job: p.JobRequest, request: GenerationRequest, on_step: StepCallback
    ) -> list[Image.Image]:
        child.cancel.clear()
        size = preview_size(request.width, request.height, self.settings.preview_max_side)
        latest: PreviewFn | None = None
        try:
            child.send((p.GENERATE, job))
            while True:
                msg = child.recv(self.settings.stall_deadline_s)
                kind = msg[0]
                if msg[1] != job.job_id:  # a leftover of an earlier job
                    continue
                if kind == p.STEP:
                    _, _, step, total, frame = msg
                    if frame is not None:
                        latest = _LatestPreview(frame, size)
                    try:
                        on_step(step, total, latest)
                    except BaseException:
                        self._cancel(child, job)
                        raise
                elif kind == p.DONE:
                    return [
                        Image.frombytes("RGB", (raw.width, raw.height), raw.rgb) for raw in msg[2]
                    ]
                elif kind == p.ERROR:
                    raise e.failure(msg[2], msg[3])
                else:  # CANCELLED without being asked: treat as a pipeline fault
                    raise e.failure(e.PIPELINE_ERROR, "The model process stopped the job.")
        except _Stalled:
            self._drop_child()
            raise e.failure(
                e.STEP_TIMEOUT,
                f"No denoising step finished within {self.settings.stall_deadline_s:g} s; "
                "the model process was stopped and restarts with the next job.",
            ) from None
        except _ChildGone as gone:
            self._drop_child()
            raise self._crashed(gone, "during the job") from None

    def _cancel(self, child: _Child, job: p.JobRequest) -> None:
        """Ask the child to stop ``job``; kill it if it does not answer within the grace."""
        child.cancel.set()
        deadline = time.monotonic() + self.settings.diffusers_cancel_grace_s
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise _Stalled
                msg = child.recv(remaining)
                if msg[1] == job.job_id and msg[0] in (p.CANCELLED, p.DONE, p.ERROR):
                    child.cancel.clear()
                    return
        except _Stalled:
            log.warning(
                "model process did not stop within %.1f s of a cancel; killing it",
                self.settings.diffusers_cancel_grace_s,
            )
            self._drop_child()
        except _ChildGone:
            self._drop_child()

    def _drop_child(self, graceful: bool = False) -> None:
        child, self._child = self._child, None
        if child is None:
            return
        if graceful:
            child.shutdown(SHUTDOWN_GRACE_S)
        else:
            child.kill()

    def _crashed(self, gone: _ChildGone, when: str) -> JobFailure:
        if self._closed:
            return e.failure(e.PROVIDER_CLOSED, "The diffusers provider was shut down.")
        code = gone.exitcode
        hint = ""
        if code is not None and code < 0:
            hint = f" (killed by signal {-code}; the system may have run out of memory)"
        return e.failure(e.PROVIDER_CRASHED, f"The model process died {when}{hint}.")


def _is_path(model: str) -> bool:
    """Absolute, home-relative or dot-relative: a filesystem path.  ``org/name`` may be
    either, so it is left to the model process (a directory wins, as in diffusers)."""
    return model.startswith(("/", "~", "./", "../", "\\")) or (len(model) > 1 and model[1] == ":")
