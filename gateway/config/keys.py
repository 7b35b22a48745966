"""Every Centrifugo v6 config key, with its type: the table of what a Centrifugo config may hold.

Follows Centrifugo v6 (github.com/centrifugal/centrifugo, ``internal/config/config.go`` ``Config``
and ``internal/configtypes/types.go``, v6.x). shardgate implements a subset; a key in this table
that shardgate does not read is accepted and listed in one startup warning, a key in no table is
an error with a "did you mean" suggestion. The table also drives environment overrides
(``SHARDGATE_CLIENT_TOKEN_HMAC_SECRET_KEY``): the variable name is split into keys by walking it,
and the value is parsed by the leaf's type.

A node is a dict (a table of keys), a ``ListOf`` (a list of tables, e.g. ``channel.namespaces``)
or a leaf type name: bool, int, float, duration, str, strs (list of strings), map (free-form
table) or any (a section whose content is not checked).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

__all__ = ["CENTRIFUGO_V6", "KeyNode", "ListOf", "node_at"]


@dataclass(frozen=True, slots=True)
class ListOf:
    item: dict[str, KeyNode]


KeyNode: TypeAlias = str | ListOf | dict[str, "KeyNode"]

_TLS: dict[str, KeyNode] = {
    "enabled": "bool", "cert_pem": "str", "key_pem": "str", "cert_pem_file": "str", "key_pem_file": "str",
    "server_ca_pem": "str", "server_ca_pem_file": "str", "client_ca_pem": "str", "client_ca_pem_file": "str",
    "insecure_skip_verify": "bool", "server_name": "str",
}

_TOKEN: dict[str, KeyNode] = {
    "hmac_secret_key": "str", "rsa_public_key": "str", "ecdsa_public_key": "str",
    "jwks_public_endpoint": "str", "audience": "str", "audience_regex": "str", "issuer": "str",
    "issuer_regex": "str", "user_id_claim": "str",
    # shardgate extension: HMAC key rotation
    "hmac_previous_secret_key": "str", "hmac_previous_secret_key_valid_until": "int",
}

_CHANNEL_OPTIONS: dict[str, KeyNode] = {
    "presence": "bool", "join_leave": "bool", "force_push_join_leave": "bool",
    "history_size": "int", "history_ttl": "duration", "history_meta_ttl": "duration",
    "force_positioning": "bool", "allow_positioning": "bool", "force_recovery": "bool",
    "allow_recovery": "bool", "force_recovery_mode": "str", "allowed_delta_types": "strs",
    "delta_publish": "bool",
    "allow_subscribe_for_anonymous": "bool", "allow_subscribe_for_client": "bool",
    "allow_publish_for_anonymous": "bool", "allow_publish_for_subscriber": "bool",
    "allow_publish_for_client": "bool", "allow_presence_for_anonymous": "bool",
    "allow_presence_for_subscriber": "bool", "allow_presence_for_client": "bool",
    "allow_history_for_anonymous": "bool", "allow_history_for_subscriber": "bool",
    "allow_history_for_client": "bool", "allow_user_limited_channels": "bool",
    "channel_regex": "str",
    "subscribe_proxy_enabled": "bool", "subscribe_proxy_name": "str",
    "publish_proxy_enabled": "bool", "publish_proxy_name": "str",
    "sub_refresh_proxy_enabled": "bool", "sub_refresh_proxy_name": "str",
    "subscribe_stream_proxy_enabled": "bool", "subscribe_stream_proxy_name": "str",
    "subscribe_stream_bidirectional": "bool",
    "batch_max_size": "int", "batch_max_delay": "duration", "batch_flush_latest": "bool",
}

_RPC_OPTIONS: dict[str, KeyNode] = {"proxy_enabled": "bool", "proxy_name": "str"}

_REDIS: dict[str, KeyNode] = {
    "address": "strs", "prefix": "str", "connect_timeout": "duration", "io_timeout": "duration",
    "db": "int", "user": "str", "password": "str", "client_name": "str", "force_resp2": "bool",
    "cluster_address": "strs", "sentinel_address": "strs", "sentinel_user": "str",
    "sentinel_password": "str", "sentinel_master_name": "str", "sentinel_client_name": "str",
    "tls": _TLS, "sentinel_tls": _TLS, "replica_client": {"enabled": "bool"},
    "use_lua_50": "bool", "history_use_streams": "bool", "presence_ttl": "duration",
    "presence_hash_field_ttl": "bool", "presence_user_mapping": "bool",
}

_PROXY_COMMON: dict[str, KeyNode] = {
    "http_headers": "strs", "grpc_metadata": "strs", "emulated_headers": "strs", "binary_encoding": "bool",
    "include_connection_meta": "bool",
    "http": {"static_headers": "map", "tls": _TLS, "status_to_code_transforms": "any"},
    "grpc": {"tls": _TLS, "credentials_key": "str", "credentials_value": "str", "compression": "bool",
             "static_metadata": "map"},
}

# configtypes.Proxy: an endpoint, its timeout and the common options.
_PROXY: dict[str, KeyNode] = {"endpoint": "str", "timeout": "duration", **_PROXY_COMMON}

_UNI_WS: dict[str, KeyNode] = {
    "enabled": "bool", "handler_prefix": "str", "compression": "bool", "compression_min_size": "int",
    "compression_level": "int", "read_buffer_size": "int", "use_write_buffer_pool": "bool",
    "write_buffer_size": "int", "write_timeout": "duration", "message_size_limit": "int",
}

_STREAM: dict[str, KeyNode] = {"enabled": "bool", "handler_prefix": "str", "max_request_body_size": "int"}

_ENDPOINT: dict[str, KeyNode] = {"enabled": "bool", "handler_prefix": "str"}

_PUBLICATION_DATA_MODE: dict[str, KeyNode] = {
    "enabled": "bool", "channels_header": "str", "idempotency_key_header": "str", "delta_header": "str",
    "tags_header_prefix": "str", "version_header": "str", "version_epoch_header": "str",
}

_POSTGRESQL_CONSUMER: dict[str, KeyNode] = {
    "dsn": "str", "outbox_table_name": "str", "num_partitions": "int", "partition_select_limit": "int",
    "partition_poll_interval": "duration", "partition_notification_channel": "str",
    "partition_notification_dsn": "str", "use_try_lock": "bool", "tls": _TLS,
}

# shardgate's own consumer type (gateway.config.consumers.RabbitMQConsumerConfig).
_RABBITMQ_CONSUMER: dict[str, KeyNode] = {
    "url": "str", "queue": "str", "declare": "bool", "durable": "bool", "exchange": "str", "exchange_type": "str",
    "routing_keys": "strs", "dead_letter_exchange": "str", "dead_letter_queue": "str", "prefetch": "int",
    "ordered": "bool", "method_header": "str", "publication_data_mode": _PUBLICATION_DATA_MODE,
    "retry_backoff_min": "duration", "retry_backoff_max": "duration", "max_attempts": "int",
    "reconnect_backoff_max": "duration", "ack_delay": "duration",
}

CENTRIFUGO_V6: dict[str, KeyNode] = {
    "http_server": {
        "address": "str", "port": "int", "internal_address": "str", "internal_port": "int",
        "tls": _TLS, "internal_tls": _TLS, "tls_external": "bool", "http3": {"enabled": "bool"},
        "tls_autocert": {
            "enabled": "bool", "host_whitelist": "strs", "cache_dir": "str", "email": "str",
            "server_name": "str", "http": "bool", "http_addr": "str",
        },
    },
    "log": {"level": "str", "file": "str"},
    "engine": {"type": "str", "redis": _REDIS},
    "broker": {"enabled": "bool", "type": "str", "redis": _REDIS, "nats": "any"},
    "presence_manager": {"enabled": "bool", "type": "str", "redis": _REDIS},
    "map_broker": "any",
    "client": {
        "proxy": {"connect": {"enabled": "bool", **_PROXY}, "refresh": {"enabled": "bool", **_PROXY}},
        "allowed_origins": "strs",
        "token": _TOKEN, "subscription_token": {"enabled": "bool", **_TOKEN},
        "allow_anonymous_connect_without_token": "bool", "disallow_anonymous_connection_tokens": "bool",
        "ping_interval": "duration", "pong_timeout": "duration", "allowed_delta_types": "strs",
        "expired_close_delay": "duration", "expired_sub_close_delay": "duration",
        "stale_close_delay": "duration", "channel_limit": "int", "queue_max_size": "int",
        "presence_update_interval": "duration", "concurrency": "int",
        "channel_position_check_delay": "duration", "channel_position_max_time_lag": "duration",
        "connection_limit": "int", "user_connection_limit": "int", "connection_rate_limit": "int",
        "connect_include_server_time": "bool", "history_max_publication_limit": "int",
        "recovery_max_publication_limit": "int", "insecure_skip_token_signature_verify": "bool",
        "user_id_http_header": "str", "insecure": "bool",
        "subscribe_to_user_personal_channel": {
            "enabled": "bool", "personal_channel_namespace": "str", "single_connection": "bool",
        },
    },
    "channel": {
        "proxy": {kind: _PROXY for kind in ("subscribe", "publish", "sub_refresh", "subscribe_stream",
                                             "map_publish", "map_remove", "shared_poll_refresh")},
        "without_namespace": _CHANNEL_OPTIONS,
        "namespaces": ListOf({"name": "str", **_CHANNEL_OPTIONS}),
        "history_meta_ttl": "duration", "max_length": "int", "private_prefix": "str",
        "namespace_boundary": "str", "user_boundary": "str", "user_separator": "str",
    },
    "rpc": {
        "proxy": _PROXY,
        "without_namespace": _RPC_OPTIONS, "namespaces": ListOf({"name": "str", **_RPC_OPTIONS}),
        "ping": {"enabled": "bool", "method": "str"}, "namespace_boundary": "str",
    },
    "proxies": ListOf({"name": "str", **_PROXY}),
    "http_api": {
        "disabled": "bool", "handler_prefix": "str", "key": "str", "error_mode": "str",
        "external": "bool", "insecure": "bool",
    },
    "grpc_api": {
        "enabled": "bool", "error_mode": "str", "address": "str", "port": "int", "key": "str",
        "tls": _TLS, "reflection": "bool", "max_receive_message_size": "int",
    },
    "consumers": ListOf({
        "name": "str", "enabled": "bool", "type": "str", "postgresql": _POSTGRESQL_CONSUMER,
        "rabbitmq": _RABBITMQ_CONSUMER,  # shardgate extension (Centrifugo has it commented out)
        "kafka": "any", "nats_jetstream": "any", "redis_stream": "any", "google_pub_sub": "any",
        "aws_sqs": "any", "azure_service_bus": "any",
    }),
    "websocket": {
        "disabled": "bool", "handler_prefix": "str", "compression": "bool", "compression_min_size": "int",
        "compression_level": "int", "read_buffer_size": "int", "use_write_buffer_pool": "bool",
        "write_buffer_size": "int", "write_timeout": "duration", "message_size_limit": "int",
        "conformance_echo_path": "str",  # shardgate extension (Autobahn echo endpoint)
    },
    "sse": _STREAM,
    "http_stream": _STREAM,
    "webtransport": _ENDPOINT,
    "uni_sse": _STREAM,
    "uni_http_stream": _STREAM,
    "uni_websocket": _UNI_WS,
    "uni_grpc": {
        "enabled": "bool", "address": "str", "port": "int", "max_receive_message_size": "int", "tls": _TLS,
    },
    "emulation": {"handler_prefix": "str", "max_request_body_size": "int"},
    "admin": {
        "enabled": "bool", "handler_prefix": "str", "password": "str", "secret": "str", "insecure": "bool",
        "web_path": "str", "web_proxy_address": "str", "external": "bool",
    },
    "prometheus": {"enabled": "bool", "handler_prefix": "str"},
    "health": {"enabled": "bool", "handler_prefix": "str"},
    "swagger": {"enabled": "bool", "handler_prefix": "str"},
    "debug": {"enabled": "bool", "handler_prefix": "str"},
    "dev": "any",
    "init": "any",
    "opentelemetry": {"enabled": "bool", "api": "bool", "consuming": "bool"},
    "graphite": {
        "enabled": "bool", "host": "str", "port": "int", "prefix": "str", "interval": "duration", "tags": "bool",
    },
    "usage_stats": {"disabled": "bool"},
    "node": {"name": "str", "info_metrics_aggregate_interval": "duration"},
    "shutdown": {"timeout": "duration"},
    "pid_file": "str",
    "enable_unreleased_features": "bool",
}


def node_at(root: KeyNode, path: str) -> KeyNode | None:
    """The node of a dotted table path (``channel.namespaces[2]``); ``None`` when not in the table."""
    node: KeyNode | None = root
    if not path:
        return node
    for part in path.split("."):
        name = part.split("[", 1)[0]
        if isinstance(node, ListOf):
            node = node.item
        if not isinstance(node, dict) or name not in node:
            return None
        node = node[name]
        if "[" in part and isinstance(node, ListOf):
            node = node.item
    return node
