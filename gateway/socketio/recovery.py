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
           "MAX_PID_LENGTH", "MAX_ROOMS", "MAX_STATE_BYTES", "DEFAULT_MAX_SESSIONS", "RECOVERABLE_REASONS"]

#: Longest pid a client may send back (ours are ``<slot>_`` + 20 characters).
MAX_PID_LENGTH = 64
#: Rooms kept per dropped session; a session in more rooms is not kept (it starts fresh).
MAX_ROOMS = 1024
#: Largest kept state accepted from another worker.
MAX_STATE_BYTES = 256 * 1024
#: Dropped sessions kept per worker by default (``shardgate.socketio.recovery_max_sessions``).
DEFAULT_MAX_SESSIONS = 100_000
#: Engine.IO close reasons after which the session is kept (socket.io's
#: RECOVERABLE_DISCONNECT_REASONS less those that end the worker's memory).
RECOVERABLE_REASONS = frozenset({"transport close", "transport error", "ping timeout"})


@dataclass(frozen=True, slots=True)
class SavedSession:
    """A dropped namespace session: whose it was and where each room's stream stood."""

    nsp: str
    user: str
    rooms: tuple[tuple[str, int, str], ...]  # (channel, offset, epoch); epoch "" = no stream position

    def positions(self, client_offset: Any) -> dict[str, tuple[int, str]]:
        """Each room's position to recover from. The client's offset argument (the last
        publication it received) wins for its room when it is behind what was written."""
        out = {channel: (offset, epoch) for channel, offset, epoch in self.rooms}
        parsed = decode_offset(client_offset)
        if parsed is not None:
            channel, offset = parsed
            known = out.get(channel)
            if known is not None and offset < known[0]:
                out[channel] = (offset, known[1])
        return out


@dataclass(frozen=True, slots=True)
class RecoveryRequest:
    pid: str
    offset: Any  # the client's last offset argument (a string, or absent)
    slot: int


def parse_recovery(auth: dict[str, Any], workers: int) -> RecoveryRequest | None:
    """The ``{pid, offset}`` of a reconnecting client's CONNECT auth, or None (a fresh
    session) when absent or malformed."""
    pid = auth.get("pid")
    if not isinstance(pid, str) or not pid or len(pid) > MAX_PID_LENGTH:
        return None
    head, _, rest = pid.partition("_")
    if not head.isdigit() or len(head) > 5 or not rest:
        return None
    slot = int(head)
    if slot >= workers:
        return None
    return RecoveryRequest(pid, auth.get("offset"), slot)


def encode_state(state: SavedSession) -> bytes:
    return orjson.dumps({"nsp": state.nsp, "user": state.user, "rooms": state.rooms})


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
