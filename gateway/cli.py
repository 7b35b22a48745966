"""The ``shardgate`` command line: ``serve``, ``check-config`` and ``owner`` here; ``token``, the ops
commands (tools/ctl.py) and ``bench`` get the rest of the line for their own parsers."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import secrets
import sys
from collections.abc import Sequence

from gateway import __version__, native
from gateway.config import Config, ConfigError, dev_config, load_config
from gateway.obs.logs import setup_logging

__all__ = ["main"]

def _serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve", help="run the gateway (supervisor + one worker per core)",
        description="Run the gateway. Without --config it serves an embedded development default: "
                    "anonymous connects, any Origin, permissive channels in any namespace with history "
                    "and presence, and a random token secret printed at start.",
        epilog="example: shardgate serve --config /etc/shardgate/config.toml --workers 4")
    p.add_argument("--config", help="TOML or JSON file with Centrifugo v6 key names")
    p.add_argument("--host", help="client WebSocket listen address (http_server.address)")
    p.add_argument("--port", type=int, help="client WebSocket port (http_server.port); 0 picks a free one")
    p.add_argument("--internal-host",
                   help="listen address of the server API, /metrics, /health, /ready "
                        "(http_server.internal_address; default 127.0.0.1)")
    p.add_argument("--internal-port", type=int, help="internal port for /health (http_server.internal_port)")
    p.add_argument("--workers", type=int, help="worker processes (shardgate.workers); default: CPU count")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", choices=["text", "json"], help="human lines (default) or JSON lines")
    p.add_argument("--pid-file", help="write the supervisor pid here (shardgate.pid_file)")
    p.add_argument("--tls-cert", help="PEM certificate: serve wss:// and https:// (http_server.tls)")
    p.add_argument("--tls-key", help="PEM private key for --tls-cert")
    p.add_argument("--allowed-origin", action="append", metavar="PATTERN",
                   help="also allow browser pages from this Origin (repeatable; adds to "
                        "client.allowed_origins; shell-style pattern, e.g. 'https://*.example.com')")


# Subcommands implemented by the ops tools (tools/ctl.py); they talk to a running gateway.
_OPS_COMMANDS = {
    "status": "one row per worker: connections, subscriptions, msgs/s, CPU, RSS",
    "top": "status, refreshed live",
    "info": "the server API info method",
    "publish": "publish to a channel through the server API",
    "broadcast": "publish to several channels",
    "presence": "who is in a channel",
    "history": "a channel's history",
    "channels": "active channels with client counts",
    "disconnect": "disconnect a user's connections",
    "reload": "SIGHUP to the supervisor (pid file)",
    "stop": "SIGTERM to the supervisor (pid file)",
}


# Subcommands whose own parser lives in tools/: everything after the subcommand's name goes to it
# unparsed (options first or last), and the module is imported only when the subcommand runs.
_TOOL_COMMANDS = {
    "token": "mint a connection or subscription JWT (HMAC)",
    # Centrifugo's names for its helper commands.
    "gentoken": "alias of token (Centrifugo's name)",
    "gensubtoken": "alias of token --channel CHANNEL (Centrifugo's name)",
    "genconfig": "write a minimal config with random secrets: shardgate genconfig [FILE]",
    "checktoken": "verify a connection token: shardgate checktoken --config FILE TOKEN",
    **_OPS_COMMANDS,
    "bench": "load generator and peer comparison (shardgate bench --help)",
}


# The commands that run the gateway's code (serve; bench starts it and imports its model). The
# others only talk to a running gateway or mint tokens, and stay usable on a checkout whose compiled
# build went stale after a `git pull`: `shardgate stop` must still stop the old supervisor.
_RUNS_THE_GATEWAY = frozenset({"serve", "bench"})


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shardgate", description="A sharded WebSocket gateway speaking the Centrifugo client protocol.",
        epilog="examples:\n  shardgate serve --port 8000 --workers 2\n  shardgate COMMAND --help",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"shardgate {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _serve_parser(sub)
    for name, text in (("check-config", "validate a config file without serving"),
                       ("checkconfig", "alias of check-config (Centrifugo's name)")):
        check = sub.add_parser(name, help=text,
                               epilog=f"example: shardgate {name} config.toml (or --config config.toml)")
        check.add_argument("file", nargs="?")
        check.add_argument("-c", "--config", dest="config_file", metavar="FILE",
                           help="the config file, as Centrifugo's checkconfig takes it")
    owner = sub.add_parser("owner", help="which worker slot owns a channel",
                           epilog="example: shardgate owner chat:lobby --workers 4")
    owner.add_argument("channel")
    owner.add_argument("--workers", type=int, help="worker count (default: from --config, else CPU count)")
    owner.add_argument("--config")
    # Listed for --help only: main() hands their argv to their own parsers before this one parses.
    for name, text in _TOOL_COMMANDS.items():
        sub.add_parser(name, help=text, add_help=False)
    return parser


def _load(path: str | None) -> tuple[Config, str | None]:
    """The config and, for the embedded default, the random secret it was made with."""
    if path:
        return load_config(path), None
    secret = secrets.token_urlsafe(32)
    return dev_config(secret, admin_password=secrets.token_urlsafe(12)), secret


def _serve(args: argparse.Namespace) -> int:
    from gateway.process.supervisor import ListenError, Supervisor
    from tools.token import mint_token

    config, dev_secret = _load(args.config)
    config = config.with_overrides(address=args.host, port=args.port, internal_port=args.internal_port,
                                   internal_address=args.internal_host,
                                   workers=args.workers, tls_cert=args.tls_cert, tls_key=args.tls_key,
                                   allowed_origins=args.allowed_origin)
    if args.pid_file:
        config = dataclasses.replace(config, shardgate=dataclasses.replace(config.shardgate, pid_file=args.pid_file))
    _check_loadable(config)
    setup_logging(args.log_level or config.shardgate.log_level, args.log_format or config.shardgate.log_format,
                  config.shardgate.log_file)
    if config.warning:
        for line in config.warning.splitlines():
            logging.getLogger("shardgate").warning("%s", line)

    def announce(sup: Supervisor) -> None:
        secure = "s" if config.http_server.tls.enabled else ""
        lines = [
            f"shardgate {__version__} ready: {sup.workers} workers",
            f"  clients   ws{secure}://{_url_host(sup.host)}:{sup.port}/connection/websocket",
            f"  internal  http{secure}://{_url_host(sup.internal_host)}:{sup.internal_port}/health",
            f"  build     {native.summary()}",
        ]
        if dev_secret is not None:
            lines += [
                "  config    embedded development default (no --config): anonymous connects and any",
                "            Origin allowed; every channel, in any namespace (chat:room too), allows",
                "            subscribe/publish/history/presence",
                f"  secret    {dev_secret}   (random for this run; also the HTTP API key)",
                f"  token     {mint_token(dev_secret, user='test-user', exp_seconds=24 * 3600)}",
                f"  mint more shardgate token --secret {dev_secret} --user alice",
                f"  admin     http{secure}://{_url_host(sup.internal_host)}:{sup.internal_port}/admin"
                f"   password {config.admin.password}",
                f"  demo      http{secure}://{_url_host(sup.host)}:{sup.port}/   (a centrifuge-js chat)",
            ]
        else:
            lines.append("  mint a test token: shardgate token --config CONFIG --user alice")
            if config.admin.enabled:
                lines.append(f"  admin     http{secure}://{_url_host(sup.internal_host)}:{sup.internal_port}/admin")
        print("\n".join(lines), flush=True)

    def reload_config() -> Config:
        fresh, _ = _load(args.config) if args.config else (config, None)
        fresh = fresh.with_overrides(address=args.host, port=args.port, internal_port=args.internal_port,
                                     internal_address=args.internal_host,
                                     workers=args.workers, tls_cert=args.tls_cert, tls_key=args.tls_key,
                                     allowed_origins=args.allowed_origin)
        _check_loadable(fresh)
        return fresh

    try:
        return Supervisor(config, on_ready=announce, reload_config=reload_config).run()
    except ListenError as exc:
        print(f"shardgate: {exc}", file=sys.stderr)
        return 1


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _check_loadable(config: Config) -> None:
    """What validation alone cannot see: key material that parses, handlers that import."""
    import ssl

    from gateway.auth import TokenVerifier
    from gateway.session.rpc import load_handler
    from gateway.transport.tls import server_tls_context

    if config.http_server.tls.enabled:
        try:
            server_tls_context(config.http_server.tls)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError("http_server.tls", f"certificate or key does not load: {exc}") from None

    for key, keys in (("client.token", config.client.token),
                      ("client.subscription_token", config.client.subscription_token)):
        try:
            TokenVerifier(keys)
        except ValueError as exc:
            raise ConfigError(key, str(exc)) from None
    for method, target in config.shardgate.rpc_handlers:
        try:
            load_handler(target)
        except ValueError as exc:
            raise ConfigError(f"shardgate.rpc_handlers.{method}", str(exc)) from None


def _check_config(args: argparse.Namespace) -> int:
    if (args.file is None) == (args.config_file is None):
        print(f"shardgate {args.command}: give the config file once, as FILE or --config FILE", file=sys.stderr)
        return 2
    args.file = args.file or args.config_file
    config = load_config(args.file)
    _check_loadable(config)
    for line in config.warning.splitlines():
        print(f"shardgate: warning: {line}", file=sys.stderr)
    print(f"{args.file}: ok ({config.worker_count()} workers, "
          f"{len(config.channel.namespaces)} namespaces)")
    return 0


def _owner(args: argparse.Namespace) -> int:
    from sharding.hashing import owner

    workers = args.workers
    if workers is None:
        workers = load_config(args.config).worker_count() if args.config else Config().worker_count()
    print(owner(args.channel, workers))
    return 0


def _run_tool(command: str, argv: list[str]) -> int:
    """Tools live under tools/ and are imported only when their subcommand runs; ``argv`` is
    everything after the subcommand's name, untouched."""
    if command in _OPS_COMMANDS:
        module, argv = "tools.ctl", [command, *argv]
    elif command == "gensubtoken" and not any(a == "--channel" or a.startswith("--channel=") for a in argv) \
            and not {"-h", "--help"} & set(argv):
        print("shardgate gensubtoken: --channel CHANNEL is required", file=sys.stderr)
        return 2
    else:
        module = {"token": "tools.token", "gentoken": "tools.token", "gensubtoken": "tools.token",
                  "bench": "tools.bench.cli"}.get(command, "tools.centrifugo_cli")
    if module == "tools.centrifugo_cli":
        code: int = getattr(importlib.import_module(module), f"{command}_main")(argv)
        return code
    entry = importlib.import_module(module).main
    if command in ("gentoken", "gensubtoken"):
        alias: int = entry(argv, prog=f"shardgate {command}")  # usage names the command typed
        return alias
    result: int = entry(argv)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _build_parser()
    if not argv:
        # No command is a usage error, as argparse treats a missing required argument: the help
        # goes to stderr and the exit status is 2, so a script or unit that still runs a bare
        # `shardgate` expecting it to serve fails visibly instead of "succeeding" without serving.
        parser.print_help(sys.stderr)
        return 2
    if argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version"):
        parser.error(f"a command comes first, e.g. shardgate serve {' '.join(argv)}")
    stale = native.problems() if argv[0] in _RUNS_THE_GATEWAY else []
    if stale:
        # An extension module shadows its source: an edit since `tools.native build` would not run.
        for line in stale:
            print(f"shardgate: compiled build out of date: {line}", file=sys.stderr)
        print("shardgate: rebuild it (python -m tools.native build) or remove it (python -m tools.native clean)",
              file=sys.stderr)
        return 2
    if argv[0] in _TOOL_COMMANDS:
        # Their parsers own the rest of the line. argparse.REMAINDER under a subparser cannot
        # do this: it refuses a tail that starts with an option (`token --secret S`).
        return _run_tool(argv[0], argv[1:])
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command in ("check-config", "checkconfig"):
            return _check_config(args)
        if args.command == "owner":
            return _owner(args)
    except ConfigError as exc:  # ConfigErrors: one line per problem
        for line in str(exc).splitlines():
            print(f"shardgate: {line}", file=sys.stderr)
        return 2
    parser.print_help(sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
