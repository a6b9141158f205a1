"""Fault injection for tests and demos (``settings.dev_faults``; the registry wraps).

A prompt may carry directives that make a chosen step of a chosen attempt fail in one of the
error categories, so every failure path (retry, timeout, crash recovery) can be driven end
to end with the real worker::

    [[fail:KIND@STEP]]             fail at STEP on attempt 1
    [[fail:KIND@STEP#2,3]]         ... on attempts 2 and 3
    [[fail:KIND@STEP#*]]           ... on every attempt

KIND is one of:

* ``provider``: raise ``ProviderFailure`` (code ``provider_unavailable``);
* ``internal``: raise a plain ``RuntimeError`` (the worker maps unknown exceptions to
  internal errors);
* ``timeout``: stop making progress: hang for ``3 * stall_deadline_s + 1`` seconds so the
  worker's stall deadline fires, then report the step again (by then the worker has given
  up on the attempt, so the callback raises ``Cancelled`` and the thread ends);
* ``crash``: raise ``SimulatedCrash``, as if the worker process died;
* ``exit``: end the worker PROCESS at once (``os._exit``, nothing flushed or written),
  for crash-loop tests with real processes (an embedded server dies with it);
* ``output``: finish every step, then return HTML bytes instead of images (a provider
  gone wrong; the worker must fail the job with ``invalid_output`` and store nothing).

The fault fires inside step processing: after the inner provider reports step STEP (the
real callback runs first, so progress shows STEP) and before control returns to it.
Directives are removed from the prompt the inner provider sees; anything that does not
parse as a directive is left in the prompt untouched.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, cast

from PIL import Image

from safelight.config import Settings
from safelight.errors import ProviderFailure
from safelight.providers.base import (
    GenerationRequest,
    PreviewFn,
    Provider,
    ProviderInfo,
    StepCallback,
)

HANG_CHUNK_S = 0.02
# What an ``output`` fault returns in place of each image: markup a browser would run if
# it were ever served as a page.
NOT_AN_IMAGE = b"<html><script>window.__pwned=1</script></html>"


class SimulatedCrash(BaseException):
    """Simulates the worker process dying in the middle of a step.

    It derives from ``BaseException`` so ordinary ``except Exception`` handlers (which would
    turn it into a recorded job failure) do not catch it.  The worker must abandon the job
    on it without writing anything, exactly as if the process had been killed: the lease
    then expires and the reaper requeues the job (or fails it at ``max_attempts``).
    """


class FaultKind(enum.StrEnum):
    PROVIDER = "provider"
    TIMEOUT = "timeout"
    INTERNAL = "internal"
    CRASH = "crash"
    EXIT = "exit"
    OUTPUT = "output"


@dataclass(frozen=True, slots=True)
class FaultDirective:
    """One parsed ``[[fail:KIND@STEP#ATTEMPTS]]``; ``attempts`` None means every attempt."""

    kind: FaultKind
    step: int
    attempts: frozenset[int] | None = frozenset({1})

    def applies_to(self, attempt: int) -> bool:
        return self.attempts is None or attempt in self.attempts


_DIRECTIVE = re.compile(
    r"\s*\[\[fail:(?P<kind>provider|timeout|internal|crash|exit|output)@(?P<step>[1-9][0-9]*)"
    r"(?:#(?P<attempts>\*|[1-9][0-9]*(?:,[1-9][0-9]*)*))?\]\]",
    re.IGNORECASE,
)


def parse_faults(prompt: str) -> tuple[str, list[FaultDirective]]:
    """Split ``prompt`` into the prompt without directives and the directives, in order.

    Malformed or unknown directives (``[[fail:boom@3]]``, ``[[fail:provider@x]]``) are not
    directives: they stay in the prompt as written."""
    found: list[FaultDirective] = []

    def take(match: re.Match[str]) -> str:
        raw = match.group("attempts")
        attempts = None if raw == "*" else frozenset(int(a) for a in (raw or "1").split(","))
        found.append(
            FaultDirective(
                FaultKind(match.group("kind").lower()), int(match.group("step")), attempts
            )
        )
        return ""

    cleaned = _DIRECTIVE.sub(take, prompt)
    return (cleaned.strip() if found else prompt), found


class FaultInjectingProvider:
    """Wraps any provider and fires the prompt's fault directives at their steps."""

    def __init__(self, inner: Provider, settings: Settings) -> None:
        self._inner = inner
        self._hang_s = settings.stall_deadline_s * 3 + 1
        self._closed = threading.Event()

    @property
    def info(self) -> ProviderInfo:
        return self._inner.info

    def generate(self, request: GenerationRequest, on_step: StepCallback) -> list[Image.Image]:
        prompt, faults = parse_faults(request.prompt)
        if not faults:
            return self._inner.generate(request, on_step)
        inner_request = dataclasses.replace(request, prompt=prompt)
        armed = [f for f in faults if f.applies_to(request.attempt)]
        if not armed:
            return self._inner.generate(inner_request, on_step)

        def step_with_faults(step: int, total: int, preview: PreviewFn | None) -> None:
            on_step(step, total, preview)
            for fault in armed:
                if fault.step == step and fault.kind is not FaultKind.OUTPUT:
                    self._fire(fault, step, total, preview, on_step)

        images = self._inner.generate(inner_request, step_with_faults)
        if any(f.kind is FaultKind.OUTPUT for f in armed):
            junk: Any = [NOT_AN_IMAGE] * len(images)  # deliberately the wrong type
            return cast(list[Image.Image], junk)
        return images

    def _fire(
        self,
        fault: FaultDirective,
        step: int,
        total: int,
        preview: PreviewFn | None,
        on_step: StepCallback,
    ) -> None:
        if fault.kind is FaultKind.PROVIDER:
            raise ProviderFailure(
                "The provider reported an error (injected fault).", code="provider_unavailable"
            )
        if fault.kind is FaultKind.INTERNAL:
            raise RuntimeError("injected internal failure")
        if fault.kind is FaultKind.CRASH:
            raise SimulatedCrash(f"injected crash at step {step}")
        if fault.kind is FaultKind.EXIT:
            os._exit(70)  # a real process death: no cleanup, no writes, the lease lapses
        # TIMEOUT: no progress for longer than the stall deadline.  Short waits, so that
        # close() (server shutdown) releases the thread promptly.
        deadline = time.monotonic() + self._hang_s
        while not self._closed.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._closed.wait(min(HANG_CHUNK_S, remaining))
        on_step(step, total, preview)  # normally raises Cancelled: the attempt was abandoned

    def close(self) -> None:
        self._closed.set()
        self._inner.close()
