"""``http_api.external``: the server API on the client port too, beside WebSocket clients.

cent drives ``/api`` through the client port (keep-alive connections, as aiohttp's session
keeps them); a centrifuge-python subscriber on the same port receives what it publishes.
Off by default: then the client port answers no server API at all. The per-IP connection
limit still counts (and releases) the HTTP connections handed over from the WebSocket edge.
"""

from __future__ import annotations

import http.client
import json
import uuid
from collections.abc import Callable
from urllib.parse import urlsplit

from cent import AsyncClient, InfoRequest, PublishRequest

from tests.conftest import API_KEY, Gateway, base_config, scaled, wait_for
from tests.integration.sdk import connect, disconnect_all, subscribe


def _http_base(gw: Gateway) -> str:
    parts = urlsplit(gw.url)
    return f"http://{parts.hostname}:{parts.port}"


def _post(gw: Gateway, path: str, body: dict[str, object], key: str = API_KEY) -> tuple[int, bytes]:
    parts = urlsplit(gw.url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=scaled(5))
    try:
        conn.request("POST", path, body=json.dumps(body), headers={"X-API-Key": key, "Connection": "close"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


async def test_server_api_on_the_client_port(gateway_factory: Callable[..., Gateway]) -> None:
    gw = gateway_factory(base_config(http_api={"key": API_KEY, "external": True}))
    channel = f"ext-{uuid.uuid4().hex[:8]}"
    client, _ = await connect(gw.url, user="reader")
    _, sev = await subscribe(client, channel)
    api = AsyncClient(_http_base(gw) + "/api", API_KEY, timeout=scaled(5))
    try:
        for k in range(20):  # one aiohttp session: keep-alive requests on the client port
            await api.publish(PublishRequest(channel=channel, data={"k": k}))
        await wait_for(lambda: len(sev.pubs) == 20, what="publications through the client port's API")
        assert [d["k"] for _, d in sev.pubs] == list(range(20))
        info = await api.info(InfoRequest())
        assert info.nodes, "info through the client port"
    finally:
        await api.close()
        await disconnect_all(client)
    status, _ = _post(gw, "/api/info", {}, key="wrong")
    assert status == 401, "the API key is checked on the client port as on the internal one"


def test_off_by_default(gateway_factory: Callable[..., Gateway]) -> None:
    gw = gateway_factory(base_config())
    status, _ = _post(gw, "/api/info", {})
    assert status >= 400, "no server API on the client port unless http_api.external"
    parts = urlsplit(gw.internal_url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=scaled(5))
    conn.request("POST", "/api/info", body="{}", headers={"X-API-Key": API_KEY})
    assert conn.getresponse().status == 200, "the internal port serves it as before"
    conn.close()


def test_http_connections_release_their_per_ip_slot(gateway_factory: Callable[..., Gateway]) -> None:
    cfg = base_config(http_api={"key": API_KEY, "external": True},
                      shardgate={"per_ip_connection_limit": 1})
    gw = gateway_factory(cfg)
    for _ in range(5):  # each one-shot connection must free the single slot it took
        status, body = _post(gw, "/api/info", {})
        assert status == 200, body


def test_api_can_be_disabled(gateway_factory: Callable[..., Gateway]) -> None:
    gw = gateway_factory(base_config(http_api={"key": API_KEY, "disabled": True}))
    parts = urlsplit(gw.internal_url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=scaled(5))
    conn.request("POST", "/api/info", body="{}", headers={"X-API-Key": API_KEY})
    assert conn.getresponse().status == 404, "http_api.disabled: no /api"
    conn.close()
