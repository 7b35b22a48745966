"""The Grafana dashboard only queries metrics the gateway exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from gateway.obs.metrics import render

DASHBOARD = Path(__file__).resolve().parents[2] / "tools" / "grafana" / "shardgate-dashboard.json"


def _exported_names() -> set[str]:
    from gateway.obs.stats import Stats

    report = {"num_clients": 1, "num_users": 1, "num_subs": 1, "num_channels": 1, "num_owned_channels": 1,
              "num_owned_streams": 1,
              "pending_requests": 0, "uptime": 1, "process": {"rss": 1, "cpu": 0.0, "cpu_seconds": 1.0}}
    stats = Stats()
    stats.sent("publication", 10)
    stats.messages_in["publish"] = 1
    stats.bytes_in += 10
    stats.reply_error("publish", 103)
    stats.disconnected(3501)
    stats.subscribed(True, True)
    stats.command_done("publish", 0.001)
    stats.api_done("publish", 0.001)
    stats.api_error("publish", 102)
    report["stats"] = stats.snapshot()
    text = render([(0, report), (1, None)]).decode()
    names = set()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            names.add(sample.name)
    return names


def test_every_dashboard_metric_is_exported() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exported = _exported_names()
    used = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            used |= set(re.findall(r"\b(shardgate_[a-z_]+)", target["expr"]))
    assert used, "dashboard has no queries"
    missing = used - exported
    assert not missing, f"dashboard queries metrics that are not exported: {sorted(missing)}"


def test_metric_names_follow_prometheus_conventions() -> None:
    for name in _exported_names():
        assert name.startswith("shardgate_")
        assert re.fullmatch(r"[a-z_]+", name), name
        if name.endswith("_total"):
            assert not name.endswith("_seconds_total") or "cpu" in name
