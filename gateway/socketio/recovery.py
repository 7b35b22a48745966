"""Socket.IO connection state recovery (Socket.IO 4.6+ ``connectionStateRecovery``). Pure.

Wire (socket.io ``lib/socket.ts``, socket.io-client ``lib/socket.ts``): the CONNECT reply
carries ``{sid, pid}``; every publication event ends with a string offset argument (ours:
``"<offset> <channel>"``); a client that lost its transport reconnects with
``{pid, offset}`` in its CONNECT auth, the last such argument it received, and counts the
session as recovered when the reply carries the same ``pid``.

When a transport drops (not a clean disconnect), the namespace session's rooms and their
stream positions (the last offset and epoch delivered on its worker) are kept under the
pid for ``recovery_max_disconnection`` seconds. The pid names the worker slot that keeps
them (``<slot>_<random>``), so a reconnect on any worker takes them over the bus. The
room of the client's offset resumes from that offset; the other rooms from what the worker
had written when it noticed the drop. Recovery replays each room from the channel's
history (Centrifugo's recovery): it succeeds only when every room recovers.

With the Redis engine (several nodes) the state lives in Redis instead, under the pid, so a
reconnect on any worker of any node takes it (once, atomically: ``sio_take.lua``). It is
written when the transport drops (as above), and also, as a snapshot, while the session is
connected (on CONNECT and at every Engine.IO ping), so that a session whose node dies
recovers too. A snapshot names its node and is taken only once that node's liveness key
(refreshed every :data:`NODE_ALIVE_INTERVAL`, expiring after :data:`NODE_ALIVE_TTL`) is
gone; its positions may be behind what the client got, so the client's offset wins for
its room either way (other rooms may replay publications the client already had).
Packed form (:func:`pack_kept`): ``<node id>\n<state JSON>``, the node id empty for a
state written at the drop.

Limits: :data:`MAX_PID_LENGTH`, :data:`MAX_ROOMS` per kept session, ``max_sessions`` kept
per worker (the oldest goes first), :data:`MAX_STATE_BYTES` for a state from the bus.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.socketio.codec import decode_offset

__all__ = ["SavedSession", "PidStore", "RecoveryRequest", "parse_recovery", "encode_state", "decode_state",
           "MAX_PID_LENGTH", "MAX_ROOMS", "MAX_STATE_BYTES", "DEFAULT_MAX_SESSIONS", "RECOVERABLE_REASONS",
           "pack_kept", "unpack_kept", "NODE_ALIVE_INTERVAL", "NODE_ALIVE_TTL", "MAX_NODE_ID_LENGTH",
           "HELD_WAIT"]

#: Longest pid a client may send back (ours are ``<slot>_`` + 20 characters).
MAX_PID_LENGTH = 64
#: Rooms kept per dropped session; a session in more rooms is not kept (it starts fresh).
MAX_ROOMS = 1024
#: Largest kept state accepted from another worker.
MAX_STATE_BYTES = 256 * 1024
#: Dropped sessions kept per worker by default (``shardgate.socketio.recovery_max_sessions``).
DEFAULT_MAX_SESSIONS = 100_000
#: Seconds between refreshes of a node's liveness key (Redis engine).
NODE_ALIVE_INTERVAL = 0.5
#: Seconds a node's liveness key outlives its last refresh: a dead node's snapshots become
#: recoverable this long after it died.
NODE_ALIVE_TTL = 1.5
#: Seconds a reconnect waits, at most, for a snapshot held by a live node: a node that died
#: a moment ago still looks alive until its liveness key expires.
HELD_WAIT = NODE_ALIVE_TTL + NODE_ALIVE_INTERVAL
#: Longest node id in a packed state.
MAX_NODE_ID_LENGTH = 256
#: Engine.IO close reasons after which the session is kept (socket.io's
#: RECOVERABLE_DISCONNECT_REASONS less those that end the worker's memory).
RECOVERABLE_REASONS = frozenset({"transport close", "transport error", "ping timeout"})


@dataclass(frozen=True, slots=True)
class SavedSession:
    """A dropped namespace session: whose it was and where each room's stream stood."""

    nsp: str
    user: str
    rooms: tuple[tuple[str, int, str], ...]  # (channel, offset, epoch); epoch "" = no stream position
    live: bool = False  # a snapshot written while connected: its positions may lag the client's

    def positions(self, client_offset: Any) -> dict[str, tuple[int, str]]:
        """Each room's position to recover from. The client's offset argument (the last
        publication it received) wins for its room when it is behind what was written, or
        always for a snapshot (written before the client got its last publications)."""
        out = {channel: (offset, epoch) for channel, offset, epoch in self.rooms}
        parsed = decode_offset(client_offset)
        if parsed is not None:
            channel, offset = parsed
            known = out.get(channel)
            if known is not None and (offset < known[0] or self.live):
                out[channel] = (offset, known[1])
        return out


@dataclass(frozen=True, slots=True)
class RecoveryRequest:
    pid: str
    offset: Any  # the client's last offset argument (a string, or absent)
    slot: int


def parse_recovery(auth: dict[str, Any], workers: int, any_slot: bool = False) -> RecoveryRequest | None:
    """The ``{pid, offset}`` of a reconnecting client's CONNECT auth, or None (a fresh
    session) when absent or malformed. ``any_slot``: the pid may come from another node,
    whose worker count may differ (the state is in Redis, not on a worker)."""
    pid = auth.get("pid")
    if not isinstance(pid, str) or not pid or len(pid) > MAX_PID_LENGTH:
        return None
    head, _, rest = pid.partition("_")
    if not head.isdigit() or len(head) > 5 or not rest:
        return None
    slot = int(head)
    if slot >= workers and not any_slot:
        return None
    return RecoveryRequest(pid, auth.get("offset"), slot)


def encode_state(state: SavedSession) -> bytes:
    return orjson.dumps({"nsp": state.nsp, "user": state.user, "rooms": state.rooms})


def pack_kept(state: SavedSession, node_id: str = "") -> bytes:
    """The value kept in Redis: ``node_id`` set for a snapshot of a connected session."""
    if "\n" in node_id or len(node_id) > MAX_NODE_ID_LENGTH:
        raise ValueError(f"node id {node_id!r}: no newline, at most {MAX_NODE_ID_LENGTH} characters")
    return node_id.encode() + b"\n" + encode_state(state)


def unpack_kept(raw: bytes | None) -> SavedSession | None:
    """A state from Redis; None when absent, too large or malformed."""
    if not raw:
        return None
    node, sep, body = raw.partition(b"\n")
    if not sep or len(node) > MAX_NODE_ID_LENGTH:
        return None
    state = decode_state(body)
    if state is None or not node:
        return state
    return SavedSession(state.nsp, state.user, state.rooms, live=True)


def decode_state(raw: bytes) -> SavedSession | None:
    """A state from the bus; None when empty, too large or malformed."""
    if not raw or len(raw) > MAX_STATE_BYTES:
        return None
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    nsp, user, rooms = obj.get("nsp"), obj.get("user"), obj.get("rooms")
    if not isinstance(nsp, str) or not isinstance(user, str) or not isinstance(rooms, list) or len(rooms) > MAX_ROOMS:
        return None
    out = []
    for room in rooms:
        if (not isinstance(room, list) or len(room) != 3 or not isinstance(room[0], str)
                or type(room[1]) is not int or room[1] < 0 or not isinstance(room[2], str)):
            return None
        out.append((room[0], room[1], room[2]))
    return SavedSession(nsp, user, tuple(out))


class PidStore:
    """Dropped sessions of one worker, by pid, each kept ``ttl`` seconds (``clock`` injected).

    Every entry lives the same ``ttl``, so insertion order is expiry order: expired entries
    are purged from the front on each put and take.
    """

    def __init__(self, ttl: float, max_sessions: int, clock: Callable[[], float]) -> None:
        self.ttl = ttl
        self.max_sessions = max_sessions
        self.clock = clock
        self._entries: OrderedDict[str, tuple[float, SavedSession]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def _purge(self, now: float) -> None:
        entries = self._entries
        while entries:
            pid, (expires, _) = next(iter(entries.items()))
            if expires > now:
                return
            del entries[pid]

    def put(self, pid: str, state: SavedSession) -> bool:
        """Keep ``state``; False (not kept) when it has too many rooms."""
        if len(state.rooms) > MAX_ROOMS or self.max_sessions <= 0:
            return False
        now = self.clock()
        self._purge(now)
        self._entries.pop(pid, None)
        while len(self._entries) >= self.max_sessions:
            self._entries.popitem(last=False)
        self._entries[pid] = (now + self.ttl, state)
        return True

    def take(self, pid: str) -> SavedSession | None:
        """The state kept under ``pid``, removed (a pid recovers once), or None."""
        self._purge(self.clock())
        entry = self._entries.pop(pid, None)
        return None if entry is None else entry[1]
