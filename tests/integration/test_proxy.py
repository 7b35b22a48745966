"""Centrifugo proxy end to end: a real aiohttp backend (tests/integration/proxy_backend.py) on
127.0.0.1, a 2-worker gateway subprocess, centrifuge-python clients (and the raw JSON client
where the exact reply or CLOSE code matters).

Connect through the proxy (user, info, data, server-side channels and subs from the backend),
refresh proxy, subscribe allow/deny, publish rewrite/refuse, rpc, named proxies, upgrade
headers forwarded, connection meta included, a backend down or slow gives error 100 within its
timeout while the connection keeps working, and a backend's disconnect reaches the client."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from centrifuge import Client, ReplyError, ServerSubscribedContext, SubscriptionErrorContext

from tests.conftest import API_KEY, Gateway, base_config, scaled, wait_for
from tests.integration import sdk
from tests.integration.proxy_backend import Backend, closed_port_url
from tests.integration.rawclient import JsonClient

SLOW_TIMEOUT = 0.3  # seconds: the "hang" named proxy's timeout


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    b = await Backend().start()
    yield b
    await b.stop()


def proxy_config(url: str, *, connect_timeout: str = "1s") -> dict[str, Any]:
    cfg = base_config()
    cfg["client"]["proxy"] = {
        "connect": {"enabled": True, "endpoint": f"{url}/connect", "timeout": connect_timeout,
                    "http_headers": ["Cookie", "X-User", "X-Trace"],
                    "http": {"static_headers": {"X-Static": "static", "X-Trace": "from-static"}}},
        "refresh": {"enabled": True, "endpoint": f"{url}/refresh", "include_connection_meta": True},
    }
    cfg["channel"] = copy.deepcopy(cfg["channel"])
    cfg["channel"]["proxy"] = {
        "subscribe": {"endpoint": f"{url}/subscribe", "include_connection_meta": True, "http_headers": ["x-trace"]},
        "publish": {"endpoint": f"{url}/publish"},
        "sub_refresh": {"endpoint": f"{url}/sub_refresh"},
    }
    proxied = {"allow_publish_for_subscriber": True, "presence": True,
               "subscribe_proxy_enabled": True, "publish_proxy_enabled": True, "sub_refresh_proxy_enabled": True}
    cfg["channel"]["namespaces"] = [
        *cfg["channel"]["namespaces"],
        {"name": "px", "history_size": 10, "history_ttl": "60s", **proxied},
        {"name": "slow", **proxied, "subscribe_proxy_name": "hang", "publish_proxy_name": "hang"},
        {"name": "down", **proxied, "subscribe_proxy_name": "down", "publish_proxy_name": "down"},
        {"name": "named", "allow_subscribe_for_client": True, "publish_proxy_enabled": True,
         "publish_proxy_name": "other"},
    ]
    cfg["rpc"] = {
        "proxy": {"endpoint": f"{url}/rpc", "include_connection_meta": True, "http_headers": ["x-trace"]},
        "without_namespace": {"proxy_enabled": True},
        "namespaces": [
            {"name": "slow", "proxy_enabled": True, "proxy_name": "hang"},
            {"name": "down", "proxy_enabled": True, "proxy_name": "down"},
            {"name": "other", "proxy_enabled": True, "proxy_name": "other"},
            {"name": "off"},
        ],
    }
    cfg["proxies"] = [
        {"name": "hang", "endpoint": f"{url}/hang", "timeout": f"{int(SLOW_TIMEOUT * 1000)}ms"},
        {"name": "down", "endpoint": closed_port_url()},
        {"name": "other", "endpoint": f"{url}/other"},
    ]
    return cfg


@pytest.fixture
def proxied_gateway(backend: Backend, gateway_factory: Callable[..., Gateway]) -> Gateway:
    return gateway_factory(proxy_config(backend.url))


@dataclass
class ErrSubEvents(sdk.SubEvents):
    errors: list[SubscriptionErrorContext] = field(default_factory=list)

    async def on_error(self, ctx: SubscriptionErrorContext) -> None:
        self.errors.append(ctx)


@dataclass
class ProxyClientEvents(sdk.ClientEvents):
    server_subs: list[ServerSubscribedContext] = field(default_factory=list)

    async def on_subscribed(self, ctx: ServerSubscribedContext) -> None:
        self.server_subs.append(ctx)


async def proxy_connect(url: str, user: str = "bob", **kwargs: Any) -> tuple[Client, ProxyClientEvents]:
    """A centrifuge-python client without a token: the connect proxy decides (``X-User``
    upgrade header unless ``headers`` says otherwise)."""
    kwargs.setdefault("headers", {"X-User": user})
    events = ProxyClientEvents()
    client = Client(url, events=events, timeout=scaled(5), min_reconnect_delay=0.05, max_reconnect_delay=0.5,
                    **kwargs)
    await client.connect()
    await wait_for(lambda: bool(events.connected), what="connected")
    return client, events


# ------------------------------------------------------------------------------- connect


async def test_connect_through_proxy_gets_user_channels_and_subs(proxied_gateway: Gateway,
                                                                   backend: Backend) -> None:
    client, events = await proxy_connect(proxied_gateway.url, "bob", data={"hi": 1}, name="tester",
                                         version="9.9", headers={"X-User": "bob", "X-Trace": "t-1",
                                                                 "X-Hidden": "no"})
    try:
        ctx = events.connected[0]
        assert ctx.data == {"welcome": "bob"}
        (req,) = backend.requests("connect")
        body = req.body
        assert body["client"] == ctx.client and body["transport"] == "websocket"
        assert body["protocol"] == "json" and body["encoding"] == "json"
        assert body["data"] == {"hi": 1} and body["name"] == "tester" and body["version"] == "9.9"
        # http_headers forwarded (the transport's value wins over a static one); others not.
        assert req.headers["x-user"] == "bob" and req.headers["x-trace"] == "t-1"
        assert req.headers["x-static"] == "static" and "x-hidden" not in req.headers
        assert req.headers["content-type"] == "application/json"
        # Server-side channels from the backend: "news" (channels) and "px:granted" (subs),
        # with the sub's info (presence chan_info) and data.
        await wait_for(lambda: len(events.server_subs) == 2, what="server-side subscriptions")
        subs = {ctx.channel: ctx for ctx in events.server_subs}
        assert set(subs) == {"news", "px:granted"}
        assert subs["px:granted"].data == {"hello": "bob"}
        api = await _api(proxied_gateway, "presence", {"channel": "px:granted"})
        (entry,) = api["result"]["presence"].values()
        assert entry["user"] == "bob" and entry["conn_info"] == {"name": "Bob"}
        assert entry["chan_info"] == {"role": "reader"}
    finally:
        await sdk.disconnect_all(client)


async def _api(gw: Gateway, method: str, body: dict[str, Any]) -> dict[str, Any]:
    def call() -> dict[str, Any]:
        req = urllib.request.Request(f"{gw.internal_url}/api/{method}", data=json.dumps(body).encode(),
                                     headers={"X-API-Key": API_KEY, "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=scaled(5)) as resp:
            out: dict[str, Any] = json.loads(resp.read())
            return out

    return await asyncio.to_thread(call)


async def test_connect_refused_kicked_failed_and_slow(proxied_gateway: Gateway, backend: Backend) -> None:
    url = proxied_gateway.url
    cases: list[tuple[dict[str, Any], dict[str, Any] | None, int | None]] = [
        ({"deny": True}, {"code": 1000, "message": "not welcome"}, None),
        ({"fail": True}, {"code": 100, "message": "internal server error", "temporary": True}, None),
        ({"kick": True}, None, 4501),
    ]
    for data, error, close_code in cases:
        ws = await JsonClient.open(url)
        try:
            if close_code is None:
                reply = await ws.request("connect", {"data": data})
                assert reply["error"] == error, (data, reply)
            else:
                await ws.send({"id": 1, "connect": {"data": data}})
                code, reason = await ws.expect_close()
                assert (code, reason) == (close_code, "go away")
        finally:
            await ws.ws.close()


async def test_connect_proxy_timeout_is_error_100_within_the_timeout(backend: Backend,
                                                                     gateway_factory: Callable[..., Gateway]
                                                                     ) -> None:
    gw = gateway_factory(proxy_config(backend.url, connect_timeout="300ms"))
    ws = await JsonClient.open(gw.url)
    try:
        started = time.monotonic()
        reply = await ws.request("connect", {"data": {"hang": True}})
        assert reply["error"] == {"code": 100, "message": "internal server error", "temporary": True}
        assert time.monotonic() - started < scaled(2.0)
    finally:
        await ws.ws.close()
    # The SDK sees the temporary error and keeps trying; a good connect still works.
    client, _ = await proxy_connect(gw.url, "carol")
    await sdk.disconnect_all(client)


async def test_browserless_cookie_connect(proxied_gateway: Gateway, backend: Backend) -> None:
    """The Cookie header of the upgrade request reaches the connect proxy (no token at all)."""
    client, events = await proxy_connect(proxied_gateway.url, headers={"Cookie": "session=dave; x=1"})
    try:
        assert events.connected[0].data == {"welcome": "dave"}
        assert backend.requests("connect")[-1].headers["cookie"] == "session=dave; x=1"
    finally:
        await sdk.disconnect_all(client)


# ------------------------------------------------------------------------------- refresh


async def test_refresh_proxy_extends_the_connection_server_side(proxied_gateway: Gateway,
                                                                backend: Backend) -> None:
    client, events = await proxy_connect(proxied_gateway.url, "erin", data={"expire_in": 1})
    try:
        await wait_for(lambda: bool(backend.requests("refresh")), timeout=5, what="refresh proxy call")
        req = backend.requests("refresh")[0]
        assert req.body["user"] == "erin" and req.body["client"] == client.client_id
        assert req.body["meta"] == {"plan": "gold", "user": "erin"}  # include_connection_meta
        # Extended with new meta and info: later proxy calls carry the new meta, and a new
        # subscription's presence shows the new conn_info.
        async def meta_refreshed() -> bool:
            return bool((await client.rpc("m", {})).data["meta"] == {"plan": "platinum"})

        await wait_for(meta_refreshed, what="refreshed meta")
        await sdk.subscribe(client, "px:after-refresh")
        api = await _api(proxied_gateway, "presence", {"channel": "px:after-refresh"})
        (entry,) = api["result"]["presence"].values()
        assert entry["conn_info"] == {"refreshed": True}
        assert not events.disconnected
    finally:
        await sdk.disconnect_all(client)


# ------------------------------------------------------------------------------- subscribe


async def test_subscribe_proxy_allows_and_denies(proxied_gateway: Gateway, backend: Backend) -> None:
    client, _ = await proxy_connect(proxied_gateway.url, "frank", headers={"X-User": "frank", "X-Trace": "sub"})
    try:
        _sub, sub_events = await sdk.subscribe(client, "px:room", data={"want": "in"})
        ctx = sub_events.subscribed[0]
        assert ctx.data == {"granted": "px:room"}
        (req,) = [r for r in backend.requests("subscribe") if r.body["channel"] == "px:room"]
        assert req.body["user"] == "frank" and req.body["data"] == {"want": "in"}
        assert req.body["meta"] == {"plan": "gold", "user": "frank"}
        assert req.headers["x-trace"] == "sub"
        api = await _api(proxied_gateway, "presence", {"channel": "px:room"})
        (entry,) = api["result"]["presence"].values()
        assert entry["chan_info"] == {"sub": "px:room"}

        denied = ErrSubEvents()
        deny = client.new_subscription("px:deny", denied)
        await deny.subscribe()
        await wait_for(lambda: bool(denied.unsubscribed), what="denied subscription")
        assert denied.unsubscribed[0].code == 1001
    finally:
        await sdk.disconnect_all(client)


async def test_sub_refresh_proxy_keeps_a_short_subscription(proxied_gateway: Gateway, backend: Backend) -> None:
    client, _ = await proxy_connect(proxied_gateway.url, "gina")
    try:
        _sub, sub_events = await sdk.subscribe(client, "px:short")
        # The backend extends by one second each time: a second call proves the first answer
        # was applied (a new expiry scheduled) and the subscription kept.
        await wait_for(lambda: len(backend.requests("sub_refresh")) >= 2, timeout=8, what="sub_refresh calls")
        req = backend.requests("sub_refresh")[0]
        assert req.body["channel"] == "px:short" and req.body["user"] == "gina"
        assert not sub_events.unsubscribed
        api = await _api(proxied_gateway, "presence", {"channel": "px:short"})
        assert len(api["result"]["presence"]) == 1
    finally:
        await sdk.disconnect_all(client)


# ------------------------------------------------------------------------------- publish


async def test_publish_proxy_rewrites_refuses_and_skips_history(proxied_gateway: Gateway,
                                                                backend: Backend) -> None:
    client, _ = await proxy_connect(proxied_gateway.url, "hank")
    try:
        _sub, sub_events = await sdk.subscribe(client, "px:pub")
        await client.publish("px:pub", {"text": "hi"})
        await wait_for(lambda: bool(sub_events.pubs), what="rewritten publication")
        assert sub_events.pubs[0][1] == {"rewritten": {"text": "hi"}}
        req = next(r for r in backend.requests("publish") if r.body["channel"] == "px:pub")
        assert req.body["user"] == "hank" and req.body["data"] == {"text": "hi"}

        with pytest.raises(ReplyError) as info:
            await client.publish("px:pub", {"bad": 1})
        assert info.value.code == 1002

        await client.publish("px:pub", {"skip": True})
        await wait_for(lambda: len(sub_events.pubs) == 2, what="skip_history publication")
        history = await _api(proxied_gateway, "history", {"channel": "px:pub", "limit": 10})
        datas = [p["data"] for p in history["result"]["publications"]]
        assert datas == [{"rewritten": {"text": "hi"}}]

        # A named proxy (proxies[].name = "other") for the "named" namespace.
        _, named_events = await sdk.subscribe(client, "named:x")
        await client.publish("named:x", {"n": 1})
        await wait_for(lambda: bool(named_events.pubs), what="named proxy publication")
        assert named_events.pubs[0][1] == {"named": {"n": 1}}
    finally:
        await sdk.disconnect_all(client)


# ------------------------------------------------------------------------------- rpc


async def test_rpc_proxy_default_named_errors_and_disconnect(proxied_gateway: Gateway, backend: Backend) -> None:
    client, events = await proxy_connect(proxied_gateway.url, "ivy", headers={"X-User": "ivy", "X-Trace": "r"})
    try:
        result = await client.rpc("sum", {"a": 1})
        assert result.data == {"method": "sum", "got": {"a": 1}, "user": "ivy",
                               "meta": {"plan": "gold", "user": "ivy"}}
        req = backend.requests("rpc")[-1]
        assert req.headers["x-trace"] == "r" and req.body["encoding"] == "json"
        assert (await client.rpc("other:x", {})).data == {"named": True}
        assert (await client.rpc("echo", 5)).data == 5  # a local method wins over the proxy
        with pytest.raises(ReplyError) as info:
            await client.rpc("fail", {})
        assert (info.value.code, info.value.temporary) == (1003, True)
        with pytest.raises(ReplyError) as info:
            await client.rpc("nowhere:x", {})
        assert info.value.code == 104  # no such rpc namespace
        with pytest.raises(ReplyError) as info:
            await client.rpc("off:x", {})
        assert info.value.code == 108  # namespace without proxy
        kick = asyncio.ensure_future(client.rpc("kick", {}))
        await wait_for(lambda: bool(events.disconnected), what="disconnect from the backend")
        assert events.disconnected[0].code == 4502
        kick.cancel()
        await asyncio.gather(kick, return_exceptions=True)
    finally:
        await sdk.disconnect_all(client)


# ------------------------------------------------------------------------------- failures


async def test_backend_slow_or_down_gives_error_100_and_the_connection_stays(proxied_gateway: Gateway,
                                                                             backend: Backend) -> None:
    client, events = await proxy_connect(proxied_gateway.url, "jack")
    try:
        for method in ("slow:work", "down:work"):
            started = time.monotonic()
            slow = asyncio.ensure_future(client.rpc(method, {}))
            # Another command answers while the proxied one waits.
            assert (await client.rpc("echo", "meanwhile")).data == "meanwhile"
            with pytest.raises(ReplyError) as info:
                await slow
            assert (info.value.code, info.value.temporary) == (100, True)
            assert time.monotonic() - started < scaled(2.0)
        with pytest.raises(ReplyError) as info:
            await client.publish("slow:x", {"a": 1})
        assert info.value.code == 100
        with pytest.raises(ReplyError) as info:
            await client.publish("down:x", {"a": 1})
        assert info.value.code == 100
        for channel in ("slow:s", "down:s"):
            sub_events = ErrSubEvents()
            sub = client.new_subscription(channel, sub_events)
            await sub.subscribe()
            await wait_for(lambda e=sub_events: bool(e.errors), what=f"subscribe error on {channel}")
            assert sub_events.errors[0].error.code == 100
            await sub.unsubscribe()
        assert (await client.rpc("echo", "still")).data == "still"
        assert not events.disconnected
        assert len(backend.requests("hang")) >= 2
    finally:
        await sdk.disconnect_all(client)


async def test_client_gone_mid_call_leaves_the_worker_healthy(proxied_gateway: Gateway, backend: Backend) -> None:
    ws = await JsonClient.open(proxied_gateway.url)
    await ws.request("connect", {"data": {"user": "kim"}})
    await ws.send({"id": 9, "rpc": {"method": "slow:x", "data": {}}})
    await wait_for(lambda: bool(backend.requests("hang")), what="hanging call")
    await ws.ws.close()
    client, _ = await proxy_connect(proxied_gateway.url, "lee")
    try:
        assert (await client.rpc("echo", 1)).data == 1
        assert proxied_gateway.proc.poll() is None
        assert "Traceback" not in proxied_gateway.log()
    finally:
        await sdk.disconnect_all(client)


async def test_subscribe_disconnect_from_backend(proxied_gateway: Gateway) -> None:
    client, events = await proxy_connect(proxied_gateway.url, "max")
    try:
        sub = client.new_subscription("px:kick", sdk.SubEvents())
        await sub.subscribe()
        await wait_for(lambda: bool(events.disconnected), what="disconnect")
        assert events.disconnected[0].code == 4501
    finally:
        await sdk.disconnect_all(client)


# ------------------------------------------------------------------------------- browser


async def test_browser_connects_with_only_a_cookie(backend: Backend, gateway_factory: Callable[..., Gateway],
                                                   tmp_path: Path) -> None:
    """Headless Chromium on the gateway's own origin (the demo chat page, centrifuge-js) with a
    ``session`` cookie and no token: the connect proxy gets the Cookie and names the user."""
    from tests.integration.test_browser import JS_DIR, NODE, _missing

    missing = _missing()
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser test cannot run under CI=true: {missing}")
        pytest.skip(f"browser test skipped: {missing}")
    cfg = base_config()
    cfg["client"]["proxy"] = {"connect": {"enabled": True, "endpoint": f"{backend.url}/connect",
                                          "http_headers": ["cookie"]}}
    cfg["admin"] = {"demo_page": True}
    cfg["channel"] = {**cfg["channel"], "namespaces": [{"name": "px", "presence": True}]}  # the backend's subs
    gw = gateway_factory(cfg)
    user = f"alice{uuid.uuid4().hex[:6]}"
    channel = f"cookie-{uuid.uuid4().hex[:8]}"
    script_timeout = scaled(30)
    env = {**os.environ, "E2E_DEMO_URL": gw.url.replace("ws://", "http://").replace("/connection/websocket", "/"),
           "E2E_CHANNEL": channel, "E2E_COOKIE": user, "E2E_OUT_DIR": str(tmp_path),
           "E2E_TIMEOUT_MS": str(int(script_timeout * 1000))}
    assert NODE is not None
    proc = await asyncio.create_subprocess_exec(NODE, str(JS_DIR / "proxy_cookie_e2e.mjs"), cwd=JS_DIR, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), script_timeout + scaled(15))
    except TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail(f"browser script did not exit\ngateway log:\n{gw.log()}")
    assert proc.returncode == 0, (f"browser script failed (rc {proc.returncode})\nstdout:\n{out.decode()}\n"
                                  f"stderr:\n{err.decode()}\ngateway log:\n{gw.log()}")
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert result["ok"] is True and any(p.startswith(user + " ") for p in result["presence"])
    (req,) = [r for r in backend.requests("connect") if r.headers.get("cookie") == f"session={user}"]
    assert "token" not in req.body and req.body["transport"] == "websocket"
