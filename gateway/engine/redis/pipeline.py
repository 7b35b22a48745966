"""One shard's command side: everything queued within a loop tick goes out as ONE pipeline.

Callers get an ``asyncio.Future`` straight away; the first call of a tick schedules one
flush with ``call_soon``, so N publishes made while handling one batch of frames cost one
write, one read burst and one task, not N.

:class:`CommandLink` is the redis-py ``pipeline()`` form, used for Redis Cluster (whose
pipeline routes each command to its slot's node). While a pipeline is in flight the next
batch keeps growing and leaves as soon as the replies arrive; one pipeline in flight keeps
per-channel publish order. Standalone and Sentinel shards use the streaming subclass in
:mod:`.direct`, which does not wait for the previous batch's replies.

Deadlines are per batch: a batch's futures fail with :class:`StoreUnavailable` at the
latest ``io_timeout`` after its first command was queued, whether Redis is slow, gone or
still being connected to.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from redis.exceptions import NoScriptError

from gateway.engine.redis.scripts import Scripts

__all__ = ["CommandLink", "StoreError", "StoreUnavailable", "settle"]


class StoreError(Exception):
    """Redis answered one command with an error (a script bug, OOM, wrong type)."""


class StoreUnavailable(StoreError):
    """Redis could not be reached or did not answer within ``io_timeout`` (the caller maps it
    to the temporary error 100)."""


Parse = Callable[[Any], Any]


_NUMKEYS = [str(n).encode() for n in range(8)]


def _same(value: Any) -> Any:
    return value



def settle(fut: asyncio.Future[Any], parse: Parse, reply: Any) -> None:
    """Complete ``fut`` from its command's reply; an error reply or a malformed one fails only
    this future."""
    if fut.done():
        return
    if isinstance(reply, Exception):
        fut.set_exception(StoreError(f"redis: {reply}"))
        return
    try:
        fut.set_result(parse(reply))
    except Exception as exc:
        fut.set_exception(StoreError(f"redis: unexpected reply: {exc}"))

class CommandLink:
    """Queue → one pipeline per tick → futures, for one Redis (or one Redis Cluster) client."""

    __slots__ = (
        "_batch_started",
        "_busy",
        "_client",
        "_closed",
        "_cluster",
        "_io_timeout",
        "_loop",
        "_pending",
        "_scheduled",
        "_scripts",
        "_task",
        "commands",
        "round_trips",
        "up",
    )

    def __init__(self, client: Any, scripts: Scripts, loop: asyncio.AbstractEventLoop, io_timeout: float,
                 *, cluster: bool = False) -> None:
        self._client = client
        self._cluster = cluster
        self._scripts = scripts
        self._loop = loop
        self._io_timeout = io_timeout
        self._pending: list[tuple[tuple[Any, ...], Parse, asyncio.Future[Any]]] = []
        self._batch_started = 0.0
        self._scheduled = False
        self._busy = False
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self.round_trips = 0  # pipelines sent (a NOSCRIPT reload and resend counts as one more)
        self.commands = 0
        self.up = True  # the last pipeline got its replies

    def call(self, args: tuple[Any, ...], parse: Parse = _same) -> asyncio.Future[Any]:
        """Queue one command; the future gets ``parse(reply)``."""
        fut: asyncio.Future[Any] = self._loop.create_future()
        if self._closed:
            fut.set_exception(StoreUnavailable("redis store is closed"))
            return fut
        if self._cluster and isinstance(args[0], bytes):  # the cluster router matches str command names
            args = (args[0].decode(), *args[1:])
        if not self._pending:
            self._batch_started = self._loop.time()
        self._pending.append((args, parse, fut))
        if not self._scheduled and not self._busy:
            self._scheduled = True
            self._loop.call_soon(self._flush)
        return fut

    def script(self, name: str, keys: tuple[bytes, ...], args: tuple[Any, ...], parse: Parse = _same
               ) -> asyncio.Future[Any]:
        """EVALSHA; bytes arguments skip redis-py's per-argument type checks on the hot path."""
        return self.call((b"EVALSHA", self._scripts.sha_bytes[name], _NUMKEYS[len(keys)], *keys, *args), parse)

    def _flush(self) -> None:
        self._scheduled = False
        if self._busy or not self._pending:
            return
        batch, self._pending = self._pending, []
        self._busy = True
        self._task = self._loop.create_task(self._run(batch, self._batch_started))

    async def _send(self, batch: list[tuple[tuple[Any, ...], Parse, asyncio.Future[Any]]]) -> list[Any]:
        pipe = self._client.pipeline(transaction=False)
        for args, _, _ in batch:
            pipe.execute_command(*args)
        self.round_trips += 1
        self.commands += len(batch)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies

    async def _run(self, batch: list[tuple[tuple[Any, ...], Parse, asyncio.Future[Any]]], started: float) -> None:
        try:
            try:
                async with asyncio.timeout(started + self._io_timeout - self._loop.time()):
                    replies = await self._send(batch)
                    again = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
                    if again:  # a restarted Redis forgot our scripts; none of these ran
                        await self._scripts.load()
                        for i, reply in zip(again, await self._send([batch[i] for i in again]), strict=True):
                            replies[i] = reply
            except Exception as exc:  # any failure of the whole pipeline is "unavailable"
                self.up = False
                error = StoreUnavailable(f"redis: {type(exc).__name__}: {exc}" if str(exc) else
                                         f"redis: {type(exc).__name__}")
                for _, _, fut in batch:
                    if not fut.done():
                        fut.set_exception(error)
                return
            self.up = True
            for (_, parse, fut), reply in zip(batch, replies, strict=True):
                settle(fut, parse, reply)
        finally:
            for _, _, fut in batch:  # cancelled by close(): nobody may wait forever
                if not fut.done():
                    fut.set_exception(StoreUnavailable("redis store is closed"))
            self._busy = False
            if self._pending and not self._scheduled and not self._closed:
                self._flush()

    async def close(self) -> None:
        self._closed = True
        pending, self._pending = self._pending, []
        for _, _, fut in pending:
            if not fut.done():
                fut.set_exception(StoreUnavailable("redis store is closed"))
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
