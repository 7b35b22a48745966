"""A real aiohttp application backend for the proxy tests, on 127.0.0.1 with an ephemeral port.

It records every request (path, JSON body, headers) and answers as a Centrifugo backend
would, steered by what the client sends:

- ``/connect``: the user comes from the ``session=NAME`` cookie, else the ``X-User`` upgrade
  header, else ``data.user``; ``data.deny`` answers an error, ``data.kick`` a disconnect,
  ``data.fail`` an HTTP 500, ``data.hang`` no answer (until the test ends).
- ``/refresh``: extends by an hour with new info and meta; ``/sub_refresh``: by one second.
- ``/subscribe``: a channel containing ``deny`` is refused (error 1001), ``kick`` disconnects 4501,
  ``short`` expires in one second (then sub_refresh decides); otherwise granted with info and data.
- ``/publish``: ``{"bad": ...}`` refused (error 1002), otherwise rewritten to ``{"rewritten": data}``;
  ``{"skip": true}`` is kept out of history.
- ``/rpc``: method ``fail`` answers error 1003, ``kick`` disconnects 4502, otherwise echoes what it got.
- ``/other``: a named proxy: answers ``{"named": true}`` for rpc and publish.
- ``/hang``: never answers (until the test ends).
"""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Seen:
    path: str
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class Backend:
    url: str = ""
    seen: list[Seen] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    runner: web.AppRunner | None = None

    def requests(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]

    async def start(self) -> Backend:
        app = web.Application()
        app.router.add_post("/{name}", self._handle)
        self.runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        self.release.set()
        if self.runner is not None:
            await self.runner.cleanup()

    async def _hang(self) -> web.Response:
        await self.release.wait()
        return web.json_response({"result": {}})

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        body = await request.json()
        self.seen.append(Seen(name, body, {k.lower(): v for k, v in request.headers.items()}))
        if name == "hang":
            return await self._hang()
        answer = getattr(self, f"_{name}")(body, request)
        if isinstance(answer, web.StreamResponse):
            return answer
        if answer == "hang":
            return await self._hang()
        return web.json_response(answer)

    def _connect(self, body: dict[str, Any], request: web.Request) -> Any:
        data = body.get("data") or {}
        if data.get("deny"):
            return {"error": {"code": 1000, "message": "not welcome"}}
        if data.get("kick"):
            return {"disconnect": {"code": 4501, "reason": "go away"}}
        if data.get("fail"):
            return web.Response(status=500, text="backend broke")
        if data.get("hang"):
            return "hang"
        user = request.cookies.get("session") or request.headers.get("X-User") or data.get("user", "")
        result: dict[str, Any] = {
            "user": user,
            "info": {"name": user.title()},
            "data": {"welcome": user},
            "meta": {"plan": "gold", "user": user},
            "channels": ["news"],
            "subs": {"px:granted": {"info": {"role": "reader"}, "data": {"hello": user}}},
        }
        if data.get("expire_in"):
            result["expire_at"] = int(time.time()) + int(data["expire_in"])
        return {"result": result}

    def _refresh(self, body: dict[str, Any], request: web.Request) -> Any:
        return {"result": {"expire_at": int(time.time()) + 3600, "info": {"refreshed": True},
                           "meta": {"plan": "platinum"}}}

    def _subscribe(self, body: dict[str, Any], request: web.Request) -> Any:
        channel = body["channel"]
        if "deny" in channel:
            return {"error": {"code": 1001, "message": "no subscribe"}}
        if "kick" in channel:
            return {"disconnect": {"code": 4501, "reason": "subscribe kick"}}
        result: dict[str, Any] = {"info": {"sub": channel}, "data": {"granted": channel}}
        if "short" in channel:
            result["expire_at"] = int(time.time()) + 1
        return {"result": result}

    def _sub_refresh(self, body: dict[str, Any], request: web.Request) -> Any:
        return {"result": {"expire_at": int(time.time()) + 1, "info": {"sub": "refreshed"}}}

    def _publish(self, body: dict[str, Any], request: web.Request) -> Any:
        data = body.get("data")
        if isinstance(data, dict) and "bad" in data:
            return {"error": {"code": 1002, "message": "bad publication"}}
        skip = isinstance(data, dict) and bool(data.get("skip"))
        return {"result": {"data": {"rewritten": data}, "skip_history": skip}}

    def _rpc(self, body: dict[str, Any], request: web.Request) -> Any:
        method = body["method"]
        if method == "fail":
            return {"error": {"code": 1003, "message": "rpc failed", "temporary": True}}
        if method == "kick":
            return {"disconnect": {"code": 4502, "reason": "rpc kick"}}
        return {"result": {"data": {"method": method, "got": body.get("data"), "user": body.get("user"),
                                    "meta": body.get("meta")}}}

    def _other(self, body: dict[str, Any], request: web.Request) -> Any:
        if "method" in body:
            return {"result": {"data": {"named": True}}}
        return {"result": {"data": {"named": body.get("data")}}}


def closed_port_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/down"
