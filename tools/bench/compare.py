"""``shardgate bench compare``: start shardgate, then each peer, one after another; run the same
fan-out job and echo job with the same client processes and payloads against each; print
deliveries/s, p99 and the ratio shardgate/peer.

Target ``shardgate-socketio`` is shardgate's Socket.IO endpoint driven by the same client
dialect as the node socket.io peer (room ``fan``, events ``p``/``m``/``a``/``e``): the
``socketio`` row's ratio is then shardgate-socketio/node socket.io, and every fan-out result
gets ``server_cpu_us_per_delivery``."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import sys
from typing import Any

from gateway import native
from tools.bench import servers

JOBS = ("fanout", "echo")
SIO_TARGET = "shardgate-socketio"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--targets", default=f"shardgate,{SIO_TARGET}," + ",".join(servers.PEER_ORDER),
                   help=f"comma-separated: shardgate,{SIO_TARGET}," + ",".join(servers.PEER_ORDER)
                   + " (default: all)")
    p.add_argument("--jobs", default="fanout,echo", help="fanout,echo (default both)")
    p.add_argument("--workers", type=int, default=1, help="shardgate workers (default 1; peers run 1 process)")
    p.add_argument("--subscribers", type=int, default=1000, metavar="K", help="fan-out subscribers (default 1000)")
    p.add_argument("--rate", type=float, default=0.0, metavar="R", help="fan-out publications/s (0 = max rate)")
    p.add_argument("--window", type=int, default=64, help="max-rate fan-out: publications in flight")
    p.add_argument("--connections", type=int, default=100, metavar="C", help="echo connections (default 100)")
    p.add_argument("--rpc-rate", type=float, default=0.0, help="echo calls/s in total (0 = max rate)")
    p.add_argument("--inflight", type=int, default=1, help="max-rate echo: calls in flight per connection")


def _job_args(args: argparse.Namespace, job: str) -> argparse.Namespace:
    a = argparse.Namespace(**vars(args))
    a.plot = None
    if job == "fanout":
        a.scenario = "fanout"
        a.channel, a.channel_owner, a.publisher_slot, a.subscriber_slot = "bench-fanout", None, None, None
    else:
        a.scenario = "rpc"
        a.rate = args.rpc_rate
    return a


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from tools.bench.cli import public, run_scenario
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    jobs = [j.strip() for j in args.jobs.split(",") if j.strip()]
    for t in targets:
        if t not in ("shardgate", SIO_TARGET) and t not in servers.PEER_ORDER:
            parser.error(f"unknown target {t!r}")
    for j in jobs:
        if j not in JOBS:
            parser.error(f"unknown job {j!r} (fanout, echo)")
    secret = args.token_secret or secrets.token_hex(16)
    args.token_secret = secret
    rows: list[dict[str, Any]] = []
    plots: list[tuple[str, dict[str, Any]]] = []
    for target in targets:
        row: dict[str, Any] = {"target": target}
        rows.append(row)
        try:
            if target == "shardgate":
                server = servers.start_shardgate(secret, args.workers)
                proto, note = "centrifugo", f"{args.workers} worker(s), JSON protocol, {native.summary()}"
            elif target == SIO_TARGET:
                server = servers.start_shardgate(secret, args.workers,
                                                 servers.shardgate_socketio_config(secret, args.workers))
                proto, note = "socketio", (f"{args.workers} worker(s), {native.summary()}, Socket.IO over "
                                           "WebSocket, the node socket.io peer's events (tools/bench/sio_events.py)")
            else:
                server = servers.start_peer(target)
                proto, note = servers.peer_proto(target), servers.peer_note(target)
        except (RuntimeError, OSError) as exc:
            row["skipped"] = str(exc)
            print(f"compare: skipping {target}: {exc}", file=sys.stderr)
            continue
        row["note"] = note
        try:
            pids = server.pids
            workers = args.workers if target in ("shardgate", SIO_TARGET) else 0
            url = server.url
            for job in jobs:
                a = _job_args(args, job)
                if target == SIO_TARGET:
                    from tools.bench.sio_events import SUBSCRIBE
                    a.sio_join = SUBSCRIBE
                    url = server.url.split("/connection/")[0] + "/"
                try:
                    r = run_scenario(a, url, proto, pids, workers, label=f"{target} {job} ")
                except RuntimeError as exc:
                    row[job] = {"error": str(exc)}
                    print(f"compare: {target} {job} failed: {exc}", file=sys.stderr)
                    continue
                row[job] = r
                if job == "fanout":
                    plots.append((target, r))
        finally:
            server.stop()
    _ratios(rows, jobs)
    if args.plot:
        from tools.bench.cli import plot
        plot(plots, args.plot)
    if args.json:
        out = {"command": "shardgate bench compare " + " ".join(args.argv),
               "params": {"workers": args.workers, "subscribers": args.subscribers, "connections": args.connections,
                          "payload": args.payload, "duration": args.duration, "clients": args.clients,
                          "rate": args.rate, "rpc_rate": args.rpc_rate, "window": args.window,
                          "inflight": args.inflight},
               "results": [{k: (public(v) if isinstance(v, dict) and "scenario" in v else v)
                            for k, v in row.items()} for row in rows]}
        print(json.dumps(out, indent=2))
    else:
        print(table(rows, jobs, args))
    return 0 if any(isinstance(r.get(j), dict) and "scenario" in r[j] for r in rows for j in jobs) else 1


#: Each job's rate in its result, and the unit that rate counts.
_RATE = {"fanout": "deliveries_per_s", "echo": "rpc_per_s"}
_UNIT = {"fanout": "delivery", "echo": "round trip"}
#: (job, whose CPU, result key) of the CPU-per-unit figures.
_CPU_PER_UNIT = (("fanout", "server", "server_cpu_us_per_delivery"),
                 ("echo", "server", "server_cpu_us_per_round_trip"),
                 ("echo", "client", "client_cpu_us_per_round_trip"))
_SERVER_CPU_PER_UNIT = {job: key for job, who, key in _CPU_PER_UNIT if who == "server"}


def _ratios(rows: list[dict[str, Any]], jobs: list[str]) -> None:
    """shardgate/peer per job (for the node socket.io peer: shardgate's Socket.IO endpoint when it
    ran), and the server CPU per fan-out delivery and per echo round trip (the comparison that
    holds with ``--rate``/``--rpc-rate``, where every server runs at the same rate).

    A peer is compared with the shardgate run closest before it (the first one when the peer ran
    first): with alternated targets (``shardgate,node-ws,shardgate,node-ws``) each ratio pairs
    runs minutes apart, not the whole session, on a box whose speed drifts."""
    # CPU microseconds per unit: the comparison that holds at a fixed rate. The client's share
    # too for echo: on a machine where the clients and the server share the cores, a dialect that
    # is cheaper for the client leaves the server more CPU in closed loop.
    for row in rows:
        for job, who, key in _CPU_PER_UNIT:
            r = row.get(job)
            if isinstance(r, dict) and r.get(f"{who}_cpu_pct") and r.get(_RATE[job]):
                r[key] = round(r[f"{who}_cpu_pct"] * 1e4 / r[_RATE[job]], 3)
    base = next((r for r in rows if r["target"] == "shardgate"), None)
    sio = next((r for r in rows if r["target"] == SIO_TARGET), None)
    for row in rows:
        if "skipped" not in row:
            if row["target"] == "shardgate":
                base = row
            elif row["target"] == SIO_TARGET:
                sio = row
        if row["target"] == SIO_TARGET:
            continue
        ref = sio if row["target"] == "socketio" and sio is not None else base
        for job in jobs:
            key = _RATE[job]
            mine = ref.get(job) if ref else None
            theirs = row.get(job)
            if (isinstance(mine, dict) and key in mine and isinstance(theirs, dict) and key in theirs
                    and theirs[key]):
                row[f"{job}_ratio"] = round(mine[key] / theirs[key], 2)
                # The peer's server CPU per unit over shardgate's (above 1: shardgate is cheaper):
                # what the pair says about the servers alone, whatever the shared client did.
                cpu = _SERVER_CPU_PER_UNIT[job]
                if mine.get(cpu) and theirs.get(cpu):
                    row[f"{job}_cpu_ratio"] = round(theirs[cpu] / mine[cpu], 2)


def paired_summary(rows: list[dict[str, Any]], jobs: list[str]) -> list[str]:
    """Lines for each peer and job that ran more than once: the median and range of its ratios,
    in throughput and in server CPU per unit."""
    out = []
    for job in jobs:
        for field, what in ((f"{job}_ratio", f"{job} shardgate/{{peer}}"),
                            (f"{job}_cpu_ratio", f"{job} server CPU per {_UNIT[job]}, {{peer}}/shardgate")):
            by_peer: dict[str, list[float]] = {}
            for row in rows:
                if row["target"] not in ("shardgate", SIO_TARGET) and field in row:
                    by_peer.setdefault(row["target"], []).append(row[field])
            for peer, ratios in by_peer.items():
                if len(ratios) > 1:
                    out.append(f"{what.format(peer=peer)} over {len(ratios)} pairs: median "
                               f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})")
    return out


def table(rows: list[dict[str, Any]], jobs: list[str], args: argparse.Namespace) -> str:
    head = ["target"]
    for job in jobs:  # columns in the order the jobs ran, like the cells below
        head += [("fanout deliveries/s" if job == "fanout" else "echo round trips/s"), "p99 ms", "shardgate/peer",
                 "cpu client/server"]
    lines = [head]
    notes = []
    for row in rows:
        line = [row["target"]]
        if "skipped" in row:
            notes.append(f"{row['target']}: skipped ({row['skipped']})")
            line += ["skipped"] + [""] * (len(head) - 2)
            lines.append(line)
            continue
        for job in jobs:
            r = row.get(job)
            key = _RATE[job]
            if not isinstance(r, dict) or key not in r:
                line += ["failed", "", "", ""]
                if isinstance(r, dict) and r.get("error"):
                    notes.append(f"{row['target']} {job}: {r['error']}")
                continue
            lat = r["latency_ms"]
            sc = r["server_cpu_pct"]
            bad = ""
            if r.get("lost") or r.get("disconnects"):
                bad = f" (lost {r.get('lost', 0)}, disconnects {r.get('disconnects', 0)})"
            line += [f"{r[key]:,.0f}{bad}", f"{lat['p99']:.2f}" if lat.get("count") else "-",
                     (f"{row[job + '_ratio']:.2f}" if job + "_ratio" in row else "-"),
                     f"{r['client_cpu_pct']:.0f}%/{sc:.0f}%" if sc is not None else f"{r['client_cpu_pct']:.0f}%/-"]
        lines.append(line)
        loads = [r["loadavg"] for j in jobs if isinstance(r := row.get(j), dict) and "loadavg" in r]
        if loads and max(max(x) for x in loads) > (os.cpu_count() or 1):
            notes.append(f"{row['target']}: load average up to {max(max(x) for x in loads):.1f} during its "
                         "runs (other processes on the box); treat as pessimistic")
        if row.get("note"):
            notes.append(f"{row['target']}: {row['note']}")
        if row["target"] == "socketio" and any(r["target"] == SIO_TARGET for r in rows):
            notes.append(f"socketio: shardgate/peer compares {SIO_TARGET} with it (the same Socket.IO dialect)")
    notes += paired_summary(rows, jobs)
    # Listed per row, not by target: a target may be run more than once (alternated runs).
    for job, who, key in _CPU_PER_UNIT:
        per_run = [(r["target"], r[job][key]) for r in rows if isinstance(r.get(job), dict) and key in r[job]]
        if per_run:
            unit = ("fan-out " if job == "fanout" else "echo ") + _UNIT[job]
            notes.append(f"{who} CPU per {unit}: " + ", ".join(f"{t} {v:.2f} us" for t, v in per_run))
    widths = [max(len(str(ln[i])) for ln in lines) for i in range(len(head))]
    out = [f"shardgate bench compare: fanout {args.subscribers} subscribers, echo {args.connections} connections, "
           f"payload {args.payload} B, {args.duration:g} s per job, {args.clients} client processes, "
           + ("max rate" if not args.rate else f"{args.rate:g} publications/s")]
    for i, ln in enumerate(lines):
        out.append("  " + "  ".join(str(c).rjust(w) if j else str(c).ljust(w)
                                    for j, (c, w) in enumerate(zip(ln, widths, strict=True))))
        if i == 0:
            out.append("  " + "  ".join("-" * w for w in widths))
    out += ["  " + n for n in notes]
    return "\n".join(out)
