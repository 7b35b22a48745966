"""Hub: local subscriber indexes and synchronous fan-out, encoded once per codec, with
gap/duplicate detection."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.core.errors import Disconnect, Unsubscribe
from gateway.core.model import ClientInfo, Publication, StreamPosition
from gateway.hub import Hub
from gateway.protocol.centrifuge_json import JSON
from gateway.protocol.codec import Codec

CH = "news"


class CountingCodec:
    """A codec that counts its encodes and returns a fresh bytes object each time."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.encodes: list[tuple[str, str]] = []

    def publication_push(self, channel: str, pub: Publication) -> bytes:
        self.encodes.append(("pub", channel))
        return b"%s|pub|%s|%d|%s" % (self.name.encode(), channel.encode(), pub.offset, pub.data)

    def join_push(self, channel: str, info: ClientInfo) -> bytes:
        self.encodes.append(("join", channel))
        return b"%s|join|%s|%s" % (self.name.encode(), channel.encode(), info.client.encode())

    def leave_push(self, channel: str, info: ClientInfo) -> bytes:
        self.encodes.append(("leave", channel))
        return b"%s|leave|%s|%s" % (self.name.encode(), channel.encode(), info.client.encode())


class FakeSub:
    """A connection as the hub sees it; hashable by identity like the real Session."""

    def __init__(self, client_id: str, user: str = "", hub: Hub | None = None, drop_on_gap: bool = False,
                 codec: Codec = JSON) -> None:
        self.client_id = client_id
        self.user = user
        self.codec = codec
        self.writes: list[bytes] = []
        self.push_now = None
        self.gaps: list[str] = []
        self.unsubscribed: list[tuple[str, Unsubscribe]] = []
        self._hub = hub
        self._drop_on_gap = drop_on_gap

    def write_push(self, data: bytes) -> None:
        self.writes.append(data)


    def on_stream_gap(self, channel: str) -> None:
        self.gaps.append(channel)
        if self._drop_on_gap and self._hub is not None:
            # What a positioned Session does: unsubscribe (2500) and resubscribe later.
            self._hub.unsubscribe(channel, self)

    def server_unsubscribe(self, channel: str, reason: Unsubscribe) -> None:
        self.unsubscribed.append((channel, reason))

    def close(self, disconnect: Disconnect) -> None:  # pragma: no cover - not used by the hub
        pass

    def server_subscribe(self, channel: str, request: dict[str, Any]) -> None:  # pragma: no cover
        pass

    def server_refresh(self, request: dict[str, Any]) -> None:  # pragma: no cover
        pass

    def __repr__(self) -> str:
        return f"FakeSub({self.client_id!r})"


@pytest.fixture
def hub() -> Hub:
    return Hub()


def pos(offset: int, epoch: str = "E") -> StreamPosition:
    return StreamPosition(offset, epoch)


def publication(data: Any, offset: int = 0) -> Publication:
    return Publication(orjson.dumps(data), ClientInfo("u", "pub-client"), offset)


def deliver(hub: Hub, data: Any, offset: int = 0, epoch: str = "E") -> None:
    """A publication as the engine hands it over: positionless without an offset."""
    hub.handle_publication(CH, publication(data, offset), pos(offset, epoch) if offset else None)


def received(sub: FakeSub) -> list[Any]:
    """The publication data each write carried (JSON codec)."""
    return [orjson.loads(w)["push"]["pub"]["data"] for w in sub.writes]


def _subs(hub: Hub, n: int, join_leave: bool = False, position: StreamPosition | None = None,
          channel: str = CH, **kw: Any) -> list[FakeSub]:
    subs = [FakeSub(f"c{i}", f"u{i}", hub, **kw) for i in range(n)]
    for s in subs:
        hub.add_client(s)
        hub.subscribe(channel, s, join_leave, position)
    return subs


# -- clients and users ----------------------------------------------------------------------


def test_add_and_remove_client(hub: Hub) -> None:
    a, b, c = FakeSub("c1", "alice"), FakeSub("c2", "alice"), FakeSub("c3", "bob")
    for s in (a, b, c):
        hub.add_client(s)
    assert hub.clients == {"c1": a, "c2": b, "c3": c}
    assert hub.users == {"alice": {"c1", "c2"}, "bob": "c3"}  # one connection: the id itself
    assert set(hub.user_clients("alice")) == {a, b}
    assert sorted(hub.user_client_ids("alice")) == ["c1", "c2"] and hub.user_client_ids("bob") == ["c3"]
    hub.remove_client(a)
    assert "c1" not in hub.clients
    assert hub.users["alice"] == "c2"
    assert hub.user_client_ids("alice") == ["c2"] and hub.user_client_ids("nobody") == []
    hub.add_client(a)
    assert hub.users["alice"] == {"c1", "c2"}
    hub.remove_client(a)
    hub.remove_client(b)
    assert "alice" not in hub.users
    assert list(hub.user_clients("alice")) == []
    assert list(hub.user_clients("bob")) == [c]


def test_anonymous_user_index(hub: Hub) -> None:
    a, b = FakeSub("c1", ""), FakeSub("c2", "")
    hub.add_client(a)
    hub.add_client(b)
    assert set(hub.user_clients("")) == {a, b}


def test_remove_client_twice_is_safe(hub: Hub) -> None:
    a = FakeSub("c1", "alice")
    hub.add_client(a)
    hub.remove_client(a)
    hub.remove_client(a)
    assert hub.clients == {} and hub.users == {}


def test_remove_stale_client_keeps_replacement(hub: Hub) -> None:
    old, new = FakeSub("c1", "alice"), FakeSub("c1", "alice")
    hub.add_client(old)
    hub.add_client(new)  # same id re-registered
    hub.remove_client(old)
    assert hub.clients.get("c1") is new
    assert list(hub.user_clients("alice")) == [new]


def test_user_clients_tolerates_removal_during_iteration(hub: Hub) -> None:
    subs = [FakeSub(f"c{i}", "alice") for i in range(5)]
    for s in subs:
        hub.add_client(s)
    seen = []
    for live in hub.user_clients("alice"):
        seen.append(live)
        hub.remove_client(live)
    assert set(seen) == set(subs)
    assert hub.users == {}


# -- subscriptions --------------------------------------------------------------------------


def test_subscribe_unsubscribe(hub: Hub) -> None:
    a, b = _subs(hub, 2)
    assert hub.num_subscriptions() == 2
    assert a in hub.channels[CH]
    assert hub.unsubscribe(CH, a) is True
    assert hub.unsubscribe(CH, a) is False
    assert a not in hub.channels[CH]
    assert hub.num_subscriptions() == 1
    assert hub.unsubscribe(CH, b) is True
    assert CH not in hub.channels
    assert hub.unsubscribe("never", b) is False


def test_subscribe_sets_position_only_with_epoch(hub: Hub) -> None:
    hub.subscribe(CH, FakeSub("a"), False, pos(5))
    hub.subscribe(CH, FakeSub("b"), False, None)
    hub.subscribe(CH, FakeSub("c"), False, StreamPosition(0, ""))
    local = hub.channels[CH]
    assert (local.epoch, local.offset) == ("E", 5)


def test_unsubscribe_keeps_other_codec_group(hub: Hub) -> None:
    other = CountingCodec("x")
    a, b = FakeSub("a"), FakeSub("b", codec=other)
    hub.subscribe(CH, a, False, None)
    hub.subscribe(CH, b, False, None)
    assert hub.unsubscribe(CH, a) is True
    assert hub.channels[CH].subscribers() == [b]
    deliver(hub, 1)
    assert a.writes == [] and len(b.writes) == 1


# -- delivery -------------------------------------------------------------------------------


def test_same_bytes_object_to_each_subscriber(hub: Hub) -> None:
    subs = _subs(hub, 4)
    deliver(hub, {"x": 1}, 1)
    first = subs[0].writes[0]
    for s in subs:
        assert len(s.writes) == 1
        assert s.writes[0] is first
    assert orjson.loads(first) == {"push": {"channel": CH, "pub": {
        "data": {"x": 1}, "info": {"user": "u", "client": "pub-client"}, "offset": 1}}}


def test_one_encode_per_codec_per_publication(hub: Hub) -> None:
    one, two = CountingCodec("one"), CountingCodec("two")
    ones = [FakeSub(f"a{i}", codec=one) for i in range(3)]
    twos = [FakeSub(f"b{i}", codec=two) for i in range(2)]
    for s in ones + twos:
        hub.subscribe(CH, s, False, None)
    for n in range(1, 4):
        deliver(hub, n, n)
    assert one.encodes == [("pub", CH)] * 3
    assert two.encodes == [("pub", CH)] * 3
    for group, codec in ((ones, b"one"), (twos, b"two")):
        for s in group:
            assert [w.split(b"|")[0] for w in s.writes] == [codec] * 3
            assert all(w is r for w, r in zip(s.writes, group[0].writes, strict=True))
    assert ones[0].writes[0] is not twos[0].writes[0]


def test_deliver_to_unknown_channel(hub: Hub) -> None:
    codec = CountingCodec("c")
    s = FakeSub("a", codec=codec)
    hub.subscribe(CH, s, True, None)
    hub.handle_publication("other", publication(1), None)
    hub.handle_publication("other", publication(1, 1), pos(1))
    hub.handle_join("other", ClientInfo("u", "x"))
    hub.handle_leave("other", ClientInfo("u", "x"))
    hub.handle_stream_lost("other")
    assert s.writes == [] and s.gaps == [] and codec.encodes == []


def test_join_leave_flag_filters(hub: Hub) -> None:
    wants = [FakeSub("j1"), FakeSub("j2")]
    plain = FakeSub("p1")
    for s in wants:
        hub.subscribe(CH, s, True, None)
    hub.subscribe(CH, plain, False, None)
    joiner = ClientInfo("bob", "c9", b'{"a":1}')
    hub.handle_join(CH, joiner)
    hub.handle_leave(CH, joiner)
    join = {"push": {"channel": CH, "join": {"info": {"user": "bob", "client": "c9", "conn_info": {"a": 1}}}}}
    leave = {"push": {"channel": CH, "leave": {"info": {"user": "bob", "client": "c9", "conn_info": {"a": 1}}}}}
    for s in wants:
        assert [orjson.loads(w) for w in s.writes] == [join, leave]
    assert wants[0].writes[0] is wants[1].writes[0]
    assert plain.writes == []
    deliver(hub, "p")
    assert received(plain) == ["p"]
    assert len(wants[0].writes) == 3


def test_join_leave_never_to_the_client_itself(hub: Hub) -> None:
    me, other = FakeSub("me"), FakeSub("other")
    hub.subscribe(CH, me, True, None)
    hub.subscribe(CH, other, True, None)
    hub.handle_join(CH, ClientInfo("u", "me"))
    hub.handle_leave(CH, ClientInfo("u", "me"))
    assert me.writes == []
    assert [orjson.loads(w)["push"].keys() - {"channel"} for w in other.writes] == [{"join"}, {"leave"}]


def test_join_encoded_once_per_codec(hub: Hub) -> None:
    codec = CountingCodec("c")
    subs = [FakeSub(f"s{i}", codec=codec) for i in range(3)]
    for s in subs:
        hub.subscribe(CH, s, True, None)
    hub.handle_join(CH, ClientInfo("u", "x"))
    assert codec.encodes == [("join", CH)]
    assert all(s.writes[0] is subs[0].writes[0] for s in subs)


def test_positioned_delivery_tracks_offset(hub: Hub) -> None:
    (s,) = _subs(hub, 1, position=pos(2))
    for off in (3, 4, 5):
        deliver(hub, off, off)
    assert received(s) == [3, 4, 5]
    assert s.gaps == []
    local = hub.channels[CH]
    assert (local.epoch, local.offset) == ("E", 5)


def test_duplicates_skipped(hub: Hub) -> None:
    (s,) = _subs(hub, 1, position=pos(2))
    deliver(hub, "p3", 3)
    deliver(hub, "p3-again", 3)
    deliver(hub, "old", 1)
    assert received(s) == ["p3"]
    assert s.gaps == []
    assert hub.channels[CH].offset == 3


def test_reply_position_skips_already_seen(hub: Hub) -> None:
    # A subscribe answer at offset 5 means publications up to 5 were already seen.
    (s,) = _subs(hub, 1, position=pos(5))
    deliver(hub, "p5", 5)
    deliver(hub, "p6", 6)
    assert received(s) == ["p6"]


def test_gap_calls_on_stream_gap(hub: Hub) -> None:
    a, b = _subs(hub, 2, position=pos(1))
    deliver(hub, "p4", 4)  # 2 and 3 were lost
    assert a.gaps == [CH] and b.gaps == [CH]
    local = hub.channels[CH]
    assert (local.epoch, local.offset) == ("E", 4)
    deliver(hub, "p5", 5)  # the next one in sequence is no gap
    assert a.gaps == [CH]
    assert received(a) == ["p4", "p5"]  # subscribers that stay still get the data


def test_epoch_change_is_a_gap(hub: Hub) -> None:
    (s,) = _subs(hub, 1, position=pos(7, "OLD"))
    deliver(hub, "new1", 1, "NEW")
    assert s.gaps == [CH]
    assert (hub.channels[CH].epoch, hub.channels[CH].offset) == ("NEW", 1)


def test_epoch_change_with_lower_offset_is_not_duplicate(hub: Hub) -> None:
    (s,) = _subs(hub, 1, position=pos(7, "OLD"))
    deliver(hub, "x", 3, "NEW")
    assert s.gaps == [CH]


def test_gap_subscribers_that_leave_do_not_get_data(hub: Hub) -> None:
    subs = _subs(hub, 3, position=pos(1), drop_on_gap=True)
    deliver(hub, "p9", 9)
    for s in subs:
        assert s.gaps == [CH]
        assert s.writes == []
    assert CH not in hub.channels


def test_gap_with_mixed_subscribers(hub: Hub) -> None:
    positioned = FakeSub("pos", hub=hub, drop_on_gap=True)
    plain = FakeSub("plain", hub=hub)
    hub.subscribe(CH, positioned, False, pos(1))
    hub.subscribe(CH, plain, False, None)
    deliver(hub, "p3", 3)
    assert positioned.writes == [] and positioned.gaps == [CH]
    assert received(plain) == ["p3"]


def test_unpositioned_channel_accepts_any_offset(hub: Hub) -> None:
    (s,) = _subs(hub, 1)
    deliver(hub, "a", 10)
    deliver(hub, "b", 11)
    assert s.gaps == []
    assert received(s) == ["a", "b"]


def test_positionless_push_does_not_move_position(hub: Hub) -> None:
    (s,) = _subs(hub, 1, join_leave=True, position=pos(3))
    hub.handle_join(CH, ClientInfo("u", "someone"))
    deliver(hub, "pub-no-history")
    assert (hub.channels[CH].epoch, hub.channels[CH].offset) == ("E", 3)
    deliver(hub, "p4", 4)
    assert s.gaps == []
    kinds = [next(iter(orjson.loads(w)["push"].keys() - {"channel"})) for w in s.writes]
    assert kinds == ["join", "pub", "pub"]
    assert [orjson.loads(w)["push"]["pub"]["data"] for w in s.writes[1:]] == ["pub-no-history", "p4"]


def test_stream_lost_tells_every_subscriber(hub: Hub) -> None:
    a, b = _subs(hub, 2, position=pos(1))
    hub.handle_stream_lost(CH)
    assert a.gaps == [CH] and b.gaps == [CH]
    assert a.writes == [] and b.writes == []


# -- publications that arrive while a subscribe is in flight (the Redis engine) -------------


def _pub(offset: int) -> Publication:
    return Publication(b"%d" % offset, None, offset)


def test_publications_during_a_pending_subscribe_reach_the_new_subscriber(hub: Hub) -> None:
    codec = CountingCodec("c")
    sub = FakeSub("new", codec=codec)
    hub.begin_subscribe(CH)
    for off in (5, 6, 7):  # arrive before the answer, which says the stream stood at 5
        hub.handle_publication(CH, _pub(off), StreamPosition(off, "E"))
    hub.subscribe(CH, sub, False, StreamPosition(5, "E"))
    hub.end_subscribe(CH)
    assert sub.writes == [b"c|pub|news|6|6", b"c|pub|news|7|7"]
    assert (hub.channels[CH].epoch, hub.channels[CH].offset) == ("E", 7)
    hub.handle_publication(CH, _pub(8), StreamPosition(8, "E"))
    assert sub.writes[-1] == b"c|pub|news|8|8" and sub.gaps == []


def test_existing_subscribers_keep_their_position_when_a_late_answer_arrives(hub: Hub) -> None:
    (old,) = _subs(hub, 1, position=StreamPosition(4, "E"))
    hub.begin_subscribe(CH)
    for off in (5, 6):
        hub.handle_publication(CH, _pub(off), StreamPosition(off, "E"))
    new = FakeSub("new")
    hub.subscribe(CH, new, False, StreamPosition(5, "E"))  # read before 6 was published
    hub.end_subscribe(CH)
    assert hub.channels[CH].offset == 6  # never moves back
    assert len(old.writes) == 2 and len(new.writes) == 1
    hub.handle_publication(CH, _pub(7), StreamPosition(7, "E"))
    assert old.gaps == [] and new.gaps == []


def test_a_new_epoch_in_an_answer_makes_existing_subscribers_recover(hub: Hub) -> None:
    (old,) = _subs(hub, 1, position=StreamPosition(9, "OLD"))
    new = FakeSub("new")
    hub.begin_subscribe(CH)
    hub.subscribe(CH, new, False, StreamPosition(1, "NEW"))
    hub.end_subscribe(CH)
    assert old.gaps == [CH] and new.gaps == []
    assert (hub.channels[CH].epoch, hub.channels[CH].offset) == ("NEW", 1)


def test_pending_buffer_is_bounded_at_its_default(hub: Hub) -> None:
    import gateway.hub

    assert gateway.hub._PENDING_MAX == 10_000
    hub.begin_subscribe(CH)
    for off in range(1, 10_002):
        hub.handle_publication(CH, _pub(off), StreamPosition(off, "E"))
    sub = FakeSub("new")
    hub.subscribe(CH, sub, False, StreamPosition(0, "E"))
    hub.end_subscribe(CH)
    assert sub.gaps == [CH]  # too much arrived meanwhile: resubscribe and recover


def test_pending_state_is_dropped_after_the_last_answer(hub: Hub) -> None:
    hub.begin_subscribe(CH)
    hub.begin_subscribe(CH)
    hub.end_subscribe(CH)
    hub.handle_publication(CH, _pub(1), StreamPosition(1, "E"))
    hub.end_subscribe(CH)
    hub.handle_publication(CH, _pub(2), StreamPosition(2, "E"))
    assert hub._pending == {}


def test_a_hole_in_what_arrived_during_the_subscribe_is_a_gap_never_skipped(hub: Hub) -> None:
    sub = FakeSub("new")
    hub.begin_subscribe(CH)
    for off in (6, 8):  # 7 was lost between the engine and this worker
        hub.handle_publication(CH, _pub(off), StreamPosition(off, "E"))
    hub.subscribe(CH, sub, False, StreamPosition(5, "E"))
    hub.end_subscribe(CH)
    assert sub.gaps == [CH]  # resubscribe and recover 7 from the stream, never jump over it
    assert len(sub.writes) == 1  # 6, then stop at the hole


def test_a_subscribe_reply_ahead_of_the_fan_out_does_not_rob_the_others(hub: Hub) -> None:
    """With the Redis engine a subscribe reply is read from the stream on another connection
    than pub/sub, so it can carry offsets that have not reached this worker yet. Those still
    arrive and must reach the subscribers already here, once, and not the new one again."""
    old, = _subs(hub, 1, position=pos(4))
    deliver(hub, "p5", 5)
    new = FakeSub("late", "u", hub)
    hub.add_client(new)
    hub.subscribe(CH, new, False, pos(7))  # its reply carried 5..7; 6 and 7 are still in flight
    deliver(hub, "p6", 6)
    deliver(hub, "p7", 7)
    deliver(hub, "p8", 8)
    assert received(old) == ["p5", "p6", "p7", "p8"] and old.gaps == []
    assert received(new) == ["p8"] and new.gaps == []
    deliver(hub, "p8", 8)  # a duplicate is still a duplicate for everyone
    assert received(old)[-1] == "p8" and len(received(old)) == 4 and received(new) == ["p8"]
    assert not hub.channels[CH].ahead, "nothing left to skip once the others caught up"


def test_an_ahead_subscriber_that_leaves_is_forgotten(hub: Hub) -> None:
    old, = _subs(hub, 1, position=pos(4))
    deliver(hub, "p5", 5)
    new = FakeSub("late", "u", hub)
    hub.subscribe(CH, new, False, pos(9))
    hub.unsubscribe(CH, new)
    assert not hub.channels[CH].ahead
    deliver(hub, "p6", 6)
    assert received(old) == ["p5", "p6"]


# -- end-of-tick batches (a hub with a loop) ----------------------------------------------------


class Tick:
    """The loop's call_soon, run by hand: ``end()`` is the end of the loop tick."""

    def __init__(self) -> None:
        self.callbacks: list[Any] = []

    def __call__(self, callback: Any) -> None:
        self.callbacks.append(callback)

    def end(self) -> None:
        callbacks, self.callbacks = self.callbacks, []
        for callback in callbacks:
            callback()


@pytest.fixture
def tick() -> Tick:
    return Tick()


@pytest.fixture
def ticked(tick: Tick) -> Hub:
    return Hub(call_soon=tick)


def frames(sub: FakeSub) -> list[list[Any]]:
    """Each write as the list of publication data it carried (one frame may join several)."""
    return [[orjson.loads(part)["push"]["pub"]["data"] for part in w.split(b"\n")] for w in sub.writes]


def test_a_tick_of_publications_is_one_frame_the_same_bytes_for_each(ticked: Hub, tick: Tick) -> None:
    subs = _subs(ticked, 3)
    for n in range(1, 4):
        deliver(ticked, n, n)
    assert all(s.writes == [] for s in subs)  # nothing written before the tick ends
    assert len(tick.callbacks) == 1  # one callback per tick, whatever the publications
    tick.end()
    assert [frames(s) for s in subs] == [[[1, 2, 3]]] * 3
    assert all(s.writes[0] is subs[0].writes[0] for s in subs)
    deliver(ticked, 4, 4)
    tick.end()
    assert frames(subs[0]) == [[1, 2, 3], [4]]


def test_a_subscriber_added_mid_tick_gets_nothing_from_before_it(ticked: Hub, tick: Tick) -> None:
    old = _subs(ticked, 1)[0]
    deliver(ticked, 1, 1)
    new = FakeSub("new")
    ticked.subscribe(CH, new, False, pos(1))
    assert frames(old) == [[1]]  # written out before the group changed
    deliver(ticked, 2, 2)
    tick.end()
    assert frames(old) == [[1], [2]]
    assert frames(new) == [[2]]


def test_a_subscriber_leaving_mid_tick_still_gets_what_came_while_it_was_there(ticked: Hub, tick: Tick) -> None:
    leaving, staying = _subs(ticked, 2)
    deliver(ticked, 1, 1)
    assert ticked.unsubscribe(CH, leaving)
    deliver(ticked, 2, 2)
    tick.end()
    assert frames(leaving) == [[1]]
    assert frames(staying) == [[1], [2]]


def test_join_and_leave_keep_their_place_among_batched_publications(ticked: Hub, tick: Tick) -> None:
    sub = FakeSub("s")
    ticked.subscribe(CH, sub, True, None)
    deliver(ticked, "before")
    ticked.handle_join(CH, ClientInfo("bob", "c9"))
    deliver(ticked, "after")
    tick.end()
    kinds = [next(iter(orjson.loads(w.split(b"\n")[0])["push"].keys() - {"channel"})) for w in sub.writes]
    assert kinds == ["pub", "join", "pub"]


def test_a_gap_writes_what_came_before_it_first(ticked: Hub, tick: Tick) -> None:
    subs = _subs(ticked, 2, position=pos(0), drop_on_gap=True)
    deliver(ticked, 1, 1)
    deliver(ticked, 3, 3)  # 2 never arrived
    assert [frames(s) for s in subs] == [[[1]]] * 2
    assert all(s.gaps == [CH] for s in subs)
    tick.end()
    assert [frames(s) for s in subs] == [[[1]]] * 2  # they left: 3 is not theirs


def test_a_subscriber_already_ahead_gets_the_batch_before_the_skipping_path(ticked: Hub, tick: Tick) -> None:
    first = _subs(ticked, 1, position=pos(0))[0]
    deliver(ticked, 1, 1)
    ahead = FakeSub("ahead")
    ticked.begin_subscribe(CH)
    ticked.handle_publication(CH, publication(2, 2), pos(2))
    ticked.subscribe(CH, ahead, False, pos(3))  # its reply already carried 2 and 3
    ticked.end_subscribe(CH)
    ticked.handle_publication(CH, publication(3, 3), pos(3))
    ticked.handle_publication(CH, publication(4, 4), pos(4))
    tick.end()
    assert [d for f in frames(first) for d in f] == [1, 2, 3, 4]
    assert [d for f in frames(ahead) for d in f] == [4]


def test_a_write_that_raises_costs_the_others_nothing(ticked: Hub, tick: Tick) -> None:
    subs = _subs(ticked, 3)

    def broken(data: bytes) -> None:
        raise RuntimeError("transport gone")

    subs[1].push_now = broken
    deliver(ticked, 1, 1)
    tick.end()
    assert frames(subs[0]) == [[1]] and frames(subs[2]) == [[1]]
    deliver(ticked, 2, 2)  # the channel is scheduled again on the next tick
    assert len(tick.callbacks) == 1
    tick.end()
    assert frames(subs[2]) == [[1], [2]]
