"""Smoke test of ``shardgate bench`` (tools/bench): every scenario and ``compare``, with tiny numbers.

These check that the tool runs end to end and counts correctly (nothing lost, no errors); they never
assert on speed, so they hold on a loaded CI box. Real measurements are in README "Performance".
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway import native
from tests.conftest import ROOT, SECRET, Gateway, base_config, scaled

PEERS = ROOT / "tools" / "bench" / "peers"


def bench(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools.bench", *args], capture_output=True, text=True, cwd=ROOT,
        timeout=scaled(timeout), env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"})


def bench_json(*args: str, timeout: float = 60.0) -> dict[str, Any]:
    proc = bench(*args, "--json", "--quiet", "--setup-timeout", str(scaled(20)), timeout=timeout)
    assert proc.returncode == 0, f"rc {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """One 2-worker gateway for the scenario tests: plain channels, echo rpc on, no command rate limit."""
    cfg = base_config(channel={"without_namespace": {"allow_subscribe_for_client": True,
                                                     "allow_publish_for_client": True}},
                      shardgate={"graceful_timeout": "2s", "rpc_echo": True, "command_rate": 0})
    g = Gateway(tmp_path_factory.mktemp("bench-gw"), cfg, workers=2)
    try:
        g.wait_ready()
        yield g
    finally:
        g.stop()


def common(gw: Gateway) -> list[str]:
    return ["--url", gw.url, "--token-secret", SECRET, "--clients", "2", "--duration", "0.5",
            "--drain", str(scaled(5))]


def assert_clean(r: dict[str, Any]) -> None:
    assert r["errors"] == 0, (r.get("error_codes"), r.get("close_codes"))
    assert r["disconnects"] == 0, r
    assert r["setup_failed"] == 0, r
    assert r["client_cpu_pct"] >= 0
    assert r["server_pids"], "server pids were not discovered from the listening port"


def test_fanout_max_rate(gw: Gateway) -> None:
    r = bench_json("fanout", *common(gw), "--subscribers", "20", "--window", "4")
    assert_clean(r)
    assert r["mode"] == "max-rate"
    assert r["subscribers"] == 20
    assert r["published"] > 0
    assert r["lost"] == 0 and r["deliveries"] == r["published"] * 20
    assert r["latency_ms"]["count"] == r["deliveries"]
    assert r["deliveries_per_s"] > 0
    assert sorted(r["server_pids"]) == sorted(gw.worker_pids())


def test_fanout_fixed_rate_cross_worker(gw: Gateway, tmp_path: Path) -> None:
    plot = tmp_path / "fanout.png"
    args = ["fanout", *common(gw), "--subscribers", "10", "--rate", "40", "--publisher-slot", "1",
            "--subscriber-slot", "0", "--channel-owner", "1"]
    try:
        import matplotlib  # noqa: F401
        args += ["--plot", str(plot)]
    except ImportError:
        plot = None  # type: ignore[assignment]
    r = bench_json(*args)
    assert_clean(r)
    assert r["mode"] == "fixed-rate"
    assert 0 < r["published"] <= 21  # 40/s for 0.5 s, open loop
    assert r["lost"] == 0 and r["deliveries"] == r["published"] * 10
    assert r["latency_ms"]["p99"] > 0
    if plot is not None:
        assert plot.stat().st_size > 1000


def test_rooms(gw: Gateway) -> None:
    r = bench_json("rooms", *common(gw), "--channels", "4", "--subscribers", "3", "--rate", "80")
    assert_clean(r)
    assert r["subscribers"] == 12
    assert r["lost"] == 0 and r["deliveries"] == r["published"] * 3
    lat_same, lat_cross = r["latency_same_worker_ms"], r["latency_cross_worker_ms"]
    assert lat_same["count"] + lat_cross["count"] == r["deliveries"]


def test_rpc(gw: Gateway) -> None:
    r = bench_json("rpc", *common(gw), "--connections", "4")
    assert_clean(r)
    assert r["calls"] > 0 and r["lost"] == 0
    assert r["rpc_per_s"] > 0
    r = bench_json("rpc", *common(gw), "--connections", "4", "--rate", "100")
    assert_clean(r)
    assert r["mode"] == "fixed-rate" and 0 < r["calls"] <= 51 and r["lost"] == 0


def test_connect(gw: Gateway) -> None:
    # --duration only bounds the schedule (40 at 200/s = 0.2 s); a slow box must not cut the storm short
    r = bench_json("connect", *common(gw), "--connections", "40", "--rate", "200", "--hold", "0.2",
                   "--duration", "10")
    assert r["connections"] == 40 and r["failed"] == 0, r
    assert r["conn_per_s"] > 0
    assert r["latency_ms"]["count"] == 40
    assert r["server_rss_after"] and r["server_rss_per_conn_bytes"] is not None


def test_connect_and_subscribe(gw: Gateway) -> None:
    """--channels: every connection also subscribes (a refused subscribe counts as a failure)."""
    r = bench_json("connect", *common(gw), "--connections", "30", "--channels", "30", "--rate", "200",
                   "--hold", "0.2", "--duration", "10")
    assert r["connections"] == 30 and r["failed"] == 0, r
    assert r["errors"] == 0, r


def test_scaling_steps() -> None:
    """Two steps with a tiny load: each starts its own gateway, and the second gets an efficiency
    against the first (never asserted on: this box has 2 cores)."""
    out = bench_json("scaling", "--steps", "1,2", "--channels-per-worker", "2", "--subscribers", "5",
                     "--duration", "0.5", "--window", "4", "--drain", str(scaled(5)), timeout=180)
    rows = out["results"]
    assert [r["workers"] for r in rows] == [1, 2]
    for r in rows:
        assert "error" not in r, r
        assert r["deliveries_per_s"] > 0 and r["lost"] == 0 and r["errors"] == 0, r
        assert r["channels"] == 2 * r["workers"] and r["subscribers"] == 10 * r["workers"]
    assert rows[0]["efficiency"] == 1.0
    assert rows[1]["efficiency"] > 0 and isinstance(rows[1]["meets_target"], bool)
    assert out["target_efficiency"] == 0.8
    assert out["build"] == native.summary()  # which build the steps ran (pure, or tools.native's)


def test_table_output(gw: Gateway) -> None:
    proc = bench("rpc", *common(gw), "--connections", "2", "--quiet")
    assert proc.returncode == 0, proc.stderr
    for word in ("round trips/s", "us per round trip", "round trip ms", "p99", "client", "server"):
        assert word in proc.stdout


def test_refuses_remote_target() -> None:
    proc = bench("rpc", "--url", "ws://192.0.2.1:8000/connection/websocket", "--token-secret", "x")
    assert proc.returncode == 2
    assert "--allow-remote" in proc.stderr


def test_compare() -> None:
    targets = ["shardgate", "picows", "picows-centrifugo", "websockets", "aiohttp"]
    node_ok = shutil.which("node") is not None and (PEERS / "node_modules").is_dir()
    if node_ok:
        targets += ["node-ws", "node-ws-centrifugo", "socketio", "uws"]
    out = bench_json("compare", "--targets", ",".join(targets), "--subscribers", "10", "--connections", "2",
                     "--duration", "0.3", "--clients", "1", "--window", "4", "--drain", str(scaled(5)),
                     timeout=180)
    rows = {r["target"]: r for r in out["results"]}
    assert list(rows) == targets
    for name, row in rows.items():
        if name == "uws" and "skipped" in row:  # an unofficial binary build; allowed not to load
            continue
        assert "skipped" not in row, row
        for job, key in (("fanout", "deliveries_per_s"), ("echo", "rpc_per_s")):
            res = row[job]
            assert "error" not in res, (name, res)
            assert res[key] > 0, (name, job)
            assert res["lost"] == 0 and res["errors"] == 0 and res["disconnects"] == 0, (name, job, res)
        if name != "shardgate":
            assert row["fanout_ratio"] > 0 and row["echo_ratio"] > 0


@pytest.mark.skipif(shutil.which("node") is None or not (PEERS / "node_modules" / "socket.io").is_dir(),
                    reason="needs node and `npm ci --prefix tools/bench/peers`")
def test_compare_socketio_fanout() -> None:
    """shardgate's Socket.IO endpoint (2 workers) beside the node socket.io peer, same dialect:
    nothing lost, the ratio and the server CPU per delivery are reported."""
    out = bench_json("compare", "--targets", "shardgate-socketio,socketio", "--workers", "2", "--subscribers", "10",
                     "--connections", "2", "--duration", "0.3", "--clients", "1", "--window", "4",
                     "--drain", str(scaled(5)), timeout=120)
    rows = {r["target"]: r for r in out["results"]}
    assert list(rows) == ["shardgate-socketio", "socketio"]
    for name, row in rows.items():
        for job, key in (("fanout", "deliveries_per_s"), ("echo", "rpc_per_s")):
            res = row[job]
            assert "error" not in res, (name, res)
            assert res[key] > 0, (name, job)
            assert res["lost"] == 0 and res["errors"] == 0 and res["disconnects"] == 0, (name, job, res)
        assert row["fanout"]["server_cpu_us_per_delivery"] > 0, row["fanout"]
        assert row["echo"]["server_cpu_us_per_round_trip"] > 0, row["echo"]
    assert rows["socketio"]["fanout_ratio"] > 0 and rows["socketio"]["echo_ratio"] > 0


@pytest.mark.usefixtures("redis_bin")
def test_redis_two_nodes_beside_memory() -> None:
    """``bench redis``: its own redis-server, memory (1 node) and redis (2 nodes) rows, INFO commandstats."""
    out = bench_json("redis", "--subscribers", "4", "--rate", "200", "--duration", "1", "--workers", "1",
                     "--clients", "1", "--drain", str(scaled(5)), "--pipelined", "store",
                     "--pipelined-count", "2000", "--pipelined-seconds", "1", "--no-reference", timeout=90)
    rows = {r["name"]: r for r in out["rows"]}
    assert list(rows) == ["memory", "redis-2-nodes"], out["rows"]
    for name, row in rows.items():
        assert "error" not in row, (name, row)
        assert row["deliveries"] > 0 and row["deliveries_per_s"] > 0, (name, row)
        assert row["lost"] == 0 and row["errors"] == 0 and row["disconnects"] == 0, (name, row)
        assert row["deliveries"] == row["published"] * 4, (name, row)
    redis_row = rows["redis-2-nodes"]
    # half the subscribers on each node, both measured
    assert redis_row["latency_publisher_node_ms"]["count"] == redis_row["latency_other_node_ms"]["count"] > 0
    cpp = out["redis_commands_per_publication"]
    assert cpp["total"] > 0 and cpp["publications"] == redis_row["published"]
    assert out["ratios"]["p99"] > 0 and out["ratios"]["deliveries"] > 0
    assert out["pipelined"]["store"]["per_s"] > 0
    assert out["redis"]["started"] is True
