"""Building redis-py clients from :class:`RedisEngineConfig` (standalone shards, Cluster, Sentinel).

Every client is made with retries switched off: redis-py's default retries a failed command
on a fresh connection, and a retried publish script whose first attempt did run would
publish twice. Failures surface as :class:`StoreUnavailable` instead, and our own layer
decides (the pub/sub link reconnects; commands fail within ``io_timeout``).
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from gateway.config.engine import RedisEngineConfig

__all__ = ["ParsedAddress", "cluster_client", "parse_address", "sentinel_clients", "standalone_client"]

ParsedAddress = tuple[str, int, bool]  # host, port, tls


def parse_address(address: str) -> ParsedAddress:
    """``redis://host:port``, ``rediss://host:port`` (TLS) or ``host:port``."""
    tls = address.startswith("rediss://")
    rest = address.split("://", 1)[1] if "://" in address else address
    rest = rest.partition("/")[0].rpartition("@")[2]
    host, _, port = rest.rpartition(":")
    return host.strip("[]"), int(port), tls


def _no_retry() -> Retry:
    return Retry(NoBackoff(), 0)


def _tls_kwargs(cfg: RedisEngineConfig, tls: bool) -> dict[str, Any]:
    t = cfg.tls
    if not (tls or t.enabled):
        return {}
    return {
        "ssl": True,
        "ssl_certfile": t.cert_pem_file or None,
        "ssl_keyfile": t.key_pem_file or None,
        "ssl_ca_certs": t.ca_pem_file or None,
        "ssl_cert_reqs": "none" if t.insecure_skip_verify else "required",
        "ssl_check_hostname": not t.insecure_skip_verify,
    }


def _common(cfg: RedisEngineConfig) -> dict[str, Any]:
    # No per-read socket timeout: redis-py would then enter an asyncio timeout context for every
    # reply of a pipeline; CommandLink bounds each whole pipeline by io_timeout instead, and the
    # few direct calls (INFO, SCRIPT LOAD) run under asyncio.timeout too.
    return {
        "username": cfg.user or None,
        "password": cfg.password or None,
        "client_name": cfg.client_name or None,
        "socket_connect_timeout": cfg.connect_timeout,
        "socket_timeout": None,
        "retry": _no_retry(),
        "decode_responses": False,
    }


def standalone_client(cfg: RedisEngineConfig, address: str) -> Redis:
    host, port, tls = parse_address(address)
    return Redis(host=host, port=port, db=cfg.db, **_common(cfg), **_tls_kwargs(cfg, tls))


def cluster_client(cfg: RedisEngineConfig) -> RedisCluster:
    nodes = []
    tls = False
    for address in cfg.cluster_address:
        host, port, node_tls = parse_address(address)
        tls = tls or node_tls
        nodes.append(ClusterNode(host, port))
    kwargs = _common(cfg)
    kwargs.pop("client_name")
    return RedisCluster(startup_nodes=nodes, **kwargs, **_tls_kwargs(cfg, tls))


def sentinel_clients(cfg: RedisEngineConfig) -> tuple[Sentinel, Redis]:
    """The Sentinel handle and a client for the current master (re-resolved on reconnect)."""
    sentinels = []
    tls = False
    for address in cfg.sentinel_address:
        host, port, node_tls = parse_address(address)
        tls = tls or node_tls
        sentinels.append((host, port))
    sentinel_kwargs = {
        "username": cfg.sentinel_user or None,
        "password": cfg.sentinel_password or None,
        "socket_connect_timeout": cfg.connect_timeout,
        "socket_timeout": cfg.io_timeout,
        "retry": _no_retry(),
        **_tls_kwargs(cfg, tls),
    }
    sentinel = Sentinel(  # type: ignore[no-untyped-call]  # redis-py leaves Sentinel.__init__ unannotated
        sentinels, sentinel_kwargs=sentinel_kwargs, db=cfg.db, **_common(cfg),
                        **_tls_kwargs(cfg, tls))
    return sentinel, sentinel.master_for(cfg.sentinel_master_name)
