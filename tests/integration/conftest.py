"""Fixtures for tests that need a real Redis: servers on free 127.0.0.1 ports (tests/redis_servers.py).

Without ``redis-server`` on PATH these tests skip with one line, except in CI (``CI=true``),
where a missing server is a broken CI image and must fail loudly rather than go green.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

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


# -- RabbitMQ and PostgreSQL (the consumers and events out) -------------------------------------

RABBITMQ_URL = os.environ.get("SHARDGATE_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
POSTGRES_DSN = os.environ.get("SHARDGATE_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session")
def service() -> Callable[[str, str], str]:
    """``service(kind, url)`` returns ``url`` when that service answers on its port; otherwise the
    test skips with one line, except under ``CI=true``, where a missing service is a broken CI
    machine and fails loudly."""

    def check(kind: str, url: str) -> str:
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or {"amqp": 5672, "postgresql": 5432}[parts.scheme]
        try:
            socket.create_connection((host, port), timeout=2).close()
        except OSError as exc:
            message = f"{kind} not reachable at {host}:{port} ({exc.strerror or exc})"
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(f"CI=true but {message}", pytrace=False)
            pytest.skip(message)
        return url

    return check


@pytest.fixture
def rabbitmq_url(service: Callable[[str, str], str]) -> str:
    return service("RabbitMQ", RABBITMQ_URL)


@pytest.fixture
def postgres_dsn(service: Callable[[str, str], str]) -> str:
    return service("PostgreSQL", POSTGRES_DSN)
