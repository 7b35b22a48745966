"""One Engine.IO v4 session of a worker and the Socket.IO v5 namespaces it carries: its output
(a WebSocket, or the buffer a long-poll drains), pings, the probe of a WebSocket upgrade, and
Socket.IO packets turned into the session's commands. :mod:`gateway.socketio.server` opens
these, routes polling requests and relayed WebSockets to them, and keeps recovery state.

Limits: ``shardgate.socketio.max_payload`` bytes per WebSocket message or polling body (beyond:
the session closes); ``client.queue_max_size`` bytes of packets buffered for a polling client
that does not poll (beyond: closed as slow); one pending GET and one POST at a time (another:
HTTP 400 and the session closes); a pong within ``ping_timeout`` of each ping.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from gateway.core.errors import DISCONNECT_SLOW, ClientError
from gateway.socketio import engineio
from gateway.socketio.codec import (
    CONNECT_ID,
    NO_ACK_BASE,
    ack_to_id,
    codec_for,
    room_channel,
)
from gateway.socketio.engineio import EngineIOError, PacketType
from gateway.socketio.parser import BinaryAssembler, ParseError, SioPacket, SioType, decode
from gateway.socketio.recovery import (
    RECOVERABLE_REASONS,
    RecoveryRequest,
    SavedSession,
    parse_recovery,
)
from gateway.socketio.session import CUSTOM_EVENT, SioSession

if TYPE_CHECKING:
    from gateway.socketio.server import SioServer

__all__ = ["EngineSocket", "Sink", "PollAnswer"]

log = logging.getLogger("shardgate.socketio")

_COMMANDS = ("subscribe", "unsubscribe", "publish", "history", "presence", "presence_stats", "rpc")
_CHANNEL_COMMANDS = frozenset({"subscribe", "unsubscribe", "publish", "history", "presence", "presence_stats"})

#: ``(status, content_type, body)`` of a polling answer.
PollAnswer = tuple[int, str, bytes]


class Sink(Protocol):
    """A WebSocket carrying an Engine.IO session: local, or relayed from another worker."""

    def send_text(self, data: bytes) -> None: ...

    def send_binary(self, data: bytes) -> None: ...

    def close(self) -> None: ...

    def write_buffer_size(self) -> int: ...


class EngineSocket:
    """One Engine.IO session and its Socket.IO namespaces."""

    def __init__(self, server: SioServer, sid: str, ws: Sink | None, headers: Mapping[str, str] | None) -> None:
        self.server = server
        self.node = server.node
        self.sid = sid
        self.ws = ws
        self.probe: Sink | None = None
        self.headers = headers
        self.buffer: list[bytes | bytearray] = []
        self.buffer_bytes = 0
        self.waiter: Callable[[PollAnswer], None] | None = None
        self.posting = False
        self.nsps: dict[str, SioSession] = {}
        self.assembling: BinaryAssembler | None = None
        self.closed = False
        self._no_ack = NO_ACK_BASE
        cfg = server.cfg
        loop = self.node.loop
        self._pong_timer: Any = None
        self._ping_timer: Any = loop.call_later(cfg.ping_interval, self._ping)

    # -- output -----------------------------------------------------------------------------

    def send_packets(self, packets: list[bytes | bytearray]) -> None:
        """Engine.IO packets: ``bytes`` text packets, ``bytearray`` binary messages."""
        if self.closed or not packets:
            return
        ws = self.ws
        if ws is not None:
            for p in packets:
                if isinstance(p, bytearray):
                    ws.send_binary(bytes(p))
                else:
                    ws.send_text(p)
            return
        self.buffer.extend(packets)
        self.buffer_bytes += sum(len(p) + 1 for p in packets)
        if self.buffer_bytes > self.node.config.client.queue_max_size:
            self.close(DISCONNECT_SLOW.reason)
            return
        self._answer_poll()

    def write_buffer_size(self) -> int:
        if self.ws is not None:
            return self.ws.write_buffer_size()
        return self.buffer_bytes

    def _answer_poll(self) -> None:
        waiter = self.waiter
        if waiter is None or not self.buffer:
            return
        self.waiter = None
        body = engineio.encode_payload(self.buffer)
        self.buffer, self.buffer_bytes = [], 0
        waiter((200, engineio.TEXT_PLAIN, body))

    # -- pings ------------------------------------------------------------------------------

    def _ping(self) -> None:
        if self.closed:
            return
        for session in self.nsps.values():
            self.server.snapshot(session)
        self.send_packets([engineio.PING])
        self._pong_timer = self.node.loop.call_later(self.server.cfg.ping_timeout, self.close, "ping timeout")

    def _pong(self) -> None:
        if self._pong_timer is not None:
            self._pong_timer.cancel()
            self._pong_timer = None
            self._ping_timer = self.node.loop.call_later(self.server.cfg.ping_interval, self._ping)

    # -- input ------------------------------------------------------------------------------

    def on_ws_message(self, sink: Sink, data: bytes, binary: bool) -> None:
        if self.closed:
            return
        try:
            packet = engineio.decode_ws(data, binary)
        except EngineIOError:
            self.close("bad packet")
            return
        if sink is not self.ws:
            self._on_probe_packet(sink, packet)
            return
        self._on_packet(packet)

    def _on_probe_packet(self, sink: Sink, packet: engineio.Packet) -> None:
        """The upgrade (engine.io-protocol: 2probe, 3probe, then 5 on the new transport)."""
        if packet.type is PacketType.PING and packet.data == b"probe":
            self.probe = sink
            sink.send_text(engineio.PROBE_PONG)
            # Let a pending GET return so the client can pause polling.
            if self.waiter is not None:
                self.send_packets([engineio.NOOP])
            return
        if packet.type is PacketType.UPGRADE and self.probe is sink:
            self.probe = None
            self.ws = sink
            if self.waiter is not None:
                waiter, self.waiter = self.waiter, None
                waiter((200, engineio.TEXT_PLAIN, engineio.NOOP))
            buffered, self.buffer, self.buffer_bytes = self.buffer, [], 0
            self.send_packets(buffered)
            return
        self.close("bad upgrade")

    def on_ws_closed(self, sink: Sink) -> None:
        if sink is self.probe:
            self.probe = None
        elif sink is self.ws:
            self.ws = None
            self.close("transport close")

    def on_post(self, body: bytes) -> PollAnswer:
        if self.closed:
            return 400, "application/json", engineio.UNKNOWN_SID
        if self.ws is not None or self.posting:
            self.close("bad request")
            return 400, "application/json", engineio.BAD_REQUEST
        if len(body) > self.server.cfg.max_payload:
            self.close("payload too large")
            return 413, "application/json", engineio.BAD_REQUEST
        try:
            packets = engineio.decode_payload(body)
        except EngineIOError:
            self.close("bad packet")
            return 400, "application/json", engineio.BAD_REQUEST
        self.posting = True
        try:
            for packet in packets:
                if self.closed:
                    break
                self._on_packet(packet)
        finally:
            self.posting = False
        return 200, "text/html", b"ok"

    def on_get(self, answer: Callable[[PollAnswer], None]) -> None:
        if self.closed:
            answer((400, "application/json", engineio.UNKNOWN_SID))
            return
        if self.ws is not None or self.probe is not None:
            # Upgrading (or upgraded): a poll still in flight returns at once so the client can
            # pause polling; it may reach us after the probe, through another worker.
            answer((200, engineio.TEXT_PLAIN, engineio.NOOP))
            return
        if self.waiter is not None:
            self.close("overlap from client")
            answer((400, "application/json", engineio.BAD_REQUEST))
            return
        self.waiter = answer
        self._answer_poll()

    def _on_packet(self, packet: engineio.Packet) -> None:
        kind = packet.type
        if kind is PacketType.MESSAGE:
            self._on_message(packet)
        elif kind is PacketType.PONG:
            self._pong()
        elif kind is PacketType.PING:
            self.send_packets([b"3" + packet.data])
        elif kind is PacketType.CLOSE:
            self.close("client close")
        elif kind is PacketType.NOOP:
            pass
        else:
            self.close("unexpected packet")

    def _on_message(self, packet: engineio.Packet) -> None:
        try:
            if packet.binary:
                if self.assembling is None:
                    raise ParseError("unexpected binary")
                done = self.assembling.add(packet.data)
                if done is None:
                    return
                self.assembling = None
                self._on_sio(done)
                return
            if self.assembling is not None:
                raise ParseError("text inside a binary packet")
            sio = decode(packet.data)
        except ParseError as exc:
            log.info("socket.io session %s: bad packet (%s)", self.sid, exc)
            self.close("parse error")
            return
        if sio.type in (SioType.BINARY_EVENT, SioType.BINARY_ACK):
            self.assembling = BinaryAssembler(sio)
            return
        self._on_sio(sio)

    # -- Socket.IO --------------------------------------------------------------------------

    def _on_sio(self, packet: SioPacket) -> None:
        kind, nsp = packet.type, packet.nsp
        session = self.nsps.get(nsp)
        if kind is SioType.CONNECT:
            if session is not None:
                self.close("connect twice")
                return
            self._connect(nsp, packet.data if isinstance(packet.data, dict) else {})
        elif kind is SioType.DISCONNECT:
            if session is not None:
                del self.nsps[nsp]
                self.server.forget(session)
                session.on_transport_closed()
        elif kind is SioType.EVENT and session is not None and session.sio_connected:
            self._event(session, packet)
        # ACKs of the server's emits: the server asks for none.

    def _connect(self, nsp: str, auth: dict[str, Any]) -> None:
        cfg = self.node.config
        prefix = b"" if nsp == "/" else nsp.encode() + b","
        if nsp != "/" and cfg.channel_options(nsp[1:] + cfg.channel.namespace_boundary + "x") is None:
            self.send_packets([b"44" + prefix + orjson.dumps({"message": "Invalid namespace"})])
            return
        server = self.server
        codec = codec_for(nsp, cfg.channel.namespace_boundary, server.cfg.recovery)
        session = SioSession(self.node, self, nsp, codec, server.events, self.headers)
        self.nsps[nsp] = session
        session.connect_auth = auth
        if server.cfg.recovery:
            session.pid = server.new_sid()
            request = parse_recovery(auth, self.node.workers, any_slot=server.states is not None)
            if request is not None:
                server.take_state(request, lambda state: self._send_connect(session, state, request))
                return
        self._send_connect(session, None, None)

    def _send_connect(self, session: SioSession, state: SavedSession | None, request: RecoveryRequest | None) -> None:
        if self.closed or self.nsps.get(session.nsp) is not session or session.closed:
            return
        token = session.connect_auth.get("token")
        body: dict[str, Any] = {"name": "socket.io"}
        if token:
            body["token"] = token if isinstance(token, str) else ""
        if state is not None and request is not None and state.nsp == session.nsp:
            positions = state.positions(request.offset)
            session.pid = request.pid
            session.restoring = positions
            session.restore_user = state.user
            # Rooms from the token's channels claim recover within connect itself.
            body["subs"] = {channel: {"recoverable": True, "recover": True, "offset": offset, "epoch": epoch}
                            for channel, (offset, epoch) in positions.items()}
        session.on_message(orjson.dumps({"id": CONNECT_ID, "connect": body}))

    def _event(self, session: SioSession, packet: SioPacket) -> None:
        data = packet.data
        name, args = data[0], data[1:]
        if packet.id is not None:
            cmd_id = ack_to_id(packet.id)
        else:
            self._no_ack = self._no_ack + 1 if self._no_ack < 2**32 - 2 else NO_ACK_BASE
            cmd_id = self._no_ack
        if name in _COMMANDS:
            body = args[0] if args else {}
            if not isinstance(body, dict):
                session.fail_id(cmd_id, name, ClientError(107, "bad request"))
                return
            if name in _CHANNEL_COMMANDS:
                room = body.get("channel")
                if not isinstance(room, str) or not room:
                    session.fail_id(cmd_id, name, ClientError(107, "bad request"))
                    return
                try:
                    body = {**body, "channel": room_channel(session.nsp, room,
                                                            self.node.config.channel.namespace_boundary)}
                except ValueError:
                    session.fail_id(cmd_id, name, ClientError(102, "unknown channel"))
                    return
            try:
                raw = orjson.dumps({"id": cmd_id, name: body})
            except orjson.JSONEncodeError:
                session.fail_id(cmd_id, name, ClientError(107, "bad request"))
                return
            session.on_message(raw)
            return
        if not isinstance(name, str):
            return
        session.pending_args[cmd_id] = args
        session.on_message(orjson.dumps({"id": cmd_id, CUSTOM_EVENT: {"event": name}}))

    # -- SioSession callbacks ---------------------------------------------------------------

    def nsp_connected(self, session: SioSession, result: dict[str, Any]) -> None:
        prefix = b"" if session.nsp == "/" else session.nsp.encode() + b","
        body: dict[str, Any] = {"sid": session.client_id}
        if session.pid:
            body["pid"] = session.pid
        session.write_reply(b"40" + prefix + orjson.dumps(body))
        self.server.snapshot(session)

    def rooms_changed(self, session: SioSession) -> None:
        self.server.snapshot(session)

    def recovery_failed(self, session: SioSession) -> None:
        """The dropped session could not be recovered: a fresh one answers the CONNECT
        (another pid, so ``socket.recovered`` is false)."""
        if self.nsps.get(session.nsp) is session:
            del self.nsps[session.nsp]
        session.on_transport_closed()
        if not self.closed:
            auth = {k: v for k, v in session.connect_auth.items() if k not in ("pid", "offset")}
            self._connect(session.nsp, auth)

    def nsp_closed(self, session: SioSession, code: int, reason: str) -> None:
        if self.nsps.get(session.nsp) is session:
            del self.nsps[session.nsp]
        if self.closed or code == 0:
            return
        self.server.forget(session)
        prefix = b"" if session.nsp == "/" else session.nsp.encode() + b","
        if session.sio_connected and code < 3500:
            # Slow, shutdown, reconnect-type codes: the transport closes and the client reconnects
            # (a DISCONNECT packet would keep it away for good).
            self.close(reason)
            return
        if session.sio_connected:
            self.send_packets([b"41" + prefix])
        else:
            self.send_packets([b"44" + prefix + orjson.dumps({"message": reason, "data": {"code": code}})])

    # -- lifecycle --------------------------------------------------------------------------

    def close(self, reason: str) -> None:
        if self.closed:
            return
        if reason != "transport close" and reason != "client close":
            self.send_packets([b"1"])
        self.closed = True
        self.server.sockets.pop(self.sid, None)
        for timer in (self._ping_timer, self._pong_timer):
            if timer is not None:
                timer.cancel()
        sessions, self.nsps = list(self.nsps.values()), {}
        keep = self.server.cfg.recovery and reason in RECOVERABLE_REASONS
        for session in sessions:
            if keep and session.sio_connected and session.pid:
                self.server.keep(session)
            elif session.sio_connected:
                self.server.forget(session)
            session.on_transport_closed()
        waiter, self.waiter = self.waiter, None
        if waiter is not None:
            body = engineio.encode_payload(self.buffer) if self.buffer else b"1"
            waiter((200, engineio.TEXT_PLAIN, body))
        self.buffer = []
        for sink in (self.ws, self.probe):
            if sink is not None:
                sink.close()
        self.ws = self.probe = None
