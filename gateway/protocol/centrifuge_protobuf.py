"""Centrifugo client protocol, protobuf format (subprotocol ``centrifuge-protobuf``).

The messages are the official schema (``schema/client.proto``), compiled by protoc into
:mod:`gateway.protocol.client_pb2`; the ``protobuf`` library does all the wire work. One
BINARY WebSocket message carries one or more ``Command``\\s, each prefixed with its length
as a varint; replies and pushes go out the same way, ``Reply`` by ``Reply``, and several
share a frame by plain concatenation (centrifugal/protocol ``decode.go``, ``encode.go``).

``bytes`` fields are opaque bytes here, where the JSON format embeds raw JSON, so a
publication's ``data`` crosses between the two formats unchanged. What a command carries
reaches the handlers in the JSON codec's shape (:class:`~gateway.protocol.codec.Command`,
its ``body`` a dict of the fields that were set), with ``bytes`` fields as follows:

- ``publish.data`` is forwarded to subscribers as it is: it becomes an ``orjson.Fragment``,
  which ``orjson.dumps`` returns byte for byte;
- every other ``data`` (rpc, send, connect, subscribe) is for application code: the JSON
  value when the bytes are JSON, else the ``bytes`` themselves. Handlers written for JSON
  clients thus serve protobuf clients that send JSON payloads; a ``bytes`` result (or a
  JSON value) goes back as the reply's bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.internal.decoder import _DecodeVarint32
from google.protobuf.internal.encoder import _VarintBytes
from google.protobuf.message import DecodeError

from gateway.core.errors import DISCONNECT_BAD_REQUEST, ERROR_BAD_REQUEST, ClientError, Disconnect
from gateway.core.model import ClientInfo, DeltaPayload, Publication
from gateway.protocol import client_pb2 as pb
from gateway.protocol.codec import Command

__all__ = ["ProtobufCodec", "PROTOBUF", "SUBPROTOCOL", "delimited", "split_delimited", "app_value", "raw_bytes"]

SUBPROTOCOL = "centrifuge-protobuf"

_BYTES = FieldDescriptor.TYPE_BYTES
# A Command's id is its field 1; every other field of it is a request (PROTOCOL.md §1.3).
_ID_FIELD = 1


def delimited(message: bytes) -> bytes:
    """``message`` with its varint length prefix."""
    prefix: bytes = _VarintBytes(len(message))
    return prefix + message


def split_delimited(data: bytes, max_messages: int) -> list[memoryview]:
    """The length-delimited messages of one WebSocket message.

    Raises:
        Disconnect: 3501 for a prefix that does not parse, a message that runs past the end,
            or more than ``max_messages``.
    """
    view = memoryview(data)
    end = len(data)
    pos = 0
    out: list[memoryview] = []
    while pos < end:
        if len(out) >= max_messages:
            raise _bad("too many commands")
        try:
            size, pos = _DecodeVarint32(data, pos)
        except (DecodeError, IndexError):
            raise _bad("malformed protobuf") from None
        stop = pos + size
        if stop > end:
            raise _bad("malformed protobuf")
        out.append(view[pos:stop])
        pos = stop
    return out


def _bad(reason: str) -> Disconnect:
    return Disconnect(DISCONNECT_BAD_REQUEST.code, reason)


# -- commands in ------------------------------------------------------------------------------


def app_value(raw: bytes) -> Any:
    """A ``bytes`` field for application code: its JSON value, or the bytes when not JSON."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return bytes(raw)


def _field_value(fd: FieldDescriptor, value: Any, publish: bool) -> Any:
    message = fd.message_type
    if message is None:
        if fd.type == _BYTES:
            return orjson.Fragment(value) if publish else app_value(value)
        return list(value) if fd.is_repeated else value
    if message.GetOptions().map_entry:
        if message.fields_by_name["value"].message_type is None:
            return dict(value)
        return {key: _fields(item, False) for key, item in value.items()}
    if fd.is_repeated:
        return [_fields(item, False) for item in value]
    return _fields(value, False)


def _fields(msg: Any, publish: bool) -> dict[str, Any]:
    """The fields ``msg`` carries (proto3: those not at their zero value), JSON-like."""
    return {fd.name: _field_value(fd, value, publish) for fd, value in msg.ListFields()}


def decode_command(raw: bytes | memoryview, received_at: float = 0.0) -> Command:
    """Raises Disconnect (3501) for bytes that are not a Command."""
    msg = pb.Command()
    try:
        msg.ParseFromString(raw)
    except (DecodeError, ValueError, TypeError):
        raise _bad("malformed protobuf") from None
    cmd_id = 0
    method = ""
    body: dict[str, Any] = {}
    for fd, value in msg.ListFields():  # in field-number order: id first, then the request
        if fd.number == _ID_FIELD:
            cmd_id = value
        elif not method:
            method = fd.name  # the first request set wins, as in the JSON format
            body = _fields(value, method == "publish")
    return Command(cmd_id, method, body, received_at)


# -- replies and pushes out -------------------------------------------------------------------


def raw_bytes(value: Any) -> bytes:
    """What a ``bytes`` field carries for a handler's value: bytes as they are, an
    ``orjson.Fragment`` as its contents, anything else as JSON.

    Raises:
        ClientError: 107 for a value JSON cannot encode.
    """
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        raise ERROR_BAD_REQUEST from None


def _set_client_info(msg: Any, info: ClientInfo) -> None:
    msg.user = info.user
    msg.client = info.client
    if info.conn_info is not None:
        msg.conn_info = info.conn_info
    if info.chan_info is not None:
        msg.chan_info = info.chan_info


def _set_publication(msg: Any, pub: Publication) -> None:
    msg.data = pub.data
    if pub.info is not None:
        _set_client_info(msg.info, pub.info)
    if pub.offset:
        msg.offset = pub.offset
    if pub.tags:
        msg.tags.update(pub.tags)


def _set_delta_publication(msg: Any, payload: DeltaPayload) -> None:
    """For a subscriber that negotiated fossil deltas: ``data`` is the delta (``delta``
    set) or the whole payload, as bytes either way."""
    _set_publication(msg, payload.pub)
    msg.data = payload.data
    if payload.delta:
        msg.delta = True


def _set_message(msg: Any, value: Any) -> None:
    """Fill a (sub)message from a dict or a model value, marking it present even if empty."""
    msg.SetInParent()
    if isinstance(value, Publication):
        _set_publication(msg, value)
    elif isinstance(value, DeltaPayload):
        _set_delta_publication(msg, value)
    elif isinstance(value, ClientInfo):
        _set_client_info(msg, value)
    else:
        _set_fields(msg, value)


def _set_fields(msg: Any, values: Mapping[str, Any]) -> None:
    """Set ``msg``'s fields from a result dict; keys the schema does not have are skipped
    (a reply carries only what the schema defines)."""
    fields = msg.DESCRIPTOR.fields_by_name
    for name, value in values.items():
        fd = fields.get(name)
        if fd is None or value is None:
            continue
        message = fd.message_type
        if message is None:
            if fd.type == _BYTES:
                setattr(msg, name, raw_bytes(value))
            elif fd.is_repeated:
                getattr(msg, name).extend(value)
            else:
                setattr(msg, name, value)
            continue
        target = getattr(msg, name)
        if message.GetOptions().map_entry:
            if message.fields_by_name["value"].message_type is None:
                target.update(value)
            else:
                for key, item in value.items():
                    _set_message(target[key], item)
        elif fd.is_repeated:
            for item in value:
                _set_message(target.add(), item)
        else:
            _set_message(target, value)


def _encode(reply: Any) -> bytes:
    return delimited(reply.SerializeToString())


class ProtobufCodec:
    """The Centrifugo protobuf codec (:class:`gateway.protocol.codec.Codec`): BINARY frames of
    length-delimited messages; the hub's pushes encoded once per publication per worker."""

    name = "protobuf"
    binary = True
    separator = b""
    ping = delimited(b"")  # an empty Reply

    def decode_commands(self, data: bytes, max_commands: int, received_at: float = 0.0) -> list[Command]:
        """Raises Disconnect (3501) for a message that is not length-delimited Commands."""
        return [decode_command(raw, received_at) for raw in split_delimited(data, max_commands)]

    def encode_reply(self, cmd_id: int, method: str, result: dict[str, Any]) -> bytes:
        reply = pb.Reply(id=cmd_id)
        target = getattr(reply, method)
        try:
            _set_message(target, result)
        except (TypeError, ValueError):
            raise ERROR_BAD_REQUEST from None  # a value the schema's field cannot hold
        return _encode(reply)

    def encode_error(self, cmd_id: int, error: ClientError) -> bytes:
        reply = pb.Reply(id=cmd_id)
        reply.error.code = error.code
        reply.error.message = error.message
        reply.error.temporary = error.temporary
        return _encode(reply)

    def encode_push(self, channel: str, kind: str, body: dict[str, Any]) -> bytes:
        reply = pb.Reply()
        if channel:
            reply.push.channel = channel
        target = getattr(reply.push, kind)
        try:
            _set_message(target, body)
        except (TypeError, ValueError):
            raise ERROR_BAD_REQUEST from None
        return _encode(reply)

    def publication_push(self, channel: str, pub: Publication) -> bytes:
        reply = pb.Reply()
        reply.push.channel = channel
        _set_publication(reply.push.pub, pub)
        return _encode(reply)

    def delta_publication_push(self, channel: str, payload: DeltaPayload) -> bytes:
        reply = pb.Reply()
        reply.push.channel = channel
        _set_delta_publication(reply.push.pub, payload)
        return _encode(reply)

    def join_push(self, channel: str, info: ClientInfo) -> bytes:
        reply = pb.Reply()
        reply.push.channel = channel
        _set_client_info(reply.push.join.info, info)
        return _encode(reply)

    def leave_push(self, channel: str, info: ClientInfo) -> bytes:
        reply = pb.Reply()
        reply.push.channel = channel
        _set_client_info(reply.push.leave.info, info)
        return _encode(reply)


PROTOBUF = ProtobufCodec()
