"""HTTP-streaming and SSE bidirectional emulation, against a real 2-worker gateway.

centrifuge-js (node) with ``transports`` limited to http_stream (JSON and protobuf) and to
sse: connect, subscribe, publish and receive, presence, rpc, send, disconnect; its /emulation
POSTs go over fresh connections, so SO_REUSEPORT spreads them, and at least one must be
answered by a worker other than the one holding the posting client's stream (the POST is
forwarded over the bus). Raw aiohttp clients cover the rest: bad input (413, 400, 404, 405),
Origin checks and CORS, a server-side disconnect (disconnect push, stream ends) and a client
that goes away (the session ends: presence empties).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from tests.conftest import API_KEY, SECRET, Gateway, base_config, scaled, wait_for
from tools.token import mint_token

JS_DIR = os.path.join(os.path.dirname(__file__), "..", "js")
NODE = shutil.which("node")
HAS_JS = NODE is not None and os.path.isdir(os.path.join(JS_DIR, "node_modules", "eventsource"))

JSON_TYPE = {"Content-Type": "application/json"}
ENABLED = {"http_stream": {"enabled": True}, "sse": {"enabled": True}}


def http_base(gw: Gateway) -> str:
    parts = urlsplit(gw.url)
    return f"http://{parts.hostname}:{parts.port}"


def emulation_gateway(factory: Callable[..., Gateway], **overrides: Any) -> Gateway:
    gw: Gateway = factory(base_config(**{**ENABLED, **overrides}))
    return gw


async def api(gw: Gateway, method: str, body: dict[str, Any]) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s, s.post(f"{gw.internal_url}/api/{method}", json=body,
                                                     headers={"X-API-Key": API_KEY}) as r:
        assert r.status == 200
        out: dict[str, Any] = await r.json()
        return out


async def read_json_line(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    line = await asyncio.wait_for(resp.content.readline(), scaled(5))
    assert line, "stream ended"
    out: dict[str, Any] = json.loads(line)
    return out


@pytest.mark.skipif(not HAS_JS, reason="node or tests/js/node_modules (npm ci --prefix tests/js) missing")
@pytest.mark.parametrize(("transport", "protocol"), [("http_stream", "json"), ("sse", "json"),
                                                     ("http_stream", "protobuf")])
def test_js_sdk_over_emulation(gateway_factory: Callable[..., Gateway], transport: str, protocol: str) -> None:
    gw = emulation_gateway(gateway_factory)
    channel = f"emu-{uuid.uuid4().hex[:10]}"
    script_timeout = scaled(20)
    env = {**os.environ, "SDK_TOKEN1": mint_token(SECRET, user="emu-a"), "SDK_TOKEN2": mint_token(SECRET, user="emu-b"),
           "SDK_PROTOCOL": protocol, "SDK_TIMEOUT_MS": str(int(script_timeout * 1000))}
    proc = subprocess.run([str(NODE), "emulation_roundtrip.mjs", http_base(gw), channel, transport], cwd=JS_DIR,
                          env=env, capture_output=True, text=True, timeout=script_timeout + scaled(10))
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}\ngateway log:\n{gw.log()}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["ok"] is True and result["transport"] == transport
    expected = [{"seq": i, "text": f"hello {i}"} for i in range(5)]
    assert result["received_a"] == expected and result["received_b"] == expected
    assert result["rpc"] == {"hello": "rpc", "n": 42}
    assert len(result["presence_before"]) == 2
    assert result["presence_after"] == [result["clients"]["b"]]
    posts = result["posts"]
    assert posts and all(p["status"] == 204 for p in posts), posts
    # No sticky sessions: some command reached a worker other than its stream's, and was forwarded.
    forwarded = [p for p in posts if p["slot"] != result["stream_slots"][p["client"]]]
    assert forwarded, f"every emulation POST landed on its stream's worker: {posts} {result['stream_slots']}"


async def test_emulation_bad_input(gateway_factory: Callable[..., Gateway]) -> None:
    gw = emulation_gateway(gateway_factory, emulation={"max_request_body_size": 1024},
                           http_stream={"enabled": True, "max_request_body_size": 2048})
    base = http_base(gw)
    token = mint_token(SECRET, user="raw")
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{base}/connection/http_stream", data=b"x" * 4096) as r:
            assert r.status == 413
        async with s.post(f"{base}/connection/http_stream", data=b"") as r:
            assert r.status == 400
        async with s.get(f"{base}/connection/http_stream") as r:
            assert r.status == 405
        async with s.get(f"{base}/connection/sse") as r:
            assert r.status == 400  # no cf_connect
        # A connect command that does not parse: the stream answers with a disconnect push and ends.
        async with s.post(f"{base}/connection/http_stream", data=b"{not json", headers=JSON_TYPE) as r:
            assert r.status == 200
            assert json.loads(await r.read()) == {"push": {"disconnect": {"code": 3501, "reason": "malformed json"}}}

        async with s.post(f"{base}/connection/http_stream",
                          data=json.dumps({"id": 1, "connect": {"token": token}}), headers=JSON_TYPE) as stream:
            connect = (await read_json_line(stream))["connect"]
            node = connect["node"]
            ok = {"session": connect["session"], "node": node, "data": json.dumps({"id": 2, "rpc": {"method": "echo"}})}
            cases: list[tuple[Any, int]] = [
                (b"x" * 2000, 413),
                (b"{oops", 400),
                (b"[]", 400),
                ({**ok, "data": {"id": 2}}, 400),  # data must be the commands as a string
                ({**ok, "session": "0" * 32}, 404),
                ({**ok, "node": "another-node/0"}, 404),
                ({**ok, "node": node.rsplit("/", 1)[0] + "/7"}, 404),
                (ok, 204),
            ]
            for body, status in cases:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                async with s.post(f"{base}/emulation", data=data, headers=JSON_TYPE) as r:
                    assert r.status == status, (body, r.status, await r.text())
            assert await read_json_line(stream) == {"id": 2, "rpc": {}}
            async with s.get(f"{base}/emulation") as r:
                assert r.status == 405
    assert "Traceback" not in gw.log()


async def test_origin_and_cors(gateway_factory: Callable[..., Gateway]) -> None:
    gw = emulation_gateway(gateway_factory, client={"allowed_origins": ["http://app.example"],
                                                    "token": {"hmac_secret_key": SECRET}})
    base = http_base(gw)
    connect = json.dumps({"id": 1, "connect": {"token": mint_token(SECRET, user="o")}})
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{base}/connection/http_stream", data=connect,
                          headers={**JSON_TYPE, "Origin": "http://evil.example"}) as r:
            assert r.status == 403
        async with s.get(f"{base}/connection/sse", params={"cf_connect": connect},
                         headers={"Origin": "http://evil.example"}) as r:
            assert r.status == 403
        async with s.options(f"{base}/emulation", headers={"Origin": "http://app.example",
                                                           "Access-Control-Request-Method": "POST",
                                                           "Access-Control-Request-Headers": "content-type"}) as r:
            assert r.status == 204
            assert r.headers["Access-Control-Allow-Origin"] == "http://app.example"
            assert "POST" in r.headers["Access-Control-Allow-Methods"]
            assert r.headers["Access-Control-Allow-Headers"] == "content-type"
        async with s.get(f"{base}/connection/sse", params={"cf_connect": connect},
                         headers={"Origin": "http://app.example"}) as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/event-stream")
            assert r.headers["Access-Control-Allow-Origin"] == "http://app.example"
            assert await asyncio.wait_for(r.content.readline(), scaled(5)) == b"\r\n"
            event = await asyncio.wait_for(r.content.readline(), scaled(5))
            assert event.startswith(b"data: {\"id\":1,\"connect\":")
            assert json.loads(event[6:])["connect"]["session"]


async def test_server_disconnect_and_client_leaving(gateway_factory: Callable[..., Gateway]) -> None:
    gw = emulation_gateway(gateway_factory)
    base = http_base(gw)
    channel = f"leave-{uuid.uuid4().hex[:8]}"
    async with aiohttp.ClientSession() as s:
        # Server-side disconnect: a disconnect push, then the stream ends.
        token = mint_token(SECRET, user="kicked", channels=[channel])
        async with s.post(f"{base}/connection/http_stream",
                          data=json.dumps({"id": 1, "connect": {"token": token}}), headers=JSON_TYPE) as stream:
            connect = (await read_json_line(stream))["connect"]
            assert channel in connect["subs"]
            await api(gw, "disconnect", {"user": "kicked", "disconnect": {"code": 4500, "reason": "bye"}})
            assert await read_json_line(stream) == {"push": {"disconnect": {"code": 4500, "reason": "bye"}}}
            assert await asyncio.wait_for(stream.content.read(), scaled(5)) == b""

        # The client goes away: its session ends with the stream (presence empties).
        token = mint_token(SECRET, user="leaver", channels=[channel])
        stream = await s.post(f"{base}/connection/http_stream",
                              data=json.dumps({"id": 1, "connect": {"token": token}}), headers=JSON_TYPE)
        await read_json_line(stream)

        async def present() -> int:
            return len((await api(gw, "presence", {"channel": channel}))["result"]["presence"])

        await wait_for(lambda: _eq(present(), 1), what="the streamed client in presence")
        stream.close()  # drops the connection
        await wait_for(lambda: _eq(present(), 0), what="the session to end with its stream")


async def _eq(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


async def test_slow_stream_reader_is_disconnected(gateway_factory: Callable[..., Gateway]) -> None:
    """A client that does not read its stream is disconnected (bounded buffering)."""
    gw = emulation_gateway(gateway_factory, client={"queue_max_size": 65536, "token": {"hmac_secret_key": SECRET}})
    channel = f"slow-{uuid.uuid4().hex[:8]}"
    parts = urlsplit(gw.url)
    token = mint_token(SECRET, user="slow", channels=[channel])
    body = json.dumps({"id": 1, "connect": {"token": token}}).encode()
    _reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.transport.set_write_buffer_limits(0)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    writer.write(b"POST /connection/http_stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    await writer.drain()

    async def present() -> int:
        return len((await api(gw, "presence", {"channel": channel}))["result"]["presence"])

    await wait_for(lambda: _eq(present(), 1), what="the slow client subscribed")
    payload = {"blob": "x" * 16000}
    # Never read: publish until the gateway gives up on the client (3008 slow).
    for _ in range(2000):
        await api(gw, "publish", {"channel": channel, "data": payload})
        if await present() == 0:
            break
    assert await present() == 0
    writer.close()


CHROMIUM = "/usr/bin/chromium"


def test_emulation_and_uni_sse_in_chromium(gateway_factory: Callable[..., Gateway], tmp_path: Any) -> None:
    """centrifuge-js over sse and http_stream, and a plain EventSource on uni_sse, in headless
    Chromium on the gateway's own origin (the page is /centrifuge.js: admin.demo_page)."""
    missing = None
    if not os.path.exists(CHROMIUM):
        missing = f"{CHROMIUM} is missing (apt-get install chromium)"
    elif NODE is None or not os.path.isdir(os.path.join(JS_DIR, "node_modules", "playwright-core")):
        missing = "node or tests/js/node_modules/playwright-core is missing"
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser test cannot run under CI=true: {missing}")
        pytest.skip(missing)
    gw = emulation_gateway(gateway_factory, uni_sse={"enabled": True}, admin={"demo_page": True})
    channel = f"br-{uuid.uuid4().hex[:8]}"
    script_timeout = scaled(40)
    env = {**os.environ, "E2E_BASE": http_base(gw), "E2E_TOKEN": mint_token(SECRET, user="browser"),
           "E2E_UNI_TOKEN": mint_token(SECRET, user="uni", channels=[channel]), "E2E_CHANNEL": channel,
           "E2E_OUT_DIR": str(tmp_path), "E2E_TIMEOUT_MS": str(int(script_timeout * 1000))}
    proc = subprocess.run([str(NODE), "browser_emulation.mjs"], cwd=JS_DIR, env=env, capture_output=True, text=True,
                          timeout=script_timeout + scaled(15))
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}\ngateway log:\n{gw.log()}"
    results = json.loads(proc.stdout.strip().splitlines()[-1])["results"]
    for transport in ("sse", "http_stream"):
        r = results[transport]
        assert r["connectedOver"] == transport
        assert r["got"] == [{"i": 0}, {"i": 1}, {"i": 2}]
        assert r["presence"] == 1 and r["rpc"] == {"hi": transport}
    uni = results["uni_sse"]
    assert channel in uni[0]["connect"]["subs"]
    assert {"channel": channel, "pub": uni[-1]["pub"]} == uni[-1] and uni[-1]["pub"]["data"] == {"via": "uni_sse"}
