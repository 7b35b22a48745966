"""Centrifugo JSON protocol: command decoding (with a golden file of SDK frames) and encoding."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.core.errors import (
    ERROR_TOO_MANY_REQUESTS,
    ERROR_UNKNOWN_CHANNEL,
    ClientError,
    Disconnect,
)
from gateway.protocol.centrifuge_json import (
    METHODS,
    PING,
    Command,
    client_info,
    decode_commands,
    encode_error,
    encode_publication,
    encode_push,
    encode_reply,
    push_prefix,
)

GOLDEN = Path(__file__).with_name("golden_frames.json")
MAX = 100


def _disconnect(data: bytes, max_commands: int = MAX) -> Disconnect:
    with pytest.raises(Disconnect) as info:
        decode_commands(data, max_commands)
    return info.value


# -- golden SDK frames -----------------------------------------------------------------------

_GOLDEN: list[dict[str, Any]] = json.loads(GOLDEN.read_text(encoding="utf-8"))


def test_golden_file_is_well_formed() -> None:
    assert len(_GOLDEN) >= 7
    for entry in _GOLDEN:
        assert set(entry) >= {"command", "method", "id"}
        assert entry["method"] in METHODS or entry["method"] == ""
        assert "\n" not in entry["command"]


@pytest.mark.parametrize("entry", _GOLDEN, ids=lambda e: e["command"][:40])
def test_golden_frame_decodes(entry: dict[str, Any]) -> None:
    (cmd,) = decode_commands(entry["command"].encode("utf-8"), MAX)
    assert cmd.method == entry["method"]
    assert cmd.id == entry["id"]
    if "body" in entry:
        assert cmd.body == entry["body"]
    assert isinstance(cmd.body, dict)


def test_golden_frames_batched_in_one_message() -> None:
    data = b"\n".join(entry["command"].encode("utf-8") for entry in _GOLDEN)
    cmds = decode_commands(data, MAX)
    assert [(c.method, c.id) for c in cmds] == [(e["method"], e["id"]) for e in _GOLDEN]


# -- decode_commands -------------------------------------------------------------------------


def test_single_command() -> None:
    assert decode_commands(b'{"id":1,"connect":{"name":"js"}}', MAX) == [
        Command(1, "connect", {"name": "js"})
    ]


def test_batched_commands() -> None:
    data = b'{"id":1,"subscribe":{"channel":"a"}}\n{"id":2,"subscribe":{"channel":"b"}}\n{"id":3,"ping":{}}'
    cmds = decode_commands(data, MAX)
    assert [(c.id, c.method) for c in cmds] == [(1, "subscribe"), (2, "subscribe"), (3, "ping")]
    assert cmds[1].body == {"channel": "b"}


def test_trailing_newline_ignored() -> None:
    cmds = decode_commands(b'{"id":1,"ping":{}}\n', MAX)
    assert cmds == [Command(1, "ping", {})]


def test_trailing_newline_within_limit() -> None:
    assert len(decode_commands(b'{"id":1,"ping":{}}\n', 1)) == 1


def test_blank_line_between_commands_is_bad_request() -> None:
    # Centrifugo's decoder: exactly one \n between commands, at most one at the end.
    assert _disconnect(b'{"id":1,"ping":{}}\n  \n{"id":2,"ping":{}}', MAX).code == 3501
    assert _disconnect(b'{"id":1,"ping":{}}\n\n', MAX).code == 3501


def test_carriage_return_is_json_whitespace() -> None:
    cmds = decode_commands(b'{"id":1,"ping":{}}\r\n{"id":2,"ping":{}}\r\n', MAX)
    assert [c.id for c in cmds] == [1, 2]


def test_empty_message_gives_no_commands() -> None:
    assert decode_commands(b"", MAX) == []


def test_empty_object_is_pong() -> None:
    assert decode_commands(b"{}", MAX) == [Command(0, "", {})]
    assert decode_commands(PING, MAX) == [Command(0, "", {})]


def test_send_without_id() -> None:
    assert decode_commands(b'{"send":{"data":{"a":1}}}', MAX) == [Command(0, "send", {"data": {"a": 1}})]


def test_explicit_zero_id_allowed() -> None:
    assert decode_commands(b'{"id":0,"send":{"data":1}}', MAX)[0].id == 0


def test_max_id_allowed() -> None:
    assert decode_commands(b'{"id":4294967295,"ping":{}}', MAX)[0].id == 2**32 - 1


def test_too_many_commands() -> None:
    data = b"\n".join([b'{"id":%d,"ping":{}}' % i for i in range(1, 5)])
    assert len(decode_commands(data, 4)) == 4
    exc = _disconnect(data, 3)
    assert exc.code == 3501
    assert not exc.reconnect


def test_too_many_commands_with_many_blank_lines() -> None:
    exc = _disconnect(b"\n" * 50, 3)
    assert exc.code == 3501


@pytest.mark.parametrize(
    "data",
    [
        b"{",
        b'{"id":1,',
        b"not json",
        b'{"id":1,"ping":{}} garbage',
        b'{"id":1}{"id":2}',
        b"{'id':1}",
        b'{"id":NaN}',
    ],
)
def test_malformed_json(data: bytes) -> None:
    exc = _disconnect(data)
    assert exc.code == 3501


def test_malformed_second_line() -> None:
    assert _disconnect(b'{"id":1,"ping":{}}\n{oops').code == 3501


@pytest.mark.parametrize(
    "data",
    [
        b'{"id":1,"publish":{"channel":"a","data":"\xff"}}',
        b"\xff\xfe",
        b'{"id":1,"ping":{}}\n{"send":{"data":"\xc3\x28"}}',
        b'{"send":{"data":"\xed\xa0\x80"}}',  # UTF-8 encoded surrogate
    ],
)
def test_invalid_utf8_is_1007(data: bytes) -> None:
    exc = _disconnect(data)
    assert exc.code == 1007


@pytest.mark.parametrize("data", [b"[]", b"[1,2]", b"1", b'"str"', b"null", b"true"])
def test_non_object_command(data: bytes) -> None:
    assert _disconnect(data).code == 3501


@pytest.mark.parametrize(
    "id_json",
    [b'"1"', b"1.0", b"1.5", b"-1", b"4294967296", b"99999999999999999999", b"true", b"false",
     b"null", b"[1]", b"{}"],
)
def test_bad_id(id_json: bytes) -> None:
    exc = _disconnect(b'{"id":' + id_json + b',"ping":{}}')
    assert exc.code == 3501


@pytest.mark.parametrize(
    "data",
    [
        b'{"id":1,"foo":{}}',
        b'{"foo":{}}',
        b'{"id":1,"Connect":{}}',
        b'{"id":1,"method":0,"params":{}}',  # protocol v1 shape
    ],
)
def test_unknown_method(data: bytes) -> None:
    assert _disconnect(data).code == 3501


@pytest.mark.parametrize("value", [b"1", b'"x"', b"[]", b"true"])
def test_request_must_be_object(value: bytes) -> None:
    assert _disconnect(b'{"id":1,"publish":' + value + b"}").code == 3501


def test_first_non_null_method_wins() -> None:
    data = b'{"id":1,"connect":null,"subscribe":{"channel":"x"},"publish":{"channel":"y"}}'
    (cmd,) = decode_commands(data, MAX)
    assert cmd == Command(1, "subscribe", {"channel": "x"})


def test_method_priority_follows_proto_order_not_key_order() -> None:
    (cmd,) = decode_commands(b'{"id":1,"publish":{"channel":"y"},"subscribe":{"channel":"x"}}', MAX)
    assert cmd.method == "subscribe"


def test_null_body_only_is_unknown() -> None:
    assert _disconnect(b'{"id":1,"connect":null}').code == 3501


# Two-key commands with the id first take a shortcut in the decoder; with the id second they go
# through the general loop. Both orders must decode alike: the same command, or the same refusal.
_TWO_KEY_IDS: list[Any] = [1, 7, 0, 2**32 - 1, 2**32, -1, True, False, None, "1", 1.0]
_TWO_KEY_METHODS = [*METHODS, "Connect", "bogus", "id2"]
_TWO_KEY_BODIES: list[Any] = [{}, {"channel": "x"}, None, [], 1, "x", True]


def _decoded(obj_json: bytes) -> Command | tuple[int, str]:
    try:
        (cmd,) = decode_commands(obj_json, MAX)
    except Disconnect as exc:
        return (exc.code, exc.reason)
    return cmd


@pytest.mark.parametrize("cmd_id", _TWO_KEY_IDS, ids=repr)
@pytest.mark.parametrize("method", _TWO_KEY_METHODS)
def test_two_key_command_decodes_alike_in_either_key_order(cmd_id: Any, method: str) -> None:
    for body in _TWO_KEY_BODIES:
        id_first = orjson.dumps({"id": cmd_id, method: body})
        id_second = orjson.dumps({method: body, "id": cmd_id})
        assert _decoded(id_first) == _decoded(id_second), (id_first, id_second)


def test_two_key_command_shortcut_result() -> None:
    assert decode_commands(b'{"id":3,"rpc":{"method":"echo","data":1}}', MAX, 5.0) == [
        Command(3, "rpc", {"method": "echo", "data": 1}, 5.0)]


def test_disconnect_reason_fits_close_frame() -> None:
    for data in (b"{", b"[]", b'{"id":-1}', b'{"id":1,"x":{}}'):
        assert len(_disconnect(data).reason.encode()) < 123


# -- encoding --------------------------------------------------------------------------------

EXPECTED_ENCODINGS: list[tuple[bytes, bytes]] = [
    (encode_reply(1, "publish", {}), b'{"id":1,"publish":{}}'),
    (encode_reply(2, "subscribe", {"epoch": "abc", "offset": 3, "recoverable": True}),
     b'{"id":2,"subscribe":{"epoch":"abc","offset":3,"recoverable":true}}'),
    (encode_reply(4294967295, "ping", {}), b'{"id":4294967295,"ping":{}}'),
    (encode_error(3, ERROR_UNKNOWN_CHANNEL), b'{"id":3,"error":{"code":102,"message":"unknown channel"}}'),
    (encode_error(5, ERROR_TOO_MANY_REQUESTS),
     b'{"id":5,"error":{"code":111,"message":"too many requests","temporary":true}}'),
    (encode_push("news", "pub", b'{"data":1}'), b'{"push":{"channel":"news","pub":{"data":1}}}'),
    (encode_push("", "disconnect", b'{"code":3001,"reason":"shutdown"}'),
     b'{"push":{"disconnect":{"code":3001,"reason":"shutdown"}}}'),
    (encode_publication({"x": 1}), b'{"data":{"x":1}}'),
    (encode_publication({"x": 1}, 7), b'{"data":{"x":1},"offset":7}'),
    (encode_publication("s", 2, client_info("u", "c"), {"t": "v"}),
     b'{"data":"s","info":{"user":"u","client":"c"},"offset":2,"tags":{"t":"v"}}'),
    (push_prefix("news"), b'{"push":{"channel":"news",'),
    (PING, b"{}"),
]


@pytest.mark.parametrize(("actual", "expected"), EXPECTED_ENCODINGS, ids=lambda v: v[:30].decode())
def test_expected_encodings(actual: bytes, expected: bytes) -> None:
    assert actual == expected


def test_encode_reply_shape() -> None:
    out = encode_reply(9, "history", {"publications": [], "epoch": "e", "offset": 0})
    assert orjson.loads(out) == {"id": 9, "history": {"publications": [], "epoch": "e", "offset": 0}}


def test_encode_error_shape() -> None:
    out = encode_error(1, ClientError(1000, "custom", temporary=False))
    assert orjson.loads(out) == {"id": 1, "error": {"code": 1000, "message": "custom"}}
    out = encode_error(1, ClientError(1001, "tmp", temporary=True))
    assert orjson.loads(out)["error"]["temporary"] is True


def test_encode_push_shape_and_escaping() -> None:
    channel = 'we"ird\\chan\nnel'
    out = encode_push(channel, "join", orjson.dumps({"info": {"user": "u", "client": "c"}}))
    assert orjson.loads(out) == {"push": {"channel": channel, "join": {"info": {"user": "u", "client": "c"}}}}
    assert b"\n" not in out


def test_encode_publication_zero_fields_omitted() -> None:
    assert orjson.loads(encode_publication(None)) == {"data": None}
    pub = orjson.loads(encode_publication({"a": 1}, 0, None, {}))
    assert pub == {"data": {"a": 1}}
    assert "offset" not in pub and "info" not in pub and "tags" not in pub


def test_encode_publication_full() -> None:
    info = client_info("u1", "c1", {"name": "x"}, {"role": "y"})
    pub = orjson.loads(encode_publication([1, 2], 42, info, {"k": "v"}))
    assert pub == {
        "data": [1, 2],
        "offset": 42,
        "info": {"user": "u1", "client": "c1", "conn_info": {"name": "x"}, "chan_info": {"role": "y"}},
        "tags": {"k": "v"},
    }


def test_client_info_minimal() -> None:
    assert client_info("", "c") == {"user": "", "client": "c"}


def test_no_raw_newline_in_any_output() -> None:
    nasty = {"s": "line1\nline2\r\n", "list": ["\n", "\u2028"], "nested": {"k\n": "v\n"}}
    info = client_info("user\n", "client\n", {"a": "\n"}, {"b": "\n"})
    outputs = [
        encode_reply(1, "rpc", {"data": nasty}),
        encode_error(1, ClientError(1000, "bad\nthing")),
        encode_publication(nasty, 3, info, {"t": "a\nb"}),
        encode_push("chan\n", "pub", encode_publication(nasty)),
        encode_push("", "message", orjson.dumps({"data": nasty})),
        push_prefix("\n"),
    ]
    for out in outputs:
        assert b"\n" not in out
        assert b"\r" not in out
    # ...so any batch of them splits back on newlines.
    batch = b"\n".join(outputs[:5])
    assert len(batch.split(b"\n")) == 5
    for part in batch.split(b"\n"):
        orjson.loads(part)


def test_reply_round_trips_through_decoder_shape() -> None:
    # A reply is itself a JSON object line; a batch of replies is newline-joined objects.
    replies = [encode_reply(i, "ping", {}) for i in range(1, 4)]
    parsed = [orjson.loads(line) for line in b"\n".join(replies).split(b"\n")]
    assert [p["id"] for p in parsed] == [1, 2, 3]
