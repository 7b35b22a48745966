"""Gateway configuration: the settings, as a tree of frozen dataclasses that can be shared
across shards without copying concerns, with Centrifugo v6 key names.

A config written for Centrifugo (nested tables such as ``client.token`` or
``channel.namespaces``) should load here as-is, so the key names follow
Centrifugo v6. Our own knobs live under the ``shardgate`` table.

Reading a document into these is :mod:`gateway.config.parse`, strict on purpose: an unknown
key or a wrongly typed value is an error naming its dotted path
(``channel.namespaces[1].history_ttl``), because a silently ignored typo in a gateway config
shows up much later as a security or delivery bug. Pure and synchronous.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from gateway.config.admin import AdminConfig
from gateway.config.consumers import (
    ConsumerConfig,
    EventsOutConfig,
    PostgresConsumerConfig,
    RabbitMQConsumerConfig,
)
from gateway.config.engine import EngineConfig, RedisEngineConfig, RedisTlsConfig
from gateway.config.proxy import (
    ProxyEndpoint,
    RpcConfig,
)
from gateway.config.socketio import SocketIOConfig
from gateway.config.table import ConfigError, ConfigErrors
from gateway.config.transports import TransportsConfig

__all__ = [
    "ChannelConfig",
    "ChannelOptions",
    "ClientConfig",
    "Config",
    "ConsumerConfig",
    "EventsOutConfig",
    "PostgresConsumerConfig",
    "RabbitMQConsumerConfig",
    "ConfigError",
    "ConfigErrors",
    "EndpointConfig",
    "EngineConfig",
    "HttpApiConfig",
    "HttpServerConfig",
    "ProxyEndpoint",
    "RedisEngineConfig",
    "RedisTlsConfig",
    "RpcConfig",
    "ShardgateConfig",
    "TlsConfig",
    "TokenConfig",
    "WebSocketConfig",
]



@dataclass(frozen=True, slots=True)
class ChannelOptions:
    """Per-namespace channel behaviour and permissions (Centrifugo channel options)."""

    presence: bool = False
    join_leave: bool = False
    force_push_join_leave: bool = False
    history_size: int = 0
    history_ttl: float = 0.0
    history_meta_ttl: float = 0.0  # 0 = use ChannelConfig.history_meta_ttl
    force_positioning: bool = False
    allow_positioning: bool = False
    force_recovery: bool = False
    allow_recovery: bool = False
    allow_subscribe_for_client: bool = False
    allow_subscribe_for_anonymous: bool = False
    allow_publish_for_subscriber: bool = False
    allow_publish_for_client: bool = False
    allow_publish_for_anonymous: bool = False
    allow_history_for_subscriber: bool = False
    allow_history_for_client: bool = False
    allow_history_for_anonymous: bool = False
    allow_presence_for_subscriber: bool = False
    allow_presence_for_client: bool = False
    allow_presence_for_anonymous: bool = False
    allow_user_limited_channels: bool = False
    # Delta compression: what subscribers may ask for (``delta: "fossil"``), and whether every
    # publication in the namespace is marked for it (else only a publish API call's ``delta``).
    allowed_delta_types: tuple[str, ...] = ()
    delta_publish: bool = False
    # The proxy of each event when its ``*_proxy_enabled`` is on (``*_proxy_name`` resolved).
    subscribe_proxy: ProxyEndpoint | None = None
    publish_proxy: ProxyEndpoint | None = None
    sub_refresh_proxy: ProxyEndpoint | None = None

    @property
    def history_enabled(self) -> bool:
        """History needs both a size and a TTL; either one at 0 means no history."""
        return self.history_size > 0 and self.history_ttl > 0


@dataclass(frozen=True, slots=True)
class TokenConfig:
    """Keys and claim checks for verifying JWTs (Centrifugo v6 names).

    PEM texts and the JWKS document are parsed by ``gateway.auth``, not here; this
    validates the shapes (regexes compile, the endpoint URL scheme, rotation pairs).
    Empty strings / 0 mean "not set".
    """

    hmac_secret_key: str = ""
    rsa_public_key: str = ""
    ecdsa_public_key: str = ""
    hmac_previous_secret_key: str = ""
    hmac_previous_secret_key_valid_until: int = 0  # unix seconds; previous key valid while now < it
    audience: str = ""
    audience_regex: str = ""
    issuer: str = ""
    issuer_regex: str = ""
    jwks_public_endpoint: str = ""  # http(s):// URL or file:// path of a JWKS document

    @property
    def configured(self) -> bool:
        """True when any verification key is set."""
        return bool(
            self.hmac_secret_key
            or self.rsa_public_key
            or self.ecdsa_public_key
            or self.hmac_previous_secret_key
            or self.jwks_public_endpoint
        )


@dataclass(frozen=True, slots=True)
class TlsConfig:
    enabled: bool = False
    cert_pem_file: str = ""
    key_pem_file: str = ""
    cert_pem: str = ""  # inline PEM text (Centrifugo's cert_pem); used instead of cert_pem_file
    key_pem: str = ""


# Where the internal port (server API, /metrics, /health, /ready) listens unless
# http_server.internal_address says otherwise. Loopback, not "same as address": opening the
# client port to the world (address = "0.0.0.0") must not open the server API with it.
DEFAULT_INTERNAL_ADDRESS = "127.0.0.1"
# Listen addresses that cover every local address, so they overlap any specific one.
_WILDCARD_ADDRESSES = frozenset({"", "0.0.0.0", "::"})


@dataclass(frozen=True, slots=True)
class HttpServerConfig:
    address: str = "127.0.0.1"  # client WebSocket endpoint
    port: int = 8000
    internal_port: int = 8001
    internal_address: str = DEFAULT_INTERNAL_ADDRESS  # server API, /metrics, /health, /ready
    tls: TlsConfig = TlsConfig()  # serves both the client and the internal port over TLS


@dataclass(frozen=True, slots=True)
class ClientConfig:
    token: TokenConfig = TokenConfig()
    subscription_token: TokenConfig = TokenConfig()  # when not configured, `token` is used
    allow_anonymous_connect_without_token: bool = False
    allowed_origins: tuple[str, ...] = ()
    ping_interval: float = 25.0
    pong_timeout: float = 8.0
    channel_limit: int = 128
    queue_max_size: int = 1048576
    history_max_publication_limit: int = 300
    recovery_max_publication_limit: int = 300
    stale_close_delay: float = 10.0
    expired_close_delay: float = 25.0
    expired_sub_close_delay: float = 25.0
    connect_include_server_time: bool = False
    connection_limit: int = 0  # connections per node (split over workers); beyond it: disconnect 3504
    user_connection_limit: int = 0  # connections of one user per node (0 = off); beyond it: disconnect 3504
    # client.subscribe_to_user_personal_channel: every user's connections subscribe, server-side,
    # to "<namespace><namespace_boundary><user_boundary><user>" (Centrifugo: "personal:#42").
    personal_channel: bool = False
    personal_channel_namespace: str = ""
    connection_rate_limit: int = 0  # new connections per second per node; beyond it: HTTP 503
    channel_position_check_delay: float = 40.0  # Redis engine: how often delivered positions are checked
    connect_proxy: ProxyEndpoint | None = None  # client.proxy.connect when enabled
    refresh_proxy: ProxyEndpoint | None = None  # client.proxy.refresh when enabled


@dataclass(frozen=True, slots=True)
class WebSocketConfig:
    message_size_limit: int = 65536
    conformance_echo_path: str = ""  # e.g. "/autobahn-echo": RFC 6455 echo for the Autobahn suite; off when ""
    # permessage-deflate (RFC 7692), Centrifugo's keys: off by default (it costs CPU per message
    # sent; it pays on slow links and large JSON), level 1 as Centrifugo, and messages below
    # compression_min_size bytes go out plain.
    compression: bool = False
    compression_level: int = 1
    compression_min_size: int = 0


@dataclass(frozen=True, slots=True)
class HttpApiConfig:
    key: str = ""
    disabled: bool = False  # no /api at all
    external: bool = False  # /api on the client port too (Centrifugo's http_api.external)
    insecure: bool = False  # no key check at all (only behind a trusted network boundary)
    error_mode: str = ""  # "" = errors in the body with HTTP 200; "transport" = HTTP status codes


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    """Channel options: the default (no namespace) plus named namespaces, in file order."""

    without_namespace: ChannelOptions = ChannelOptions()
    namespaces: tuple[tuple[str, ChannelOptions], ...] = ()
    max_length: int = 255
    history_meta_ttl: float = 720 * 3600.0
    # Options for a namespace that is not in ``namespaces``. ``None`` (every config file: no
    # config key sets it) keeps Centrifugo's rule, an unknown namespace is error 102; only the
    # embedded development default (dev_config) sets it, so any namespace works there.
    any_namespace: ChannelOptions | None = None
    private_prefix: str = "$"
    namespace_boundary: str = ":"
    user_boundary: str = "#"
    user_separator: str = ","
    # Derived lookup table so channel_options() is a dict hit on the hot path.
    _by_name: dict[str, ChannelOptions] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", dict(self.namespaces))


@dataclass(frozen=True, slots=True)
class ShardgateConfig:
    """Settings specific to shardgate (not Centrifugo), under the ``shardgate`` key."""

    workers: int = 0  # 0 = os.cpu_count()
    runtime_dir: str = ""  # "" = a fresh temp dir per run
    cpu_pinning: bool = False
    graceful_timeout: float = 30.0  # seconds for SIGTERM drain
    bus_request_timeout: float = 5.0  # seconds a cross-shard request may take
    max_commands_per_frame: int = 1000
    rpc_echo: bool = False  # built-in "echo" rpc method and echo of `send`
    rpc_handlers: tuple[tuple[str, str], ...] = ()  # (rpc method, "package.module:function")
    boot_failure_limit: int = 5  # consecutive boot failures of one slot before the supervisor stops
    log_level: str = "info"  # debug|info|warning|error
    log_format: str = "text"  # text|json
    api_max_body_size: int = 1048576  # bytes of one server API request; more gets HTTP 413
    pid_file: str = ""  # where the supervisor writes its pid ("" = none)
    command_rate: float = 1000.0  # commands per second per connection (0 = unlimited); over it: error 111
    command_burst: int = 2000  # bucket size; a client that overdraws it by as much again is closed 3013
    per_ip_connection_limit: int = 0  # open connections per client IP per worker (0 = off); beyond: HTTP 503
    per_ip_connection_rate: float = 0.0  # new connections per second per client IP per worker; beyond: HTTP 503
    handshake_timeout: float = 10.0  # seconds to complete the WebSocket upgrade
    heartbeat_timeout: float = 10.0  # a worker whose loop has not beaten for this long is killed and replaced
    drain_window: float = 2.0  # reload/shutdown: client disconnects are spread over this many seconds
    max_inflight_commands: int = 16  # commands of one connection waiting on an engine at once; the rest queue
    api_batch_max_commands: int = 1000  # commands in one server API batch; more: error 107
    log_file: str = ""  # log.file: append logs to this file instead of stderr
    events_out: EventsOutConfig = field(default_factory=EventsOutConfig)  # client publications out to RabbitMQ
    socketio: SocketIOConfig = field(default_factory=SocketIOConfig)  # the Socket.IO endpoint (shardgate.socketio)


@dataclass(frozen=True, slots=True)
class EndpointConfig:
    """An internal endpoint that can be turned off (``health.enabled``, ``prometheus.enabled``).

    Unlike Centrifugo, shardgate serves /health and /metrics by default: only an explicit
    ``enabled = false`` turns one off (then it answers 404)."""

    enabled: bool = True


@dataclass(frozen=True, slots=True)
class Config:
    http_server: HttpServerConfig = HttpServerConfig()
    client: ClientConfig = ClientConfig()
    websocket: WebSocketConfig = WebSocketConfig()
    http_api: HttpApiConfig = HttpApiConfig()
    channel: ChannelConfig = ChannelConfig()
    shardgate: ShardgateConfig = ShardgateConfig()
    engine: EngineConfig = field(default_factory=EngineConfig)
    health: EndpointConfig = EndpointConfig()
    prometheus: EndpointConfig = EndpointConfig()
    admin: AdminConfig = field(default_factory=AdminConfig)
    rpc: RpcConfig = field(default_factory=RpcConfig)
    consumers: tuple[ConsumerConfig, ...] = ()  # the enabled ones (Centrifugo's `consumers`)
    transports: TransportsConfig = field(default_factory=TransportsConfig)  # http_stream, sse, uni_*
    # One line naming the Centrifugo keys the file sets that shardgate ignores ("" = none).
    warning: str = field(default="", compare=False)

    def personal_channel_of(self, user: str) -> str | None:
        """The user's personal channel (``client.subscribe_to_user_personal_channel``), or None."""
        client, channel = self.client, self.channel
        if not client.personal_channel:
            return None
        namespace = client.personal_channel_namespace
        prefix = namespace + channel.namespace_boundary if namespace else ""
        return f"{prefix}{channel.user_boundary}{user}"

    def namespace_of(self, channel: str) -> str:
        """The namespace name: text before the first ``channel.namespace_boundary`` (``:``) once
        a leading ``channel.private_prefix`` (``$``) is dropped."""
        prefix = self.channel.private_prefix
        if prefix and channel.startswith(prefix):
            channel = channel[len(prefix) :]
        name, sep, _ = channel.partition(self.channel.namespace_boundary)
        return name if sep else ""

    def channel_options(self, channel: str) -> ChannelOptions | None:
        """Options for ``channel``; ``None`` when its namespace is not configured.

        As in Centrifugo, an empty namespace (no ``:``, or a leading ``:``) means
        the ``without_namespace`` options. A namespace not configured gets
        ``channel.any_namespace`` (set only by :func:`dev_config`), else ``None``.
        """
        name = self.namespace_of(channel)
        if not name:
            return self.channel.without_namespace
        return self.channel._by_name.get(name, self.channel.any_namespace)

    def worker_count(self) -> int:
        """Number of worker processes to run; 0 in the config means one per CPU."""
        return self.shardgate.workers or os.cpu_count() or 1

    def with_overrides(
        self,
        *,
        address: str | None = None,
        port: int | None = None,
        internal_port: int | None = None,
        internal_address: str | None = None,
        workers: int | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        allowed_origins: Sequence[str] | None = None,
    ) -> Config:
        """A copy with CLI flag values applied; ``None`` keeps the configured value.

        Flags get the same range checks as the file so a bad flag fails the same way.
        ``allowed_origins`` (``--allowed-origin``) adds to ``client.allowed_origins``.
        """
        http = self.http_server
        shard = self.shardgate
        client = self.client
        if address is not None:
            http = dataclasses.replace(http, address=address)
        if port is not None:
            http = dataclasses.replace(http, port=_check_port(port, "http_server.port"))
        if internal_port is not None:
            http = dataclasses.replace(
                http, internal_port=_check_port(internal_port, "http_server.internal_port")
            )
        if internal_address is not None:
            http = dataclasses.replace(http, internal_address=internal_address)
        check_listeners(http, "http_server.internal_port")
        if workers is not None:
            if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
                raise ConfigError("shardgate.workers", "must be an integer >= 0")
            shard = dataclasses.replace(shard, workers=workers)
        if tls_cert is not None or tls_key is not None:
            if not (tls_cert and tls_key):
                raise ConfigError("http_server.tls", "--tls-cert and --tls-key go together")
            http = dataclasses.replace(http, tls=TlsConfig(True, tls_cert, tls_key))
        if allowed_origins:
            if any(not o.strip() for o in allowed_origins):
                raise ConfigError("client.allowed_origins", "--allowed-origin must not be empty")
            merged = tuple(dict.fromkeys((*client.allowed_origins, *allowed_origins)))
            client = dataclasses.replace(client, allowed_origins=merged)
        return dataclasses.replace(self, http_server=http, client=client, shardgate=shard)


def _check_port(value: int, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ConfigError(key, "must be an integer in 0..65535")
    return value


def check_listeners(http: HttpServerConfig, key: str) -> None:
    """The client and the internal port must not share a listening address.

    Both are bound with SO_REUSEPORT, so the kernel would not refuse it: it would hand
    WebSocket clients to the HTTP API and backends to the WebSocket endpoint at random.
    Port 0 (a free port picked at start) never collides."""
    if not http.port or http.port != http.internal_port:
        return
    overlap = (http.address == http.internal_address or http.address in _WILDCARD_ADDRESSES
               or http.internal_address in _WILDCARD_ADDRESSES)
    if overlap:
        raise ConfigError(key, f"must differ from http_server.port ({http.port}) on the same address "
                               f"({http.address or '*'} / {http.internal_address or '*'})")
