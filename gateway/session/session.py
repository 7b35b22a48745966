"""One client connection: protocol state, the outbound queue, command dispatch and timers;
its subscriptions are the :class:`~gateway.session.membership.Memberships` part.

The edge (``gateway.transport.websocket``) hands complete text messages to
:meth:`Session.on_message` and implements :class:`Transport`. Command handlers live in
their own modules (:mod:`.connect`, :mod:`.subscriptions`, :mod:`.commands`) and reach the
session through the table :mod:`.handlers` gives it, so this module imports none of them.
Channel operations go to the engine (:attr:`gateway.node.Node.engine`, typed), whose
answer comes back as a callback (no task per command). Every write goes through one
per-connection queue flushed once per loop tick; replies and pushes are written through
different methods, so they are told apart by type. Errors are classified in one place,
:meth:`Session.fail`.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from time import perf_counter
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

import orjson
from mypy_extensions import mypyc_attr

from gateway.core.errors import (
    DISCONNECT_EXPIRED,
    DISCONNECT_INTERNAL,
    DISCONNECT_NO_PONG,
    DISCONNECT_PERMISSION_DENIED,
    DISCONNECT_SLOW,
    DISCONNECT_STALE,
    DISCONNECT_TOO_MANY_REQUESTS,
    ERROR_INTERNAL,
    ERROR_TOO_MANY_REQUESTS,
    ClientError,
    Disconnect,
    classify,
)
from gateway.core.limits import TokenBucket, Verdict
from gateway.core.model import ClientInfo
from gateway.core.wheel import Deadline
from gateway.obs.logs import RateLimit
from gateway.protocol.centrifuge_json import JSON
from gateway.protocol.codec import Codec, Command
from gateway.proxy.caller import CallHandle
from gateway.proxy.messages import ConnInfo
from gateway.proxy.service import ProxyDone
from gateway.session.membership import Memberships, Sub
from gateway.session.rpc import RpcContext

if TYPE_CHECKING:
    from gateway.config import ChannelOptions
    from gateway.node import Node

__all__ = ["Session", "Transport", "State", "Handlers"]

log = logging.getLogger("shardgate.client")

T = TypeVar("T")

# Normal endings are not logged; every other disconnect is, at most 100 per 10 s per worker.
_QUIET_CODES = frozenset({1000, 1001, 3000, 3001})
_DISCONNECT_LOG = RateLimit(burst=100, period=10.0)
# A one-way client's failed connect becomes this disconnect (centrifuge defaultUniErrorCodeToDisconnect);
# any other error code: 3004 internal server error.
_UNI_CONNECT_DISCONNECT = {110: DISCONNECT_EXPIRED, 109: DISCONNECT_EXPIRED,
                           111: DISCONNECT_TOO_MANY_REQUESTS, 103: DISCONNECT_PERMISSION_DENIED}


class Transport(Protocol):
    """What a session needs from its client transport."""

    def send_text(self, data: bytes) -> None:
        """Send one message: TEXT, or BINARY for a codec whose frames are binary."""
        ...

    def close(self, code: int, reason: str) -> None: ...

    def write_buffer_size(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Handlers:
    """The command handlers a session dispatches to, and what the server API's subscribe
    action runs (given by :mod:`gateway.session.handlers`)."""

    commands: dict[str, Callable[[Session, Command], None]]
    server_subscribe: Callable[[Session, str, dict[str, Any]], None]
    #: The connection reached its expiry and ``client.proxy.refresh`` decides (server-side refresh).
    proxy_refresh: Callable[[Session], None] | None = None
    #: A subscription made through a subscribe proxy reached its expiry and its namespace's
    #: sub_refresh proxy decides.
    proxy_sub_refresh: Callable[[Session, str], None] | None = None


class State(IntEnum):
    CONNECTING = 0
    CONNECTED = 1
    CLOSED = 2


# An enum member lookup goes through EnumType's descriptor (~50 ns on 3.11, ten times a
# global's): the per-message paths compare against these instead.
_CONNECTING: Final = State.CONNECTING
_CONNECTED: Final = State.CONNECTED
_CLOSED: Final = State.CLOSED
_OK: Final = Verdict.OK
_ABUSE: Final = Verdict.ABUSE


_UNBOUNDED = 1 << 62
# Shared and read-only: most connections have no forwarded or emulated headers (a dict each
# would be 64 bytes per connection for nothing).
_NO_HEADERS: Mapping[str, str] = MappingProxyType({})


@mypyc_attr(allow_interpreted_subclasses=True)  # SioSession, when compiled (tools/native.py)
class Session(Memberships):
    """The server side of one Centrifugo connection."""

    # Slots: a worker holds one Session per connection (tens of thousands); an instance
    # __dict__ with these ~35 attributes costs about 1.5 KiB more per connection.
    __slots__ = (
        "_bucket",
        "_calls",
        "_conn_info_raw",
        "_direct",
        "_held",
        "_inflight",
        "_max_commands",
        "_max_inflight",
        "_out",
        "_out_bytes",
        "_ping_outstanding",
        "_ping_timer",
        "_pong_timer",
        "_pumping",
        "_queue",
        "_queue_max",
        "_reply_now",
        "_send_bound",
        "_slow",
        "client_id",
        "codec",
        "conn_info",
        "connect_extra",
        "emulated_headers",
        "expire_at",
        "expire_timer",
        "fast_send",
        "handlers",
        "headers",
        "meta",
        "node",
        "paused",
        "proxy_subscribing",
        "push_now",
        "rpc_context",
        "stale_timer",
        "state",
        "subs",
        "transport",
        "unidirectional",
        "unusable",
        "user",
    )

    def __init__(self, node: Node, transport: Transport, handlers: Handlers, codec: Codec = JSON,
                 headers: Mapping[str, str] | None = None) -> None:
        self.node = node
        self.transport = transport
        self.handlers = handlers
        self.codec = codec
        self.state = _CONNECTING
        self.client_id = ""
        self.user = ""
        self.conn_info: Any = None
        self._conn_info_raw: bytes | None = None
        self.rpc_context: RpcContext | None = None  # what rpc handlers get: made by the first rpc
        self.expire_at: int | None = None
        self.meta: Any = None  # connection meta (token or connect proxy): for proxies only
        # Upgrade-request headers some proxy forwards (lower-case names), and the connect
        # command's emulated headers when a proxy forwards some.
        self.headers: Mapping[str, str] = headers or _NO_HEADERS
        self.emulated_headers: Mapping[str, str] = _NO_HEADERS
        self._calls: list[CallHandle] | None = None  # proxy calls in flight, cancelled on close
        self.proxy_subscribing: set[str] | None = None  # channels whose subscribe proxy has not answered
        self.subs: dict[str, Sub] = {}
        self.paused = False
        self.unusable = False  # a failed connect: any further command closes 3501
        # Set by one-way transports (uni_*): no pongs expected, a failed connect disconnects.
        self.unidirectional = False
        # Extra connect-result fields a transport adds (``session``/``node`` for emulation).
        self.connect_extra: dict[str, Any] | None = None
        self._out: list[bytes] = []
        self._out_bytes = 0
        # Set by a transport that signals back-pressure (see set_fast_send). ``push_now`` is
        # it while a push may bypass the queue, else None: what the hub's fan-out loop reads.
        self.fast_send: Callable[[bytes], None] | None = None
        self.push_now: Callable[[bytes], None] | None = None
        # What the socket may hold while not paused (its high-water mark); unknown: unbounded.
        self._send_bound = _UNBOUNDED
        # Commands run in order, at most ``max_inflight_commands`` waiting on an engine at once;
        # the rest of a message waits here, so one message cannot fan out into hundreds of
        # owner requests (and their replies) at the same time.
        self._queue: deque[Command] | None = None  # made when first needed: most connections never queue
        self._inflight = 0
        self._max_inflight = node.config.shardgate.max_inflight_commands
        self._pumping = False
        self._slow = False
        self._direct = False  # inside on_message: its end flushes
        self._reply_now = False  # inside on_message, handling its only command
        self._max_commands = node.config.shardgate.max_commands_per_frame
        self._queue_max = node.config.client.queue_max_size
        rate = node.config.shardgate.command_rate
        self._bucket = TokenBucket(rate, node.config.shardgate.command_burst, node.clock()) if rate else None
        self._held: list[bytes] | None = None  # pushes held until the connect reply
        self._ping_outstanding = False
        self._ping_timer: Deadline | None = None
        self._pong_timer: Deadline | None = None
        self.expire_timer: Deadline | None = None
        cfg = node.config.client
        self.stale_timer: Deadline | None = node.timers.call_later(
            cfg.stale_close_delay, self.close, DISCONNECT_STALE) if cfg.stale_close_delay > 0 else None

    @property
    def closed(self) -> bool:
        return self.state is _CLOSED

    @property
    def connected(self) -> bool:
        return self.state is _CONNECTED

    def set_conn_info(self, info: Any) -> None:
        self.conn_info = info
        self.rpc_context = None  # made again, with this info, by the next rpc
        self._conn_info_raw = None if info is None else orjson.dumps(info)

    def client_info(self, chan_info: bytes | None = None) -> ClientInfo:
        return ClientInfo(self.user, self.client_id, self._conn_info_raw, chan_info)

    # -- output ---------------------------------------------------------------------------------

    def set_fast_send(self, send: Callable[[bytes], None] | None, high_water: int) -> None:
        """``send`` writes one message to the socket at once, and the transport calls
        :meth:`pause` once its buffer passes ``high_water`` and :meth:`resume` when it drains,
        so while not paused the socket holds at most ``high_water`` bytes."""
        self.fast_send = send
        self._send_bound = high_water if send is not None else _UNBOUNDED
        self._arm()

    def _arm(self) -> None:
        """``push_now`` is ``fast_send`` exactly while nothing is queued, held, paused, slow
        or closed: a push written through then keeps its order and its bounds. Every change
        of one of those conditions calls this (or clears ``push_now`` itself)."""
        send = self.fast_send
        self.push_now = send if (send is not None and not self._out and self._held is None and not self.paused
                                 and not self._slow and self.state is not _CLOSED) else None

    def pause(self) -> None:
        self.paused = True
        self.push_now = None

    def hold_pushes(self) -> None:
        """Until :meth:`release_pushes`, queue pushes aside (replies still go out)."""
        self._held = []
        self.push_now = None

    def release_pushes(self) -> None:
        held, self._held = self._held, None
        for data in held or ():
            self._write(data)
        self._arm()

    def write_reply(self, data: bytes) -> None:
        """Queue one encoded reply."""
        self._write(data)

    def write_push(self, data: bytes) -> None:
        """Queue one encoded push (held back while :meth:`hold_pushes` is in force)."""
        if self._held is not None:
            if self.state is not _CLOSED:
                self._held.append(data)
            return
        self._write(data)

    def _write(self, data: bytes) -> None:
        """Queue ``data``; flushed with the others queued this tick.

        Never closes synchronously: this runs inside fan-out loops over subscriber
        dicts, so an overflow only marks the connection slow and schedules the flush
        that closes it (within the tick, also while the transport is paused). The
        socket's own write buffer is added in at flush time, once per tick.
        """
        if self.state is _CLOSED or self._slow:
            return
        self.push_now = None  # behind what is queued from now on
        if not self._out and not self._direct:
            self.node.flusher.mark(self)
        self._out.append(data)
        self._out_bytes += len(data) + 1
        if self._out_bytes > self._queue_max:
            self._slow = True
            if len(self._out) > 1 and not self._direct:
                self.node.flusher.mark(self)  # the queue may be parked on a paused transport

    def flush(self) -> None:
        out = self._out
        queued, limit = self._out_bytes, self._queue_max
        # The socket's own buffer counts too; it is asked only when it may matter (unpaused,
        # it holds at most _send_bound: this is once per reply on the request path).
        if self._slow or (out and (self.paused or queued + self._send_bound > limit)
                          and queued + self.transport.write_buffer_size() > limit):
            self._slow = True
            self.close(DISCONNECT_SLOW)
            return
        if not out or self.paused or self.state is _CLOSED:
            return
        self._out = []
        self._out_bytes = 0
        data = out[0] if len(out) == 1 else self.codec.separator.join(out)
        send = self.fast_send
        if send is not None:
            send(data)  # picows' own send where it can be: one Python frame less per reply
        else:
            self.transport.send_text(data)
        # _arm() inlined: the queue is empty now.
        if send is not None and self._held is None and not self.paused and not self._slow \
                and self.state is not _CLOSED:  # type: ignore[comparison-overlap]  # send may close
            self.push_now = send

    def resume(self) -> None:
        self.paused = False
        if self._out:
            self.node.flusher.mark(self)  # its flush arms push_now
        else:
            self._arm()

    # -- input ----------------------------------------------------------------------------------

    def on_message(self, data: bytes) -> None:
        """One complete message from the client (in the connection's codec)."""
        if self.state is _CLOSED:
            return
        try:
            commands = self.codec.decode_commands(data, self._max_commands, perf_counter())
        except Disconnect as exc:
            self.close(exc)
            return
        stats = self.node.metrics
        stats.bytes_in += len(data)
        received = stats.messages_in
        # Replies to this message go out in one write as soon as it is handled, not a loop
        # tick later through the flusher (request/response latency); the reply to a message's
        # only command (most messages) is written the moment it is encoded.
        self._direct = True
        try:
            if len(commands) == 1:
                self._reply_now = True
                cmd = commands[0]
                method = cmd.method
                # The request path's common case, checked and dispatched here in one frame: a
                # command with an id (not connect) on a connected, usable connection, with nothing
                # queued or running ahead of it and room in flight. These are the conditions of
                # _can_start() and of _start()'s shortcut past _admitted(), together; the rest of
                # the handling is _on_commands()'s for one command.
                if cmd.id and self.state is _CONNECTED and self._queue is None and not self._pumping \
                        and self._inflight < self._max_inflight and not self._slow and not self.unusable \
                        and method != "connect":
                    handler = self.handlers.commands.get(method)
                    if handler is not None:  # (else the general path closes 3501)
                        received[method] = received.get(method, 0) + 1
                        bucket = self._bucket
                        if bucket is not None:
                            verdict = bucket.take(self.node.clock())
                            if verdict is not _OK:
                                self._refuse(cmd, verdict)
                                return
                        cmd.pending = True
                        self._inflight += 1
                        self._pumping = True
                        try:
                            handler(self, cmd)
                        except Exception as exc:
                            self.fail(cmd, exc)
                        finally:
                            self._pumping = False
                        if self._queue:
                            self._pump()
                        return
            else:
                self._reply_now = False
            self._on_commands(commands, received)
        finally:
            self._direct = False
            self._reply_now = False
            if self._out or self._slow:
                self.flush()

    def _on_commands(self, commands: list[Command], received: dict[str, int]) -> None:
        """Dispatch a message's commands (the general case of :meth:`on_message`): each is
        counted, rate-limited, then run now or queued behind those still waiting."""
        bucket = self._bucket
        now = self.node.clock() if bucket is not None else 0.0
        for cmd in commands:
            method = cmd.method or "pong"
            received[method] = received.get(method, 0) + 1
            if bucket is not None and cmd.method:
                verdict = bucket.take(now)
                if verdict is not _OK:
                    if not self._refuse(cmd, verdict):
                        return  # closed: the rest of the message is not read
                    continue
            if self._queue is None and not self._pumping and self._can_start():
                # Nothing waits ahead of it: run it now, without the queue.
                self._pumping = True
                try:
                    self._start(cmd)
                finally:
                    self._pumping = False
                continue
            if self._queue is None:
                self._queue = deque()
            self._queue.append(cmd)
        if self._queue:
            self._pump()

    def _refuse(self, cmd: Command, verdict: Verdict) -> bool:
        """A command over the rate limit: error 111 (to a command with an id), or, for a client
        that overdrew the burst once more, the end of the connection (3013). Whether it is still open."""
        if verdict is _ABUSE:
            self.close(DISCONNECT_TOO_MANY_REQUESTS)
            return False
        if cmd.id:
            self.fail(cmd, ERROR_TOO_MANY_REQUESTS)
        return True

    def _pump(self) -> None:
        """Dispatch queued commands in order while fewer than the bound are in flight;
        nothing more is dispatched (or encoded) once the connection is slow or closed."""
        if self._pumping:
            return  # a command answered synchronously: the loop below goes on
        self._pumping = True
        queue = self._queue
        try:
            while queue and self._inflight < self._max_inflight:
                if self.state is _CLOSED or self._slow:
                    queue.clear()
                    return
                if self.state is _CONNECTING and self._inflight:
                    return  # a connect proxy is deciding: what follows the connect waits for it
                self._start(queue.popleft())
        finally:
            self._pumping = False
            if not queue:
                self._queue = None

    def _can_start(self) -> bool:
        """Whether a command may be dispatched now (the conditions of :meth:`_pump`'s loop)."""
        state = self.state
        return (self._inflight < self._max_inflight and state is not _CLOSED and not self._slow
                and not (state is _CONNECTING and self._inflight))

    def _start(self, cmd: Command) -> None:
        cmd.pending = True
        self._inflight += 1
        method = cmd.method
        # Most commands (an id, not connect, on a connected and usable connection) pass every
        # check of _admitted(): they skip it.
        if (cmd.id and self.state is _CONNECTED and method != "connect" and not self.unusable) \
                or self._admitted(cmd):
            handler = self.handlers.commands.get(method)
            if handler is None:
                self.close(Disconnect(3501, f"bad request: unsupported method {method}"))
            else:
                try:
                    handler(self, cmd)
                except Exception as exc:
                    self.fail(cmd, exc)
        if cmd.id == 0:
            self._answered(cmd)  # a pong or a send: no reply is owed

    def _answered(self, cmd: Command) -> None:
        if cmd.pending:
            cmd.pending = False
            self._inflight -= 1
            if self._queue and not self._pumping:
                self._pump()

    def _admitted(self, cmd: Command) -> bool:
        """Whether ``cmd`` goes to its handler; a pong is taken here, and a command this state
        refuses closes the connection (3501)."""
        method = cmd.method
        if method == "":
            if cmd.id:
                self.close(Disconnect(3501, "bad request: no method"))
            else:
                self._on_pong()
            return False
        if self.unusable:
            self.close(Disconnect(3501, "bad request: connection unusable"))
            return False
        if method == "connect":
            if self.state is not _CONNECTING:
                self.close(Disconnect(3501, "bad request: client already authenticated"))
                return False
        elif self.state is _CONNECTING:
            self.close(Disconnect(3501, "bad request: connect first"))
            return False
        if method != "send" and cmd.id == 0:
            self.close(Disconnect(3501, "bad request: command without id"))
            return False
        return True

    def fail(self, cmd: Command, exc: BaseException) -> None:
        """The one place a command's failure becomes what the peer sees.

        The command counts as answered (and the next queued one may run) only once its error is
        written, or the connection closed, and a failed connect marked unusable: a command queued
        behind a connect that a proxy refused later is never dispatched as if still connecting,
        and goes out after the connect's error."""
        err = classify(exc)
        if isinstance(err, Disconnect):
            self.close(err)
            self._answered(cmd)
            return
        if err is ERROR_INTERNAL and not isinstance(exc, ClientError):
            log.exception("internal error in %s from client %s", cmd.method, self.client_id, exc_info=exc)
        if cmd.method == "connect":
            self.unusable = True
            if self.unidirectional:
                # A one-way client cannot read an error reply: the error ends the connection
                # (centrifuge's extractUnidirectionalDisconnect).
                self.close(_UNI_CONNECT_DISCONNECT.get(err.code, DISCONNECT_INTERNAL))
                self._answered(cmd)
                return
        stats = self.node.metrics
        stats.reply_error(cmd.method, err.code)
        data = self.codec.encode_error(cmd.id, err)
        stats.sent("error", len(data))
        stats.command_done(cmd.method, perf_counter() - cmd.received_at)
        self.write_reply(data)
        self._answered(cmd)

    def reply(self, cmd: Command, result: dict[str, Any]) -> None:
        if cmd.pending:  # _answered(cmd), inlined: once per reply
            cmd.pending = False
            self._inflight -= 1
            if self._queue and not self._pumping:
                self._pump()
        if self._slow or self.state is _CLOSED:
            return  # it could not be delivered: do not even encode it
        try:
            data = self.codec.encode_reply(cmd.id, cmd.method, result)
        except ClientError as exc:
            self.fail(cmd, exc)
            return
        self.node.metrics.replied(len(data), cmd.method, perf_counter() - cmd.received_at)
        send = self.push_now
        if send is not None and self._reply_now and len(data) + self._send_bound <= self._queue_max:
            # Nothing is queued ahead of it (else push_now is None), and it cannot take the socket
            # past the queue's bound (a bigger one goes through _write, which enforces it): out now.
            send(data)
            return
        self._write(data)

    def answer(self, cmd: Command, on_result: Callable[[Any], None]) -> Callable[[Any, ClientError | None], None]:
        """An engine ``done`` callback for ``cmd``: errors are classified by :meth:`fail`,
        results go to ``on_result``; nothing is written once the connection is closed."""
        def done(result: Any, error: ClientError | None) -> None:
            if self.state is _CLOSED:
                return
            if error is not None:
                self.fail(cmd, error)
                return
            try:
                on_result(result)
            except Exception as exc:
                self.fail(cmd, exc)
        return done

    def channel_of(self, cmd: Command) -> str:
        channel = cmd.body.get("channel")
        if not isinstance(channel, str) or not channel:
            raise Disconnect(3501, "bad request: channel required")
        return channel

    def options_for(self, channel: str) -> ChannelOptions:
        """Raises ClientError 107 (bad name) or 102 (unknown namespace)."""
        return self.node.resolve_channel(channel)

    # -- proxy calls ----------------------------------------------------------------------------

    def proxy_conn(self) -> ConnInfo:
        """What a proxy request says about this connection."""
        return ConnInfo(self.client_id, self.user, headers=self.headers, emulated_headers=self.emulated_headers,
                        meta=self.meta)

    def proxy_call(self, start: Callable[[ProxyDone[T]], CallHandle], done: ProxyDone[T]) -> None:
        """Start a proxy call (``start(answer)`` returns its handle) and keep its handle while it
        is in flight, so closing the connection cancels it; ``done`` gets the answer."""
        handle: CallHandle | None = None
        finished = False

        def answer(result: T | None, error: ClientError | Disconnect | None) -> None:
            nonlocal finished
            finished = True
            if handle is not None and self._calls is not None:
                self._calls = [c for c in self._calls if c is not handle] or None
            done(result, error)

        handle = start(answer)
        if not finished:
            if self._calls is None:
                self._calls = []
            self._calls.append(handle)

    # -- ping and expiry ------------------------------------------------------------------------

    def start_pings(self) -> None:
        self._schedule_ping(first=True)

    def _schedule_ping(self, first: bool = False) -> None:
        interval = self.node.config.client.ping_interval
        # Spread first pings over [interval/2, interval) like Centrifugo, so a reconnect
        # storm does not ping in lockstep forever after.
        delay = interval / 2 + self.node.rng.random() * interval / 2 if first else interval
        self._ping_timer = self.node.timers.call_later(delay, self._send_ping)

    def _send_ping(self) -> None:
        if self.state is not _CONNECTED:
            return
        ping = self.codec.ping
        self.write_push(ping)
        self.node.metrics.sent("ping", len(ping))
        if not self._ping_outstanding and not self.unidirectional:
            self._ping_outstanding = True
            self._pong_timer = self.node.timers.call_later(
                self.node.config.client.pong_timeout, self.close, DISCONNECT_NO_PONG)
        self._schedule_ping()

    def _on_pong(self) -> None:
        if self.state is not _CONNECTED or not self._ping_outstanding:
            self.close(Disconnect(3501, "bad request: unexpected pong"))
            return
        self._ping_outstanding = False
        if self._pong_timer is not None:
            self._pong_timer.cancel()
            self._pong_timer = None

    def set_expiry(self, expire_at: int | None, now: float, result: dict[str, Any]) -> None:
        """Connection expiry (from a token or the server API); ``result`` gets expires/ttl."""
        self.expire_at = expire_at
        if self.expire_timer is not None:
            self.expire_timer.cancel()
            self.expire_timer = None
        if expire_at is None:
            return
        if self.node.config.client.refresh_proxy is not None and self.handlers.proxy_refresh is not None:
            # Server-side refresh (Centrifugo with client.proxy.refresh): the client is not told
            # of an expiry; at expire_at the refresh proxy extends or ends the connection.
            self.expire_timer = self.node.timers.call_later(max(0.0, expire_at - now), self._refresh_due)
            return
        result["expires"] = True
        result["ttl"] = max(1, int(expire_at - now))
        delay = expire_at - now + self.node.config.client.expired_close_delay
        self.expire_timer = self.node.timers.call_later(max(0.0, delay), self._check_expired)

    def _refresh_due(self) -> None:
        self.expire_timer = None
        if self.state is _CONNECTED and self.handlers.proxy_refresh is not None:
            self.handlers.proxy_refresh(self)

    def _check_expired(self) -> None:
        if self.expire_at is not None and self.expire_at <= self.node.clock():
            self.close(DISCONNECT_EXPIRED)

    def server_subscribe(self, channel: str, request: dict[str, Any]) -> None:
        """A subscription made by the server API: the client learns of it from a push."""
        self.handlers.server_subscribe(self, channel, request)

    def server_refresh(self, request: dict[str, Any]) -> None:
        """The server API changed this connection's expiry or info."""
        if self.state is not _CONNECTED:
            return
        if request.get("expired"):
            self.close(DISCONNECT_EXPIRED)
            return
        if "info" in request:
            self.set_conn_info(request["info"])
        expire_at = request.get("expire_at")
        if type(expire_at) is int:
            self.set_expiry(expire_at if expire_at > 0 else None, self.node.clock(), {})

    def push_message(self, data: Any) -> None:
        """An async ``message`` push to this connection."""
        self.write_push(self.codec.encode_push("", "message", {"data": data}))

    # -- lifecycle ------------------------------------------------------------------------------

    def close(self, disconnect: Disconnect) -> None:
        """Flush what is queued, send CLOSE with the code, and release everything."""
        if self.state is _CLOSED:
            return
        if disconnect.code >= 3000:
            self.node.metrics.disconnected(disconnect.code)
        if disconnect.code not in _QUIET_CODES and _DISCONNECT_LOG.allow():
            suppressed = _DISCONNECT_LOG.take_suppressed()
            log.info("disconnect client=%s user=%s code=%d reason=%s%s", self.client_id, self.user,
                     disconnect.code, disconnect.reason,
                     f" (and {suppressed} more not logged)" if suppressed else "")
        if not self._slow:
            self.flush()
        self._release()
        self.transport.close(disconnect.code, disconnect.reason)

    def on_transport_closed(self) -> None:
        """The socket is gone (client left, or after :meth:`close`)."""
        self._release()

    def _release(self) -> None:
        if self.state is _CLOSED:
            return
        was_connected = self.state is _CONNECTED
        self.state = _CLOSED
        self.push_now = None
        self._out = []
        self._out_bytes = 0
        for timer in (self._ping_timer, self._pong_timer, self.expire_timer, self.stale_timer):
            if timer is not None:
                timer.cancel()
        calls, self._calls = self._calls, None
        for call in calls or ():
            call.cancel()
        for channel in list(self.subs):
            self.drop_sub(channel)
        if was_connected:
            self.node.hub.remove_client(self)
            self.node.metrics.disconnected_client()
