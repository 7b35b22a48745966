"""OwnerShard: ordering, history, recovery, presence and fan-out, driven synchronously."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable
from typing import Any

import orjson
import pytest

from gateway.config import Config, parse_config
from gateway.core.errors import ClientError
from gateway.engine.memory import OwnerShard
from sharding.envelope import FLAG_JOIN_LEAVE

CH = "news"


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeFanout:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[int], int, str, int, bytes]] = []

    def __call__(self, channel: str, slots: Iterable[int], offset: int, epoch: str, flags: int,
                 data: bytes) -> None:
        self.calls.append((channel, sorted(slots), offset, epoch, flags, data))

    def pushes(self) -> list[dict[str, Any]]:
        return [orjson.loads(call[5])["push"] for call in self.calls]

    def clear(self) -> None:
        self.calls.clear()


def make_config(**extra_channel: Any) -> Config:
    channel: dict[str, Any] = {
        "without_namespace": {
            "presence": True,
            "join_leave": True,
            "history_size": 10,
            "history_ttl": "60s",
            "force_recovery": True,
        },
        "namespaces": [
            {"name": "plain"},  # no presence, no history, no join/leave
            {"name": "pres", "presence": True},
            {"name": "short", "history_size": 3, "history_ttl": "5s", "history_meta_ttl": "100s",
             "join_leave": True},
        ],
    }
    channel.update(extra_channel)
    return parse_config({"channel": channel})


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fanout() -> FakeFanout:
    return FakeFanout()


@pytest.fixture
def shard(clock: FakeClock, fanout: FakeFanout) -> OwnerShard:
    return OwnerShard(make_config(), fanout, clock, random.Random(0))


def info(client: str, user: str = "", **extra: Any) -> dict[str, Any]:
    return {"user": user or f"user-{client}", "client": client, **extra}


def sub(shard: OwnerShard, client: str, origin: int, channel: str = CH, user: str = "",
        **body: Any) -> dict[str, Any]:
    return shard.handle("subscribe", {"channel": channel, "info": info(client, user), **body}, origin)


def unsub(shard: OwnerShard, client: str, origin: int, channel: str = CH) -> dict[str, Any]:
    return shard.handle("unsubscribe", {"channel": channel, "client": client, "user": f"user-{client}"},
                        origin)


def pub(shard: OwnerShard, data: Any, channel: str = CH, origin: int = 0, **body: Any) -> dict[str, Any]:
    return shard.handle("publish", {"channel": channel, "data": data, **body}, origin)


def dumps_pubs(pubs: list[Any]) -> list[dict[str, Any]]:
    for p in pubs:
        assert isinstance(p, orjson.Fragment)
    return list(orjson.loads(orjson.dumps(pubs)))


# -- construction ---------------------------------------------------------------------------


def test_default_config_has_no_history(clock: FakeClock, fanout: FakeFanout) -> None:
    s = OwnerShard(Config(), fanout, clock, random.Random(0))
    assert pub(s, 1) == {}
    with pytest.raises(ClientError) as exc:
        s.handle("history", {"channel": CH}, 0)
    assert exc.value.code == 108


def test_config_via_dataclasses_replace(clock: FakeClock, fanout: FakeFanout) -> None:
    base = Config()
    opts = dataclasses.replace(base.channel.without_namespace, history_size=2, history_ttl=10.0)
    cfg = dataclasses.replace(base, channel=dataclasses.replace(base.channel, without_namespace=opts))
    s = OwnerShard(cfg, fanout, clock, random.Random(0))
    assert pub(s, 1)["offset"] == 1
    assert pub(s, 2)["offset"] == 2


# -- handle() dispatch ----------------------------------------------------------------------


def test_unknown_method(shard: OwnerShard) -> None:
    with pytest.raises(ClientError) as exc:
        shard.handle("nope", {"channel": CH}, 0)
    assert exc.value.code == 104


@pytest.mark.parametrize("body", [{}, {"channel": ""}, {"channel": 5}, {"channel": None}])
def test_bad_channel_is_bad_request(shard: OwnerShard, body: dict[str, Any]) -> None:
    with pytest.raises(ClientError) as exc:
        shard.handle("publish", body, 0)
    assert exc.value.code == 107


@pytest.mark.parametrize("method", ["publish", "subscribe", "presence", "presence_stats", "history"])
def test_unknown_namespace(shard: OwnerShard, method: str) -> None:
    with pytest.raises(ClientError) as exc:
        shard.handle(method, {"channel": "missing:chan", "info": info("c1")}, 0)
    assert exc.value.code == 102


def test_private_prefix_uses_namespace(shard: OwnerShard) -> None:
    with pytest.raises(ClientError) as exc:
        shard.handle("publish", {"channel": "$missing:x"}, 0)
    assert exc.value.code == 102
    assert pub(shard, 1, channel="$private")["offset"] == 1


# -- publish --------------------------------------------------------------------------------


def test_publish_consecutive_offsets_same_epoch(shard: OwnerShard) -> None:
    results = [pub(shard, {"n": i}) for i in range(5)]
    assert [r["offset"] for r in results] == [1, 2, 3, 4, 5]
    epochs = {r["epoch"] for r in results}
    assert len(epochs) == 1
    (epoch,) = epochs
    assert len(epoch) == 8 and epoch.isalpha()


def test_publish_epochs_differ_per_channel(shard: OwnerShard) -> None:
    a = pub(shard, 1, channel="a")
    b = pub(shard, 1, channel="b")
    assert a["offset"] == b["offset"] == 1
    assert a["epoch"] != b["epoch"]


def test_publish_without_subscribers_no_fanout(shard: OwnerShard, fanout: FakeFanout) -> None:
    pub(shard, 1)
    # History creates the channel state; there is nobody to deliver to.
    assert all(call[1] == [] for call in fanout.calls)
    pub(shard, 1, channel="plain:x")
    assert not [c for c in fanout.calls if c[0] == "plain:x"]


def test_publish_fans_out_to_slots_with_interest(shard: OwnerShard, fanout: FakeFanout) -> None:
    sub(shard, "c1", origin=0)
    sub(shard, "c2", origin=2)
    sub(shard, "c3", origin=2)
    fanout.clear()
    res = pub(shard, {"x": 1}, info={"user": "u", "client": "c9"}, tags={"k": "v"})
    assert len(fanout.calls) == 1
    channel, slots, offset, epoch, flags, data = fanout.calls[0]
    assert channel == CH
    assert slots == [0, 2]
    assert offset == res["offset"] == 1
    assert epoch == res["epoch"]
    assert flags == 0
    assert orjson.loads(data) == {"push": {"channel": CH, "pub": {
        "data": {"x": 1}, "offset": 1, "info": {"user": "u", "client": "c9"}, "tags": {"k": "v"}}}}


def test_publish_without_history_fans_out_positionless(shard: OwnerShard, fanout: FakeFanout) -> None:
    sub(shard, "c1", origin=1, channel="plain:x")
    fanout.clear()
    assert pub(shard, "hi", channel="plain:x") == {}
    (call,) = fanout.calls
    assert call[:5] == ("plain:x", [1], 0, "", 0)
    assert orjson.loads(call[5]) == {"push": {"channel": "plain:x", "pub": {"data": "hi"}}}


def test_publish_skip_history(shard: OwnerShard, fanout: FakeFanout) -> None:
    sub(shard, "c1", origin=1)
    pub(shard, 1)
    fanout.clear()
    assert pub(shard, 2, skip_history=True) == {}
    assert fanout.calls[0][2] == 0
    assert pub(shard, 3)["offset"] == 2
    hist = shard.handle("history", {"channel": CH, "limit": -1}, 0)
    assert [p["data"] for p in dumps_pubs(hist["publications"])] == [1, 3]


def test_fanout_order_matches_offsets(shard: OwnerShard, fanout: FakeFanout) -> None:
    sub(shard, "c1", origin=3)
    fanout.clear()
    for i in range(20):
        pub(shard, i)
    assert [c[2] for c in fanout.calls] == list(range(1, 21))


# -- subscribe ------------------------------------------------------------------------------


def test_subscribe_registers_interest_and_presence(shard: OwnerShard) -> None:
    sub(shard, "c1", origin=1)
    sub(shard, "c2", origin=1, user="alice")
    sub(shard, "c3", origin=4, user="alice")
    pres = shard.handle("presence", {"channel": CH}, 0)["presence"]
    assert set(pres) == {"c1", "c2", "c3"}
    assert pres["c2"] == {"user": "alice", "client": "c2"}
    assert shard.handle("presence_stats", {"channel": CH}, 0) == {"num_clients": 3, "num_users": 2}
    assert shard.stats() == {"channels": 1}


def test_subscribe_emits_join_with_flag(shard: OwnerShard, fanout: FakeFanout) -> None:
    sub(shard, "c1", origin=0)
    sub(shard, "c2", origin=5, user="bob")
    (ch, slots, offset, epoch, flags, data) = fanout.calls[-1]
    assert ch == CH
    assert slots == [0, 5]  # the new subscriber's slot included
    assert (offset, epoch) == (0, "")
    assert flags & FLAG_JOIN_LEAVE
    assert orjson.loads(data) == {"push": {"channel": CH, "join": {"info": {"user": "bob", "client": "c2"}}}}


def test_no_join_without_join_leave(shard: OwnerShard, fanout: FakeFanout) -> None:
    sub(shard, "c1", origin=0, channel="pres:x")
    sub(shard, "c2", origin=0, channel="plain:x")
    assert fanout.calls == []


def test_no_presence_when_disabled(shard: OwnerShard) -> None:
    sub(shard, "c1", origin=0, channel="short:x")
    for method in ("presence", "presence_stats"):
        with pytest.raises(ClientError) as exc:
            shard.handle(method, {"channel": "short:x"}, 0)
        assert exc.value.code == 108


def test_subscribe_without_client_id_skips_presence_and_join(shard: OwnerShard, fanout: FakeFanout) -> None:
    shard.handle("subscribe", {"channel": CH}, 0)
    assert fanout.calls == []
    assert shard.handle("presence", {"channel": CH}, 0) == {"presence": {}}


def test_subscribe_not_positioned_returns_empty(shard: OwnerShard) -> None:
    pub(shard, 1)
    assert sub(shard, "c1", origin=0) == {}


def test_subscribe_positioned_returns_position(shard: OwnerShard) -> None:
    r1 = sub(shard, "c1", origin=0, positioned=True)
    assert r1["offset"] == 0 and len(r1["epoch"]) == 8
    first = pub(shard, "a")
    pub(shard, "b")
    r2 = sub(shard, "c2", origin=0, positioned=True)
    assert r2 == {"epoch": first["epoch"], "offset": 2}
    assert r1["epoch"] == first["epoch"]


def test_subscribe_positioned_on_channel_without_history(shard: OwnerShard) -> None:
    assert sub(shard, "c1", origin=0, channel="plain:x", positioned=True) == {}


# -- recovery -------------------------------------------------------------------------------


def test_recover_missed_publications(shard: OwnerShard) -> None:
    first = sub(shard, "c1", origin=0, positioned=True)
    for i in range(1, 6):
        pub(shard, {"n": i})
    res = sub(shard, "c1", origin=0, positioned=True, recover=True, epoch=first["epoch"], offset=2)
    assert res["recovered"] is True
    assert res["epoch"] == first["epoch"]
    assert res["offset"] == 5
    pubs = dumps_pubs(res["publications"])
    assert [p["offset"] for p in pubs] == [3, 4, 5]
    assert [p["data"] for p in pubs] == [{"n": 3}, {"n": 4}, {"n": 5}]
    # The whole reply is encodable as-is (what the client writes).
    assert orjson.loads(orjson.dumps(res))["publications"] == pubs


def test_recover_nothing_missed(shard: OwnerShard) -> None:
    epoch = pub(shard, 1)["epoch"]
    res = sub(shard, "c1", origin=0, positioned=True, recover=True, epoch=epoch, offset=1)
    assert res["recovered"] is True
    assert res["publications"] == []


def test_recover_from_zero_without_epoch(shard: OwnerShard) -> None:
    pub(shard, 1)
    pub(shard, 2)
    res = sub(shard, "c1", origin=0, positioned=True, recover=True, epoch="", offset=0)
    assert res["recovered"] is True
    assert [p["data"] for p in dumps_pubs(res["publications"])] == [1, 2]


def test_recover_wrong_epoch(shard: OwnerShard) -> None:
    pub(shard, 1)
    pub(shard, 2)
    res = sub(shard, "c1", origin=0, positioned=True, recover=True, epoch="WRONGEPO", offset=1)
    assert res["recovered"] is False
    assert "publications" not in res
    assert res["offset"] == 2


def test_recover_trimmed_by_size(shard: OwnerShard) -> None:
    epoch = pub(shard, 0)["epoch"]
    for i in range(1, 15):  # history_size 10: offsets 1..5 are gone
        pub(shard, i)
    res = sub(shard, "c1", origin=0, positioned=True, recover=True, epoch=epoch, offset=2)
    assert res["recovered"] is False
    ok = sub(shard, "c1", origin=0, positioned=True, recover=True, epoch=epoch, offset=5)
    assert ok["recovered"] is True
    assert [p["offset"] for p in dumps_pubs(ok["publications"])] == list(range(6, 16))


def test_recover_expired_by_ttl(shard: OwnerShard, clock: FakeClock) -> None:
    epoch = pub(shard, 1)["epoch"]
    pub(shard, 2)
    clock.now += 61
    res = sub(shard, "c1", origin=0, positioned=True, recover=True, epoch=epoch, offset=1)
    assert res["recovered"] is False
    same = sub(shard, "c2", origin=0, positioned=True, recover=True, epoch=epoch, offset=2)
    assert same["recovered"] is True
    assert same["epoch"] == epoch


def test_recover_limited_by_recovery_max_publication_limit(clock: FakeClock, fanout: FakeFanout) -> None:
    cfg = parse_config({
        "client": {"recovery_max_publication_limit": 2},
        "channel": {"without_namespace": {"history_size": 10, "history_ttl": "60s"}},
    })
    s = OwnerShard(cfg, fanout, clock, random.Random(0))
    epoch = pub(s, 1)["epoch"]
    for i in range(2, 6):
        pub(s, i)
    assert sub(s, "c", 0, positioned=True, recover=True, epoch=epoch, offset=3)["recovered"] is True
    assert sub(s, "c", 0, positioned=True, recover=True, epoch=epoch, offset=2)["recovered"] is False


def test_history_meta_ttl_gives_new_epoch(shard: OwnerShard, clock: FakeClock) -> None:
    chan = "short:x"
    old = pub(shard, 1, channel=chan)
    clock.now += 50
    assert pub(shard, 2, channel=chan)["epoch"] == old["epoch"]
    clock.now += 101
    res = sub(shard, "c1", origin=0, channel=chan, positioned=True, recover=True, epoch=old["epoch"],
              offset=2)
    assert res["recovered"] is False
    assert res["epoch"] != old["epoch"]
    assert res["offset"] == 0
    assert pub(shard, 3, channel=chan) == {"offset": 1, "epoch": res["epoch"]}


# -- history --------------------------------------------------------------------------------


def test_history_not_available(shard: OwnerShard) -> None:
    for chan in ("plain:x", "pres:x"):
        with pytest.raises(ClientError) as exc:
            shard.handle("history", {"channel": chan, "limit": 10}, 0)
        assert exc.value.code == 108


def test_history_epoch_mismatch(shard: OwnerShard) -> None:
    pub(shard, 1)
    with pytest.raises(ClientError) as exc:
        shard.handle("history", {"channel": CH, "limit": 10, "since": {"offset": 0, "epoch": "nope"}}, 0)
    assert exc.value.code == 112


def test_history_reads(shard: OwnerShard) -> None:
    epoch = ""
    for i in range(1, 6):
        epoch = pub(shard, i)["epoch"]
    h = shard.handle("history", {"channel": CH, "limit": 0}, 0)
    assert h["publications"] == [] and h["epoch"] == epoch and h["offset"] == 5
    h = shard.handle("history", {"channel": CH}, 0)
    assert h["publications"] == []
    h = shard.handle("history", {"channel": CH, "limit": -1}, 0)
    assert [p["offset"] for p in dumps_pubs(h["publications"])] == [1, 2, 3, 4, 5]
    h = shard.handle("history", {"channel": CH, "limit": 2, "since": {"offset": 1, "epoch": epoch}}, 0)
    assert [p["offset"] for p in dumps_pubs(h["publications"])] == [2, 3]
    h = shard.handle("history", {"channel": CH, "limit": 2, "reverse": True}, 0)
    assert [p["offset"] for p in dumps_pubs(h["publications"])] == [5, 4]
    h = shard.handle("history", {"channel": CH, "limit": -1, "since": {"offset": 3}, "reverse": True}, 0)
    assert [p["data"] for p in dumps_pubs(h["publications"])] == [2, 1]


def test_history_of_new_channel_creates_position(shard: OwnerShard) -> None:
    h = shard.handle("history", {"channel": "fresh", "limit": -1}, 0)
    assert h["publications"] == [] and h["offset"] == 0 and len(h["epoch"]) == 8
    assert pub(shard, 1, channel="fresh")["epoch"] == h["epoch"]


def test_history_remove_keeps_position(shard: OwnerShard) -> None:
    epoch = pub(shard, 1)["epoch"]
    pub(shard, 2)
    assert shard.handle("history_remove", {"channel": CH}, 0) == {}
    h = shard.handle("history", {"channel": CH, "limit": -1}, 0)
    assert h == {"publications": [], "epoch": epoch, "offset": 2}
    assert pub(shard, 3) == {"offset": 3, "epoch": epoch}
    assert shard.handle("history_remove", {"channel": "unknown-chan"}, 0) == {}


# -- unsubscribe ----------------------------------------------------------------------------


def test_unsubscribe_removes_presence_and_emits_leave(shard: OwnerShard, fanout: FakeFanout) -> None:
    sub(shard, "c1", origin=0, user="alice")
    sub(shard, "c2", origin=1, user="bob")
    fanout.clear()
    assert unsub(shard, "c1", origin=0) == {}
    pres = shard.handle("presence", {"channel": CH}, 0)["presence"]
    assert set(pres) == {"c2"}
    (ch, slots, offset, epoch, flags, data) = fanout.calls[-1]
    assert ch == CH
    assert slots == [1]  # slot 0 has no subscriber left
    assert flags & FLAG_JOIN_LEAVE and offset == 0 and epoch == ""
    # The leave carries the info registered at subscribe time.
    leave = {"info": {"user": "alice", "client": "c1"}}
    assert orjson.loads(data) == {"push": {"channel": CH, "leave": leave}}


def test_unsubscribe_interest_counts(shard: OwnerShard, fanout: FakeFanout) -> None:
    sub(shard, "c1", origin=3)
    sub(shard, "c2", origin=3)
    unsub(shard, "c1", origin=3)
    fanout.clear()
    pub(shard, 1)
    assert fanout.calls[-1][1] == [3]
    unsub(shard, "c2", origin=3)
    fanout.clear()
    pub(shard, 2)
    assert fanout.calls[-1][1] == []


def test_unsubscribe_unknown_channel_is_noop(shard: OwnerShard, fanout: FakeFanout) -> None:
    assert unsub(shard, "c1", origin=0, channel="never") == {}
    assert fanout.calls == []


def test_channel_state_forgotten_when_idle(shard: OwnerShard) -> None:
    sub(shard, "c1", origin=0, channel="pres:x")
    assert shard.stats() == {"channels": 1}
    unsub(shard, "c1", origin=0, channel="pres:x")
    assert shard.stats() == {"channels": 0}


def test_leave_without_presence_entry_uses_body(shard: OwnerShard, fanout: FakeFanout) -> None:
    # join_leave without presence: the leave info comes from the request.
    cfg = make_config(without_namespace={"join_leave": True})
    s = OwnerShard(cfg, fanout, FakeClock(), random.Random(0))
    sub(s, "c1", origin=0)
    sub(s, "c2", origin=0)
    fanout.clear()
    unsub(s, "c1", origin=0)
    (call,) = fanout.calls
    assert orjson.loads(call[5])["push"]["leave"] == {"info": {"user": "user-c1", "client": "c1"}}


# -- presence -------------------------------------------------------------------------------


def test_presence_empty_channel(shard: OwnerShard) -> None:
    assert shard.handle("presence", {"channel": "nobody"}, 0) == {"presence": {}}
    assert shard.handle("presence_stats", {"channel": "nobody"}, 0) == {"num_clients": 0, "num_users": 0}


def test_presence_stats_counts_distinct_users(shard: OwnerShard) -> None:
    sub(shard, "c1", origin=0, user="u1")
    sub(shard, "c2", origin=1, user="u1")
    sub(shard, "c3", origin=1, user="u2")
    assert shard.handle("presence_stats", {"channel": CH}, 0) == {"num_clients": 3, "num_users": 2}


def test_presence_keeps_extra_info(shard: OwnerShard) -> None:
    body = {"channel": CH, "info": info("c1", "u", conn_info={"a": 1}, chan_info={"b": 2})}
    shard.handle("subscribe", body, 0)
    pres = shard.handle("presence", {"channel": CH}, 0)["presence"]
    assert pres == {"c1": {"user": "u", "client": "c1", "conn_info": {"a": 1}, "chan_info": {"b": 2}}}


# -- forget_slot ----------------------------------------------------------------------------


def test_forget_slot_drops_presence_and_interest(shard: OwnerShard, fanout: FakeFanout) -> None:
    sub(shard, "a1", origin=1, user="alice")
    sub(shard, "b2", origin=2, user="bob")
    sub(shard, "a1x", origin=1, channel="other", user="alice")
    fanout.clear()
    shard.forget_slot(1)
    assert set(shard.handle("presence", {"channel": CH}, 0)["presence"]) == {"b2"}
    assert shard.handle("presence", {"channel": "other"}, 0) == {"presence": {}}
    leaves = [(c[0], c[1], orjson.loads(c[5])["push"]) for c in fanout.calls]
    assert (CH, [2], {"channel": CH, "leave": {"info": {"user": "alice", "client": "a1"}}}) in leaves
    assert all(c[4] & FLAG_JOIN_LEAVE for c in fanout.calls)
    fanout.clear()
    pub(shard, 1)
    assert fanout.calls[-1][1] == [2]
    # "other" had only slot 1 and no history: its state is gone.
    assert shard.stats() == {"channels": 1}


def test_forget_slot_keeps_streams(shard: OwnerShard) -> None:
    epoch = pub(shard, 1)["epoch"]
    sub(shard, "c1", origin=1)
    shard.forget_slot(1)
    assert pub(shard, 2) == {"offset": 2, "epoch": epoch}


def test_forget_unknown_slot_is_noop(shard: OwnerShard, fanout: FakeFanout) -> None:
    sub(shard, "c1", origin=1)
    fanout.clear()
    shard.forget_slot(9)
    assert fanout.calls == []
    assert set(shard.handle("presence", {"channel": CH}, 0)["presence"]) == {"c1"}
