"""bench scaling's arithmetic and table (no gateway, no loop)."""

from __future__ import annotations

import pytest

from tools.bench.scaling import client_cpus, efficiency, parse_steps, table


def test_steps_parse_and_refuse_nonsense() -> None:
    assert parse_steps("1,2,4,8") == [1, 2, 4, 8]
    assert parse_steps(" 2, 4 ") == [2, 4]
    for bad in ("", "0,1", "-1"):
        with pytest.raises(ValueError):
            parse_steps(bad)


def test_clients_go_to_the_cpus_the_workers_leave() -> None:
    cpus = list(range(16))
    assert client_cpus(8, cpus) == list(range(8, 16))
    assert client_cpus(1, cpus) == list(range(1, 16))
    assert client_cpus(16, cpus) == [] and client_cpus(2, [0, 1]) == []  # nothing free: not pinned


def test_efficiency_is_speed_up_over_worker_ratio() -> None:
    rows = [{"workers": 1, "deliveries_per_s": 100_000.0}, {"workers": 2, "deliveries_per_s": 190_000.0},
            {"workers": 4, "deliveries_per_s": 300_000.0}, {"workers": 8, "error": "x"}]
    efficiency(rows)
    assert rows[0]["efficiency"] == 1.0 and rows[0]["meets_target"]
    assert rows[1]["speedup"] == 1.9 and rows[1]["efficiency"] == 0.95 and rows[1]["meets_target"]
    assert rows[2]["efficiency"] == 0.75 and not rows[2]["meets_target"]
    assert "efficiency" not in rows[3]


def test_efficiency_from_a_first_step_above_one() -> None:
    rows = [{"workers": 2, "deliveries_per_s": 200.0}, {"workers": 8, "deliveries_per_s": 640.0}]
    efficiency(rows)
    assert rows[1]["efficiency"] == 0.8 and rows[1]["meets_target"]


def test_table_marks_misses_and_oversubscription() -> None:
    rows = [{"workers": 1, "channels": 16, "subscribers": 1600, "client_processes": 2, "deliveries_per_s": 100.0,
             "p99_ms": 1.0, "lost": 0, "server_cpu_pct": 99.0, "client_cpu_pct": 50.0, "oversubscribed": False},
            {"workers": 2, "channels": 32, "subscribers": 3200, "client_processes": 3, "deliveries_per_s": 120.0,
             "p99_ms": 2.0, "lost": 0, "server_cpu_pct": 180.0, "client_cpu_pct": 90.0, "oversubscribed": True}]
    efficiency(rows)
    text = table(rows, 2)
    assert "0.60 (< 0.80)" in text and "16 x 100" in text
    assert "exceed the 2 CPUs" in text
