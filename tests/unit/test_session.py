"""Session on a real one-worker Node, through a fake transport: replies, pushes, fan-out,
command ordering within one message, slow readers."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import jwt
import orjson
import pytest

from gateway.config import parse_config
from gateway.node import Node
from gateway.session.handlers import HANDLERS
from gateway.session.session import Session

CHAT = "chat:room"


class FakeTransport:
    """Records what the session sends; refuses (records) a write after close."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closes: list[tuple[int, str]] = []
        self.after_close: list[bytes] = []
        self.buffer = 0

    def send_text(self, data: bytes) -> None:
        if self.closes:
            self.after_close.append(data)
        self.sent.append(data)

    def close(self, code: int, reason: str) -> None:
        self.closes.append((code, reason))

    def write_buffer_size(self) -> int:
        return self.buffer

    def frames(self) -> list[dict[str, Any]]:
        """Every reply and push sent, in order."""
        return [orjson.loads(line) for msg in self.sent for line in msg.split(b"\n")]

    def replies(self) -> dict[int, list[dict[str, Any]]]:
        out: dict[int, list[dict[str, Any]]] = {}
        for frame in self.frames():
            if "id" in frame:
                out.setdefault(frame["id"], []).append(frame)
        return out

    def reply(self, cmd_id: int) -> dict[str, Any]:
        (frame,) = self.replies()[cmd_id]
        return frame

    def pushes(self) -> list[dict[str, Any]]:
        return [f["push"] for f in self.frames() if "push" in f]


def config() -> Any:
    return parse_config({
        "client": {"allow_anonymous_connect_without_token": True},
        "channel": {"namespaces": [{
            "name": "chat",
            "presence": True,
            "join_leave": True,
            "force_push_join_leave": True,
            "history_size": 10,
            "history_ttl": "60s",
            "force_recovery": True,
            "allow_subscribe_for_client": True,
            "allow_subscribe_for_anonymous": True,
            "allow_publish_for_client": True,
            "allow_publish_for_anonymous": True,
            "allow_history_for_subscriber": True,
            "allow_presence_for_subscriber": True,
        }]},
    })


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    n = Node(config(), 0, 1, asyncio.get_running_loop(), time.time, random.Random(0))
    yield n
    n.close()


@pytest.fixture
async def make_session(node: Node) -> AsyncIterator[Callable[..., tuple[Session, FakeTransport]]]:
    made: list[tuple[Session, FakeTransport]] = []

    def make(connect: bool = True) -> tuple[Session, FakeTransport]:
        transport = FakeTransport()
        session = Session(node, transport, HANDLERS)
        made.append((session, transport))
        if connect:
            session.on_message(b'{"id":1,"connect":{}}')
        return session, transport

    yield make
    for session, transport in made:
        assert transport.after_close == [], "send_text after close"
        session.on_transport_closed()


def cmd(cmd_id: int, method: str, **body: Any) -> bytes:
    return orjson.dumps({"id": cmd_id, method: body})


def message(*commands: bytes) -> bytes:
    return b"\n".join(commands)


async def tick() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_connect_reply_shape(make_session: Callable[..., tuple[Session, FakeTransport]]) -> None:
    session, transport = make_session()
    reply = transport.reply(1)
    assert set(reply) == {"id", "connect"}
    result = reply["connect"]
    assert isinstance(result["client"], str) and result["client"] == session.client_id
    assert isinstance(result["version"], str) and result["version"]
    assert result["ping"] == 25 and result["pong"] is True
    assert "expires" not in result
    assert session.connected and transport.closes == []


async def test_commands_before_connect_close_3501(make_session: Callable[..., tuple[Session, FakeTransport]]
                                                  ) -> None:
    session, transport = make_session(connect=False)
    session.on_message(cmd(1, "subscribe", channel=CHAT))
    assert [code for code, _ in transport.closes] == [3501]
    assert transport.sent == []
    session.on_message(cmd(2, "connect"))  # ignored once closed
    assert transport.sent == [] and len(transport.closes) == 1


async def test_second_connect_closes_3501(make_session: Callable[..., tuple[Session, FakeTransport]]) -> None:
    session, transport = make_session()
    session.on_message(cmd(2, "connect"))
    assert [code for code, _ in transport.closes] == [3501]


async def test_subscribe_publish_history_presence_unsubscribe(
        make_session: Callable[..., tuple[Session, FakeTransport]]) -> None:
    session, transport = make_session()
    session.on_message(cmd(2, "subscribe", channel=CHAT))
    sub = transport.reply(2)["subscribe"]
    assert sub["recoverable"] is True and sub["positioned"] is True
    assert sub["offset"] == 0 and len(sub["epoch"]) == 8
    session.on_message(cmd(3, "publish", channel=CHAT, data={"text": "hi"}))
    assert transport.reply(3) == {"id": 3, "publish": {}}
    await tick()
    assert transport.pushes()[-1] == {"channel": CHAT, "pub": {
        "data": {"text": "hi"}, "info": {"user": "", "client": session.client_id}, "offset": 1}}
    session.on_message(cmd(4, "history", channel=CHAT, limit=-1))
    history = transport.reply(4)["history"]
    assert history["epoch"] == sub["epoch"] and history["offset"] == 1
    assert [p["data"] for p in history["publications"]] == [{"text": "hi"}]
    session.on_message(message(cmd(5, "presence", channel=CHAT), cmd(6, "presence_stats", channel=CHAT)))
    me = {"user": "", "client": session.client_id}
    assert transport.reply(5)["presence"] == {"presence": {session.client_id: me}}
    assert transport.reply(6)["presence_stats"] == {"num_clients": 1, "num_users": 1}
    session.on_message(cmd(7, "unsubscribe", channel=CHAT))
    assert transport.reply(7) == {"id": 7, "unsubscribe": {}}
    session.on_message(cmd(8, "presence", channel=CHAT))  # no longer a subscriber
    assert transport.reply(8)["error"]["code"] == 103
    assert transport.closes == []


async def test_errors_for_unknown_namespace_and_double_subscribe(
        make_session: Callable[..., tuple[Session, FakeTransport]]) -> None:
    session, transport = make_session()
    session.on_message(message(cmd(2, "subscribe", channel="nope:x"), cmd(3, "subscribe", channel=CHAT),
                               cmd(4, "subscribe", channel=CHAT)))
    assert transport.reply(2)["error"]["code"] == 102
    assert "subscribe" in transport.reply(3)
    assert transport.reply(4)["error"]["code"] == 105


async def test_publication_reaches_subscribers_as_same_bytes(
        make_session: Callable[..., tuple[Session, FakeTransport]]) -> None:
    a, ta = make_session()
    b, tb = make_session()
    c, tc = make_session()
    a.on_message(cmd(2, "subscribe", channel=CHAT))
    b.on_message(cmd(2, "subscribe", channel=CHAT))
    await tick()
    sent_a, sent_b = len(ta.sent), len(tb.sent)
    c.on_message(cmd(2, "publish", channel=CHAT, data=[1, 2]))
    assert tc.reply(2) == {"id": 2, "publish": {}}
    await tick()
    (push_a,) = ta.sent[sent_a:]
    (push_b,) = tb.sent[sent_b:]
    assert push_a is push_b
    assert orjson.loads(push_a)["push"]["pub"]["data"] == [1, 2]
    assert all("pub" not in p for p in tc.pushes())  # not subscribed: gets nothing


async def test_every_command_id_gets_one_reply(make_session: Callable[..., tuple[Session, FakeTransport]]) -> None:
    observer, to = make_session()
    observer.on_message(cmd(2, "subscribe", channel=CHAT))
    await tick()
    to.sent.clear()
    session, transport = make_session()
    session.on_message(message(
        cmd(2, "subscribe", channel=CHAT),
        cmd(3, "unsubscribe", channel=CHAT),
        cmd(4, "subscribe", channel=CHAT),
        cmd(5, "publish", channel=CHAT, data="x"),
        cmd(6, "presence", channel=CHAT),
        cmd(7, "presence_stats", channel=CHAT),
        cmd(8, "history", channel=CHAT, limit=-1),
    ))
    await tick()
    replies = transport.replies()
    assert sorted(replies) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert all(len(r) == 1 for r in replies.values())
    assert all("error" not in r[0] for r in replies.values()), replies
    presence = transport.reply(6)["presence"]["presence"]
    assert list(presence).count(session.client_id) == 1
    assert set(presence) == {session.client_id, observer.client_id}
    assert transport.reply(7)["presence_stats"]["num_clients"] == 2
    # The observer saw the joins and leaves in command order: present once at the end.
    events = [(k, p[k]["info"]["client"]) for p in to.pushes() for k in ("join", "leave") if k in p]
    mine = [kind for kind, client in events if client == session.client_id]
    assert mine == ["join", "leave", "join"]
    assert mine.count("join") - mine.count("leave") == 1
    # A client never gets its own join.
    assert all("join" not in p for p in transport.pushes())
    assert [p["pub"]["data"] for p in to.pushes() if "pub" in p] == ["x"]


async def test_replies_of_one_message_are_one_write(make_session: Callable[..., tuple[Session, FakeTransport]]
                                                    ) -> None:
    session, transport = make_session()
    before = len(transport.sent)
    session.on_message(message(cmd(2, "subscribe", channel=CHAT), cmd(3, "history", channel=CHAT)))
    assert len(transport.sent) == before + 1  # written at the end of on_message, not a tick later
    assert sorted(transport.replies()) == [1, 2, 3]


async def test_slow_reader_closed_3008_at_default_queue(
        make_session: Callable[..., tuple[Session, FakeTransport]], node: Node) -> None:
    assert node.config.client.queue_max_size == 1048576  # the default: nothing configured
    slow, ts = make_session()
    slow.on_message(cmd(2, "subscribe", channel=CHAT))
    publisher, tp = make_session()
    await tick()
    sent = len(ts.sent)
    ts.buffer = 10 * 1024 * 1024  # the socket stopped draining
    publisher.on_message(cmd(2, "publish", channel=CHAT, data="a"))
    await tick()
    assert [code for code, _ in ts.closes] == [3008]
    assert len(ts.sent) == sent
    assert slow.closed
    publisher.on_message(cmd(3, "publish", channel=CHAT, data="b"))
    await tick()
    assert len(ts.sent) == sent and ts.after_close == []
    assert len(ts.closes) == 1
    assert tp.reply(3) == {"id": 3, "publish": {}}
    publisher.on_message(cmd(4, "presence_stats", channel=CHAT))
    assert tp.reply(4)["error"]["code"] == 103  # publisher is not subscribed
    assert node.hub.num_subscriptions() == 0  # the slow subscriber left the fan-out


async def test_slow_reader_from_the_start(make_session: Callable[..., tuple[Session, FakeTransport]]) -> None:
    session, transport = make_session(connect=False)
    transport.buffer = 1 << 40
    session.on_message(cmd(1, "connect"))
    assert [code for code, _ in transport.closes] == [3008]
    assert transport.sent == []
    session.on_message(cmd(2, "subscribe", channel=CHAT))
    assert transport.sent == [] and len(transport.closes) == 1


async def test_queue_overflow_closes_3008(make_session: Callable[..., tuple[Session, FakeTransport]]) -> None:
    slow, ts = make_session()
    slow.on_message(cmd(2, "subscribe", channel=CHAT))
    publisher, _ = make_session()
    await tick()
    sent = len(ts.sent)
    big = "x" * 300_000
    publisher.on_message(message(*(cmd(10 + i, "publish", channel=CHAT, data=big) for i in range(5))))
    await tick()
    assert [code for code, _ in ts.closes] == [3008]
    assert len(ts.sent) == sent and ts.after_close == []


# -- a refused connect registers nothing ---------------------------------------------------------

TOKEN_SECRET = "connect-refusal-secret-0123456789abcdef"


@pytest.mark.parametrize(
    ("claims", "code"),
    [
        pytest.param({"sub": "u", "exp": 1e20}, 3500, id="exp-1e20"),
        pytest.param({"sub": "u", "exp": 10**30}, 3500, id="exp-10**30"),
        pytest.param({"sub": "u", "expire_at": 1e20}, 3500, id="expire_at-1e20"),
        pytest.param({"sub": "u", "info": {"n": 2**64}}, 3500, id="info-beyond-64-bits"),
        pytest.param({"sub": "u", "channels": ["a", "b", "c"]}, 3505, id="channel-limit"),
    ],
)
async def test_refused_connect_registers_nothing(claims: dict[str, Any], code: int) -> None:


    cfg = parse_config({"client": {"token": {"hmac_secret_key": TOKEN_SECRET}, "channel_limit": 2}})
    node = Node(cfg, 0, 1, asyncio.get_running_loop(), time.time, random.Random(0))
    try:
        transport = FakeTransport()
        session = Session(node, transport, HANDLERS)
        token = jwt.encode(claims, TOKEN_SECRET, algorithm="HS256")
        session.on_message(cmd(1, "connect", token=token))
        assert transport.closes and transport.closes[0][0] == code, (transport.closes, transport.sent)
        assert transport.sent == []  # no error reply: a disconnect
        assert not session.connected
        assert len(node.hub.clients) == 0
        assert node.metrics.connections == 0 and node.metrics.connections_accepted == 0
        session.on_transport_closed()
        assert node.metrics.connections == 0
    finally:
        node.close()


async def test_dev_default_serves_any_namespace_and_production_refuses_it() -> None:
    """The embedded development default (no --config): a namespaced channel nobody configured
    works like one without a namespace; a config file's unknown namespace stays error 102."""
    from gateway.config import dev_config

    loop = asyncio.get_running_loop()
    for cfg, ok in ((dev_config("s3cret"), True), (config(), False)):
        node = Node(cfg, 0, 1, loop, time.time, random.Random(0))
        transport = FakeTransport()
        session = Session(node, transport, HANDLERS)
        try:
            session.on_message(b'{"id":1,"connect":{}}')
            channel = "news:room"
            session.on_message(cmd(2, "subscribe", channel=channel))
            if not ok:
                assert transport.reply(2)["error"]["code"] == 102
                continue
            assert transport.reply(2)["subscribe"]["recoverable"] is True
            session.on_message(cmd(3, "publish", channel=channel, data={"n": 1}))
            assert transport.reply(3) == {"id": 3, "publish": {}}
            await tick()
            session.on_message(message(cmd(4, "history", channel=channel, limit=-1),
                                       cmd(5, "presence", channel=channel)))
            assert [p["data"] for p in transport.reply(4)["history"]["publications"]] == [{"n": 1}]
            assert session.client_id in transport.reply(5)["presence"]["presence"]
            assert transport.closes == []
        finally:
            session.on_transport_closed()
            node.close()


# -- the fan-out's direct write (push_now) -------------------------------------------------------


def _with_fast_send(session: Session, transport: FakeTransport) -> list[bytes]:
    """Wire ``fast_send`` as the WebSocket transport does; what it writes is recorded apart."""
    direct: list[bytes] = []

    def send(data: bytes) -> None:
        direct.append(data)
        transport.send_text(data)

    session.set_fast_send(send, 64 * 1024)
    return direct


async def test_fan_out_writes_straight_through_one_frame_per_tick(
        make_session: Callable[..., tuple[Session, FakeTransport]]) -> None:
    sub, ts = make_session()
    sub.on_message(cmd(2, "subscribe", channel=CHAT))
    await tick()
    direct = _with_fast_send(sub, ts)
    assert sub.push_now is not None
    publisher, _ = make_session()
    publisher.on_message(message(*(cmd(10 + i, "publish", channel=CHAT, data=i) for i in range(3))))
    await tick()
    (frame,) = direct  # the three publications of the tick, as one message, not through the queue
    assert [orjson.loads(line)["push"]["pub"]["data"] for line in frame.split(b"\n")] == [0, 1, 2]


async def test_fan_out_queues_behind_held_pushes_and_while_paused(
        make_session: Callable[..., tuple[Session, FakeTransport]]) -> None:
    sub, ts = make_session()
    sub.on_message(cmd(2, "subscribe", channel=CHAT))
    await tick()
    direct = _with_fast_send(sub, ts)  # what reaches the socket, queued or not
    publisher, _ = make_session()

    def pubs() -> list[str]:
        return [p["pub"]["data"] for p in ts.pushes() if "pub" in p]

    sub.hold_pushes()
    assert sub.push_now is None
    publisher.on_message(cmd(10, "publish", channel=CHAT, data="held"))
    await tick()
    assert direct == [] and pubs() == []
    sub.release_pushes()
    await tick()
    assert pubs() == ["held"]
    assert sub.push_now is not None  # armed again once the queue is empty

    sub.pause()  # the socket is above its high-water mark
    sent = len(direct)
    publisher.on_message(cmd(11, "publish", channel=CHAT, data="paused"))
    await tick()
    assert len(direct) == sent and pubs() == ["held"]  # nothing written while paused
    sub.resume()
    assert sub.push_now is None  # the queued one goes first
    await tick()
    assert pubs() == ["held", "paused"]
    assert sub.push_now is not None
    publisher.on_message(cmd(12, "publish", channel=CHAT, data="direct"))
    await tick()
    assert pubs() == ["held", "paused", "direct"] and b'"direct"' in direct[-1]


async def test_paused_subscriber_is_still_bounded_at_the_default_queue(
        make_session: Callable[..., tuple[Session, FakeTransport]], node: Node) -> None:
    assert node.config.client.queue_max_size == 1048576
    slow, ts = make_session()
    slow.on_message(cmd(2, "subscribe", channel=CHAT))
    await tick()
    direct = _with_fast_send(slow, ts)
    slow.pause()  # and it never resumes
    publisher, _ = make_session()
    big = "x" * 300_000
    for i in range(4):
        publisher.on_message(cmd(10 + i, "publish", channel=CHAT, data=big))
        await tick()
    assert [code for code, _ in ts.closes] == [3008]
    assert direct == [] and slow.closed and slow.push_now is None


async def test_closed_session_is_never_written_through(
        make_session: Callable[..., tuple[Session, FakeTransport]]) -> None:
    sub, ts = make_session()
    sub.on_message(cmd(2, "subscribe", channel=CHAT))
    await tick()
    _with_fast_send(sub, ts)
    sub.on_transport_closed()
    assert sub.push_now is None
    sub.set_fast_send(lambda data: None, 64 * 1024)  # a late wiring does not arm a closed session
    assert sub.push_now is None


# -- the request path's direct reply ---------------------------------------------------------------


async def test_only_command_is_answered_straight_through_and_a_batch_in_one_write(
        make_session: Callable[..., tuple[Session, FakeTransport]], node: Node) -> None:
    session, transport = make_session()
    direct = _with_fast_send(session, transport)
    session.on_message(cmd(2, "subscribe", channel=CHAT))
    assert [orjson.loads(d)["id"] for d in direct] == [2]  # written while handled, not queued
    assert session.push_now is not None  # and the queue is still bypassed for pushes
    session.on_message(message(cmd(3, "history", channel=CHAT), cmd(4, "presence", channel=CHAT)))
    assert [sorted(orjson.loads(line)["id"] for line in d.split(b"\n")) for d in direct[1:]] == [[3, 4]]
    # Two commands of 20 bytes in a 41-byte message: its bytes count once.
    before = node.metrics.bytes_in
    data = message(cmd(5, "history", channel=CHAT), cmd(6, "history", channel=CHAT))
    session.on_message(data)
    assert node.metrics.bytes_in - before == len(data)
    assert node.metrics.snapshot()["messages_out"]["reply"] >= 6


async def test_direct_reply_waits_behind_what_is_queued(
        make_session: Callable[..., tuple[Session, FakeTransport]]) -> None:
    session, transport = make_session()
    direct = _with_fast_send(session, transport)
    session.pause()  # the socket is full: the reply must queue, in order, until it drains
    session.on_message(cmd(2, "subscribe", channel=CHAT))
    assert direct == [] and session.push_now is None
    session.resume()
    await tick()
    assert [orjson.loads(line)["id"] for d in direct for line in d.split(b"\n")] == [2]


async def test_rpc_handlers_get_one_context_per_session_until_conn_info_changes(node: Node) -> None:
    seen: list[Any] = []

    def record(ctx: Any, data: Any) -> Any:
        seen.append(ctx)
        return data

    node.rpc.register("record", record)
    session = Session(node, FakeTransport(), HANDLERS)
    session.on_message(b'{"id":1,"connect":{}}')
    session.on_message(b'{"id":2,"rpc":{"method":"record","data":1}}')
    session.on_message(b'{"id":3,"rpc":{"method":"record","data":2}}')
    session.set_conn_info({"plan": "pro"})
    session.on_message(b'{"id":4,"rpc":{"method":"record","data":3}}')
    assert seen[0] is seen[1] and seen[2] is not seen[0]
    assert (seen[0].client, seen[2].conn_info) == (session.client_id, {"plan": "pro"})
    with pytest.raises(AttributeError):
        seen[0].user = "someone else"  # frozen: shared by the session's calls
    session.on_transport_closed()


async def test_direct_reply_is_bounded_by_the_default_queue(
        make_session: Callable[..., tuple[Session, FakeTransport]], node: Node) -> None:
    """A reply that could take the socket past client.queue_max_size (1 MiB by default) goes
    through the queue, which closes the connection 3008, as it did before replies went direct."""
    limit = node.config.client.queue_max_size
    assert limit == 1024 * 1024
    node.rpc.register("sized", lambda ctx, data: "x" * data)
    session, transport = make_session()
    direct = _with_fast_send(session, transport)
    small = limit - 64 * 1024 - 100  # with the socket's 64 KiB high-water mark, within the bound
    session.on_message(b'{"id":2,"rpc":{"method":"sized","data":%d}}' % small)
    assert len(direct) == 1 and transport.closes == []
    session.on_message(b'{"id":3,"rpc":{"method":"sized","data":%d}}' % limit)
    assert len(direct) == 1  # not written through
    assert [code for code, _ in transport.closes] == [3008]
