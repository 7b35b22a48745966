"""RPC and async-message handlers: a registry of plain Python callables.

A handler gets the calling connection's identity and the request ``data`` (a JSON
value) and returns the reply ``data``, or an awaitable of it; it raises ``ClientError``
to answer an error. An unknown method is error 104, as in Centrifugo.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["RpcContext", "RpcHandler", "RpcRegistry", "echo", "load_handler"]


@dataclass(frozen=True, slots=True)  # frozen: a session hands the same one to every call
class RpcContext:
    client: str
    user: str
    conn_info: Any


RpcHandler = Callable[[RpcContext, Any], "Any | Awaitable[Any]"]


class RpcRegistry(dict[str, RpcHandler]):
    """Method name -> handler. A dict itself: ``get`` is the dict's own (once per call)."""

    def register(self, method: str, handler: RpcHandler) -> None:
        if not method:
            raise ValueError("rpc method name must not be empty")
        self[method] = handler


def load_handler(target: str) -> RpcHandler:
    """Import ``"package.module:function"``; ValueError with a clear message otherwise."""
    module_name, _, attr = target.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot load rpc handler {target!r}: {exc}") from None
    if not callable(obj):
        raise ValueError(f"rpc handler {target!r} is not callable")
    handler: RpcHandler = obj
    return handler


def echo(ctx: RpcContext, data: Any) -> Any:
    """The built-in ``echo`` method (``shardgate.rpc_echo``), used by benchmarks and tests."""
    return data
