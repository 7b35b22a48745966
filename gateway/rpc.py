"""RPC and async-message handlers: a registry of plain Python callables.

A handler gets the calling connection's identity and the request ``data`` (a JSON
value) and returns the reply ``data``, or an awaitable of it; it raises ``ClientError``
to answer an error. An unknown method is error 104, as in Centrifugo.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["RpcContext", "RpcHandler", "RpcRegistry", "echo"]


@dataclass(frozen=True, slots=True)
class RpcContext:
    client: str
    user: str
    conn_info: Any


RpcHandler = Callable[[RpcContext, Any], "Any | Awaitable[Any]"]


class RpcRegistry:
    def __init__(self) -> None:
        self._handlers: dict[str, RpcHandler] = {}

    def register(self, method: str, handler: RpcHandler) -> None:
        if not method:
            raise ValueError("rpc method name must not be empty")
        self._handlers[method] = handler

    def get(self, method: str) -> RpcHandler | None:
        return self._handlers.get(method)

    def __contains__(self, method: object) -> bool:
        return method in self._handlers


def echo(ctx: RpcContext, data: Any) -> Any:
    """The built-in ``echo`` method (``shardgate.rpc_echo``), used by benchmarks and tests."""
    return data
