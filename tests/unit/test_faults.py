"""Fault injection: directive parsing, and each kind firing at its step and attempts."""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

import pytest
from PIL import Image

from safelight.config import Settings
from safelight.errors import Cancelled, ProviderFailure
from safelight.providers.base import GenerationRequest, PreviewFn, ProviderInfo, StepCallback
from safelight.providers.builtin import BuiltinProvider
from safelight.providers.faults import (
    FaultDirective,
    FaultInjectingProvider,
    FaultKind,
    SimulatedCrash,
    parse_faults,
)


class ScriptedProvider:
    """A stand-in provider: reports ``steps`` steps and records what it was asked."""

    def __init__(self) -> None:
        self.requests: list[GenerationRequest] = []
        self.closed = 0
        self.info = ProviderInfo(
            name="scripted", title="Scripted", styles=("x",), default_style="x"
        )

    def generate(self, request: GenerationRequest, on_step: StepCallback) -> list[Image.Image]:
        self.requests.append(request)
        for step in range(1, request.steps + 1):
            on_step(step, request.steps, lambda: Image.new("RGB", (4, 4)))
        return [Image.new("RGB", (request.width, request.height))]

    def close(self) -> None:
        self.closed += 1


@pytest.fixture
def settings() -> Settings:
    return Settings().replace(step_delay_s=0.0, dev_faults=True, stall_deadline_s=0.0)


@pytest.fixture
def inner() -> ScriptedProvider:
    return ScriptedProvider()


@pytest.fixture
def wrapped(inner: ScriptedProvider, settings: Settings) -> FaultInjectingProvider:
    return FaultInjectingProvider(inner, settings)


def make_request(prompt: str, attempt: int = 1, **changes: Any) -> GenerationRequest:
    request = GenerationRequest(
        job_id="job",
        attempt=attempt,
        prompt=prompt,
        negative_prompt="",
        width=64,
        height=64,
        steps=5,
        style="x",
        seed=7,
        num_images=1,
    )
    return dataclasses.replace(request, **changes)


class Recorder:
    def __init__(self) -> None:
        self.steps: list[int] = []

    def __call__(self, step: int, total: int, preview: PreviewFn | None) -> None:
        self.steps.append(step)


# --------------------------------------------------------------------------- parsing


def test_parse_a_directive_with_the_default_attempt() -> None:
    prompt, faults = parse_faults("a quiet harbor [[fail:provider@3]]")
    assert prompt == "a quiet harbor"
    assert faults == [FaultDirective(FaultKind.PROVIDER, 3, frozenset({1}))]


def test_parse_attempt_lists_every_attempt_and_several_directives() -> None:
    prompt, faults = parse_faults("[[fail:timeout@2#2,3]] sunset [[fail:crash@10#*]] sea")
    assert prompt == "sunset sea"
    assert faults == [
        FaultDirective(FaultKind.TIMEOUT, 2, frozenset({2, 3})),
        FaultDirective(FaultKind.CRASH, 10, None),
    ]
    assert faults[1].applies_to(1)
    assert faults[1].applies_to(99)
    assert faults[0].applies_to(3)
    assert not faults[0].applies_to(1)


@pytest.mark.parametrize(
    "text",
    [
        "[[fail:boom@3]]",
        "[[fail:provider@x]]",
        "[[fail:provider@0]]",
        "[[fail:provider]]",
        "[[fail:provider@3#]]",
        "[[fail:provider@3#a]]",
        "[[fail:provider@3#1,]]",
        "[fail:provider@3]",
    ],
)
def test_malformed_directives_stay_in_the_prompt_untouched(text: str) -> None:
    prompt = f"a cat {text} on a mat"
    assert parse_faults(prompt) == (prompt, [])


def test_a_prompt_without_directives_is_returned_as_is() -> None:
    assert parse_faults("  spaced  out  ") == ("  spaced  out  ", [])


# --------------------------------------------------------------------------- the wrapper


def test_directives_are_stripped_before_the_inner_provider_sees_the_prompt(
    wrapped: FaultInjectingProvider, inner: ScriptedProvider
) -> None:
    request = make_request("harbor [[fail:provider@2#5]]", attempt=1)
    wrapped.generate(request, Recorder())
    assert inner.requests == [dataclasses.replace(request, prompt="harbor")]


def test_without_directives_the_request_passes_through_unchanged(
    wrapped: FaultInjectingProvider, inner: ScriptedProvider
) -> None:
    request = make_request("harbor")
    images = wrapped.generate(request, Recorder())
    assert inner.requests[0] is request
    assert len(images) == 1


def test_provider_fault_fires_after_its_step_is_reported(wrapped: FaultInjectingProvider) -> None:
    seen = Recorder()
    with pytest.raises(ProviderFailure) as info:
        wrapped.generate(make_request("x [[fail:provider@3]]"), seen)
    assert info.value.code == "provider_unavailable"
    assert info.value.message == "The provider reported an error (injected fault)."
    assert seen.steps == [1, 2, 3]


def test_internal_fault_is_a_plain_exception(wrapped: FaultInjectingProvider) -> None:
    seen = Recorder()
    with pytest.raises(RuntimeError, match="injected internal failure"):
        wrapped.generate(make_request("x [[fail:internal@1]]"), seen)
    assert seen.steps == [1]


def test_crash_is_not_an_exception_so_ordinary_handlers_miss_it(
    wrapped: FaultInjectingProvider,
) -> None:
    assert not issubclass(SimulatedCrash, Exception)
    seen = Recorder()
    caught: BaseException | None = None
    try:
        wrapped.generate(make_request("x [[fail:crash@4]]"), seen)
    except Exception:  # the worker's failure path must not see it
        pytest.fail("SimulatedCrash was caught as an Exception")
    except BaseException as exc:
        caught = exc
    assert isinstance(caught, SimulatedCrash)
    assert seen.steps == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("suffix", "attempt", "fails"),
    [
        ("", 1, True),
        ("", 2, False),
        ("#2,3", 1, False),
        ("#2,3", 2, True),
        ("#2,3", 3, True),
        ("#*", 1, True),
        ("#*", 7, True),
    ],
)
def test_attempt_filters(
    wrapped: FaultInjectingProvider, suffix: str, attempt: int, fails: bool
) -> None:
    request = make_request(f"x [[fail:provider@2{suffix}]]", attempt=attempt)
    seen = Recorder()
    if fails:
        with pytest.raises(ProviderFailure):
            wrapped.generate(request, seen)
        assert seen.steps == [1, 2]
    else:
        assert len(wrapped.generate(request, seen)) == 1
        assert seen.steps == [1, 2, 3, 4, 5]


def test_a_step_that_is_never_reached_never_fails(wrapped: FaultInjectingProvider) -> None:
    seen = Recorder()
    wrapped.generate(make_request("x [[fail:crash@9]]"), seen)
    assert seen.steps == [1, 2, 3, 4, 5]


def test_timeout_stops_progress_then_reports_the_step_again(
    wrapped: FaultInjectingProvider,
) -> None:
    # stall_deadline_s = 0, so the hang lasts 0 * 3 + 1 = 1 s.  The worker abandoned the
    # attempt meanwhile, so the repeated report raises Cancelled and the thread ends.
    stamps: list[tuple[int, float]] = []

    def on_step(step: int, total: int, preview: PreviewFn | None) -> None:
        stamps.append((step, time.monotonic()))
        if len(stamps) == 3:
            raise Cancelled("attempt abandoned")

    with pytest.raises(Cancelled):
        wrapped.generate(make_request("x [[fail:timeout@2]]"), on_step)
    assert [s for s, _ in stamps] == [1, 2, 2]
    assert stamps[2][1] - stamps[1][1] >= 0.95


def test_close_releases_a_hanging_timeout_promptly(inner: ScriptedProvider) -> None:
    wrapped = FaultInjectingProvider(inner, Settings().replace(stall_deadline_s=60.0))
    seen = Recorder()
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            wrapped.generate(make_request("x [[fail:timeout@1]]"), seen)
            outcome.append(None)
        except BaseException as exc:  # the thread's result, checked below
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 2.0
    while seen.steps != [1] and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.05)
    assert seen.steps == [1]  # hanging: no progress
    wrapped.close()
    thread.join(timeout=1.0)
    assert not thread.is_alive()
    assert seen.steps[:2] == [1, 1]  # the step is reported again after the hang ends
    assert inner.closed == 1


def test_info_and_close_delegate(wrapped: FaultInjectingProvider, inner: ScriptedProvider) -> None:
    assert wrapped.info is inner.info
    wrapped.close()
    assert inner.closed == 1


def test_wraps_the_builtin_provider_end_to_end(settings: Settings) -> None:
    wrapped = FaultInjectingProvider(BuiltinProvider(settings), settings)
    request = make_request("sunset [[fail:provider@2#2]]", style="watercolor", steps=3)
    plain = BuiltinProvider(settings).generate(
        dataclasses.replace(request, prompt="sunset"), Recorder()
    )
    # Attempt 1 is not targeted: the picture is the one for the clean prompt.
    images = wrapped.generate(request, Recorder())
    assert images[0].tobytes() == plain[0].tobytes()
    with pytest.raises(ProviderFailure):
        wrapped.generate(dataclasses.replace(request, attempt=2), Recorder())
