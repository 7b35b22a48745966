"""The embedded development default (``shardgate serve`` without ``--config``) against a real
gateway: a browser page on another origin upgrades and namespaced channels just work. With a
config file, a refused Origin is a 403 logged once naming Origin, Host and
``client.allowed_origins``; ``--allowed-origin`` lets that Origin in; unknown namespaces stay 102."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.conftest import Gateway, scaled, wait_for
from tests.integration.rawclient import RawWS
from tests.integration.sdk import token

DEV_SERVER_ORIGIN = "http://localhost:5173"


def browser_headers(gw: Gateway, origin: str) -> dict[str, str]:
    return {**RawWS.default_headers(gw.url), "Origin": origin}


async def request(raw: RawWS, method: str, body: dict[str, Any]) -> dict[str, Any]:
    """Send one command; return its reply (pushes that arrive first are skipped)."""
    cmd_id = raw.next_id()
    await raw.send_json({"id": cmd_id, method: body})
    while True:
        for reply in await raw.recv_json_lines():
            if reply.get("id") == cmd_id:
                return reply


def refusal_lines(gw: Gateway) -> list[str]:
    return [line for line in gw.log().splitlines() if "refused WebSocket upgrade" in line]


async def test_dev_default_any_origin_and_any_namespace(tmp_path: Path) -> None:
    gw = Gateway(tmp_path, None, 2)
    try:
        gw.wait_ready()
        assert gw.dev_secret and gw.dev_token
        banner = " ".join(gw.banner.split())
        assert "anonymous connects and any Origin allowed" in banner and "in any namespace" in banner
        resp, raw = await RawWS.handshake_only(gw.url, browser_headers(gw, DEV_SERVER_ORIGIN))
        assert resp.status == 101, resp
        assert raw is not None
        try:
            await raw.connect(gw.dev_token)
            for channel in ("chat:room", "news:today", "plain"):
                reply = await request(raw, "subscribe", {"channel": channel})
                assert reply["subscribe"]["recoverable"] is True, reply
                assert await request(raw, "publish", {"channel": channel, "data": {"c": channel}}) == {
                    "id": reply["id"] + 1, "publish": {}}
                history = (await request(raw, "history", {"channel": channel, "limit": -1}))["history"]
                assert [p["data"] for p in history["publications"]] == [{"c": channel}]
                presence = (await request(raw, "presence", {"channel": channel}))["presence"]["presence"]
                assert [p["user"] for p in presence.values()] == ["test-user"]
        finally:
            await raw.aclose()
        # The server API (the secret is the API key) serves namespaced channels too.
        req = urllib.request.Request(
            gw.internal_url + "/api/publish", method="POST",
            data=json.dumps({"channel": "chat:room", "data": {"from": "api"}}).encode(),
            headers={"X-API-Key": gw.dev_secret, "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=scaled(5)) as resp_api:
            assert "error" not in json.loads(resp_api.read())
        assert refusal_lines(gw) == []
    finally:
        gw.stop()


async def test_refused_origin_logged_once(gateway_factory: Callable[..., Gateway]) -> None:
    # One worker: each worker remembers the Origins it refused, so with one the line is unique.
    gw = gateway_factory(workers=1)
    host = urlsplit(gw.url).netloc
    for _ in range(20):
        resp, raw = await RawWS.handshake_only(gw.url, browser_headers(gw, DEV_SERVER_ORIGIN))
        assert raw is None
        assert resp.status == 403, resp
    await wait_for(lambda: bool(refusal_lines(gw)), what="the refusal log line")
    await asyncio.sleep(scaled(0.3))
    (line,) = refusal_lines(gw)
    assert f"'{DEV_SERVER_ORIGIN}'" in line and f"'{host}'" in line
    assert "client.allowed_origins" in line and "--allowed-origin" in line
    # A second Origin gets its own line; the first stays quiet.
    resp, _ = await RawWS.handshake_only(gw.url, browser_headers(gw, "http://other.example"))
    assert resp.status == 403
    await wait_for(lambda: len(refusal_lines(gw)) == 2, what="a line for the second Origin")
    assert "'http://other.example'" in refusal_lines(gw)[1]


async def test_refused_origin_lines_bounded_per_worker(gateway_factory: Callable[..., Gateway]) -> None:
    gw = gateway_factory(workers=2)
    for _ in range(20):
        resp, _ = await RawWS.handshake_only(gw.url, browser_headers(gw, DEV_SERVER_ORIGIN))
        assert resp.status == 403
    await wait_for(lambda: bool(refusal_lines(gw)), what="the refusal log line")
    await asyncio.sleep(scaled(0.3))
    assert 1 <= len(refusal_lines(gw)) <= 2


async def test_allowed_origin_flag_and_strict_namespaces(gateway_factory: Callable[..., Gateway]) -> None:
    gw = gateway_factory(args=("--allowed-origin", "http://app.example",
                               "--allowed-origin", "https://*.example.org"))
    for origin in ("http://app.example", "https://www.example.org"):
        resp, raw = await RawWS.handshake_only(gw.url, browser_headers(gw, origin))
        assert resp.status == 101, (origin, resp)
        assert raw is not None
        await raw.aclose()
    resp, raw = await RawWS.handshake_only(gw.url, browser_headers(gw, DEV_SERVER_ORIGIN))
    assert raw is None and resp.status == 403
    # A config file keeps Centrifugo's rule: an unknown namespace is error 102.
    raw = await RawWS.open(gw.url)
    try:
        await raw.connect(token("alice"))
        reply = await request(raw, "subscribe", {"channel": "chat:room"})
        assert reply["error"]["code"] == 102, reply
    finally:
        await raw.aclose()
    await wait_for(lambda: bool(refusal_lines(gw)), what="the refusal log line")
    assert re.search(r"allowed: http://app\.example, https://\*\.example\.org", refusal_lines(gw)[0])
