"""What the parent and the model process say to each other over their pipe.

Everything here is plain, picklable data: the parent never imports torch.

Parent -> child: ``("generate", JobRequest)`` or ``("shutdown",)``.
Child -> parent, once after start: ``("ready", ReadyInfo)`` or ``("load_error", code, message)``
(the child then exits).  Per job, tagged with ``job_id``:

* ``("step", job_id, step, total, PreviewFrame | None)`` after each denoising step;
* then exactly one of ``("done", job_id, [RawImage, ...])``, ``("cancelled", job_id)`` or
  ``("error", job_id, code, message)``; the child stays warm after any of them.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from multiprocessing.context import SpawnContext

GENERATE = "generate"
SHUTDOWN = "shutdown"
READY = "ready"
LOAD_ERROR = "load_error"
STEP = "step"
DONE = "done"
CANCELLED = "cancelled"
ERROR = "error"

# Test-only fault kinds a request may carry (see ``DiffusersProvider.test_fault``).
FAULT_OOM = "oom"
FAULT_HANG = "hang"
FAULT_KINDS = (FAULT_OOM, FAULT_HANG)


@dataclass(frozen=True, slots=True)
class ChildConfig:
    """How the model process loads its pipeline."""

    model: str
    device: str
    allow_download: bool


@dataclass(frozen=True, slots=True)
class ReadyInfo:
    device: str
    dtype: str
    pipeline: str
    latent_format: str | None


@dataclass(frozen=True, slots=True)
class JobRequest:
    """One generation, with the style already folded into the prompts."""

    job_id: int
    prompt: str
    negative_prompt: str
    width: int
    height: int
    steps: int
    seed: int
    num_images: int
    # Seconds between latent previews; None: no previews.
    preview_interval_s: float | None
    # Test-only: (kind, step) from FAULT_KINDS.
    fault: tuple[str, int] | None = None


@dataclass(frozen=True, slots=True)
class RawImage:
    """A finished image as raw RGB bytes.  Raw, not PNG: encoding a 1024x1024 PNG costs
    about 0.1 s of CPU, copying 3 MB through the pipe a few ms, and the worker encodes the
    image for storage anyway."""

    width: int
    height: int
    rgb: bytes


@dataclass(frozen=True, slots=True)
class PreviewFrame:
    """An RGB preview at latent resolution (``height * width * 3`` bytes, row-major)."""

    width: int
    height: int
    rgb: bytes


class CancelFlag:
    """ "Stop the running job", shared with the model process: one byte of shared memory,
    set by the parent, read by the step-end callback.

    Not a ``multiprocessing.Event``: that is a named semaphore, which the resource tracker
    reports as leaked when the server exits while a job thread still references it."""

    def __init__(self, ctx: SpawnContext) -> None:
        self._value = ctx.RawValue(ctypes.c_bool, False)

    def set(self) -> None:
        self._value.value = True

    def clear(self) -> None:
        self._value.value = False

    def is_set(self) -> bool:
        return bool(self._value.value)
