"""Servers under test: find their pids, read their CPU and memory, and start shardgate or a peer
as a child process (for ``compare`` and the smoke test). Every process we start is stopped by its
own pid (and its own children), never by name."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil

PEERS_DIR = Path(__file__).resolve().parent / "peers"
REPO_ROOT = Path(__file__).resolve().parents[2]


def check_target(url: str, allow_remote: bool) -> None:
    """Refuse anything but loopback (127.0.0.0/8, ::1) unless ``allow_remote``."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss", "http", "https"):
        raise ValueError(f"--url must be ws:// or wss://, got {url!r}")
    host = parts.hostname or ""
    if allow_remote:
        return
    try:
        addrs = {info[4][0] for info in socket.getaddrinfo(host, parts.port or 80, proto=socket.IPPROTO_TCP)}
    except socket.gaierror as exc:
        raise ValueError(f"cannot resolve {host!r}: {exc}") from exc
    for addr in addrs:
        if not ipaddress.ip_address(addr.split("%")[0]).is_loopback:
            raise ValueError(f"{host} resolves to {addr}, not loopback: refusing to load a remote host "
                             "(pass --allow-remote if you mean it)")


def pids_listening_on(url: str) -> list[int]:
    """Pids with a LISTEN socket on the URL's port (SO_REUSEPORT workers each have one)."""
    port = urlsplit(url).port
    if port is None:
        return []
    pids: set[int] = set()
    try:
        for c in psutil.net_connections(kind="tcp"):
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid:
                pids.add(c.pid)
    except psutil.Error:
        return []
    return sorted(pids)


class Meter:
    """CPU seconds and RSS of a set of pids (vanished pids keep their last reading)."""

    def __init__(self, pids: list[int]) -> None:
        self.procs: dict[int, psutil.Process] = {}
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                self.procs[pid] = psutil.Process(pid)
        self._last_cpu: dict[int, float] = {}

    @property
    def pids(self) -> list[int]:
        return sorted(self.procs)

    def cpu(self) -> float:
        total = 0.0
        for pid, p in self.procs.items():
            try:
                t = p.cpu_times()
                self._last_cpu[pid] = t.user + t.system
            except psutil.Error:
                pass
            total += self._last_cpu.get(pid, 0.0)
        return total

    def rss(self) -> int:
        total = 0
        for p in self.procs.values():
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return total


class Server:
    """A server process we started; ``url`` and ``pids`` (the processes that serve clients)."""

    def __init__(self, name: str, argv: list[str], ready_re: str, url_fmt: str, cwd: Path | None = None,
                 env: dict[str, str] | None = None, tmpdir: Path | None = None) -> None:
        self.name = name
        self.url = ""
        self.tmpdir = tmpdir
        self._lines: queue.Queue[str] = queue.Queue()
        self._tail: list[str] = []
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     cwd=cwd, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                                     start_new_session=True)
        self._ready_re = re.compile(ready_re)
        self._url_fmt = url_fmt
        threading.Thread(target=self._read, daemon=True).start()
        self._known: set[int] = {self.proc.pid}

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
            self._tail = ([*self._tail, line.rstrip()])[-20:]

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.url:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} did not start: " + " | ".join(self._tail[-5:]))
            try:
                line = self._lines.get(timeout=min(left, 0.2))
            except queue.Empty:
                continue
            m = self._ready_re.search(line)
            if m:
                self.url = self._url_fmt.format(*m.groups())
        self._known |= set(self.children())

    def children(self) -> list[int]:
        try:
            return [c.pid for c in psutil.Process(self.proc.pid).children(recursive=True)]
        except psutil.Error:
            return []

    @property
    def pids(self) -> list[int]:
        kids = self.children()
        return kids or [self.proc.pid]

    def ready_or_stopped(self, timeout: float) -> Server:
        """Wait until it serves; if it does not, stop it (by pid) before re-raising."""
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        pids = self._known | set(self.children())
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in pids - {self.proc.pid}:
            with contextlib.suppress(psutil.Error):
                p = psutil.Process(pid)
                if p.ppid() in (self.proc.pid, 1):
                    p.kill()
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)


def shardgate_config(secret: str, workers: int) -> dict[str, Any]:
    """A permissive config for benchmarks: no history/presence, echo rpc on, publish for clients, and no
    per-connection command rate limit (one max-rate publisher sends far more than 1000 commands/s)."""
    return {
        "client": {"token": {"hmac_secret_key": secret}, "allow_anonymous_connect_without_token": False},
        "channel": {"without_namespace": {"allow_subscribe_for_client": True, "allow_publish_for_client": True}},
        "shardgate": {"workers": workers, "rpc_echo": True, "graceful_timeout": "2s", "log_level": "warning",
                      "command_rate": 0},
    }


def shardgate_socketio_config(secret: str, workers: int) -> dict[str, Any]:
    """:func:`shardgate_config` plus the Socket.IO endpoint speaking the node socket.io peer's
    dialect (tools/bench/sio_events.py); its clients connect anonymously (``40``, as to the peer)."""
    cfg = shardgate_config(secret, workers)
    cfg["client"]["allow_anonymous_connect_without_token"] = True
    cfg["channel"]["without_namespace"]["allow_subscribe_for_anonymous"] = True
    cfg["shardgate"]["socketio"] = {"event_handlers": {"p": "tools.bench.sio_events:publish",
                                                       "e": "tools.bench.sio_events:echo"}}
    return cfg


def start_shardgate(secret: str, workers: int, config: dict[str, Any] | None = None,
                    timeout: float = 30.0) -> Server:
    tmp = Path(tempfile.mkdtemp(prefix="shardgate-bench-"))
    cfg_path = tmp / "config.json"
    cfg_path.write_text(json.dumps(config or shardgate_config(secret, workers)))
    env = {"PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    server = Server("shardgate", [sys.executable, "-m", "gateway", "serve", "--config", str(cfg_path),
                                  "--port", "0", "--internal-port", "0", "--workers", str(workers)],
                    r"clients\s+(ws://\S+)", "{0}", cwd=tmp, env=env, tmpdir=tmp)
    return server.ready_or_stopped(timeout)


# name -> (proto, argv builder, description)
PY_PEERS = {
    "picows": ("raw", "picows_peer.py", "raw picows, one send() per frame per subscriber"),
    "picows-centrifugo": ("centrifugo", "centrifugo_relay_peer.py",
                          "minimal picows relay speaking the Centrifugo JSON protocol (push encoded once)"),
    "websockets": ("raw", "websockets_peer.py", "Python websockets (broadcast())"),
    "aiohttp": ("raw", "aiohttp_peer.py", "aiohttp WebSocketResponse, compress off"),
}
NODE_PEERS = {
    "node-ws": ("raw", "ws_peer.mjs", "ws", "node ws, send() per subscriber"),
    "node-ws-centrifugo": ("centrifugo", "ws_centrifugo_peer.mjs", "ws",
                           "node ws speaking the Centrifugo JSON protocol (JSON.parse per command)"),
    "socketio": ("socketio", "socketio_peer.mjs", "socket.io", "node socket.io, room broadcast"),
    "uws": ("raw", "uws_peer.mjs", "uwebsockets", "uWS.js (npm uwebsockets), pub/sub publish()"),
}
PEER_ORDER = ["picows", "picows-centrifugo", "websockets", "aiohttp", "node-ws", "node-ws-centrifugo",
              "socketio", "uws"]
READY_RE = r"PEER READY port=(\d+)"


def node_available() -> str | None:
    """None when node peers can run, else the reason they are skipped."""
    if shutil.which("node") is None:
        return "node not found"
    if not (PEERS_DIR / "node_modules").is_dir():
        return f"node_modules missing: run `npm ci --prefix {PEERS_DIR}`"
    return None


def peer_proto(name: str) -> str:
    if name in PY_PEERS:
        return PY_PEERS[name][0]
    return NODE_PEERS[name][0]


def peer_note(name: str) -> str:
    if name in PY_PEERS:
        return PY_PEERS[name][2]
    return NODE_PEERS[name][3]


def start_peer(name: str, timeout: float = 20.0) -> Server:
    """Start a peer on 127.0.0.1 with an ephemeral port; RuntimeError if it cannot run here."""
    if name in PY_PEERS:
        argv = [sys.executable, str(PEERS_DIR / PY_PEERS[name][1]), "--port", "0"]
    elif name in NODE_PEERS:
        why = node_available()
        if why:
            raise RuntimeError(why)
        pkg = NODE_PEERS[name][2]
        if not (PEERS_DIR / "node_modules" / pkg).is_dir():
            raise RuntimeError(f"npm package {pkg} not installed")
        argv = ["node", str(PEERS_DIR / NODE_PEERS[name][1]), "--port", "0"]
    else:
        raise ValueError(f"unknown peer {name!r}; known: {', '.join(PEER_ORDER)}")
    server = Server(name, argv, READY_RE, "ws://127.0.0.1:{0}/", cwd=PEERS_DIR)
    return server.ready_or_stopped(timeout)
