"""Consumers and events out against the real services: RabbitMQ (127.0.0.1:5672) and PostgreSQL
(127.0.0.1:5432), a real 2-worker gateway, centrifuge-python subscribers on both workers.

Proves: a message dropped into the queue reaches every subscriber exactly once, also when the
channel's owner is another worker than the consumer's (and a redelivered copy is a no-op); bad
messages land in the dead-letter queue with the reason header; the whole node SIGKILLed between
applying a message and acknowledging it, the redelivered message still reaches subscribers
once (Redis engine: the idempotency result outlives the node); outbox rows are applied in id
order per partition and deleted; a client publication reaches a queue bound to the events-out
exchange with the channel as routing key. Queues, exchanges and tables are named per run and
removed at the end. Without RabbitMQ or PostgreSQL these tests skip (fail under CI=true).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aio_pika
import orjson
import psycopg
import pytest
from aio_pika.abc import AbstractChannel

from gateway.consume.runner import consumer_slot
from sharding.hashing import owner
from tests.conftest import Gateway, base_config, scaled, wait_for
from tests.integration.sdk import SubEvents, connect_on_slot, disconnect_all, slot, subscribe
from tests.redis_servers import RedisServer

WORKERS = 2


def _uid() -> str:
    return uuid.uuid4().hex[:10]


def channel_owned_by(want: int, prefix: str = "room") -> str:
    while True:
        channel = f"{prefix}-{_uid()}"
        if owner(channel, WORKERS) == want:
            return channel


def metrics(gw: Gateway) -> str:
    with urllib.request.urlopen(gw.internal_url + "/metrics", timeout=scaled(3)) as resp:
        return str(resp.read().decode())


def metric(gw: Gateway, name: str, **labels: str) -> float:
    """The sum of ``name`` over the series whose labels include ``labels``."""
    total = 0.0
    for m in re.finditer(rf"^{name}\{{([^}}]*)\}} (\S+)$", metrics(gw), re.M):
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(2))
    return total


def datas(events: SubEvents) -> list[Any]:
    return [data for _, data in events.pubs]


# -- RabbitMQ plumbing --------------------------------------------------------------------------


class Rabbit:
    """The test's own AMQP connection: publish into queues, read them, delete what was made."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.queues: list[str] = []
        self.exchanges: list[str] = []
        self.conn: aio_pika.abc.AbstractConnection | None = None

    async def channel(self) -> AbstractChannel:
        if self.conn is None:
            self.conn = await aio_pika.connect(self.url, timeout=scaled(5))
        return await self.conn.channel()

    def names(self, prefix: str) -> dict[str, str]:
        run = _uid()
        names = {"queue": f"sg-test-{prefix}-{run}", "dlx": f"sg-test-{prefix}-{run}.dlx",
                 "dlq": f"sg-test-{prefix}-{run}.dead"}
        self.queues += [names["queue"], names["dlq"]]
        self.exchanges.append(names["dlx"])
        return names

    async def publish(self, queue: str, body: bytes, message_id: str = "", **headers: Any) -> None:
        ch = await self.channel()
        await ch.default_exchange.publish(
            aio_pika.Message(body, message_id=message_id or None, headers=headers or None,
                             delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=queue)
        await ch.close()

    async def counts(self, queue: str) -> tuple[int, int] | None:
        """(ready messages, consumers) of ``queue``; None while it does not exist."""
        ch = await self.channel()
        try:
            q = await ch.declare_queue(queue, passive=True)
        except aio_pika.exceptions.ChannelClosed:
            return None
        result = q.declaration_result
        await ch.close()
        return result.message_count or 0, result.consumer_count or 0

    async def wait_consumed(self, queue: str, consumers: int = 1) -> None:
        async def ok() -> bool:
            counts = await self.counts(queue)
            return counts is not None and counts[1] >= consumers

        await wait_for(ok, timeout=15, what=f"a consumer on {queue}", interval=0.1)

    async def get_all(self, queue: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
        ch = await self.channel()
        q = await ch.declare_queue(queue, passive=True)
        out = []
        while (message := await q.get(no_ack=True, fail=False)) is not None:
            out.append(message)
        await ch.close()
        return out

    async def close(self) -> None:
        ch = await self.channel()
        for queue in self.queues:
            await ch.queue_delete(queue)
        for exchange in self.exchanges:
            await ch.exchange_delete(exchange)
        assert self.conn is not None
        await self.conn.close()


@pytest.fixture
async def rabbit(rabbitmq_url: str) -> AsyncIterator[Rabbit]:
    r = Rabbit(rabbitmq_url)
    yield r
    await r.close()


def amqp_consumer(name: str, url: str, names: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {"name": name, "enabled": True, "type": "rabbitmq",
            "rabbitmq": {"url": url, "queue": names["queue"], "dead_letter_exchange": names["dlx"],
                         "dead_letter_queue": names["dlq"], "prefetch": 8, "retry_backoff_min": "50ms",
                         "retry_backoff_max": "500ms", "reconnect_backoff_max": "1s", **extra}}


def envelope(method: str, **payload: Any) -> bytes:
    return orjson.dumps({"method": method, "payload": payload})


async def subscribers_on_both_workers(gw: Gateway, channel: str) -> list[tuple[Any, SubEvents]]:
    out = []
    for want in range(WORKERS):
        client, _ = await connect_on_slot(gw.url, want, user=f"u{want}")
        _, events = await subscribe(client, channel)
        out.append((client, events))
    assert sorted(slot(c) for c, _ in out) == list(range(WORKERS))
    return out


# -- RabbitMQ consumer --------------------------------------------------------------------------


async def test_amqp_message_reaches_subscribers_on_both_workers_exactly_once(
        rabbit: Rabbit, gateway_factory: Callable[..., Gateway]) -> None:
    names = rabbit.names("once")
    name = f"amqp-{_uid()}"
    consumer = consumer_slot(name, WORKERS)
    channel = channel_owned_by(1 - consumer)  # the owner is the other worker: the publish crosses the bus
    gw = gateway_factory(base_config(consumers=[amqp_consumer(name, rabbit.url, names)]), workers=WORKERS)
    await rabbit.wait_consumed(names["queue"])
    subs = await subscribers_on_both_workers(gw, channel)
    try:
        await rabbit.publish(names["queue"], envelope("publish", channel=channel, data={"n": 1}), message_id="m1")
        # the same message again (a redelivery as a producer retry would make it): the message id
        # is the idempotency key, so it is applied once
        await rabbit.publish(names["queue"], envelope("publish", channel=channel, data={"n": 1}), message_id="m1")
        await rabbit.publish(names["queue"], envelope("publish", channel=channel, data={"n": 2}), message_id="m2")
        await wait_for(lambda: all({"n": 2} in datas(ev) for _, ev in subs), timeout=10, what="both messages")
        for _, ev in subs:
            assert datas(ev) == [{"n": 1}, {"n": 2}], ev.pubs
        assert metric(gw, "shardgate_consumer_applied_total", consumer=name, slot=str(consumer)) == 3
        assert metric(gw, "shardgate_consumer_applied_total", consumer=name, slot=str(1 - consumer)) == 0
        assert (await rabbit.counts(names["queue"])) == (0, 1)  # all acknowledged
    finally:
        await disconnect_all(*(c for c, _ in subs))


async def test_bad_messages_are_dead_lettered_with_the_reason(
        rabbit: Rabbit, gateway_factory: Callable[..., Gateway]) -> None:
    names = rabbit.names("dead")
    name = f"amqp-{_uid()}"
    channel = f"room-{_uid()}"
    gw = gateway_factory(base_config(consumers=[amqp_consumer(name, rabbit.url, names)]), workers=WORKERS)
    await rabbit.wait_consumed(names["queue"])
    subs = await subscribers_on_both_workers(gw, channel)
    bad = {
        "b1": (b"{not json", "message is not JSON"),
        "b2": (envelope("fly", channel=channel), "unknown method 'fly'"),
        "b3": (envelope("history", channel=channel), "does not change state"),
        "b4": (envelope("publish", channel="nowhere:x", data=1), "102: unknown channel"),
        "b5": (envelope("publish", channel=channel), "data required"),
    }
    try:
        for message_id, (body, _) in bad.items():
            await rabbit.publish(names["queue"], body, message_id=message_id, trace="t-" + message_id)
        await rabbit.publish(names["queue"], envelope("publish", channel=channel, data="after"), message_id="ok")
        await wait_for(lambda: all("after" in datas(ev) for _, ev in subs), timeout=10, what="the good message")
        # ordered: every bad message before it was handled (dead-lettered, confirmed, acked) first
        dead = await rabbit.get_all(names["dlq"])
        assert sorted(m.message_id or "" for m in dead) == sorted(bad)
        for m in dead:
            body, reason = bad[m.message_id or ""]
            headers = m.headers or {}
            error = headers["x-shardgate-error"]
            assert reason in (error.decode() if isinstance(error, bytes) else str(error)), (m.message_id, error)
            assert m.body == body
            assert headers["x-shardgate-consumer"] in (name, name.encode())
            assert headers["trace"] in (f"t-{m.message_id}", f"t-{m.message_id}".encode())  # kept
        for _, ev in subs:
            assert datas(ev) == ["after"]
        assert metric(gw, "shardgate_consumer_failed_total", consumer=name, result="refused") == len(bad)
        assert (await rabbit.counts(names["queue"])) == (0, 1)
    finally:
        await disconnect_all(*(c for c, _ in subs))


@pytest.mark.usefixtures("redis_bin")
async def test_node_killed_between_apply_and_ack_redelivery_reaches_subscribers_once(
        rabbit: Rabbit, redis_server: RedisServer, gateway_factory: Callable[..., Gateway]) -> None:
    """Node A consumes (and holds the ack for 60 s, ``ack_delay``); node B serves the subscribers;
    both on one Redis. A is SIGKILLed (supervisor and workers) after the publication reached the
    subscribers but before the ack; RabbitMQ redelivers to A's replacement, whose publish with
    the same idempotency key (the AMQP message id) Redis answers from its stored result."""
    names = rabbit.names("kill")
    name = f"amqp-{_uid()}"
    channel = f"room-{_uid()}"

    def config(consumers: list[dict[str, Any]]) -> dict[str, Any]:
        cfg = base_config(consumers=consumers)
        cfg["engine"] = {"type": "redis", "redis": {"address": redis_server.address, "io_timeout": "1s",
                                                    "connect_timeout": "500ms"}}
        return cfg

    b = gateway_factory(config([]), workers=WORKERS)
    a = gateway_factory(config([amqp_consumer(name, rabbit.url, names, ack_delay="60s")]), workers=WORKERS)
    await rabbit.wait_consumed(names["queue"])
    subs = await subscribers_on_both_workers(b, channel)
    try:
        await rabbit.publish(names["queue"], envelope("publish", channel=channel, data={"n": 1}), message_id="k1")
        await wait_for(lambda: all(datas(ev) == [{"n": 1}] for _, ev in subs), timeout=10, what="delivery via A")
        await wait_for(lambda: "ack in 60.0s (ack_delay)" in a.log(), what="A holding the ack")
        assert (await rabbit.counts(names["queue"])) == (0, 1)  # held unacknowledged by A
        for pid in [*a.worker_pids(), a.proc.pid]:
            os.kill(pid, signal.SIGKILL)

        async def requeued() -> bool:
            return (await rabbit.counts(names["queue"])) == (1, 0)

        await wait_for(requeued, timeout=10, what="RabbitMQ requeued the unacknowledged message")
        a2 = gateway_factory(config([amqp_consumer(name, rabbit.url, names)]), workers=WORKERS)
        await wait_for(lambda: metric(a2, "shardgate_consumer_applied_total", consumer=name) == 1, timeout=15,
                       what="the redelivered message applied (and acked) by A's replacement")
        await rabbit.publish(names["queue"], envelope("publish", channel=channel, data={"n": 2}), message_id="k2")
        await wait_for(lambda: all({"n": 2} in datas(ev) for _, ev in subs), timeout=10, what="the next message")
        for _, ev in subs:
            assert datas(ev) == [{"n": 1}, {"n": 2}], ev.pubs
        assert (await rabbit.counts(names["queue"])) == (0, 1)
    finally:
        await disconnect_all(*(c for c, _ in subs))


# -- PostgreSQL outbox --------------------------------------------------------------------------


@pytest.fixture
async def outbox(postgres_dsn: str) -> AsyncIterator[tuple[psycopg.AsyncConnection[Any], str]]:
    table = f"sg_test_outbox_{_uid()}"
    conn = await psycopg.AsyncConnection.connect(postgres_dsn, autocommit=True)
    await conn.execute(f"""CREATE TABLE {table} (
        id BIGSERIAL PRIMARY KEY, method TEXT NOT NULL, payload JSONB NOT NULL,
        partition INTEGER NOT NULL DEFAULT 0,
        created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL)""")
    yield conn, table
    await conn.execute(f"DROP TABLE {table}")
    await conn.close()


async def test_outbox_rows_applied_in_id_order_per_partition_and_deleted(
        outbox: tuple[psycopg.AsyncConnection[Any], str], postgres_dsn: str,
        gateway_factory: Callable[..., Gateway]) -> None:
    conn, table = outbox
    name = f"outbox-{_uid()}"
    notify = f"sg_test_{_uid()}"
    partitions = 4
    # the partitions spread over both workers, and each channel's owner differs from its consumer
    slots = {p: consumer_slot(name, WORKERS, p) for p in range(partitions)}
    channels = {p: channel_owned_by(1 - slots[p]) for p in range(partitions)}
    cfg = base_config(consumers=[{"name": name, "enabled": True, "type": "postgresql", "postgresql": {
        "dsn": postgres_dsn, "outbox_table_name": table, "num_partitions": partitions, "partition_select_limit": 3,
        # a long poll: rows arrive this fast only through LISTEN/NOTIFY
        "partition_poll_interval": "30s", "partition_notification_channel": notify}}])
    gw = gateway_factory(cfg, workers=WORKERS)
    subs = {p: await subscribers_on_both_workers(gw, channels[p]) for p in range(partitions)}
    rows = 10
    try:
        async with conn.transaction():
            for i in range(rows):
                for p in range(partitions):
                    if i == 4 and p == 0:  # a refused row is skipped (and deleted), the rest go on
                        await conn.execute(f"INSERT INTO {table} (method, payload, partition) VALUES (%s, %s, %s)",
                                           ("history", orjson.dumps({"channel": channels[p]}).decode(), p))
                    payload = {"method": "publish", "payload": {"channel": channels[p], "data": {"i": i}}}
                    method = "" if i % 2 else "publish"  # both row shapes: envelope and method column
                    body = payload if not method else payload["payload"]
                    await conn.execute(f"INSERT INTO {table} (method, payload, partition) VALUES (%s, %s, %s)",
                                       (method, orjson.dumps(body).decode(), p))
            for p in range(partitions):
                await conn.execute("SELECT pg_notify(%s, %s)", (notify, str(p)))
        want = [{"i": i} for i in range(rows)]
        await wait_for(lambda: all(len(datas(ev)) >= rows for p in subs for _, ev in subs[p]), timeout=20,
                       what="every row on every subscriber")
        for p in range(partitions):
            for _, ev in subs[p]:
                assert datas(ev) == want, (p, ev.pubs)

        async def empty() -> bool:
            cur = await conn.execute(f"SELECT count(*) FROM {table}")
            row = await cur.fetchone()
            return row is not None and row[0] == 0

        await wait_for(empty, what="applied rows deleted")
        for s in set(slots.values()):
            mine = [p for p in range(partitions) if slots[p] == s]
            assert metric(gw, "shardgate_consumer_applied_total", consumer=name, slot=str(s)) == rows * len(mine)
        assert metric(gw, "shardgate_consumer_failed_total", consumer=name, result="refused") == 1
    finally:
        await disconnect_all(*(c for p in subs for c, _ in subs[p]))


# -- events out ---------------------------------------------------------------------------------


async def test_client_publication_goes_out_to_the_topic_exchange(
        rabbit: Rabbit, gateway_factory: Callable[..., Gateway]) -> None:
    exchange = f"sg-test-events-{_uid()}"
    queue = f"sg-test-events-q-{_uid()}"
    rabbit.exchanges.append(exchange)
    rabbit.queues.append(queue)
    channel = f"room-{_uid()}"
    ch = await rabbit.channel()
    ex = await ch.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
    q = await ch.declare_queue(queue)
    await q.bind(ex, routing_key=channel)
    cfg = base_config(shardgate={"graceful_timeout": "5s", "bus_request_timeout": "2s", "events_out": {
        "enabled": True, "url": rabbit.url, "exchange": exchange, "join_leave": True}})
    gw = gateway_factory(cfg, workers=WORKERS)
    client, _ = await connect_on_slot(gw.url, 0, user="alice")
    try:
        _sub, _ = await subscribe(client, channel)
        await client.publish(channel, {"text": "hi"})
        got: list[aio_pika.abc.AbstractIncomingMessage] = []

        async def arrived() -> bool:
            message = await q.get(no_ack=True, fail=False)
            if message is not None:
                got.append(message)
            return any(orjson.loads(m.body)["type"] == "publication" for m in got)

        await wait_for(arrived, timeout=10, what="the publication on the bound queue")
        (pub,) = [m for m in got if orjson.loads(m.body)["type"] == "publication"]
        body = orjson.loads(pub.body)
        assert pub.routing_key == channel and pub.exchange == exchange
        assert body["channel"] == channel and body["data"] == {"text": "hi"}
        assert body["info"]["user"] == "alice" and body["info"]["client"] == client.client_id
        assert body["offset"] >= 1
        assert (pub.headers or {}).get("shardgate-event") in ("publication", b"publication")
        assert next(orjson.loads(m.body)["type"] for m in got) == "join"
        await wait_for(lambda: metric(gw, "shardgate_events_out_total", result="published") >= 2,
                       what="events counted as published")
        assert metric(gw, "shardgate_events_out_total", result="dropped") == 0
    finally:
        await disconnect_all(client)
    await ch.close()


async def test_consumer_recovers_when_the_broker_cancels_it(
        rabbit: Rabbit, gateway_factory: Callable[..., Gateway]) -> None:
    """The queue deleted under the consumer (RabbitMQ cancels it): the consumer starts over,
    declares the queue again and goes on."""
    names = rabbit.names("cancel")
    name = f"amqp-{_uid()}"
    channel = f"room-{_uid()}"
    gw = gateway_factory(base_config(consumers=[amqp_consumer(name, rabbit.url, names)]), workers=WORKERS)
    await rabbit.wait_consumed(names["queue"])
    subs = await subscribers_on_both_workers(gw, channel)
    try:
        ch = await rabbit.channel()
        await ch.queue_delete(names["queue"])
        await ch.close()
        await rabbit.wait_consumed(names["queue"])  # declared again, consumed again
        await rabbit.publish(names["queue"], envelope("publish", channel=channel, data="back"), message_id="x")
        await wait_for(lambda: all(datas(ev) == ["back"] for _, ev in subs), timeout=10, what="delivery after")
        assert "consumer cancelled by the broker" in gw.log()
    finally:
        await disconnect_all(*(c for c, _ in subs))


async def test_events_out_buffer_is_bounded_while_rabbitmq_is_away(gateway_factory: Callable[..., Gateway]) -> None:
    """No RabbitMQ at all (a closed port): events wait in a buffer of ``buffer_size`` and the
    oldest beyond it are dropped and counted; clients publish as usual."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    cfg = base_config(shardgate={"graceful_timeout": "5s", "bus_request_timeout": "2s", "events_out": {
        "enabled": True, "url": f"amqp://guest:guest@127.0.0.1:{port}/", "exchange": "x", "buffer_size": 3}})
    gw = gateway_factory(cfg, workers=WORKERS)
    client, _ = await connect_on_slot(gw.url, 0, user="alice")
    try:
        channel = f"room-{_uid()}"
        await subscribe(client, channel)
        for i in range(8):
            await client.publish(channel, {"i": i})
        await wait_for(lambda: metric(gw, "shardgate_events_out_total", result="dropped", slot="0") == 5,
                       what="5 of 8 events dropped")
        assert metric(gw, "shardgate_events_out_buffered", slot="0") == 3
        assert metric(gw, "shardgate_events_out_total", result="published") == 0
    finally:
        await disconnect_all(client)
