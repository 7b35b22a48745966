"""Engine.IO v4 packets (socketio/engine.io-protocol, v4), pure: no sockets, no loop.

A packet is a type digit and its data. Over WebSocket one message carries one packet: a
TEXT message is ``<type><data>``, a BINARY message is the raw bytes of a message packet.
Over HTTP long-polling one body carries several packets separated by ``\\x1e``; a binary
packet there is ``b`` followed by its base64.

Limits: a polling body holds at most :data:`MAX_PACKETS_PER_PAYLOAD` packets, and a packet
is refused beyond the ``max_payload`` the server announced (the caller's check on the body).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from enum import IntEnum

import orjson

__all__ = ["PacketType", "Packet", "EngineIOError", "decode_ws", "decode_payload", "encode_payload",
           "open_packet", "MAX_PACKETS_PER_PAYLOAD", "SEPARATOR", "PING", "PONG", "NOOP", "PROBE_PONG",
           "TEXT_PLAIN", "UNKNOWN_TRANSPORT", "UNKNOWN_SID", "BAD_HANDSHAKE", "BAD_REQUEST"]

SEPARATOR = b"\x1e"
#: Most packets one polling POST may carry (each one runs through the parser).
MAX_PACKETS_PER_PAYLOAD = 1000

#: The content type of a polling answer, and the JSON bodies of the server's errors
#: (engine.io ``Server.errors``: codes 0-3, with HTTP 400).
TEXT_PLAIN = "text/plain; charset=UTF-8"
UNKNOWN_TRANSPORT = orjson.dumps({"code": 0, "message": "Transport unknown"})
UNKNOWN_SID = orjson.dumps({"code": 1, "message": "Session ID unknown"})
BAD_HANDSHAKE = orjson.dumps({"code": 2, "message": "Bad handshake method"})
BAD_REQUEST = orjson.dumps({"code": 3, "message": "Bad request"})


class PacketType(IntEnum):
    OPEN = 0
    CLOSE = 1
    PING = 2
    PONG = 3
    MESSAGE = 4
    UPGRADE = 5
    NOOP = 6


PING = b"2"
PONG = b"3"
NOOP = b"6"
PROBE_PONG = b"3probe"


class EngineIOError(ValueError):
    """A packet or payload that is not Engine.IO v4: the transport closes the session."""


@dataclass(frozen=True, slots=True)
class Packet:
    type: PacketType
    data: bytes = b""
    binary: bool = False  # a binary message (raw bytes), not text


def _text_packet(raw: bytes) -> Packet:
    if not raw:
        raise EngineIOError("empty packet")
    code = raw[0] - 48
    if not 0 <= code <= 6:
        raise EngineIOError("unknown packet type")
    return Packet(PacketType(code), raw[1:])


def decode_ws(data: bytes, binary: bool) -> Packet:
    """One WebSocket message: a TEXT packet or a binary message packet."""
    if binary:
        return Packet(PacketType.MESSAGE, data, True)
    return _text_packet(data)


def decode_payload(body: bytes) -> list[Packet]:
    """A polling POST body: packets separated by ``\\x1e``; ``b<base64>`` is binary."""
    parts = body.split(SEPARATOR)
    if len(parts) > MAX_PACKETS_PER_PAYLOAD:
        raise EngineIOError("too many packets")
    packets = []
    for part in parts:
        if part[:1] == b"b":
            try:
                packets.append(Packet(PacketType.MESSAGE, base64.b64decode(part[1:], validate=True), True))
            except (binascii.Error, ValueError):
                raise EngineIOError("bad base64") from None
        else:
            packets.append(_text_packet(part))
    return packets


def encode_payload(packets: list[bytes | bytearray]) -> bytes:
    """A polling GET body: ``bytes`` are encoded text packets, ``bytearray`` binary data."""
    return SEPARATOR.join(b"b" + base64.b64encode(p) if isinstance(p, bytearray) else p for p in packets)


def open_packet(sid: str, upgrades: list[str], ping_interval: float, ping_timeout: float,
                max_payload: int) -> bytes:
    return b"0" + orjson.dumps({"sid": sid, "upgrades": upgrades, "pingInterval": int(ping_interval * 1000),
                                "pingTimeout": int(ping_timeout * 1000), "maxPayload": max_payload})
