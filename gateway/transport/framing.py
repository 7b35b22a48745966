"""Pure pieces of the HTTP transports: stream framing, emulation requests, one-way connect
requests and emulated-session addresses. No sockets, no aiohttp.

Shapes (Centrifugo v6 / centrifuge v0.38, ``handler_http_stream.go``, ``handler_sse.go``,
``emulation.go``, centrifugo ``internal/uni*/handler.go``):

- **http_stream**: the response body is a stream of replies and pushes: JSON, each followed
  by ``\\n``; protobuf (request ``Content-Type: application/octet-stream``), each with its
  varint length prefix (what the protobuf codec produces already).
- **sse**: ``text/event-stream``, a ``\\r\\n`` first, then one ``data: <message>\\n\\n`` event
  per reply or push (JSON only: JSON messages never hold a raw newline).
- **emulation**: ``POST {"session":..,"node":..,"data":"<the commands, as a JSON string>"}``,
  or the protobuf ``EmulationRequest`` (``data`` = the delimited commands) with
  ``application/octet-stream``. 204 when delivered; 404 when the node or session is unknown
  (centrifuge-js closes the transport and reconnects); 400 for a request that does not parse.
- **one-way**: the connect request is a bare ``ConnectRequest`` object (not a Command):
  ``{"token":..,"data":..,"subs":..}``; ``null`` or nothing means an empty request.

Emulated sessions are addressed as ``node = "<node id>/<slot>"`` and an unguessable random
``session``: any worker can route an /emulation POST to the slot holding the session (no
sticky sessions), and a node id that is not ours (another node, or an earlier run) is a 404.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.engine.wire import pack_parts, unpack_parts
from gateway.protocol.codec import NEWLINE

__all__ = ["BadRequest", "EmulationRequest", "parse_emulation_request", "emulation_node", "slot_of_node",
           "new_session_id", "sse_events", "json_lines", "uni_connect_command", "pack_forward",
           "unpack_forward", "SSE_PREAMBLE", "MAX_SESSION_ID"]

#: What an SSE response starts with (Centrifugo writes it to open the stream at once).
SSE_PREAMBLE = b"\r\n"
#: Longest ``session`` / ``node`` accepted in an emulation request.
MAX_SESSION_ID = 256


class BadRequest(ValueError):
    """Input that does not parse: HTTP 400 (or close 3501 on uni_websocket)."""


@dataclass(frozen=True, slots=True)
class EmulationRequest:
    session: str
    node: str
    data: bytes  # the commands, in the session's codec


def parse_emulation_request(body: bytes, protobuf: bool) -> EmulationRequest:
    """Raises BadRequest."""
    session: Any
    node: Any
    if protobuf:
        from gateway.protocol import client_pb2 as pb  # protobuf only where a protobuf client posts

        msg = pb.EmulationRequest()
        try:
            msg.ParseFromString(body)
        except Exception:  # google.protobuf.message.DecodeError and friends
            raise BadRequest("emulation request: not a protobuf EmulationRequest") from None
        session, node, data = msg.session, msg.node, bytes(msg.data)
    else:
        try:
            req = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise BadRequest("emulation request: malformed JSON") from None
        if not isinstance(req, dict):
            raise BadRequest("emulation request: not an object")
        session, node, raw = req.get("session"), req.get("node"), req.get("data")
        if not isinstance(raw, str):
            raise BadRequest("emulation request: data must be a string (the encoded commands)")
        data = raw.encode()
    if not isinstance(session, str) or not isinstance(node, str) or not session or not node:
        raise BadRequest("emulation request: session and node are required")
    if len(session) > MAX_SESSION_ID or len(node) > MAX_SESSION_ID:
        raise BadRequest("emulation request: session or node too long")
    if not data:
        raise BadRequest("emulation request: no data")
    return EmulationRequest(session, node, data)


def emulation_node(node_id: str, slot: int) -> str:
    return f"{node_id}/{slot}"


def slot_of_node(node: str, node_id: str, workers: int) -> int | None:
    """The slot named by ``node`` when it is one of this node's; None otherwise."""
    prefix, sep, slot = node.rpartition("/")
    if not sep or prefix != node_id or not slot.isdigit() or len(slot) > 5:
        return None
    n = int(slot)
    return n if n < workers else None


def new_session_id() -> str:
    """128 random bits: knowing a session id is what lets a request speak for that client."""
    return secrets.token_hex(16)


def sse_events(data: bytes) -> bytes:
    """One ``data:`` event per message of ``data`` (JSON messages joined by ``\\n``)."""
    if NEWLINE not in data:
        return b"data: " + data + b"\n\n"
    return b"".join(b"data: " + line + b"\n\n" for line in data.split(b"\n") if line)


def json_lines(data: bytes) -> bytes:
    """JSON messages joined by ``\\n``, as lines of an HTTP stream."""
    return data + b"\n"


def uni_connect_command(raw: bytes | str | None) -> bytes:
    """The connect Command (JSON, id 1) for a one-way client's ConnectRequest.

    Raises:
        BadRequest: not JSON, or not an object (``null``/empty is an empty request).
    """
    if raw is None or raw in (b"", ""):
        req: Any = {}
    else:
        try:
            req = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise BadRequest("connect request: malformed JSON") from None
        if req is None:
            req = {}
    if not isinstance(req, dict):
        raise BadRequest("connect request: not an object")
    return orjson.dumps({"id": 1, "connect": req})


def pack_forward(session: str, data: bytes) -> bytes:
    """An emulation request forwarded over the bus to the session's slot."""
    return pack_parts([session.encode(), data])


def unpack_forward(payload: bytes) -> tuple[str, bytes]:
    """Raises BadRequest."""
    try:
        session, data = unpack_parts(payload)
        return session.decode(), data
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("forwarded emulation request: bad payload") from None
