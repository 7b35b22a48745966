"""Prometheus exposition: the only module that imports prometheus_client.

Workers keep plain counters (``gateway.obs.stats``); whichever worker answers ``/metrics``
surveys every slot over the bus and renders all of them here, each series labelled with
its ``slot``, so one scrape covers the whole node. The text format comes from
prometheus_client's own generator, never hand-written.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from gateway import __version__

__all__ = ["render", "CONTENT_TYPE"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Survey = list[tuple[int, dict[str, Any] | None]]


def _buckets(snapshot: dict[str, Any]) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    cumulative = 0
    for bound, count in zip(snapshot["bounds"], snapshot["counts"], strict=False):
        cumulative += count
        out.append((repr(float(bound)), cumulative))
    out.append(("+Inf", snapshot["count"]))
    return out


class _SurveyCollector(Collector):
    def __init__(self, survey: Survey) -> None:
        self._survey = survey

    def collect(self) -> Iterator[Metric]:
        info = InfoMetricFamily("shardgate_build", "Build information.")
        info.add_metric([], {"version": __version__})
        yield info
        up = GaugeMetricFamily("shardgate_worker_up", "1 when the worker in this slot answered the scrape.",
                               labels=["slot"])
        gauges = {
            "connections": GaugeMetricFamily("shardgate_connections", "Connected clients.", labels=["slot"]),
            "users": GaugeMetricFamily("shardgate_users", "Distinct users connected.", labels=["slot"]),
            "subscriptions": GaugeMetricFamily("shardgate_subscriptions", "Client subscriptions.", labels=["slot"]),
            "channels": GaugeMetricFamily("shardgate_channels", "Channels with local subscribers.", labels=["slot"]),
            "owned": GaugeMetricFamily("shardgate_owned_channels", "Channels whose state this slot owns.",
                                       labels=["slot"]),
            "streams": GaugeMetricFamily("shardgate_owned_streams",
                                         "Channel streams (epoch, offsets, history) this slot holds in memory.",
                                         labels=["slot"]),
            "pending": GaugeMetricFamily("shardgate_bus_pending_requests",
                                         "Cross-shard requests waiting for an answer.", labels=["slot"]),
            "timers": GaugeMetricFamily("shardgate_timer_entries",
                                        "Deadlines (pings, pongs, expiries) held by the worker's timer wheel, "
                                        "cancelled ones until swept.", labels=["slot"]),
            "rss": GaugeMetricFamily("shardgate_process_resident_memory_bytes", "Worker RSS.", labels=["slot"]),
            "uptime": GaugeMetricFamily("shardgate_process_uptime_seconds", "Worker uptime.", labels=["slot"]),
        }
        cpu = CounterMetricFamily("shardgate_process_cpu_seconds", "Worker CPU time (user + system).",
                                  labels=["slot"])
        accepted = CounterMetricFamily("shardgate_connections_accepted", "Connections that completed connect.",
                                       labels=["slot"])
        msgs_in = CounterMetricFamily("shardgate_messages_received", "Commands received, by method.",
                                      labels=["slot", "type"])
        bytes_in = CounterMetricFamily("shardgate_received_bytes", "WebSocket message bytes received.",
                                       labels=["slot"])
        msgs_out = CounterMetricFamily("shardgate_messages_sent", "Messages queued to clients, by type.",
                                       labels=["slot", "type"])
        bytes_out = CounterMetricFamily("shardgate_sent_bytes", "Bytes queued to clients, by type.",
                                        labels=["slot", "type"])
        errors = CounterMetricFamily("shardgate_reply_errors", "Error replies, by method and code.",
                                     labels=["slot", "method", "code"])
        disconnects = CounterMetricFamily("shardgate_disconnects", "Server-initiated disconnects, by code.",
                                          labels=["slot", "code"])
        recoveries = CounterMetricFamily("shardgate_recoveries", "Subscribe-with-recover outcomes.",
                                         labels=["slot", "recovered"])
        dropped = CounterMetricFamily("shardgate_bus_dropped_messages",
                                      "Cross-shard messages dropped (peer down or queue full).", labels=["slot"])
        bus_sent = CounterMetricFamily("shardgate_bus_deliveries_sent",
                                       "Publications, joins and leaves sent to other workers.", labels=["slot"])
        bus_messages = CounterMetricFamily("shardgate_bus_delivery_messages_sent",
                                           "Bus messages that carried them (a burst in one loop tick shares one).",
                                           labels=["slot"])
        gap_filled = CounterMetricFamily("shardgate_gap_filled_publications",
                                         "Publications pub/sub skipped, read back from the stream in order.",
                                         labels=["slot"])
        deflate = CounterMetricFamily("shardgate_websocket_deflate",
                                      "permessage-deflate: messages compressed (once per message per worker, "
                                      "whatever the number of receivers), and bytes before and after.",
                                      labels=["slot", "what"])
        api_errors = CounterMetricFamily("shardgate_api_errors", "Server API errors, by method and code.",
                                         labels=["slot", "method", "code"])
        commands = HistogramMetricFamily("shardgate_command_duration_seconds",
                                         "Client command duration, receive to reply.", labels=["slot", "method"])
        api = HistogramMetricFamily("shardgate_api_duration_seconds", "Server API call duration.",
                                    labels=["slot", "method"])
        latency = HistogramMetricFamily("shardgate_bus_delivery_latency_seconds",
                                        "Owner publish to delivery on another worker.", labels=["slot"])
        batch = HistogramMetricFamily("shardgate_bus_receive_batch_size",
                                      "Bus envelopes read per wake-up (a queue depth signal).", labels=["slot"])
        consumed = CounterMetricFamily("shardgate_consumer_applied",
                                       "Consumed messages applied (acked, outbox rows deleted).",
                                       labels=["slot", "consumer"])
        failed = CounterMetricFamily("shardgate_consumer_failed",
                                     "Consumed messages that failed: refused (dead-lettered or skipped) or "
                                     "retry (an internal or temporary error, applied again later).",
                                     labels=["slot", "consumer", "result"])
        lag = GaugeMetricFamily("shardgate_consumer_lag_seconds",
                                "Age of the last applied message (its AMQP timestamp or outbox created_at).",
                                labels=["slot", "consumer"])
        events_out = CounterMetricFamily("shardgate_events_out", "Events out to RabbitMQ: published (confirmed) "
                                         "or dropped (buffer full while RabbitMQ was away).",
                                         labels=["slot", "result"])
        events_buffered = GaugeMetricFamily("shardgate_events_out_buffered", "Events waiting for RabbitMQ.",
                                            labels=["slot"])
        for slot, report in self._survey:
            s = str(slot)
            up.add_metric([s], 1 if report else 0)
            if not report:
                continue
            st = report["stats"]
            gauges["connections"].add_metric([s], report["num_clients"])
            gauges["users"].add_metric([s], report["num_users"])
            gauges["subscriptions"].add_metric([s], report["num_subs"])
            gauges["channels"].add_metric([s], report["num_channels"])
            gauges["owned"].add_metric([s], report["num_owned_channels"])
            gauges["streams"].add_metric([s], report.get("num_owned_streams", 0))
            gauges["pending"].add_metric([s], report["pending_requests"])
            gauges["timers"].add_metric([s], report.get("timer_entries", 0))
            gauges["rss"].add_metric([s], report["process"]["rss"])
            gauges["uptime"].add_metric([s], report["uptime"])
            cpu.add_metric([s], report["process"]["cpu_seconds"])
            accepted.add_metric([s], st["connections_accepted"])
            for kind, n in st["messages_in"].items():
                msgs_in.add_metric([s, kind], n)
            bytes_in.add_metric([s], st["bytes_in"])
            for kind, n in st["messages_out"].items():
                msgs_out.add_metric([s, kind], n)
            for kind, n in st["bytes_out"].items():
                bytes_out.add_metric([s, kind], n)
            for key, n in st["reply_errors"].items():
                method, code = key.rsplit(":", 1)
                errors.add_metric([s, method, code], n)
            for code, n in st["disconnects"].items():
                disconnects.add_metric([s, code], n)
            for recovered, n in st["recovered"].items():
                recoveries.add_metric([s, recovered], n)
            dropped.add_metric([s], st["bus_dropped"])
            gap_filled.add_metric([s], st.get("gap_filled", 0))
            bus_sent.add_metric([s], st.get("bus_deliveries_sent", 0))  # .get: a worker of an older version
            bus_messages.add_metric([s], st.get("bus_delivery_messages_sent", 0))
            for what, n in st.get("deflate", {}).items():
                deflate.add_metric([s, what], n)
            for key, n in st["api_errors"].items():
                method, code = key.rsplit(":", 1)
                api_errors.add_metric([s, method, code], n)
            for method, snap in st["commands"].items():
                commands.add_metric([s, method], _buckets(snap), snap["sum"])
            for method, snap in st["api"].items():
                api.add_metric([s, method], _buckets(snap), snap["sum"])
            latency.add_metric([s], _buckets(st["bus_latency"]), st["bus_latency"]["sum"])
            batch.add_metric([s], _buckets(st["bus_batch"]), st["bus_batch"]["sum"])
            for name, c in st.get("consumers", {}).items():
                consumed.add_metric([s, name], c["applied"])
                failed.add_metric([s, name, "refused"], c["refused"])
                failed.add_metric([s, name, "retry"], c["retried"])
                lag.add_metric([s, name], c["lag"])
            ev = st.get("events_out")
            if ev:
                events_out.add_metric([s, "published"], ev["published"])
                events_out.add_metric([s, "dropped"], ev["dropped"])
                events_buffered.add_metric([s], ev["buffered"])
        yield up
        yield from gauges.values()
        yield from (cpu, accepted, msgs_in, bytes_in, msgs_out, bytes_out, errors, disconnects, recoveries,
                    dropped, bus_sent, bus_messages, gap_filled, deflate, api_errors, commands, api, latency, batch,
                    consumed, failed, lag, events_out, events_buffered)


def render(survey: Survey) -> bytes:
    """Prometheus text for every slot's report (None for a slot that did not answer)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SurveyCollector(survey))
    data: bytes = generate_latest(registry)
    return data
