"""Socket.IO custom event handlers loaded through ``[shardgate.socketio.event_handlers]`` in tests."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.socketio.session import EventContext


def join(ctx: EventContext, room: str) -> Any:
    ctx.join(room)
    return {"joined": room}


def shout(ctx: EventContext, room: str, text: str) -> Any:
    ctx.emit(room, "shout", {"from": ctx.user, "text": text})
    return "ok"


async def reverse_bytes(ctx: EventContext, data: bytes) -> Any:
    await asyncio.sleep(0)
    return {"reversed": bytes(reversed(data)), "len": len(data)}
