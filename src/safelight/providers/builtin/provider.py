"""``BuiltinProvider``: renders the pictures, then walks the steps.

The full-size renders are spread over the first steps (image 0 first: the previews show
it); each step is paced to take at least ``settings.step_delay_s`` so the product feels like
a GPU model in demos, and tests set it to 0.
"""

from __future__ import annotations

import time

from PIL import Image

from safelight.config import Settings
from safelight.errors import ProviderFailure
from safelight.providers.base import GenerationRequest, PreviewFn, ProviderInfo, StepCallback
from safelight.providers.builtin.develop import Develop
from safelight.providers.builtin.render import render
from safelight.providers.builtin.styles import DEFAULT_STYLE, STYLE_DESCRIPTIONS, STYLES
from safelight.types import NextStep

MIN_SECONDS_PER_STEP = 0.02


class BuiltinProvider:
    """The default provider: procedural pictures that develop over ``steps`` steps."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._info = ProviderInfo(
            name="builtin",
            title="Safelight builtin painter",
            styles=tuple(STYLE_DESCRIPTIONS),
            default_style=DEFAULT_STYLE,
            style_descriptions=dict(STYLE_DESCRIPTIONS),
            seconds_per_step=max(settings.step_delay_s, MIN_SECONDS_PER_STEP),
        )

    @property
    def info(self) -> ProviderInfo:
        return self._info

    def generate(self, request: GenerationRequest, on_step: StepCallback) -> list[Image.Image]:
        if request.style not in STYLES:
            raise ProviderFailure(
                f"Unknown style {request.style!r}; choose one of {', '.join(STYLES)}.",
                code="unknown_style",
                retryable=False,
                next_steps=(NextStep.EDIT_PROMPT,),
            )
        total, count = max(1, request.steps), max(1, request.num_images)
        delay = self._settings.step_delay_s
        images: list[Image.Image] = []
        develop: Develop | None = None
        mark = time.monotonic()
        for step in range(1, total + 1):
            # Spread the full-size renders over the first steps (image 0 first: the
            # previews show it); the last step finishes whatever is left.
            want = count if step == total else min(count, step)
            while len(images) < want:
                images.append(render(request, len(images)))
            if develop is None:
                develop = Develop(images[0], self._settings.preview_max_side, request.seed)
            if delay > 0:
                # A step lasts at least ``delay``, callback included, like a paced GPU.
                remaining = delay - (time.monotonic() - mark)
                if remaining > 0:
                    time.sleep(remaining)
            mark = time.monotonic()
            on_step(step, total, _preview(develop, step, total))
        return images

    def close(self) -> None:
        return None


def _preview(develop: Develop, step: int, total: int) -> PreviewFn:
    return lambda: develop.state(step, total)
