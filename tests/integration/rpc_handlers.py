"""RPC handlers loaded by the gateway through ``[shardgate.rpc_handlers]`` in tests."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.core.errors import ClientError
from gateway.session.rpc import RpcContext


def whoami(ctx: RpcContext, data: Any) -> Any:
    return {"user": ctx.user, "client": ctx.client, "info": ctx.conn_info, "got": data}


async def slow_add(ctx: RpcContext, data: Any) -> Any:
    await asyncio.sleep(0)
    return {"sum": sum(data["numbers"])}


def refuse(ctx: RpcContext, data: Any) -> Any:
    raise ClientError(403, "not for you")


def crash(ctx: RpcContext, data: Any) -> Any:
    raise RuntimeError("handler bug: this text must not reach the client")
