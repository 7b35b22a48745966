"""Socket.IO connection state recovery across nodes (README, Socket.IO): two shardgate nodes
of two workers on one real ``redis-server`` started by the test. A raw Engine.IO WebSocket
client on node A loses its transport (or node A is SIGKILLed), publications go on through
node B's API, and the client reconnects to node B with its ``{pid, offset}``: same pid
(``socket.recovered`` true in socket.io-client) and every missed publication in order."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from tests.conftest import API_KEY, Gateway, scaled, wait_for
from tests.integration.test_redis_engine import redis_config
from tests.integration.test_socketio import _config as sio_config
from tests.integration.test_socketio import http_url, token
from tests.redis_servers import RedisServer

pytestmark = pytest.mark.usefixtures("redis_bin")


def _node_config(redis: RedisServer) -> dict[str, Any]:
    cfg = redis_config(redis)
    cfg["shardgate"] = {**cfg["shardgate"], "socketio": sio_config(recovery=True)["shardgate"]["socketio"]}
    return cfg


@pytest.fixture
def nodes(redis_server: RedisServer, gateway_factory: Callable[..., Gateway]) -> tuple[Gateway, Gateway]:
    return gateway_factory(_node_config(redis_server)), gateway_factory(_node_config(redis_server))


async def _api(gw: Gateway, method: str, body: dict[str, Any]) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s, s.post(f"{gw.internal_url}/api/{method}", json=body,
                                                     headers={"X-API-Key": API_KEY}) as r:
        assert r.status == 200
        out: dict[str, Any] = await r.json()
        assert "error" not in out, out
        return out


async def _open(http: aiohttp.ClientSession, gw: Gateway) -> aiohttp.ClientWebSocketResponse:
    ws = await http.ws_connect(http_url(gw).replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket")
    opened = await ws.receive_str(timeout=scaled(5))
    assert opened.startswith("0")
    return ws


async def _next(ws: aiohttp.ClientWebSocketResponse, prefix: str) -> str:
    """The next packet starting with ``prefix`` (answering pings)."""
    while True:
        msg = await ws.receive_str(timeout=scaled(10))
        if msg == "2":
            await ws.send_str("3")
        elif msg.startswith(prefix):
            return msg


async def _events(ws: aiohttp.ClientWebSocketResponse, n: int) -> list[list[Any]]:
    return [json.loads((await _next(ws, "42"))[2:]) for _ in range(n)]


async def _connect(ws: aiohttp.ClientWebSocketResponse, user: str, **recover: str) -> dict[str, Any]:
    await ws.send_str("40" + json.dumps({"token": token(user), **recover}))
    reply: dict[str, Any] = json.loads((await _next(ws, "40"))[2:])
    return reply


async def _session_in_room(http: aiohttp.ClientSession, a: Gateway, b: Gateway, room: str
                           ) -> tuple[aiohttp.ClientWebSocketResponse, str, str]:
    """A raw session on node A in ``room`` that got two publications (one through each node's
    API); returns its WebSocket, pid and last offset argument."""
    ws = await _open(http, a)
    pid = (await _connect(ws, "x-user"))["pid"]
    await ws.send_str("421" + json.dumps(["subscribe", {"channel": room}]))
    ack = json.loads((await _next(ws, "431"))[3:])
    assert ack[0]["recoverable"] is True, ack
    await _api(a, "publish", {"channel": room, "data": {"i": 0}})
    await _api(b, "publish", {"channel": room, "data": {"i": 1}})
    got = await _events(ws, 2)
    assert [e[1]["data"]["i"] for e in got] == [0, 1]
    return ws, pid, got[-1][2]


async def _recovers_on(http: aiohttp.ClientSession, b: Gateway, room: str, pid: str, offset: str,
                       missed: list[int]) -> aiohttp.ClientWebSocketResponse:
    ws = await _open(http, b)
    reply = await _connect(ws, "x-user", pid=pid, offset=offset)
    assert reply["pid"] == pid, reply  # socket.recovered === true
    replayed = await _events(ws, len(missed))
    assert [e[1]["data"]["i"] for e in replayed] == missed
    start = int(offset.split()[0]) + 1
    assert [e[2] for e in replayed] == [f"{start + k} {room}" for k in range(len(missed))]
    # The room is back: live publications follow, from either node.
    await _api(b, "publish", {"channel": room, "data": {"i": -1}})
    live = await _events(ws, 1)
    assert live[0][1]["data"] == {"i": -1}
    return ws


async def test_transport_lost_on_node_a_recovers_on_node_b(nodes: tuple[Gateway, Gateway],
                                                           redis_server: RedisServer) -> None:
    a, b = nodes
    async with aiohttp.ClientSession() as http:
        ws, pid, offset = await _session_in_room(http, a, b, "xn")
        assert ws._response.connection is not None
        ws._response.connection.transport.abort()  # no close frame: the transport is just gone

        def dropped() -> bool:  # the state written at the drop carries no node id
            return redis_server.cli("GET", f"shardgate.sio.pid.{pid}").startswith("\n")

        await wait_for(dropped, what="node A kept the dropped session in Redis")
        for i in (2, 3, 4):
            await _api(b, "publish", {"channel": "xn", "data": {"i": i}})
        ws2 = await _recovers_on(http, b, "xn", pid, offset, [2, 3, 4])
        # A pid recovers once: its live session on B is not taken over (a fresh session, after
        # waiting out the liveness of B).
        ws3 = await _open(http, a)
        again = await _connect(ws3, "x-user", pid=pid, offset=offset)
        assert again["pid"] != pid
        # An unknown pid on node B: an honest fresh session.
        ws4 = await _open(http, b)
        fresh = await _connect(ws4, "x-user", pid="0_unknownpid123456789", offset="1 xn")
        assert fresh["pid"] != "0_unknownpid123456789" and fresh["sid"]
        await ws2.send_str("41")  # socket.disconnect(): a clean end, nothing to recover
        for w in (ws2, ws3, ws4):
            await w.close()
    await wait_for(lambda: redis_server.cli("EXISTS", f"shardgate.sio.pid.{pid}").strip() == "0",
                   what="clean disconnect dropped the recovery state")


async def test_node_a_killed_its_client_recovers_on_node_b(nodes: tuple[Gateway, Gateway],
                                                          redis_server: RedisServer) -> None:
    a, b = nodes
    async with aiohttp.ClientSession() as http:
        ws, pid, offset = await _session_in_room(http, a, b, "killed")
        # The snapshot written while connected names node A and holds the room.
        def snapshot() -> bool:  # node A's id, then the room with its stream's epoch
            node, _, state = redis_server.cli("GET", f"shardgate.sio.pid.{pid}").partition("\n")
            return bool(node) and '["killed",' in state and '"killed",0,""' not in state

        await wait_for(snapshot, what="snapshot of the connected session in Redis")
        for proc_pid in [*a.worker_pids(), a.proc.pid]:  # the supervisor and its workers
            os.kill(proc_pid, signal.SIGKILL)
        for i in (2, 3, 4):
            await _api(b, "publish", {"channel": "killed", "data": {"i": i}})
        # Reconnect at once: node A still looks alive for a moment; the take waits it out.
        ws2 = await _recovers_on(http, b, "killed", pid, offset, [2, 3, 4])
        await ws2.close()
        await ws.close()
