"""Subscription planning and results, pure (PROTOCOL.md §1.11).

Which features a subscription gets (positioned, recoverable, join/leave pushes) follows
from the namespace options and what the client asked for; the SubscribeResult follows
from the owner's answer. Both client-side subscribes and server-side ones (the
connection token's ``channels`` claim) go through here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.config import ChannelOptions
from gateway.core.errors import ERROR_BAD_REQUEST, ERROR_UNRECOVERABLE_POSITION
from gateway.core.model import StreamOptions, StreamPosition, SubscribeAnswer, SubscribeRequest

__all__ = ["SubscribeParams", "plan", "result", "engine_request", "stream_options"]

_FLAG_REJECT_UNRECOVERED = 2


@dataclass(frozen=True, slots=True)
class SubscribeParams:
    channel: str
    positioned: bool
    recoverable: bool
    recover: bool
    offset: int
    epoch: str
    join_leave: bool
    reject_unrecovered: bool
    chan_info: bytes | None = None  # raw JSON
    expire_at: int | None = None
    server_refresh: bool = False  # expiry refreshed by a sub_refresh proxy: the client is not told
    delta: bool = False  # fossil deltas negotiated: asked for and allowed in the namespace


def plan(channel: str, opts: ChannelOptions, request: dict[str, Any], *, chan_info: bytes | None = None,
         expire_at: int | None = None, server_refresh: bool = False) -> SubscribeParams:
    """Decide the subscription's features from the namespace and the request.

    Raises:
        ClientError: 107 for a malformed recovery position.
    """
    history = opts.history_enabled
    recoverable = history and (opts.force_recovery or (opts.allow_recovery and bool(request.get("recoverable"))))
    positioned = recoverable or (history and (
        opts.force_positioning or (opts.allow_positioning and bool(request.get("positioned")))))
    offset = request.get("offset") or 0
    epoch = request.get("epoch") or ""
    flag = request.get("flag") or 0
    if type(offset) is not int or offset < 0 or not isinstance(epoch, str) or type(flag) is not int:
        raise ERROR_BAD_REQUEST
    return SubscribeParams(
        channel=channel,
        positioned=positioned,
        recoverable=recoverable,
        recover=recoverable and bool(request.get("recover")),
        offset=offset,
        epoch=epoch,
        join_leave=opts.join_leave and (opts.force_push_join_leave or bool(request.get("join_leave"))),
        reject_unrecovered=bool(flag & _FLAG_REJECT_UNRECOVERED),
        chan_info=chan_info,
        expire_at=expire_at,
        server_refresh=server_refresh,
        # A known type the namespace does not allow is not an error: Centrifugo subscribes
        # without deltas and leaves ``delta`` out of the reply (an unknown type is 3501,
        # refused before this).
        delta=bool(request.get("delta")) and request.get("delta") in opts.allowed_delta_types,
    )


def stream_options(opts: ChannelOptions, default_meta_ttl: float) -> StreamOptions | None:
    """A namespace's history settings for the engine (None without history)."""
    if not opts.history_enabled:
        return None
    return StreamOptions(opts.history_size, opts.history_ttl, opts.history_meta_ttl or default_meta_ttl)


def engine_request(params: SubscribeParams, stream: StreamOptions | None, recovery_limit: int,
                   max_bytes: int = 0) -> SubscribeRequest:
    """What the engine is asked for this subscription (``max_bytes``: what the recovered
    publications must fit, the connection's queue)."""
    since = StreamPosition(params.offset, params.epoch) if params.recover else None
    return SubscribeRequest(stream if params.positioned else None, params.positioned, params.recover, since,
                            recovery_limit, max_bytes)


def result(params: SubscribeParams, answer: SubscribeAnswer, now: float) -> dict[str, Any]:
    """The SubscribeResult for the client, from the engine's answer (``publications`` hold
    model values; the connection's codec encodes them).

    When recovered, ``offset`` is the client's own offset and the missed publications
    follow, so the SDK advances through them with no special case.

    Raises:
        ClientError: 112 when recovery failed and the client asked to be told (flag 2).
    """
    out: dict[str, Any] = {}
    if params.expire_at is not None and not params.server_refresh:
        out["expires"] = True
        out["ttl"] = max(1, int(params.expire_at - now))
    if params.recoverable:
        out["recoverable"] = True
    if params.delta:
        out["delta"] = True
    if params.positioned:
        out["positioned"] = True
        position = answer.position
        out["epoch"] = position.epoch if position else ""
        out["offset"] = position.offset if position else 0
    if params.recover:
        out["was_recovering"] = True
        if answer.recovered:
            out["recovered"] = True
            out["offset"] = params.offset
            if answer.publications:
                out["publications"] = answer.publications
        elif params.reject_unrecovered:
            raise ERROR_UNRECOVERABLE_POSITION
    return out
