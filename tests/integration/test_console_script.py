"""The installed ``shardgate`` console script, run as users run it: from any directory, without
PYTHONPATH, options before or after positionals. The other CLI tests call ``python -m tools.ctl``
or ``python -m gateway``, which never go through ``gateway.cli.main``'s dispatch."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest

from gateway.cli import _OPS_COMMANDS, _TOOL_COMMANDS
from sharding.hashing import owner
from tests.conftest import API_KEY, ROOT, SECRET, Gateway, base_config, scaled, wait_for
from tests.integration.sdk import connect, disconnect_all, subscribe

SHARDGATE = Path(sys.executable).parent / "shardgate"
SUBCOMMANDS = ("serve", "check-config", "checkconfig", "owner", *_TOOL_COMMANDS)

if not SHARDGATE.exists():
    if os.environ.get("CI") == "true":
        raise AssertionError(f"{SHARDGATE} is missing: CI must run `pip install -e .` into this venv")
    pytest.skip(f"no shardgate console script next to {sys.executable} (pip install -e . to test it)",
                allow_module_level=True)

_ENV_DROP = ("SHARDGATE_API_URL", "SHARDGATE_API_KEY", "SHARDGATE_TOKEN_SECRET", "PYTHONPATH")


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in _ENV_DROP}


def sg(*args: str, cwd: Path | None = None, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    """``shardgate ARGS`` from a directory outside the checkout, as a user types it."""
    return subprocess.run([str(SHARDGATE), *args], cwd=cwd or Path("/"), env=_env(), capture_output=True,
                          text=True, timeout=scaled(timeout))


async def asg(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    """:func:`sg` off the event loop, so SDK clients keep running meanwhile."""
    return await asyncio.to_thread(sg, *args, timeout=timeout)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"rc {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def api(gw: Gateway) -> list[str]:
    return ["--api-url", gw.internal_url, "--api-key", API_KEY]


# -- help and usage -------------------------------------------------------------------------------


def test_script_imports_this_checkout() -> None:
    """Otherwise every test below would test another copy of the code."""
    shebang = SHARDGATE.read_text().splitlines()[0]
    assert shebang.startswith("#!"), shebang
    python = shlex.split(shebang[2:])
    where = subprocess.run([*python, "-c", "import gateway; print(gateway.__file__)"], cwd="/", env=_env(),
                           capture_output=True, text=True, timeout=scaled(20))
    assert Path(ok(where).strip()).resolve().is_relative_to(ROOT), \
        f"{SHARDGATE} imports {where.stdout.strip()}, not this checkout ({ROOT}): pip install -e {ROOT}"


def test_bare_shardgate_prints_help_and_exits_2() -> None:
    result = sg(timeout=10)  # it used to start serving: the timeout would fire
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    assert result.stderr.startswith("usage: shardgate")
    for command in SUBCOMMANDS:
        assert re.search(rf"^\s+{re.escape(command)}\b", result.stderr, re.M), command


def test_top_level_help_lists_every_subcommand() -> None:
    out = ok(sg("--help"))
    assert out.startswith("usage: shardgate")
    for command in SUBCOMMANDS:
        assert re.search(rf"^\s+{re.escape(command)}\b", out, re.M), command
    assert ok(sg("--version")).startswith("shardgate ")


def test_the_dispatch_knows_every_ops_command() -> None:
    from tools.ctl import COMMANDS

    assert set(_OPS_COMMANDS) == set(COMMANDS)


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_subcommand_help(command: str) -> None:
    for flag in ("--help", "-h"):
        out = ok(sg(command, flag))
        assert out.startswith(f"usage: shardgate {command}"), out


@pytest.mark.parametrize("scenario", ("fanout", "rooms", "rpc", "connect", "compare", "redis", "scaling"))
def test_bench_scenario_help(scenario: str) -> None:
    out = ok(sg("bench", scenario, "--help"))
    assert out.startswith(f"usage: shardgate bench {scenario}"), out


def test_an_option_without_a_command_is_a_usage_error() -> None:
    result = sg("--port", "0", timeout=10)
    assert result.returncode == 2
    assert "a command comes first, e.g. shardgate serve --port 0" in result.stderr


# -- serve, and the token line it prints ----------------------------------------------------------


class Served:
    """``shardgate serve`` through the script, with the lines it prints at start."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        self.log = cwd / "serve.log"
        self._err = open(self.log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([str(SHARDGATE), "serve", *args], cwd=cwd, env=_env(), text=True,
                                     stdout=subprocess.PIPE, stderr=self._err)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.workers: set[int] = set()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def banner(self, timeout: float = 20) -> str:
        text, deadline = "", time.monotonic() + scaled(timeout)
        while "mint more" not in text:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"serve did not print its banner:\n{text}\n{self.log.read_text()}")
            try:
                text += self.lines.get(timeout=0.2)
            except queue.Empty:
                continue
        self.workers = {c.pid for c in psutil.Process(self.proc.pid).children()}
        return text

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=scaled(15))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in self.workers:  # only the workers this test started
            try:
                proc = psutil.Process(pid)
                if proc.ppid() in (self.proc.pid, 1):
                    proc.kill()
            except psutil.Error:
                pass
        self._err.close()


async def test_serve_prints_a_token_line_that_works(tmp_path: Path) -> None:
    """The README's first run: `shardgate serve` with no config, then the `mint more` line it prints,
    copied verbatim, then stop through the pid file with the options first."""
    pid_file = tmp_path / "serve.pid"
    served = Served(["--port", "0", "--internal-port", "0", "--workers", "2", "--pid-file", str(pid_file)],
                    tmp_path)
    try:
        banner = await asyncio.to_thread(served.banner)
        url = re.search(r"clients\s+(ws://\S+)", banner)
        internal = re.search(r"internal\s+(http://\S+)/health", banner)
        secret = re.search(r"secret\s+(\S+)", banner)
        mint = re.search(r"mint more\s+(shardgate token .*)$", banner, re.M)
        assert url and internal and secret and mint, banner
        argv = shlex.split(mint.group(1))
        assert argv[:3] == ["shardgate", "token", "--secret"], argv
        token = ok(await asg(*argv[1:])).strip()
        assert token.count(".") == 2, token

        channel = f"cs-{uuid.uuid4().hex[:8]}"
        client, _ = await connect(url.group(1), token=token)
        try:
            await subscribe(client, channel)
            out = ok(await asg("presence", "--api-url", internal.group(1), "--api-key", secret.group(1), "--json",
                               channel))
            assert [c["user"] for c in json.loads(out)["presence"].values()] == ["alice"]
        finally:
            await disconnect_all(client)

        out = ok(await asg("stop", "--wait", str(scaled(15)), "--pid-file", str(pid_file)))
        assert f"pid {served.proc.pid}" in out
        assert await asyncio.to_thread(served.proc.wait, scaled(15)) == 0
        assert not pid_file.exists()
    finally:
        served.stop()


# -- the ops commands against a live gateway, options first ---------------------------------------


async def test_ops_commands_with_options_first(gateway: Gateway) -> None:
    gw = gateway
    channel = f"cs-{uuid.uuid4().hex[:8]}"

    # The token: the test config refuses anonymous connects, so connecting proves it was accepted.
    token = ok(await asg("token", "--secret", SECRET, "--user", "alice", "--ttl", "600")).strip()
    client, _ = await connect(gw.url, token=token)
    try:
        await subscribe(client, channel)

        status = json.loads(ok(await asg("status", "--json", *api(gw), "--interval", "0")))
        assert sorted(w["slot"] for w in status["workers"]) == [0, 1]
        assert status["totals"]["connections"] >= 1
        top = ok(await asg("top", "--batch", "--once", *api(gw), "--interval", "0.1"))
        assert "slot" in top.lower(), top
        info = json.loads(ok(await asg("info", "--json", *api(gw))))
        assert len(info["nodes"]) == 2

        ok(await asg("publish", "--json", *api(gw), channel, '{"text": "hi"}'))
        ok(await asg("broadcast", "--data", '{"text": "all"}', *api(gw), channel))
        presence = json.loads(ok(await asg("presence", "--json", *api(gw), channel)))
        assert [c["user"] for c in presence["presence"].values()] == ["alice"]
        history = json.loads(ok(await asg("history", "--limit", "5", "--json", *api(gw), channel)))
        assert [p["data"] for p in history["publications"]] == [{"text": "hi"}, {"text": "all"}]
        channels = json.loads(ok(await asg("channels", "--json", *api(gw), channel)))
        assert channel in json.dumps(channels), channels
        ok(await asg("disconnect", "--json", *api(gw), "alice"))
    finally:
        await disconnect_all(client)

    assert ok(await asg("owner", channel, "--workers", "2")).strip() == str(owner(channel, 2))
    assert ok(await asg("owner", "--workers", "7", channel)).strip() == str(owner(channel, 7))
    assert ok(await asg("check-config", str(gw.config_path))).startswith(f"{gw.config_path}: ok")
    # Centrifugo's spelling: `centrifugo checkconfig --config FILE`.
    assert ok(await asg("checkconfig", "--config", str(gw.config_path))).startswith(f"{gw.config_path}: ok")


async def test_reload_and_stop_with_options_first(gateway_factory: Any, tmp_path: Path) -> None:
    pid_file = tmp_path / "shardgate.pid"
    gw: Gateway = gateway_factory(base_config(shardgate={"pid_file": str(pid_file)}))
    await wait_for(pid_file.exists, what="pid file")
    before = set(gw.worker_pids())

    reloaded = json.loads(ok(await asg("reload", "--pid-file", str(pid_file), "--json")))
    assert reloaded == {"pid": gw.proc.pid, "pid_file": str(pid_file), "signal": "SIGHUP"}

    async def replaced() -> bool:
        result = await asg("info", "--json", *api(gw))
        if result.returncode != 0:
            return False
        pids = {n["pid"] for n in json.loads(result.stdout)["nodes"]}
        return len(pids) == 2 and not pids & before

    await wait_for(replaced, timeout=30, what="workers replaced by the reload", interval=0.2)

    out = ok(await asg("stop", "--wait", str(scaled(15)), "--pid-file", str(pid_file)))
    assert f"sent SIGTERM (graceful stop) to shardgate supervisor pid {gw.proc.pid}" in out
    assert await asyncio.to_thread(gw.proc.wait, scaled(15)) == 0
    assert not pid_file.exists()


def test_serve_refuses_a_compiled_build_that_does_not_match_its_sources(tmp_path: Path) -> None:
    """An extension module in the package that the last `tools.native build` did not write (or with
    no build at all) would shadow its source: `shardgate serve` and `bench` exit 2 and say how to fix
    it, `python -m tools.native status` agrees, and the commands that only talk to a running gateway
    or mint tokens still work (`stop` must reach the old supervisor after a `git pull`). On a copy of
    the packages that the installed script imports through PYTHONPATH, so a stray probe file can
    never block this checkout."""
    import importlib.machinery
    import shutil

    copy = tmp_path / "src"
    for package in ("gateway", "sharding", "tools"):
        shutil.copytree(ROOT / package, copy / package,
                        ignore=shutil.ignore_patterns("node_modules", "__pycache__", "*.so", "_native.json"))
    probe = copy / "gateway" / ("_stale_probe" + importlib.machinery.EXTENSION_SUFFIXES[0])
    probe.write_bytes(b"\x7fELF")
    env = {**_env(), "PYTHONPATH": str(copy)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(SHARDGATE), *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=scaled(30))

    where = subprocess.run([sys.executable, "-c", "import gateway; print(gateway.__file__)"], cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=scaled(20))
    assert Path(ok(where).strip()).is_relative_to(copy), where.stdout
    for command in (["serve", "--port", "0", "--internal-port", "0", "--workers", "1"],
                    ["bench", "fanout", "--duration", "1"]):
        refused = run(*command)
        assert refused.returncode == 2, refused
        assert f"compiled build out of date: extension modules (gateway/{probe.name}) without a readable" \
            in refused.stderr, refused.stderr
        assert "tools.native clean" in refused.stderr, refused.stderr
    status = subprocess.run([sys.executable, "-m", "tools.native", "status"], cwd=copy, env=env,
                            capture_output=True, text=True, timeout=scaled(30))
    assert status.returncode == 1 and status.stdout.startswith("STALE compiled build: "), status
    assert ok(run("--help")).startswith("usage: shardgate")
    assert ok(run("--version")).strip()
    assert ok(run("token", "--secret", "s", "--user", "u")).count(".") == 2  # a JWT
    stopped = run("stop", "--pid-file", str(tmp_path / "none.pid"))
    assert "compiled build out of date" not in stopped.stderr and "none.pid" in stopped.stderr, stopped
    cleaned = subprocess.run([sys.executable, "-m", "tools.native", "clean"], cwd=copy, env=env,
                             capture_output=True, text=True, timeout=scaled(30))
    assert ok(cleaned).strip() == f"removed gateway/{probe.name}" and not probe.exists()
