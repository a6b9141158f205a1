"""The webhook dispatcher: one per node, any node may send any delivery.

Loop: claim due deliveries (lease + token, ``safelight.store.webhooks.claim``), send each
(bounded concurrency), record the attempt fenced by the token, schedule the next try with
jittered exponential backoff until ``webhook_retry_for_s`` has passed.  It wakes when this
node sees a committed event a webhook may want (``JobService.listeners``), and otherwise
every ``webhook_poll_s`` (retries that came due, events committed elsewhere).

The lease outlasts connect + read timeouts (checked in ``Settings.validate``), so a live
sender never loses its claim mid-request: two nodes never send one delivery at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time

from safelight.config import Settings
from safelight.errors import LeaseLost
from safelight.metrics import Metrics
from safelight.models import Event
from safelight.store import webhooks as rows
from safelight.store.runner import AsyncStore
from safelight.types import WEBHOOK_EVENT_OF, AttemptOutcome
from safelight.webhooks import signing
from safelight.webhooks.sender import Limits, send, tls_context
from safelight.webhooks.ssrf import Policy

log = logging.getLogger("safelight.webhooks")


def backoff_s(settings: Settings, attempt: int, rng: random.Random) -> float:
    """Delay before try ``attempt + 1``: exponential, capped, scaled into [0.5, 1] at
    random so receivers recovering from an outage are not hit by every sender at once."""
    full = min(
        settings.webhook_backoff_max_s, settings.webhook_backoff_base_s * 2.0 ** (attempt - 1)
    )
    return full * rng.uniform(0.5, 1.0)


class Dispatcher:
    def __init__(
        self, settings: Settings, store: AsyncStore, metrics: Metrics, secret: str, node: str
    ) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.key = signing.secret_key(secret)
        self.node = node
        self.policy = Policy.from_entries(settings.webhook_allowed_hosts)
        self.limits = Limits(
            settings.webhook_connect_timeout_s,
            settings.webhook_read_timeout_s,
            settings.webhook_max_response_bytes,
            tls_context(settings.webhook_ca_file),
        )
        self.wake = asyncio.Event()
        self.in_flight: set[asyncio.Task[None]] = set()
        self.rng = random.Random()

    def notice(self, events: list[Event]) -> None:
        """A ``JobService`` listener: committed events this node sees (its own, or any
        node's via LISTEN in scale-out).  An event whose own write queued no delivery
        (``Event.webhook_queued``) does not wake it: without that, every progress event
        of every job cost a store read here."""
        if any(e.webhook_queued and e.type in WEBHOOK_EVENT_OF for e in events):
            self.wake.set()

    async def run(self) -> None:
        lease_ms = int(self.settings.webhook_lease_s * 1000)
        try:
            while True:
                self.wake.clear()
                free = self.settings.webhook_concurrency - len(self.in_flight)
                claimed: list[rows.Delivery] = []
                if free > 0:
                    try:
                        if await self.store.read(rows.has_due):
                            claimed = await self.store.write(rows.claim, self.node, lease_ms, free)
                    except Exception:
                        log.exception("webhook claim failed; retrying")
                for delivery in claimed:
                    task = asyncio.create_task(self._attempt(delivery))
                    self.in_flight.add(task)
                    task.add_done_callback(self._finished)
                if not claimed or len(claimed) < free:
                    # Nothing (more) due, or every slot busy: until an event, a freed
                    # slot, or the next poll.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.wake.wait(), self.settings.webhook_poll_s)
        finally:
            for task in list(self.in_flight):
                task.cancel()

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.in_flight.discard(task)
        self.wake.set()  # a slot is free

    async def _attempt(self, delivery: rows.Delivery) -> None:
        body = delivery.body.encode()
        headers = signing.headers(self.key, delivery.id, int(time.time()), body)
        result = await send(delivery.url, body, headers, self.policy, self.limits)
        retry_in = backoff_s(self.settings, delivery.attempts + 1, self.rng)
        try:
            outcome = await self.store.write(
                rows.record_attempt,
                delivery,
                node=self.node,
                latency_ms=result.latency_ms,
                status_code=result.status_code,
                error=result.error,
                delivered=result.delivered,
                blocked=result.blocked,
                retry_in_ms=int(retry_in * 1000),
                retry_for_ms=int(self.settings.webhook_retry_for_s * 1000),
            )
        except LeaseLost:
            # Only if the lease lapsed mid-request (a paused process): another sender has
            # the delivery; its attempt is the one that counts.
            log.warning("webhook %s: lease lost before the attempt was recorded", delivery.id)
            return
        except Exception:
            log.exception("webhook %s: could not record the attempt", delivery.id)
            return
        self.metrics.webhook_attempt(outcome.value, result.latency_ms / 1000)
        level = logging.INFO if outcome is AttemptOutcome.DELIVERED else logging.WARNING
        log.log(
            level,
            "webhook %s job %s seq %d attempt %d: %s (status %s, %d ms%s)",
            delivery.id,
            delivery.job_id,
            delivery.seq,
            delivery.attempts + 1,
            outcome.value,
            result.status_code,
            result.latency_ms,
            f", {result.error}" if result.error else "",
        )
