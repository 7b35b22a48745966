"""A Socket.IO namespace connection as a Centrifugo :class:`Session`.

Each namespace a client connects to over one Engine.IO session is its own ``Session``
(its own client id, credentials, subscriptions and output queue), so permissions, channel
rules, limits and recovery stay in :mod:`gateway.session`. Socket.IO events become
Centrifugo commands (an event's ack id is the command id plus 2; an event without ack gets
an id from :data:`~gateway.socketio.codec.NO_ACK_BASE` on, whose reply is dropped), and
the codec turns replies and pushes into Socket.IO packets.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from gateway.core import subscription
from gateway.core.errors import DISCONNECT_SLOW, ERROR_BAD_REQUEST, ERROR_METHOD_NOT_FOUND, ClientError
from gateway.core.model import Publication, PublishOptions
from gateway.protocol.codec import Command
from gateway.session.handlers import HANDLERS
from gateway.session.session import Handlers, Session
from gateway.socketio.codec import CONNECT_ID, EVENT_TAG, SioCodec, room_channel
from gateway.socketio.parser import SioType, encode

if TYPE_CHECKING:
    from gateway.node import Node

__all__ = ["SioSession", "EngineLink", "EventContext", "SIO_HANDLERS", "CUSTOM_EVENT"]

log = logging.getLogger("shardgate.socketio")

#: The command a custom event runs as (its arguments wait in the session, they may be binary).
CUSTOM_EVENT = "sio_event"


class EngineLink(Protocol):
    """What a namespace session needs from its Engine.IO session."""

    def send_packets(self, packets: list[bytes | bytearray]) -> None: ...

    def write_buffer_size(self) -> int: ...

    def nsp_connected(self, session: SioSession, result: dict[str, Any]) -> None: ...

    def recovery_failed(self, session: SioSession) -> None: ...

    def rooms_changed(self, session: SioSession) -> None: ...

    def nsp_closed(self, session: SioSession, code: int, reason: str) -> None: ...


class _NspTransport:
    def __init__(self, link: EngineLink) -> None:
        self.link = link
        self.session: SioSession | None = None

    def send_text(self, data: bytes) -> None:
        self.link.send_packets([p for p in data.split(b"\x1e") if p])

    def close(self, code: int, reason: str) -> None:
        if self.session is not None:
            self.link.nsp_closed(self.session, code, reason)

    def write_buffer_size(self) -> int:
        return self.link.write_buffer_size()


class EventContext:
    """What a custom event handler gets: who sent it, and ways to act on rooms."""

    def __init__(self, session: SioSession) -> None:
        self._session = session
        self.client = session.client_id
        self.user = session.user
        self.nsp = session.nsp
        self.conn_info = session.conn_info

    def _channel(self, room: str) -> str:
        try:
            return room_channel(self._session.nsp, room, self._session.node.config.channel.namespace_boundary)
        except ValueError:
            raise ClientError(102, "unknown channel") from None

    def join(self, room: str) -> None:
        """Subscribe this socket to ``room`` (as the server API's subscribe: no permission check)."""
        self._session.server_subscribe(self._channel(room), {})

    def leave(self, room: str) -> None:
        self._session.drop_sub(self._channel(room))

    def emit(self, room: str, event: str, *args: Any) -> None:
        """``event`` with ``args`` (JSON values) to every socket in ``room``, on every worker,
        through the channel's stream (Centrifugo subscribers get it as a publication tagged
        ``socketio_event``)."""
        session = self._session
        channel = self._channel(room)
        opts = session.options_for(channel)
        pub = Publication(orjson.dumps(list(args)), session.client_info(), tags={EVENT_TAG: event})

        def done(result: Any, error: ClientError | None) -> None:
            if error is not None:
                log.warning("socket.io emit to %r failed: %s", channel, error.message)

        session.node.engine.publish(channel, pub, PublishOptions(session.stream_options(opts)), done)

    def emit_self(self, event: str, *args: Any) -> None:
        """``event`` to this socket only (``bytes`` arguments travel as binary attachments)."""
        session = self._session
        session.flush()
        session.link.send_packets(_binary(encode(SioType.EVENT, session.nsp, [event, *args])))


def _binary(parts: list[bytes]) -> list[bytes | bytearray]:
    """An encoded Socket.IO packet as Engine.IO messages (text first, attachments binary)."""
    return [b"4" + parts[0], *(bytearray(p) for p in parts[1:])]


def custom_event(session: Session, cmd: Command) -> None:
    assert isinstance(session, SioSession)
    event = cmd.body.get("event")
    args = session.pending_args.pop(cmd.id, [])
    handler = session.events.get(event) if isinstance(event, str) else None
    if handler is None:
        raise ERROR_METHOD_NOT_FOUND
    result = handler(EventContext(session), *args)
    if hasattr(result, "__await__"):
        task = asyncio.ensure_future(result)
        task.add_done_callback(lambda t: _event_done(session, cmd, t))
        return
    session.ack(cmd, result)


def _event_done(session: SioSession, cmd: Command, task: asyncio.Future[Any]) -> None:
    if session.closed:
        return
    exc = task.exception() if not task.cancelled() else ClientError(100, "internal server error")
    if exc is not None:
        session.fail(cmd, exc)
        return
    session.ack(cmd, task.result())


SIO_HANDLERS = Handlers(commands={**HANDLERS.commands, CUSTOM_EVENT: custom_event},
                        server_subscribe=HANDLERS.server_subscribe, proxy_refresh=HANDLERS.proxy_refresh,
                        proxy_sub_refresh=HANDLERS.proxy_sub_refresh)


class SioSession(Session):
    """One Socket.IO namespace of one Engine.IO session."""

    def __init__(self, node: Node, link: EngineLink, nsp: str, codec: SioCodec, events: Mapping[str, Any],
                 headers: Mapping[str, str] | None = None) -> None:
        transport = _NspTransport(link)
        super().__init__(node, transport, SIO_HANDLERS, codec, headers=headers)
        transport.session = self
        self.link = link
        self.nsp = nsp
        self.sio_codec = codec
        self.events = events
        self.sio_connected = False
        self.pending_args: dict[int, list[Any]] = {}
        # Connection state recovery (gateway.socketio.recovery): this session's pid, and while
        # a reconnect recovers, the rooms' positions and whose session they were.
        self.pid = ""
        self.restoring: dict[str, tuple[int, str]] | None = None
        self.restore_user = ""
        # The stream position each room's subscribe answered: where a snapshot of this session
        # (Redis engine) puts a room this worker has delivered nothing of yet.
        self.joined: dict[str, tuple[int, str]] = {}
        self.connect_auth: dict[str, Any] = {}
        self._recovering = False

    def start_pings(self) -> None:
        """Engine.IO pings the whole connection; a namespace sends none of its own."""

    def reply(self, cmd: Command, result: dict[str, Any]) -> None:
        if cmd.id == CONNECT_ID and cmd.method == "connect":
            self._answered(cmd)
            if self.closed:
                return
            if self.restoring is not None:
                self._restore(result)
                return
            self.sio_connected = True
            self.link.nsp_connected(self, result)
            return
        super().reply(cmd, result)
        if cmd.method in ("subscribe", "unsubscribe") and self.sio_connected:
            channel = cmd.body.get("channel")
            if isinstance(channel, str):
                self._joined(channel, result if cmd.method == "subscribe" else None)
            self.link.rooms_changed(self)

    def _joined(self, channel: str, result: dict[str, Any] | None) -> None:
        epoch = result.get("epoch") if result is not None else None
        offset = result.get("offset", 0) if result is not None else 0
        if isinstance(epoch, str) and epoch and type(offset) is int:
            self.joined[channel] = (offset, epoch)
        else:
            self.joined.pop(channel, None)

    # -- connection state recovery ----------------------------------------------------------

    def release_pushes(self) -> None:
        if not self._recovering:  # held until every room has recovered and CONNECT went out
            super().release_pushes()

    def _restore(self, result: dict[str, Any]) -> None:
        """Rejoin the dropped session's rooms from their positions (Centrifugo recovery);
        the CONNECT reply and the replayed publications go out only if every room recovered,
        else the link starts a fresh session instead."""
        positions, self.restoring = self.restoring or {}, None
        if self.restore_user != self.user:
            self.link.recovery_failed(self)
            return
        codec = self.sio_codec
        early: list[bytes] = []
        # Channels of the token's claim were subscribed with recovery by connect itself.
        for channel, sub_result in (result.get("subs") or {}).items():
            if channel not in positions:
                continue
            if not sub_result.get("recovered"):
                self.link.recovery_failed(self)
                return
            early.extend(codec.publication_push(channel, pub) for pub in sub_result.get("publications") or ())
        if self._held is None:
            self.hold_pushes()
        assert self._held is not None
        self._held[:0] = early  # before what arrived after the recovered positions
        self._recovering = True
        pending = [channel for channel in positions if channel not in self.subs]
        waiting = len(pending)
        failed = False

        def finish() -> None:
            self._recovering = False
            self.sio_connected = True
            self.link.nsp_connected(self, result)
            self.release_pushes()

        def done(channel: str, sub_result: dict[str, Any] | None, error: ClientError | None) -> None:
            nonlocal waiting, failed
            if failed or self.closed:
                return
            if error is not None or sub_result is None or not sub_result.get("recovered"):
                failed = True
                self.link.recovery_failed(self)
                return
            for pub in sub_result.get("publications") or ():
                self.write_push(codec.publication_push(channel, pub))
            self._joined(channel, sub_result)
            waiting -= 1
            if waiting == 0:
                finish()

        if not pending:
            finish()
            return
        for channel in pending:
            offset, epoch = positions[channel]
            try:
                opts = self.node.resolve_channel(channel)
                params = subscription.plan(channel, opts, {"recoverable": True, "recover": True,
                                                           "offset": offset, "epoch": epoch})
            except ClientError:
                failed = True
                self.link.recovery_failed(self)
                return
            if not epoch or not params.recover:
                failed = True
                self.link.recovery_failed(self)
                return
            self.start_subscription(params, opts, functools.partial(done, channel))

    def fail(self, cmd: Command, exc: BaseException) -> None:
        self.pending_args.pop(cmd.id, None)
        super().fail(cmd, exc)
        if cmd.method == "connect" and not self.closed:
            # A refused CONNECT (CONNECT_ERROR written): the client may try again.
            self.flush()
            self.link.nsp_closed(self, 0, "")
            self.on_transport_closed()

    def fail_id(self, cmd_id: int, method: str, error: ClientError) -> None:
        """An event refused before it became a command: its ack carries the error."""
        self.fail(Command(cmd_id, method, {}), error)

    def ack(self, cmd: Command, result: Any) -> None:
        """A custom event's return value as its ack (``bytes`` anywhere become attachments)."""
        self._answered(cmd)
        if self.closed or cmd.id < 2 or cmd.id >= 2**31 + 2:
            return
        args = [] if result is None else [result]
        try:
            parts = encode(SioType.ACK, self.nsp, args, cmd.id - 2)
        except TypeError:
            self.fail(cmd, ERROR_BAD_REQUEST)
            return
        self.flush()
        self.link.send_packets(_binary(parts))

    def write_reply(self, data: bytes) -> None:
        if data:
            super().write_reply(data)

    def write_push(self, data: bytes) -> None:
        if data:
            super().write_push(data)

    def slow(self) -> None:
        self.close(DISCONNECT_SLOW)
