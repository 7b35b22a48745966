"""Environment overrides in Centrifugo's style: ``SHARDGATE_`` + the key's path joined by ``_``.

``SHARDGATE_CLIENT_TOKEN_HMAC_SECRET_KEY=s`` sets ``client.token.hmac_secret_key`` (Centrifugo
reads ``CENTRIFUGO_CLIENT_TOKEN_HMAC_SECRET_KEY``). Key names contain ``_`` too, so the name is
resolved by walking the key table (``gateway.config.keys``): at each level the longest run of
words that names a key wins. The value is parsed by the key's type: bool (true/false/1/0/yes/no),
int, float and duration (a number of seconds or a duration string such as "10s"), a list of
strings (a JSON array or a comma-separated list), a table or list of tables (JSON).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from gateway.config.keys import KeyNode, ListOf
from gateway.config.table import ConfigError

__all__ = ["ENV_PREFIX", "NOT_CONFIG", "apply_env", "env_path"]

ENV_PREFIX = "SHARDGATE_"
# SHARDGATE_* variables that are not config keys: read by the CLI tools and the test suites.
NOT_CONFIG = frozenset({"SHARDGATE_API_KEY", "SHARDGATE_API_URL", "SHARDGATE_TOKEN_SECRET",
                        "SHARDGATE_AUTOBAHN_VENV", "SHARDGATE_TEST_SCALE"})


def env_path(known: Mapping[str, KeyNode], name: str) -> tuple[list[str], KeyNode] | None:
    """The key path and leaf type a ``SHARDGATE_...`` variable names; ``None`` if it names none."""
    words = name[len(ENV_PREFIX):].lower().split("_")
    node: KeyNode = dict(known)
    path: list[str] = []
    i = 0
    while i < len(words):
        if not isinstance(node, dict):
            return None
        for j in range(len(words), i, -1):
            key = "_".join(words[i:j])
            if key in node:
                path.append(key)
                node = node[key]
                i = j
                break
        else:
            return None
    return path, node


def _parse(name: str, raw: str, kind: KeyNode) -> object:
    text = raw.strip()
    if isinstance(kind, (dict, ListOf)) or kind in ("map", "any"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(name, f"expected JSON: {exc}") from None
    if kind == "bool":
        lowered = text.lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise ConfigError(name, f"expected true or false, got {raw!r}")
    if kind == "int":
        try:
            return int(text)
        except ValueError:
            raise ConfigError(name, f"expected integer, got {raw!r}") from None
    if kind in ("float", "duration"):
        try:
            return float(text) if any(c in text for c in ".eE") else int(text)
        except ValueError:
            if kind == "duration":
                return text  # "10s", "1m30s": parsed by the duration reader
            raise ConfigError(name, f"expected number, got {raw!r}") from None
    if kind == "strs":
        if text.startswith("["):
            try:
                items = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ConfigError(name, f"expected JSON array or comma list: {exc}") from None
            return items
        return [item.strip() for item in text.split(",") if item.strip()]
    return raw


def apply_env(data: dict[str, object], environ: Mapping[str, str],
              known: Mapping[str, KeyNode]) -> list[str]:
    """Set every key a ``SHARDGATE_*`` variable names into ``data`` (in place).

    Returns the names of ``SHARDGATE_*`` variables that name no key (to warn about); a value
    that does not parse raises :class:`ConfigError` naming the variable."""
    unknown: list[str] = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in NOT_CONFIG:
            continue
        found = env_path(known, name)
        if found is None:
            unknown.append(name)
            continue
        path, kind = found
        value = _parse(name, environ[name], kind)
        table = data
        for key in path[:-1]:
            sub = table.get(key)
            if not isinstance(sub, dict):
                sub = {}
                table[key] = sub
            table = sub
        table[path[-1]] = value
    return unknown
