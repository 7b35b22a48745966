"""The HTTP transports' tables (Centrifugo v6 keys): bidirectional emulation (``http_stream``,
``sse``, ``emulation``) and the one-way transports (``uni_websocket``, ``uni_sse``,
``uni_http_stream``). All are off by default, as in Centrifugo; each serves on the client port
under its ``handler_prefix``. Every request body they read is bounded by its
``max_request_body_size`` (HTTP 413 beyond it), the uni_websocket connect message by
``uni_websocket.message_size_limit`` (close 1009 beyond it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.config.table import ConfigError, Table, read_table

__all__ = ["StreamEndpointConfig", "UniWebSocketConfig", "EmulationConfig", "TransportsConfig",
           "read_transports"]

_DEFAULT_BODY = 65536


@dataclass(frozen=True, slots=True)
class StreamEndpointConfig:
    """``http_stream``, ``sse``, ``uni_sse``, ``uni_http_stream``."""

    enabled: bool = False
    handler_prefix: str = ""
    max_request_body_size: int = _DEFAULT_BODY


@dataclass(frozen=True, slots=True)
class UniWebSocketConfig:
    enabled: bool = False
    handler_prefix: str = "/connection/uni_websocket"
    message_size_limit: int = 65536


@dataclass(frozen=True, slots=True)
class EmulationConfig:
    """``emulation``: where emulated clients (http_stream, sse) POST their commands; served
    whenever one of those two is enabled."""

    handler_prefix: str = "/emulation"
    max_request_body_size: int = _DEFAULT_BODY


def _stream(prefix: str) -> StreamEndpointConfig:
    return StreamEndpointConfig(handler_prefix=prefix)


@dataclass(frozen=True, slots=True)
class TransportsConfig:
    http_stream: StreamEndpointConfig = field(default_factory=lambda: _stream("/connection/http_stream"))
    sse: StreamEndpointConfig = field(default_factory=lambda: _stream("/connection/sse"))
    uni_sse: StreamEndpointConfig = field(default_factory=lambda: _stream("/connection/uni_sse"))
    uni_http_stream: StreamEndpointConfig = field(default_factory=lambda: _stream("/connection/uni_http_stream"))
    uni_websocket: UniWebSocketConfig = UniWebSocketConfig()
    emulation: EmulationConfig = EmulationConfig()

    @property
    def emulation_enabled(self) -> bool:
        return self.http_stream.enabled or self.sse.enabled

    def http_prefixes(self) -> tuple[str, ...]:
        """The client-port paths served over plain HTTP (uni_websocket is an upgrade)."""
        out = [e.handler_prefix for e in (self.http_stream, self.sse, self.uni_sse, self.uni_http_stream)
               if e.enabled]
        if self.emulation_enabled:
            out.append(self.emulation.handler_prefix)
        return tuple(out)


def _prefix(t: Table, default: str) -> str:
    prefix = t.get_str("handler_prefix", default)
    if not prefix.startswith("/") or prefix.endswith("/") or "?" in prefix:
        raise ConfigError(t.key("handler_prefix"), "must start with / and not end with / (e.g. /connection/sse)")
    return prefix


def _read_stream(default: StreamEndpointConfig) -> Callable[[Table], StreamEndpointConfig]:
    def read(t: Table) -> StreamEndpointConfig:
        return StreamEndpointConfig(
            enabled=t.get_bool("enabled", default.enabled),
            handler_prefix=_prefix(t, default.handler_prefix),
            max_request_body_size=t.get_int("max_request_body_size", default.max_request_body_size, minimum=1),
        )
    return read


def _read_uni_ws(t: Table) -> UniWebSocketConfig:
    d = UniWebSocketConfig()
    return UniWebSocketConfig(
        enabled=t.get_bool("enabled", d.enabled),
        handler_prefix=_prefix(t, d.handler_prefix),
        message_size_limit=t.get_int("message_size_limit", d.message_size_limit, minimum=1),
    )


def _read_emulation(t: Table) -> EmulationConfig:
    d = EmulationConfig()
    return EmulationConfig(
        handler_prefix=_prefix(t, d.handler_prefix),
        max_request_body_size=t.get_int("max_request_body_size", d.max_request_body_size, minimum=1),
    )


def read_transports(root: Table) -> TransportsConfig:
    """The six top-level tables; keys they do not read (uni_websocket.compression, ...) stay in
    the warning of ignored keys."""
    d = TransportsConfig()
    cfg = TransportsConfig(
        http_stream=read_table(root.table("http_stream"), _read_stream(d.http_stream)),
        sse=read_table(root.table("sse"), _read_stream(d.sse)),
        uni_sse=read_table(root.table("uni_sse"), _read_stream(d.uni_sse)),
        uni_http_stream=read_table(root.table("uni_http_stream"), _read_stream(d.uni_http_stream)),
        uni_websocket=read_table(root.table("uni_websocket"), _read_uni_ws),
        emulation=read_table(root.table("emulation"), _read_emulation),
    )
    paths = [*cfg.http_prefixes(), *([cfg.uni_websocket.handler_prefix] if cfg.uni_websocket.enabled else [])]
    for path in paths:
        if paths.count(path) > 1 or path in ("/connection/websocket", "/api") or path.startswith("/api/"):
            root.report(ConfigError("handler_prefix", f"{path!r} is used by two endpoints"))
            break
    return cfg

