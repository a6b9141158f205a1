"""Prometheus metrics, one registry per app (no process globals)."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from safelight.models import Event


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.jobs = Gauge(
            "safelight_jobs", "Jobs in the store by status", ["status"], registry=self.registry
        )
        self.events = Counter(
            "safelight_events_appended",
            "Events appended to job logs",
            ["type"],
            registry=self.registry,
        )
        self.streams = Gauge(
            "safelight_open_streams",
            "Open event streams by transport",
            ["transport"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "safelight_delivery_latency_seconds",
            "From event commit to its write to the clients of one transport (one"
            " observation per write: a live fan-out writes to all caught-up clients at once)",
            ["transport"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        self.deliveries = Counter(
            "safelight_deliveries",
            "Events written to clients (one per event per client), by transport",
            ["transport"],
            registry=self.registry,
        )
        self._delivery_children: dict[str, tuple[Any, Any]] = {}
        self.polls = Counter("safelight_polls", "Polling requests answered", registry=self.registry)
        # -- Webhooks (issue 9) --
        self.webhook_attempts = Counter(
            "safelight_webhook_attempts",
            "Webhook delivery attempts by outcome (delivered, retrying, gave_up, blocked)",
            ["outcome"],
            registry=self.registry,
        )
        self.webhook_queue = Gauge(
            "safelight_webhook_queue_depth",
            "Webhook deliveries not yet delivered or given up (all nodes)",
            registry=self.registry,
        )
        self.webhook_latency = Histogram(
            "safelight_webhook_latency_seconds",
            "Duration of one webhook attempt, resolve to response",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )

    def event_appended(self, event: Event) -> None:
        self.events.labels(event.type.value).inc()

    def delivered(self, transport: str, event: Event, count: int = 1) -> None:
        """``event`` was written to ``count`` clients of ``transport`` just now."""
        children = self._delivery_children.get(transport)
        if children is None:
            children = self._delivery_children[transport] = (
                self.latency.labels(transport),
                self.deliveries.labels(transport),
            )
        children[0].observe(max(0.0, time.time() - event.ts_ms / 1000))
        children[1].inc(count)

    def webhook_attempt(self, outcome: str, seconds: float) -> None:
        self.webhook_attempts.labels(outcome).inc()
        self.webhook_latency.observe(seconds)

    def render(self, job_counts: dict[str, int], webhook_queue: int | None = None) -> bytes:
        if webhook_queue is not None:
            self.webhook_queue.set(webhook_queue)
        for status in ("queued", "running", "uploading", "completed", "failed", "cancelled"):
            self.jobs.labels(status).set(job_counts.get(status, 0))
        return generate_latest(self.registry)
