"""Publishes per second from one process into Redis through RedisStore (history on).

    python -m tools.bench.redis_publish --address 127.0.0.1:6379 --count 100000 --batch 1000

Each loop tick queues ``--batch`` publishes (one pipeline) and keeps at most ``--window``
unanswered; bounded by ``--count`` and ``--max-seconds``, so it is a quick check, not a soak.
``--json`` prints one JSON object (``shardgate bench redis`` runs it this way).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import uvloop

from gateway.config.engine import RedisEngineConfig
from gateway.core.model import StreamOptions
from gateway.engine.redis import RedisStore


async def measure(address: str, count: int, batch: int, window: int, channels: int, size: int,
                  prefix: str = "shardgate", max_seconds: float = 60.0) -> dict[str, Any]:
    addresses = tuple(a.strip() for a in address.split(",") if a.strip())  # several = client-side shards
    store = RedisStore(RedisEngineConfig(address=addresses, prefix=prefix), asyncio.get_running_loop(),
                       on_message=lambda ch, m: None)
    await store.start()
    opts = StreamOptions(size=100, ttl=300.0, meta_ttl=3600.0)
    payload = b"x" * size
    names = [f"bench{i}" for i in range(channels)]
    inflight: list[asyncio.Future[object]] = []
    started = time.perf_counter()
    cpu0 = time.process_time()
    deadline = started + max_seconds
    sent = 0
    try:
        while sent < count and time.perf_counter() < deadline:
            n = min(batch, count - sent)
            futures = [store.publish(names[(sent + i) % channels], payload, opts) for i in range(n)]
            sent += n
            inflight.append(asyncio.gather(*futures))
            if len(inflight) * batch >= window:
                await inflight.pop(0)
        await asyncio.gather(*inflight)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu0
    finally:
        await store.close()
    return {"publications": sent, "seconds": round(elapsed, 3), "per_s": round(sent / elapsed, 1),
            "pipelines": store.round_trips[0], "batch": batch, "window": window, "channels": channels,
            "payload_bytes": size, "cpu_pct": round(100 * cpu / elapsed, 1)}


async def run(address: str, count: int, batch: int, window: int, channels: int, size: int,
              prefix: str = "shardgate", max_seconds: float = 60.0, as_json: bool = False) -> None:
    r = await measure(address, count, batch, window, channels, size, prefix, max_seconds)
    if as_json:
        print(json.dumps(r))
    else:
        print(f"{r['publications']} publishes in {r['seconds']:.2f}s = {r['per_s']:,.0f}/s; "
              f"pipelines {r['pipelines']}")


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--address", default="127.0.0.1:6379")
    p.add_argument("--count", type=int, default=100_000)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--window", type=int, default=10_000)
    p.add_argument("--channels", type=int, default=100)
    p.add_argument("--size", type=int, default=100)
    p.add_argument("--prefix", default="shardgate", help="Redis key prefix (engine.redis.prefix)")
    p.add_argument("--max-seconds", type=float, default=60.0, help="stop queueing after this many seconds")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    a = p.parse_args()
    uvloop.run(run(a.address, a.count, a.batch, a.window, a.channels, a.size, a.prefix, a.max_seconds, a.json))


if __name__ == "__main__":
    main()
