"""Fossil delta compression end to end: centrifuge-js (which applies the deltas) against a
real 2-worker gateway, JSON and protobuf, with delta subscribers on both worker slots, a
plain subscriber on the same channel, and a recovery after reconnect
(``tests/js/delta_e2e.mjs``). The server's metrics must show deltas were sent, and smaller
than the whole payloads.

Needs ``node`` and ``npm ci --prefix tests/js``; skipped otherwise, like test_js_sdk."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import API_KEY, SECRET, Gateway, base_config, scaled
from tests.redis_servers import RedisServer
from tools.token import mint_token

JS_DIR = Path(__file__).resolve().parent.parent / "js"
SCRIPT = JS_DIR / "delta_e2e.mjs"
NODE = shutil.which("node")
COUNT = 30

pytestmark = [
    pytest.mark.skipif(NODE is None, reason="node is not installed (the JS SDK tests need node >= 20)"),
    pytest.mark.skipif(not (JS_DIR / "node_modules" / "centrifuge").is_dir(),
                       reason="tests/js/node_modules is missing; run `npm ci --prefix tests/js`"),
]


def config(redis: RedisServer | None = None) -> dict[str, object]:
    cfg = base_config()
    if redis is not None:
        cfg["engine"] = {"type": "redis", "redis": {"address": redis.address, "io_timeout": "1s"}}
    channel = dict(cfg["channel"])  # type: ignore[call-overload]
    channel["namespaces"] = [*channel["namespaces"], {
        "name": "quotes", "allowed_delta_types": ["fossil"], "history_size": 500, "history_ttl": "300s",
        "force_recovery": True, "allow_subscribe_for_client": True,
    }]
    cfg["channel"] = channel
    return cfg


def metric(gw: Gateway, name: str, **labels: str) -> float:
    """The sum of ``name`` over the series whose labels include ``labels`` (all workers)."""
    with urllib.request.urlopen(gw.internal_url + "/metrics", timeout=scaled(5)) as resp:
        text = resp.read().decode()
    total = 0.0
    for m in re.finditer(rf"^{name}\{{([^}}]*)\}} (\S+)$", text, re.M):
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(2))
    return total


@pytest.mark.parametrize("protocol", ["json", "protobuf"])
def test_js_sdk_reconstructs_every_delta(gateway_factory: Callable[..., Gateway], protocol: str) -> None:
    check(gateway_factory(config()), protocol)


@pytest.mark.usefixtures("redis_bin")
def test_js_sdk_reconstructs_every_delta_over_redis(gateway_factory: Callable[..., Gateway],
                                                    redis_server: RedisServer) -> None:
    """The delta mark travels through Redis (pub/sub and the stream recovery reads)."""
    check(gateway_factory(config(redis_server)), "json")


def check(gw: Gateway, protocol: str) -> None:
    channel = f"quotes:{uuid.uuid4().hex[:10]}"
    timeout = scaled(40)
    env = {
        **os.environ,
        "SDK_URL": gw.url, "SDK_CHANNEL": channel, "SDK_PROTOCOL": protocol, "SDK_COUNT": str(COUNT),
        "SDK_TOKEN": mint_token(SECRET, user="delta-user", exp_seconds=3600),
        "SDK_API_URL": gw.internal_url + "/api", "SDK_API_KEY": API_KEY,
        "SDK_TIMEOUT_MS": str(int(timeout * 1000)),
    }
    try:
        proc = subprocess.run([str(NODE), str(SCRIPT)], cwd=JS_DIR, env=env, capture_output=True, text=True,
                              timeout=timeout + scaled(10))
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"node script did not exit: {exc.stdout!r} {exc.stderr!r}\n{gw.log()}")
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}\ngateway log:\n{gw.log()}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["ok"] and result["protocol"] == protocol and result["slots"] == [0, 1]
    assert result["recovery"] == {"wasRecovering": True, "recovered": True}
    for stats in result["final"]:
        assert stats["numPublications"] == 3 * COUNT
        assert stats["bytesReceived"] * 2 < stats["bytesDecoded"]

    # The server sent deltas (on both workers), and they were smaller than whole payloads.
    for slot in ("0", "1"):
        assert metric(gw, "shardgate_messages_sent_total", type="publication_delta", slot=slot) > 0
    deltas = metric(gw, "shardgate_messages_sent_total", type="publication_delta")
    delta_bytes = metric(gw, "shardgate_sent_bytes_total", type="publication_delta")
    whole = metric(gw, "shardgate_messages_sent_total", type="publication")
    whole_bytes = metric(gw, "shardgate_sent_bytes_total", type="publication")
    # Every live publication after the first of each subscription went as a delta: 3*COUNT - 1
    # to each subscriber that stayed, and to the one that recovered COUNT - 1 before it left and
    # COUNT after (its recovered ones travelled in its subscribe reply, a delta chain).
    subs = len(result["final"])
    assert deltas == (subs - 1) * (3 * COUNT - 1) + (COUNT - 1) + COUNT
    assert whole >= 3 * COUNT  # the plain subscriber's, and the first after each subscribe
    assert delta_bytes / deltas < whole_bytes / whole / 3
