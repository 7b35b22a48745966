"""The proxy client the sessions use: one typed method per event, each building its request
(:mod:`.messages`), posting it through a :class:`~gateway.proxy.caller.ProxyCaller` and
answering ``done`` with a typed result, or with what the client must see.

Failures are classified here, once: a backend that is down, slow (past the proxy's timeout)
or answers a status other than 200, or an answer that cannot be read, is logged (rate
limited) and becomes temporary internal error 100; an ``error`` answer is that error, a
``disconnect`` answer that disconnect.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import orjson

from gateway.config.proxy import ProxyEndpoint
from gateway.core.errors import ERROR_INTERNAL, ClientError, Disconnect
from gateway.obs.logs import RateLimit
from gateway.proxy import messages
from gateway.proxy.caller import CallHandle, ProxyCaller, ProxyFailure
from gateway.proxy.messages import (
    ConnectResult,
    ConnInfo,
    ProxyAnswerError,
    PublishResult,
    RefreshResult,
    RpcResult,
    SubRefreshResult,
    SubscribeResult,
)

__all__ = ["ProxyClient", "ProxyDone"]

log = logging.getLogger("shardgate.proxy")

T = TypeVar("T")

#: ``done(result, None)`` or ``done(None, error)``; the error is a ClientError (an error reply)
#: or a Disconnect (close the connection).
ProxyDone = Callable[[T | None, ClientError | Disconnect | None], None]

_FAILURE_LOG = RateLimit(burst=20, period=10.0)


class ProxyClient:
    """Typed proxy calls over one caller (one per worker)."""

    def __init__(self, caller: ProxyCaller) -> None:
        self.caller = caller

    def connect(self, proxy: ProxyEndpoint, conn: ConnInfo, command: dict[str, Any],
                done: ProxyDone[ConnectResult]) -> CallHandle:
        """``done(None, None)`` when the backend granted no credentials (no ``result``)."""
        return self._call("connect", proxy, conn, messages.connect_request(proxy, conn, command),
                          messages.decode_connect, done)

    def refresh(self, proxy: ProxyEndpoint, conn: ConnInfo, done: ProxyDone[RefreshResult]) -> CallHandle:
        return self._call("refresh", proxy, conn, messages.refresh_request(proxy, conn),
                          messages.decode_refresh, done)

    def subscribe(self, proxy: ProxyEndpoint, conn: ConnInfo, channel: str, command: dict[str, Any],
                  done: ProxyDone[SubscribeResult]) -> CallHandle:
        return self._call("subscribe", proxy, conn, messages.subscribe_request(proxy, conn, channel, command),
                          messages.decode_subscribe, done)

    def publish(self, proxy: ProxyEndpoint, conn: ConnInfo, channel: str, data: Any,
                done: ProxyDone[PublishResult]) -> CallHandle:
        return self._call("publish", proxy, conn, messages.publish_request(proxy, conn, channel, data),
                          messages.decode_publish, done)

    def rpc(self, proxy: ProxyEndpoint, conn: ConnInfo, method: str, data: Any,
            done: ProxyDone[RpcResult]) -> CallHandle:
        return self._call("rpc", proxy, conn, messages.rpc_request(proxy, conn, method, data),
                          messages.decode_rpc, done)

    def sub_refresh(self, proxy: ProxyEndpoint, conn: ConnInfo, channel: str,
                    done: ProxyDone[SubRefreshResult]) -> CallHandle:
        return self._call("sub_refresh", proxy, conn, messages.sub_refresh_request(proxy, conn, channel),
                          messages.decode_sub_refresh, done)

    def _call(self, event: str, proxy: ProxyEndpoint, conn: ConnInfo, request: dict[str, Any],
              decode: Callable[[bytes], T], done: ProxyDone[T]) -> CallHandle:
        body = orjson.dumps(request)

        def answered(raw: bytes | None, failure: ProxyFailure | None) -> None:
            if failure is not None or raw is None:
                _log_failure(event, proxy, conn, str(failure))
                done(None, ERROR_INTERNAL)
                return
            try:
                result = decode(raw)
            except (ClientError, Disconnect) as exc:
                done(None, exc)
                return
            except ProxyAnswerError as exc:
                _log_failure(event, proxy, conn, f"bad answer: {exc}")
                done(None, ERROR_INTERNAL)
                return
            done(result, None)

        return self.caller.post(proxy, messages.request_headers(proxy, conn), body, answered)

    async def close(self) -> None:
        await self.caller.close()


def _log_failure(event: str, proxy: ProxyEndpoint, conn: ConnInfo, why: str) -> None:
    if _FAILURE_LOG.allow():
        suppressed = _FAILURE_LOG.take_suppressed()
        log.warning("%s proxy %r (%s) failed for client %s: %s%s", event, proxy.name, proxy.endpoint, conn.client,
                    why, f" (and {suppressed} more not logged)" if suppressed else "")
