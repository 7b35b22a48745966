"""Reading a configuration: Centrifugo v6 tables into the frozen dataclasses of
:mod:`gateway.config.schema`, strictly. An unknown key or a wrongly typed value is an error
naming its dotted path (``channel.namespaces[1].history_ttl``); every section is read and all
problems are reported at once. Pure and synchronous."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.config.admin import read_admin
from gateway.config.consumers import (
    EVENTS_OUT_KEYS,
    read_consumers,
    read_events_out,
)
from gateway.config.engine import read_engine
from gateway.config.keys import CENTRIFUGO_V6, KeyNode
from gateway.config.proxy import (
    DEFAULT_PROXY_NAME,
    NamedProxies,
    ProxyEndpoint,
    read_named_proxies,
    read_proxy,
    read_rpc,
    resolve_proxy,
)
from gateway.config.schema import (
    ChannelConfig,
    ChannelOptions,
    ClientConfig,
    Config,
    EndpointConfig,
    HttpApiConfig,
    HttpServerConfig,
    ShardgateConfig,
    TlsConfig,
    TokenConfig,
    WebSocketConfig,
    check_listeners,
)
from gateway.config.socketio import SOCKETIO_KEYS, read_socketio
from gateway.config.table import ConfigError, Problems, Table, as_table, read_table
from gateway.config.transports import read_transports

__all__ = ["DELTA_TYPES", "known_keys", "parse_config"]

# Centrifugo's namespace name rule.
_NAMESPACE_NAME = re.compile(r"[-a-zA-Z0-9_.]{2,}")
_LOG_LEVELS = ("debug", "info", "warning", "error")
# Centrifugo's log.level names and the logging level each maps to.
_CENTRIFUGO_LOG_LEVELS = {"trace": "debug", "debug": "debug", "info": "info", "warn": "warning",
                          "warning": "warning", "error": "error", "fatal": "critical", "none": "critical"}


# --------------------------------------------------------------------------- reading


def _read_token(t: Table) -> TokenConfig:
    from urllib.parse import urlsplit

    d = TokenConfig()
    cfg = TokenConfig(
        hmac_secret_key=t.get_str("hmac_secret_key", d.hmac_secret_key),
        rsa_public_key=t.get_str("rsa_public_key", d.rsa_public_key),
        ecdsa_public_key=t.get_str("ecdsa_public_key", d.ecdsa_public_key),
        hmac_previous_secret_key=t.get_str("hmac_previous_secret_key", d.hmac_previous_secret_key),
        hmac_previous_secret_key_valid_until=t.get_int(
            "hmac_previous_secret_key_valid_until", d.hmac_previous_secret_key_valid_until, minimum=0
        ),
        audience=t.get_str("audience", d.audience),
        audience_regex=t.get_str("audience_regex", d.audience_regex),
        issuer=t.get_str("issuer", d.issuer),
        issuer_regex=t.get_str("issuer_regex", d.issuer_regex),
        jwks_public_endpoint=t.get_str("jwks_public_endpoint", d.jwks_public_endpoint).strip(),
    )
    for name in ("audience_regex", "issuer_regex"):
        try:
            re.compile(getattr(cfg, name))
        except re.error as exc:
            raise ConfigError(t.key(name), f"invalid regular expression: {exc}") from None
    if cfg.hmac_previous_secret_key_valid_until and not cfg.hmac_previous_secret_key:
        raise ConfigError(t.key("hmac_previous_secret_key_valid_until"),
                          "requires hmac_previous_secret_key")
    if cfg.hmac_previous_secret_key and not cfg.hmac_previous_secret_key_valid_until:
        raise ConfigError(t.key("hmac_previous_secret_key"),
                          "requires hmac_previous_secret_key_valid_until (unix seconds)")
    if cfg.jwks_public_endpoint:
        try:
            url = urlsplit(cfg.jwks_public_endpoint)
            url.port  # noqa: B018 - raises ValueError for a port outside 0..65535
        except ValueError:
            raise ConfigError(t.key("jwks_public_endpoint"), "not a valid URL") from None
        scheme = url.scheme.lower()
        if scheme in ("http", "https"):
            if not url.hostname:
                raise ConfigError(t.key("jwks_public_endpoint"), "URL has no host")
        elif scheme == "file":
            if not url.path or url.netloc not in ("", "localhost"):
                raise ConfigError(t.key("jwks_public_endpoint"), "expected file:///absolute/path")
        else:
            raise ConfigError(t.key("jwks_public_endpoint"),
                              "must be an http://, https:// or file:// URL")
    return cfg


def _read_http_server(t: Table) -> HttpServerConfig:
    d = HttpServerConfig()
    http = HttpServerConfig(
        address=t.get_str("address", d.address),
        port=t.get_int("port", d.port, minimum=0, maximum=65535, from_string=True),
        internal_port=t.get_int("internal_port", d.internal_port, minimum=0, maximum=65535, from_string=True),
        internal_address=t.get_str("internal_address", d.internal_address),
        tls=read_table(t.table("tls"), _read_tls),
    )
    try:
        check_listeners(http, t.key("internal_port"))
    except ConfigError as exc:
        t.report(exc)
    return http


def _read_tls(t: Table) -> TlsConfig:
    d = TlsConfig()
    tls = TlsConfig(
        enabled=t.get_bool("enabled", d.enabled),
        cert_pem_file=t.get_str("cert_pem_file", d.cert_pem_file),
        key_pem_file=t.get_str("key_pem_file", d.key_pem_file),
        cert_pem=t.get_str("cert_pem", d.cert_pem),
        key_pem=t.get_str("key_pem", d.key_pem),
    )
    for name in ("cert_pem", "key_pem"):
        if getattr(tls, name) and getattr(tls, f"{name}_file"):
            t.error(name, f"set {name} or {name}_file, not both")
        elif getattr(tls, name) and "-----BEGIN " not in getattr(tls, name):
            t.error(name, "expected PEM text (-----BEGIN ...)")
    if tls.enabled and not ((tls.cert_pem_file or tls.cert_pem) and (tls.key_pem_file or tls.key_pem)):
        t.error("cert_pem_file", "tls needs a certificate and a key (cert_pem_file/key_pem_file or "
                                 "cert_pem/key_pem)")
    return tls


def _read_client(t: Table) -> ClientConfig:
    d = ClientConfig()
    proxies = t.table("proxy")
    connect_proxy = read_table(proxies.table("connect"), _read_client_proxy)
    refresh_proxy = read_table(proxies.table("refresh"), _read_client_proxy)
    proxies.finish()
    personal, personal_namespace = read_table(t.table("subscribe_to_user_personal_channel"), _read_personal_channel)
    cfg = ClientConfig(
        personal_channel=personal,
        personal_channel_namespace=personal_namespace,
        token=read_table(t.table("token"), _read_token),
        subscription_token=read_table(t.table("subscription_token"), _read_token),
        allow_anonymous_connect_without_token=t.get_bool(
            "allow_anonymous_connect_without_token", d.allow_anonymous_connect_without_token
        ),
        allowed_origins=t.str_list("allowed_origins", d.allowed_origins),
        ping_interval=t.duration("ping_interval", d.ping_interval),
        pong_timeout=t.duration("pong_timeout", d.pong_timeout),
        channel_limit=t.get_int("channel_limit", d.channel_limit, minimum=0),
        queue_max_size=t.get_int("queue_max_size", d.queue_max_size, minimum=1),
        history_max_publication_limit=t.get_int(
            "history_max_publication_limit", d.history_max_publication_limit, minimum=0
        ),
        recovery_max_publication_limit=t.get_int(
            "recovery_max_publication_limit", d.recovery_max_publication_limit, minimum=0
        ),
        stale_close_delay=t.duration("stale_close_delay", d.stale_close_delay),
        expired_close_delay=t.duration("expired_close_delay", d.expired_close_delay),
        expired_sub_close_delay=t.duration("expired_sub_close_delay", d.expired_sub_close_delay),
        connect_include_server_time=t.get_bool("connect_include_server_time", d.connect_include_server_time),
        connection_limit=t.get_int("connection_limit", d.connection_limit, minimum=0),
        user_connection_limit=t.get_int("user_connection_limit", d.user_connection_limit, minimum=0),
        connection_rate_limit=t.get_int("connection_rate_limit", d.connection_rate_limit, minimum=0),
        channel_position_check_delay=t.duration("channel_position_check_delay", d.channel_position_check_delay),
        connect_proxy=connect_proxy,
        refresh_proxy=refresh_proxy,
    )
    # A pong deadline at or past the next ping would declare live clients dead.
    if cfg.ping_interval != 0 and cfg.ping_interval <= cfg.pong_timeout:
        t.error("pong_timeout", "must be less than client.ping_interval")
    return cfg


def _read_client_proxy(t: Table) -> ProxyEndpoint | None:
    """``client.proxy.connect`` / ``refresh``: the proxy when ``enabled``, else None."""
    enabled = t.get_bool("enabled", False)
    proxy = read_proxy(t, DEFAULT_PROXY_NAME)
    if enabled and not proxy.endpoint:
        t.error("endpoint", "required when enabled")
    return proxy if enabled and proxy.endpoint else None


def _read_personal_channel(t: Table) -> tuple[bool, str]:
    """``enabled`` and ``personal_channel_namespace``; ``single_connection`` is not implemented
    (it stays in the warning of ignored keys)."""
    d = ClientConfig()
    return (t.get_bool("enabled", d.personal_channel),
            t.get_str("personal_channel_namespace", d.personal_channel_namespace))


def _read_websocket(t: Table) -> WebSocketConfig:
    d = WebSocketConfig()
    return WebSocketConfig(
        message_size_limit=t.get_int("message_size_limit", d.message_size_limit, minimum=1),
        conformance_echo_path=t.get_str("conformance_echo_path", d.conformance_echo_path),
        compression=t.get_bool("compression", d.compression),
        compression_level=t.get_int("compression_level", d.compression_level, minimum=-1, maximum=9),
        compression_min_size=t.get_int("compression_min_size", d.compression_min_size, minimum=0),
    )


def _read_http_api(t: Table) -> HttpApiConfig:
    d = HttpApiConfig()
    return HttpApiConfig(
        key=t.get_str("key", d.key),
        disabled=t.get_bool("disabled", d.disabled),
        external=t.get_bool("external", d.external),
        insecure=t.get_bool("insecure", d.insecure),
        error_mode=t.get_str("error_mode", d.error_mode, choices=("", "transport")),
    )


#: The delta types subscribers can ask for (Centrifugo knows only fossil).
DELTA_TYPES = ("fossil",)
_OPTION_BOOLS = tuple(f.name for f in dataclasses.fields(ChannelOptions) if f.type in ("bool", bool))
_NEEDS_HISTORY = ("force_recovery", "allow_recovery", "force_positioning", "allow_positioning")


def _read_channel_options(t: Table, proxies: _ChannelProxies | None = None) -> ChannelOptions:
    proxies = proxies or _ChannelProxies()
    subscribe_proxy = proxies.resolve(t, "subscribe")
    publish_proxy = proxies.resolve(t, "publish")
    sub_refresh_proxy = proxies.resolve(t, "sub_refresh")
    flags = {name: t.get_bool(name, False) for name in _OPTION_BOOLS}
    size = t.get_int("history_size", 0, minimum=0)
    ttl = t.duration("history_ttl", 0.0)
    meta_ttl = t.duration("history_meta_ttl", 0.0)
    # Half-configured history would silently keep nothing; make it an error instead.
    if size > 0 and ttl == 0:
        t.error("history_ttl", "history_size and history_ttl must be set together")
    elif ttl > 0 and size == 0:
        t.error("history_size", "history_size and history_ttl must be set together")
    elif size == 0:
        for name in _NEEDS_HISTORY:
            if flags[name]:
                t.error(name, "requires history_size and history_ttl")
    delta_types = t.str_list("allowed_delta_types", ())
    for kind in delta_types:
        if kind not in DELTA_TYPES:
            t.error("allowed_delta_types", f"unknown delta type {kind!r} (known: {', '.join(DELTA_TYPES)})")
    return ChannelOptions(history_size=size, history_ttl=ttl, history_meta_ttl=meta_ttl,
                          allowed_delta_types=tuple(k for k in delta_types if k in DELTA_TYPES),
                          subscribe_proxy=subscribe_proxy, publish_proxy=publish_proxy,
                          sub_refresh_proxy=sub_refresh_proxy, **flags)


@dataclass(frozen=True, slots=True)
class _ChannelProxies:
    """``channel.proxy.*`` (each event's ``"default"`` proxy) and the named ``proxies``."""

    defaults: dict[str, ProxyEndpoint] = field(default_factory=dict)
    named: NamedProxies = field(default_factory=dict)

    def resolve(self, t: Table, kind: str) -> ProxyEndpoint | None:
        return resolve_proxy(t, f"{kind}_proxy_enabled", f"{kind}_proxy_name", self.defaults.get(kind),
                             f"channel.proxy.{kind}", self.named)


def _read_channel(t: Table, named: NamedProxies | None = None) -> ChannelConfig:
    d = ChannelConfig()
    section = t.table("proxy")
    defaults = {}
    for kind in ("subscribe", "publish", "sub_refresh"):
        sub = section.table(kind)
        defaults[kind] = read_proxy(sub, DEFAULT_PROXY_NAME)
        sub.finish()
    section.finish()
    proxies = _ChannelProxies(defaults, named or {})

    def read_options(table: Table) -> ChannelOptions:
        return _read_channel_options(table, proxies)

    without = read_table(t.table("without_namespace"), read_options)
    namespaces: list[tuple[str, ChannelOptions]] = []
    seen: set[str] = set()
    for ns in t.table_list("namespaces"):
        if not ns.has("name"):
            ns.error("name", "required")
        name = ns.get_str("name", "")
        if ns.has("name") and not _NAMESPACE_NAME.fullmatch(name):
            ns.error("name", f"invalid namespace name {name!r} (must match ^[-a-zA-Z0-9_.]{{2,}}$)")
        elif name in seen:
            ns.error("name", f"duplicate namespace name {name!r}")
        seen.add(name)
        namespaces.append((name, read_table(ns, read_options)))
    return ChannelConfig(
        without_namespace=without,
        namespaces=tuple(namespaces),
        max_length=t.get_int("max_length", d.max_length, minimum=1),
        history_meta_ttl=t.duration("history_meta_ttl", d.history_meta_ttl),
        private_prefix=t.get_str("private_prefix", d.private_prefix),
        namespace_boundary=_separator(t, "namespace_boundary", d.namespace_boundary),
        user_boundary=_separator(t, "user_boundary", d.user_boundary),
        user_separator=_separator(t, "user_separator", d.user_separator),
    )


def _separator(t: Table, name: str, default: str) -> str:
    value = t.get_str(name, default)
    if not value:
        t.error(name, "must not be empty")
        return default
    return value


_IMPORT_PATH = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


def _read_rpc_handlers(t: Table) -> tuple[tuple[str, str], ...]:
    """``[shardgate.rpc_handlers] method = "package.module:function"``."""
    handlers = []
    for method in t.names():
        target = t.get_str(method, "")
        if not _IMPORT_PATH.fullmatch(target):
            t.error(method, 'expected "package.module:function"')
            continue
        handlers.append((method, target))
    return tuple(handlers)


def _read_shardgate(t: Table) -> ShardgateConfig:
    d = ShardgateConfig()
    return ShardgateConfig(
        workers=t.get_int("workers", d.workers, minimum=0),
        runtime_dir=t.get_str("runtime_dir", d.runtime_dir),
        cpu_pinning=t.get_bool("cpu_pinning", d.cpu_pinning),
        graceful_timeout=t.duration("graceful_timeout", d.graceful_timeout),
        bus_request_timeout=t.duration("bus_request_timeout", d.bus_request_timeout, positive=True),
        max_commands_per_frame=t.get_int("max_commands_per_frame", d.max_commands_per_frame, minimum=1),
        max_inflight_commands=t.get_int("max_inflight_commands", d.max_inflight_commands, minimum=1),
        api_batch_max_commands=t.get_int("api_batch_max_commands", d.api_batch_max_commands, minimum=1),
        rpc_echo=t.get_bool("rpc_echo", d.rpc_echo),
        rpc_handlers=_read_rpc_handlers(t.table("rpc_handlers")),
        boot_failure_limit=t.get_int("boot_failure_limit", d.boot_failure_limit, minimum=1),
        log_level=t.get_str("log_level", d.log_level, choices=_LOG_LEVELS),
        log_format=t.get_str("log_format", d.log_format, choices=("text", "json")),
        api_max_body_size=t.get_int("api_max_body_size", d.api_max_body_size, minimum=1024),
        pid_file=t.get_str("pid_file", d.pid_file),
        command_rate=t.get_float("command_rate", d.command_rate, minimum=0.0),
        command_burst=t.get_int("command_burst", d.command_burst, minimum=1),
        per_ip_connection_limit=t.get_int("per_ip_connection_limit", d.per_ip_connection_limit, minimum=0),
        per_ip_connection_rate=t.get_float("per_ip_connection_rate", d.per_ip_connection_rate, minimum=0.0),
        handshake_timeout=t.duration("handshake_timeout", d.handshake_timeout, positive=True),
        heartbeat_timeout=t.duration("heartbeat_timeout", d.heartbeat_timeout, positive=True),
        drain_window=t.duration("drain_window", d.drain_window),
        events_out=read_table(t.table("events_out"), read_events_out),
        socketio=read_table(t.table("socketio"), read_socketio),
    )


_FIELD_KINDS = {"bool": "bool", "int": "int", "float": "float", "str": "str"}


def known_keys() -> dict[str, KeyNode]:
    """The key table: every Centrifugo v6 key plus the ``shardgate`` section."""
    shardgate: dict[str, KeyNode] = {
        f.name: _FIELD_KINDS.get(str(f.type), "any") for f in dataclasses.fields(ShardgateConfig)
    }
    shardgate["rpc_handlers"] = "map"
    shardgate["events_out"] = EVENTS_OUT_KEYS
    shardgate["socketio"] = SOCKETIO_KEYS
    return {**CENTRIFUGO_V6, "shardgate": shardgate}


def _read_endpoint(t: Table) -> EndpointConfig:
    return EndpointConfig(enabled=t.get_bool("enabled", True))


def parse_config(data: Mapping[str, object]) -> Config:
    """Validate a decoded config document and build a :class:`Config`.

    Missing keys take the dataclass defaults. The whole document is checked: one problem
    raises :class:`ConfigError` naming the dotted key, several raise :class:`ConfigErrors`.
    Centrifugo keys shardgate ignores are named in ``Config.warning``.
    """
    problems = Problems(known_keys())
    root = as_table(data, "", problems)
    named = read_named_proxies(root)
    shard_table = root.table("shardgate")
    shardgate = read_table(shard_table, _read_shardgate)
    log = root.table("log")
    level = log.get_str("level", "", choices=tuple(_CENTRIFUGO_LOG_LEVELS))
    log_file = log.get_str("file", "")
    log.finish()
    if level and not shard_table.has("log_level"):
        shardgate = dataclasses.replace(shardgate, log_level=_CENTRIFUGO_LOG_LEVELS[level])
    if log_file:
        shardgate = dataclasses.replace(shardgate, log_file=log_file)
    shutdown = root.table("shutdown")
    timeout = shutdown.duration("timeout", shardgate.graceful_timeout)
    shutdown.finish()
    if shutdown.has("timeout") and not shard_table.has("graceful_timeout"):
        shardgate = dataclasses.replace(shardgate, graceful_timeout=timeout)
    config = Config(
        http_server=read_table(root.table("http_server"), _read_http_server),
        client=read_table(root.table("client"), _read_client),
        websocket=read_table(root.table("websocket"), _read_websocket),
        http_api=read_table(root.table("http_api"), _read_http_api),
        channel=read_table(root.table("channel"), lambda t: _read_channel(t, named)),
        shardgate=shardgate,
        engine=read_table(root.table("engine"), read_engine),
        health=read_table(root.table("health"), _read_endpoint),
        prometheus=read_table(root.table("prometheus"), _read_endpoint),
        admin=read_table(root.table("admin"), read_admin),
        rpc=read_table(root.table("rpc"), lambda t: read_rpc(t, named)),
        consumers=read_consumers(root),
        transports=read_transports(root),
    )
    personal = config.personal_channel_of("")
    if personal is not None and config.client.personal_channel_namespace and config.channel_options(personal) is None:
        root.report(ConfigError("client.subscribe_to_user_personal_channel.personal_channel_namespace",
                                f"namespace {config.client.personal_channel_namespace!r} is not configured"))
    root.finish()
    problems.raise_if_any()
    return dataclasses.replace(config, warning=problems.warning())
