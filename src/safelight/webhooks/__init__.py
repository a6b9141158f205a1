"""Webhooks: tell other systems when a job moves (docs/webhooks.md).

``ssrf`` (which URLs may be called), ``signing`` (Standard Webhooks headers and the
server's secret), ``sender`` (one HTTP attempt to a checked address) and ``dispatcher``
(claims due deliveries under a lease and records every attempt).  The deliveries table is
in ``safelight.store.webhooks``.
"""
