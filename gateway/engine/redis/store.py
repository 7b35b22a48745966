"""RedisStore: history, presence and pub/sub of channels in Redis, for one worker process.

The store is the I/O half of a Redis engine; the engine (not here) maps its results and
failures onto the Broker/PresenceManager seam. Every command method is synchronous and
returns an ``asyncio.Future``: commands queued during one loop tick leave as one pipeline
per shard (:mod:`.pipeline`), which is what lets one process publish tens of thousands of
messages per second into one Redis. Channels map to shards with the same jump hash over
FNV-1a as Centrifugo (``sharding.hashing.owner``), so both place a channel on the same
Redis given the same address list.

Create it after the fork, inside the running loop (sockets and tasks belong to one process).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import random
import secrets
import time
from collections.abc import Callable
from typing import Any

from gateway.config.engine import RedisEngineConfig
from gateway.core.errors import ERROR_UNRECOVERABLE_POSITION
from gateway.core.history import new_epoch as make_epoch
from gateway.core.model import HistoryFilter, StreamOptions, StreamPosition
from gateway.engine.base import TakenState
from gateway.engine.redis.connect import cluster_client, parse_address, sentinel_clients, standalone_client
from gateway.engine.redis.direct import DirectLink
from gateway.engine.redis.keys import Keys
from gateway.engine.redis.pipeline import CommandLink, StoreError, StoreUnavailable
from gateway.engine.redis.pubsub import PubSubLink
from gateway.engine.redis.scripts import Scripts
from gateway.engine.redis.wire import EPOCH_RE, MessageKind, RedisMessage, event_message, parse_message
from sharding.hashing import owner

__all__ = ["MIN_REDIS_VERSION", "RedisStore", "check_since", "check_version"]

log = logging.getLogger("shardgate.redis")

MIN_REDIS_VERSION = (6, 2)
#: How long an idempotency key remembers its first result (Centrifugo: 5 minutes).
RESULT_TTL = 300.0


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


_RESULT_TTL_MS = b"%d" % _ms(RESULT_TTL)
_NO_POSITION = StreamPosition(0, "")


def check_version(info: dict[str, Any], where: str) -> str:
    """The ``redis_version`` from INFO server; StoreError when it is older than 6.2."""
    version = info.get("redis_version")
    if isinstance(version, bytes):
        version = version.decode()
    parts = tuple(int(p) for p in str(version or "0").split(".")[:2] if p.isdigit())
    if parts < MIN_REDIS_VERSION:
        raise StoreError(f"redis at {where} is version {version}; shardgate needs Redis >= "
                         f"{'.'.join(map(str, MIN_REDIS_VERSION))} (XADD MAXLEN =, exclusive stream ranges)")
    return str(version)


def check_since(filter: HistoryFilter, position: StreamPosition) -> None:
    """Raise ClientError 112 when ``filter.since`` names another epoch than the stream's."""
    since = filter.since
    if since is not None and since.epoch and since.epoch != position.epoch:
        raise ERROR_UNRECOVERABLE_POSITION


def _position(reply: list[Any]) -> StreamPosition:
    return StreamPosition(int(reply[0]), reply[1].decode())


def _no_position(_: Any) -> StreamPosition:
    return _NO_POSITION


def _history(reply: list[Any]) -> tuple[StreamPosition, list[tuple[int, bytes]]]:
    pubs = [(int(entry[0].split(b"-", 1)[0]), entry[1][1]) for entry in reply[2]]
    return StreamPosition(int(reply[0]), reply[1].decode()), pubs


def _presence(reply: list[bytes]) -> dict[str, bytes]:
    return {reply[i].decode(): reply[i + 1] for i in range(0, len(reply), 2)}


def _stats(reply: list[int]) -> tuple[int, int]:
    return int(reply[0]), int(reply[1])


def _none(_: Any) -> None:
    return None


def _taken(reply: Any) -> TakenState:
    if isinstance(reply, bytes):
        return TakenState(reply)
    return TakenState(None, held=reply == 1)


def _first_error(loop: asyncio.AbstractEventLoop, futures: list[asyncio.Future[None]]) -> asyncio.Future[None]:
    """One future for several: done when all are, failed with the first failure."""
    out: asyncio.Future[None] = loop.create_future()
    gathered = asyncio.gather(*futures, return_exceptions=True)

    def done(g: asyncio.Future[list[Any]]) -> None:
        if out.done():
            return
        errors = [r for r in g.result() if isinstance(r, BaseException)]
        if errors:
            out.set_exception(errors[0])
        else:
            out.set_result(None)

    gathered.add_done_callback(done)
    return out


class RedisStore:
    """History streams, presence and pub/sub over one or more Redis shards, a Redis Cluster or
    a Sentinel-managed master. See the module docstring for the threading and batching rules."""

    def __init__(self, cfg: RedisEngineConfig, loop: asyncio.AbstractEventLoop, *,
                 on_message: Callable[[str, RedisMessage], None],
                 on_resubscribed: Callable[[int], None] | None = None,
                 on_control: Callable[[bytes], None] | None = None,
                 probe_interval: float = 3.0, probe_timeout: float | None = None,
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None) -> None:
        self.cfg = cfg
        self._loop = loop
        self._on_message = on_message
        self._on_resubscribed = on_resubscribed
        self._on_control = on_control
        self._probe_interval = probe_interval
        self._probe_timeout = probe_timeout if probe_timeout is not None else max(cfg.io_timeout, probe_interval)
        self._clock = clock
        self._rng = rng or random.Random()
        self._cluster = cfg.mode == "cluster"
        self.keys = Keys(cfg.prefix, cluster=self._cluster)
        self._probe_channel = f"{self.keys.probe_prefix}{secrets.token_hex(8)}"
        self._control = self.keys.control.encode()
        self._clients: list[Any] = []
        self._links: list[CommandLink] = []
        self._pubsubs: list[PubSubLink] = []
        self._n = 1
        self.dropped = 0  # pub/sub messages not in our format, or on channels not ours
        self._started = False
        self._tick_epoch: bytes | None = None
        self._static: dict[StreamOptions, tuple[bytes, bytes, bytes]] = {}

    # -- lifecycle -----------------------------------------------------------------------

    def _clients_and_pubsubs(self) -> list[tuple[Any, Callable[[], Any], str]]:
        cfg = self.cfg
        if cfg.mode == "cluster":
            nodes = itertools.cycle(cfg.cluster_address)

            def cluster_pubsub() -> Any:  # plain SUBSCRIBE on any node: PUBLISH is cluster-wide
                return standalone_client(cfg, next(nodes)).pubsub()

            return [(cluster_client(cfg), cluster_pubsub, ",".join(cfg.cluster_address))]
        if cfg.mode == "sentinel":
            self._sentinel, master = sentinel_clients(cfg)
            return [(master, master.pubsub, f"sentinel master {cfg.sentinel_master_name}")]
        out: list[tuple[Any, Callable[[], Any], str]] = []
        for address in cfg.address:
            client = standalone_client(cfg, address)
            out.append((client, client.pubsub, "{}:{}".format(*parse_address(address)[:2])))
        return out

    async def start(self) -> None:
        """Connect every shard, check the version, load the scripts, subscribe the fixed channels.

        Raises:
            StoreUnavailable: a shard cannot be reached within ``connect_timeout``.
            StoreError: a shard runs Redis older than 6.2.
        """
        cfg = self.cfg
        if self._clients:
            await self.close()  # a start that failed half-way: begin afresh
            self._clients, self._links, self._pubsubs = [], [], []
        made = self._clients_and_pubsubs()
        self._n = len(made)
        self._started = True
        for index, (client, make_pubsub, where) in enumerate(made):
            self._clients.append(client)
            try:
                async with asyncio.timeout(cfg.connect_timeout):
                    info = await client.info("server")
            except Exception as exc:
                raise StoreUnavailable(f"redis at {where}: cannot connect within {cfg.connect_timeout}s: "
                                       f"{type(exc).__name__}: {exc}") from None
            for node_info in (info.values() if "redis_version" not in info else (info,)):
                check_version(node_info, where)
            scripts = Scripts(client)
            try:
                async with asyncio.timeout(cfg.io_timeout):
                    await scripts.load()
            except Exception as exc:
                raise StoreUnavailable(f"redis at {where}: cannot load scripts: {exc!r}") from None
            link: CommandLink = (CommandLink(client, scripts, self._loop, cfg.io_timeout, cluster=True)
                                 if self._cluster else
                                 DirectLink(client, scripts, self._loop, cfg.io_timeout, cfg.connect_timeout))
            self._links.append(link)
            always = (self.keys.control,) if index == 0 else ()
            self._pubsubs.append(PubSubLink(
                index, make_pubsub, self._loop, dispatch=self._dispatch, on_resubscribed=self._on_resubscribed,
                probe_channel=self._probe_channel, publish_probe=self._prober(index), always=always,
                probe_interval=self._probe_interval, probe_timeout=self._probe_timeout,
                connect_timeout=cfg.connect_timeout, io_timeout=cfg.io_timeout))
        for pubsub in self._pubsubs:
            await pubsub.start()

    async def close(self) -> None:
        for pubsub in self._pubsubs:
            await pubsub.close()
        for link in self._links:
            await link.close()
        for client in self._clients:
            try:
                await client.aclose()
            except Exception as exc:  # closing a dead connection may fail; nothing to do
                log.debug("redis close: %r", exc)

    @property
    def healthy(self) -> bool:
        """Every shard's command link and pub/sub link are up."""
        return (self._started and all(link.up for link in self._links)
                and all(pubsub.up for pubsub in self._pubsubs))

    @property
    def round_trips(self) -> list[int]:
        """Pipelines sent per shard (for tests and metrics)."""
        return [link.round_trips for link in self._links]

    # -- commands ------------------------------------------------------------------------

    def shard_index(self, channel: str) -> int:
        return owner(channel, self._n) if self._n > 1 else 0

    def _link(self, channel: str) -> CommandLink:
        return self._links[self.shard_index(channel)]

    def _epoch(self, given: str) -> bytes:
        """The epoch a new stream gets: ``given``, or one fresh epoch per loop tick.

        Sharing one epoch among the streams created in one tick is safe (an epoch only has to
        differ from the epoch of the same channel's previous stream, created in an earlier
        tick) and saves generating one per publish on the hot path."""
        if given:
            if not EPOCH_RE.fullmatch(given):
                raise ValueError(f"epoch {given!r}: letters and digits only")
            return given.encode()
        epoch = self._tick_epoch
        if epoch is None:
            epoch = self._tick_epoch = make_epoch(self._rng).encode()
            self._loop.call_soon(self._new_tick)
        return epoch

    def _new_tick(self) -> None:
        self._tick_epoch = None

    def _stream_args(self, stream: StreamOptions) -> tuple[bytes, bytes, bytes]:
        """(size, ttl ms, meta ttl ms) as bytes, cached: a handful of namespaces share them."""
        args = self._static.get(stream)
        if args is None:
            if len(self._static) > 1024:
                self._static.clear()
            meta = _ms(stream.meta_ttl) if stream.meta_ttl > 0 else 0
            args = self._static[stream] = (b"%d" % stream.size, b"%d" % _ms(stream.ttl), b"%d" % meta)
        return args

    def _publish_raw(self, link: CommandLink, route_key: str, channel: str, message: bytes,
                     parse: Callable[[Any], Any]) -> asyncio.Future[Any]:
        if self._cluster:  # a cluster pipeline routes by key; plain PUBLISH names none
            return link.script("pub", (route_key.encode(),), (channel.encode(), message), parse)
        return link.call((b"PUBLISH", channel.encode(), message), parse)

    def publish(self, channel: str, payload: bytes, stream: StreamOptions | None, idempotency_key: str = "",
                new_epoch: str = "") -> asyncio.Future[StreamPosition]:
        """Append to the stream (when ``stream`` is enabled) and publish; resolves to the position.

        Without history and without an idempotency key this is one PUBLISH and resolves to offset 0.
        """
        link = self._link(channel)
        keys = self.keys
        if stream is not None and stream.enabled:
            size, ttl, meta_ttl = self._stream_args(stream)
            epoch = self._epoch(new_epoch)
        elif idempotency_key:
            size, ttl, meta_ttl, epoch = b"0", b"0", b"0", b""
        else:
            return self._publish_raw(link, keys.meta(channel), keys.pubsub(channel), b"__p1:0:__" + payload,
                                     _no_position)
        names: tuple[bytes, ...] = (keys.stream(channel).encode(), keys.meta(channel).encode())
        result_ttl = b"0"
        if idempotency_key:
            names = (*names, keys.result(channel, idempotency_key).encode())
            result_ttl = _RESULT_TTL_MS
        args = (payload, size, ttl, meta_ttl, epoch, keys.pubsub(channel).encode(), result_ttl)
        return link.script("publish", names, args, _position)

    def publish_event(self, channel: str, kind: MessageKind, payload: bytes) -> asyncio.Future[None]:
        """A join or leave push: PUBLISH only, nothing stored."""
        return self._publish_raw(self._link(channel), self.keys.meta(channel), self.keys.pubsub(channel),
                                 event_message(kind, payload), _none)

    def history(self, channel: str, filter: HistoryFilter, stream: StreamOptions, new_epoch: str = ""
                ) -> asyncio.Future[tuple[StreamPosition, list[tuple[int, bytes]]]]:
        """Position (creating the meta with ``new_epoch`` when absent) and publications per ``filter``:
        ``(offset, payload)`` pairs, oldest first forward, newest first reverse. Check the result
        with :func:`check_since` for error 112."""
        since = "" if filter.since is None else str(filter.since.offset)
        args = (self._epoch(new_epoch), _ms(stream.meta_ttl) if stream.meta_ttl > 0 else 0, filter.limit, since,
                "1" if filter.reverse else "0")
        return self._link(channel).script("history", (self.keys.stream(channel).encode(),
                                                      self.keys.meta(channel).encode()), args, _history)

    def remove_history(self, channel: str) -> asyncio.Future[None]:
        """Drop the publications, keep the position (Centrifugo's history_remove)."""
        return self._link(channel).call((b"DEL", self.keys.stream(channel).encode()), _none)

    def add_presence(self, channel: str, client: str, info: bytes, ttl: float) -> asyncio.Future[None]:
        now = self._clock()
        keys = self._presence_keys(channel)
        return self._link(channel).script("presence_add", keys, (client, info, _ms(now + ttl), _ms(ttl)), _none)

    def remove_presence(self, channel: str, client: str) -> asyncio.Future[None]:
        keys = self._presence_keys(channel)
        return self._link(channel).script("presence_remove", keys, (client,), _none)

    def presence(self, channel: str) -> asyncio.Future[dict[str, bytes]]:
        """client id -> packed ClientInfo, expired entries purged first."""
        keys = self._presence_keys(channel)
        return self._link(channel).script("presence_get", keys, (_ms(self._clock()),), _presence)

    def presence_stats(self, channel: str) -> asyncio.Future[tuple[int, int]]:
        """(num_clients, num_users), expired entries purged first; counted inside Redis."""
        keys = self._presence_keys(channel)
        return self._link(channel).script("presence_stats", keys, (_ms(self._clock()),), _stats)

    def _presence_keys(self, channel: str) -> tuple[bytes, bytes]:
        return self.keys.presence_data(channel).encode(), self.keys.presence_expire(channel).encode()

    # -- Socket.IO connection state recovery (gateway.socketio.recovery) ----------------------

    def _sio_link(self, key: str) -> CommandLink:
        return self._links[owner(key, self._n) if self._n > 1 and not self._cluster else 0]

    def keep_session(self, pid: str, value: bytes, ttl: float) -> asyncio.Future[None]:
        """Store a session's packed recovery state under its pid for ``ttl`` seconds (replacing any)."""
        key = self.keys.sio_session(pid).encode()
        return self._sio_link(key.decode()).call((b"SET", key, value, b"PX", b"%d" % _ms(ttl)), _none)

    def take_session(self, pid: str) -> asyncio.Future[TakenState]:
        """The packed state under ``pid``, removed (taken once); none when absent or expired,
        ``held`` for a snapshot of a session whose node is still alive (see ``sio_take.lua``)."""
        key = self.keys.sio_session(pid)
        return self._sio_link(key).script("sio_take", (key.encode(),), (self.keys.sio_node_prefix.encode(),),
                                          _taken)

    def forget_session(self, pid: str) -> asyncio.Future[None]:
        key = self.keys.sio_session(pid)
        return self._sio_link(key).call((b"DEL", key.encode()), _none)

    def mark_node_alive(self, node_id: str, ttl: float) -> asyncio.Future[None]:
        """Keep this node's liveness key for ``ttl`` more seconds (on every shard, so that a
        session's key and its node's liveness key always share a shard)."""
        key = self.keys.sio_node(node_id).encode()
        futures = [link.call((b"SET", key, b"1", b"PX", b"%d" % _ms(ttl)), _none) for link in self._links]
        return futures[0] if len(futures) == 1 else _first_error(self._loop, futures)

    def publish_control(self, payload: bytes) -> asyncio.Future[None]:
        control = self.keys.control
        return self._publish_raw(self._links[0], control, control, payload, _none)

    def _prober(self, index: int) -> Callable[[bytes], asyncio.Future[Any]]:
        link, channel = self._links[index], self._probe_channel
        return lambda token: self._publish_raw(link, channel, channel, token, _none)

    # -- pub/sub -------------------------------------------------------------------------

    def subscribe(self, channel: str) -> asyncio.Future[None]:
        """Resolves once Redis confirmed the SUBSCRIBE (or fails with StoreUnavailable after io_timeout)."""
        return self._pubsubs[self.shard_index(channel)].subscribe(self.keys.pubsub(channel))

    def unsubscribe(self, channel: str) -> None:
        self._pubsubs[self.shard_index(channel)].unsubscribe(self.keys.pubsub(channel))

    def _dispatch(self, redis_channel: bytes, data: bytes) -> None:
        try:
            if redis_channel == self._control:
                if self._on_control is not None:
                    self._on_control(data)
                return
            channel = self.keys.channel_of(redis_channel.decode("utf-8", "replace"))
            message = parse_message(data) if channel is not None else None
            if channel is None or message is None:
                self.dropped += 1
                return
            self._on_message(channel, message)
        except Exception:  # a handler bug must not kill the shard's reader
            log.exception("redis: message handler failed")
