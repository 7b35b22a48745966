"""The composition root of one worker: hub, engine, router, control, verifiers, RPC.

Sessions and the server API talk to :attr:`Node.engine` (a typed Broker and
PresenceManager, :mod:`gateway.engine.base`); deliveries come back to :attr:`Node.hub`.
Worker-level actions (disconnect a user, stats, channels) are :mod:`gateway.cluster.control`
operations, run here or on another slot through the router.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
from collections.abc import Callable
from typing import Any, TypeVar

import orjson

from gateway.auth import TokenVerifier
from gateway.cluster.control import CLUSTER_SURVEY_OP, CONTROL_OP, EMULATION_OP, Control
from gateway.cluster.nodes import ClusterDirectory
from gateway.cluster.router import Bus, Reply, RequestHandler, Router
from gateway.config import ChannelOptions, Config, ProxyEndpoint
from gateway.consume.events import EventSink
from gateway.core.channels import check_channel_name
from gateway.core.errors import ERROR_UNKNOWN_CHANNEL, UNSUBSCRIBE_INSUFFICIENT_STATE, ClientError
from gateway.core.model import Done, StreamOptions
from gateway.core.subscription import stream_options
from gateway.core.wheel import Deadline, TimerWheel
from gateway.engine.base import NodeEngine, SessionStates
from gateway.engine.memory import MemoryEngine
from gateway.hub import Hub
from gateway.obs.stats import Stats
from gateway.proxy.caller import ProxyCaller
from gateway.proxy.service import ProxyClient
from gateway.session.rpc import RpcRegistry, echo, load_handler
from sharding.envelope import Envelope
from sharding.ids import make_client_id

__all__ = ["Node", "Flusher", "Timers"]

log = logging.getLogger("shardgate.node")

T = TypeVar("T")
_ERROR_INTERNAL = ClientError(100, "internal server error", temporary=True)


class Flusher:
    """Flush every connection that got output this tick, once, at the end of the tick."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._dirty: list[Any] = []

    def mark(self, conn: Any) -> None:
        if not self._dirty:
            self._loop.call_soon(self._flush)
        self._dirty.append(conn)

    def _flush(self) -> None:
        dirty = self._dirty
        self._dirty = []
        for conn in dirty:
            conn.flush()


class Timers:
    """Per-connection deadlines (pings, pongs, expiries) on one :class:`TimerWheel`, driven
    by a single loop timer while any are pending: a few dozen bytes each instead of a loop
    timer's half KiB. Late by at most about two ``RESOLUTION``; never early."""

    RESOLUTION = 0.1

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.wheel = TimerWheel(self.RESOLUTION)
        self._handle: asyncio.TimerHandle | None = None

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Deadline:
        deadline = self.wheel.add(self._loop.time(), delay, callback, *args)
        if self._handle is None:
            self._handle = self._loop.call_later(self.RESOLUTION, self._tick)
        return deadline

    def _tick(self) -> None:
        self._handle = None
        for deadline in self.wheel.due(self._loop.time()):
            callback, args = deadline.take()
            if callback is None:
                continue  # cancelled by an earlier callback of this tick
            try:
                callback(*args)
            except Exception:
                log.exception("timer callback %r failed", callback)
        if self.wheel.pending and self._handle is None:
            self._handle = self._loop.call_later(self.RESOLUTION, self._tick)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


def proxy_endpoints(config: Config) -> list[ProxyEndpoint]:
    """Every proxy the config uses (connect, refresh, each namespace's, each RPC namespace's)."""
    found: list[ProxyEndpoint] = []
    client = config.client
    channel = config.channel
    options = [channel.without_namespace, *(o for _, o in channel.namespaces)]
    if channel.any_namespace is not None:
        options.append(channel.any_namespace)
    rpc = config.rpc
    for proxy in (client.connect_proxy, client.refresh_proxy,
                  *(p for o in options for p in (o.subscribe_proxy, o.publish_proxy, o.sub_refresh_proxy)),
                  rpc.without_namespace.proxy, *(o.proxy for _, o in rpc.namespaces)):
        if proxy is not None and proxy not in found:
            found.append(proxy)
    return found


class Node:
    def __init__(self, config: Config, slot: int, workers: int, loop: asyncio.AbstractEventLoop,
                 clock: Callable[[], float], rng: random.Random | None = None, node_id: str = "",
                 node_name: str = "") -> None:
        self.config = config
        self.node_id = node_id or f"{socket.gethostname()}-{os.getpid()}"
        self.node_name = node_name or socket.gethostname()  # workers are "<node name>.<slot>" in info
        self.cluster: ClusterDirectory | None = None
        # State every node sees (the Redis engine): Socket.IO recovery across nodes.
        self.session_states: SessionStates | None = None
        self.slot = slot
        self.workers = workers
        self.loop = loop
        self.clock = clock
        self.rng = rng or random.Random()
        self.metrics = Stats()
        self.hub = Hub(self.metrics, loop.call_soon)
        self.flusher = Flusher(loop)
        self.timers = Timers(loop)
        self.router = Router(slot, workers, loop, clock, self.rng, config.shardgate.bus_request_timeout,
                             self.metrics)
        self.incarnation = self.router.incarnation
        self.engine: NodeEngine = self._make_engine()
        self.router.on_request = self._on_request
        self.router.on_notify = self._on_notify
        # Bus operations of other subsystems (Socket.IO polling forwarding): op -> handler.
        self.extra_requests: dict[int, Callable[[int, str, bytes, int, Reply], None]] = {}
        self.extra_notifies: dict[int, Callable[[int, str, bytes, int], None]] = {}
        self.router.on_delivery = self.engine.handle_delivery
        self.router.on_handoff = self._on_handoff
        self.router.on_peer_restarted = self._peer_restarted
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
        self.on_handoff_done: Callable[[], None] | None = None
        self.handoff_received = False
        # shardgate.events_out: client publications (joins, leaves) out to RabbitMQ; set by the worker
        self.events: EventSink | None = None
        # Centrifugo proxies: one pooled HTTP client per worker (made on its first call, in this
        # worker's loop), and the upgrade headers any proxy forwards (kept per connection).
        endpoints = proxy_endpoints(config)
        self.proxy_header_names = frozenset(h for p in endpoints for h in p.http_headers)
        self.proxy_emulated_headers = any(p.emulated_headers for p in endpoints)
        self.proxy: ProxyClient | None = ProxyClient(self._proxy_caller()) if endpoints else None
        # Commands for an emulated session held here, from the worker an /emulation POST reached
        # (set by gateway.transport.streaming.EmulationHub when http_stream or sse is enabled).
        self.on_emulation: RequestHandler | None = None

    def _proxy_caller(self) -> ProxyCaller:
        from gateway.proxy.http import HttpProxyCaller  # aiohttp's client only where a proxy is configured

        return HttpProxyCaller()

    def _make_engine(self) -> NodeEngine:
        """``engine.type``: memory (owners over ZeroMQ) or redis (several nodes)."""
        if self.config.engine.type == "redis":
            from gateway.engine.redis.engine import RedisEngine  # only Redis deployments load redis-py

            def on_control(payload: bytes) -> None:
                if self.cluster is not None:
                    self.cluster.on_control(payload)

            engine = RedisEngine(self.config.engine.redis, self.router, self.hub, self.loop, self.clock, self.rng,
                                 self.metrics, on_control=on_control if self.slot == 0 else None,
                                 delivered=lambda: self.hub.channels, stream_options=self.stream_options,
                                 position_check_delay=self.config.client.channel_position_check_delay)
            # Slot 0 listens on the control channel for the node; every worker may publish there.
            self.cluster = ClusterDirectory(self.node_id, self.node_name, self.loop, self.clock,
                                            engine.publish_control, self.survey)
            self.session_states = engine
            return engine
        return MemoryEngine(self.router, self.hub, self.clock, self.rng, self.metrics, self._join_leave)

    # -- wiring ---------------------------------------------------------------------------------

    def attach_bus(self, bus: Bus, announce: bool = True) -> None:
        self.router.attach(bus, announce)

    @property
    def bus_ready(self) -> bool:
        return self.router.ready

    @property
    def frozen(self) -> bool:
        return self.engine.frozen

    @frozen.setter
    def frozen(self, value: bool) -> None:
        self.engine.frozen = value

    @property
    def connection_limit(self) -> int:
        """This worker's share of ``client.connection_limit`` (0 = none)."""
        limit = self.config.client.connection_limit
        return -(-limit // self.workers) if limit else 0

    def new_client_id(self) -> str:
        return make_client_id(self.slot, self.rng)

    def resolve_channel(self, channel: str) -> ChannelOptions:
        """The namespace options of a channel named by any source (client, API, token).

        Raises:
            ClientError: 107 for a name the channel-name rule refuses, 102 for an unknown namespace.
        """
        check_channel_name(channel, self.config.channel.max_length)
        opts = self.config.channel_options(channel)
        if opts is None:
            raise ERROR_UNKNOWN_CHANNEL
        return opts

    def stream_options(self, channel: str) -> StreamOptions | None:
        """The channel's history settings (None without history or for an unknown namespace)."""
        opts = self.config.channel_options(channel)
        return None if opts is None else stream_options(opts, self.config.channel.history_meta_ttl)

    def _join_leave(self, channel: str) -> bool:
        opts = self.config.channel_options(channel)
        return opts is not None and opts.join_leave

    # -- awaitable forms, for the HTTP API (never on the client hot path) ------------------------

    async def wait(self, start: Callable[[Done[T]], None]) -> T:
        """Run an engine call that reports through ``done`` and await its result."""
        future: asyncio.Future[T] = self.loop.create_future()

        def done(result: T | None, error: ClientError | None) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            elif result is None:
                future.set_exception(_ERROR_INTERNAL)
            else:
                future.set_result(result)

        start(done)
        return await future

    # -- control actions on a slot --------------------------------------------------------------

    def _on_request(self, op: int, channel: str, payload: bytes, origin: int, reply: Reply) -> None:
        if op == CONTROL_OP:
            reply(orjson.dumps(self.control.handle(channel, orjson.loads(payload))), None)
        elif op == CLUSTER_SURVEY_OP:
            self._cluster_survey(channel, orjson.loads(payload), reply)
        elif op == EMULATION_OP:
            if self.on_emulation is None:
                raise ClientError(104, "method not found: emulation is not enabled")
            self.on_emulation(op, channel, payload, origin, reply)
        elif op in self.extra_requests:
            self.extra_requests[op](op, channel, payload, origin, reply)
        else:
            self.engine.handle_request(op, channel, payload, origin, reply)

    def _on_notify(self, op: int, channel: str, payload: bytes, origin: int) -> None:
        extra = self.extra_notifies.get(op)
        if extra is not None:
            extra(op, channel, payload, origin)
        else:
            self.engine.handle_notify(op, channel, payload, origin)

    # -- several nodes (the Redis engine) -------------------------------------------------------

    def _cluster_survey(self, method: str, body: dict[str, Any], reply: Reply) -> None:
        """Slot 0 asks the other nodes (it is the one that hears their answers)."""
        cluster = self.cluster
        if cluster is None or self.slot != 0:
            reply(orjson.dumps({}), None)
            return
        task = self.loop.create_task(cluster.survey(method, body))

        def done(t: asyncio.Task[dict[str, list[dict[str, Any]]]]) -> None:
            if t.cancelled() or t.exception() is not None:
                reply(None, ClientError(100, "internal server error: cluster survey failed", temporary=True))
            else:
                reply(orjson.dumps(t.result()), None)

        task.add_done_callback(done)

    async def cluster_survey(self, method: str, body: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        """Other nodes' workers' answers to control action ``method`` (empty without Redis)."""
        if self.cluster is None:
            return {}

        def start(done: Done[dict[str, list[dict[str, Any]]]]) -> None:
            def reply(raw: bytes | None, error: ClientError | None) -> None:
                done(orjson.loads(raw) if raw is not None else None, error)

            if self.slot == 0:
                self._cluster_survey(method, body, reply)
            else:
                self.router.request(0, CLUSTER_SURVEY_OP, method, orjson.dumps(body), reply,
                                    timeout=self.config.shardgate.bus_request_timeout + 1.0)

        return await self.wait(start)

    async def cluster_broadcast(self, method: str, body: dict[str, Any]) -> None:
        """Have the other nodes run control action ``method`` on their workers."""
        if self.cluster is not None:
            try:
                await self.cluster.broadcast(method, body)
            except Exception as exc:
                raise ClientError(100, "internal server error: engine unavailable", temporary=True) from exc

    def request_slot(self, slot: int, method: str, body: dict[str, Any], done: Done[dict[str, Any]],
                     timeout: float | None = None) -> None:
        """Run control action ``method`` (see ``gateway.cluster.control``) on the worker in ``slot``."""
        if slot == self.slot:
            try:
                result = self.control.handle(method, body)
            except ClientError as exc:
                done(None, exc)
                return
            except Exception:
                log.exception("control %s failed", method)
                done(None, _ERROR_INTERNAL)
                return
            done(result, None)
            return

        def reply(raw: bytes | None, error: ClientError | None) -> None:
            if error is not None or raw is None:
                done(None, error or _ERROR_INTERNAL)
            else:
                done(orjson.loads(raw), None)

        try:
            payload = orjson.dumps(body)
        except orjson.JSONEncodeError:
            done(None, ClientError(107, "bad request"))
            return
        self.router.request(slot, CONTROL_OP, method, payload, reply, timeout)

    async def call_slot(self, slot: int, method: str, body: dict[str, Any],
                        timeout: float | None = None) -> dict[str, Any]:
        return await self.wait(lambda done: self.request_slot(slot, method, body, done, timeout))

    async def survey(self, method: str, body: dict[str, Any],
                     timeout: float | None = None) -> list[tuple[int, dict[str, Any] | None]]:
        """Ask every slot; a slot that fails or does not answer in time gives None."""

        async def one(slot: int) -> tuple[int, dict[str, Any] | None]:
            try:
                return slot, await self.call_slot(slot, method, body, timeout)
            except ClientError:
                return slot, None

        return list(await asyncio.gather(*(one(slot) for slot in range(self.workers))))

    def close(self) -> None:
        self.router.close()
        self.timers.close()

    # -- reload handoff and peer restarts -------------------------------------------------------

    def freeze(self) -> None:
        """Stop changing owned channels: their state is being handed to a successor."""
        self.engine.freeze()

    def handoff_envelopes(self) -> list[Envelope]:
        return self.engine.handoff_envelopes()

    def _on_handoff(self, env: Envelope) -> None:
        if self.engine.install_handoff(env):
            self.handoff_received = True
            if self.on_handoff_done is not None:
                self.on_handoff_done()

    def _peer_restarted(self, slot: int) -> None:
        """Slot ``slot`` lost its memory: forget what lived there, resubscribe what it owned."""
        log.warning("slot %d restarted: dropping its presence, resubscribing its channels", slot)
        self.engine.forget_slot(slot)
        for channel, local in list(self.hub.channels.items()):
            if self.engine.owner(channel) != slot:
                continue
            for sub in local.subscribers():
                sub.server_unsubscribe(channel, UNSUBSCRIBE_INSUFFICIENT_STATE)
