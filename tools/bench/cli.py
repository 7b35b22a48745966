"""``shardgate bench``: scenarios connect / fanout / rooms / rpc against a running server, ``compare``
(shardgate and the peers one after another, same clients, same payloads) and ``redis`` (the Redis
engine with two nodes beside the memory engine, see ``redis_bench.py``).

Entry point: :func:`main` (``argv`` = everything after ``bench``); also ``python -m tools.bench``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from tools.bench.client import Job, Plan

SCENARIOS = ("connect", "fanout", "rooms", "rpc")  # against a running server; compare/redis start their own

EPILOG = """\
examples (a gateway on 127.0.0.1:8000; SECRET = client.token.hmac_secret_key):
  shardgate bench fanout  --url ws://127.0.0.1:8000/connection/websocket --token-secret SECRET \\
                          --subscribers 1000 --duration 10
  shardgate bench fanout  ... --subscribers 1000 --rate 100 --publisher-slot 1 --subscriber-slot 0
  shardgate bench rooms   ... --channels 64 --subscribers 20 --rate 2000
  shardgate bench rpc     ... --connections 100 --inflight 1
  shardgate bench connect ... --connections 10000 --rate 2000 --clients 2
  shardgate bench compare --token-secret x --subscribers 1000 --duration 5 --json
  shardgate bench redis   --subscribers 100 --rate 10000 --duration 5 --workers 2
  shardgate bench scaling --steps 1,2,4,8 --duration 10 --json

--rate 0 (the default for fanout and rpc) is max-rate mode: fan-out keeps at most --window
publications in flight end to end (published but not yet received by every subscriber), rpc keeps
--inflight calls per connection. --rate R > 0 is open loop: messages are sent on a fixed schedule and
stamped with their *intended* send time, so a stall shows up as latency.
Loads only loopback targets (127.0.0.0/8, ::1) unless --allow-remote is given.
"""


def _common(p: argparse.ArgumentParser, *, url: bool = True) -> None:
    if url:
        p.add_argument("--url", required=True, help="WebSocket URL of the server under test")
        p.add_argument("--proto", choices=("centrifugo", "raw", "socketio"), default="centrifugo",
                       help="wire dialect: shardgate/Centrifugo JSON (default), or a peer's (peers/README.md)")
        p.add_argument("--server-pids", default="",
                       help="comma-separated pids of the server (default: pids listening on the URL's port)")
        p.add_argument("--server-workers", type=int, default=0,
                       help="worker count of the target, for slot placement (default: number of server pids)")
    p.add_argument("--token-secret", default=os.environ.get("SHARDGATE_TOKEN_SECRET", ""),
                   help="HMAC secret to mint connection JWTs (default: $SHARDGATE_TOKEN_SECRET)")
    p.add_argument("--clients", type=int, default=2, metavar="N", help="client processes (default 2)")
    p.add_argument("--duration", type=float, default=5.0, metavar="S", help="run seconds (default 5)")
    p.add_argument("--payload", type=int, default=64, metavar="BYTES", help="JSON data size (default 64)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    p.add_argument("--plot", metavar="FILE.png", help="latency distribution + throughput over time (matplotlib)")
    p.add_argument("--allow-remote", action="store_true", help="allow a non-loopback target")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.add_argument("--tick", type=float, default=0.5, help="progress interval, seconds (default 0.5)")
    p.add_argument("--drain", type=float, default=3.0, help="max seconds to wait for in-flight messages")
    p.add_argument("--setup-timeout", type=float, default=60.0, help="max seconds to open the connections")
    p.add_argument("--source-ips", type=int, default=0, metavar="N",
                   help="spread client sockets over 127.0.0.1..N (default: 1 per 25k connections)")
    p.add_argument("--deflate", action="store_true",
                   help="clients offer permessage-deflate (a shardgate target needs websocket.compression = true)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shardgate bench", description="Load generator and peer comparison.",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="scenario", required=True)

    p = sub.add_parser("fanout", help="1 publisher, K subscribers in one channel")
    _common(p)
    p.add_argument("--subscribers", type=int, default=100, metavar="K")
    p.add_argument("--rate", type=float, default=0.0, metavar="R", help="publications/s (0 = max rate)")
    p.add_argument("--window", type=int, default=64, help="max-rate: publications in flight (default 64)")
    p.add_argument("--channel", default="", help="channel name (default: bench-fanout, or one owned by "
                   "--channel-owner)")
    p.add_argument("--channel-owner", type=int, default=None, metavar="SLOT")
    p.add_argument("--publisher-slot", type=int, default=None, metavar="SLOT",
                   help="reconnect the publisher until it lands on this worker slot")
    p.add_argument("--subscriber-slot", type=int, default=None, metavar="SLOT",
                   help="reconnect each subscriber until it lands on this worker slot")

    p = sub.add_parser("rooms", help="M channels x K subscribers, publishers at a fixed total rate")
    _common(p)
    p.add_argument("--channels", type=int, default=16, metavar="M")
    p.add_argument("--subscribers", type=int, default=10, metavar="K", help="subscribers per channel")
    p.add_argument("--publishers", type=int, default=0, help="publisher connections (default min(M, 4))")
    p.add_argument("--rate", type=float, default=1000.0, metavar="R", help="publications/s in total (default "
                   "1000; 0 = max rate)")
    p.add_argument("--window", type=int, default=64)

    p = sub.add_parser("rpc", help="round trips through the rpc command (echo)")
    _common(p)
    p.add_argument("--connections", "--subscribers", dest="connections", type=int, default=100, metavar="C")
    p.add_argument("--rate", type=float, default=0.0, metavar="R", help="calls/s in total (0 = max rate)")
    p.add_argument("--inflight", type=int, default=1, help="max-rate: calls in flight per connection")

    p = sub.add_parser("connect", help="open K connections at rate R; conn/s, failures, server RSS/conn")
    _common(p)
    p.add_argument("--connections", "--subscribers", dest="connections", type=int, default=1000, metavar="K")
    p.add_argument("--rate", type=float, default=0.0, metavar="R", help="connections/s in total (0 = max)")
    p.add_argument("--concurrency", type=int, default=200, help="handshakes in flight per process")
    p.add_argument("--hold", type=float, default=1.0, help="seconds to hold the connections before reading RSS")
    p.add_argument("--channels", type=int, default=0, metavar="M",
                   help="each connection also subscribes, to one of M channels (connection i to i %% M; "
                        "0 = connect only); M = K gives every client its own channel")

    p = sub.add_parser("compare", help="shardgate and each peer, one after another, same clients")
    _common(p, url=False)
    from tools.bench import compare
    compare.add_arguments(p)

    p = sub.add_parser("scaling", help="rooms at max rate against 1, 2, 4, 8 workers; efficiency against linear "
                       "(starts each gateway itself)")
    _common(p, url=False)
    from tools.bench import scaling
    scaling.add_arguments(p)

    p = sub.add_parser("redis", help="Redis engine, 2 nodes on one Redis, beside the memory engine (starts "
                       "redis-server and the nodes itself)")
    _common(p, url=False)
    from tools.bench import redis_bench
    redis_bench.add_arguments(p)
    return parser


def _pids(arg: str, url: str) -> list[int]:
    from tools.bench.servers import pids_listening_on
    if arg:
        return [int(x) for x in arg.split(",") if x.strip()]
    return pids_listening_on(url)


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def channel_owned_by(slot: int | None, workers: int, prefix: str) -> str:
    if slot is None or workers <= 1:
        return prefix
    from sharding.hashing import owner
    for i in range(100_000):
        name = f"{prefix}-{i}"
        if owner(name, workers) == slot:
            return name
    raise ValueError(f"no channel name owned by slot {slot}")


def balanced_channels(m: int, workers: int, prefix: str = "bench-room") -> list[str]:
    """M channel names spread evenly over the workers' slots (owner = jump hash of FNV-1a)."""
    if workers <= 1:
        return [f"{prefix}-{i}" for i in range(m)]
    from sharding.hashing import owner
    want = _split(m, workers)
    got: list[str] = []
    i = 0
    while len(got) < m and i < 1_000_000:
        name = f"{prefix}-{i}"
        slot = owner(name, workers)
        if want[slot] > 0:
            want[slot] -= 1
            got.append(name)
        i += 1
    return got


def build(args: argparse.Namespace, url: str, proto: str, workers: int) -> tuple[Job, list[Plan]]:
    """Job + one plan per client process (plus a publisher process for fanout/rooms)."""
    n = max(1, args.clients)
    scenario = args.scenario
    count = {"fanout": args.__dict__.get("subscribers", 0),
             "rooms": args.__dict__.get("subscribers", 0) * args.__dict__.get("channels", 0),
             "rpc": args.__dict__.get("connections", 0),
             "connect": args.__dict__.get("connections", 0)}.get(scenario, 0)
    src = args.source_ips or max(1, -(-count // 25_000))
    job = Job(scenario=scenario, proto=proto, url=url, secret=args.token_secret, payload=args.payload,
              rate=args.rate, duration=args.duration, window=getattr(args, "window", 64),
              inflight=getattr(args, "inflight", 1), server_workers=workers, source_ips=src,
              connect_concurrency=getattr(args, "concurrency", 200), setup_timeout=args.setup_timeout,
              read_buffer=4096 if scenario == "connect" else 16 * 1024, deflate=getattr(args, "deflate", False),
              sio_join=getattr(args, "sio_join", None) or '421["s"]', client_cpus=getattr(args, "client_cpus", []))
    plans: list[Plan] = []
    if scenario == "fanout":
        channel = args.channel or channel_owned_by(args.channel_owner, workers, "bench-fanout")
        for i, k in enumerate(_split(args.subscribers, n)):
            plans.append(Plan(index=i, subs=[channel] * k, sub_slot=args.subscriber_slot))
        plans.append(Plan(index=n, pub_conns=1, pub_channels=[channel], pub_slot=args.publisher_slot,
                          expected_per_pub=args.subscribers))
    elif scenario == "rooms":
        chans = balanced_channels(args.channels, workers if proto == "centrifugo" else 1)
        subs = [c for c in chans for _ in range(args.subscribers)]
        for i in range(n):
            plans.append(Plan(index=i, subs=subs[i::n]))
        pubs = args.publishers or min(len(chans), 4)
        plans.append(Plan(index=n, pub_conns=pubs, pub_channels=chans, expected_per_pub=args.subscribers))
    elif scenario == "rpc":
        for i, c in enumerate(_split(args.connections, n)):
            plans.append(Plan(index=i, rpc_conns=c, rpc_rate=args.rate * c / max(1, args.connections)))
    elif scenario == "connect":
        channels = [f"bench-idle-{k}" for k in range(args.channels)]
        for i, c in enumerate(_split(args.connections, n)):
            plans.append(Plan(index=i, connect_conns=c, connect_rate=args.rate * c / max(1, args.connections),
                              connect_channels=channels[i::n] or channels))
    plans = [p for p in plans if p.subs or p.pub_conns or p.rpc_conns or p.connect_conns]
    for i, p in enumerate(plans):
        p.index = i
    return job, plans


def run_scenario(args: argparse.Namespace, url: str, proto: str, server_pids: list[int], workers: int = 0,
                 label: str = "") -> dict[str, Any]:
    from tools.bench import runner
    job, plans = build(args, url, proto, workers)
    result = runner.run(job, plans, server_pids, tick=args.tick, drain=args.drain,
                        hold=getattr(args, "hold", 1.0), progress=not args.quiet, label=label)
    result["command"] = "shardgate bench " + " ".join(getattr(args, "argv", []))
    return result


# ---------------------------------------------------------------------------------------------------
def _fmt_lat(lat: dict[str, Any]) -> str:
    if not lat.get("count"):
        return "no samples"
    return (f"p50 {lat['p50']:.2f}  p90 {lat['p90']:.2f}  p99 {lat['p99']:.2f}  p99.9 {lat['p99.9']:.2f}"
            f"  max {lat['max']:.2f}  (n={lat['count']:,})")


def summary_table(r: dict[str, Any]) -> str:
    rows: list[tuple[str, str]] = []
    mode = r["mode"] + (f" {r['rate_target']:g}/s" if r["mode"] == "fixed-rate" else "")
    rows.append(("target", f"{r['url']} ({r['proto']})"))
    rows.append(("run", f"{r['scenario']}, {mode}, {r['duration_s']:g} s, payload {r['payload_bytes']} B, "
                        f"{r['client_processes']} client processes"))
    sc = r["scenario"]
    if sc in ("fanout", "rooms"):
        rows.append(("subscribers", f"{r['subscribers']:,} (setup failures {r['setup_failed']})"))
        rows.append(("publications", f"{r['published']:,} ({r['publications_per_s']:,.0f}/s), acks {r['acks']:,}"))
        rows.append(("deliveries", f"{r['deliveries']:,} of {r['expected_deliveries']:,} expected, "
                                   f"lost {r['lost']:,}"))
        per = (f"   server CPU {r['server_cpu_pct'] * 1e4 / r['deliveries_per_s']:.2f} us per delivery"
               if r.get("server_cpu_pct") and r["deliveries_per_s"] else "")
        rows.append(("deliveries/s", f"{r['deliveries_per_s']:,.0f}{per}"))
    elif sc == "rpc":
        rows.append(("connections", f"{r['connections']:,} (setup failures {r['setup_failed']})"))
        rows.append(("calls", f"{r['calls']:,} sent, {r['replies']:,} answered, lost {r['lost']:,}"))
        per = (f"   server CPU {r['server_cpu_pct'] * 1e4 / r['rpc_per_s']:.2f} us per round trip"
               if r.get("server_cpu_pct") and r["rpc_per_s"] else "")
        rows.append(("round trips/s", f"{r['rpc_per_s']:,.0f}{per}"))
    elif sc == "connect":
        rows.append(("connections", f"{r['connections']:,} opened, {r['failed']:,} failed, in "
                                    f"{r['connect_span_s']:.2f} s"))
        rows.append(("conn/s", f"{r['conn_per_s']:,.0f}"))
        per = r.get("server_rss_per_conn_bytes")
        if per is not None:
            rows.append(("server RSS", f"{r['server_rss_before'] / 2**20:,.1f} MiB -> "
                                       f"{r['server_rss_after'] / 2**20:,.1f} MiB, {per / 1024:,.2f} KiB/conn"))
        else:
            rows.append(("server RSS", "n/a (server pids unknown)"))
    lat_name = {"connect": "connect latency ms", "rpc": "round trip ms"}.get(sc, "latency ms")
    rows.append((lat_name, _fmt_lat(r["latency_ms"])))
    if sc == "rooms":
        rows.append(("  same worker", _fmt_lat(r["latency_same_worker_ms"])))
        rows.append(("  cross worker", _fmt_lat(r["latency_cross_worker_ms"])))
    rows.append(("errors", f"{r['errors']} error replies, {r['disconnects']} disconnects"
                           + (f", close codes {r['close_codes']}" if r["close_codes"] else "")
                           + (f", error replies {r['error_codes']}" if r.get("error_codes") else "")))
    sc_cpu = r["server_cpu_pct"]
    rows.append(("cpu", f"client {r['client_cpu_pct']:.0f}%  server "
                        + (f"{sc_cpu:.0f}% (pids {','.join(map(str, r['server_pids']))})" if sc_cpu is not None
                           else "n/a (pass --server-pids)")
                        + "   (100% = one core)"))
    la, cores = r.get("loadavg", [0, 0]), r.get("cpu_count") or 1
    if max(la) > cores:
        rows.append(("note", f"load average {la[0]:.1f} -> {la[1]:.1f} on {cores} cores: other processes "
                             "competed for the CPUs; figures are pessimistic"))
    if r["client_cpu_pct"] >= 90 * r["client_processes"]:
        rows.append(("note", "client processes were saturated: this measures the client, add --clients"))
    if r.get("setup_errors"):
        rows.append(("setup errors", "; ".join(r["setup_errors"])))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def public(r: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in r.items() if not k.startswith("_")}


def plot(results: list[tuple[str, dict[str, Any]]], path: str) -> None:
    """Latency percentile distribution and throughput over time, one line per result."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - optional extra
        raise SystemExit("--plot needs matplotlib: pip install matplotlib") from exc
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    for name, r in results:
        h = r.get("_hist")
        if h is not None and h.get_total_count():
            xs, ys = [], []
            for p in [0, 50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99, 99.999]:
                xs.append(1 / (1 - p / 100) if p < 100 else 1e5)
                ys.append(h.get_value_at_percentile(p) / 1000)
            ax1.plot(xs, ys, marker=".", label=name)
        series = r.get("series", [])
        ax2.plot([s["t"] for s in series], [s["rate"] for s in series], label=name)
    ax1.set_xscale("log")
    ax1.set_xticks([1, 2, 10, 100, 1000, 10000, 100000])
    ax1.set_xticklabels(["0", "50", "90", "99", "99.9", "99.99", "99.999"])
    ax1.set_xlabel("percentile")
    ax1.set_ylabel("latency ms")
    ax1.set_title("latency distribution")
    ax1.grid(True, alpha=0.3)
    ax1.legend()
    ax2.set_xlabel("seconds")
    ax2.set_ylabel("per second")
    ax2.set_title("throughput over time")
    ax2.grid(True, alpha=0.3)
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv
    from tools.bench.servers import check_target
    if args.clients < 1 or args.duration <= 0 or args.duration > 3600:
        parser.error("--clients must be >= 1 and --duration in (0, 3600]")
    if args.scenario == "compare":
        from tools.bench import compare
        return compare.run(args, parser)
    if args.scenario == "redis":
        from tools.bench import redis_bench
        return redis_bench.run(args, parser)
    if args.scenario == "scaling":
        from tools.bench import scaling
        return scaling.run(args, parser)
    try:
        check_target(args.url, args.allow_remote)
    except ValueError as exc:
        parser.error(str(exc))
    if args.proto == "centrifugo" and not args.token_secret:
        parser.error("--token-secret is required (or $SHARDGATE_TOKEN_SECRET)")
    if args.proto != "centrifugo" and args.scenario == "rooms":
        parser.error("rooms needs --proto centrifugo (the peers serve one fan-out group)")
    pids = _pids(args.server_pids, args.url)
    workers = args.server_workers or (len(pids) if args.proto == "centrifugo" else 0)
    try:
        result = run_scenario(args, args.url, args.proto, pids, workers)
    except RuntimeError as exc:
        print(f"shardgate bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nshardgate bench: interrupted", file=sys.stderr)
        return 130
    if args.plot:
        plot([(args.scenario, result)], args.plot)
    if args.json:
        print(json.dumps(public(result), indent=2))
    else:
        print(f"shardgate bench {args.scenario}")
        print(summary_table(result))
        if args.plot:
            print(f"  plot written to {args.plot}")
    return 0
