"""Fixtures for tests that need a real Redis: servers on free 127.0.0.1 ports (tests/redis_servers.py).

Without ``redis-server`` on PATH these tests skip with one line, except in CI (``CI=true``),
where a missing server is a broken CI image and must fail loudly rather than go green.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.redis_servers import RedisCluster, RedisSentinel, RedisServer, redis_available


@pytest.fixture(scope="session")
def redis_bin() -> None:
    if redis_available():
        return
    message = "redis-server/redis-cli not on PATH (apt-get install redis-server)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but {message}", pytrace=False)
    pytest.skip(message)


@pytest.fixture
def redis_server(redis_bin: None, tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.kill()


@pytest.fixture
def redis_servers(redis_bin: None, tmp_path: Path) -> Iterator[list[RedisServer]]:
    servers = [RedisServer(tmp_path / f"redis{i}").start() for i in range(3)]
    yield servers
    for server in servers:
        server.kill()


@pytest.fixture(scope="module")
def redis_cluster(redis_bin: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    cluster = RedisCluster(tmp_path_factory.mktemp("cluster")).start()
    yield cluster
    cluster.kill()


@pytest.fixture
def redis_sentinel(redis_server: RedisServer, tmp_path: Path) -> Iterator[RedisSentinel]:
    sentinel = RedisSentinel(tmp_path / "sentinel", redis_server).start()
    yield sentinel
    sentinel.kill()
