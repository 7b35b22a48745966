"""Several nodes through the Redis engine: two shardgate nodes of two workers each on one
real ``redis-server`` (started by the test on a free port), driven by centrifuge-python
clients on both nodes and cent through either node's API.

Proves: every publication arrives once and in order on every node and worker; PUBSUB
NUMSUB of a channel equals the node count (one Redis subscription per node, held by the
channel's owner worker); recovery across nodes; kill -9 of a whole node with its clients
recovering on the other; Redis killed (temporary error 100 within io_timeout, connections
stay, /ready 503) and restarted empty (new epoch: ``recovered: false``, never stale data).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from cent import AsyncClient, CentApiResponseError, PublishRequest

from tests.conftest import API_KEY, Gateway, base_config, scaled, wait_for
from tests.integration.sdk import connect, connect_on_slot, disconnect_all, slot, subscribe
from tests.redis_servers import RedisServer

pytestmark = pytest.mark.usefixtures("redis_bin")


def redis_config(redis: RedisServer, **engine: Any) -> dict[str, Any]:
    cfg = base_config(shardgate={"graceful_timeout": "3s", "drain_window": "200ms", "bus_request_timeout": "2s",
                                 "rpc_echo": True})
    cfg["engine"] = {"type": "redis", "redis": {"address": redis.address, "io_timeout": "1s",
                                                "connect_timeout": "500ms", "presence_ttl": "10s", **engine}}
    cfg["channel"]["without_namespace"]["history_size"] = 1000
    return cfg


def _channel() -> str:
    return f"room-{uuid.uuid4().hex[:8]}"


def _ready(gw: Gateway) -> int:
    try:
        with urllib.request.urlopen(gw.internal_url + "/ready", timeout=scaled(3)) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


async def _publish(gw: Gateway, channel: str, data: Any, attempts: int = 20) -> dict[str, Any]:
    """Publish through the API, retrying temporary errors as backends do (error 100 is what a
    node answers while its Redis link reconnects)."""
    api = AsyncClient(gw.internal_url + "/api", API_KEY, timeout=scaled(5))
    try:
        for attempt in range(attempts):
            try:
                result = await api.publish(PublishRequest(channel=channel, data=data))
                return {"offset": result.offset, "epoch": result.epoch}
            except CentApiResponseError as exc:
                if exc.code != 100 or attempt == attempts - 1:
                    raise
                await asyncio.sleep(0.1)
        raise AssertionError("unreachable")
    finally:
        await api.close()


@pytest.fixture
def two_nodes(redis_server: RedisServer, gateway_factory: Callable[..., Gateway]) -> tuple[Gateway, Gateway]:
    return gateway_factory(redis_config(redis_server)), gateway_factory(redis_config(redis_server))


async def test_every_publication_once_and_in_order_on_every_node(two_nodes: tuple[Gateway, Gateway],
                                                                  redis_server: RedisServer) -> None:
    a, b = two_nodes
    channel = _channel()
    clients = []
    try:
        for i in range(12):
            node, worker = i % 2, (i // 2) % 2
            client, _ = await connect_on_slot((a, b)[node].url, worker, user=f"u{i}")
            _, events = await subscribe(client, channel)
            clients.append((client, events, node))
        # Subscribers sat on both workers of both nodes.
        assert {(node, slot(c)) for c, _, node in clients} == {(0, 0), (0, 1), (1, 0), (1, 1)}
        assert redis_server.cli("PUBSUB", "NUMSUB", f"shardgate.client.{channel}").split()[-1] == "2"
        for k in range(60):
            await _publish((a, b)[k % 2], channel, {"k": k})
        await wait_for(lambda: all(len(ev.pubs) >= 60 for _, ev, _ in clients), timeout=10,
                       what="every subscriber got every publication")
        for client, events, _ in clients:
            assert [d["k"] for _, d in events.pubs] == list(range(60)), client.client_id
            offsets = [o for o, _ in events.pubs]
            assert offsets == list(range(offsets[0], offsets[0] + 60)), client.client_id
        # A client publishing through the client protocol on one node reaches the other.
        await clients[0][0].publish(channel, {"k": "from-client"})
        await wait_for(lambda: all(ev.pubs[-1][1] == {"k": "from-client"} for _, ev, _ in clients),
                       what="client publication everywhere")
    finally:
        await disconnect_all(*(c for c, _, _ in clients))
    await wait_for(lambda: redis_server.cli("PUBSUB", "NUMSUB", f"shardgate.client.{channel}").split()[-1] == "0",
                   what="nodes unsubscribed from Redis when the last subscriber left")


async def test_presence_and_history_across_nodes(two_nodes: tuple[Gateway, Gateway]) -> None:
    a, b = two_nodes
    channel = _channel()
    ca, _ = await connect(a.url, user="alice")
    cb, _ = await connect(b.url, user="bob")
    try:
        sa, ea = await subscribe(ca, channel)
        sb, _ = await subscribe(cb, channel)
        await wait_for(lambda: cb.client_id in ea.joins, what="join from the other node")
        presence = await sa.presence()
        assert set(presence.clients) == {ca.client_id, cb.client_id}
        stats = await sa.presence_stats()
        assert (stats.num_clients, stats.num_users) == (2, 2)
        for k in range(5):
            await sb.publish({"k": k})
        history = await sa.history(limit=10)
        assert [p.data["k"] for p in history.publications] == list(range(5))
        await sb.unsubscribe()
        await wait_for(lambda: cb.client_id in ea.leaves, what="leave from the other node")
        presence = await sa.presence()
        assert set(presence.clients) == {ca.client_id}
    finally:
        await disconnect_all(ca, cb)


async def test_recovery_across_nodes(two_nodes: tuple[Gateway, Gateway]) -> None:
    """A client leaves node A, misses publications, and recovers them on node B."""
    a, b = two_nodes
    channel = _channel()
    client, cev = await connect(a.url, user="roamer")
    try:
        _, events = await subscribe(client, channel)
        for k in range(3):
            await _publish(a, channel, {"k": k})
        await wait_for(lambda: len(events.pubs) == 3, what="first publications")
        # Nowhere to reconnect for now (what a client sees while its load balancer moves it).
        client._address = "ws://127.0.0.1:1/connection/websocket"
        await _disconnect(a, client.client_id)
        await wait_for(lambda: bool(cev.connecting), what="client lost its connection")
        for k in range(3, 8):
            await _publish(b, channel, {"k": k})
        client._address = b.url
        await wait_for(lambda: len(events.subscribed) >= 2, timeout=10, what="resubscribed on node B")
        assert events.subscribed[-1].recovered is True
        await wait_for(lambda: [d["k"] for _, d in events.pubs] == list(range(8)), what="recovered publications")
    finally:
        await disconnect_all(client)


async def _disconnect(gw: Gateway, client_id: str) -> None:
    """Server API disconnect with a reconnect code."""
    body = json.dumps({"user": "roamer", "client": client_id,
                       "disconnect": {"code": 3001, "reason": "moving"}}).encode()
    request = urllib.request.Request(gw.internal_url + "/api/disconnect", data=body, method="POST",
                                     headers={"X-API-Key": API_KEY})
    await asyncio.to_thread(lambda: urllib.request.urlopen(request, timeout=scaled(3)).read())


async def test_kill_a_whole_node_clients_recover_on_the_other(redis_server: RedisServer,
                                                              gateway_factory: Callable[..., Gateway]) -> None:
    a = gateway_factory(redis_config(redis_server))
    b = gateway_factory(redis_config(redis_server))
    channel = _channel()
    clients = []
    for i in range(6):
        client, cev = await connect(a.url, user=f"v{i}")
        _, sev = await subscribe(client, channel)
        clients.append((client, cev, sev))
    stop = asyncio.Event()
    sent = 0

    async def publisher() -> None:
        nonlocal sent
        api = AsyncClient(b.internal_url + "/api", API_KEY, timeout=scaled(3))
        try:
            while not stop.is_set():
                await api.publish(PublishRequest(channel=channel, data={"k": sent}))
                sent += 1
                await asyncio.sleep(0.01)
        finally:
            await api.close()

    task = asyncio.create_task(publisher())
    try:
        await wait_for(lambda: sent >= 20, what="publishing")
        for pid in [*a.worker_pids(), a.proc.pid]:  # the supervisor and its workers
            os.kill(pid, signal.SIGKILL)
        # centrifuge-python reconnects to the URL it was given; point each at node B, as a
        # load balancer would.
        for client, _, _ in clients:
            client._address = b.url
        mark = sent
        await wait_for(lambda: all(len(sev.subscribed) >= 2 for _, _, sev in clients), timeout=15,
                       what="every client resubscribed on node B")
        await wait_for(lambda: sent >= mark + 20, what="publishing after the kill")
        stop.set()
        await task
        await wait_for(lambda: all(sev.pubs and sev.pubs[-1][1]["k"] == sent - 1 for _, _, sev in clients),
                       timeout=15, what="every client caught up")
        for client, _, sev in clients:
            ks = [d["k"] for _, d in sev.pubs]
            assert ks == list(range(ks[0], sent)), (
                f"{client.client_id}: lost or duplicated publications: {sev.pubs} "
                f"subscribed={[(s.recovered, s.was_recovering, s.stream_position) for s in sev.subscribed]}")
            assert all(s.recovered for s in sev.subscribed[1:]), "history in Redis survived the node: recovered"
    finally:
        stop.set()
        if not task.done():
            task.cancel()
        await disconnect_all(*(c for c, _, _ in clients))


async def test_redis_down_then_restarted_empty(redis_server: RedisServer,
                                               gateway_factory: Callable[..., Gateway]) -> None:
    gw = gateway_factory(redis_config(redis_server))
    channel = _channel()
    client, cev = await connect(gw.url, user="patient")
    sub, sev = await subscribe(client, channel)
    first = await _publish(gw, channel, {"k": 0})
    await wait_for(lambda: len(sev.pubs) == 1, what="first publication")
    redis_server.kill()
    started = time.monotonic()
    api = AsyncClient(gw.internal_url + "/api", API_KEY, timeout=scaled(10))
    try:
        with pytest.raises(CentApiResponseError) as failed:
            await api.publish(PublishRequest(channel=channel, data={"k": 1}))
        assert failed.value.code == 100
        assert time.monotonic() - started < scaled(1.0) + 1.5, "publish must fail within io_timeout"
    finally:
        await api.close()
    assert _ready(gw) == 503
    # The client connection stays up while Redis is away: an RPC still answers.
    reply = await client.rpc("echo", {"still": "here"})
    assert reply.data == {"still": "here"}
    assert not cev.disconnected
    redis_server.start()  # same port, empty
    await wait_for(lambda: _ready(gw) == 200, timeout=15, what="ready again")
    # The positioned subscriber was told to resubscribe (2500) and did; the stream is new,
    # so recovery must say false rather than present a gap as recovered.
    await wait_for(lambda: len(sev.subscribed) >= 2, timeout=15, what="resubscribed after the Redis restart")
    assert sev.subscribed[-1].recovered is False
    second = await _publish(gw, channel, {"k": 2})
    assert second["epoch"] != first["epoch"]
    await wait_for(lambda: sev.pubs[-1][1] == {"k": 2}, what="publications flow again")
    await disconnect_all(client)
    assert sub is not None


def test_ready_reports_the_engine(redis_server: RedisServer, gateway_factory: Callable[..., Gateway]) -> None:
    gw = gateway_factory(redis_config(redis_server))
    assert _ready(gw) == 200
    with urllib.request.urlopen(gw.internal_url + "/ready", timeout=scaled(3)) as resp:
        assert json.loads(resp.read())["status"] == "ready"


async def test_position_check_catches_a_silently_lost_publication(redis_server: RedisServer,
                                                                  gateway_factory: Callable[..., Gateway]) -> None:
    """A publication that reached the stream but never pub/sub (what a failover can do) is
    found by the periodic position check, and the subscriber recovers it."""
    import redis

    from gateway.core.model import Publication, pack_publication

    cfg = redis_config(redis_server)
    cfg["client"]["channel_position_check_delay"] = "1s"
    gw = gateway_factory(cfg)
    channel = _channel()
    client, _ = await connect(gw.url, user="watcher")
    try:
        _, events = await subscribe(client, channel)
        await _publish(gw, channel, {"k": 0})
        await wait_for(lambda: len(events.pubs) == 1, what="first publication")
        direct = redis.Redis(port=redis_server.port)
        try:
            offset = direct.hincrby(f"shardgate.stream.meta.{channel}", "s", 1)
            direct.xadd(f"shardgate.stream.{channel}", {"d": pack_publication(Publication(b'{"k":"silent"}'))},
                        id=f"{offset}-0")
        finally:
            direct.close()
        await wait_for(lambda: len(events.subscribed) >= 2, timeout=10, what="resubscribed after the check")
        assert events.subscribed[-1].recovered is True
        await wait_for(lambda: events.pubs[-1][1] == {"k": "silent"}, what="the silent publication recovered")
    finally:
        await disconnect_all(client)


async def test_three_redis_shards(redis_servers: list[RedisServer], gateway_factory: Callable[..., Gateway]) -> None:
    from sharding.hashing import owner

    cfg = redis_config(redis_servers[0])
    cfg["engine"]["redis"]["address"] = [s.address for s in redis_servers]
    gw = gateway_factory(cfg)
    channels: list[str] = []
    while {owner(ch, 3) for ch in channels} != {0, 1, 2} or len(channels) < 6:
        channels.append(_channel())  # until every shard has a channel
    client, _ = await connect(gw.url, user="sharded")
    try:
        subs = [await subscribe(client, ch) for ch in channels]
        for ch in channels:
            await _publish(gw, ch, {"ch": ch})
        await wait_for(lambda: all(len(ev.pubs) == 1 for _, ev in subs), what="one publication per channel")
        for ch in channels:
            home = owner(ch, 3)  # the same jump hash over FNV-1a 64 as the worker owner
            for index, server in enumerate(redis_servers):
                exists = server.cli("EXISTS", f"shardgate.stream.{ch}").strip() == "1"
                assert exists == (index == home), (ch, index, home)
    finally:
        await disconnect_all(client)


async def test_redis_cluster(redis_cluster: Any, gateway_factory: Callable[..., Gateway]) -> None:
    cfg = base_config()
    cfg["engine"] = {"type": "redis", "redis": {"cluster_address": redis_cluster.addresses, "io_timeout": "2s"}}
    a, b = gateway_factory(cfg), gateway_factory(cfg)
    channel = _channel()
    ca, _ = await connect(a.url, user="x")
    cb, _ = await connect(b.url, user="y")
    try:
        _, ea = await subscribe(ca, channel)
        sb, _ = await subscribe(cb, channel)
        for k in range(10):
            await sb.publish({"k": k})
        await wait_for(lambda: [d["k"] for _, d in ea.pubs] == list(range(10)), what="cluster fan-out")
        history = await sb.history(limit=-1)
        assert [p.offset for p in history.publications] == list(range(1, 11))
        assert (await sb.presence_stats()).num_clients == 2
    finally:
        await disconnect_all(ca, cb)


async def test_server_api_reaches_every_node(two_nodes: tuple[Gateway, Gateway]) -> None:
    """info lists every node's workers; channels add up over nodes; a per-user action taken
    by one node's API reaches the user's connections on the other node."""
    from cent import ChannelsRequest, Disconnect, DisconnectRequest, InfoRequest

    a, b = two_nodes
    channel = _channel()
    target, target_events = await connect(b.url, user="target")
    bystander, _ = await connect(b.url, user="bystander")
    api = AsyncClient(a.internal_url + "/api", API_KEY, timeout=scaled(5))
    try:
        await subscribe(target, channel)

        async def nodes() -> set[str]:
            return {n.name for n in (await api.info(InfoRequest())).nodes}

        async def both_nodes_listed() -> bool:
            return len(await nodes()) == 4  # 2 nodes x 2 workers, each "host.slot" per node

        await wait_for(both_nodes_listed, timeout=15, what="info lists both nodes' workers")
        channels = await api.channels(ChannelsRequest(pattern="room-*"))
        assert channels.channels[channel].num_clients == 1  # the subscriber sits on node B
        await api.disconnect(DisconnectRequest(user="target", disconnect=Disconnect(code=4501, reason="bye")))
        await wait_for(lambda: any(d.code == 4501 for d in target_events.disconnected),
                       what="the user on node B got 4501")
        assert bystander.state.value == "connected"
    finally:
        await api.close()
        await disconnect_all(target, bystander)


async def test_rolling_reload_with_the_redis_engine(redis_server: RedisServer,
                                                    gateway_factory: Callable[..., Gateway]) -> None:
    """SIGHUP under continuous publishing: owner workers hand their Redis subscriptions to
    their successors; every subscriber ends with every publication exactly once, in order,
    and every resubscribe recovered."""
    from tests.integration.test_reload import _run_reload

    cfg = redis_config(redis_server)
    cfg["shardgate"].update({"graceful_timeout": "5s", "drain_window": "1s"})
    await _run_reload(gateway_factory(cfg), reloads=1)
