"""The owner side of channels in the memory engine: ordering, history, presence, interest.

Every channel has exactly one owner slot (``sharding.hashing.owner``). The owner is the
only writer of its channels' streams, which is what makes per-channel order total. This
module is synchronous and typed: :class:`gateway.engine.memory.MemoryEngine` calls it
directly for channels its worker owns and from the bus for operations other workers route
here; delivery goes through the :class:`Fanout` the engine passes in, so nothing here
knows about sockets or codecs.
"""

from __future__ import annotations

import base64
import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.core.errors import ERROR_UNRECOVERABLE_POSITION
from gateway.core.history import Stream, is_recovered, new_epoch
from gateway.core.model import (
    ClientInfo,
    HistoryFilter,
    HistoryResult,
    PresenceStats,
    Publication,
    PublishOptions,
    StreamOptions,
    StreamPosition,
    SubscribeAnswer,
    SubscribeRequest,
    check_reply_size,
    pack_client_info,
    pack_publication,
    unpack_client_info,
    unpack_publication,
)

__all__ = ["OwnerShard", "Fanout", "IDEMPOTENCY_WINDOW", "EMPTY_STREAM_GRACE", "EMPTY_STREAMS_MAX"]

IDEMPOTENCY_WINDOW = 300.0  # Centrifugo keeps a publish result for 5 minutes
_IDEMPOTENCY_MAX = 10_000
# A stream nothing was ever published to, with no subscriber, is kept this long after it was
# last read (a client that read the position can still subscribe from it), and then forgotten:
# the next read creates a new epoch, which tells a client holding the old one that it cannot
# prove it missed nothing. Beyond EMPTY_STREAMS_MAX such streams the oldest go at once.
EMPTY_STREAM_GRACE = 10.0
EMPTY_STREAMS_MAX = 10_000


class Fanout(Protocol):
    """Delivers to the local subscribers of a channel in each of ``slots`` (the owner's
    own slot included)."""

    def publication(self, channel: str, slots: tuple[int, ...], pub: Publication,
                    position: StreamPosition | None) -> None: ...

    def join(self, channel: str, slots: tuple[int, ...], info: ClientInfo) -> None: ...

    def leave(self, channel: str, slots: tuple[int, ...], info: ClientInfo) -> None: ...


@dataclass(slots=True)
class _Channel:
    """Owner-side state of one channel."""

    stream: Stream | None = None
    presence: dict[str, tuple[int, ClientInfo]] = field(default_factory=dict)  # client -> (slot, info)
    interest: dict[int, int] = field(default_factory=dict)  # slot -> local subscriber count

    def idle(self) -> bool:
        return not self.presence and not self.interest and self.stream is None

    def slots(self) -> tuple[int, ...]:
        return tuple(self.interest)  # entries are removed when their count reaches 0


class OwnerShard:
    """State of the channels owned by one slot."""

    def __init__(self, fanout: Fanout, clock: Callable[[], float], rng: random.Random) -> None:
        self._fanout = fanout
        self._clock = clock
        self._rng = rng
        self._channels: dict[str, _Channel] = {}
        # Server API idempotency keys: (channel, key) -> (valid until, result), like Centrifugo's 5 min.
        self._idempotent: dict[tuple[str, str], tuple[float, StreamPosition]] = {}
        # Never-published streams without subscribers -> when they became so (oldest first).
        self._empty: dict[str, float] = {}
        # Heap of (meta expiry, channel, epoch), one entry per published stream; :meth:`sweep`
        # re-checks an entry when it comes due, since later publications move the expiry.
        self._meta_expiry: list[tuple[float, str, str]] = []

    # -- helpers ------------------------------------------------------------------------------

    def _channel(self, channel: str) -> _Channel:
        state = self._channels.get(channel)
        if state is None:
            state = self._channels[channel] = _Channel()
        return state

    def _stream(self, state: _Channel, opts: StreamOptions) -> Stream:
        now = self._clock()
        stream = state.stream
        if stream is not None:
            stream.meta_ttl = opts.meta_ttl
            if stream.meta_expired(now):
                stream = None  # the position expired: a new epoch tells clients the old one is gone
        if stream is None:
            stream = state.stream = Stream(new_epoch(self._rng), opts.size, opts.ttl, now, opts.meta_ttl)
        return stream

    def _maybe_forget(self, channel: str, state: _Channel) -> None:
        if state.idle():
            self._channels.pop(channel, None)

    def _unwatched(self, channel: str, state: _Channel) -> None:
        """``channel`` was read or lost its last subscriber: a never-published stream starts
        its grace period; a stream whose meta TTL passed while subscribed goes now."""
        stream = state.stream
        if stream is None or state.interest:
            return
        if stream.top:
            if stream.meta_expired(self._clock()):
                state.stream = None
            return
        empty = self._empty
        empty.pop(channel, None)
        empty[channel] = self._clock()
        while len(empty) > EMPTY_STREAMS_MAX:
            self._drop_empty(next(iter(empty)))

    def _drop_empty(self, channel: str) -> int:
        """Forget ``channel``'s stream if it is still unpublished and unsubscribed."""
        del self._empty[channel]
        state = self._channels.get(channel)
        if state is None or state.stream is None or state.stream.top or state.interest:
            return 0
        state.stream = None
        self._maybe_forget(channel, state)
        return 1

    def _track_meta(self, channel: str, stream: Stream) -> None:
        if stream.meta_ttl > 0:
            heapq.heappush(self._meta_expiry, (stream.touched_at + stream.meta_ttl, channel, stream.epoch))

    def sweep(self, now: float, budget: int) -> int:
        """Forget streams nobody needs any more, looking at no more than ``budget`` of them.

        Gone are never-published streams without subscribers once :data:`EMPTY_STREAM_GRACE`
        passed, and streams without subscribers whose ``meta_ttl`` passed since their last
        publication (Centrifugo's ``history_meta_ttl``). A subscribed stream is kept: its
        subscribers hold its epoch. Returns how many streams were dropped.
        """
        dropped = 0
        empty = self._empty
        while budget > 0 and empty:
            channel, since = next(iter(empty.items()))
            if now - since < EMPTY_STREAM_GRACE:
                break
            budget -= 1
            dropped += self._drop_empty(channel)
        heap = self._meta_expiry
        while budget > 0 and heap and heap[0][0] <= now:
            budget -= 1
            _, channel, epoch = heapq.heappop(heap)
            state = self._channels.get(channel)
            stream = state.stream if state is not None else None
            if state is None or stream is None or stream.epoch != epoch:
                continue  # already gone or replaced (the replacement has its own entry)
            if not stream.meta_expired(now):
                self._track_meta(channel, stream)  # published since: due later
            elif state.interest:
                if stream.meta_ttl > 0:
                    heapq.heappush(heap, (now + stream.meta_ttl, channel, epoch))
            else:
                state.stream = None
                dropped += 1
                self._maybe_forget(channel, state)
        return dropped

    # -- Broker, owner side --------------------------------------------------------------------

    def publish(self, channel: str, pub: Publication, opts: PublishOptions) -> StreamPosition:
        """Assign the next offset (with history), deliver, answer the position."""
        key = opts.idempotency_key
        if not key:
            return self._publish(channel, pub, opts)
        now = self._clock()
        cached = self._idempotent.get((channel, key))
        if cached is not None and cached[0] > now:
            return cached[1]
        result = self._publish(channel, pub, opts)
        self._idempotent[(channel, key)] = (now + IDEMPOTENCY_WINDOW, result)
        if len(self._idempotent) > _IDEMPOTENCY_MAX:
            for k in [k for k, (until, _) in self._idempotent.items() if until <= now]:
                del self._idempotent[k]
            while len(self._idempotent) > _IDEMPOTENCY_MAX:
                del self._idempotent[next(iter(self._idempotent))]
        return result

    def _publish(self, channel: str, pub: Publication, opts: PublishOptions) -> StreamPosition:
        state = self._channels.get(channel)
        if opts.stream is not None and opts.stream.enabled:
            state = state or self._channel(channel)
            stream = self._stream(state, opts.stream)
            pub.offset = stream.next_offset()
            stream.append(pub.offset, pub, self._clock())
            if pub.offset == 1:
                self._track_meta(channel, stream)
            position = StreamPosition(pub.offset, stream.epoch)
            self._fanout.publication(channel, state.slots(), pub, position)
            return position
        pub.offset = 0
        if state is not None and state.interest:
            self._fanout.publication(channel, state.slots(), pub, None)
        return StreamPosition(0, "")

    def join(self, channel: str, info: ClientInfo) -> None:
        state = self._channels.get(channel)
        if state is not None and state.interest:
            self._fanout.join(channel, state.slots(), info)

    def leave(self, channel: str, info: ClientInfo) -> None:
        state = self._channels.get(channel)
        if state is not None and state.interest:
            self._fanout.leave(channel, state.slots(), info)

    def subscribe(self, channel: str, origin: int, request: SubscribeRequest) -> SubscribeAnswer:
        """Count one more subscriber on ``origin``; answer its stream position and recovery."""
        state = self._channel(channel)
        state.interest[origin] = state.interest.get(origin, 0) + 1
        answer = SubscribeAnswer()
        if request.positioned and request.stream is not None and request.stream.enabled:
            stream = self._stream(state, request.stream)
            answer.position = StreamPosition(stream.top, stream.epoch)
            since = request.since
            if request.recover and since is not None:
                items = []
                if not since.epoch or since.epoch == stream.epoch:
                    items = stream.read(self._clock(), limit=request.recovery_limit, since=since.offset)
                answer.recovered = is_recovered(items, since.offset, since.epoch, stream.epoch, stream.top)
                if answer.recovered:
                    answer.publications = [item.publication for item in items]
                    check_reply_size(answer.publications, request.max_bytes)
        return answer

    def unsubscribe(self, channel: str, origin: int) -> None:
        """A subscriber on ``origin`` left."""
        state = self._channels.get(channel)
        if state is None:
            return
        count = state.interest.get(origin, 0) - 1
        if count > 0:
            state.interest[origin] = count
        else:
            state.interest.pop(origin, None)
            self._unwatched(channel, state)
        self._maybe_forget(channel, state)

    def history(self, channel: str, filter: HistoryFilter, opts: StreamOptions) -> HistoryResult:
        """Raises ClientError 112 when ``filter.since`` names another epoch."""
        state = self._channel(channel)
        stream = self._stream(state, opts)
        self._unwatched(channel, state)
        since = filter.since
        if since is not None and since.epoch and since.epoch != stream.epoch:
            raise ERROR_UNRECOVERABLE_POSITION
        items = stream.read(self._clock(), limit=filter.limit, since=since.offset if since else None,
                            reverse=filter.reverse)
        pubs = [item.publication for item in items]
        check_reply_size(pubs, filter.max_bytes)
        return HistoryResult(StreamPosition(stream.top, stream.epoch), pubs)

    def remove_history(self, channel: str) -> None:
        state = self._channels.get(channel)
        if state is not None and state.stream is not None:
            state.stream.clear()

    # -- PresenceManager, owner side -------------------------------------------------------------

    def add_presence(self, channel: str, origin: int, info: ClientInfo) -> None:
        self._channel(channel).presence[info.client] = (origin, info)

    def remove_presence(self, channel: str, client: str) -> None:
        state = self._channels.get(channel)
        if state is not None and state.presence.pop(client, None) is not None:
            self._maybe_forget(channel, state)

    def presence(self, channel: str) -> dict[str, ClientInfo]:
        state = self._channels.get(channel)
        return {client: info for client, (_, info) in state.presence.items()} if state else {}

    def presence_stats(self, channel: str) -> PresenceStats:
        state = self._channels.get(channel)
        entries = state.presence if state else {}
        return PresenceStats(len(entries), len({info.user for _, info in entries.values()}))

    # -- slot lifecycle -----------------------------------------------------------------------

    def forget_slot(self, slot: int, join_leave: Callable[[str], bool]) -> None:
        """Slot ``slot`` restarted: its subscribers and presence entries are gone everywhere;
        observers of channels with ``join_leave`` see them leave."""
        for channel, state in list(self._channels.items()):
            state.interest.pop(slot, None)
            gone = [client for client, (origin, _) in state.presence.items() if origin == slot]
            for client in gone:
                _, info = state.presence.pop(client)
                if join_leave(channel) and state.interest:
                    self._fanout.leave(channel, state.slots(), info)
            self._unwatched(channel, state)
            self._maybe_forget(channel, state)

    # -- reload handoff -------------------------------------------------------------------------

    def export_channels(self) -> list[tuple[str, dict[str, Any]]]:
        """Everything a successor needs to continue these streams exactly: epoch, top
        offset, retained publications, presence, which slots subscribe, idempotency keys."""
        out = []
        now = self._clock()
        keys: dict[str, dict[str, Any]] = {}
        for (channel, key), (until, result) in self._idempotent.items():
            if until > now:
                keys.setdefault(channel, {})[key] = [until, result.offset, result.epoch]
        for name, state in self._channels.items():
            doc: dict[str, Any] = {
                "presence": {client: [slot, _b64(pack_client_info(info))]
                             for client, (slot, info) in state.presence.items()},
                "interest": {str(slot): n for slot, n in state.interest.items()},
                # Publish retries that straddle the handoff must not publish twice.
                "idempotent": keys.get(name, {}),
            }
            stream = state.stream
            if stream is not None:
                doc["stream"] = {
                    "epoch": stream.epoch, "top": stream.top, "size": stream.size, "ttl": stream.ttl,
                    "touched_at": stream.touched_at, "meta_ttl": stream.meta_ttl, "expires_at": stream.expires_at,
                    # Each item also carries the history's expiry: the form a predecessor of an
                    # older version reads and writes (there, the last item's expiry is the stream's).
                    "items": [[i.offset, stream.expires_at, _b64(pack_publication(i.publication))]
                              for i in stream.items()],
                }
            out.append((name, doc))
        return out

    def import_channel(self, name: str, doc: dict[str, Any]) -> None:
        state = self._channel(name)
        for key, (until, offset, epoch) in doc.get("idempotent", {}).items():
            self._idempotent[(name, key)] = (float(until), StreamPosition(int(offset), str(epoch)))
        for client, (slot, info) in doc.get("presence", {}).items():
            state.presence[client] = (int(slot), unpack_client_info(base64.b64decode(info)))
        for slot, n in doc.get("interest", {}).items():
            if int(n) > 0:
                state.interest[int(slot)] = int(n)
        st = doc.get("stream")
        if st is not None:
            stream = Stream(st["epoch"], int(st["size"]), float(st["ttl"]), float(st["touched_at"]),
                            float(st.get("meta_ttl", 0.0)))
            items = st["items"]
            expires_at = st.get("expires_at", max((float(e) for _, e, _ in items), default=stream.touched_at))
            stream.restore(int(st["top"]), [(int(o), unpack_publication(base64.b64decode(p))) for o, _, p in items],
                           float(expires_at))
            state.stream = stream
            if stream.top:
                self._track_meta(name, stream)
            else:
                self._unwatched(name, state)

    def stats(self) -> dict[str, int]:
        """``channels``: channels with any state here; ``streams``: how many of them hold a stream."""
        return {"channels": len(self._channels),
                "streams": sum(1 for state in self._channels.values() if state.stream is not None)}


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()
