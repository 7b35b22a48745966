"""Local indexes of one worker: connections by client id and user, subscribers by channel.

The hub is the engine's :class:`~gateway.engine.base.BrokerEventHandler`: publications,
joins and leaves arrive structured, and the hub encodes each one **once per codec** and
writes the same bytes to every local subscriber of that codec (subscribers are grouped by
codec per channel, so the hot loop does no lookups). What a channel gets in one loop tick is
written at the end of the tick as one frame per codec, the same bytes to each subscriber, by
one call per subscriber (its ``push_now``, straight to the socket while it has nothing
queued, else :meth:`Subscriber.write_push`); anything that changes who gets the
channel's pushes, or sends them other pushes, first writes out what the channel holds, so
order per subscriber is what it was when each publication arrived. Subscribers that negotiated fossil deltas
form groups of their own: for them a publication marked for delta is encoded at most twice
per codec (whole, for those that got nothing yet on their subscription, and as a delta
against the channel's previous publication here, which every other one of them got), the
delta computed once per publication per worker (:mod:`gateway.core.delta`). Fan-out is synchronous and never
awaits per subscriber; each connection coalesces what it got in one loop tick into one
message, and a subscriber that cannot keep up is disconnected by its own queue cap, never
buffered without bound.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.core import delta
from gateway.core.errors import Disconnect, Unsubscribe
from gateway.core.model import ClientInfo, DeltaPayload, Publication, StreamPosition
from gateway.engine.base import BrokerEventHandler
from gateway.obs.stats import Stats
from gateway.protocol.codec import Codec

__all__ = ["Hub", "Subscriber", "LocalChannel"]

log = logging.getLogger("shardgate.hub")


class Subscriber(Protocol):
    """What the hub, and the control actions acting through it, need from a connection."""

    client_id: str
    user: str
    codec: Codec
    # Writes a push to the socket at once; None while the subscriber has output queued, held,
    # paused or is closing (then write_push queues it behind the rest, in order).
    push_now: Callable[[bytes], None] | None

    def write_push(self, data: bytes) -> None: ...

    def on_stream_gap(self, channel: str) -> None: ...

    def server_unsubscribe(self, channel: str, reason: Unsubscribe) -> None: ...

    def close(self, disconnect: Disconnect) -> None: ...

    def server_subscribe(self, channel: str, request: dict[str, Any]) -> None: ...

    def server_refresh(self, request: dict[str, Any]) -> None: ...


_NO_SUBSCRIBERS: frozenset[Any] = frozenset()


@dataclass(slots=True)
class LocalChannel:
    """The local subscribers of one channel, by codec (-> wants join/leave pushes), those that
    negotiated fossil deltas apart, and the last position and publication delivered to them."""

    groups: dict[Codec, dict[Subscriber, bool]] = field(default_factory=dict)
    delta_groups: dict[Codec, dict[Subscriber, bool]] = field(default_factory=dict)
    # Delta subscribers sent no payload yet on their subscription: the next one goes whole.
    # A set only while it holds someone (an empty set is ~0.2 KiB, and most channels never
    # have delta subscribers): the shared empty frozenset otherwise.
    fresh: set[Subscriber] | frozenset[Subscriber] = _NO_SUBSCRIBERS
    # Pushes for ``groups`` this tick, by codec, written at the end of the tick (Hub._flush).
    batch: dict[Codec, list[bytes]] | None = None
    # The last publication delivered here: the base of the next delta (its offset tells
    # whether it is the one just before).
    prev: Publication | None = None
    epoch: str = ""
    offset: int = 0
    # Subscribers whose subscribe reply already carried publications up to an offset beyond
    # ``offset`` (the Redis engine reads the stream on another connection than pub/sub, so a
    # reply can be ahead of what reached this worker): they skip those when they arrive, while
    # the subscribers already here still get them.
    ahead: dict[Subscriber, int] = field(default_factory=dict)

    def not_fresh(self, sub: Subscriber) -> None:
        if isinstance(self.fresh, set):
            self.fresh.discard(sub)

    def __len__(self) -> int:
        return sum(len(subs) for subs in self.groups.values()) + sum(len(s) for s in self.delta_groups.values())

    def subscribers(self) -> list[Subscriber]:
        return [sub for groups in (self.groups, self.delta_groups) for subs in groups.values() for sub in subs]

    def all_groups(self) -> list[tuple[Codec, dict[Subscriber, bool]]]:
        return [*self.groups.items(), *self.delta_groups.items()]

    def __contains__(self, sub: Subscriber) -> bool:
        subs = self.groups.get(sub.codec)
        if subs is not None and sub in subs:
            return True
        subs = self.delta_groups.get(sub.codec)
        return subs is not None and sub in subs


@dataclass(slots=True)
class _Pending:
    """Publications that arrived while subscribes to a channel were in flight."""

    count: int = 0
    publications: list[tuple[Publication, StreamPosition]] = field(default_factory=list)
    overflow: bool = False

    def add(self, pub: Publication, position: StreamPosition) -> None:
        if len(self.publications) >= _PENDING_MAX:
            self.overflow = True  # the subscriber resubscribes and recovers (2500)
            return
        self.publications.append((pub, position))

    def top(self, position: StreamPosition) -> int:
        """The highest offset of ``position``'s epoch kept here."""
        offsets = [at.offset for _, at in self.publications if at.epoch == position.epoch]
        return max(offsets, default=position.offset)


_PENDING_MAX = 10_000


class Hub:
    """``call_soon`` (the worker loop's) runs the end-of-tick write of each channel's batch;
    without it (a hub used with no loop) every publication is written as it arrives."""

    def __init__(self, stats: Stats | None = None, call_soon: Callable[[Callable[[], None]], Any] | None = None
                 ) -> None:
        self.stats = stats or Stats()
        self._call_soon = call_soon
        self._batched: list[LocalChannel] = []
        self.channels: dict[str, LocalChannel] = {}
        self._pending: dict[str, _Pending] = {}
        self.clients: dict[str, Subscriber] = {}
        # A user's client ids: the one id itself while the user has one connection (most do;
        # a set is about 200 bytes more per connection), a set from the second on.
        self.users: dict[str, str | set[str]] = {}

    # -- connections ---------------------------------------------------------------------------

    def add_client(self, sub: Subscriber) -> None:
        client_id, user = sub.client_id, sub.user
        self.clients[client_id] = sub
        ids = self.users.get(user)
        if ids is None:
            self.users[user] = client_id
        elif isinstance(ids, str):
            if ids != client_id:
                self.users[user] = {ids, client_id}
        else:
            ids.add(client_id)

    def remove_client(self, sub: Subscriber) -> None:
        client_id, user = sub.client_id, sub.user
        if self.clients.get(client_id) is not sub:
            return
        del self.clients[client_id]
        ids = self.users.get(user)
        if ids is None:
            return
        if isinstance(ids, str):
            if ids == client_id:
                del self.users[user]
            return
        ids.discard(client_id)
        if len(ids) == 1:
            self.users[user] = next(iter(ids))
        elif not ids:
            del self.users[user]

    def user_client_ids(self, user: str) -> list[str]:
        ids = self.users.get(user)
        if ids is None:
            return []
        return [ids] if isinstance(ids, str) else list(ids)

    def user_clients(self, user: str) -> Iterator[Subscriber]:
        for client_id in self.user_client_ids(user):
            sub = self.clients.get(client_id)
            if sub is not None:
                yield sub

    # -- subscriptions -------------------------------------------------------------------------

    def begin_subscribe(self, channel: str) -> None:
        """A subscribe to ``channel`` is on its way to the engine: keep what arrives for the
        channel meanwhile, so the new subscriber misses nothing after its answered position
        (the Redis engine's answer and publications travel different connections)."""
        pending = self._pending.get(channel)
        if pending is None:
            pending = self._pending[channel] = _Pending()
        pending.count += 1

    def end_subscribe(self, channel: str) -> None:
        pending = self._pending.get(channel)
        if pending is not None:
            pending.count -= 1
            if pending.count <= 0:
                del self._pending[channel]

    def subscribe(self, channel: str, sub: Subscriber, join_leave: bool, position: StreamPosition | None,
                  deltas: bool = False, last: Publication | None = None) -> None:
        """Add ``sub`` from ``position`` on: publications after it that reached this worker
        while the subscribe was in flight are written to ``sub`` now.

        ``deltas``: ``sub`` negotiated fossil deltas; ``last`` is the last publication its
        subscribe reply carried (recovered), the base of its first delta."""
        local = self.channels.get(channel)
        if local is None:
            local = self.channels[channel] = LocalChannel()
        else:
            self._write_batch(local)  # those went out before this subscriber was here
        groups = local.delta_groups if deltas else local.groups
        group = groups.get(sub.codec)
        if group is None:
            group = groups[sub.codec] = {}
        group[sub] = join_leave
        if deltas:
            fresh = local.fresh if isinstance(local.fresh, set) else set()
            fresh.add(sub)
            local.fresh = fresh
        if position is None or not position.epoch:
            return
        pending = self._pending.get(channel)
        run, complete = self._run_after(channel, position)
        if deltas:
            for item in delta.recovered(run, not sub.codec.binary, last):
                sub.write_push(sub.codec.delta_publication_push(channel, item))
        else:
            for pub in run:
                sub.write_push(sub.codec.publication_push(channel, pub))
        if not complete:
            sub.on_stream_gap(channel)  # something after its position never reached us
            return
        if local.epoch != position.epoch:
            if local.epoch:
                # The stream was recreated under the subscribers already here: they recover.
                for other in local.subscribers():
                    if other is not sub:
                        other.on_stream_gap(channel)
            local.epoch, local.offset, local.prev = position.epoch, 0, None
            local.ahead.clear()
        top = pending.top(position) if pending is not None else position.offset
        reached = max(position.offset, top)
        if local.offset and reached > local.offset and len(local) > 1:
            # Ahead of what the others here got: they still need local.offset+1..reached.
            local.ahead[sub] = reached
        else:
            local.offset = max(local.offset, reached)
        if run:
            last = run[-1]
        if deltas and last is not None and last.offset == local.offset:
            # It got the latest publication here: deltas against the channel's next ones apply.
            local.not_fresh(sub)
            if local.prev is None or local.prev.offset != local.offset:
                local.prev = last

    def arrived_after(self, channel: str, position: StreamPosition) -> list[Publication] | None:
        """What reached this worker after ``position`` while a subscribe to ``channel`` was in
        flight, as an unbroken run (None when it has a hole or overflowed). A recovering
        subscribe merges it into its reply, as centrifuge merges publications buffered during
        recovery: SDKs drop a push whose offset is below one they saw, so these must not arrive
        as separate pushes next to the reply's recovered publications."""
        run, complete = self._run_after(channel, position)
        return run if complete else None

    def _run_after(self, channel: str, position: StreamPosition) -> tuple[list[Publication], bool]:
        """The unbroken run after ``position`` among the pending publications, and whether
        nothing follows a hole."""
        pending = self._pending.get(channel)
        if pending is None:
            return [], True
        if pending.overflow:
            return [], False
        run: list[Publication] = []
        expected = position.offset + 1
        for pub, at in pending.publications:
            if at.epoch != position.epoch:
                return run, False
            if at.offset < expected:
                continue
            if at.offset != expected:
                return run, False
            run.append(pub)
            expected += 1
        return run, True

    def unsubscribe(self, channel: str, sub: Subscriber) -> bool:
        """Remove; True when it was subscribed."""
        local = self.channels.get(channel)
        if local is None:
            return False
        self._write_batch(local)  # it was subscribed when they arrived
        for groups in (local.groups, local.delta_groups):
            group = groups.get(sub.codec)
            if group is None or sub not in group:
                continue
            del group[sub]
            local.not_fresh(sub)
            local.ahead.pop(sub, None)
            if not group:
                del groups[sub.codec]
                if not local.groups and not local.delta_groups:
                    del self.channels[channel]
            return True
        return False

    def num_subscriptions(self) -> int:
        return sum(len(local) for local in self.channels.values())

    # -- BrokerEventHandler: fan-out -----------------------------------------------------------

    def handle_publication(self, channel: str, pub: Publication, position: StreamPosition | None) -> None:
        """Write ``pub`` to every local subscriber of ``channel``, encoded once per codec."""
        if position is not None and self._pending:
            pending = self._pending.get(channel)
            if pending is not None:
                pending.add(pub, position)
        local = self.channels.get(channel)
        if local is None:
            return
        if position is not None:
            offset, epoch = position.offset, position.epoch
            if local.offset and (epoch != local.epoch or offset != local.offset + 1):
                if epoch == local.epoch and offset <= local.offset:
                    return  # a duplicate: already delivered
                # A publication was lost between owner and this worker, or the stream was
                # recreated: positioned subscribers must resubscribe and recover (2500).
                self._write_batch(local)  # what came before the gap
                local.epoch, local.offset, local.prev = epoch, offset, None
                for sub in local.subscribers():
                    sub.on_stream_gap(channel)
                local = self.channels.get(channel)
                if local is None:
                    return
            local.epoch, local.offset = epoch, offset
        if local.ahead and position is not None:
            self._write_batch(local)
            self._deliver_skipping_ahead(channel, local, pub, position.offset)
            return
        count = 0
        size = 0
        if local.groups:
            batch = local.batch
            if batch is None:
                batch = local.batch = {}
                if self._call_soon is not None:
                    if not self._batched:
                        self._call_soon(self._flush)
                    self._batched.append(local)
            for codec, subs in local.groups.items():
                data = codec.publication_push(channel, pub)
                count += len(subs)
                size = len(data)
                if data:
                    queued = batch.get(codec)
                    if queued is None:
                        batch[codec] = [data]
                    else:
                        queued.append(data)
            if self._call_soon is None:
                self._write_batch(local)  # no loop: written as it arrives
        self.stats.sent("publication", size, count)
        if local.delta_groups:
            self._deliver_deltas(channel, local, pub)
        local.prev = pub

    def _flush(self) -> None:
        """End of the tick: every channel that got publications writes them out."""
        batched = self._batched
        self._batched = []
        for local in batched:
            self._write_batch(local)

    def _write_batch(self, local: LocalChannel) -> None:
        """Write out what ``local`` holds this tick (nothing when it holds nothing): at the end
        of the tick, or before anything that must come after it."""
        batch = local.batch
        local.batch = None
        if not batch:
            return
        for codec, queued in batch.items():
            subs = local.groups.get(codec)
            if not subs:
                continue
            frame = queued[0] if len(queued) == 1 else codec.separator.join(queued)
            # A copy: a write may end a connection, and its cleanup leaves this group.
            for sub in tuple(subs):
                send = sub.push_now
                try:
                    if send is None:
                        sub.write_push(frame)
                    else:
                        send(frame)
                except Exception:  # one broken connection must not cost the others their copy
                    log.exception("fan-out write to client %s failed", sub.client_id)

    def _deliver_skipping_ahead(self, channel: str, local: LocalChannel, pub: Publication, offset: int) -> None:
        """The rare path of :meth:`handle_publication`: some subscribers already have ``pub``
        from their subscribe reply. Encoded once per codec all the same."""
        ahead = local.ahead
        skip = {sub for sub, top in ahead.items() if top >= offset}
        for codec, subs in local.groups.items():
            data = codec.publication_push(channel, pub)
            n = 0
            for sub in subs:
                if sub not in skip:
                    sub.write_push(data)
                    n += 1
            self.stats.sent("publication", len(data), n)
        if local.delta_groups:
            still_fresh = skip & local.fresh  # sent nothing here yet: their next one goes whole
            self._deliver_deltas(channel, local, pub, skip)
            if still_fresh:
                local.fresh = {*local.fresh, *still_fresh}
        local.prev = pub
        for sub in [sub for sub, top in ahead.items() if top <= offset]:
            del ahead[sub]

    def _deliver_deltas(self, channel: str, local: LocalChannel, pub: Publication,
                        skip: set[Subscriber] | frozenset[Subscriber] = frozenset()) -> None:
        """To the delta subscribers: the delta against the previous publication here (made
        once) to those that got it, the whole payload to the others; each form encoded once
        per codec."""
        prev = local.prev
        found: delta.Patch | None = None
        if pub.delta and prev is not None and prev.offset == (pub.offset - 1 if pub.offset else 0) \
                and len(local.fresh) < sum(len(s) for s in local.delta_groups.values()):
            found = delta.patch(prev.data, pub.data)
        fresh = local.fresh
        stats = self.stats
        for codec, subs in local.delta_groups.items():
            whole: bytes | None = None
            patched: bytes | None = None
            item = delta.payload(pub, found, not codec.binary)
            if not item.delta:
                patched = whole = codec.delta_publication_push(channel, item)
            n_whole = n_patched = 0
            for sub in subs:
                if sub in skip:
                    continue
                if sub in fresh:
                    if whole is None:
                        whole = codec.delta_publication_push(channel, DeltaPayload(pub, pub.data, False))
                    sub.write_push(whole)
                    n_whole += 1
                else:
                    if patched is None:
                        patched = codec.delta_publication_push(channel, item)
                    sub.write_push(patched)
                    n_patched += 1
            if item.delta:
                if n_whole and whole is not None:
                    stats.sent("publication", len(whole), n_whole)
                if n_patched and patched is not None:
                    stats.sent("publication_delta", len(patched), n_patched)
            elif whole is not None:
                stats.sent("publication", len(whole), n_whole + n_patched)
        local.fresh = _NO_SUBSCRIBERS

    def handle_join(self, channel: str, info: ClientInfo) -> None:
        local = self.channels.get(channel)
        if local is not None:
            self._write_batch(local)
            for codec, subs in local.all_groups():
                self._join_leave(subs, codec.join_push(channel, info), info.client)

    def handle_leave(self, channel: str, info: ClientInfo) -> None:
        local = self.channels.get(channel)
        if local is not None:
            self._write_batch(local)
            for codec, subs in local.all_groups():
                self._join_leave(subs, codec.leave_push(channel, info), info.client)

    def _join_leave(self, subs: dict[Subscriber, bool], data: bytes, client: str) -> None:
        """To the subscribers that asked for join/leave pushes; a client is never told of
        its own join (it learns of it from its subscribe reply)."""
        count = 0
        for sub, join_leave in subs.items():
            if join_leave and sub.client_id != client:
                sub.write_push(data)
                count += 1
        self.stats.sent("join_leave", len(data), count)

    def handle_stream_lost(self, channel: str) -> None:
        local = self.channels.get(channel)
        if local is not None:
            self._write_batch(local)
            for sub in local.subscribers():
                sub.on_stream_gap(channel)


_: type[BrokerEventHandler] = Hub
