"""Supervisor behaviour systemd relies on: the sd_notify sequence (with a fake
$NOTIFY_SOCKET), watchdog pings, killing a worker whose loop is stuck, and reload."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, Gateway, base_config, scaled, wait_for


def _recv_all(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


async def test_notify_sequence_and_watchdog(tmp_path: Path) -> None:
    notify_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(notify_path)
    sock.setblocking(False)
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(base_config(shardgate={"graceful_timeout": "2s", "drain_window": "0s"})))
    env = {**os.environ, "NOTIFY_SOCKET": notify_path, "WATCHDOG_USEC": "1000000", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(cfg), "--port", "0",
                             "--internal-port", "0", "--workers", "2"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    messages: list[str] = []
    try:
        def seen(text: str) -> bool:
            messages.extend(_recv_all(sock))
            return any(text in m for m in messages)

        await wait_for(lambda: seen("READY=1"), timeout=20, what="READY=1")
        await wait_for(lambda: seen("WATCHDOG=1") and sum(m.startswith("WATCHDOG=1") for m in messages) >= 2,
                       timeout=10, what="two WATCHDOG=1 pings")
        proc.send_signal(signal.SIGHUP)
        await wait_for(lambda: seen("RELOADING=1"), timeout=5, what="RELOADING=1")
        start = len(messages)
        await wait_for(lambda: seen("RELOADING=1") and any("READY=1" in m for m in messages[start:]),
                       timeout=30, what="READY=1 after the reload")
        proc.send_signal(signal.SIGTERM)
        await wait_for(lambda: seen("STOPPING=1"), timeout=10, what="STOPPING=1")
        assert proc.wait(timeout=scaled(20)) == 0
        states = [m.split("\n")[0] for m in messages if not m.startswith("WATCHDOG")]
        order = [s for s in states if s in ("READY=1", "RELOADING=1", "STOPPING=1")]
        assert order == ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"], order
        assert sum(m.startswith("WATCHDOG=1") for m in messages) >= 2
        assert any("MONOTONIC_USEC=" in m for m in messages if m.startswith("RELOADING=1"))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()


async def test_stuck_worker_is_killed_and_replaced(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    gw: Gateway = gateway_factory(base_config(shardgate={"heartbeat_timeout": "1500ms"}))
    stuck = gw.slot_pids()[1]
    os.kill(stuck, signal.SIGSTOP)
    try:
        await wait_for(lambda: gw.slot_pids()[1] != stuck, timeout=15, what="stuck worker replaced")
        assert "missed heartbeats" in gw.log()
        # Its SIGKILL exit came from us, not from the kernel: no "OOM killer?" guess.
        exit_line = next(line for line in gw.log().splitlines() if f"worker {stuck} killed" in line)
        assert "OOM" not in exit_line and "missed heartbeats" in exit_line, exit_line
        await wait_for(lambda: f"worker {gw.slot_pids()[1]} ready" in gw.log(), timeout=15, what="replacement ready")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(stuck, signal.SIGCONT)


async def test_reload_replaces_every_worker_and_refuses_bad_config(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    gw: Gateway = gateway_factory(base_config(shardgate={"graceful_timeout": "2s", "drain_window": "0s"}))
    before = gw.slot_pids()
    gw.proc.send_signal(signal.SIGHUP)
    await wait_for(lambda: "reload complete" in gw.log(), timeout=30, what="reload complete")
    after = gw.slot_pids()
    assert set(after) == {0, 1} and all(after[s] != before[s] for s in (0, 1))
    # A config that no longer validates is refused and the workers stay.
    gw.config_path.write_text('{"client": {"ping_intervall": "1s"}}')
    gw.proc.send_signal(signal.SIGHUP)
    await wait_for(lambda: "reload refused" in gw.log(), timeout=10, what="bad config refused")
    assert "client.ping_intervall" in gw.log()
    time.sleep(0)
    assert gw.slot_pids() == after and gw.proc.poll() is None


@pytest.mark.parametrize("sig", [signal.SIGTERM])
def test_signal_constant(sig: int) -> None:
    assert sig == signal.SIGTERM
