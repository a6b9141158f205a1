"""Request validation for ``POST /api/jobs`` with field-level messages (API.md table).

Validation is done by hand against a small rule table rather than by a pydantic model:
the contract wants one plain-words message per field naming the rule, and both the UI and
the client show these messages next to their fields.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from safelight.errors import ValidationFailed
from safelight.providers.base import ProviderInfo
from safelight.types import DEFAULT_WEBHOOK_EVENTS, WebhookEvent
from safelight.webhooks.ssrf import UrlRefused, parse_url

PROMPT_MAX = 2000
SIZE_MIN, SIZE_MAX, SIZE_MULTIPLE = 64, 2048, 8
STEPS_MIN, STEPS_MAX = 1, 150
IMAGES_MIN, IMAGES_MAX = 1, 4
SEED_MAX = 4294967295
KNOWN_FIELDS = (
    "prompt",
    "negative_prompt",
    "width",
    "height",
    "steps",
    "style",
    "seed",
    "num_images",
    "provider",
    "parent_id",
    "webhook",
)
SIZE_PRESETS = (
    ("Square 512", 512, 512),
    ("Square 768", 768, 768),
    ("Square 1024", 1024, 1024),
    ("Portrait 2:3", 512, 768),
    ("Landscape 3:2", 768, 512),
    ("Wide 16:9", 1024, 576),
)


@dataclass(frozen=True)
class CreateJob:
    settings: dict[str, Any]
    parent_id: str | None
    # (url, events) after the syntax rules; the address is checked by the route (DNS).
    webhook: tuple[str, list[WebhookEvent]] | None = None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_text(value: str) -> bool:
    """False for strings that are not Unicode text: JSON's ``\\ud800`` escapes decode to
    lone surrogates, which cannot be encoded (stored, hashed, shown) as UTF-8."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


NOT_TEXT = "must be valid Unicode text (it contains a lone surrogate escape such as \\ud800)"


def _field_name(key: Any) -> str:
    """A client's unknown field name, safe to echo back (JSON, logs)."""
    name = str(key)[:64]
    return name if is_text(name) else name.encode("utf-8", "backslashreplace").decode("ascii")


def validate_create(
    body: Any, providers: dict[str, ProviderInfo], default_provider: str
) -> CreateJob:
    if not isinstance(body, dict):
        raise ValidationFailed([{"field": "body", "message": "must be a JSON object"}])
    errors: list[dict[str, str]] = []

    def err(field: str, message: str) -> None:
        errors.append({"field": field, "message": message})

    for key in body:
        if key not in KNOWN_FIELDS:
            err(_field_name(key), "unknown field")
    for name in ("prompt", "negative_prompt", "style", "provider", "parent_id"):
        value = body.get(name)
        if isinstance(value, str) and not is_text(value):
            err(name, NOT_TEXT)
            # Check the rest against a harmless stand-in (nothing is created anyway).
            body = {**body, name: "x" if name == "prompt" else None}

    prompt = body.get("prompt")
    if prompt is None:
        err("prompt", "is required")
    elif not isinstance(prompt, str):
        err("prompt", "must be a string")
    else:
        prompt = prompt.strip()
        if not prompt:
            err("prompt", "must not be blank")
        elif len(prompt) > PROMPT_MAX:
            err("prompt", f"must be at most {PROMPT_MAX} characters (got {len(prompt)})")

    negative = body.get("negative_prompt", "")
    if negative is None:
        negative = ""
    if not isinstance(negative, str):
        err("negative_prompt", "must be a string")
    elif len(negative) > PROMPT_MAX:
        err("negative_prompt", f"must be at most {PROMPT_MAX} characters (got {len(negative)})")

    def int_field(name: str, default: int, lo: int, hi: int, multiple: int = 1) -> int:
        value = body.get(name, default)
        if value is None:
            value = default
        if not _is_int(value):
            err(name, "must be an integer")
            return default
        if not lo <= value <= hi:
            err(name, f"must be between {lo} and {hi} (got {value})")
        elif value % multiple:
            err(name, f"must be a multiple of {multiple} (got {value})")
        return int(value)

    width = int_field("width", 512, SIZE_MIN, SIZE_MAX, SIZE_MULTIPLE)
    height = int_field("height", 512, SIZE_MIN, SIZE_MAX, SIZE_MULTIPLE)
    steps = int_field("steps", 30, STEPS_MIN, STEPS_MAX)
    num_images = int_field("num_images", 1, IMAGES_MIN, IMAGES_MAX)

    seed = body.get("seed")
    if seed is None:
        seed = secrets.randbelow(SEED_MAX + 1)
    elif not _is_int(seed):
        err("seed", "must be an integer or null")
    elif not 0 <= seed <= SEED_MAX:
        err("seed", f"must be between 0 and {SEED_MAX} (got {seed})")

    provider_name = body.get("provider") or default_provider
    info = providers.get(provider_name) if isinstance(provider_name, str) else None
    if info is None:
        err("provider", f"must be one of: {', '.join(providers)}")

    style = body.get("style")
    if style is None:
        style = info.default_style if info else None
    elif not isinstance(style, str):
        err("style", "must be a string")
    elif info is not None and style not in info.styles:
        err("style", f"must be one of: {', '.join(info.styles)}")

    parent_id = body.get("parent_id")
    if parent_id is not None and (not isinstance(parent_id, str) or not 1 <= len(parent_id) <= 64):
        err("parent_id", "must be a job id or null")

    webhook = _webhook(body.get("webhook"), err)

    if errors:
        raise ValidationFailed(errors)
    return CreateJob(
        settings={
            "prompt": prompt,
            "negative_prompt": negative,
            "width": width,
            "height": height,
            "steps": steps,
            "style": style,
            "seed": seed,
            "num_images": num_images,
            "provider": provider_name,
        },
        parent_id=parent_id,
        webhook=webhook,
    )


def _webhook(value: Any, err: Callable[[str, str], None]) -> tuple[str, list[WebhookEvent]] | None:
    """``{"url", "events"?}``; events default to the terminal ones."""
    if value is None:
        return None
    if not isinstance(value, dict):
        err("webhook", "must be an object with a url (and optionally events)")
        return None
    for key in value:
        if key not in ("url", "events"):
            err(f"webhook.{str(key)[:64]}", "unknown field")
    url = value.get("url")
    try:
        parse_url(url if isinstance(url, str) else "")
    except UrlRefused as exc:
        err("webhook.url", str(exc))
    events = value.get("events", [e.value for e in DEFAULT_WEBHOOK_EVENTS])
    names = [e.value for e in WebhookEvent]
    if (
        not isinstance(events, list)
        or not events
        or not all(isinstance(e, str) and e in names for e in events)
    ):
        err("webhook.events", f"must be a non-empty list of: {', '.join(names)}")
        return None
    if not isinstance(url, str):
        return None
    # Keep the contract's order, drop repeats.
    return url, [WebhookEvent(n) for n in names if n in events]


def options_view(
    providers: dict[str, ProviderInfo],
    default_provider: str,
    transports: list[str],
    max_attempts: int,
) -> dict[str, Any]:
    return {
        "providers": [
            {
                "name": p.name,
                "title": p.title,
                "styles": list(p.styles),
                "default_style": p.default_style,
                "style_descriptions": dict(p.style_descriptions),
            }
            for p in providers.values()
        ],
        "default_provider": default_provider,
        "size_presets": [{"label": lb, "width": w, "height": h} for lb, w, h in SIZE_PRESETS],
        "limits": {
            "prompt_max": PROMPT_MAX,
            "negative_prompt_max": PROMPT_MAX,
            "width": {"min": SIZE_MIN, "max": SIZE_MAX, "multiple_of": SIZE_MULTIPLE},
            "height": {"min": SIZE_MIN, "max": SIZE_MAX, "multiple_of": SIZE_MULTIPLE},
            "steps": {"min": STEPS_MIN, "max": STEPS_MAX},
            "num_images": {"min": IMAGES_MIN, "max": IMAGES_MAX},
            "seed_max": SEED_MAX,
        },
        "defaults": {"width": 512, "height": 512, "steps": 30, "num_images": 1},
        "transports": transports,
        "max_attempts": max_attempts,
    }
