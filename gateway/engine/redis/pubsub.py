"""One shard's pub/sub side: a dedicated connection, its reader task, batched SUBSCRIBE,
reconnect with backoff, and a liveness probe.

Pub/sub is at-most-once: a connection that dies (or, as Centrifugo saw behind Sentinel,
silently stops delivering while looking healthy) loses messages. So the link (1) probes
itself: every ``probe_interval`` it publishes a token to its own probe channel through the
command link and expects it back within ``probe_timeout``, else it declares itself dead;
(2) after any reconnect it resubscribes every wanted channel and then reports the shard to
``on_resubscribed``, whose owner marks those channels' streams as possibly gapped so
subscribers get a position check instead of a silent hole.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Callable
from typing import Any

from gateway.engine.redis.pipeline import StoreUnavailable

__all__ = ["SUBSCRIBE_BATCH", "PubSubLink"]

log = logging.getLogger("shardgate.redis")

#: Channels per SUBSCRIBE / UNSUBSCRIBE command, as Centrifugo batches them.
SUBSCRIBE_BATCH = 512
_BACKOFF_MIN = 0.05
_BACKOFF_MAX = 2.0


class PubSubLink:
    """Subscriptions of one shard over one pub/sub connection (redis-py ``PubSub``)."""

    def __init__(self, index: int, make_pubsub: Callable[[], Any], loop: asyncio.AbstractEventLoop, *,
                 dispatch: Callable[[bytes, bytes], None], on_resubscribed: Callable[[int], None] | None,
                 probe_channel: str, publish_probe: Callable[[bytes], asyncio.Future[Any]],
                 always: tuple[str, ...], probe_interval: float, probe_timeout: float,
                 connect_timeout: float, io_timeout: float) -> None:
        self.index = index
        self._make = make_pubsub
        self._loop = loop
        self._dispatch = dispatch
        self._on_resubscribed = on_resubscribed
        self._probe_channel = probe_channel.encode()
        self._publish_probe = publish_probe
        self._always = (probe_channel, *always)
        self._probe_interval = probe_interval
        self._probe_timeout = probe_timeout
        self._connect_timeout = connect_timeout
        self._io_timeout = io_timeout
        self.wanted: set[str] = set()
        self.confirmed: set[str] = set()
        # SUBSCRIBE ("S") / UNSUBSCRIBE ("U") sent per channel and not yet answered, in order:
        # a subscribe is confirmed only by a SUBSCRIBE reply with no UNSUBSCRIBE after it.
        self._ops: dict[str, deque[str]] = {}
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._dirty: set[str] = set()
        self._flush_scheduled = False
        self._ps: Any = None
        self._resub_pending: set[str] | None = None
        self._probe_seq = 0
        self._probe_waiter: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.up = False
        self.reconnects = 0
        self.dropped = 0  # messages on channels nobody here asked for

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Connect and subscribe the fixed channels; StoreUnavailable within connect_timeout."""
        try:
            async with asyncio.timeout(self._connect_timeout):
                ps = await self._connect()
        except Exception as exc:
            raise StoreUnavailable(f"redis pub/sub shard {self.index}: cannot connect: {exc!r}") from None
        self._task = self._loop.create_task(self._lifecycle(ps))

    async def _connect(self) -> Any:
        ps = self._make()
        try:
            await ps.connect()
            self.confirmed.clear()
            self._ops.clear()
            # Everything wanted so far goes in this full subscribe; later changes flush over ps.
            self._dirty.clear()
            names = sorted(self.wanted.union(self._always))
            self._ps = ps
            for i in range(0, len(names), SUBSCRIBE_BATCH):
                batch = names[i:i + SUBSCRIBE_BATCH]
                self._sent("S", batch)
                await ps.execute_command("SUBSCRIBE", *batch)
        except BaseException:
            self._ps = None
            with contextlib.suppress(Exception):
                await ps.aclose()
            raise
        return ps

    async def _lifecycle(self, ps: Any) -> None:
        attempt = 0
        while True:
            reader = self._loop.create_task(self._read(ps))
            watchdog = self._loop.create_task(self._watch())
            try:
                await asyncio.wait((reader, watchdog), return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (reader, watchdog):
                    task.cancel()
                await asyncio.gather(reader, watchdog, return_exceptions=True)
                self.up = False
                self._ps = None
                self.confirmed.clear()
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(self._io_timeout):
                        await ps.aclose()
            if reader.done() and not reader.cancelled() and reader.exception() is not None:
                log.warning("redis pub/sub shard %d lost: %r", self.index, reader.exception())
            while True:  # reconnect with jittered exponential backoff
                delay = min(_BACKOFF_MIN * 2 ** attempt, _BACKOFF_MAX) * (0.5 + random.random())
                attempt += 1
                await asyncio.sleep(delay)
                try:
                    async with asyncio.timeout(self._connect_timeout + self._io_timeout):
                        self._resub_pending = set(self.wanted.union(self._always))
                        ps = await self._connect()
                except Exception as exc:  # keep trying until close()
                    self._resub_pending = None
                    log.debug("redis pub/sub shard %d reconnect failed: %r", self.index, exc)
                    continue
                self.reconnects += 1
                attempt = 0
                break

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for waiters in self._waiters.values():
            for fut in waiters:
                if not fut.done():
                    fut.set_exception(StoreUnavailable("redis store is closed"))
        self._waiters.clear()

    # -- reading -------------------------------------------------------------------------

    async def _read(self, ps: Any) -> None:
        while True:
            reply = await ps.parse_response(block=True)
            if not reply:
                continue
            kind = reply[0]
            if kind == b"message":
                channel, data = reply[1], reply[2]
                if channel == self._probe_channel:
                    waiter = self._probe_waiter
                    if waiter is not None and not waiter.done() and data == str(self._probe_seq).encode():
                        waiter.set_result(None)
                else:
                    self._dispatch(channel, data)
            elif kind == b"subscribe":
                self._subscribed(reply[1].decode())
            elif kind == b"unsubscribe":
                name = reply[1].decode()
                self._answered(name)
                self.confirmed.discard(name)

    def _sent(self, op: str, names: list[str]) -> None:
        for name in names:
            self._ops.setdefault(name, deque()).append(op)

    def _answered(self, name: str) -> deque[str]:
        ops = self._ops.get(name)
        if ops:
            ops.popleft()
            if not ops:
                del self._ops[name]
                return deque()
            return ops
        return deque()

    def _subscribed(self, name: str) -> None:
        self.confirmed.add(name)
        if "U" in self._answered(name):
            return  # an UNSUBSCRIBE sent after this SUBSCRIBE is on its way: not subscribed yet
        if name == self._always[0]:
            self.up = True
        for fut in self._waiters.pop(name, ()):
            if not fut.done():
                fut.set_result(None)
        pending = self._resub_pending
        if pending is not None:
            pending.discard(name)
            if not pending:
                self._resub_pending = None
                log.info("redis pub/sub shard %d resubscribed", self.index)
                if self._on_resubscribed is not None:
                    self._on_resubscribed(self.index)

    async def _watch(self) -> None:
        """Return (so the lifecycle reconnects) when a probe does not come back in time."""
        while True:
            await asyncio.sleep(self._probe_interval)
            self._probe_seq += 1
            waiter: asyncio.Future[None] = self._loop.create_future()
            self._probe_waiter = waiter
            sent = self._publish_probe(str(self._probe_seq).encode())
            sent.add_done_callback(_consume)
            try:
                async with asyncio.timeout(self._probe_timeout):
                    await waiter
            except TimeoutError:
                log.warning("redis pub/sub shard %d: probe not received within %.1fs; reconnecting",
                            self.index, self._probe_timeout)
                return

    # -- subscribing ---------------------------------------------------------------------

    def subscribe(self, name: str) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = self._loop.create_future()
        if self._closed:
            fut.set_exception(StoreUnavailable("redis store is closed"))
            return fut
        if name in self.wanted and name in self.confirmed and name not in self._ops and name not in self._dirty:
            fut.set_result(None)
            return fut
        self._waiters.setdefault(name, []).append(fut)
        self._loop.call_later(self._io_timeout, self._expire, name, fut)
        if name not in self.wanted:
            self.wanted.add(name)
            self._mark(name)
        return fut

    def unsubscribe(self, name: str) -> None:
        if name in self.wanted:
            self.wanted.discard(name)
            self._mark(name)

    def _expire(self, name: str, fut: asyncio.Future[None]) -> None:
        if fut.done():
            return
        fut.set_exception(StoreUnavailable(f"redis: SUBSCRIBE not confirmed within {self._io_timeout}s"))
        waiters = self._waiters.get(name)
        if waiters is not None:
            with contextlib.suppress(ValueError):
                waiters.remove(fut)
            if not waiters:
                del self._waiters[name]

    def _mark(self, name: str) -> None:
        self._dirty.add(name)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        ps = self._ps
        if ps is None or not self._dirty:
            return  # a reconnect subscribes everything wanted
        dirty, self._dirty = self._dirty, set()
        subs = sorted(n for n in dirty if n in self.wanted)
        unsubs = sorted(n for n in dirty if n not in self.wanted)
        self._sent("S", subs)
        self._sent("U", unsubs)
        self._loop.create_task(self._send(ps, subs, unsubs))

    async def _send(self, ps: Any, subs: list[str], unsubs: list[str]) -> None:
        try:
            for command, names in (("SUBSCRIBE", subs), ("UNSUBSCRIBE", unsubs)):
                for i in range(0, len(names), SUBSCRIBE_BATCH):
                    await ps.execute_command(command, *names[i:i + SUBSCRIBE_BATCH])
        except Exception as exc:  # the reader sees the same failure and reconnects
            log.debug("redis pub/sub shard %d: send failed: %r", self.index, exc)


def _consume(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()
