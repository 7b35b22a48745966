"""The ops CLI (``tools.ctl``) run as a subprocess against a live 2-worker gateway."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import select
import signal
import struct
import subprocess
import sys
import termios
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import API_KEY, ROOT, SECRET, Gateway, base_config, scaled, wait_for
from tests.integration.sdk import connect, disconnect_all, subscribe
from tools.ctl_status import Sample
from tools.top import frame_lines

CTL = [sys.executable, "-m", "tools.ctl"]
_ENV_DROP = ("SHARDGATE_API_URL", "SHARDGATE_API_KEY")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _ENV_DROP}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def run_ctl(*args: str, env: dict[str, str] | None = None, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CTL, *args], cwd=ROOT, env=env or _env(), capture_output=True, text=True,
                          timeout=scaled(timeout))


async def ctl(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run the CLI off the event loop, so SDK clients keep running meanwhile."""
    return await asyncio.to_thread(run_ctl, *args, **kwargs)


def api_args(gw: Gateway, key: str = API_KEY) -> list[str]:
    return ["--api-url", gw.internal_url, "--api-key", key]


async def ctl_json(gw: Gateway, *args: str) -> Any:
    result = await ctl(*args, *api_args(gw), "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def channel_name(prefix: str = "ctl") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# -- status ---------------------------------------------------------------------------------------


async def test_status_json_has_both_workers_and_totals_add_up(gateway: Gateway) -> None:
    client, _ = await connect(gateway.url, user="alice")
    try:
        await subscribe(client, channel_name())
        data = await ctl_json(gateway, "status", "--interval", str(scaled(0.3)))
        workers, totals = data["workers"], data["totals"]
        assert sorted(w["slot"] for w in workers) == [0, 1]
        assert {w["pid"] for w in workers} == set(gateway.worker_pids())
        assert totals["workers"] == 2
        for key in ("connections", "subscriptions", "channels", "rss"):
            assert totals[key] == sum(w[key] for w in workers), key
        assert totals["connections"] == 1 and totals["subscriptions"] == 1
        for key in ("msgs_in_per_s", "msgs_out_per_s", "cpu_percent"):
            assert all(isinstance(w[key], float) and w[key] >= 0 for w in workers), key
            assert totals[key] == pytest.approx(sum(w[key] for w in workers))
        assert data["interval"] > 0
    finally:
        await disconnect_all(client)


async def test_status_table_for_people(gateway: Gateway) -> None:
    result = await ctl("status", *api_args(gateway), "--interval", "0")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["SLOT", "PID", "UPTIME"]
    assert "MSG/S IN" in lines[0] and "RSS" in lines[0]
    assert [line.split()[0] for line in lines[1:3]] == ["0", "1"]
    assert lines[-1].startswith("total")
    assert all(len(line) <= 80 for line in lines)


async def test_settings_from_env_and_config(gateway: Gateway, tmp_path: Path) -> None:
    env = _env(SHARDGATE_API_URL=gateway.internal_url + "/api", SHARDGATE_API_KEY=API_KEY)
    result = await ctl("info", "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert sorted(n["slot"] for n in json.loads(result.stdout)["nodes"]) == [0, 1]

    port = int(gateway.internal_url.rsplit(":", 1)[1])
    config = tmp_path / "ops.toml"
    config.write_text(f'[http_server]\naddress = "127.0.0.1"\ninternal_port = {port}\n'
                      f'[http_api]\nkey = "{API_KEY}"\n[client.token]\nhmac_secret_key = "{SECRET}"\n')
    result = await ctl("info", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].split()[:2] == ["SLOT", "NAME"]
    # A flag beats the config: the wrong key from the command line is used, and refused.
    assert_one_line_error(await ctl("info", "--config", str(config), "--api-key", "nope"), "401")


# -- thin wrappers --------------------------------------------------------------------------------


async def test_publish_then_history_and_broadcast(gateway: Gateway) -> None:
    channel = channel_name()
    data = await ctl_json(gateway, "publish", channel, '{"text": "hello", "n": 1}')
    assert data["offset"] == 1 and data["epoch"]
    result = await ctl("publish", channel, '{"n": 2}', *api_args(gateway))
    assert result.returncode == 0 and "offset 2" in result.stdout, result.stdout + result.stderr

    history = await ctl_json(gateway, "history", channel, "--limit", "10")
    assert [p["data"] for p in history["publications"]] == [{"text": "hello", "n": 1}, {"n": 2}]
    assert history["offset"] == 2 and history["epoch"] == data["epoch"]
    newest = await ctl_json(gateway, "history", channel, "--limit", "1", "--reverse")
    assert [p["data"] for p in newest["publications"]] == [{"n": 2}]
    table = await ctl("history", channel, *api_args(gateway))
    assert table.returncode == 0 and '{"text":"hello","n":1}' in table.stdout, table.stdout

    others = [channel_name(), channel_name()]
    reply = await ctl_json(gateway, "broadcast", *others, "--data", '"all"')
    assert len(reply["responses"]) == 2 and all("result" in r for r in reply["responses"])
    for other in others:
        history = await ctl_json(gateway, "history", other)
        assert [p["data"] for p in history["publications"]] == ["all"]

    bad = await ctl("publish", channel, "{not json", *api_args(gateway))
    assert bad.returncode == 2 and "not valid JSON" in bad.stderr
    unknown = await ctl("publish", "nosuchns:chan", "1", *api_args(gateway))
    assert_one_line_error(unknown, "API error 102")


async def test_presence_channels_and_disconnect(gateway: Gateway) -> None:
    channel = channel_name("room")
    alice, alice_events = await connect(gateway.url, user="alice")
    bob, _ = await connect(gateway.url, user="bob")
    try:
        await subscribe(alice, channel)
        await subscribe(bob, channel)
        presence = (await ctl_json(gateway, "presence", channel))["presence"]
        assert {info["user"] for info in presence.values()} == {"alice", "bob"}
        assert alice.client_id in presence
        table = await ctl("presence", channel, *api_args(gateway))
        assert table.returncode == 0 and "alice" in table.stdout and "2 clients, 2 users" in table.stdout

        channels = (await ctl_json(gateway, "channels"))["channels"]
        assert channels[channel] == {"num_clients": 2}
        filtered = (await ctl_json(gateway, "channels", "room-*"))["channels"]
        assert channel in filtered and all(name.startswith("room-") for name in filtered)
        assert (await ctl_json(gateway, "channels", "nomatch-*"))["channels"] == {}

        # 4500..4999: a terminal code, so the SDK stays closed instead of reconnecting.
        result = await ctl("disconnect", "alice", "--code", "4500", "--reason", "bye", *api_args(gateway))
        assert result.returncode == 0 and "disconnected user alice" in result.stdout, result.stderr
        await wait_for(lambda: bool(alice_events.disconnected), what="alice disconnected")
        assert (alice_events.disconnected[-1].code, alice_events.disconnected[-1].reason) == (4500, "bye")

        async def only_bob_left() -> bool:
            data = await ctl_json(gateway, "presence", channel)
            return {info["user"] for info in data["presence"].values()} == {"bob"}

        await wait_for(only_bob_left, what="alice gone from presence", interval=0.1)
    finally:
        await disconnect_all(alice, bob)


# -- failures are one line ------------------------------------------------------------------------


async def test_wrong_key_is_one_line_and_nonzero(gateway: Gateway) -> None:
    for command in (["status"], ["info"], ["channels"], ["publish", "x", "1"], ["top", "--once"]):
        result = await ctl(*command, *api_args(gateway, key="wrong-key"))
        assert_one_line_error(result, "API key", "401")


async def test_server_down_is_one_line_and_nonzero() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for command in (["status"], ["history", "x"], ["top", "--once"]):
        result = await ctl(*command, "--api-url", f"http://127.0.0.1:{port}", "--api-key", API_KEY)
        assert_one_line_error(result, "cannot reach", str(port))


# -- top under a pseudo-terminal ------------------------------------------------------------------


def _run_in_pty(args: list[str], keys: bytes = b"", keys_after: bytes = b"", rows: int = 24, cols: int = 80,
                timeout: float = 20) -> tuple[int, str]:
    """Run ``args`` with a pty as its controlling terminal; once ``keys_after`` shows up in its output,
    type ``keys``. Returns (exit status, everything it wrote)."""
    env = _env(TERM="xterm", LINES=str(rows), COLUMNS=str(cols))
    winsize = struct.pack("HHHH", rows, cols, 0, 0)
    pid, master = os.forkpty()
    if pid == 0:  # child: size the terminal, then become the CLI
        try:
            fcntl.ioctl(0, termios.TIOCSWINSZ, winsize)
            os.chdir(ROOT)
            os.execve(args[0], args, env)
        finally:
            os._exit(127)
    output = b""
    sent = not keys
    deadline = time.monotonic() + scaled(timeout)
    status: int | None = None
    try:
        while status is None:
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise AssertionError(f"top did not exit; output:\n{output.decode(errors='replace')}")
            ready, _, _ = select.select([master], [], [], 0.05)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    chunk = b""
                output += chunk
            if not sent and keys_after in output:
                os.write(master, keys)
                sent = True
            done, raw = os.waitpid(pid, os.WNOHANG)
            if done:
                status = os.waitstatus_to_exitcode(raw)
        with contextlib.suppress(OSError):
            while select.select([master], [], [], 0.05)[0]:
                chunk = os.read(master, 65536)
                if not chunk:
                    break
                output += chunk
    finally:
        os.close(master)
    return status, output.decode(errors="replace")


def _skip_without_curses(output: str) -> None:
    if "cannot run the terminal UI" in output:
        pytest.skip(f"curses cannot start here: {output.strip()[-200:]}")


async def test_top_in_a_pty(gateway: Gateway) -> None:
    args = [*CTL, "top", *api_args(gateway), "--interval", str(scaled(0.2))]
    status, output = await asyncio.to_thread(_run_in_pty, [*args, "--iterations", "2"])
    _skip_without_curses(output)
    assert status == 0, output
    # The last frame stays printed after curses ends: header, both workers, totals, all within 80 columns.
    assert "shardgate top" in output, output
    frame = ("shardgate top" + output.rsplit("shardgate top", 1)[1]).replace("\r\n", "\n").rstrip("\n").split("\n")
    assert "\x1b" not in "".join(frame), frame
    assert any(line.startswith("SLOT") for line in frame), frame
    assert any(line.startswith("total") for line in frame), frame
    assert len(frame) <= 24 and all(len(line) <= 80 for line in frame), frame

    # q quits a live top; so does Ctrl-C.
    for key in (b"q", b"\x03"):
        status, output = await asyncio.to_thread(_run_in_pty, args, keys=key, keys_after=b"SLOT")
        assert status == 0, (key, output)


def test_top_frame_fits_small_terminals() -> None:
    node = {"slot": 0, "pid": 4242, "uptime": 3725, "num_clients": 12345, "num_users": 7, "num_subs": 99999,
            "num_channels": 123, "process": {"cpu": 1.5, "rss": 123456789},
            "metrics": {"items": {"messages_received": 10.0, "messages_sent": 20.0, "cpu_seconds": 1.0}}}
    later = {**node, "metrics": {"items": {"messages_received": 1010.0, "messages_sent": 50020.0,
                                           "cpu_seconds": 1.5}}}
    nodes = [{**node, "slot": i, "pid": 100 + i} for i in range(32)]
    nodes_later = [{**later, "slot": i, "pid": 100 + i} for i in range(32)]
    before, after = Sample(0.0, nodes), Sample(1.0, nodes_later)
    for width, height in ((80, 24), (60, 20), (40, 10), (20, 5)):
        lines = frame_lines("http://127.0.0.1:8001", after, before, 1.0, width, height)
        assert len(lines) <= height and all(len(line) <= width for line in lines), (width, height, lines)
        assert any(line.startswith("total") for line in lines), (width, height, lines)
    lines = frame_lines("http://127.0.0.1:8001", after, before, 1.0, 80, 24)
    assert "SLOT" in lines[3] and "MSG/S OUT" in lines[3] and "RSS" in lines[3]
    assert any("more workers" in line for line in lines)
    assert "1000.0" in " ".join(lines) or "1000" in " ".join(lines)  # msgs/s in per worker


# -- reload / stop through the pid file -----------------------------------------------------------


async def test_reload_and_stop_through_the_pid_file(gateway_factory: Any, tmp_path: Path) -> None:
    pid_file = tmp_path / "shardgate.pid"
    gw: Gateway = gateway_factory(base_config(shardgate={"pid_file": str(pid_file)}))
    await wait_for(pid_file.exists, what="pid file")
    assert int(pid_file.read_text()) == gw.proc.pid
    workers = gw.worker_pids()

    result = await ctl("reload", "--pid-file", str(pid_file), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"pid": gw.proc.pid, "pid_file": str(pid_file), "signal": "SIGHUP"}

    async def workers_replaced() -> bool:  # SIGHUP is a rolling restart: every slot gets a new worker
        result = await ctl("info", "--json", *api_args(gw))
        if result.returncode != 0:
            return False
        pids = {n["pid"] for n in json.loads(result.stdout)["nodes"]}
        return len(pids) == 2 and not pids & set(workers)

    await wait_for(workers_replaced, timeout=30, what="workers replaced by the reload", interval=0.2)
    workers += gw.worker_pids()

    # --config FILE names the pid file through shardgate.pid_file.
    result = await ctl("stop", "--config", str(gw.config_path), "--wait", str(scaled(15)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"sent SIGTERM (graceful stop) to shardgate supervisor pid {gw.proc.pid}" in result.stdout
    assert await asyncio.to_thread(gw.proc.wait, scaled(15)) == 0
    await wait_for(lambda: not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                                   for p in workers), timeout=10, what="workers gone")

    # The supervisor removed its pid file; stopping again is a clear one-line error.
    assert not pid_file.exists()
    assert_one_line_error(await ctl("stop", "--pid-file", str(pid_file)), "does not exist")
    assert_one_line_error(await ctl("reload"), "--pid-file")


async def test_stale_pid_files_are_refused(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    stale = tmp_path / "stale.pid"
    stale.write_text(f"{gone.pid}\n")
    assert_one_line_error(await ctl("reload", "--pid-file", str(stale)), "not running")

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale.write_text(f"{other.pid}\n")
        assert_one_line_error(await ctl("stop", "--pid-file", str(stale)), "not a shardgate")
        assert other.poll() is None
        garbage = tmp_path / "garbage.pid"
        garbage.write_text("hello")
        assert_one_line_error(await ctl("stop", "--pid-file", str(garbage)), "does not hold a pid")
    finally:
        other.kill()
        other.wait()


def test_help_everywhere_has_an_example() -> None:
    from tools.ctl import COMMANDS

    top = run_ctl("--help")
    assert top.returncode == 0 and all(command in top.stdout for command in COMMANDS), top.stdout + top.stderr
    for command in COMMANDS:
        result = run_ctl(command, "--help")
        assert result.returncode == 0, (command, result.stderr)
        assert f"shardgate {command}" in result.stdout.split("examples:", 1)[1], command
