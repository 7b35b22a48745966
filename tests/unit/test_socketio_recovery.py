"""gateway.socketio.recovery: pid parsing, kept sessions (TTL, cap, take once), the state
codec for the bus, and which position each room recovers from. No sockets, no loop."""

from __future__ import annotations

import orjson

from gateway.socketio.recovery import (
    MAX_NODE_ID_LENGTH,
    MAX_PID_LENGTH,
    MAX_ROOMS,
    MAX_STATE_BYTES,
    PidStore,
    SavedSession,
    decode_state,
    encode_state,
    pack_kept,
    parse_recovery,
    unpack_kept,
)

STATE = SavedSession("/", "alice", (("room", 7, "ab12"), ("other", 3, "cd34")))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_parse_recovery() -> None:
    req = parse_recovery({"pid": "1_abc", "offset": "3 room"}, workers=2)
    assert req is not None and (req.pid, req.slot, req.offset) == ("1_abc", 1, "3 room")
    assert parse_recovery({"pid": "0_abc"}, 2) is not None  # no event received yet: no offset
    for bad in ({}, {"pid": 5}, {"pid": ""}, {"pid": "abc"}, {"pid": "2_abc"}, {"pid": "1_"},
                {"pid": "x_abc"}, {"pid": "123456_a"}, {"pid": "0_" + "a" * MAX_PID_LENGTH}):
        assert parse_recovery(bad, workers=2) is None, bad


def test_positions_take_the_clients_offset_when_behind() -> None:
    assert STATE.positions("5 room") == {"room": (5, "ab12"), "other": (3, "cd34")}
    assert STATE.positions("9 room") == {"room": (7, "ab12"), "other": (3, "cd34")}  # never ahead
    for ignored in (None, 5, "x room", "5", "5 unknown", ["5 room"], "9" * 5000 + " room"):
        assert STATE.positions(ignored) == {"room": (7, "ab12"), "other": (3, "cd34")}


def test_store_takes_once_and_expires() -> None:
    clock = Clock()
    store = PidStore(ttl=10.0, max_sessions=100, clock=clock)
    assert store.put("0_a", STATE)
    assert store.take("0_a") == STATE
    assert store.take("0_a") is None
    store.put("0_b", STATE)
    clock.now += 5
    store.put("0_c", STATE)
    clock.now += 6  # b expired, c not
    assert store.take("0_b") is None and len(store) == 1
    assert store.take("0_c") == STATE


def test_store_cap_drops_the_oldest() -> None:
    store = PidStore(ttl=10.0, max_sessions=2, clock=Clock())
    for pid in ("0_a", "0_b", "0_c"):
        store.put(pid, STATE)
    assert len(store) == 2 and store.take("0_a") is None and store.take("0_c") == STATE
    assert not PidStore(10.0, 0, Clock()).put("0_a", STATE)
    many = SavedSession("/", "u", tuple((f"r{i}", 1, "e") for i in range(MAX_ROOMS + 1)))
    assert not store.put("0_d", many)


def test_state_codec_round_trip_and_bad_input() -> None:
    assert decode_state(encode_state(STATE)) == STATE
    assert decode_state(b"") is None
    assert decode_state(b"x" * (MAX_STATE_BYTES + 1)) is None
    for bad in (b"{", b"[]", b'{"nsp":"/","user":"u"}', b'{"nsp":"/","user":"u","rooms":[["r",-1,"e"]]}',
                b'{"nsp":"/","user":"u","rooms":[["r",1]]}', b'{"nsp":1,"user":"u","rooms":[]}',
                b'{"nsp":"/","user":"u","rooms":[["r",1.5,"e"]]}'):
        assert decode_state(bad) is None, bad
    rooms = [["r", 1, "e"]] * (MAX_ROOMS + 1)
    assert decode_state(orjson.dumps({"nsp": "/", "user": "u", "rooms": rooms})) is None


# -- packed state in Redis (the Redis engine: recovery across nodes) -----------------------------

def test_pack_kept_round_trip_at_drop_and_snapshot() -> None:
    dropped = pack_kept(STATE)
    assert dropped.startswith(b"\n")
    assert unpack_kept(dropped) == STATE and not STATE.live
    snap = pack_kept(STATE, "host-12-8000")
    assert snap.startswith(b"host-12-8000\n")
    live = unpack_kept(snap)
    assert live is not None and live.live and (live.nsp, live.user, live.rooms) == (STATE.nsp, STATE.user, STATE.rooms)


def test_unpack_kept_rejects_malformed() -> None:
    body = encode_state(STATE)
    for bad in (None, b"", body, b"node" + body, b"x" * (MAX_NODE_ID_LENGTH + 1) + b"\n" + body,
                b"\n" + b"x" * (MAX_STATE_BYTES + 1), b"\n{}", b"\nnot json"):
        assert unpack_kept(bad) is None, bad[:40] if bad else bad
    for bad_node in ("a\nb", "n" * (MAX_NODE_ID_LENGTH + 1)):
        try:
            pack_kept(STATE, bad_node)
        except ValueError:
            continue
        raise AssertionError(bad_node)


def test_snapshot_positions_take_the_clients_offset_either_way() -> None:
    live = SavedSession(STATE.nsp, STATE.user, STATE.rooms, live=True)
    assert live.positions("9 room") == {"room": (9, "ab12"), "other": (3, "cd34")}  # written before it got 8, 9
    assert live.positions("5 room") == {"room": (5, "ab12"), "other": (3, "cd34")}
    assert live.positions(None) == {"room": (7, "ab12"), "other": (3, "cd34")}


def test_parse_recovery_any_slot_for_another_nodes_pid() -> None:
    assert parse_recovery({"pid": "7_abc"}, workers=2) is None
    req = parse_recovery({"pid": "7_abc"}, workers=2, any_slot=True)
    assert req is not None and req.slot == 7
