"""What sessions and the hub need from a client protocol codec (PROTOCOL.md §1).

A codec turns one WebSocket message into commands and replies, pushes and pings into
bytes; it never touches a socket. Sessions hand it their results as plain dicts (model
values such as :class:`Publication` inside); it encodes them in its wire format.

A hub groups its subscribers by codec and encodes each publication once per codec, then
writes the same bytes to every subscriber of that codec (centrifuge's hub does the same
per protocol key).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from gateway.core.errors import ClientError
from gateway.core.model import ClientInfo, DeltaPayload, Publication

__all__ = ["Codec", "Command", "NEWLINE"]

#: ``NEWLINE in data`` looks for a newline byte. An int operand, not ``b"\n"``: bytes'
#: ``__contains__`` first tries its operand as an integer, and for a bytes operand that
#: raises (and formats) a TypeError before the substring search; with an int it is one
#: memchr, a tenth of the time, once per message on the request path.
NEWLINE = 0x0A


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ is several times slower per command
class Command:
    """One decoded command, whatever its wire format: ``body`` holds the request's fields
    as JSON-like values (a field the client left out or zero may be absent)."""

    id: int
    method: str  # "" for the empty command, which is a pong
    body: dict[str, Any]
    received_at: float = 0.0  # perf_counter() when its message arrived (command duration metric)
    pending: bool = False  # dispatched, not yet answered (counts against the connection's in-flight bound)


class Codec(Protocol):
    #: The codec key (``json``, ``protobuf``).
    name: str
    #: Its messages go out in BINARY frames (else TEXT).
    binary: bool
    #: What joins encoded replies and pushes that share one frame.
    separator: bytes
    #: The encoded ping (an empty reply).
    ping: bytes

    # -- pushes to many subscribers, encoded once per codec ---------------------------------

    def publication_push(self, channel: str, pub: Publication) -> bytes: ...

    def delta_publication_push(self, channel: str, payload: DeltaPayload) -> bytes:
        """The push for a subscriber that negotiated fossil deltas (a delta, or the whole
        payload in the form such subscribers expect)."""
        ...

    def join_push(self, channel: str, info: ClientInfo) -> bytes: ...

    def leave_push(self, channel: str, info: ClientInfo) -> bytes: ...

    # -- one connection -----------------------------------------------------------------------

    def decode_commands(self, data: bytes, max_commands: int, received_at: float = 0.0) -> list[Command]:
        """Raises Disconnect for a message that is not commands of this format."""
        ...

    def encode_reply(self, cmd_id: int, method: str, result: dict[str, Any]) -> bytes:
        """Raises ClientError (107) for a result that cannot be encoded."""
        ...

    def encode_error(self, cmd_id: int, error: ClientError) -> bytes: ...

    def encode_push(self, channel: str, kind: str, body: dict[str, Any]) -> bytes:
        """A push of ``kind`` (unsubscribe, message, subscribe, ...); ``channel`` may be empty.

        Raises ClientError (107) for a body that cannot be encoded."""
        ...
