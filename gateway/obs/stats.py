"""Per-worker counters and histograms the hot path updates.

Plain integers in dicts: cheap to bump. The exporters (Prometheus in ``gateway.obs.metrics``,
the ``info`` API, ``shardgate status``) read :meth:`Stats.snapshot` when asked, usually
through a bus survey, instead of the hot path calling into a metrics library.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from typing import Any

__all__ = ["ConsumerStats", "EventsOutStats", "Stats", "Histogram", "DURATION_BUCKETS", "LATENCY_BUCKETS",
           "BATCH_BUCKETS"]

DURATION_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Histogram:
    """Cumulative-on-export bucket counts, like a Prometheus histogram."""

    __slots__ = ("bounds", "count", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def snapshot(self) -> dict[str, Any]:
        return {"bounds": list(self.bounds), "counts": list(self.counts), "sum": self.total, "count": self.count}


class ConsumerStats:
    """One consumer (or one outbox partition) run by this worker."""

    __slots__ = ("applied", "lag", "refused", "retried")

    def __init__(self) -> None:
        self.applied = 0  # messages applied (acked / rows deleted)
        self.refused = 0  # malformed or refused: dead-lettered (RabbitMQ) or skipped (outbox)
        self.retried = 0  # internal or temporary failures that were retried
        self.lag = 0.0  # seconds from the message's creation to its application, last message

    def snapshot(self) -> dict[str, float]:
        return {"applied": self.applied, "refused": self.refused, "retried": self.retried, "lag": self.lag}


class EventsOutStats:
    __slots__ = ("buffered", "dropped", "published")

    def __init__(self) -> None:
        self.published = 0  # confirmed by RabbitMQ
        self.dropped = 0  # pushed out of the full buffer while RabbitMQ was away
        self.buffered = 0  # waiting now

    def snapshot(self) -> dict[str, int]:
        return {"published": self.published, "dropped": self.dropped, "buffered": self.buffered}


class Stats:
    def __init__(self) -> None:
        self.consumers: dict[str, ConsumerStats] = {}  # by consumer name
        self.events_out = EventsOutStats()
        self.connections = 0
        self.connections_accepted = 0
        self.disconnects: Counter[int] = Counter()
        self.reply_errors: Counter[tuple[str, int]] = Counter()
        self.recovered: Counter[bool] = Counter()
        self.subscriptions_accepted = 0
        # Plain dicts, not Counters, where a count is taken per message: ``d[k] += 1`` on a
        # Counter is 2.5x the cost of ``d[k] = d.get(k, 0) + 1`` on a dict (no specialised
        # subscript for a dict subclass).
        self.messages_in: dict[str, int] = {}  # by command method ("pong" for {})
        self.bytes_in = 0
        self.messages_out: dict[str, int] = {}  # by type: reply, error, pub, join, leave, ping, ...
        self.bytes_out: dict[str, int] = {}
        self.replies = 0  # messages_out["reply"] and bytes_out["reply"], kept apart (see replied)
        self.reply_bytes = 0
        self.commands: dict[str, Histogram] = {}
        self.api: dict[str, Histogram] = {}
        self.api_errors: Counter[tuple[str, int]] = Counter()
        self.bus_dropped = 0
        self.bus_bad_envelopes = 0
        # Deliveries (publications, joins, leaves) sent to other workers, and the bus messages
        # that carried them: a burst within a loop tick shares one message.
        self.bus_deliveries_sent = 0
        self.bus_delivery_messages_sent = 0
        self.gap_filled = 0  # publications pub/sub skipped, read back from the stream (Redis engine)
        # permessage-deflate: messages compressed (once per message, however many receive it)
        self.deflate_messages = 0
        self.deflate_bytes_in = 0
        self.deflate_bytes_out = 0
        self.bus_latency = Histogram(LATENCY_BUCKETS)
        self.bus_batch = Histogram(BATCH_BUCKETS)

    def connected(self) -> None:
        self.connections += 1
        self.connections_accepted += 1

    def disconnected_client(self) -> None:
        self.connections -= 1

    def disconnected(self, code: int) -> None:
        self.disconnects[code] += 1

    def reply_error(self, method: str, code: int) -> None:
        self.reply_errors[(method, code)] += 1

    def subscribed(self, recovering: bool, recovered: bool) -> None:
        self.subscriptions_accepted += 1
        if recovering:
            self.recovered[recovered] += 1

    def sent(self, kind: str, size: int, count: int = 1) -> None:
        messages, sizes = self.messages_out, self.bytes_out
        messages[kind] = messages.get(kind, 0) + count
        sizes[kind] = sizes.get(kind, 0) + size * count

    def command_done(self, method: str, seconds: float) -> None:
        hist = self.commands.get(method)
        if hist is None:
            hist = self.commands[method] = Histogram(DURATION_BUCKETS)
        hist.observe(seconds)

    def replied(self, size: int, method: str, seconds: float) -> None:
        """A command's reply of ``size`` bytes went out ``seconds`` after its message arrived:
        ``sent("reply", size)`` and :meth:`command_done` in one call, on two plain counters and
        with the histogram's observe inlined (once per command: two Python frames and ~40% of
        the bytecode of the three calls). :meth:`snapshot` reports them under ``reply``."""
        self.replies += 1
        self.reply_bytes += size
        hist = self.commands.get(method)
        if hist is None:
            hist = self.commands[method] = Histogram(DURATION_BUCKETS)
        hist.counts[bisect_left(hist.bounds, seconds)] += 1
        hist.total += seconds
        hist.count += 1

    def api_done(self, method: str, seconds: float) -> None:
        hist = self.api.get(method)
        if hist is None:
            hist = self.api[method] = Histogram(DURATION_BUCKETS)
        hist.observe(seconds)

    def api_error(self, method: str, code: int) -> None:
        self.api_errors[(method, code)] += 1

    def consumer(self, name: str) -> ConsumerStats:
        stats = self.consumers.get(name)
        if stats is None:
            stats = self.consumers[name] = ConsumerStats()
        return stats

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able copy for surveys (tuple keys become "method:code" strings)."""
        return {
            "connections": self.connections,
            "connections_accepted": self.connections_accepted,
            "disconnects": {str(k): v for k, v in self.disconnects.items()},
            "reply_errors": {f"{m}:{c}": v for (m, c), v in self.reply_errors.items()},
            "recovered": {str(k).lower(): v for k, v in self.recovered.items()},
            "subscriptions_accepted": self.subscriptions_accepted,
            "messages_in": dict(self.messages_in),
            "bytes_in": self.bytes_in,
            "messages_out": _plus(self.messages_out, "reply", self.replies),
            "bytes_out": _plus(self.bytes_out, "reply", self.reply_bytes),
            "commands": {m: h.snapshot() for m, h in self.commands.items()},
            "api": {m: h.snapshot() for m, h in self.api.items()},
            "api_errors": {f"{m}:{c}": v for (m, c), v in self.api_errors.items()},
            "bus_dropped": self.bus_dropped,
            "bus_bad_envelopes": self.bus_bad_envelopes,
            "bus_deliveries_sent": self.bus_deliveries_sent,
            "bus_delivery_messages_sent": self.bus_delivery_messages_sent,
            "gap_filled": self.gap_filled,
            "deflate": {"messages": self.deflate_messages, "bytes_in": self.deflate_bytes_in,
                        "bytes_out": self.deflate_bytes_out},
            "bus_latency": self.bus_latency.snapshot(),
            "bus_batch": self.bus_batch.snapshot(),
            "consumers": {name: c.snapshot() for name, c in self.consumers.items()},
            "events_out": self.events_out.snapshot(),
        }


def _plus(counts: dict[str, int], key: str, n: int) -> dict[str, int]:
    """A copy of ``counts`` with ``n`` more under ``key`` (absent while ``n`` is 0)."""
    out = dict(counts)
    if n:
        out[key] = out.get(key, 0) + n
    return out
