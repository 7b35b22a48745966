"""The periodic position check (Centrifugo's ``client.channel_position_check_delay``).

Pub/sub can lose a message silently (a Redis failover, a link that dropped and came back
without the store noticing, the last publication before a quiet period): no later
publication arrives to reveal the gap by its offset. So every ``delay`` seconds each worker
compares, for every channel its hub delivers with positions, the position it delivered
with the stream's top in the engine. A different epoch means the stream was recreated;
a top ahead of what was delivered is re-checked ``recheck`` seconds later (the publication
may just be in flight) and, if still missing, is a loss. Either way the channel's positioned
subscribers resubscribe and recover (unsubscribe 2500).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import Protocol

from gateway.core.errors import ClientError
from gateway.core.model import Done, StreamPosition

__all__ = ["PositionCheck"]

log = logging.getLogger("shardgate.engine")

_MAX_PER_ROUND = 10_000  # bounds the work of one round; the rest waits for the next


class _Delivered(Protocol):
    epoch: str
    offset: int


#: ``read(channel, done)``: the stream's current top, or an error (skipped this round).
ReadPosition = Callable[[str, Done[StreamPosition]], None]


class PositionCheck:
    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float, delivered: Callable[[], dict[str, _Delivered]],
                 read: ReadPosition, lost: Callable[[str], None], recheck: float = 5.0) -> None:
        self.loop = loop
        self.delay = delay
        self.recheck = min(recheck, delay)
        self._delivered = delivered
        self._read = read
        self._lost = lost
        self._suspects: dict[str, StreamPosition] = {}  # channel -> top seen ahead of delivery
        self._timer: asyncio.TimerHandle | None = None
        self.losses = 0

    def start(self) -> None:
        if self.delay > 0:
            self._timer = self.loop.call_later(self.delay, self._round)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _round(self) -> None:
        channels = [name for name, local in self._delivered().items() if local.epoch][:_MAX_PER_ROUND]
        for channel in channels:
            self._read(channel, functools.partial(self._compare, channel))
        delay = self.recheck if self._suspects else self.delay
        self._timer = self.loop.call_later(delay, self._round)

    def _compare(self, channel: str, top: StreamPosition | None, error: ClientError | None) -> None:
        local = self._delivered().get(channel)
        if error is not None or top is None or local is None or not local.epoch:
            self._suspects.pop(channel, None)
            return
        if top.epoch != local.epoch:
            self._report(channel, f"epoch {local.epoch} -> {top.epoch}")
            return
        if top.offset <= local.offset:
            self._suspects.pop(channel, None)
            return
        seen = self._suspects.get(channel)
        if seen is not None and seen.epoch == top.epoch and local.offset < seen.offset:
            self._report(channel, f"delivered {local.offset}, stream at {seen.offset}")
            return
        self._suspects[channel] = top

    def _report(self, channel: str, why: str) -> None:
        self._suspects.pop(channel, None)
        self.losses += 1
        log.warning("position check: %r lost publications (%s); subscribers recover", channel, why)
        self._lost(channel)
