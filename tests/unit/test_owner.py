"""OwnerShard: ordering, history, recovery, presence, interest and handoff, driven synchronously."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from gateway.core.errors import ClientError
from gateway.core.model import (
    ClientInfo,
    HistoryFilter,
    Publication,
    PublishOptions,
    StreamOptions,
    StreamPosition,
    SubscribeAnswer,
    SubscribeRequest,
)
from gateway.engine.owner import EMPTY_STREAM_GRACE, EMPTY_STREAMS_MAX, IDEMPOTENCY_WINDOW, OwnerShard

CH = "news"
STREAM = StreamOptions(size=10, ttl=60.0, meta_ttl=3600.0)
SHORT = StreamOptions(size=3, ttl=5.0, meta_ttl=100.0)
HISTORY = PublishOptions(STREAM)
NO_HISTORY = PublishOptions()


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeFanout:
    """Records every delivery the owner asks for."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, tuple[int, ...], Any, StreamPosition | None]] = []

    def publication(self, channel: str, slots: tuple[int, ...], pub: Publication,
                    position: StreamPosition | None) -> None:
        self.calls.append(("pub", channel, tuple(slots), pub, position))

    def join(self, channel: str, slots: tuple[int, ...], info: ClientInfo) -> None:
        self.calls.append(("join", channel, tuple(slots), info, None))

    def leave(self, channel: str, slots: tuple[int, ...], info: ClientInfo) -> None:
        self.calls.append(("leave", channel, tuple(slots), info, None))

    def pubs(self) -> list[tuple[str, tuple[int, ...], Publication, StreamPosition | None]]:
        return [(c[1], c[2], c[3], c[4]) for c in self.calls if c[0] == "pub"]

    def clear(self) -> None:
        self.calls.clear()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fanout() -> FakeFanout:
    return FakeFanout()


@pytest.fixture
def shard(clock: FakeClock, fanout: FakeFanout) -> OwnerShard:
    return OwnerShard(fanout, clock, random.Random(0))


def info(client: str, user: str = "", conn: bytes | None = None, chan: bytes | None = None) -> ClientInfo:
    return ClientInfo(user or f"user-{client}", client, conn, chan)


def pub(shard: OwnerShard, data: Any, channel: str = CH, opts: PublishOptions = HISTORY,
        who: ClientInfo | None = None, tags: dict[str, str] | None = None) -> StreamPosition:
    return shard.publish(channel, Publication(orjson.dumps(data), who, tags=tags), opts)


def sub(shard: OwnerShard, origin: int, channel: str = CH, stream: StreamOptions | None = STREAM,
        positioned: bool = False, since: StreamPosition | None = None, limit: int = -1) -> SubscribeAnswer:
    request = SubscribeRequest(stream, positioned or since is not None, since is not None, since, limit)
    return shard.subscribe(channel, origin, request)


def history(shard: OwnerShard, channel: str = CH, limit: int = -1, since: StreamPosition | None = None,
            reverse: bool = False, stream: StreamOptions = STREAM) -> tuple[StreamPosition, list[Any]]:
    result = shard.history(channel, HistoryFilter(limit, since, reverse), stream)
    return result.position, [orjson.loads(p.data) for p in result.publications]


# -- publish --------------------------------------------------------------------------------


def test_publish_consecutive_offsets_same_epoch(shard: OwnerShard) -> None:
    results = [pub(shard, {"n": i}) for i in range(5)]
    assert [r.offset for r in results] == [1, 2, 3, 4, 5]
    epochs = {r.epoch for r in results}
    assert len(epochs) == 1
    (epoch,) = epochs
    assert len(epoch) == 8 and epoch.isalpha()


def test_publish_epochs_differ_per_channel(shard: OwnerShard) -> None:
    a = pub(shard, 1, channel="a")
    b = pub(shard, 1, channel="b")
    assert a.offset == b.offset == 1
    assert a.epoch != b.epoch


def test_publish_without_subscribers_reaches_no_slot(shard: OwnerShard, fanout: FakeFanout) -> None:
    pub(shard, 1)
    assert all(slots == () for _, slots, _, _ in fanout.pubs())
    pub(shard, 1, channel="plain", opts=NO_HISTORY)
    assert [c for c in fanout.calls if c[1] == "plain"] == []
    assert shard.stats() == {"channels": 1, "streams": 1}  # only the channel with a stream keeps state


def test_publish_fans_out_to_slots_with_interest(shard: OwnerShard, fanout: FakeFanout) -> None:
    sub(shard, 0)
    sub(shard, 2)
    sub(shard, 2)
    fanout.clear()
    who = ClientInfo("u", "c9", b'{"a":1}', None)
    res = pub(shard, {"x": 1}, who=who, tags={"k": "v"})
    ((channel, slots, p, position),) = fanout.pubs()
    assert channel == CH
    assert sorted(slots) == [0, 2]
    assert position == res == StreamPosition(1, res.epoch)
    assert p.offset == 1 and p.info == who and p.tags == {"k": "v"} and orjson.loads(p.data) == {"x": 1}


def test_publish_without_history_is_positionless(shard: OwnerShard, fanout: FakeFanout) -> None:
    sub(shard, 1, channel="plain", stream=None)
    fanout.clear()
    assert pub(shard, "hi", channel="plain", opts=NO_HISTORY) == StreamPosition(0, "")
    ((channel, slots, p, position),) = fanout.pubs()
    assert (channel, slots, position, p.offset) == ("plain", (1,), None, 0)


def test_publish_disabled_stream_options_is_positionless(shard: OwnerShard) -> None:
    disabled = PublishOptions(StreamOptions(size=0, ttl=60.0, meta_ttl=60.0))
    assert pub(shard, 1, opts=disabled) == StreamPosition(0, "")
    assert shard.stats() == {"channels": 0, "streams": 0}


def test_publish_skip_history(shard: OwnerShard, fanout: FakeFanout) -> None:
    sub(shard, 1)
    pub(shard, 1)
    fanout.clear()
    assert pub(shard, 2, opts=NO_HISTORY) == StreamPosition(0, "")
    assert fanout.pubs()[0][3] is None and fanout.pubs()[0][2].offset == 0
    assert pub(shard, 3).offset == 2
    assert history(shard)[1] == [1, 3]


def test_fanout_order_matches_offsets(shard: OwnerShard, fanout: FakeFanout) -> None:
    sub(shard, 3)
    fanout.clear()
    for i in range(20):
        pub(shard, i)
    assert [position.offset for _, _, _, position in fanout.pubs() if position] == list(range(1, 21))


# -- idempotency ----------------------------------------------------------------------------


def test_idempotent_publish_returns_first_result(shard: OwnerShard, fanout: FakeFanout, clock: FakeClock) -> None:
    sub(shard, 0)
    fanout.clear()
    keyed = PublishOptions(STREAM, idempotency_key="k1")
    first = pub(shard, "a", opts=keyed)
    assert pub(shard, "a", opts=keyed) == first
    assert history(shard)[1] == ["a"]
    clock.now += IDEMPOTENCY_WINDOW - 1
    assert pub(shard, "a", opts=keyed) == first
    assert len(fanout.pubs()) == 1
    assert pub(shard, "a", channel="other", opts=keyed).offset == 1  # keys are per channel
    clock.now += 2  # the window is over: a new publication
    again = pub(shard, "a", opts=keyed)
    assert again == StreamPosition(2, first.epoch)


def test_idempotency_survives_export_import(shard: OwnerShard, clock: FakeClock) -> None:
    keyed = PublishOptions(STREAM, idempotency_key="k1")
    first = pub(shard, "a", opts=keyed)
    fanout2 = FakeFanout()
    successor = OwnerShard(fanout2, clock, random.Random(1))
    for name, doc in shard.export_channels():
        successor.import_channel(name, orjson.loads(orjson.dumps(doc)))
    assert pub(successor, "a", opts=keyed) == first
    assert fanout2.calls == []
    assert pub(successor, "b").offset == 2


# -- subscribe and recovery -----------------------------------------------------------------


def test_subscribe_not_positioned_returns_no_position(shard: OwnerShard) -> None:
    pub(shard, 1)
    assert sub(shard, 0) == SubscribeAnswer()


def test_subscribe_positioned_returns_position(shard: OwnerShard) -> None:
    r1 = sub(shard, 0, positioned=True)
    assert r1.position is not None and r1.position.offset == 0 and len(r1.position.epoch) == 8
    first = pub(shard, "a")
    pub(shard, "b")
    r2 = sub(shard, 0, positioned=True)
    assert r2.position == StreamPosition(2, first.epoch)
    assert r1.position.epoch == first.epoch and not r2.recovered and r2.publications is None


def test_subscribe_positioned_on_channel_without_history(shard: OwnerShard) -> None:
    assert sub(shard, 0, channel="plain", stream=None, positioned=True).position is None


def test_recover_missed_publications(shard: OwnerShard) -> None:
    first = sub(shard, 0, positioned=True)
    assert first.position is not None
    for i in range(1, 6):
        pub(shard, {"n": i})
    res = sub(shard, 0, since=StreamPosition(2, first.position.epoch))
    assert res.recovered is True
    assert res.position == StreamPosition(5, first.position.epoch)
    assert res.publications is not None
    assert [p.offset for p in res.publications] == [3, 4, 5]
    assert [orjson.loads(p.data) for p in res.publications] == [{"n": 3}, {"n": 4}, {"n": 5}]


def test_recover_nothing_missed(shard: OwnerShard) -> None:
    epoch = pub(shard, 1).epoch
    res = sub(shard, 0, since=StreamPosition(1, epoch))
    assert res.recovered is True and res.publications == []


def test_recover_from_zero_without_epoch(shard: OwnerShard) -> None:
    pub(shard, 1)
    pub(shard, 2)
    res = sub(shard, 0, since=StreamPosition(0, ""))
    assert res.recovered is True
    assert [orjson.loads(p.data) for p in res.publications or []] == [1, 2]


def test_recover_wrong_epoch(shard: OwnerShard) -> None:
    epoch = pub(shard, 1).epoch
    pub(shard, 2)
    res = sub(shard, 0, since=StreamPosition(1, "WRONGEPO"))
    assert res.recovered is False and res.publications is None
    assert res.position == StreamPosition(2, epoch)


def test_recover_trimmed_by_size(shard: OwnerShard) -> None:
    epoch = pub(shard, 0).epoch
    for i in range(1, 15):  # size 10: offsets 1..5 are gone
        pub(shard, i)
    assert sub(shard, 0, since=StreamPosition(2, epoch)).recovered is False
    ok = sub(shard, 0, since=StreamPosition(5, epoch))
    assert ok.recovered is True
    assert [p.offset for p in ok.publications or []] == list(range(6, 16))


def test_recover_expired_by_ttl(shard: OwnerShard, clock: FakeClock) -> None:
    epoch = pub(shard, 1).epoch
    pub(shard, 2)
    clock.now += 61
    assert sub(shard, 0, since=StreamPosition(1, epoch)).recovered is False
    same = sub(shard, 0, since=StreamPosition(2, epoch))
    assert same.recovered is True and same.position == StreamPosition(2, epoch)


def test_recover_limited_by_recovery_limit(shard: OwnerShard) -> None:
    epoch = pub(shard, 1).epoch
    for i in range(2, 6):
        pub(shard, i)
    assert sub(shard, 0, since=StreamPosition(3, epoch), limit=2).recovered is True
    assert sub(shard, 0, since=StreamPosition(2, epoch), limit=2).recovered is False


def test_history_meta_ttl_gives_new_epoch(shard: OwnerShard, clock: FakeClock) -> None:
    short = PublishOptions(SHORT)
    old = pub(shard, 1, channel="short", opts=short)
    clock.now += 50
    assert pub(shard, 2, channel="short", opts=short).epoch == old.epoch
    clock.now += 101
    res = sub(shard, 0, channel="short", stream=SHORT, since=StreamPosition(2, old.epoch))
    assert res.recovered is False
    assert res.position is not None and res.position.epoch != old.epoch and res.position.offset == 0
    assert pub(shard, 3, channel="short", opts=short) == StreamPosition(1, res.position.epoch)


# -- history --------------------------------------------------------------------------------


def test_history_epoch_mismatch(shard: OwnerShard) -> None:
    pub(shard, 1)
    with pytest.raises(ClientError) as exc:
        history(shard, limit=10, since=StreamPosition(0, "nope"))
    assert exc.value.code == 112


def test_history_reads(shard: OwnerShard) -> None:
    epoch = ""
    for i in range(1, 6):
        epoch = pub(shard, i).epoch
    assert history(shard, limit=0) == (StreamPosition(5, epoch), [])
    assert history(shard, limit=-1)[1] == [1, 2, 3, 4, 5]
    assert history(shard, limit=2, since=StreamPosition(1, epoch))[1] == [2, 3]
    assert history(shard, limit=2, since=StreamPosition(1, ""))[1] == [2, 3]
    assert history(shard, limit=2, reverse=True)[1] == [5, 4]
    assert history(shard, limit=-1, since=StreamPosition(3, epoch), reverse=True)[1] == [2, 1]


def test_history_publications_keep_offsets_info_and_tags(shard: OwnerShard) -> None:
    who = info("c1", "alice", b'{"x":1}')
    pub(shard, "a", who=who, tags={"t": "1"})
    result = shard.history(CH, HistoryFilter(-1), STREAM)
    (p,) = result.publications
    assert (p.offset, p.info, p.tags, p.data) == (1, who, {"t": "1"}, b'"a"')


def test_history_of_new_channel_creates_position(shard: OwnerShard) -> None:
    position, pubs = history(shard, channel="fresh")
    assert pubs == [] and position.offset == 0 and len(position.epoch) == 8
    assert pub(shard, 1, channel="fresh").epoch == position.epoch


def test_history_remove_keeps_position(shard: OwnerShard) -> None:
    epoch = pub(shard, 1).epoch
    pub(shard, 2)
    shard.remove_history(CH)
    assert history(shard) == (StreamPosition(2, epoch), [])
    assert pub(shard, 3) == StreamPosition(3, epoch)
    shard.remove_history("unknown-chan")
    assert shard.stats() == {"channels": 1, "streams": 1}


# -- interest, join and leave ---------------------------------------------------------------


def test_interest_counts_per_slot(shard: OwnerShard, fanout: FakeFanout) -> None:
    sub(shard, 3)
    sub(shard, 3)
    sub(shard, 1)
    shard.unsubscribe(CH, 3)
    fanout.clear()
    pub(shard, 1)
    assert sorted(fanout.pubs()[-1][1]) == [1, 3]
    shard.unsubscribe(CH, 3)
    shard.unsubscribe(CH, 1)
    fanout.clear()
    pub(shard, 2)
    assert fanout.pubs()[-1][1] == ()


def test_unsubscribe_unknown_channel_is_noop(shard: OwnerShard, fanout: FakeFanout) -> None:
    shard.unsubscribe("never", 0)
    assert fanout.calls == [] and shard.stats() == {"channels": 0, "streams": 0}


def test_channel_state_forgotten_when_idle(shard: OwnerShard) -> None:
    sub(shard, 0, channel="plain", stream=None)
    shard.add_presence("plain", 0, info("c1"))
    assert shard.stats() == {"channels": 1, "streams": 0}
    shard.unsubscribe("plain", 0)
    assert shard.stats() == {"channels": 1, "streams": 0}  # the presence entry keeps it
    shard.remove_presence("plain", "c1")
    assert shard.stats() == {"channels": 0, "streams": 0}


def test_join_and_leave_go_to_interested_slots(shard: OwnerShard, fanout: FakeFanout) -> None:
    sub(shard, 0)
    sub(shard, 5)
    shard.join(CH, info("c2", "bob"))
    shard.leave(CH, info("c1", "alice"))
    assert [(k, ch, tuple(sorted(s)), i) for k, ch, s, i, _ in fanout.calls] == [
        ("join", CH, (0, 5), info("c2", "bob")),
        ("leave", CH, (0, 5), info("c1", "alice")),
    ]


def test_join_and_leave_without_interest_go_nowhere(shard: OwnerShard, fanout: FakeFanout) -> None:
    shard.join(CH, info("c1"))
    shard.add_presence(CH, 0, info("c1"))
    shard.leave(CH, info("c1"))
    assert fanout.calls == []


# -- presence -------------------------------------------------------------------------------


def test_presence_add_get_remove(shard: OwnerShard) -> None:
    shard.add_presence(CH, 1, info("c1"))
    shard.add_presence(CH, 1, info("c2", "alice"))
    shard.add_presence(CH, 4, info("c3", "alice"))
    pres = shard.presence(CH)
    assert set(pres) == {"c1", "c2", "c3"}
    assert pres["c2"] == ClientInfo("alice", "c2")
    stats = shard.presence_stats(CH)
    assert (stats.num_clients, stats.num_users) == (3, 2)
    shard.remove_presence(CH, "c2")
    shard.remove_presence(CH, "never")
    assert set(shard.presence(CH)) == {"c1", "c3"}


def test_presence_re_add_replaces(shard: OwnerShard) -> None:
    shard.add_presence(CH, 1, info("c1", "u"))
    shard.add_presence(CH, 2, info("c1", "u", chan=b"[1]"))
    assert shard.presence(CH) == {"c1": ClientInfo("u", "c1", None, b"[1]")}
    assert shard.presence_stats(CH).num_clients == 1


def test_presence_empty_channel(shard: OwnerShard) -> None:
    assert shard.presence("nobody") == {}
    stats = shard.presence_stats("nobody")
    assert (stats.num_clients, stats.num_users) == (0, 0)
    assert shard.stats() == {"channels": 0, "streams": 0}


def test_presence_keeps_extra_info(shard: OwnerShard) -> None:
    shard.add_presence(CH, 0, info("c1", "u", b'{"a":1}', b'{"b":2}'))
    assert shard.presence(CH) == {"c1": ClientInfo("u", "c1", b'{"a":1}', b'{"b":2}')}


# -- forget_slot ----------------------------------------------------------------------------


def test_forget_slot_drops_presence_and_interest(shard: OwnerShard, fanout: FakeFanout) -> None:
    sub(shard, 1)
    shard.add_presence(CH, 1, info("a1", "alice"))
    sub(shard, 2)
    shard.add_presence(CH, 2, info("b2", "bob"))
    sub(shard, 1, channel="other", stream=None)
    shard.add_presence("other", 1, info("a1x", "alice"))
    fanout.clear()
    shard.forget_slot(1, lambda channel: True)
    assert set(shard.presence(CH)) == {"b2"}
    assert shard.presence("other") == {}
    # Only slot 2 still watches CH; nobody watches "other", so it gets no leave.
    assert [(k, ch, s, i) for k, ch, s, i, _ in fanout.calls] == [("leave", CH, (2,), info("a1", "alice"))]
    fanout.clear()
    pub(shard, 1)
    assert fanout.pubs()[-1][1] == (2,)
    assert shard.stats() == {"channels": 1, "streams": 1}  # "other" had only slot 1 and no history


def test_forget_slot_without_join_leave_sends_no_leave(shard: OwnerShard, fanout: FakeFanout) -> None:
    sub(shard, 2)
    shard.add_presence(CH, 1, info("a1"))
    fanout.clear()
    asked: list[str] = []
    shard.forget_slot(1, lambda channel: asked.append(channel) is not None)
    assert asked == [CH]
    assert fanout.calls == []
    assert shard.presence(CH) == {}


def test_forget_slot_keeps_streams(shard: OwnerShard) -> None:
    epoch = pub(shard, 1).epoch
    sub(shard, 1)
    shard.forget_slot(1, lambda channel: True)
    assert pub(shard, 2) == StreamPosition(2, epoch)


def test_forget_unknown_slot_is_noop(shard: OwnerShard, fanout: FakeFanout) -> None:
    sub(shard, 1)
    shard.add_presence(CH, 1, info("c1"))
    fanout.clear()
    shard.forget_slot(9, lambda channel: True)
    assert fanout.calls == []
    assert set(shard.presence(CH)) == {"c1"}


# -- handoff --------------------------------------------------------------------------------


def test_handoff_round_trip_continues_the_stream(shard: OwnerShard, clock: FakeClock) -> None:
    sub(shard, 0)
    sub(shard, 2)
    sub(shard, 2)
    shard.add_presence(CH, 2, info("c1", "alice", b'{"x":1}'))
    who = info("c9", "bob")
    for i in range(1, 13):  # size 10: 3..12 retained
        pub(shard, i, who=who, tags={"i": str(i)})
    pub(shard, "x", channel="short", opts=PublishOptions(SHORT))
    shard.add_presence("pres-only", 1, info("c5"))
    before = history(shard)
    docs = orjson.loads(orjson.dumps(shard.export_channels()))  # it travels as JSON

    fanout2 = FakeFanout()
    successor = OwnerShard(fanout2, clock, random.Random(42))
    for name, doc in docs:
        successor.import_channel(name, doc)
    assert successor.stats() == shard.stats() == {"channels": 3, "streams": 2}
    assert history(successor) == before
    assert [p.info for p in successor.history(CH, HistoryFilter(-1), STREAM).publications] == [who] * 10
    assert successor.presence(CH) == shard.presence(CH)
    assert successor.presence("pres-only") == {"c5": info("c5")}
    position = pub(successor, 13)
    assert position == StreamPosition(13, before[0].epoch)
    ((_, slots, p, _),) = fanout2.pubs()
    assert sorted(slots) == [0, 2] and p.offset == 13
    # Interest counts came along: slot 2 needs two unsubscribes.
    successor.unsubscribe(CH, 2)
    pub(successor, 14)
    assert sorted(fanout2.pubs()[-1][1]) == [0, 2]
    successor.unsubscribe(CH, 2)
    pub(successor, 15)
    assert fanout2.pubs()[-1][1] == (0,)
    # Retention deadlines and the meta TTL clock came along too.
    clock.now += 5.5
    assert history(successor, channel="short", stream=SHORT)[1] == []
    clock.now += 100
    assert history(successor, channel="short", stream=SHORT)[0].offset == 0


def test_handoff_recovery_after_import(shard: OwnerShard, clock: FakeClock) -> None:
    epoch = pub(shard, 1).epoch
    pub(shard, 2)
    successor = OwnerShard(FakeFanout(), clock, random.Random(7))
    for name, doc in shard.export_channels():
        successor.import_channel(name, doc)
    res = sub(successor, 0, since=StreamPosition(1, epoch))
    assert res.recovered is True
    assert [p.offset for p in res.publications or []] == [2]


# -- forgetting streams (issue "Reliability round 2", item 5) -----------------------------------

DEFAULT_META_TTL = 720 * 3600.0  # Centrifugo's history_meta_ttl default
DEFAULTS = StreamOptions(size=100, ttl=300.0, meta_ttl=DEFAULT_META_TTL)  # the README's example namespace


def sweep_all(shard: OwnerShard, now: float) -> int:
    dropped = total = shard.sweep(now, 1000)
    while dropped:
        dropped = shard.sweep(now, 1000)
        total += dropped
    return total


def test_history_reads_of_unpublished_channels_leave_no_state(shard: OwnerShard, clock: FakeClock) -> None:
    for i in range(5000):
        position, pubs = history(shard, channel=f"never-{i}", limit=0, stream=DEFAULTS)
        assert position.offset == 0 and pubs == []
    assert shard.stats() == {"channels": 5000, "streams": 5000}
    assert shard.sweep(clock.now, 1000) == 0  # a reader may still subscribe from the position it got
    clock.now += EMPTY_STREAM_GRACE
    assert shard.sweep(clock.now, 1000) == 1000  # bounded per call
    assert sweep_all(shard, clock.now) == 4000
    assert shard.stats() == {"channels": 0, "streams": 0}
    assert shard.sweep(clock.now, 1000) == 0


def test_unpublished_streams_are_capped_without_a_sweep(shard: OwnerShard) -> None:
    for i in range(EMPTY_STREAMS_MAX + 500):
        history(shard, channel=f"never-{i}", limit=0, stream=DEFAULTS)
    assert shard.stats() == {"channels": EMPTY_STREAMS_MAX, "streams": EMPTY_STREAMS_MAX}
    # The oldest went first: the newest position is still the one handed out.
    last = f"never-{EMPTY_STREAMS_MAX + 499}"
    assert history(shard, channel=last, stream=DEFAULTS)[0] == history(shard, channel=last, stream=DEFAULTS)[0]


def test_unpublished_stream_grace_renewed_by_reads(shard: OwnerShard, clock: FakeClock) -> None:
    first = history(shard, channel="fresh", stream=DEFAULTS)[0]
    clock.now += EMPTY_STREAM_GRACE - 1
    assert history(shard, channel="fresh", stream=DEFAULTS)[0] == first
    clock.now += EMPTY_STREAM_GRACE - 1
    assert sweep_all(shard, clock.now) == 0
    assert pub(shard, 1, channel="fresh", opts=PublishOptions(DEFAULTS)) == StreamPosition(1, first.epoch)


def test_forgotten_unpublished_stream_gets_a_new_epoch(shard: OwnerShard, clock: FakeClock) -> None:
    old = history(shard, channel="fresh", stream=DEFAULTS)[0]
    clock.now += EMPTY_STREAM_GRACE
    assert sweep_all(shard, clock.now) == 1
    res = sub(shard, 0, channel="fresh", stream=DEFAULTS, since=old)
    assert res.recovered is False  # the honest answer: nothing proves no publication was lost
    assert res.position is not None and res.position.epoch != old.epoch


def test_positioned_subscriber_keeps_an_unpublished_stream(shard: OwnerShard, clock: FakeClock) -> None:
    position = sub(shard, 3, channel="quiet", stream=DEFAULTS, positioned=True).position
    assert position is not None and position.offset == 0
    clock.now += 100 * EMPTY_STREAM_GRACE
    assert sweep_all(shard, clock.now) == 0
    again = sub(shard, 4, channel="quiet", stream=DEFAULTS, since=position)
    assert again.recovered is True and again.position == position
    shard.unsubscribe("quiet", 4)
    shard.unsubscribe("quiet", 3)
    assert shard.stats() == {"channels": 1, "streams": 1}  # still within its grace
    clock.now += EMPTY_STREAM_GRACE
    assert sweep_all(shard, clock.now) == 1
    assert shard.stats() == {"channels": 0, "streams": 0}


def test_slot_restart_releases_unpublished_streams(shard: OwnerShard, clock: FakeClock) -> None:
    sub(shard, 1, channel="quiet", stream=DEFAULTS, positioned=True)
    shard.forget_slot(1, lambda channel: False)
    clock.now += EMPTY_STREAM_GRACE
    assert sweep_all(shard, clock.now) == 1
    assert shard.stats() == {"channels": 0, "streams": 0}


def test_meta_ttl_default_720h_since_last_publication(shard: OwnerShard, clock: FakeClock) -> None:
    opts = PublishOptions(DEFAULTS)
    epoch = pub(shard, 1, channel="feed", opts=opts).epoch
    clock.now += DEFAULT_META_TTL - 1
    assert sweep_all(shard, clock.now) == 0
    assert pub(shard, 2, channel="feed", opts=opts) == StreamPosition(2, epoch)  # renews the meta TTL
    clock.now += DEFAULT_META_TTL - 1
    assert sweep_all(shard, clock.now) == 0
    assert shard.stats() == {"channels": 1, "streams": 1}
    clock.now += 1
    assert sweep_all(shard, clock.now) == 1
    assert shard.stats() == {"channels": 0, "streams": 0}
    assert history(shard, channel="feed", stream=DEFAULTS)[0].epoch != epoch


def test_meta_ttl_sweep_keeps_subscribed_streams(shard: OwnerShard, clock: FakeClock) -> None:
    epoch = pub(shard, 1).epoch
    sub(shard, 2)
    clock.now += STREAM.meta_ttl * 3
    assert sweep_all(shard, clock.now) == 0
    assert shard.stats() == {"channels": 1, "streams": 1}
    shard.unsubscribe(CH, 2)  # the last subscriber of an expired stream: it goes now
    assert shard.stats() == {"channels": 0, "streams": 0}
    assert pub(shard, 2).epoch != epoch


def test_meta_expiry_queue_does_not_grow_with_publications(shard: OwnerShard, clock: FakeClock) -> None:
    for i in range(1000):
        pub(shard, i)
        clock.now += 1
    assert len(shard._meta_expiry) == 1
    for i in range(3000):
        pub(shard, i, channel=f"c{i}", opts=PublishOptions(SHORT))
    clock.now += SHORT.meta_ttl
    assert shard.sweep(clock.now, 2000) == 2000  # a mass expiry is spread over several sweeps
    assert sweep_all(shard, clock.now) == 1000
    assert shard.stats() == {"channels": 1, "streams": 1}
    assert len(shard._meta_expiry) == 1


def test_handoff_from_a_predecessor_without_stream_expiry(shard: OwnerShard, clock: FakeClock) -> None:
    pub(shard, "a")
    ((name, doc),) = orjson.loads(orjson.dumps(shard.export_channels()))
    del doc["stream"]["expires_at"], doc["stream"]["meta_ttl"]  # the older export format
    successor = OwnerShard(FakeFanout(), clock, random.Random(3))
    successor.import_channel(name, doc)
    clock.now += STREAM.ttl - 1
    assert history(successor)[1] == ["a"]
    clock.now += 1
    assert history(successor)[1] == []


# -- history_ttl (issue "Reliability round 2", item 11) -----------------------------------------


def test_each_publication_renews_the_channel_history(shard: OwnerShard, clock: FakeClock) -> None:
    six = StreamOptions(size=10, ttl=6.0, meta_ttl=DEFAULT_META_TTL)
    start = clock.now
    pub(shard, "A", channel="six", opts=PublishOptions(six))
    clock.now = start + 4
    pub(shard, "B", channel="six", opts=PublishOptions(six))
    clock.now = start + 8
    assert history(shard, channel="six", stream=six)[1] == ["A", "B"]
    clock.now = start + 10.1
    position, pubs = history(shard, channel="six", stream=six)
    assert pubs == [] and position.offset == 2


def test_history_ttl_default_renewed_by_publications(shard: OwnerShard, clock: FakeClock) -> None:
    opts = PublishOptions(DEFAULTS)
    pub(shard, "A", opts=opts)
    clock.now += 200
    pub(shard, "B", opts=opts)
    clock.now += 200  # A is 400 s old, 100 s past history_ttl, but B renewed the history
    assert history(shard, stream=DEFAULTS)[1] == ["A", "B"]
    clock.now += 100
    assert history(shard, stream=DEFAULTS)[1] == []
