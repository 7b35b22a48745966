"""A timer wheel: many coarse deadlines for the price of a few bytes each.

Every connection has a ping deadline, most an expiry one, some a pong or a subscription
one. As event-loop timers they cost about half a KiB each (the handle, the loop's own
timer object, a context), which at tens of thousands of connections is a large part of
the memory a connection holds. Here a deadline is one small slotted object in a bucket per
``resolution`` of time; the I/O edge drives :meth:`TimerWheel.due` from a single loop
timer. Deadlines fire never early, at most about two ``resolution`` late (the bucket, then
the driver's period), and in the order they were added within one bucket.

Pure: no loop and no clock; the caller passes ``now`` (monotonic seconds).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

__all__ = ["Deadline", "TimerWheel"]


class Deadline:
    """One scheduled call; :meth:`cancel` drops the callback (and what it references) at once,
    the empty entry leaves with its bucket."""

    __slots__ = ("args", "callback")

    def __init__(self, callback: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.callback: Callable[..., Any] | None = callback
        self.args = args

    def cancel(self) -> None:
        self.callback = None
        self.args = ()

    def cancelled(self) -> bool:
        return self.callback is None


class TimerWheel:
    def __init__(self, resolution: float) -> None:
        if resolution <= 0:
            raise ValueError("resolution must be positive")
        self.resolution = resolution
        self._buckets: dict[int, list[Deadline]] = {}
        self._cursor: int | None = None  # the last bucket handed out by due()
        self.pending = 0  # entries held, cancelled ones included until their bucket passes

    def add(self, now: float, delay: float, callback: Callable[..., Any], *args: Any) -> Deadline:
        """Call ``callback(*args)`` once ``delay`` seconds after ``now`` have passed."""
        if self._cursor is None:
            self._cursor = math.floor(now / self.resolution)
        # The first bucket whose start is at or after the deadline: never early.
        tick = max(math.ceil((now + max(0.0, delay)) / self.resolution), self._cursor + 1)
        deadline = Deadline(callback, args)
        bucket = self._buckets.get(tick)
        if bucket is None:
            self._buckets[tick] = [deadline]
        else:
            bucket.append(deadline)
        self.pending += 1
        return deadline

    def due(self, now: float) -> list[Deadline]:
        """The live deadlines whose bucket has begun by ``now``, in order; each is returned
        once. The caller runs them (a callback may add more: they go to later buckets)."""
        if self._cursor is None:
            return []
        current = math.floor(now / self.resolution)
        out: list[Deadline] = []
        if current <= self._cursor:
            return out
        buckets = self._buckets
        if current - self._cursor > len(buckets):
            # A long stall (or a sparse wheel): visit only the buckets that exist.
            ticks: Any = sorted(t for t in buckets if t <= current)
        else:
            ticks = range(self._cursor + 1, current + 1)
        for tick in ticks:
            bucket = buckets.pop(tick, None)
            if bucket is None:
                continue
            self.pending -= len(bucket)
            out.extend(d for d in bucket if d.callback is not None)
        self._cursor = current
        return out
