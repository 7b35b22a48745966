"""One client connection: protocol state, command dispatch, subscriptions, timers.

The edge (``gateway.transport.websocket``) hands complete WebSocket text messages to
:meth:`Session.on_message` and implements :class:`Transport`. Commands that touch a
channel go to the channel's owner through :class:`gateway.node.Node`, whose answer
comes back as a synchronous callback (no task per command). Every write, replies and
pushes alike, goes through one per-connection queue that is flushed once per loop tick.
Errors are classified in one place, :meth:`Session._fail`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from gateway import __version__
from gateway.auth import ConnectCredentials
from gateway.core import subscription
from gateway.core.errors import (
    DISCONNECT_CONNECTION_LIMIT,
    DISCONNECT_EXPIRED,
    DISCONNECT_INVALID_TOKEN,
    DISCONNECT_NO_PONG,
    DISCONNECT_SLOW,
    DISCONNECT_STALE,
    DISCONNECT_TOO_MANY_REQUESTS,
    ERROR_ALREADY_SUBSCRIBED,
    ERROR_BAD_REQUEST,
    ERROR_INTERNAL,
    ERROR_LIMIT_EXCEEDED,
    ERROR_PERMISSION_DENIED,
    ERROR_TOO_MANY_REQUESTS,
    ERROR_UNKNOWN_CHANNEL,
    UNSUBSCRIBE_EXPIRED,
    UNSUBSCRIBE_INSUFFICIENT_STATE,
    ClientError,
    Disconnect,
    Unsubscribe,
    classify,
)
from gateway.core.limits import TokenBucket, Verdict
from gateway.obs.logs import RateLimit
from gateway.protocol.centrifuge_json import (
    PING,
    Command,
    client_info,
    decode_commands,
    encode_error,
    encode_push,
    encode_reply,
)
from gateway.session import commands, server_subs

if TYPE_CHECKING:
    from gateway.config import ChannelOptions
    from gateway.node import Node

__all__ = ["Session", "Transport", "State"]

log = logging.getLogger("shardgate.client")

# Normal endings are not logged; every other disconnect is, at most 100 per 10 s per worker.
_QUIET_CODES = frozenset({1000, 1001, 3000, 3001})
_DISCONNECT_LOG = RateLimit(burst=100, period=10.0)


class Transport(Protocol):
    """What a session needs from the WebSocket edge."""

    def send_text(self, data: bytes) -> None: ...

    def close(self, code: int, reason: str) -> None: ...

    def write_buffer_size(self) -> int: ...


class State(IntEnum):
    CONNECTING = 0
    CONNECTED = 1
    CLOSED = 2


class SubStatus(IntEnum):
    SUBSCRIBING = 0
    SUBSCRIBED = 1


@dataclass(slots=True)
class _Sub:
    status: SubStatus
    positioned: bool
    chan_info: Any
    expire_at: int | None = None
    timer: asyncio.TimerHandle | None = None


class Session:
    """The server side of one Centrifugo connection."""

    def __init__(self, node: Node, transport: Transport) -> None:
        self.node = node
        self.transport = transport
        self.state = State.CONNECTING
        self.client_id = ""
        self.user = ""
        self.conn_info: Any = None
        self.expire_at: int | None = None
        self.subs: dict[str, _Sub] = {}
        self.paused = False
        self._out: list[bytes] = []
        self._out_bytes = 0
        self._slow = False
        self._direct = False  # inside on_message: its end flushes
        self._queue_max = node.config.client.queue_max_size
        rate = node.config.shardgate.command_rate
        self._bucket = TokenBucket(rate, node.config.shardgate.command_burst, node.clock()) if rate else None
        self._held: list[bytes] | None = None  # pushes held until the connect reply
        self._unusable = False
        self._ping_outstanding = False
        self._ping_timer: asyncio.TimerHandle | None = None
        self._pong_timer: asyncio.TimerHandle | None = None
        self._expire_timer: asyncio.TimerHandle | None = None
        cfg = node.config.client
        self._stale_timer: asyncio.TimerHandle | None = node.loop.call_later(
            cfg.stale_close_delay, self.close, DISCONNECT_STALE) if cfg.stale_close_delay > 0 else None

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    @property
    def connected(self) -> bool:
        return self.state is State.CONNECTED

    # -- output ---------------------------------------------------------------------------------

    def hold_pushes(self) -> None:
        """Until :meth:`release_pushes`, queue pushes aside (replies still go out)."""
        self._held = []

    def release_pushes(self) -> None:
        held, self._held = self._held, None
        for data in held or ():
            self.write(data)

    def write(self, data: bytes) -> None:
        """Queue one reply or push; flushed with the others queued this tick.

        Never closes synchronously: this runs inside fan-out loops over subscriber
        dicts, so an overflow only marks the connection and the flush closes it. The
        socket's own write buffer is added in at flush time, once per tick.
        """
        if self.state is State.CLOSED or self._slow:
            return
        if self._held is not None and not data.startswith(b'{"id":'):
            self._held.append(data)
            return
        if not self._out and not self._direct:
            self.node.flusher.mark(self)
        self._out.append(data)
        self._out_bytes += len(data) + 1
        if self._out_bytes > self._queue_max:
            self._slow = True

    def flush(self) -> None:
        if self._slow or (self._out and self._out_bytes + self.transport.write_buffer_size() > self._queue_max):
            self._slow = True
            self.close(DISCONNECT_SLOW)
            return
        if not self._out or self.paused or self.state is State.CLOSED:
            return
        out = self._out
        self._out = []
        self._out_bytes = 0
        self.transport.send_text(out[0] if len(out) == 1 else b"\n".join(out))

    def resume(self) -> None:
        self.paused = False
        if self._out:
            self.node.flusher.mark(self)

    # -- input ----------------------------------------------------------------------------------

    def on_message(self, data: bytes) -> None:
        """One complete text message from the client."""
        if self.state is State.CLOSED:
            return
        try:
            commands = decode_commands(data, self.node.config.shardgate.max_commands_per_frame, time.perf_counter())
        except Disconnect as exc:
            self.close(exc)
            return
        stats = self.node.metrics
        bucket = self._bucket
        now = self.node.clock()
        # Replies to this message go out in one write as soon as it is handled, not a loop
        # tick later through the flusher (request/response latency).
        self._direct = True
        try:
            for cmd in commands:
                stats.received(cmd.method or "pong", len(data))
                if self.closed:
                    return
                if bucket is not None and cmd.method:
                    verdict = bucket.take(now)
                    if verdict is Verdict.ABUSE:
                        self.close(DISCONNECT_TOO_MANY_REQUESTS)
                        return
                    if verdict is Verdict.OVER:
                        if cmd.id:
                            self.fail(cmd, ERROR_TOO_MANY_REQUESTS)
                        continue
                self._dispatch(cmd)
        finally:
            self._direct = False
        if self._out or self._slow:
            self.flush()

    def _dispatch(self, cmd: Command) -> None:
        method = cmd.method
        if method == "":
            if cmd.id:
                self.close(Disconnect(3501, "bad request: no method"))
            else:
                self._on_pong()
            return
        if self._unusable:
            self.close(Disconnect(3501, "bad request: connection unusable"))
            return
        if method == "connect":
            if self.state is not State.CONNECTING:
                self.close(Disconnect(3501, "bad request: client already authenticated"))
                return
        elif self.state is State.CONNECTING:
            self.close(Disconnect(3501, "bad request: connect first"))
            return
        if method != "send" and cmd.id == 0:
            self.close(Disconnect(3501, "bad request: command without id"))
            return
        handler = _HANDLERS.get(method)
        if handler is None:
            self.close(Disconnect(3501, f"bad request: unsupported method {method}"))
            return
        try:
            handler(self, cmd)
        except Exception as exc:
            self.fail(cmd, exc)

    def fail(self, cmd: Command, exc: BaseException) -> None:
        err = classify(exc)
        if isinstance(err, Disconnect):
            self.close(err)
            return
        if err is ERROR_INTERNAL and not isinstance(exc, ClientError):
            log.exception("internal error in %s from client %s", cmd.method, self.client_id, exc_info=exc)
        if cmd.method == "connect":
            self._unusable = True
        stats = self.node.metrics
        stats.reply_error(cmd.method, err.code)
        data = encode_error(cmd.id, err)
        stats.sent("error", len(data))
        stats.command_done(cmd.method, time.perf_counter() - cmd.received_at)
        self.write(data)

    def reply(self, cmd: Command, result: dict[str, Any]) -> None:
        try:
            data = encode_reply(cmd.id, cmd.method, result)
        except ClientError as exc:
            self.fail(cmd, exc)
            return
        stats = self.node.metrics
        stats.sent("reply", len(data))
        stats.command_done(cmd.method, time.perf_counter() - cmd.received_at)
        self.write(data)

    def channel_of(self, cmd: Command) -> str:
        channel = cmd.body.get("channel")
        if not isinstance(channel, str) or not channel:
            raise Disconnect(3501, "bad request: channel required")
        return channel

    def options_for(self, channel: str) -> ChannelOptions:
        cfg = self.node.config
        if len(channel) > cfg.channel.max_length or not channel.isascii() or not channel.isprintable() \
                or " " in channel:
            raise ERROR_BAD_REQUEST
        opts = cfg.channel_options(channel)
        if opts is None:
            raise ERROR_UNKNOWN_CHANNEL
        return opts

    def owner_call(self, cmd: Command, channel: str, body: dict[str, Any],
                    on_result: Callable[[dict[str, Any]], None]) -> None:
        """Send ``cmd`` to the channel's owner; ``on_result`` runs with its answer."""
        self.node.request(channel, cmd.method, body, self._owner_done(cmd, on_result))

    def client_info(self, chan_info: Any = None) -> dict[str, Any]:
        return client_info(self.user, self.client_id, self.conn_info, chan_info)

    # -- connect, refresh, ping -----------------------------------------------------------------

    def _connect(self, cmd: Command) -> None:
        node = self.node
        cfg = node.config.client
        token = cmd.body.get("token")
        now = node.clock()
        if token:
            if not isinstance(token, str):
                raise DISCONNECT_INVALID_TOKEN
            creds = node.verifier.verify_connect(token, now)
        elif cfg.allow_anonymous_connect_without_token:
            creds = ConnectCredentials(user="", expire_at=None, info=None, channels=(), meta=None)
        else:
            raise Disconnect(3501, "bad request: client credentials not found")
        limit = node.connection_limit
        if limit and len(node.hub.clients) >= limit:
            raise DISCONNECT_CONNECTION_LIMIT
        if self._stale_timer is not None:
            self._stale_timer.cancel()
            self._stale_timer = None
        self.client_id = node.new_client_id()
        self.user = creds.user
        self.conn_info = creds.info
        self.state = State.CONNECTED
        node.hub.add_client(self)
        node.metrics.connected()
        result: dict[str, Any] = {"client": self.client_id, "version": __version__}
        self._set_expiry(creds.expire_at, now, result)
        if cfg.ping_interval > 0:
            result["ping"] = max(1, round(cfg.ping_interval))
            result["pong"] = True
            self._schedule_ping(first=True)
        if cfg.connect_include_server_time:
            result["time"] = int(now * 1000)
        if creds.channels:
            server_subs.subscribe_on_connect(self, cmd, creds.channels, result)
        else:
            self.reply(cmd, result)

    def _set_expiry(self, expire_at: int | None, now: float, result: dict[str, Any]) -> None:
        self.expire_at = expire_at
        if self._expire_timer is not None:
            self._expire_timer.cancel()
            self._expire_timer = None
        if expire_at is None:
            return
        result["expires"] = True
        result["ttl"] = max(1, int(expire_at - now))
        delay = expire_at - now + self.node.config.client.expired_close_delay
        self._expire_timer = self.node.loop.call_later(max(0.0, delay), self._check_expired)

    def _check_expired(self) -> None:
        if self.expire_at is not None and self.expire_at <= self.node.clock():
            self.close(DISCONNECT_EXPIRED)

    def _refresh(self, cmd: Command) -> None:
        token = cmd.body.get("token")
        if not isinstance(token, str) or not token:
            raise Disconnect(3501, "bad request: token required")
        now = self.node.clock()
        creds = self.node.verifier.verify_connect(token, now)
        if creds.user != self.user:
            raise DISCONNECT_INVALID_TOKEN
        result: dict[str, Any] = {"client": self.client_id, "version": __version__}
        self._set_expiry(creds.expire_at, now, result)
        if creds.info is not None:
            self.conn_info = creds.info
        self.reply(cmd, result)

    def _schedule_ping(self, first: bool = False) -> None:
        interval = self.node.config.client.ping_interval
        # Spread first pings over [interval/2, interval) like Centrifugo, so a reconnect
        # storm does not ping in lockstep forever after.
        delay = interval / 2 + self.node.rng.random() * interval / 2 if first else interval
        self._ping_timer = self.node.loop.call_later(delay, self._send_ping)

    def _send_ping(self) -> None:
        if self.state is not State.CONNECTED:
            return
        self.write(PING)
        self.node.metrics.sent("ping", len(PING))
        if not self._ping_outstanding:
            self._ping_outstanding = True
            self._pong_timer = self.node.loop.call_later(
                self.node.config.client.pong_timeout, self.close, DISCONNECT_NO_PONG)
        self._schedule_ping()

    def _on_pong(self) -> None:
        if self.state is not State.CONNECTED or not self._ping_outstanding:
            self.close(Disconnect(3501, "bad request: unexpected pong"))
            return
        self._ping_outstanding = False
        if self._pong_timer is not None:
            self._pong_timer.cancel()
            self._pong_timer = None

    # -- subscriptions --------------------------------------------------------------------------

    def _subscribe(self, cmd: Command) -> None:
        node = self.node
        channel = self.channel_of(cmd)
        body = cmd.body
        if body.get("delta"):
            raise Disconnect(3501, "bad request: delta not supported")
        opts = self.options_for(channel)
        if channel in self.subs:
            raise ERROR_ALREADY_SUBSCRIBED
        limit = node.config.client.channel_limit
        if limit and len(self.subs) >= limit:
            raise ERROR_LIMIT_EXCEEDED
        now = node.clock()
        chan_info: Any = None
        expire_at: int | None = None
        token = body.get("token")
        if token:
            if not isinstance(token, str):
                raise ERROR_PERMISSION_DENIED
            creds = node.sub_verifier.verify_subscribe(token, now)
            if creds.channel != channel or creds.user != self.user:
                raise DISCONNECT_INVALID_TOKEN
            if creds.client and creds.client != self.client_id:
                raise DISCONNECT_INVALID_TOKEN
            chan_info, expire_at = creds.info, creds.expire_at
        elif not self._may_subscribe(channel, opts):
            raise ERROR_PERMISSION_DENIED
        params = subscription.plan(channel, opts, body, chan_info=chan_info, expire_at=expire_at)

        def on_subscribed(result: dict[str, Any] | None, error: ClientError | None) -> None:
            if error is not None:
                self.fail(cmd, error)
            else:
                self.reply(cmd, result or {})

        self.start_subscription(params, on_subscribed)

    def start_subscription(self, params: subscription.SubscribeParams,
                            done: Callable[[dict[str, Any] | None, ClientError | None], None]) -> None:
        """Ask the owner, then join the local fan-out at exactly the answered position."""
        node = self.node
        channel = params.channel
        sub = _Sub(SubStatus.SUBSCRIBING, params.positioned, params.chan_info, params.expire_at)
        self.subs[channel] = sub
        undo = {"channel": channel, "client": self.client_id, "user": self.user}

        def on_answer(answer: dict[str, Any] | None, error: ClientError | None) -> None:
            if self.subs.get(channel) is not sub:
                # Unsubscribed, resubscribed or disconnected while the owner was answering:
                # the owner registered this subscriber, so undo that.
                if error is None:
                    node.notify(channel, "unsubscribe", undo)
                return
            if error is not None:
                del self.subs[channel]
                done(None, error)
                return
            answer = answer or {}
            try:
                result = subscription.result(params, answer, node.clock())
            except ClientError as exc:
                del self.subs[channel]
                node.notify(channel, "unsubscribe", undo)
                done(None, exc)
                return
            if params.expire_at is not None:
                delay = params.expire_at - node.clock() + node.config.client.expired_sub_close_delay
                sub.timer = node.loop.call_later(max(0.0, delay), self._check_sub_expired, channel)
            node.metrics.subscribed(params.recover, bool(answer.get("recovered")))
            sub.status = SubStatus.SUBSCRIBED
            node.hub.subscribe(channel, self, params.join_leave, str(answer.get("epoch", "")),
                               int(answer.get("offset", 0)))
            done(result, None)

        node.request(channel, "subscribe", subscription.owner_request(params, self.client_info(params.chan_info)),
                     on_answer)

    def _owner_done(self, cmd: Command, on_result: Callable[[dict[str, Any]], None]
                    ) -> Callable[[dict[str, Any] | None, ClientError | None], None]:
        def done(result: dict[str, Any] | None, error: ClientError | None) -> None:
            if self.state is State.CLOSED:
                return
            if error is not None:
                self.fail(cmd, error)
                return
            try:
                on_result(result or {})
            except Exception as exc:
                self.fail(cmd, exc)
        return done

    def _may_subscribe(self, channel: str, opts: ChannelOptions) -> bool:
        if channel.startswith("$"):
            return False
        if "#" in channel and opts.allow_user_limited_channels:
            # dialog#42,43: only the listed users, whatever else the namespace allows.
            return bool(self.user) and self.user in channel.rsplit("#", 1)[1].split(",")
        return opts.allow_subscribe_for_client and (bool(self.user) or opts.allow_subscribe_for_anonymous)

    def _check_sub_expired(self, channel: str) -> None:
        sub = self.subs.get(channel)
        if sub is not None and sub.expire_at is not None and sub.expire_at <= self.node.clock():
            self.server_unsubscribe(channel, UNSUBSCRIBE_EXPIRED)

    def _sub_refresh(self, cmd: Command) -> None:
        channel = self.channel_of(cmd)
        sub = self.subs.get(channel)
        if sub is None or sub.status is not SubStatus.SUBSCRIBED:
            raise ERROR_PERMISSION_DENIED
        token = cmd.body.get("token")
        if not isinstance(token, str) or not token:
            raise Disconnect(3501, "bad request: token required")
        now = self.node.clock()
        creds = self.node.sub_verifier.verify_subscribe(token, now)
        if creds.channel != channel or creds.user != self.user or (creds.client and creds.client != self.client_id):
            raise DISCONNECT_INVALID_TOKEN
        sub.expire_at = creds.expire_at
        if sub.timer is not None:
            sub.timer.cancel()
            sub.timer = None
        result: dict[str, Any] = {}
        if creds.expire_at is not None:
            result["expires"] = True
            result["ttl"] = max(1, int(creds.expire_at - now))
            delay = creds.expire_at - now + self.node.config.client.expired_sub_close_delay
            sub.timer = self.node.loop.call_later(max(0.0, delay), self._check_sub_expired, channel)
        self.reply(cmd, result)

    def _unsubscribe(self, cmd: Command) -> None:
        channel = self.channel_of(cmd)
        self._drop_sub(channel)
        self.reply(cmd, {})

    def _drop_sub(self, channel: str) -> bool:
        sub = self.subs.pop(channel, None)
        if sub is None:
            return False
        if sub.timer is not None:
            sub.timer.cancel()
        if sub.status is SubStatus.SUBSCRIBED:
            self.node.hub.unsubscribe(channel, self)
            self.node.notify(channel, "unsubscribe", {"channel": channel, "client": self.client_id,
                                                     "user": self.user})
        return True

    def server_unsubscribe(self, channel: str, reason: Unsubscribe) -> None:
        """Drop a subscription and tell the client (a 2xxx unsubscribe push)."""
        if self._drop_sub(channel):
            body = orjson.dumps({"code": reason.code, "reason": reason.reason})
            self.write(encode_push(channel, "unsubscribe", body))

    def server_subscribe(self, channel: str, request: dict[str, Any]) -> None:
        """A subscription made by the server API: the client learns of it from a push."""
        server_subs.subscribe_from_api(self, channel, request)

    def server_refresh(self, request: dict[str, Any]) -> None:
        """The server API changed this connection's expiry or info."""
        if self.state is not State.CONNECTED:
            return
        if request.get("expired"):
            self.close(DISCONNECT_EXPIRED)
            return
        if "info" in request:
            self.conn_info = request["info"]
        expire_at = request.get("expire_at")
        if type(expire_at) is int:
            self._set_expiry(expire_at if expire_at > 0 else None, self.node.clock(), {})

    def on_stream_gap(self, channel: str) -> None:
        sub = self.subs.get(channel)
        if sub is not None and sub.positioned:
            self.server_unsubscribe(channel, UNSUBSCRIBE_INSUFFICIENT_STATE)

    # -- channel commands -----------------------------------------------------------------------

    def is_subscribed(self, channel: str) -> bool:
        sub = self.subs.get(channel)
        return sub is not None and sub.status is SubStatus.SUBSCRIBED

    def push_message(self, data: Any) -> None:
        """An async ``message`` push to this connection."""
        self.write(encode_push("", "message", orjson.dumps({"data": data})))

    # -- lifecycle ------------------------------------------------------------------------------

    def close(self, disconnect: Disconnect) -> None:
        """Flush what is queued, send CLOSE with the code, and release everything."""
        if self.state is State.CLOSED:
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
        if self.state is State.CLOSED:
            return
        was_connected = self.state is State.CONNECTED
        self.state = State.CLOSED
        self._out = []
        self._out_bytes = 0
        for timer in (self._ping_timer, self._pong_timer, self._expire_timer, self._stale_timer):
            if timer is not None:
                timer.cancel()
        for channel in list(self.subs):
            self._drop_sub(channel)
        if was_connected:
            self.node.hub.remove_client(self)
            self.node.metrics.disconnected_client()


_HANDLERS: dict[str, Callable[[Session, Command], None]] = {
    "connect": Session._connect,
    "subscribe": Session._subscribe,
    "unsubscribe": Session._unsubscribe,
    "publish": commands.publish,
    "presence": commands.presence,
    "presence_stats": commands.presence,
    "history": commands.history,
    "rpc": commands.rpc,
    "send": commands.send,
    "refresh": Session._refresh,
    "sub_refresh": Session._sub_refresh,
}
