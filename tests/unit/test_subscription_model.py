"""Subscriptions against a model: random sequences of subscribe / unsubscribe / disconnect,
several commands per message, with the client on one worker and the channel's owner on
another (two real Nodes joined by an in-memory bus that keeps per-pair order, like ZeroMQ).

After every message settles: every command id got exactly one reply; the owner's presence
holds the client exactly when the model says it is subscribed; an observer on the owner's
worker saw joins and leaves alternate, ending with a join exactly when it is subscribed.
(Reliability round 2, item 4: subscribe, unsubscribe, subscribe in one message used to
lose a reply, empty the presence and show join, join, leave.)
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import parse_config
from gateway.core.model import ClientInfo
from gateway.node import Node
from gateway.session.handlers import HANDLERS
from gateway.session.session import Session
from sharding.envelope import Envelope, Kind, decode, encode, encode_batch, split_batch
from sharding.hashing import owner

CONFIG = parse_config({
    "client": {"allow_anonymous_connect_without_token": True},
    "channel": {"without_namespace": {
        "presence": True, "join_leave": True, "force_push_join_leave": True,
        "history_size": 10, "history_ttl": "60s", "force_recovery": True,
        "allow_subscribe_for_client": True, "allow_subscribe_for_anonymous": True,
    }},
})
CHANNEL = next(f"room{i}" for i in range(1000) if owner(f"room{i}", 2) == 1)


class LoopBus:
    """Delivers through the event loop in send order (per pair order, as ZeroMQ keeps it)."""

    def __init__(self, slot: int, nodes: dict[int, Node], loop: asyncio.AbstractEventLoop) -> None:
        self.endpoint = f"mem://{slot}"
        self._nodes = nodes
        self._loop = loop
        self.in_flight = 0

    def send(self, slot: int, env: Envelope) -> bool:
        frame = encode(env)  # the real wire form
        self.in_flight += 1

        def deliver() -> None:
            self.in_flight -= 1
            self._nodes[slot].router.on_envelope(decode(frame))

        self._loop.call_soon(deliver)
        return True

    def send_frames(self, slot: int, frames: list[bytes]) -> bool:
        # As ZmqBus sends them: one message, a BATCH when more than one, split on arrival.
        message = frames[0] if len(frames) == 1 else encode_batch(frames)
        self.in_flight += 1

        def deliver() -> None:
            self.in_flight -= 1
            env = decode(message)
            for frame in split_batch(env.payload) if env.kind is Kind.BATCH else [message]:
                self._nodes[slot].router.on_envelope(decode(frame))

        self._loop.call_soon(deliver)
        return True

    def connect_peer(self, slot: int, path: str) -> None:
        pass

    def send_all_to(self, path: str, envelopes: list[Envelope], timeout: float) -> bool:
        return False


class Transport:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send_text(self, data: bytes) -> None:
        self.sent.append(data)

    def close(self, code: int, reason: str) -> None:
        pass

    def write_buffer_size(self) -> int:
        return 0

    def frames(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for msg in self.sent for line in msg.split(b"\n")]


async def _settle(buses: list[LoopBus]) -> None:
    for _ in range(200):
        await asyncio.sleep(0)
        if not any(bus.in_flight for bus in buses):
            await asyncio.sleep(0)
            if not any(bus.in_flight for bus in buses):
                return
    raise AssertionError("the bus did not settle")


def _presence(node: Node) -> set[str]:
    out: dict[str, ClientInfo] = {}

    def done(result: dict[str, ClientInfo] | None, error: object) -> None:
        assert error is None and result is not None
        out.update(result)

    node.engine.presence(CHANNEL, done)  # the owner's worker: answered synchronously
    return set(out)


def _connect(node: Node) -> tuple[Session, Transport]:
    transport = Transport()
    session = Session(node, transport, HANDLERS)
    session.on_message(b'{"id":1,"connect":{}}')
    return session, transport


async def _scenario(messages: list[list[str]]) -> None:
    loop = asyncio.get_running_loop()
    nodes: dict[int, Node] = {}
    buses = []
    for slot in (0, 1):
        nodes[slot] = Node(CONFIG, slot, 2, loop, time.time, random.Random(slot))
    for slot in (0, 1):
        bus = LoopBus(slot, nodes, loop)
        buses.append(bus)
        nodes[slot].attach_bus(bus)
    await _settle(buses)
    observer, observed = _connect(nodes[1])
    observer.on_message(orjson.dumps({"id": 2, "subscribe": {"channel": CHANNEL}}))
    await _settle(buses)
    session, transport = _connect(nodes[0])
    subscribed = False
    sent_ids: list[tuple[Transport, int]] = []
    next_id = 10
    try:
        for ops in messages:
            lines = []
            for op in ops:
                if op == "disconnect":
                    break
                next_id += 1
                sent_ids.append((transport, next_id))
                lines.append(orjson.dumps({"id": next_id, op: {"channel": CHANNEL}}))
                subscribed = op == "subscribe"
            if lines:
                session.on_message(b"\n".join(lines))
            if "disconnect" in ops:
                session.on_transport_closed()
                subscribed = False
                await _settle(buses)
                session, transport = _connect(nodes[0])
            await _settle(buses)
            # Every command id: exactly one reply (at most one where the client left first).
            for t, cmd_id in sent_ids:
                replies = [f for f in t.frames() if f.get("id") == cmd_id]
                assert len(replies) == 1 if t is transport else len(replies) <= 1, (cmd_id, replies, messages)
            # Presence matches the model.
            present = _presence(nodes[1]) - {observer.client_id}
            assert present == ({session.client_id} if subscribed else set()), messages
            # The observer saw the client's joins and leaves alternate, ending in step with the model.
            events = [("join" if "join" in f["push"] else "leave", f["push"].get("join", f["push"].get("leave"))
                       ["info"]["client"]) for f in observed.frames() if "push" in f and
                      ("join" in f["push"] or "leave" in f["push"])]
            by_client: dict[str, list[str]] = {}
            for kind, client in events:
                by_client.setdefault(client, []).append(kind)
            for client, kinds in by_client.items():
                assert all(a != b for a, b in itertools.pairwise(kinds)), (client, kinds, messages)
                assert kinds[0] == "join", (client, kinds)
            current = by_client.get(session.client_id, [])
            assert (bool(current) and current[-1] == "join") == subscribed, (current, subscribed, messages)
    finally:
        for node in nodes.values():
            node.close()


OPS = st.sampled_from(["subscribe", "unsubscribe", "disconnect"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(OPS, min_size=1, max_size=4), min_size=1, max_size=6))
def test_random_subscription_sequences_match_the_model(messages: list[list[str]]) -> None:
    asyncio.run(_scenario(messages))


def test_subscribe_unsubscribe_subscribe_in_one_message() -> None:
    asyncio.run(_scenario([["subscribe", "unsubscribe", "subscribe"]]))
