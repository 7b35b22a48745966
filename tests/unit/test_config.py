"""Config loading and validation: Centrifugo key names, strict errors with dotted keys."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
from pathlib import Path
from typing import Any

import pytest

from gateway.config import (
    ChannelConfig,
    ChannelOptions,
    ClientConfig,
    Config,
    ConfigError,
    EngineConfig,
    HttpServerConfig,
    RedisEngineConfig,
    RedisTlsConfig,
    ShardgateConfig,
    TokenConfig,
    dev_config,
    load_config,
    parse_config,
)
from gateway.config.durations import DurationError, parse_duration

FULL_TOML = """
[http_server]
address = "0.0.0.0"
port = 9000
internal_port = 9001

[client]
allow_anonymous_connect_without_token = true
allowed_origins = ["https://example.com", "http://localhost:3000"]
ping_interval = "20s"
pong_timeout = "5s"
channel_limit = 64
queue_max_size = 2048
history_max_publication_limit = 50
recovery_max_publication_limit = 60
stale_close_delay = "1m"
expired_close_delay = "30s"
expired_sub_close_delay = "1m30s"
connect_include_server_time = true

[client.token]
hmac_secret_key = "secret"
rsa_public_key = "-----BEGIN PUBLIC KEY-----\\nabc\\n-----END PUBLIC KEY-----"

[client.subscription_token]
hmac_secret_key = "other"

[websocket]
message_size_limit = 1024

[http_api]
key = "api-key"

[channel]
max_length = 128
history_meta_ttl = "24h"

[channel.without_namespace]
presence = true
history_size = 10
history_ttl = "300s"
force_recovery = true

[[channel.namespaces]]
name = "chat"
join_leave = true
allow_publish_for_client = true

[[channel.namespaces]]
name = "feed.v2"
history_size = 5
history_ttl = "1h"
history_meta_ttl = "2h"
allow_positioning = true

[shardgate]
workers = 2
runtime_dir = "/run/shardgate"
cpu_pinning = true
graceful_timeout = "10s"
bus_request_timeout = "500ms"
max_commands_per_frame = 100
rpc_echo = true
boot_failure_limit = 3
log_level = "debug"
"""

FULL_DICT: dict[str, Any] = {
    "http_server": {"address": "0.0.0.0", "port": 9000, "internal_port": 9001},
    "client": {
        "allow_anonymous_connect_without_token": True,
        "allowed_origins": ["https://example.com", "http://localhost:3000"],
        "ping_interval": "20s",
        "pong_timeout": 5,
        "channel_limit": 64,
        "queue_max_size": 2048,
        "history_max_publication_limit": 50,
        "recovery_max_publication_limit": 60,
        "stale_close_delay": 60,
        "expired_close_delay": "30s",
        "expired_sub_close_delay": 90.0,
        "connect_include_server_time": True,
        "token": {
            "hmac_secret_key": "secret",
            "rsa_public_key": "-----BEGIN PUBLIC KEY-----\nabc\n-----END PUBLIC KEY-----",
        },
        "subscription_token": {"hmac_secret_key": "other"},
    },
    "websocket": {"message_size_limit": 1024},
    "http_api": {"key": "api-key"},
    "channel": {
        "max_length": 128,
        "history_meta_ttl": "24h",
        "without_namespace": {
            "presence": True,
            "history_size": 10,
            "history_ttl": "300s",
            "force_recovery": True,
        },
        "namespaces": [
            {"name": "chat", "join_leave": True, "allow_publish_for_client": True},
            {
                "name": "feed.v2",
                "history_size": 5,
                "history_ttl": "1h",
                "history_meta_ttl": "2h",
                "allow_positioning": True,
            },
        ],
    },
    "shardgate": {
        "workers": 2,
        "runtime_dir": "/run/shardgate",
        "cpu_pinning": True,
        "graceful_timeout": "10s",
        "bus_request_timeout": "500ms",
        "max_commands_per_frame": 100,
        "rpc_echo": True,
        "boot_failure_limit": 3,
        "log_level": "debug",
    },
}


def error_of(data: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return info.value


# ------------------------------------------------------------------ durations


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("25s", 25.0),
        ("720h", 720 * 3600.0),
        ("1m30s", 90.0),
        ("500ms", 0.5),
        ("1h2m3.5s", 3723.5),
        ("0", 0.0),
        ("0s", 0.0),
        ("-0", 0.0),
        ("+5s", 5.0),
        ("1.5h", 5400.0),
        (".5s", 0.5),
        ("100us", 100e-6),
        ("100\u00b5s", 100e-6),
        ("100\u03bcs", 100e-6),
        ("1500ns", 1.5e-6),
        ("1h1h", 7200.0),
        (0, 0.0),
        (25, 25.0),
        (2.5, 2.5),
    ],
)
def test_parse_duration_valid(value: object, seconds: float) -> None:
    assert parse_duration(value, "k") == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value",
    ["", "25", "s", "5x", "5 s", " 5s", "5s ", "1d", "-5s", "-1", "--5s", "5S", "1e3s", "1.2.3s", "h5",
     -1, -0.5, float("inf"), float("nan"), True, False, None, [], {}],
)  # fmt: skip
def test_parse_duration_invalid(value: object) -> None:
    with pytest.raises(DurationError) as info:
        parse_duration(value, "client.ping_interval")
    assert isinstance(info.value, ValueError)
    assert info.value.key == "client.ping_interval"
    assert "client.ping_interval" not in info.value.message


# ------------------------------------------------------------------ defaults and full files


def test_defaults() -> None:
    config = parse_config({})
    assert config == Config()
    assert config.http_server == HttpServerConfig("127.0.0.1", 8000, 8001)
    assert config.client.ping_interval == 25.0
    assert config.client.pong_timeout == 8.0
    assert config.client.channel_limit == 128
    assert config.client.queue_max_size == 1048576
    assert config.client.token == TokenConfig()
    assert not config.client.token.configured
    assert config.websocket.message_size_limit == 65536
    assert config.http_api.key == ""
    assert config.channel.max_length == 255
    assert config.channel.history_meta_ttl == 720 * 3600.0
    assert config.channel.namespaces == ()
    assert config.shardgate == ShardgateConfig()
    assert config.shardgate.log_level == "info"
    assert not config.channel.without_namespace.history_enabled


def test_empty_tables_are_defaults() -> None:
    data: dict[str, Any] = {
        k: {} for k in ("http_server", "client", "websocket", "http_api", "channel", "shardgate")
    }
    assert parse_config(data) == Config()


def test_full_toml_and_json_are_equal(tmp_path: Path) -> None:
    toml_path = tmp_path / "config.toml"
    toml_path.write_text(FULL_TOML)
    json_path = tmp_path / "config.json"
    json_path.write_text(json.dumps(FULL_DICT))
    from_toml = load_config(toml_path)
    from_json = load_config(str(json_path))
    assert from_toml == from_json

    c = from_toml
    assert c.http_server == HttpServerConfig("0.0.0.0", 9000, 9001)
    assert c.client.token.hmac_secret_key == "secret"
    assert c.client.token.rsa_public_key.startswith("-----BEGIN PUBLIC KEY-----\n")
    assert c.client.token.configured
    assert c.client.subscription_token == TokenConfig(hmac_secret_key="other")
    assert c.client.allow_anonymous_connect_without_token
    assert c.client.allowed_origins == ("https://example.com", "http://localhost:3000")
    assert c.client.ping_interval == 20.0
    assert c.client.pong_timeout == 5.0
    assert c.client.stale_close_delay == 60.0
    assert c.client.expired_sub_close_delay == 90.0
    assert c.client.connect_include_server_time
    assert c.websocket.message_size_limit == 1024
    assert c.http_api.key == "api-key"
    assert c.channel.max_length == 128
    assert c.channel.history_meta_ttl == 86400.0
    assert c.channel.without_namespace == ChannelOptions(
        presence=True, history_size=10, history_ttl=300.0, force_recovery=True
    )
    assert [name for name, _ in c.channel.namespaces] == ["chat", "feed.v2"]
    feed = c.channel.namespaces[1][1]
    assert feed.history_enabled and feed.history_meta_ttl == 7200.0 and feed.allow_positioning
    assert c.shardgate == ShardgateConfig(
        workers=2,
        runtime_dir="/run/shardgate",
        cpu_pinning=True,
        graceful_timeout=10.0,
        bus_request_timeout=0.5,
        max_commands_per_frame=100,
        rpc_echo=True,
        boot_failure_limit=3,
        log_level="debug",
    )
    assert c.worker_count() == 2


def test_unknown_extension_tries_json_then_toml(tmp_path: Path) -> None:
    as_json = tmp_path / "conf.cfg"
    as_json.write_text(json.dumps(FULL_DICT))
    as_toml = tmp_path / "conf"
    as_toml.write_text(FULL_TOML)
    assert load_config(as_json) == load_config(as_toml) == parse_config(FULL_DICT)


def test_config_is_hashable_and_picklable() -> None:
    config = parse_config(FULL_DICT)
    copy = pickle.loads(pickle.dumps(config))
    assert copy == config
    assert hash(copy) == hash(config)
    assert copy.channel_options("chat:x") == config.channel_options("chat:x")


# ------------------------------------------------------------------ load_config errors


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("bad.toml", "[client\nping_interval = "),
        ("bad.json", '{"client": {"ping_interval": '),
        ("bad.conf", "{{{ not json\n= nor toml ]]"),
    ],
)
def test_load_config_unparsable_is_one_line(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"config: {path}: ")
    assert info.value.key == str(path)


def test_load_config_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == str(path)
    assert "\n" not in str(info.value)


def test_load_config_top_level_not_a_table(tmp_path: Path) -> None:
    path = tmp_path / "list.json"
    path.write_text("[1, 2]")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == str(path)


def test_load_config_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bin.json"
    path.write_bytes(b"\xff\xfe{}")
    with pytest.raises(ConfigError):
        load_config(path)


def test_load_config_validation_error_keeps_dotted_key(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[client]\nping_interval = "soon"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == "client.ping_interval"


def test_config_error_format() -> None:
    err = ConfigError("client.ping_interval", "bad\nvalue")
    assert err.key == "client.ping_interval"
    assert str(err) == "config: client.ping_interval: bad value"
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err)


# ------------------------------------------------------------------ unknown keys


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"bogus": 1}, "bogus"),
        ({"client": {"ping_intervall": "1s"}}, "client.ping_intervall"),
        ({"client": {"token": {"hmac_secret": "x"}}}, "client.token.hmac_secret"),
        ({"channel": {"without_namespace": {"presense": True}}}, "channel.without_namespace.presense"),
        (
            {"channel": {"namespaces": [{"name": "ok"}, {"name": "chat", "histroy_size": 1}]}},
            "channel.namespaces[1].histroy_size",
        ),
        ({"shardgate": {"threads": 2}}, "shardgate.threads"),
    ],
)
def test_unknown_key(data: dict[str, Any], key: str) -> None:
    err = error_of(data)
    assert err.key == key
    assert str(err).startswith(f"config: {key}: unknown key")


# ------------------------------------------------------------------ types and ranges


@pytest.mark.parametrize(
    ("data", "key", "fragment"),
    [
        ({"client": {"allow_anonymous_connect_without_token": 1}}, "client.allow_anonymous_connect_without_token", "bool"),  # noqa: E501
        ({"client": {"allow_anonymous_connect_without_token": "true"}}, "client.allow_anonymous_connect_without_token", "bool"),  # noqa: E501
        ({"http_server": {"port": True}}, "http_server.port", "integer"),
        ({"http_server": {"port": 8000.0}}, "http_server.port", "integer"),
        ({"http_server": {"port": "eighty"}}, "http_server.port", "integer"),
        ({"http_server": {"address": 127}}, "http_server.address", "string"),
        ({"client": {"ping_interval": "soon"}}, "client.ping_interval", "duration"),
        ({"client": {"ping_interval": True}}, "client.ping_interval", "duration"),
        ({"client": {"ping_interval": -1}}, "client.ping_interval", "negative"),
        ({"client": {"allowed_origins": "https://x"}}, "client.allowed_origins", "list of strings"),
        ({"client": {"allowed_origins": ["a", 1]}}, "client.allowed_origins", "list of strings"),
        ({"client": {"token": "secret"}}, "client.token", "table"),
        ({"client": []}, "client", "table"),
        ({"channel": {"namespaces": {"name": "chat"}}}, "channel.namespaces", "list"),
        ({"channel": {"namespaces": ["chat"]}}, "channel.namespaces[0]", "table"),
        ({"channel": {"namespaces": [{"name": "chat", "history_ttl": "x"}]}}, "channel.namespaces[0].history_ttl", "duration"),  # noqa: E501
    ],
)  # fmt: skip
def test_bad_types(data: dict[str, Any], key: str, fragment: str) -> None:
    err = error_of(data)
    assert err.key == key
    assert fragment in err.message


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"http_server": {"port": -1}}, "http_server.port"),
        ({"http_server": {"port": 65536}}, "http_server.port"),
        ({"http_server": {"internal_port": 70000}}, "http_server.internal_port"),
        ({"websocket": {"message_size_limit": 0}}, "websocket.message_size_limit"),
        ({"client": {"queue_max_size": 0}}, "client.queue_max_size"),
        ({"client": {"channel_limit": -1}}, "client.channel_limit"),
        ({"client": {"history_max_publication_limit": -1}}, "client.history_max_publication_limit"),
        ({"channel": {"max_length": 0}}, "channel.max_length"),
        ({"channel": {"without_namespace": {"history_size": -1}}}, "channel.without_namespace.history_size"),
        ({"shardgate": {"max_commands_per_frame": 0}}, "shardgate.max_commands_per_frame"),
        ({"shardgate": {"workers": -1}}, "shardgate.workers"),
        ({"shardgate": {"boot_failure_limit": 0}}, "shardgate.boot_failure_limit"),
        ({"shardgate": {"bus_request_timeout": 0}}, "shardgate.bus_request_timeout"),
        ({"shardgate": {"bus_request_timeout": "0s"}}, "shardgate.bus_request_timeout"),
        ({"shardgate": {"graceful_timeout": "-1s"}}, "shardgate.graceful_timeout"),
        ({"shardgate": {"log_level": "verbose"}}, "shardgate.log_level"),
        ({"shardgate": {"log_level": "INFO"}}, "shardgate.log_level"),
    ],
)
def test_out_of_range(data: dict[str, Any], key: str) -> None:
    assert error_of(data).key == key


def test_edge_values_accepted() -> None:
    config = parse_config(
        {
            "http_server": {"port": 0, "internal_port": 65535},
            "client": {"channel_limit": 0, "queue_max_size": 1},
            "websocket": {"message_size_limit": 1},
            "shardgate": {"workers": 0, "graceful_timeout": 0, "log_level": "warning"},
        }
    )
    assert config.http_server.port == 0
    assert config.http_server.internal_port == 65535
    assert config.shardgate.graceful_timeout == 0.0


# ------------------------------------------------------------------ ping/pong


def test_pong_timeout_must_be_below_ping_interval() -> None:
    err = error_of({"client": {"ping_interval": "5s", "pong_timeout": "5s"}})
    assert err.key == "client.pong_timeout"
    err = error_of({"client": {"ping_interval": "5s"}})  # default pong_timeout 8s
    assert err.key == "client.pong_timeout"


def test_ping_interval_zero_disables_the_rule() -> None:
    config = parse_config({"client": {"ping_interval": 0, "pong_timeout": "30s"}})
    assert config.client.ping_interval == 0.0
    assert parse_config({"client": {"ping_interval": "9s"}}).client.ping_interval == 9.0


# ------------------------------------------------------------------ history and recovery


@pytest.mark.parametrize(
    ("options", "bad"),
    [
        ({"history_size": 10}, "history_ttl"),
        ({"history_ttl": "10s"}, "history_size"),
        ({"history_size": 10, "history_ttl": 0}, "history_ttl"),
        ({"history_size": 0, "history_ttl": "1m"}, "history_size"),
    ],
)
def test_history_size_and_ttl_together(options: dict[str, Any], bad: str) -> None:
    err = error_of({"channel": {"without_namespace": options}})
    assert err.key == f"channel.without_namespace.{bad}"
    assert err.message == "history_size and history_ttl must be set together"
    err = error_of({"channel": {"namespaces": [{"name": "ns", **options}]}})
    assert err.key == f"channel.namespaces[0].{bad}"


@pytest.mark.parametrize(
    "flag", ["force_recovery", "allow_recovery", "force_positioning", "allow_positioning"]
)
def test_recovery_and_positioning_need_history(flag: str) -> None:
    err = error_of({"channel": {"without_namespace": {flag: True}}})
    assert err.key == f"channel.without_namespace.{flag}"
    assert err.message == "requires history_size and history_ttl"
    err = error_of({"channel": {"namespaces": [{"name": "ab"}, {"name": "cd", flag: True}]}})
    assert err.key == f"channel.namespaces[1].{flag}"
    # False is fine without history; True is fine with it.
    parse_config({"channel": {"without_namespace": {flag: False}}})
    options = parse_config(
        {"channel": {"without_namespace": {flag: True, "history_size": 1, "history_ttl": "1s"}}}
    ).channel.without_namespace
    assert getattr(options, flag) and options.history_enabled


# ------------------------------------------------------------------ namespaces


@pytest.mark.parametrize("name", ["ab", "chat", "a-b_c.d", "NS1", "0123", "--"])
def test_namespace_name_valid(name: str) -> None:
    config = parse_config({"channel": {"namespaces": [{"name": name}]}})
    assert config.channel.namespaces == ((name, ChannelOptions()),)


@pytest.mark.parametrize("name", ["", "a", "chat:room", "has space", "ns$", "ns/x", "ns\n", "чат"])
def test_namespace_name_invalid(name: str) -> None:
    err = error_of({"channel": {"namespaces": [{"name": "ok"}, {"name": name}]}})
    assert err.key == "channel.namespaces[1].name"


def test_namespace_name_required_and_string() -> None:
    err = error_of({"channel": {"namespaces": [{"presence": True}]}})
    assert err.key == "channel.namespaces[0].name"
    err = error_of({"channel": {"namespaces": [{"name": 12}]}})
    assert err.key == "channel.namespaces[0].name"


def test_namespace_duplicate() -> None:
    err = error_of({"channel": {"namespaces": [{"name": "chat"}, {"name": "news"}, {"name": "chat"}]}})
    assert err.key == "channel.namespaces[2].name"
    assert "duplicate" in err.message


# ------------------------------------------------------------------ channel lookup


def test_channel_options_lookup() -> None:
    default = ChannelOptions(presence=True)
    chat = ChannelOptions(join_leave=True)
    config = Config(channel=ChannelConfig(without_namespace=default, namespaces=(("chat", chat),)))
    assert config.channel_options("news") is default
    assert config.channel_options("$news") is default
    assert config.channel_options("chat:room") is chat
    assert config.channel_options("$chat:room") is chat
    assert config.channel_options("chat:room:with:colons") is chat
    assert config.channel_options("unknown:x") is None
    assert config.channel_options("$unknown:x") is None
    assert config.channel_options(":x") is default
    assert config.namespace_of("news") == ""
    assert config.namespace_of("$news") == ""
    assert config.namespace_of("chat:room") == "chat"
    assert config.namespace_of("$chat:room") == "chat"
    assert config.namespace_of("a:b:c") == "a"
    # Only one leading "$" is the private prefix.
    assert config.namespace_of("$$chat:room") == "$chat"


def test_channel_options_after_replace() -> None:
    config = Config()
    chat = ChannelOptions(presence=True)
    channel = dataclasses.replace(config.channel, namespaces=(("chat", chat),))
    config = dataclasses.replace(config, channel=channel)
    assert config.channel_options("chat:1") is chat


# ------------------------------------------------------------------ dev_config, overrides


def test_dev_config() -> None:
    config = dev_config("s3cret")
    assert config.client.token == TokenConfig(hmac_secret_key="s3cret")
    assert not config.client.subscription_token.configured
    assert config.client.allow_anonymous_connect_without_token
    assert config.http_api.key == "s3cret"
    assert config.shardgate.rpc_echo
    opts = config.channel.without_namespace
    assert opts.history_enabled
    assert (opts.history_size, opts.history_ttl) == (100, 300.0)
    assert opts.presence and opts.join_leave and opts.force_push_join_leave
    assert opts.force_recovery and opts.force_positioning
    assert opts.allow_subscribe_for_client and opts.allow_subscribe_for_anonymous
    assert opts.allow_publish_for_client and opts.allow_publish_for_subscriber
    assert opts.allow_publish_for_anonymous
    assert opts.allow_history_for_subscriber and opts.allow_history_for_client
    assert not opts.allow_history_for_anonymous
    assert opts.allow_presence_for_subscriber and opts.allow_presence_for_client
    assert not opts.allow_presence_for_anonymous
    assert config.channel_options("anything") is opts
    # Any namespace works like channels without one, so "chat:room" needs no config.
    assert config.channel.any_namespace is opts
    assert config.channel_options("ns:anything") is opts
    assert config.channel_options("$chat:room") is opts
    # Any Origin: a page served by a dev server on another port can connect.
    assert config.client.allowed_origins == ("*",)
    # Everything else stays at its default.
    assert config.http_server == HttpServerConfig()
    assert config.client.ping_interval == ClientConfig().ping_interval


def test_production_config_keeps_unknown_namespace_unknown() -> None:
    """No config key sets any_namespace: a file's unknown namespace stays unknown (error 102)."""
    config = parse_config({"channel": {"without_namespace": {"presence": True},
                                       "namespaces": [{"name": "chat"}]}})
    assert config.channel.any_namespace is None
    assert config.channel_options("chat:room") is not None
    assert config.channel_options("news:room") is None
    assert Config().channel_options("news:room") is None
    assert error_of({"channel": {"any_namespace": {}}}).key == "channel.any_namespace"


def test_with_overrides_allowed_origins() -> None:
    base = parse_config(FULL_DICT)
    assert base.with_overrides(allowed_origins=None) == base
    assert base.with_overrides(allowed_origins=[]) == base
    added = base.with_overrides(allowed_origins=["http://app.example", "https://example.com",
                                                 "http://app.example"])
    # Added to the file's list, once each; nothing else changes.
    assert added.client.allowed_origins == ("https://example.com", "http://localhost:3000",
                                            "http://app.example")
    assert dataclasses.replace(added, client=base.client) == base
    assert Config().with_overrides(allowed_origins=["http://a", "http://b"]).client.allowed_origins == (
        "http://a", "http://b")
    with pytest.raises(ConfigError) as info:
        Config().with_overrides(allowed_origins=[" "])
    assert info.value.key == "client.allowed_origins"


def test_with_overrides() -> None:
    base = parse_config(FULL_DICT)
    same = base.with_overrides()
    assert same == base
    changed = base.with_overrides(address="10.0.0.1", port=0, internal_port=7001, workers=3)
    assert changed.http_server == HttpServerConfig("10.0.0.1", 0, 7001)
    assert changed.shardgate.workers == 3
    assert changed.worker_count() == 3
    assert changed.client == base.client
    assert changed.channel == base.channel
    assert base.http_server.port == 9000  # original untouched
    assert base.with_overrides(port=1).http_server.internal_port == 9001


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"port": 70000}, "http_server.port"),
        ({"internal_port": -1}, "http_server.internal_port"),
        ({"workers": -2}, "shardgate.workers"),
    ],
)
def test_with_overrides_validates(kwargs: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        Config().with_overrides(**kwargs)
    assert info.value.key == key


def test_internal_address_is_its_own_key_and_defaults_to_loopback() -> None:
    # Opening the client port to every interface must not open the server API with it.
    assert parse_config({"http_server": {"address": "0.0.0.0"}}).http_server.internal_address == "127.0.0.1"
    config = parse_config({"http_server": {"address": "0.0.0.0", "internal_address": "10.1.2.3"}})
    assert config.http_server.internal_address == "10.1.2.3"
    assert config.with_overrides(internal_address="127.0.0.2").http_server.internal_address == "127.0.0.2"
    assert error_of({"http_server": {"internal_address": 1}}).key == "http_server.internal_address"


@pytest.mark.parametrize(
    "http",
    [
        {"port": 8000, "internal_port": 8000},
        {"port": 8000, "internal_port": 8000, "address": "10.0.0.1", "internal_address": "10.0.0.1"},
        {"port": 8000, "internal_port": 8000, "address": "0.0.0.0"},  # 0.0.0.0 covers 127.0.0.1
        {"port": 8000, "internal_port": 8000, "address": "10.0.0.1", "internal_address": "::"},
    ],
)
def test_client_and_internal_port_must_not_share_an_address(http: dict[str, Any]) -> None:
    err = error_of({"http_server": http})
    assert err.key == "http_server.internal_port"
    assert "8000" in err.message and "same address" in err.message
    with pytest.raises(ConfigError) as info:
        Config().with_overrides(port=8001)  # the default internal port
    assert info.value.key == "http_server.internal_port"


@pytest.mark.parametrize(
    "http",
    [
        {"port": 0, "internal_port": 0},  # each picks its own free port
        {"port": 8000, "internal_port": 8000, "address": "127.0.0.1", "internal_address": "127.0.0.2"},
    ],
)
def test_same_port_allowed_when_it_cannot_collide(http: dict[str, Any]) -> None:
    parse_config({"http_server": http})
    Config().with_overrides(port=0, internal_port=0)


def test_worker_count_defaults_to_cpus() -> None:
    assert Config().worker_count() == (os.cpu_count() or 1)
    assert Config().worker_count() >= 1


def test_frozen() -> None:
    config = Config()
    with pytest.raises(AttributeError):
        config.http_server.port = 1  # type: ignore[misc]


# ------------------------------------------------------------------ engine (Centrifugo v6 engine.*)

def test_engine_defaults_to_memory() -> None:
    engine = parse_config({}).engine
    assert engine == EngineConfig()
    assert engine.type == "memory"
    r = engine.redis
    assert (r.prefix, r.connect_timeout, r.io_timeout, r.db, r.presence_ttl) == ("shardgate", 1.0, 4.0, 0, 60.0)
    assert r.address == () and r.mode == "shards"


def test_engine_redis_full() -> None:
    data = {"engine": {"type": "redis", "redis": {
        "address": ["redis://127.0.0.1:6379", "127.0.0.1:6380", "rediss://cache.example:6390"],
        "prefix": "gw", "connect_timeout": "500ms", "io_timeout": "2s", "db": 3, "user": "u",
        "password": "p", "client_name": "shardgate-1", "presence_ttl": "30s",
        "tls": {"enabled": True, "cert_pem_file": "c.pem", "key_pem_file": "k.pem", "ca_pem_file": "ca.pem",
                "insecure_skip_verify": True},
    }}}
    r = parse_config(data).engine.redis
    assert r == RedisEngineConfig(
        address=("redis://127.0.0.1:6379", "127.0.0.1:6380", "rediss://cache.example:6390"),
        prefix="gw", connect_timeout=0.5, io_timeout=2.0, db=3, user="u", password="p",
        client_name="shardgate-1", presence_ttl=30.0,
        tls=RedisTlsConfig(True, "c.pem", "k.pem", "ca.pem", True))
    # Same document in TOML form loads equal (a Centrifugo config moves over as-is).
    toml_text = """
[engine]
type = "redis"
[engine.redis]
address = "localhost:6379"
cluster_address = []
"""
    import tomllib
    assert parse_config(tomllib.loads(toml_text)).engine.redis.address == ("localhost:6379",)


def test_engine_cluster_and_sentinel() -> None:
    cluster = parse_config({"engine": {"type": "redis", "redis": {
        "cluster_address": ["127.0.0.1:7000", "127.0.0.1:7001"]}}}).engine.redis
    assert cluster.mode == "cluster" and cluster.cluster_address == ("127.0.0.1:7000", "127.0.0.1:7001")
    sentinel = parse_config({"engine": {"type": "redis", "redis": {
        "sentinel_address": "127.0.0.1:26379", "sentinel_master_name": "mymaster",
        "sentinel_password": "s"}}}).engine.redis
    assert sentinel.mode == "sentinel" and sentinel.sentinel_address == ("127.0.0.1:26379",)
    assert sentinel.sentinel_password == "s"


@pytest.mark.parametrize(
    ("engine", "key", "fragment"),
    [
        ({"type": "redis"}, "engine.redis.address", "needs an address"),
        ({"type": "redis", "redis": {"address": ""}}, "engine.redis.address", "needs an address"),
        ({"type": "postgres"}, "engine.type", "must be one of"),
        ({"redis": {"address": "nohost"}}, "engine.redis.address", "host:port"),
        ({"redis": {"address": ["127.0.0.1:1", "x:99999"]}}, "engine.redis.address[1]", "host:port"),
        ({"redis": {"address": 6379}}, "engine.redis.address", "string or list"),
        ({"redis": {"adress": "127.0.0.1:6379"}}, "engine.redis.adress", "unknown key"),
        ({"redis": {"tls": {"enabled": True, "cert_pem_file": "c"}}}, "engine.redis.tls.cert_pem_file",
         "go together"),
        ({"redis": {"tls": {"bogus": "x"}}}, "engine.redis.tls.bogus", "unknown key"),
        ({"redis": {"io_timeout": "0s"}}, "engine.redis.io_timeout", "greater than 0"),
        ({"redis": {"prefix": ""}}, "engine.redis.prefix", "empty"),
        ({"redis": {"db": -1}}, "engine.redis.db", ">= 0"),
        ({"redis": {"address": "a:1", "cluster_address": ["b:2"]}}, "engine.redis.cluster_address", "exclusive"),
        ({"redis": {"sentinel_address": ["a:1"]}}, "engine.redis.sentinel_master_name", "required"),
        ({"redis": {"sentinel_master_name": "m"}}, "engine.redis.sentinel_address", "required"),
        ({"redis": {"cluster_address": ["a:1"], "db": 2}}, "engine.redis.db", "only db 0"),
    ],
)
def test_engine_errors(engine: dict[str, Any], key: str, fragment: str) -> None:
    err = error_of({"engine": engine})
    assert err.key == key
    assert fragment in err.message
