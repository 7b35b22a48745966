"""Token settings against the real gateway: ``audience``, JWKS from a file and over HTTP.

Keys are generated per test with ``cryptography``; the JWKS document is written to
``tmp_path`` or served by a tiny ``http.server`` thread on 127.0.0.1:0.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
import websockets
from cryptography.hazmat.primitives.asymmetric import rsa
from websockets.exceptions import ConnectionClosed

from tests.conftest import API_KEY, SECRET, Gateway, base_config, scaled, wait_for


def new_rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    return {**data, "kid": kid, "use": "sig"}


def rs256(key: rsa.RSAPrivateKey, kid: str, **claims: Any) -> str:
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


async def connect_result(url: str, token: str) -> tuple[dict[str, Any] | None, int | None]:
    """(connect reply, None) or (None, close code); the socket is closed either way."""
    ws = await websockets.connect(url, max_size=None, ping_interval=None)
    try:
        await ws.send(json.dumps({"id": 1, "connect": {"token": token}}))
        reply = json.loads(await asyncio.wait_for(ws.recv(), scaled(5)))
        assert "connect" in reply, reply
        return reply["connect"], None
    except ConnectionClosed as exc:
        assert exc.rcvd is not None, "closed without a CLOSE frame"
        return None, exc.rcvd.code
    finally:
        await ws.close()


async def close_code(ws: Any) -> int:
    try:
        async with asyncio.timeout(scaled(5)):
            while True:
                await ws.recv()
    except ConnectionClosed as exc:
        assert exc.rcvd is not None, "closed without a CLOSE frame"
        return int(exc.rcvd.code)
    raise AssertionError("unreachable")


async def test_jwks_file_and_audience(gateway_factory: Callable[..., Gateway], tmp_path: Path) -> None:
    key = new_rsa()
    jwks_path = tmp_path / "jwks.json"
    jwks_path.write_text(json.dumps({"keys": [jwk(key, "k1")]}))
    gw = gateway_factory(base_config(client={"token": {
        "hmac_secret_key": SECRET,
        "jwks_public_endpoint": jwks_path.resolve().as_uri(),
        "audience": "shardgate-tests",
    }}), workers=1)

    # A JWKS-signed token with the right audience connects.
    ws = await websockets.connect(gw.url, max_size=None, ping_interval=None)
    try:
        await ws.send(json.dumps({"id": 1, "connect": {"token": rs256(key, "k1", sub="ann", aud="shardgate-tests")}}))
        reply = json.loads(await asyncio.wait_for(ws.recv(), scaled(5)))
        assert "client" in reply["connect"], reply
        client_id = reply["connect"]["client"]

        # An RS256 JWKS subscription token opens a channel that needs one ("locked" namespace).
        sub_token = rs256(key, "k1", sub="ann", channel="locked:room", aud="shardgate-tests", client=client_id)
        await ws.send(json.dumps({"id": 2, "subscribe": {"channel": "locked:room", "token": sub_token}}))
        reply = json.loads(await asyncio.wait_for(ws.recv(), scaled(5)))
        assert reply.get("id") == 2 and "subscribe" in reply, reply

        # The same token for another client ID: the `client` claim mismatch disconnects 3500.
        other = rs256(key, "k1", sub="ann", channel="locked:other", aud="shardgate-tests", client="someone-else")
        await ws.send(json.dumps({"id": 3, "subscribe": {"channel": "locked:other", "token": other}}))
        assert await close_code(ws) == 3500
    finally:
        await ws.close()

    # Wrong audience (genuine signature) and no audience: invalid token, close 3500.
    for claims in ({"aud": "someone-else"}, {}):
        result, code = await connect_result(gw.url, rs256(key, "k1", sub="bob", **claims))
        assert result is None and code == 3500, claims
    # HMAC tokens still work alongside JWKS (with the audience).
    result, _ = await connect_result(gw.url, jwt.encode({"sub": "h", "aud": "shardgate-tests"}, SECRET))
    assert result is not None


class JwksServer:
    """Serves ``document`` at /jwks.json from a thread; counts the requests."""

    def __init__(self) -> None:
        self.document: dict[str, Any] = {"keys": []}
        self.hits = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hits += 1
                body = json.dumps(server.document).encode()
                self.send_response(200 if self.path == "/jwks.json" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def jwks_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[JwksServer]:
    # The gateway's urllib honours *_proxy variables; the test server is local.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    server = JwksServer()
    yield server
    server.close()


async def test_jwks_over_http_unknown_kid_refreshes_in_background(
    gateway_factory: Callable[..., Gateway], jwks_server: JwksServer
) -> None:
    old_key, new_key = new_rsa(), new_rsa()
    jwks_server.document = {"keys": [jwk(old_key, "old")]}
    gw = gateway_factory(base_config(client={"token": {
        "jwks_public_endpoint": jwks_server.url,
        "audience": "shardgate-tests",
    }}), workers=1)
    # The worker prefetches the JWKS in a background thread after it starts.
    await wait_for(lambda: jwks_server.hits >= 1, timeout=10, what="JWKS prefetch")

    async def connects(token: str) -> bool:
        result, code = await connect_result(gw.url, token)
        assert result is not None or code == 3500, code
        return result is not None

    old_token = rs256(old_key, "old", sub="ann", aud="shardgate-tests")
    await wait_for(lambda: connects(old_token), timeout=10, what="connect with the prefetched key", interval=0.05)

    # The key rotates at the identity provider: a token with the new kid is not in the cache.
    hits = jwks_server.hits
    jwks_server.document = {"keys": [jwk(old_key, "old"), jwk(new_key, "new")]}
    new_token = rs256(new_key, "new", sub="bob", aud="shardgate-tests")
    result, code = await connect_result(gw.url, new_token)
    assert result is None and code == 3500  # invalid while the refresh runs in the background
    await wait_for(lambda: jwks_server.hits > hits, timeout=10, what="JWKS refresh request")
    await wait_for(lambda: connects(new_token), timeout=10, what="connect after the refresh", interval=0.05)
    # One refresh served that: unknown kids are rate-limited to one refresh per 30 s.
    assert jwks_server.hits == hits + 1
    # A wrong audience is still refused with the fetched key.
    result, code = await connect_result(gw.url, rs256(new_key, "new", sub="bob", aud="x"))
    assert result is None and code == 3500


# --------------------------------------------------------------------------------------------
# Absurd claims: an invalid token (3500 / 103), and nothing registered
# --------------------------------------------------------------------------------------------

def clients_on_all_workers(gw: Gateway) -> int:
    req = urllib.request.Request(gw.internal_url + "/api/info", method="POST", data=b"{}",
                                 headers={"Content-Type": "application/json", "X-API-Key": API_KEY})
    with urllib.request.urlopen(req, timeout=scaled(5)) as resp:
        nodes = json.loads(resp.read())["result"]["nodes"]
    assert len(nodes) == gw.workers, nodes
    return sum(int(n["num_clients"]) for n in nodes)


async def test_absurd_exp_closes_3500_and_leaves_no_connection(gateway: Gateway) -> None:
    control = await websockets.connect(gateway.url, max_size=None, ping_interval=None)
    try:
        await control.send(json.dumps({"id": 1, "connect": {"token": jwt.encode(
            {"sub": "control", "exp": int(time.time()) + 3600}, SECRET, algorithm="HS256")}}))
        assert "connect" in json.loads(await asyncio.wait_for(control.recv(), scaled(5)))
        assert clients_on_all_workers(gateway) == 1

        # Each refused socket stays open until the server closes it: a connect answered
        # with an error reply instead (the old 107) would count as a connection here.
        for claims in ({"exp": 1e20}, {"exp": 10**30}, {"expire_at": 1e20}, {"iat": 1e20},
                       {"nbf": -1e20}, {"info": {"n": 2**64}}):
            ws = await websockets.connect(gateway.url, max_size=None, ping_interval=None)
            try:
                await ws.send(json.dumps({"id": 1, "connect": {"token": jwt.encode(
                    {"sub": "u1", **claims}, SECRET, algorithm="HS256")}}))
                assert await close_code(ws) == 3500, claims
                assert ws.close_reason == "invalid token"
            finally:
                await ws.close()
        assert clients_on_all_workers(gateway) == 1

        # The same claims in a subscription token: error 103, and no subscription.
        sub_token = jwt.encode({"sub": "control", "channel": "$absurd", "exp": 1e20}, SECRET, algorithm="HS256")
        await control.send(json.dumps({"id": 2, "subscribe": {"channel": "$absurd", "token": sub_token}}))
        reply = json.loads(await asyncio.wait_for(control.recv(), scaled(5)))
        assert reply == {"id": 2, "error": {"code": 103, "message": "permission denied"}}
        await control.send(json.dumps({"id": 3, "rpc": {"method": "echo", "data": "still here"}}))
        assert json.loads(await asyncio.wait_for(control.recv(), scaled(5))) == {"id": 3, "rpc": {"data": "still here"}}
    finally:
        await control.close()
