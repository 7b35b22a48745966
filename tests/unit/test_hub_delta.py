"""Hub fan-out to subscribers that negotiated fossil deltas: the payload forms each one gets,
and the rule that a publication is encoded once per (codec, whole-or-delta) and its delta
made once, whatever the number of subscribers."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.core import delta, fossil
from gateway.core.model import ClientInfo, DeltaPayload, Publication, StreamPosition
from gateway.hub import Hub
from gateway.protocol import client_pb2 as pb
from gateway.protocol.centrifuge_json import JSON
from gateway.protocol.centrifuge_protobuf import PROTOBUF, split_delimited
from gateway.protocol.codec import Codec
from tests.unit.test_hub import FakeSub

CH = "prices"


class Counting:
    """A real codec that records what it was asked to encode."""

    def __init__(self, inner: Codec) -> None:
        self.inner = inner
        self.name = inner.name
        self.binary = inner.binary
        self.calls: list[tuple[str, int]] = []

    def publication_push(self, channel: str, pub: Publication) -> bytes:
        self.calls.append(("plain", pub.offset))
        return self.inner.publication_push(channel, pub)

    def delta_publication_push(self, channel: str, payload: DeltaPayload) -> bytes:
        self.calls.append(("delta" if payload.delta else "whole", payload.pub.offset))
        return self.inner.delta_publication_push(channel, payload)

    def join_push(self, channel: str, info: ClientInfo) -> bytes:  # pragma: no cover - no joins here
        return self.inner.join_push(channel, info)

    def leave_push(self, channel: str, info: ClientInfo) -> bytes:  # pragma: no cover
        return self.inner.leave_push(channel, info)


def doc(i: int) -> bytes:
    """Version ``i`` of a document: each version changes one row."""
    return orjson.dumps({"seq": i, "rows": [{"id": k, "v": i if k == i % 30 else k} for k in range(30)]})


def pub(i: int, offset: int = 0, marked: bool = True) -> Publication:
    return Publication(doc(i), None, offset, None, marked)


def deliver(hub: Hub, p: Publication, epoch: str = "E") -> None:
    hub.handle_publication(CH, p, StreamPosition(p.offset, epoch) if p.offset else None)


def json_pubs(sub: FakeSub) -> list[dict[str, Any]]:
    return [orjson.loads(w)["push"]["pub"] for w in sub.writes]


def reconstruct_json(sub: FakeSub) -> list[bytes]:
    """What centrifuge-js does with the pubs a JSON delta subscriber got."""
    out: list[bytes] = []
    prev = b""
    for p in json_pubs(sub):
        raw = p["data"].encode()
        prev = fossil.apply(prev, raw) if p.get("delta") else raw
        out.append(prev)
    return out


def reconstruct_protobuf(sub: FakeSub) -> list[bytes]:
    out: list[bytes] = []
    prev = b""
    for w in sub.writes:
        for raw in split_delimited(w, 100):
            reply = pb.Reply()
            reply.ParseFromString(bytes(raw))
            p = reply.push.pub
            prev = fossil.apply(prev, p.data) if p.delta else p.data
            out.append(prev)
    return out


@pytest.fixture
def hub() -> Hub:
    return Hub()


def test_each_form_encoded_once_per_codec_and_the_delta_made_once(hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[int] = []
    real = delta.patch

    def counting_patch(prev: bytes, data: bytes) -> delta.Patch | None:
        made.append(len(data))
        return real(prev, data)

    monkeypatch.setattr(delta, "patch", counting_patch)
    js, pbc = Counting(JSON), Counting(PROTOBUF)
    js_delta = [FakeSub(f"j{i}", codec=js) for i in range(3)]
    pb_delta = [FakeSub(f"p{i}", codec=pbc) for i in range(2)]
    plain = [FakeSub(f"x{i}", codec=js) for i in range(2)]
    for s in js_delta + pb_delta:
        hub.subscribe(CH, s, False, None, deltas=True)
    for s in plain:
        hub.subscribe(CH, s, False, None)

    deliver(hub, pub(1))  # everyone is fresh: whole payloads, nothing to make a delta from
    assert sorted(js.calls) == [("plain", 0), ("whole", 0)] and pbc.calls == [("whole", 0)]
    assert made == []
    js.calls.clear()
    pbc.calls.clear()

    deliver(hub, pub(2))
    assert sorted(js.calls) == [("delta", 0), ("plain", 0)] and pbc.calls == [("delta", 0)]
    assert len(made) == 1
    js.calls.clear()
    pbc.calls.clear()

    late = FakeSub("late", codec=js)
    hub.subscribe(CH, late, False, None, deltas=True)
    deliver(hub, pub(3))  # the late one gets it whole, the others the delta
    assert sorted(js.calls) == [("delta", 0), ("plain", 0), ("whole", 0)] and pbc.calls == [("delta", 0)]
    assert len(made) == 2
    assert json_pubs(late)[0].get("delta") is None

    for s in js_delta:
        assert reconstruct_json(s) == [doc(1), doc(2), doc(3)]
        assert [p.get("delta", False) for p in json_pubs(s)] == [False, True, True]
    for s in pb_delta:
        assert reconstruct_protobuf(s) == [doc(1), doc(2), doc(3)]
    for s in plain:
        assert [orjson.dumps(p["data"]) for p in json_pubs(s)] == [doc(1), doc(2), doc(3)]
        assert all("delta" not in p for p in json_pubs(s))
    assert reconstruct_json(late) == [doc(3)]
    sent = hub.stats.snapshot()
    assert sent["messages_out"]["publication_delta"] == 2 * 5


def test_positioned_stream_reconstructs_and_counts_bytes(hub: Hub) -> None:
    sub = FakeSub("a")
    hub.subscribe(CH, sub, False, StreamPosition(0, "E"), deltas=True)
    for i in range(1, 30):
        deliver(hub, pub(i, offset=i))
    assert reconstruct_json(sub) == [doc(i) for i in range(1, 30)]
    pubs = json_pubs(sub)
    assert [p["offset"] for p in pubs] == list(range(1, 30))
    assert sum(1 for p in pubs if p.get("delta")) == 28
    out = hub.stats.snapshot()
    assert out["bytes_out"]["publication_delta"] < out["messages_out"]["publication_delta"] * len(doc(1)) // 2


def test_unmarked_publications_go_whole(hub: Hub) -> None:
    sub = FakeSub("a")
    hub.subscribe(CH, sub, False, None, deltas=True)
    deliver(hub, pub(1))
    deliver(hub, pub(2, marked=False))
    deliver(hub, pub(3))  # a delta against 2, which it got whole
    assert [p.get("delta", False) for p in json_pubs(sub)] == [False, False, True]
    assert reconstruct_json(sub) == [doc(1), doc(2), doc(3)]


def test_no_delta_across_a_gap(hub: Hub) -> None:
    sub = FakeSub("a")  # not positioned: it stays and sees the stream jump
    hub.subscribe(CH, sub, False, StreamPosition(0, "E"), deltas=True)
    deliver(hub, pub(1, offset=1))
    deliver(hub, pub(2, offset=2))
    deliver(hub, pub(4, offset=4))  # 3 never arrived: the base is unknown
    deliver(hub, pub(5, offset=5))
    assert [p.get("delta", False) for p in json_pubs(sub)] == [False, True, False, True]
    assert reconstruct_json(sub) == [doc(1), doc(2), doc(4), doc(5)]


def test_not_smaller_goes_whole(hub: Hub) -> None:
    sub = FakeSub("a")
    hub.subscribe(CH, sub, False, None, deltas=True)
    deliver(hub, Publication(b'{"a":1}', delta=True))
    deliver(hub, Publication(b'{"b":2}', delta=True))  # tiny: a delta would not be smaller
    assert [p.get("delta", False) for p in json_pubs(sub)] == [False, False]
    assert [p["data"] for p in json_pubs(sub)] == ['{"a":1}', '{"b":2}']


def test_a_delta_that_is_not_utf8_goes_whole_to_json_only(hub: Hub) -> None:
    js, pbc = FakeSub("j"), FakeSub("p", codec=PROTOBUF)
    for s in (js, pbc):
        hub.subscribe(CH, s, False, None, deltas=True)
    first = orjson.dumps({"t": "é" * 200})
    second = orjson.dumps({"t": "é" * 100 + "è" + "é" * 99})  # é and è share their first byte
    deliver(hub, Publication(first, delta=True))
    deliver(hub, Publication(second, delta=True))
    found = delta.patch(first, second)
    assert found is not None and not found.text
    assert [p.get("delta", False) for p in json_pubs(js)] == [False, False]
    assert reconstruct_json(js) == [first, second]
    assert reconstruct_protobuf(pbc) == [first, second]


def test_subscribe_after_recovery_is_primed_by_the_last_recovered(hub: Hub) -> None:
    """The reply carried publications up to the channel's top here: the next one may be a
    delta against the last of them."""
    old = FakeSub("old")
    hub.subscribe(CH, old, False, StreamPosition(0, "E"), deltas=True)
    for i in (1, 2, 3):
        deliver(hub, pub(i, offset=i))
    back = FakeSub("back")
    hub.subscribe(CH, back, False, StreamPosition(3, "E"), deltas=True, last=pub(3, offset=3))
    fresh = FakeSub("fresh")
    hub.subscribe(CH, fresh, False, StreamPosition(3, "E"), deltas=True)
    deliver(hub, pub(4, offset=4))
    assert json_pubs(back)[0].get("delta") is True
    assert fossil.apply(doc(3), json_pubs(back)[0]["data"].encode()) == doc(4)
    assert json_pubs(fresh)[0].get("delta") is None and reconstruct_json(fresh) == [doc(4)]


def test_recovered_publications_are_a_delta_chain() -> None:
    pubs = [pub(i, offset=i, marked=False) for i in range(1, 6)]
    items = delta.recovered(pubs, text=True)
    assert [i.delta for i in items] == [False, True, True, True, True]
    prev = b""
    for item in items:
        prev = fossil.apply(prev, item.data) if item.delta else item.data
        assert prev == item.pub.data
    encoded = orjson.loads(JSON.encode_reply(1, "subscribe", {"publications": items}))
    assert encoded["subscribe"]["publications"][1]["delta"] is True
    assert isinstance(encoded["subscribe"]["publications"][0]["data"], str)
