"""The WebSocket edge: the only module that imports picows.

picows hands over frames, not messages, and leaves RFC 6455 duties to the application
(PROTOCOL.md §7): this module reassembles fragments up to ``websocket.message_size_limit``
(1009 beyond), closes 1007 on invalid UTF-8 and 1002 on RSV bits or bad fragment
order, answers CLOSE (never with code 0), and turns transport backpressure into the
session's bounded queue. The handshake accepts Firefox's ``Connection: keep-alive,
Upgrade``, which picows 2.3.1 refuses: the factory runs before picows validates the
request, so it normalises the header token list there.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from picows import (
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
    ws_create_server,
)

from gateway.client import Session
from gateway.errors import (
    DISCONNECT_INAPPROPRIATE_PROTOCOL,
    WS_MESSAGE_TOO_BIG,
    Disconnect,
)
from gateway.node import Node

__all__ = ["start_client_server", "CLIENT_PATH", "origin_allowed"]

log = logging.getLogger("shardgate.ws")

CLIENT_PATH = b"/connection/websocket"
_JSON_SUBPROTOCOL = "centrifuge-json"


def _valid_close_code(code: int) -> bool:
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


class ClientConnection(WSListener):
    """Bridges one picows connection to one :class:`Session`."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._limit = node.config.websocket.message_size_limit
        self._t: WSTransport | None = None
        self._frag: bytearray | None = None
        self._frag_type = WSMsgType.TEXT
        self.session = Session(node, self)

    # -- Transport protocol for the session -----------------------------------------------------

    def send_text(self, data: bytes) -> None:
        if self._t is not None:
            self._t.send(WSMsgType.TEXT, data)

    def close(self, code: int, reason: str) -> None:
        t = self._t
        if t is None:
            return
        if not t.is_close_frame_sent:
            t.send_close(WSCloseCode(code), reason.encode()[:123])
        t.disconnect()

    def write_buffer_size(self) -> int:
        t = self._t
        if t is None:
            return 0
        size: int = t.underlying_transport.get_write_buffer_size()
        return size

    # -- picows callbacks -----------------------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        self._t = transport

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.session.on_transport_closed()

    def pause_writing(self) -> None:
        self.session.paused = True

    def resume_writing(self) -> None:
        self.session.resume()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        try:
            self._on_frame(transport, frame)
        except Disconnect as exc:
            self.session.close(exc)

    def _on_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        op = frame.msg_type
        if op is WSMsgType.TEXT or op is WSMsgType.BINARY or op is WSMsgType.CONTINUATION:
            if frame.rsv1 or frame.rsv2 or frame.rsv3:
                raise Disconnect(1002, "reserved bits set")
            if op is WSMsgType.CONTINUATION:
                frag = self._frag
                if frag is None:
                    raise Disconnect(1002, "continuation without a start frame")
                if len(frag) + frame.payload_size > self._limit:
                    raise WS_MESSAGE_TOO_BIG
                frag += frame.get_payload_as_memoryview()
                if not frame.fin:
                    return
                self._frag = None
                self._on_message(self._frag_type, bytes(frag))
                return
            if self._frag is not None:
                raise Disconnect(1002, "new message inside a fragmented one")
            if frame.fin:
                self._on_message(op, frame.get_payload_as_bytes())
            else:
                self._frag = bytearray(frame.get_payload_as_memoryview())
                self._frag_type = op
            return
        if op is WSMsgType.CLOSE:
            self._on_close(transport, frame)
        # PING is answered by picows (enable_auto_pong); PONG needs nothing.

    def _on_message(self, op: WSMsgType, data: bytes) -> None:
        if op is WSMsgType.BINARY:
            # A JSON connection gets only text; binary means a protobuf client (3506, terminal).
            raise DISCONNECT_INAPPROPRIATE_PROTOCOL
        self.session.on_message(data)

    def _on_close(self, transport: WSTransport, frame: WSFrame) -> None:
        reply: Any = WSCloseCode.OK
        if frame.payload_size >= 2:
            code = int(frame.get_close_code().value)
            if not _valid_close_code(code):
                reply = WSCloseCode.PROTOCOL_ERROR
            else:
                try:
                    frame.get_close_message()
                except UnicodeDecodeError:
                    reply = WSCloseCode.PROTOCOL_ERROR
        if not transport.is_close_frame_sent:
            transport.send_close(reply)
        self.session.on_transport_closed()
        transport.disconnect()



def _normalise_connection_header(request: WSUpgradeRequest) -> None:
    """Accept ``Connection: keep-alive, Upgrade`` (Firefox): picows wants exactly "upgrade"."""
    value = request.headers.get("Connection")
    if value is None or value.lower() == "upgrade":
        return
    tokens = [t.strip().lower() for t in value.split(",")]
    if "upgrade" in tokens:
        request.headers["Connection"] = "Upgrade"


def _client_factory(node: Node) -> Callable[[WSUpgradeRequest], Any]:
    origins = node.config.client.allowed_origins

    def factory(request: WSUpgradeRequest) -> Any:
        path = request.path.split(b"?", 1)[0]
        if path != CLIENT_PATH:
            return None
        headers = request.headers
        if not origin_allowed(headers.get("Origin"), headers.get("Host"), origins):
            return WSUpgradeResponseWithListener(
                WSUpgradeResponse.create_error_response(403, b"origin not allowed"), None)
        _normalise_connection_header(request)
        extra: dict[str, str] = {}
        offered = headers.get("Sec-WebSocket-Protocol")
        if offered and _JSON_SUBPROTOCOL in [p.strip() for p in offered.split(",")]:
            extra["Sec-WebSocket-Protocol"] = _JSON_SUBPROTOCOL
        return WSUpgradeResponseWithListener(WSUpgradeResponse.create_101_response(extra_headers=extra),
                                             ClientConnection(node))

    return factory


async def start_client_server(node: Node, host: str, port: int, backlog: int = 4096) -> Any:
    """Listen for clients with SO_REUSEPORT: every worker binds the same port."""
    return await ws_create_server(
        _client_factory(node), host, port,
        reuse_port=True,
        backlog=backlog,
        max_frame_size=node.config.websocket.message_size_limit,
        websocket_handshake_timeout=10,
        enable_auto_pong=True,
        logger_name="shardgate.picows",
    )
