"""One-way transports against a real 2-worker gateway: uni_http_stream and uni_sse (aiohttp)
and uni_websocket (the websockets library). The connect request is a bare ConnectRequest;
server-side subscriptions (token ``channels``) are how they subscribe; everything received is
a bare push (``{"connect":..}``, ``{"channel":..,"pub":..}``, ``{"disconnect":..}``).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import websockets
from websockets.asyncio.client import connect as ws_connect

from tests.conftest import SECRET, Gateway, base_config, scaled
from tests.integration.test_emulation import api, http_base, read_json_line
from tools.token import mint_token

UNI = {"uni_http_stream": {"enabled": True, "max_request_body_size": 4096},
       "uni_sse": {"enabled": True, "max_request_body_size": 4096},
       "uni_websocket": {"enabled": True}}


def uni_gateway(factory: Callable[..., Gateway]) -> Gateway:
    gw: Gateway = factory(base_config(**UNI))
    return gw


async def read_event(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    while True:
        line = await asyncio.wait_for(resp.content.readline(), scaled(5))
        assert line, "stream ended"
        if line.startswith(b"data: "):
            out: dict[str, Any] = json.loads(line[6:])
            return out


async def test_uni_http_stream(gateway_factory: Callable[..., Gateway]) -> None:
    gw = uni_gateway(gateway_factory)
    base = http_base(gw)
    channel = f"uni-{uuid.uuid4().hex[:8]}"
    token = mint_token(SECRET, user="u", channels=[channel])
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{base}/connection/uni_http_stream", data=json.dumps({"token": token})) as r:
            assert r.status == 200
            connect = (await read_json_line(r))["connect"]
            assert connect["client"] and channel in connect["subs"]
            assert "pong" not in connect and "session" not in connect
            await api(gw, "publish", {"channel": channel, "data": {"n": 1}})
            push = await read_json_line(r)
            assert push["channel"] == channel and push["pub"]["data"] == {"n": 1}
            await api(gw, "disconnect", {"user": "u"})
            assert "disconnect" in await read_json_line(r)
            assert await asyncio.wait_for(r.content.read(), scaled(5)) == b""
        # Bad input: named statuses, never a crashed worker.
        for body, status in [(b"x" * 5000, 413), (b"{bad", 400), (b"[1]", 400)]:
            async with s.post(f"{base}/connection/uni_http_stream", data=body) as r:
                assert r.status == status
        async with s.get(f"{base}/connection/uni_http_stream") as r:
            assert r.status == 405
        # A refused connect (bad token): a disconnect push, then the end.
        async with s.post(f"{base}/connection/uni_http_stream", data=json.dumps({"token": "nope"})) as r:
            assert json.loads(await r.read()) == {"disconnect": {"code": 3500, "reason": "invalid token"}}
        # No token and no anonymous connects: refused the same way.
        async with s.post(f"{base}/connection/uni_http_stream", data=b"null") as r:
            assert json.loads(await r.read())["disconnect"]["code"] == 3501
    assert "Traceback" not in gw.log()


async def test_uni_sse(gateway_factory: Callable[..., Gateway]) -> None:
    gw = uni_gateway(gateway_factory)
    base = http_base(gw)
    channel = f"unisse-{uuid.uuid4().hex[:8]}"
    token = mint_token(SECRET, user="s", channels=[channel])
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{base}/connection/uni_sse", params={"cf_connect": json.dumps({"token": token})}) as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
            assert channel in (await read_event(r))["connect"]["subs"]
            await api(gw, "publish", {"channel": channel, "data": {"n": 2}})
            assert (await read_event(r))["pub"]["data"] == {"n": 2}
        async with s.get(f"{base}/connection/uni_sse", params={"cf_connect": "{bad"}) as r:
            assert r.status == 400
        async with s.get(f"{base}/connection/uni_sse", params={"cf_connect": "x" * 5000}) as r:
            assert r.status == 413
        async with s.post(f"{base}/connection/uni_sse", data=json.dumps({"token": token})) as r:
            assert r.status == 200
            assert "connect" in await read_event(r)


async def test_uni_websocket(gateway_factory: Callable[..., Gateway]) -> None:
    gw = uni_gateway(gateway_factory)
    parts = urlsplit(gw.url)
    url = f"ws://{parts.hostname}:{parts.port}/connection/uni_websocket"
    channel = f"uniws-{uuid.uuid4().hex[:8]}"
    token = mint_token(SECRET, user="w", channels=[channel])
    async with ws_connect(url) as ws:
        await ws.send(json.dumps({"token": token}))
        connect = json.loads(await asyncio.wait_for(ws.recv(), scaled(5)))["connect"]
        assert channel in connect["subs"]
        await ws.send("ignored: one-way clients only send their connect request")
        await api(gw, "publish", {"channel": channel, "data": {"n": 3}})
        push = json.loads(await asyncio.wait_for(ws.recv(), scaled(5)))
        assert push == {"channel": channel, "pub": {"data": {"n": 3}, "offset": push["pub"]["offset"]}}
        await api(gw, "disconnect", {"user": "w", "disconnect": {"code": 4501, "reason": "bye"}})
        assert json.loads(await asyncio.wait_for(ws.recv(), scaled(5))) == {"disconnect": {"code": 4501,
                                                                                          "reason": "bye"}}
        try:
            await asyncio.wait_for(ws.recv(), scaled(5))
            raise AssertionError("expected a close")
        except websockets.ConnectionClosed as exc:
            assert exc.rcvd is not None and exc.rcvd.code == 4501
    # The connect request in the query instead of a first message.
    query = json.dumps({"token": token})
    async with ws_connect(url + "?cf_connect=" + quote(query)) as ws:
        assert "connect" in json.loads(await asyncio.wait_for(ws.recv(), scaled(5)))
    # A first message that is not a ConnectRequest: a disconnect push and CLOSE, both 3501.
    async with ws_connect(url) as ws:
        await ws.send("{not json")
        push = json.loads(await asyncio.wait_for(ws.recv(), scaled(5)))
        assert push["disconnect"]["code"] == 3501
        try:
            await asyncio.wait_for(ws.recv(), scaled(5))
            raise AssertionError("expected a close")
        except websockets.ConnectionClosed as exc:
            assert exc.rcvd is not None and exc.rcvd.code == 3501
    assert "Traceback" not in gw.log()
