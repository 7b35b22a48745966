"""Subscribing with ``delta: "fossil"`` on a real one-worker Node through a fake transport:
negotiation (allowed, not allowed, unknown type), client publishes under ``delta_publish``,
and recovered publications as a delta chain."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest

from gateway.config import ConfigError, parse_config
from gateway.core import fossil
from gateway.node import Node
from gateway.session.handlers import HANDLERS
from gateway.session.session import Session
from tests.unit.test_session import FakeTransport, cmd, tick

NS = {"history_size": 100, "history_ttl": "60s", "force_recovery": True, "allow_subscribe_for_client": True,
      "allow_subscribe_for_anonymous": True, "allow_publish_for_client": True, "allow_publish_for_anonymous": True}


def config() -> Any:
    return parse_config({
        "client": {"allow_anonymous_connect_without_token": True},
        "channel": {"namespaces": [
            {"name": "delta", "allowed_delta_types": ["fossil"], "delta_publish": True, **NS},
            {"name": "plain", **NS},
        ]},
    })


@pytest.fixture
async def make_session() -> AsyncIterator[Callable[[], tuple[Session, FakeTransport]]]:
    node = Node(config(), 0, 1, asyncio.get_running_loop(), time.time, random.Random(0))
    made: list[Session] = []

    def make() -> tuple[Session, FakeTransport]:
        transport = FakeTransport()
        session = Session(node, transport, HANDLERS)
        made.append(session)
        session.on_message(b'{"id":1,"connect":{}}')
        return session, transport

    yield make
    for session in made:
        session.on_transport_closed()
    node.close()


def doc(i: int) -> dict[str, Any]:
    return {"seq": i, "rows": [{"id": k, "v": i if k == i % 20 else k} for k in range(20)]}


def decoded(pubs: list[dict[str, Any]]) -> list[Any]:
    """What centrifuge-js makes of a delta subscriber's publications."""
    out = []
    prev = b""
    for p in pubs:
        raw = p["data"].encode()
        prev = fossil.apply(prev, raw) if p.get("delta") else raw
        out.append(orjson.loads(prev))
    return out


def test_unknown_delta_type_in_config_is_an_error() -> None:
    with pytest.raises(ConfigError, match="allowed_delta_types"):
        parse_config({"channel": {"without_namespace": {"allowed_delta_types": ["xdelta"]}}})


async def test_negotiation(make_session: Callable[[], tuple[Session, FakeTransport]]) -> None:
    session, transport = make_session()
    session.on_message(cmd(2, "subscribe", channel="delta:a", delta="fossil"))
    assert transport.reply(2)["subscribe"]["delta"] is True
    # Allowed types only: elsewhere the subscription goes on without deltas (as in Centrifugo).
    session.on_message(cmd(3, "subscribe", channel="plain:a", delta="fossil"))
    assert "delta" not in transport.reply(3)["subscribe"]
    session.on_message(cmd(4, "subscribe", channel="delta:b"))
    assert "delta" not in transport.reply(4)["subscribe"]
    session.on_message(cmd(5, "subscribe", channel="delta:c", delta="xdelta"))
    assert transport.closes == [(3501, "bad request: unknown delta type")]


async def test_client_publishes_under_delta_publish(make_session: Callable[[], tuple[Session, FakeTransport]]) -> None:
    reader, rt = make_session()
    plain, pt = make_session()
    reader.on_message(cmd(2, "subscribe", channel="delta:x", delta="fossil"))
    plain.on_message(cmd(2, "subscribe", channel="delta:x"))
    writer, _ = make_session()
    for i in range(1, 8):
        writer.on_message(cmd(10 + i, "publish", channel="delta:x", data=doc(i)))
    await tick()
    pubs = [p["pub"] for p in rt.pushes()]
    assert [p.get("delta", False) for p in pubs] == [False] + [True] * 6
    assert decoded(pubs) == [doc(i) for i in range(1, 8)]
    assert [p["pub"]["data"] for p in pt.pushes()] == [doc(i) for i in range(1, 8)]


async def test_recovery_sends_a_delta_chain_then_deltas(
        make_session: Callable[[], tuple[Session, FakeTransport]]) -> None:
    first, ft = make_session()
    first.on_message(cmd(2, "subscribe", channel="delta:r", delta="fossil"))
    epoch = ft.reply(2)["subscribe"]["epoch"]
    writer, _ = make_session()
    for i in range(1, 4):
        writer.on_message(cmd(10 + i, "publish", channel="delta:r", data=doc(i)))
    await tick()
    seen = [p["pub"] for p in ft.pushes()]
    assert decoded(seen) == [doc(1), doc(2), doc(3)]
    first.on_transport_closed()
    for i in range(4, 7):
        writer.on_message(cmd(20 + i, "publish", channel="delta:r", data=doc(i)))
    await tick()
    again, at = make_session()
    again.on_message(cmd(2, "subscribe", channel="delta:r", delta="fossil", recover=True, offset=3, epoch=epoch))
    result = at.reply(2)["subscribe"]
    assert result["recovered"] is True and result["delta"] is True
    recovered = result["publications"]
    assert [p.get("delta", False) for p in recovered] == [False, True, True]
    writer.on_message(cmd(30, "publish", channel="delta:r", data=doc(7)))
    await tick()
    live = [p["pub"] for p in at.pushes()]
    assert live[0]["delta"] is True  # against the last recovered one
    assert decoded(recovered + live) == [doc(i) for i in range(4, 8)]
