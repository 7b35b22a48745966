"""Loading a config: files (TOML, JSON, YAML) with ``SHARDGATE_*`` environment overrides, and
the embedded development default. Parsing and validation are :func:`gateway.config.parse.parse_config`."""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path

from gateway.config.admin import AdminConfig
from gateway.config.env import apply_env
from gateway.config.parse import known_keys, parse_config
from gateway.config.schema import (
    ChannelConfig,
    ChannelOptions,
    ClientConfig,
    Config,
    HttpApiConfig,
    ShardgateConfig,
    TokenConfig,
)
from gateway.config.table import ConfigError

__all__ = ["dev_config", "load_config"]


def load_config(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate a config file, then apply ``SHARDGATE_*`` environment overrides.

    ``.toml`` is parsed as TOML, ``.json`` as JSON and ``.yaml``/``.yml`` as YAML; any other
    name is tried as JSON and then TOML, as Centrifugo accepts these formats. Read or parse
    failures raise :class:`ConfigError` keyed by the file name. ``environ`` defaults to
    ``os.environ``; a ``SHARDGATE_*`` variable naming no key is reported in ``Config.warning``.
    """
    file = Path(path)
    name = str(file)
    try:
        text = file.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(name, f"cannot read file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(name, f"not valid UTF-8: {exc.reason} at byte {exc.start}") from None

    suffix = file.suffix.lower()
    data: object
    if suffix == ".toml":
        data = _parse_toml(name, text)
    elif suffix == ".json":
        data = _parse_json(name, text)
    elif suffix in (".yaml", ".yml"):
        data = _parse_yaml(name, text)
    else:
        try:
            data = _parse_json(name, text)
        except ConfigError as json_error:
            try:
                data = _parse_toml(name, text)
            except ConfigError as toml_error:
                raise ConfigError(
                    name, f"neither JSON ({json_error.message}) nor TOML ({toml_error.message})"
                ) from None
    if data is None and suffix in (".yaml", ".yml"):
        data = {}  # an empty YAML document
    if not isinstance(data, dict):
        raise ConfigError(name, "expected a table at the top level")
    unknown_env = apply_env(data, os.environ if environ is None else environ, known_keys())
    config = parse_config(data)
    if unknown_env:
        line = f"config: environment variables that name no config key (ignored): {', '.join(unknown_env)}"
        config = dataclasses.replace(config, warning="\n".join(filter(None, (config.warning, line))))
    return config


def _parse_yaml(name: str, text: str) -> object:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(name, f"invalid YAML: {exc}") from None


def _parse_toml(name: str, text: str) -> object:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(name, f"invalid TOML: {exc}") from None


def _parse_json(name: str, text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(name, f"invalid JSON: {exc}") from None


def dev_config(hmac_secret: str, admin_password: str = "") -> Config:
    """The embedded config used when ``shardgate serve`` runs without a file.

    Permissive on purpose (anonymous connect, publish from clients, history and
    recovery everywhere, any namespace, any Origin) so a fresh checkout can be tried
    with any Centrifugo SDK from a page served on another port (a dev server such as
    http://localhost:5173); the HMAC secret doubles as the HTTP API key.
    """
    options = ChannelOptions(
        presence=True,
        join_leave=True,
        force_push_join_leave=True,
        history_size=100,
        history_ttl=300.0,
        force_recovery=True,
        force_positioning=True,
        allow_subscribe_for_client=True,
        allow_subscribe_for_anonymous=True,
        allow_publish_for_client=True,
        allow_publish_for_subscriber=True,
        allow_publish_for_anonymous=True,
        allow_history_for_subscriber=True,
        allow_history_for_client=True,
        allow_presence_for_subscriber=True,
        allow_presence_for_client=True,
    )
    return Config(
        client=ClientConfig(
            token=TokenConfig(hmac_secret_key=hmac_secret),
            allow_anonymous_connect_without_token=True,
            allowed_origins=("*",),
        ),
        http_api=HttpApiConfig(key=hmac_secret),
        channel=ChannelConfig(without_namespace=options, any_namespace=options),
        shardgate=ShardgateConfig(rpc_echo=True),
        # The web admin (password printed in the banner) and the demo chat page at / .
        admin=AdminConfig(enabled=bool(admin_password), password=admin_password, secret=hmac_secret,
                          demo_page=True),
    )
