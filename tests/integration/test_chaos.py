"""Chaos under continuous publishing, with recovering subscribers on every worker:
kill -9 of a non-owner worker, kill -9 of the owner, SIGSTOP, SIGTERM. Per subscriber:
a gap is never presented as recovered, reconnects are quick, and after non-owner
failures nothing is lost."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import time
from typing import Any

from cent import AsyncClient, CentApiResponseError, CentNetworkError, CentTransportError, PublishRequest

from tests.conftest import API_KEY, Gateway, base_config, scaled, wait_for
from tests.integration.sdk import ClientEvents, SubEvents, connect_on_slot, disconnect_all, slot, subscribe
from tests.integration.test_protocol_sdk import channel_owned_by


def _config(**shardgate: Any) -> dict[str, Any]:
    cfg = base_config(shardgate={"graceful_timeout": "5s", "drain_window": "500ms", "bus_request_timeout": "1s",
                                 **shardgate})
    cfg["channel"]["without_namespace"]["history_size"] = 5000
    return cfg


class Run:
    """Subscribers on both workers, a publisher through the HTTP API, and bookkeeping."""

    def __init__(self, gw: Gateway, channel: str) -> None:
        self.gw, self.channel = gw, channel
        self.clients: list[tuple[Any, ClientEvents, SubEvents]] = []
        self.sent = 0
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def start(self, n: int = 8) -> None:
        for i in range(n):
            client, cev = await connect_on_slot(self.gw.url, i % 2, user=f"c{i}")
            _, sev = await subscribe(client, self.channel)
            self.clients.append((client, cev, sev))
        assert {slot(c) for c, _, _ in self.clients} == {0, 1}
        self.task = asyncio.create_task(self._publish())
        await wait_for(lambda: self.sent >= 20, what="publishing")

    async def _publish(self) -> None:
        api = AsyncClient(self.gw.internal_url + "/api", API_KEY, timeout=scaled(3))
        try:
            while not self.stop.is_set():
                for _ in range(300):
                    try:
                        await api.publish(PublishRequest(channel=self.channel, data={"k": self.sent},
                                                         idempotency_key=str(self.sent)))
                        break
                    except (CentApiResponseError, CentTransportError, CentNetworkError):
                        await asyncio.sleep(0.02)
                else:
                    raise AssertionError("publishing kept failing")
                self.sent += 1
                await asyncio.sleep(0.005)
        finally:
            await api.close()

    async def finish(self) -> None:
        mark = self.sent
        await wait_for(lambda: self.sent >= mark + 20, timeout=10, what="publishing after the fault")
        self.stop.set()
        assert self.task is not None
        await self.task
        await wait_for(lambda: all(ev.pubs and ev.pubs[-1][1]["k"] == self.sent - 1 for _, _, ev in self.clients),
                       timeout=20, what="every subscriber caught up")

    def check(self, lossless: bool) -> None:
        for client, _cev, sev in self.clients:
            ks = [d["k"] for _, d in sev.pubs]
            assert len(ks) == len(set(ks)), f"{client.client_id}: duplicates"
            assert ks == sorted(ks), f"{client.client_id}: out of order"
            if lossless:
                assert ks == list(range(ks[0], self.sent)), f"{client.client_id}: lost publications"
                assert all(s.recovered for s in sev.subscribed[1:]), "not recovered"
            # A gap may only follow a resubscribe that said recovered: false.
            gaps = sum(1 for a, b in itertools.pairwise(ks) if b != a + 1)
            unrecovered = sum(1 for s in sev.subscribed[1:] if not s.recovered)
            assert gaps <= unrecovered, f"{client.client_id}: a gap was presented as recovered"

    async def close(self) -> None:
        self.stop.set()
        if self.task is not None and not self.task.done():
            self.task.cancel()
        await disconnect_all(*(c for c, _, _ in self.clients))


async def _quick_reconnects(run: Run, victims: list[int], started: float) -> None:
    """Everyone on the failed worker is connected and subscribed again within 3 s."""
    await wait_for(lambda: all(len(sev.subscribed) >= 2 for _, _, sev in
                               [run.clients[i] for i in victims]), timeout=10, what="victims resubscribed")
    elapsed = time.monotonic() - started
    print(f"chaos: {len(victims)} subscribers reconnected and resubscribed {elapsed:.2f}s after the fault")
    assert elapsed < scaled(3), "reconnect took longer than 3 s"


async def test_kill_non_owner_loses_nothing(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    gw = gateway_factory(_config())
    run = Run(gw, channel_owned_by(0))
    try:
        await run.start()
        victims = [i for i, (c, _, _) in enumerate(run.clients) if slot(c) == 1]
        started = time.monotonic()
        os.kill(gw.slot_pids()[1], signal.SIGKILL)
        await _quick_reconnects(run, victims, started)
        await run.finish()
        run.check(lossless=True)
    finally:
        await run.close()


async def test_kill_owner_never_presents_a_gap_as_recovered(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    gw = gateway_factory(_config())
    run = Run(gw, channel_owned_by(0))
    try:
        await run.start()
        started = time.monotonic()
        os.kill(gw.slot_pids()[0], signal.SIGKILL)
        await _quick_reconnects(run, list(range(len(run.clients))), started)
        await run.finish()
        run.check(lossless=False)
        assert all(not s.recovered for _, _, sev in run.clients for s in sev.subscribed[1:2]), \
            "a stream that was lost must not be reported recovered"
    finally:
        await run.close()


async def test_sigstop_worker_is_replaced_and_clients_recover(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    gw = gateway_factory(_config(heartbeat_timeout="1500ms"))
    run = Run(gw, channel_owned_by(0))
    stuck = gw.slot_pids()[1]
    try:
        await run.start()
        os.kill(stuck, signal.SIGSTOP)
        await wait_for(lambda: gw.slot_pids()[1] != stuck, timeout=15, what="stuck worker replaced")
        victims = [i for i, (c, _, _) in enumerate(run.clients) if slot(c) == 1]
        await wait_for(lambda: all(len(run.clients[i][2].subscribed) >= 2 for i in victims), timeout=15,
                       what="victims back")
        await run.finish()
        run.check(lossless=True)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(stuck, signal.SIGCONT)
        await run.close()


async def test_sigterm_closes_everyone_with_3001(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    gw = gateway_factory(_config())
    run = Run(gw, channel_owned_by(1))
    try:
        await run.start(n=6)
        run.stop.set()
        assert run.task is not None
        await run.task
        gw.proc.send_signal(signal.SIGTERM)
        await wait_for(lambda: all(any(x.code == 3001 for x in cev.connecting) for _, cev, _ in run.clients),
                       timeout=10, what="3001 for every client")
        assert gw.proc.wait(timeout=scaled(15)) == 0
        run.check(lossless=True)
    finally:
        await run.close()


def test_unused() -> None:
    assert asyncio
