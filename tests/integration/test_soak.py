"""Soak: connect/subscribe/disconnect cycles against 2 workers. Worker RSS must settle
(growth under 5% after warm-up), file descriptors must not leak, and the gauges must
come back to zero. CI runs a short form; ``pytest -m slow`` runs 100k cycles."""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.request

import psutil
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families

from gateway.core.wheel import COMPACT_MIN
from tests.conftest import SECRET, Gateway, base_config, scaled, wait_for
from tools.token import mint_token


def _gauges(gw: Gateway) -> dict[str, float]:
    with urllib.request.urlopen(gw.internal_url + "/metrics", timeout=scaled(5)) as resp:
        text = resp.read().decode()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def _footprint(pids: list[int]) -> tuple[int, int]:
    rss = sum(psutil.Process(p).memory_info().rss for p in pids)
    fds = sum(len(os.listdir(f"/proc/{p}/fd")) for p in pids)
    return rss, fds


async def _cycles(url: str, count: int, concurrency: int, token: str) -> None:
    done = 0

    async def worker(n: int) -> None:
        nonlocal done
        for i in range(n):
            async with websockets.connect(url, ping_interval=None) as ws:
                await ws.send(json.dumps({"id": 1, "connect": {"token": token}}) + "\n"
                              + json.dumps({"id": 2, "subscribe": {"channel": f"soak-{i % 50}"}}))
                got = 0
                while got < 2:
                    frame = await asyncio.wait_for(ws.recv(), scaled(5))
                    got += len(str(frame).split("\n"))
            done += 1

    per = count // concurrency
    await asyncio.gather(*(worker(per) for _ in range(concurrency)))
    assert done == per * concurrency


async def _soak(gw: Gateway, cycles: int) -> dict[str, float]:
    token = mint_token(SECRET, user="soak")
    pids = gw.worker_pids()
    warmup = max(500, cycles // 10)
    await _cycles(gw.url, warmup, 20, token)
    await wait_for(lambda: _gauges(gw)["shardgate_connections"] == 0, timeout=10, what="warm-up closed")
    rss0, fds0 = _footprint(pids)
    started = time.monotonic()
    await _cycles(gw.url, cycles, 20, token)
    elapsed = time.monotonic() - started

    def settled() -> bool:
        g = _gauges(gw)
        return g["shardgate_connections"] == 0 and g["shardgate_subscriptions"] == 0 and g["shardgate_channels"] == 0

    await wait_for(settled, timeout=15, what="gauges back to zero")
    # Each connection's token expiry (an hour away) was cancelled when it left: the wheels keep
    # at most COMPACT_MIN cancelled entries each (beyond that, no more than the live ones), not
    # one per connection ever made.
    timers = _gauges(gw)["shardgate_timer_entries"]
    assert timers <= len(pids) * (COMPACT_MIN + 64), f"timer wheels hold {timers} entries after {cycles} cycles"
    rss1, fds1 = _footprint(pids)
    assert gw.worker_pids() == pids, "a worker restarted"
    figures = {"cycles": cycles, "seconds": round(elapsed, 1), "cycles_per_s": round(cycles / elapsed),
               "timer_entries": timers,
               "rss_before_mib": round(rss0 / 2**20, 1), "rss_after_mib": round(rss1 / 2**20, 1),
               "rss_growth_pct": round(100 * (rss1 - rss0) / rss0, 2), "fds_before": fds0, "fds_after": fds1}
    print("soak:", json.dumps(figures))
    assert fds1 <= fds0 + 2, f"file descriptors leaked: {fds0} -> {fds1}"
    assert rss1 <= rss0 * 1.05, f"RSS grew more than 5% after warm-up: {figures}"
    return figures


async def test_soak_short(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    await _soak(gateway_factory(base_config(shardgate={"command_rate": 0})), cycles=3000)


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_soak_100k(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    await _soak(gateway_factory(base_config(shardgate={"command_rate": 0})), cycles=100_000)
