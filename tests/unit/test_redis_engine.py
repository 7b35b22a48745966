"""The Redis engine's owner side without Redis: a scripted store whose futures the test
resolves, so the order of SUBSCRIBE, position read and answer is checked exactly."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import pytest

from gateway.cluster.router import Router
from gateway.config.engine import RedisEngineConfig
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
    pack_client_info,
    pack_publication,
)
from gateway.engine.redis.engine import ERROR_ENGINE_UNAVAILABLE, RedisEngine
from gateway.engine.redis.pipeline import StoreUnavailable
from gateway.engine.redis.wire import MessageKind, RedisMessage
from gateway.obs.stats import Stats

STREAM = StreamOptions(100, 300.0, 3600.0)


class FakeStore:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.subscribes: dict[str, asyncio.Future[None]] = {}
        self.unsubscribes: list[str] = []
        self.reads: list[tuple[str, HistoryFilter, asyncio.Future[Any]]] = []
        self.published: list[tuple[str, bytes]] = []
        self.healthy = True

    def subscribe(self, channel: str) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = self.loop.create_future()
        self.subscribes[channel] = fut
        return fut

    def unsubscribe(self, channel: str) -> None:
        self.unsubscribes.append(channel)

    def history(self, channel: str, filter: HistoryFilter, stream: StreamOptions, new_epoch: str = ""
                ) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = self.loop.create_future()
        self.reads.append((channel, filter, fut))
        return fut

    def publish(self, channel: str, payload: bytes, stream: Any, key: str = "", new_epoch: str = ""
                ) -> asyncio.Future[StreamPosition]:
        self.published.append((channel, payload))
        fut: asyncio.Future[StreamPosition] = self.loop.create_future()
        fut.set_result(StreamPosition(len(self.published), "E"))
        return fut

    def shard_index(self, channel: str) -> int:
        return 0 if channel < "m" else 1

    async def close(self) -> None:
        pass


class Handler:
    def __init__(self) -> None:
        self.pubs: list[tuple[str, Publication, StreamPosition | None]] = []
        self.joins: list[tuple[str, ClientInfo]] = []
        self.lost: list[str] = []

    def handle_publication(self, channel: str, pub: Publication, position: StreamPosition | None) -> None:
        self.pubs.append((channel, pub, position))

    def handle_join(self, channel: str, info: ClientInfo) -> None:
        self.joins.append((channel, info))

    def handle_leave(self, channel: str, info: ClientInfo) -> None:
        pass

    def handle_stream_lost(self, channel: str) -> None:
        self.lost.append(channel)


Answers = list[tuple[SubscribeAnswer | None, ClientError | None]]


@pytest.fixture
async def setup() -> tuple[RedisEngine, FakeStore, Handler]:
    loop = asyncio.get_running_loop()
    router = Router(0, 1, loop, time.time, random.Random(0), 2.0, Stats())
    handler = Handler()
    engine = RedisEngine(RedisEngineConfig(address=("127.0.0.1:1",)), router, handler, loop, time.time,
                         random.Random(0), Stats())
    store = FakeStore(loop)
    engine.store = store  # type: ignore[assignment]
    engine._started = True
    return engine, store, handler


def _subscribe(engine: RedisEngine, channel: str, request: SubscribeRequest) -> Answers:
    answers: Answers = []
    engine.subscribe(channel, request, lambda a, e: answers.append((a, e)))
    return answers


async def _tick() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_position_is_read_only_after_redis_confirmed_the_subscription(setup: Any) -> None:
    engine, store, _ = setup
    answers = _subscribe(engine, "news", SubscribeRequest(STREAM, positioned=True))
    await _tick()
    assert answers == [] and store.reads == []  # SUBSCRIBE not confirmed yet: nothing read
    store.subscribes["news"].set_result(None)
    await _tick()
    (channel, filter, read) = store.reads[0]
    assert (channel, filter.limit) == ("news", 0)
    read.set_result((StreamPosition(7, "E"), []))
    await _tick()
    assert answers == [(SubscribeAnswer(StreamPosition(7, "E")), None)]


async def test_one_redis_subscription_per_channel_and_node(setup: Any) -> None:
    engine, store, _ = setup
    first = _subscribe(engine, "news", SubscribeRequest())
    second = _subscribe(engine, "news", SubscribeRequest())
    store.subscribes["news"].set_result(None)
    await _tick()
    assert len(first) == len(second) == 1 and list(store.subscribes) == ["news"]
    engine.unsubscribe("news")
    assert store.unsubscribes == []  # one subscriber is left
    engine.unsubscribe("news")
    assert store.unsubscribes == ["news"]


async def test_recovery_checks_the_epoch_and_the_gap(setup: Any) -> None:
    engine, store, _ = setup
    pubs = [(o, pack_publication(Publication(b'"%d"' % o))) for o in (4, 5)]
    ok = _subscribe(engine, "news", SubscribeRequest(STREAM, True, True, StreamPosition(3, "E")))
    stale = _subscribe(engine, "news", SubscribeRequest(STREAM, True, True, StreamPosition(3, "OLD")))
    store.subscribes["news"].set_result(None)
    await _tick()
    for _, filter, read in store.reads:
        assert filter.since == StreamPosition(3, "")
        read.set_result((StreamPosition(5, "E"), pubs))
    await _tick()
    answer, error = ok[0]
    assert error is None and answer is not None and answer.recovered
    assert [p.offset for p in answer.publications or []] == [4, 5]
    answer, error = stale[0]
    assert error is None and answer is not None and not answer.recovered and not answer.publications


async def test_redis_unavailable_is_a_temporary_error_and_undoes_interest(setup: Any) -> None:
    engine, store, _ = setup
    answers = _subscribe(engine, "news", SubscribeRequest())
    store.subscribes["news"].set_exception(StoreUnavailable("down"))
    await _tick()
    assert answers == [(None, ERROR_ENGINE_UNAVAILABLE)] and ERROR_ENGINE_UNAVAILABLE.temporary
    assert store.unsubscribes == ["news"] and engine.owned_channels() == 0


async def test_a_frozen_owner_refuses_subscribes(setup: Any) -> None:
    engine, _, _ = setup
    engine.freeze()
    (answer, error), = _subscribe(engine, "news", SubscribeRequest())
    assert answer is None and error is not None and error.code == 100 and error.temporary


async def test_messages_reach_the_hub_only_for_owned_channels_and_not_while_frozen(setup: Any) -> None:
    engine, store, handler = setup
    _subscribe(engine, "news", SubscribeRequest())
    raw = pack_publication(Publication(b'{"a":1}'))
    engine._on_message("news", RedisMessage(MessageKind.PUBLICATION, 9, "E", raw))
    engine._on_message("other", RedisMessage(MessageKind.PUBLICATION, 1, "E", raw))
    engine._on_message("news", RedisMessage(MessageKind.JOIN, 0, "", pack_client_info(ClientInfo("u", "c"))))
    assert [(ch, p.offset, pos) for ch, p, pos in handler.pubs] == [("news", 9, StreamPosition(9, "E"))]
    assert handler.joins == [("news", ClientInfo("u", "c"))]
    engine.freeze()
    engine._on_message("news", RedisMessage(MessageKind.PUBLICATION, 10, "E", raw))
    assert len(handler.pubs) == 1
    assert store is engine.store


async def test_a_resubscribed_shard_makes_its_channels_recover(setup: Any) -> None:
    engine, _, handler = setup
    for channel in ("alpha", "zulu"):  # shard 0 and shard 1 of the fake store
        _subscribe(engine, channel, SubscribeRequest())
    engine._on_resubscribed(1)
    assert handler.lost == ["zulu"]


async def test_handoff_carries_interest_and_resubscribes(setup: Any) -> None:
    engine, _, _ = setup
    _subscribe(engine, "news", SubscribeRequest())
    envelopes = engine.handoff_envelopes()
    loop = asyncio.get_running_loop()
    successor = RedisEngine(RedisEngineConfig(address=("127.0.0.1:1",)), Router(0, 1, loop, time.time,
                            random.Random(1), 2.0, Stats()), Handler(), loop, time.time, random.Random(1), Stats())
    fresh = FakeStore(loop)
    successor.store = fresh  # type: ignore[assignment]
    successor._started = True
    done = [successor.install_handoff(env) for env in envelopes]
    assert done == [False, True]
    # The predecessor's own slot (0) drains: its interest goes, so the channel is released again.
    assert list(fresh.subscribes) == ["news"] and fresh.unsubscribes == ["news"]


async def test_operations_fail_fast_before_redis_was_ever_reached(setup: Any) -> None:
    engine, _, _ = setup
    engine._started = False
    results: list[Any] = []
    engine.publish("news", Publication(b"1"), PublishOptions(STREAM), lambda r, e: results.append((r, e)))
    await _tick()
    assert results == [(None, ERROR_ENGINE_UNAVAILABLE)]


def _pub(offset: int, epoch: str = "E") -> RedisMessage:
    return RedisMessage(MessageKind.PUBLICATION, offset, epoch, pack_publication(Publication(b'"%d"' % offset)))


def _stored(*offsets: int) -> list[tuple[int, bytes]]:
    return [(o, pack_publication(Publication(b'"%d"' % o))) for o in offsets]


@pytest.fixture
async def with_history(setup: Any) -> tuple[RedisEngine, FakeStore, Handler]:
    engine, store, handler = setup
    engine._stream_options = lambda channel: STREAM
    return engine, store, handler


async def test_a_gap_in_pubsub_is_read_back_and_delivered_in_order(with_history: Any) -> None:
    engine, store, handler = with_history
    _subscribe(engine, "news", SubscribeRequest())
    engine._on_message("news", _pub(1))
    engine._on_message("news", _pub(4))  # 2 and 3 never came through pub/sub
    engine._on_message("news", _pub(5))  # held behind the read
    assert [p.offset for _, p, _ in handler.pubs] == [1]
    (_, filter, read), = store.reads
    assert filter.since == StreamPosition(1, "") and filter.limit == 2
    read.set_result((StreamPosition(5, "E"), _stored(2, 3)))
    await _tick()
    assert [p.offset for _, p, _ in handler.pubs] == [1, 2, 3, 4, 5]
    assert handler.lost == [] and engine.stats.gap_filled == 2
    engine._on_message("news", _pub(5))  # a duplicate is not delivered twice
    assert len(handler.pubs) == 5


async def test_a_gap_that_cannot_be_read_back_makes_subscribers_recover(with_history: Any) -> None:
    engine, store, handler = with_history
    _subscribe(engine, "news", SubscribeRequest())
    engine._on_message("news", _pub(1))
    engine._on_message("news", _pub(9))
    (_, _, read), = store.reads
    read.set_result((StreamPosition(9, "E"), _stored(7, 8)))  # 2..6 trimmed away
    await _tick()
    assert handler.lost == ["news"]
    assert [p.offset for _, p, _ in handler.pubs] == [1, 9]


async def test_a_handoff_carries_the_last_delivered_position(with_history: Any) -> None:
    engine, _store, handler = with_history
    # A subscriber on another worker (slot 1): the reloaded worker's own clients are dropped.
    engine._owner_subscribe("news", 1, SubscribeRequest(), lambda answer, error: None)
    engine.fanout.publication = (  # type: ignore[method-assign]
        lambda channel, slots, pub, position: handler.pubs.append((channel, pub, position)))
    engine._on_message("news", _pub(6))
    assert [p.offset for _, p, _ in handler.pubs] == [6]
    engine.freeze()
    envelopes = engine.handoff_envelopes()
    loop = asyncio.get_running_loop()
    router = Router(0, 1, loop, time.time, random.Random(0), 2.0, Stats())
    successor_handler = Handler()
    successor = RedisEngine(RedisEngineConfig(address=("127.0.0.1:1",)), router, successor_handler, loop,
                            time.time, random.Random(0), Stats(), stream_options=lambda channel: STREAM)
    successor_store = FakeStore(loop)
    successor.store = successor_store  # type: ignore[assignment]
    successor._started = True
    successor.fanout.publication = (  # type: ignore[method-assign]
        lambda channel, slots, pub, position: successor_handler.pubs.append((channel, pub, position)))
    for env in envelopes:
        successor.install_handoff(env)
    # What was published between the predecessor's freeze and this subscription is read back.
    successor._on_message("news", _pub(9))
    (_, filter, read), = successor_store.reads
    assert filter.since == StreamPosition(6, "")
    read.set_result((StreamPosition(9, "E"), _stored(7, 8)))
    await _tick()
    assert [p.offset for _, p, _ in successor_handler.pubs] == [7, 8, 9]


async def test_an_older_publication_after_the_subscribe_read_is_still_delivered(with_history: Any) -> None:
    """The position read after SUBSCRIBE is only a lower bound for gaps: pub/sub and commands
    are separate connections, so a publication older than the read may arrive after it."""
    engine, store, handler = with_history
    _subscribe(engine, "news", SubscribeRequest(STREAM, positioned=True))
    store.subscribes["news"].set_result(None)
    await _tick()
    (_, _, read), = store.reads
    read.set_result((StreamPosition(7, "E"), []))
    await _tick()
    engine._on_message("news", _pub(7))
    engine._on_message("news", _pub(8))
    assert [p.offset for _, p, _ in handler.pubs] == [7, 8]


async def test_a_new_epoch_is_not_a_gap(with_history: Any) -> None:
    engine, store, handler = with_history
    _subscribe(engine, "news", SubscribeRequest())
    engine._on_message("news", _pub(5, "OLD"))
    engine._on_message("news", _pub(1, "NEW"))
    assert store.reads == [] and [p.offset for _, p, _ in handler.pubs] == [5, 1]
