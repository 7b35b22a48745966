"""The WebSocket edge: the only module that imports picows.

picows hands over frames, not messages, and leaves RFC 6455 duties to the application
(PROTOCOL.md §7): this module reassembles fragments up to ``websocket.message_size_limit``
(1009 beyond), closes 1007 on invalid UTF-8 and 1002 on RSV bits or bad fragment
order, answers CLOSE (never with code 0), and turns transport backpressure into the
session's bounded queue. The handshake accepts Firefox's ``Connection: keep-alive,
Upgrade``, which picows 2.3.1 refuses: the factory runs before picows validates the
request, so it normalises the header token list there, and refuses what RFC 6455 §4.2
forbids but picows lets through (426 for a version other than 13, 400 for a missing or
repeated ``Host`` or ``Sec-WebSocket-Key``). A request head beyond picows' fixed limit gets
431 instead of picows' reset (``_GatedProtocol``, hooks that exist only until the head is read).

All of that frame handling lives in :class:`FrameListener`; :class:`ClientConnection` (the
Centrifugo endpoint) and :class:`EchoConnection` (``websocket.conformance_echo_path``, off by
default, the target of the Autobahn TestSuite run by ``python -m tools.conformance``) differ only
in what they do with a complete message. What an upgrade request decides without picows (the
Origin rule, the codec, forwarded headers, the demo pages, a plain-HTTP hand-over) is
:mod:`gateway.transport.upgrade`.
"""

from __future__ import annotations

import asyncio
import codecs
import functools
import logging
import ssl
from collections.abc import Callable
from typing import Any, Final, Protocol
from urllib.parse import parse_qs

import aiofastnet
import aiofastnet.transport
from multidict import CIMultiDict
from picows import (
    WSAutoPingStrategy,
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
)
from picows.picows import WSProtocol  # type: ignore[attr-defined]

from gateway.core.errors import (
    DISCONNECT_BAD_REQUEST,
    DISCONNECT_INAPPROPRIATE_PROTOCOL,
    WS_INVALID_TEXT,
    WS_MESSAGE_TOO_BIG,
    Disconnect,
    truncate_reason,
)
from gateway.core.limits import ConnectionGate
from gateway.node import Node
from gateway.protocol.centrifuge_json import JSON
from gateway.protocol.centrifuge_uni import UNI_JSON
from gateway.protocol.codec import Codec
from gateway.session.handlers import HANDLERS
from gateway.session.session import Session
from gateway.transport.deflate import Deflater, inflate, negotiate
from gateway.transport.framing import BadRequest, uni_connect_command
from gateway.transport.upgrade import (
    RefusedOriginLog,
    demo_pages,
    forwarded_headers,
    negotiate_codec,
    origin_allowed,
    plain_http_path,
    valid_close_code,
)

__all__ = ["start_client_server", "CLIENT_PATH", "FrameListener", "ClientConnection",
           "EchoConnection", "UniClientConnection", "PlainHttp", "MessageConnection", "MessageEndpoint",
           "MessageEndpoints"]

log = logging.getLogger("shardgate.ws")

CLIENT_PATH = b"/connection/websocket"


# How long a close we started waits for the peer's CLOSE before dropping the connection.
_CLOSE_HANDSHAKE_TIMEOUT = 1.0

# Enum members as module constants: a lookup through the enum class costs ~50 ns on 3.11,
# and these are compared once per frame.
_TEXT: Final = WSMsgType.TEXT
_BINARY: Final = WSMsgType.BINARY


class FrameListener(WSListener):
    """The RFC 6455 message layer shared by every endpoint (clients and the conformance echo).

    picows delivers frames; this class turns them into messages: RSV bits (other than RSV1 on
    the first frame of a message when permessage-deflate was negotiated: that message is
    inflated) and bad fragment order close 1002, a message beyond ``limit`` closes
    1009 (picows itself refuses a single frame beyond ``max_frame_size``, which is set to the
    same limit), TEXT is checked for UTF-8 as it arrives when :attr:`validate_utf8` is set
    (1007, failing on the first bad fragment), and a peer's CLOSE is answered with 1000, or
    1002 for a code or reason RFC 6455 §7.4 forbids. No CLOSE ever carries code 0 (what
    picows' ``send_close()`` sends without an argument).

    Subclasses implement :meth:`_on_message` and may override :meth:`_fail` (how a
    :class:`Disconnect` raised by the frame layer or the message handler ends the
    connection) and :meth:`_on_peer_close`.
    """

    #: Check TEXT messages for UTF-8 here. The client endpoint leaves it to its JSON decoder,
    #: which validates every line anyway (PROTOCOL.md §7) and closes 1007 the same way.
    validate_utf8 = False

    # One listener per connection: slots instead of an instance __dict__ (~0.5 KiB each).
    __slots__ = ("_deflate_min", "_deflater", "_frag", "_frag_compressed", "_frag_type", "_limit", "_linger",
                 "_t", "_utf8")

    def __init__(self, limit: int, deflate: tuple[Deflater, int] | None = None) -> None:
        self._limit = limit
        self._t: WSTransport | None = None
        self._frag: bytearray | None = None
        self._frag_type = WSMsgType.TEXT
        self._frag_compressed = False
        self._utf8: codecs.IncrementalDecoder | None = None
        self._linger: asyncio.TimerHandle | None = None
        # permessage-deflate, when negotiated: the worker's shared deflater (one compression per
        # message, whoever it goes to) and the size below which messages go out plain.
        self._deflater: Deflater | None = deflate[0] if deflate is not None else None
        self._deflate_min = deflate[1] if deflate is not None else 0

    def _send(self, op: WSMsgType, data: bytes) -> None:
        t = self._t
        if t is None:
            return
        deflater = self._deflater
        if deflater is not None and len(data) >= self._deflate_min:
            t.send(op, deflater.compress(data), rsv1=True)
        else:
            t.send(op, data)

    # -- hooks ----------------------------------------------------------------------------------

    def _on_message(self, op: WSMsgType, data: bytes) -> None:
        """One complete TEXT or BINARY message."""
        raise NotImplementedError

    def _fail(self, exc: Disconnect) -> None:
        """End the connection for a :class:`Disconnect` raised while handling a frame."""
        self._close_transport(exc.code, exc.reason)

    def _on_peer_close(self) -> None:
        """The peer sent CLOSE; it has been answered and the transport is disconnecting."""

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None

    # -- shared ---------------------------------------------------------------------------------

    def _close_transport(self, code: int, reason: str) -> None:
        t = self._t
        if t is None:
            return
        if not t.is_close_frame_sent:
            t.send_close(WSCloseCode(code if code > 0 else 1000), truncate_reason(reason).encode())
        if code < 3000 and code not in (1000, 1001):
            t.disconnect()  # failing the connection (RFC 6455 §7.1.7): no handshake owed
            return
        # A closing handshake: wait (briefly) for the peer's CLOSE, reading and discarding
        # what it still sends. Closing the socket on unread input would reset it, and the
        # peer could lose our CLOSE frame, and with it the code that tells an SDK whether
        # to reconnect.
        if self._linger is None:
            self._linger = asyncio.get_running_loop().call_later(_CLOSE_HANDSHAKE_TIMEOUT, t.disconnect)

    def on_ws_connected(self, transport: WSTransport) -> None:
        self._t = transport
        release_handshake(transport)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        try:
            # Most frames are one whole, plain data message, with no fragmented one in progress
            # and no UTF-8 check owed here: straight to the message handler (once per message).
            op = frame.msg_type
            if frame.fin and self._frag is None and not (frame.rsv1 or frame.rsv2 or frame.rsv3) \
                    and (op is _BINARY or (op is _TEXT and not self.validate_utf8)):
                if not transport.is_close_frame_sent:  # closing: data after our CLOSE is discarded
                    self._on_message(op, frame.get_payload_as_bytes())
                return
            self._on_frame(transport, frame)
        except Disconnect as exc:
            self._fail(exc)

    def _on_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        op = frame.msg_type
        compressed = False
        if frame.rsv1 or frame.rsv2 or frame.rsv3:
            # On any frame, CLOSE included (Autobahn 3.7), except RSV1 on the first frame of a
            # data message when permessage-deflate was negotiated (RFC 7692 §6).
            if frame.rsv2 or frame.rsv3 or self._deflater is None or not (
                    op is WSMsgType.TEXT or op is WSMsgType.BINARY):
                raise Disconnect(1002, "reserved bits set")
            compressed = True
        if op is WSMsgType.TEXT or op is WSMsgType.BINARY or op is WSMsgType.CONTINUATION:
            if transport.is_close_frame_sent:
                return  # closing: data after our CLOSE is discarded (RFC 6455 §5.5.1)
            if op is WSMsgType.CONTINUATION:
                frag = self._frag
                if frag is None:
                    raise Disconnect(1002, "continuation without a start frame")
                if len(frag) + frame.payload_size > self._limit:
                    raise WS_MESSAGE_TOO_BIG
                if self._utf8 is not None:
                    self._check_utf8(frame, frame.fin)
                frag += frame.get_payload_as_memoryview()
                if not frame.fin:
                    return
                self._frag = None
                self._utf8 = None
                data = bytes(frag)
                if self._frag_compressed:
                    self._on_message(self._frag_type, self._inflated(self._frag_type, data))
                    return
                self._on_message(self._frag_type, data)
                return
            if self._frag is not None:
                raise Disconnect(1002, "new message inside a fragmented one")
            if frame.fin:
                data = frame.get_payload_as_bytes()
                if compressed:
                    data = self._inflated(op, data)
                elif op is WSMsgType.TEXT and self.validate_utf8:
                    try:
                        data.decode("utf-8")
                    except UnicodeDecodeError:
                        raise WS_INVALID_TEXT from None
                self._on_message(op, data)
            else:
                if op is WSMsgType.TEXT and self.validate_utf8 and not compressed:
                    self._utf8 = codecs.getincrementaldecoder("utf-8")()
                    self._check_utf8(frame, False)
                self._frag = bytearray(frame.get_payload_as_memoryview())
                self._frag_type = op
                self._frag_compressed = compressed
            return
        if op is WSMsgType.CLOSE:
            self._on_close(transport, frame)
        # PING is answered by picows (enable_auto_pong); PONG needs nothing.

    def _inflated(self, op: WSMsgType, data: bytes) -> bytes:
        """A compressed message's payload (1009 beyond the limit once inflated, 1007 if it does
        not inflate or, checked here for text, is not UTF-8)."""
        out = inflate(data, self._limit)
        if op is WSMsgType.TEXT and self.validate_utf8:
            try:
                out.decode("utf-8")
            except UnicodeDecodeError:
                raise WS_INVALID_TEXT from None
        return out

    def _check_utf8(self, frame: WSFrame, final: bool) -> None:
        """Fail fast: a fragment that cannot begin valid UTF-8 closes 1007 before the rest arrives."""
        assert self._utf8 is not None
        try:
            self._utf8.decode(frame.get_payload_as_memoryview(), final)
        except UnicodeDecodeError:
            raise WS_INVALID_TEXT from None

    def _on_close(self, transport: WSTransport, frame: WSFrame) -> None:
        reply: Any = WSCloseCode.OK
        if frame.payload_size >= 2:
            code = int(frame.get_close_code().value)
            if not valid_close_code(code):
                reply = WSCloseCode.PROTOCOL_ERROR
            else:
                try:
                    frame.get_close_message()
                except UnicodeDecodeError:
                    reply = WSCloseCode.PROTOCOL_ERROR
        if not transport.is_close_frame_sent:
            transport.send_close(reply)
        self._on_peer_close()
        transport.disconnect()


class ClientConnection(FrameListener):
    """Bridges one picows connection to one :class:`Session` (Centrifugo protocol, in the
    codec negotiated at the upgrade: JSON in TEXT frames or protobuf in BINARY ones)."""

    __slots__ = ("_msg_type", "_node", "session")

    def __init__(self, node: Node, headers: dict[str, str] | None = None,
                 deflate: tuple[Deflater, int] | None = None, codec: Codec = JSON) -> None:
        super().__init__(node.config.websocket.message_size_limit, deflate)
        self._node = node
        self._msg_type = WSMsgType.BINARY if codec.binary else WSMsgType.TEXT
        self.session = Session(node, self, HANDLERS, codec, headers=headers)

    # -- Transport protocol for the session -----------------------------------------------------

    def send_text(self, data: bytes) -> None:
        self._send(self._msg_type, data)

    def close(self, code: int, reason: str) -> None:
        self._close_transport(code, reason)

    def write_buffer_size(self) -> int:
        t = self._t
        if t is None:
            return 0
        size: int = t.underlying_transport.get_write_buffer_size()
        return size

    # -- picows callbacks -----------------------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        super().on_ws_connected(transport)
        # picows reports back-pressure (pause_writing below), so the hub's fan-out may write
        # straight to the socket: without deflate that is picows' own send, a C call, with
        # no Python frame per delivery.
        send = functools.partial(transport.send, self._msg_type) if self._deflater is None else self.send_text
        self.session.set_fast_send(send, transport.underlying_transport.get_write_buffer_limits()[1])

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        super().on_ws_disconnected(transport)
        self.session.on_transport_closed()

    def pause_writing(self) -> None:
        self.session.pause()

    def resume_writing(self) -> None:
        self.session.resume()

    # -- FrameListener hooks --------------------------------------------------------------------

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        # The request path's common case in one Python frame: FrameListener.on_ws_frame's first
        # branch with _on_message's type check folded in (one whole, plain message of this
        # connection's type, no fragmented one in progress, not closing). Anything else goes
        # through the general path, which discards, refuses or reassembles it.
        if frame.msg_type is self._msg_type and frame.fin and self._frag is None \
                and not (frame.rsv1 or frame.rsv2 or frame.rsv3) and not transport.is_close_frame_sent:
            try:
                self.session.on_message(frame.get_payload_as_bytes())
            except Disconnect as exc:
                self._fail(exc)
            return
        FrameListener.on_ws_frame(self, transport, frame)

    def _fail(self, exc: Disconnect) -> None:
        self.session.close(exc)

    def _on_peer_close(self) -> None:
        self.session.on_transport_closed()

    def _on_message(self, op: WSMsgType, data: bytes) -> None:
        if op is not self._msg_type:
            # A JSON connection gets only text, a protobuf one only binary: the other kind
            # means a client of the other format (3506, terminal).
            raise DISCONNECT_INAPPROPRIATE_PROTOCOL
        self.session.on_message(data)


class UniClientConnection(ClientConnection):
    """``uni_websocket``: a one-way client. Its connect request (a bare ConnectRequest object,
    from the ``cf_connect`` query or else its first message) is the only thing read; later
    messages are discarded. Everything sent is a bare push (:mod:`gateway.protocol.centrifuge_uni`),
    and a ``disconnect`` push precedes the CLOSE frame, as Centrifugo's uni_websocket does."""

    __slots__ = ("_connect", "_got_connect")

    # Every frame through the general path to this class's _on_message (ClientConnection's fast
    # path hands messages straight to the session).
    on_ws_frame = FrameListener.on_ws_frame

    def __init__(self, node: Node, headers: dict[str, str] | None, deflate: tuple[Deflater, int] | None,
                 connect: bytes | None) -> None:
        super().__init__(node, headers, deflate, UNI_JSON)
        self._limit = node.config.transports.uni_websocket.message_size_limit
        self.session.unidirectional = True
        self._connect = connect
        self._got_connect = connect is not None

    def on_ws_connected(self, transport: WSTransport) -> None:
        super().on_ws_connected(transport)
        if self._connect is not None:
            command, self._connect = self._connect, None
            self.session.on_message(command)

    def close(self, code: int, reason: str) -> None:
        t = self._t
        if t is not None and not t.is_close_frame_sent:
            self._send(WSMsgType.TEXT, self.session.codec.encode_push("", "disconnect",
                                                                      {"code": code, "reason": reason}))
        super().close(code, reason)

    def _on_message(self, op: WSMsgType, data: bytes) -> None:
        if self._got_connect:
            return  # one-way: only the connect request is read
        self._got_connect = True
        try:
            command = uni_connect_command(data)
        except BadRequest:
            raise DISCONNECT_BAD_REQUEST from None
        self.session.on_message(command)


class EchoConnection(FrameListener):
    """``websocket.conformance_echo_path``: echoes every message with its type, for the
    Autobahn TestSuite. Everything below the message (RSV, fragments, limits, UTF-8, CLOSE)
    is the client endpoint's own :class:`FrameListener`; only the message handler differs,
    and TEXT is validated here because there is no JSON decoder behind it."""

    validate_utf8 = True
    __slots__ = ()

    def _on_message(self, op: WSMsgType, data: bytes) -> None:
        self._send(op, data)


def _normalise_connection_header(request: WSUpgradeRequest) -> None:
    """Accept ``Connection: keep-alive, Upgrade`` (Firefox): picows wants exactly "upgrade"."""
    value = request.headers.get("Connection")
    if value is None or value.lower() == "upgrade":
        return
    tokens = [t.strip().lower() for t in value.split(",")]
    if "upgrade" in tokens:
        request.headers["Connection"] = "Upgrade"


def _refuse(status: int, body: bytes, extra_headers: dict[str, str] | None = None) -> Any:
    return WSUpgradeResponseWithListener(WSUpgradeResponse.create_error_response(status, body, extra_headers), None)


def _handshake_refusal(headers: Any) -> Any:
    """RFC 6455 §4.2.1/§4.2.2 checks picows leaves out (it runs them after this factory, and
    accepts versions 7 and 8, the first of two keys, and no ``Host``): an error response, or
    ``None`` for a request to hand on to picows' own validation."""
    if len(headers.getall("Host", ())) != 1:
        return _refuse(400, b"exactly one Host header is required")
    if len(headers.getall("Sec-WebSocket-Key", ())) != 1:
        return _refuse(400, b"exactly one Sec-WebSocket-Key header is required")
    versions = headers.getall("Sec-WebSocket-Version", ())
    if not versions:
        return _refuse(400, b"Sec-WebSocket-Version header is required", {"Sec-WebSocket-Version": "13"})
    if versions != ["13"]:
        return _refuse(426, b"unsupported WebSocket version", {"Sec-WebSocket-Version": "13"})
    return None


class MessageEndpoint(Protocol):
    """Another protocol on WebSocket messages (Socket.IO's Engine.IO): it gets each complete
    message and sends through the :class:`MessageConnection` handed to ``on_open``."""

    def on_open(self, conn: MessageConnection) -> None: ...

    def on_message(self, data: bytes, binary: bool) -> None: ...

    def on_closed(self) -> None: ...


class MessageEndpoints(Protocol):
    """The upgrade paths another protocol serves (gateway.socketio.server.SioServer)."""

    path: bytes
    message_limit: int

    def ws_endpoint(self, target: bytes, headers: Any) -> MessageEndpoint | None: ...


class MessageConnection(FrameListener):
    """RFC 6455 messages to and from a :class:`MessageEndpoint`."""

    validate_utf8 = True

    def __init__(self, limit: int, endpoint: MessageEndpoint, deflate: tuple[Deflater, int] | None = None) -> None:
        super().__init__(limit, deflate)
        self.endpoint = endpoint

    def send_text(self, data: bytes) -> None:
        self._send(WSMsgType.TEXT, data)

    def send_binary(self, data: bytes) -> None:
        self._send(WSMsgType.BINARY, data)

    def close(self) -> None:
        self._close_transport(1000, "")

    def write_buffer_size(self) -> int:
        t = self._t
        return 0 if t is None else int(t.underlying_transport.get_write_buffer_size())

    def on_ws_connected(self, transport: WSTransport) -> None:
        super().on_ws_connected(transport)
        self.endpoint.on_open(self)

    def _on_message(self, op: WSMsgType, data: bytes) -> None:
        self.endpoint.on_message(data, op is WSMsgType.BINARY)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        super().on_ws_disconnected(transport)
        self._t = None
        self.endpoint.on_closed()


def _client_factory(node: Node, more: MessageEndpoints | None = None) -> Callable[[WSUpgradeRequest], Any]:
    origins = node.config.client.allowed_origins
    refused_origins = RefusedOriginLog(origins)
    ws_cfg = node.config.websocket
    echo_path = ws_cfg.conformance_echo_path.encode() if ws_cfg.conformance_echo_path else None
    demo = demo_pages() if node.config.admin.demo_page else {}
    # One deflater per window size this worker was asked for (normally just 15).
    deflaters: dict[int, Deflater] = {}

    def deflate_for(headers: Any, extra: dict[str, str]) -> tuple[Deflater, int] | None:
        if not ws_cfg.compression:
            return None
        offer = negotiate(headers.get("Sec-WebSocket-Extensions"))
        if offer is None:
            return None
        extra["Sec-WebSocket-Extensions"] = offer.response
        deflater = deflaters.get(offer.server_window_bits)
        if deflater is None:
            deflater = deflaters[offer.server_window_bits] = Deflater(ws_cfg.compression_level,
                                                                      offer.server_window_bits, node.metrics)
        return deflater, ws_cfg.compression_min_size
    proxy_headers = node.proxy_header_names

    uni_cfg = node.config.transports.uni_websocket
    uni_path = uni_cfg.handler_prefix.encode() if uni_cfg.enabled else None

    def _more_upgrade(request: WSUpgradeRequest, more: MessageEndpoints) -> Any:
        headers = request.headers
        refusal = _handshake_refusal(headers)
        if refusal is not None:
            return refusal
        if not origin_allowed(headers.get("Origin"), headers.get("Host"), origins):
            refused_origins.refused(headers.get("Origin") or "", headers.get("Host"))
            return WSUpgradeResponseWithListener(
                WSUpgradeResponse.create_error_response(403, b"origin not allowed"), None)
        kept = forwarded_headers(headers, proxy_headers) if proxy_headers else None
        endpoint = more.ws_endpoint(request.path, kept)
        if endpoint is None:
            return WSUpgradeResponseWithListener(WSUpgradeResponse.create_error_response(400, b"bad request"), None)
        _normalise_connection_header(request)
        extra: dict[str, str] = {}
        deflate = deflate_for(headers, extra)
        return WSUpgradeResponseWithListener(WSUpgradeResponse.create_101_response(extra_headers=extra),
                                             MessageConnection(more.message_limit, endpoint, deflate))

    def factory(request: WSUpgradeRequest) -> Any:
        path = request.path.split(b"?", 1)[0]
        if more is not None and path == more.path:
            return _more_upgrade(request, more)
        if path != CLIENT_PATH and (echo_path is None or path != echo_path) and path != uni_path:
            page = demo.get(path) if request.method == b"GET" else None
            if page is None:
                return None
            # picows sends it with Content-Length and closes the connection (no keep-alive).
            return WSUpgradeResponseWithListener(WSUpgradeResponse.create_ok_response(*page), None)
        headers = request.headers
        refusal = _handshake_refusal(headers)
        if refusal is not None:
            return refusal
        if not origin_allowed(headers.get("Origin"), headers.get("Host"), origins):
            refused_origins.refused(headers.get("Origin") or "", headers.get("Host"))
            return WSUpgradeResponseWithListener(
                WSUpgradeResponse.create_error_response(403, b"origin not allowed"), None)
        _normalise_connection_header(request)
        extra: dict[str, str] = {}
        deflate = deflate_for(headers, extra)
        if path == uni_path:
            return _uni_upgrade(node, request, extra, deflate, proxy_headers)
        if path != CLIENT_PATH:
            return WSUpgradeResponseWithListener(WSUpgradeResponse.create_101_response(extra_headers=extra),
                                                 EchoConnection(ws_cfg.message_size_limit, deflate))
        codec, subprotocol = negotiate_codec(request.path, headers.get("Sec-WebSocket-Protocol"))
        if subprotocol:
            extra["Sec-WebSocket-Protocol"] = subprotocol
        kept = forwarded_headers(headers, proxy_headers) if proxy_headers else None
        return WSUpgradeResponseWithListener(WSUpgradeResponse.create_101_response(extra_headers=extra),
                                             ClientConnection(node, kept, deflate, codec))

    return factory


def _uni_upgrade(node: Node, request: WSUpgradeRequest, extra: dict[str, str],
                 deflate: tuple[Deflater, int] | None, proxy_headers: frozenset[str]) -> Any:
    """The uni_websocket upgrade: a ``cf_connect`` query that does not parse is a 400."""
    _, _, query = request.path.partition(b"?")
    connect: bytes | None = None
    if query:
        raw = parse_qs(query.decode("utf-8", "replace")).get("cf_connect")
        if raw:
            try:
                connect = uni_connect_command(raw[0])
            except BadRequest:
                return _refuse(400, b"invalid connect request")
    kept = forwarded_headers(request.headers, proxy_headers) if proxy_headers else None
    return WSUpgradeResponseWithListener(WSUpgradeResponse.create_101_response(extra_headers=extra),
                                         UniClientConnection(node, kept, deflate, connect))


# -- picows' private API, in this one place -----------------------------------------------------
#
# picows' public ``ws_create_server`` builds its (private) ``WSProtocol`` itself, so a server
# that needs a hook at TCP accept (the per-IP gate below) must build it the same way. These are
# that constructor's parameters in order, as in picows 2.3.x; tests/unit/test_picows_private_api.py
# compares them with the installed picows source, so an upgrade that changes them fails loudly
# there instead of mis-wiring arguments at run time.
PICOWS_PROTOCOL_PARAMETERS = (
    "host_port", "ws_path", "is_client_side", "ws_listener_factory", "logger", "disconnect_on_exception",
    "websocket_handshake_timeout", "enable_auto_ping", "auto_ping_idle_timeout", "auto_ping_reply_timeout",
    "auto_ping_strategy", "enable_auto_pong", "max_frame_size", "extra_headers", "read_buffer_init_size",
)
_SERVER_PROTOCOL_DEFAULTS: dict[str, Any] = {
    "host_port": None, "ws_path": None, "is_client_side": False,
    "disconnect_on_exception": True,
    # No WebSocket-level auto ping: the Centrifugo protocol pings ({}), as Centrifugo does.
    "enable_auto_ping": False, "auto_ping_idle_timeout": 20, "auto_ping_reply_timeout": 20,
    "auto_ping_strategy": WSAutoPingStrategy.PING_WHEN_IDLE,
    "enable_auto_pong": True, "extra_headers": None,
}


# Shared by every released handshake (never written: picows reads them only to answer it).
_NO_HEADERS: CIMultiDict[str] = CIMultiDict()


def release_handshake(transport: WSTransport) -> None:
    """Free what the upgrade left on the transport. picows keeps the request and response
    (``readonly`` attributes, slotted objects) for the connection's life; nothing reads them
    once the listener is built and connected, and their headers, path (the query string may
    hold a token) and body are about 1 KiB per connection. The objects stay, emptied."""
    request, response = transport.request, transport.response
    if request is not None:
        request.headers = _NO_HEADERS
        request.path = b""
    if response is not None:
        response.headers = _NO_HEADERS
        response.body = None


def new_server_protocol(cls: type[Any], **kwargs: Any) -> Any:
    """Build picows' server-side ``WSProtocol`` (or a subclass) by parameter name."""
    values = {**_SERVER_PROTOCOL_DEFAULTS, **kwargs}
    missing = [name for name in PICOWS_PROTOCOL_PARAMETERS if name not in values]
    unknown = [name for name in values if name not in PICOWS_PROTOCOL_PARAMETERS]
    if missing or unknown:
        raise TypeError(f"picows WSProtocol: missing {missing}, unknown {unknown}")
    return cls(*(values[name] for name in PICOWS_PROTOCOL_PARAMETERS))


#: The longest request head (request line and headers, without the blank line) a client may
#: send: picows' own fixed limit (``WSProtocol._http_max_size``, 16 KiB in 2.3.x, checked by
#: tests/test_picows_private_api.py). picows resets a connection beyond it; the gateway answers
#: 431 first (``_GatedProtocol``).
MAX_REQUEST_HEAD_SIZE = 16 * 1024
# How long a refused oversized request may keep sending before the connection is closed.
_HEAD_DRAIN_TIMEOUT = 1.0
_HEAD_TOO_LARGE = b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain\r\n" \
    b"Content-Length: 31\r\nConnection: close\r\n\r\nrequest header fields too large"

_REFUSED = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n" \
    b"Connection: close\r\nRetry-After: 1\r\n\r\n%s"


class PlainHttp(Protocol):
    """Plain HTTP on the client port (the server API with ``http_api.external``): requests
    that are not WebSocket upgrades, for paths it claims, are handed to its own protocol."""

    def wants(self, path: bytes) -> bool: ...

    def new_protocol(self) -> asyncio.BaseProtocol: ...


class _HandedOver(asyncio.Protocol):
    """The plain-HTTP protocol a connection was handed to, releasing its per-IP admission
    when the connection ends (the gate counts every connection, whatever it speaks)."""

    def __init__(self, inner: Any, release: Callable[[], None]) -> None:
        self.inner, self.release = inner, release

    def connection_made(self, transport: Any) -> None:
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()  # type: ignore[no-any-return]

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.release()
        self.inner.connection_lost(exc)


class _GatedProtocol(WSProtocol):  # type: ignore[misc]
    """picows' protocol with an admission check when the TCP connection arrives.

    The upgrade factory sees only the HTTP request, not the peer address, so limits per
    client IP are enforced here and a refused client gets HTTP 503 before any WebSocket
    work is done. A complete request head that is not an upgrade, for a path ``plain_http``
    claims, leaves picows here: the connection goes to that protocol with the bytes read."""

    # Slots for what every connection sets (an instance __dict__ holding them is ~0.3 KiB);
    # __dict__ stays for the two per-instance read hooks, and is emptied with them.
    __slots__ = ("__dict__", "_drain", "_head", "_head_view", "_ip", "_recache", "_refused", "_tcp", "clock",
                 "gate", "plain_http")

    gate: ConnectionGate
    clock: Callable[[], float]
    plain_http: PlainHttp | None

    def connection_made(self, transport: Any) -> None:
        peer = transport.get_extra_info("peername")
        self._ip = str(peer[0]) if peer else ""
        reason = self.gate.admit(self._ip, self.clock())
        self._refused = reason is not None
        self._tcp = transport
        # uvloop's transport reads get_buffer/buffer_updated once, when the protocol is set:
        # the per-instance hooks below take effect (and leave) through set_protocol again.
        # aiofastnet's looks them up on every read of a protocol that is not its own kind.
        self._recache = not isinstance(transport, aiofastnet.transport.Transport)
        self._head: bytearray | None = None
        self._head_view: memoryview | None = None
        self._drain: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        if reason is not None:
            # Closing the transport stops reading, so picows never parses this request;
            # no per-read hook is needed, which keeps the hot path free of Python overrides.
            body = reason.encode()
            transport.write(_REFUSED % (len(body), body))
            transport.close()
            return
        # Until the request head is parsed, reads go through the two hooks below, set on this
        # instance only and removed with the head: they see what picows will parse and answer
        # 431 where picows would reset the connection. Frames never pass through Python here.
        self._head = bytearray()
        self.get_buffer = self._head_get_buffer
        self.buffer_updated = self._head_buffer_updated
        if self._recache:
            transport.set_protocol(self)

    def _head_get_buffer(self, size_hint: int) -> memoryview:
        view: memoryview = WSProtocol.get_buffer(self, size_hint)
        self._head_view = view
        return view

    def _head_buffer_updated(self, nbytes: int) -> None:
        head, view = self._head, self._head_view
        if head is None:  # refused with 431: what the client still sends is discarded
            return
        assert view is not None
        self._head_view = None  # picows may reallocate its buffer from here on
        head += view[:nbytes]
        end = head.find(b"\r\n\r\n")
        if (end if end >= 0 else len(head)) >= MAX_REQUEST_HEAD_SIZE:
            self._refuse_head()
            return
        if end >= 0 and self.plain_http is not None:
            path = plain_http_path(head[:end])
            if path is not None and self.plain_http.wants(path):
                self._hand_over(self.plain_http.new_protocol(), bytes(head))
                return
        WSProtocol.buffer_updated(self, nbytes)
        if end >= 0:
            # picows parsed the head and answered it (101 or an error): the hooks are done.
            self._end_head_hooks()

    def _hand_over(self, inner: asyncio.BaseProtocol, received: bytes) -> None:
        tcp, ip, gate = self._tcp, self._ip, self.gate
        self._end_head_hooks()
        self._refused = True  # the gate is released by the new protocol, not here
        # picows' own cleanup for a connection that never upgraded (its handshake timer).
        WSProtocol.connection_lost(self, None)
        proto = _HandedOver(inner, lambda: gate.release(ip))
        tcp.set_protocol(proto)
        proto.connection_made(tcp)
        proto.data_received(received)

    def _refuse_head(self) -> None:
        """431, then a lingering close: the response is written and the write side shut, and
        what the client still sends is read and dropped until it closes or the drain timeout
        fires. Closing with unread input would reset the connection and could lose the 431."""
        tcp = self._tcp
        self._head = None
        scratch = memoryview(bytearray(4096))
        self.get_buffer = lambda size_hint: scratch
        if self._recache:
            tcp.set_protocol(self)
        tcp.write(_HEAD_TOO_LARGE)
        if tcp.can_write_eof():
            tcp.write_eof()
        self._drain = asyncio.get_running_loop().call_later(_HEAD_DRAIN_TIMEOUT, tcp.close)

    def _end_head_hooks(self) -> None:
        if self.__dict__:
            self.__dict__ = {}  # a fresh empty dict: popping keys would keep the table allocated
            if self._recache and not self._tcp.is_closing():
                self._tcp.set_protocol(self)
        self._head = None
        self._head_view = None

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self._refused:
            self.gate.release(self._ip)
        if self._drain is not None:
            self._drain.cancel()
        self._end_head_hooks()
        super().connection_lost(exc)


def tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


async def start_client_server(node: Node, host: str, port: int, backlog: int = 4096,
                              start_serving: bool = True, ssl_context: ssl.SSLContext | None = None,
                              plain_http: PlainHttp | None = None, more: MessageEndpoints | None = None) -> Any:
    """Listen for clients with SO_REUSEPORT: every worker binds the same port. With
    ``start_serving=False`` the port is bound but accepts only after ``server.start_serving()``.
    ``plain_http`` serves the non-WebSocket requests it claims (see :class:`PlainHttp`).

    This is picows' ``ws_create_server`` (2.3.x) with a gated protocol class and the same
    constructor arguments; plain TCP runs on the loop's transport, TLS on aiofastnet's (as
    picows' own server does)."""
    cfg = node.config
    sg = cfg.shardgate
    gate = ConnectionGate.for_worker(sg.per_ip_connection_limit, sg.per_ip_connection_rate,
                                     cfg.client.connection_rate_limit, node.workers)
    listener_factory = _client_factory(node, more)
    # An adapter, not the Logger itself: given a Logger, picows builds a child Logger per
    # connection (named after the socket's fd), about 0.5 KiB each that lives as long as it.
    logger = logging.LoggerAdapter(logging.getLogger("picows.shardgate.picows"), {})
    loop = asyncio.get_running_loop()

    def protocol_factory() -> _GatedProtocol:
        proto: _GatedProtocol = new_server_protocol(
            _GatedProtocol,
            ws_listener_factory=listener_factory,
            logger=logger,
            websocket_handshake_timeout=sg.handshake_timeout,
            max_frame_size=cfg.websocket.message_size_limit,
            # picows grows the read buffer as needed; 16 KiB each would dominate idle memory.
            read_buffer_init_size=1024,
        )
        proto.gate = gate
        proto.clock = node.clock
        proto.plain_http = plain_http
        return proto

    if ssl_context is None:
        # Plain TCP on the loop's own (uvloop) transport: about 1 KiB per connection where
        # aiofastnet's is 5.7 (4 KiB of it an inline iovec array), at the same CPU per delivery
        # (bench compare, fan-out and echo, measured side by side). TLS stays on aiofastnet,
        # whose OpenSSL binding avoids the copies of the loop's SSL protocol.
        return await loop.create_server(protocol_factory, host=host, port=port, reuse_port=True,
                                        backlog=backlog, start_serving=start_serving)
    return await aiofastnet.create_server(loop, protocol_factory, host=host, port=port, reuse_port=True,
                                          backlog=backlog, start_serving=start_serving, ssl=ssl_context)
