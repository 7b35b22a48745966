"""MemoryEngine across workers, wired through an in-memory bus (ordered per pair of slots,
like ZeroMQ PUSH/PULL), with a fake loop and clock driving the routers' timeouts."""

from __future__ import annotations

import random
import struct
from collections import deque
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from gateway.cluster.router import Router
from gateway.core.errors import ClientError
from gateway.core.model import (
    ClientInfo,
    HistoryFilter,
    HistoryResult,
    PresenceStats,
    Publication,
    PublishOptions,
    StreamOptions,
    StreamPosition,
    SubscribeAnswer,
    SubscribeRequest,
)
from gateway.engine.memory import MemoryEngine
from gateway.engine.owner import EMPTY_STREAM_GRACE
from gateway.obs.stats import Stats
from sharding.envelope import Envelope, Kind, decode, encode, encode_batch, split_batch
from sharding.hashing import owner

STREAM = StreamOptions(100, 300.0, 3600.0)
TIMEOUT = 1.0
_ABSENT = 0xFFFFFFFF


def channel_owned_by(slot: int, workers: int, prefix: str = "ch") -> str:
    """The first channel name ``prefix<i>`` whose owner is ``slot``."""
    for i in range(10_000):
        name = f"{prefix}{i}"
        if owner(name, workers) == slot:
            return name
    raise AssertionError("no such channel")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _Handle:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """``call_later``/``call_soon`` on the fake clock; :meth:`advance` runs what is due."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.timers: list[tuple[float, int, _Handle, Callable[..., Any], tuple[Any, ...]]] = []
        self._seq = 0

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> _Handle:
        handle = _Handle()
        self._seq += 1
        self.timers.append((self.clock.now + delay, self._seq, handle, callback, args))
        return handle

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> _Handle:
        return self.call_later(0.0, callback, *args)

    def advance(self, seconds: float) -> None:
        end = self.clock.now + seconds
        while True:
            due = sorted(t for t in self.timers if t[0] <= end)
            if not due:
                break
            timer = due[0]
            self.timers.remove(timer)
            self.clock.now = max(self.clock.now, timer[0])
            if not timer[2].cancelled:
                timer[3](*timer[4])
        self.clock.now = end


class Network:
    """Queues per (from, to) pair; :meth:`pump` delivers in order per pair."""

    def __init__(self) -> None:
        self.routers: dict[int, Router] = {}
        self.queues: dict[tuple[int, int], deque[Envelope]] = {}
        self.dead: set[int] = set()
        self.messages = 0  # bus messages carrying deliveries (one per slot and tick)
        self.loop: FakeLoop | None = None  # its due callbacks (the routers' outbox flushes) run first

    def pump(self, pairs: list[tuple[int, int]] | None = None, limit: int = 10_000, run_loop: bool = True) -> int:
        delivered = 0
        while delivered < limit:
            if self.loop is not None and run_loop:
                self.loop.advance(0.0)
            ready = [k for k, q in self.queues.items() if q and (pairs is None or k in pairs)]
            if not ready:
                return delivered
            for key in ready:
                env = self.queues[key].popleft()
                delivered += 1
                self.routers[key[1]].on_envelope(env)
        raise AssertionError("the bus never went quiet")


class FakeBus:
    def __init__(self, net: Network, slot: int) -> None:
        self.net = net
        self.slot = slot
        self.endpoint = f"inproc://slot-{slot}"
        self.connected: list[tuple[int, str]] = []

    def send(self, slot: int, env: Envelope) -> bool:
        if slot in self.net.dead:
            return False
        # Through the real frame codec, as ZeroMQ would carry it.
        self.net.queues.setdefault((self.slot, slot), deque()).append(decode(encode(env)))
        return True

    def send_frames(self, slot: int, frames: list[bytes]) -> bool:
        if slot in self.net.dead:
            return False
        self.net.messages += 1
        # As ZmqBus sends them: one message, a BATCH when more than one, split on arrival.
        message = frames[0] if len(frames) == 1 else encode_batch(frames)
        env = decode(message)
        queue = self.net.queues.setdefault((self.slot, slot), deque())
        if env.kind is Kind.BATCH:
            queue.extend(decode(f) for f in split_batch(env.payload))
        else:
            queue.append(env)
        return True

    def connect_peer(self, slot: int, path: str) -> None:
        self.connected.append((slot, path))

    def send_all_to(self, path: str, envelopes: list[Envelope], timeout: float) -> bool:
        return False


class Recorder:
    """A BrokerEventHandler recording what reaches this worker, in one event list."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def handle_publication(self, channel: str, pub: Publication, position: StreamPosition | None) -> None:
        self.events.append(("pub", channel, orjson.loads(pub.data), pub.offset, position))

    def handle_join(self, channel: str, info: ClientInfo) -> None:
        self.events.append(("join", channel, info.client))

    def handle_leave(self, channel: str, info: ClientInfo) -> None:
        self.events.append(("leave", channel, info.client))

    def handle_stream_lost(self, channel: str) -> None:
        self.events.append(("lost", channel))

    def pubs(self, channel: str) -> list[Any]:
        return [e[2] for e in self.events if e[0] == "pub" and e[1] == channel]


class Done:
    """A ``done`` callback that records its calls (and into a shared event list)."""

    def __init__(self, events: list[tuple[Any, ...]] | None = None) -> None:
        self.calls: list[tuple[Any, ClientError | None]] = []
        self.events = events

    def __call__(self, result: Any, error: ClientError | None) -> None:
        self.calls.append((result, error))
        if self.events is not None:
            self.events.append(("done", result, error))

    @property
    def result(self) -> Any:
        assert len(self.calls) == 1, self.calls
        result, error = self.calls[0]
        assert error is None, error
        return result

    @property
    def error(self) -> ClientError:
        assert len(self.calls) == 1, self.calls
        error = self.calls[0][1]
        assert error is not None
        return error


class Cluster:
    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.clock = FakeClock()
        self.loop = FakeLoop(self.clock)
        self.net = Network()
        self.net.loop = self.loop
        self.engines: dict[int, MemoryEngine] = {}
        self.handlers: dict[int, Recorder] = {}
        for slot in range(workers):
            self.start(slot, seed=slot)
        self.net.pump()

    def start(self, slot: int, seed: int) -> MemoryEngine:
        stats = Stats()
        router = Router(slot, self.workers, self.loop, self.clock, random.Random(seed), TIMEOUT,  # type: ignore[arg-type]
                        stats)
        handler = Recorder()
        engine = MemoryEngine(router, handler, self.clock, random.Random(1000 + seed), stats, lambda ch: True)
        router.on_request = engine.handle_request
        router.on_notify = engine.handle_notify
        router.on_delivery = engine.handle_delivery
        router.on_peer_restarted = engine.forget_slot
        self.net.routers[slot] = router
        self.engines[slot] = engine
        self.handlers[slot] = handler
        if self.workers > 1:
            router.attach(FakeBus(self.net, slot))
        return engine

    def pump(self) -> None:
        self.net.pump()


def publication(data: Any, client: str = "pub") -> Publication:
    return Publication(orjson.dumps(data), ClientInfo("u", client))


def positioned(since: StreamPosition | None = None) -> SubscribeRequest:
    return SubscribeRequest(STREAM, True, since is not None, since)


@pytest.fixture
def two() -> Cluster:
    return Cluster(2)


@pytest.fixture
def three() -> Cluster:
    return Cluster(3)


def test_routers_ready_after_hellos(three: Cluster) -> None:
    assert all(r.ready for r in three.net.routers.values())


def test_remote_publish_gets_owner_offsets_in_order(two: Cluster) -> None:
    ch = channel_owned_by(1, 2)
    dones = [Done() for _ in range(3)]
    for i, done in enumerate(dones):
        two.engines[0].publish(ch, publication(i), PublishOptions(STREAM), done)
    assert all(d.calls == [] for d in dones)  # it travels: nothing answered yet
    two.pump()
    positions = [d.result for d in dones]
    assert [p.offset for p in positions] == [1, 2, 3]
    assert len({p.epoch for p in positions}) == 1
    local = Done()
    two.engines[1].publish(ch, publication(3), PublishOptions(STREAM), local)
    assert local.result == StreamPosition(4, positions[0].epoch)


def test_subscribe_answer_precedes_later_publication(two: Cluster) -> None:
    ch = channel_owned_by(1, 2)
    two.engines[1].publish(ch, publication("before"), PublishOptions(STREAM), Done())
    events = two.handlers[0].events
    done = Done(events)
    two.engines[0].subscribe(ch, positioned(), done)
    two.net.pump([(0, 1)])  # the owner registers interest and queues its answer
    two.engines[1].publish(ch, publication("after"), PublishOptions(STREAM), Done())  # queued behind the answer
    two.pump()
    answer = done.result
    assert isinstance(answer, SubscribeAnswer) and answer.position is not None
    assert answer.position.offset == 1
    assert [e[0] for e in events] == ["done", "pub"]
    assert events[1][2:] == ("after", 2, StreamPosition(2, answer.position.epoch))


def test_deliveries_of_one_tick_to_a_slot_are_one_bus_message(three: Cluster) -> None:
    ch = channel_owned_by(1, 3)
    for slot in (0, 2):
        three.engines[slot].subscribe(ch, positioned(), Done())
    three.pump()
    before = three.net.messages
    for i in range(5):
        three.engines[1].publish(ch, publication(i), PublishOptions(STREAM), Done())
    assert three.net.messages == before + 2  # the first of the tick to each slot goes at once
    three.pump()
    assert three.net.messages == before + 4  # the other four in one BATCH per slot at the tick's end
    for slot in (0, 2):
        assert three.handlers[slot].pubs(ch) == [0, 1, 2, 3, 4]


def test_reply_follows_the_deliveries_queued_before_it(two: Cluster) -> None:
    """A reply leaves after what the tick queued for that slot: the pipe's order is what the
    subscribe answer's position relies on."""
    ch = channel_owned_by(1, 2)
    events = two.handlers[0].events
    two.engines[0].subscribe(ch, positioned(), Done())
    two.pump()
    done = Done(events)
    two.engines[0].subscribe(channel_owned_by(1, 2, prefix="other"), positioned(), done)  # a request to the owner
    two.loop.advance(0.0)
    for data in ("sent", "held"):  # the first of the tick goes at once, the second waits in the outbox
        two.engines[1].publish(ch, publication(data), PublishOptions(STREAM), Done())
    two.net.pump([(0, 1)], run_loop=False)  # the owner answers before its tick ends: the outbox goes first
    assert [e.kind for e in two.net.queues[(1, 0)]] == [Kind.PUBLICATION, Kind.PUBLICATION, Kind.REPLY]
    two.pump()
    assert [e[0] for e in events] == ["pub", "pub", "done"]


def test_every_slot_receives_every_publication_once(three: Cluster) -> None:
    ch = channel_owned_by(1, 3)
    for slot in range(3):
        for _ in range(2):  # two local subscribers per slot: still one delivery per slot
            three.engines[slot].subscribe(ch, SubscribeRequest(), Done())
    three.pump()
    expected = []
    for i in range(9):
        three.engines[i % 3].publish(ch, publication(i), PublishOptions(STREAM), Done())
        expected.append(i)
    three.pump()
    offsets = {}
    for slot in range(3):
        got = [e for e in three.handlers[slot].events if e[0] == "pub"]
        assert sorted(e[2] for e in got) == expected
        offsets[slot] = [e[3] for e in got]
        assert offsets[slot] == list(range(1, 10))  # in the owner's order, no duplicate
    assert all(e[4] is not None and e[4].offset == e[3] for e in three.handlers[0].events)


def test_positionless_publication_across_slots(two: Cluster) -> None:
    ch = channel_owned_by(1, 2)
    two.engines[0].subscribe(ch, SubscribeRequest(), Done())
    two.pump()
    done = Done()
    two.engines[0].publish(ch, publication("x"), PublishOptions(), done)
    two.pump()
    assert done.result == StreamPosition(0, "")
    assert two.handlers[0].events == [("pub", ch, "x", 0, None)]


def test_join_leave_across_slots(three: Cluster) -> None:
    ch = channel_owned_by(2, 3)
    three.engines[0].subscribe(ch, SubscribeRequest(), Done())
    three.pump()
    three.engines[1].publish_join(ch, ClientInfo("u", "c1"))
    three.engines[1].publish_leave(ch, ClientInfo("u", "c1"))
    three.pump()
    assert three.handlers[0].events == [("join", ch, "c1"), ("leave", ch, "c1")]
    assert three.handlers[1].events == [] and three.handlers[2].events == []


def test_presence_across_slots(three: Cluster) -> None:
    ch = channel_owned_by(1, 3)
    three.engines[0].add_presence(ch, ClientInfo("alice", "c0"))
    three.engines[2].add_presence(ch, ClientInfo("alice", "c2", b'{"x":1}'))
    three.engines[1].add_presence(ch, ClientInfo("bob", "c1"))
    three.pump()
    pres, stats = Done(), Done()
    three.engines[0].presence(ch, pres)
    three.engines[2].presence_stats(ch, stats)
    three.pump()
    assert pres.result == {"c0": ClientInfo("alice", "c0"), "c2": ClientInfo("alice", "c2", b'{"x":1}'),
                           "c1": ClientInfo("bob", "c1")}
    assert stats.result == PresenceStats(3, 2)
    three.engines[2].remove_presence(ch, "c2", "alice")
    three.pump()
    again = Done()
    three.engines[0].presence(ch, again)
    three.pump()
    assert set(again.result) == {"c0", "c1"}


def test_history_across_slots(three: Cluster) -> None:
    ch = channel_owned_by(2, 3)
    for i in range(4):
        three.engines[i % 2].publish(ch, Publication(orjson.dumps(i), ClientInfo("u", f"c{i}"), tags={"i": str(i)}),
                                     PublishOptions(STREAM), Done())
    three.pump()
    done = Done()
    three.engines[1].history(ch, HistoryFilter(-1), STREAM, done)
    three.pump()
    result = done.result
    assert isinstance(result, HistoryResult)
    assert result.position.offset == 4
    assert [(p.offset, orjson.loads(p.data), p.info, p.tags) for p in result.publications] == [
        (i + 1, i, ClientInfo("u", f"c{i}"), {"i": str(i)}) for i in range(4)]
    since = Done()
    three.engines[0].history(ch, HistoryFilter(2, StreamPosition(1, result.position.epoch)), STREAM, since)
    wrong = Done()
    three.engines[0].history(ch, HistoryFilter(2, StreamPosition(1, "WRONG")), STREAM, wrong)
    removed: list[ClientError | None] = []
    three.engines[0].remove_history(ch, removed.append)
    three.pump()
    assert [p.offset for p in since.result.publications] == [2, 3]
    assert wrong.error.code == 112
    assert removed == [None]
    after = Done()
    three.engines[1].history(ch, HistoryFilter(-1), STREAM, after)
    three.pump()
    assert after.result == HistoryResult(result.position, [])


def test_recovery_across_slots(two: Cluster) -> None:
    ch = channel_owned_by(1, 2)
    first = Done()
    two.engines[1].publish(ch, publication(1), PublishOptions(STREAM), first)
    for i in range(2, 5):
        two.engines[1].publish(ch, publication(i), PublishOptions(STREAM), Done())
    done = Done()
    two.engines[0].subscribe(ch, positioned(StreamPosition(1, first.result.epoch)), done)
    two.pump()
    answer = done.result
    assert answer.recovered is True
    assert [(p.offset, orjson.loads(p.data)) for p in answer.publications] == [(2, 2), (3, 3), (4, 4)]


@pytest.mark.parametrize("payload", [b"\x00\x01", struct.pack("!IIII", 1, 1, _ABSENT, _ABSENT) + b"\xffc"],
                         ids=["truncated", "bad-utf8"])
def test_corrupt_delivery_is_dropped(two: Cluster, payload: bytes) -> None:
    """A delivery that does not unpack is dropped (logged), never raised into the bus reader."""
    ch = channel_owned_by(1, 2)
    two.engines[0].subscribe(ch, SubscribeRequest(), Done())
    two.pump()
    for kind in (Kind.JOIN, Kind.LEAVE, Kind.PUBLICATION):
        two.engines[0].handle_delivery(Envelope(kind, 1, channel=ch, payload=payload))
    assert two.handlers[0].events == []


def test_request_to_dead_peer_fails_immediately(two: Cluster) -> None:
    ch = channel_owned_by(1, 2)
    two.net.dead.add(1)
    done = Done()
    two.engines[0].publish(ch, publication(1), PublishOptions(STREAM), done)
    assert done.error.code == 100 and done.error.temporary
    for call in (lambda d: two.engines[0].subscribe(ch, positioned(), d),
                 lambda d: two.engines[0].presence(ch, d),
                 lambda d: two.engines[0].history(ch, HistoryFilter(), STREAM, d)):
        other = Done()
        call(other)
        assert other.error.code == 100


def test_unanswered_request_times_out(two: Cluster) -> None:
    ch = channel_owned_by(1, 2)
    done = Done()
    two.engines[0].publish(ch, publication(1), PublishOptions(STREAM), done)
    two.loop.advance(TIMEOUT / 2)
    assert done.calls == []
    two.loop.advance(TIMEOUT)
    assert done.error.code == 100 and done.error.temporary
    two.pump()  # the answer arrives late: ignored, done is not called again
    assert len(done.calls) == 1
    assert two.net.routers[0].pending == 0


def test_late_subscribe_answer_is_compensated(two: Cluster) -> None:
    ch = channel_owned_by(1, 2)
    done = Done()
    two.engines[0].subscribe(ch, SubscribeRequest(), done)
    two.loop.advance(TIMEOUT * 2)
    assert done.error.code == 100
    two.pump()  # the owner counts the subscriber and answers; the late answer undoes it
    assert len(done.calls) == 1
    two.engines[1].publish(ch, publication("x"), PublishOptions(STREAM), Done())
    two.pump()
    assert two.handlers[0].events == []
    # A subscribe that did get its answer in time is still delivered to.
    ok = Done()
    two.engines[0].subscribe(ch, SubscribeRequest(), ok)
    two.pump()
    assert ok.result == SubscribeAnswer()
    two.engines[1].publish(ch, publication("y"), PublishOptions(STREAM), Done())
    two.pump()
    assert two.handlers[0].pubs(ch) == ["y"]


def test_peer_restart_forgets_its_presence_and_interest(three: Cluster) -> None:
    ch = channel_owned_by(1, 3)
    for slot in (0, 2):
        three.engines[slot].subscribe(ch, SubscribeRequest(), Done())
        three.engines[slot].add_presence(ch, ClientInfo("u", f"c{slot}"))
    three.pump()
    three.handlers[2].events.clear()
    fresh = three.start(0, seed=99)  # a new incarnation of slot 0 says HELLO
    three.pump()
    pres = Done()
    three.engines[2].presence(ch, pres)
    three.pump()
    assert set(pres.result) == {"c2"}
    assert three.handlers[2].events == [("leave", ch, "c0")]  # observers see it leave
    three.engines[2].publish(ch, publication("z"), PublishOptions(STREAM), Done())
    three.pump()
    assert three.handlers[0].events == []  # the new incarnation has no subscriber here
    assert three.handlers[2].pubs(ch) == ["z"]
    assert fresh.router.ready


def test_one_worker_is_local_and_synchronous() -> None:
    one = Cluster(1)
    engine, handler = one.engines[0], one.handlers[0]
    assert engine.router.bus is None
    sub = Done()
    engine.subscribe("any", positioned(), sub)
    assert sub.result.position.offset == 0
    published = Done()
    engine.publish("any", publication("p"), PublishOptions(STREAM), published)
    assert published.result.offset == 1
    assert handler.events == [("pub", "any", "p", 1, published.result)]
    engine.add_presence("any", ClientInfo("u", "c"))
    engine.publish_join("any", ClientInfo("u", "c"))
    assert handler.events[-1] == ("join", "any", "c")
    pres, stats, hist = Done(), Done(), Done()
    engine.presence("any", pres)
    engine.presence_stats("any", stats)
    engine.history("any", HistoryFilter(-1), STREAM, hist)
    assert pres.result == {"c": ClientInfo("u", "c")}
    assert stats.result == PresenceStats(1, 1)
    assert [p.offset for p in hist.result.publications] == [1]
    removed: list[ClientError | None] = []
    engine.remove_history("any", removed.append)
    assert removed == [None]
    engine.unsubscribe("any")
    engine.publish("any", publication("q"), PublishOptions(STREAM), Done())
    assert len(handler.pubs("any")) == 1


def test_unknown_op_and_frozen_owner(two: Cluster) -> None:
    unknown = Done()
    two.net.routers[0].request(1, 99, "x", b"", unknown)
    two.pump()
    assert unknown.error.code == 104
    engine = two.engines[1]
    engine.freeze()
    ch = channel_owned_by(1, 2)
    remote = Done()
    two.engines[0].publish(ch, publication(1), PublishOptions(STREAM), remote)
    local = Done()
    engine.publish(ch, publication(1), PublishOptions(STREAM), local)
    two.pump()
    assert remote.error.code == 100 and local.error.code == 100


def test_handoff_to_successor_continues_stream(two: Cluster) -> None:
    ch = channel_owned_by(1, 2)
    first = Done()
    two.engines[1].publish(ch, publication(1), PublishOptions(STREAM), first)
    two.engines[0].subscribe(ch, SubscribeRequest(), Done())
    two.pump()
    old = two.engines[1]
    old.freeze()
    envelopes = old.handoff_envelopes()
    successor = MemoryEngine(old.router, Recorder(), two.clock, random.Random(5), Stats(), lambda ch: True)
    results = [successor.install_handoff(decode(encode(env))) for env in envelopes]
    assert results == [False] * (len(envelopes) - 1) + [True]
    done = Done()
    successor.publish(ch, publication(2), PublishOptions(STREAM), done)
    assert done.result == StreamPosition(2, first.result.epoch)


def test_sweep_forgets_streams_read_from_other_slots(two: Cluster) -> None:
    owner_engine = two.engines[1]
    for i in range(300):
        two.engines[0].history(channel_owned_by(1, 2, prefix=f"never{i}-"), HistoryFilter(0), STREAM, Done())
    two.pump()
    assert owner_engine.owned_streams() == owner_engine.owned_channels() == 300
    two.clock.now += EMPTY_STREAM_GRACE
    owner_engine.freeze()  # handing off: the state must stay as exported
    assert owner_engine.sweep() == 0
    owner_engine.frozen = False
    assert owner_engine.sweep() == 300  # the engine's own clock drives it
    assert owner_engine.owned_streams() == owner_engine.owned_channels() == 0
