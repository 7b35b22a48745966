"""The command table a session dispatches on: each Centrifugo method to its handler.

It lives apart from :mod:`.session` so that the handler modules import the session, never
the other way round (no import cycle)."""

from __future__ import annotations

from gateway.session import commands, connect, server_subs, subscriptions
from gateway.session.session import Handlers

__all__ = ["HANDLERS"]

HANDLERS = Handlers(
    commands={
        "connect": connect.connect,
        "subscribe": subscriptions.subscribe,
        "unsubscribe": subscriptions.unsubscribe,
        "publish": commands.publish,
        "presence": commands.presence,
        "presence_stats": commands.presence,
        "history": commands.history,
        "rpc": commands.rpc,
        "send": commands.send,
        "refresh": connect.refresh,
        "sub_refresh": subscriptions.sub_refresh,
    },
    server_subscribe=server_subs.subscribe_from_api,
    proxy_refresh=connect.proxy_refresh,
    proxy_sub_refresh=subscriptions.proxy_sub_refresh,
)
