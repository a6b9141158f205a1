"""Exponential backoff with jitter, for loops that must outlive a database outage.

Bottom of the import graph (nothing from Safelight): the store, workers, the PostgreSQL
listener and the runtime all use it.
"""

from __future__ import annotations

import random


class Backoff:
    """``next()`` returns initial, 2x, 4x ... capped at ``maximum``, each with up to 25 %
    jitter (so nodes that lost the database together do not retry in lock-step);
    ``reset()`` after a success."""

    __slots__ = ("failures", "initial", "maximum")

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial = initial
        self.maximum = max(initial, maximum)
        self.failures = 0

    def next(self) -> float:
        delay: float = min(self.maximum, self.initial * 2.0 ** min(self.failures, 30))
        self.failures += 1
        return delay * (1 - 0.25 * random.random())

    def reset(self) -> None:
        self.failures = 0
