"""The protobuf codec, pure: commands decoded from the official schema's classes, replies and
pushes encoded and read back with them (and with centrifuge-python's own generated classes
as an independent reader), varint framing, several messages per frame, malformed input."""

from __future__ import annotations

import importlib.util
from typing import Any

import orjson
import pytest
from centrifuge.protocol import client_pb2 as sdk_pb
from google.protobuf.internal.decoder import _DecodeVarint32
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.errors import ERROR_PERMISSION_DENIED, ClientError, Disconnect
from gateway.core.model import ClientInfo, Publication
from gateway.protocol import client_pb2 as pb
from gateway.protocol.centrifuge_json import JSON
from gateway.protocol.centrifuge_protobuf import PROTOBUF, delimited, split_delimited

MAX = 100


def frame(*commands: Any) -> bytes:
    return b"".join(delimited(c.SerializeToString()) for c in commands)


def replies(data: bytes, cls: Any = pb.Reply) -> list[Any]:
    """Read a frame of length-delimited replies with ``cls`` (ours or the SDK's)."""
    out = []
    pos = 0
    while pos < len(data):
        size, pos = _DecodeVarint32(data, pos)
        msg = cls()
        msg.ParseFromString(data[pos:pos + size])
        out.append(msg)
        pos += size
    return out


def one(data: bytes, cls: Any = pb.Reply) -> Any:
    (msg,) = replies(data, cls)
    return msg


# -- commands in ------------------------------------------------------------------------------


def test_connect_command_fields() -> None:
    cmd = pb.Command(id=1)
    cmd.connect.token = "jwt"
    cmd.connect.name = "python"
    cmd.connect.version = "0.7.0"
    cmd.connect.data = b'{"hello":1}'
    cmd.connect.subs["news"].recover = True
    cmd.connect.subs["news"].offset = 5
    cmd.connect.subs["news"].epoch = "e"
    cmd.connect.headers["x"] = "y"
    (decoded,) = PROTOBUF.decode_commands(frame(cmd), MAX, 1.5)
    assert (decoded.id, decoded.method, decoded.received_at) == (1, "connect", 1.5)
    assert decoded.body == {"token": "jwt", "name": "python", "version": "0.7.0", "data": {"hello": 1},
                            "subs": {"news": {"recover": True, "offset": 5, "epoch": "e"}}, "headers": {"x": "y"}}


def test_the_sdks_own_bytes_decode() -> None:
    """What centrifuge-python put on the wire (PROTOCOL.md's capture): Command{id:1, connect{name:"python"}}."""
    (cmd,) = PROTOBUF.decode_commands(bytes.fromhex("0c08012208220670797468 6f6e".replace(" ", "")), MAX)
    assert (cmd.id, cmd.method, cmd.body) == (1, "connect", {"name": "python"})


def test_zero_fields_are_absent_as_in_json() -> None:
    """proto3 has no presence for scalars: a zero field is absent, as the JSON SDKs omit it."""
    cmd = pb.Command(id=7)
    cmd.subscribe.channel = "news"
    cmd.subscribe.flag = 1
    (decoded,) = PROTOBUF.decode_commands(frame(cmd), MAX)
    assert decoded.body == {"channel": "news", "flag": 1}


def test_empty_request_is_still_its_method() -> None:
    cmd = pb.Command(id=3)
    cmd.unsubscribe.SetInParent()
    (decoded,) = PROTOBUF.decode_commands(frame(cmd), MAX)
    assert (decoded.method, decoded.body) == ("unsubscribe", {})


def test_empty_command_is_a_pong() -> None:
    (decoded,) = PROTOBUF.decode_commands(delimited(b""), MAX)
    assert (decoded.id, decoded.method, decoded.body) == (0, "", {})


def test_publish_data_is_kept_byte_for_byte() -> None:
    """publish.data goes to subscribers unchanged (an orjson.Fragment), JSON or not."""
    for data in (b'{"a": 1,  "b":[1,2]}', b"\x00\xffbinary\n", b"plain text"):
        cmd = pb.Command(id=2)
        cmd.publish.channel = "c"
        cmd.publish.data = data
        (decoded,) = PROTOBUF.decode_commands(frame(cmd), MAX)
        assert isinstance(decoded.body["data"], orjson.Fragment)
        assert orjson.dumps(decoded.body["data"]) == data


def test_rpc_and_send_data_are_json_values_or_bytes() -> None:
    rpc = pb.Command(id=4)
    rpc.rpc.method = "echo"
    rpc.rpc.data = b'{"x":[1,2]}'
    send = pb.Command()
    send.send.data = b"\x01\x02"
    got = PROTOBUF.decode_commands(frame(rpc, send), MAX)
    assert got[0].body == {"method": "echo", "data": {"x": [1, 2]}}
    assert (got[1].id, got[1].method, got[1].body) == (0, "send", {"data": b"\x01\x02"})


def test_history_since_is_a_nested_dict() -> None:
    cmd = pb.Command(id=9)
    cmd.history.channel = "c"
    cmd.history.limit = -1
    cmd.history.since.offset = 7
    cmd.history.since.epoch = "ep"
    cmd.history.reverse = True
    (decoded,) = PROTOBUF.decode_commands(frame(cmd), MAX)
    assert decoded.body == {"channel": "c", "limit": -1, "since": {"offset": 7, "epoch": "ep"}, "reverse": True}


def test_several_commands_in_one_frame_keep_their_order() -> None:
    commands = []
    for i in range(1, 6):
        cmd = pb.Command(id=i)
        cmd.presence.channel = f"c{i}"
        commands.append(cmd)
    decoded = PROTOBUF.decode_commands(frame(*commands), MAX)
    assert [(c.id, c.method, c.body["channel"]) for c in decoded] == [(i, "presence", f"c{i}") for i in range(1, 6)]


def test_too_many_commands_in_one_frame() -> None:
    with pytest.raises(Disconnect) as err:
        PROTOBUF.decode_commands(delimited(b"") * 4, 3)
    assert err.value.code == 3501


@pytest.mark.parametrize("data", [
    b"\x05abc",  # a length past the end
    b"\x80",  # a truncated varint
    b"\xff" * 11,  # a varint too long
    delimited(b"\x08"),  # id's tag without its value
    delimited(b"\x22\x03\x0a\x01"),  # connect whose inner length runs past its end
    delimited(b"\x22\x03\x22\x01\xff"),  # connect.name: not valid UTF-8 (proto3 strings must be)
    delimited(b"\x0f"),  # wire type 7 does not exist
    b"{\"id\":1,\"connect\":{}}",  # JSON on a protobuf connection
])
def test_malformed_input_is_bad_request(data: bytes) -> None:
    with pytest.raises(Disconnect) as err:
        PROTOBUF.decode_commands(data, MAX)
    assert err.value.code == 3501


@given(st.binary(max_size=200))
def test_fuzz_never_raises_anything_but_disconnect(data: bytes) -> None:
    try:
        commands = PROTOBUF.decode_commands(data, MAX)
    except Disconnect as exc:
        assert exc.code == 3501
    else:
        assert all(isinstance(c.id, int) and isinstance(c.body, dict) for c in commands)


def test_split_delimited_framing() -> None:
    data = delimited(b"a" * 300) + delimited(b"") + delimited(b"xyz")
    assert data[:2] == b"\xac\x02"  # 300 as a two-byte varint
    assert [bytes(m) for m in split_delimited(data, MAX)] == [b"a" * 300, b"", b"xyz"]


# -- replies and pushes out -------------------------------------------------------------------

PUB = Publication(b'{"k":1}', ClientInfo("alice", "c1", b'{"plan":"pro"}', None), 7, {"t": "v"})


def test_connect_reply_round_trip() -> None:
    result = {"client": "id-1", "version": "0.1.0", "expires": True, "ttl": 60, "ping": 25, "pong": True,
              "subs": {"news": {"recoverable": True, "positioned": True, "epoch": "e", "offset": 3,
                                "publications": [PUB]}}}
    for cls in (pb.Reply, sdk_pb.Reply):
        reply = one(PROTOBUF.encode_reply(1, "connect", result), cls)
        assert reply.id == 1
        connect = reply.connect
        assert (connect.client, connect.ttl, connect.ping, connect.pong) == ("id-1", 60, 25, True)
        sub = reply.connect.subs["news"]
        assert (sub.recoverable, sub.epoch, sub.offset) == (True, "e", 3)
        assert sub.publications[0].data == b'{"k":1}'
        assert sub.publications[0].info.conn_info == b'{"plan":"pro"}'


def test_empty_result_is_present() -> None:
    """SDKs need the result key even when empty (``publish {}``), so the submessage is written."""
    data = PROTOBUF.encode_reply(5, "publish", {})
    assert data == delimited(bytes([0x08, 5, 0x42, 0]))  # id=5, publish (field 8) of length 0
    assert one(data).HasField("publish")


def test_presence_history_rpc_replies() -> None:
    presence = one(PROTOBUF.encode_reply(2, "presence", {"presence": {"c1": PUB.info}}))
    assert presence.presence.presence["c1"].user == "alice"
    history = one(PROTOBUF.encode_reply(3, "history", {"publications": [PUB], "epoch": "e", "offset": 7}))
    assert [(p.offset, p.data, dict(p.tags)) for p in history.history.publications] == [(7, b'{"k":1}', {"t": "v"})]
    assert (history.history.epoch, history.history.offset) == ("e", 7)
    for value, wire in (({"a": [1]}, b'{"a":[1]}'), (b"\x00raw", b"\x00raw"),
                        (orjson.Fragment(b"{ }"), b"{ }"), (None, b"")):
        rpc = one(PROTOBUF.encode_reply(4, "rpc", {"data": value} if value is not None else {}))
        assert rpc.rpc.data == wire


def test_unencodable_rpc_result_is_107() -> None:
    with pytest.raises(ClientError) as err:
        PROTOBUF.encode_reply(4, "rpc", {"data": {1, 2}})
    assert err.value.code == 107


def test_error_reply() -> None:
    for cls in (pb.Reply, sdk_pb.Reply):
        reply = one(PROTOBUF.encode_error(6, ERROR_PERMISSION_DENIED), cls)
        assert (reply.id, reply.error.code, reply.error.message, reply.error.temporary) == (
            6, 103, "permission denied", False)


def test_ping_is_an_empty_reply() -> None:
    assert PROTOBUF.ping == b"\x00"
    assert one(PROTOBUF.ping).ListFields() == []


def test_pushes() -> None:
    pub = one(PROTOBUF.publication_push("news", PUB), sdk_pb.Reply)
    assert (pub.id, pub.push.channel, pub.push.pub.offset, pub.push.pub.data) == (0, "news", 7, b'{"k":1}')
    assert pub.push.pub.info.client == "c1"
    join = one(PROTOBUF.join_push("news", ClientInfo("u", "c2")))
    assert (join.push.join.info.user, join.push.join.info.client) == ("u", "c2")
    leave = one(PROTOBUF.leave_push("news", ClientInfo("u", "c2", None, b'"ci"')))
    assert leave.push.leave.info.chan_info == b'"ci"'
    unsub = one(PROTOBUF.encode_push("news", "unsubscribe", {"code": 2500, "reason": "insufficient state"}))
    assert (unsub.push.unsubscribe.code, unsub.push.unsubscribe.reason) == (2500, "insufficient state")
    message = one(PROTOBUF.encode_push("", "message", {"data": {"m": 1}}))
    assert (message.push.channel, message.push.message.data) == ("", b'{"m":1}')
    subscribe = one(PROTOBUF.encode_push("s", "subscribe", {"recoverable": True, "epoch": "e", "offset": 2}))
    assert (subscribe.push.subscribe.recoverable, subscribe.push.subscribe.offset) == (True, 2)


def test_data_crosses_formats_unchanged() -> None:
    """A publication's data is opaque bytes: what the JSON codec embeds is what protobuf sends."""
    pub = Publication(b'{"from":"json"}', None, 1)
    assert one(PROTOBUF.publication_push("c", pub)).push.pub.data == b'{"from":"json"}'
    assert orjson.loads(JSON.publication_push("c", pub))["push"]["pub"]["data"] == {"from": "json"}


def test_json_codec_drops_raw_newlines_from_data() -> None:
    """Data published over protobuf may hold newlines; JSON must still be one message per line
    (as Centrifugo's Raw type)."""
    pub = Publication(b'{"a":\n1}', None, 1)
    encoded = JSON.publication_push("c", pub)
    assert b"\n" not in encoded
    assert orjson.loads(encoded)["push"]["pub"]["data"] == {"a": 1}


def test_generated_module_is_current() -> None:
    """client_pb2.py/.pyi are what tools/gen_protobuf.py makes from the vendored schema."""
    if importlib.util.find_spec("grpc_tools") is None:
        pytest.skip("grpcio-tools is not installed")
    from tools.gen_protobuf import main

    assert main(["--check"]) == 0, "run: python -m tools.gen_protobuf"
