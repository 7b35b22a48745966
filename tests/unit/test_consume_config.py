"""The ``consumers`` list and ``shardgate.events_out``; which worker runs which consumer; the
events-out message and its bounded buffer. No sockets."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.config import ConfigError, parse_config
from gateway.consume.events import EventBuffer, encode_event
from gateway.consume.runner import consumer_slot, partitions_of
from gateway.core.model import ClientInfo
from gateway.obs.metrics import render
from gateway.obs.stats import EventsOutStats, Stats
from sharding.hashing import owner


def _consumer(**fields: Any) -> dict[str, Any]:
    return {"name": "c1", "enabled": True, **fields}


def test_rabbitmq_consumer() -> None:
    config = parse_config({"consumers": [_consumer(type="rabbitmq", rabbitmq={
        "queue": "q", "prefetch": 4, "dead_letter_exchange": "dlx", "dead_letter_queue": "dlq",
        "retry_backoff_min": "50ms", "publication_data_mode": {"enabled": True}})]})
    (c,) = config.consumers
    assert (c.name, c.type, c.rabbitmq.queue, c.rabbitmq.prefetch) == ("c1", "rabbitmq", "q", 4)
    assert c.rabbitmq.retry_backoff_min == 0.05 and c.rabbitmq.publication_data_mode.enabled
    assert config.warning == ""


def test_postgresql_consumer_centrifugo_keys() -> None:
    config = parse_config({"consumers": [_consumer(type="postgresql", postgresql={
        "dsn": "postgresql://postgres@127.0.0.1/test", "outbox_table_name": "public.centrifugo_outbox",
        "num_partitions": 4, "partition_select_limit": 10, "partition_poll_interval": "1s",
        "partition_notification_channel": "outbox", "use_try_lock": True})]})
    (c,) = config.consumers
    assert c.postgresql.num_partitions == 4 and c.postgresql.partition_poll_interval == 1.0
    assert c.postgresql.use_try_lock


def test_disabled_consumers_of_any_centrifugo_type_are_accepted_and_left_out() -> None:
    config = parse_config({"consumers": [
        {"name": "k", "enabled": False, "type": "kafka", "kafka": {"brokers": ["x:9092"], "topics": ["t"]}},
        {"name": "p", "type": "postgresql"}]})
    assert config.consumers == ()


@pytest.mark.parametrize(("consumer", "key", "message"), [
    (_consumer(type="kafka"), "consumers[0].type", "not implemented by shardgate"),
    (_consumer(type="rabbitmq"), "consumers[0].rabbitmq.queue", "required"),
    (_consumer(type="postgresql", postgresql={"dsn": "x"}), "consumers[0].postgresql.outbox_table_name",
     "required"),
    (_consumer(type="postgresql", postgresql={"dsn": "x", "outbox_table_name": "t; drop table x"}),
     "consumers[0].postgresql.outbox_table_name", "table name"),
    (_consumer(type="rabbitmq", rabbitmq={"queue": "q", "url": "http://x"}), "consumers[0].rabbitmq.url", "amqp"),
    (_consumer(type="rabbitmq", rabbitmq={"queue": "q", "prefetch": 0}), "consumers[0].rabbitmq.prefetch", "1..65535"),
    (_consumer(type="rabbitmq", rabbitmq={"queue": "q", "dead_letter_queue": "d"}),
     "consumers[0].rabbitmq.dead_letter_queue", "requires dead_letter_exchange"),
    (_consumer(type="rabbitmq", rabbitmq={"queue": "q", "qeue": "x"}), "consumers[0].rabbitmq.qeue", "did you mean"),
    ({"enabled": True, "type": "rabbitmq", "rabbitmq": {"queue": "q"}}, "consumers[0].name", "required"),
    (_consumer(name="bad name", type="rabbitmq", rabbitmq={"queue": "q"}), "consumers[0].name", "invalid"),
    (_consumer(type="sqs"), "consumers[0].type", "must be one of"),
])
def test_consumer_problems_name_their_key(consumer: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"consumers": [consumer]})
    assert info.value.key == key and message in info.value.message, str(info.value)


def test_duplicate_consumer_names() -> None:
    c = _consumer(type="rabbitmq", rabbitmq={"queue": "q"})
    with pytest.raises(ConfigError) as info:
        parse_config({"consumers": [c, c]})
    assert info.value.key == "consumers[1].name"


def test_events_out() -> None:
    config = parse_config({"shardgate": {"events_out": {"enabled": True, "exchange": "ev", "buffer_size": 5}}})
    assert config.shardgate.events_out.enabled and config.shardgate.events_out.buffer_size == 5
    with pytest.raises(ConfigError) as info:
        parse_config({"shardgate": {"events_out": {"enabled": True, "exchnage": "x"}}})
    assert info.value.key == "shardgate.events_out.exchnage"


def test_one_worker_per_consumer_and_partition() -> None:
    assert consumer_slot("orders", 4) == owner("orders", 4)
    assert consumer_slot("orders", 4, 2) == owner("orders:2", 4)
    config = parse_config({"consumers": [_consumer(type="postgresql", postgresql={
        "dsn": "x", "outbox_table_name": "t", "num_partitions": 16})]})
    (c,) = config.consumers
    shares = [partitions_of(c, slot, 4) for slot in range(4)]
    assert sorted(p for share in shares for p in share) == list(range(16))  # each partition exactly once
    assert sum(1 for share in shares if share) > 1  # spread over workers


def test_event_encoding_embeds_raw_json() -> None:
    info = ClientInfo("42", "cid", b'{"name":"a"}', None)
    event = encode_event("publication", "chat:room", info, b'{"text":"hi"}', 7)
    assert (event.kind, event.channel) == ("publication", "chat:room")
    assert orjson.loads(event.body) == {"type": "publication", "channel": "chat:room", "data": {"text": "hi"},
                                        "offset": 7,
                                        "info": {"user": "42", "client": "cid", "conn_info": {"name": "a"}}}
    assert orjson.loads(encode_event("leave", "c", info).body)["type"] == "leave"


def test_event_buffer_drops_the_oldest_and_counts() -> None:
    stats = EventsOutStats()
    buf = EventBuffer(3, stats)
    events = [encode_event("publication", f"c{i}", None, b"1") for i in range(5)]
    for e in events[:3]:
        buf.push(e)
    batch = buf.peek(2)
    assert batch == events[:2]
    buf.push(events[3])  # full: events[0] (in flight) is dropped
    buf.push(events[4])  # events[1] too
    assert (stats.dropped, stats.buffered, len(buf)) == (2, 3, 3)
    buf.confirmed(batch)
    assert buf.peek(10) == events[2:] and stats.published == 2
    buf.confirmed(buf.peek(10))
    assert (len(buf), stats.buffered, stats.published) == (0, 0, 5)


def test_consumer_metrics_render() -> None:
    stats = Stats()
    c = stats.consumer("orders")
    c.applied, c.refused, c.retried, c.lag = 5, 1, 2, 0.25
    stats.events_out.dropped = 3
    report = {"stats": stats.snapshot(), "num_clients": 0, "num_users": 0, "num_subs": 0, "num_channels": 0,
              "num_owned_channels": 0, "pending_requests": 0, "process": {"rss": 0, "cpu_seconds": 0}, "uptime": 1}
    text = render([(0, report)]).decode()
    assert 'shardgate_consumer_applied_total{consumer="orders",slot="0"} 5.0' in text
    assert 'shardgate_consumer_failed_total{consumer="orders",result="refused",slot="0"} 1.0' in text
    assert 'shardgate_consumer_failed_total{consumer="orders",result="retry",slot="0"} 2.0' in text
    assert 'shardgate_consumer_lag_seconds{consumer="orders",slot="0"} 0.25' in text
    assert 'shardgate_events_out_total{result="dropped",slot="0"} 3.0' in text


def test_the_readme_consumers_example_loads() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    (block,) = [b for b in re.findall(r"```toml\n(.*?)```", readme, re.S) if "[[consumers]]" in b]
    config = parse_config(tomllib.loads(block))
    assert [(c.name, c.type) for c in config.consumers] == [("orders", "rabbitmq"), ("outbox", "postgresql")]
    assert config.consumers[1].postgresql.num_partitions == 4
    assert config.shardgate.events_out.enabled and config.warning == ""
