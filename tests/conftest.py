"""Shared test helpers: one timeout scale factor, polling with deadlines, and a real
gateway started as a subprocess (``python -m gateway serve``) on 127.0.0.1 with
ephemeral ports."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

# Every timeout in the suite is multiplied by this (slow CI machines: SHARDGATE_TEST_SCALE=3).
SCALE = float(os.environ.get("SHARDGATE_TEST_SCALE", "1"))

ROOT = Path(__file__).resolve().parent.parent

SECRET = "shardgate-test-secret-0123456789abcdef"
API_KEY = "shardgate-test-api-key"


def pytest_sessionstart(session: pytest.Session) -> None:
    """A compiled build older than its sources would test the old code: refuse, say how to fix."""
    from gateway import native
    stale = native.problems()
    if stale:
        pytest.exit("compiled build out of date: " + "; ".join(stale)
                    + " (python -m tools.native build, or clean)", returncode=2)


def scaled(seconds: float) -> float:
    return seconds * SCALE


async def wait_for(predicate: Callable[[], bool | Awaitable[bool]], timeout: float = 5.0,
                   what: str = "condition", interval: float = 0.01) -> None:
    """Poll ``predicate`` until it is true; fail after ``timeout`` (scaled) seconds."""
    deadline = time.monotonic() + scaled(timeout)
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(interval)


def base_config(**overrides: Any) -> dict[str, Any]:
    """A test config in Centrifugo v6 key names; ``overrides`` merge into top-level tables."""
    cfg: dict[str, Any] = {
        "client": {
            "token": {"hmac_secret_key": SECRET},
            "allow_anonymous_connect_without_token": False,
        },
        "http_api": {"key": API_KEY},
        "channel": {
            "without_namespace": {
                "presence": True,
                "join_leave": True,
                "force_push_join_leave": True,
                "history_size": 100,
                "history_ttl": "300s",
                "force_recovery": True,
                "allow_subscribe_for_client": True,
                "allow_publish_for_client": True,
                "allow_history_for_subscriber": True,
                "allow_presence_for_subscriber": True,
            },
            "namespaces": [
                {"name": "locked"},
                {"name": "plain", "allow_subscribe_for_client": True, "allow_publish_for_client": True},
            ],
        },
        "shardgate": {"graceful_timeout": "5s", "bus_request_timeout": "2s", "rpc_echo": True},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


class Gateway:
    """A running ``python -m gateway serve`` with its URLs and pids."""

    def __init__(self, workdir: Path, config: dict[str, Any] | None, workers: int,
                 args: tuple[str, ...] = ()) -> None:
        """``config=None`` serves the embedded development default (no ``--config``); its random
        secret (also the API key) and ready-made token are read from the banner."""
        self.workdir = workdir
        self.config_path = workdir / "config.json"
        config_args: tuple[str, ...] = ()
        if config is not None:
            self.config_path.write_text(json.dumps(config))
            config_args = ("--config", str(self.config_path))
        self.dev = config is None
        self.dev_secret = ""
        self.dev_token = ""
        self.banner = ""
        self.log_path = workdir / "gateway.log"
        self.workers = workers
        self.url = ""
        self.internal_url = ""
        self._lines: queue.Queue[str] = queue.Queue()
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", *config_args,
             "--port", "0", "--internal-port", "0", "--workers", str(workers), *args],
            stdout=subprocess.PIPE, stderr=self._log, text=True, cwd=workdir,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)})
        threading.Thread(target=self._read_stdout, daemon=True).start()
        self._known_pids: set[int] = set()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + scaled(timeout)
        while not (self.url and self.internal_url and (self.dev_token or not self.dev)):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.proc.poll() is not None:
                raise AssertionError(f"gateway did not start; log:\n{self.log()}")
            try:
                line = self._lines.get(timeout=min(remaining, 0.2))
            except queue.Empty:
                continue
            self.banner += line
            if m := re.search(r"^\s+secret\s+(\S+)", line):
                self.dev_secret = m.group(1)
            if m := re.search(r"^\s+token\s+(\S+)", line):
                self.dev_token = m.group(1)
            if m := re.search(r"clients\s+(wss?://\S+)", line):
                self.url = m.group(1)
            if m := re.search(r"internal\s+(https?://\S+)/health", line):
                self.internal_url = m.group(1)
        self._known_pids = set(self.worker_pids())

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def worker_pids(self) -> list[int]:
        try:
            return [c.pid for c in psutil.Process(self.proc.pid).children()]
        except psutil.NoSuchProcess:
            return []

    def slot_pids(self) -> dict[int, int]:
        """slot -> pid of its current worker, from the supervisor's log (latest wins): a
        started worker, or a reload successor that took over."""
        slots: dict[int, int] = {}
        pattern = r"slot (\d+): started worker pid (\d+)|reload: slot (\d+): worker (\d+) took over"
        for m in re.finditer(pattern, self.log()):
            if m.group(1):
                slots[int(m.group(1))] = int(m.group(2))
            else:
                slots[int(m.group(3))] = int(m.group(4))
        return slots

    def health(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.internal_url + "/health", timeout=scaled(2)) as resp:
            data: dict[str, Any] = json.loads(resp.read())
            return data

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        pids = set(self.worker_pids()) | self._known_pids
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=scaled(timeout))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # Never leave a worker behind: kill only the pids this gateway started.
        for pid in pids:
            try:
                proc = psutil.Process(pid)
                if proc.ppid() in (self.proc.pid, 1) and "gateway" in " ".join(proc.cmdline()):
                    proc.kill()
            except psutil.Error:
                pass
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Iterator[Callable[..., Gateway]]:
    started: list[Gateway] = []

    def start(config: dict[str, Any] | None = None, workers: int = 2, args: tuple[str, ...] = ()) -> Gateway:
        """``args`` are extra ``serve`` flags; they win over the default ``--port 0 --internal-port 0``."""
        workdir = tmp_path / f"gw{len(started)}"
        workdir.mkdir()
        gw = Gateway(workdir, config if config is not None else base_config(), workers, args)
        started.append(gw)
        gw.wait_ready()
        return gw

    yield start
    for gw in started:
        gw.stop()


@pytest.fixture
def gateway(gateway_factory: Callable[..., Gateway]) -> Gateway:
    """A 2-worker gateway with the default test config."""
    return gateway_factory()
