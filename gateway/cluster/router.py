"""Requests, notifications and membership between the workers of one node, over the bus.

A request names a slot, an operation (a small integer the receiver dispatches on, see
:mod:`gateway.engine.wire` and :mod:`gateway.cluster.control`), a channel and a binary
payload; its answer comes back as a REPLY on the same ordered pipe as everything else the
peer sends us, which is what lets the memory engine's subscribe reply mark the exact
point from which this worker's subscriber receives a channel's stream. A peer that cannot
be reached, or does not answer within ``shardgate.bus_request_timeout``, gives a
temporary error 100, never a hang.

Membership: every worker announces its bus endpoint and incarnation (HELLO); a changed
incarnation means the peer restarted and lost its memory, unless it says it took over its
predecessor's state in a reload.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import orjson

from gateway.core.errors import ClientError
from gateway.obs.stats import Stats
from sharding.envelope import FLAG_HELLO_ANSWER, FLAG_HELLO_HANDOFF, Envelope, Kind

__all__ = ["Bus", "Router", "Reply", "ERROR_SHARD_UNAVAILABLE", "RequestHandler", "NotifyHandler"]

log = logging.getLogger("shardgate.router")

#: ``reply(payload, None)`` or ``reply(None, error)``.
Reply = Callable[[bytes | None, ClientError | None], None]
#: ``handler(op, channel, payload, origin, reply)``: calls ``reply`` once, now or later (an
#: engine that must ask Redis first); may raise ClientError instead.
RequestHandler = Callable[[int, str, bytes, int, Reply], None]
#: ``handler(op, channel, payload, origin)`` for one-way operations.
NotifyHandler = Callable[[int, str, bytes, int], None]

# A shard that cannot be reached or does not answer in time: temporary, the SDKs retry.
ERROR_SHARD_UNAVAILABLE = ClientError(100, "internal server error: shard unavailable", temporary=True)
_ERROR_INTERNAL = ClientError(100, "internal server error", temporary=True)

_HELLO_RETRY = 0.02
_MAX_EXPIRED = 10_000
_REPLY_OK = 0
_REPLY_ERROR = 1


class Bus(Protocol):
    """Ordered, message-oriented links to the other slots (``sharding.bus`` implements it)."""

    endpoint: str

    def send(self, slot: int, env: Envelope) -> bool:
        """Queue ``env`` for ``slot``; False when the peer is not reachable right now."""
        ...

    def send_frames(self, slot: int, frames: list[bytes]) -> bool:
        """Queue encoded envelopes for ``slot`` as one message, in order; False as :meth:`send`."""
        ...

    def connect_peer(self, slot: int, path: str) -> None:
        """Point the link to ``slot`` at the endpoint a (new) incarnation announced."""
        ...

    def send_all_to(self, path: str, envelopes: list[Envelope], timeout: float) -> bool:
        """Deliver in order to one endpoint (a reload successor); blocking."""
        ...


@dataclass(slots=True)
class _Pending:
    deadline: float
    reply: Reply
    slot: int
    op: int
    channel: str
    on_late: Callable[[], None] | None


class Router:
    """This worker's end of the bus: correlation, timeouts, HELLO membership."""

    def __init__(self, slot: int, workers: int, loop: asyncio.AbstractEventLoop, clock: Callable[[], float],
                 rng: random.Random, timeout: float, stats: Stats) -> None:
        self.slot = slot
        self.workers = workers
        self.loop = loop
        self.clock = clock
        self.timeout = timeout
        self.stats = stats
        self.incarnation = rng.getrandbits(32)
        self.bus: Bus | None = None
        self._corr = rng.getrandbits(31)  # distinct from a predecessor's in-flight ids
        self._pending: dict[int, _Pending] = {}
        self._expired: dict[int, _Pending] = {}  # timed out, kept to undo what lands late
        self._peers: dict[int, int] = {}  # slot -> incarnation seen in its HELLO
        self._hello_unsent: dict[int, int] = {}  # slot -> HELLO flags still to deliver
        self._hello_retrying = False
        self._sweeper: asyncio.TimerHandle | None = None
        # Deliveries held back in this loop tick, encoded, per slot, and the slots that already
        # got one sent at once (see deliver()).
        self._outbox: dict[int, list[bytes]] = {}
        self._sent_this_tick: set[int] = set()
        self._outbox_due = False
        # Set by the node: who handles what arrives.
        self.on_request: RequestHandler | None = None
        self.on_notify: NotifyHandler | None = None
        self.on_delivery: Callable[[Envelope], None] | None = None
        self.on_handoff: Callable[[Envelope], None] | None = None
        self.on_peer_restarted: Callable[[int], None] | None = None
        self.on_peer_change: Callable[[], None] | None = None

    # -- wiring ---------------------------------------------------------------------------------

    def attach(self, bus: Bus, announce: bool = True) -> None:
        """Start talking to the other slots and begin the timeout sweep. A reload successor
        announces itself only after it installed its predecessor's state."""
        self.bus = bus
        self._schedule_sweep()
        if announce:
            self.announce()

    def announce(self, handoff: bool = False) -> None:
        """HELLO to every peer with our endpoint (and, after a handoff, "state preserved")."""
        flags = FLAG_HELLO_HANDOFF if handoff else 0
        self._hello_unsent = {s: flags for s in range(self.workers) if s != self.slot}
        self._send_hellos()

    @property
    def ready(self) -> bool:
        """Every peer has heard from us and we from every peer."""
        return not self._hello_unsent and len(self._peers) >= self.workers - 1

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _send_hellos(self) -> None:
        """Announce ourselves (flags 0) or answer an announcement (flags 1), retrying until
        the peer's pipe is connected: a peer that just restarted binds a new socket."""
        assert self.bus is not None
        retry_scheduled = bool(self._hello_unsent) and self._hello_retrying
        for slot, flags in list(self._hello_unsent.items()):
            hello = Envelope(Kind.HELLO, self.slot, corr=self.incarnation, flags=flags,
                             payload=self.bus.endpoint.encode())
            if self._send_now(slot, hello):
                del self._hello_unsent[slot]
        if self._hello_unsent:
            if not retry_scheduled:
                self._hello_retrying = True
                self.loop.call_later(_HELLO_RETRY, self._retry_hellos)
        elif self.on_peer_change is not None:
            self.on_peer_change()

    def _retry_hellos(self) -> None:
        self._hello_retrying = False
        if self._hello_unsent:
            self._send_hellos()

    # -- sending --------------------------------------------------------------------------------

    def request(self, slot: int, op: int, channel: str, payload: bytes, reply: Reply,
                timeout: float | None = None, on_late: Callable[[], None] | None = None) -> None:
        """Run ``op`` on ``slot``; ``reply`` gets the answer payload or an error. ``on_late``
        runs if a success answer arrives after the timeout already failed the request."""
        if self.bus is None:
            reply(None, ERROR_SHARD_UNAVAILABLE)
            return
        self._corr = (self._corr + 1) & 0xFFFFFFFF or 1
        env = Envelope(Kind.REQUEST, self.slot, corr=self._corr, flags=op, channel=channel, payload=payload)
        if not self._send_now(slot, env):
            reply(None, ERROR_SHARD_UNAVAILABLE)
            return
        deadline = self.clock() + (timeout or self.timeout)
        self._pending[self._corr] = _Pending(deadline, reply, slot, op, channel, on_late)

    def notify(self, slot: int, op: int, channel: str, payload: bytes) -> None:
        """A one-way operation on ``slot`` (no answer)."""
        self.send(slot, Envelope(Kind.NOTIFY, self.slot, flags=op, channel=channel, payload=payload))

    def send(self, slot: int, env: Envelope) -> None:
        """``env`` (a reply, a notify) to ``slot`` now. A peer whose queue is full or that is
        down loses it."""
        if not self._send_now(slot, env):
            self.stats.bus_dropped += 1

    def _send_now(self, slot: int, env: Envelope) -> bool:
        """``env`` to ``slot`` after the deliveries this tick holds for it: the pipe's order is
        what places a subscribe answer among the channel's publications."""
        self._flush_slot(slot)
        return self.bus is not None and self.bus.send(slot, env)

    def deliver(self, slot: int, frame: bytes) -> None:
        """A delivery (an encoded publication, join or leave envelope) to ``slot``. The first
        of a loop tick goes at once (a lone publication waits for nothing); the rest of the
        tick's to that slot go together at its end, or before anything else sent there, as
        one bus message: one zmq send and one receive per burst and peer, not per publication.
        A peer whose queue is full or that is down loses them; a positioned subscriber there
        sees the gap by offset and resubscribes with recovery."""
        box = self._outbox.get(slot)
        if box is not None:
            box.append(frame)
            return
        if not self._outbox_due:
            self._outbox_due = True
            self.loop.call_soon(self.flush_outbox)  # the tick's end
        if slot in self._sent_this_tick:
            self._outbox[slot] = [frame]
            return
        self._sent_this_tick.add(slot)
        self._send_frames(slot, [frame])

    def flush_outbox(self) -> None:
        """Send every slot's held deliveries (at the end of the tick, and before closing)."""
        self._outbox_due = False
        self._sent_this_tick.clear()
        outbox, self._outbox = self._outbox, {}
        for slot, frames in outbox.items():
            self._send_frames(slot, frames)

    def _flush_slot(self, slot: int) -> None:
        frames = self._outbox.pop(slot, None)
        if frames is not None:
            self._send_frames(slot, frames)

    def _send_frames(self, slot: int, frames: list[bytes]) -> None:
        stats = self.stats
        if self.bus is None or not self.bus.send_frames(slot, frames):
            stats.bus_dropped += len(frames)
            return
        stats.bus_deliveries_sent += len(frames)
        stats.bus_delivery_messages_sent += 1

    # -- timeouts -------------------------------------------------------------------------------

    def _schedule_sweep(self) -> None:
        self._sweeper = self.loop.call_later(min(0.25, self.timeout / 4), self._sweep)

    def _sweep(self) -> None:
        now = self.clock()
        for corr in [corr for corr, p in self._pending.items() if p.deadline <= now]:
            pending = self._pending.pop(corr)
            if pending.on_late is not None:
                self._expired[corr] = pending
                while len(self._expired) > _MAX_EXPIRED:
                    del self._expired[next(iter(self._expired))]
            log.warning("request op %d on %r to slot %d timed out", pending.op, pending.channel, pending.slot)
            pending.reply(None, ERROR_SHARD_UNAVAILABLE)
        self._schedule_sweep()

    def close(self) -> None:
        self.flush_outbox()
        if self._sweeper is not None:
            self._sweeper.cancel()
        pending, self._pending = self._pending, {}
        for p in pending.values():
            p.reply(None, ERROR_SHARD_UNAVAILABLE)

    # -- receiving ------------------------------------------------------------------------------

    def on_envelope(self, env: Envelope) -> None:
        kind = env.kind
        if kind is Kind.PUBLICATION or kind is Kind.JOIN or kind is Kind.LEAVE:
            if self.on_delivery is not None:
                self.on_delivery(env)
        elif kind is Kind.REQUEST:
            self._on_request(env)
        elif kind is Kind.REPLY:
            self._on_reply(env)
        elif kind is Kind.NOTIFY:
            try:
                if self.on_notify is not None:
                    self.on_notify(env.flags, env.channel, env.payload, env.origin)
            except ClientError:
                pass  # a one-way operation refused (the owner is reloading): nobody to tell
            except Exception:
                log.exception("notify op %d from slot %d failed", env.flags, env.origin)
        elif kind is Kind.HELLO:
            self._on_hello(env)
        elif kind is Kind.HANDOFF and self.on_handoff is not None:
            self.on_handoff(env)

    def _on_request(self, env: Envelope) -> None:
        assert self.on_request is not None
        replied = False

        def reply(payload: bytes | None, error: ClientError | None) -> None:
            nonlocal replied
            if replied:
                return
            replied = True
            if error is None and payload is not None:
                out = Envelope(Kind.REPLY, self.slot, corr=env.corr, flags=_REPLY_OK, payload=payload)
            else:
                out = Envelope(Kind.REPLY, self.slot, corr=env.corr, flags=_REPLY_ERROR,
                               payload=orjson.dumps((error or _ERROR_INTERNAL).as_dict()))
            self.send(env.origin, out)

        try:
            self.on_request(env.flags, env.channel, env.payload, env.origin, reply)
        except ClientError as exc:
            reply(None, exc)
        except Exception:
            log.exception("request op %d from slot %d failed", env.flags, env.origin)
            reply(None, _ERROR_INTERNAL)

    def _on_reply(self, env: Envelope) -> None:
        pending = self._pending.get(env.corr)
        if pending is None or pending.slot != env.origin:
            expired = self._expired.pop(env.corr, None)
            if expired is not None and expired.slot == env.origin and env.flags == _REPLY_OK \
                    and expired.on_late is not None:
                expired.on_late()
            return
        del self._pending[env.corr]
        if env.flags == _REPLY_OK:
            pending.reply(env.payload, None)
            return
        try:
            body = orjson.loads(env.payload)
            err = ClientError(int(body.get("code", 100)), str(body.get("message", "internal server error")),
                              bool(body.get("temporary", False)))
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
            err = _ERROR_INTERNAL
        pending.reply(None, err)

    def _on_hello(self, env: Envelope) -> None:
        slot, incarnation = env.origin, env.corr
        if self.bus is not None and env.payload:
            self.bus.connect_peer(slot, env.payload.decode())
        previous = self._peers.get(slot)
        self._peers[slot] = incarnation
        if not env.flags & FLAG_HELLO_ANSWER and self.bus is not None:
            # Answer so that a restarted peer learns about us too.
            self._hello_unsent.setdefault(slot, FLAG_HELLO_ANSWER)
            self._send_hellos()
        if previous is not None and previous != incarnation and not env.flags & FLAG_HELLO_HANDOFF:
            log.warning("slot %d restarted", slot)
            for corr, pending in list(self._pending.items()):
                if pending.slot == slot:
                    del self._pending[corr]
                    pending.reply(None, ERROR_SHARD_UNAVAILABLE)
            if self.on_peer_restarted is not None:
                self.on_peer_restarted(slot)
        if self.on_peer_change is not None:
            self.on_peer_change()
