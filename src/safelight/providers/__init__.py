"""Providers chosen by name (uvicorn-style name -> import string), so optional heavy
providers (diffusers) are imported only when configured."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from safelight.errors import SafelightError

if TYPE_CHECKING:
    from safelight.config import Settings
    from safelight.providers.base import Provider

PROVIDERS: dict[str, str] = {
    "builtin": "safelight.providers.builtin:BuiltinProvider",
    "diffusers": "safelight.providers.diffusers:DiffusersProvider",
}


def create_provider(name: str, settings: Settings) -> Provider:
    """Build the provider registered under ``name``; wrap it with fault injection when
    ``settings.dev_faults`` is on."""
    try:
        target = PROVIDERS[name]
    except KeyError:
        raise SafelightError(f"unknown provider {name!r}; known: {', '.join(PROVIDERS)}") from None
    module_name, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module_name), attr)
    provider: Provider = cls(settings)
    if settings.dev_faults:
        from safelight.providers.faults import FaultInjectingProvider

        provider = FaultInjectingProvider(provider, settings)
    return provider
