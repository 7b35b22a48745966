"""The Socket.IO codec the hub and sessions use (:class:`gateway.protocol.codec.Codec`).

One instance per Socket.IO namespace and worker (:func:`codec_for`): a channel belongs to
one namespace, so every Socket.IO subscriber of a channel shares one codec and the hub
encodes each publication once for all of them. What it produces are whole Engine.IO
packets (``42<nsp>,[...]``), joined by ``\\x1e`` when several leave together: the polling
payload separator, and what the WebSocket side splits on (JSON never holds a raw
``\\x1e``).

Mapping (README, Socket.IO): namespace ``/x`` is channel namespace ``x`` and its room
``r`` the channel ``x:r``; ``/`` holds the channels without namespace. A publication is the
event ``publication`` ``{channel, data, info, offset}`` (``channel`` is the room), joins and
leaves ``join``/``leave`` ``{channel, info}``. With connection state recovery on, each
publication event ends with its offset argument, as Socket.IO's recovery does.
Command replies are ACK packets: the Centrifugo result, or ``{"error": {code, message}}``.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.core.errors import ClientError
from gateway.core.model import ClientInfo, DeltaPayload, Publication
from gateway.protocol.centrifuge_json import (
    decode_commands,
    dumps,
    encode_client_info,
    encode_delta_publication,
    encode_model_publication,
)
from gateway.protocol.codec import Command
from gateway.socketio.parser import event_packet

__all__ = ["SioCodec", "codec_for", "CONNECT_ID", "NO_ACK_BASE", "ack_to_id", "room_channel", "channel_room",
           "EVENT_TAG", "encode_offset", "decode_offset"]

#: The Centrifugo command id of a namespace's connect.
CONNECT_ID = 1
#: Command ids from here on owe no ACK (an event sent without one).
NO_ACK_BASE = 2**31 + 2
#: A publication carrying this tag is the custom event it names (``ctx.emit``): its data is
#: the argument list.
EVENT_TAG = "socketio_event"


def ack_to_id(ack: int) -> int:
    return ack + 2


def room_channel(nsp: str, room: str, boundary: str) -> str:
    """The channel of ``room`` in ``nsp``; ValueError when ``room`` would leave ``/``."""
    if nsp == "/":
        if boundary in room:
            raise ValueError("room names a namespace")
        return room
    return nsp[1:] + boundary + room


def channel_room(nsp: str, channel: str, boundary: str) -> str:
    prefix = nsp[1:] + boundary
    if nsp != "/" and channel.startswith(prefix):
        return channel[len(prefix):]
    return channel


def encode_offset(channel: str, offset: int) -> str:
    """The offset argument of a publication event: the stream offset and the channel."""
    return f"{offset} {channel}"


def decode_offset(value: Any) -> tuple[str, int] | None:
    if not isinstance(value, str):
        return None
    head, _, channel = value.partition(" ")
    if not head.isdigit() or len(head) > 20 or not channel:  # an offset is a uint64
        return None
    return channel, int(head)


class SioCodec:
    name = "socketio"
    binary = False
    separator = b"\x1e"
    ping = b""  # Engine.IO pings the connection, not each namespace

    def __init__(self, nsp: str, boundary: str, offsets: bool) -> None:
        self.nsp = nsp
        self.boundary = boundary
        self.offsets = offsets
        self._prefix = b"" if nsp == "/" else nsp.encode() + b","

    def room(self, channel: str) -> str:
        return channel_room(self.nsp, channel, self.boundary)

    # -- pushes, once per publication for every subscriber of this namespace ----------------

    def delta_publication_push(self, channel: str, payload: DeltaPayload) -> bytes:
        """A ``subscribe`` event that asked for ``delta: "fossil"`` gets Centrifugo's JSON delta
        form in its ``publication`` event (``data`` a string, ``delta: true``)."""
        body = b'{"channel":' + orjson.dumps(self.room(channel)) + b"," + encode_delta_publication(payload)[1:]
        return b"4" + event_packet(self.nsp, "publication", body, b"")

    def publication_push(self, channel: str, pub: Publication) -> bytes:
        extra = b""
        if self.offsets and pub.offset:
            extra = b"," + orjson.dumps(encode_offset(channel, pub.offset))
        tags = pub.tags
        if tags and EVENT_TAG in tags:
            args = pub.data
            body = args[1:-1] if args.startswith(b"[") and args.endswith(b"]") else b""
            name = orjson.dumps(tags[EVENT_TAG])
            inner = name + (b"," + body if body.strip() else b"")
            return b"42" + self._prefix + b"[" + inner + extra + b"]"
        body = b'{"channel":' + orjson.dumps(self.room(channel)) + b"," + encode_model_publication(pub)[1:]
        return b"4" + event_packet(self.nsp, "publication", body, extra)

    def join_push(self, channel: str, info: ClientInfo) -> bytes:
        body = b'{"channel":' + orjson.dumps(self.room(channel)) + b',"info":' + encode_client_info(info) + b"}"
        return b"4" + event_packet(self.nsp, "join", body)

    def leave_push(self, channel: str, info: ClientInfo) -> bytes:
        body = b'{"channel":' + orjson.dumps(self.room(channel)) + b',"info":' + encode_client_info(info) + b"}"
        return b"4" + event_packet(self.nsp, "leave", body)

    # -- one connection -----------------------------------------------------------------------

    def decode_commands(self, data: bytes, max_commands: int, received_at: float = 0.0) -> list[Command]:
        # The session adapter hands Socket.IO events over as Centrifugo JSON commands, and
        # custom events as {"id", "sio_event": {"event"}} (their arguments wait in the session).
        # (find, not ``in``: bytes' ``in`` raises a TypeError inside before it searches.)
        if data.find(b'"sio_event"', 0, 40) >= 0:
            obj = orjson.loads(data)
            return [Command(int(obj["id"]), "sio_event", obj["sio_event"], received_at)]
        return decode_commands(data, max_commands, received_at)

    def encode_reply(self, cmd_id: int, method: str, result: dict[str, Any]) -> bytes:
        if cmd_id >= NO_ACK_BASE or cmd_id < 2:
            return b""
        return b"43" + self._prefix + str(cmd_id - 2).encode() + b"[" + dumps(result) + b"]"

    def encode_error(self, cmd_id: int, error: ClientError) -> bytes:
        if cmd_id == CONNECT_ID:
            return b"44" + self._prefix + orjson.dumps({"message": error.message, "data": {"code": error.code}})
        if cmd_id >= NO_ACK_BASE or cmd_id < 2:
            return b""
        return b"43" + self._prefix + str(cmd_id - 2).encode() + b"[" + orjson.dumps(
            {"error": error.as_dict()}) + b"]"

    def encode_push(self, channel: str, kind: str, body: dict[str, Any]) -> bytes:
        if channel:
            body = {"channel": self.room(channel), **body}
        return b"4" + event_packet(self.nsp, kind, dumps(body))


_CODECS: dict[tuple[str, str, bool], SioCodec] = {}


def codec_for(nsp: str, boundary: str, offsets: bool) -> SioCodec:
    """The one codec of ``nsp`` in this process (the hub groups subscribers by codec)."""
    key = (nsp, boundary, offsets)
    codec = _CODECS.get(key)
    if codec is None:
        codec = _CODECS[key] = SioCodec(nsp, boundary, offsets)
    return codec
