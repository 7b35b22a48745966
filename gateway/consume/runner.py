"""Which worker runs which consumer, and their tasks' lifetime in that worker.

Every worker of a node reads the same ``consumers`` list; a RabbitMQ consumer runs in the one
worker ``owner(name, workers)`` names, an outbox partition in the one ``owner("name:p",
workers)`` names (the channel placement hash, so ``shardgate owner`` tells where). Each queue
and each partition thus has exactly one consumer per node, and a worker restarted into its
slot takes its consumers back. The AMQP and PostgreSQL modules are imported only when a
consumer of their type runs here. Events out run in every worker that has it configured.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from gateway.config.consumers import ConsumerConfig
from gateway.consume.message import Dispatcher, Executor
from sharding.hashing import owner

if TYPE_CHECKING:
    from gateway.node import Node

__all__ = ["Consumers", "consumer_slot", "partitions_of"]

log = logging.getLogger("shardgate.consume")


def consumer_slot(name: str, workers: int, partition: int | None = None) -> int:
    """The worker slot that runs consumer ``name`` (or its outbox ``partition``)."""
    return owner(name if partition is None else f"{name}:{partition}", workers)


def partitions_of(consumer: ConsumerConfig, slot: int, workers: int) -> list[int]:
    """The outbox partitions of ``consumer`` that ``slot`` consumes."""
    return [p for p in range(consumer.postgresql.num_partitions)
            if consumer_slot(consumer.name, workers, p) == slot]


class Consumers:
    """This worker's consumers and events-out publisher."""

    def __init__(self, node: Node, executor: Executor) -> None:
        self._node = node
        self._dispatcher = Dispatcher(executor)
        self._tasks: list[asyncio.Task[None]] = []  # consumers
        self._events: asyncio.Task[None] | None = None

    def start(self) -> None:
        node = self._node
        config = node.config
        for consumer in config.consumers:
            if consumer.type == "rabbitmq" and consumer_slot(consumer.name, node.workers) == node.slot:
                from gateway.consume.amqp import RabbitMQConsumer

                amqp = RabbitMQConsumer(consumer.name, consumer.rabbitmq, self._dispatcher,
                                        node.metrics.consumer(consumer.name), node.rng)
                self._tasks.append(self._spawn(f"consumer {consumer.name}", amqp.run()))
            elif consumer.type == "postgresql":
                partitions = partitions_of(consumer, node.slot, node.workers)
                if partitions:
                    from gateway.consume.postgresql import OutboxConsumer

                    outbox = OutboxConsumer(consumer.name, consumer.postgresql, partitions, self._dispatcher,
                                            node.metrics.consumer(consumer.name), node.rng)
                    self._tasks.append(self._spawn(f"consumer {consumer.name}", outbox.run()))
        events = config.shardgate.events_out
        if events.enabled:
            from gateway.consume.amqp import AmqpEventsOut

            sink = AmqpEventsOut(events, node.metrics.events_out, node.rng)
            node.events = sink
            self._events = self._spawn("events out", sink.run())

    def _spawn(self, what: str, job: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = self._node.loop.create_task(job, name=what)

        def done(t: asyncio.Task[None]) -> None:
            if not t.cancelled() and t.exception() is not None:
                log.error("%s stopped: %r", what, t.exception())

        task.add_done_callback(done)
        return task

    async def stop_consumers(self) -> None:
        """Stop the consumers; a message being applied is left unacknowledged (redelivered)."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        """Stop the consumers and events out (events still buffered are lost)."""
        self._node.events = None
        if self._events is not None:
            self._tasks.append(self._events)
            self._events = None
        await self.stop_consumers()
