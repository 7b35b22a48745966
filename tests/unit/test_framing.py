"""The HTTP transports' pure parts: SSE and JSON-lines framing, emulation requests, one-way
connect requests, emulated-session addresses, the one-way codec and the config tables."""

from __future__ import annotations

import json

import orjson
import pytest

from gateway.config import parse_config
from gateway.config.table import ConfigError, ConfigErrors
from gateway.core.model import ClientInfo, Publication
from gateway.protocol import client_pb2 as pb
from gateway.protocol.centrifuge_uni import UNI_JSON
from gateway.transport.framing import (
    BadRequest,
    emulation_node,
    json_lines,
    new_session_id,
    pack_forward,
    parse_emulation_request,
    slot_of_node,
    sse_events,
    uni_connect_command,
    unpack_forward,
)


def test_sse_events_one_per_message() -> None:
    assert sse_events(b'{"id":1}') == b'data: {"id":1}\n\n'
    assert sse_events(b'{"id":1}\n{}\n{"push":{}}') == b'data: {"id":1}\n\ndata: {}\n\ndata: {"push":{}}\n\n'


def test_json_lines() -> None:
    assert json_lines(b'{"id":1}\n{}') == b'{"id":1}\n{}\n'


def test_emulation_request_json() -> None:
    body = json.dumps({"session": "s1", "node": "n/0", "data": '{"id":2,"rpc":{}}'}).encode()
    req = parse_emulation_request(body, protobuf=False)
    assert (req.session, req.node, req.data) == ("s1", "n/0", b'{"id":2,"rpc":{}}')


def test_emulation_request_protobuf() -> None:
    msg = pb.EmulationRequest(session="s1", node="n/1", data=b"\x02\x08\x01")
    req = parse_emulation_request(msg.SerializeToString(), protobuf=True)
    assert (req.session, req.node, req.data) == ("s1", "n/1", b"\x02\x08\x01")


@pytest.mark.parametrize("body", [b"{", b"[]", b"null", b'{"session":"s","node":"n"}',
                                  b'{"session":"s","node":"n","data":{"id":1}}',
                                  b'{"session":"","node":"n","data":"x"}',
                                  b'{"session":"s","node":"n","data":""}',
                                  json.dumps({"session": "s" * 300, "node": "n", "data": "x"}).encode()])
def test_emulation_request_refused(body: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_emulation_request(body, protobuf=False)


def test_emulation_request_bad_protobuf() -> None:
    with pytest.raises(BadRequest):
        parse_emulation_request(b"\xff\xff\xff", protobuf=True)


def test_node_names_the_slot() -> None:
    node = emulation_node("host-12-8000", 3)
    assert slot_of_node(node, "host-12-8000", 4) == 3
    assert slot_of_node(node, "host-12-8000", 3) is None  # no such slot (any more)
    assert slot_of_node(node, "other-node", 4) is None
    assert slot_of_node("host-12-8000", "host-12-8000", 4) is None
    assert slot_of_node("host-12-8000/x", "host-12-8000", 4) is None
    assert slot_of_node("host-12-8000/99999999", "host-12-8000", 4) is None


def test_session_ids_are_random() -> None:
    ids = {new_session_id() for _ in range(100)}
    assert len(ids) == 100 and all(len(i) == 32 for i in ids)


def test_forward_payload_roundtrip() -> None:
    assert unpack_forward(pack_forward("abc", b"\x00data")) == ("abc", b"\x00data")
    with pytest.raises(BadRequest):
        unpack_forward(b"\x00\x00")


def test_uni_connect_command() -> None:
    assert orjson.loads(uni_connect_command(b'{"token":"t"}')) == {"id": 1, "connect": {"token": "t"}}
    assert orjson.loads(uni_connect_command(None)) == {"id": 1, "connect": {}}
    assert orjson.loads(uni_connect_command(b"null")) == {"id": 1, "connect": {}}
    for bad in (b"{", b"[1]", b'"t"'):
        with pytest.raises(BadRequest):
            uni_connect_command(bad)


def test_uni_codec_pushes_are_bare() -> None:
    pub = Publication(data=b'{"n":1}', offset=7)
    assert orjson.loads(UNI_JSON.publication_push("news", pub)) == {"channel": "news", "pub": {"data": {"n": 1},
                                                                                               "offset": 7}}
    info = ClientInfo("u", "c", None, None)
    assert orjson.loads(UNI_JSON.join_push("news", info)) == {"channel": "news",
                                                              "join": {"info": {"user": "u", "client": "c"}}}
    assert orjson.loads(UNI_JSON.leave_push("news", info))["leave"]["info"]["client"] == "c"
    assert orjson.loads(UNI_JSON.encode_push("", "disconnect", {"code": 3001, "reason": "shutdown"})) == {
        "disconnect": {"code": 3001, "reason": "shutdown"}}
    assert orjson.loads(UNI_JSON.encode_reply(1, "connect", {"client": "c"})) == {"connect": {"client": "c"}}
    assert UNI_JSON.ping == b"{}"


def test_transport_config_keys() -> None:
    cfg = parse_config({"http_stream": {"enabled": True, "max_request_body_size": 100},
                        "sse": {"enabled": True, "handler_prefix": "/sse"},
                        "emulation": {"handler_prefix": "/emu"},
                        "uni_websocket": {"enabled": True, "message_size_limit": 4096}})
    t = cfg.transports
    assert t.http_stream.enabled and t.http_stream.max_request_body_size == 100
    assert t.sse.handler_prefix == "/sse" and t.emulation.handler_prefix == "/emu"
    assert t.uni_websocket.message_size_limit == 4096
    assert set(t.http_prefixes()) == {"/connection/http_stream", "/sse", "/emu"}
    assert "http_stream" not in cfg.warning and "sse" not in cfg.warning
    # Keys shardgate does not read stay in the warning.
    assert "uni_websocket.compression" in parse_config({"uni_websocket": {"compression": True}}).warning
    assert parse_config({}).transports.http_prefixes() == ()


@pytest.mark.parametrize("doc", [{"sse": {"handler_prefix": "no-slash"}},
                                 {"http_stream": {"max_request_body_size": 0}},
                                 {"sse": {"enabled": True, "handler_prefix": "/api"}},
                                 {"sse": {"enabled": True, "handler_prefix": "/x"},
                                  "http_stream": {"enabled": True, "handler_prefix": "/x"}}])
def test_transport_config_refused(doc: dict[str, object]) -> None:
    with pytest.raises((ConfigError, ConfigErrors)):
        parse_config(doc)
