"""The subscribe, sub_refresh and unsubscribe commands (PROTOCOL.md §1.4, §1.11):
permissions and subscription tokens; the subscription itself is
:meth:`gateway.session.session.Session.start_subscription`."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.config import ChannelOptions
from gateway.core import subscription
from gateway.core.errors import (
    DISCONNECT_INVALID_TOKEN,
    ERROR_ALREADY_SUBSCRIBED,
    ERROR_LIMIT_EXCEEDED,
    ERROR_PERMISSION_DENIED,
    ClientError,
    Disconnect,
)
from gateway.protocol.centrifuge_json import Command
from gateway.session.session import Session, SubStatus

__all__ = ["subscribe", "sub_refresh", "unsubscribe", "may_subscribe"]


def may_subscribe(session: Session, channel: str, opts: ChannelOptions) -> bool:
    """Whether a client may subscribe without a subscription token."""
    names = session.node.config.channel
    if names.private_prefix and channel.startswith(names.private_prefix):
        return False
    if names.user_boundary in channel and opts.allow_user_limited_channels:
        # dialog#42,43: only the listed users, whatever else the namespace allows
        # (channel.user_boundary "#" and channel.user_separator ",").
        users = channel.rsplit(names.user_boundary, 1)[1].split(names.user_separator)
        return bool(session.user) and session.user in users
    return opts.allow_subscribe_for_client and (bool(session.user) or opts.allow_subscribe_for_anonymous)


def subscribe(session: Session, cmd: Command) -> None:
    node = session.node
    channel = session.channel_of(cmd)
    body = cmd.body
    if body.get("delta"):
        raise Disconnect(3501, "bad request: delta not supported")
    opts = session.options_for(channel)
    if channel in session.subs:
        raise ERROR_ALREADY_SUBSCRIBED
    limit = node.config.client.channel_limit
    if limit and len(session.subs) >= limit:
        raise ERROR_LIMIT_EXCEEDED
    now = node.clock()
    chan_info: bytes | None = None
    expire_at: int | None = None
    token = body.get("token")
    if token:
        if not isinstance(token, str):
            raise ERROR_PERMISSION_DENIED
        creds = node.sub_verifier.verify_subscribe(token, now)
        if creds.channel != channel or creds.user != session.user:
            raise DISCONNECT_INVALID_TOKEN
        if creds.client and creds.client != session.client_id:
            raise DISCONNECT_INVALID_TOKEN
        chan_info = None if creds.info is None else orjson.dumps(creds.info)
        expire_at = creds.expire_at
    elif not may_subscribe(session, channel, opts):
        raise ERROR_PERMISSION_DENIED
    params = subscription.plan(channel, opts, body, chan_info=chan_info, expire_at=expire_at)

    def on_subscribed(result: dict[str, Any] | None, error: ClientError | None) -> None:
        if error is not None:
            session.fail(cmd, error)
        else:
            session.reply(cmd, result or {})

    session.start_subscription(params, opts, on_subscribed)


def sub_refresh(session: Session, cmd: Command) -> None:
    channel = session.channel_of(cmd)
    sub = session.subs.get(channel)
    if sub is None or sub.status is not SubStatus.SUBSCRIBED:
        raise ERROR_PERMISSION_DENIED
    token = cmd.body.get("token")
    if not isinstance(token, str) or not token:
        raise Disconnect(3501, "bad request: token required")
    now = session.node.clock()
    creds = session.node.sub_verifier.verify_subscribe(token, now)
    if creds.channel != channel or creds.user != session.user or (creds.client and creds.client != session.client_id):
        raise DISCONNECT_INVALID_TOKEN
    result: dict[str, Any] = {}
    session.refresh_sub_expiry(channel, creds.expire_at, now, result)
    session.reply(cmd, result)


def unsubscribe(session: Session, cmd: Command) -> None:
    channel = session.channel_of(cmd)
    session.drop_sub(channel)
    session.reply(cmd, {})
