"""The provider seam: how a generator plugs into Safelight.

A provider turns one attempt's settings into finished images, calling ``on_step`` after
every step.  It runs in a worker thread (never on the event loop), so it may block.

``on_step(step, total, preview)``:
  * ``step`` counts from 1 to ``total``;
  * ``preview`` is ``None`` or a zero-argument callable returning a PIL image of the
    current state.  It is lazy on purpose: the worker calls it at most about once a second,
    so a provider whose preview is costly (a latent decode) pays only when one is wanted;
  * it raises ``safelight.errors.Cancelled`` when the job must stop (user cancel, deadline,
    lost lease).  Providers must let that exception propagate.

Provider errors are translated into the ``JobFailure`` tree (``ProviderFailure``,
``JobTimeout``, ...) inside the provider, at this boundary.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from PIL import Image

PreviewFn = Callable[[], Image.Image]
StepCallback = Callable[[int, int, PreviewFn | None], None]


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One attempt of one job, as the provider sees it."""

    job_id: str
    attempt: int
    prompt: str
    negative_prompt: str
    width: int
    height: int
    steps: int
    style: str
    seed: int
    num_images: int


@dataclass(frozen=True, slots=True)
class ProviderInfo:
    """What ``GET /api/options`` shows about a provider."""

    name: str
    title: str
    styles: Sequence[str]
    default_style: str
    style_descriptions: dict[str, str] = field(default_factory=dict)
    # Rough seconds per step at 512x512, used for queue ETAs before real timings exist.
    seconds_per_step: float = 0.25


class Provider(Protocol):
    """A text-to-image generator."""

    @property
    def info(self) -> ProviderInfo: ...

    def generate(self, request: GenerationRequest, on_step: StepCallback) -> list[Image.Image]:
        """Run every step, calling ``on_step`` after each; return ``num_images`` images of
        exactly ``width`` x ``height``.  Must be deterministic for equal requests."""
        ...

    def close(self) -> None:
        """Release resources (child processes, models).  Idempotent."""
        ...
