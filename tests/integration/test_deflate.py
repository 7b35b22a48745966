"""permessage-deflate (RFC 7692, ``websocket.compression``) against ``shardgate serve --workers 2``.

``websockets`` clients (their own permessage-deflate implementation) subscribe and receive
compressed publications; the metrics prove one compression per publication per worker, not
one per subscriber. A raw client checks the frame bits: RSV1 on what is compressed, plain
frames below ``compression_min_size``, and RSV1 without negotiation closing 1002. Off by
default: an offer is then simply not accepted.
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
import uuid
import zlib
from collections.abc import Callable

import websockets
from cent import AsyncClient, PublishRequest

from tests.conftest import API_KEY, SECRET, Gateway, base_config, scaled
from tests.integration.rawclient import RawWS, build_frame
from tools.token import mint_token

OFFER = "permessage-deflate; client_max_window_bits"


def _config(**websocket: object) -> dict[str, object]:
    return base_config(websocket={"compression": True, **websocket})


def _deflate(payload: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return (c.compress(payload) + c.flush(zlib.Z_SYNC_FLUSH))[:-4]


async def _frame(ws: RawWS) -> tuple[int, int, bytes]:
    """(first header byte, opcode, payload) of the next server frame."""
    b0, b1 = await asyncio.wait_for(ws.reader.readexactly(2), scaled(5))
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(await ws.reader.readexactly(2), "big")
    elif n == 127:
        n = int.from_bytes(await ws.reader.readexactly(8), "big")
    return b0, b0 & 0x0F, await ws.reader.readexactly(n)


def _deflate_metric(gw: Gateway, what: str) -> int:
    with urllib.request.urlopen(gw.internal_url + "/metrics", timeout=scaled(3)) as resp:
        text = resp.read().decode()
    return sum(int(float(v)) for v in re.findall(
        rf'^shardgate_websocket_deflate_total{{slot="\d+",what="{what}"}} (\S+)$', text, re.M))


async def test_websockets_clients_get_compressed_publications_compressed_once_per_worker(
        gateway_factory: Callable[..., Gateway]) -> None:
    gw = gateway_factory(_config())
    channel = f"z-{uuid.uuid4().hex[:8]}"
    clients = []
    for i in range(6):
        ws = await websockets.connect(gw.url, compression="deflate", max_size=2**20, ping_interval=None,
                                      open_timeout=scaled(5))
        assert "permessage-deflate" in ws.response.headers.get("Sec-WebSocket-Extensions", "")
        await ws.send(json.dumps({"id": 1, "connect": {"token": mint_token(SECRET, user=f"z{i}")}}))
        await ws.send(json.dumps({"id": 2, "subscribe": {"channel": channel}}))
        replies = [json.loads(await asyncio.wait_for(ws.recv(), scaled(5))) for _ in range(2)]
        assert {r["id"] for r in replies} == {1, 2} and all("error" not in r for r in replies), replies
        clients.append(ws)
    before = _deflate_metric(gw, "messages")
    text = "compressible " * 300
    api = AsyncClient(gw.internal_url + "/api", API_KEY, timeout=scaled(5))
    try:
        for k in range(20):
            await api.publish(PublishRequest(channel=channel, data={"k": k, "text": text}))
    finally:
        await api.close()
    for ws in clients:
        got: list[int] = []
        while len(got) < 20:
            for line in (await asyncio.wait_for(ws.recv(), scaled(5))).splitlines():
                push = json.loads(line).get("push", {})
                if "pub" in push:  # joins of the later subscribers come too
                    got.append(push["pub"]["data"]["k"])
        assert got == list(range(20))
    # 20 publications x 6 subscribers = 120 compressed deliveries, from about 20 compressions per
    # worker (2 workers): the same bytes go to every subscriber of a worker. A session that
    # batched two publications of one tick into one frame makes a frame of its own, compressed
    # separately (seen: 41 once on a loaded box), so the bound is half the deliveries, which
    # compressing per subscriber could never meet. (Read before the clients leave: their leave
    # pushes are compressed too.)
    compressions = _deflate_metric(gw, "messages") - before
    for ws in clients:
        await ws.close()
    assert 20 <= compressions < 120 // 2, compressions
    assert _deflate_metric(gw, "bytes_out") * 10 < _deflate_metric(gw, "bytes_in")


async def test_frame_bits_min_size_and_rsv1_without_negotiation(gateway_factory: Callable[..., Gateway]) -> None:
    gw = gateway_factory(_config(compression_min_size=200))
    headers = RawWS.default_headers(gw.url)
    ws = await RawWS.open(gw.url, {**headers, "Sec-WebSocket-Extensions": OFFER})
    assert ws.handshake.headers["sec-websocket-extensions"] == \
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
    # A compressed command (RSV1) is inflated; the reply (< 200 bytes) comes back plain.
    connect = json.dumps({"id": 1, "connect": {"token": mint_token(SECRET, user="bits")}}).encode()
    await ws.send_raw(build_frame(0x1, _deflate(connect), rsv=4))
    b0, op, payload = await _frame(ws)
    assert op == 0x1 and not b0 & 0x40 and json.loads(payload)["id"] == 1
    # A large reply (history with big publications) is compressed: RSV1 set, inflates to JSON.
    await ws.send_raw(build_frame(0x1, json.dumps({"id": 2, "rpc": {"method": "echo", "data": {
        "blob": "x" * 5000}}}).encode()))
    b0, op, payload = await _frame(ws)
    assert b0 & 0x40, "a reply of 5000+ bytes is compressed"
    reply = json.loads(zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff"))
    assert reply["id"] == 2 and "error" not in reply, reply
    await ws.aclose()
    # Without negotiation RSV1 is a protocol error.
    plain = await RawWS.open(gw.url)
    assert "sec-websocket-extensions" not in plain.handshake.headers
    await plain.send_raw(build_frame(0x1, _deflate(connect), rsv=4))
    closed = await plain.recv_close()
    assert closed.code == 1002
    await plain.aclose()


async def test_a_compression_bomb_closes_1009(gateway_factory: Callable[..., Gateway]) -> None:
    gw = gateway_factory(_config())
    ws = await RawWS.open(gw.url, {**RawWS.default_headers(gw.url), "Sec-WebSocket-Extensions": OFFER})
    bomb = _deflate(b" " * 10_000_000)  # ~10 KB on the wire, 10 MB inflated (limit 64 KiB)
    await ws.send_raw(build_frame(0x1, bomb, rsv=4))
    closed = await ws.recv_close()
    assert closed.code == 1009
    await ws.aclose()
    # The worker is fine: a new connection still works.
    again = await RawWS.open(gw.url)
    assert (await again.connect(mint_token(SECRET, user="after")))["client"]
    await again.aclose()


async def test_off_by_default(gateway_factory: Callable[..., Gateway]) -> None:
    gw = gateway_factory(base_config())
    ws = await RawWS.open(gw.url, {**RawWS.default_headers(gw.url), "Sec-WebSocket-Extensions": OFFER})
    assert "sec-websocket-extensions" not in ws.handshake.headers
    await ws.aclose()
