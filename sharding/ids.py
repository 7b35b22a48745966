"""Client ids that name the slot holding the connection.

Centrifugo SDKs treat the client id as an opaque string; ours keeps the UUID shape but
puts the owning slot in the first four hex digits of the last group. Any worker can then
route a per-client action (disconnect, server-side subscribe) straight to the right slot,
and tests can prove which worker a connection sits on.
"""

from __future__ import annotations

import random
import re

__all__ = ["make_client_id", "slot_of_client"]


def make_client_id(slot: int, rng: random.Random) -> str:
    if not 0 <= slot <= 0xFFFF:
        raise ValueError("slot out of range")
    r = rng.getrandbits(96)
    return (f"{r >> 64:08x}-{(r >> 48) & 0xFFFF:04x}-4{(r >> 36) & 0xFFF:03x}-"
            f"{0x8000 | ((r >> 22) & 0x3FFF):04x}-{slot:04x}{r & 0x3FFFFF:08x}")


_SHAPE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-([0-9a-fA-F]{4})[0-9a-fA-F]{8}")


def slot_of_client(client_id: str) -> int | None:
    """The slot named in one of our ids; None for anything else."""
    match = _SHAPE.fullmatch(client_id)
    return int(match.group(1), 16) if match else None
