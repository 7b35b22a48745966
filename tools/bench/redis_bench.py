"""``shardgate bench redis``: the Redis engine with two nodes, measured in one run beside the memory engine.

1. starts its own ``redis-server`` on a free 127.0.0.1 port (``--save "" --appendonly no``), unless
   ``--redis-address`` is given;
2. **memory**: one node of ``--workers`` workers; **redis-2-nodes**: two nodes of ``--workers`` each on
   that Redis, subscribers spread half/half over both nodes, the publisher on node A. Both run the same
   fan-out job (same client processes, payload, open-loop ``--rate``) to ``--subscribers`` subscribers of
   one channel, latency = intended publish time -> receipt;
3. reads ``INFO commandstats`` just before and after the Redis run's window: Redis commands per publication;
4. **pipelined publishing** into that Redis: the store-level loop (``tools/bench/redis_publish.py``, one
   process, ``RedisStore`` pipelines, history on) and/or ``--api-publishers`` concurrent HTTP clients
   posting ``/api/batch`` publishes to node A (the whole node path: HTTP, executor, owner, Redis);
   next to ``redis-benchmark ... PUBLISH`` (a ceiling for Redis itself) when that binary is present;
5. prints a table (or ``--json``) with the ratios redis/memory; targets are shown, never asserted.

Every process it starts (nodes, redis-server, client processes) is stopped by its own pid on the way
out, also on Ctrl-C, SIGTERM or a failure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil

from tools.bench import servers

P99_RATIO_TARGET = 2.0
PIPELINED_TARGET = 50_000.0
PIPELINED_MODES = ("both", "store", "api", "none")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, default=2, help="workers per node (default 2)")
    p.add_argument("--subscribers", type=int, default=100, metavar="K", help="fan-out subscribers (default 100)")
    p.add_argument("--rate", type=float, default=10_000.0, metavar="R",
                   help="publications/s, open loop (default 10000)")
    p.add_argument("--history-size", type=int, default=100, metavar="N",
                   help="channel history size for both engines (default 100; 0 = no history: Redis PUBLISH only)")
    p.add_argument("--redis-address", default="",
                   help="use this Redis (host:port, comma-separated = shards) instead of starting one; "
                        "keys get a unique prefix")
    p.add_argument("--pipelined", choices=PIPELINED_MODES, default="both",
                   help="pipelined publishing measurement: store loop, HTTP API batches, both (default), none")
    p.add_argument("--pipelined-count", type=int, default=200_000, metavar="N",
                   help="store loop: publications (default 200000)")
    p.add_argument("--pipelined-seconds", type=float, default=3.0, metavar="S",
                   help="bound of each pipelined measurement, seconds (default 3)")
    p.add_argument("--api-publishers", type=int, default=8, metavar="N",
                   help="HTTP API: concurrent publishers (default 8)")
    p.add_argument("--api-batch", type=int, default=100, metavar="B",
                   help="HTTP API: publishes per /api/batch request (default 100)")
    p.add_argument("--settle", type=float, default=2.0, metavar="S",
                   help="seconds to let freshly started nodes settle before each run (default 2)")
    p.add_argument("--no-reference", action="store_true", help="skip the redis-benchmark PUBLISH reference")


# -- a tiny RESP client (INFO, PING): only redis-server is needed, not redis-cli ------------------------
def _host_port(address: str) -> tuple[str, int]:
    rest = address.split("://", 1)[-1].split("/", 1)[0]
    host, _, port = rest.rpartition(":")
    return host or "127.0.0.1", int(port)


def resp_command(address: str, *args: str, timeout: float = 5.0) -> Any:
    """One command, one reply (simple string, error, integer or bulk string; arrays are not needed)."""
    host, port = _host_port(address)
    out = b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode()) for a in args)
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(out)
        f = s.makefile("rb")
        line = f.readline()
        if not line:
            raise ConnectionError(f"redis {address}: connection closed")
        kind, body = line[:1], line[1:].rstrip(b"\r\n")
        if kind == b"-":
            raise RuntimeError(f"redis {address}: {body.decode(errors='replace')}")
        if kind == b":":
            return int(body)
        if kind == b"$":
            n = int(body)
            return None if n < 0 else f.read(n + 2)[:n].decode(errors="replace")
        return body.decode(errors="replace")


def commandstats(addresses: list[str]) -> dict[str, int]:
    """command -> calls, summed over the shards (``script|load`` style subcommands kept as named)."""
    total: dict[str, int] = {}
    for address in addresses:
        text = resp_command(address, "INFO", "commandstats") or ""
        for m in re.finditer(r"^cmdstat_([^:]+):calls=(\d+)", text, re.M):
            total[m.group(1)] = total.get(m.group(1), 0) + int(m.group(2))
    return total


def stats_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Calls made between two snapshots, without our own INFO calls."""
    out = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    return {k: v for k, v in sorted(out.items(), key=lambda kv: -kv[1]) if v > 0 and k != "info"}


def settled_commandstats(addresses: list[str], last: dict[str, int], first: dict[str, int], publications: int,
                         limit: float = 10.0) -> dict[str, int]:
    """Read INFO until the calls stop growing faster than background work (< 1 per 10 publications
    per 0.3 s), at most ``limit`` seconds."""
    deadline = time.monotonic() + limit
    prev = sum(stats_delta(first, last).values())
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = commandstats(addresses)
        total = sum(stats_delta(first, now).values())
        last = now
        if total - prev <= max(20, publications // 100):
            break
        prev = total
    return last


def per_publication(delta: dict[str, int], publications: int) -> dict[str, Any]:
    if publications <= 0:
        return {"publications": 0, "total": None, "by_command": {}}
    return {"publications": publications, "total": round(sum(delta.values()) / publications, 3),
            "by_command": {k: round(v / publications, 3) for k, v in delta.items()},
            "calls": delta}


# -- processes we start -----------------------------------------------------------------------------------
class RedisProcess:
    """Our own ``redis-server`` on a free 127.0.0.1 port, persistence off, in a temp dir."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="shardgate-bench-redis-"))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port: int = s.getsockname()[1]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> RedisProcess:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.tmp), "--logfile", str(self.tmp / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError, RuntimeError):
                if resp_command(self.address, "PING", timeout=1.0) == "PONG":
                    return self
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = self.tmp / "redis.log"
                tail = log.read_text(errors="replace")[-500:] if log.exists() else ""
                self.stop()
                raise RuntimeError(f"redis-server on port {self.port} did not start: {tail.strip()}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        shutil.rmtree(self.tmp, ignore_errors=True)


class Node(servers.Server):
    """A shardgate node; also knows its internal (API) URL."""

    internal_url = ""

    def wait_ready(self, timeout: float) -> None:
        super().wait_ready(timeout)
        deadline = time.monotonic() + 5.0
        lines = list(self._tail)
        while not self.internal_url:
            for line in lines:
                m = re.search(r"internal\s+(https?://\S+)/health", line)
                if m:
                    self.internal_url = m.group(1)
            if self.internal_url or time.monotonic() > deadline:
                break
            time.sleep(0.05)
            lines = list(self._tail)
        if not self.internal_url:
            raise RuntimeError("shardgate node printed no internal URL")


def node_config(secret: str, api_key: str, workers: int, history: int, redis: dict[str, Any] | None
                ) -> dict[str, Any]:
    cfg = servers.shardgate_config(secret, workers)
    cfg["http_api"] = {"key": api_key}
    if history > 0:
        cfg["channel"]["without_namespace"].update({"history_size": history, "history_ttl": "300s"})
    if redis is not None:
        cfg["engine"] = {"type": "redis", "redis": redis}
    return cfg


def start_node(name: str, config: dict[str, Any], workers: int, timeout: float = 30.0) -> Node:
    tmp = Path(tempfile.mkdtemp(prefix="shardgate-bench-"))
    cfg_path = tmp / "config.json"
    cfg_path.write_text(json.dumps(config))
    env = {"PYTHONPATH": str(servers.REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    node = Node(name, [sys.executable, "-m", "gateway", "serve", "--config", str(cfg_path), "--port", "0",
                       "--internal-port", "0", "--workers", str(workers)],
                r"clients\s+(ws://\S+)", "{0}", cwd=tmp, env=env, tmpdir=tmp)
    node.ready_or_stopped(timeout)
    return node


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so every ``finally`` below stops what it started."""
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt
    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


# -- measurements ------------------------------------------------------------------------------------------
def _fanout_args(args: argparse.Namespace) -> argparse.Namespace:
    a = argparse.Namespace(**vars(args))
    a.scenario = "fanout"
    a.plot = None
    a.window = 64
    a.channel, a.channel_owner, a.publisher_slot, a.subscriber_slot = "bench-fanout", None, None, None
    return a


class CpuMeter:
    def __init__(self, pid: int | None) -> None:
        self.proc = psutil.Process(pid) if pid else None
        self.t0 = self.c0 = 0.0
        self.pct: float | None = None

    def _cpu(self) -> float:
        assert self.proc is not None
        t = self.proc.cpu_times()
        return float(t.user + t.system)

    def start(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(psutil.Error):
                self.t0, self.c0 = time.monotonic(), self._cpu()

    def stop(self) -> None:
        if self.proc is not None and self.t0:
            with contextlib.suppress(psutil.Error):
                self.pct = round(100 * (self._cpu() - self.c0) / max(1e-9, time.monotonic() - self.t0), 1)


def run_fanout(args: argparse.Namespace, urls: list[str], pids: list[int], label: str,
               on_phase: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The fan-out job; with two URLs subscribers alternate between them (half on each, in every client
    process) and the publisher sits on the first."""
    from tools.bench import runner
    from tools.bench.cli import build
    a = _fanout_args(args)
    job, plans = build(a, urls[0], "centrifugo", args.workers)
    if len(urls) > 1:
        k = 0
        for plan in plans:
            if plan.subs:
                plan.sub_urls = [urls[(k + j) % len(urls)] for j in range(len(plan.subs))]
                k += len(plan.subs)
            if plan.pub_conns:
                plan.pub_url = urls[0]
    r = runner.run(job, plans, pids, tick=args.tick, drain=args.drain, progress=not args.quiet, label=label,
                   on_phase=on_phase)
    if len(urls) > 1:
        r["latency_publisher_node_ms"] = runner.lat_summary(r["_hist_same"])
        r["latency_other_node_ms"] = runner.lat_summary(r["_hist_cross"])
    return r


async def _api_publish(base: str, api_key: str, publishers: int, batch: int, seconds: float, channels: int,
                       payload: int) -> dict[str, Any]:
    import aiohttp
    body_data = {"p": "x" * max(0, payload - 8)}
    names = [f"bench-pipe-{i}" for i in range(channels)]
    ok = errors = requests = 0
    first_error = ""
    deadline = time.monotonic() + seconds
    headers = {"X-API-Key": api_key, "Content-Type": "application/json"}

    async def publisher(i: int, session: aiohttp.ClientSession) -> None:
        nonlocal ok, errors, requests, first_error
        n = i
        while time.monotonic() < deadline:
            cmds = [{"publish": {"channel": names[(n + j) % channels], "data": body_data}} for j in range(batch)]
            n += batch
            async with session.post(base + "/api/batch", data=json.dumps({"commands": cmds, "parallel": True}),
                                    headers=headers) as resp:
                reply = await resp.json(content_type=None)
            requests += 1
            for rep in reply.get("replies", []):
                if "error" in rep:
                    errors += 1
                    first_error = first_error or json.dumps(rep["error"])
                else:
                    ok += 1

    timeout = aiohttp.ClientTimeout(total=seconds + 30)
    async with aiohttp.ClientSession(timeout=timeout,
                                     connector=aiohttp.TCPConnector(limit=publishers)) as session:
        t0 = time.monotonic()
        await asyncio.gather(*(publisher(i, session) for i in range(publishers)))
        elapsed = time.monotonic() - t0
    return {"method": "http-api-batch", "publishers": publishers, "batch": batch, "publications": ok,
            "errors": errors, "first_error": first_error, "requests": requests, "seconds": round(elapsed, 3),
            "per_s": round(ok / elapsed, 1) if elapsed > 0 else 0.0}


def api_pipelined(args: argparse.Namespace, node: Node, api_key: str, redis_addrs: list[str],
                  redis_pid: int | None) -> dict[str, Any]:
    before = commandstats(redis_addrs)
    node_cpu = servers.Meter(node.pids)
    redis_cpu = CpuMeter(redis_pid)
    redis_cpu.start()
    c0, t0 = node_cpu.cpu(), time.monotonic()
    r = asyncio.run(_api_publish(node.internal_url, api_key, args.api_publishers, args.api_batch,
                                 args.pipelined_seconds, 100, args.payload))
    redis_cpu.stop()
    r["node_cpu_pct"] = round(100 * (node_cpu.cpu() - c0) / max(1e-9, time.monotonic() - t0), 1)
    r["redis_cpu_pct"] = redis_cpu.pct
    r["redis_commands_per_publication"] = per_publication(stats_delta(before, commandstats(redis_addrs)),
                                                          r["publications"])
    return r


def store_pipelined(args: argparse.Namespace, redis_addrs: list[str], prefix: str,
                    redis_pid: int | None) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(servers.REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    argv = [sys.executable, "-m", "tools.bench.redis_publish", "--address", ",".join(redis_addrs),
            "--count", str(args.pipelined_count), "--batch", "1000", "--window", "10000", "--channels", "100",
            "--size", str(args.payload), "--prefix", prefix + "-store", "--max-seconds",
            str(args.pipelined_seconds), "--json"]
    before = commandstats(redis_addrs)
    redis_cpu = CpuMeter(redis_pid)
    redis_cpu.start()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=servers.REPO_ROOT)
    try:
        out, err = proc.communicate(timeout=args.pipelined_seconds + 60)
        redis_cpu.stop()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"store loop failed (rc {proc.returncode}): {err.strip().splitlines()[-1:]}")
    r: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    r["method"] = "store-loop"
    r["redis_cpu_pct"] = redis_cpu.pct
    r["redis_commands_per_publication"] = per_publication(stats_delta(before, commandstats(redis_addrs)),
                                                          r["publications"])
    return r


def redis_benchmark_reference(address: str, payload: int) -> dict[str, Any] | None:
    """``redis-benchmark ... PUBLISH`` (no subscribers): what Redis alone takes, pipelined."""
    exe = shutil.which("redis-benchmark")
    if exe is None:
        return None
    host, port = _host_port(address)
    argv = [exe, "-h", host, "-p", str(port), "-n", "200000", "-c", "4", "-P", "64", "-q",
            "PUBLISH", "bench-ref", "x" * max(1, payload)]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return {"error": "timed out"}
    rates = re.findall(r"([\d.]+) requests per second", proc.stdout)
    if not rates:
        return {"error": (proc.stdout + proc.stderr).strip()[-200:]}
    return {"command": " ".join(argv[:-1]) + " <payload>", "per_s": float(rates[-1])}


# -- the run -------------------------------------------------------------------------------------------------
def _stop_all(started: list[Any]) -> None:
    for thing in reversed(started):
        with contextlib.suppress(Exception):
            thing.stop()
    started.clear()


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.workers < 1 or args.subscribers < 2 or args.rate <= 0:
        parser.error("--workers >= 1, --subscribers >= 2 and --rate > 0 are required")
    redis_addrs = [a.strip() for a in args.redis_address.split(",") if a.strip()]
    for address in redis_addrs:
        try:
            host, _ = _host_port(address)
            servers.check_target(f"http://{host}:1/", args.allow_remote)
        except ValueError as exc:
            parser.error(f"--redis-address {address}: {exc}")
    if not redis_addrs and shutil.which("redis-server") is None:
        print("shardgate bench redis: redis-server not found on PATH (apt-get install redis-server), "
              "or pass --redis-address HOST:PORT", file=sys.stderr)
        return 1
    args.token_secret = args.token_secret or secrets.token_hex(16)
    api_key = secrets.token_hex(12)
    prefix = f"sgbench-{secrets.token_hex(4)}"
    started: list[Any] = []
    out: dict[str, Any] = {
        "command": "shardgate bench redis " + " ".join(getattr(args, "argv", [])),
        "params": {"workers": args.workers, "subscribers": args.subscribers, "rate": args.rate,
                   "duration": args.duration, "payload": args.payload, "clients": args.clients,
                   "history_size": args.history_size, "pipelined": args.pipelined, "drain": args.drain},
        "rows": [], "notes": [],
    }
    try:
        with _sigterm_as_interrupt():
            if not redis_addrs:
                redis = RedisProcess()
                started.append(redis)
                redis.start()
                redis_addrs = [redis.address]
                redis_pid: int | None = redis.proc.pid if redis.proc else None
                out["redis"] = {"address": redis.address, "started": True}
            else:
                redis_pid = None
                out["redis"] = {"address": ",".join(redis_addrs), "started": False}
            version = re.search(r"redis_version:(\S+)", resp_command(redis_addrs[0], "INFO", "server") or "")
            out["redis"]["version"] = version.group(1) if version else None
            _measure(args, out, started, redis_addrs, redis_pid, api_key, prefix)
    except KeyboardInterrupt:
        _stop_all(started)
        print("\nshardgate bench redis: interrupted (every process it started was stopped)", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        _stop_all(started)
        print(f"shardgate bench redis: {exc}", file=sys.stderr)
        return 1
    finally:
        _stop_all(started)
    _ratios(out)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(table(out))
    return 0 if all("error" not in r for r in out["rows"]) and len(out["rows"]) == 2 else 1


def _row(name: str, nodes: int, r: dict[str, Any]) -> dict[str, Any]:
    from tools.bench.cli import public
    lat = r["latency_ms"]
    row = {"name": name, "nodes": nodes, "deliveries_per_s": r["deliveries_per_s"],
           "publications_per_s": r["publications_per_s"], "published": r["published"],
           "deliveries": r["deliveries"], "lost": r["lost"], "errors": r["errors"],
           "disconnects": r["disconnects"], "subscribers": r["subscribers"],
           "p50_ms": lat.get("p50"), "p99_ms": lat.get("p99"), "max_ms": lat.get("max"),
           "client_cpu_pct": r["client_cpu_pct"], "server_cpu_pct": r["server_cpu_pct"],
           "loadavg": r["loadavg"], "result": public(r)}
    for key in ("latency_publisher_node_ms", "latency_other_node_ms"):
        if key in r:
            row[key] = r[key]
    return row


def _measure(args: argparse.Namespace, out: dict[str, Any], started: list[Any], redis_addrs: list[str],
             redis_pid: int | None, api_key: str, prefix: str) -> None:
    w = args.workers
    # (a) memory engine, one node
    node = start_node("shardgate (memory)", node_config(args.token_secret, api_key, w, args.history_size, None), w)
    started.append(node)
    try:
        time.sleep(args.settle)
        r = run_fanout(args, [node.url], node.pids, "memory ")
        out["rows"].append(_row("memory", 1, r))
    except RuntimeError as exc:
        out["rows"].append({"name": "memory", "nodes": 1, "error": str(exc)})
        print(f"shardgate bench redis: memory run failed: {exc}", file=sys.stderr)
    finally:
        node.stop()
        started.remove(node)

    # (b) Redis engine, two nodes on one Redis
    engine = {"address": redis_addrs if len(redis_addrs) > 1 else redis_addrs[0], "prefix": prefix}
    cfg = node_config(args.token_secret, api_key, w, args.history_size, engine)
    a = start_node("shardgate (redis, node A)", cfg, w)
    started.append(a)
    b = start_node("shardgate (redis, node B)", cfg, w)
    started.append(b)
    snaps: dict[str, dict[str, int]] = {}
    redis_cpu = CpuMeter(redis_pid)

    def on_phase(phase: str) -> None:
        snaps[phase] = commandstats(redis_addrs)
        (redis_cpu.start if phase == "go" else redis_cpu.stop)()

    try:
        time.sleep(args.settle)
        r = run_fanout(args, [a.url, b.url], a.pids + b.pids, "redis-2-nodes ", on_phase)
        if "stop" not in snaps:
            on_phase("stop")
        if "go" in snaps:  # a backlogged node may still be publishing what it was sent: count that too
            snaps["stop"] = settled_commandstats(redis_addrs, snaps["stop"], snaps["go"], r["published"])
        row = _row("redis-2-nodes", 2, r)
        row["redis_cpu_pct"] = redis_cpu.pct
        out["rows"].append(row)
        if "go" in snaps:
            out["redis_commands_per_publication"] = per_publication(stats_delta(snaps["go"], snaps["stop"]),
                                                                    r["published"])
    except RuntimeError as exc:
        out["rows"].append({"name": "redis-2-nodes", "nodes": 2, "error": str(exc)})
        print(f"shardgate bench redis: redis run failed: {exc}", file=sys.stderr)

    # pipelined publishing into that Redis
    pipelined: dict[str, Any] = {}
    if args.pipelined in ("both", "api"):
        try:
            pipelined["api"] = api_pipelined(args, a, api_key, redis_addrs, redis_pid)
        except Exception as exc:  # reported; the other figures still stand
            pipelined["api"] = {"error": f"{type(exc).__name__}: {exc}"}
    for n in (b, a):
        n.stop()
        started.remove(n)
    if args.pipelined in ("both", "store"):
        try:
            pipelined["store"] = store_pipelined(args, redis_addrs, prefix, redis_pid)
        except (RuntimeError, subprocess.SubprocessError, ValueError, OSError) as exc:
            pipelined["store"] = {"error": str(exc)}
    if args.pipelined != "none" and not args.no_reference:
        ref = redis_benchmark_reference(redis_addrs[0], args.payload)
        if ref is not None:
            pipelined["redis_benchmark"] = ref
    out["pipelined"] = pipelined


def _ratios(out: dict[str, Any]) -> None:
    rows = {r["name"]: r for r in out["rows"] if "error" not in r}
    mem, red = rows.get("memory"), rows.get("redis-2-nodes")
    ratios: dict[str, Any] = {"p99": None, "deliveries": None}
    if mem and red:
        if mem.get("p99_ms") and red.get("p99_ms") is not None:
            ratios["p99"] = round(red["p99_ms"] / mem["p99_ms"], 2)
        if mem["deliveries_per_s"]:
            ratios["deliveries"] = round(red["deliveries_per_s"] / mem["deliveries_per_s"], 3)
    out["ratios"] = ratios
    best = max((v["per_s"] for k, v in out.get("pipelined", {}).items()
                if k in ("api", "store") and isinstance(v, dict) and "per_s" in v), default=None)
    out["pipelined_publications_per_s"] = best
    saturated = [name for name, row in rows.items()
                 if row["lost"] or row["deliveries_per_s"] < 0.95 * out["params"]["rate"] * row["subscribers"]]
    out["saturated"] = saturated
    out["targets"] = {
        "p99_ratio_max": P99_RATIO_TARGET,
        # queueing delay of a saturated run is no latency figure: no verdict then
        "p99_ratio_met": None if ratios["p99"] is None or saturated else ratios["p99"] <= P99_RATIO_TARGET,
        "pipelined_min": PIPELINED_TARGET,
        "pipelined_met": None if best is None else best >= PIPELINED_TARGET,
    }
    for name, row in rows.items():
        offered = out["params"]["rate"] * row["subscribers"]
        if name in saturated:
            out["notes"].append(f"{name}: deliveries fell behind the offered load ({row['deliveries_per_s']:,.0f} "
                                f"of {offered:,.0f}/s, lost {row['lost']:,} after --drain {out['params']['drain']:g} "
                                "s): saturated, latency is queueing; lower --rate to see what this box sustains")
        la = row.get("loadavg", [0, 0])
        if max(la) > (os.cpu_count() or 1):
            out["notes"].append(f"{name}: load average {la[0]:.1f} -> {la[1]:.1f} on {os.cpu_count()} cores: "
                                "other processes competed for the CPUs")
        if row["publications_per_s"] < 0.95 * out["params"]["rate"]:
            out["notes"].append(f"{name}: the publisher sent {row['publications_per_s']:,.0f}/s of "
                                f"{out['params']['rate']:,.0f}/s asked (client-bound)")
        if row["client_cpu_pct"] >= 90 * out["params"]["clients"]:
            out["notes"].append(f"{name}: client processes saturated ({row['client_cpu_pct']:.0f}%): the "
                                "figures measure the client")


def _ms(v: Any) -> str:
    return "-" if v is None else f"{v:,.2f}"


def _target(met: bool | None) -> str:
    return "" if met is None else ("  [target met]" if met else "  [target missed]")


def table(out: dict[str, Any]) -> str:
    p = out["params"]
    lines = [f"shardgate bench redis: fan-out to {p['subscribers']} subscribers at {p['rate']:,.0f} publications/s "
             f"for {p['duration']:g} s, payload {p['payload']} B, history {p['history_size'] or 'off'}, "
             f"{p['workers']} worker(s) per node, {p['clients']} client processes; "
             f"redis {out['redis'].get('version') or '?'} at {out['redis']['address']}"]
    head = ["engine", "nodes", "pub/s", "deliveries/s", "lost", "p50 ms", "p99 ms", "max ms",
            "cpu client/nodes/redis"]
    cells = [head]
    for r in out["rows"]:
        if "error" in r:
            cells.append([r["name"], str(r["nodes"]), "failed"] + [""] * (len(head) - 3))
            continue
        sc = r["server_cpu_pct"]
        cpu = f"{r['client_cpu_pct']:.0f}%/" + (f"{sc:.0f}%" if sc is not None else "-")
        cpu += "/" + (f"{r['redis_cpu_pct']:.0f}%" if r.get("redis_cpu_pct") is not None else "-")
        cells.append([r["name"], str(r["nodes"]), f"{r['publications_per_s']:,.0f}", f"{r['deliveries_per_s']:,.0f}",
                      f"{r['lost']:,}", _ms(r["p50_ms"]), _ms(r["p99_ms"]), _ms(r["max_ms"]), cpu])
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    for i, c in enumerate(cells):
        lines.append("  " + "  ".join(x.ljust(wd) if j == 0 else x.rjust(wd)
                                      for j, (x, wd) in enumerate(zip(c, widths, strict=True))))
        if i == 0:
            lines.append("  " + "  ".join("-" * wd for wd in widths))
    for r in out["rows"]:
        for key, what in (("latency_publisher_node_ms", "subscribers on node A (publisher's)"),
                          ("latency_other_node_ms", "subscribers on node B")):
            lat = r.get(key)
            if lat and lat.get("count"):
                lines.append(f"    {what}: p50 {lat['p50']:.2f}  p99 {lat['p99']:.2f}  max {lat['max']:.2f} ms "
                             f"(n={lat['count']:,})")
    ratios, targets = out["ratios"], out["targets"]
    lines.append("")
    lines.append(f"  redis p99 / memory p99        {ratios['p99'] if ratios['p99'] is not None else '-'}"
                 f"   (target <= {P99_RATIO_TARGET:g}){_target(targets['p99_ratio_met'])}"
                 + ("  [no verdict: saturated, see notes]" if out.get("saturated") else ""))
    lines.append(f"  deliveries ratio redis/memory {ratios['deliveries'] if ratios['deliveries'] is not None else '-'}")
    cpp = out.get("redis_commands_per_publication")
    if cpp and cpp.get("total") is not None:
        top = ", ".join(f"{k} {v:g}" for k, v in list(cpp["by_command"].items())[:8])
        lines.append(f"  redis commands per publication {cpp['total']:g}  ({top}; over {cpp['publications']:,} "
                     "publications)")
        lines.append("    (INFO commandstats delta around the run window, INFO itself excluded; commands a Lua "
                     "script runs count as well as its evalsha; node background work such as probes included)")
    else:
        lines.append("  redis commands per publication -")
    pl = out.get("pipelined", {})
    labels = {"store": "store loop (tools/bench/redis_publish.py, 1 process, RedisStore pipelines)",
              "api": "HTTP API /api/batch into node A",
              "redis_benchmark": "redis-benchmark PUBLISH -P 64 -c 4 (Redis alone, reference)"}
    if pl:
        best = out["pipelined_publications_per_s"]
        lines.append(f"  pipelined publications/s      {'-' if best is None else f'{best:,.0f}'}"
                     f"   (best of store/api; target >= {PIPELINED_TARGET:,.0f}){_target(targets['pipelined_met'])}")
    for key in ("store", "api", "redis_benchmark"):
        v = pl.get(key)
        if v is None:
            continue
        if "error" in v:
            lines.append(f"    {labels[key]}: failed: {v['error']}")
            continue
        extra = ""
        c = v.get("redis_commands_per_publication")
        if c and c.get("total") is not None:
            extra = f", {c['total']:g} redis commands/publication"
        if key == "store":
            extra += f", cpu loop {v['cpu_pct']:.0f}%"
        if key == "api":
            extra += f", {v['publishers']} publishers x {v['batch']} per request, cpu node {v['node_cpu_pct']:.0f}%"
        if v.get("redis_cpu_pct") is not None:
            extra += f" redis {v['redis_cpu_pct']:.0f}%"
        if key == "api" and v["errors"]:
            extra += f", {v['errors']} errors ({v['first_error']})"
        lines.append(f"    {labels[key]}: {v['per_s']:,.0f}/s{extra}")
    lines += ["  note: " + n for n in out["notes"]]
    return "\n".join(lines)
