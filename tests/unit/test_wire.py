"""The memory engine's typed encoders and decoders for the bus: every pair round-trips."""

from __future__ import annotations

import orjson
import pytest

from gateway.core.model import (
    ClientInfo,
    HistoryFilter,
    HistoryResult,
    PackError,
    PresenceStats,
    Publication,
    PublishOptions,
    StreamOptions,
    StreamPosition,
    SubscribeAnswer,
    SubscribeRequest,
)
from gateway.engine import wire
from gateway.engine.wire import Op, pack_parts, unpack_parts

STREAM = StreamOptions(10, 60.5, 3600.0)
PUB = Publication(b'{"a":"\xc3\xbc"}', ClientInfo("alice", "c1", b'{"x":1}', None), 7, {"t": "v"})


def pubs(n: int) -> list[Publication]:
    return [Publication(orjson.dumps({"n": i}), ClientInfo("u", f"c{i}") if i % 2 else None, i) for i in
            range(1, n + 1)]


# -- framing --------------------------------------------------------------------------------


@pytest.mark.parametrize("parts", [[], [b""], [b"a"], [b"", b"x" * 1000, b"\x00\xff"], [b"p"] * 50])
def test_parts_roundtrip(parts: list[bytes]) -> None:
    assert unpack_parts(pack_parts(parts)) == parts


def test_parts_truncated() -> None:
    raw = pack_parts([b"hello", b"world"])
    for cut in range(1, len(raw)):
        if cut in (9, len(raw)):  # a cut between parts is a shorter valid frame
            continue
        with pytest.raises(PackError):
            unpack_parts(raw[:cut])
    assert unpack_parts(raw[:9]) == [b"hello"]


def test_parts_length_past_end() -> None:
    with pytest.raises(PackError, match="truncated part"):
        unpack_parts(b"\x00\x00\x00\x0aabc")
    with pytest.raises(PackError, match="length"):
        unpack_parts(b"\x00\x00")


def test_ops_are_distinct_small_integers() -> None:
    values = [int(op) for op in Op]
    assert len(set(values)) == len(values)
    assert all(0 < v < 256 for v in values)  # they travel in Envelope.flags (one byte)


# -- publish --------------------------------------------------------------------------------


@pytest.mark.parametrize("opts", [PublishOptions(), PublishOptions(STREAM), PublishOptions(STREAM, "key-✓")])
def test_publish_roundtrip(opts: PublishOptions) -> None:
    pub, back = wire.decode_publish(wire.encode_publish(PUB, opts))
    assert pub == PUB
    assert back == opts


def test_publish_without_info() -> None:
    pub, _ = wire.decode_publish(wire.encode_publish(Publication(b"null"), PublishOptions()))
    assert pub == Publication(b"null")


@pytest.mark.parametrize("position", [StreamPosition(0, ""), StreamPosition(2**62, "AbCdEfGh")])
def test_position_roundtrip(position: StreamPosition) -> None:
    assert wire.decode_position(wire.encode_position(position)) == position


# -- subscribe ------------------------------------------------------------------------------


@pytest.mark.parametrize("request_", [
    SubscribeRequest(),
    SubscribeRequest(STREAM, True),
    SubscribeRequest(STREAM, True, True, StreamPosition(5, "epoch"), 3),
    SubscribeRequest(STREAM, True, True, StreamPosition(0, ""), -1),
])
def test_subscribe_roundtrip(request_: SubscribeRequest) -> None:
    assert wire.decode_subscribe(wire.encode_subscribe(request_)) == request_


@pytest.mark.parametrize("answer", [
    SubscribeAnswer(),
    SubscribeAnswer(StreamPosition(9, "E")),
    SubscribeAnswer(StreamPosition(9, "E"), False),
    SubscribeAnswer(StreamPosition(9, "E"), True, []),
    SubscribeAnswer(StreamPosition(9, "E"), True, pubs(3)),
    SubscribeAnswer(StreamPosition(2, "E"), True, [PUB]),
])
def test_subscribe_answer_roundtrip(answer: SubscribeAnswer) -> None:
    assert wire.decode_subscribe_answer(wire.encode_subscribe_answer(answer)) == answer


def test_subscribe_answer_recovered_without_list_reads_back_empty() -> None:
    back = wire.decode_subscribe_answer(wire.encode_subscribe_answer(SubscribeAnswer(StreamPosition(1, "E"), True)))
    assert back.recovered is True and back.publications == []


def test_subscribe_answer_truncated() -> None:
    raw = wire.encode_subscribe_answer(SubscribeAnswer(StreamPosition(3, "E"), True, pubs(2)))
    with pytest.raises(PackError):
        wire.decode_subscribe_answer(raw[:-3])


# -- history --------------------------------------------------------------------------------


@pytest.mark.parametrize("filter_", [
    HistoryFilter(),
    HistoryFilter(-1),
    HistoryFilter(10, StreamPosition(3, "E")),
    HistoryFilter(2, StreamPosition(5, ""), True),
])
def test_history_roundtrip(filter_: HistoryFilter) -> None:
    assert wire.decode_history(wire.encode_history(filter_, STREAM)) == (filter_, STREAM)


def test_history_without_stream_options_is_refused() -> None:
    with pytest.raises(PackError):
        wire.decode_history(orjson.dumps([0, None, False, None, 0]))


@pytest.mark.parametrize("result", [
    HistoryResult(StreamPosition(0, "E"), []),
    HistoryResult(StreamPosition(5, "E"), pubs(5)),
    HistoryResult(StreamPosition(7, "E"), [PUB]),
])
def test_history_result_roundtrip(result: HistoryResult) -> None:
    assert wire.decode_history_result(wire.encode_history_result(result)) == result


def test_history_result_truncated() -> None:
    raw = wire.encode_history_result(HistoryResult(StreamPosition(2, "E"), pubs(2)))
    with pytest.raises(PackError):
        wire.decode_history_result(raw[:-1])


# -- presence -------------------------------------------------------------------------------


@pytest.mark.parametrize("entries", [
    {},
    {"c1": ClientInfo("u", "c1")},
    {"c1": ClientInfo("u", "c1", b'{"a":1}', b"[1]"), "c2": ClientInfo("v", "c2"), "c3": ClientInfo("ü", "c3")},
])
def test_presence_roundtrip(entries: dict[str, ClientInfo]) -> None:
    assert wire.decode_presence(wire.encode_presence(entries)) == entries


@pytest.mark.parametrize("stats", [PresenceStats(0, 0), PresenceStats(3, 2), PresenceStats(10**9, 1)])
def test_presence_stats_roundtrip(stats: PresenceStats) -> None:
    assert wire.decode_presence_stats(wire.encode_presence_stats(stats)) == stats
