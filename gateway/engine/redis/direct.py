"""Streaming pipelining over one dedicated connection (standalone and Sentinel shards).

:class:`CommandLink` waits for a pipeline's replies before it sends the next one, so Redis
idles while Python packs and Python idles while Redis runs the scripts. Here each tick's
batch is written at once (still one write per tick) and a reader task takes the replies in
FIFO order, so packing batch N+1 overlaps Redis running batch N. One connection keeps the
order in which commands were queued, which is the order Redis runs them in.

Deadlines: one timer watches the oldest unanswered command; when it passes ``io_timeout``
the connection is declared dead, every unanswered future fails with
:class:`StoreUnavailable`, and the next command reconnects. After a Redis restart the
scripts are gone: NOSCRIPT replies are reloaded and resent once, in their original order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any

import hiredis
from redis.exceptions import NoScriptError, ResponseError

from gateway.engine.redis.pipeline import CommandLink, Parse, StoreError, StoreUnavailable, settle
from gateway.engine.redis.scripts import Scripts

__all__ = ["DirectLink"]

# (args, parse, future, deadline, retried)
_Op = tuple[tuple[Any, ...], Parse, "asyncio.Future[Any]", float, bool]


class DirectLink(CommandLink):
    """A CommandLink whose batches do not wait for the previous batch's replies."""

    __slots__ = (
        "_conn",
        "_connect_timeout",
        "_connecting",
        "_inflight",
        "_noscript",
        "_reader",
        "_reloading",
        "_timer",
        "_wake",
        "_writers",
    )

    def __init__(self, client: Any, scripts: Scripts, loop: asyncio.AbstractEventLoop, io_timeout: float,
                 connect_timeout: float) -> None:
        super().__init__(client, scripts, loop, io_timeout)
        self._connect_timeout = connect_timeout
        self._conn: Any = None
        self._connecting: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._inflight: deque[_Op] = deque()
        self._wake: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._noscript: list[_Op] = []
        self._reloading = False
        self._writers: set[asyncio.Task[None]] = set()

    # -- writing -------------------------------------------------------------------------

    def _flush(self) -> None:
        self._scheduled = False
        if not self._pending or self._closed:
            return
        if self._conn is None:
            if self._connecting is None:
                self._connecting = self._loop.create_task(self._connect())
            return
        batch, self._pending = self._pending, []
        deadline = self._batch_started + self._io_timeout
        self._send_ops([(args, parse, fut, deadline, False) for args, parse, fut in batch])

    def _send_ops(self, ops: list[_Op]) -> None:
        conn = self._conn
        try:
            # hiredis's C packer (the library redis-py parses with): ~2 us per publish where
            # redis-py's asyncio pack_commands, pure Python, takes ~8 us.
            pack = hiredis.pack_command
            packed = [b"".join([pack(op[0]) for op in ops])]
        except Exception as exc:  # an unencodable argument: fail this batch only
            for op in ops:
                if not op[2].done():
                    op[2].set_exception(StoreError(f"redis: cannot encode command: {exc}"))
            return
        self._inflight.extend(ops)
        self.round_trips += 1
        self.commands += len(ops)
        task = self._loop.create_task(self._write(conn, packed))  # writes synchronously up to drain()
        self._writers.add(task)
        task.add_done_callback(self._writers.discard)
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)
        if self._timer is None:
            self._arm()

    async def _write(self, conn: Any, packed: list[bytes]) -> None:
        try:
            await conn.send_packed_command(packed, check_health=False)
        except Exception as exc:
            self._abort(conn, exc)

    async def _connect(self) -> None:
        try:
            remaining = self._batch_started + self._io_timeout - self._loop.time()
            conn = self._client.connection_pool.make_connection()
            try:
                async with asyncio.timeout(max(0.0, min(self._connect_timeout, remaining))):
                    await conn.connect()
            except Exception as exc:
                self.up = False
                with contextlib.suppress(Exception):
                    await conn.disconnect(nowait=True)
                pending, self._pending = self._pending, []
                error = StoreUnavailable(f"redis: cannot connect: {type(exc).__name__}: {exc}")
                for _, _, fut in pending:
                    if not fut.done():
                        fut.set_exception(error)
                return
            if self._closed:
                await conn.disconnect(nowait=True)
                return
            self._conn = conn
            self._reader = self._loop.create_task(self._read(conn))
        finally:
            self._connecting = None
        self._flush()

    # -- reading -------------------------------------------------------------------------

    async def _read(self, conn: Any) -> None:
        inflight = self._inflight
        while True:
            if not inflight:
                self._wake = self._loop.create_future()
                await self._wake
                continue
            try:
                reply = await conn.read_response(disconnect_on_error=False)
            except ResponseError as exc:
                reply = exc
            except Exception as exc:
                self._abort(conn, exc)
                return
            args, parse, fut, deadline, retried = inflight.popleft()
            self.up = True
            if isinstance(reply, NoScriptError) and not retried:
                self._noscript.append((args, parse, fut, deadline, True))
                if not self._reloading:
                    self._reloading = True
                    self._loop.create_task(self._reload())
                continue
            settle(fut, parse, reply)

    async def _reload(self) -> None:
        """A restarted Redis forgot the scripts: load them, then resend what NOSCRIPT refused."""
        try:
            async with asyncio.timeout(self._io_timeout):
                await self._scripts.load()
        except Exception as exc:
            ops, self._noscript = self._noscript, []
            for op in ops:
                if not op[2].done():
                    op[2].set_exception(StoreUnavailable(f"redis: cannot reload scripts: {exc!r}"))
            return
        finally:
            self._reloading = False
        ops, self._noscript = self._noscript, []
        if ops and self._conn is not None:
            self._send_ops(ops)
        else:
            for op in ops:
                if not op[2].done():
                    op[2].set_exception(StoreUnavailable("redis: connection lost"))

    # -- deadlines and failure -----------------------------------------------------------

    def _arm(self) -> None:
        self._timer = None
        if self._inflight:
            self._timer = self._loop.call_at(self._inflight[0][3], self._check)

    def _check(self) -> None:
        self._timer = None
        if self._inflight and self._inflight[0][3] <= self._loop.time():
            self._abort(self._conn, TimeoutError(f"no reply within {self._io_timeout}s"))
        else:
            self._arm()

    def _abort(self, conn: Any, exc: BaseException) -> None:
        """The connection is unusable: fail everything unanswered, reconnect on the next command."""
        if conn is not self._conn or conn is None:
            return
        self.up = False
        self._conn = None
        if self._reader is not None:
            self._reader.cancel()
            self._reader = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        error = StoreUnavailable(f"redis: {type(exc).__name__}: {exc}")
        while self._inflight:
            fut = self._inflight.popleft()[2]
            if not fut.done():
                fut.set_exception(error)
        self._loop.create_task(conn.disconnect(nowait=True))
        if self._pending and not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    async def close(self) -> None:
        self._closed = True
        conn = self._conn
        if conn is not None:
            self._abort(conn, StoreUnavailable("redis store is closed"))
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)
        for task in (self._connecting, *self._writers):
            if task is not None:
                task.cancel()
        await super().close()
