"""``shardgate.socketio``: the Socket.IO endpoint on the client port (README, Socket.IO). Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.config.keys import KeyNode
from gateway.config.table import Table

__all__ = ["SocketIOConfig", "SOCKETIO_KEYS", "read_socketio"]

_IMPORT_PATH = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


@dataclass(frozen=True, slots=True)
class SocketIOConfig:
    enabled: bool = True
    path: str = "/socket.io/"
    ping_interval: float = 25.0  # Engine.IO pingInterval (seconds)
    ping_timeout: float = 20.0  # Engine.IO pingTimeout (seconds)
    max_payload: int = 1_000_000  # Engine.IO maxPayload: bytes of one polling body or one WebSocket message
    recovery: bool = False  # connection state recovery (pid and offsets, from the channels' streams)
    recovery_max_disconnection: float = 120.0  # seconds a dropped session's state is kept for recovery
    recovery_max_sessions: int = 100_000  # dropped sessions kept per worker (the oldest goes first)
    polling: bool = True  # HTTP long-polling (else WebSocket only)
    # Custom events: (event name, "package.module:function"), called as handler(ctx, *args).
    event_handlers: tuple[tuple[str, str], ...] = ()


SOCKETIO_KEYS: dict[str, KeyNode] = {
    "enabled": "bool", "path": "str", "ping_interval": "duration", "ping_timeout": "duration",
    "max_payload": "int", "recovery": "bool", "recovery_max_disconnection": "duration",
    "recovery_max_sessions": "int", "polling": "bool",
    "event_handlers": "map",
}


def read_socketio(t: Table) -> SocketIOConfig:
    d = SocketIOConfig()
    path = t.get_str("path", d.path)
    if not path.startswith("/") or not path.endswith("/"):
        t.error("path", "must start and end with /")
        path = d.path
    handlers = []
    ht = t.table("event_handlers")
    for name in ht.names():
        target = ht.get_str(name, "")
        if not _IMPORT_PATH.fullmatch(target):
            ht.error(name, 'expected "package.module:function"')
            continue
        handlers.append((name, target))
    return SocketIOConfig(
        enabled=t.get_bool("enabled", d.enabled),
        path=path,
        ping_interval=t.duration("ping_interval", d.ping_interval, positive=True),
        ping_timeout=t.duration("ping_timeout", d.ping_timeout, positive=True),
        max_payload=t.get_int("max_payload", d.max_payload, minimum=1024),
        recovery=t.get_bool("recovery", d.recovery),
        recovery_max_disconnection=t.duration("recovery_max_disconnection", d.recovery_max_disconnection,
                                              positive=True),
        recovery_max_sessions=t.get_int("recovery_max_sessions", d.recovery_max_sessions, minimum=0),
        polling=t.get_bool("polling", d.polling),
        event_handlers=tuple(handlers),
    )
