"""Centrifugo configs carry over: every v6 key known, all problems at once, Centrifugo's value
types, YAML, SHARDGATE_* environment overrides, Centrifugo's CLI names and the cheap keys."""

from __future__ import annotations

import datetime
import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jwt
import pytest

from gateway import cli
from gateway.config import ChannelOptions, ConfigError, ConfigErrors, load_config, parse_config
from gateway.config.env import env_path
from gateway.obs.logs import setup_logging
from gateway.session.subscriptions import may_subscribe
from gateway.transport.tls import server_tls_context
from tools.token import mint_token

SECRET = "s3cret-that-is-long-enough-for-hs256-keys"
DATA = Path(__file__).parent / "data"


def _write(tmp_path: Path, data: dict[str, Any], name: str = "config.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


# ------------------------------------------------------------------ known keys, one warning


def test_centrifugo_genconfig_output_loads_with_one_warning() -> None:
    config = load_config(DATA / "centrifugo_v6_genconfig.json", environ={})
    assert config.client.token.hmac_secret_key.startswith("bbe7d157")
    assert [name for name, _ in config.channel.namespaces] == ["chat"]
    lines = config.warning.splitlines()
    assert len(lines) == 1
    ignored = lines[0].split(": ", 2)[2].split(", ")
    assert ignored == sorted(ignored)
    for key in ("usage_stats.disabled", "channel.namespaces[0].force_recovery_mode"):
        assert key in ignored
    # Delta compression is implemented: its namespace keys are read.
    assert "channel.without_namespace.delta_publish" not in ignored
    # The HTTP proxies and the consumers are implemented: read, not in the warning.
    assert "proxies" not in ignored and "consumers" not in ignored
    # The web admin is implemented: its keys take effect and are not in the warning.
    assert not [key for key in ignored if key.startswith("admin.")]
    assert config.admin.password.startswith("d0683813")


def test_check_config_prints_the_warning_and_succeeds(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check-config", str(DATA / "centrifugo_v6_genconfig.json")]) == 0
    out, err = capsys.readouterr()
    assert "ok" in out
    assert err.count("\n") == 1 and "usage_stats.disabled" in err


def test_no_warning_when_every_key_is_implemented() -> None:
    assert parse_config({"client": {"ping_interval": "10s"}}).warning == ""


def test_unknown_key_inside_an_ignored_section_is_an_error() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"admin": {"pasword": "x"}})
    assert info.value.key == "admin.pasword"
    assert "did you mean 'password'?" in info.value.message


# ------------------------------------------------------------------ every problem at once


THREE_MISTAKES = {
    "client": {"ping_intervall": "1s", "token": {"hmac_secret": "x"}},
    "chanel": {},
}


def test_three_mistakes_reported_together() -> None:
    with pytest.raises(ConfigErrors) as info:
        parse_config(THREE_MISTAKES)
    errors = {e.key: e.message for e in info.value.errors}
    assert errors == {
        "client.ping_intervall": "unknown key (did you mean 'ping_interval'?)",
        "client.token.hmac_secret": "unknown key (did you mean 'hmac_secret_key'?)",
        "chanel": "unknown key (did you mean 'channel'?)",
    }
    assert len(str(info.value).splitlines()) == 3


def test_check_config_exits_2_with_one_line_per_problem(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, THREE_MISTAKES)
    assert cli.main(["check-config", str(path)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3 and all("did you mean" in line for line in lines)


def test_value_errors_are_collected_too() -> None:
    with pytest.raises(ConfigErrors) as info:
        parse_config({"client": {"channel_limit": "many", "ping_interval": "soon"},
                      "channel": {"namespaces": [{"name": "x"}, {"history_size": 5}]}})
    keys = sorted(e.key for e in info.value.errors)
    assert keys == ["channel.namespaces[0].name", "channel.namespaces[1].history_ttl",
                    "channel.namespaces[1].name", "client.channel_limit", "client.ping_interval"]


def test_single_problem_is_a_plain_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"bogus": 1})
    assert not isinstance(info.value, ConfigErrors)


# ------------------------------------------------------------------ Centrifugo's value types


def test_ports_as_strings() -> None:
    http = parse_config({"http_server": {"port": "9000", "internal_port": "9001"}}).http_server
    assert (http.port, http.internal_port) == (9000, 9001)
    with pytest.raises(ConfigError, match=r"0\.\.65535"):
        parse_config({"http_server": {"internal_port": "70000"}})


def _self_signed() -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem


def test_inline_pem_loads() -> None:
    cert, key = _self_signed()
    tls = parse_config({"http_server": {"tls": {"enabled": True, "cert_pem": cert, "key_pem": key}}}).http_server.tls
    assert tls.enabled and tls.cert_pem == cert
    assert server_tls_context(tls) is not None


def test_inline_pem_checks() -> None:
    with pytest.raises(ConfigError, match="expected PEM"):
        parse_config({"http_server": {"tls": {"enabled": True, "cert_pem": "nope", "key_pem_file": "k"}}})
    with pytest.raises(ConfigError, match="not both"):
        parse_config({"http_server": {"tls": {"cert_pem": "-----BEGIN X", "cert_pem_file": "c"}}})


def test_check_config_loads_the_tls_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cert, _ = _self_signed()
    _, other_key = _self_signed()
    path = _write(tmp_path, {"http_server": {"tls": {"enabled": True, "cert_pem": cert, "key_pem": other_key}}})
    assert cli.main(["check-config", str(path)]) == 2
    assert "http_server.tls" in capsys.readouterr().err


# ------------------------------------------------------------------ YAML


def test_yaml_config(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(f"client:\n  token:\n    hmac_secret_key: {SECRET}\n  allowed_origins: ['http://a']\n"
                    "http_server:\n  port: '8100'\nchannel:\n  namespaces:\n    - name: chat\n      presence: true\n")
    config = load_config(path, environ={})
    assert config.client.token.hmac_secret_key == SECRET
    assert config.http_server.port == 8100
    assert config.channel_options("chat:x") == ChannelOptions(presence=True)


def test_yaml_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text("client: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(path, environ={})


# ------------------------------------------------------------------ environment overrides


def test_env_path_resolves_underscores_in_key_names() -> None:
    from gateway.config import known_keys

    known = known_keys()
    assert env_path(known, "SHARDGATE_CLIENT_TOKEN_HMAC_SECRET_KEY") == (
        ["client", "token", "hmac_secret_key"], "str")
    assert env_path(known, "SHARDGATE_HTTP_SERVER_INTERNAL_PORT") == (["http_server", "internal_port"], "int")
    assert env_path(known, "SHARDGATE_SHARDGATE_GRACEFUL_TIMEOUT") == (["shardgate", "graceful_timeout"], "float")
    assert env_path(known, "SHARDGATE_CLIENT_NOPE") is None


def test_env_overrides(tmp_path: Path) -> None:
    path = _write(tmp_path, {"client": {"token": {"hmac_secret_key": "from-file"}}})
    config = load_config(path, environ={
        "SHARDGATE_CLIENT_TOKEN_HMAC_SECRET_KEY": "from-env",
        "SHARDGATE_CLIENT_ALLOWED_ORIGINS": "https://a.example, https://b.example",
        "SHARDGATE_CLIENT_PING_INTERVAL": "20s",
        "SHARDGATE_CLIENT_ALLOW_ANONYMOUS_CONNECT_WITHOUT_TOKEN": "true",
        "SHARDGATE_HTTP_SERVER_PORT": "9100",
        "SHARDGATE_CHANNEL_NAMESPACES": '[{"name": "chat", "presence": true}]',
        "SHARDGATE_SHARDGATE_WORKERS": "3",
        "SHARDGATE_API_KEY": "not a config key",  # used by the ops tools: not reported
        "OTHER": "x",
    })
    assert config.client.token.hmac_secret_key == "from-env"
    assert config.client.allowed_origins == ("https://a.example", "https://b.example")
    assert config.client.ping_interval == 20.0
    assert config.client.allow_anonymous_connect_without_token
    assert config.http_server.port == 9100
    assert config.channel.namespaces == (("chat", ChannelOptions(presence=True)),)
    assert config.shardgate.workers == 3
    assert config.warning == ""


def test_env_bad_value_and_unknown_name(tmp_path: Path) -> None:
    path = _write(tmp_path, {})
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={"SHARDGATE_CLIENT_INSECURE": "maybe"})
    assert info.value.key == "SHARDGATE_CLIENT_INSECURE"
    config = load_config(path, environ={"SHARDGATE_CLIENT_TOKEN_HMAC_SECRET": "x"})
    assert "SHARDGATE_CLIENT_TOKEN_HMAC_SECRET" in config.warning


# ------------------------------------------------------------------ cheap keys implemented


def test_channel_boundaries() -> None:
    config = parse_config({"channel": {"private_prefix": "@", "namespace_boundary": "/",
                                       "user_boundary": "!", "user_separator": ";",
                                       "namespaces": [{"name": "chat", "allow_user_limited_channels": True,
                                                       "allow_subscribe_for_client": True}]}})
    assert config.namespace_of("@chat/room") == "chat"
    assert config.namespace_of("chat:room") == ""
    opts = config.channel_options("chat/dialog!1;2")
    assert opts is not None

    def session(user: str) -> Any:
        return SimpleNamespace(node=SimpleNamespace(config=config), user=user)

    assert may_subscribe(session("2"), "chat/dialog!1;2", opts)
    assert not may_subscribe(session("3"), "chat/dialog!1;2", opts)
    assert not may_subscribe(session("2"), "@chat/private", opts)
    assert may_subscribe(session("2"), "$chat/not-private-here", opts)
    with pytest.raises(ConfigError, match="must not be empty"):
        parse_config({"channel": {"user_boundary": ""}})


def test_default_boundaries_unchanged() -> None:
    config = parse_config({})
    assert config.namespace_of("$chat:room") == "chat"
    assert (config.channel.private_prefix, config.channel.user_boundary, config.channel.user_separator) == \
        ("$", "#", ",")


def test_log_level_and_file(tmp_path: Path) -> None:
    assert parse_config({"log": {"level": "warn"}}).shardgate.log_level == "warning"
    assert parse_config({"log": {"level": "trace"}}).shardgate.log_level == "debug"
    assert parse_config({"log": {"level": "warn"}, "shardgate": {"log_level": "info"}}).shardgate.log_level == "info"
    with pytest.raises(ConfigError, match="must be one of"):
        parse_config({"log": {"level": "loud"}})
    log_file = tmp_path / "gw.log"
    config = parse_config({"log": {"file": str(log_file)}})
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging(config.shardgate.log_level, "text", config.shardgate.log_file)
        logging.getLogger("shardgate.test").warning("to the file")
        for handler in root.handlers:
            handler.flush()
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:], level = saved
        root.setLevel(level)
    assert "to the file" in log_file.read_text()


def test_health_prometheus_shutdown() -> None:
    default = parse_config({})
    assert default.health.enabled and default.prometheus.enabled
    config = parse_config({"health": {"enabled": False}, "prometheus": {"enabled": False, "handler_prefix": "/m"},
                           "shutdown": {"timeout": "12s"}})
    assert not config.health.enabled and not config.prometheus.enabled
    assert config.shardgate.graceful_timeout == 12.0
    assert "prometheus.handler_prefix" in config.warning
    assert parse_config({"shutdown": {"timeout": "12s"}, "shardgate": {"graceful_timeout": 3}}
                        ).shardgate.graceful_timeout == 3.0


def test_user_connection_limit_parsed() -> None:
    assert parse_config({"client": {"user_connection_limit": 2}}).client.user_connection_limit == 2
    with pytest.raises(ConfigError):
        parse_config({"client": {"user_connection_limit": -1}})


# ------------------------------------------------------------------ CLI names


def test_genconfig_writes_a_valid_config_and_refuses_to_overwrite(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("c.json", "c.toml", "c.yaml"):
        path = tmp_path / name
        assert cli.main(["genconfig", str(path)]) == 0
        config = load_config(path, environ={})
        assert len(config.client.token.hmac_secret_key) > 32 and config.http_api.key
        assert config.warning == ""
        assert cli.main(["genconfig", str(path)]) == 1
    assert "not overwriting" in capsys.readouterr().err
    first = json.loads((tmp_path / "c.json").read_text())
    assert cli.main(["genconfig", str(tmp_path / "d.json")]) == 0
    assert json.loads((tmp_path / "d.json").read_text()) != first  # fresh secrets each time


def test_checktoken(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, {"client": {"token": {"hmac_secret_key": SECRET}}})
    token = mint_token(SECRET, user="42", info={"name": "Ann"})
    assert cli.main(["checktoken", "--config", str(path), token]) == 0
    out = capsys.readouterr().out
    assert "user '42'" in out and '"name": "Ann"' in out
    assert cli.main(["checktoken", "--config", str(path), mint_token("x" * 40, user="42")]) == 1
    assert "not valid" in capsys.readouterr().err


def test_gentoken_and_gensubtoken(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["gentoken", "--secret", SECRET, "--user", "7"]) == 0
    token = capsys.readouterr().out.split()[-1]
    assert jwt.decode(token, SECRET, algorithms=["HS256"])["sub"] == "7"
    assert cli.main(["gensubtoken", "--secret", SECRET, "--user", "7"]) == 2
    assert "--channel" in capsys.readouterr().err
    assert cli.main(["gensubtoken", "--secret", SECRET, "--user", "7", "--channel", "chat:1"]) == 0
    token = capsys.readouterr().out.split()[-1]
    assert jwt.decode(token, SECRET, algorithms=["HS256"])["channel"] == "chat:1"


def test_config_errors_pickle() -> None:
    import pickle

    with pytest.raises(ConfigErrors) as info:
        parse_config(THREE_MISTAKES)
    again = pickle.loads(pickle.dumps(info.value))
    assert str(again) == str(info.value) and len(again.errors) == 3


def test_token_reads_the_secret_from_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.yaml"
    assert cli.main(["genconfig", str(path)]) == 0
    secret = load_config(path, environ={}).client.token.hmac_secret_key
    capsys.readouterr()
    assert cli.main(["gentoken", "--config", str(path), "--user", "9"]) == 0
    token = capsys.readouterr().out.split()[-1]
    assert jwt.decode(token, secret, algorithms=["HS256"])["sub"] == "9"


def test_personal_channel_names_and_checks() -> None:
    cfg = parse_config({"client": {"subscribe_to_user_personal_channel": {
        "enabled": True, "personal_channel_namespace": "personal", "single_connection": True}},
        "channel": {"namespaces": [{"name": "personal"}]}})
    assert cfg.personal_channel_of("42") == "personal:#42"
    assert "client.subscribe_to_user_personal_channel.single_connection" in cfg.warning  # not implemented
    plain = parse_config({"client": {"subscribe_to_user_personal_channel": {"enabled": True}}})
    assert plain.personal_channel_of("42") == "#42"
    assert parse_config({}).personal_channel_of("42") is None
    with pytest.raises(ConfigError, match="not configured"):
        parse_config({"client": {"subscribe_to_user_personal_channel": {
            "enabled": True, "personal_channel_namespace": "missing"}}})
