"""The API side of webhooks: the create-time address check and the public view.

The URL's syntax is checked with the rest of the body (``schemas.validate_create``); here
the host is resolved and every address checked against the SSRF policy, so a refused URL
is a 422 on ``webhook.url`` before any job exists.  The dispatcher checks again at every
send (``safelight.webhooks.sender``).
"""

from __future__ import annotations

from typing import Any

from safelight.api.context import AppContext
from safelight.errors import ValidationFailed
from safelight.types import DEFAULT_WEBHOOK_EVENTS, WebhookEvent
from safelight.webhooks.ssrf import URL_MAX, Policy, UrlRefused, check_url, redact

WEBHOOK_BODY_SCHEMA: dict[str, Any] = {
    "type": ["object", "null"],
    "additionalProperties": False,
    "required": ["url"],
    "description": (
        "Signed POSTs (Standard Webhooks) when the job moves; see docs/webhooks.md. "
        "Public http(s) addresses only unless the server allows more."
    ),
    "properties": {
        "url": {"type": "string", "maxLength": URL_MAX, "description": "http(s) URL"},
        "events": {
            "type": "array",
            "minItems": 1,
            "items": {"type": "string", "enum": [e.value for e in WebhookEvent]},
            "default": [e.value for e in DEFAULT_WEBHOOK_EVENTS],
        },
    },
}


async def check_webhook_url(ctx: AppContext, url: str) -> None:
    policy = Policy.from_entries(ctx.settings.webhook_allowed_hosts)
    try:
        await check_url(url, policy, ctx.settings.webhook_connect_timeout_s)
    except UrlRefused as exc:
        raise ValidationFailed([{"field": "webhook.url", "message": str(exc)}]) from exc


def webhook_view(webhook: dict[str, Any] | None) -> dict[str, Any] | None:
    """The job object's ``webhook``: the URL without its query string (the job is
    readable by anyone with the share link) and the events."""
    if webhook is None:
        return None
    return {"url": redact(webhook["url"]), "events": webhook["events"]}
