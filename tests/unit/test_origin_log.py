"""A refused Origin is logged once, naming the Origin, the Host and client.allowed_origins;
the memory and the lines are bounded; ``serve --allowed-origin`` reaches the config."""

from __future__ import annotations

import logging
import time

import pytest

from gateway.cli import _build_parser
from gateway.config import Config
from gateway.obs.logs import RateLimit
from gateway.transport.upgrade import RefusedOriginLog, origin_allowed


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "shardgate.ws"]


def test_logged_once_per_origin(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "shardgate.ws")
    log = RefusedOriginLog(())
    for _ in range(20):
        log.refused("http://localhost:5173", "127.0.0.1:8000")
    (line,) = lines(caplog)
    assert "'http://localhost:5173'" in line and "'127.0.0.1:8000'" in line
    assert "client.allowed_origins" in line and "--allowed-origin" in line
    assert "only an Origin naming the Host" in line
    log.refused("HTTP://LOCALHOST:5173", "127.0.0.1:8000")  # Origins compare case-insensitively
    log.refused("http://other.example", "127.0.0.1:8000")
    assert len(lines(caplog)) == 2


def test_names_the_configured_patterns(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "shardgate.ws")
    RefusedOriginLog(("https://*.example.com",)).refused("http://evil.test", None)
    (line,) = lines(caplog)
    assert "allowed: https://*.example.com" in line and "'http://evil.test'" in line


def test_bounded_memory_and_rate(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "shardgate.ws")
    log = RefusedOriginLog((), max_seen=8, limit=RateLimit(burst=5, period=0.5))
    for i in range(100):
        log.refused(f"http://o{i}.example", "h")
    assert len(log._seen) <= 8
    assert len(lines(caplog)) == 5  # a fresh Origin each time still cannot flood the log
    time.sleep(0.6)
    log.refused("http://late.example", "h")
    assert lines(caplog)[-1].endswith("(95 more refused Origins not logged)")
    log.refused("x" * 10_000, "y" * 10_000)
    assert len(log._seen) <= 8
    assert len(lines(caplog)[-1]) < 1000


def test_dev_default_allows_any_origin() -> None:
    from gateway.config import dev_config

    patterns = dev_config("s").client.allowed_origins
    assert origin_allowed("http://localhost:5173", "127.0.0.1:8000", patterns)
    assert origin_allowed("https://anything.example", None, patterns)
    assert not origin_allowed("http://localhost:5173", "127.0.0.1:8000", Config().client.allowed_origins)


def test_serve_allowed_origin_flag() -> None:
    args = _build_parser().parse_args(["serve", "--allowed-origin", "http://app.example",
                                       "--allowed-origin", "https://*.example.com"])
    assert args.allowed_origin == ["http://app.example", "https://*.example.com"]
    config = Config().with_overrides(allowed_origins=args.allowed_origin)
    assert config.client.allowed_origins == ("http://app.example", "https://*.example.com")
    assert origin_allowed("http://app.example", "127.0.0.1:8000", config.client.allowed_origins)
    assert _build_parser().parse_args(["serve"]).allowed_origin is None
