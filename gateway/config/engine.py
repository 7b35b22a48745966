"""The ``engine`` table: where channel state lives (Centrifugo v6 ``engine.*`` key names).

``engine.type = "memory"`` keeps history and presence in the workers (owners over ZeroMQ);
``"redis"`` puts them in Redis so several gateway hosts share one channel space. The Redis
keys mirror Centrifugo's ``engine.redis`` section so a Centrifugo config moves over as-is;
only the knobs this gateway implements are accepted (strict reader: anything else is an
unknown-key error rather than a silently ignored setting).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.config.table import ConfigError, Table, read_table

__all__ = ["EngineConfig", "RedisEngineConfig", "RedisTlsConfig", "read_engine"]

_ADDRESS = re.compile(r"(?:(?P<scheme>rediss?)://)?(?P<rest>.+)")


@dataclass(frozen=True, slots=True)
class RedisTlsConfig:
    """TLS towards Redis; empty paths mean "not set" (system CA store, no client cert)."""

    enabled: bool = False
    cert_pem_file: str = ""
    key_pem_file: str = ""
    ca_pem_file: str = ""
    insecure_skip_verify: bool = False


@dataclass(frozen=True, slots=True)
class RedisEngineConfig:
    """How to reach Redis. Several ``address`` entries are client-side shards (a channel goes
    to ``owner(channel, n)``); ``cluster_address`` means one Redis Cluster; ``sentinel_address``
    means one master found through Sentinel. Durations are seconds."""

    address: tuple[str, ...] = ()
    prefix: str = "shardgate"
    connect_timeout: float = 1.0
    io_timeout: float = 4.0
    db: int = 0
    user: str = ""
    password: str = ""
    client_name: str = ""
    tls: RedisTlsConfig = RedisTlsConfig()
    cluster_address: tuple[str, ...] = ()
    sentinel_address: tuple[str, ...] = ()
    sentinel_master_name: str = ""
    sentinel_user: str = ""
    sentinel_password: str = ""
    presence_ttl: float = 60.0

    @property
    def mode(self) -> str:
        """"cluster", "sentinel" or "shards" (one or more standalone servers)."""
        if self.cluster_address:
            return "cluster"
        if self.sentinel_address:
            return "sentinel"
        return "shards"


@dataclass(frozen=True, slots=True)
class EngineConfig:
    type: str = "memory"
    redis: RedisEngineConfig = RedisEngineConfig()


def _addresses(t: Table, name: str) -> tuple[str, ...]:
    """A string or a list of strings, each ``redis://host:port``, ``rediss://…`` or ``host:port``."""
    raw = t.str_or_list(name, ())
    out = []
    for i, item in enumerate(raw):
        key = t.key(name) if len(raw) == 1 else f"{t.key(name)}[{i}]"
        m = _ADDRESS.fullmatch(item.strip())
        host, _, port = (m.group("rest") if m else "").partition("/")[0].rpartition(":")
        if not m or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(key, f"expected redis://host:port, rediss://host:port or host:port, got {item!r}")
        out.append(item.strip())
    return tuple(out)


def _read_tls(t: Table) -> RedisTlsConfig:
    d = RedisTlsConfig()
    tls = RedisTlsConfig(
        enabled=t.get_bool("enabled", d.enabled),
        cert_pem_file=t.get_str("cert_pem_file", d.cert_pem_file),
        key_pem_file=t.get_str("key_pem_file", d.key_pem_file),
        ca_pem_file=t.get_str("ca_pem_file", d.ca_pem_file),
        insecure_skip_verify=t.get_bool("insecure_skip_verify", d.insecure_skip_verify),
    )
    if bool(tls.cert_pem_file) != bool(tls.key_pem_file):
        raise ConfigError(t.key("cert_pem_file"), "cert_pem_file and key_pem_file go together")
    return tls


def _read_redis(t: Table) -> RedisEngineConfig:
    d = RedisEngineConfig()
    cfg = RedisEngineConfig(
        address=_addresses(t, "address"),
        prefix=t.get_str("prefix", d.prefix),
        connect_timeout=t.duration("connect_timeout", d.connect_timeout, positive=True),
        io_timeout=t.duration("io_timeout", d.io_timeout, positive=True),
        db=t.get_int("db", d.db, minimum=0),
        user=t.get_str("user", d.user),
        password=t.get_str("password", d.password),
        client_name=t.get_str("client_name", d.client_name),
        tls=read_table(t.table("tls"), _read_tls),
        cluster_address=_addresses(t, "cluster_address"),
        sentinel_address=_addresses(t, "sentinel_address"),
        sentinel_master_name=t.get_str("sentinel_master_name", d.sentinel_master_name),
        sentinel_user=t.get_str("sentinel_user", d.sentinel_user),
        sentinel_password=t.get_str("sentinel_password", d.sentinel_password),
        presence_ttl=t.duration("presence_ttl", d.presence_ttl, positive=True),
    )
    if not cfg.prefix:
        raise ConfigError(t.key("prefix"), "must not be empty (keys of other applications would collide)")
    kinds = [name for name in ("address", "cluster_address", "sentinel_address") if getattr(cfg, name)]
    if len(kinds) > 1:
        raise ConfigError(t.key(kinds[1]), f"{kinds[0]} and {kinds[1]} are exclusive; set only one")
    if cfg.sentinel_address and not cfg.sentinel_master_name:
        raise ConfigError(t.key("sentinel_master_name"), "required with sentinel_address")
    if cfg.sentinel_master_name and not cfg.sentinel_address:
        raise ConfigError(t.key("sentinel_address"), "required with sentinel_master_name")
    if cfg.cluster_address and cfg.db:
        raise ConfigError(t.key("db"), "Redis Cluster has only db 0")
    return cfg


def read_engine(t: Table) -> EngineConfig:
    engine = EngineConfig(
        type=t.get_str("type", "memory", choices=("memory", "redis")),
        redis=read_table(t.table("redis"), _read_redis),
    )
    r = engine.redis
    if engine.type == "redis" and not (r.address or r.cluster_address or r.sentinel_address):
        raise ConfigError(t.key("redis.address"),
                          'engine.type "redis" needs an address (or cluster_address / sentinel_address)')
    return engine
