"""The subscribe, sub_refresh and unsubscribe commands (PROTOCOL.md §1.4, §1.11):
permissions and subscription tokens; the subscription itself is
:meth:`gateway.session.membership.Memberships.start_subscription`."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.config import DELTA_TYPES, ChannelOptions, ProxyEndpoint
from gateway.core import subscription
from gateway.core.errors import (
    DISCONNECT_INVALID_TOKEN,
    ERROR_ALREADY_SUBSCRIBED,
    ERROR_LIMIT_EXCEEDED,
    ERROR_PERMISSION_DENIED,
    UNSUBSCRIBE_EXPIRED,
    ClientError,
    Disconnect,
)
from gateway.protocol.centrifuge_json import Command
from gateway.proxy.messages import SubRefreshResult, SubscribeResult
from gateway.proxy.service import ProxyClient
from gateway.session import server_subs
from gateway.session.membership import SubStatus
from gateway.session.session import Session

__all__ = ["subscribe", "sub_refresh", "unsubscribe", "may_subscribe", "proxy_sub_refresh"]


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
    kind = body.get("delta")
    if kind and kind not in DELTA_TYPES:
        raise Disconnect(3501, "bad request: unknown delta type")
    opts = session.options_for(channel)
    if channel in session.subs or (session.proxy_subscribing and channel in session.proxy_subscribing):
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
    elif opts.subscribe_proxy is not None and node.proxy is not None and _proxied(session, channel, opts):
        _subscribe_by_proxy(session, cmd, channel, opts, opts.subscribe_proxy, node.proxy)
        return
    elif not may_subscribe(session, channel, opts):
        raise ERROR_PERMISSION_DENIED
    params = subscription.plan(channel, opts, body, chan_info=chan_info, expire_at=expire_at)

    def on_subscribed(result: dict[str, Any] | None, error: ClientError | None) -> None:
        if error is not None:
            session.fail(cmd, error)
        else:
            session.reply(cmd, result or {})

    session.start_subscription(params, opts, on_subscribed)


def _proxied(session: Session, channel: str, opts: ChannelOptions) -> bool:
    """Centrifugo asks the subscribe proxy for any channel but a private one (``$``, which
    needs a token) and a user-limited one (``#``, decided by the user list)."""
    names = session.node.config.channel
    if names.private_prefix and channel.startswith(names.private_prefix):
        return False
    return not (names.user_boundary in channel and opts.allow_user_limited_channels)


def _subscribe_by_proxy(session: Session, cmd: Command, channel: str, opts: ChannelOptions,
                        proxy: ProxyEndpoint, client: ProxyClient) -> None:
    """The backend decides: its result may set expire_at (refreshed by the namespace's
    sub_refresh proxy when enabled, else by the client), the subscriber's info, the reply's
    data, and override presence/join_leave/recovery/positioning."""
    if session.proxy_subscribing is None:
        session.proxy_subscribing = set()
    pending = session.proxy_subscribing
    pending.add(channel)
    body = cmd.body

    def done(result: SubscribeResult | None, error: ClientError | Disconnect | None) -> None:
        pending.discard(channel)
        if session.closed:
            return
        try:
            if error is not None:
                raise error
            assert result is not None
            limit = session.node.config.client.channel_limit
            if channel in session.subs:
                raise ERROR_ALREADY_SUBSCRIBED
            if limit and len(session.subs) >= limit:
                raise ERROR_LIMIT_EXCEEDED
            sub_opts = server_subs.apply_override(opts, result.override)
            params = subscription.plan(channel, sub_opts, body,
                                       chan_info=None if result.info is None else orjson.dumps(result.info),
                                       expire_at=result.expire_at,
                                       server_refresh=opts.sub_refresh_proxy is not None)
        except Exception as exc:
            session.fail(cmd, exc)
            return

        def on_subscribed(reply: dict[str, Any] | None, err: ClientError | None) -> None:
            if err is not None:
                session.fail(cmd, err)
                return
            reply = reply or {}
            if result.data is not None:
                reply["data"] = result.data
            session.reply(cmd, reply)

        session.start_subscription(params, sub_opts, on_subscribed)

    session.proxy_call(lambda answer: client.subscribe(proxy, session.proxy_conn(), channel, body, answer), done)


# Centrifugo gives a subscription whose sub_refresh proxy failed one more minute.
SUB_REFRESH_RETRY_DELAY = 60


def proxy_sub_refresh(session: Session, channel: str) -> None:
    """A proxied subscription reached its expiry and its namespace's sub_refresh proxy decides:
    extend it (new expire_at and info), end it (``expired``: unsubscribe push 2501) or
    disconnect; a failed call gives it :data:`SUB_REFRESH_RETRY_DELAY` more seconds."""
    node = session.node
    try:
        opts = node.resolve_channel(channel)
    except ClientError:
        return
    proxy = opts.sub_refresh_proxy
    client = node.proxy
    if proxy is None or client is None:
        return

    def done(result: SubRefreshResult | None, error: ClientError | Disconnect | None) -> None:
        sub = session.subs.get(channel)
        if not session.connected or sub is None:
            return
        now = node.clock()
        if isinstance(error, Disconnect):
            session.close(error)
            return
        if error is not None or result is None:
            session.refresh_sub_expiry(channel, int(now) + SUB_REFRESH_RETRY_DELAY, now, {})
            return
        if result.expired:
            session.server_unsubscribe(channel, UNSUBSCRIBE_EXPIRED)
            return
        if result.has_info:
            sub.chan_info = None if result.info is None else orjson.dumps(result.info)
        session.refresh_sub_expiry(channel, result.expire_at, now, {})

    session.proxy_call(lambda answer: client.sub_refresh(proxy, session.proxy_conn(), channel, answer), done)


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
