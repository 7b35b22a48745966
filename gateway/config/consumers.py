"""The ``consumers`` list (Centrifugo v6 async consumers) and ``shardgate.events_out``.

A consumer reads server API commands from a queue or an outbox table and applies them as the
server API would. ``type = "postgresql"`` follows Centrifugo v6's ``postgresql`` consumer key
for key (``internal/configtypes/types.go`` ``PostgresConsumerConfig``); ``type = "rabbitmq"``
is shardgate's own (Centrifugo lists it but leaves it commented out), shaped like Centrifugo's
Kafka consumer where the two overlap (``method_header``, ``publication_data_mode``). Other
Centrifugo types (kafka, nats_jetstream, ...) are accepted while ``enabled = false`` and are an
error when enabled: shardgate cannot run them.

``shardgate.events_out`` sends client publications (and optionally joins and leaves) to a
RabbitMQ topic exchange, the channel as routing key. Pure: nothing here opens a socket.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.config.keys import KeyNode
from gateway.config.table import Table, read_table

__all__ = [
    "ConsumerConfig",
    "EventsOutConfig",
    "PostgresConsumerConfig",
    "PublicationDataMode",
    "RabbitMQConsumerConfig",
    "EVENTS_OUT_KEYS",
    "read_consumers",
    "read_events_out",
]

#: Consumer types shardgate runs.
IMPLEMENTED_TYPES = ("postgresql", "rabbitmq")
#: Every type Centrifugo v6 knows, plus rabbitmq.
KNOWN_TYPES = ("postgresql", "rabbitmq", "kafka", "nats_jetstream", "redis_stream", "google_pub_sub", "aws_sqs",
               "azure_service_bus")

_NAME = re.compile(r"[A-Za-z0-9_.-]+")
# A SQL identifier, optionally schema-qualified: the table name is put into SQL text.
_TABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")
_EXCHANGE_TYPES = ("direct", "topic", "fanout", "headers")


@dataclass(frozen=True, slots=True)
class PublicationDataMode:
    """The message body is publication data; channels and options come from headers
    (Centrifugo's Kafka ``publication_data_mode`` names and defaults)."""

    enabled: bool = False
    channels_header: str = "centrifugo-channels"
    idempotency_key_header: str = "centrifugo-idempotency-key"
    delta_header: str = "centrifugo-delta"
    tags_header_prefix: str = "centrifugo-tag-"


@dataclass(frozen=True, slots=True)
class PostgresConsumerConfig:
    """Centrifugo's outbox table consumer (``id bigserial, method text, payload jsonb,
    partition integer, created_at timestamptz``)."""

    dsn: str = ""
    outbox_table_name: str = ""
    num_partitions: int = 1
    partition_select_limit: int = 100
    partition_poll_interval: float = 0.3
    partition_notification_channel: str = ""  # LISTEN channel; NOTIFY payload = partition number
    partition_notification_dsn: str = ""  # a separate DSN for LISTEN ("" = dsn)
    use_try_lock: bool = False  # pg_try_advisory_xact_lock instead of pg_advisory_xact_lock


@dataclass(frozen=True, slots=True)
class RabbitMQConsumerConfig:
    """One AMQP 0-9-1 queue. ``declare`` declares the queue (and exchange, bindings, dead-letter
    exchange and queue); ``declare = false`` uses existing ones (a passive check at start)."""

    url: str = "amqp://guest:guest@127.0.0.1:5672/"
    queue: str = ""
    declare: bool = True
    durable: bool = True
    exchange: str = ""  # "" = no binding (publishers use the default exchange, routing key = queue)
    exchange_type: str = "direct"
    routing_keys: tuple[str, ...] = ()  # binding keys on ``exchange`` ("" = [queue])
    dead_letter_exchange: str = ""  # refused messages go here with x-shardgate-error ("" = dropped, logged)
    dead_letter_queue: str = ""  # declared and bound to dead_letter_exchange when set
    prefetch: int = 16  # unacknowledged messages held at once (the backpressure)
    ordered: bool = True  # one message at a time (per-queue order); false: up to ``prefetch`` in parallel
    method_header: str = "centrifugo-method"  # when present, the body is that method's request
    publication_data_mode: PublicationDataMode = PublicationDataMode()
    retry_backoff_min: float = 0.1
    retry_backoff_max: float = 10.0
    max_attempts: int = 0  # temporary failures before a message is dead-lettered (0 = retry forever)
    reconnect_backoff_max: float = 10.0
    ack_delay: float = 0.0  # fault injection for tests: wait this long between applying and the ack


@dataclass(frozen=True, slots=True)
class ConsumerConfig:
    name: str
    enabled: bool
    type: str
    postgresql: PostgresConsumerConfig = PostgresConsumerConfig()
    rabbitmq: RabbitMQConsumerConfig = RabbitMQConsumerConfig()


@dataclass(frozen=True, slots=True)
class EventsOutConfig:
    """``shardgate.events_out``: client publications to a RabbitMQ topic exchange."""

    enabled: bool = False
    url: str = "amqp://guest:guest@127.0.0.1:5672/"
    exchange: str = "shardgate.events"
    declare: bool = True  # declare the exchange (durable topic); false: it must exist
    join_leave: bool = False  # also joins and leaves
    buffer_size: int = 10000  # events held while RabbitMQ is away; the oldest are dropped beyond it
    reconnect_backoff_max: float = 10.0


EVENTS_OUT_KEYS: dict[str, KeyNode] = {
    "enabled": "bool", "url": "str", "exchange": "str", "declare": "bool", "join_leave": "bool",
    "buffer_size": "int", "reconnect_backoff_max": "duration",
}


def _read_postgresql(t: Table) -> PostgresConsumerConfig:
    d = PostgresConsumerConfig()
    cfg = PostgresConsumerConfig(
        dsn=t.get_str("dsn", d.dsn),
        outbox_table_name=t.get_str("outbox_table_name", d.outbox_table_name),
        num_partitions=t.get_int("num_partitions", d.num_partitions, minimum=1, maximum=1024),
        partition_select_limit=t.get_int("partition_select_limit", d.partition_select_limit, minimum=1),
        partition_poll_interval=t.duration("partition_poll_interval", d.partition_poll_interval, positive=True),
        partition_notification_channel=t.get_str("partition_notification_channel",
                                                 d.partition_notification_channel),
        partition_notification_dsn=t.get_str("partition_notification_dsn", d.partition_notification_dsn),
        use_try_lock=t.get_bool("use_try_lock", d.use_try_lock),
    )
    if t.has("tls"):
        t.error("tls", "not implemented by shardgate: put sslmode/sslrootcert/sslcert/sslkey in the dsn")
    return cfg


def _read_data_mode(t: Table) -> PublicationDataMode:
    d = PublicationDataMode()
    mode = PublicationDataMode(
        enabled=t.get_bool("enabled", d.enabled),
        channels_header=t.get_str("channels_header", d.channels_header),
        idempotency_key_header=t.get_str("idempotency_key_header", d.idempotency_key_header),
        delta_header=t.get_str("delta_header", d.delta_header),
        tags_header_prefix=t.get_str("tags_header_prefix", d.tags_header_prefix),
    )
    if mode.enabled and not mode.channels_header:
        t.error("channels_header", "required with publication_data_mode.enabled")
    return mode


def _read_rabbitmq(t: Table) -> RabbitMQConsumerConfig:
    d = RabbitMQConsumerConfig()
    cfg = RabbitMQConsumerConfig(
        url=t.get_str("url", d.url),
        queue=t.get_str("queue", d.queue),
        declare=t.get_bool("declare", d.declare),
        durable=t.get_bool("durable", d.durable),
        exchange=t.get_str("exchange", d.exchange),
        exchange_type=t.get_str("exchange_type", d.exchange_type, choices=_EXCHANGE_TYPES),
        routing_keys=t.str_list("routing_keys", d.routing_keys),
        dead_letter_exchange=t.get_str("dead_letter_exchange", d.dead_letter_exchange),
        dead_letter_queue=t.get_str("dead_letter_queue", d.dead_letter_queue),
        prefetch=t.get_int("prefetch", d.prefetch, minimum=1, maximum=65535),
        ordered=t.get_bool("ordered", d.ordered),
        method_header=t.get_str("method_header", d.method_header),
        publication_data_mode=read_table(t.table("publication_data_mode"), _read_data_mode),
        retry_backoff_min=t.duration("retry_backoff_min", d.retry_backoff_min, positive=True),
        retry_backoff_max=t.duration("retry_backoff_max", d.retry_backoff_max, positive=True),
        max_attempts=t.get_int("max_attempts", d.max_attempts, minimum=0),
        reconnect_backoff_max=t.duration("reconnect_backoff_max", d.reconnect_backoff_max, positive=True),
        ack_delay=t.duration("ack_delay", d.ack_delay),
    )
    if not cfg.url.startswith(("amqp://", "amqps://")):
        t.error("url", "expected amqp://user:password@host:port/vhost or amqps://...")
    if cfg.retry_backoff_max < cfg.retry_backoff_min:
        t.error("retry_backoff_max", "must be >= retry_backoff_min")
    if cfg.dead_letter_queue and not cfg.dead_letter_exchange:
        t.error("dead_letter_queue", "requires dead_letter_exchange")
    if cfg.routing_keys and not cfg.exchange:
        t.error("routing_keys", "requires exchange")
    return cfg


def _read_consumer(t: Table, seen: set[str]) -> ConsumerConfig | None:
    name = t.get_str("name", "")
    if not name:
        t.error("name", "required")
    elif not _NAME.fullmatch(name):
        t.error("name", f"invalid consumer name {name!r} (letters, digits, '_', '.', '-')")
    elif name in seen:
        t.error("name", f"duplicate consumer name {name!r}")
    seen.add(name)
    enabled = t.get_bool("enabled", False)
    kind = t.get_str("type", "", choices=KNOWN_TYPES)
    if not t.has("type"):
        t.error("type", f"required (one of {', '.join(IMPLEMENTED_TYPES)})")
    postgresql = read_table(t.table("postgresql"), _read_postgresql)
    rabbitmq = read_table(t.table("rabbitmq"), _read_rabbitmq)
    if not enabled:
        t.mark_all_seen()  # a disabled consumer of any Centrifugo type is accepted as it is
        return None
    if kind and kind not in IMPLEMENTED_TYPES:
        t.error("type", f"consumer type {kind!r} is not implemented by shardgate "
                        f"({', '.join(IMPLEMENTED_TYPES)} are); set enabled = false to keep it")
        return None
    if kind == "postgresql":
        if not postgresql.dsn:
            t.error("postgresql.dsn", "required")
        if not _TABLE.fullmatch(postgresql.outbox_table_name):
            t.error("postgresql.outbox_table_name", "required: a table name ([schema.]name)")
    if kind == "rabbitmq" and not rabbitmq.queue:
        t.error("rabbitmq.queue", "required")
    return ConsumerConfig(name, enabled, kind, postgresql, rabbitmq)


def read_consumers(root: Table) -> tuple[ConsumerConfig, ...]:
    """The enabled consumers of ``consumers`` (disabled ones are checked, then left out)."""
    seen: set[str] = set()
    out: list[ConsumerConfig] = []
    for t in root.table_list("consumers"):
        consumer = read_table(t, lambda t: _read_consumer(t, seen))
        if consumer is not None:
            out.append(consumer)
    return tuple(out)


def read_events_out(t: Table) -> EventsOutConfig:
    d = EventsOutConfig()
    cfg = EventsOutConfig(
        enabled=t.get_bool("enabled", d.enabled),
        url=t.get_str("url", d.url),
        exchange=t.get_str("exchange", d.exchange),
        declare=t.get_bool("declare", d.declare),
        join_leave=t.get_bool("join_leave", d.join_leave),
        buffer_size=t.get_int("buffer_size", d.buffer_size, minimum=1),
        reconnect_backoff_max=t.duration("reconnect_backoff_max", d.reconnect_backoff_max, positive=True),
    )
    if not cfg.url.startswith(("amqp://", "amqps://")):
        t.error("url", "expected amqp://user:password@host:port/vhost or amqps://...")
    if cfg.enabled and not cfg.exchange:
        t.error("exchange", "required (the default exchange cannot route by channel)")
    return cfg
