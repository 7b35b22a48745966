"""A timer wheel: many coarse deadlines for the price of a few bytes each.

Every connection has a ping deadline, most an expiry one, some a pong or a subscription
one. As event-loop timers they cost about half a KiB each (the handle, the loop's own
timer object, a context), which at tens of thousands of connections is a large part of
the memory a connection holds. Here a deadline is one small slotted object in a bucket per
``resolution`` of time; the I/O edge drives :meth:`TimerWheel.due` from a single loop
timer. Deadlines fire never early, at most about two ``resolution`` late (the bucket, then
the driver's period), and in the order they were added within one bucket.

A cancelled deadline drops its callback at once and its entry with its bucket, or sooner:
once cancelled entries outnumber the live ones (and there are over :data:`COMPACT_MIN`),
every bucket is swept. Without that, connection churn with long deadlines (a token expiry
hours away, cancelled when the client leaves a second later) piles up one entry per
connection ever made within the token's lifetime.

Pure: no loop and no clock; the caller passes ``now`` (monotonic seconds).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

__all__ = ["Deadline", "TimerWheel", "COMPACT_MIN"]

#: Cancelled entries a wheel may hold before a sweep, whatever its live count.
COMPACT_MIN = 1024


class Deadline:
    """One scheduled call; :meth:`cancel` drops the callback (and what it references) at once,
    the empty entry leaves with its bucket (or an earlier sweep)."""

    __slots__ = ("args", "callback")

    #: The wheel that holds it, told of each cancellation. A class attribute of each wheel's
    #: own subclass (:class:`TimerWheel` makes it), so that no deadline pays a slot for it.
    wheel: ClassVar[TimerWheel | None] = None

    def __init__(self, callback: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.callback: Callable[..., Any] | None = callback
        self.args = args

    def cancel(self) -> None:
        callback, _ = self.take()
        if callback is not None and self.wheel is not None:  # not fired, nor cancelled before
            self.wheel.cancelled_one()

    def take(self) -> tuple[Callable[..., Any] | None, tuple[Any, ...]]:
        """The callback and its arguments, once (None after that or after a cancel): how the
        driver runs a due deadline, which is not a cancellation."""
        callback, args = self.callback, self.args
        self.callback = None
        self.args = ()
        return callback, args

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
        # Cancellations since the last sweep. An upper bound: a deadline cancelled after due()
        # handed it out (by an earlier callback of the same tick) is counted, though no bucket
        # holds it; that only brings a sweep forward, and a sweep recounts.
        self.cancelled = 0
        self._deadline: type[Deadline] = type("WheelDeadline", (Deadline,), {"__slots__": (), "wheel": self})

    def add(self, now: float, delay: float, callback: Callable[..., Any], *args: Any) -> Deadline:
        """Call ``callback(*args)`` once ``delay`` seconds after ``now`` have passed."""
        if self._cursor is None:
            self._cursor = math.floor(now / self.resolution)
        # The first bucket whose start is at or after the deadline: never early.
        tick = max(math.ceil((now + max(0.0, delay)) / self.resolution), self._cursor + 1)
        deadline = self._deadline(callback, args)
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
            live = [d for d in bucket if d.callback is not None]
            self.cancelled = max(0, self.cancelled - (len(bucket) - len(live)))
            out += live
        self._cursor = current
        return out

    def cancelled_one(self) -> None:
        """A deadline of this wheel was cancelled: sweep once cancelled entries outnumber the
        live ones (amortised O(1) per cancellation)."""
        self.cancelled += 1
        if self.cancelled > COMPACT_MIN and 2 * self.cancelled > self.pending:
            self.compact()

    def compact(self) -> None:
        """Drop the cancelled entries of every bucket, and the buckets left empty."""
        buckets: dict[int, list[Deadline]] = {}
        pending = 0
        for tick, bucket in self._buckets.items():
            live = [d for d in bucket if d.callback is not None]
            if live:
                buckets[tick] = live
                pending += len(live)
        self._buckets = buckets
        self.pending = pending
        self.cancelled = 0
