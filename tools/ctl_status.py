"""Per-worker rows from ``info`` samples, and plain-text tables that fit a terminal.

``info`` reports cumulative counters per worker; rates come from two samples (matched by
slot, and only while the pid is the same: a restarted worker starts its counters at zero).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Column", "Sample", "STATUS_COLUMNS", "fit_columns", "format_table", "human_bytes",
           "human_duration", "status_rows", "status_table_lines", "take_sample"]


@dataclass(frozen=True)
class Sample:
    at: float  # time.monotonic() when the answer arrived
    nodes: list[dict[str, Any]]


def take_sample(api: Any) -> Sample:
    nodes = api.call("info").get("nodes", [])
    if not isinstance(nodes, list):
        nodes = []
    return Sample(time.monotonic(), sorted(nodes, key=lambda n: int(n.get("slot", 0))))


def _item(node: dict[str, Any], key: str) -> float | None:
    value = (node.get("metrics") or {}).get("items", {}).get(key)
    return float(value) if isinstance(value, int | float) else None


def _rate(now: dict[str, Any], before: dict[str, Any] | None, key: str, dt: float) -> float | None:
    if before is None or dt <= 0:
        return None
    a, b = _item(before, key), _item(now, key)
    if a is None or b is None or b < a:
        return None
    return (b - a) / dt


def status_rows(current: Sample, previous: Sample | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One dict per worker plus a totals dict; rates are None without a usable previous sample."""
    dt = current.at - previous.at if previous else 0.0
    before = {}
    if previous:
        before = {(n.get("slot"), n.get("pid")): n for n in previous.nodes}
    rows = []
    for node in current.nodes:
        prev = before.get((node.get("slot"), node.get("pid")))
        cpu_rate = _rate(node, prev, "cpu_seconds", dt)
        process = node.get("process") or {}
        rows.append({
            "slot": node.get("slot"),
            "pid": node.get("pid"),
            "name": node.get("name"),
            "uptime": node.get("uptime", 0),
            "connections": node.get("num_clients", 0),
            "users": node.get("num_users", 0),
            "subscriptions": node.get("num_subs", 0),
            "channels": node.get("num_channels", 0),
            "owned_channels": int(_item(node, "num_owned_channels") or 0),
            "msgs_in_per_s": _rate(node, prev, "messages_received", dt),
            "msgs_out_per_s": _rate(node, prev, "messages_sent", dt),
            "bytes_in_per_s": _rate(node, prev, "bytes_received", dt),
            "bytes_out_per_s": _rate(node, prev, "bytes_sent", dt),
            # CPU from the cpu_seconds delta over our own interval; the node's own figure otherwise.
            "cpu_percent": cpu_rate * 100 if cpu_rate is not None else process.get("cpu"),
            "rss": process.get("rss", 0),
        })
    totals: dict[str, Any] = {"workers": len(rows)}
    for key in ("connections", "users", "subscriptions", "channels", "owned_channels", "rss"):
        totals[key] = sum(int(r[key] or 0) for r in rows)
    for key in ("msgs_in_per_s", "msgs_out_per_s", "bytes_in_per_s", "bytes_out_per_s", "cpu_percent"):
        values = [r[key] for r in rows if r[key] is not None]
        totals[key] = sum(values) if values and len(values) == len(rows) else None
    totals["uptime"] = max((int(r["uptime"] or 0) for r in rows), default=0)
    return rows, totals


def human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "K", "M", "G", "T"):
        if abs(value) < 1024 or unit == "T":
            return f"{value:.0f}{unit}" if unit == "B" or value >= 100 else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}T"  # pragma: no cover


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{s:02d}s"
    return f"{s}s"


def _rate_text(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _cpu_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


@dataclass(frozen=True)
class Column:
    title: str
    key: str
    width: int  # minimum width; grows with the content
    priority: int  # lower is kept longer when the terminal is narrow
    align: str = ">"

    def text(self, row: dict[str, Any]) -> str:
        value = row.get(self.key)
        if row.get("_total"):
            if self.key == "slot":
                return "total"
            if self.key not in row:
                return ""
        if self.key == "uptime":
            return human_duration(value)
        if self.key == "rss":
            return human_bytes(value)
        if self.key.endswith("_per_s"):
            return _rate_text(value)
        if self.key == "cpu_percent":
            return _cpu_text(value)
        return "-" if value is None else str(value)


STATUS_COLUMNS = [  # single-space separated; the widths leave room between right-aligned titles
    Column("SLOT", "slot", 5, 0, "<"),
    Column("PID", "pid", 7, 4),
    Column("UPTIME", "uptime", 7, 6),
    Column("CONNS", "connections", 7, 1),
    Column("SUBS", "subscriptions", 7, 5),
    Column("CHANS", "channels", 6, 7),
    Column("MSG/S IN", "msgs_in_per_s", 9, 2),
    Column("MSG/S OUT", "msgs_out_per_s", 10, 2),
    Column("CPU%", "cpu_percent", 6, 3),
    Column("RSS", "rss", 6, 3),
]


def fit_columns(columns: Sequence[Column], rows: Sequence[dict[str, Any]], width: int | None,
                sep: int = 2) -> list[tuple[Column, int]]:
    """Columns with their widths; drop the least important ones until the table fits ``width``."""
    sized = [(c, max([c.width, len(c.title), *(len(c.text(r)) for r in rows)])) for c in columns]
    if width is None:
        return sized
    while len(sized) > 1 and sum(w for _, w in sized) + sep * (len(sized) - 1) > width:
        worst = max(sized, key=lambda cw: (cw[0].priority, columns.index(cw[0])))
        sized.remove(worst)
    return sized


def format_table(columns: Sequence[Column], rows: Sequence[dict[str, Any]], width: int | None = None,
                 totals: dict[str, Any] | None = None, sep: int = 2) -> list[str]:
    all_rows = [*rows, *([{**totals, "_total": True}] if totals is not None else [])]
    sized = fit_columns(columns, all_rows, width, sep)
    pad = " " * sep

    def line(cells: list[str]) -> str:
        out = pad.join(f"{text:{c.align}{w}}" for (c, w), text in zip(sized, cells, strict=True)).rstrip()
        return out[:width] if width is not None else out

    lines = [line([c.title for c, _ in sized])]
    lines += [line([c.text(r) for c, _ in sized]) for r in rows]
    if totals is not None:
        lines.append(line(["-" * w for _, w in sized]))
        lines.append(line([c.text(all_rows[-1]) for c, _ in sized]))
    return lines


def status_table_lines(rows: list[dict[str, Any]], totals: dict[str, Any], width: int | None = None) -> list[str]:
    return format_table(STATUS_COLUMNS, rows, width, totals, sep=1)
