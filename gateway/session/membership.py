"""A session's channel memberships: the subscription lifecycle (the engine's answer, then the
hub's fan-out at the answered position, presence and the join), subscription expiry and its
refresh, and leaving a channel.

:class:`Memberships` is a part of :class:`gateway.session.session.Session` (its base, with no
state of its own): the session's slots hold ``subs``, and the commands that reach these
methods (:mod:`.subscriptions`, :mod:`.server_subs`) keep calling them on the session.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Any, cast

from mypy_extensions import mypyc_attr

from gateway.core import delta, subscription
from gateway.core.errors import (
    ERROR_INTERNAL,
    UNSUBSCRIBE_EXPIRED,
    UNSUBSCRIBE_INSUFFICIENT_STATE,
    ClientError,
    Disconnect,
    Unsubscribe,
)
from gateway.core.model import ClientInfo, StreamOptions, StreamPosition, SubscribeAnswer
from gateway.core.wheel import Deadline
from gateway.protocol.codec import Codec

if TYPE_CHECKING:
    from gateway.config import ChannelOptions
    from gateway.node import Node
    from gateway.session.session import Handlers, Session

__all__ = ["Memberships", "Sub", "SubStatus", "SubscribeDone"]

#: ``done(result, None)`` with the SubscribeResult, or ``done(None, error)``.
SubscribeDone = Callable[[dict[str, Any] | None, ClientError | None], None]


class SubStatus(IntEnum):
    SUBSCRIBING = 0
    SUBSCRIBED = 1


@dataclass(slots=True)
class Sub:
    status: SubStatus
    positioned: bool
    chan_info: bytes | None
    expire_at: int | None = None
    timer: Deadline | None = None
    presence: bool = False  # added to the channel's presence (remove it on leaving)
    join_leave: bool = False  # the namespace emits join/leave
    server_refresh: bool = False  # expiry is refreshed through the namespace's sub_refresh proxy


# Compiled (tools/native.py), a native class must allow interpreted subclasses: SioSession
# subclasses Session in Python.
@mypyc_attr(allow_interpreted_subclasses=True)
class Memberships:
    """The subscription methods of :class:`~gateway.session.session.Session`."""

    __slots__ = ()

    # The session's attributes and methods these use. Declared for real, not under TYPE_CHECKING:
    # the compiled build (mypyc) lays the class out and dispatches through them. Session sets the
    # attributes (in its slots) and overrides every method below.
    node: Node
    subs: dict[str, Sub]
    codec: Codec
    handlers: Handlers
    client_id: str
    user: str
    push_now: Callable[[bytes], None] | None
    _queue_max: int

    @property
    def connected(self) -> bool:
        raise NotImplementedError

    def client_info(self, chan_info: bytes | None = None) -> ClientInfo:
        raise NotImplementedError

    def write_push(self, data: bytes) -> None:
        raise NotImplementedError

    def close(self, disconnect: Disconnect) -> None:
        raise NotImplementedError

    def server_subscribe(self, channel: str, request: dict[str, Any]) -> None:
        raise NotImplementedError

    def server_refresh(self, request: dict[str, Any]) -> None:
        raise NotImplementedError

    def stream_options(self, opts: ChannelOptions) -> StreamOptions | None:
        return subscription.stream_options(opts, self.node.config.channel.history_meta_ttl)

    def start_subscription(self, params: subscription.SubscribeParams, opts: ChannelOptions,
                           done: SubscribeDone) -> None:
        """Ask the engine, join the local fan-out at exactly the answered position, then
        enter the channel's presence and announce the join.

        ``done`` is called exactly once. A subscription dropped while the engine was
        answering (an unsubscribe or a disconnect came first) still gets its answer, as
        if the commands had run one after another, but is not registered anywhere.
        """
        node = self.node
        engine = node.engine
        channel = params.channel
        sub = Sub(SubStatus.SUBSCRIBING, params.positioned, params.chan_info, params.expire_at,
                   server_refresh=params.server_refresh)
        self.subs[channel] = sub
        request = subscription.engine_request(params, self.stream_options(opts),
                                              node.config.client.recovery_max_publication_limit, self._queue_max)

        def on_answer(answer: SubscribeAnswer | None, error: ClientError | None) -> None:
            try:
                answered(answer, error)
            finally:
                node.hub.end_subscribe(channel)

        def answered(answer: SubscribeAnswer | None, error: ClientError | None) -> None:
            live = self.subs.get(channel) is sub
            if error is not None or answer is None:
                if live:
                    del self.subs[channel]
                done(None, error or ERROR_INTERNAL)
                return
            try:
                result = subscription.result(params, answer, node.clock())
            except ClientError as exc:
                if live:
                    del self.subs[channel]
                engine.unsubscribe(channel)
                done(None, exc)
                return
            if not live:
                engine.unsubscribe(channel)  # the engine counted this subscriber: undo that
                done(result, None)
                return
            if params.expire_at is not None:
                self._schedule_sub_expiry(channel, sub, params.expire_at, node.clock())
            node.metrics.subscribed(params.recover, answer.recovered)
            sub.status = SubStatus.SUBSCRIBED
            position = answer.position
            if answer.recovered and position is not None:
                # Publications that arrived meanwhile join the recovered ones in the reply.
                merged = node.hub.arrived_after(channel, position)
                if merged:
                    result["publications"] = [*result.get("publications", ()), *merged]
                    position = StreamPosition(merged[-1].offset, position.epoch)
            last = None
            if params.delta and result.get("publications"):
                # Deltas from the first recovered publication on (Centrifugo does the same).
                pubs = result["publications"]
                last = pubs[-1]
                result["publications"] = delta.recovered(pubs, not self.codec.binary)
            # The reply (with any recovered publications) goes out first; then the hub adds
            # the subscriber and writes what arrived after the answered position meanwhile.
            done(result, None)
            if self.subs.get(channel) is not sub:
                return  # the reply closed the connection (or left the channel): drop_sub undid it
            node.hub.subscribe(channel, self, params.join_leave, position, params.delta, last)
            info = self.client_info(params.chan_info)
            if opts.presence:
                sub.presence = True
                engine.add_presence(channel, info)
            if opts.join_leave:
                sub.join_leave = True
                engine.publish_join(channel, info)
            events = node.events
            if events is not None and events.join_leave:
                events.join(channel, info)

        node.hub.begin_subscribe(channel)
        engine.subscribe(channel, request, on_answer)

    def _check_sub_expired(self, channel: str) -> None:
        sub = self.subs.get(channel)
        if sub is not None and sub.expire_at is not None and sub.expire_at <= self.node.clock():
            self.server_unsubscribe(channel, UNSUBSCRIBE_EXPIRED)

    def _schedule_sub_expiry(self, channel: str, sub: Sub, expire_at: int, now: float) -> None:
        if sub.server_refresh and self.handlers.proxy_sub_refresh is not None:
            sub.timer = self.node.timers.call_later(max(0.0, expire_at - now), self._sub_refresh_due, channel)
            return
        delay = expire_at - now + self.node.config.client.expired_sub_close_delay
        sub.timer = self.node.timers.call_later(max(0.0, delay), self._check_sub_expired, channel)

    def _sub_refresh_due(self, channel: str) -> None:
        sub = self.subs.get(channel)
        if sub is None or not self.connected or self.handlers.proxy_sub_refresh is None:
            return
        sub.timer = None
        # The proxy call acts on the whole session (this class is only its subscription part).
        self.handlers.proxy_sub_refresh(cast("Session", self), channel)

    def refresh_sub_expiry(self, channel: str, expire_at: int | None, now: float, result: dict[str, Any]) -> None:
        sub = self.subs[channel]
        sub.expire_at = expire_at
        if sub.timer is not None:
            sub.timer.cancel()
            sub.timer = None
        if expire_at is not None:
            if not sub.server_refresh:
                result["expires"] = True
                result["ttl"] = max(1, int(expire_at - now))
            self._schedule_sub_expiry(channel, sub, expire_at, now)

    def drop_sub(self, channel: str) -> bool:
        """Leave ``channel``: local fan-out, engine interest, presence, a leave push."""
        sub = self.subs.pop(channel, None)
        if sub is None:
            return False
        if sub.timer is not None:
            sub.timer.cancel()
        if sub.status is SubStatus.SUBSCRIBED:
            engine = self.node.engine
            self.node.hub.unsubscribe(channel, self)
            engine.unsubscribe(channel)
            if sub.presence:
                engine.remove_presence(channel, self.client_id, self.user)
            if sub.join_leave:
                engine.publish_leave(channel, self.client_info(sub.chan_info))
            events = self.node.events
            if events is not None and events.join_leave:
                events.leave(channel, self.client_info(sub.chan_info))
        return True

    def server_unsubscribe(self, channel: str, reason: Unsubscribe) -> None:
        """Drop a subscription and tell the client (a 2xxx unsubscribe push)."""
        if self.drop_sub(channel):
            self.write_push(self.codec.encode_push(channel, "unsubscribe",
                                                   {"code": reason.code, "reason": reason.reason}))

    def on_stream_gap(self, channel: str) -> None:
        sub = self.subs.get(channel)
        if sub is not None and sub.positioned:
            self.server_unsubscribe(channel, UNSUBSCRIBE_INSUFFICIENT_STATE)

    def is_subscribed(self, channel: str) -> bool:
        sub = self.subs.get(channel)
        return sub is not None and sub.status is SubStatus.SUBSCRIBED

    def chan_info(self, channel: str) -> bytes | None:
        sub = self.subs.get(channel)
        return sub.chan_info if sub is not None else None
