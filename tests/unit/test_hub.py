"""Hub: local subscriber indexes and synchronous fan-out with gap/duplicate detection."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.core.errors import Unsubscribe
from gateway.hub import Hub
from sharding.envelope import FLAG_JOIN_LEAVE

CH = "news"


class FakeSub:
    """A connection as the hub sees it; hashable by identity like the real Session."""

    def __init__(self, client_id: str, user: str = "", hub: Hub | None = None,
                 drop_on_gap: bool = False) -> None:
        self.client_id = client_id
        self.user = user
        self.writes: list[bytes] = []
        self.gaps: list[str] = []
        self.unsubscribed: list[tuple[str, Unsubscribe]] = []
        self._hub = hub
        self._drop_on_gap = drop_on_gap

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def on_stream_gap(self, channel: str) -> None:
        self.gaps.append(channel)
        if self._drop_on_gap and self._hub is not None:
            # What a positioned Session does: unsubscribe (2500) and resubscribe later.
            self._hub.unsubscribe(channel, self)

    def server_unsubscribe(self, channel: str, reason: Unsubscribe) -> None:
        self.unsubscribed.append((channel, reason))

    def __repr__(self) -> str:
        return f"FakeSub({self.client_id!r})"


@pytest.fixture
def hub() -> Hub:
    return Hub()


def _subs(hub: Hub, n: int, join_leave: bool = False, epoch: str = "", offset: int = 0,
          channel: str = CH, **kw: Any) -> list[FakeSub]:
    subs = [FakeSub(f"c{i}", f"u{i}", hub, **kw) for i in range(n)]
    for s in subs:
        hub.add_client(s)
        hub.subscribe(channel, s, join_leave, epoch, offset)
    return subs


# -- clients and users ----------------------------------------------------------------------


def test_add_and_remove_client(hub: Hub) -> None:
    a = FakeSub("c1", "alice")
    b = FakeSub("c2", "alice")
    c = FakeSub("c3", "bob")
    for s in (a, b, c):
        hub.add_client(s)
    assert hub.clients == {"c1": a, "c2": b, "c3": c}
    assert hub.users == {"alice": {"c1", "c2"}, "bob": {"c3"}}
    assert set(hub.user_clients("alice")) == {a, b}
    hub.remove_client(a)
    assert "c1" not in hub.clients
    assert hub.users["alice"] == {"c2"}
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
    old = FakeSub("c1", "alice")
    new = FakeSub("c1", "alice")
    hub.add_client(old)
    hub.add_client(new)  # same id re-registered
    hub.remove_client(old)
    assert hub.clients.get("c1") is new


def test_remove_stale_client_keeps_replacement_in_user_index(hub: Hub) -> None:
    old = FakeSub("c1", "alice")
    new = FakeSub("c1", "alice")
    hub.add_client(old)
    hub.add_client(new)
    hub.remove_client(old)
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
    assert hub.unsubscribe(CH, a) is True
    assert hub.unsubscribe(CH, a) is False
    assert hub.num_subscriptions() == 1
    assert hub.unsubscribe(CH, b) is True
    assert CH not in hub.channels
    assert hub.unsubscribe("never", b) is False


def test_subscribe_sets_position_only_with_epoch(hub: Hub) -> None:
    a = FakeSub("a")
    hub.subscribe(CH, a, False, "E", 5)
    hub.subscribe(CH, FakeSub("b"), False, "", 0)
    local = hub.channels[CH]
    assert (local.epoch, local.offset) == ("E", 5)


# -- delivery -------------------------------------------------------------------------------


def test_deliver_same_bytes_object_to_each(hub: Hub) -> None:
    subs = _subs(hub, 4)
    data = b'{"push":{"channel":"news","pub":{"data":1}}}'
    assert hub.deliver(CH, data, 0, "", 0) == 4
    for s in subs:
        assert len(s.writes) == 1
        assert s.writes[0] is data


def test_deliver_to_unknown_channel(hub: Hub) -> None:
    _subs(hub, 2)
    assert hub.deliver("other", b"x", 0, "", 0) == 0
    assert hub.deliver("other", b"x", 1, "E", 0) == 0


def test_join_leave_flag_filters(hub: Hub) -> None:
    wants = [FakeSub("j1"), FakeSub("j2")]
    plain = [FakeSub("p1")]
    for s in wants:
        hub.subscribe(CH, s, True, "", 0)
    for s in plain:
        hub.subscribe(CH, s, False, "", 0)
    join = b'{"push":{"channel":"news","join":{}}}'
    assert hub.deliver(CH, join, 0, "", FLAG_JOIN_LEAVE) == 2
    assert [s.writes for s in wants] == [[join], [join]]
    assert plain[0].writes == []
    pub = b"pub"
    assert hub.deliver(CH, pub, 0, "", 0) == 3
    assert plain[0].writes == [pub]
    assert wants[0].writes == [join, pub]


def test_positioned_delivery_tracks_offset(hub: Hub) -> None:
    (s,) = _subs(hub, 1, epoch="E", offset=2)
    for off in (3, 4, 5):
        assert hub.deliver(CH, b"p%d" % off, off, "E", 0) == 1
    assert s.writes == [b"p3", b"p4", b"p5"]
    assert s.gaps == []
    local = hub.channels[CH]
    assert (local.epoch, local.offset) == ("E", 5)


def test_duplicates_skipped(hub: Hub) -> None:
    (s,) = _subs(hub, 1, epoch="E", offset=2)
    hub.deliver(CH, b"p3", 3, "E", 0)
    assert hub.deliver(CH, b"p3-again", 3, "E", 0) == 0
    assert hub.deliver(CH, b"old", 1, "E", 0) == 0
    assert s.writes == [b"p3"]
    assert s.gaps == []
    assert hub.channels[CH].offset == 3


def test_reply_position_skips_already_seen(hub: Hub) -> None:
    # A subscribe reply at offset 5 means publications up to 5 were already seen.
    (s,) = _subs(hub, 1, epoch="E", offset=5)
    assert hub.deliver(CH, b"p5", 5, "E", 0) == 0
    assert hub.deliver(CH, b"p6", 6, "E", 0) == 1
    assert s.writes == [b"p6"]


def test_gap_calls_on_stream_gap(hub: Hub) -> None:
    a, b = _subs(hub, 2, epoch="E", offset=1)
    hub.deliver(CH, b"p4", 4, "E", 0)  # 2 and 3 were lost
    assert a.gaps == [CH] and b.gaps == [CH]
    local = hub.channels[CH]
    assert (local.epoch, local.offset) == ("E", 4)
    # The next one in sequence is no gap.
    hub.deliver(CH, b"p5", 5, "E", 0)
    assert a.gaps == [CH]


def test_epoch_change_is_a_gap(hub: Hub) -> None:
    (s,) = _subs(hub, 1, epoch="OLD", offset=7)
    hub.deliver(CH, b"new1", 1, "NEW", 0)
    assert s.gaps == [CH]
    assert (hub.channels[CH].epoch, hub.channels[CH].offset) == ("NEW", 1)


def test_epoch_change_with_lower_offset_is_not_duplicate(hub: Hub) -> None:
    (s,) = _subs(hub, 1, epoch="OLD", offset=7)
    hub.deliver(CH, b"x", 3, "NEW", 0)
    assert s.gaps == [CH]


def test_gap_subscribers_that_leave_do_not_get_data(hub: Hub) -> None:
    subs = _subs(hub, 3, epoch="E", offset=1, drop_on_gap=True)
    assert hub.deliver(CH, b"p9", 9, "E", 0) == 0
    for s in subs:
        assert s.gaps == [CH]
        assert s.writes == []
    assert CH not in hub.channels


def test_gap_with_mixed_subscribers(hub: Hub) -> None:
    positioned = FakeSub("pos", hub=hub, drop_on_gap=True)
    plain = FakeSub("plain", hub=hub)
    hub.subscribe(CH, positioned, False, "E", 1)
    hub.subscribe(CH, plain, False, "", 0)
    assert hub.deliver(CH, b"p3", 3, "E", 0) == 1
    assert positioned.writes == [] and positioned.gaps == [CH]
    assert plain.writes == [b"p3"]


def test_unpositioned_channel_accepts_any_offset(hub: Hub) -> None:
    (s,) = _subs(hub, 1)
    hub.deliver(CH, b"a", 10, "E", 0)
    hub.deliver(CH, b"b", 11, "E", 0)
    assert s.gaps == []
    assert s.writes == [b"a", b"b"]


def test_positionless_push_does_not_move_position(hub: Hub) -> None:
    (s,) = _subs(hub, 1, join_leave=True, epoch="E", offset=3)
    hub.deliver(CH, b"join", 0, "", FLAG_JOIN_LEAVE)
    hub.deliver(CH, b"pub-no-history", 0, "", 0)
    assert (hub.channels[CH].epoch, hub.channels[CH].offset) == ("E", 3)
    hub.deliver(CH, b"p4", 4, "E", 0)
    assert s.gaps == []
    assert s.writes == [b"join", b"pub-no-history", b"p4"]
