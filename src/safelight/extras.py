"""Optional packages, checked before a mode that needs them starts.

The base install runs embedded mode (SQLite, builtin generator, web UI).  PostgreSQL
(scale-out) and the diffusers provider need extras; nothing imports them unless their mode
is chosen (issue 10), and choosing one without its extra is one clear line, not a
traceback from deep inside start-up.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from safelight.errors import MissingExtra

if TYPE_CHECKING:
    from safelight.config import Settings

# extra name -> (what needs it, modules it must provide)
EXTRAS: dict[str, tuple[str, tuple[str, ...]]] = {
    "postgres": ("PostgreSQL", ("psycopg",)),
    "diffusers": ("The diffusers provider", ("torch", "diffusers", "transformers")),
}


def installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(extra: str) -> None:
    what, modules = EXTRAS[extra]
    if not all(installed(m) for m in modules):
        raise MissingExtra(what, extra)


def check(settings: Settings) -> None:
    """Raise ``MissingExtra`` for the first extra the settings need but do not have."""
    url = settings.database_url or ""
    if url.startswith(("postgresql", "postgres:")):
        require("postgres")
    if "diffusers" in settings.providers:
        require("diffusers")
