"""RabbitMQConsumer._handle with a fake message, dead-letter exchange and dispatcher: retries in
place on temporary errors (the message is not acked meanwhile), gives up after max_attempts into
the dead-letter exchange, acks only after the dispatcher answered. No sockets."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import orjson

from gateway.config.consumers import RabbitMQConsumerConfig
from gateway.consume.amqp import ERROR_HEADER, RabbitMQConsumer
from gateway.consume.message import ApiRequest, Outcome, PublishRequest, Verdict
from gateway.obs.stats import ConsumerStats


class FakeMessage:
    def __init__(self, body: bytes, message_id: str = "m1") -> None:
        self.body = body
        self.headers: dict[str, Any] = {"h": "v"}
        self.message_id = message_id
        self.timestamp = None
        self.content_type = "application/json"
        self.log: list[str] = []

    async def ack(self) -> None:
        self.log.append("ack")

    async def reject(self, requeue: bool = False) -> None:
        self.log.append(f"reject requeue={requeue}")


class FakeExchange:
    def __init__(self) -> None:
        self.published: list[tuple[Any, str]] = []

    async def publish(self, message: Any, routing_key: str) -> None:
        self.published.append((message, routing_key))


class FakeDispatcher:
    def __init__(self, *outcomes: Outcome, log: list[str]) -> None:
        self.outcomes = list(outcomes)
        self.requests: list[ApiRequest] = []
        self.log = log

    async def apply(self, request: ApiRequest) -> Outcome:
        self.requests.append(request)
        self.log.append("apply")
        return self.outcomes.pop(0)


BODY = orjson.dumps({"method": "publish", "payload": {"channel": "c", "data": 1}})
RETRY = Outcome(Verdict.RETRY, "100: internal server error")


def _run(cfg: RabbitMQConsumerConfig, message: FakeMessage, *outcomes: Outcome,
         dlx: FakeExchange | None = None) -> tuple[ConsumerStats, FakeDispatcher]:
    stats = ConsumerStats()
    dispatcher = FakeDispatcher(*outcomes, log=message.log)
    consumer = RabbitMQConsumer("c", cfg, dispatcher, stats, random.Random(0))  # type: ignore[arg-type]
    asyncio.run(consumer._handle(message, dlx))  # type: ignore[arg-type]
    return stats, dispatcher


FAST = RabbitMQConsumerConfig(queue="q", retry_backoff_min=0.001, retry_backoff_max=0.002)


def test_temporary_errors_retry_in_place_then_ack() -> None:
    message = FakeMessage(BODY)
    stats, dispatcher = _run(FAST, message, RETRY, RETRY, Outcome(Verdict.APPLIED))
    assert message.log == ["apply", "apply", "apply", "ack"]  # never acked before it was applied
    assert dispatcher.requests == [PublishRequest("c", 1, "amqp:m1")] * 3  # the same key each time
    assert (stats.applied, stats.retried, stats.refused) == (1, 2, 0)


def test_gives_up_after_max_attempts_into_the_dead_letter_exchange() -> None:
    message = FakeMessage(BODY)
    dlx = FakeExchange()
    cfg = RabbitMQConsumerConfig(queue="q", retry_backoff_min=0.001, retry_backoff_max=0.002, max_attempts=2)
    stats, _ = _run(cfg, message, RETRY, RETRY, dlx=dlx)
    assert message.log == ["apply", "apply", "ack"]
    ((copy, key),) = dlx.published
    assert key == "q" and copy.body == BODY and copy.message_id == "m1"
    assert copy.headers[ERROR_HEADER] == "gave up after 2 attempts: 100: internal server error"
    assert copy.headers["h"] == "v"
    assert (stats.refused, stats.retried) == (1, 2)


def test_refused_without_a_dead_letter_exchange_is_rejected() -> None:
    message = FakeMessage(b"nope")
    stats, dispatcher = _run(FAST, message)
    assert message.log == ["reject requeue=False"] and not dispatcher.requests
    assert stats.refused == 1
