"""The coordinator: forks the client processes, starts them together, merges their HDR histograms,
prints the live progress line and returns one result dict."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import wait
from typing import Any

from hdrh.histogram import HdrHistogram

from tools.bench.client import NS, Job, Plan, process_main
from tools.bench.servers import Meter

PCTS = (50.0, 90.0, 99.0, 99.9)


def new_hist() -> HdrHistogram:
    return HdrHistogram(1, 3_600_000_000, 3)  # µs, 1 µs .. 1 h, 3 significant digits


def lat_summary(h: HdrHistogram) -> dict[str, Any]:
    n = h.get_total_count()
    if not n:
        return {"count": 0}
    out: dict[str, Any] = {"count": n}
    for p in PCTS:
        out[f"p{p:g}"] = round(h.get_value_at_percentile(p) / 1000, 3)
    out["max"] = round(h.get_max_value() / 1000, 3)
    out["mean"] = round(h.get_mean_value() / 1000, 3)
    return out


class Progress:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.last_len = 0

    def show(self, line: str) -> None:
        if not self.enabled:
            return
        if self.tty:
            pad = max(0, self.last_len - len(line))
            sys.stderr.write("\r" + line + " " * pad)
            self.last_len = len(line)
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def done(self) -> None:
        if self.enabled and self.tty and self.last_len:
            sys.stderr.write("\n")
            sys.stderr.flush()


def run(job: Job, plans: list[Plan], server_pids: list[int], *, tick: float = 0.5, drain: float = 3.0,
        hold: float = 1.0, progress: bool = True, label: str = "",
        on_phase: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run one benchmark with one forked process per plan; bounded by setup_timeout + duration + drain.

    ``on_phase("go")`` is called once the connections are set up, just before the run starts, and
    ``on_phase("stop")`` once it has drained (e.g. to read Redis INFO around the run only)."""
    ctx = mp.get_context("fork")
    shared = ctx.RawArray("q", len(plans))
    procs: list[Any] = []
    pipes: list[Any] = []
    for plan in plans:
        parent, child = ctx.Pipe()
        p = ctx.Process(target=process_main, args=(job, plan, child, shared), daemon=True,
                        name=f"bench-client-{plan.index}")
        p.start()
        child.close()
        procs.append(p)
        pipes.append(parent)
    prog = Progress(progress)
    try:
        return _coordinate(job, plans, procs, pipes, server_pids, tick, drain, hold, prog, label, on_phase)
    finally:
        prog.done()
        for pipe in pipes:
            with contextlib.suppress(Exception):
                pipe.send(("stop",))
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
        for pipe in pipes:
            pipe.close()


def _coordinate(job: Job, plans: list[Plan], procs: list[Any], pipes: list[Any], server_pids: list[int],
                tick: float, drain: float, hold: float, prog: Progress, label: str,
                on_phase: Callable[[str], None] | None = None) -> dict[str, Any]:
    n = len(plans)
    idx_of = {id(p): i for i, p in enumerate(pipes)}
    # -- setup: every process opens its connections ---------------------------------------------------
    ready: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + job.setup_timeout
    t_setup = time.monotonic()
    while len(ready) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeError(f"client setup timed out after {job.setup_timeout:.0f}s "
                               f"({len(ready)}/{n} processes ready)")
        for pipe in wait(pipes, timeout=min(left, 0.5)):
            try:
                msg = pipe.recv()
            except EOFError as exc:
                raise RuntimeError("a client process died during setup") from exc
            if msg[0] == "ready":
                ready[idx_of[id(pipe)]] = msg[1]
        for p in procs:
            if not p.is_alive() and len(ready) < n:
                raise RuntimeError(f"client process {p.name} exited during setup (rc {p.exitcode})")
        conns = sum(r["connected"] for r in ready.values())
        prog.show(f"{label}setup: {len(ready)}/{n} client processes ready, {conns} connections")
    setup_s = time.monotonic() - t_setup
    connected = sum(r["connected"] for r in ready.values())
    setup_failed = sum(r["failed"] for r in ready.values())
    setup_errors = [e for r in ready.values() for e in r["errors"]][:3]
    if job.scenario != "connect" and connected == 0:
        raise RuntimeError("no connection could be set up: " + "; ".join(setup_errors))

    if on_phase is not None:
        on_phase("go")
    server = Meter(server_pids)
    clients = Meter([p.pid for p in procs])
    load_before = os.getloadavg()[0]
    rss0 = server.rss()
    s_cpu0, c_cpu0 = server.cpu(), clients.cpu()

    # -- run ---------------------------------------------------------------------------------------------
    t0 = time.monotonic_ns() + int(0.1 * NS)
    t_end = t0 + int(job.duration * NS)
    for pipe in pipes:
        pipe.send(("go", t0, t_end, tick))
    snaps: dict[int, dict[str, Any]] = {}
    ran: dict[int, dict[str, Any]] = {}
    done: set[int] = set()
    total = new_hist()
    cross = new_hist()
    interval = new_hist()
    series: list[dict[str, Any]] = []
    last_t, last_count = time.monotonic(), 0
    last_s_cpu, last_c_cpu = s_cpu0, c_cpu0
    run_cpu: tuple[float, float, float] | None = None
    rss1: int | None = None
    stop_sent = False
    drain_deadline: float | None = None
    storm_end: int | None = None
    last_progress_count, last_progress_at = -1, time.monotonic()
    hard_deadline = time.monotonic() + job.duration + drain + hold + 30

    count_key = {"rpc": "rpc_done", "connect": "connected"}.get(job.scenario, "delivered")

    def one_count(v: dict[str, Any]) -> int:
        return int(v[count_key])

    def count_of(s: dict[int, dict[str, Any]]) -> int:
        return sum(one_count(v) for v in s.values())

    rates: dict[int, float] = {}

    while len(done) < n:
        now_m = time.monotonic()
        if now_m > hard_deadline:
            raise RuntimeError("benchmark did not finish in time (client processes stuck)")
        for pipe in wait(pipes, timeout=0.05):
            i = idx_of[id(pipe)]
            try:
                msg = pipe.recv()
            except EOFError:
                done.add(i)
                continue
            kind = msg[0]
            if kind in ("tick", "ran"):
                snap = msg[1]
                for key, h in (("hist", total), ("hist_cross", cross)):
                    if snap.get(key):
                        dec = HdrHistogram.decode(snap[key].encode())
                        h.add(dec)
                        interval.add(dec)
                prev = snaps.get(i)
                if prev is not None and snap["t"] > prev["t"]:
                    # per-process rate from the process's own clock: immune to when the pipe is read
                    rates[i] = (one_count(snap) - one_count(prev)) * NS / (snap["t"] - prev["t"])
                snaps[i] = snap
                if kind == "ran":
                    ran[i] = snap
                    if snap.get("storm_done"):
                        storm_end = max(storm_end or 0, snap["storm_done"])
            elif kind == "done":
                done.add(i)
        for i, p in enumerate(procs):
            if not p.is_alive():
                done.add(i)
        now_m = time.monotonic()
        if now_m - last_t >= tick and not stop_sent:
            cnt = count_of(snaps)
            s_cpu, c_cpu = server.cpu(), clients.cpu()
            dt = now_m - last_t
            rate = sum(rates.values()) if rates else (cnt - last_count) / dt
            p99 = interval.get_value_at_percentile(99) / 1000 if interval.get_total_count() else None
            el = (time.monotonic_ns() - t0) / NS
            series.append({"t": round(el, 3), "rate": round(rate, 1), "p99_ms": p99,
                           "server_cpu": round(100 * (s_cpu - last_s_cpu) / dt, 1),
                           "client_cpu": round(100 * (c_cpu - last_c_cpu) / dt, 1)})
            interval.reset()
            unit = {"rpc": "rpc/s", "connect": "conn/s"}.get(job.scenario, "deliveries/s")
            errs = sum(v["errors"] + v["disconnects"] + v["failed"] for v in snaps.values())
            phase = "run" if el <= job.duration else "drain"
            prog.show(f"{label}[{phase} {min(el, job.duration):5.1f}/{job.duration:g}s] {rate:>12,.0f} {unit}"
                      f"  p99 {p99 if p99 is not None else 0:7.2f} ms  errors {errs}"
                      f"  client cpu {series[-1]['client_cpu']:.0f}%  server cpu {series[-1]['server_cpu']:.0f}%")
            last_t, last_count, last_s_cpu, last_c_cpu = now_m, cnt, s_cpu, c_cpu
        # -- end of run window: freeze CPU figures, then drain -----------------------------------------
        if run_cpu is None and len(ran) == n:
            run_cpu = (time.monotonic_ns(), server.cpu(), clients.cpu())
            drain_deadline = time.monotonic() + (hold if job.scenario == "connect" else drain)
        if run_cpu is not None and not stop_sent:
            finished = False
            if job.scenario in ("fanout", "rooms"):
                published = sum(v["published"] for v in snaps.values())
                per_pub = max((p.expected_per_pub for p in plans), default=0)
                subs = sum(ready[i]["connected"] for i, p in enumerate(plans) if p.subs)
                expected = published * min(per_pub, subs) if per_pub else 0
                finished = count_of(snaps) >= expected
            elif job.scenario == "rpc":
                finished = count_of(snaps) >= sum(v["rpc_sent"] for v in snaps.values())
            cnt = count_of(snaps)
            if cnt != last_progress_count:
                last_progress_count, last_progress_at = cnt, time.monotonic()
            stalled = time.monotonic() - last_progress_at > 1.0
            if job.scenario == "connect":
                finished = False  # hold the connections open until the deadline, then read RSS
            assert drain_deadline is not None
            if finished or stalled or time.monotonic() >= drain_deadline:
                if job.scenario == "connect":
                    rss1 = server.rss()
                if on_phase is not None:
                    on_phase("stop")
                for pipe in pipes:
                    with contextlib.suppress(Exception):
                        pipe.send(("stop",))
                stop_sent = True

    # -- results -----------------------------------------------------------------------------------------
    if run_cpu is None:
        run_cpu = (time.monotonic_ns(), server.cpu(), clients.cpu())
    wall = max(1e-9, (run_cpu[0] - t0) / NS)
    ran_all = {**snaps, **ran} if ran else snaps
    final = snaps
    totals = {k: sum(v[k] for v in final.values()) for k in
              ("delivered", "published", "acks", "rpc_sent", "rpc_done", "errors", "disconnects", "connected",
               "failed")}
    in_window = {k: sum(v[k] for v in ran_all.values()) for k in ("delivered", "published", "rpc_done",
                                                                    "connected")}
    close_codes: dict[str, int] = {}
    error_codes: dict[str, int] = {}
    for v in final.values():
        for code, c in v.get("close_codes", {}).items():
            close_codes[code] = close_codes.get(code, 0) + c
        for code, c in v.get("error_codes", {}).items():
            error_codes[code] = error_codes.get(code, 0) + c
    both = new_hist()
    both.add(total)  # same-worker (or all) samples
    both.add(cross)  # rooms: samples where subscriber and channel owner are on different workers
    result: dict[str, Any] = {
        "scenario": job.scenario, "proto": job.proto, "url": job.url, "duration_s": job.duration,
        "payload_bytes": job.payload, "mode": "fixed-rate" if job.rate > 0 else "max-rate",
        "rate_target": job.rate, "client_processes": n, "setup_s": round(setup_s, 3),
        "connections": connected + (totals["connected"] if job.scenario == "connect" else 0),
        "setup_failed": setup_failed, "setup_errors": setup_errors,
        "errors": totals["errors"], "disconnects": totals["disconnects"], "close_codes": close_codes,
        "error_codes": error_codes,
        "latency_ms": lat_summary(both),
        "client_cpu_pct": round(100 * (run_cpu[2] - c_cpu0) / wall, 1),
        "server_cpu_pct": round(100 * (run_cpu[1] - s_cpu0) / wall, 1) if server.pids else None,
        "server_pids": server.pids, "series": series, "_hist": both,
        "_hist_same": total, "_hist_cross": cross,  # fanout across nodes: publisher's node / the other
        # 1-minute load average around the run: above the core count, other processes shared the CPUs
        "loadavg": [round(load_before, 2), round(os.getloadavg()[0], 2)], "cpu_count": os.cpu_count(),
    }
    if job.scenario in ("fanout", "rooms"):
        per_pub = max((p.expected_per_pub for p in plans), default=0)
        subs = sum(ready[i]["connected"] for i, p in enumerate(plans) if p.subs)
        expected = totals["published"] * min(per_pub, subs)
        result.update({
            "subscribers": subs, "published": totals["published"], "acks": totals["acks"],
            "publications_per_s": round(in_window["published"] / job.duration, 1),
            "deliveries": totals["delivered"], "expected_deliveries": expected,
            "lost": max(0, expected - totals["delivered"]),
            "deliveries_per_s": round(in_window["delivered"] / job.duration, 1),
        })
        if job.scenario == "rooms":
            result["latency_same_worker_ms"] = lat_summary(total)
            result["latency_cross_worker_ms"] = lat_summary(cross)
            result["cross_worker_subscribers"] = sum(r.get("cross_subs", 0) for r in ready.values())
    elif job.scenario == "rpc":
        result.update({"calls": totals["rpc_sent"], "replies": totals["rpc_done"],
                       "lost": max(0, totals["rpc_sent"] - totals["rpc_done"]),
                       "rpc_per_s": round(in_window["rpc_done"] / job.duration, 1)})
    elif job.scenario == "connect":
        opened = totals["connected"]
        span = ((storm_end - t0) / NS) if storm_end else job.duration
        result.update({
            "connections": opened, "failed": totals["failed"],
            "conn_per_s": round(opened / max(span, 1e-9), 1), "connect_span_s": round(span, 3),
            "server_rss_before": rss0, "server_rss_after": rss1,
            "server_rss_per_conn_bytes": (round((rss1 - rss0) / opened) if rss1 and opened and server.pids
                                          else None),
        })
    return result
