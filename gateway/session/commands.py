"""Channel and application commands: publish, presence, history, rpc, send.

Handlers take the :class:`gateway.session.session.Session` that received the command; they check
permissions from the namespace options and hand the work to the channel's owner (or to
the RPC registry). Errors are raised and classified by ``Session.fail``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from gateway.core.errors import (
    DISCONNECT_NOT_AVAILABLE,
    ERROR_BAD_REQUEST,
    ERROR_METHOD_NOT_FOUND,
    ERROR_NOT_AVAILABLE,
    ERROR_PERMISSION_DENIED,
)
from gateway.core.history import history_request
from gateway.protocol.centrifuge_json import Command
from gateway.session.rpc import RpcContext

if TYPE_CHECKING:
    from gateway.session.session import Session

__all__ = ["allowed", "history", "presence", "publish", "rpc", "send"]


def allowed(session: Session, channel: str, for_subscriber: bool, for_client: bool, for_anonymous: bool) -> bool:
    if for_subscriber and session.is_subscribed(channel):
        return True
    return for_client and (bool(session.user) or for_anonymous)


def publish(session: Session, cmd: Command) -> None:
    channel = session.channel_of(cmd)
    opts = session.options_for(channel)
    if not allowed(
        session,
        channel,
        opts.allow_publish_for_subscriber,
        opts.allow_publish_for_client,
        opts.allow_publish_for_anonymous,
    ):
        raise ERROR_PERMISSION_DENIED
    if "data" not in cmd.body:
        raise ERROR_BAD_REQUEST
    sub = session.subs.get(channel)
    request = {
        "channel": channel,
        "data": cmd.body["data"],
        "info": session.client_info(sub.chan_info if sub else None),
    }
    session.owner_call(cmd, channel, request, lambda res: session.reply(cmd, {}))


def _require(session: Session, channel: str, enabled: bool, for_subscriber: bool, for_client: bool,
             for_anonymous: bool) -> None:
    """A feature must be on in the namespace (108) and open to this client (103)."""
    if not enabled:
        raise ERROR_NOT_AVAILABLE
    if not allowed(session, channel, for_subscriber, for_client, for_anonymous):
        raise ERROR_PERMISSION_DENIED


def presence(session: Session, cmd: Command) -> None:
    channel = session.channel_of(cmd)
    opts = session.options_for(channel)
    _require(session, channel, opts.presence, opts.allow_presence_for_subscriber, opts.allow_presence_for_client,
             opts.allow_presence_for_anonymous)
    session.owner_call(cmd, channel, {"channel": channel}, lambda res: session.reply(cmd, res))


def history(session: Session, cmd: Command) -> None:
    channel = session.channel_of(cmd)
    opts = session.options_for(channel)
    _require(session, channel, opts.history_enabled, opts.allow_history_for_subscriber,
             opts.allow_history_for_client, opts.allow_history_for_anonymous)
    max_limit = session.node.config.client.history_max_publication_limit
    request = history_request(channel, cmd.body, max_limit)
    session.owner_call(cmd, channel, request, lambda res: session.reply(cmd, res))


# -- rpc and send ---------------------------------------------------------------------------


def rpc(session: Session, cmd: Command) -> None:
    method = cmd.body.get("method", "")
    handler = session.node.rpc.get(method) if isinstance(method, str) else None
    if handler is None:
        raise ERROR_METHOD_NOT_FOUND
    ctx = RpcContext(session.client_id, session.user, session.conn_info)
    result = handler(ctx, cmd.body.get("data"))
    if hasattr(result, "__await__"):  # a coroutine or future: finish it without blocking the loop
        task = asyncio.ensure_future(result)
        task.add_done_callback(lambda t: _rpc_done(session, cmd, t))
        return
    session.reply(cmd, {"data": result} if result is not None else {})


def _rpc_done(session: Session, cmd: Command, task: asyncio.Future[Any]) -> None:
    if session.closed:
        return
    exc = task.exception()
    if exc is not None:
        session.fail(cmd, exc)
        return
    result = task.result()
    session.reply(cmd, {"data": result} if result is not None else {})


def send(session: Session, cmd: Command) -> None:
    handler = session.node.message_handler
    if handler is None:
        raise DISCONNECT_NOT_AVAILABLE
    handler(session, cmd.body.get("data"))
