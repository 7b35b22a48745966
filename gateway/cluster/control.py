"""Actions addressed to a worker rather than to a channel's owner.

The server API reaches connections wherever they live: a request naming a client goes
to the slot in its id (``sharding.ids``), one naming a user goes to every slot, and
reports (stats, channels) are surveyed from every slot. Each worker answers here,
synchronously, from its own hub.
"""

from __future__ import annotations

import fnmatch
import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import psutil

from gateway import __version__
from gateway.core.errors import ERROR_BAD_REQUEST, ERROR_METHOD_NOT_FOUND, UNSUBSCRIBE_SERVER, Disconnect
from gateway.hub import Subscriber

if TYPE_CHECKING:
    from gateway.node import Node

__all__ = ["Control"]


def _str(body: dict[str, Any], key: str, required: bool = False) -> str:
    value = body.get(key)
    if value is None or value == "":
        if required:
            raise ERROR_BAD_REQUEST
        return ""
    if not isinstance(value, str):
        raise ERROR_BAD_REQUEST
    return value


class Control:
    def __init__(self, node: Node) -> None:
        self._node = node
        self._process = psutil.Process()
        self._process.cpu_percent(None)  # prime: the first reading is always 0

    def handle(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        handler = self._handlers.get(method)
        if handler is None:
            raise ERROR_METHOD_NOT_FOUND
        return handler(self, body)

    def _targets(self, body: dict[str, Any]) -> list[Subscriber]:
        user = _str(body, "user")
        client = _str(body, "client")
        hub = self._node.hub
        if client:
            sub = hub.clients.get(client)
            return [sub] if sub is not None and (not user or sub.user == user) else []
        if "user" not in body:
            raise ERROR_BAD_REQUEST
        return list(hub.user_clients(user))

    def disconnect(self, body: dict[str, Any]) -> dict[str, Any]:
        code = body.get("code", 3503)
        reason = body.get("reason") or "force disconnect"
        if type(code) is not int or not 3000 <= code <= 4999 or not isinstance(reason, str):
            raise ERROR_BAD_REQUEST
        whitelist = set(body.get("whitelist") or ())
        count = 0
        for sub in self._targets(body):
            if sub.client_id not in whitelist:
                sub.close(Disconnect(code, reason[:120]))
                count += 1
        return {"count": count}

    def _each(self, body: dict[str, Any], action: Callable[[Subscriber], None]) -> dict[str, Any]:
        targets = self._targets(body)
        for sub in targets:
            action(sub)
        return {"count": len(targets)}

    def subscribe(self, body: dict[str, Any]) -> dict[str, Any]:
        channel = _str(body, "channel", required=True)
        return self._each(body, lambda sub: sub.server_subscribe(channel, body))

    def unsubscribe(self, body: dict[str, Any]) -> dict[str, Any]:
        channel = _str(body, "channel", required=True)
        return self._each(body, lambda sub: sub.server_unsubscribe(channel, UNSUBSCRIBE_SERVER))

    def refresh(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._each(body, lambda sub: sub.server_refresh(body))

    def channels(self, body: dict[str, Any]) -> dict[str, Any]:
        pattern = _str(body, "pattern")
        out: dict[str, int] = {}
        for name, local in self._node.hub.channels.items():
            if not pattern or fnmatch.fnmatchcase(name, pattern):
                out[name] = len(local.subscribers)
        return {"channels": out}

    def stats(self, body: dict[str, Any]) -> dict[str, Any]:
        node = self._node
        hub = node.hub
        with self._process.oneshot():
            rss = self._process.memory_info().rss
            cpu_times = self._process.cpu_times()
            cpu_percent = self._process.cpu_percent(None)
        return {
            "uid": f"{node.incarnation:08x}-{node.slot}",
            "name": f"{socket.gethostname()}.{node.slot}",
            "slot": node.slot,
            "pid": os.getpid(),
            "version": __version__,
            "uptime": int(node.clock() - node.started_at),
            "num_clients": len(hub.clients),
            "num_users": len(hub.users),
            "num_subs": hub.num_subscriptions(),
            "num_channels": len(hub.channels),
            "num_owned_channels": node.shard.stats()["channels"],
            "pending_requests": node.pending_requests,
            "process": {"cpu": cpu_percent, "rss": rss, "cpu_seconds": cpu_times.user + cpu_times.system},
            "stats": node.metrics.snapshot(),
        }

    def ping(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"slot": self._node.slot}

    _handlers: dict[str, Callable[[Control, dict[str, Any]], dict[str, Any]]] = {
        "disconnect": disconnect,
        "subscribe": subscribe,
        "unsubscribe": unsubscribe,
        "refresh": refresh,
        "channels": channels,
        "stats": stats,
        "ping": ping,
    }
