"""Reliability round 2, against a live gateway at default limits: history amplification, a
slow reader at the default queue size, disconnect reasons that are not ASCII, the server
API batch cap."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from typing import Any

from cent import AsyncClient, PublishRequest

from sharding.hashing import owner
from sharding.ids import slot_of_client
from tests.conftest import API_KEY, SECRET, Gateway, base_config, scaled, wait_for
from tests.integration.rawclient import RawWS
from tests.integration.sdk import connect, connect_on_slot, disconnect_all, slot, subscribe, token
from tests.integration.test_lifecycle_frames import silent_subscriber
from tests.integration.test_protocol_sdk import channel_owned_by
from tools.token import mint_token


def _api(gw: Gateway, method: str, body: Any) -> dict[str, Any]:
    request = urllib.request.Request(f"{gw.internal_url}/api/{method}", data=json.dumps(body).encode(),
                                     method="POST", headers={"X-API-Key": API_KEY})
    with urllib.request.urlopen(request, timeout=scaled(30)) as resp:
        result: dict[str, Any] = json.loads(resp.read())
        return result


def _amplification_config() -> dict[str, Any]:
    cfg = base_config(shardgate={"graceful_timeout": "5s", "bus_request_timeout": "2s"})
    cfg["channel"]["namespaces"].append({"name": "big", "history_size": 300, "history_ttl": "300s",
                                         "allow_history_for_client": True})
    return cfg


async def test_history_amplification_closes_3008_and_the_worker_keeps_delivering(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    """One message of 300 `history` (limit 300) of a channel holding 300 publications of
    60 KiB, sent to the worker that does not own the channel: the attacker is closed 3008
    before any reply is built, and another client of that worker keeps getting its
    publications within 100 ms, at the default limits."""
    gw = gateway_factory(_amplification_config())
    pids = gw.slot_pids()
    big = next(f"big:hist{i}" for i in range(1000) if owner(f"big:hist{i}", 2) == 1)  # not the attacker's worker
    blob = "x" * 60 * 1024
    api = AsyncClient(gw.internal_url + "/api", API_KEY, timeout=scaled(10))
    for k in range(300):
        await api.publish(PublishRequest(channel=big, data={"k": k, "blob": blob}))
    tick = channel_owned_by(1, prefix="tick")
    watcher, _ = await connect_on_slot(gw.url, 0, user="watcher")
    _, events = await subscribe(watcher, tick)
    arrivals: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            await api.publish(PublishRequest(channel=tick, data={"at": time.time()}))
            await asyncio.sleep(0.02)

    orig = events.on_publication

    async def on_publication(ctx: Any) -> None:
        arrivals.append(time.time() - ctx.pub.data["at"])
        await orig(ctx)

    events.on_publication = on_publication  # type: ignore[method-assign]
    task = asyncio.create_task(ticker())
    try:
        await wait_for(lambda: len(arrivals) >= 10, what="ticks before the attack")
        attacker = None
        for _ in range(60):  # land the attacker on the watcher's worker, which does not own `big`
            ws = await RawWS.open(gw.url)
            result = await ws.connect(token("attacker"))
            if slot_of_client(result["client"]) == 0:
                attacker = ws
                break
            await ws.aclose()
        assert attacker is not None
        mark = len(arrivals)
        batch = "\n".join(json.dumps({"id": 10 + i, "history": {"channel": big, "limit": 300}}) for i in range(300))
        await attacker.send_text(batch)
        closed = await attacker.recv_close(timeout=scaled(10))
        assert closed.code == 3008, closed
        await wait_for(lambda: len(arrivals) >= mark + 25, timeout=10, what="ticks after the attack")
        during = arrivals[mark:]
        assert max(during) < scaled(0.1), f"a tick took {max(during) * 1000:.0f} ms while the worker was attacked"
    finally:
        stop.set()
        await task
        await api.close()
        await disconnect_all(watcher)
    assert gw.slot_pids() == pids, "no worker may be restarted"


async def test_slow_reader_closed_3008_at_the_default_queue_size(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    """A subscriber that stops reading is closed 3008 promptly (not at the pong timeout 25 s
    later) with the default client.queue_max_size (1 MiB), and the others get everything."""
    gw = gateway_factory(base_config(), workers=1)
    channel = "flood"
    writer = await silent_subscriber(gw.url, mint_token(SECRET, user="slow"), channel, scaled(5))
    good, _ = await connect(gw.url, user="good")
    _, events = await subscribe(good, channel)
    api = AsyncClient(gw.internal_url + "/api", API_KEY, timeout=scaled(10))
    blob = "x" * 48 * 1024
    try:
        for k in range(600):  # ~29 MB: past the 1 MiB queue and every kernel buffer on the way
            await api.publish(PublishRequest(channel=channel, data={"k": k, "blob": blob}))
        started = time.monotonic()
        await wait_for(lambda: "code=3008" in gw.log(), timeout=5, what="3008 for the reader that stopped")
        assert time.monotonic() - started < scaled(5)
        await wait_for(lambda: len(events.pubs) == 600, timeout=20, what="the healthy subscriber got everything")
        assert [d["k"] for _, d in events.pubs] == list(range(600))
    finally:
        writer.close()
        await api.close()
        await disconnect_all(good)


async def test_disconnect_reason_is_cut_on_a_character_boundary_for_every_target(gateway: Gateway) -> None:
    """100 x "é" (200 bytes) as a disconnect reason: every connection of the user on every
    worker is closed with the code and a valid UTF-8 reason of at most 123 bytes."""
    clients = []
    for want in (0, 0, 1, 1):
        client, events = await connect_on_slot(gateway.url, want, user="victim")
        clients.append((client, events))
    assert {slot(c) for c, _ in clients} == {0, 1}
    bystander, _ = await connect(gateway.url, user="bystander")
    try:
        reply = _api(gateway, "disconnect", {"user": "victim", "disconnect": {"code": 4501, "reason": "é" * 100}})
        assert "error" not in reply, reply
        await wait_for(lambda: all(any(d.code == 4501 for d in ev.disconnected) for _, ev in clients),
                       what="every connection of the user closed with 4501")
        for _, ev in clients:
            reason = next(d.reason for d in ev.disconnected if d.code == 4501)
            assert reason == "é" * 61, reason  # 122 bytes: the 62nd "é" would not fit 123
        assert bystander.state.value == "connected"
    finally:
        await disconnect_all(bystander, *(c for c, _ in clients))


def test_api_batch_is_capped_at_its_default(gateway: Gateway) -> None:
    one = {"publish": {"channel": "plain:batch", "data": {}}}
    ok = _api(gateway, "batch", {"commands": [one] * 1000})
    assert len(ok["replies"]) == 1000 and all("error" not in r for r in ok["replies"])
    refused = _api(gateway, "batch", {"commands": [one] * 1001})
    assert refused["error"]["code"] == 107
    assert "at most 1000" in refused["error"]["message"]
