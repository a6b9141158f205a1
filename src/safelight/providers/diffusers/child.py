"""The model process: loads the pipeline once, then runs jobs sent by the parent.

Started by ``DiffusersProvider`` with the ``spawn`` start method; ``child_main`` is its
entry point.  Only this module imports torch and diffusers (lazily, inside the child).
See ``protocol.py`` for the messages.
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from safelight.providers.diffusers import protocol as p
from safelight.providers.diffusers.errors import classify_load_error, classify_run_error
from safelight.providers.diffusers.previews import LatentProjector, choose_format

log = logging.getLogger("safelight.providers.diffusers.child")

# A test-only hang sleeps this long (the parent kills the child well before).
_HANG_S = 3600.0

# emit(step, total, preview frame or None)
Emit = Callable[[int, int, p.PreviewFrame | None], None]
# diffusers' callback_on_step_end(pipe, step_index, timestep, tensors) -> tensor updates
StepEndCallback = Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]]


class _Interrupted(Exception):
    """Raised from the step-end callback when the parent asked to cancel."""


class _ParentGone(BaseException):
    """The pipe to the parent is broken: stop everything and exit."""


def _send(conn: Connection, msg: tuple[Any, ...]) -> None:
    try:
        conn.send(msg)
    except OSError as exc:  # BrokenPipeError, ConnectionResetError
        raise _ParentGone from exc


def _quiet_libraries() -> None:
    """Library logging down to errors, progress bars off (best effort)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # diffusers passes this deprecated argument to huggingface_hub itself on every load.
    warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*", category=UserWarning)
    try:
        # tqdm's default lock is a multiprocessing lock: a named semaphore that leaks (and
        # draws a resource_tracker warning) whenever this process is killed.
        tqdm: Any = importlib.import_module("tqdm")
        tqdm.tqdm.set_lock(threading.RLock())
    except Exception as exc:
        log.debug("could not replace tqdm's lock: %s", exc)
    for module_name, calls in (
        ("diffusers.utils.logging", ("set_verbosity_error", "disable_progress_bar")),
        ("transformers.utils.logging", ("set_verbosity_error", "disable_progress_bar")),
        ("huggingface_hub.utils", ("disable_progress_bars",)),
    ):
        try:
            module: Any = importlib.import_module(module_name)
            for name in calls:
                getattr(module, name)()
        except Exception as exc:
            log.debug("could not quiet %s: %s", module_name, exc)


def pick_device(preference: str) -> str:
    """``auto``: cuda if available, else mps, else cpu; anything else as given."""
    import torch

    if preference != "auto":
        return preference
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def _round_up(value: int, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


class Runner:
    """A loaded pipeline and how to run one job on it."""

    def __init__(self, pipe: Any, device: str) -> None:
        import torch

        self.pipe = pipe
        self.device = device
        self.generator_device = "cpu" if device.startswith("mps") else device
        self.torch = torch
        channels = getattr(getattr(pipe, "unet", None), "config", None)
        in_channels = int(getattr(channels, "in_channels", 0) or 0)
        vae_config = getattr(getattr(pipe, "vae", None), "config", None)
        scaling = getattr(vae_config, "scaling_factor", None)
        fmt = choose_format(in_channels, scaling, type(pipe).__name__)
        tensor_inputs = getattr(pipe, "_callback_tensor_inputs", ["latents"])
        self.projector = (
            LatentProjector(fmt, device) if fmt is not None and "latents" in tensor_inputs else None
        )
        self.scale_multiple = int(getattr(pipe, "vae_scale_factor", 8) or 8)

    @classmethod
    def load(cls, config: p.ChildConfig) -> Runner:
        import torch

        diffusers: Any = importlib.import_module("diffusers")
        device = pick_device(config.device)
        dtype = torch.float16 if device.startswith("cuda") else torch.float32
        # DiffusionPipeline imports only the class model_index.json names (a second or so
        # faster to start than AutoPipelineForText2Image, which imports every family);
        # an image-to-image or inpainting checkpoint is turned into its text-to-image twin.
        pipe = diffusers.DiffusionPipeline.from_pretrained(
            config.model, dtype=dtype, local_files_only=not config.allow_download
        )
        if any(kind in type(pipe).__name__ for kind in ("Img2Img", "Inpaint")):
            pipe = diffusers.AutoPipelineForText2Image.from_pipe(pipe)
        pipe = pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        return cls(pipe, device)

    @property
    def info(self) -> p.ReadyInfo:
        return p.ReadyInfo(
            device=self.device,
            dtype=str(getattr(self.pipe, "dtype", "")),
            pipeline=type(self.pipe).__name__,
            latent_format=self.projector.format.name if self.projector else None,
        )

    def make_callback(
        self, job: p.JobRequest, emit: Emit, should_stop: Callable[[], bool]
    ) -> StepEndCallback:
        """The step-end callback: progress every step, a preview at most every
        ``job.preview_interval_s``, cancellation at the next step.

        ``emit(step, total, frame | None)`` delivers progress; ``should_stop()`` says
        whether to stop.  Pipelines whose scheduler runs more model evaluations than
        ``steps`` (PNDM, Heun) still report ``1..steps`` exactly once each.
        """
        last_step = 0
        last_preview = -math.inf
        steps = job.steps
        projector = self.projector if job.preview_interval_s is not None else None
        interval = job.preview_interval_s or 0.0

        def on_step_end(pipe: Any, i: int, _t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            nonlocal last_step, last_preview
            timesteps = int(getattr(pipe, "num_timesteps", 0) or steps)
            step = min(steps, (i + 1) * steps // timesteps if timesteps > steps else i + 1)
            if step > last_step:
                last_step = step
                if job.fault is not None and step == job.fault[1]:
                    _inject_fault(job.fault[0], step)
                if should_stop():
                    raise _Interrupted
                frame = None
                if projector is not None:
                    now = time.monotonic()
                    if now - last_preview >= interval:
                        frame = projector.project(kwargs["latents"])
                        last_preview = now
                emit(step, steps, frame)
            elif should_stop():
                raise _Interrupted
            return {}

        return on_step_end

    def run_pipeline(self, job: p.JobRequest, callback: StepEndCallback | None) -> list[Any]:
        """Run the pipeline; PIL images of exactly ``width x height``."""
        torch = self.torch
        generators = [
            torch.Generator(device=self.generator_device).manual_seed(
                (job.seed + i) & 0xFFFF_FFFF_FFFF_FFFF
            )
            for i in range(job.num_images)
        ]
        width = _round_up(job.width, self.scale_multiple)
        height = _round_up(job.height, self.scale_multiple)
        kwargs: dict[str, Any] = {}
        if callback is not None:
            kwargs["callback_on_step_end"] = callback
            kwargs["callback_on_step_end_tensor_inputs"] = ["latents"]
        out = self.pipe(
            prompt=job.prompt,
            negative_prompt=job.negative_prompt or None,
            width=width,
            height=height,
            num_inference_steps=job.steps,
            generator=generators,
            num_images_per_prompt=job.num_images,
            **kwargs,
        )
        images = list(out.images)
        if (width, height) != (job.width, job.height):
            left, top = (width - job.width) // 2, (height - job.height) // 2
            images = [im.crop((left, top, left + job.width, top + job.height)) for im in images]
        return images

    def run(self, job: p.JobRequest, conn: Connection, cancel: p.CancelFlag) -> None:
        """One job, answered with exactly one terminal message."""
        if cancel.is_set():
            _send(conn, (p.CANCELLED, job.job_id))
            return

        def emit(step: int, total: int, frame: p.PreviewFrame | None) -> None:
            _send(conn, (p.STEP, job.job_id, step, total, frame))

        callback = self.make_callback(job, emit, cancel.is_set)
        try:
            images = self.run_pipeline(job, callback)
        except _Interrupted:
            _send(conn, (p.CANCELLED, job.job_id))
            return
        except Exception as exc:
            code, message = classify_run_error(exc)
            log.warning("job %s failed: %s", job.job_id, message, exc_info=code != "out_of_memory")
            failure: tuple[str, str] | None = (code, message)
        else:
            failure = None
        if failure is not None:
            # Outside the except block: the traceback (and the tensors its frames hold)
            # is gone, so the allocator can hand the memory back.
            self._free_memory()
            _send(conn, (p.ERROR, job.job_id, *failure))
            return
        _send(conn, (p.DONE, job.job_id, [_raw(im) for im in images]))

    def _free_memory(self) -> None:
        try:
            if self.device.startswith("cuda"):
                self.torch.cuda.empty_cache()
        except Exception:  # noqa: S110  # nosec B110 - freeing cache is best effort
            pass


def _inject_fault(kind: str, step: int) -> None:
    if kind == p.FAULT_OOM:
        raise RuntimeError(
            f"CUDA out of memory. Tried to allocate 20.00 MiB (Safelight test fault at step {step})"
        )
    if kind == p.FAULT_HANG:
        time.sleep(_HANG_S)


def _raw(image: Any) -> p.RawImage:
    rgb = image.convert("RGB")
    return p.RawImage(width=rgb.width, height=rgb.height, rgb=rgb.tobytes())


def child_main(conn: Connection, cancel: p.CancelFlag, config: p.ChildConfig) -> None:
    """Entry point of the model process."""
    # Ctrl-C in a terminal reaches the whole process group; the parent decides when this
    # process stops (shutdown message, kill, or its own exit), so ignore it here.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    _quiet_libraries()
    try:
        try:
            runner = Runner.load(config)
        except Exception as exc:
            code, message = classify_load_error(config.model, exc)
            log.warning("loading %r failed: %s", config.model, message)
            _send(conn, (p.LOAD_ERROR, code, message))
            return
        _send(conn, (p.READY, runner.info))
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                return
            if msg[0] == p.SHUTDOWN:
                return
            if msg[0] == p.GENERATE:
                runner.run(msg[1], conn, cancel)
    except _ParentGone:
        return
    finally:
        conn.close()
