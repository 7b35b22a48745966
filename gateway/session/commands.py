"""Channel and application commands: publish, presence, history, rpc, send.

Handlers take the :class:`gateway.session.session.Session` that received the command;
they check permissions from the namespace options and hand the work to the engine (or to
the RPC registry). Errors are raised and classified by ``Session.fail``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from gateway.config import ChannelOptions, ProxyEndpoint
from gateway.core.errors import (
    DISCONNECT_NOT_AVAILABLE,
    ERROR_BAD_REQUEST,
    ERROR_METHOD_NOT_FOUND,
    ERROR_NOT_AVAILABLE,
    ERROR_PERMISSION_DENIED,
    ClientError,
    Disconnect,
)
from gateway.core.history import history_filter
from gateway.core.model import (
    ClientInfo,
    HistoryResult,
    PresenceStats,
    Publication,
    PublishOptions,
    StreamPosition,
)
from gateway.protocol.centrifuge_json import Command
from gateway.proxy.messages import PublishResult, RpcResult
from gateway.proxy.service import ProxyClient
from gateway.session.rpc import RpcContext
from gateway.session.session import Session

__all__ = ["allowed", "history", "presence", "publish", "rpc", "send"]


def allowed(session: Session, channel: str, for_subscriber: bool, for_client: bool, for_anonymous: bool) -> bool:
    if for_subscriber and session.is_subscribed(channel):
        return True
    return for_client and (bool(session.user) or for_anonymous)


def publish(session: Session, cmd: Command) -> None:
    channel = session.channel_of(cmd)
    opts = session.options_for(channel)
    proxy = opts.publish_proxy
    client = session.node.proxy
    if proxy is not None and client is not None:
        _publish_by_proxy(session, cmd, channel, opts, proxy, client)
        return
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
    try:
        data = orjson.dumps(cmd.body["data"])
    except orjson.JSONEncodeError:
        raise ERROR_BAD_REQUEST from None
    pub = Publication(data, session.client_info(session.chan_info(channel)), delta=opts.delta_publish)
    session.node.engine.publish(channel, pub, PublishOptions(session.stream_options(opts)),
                                session.answer(cmd, lambda position: _published(session, cmd, channel, pub, position)))


def _publish_by_proxy(session: Session, cmd: Command, channel: str, opts: ChannelOptions, proxy: ProxyEndpoint,
                      client: ProxyClient) -> None:
    """The backend decides instead of the namespace's allow_publish_* options (as in Centrifugo):
    it may refuse (error or disconnect), replace the data, or keep the publication out of the
    history (``skip_history``)."""
    if "data" not in cmd.body:
        raise ERROR_BAD_REQUEST
    data = cmd.body["data"]

    def done(result: PublishResult | None, error: ClientError | Disconnect | None) -> None:
        if session.closed:
            return
        try:
            if error is not None:
                raise error
            assert result is not None
            raw = orjson.dumps(result.data if result.has_data else data)
        except orjson.JSONEncodeError:
            session.fail(cmd, ERROR_BAD_REQUEST)
            return
        except Exception as exc:
            session.fail(cmd, exc)
            return
        stream = None if result.skip_history else session.stream_options(opts)
        pub = Publication(raw, session.client_info(session.chan_info(channel)), delta=opts.delta_publish)
        answer = session.answer(cmd, lambda position: _published(session, cmd, channel, pub, position))
        session.node.engine.publish(channel, pub, PublishOptions(stream), answer)

    session.proxy_call(lambda answer: client.publish(proxy, session.proxy_conn(), channel, data, answer), done)


def _published(session: Session, cmd: Command, channel: str, pub: Publication, position: StreamPosition) -> None:
    session.reply(cmd, {})
    events = session.node.events
    if events is not None:
        events.publication(channel, pub.data, pub.info, position.offset)


def _require(session: Session, channel: str, enabled: bool, for_subscriber: bool, for_client: bool,
             for_anonymous: bool) -> None:
    """A feature must be on in the namespace (108) and open to this client (103)."""
    if not enabled:
        raise ERROR_NOT_AVAILABLE
    if not allowed(session, channel, for_subscriber, for_client, for_anonymous):
        raise ERROR_PERMISSION_DENIED


def presence(session: Session, cmd: Command) -> None:
    """``presence`` and ``presence_stats``."""
    channel = session.channel_of(cmd)
    opts = session.options_for(channel)
    _require(session, channel, opts.presence, opts.allow_presence_for_subscriber, opts.allow_presence_for_client,
             opts.allow_presence_for_anonymous)
    engine = session.node.engine
    if cmd.method == "presence_stats":
        engine.presence_stats(channel, session.answer(cmd, lambda stats: _stats(session, cmd, stats)))
    else:
        engine.presence(channel, session.answer(cmd, lambda entries: _presence(session, cmd, entries)))


def _presence(session: Session, cmd: Command, entries: dict[str, ClientInfo]) -> None:
    session.reply(cmd, {"presence": entries})


def _stats(session: Session, cmd: Command, stats: PresenceStats) -> None:
    session.reply(cmd, {"num_clients": stats.num_clients, "num_users": stats.num_users})


def history(session: Session, cmd: Command) -> None:
    channel = session.channel_of(cmd)
    opts = session.options_for(channel)
    _require(session, channel, opts.history_enabled, opts.allow_history_for_subscriber,
             opts.allow_history_for_client, opts.allow_history_for_anonymous)
    filter = history_filter(cmd.body, session.node.config.client.history_max_publication_limit,
                            max_bytes=session.node.config.client.queue_max_size)
    stream = session.stream_options(opts)
    assert stream is not None  # history_enabled
    session.node.engine.history(channel, filter, stream,
                                session.answer(cmd, lambda result: session.reply(cmd, history_reply(result))))


def history_reply(result: HistoryResult) -> dict[str, Any]:
    """The HistoryResult for clients and the server API (model values, encoded by the codec)."""
    return {"publications": result.publications, "epoch": result.position.epoch,
            "offset": result.position.offset}


# -- rpc and send ---------------------------------------------------------------------------


def rpc(session: Session, cmd: Command) -> None:
    """A method registered in this worker (``shardgate.rpc_handlers``, ``echo``) runs here;
    any other goes to its RPC namespace's proxy when one is enabled (Centrifugo: an unknown
    namespace is 104, a namespace without proxy 108)."""
    body = cmd.body
    method = body.get("method", "")
    handler = session.node.rpc.get(method) if type(method) is str else None
    if handler is None:
        rpc_cfg = session.node.config.rpc
        client = session.node.proxy
        if not isinstance(method, str) or client is None or not rpc_cfg.proxied:
            raise ERROR_METHOD_NOT_FOUND
        opts = rpc_cfg.options_for(method)
        if opts is None:
            raise ERROR_METHOD_NOT_FOUND
        if opts.proxy is None:
            raise ERROR_NOT_AVAILABLE
        _rpc_by_proxy(session, cmd, method, opts.proxy, client)
        return
    ctx = session.rpc_context
    if ctx is None:
        ctx = session.rpc_context = RpcContext(session.client_id, session.user, session.conn_info)
    result = handler(ctx, body.get("data"))
    if hasattr(result, "__await__"):  # a coroutine or future: finish it without blocking the loop
        task = asyncio.ensure_future(result)
        task.add_done_callback(lambda t: _rpc_done(session, cmd, t))
        return
    session.reply(cmd, {"data": result} if result is not None else {})


def _rpc_by_proxy(session: Session, cmd: Command, method: str, proxy: ProxyEndpoint, client: ProxyClient) -> None:
    def done(result: RpcResult | None, error: ClientError | Disconnect | None) -> None:
        if session.closed:
            return
        if error is not None:
            session.fail(cmd, error)
            return
        assert result is not None
        session.reply(cmd, {"data": result.data} if result.has_data else {})

    data = cmd.body.get("data")
    session.proxy_call(lambda answer: client.rpc(proxy, session.proxy_conn(), method, data, answer), done)


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
