"""RFC 6455 conformance gate: the Autobahn TestSuite against the gateway's echo endpoint.

    python -m tools.conformance [--install] [--workers N] [--timeout S] [--outdir DIR]
                                [--cases PATTERNS] [--parallel N]

Starts ``python -m gateway serve`` on 127.0.0.1 (ephemeral ports) with
``websocket.conformance_echo_path`` enabled and ``websocket.message_size_limit`` at 32 MiB
(cases 9.1.6/9.2.6 send 16 MiB messages) and ``websocket.compression`` on (cases 12.* and
13.* are permessage-deflate, RFC 7692), runs ``wstest -m fuzzingclient`` on every case, reads
``index.json`` and prints the counts per
behaviour. Exit status: 0 when no case is FAILED, WRONG CODE or UNCLEAN (in ``behavior``
or ``behaviorClose``) outside :data:`ALLOW`, 1 when one is, 2 when the run itself could
not be done (no suite, gateway did not start, wstest timed out, report missing).

The suite (autobahntestsuite 25.10.1) runs on Python 2.7 only. Its virtualenv is
``$SHARDGATE_AUTOBAHN_VENV`` or ``.autobahn/venv27`` in the repository; ``--install``
creates it when missing from pyenv's 2.7.18 with virtualenv 20.21.1 (the last release that
makes 2.7 environments), itself installed in ``.autobahn/venv-virtualenv`` (Python 3).
Reports go to ``--outdir`` (default ``.autobahn/reports``).

wstest is single-threaded Python 2.7 and the deflate cases (12.*, 13.*) are its own CPU: about
1000 of the run's seconds on a 2-core box, with the gateway mostly idle. ``--parallel N``
(default 2) splits the case groups into N shards balanced by their measured durations and runs
one wstest per shard against the same gateway at once; their reports are merged. With every case
selected, fewer than :data:`EXPECTED_CASES` results is a failure to run (exit 2), so a shard list
that misses a group cannot pass silently.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
AUTOBAHN_DIR = ROOT / ".autobahn"
DEFAULT_VENV = AUTOBAHN_DIR / "venv27"
ECHO_PATH = "/autobahn-echo"
MESSAGE_SIZE_LIMIT = 32 * 1024 * 1024
AGENT = "shardgate"
EXCLUDED: list[str] = []  # every case runs, permessage-deflate (12.*, 13.*) included
BAD = frozenset({"FAILED", "WRONG CODE", "UNCLEAN"})
#: How many cases autobahntestsuite 25.10.1 runs with "cases": ["*"].
EXPECTED_CASES = 517
#: Every case group of the suite, with its duration in seconds on a 2-core box (one wstest at a
#: time, this session's run): what --parallel balances the shards by.
CASE_GROUPS: dict[str, float] = {
    "1.*": 1, "2.*": 1, "3.*": 1, "4.*": 1, "5.*": 2, "6.*": 6, "7.*": 2, "9.*": 20, "10.*": 1,
    "12.1.*": 51, "12.2.*": 132, "12.3.*": 132, "12.4.*": 61, "12.5.*": 115,
    "13.1.*": 64, "13.2.*": 56, "13.3.*": 104, "13.4.*": 64, "13.5.*": 99, "13.6.*": 47, "13.7.*": 93,
}

AUTOBAHN_VERSION = "25.10.1"
VIRTUALENV_VERSION = "20.21.1"
PYTHON27 = "2.7.18"

#: case id -> why it may fail. Only cases that fail inside picows itself belong here.
ALLOW: dict[str, str] = {
    # Two CLOSE frames in one read: picows 2.3.1 parses one frame ahead (_process_new_data), its parser
    # raises "Received CLOSE for the second time" on the second and sends 1002 itself, and the first CLOSE
    # never reaches the listener, so no application code can answer it with 1000.
    "7.1.2": "picows parses one frame ahead; the second CLOSE fails the connection (1002) inside picows "
             "before the first is delivered",
}


# -- the Python 2.7 environment -----------------------------------------------------------------

def venv_path() -> Path:
    return Path(os.environ.get("SHARDGATE_AUTOBAHN_VENV") or DEFAULT_VENV).resolve()


def wstest_path(venv: Path) -> Path:
    return venv / "bin" / "wstest"


def python27() -> Path:
    root = os.environ.get("PYENV_ROOT")
    if not root and shutil.which("pyenv"):
        root = subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=True).stdout.strip()
    root = root or str(Path.home() / ".pyenv")
    return Path(root) / "versions" / PYTHON27 / "bin" / "python"


def install(venv: Path) -> None:
    """Create the 2.7 virtualenv with the suite; raise SystemExit(2) with the reason when impossible."""
    py27 = python27()
    if not py27.exists():
        raise SystemExit(f"conformance: Python {PYTHON27} not found at {py27} (pyenv install {PYTHON27})")
    helper = AUTOBAHN_DIR / "venv-virtualenv"
    steps = []
    if not (helper / "bin" / "virtualenv").exists():
        steps += [[sys.executable, "-m", "venv", str(helper)],
                  [str(helper / "bin" / "pip"), "install", "-q", f"virtualenv=={VIRTUALENV_VERSION}"]]
    steps += [[str(helper / "bin" / "virtualenv"), "-q", "-p", str(py27), str(venv)],
              [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
               f"autobahntestsuite=={AUTOBAHN_VERSION}"]]
    for cmd in steps:
        print("conformance: $", " ".join(cmd), flush=True)
        if subprocess.run(cmd, timeout=600).returncode != 0:
            raise SystemExit(f"conformance: failed: {' '.join(cmd)}")


# -- the gateway ---------------------------------------------------------------------------------

class GatewayProcess:
    """``python -m gateway serve`` with the echo endpoint, stopped (workers included) by pid."""

    def __init__(self, workdir: Path, workers: int) -> None:
        config = {
            "client": {"allow_anonymous_connect_without_token": True},
            "websocket": {"message_size_limit": MESSAGE_SIZE_LIMIT, "conformance_echo_path": ECHO_PATH,
                          "compression": True},
        }
        cfg_path = workdir / "config.json"
        cfg_path.write_text(json.dumps(config))
        self.log_path = workdir / "gateway.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(cfg_path), "--host", "127.0.0.1",
             "--port", "0", "--internal-port", "0", "--workers", str(workers), "--log-level", "warning"],
            stdout=subprocess.PIPE, stderr=self._log, text=True, cwd=workdir,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)})
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.children: set[int] = set()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)

    def wait_url(self, timeout: float) -> str:
        """The client URL the supervisor prints once every worker is ready."""
        deadline = time.monotonic() + timeout
        url = internal = ""
        while not (url and internal):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"conformance: gateway did not start; log:\n{self.log_path.read_text()}")
            try:
                line = self._lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if m := re.search(r"clients\s+(ws://\S+)", line):
                url = m.group(1)
            if m := re.search(r"internal\s+(http://\S+)/health", line):
                internal = m.group(1)
        self.children = set(self._child_pids())
        return url

    def _child_pids(self) -> list[int]:
        try:
            import psutil
            return [c.pid for c in psutil.Process(self.proc.pid).children()]
        except Exception:
            return []

    def stop(self) -> None:
        pids = self.children | set(self._child_pids())
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in pids:  # only the workers this gateway started, if one outlived it
            try:
                import psutil
                p = psutil.Process(pid)
                if "gateway" in " ".join(p.cmdline()):
                    p.kill()
            except Exception:
                pass
        self._log.close()


# -- the gate ------------------------------------------------------------------------------------

def evaluate(results: dict[str, dict[str, Any]],
             allow: dict[str, str] | None = None) -> tuple[Counter[str], Counter[str], list[str], list[str]]:
    """(behavior counts, behaviorClose counts, failing case lines, allow-listed case lines)."""
    allow = ALLOW if allow is None else allow
    behavior: Counter[str] = Counter()
    close: Counter[str] = Counter()
    failing: list[str] = []
    allowed: list[str] = []
    for case in sorted(results, key=lambda c: tuple(int(p) for p in c.split("."))):
        r = results[case]
        behavior[r["behavior"]] += 1
        close[r["behaviorClose"]] += 1
        if r["behavior"] in BAD or r["behaviorClose"] in BAD:
            line = (f"{case}: behavior={r['behavior']} behaviorClose={r['behaviorClose']} "
                    f"remoteCloseCode={r.get('remoteCloseCode')} ({r.get('reportfile')})")
            if case in allow:
                allowed.append(f"{line} -- allowed: {allow[case]}")
            else:
                failing.append(line)
    return behavior, close, failing, allowed


def _counts(c: Counter[str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))


def shards(patterns: list[str], parallel: int) -> list[list[str]]:
    """Split the case patterns into at most ``parallel`` lists of about equal duration: every
    group of the suite for ``*``, the patterns as given otherwise (longest first, each to the
    lightest shard)."""
    groups = list(CASE_GROUPS) if patterns == ["*"] else patterns
    bins: list[tuple[float, list[str]]] = [(0.0, []) for _ in range(max(1, min(parallel, len(groups))))]
    for group in sorted(groups, key=lambda g: -CASE_GROUPS.get(g, 1.0)):
        i = min(range(len(bins)), key=lambda k: bins[k][0])
        weight, members = bins[i]
        bins[i] = (weight + CASE_GROUPS.get(group, 1.0), [*members, group])
    return [members for _, members in bins if members]


def run(args: argparse.Namespace) -> int:
    venv = venv_path()
    if not wstest_path(venv).exists():
        if not args.install:
            print(f"conformance: no wstest in {venv}; run with --install (or set SHARDGATE_AUTOBAHN_VENV)",
                  file=sys.stderr)
            return 2
        install(venv)
    outdir = Path(args.outdir).resolve()
    shutil.rmtree(outdir, ignore_errors=True)
    outdir.mkdir(parents=True)
    started = time.monotonic()
    patterns = [c.strip() for c in args.cases.split(",") if c.strip()] or ["*"]
    procs: list[tuple[subprocess.Popen[bytes], Any, Path]] = []
    with tempfile.TemporaryDirectory(prefix="shardgate-autobahn-") as tmp:
        gw = GatewayProcess(Path(tmp), args.workers)
        try:
            base = gw.wait_url(timeout=30)
            url = re.sub(r"^(ws://[^/]+).*$", r"\1", base) + ECHO_PATH
            parts = shards(patterns, args.parallel)
            print(f"conformance: {len(parts)} wstest process(es) against {url} (timeout {args.timeout:g} s): "
                  + " | ".join(",".join(p) for p in parts), flush=True)
            for i, cases in enumerate(parts):
                shard_dir = outdir / f"shard-{i + 1}"
                shard_dir.mkdir()
                spec = {"outdir": str(shard_dir), "servers": [{"agent": AGENT, "url": url}], "cases": cases,
                        "exclude-cases": EXCLUDED, "exclude-agent-cases": {}}
                spec_path = Path(tmp) / f"fuzzingclient-{i + 1}.json"
                spec_path.write_text(json.dumps(spec, indent=2))
                wlog = open(shard_dir / "wstest.log", "w")  # noqa: SIM115 - closed below
                procs.append((subprocess.Popen([str(wstest_path(venv)), "-m", "fuzzingclient", "-s",
                                                str(spec_path)], cwd=tmp, stdout=wlog, stderr=subprocess.STDOUT),
                              wlog, shard_dir))
            deadline = time.monotonic() + args.timeout
            timed_out = False
            for proc, wlog, shard_dir in procs:
                try:
                    proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    timed_out = True
                    proc.kill()
                    proc.wait()
                    print(f"conformance: wstest ran past {args.timeout:g} s; log in {shard_dir / 'wstest.log'}",
                          file=sys.stderr)
                wlog.close()
            if timed_out:
                return 2
            if gw.proc.poll() is not None:
                print(f"conformance: the gateway exited during the run; log:\n{gw.log_path.read_text()}",
                      file=sys.stderr)
                return 2
        finally:
            for proc, wlog, _ in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                wlog.close()
            gw.stop()
            shutil.copy(gw.log_path, outdir / "gateway.log")
    wall = time.monotonic() - started
    results: dict[str, dict[str, Any]] = {}
    for _, _, shard_dir in procs:
        index = shard_dir / "index.json"
        if not index.exists():
            print(f"conformance: wstest wrote no {index}; see {shard_dir / 'wstest.log'}", file=sys.stderr)
            return 2
        results.update(json.loads(index.read_text()).get(AGENT, {}))
    if not results:
        print(f"conformance: no results for agent {AGENT!r} in {outdir}", file=sys.stderr)
        return 2
    if patterns == ["*"] and len(results) < EXPECTED_CASES:
        print(f"conformance: only {len(results)} of the suite's {EXPECTED_CASES} cases ran", file=sys.stderr)
        return 2
    behavior, close, failing, allowed = evaluate(results)
    excluded = ", ".join(EXCLUDED) or "none"
    print(f"conformance: {len(results)} cases in {wall:.1f} s (excluded {excluded}); report {outdir}")
    print(f"  behavior:      {_counts(behavior)}")
    print(f"  behaviorClose: {_counts(close)}")
    for line in allowed:
        print(f"  ALLOWED {line}")
    for case in sorted(set(ALLOW) - {a.split(':', 1)[0] for a in allowed}):
        print(f"  note: allow-listed {case} passed; its entry can go")
    for line in failing:
        print(f"  FAIL {line}")
    if failing:
        print(f"conformance: FAILED, {len(failing)} case(s) outside the allow-list", file=sys.stderr)
        return 1
    print("conformance: OK")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.conformance", description=__doc__.split("\n\n")[0])
    p.add_argument("--install", action="store_true", help="create the Python 2.7 suite environment if missing")
    p.add_argument("--workers", type=int, default=2, help="gateway worker processes (default 2)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds wstest may run (default 300)")
    p.add_argument("--parallel", type=int, default=2, help="wstest processes, each on a shard of the cases "
                   "(default 2)")
    p.add_argument("--cases", default="*",
                   help="comma-separated case patterns (default: every case), e.g. 12.1.*,13.1.*")
    p.add_argument("--outdir", default=str(AUTOBAHN_DIR / "reports"), help="report folder (emptied first)")
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
