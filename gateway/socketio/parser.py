"""Socket.IO v5 packets (socketio/socket.io-protocol, v5), pure: no sockets, no loop.

``<type>[<attachments>-][<namespace>,][<ack id>][JSON data]``; the namespace is written
only when it is not ``/``. A BINARY_EVENT or BINARY_ACK is followed by that many binary
Engine.IO messages, which replace the ``{"_placeholder":true,"num":n}`` objects in the data.

Limits (each refusal is a :class:`ParseError`, which closes the Engine.IO session):
:data:`MAX_ATTACHMENTS` attachments per packet, :data:`MAX_NAMESPACE_LENGTH` characters of
namespace, ack ids below 2**31; the size of a packet is bounded by Engine.IO's maxPayload.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import orjson

__all__ = ["SioType", "SioPacket", "ParseError", "decode", "encode", "BinaryAssembler", "event_packet",
           "MAX_ATTACHMENTS", "MAX_NAMESPACE_LENGTH", "RESERVED_EVENTS"]

MAX_ATTACHMENTS = 10
MAX_NAMESPACE_LENGTH = 256
_MAX_ACK_ID = 2**31 - 1
#: Event names a client may not emit (socket.io-parser's list).
RESERVED_EVENTS = frozenset({"connect", "connect_error", "disconnect", "disconnecting", "newListener",
                             "removeListener"})


class SioType(IntEnum):
    CONNECT = 0
    DISCONNECT = 1
    EVENT = 2
    ACK = 3
    CONNECT_ERROR = 4
    BINARY_EVENT = 5
    BINARY_ACK = 6


class ParseError(ValueError):
    """Not a Socket.IO v5 packet, or over a limit."""


@dataclass(slots=True)
class SioPacket:
    type: SioType
    nsp: str = "/"
    data: Any = None
    id: int | None = None
    attachments: int = 0
    buffers: list[bytes] = field(default_factory=list)


def _valid(kind: SioType, data: Any, has_data: bool) -> bool:
    if kind is SioType.CONNECT:
        return not has_data or isinstance(data, dict)
    if kind is SioType.DISCONNECT:
        return not has_data
    if kind is SioType.CONNECT_ERROR:
        return isinstance(data, (str, dict))
    if kind in (SioType.EVENT, SioType.BINARY_EVENT):
        return isinstance(data, list) and len(data) > 0 and (
            (isinstance(data[0], str) and data[0] not in RESERVED_EVENTS)
            or (isinstance(data[0], int) and not isinstance(data[0], bool)))
    return isinstance(data, list)  # ACK, BINARY_ACK


def decode(raw: bytes) -> SioPacket:
    """One text Engine.IO message's data."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError("not UTF-8") from None
    if not text or not "0" <= text[0] <= "6":
        raise ParseError("unknown packet type")
    kind = SioType(int(text[0]))
    pos, end = 1, len(text)
    attachments = 0
    if kind in (SioType.BINARY_EVENT, SioType.BINARY_ACK):
        dash = text.find("-", pos, pos + 4)
        if dash < 0 or not text[pos:dash].isdigit():
            raise ParseError("bad attachment count")
        attachments = int(text[pos:dash])
        if attachments > MAX_ATTACHMENTS:
            raise ParseError("too many attachments")
        pos = dash + 1
    nsp = "/"
    if pos < end and text[pos] == "/":
        comma = text.find(",", pos, pos + MAX_NAMESPACE_LENGTH + 1)
        if comma < 0:
            if end - pos > MAX_NAMESPACE_LENGTH:
                raise ParseError("namespace too long")
            comma = end
        nsp = text[pos:comma]
        pos = comma + 1
    ack: int | None = None
    digits = pos
    while digits < end and "0" <= text[digits] <= "9" and digits - pos < 11:
        digits += 1
    if digits > pos:
        ack = int(text[pos:digits])
        if ack > _MAX_ACK_ID:
            raise ParseError("ack id too large")
        pos = digits
    data: Any = None
    has_data = pos < end
    if has_data:
        try:
            data = orjson.loads(text[pos:])
        except orjson.JSONDecodeError:
            raise ParseError("malformed JSON") from None
    if not _valid(kind, data, has_data):
        raise ParseError("invalid payload")
    if ack is not None and kind not in (SioType.EVENT, SioType.BINARY_EVENT, SioType.ACK, SioType.BINARY_ACK):
        raise ParseError("ack id on a packet that takes none")
    if kind in (SioType.ACK, SioType.BINARY_ACK) and ack is None:
        raise ParseError("ack without id")
    return SioPacket(kind, nsp, data, ack, attachments)


def _replace(data: Any, buffers: list[bytes]) -> Any:
    if isinstance(data, list):
        return [_replace(v, buffers) for v in data]
    if isinstance(data, dict):
        if data.get("_placeholder") is True:
            num = data.get("num")
            if type(num) is not int or not 0 <= num < len(buffers):
                raise ParseError("bad placeholder")
            return buffers[num]
        return {k: _replace(v, buffers) for k, v in data.items()}
    return data


class BinaryAssembler:
    """Collects the binary messages that follow a BINARY_EVENT or BINARY_ACK."""

    def __init__(self, packet: SioPacket) -> None:
        self.packet = packet

    def add(self, data: bytes) -> SioPacket | None:
        """The complete packet once its last attachment arrived, else None."""
        packet = self.packet
        packet.buffers.append(data)
        if len(packet.buffers) < packet.attachments:
            return None
        packet.data = _replace(packet.data, packet.buffers)
        packet.type = SioType.EVENT if packet.type is SioType.BINARY_EVENT else SioType.ACK
        return packet


def _deconstruct(data: Any, buffers: list[bytes]) -> Any:
    if isinstance(data, (bytes, bytearray, memoryview)):
        buffers.append(bytes(data))
        return {"_placeholder": True, "num": len(buffers) - 1}
    if isinstance(data, (list, tuple)):
        return [_deconstruct(v, buffers) for v in data]
    if isinstance(data, dict):
        return {k: _deconstruct(v, buffers) for k, v in data.items()}
    return data


def _prefix(nsp: str) -> bytes:
    return b"" if nsp == "/" else nsp.encode() + b","


def encode(kind: SioType, nsp: str, data: Any = None, ack: int | None = None) -> list[bytes]:
    """A packet as its text message followed by its binary attachments (``bytes`` values
    anywhere in ``data`` of an EVENT or ACK become attachments). Raises TypeError for data
    JSON cannot carry."""
    buffers: list[bytes] = []
    if kind in (SioType.EVENT, SioType.ACK):
        data = _deconstruct(data, buffers)
        if buffers:
            kind = SioType.BINARY_EVENT if kind is SioType.EVENT else SioType.BINARY_ACK
    head = str(int(kind)).encode()
    if buffers:
        head += str(len(buffers)).encode() + b"-"
    head += _prefix(nsp)
    if ack is not None:
        head += str(ack).encode()
    if data is not None:
        try:
            head += orjson.dumps(data)
        except orjson.JSONEncodeError as exc:
            raise TypeError(str(exc)) from None
    return [head, *buffers]


def event_packet(nsp: str, event: str, body: bytes, extra: bytes = b"") -> bytes:
    """``42<nsp>,["event",<body><extra>]`` from an encoded JSON body (the hub's one encoding)."""
    return b"2" + _prefix(nsp) + b"[" + orjson.dumps(event) + b"," + body + extra + b"]"
