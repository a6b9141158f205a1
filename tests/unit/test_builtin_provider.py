"""The builtin procedural provider: determinism, sizes, steps, previews, pacing, styles."""

from __future__ import annotations

import dataclasses
import itertools
import time
from typing import Any

import numpy as np
import pytest
from PIL import Image

from safelight.config import Settings
from safelight.errors import Cancelled, ProviderFailure
from safelight.providers import create_provider
from safelight.providers.base import GenerationRequest, PreviewFn, Provider
from safelight.providers.builtin import STYLE_DESCRIPTIONS, BuiltinProvider, read_prompt
from safelight.providers.faults import FaultInjectingProvider

STYLES = list(STYLE_DESCRIPTIONS)


@pytest.fixture
def settings() -> Settings:
    return Settings().replace(step_delay_s=0.0, preview_max_side=48)


@pytest.fixture
def provider(settings: Settings) -> BuiltinProvider:
    return BuiltinProvider(settings)


def make_request(**changes: Any) -> GenerationRequest:
    base = GenerationRequest(
        job_id="job",
        attempt=1,
        prompt="sunset over the mountains",
        negative_prompt="",
        width=96,
        height=64,
        steps=4,
        style="watercolor",
        seed=1234,
        num_images=1,
    )
    return dataclasses.replace(base, **changes)


def ignore_steps(step: int, total: int, preview: PreviewFn | None) -> None:
    return None


def pixels(image: Image.Image) -> np.ndarray[Any, np.dtype[np.float32]]:
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def difference(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute difference per channel, 0..1."""
    return float(np.abs(pixels(a) - pixels(b)).mean())


def generate_one(provider: Provider, **changes: Any) -> Image.Image:
    (image,) = provider.generate(make_request(**changes), ignore_steps)
    return image


def test_info_lists_six_described_styles_with_watercolor_default(settings: Settings) -> None:
    info = BuiltinProvider(settings.replace(step_delay_s=0.25)).info
    assert info.name == "builtin"
    assert info.default_style == "watercolor"
    assert set(info.styles) >= {"watercolor", "neon", "topographic", "aurora", "mosaic", "ink"}
    assert all(info.style_descriptions[s].strip() for s in info.styles)
    assert info.seconds_per_step == 0.25
    assert BuiltinProvider(settings).info.seconds_per_step > 0  # a floor, never 0


def test_registry_builds_builtin_and_wraps_it_only_with_dev_faults(settings: Settings) -> None:
    assert isinstance(create_provider("builtin", settings), BuiltinProvider)
    wrapped = create_provider("builtin", settings.replace(dev_faults=True))
    assert isinstance(wrapped, FaultInjectingProvider)
    assert wrapped.info.name == "builtin"


@pytest.mark.parametrize("style", STYLES)
def test_equal_requests_give_identical_bytes(settings: Settings, style: str) -> None:
    request = make_request(style=style, prompt="moonlit lake with pines and stars")
    first = BuiltinProvider(settings).generate(request, ignore_steps)
    second = BuiltinProvider(settings).generate(request, ignore_steps)
    assert first[0].tobytes() == second[0].tobytes()


@pytest.mark.parametrize(
    "change",
    [{"seed": 1235}, {"style": "ink"}, {"prompt": "sunset over the mountainz"}],
    ids=["seed", "style", "prompt"],
)
def test_a_different_seed_style_or_prompt_gives_a_different_picture(
    provider: BuiltinProvider, change: dict[str, Any]
) -> None:
    assert difference(generate_one(provider), generate_one(provider, **change)) > 0.01


def test_prompts_in_any_script_are_told_apart(provider: BuiltinProvider) -> None:
    a = generate_one(provider, prompt="日落时的山")
    b = generate_one(provider, prompt="夜晚的海洋")
    assert difference(a, b) > 0.01


@pytest.mark.parametrize(
    ("width", "height", "style"),
    [(64, 64, s) for s in STYLES]
    + [(72, 2048, "watercolor"), (2048, 72, "mosaic"), (1000, 632, "neon")],
)
def test_images_are_exactly_the_requested_size_and_rgb(
    provider: BuiltinProvider, width: int, height: int, style: str
) -> None:
    image = generate_one(provider, width=width, height=height, style=style, steps=1)
    assert image.size == (width, height)
    assert image.mode == "RGB"


def test_num_images_renders_each_with_its_own_seed(provider: BuiltinProvider) -> None:
    images = provider.generate(make_request(num_images=3, steps=2), ignore_steps)
    assert len(images) == 3
    assert all(im.size == (96, 64) and im.mode == "RGB" for im in images)
    for a, b in itertools.combinations(images, 2):
        assert difference(a, b) > 0.01
    # Image 0 is the same picture as a single-image request; image i uses seed + i.
    assert images[0].tobytes() == generate_one(provider).tobytes()
    assert images[1].tobytes() == generate_one(provider, seed=1235).tobytes()


def test_more_images_than_steps_still_returns_them_all(provider: BuiltinProvider) -> None:
    assert len(provider.generate(make_request(num_images=4, steps=1), ignore_steps)) == 4


def test_on_step_is_called_once_per_step_in_order(provider: BuiltinProvider) -> None:
    calls: list[tuple[int, int]] = []

    def on_step(step: int, total: int, preview: PreviewFn | None) -> None:
        calls.append((step, total))

    provider.generate(make_request(steps=7, num_images=2), on_step)
    assert calls == [(k, 7) for k in range(1, 8)]


@pytest.mark.parametrize(("width", "height"), [(96, 64), (72, 2048), (40 * 8, 8 * 8)])
def test_previews_are_bounded_by_preview_max_side(
    provider: BuiltinProvider, width: int, height: int
) -> None:
    sizes: list[tuple[int, int]] = []

    def on_step(step: int, total: int, preview: PreviewFn | None) -> None:
        assert preview is not None
        image = preview()
        assert image.mode == "RGB"
        sizes.append(image.size)

    provider.generate(make_request(width=width, height=height, steps=3), on_step)
    assert len(sizes) == 3
    for w, h in sizes:
        assert max(w, h) == 48
        assert abs(w / h - width / height) < 0.1 * width / height + 1 / min(w, h)


def test_small_images_are_previewed_at_their_own_size(settings: Settings) -> None:
    provider = BuiltinProvider(settings.replace(preview_max_side=384))
    sizes: list[tuple[int, int]] = []

    def on_step(step: int, total: int, preview: PreviewFn | None) -> None:
        assert preview is not None
        sizes.append(preview().size)

    provider.generate(make_request(width=64, height=64, steps=2), on_step)
    assert sizes == [(64, 64), (64, 64)]


def test_cancelled_propagates_and_stops_the_steps(provider: BuiltinProvider) -> None:
    seen: list[int] = []

    def on_step(step: int, total: int, preview: PreviewFn | None) -> None:
        seen.append(step)
        if step == 3:
            raise Cancelled("user asked")

    with pytest.raises(Cancelled):
        provider.generate(make_request(steps=10, num_images=4), on_step)
    assert seen == [1, 2, 3]


def test_styles_are_visibly_distinct(provider: BuiltinProvider) -> None:
    images = {s: generate_one(provider, style=s, prompt="ocean at night") for s in STYLES}
    for a, b in itertools.combinations(STYLES, 2):
        assert difference(images[a], images[b]) > 0.04, (a, b)


def test_the_picture_develops_from_noise_to_the_final_image(settings: Settings) -> None:
    provider = BuiltinProvider(settings.replace(preview_max_side=96))
    previews: list[Image.Image] = []

    def on_step(step: int, total: int, preview: PreviewFn | None) -> None:
        assert preview is not None
        previews.append(preview())

    (final,) = provider.generate(make_request(steps=12), on_step)
    distances = [difference(p, final) for p in previews]
    assert distances[0] > 0.08  # step 1 is mostly noise
    assert distances[5] < distances[0]
    assert distances[-1] < 0.01  # the last preview is the picture itself
    assert distances[-1] < distances[-2] < distances[0]


def test_without_a_delay_it_never_sleeps(
    provider: BuiltinProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_sleep(seconds: float) -> None:
        raise AssertionError(f"slept {seconds}")

    monkeypatch.setattr(time, "sleep", no_sleep)
    provider.generate(make_request(steps=3), ignore_steps)


def test_each_step_lasts_at_least_the_step_delay(settings: Settings) -> None:
    provider = BuiltinProvider(settings.replace(step_delay_s=0.03))
    stamps: list[float] = []

    def on_step(step: int, total: int, preview: PreviewFn | None) -> None:
        stamps.append(time.monotonic())

    start = time.monotonic()
    provider.generate(make_request(steps=4, width=64, height=64), on_step)
    gaps = [b - a for a, b in itertools.pairwise([start, *stamps])]
    assert len(gaps) == 4
    assert all(gap >= 0.03 - 0.002 for gap in gaps), gaps


def test_an_unknown_style_is_a_provider_failure(provider: BuiltinProvider) -> None:
    with pytest.raises(ProviderFailure) as info:
        provider.generate(make_request(style="cubism"), ignore_steps)
    assert info.value.code == "unknown_style"
    assert info.value.retryable is False


def test_prompt_words_choose_motifs_and_the_negative_prompt_removes_them() -> None:
    assert {"sun", "mountains"} <= read_prompt("sunset over the mountains").motifs
    assert {"waves", "moon", "stars"} <= read_prompt("the ocean at night").motifs
    assert "trees" in read_prompt("a pine forest").motifs
    assert "stars" not in read_prompt("the ocean at night", negative_prompt="stars").motifs


def test_colour_words_change_the_palette() -> None:
    red = read_prompt("a red forest").palette
    blue = read_prompt("a blue forest").palette
    assert red.far[0] > red.far[2]
    assert blue.far[2] > blue.far[0]


def test_close_is_idempotent(provider: BuiltinProvider) -> None:
    provider.close()
    provider.close()
