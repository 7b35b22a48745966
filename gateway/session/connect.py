"""The connect and refresh commands (PROTOCOL.md §1.3, §1.10): credentials, identity,
expiry, pings, and the token's server-side channels."""

from __future__ import annotations

from typing import Any

from gateway import __version__
from gateway.auth import ConnectCredentials
from gateway.core.errors import (
    DISCONNECT_CHANNEL_LIMIT,
    DISCONNECT_CONNECTION_LIMIT,
    DISCONNECT_INVALID_TOKEN,
    Disconnect,
)
from gateway.protocol.centrifuge_json import Command
from gateway.session import server_subs
from gateway.session.session import Session, State

__all__ = ["connect", "refresh"]


def connect(session: Session, cmd: Command) -> None:
    """Everything that can refuse the connection (token, limits) runs before anything is
    registered: a refused connect leaves no hub entry and no connected count behind."""
    node = session.node
    cfg = node.config.client
    token = cmd.body.get("token")
    now = node.clock()
    if token:
        if not isinstance(token, str):
            raise DISCONNECT_INVALID_TOKEN
        creds = node.verifier.verify_connect(token, now)
    elif cfg.allow_anonymous_connect_without_token:
        creds = ConnectCredentials(user="", expire_at=None, info=None, channels=(), meta=None)
    else:
        raise Disconnect(3501, "bad request: client credentials not found")
    limit = node.connection_limit
    if limit and len(node.hub.clients) >= limit:
        raise DISCONNECT_CONNECTION_LIMIT
    # client.user_connection_limit: counted in this worker (a user's connections are not
    # routed to one worker, so with N workers one user may hold up to N x the limit).
    user_limit = cfg.user_connection_limit
    if user_limit and creds.user and len(node.hub.users.get(creds.user, ())) >= user_limit:
        raise DISCONNECT_CONNECTION_LIMIT
    if cfg.channel_limit and len(creds.channels) > cfg.channel_limit:
        raise DISCONNECT_CHANNEL_LIMIT
    session.set_conn_info(creds.info)
    # Nothing below refuses the connection: register it.
    if session.stale_timer is not None:
        session.stale_timer.cancel()
        session.stale_timer = None
    session.client_id = node.new_client_id()
    session.user = creds.user
    session.state = State.CONNECTED
    node.hub.add_client(session)
    node.metrics.connected()
    result: dict[str, Any] = {"client": session.client_id, "version": __version__}
    session.set_expiry(creds.expire_at, now, result)
    if cfg.ping_interval > 0:
        result["ping"] = max(1, round(cfg.ping_interval))
        result["pong"] = True
        session.start_pings()
    if cfg.connect_include_server_time:
        result["time"] = int(now * 1000)
    channels = creds.channels
    personal = node.config.personal_channel_of(creds.user) if creds.user else None
    if personal is not None:
        channels = (*channels, personal)  # Centrifugo's subscribe_to_user_personal_channel
    if channels:
        server_subs.subscribe_on_connect(session, cmd, channels, result)
    else:
        session.reply(cmd, result)


def refresh(session: Session, cmd: Command) -> None:
    token = cmd.body.get("token")
    if not isinstance(token, str) or not token:
        raise Disconnect(3501, "bad request: token required")
    now = session.node.clock()
    creds = session.node.verifier.verify_connect(token, now)
    if creds.user != session.user:
        raise DISCONNECT_INVALID_TOKEN
    result: dict[str, Any] = {"client": session.client_id, "version": __version__}
    session.set_expiry(creds.expire_at, now, result)
    if creds.info is not None:
        session.set_conn_info(creds.info)
    session.reply(cmd, result)
