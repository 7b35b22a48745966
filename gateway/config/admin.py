"""The ``admin`` table: the web admin on the internal port (Centrifugo's ``admin.*`` keys).

``admin.enabled`` (default false) serves the admin page and its API at ``/admin`` on the
internal port only; a login needs ``admin.password`` and gets a session token signed with
``admin.secret`` (both required when enabled). ``admin.demo_page`` (a shardgate key, on in
the development default) serves a small centrifuge-js chat at ``/`` on the client port.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config.table import ConfigError, Table

__all__ = ["AdminConfig", "read_admin"]


@dataclass(frozen=True, slots=True)
class AdminConfig:
    enabled: bool = False
    password: str = ""
    secret: str = ""
    # Seconds a login stays valid.
    session_ttl: float = 12 * 3600.0
    demo_page: bool = False


def read_admin(t: Table) -> AdminConfig:
    d = AdminConfig()
    cfg = AdminConfig(
        enabled=t.get_bool("enabled", d.enabled),
        password=t.get_str("password", d.password),
        secret=t.get_str("secret", d.secret),
        session_ttl=t.duration("session_ttl", d.session_ttl, positive=True),
        demo_page=t.get_bool("demo_page", d.demo_page),
    )
    if cfg.enabled:
        for name in ("password", "secret"):
            if not getattr(cfg, name):
                raise ConfigError(t.key(name), "required when admin.enabled is true")
    return cfg
