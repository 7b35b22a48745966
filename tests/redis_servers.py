"""Real ``redis-server`` processes for the Redis store tests.

Each server listens on a free 127.0.0.1 port with persistence off, runs in its own tmp dir,
and can be killed and started again on the same port (to test reconnects). A 3-master
Redis Cluster is made with ``redis-cli --cluster create``. Only processes started here are
ever killed, by their own Popen handle.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["RedisCluster", "RedisSentinel", "RedisServer", "free_port", "redis_available"]


def redis_available() -> bool:
    return shutil.which("redis-server") is not None and shutil.which("redis-cli") is not None


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port(cluster: bool = False) -> int:
    """A free port; for a cluster node one <= 55535 whose bus port (+10000) is free too."""
    for _ in range(1000):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if not cluster or (port <= 55535 and _bindable(port + 10000)):
            return port
    raise RuntimeError("no free port for a redis cluster node")


def _cli(port: int, *args: str, timeout: float = 10.0) -> str:
    return subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args], capture_output=True,
                          text=True, timeout=timeout, check=False).stdout


class RedisServer:
    """One ``redis-server`` on 127.0.0.1:``port``."""

    def __init__(self, workdir: Path, port: int | None = None, *extra: str) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), "--logfile", str(self.workdir / "redis.log"), *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while _cli(self.port, "PING").strip() != "PONG":
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {self.port} did not start: "
                                   f"{(self.workdir / 'redis.log').read_text(errors='replace')[-2000:]}")
            time.sleep(0.02)
        return self

    def kill(self) -> None:
        """SIGKILL, like a crash: no goodbye on the open connections."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def cli(self, *args: str) -> str:
        return _cli(self.port, *args)


class RedisCluster:
    """Three masters, no replicas, slots assigned by ``redis-cli --cluster create``."""

    def __init__(self, workdir: Path, masters: int = 3) -> None:
        self.servers = [
            RedisServer(workdir / f"node{i}", free_port(cluster=True), "--cluster-enabled", "yes",
                        "--cluster-config-file", str(workdir / f"node{i}" / "nodes.conf"),
                        "--cluster-node-timeout", "2000")
            for i in range(masters)
        ]

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{s.port}" for s in self.servers]

    def start(self, timeout: float = 20.0) -> RedisCluster:
        try:
            return self._start(timeout)
        except BaseException:
            self.kill()  # never leave half a cluster running
            raise

    def _start(self, timeout: float) -> RedisCluster:
        for server in self.servers:
            server.start()
        out = subprocess.run(["redis-cli", "--cluster", "create", *self.addresses, "--cluster-replicas", "0",
                              "--cluster-yes"], capture_output=True, text=True, timeout=timeout, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {out.stdout}{out.stderr}")
        deadline = time.monotonic() + timeout
        while not all("cluster_state:ok" in s.cli("CLUSTER", "INFO") for s in self.servers):
            if time.monotonic() > deadline:
                raise RuntimeError("redis cluster did not reach cluster_state:ok")
            time.sleep(0.05)
        return self

    def kill(self) -> None:
        for server in self.servers:
            server.kill()


class RedisSentinel:
    """One ``redis-server --sentinel`` watching ``master`` under the name ``mymaster``."""

    def __init__(self, workdir: Path, master: RedisServer) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "sentinel.conf"
        self.config.write_text(f"port 0\nsentinel monitor mymaster 127.0.0.1 {master.port} 1\n")
        self.server = RedisServer(workdir)  # only for its port, cli() and kill(); started below

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def start(self) -> RedisSentinel:
        # A sentinel takes its config file as the first argument; the port comes from the flags.
        s = self.server
        s.proc = subprocess.Popen(["redis-server", str(self.config), "--sentinel", "--port", str(s.port),
                                   "--bind", "127.0.0.1", "--logfile", str(s.workdir / "sentinel.log")],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while "mymaster" not in s.cli("SENTINEL", "MASTERS"):
            if s.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis sentinel did not start")
            time.sleep(0.02)
        return self

    def kill(self) -> None:
        self.server.kill()
