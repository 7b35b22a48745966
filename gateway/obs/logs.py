"""Logging setup: human lines by default, JSON lines for log shippers, and a rate limit
for per-connection noise so that a flood of bad clients cannot fill the disk."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

__all__ = ["setup_logging", "escape_log_text", "JsonFormatter", "RateLimit"]

_TEXT_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, pid, msg (+ exc)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


# Loggers that write a line per misbehaving peer: picows (WebSocket parser and handshake
# errors) and aiohttp's server (malformed requests on the internal port).
_PER_CONNECTION_LOGGERS = ("picows", "aiohttp.server")


class _ConnectionNoiseFilter(logging.Filter):
    """picows and aiohttp log one line per broken connection (parser errors, handshake
    failures): a flood of bad clients must not fill the disk, so those lines share a rate limit."""

    def __init__(self) -> None:
        super().__init__()
        self._limit = RateLimit(burst=50, period=10.0)

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(_PER_CONNECTION_LOGGERS):
            return True
        if not self._limit.allow():
            return False
        suppressed = self._limit.take_suppressed()
        if suppressed:
            record.msg = f"{record.msg} (and {suppressed} similar lines not logged)"
        return True


def escape_log_text(text: str) -> str:
    """``text`` with control and other non-printable characters written as Python escapes
    (``\\n``, ``\\x1b``, ``\\u2028``); printable text, non-ASCII letters included, unchanged."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


class _EscapeFilter(logging.Filter):
    """Log values often come from outside (user ids from tokens, reasons and channel names
    sent by clients, header values). A newline in one would forge a log line, an ANSI
    escape would rewrite the operator's terminal. One place escapes them all: the message
    after formatting, so no call site can forget. Tracebacks are ours and stay multi-line."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = escape_log_text(record.getMessage())
        record.args = None
        return True


def setup_logging(level: str, fmt: str, file: str = "") -> None:
    """Log at ``level`` in ``fmt`` to stderr, or appended to ``file`` (``log.file``) when set."""
    handler: logging.Handler = (logging.FileHandler(file, encoding="utf-8") if file
                                else logging.StreamHandler(sys.stderr))
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(_TEXT_FORMAT))
    handler.addFilter(_ConnectionNoiseFilter())
    handler.addFilter(_EscapeFilter())  # after the noise filter, which appends to the message
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # picows logs every accepted connection at INFO: far too chatty for a gateway.
    logging.getLogger("picows").setLevel(max(logging.WARNING, root.level))


class RateLimit:
    """At most ``burst`` events per ``period`` seconds; reports how many were suppressed."""

    def __init__(self, burst: int, period: float) -> None:
        self.burst = burst
        self.period = period
        self._window_start = 0.0
        self._count = 0
        self.suppressed = 0

    def allow(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        if now - self._window_start >= self.period:
            self._window_start = now
            self._count = 0
        self._count += 1
        if self._count <= self.burst:
            return True
        self.suppressed += 1
        return False

    def take_suppressed(self) -> int:
        n, self.suppressed = self.suppressed, 0
        return n
