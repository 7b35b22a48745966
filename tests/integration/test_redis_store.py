"""RedisStore against real redis-server processes: streams, presence, pub/sub, shards, cluster,
failure and reconnect, and the one-pipeline-per-tick promise."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from gateway.config.engine import RedisEngineConfig
from gateway.core.errors import ClientError
from gateway.core.history import Stream
from gateway.core.model import ClientInfo, HistoryFilter, StreamOptions, StreamPosition, pack_client_info
from gateway.engine.redis import (
    MessageKind,
    RedisMessage,
    RedisStore,
    StoreError,
    StoreUnavailable,
    check_since,
    check_version,
    parse_message,
)
from sharding.hashing import owner
from tests.conftest import scaled, wait_for
from tests.redis_servers import RedisCluster, RedisSentinel, RedisServer, free_port

STREAM = StreamOptions(size=100, ttl=300.0, meta_ttl=3600.0)


class Recorder:
    """Collects what the store hands to its callbacks."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, RedisMessage]] = []
        self.resubscribed: list[int] = []
        self.control: list[bytes] = []

    def of(self, channel: str) -> list[RedisMessage]:
        return [m for ch, m in self.messages if ch == channel]


def make_store(rec: Recorder, **cfg: Any) -> Callable[..., RedisStore]:
    def build(**extra: Any) -> RedisStore:
        return RedisStore(RedisEngineConfig(**cfg), asyncio.get_running_loop(),
                          on_message=lambda ch, m: rec.messages.append((ch, m)),
                          on_resubscribed=rec.resubscribed.append, on_control=rec.control.append, **extra)
    return build


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture
async def store(redis_server: RedisServer, rec: Recorder) -> AsyncIterator[RedisStore]:
    s = make_store(rec, address=(redis_server.address,))()
    await s.start()
    yield s
    await s.close()


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis(port=redis_server.port)
    yield client
    await client.aclose()


# ------------------------------------------------------------------ streams


async def test_publish_assigns_offsets_in_order_under_one_epoch(store: RedisStore) -> None:
    futures = [store.publish("chat", b"m%d" % i, STREAM) for i in range(1, 21)]
    positions = await asyncio.gather(*futures)
    assert [p.offset for p in positions] == list(range(1, 21))
    assert len({p.epoch for p in positions}) == 1 and len(positions[0].epoch) == 8
    position, pubs = await store.history("chat", HistoryFilter(limit=-1), STREAM)
    assert position == positions[-1]
    assert pubs == [(i, b"m%d" % i) for i in range(1, 21)]


async def test_new_epoch_is_used_for_a_new_stream_only(store: RedisStore) -> None:
    first = await store.publish("e", b"x", STREAM, new_epoch="abcdEFGH")
    second = await store.publish("e", b"y", STREAM, new_epoch="zzzzzzzz")
    assert first == StreamPosition(1, "abcdEFGH") and second == StreamPosition(2, "abcdEFGH")
    with pytest.raises(ValueError, match="letters and digits"):
        store.publish("e", b"z", STREAM, new_epoch="bad__epoch")


async def test_exact_maxlen_and_ttls(store: RedisStore, raw: aioredis.Redis) -> None:
    opts = StreamOptions(size=3, ttl=60.0, meta_ttl=120.0)
    await asyncio.gather(*(store.publish("trim", b"%d" % i, opts) for i in range(10)))
    keys = store.keys
    assert await raw.xlen(keys.stream("trim")) == 3
    _, pubs = await store.history("trim", HistoryFilter(limit=-1), opts)
    assert [o for o, _ in pubs] == [8, 9, 10]
    assert 55_000 < await raw.pttl(keys.stream("trim")) <= 60_000
    assert 115_000 < await raw.pttl(keys.meta("trim")) <= 120_000
    assert await raw.hgetall(keys.meta("trim")) == {b"e": (await store.history("trim", HistoryFilter(), opts))[
        0].epoch.encode(), b"s": b"10"}


async def test_each_publication_renews_the_whole_history(store: RedisStore) -> None:
    """history_ttl as in Centrifugo: the history lives ttl after the *last* publication."""
    opts = StreamOptions(size=10, ttl=2.0, meta_ttl=3600.0)
    await store.publish("renew", b"A", opts)
    published_a = time.monotonic()
    await asyncio.sleep(1.2)
    await store.publish("renew", b"B", opts)
    published_b = time.monotonic()
    await asyncio.sleep(max(0.0, published_a + 2.4 - time.monotonic()))  # A alone would have expired
    _, pubs = await store.history("renew", HistoryFilter(limit=-1), opts)
    if time.monotonic() - published_b >= 1.9:
        pytest.skip("too slow a machine to tell renewal from expiry")
    assert [p for _, p in pubs] == [b"A", b"B"]

    async def gone() -> bool:
        return (await store.history("renew", HistoryFilter(limit=-1), opts))[1] == []

    await wait_for(gone, timeout=scaled(5), what="the whole history expiring after the last publication")


async def test_idempotency_key_returns_the_first_result(store: RedisStore, raw: aioredis.Redis) -> None:
    first = await store.publish("idem", b"a", STREAM, idempotency_key="k1")
    again = await store.publish("idem", b"b", STREAM, idempotency_key="k1")
    other = await store.publish("idem", b"c", STREAM, idempotency_key="k2")
    assert again == first and other.offset == first.offset + 1
    _, pubs = await store.history("idem", HistoryFilter(limit=-1), STREAM)
    assert [p for _, p in pubs] == [b"a", b"c"]
    assert 295_000 < await raw.pttl(store.keys.result("idem", "k1")) <= 300_000
    # Without history the key still deduplicates (offset 0).
    assert await store.publish("idem-nohist", b"x", None, idempotency_key="k") == StreamPosition(0, "")


FILTERS = [
    HistoryFilter(limit=0),
    HistoryFilter(limit=-1),
    HistoryFilter(limit=3),
    HistoryFilter(limit=100),
    HistoryFilter(limit=-1, since=StreamPosition(0, "")),
    HistoryFilter(limit=-1, since=StreamPosition(5, "")),
    HistoryFilter(limit=2, since=StreamPosition(5, "")),
    HistoryFilter(limit=-1, since=StreamPosition(12, "")),
    HistoryFilter(limit=-1, since=StreamPosition(2, "")),
    HistoryFilter(limit=-1, reverse=True),
    HistoryFilter(limit=3, reverse=True),
    HistoryFilter(limit=-1, since=StreamPosition(8, ""), reverse=True),
    HistoryFilter(limit=2, since=StreamPosition(8, ""), reverse=True),
    HistoryFilter(limit=-1, since=StreamPosition(1, ""), reverse=True),
    HistoryFilter(limit=-1, since=StreamPosition(4, ""), reverse=True),
    HistoryFilter(limit=-1, since=StreamPosition(13, ""), reverse=True),
]


async def test_history_semantics_equal_the_memory_stream(store: RedisStore) -> None:
    opts = StreamOptions(size=8, ttl=300.0, meta_ttl=3600.0)
    memory = Stream("memory", size=8, ttl=300.0, now=0.0)
    for i in range(1, 13):
        position = await store.publish("h", b"p%d" % i, opts)
        memory.append(position.offset, b"p%d" % i, now=0.0)
    for f in FILTERS:
        position, pubs = await store.history("h", f, opts)
        expected = memory.read(1.0, limit=f.limit, since=f.since.offset if f.since else None, reverse=f.reverse)
        assert pubs == [(item.offset, item.publication) for item in expected], f
        assert position.offset == memory.top == 12


async def test_history_of_an_unknown_channel_creates_the_position(store: RedisStore, raw: aioredis.Redis) -> None:
    position, pubs = await store.history("fresh", HistoryFilter(limit=-1), STREAM, new_epoch="Fresh123")
    assert position == StreamPosition(0, "Fresh123") and pubs == []
    assert 3_595_000 < await raw.pttl(store.keys.meta("fresh")) <= 3_600_000
    assert (await store.publish("fresh", b"x", STREAM)).epoch == "Fresh123"


async def test_epoch_mismatch_is_detectable(store: RedisStore) -> None:
    pos = await store.publish("ep", b"x", STREAM)
    wrong = HistoryFilter(limit=-1, since=StreamPosition(0, "otherEpc"))
    position, _ = await store.history("ep", wrong, STREAM)
    with pytest.raises(ClientError) as info:
        check_since(wrong, position)
    assert info.value.code == 112
    check_since(HistoryFilter(limit=-1, since=StreamPosition(0, pos.epoch)), position)


async def test_remove_history_keeps_the_position(store: RedisStore) -> None:
    last = (await asyncio.gather(*(store.publish("rm", b"x", STREAM) for _ in range(5))))[-1]
    await store.remove_history("rm")
    position, pubs = await store.history("rm", HistoryFilter(limit=-1), STREAM)
    assert position == last and pubs == []
    assert await store.publish("rm", b"y", STREAM) == StreamPosition(6, last.epoch)


# ------------------------------------------------------------------ presence


def info(user: str, client: str) -> bytes:
    return pack_client_info(ClientInfo(user, client, b'{"n":1}', None))


async def test_presence_add_get_stats_remove(store: RedisStore, raw: aioredis.Redis) -> None:
    await asyncio.gather(store.add_presence("room", "c1", info("u1", "c1"), 60.0),
                         store.add_presence("room", "c2", info("u1", "c2"), 60.0),
                         store.add_presence("room", "c3", info("u2", "c3"), 60.0))
    assert await store.presence("room") == {"c1": info("u1", "c1"), "c2": info("u1", "c2"),
                                            "c3": info("u2", "c3")}
    assert await store.presence_stats("room") == (3, 2)
    assert 55_000 < await raw.pttl(store.keys.presence_data("room")) <= 60_000
    assert 55_000 < await raw.pttl(store.keys.presence_expire("room")) <= 60_000
    await store.remove_presence("room", "c3")
    assert set(await store.presence("room")) == {"c1", "c2"}
    assert await store.presence_stats("room") == (2, 1)
    assert await raw.zcard(store.keys.presence_expire("room")) == 2


async def test_presence_expires(store: RedisStore) -> None:
    await store.add_presence("exp", "short", info("u1", "short"), 0.2)
    await store.add_presence("exp", "long", info("u2", "long"), 60.0)
    assert await store.presence_stats("exp") == (2, 2)

    async def expired() -> bool:
        return set(await store.presence("exp")) == {"long"}

    await wait_for(expired, timeout=3.0, what="short presence to expire")
    assert await store.presence_stats("exp") == (1, 1)


# ------------------------------------------------------------------ pub/sub


async def test_pubsub_delivers_in_order_with_positions(store: RedisStore, rec: Recorder,
                                                       raw: aioredis.Redis) -> None:
    await store.subscribe("live")
    positions = await asyncio.gather(*(store.publish("live", b"m%d" % i, STREAM) for i in range(50)))
    await store.publish("live", b"nohist", None)
    await store.publish_event("live", MessageKind.JOIN, info("u", "c"))
    await store.publish_event("live", MessageKind.LEAVE, info("u", "c"))
    await raw.publish(store.keys.pubsub("live"), b"foreign junk")  # counted and dropped
    await wait_for(lambda: len(rec.of("live")) == 53 and store.dropped == 1, what="53 messages")
    got = rec.of("live")
    assert [(m.kind, m.offset, m.epoch, m.payload) for m in got[:50]] == [
        (MessageKind.PUBLICATION, p.offset, p.epoch, b"m%d" % i) for i, p in enumerate(positions)]
    assert got[50] == RedisMessage(MessageKind.PUBLICATION, 0, "", b"nohist")
    assert [m.kind for m in got[51:]] == [MessageKind.JOIN, MessageKind.LEAVE]
    assert got[51].payload == info("u", "c")
    store.unsubscribe("live")

    async def gone() -> bool:
        return (await raw.pubsub_numsub(store.keys.pubsub("live")))[0][1] == 0
    await wait_for(gone, what="UNSUBSCRIBE to reach redis")


def test_parse_message_never_crashes_on_foreign_bytes() -> None:
    for junk in (b"", b"__p1:", b"__p1:12", b"__p1:x:e__d", b"__p1:12__d", b"__p1:1:\xff__d", b"hello", b"__j_"):
        assert parse_message(junk) is None
    assert parse_message(b"__p1:7:abc__") == RedisMessage(MessageKind.PUBLICATION, 7, "abc", b"")
    assert parse_message(b"__p1:7:abc____x") == RedisMessage(MessageKind.PUBLICATION, 7, "abc", b"__x")


async def test_subscribe_resolves_only_after_redis_confirms(store: RedisStore, raw: aioredis.Redis) -> None:
    await raw.execute_command("CLIENT", "PAUSE", "300", "ALL")
    started = time.monotonic()
    fut = store.subscribe("paused")
    await asyncio.sleep(0.1)
    assert not fut.done()  # Redis has not answered yet
    await fut
    assert time.monotonic() - started >= 0.25
    assert (await raw.pubsub_numsub(store.keys.pubsub("paused")))[0][1] == 1
    assert store.subscribe("paused").done()  # already confirmed: resolves at once


async def test_many_subscriptions_are_batched(store: RedisStore, raw: aioredis.Redis) -> None:
    await asyncio.gather(*(store.subscribe(f"many{i}") for i in range(1500)))
    stats = await raw.info("commandstats")
    # 1500 channels in batches of 512 (+ the probe and control channels at start): 4 SUBSCRIBE commands.
    assert stats["cmdstat_subscribe"]["calls"] == 4


async def test_control_channel(store: RedisStore, rec: Recorder) -> None:
    await store.publish_control(b"\x00control")
    await wait_for(lambda: rec.control == [b"\x00control"], what="control message")


# ------------------------------------------------------------------ pipelining


async def test_publishes_of_one_tick_are_one_pipeline(store: RedisStore, raw: aioredis.Redis) -> None:
    await raw.config_resetstat()
    before = store.round_trips[0]
    futures = [store.publish(f"pipe{i % 10}", b"x", STREAM) for i in range(1000)]
    await asyncio.gather(*futures)
    assert store.round_trips[0] - before == 1
    assert (await raw.info("commandstats"))["cmdstat_evalsha"]["calls"] == 1000


# ------------------------------------------------------------------ shards and cluster


async def test_three_shards_spread_channels_by_owner(redis_servers: list[RedisServer], rec: Recorder) -> None:
    store = make_store(rec, address=tuple(s.address for s in redis_servers))()
    await store.start()
    raws = [aioredis.Redis(port=s.port) for s in redis_servers]
    try:
        channels = [f"ch{i}" for i in range(30)]
        assert {store.shard_index(ch) for ch in channels} == {0, 1, 2}
        for ch in channels:
            await store.subscribe(ch)
        await asyncio.gather(*(store.publish(ch, ch.encode(), STREAM) for ch in channels),
                             *(store.add_presence(ch, "c", info("u", "c"), 60.0) for ch in channels))
        assert sorted(store.round_trips) != [0, 0, 0] and sum(store.round_trips) <= 6
        for ch in channels:
            index = owner(ch, 3)
            assert store.shard_index(ch) == index
            for i, r in enumerate(raws):
                assert await r.exists(store.keys.stream(ch), store.keys.presence_data(ch)) == (2 if i == index else 0)
            assert (await raws[index].pubsub_numsub(store.keys.pubsub(ch)))[0][1] == 1
        await wait_for(lambda: {ch for ch, _ in rec.messages} == set(channels), what="messages from 3 shards")
        assert store.healthy
    finally:
        await store.close()
        for r in raws:
            await r.aclose()


async def test_cluster(redis_cluster: RedisCluster, rec: Recorder) -> None:
    store = make_store(rec, cluster_address=tuple(redis_cluster.addresses))()
    await store.start()
    try:
        assert store.keys.stream("a") == "shardgate.stream.{a}"
        channels = [f"cl{i}" for i in range(20)]
        for ch in channels:
            await store.subscribe(ch)
        positions = await asyncio.gather(*(store.publish(ch, b"d", STREAM) for ch in channels for _ in range(3)))
        assert sorted(p.offset for p in positions) == sorted([1, 2, 3] * 20)
        position, pubs = await store.history("cl3", HistoryFilter(limit=-1), STREAM)
        assert position.offset == 3 and [o for o, _ in pubs] == [1, 2, 3]
        await store.add_presence("cl3", "c1", info("u1", "c1"), 60.0)
        assert await store.presence_stats("cl3") == (1, 1)
        assert set(await store.presence("cl3")) == {"c1"}
        await store.publish_event("cl3", MessageKind.JOIN, info("u1", "c1"))
        await store.publish_control(b"ctl")
        await wait_for(lambda: len(rec.messages) == 61 and rec.control == [b"ctl"], what="cluster pub/sub")
        assert store.healthy
    finally:
        await store.close()


async def test_sentinel(redis_sentinel: RedisSentinel, redis_server: RedisServer, rec: Recorder) -> None:
    store = make_store(rec, sentinel_address=(redis_sentinel.address,), sentinel_master_name="mymaster")()
    await store.start()
    try:
        await store.subscribe("s")
        assert await store.publish("s", b"via sentinel", STREAM) == StreamPosition(
            1, (await store.history("s", HistoryFilter(), STREAM))[0].epoch)
        await wait_for(lambda: [m.payload for m in rec.of("s")] == [b"via sentinel"], what="sentinel pub/sub")
        assert redis_server.cli("EXISTS", store.keys.stream("s")).strip() == "1"
        assert store.healthy
    finally:
        await store.close()


# ------------------------------------------------------------------ failure and recovery


async def test_start_fails_fast_when_redis_is_unreachable(rec: Recorder) -> None:
    store = make_store(rec, address=(f"127.0.0.1:{free_port()}",), connect_timeout=0.5)()
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="cannot connect"):
        await store.start()
    assert time.monotonic() - started < scaled(1.0)
    await store.close()


def test_old_redis_is_refused() -> None:
    with pytest.raises(StoreError, match=r"needs Redis >= 6\.2"):
        check_version({"redis_version": "6.0.16"}, "127.0.0.1:6379")
    assert check_version({"redis_version": "7.0.15"}, "x") == "7.0.15"


async def test_redis_killed_then_restarted(redis_server: RedisServer, rec: Recorder) -> None:
    store = make_store(rec, address=(redis_server.address,), io_timeout=0.5, connect_timeout=0.3)(
        probe_interval=0.2, probe_timeout=0.5)
    await store.start()
    try:
        await store.subscribe("k")
        await store.publish("k", b"before", STREAM)
        await wait_for(lambda: len(rec.of("k")) == 1, what="first message")
        redis_server.kill()
        started = time.monotonic()
        futures = [store.publish("k", b"lost", STREAM), store.history("k", HistoryFilter(), STREAM),
                   store.presence("k")]
        for fut in futures:
            with pytest.raises(StoreUnavailable):
                await fut
        assert time.monotonic() - started < scaled(0.5) + 0.3
        await wait_for(lambda: not store.healthy, what="unhealthy")
        redis_server.start()
        await wait_for(lambda: rec.resubscribed == [0], timeout=10.0, what="resubscribed")

        async def published() -> bool:
            try:
                await store.publish("k", b"after", STREAM)
            except StoreUnavailable:
                return False
            return True

        await wait_for(published, what="publish after restart")  # NOSCRIPT: the scripts are reloaded
        fresh = aioredis.Redis(port=redis_server.port)
        assert (await fresh.info("commandstats"))["cmdstat_script|load"]["calls"] >= 1
        await fresh.aclose()
        await wait_for(lambda: [m.payload for m in rec.of("k")][-1:] == [b"after"], what="message after restart")
        await wait_for(lambda: store.healthy, what="healthy again")
    finally:
        await store.close()


async def test_probe_detects_a_silently_dead_subscription(store: RedisStore, rec: Recorder) -> None:
    store2 = RedisStore(store.cfg, asyncio.get_running_loop(), on_message=lambda ch, m: None,
                        on_resubscribed=rec.resubscribed.append, probe_interval=0.1, probe_timeout=0.3)
    await store2.start()
    try:
        await store2.subscribe("quiet")
        link = store2._pubsubs[0]
        # Drop the probe subscription behind the link's back: the connection stays up, nothing arrives.
        await link._ps.execute_command("UNSUBSCRIBE", store2._probe_channel)
        await wait_for(lambda: rec.resubscribed == [0], timeout=5.0, what="probe-triggered resubscribe")
        assert link.reconnects == 1
        assert "shardgate.client.quiet" in link.wanted
    finally:
        await store2.close()


async def test_futures_fail_fast_when_closed(store: RedisStore) -> None:
    await store.close()
    with pytest.raises(StoreUnavailable):
        await store.publish("x", b"y", STREAM)


async def test_random_workload_keeps_offsets_dense(store: RedisStore) -> None:
    rng = random.Random(7)
    futures = [(ch, store.publish(ch, b"z", STREAM)) for ch in (f"r{rng.randrange(5)}" for _ in range(500))]
    per: dict[str, list[int]] = {}
    for ch, fut in futures:
        per.setdefault(ch, []).append((await fut).offset)
    for offsets in per.values():
        assert offsets == list(range(1, len(offsets) + 1))
