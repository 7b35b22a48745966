"""``shardgate bench scaling``: the same rooms load against 1, 2, 4, 8 ... workers, one gateway
per step, and deliveries/s per step against linear scaling from the first step.

Each step starts shardgate with N workers (each pins itself to CPU ``slot``), sizes the load
with N (channels and client processes per worker), pins the client processes to the CPUs the
workers do not use when there are enough, and runs the rooms scenario at max rate: M channels
of K subscribers each, subscribers wherever SO_REUSEPORT puts them, so that (N-1)/N of the
deliveries cross the bus as on a real deployment. Efficiency is

    (deliveries/s at N / deliveries/s at the first step) / (N / first N)

and the target is >= 0.80. On a machine with fewer cores than workers + clients the figures
measure contention, and the table says so.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from typing import Any

from gateway import native
from tools.bench import servers

TARGET_EFFICIENCY = 0.80


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", default="1,2,4,8", help="worker counts, in order (default 1,2,4,8)")
    p.add_argument("--channels-per-worker", type=int, default=16, metavar="M",
                   help="channels per worker (default 16)")
    p.add_argument("--subscribers", type=int, default=100, metavar="K", help="subscribers per channel (default 100)")
    p.add_argument("--clients-per-worker", type=float, default=1.0, metavar="C",
                   help="subscriber client processes per worker (default 1; at least 1 in all)")
    p.add_argument("--publishers", type=int, default=0,
                   help="publisher connections (default: 4 per worker, at most one per channel)")
    p.add_argument("--window", type=int, default=64, help="publications in flight per publisher (max rate)")
    p.add_argument("--no-pin", action="store_true", help="do not pin client processes to the free CPUs")


def parse_steps(text: str) -> list[int]:
    steps = [int(x) for x in text.split(",") if x.strip()]
    if not steps or any(n < 1 for n in steps):
        raise ValueError("--steps: worker counts >= 1, comma-separated")
    return steps


def client_cpus(workers: int, cpus: list[int]) -> list[int]:
    """The CPUs the workers leave free (workers pin to the first ``workers`` of ``cpus``)."""
    return cpus[workers:] if len(cpus) > workers else []


def efficiency(rows: list[dict[str, Any]]) -> None:
    """Speed-up and efficiency of each row against the first one that has a rate."""
    base = next((r for r in rows if r.get("deliveries_per_s")), None)
    for row in rows:
        rate = row.get("deliveries_per_s")
        if base is None or not rate:
            continue
        speedup = rate / base["deliveries_per_s"]
        row["speedup"] = round(speedup, 3)
        row["efficiency"] = round(speedup / (row["workers"] / base["workers"]), 3)
        row["meets_target"] = row["efficiency"] >= TARGET_EFFICIENCY


def _step_args(args: argparse.Namespace, workers: int) -> argparse.Namespace:
    a = argparse.Namespace(**vars(args))
    a.scenario = "rooms"
    a.plot = None
    a.rate = 0.0
    a.channels = max(1, args.channels_per_worker * workers)
    a.clients = max(1, round(args.clients_per_worker * workers))
    a.publishers = args.publishers or min(a.channels, 4 * workers)
    return a


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from tools.bench.cli import run_scenario
    try:
        steps = parse_steps(args.steps)
    except ValueError as exc:
        parser.error(str(exc))
    secret = args.token_secret or secrets.token_hex(16)
    args.token_secret = secret
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    rows: list[dict[str, Any]] = []
    for workers in steps:
        a = _step_args(args, workers)
        free = [] if args.no_pin else client_cpus(workers, cpus)
        row: dict[str, Any] = {"workers": workers, "channels": a.channels, "subscribers": a.channels * a.subscribers,
                               "client_processes": a.clients + 1, "client_cpus": free,
                               "oversubscribed": workers + a.clients + 1 > len(cpus)}
        rows.append(row)
        a.client_cpus = free
        try:
            server = servers.start_shardgate(secret, workers)
        except (RuntimeError, OSError) as exc:
            row["error"] = f"could not start shardgate: {exc}"
            print(f"scaling: {row['error']}", file=sys.stderr)
            continue
        try:
            r = run_scenario(a, server.url, "centrifugo", server.pids, workers, label=f"{workers} workers ")
        except RuntimeError as exc:
            row["error"] = str(exc)
            print(f"scaling: {workers} workers failed: {exc}", file=sys.stderr)
            continue
        finally:
            server.stop()
        row.update({k: r.get(k) for k in ("deliveries_per_s", "publications_per_s", "lost", "errors",
                                          "disconnects", "server_cpu_pct", "client_cpu_pct", "loadavg")})
        row["p99_ms"] = r["latency_ms"].get("p99")
        row["p99_cross_worker_ms"] = r.get("latency_cross_worker_ms", {}).get("p99")
    efficiency(rows)
    if args.json:
        print(json.dumps({"command": "shardgate bench " + " ".join(args.argv), "cpus": len(cpus),
                          "build": native.summary(), "target_efficiency": TARGET_EFFICIENCY, "results": rows},
                         indent=2))
    else:
        print(table(rows, len(cpus)))
    failed = [r for r in rows if "error" in r]
    return 1 if failed else 0


def table(rows: list[dict[str, Any]], cpus: int) -> str:
    head = ["workers", "channels x subs", "clients", "deliveries/s", "speed-up", "efficiency", "p99 ms",
            "lost", "cpu server/client"]
    lines = [head]
    for r in rows:
        if "error" in r:
            lines.append([str(r["workers"]), "", "", "error: " + r["error"][:60], "", "", "", "", ""])
            continue
        eff = r.get("efficiency")
        lines.append([
            str(r["workers"]), f"{r['channels']} x {r['subscribers'] // max(1, r['channels'])}",
            str(r["client_processes"]), f"{r['deliveries_per_s']:,.0f}",
            f"{r.get('speedup', 0):.2f}x", (f"{eff:.2f}" + ("" if r.get("meets_target") else " (< 0.80)"))
            if eff is not None else "",
            f"{r['p99_ms']:.1f}" if r.get("p99_ms") is not None else "", f"{r['lost']:,}",
            f"{r['server_cpu_pct']:.0f}%/{r['client_cpu_pct']:.0f}%" if r.get("server_cpu_pct") is not None else "",
        ])
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = ["shardgate bench scaling: rooms at max rate, the load sized per worker; efficiency = speed-up / "
           f"(workers / first workers), target >= {TARGET_EFFICIENCY:.2f}; {cpus} CPUs"]
    for i, line in enumerate(lines):
        out.append("  " + "  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(line, widths,
                                                                                                   strict=True))))
        if i == 0:
            out.append("  " + "  ".join("-" * w for w in widths))
    over = [r["workers"] for r in rows if r.get("oversubscribed")]
    if over:
        out.append(f"  note: with {over} workers, workers + client processes exceed the {cpus} CPUs: those steps "
                   "measure contention, not scaling (run on a machine with more cores)")
    return "\n".join(out)
