"""Retry and reconnect delays for the consumers and events out: pure."""

from __future__ import annotations

import random

__all__ = ["backoff_delay"]


def backoff_delay(attempt: int, low: float, high: float, rng: random.Random) -> float:
    """Attempt 1 waits about ``low``; each further attempt doubles it, up to ``high``. The delay is
    drawn from the upper half of that ceiling, so peers that failed together spread out."""
    ceiling = min(high, low * 2.0 ** max(0, attempt - 1))
    return ceiling / 2 + rng.random() * ceiling / 2
