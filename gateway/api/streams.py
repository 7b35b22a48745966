"""The client port's HTTP transports (aiohttp side): bidirectional emulation (``POST
http_stream.handler_prefix``, ``GET sse.handler_prefix``, ``POST emulation.handler_prefix``)
and the one-way ``uni_http_stream`` and ``uni_sse``. Mounted by :mod:`gateway.api.http` on
the client port's app; the sessions, framing and routing are in :mod:`gateway.transport`.

Every endpoint checks the browser ``Origin`` as the WebSocket endpoint does
(``client.allowed_origins``; 403 otherwise) and answers CORS for the allowed ones (a
preflight ``OPTIONS`` gets 204). Request bodies are bounded by each endpoint's
``max_request_body_size`` (413 beyond it); a body or connect request that does not parse is a
400; an emulation request for a session that is not (or no longer) there is a 404.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway.core.errors import ClientError
from gateway.protocol.centrifuge_json import JSON
from gateway.protocol.centrifuge_protobuf import PROTOBUF
from gateway.protocol.centrifuge_uni import UNI_JSON
from gateway.protocol.codec import Codec
from gateway.transport.framing import (
    SSE_PREAMBLE,
    BadRequest,
    json_lines,
    parse_emulation_request,
    sse_events,
    uni_connect_command,
)
from gateway.transport.streaming import EmulationHub, StreamConnection
from gateway.transport.upgrade import RefusedOriginLog, origin_allowed

if TYPE_CHECKING:
    from gateway.node import Node

__all__ = ["StreamEndpoints"]

log = logging.getLogger("shardgate.streams")

_PROTOBUF_TYPE = "application/octet-stream"
_NO_CACHE = {
    "Cache-Control": "private, no-cache, no-store, must-revalidate, max-age=0",
    "Pragma": "no-cache",
    "Expires": "0",
    "X-Accel-Buffering": "no",
}


class _TooLarge(Exception):
    pass


async def _read_body(request: web.Request, limit: int) -> bytes:
    """At most ``limit`` bytes of body, or _TooLarge (the rest is never buffered)."""
    if request.content_length is not None and request.content_length > limit:
        raise _TooLarge
    body = await request.content.read(limit + 1)
    if len(body) > limit:
        raise _TooLarge
    return body


def _identity(data: bytes) -> bytes:
    return data


class StreamEndpoints:
    """The handlers, one set per worker; :meth:`add_routes` mounts the enabled ones."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.cfg = node.config.transports
        self.origins = node.config.client.allowed_origins
        self.refused = RefusedOriginLog(self.origins)
        self.hub = EmulationHub(node) if self.cfg.emulation_enabled else None
        self.proxy_headers = node.proxy_header_names

    def add_routes(self, app: web.Application) -> None:
        cfg = self.cfg
        if cfg.http_stream.enabled:
            app.router.add_route("*", cfg.http_stream.handler_prefix, self.http_stream)
        if cfg.sse.enabled:
            app.router.add_route("*", cfg.sse.handler_prefix, self.sse)
        if cfg.emulation_enabled:
            app.router.add_route("*", cfg.emulation.handler_prefix, self.emulation)
        if cfg.uni_http_stream.enabled:
            app.router.add_route("*", cfg.uni_http_stream.handler_prefix, self.uni_http_stream)
        if cfg.uni_sse.enabled:
            app.router.add_route("*", cfg.uni_sse.handler_prefix, self.uni_sse)

    # -- shared ---------------------------------------------------------------------------------

    def _cors(self, request: web.Request, methods: str) -> tuple[dict[str, str], web.Response | None]:
        """CORS headers for an allowed Origin, and the response to send instead of serving
        (403 for a refused Origin, 204 for a preflight)."""
        origin = request.headers.get("Origin")
        if not origin:
            return {}, None
        if not origin_allowed(origin, request.headers.get("Host"), self.origins):
            self.refused.refused(origin, request.headers.get("Host"))
            return {}, web.Response(status=403, text="origin not allowed")
        headers = {"Access-Control-Allow-Origin": origin, "Access-Control-Allow-Credentials": "true",
                   "Vary": "Origin"}
        if request.method == "OPTIONS":
            wanted = request.headers.get("Access-Control-Request-Headers")
            pre = {**headers, "Access-Control-Allow-Methods": methods, "Access-Control-Max-Age": "300"}
            if wanted:
                pre["Access-Control-Allow-Headers"] = wanted[:1024]
            return headers, web.Response(status=204, headers=pre)
        return headers, None

    def _kept_headers(self, request: web.Request) -> dict[str, str] | None:
        if not self.proxy_headers:
            return None
        kept: dict[str, str] = {}
        for name, value in request.headers.items():
            key = name.lower()
            if key in self.proxy_headers and key not in kept:
                kept[key] = value
        return kept

    async def _serve(self, request: web.Request, cors: dict[str, str], codec: Codec,
                     frame: Callable[[bytes], bytes], initial: bytes, *, content_type: str,
                     emulated: bool = False, unidirectional: bool = False,
                     preamble: bytes = b"") -> web.StreamResponse:
        """Open the stream, feed the connect command(s) to a new session and stream its
        output until either side ends it."""
        transport: Any = request.transport

        def socket_buffer() -> int:
            t = transport
            return 0 if t is None or t.is_closing() else int(t.get_write_buffer_size())

        conn = StreamConnection(self.node, codec, frame, socket_buffer, unidirectional=unidirectional,
                                headers=self._kept_headers(request))
        if emulated:
            assert self.hub is not None
            self.hub.register(conn)
        resp = web.StreamResponse(status=200, headers={**_NO_CACHE, **cors, "Content-Type": content_type})
        try:
            await resp.prepare(request)
            if preamble:
                await resp.write(preamble)
            conn.session.on_message(initial)
            await conn.run(resp.write)
            if not request.transport or request.transport.is_closing():
                return resp
            await resp.write_eof()
        except (ConnectionError, OSError):
            pass
        finally:
            conn.session.on_transport_closed()
            if emulated:
                assert self.hub is not None
                self.hub.unregister(conn)
        return resp

    async def _post_body(self, request: web.Request, limit: int) -> tuple[dict[str, str], bytes] | web.Response:
        """The preamble of every POST endpoint: CORS (a preflight or a refused Origin answers
        here), 405 for another method, 413 beyond ``limit``; else the CORS headers and the body."""
        cors, early = self._cors(request, "POST, OPTIONS")
        if early is not None:
            return early
        if request.method != "POST":
            return web.Response(status=405, headers={**cors, "Allow": "POST, OPTIONS"})
        try:
            return cors, await _read_body(request, limit)
        except _TooLarge:
            return web.Response(status=413, headers=cors, text="request body too large")

    # -- bidirectional emulation ----------------------------------------------------------------

    async def http_stream(self, request: web.Request) -> web.StreamResponse:
        got = await self._post_body(request, self.cfg.http_stream.max_request_body_size)
        if isinstance(got, web.Response):
            return got
        cors, body = got
        if not body:
            return web.Response(status=400, headers=cors, text="no connect command")
        protobuf = request.headers.get("Content-Type", "") == _PROTOBUF_TYPE
        if protobuf:
            return await self._serve(request, cors, PROTOBUF, _identity, body, content_type=_PROTOBUF_TYPE,
                                     emulated=True)
        return await self._serve(request, cors, JSON, json_lines, body, content_type="application/json",
                                 emulated=True)

    async def sse(self, request: web.Request) -> web.StreamResponse:
        cors, early = self._cors(request, "GET, POST, OPTIONS")
        if early is not None:
            return early
        limit = self.cfg.sse.max_request_body_size
        if request.method == "GET":
            initial = request.query.get("cf_connect", "").encode()
            if len(initial) > limit:
                return web.Response(status=413, headers=cors, text="connect command too large")
        elif request.method == "POST":
            try:
                initial = await _read_body(request, limit)
            except _TooLarge:
                return web.Response(status=413, headers=cors, text="request body too large")
        else:
            return web.Response(status=405, headers={**cors, "Allow": "GET, POST, OPTIONS"})
        if not initial:
            return web.Response(status=400, headers=cors, text="no connect command (cf_connect)")
        return await self._serve(request, cors, JSON, sse_events, initial,
                                 content_type="text/event-stream; charset=utf-8", emulated=True,
                                 preamble=SSE_PREAMBLE)

    async def emulation(self, request: web.Request) -> web.Response:
        got = await self._post_body(request, self.cfg.emulation.max_request_body_size)
        if isinstance(got, web.Response):
            return got
        cors, body = got
        assert self.hub is not None
        try:
            req = parse_emulation_request(body, request.headers.get("Content-Type", "") == _PROTOBUF_TYPE)
        except BadRequest as exc:
            return web.Response(status=400, headers=cors, text=str(exc))
        headers = {**cors, "X-Shardgate-Slot": str(self.node.slot)}
        try:
            found = await self.hub.deliver(req)
        except ClientError:
            return web.Response(status=503, headers=headers, text="session's worker unavailable")
        if not found:
            return web.Response(status=404, headers=headers, text="session not found")
        return web.Response(status=204, headers=headers)

    # -- one-way --------------------------------------------------------------------------------

    async def uni_http_stream(self, request: web.Request) -> web.StreamResponse:
        got = await self._post_body(request, self.cfg.uni_http_stream.max_request_body_size)
        if isinstance(got, web.Response):
            return got
        cors, body = got
        try:
            command = uni_connect_command(body)
        except BadRequest as exc:
            return web.Response(status=400, headers=cors, text=str(exc))
        return await self._serve(request, cors, UNI_JSON, json_lines, command, content_type="application/json",
                                 unidirectional=True)

    async def uni_sse(self, request: web.Request) -> web.StreamResponse:
        cors, early = self._cors(request, "GET, POST, OPTIONS")
        if early is not None:
            return early
        limit = self.cfg.uni_sse.max_request_body_size
        try:
            if request.method == "GET":
                raw = request.query.get("cf_connect", "").encode()
                if len(raw) > limit:
                    raise _TooLarge
            elif request.method == "POST":
                raw = await _read_body(request, limit)
            else:
                return web.Response(status=405, headers={**cors, "Allow": "GET, POST, OPTIONS"})
            command = uni_connect_command(raw)
        except _TooLarge:
            return web.Response(status=413, headers=cors, text="connect request too large")
        except BadRequest as exc:
            return web.Response(status=400, headers=cors, text=str(exc))
        return await self._serve(request, cors, UNI_JSON, sse_events, command,
                                 content_type="text/event-stream; charset=utf-8", unidirectional=True,
                                 preamble=SSE_PREAMBLE)
