"""Server-side subscriptions: from the connection token's ``channels`` claim (answered in
the connect reply's ``subs``) and from the server API (announced by ``subscribe`` pushes).

Both go through :meth:`gateway.session.membership.Memberships.start_subscription`, like
client-side subscribes, so they get the same positions, recovery, presence and join/leave.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Mapping
from typing import Any

import orjson

from gateway.config import ChannelOptions
from gateway.core import subscription
from gateway.core.errors import DISCONNECT_CHANNEL_LIMIT, DISCONNECT_INTERNAL, ClientError
from gateway.protocol.codec import Command
from gateway.proxy.messages import SubGrant
from gateway.session.session import Session

__all__ = ["apply_override", "subscribe_from_api", "subscribe_on_connect"]

log = logging.getLogger("shardgate.client")


def subscribe_on_connect(session: Session, cmd: Command, channels: tuple[str, ...], result: dict[str, Any],
                         grants: Mapping[str, SubGrant] | None = None) -> None:
    """Subscribe the token's ``channels`` claim (or the connect proxy's ``channels`` and
    ``subs``), then reply to connect with ``subs``. A proxy's grant adds the subscriber's
    ``chan_info``, the entry's ``data`` and overrides of the namespace's options.

    Pushes for those channels can arrive before every owner has answered; they are
    held back until the connect reply is written, because an SDK only routes a push
    for a server-side channel it learned about from that reply.
    """
    node = session.node  # connect() has checked client.channel_limit
    recovery = cmd.body.get("subs")
    if not isinstance(recovery, dict):
        recovery = {}
    plans = []
    for channel in dict.fromkeys(channels):
        try:
            opts = node.resolve_channel(channel)
        except ClientError:
            log.warning("client %s: skipping server-side channel %r (unknown or invalid)", session.client_id, channel)
            continue
        request = recovery.get(channel)
        grant = grants.get(channel) if grants else None
        chan_info = None
        if grant is not None:
            opts = apply_override(opts, grant.override)
            chan_info = None if grant.info is None else orjson.dumps(grant.info)
        plans.append((subscription.plan(channel, opts, request if isinstance(request, dict) else {},
                                        chan_info=chan_info), opts))
    subs: dict[str, Any] = {}
    waiting = len(plans)
    session.hold_pushes()

    def on_subscribed(channel: str, sub_result: dict[str, Any] | None, error: ClientError | None) -> None:
        nonlocal waiting
        if session.closed:
            return
        if error is not None:
            log.warning("client %s: server-side subscribe to %r failed: %s", session.client_id, channel, error)
            session.close(DISCONNECT_INTERNAL)
            return
        subs[channel] = sub_result or {}
        grant = grants.get(channel) if grants else None
        if grant is not None and grant.data is not None:
            subs[channel]["data"] = grant.data
        waiting -= 1
        if waiting == 0:
            if subs:
                result["subs"] = subs
            session.reply(cmd, result)
            session.release_pushes()

    if not plans:
        session.release_pushes()
        session.reply(cmd, result)
        return
    for params, opts in plans:
        session.start_subscription(params, opts, functools.partial(on_subscribed, params.channel))


def apply_override(opts: ChannelOptions, override: Mapping[str, bool]) -> ChannelOptions:
    """A proxy's ``override`` of presence, join_leave, force_push_join_leave, force_recovery
    and force_positioning for one subscription (recovery and positioning need history)."""
    if not override:
        return opts
    changes: dict[str, Any] = {key: value for key, value in override.items() if key in _OVERRIDABLE}
    return dataclasses.replace(opts, **changes)


_OVERRIDABLE = frozenset({"presence", "join_leave", "force_push_join_leave", "force_recovery",
                          "force_positioning"})


def subscribe_from_api(session: Session, channel: str, request: dict[str, Any]) -> None:
    """A subscription made by the server API (``/api/subscribe``): the client learns of it
    from a ``subscribe`` push, followed by any publications it recovered."""
    node = session.node
    if not session.connected or channel in session.subs:
        return
    try:
        opts = node.resolve_channel(channel)
    except ClientError:
        log.warning("client %s: server subscribe to unknown or invalid channel %r", session.client_id, channel)
        return
    limit = node.config.client.channel_limit
    if limit and len(session.subs) >= limit:
        session.close(DISCONNECT_CHANNEL_LIMIT)
        return
    since = request.get("recover_since")
    wanted: dict[str, Any] = {}
    if isinstance(since, dict):
        wanted = {"recover": True, "offset": since.get("offset") or 0, "epoch": since.get("epoch") or ""}
    expire_at = request.get("expire_at")
    info = request.get("info")
    try:
        params = subscription.plan(
            channel,
            opts,
            wanted,
            chan_info=None if info is None else orjson.dumps(info),
            expire_at=expire_at if type(expire_at) is int and expire_at > 0 else None,
        )
    except ClientError:
        log.warning("client %s: bad recover_since for %r", session.client_id, channel)
        return
    data = request.get("data")

    def done(result: dict[str, Any] | None, error: ClientError | None) -> None:
        if error is not None or result is None:
            log.warning("client %s: server subscribe to %r failed: %s", session.client_id, channel, error)
            return
        if not session.is_subscribed(channel):
            return  # unsubscribed or disconnected while the engine answered
        keys = ("recoverable", "epoch", "offset", "positioned")
        push: dict[str, Any] = {k: result[k] for k in keys if k in result}
        if data is not None:
            push["data"] = data
        session.write_push(session.codec.encode_push(channel, "subscribe", push))
        for pub in result.get("publications") or ():
            session.write_push(session.codec.publication_push(channel, pub))

    session.start_subscription(params, opts, done)
