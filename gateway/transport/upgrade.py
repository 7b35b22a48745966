"""What a client-port request decides before any WebSocket exists: the Origin rule, the
codec a connection speaks, the headers proxies forward, the demo pages, a plain-HTTP request
to hand on; and the close codes a peer may send. Pure: no picows here (the API's streaming
endpoints share the Origin rule without importing the WebSocket server)."""

from __future__ import annotations

import fnmatch
import logging
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from gateway.obs.logs import RateLimit
from gateway.protocol.centrifuge_json import JSON
from gateway.protocol.centrifuge_protobuf import PROTOBUF
from gateway.protocol.centrifuge_protobuf import SUBPROTOCOL as _PROTOBUF_SUBPROTOCOL
from gateway.protocol.codec import Codec

__all__ = ["RefusedOriginLog", "demo_pages", "forwarded_headers", "negotiate_codec", "origin_allowed",
           "plain_http_path", "valid_close_code"]

log = logging.getLogger("shardgate.ws")  # the client port's logger, as in gateway.transport.websocket

_JSON_SUBPROTOCOL = "centrifuge-json"


def valid_close_code(code: int) -> bool:
    """RFC 6455 §7.4: codes a peer may send in a CLOSE frame."""
    return code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014) or (
        3000 <= code <= 4999)


def origin_allowed(origin: str | None, host: str | None, patterns: tuple[str, ...]) -> bool:
    """No Origin (non-browser clients) is allowed; otherwise the patterns decide, or, when
    none are configured, the Origin must name the host the request was sent to."""
    if not origin:
        return True
    origin = origin.lower()
    if patterns:
        return any(fnmatch.fnmatchcase(origin, p.lower()) for p in patterns)
    return bool(host) and urlsplit(origin).netloc == (host or "").lower()


class RefusedOriginLog:
    """One warning per refused Origin (per worker): a refused browser page retries forever, so
    a line per attempt would flood the log, and none at all leaves a bare 403 to puzzle over.

    Bounded: at most ``max_seen`` Origins are remembered (then the memory starts over), and new
    lines share a rate limit, so a client sending a fresh Origin each time cannot fill the disk.
    """

    def __init__(self, patterns: tuple[str, ...], max_seen: int = 1024,
                 limit: RateLimit | None = None) -> None:
        self._patterns = patterns
        self._max_seen = max_seen
        self._seen: set[str] = set()
        self._limit = limit or RateLimit(burst=20, period=60.0)

    def refused(self, origin: str, host: str | None) -> None:
        origin = origin[:256]
        key = origin.lower()
        if key in self._seen or not self._limit.allow():
            return
        if len(self._seen) >= self._max_seen:
            self._seen.clear()
        self._seen.add(key)
        rule = (f"allowed: {', '.join(self._patterns)}" if self._patterns
                else "none set, so only an Origin naming the Host is allowed")
        suppressed = self._limit.take_suppressed()
        more = f" ({suppressed} more refused Origins not logged)" if suppressed else ""
        log.warning("refused WebSocket upgrade with HTTP 403: Origin %r is not allowed for Host %r "
                    "(client.allowed_origins: %s); add it to client.allowed_origins (or serve "
                    "--allowed-origin) to allow it; logged once per Origin%s",
                    origin, (host or "")[:256], rule, more)


# ``admin.demo_page`` (on in the development default): plain GETs on the client port.
_DEMO_FILES = {b"/": ("demo.html", "text/html; charset=utf-8"),
               b"/centrifuge.js": ("centrifuge.js", "text/javascript; charset=utf-8")}


def demo_pages() -> dict[bytes, Any]:
    """path -> a ready 200 response: the demo chat page and the vendored centrifuge-js (MIT)."""
    static = resources.files("gateway.transport").joinpath("static")
    return {path: (static.joinpath(name).read_bytes(), {"Content-Type": ctype, "Cache-Control": "no-cache",
                                                          "X-Content-Type-Options": "nosniff"})
            for path, (name, ctype) in _DEMO_FILES.items()}


def forwarded_headers(headers: Any, wanted: frozenset[str]) -> dict[str, str]:
    """The upgrade request's headers some proxy forwards (``http_headers``), lower-case names;
    a repeated header keeps its first value."""
    kept: dict[str, str] = {}
    for name, value in headers.items():
        key = str(name).lower()
        if key in wanted and key not in kept:
            kept[key] = str(value)
    return kept


def negotiate_codec(path: bytes, offered: str | None) -> tuple[Codec, str | None]:
    """The connection's codec and the subprotocol to answer (PROTOCOL.md §1.1): as
    Centrifugo, ``centrifuge-json`` is preferred when both are offered; protobuf is also
    chosen by the query ``format=protobuf`` or ``cf_protocol=protobuf``; the JSON SDKs
    offer no subprotocol at all."""
    protocols = [p.strip() for p in offered.split(",")] if offered else []
    if _JSON_SUBPROTOCOL in protocols:
        return JSON, _JSON_SUBPROTOCOL
    if _PROTOBUF_SUBPROTOCOL in protocols:
        return PROTOBUF, _PROTOBUF_SUBPROTOCOL
    _, _, query = path.partition(b"?")
    if query:
        params = parse_qs(query.decode("latin-1"))
        if "protobuf" in params.get("format", ()) or "protobuf" in params.get("cf_protocol", ()):
            return PROTOBUF, None
    return JSON, None


def plain_http_path(head: bytes | bytearray) -> bytes | None:
    """The path of a request head that is not a WebSocket upgrade (None for an upgrade or a
    request line that does not parse: picows answers those)."""
    line_end = head.find(b"\r\n")
    parts = bytes(head[:line_end]).split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        return None
    for line in bytes(head[line_end + 2:]).split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"upgrade" and b"websocket" in value.lower():
            return None
    return parts[1].split(b"?", 1)[0]
