"""Engine.IO v4 sessions of one worker, over WebSocket or HTTP long-polling, and the
Socket.IO v5 packets they carry (README, Socket.IO).

No sticky sessions: a session id names the worker that holds the session
(``<slot>_<random>``). A polling request that reaches another worker is forwarded over the
bus (:data:`OP_POLL`) and answered from there; a WebSocket upgrade of a polling session that
reaches another worker is relayed message by message (:data:`OP_WS_IN` from the relaying
worker, :data:`OP_WS_OUT` back).

Limits: ``shardgate.socketio.max_payload`` bytes per WebSocket message or polling body
(beyond: the session closes); ``client.queue_max_size`` bytes of packets buffered for a
polling client that does not poll (beyond: closed as slow); one pending GET and one POST per
session at a time (another: HTTP 400 and the session closes); a pong within ``ping_timeout``
of each ping.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qs

import orjson

from gateway.core.errors import DISCONNECT_SLOW, ClientError
from gateway.engine.base import TakenState
from gateway.session.rpc import load_handler
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
    HELD_WAIT,
    MAX_ROOMS,
    NODE_ALIVE_INTERVAL,
    NODE_ALIVE_TTL,
    RECOVERABLE_REASONS,
    PidStore,
    RecoveryRequest,
    SavedSession,
    decode_state,
    encode_state,
    pack_kept,
    parse_recovery,
    unpack_kept,
)
from gateway.socketio.session import CUSTOM_EVENT, SioSession

if TYPE_CHECKING:
    from gateway.node import Node

__all__ = ["start_socketio", "SioServer", "EngineSocket", "Sink", "OP_POLL", "OP_WS_IN", "OP_WS_OUT", "OP_PID_TAKE",
           "slot_of"]

log = logging.getLogger("shardgate.socketio")

#: Bus operations (``Envelope.flags``), beside the engine's and control's.
OP_POLL = 80  # request: a polling request for a session on the receiving worker
OP_WS_IN = 81  # notify: a message (or the close) of a relayed WebSocket, to the session's worker
OP_WS_OUT = 82  # notify: packets (or a close) for a relayed WebSocket, to the relaying worker
OP_PID_TAKE = 83  # request: take the dropped session kept under a pid (answer: its state, or empty)

_COMMANDS = ("subscribe", "unsubscribe", "publish", "history", "presence", "presence_stats", "rpc")
_CHANNEL_COMMANDS = frozenset({"subscribe", "unsubscribe", "publish", "history", "presence", "presence_stats"})
_TEXT = "text/plain; charset=UTF-8"
_UNKNOWN_SID = orjson.dumps({"code": 1, "message": "Session ID unknown"})
_BAD_REQUEST = orjson.dumps({"code": 3, "message": "Bad request"})
_BAD_HANDSHAKE = orjson.dumps({"code": 2, "message": "Bad handshake method"})
_UNKNOWN_TRANSPORT = orjson.dumps({"code": 0, "message": "Transport unknown"})
_MAX_RELAYS = 100_000

#: ``(status, content_type, body)`` of a polling answer.
PollAnswer = tuple[int, str, bytes]


class Sink(Protocol):
    """A WebSocket carrying an Engine.IO session: local, or relayed from another worker."""

    def send_text(self, data: bytes) -> None: ...

    def send_binary(self, data: bytes) -> None: ...

    def close(self) -> None: ...

    def write_buffer_size(self) -> int: ...


def slot_of(sid: str) -> int | None:
    head, _, rest = sid.partition("_")
    return int(head) if head.isdigit() and rest and len(head) < 6 else None


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
        waiter((200, _TEXT, body))

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
                waiter((200, _TEXT, engineio.NOOP))
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
            return 400, "application/json", _UNKNOWN_SID
        if self.ws is not None or self.posting:
            self.close("bad request")
            return 400, "application/json", _BAD_REQUEST
        if len(body) > self.server.cfg.max_payload:
            self.close("payload too large")
            return 413, "application/json", _BAD_REQUEST
        try:
            packets = engineio.decode_payload(body)
        except EngineIOError:
            self.close("bad packet")
            return 400, "application/json", _BAD_REQUEST
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
            answer((400, "application/json", _UNKNOWN_SID))
            return
        if self.ws is not None or self.probe is not None:
            # Upgrading (or upgraded): a poll still in flight returns at once so the client can
            # pause polling; it may reach us after the probe, through another worker.
            answer((200, _TEXT, engineio.NOOP))
            return
        if self.waiter is not None:
            self.close("overlap from client")
            answer((400, "application/json", _BAD_REQUEST))
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
            waiter((200, _TEXT, body))
        self.buffer = []
        for sink in (self.ws, self.probe):
            if sink is not None:
                sink.close()
        self.ws = self.probe = None


class _RelayOut:
    """A WebSocket held by another worker: packets travel there over the bus."""

    def __init__(self, server: SioServer, slot: int, relay_id: int) -> None:
        self.server, self.slot, self.relay_id = server, slot, relay_id

    def _out(self, kind: int, data: bytes) -> None:
        self.server.node.router.notify(self.slot, OP_WS_OUT, str(self.relay_id), bytes([kind]) + data)

    def send_text(self, data: bytes) -> None:
        self._out(0, data)

    def send_binary(self, data: bytes) -> None:
        self._out(1, data)

    def close(self) -> None:
        self._out(2, b"")

    def write_buffer_size(self) -> int:
        return 0


class _WsEndpoint:
    """The message handler of one local WebSocket on the Socket.IO path."""

    def __init__(self, server: SioServer, sid: str | None, headers: Mapping[str, str] | None) -> None:
        self.server = server
        self.sid = sid
        self.headers = headers
        self.conn: Sink | None = None
        self.socket: EngineSocket | None = None
        self.relay: tuple[int, int] | None = None  # (owner slot, relay id)

    def on_open(self, conn: Sink) -> None:
        self.conn = conn
        server = self.server
        if self.sid is None:
            self.socket = server.open(conn, self.headers)
            return
        slot = slot_of(self.sid)
        if slot == server.node.slot:
            sock = server.sockets.get(self.sid)
            if sock is None:
                conn.close()
                return
            self.socket = sock
            return
        if slot is None or slot >= server.node.workers or len(server.relays) >= _MAX_RELAYS:
            conn.close()
            return
        server.relay_seq += 1
        relay_id = server.relay_seq
        server.relays[relay_id] = conn
        self.relay = (slot, relay_id)

    def on_message(self, data: bytes, binary: bool) -> None:
        if self.socket is not None:
            assert self.conn is not None
            self.socket.on_ws_message(self.conn, data, binary)
        elif self.relay is not None:
            slot, relay_id = self.relay
            self.server.node.router.notify(slot, OP_WS_IN, f"{relay_id} {self.sid}", bytes([1 if binary else 0]) + data)

    def on_closed(self) -> None:
        if self.socket is not None:
            assert self.conn is not None
            self.socket.on_ws_closed(self.conn)
        elif self.relay is not None:
            slot, relay_id = self.relay
            self.server.relays.pop(relay_id, None)
            self.server.node.router.notify(slot, OP_WS_IN, f"{relay_id} {self.sid}", b"\x02")


class SioServer:
    """The Socket.IO endpoint of one worker."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.cfg = node.config.shardgate.socketio
        self.path = self.cfg.path.encode()
        # One WebSocket message: Engine.IO's maxPayload, within the WebSocket message limit.
        self.max_body = self.cfg.max_payload
        self.message_limit = min(self.cfg.max_payload, node.config.websocket.message_size_limit)
        self.sockets: dict[str, EngineSocket] = {}
        self.events: dict[str, Any] = {name: load_handler(target) for name, target in self.cfg.event_handlers}
        self.relays: dict[int, Sink] = {}  # relayed WebSockets held here, by relay id
        self.remote: dict[tuple[int, int], _RelayOut] = {}  # (relaying slot, relay id) -> its sink
        self.relay_seq = 0
        self.pids = PidStore(self.cfg.recovery_max_disconnection, self.cfg.recovery_max_sessions, node.loop.time)
        # The Redis engine: recovery state in Redis, so that any node can take it.
        self.states = node.session_states if self.cfg.recovery else None
        # A snapshot outlives the session's last ping by the time a drop takes to be noticed.
        self.snapshot_ttl = self.cfg.recovery_max_disconnection + self.cfg.ping_interval + self.cfg.ping_timeout
        self._alive: Any = None
        if self.states is not None:
            self._mark_alive()

    def new_sid(self) -> str:
        return f"{self.node.slot}_{secrets.token_urlsafe(15)}"

    def open(self, ws: Sink | None, headers: Mapping[str, str] | None) -> EngineSocket:
        sock = EngineSocket(self, self.new_sid(), ws, headers)
        self.sockets[sock.sid] = sock
        upgrades = [] if ws is not None else ["websocket"]
        sock.send_packets([engineio.open_packet(sock.sid, upgrades, self.cfg.ping_interval, self.cfg.ping_timeout,
                                                self.cfg.max_payload)])
        return sock

    # -- connection state recovery ----------------------------------------------------------

    def _mark_alive(self) -> None:
        """Refresh this node's liveness key: its sessions' snapshots are not to be taken."""
        assert self.states is not None
        self.states.mark_node_alive(self.node.node_id, NODE_ALIVE_TTL)
        self._alive = self.node.loop.call_later(NODE_ALIVE_INTERVAL, self._mark_alive)

    def _saved(self, session: SioSession) -> SavedSession:
        """The session's rooms and the positions delivered here."""
        hub = self.node.hub
        rooms = []
        for channel in session.subs:
            if not session.is_subscribed(channel):
                continue
            local = hub.channels.get(channel)
            if local is not None and local.epoch:
                rooms.append((channel, local.offset, local.epoch))
            else:
                offset, epoch = session.joined.get(channel, (0, ""))
                rooms.append((channel, offset, epoch))
        return SavedSession(session.nsp, session.user, tuple(rooms))

    def keep(self, session: SioSession) -> None:
        """Keep a dropped session's rooms and the positions delivered here, under its pid."""
        state = self._saved(session)
        if self.states is None:
            self.pids.put(session.pid, state)
        elif len(state.rooms) <= MAX_ROOMS:
            self.states.keep_session(session.pid, pack_kept(state), self.cfg.recovery_max_disconnection)
        else:
            self.states.forget_session(session.pid)

    def snapshot(self, session: SioSession) -> None:
        """With the Redis engine: write a connected session's state, so that it recovers even
        if this node dies (taken only once this node's liveness key is gone)."""
        if self.states is None or not session.pid or not session.sio_connected or session.closed:
            return
        state = self._saved(session)
        if len(state.rooms) <= MAX_ROOMS:
            self.states.keep_session(session.pid, pack_kept(state, self.node.node_id), self.snapshot_ttl)

    def forget(self, session: SioSession) -> None:
        """A clean disconnect: nothing to recover (with the Redis engine, drop the snapshot)."""
        if self.states is not None and session.pid:
            self.states.forget_session(session.pid)

    def take_state(self, request: RecoveryRequest, done: Callable[[SavedSession | None], None]) -> None:
        """The state kept under a pid: from Redis with the Redis engine, else from this worker
        or (over the bus) the one it names."""
        if self.states is not None:
            self._take_shared(request.pid, self.node.loop.time() + HELD_WAIT, done)
            return
        if request.slot == self.node.slot:
            done(self.pids.take(request.pid))
            return

        def reply(raw: bytes | None, error: ClientError | None) -> None:
            done(decode_state(raw) if raw is not None else None)

        self.node.router.request(request.slot, OP_PID_TAKE, request.pid, b"", reply, timeout=5.0)

    def _take_shared(self, pid: str, deadline: float, done: Callable[[SavedSession | None], None]) -> None:
        """Take from Redis; a snapshot held by a live node is asked for again (its node may
        have just died) until ``deadline``, then the reconnect starts a fresh session."""
        assert self.states is not None

        def taken(result: TakenState | None, error: ClientError | None) -> None:
            if result is not None and result.held and self.node.loop.time() < deadline:
                self.node.loop.call_later(NODE_ALIVE_INTERVAL / 2, self._take_shared, pid, deadline, done)
                return
            done(unpack_kept(result.value) if result is not None else None)

        self.states.take_session(pid, taken)

    def on_pid_request(self, op: int, channel: str, payload: bytes, origin: int,
                       reply: Callable[[bytes | None, ClientError | None], None]) -> None:
        state = self.pids.take(channel)
        reply(encode_state(state) if state is not None else b"", None)

    # -- WebSocket --------------------------------------------------------------------------

    def ws_endpoint(self, target: bytes, headers: Mapping[str, str] | None = None) -> _WsEndpoint | None:
        """The handler for an upgrade to ``target`` (path and query), or None to refuse it."""
        query = parse_qs(target.partition(b"?")[2].decode("latin-1"))
        if query.get("EIO") != ["4"] or query.get("transport") != ["websocket"]:
            return None
        sid = query.get("sid", [None])[0]
        return _WsEndpoint(self, sid, headers)

    # -- polling ----------------------------------------------------------------------------

    def poll(self, method: str, query: Mapping[str, str],
             read: Callable[[], Awaitable[bytes]]) -> Awaitable[PollAnswer]:
        return self._poll(method, query, read)

    async def _poll(self, method: str, query: Mapping[str, str], read: Callable[[], Awaitable[bytes]]) -> PollAnswer:
        if query.get("EIO") != "4" or query.get("transport") != "polling" or not self.cfg.polling:
            return 400, "application/json", _UNKNOWN_TRANSPORT
        sid = query.get("sid")
        if sid is None:
            if method != "GET":
                return 400, "application/json", _BAD_HANDSHAKE
            sock = self.open(None, None)
            body = engineio.encode_payload(sock.buffer)
            sock.buffer, sock.buffer_bytes = [], 0
            return 200, _TEXT, body
        if method not in ("GET", "POST"):
            return 400, "application/json", _BAD_REQUEST
        body = await read() if method == "POST" else b""
        slot = slot_of(sid)
        if slot is None or slot >= self.node.workers:
            return 400, "application/json", _UNKNOWN_SID
        future: Any = self.node.loop.create_future()

        def answer(result: PollAnswer) -> None:
            if not future.done():
                future.set_result(result)

        if slot == self.node.slot:
            self.local_poll(method, sid, body, answer)
        else:
            self._forward(slot, method, sid, body, answer)
        result: PollAnswer = await future
        return result

    def local_poll(self, method: str, sid: str, body: bytes, answer: Callable[[PollAnswer], None]) -> None:
        sock = self.sockets.get(sid)
        if sock is None:
            answer((400, "application/json", _UNKNOWN_SID))
        elif method == "POST":
            answer(sock.on_post(body))
        else:
            sock.on_get(answer)

    def _forward(self, slot: int, method: str, sid: str, body: bytes, answer: Callable[[PollAnswer], None]) -> None:
        def reply(raw: bytes | None, error: ClientError | None) -> None:
            if raw is None:
                answer((503, "application/json", _BAD_REQUEST))
                return
            status = int.from_bytes(raw[:2], "big")
            ctype, _, payload = raw[2:].partition(b"\n")
            answer((status, ctype.decode(), payload))

        timeout = self.cfg.ping_interval + self.cfg.ping_timeout + 5.0
        self.node.router.request(slot, OP_POLL, sid, method.encode() + b"\n" + body, reply, timeout=timeout)

    # -- bus --------------------------------------------------------------------------------

    def on_request(self, op: int, channel: str, payload: bytes, origin: int,
                   reply: Callable[[bytes | None, ClientError | None], None]) -> None:
        method, _, body = payload.partition(b"\n")

        def answer(result: PollAnswer) -> None:
            status, ctype, data = result
            reply(status.to_bytes(2, "big") + ctype.encode() + b"\n" + data, None)

        self.local_poll(method.decode(), channel, body, answer)

    def on_notify(self, op: int, channel: str, payload: bytes, origin: int) -> None:
        if not payload:
            return
        kind, data = payload[0], payload[1:]
        if op == OP_WS_OUT:
            conn = self.relays.get(int(channel)) if channel.isdigit() else None
            if conn is None:
                return
            if kind == 0:
                conn.send_text(data)
            elif kind == 1:
                conn.send_binary(data)
            else:
                self.relays.pop(int(channel), None)
                conn.close()
            return
        relay, _, sid = channel.partition(" ")
        if not relay.isdigit():
            return
        key = (origin, int(relay))
        sink = self.remote.get(key)
        sock = self.sockets.get(sid)
        if kind == 2:
            self.remote.pop(key, None)
            if sink is not None and sock is not None:
                sock.on_ws_closed(sink)
            return
        if sock is None:
            _RelayOut(self, origin, int(relay)).close()
            return
        if sink is None:
            if len(self.remote) >= _MAX_RELAYS:
                return
            sink = self.remote[key] = _RelayOut(self, origin, int(relay))
        sock.on_ws_message(sink, data, kind == 1)

    def close(self) -> None:
        if self._alive is not None:
            self._alive.cancel()
        for sock in list(self.sockets.values()):
            sock.close("server shutting down")


def start_socketio(node: Node) -> SioServer | None:
    """This worker's Socket.IO endpoint (None with ``shardgate.socketio.enabled = false``),
    its bus operations registered with the node."""
    if not node.config.shardgate.socketio.enabled:
        return None
    server = SioServer(node)
    node.extra_requests[OP_POLL] = server.on_request
    node.extra_requests[OP_PID_TAKE] = server.on_pid_request
    node.extra_notifies[OP_WS_IN] = server.on_notify
    node.extra_notifies[OP_WS_OUT] = server.on_notify
    return server
