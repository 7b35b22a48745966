"""Events out (``shardgate.events_out``): what goes to RabbitMQ, and the bounded buffer that
holds it while RabbitMQ is away. Pure: the AMQP side is ``gateway.consume.amqp``.

An event is one JSON message on a topic exchange, routed by its channel name:

``{"type": "publication", "channel": "chat:room", "data": {...}, "offset": 7,
"info": {"user": "42", "client": "...", "conn_info": ..., "chan_info": ...}}``

``type`` is ``publication``, ``join`` or ``leave`` (the last two carry no ``data``); the
``shardgate-event`` header repeats it so a headers exchange or a consumer can filter on it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from gateway.core.model import ClientInfo
from gateway.obs.stats import EventsOutStats

__all__ = ["EventBuffer", "EventSink", "OutEvent", "encode_event"]


@dataclass(frozen=True, slots=True)
class OutEvent:
    kind: str  # publication | join | leave
    channel: str  # the routing key
    body: bytes  # the JSON message


def _info(info: ClientInfo) -> dict[str, Any]:
    out: dict[str, Any] = {"user": info.user, "client": info.client}
    if info.conn_info is not None:
        out["conn_info"] = orjson.Fragment(info.conn_info)
    if info.chan_info is not None:
        out["chan_info"] = orjson.Fragment(info.chan_info)
    return out


def encode_event(kind: str, channel: str, info: ClientInfo | None, data: bytes | None = None,
                 offset: int = 0) -> OutEvent:
    """One event; ``data`` is the publication's raw JSON, embedded as it is."""
    doc: dict[str, Any] = {"type": kind, "channel": channel}
    if data is not None:
        doc["data"] = orjson.Fragment(data)
    if offset:
        doc["offset"] = offset
    if info is not None:
        doc["info"] = _info(info)
    return OutEvent(kind, channel, orjson.dumps(doc))


class EventBuffer:
    """At most ``size`` events, oldest first. Full: the oldest is dropped and counted
    (``EventsOutStats.dropped``), so a RabbitMQ outage costs bounded memory."""

    def __init__(self, size: int, stats: EventsOutStats) -> None:
        self._events: deque[OutEvent] = deque()
        self._size = size
        self._stats = stats

    def __len__(self) -> int:
        return len(self._events)

    def push(self, event: OutEvent) -> None:
        if len(self._events) >= self._size:
            self._events.popleft()
            self._stats.dropped += 1
        self._events.append(event)
        self._stats.buffered = len(self._events)

    def peek(self, limit: int) -> list[OutEvent]:
        """The oldest ``limit`` events, left in place until :meth:`confirmed`."""
        return [self._events[i] for i in range(min(limit, len(self._events)))]

    def confirmed(self, events: list[OutEvent]) -> None:
        """``events`` (a :meth:`peek` result) reached RabbitMQ: forget those still at the head
        (some may have been dropped meanwhile by :meth:`push`)."""
        for event in events:
            if self._events and self._events[0] is event:
                self._events.popleft()
                self._stats.published += 1
            else:
                # dropped from the head while in flight (already counted as dropped), yet it
                # did reach RabbitMQ
                self._stats.published += 1
        self._stats.buffered = len(self._events)


class EventSink(Protocol):
    """Where the session layer reports client events (``Node.events``)."""

    join_leave: bool

    def publication(self, channel: str, data: bytes, info: ClientInfo | None, offset: int) -> None: ...

    def join(self, channel: str, info: ClientInfo) -> None: ...

    def leave(self, channel: str, info: ClientInfo) -> None: ...
