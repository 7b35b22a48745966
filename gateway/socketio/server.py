"""Engine.IO v4 sessions of one worker, over WebSocket or HTTP long-polling, and the
Socket.IO v5 packets they carry (README, Socket.IO).

No sticky sessions: a session id names the worker that holds the session
(``<slot>_<random>``). A polling request that reaches another worker is forwarded over the
bus (:data:`OP_POLL`) and answered from there; a WebSocket upgrade of a polling session that
reaches another worker is relayed message by message (:data:`OP_WS_IN` from the relaying
worker, :data:`OP_WS_OUT` back).

Each session is a :class:`gateway.socketio.engine_socket.EngineSocket` (its limits are listed
there); this module opens them and routes requests and relayed messages to them. At most
:data:`_MAX_RELAYS` relayed WebSockets per worker.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from gateway.core.errors import ClientError
from gateway.engine.base import TakenState
from gateway.session.rpc import load_handler
from gateway.socketio import engineio
from gateway.socketio.engine_socket import EngineSocket, PollAnswer, Sink
from gateway.socketio.recovery import (
    HELD_WAIT,
    MAX_ROOMS,
    NODE_ALIVE_INTERVAL,
    NODE_ALIVE_TTL,
    PidStore,
    RecoveryRequest,
    SavedSession,
    decode_state,
    encode_state,
    pack_kept,
    unpack_kept,
)
from gateway.socketio.session import SioSession

if TYPE_CHECKING:
    from gateway.node import Node

__all__ = ["start_socketio", "SioServer", "EngineSocket", "Sink", "OP_POLL", "OP_WS_IN", "OP_WS_OUT", "OP_PID_TAKE",
           "slot_of"]

#: Bus operations (``Envelope.flags``), beside the engine's and control's.
OP_POLL = 80  # request: a polling request for a session on the receiving worker
OP_WS_IN = 81  # notify: a message (or the close) of a relayed WebSocket, to the session's worker
OP_WS_OUT = 82  # notify: packets (or a close) for a relayed WebSocket, to the relaying worker
OP_PID_TAKE = 83  # request: take the dropped session kept under a pid (answer: its state, or empty)

_MAX_RELAYS = 100_000


def slot_of(sid: str) -> int | None:
    head, _, rest = sid.partition("_")
    return int(head) if head.isdigit() and rest and len(head) < 6 else None


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
            return 400, "application/json", engineio.UNKNOWN_TRANSPORT
        sid = query.get("sid")
        if sid is None:
            if method != "GET":
                return 400, "application/json", engineio.BAD_HANDSHAKE
            sock = self.open(None, None)
            body = engineio.encode_payload(sock.buffer)
            sock.buffer, sock.buffer_bytes = [], 0
            return 200, engineio.TEXT_PLAIN, body
        if method not in ("GET", "POST"):
            return 400, "application/json", engineio.BAD_REQUEST
        body = await read() if method == "POST" else b""
        slot = slot_of(sid)
        if slot is None or slot >= self.node.workers:
            return 400, "application/json", engineio.UNKNOWN_SID
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
            answer((400, "application/json", engineio.UNKNOWN_SID))
        elif method == "POST":
            answer(sock.on_post(body))
        else:
            sock.on_get(answer)

    def _forward(self, slot: int, method: str, sid: str, body: bytes, answer: Callable[[PollAnswer], None]) -> None:
        def reply(raw: bytes | None, error: ClientError | None) -> None:
            if raw is None:
                answer((503, "application/json", engineio.BAD_REQUEST))
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
