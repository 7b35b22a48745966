"""bench compare's ratios: each peer run against the shardgate run just before it."""

from __future__ import annotations

from typing import Any

from tools.bench.compare import _ratios, paired_summary


def _row(target: str, rpc_per_s: float, server_cpu_pct: float = 90.0, client_cpu_pct: float = 80.0) -> dict[str, Any]:
    return {"target": target, "echo": {"rpc_per_s": rpc_per_s, "server_cpu_pct": server_cpu_pct,
                                       "client_cpu_pct": client_cpu_pct}}


def test_alternated_runs_pair_with_the_shardgate_run_before() -> None:
    rows = [_row("shardgate", 40_000), _row("node-ws", 50_000), _row("shardgate", 45_000), _row("node-ws", 45_000)]
    _ratios(rows, ["echo"])
    assert [r["echo_ratio"] for r in rows] == [1.0, 0.8, 1.0, 1.0]  # not 45,000 / the first run's 40,000
    assert paired_summary(rows, ["echo"]) == [
        "echo shardgate/node-ws over 2 pairs: median 0.90 (0.80-1.00)",
        # every run at 90% server CPU: CPU per round trip follows the rate
        "echo server CPU per round trip, node-ws/shardgate over 2 pairs: median 0.90 (0.80-1.00)"]


def test_server_cpu_ratio_apart_from_throughput() -> None:
    """Closed loop on shared cores: a peer may run faster on more server CPU per round trip
    (a cheaper client left it more); the CPU ratio says which server is cheaper."""
    rows = [_row("shardgate", 90_000, server_cpu_pct=90.0), _row("node-ws", 100_000, server_cpu_pct=120.0),
            _row("shardgate", 90_000, server_cpu_pct=90.0), _row("node-ws", 100_000, server_cpu_pct=100.0)]
    _ratios(rows, ["echo"])
    assert [r["echo_ratio"] for r in rows[1::2]] == [0.9, 0.9]
    assert [r["echo_cpu_ratio"] for r in rows[1::2]] == [1.2, 1.0]  # 12 and 10 us against 10
    assert paired_summary(rows, ["echo"])[1] == \
        "echo server CPU per round trip, node-ws/shardgate over 2 pairs: median 1.10 (1.00-1.20)"


def test_a_peer_that_ran_first_uses_the_first_shardgate_run() -> None:
    rows = [_row("node-ws", 20_000), _row("shardgate", 40_000)]
    _ratios(rows, ["echo"])
    assert rows[0]["echo_ratio"] == 2.0
    assert paired_summary(rows, ["echo"]) == []  # one pair: no summary line


def test_cpu_per_round_trip_for_server_and_client() -> None:
    rows = [_row("shardgate", 50_000, server_cpu_pct=100.0, client_cpu_pct=50.0)]
    _ratios(rows, ["echo"])
    assert rows[0]["echo"]["server_cpu_us_per_round_trip"] == 20.0  # 1 core-second / 50,000
    assert rows[0]["echo"]["client_cpu_us_per_round_trip"] == 10.0


def test_skipped_shardgate_run_is_not_a_reference() -> None:
    rows = [_row("shardgate", 40_000), {"target": "shardgate", "skipped": "failed to start"}, _row("node-ws", 40_000)]
    _ratios(rows, ["echo"])
    assert rows[2]["echo_ratio"] == 1.0
