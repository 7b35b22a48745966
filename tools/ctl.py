"""The ops CLI: ``shardgate status|top|publish|broadcast|presence|history|channels|disconnect|info|reload|stop``.

Talks to a running gateway through Centrifugo's server API on its internal port
(``POST /api/<method>`` with ``X-API-Key``), and to the supervisor through its pid file.
Tables for people, ``--json`` for scripts; every failure is one line on stderr and exit 1
(2 for bad usage).

Connection settings, strongest first: ``--api-url``/``--api-key``, then the environment
(``SHARDGATE_API_URL``/``SHARDGATE_API_KEY``), then ``--config FILE`` (``http_server.internal_address``,
``http_server.internal_port``, ``http_api.key``); the URL defaults to http://127.0.0.1:8001.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from tools.ctl_api import ENV_API_KEY, ENV_API_URL, ApiClient, CtlError, resolve_pid_file, resolve_settings
from tools.ctl_status import Column, format_table, human_duration, status_rows, status_table_lines, take_sample

__all__ = ["COMMANDS", "main"]

COMMANDS = ("status", "top", "publish", "broadcast", "presence", "history", "channels", "disconnect", "info",
            "reload", "stop")


# -- output helpers ---------------------------------------------------------------------------------


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=False, default=str))


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _json_arg(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CtlError(f"{what} is not valid JSON ({exc}); quote it for the shell, e.g. '{{\"text\": \"hi\"}}'",
                       exit_code=2) from None


def _api(args: argparse.Namespace) -> ApiClient:
    return ApiClient(resolve_settings(args.api_url, args.api_key, args.config, args.timeout))


def _cols(*specs: tuple[str, str, str]) -> list[Column]:
    return [Column(title, key, len(title), i, align) for i, (title, key, align) in enumerate(specs)]


# -- subcommands ------------------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    api = _api(args)
    first = take_sample(api)
    second: Any = None
    if args.interval > 0:
        time.sleep(args.interval)
        second = take_sample(api)
    current, previous = (second, first) if second is not None else (first, None)
    rows, totals = status_rows(current, previous)
    if args.json:
        interval = current.at - previous.at if previous else 0.0
        _print_json({"api_url": api.settings.api_url, "interval": round(interval, 3), "workers": rows,
                     "totals": totals})
        return 0
    if not rows:
        print("no workers answered")
        return 1
    print("\n".join(status_table_lines(rows, totals)))
    return 0


def cmd_top(args: argparse.Namespace) -> int:
    from tools.top import run_top

    api = _api(args)
    iterations = 1 if args.once else args.iterations
    if args.json:
        # Scripts get JSON samples, one object per line, like `status --json` but continuous.
        previous = take_sample(api)
        count = 0
        try:
            while iterations is None or count < iterations:
                time.sleep(args.interval)
                current = take_sample(api)
                rows, totals = status_rows(current, previous)
                print(json.dumps({"time": time.time(), "workers": rows, "totals": totals}), flush=True)
                previous, count = current, count + 1
        except KeyboardInterrupt:
            pass
        return 0
    return run_top(api, api.settings.api_url, args.interval, iterations, args.batch)


def cmd_publish(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"channel": args.channel, "data": _json_arg(args.data, "DATA_JSON")}
    if args.skip_history:
        params["skip_history"] = True
    if args.idempotency_key:
        params["idempotency_key"] = args.idempotency_key
    result = _api(args).call("publish", params)
    if args.json:
        _print_json(result)
    elif "offset" in result:
        print(f"published to {args.channel}: offset {result['offset']}, epoch {result.get('epoch', '')}")
    else:
        print(f"published to {args.channel}")
    return 0


def cmd_broadcast(args: argparse.Namespace) -> int:
    params = {"channels": args.channels, "data": _json_arg(args.data, "--data")}
    result = _api(args).call("broadcast", params)
    responses = result.get("responses", [])
    failed = [r for r in responses if isinstance(r, dict) and r.get("error")]
    if args.json:
        _print_json(result)
    else:
        rows = []
        for channel, reply in zip(args.channels, responses, strict=False):
            if reply.get("error"):
                err = reply["error"]
                rows.append({"channel": channel, "status": f"error {err.get('code')}: {err.get('message')}"})
            else:
                res = reply.get("result") or {}
                status = f"offset {res['offset']}" if "offset" in res else "ok"
                rows.append({"channel": channel, "status": status})
        cols = _cols(("CHANNEL", "channel", "<"), ("RESULT", "status", "<"))
        print("\n".join(format_table(cols, rows)))
    return 1 if failed else 0


def cmd_presence(args: argparse.Namespace) -> int:
    result = _api(args).call("presence", {"channel": args.channel})
    if args.json:
        _print_json(result)
        return 0
    presence = result.get("presence") or {}
    rows = [{"client": info.get("client", client), "user": info.get("user", ""),
             "conn_info": _compact(info["conn_info"]) if "conn_info" in info else "",
             "chan_info": _compact(info["chan_info"]) if "chan_info" in info else ""}
            for client, info in sorted(presence.items(), key=lambda kv: (kv[1].get("user", ""), kv[0]))]
    cols = _cols(("CLIENT", "client", "<"), ("USER", "user", "<"), ("CONN_INFO", "conn_info", "<"),
                 ("CHAN_INFO", "chan_info", "<"))
    print("\n".join(format_table(cols, rows)))
    print(f"{len(rows)} clients, {len({r['user'] for r in rows})} users in {args.channel}")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"channel": args.channel, "limit": args.limit, "reverse": args.reverse}
    if args.since_offset is not None:
        params["since"] = {"offset": args.since_offset, "epoch": args.since_epoch or ""}
    result = _api(args).call("history", params)
    if args.json:
        _print_json(result)
        return 0
    rows = []
    for pub in result.get("publications") or []:
        info = pub.get("info") or {}
        rows.append({"offset": pub.get("offset", ""), "user": info.get("user", ""), "data": _compact(pub.get("data"))})
    cols = _cols(("OFFSET", "offset", ">"), ("USER", "user", "<"), ("DATA", "data", "<"))
    if rows:
        print("\n".join(format_table(cols, rows)))
    print(f"{len(rows)} publications; stream top offset {result.get('offset', 0)}, epoch {result.get('epoch', '')}")
    return 0


def cmd_channels(args: argparse.Namespace) -> int:
    params = {"pattern": args.pattern} if args.pattern else {}
    result = _api(args).call("channels", params)
    if args.json:
        _print_json(result)
        return 0
    channels = result.get("channels") or {}
    rows = [{"channel": name, "clients": (v or {}).get("num_clients", 0)} for name, v in sorted(channels.items())]
    if rows:
        print("\n".join(format_table(_cols(("CHANNEL", "channel", "<"), ("CLIENTS", "clients", ">")), rows)))
    print(f"{len(rows)} channels")
    return 0


def cmd_disconnect(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"user": args.user}
    if args.client:
        params["client"] = args.client
    if args.code is not None or args.reason is not None:
        spec: dict[str, Any] = {}
        if args.code is not None:
            spec["code"] = args.code
        if args.reason is not None:
            spec["reason"] = args.reason
        params["disconnect"] = spec
    result = _api(args).call("disconnect", params)
    if args.json:
        _print_json(result)
    else:
        target = f"client {args.client} of user {args.user}" if args.client else f"user {args.user}"
        print(f"disconnected {target}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    result = _api(args).call("info")
    if args.json:
        _print_json(result)
        return 0
    rows = [{**n, "uptime_text": human_duration(n.get("uptime"))}
            for n in sorted(result.get("nodes") or [], key=lambda n: n.get("slot", 0))]
    cols = _cols(("SLOT", "slot", ">"), ("NAME", "name", "<"), ("UID", "uid", "<"), ("VERSION", "version", "<"),
                 ("PID", "pid", ">"), ("UPTIME", "uptime_text", ">"), ("CLIENTS", "num_clients", ">"),
                 ("USERS", "num_users", ">"), ("SUBS", "num_subs", ">"), ("CHANNELS", "num_channels", ">"))
    print("\n".join(format_table(cols, rows)))
    return 0


def _signal_command(args: argparse.Namespace, sig: signal.Signals, verb: str) -> int:
    from tools.ctl_api import send_signal, wait_exit

    path = resolve_pid_file(args.pid_file, args.config)
    pid = send_signal(path, sig, force=args.force)
    out: dict[str, Any] = {"pid": pid, "pid_file": path, "signal": sig.name}
    wait = getattr(args, "wait", None)
    if wait is not None:
        out["exited"] = wait_exit(pid, wait)
    if args.json:
        _print_json(out)
    else:
        print(f"sent {sig.name} ({verb}) to shardgate supervisor pid {pid}")
        if wait is not None:
            print(f"pid {pid} exited" if out["exited"] else f"pid {pid} still running after {wait:g}s")
    if wait is not None and not out["exited"]:
        return 1
    return 0


def cmd_reload(args: argparse.Namespace) -> int:
    return _signal_command(args, signal.SIGHUP, "reload")


def cmd_stop(args: argparse.Namespace) -> int:
    return _signal_command(args, signal.SIGTERM, "graceful stop")


# -- parser -------------------------------------------------------------------------------------------

_CONN_HELP = f"""
connection: --api-url/--api-key, else ${ENV_API_URL}/${ENV_API_KEY}, else --config FILE
(http_server.internal_address, http_server.internal_port, http_api.key); default URL http://127.0.0.1:8001.
exit status: 0 ok, 1 failure (gateway down, wrong key, API error), 2 bad usage."""


def _common(json_help: str = "print JSON for scripts instead of a table") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("common options")
    g.add_argument("--json", action="store_true", help=json_help)
    g.add_argument("--config", metavar="FILE", help="gateway config (TOML/JSON) to read the URL, key or pid file from")
    return p


def _conn() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("connection")
    g.add_argument("--api-url", metavar="URL", help=f"internal port base URL, e.g. http://127.0.0.1:8001 "
                                                  f"(env {ENV_API_URL})")
    g.add_argument("--api-key", metavar="KEY", help=f"server API key, http_api.key (env {ENV_API_KEY})")
    g.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS", help="per request (default 5)")
    return p


def _positive_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def build_parser(prog: str = "shardgate") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Operate a running shardgate gateway.",
                                     epilog="example: shardgate status --api-url http://127.0.0.1:8001 --api-key KEY")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common, conn = _common(), _conn()
    fmt = argparse.RawDescriptionHelpFormatter

    def add(name: str, help_: str, examples: str, handler: Callable[[argparse.Namespace], int],
            api: bool = True) -> argparse.ArgumentParser:
        parents = [common, conn] if api else [common]
        p = sub.add_parser(name, help=help_.replace("%", "%%"), description=help_ + ".", parents=parents,
                           formatter_class=fmt, epilog="examples:\n" + examples + ("\n" + _CONN_HELP if api else ""))
        p.set_defaults(handler=handler)
        return p

    p = add("status", "one row per worker (slot, pid, uptime, connections, subscriptions, channels, "
            "msgs/s in/out, CPU %, RSS) plus totals",
            "  shardgate status --config /etc/shardgate/config.toml\n"
            "  SHARDGATE_API_KEY=secret shardgate status --interval 2 --json | jq .totals", cmd_status)
    p.add_argument("--interval", type=_positive_float, default=1.0, metavar="SECONDS",
                   help="time between the two info samples that give rates (default 1; 0: one sample, no rates)")

    p = add("top", "the status table refreshed live; q or Ctrl-C quits",
            "  shardgate top --config /etc/shardgate/config.toml\n"
            "  shardgate top --interval 5 --batch --iterations 3   # plain text, no curses", cmd_top)
    p.add_argument("--interval", type=_positive_float, default=1.0, metavar="SECONDS",
                   help="refresh period (default 1)")
    p.add_argument("--iterations", type=_positive_int, metavar="N",
                   help="exit after N refreshes, leaving the last frame printed")
    p.add_argument("--once", action="store_true", help="same as --iterations 1")
    p.add_argument("--batch", action="store_true", help="print plain-text frames instead of the curses screen")

    p = add("publish", "publish DATA_JSON into CHANNEL (through the channel's owner, kept in history)",
            "  shardgate publish chat:lobby '{\"text\": \"hello\"}'\n"
            "  shardgate publish news '\"plain string\"' --json", cmd_publish)
    p.add_argument("channel", metavar="CHANNEL")
    p.add_argument("data", metavar="DATA_JSON", help="the publication data, as JSON")
    p.add_argument("--skip-history", action="store_true", help="do not keep it in the channel's history")
    p.add_argument("--idempotency-key", metavar="KEY", help="publish at most once per key")

    p = add("broadcast", "publish the same data into several channels",
            "  shardgate broadcast user:1 user:2 user:3 --data '{\"alert\": \"maintenance at 18:00\"}'",
            cmd_broadcast)
    p.add_argument("channels", nargs="+", metavar="CHANNEL")
    p.add_argument("--data", required=True, metavar="JSON", help="the publication data, as JSON")

    p = add("presence", "clients subscribed to CHANNEL (needs presence enabled for it)",
            "  shardgate presence chat:lobby", cmd_presence)
    p.add_argument("channel", metavar="CHANNEL")

    p = add("history", "publications kept for CHANNEL",
            "  shardgate history chat:lobby --limit 20\n"
            "  shardgate history chat:lobby --limit 5 --reverse --json", cmd_history)
    p.add_argument("channel", metavar="CHANNEL")
    p.add_argument("--limit", type=int, default=10, metavar="N", help="at most N publications (default 10; "
                                                                      "-1: as many as the server allows)")
    p.add_argument("--reverse", action="store_true", help="newest first")
    p.add_argument("--since-offset", type=int, metavar="N", help="only publications after this offset")
    p.add_argument("--since-epoch", metavar="EPOCH", help="the stream epoch that goes with --since-offset")

    p = add("channels", "active channels with their client counts (summed over workers)",
            "  shardgate channels\n  shardgate channels 'chat:*'", cmd_channels)
    p.add_argument("pattern", nargs="?", metavar="PATTERN", help="glob filter on channel names")

    p = add("disconnect", "disconnect a user's connections (all of them, or one client)",
            "  shardgate disconnect 42\n"
            "  shardgate disconnect 42 --client 3f1c... --code 4000 --reason 'banned'", cmd_disconnect)
    p.add_argument("user", metavar="USER")
    p.add_argument("--client", metavar="ID", help="only this client id")
    p.add_argument("--code", type=int, metavar="N", help="disconnect code, 3000..4999 (server default 3503)")
    p.add_argument("--reason", metavar="TEXT", help="disconnect reason sent to the client")

    add("info", "the raw per-worker node info (uid, name, version, counts)",
        "  shardgate info\n  shardgate info --json | jq '.nodes[].pid'", cmd_info)

    for name, handler, what, extra in (
            ("reload", cmd_reload, "send SIGHUP (rolling reload: the config is re-read and every worker "
                                           "replaced one slot at a time) to the supervisor named by the pid file", ""),
            ("stop", cmd_stop, "send SIGTERM (graceful stop: clients get 3001 shutdown) to the supervisor "
                               "named by the pid file", "  shardgate stop --pid-file /run/shardgate.pid --wait 30\n")):
        p = add(name, what, f"  shardgate {name} --config /etc/shardgate/config.toml\n{extra}", handler, api=False)
        p.add_argument("--pid-file", metavar="PATH", help="the supervisor's pid file (default: shardgate.pid_file "
                                                          "from --config)")
        p.add_argument("--force", action="store_true", help="signal even if the pid does not look like shardgate")
        if name == "stop":
            p.add_argument("--wait", type=_positive_float, nargs="?", const=30.0, metavar="SECONDS",
                           help="wait until the supervisor exited (default 30s); exit 1 if it did not")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except CtlError as exc:
        print(f"shardgate {args.command}: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
