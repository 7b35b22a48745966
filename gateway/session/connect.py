"""The connect and refresh commands (PROTOCOL.md §1.3, §1.10): credentials, identity,
expiry, pings, and the token's server-side channels."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway import __version__
from gateway.auth import ConnectCredentials
from gateway.config import ProxyEndpoint
from gateway.core.errors import (
    DISCONNECT_CHANNEL_LIMIT,
    DISCONNECT_CONNECTION_LIMIT,
    DISCONNECT_EXPIRED,
    DISCONNECT_INVALID_TOKEN,
    ClientError,
    Disconnect,
)
from gateway.protocol.centrifuge_json import Command
from gateway.proxy.messages import ConnectResult, RefreshResult, SubGrant
from gateway.proxy.service import ProxyClient
from gateway.session import server_subs
from gateway.session.session import Session, State

__all__ = ["connect", "proxy_refresh", "refresh"]


_ANONYMOUS = ConnectCredentials(user="", expire_at=None, info=None, channels=(), meta=None)
_NO_CREDENTIALS = Disconnect(3501, "bad request: client credentials not found")


def connect(session: Session, cmd: Command) -> None:
    """A token is verified here; without one, ``client.proxy.connect`` (when enabled) asks the
    backend, else an anonymous connect is allowed or refused."""
    node = session.node
    cfg = node.config.client
    token = cmd.body.get("token")
    if token:
        if not isinstance(token, str):
            raise DISCONNECT_INVALID_TOKEN
        _accept(session, cmd, node.verifier.verify_connect(token, node.clock()))
    elif cfg.connect_proxy is not None and node.proxy is not None:
        _connect_by_proxy(session, cmd, cfg.connect_proxy, node.proxy)
    elif cfg.allow_anonymous_connect_without_token:
        _accept(session, cmd, _ANONYMOUS)
    else:
        raise _NO_CREDENTIALS


def _connect_by_proxy(session: Session, cmd: Command, proxy: ProxyEndpoint, client: ProxyClient) -> None:
    """Ask the connect proxy; its answer (after this returns) accepts or refuses the connect.

    The client id is chosen now, as Centrifugo does, so the backend sees the id the client
    will get. A connection closed while the backend answers is forgotten (the call cancelled)."""
    node = session.node
    session.client_id = node.new_client_id()
    headers = cmd.body.get("headers")
    if isinstance(headers, dict) and node.proxy_emulated_headers:
        session.emulated_headers = {str(k): v for k, v in headers.items() if isinstance(v, str)}

    def done(result: ConnectResult | None, error: ClientError | Disconnect | None) -> None:
        if session.closed:
            return
        try:
            if error is not None:
                raise error
            if result is None:
                if not node.config.client.allow_anonymous_connect_without_token:
                    raise _NO_CREDENTIALS
                _accept(session, cmd, _ANONYMOUS)
                return
            for channel in result.subs:
                node.resolve_channel(channel)  # 102 for a channel no namespace allows, as Centrifugo
            creds = ConnectCredentials(user=result.user, expire_at=result.expire_at, info=result.info,
                                       channels=tuple(result.subs), meta=result.meta)
            _accept(session, cmd, creds, data=result.data, grants=result.subs)
        except Exception as exc:
            session.fail(cmd, exc)

    session.proxy_call(lambda answer: client.connect(proxy, session.proxy_conn(), cmd.body, answer), done)


def _accept(session: Session, cmd: Command, creds: ConnectCredentials, *, data: Any = None,
            grants: Mapping[str, SubGrant] | None = None) -> None:
    """Everything that can refuse the connection (limits) runs before anything is registered:
    a refused connect leaves no hub entry and no connected count behind. ``data`` and
    ``grants`` come from a connect proxy (the reply's ``data``; per-channel info and data)."""
    node = session.node
    cfg = node.config.client
    now = node.clock()
    limit = node.connection_limit
    if limit and len(node.hub.clients) >= limit:
        raise DISCONNECT_CONNECTION_LIMIT
    # client.user_connection_limit: counted in this worker (a user's connections are not
    # routed to one worker, so with N workers one user may hold up to N x the limit).
    user_limit = cfg.user_connection_limit
    if user_limit and creds.user and len(node.hub.user_client_ids(creds.user)) >= user_limit:
        raise DISCONNECT_CONNECTION_LIMIT
    if cfg.channel_limit and len(creds.channels) > cfg.channel_limit:
        raise DISCONNECT_CHANNEL_LIMIT
    session.set_conn_info(creds.info)
    # Nothing below refuses the connection: register it.
    if session.stale_timer is not None:
        session.stale_timer.cancel()
        session.stale_timer = None
    if not session.client_id:
        session.client_id = node.new_client_id()
    session.user = creds.user
    session.meta = creds.meta
    session.state = State.CONNECTED
    node.hub.add_client(session)
    node.metrics.connected()
    result: dict[str, Any] = {"client": session.client_id, "version": __version__}
    session.set_expiry(creds.expire_at, now, result)
    if cfg.ping_interval > 0:
        result["ping"] = max(1, round(cfg.ping_interval))
        if not session.unidirectional:
            result["pong"] = True
        session.start_pings()
    if cfg.connect_include_server_time:
        result["time"] = int(now * 1000)
    if data is not None:
        result["data"] = data
    if session.connect_extra:
        result.update(session.connect_extra)  # session/node of an emulated connection
    channels = creds.channels
    personal = node.config.personal_channel_of(creds.user) if creds.user else None
    if personal is not None:
        channels = (*channels, personal)  # Centrifugo's subscribe_to_user_personal_channel
    if channels:
        server_subs.subscribe_on_connect(session, cmd, channels, result, grants)
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


# Centrifugo gives a connection whose refresh proxy failed one more minute before asking again.
REFRESH_RETRY_DELAY = 60


def proxy_refresh(session: Session) -> None:
    """The connection reached its expiry with ``client.proxy.refresh`` on: the backend extends
    it (new expire_at, info, meta), ends it (``expired``: disconnect 3005), or disconnects it;
    a failed call gives it :data:`REFRESH_RETRY_DELAY` more seconds."""
    node = session.node
    proxy = node.config.client.refresh_proxy
    client = node.proxy
    if proxy is None or client is None:
        return

    def done(result: RefreshResult | None, error: ClientError | Disconnect | None) -> None:
        if not session.connected:
            return
        now = node.clock()
        if isinstance(error, Disconnect):
            session.close(error)
            return
        if error is not None or result is None:
            session.set_expiry(int(now) + REFRESH_RETRY_DELAY, now, {})
            return
        if result.expired:
            session.close(DISCONNECT_EXPIRED)
            return
        if result.has_info:
            session.set_conn_info(result.info)
        if result.meta is not None:
            session.meta = result.meta
        session.set_expiry(result.expire_at, now, {})

    session.proxy_call(lambda answer: client.refresh(proxy, session.proxy_conn(), answer), done)
