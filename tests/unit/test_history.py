"""Channel streams: offsets, bounded/TTL history, reads, and the recovery predicate."""

from __future__ import annotations

import random
import string

import pytest

from gateway.core.history import HistoryItem, Stream, is_recovered, new_epoch


def _stream(size: int = 10, ttl: float = 60.0, now: float = 0.0, epoch: str = "EPOCHabc") -> Stream:
    return Stream(epoch, size, ttl, now)


def _fill(stream: Stream, count: int, now: float = 0.0) -> None:
    for _ in range(count):
        off = stream.next_offset()
        stream.append(off, b'{"data":%d,"offset":%d}' % (off, off), now)


def _offsets(items: list[HistoryItem]) -> list[int]:
    return [item.offset for item in items]


# -- append / offsets ----------------------------------------------------------------------------


def test_new_stream_is_empty_at_zero() -> None:
    s = _stream(now=5.0)
    assert s.top == 0
    assert s.next_offset() == 1
    assert len(s) == 0
    assert s.epoch == "EPOCHabc"
    assert s.touched_at == 5.0
    assert s.read(5.0, limit=-1) == []


def test_append_assigns_consecutive_offsets() -> None:
    s = _stream()
    for expected in range(1, 6):
        assert s.next_offset() == expected
        s.append(expected, b"p%d" % expected, now=float(expected))
        assert s.top == expected
        assert s.touched_at == float(expected)
    assert len(s) == 5
    assert _offsets(s.read(5.0, limit=-1)) == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("bad", [0, 2, 3, -1])
def test_append_rejects_non_consecutive_offset(bad: int) -> None:
    s = _stream()
    with pytest.raises(ValueError):
        s.append(bad, b"x", 0.0)
    assert s.top == 0
    assert len(s) == 0


def test_append_rejects_repeated_offset() -> None:
    s = _stream()
    s.append(1, b"x", 0.0)
    with pytest.raises(ValueError):
        s.append(1, b"y", 0.0)
    assert s.top == 1


def test_item_records_payload_and_history_expiry() -> None:
    s = _stream(ttl=30.0)
    s.append(1, b"payload", 100.0)
    (item,) = s.read(100.0, limit=-1)
    assert item == HistoryItem(1, b"payload")
    assert s.expires_at == 130.0


# -- read ------------------------------------------------------------------------------------


def test_read_forward_oldest_first() -> None:
    s = _stream()
    _fill(s, 5)
    assert _offsets(s.read(0.0, limit=-1)) == [1, 2, 3, 4, 5]
    assert _offsets(s.read(0.0, limit=2)) == [1, 2]
    assert _offsets(s.read(0.0, limit=100)) == [1, 2, 3, 4, 5]


def test_read_reverse_newest_first() -> None:
    s = _stream()
    _fill(s, 5)
    assert _offsets(s.read(0.0, limit=-1, reverse=True)) == [5, 4, 3, 2, 1]
    assert _offsets(s.read(0.0, limit=2, reverse=True)) == [5, 4]


def test_read_forward_since_is_exclusive() -> None:
    s = _stream()
    _fill(s, 5)
    assert _offsets(s.read(0.0, limit=-1, since=2)) == [3, 4, 5]
    assert _offsets(s.read(0.0, limit=1, since=2)) == [3]
    assert _offsets(s.read(0.0, limit=-1, since=0)) == [1, 2, 3, 4, 5]
    assert s.read(0.0, limit=-1, since=5) == []
    assert s.read(0.0, limit=-1, since=99) == []


def test_read_reverse_since_is_exclusive() -> None:
    s = _stream()
    _fill(s, 5)
    assert _offsets(s.read(0.0, limit=-1, since=4, reverse=True)) == [3, 2, 1]
    assert _offsets(s.read(0.0, limit=2, since=4, reverse=True)) == [3, 2]
    assert s.read(0.0, limit=-1, since=1, reverse=True) == []
    assert _offsets(s.read(0.0, limit=-1, since=99, reverse=True)) == [5, 4, 3, 2, 1]


@pytest.mark.parametrize("reverse", [False, True])
def test_read_limit_zero_returns_nothing(reverse: bool) -> None:
    s = _stream()
    _fill(s, 3)
    assert s.read(0.0, limit=0, reverse=reverse) == []
    assert s.read(0.0, limit=0, since=1, reverse=reverse) == []


@pytest.mark.parametrize("limit", [-1, -5])
def test_read_negative_limit_returns_all(limit: int) -> None:
    s = _stream()
    _fill(s, 7)
    assert len(s.read(0.0, limit=limit)) == 7
    assert len(s.read(0.0, limit=limit, reverse=True)) == 7


def test_read_returns_same_payload_bytes() -> None:
    s = _stream()
    payload = b'{"data":"x"}'
    s.append(1, payload, 0.0)
    assert s.read(0.0, limit=-1)[0].publication is payload


# -- size bound ------------------------------------------------------------------------------


def test_size_bound_keeps_latest() -> None:
    s = _stream(size=3)
    _fill(s, 10)
    assert s.top == 10
    assert len(s) == 3
    assert _offsets(s.read(0.0, limit=-1)) == [8, 9, 10]
    assert _offsets(s.read(0.0, limit=-1, since=2)) == [8, 9, 10]


def test_size_one() -> None:
    s = _stream(size=1)
    _fill(s, 4)
    assert _offsets(s.read(0.0, limit=-1)) == [4]


# -- TTL -------------------------------------------------------------------------------------


def test_ttl_expiry_with_injected_now() -> None:
    # As in Centrifugo, each publication renews the whole history: it expires ttl after the last one.
    s = _stream(ttl=10.0)
    s.append(1, b"a", 0.0)
    s.append(2, b"b", 5.0)
    s.append(3, b"c", 8.0)  # everything expires at 18
    assert _offsets(s.read(10.0, limit=-1)) == [1, 2, 3]
    assert _offsets(s.read(17.999, limit=-1, reverse=True)) == [3, 2, 1]
    assert s.read(18.0, limit=-1) == []  # expiry is inclusive (<= now)
    assert s.top == 3  # position survives expiry
    assert len(s) == 0


def test_each_publication_renews_the_whole_history() -> None:
    # history_ttl 6s: A at t=0, B at t=4; at t=8 both are there (A is not expired on its own).
    s = _stream(ttl=6.0)
    s.append(1, b"A", 0.0)
    s.append(2, b"B", 4.0)
    assert [i.publication for i in s.read(8.0, limit=-1)] == [b"A", b"B"]
    assert s.read(10.1, limit=-1) == []
    assert s.top == 2


def test_history_expires_ttl_after_a_single_publication() -> None:
    s = _stream(ttl=300.0)  # the default config's history_ttl
    s.append(1, b"A", 0.0)
    assert _offsets(s.read(299.9, limit=-1)) == [1]
    assert s.read(300.0, limit=-1) == []


def test_expiry_happens_even_with_limit_zero() -> None:
    s = _stream(ttl=1.0)
    _fill(s, 3, now=0.0)
    assert len(s) == 3
    assert s.read(5.0, limit=0) == []
    assert len(s) == 0


def test_append_after_expiry_continues_offsets() -> None:
    s = _stream(ttl=1.0)
    _fill(s, 2, now=0.0)
    assert s.read(100.0, limit=-1) == []
    s.append(3, b"z", 100.0)
    assert _offsets(s.read(100.0, limit=-1)) == [3]


# -- clear -----------------------------------------------------------------------------------


def test_clear_keeps_top_and_epoch() -> None:
    s = _stream()
    _fill(s, 4)
    s.clear()
    assert len(s) == 0
    assert s.top == 4
    assert s.epoch == "EPOCHabc"
    assert s.read(0.0, limit=-1) == []
    assert s.next_offset() == 5
    s.append(5, b"x", 0.0)
    assert _offsets(s.read(0.0, limit=-1)) == [5]


# -- is_recovered ----------------------------------------------------------------------------


def _items(*offsets: int) -> list[HistoryItem]:
    return [HistoryItem(o, b"p") for o in offsets]


def test_recovered_full_gap() -> None:
    assert is_recovered(_items(4, 5, 6), req_offset=3, req_epoch="E", epoch="E", top=6)


def test_recovered_nothing_missed() -> None:
    assert is_recovered([], req_offset=6, req_epoch="E", epoch="E", top=6)
    assert is_recovered([], req_offset=0, req_epoch="E", epoch="E", top=0)


def test_not_recovered_epoch_mismatch() -> None:
    assert not is_recovered(_items(4, 5, 6), req_offset=3, req_epoch="OLD", epoch="NEW", top=6)
    assert not is_recovered([], req_offset=6, req_epoch="OLD", epoch="NEW", top=6)


def test_recovered_without_client_epoch() -> None:
    # An empty requested epoch is not a mismatch (the client never saw one).
    assert is_recovered(_items(1, 2), req_offset=0, req_epoch="", epoch="E", top=2)


def test_not_recovered_empty_but_behind() -> None:
    # Everything the client missed expired or was trimmed.
    assert not is_recovered([], req_offset=3, req_epoch="E", epoch="E", top=6)


def test_not_recovered_client_ahead_of_top() -> None:
    assert not is_recovered([], req_offset=9, req_epoch="E", epoch="E", top=6)


def test_not_recovered_gap_at_start() -> None:
    # Offset 4 was trimmed by the size bound: items start at 5.
    assert not is_recovered(_items(5, 6), req_offset=3, req_epoch="E", epoch="E", top=6)


def test_not_recovered_truncated_end() -> None:
    # The read was cut by a limit: 6 is missing at the end.
    assert not is_recovered(_items(4, 5), req_offset=3, req_epoch="E", epoch="E", top=6)


def test_recovery_against_real_stream() -> None:
    s = _stream(size=3)
    _fill(s, 6)
    ok = s.read(0.0, limit=-1, since=4)
    assert is_recovered(ok, 4, s.epoch, s.epoch, s.top)
    trimmed = s.read(0.0, limit=-1, since=2)  # 3 was trimmed
    assert not is_recovered(trimmed, 2, s.epoch, s.epoch, s.top)
    limited = s.read(0.0, limit=1, since=4)
    assert not is_recovered(limited, 4, s.epoch, s.epoch, s.top)


# -- new_epoch -------------------------------------------------------------------------------


def test_new_epoch_eight_letters() -> None:
    rng = random.Random(0)
    for _ in range(100):
        epoch = new_epoch(rng)
        assert len(epoch) == 8
        assert all(c in string.ascii_letters for c in epoch)
        assert epoch.isascii()


def test_new_epoch_deterministic_for_seed() -> None:
    assert new_epoch(random.Random(42)) == new_epoch(random.Random(42))
    rng = random.Random(7)
    assert new_epoch(rng) != new_epoch(rng)
