"""The owner side of channels: ordering, history, presence and who to fan out to.

Every channel has exactly one owner slot (``sharding.hashing.owner``). The owner is the
only writer of its channels' streams, which is what makes per-channel order total. This
module is synchronous: the node calls it directly for channels it owns and from the bus
for requests that other workers route here; delivery goes through the ``fanout``
callback the node passes in, so nothing here knows about sockets.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.config import ChannelOptions, Config
from gateway.core.errors import (
    ERROR_BAD_REQUEST,
    ERROR_NOT_AVAILABLE,
    ERROR_UNKNOWN_CHANNEL,
    ERROR_UNRECOVERABLE_POSITION,
    ClientError,
)
from gateway.core.history import Stream, is_recovered, new_epoch
from gateway.protocol.centrifuge_json import encode_publication, encode_push
from sharding.envelope import FLAG_JOIN_LEAVE

__all__ = ["OwnerShard", "Fanout"]

_IDEMPOTENCY_WINDOW = 300.0
_IDEMPOTENCY_MAX = 10_000

# fanout(channel, slots, offset, epoch, flags, push_bytes): deliver an encoded push to the
# local subscribers of `channel` in each slot (the owner's own slot included).
Fanout = Callable[[str, Iterable[int], int, str, int, bytes], None]


@dataclass(slots=True)
class _Channel:
    """Owner-side state of one channel."""

    stream: Stream | None = None
    presence: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)  # client -> (slot, info)
    interest: dict[int, int] = field(default_factory=dict)  # slot -> local subscriber count

    def idle(self) -> bool:
        return not self.presence and not self.interest and self.stream is None


class OwnerShard:
    """State of the channels owned by one slot."""

    def __init__(self, config: Config, fanout: Fanout, clock: Callable[[], float], rng: random.Random) -> None:
        self._config = config
        self._fanout = fanout
        self._clock = clock
        self._rng = rng
        self._channels: dict[str, _Channel] = {}
        # Server API idempotency keys: (channel, key) -> (valid until, result), like Centrifugo's 5 min.
        self._idempotent: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}

    # -- helpers ------------------------------------------------------------------------------

    def _options(self, channel: str) -> ChannelOptions:
        opts = self._config.channel_options(channel)
        if opts is None:
            raise ERROR_UNKNOWN_CHANNEL
        return opts

    def _channel(self, channel: str) -> _Channel:
        state = self._channels.get(channel)
        if state is None:
            state = self._channels[channel] = _Channel()
        return state

    def _stream(self, channel: str, state: _Channel, opts: ChannelOptions) -> Stream:
        now = self._clock()
        stream = state.stream
        meta_ttl = opts.history_meta_ttl or self._config.channel.history_meta_ttl
        if stream is not None and now - stream.touched_at > meta_ttl:
            stream = None  # the position expired: a new epoch tells clients the old one is gone
        if stream is None:
            stream = state.stream = Stream(new_epoch(self._rng), opts.history_size, opts.history_ttl, now)
        return stream

    def _maybe_forget(self, channel: str, state: _Channel) -> None:
        if state.idle():
            self._channels.pop(channel, None)

    def _slots(self, state: _Channel) -> tuple[int, ...]:
        return tuple(state.interest)  # entries are removed when their count reaches 0

    # -- operations (request bodies are JSON-shaped dicts) -------------------------------------

    def handle(self, method: str, body: dict[str, Any], origin: int) -> dict[str, Any]:
        """Run one owner operation; raises ClientError for the requester."""
        handler = self._handlers.get(method)
        if handler is None:
            raise ClientError(104, "method not found")
        channel = body.get("channel")
        if not isinstance(channel, str) or not channel:
            raise ERROR_BAD_REQUEST
        return handler(self, channel, body, origin)

    def publish(self, channel: str, body: dict[str, Any], origin: int) -> dict[str, Any]:
        opts = self._options(channel)
        key = body.get("idempotency_key")
        if key:
            cache_key = (channel, str(key))
            cached = self._idempotent.get(cache_key)
            if cached is not None and cached[0] > self._clock():
                return cached[1]
            result = self._publish(channel, body, opts)
            self._idempotent[cache_key] = (self._clock() + _IDEMPOTENCY_WINDOW, result)
            if len(self._idempotent) > _IDEMPOTENCY_MAX:
                now = self._clock()
                for k in [k for k, (until, _) in self._idempotent.items() if until <= now]:
                    del self._idempotent[k]
                while len(self._idempotent) > _IDEMPOTENCY_MAX:
                    del self._idempotent[next(iter(self._idempotent))]
            return result
        return self._publish(channel, body, opts)

    def _publish(self, channel: str, body: dict[str, Any], opts: ChannelOptions) -> dict[str, Any]:
        state = self._channels.get(channel)
        offset, epoch = 0, ""
        if opts.history_enabled and not body.get("skip_history"):
            state = state or self._channel(channel)
            stream = self._stream(channel, state, opts)
            offset, epoch = stream.next_offset(), stream.epoch
            pub = encode_publication(body.get("data"), offset, body.get("info"), body.get("tags"))
            stream.append(offset, pub, self._clock())
        else:
            pub = encode_publication(body.get("data"), 0, body.get("info"), body.get("tags"))
        if state is not None:
            self._fanout(channel, self._slots(state), offset, epoch, 0, encode_push(channel, "pub", pub))
        result: dict[str, Any] = {}
        if offset:
            result = {"offset": offset, "epoch": epoch}
        return result

    def subscribe(self, channel: str, body: dict[str, Any], origin: int) -> dict[str, Any]:
        """Register a subscriber on ``origin``; answer its stream position and recovery."""
        opts = self._options(channel)
        state = self._channel(channel)
        state.interest[origin] = state.interest.get(origin, 0) + 1
        info = body.get("info") or {}
        client = str(info.get("client", ""))
        if opts.presence and client:
            state.presence[client] = (origin, info)
        if opts.join_leave and client:
            push = encode_push(channel, "join", orjson.dumps({"info": info}))
            self._fanout(channel, self._slots(state), 0, "", FLAG_JOIN_LEAVE, push)
        result: dict[str, Any] = {}
        if body.get("positioned") and opts.history_enabled:
            stream = self._stream(channel, state, opts)
            result = {"epoch": stream.epoch, "offset": stream.top}
            if body.get("recover"):
                limit = self._config.client.recovery_max_publication_limit
                req_offset = int(body.get("offset") or 0)
                req_epoch = str(body.get("epoch") or "")
                items = []
                if not req_epoch or req_epoch == stream.epoch:
                    items = stream.read(self._clock(), limit=limit, since=req_offset)
                recovered = is_recovered(items, req_offset, req_epoch, stream.epoch, stream.top)
                result["recovered"] = recovered
                if recovered:
                    result["publications"] = [orjson.Fragment(item.publication) for item in items]
        return result

    def unsubscribe(self, channel: str, body: dict[str, Any], origin: int) -> dict[str, Any]:
        """A subscriber on ``origin`` left (one-way notify)."""
        state = self._channels.get(channel)
        if state is None:
            return {}
        count = state.interest.get(origin, 0) - 1
        if count > 0:
            state.interest[origin] = count
        else:
            state.interest.pop(origin, None)
        client = str(body.get("client", ""))
        entry = state.presence.pop(client, None)
        opts = self._config.channel_options(channel)
        if opts is not None and opts.join_leave and client:
            info = entry[1] if entry else body.get("info") or {"user": body.get("user", ""), "client": client}
            push = encode_push(channel, "leave", orjson.dumps({"info": info}))
            self._fanout(channel, self._slots(state), 0, "", FLAG_JOIN_LEAVE, push)
        self._maybe_forget(channel, state)
        return {}

    def presence(self, channel: str, body: dict[str, Any], origin: int) -> dict[str, Any]:
        if not self._options(channel).presence:
            raise ERROR_NOT_AVAILABLE
        state = self._channels.get(channel)
        entries = state.presence if state else {}
        return {"presence": {client: info for client, (_, info) in entries.items()}}

    def presence_stats(self, channel: str, body: dict[str, Any], origin: int) -> dict[str, Any]:
        if not self._options(channel).presence:
            raise ERROR_NOT_AVAILABLE
        state = self._channels.get(channel)
        entries = state.presence if state else {}
        users = {str(info.get("user", "")) for _, info in entries.values()}
        return {"num_clients": len(entries), "num_users": len(users)}

    def history(self, channel: str, body: dict[str, Any], origin: int) -> dict[str, Any]:
        opts = self._options(channel)
        if not opts.history_enabled:
            raise ERROR_NOT_AVAILABLE
        state = self._channel(channel)
        stream = self._stream(channel, state, opts)
        limit = int(body.get("limit") or 0)
        since = body.get("since")
        since_offset: int | None = None
        if isinstance(since, dict):
            since_epoch = str(since.get("epoch") or "")
            if since_epoch and since_epoch != stream.epoch:
                raise ERROR_UNRECOVERABLE_POSITION
            since_offset = int(since.get("offset") or 0)
        items = stream.read(self._clock(), limit=limit, since=since_offset, reverse=bool(body.get("reverse")))
        return {
            "publications": [orjson.Fragment(item.publication) for item in items],
            "epoch": stream.epoch,
            "offset": stream.top,
        }

    def history_remove(self, channel: str, body: dict[str, Any], origin: int) -> dict[str, Any]:
        state = self._channels.get(channel)
        if state is not None and state.stream is not None:
            state.stream.clear()
        return {}

    _handlers: dict[str, Callable[[OwnerShard, str, dict[str, Any], int], dict[str, Any]]] = {
        "publish": publish,
        "subscribe": subscribe,
        "unsubscribe": unsubscribe,
        "presence": presence,
        "presence_stats": presence_stats,
        "history": history,
        "history_remove": history_remove,
    }

    # -- slot lifecycle -----------------------------------------------------------------------

    def forget_slot(self, slot: int) -> None:
        """Slot ``slot`` restarted: its subscribers and presence entries are gone everywhere."""
        for channel, state in list(self._channels.items()):
            state.interest.pop(slot, None)
            gone = [client for client, (origin, _) in state.presence.items() if origin == slot]
            opts = self._config.channel_options(channel)
            for client in gone:
                _, info = state.presence.pop(client)
                if opts is not None and opts.join_leave:
                    push = encode_push(channel, "leave", orjson.dumps({"info": info}))
                    self._fanout(channel, self._slots(state), 0, "", FLAG_JOIN_LEAVE, push)
            self._maybe_forget(channel, state)

    # -- reload handoff -------------------------------------------------------------------------

    def export_channels(self) -> list[tuple[str, dict[str, Any]]]:
        """Everything a successor needs to continue these streams exactly: epoch, top
        offset, retained publications, presence and which slots subscribe."""
        out = []
        now = self._clock()
        keys: dict[str, dict[str, Any]] = {}
        for (channel, key), (until, result) in self._idempotent.items():
            if until > now:
                keys.setdefault(channel, {})[key] = [until, result]
        for name, state in self._channels.items():
            doc: dict[str, Any] = {
                "presence": {client: [slot, info] for client, (slot, info) in state.presence.items()},
                "interest": {str(slot): n for slot, n in state.interest.items()},
                # Publish retries that straddle the handoff must not publish twice.
                "idempotent": keys.get(name, {}),
            }
            stream = state.stream
            if stream is not None:
                doc["stream"] = {
                    "epoch": stream.epoch, "top": stream.top, "size": stream.size, "ttl": stream.ttl,
                    "touched_at": stream.touched_at,
                    "items": [[i.offset, i.expires_at, i.publication.decode()] for i in stream.items()],
                }
            out.append((name, doc))
        return out

    def import_channel(self, name: str, doc: dict[str, Any]) -> None:
        state = self._channel(name)
        for key, (until, result) in doc.get("idempotent", {}).items():
            self._idempotent[(name, key)] = (float(until), result)
        for client, (slot, info) in doc.get("presence", {}).items():
            state.presence[client] = (int(slot), info)
        for slot, n in doc.get("interest", {}).items():
            if int(n) > 0:
                state.interest[int(slot)] = int(n)
        st = doc.get("stream")
        if st is not None:
            stream = Stream(st["epoch"], int(st["size"]), float(st["ttl"]), float(st["touched_at"]))
            stream.restore(int(st["top"]), [(int(o), float(e), p.encode()) for o, e, p in st["items"]])
            state.stream = stream

    def stats(self) -> dict[str, int]:
        return {"channels": len(self._channels)}
