"""HTTP on the internal port: the only module that imports aiohttp.

``POST /api/<method>`` (Centrifugo's server API, PROTOCOL.md §3), ``GET /metrics``,
``GET /health``, ``GET /ready`` and, with ``admin.enabled``, the web admin under ``/admin``
(its API is the server API behind a login session instead of the API key). Every worker serves it on the same port with
SO_REUSEPORT; whichever answers reaches all workers through the bus.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources
from typing import TYPE_CHECKING, Any, Protocol

import jwt
import orjson
from aiohttp import web, web_response
from aiohttp.http_exceptions import HttpProcessingError

from gateway.api.admin import SESSION_COOKIE, LoginThrottle, check_password, issue_session, verify_session
from gateway.api.executor import API_ERROR_BAD_REQUEST, ApiExecutor, http_status_for
from gateway.core.errors import ClientError
from gateway.obs import metrics
from gateway.protocol.centrifuge_json import dumps

if TYPE_CHECKING:
    from gateway.node import Node

__all__ = ["start_http_server", "start_client_port_http", "ClientPortHttp", "PollingEndpoint"]

_JSON = "application/json"
_READY_TIMEOUT = 1.0
# aiohttp's default Server header names Python's and its own version: no need to tell
# anyone which known vulnerabilities to try. aiohttp has no setting for it, and the
# responses it builds itself (400 for a malformed request) never reach the app's
# on_response_prepare signal, so the default it falls back to is replaced, here, the one
# module that imports aiohttp (tests/integration/test_api.py checks every path).
_SERVER_HEADER = "shardgate"
web_response.SERVER_SOFTWARE = _SERVER_HEADER  # type: ignore[attr-defined]  # a private default


class _PeerErrorFilter(logging.Filter):
    """aiohttp logs every malformed request (bad header, bad request line) at ERROR with a
    traceback: a way to flood the log without a key. A peer's bad request is not our
    bug: one WARNING line with the parser's reason, rate-limited with the other
    per-connection noise (gateway.obs.logs). Errors in our handlers keep their traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg = f"{record.getMessage()}: {exc.code} {exc.message}"
            record.args = None
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def _json(data: Any, status: int = 200) -> web.Response:
    # The client protocol's JSON codec: results hold model values (publications, client infos).
    return web.Response(body=dumps(data), status=status, content_type=_JSON)


class _Handlers:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.executor = ApiExecutor(node)
        cfg = node.config.http_api
        self.key = cfg.key.encode()
        self.insecure = cfg.insecure
        self.transport_errors = cfg.error_mode == "transport"

    def _authorized(self, request: web.Request) -> bool:
        if self.insecure:
            return True
        if not self.key:
            return False
        given = request.headers.get("X-API-Key")
        if given is None:
            auth = request.headers.get("Authorization", "")
            scheme, _, value = auth.partition(" ")
            given = value.strip() if scheme.lower() == "apikey" else request.query.get("api_key")
        if given is None:
            return False
        try:
            # aiohttp hands undecodable header bytes over as surrogates, which do not encode:
            # a malformed key is a wrong key (401), never a 500 with a traceback per request.
            given_bytes = given.encode()
        except UnicodeEncodeError:
            return False
        return hmac.compare_digest(given_bytes, self.key)

    def _error(self, request: web.Request, err: ClientError) -> web.Response:
        mode = request.headers.get("X-Centrifugo-Error-Mode", "").lower()
        if self.transport_errors or mode == "transport":
            return _json({"code": err.code, "message": err.message}, status=http_status_for(err.code))
        return _json({"error": {"code": err.code, "message": err.message}})

    async def api(self, request: web.Request) -> web.Response:
        if request.method != "POST":
            return web.Response(status=405, headers={"Allow": "POST"})
        if not self._authorized(request):
            return web.Response(status=401)
        try:
            params = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return web.Response(status=400, text="bad request body")
        method = request.match_info["method"]
        try:
            if method == "batch":
                return _json({"replies": await self.executor.batch(params)})
            result = await self.executor.execute(method, params)
        except ClientError as err:
            return self._error(request, err)
        except (TypeError, ValueError):
            return self._error(request, API_ERROR_BAD_REQUEST)
        return _json({"result": result})

    async def metrics(self, request: web.Request) -> web.Response:
        if not self.node.config.prometheus.enabled:  # prometheus.enabled = false
            raise web.HTTPNotFound()
        body = metrics.render(await self.node.survey("stats", {}))
        return web.Response(body=body, headers={"Content-Type": metrics.CONTENT_TYPE})

    async def health(self, request: web.Request) -> web.Response:
        if not self.node.config.health.enabled:  # health.enabled = false
            raise web.HTTPNotFound()
        return _json({"status": "ok", "slot": self.node.slot})

    async def ready(self, request: web.Request) -> web.Response:
        results = await self.node.survey("ping", {}, timeout=_READY_TIMEOUT)
        missing = [slot for slot, result in results if result is None]
        if missing:
            return _json({"status": "not ready", "missing_slots": missing}, status=503)
        engine_down = [slot for slot, result in results if result is not None and not result.get("engine", True)]
        if engine_down:
            # Redis cannot be reached: publish/history/presence would fail (error 100).
            return _json({"status": "not ready", "engine_unavailable_slots": engine_down}, status=503)
        return _json({"status": "ready", "workers": self.node.workers})


def _static(name: str) -> bytes:
    return resources.files("gateway.api").joinpath("static", name).read_bytes()


_ADMIN_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    # Everything the page needs comes from here: no inline script, nothing from elsewhere.
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
}


class _Admin:
    """The web admin: a static page, a login that sets a signed session cookie, and the server
    API (plus a token minter) behind that session."""

    def __init__(self, node: Node, executor: ApiExecutor) -> None:
        self.node = node
        self.executor = executor
        self.cfg = node.config.admin
        self.throttle = LoginThrottle()
        self.page = _static("admin.html")
        self.script = _static("admin.js")

    @staticmethod
    def _cross_origin(request: web.Request) -> bool:
        """A browser POST from another origin. SameSite=Strict does not separate ports of one
        host (a page on the client port or on localhost:5173 is "same-site"), so a page there
        could otherwise post a text/plain form here with the cookie attached."""
        origin = request.headers.get("Origin")
        return origin is not None and origin != f"{request.scheme}://{request.host}"

    def _session_ok(self, request: web.Request) -> bool:
        token = request.cookies.get(SESSION_COOKIE, "")
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            token = value.strip()
        return verify_session(self.cfg.secret, token)

    async def page_handler(self, request: web.Request) -> web.Response:
        return web.Response(body=self.page, content_type="text/html", charset="utf-8", headers=_ADMIN_HEADERS)

    async def script_handler(self, request: web.Request) -> web.Response:
        return web.Response(body=self.script, content_type="text/javascript", charset="utf-8",
                            headers=_ADMIN_HEADERS)

    async def root(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/admin")

    async def login(self, request: web.Request) -> web.Response:
        if self._cross_origin(request):
            return web.Response(status=403, text="cross-origin request")
        if not self.throttle.allow(request.remote or ""):
            return web.Response(status=429, headers={"Retry-After": str(self.throttle.retry_after())})
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return web.Response(status=400, text="bad request body")
        if not isinstance(body, dict) or not check_password(self.cfg.password, body.get("password")):
            return web.Response(status=401)
        token = issue_session(self.cfg.secret, self.cfg.session_ttl)
        resp = _json({"token": token, "expires_in": int(self.cfg.session_ttl)})
        resp.set_cookie(SESSION_COOKIE, token, path="/admin", httponly=True, samesite="Strict",
                        max_age=int(self.cfg.session_ttl), secure=request.secure)
        return resp

    async def logout(self, request: web.Request) -> web.Response:
        resp = _json({})
        resp.del_cookie(SESSION_COOKIE, path="/admin")
        return resp

    async def session(self, request: web.Request) -> web.Response:
        return _json({"ok": True}) if self._session_ok(request) else web.Response(status=401)

    async def api(self, request: web.Request) -> web.Response:
        if self._cross_origin(request):
            return web.Response(status=403, text="cross-origin request")
        if not self._session_ok(request):
            return web.Response(status=401)
        try:
            params = orjson.loads(await request.read() or b"{}")
        except orjson.JSONDecodeError:
            return web.Response(status=400, text="bad request body")
        method = request.match_info["method"]
        try:
            if method == "mint_token":
                return _json({"result": self._mint(params)})
            result = await self.executor.execute(method, params)
        except ClientError as err:
            return _json({"error": {"code": err.code, "message": err.message}})
        except (TypeError, ValueError):
            return _json({"error": {"code": API_ERROR_BAD_REQUEST.code, "message": API_ERROR_BAD_REQUEST.message}})
        return _json({"result": result})

    def _mint(self, params: Any) -> dict[str, Any]:
        """A connection (or, with ``channel``, subscription) JWT signed with the HMAC secret."""
        secret = self.node.config.client.token.hmac_secret_key
        if not secret:
            raise ClientError(107, "bad request: no client.token.hmac_secret_key configured")
        if not isinstance(params, dict):
            raise ClientError(107, "bad request")
        user, channel = params.get("user", ""), params.get("channel", "")
        ttl = params.get("exp_seconds", 3600)
        if not isinstance(user, str) or not isinstance(channel, str) or not isinstance(ttl, int) or ttl <= 0:
            raise ClientError(107, "bad request: user and channel are strings, exp_seconds a positive integer")
        now = int(time.time())
        claims: dict[str, Any] = {"sub": user, "iat": now, "exp": now + ttl}
        if channel:
            claims["channel"] = channel
        return {"token": jwt.encode(claims, secret, algorithm="HS256"), "claims": claims}

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/", self.root)
        app.router.add_get("/admin", self.page_handler)
        app.router.add_get("/admin/", self.page_handler)
        app.router.add_get("/admin/admin.js", self.script_handler)
        app.router.add_post("/admin/login", self.login)
        app.router.add_post("/admin/logout", self.logout)
        app.router.add_get("/admin/session", self.session)
        app.router.add_post("/admin/api/{method}", self.api)


async def start_http_server(node: Node, host: str, port: int,
                            ssl_context: ssl.SSLContext | None = None) -> web.AppRunner:
    """Serve the internal port on this worker (SO_REUSEPORT: every worker binds it)."""
    handlers = _Handlers(node)
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, _PeerErrorFilter) for f in server_log.filters):
        server_log.addFilter(_PeerErrorFilter())
    app = web.Application(client_max_size=node.config.shardgate.api_max_body_size)
    if not node.config.http_api.disabled:
        app.router.add_route("*", "/api/{method}", handlers.api)
    app.router.add_get("/metrics", handlers.metrics)
    app.router.add_get("/health", handlers.health)
    app.router.add_get("/ready", handlers.ready)
    if node.config.admin.enabled:
        _Admin(node, handlers.executor).add_routes(app)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_port=True, backlog=1024, ssl_context=ssl_context)
    await site.start()
    return runner


class ClientPortHttp:
    """Plain HTTP on the client port: the server API under ``/api`` with
    ``http_api.external`` (Centrifugo serves it there when no internal port is wanted).
    The WebSocket edge hands it every request for a path it claims that is not an upgrade
    (gateway.transport.websocket.PlainHttp); it speaks HTTP/1.1 through aiohttp."""

    def __init__(self, runner: web.AppRunner, prefixes: tuple[bytes, ...]) -> None:
        self.runner = runner
        self.prefixes = prefixes

    def wants(self, path: bytes) -> bool:
        return any(path == p or path.startswith(p + b"/") for p in self.prefixes)

    def new_protocol(self) -> asyncio.BaseProtocol:
        server = self.runner.server
        assert server is not None
        return server()

    async def close(self) -> None:
        await self.runner.cleanup()


class PollingEndpoint(Protocol):
    """Engine.IO long-polling (gateway.socketio.server.SioServer): an answer to one request
    as ``(status, content type, body)``; the body is read only when it is wanted."""

    path: bytes
    max_body: int

    def poll(self, method: str, query: Mapping[str, str],
             read: Callable[[], Awaitable[bytes]]) -> Awaitable[tuple[int, str, bytes]]:
        ...


def _polling_handler(endpoint: PollingEndpoint) -> Any:
    async def handle(request: web.Request) -> web.Response:
        if request.method == "OPTIONS":
            return web.Response(status=204, headers=_cors(request))
        status, ctype, body = await endpoint.poll(request.method, request.query, request.read)
        resp = web.Response(status=status, body=body, headers=_cors(request))
        resp.content_type, _, charset = ctype.partition("; charset=")
        if charset:
            resp.charset = charset
        return resp
    return handle


def _cors(request: web.Request) -> dict[str, str]:
    origin = request.headers.get("Origin")
    if not origin:
        return {}
    return {"Access-Control-Allow-Origin": origin, "Access-Control-Allow-Credentials": "true",
            "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
            "Access-Control-Allow-Headers": request.headers.get("Access-Control-Request-Headers", "content-type")}


async def start_client_port_http(node: Node, polling: PollingEndpoint | None = None) -> ClientPortHttp | None:
    """The client port's plain-HTTP routes, or None when there are none (configuration): the
    server API with ``http_api.external``, the HTTP transports that are enabled (http_stream,
    sse and their emulation endpoint, uni_http_stream, uni_sse: :mod:`gateway.api.streams`),
    and Engine.IO long-polling with ``polling``."""
    cfg = node.config.http_api
    api = cfg.external and not cfg.disabled
    streams = node.config.transports.http_prefixes()
    if not api and not streams and polling is None:
        return None
    max_body = node.config.shardgate.api_max_body_size
    if polling is not None:
        max_body = max(max_body, polling.max_body)
    app = web.Application(client_max_size=max_body)
    prefixes: list[bytes] = []
    if api:
        app.router.add_route("*", "/api/{method}", _Handlers(node).api)
        prefixes.append(b"/api")
    if streams:
        from gateway.api.streams import StreamEndpoints  # only where an HTTP transport is enabled

        StreamEndpoints(node).add_routes(app)
        prefixes.extend(p.encode() for p in streams)
    if polling is not None:
        app.router.add_route("*", polling.path.decode(), _polling_handler(polling))
        prefixes.append(polling.path)
    # A stream's handler runs as long as its client listens: cancelled when the client goes
    # away, which is how the session learns that its stream is gone.
    runner = web.AppRunner(app, access_log=None, handle_signals=False, handler_cancellation=True)
    await runner.setup()
    return ClientPortHttp(runner, tuple(prefixes))
