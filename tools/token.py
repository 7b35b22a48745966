"""Mint HMAC-signed connection and subscription tokens for development and tests.

Production tokens come from the application backend; this exists so an operator can
poke a running gateway (``shardgate token --user 42 | wscat ...``) and so tests build
tokens the same way the verifier reads them, without copying claim names around.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import tomllib
from pathlib import Path

import jwt

__all__ = ["SECRET_ENV", "main", "mint_token"]

SECRET_ENV = "SHARDGATE_TOKEN_SECRET"

_EPILOG = f"""\
examples:
  %(prog)s --secret s3cret --user 42 --info '{{"name": "Ann"}}'
  %(prog)s --config shardgate.toml --user 42 --channel 'private:chat' --ttl 600
  {SECRET_ENV}=s3cret %(prog)s --user 42 --ttl 0     # a token without exp

The secret is read from --secret, else client.token.hmac_secret_key in --config
(TOML, or JSON when the file name ends in .json), else ${SECRET_ENV}.
"""


def mint_token(
    secret: str,
    *,
    user: str,
    exp_seconds: float | None = 3600,
    now: float | None = None,
    info: object | None = None,
    channel: str | None = None,
    channels: list[str] | None = None,
    algorithm: str = "HS256",
) -> str:
    """Return a signed JWT: a subscription token when ``channel`` is set, else a connection one.

    ``exp_seconds`` is relative to ``now`` (default: the wall clock); ``None`` omits
    ``exp``, and a negative value mints an already-expired token for tests.
    """
    issued = time.time() if now is None else now
    claims: dict[str, object] = {"sub": user, "iat": int(issued)}
    if exp_seconds is not None:
        claims["exp"] = int(issued + exp_seconds)
    if info is not None:
        claims["info"] = info
    if channel is not None:
        claims["channel"] = channel
    if channels is not None:
        claims["channels"] = list(channels)
    return jwt.encode(claims, secret, algorithm=algorithm)


def _secret_from_config(path: Path) -> str:
    """Read ``client.token.hmac_secret_key`` without importing the gateway config module."""
    raw = path.read_bytes()
    data: object
    if path.suffix == ".json":
        data = json.loads(raw)
    elif path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(raw)
    else:
        data = tomllib.loads(raw.decode("utf-8"))
    for key in ("client", "token", "hmac_secret_key"):
        if not isinstance(data, dict) or key not in data:
            raise ValueError(f"{path}: client.token.hmac_secret_key is not set")
        data = data[key]
    if not isinstance(data, str) or not data:
        raise ValueError(f"{path}: client.token.hmac_secret_key must be a non-empty string")
    return data


def _parser(prog: str = "shardgate token") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Print an HMAC-signed connection or subscription JWT.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--secret", help=f"HMAC secret (default: ${SECRET_ENV})")
    source.add_argument("--config", type=Path, metavar="FILE", help="read the secret from a config file")
    parser.add_argument("--user", default="", help='the "sub" claim (default: "", anonymous)')
    parser.add_argument(
        "--ttl", type=int, default=3600, metavar="SECONDS", help="lifetime (default: 3600; 0: no exp)"
    )
    parser.add_argument("--info", metavar="JSON", help='the "info" claim, as JSON')
    parser.add_argument("--channel", help="mint a subscription token for this channel")
    parser.add_argument("--algorithm", choices=("HS256", "HS384", "HS512"), default="HS256")
    return parser


def main(argv: list[str] | None = None, prog: str = "shardgate token") -> int:
    """CLI entry point (``shardgate token``, and its Centrifugo-named aliases gentoken and
    gensubtoken, whose usage names them); prints the token on stdout."""
    parser = _parser(prog)
    args = parser.parse_args(argv)

    secret: str | None = args.secret
    if secret is None and args.config is not None:
        try:
            secret = _secret_from_config(args.config)
        except (OSError, ValueError, tomllib.TOMLDecodeError) as exc:
            parser.error(str(exc))
    if secret is None:
        secret = os.environ.get(SECRET_ENV)
    if not secret:
        parser.error(f"no secret: pass --secret or --config, or set ${SECRET_ENV}")

    info: object | None = None
    if args.info is not None:
        try:
            info = json.loads(args.info)
        except ValueError as exc:
            parser.error(f"--info is not valid JSON: {exc}")

    token = mint_token(
        secret,
        user=args.user,
        exp_seconds=args.ttl if args.ttl != 0 else None,
        info=info,
        channel=args.channel,
        algorithm=args.algorithm,
    )
    sys.stdout.write(token + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
