"""The diffusers provider on a tiny randomly initialised Stable Diffusion pipeline.

The pipeline (UNet, VAE, CLIP text encoder, CLIP tokenizer from a tiny vocab.json /
merges.txt, DDIM scheduler) is built offline in this session, saved to a temporary
directory and copied into an isolated Hugging Face cache, so the real path runs without any
download: spawned model process, step-end callbacks, latent previews, cancel, error
mapping, crash and stall recovery.

One provider (one warm model process, loading the model by id from the cache) serves most
tests; tests that must kill or hang a model process use their own (loading it from the
directory).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image

from safelight.config import Settings
from safelight.errors import Cancelled, JobTimeout, ProviderFailure
from safelight.providers.base import GenerationRequest, PreviewFn
from safelight.providers.diffusers import STYLES, DiffusersProvider
from safelight.types import ErrorType, NextStep

_MISSING = [
    m for m in ("torch", "diffusers", "transformers") if importlib.util.find_spec(m) is None
]

pytestmark = [
    pytest.mark.diffusers,
    pytest.mark.skipif(
        bool(_MISSING),
        reason=(
            f"the [diffusers] extra is not installed (cannot import {', '.join(_MISSING)}): "
            "pip install torch==2.13.0, then pip install -e '.[diffusers]'"
        ),
    ),
]

PREVIEW_MAX_SIDE = 48


# -- fixtures -----------------------------------------------------------------------------


TINY_ID = "safelight-test/tiny-sd"


@pytest.fixture(scope="session")
def hub_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """No hub access, and an empty Hugging Face cache of our own, for this process and the
    model processes it spawns (they inherit the environment)."""
    cache = tmp_path_factory.mktemp("hf-hub")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        mp.setenv("HF_HUB_CACHE", str(cache))
        yield cache


@pytest.fixture(scope="session")
def tiny_model(hub_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny pipeline as a local diffusers directory."""
    from safelight.providers.diffusers.tiny import build_tiny_pipeline

    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny-sd"))


@pytest.fixture(scope="session")
def tiny_model_id(tiny_model: Path, hub_cache: Path) -> str:
    """The same pipeline as a model id in the (isolated) local Hugging Face cache, laid out
    as a download would leave it."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = hub_cache / ("models--" + TINY_ID.replace("/", "--"))
    shutil.copytree(tiny_model, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return TINY_ID


def make_settings(model: Path | str | None, **changes: Any) -> Settings:
    values: dict[str, Any] = {
        "diffusers_model": None if model is None else str(model),
        "diffusers_device": "cpu",
        "preview_interval_s": 0.0,  # a preview on every step
        "preview_max_side": PREVIEW_MAX_SIDE,
        "stall_deadline_s": 30.0,
        "diffusers_cancel_grace_s": 10.0,
    }
    values.update(changes)
    return Settings(**values)


@pytest.fixture(scope="module")
def provider(tiny_model_id: str) -> Iterator[DiffusersProvider]:
    """The warm provider most tests share; it loads the model by id from the cache."""
    prov = DiffusersProvider(make_settings(tiny_model_id))
    prov.start(wait_ready=True)
    yield prov
    prov.close()


def make_request(**changes: Any) -> GenerationRequest:
    values: dict[str, Any] = {
        "job_id": "job",
        "attempt": 1,
        "prompt": "a watercolor of a red house",
        "negative_prompt": "",
        "width": 64,
        "height": 64,
        "steps": 6,
        "style": "none",
        "seed": 1234,
        "num_images": 1,
    }
    values.update(changes)
    return GenerationRequest(**values)


@dataclass
class Recorder:
    """An ``on_step`` that records steps and previews and can act at a chosen step."""

    at_step: int | None = None
    action: Callable[[], None] | None = None
    steps: list[tuple[int, int]] = field(default_factory=list)
    previews: list[Image.Image] = field(default_factory=list)
    offered: list[PreviewFn] = field(default_factory=list)

    def __call__(self, step: int, total: int, preview: PreviewFn | None) -> None:
        self.steps.append((step, total))
        if preview is not None:
            if not any(preview is seen for seen in self.offered):
                self.offered.append(preview)
            self.previews.append(preview())
        if step == self.at_step and self.action is not None:
            self.action()


def pixels(img: Image.Image) -> np.ndarray[Any, np.dtype[np.int16]]:
    return np.asarray(img, dtype=np.int16)


def raise_cancelled() -> None:
    raise Cancelled("stop")


# -- without a model process ----------------------------------------------------------


def test_info_declares_styles() -> None:
    prov = DiffusersProvider(make_settings(None))
    info = prov.info
    assert info.name == "diffusers"
    assert info.default_style == "none"
    assert set(info.styles) == {"none", "photo", "watercolor", "anime", "cinematic", "line-art"}
    assert set(info.style_descriptions) == set(info.styles)
    prov.close()


def test_styles_add_to_prompts() -> None:
    from safelight.providers.diffusers.styles import apply_style

    assert apply_style("none", "a cat", "") == ("a cat", "")
    prompt, negative = apply_style("watercolor", "a cat", "blurry")
    assert prompt.startswith("a cat, ")
    assert "watercolor" in prompt
    assert negative.startswith("blurry, ")
    assert STYLES["photo"].prompt_suffix in apply_style("photo", "x", "")[0]


def test_unknown_style_and_missing_model_setting_fail_without_a_child() -> None:
    prov = DiffusersProvider(make_settings(None))
    with pytest.raises(ProviderFailure) as exc:
        prov.generate(make_request(style="vaporwave"), Recorder())
    assert exc.value.code == "unknown_style"
    assert exc.value.retryable is False
    with pytest.raises(ProviderFailure) as exc:
        prov.generate(make_request(), Recorder())
    assert exc.value.code == "model_not_found"
    assert prov.child_pid is None
    prov.close()
    prov.close()  # idempotent
    with pytest.raises(ProviderFailure) as exc:
        prov.generate(make_request(), Recorder())
    assert exc.value.code == "provider_closed"


def test_latent_format_choice() -> None:
    from safelight.providers.diffusers.previews import SD15, SDXL, choose_format

    assert choose_format(4, 0.18215, "StableDiffusionPipeline") is SD15
    assert choose_format(4, 0.13025, "SomePipeline") is SDXL
    assert choose_format(4, None, "StableDiffusionXLPipeline") is SDXL
    assert choose_format(16, 1.5305, "StableDiffusion3Pipeline") is None


def test_step_callback_counts_steps_throttles_previews_and_stops() -> None:
    """The child's step-end callback, in process, on a scheduler with more model
    evaluations than steps (as PNDM and Heun have)."""
    import torch

    from safelight.providers.diffusers import protocol as p
    from safelight.providers.diffusers.child import Runner, _Interrupted

    pipe = SimpleNamespace(
        unet=SimpleNamespace(config=SimpleNamespace(in_channels=4)),
        vae=SimpleNamespace(config=SimpleNamespace(scaling_factor=0.18215)),
        _callback_tensor_inputs=["latents"],
        vae_scale_factor=8,
        num_timesteps=7,
    )
    runner = Runner(pipe, "cpu")
    job = p.JobRequest(
        job_id=1,
        prompt="x",
        negative_prompt="",
        width=64,
        height=64,
        steps=6,
        seed=0,
        num_images=1,
        preview_interval_s=3600.0,
    )
    emitted: list[tuple[int, int, p.PreviewFrame | None]] = []
    stop = False
    callback = runner.make_callback(job, lambda *a: emitted.append(a), lambda: stop)
    latents = {"latents": torch.randn(1, 4, 8, 8)}
    for i in range(7):
        assert callback(pipe, i, None, latents) == {}
    assert [(s, t) for s, t, _ in emitted] == [(k, 6) for k in range(1, 7)]
    frames = [f for _, _, f in emitted if f is not None]
    assert len(frames) == 1  # once per preview_interval_s
    assert (frames[0].width, frames[0].height) == (8, 8)
    assert len(frames[0].rgb) == 8 * 8 * 3
    stop = True
    with pytest.raises(_Interrupted):
        callback(pipe, 0, None, latents)


# -- one warm model process -----------------------------------------------------------


def test_generate_runs_in_a_child_and_reports_steps_and_previews(
    provider: DiffusersProvider,
) -> None:
    rec = Recorder()
    images = provider.generate(make_request(num_images=2), rec)

    pid = provider.child_pid
    assert pid is not None
    assert pid != os.getpid()
    runtime = provider.runtime
    assert runtime is not None
    assert (runtime.device, runtime.pipeline, runtime.latent_format) == (
        "cpu",
        "StableDiffusionPipeline",
        "sd15",
    )
    assert rec.steps == [(k, 6) for k in range(1, 7)]
    assert len(rec.offered) == 6  # preview_interval_s=0: a fresh preview every step
    for preview in rec.previews:
        assert preview.mode == "RGB"
        assert max(preview.size) <= PREVIEW_MAX_SIDE
        assert preview.size == (PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE)  # square job
    first, last = pixels(rec.previews[0]), pixels(rec.previews[-1])
    assert first.std() > 0  # projected from real latents, not a blank
    assert np.abs(first - last).mean() > 0  # and they develop
    assert len(images) == 2
    assert all(img.size == (64, 64) and img.mode == "RGB" for img in images)
    assert np.abs(pixels(images[0]) - pixels(images[1])).mean() > 1  # different seeds


def test_equal_seeds_give_equal_images(provider: DiffusersProvider) -> None:
    request = make_request(num_images=2, seed=77, style="photo")
    a = provider.generate(request, Recorder())
    b = provider.generate(request, Recorder())
    assert [pixels(i).tobytes() for i in a] == [pixels(i).tobytes() for i in b]
    # Image i uses seed + i: the second image matches a single run with seed + 1 (up to
    # float rounding between batch sizes).
    single = provider.generate(replace(request, seed=78, num_images=1), Recorder())
    assert np.abs(pixels(a[1]) - pixels(single[0])).max() <= 2
    other = provider.generate(replace(request, seed=79, num_images=1), Recorder())
    assert np.abs(pixels(other[0]) - pixels(single[0])).mean() > 1


def test_size_not_a_multiple_of_the_latent_scale(provider: DiffusersProvider) -> None:
    rec = Recorder()
    images = provider.generate(make_request(width=72, height=40, steps=2), rec)
    assert [img.size for img in images] == [(72, 40)]
    assert rec.previews
    assert max(rec.previews[-1].size) <= PREVIEW_MAX_SIDE
    assert rec.previews[-1].size == (48, 27)  # the job's aspect ratio


def test_cancel_mid_run_stops_quickly_and_the_child_stays_warm(
    provider: DiffusersProvider,
) -> None:
    pid = provider.child_pid
    rec = Recorder(at_step=3, action=raise_cancelled)
    with pytest.raises(Cancelled):
        provider.generate(make_request(steps=500), rec)
    assert [s for s, _ in rec.steps] == [1, 2, 3]  # stopped at the next step
    # A child that ignored the cancel would be killed after the grace and replaced; the
    # same pid proves it stopped by itself (no wall-clock assertion: the box may be busy).
    assert provider.child_pid == pid
    images = provider.generate(make_request(steps=3), Recorder())
    assert len(images) == 1


def test_out_of_memory_is_a_provider_error_with_next_steps(provider: DiffusersProvider) -> None:
    pid = provider.child_pid
    provider.test_fault = ("oom", 2)
    try:
        rec = Recorder()
        with pytest.raises(ProviderFailure) as exc:
            provider.generate(make_request(), rec)
    finally:
        provider.test_fault = None
    err = exc.value
    assert err.code == "out_of_memory"
    assert err.error_type is ErrorType.PROVIDER
    assert err.retryable is True
    assert list(err.next_steps) == [NextStep.EDIT_PROMPT, NextStep.RETRY_LATER]
    assert "smaller size" in err.message
    assert "fewer images" in err.message
    assert [s for s, _ in rec.steps] == [1]
    assert provider.child_pid == pid  # the model stays loaded
    assert len(provider.generate(make_request(steps=2), Recorder())) == 1


def test_child_killed_mid_run_is_provider_crashed_then_recovers(
    provider: DiffusersProvider,
) -> None:
    pid = provider.child_pid
    assert pid is not None

    def kill_child() -> None:
        os.kill(pid, signal.SIGKILL)

    with pytest.raises(ProviderFailure) as exc:
        provider.generate(make_request(steps=50), Recorder(at_step=3, action=kill_child))
    assert exc.value.code == "provider_crashed"
    assert exc.value.retryable is True
    assert "signal 9" in exc.value.message
    assert provider.child_pid is None

    rec = Recorder()
    images = provider.generate(make_request(), rec)
    assert len(images) == 1
    assert images[0].size == (64, 64)
    assert rec.steps[-1] == (6, 6)
    assert provider.child_pid not in (None, pid)


# -- model processes that fail --------------------------------------------------------


def test_missing_model_directory_fails_at_once(tmp_path: Path) -> None:
    prov = DiffusersProvider(make_settings(tmp_path / "no-such-model"))
    with pytest.raises(ProviderFailure) as exc:
        prov.generate(make_request(), Recorder())
    prov.close()
    err = exc.value
    assert err.code == "model_not_found"
    assert err.retryable is False
    assert list(err.next_steps) == [NextStep.CONTACT_SUPPORT]
    assert str(tmp_path / "no-such-model") in err.message
    assert "SAFELIGHT_DIFFUSERS_MODEL" in err.message
    assert "--diffusers-model" in err.message
    assert prov.child_pid is None  # clearly a path: no model process was needed


def test_model_id_not_in_the_cache(hub_cache: Path) -> None:
    prov = DiffusersProvider(make_settings("safelight-test/not-downloaded"))
    try:
        with pytest.raises(ProviderFailure) as exc:
            prov.generate(make_request(), Recorder())
    finally:
        prov.close()
    err = exc.value
    assert err.code == "model_not_found"
    assert err.error_type is ErrorType.PROVIDER
    assert err.retryable is False
    assert list(err.next_steps) == [NextStep.CONTACT_SUPPORT]
    assert "safelight-test/not-downloaded" in err.message
    assert "SAFELIGHT_DIFFUSERS_MODEL" in err.message
    assert "--diffusers-model" in err.message


def test_load_errors_are_classified() -> None:
    from safelight.providers.diffusers.errors import classify_load_error, classify_run_error

    assert classify_load_error("m", OSError("no model_index.json"))[0] == "model_not_found"
    assert classify_load_error("m", KeyError("unet"))[0] == "model_load_failed"
    assert classify_load_error("m", RuntimeError("CUDA out of memory"))[0] == "out_of_memory"
    assert classify_run_error(MemoryError())[0] == "out_of_memory"
    assert classify_run_error(RuntimeError("DefaultCPUAllocator: can't allocate memory"))[0] == (
        "out_of_memory"
    )
    assert classify_run_error(ValueError("height must be divisible by 8"))[0] == "pipeline_error"


def test_hung_step_times_out_and_unacknowledged_cancel_kills(tiny_model: Path) -> None:
    # This provider loads the model from its local directory.
    settings = make_settings(tiny_model, stall_deadline_s=1.5, diffusers_cancel_grace_s=0.5)
    prov = DiffusersProvider(settings, test_fault=("hang", 3))
    try:
        # A step that never ends: killed after stall_deadline_s.
        prov.start(wait_ready=True)
        rec = Recorder()
        started = time.monotonic()
        with pytest.raises(JobTimeout) as exc:
            prov.generate(make_request(), rec)
        assert exc.value.code == "step_timeout"
        assert exc.value.error_type is ErrorType.TIMEOUT
        assert [s for s, _ in rec.steps] == [1, 2]
        assert 1.5 <= time.monotonic() - started < 1.5 + 3.0
        assert prov.child_pid is None

        # A cancel the child cannot see (stuck at step 3): killed after the grace.
        prov.start(wait_ready=True)
        rec = Recorder(at_step=2, action=raise_cancelled)
        started = time.monotonic()
        with pytest.raises(Cancelled):
            prov.generate(make_request(), rec)
        assert time.monotonic() - started < 0.5 + 3.0
        assert prov.child_pid is None
    finally:
        prov.close()
