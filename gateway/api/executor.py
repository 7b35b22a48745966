"""The server API executor (PROTOCOL.md §3): request dicts in, result dicts out.

Transport-free: ``gateway.api.http`` maps HTTP onto it. Everything reaches every worker:
publications go through the channel's owner (the same ordering and history as client
publishes), per-user actions go to every slot (or straight to the one named by a client
id), presence and history come from the owner, reports are surveyed from all slots.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson

from gateway.core.errors import ClientError, server_disconnect
from gateway.core.history import history_filter
from gateway.core.model import PresenceStats, Publication, PublishOptions, StreamOptions, StreamPosition
from gateway.session.commands import history_reply
from sharding.ids import slot_of_client

if TYPE_CHECKING:
    from gateway.node import Node

__all__ = ["ApiExecutor", "API_ERROR_BAD_REQUEST", "API_ERROR_NOT_FOUND", "http_status_for"]

API_ERROR_INTERNAL = ClientError(100, "internal server error")
API_ERROR_UNKNOWN_CHANNEL = ClientError(102, "unknown channel")
API_ERROR_NOT_FOUND = ClientError(104, "not found")
API_ERROR_BAD_REQUEST = ClientError(107, "bad request")

# Transport error mode (X-Centrifugo-Error-Mode: transport): API error code -> HTTP status.
_HTTP_STATUS = {100: 500, 102: 404, 104: 404, 107: 400, 108: 400, 112: 416, 113: 409}


def http_status_for(code: int) -> int:
    return _HTTP_STATUS.get(code, 500)


def _str(params: dict[str, Any], key: str, *, required: bool = False) -> str:
    value = params.get(key)
    if value is None or value == "":
        if required:
            raise ClientError(107, f"bad request: {key} required")
        return ""
    if not isinstance(value, str):
        raise ClientError(107, f"bad request: {key} must be a string")
    return value


def _api_error(exc: BaseException) -> ClientError:
    if isinstance(exc, ClientError):
        return ClientError(exc.code, exc.message) if exc.temporary else exc
    return API_ERROR_INTERNAL


def _counters(stats: dict[str, Any]) -> dict[str, float]:
    """Cumulative counters for ``info``; tools take two samples to get rates."""
    st = stats["stats"]
    return {
        "messages_received": float(sum(st["messages_in"].values())),
        "messages_sent": float(sum(st["messages_out"].values())),
        "bytes_received": float(st["bytes_in"]),
        "bytes_sent": float(sum(st["bytes_out"].values())),
        "connections_accepted": float(st["connections_accepted"]),
        "cpu_seconds": float(stats["process"]["cpu_seconds"]),
        "num_owned_channels": float(stats["num_owned_channels"]),
        "num_owned_streams": float(stats.get("num_owned_streams", 0)),
    }


class ApiExecutor:
    def __init__(self, node: Node) -> None:
        self._node = node
        self._methods: dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]] = {
            "publish": self.publish,
            "broadcast": self.broadcast,
            "subscribe": self.subscribe,
            "unsubscribe": self.unsubscribe,
            "disconnect": self.disconnect,
            "refresh": self.refresh,
            "presence": self.presence,
            "presence_stats": self.presence_stats,
            "history": self.history,
            "history_remove": self.history_remove,
            "channels": self.channels,
            "info": self.info,
        }

    @property
    def methods(self) -> list[str]:
        return [*self._methods, "batch"]

    async def execute(self, method: str, params: Any) -> dict[str, Any]:
        """Run one API method; raises ClientError with an API error code."""
        handler = self._methods.get(method)
        if handler is None:
            raise API_ERROR_NOT_FOUND
        if not isinstance(params, dict):
            raise API_ERROR_BAD_REQUEST
        started = time.perf_counter()
        stats = self._node.metrics
        try:
            result = await handler(params)
        except Exception as exc:
            err = _api_error(exc)
            stats.api_error(method, err.code)
            raise err from None
        finally:
            stats.api_done(method, time.perf_counter() - started)
        return result

    async def batch(self, params: Any) -> list[dict[str, Any]]:
        """``{"commands": [{"publish": {...}}, ...], "parallel": bool}`` -> replies in order."""
        if not isinstance(params, dict) or not isinstance(params.get("commands"), list):
            raise API_ERROR_BAD_REQUEST

        async def one(command: Any) -> dict[str, Any]:
            if not isinstance(command, dict) or len(command) != 1:
                return {"error": API_ERROR_BAD_REQUEST.as_dict()}
            ((method, body),) = command.items()
            try:
                return {method: await self.execute(method, body)}
            except ClientError as exc:
                return {"error": exc.as_dict()}

        commands = params["commands"]
        cap = self._node.config.shardgate.api_batch_max_commands
        if len(commands) > cap:
            raise ClientError(107, f"bad request: {len(commands)} commands in one batch, at most {cap} "
                                   "(shardgate.api_batch_max_commands)")
        if params.get("parallel"):
            return list(await asyncio.gather(*(one(c) for c in commands)))
        return [await one(c) for c in commands]

    # -- channel methods, through the owner -----------------------------------------------------

    def _channel(self, params: dict[str, Any]) -> str:
        channel = _str(params, "channel", required=True)
        self._node.resolve_channel(channel)
        return channel

    def _stream(self, channel: str) -> StreamOptions | None:
        self._node.resolve_channel(channel)
        return self._node.stream_options(channel)

    async def publish(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params)
        return await self._publish_one(channel, params)

    async def _publish_one(self, channel: str, params: dict[str, Any]) -> dict[str, Any]:
        if "data" not in params:
            if "b64data" in params:
                raise ClientError(107, "bad request: b64data is binary, this gateway speaks JSON only")
            raise ClientError(107, "bad request: data required")
        tags = params.get("tags")
        if tags is not None and not (isinstance(tags, dict) and all(isinstance(v, str) for v in tags.values())):
            raise ClientError(107, "bad request: tags must map strings to strings")
        key = _str(params, "idempotency_key")
        try:
            data = orjson.dumps(params["data"])
        except orjson.JSONEncodeError:
            raise ClientError(107, "bad request: data cannot be encoded") from None
        delta = params.get("delta", False)
        if not isinstance(delta, bool):
            raise ClientError(107, "bad request: delta must be a boolean")
        stream = None if params.get("skip_history") else self._stream(channel)
        # Centrifugo: the namespace's delta_publish marks every publication, else the call's flag.
        delta = delta or self._node.resolve_channel(channel).delta_publish
        pub = Publication(data, None, 0, dict(tags) if tags else None, delta)
        engine = self._node.engine
        position: StreamPosition = await self._node.wait(
            lambda done: engine.publish(channel, pub, PublishOptions(stream, key), done))
        return {"offset": position.offset, "epoch": position.epoch} if position.offset else {}

    async def broadcast(self, params: dict[str, Any]) -> dict[str, Any]:
        channels = params.get("channels")
        if not isinstance(channels, list) or not channels or not all(isinstance(c, str) for c in channels):
            raise ClientError(107, "bad request: channels required")

        async def one(channel: str) -> dict[str, Any]:
            try:
                self._node.resolve_channel(channel)
                return {"result": await self._publish_one(channel, params)}
            except Exception as exc:
                return {"error": _api_error(exc).as_dict()}

        return {"responses": list(await asyncio.gather(*(one(c) for c in channels)))}

    def _require(self, channel: str, enabled: bool) -> None:
        if not enabled:
            raise ClientError(108, "not available")

    async def presence(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params)
        self._require(channel, self._node.resolve_channel(channel).presence)
        engine = self._node.engine
        return {"presence": await self._node.wait(lambda done: engine.presence(channel, done))}

    async def presence_stats(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params)
        self._require(channel, self._node.resolve_channel(channel).presence)
        engine = self._node.engine
        stats: PresenceStats = await self._node.wait(lambda done: engine.presence_stats(channel, done))
        return {"num_clients": stats.num_clients, "num_users": stats.num_users}

    async def history(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params)
        stream = self._stream(channel)
        if stream is None:
            raise ClientError(108, "not available")
        filter = history_filter(params, self._node.config.client.history_max_publication_limit)
        engine = self._node.engine
        return history_reply(await self._node.wait(lambda done: engine.history(channel, filter, stream, done)))

    async def history_remove(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params)
        engine = self._node.engine
        removed: bool = await self._node.wait(lambda done: engine.remove_history(
            channel, lambda error: done(None if error else True, error)))
        assert removed
        return {}

    # -- connection methods, wherever the connections live --------------------------------------

    async def _to_connections(self, method: str, body: dict[str, Any]) -> None:
        """Act on a user's (or one client's) connections on every worker of this node, and,
        with several nodes, have the others do the same on theirs."""
        client = _str(body, "client")
        if client:
            slot = slot_of_client(client)
            if slot is not None and slot < self._node.workers:
                await self._node.call_slot(slot, method, body)
        else:
            results = await self._node.survey(method, body)
            if any(result is None for _, result in results):
                raise ClientError(100, "internal server error: a worker did not answer")
        await self._node.cluster_broadcast(method, body)

    async def subscribe(self, params: dict[str, Any]) -> dict[str, Any]:
        _str(params, "user", required=True)
        channel = self._channel(params)
        keys = ("user", "client", "info", "data", "recover_since", "expire_at")
        body: dict[str, Any] = {k: params[k] for k in keys if k in params}
        body["channel"] = channel
        await self._to_connections("subscribe", body)
        return {}

    async def unsubscribe(self, params: dict[str, Any]) -> dict[str, Any]:
        _str(params, "user", required=True)
        body = {"user": params["user"], "channel": _str(params, "channel", required=True),
                "client": _str(params, "client")}
        await self._to_connections("unsubscribe", body)
        return {}

    async def disconnect(self, params: dict[str, Any]) -> dict[str, Any]:
        user = _str(params, "user", required=True)
        body: dict[str, Any] = {"user": user, "client": _str(params, "client")}
        spec = params.get("disconnect")
        if spec is not None:
            if not isinstance(spec, dict):
                raise API_ERROR_BAD_REQUEST
            disconnect = server_disconnect(spec.get("code", 3503), spec.get("reason", "force disconnect"))
            body["code"], body["reason"] = disconnect.code, disconnect.reason
        whitelist = params.get("whitelist")
        if whitelist is not None:
            if not isinstance(whitelist, list) or not all(isinstance(c, str) for c in whitelist):
                raise API_ERROR_BAD_REQUEST
            body["whitelist"] = whitelist
        await self._to_connections("disconnect", body)
        return {}

    async def refresh(self, params: dict[str, Any]) -> dict[str, Any]:
        _str(params, "user", required=True)
        keys = ("user", "client", "expired", "expire_at", "info")
        body: dict[str, Any] = {k: params[k] for k in keys if k in params}
        expire_at = body.get("expire_at")
        if expire_at is not None and type(expire_at) is not int:
            raise ClientError(107, "bad request: expire_at must be an integer")
        await self._to_connections("refresh", body)
        return {}

    # -- reports --------------------------------------------------------------------------------

    async def channels(self, params: dict[str, Any]) -> dict[str, Any]:
        body = {"pattern": _str(params, "pattern")}
        totals: dict[str, int] = {}
        results = [result for _, result in await self._node.survey("channels", body)]
        for remote in (await self._node.cluster_survey("channels", body)).values():
            results.extend(remote)
        for result in results:
            for name, count in (result or {}).get("channels", {}).items():
                totals[name] = totals.get(name, 0) + int(count)
        return {"channels": {name: {"num_clients": count} for name, count in sorted(totals.items())}}

    async def info(self, params: dict[str, Any]) -> dict[str, Any]:
        nodes = [_node_info(stats) for _, stats in await self._node.survey("stats", {}) if stats is not None]
        if self._node.cluster is not None:
            others = await self._node.call_slot(0, "cluster_nodes", {})
            for info in others.get("nodes", {}).values():
                nodes.extend(_node_info(stats) for stats in info.get("workers", ()))
        return {"nodes": nodes}


def _node_info(stats: dict[str, Any]) -> dict[str, Any]:
    """One worker in ``info`` (a Centrifugo "node"; ``name`` is host.slot)."""
    return {
        "uid": stats["uid"],
        "name": stats["name"],
        "version": stats["version"],
        "num_clients": stats["num_clients"],
        "num_users": stats["num_users"],
        "num_subs": stats["num_subs"],
        "num_channels": stats["num_channels"],
        "uptime": stats["uptime"],
        "process": {"cpu": stats["process"]["cpu"], "rss": stats["process"]["rss"]},
        "metrics": {"interval": 0, "items": _counters(stats)},
        "slot": stats["slot"],
        "pid": stats["pid"],
        "node": stats.get("node", ""),
    }
