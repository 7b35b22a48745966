"""Actions addressed to a worker rather than to a channel's owner.

The server API reaches connections wherever they live: a request naming a client goes
to the slot in its id (``sharding.ids``), one naming a user goes to every slot, and
reports (stats, channels) are surveyed from every slot. Each worker answers here,
synchronously, from its own hub.
"""

from __future__ import annotations

import fnmatch
import logging
import os
from collections.abc import Callable
from typing import Any, Protocol

import psutil

from gateway import __version__
from gateway.cluster.nodes import ClusterDirectory
from gateway.cluster.router import Router
from gateway.core.errors import ERROR_BAD_REQUEST, ERROR_METHOD_NOT_FOUND, UNSUBSCRIBE_SERVER, server_disconnect
from gateway.core.wheel import TimerWheel
from gateway.engine.base import NodeEngine
from gateway.hub import Hub, Subscriber
from gateway.obs.stats import Stats

__all__ = ["Control", "CONTROL_OP", "CLUSTER_SURVEY_OP", "EMULATION_OP"]

#: The router operation that carries control actions (``Envelope.channel`` = the action).
CONTROL_OP = 64
#: Asks slot 0 to survey the other nodes (``Envelope.channel`` = the control action).
CLUSTER_SURVEY_OP = 65
#: Commands of an emulated client (http_stream, sse) for the slot that holds its session
#: (``Envelope.channel`` empty; payload: gateway.transport.framing.pack_forward).
EMULATION_OP = 66


log = logging.getLogger("shardgate.control")


def _str(body: dict[str, Any], key: str, required: bool = False) -> str:
    value = body.get(key)
    if value is None or value == "":
        if required:
            raise ERROR_BAD_REQUEST
        return ""
    if not isinstance(value, str):
        raise ERROR_BAD_REQUEST
    return value


class Timers(Protocol):
    @property
    def wheel(self) -> TimerWheel: ...


class Worker(Protocol):
    """What the control actions read of their worker (``gateway.node.Node`` is one); a
    protocol rather than the node class, so this module does not import the node."""

    slot: int
    incarnation: int
    node_id: str
    node_name: str
    started_at: float
    hub: Hub
    metrics: Stats
    router: Router
    engine: NodeEngine
    cluster: ClusterDirectory | None

    @property
    def timers(self) -> Timers: ...

    def clock(self) -> float: ...


class Control:
    def __init__(self, node: Worker) -> None:
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
        disconnect = server_disconnect(body.get("code", 3503), body.get("reason") or "force disconnect")
        whitelist = set(body.get("whitelist") or ())
        targets = [sub for sub in self._targets(body) if sub.client_id not in whitelist]
        self._act(targets, lambda sub: sub.close(disconnect))
        return {"count": len(targets)}

    def _act(self, targets: list[Subscriber], action: Callable[[Subscriber], None]) -> None:
        """Act on every target; one that fails is logged and never stops the others."""
        for sub in targets:
            try:
                action(sub)
            except Exception:
                log.exception("control action on client %s failed", sub.client_id)

    def _each(self, body: dict[str, Any], action: Callable[[Subscriber], None]) -> dict[str, Any]:
        targets = self._targets(body)
        self._act(targets, action)
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
                out[name] = len(local)
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
            "name": f"{node.node_name}.{node.slot}",
            "slot": node.slot,
            "node": node.node_id,
            "pid": os.getpid(),
            "version": __version__,
            "uptime": int(node.clock() - node.started_at),
            "num_clients": len(hub.clients),
            "num_users": len(hub.users),
            "num_subs": hub.num_subscriptions(),
            "num_channels": len(hub.channels),
            "num_owned_channels": node.engine.owned_channels(),
            "num_owned_streams": node.engine.owned_streams(),
            "pending_requests": node.router.pending,
            "timer_entries": node.timers.wheel.pending,
            "process": {"cpu": cpu_percent, "rss": rss, "cpu_seconds": cpu_times.user + cpu_times.system},
            "stats": node.metrics.snapshot(),
        }

    def cluster_nodes(self, body: dict[str, Any]) -> dict[str, Any]:
        """The other nodes this node heard from (slot 0 listens on the control channel)."""
        cluster = self._node.cluster
        return {"nodes": cluster.nodes() if cluster is not None and self._node.slot == 0 else {}}

    def ping(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"slot": self._node.slot, "engine": self._node.engine.healthy}

    _handlers: dict[str, Callable[[Control, dict[str, Any]], dict[str, Any]]] = {
        "disconnect": disconnect,
        "subscribe": subscribe,
        "unsubscribe": unsubscribe,
        "refresh": refresh,
        "channels": channels,
        "stats": stats,
        "ping": ping,
        "cluster_nodes": cluster_nodes,
    }
