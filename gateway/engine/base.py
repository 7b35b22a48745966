"""The engine seam: what a worker needs from whatever keeps channels' streams and presence.

Modelled on centrifuge's ``Broker``/``PresenceManager`` (broker.go, presence.go): typed
values in and out (``gateway.core.model``), completion by callback (no task per call).
Implementations: :mod:`gateway.engine.memory` (each channel's owner worker keeps its state,
reached over the ZeroMQ bus) and :mod:`gateway.engine.redis` (Redis keeps it; each node's
owner worker holds the channel's one Redis subscription and fans out over ZeroMQ).

Deliveries come back through :class:`BrokerEventHandler`, which each worker's hub
implements: it encodes a publication once per codec and writes the same bytes to every
local subscriber.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from gateway.cluster.router import Reply
from gateway.core.model import (
    ClientInfo,
    Done,
    DoneErr,
    HistoryFilter,
    HistoryResult,
    PresenceStats,
    Publication,
    PublishOptions,
    StreamOptions,
    StreamPosition,
    SubscribeAnswer,
    SubscribeRequest,
)
from sharding.envelope import Envelope

__all__ = ["Broker", "BrokerEventHandler", "PresenceManager", "Engine", "NodeEngine", "SessionStates", "TakenState"]


class Broker(Protocol):
    """Publications, join/leave, history and this worker's interest in channels."""

    def publish(self, channel: str, pub: Publication, opts: PublishOptions, done: Done[StreamPosition]) -> None:
        """Append ``pub`` to the channel's stream (when ``opts.stream`` is set) and deliver it
        to every subscriber everywhere. ``done`` gets the assigned position (offset 0 and an
        empty epoch without history).

        Errors: 100 (temporary) when the owner or the store cannot be reached in time.
        """
        ...

    def publish_join(self, channel: str, info: ClientInfo) -> None:
        """Deliver a join push to the channel's subscribers (one-way)."""
        ...

    def publish_leave(self, channel: str, info: ClientInfo) -> None:
        """Deliver a leave push to the channel's subscribers (one-way)."""
        ...

    def subscribe(self, channel: str, request: SubscribeRequest, done: Done[SubscribeAnswer]) -> None:
        """Register one more local subscriber of ``channel`` on this worker, so its
        publications are delivered here from now on, and answer the stream position from
        which they are (with the recovered publications when ``request.recover``).
        Publications after the answered position arrive through the event handler after
        ``done`` ran, never before it."""
        ...

    def unsubscribe(self, channel: str) -> None:
        """One local subscriber of ``channel`` left this worker (one-way)."""
        ...

    def history(self, channel: str, filter: HistoryFilter, stream: StreamOptions,
                done: Done[HistoryResult]) -> None:
        """Read the channel's retained publications and its position.

        Errors: 112 when ``filter.since`` names another epoch; 100 (temporary) as above.
        """
        ...

    def remove_history(self, channel: str, done: DoneErr) -> None:
        """Drop the retained publications; the position (epoch, top offset) stays."""
        ...


class PresenceManager(Protocol):
    """Who is subscribed to a channel, everywhere."""

    def add_presence(self, channel: str, info: ClientInfo) -> None:
        """Record ``info`` as present in ``channel`` (one-way; refreshed while it stays)."""
        ...

    def remove_presence(self, channel: str, client: str, user: str) -> None:
        """Forget client ``client`` in ``channel`` (one-way)."""
        ...

    def presence(self, channel: str, done: Done[dict[str, ClientInfo]]) -> None:
        """Everyone present, by client id."""
        ...

    def presence_stats(self, channel: str, done: Done[PresenceStats]) -> None:
        """How many clients and distinct users are present."""
        ...


class Engine(Broker, PresenceManager, Protocol):
    """Both halves, as one worker uses them."""


class NodeEngine(Engine, Protocol):
    """An engine as a worker's node drives it: its side of the bus, its lifecycle, and the
    reload handoff. Both implementations route a channel's node-local work to the same owner
    worker, ``owner(channel, workers)``."""

    frozen: bool

    def owner(self, channel: str) -> int: ...

    async def start(self) -> None:
        """Connect to whatever keeps the state (nothing to do in memory)."""
        ...

    async def close(self) -> None: ...

    @property
    def healthy(self) -> bool:
        """Whether operations can succeed now (``/ready``)."""
        ...

    def handle_request(self, op: int, channel: str, payload: bytes, origin: int, reply: Reply) -> None: ...

    def handle_notify(self, op: int, channel: str, payload: bytes, origin: int) -> None: ...

    def handle_delivery(self, env: Envelope) -> None: ...

    def forget_slot(self, slot: int) -> None:
        """Another worker of this node restarted and lost its memory."""
        ...

    def freeze(self) -> None: ...

    def handoff_envelopes(self) -> list[Envelope]: ...

    def install_handoff(self, env: Envelope) -> bool:
        """Install one handoff message from a predecessor; True after the last one."""
        ...

    def owned_channels(self) -> int: ...

    def owned_streams(self) -> int:
        """Channel streams (epoch, offsets, history) this worker holds in memory."""
        ...


class BrokerEventHandler(Protocol):
    """What an engine calls on this worker when something reaches a channel's local
    subscribers (the hub implements it)."""

    def handle_publication(self, channel: str, pub: Publication, position: StreamPosition | None) -> None:
        """A publication for local subscribers; ``position`` None without history."""
        ...

    def handle_join(self, channel: str, info: ClientInfo) -> None: ...

    def handle_leave(self, channel: str, info: ClientInfo) -> None: ...

    def handle_stream_lost(self, channel: str) -> None:
        """Publications of ``channel`` may have been lost on the way here (an owner or the
        store restarted, a link dropped messages): positioned subscribers must resubscribe
        and recover (unsubscribe push 2500)."""
        ...


@dataclass(frozen=True, slots=True)
class TakenState:
    """What :meth:`SessionStates.take_session` found: the value (taken), or none; ``held``
    when the value is a snapshot of a session whose node is still alive (not taken)."""

    value: bytes | None
    held: bool = False


class SessionStates(Protocol):
    """Short-lived per-session state that every node of a cluster sees (the Redis engine keeps
    it in Redis): Socket.IO connection state recovery across nodes. Values are opaque bytes
    packed by ``gateway.socketio.recovery``."""

    def keep_session(self, pid: str, value: bytes, ttl: float) -> None:
        """Store (replace) the state under ``pid`` for ``ttl`` seconds; one-way."""
        ...

    def take_session(self, pid: str, done: Done[TakenState]) -> None:
        """The state under ``pid``, removed: each is taken once (see :class:`TakenState`)."""
        ...

    def forget_session(self, pid: str) -> None:
        """Drop the state under ``pid`` (a clean disconnect); one-way."""
        ...

    def mark_node_alive(self, node_id: str, ttl: float) -> None:
        """This node is alive for ``ttl`` more seconds (its sessions' snapshots stay untaken)."""
        ...
