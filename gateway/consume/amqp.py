"""RabbitMQ (AMQP 0-9-1, through aio-pika): the ``rabbitmq`` consumer and events out. The only
module that imports aio-pika.

**Consumer** (``consumers[i].type = "rabbitmq"``): one connection per consumer, in the one
worker of the node that ``owner(name, workers)`` names. ``prefetch`` bounds the messages
held unacknowledged (the backpressure). With ``ordered`` (the default) messages are applied
one at a time in queue order; a temporary failure is retried in place with a bounded
exponential backoff, so a later message never overtakes it. A message is acknowledged only
after the server API executor answered, that is after the channel's owner applied it
(at-least-once: a crash in between redelivers it; its idempotency key, the message's own or
``amqp:<message_id>``, makes the repeat a no-op while the engine remembers the key). A
malformed or refused message is published to ``dead_letter_exchange`` with the reason in the
``x-shardgate-error`` header, then acknowledged (without a dead-letter exchange it is
rejected without requeue and logged). The connection is re-established with a jittered
exponential backoff; what was unacknowledged then is redelivered by RabbitMQ.

**Events out** (``shardgate.events_out``): every worker publishes its clients' publications
(and, with ``join_leave``, joins and leaves) to a topic exchange, the channel as routing
key, with publisher confirms. Events wait in a bounded buffer (``buffer_size``) while
RabbitMQ is away; the oldest are dropped past it and counted. At-least-once: a batch
whose confirms were lost with the connection is sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Mapping
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
)
from aiormq.abc import FieldTable

from gateway.config.consumers import EventsOutConfig, RabbitMQConsumerConfig
from gateway.consume.backoff import backoff_delay
from gateway.consume.events import EventBuffer, OutEvent, encode_event
from gateway.consume.message import Dispatcher, Refused, Verdict, decode_amqp
from gateway.core.model import ClientInfo
from gateway.obs.stats import ConsumerStats, EventsOutStats

__all__ = ["AmqpEventsOut", "RabbitMQConsumer", "ERROR_HEADER"]

log = logging.getLogger("shardgate.consume.amqp")

#: The header a dead-lettered message carries: why it was refused.
ERROR_HEADER = "x-shardgate-error"
_BACKOFF_START = 0.1
_PUBLISH_BATCH = 256


def _on_close(inbox: asyncio.Queue[AbstractIncomingMessage | None]) -> Any:
    def closed(*_: object) -> None:
        inbox.put_nowait(None)

    return closed


class RabbitMQConsumer:
    """One queue, consumed until :meth:`run` is cancelled."""

    def __init__(self, name: str, cfg: RabbitMQConsumerConfig, dispatcher: Dispatcher, stats: ConsumerStats,
                 rng: random.Random) -> None:
        self.name = name
        self.cfg = cfg
        self._dispatcher = dispatcher
        self._stats = stats
        self._rng = rng
        self._tasks: set[asyncio.Task[None]] = set()
        self._consuming = False

    async def run(self) -> None:
        attempt = 0
        while True:
            self._consuming = False
            try:
                connection = await aio_pika.connect(self.cfg.url, timeout=10)
            except Exception as exc:
                log.warning("consumer %s: cannot connect to RabbitMQ: %s", self.name, exc)
            else:
                try:
                    await self._serve(connection)
                except Exception as exc:
                    log.warning("consumer %s: RabbitMQ connection lost: %s", self.name, exc)
                finally:
                    for task in list(self._tasks):
                        task.cancel()
                    with contextlib.suppress(Exception):
                        await connection.close()
            attempt = 1 if self._consuming else attempt + 1
            await asyncio.sleep(backoff_delay(attempt, _BACKOFF_START, self.cfg.reconnect_backoff_max, self._rng))

    async def _declare(self, channel: AbstractChannel) -> tuple[AbstractQueue, AbstractExchange | None]:
        cfg = self.cfg
        passive = not cfg.declare
        # ordered: RabbitMQ delivers to one consumer of the queue at a time (the others, on other
        # nodes, stand by), so the queue's order holds across nodes too.
        arguments: FieldTable | None = {"x-single-active-consumer": True} if cfg.ordered else None
        queue = await channel.declare_queue(cfg.queue, durable=cfg.durable, passive=passive, arguments=arguments)
        if cfg.exchange:
            exchange = await channel.declare_exchange(cfg.exchange, cfg.exchange_type, durable=cfg.durable,
                                                      passive=passive)
            if cfg.declare:
                for key in cfg.routing_keys or (cfg.queue,):
                    await queue.bind(exchange, routing_key=key)
        dlx: AbstractExchange | None = None
        if cfg.dead_letter_exchange:
            dlx = await channel.declare_exchange(cfg.dead_letter_exchange, aio_pika.ExchangeType.FANOUT,
                                                 durable=True, passive=passive)
            if cfg.dead_letter_queue:
                dlq = await channel.declare_queue(cfg.dead_letter_queue, durable=True, passive=passive)
                if cfg.declare:
                    await dlq.bind(dlx, routing_key="")
        return queue, dlx

    async def _serve(self, connection: AbstractConnection) -> None:
        """Consume until the connection or channel closes (then raise). The inbox holds at most
        ``prefetch`` messages: RabbitMQ sends no more while those are unacknowledged."""
        channel = await connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=self.cfg.prefetch)
        queue, dlx = await self._declare(channel)
        inbox: asyncio.Queue[AbstractIncomingMessage | None] = asyncio.Queue()
        connection.close_callbacks.add(_on_close(inbox))
        channel.close_callbacks.add(_on_close(inbox))
        # the broker cancels the consumer when the queue is deleted (or a replica takes over): start over
        (await channel.get_underlay_channel()).on_consumer_cancel_callbacks.add(_on_close(inbox))
        await queue.consume(inbox.put, no_ack=False)
        self._consuming = True
        log.info("consumer %s: consuming queue %r (prefetch %d, %s)", self.name, self.cfg.queue, self.cfg.prefetch,
                 "ordered" if self.cfg.ordered else "unordered")
        while True:
            message = await inbox.get()
            if message is None:
                raise ConnectionError("channel closed or consumer cancelled by the broker")
            if self.cfg.ordered:
                await self._handle(message, dlx)
            else:
                task = asyncio.create_task(self._handle(message, dlx))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _handle(self, message: AbstractIncomingMessage, dlx: AbstractExchange | None) -> None:
        cfg = self.cfg
        headers: Mapping[str, object] = message.headers or {}
        try:
            request = decode_amqp(message.body, headers, message.message_id or "", method_header=cfg.method_header,
                                  data_mode=cfg.publication_data_mode)
        except Refused as exc:
            await self._dead_letter(message, dlx, exc.reason)
            return
        attempt = 0
        while True:
            outcome = await self._dispatcher.apply(request)
            if outcome.verdict is Verdict.APPLIED:
                if cfg.ack_delay > 0:
                    log.warning("consumer %s: applied message %s, ack in %.1fs (ack_delay)", self.name,
                                message.message_id, cfg.ack_delay)
                    await asyncio.sleep(cfg.ack_delay)
                await message.ack()
                self._stats.applied += 1
                if message.timestamp is not None:
                    self._stats.lag = max(0.0, time.time() - message.timestamp.timestamp())
                return
            if outcome.verdict is Verdict.REFUSED:
                await self._dead_letter(message, dlx, outcome.reason)
                return
            attempt += 1
            self._stats.retried += 1
            if cfg.max_attempts and attempt >= cfg.max_attempts:
                await self._dead_letter(message, dlx, f"gave up after {attempt} attempts: {outcome.reason}")
                return
            delay = backoff_delay(attempt, cfg.retry_backoff_min, cfg.retry_backoff_max, self._rng)
            log.warning("consumer %s: message %s failed (%s), retry %d in %.2fs", self.name, message.message_id,
                        outcome.reason, attempt, delay)
            await asyncio.sleep(delay)

    async def _dead_letter(self, message: AbstractIncomingMessage, dlx: AbstractExchange | None,
                           reason: str) -> None:
        self._stats.refused += 1
        if dlx is None:
            log.error("consumer %s: dropping message %s: %s (no dead_letter_exchange)", self.name,
                      message.message_id, reason)
            await message.reject(requeue=False)
            return
        log.warning("consumer %s: dead-lettering message %s: %s", self.name, message.message_id, reason)
        headers = dict(message.headers or {})
        headers[ERROR_HEADER] = reason
        headers["x-shardgate-consumer"] = self.name
        headers["x-shardgate-queue"] = self.cfg.queue
        copy = aio_pika.Message(message.body, headers=headers, content_type=message.content_type,
                                message_id=message.message_id, timestamp=message.timestamp,
                                delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        await dlx.publish(copy, routing_key=self.cfg.queue)  # confirmed before the ack below
        await message.ack()


class AmqpEventsOut:
    """Client events to a topic exchange; :meth:`run` drains the buffer until cancelled."""

    def __init__(self, cfg: EventsOutConfig, stats: EventsOutStats, rng: random.Random) -> None:
        self.cfg = cfg
        self.join_leave = cfg.join_leave
        self._buffer = EventBuffer(cfg.buffer_size, stats)
        self._wake = asyncio.Event()
        self._rng = rng

    def _push(self, event: OutEvent) -> None:
        self._buffer.push(event)
        self._wake.set()

    def publication(self, channel: str, data: bytes, info: ClientInfo | None, offset: int) -> None:
        self._push(encode_event("publication", channel, info, data, offset))

    def join(self, channel: str, info: ClientInfo) -> None:
        self._push(encode_event("join", channel, info))

    def leave(self, channel: str, info: ClientInfo) -> None:
        self._push(encode_event("leave", channel, info))

    async def run(self) -> None:
        attempt = 0
        while True:
            connected = False
            try:
                connection = await aio_pika.connect(self.cfg.url, timeout=10)
            except Exception as exc:
                log.warning("events out: cannot connect to RabbitMQ: %s", exc)
            else:
                try:
                    connected = True
                    await self._serve(connection)
                except Exception as exc:
                    log.warning("events out: RabbitMQ connection lost: %s", exc)
                finally:
                    with contextlib.suppress(Exception):
                        await connection.close()
            attempt = 1 if connected else attempt + 1
            await asyncio.sleep(backoff_delay(attempt, _BACKOFF_START, self.cfg.reconnect_backoff_max, self._rng))

    async def _serve(self, connection: AbstractConnection) -> None:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(self.cfg.exchange, aio_pika.ExchangeType.TOPIC, durable=True,
                                                  passive=not self.cfg.declare)
        log.info("events out: publishing to exchange %r", self.cfg.exchange)
        while True:
            while not self._buffer:
                self._wake.clear()
                await self._wake.wait()
            batch = self._buffer.peek(_PUBLISH_BATCH)
            await asyncio.gather(*(exchange.publish(
                aio_pika.Message(event.body, content_type="application/json", headers={"shardgate-event": event.kind},
                                 delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=event.channel) for event in batch))
            self._buffer.confirmed(batch)
