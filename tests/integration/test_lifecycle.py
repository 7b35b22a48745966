"""Supervisor and connection lifecycle against real processes: pings, slow clients,
slot restarts, crash loops, SIGKILL of the supervisor, the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from sharding.hashing import owner
from sharding.ids import slot_of_client
from tests.conftest import SECRET, Gateway, base_config, scaled, wait_for
from tests.integration.sdk import connect, connect_on_slot, disconnect_all, subscribe
from tests.integration.test_protocol_sdk import channel_owned_by
from tools.token import mint_token


async def raw_connect(url: str, user: str = "raw") -> tuple[ClientConnection, dict[str, object]]:
    ws = await websockets.connect(url, max_size=None, ping_interval=None)
    await ws.send(json.dumps({"id": 1, "connect": {"token": mint_token(SECRET, user=user)}}))
    reply = json.loads(await asyncio.wait_for(ws.recv(), scaled(5)))
    assert "connect" in reply, reply
    return ws, reply["connect"]


async def close_code(ws: ClientConnection, timeout: float = 5) -> tuple[int, str]:
    try:
        async with asyncio.timeout(scaled(timeout)):
            while True:
                await ws.recv()
    except ConnectionClosed as exc:
        assert exc.rcvd is not None, "closed without a CLOSE frame"
        return exc.rcvd.code, exc.rcvd.reason
    raise AssertionError("unreachable")


async def test_ping_pong_and_no_pong_closes_3012(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    gw = gateway_factory(base_config(client={"token": {"hmac_secret_key": SECRET}, "ping_interval": "1s",
                                             "pong_timeout": "500ms"}))
    ws, result = await raw_connect(gw.url)
    assert result["ping"] == 1 and result["pong"] is True
    # Answer two pings, then stop answering.
    for _ in range(2):
        assert await asyncio.wait_for(ws.recv(), scaled(3)) == "{}"
        await ws.send("{}")
    assert await asyncio.wait_for(ws.recv(), scaled(3)) == "{}"
    assert await close_code(ws) == (3012, "no pong")


async def test_stale_connection_closes_3502(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    gw = gateway_factory(base_config(client={"token": {"hmac_secret_key": SECRET}, "stale_close_delay": "300ms"}))
    ws = await websockets.connect(gw.url, ping_interval=None)
    assert await close_code(ws) == (3502, "stale")


async def test_slow_subscriber_closed_3008_others_unaffected(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    gw = gateway_factory(base_config(client={"token": {"hmac_secret_key": SECRET}, "queue_max_size": 65536}),
                         workers=1)
    channel = "flood"
    # A raw TCP client that completes the handshake and subscribes, then never reads again.
    from tests.integration.test_lifecycle_frames import silent_subscriber

    writer = await silent_subscriber(gw.url, mint_token(SECRET, user="slow"), channel, scaled(5))
    good, _ = await connect(gw.url, user="good")
    _, events = await subscribe(good, channel)
    publisher, _ = await connect(gw.url, user="pub")
    blob = "x" * 4000
    try:
        for k in range(1500):
            await publisher.publish(channel, {"k": k, "blob": blob})
        await wait_for(lambda: len(events.pubs) == 1500, timeout=20, what="healthy subscriber got everything")
        assert [d["k"] for _, d in events.pubs] == list(range(1500))
        assert "code=3008" in gw.log()
    finally:
        writer.close()
        await disconnect_all(good, publisher)


async def test_presence_of_a_restarted_slot_disappears(gateway: Gateway) -> None:
    channel = channel_owned_by(0)
    keeper, _ = await connect_on_slot(gateway.url, 0, user="keeper")
    victim, _ = await connect_on_slot(gateway.url, 1, user="victim")
    sub, _ = await subscribe(keeper, channel)
    await subscribe(victim, channel)
    try:
        async def both_present() -> bool:
            return bool((await sub.presence_stats()).num_clients == 2)

        # Presence is added after the subscribe reply, by a one-way message to the owner (as in
        # Centrifugo it follows the subscription): the owner may answer the keeper first.
        await wait_for(both_present, what="both clients in presence")
        old_victim = victim.client_id
        pid = gateway.slot_pids()[1]
        os.kill(pid, signal.SIGKILL)
        await wait_for(lambda: gateway.slot_pids()[1] != pid, timeout=10, what="slot 1 restarted")

        async def only_keeper() -> bool:
            presence = await sub.presence()
            # The SDK reconnects the victim with a new client id; the old entry must go.
            return old_victim not in presence.clients and keeper.client_id in presence.clients

        await wait_for(only_keeper, timeout=10, what="victim's presence dropped")
    finally:
        await disconnect_all(keeper, victim)


def _listening_pids(port: int) -> set[int]:
    pids = set()
    for conn in psutil.net_connections(kind="tcp"):
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
            pids.add(conn.pid)
    return pids


async def test_sigkill_supervisor_leaves_no_worker_listening(gateway: Gateway) -> None:
    port = int(gateway.url.rsplit(":", 1)[1].split("/")[0])
    workers = gateway.worker_pids()
    assert len(workers) == 2 and _listening_pids(port) == set(workers)
    gateway.proc.kill()
    gateway.proc.wait()

    def gone() -> bool:
        return not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                       for p in workers)

    await wait_for(gone, timeout=10, what="workers exit after the supervisor died")
    assert not _listening_pids(port)


def test_crash_loop_stops_supervisor(tmp_path: Path) -> None:
    # An ipc path longer than the kernel allows: every worker fails at boot.
    runtime = tmp_path / ("r" * 120)
    cfg = base_config(shardgate={"runtime_dir": str(runtime), "boot_failure_limit": 3, "graceful_timeout": "2s"})
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg))
    proc = subprocess.run([sys.executable, "-m", "gateway", "serve", "--config", str(path), "--port", "0",
                           "--internal-port", "0", "--workers", "2"], capture_output=True, text=True,
                          timeout=scaled(60))
    assert proc.returncode == 1
    assert "failed to boot 3 times in a row" in proc.stderr


def test_sigint_stops_fast(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps(base_config()))
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(path), "--port", "0",
                             "--internal-port", "0", "--workers", "2"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + scaled(20)
    for line in proc.stdout:
        if "internal" in line or time.monotonic() > deadline:
            break
    children = [c.pid for c in psutil.Process(proc.pid).children()]
    start = time.monotonic()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=scaled(10)) == 0
    assert time.monotonic() - start < scaled(5)
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in children)


def test_check_config_cli(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[client.token]\nhmac_secret_key = "s"\n[[channel.namespaces]]\nname = "chat"\n')
    ok = subprocess.run([sys.executable, "-m", "gateway", "check-config", str(good)], capture_output=True,
                        text=True, timeout=scaled(30))
    assert ok.returncode == 0, ok.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('[client]\nping_intervall = "25s"\n')
    res = subprocess.run([sys.executable, "-m", "gateway", "check-config", str(bad)], capture_output=True,
                         text=True, timeout=scaled(30))
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0
    assert "client.ping_intervall" in res.stderr


def test_owner_cli_matches_server_hashing() -> None:
    for channel in ("news", "chat:room", "$private"):
        out = subprocess.run([sys.executable, "-m", "gateway", "owner", channel, "--workers", "4"],
                             capture_output=True, text=True, timeout=scaled(30))
        assert out.stdout.strip() == str(owner(channel, 4))


async def test_client_ids_name_their_worker(gateway: Gateway) -> None:
    """SO_REUSEPORT spreads connections by a hash of their addresses: 12 of them all landed on one
    worker once in CI (about 1 in 2,000), so connect until both workers have answered, up to 64."""
    seen = set()
    clients = []
    for _ in range(64):
        ws, result = await raw_connect(gateway.url)
        clients.append(ws)
        seen.add(slot_of_client(str(result["client"])))
        if seen == {0, 1}:
            break
    for ws in clients:
        await ws.close()
    assert seen == {0, 1}


def test_port_zero_shared_by_all_workers(gateway: Gateway) -> None:
    port = int(gateway.url.rsplit(":", 1)[1].split("/")[0])
    assert _listening_pids(port) == set(gateway.worker_pids())
    with socket.create_connection(("127.0.0.1", port), timeout=scaled(2)):
        pass
    assert gateway.health()["status"] == "ok"


@pytest.mark.parametrize("path", ["/", "/connection/websocket2", "/api"])
async def test_other_paths_404(gateway: Gateway, path: str) -> None:
    url = gateway.url.replace("/connection/websocket", path)
    with pytest.raises(websockets.exceptions.InvalidStatus) as err:
        await websockets.connect(url)
    assert err.value.response.status_code == 404


async def _recv_json(ws: ClientConnection) -> dict[str, object]:
    data = json.loads(await asyncio.wait_for(ws.recv(), scaled(5)))
    assert isinstance(data, dict)
    return data


async def test_connection_expiry_refresh_and_3005(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    gw = gateway_factory(base_config(client={"token": {"hmac_secret_key": SECRET}, "expired_close_delay": "300ms"}))
    ws = await websockets.connect(gw.url, ping_interval=None)
    await ws.send(json.dumps({"id": 1, "connect": {"token": mint_token(SECRET, user="u", exp_seconds=1)}}))
    reply = await _recv_json(ws)
    assert reply["connect"]["expires"] is True and reply["connect"]["ttl"] == 1  # type: ignore[index]
    # A refresh with a longer token extends the connection...
    await ws.send(json.dumps({"id": 2, "refresh": {"token": mint_token(SECRET, user="u", exp_seconds=2)}}))
    reply = await _recv_json(ws)
    assert reply["refresh"]["expires"] is True and reply["refresh"]["ttl"] in (1, 2)  # type: ignore[index]
    # ...a refresh for another user is an invalid token...
    other = await websockets.connect(gw.url, ping_interval=None)
    await other.send(json.dumps({"id": 1, "connect": {"token": mint_token(SECRET, user="u", exp_seconds=60)}}))
    await _recv_json(other)
    await other.send(json.dumps({"id": 2, "refresh": {"token": mint_token(SECRET, user="intruder")}}))
    assert await close_code(other) == (3500, "invalid token")
    # ...and without another refresh the connection ends 3005 after the grace period.
    assert await close_code(ws, timeout=6) == (3005, "connection expired")


async def test_subscription_expiry_sub_refresh_and_2501(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    gw = gateway_factory(base_config(client={"token": {"hmac_secret_key": SECRET},
                                             "expired_sub_close_delay": "300ms"}))
    ws, _ = await raw_connect(gw.url, user="u")
    sub_token = mint_token(SECRET, user="u", channel="$exp", exp_seconds=1)
    await ws.send(json.dumps({"id": 2, "subscribe": {"channel": "$exp", "token": sub_token}}))
    reply = await _recv_json(ws)
    assert reply["subscribe"]["expires"] is True  # type: ignore[index]
    await ws.send(json.dumps({"id": 3, "sub_refresh": {"channel": "$exp",
                                                       "token": mint_token(SECRET, user="u", channel="$exp",
                                                                           exp_seconds=2)}}))
    reply = await _recv_json(ws)
    assert reply["sub_refresh"]["expires"] is True  # type: ignore[index]
    push = await asyncio.wait_for(ws.recv(), scaled(6))
    assert json.loads(push) == {"push": {"channel": "$exp", "unsubscribe": {"code": 2501,
                                                                            "reason": "subscription expired"}}}
    await ws.close()


def test_check_config_rejects_unloadable_rpc_handler(tmp_path: Path) -> None:
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"shardgate": {"rpc_handlers": {"x": "no_such_module_here:fn"}}}))
    res = subprocess.run([sys.executable, "-m", "gateway", "check-config", str(cfg)], capture_output=True,
                         text=True, timeout=scaled(30))
    assert res.returncode == 2
    assert "shardgate.rpc_handlers.x" in res.stderr and "no_such_module_here" in res.stderr
