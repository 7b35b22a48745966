"""Socket.IO custom events that make shardgate speak the node socket.io peer's bench dialect
(tools/bench/peers/socketio_peer.mjs): ``p`` DATA -> event ``m`` DATA to room ``fan`` (through the
channel's stream, on every worker) and ``a`` to the sender; ``e`` DATA -> ``e`` DATA back.
Subscribers join ``fan`` with the built-in ``subscribe`` event (its ack comes once the
subscription is live, so the run loses nothing at its start)."""

from __future__ import annotations

from typing import Any

__all__ = ["publish", "echo", "ROOM", "SUBSCRIBE"]

ROOM = "fan"
#: What a bench subscriber sends to join ROOM on shardgate (ack id 1).
SUBSCRIBE = '421["subscribe",{"channel":"fan"}]'


def publish(ctx: Any, data: Any = None) -> None:
    ctx.emit(ROOM, "m", data)
    ctx.emit_self("a")


def echo(ctx: Any, data: Any = None) -> None:
    ctx.emit_self("e", data)
