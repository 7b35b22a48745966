"""Centrifugo client protocol, JSON format (PROTOCOL.md §1.2-1.6): frames in, bytes out.

One WebSocket message carries one or more commands separated by ``\\n``; replies and
pushes go out the same way. ``bytes`` fields (``data``, ``info``) are raw JSON, so they
are embedded as JSON values, never base64. orjson never emits a raw newline, which keeps
every encoded message safe to join with ``\\n``.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.core.errors import DISCONNECT_BAD_REQUEST, ERROR_BAD_REQUEST, WS_INVALID_TEXT, ClientError, Disconnect
from gateway.core.model import ClientInfo, DeltaPayload, Publication
from gateway.protocol.codec import NEWLINE, Command

__all__ = [
    "METHODS",
    "PING",
    "Command",
    "decode_commands",
    "encode_reply",
    "encode_error",
    "encode_push",
    "encode_publication",
    "client_info",
    "dumps",
    "push_prefix",
    "JsonCodec",
    "JSON",
    "encode_client_info",
    "encode_model_publication",
    "encode_delta_publication",
]

# Request fields of Command, in proto field order (the first non-null one wins).
METHODS = (
    "connect",
    "subscribe",
    "unsubscribe",
    "publish",
    "presence",
    "presence_stats",
    "history",
    "ping",
    "send",
    "rpc",
    "refresh",
    "sub_refresh",
)
_MAX_ID = 2**32 - 1
_METHOD_ORDER = {name: i for i, name in enumerate(METHODS)}
_NO_METHOD = len(METHODS)

PING = b"{}"

# Module globals: one lookup each on the per-reply path instead of a global and an attribute.
_orjson_dumps = orjson.dumps
_PASSTHROUGH_DATACLASS = orjson.OPT_PASSTHROUGH_DATACLASS


def _bad(reason: str) -> Disconnect:
    return Disconnect(DISCONNECT_BAD_REQUEST.code, reason)


def decode_commands(data: bytes, max_commands: int, received_at: float = 0.0) -> list[Command]:
    """Decode one WebSocket message into commands.

    Raises:
        Disconnect: 1007 when a line is not valid UTF-8 (orjson rejects it, so the check
            runs only on the error path); 3501 for malformed JSON, a non-object command, a bad ``id``, an
            unknown method or more than ``max_commands`` commands in one message.
    """
    if NEWLINE not in data:
        return [_command(data, received_at)] if data else []  # one command: most messages
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()  # one trailing newline is allowed (protocol decode.go)
    if len(lines) > max_commands:
        raise _bad("too many commands")
    return [_command(line, received_at) for line in lines]


def _command(line: bytes, received_at: float) -> Command:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            raise WS_INVALID_TEXT from None
        raise _bad("malformed json") from None
    if type(obj) is not dict:
        raise _bad("command is not an object")
    if len(obj) == 2:
        # Most commands are {"id": N, "<method>": {...}} in that order (the SDKs write the id
        # first): taken here in a third of the general loop's bytecode. Anything else, below.
        (first, cmd_id), (method, body) = obj.items()
        if first == "id" and type(cmd_id) is int and 0 < cmd_id <= _MAX_ID and type(body) is dict \
                and method in _METHOD_ORDER:
            return Command(cmd_id, method, body, received_at)
    cmd_id = 0
    method = ""
    body = None
    rank = _NO_METHOD
    # The object's own keys (usually "id" and one method), not every method name: the first
    # non-null method in proto order wins.
    for name, value in obj.items():
        if name == "id":
            cmd_id = value
            continue
        order = _METHOD_ORDER.get(name)
        if order is not None and order < rank and value is not None:
            method, body, rank = name, value, order
    if type(cmd_id) is not int or not 0 <= cmd_id <= _MAX_ID:
        raise _bad("bad command id")
    if body is None:  # no method: an empty command (a pong) unless it holds anything else
        if len(obj) > (1 if "id" in obj else 0):
            raise _bad("unknown method")
        body = {}
    elif type(body) is not dict:
        raise _bad("request is not an object")
    return Command(cmd_id, method, body, received_at)


def encode_reply(cmd_id: int, method: str, result: dict[str, Any]) -> bytes:
    # dumps() inlined: a Python frame less per reply.
    try:
        return _orjson_dumps({"id": cmd_id, method: result}, default=_default, option=_PASSTHROUGH_DATACLASS)
    except orjson.JSONEncodeError:
        raise ERROR_BAD_REQUEST from None


def encode_error(cmd_id: int, error: ClientError) -> bytes:
    return orjson.dumps({"id": cmd_id, "error": error.as_dict()})


def push_prefix(channel: str) -> bytes:
    """``{"push":{"channel":"C",`` -- cached per channel by callers that push often."""
    return b'{"push":{"channel":' + orjson.dumps(channel) + b","


def encode_push(channel: str, kind: str, body: bytes) -> bytes:
    """A push whose body is already-encoded JSON (``kind`` is pub, join, leave, ...)."""
    if channel:
        return push_prefix(channel) + b'"' + kind.encode() + b'":' + body + b"}}"
    return b'{"push":{"' + kind.encode() + b'":' + body + b"}}"


def client_info(user: str, client: str, conn_info: Any = None, chan_info: Any = None) -> dict[str, Any]:
    """ClientInfo (§1.6): ``user`` and ``client`` are always present."""
    info: dict[str, Any] = {"user": user, "client": client}
    if conn_info is not None:
        info["conn_info"] = conn_info
    if chan_info is not None:
        info["chan_info"] = chan_info
    return info


def encode_client_info(info: ClientInfo) -> bytes:
    """ClientInfo (§1.6) from the model; the info fields are raw JSON, embedded as they are."""
    out = b'{"user":' + orjson.dumps(info.user) + b',"client":' + orjson.dumps(info.client)
    if info.conn_info is not None:
        out += b',"conn_info":' + info.conn_info
    if info.chan_info is not None:
        out += b',"chan_info":' + info.chan_info
    return out + b"}"


def encode_model_publication(pub: Publication) -> bytes:
    """A Publication object (§1.6) from the model; zero-valued fields are omitted as Go's
    encoder does. Raw newlines in ``data`` are dropped, as Centrifugo's ``Raw`` does: JSON
    has them only as whitespace, and data published over protobuf is any bytes, while a
    newline here would split the message in two."""
    data = pub.data
    if NEWLINE in data:
        data = data.replace(b"\n", b"")
    out = b'{"data":' + data
    if pub.info is not None:
        out += b',"info":' + encode_client_info(pub.info)
    if pub.offset:
        out += b',"offset":' + str(pub.offset).encode()
    if pub.tags:
        out += b',"tags":' + orjson.dumps(pub.tags)
    return out + b"}"


def encode_delta_publication(payload: DeltaPayload) -> bytes:
    """A Publication for a subscriber that negotiated fossil deltas: ``data`` is a JSON
    string holding the delta (``"delta":true``) or the whole payload, as Centrifugo sends
    both to such subscribers (centrifuge-js parses the string, or applies the delta to the
    UTF-8 bytes of the previous one). The bytes are kept exactly, newlines included (the
    string escapes them), since the next delta is made against them."""
    pub = payload.pub
    out = b'{"data":' + orjson.dumps(payload.data.decode("utf-8", "replace"))
    if pub.info is not None:
        out += b',"info":' + encode_client_info(pub.info)
    if pub.offset:
        out += b',"offset":' + str(pub.offset).encode()
    if pub.tags:
        out += b',"tags":' + orjson.dumps(pub.tags)
    if payload.delta:
        out += b',"delta":true'
    return out + b"}"


def encode_publication(data: Any, offset: int = 0, info: dict[str, Any] | None = None,
                       tags: dict[str, str] | None = None) -> bytes:
    """A Publication object from JSON values; zero-valued fields are omitted as Go's encoder does."""
    pub: dict[str, Any] = {"data": data}
    if info is not None:
        pub["info"] = info
    if offset:
        pub["offset"] = offset
    if tags:
        pub["tags"] = tags
    return dumps(pub)


def _default(value: Any) -> Any:
    """Model values inside reply dicts: encoded by this codec, embedded as they are."""
    if isinstance(value, Publication):
        return orjson.Fragment(encode_model_publication(value))
    if isinstance(value, ClientInfo):
        return orjson.Fragment(encode_client_info(value))
    if isinstance(value, DeltaPayload):
        return orjson.Fragment(encode_delta_publication(value))
    raise TypeError(type(value).__name__)


def dumps(value: Any) -> bytes:
    """orjson.dumps, refusing what it cannot encode (JSON nested deeper than orjson's
    output limit, although its parser accepted it) as a bad request, not an internal error.
    Model values (Publication, ClientInfo) inside ``value`` are encoded by this codec.

    Raises:
        ClientError: 107.
    """
    try:
        return _orjson_dumps(value, default=_default, option=_PASSTHROUGH_DATACLASS)
    except orjson.JSONEncodeError:
        raise ERROR_BAD_REQUEST from None


class JsonCodec:
    """The Centrifugo JSON codec (:class:`gateway.protocol.codec.Codec`): TEXT frames, messages
    joined by ``\n``; the hub's pushes from model values, each encoded once per publication and
    written as the same bytes to every JSON subscriber."""

    name = "json"
    binary = False
    separator = b"\n"
    ping = PING

    # The module's functions themselves, not methods calling them: a Python frame less per
    # command and per reply.
    decode_commands = staticmethod(decode_commands)
    encode_reply = staticmethod(encode_reply)
    encode_error = staticmethod(encode_error)

    def encode_push(self, channel: str, kind: str, body: dict[str, Any]) -> bytes:
        return encode_push(channel, kind, dumps(body))

    def publication_push(self, channel: str, pub: Publication) -> bytes:
        return push_prefix(channel) + b'"pub":' + encode_model_publication(pub) + b"}}"

    def delta_publication_push(self, channel: str, payload: DeltaPayload) -> bytes:
        return push_prefix(channel) + b'"pub":' + encode_delta_publication(payload) + b"}}"

    def join_push(self, channel: str, info: ClientInfo) -> bytes:
        return push_prefix(channel) + b'"join":{"info":' + encode_client_info(info) + b"}}}"

    def leave_push(self, channel: str, info: ClientInfo) -> bytes:
        return push_prefix(channel) + b'"leave":{"info":' + encode_client_info(info) + b"}}}"


JSON = JsonCodec()
