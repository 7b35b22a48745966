"""Sessions over HTTP response streams (http_stream, sse, uni_http_stream, uni_sse) and the
emulation hub that gets commands to an emulated session on whichever worker holds it.

:class:`StreamConnection` is the session's :class:`~gateway.session.session.Transport`: what
the session sends is framed (:mod:`.framing`) into a pending buffer, and one coroutine per
stream (the HTTP handler's own, in :mod:`gateway.api.streams`) writes it out, awaiting the
socket's drain. The buffer plus the socket's own write buffer count against
``client.queue_max_size``: a client that does not read is disconnected 3008 "slow", never
buffered without bound. The stream ending (the client went away) releases the session; the
session closing writes a ``disconnect`` push and ends the stream.

:class:`EmulationHub` keeps this worker's emulated sessions by id. An /emulation POST that
lands on another worker (SO_REUSEPORT: no sticky sessions) is forwarded over the bus
(:data:`gateway.cluster.control.EMULATION_OP`) to the slot named in its ``node``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from gateway.cluster.control import EMULATION_OP
from gateway.cluster.router import Reply
from gateway.core.errors import ClientError
from gateway.protocol.codec import Codec
from gateway.session.handlers import HANDLERS
from gateway.session.session import Session
from gateway.transport.framing import (
    BadRequest,
    EmulationRequest,
    emulation_node,
    new_session_id,
    pack_forward,
    slot_of_node,
    unpack_forward,
)

if TYPE_CHECKING:
    from gateway.node import Node

__all__ = ["StreamConnection", "EmulationHub", "Delivery"]

#: A forwarded request's answer payloads.
_FOUND = b"1"
_GONE = b"0"


class StreamConnection:
    """One streamed session (bidirectional emulation or one-way)."""

    def __init__(self, node: Node, codec: Codec, frame: Callable[[bytes], bytes],
                 socket_buffer: Callable[[], int], *, unidirectional: bool = False,
                 headers: dict[str, str] | None = None) -> None:
        self._frame = frame
        self._socket_buffer = socket_buffer
        self._pending = bytearray()
        self._wake = asyncio.Event()
        self._ended = False  # no more output: the session closed, or the stream is gone
        self.session = Session(node, self, HANDLERS, codec, headers=headers)
        self.session.unidirectional = unidirectional

    # -- Transport protocol for the session -----------------------------------------------------

    def send_text(self, data: bytes) -> None:
        if self._ended:
            return
        self._pending += self._frame(data)
        self._wake.set()

    def close(self, code: int, reason: str) -> None:
        if self._ended:
            return
        try:
            push = self.session.codec.encode_push("", "disconnect", {"code": code, "reason": reason})
        except ClientError:
            push = b""
        if push:
            self._pending += self._frame(push)
        self._ended = True
        self._wake.set()

    def write_buffer_size(self) -> int:
        return len(self._pending) + self._socket_buffer()

    # -- the stream's writer --------------------------------------------------------------------

    async def run(self, write: Callable[[bytes], Awaitable[None]]) -> None:
        """Write what the session sends until it closes; returns when the stream is done. The
        caller's task being cancelled (the client went away) or a failed write ends the
        session as a transport close (no disconnect push: nobody would read it)."""
        try:
            while True:
                if self._pending:
                    data = bytes(self._pending)
                    self._pending.clear()
                    await write(data)
                elif self._ended:
                    return
                else:
                    self._wake.clear()
                    await self._wake.wait()
        except (ConnectionError, OSError):
            pass
        finally:
            self._ended = True
            self._pending.clear()
            self.session.on_transport_closed()


#: ``deliver(request) -> True`` when the session was found (the commands then run there).
Delivery = Callable[[EmulationRequest], Awaitable[bool]]


class EmulationHub:
    """This worker's emulated sessions, and the routing of emulation requests to them."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.sessions: dict[str, Session] = {}
        node.on_emulation = self._on_forward

    def register(self, conn: StreamConnection) -> None:
        """Give ``conn`` a session id and node (sent in its connect result) and keep it
        until its stream ends (call :meth:`unregister`)."""
        session_id = new_session_id()
        node = self.node
        conn.session.connect_extra = {"session": session_id, "node": emulation_node(node.node_id, node.slot)}
        self.sessions[session_id] = conn.session

    def unregister(self, conn: StreamConnection) -> None:
        extra = conn.session.connect_extra or {}
        session_id = extra.get("session")
        if isinstance(session_id, str) and self.sessions.get(session_id) is conn.session:
            del self.sessions[session_id]

    def _deliver_local(self, session_id: str, data: bytes) -> bool:
        session = self.sessions.get(session_id)
        if session is None or session.closed:
            return False
        session.on_message(data)
        return True

    async def deliver(self, req: EmulationRequest) -> bool:
        """Run ``req``'s commands on its session, here or on its slot.

        Raises:
            ClientError: the slot did not answer (temporary, 100).
        """
        node = self.node
        slot = slot_of_node(req.node, node.node_id, node.workers)
        if slot is None:
            return False
        if slot == node.slot:
            return self._deliver_local(req.session, req.data)
        future: asyncio.Future[bool] = node.loop.create_future()

        def reply(payload: bytes | None, error: ClientError | None) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(payload == _FOUND)

        node.router.request(slot, EMULATION_OP, "", pack_forward(req.session, req.data), reply)
        return await future

    def _on_forward(self, op: int, channel: str, payload: bytes, origin: int, reply: Reply) -> None:
        try:
            session_id, data = unpack_forward(payload)
        except BadRequest:
            reply(_GONE, None)
            return
        reply(_FOUND if self._deliver_local(session_id, data) else _GONE, None)
