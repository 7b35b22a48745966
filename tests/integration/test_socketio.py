"""Socket.IO clients against a real 2-worker gateway (README, Socket.IO): python-socketio's
AsyncClient over WebSocket, long-polling only and polling with the upgrade; rooms across
workers and with Centrifugo clients; acks; custom events with binary attachments; raw
polling requests on fresh connections, so that they land on either worker and are
forwarded over the bus to the session's worker (no sticky sessions)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio

from gateway.socketio.server import slot_of
from tests.conftest import API_KEY, SECRET, Gateway, base_config, scaled, wait_for
from tests.integration import sdk
from tools.token import mint_token

JS_DIR = Path(__file__).resolve().parent.parent / "js"
NODE = shutil.which("node")


def _config(**socketio: Any) -> dict[str, Any]:
    cfg = base_config()
    cfg["shardgate"] = {**cfg["shardgate"], "socketio": {**socketio, "event_handlers": {
        "join": "tests.integration.sio_handlers:join",
        "shout": "tests.integration.sio_handlers:shout",
        "reverse": "tests.integration.sio_handlers:reverse_bytes",
    }}}
    return cfg


@pytest.fixture
def gw(gateway_factory: Callable[..., Gateway]) -> Gateway:
    return gateway_factory(_config())


def http_url(gw: Gateway) -> str:
    return gw.url.replace("ws://", "http://").split("/connection")[0]


def token(user: str) -> str:
    return mint_token(SECRET, user=user, exp_seconds=3600)


class _PidClient(socketio.AsyncClient):  # type: ignore[misc]
    """python-socketio keeps no pid (it has no connection state recovery): keep the CONNECT data."""

    connect_data: dict[str, Any] = {}

    async def _handle_connect(self, namespace: str, data: Any) -> None:
        self.connect_data = data or {}
        await super()._handle_connect(namespace, data)


class Sio:
    """An AsyncClient with what it received, by event."""

    def __init__(self, fresh_connections: bool = False) -> None:
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) \
            if fresh_connections else None
        self.client = _PidClient(http_session=self.session, reconnection=False) if self.session \
            else _PidClient(reconnection=False)
        self.events: dict[str, list[Any]] = {}
        for name in ("publication", "join", "leave", "shout", "subscribe"):
            self.client.on(name, self._recorder(name))

    def _recorder(self, name: str) -> Callable[..., None]:
        def record(*args: Any) -> None:
            self.events.setdefault(name, []).append(args[0] if len(args) == 1 else list(args))
        return record

    async def connect(self, gw: Gateway, user: str, transports: list[str] | None = None) -> Sio:
        await self.client.connect(http_url(gw), auth={"token": token(user)}, transports=transports,
                                  wait_timeout=int(scaled(5)))
        return self

    @property
    def slot(self) -> int | None:
        return slot_of(self.client.eio.sid or "")

    async def call(self, event: str, *args: Any) -> Any:
        return await self.client.call(event, args[0] if len(args) == 1 else args, timeout=scaled(5))

    async def close(self) -> None:
        await self.client.disconnect()
        if self.session is not None:
            await self.session.close()


async def on_slot(gw: Gateway, want: int, user: str, transports: list[str] | None = None) -> Sio:
    for _ in range(60):
        sio = await Sio().connect(gw, user, transports)
        if sio.slot == want:
            return sio
        await sio.close()
    raise AssertionError(f"no connection landed on slot {want}")


async def test_websocket_rooms_across_workers_and_acks(gw: Gateway) -> None:
    a = await on_slot(gw, 0, "alice", ["websocket"])
    b = await on_slot(gw, 1, "bob", ["websocket"])
    try:
        for sio in (a, b):
            result = await sio.call("subscribe", {"channel": "room"})
            assert result["recoverable"] is True and "epoch" in result
        assert await b.call("publish", {"channel": "room", "data": {"n": 1}}) == {}
        await wait_for(lambda: len(a.events.get("publication", [])) == 1, what="publication on slot 0")
        pub = a.events["publication"][0]
        assert pub["channel"] == "room" and pub["data"] == {"n": 1} and pub["offset"] == 1
        assert pub["info"]["user"] == "bob"
        await wait_for(lambda: any(j["info"]["user"] == "bob" for j in a.events.get("join", [])), what="join")
        history = await a.call("history", {"channel": "room", "limit": 10})
        assert [p["data"] for p in history["publications"]] == [{"n": 1}]
        presence = await a.call("presence", {"channel": "room"})
        assert {c["user"] for c in presence["presence"].values()} == {"alice", "bob"}
        stats = await a.call("presence_stats", {"channel": "room"})
        assert stats == {"num_clients": 2, "num_users": 2}
        assert await a.call("rpc", {"method": "echo", "data": [1, 2]}) == {"data": [1, 2]}
        # Permissions and errors as for Centrifugo clients.
        assert (await a.call("subscribe", {"channel": "room"}))["error"]["code"] == 105
        assert (await a.call("publish", {"channel": "locked:x", "data": 1}))["error"]["code"] == 102
        assert (await a.call("rpc", {"method": "nope"}))["error"]["code"] == 104
        assert (await a.call("subscribe", "not an object"))["error"]["code"] == 107
        assert await b.call("unsubscribe", {"channel": "room"}) == {}
        await wait_for(lambda: any(x["info"]["user"] == "bob" for x in a.events.get("leave", [])), what="leave")
    finally:
        await a.close()
        await b.close()


async def test_socketio_and_centrifugo_clients_share_a_channel(gw: Gateway) -> None:
    sio = await Sio().connect(gw, "sio-user")
    client, _ = await sdk.connect(gw.url, user="centrifugo-user")
    try:
        await sio.call("subscribe", {"channel": "both"})
        _sub, events = await sdk.subscribe(client, "both")
        await client.publish("both", {"from": "centrifugo"})
        await wait_for(lambda: len(sio.events.get("publication", [])) == 1, what="centrifugo -> socket.io")
        assert sio.events["publication"][0]["data"] == {"from": "centrifugo"}
        await sio.call("publish", {"channel": "both", "data": {"from": "sio"}})
        await wait_for(lambda: len(events.pubs) == 2, what="socket.io -> centrifugo")
        assert events.pubs[-1][1] == {"from": "sio"}
    finally:
        await sio.close()
        await sdk.disconnect_all(client)


async def test_custom_events_binary_and_rooms(gw: Gateway) -> None:
    a = await on_slot(gw, 0, "alice", ["websocket"])
    b = await on_slot(gw, 1, "bob", ["websocket"])
    try:
        assert await a.call("join", "lobby") == {"joined": "lobby"}
        assert await b.call("join", "lobby") == {"joined": "lobby"}
        await wait_for(lambda: len(b.events.get("subscribe", [])) == 1, what="server-side subscribe")
        assert await a.call("shout", "lobby", "hi") == "ok"
        for sio in (a, b):
            await wait_for(lambda s=sio: len(s.events.get("shout", [])) == 1, what="custom event in the room")
            assert sio.events["shout"][0] == {"from": "alice", "text": "hi"}
        reply = await a.call("reverse", b"\x00\x01\x02\xff")
        assert reply == {"reversed": b"\xff\x02\x01\x00", "len": 4}
        assert (await a.call("no_such_event", 1))["error"]["code"] == 104
    finally:
        await a.close()
        await b.close()


async def test_many_polling_clients_without_sticky_sessions(gw: Gateway) -> None:
    clients = [await Sio(fresh_connections=True).connect(gw, f"poll{i}", ["polling"]) for i in range(16)]
    try:
        assert {c.slot for c in clients} == {0, 1}
        for c in clients:
            await c.call("subscribe", {"channel": "polled"})
        await clients[0].call("publish", {"channel": "polled", "data": "to all"})
        await wait_for(lambda: all(c.events.get("publication") for c in clients), timeout=10,
                       what="every polling client got the publication")
        assert all(c.client.transport() == "polling" for c in clients)
    finally:
        for c in clients:
            await c.close()


async def test_raw_polling_requests_are_forwarded(gw: Gateway) -> None:
    """Each request on a new TCP connection lands on either worker; all succeed."""
    base = http_url(gw) + "/socket.io/"
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:
        async with http.get(base, params={"EIO": "4", "transport": "polling"}) as resp:
            assert resp.status == 200
            text = await resp.text()
        assert text.startswith("0")
        opened = json.loads(text[1:])
        sid = opened["sid"]
        assert opened["upgrades"] == ["websocket"] and opened["maxPayload"] == 1_000_000
        q = {"EIO": "4", "transport": "polling", "sid": sid}
        async with http.post(base, params=q, data=b'40{"token":"' + token("raw").encode() + b'"}') as resp:
            assert resp.status == 200 and await resp.text() == "ok"
        async with http.get(base, params=q) as resp:
            body = await resp.text()
        assert body.startswith("40{\"sid\":")
        for i in range(12):
            async with http.post(base, params=q, data=f'42{i}["rpc",{{"method":"echo","data":{i}}}]') as resp:
                assert resp.status == 200
            async with http.get(base, params=q) as resp:
                assert await resp.text() == f'43{i}[{{"data":{i}}}]'
        async with http.post(base, params=q, data=b"4x bad") as resp:
            assert resp.status == 200  # the packet is refused: the session closes
        async with http.get(base, params=q) as resp:
            assert resp.status == 400 or await resp.text() in ("1", "6")
        async with http.get(base, params={**q, "sid": "0_unknown"}) as resp:
            assert resp.status == 400 and (await resp.json())["message"] == "Session ID unknown"


async def test_polling_with_upgrade(gw: Gateway) -> None:
    clients = [await Sio(fresh_connections=True).connect(gw, f"up{i}", ["polling", "websocket"]) for i in range(6)]
    try:
        await wait_for(lambda: all(c.client.transport() == "websocket" for c in clients), what="upgraded")
        for c in clients:
            await c.call("subscribe", {"channel": "upgraded"})
        await clients[-1].call("publish", {"channel": "upgraded", "data": 7})
        await wait_for(lambda: all(c.events.get("publication") for c in clients), what="publication after upgrade")
    finally:
        for c in clients:
            await c.close()


async def test_bad_input_closes_never_crashes(gw: Gateway) -> None:
    sio = await Sio().connect(gw, "ok-user", ["websocket"])
    bad = socketio.AsyncClient()
    try:
        with pytest.raises(socketio.exceptions.ConnectionError):
            await bad.connect(http_url(gw), auth={"token": "garbage"}, transports=["websocket"],
                              wait_timeout=int(scaled(5)))
        with pytest.raises(socketio.exceptions.ConnectionError):
            await bad.connect(http_url(gw), namespaces=["/nope"], auth={"token": token("x")},
                              transports=["websocket"], wait_timeout=int(scaled(5)))
        assert await sio.call("rpc", {"method": "echo", "data": 1}) == {"data": 1}
        assert gw.health()["status"] == "ok"
    finally:
        await sio.close()
        await bad.disconnect()


async def test_namespace_maps_to_channel_namespace(gw: Gateway) -> None:
    sio = socketio.AsyncClient()
    got: list[Any] = []
    sio.on("publication", got.append, namespace="/plain")
    client, _ = await sdk.connect(gw.url, user="c")
    try:
        await sio.connect(http_url(gw), namespaces=["/plain"], auth={"token": token("n")}, transports=["websocket"],
                          wait_timeout=int(scaled(5)))
        assert "error" not in await sio.call("subscribe", {"channel": "r"}, namespace="/plain", timeout=scaled(5))
        await client.publish("plain:r", {"ns": True})
        await wait_for(lambda: bool(got), what="publication in /plain")
        assert got[0]["channel"] == "r" and got[0]["data"] == {"ns": True}
    finally:
        await sio.disconnect()
        await sdk.disconnect_all(client)


@pytest.mark.skipif(NODE is None or not (JS_DIR / "node_modules" / "socket.io-client").is_dir(),
                    reason="needs node and `npm ci --prefix tests/js`")
def test_node_socketio_client_default_options(gw: Gateway) -> None:
    env = {**os.environ, "SIO_TOKEN": token("node-user"), "SIO_TIMEOUT_MS": str(int(scaled(15) * 1000))}
    res = subprocess.run([str(NODE), str(JS_DIR / "socketio_roundtrip.mjs"), http_url(gw)], cwd=JS_DIR, env=env,
                         capture_output=True, text=True, timeout=scaled(30))
    assert res.returncode == 0, f"stdout={res.stdout}\nstderr={res.stderr}\nlog:\n{gw.log()[-4000:]}"
    assert "OK" in res.stdout


# -- connection state recovery ------------------------------------------------------------------

@pytest.fixture
def rgw(gateway_factory: Callable[..., Gateway]) -> Gateway:
    return gateway_factory(_config(recovery=True))


async def _api(gw: Gateway, method: str, body: dict[str, Any]) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s, s.post(f"{gw.internal_url}/api/{method}", json=body,
                                                     headers={"X-API-Key": API_KEY}) as r:
        assert r.status == 200
        out: dict[str, Any] = await r.json()
        return out


async def _raw_on_slot(http: aiohttp.ClientSession, gw: Gateway, slot: int) -> aiohttp.ClientWebSocketResponse:
    """A raw Engine.IO WebSocket whose session lives on ``slot`` (no namespace connected yet)."""
    url = http_url(gw).replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    for _ in range(60):
        ws = await http.ws_connect(url)
        opened = await ws.receive_str(timeout=scaled(5))
        if slot_of(json.loads(opened[1:])["sid"]) == slot:
            return ws
        await ws.close()
    raise AssertionError(f"no WebSocket landed on slot {slot}")


async def _raw_events(ws: aiohttp.ClientWebSocketResponse, n: int) -> list[list[Any]]:
    """The next ``n`` EVENT packets (answering pings)."""
    out: list[list[Any]] = []
    while len(out) < n:
        msg = await ws.receive_str(timeout=scaled(5))
        if msg == "2":
            await ws.send_str("3")
        elif msg.startswith("42"):
            out.append(json.loads(msg[2:]))
    return out


async def _dropped_session(gw: Gateway, room: str) -> tuple[Sio, str, str]:
    """A python-socketio session on slot 0 in ``room`` that got two publications (with their
    offset arguments), then lost its transport; returns it, its pid and its last offset."""
    a = await on_slot(gw, 0, "rec-user", ["websocket"])
    assert (await a.call("subscribe", {"channel": room}))["recoverable"] is True
    pid = a.client.connect_data["pid"]
    assert pid.startswith("0_") and a.client.connect_data["sid"]
    for i in range(2):
        assert await a.call("publish", {"channel": room, "data": {"i": i}}) == {}
    await wait_for(lambda: len(a.events.get("publication", [])) == 2, what="publications before the drop")
    pub, offset = a.events["publication"][1]
    assert pub["offset"] == 2 and offset == f"2 {room}"
    a.client.eio.ws._writer.transport.abort()  # no close frame: the transport is just gone

    async def gone() -> bool:
        presence = await _api(gw, "presence", {"channel": room})
        return not presence["result"]["presence"]

    await wait_for(gone, what="the server noticed the drop")
    return a, pid, offset


@pytest.mark.parametrize("slot", [0, 1], ids=["same-worker", "other-worker"])
async def test_recovery_replays_missed_publications(rgw: Gateway, slot: int) -> None:
    gw = rgw
    a, pid, offset = await _dropped_session(gw, "rec")
    for i in range(2, 5):
        await _api(gw, "publish", {"channel": "rec", "data": {"i": i}})
    async with aiohttp.ClientSession() as http:
        ws = await _raw_on_slot(http, gw, slot)
        await ws.send_str("40" + json.dumps({"token": token("rec-user"), "pid": pid, "offset": offset}))
        reply = await ws.receive_str(timeout=scaled(5))
        assert reply.startswith("40")
        assert json.loads(reply[2:])["pid"] == pid  # same pid: socket.recovered is true in the JS client
        replayed = await _raw_events(ws, 3)
        assert [e[0] for e in replayed] == ["publication"] * 3
        assert [e[1]["data"]["i"] for e in replayed] == [2, 3, 4]
        assert [e[2] for e in replayed] == ["3 rec", "4 rec", "5 rec"]
        # The room is restored: live publications follow.
        await _api(gw, "publish", {"channel": "rec", "data": {"i": 5}})
        live = await _raw_events(ws, 1)
        assert live[0][1]["data"] == {"i": 5} and live[0][2] == "6 rec"
        # A pid recovers once.
        ws2 = await _raw_on_slot(http, gw, 1 - slot)
        await ws2.send_str("40" + json.dumps({"token": token("rec-user"), "pid": pid, "offset": "6 rec"}))
        again = json.loads((await ws2.receive_str(timeout=scaled(5)))[2:])
        assert again["pid"] != pid
        await ws.close()
        await ws2.close()
    await a.close()


async def test_recovery_of_a_gone_stream_is_a_fresh_session(rgw: Gateway) -> None:
    gw = rgw
    a, pid, offset = await _dropped_session(gw, "gone")
    await _api(gw, "publish", {"channel": "gone", "data": {"i": 9}})  # missed...
    await _api(gw, "history_remove", {"channel": "gone"})  # ...and gone from the stream
    async with aiohttp.ClientSession() as http:
        ws = await _raw_on_slot(http, gw, 1)
        await ws.send_str("40" + json.dumps({"token": token("rec-user"), "pid": pid, "offset": offset}))
        reply = json.loads((await ws.receive_str(timeout=scaled(5)))[2:])
        assert reply["pid"] != pid and reply["pid"].startswith("1_")  # recovered: false
        # A fresh session: no room, so nothing is replayed or delivered.
        await _api(gw, "publish", {"channel": "gone", "data": {"i": 10}})
        await ws.send_str('420["rpc",{"method":"echo","data":1}]')
        while True:
            msg = await ws.receive_str(timeout=scaled(5))
            assert not msg.startswith("42"), msg
            if msg.startswith("43"):
                break
        await ws.close()
    await a.close()


async def test_recovery_needs_the_same_user(rgw: Gateway) -> None:
    a, pid, offset = await _dropped_session(rgw, "mine")
    async with aiohttp.ClientSession() as http:
        ws = await _raw_on_slot(http, rgw, 0)
        await ws.send_str("40" + json.dumps({"token": token("someone-else"), "pid": pid, "offset": offset}))
        reply = json.loads((await ws.receive_str(timeout=scaled(5)))[2:])
        assert reply["pid"] != pid
        await ws.close()
    await a.close()


@pytest.mark.skipif(NODE is None or not (JS_DIR / "node_modules" / "socket.io-client").is_dir(),
                    reason="needs node and `npm ci --prefix tests/js`")
def test_node_socketio_client_recovers(rgw: Gateway) -> None:
    """socket.io-client 4.8 with default options: its WebSocket is destroyed (no close),
    publications go on, it reconnects on either worker with ``socket.recovered`` true and gets
    every publication in order."""
    env = {**os.environ, "SIO_TOKEN": token("node-user"), "SIO_TIMEOUT_MS": str(int(scaled(20) * 1000))}
    for _ in range(3):  # the reconnect lands on either worker: a few runs see both
        res = subprocess.run([str(NODE), str(JS_DIR / "socketio_recovery.mjs"), http_url(rgw)], cwd=JS_DIR, env=env,
                             capture_output=True, text=True, timeout=scaled(40))
        assert res.returncode == 0, f"stdout={res.stdout}\nstderr={res.stderr}\nlog:\n{rgw.log()[-4000:]}"
        assert "OK recovered=true" in res.stdout, res.stdout
