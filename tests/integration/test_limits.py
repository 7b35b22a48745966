"""Limits against the live gateway: command rate (111, then 3013), connection limit (3504),
channel name rules (107), user-limited channels, the client channel limit (106)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.request

import websockets
from websockets.exceptions import ConnectionClosed

from gateway.config.schema import ShardgateConfig
from tests.conftest import API_KEY, SECRET, base_config, scaled
from tests.integration.rawclient import RawWS
from tests.integration.test_lifecycle import close_code, raw_connect
from tools.token import mint_token


async def _command(ws: websockets.ClientConnection, cmd: dict[str, object]) -> dict[str, object]:
    await ws.send(json.dumps(cmd))
    reply = json.loads(await asyncio.wait_for(ws.recv(), scaled(5)))
    assert isinstance(reply, dict)
    return reply


async def test_command_rate_111_then_3013(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    gw = gateway_factory(base_config(shardgate={"command_rate": 5, "command_burst": 10, "rpc_echo": True}))
    ws, _ = await raw_connect(gw.url)
    # connect took one token; the rest of the burst passes.
    batch = "\n".join(json.dumps({"id": i, "rpc": {"method": "echo", "data": i}}) for i in range(2, 11))
    await ws.send(batch)
    replies: list[dict[str, object]] = []
    while len(replies) < 9:  # replies of one tick arrive joined by newlines in one frame
        frame = await asyncio.wait_for(ws.recv(), scaled(5))
        replies += [json.loads(line) for line in str(frame).split("\n")]
    assert all("rpc" in r for r in replies)
    reply = await _command(ws, {"id": 20, "rpc": {"method": "echo", "data": 1}})
    assert reply == {"id": 20, "error": {"code": 111, "message": "too many requests", "temporary": True}}
    # A client that ignores the refusals is disconnected.
    await ws.send("\n".join(json.dumps({"id": 100 + i, "rpc": {"method": "echo"}}) for i in range(20)))
    assert await close_code(ws) == (3013, "too many requests")


async def test_command_rate_at_its_default_one_command_per_message(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    """The default limit (1000/s, burst 2000) on commands sent one per message, the request path's
    common case: the burst passes, then 111, and a client that keeps going is closed 3013."""
    defaults = ShardgateConfig()
    rate, burst = defaults.command_rate, defaults.command_burst
    assert (rate, burst) == (1000.0, 2000)
    gw = gateway_factory(base_config(), workers=1)
    ws, _ = await raw_connect(gw.url)
    calls = 3 * burst
    started = asyncio.get_running_loop().time()
    for i in range(calls):
        await ws.send(f'{{"id":{i + 2},"rpc":{{"method":"echo","data":{i}}}}}')
    codes: list[int] = []
    with contextlib.suppress(ConnectionClosed):
        async with asyncio.timeout(scaled(20)):
            while True:
                for line in str(await ws.recv()).split("\n"):
                    reply = json.loads(line)
                    codes.append(reply["error"]["code"] if "error" in reply else 0)
    elapsed = asyncio.get_running_loop().time() - started
    assert ws.close_code == 3013, (ws.close_code, len(codes))
    ok, refused = codes.count(0), codes.count(111)
    assert ok + refused == len(codes)
    assert codes[:burst - 1] == [0] * (burst - 1), ok  # the burst (less the connect's token) passed first
    assert refused, "no error 111 before the close"
    assert ok <= burst + rate * elapsed + 1, (ok, elapsed)
    assert refused <= burst + rate * elapsed + 1, (refused, elapsed)


async def test_connection_limit_3504(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    gw = gateway_factory(base_config(client={"token": {"hmac_secret_key": SECRET}, "connection_limit": 1}),
                         workers=1)
    first, _ = await raw_connect(gw.url)
    second = await websockets.connect(gw.url, ping_interval=None)
    await second.send(json.dumps({"id": 1, "connect": {"token": mint_token(SECRET, user="b")}}))
    assert await close_code(second) == (3504, "connection limit")
    await first.close()


async def test_channel_rules_and_user_limited_channels(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    cfg = base_config()
    cfg["channel"]["namespaces"].append({"name": "dialog", "allow_user_limited_channels": True})
    gw = gateway_factory(cfg, workers=1)
    ws, _ = await raw_connect(gw.url, user="42")
    bad = ["with space", "tab\there", "x" * 256, "ünïcode"]
    for i, channel in enumerate(bad):
        reply = await _command(ws, {"id": 10 + i, "subscribe": {"channel": channel}})
        assert reply["error"] == {"code": 107, "message": "bad request: invalid channel name"}, channel  # type: ignore[index]
    assert "subscribe" in await _command(ws, {"id": 20, "subscribe": {"channel": "dialog:chat#42,43"}})
    reply = await _command(ws, {"id": 21, "subscribe": {"channel": "dialog:chat#7,8"}})
    assert reply["error"]["code"] == 103  # type: ignore[index]
    reply = await _command(ws, {"id": 22, "subscribe": {"channel": "dialog:other"}})
    assert reply["error"]["code"] == 103  # type: ignore[index]
    await ws.close()


async def test_client_channel_limit_106(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    gw = gateway_factory(base_config(client={"token": {"hmac_secret_key": SECRET}, "channel_limit": 3}),
                         workers=1)
    ws, _ = await raw_connect(gw.url)
    for i in range(3):
        assert "subscribe" in await _command(ws, {"id": 10 + i, "subscribe": {"channel": f"c{i}"}})
    reply = await _command(ws, {"id": 20, "subscribe": {"channel": "c9"}})
    assert reply["error"] == {"code": 106, "message": "limit exceeded"}  # type: ignore[index]
    await ws.close()


async def test_user_connection_limit_3504(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    """client.user_connection_limit = 1: a user's second connection is closed 3504; another
    user still connects. The same gateway has health and prometheus turned off: 404."""
    import urllib.error
    import urllib.request

    cfg = base_config(client={"token": {"hmac_secret_key": SECRET}, "user_connection_limit": 1},
                      health={"enabled": False}, prometheus={"enabled": False})
    gw = gateway_factory(cfg, workers=1)
    first, _ = await raw_connect(gw.url, user="alice")
    second = await websockets.connect(gw.url, ping_interval=None)
    await second.send(json.dumps({"id": 1, "connect": {"token": mint_token(SECRET, user="alice")}}))
    assert await close_code(second) == (3504, "connection limit")
    other, _ = await raw_connect(gw.url, user="bob")
    for path in ("/health", "/metrics"):
        try:
            urllib.request.urlopen(gw.internal_url + path, timeout=scaled(2))
            raise AssertionError(f"{path} answered")
        except urllib.error.HTTPError as exc:
            assert exc.code == 404, path
    await first.close()
    await other.close()


async def test_subscribe_to_user_personal_channel(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    """client.subscribe_to_user_personal_channel: the connect reply carries the user's personal
    channel as a server-side subscription, and a publication to it reaches the connection."""
    cfg = base_config()
    cfg["client"]["subscribe_to_user_personal_channel"] = {"enabled": True, "personal_channel_namespace": "plain"}
    gw = gateway_factory(cfg, workers=2)
    ws = await RawWS.open(gw.url)
    try:
        result = await ws.connect(mint_token(SECRET, user="42"))
        assert "plain:#42" in result.get("subs", {}), result
        body = json.dumps({"channel": "plain:#42", "data": {"hello": "you"}}).encode()
        request = urllib.request.Request(gw.internal_url + "/api/publish", data=body, method="POST",
                                         headers={"X-API-Key": API_KEY})
        await asyncio.to_thread(lambda: urllib.request.urlopen(request, timeout=scaled(5)).read())
        push = None
        for _ in range(10):
            for line in await ws.recv_json_lines(timeout=scaled(5)):
                if "push" in line and "pub" in line["push"]:
                    push = line["push"]
            if push is not None:
                break
        assert push == {"channel": "plain:#42", "pub": {"data": {"hello": "you"}}}, push
    finally:
        await ws.aclose()
