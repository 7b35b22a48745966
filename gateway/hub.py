"""Local indexes of one worker: connections by client id and user, subscribers by channel.

Fan-out is synchronous and never awaits per subscriber: the same encoded bytes are
queued on every local subscriber, and each connection's queue is flushed once per loop
tick as one WebSocket message (pushes joined by ``\\n``, which the protocol allows). A
subscriber that cannot keep up is disconnected by its own queue cap, never buffered
without bound.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.core.errors import Disconnect, Unsubscribe
from gateway.obs.stats import Stats
from sharding.envelope import FLAG_JOIN_LEAVE

__all__ = ["Hub", "Subscriber", "LocalChannel"]


class Subscriber(Protocol):
    """What the hub, and the control actions acting through it, need from a connection."""

    client_id: str
    user: str

    def write(self, data: bytes) -> None: ...

    def on_stream_gap(self, channel: str) -> None: ...

    def server_unsubscribe(self, channel: str, reason: Unsubscribe) -> None: ...

    def close(self, disconnect: Disconnect) -> None: ...

    def server_subscribe(self, channel: str, request: dict[str, Any]) -> None: ...

    def server_refresh(self, request: dict[str, Any]) -> None: ...


@dataclass(slots=True)
class LocalChannel:
    """The local subscribers of one channel and the last position delivered to them."""

    subscribers: dict[Subscriber, bool] = field(default_factory=dict)  # -> wants join/leave pushes
    epoch: str = ""
    offset: int = 0


class Hub:
    def __init__(self, stats: Stats | None = None) -> None:
        self.stats = stats or Stats()
        self.channels: dict[str, LocalChannel] = {}
        self.clients: dict[str, Subscriber] = {}
        self.users: dict[str, set[str]] = {}

    # -- connections ---------------------------------------------------------------------------

    def add_client(self, sub: Subscriber) -> None:
        self.clients[sub.client_id] = sub
        self.users.setdefault(sub.user, set()).add(sub.client_id)

    def remove_client(self, sub: Subscriber) -> None:
        if self.clients.get(sub.client_id) is not sub:
            return
        del self.clients[sub.client_id]
        ids = self.users.get(sub.user)
        if ids is not None:
            ids.discard(sub.client_id)
            if not ids:
                del self.users[sub.user]

    def user_clients(self, user: str) -> Iterator[Subscriber]:
        for client_id in list(self.users.get(user, ())):
            sub = self.clients.get(client_id)
            if sub is not None:
                yield sub

    # -- subscriptions -------------------------------------------------------------------------

    def subscribe(self, channel: str, sub: Subscriber, join_leave: bool, epoch: str, offset: int) -> None:
        local = self.channels.get(channel)
        if local is None:
            local = self.channels[channel] = LocalChannel()
        local.subscribers[sub] = join_leave
        if epoch:
            # Replies and publications from the owner travel one ordered pipe, so the
            # position in a subscribe reply is exactly what this worker has seen so far.
            local.epoch, local.offset = epoch, offset

    def unsubscribe(self, channel: str, sub: Subscriber) -> bool:
        """Remove; True when it was subscribed."""
        local = self.channels.get(channel)
        if local is None or sub not in local.subscribers:
            return False
        del local.subscribers[sub]
        if not local.subscribers:
            del self.channels[channel]
        return True

    def num_subscriptions(self) -> int:
        return sum(len(local.subscribers) for local in self.channels.values())

    # -- fan-out -------------------------------------------------------------------------------

    def deliver(self, channel: str, data: bytes, offset: int, epoch: str, flags: int) -> int:
        """Queue ``data`` on every local subscriber of ``channel``; returns how many got it."""
        local = self.channels.get(channel)
        if local is None:
            return 0
        if offset:
            if local.offset and (epoch != local.epoch or offset != local.offset + 1):
                if epoch == local.epoch and offset <= local.offset:
                    return 0  # a duplicate: already delivered
                # A publication was lost between owner and this worker, or the stream was
                # recreated: positioned subscribers must resubscribe and recover (2500).
                local.epoch, local.offset = epoch, offset
                for sub in list(local.subscribers):
                    sub.on_stream_gap(channel)
                local = self.channels.get(channel)
                if local is None:
                    return 0
            local.epoch, local.offset = epoch, offset
        if flags & FLAG_JOIN_LEAVE:
            count = 0
            for sub, join_leave in local.subscribers.items():
                if join_leave:
                    sub.write(data)
                    count += 1
            self.stats.sent("join_leave", len(data), count)
            return count
        for sub in local.subscribers:
            sub.write(data)
        count = len(local.subscribers)
        self.stats.sent("publication", len(data), count)
        return count
