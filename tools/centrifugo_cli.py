"""Centrifugo's helper commands under their Centrifugo names: ``genconfig`` and ``checktoken``.

``shardgate gentoken`` / ``gensubtoken`` are aliases of ``shardgate token`` (``tools/token.py``).
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from pathlib import Path

__all__ = ["checktoken_main", "genconfig_main", "minimal_config"]


def minimal_config() -> dict[str, object]:
    """A minimal valid config with fresh random secrets (what ``genconfig`` writes)."""
    return {
        "client": {
            "token": {"hmac_secret_key": secrets.token_urlsafe(48)},
            "allowed_origins": [],
        },
        "http_api": {"key": secrets.token_urlsafe(48)},
    }


def genconfig_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="shardgate genconfig",
        description="Write a minimal valid config with random secrets (as centrifugo genconfig).",
        epilog="example: shardgate genconfig config.json   (.json, .toml, .yaml or .yml)")
    parser.add_argument("file", nargs="?", default="config.json", help="where to write (default: config.json)")
    args = parser.parse_args(argv)
    path = Path(args.file)
    data = minimal_config()
    suffix = path.suffix.lower()
    if suffix == ".toml":
        token = data["client"]["token"]["hmac_secret_key"]  # type: ignore[index]
        text = (f'[client]\nallowed_origins = []\n\n[client.token]\nhmac_secret_key = "{token}"\n\n'
                f'[http_api]\nkey = "{data["http_api"]["key"]}"\n')  # type: ignore[index]
    elif suffix in (".yaml", ".yml"):
        import yaml

        text = yaml.safe_dump(data, sort_keys=False)
    else:
        text = json.dumps(data, indent=2) + "\n"
    try:
        with path.open("x", encoding="utf-8") as out:  # "x": never overwrite
            out.write(text)
    except FileExistsError:
        print(f"shardgate genconfig: {path} exists; not overwriting it", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"shardgate genconfig: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    path.chmod(0o600)  # it holds secrets
    print(f"{path}: written (client.token.hmac_secret_key and http_api.key are random)")
    return 0


def checktoken_main(argv: list[str]) -> int:
    import jwt

    from gateway.auth import TokenVerifier
    from gateway.config import ConfigError, load_config
    from gateway.core.errors import ClientError, Disconnect

    parser = argparse.ArgumentParser(
        prog="shardgate checktoken",
        description="Verify a connection token with client.token from a config and print its claims.",
        epilog="example: shardgate checktoken --config config.json eyJhbGciOi...")
    parser.add_argument("--config", "-c", required=True, metavar="FILE")
    parser.add_argument("token")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        verifier = TokenVerifier(config.client.token)
    except ConfigError as exc:
        print(f"shardgate checktoken: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"shardgate checktoken: config: client.token: {exc}", file=sys.stderr)
        return 2
    try:
        creds = verifier.verify_connect(args.token, time.time())
    except (ClientError, Disconnect) as exc:
        print(f"token is not valid: {exc}", file=sys.stderr)
        return 1
    claims = jwt.decode(args.token, options={"verify_signature": False})  # verified above
    print(f"valid token for user {creds.user!r}"
          + (f", expires at {creds.expire_at}" if creds.expire_at is not None else ", never expires"))
    print(json.dumps(claims, indent=2, sort_keys=True))
    return 0
