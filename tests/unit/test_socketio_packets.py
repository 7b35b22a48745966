"""Engine.IO v4 and Socket.IO v5 packets and the Socket.IO codec, without sockets."""

from __future__ import annotations

import pytest

from gateway.core.errors import ClientError
from gateway.core.model import ClientInfo, Publication
from gateway.socketio import engineio
from gateway.socketio.codec import SioCodec, channel_room, decode_offset, encode_offset, room_channel
from gateway.socketio.engineio import EngineIOError, PacketType
from gateway.socketio.parser import MAX_ATTACHMENTS, BinaryAssembler, ParseError, SioType, decode, encode
from gateway.socketio.server import slot_of


def test_engineio_ws_and_payload() -> None:
    assert engineio.decode_ws(b"3", False).type is PacketType.PONG
    assert engineio.decode_ws(b"2probe", False).data == b"probe"
    assert engineio.decode_ws(b"\x00\x01", True).binary
    packets = engineio.decode_payload(b'40\x1e42["a"]\x1ebAAE=')
    assert [p.type for p in packets] == [PacketType.MESSAGE] * 3
    assert packets[2].data == b"\x00\x01" and packets[2].binary
    assert engineio.encode_payload([b"2", bytearray(b"\x01")]) == b"2\x1ebAQ=="
    for bad in (b"", b"9", b"x"):
        with pytest.raises(EngineIOError):
            engineio.decode_ws(bad, False)
    with pytest.raises(EngineIOError):
        engineio.decode_payload(b"b!!!")
    with pytest.raises(EngineIOError):
        engineio.decode_payload(b"\x1e".join([b"6"] * (engineio.MAX_PACKETS_PER_PAYLOAD + 1)))
    assert engineio.open_packet("s", [], 25, 20, 100).startswith(b'0{"sid":"s","upgrades":[]')


def test_socketio_decode() -> None:
    p = decode(b'0{"token":"t"}')
    assert p.type is SioType.CONNECT and p.nsp == "/" and p.data == {"token": "t"}
    p = decode(b'2/chat,12["ev",1]')
    assert (p.type, p.nsp, p.id, p.data) == (SioType.EVENT, "/chat", 12, ["ev", 1])
    assert decode(b"1/chat,").nsp == "/chat"
    p = decode(b'51-3["up",{"_placeholder":true,"num":0}]')
    assert p.attachments == 1 and p.id == 3
    done = BinaryAssembler(p).add(b"\x01")
    assert done is not None and done.type is SioType.EVENT and done.data == ["up", b"\x01"]
    for bad in (b"", b"7", b"2", b'2["connect"]', b"2[", b"3[]", b'0"str"', b"1{}", b"5x-[]",
                f"5{MAX_ATTACHMENTS + 1}-[\"a\"]".encode(), b"2" + b"9" * 11 + b'["a"]', b"\xff"):
        with pytest.raises(ParseError):
            decode(bad)
    with pytest.raises(ParseError):
        BinaryAssembler(decode(b'51-["a",{"_placeholder":true,"num":5}]')).add(b"x")


def test_socketio_encode() -> None:
    assert encode(SioType.EVENT, "/", ["a", 1]) == [b'2["a",1]']
    assert encode(SioType.ACK, "/x", [b"\x01"], 4) == [b'61-/x,4[{"_placeholder":true,"num":0}]', b"\x01"]
    assert encode(SioType.CONNECT, "/x", {"sid": "s"}) == [b'0/x,{"sid":"s"}']


def test_mapping_and_offsets() -> None:
    assert room_channel("/", "r", ":") == "r"
    assert room_channel("/chat", "r", ":") == "chat:r"
    with pytest.raises(ValueError):
        room_channel("/", "chat:r", ":")
    assert channel_room("/chat", "chat:r", ":") == "r"
    assert decode_offset(encode_offset("chat:r", 7)) == ("chat:r", 7)
    assert decode_offset("x") is None and decode_offset(3) is None
    assert slot_of("3_abc") == 3 and slot_of("abc") is None and slot_of("3_") is None


def test_codec() -> None:
    codec = SioCodec("/chat", ":", offsets=True)
    pub = Publication(b'{"a":1}', ClientInfo("u", "c"), offset=5)
    assert codec.publication_push("chat:r", pub) == (
        b'42/chat,["publication",{"channel":"r","data":{"a":1},"info":{"user":"u","client":"c"},"offset":5},'
        b'"5 chat:r"]')
    assert codec.join_push("chat:r", ClientInfo("u", "c")) == (
        b'42/chat,["join",{"channel":"r","info":{"user":"u","client":"c"}}]')
    assert codec.encode_reply(2, "publish", {}) == b"43/chat,0[{}]"
    assert codec.encode_reply(2**31 + 5, "publish", {}) == b""
    assert codec.encode_error(3, ClientError(103, "permission denied")) == (
        b'43/chat,1[{"error":{"code":103,"message":"permission denied"}}]')
    assert codec.encode_error(1, ClientError(101, "unauthorized")).startswith(b'44/chat,{"message":"unauthorized"')
    event = Publication(b'[{"x":1},2]', None, tags={"socketio_event": "shout"})
    assert SioCodec("/", ":", False).publication_push("r", event) == b'42["shout",{"x":1},2]'
