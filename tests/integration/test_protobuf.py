"""The ``centrifuge-protobuf`` client protocol on a real 2-worker gateway: negotiation, the
wire (BINARY frames of length-delimited messages), bad input, and JSON and protobuf SDK
clients of one channel on both workers receiving every publication, each other's data
included. The whole SDK suite also runs over protobuf (test_protocol_sdk.py, test_js_sdk.py)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from centrifuge import Client
from google.protobuf.internal.decoder import _DecodeVarint32

from gateway.protocol import client_pb2 as pb
from gateway.protocol.centrifuge_protobuf import delimited
from tests.conftest import Gateway, wait_for
from tests.integration.rawclient import OP_BINARY, OP_TEXT, RawWS
from tests.integration.sdk import ProtobufJsonClient, SubEvents, disconnect_all, slot, subscribe, token


def command(cmd_id: int, kind: str, **fields: Any) -> bytes:
    cmd = pb.Command(id=cmd_id)
    request = getattr(cmd, kind)
    request.SetInParent()
    for name, value in fields.items():
        setattr(request, name, value)
    return delimited(cmd.SerializeToString())


def parse_replies(data: bytes) -> list[Any]:
    out, pos = [], 0
    while pos < len(data):
        size, pos = _DecodeVarint32(data, pos)
        reply = pb.Reply()
        reply.ParseFromString(data[pos:pos + size])
        out.append(reply)
        pos += size
    return out


async def open_protobuf(gateway: Gateway, path: str = "", subprotocol: str | None = "centrifuge-protobuf"
                        ) -> RawWS:
    headers = RawWS.default_headers(gateway.url)
    if subprotocol:
        headers["Sec-WebSocket-Protocol"] = subprotocol
    resp, ws = await RawWS.handshake_only(gateway.url, headers, path="/connection/websocket" + path)
    assert ws is not None, resp
    return ws


async def recv_binary(ws: RawWS) -> list[Any]:
    _fin, op, payload = await ws.recv_frame()
    assert op == OP_BINARY, (op, payload)
    return parse_replies(payload)


async def test_negotiation_and_binary_wire(gateway: Gateway) -> None:
    ws = await open_protobuf(gateway)
    try:
        assert ws.handshake.headers.get("sec-websocket-protocol") == "centrifuge-protobuf"
        # connect and subscribe in one frame: both replies come back in BINARY frames
        await ws.send_frame(OP_BINARY, command(1, "connect", token=token("pb")) + command(2, "subscribe",
                                                                                           channel="pb-wire"))
        got: list[Any] = []
        while len(got) < 2:
            got += await recv_binary(ws)
        assert got[0].id == 1 and got[0].connect.client and got[0].connect.ping == 25
        assert got[1].id == 2 and got[1].HasField("subscribe")
        await ws.send_frame(OP_BINARY, command(3, "publish", channel="pb-wire", data=b"\x00\x01raw"))
        got = []
        while not any(r.HasField("push") for r in got) or not any(r.id == 3 for r in got):
            got += await recv_binary(ws)
        (push,) = [r.push for r in got if r.HasField("push")]
        assert (push.channel, push.pub.data, push.pub.info.user) == ("pb-wire", b"\x00\x01raw", "pb")
    finally:
        ws.writer.close()


async def test_query_selects_protobuf_and_json_is_preferred(gateway: Gateway) -> None:
    ws = await open_protobuf(gateway, "?format=protobuf", subprotocol=None)
    try:
        assert "sec-websocket-protocol" not in ws.handshake.headers
        await ws.send_frame(OP_BINARY, command(1, "connect", token=token("q")))
        (reply,) = await recv_binary(ws)
        assert reply.connect.client
    finally:
        ws.writer.close()
    both = await open_protobuf(gateway, subprotocol="centrifuge-json, centrifuge-protobuf")
    try:
        assert both.handshake.headers.get("sec-websocket-protocol") == "centrifuge-json"
    finally:
        both.writer.close()


async def test_text_frame_on_protobuf_connection_closes_3506(gateway: Gateway) -> None:
    ws = await open_protobuf(gateway)
    await ws.send_frame(OP_TEXT, json.dumps({"id": 1, "connect": {"token": token("t")}}).encode())
    assert (await ws.recv_close()).code == 3506


async def test_malformed_protobuf_closes_3501(gateway: Gateway) -> None:
    for payload in (b"\x05ab", b"\xff" * 12, delimited(b"\x22\x03\x22\x01\xff")):
        ws = await open_protobuf(gateway)
        await ws.send_frame(OP_BINARY, payload)
        assert (await ws.recv_close()).code == 3501, payload
    # the workers are still there: a fresh connection works
    ws = await open_protobuf(gateway)
    try:
        await ws.send_frame(OP_BINARY, command(1, "connect", token=token("after")))
        (reply,) = await recv_binary(ws)
        assert reply.connect.client
    finally:
        ws.writer.close()


async def test_json_and_protobuf_subscribers_on_both_workers(gateway: Gateway) -> None:
    """Two JSON and two protobuf SDK clients, one of each per worker slot, subscribe to one
    channel; JSON and protobuf publishers take turns: everyone gets every publication in
    order, with the same data."""
    channel = f"mixed-{uuid.uuid4().hex[:8]}"
    subscribers: list[tuple[Client, SubEvents]] = []
    try:
        for cls in (Client, ProtobufJsonClient):
            for want in (0, 1):
                for _ in range(60):
                    client = cls(gateway.url, token=token(f"{cls.__name__}-{want}"), timeout=5)
                    await client.connect()
                    await wait_for(lambda c=client: bool(c.client_id), what="connected")
                    if slot(client) == want:
                        break
                    await client.disconnect()
                else:
                    raise AssertionError(f"no {cls.__name__} connection on slot {want}")
                _, events = await subscribe(client, channel)
                subscribers.append((client, events))
        assert [(type(c).__name__, slot(c)) for c, _ in subscribers] == [
            ("Client", 0), ("Client", 1), ("ProtobufJsonClient", 0), ("ProtobufJsonClient", 1)]
        json_pub, pb_pub = subscribers[0][0], subscribers[3][0]
        assert slot(json_pub) != slot(pb_pub)
        for k in range(10):
            await (json_pub if k % 2 == 0 else pb_pub).publish(channel, {"k": k})
        await wait_for(lambda: all(len(e.pubs) == 10 for _, e in subscribers), what="every publication")
        for _, events in subscribers:
            assert events.pubs == [(k + 1, {"k": k}) for k in range(10)]
        # data is opaque bytes: what a protobuf client publishes reaches JSON clients as that JSON
        raw = b'{"raw":  [1, 2]}'
        pb_client = subscribers[2][0]
        await pb_client.publish(channel, raw)
        await wait_for(lambda: all(len(e.pubs) == 11 for _, e in subscribers), what="raw publication")
        assert {json.dumps(e.pubs[-1][1]) for _, e in subscribers} == {json.dumps({"raw": [1, 2]})}
    finally:
        await disconnect_all(*(c for c, _ in subscribers))

