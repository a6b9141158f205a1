"""Failures of the diffusers provider, mapped into Safelight's error taxonomy.

The child classifies exceptions into a stable ``code`` and a message (it has torch); the
parent turns ``(code, message)`` into a ``JobFailure`` with next steps.  Codes:

``model_not_found``     no model configured, or not a local directory / cached model id
``model_load_failed``   the model is there but could not be loaded
``model_load_timeout``  loading took longer than the load deadline
``out_of_memory``       the device (or host) ran out of memory
``pipeline_error``      anything else the pipeline raised
``provider_crashed``    the model process died
``provider_closed``     the provider was closed (server shutting down)
``step_timeout``        no step finished within ``stall_deadline_s``
``unknown_style``       the request names a style this provider does not declare
"""

from __future__ import annotations

from safelight.errors import JobFailure, JobTimeout, ProviderFailure
from safelight.types import NextStep

MODEL_NOT_FOUND = "model_not_found"
MODEL_LOAD_FAILED = "model_load_failed"
MODEL_LOAD_TIMEOUT = "model_load_timeout"
OUT_OF_MEMORY = "out_of_memory"
PIPELINE_ERROR = "pipeline_error"
PROVIDER_CRASHED = "provider_crashed"
PROVIDER_CLOSED = "provider_closed"
STEP_TIMEOUT = "step_timeout"
UNKNOWN_STYLE = "unknown_style"

HOW_TO_POINT_AT_A_MODEL = (
    "Point Safelight at a Stable Diffusion model in diffusers format: a local directory "
    "containing model_index.json, or a model id already in the local Hugging Face cache, "
    "with SAFELIGHT_DIFFUSERS_MODEL=... or `safelight serve --diffusers-model ...`. "
    "Downloads are off unless SAFELIGHT_DIFFUSERS_ALLOW_DOWNLOAD=1."
)
OOM_HINT = "Try a smaller size, fewer images or fewer steps, or retry when the device is less busy."

_OOM_MARKERS = ("out of memory", "can't allocate memory", "cannot allocate memory")
_MAX_MESSAGE = 500


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return first[:_MAX_MESSAGE]


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    if type(exc).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc).lower() for m in _OOM_MARKERS)


def classify_load_error(model: str, exc: BaseException) -> tuple[str, str]:
    """Child side: an exception from ``from_pretrained`` / ``.to(device)``."""
    if is_out_of_memory(exc):
        return OUT_OF_MEMORY, f"Out of memory while loading model {model!r}: {_short(exc)}"
    if isinstance(exc, OSError | ValueError):
        # diffusers/huggingface_hub raise OSError (EnvironmentError) for a missing local
        # directory, a model id not in the cache, or missing files; ValueError for ids
        # that are not valid repo ids.
        return MODEL_NOT_FOUND, f"Model {model!r} was not found ({_short(exc)})."
    return MODEL_LOAD_FAILED, f"Model {model!r} could not be loaded: {_short(exc)}"


def classify_run_error(exc: BaseException) -> tuple[str, str]:
    """Child side: an exception from a pipeline call."""
    if is_out_of_memory(exc):
        return OUT_OF_MEMORY, f"The model ran out of memory: {_short(exc)}"
    return PIPELINE_ERROR, f"The pipeline failed: {_short(exc)}"


def failure(code: str, message: str) -> JobFailure:
    """Parent side: ``(code, message)`` as the exception the worker records."""
    if code == MODEL_NOT_FOUND:
        return ProviderFailure(
            f"{message} {HOW_TO_POINT_AT_A_MODEL}",
            code=code,
            retryable=False,
            next_steps=(NextStep.CONTACT_SUPPORT,),
        )
    if code == MODEL_LOAD_FAILED:
        return ProviderFailure(
            f"{message} {HOW_TO_POINT_AT_A_MODEL}",
            code=code,
            retryable=False,
            next_steps=(NextStep.CONTACT_SUPPORT,),
        )
    if code == OUT_OF_MEMORY:
        return ProviderFailure(
            f"{message} {OOM_HINT}",
            code=code,
            retryable=True,
            next_steps=(NextStep.EDIT_PROMPT, NextStep.RETRY_LATER),
        )
    if code in (STEP_TIMEOUT, MODEL_LOAD_TIMEOUT):
        return JobTimeout(message, code=code, retryable=True)
    if code in (PROVIDER_CRASHED, PROVIDER_CLOSED):
        return ProviderFailure(
            message, code=code, retryable=True, next_steps=(NextStep.RETRY, NextStep.RETRY_LATER)
        )
    if code == UNKNOWN_STYLE:
        return ProviderFailure(
            message, code=code, retryable=False, next_steps=(NextStep.EDIT_PROMPT,)
        )
    return ProviderFailure(message, code=code)
