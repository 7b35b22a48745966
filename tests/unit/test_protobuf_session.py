"""Sessions speaking protobuf on a real one-worker Node (fake transport), next to JSON ones:
every command over protobuf, data crossing between the formats unchanged, errors and
disconnects with the JSON path's codes, and one encode per codec per publication."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from google.protobuf.internal.decoder import _DecodeVarint32

from gateway.node import Node
from gateway.protocol import client_pb2 as pb
from gateway.protocol.centrifuge_json import JSON, JsonCodec
from gateway.protocol.centrifuge_protobuf import PROTOBUF, ProtobufCodec, delimited
from gateway.session.handlers import HANDLERS
from gateway.session.session import Session
from tests.unit.test_session import CHAT, FakeTransport, config, tick


class PbTransport(FakeTransport):
    def replies_pb(self) -> list[Any]:
        out = []
        for msg in self.sent:
            pos = 0
            while pos < len(msg):
                size, pos = _DecodeVarint32(msg, pos)
                reply = pb.Reply()
                reply.ParseFromString(msg[pos:pos + size])
                out.append(reply)
                pos += size
        return out

    def reply(self, cmd_id: int) -> Any:  # type: ignore[override]
        (reply,) = [r for r in self.replies_pb() if r.id == cmd_id]
        return reply

    def pushes(self) -> list[Any]:  # type: ignore[override]
        return [r.push for r in self.replies_pb() if r.HasField("push")]


def command(cmd_id: int, kind: str, **fields: Any) -> Any:
    cmd = pb.Command(id=cmd_id)
    request = getattr(cmd, kind)
    request.SetInParent()
    for name, value in fields.items():
        if name == "since":
            request.since.offset, request.since.epoch = value
        else:
            setattr(request, name, value)
    return cmd


def frame(*commands: Any) -> bytes:
    return b"".join(delimited(c.SerializeToString()) for c in commands)


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    n = Node(config(), 0, 1, asyncio.get_running_loop(), time.time, random.Random(0))
    n.rpc.register("echo", lambda ctx, data: data)
    n.message_handler = lambda session, data: session.push_message(data)  # as shardgate.rpc_echo sets
    yield n
    n.close()


@pytest.fixture
async def make() -> AsyncIterator[Callable[..., Any]]:
    made: list[Session] = []

    def factory(node: Node, codec: Any = PROTOBUF) -> tuple[Session, Any]:
        transport = PbTransport() if codec is PROTOBUF else FakeTransport()
        session = Session(node, transport, HANDLERS, codec)
        made.append(session)
        if codec is PROTOBUF:
            session.on_message(frame(command(1, "connect", name="test")))
        else:
            session.on_message(b'{"id":1,"connect":{}}')
        return session, transport

    yield factory
    for session in made:
        session.on_transport_closed()


async def test_every_command_over_protobuf(node: Node, make: Callable[..., Any]) -> None:
    session, t = make(node)
    connect = t.reply(1).connect
    assert connect.client == session.client_id and connect.ping == 25 and connect.pong
    # several commands in one frame, answered in order in one binary message
    t.sent.clear()
    session.on_message(frame(command(2, "subscribe", channel=CHAT),
                             command(3, "publish", channel=CHAT, data=b'{"text":"hi"}'),
                             command(4, "presence", channel=CHAT),
                             command(5, "presence_stats", channel=CHAT)))
    assert len(t.sent) == 1
    sub = t.reply(2).subscribe
    assert sub.recoverable and sub.positioned and len(sub.epoch) == 8
    assert t.reply(3).HasField("publish")
    assert list(t.reply(4).presence.presence) == [session.client_id]
    stats = t.reply(5).presence_stats
    assert (stats.num_clients, stats.num_users) == (1, 1)
    await tick()
    pub = t.pushes()[-1]
    assert (pub.channel, pub.pub.data, pub.pub.offset, pub.pub.info.client) == (
        CHAT, b'{"text":"hi"}', 1, session.client_id)
    session.on_message(frame(command(6, "history", channel=CHAT, limit=-1),
                             command(7, "history", channel=CHAT, limit=5, since=(0, sub.epoch)),
                             command(8, "rpc", method="echo", data=b'{"x":[1,2]}'),
                             command(9, "rpc", method="nope"),
                             command(10, "unsubscribe", channel=CHAT)))
    history = t.reply(6).history
    assert [(p.offset, p.data) for p in history.publications] == [(1, b'{"text":"hi"}')]
    assert (history.epoch, history.offset) == (sub.epoch, 1)
    assert [p.offset for p in t.reply(7).history.publications] == [1]
    assert t.reply(8).rpc.data == b'{"x":[1,2]}'
    assert (t.reply(9).error.code, t.reply(9).error.message) == (104, "method not found")
    assert t.reply(10).HasField("unsubscribe")
    # send: the default handler answers with a message push
    session.on_message(frame(command(0, "send", data=b"\x00binary")))
    await tick()
    assert t.pushes()[-1].message.data == b"\x00binary"
    # ping/pong: the server's ping is an empty reply; the client's pong an empty command
    session._send_ping()
    await tick()
    assert t.sent[-1] == b"\x00"
    session.on_message(delimited(b""))
    assert t.closes == []


async def test_subscribe_with_recovery_over_protobuf(node: Node, make: Callable[..., Any]) -> None:
    a, ta = make(node)
    a.on_message(frame(command(2, "subscribe", channel=CHAT)))
    epoch = ta.reply(2).subscribe.epoch
    for i in range(3):
        a.on_message(frame(command(3 + i, "publish", channel=CHAT, data=orjson.dumps({"i": i}))))
    b, tb = make(node)
    b.on_message(frame(command(2, "subscribe", channel=CHAT, recover=True, epoch=epoch, offset=1)))
    sub = tb.reply(2).subscribe
    assert sub.was_recovering and sub.recovered and sub.offset == 1
    assert [(p.offset, p.data) for p in sub.publications] == [(2, b'{"i":1}'), (3, b'{"i":2}')]


async def test_json_and_protobuf_subscribers_share_a_channel(node: Node, make: Callable[..., Any]) -> None:
    """Both kinds get every publication, whichever format published it; data is the same bytes."""
    pj, tj = make(node, JSON)
    pp, tp = make(node, PROTOBUF)
    pj.on_message(b'{"id":2,"subscribe":{"channel":"chat:room"}}')
    pp.on_message(frame(command(2, "subscribe", channel=CHAT)))
    pj.on_message(b'{"id":3,"publish":{"channel":"chat:room","data":{"from":"json"}}}')
    pp.on_message(frame(command(3, "publish", channel=CHAT, data=b'{"from":"protobuf"}')))
    await tick()
    assert [p["pub"]["data"] for p in tj.pushes() if "pub" in p] == [{"from": "json"}, {"from": "protobuf"}]
    assert [p.pub.data for p in tp.pushes() if p.HasField("pub")] == [b'{"from":"json"}', b'{"from":"protobuf"}']
    # join/leave pushes (force_push_join_leave) reach the other format too
    assert [p["join"]["info"]["client"] for p in tj.pushes() if "join" in p] == [pp.client_id]
    pj.on_message(b'{"id":4,"unsubscribe":{"channel":"chat:room"}}')
    await tick()
    assert [p.leave.info.client for p in tp.pushes() if p.HasField("leave")] == [pj.client_id]


async def test_one_encode_per_codec_per_publication(node: Node, make: Callable[..., Any],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    for cls in (JsonCodec, ProtobufCodec):
        original = cls.publication_push

        def counting(self: Any, channel: str, pub: Any, _original: Any = original) -> bytes:
            calls.append(self.name)
            result: bytes = _original(self, channel, pub)
            return result

        monkeypatch.setattr(cls, "publication_push", counting)
    sessions = [make(node, JSON) for _ in range(3)] + [make(node, PROTOBUF) for _ in range(3)]
    for session, _ in sessions:
        if session.codec is JSON:
            session.on_message(b'{"id":2,"subscribe":{"channel":"chat:room"}}')
        else:
            session.on_message(frame(command(2, "subscribe", channel=CHAT)))
    calls.clear()
    sessions[0][0].on_message(b'{"id":3,"publish":{"channel":"chat:room","data":1}}')
    await tick()
    assert sorted(calls) == ["json", "protobuf"]  # six subscribers, two encodes
    for session, t in sessions:
        if session.codec is JSON:
            assert [p["pub"]["data"] for p in t.pushes() if "pub" in p] == [1]
        else:
            assert [p.pub.data for p in t.pushes() if p.HasField("pub")] == [b"1"]


async def test_errors_and_disconnects_match_the_json_path(node: Node, make: Callable[..., Any]) -> None:
    session, t = make(node)
    session.on_message(frame(command(2, "subscribe", channel="nons:x")))
    assert t.reply(2).error.code == 102  # unknown namespace
    session.on_message(frame(command(3, "subscribe", channel=CHAT), command(4, "subscribe", channel=CHAT)))
    assert t.reply(4).error.code == 105  # already subscribed
    session.on_message(frame(command(5, "publish", channel="")))  # channel required: 3501
    assert [code for code, _ in t.closes] == [3501]

    before, tb = make(node)  # malformed protobuf
    before.on_message(b"\x05ab")
    assert [code for code, _ in tb.closes] == [3501]

    fresh = Session(node, PbTransport(), HANDLERS, PROTOBUF)  # a command before connect
    fresh.on_message(frame(command(1, "subscribe", channel=CHAT)))
    assert [code for code, _ in fresh.transport.closes] == [3501]  # type: ignore[attr-defined]
    fresh.on_transport_closed()
