"""The composition root of one worker: hub, owner shard, bus routing, verifiers.

A channel's operations run on its owner slot. When that is this worker they run
synchronously through :class:`gateway.engine.memory.OwnerShard`; otherwise they travel as a
REQUEST over the bus and the answer comes back as a REPLY on the same ordered pipe as
the owner's publications, which is what lets a subscribe reply mark the exact point
from which this worker's subscriber receives the stream.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from gateway.auth import TokenVerifier
from gateway.cluster.control import Control
from gateway.config import Config
from gateway.core.errors import UNSUBSCRIBE_INSUFFICIENT_STATE, ClientError
from gateway.engine.memory import OwnerShard
from gateway.hub import Hub
from gateway.obs.stats import Stats
from gateway.protocol.centrifuge_json import dumps
from gateway.session.rpc import RpcRegistry, echo, load_handler
from sharding.envelope import (
    FLAG_HANDOFF_DONE,
    FLAG_HELLO_ANSWER,
    FLAG_HELLO_HANDOFF,
    Envelope,
    Kind,
)
from sharding.hashing import owner
from sharding.ids import make_client_id

__all__ = ["Node", "Bus", "Flusher", "ReplyCallback", "ERROR_SHARD_UNAVAILABLE", "CONTROL_PREFIX"]

log = logging.getLogger("shardgate.node")

ReplyCallback = Callable[[dict[str, Any] | None, ClientError | None], None]

# A shard that cannot be reached or does not answer in time: temporary, the SDKs retry.
ERROR_SHARD_UNAVAILABLE = ClientError(100, "internal server error: shard unavailable", temporary=True)
# The owner is handing its channels to a reloaded successor: retry in a moment.
ERROR_RELOADING = ClientError(100, "internal server error: channel owner reloading", temporary=True)

# Requests addressed to a slot (not routed by channel) carry this method prefix.
CONTROL_PREFIX = "ctl."
_HELLO_RETRY = 0.02
_MAX_EXPIRED = 10_000
_OWNER_CACHE_SIZE = 65_536


class Bus(Protocol):
    """Ordered, message-oriented links to the other slots (``sharding.bus`` implements it)."""

    endpoint: str

    def send(self, slot: int, env: Envelope) -> bool:
        """Queue ``env`` for ``slot``; False when the peer is not reachable right now."""
        ...

    def connect_peer(self, slot: int, path: str) -> None:
        """Point the link to ``slot`` at the endpoint a (new) incarnation announced."""
        ...

    def send_all_to(self, path: str, envelopes: list[Envelope], timeout: float) -> bool:
        """Deliver in order to one endpoint (a reload successor); blocking."""
        ...


class Flushable(Protocol):
    def flush(self) -> None: ...


class Flusher:
    """Flush every connection that got output this tick, once, at the end of the tick."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._dirty: list[Flushable] = []

    def mark(self, conn: Flushable) -> None:
        if not self._dirty:
            self._loop.call_soon(self._flush)
        self._dirty.append(conn)

    def _flush(self) -> None:
        dirty = self._dirty
        self._dirty = []
        for conn in dirty:
            conn.flush()


@dataclass(slots=True)
class _Pending:
    deadline: float
    callback: ReplyCallback
    slot: int
    method: str
    channel: str
    body: dict[str, Any]


class Node:
    def __init__(self, config: Config, slot: int, workers: int, loop: asyncio.AbstractEventLoop,
                 clock: Callable[[], float], rng: random.Random | None = None) -> None:
        self.config = config
        self.slot = slot
        self.workers = workers
        self.loop = loop
        self.clock = clock
        self.rng = rng or random.Random()
        self.incarnation = self.rng.getrandbits(32)
        self.metrics = Stats()
        self.hub = Hub(self.metrics)
        self.flusher = Flusher(loop)
        self.shard = OwnerShard(config, self._fanout, clock, self.rng)
        self.verifier = TokenVerifier(config.client.token, prefetch=True)
        sub_keys = config.client.subscription_token
        self.sub_verifier = TokenVerifier(sub_keys, prefetch=True) if sub_keys.configured else self.verifier
        self.control = Control(self)
        self.started_at = clock()
        self.rpc = RpcRegistry()
        self.message_handler: Callable[[Any, Any], None] | None = None
        for method, target in config.shardgate.rpc_handlers:
            self.rpc.register(method, load_handler(target))
        if config.shardgate.rpc_echo:
            self.rpc.register("echo", echo)
            self.message_handler = lambda session, data: session.push_message(data)
        self.bus: Bus | None = None
        self._pending: dict[int, _Pending] = {}
        self._expired: dict[int, _Pending] = {}  # timed-out subscribes, to undo if they land late
        self._corr = self.rng.getrandbits(31)  # distinct from a predecessor's in-flight ids
        self._owners: dict[str, int] = {}
        self._peers: dict[int, int] = {}  # slot -> incarnation seen in its HELLO
        self._hello_unsent: dict[int, int] = {}  # slot -> HELLO flags still to deliver
        self._hello_retrying = False
        self._sweeper: asyncio.TimerHandle | None = None
        self.on_peer_change: Callable[[], None] | None = None
        self.on_handoff_done: Callable[[], None] | None = None
        self.frozen = False
        self.handoff_received = False

    # -- wiring ---------------------------------------------------------------------------------

    def attach_bus(self, bus: Bus, announce: bool = True) -> None:
        """Start talking to the other slots and begin the timeout sweep. A reload successor
        announces itself only after it installed its predecessor's state."""
        self.bus = bus
        self._schedule_sweep()
        if announce:
            self.announce()

    def announce(self, handoff: bool = False) -> None:
        """HELLO to every peer with our endpoint (and, after a handoff, "state preserved")."""
        flags = FLAG_HELLO_HANDOFF if handoff else 0
        self._hello_unsent = {s: flags for s in range(self.workers) if s != self.slot}
        self._send_hellos()

    @property
    def bus_ready(self) -> bool:
        """Every peer has heard from us and we from every peer."""
        return not self._hello_unsent and len(self._peers) >= self.workers - 1

    def _send_hellos(self) -> None:
        """Announce ourselves (flags 0) or answer an announcement (flags 1), retrying until
        the peer's pipe is connected: a peer that just restarted binds a new socket."""
        assert self.bus is not None
        retry_scheduled = bool(self._hello_unsent) and self._hello_retrying
        for slot, flags in list(self._hello_unsent.items()):
            hello = Envelope(Kind.HELLO, self.slot, corr=self.incarnation, flags=flags,
                             payload=self.bus.endpoint.encode())
            if self.bus.send(slot, hello):
                del self._hello_unsent[slot]
        if self._hello_unsent:
            if not retry_scheduled:
                self._hello_retrying = True
                self.loop.call_later(_HELLO_RETRY, self._retry_hellos)
        elif self.on_peer_change is not None:
            self.on_peer_change()

    def _retry_hellos(self) -> None:
        self._hello_retrying = False
        if self._hello_unsent:
            self._send_hellos()

    @property
    def connection_limit(self) -> int:
        """This worker's share of ``client.connection_limit`` (0 = none)."""
        limit = self.config.client.connection_limit
        return -(-limit // self.workers) if limit else 0

    @property
    def pending_requests(self) -> int:
        return len(self._pending)

    def new_client_id(self) -> str:
        return make_client_id(self.slot, self.rng)

    def owner(self, channel: str) -> int:
        slot = self._owners.get(channel)
        if slot is None:
            if len(self._owners) >= _OWNER_CACHE_SIZE:
                self._owners.clear()  # bounded: hashing is cheap, a burst of new names just recomputes
            slot = self._owners[channel] = owner(channel, self.workers)
        return slot

    # -- requests to channel owners -------------------------------------------------------------

    def request(self, channel: str, method: str, body: dict[str, Any], callback: ReplyCallback) -> None:
        """Run ``method`` on the channel's owner; ``callback`` gets (result, None) or (None, error)."""
        self._request(self.owner(channel), method, body, callback, channel)

    def request_slot(self, slot: int, method: str, body: dict[str, Any], callback: ReplyCallback,
                     timeout: float | None = None) -> None:
        """Run a control ``method`` (see ``gateway.cluster.control``) on the worker in ``slot``."""
        self._request(slot, CONTROL_PREFIX + method, body, callback, "", timeout)

    def _request(self, slot: int, method: str, body: dict[str, Any], callback: ReplyCallback, channel: str,
                 timeout: float | None = None) -> None:
        if slot == self.slot or self.bus is None:
            try:
                result = self._handle(method, body, self.slot)
            except ClientError as exc:
                callback(None, exc)
                return
            except Exception:
                log.exception("operation %s on %r failed", method, channel)
                callback(None, ClientError(100, "internal server error", temporary=True))
                return
            callback(result, None)
            return
        try:
            payload = dumps(body)
        except ClientError as exc:
            callback(None, exc)
            return
        self._corr = (self._corr + 1) & 0xFFFFFFFF or 1
        env = Envelope(Kind.REQUEST, self.slot, corr=self._corr, channel=method, payload=payload)
        if not self.bus.send(slot, env):
            callback(None, ERROR_SHARD_UNAVAILABLE)
            return
        deadline = self.clock() + (timeout or self.config.shardgate.bus_request_timeout)
        self._pending[self._corr] = _Pending(deadline, callback, slot, method, channel, body)

    def _handle(self, method: str, body: dict[str, Any], origin: int) -> dict[str, Any]:
        if method.startswith(CONTROL_PREFIX):
            return self.control.handle(method[len(CONTROL_PREFIX):], body)
        if self.frozen:
            raise ERROR_RELOADING
        return self.shard.handle(method, body, origin)

    # -- awaitable forms, for the HTTP API (never on the client hot path) ------------------------

    def _future(self) -> tuple[asyncio.Future[dict[str, Any]], ReplyCallback]:
        future: asyncio.Future[dict[str, Any]] = self.loop.create_future()

        def done(result: dict[str, Any] | None, error: ClientError | None) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result or {})

        return future, done

    async def call(self, channel: str, method: str, body: dict[str, Any]) -> dict[str, Any]:
        future, done = self._future()
        self.request(channel, method, body, done)
        return await future

    async def call_slot(self, slot: int, method: str, body: dict[str, Any],
                        timeout: float | None = None) -> dict[str, Any]:
        future, done = self._future()
        self.request_slot(slot, method, body, done, timeout)
        return await future

    async def survey(self, method: str, body: dict[str, Any],
                     timeout: float | None = None) -> list[tuple[int, dict[str, Any] | None]]:
        """Ask every slot; a slot that fails or does not answer in time gives None."""

        async def one(slot: int) -> tuple[int, dict[str, Any] | None]:
            try:
                return slot, await self.call_slot(slot, method, body, timeout)
            except ClientError:
                return slot, None

        return list(await asyncio.gather(*(one(slot) for slot in range(self.workers))))

    def notify(self, channel: str, method: str, body: dict[str, Any]) -> None:
        """A one-way owner operation (no answer)."""
        slot = self.owner(channel)
        if slot == self.slot or self.bus is None:
            if self.frozen:
                return  # retiring after a handoff: the successor owns this state now
            try:
                self._handle(method, body, self.slot)
            except Exception:
                log.exception("owner notify %s on %r failed", method, channel)
            return
        env = Envelope(Kind.NOTIFY, self.slot, channel=method, payload=orjson.dumps(body))
        if not self.bus.send(slot, env):
            self.metrics.bus_dropped += 1

    def _schedule_sweep(self) -> None:
        interval = min(0.25, self.config.shardgate.bus_request_timeout / 4)
        self._sweeper = self.loop.call_later(interval, self._sweep)

    def _sweep(self) -> None:
        now = self.clock()
        expired = [corr for corr, p in self._pending.items() if p.deadline <= now]
        for corr in expired:
            pending = self._pending.pop(corr)
            if pending.method == "subscribe":
                self._expired[corr] = pending
                while len(self._expired) > _MAX_EXPIRED:
                    del self._expired[next(iter(self._expired))]
            log.warning("request %s on %r to slot %d timed out", pending.method, pending.channel, pending.slot)
            pending.callback(None, ERROR_SHARD_UNAVAILABLE)
        self._schedule_sweep()

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for pending in self._pending.values():
            pending.callback(None, ERROR_SHARD_UNAVAILABLE)
        self._pending.clear()

    # -- delivery -------------------------------------------------------------------------------

    def _fanout(self, channel: str, slots: Iterable[int], offset: int, epoch: str, flags: int,
                data: bytes) -> None:
        env: Envelope | None = None
        for slot in slots:
            if slot == self.slot:
                self.hub.deliver(channel, data, offset, epoch, flags)
                continue
            if self.bus is None:
                continue
            if env is None:
                kind = Kind.PUBLICATION if offset else Kind.DELIVER
                env = Envelope(kind, self.slot, offset=offset, flags=flags, channel=channel, epoch=epoch,
                               payload=data, ts=self.clock())
            if not self.bus.send(slot, env):
                # The peer's queue is full or it is down; a positioned subscriber there
                # will see the gap by offset and resubscribe with recovery.
                self.metrics.bus_dropped += 1

    # -- bus input ------------------------------------------------------------------------------

    def on_envelope(self, env: Envelope) -> None:
        kind = env.kind
        if kind is Kind.PUBLICATION or kind is Kind.DELIVER:
            self.metrics.bus_latency.observe(max(0.0, self.clock() - env.ts))
            self.hub.deliver(env.channel, env.payload, env.offset, env.epoch, env.flags)
        elif kind is Kind.REQUEST:
            self._on_request(env)
        elif kind is Kind.REPLY:
            self._on_reply(env)
        elif kind is Kind.NOTIFY:
            try:
                self._handle(env.channel, orjson.loads(env.payload), env.origin)
            except Exception:
                log.exception("notify %s from slot %d failed", env.channel, env.origin)
        elif kind is Kind.HELLO:
            self._on_hello(env)
        elif kind is Kind.HANDOFF:
            self._on_handoff(env)

    def _on_request(self, env: Envelope) -> None:
        assert self.bus is not None
        try:
            result = self._handle(env.channel, orjson.loads(env.payload), env.origin)
            reply = Envelope(Kind.REPLY, self.slot, corr=env.corr, payload=orjson.dumps(result))
        except ClientError as exc:
            reply = Envelope(Kind.REPLY, self.slot, corr=env.corr, flags=1, payload=orjson.dumps(exc.as_dict()))
        except Exception:
            log.exception("request %s from slot %d failed", env.channel, env.origin)
            reply = Envelope(Kind.REPLY, self.slot, corr=env.corr, flags=1,
                             payload=orjson.dumps({"code": 100, "message": "internal server error",
                                                   "temporary": True}))
        if not self.bus.send(env.origin, reply):
            self.metrics.bus_dropped += 1

    def _on_reply(self, env: Envelope) -> None:
        pending = self._pending.pop(env.corr, None)
        body = orjson.loads(env.payload)
        if pending is None or pending.slot != env.origin:
            if pending is not None:
                self._pending[env.corr] = pending
            elif env.flags == 0:
                self._compensate_late_reply(env)
            return
        if env.flags:
            err = ClientError(int(body.get("code", 100)), str(body.get("message", "internal server error")),
                              bool(body.get("temporary", False)))
            pending.callback(None, err)
        else:
            pending.callback(body, None)

    def _compensate_late_reply(self, env: Envelope) -> None:
        """A subscribe that succeeded after its requester gave up: undo it at the owner."""
        expired = self._expired.pop(env.corr, None)
        if expired is not None and expired.method == "subscribe" and expired.slot == env.origin:
            info = expired.body.get("info") or {}
            self.notify(expired.channel, "unsubscribe", {"channel": expired.channel,
                                                         "client": info.get("client", ""),
                                                         "user": info.get("user", "")})

    def _on_hello(self, env: Envelope) -> None:
        slot, incarnation = env.origin, env.corr
        if self.bus is not None and env.payload:
            self.bus.connect_peer(slot, env.payload.decode())
        previous = self._peers.get(slot)
        self._peers[slot] = incarnation
        if not env.flags & FLAG_HELLO_ANSWER and self.bus is not None:
            # Answer so that a restarted peer learns about us too.
            self._hello_unsent.setdefault(slot, FLAG_HELLO_ANSWER)
            self._send_hellos()
        if previous is not None and previous != incarnation and not env.flags & FLAG_HELLO_HANDOFF:
            self._peer_restarted(slot)
        if self.on_peer_change is not None:
            self.on_peer_change()

    # -- reload handoff -------------------------------------------------------------------------

    def freeze(self) -> None:
        """Stop changing owned channels: their state is being handed to a successor."""
        self.frozen = True

    def handoff_envelopes(self) -> list[Envelope]:
        envs = [Envelope(Kind.HANDOFF, self.slot, channel=name, payload=orjson.dumps(doc))
                for name, doc in self.shard.export_channels()]
        envs.append(Envelope(Kind.HANDOFF, self.slot, flags=FLAG_HANDOFF_DONE,
                             payload=orjson.dumps({"channels": len(envs)})))
        return envs

    def _on_handoff(self, env: Envelope) -> None:
        if env.flags & FLAG_HANDOFF_DONE:
            # The predecessor's own subscribers are being disconnected: drop their presence
            # and subscriber counts, as if that slot restarted, but keep the streams.
            self.shard.forget_slot(self.slot)
            self.handoff_received = True
            self.frozen = False
            log.info("handoff: installed %s channels from the previous worker",
                     orjson.loads(env.payload).get("channels"))
            if self.on_handoff_done is not None:
                self.on_handoff_done()
            return
        self.shard.import_channel(env.channel, orjson.loads(env.payload))

    def _peer_restarted(self, slot: int) -> None:
        """Slot ``slot`` lost its memory: forget what lived there, resubscribe what it owned."""
        log.warning("slot %d restarted: dropping its presence, resubscribing its channels", slot)
        self.shard.forget_slot(slot)
        for corr, pending in list(self._pending.items()):
            if pending.slot == slot:
                del self._pending[corr]
                pending.callback(None, ERROR_SHARD_UNAVAILABLE)
        for channel, local in list(self.hub.channels.items()):
            if self.owner(channel) != slot:
                continue
            for sub in list(local.subscribers):
                sub.server_unsubscribe(channel, UNSUBSCRIBE_INSUFFICIENT_STATE)
