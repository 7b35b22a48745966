"""Delivery inside one node: from a channel's owner worker to the workers whose hubs have
subscribers of it, in structured form.

Both engines use it: the memory engine's owner shard after it ordered a publication, the
Redis engine's owner worker for what its Redis subscription receives. A delivery to this
worker goes straight to its hub; to another worker it is one PUBLICATION/JOIN/LEAVE
envelope with the packed publication (or client info), encoded once however many workers
get it, and sent with that worker's other deliveries of the loop tick (Router.deliver).
The receiving side (:meth:`NodeFanout.handle_delivery`) unpacks and hands it to its hub,
which encodes once per codec.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from gateway.cluster.router import Router
from gateway.core.model import (
    ClientInfo,
    PackError,
    Publication,
    StreamPosition,
    pack_client_info,
    pack_publication,
    unpack_client_info,
    unpack_publication,
)
from gateway.engine.base import BrokerEventHandler
from gateway.obs.stats import Stats
from sharding.envelope import Envelope, Kind, encode

__all__ = ["NodeFanout"]

log = logging.getLogger("shardgate.engine")


class NodeFanout:
    """Implements the owner shard's ``Fanout`` over the router."""

    def __init__(self, router: Router, handler: BrokerEventHandler, clock: Callable[[], float], stats: Stats) -> None:
        self.router = router
        self.slot = router.slot
        self.handler = handler
        self.clock = clock
        self.stats = stats

    def publication(self, channel: str, slots: tuple[int, ...], pub: Publication,
                    position: StreamPosition | None) -> None:
        frame: bytes | None = None
        for slot in slots:
            if slot == self.slot:
                self.handler.handle_publication(channel, pub, position)
                continue
            if frame is None:
                offset, epoch = (position.offset, position.epoch) if position is not None else (0, "")
                frame = encode(Envelope(Kind.PUBLICATION, self.slot, offset=offset, channel=channel, epoch=epoch,
                                        payload=pack_publication(pub), ts=self.clock()))
            self.router.deliver(slot, frame)

    def join(self, channel: str, slots: tuple[int, ...], info: ClientInfo) -> None:
        self._event(Kind.JOIN, channel, slots, info)

    def leave(self, channel: str, slots: tuple[int, ...], info: ClientInfo) -> None:
        self._event(Kind.LEAVE, channel, slots, info)

    def _event(self, kind: Kind, channel: str, slots: tuple[int, ...], info: ClientInfo) -> None:
        frame: bytes | None = None
        for slot in slots:
            if slot == self.slot:
                if kind is Kind.JOIN:
                    self.handler.handle_join(channel, info)
                else:
                    self.handler.handle_leave(channel, info)
                continue
            if frame is None:
                frame = encode(Envelope(kind, self.slot, channel=channel, payload=pack_client_info(info)))
            self.router.deliver(slot, frame)

    def handle_delivery(self, env: Envelope) -> None:
        """A delivery another worker sent us."""
        try:
            if env.kind is Kind.PUBLICATION:
                self.stats.bus_latency.observe(max(0.0, self.clock() - env.ts))
                position = StreamPosition(env.offset, env.epoch) if env.offset else None
                self.handler.handle_publication(env.channel, unpack_publication(env.payload), position)
            elif env.kind is Kind.JOIN:
                self.handler.handle_join(env.channel, unpack_client_info(env.payload))
            else:
                self.handler.handle_leave(env.channel, unpack_client_info(env.payload))
        except PackError as exc:
            log.warning("dropped a bad delivery from slot %d: %s", env.origin, exc)
