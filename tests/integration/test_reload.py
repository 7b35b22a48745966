"""Zero-downtime rolling reload: subscribers with recovery ride through SIGHUP under
continuous publishing and end with every publication exactly once, in order, every
resubscribe reported ``recovered: true``."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from cent import AsyncClient, CentApiResponseError, CentNetworkError, CentTransportError, PublishRequest

from tests.conftest import API_KEY, Gateway, base_config, scaled, wait_for
from tests.integration.sdk import connect_on_slot, disconnect_all, slot, subscribe
from tests.integration.test_protocol_sdk import channel_owned_by


def _reload_config() -> dict[str, Any]:
    cfg = base_config(shardgate={"graceful_timeout": "5s", "drain_window": "1s", "bus_request_timeout": "2s"})
    cfg["channel"]["without_namespace"]["history_size"] = 5000
    return cfg


async def _publisher(gw: Gateway, channels: list[str], stop: asyncio.Event, sent: dict[str, int]) -> None:
    """Publishes k = 0, 1, 2... to each channel, retrying refusals (an owner that is handing
    over answers a temporary error and has not published anything)."""
    client = AsyncClient(gw.internal_url + "/api", API_KEY, timeout=scaled(5))
    try:
        k = 0
        while not stop.is_set():
            for channel in channels:
                for _attempt in range(200):
                    try:
                        await client.publish(PublishRequest(channel=channel, data={"k": k},
                                                            idempotency_key=f"{channel}-{k}"))
                        break
                    except (CentApiResponseError, CentTransportError, CentNetworkError):
                        await asyncio.sleep(0.02)
                else:
                    raise AssertionError(f"publish {k} to {channel} kept failing")
                sent[channel] = k + 1
            k += 1
            await asyncio.sleep(0.01)
    finally:
        await client.close()


async def _run_reload(gw: Gateway, reloads: int) -> None:
    channels = [channel_owned_by(0), channel_owned_by(1)]
    subscribers = []
    for i in range(8):
        # Half on each worker slot (SO_REUSEPORT alone put all 8 on one slot now and then).
        client, _ = await connect_on_slot(gw.url, i % 2, user=f"r{i}")
        subs = [await subscribe(client, ch) for ch in channels]
        subscribers.append((client, subs))
    assert {slot(c) for c, _ in subscribers} == {0, 1}
    stop = asyncio.Event()
    sent: dict[str, int] = {}
    task = asyncio.create_task(_publisher(gw, channels, stop, sent))
    try:
        await wait_for(lambda: min(sent.values(), default=0) >= 20, what="publishing under way")
        for n in range(1, reloads + 1):
            gw.proc.send_signal(signal.SIGHUP)
            await wait_for(lambda n=n: gw.log().count("reload complete") >= n, timeout=30, what=f"reload {n}")
        # Every client of a retired worker was disconnected and came back.
        await wait_for(lambda: all(len(s[1].subscribed) >= 2 for _, subs in subscribers for s in subs),
                       timeout=20, what="every subscriber resubscribed after the reload")
        mark = dict(sent)
        await wait_for(lambda: min(sent.values()) >= max(mark.values()) + 20, what="publishing after the reload")
    finally:
        stop.set()
        await task
    try:
        for client, subs in subscribers:
            for (_, events), channel in zip(subs, channels, strict=True):
                try:
                    await wait_for(lambda ev=events, ch=channel: len(ev.pubs) >= sent[ch], timeout=20,
                                   what=f"{client.client_id} got everything on {channel}")
                except AssertionError as exc:
                    got = [d["k"] for _, d in events.pubs]
                    missing = sorted(set(range(sent[channel])) - set(got))
                    raise AssertionError(
                        f"{exc}: missing k={missing} of {sent[channel]}; around the gap "
                        f"{[p for p in events.pubs if missing and abs(p[1]['k'] - missing[0]) < 4]}; subscribed="
                        f"{[(s.recovered, s.was_recovering, s.stream_position) for s in events.subscribed]}") from exc
                assert [d["k"] for _, d in events.pubs] == list(range(sent[channel])), "gap or duplicate"
                offsets = [o for o, _ in events.pubs]
                assert offsets == list(range(offsets[0], offsets[0] + len(offsets)))
                for again in events.subscribed[1:]:
                    assert again.was_recovering and again.recovered, "resubscribe not recovered"
    finally:
        await disconnect_all(*(c for c, _ in subscribers))
    assert "successor" in gw.log() and "handoff: installed" in gw.log()


async def test_rolling_reload_loses_nothing(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    await _run_reload(gateway_factory(_reload_config()), reloads=1)


async def test_two_reloads_in_a_row(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    await _run_reload(gateway_factory(_reload_config()), reloads=2)
