"""The Redis engine: several nodes share channels through Redis (Centrifugo's design).

Streams (history with epoch and top offset), presence and idempotency results live in
Redis (:class:`~gateway.engine.redis.store.RedisStore`); any worker publishes, reads
history and presence there directly, pipelined per loop tick. Delivery: inside each node,
the channel's owner worker (the same ``owner(channel, workers)`` as the memory engine) holds
the node's one Redis subscription of the channel and fans what arrives out to the node's
workers over ZeroMQ (:class:`~gateway.engine.fanout.NodeFanout`), so Redis sees one
subscriber per node (PUBSUB NUMSUB = number of nodes).

Subscribe: a worker asks the owner (over the bus, like the memory engine); the owner counts
the subscriber, makes sure the Redis SUBSCRIBE is confirmed, and only then reads the stream
position (and the publications to recover), so nothing published after the answered
position can be missed. Publications can still reach the subscriber's worker before the
answer (pub/sub and commands are separate connections); the hub merges them by offset.

Pub/sub is at most once. A Redis link that dropped and came back, a stream recreated (new
epoch) or a periodic position check that finds the stream ahead of what was delivered all
make positioned subscribers resubscribe (unsubscribe 2500) and recover from the stream.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson

from gateway.cluster.router import Reply, Router
from gateway.config.engine import RedisEngineConfig
from gateway.core.errors import ClientError
from gateway.core.history import is_recovered
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
    check_reply_size,
    pack_client_info,
    pack_publication,
    unpack_client_info,
    unpack_publication,
)
from gateway.engine import wire
from gateway.engine.base import BrokerEventHandler, NodeEngine, TakenState
from gateway.engine.fanout import NodeFanout
from gateway.engine.memory import ERROR_RELOADING
from gateway.engine.position_check import PositionCheck
from gateway.engine.redis.pipeline import StoreError, StoreUnavailable
from gateway.engine.redis.store import RedisStore, check_since
from gateway.engine.redis.wire import MessageKind, RedisMessage
from gateway.engine.wire import Op
from gateway.obs.stats import Stats
from sharding.envelope import FLAG_HANDOFF_DONE, Envelope, Kind
from sharding.hashing import OwnerCache

__all__ = ["RedisEngine", "ERROR_ENGINE_UNAVAILABLE"]

log = logging.getLogger("shardgate.engine.redis")

T = TypeVar("T")

#: Redis did not answer within ``engine.redis.io_timeout`` or is unreachable: temporary.
ERROR_ENGINE_UNAVAILABLE = ClientError(100, "internal server error: engine unavailable", temporary=True)
_ERROR_INTERNAL = ClientError(100, "internal server error", temporary=True)
#: The most publications a subscription reads back from the stream to close a gap in what
#: pub/sub delivered; beyond it positioned subscribers recover themselves (unsubscribe 2500).
_MAX_GAP_FILL = 1000


@dataclass(slots=True)
class _Owned:
    """A channel this worker owns in this node: who subscribes, and its Redis subscription."""

    interest: dict[int, int] = field(default_factory=dict)  # slot -> local subscriber count
    subscribed: asyncio.Future[None] | None = None
    # The last publication delivered inside the node (or, before the first one, the stream
    # top read once the subscription was live): a publication further on shows a gap.
    last: StreamPosition | None = None
    # Set only by a handoff or a position read, never by delivery: the top below which this
    # subscription may still deliver (no duplicate check against it, see _on_message).
    baseline: bool = False
    # Messages held, in arrival order, while a gap is read back from the stream.
    filling: list[RedisMessage] | None = None


def _error(exc: BaseException) -> ClientError:
    if isinstance(exc, ClientError):
        return exc
    if isinstance(exc, StoreError | asyncio.TimeoutError | ConnectionError | OSError):
        return ERROR_ENGINE_UNAVAILABLE
    log.error("redis engine: unexpected failure: %r", exc)
    return _ERROR_INTERNAL


class RedisEngine:
    """Broker and PresenceManager over Redis (one instance per worker)."""

    def __init__(self, cfg: RedisEngineConfig, router: Router, handler: BrokerEventHandler,
                 loop: asyncio.AbstractEventLoop, clock: Callable[[], float], rng: random.Random, stats: Stats,
                 on_control: Callable[[bytes], None] | None = None, *,
                 delivered: Callable[[], dict[str, Any]] | None = None,
                 stream_options: Callable[[str], StreamOptions | None] | None = None,
                 position_check_delay: float = 0.0) -> None:
        self.cfg = cfg
        self.router = router
        self.slot = router.slot
        self.workers = router.workers
        self.handler = handler
        self.loop = loop
        self.clock = clock
        self.rng = rng
        self.stats = stats
        self.fanout = NodeFanout(router, handler, clock, stats)
        self.store = RedisStore(cfg, loop, on_message=self._on_message, on_resubscribed=self._on_resubscribed,
                                on_control=on_control, clock=clock, rng=rng)
        self.frozen = False
        self._owned: dict[str, _Owned] = {}
        self._owners = OwnerCache(self.workers)
        # Presence this worker keeps alive in Redis: re-added every presence_ttl / 3.
        self._presence: dict[tuple[str, str], bytes] = {}
        self._refresher: asyncio.TimerHandle | None = None
        self._connector: asyncio.Task[None] | None = None
        self._started = False
        self._stream_options = stream_options
        self.position_check = PositionCheck(loop, position_check_delay, delivered or dict, self._read_position,
                                            handler.handle_stream_lost)

    async def start(self) -> None:
        """Connect (Redis >= 6.2 is checked) and start refreshing presence. A Redis that
        cannot be reached does not stop the worker: it keeps trying in the background,
        operations answer temporary error 100 meanwhile and ``/ready`` says not ready.

        Raises:
            StoreError: Redis is older than 6.2 (a configuration problem, not an outage).
        """
        self._schedule_presence_refresh()
        self.position_check.start()
        try:
            await self.store.start()
        except StoreUnavailable as exc:
            log.warning("redis engine: %s; retrying in the background", exc)
            self._connector = self.loop.create_task(self._keep_connecting())
            return
        self._started = True

    async def _keep_connecting(self) -> None:
        delay = 0.2
        while not self._started:
            await asyncio.sleep(delay)
            try:
                await self.store.start()
            except StoreUnavailable as exc:
                log.debug("redis engine: still unreachable: %s", exc)
                delay = min(delay * 2, 5.0)
                continue
            except StoreError as exc:
                log.error("redis engine: %s", exc)
                delay = 5.0
                continue
            self._started = True
            log.info("redis engine: connected")

    async def close(self) -> None:
        self.position_check.close()
        if self._refresher is not None:
            self._refresher.cancel()
        if self._connector is not None:
            self._connector.cancel()
        await self.store.close()

    @property
    def healthy(self) -> bool:
        return self._started and self.store.healthy

    def owner(self, channel: str) -> int:
        return self._owners(channel)

    def _finish(self, future: asyncio.Future[Any], done: Done[T], convert: Callable[[Any], T]) -> None:
        def on_done(f: asyncio.Future[Any]) -> None:
            exc = f.exception()
            if exc is not None:
                done(None, _error(exc))
                return
            try:
                result = convert(f.result())
            except ClientError as error:
                done(None, error)
                return
            except (PackError, ValueError) as bad:
                log.error("redis engine: bad data in Redis: %s", bad)
                done(None, _ERROR_INTERNAL)
                return
            done(result, None)

        future.add_done_callback(on_done)

    def _op(self, call: Callable[[], asyncio.Future[T]]) -> asyncio.Future[T]:
        """Run a store call, or fail at once while Redis has never been reached."""
        if self._started:
            return call()
        future: asyncio.Future[T] = self.loop.create_future()
        future.set_exception(StoreUnavailable("redis not connected yet"))
        return future

    def publish_control(self, payload: bytes) -> asyncio.Future[None]:
        """A message on the control channel, which every node's slot 0 hears."""
        return self._op(lambda: self.store.publish_control(payload))

    @staticmethod
    def _quiet(future: asyncio.Future[Any]) -> None:
        """One-way operations: a failure is logged, never raised into the loop."""
        def on_done(f: asyncio.Future[Any]) -> None:
            if not f.cancelled() and f.exception() is not None:
                log.debug("redis engine: one-way operation failed: %r", f.exception())

        future.add_done_callback(on_done)

    # -- SessionStates (Socket.IO recovery across nodes) ---------------------------------------

    def keep_session(self, pid: str, value: bytes, ttl: float) -> None:
        self._quiet(self._op(lambda: self.store.keep_session(pid, value, ttl)))

    def take_session(self, pid: str, done: Done[TakenState]) -> None:
        self._finish(self._op(lambda: self.store.take_session(pid)), done, lambda value: value)

    def forget_session(self, pid: str) -> None:
        self._quiet(self._op(lambda: self.store.forget_session(pid)))

    def mark_node_alive(self, node_id: str, ttl: float) -> None:
        self._quiet(self._op(lambda: self.store.mark_node_alive(node_id, ttl)))

    # -- Broker ---------------------------------------------------------------------------------

    def publish(self, channel: str, pub: Publication, opts: PublishOptions, done: Done[StreamPosition]) -> None:
        stream = opts.stream if opts.stream is not None and opts.stream.enabled else None
        pub.offset = 0  # Redis assigns it; the stored and published form carries it in the header
        payload = pack_publication(pub)
        # No epoch of our own: the store gives the streams created in one loop tick one fresh epoch.
        future = self._op(lambda: self.store.publish(channel, payload, stream, opts.idempotency_key))
        self._finish(future, done, lambda position: position)

    def publish_join(self, channel: str, info: ClientInfo) -> None:
        self._quiet(self._op(lambda: self.store.publish_event(channel, MessageKind.JOIN,
                                                              pack_client_info(info))))

    def publish_leave(self, channel: str, info: ClientInfo) -> None:
        self._quiet(self._op(lambda: self.store.publish_event(channel, MessageKind.LEAVE,
                                                              pack_client_info(info))))

    def subscribe(self, channel: str, request: SubscribeRequest, done: Done[SubscribeAnswer]) -> None:
        slot = self.owner(channel)
        if slot == self.slot:
            self._owner_subscribe(channel, self.slot, request, done)
            return

        def reply(raw: bytes | None, error: ClientError | None) -> None:
            if error is not None or raw is None:
                done(None, error or _ERROR_INTERNAL)
                return
            try:
                answer = wire.decode_subscribe_answer(raw)
            except (PackError, ValueError, TypeError):
                done(None, _ERROR_INTERNAL)
                return
            done(answer, None)

        self.router.request(slot, Op.SUBSCRIBE, channel, wire.encode_subscribe(request), reply,
                            on_late=lambda: self.unsubscribe(channel))

    def unsubscribe(self, channel: str) -> None:
        slot = self.owner(channel)
        if slot == self.slot:
            self._owner_unsubscribe(channel, self.slot)
        else:
            self.router.notify(slot, Op.UNSUBSCRIBE, channel, b"")

    def history(self, channel: str, filter: HistoryFilter, stream: StreamOptions,
                done: Done[HistoryResult]) -> None:
        def convert(result: tuple[StreamPosition, list[tuple[int, bytes]]]) -> HistoryResult:
            position, items = result
            check_since(filter, position)
            pubs = _publications(items)
            check_reply_size(pubs, filter.max_bytes)
            return HistoryResult(position, pubs)

        self._finish(self._op(lambda: self.store.history(channel, filter, stream)), done,
                     convert)

    def remove_history(self, channel: str, done: DoneErr) -> None:
        self._finish(self._op(lambda: self.store.remove_history(channel)), lambda _, error: done(error),
                     lambda _: True)

    # -- PresenceManager ------------------------------------------------------------------------

    def add_presence(self, channel: str, info: ClientInfo) -> None:
        packed = pack_client_info(info)
        self._presence[(channel, info.client)] = packed
        self._quiet(self._op(lambda: self.store.add_presence(channel, info.client, packed,
                                                             self.cfg.presence_ttl)))

    def remove_presence(self, channel: str, client: str, user: str) -> None:
        self._presence.pop((channel, client), None)
        self._quiet(self._op(lambda: self.store.remove_presence(channel, client)))

    def presence(self, channel: str, done: Done[dict[str, ClientInfo]]) -> None:
        def convert(entries: dict[str, bytes]) -> dict[str, ClientInfo]:
            return {client: unpack_client_info(raw) for client, raw in entries.items()}

        self._finish(self._op(lambda: self.store.presence(channel)), done, convert)

    def presence_stats(self, channel: str, done: Done[PresenceStats]) -> None:
        self._finish(self._op(lambda: self.store.presence_stats(channel)), done,
                     lambda pair: PresenceStats(pair[0], pair[1]))

    def _read_position(self, channel: str, done: Done[StreamPosition]) -> None:
        stream = self._stream_options(channel) if self._stream_options is not None else None
        if stream is None:
            done(None, _ERROR_INTERNAL)
            return
        self._finish(self._op(lambda: self.store.history(channel, HistoryFilter(limit=0), stream)),
                     done, lambda result: result[0])

    def _schedule_presence_refresh(self) -> None:
        self._refresher = self.loop.call_later(max(1.0, self.cfg.presence_ttl / 3), self._refresh_presence)

    def _refresh_presence(self) -> None:
        """Keep present clients present: their entries expire ``presence_ttl`` after the last
        refresh, so a node that dies takes its clients out of presence by itself."""
        if self._started:
            for (channel, client), packed in list(self._presence.items()):
                self._quiet(self.store.add_presence(channel, client, packed, self.cfg.presence_ttl))
        self._schedule_presence_refresh()

    # -- the owner's side ------------------------------------------------------------------------

    def _owner_subscribe(self, channel: str, origin: int, request: SubscribeRequest,
                         done: Done[SubscribeAnswer]) -> None:
        if self.frozen:
            # Handing this worker's subscriptions to a reload successor: retry in a moment.
            done(None, ERROR_RELOADING)
            return
        state = self._owned.get(channel)
        if state is None:
            state = self._owned[channel] = _Owned()
        state.interest[origin] = state.interest.get(origin, 0) + 1
        if state.subscribed is None or (state.subscribed.done() and state.subscribed.exception() is not None):
            state.subscribed = self._op(lambda: self.store.subscribe(channel))

        def undo_and_fail(error: ClientError) -> None:
            self._owner_unsubscribe(channel, origin)
            done(None, error)

        def subscribed(f: asyncio.Future[None]) -> None:
            exc = f.exception()
            if exc is not None:
                undo_and_fail(_error(exc))
                return
            if not request.positioned or request.stream is None:
                done(SubscribeAnswer(), None)
                return
            since = request.since
            if request.recover and since is not None:
                filter = HistoryFilter(limit=request.recovery_limit, since=StreamPosition(since.offset, ""))
            else:
                filter = HistoryFilter(limit=0)
            stream = request.stream
            assert stream is not None
            read = self._op(lambda: self.store.history(channel, filter, stream))
            read.add_done_callback(lambda r: answered(r, since))

        def answered(r: asyncio.Future[tuple[StreamPosition, list[tuple[int, bytes]]]],
                     since: StreamPosition | None) -> None:
            exc = r.exception()
            if exc is not None:
                undo_and_fail(_error(exc))
                return
            position, items = r.result()
            if state.last is None and position.offset and self._owned.get(channel) is state:
                # Nothing delivered yet: the top read after SUBSCRIBE was confirmed is where a
                # gap would start (a lower bound only: an older publication may still arrive).
                state.last, state.baseline = position, True
            answer = SubscribeAnswer(position)
            if request.recover and since is not None:
                try:
                    pubs = _publications(items) if not since.epoch or since.epoch == position.epoch else []
                except PackError:
                    undo_and_fail(_ERROR_INTERNAL)
                    return
                answer.recovered = is_recovered(pubs, since.offset, since.epoch, position.epoch, position.offset)
                if answer.recovered:
                    try:
                        check_reply_size(pubs, request.max_bytes)
                    except ClientError as too_large:
                        undo_and_fail(too_large)
                        return
                    answer.publications = pubs
            done(answer, None)

        state.subscribed.add_done_callback(subscribed)

    def _owner_unsubscribe(self, channel: str, origin: int) -> None:
        state = self._owned.get(channel)
        if state is None:
            return
        count = state.interest.get(origin, 0) - 1
        if count > 0:
            state.interest[origin] = count
            return
        state.interest.pop(origin, None)
        if not state.interest:
            del self._owned[channel]
            if self._started:
                self.store.unsubscribe(channel)

    def handle_request(self, op: int, channel: str, payload: bytes, origin: int, reply: Reply) -> None:
        if op != Op.SUBSCRIBE:
            raise ClientError(104, "method not found")

        def done(answer: SubscribeAnswer | None, error: ClientError | None) -> None:
            if error is not None or answer is None:
                reply(None, error or _ERROR_INTERNAL)
            else:
                reply(wire.encode_subscribe_answer(answer), None)

        self._owner_subscribe(channel, origin, wire.decode_subscribe(payload), done)

    def handle_notify(self, op: int, channel: str, payload: bytes, origin: int) -> None:
        if op == Op.UNSUBSCRIBE:
            self._owner_unsubscribe(channel, origin)
        elif op == Op.STREAM_LOST:
            self.handler.handle_stream_lost(channel)

    def handle_delivery(self, env: Envelope) -> None:
        self.fanout.handle_delivery(env)

    def _on_message(self, channel: str, msg: RedisMessage) -> None:
        """What this worker's Redis subscription received: deliver inside the node, in
        offset order with no gap. A publication beyond the next offset (the subscription
        moved here from a reloaded worker, or Redis dropped one) holds delivery while the
        missing ones are read back from the stream; one already delivered is dropped."""
        state = self._owned.get(channel)
        if state is None or self.frozen:
            return
        if state.filling is not None:
            state.filling.append(msg)
            return
        last = state.last
        if msg.kind is MessageKind.PUBLICATION and msg.offset and last is not None and last.epoch == msg.epoch:
            if msg.offset <= last.offset and not state.baseline:
                return  # delivered already
            if msg.offset > last.offset + 1:
                self._fill_gap(channel, state, msg, last)
                return
        self._deliver(channel, state, msg)

    def _fill_gap(self, channel: str, state: _Owned, msg: RedisMessage, last: StreamPosition) -> None:
        stream = self._stream_options(channel) if self._stream_options is not None else None
        missing = msg.offset - last.offset - 1
        if stream is None or missing > _MAX_GAP_FILL:
            self._lost(channel, state, msg)
            return
        state.filling = [msg]
        since = StreamPosition(last.offset, "")
        read = self._op(lambda: self.store.history(channel, HistoryFilter(limit=missing, since=since), stream))

        def filled(r: asyncio.Future[tuple[StreamPosition, list[tuple[int, bytes]]]]) -> None:
            if self._owned.get(channel) is not state or state.filling is None:
                return  # unsubscribed meanwhile
            held, state.filling = state.filling, None
            items = [] if r.exception() is not None else r.result()[1]
            epoch = "" if r.exception() is not None else r.result()[0].epoch
            if epoch != last.epoch or [o for o, _ in items] != list(range(last.offset + 1, msg.offset)):
                log.warning("%r: publications %d..%d never arrived and cannot be read back (%s): "
                            "subscribers recover", channel, last.offset + 1, msg.offset - 1,
                            r.exception() or "stream moved on")
                self._lost(channel, state, msg)
                held = held[1:]
            else:
                self.stats.gap_filled += len(items)
                try:
                    for pub in _publications(items):
                        self._deliver_publication(channel, state, pub, StreamPosition(pub.offset, epoch))
                except PackError as exc:
                    log.warning("dropped a bad message on %r: %s", channel, exc)
            for m in held:
                self._on_message(channel, m)

        read.add_done_callback(filled)

    def _lost(self, channel: str, state: _Owned, msg: RedisMessage) -> None:
        """Publications that cannot be delivered in order: positioned subscribers recover."""
        self.stream_lost(channel, tuple(state.interest))
        state.last = None
        self._deliver(channel, state, msg)

    def _deliver_publication(self, channel: str, state: _Owned, pub: Publication,
                             position: StreamPosition | None) -> None:
        if position is not None:
            state.last = position
            state.baseline = False
        self.fanout.publication(channel, tuple(state.interest), pub, position)

    def _deliver(self, channel: str, state: _Owned, msg: RedisMessage) -> None:
        slots = tuple(state.interest)
        try:
            if msg.kind is MessageKind.PUBLICATION:
                pub = unpack_publication(msg.payload)
                pub.offset = msg.offset
                position = StreamPosition(msg.offset, msg.epoch) if msg.offset else None
                self._deliver_publication(channel, state, pub, position)
            elif msg.kind is MessageKind.JOIN:
                self.fanout.join(channel, slots, unpack_client_info(msg.payload))
            else:
                self.fanout.leave(channel, slots, unpack_client_info(msg.payload))
        except PackError as exc:
            log.warning("dropped a bad message on %r: %s", channel, exc)

    def _on_resubscribed(self, shard: int) -> None:
        """A Redis subscription link came back: what was published meanwhile was not
        delivered, so positioned subscribers everywhere in the node recover."""
        for channel, state in list(self._owned.items()):
            if self.store.shard_index(channel) == shard:
                state.last, state.filling = None, None  # recovery replaces gap filling
                self.stream_lost(channel, tuple(state.interest))

    def stream_lost(self, channel: str, slots: tuple[int, ...]) -> None:
        for slot in slots:
            if slot == self.slot:
                self.handler.handle_stream_lost(channel)
            else:
                self.router.notify(slot, Op.STREAM_LOST, channel, b"")

    # -- slot lifecycle and reload handoff ------------------------------------------------------

    def forget_slot(self, slot: int) -> None:
        """Slot ``slot`` restarted: its subscribers are gone (their presence expires in Redis)."""
        for channel in list(self._owned):
            state = self._owned[channel]
            if state.interest.pop(slot, None) is not None and not state.interest:
                del self._owned[channel]
                if self._started:
                    self.store.unsubscribe(channel)

    def freeze(self) -> None:
        self.frozen = True

    def handoff_envelopes(self) -> list[Envelope]:
        """The state lives in Redis; a successor needs only who subscribes to what here."""
        envs = [Envelope(Kind.HANDOFF, self.slot, channel=channel,
                         payload=orjson.dumps({"interest": {str(slot): n for slot, n in state.interest.items()},
                                               "last": None if state.last is None else
                                               [state.last.offset, state.last.epoch]}))
                for channel, state in self._owned.items()]
        envs.append(Envelope(Kind.HANDOFF, self.slot, flags=FLAG_HANDOFF_DONE,
                             payload=orjson.dumps({"channels": len(envs)})))
        return envs

    def install_handoff(self, env: Envelope) -> bool:
        if env.flags & FLAG_HANDOFF_DONE:
            self.forget_slot(self.slot)  # the predecessor's own clients are being disconnected
            self.frozen = False
            log.info("handoff: installed %s channels' subscriptions from the previous worker",
                     orjson.loads(env.payload).get("channels"))
            return True
        state = self._owned.get(env.channel)
        if state is None:
            state = self._owned[env.channel] = _Owned()
        handed = orjson.loads(env.payload)
        for slot, n in handed["interest"].items():
            if int(n) > 0:
                state.interest[int(slot)] = int(n)
        if handed["last"] is not None and state.last is None:
            # What the predecessor delivered last: this worker's subscription starts later,
            # so the first publication it gets shows what was published in between.
            state.last = StreamPosition(int(handed["last"][0]), str(handed["last"][1]))
            state.baseline = True
        if state.subscribed is None:
            state.subscribed = self._op(lambda: self.store.subscribe(env.channel))
            self._quiet(state.subscribed)
        return False

    def owned_channels(self) -> int:
        return len(self._owned)

    def owned_streams(self) -> int:
        return 0  # streams live in Redis


def _publications(items: list[tuple[int, bytes]]) -> list[Publication]:
    pubs = []
    for offset, raw in items:
        pub = unpack_publication(raw)
        pub.offset = offset
        pubs.append(pub)
    return pubs


_: type[NodeEngine] = RedisEngine
