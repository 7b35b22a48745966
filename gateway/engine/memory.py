"""The memory engine: each channel's state lives in its owner worker, reached over the bus.

``owner(channel) = jump(fnv1a64(channel), workers)``. An operation on a channel this
worker owns runs synchronously on its :class:`~gateway.engine.owner.OwnerShard` (``done``
is called before the method returns); otherwise it travels to the owner as a typed
REQUEST or NOTIFY (:mod:`gateway.engine.wire`) and ``done`` runs when the REPLY arrives.
The owner fans publications out to the slots that have subscribers, in their structured
form; each slot's hub encodes them once per codec. With one worker there are no peers and
every channel is owned locally: the same code path, no special case.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import TypeVar

import orjson

from gateway.cluster.router import Reply, Router
from gateway.core.errors import ClientError
from gateway.core.model import (
    ClientInfo,
    Done,
    DoneErr,
    HistoryFilter,
    HistoryResult,
    PackError,
    PresenceStats,
    Publication,
    PublishOptions,
    StreamOptions,
    StreamPosition,
    SubscribeAnswer,
    SubscribeRequest,
    pack_client_info,
    unpack_client_info,
)
from gateway.engine import wire
from gateway.engine.base import BrokerEventHandler, NodeEngine
from gateway.engine.fanout import NodeFanout
from gateway.engine.owner import OwnerShard
from gateway.engine.wire import Op
from gateway.obs.stats import Stats
from sharding.envelope import FLAG_HANDOFF_DONE, Envelope, Kind
from sharding.hashing import OwnerCache

__all__ = ["MemoryEngine", "ERROR_RELOADING", "SWEEP_INTERVAL", "SWEEP_BUDGET"]

log = logging.getLogger("shardgate.engine")

T = TypeVar("T")

# The owner is handing its channels to a reloaded successor: retry in a moment.
ERROR_RELOADING = ClientError(100, "internal server error: channel owner reloading", temporary=True)
_ERROR_INTERNAL = ClientError(100, "internal server error", temporary=True)

# Streams nobody needs are forgotten by a periodic sweep (OwnerShard.sweep) that looks at no
# more than SWEEP_BUDGET of them per tick, so a large expiry never stalls the loop; a tick that
# used its whole budget is followed by another one soon.
SWEEP_INTERVAL = 1.0
SWEEP_BUDGET = 1_000
_SWEEP_AGAIN = 0.01


class MemoryEngine:
    """Broker and PresenceManager over per-core owners (one instance per worker)."""

    def __init__(self, router: Router, handler: BrokerEventHandler, clock: Callable[[], float],
                 rng: random.Random, stats: Stats, join_leave: Callable[[str], bool]) -> None:
        self.router = router
        self.slot = router.slot
        self.workers = router.workers
        self.handler = handler
        self.clock = clock
        self.stats = stats
        self.fanout = NodeFanout(router, handler, clock, stats)
        self.shard = OwnerShard(self.fanout, clock, rng)
        self.frozen = False
        self._join_leave = join_leave
        self._owners = OwnerCache(self.workers)
        self._sweeper: asyncio.TimerHandle | None = None

    def owner(self, channel: str) -> int:
        return self._owners(channel)

    # -- calling the owner ----------------------------------------------------------------------

    def _local(self, done: Done[T], run: Callable[[], T], what: str, channel: str) -> None:
        if self.frozen:
            done(None, ERROR_RELOADING)
            return
        try:
            result = run()
        except ClientError as exc:
            done(None, exc)
            return
        except Exception:
            log.exception("%s on %r failed", what, channel)
            done(None, _ERROR_INTERNAL)
            return
        done(result, None)

    def _remote(self, slot: int, op: Op, channel: str, payload: bytes, done: Done[T],
                decode: Callable[[bytes], T], on_late: Callable[[], None] | None = None) -> None:
        def reply(raw: bytes | None, error: ClientError | None) -> None:
            if error is not None or raw is None:
                done(None, error or _ERROR_INTERNAL)
                return
            try:
                result = decode(raw)
            except (PackError, ValueError, TypeError, orjson.JSONDecodeError):
                log.exception("bad answer to op %s on %r from slot %d", op.name, channel, slot)
                done(None, _ERROR_INTERNAL)
                return
            done(result, None)

        self.router.request(slot, op, channel, payload, reply, on_late=on_late)

    def _notify(self, op: Op, channel: str, payload: bytes, run: Callable[[OwnerShard], None]) -> None:
        slot = self.owner(channel)
        if slot != self.slot:
            self.router.notify(slot, op, channel, payload)
            return
        if self.frozen:
            return  # retiring after a handoff: the successor owns this state now
        try:
            run(self.shard)
        except Exception:
            log.exception("owner op %s on %r failed", op.name, channel)

    # -- Broker ---------------------------------------------------------------------------------

    def publish(self, channel: str, pub: Publication, opts: PublishOptions, done: Done[StreamPosition]) -> None:
        slot = self.owner(channel)
        if slot == self.slot:
            self._local(done, lambda: self.shard.publish(channel, pub, opts), "publish", channel)
        else:
            self._remote(slot, Op.PUBLISH, channel, wire.encode_publish(pub, opts), done, wire.decode_position)

    def publish_join(self, channel: str, info: ClientInfo) -> None:
        self._notify(Op.JOIN, channel, pack_client_info(info), lambda s: s.join(channel, info))

    def publish_leave(self, channel: str, info: ClientInfo) -> None:
        self._notify(Op.LEAVE, channel, pack_client_info(info), lambda s: s.leave(channel, info))

    def subscribe(self, channel: str, request: SubscribeRequest, done: Done[SubscribeAnswer]) -> None:
        slot = self.owner(channel)
        if slot == self.slot:
            self._local(done, lambda: self.shard.subscribe(channel, self.slot, request), "subscribe", channel)
        else:
            # A subscribe that succeeds after we gave up registered a subscriber: undo it.
            self._remote(slot, Op.SUBSCRIBE, channel, wire.encode_subscribe(request), done,
                         wire.decode_subscribe_answer, on_late=lambda: self.unsubscribe(channel))

    def unsubscribe(self, channel: str) -> None:
        self._notify(Op.UNSUBSCRIBE, channel, b"", lambda s: s.unsubscribe(channel, self.slot))

    def history(self, channel: str, filter: HistoryFilter, stream: StreamOptions,
                done: Done[HistoryResult]) -> None:
        slot = self.owner(channel)
        if slot == self.slot:
            self._local(done, lambda: self.shard.history(channel, filter, stream), "history", channel)
        else:
            self._remote(slot, Op.HISTORY, channel, wire.encode_history(filter, stream), done,
                         wire.decode_history_result)

    def remove_history(self, channel: str, done: DoneErr) -> None:
        def finish(result: bool | None, error: ClientError | None) -> None:
            done(error)

        def run() -> bool:
            self.shard.remove_history(channel)
            return True

        slot = self.owner(channel)
        if slot == self.slot:
            self._local(finish, run, "remove_history", channel)
        else:
            self._remote(slot, Op.REMOVE_HISTORY, channel, b"", finish, lambda raw: True)

    # -- PresenceManager ------------------------------------------------------------------------

    def add_presence(self, channel: str, info: ClientInfo) -> None:
        self._notify(Op.PRESENCE_ADD, channel, pack_client_info(info),
                     lambda s: s.add_presence(channel, self.slot, info))

    def remove_presence(self, channel: str, client: str, user: str) -> None:
        self._notify(Op.PRESENCE_REMOVE, channel, client.encode(), lambda s: s.remove_presence(channel, client))

    def presence(self, channel: str, done: Done[dict[str, ClientInfo]]) -> None:
        slot = self.owner(channel)
        if slot == self.slot:
            self._local(done, lambda: self.shard.presence(channel), "presence", channel)
        else:
            self._remote(slot, Op.PRESENCE, channel, b"", done, wire.decode_presence)

    def presence_stats(self, channel: str, done: Done[PresenceStats]) -> None:
        slot = self.owner(channel)
        if slot == self.slot:
            self._local(done, lambda: self.shard.presence_stats(channel), "presence_stats", channel)
        else:
            self._remote(slot, Op.PRESENCE_STATS, channel, b"", done, wire.decode_presence_stats)

    # -- the owner's side of the bus (the node routes engine operations here) -------------------

    def handle_request(self, op: int, channel: str, payload: bytes, origin: int, reply: Reply) -> None:
        """An operation another slot routed here; answered synchronously."""
        reply(self._run_request(op, channel, payload, origin), None)

    def _run_request(self, op: int, channel: str, payload: bytes, origin: int) -> bytes:
        if self.frozen:
            raise ERROR_RELOADING
        shard = self.shard
        if op == Op.PUBLISH:
            pub, opts = wire.decode_publish(payload)
            return wire.encode_position(shard.publish(channel, pub, opts))
        if op == Op.SUBSCRIBE:
            return wire.encode_subscribe_answer(shard.subscribe(channel, origin, wire.decode_subscribe(payload)))
        if op == Op.HISTORY:
            filter, stream = wire.decode_history(payload)
            return wire.encode_history_result(shard.history(channel, filter, stream))
        if op == Op.REMOVE_HISTORY:
            shard.remove_history(channel)
            return b""
        if op == Op.PRESENCE:
            return wire.encode_presence(shard.presence(channel))
        if op == Op.PRESENCE_STATS:
            return wire.encode_presence_stats(shard.presence_stats(channel))
        raise ClientError(104, "method not found")

    def handle_notify(self, op: int, channel: str, payload: bytes, origin: int) -> None:
        if self.frozen:
            raise ERROR_RELOADING
        shard = self.shard
        if op == Op.UNSUBSCRIBE:
            shard.unsubscribe(channel, origin)
        elif op == Op.JOIN:
            shard.join(channel, unpack_client_info(payload))
        elif op == Op.LEAVE:
            shard.leave(channel, unpack_client_info(payload))
        elif op == Op.PRESENCE_ADD:
            shard.add_presence(channel, origin, unpack_client_info(payload))
        elif op == Op.PRESENCE_REMOVE:
            shard.remove_presence(channel, payload.decode())
        elif op == Op.STREAM_LOST:
            self.handler.handle_stream_lost(channel)

    def handle_delivery(self, env: Envelope) -> None:
        self.fanout.handle_delivery(env)

    # -- slot lifecycle and reload handoff ------------------------------------------------------

    def forget_slot(self, slot: int) -> None:
        """Slot ``slot`` lost its memory: drop its subscribers and presence here."""
        self.shard.forget_slot(slot, self._join_leave)

    def freeze(self) -> None:
        """Stop changing owned channels: their state is being handed to a successor."""
        self.frozen = True

    def handoff_envelopes(self) -> list[Envelope]:
        envs = [Envelope(Kind.HANDOFF, self.slot, channel=name, payload=orjson.dumps(doc))
                for name, doc in self.shard.export_channels()]
        envs.append(Envelope(Kind.HANDOFF, self.slot, flags=FLAG_HANDOFF_DONE,
                             payload=orjson.dumps({"channels": len(envs)})))
        return envs

    def install_handoff(self, env: Envelope) -> bool:
        """Install one handoff message; True after the last one."""
        if env.flags & FLAG_HANDOFF_DONE:
            # The predecessor's own subscribers are being disconnected: drop their presence
            # and subscriber counts, as if that slot restarted, but keep the streams.
            self.forget_slot(self.slot)
            self.frozen = False
            log.info("handoff: installed %s channels from the previous worker",
                     orjson.loads(env.payload).get("channels"))
            return True
        self.shard.import_channel(env.channel, orjson.loads(env.payload))
        return False

    def owned_channels(self) -> int:
        return self.shard.stats()["channels"]

    def owned_streams(self) -> int:
        return self.shard.stats()["streams"]

    def sweep(self) -> int:
        """One bounded sweep of the owned streams (none while frozen for a handoff)."""
        if self.frozen:
            return 0
        try:
            return self.shard.sweep(self.clock(), SWEEP_BUDGET)
        except Exception:
            log.exception("stream sweep failed")
            return 0

    def _sweep_tick(self) -> None:
        dropped = self.sweep()
        delay = _SWEEP_AGAIN if dropped >= SWEEP_BUDGET else SWEEP_INTERVAL
        self._sweeper = asyncio.get_running_loop().call_later(delay, self._sweep_tick)

    async def start(self) -> None:
        self._sweeper = asyncio.get_running_loop().call_later(SWEEP_INTERVAL, self._sweep_tick)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    @property
    def healthy(self) -> bool:
        return True


_: type[NodeEngine] = MemoryEngine
