"""Protocol errors as typed values (PROTOCOL.md §1.8, §1.9).

Handlers raise :class:`ClientError` (an error reply, the connection stays) or
:class:`Disconnect` (the connection is closed with a WebSocket CLOSE carrying the
code). :func:`classify` is the one place that turns any other exception into
internal error 100; exception text never reaches the peer.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ClientError",
    "Disconnect",
    "Unsubscribe",
    "classify",
    "ERROR_INTERNAL",
    "ERROR_UNAUTHORIZED",
    "ERROR_UNKNOWN_CHANNEL",
    "ERROR_PERMISSION_DENIED",
    "ERROR_METHOD_NOT_FOUND",
    "ERROR_ALREADY_SUBSCRIBED",
    "ERROR_LIMIT_EXCEEDED",
    "ERROR_BAD_REQUEST",
    "ERROR_NOT_AVAILABLE",
    "ERROR_TOKEN_EXPIRED",
    "ERROR_EXPIRED",
    "ERROR_TOO_MANY_REQUESTS",
    "ERROR_UNRECOVERABLE_POSITION",
    "ERROR_REPLY_TOO_LARGE",
    "CLOSE_REASON_MAX_BYTES",
    "server_disconnect",
    "truncate_reason",
]

#: A CLOSE frame's reason after its 2-byte code fits in a 125-byte control frame (RFC 6455 §5.5).
CLOSE_REASON_MAX_BYTES = 123


@dataclass(frozen=True, slots=True)
class ClientError(Exception):
    """An error reply: ``{"id": N, "error": {"code", "message", "temporary"}}``."""

    code: int
    message: str
    temporary: bool = False

    def __str__(self) -> str:
        return f"{self.code} {self.message}"

    def as_dict(self) -> dict[str, object]:
        body: dict[str, object] = {"code": self.code, "message": self.message}
        if self.temporary:
            body["temporary"] = True
        return body


@dataclass(frozen=True, slots=True)
class Disconnect(Exception):
    """Close the connection with a CLOSE frame carrying ``code`` and ``reason``.

    3500-3999 and 4500-4999 are terminal for the SDKs; other codes >= 3000 reconnect.
    Reasons stay under 123 bytes so they fit a CLOSE frame.
    """

    code: int
    reason: str

    def __str__(self) -> str:
        return f"{self.code} {self.reason}"

    @property
    def reconnect(self) -> bool:
        return not (3500 <= self.code <= 3999 or 4500 <= self.code <= 4999)


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """A server-side unsubscribe push (codes 2000-2999; >= 2500 resubscribes)."""

    code: int
    reason: str


ERROR_INTERNAL = ClientError(100, "internal server error", temporary=True)
ERROR_UNAUTHORIZED = ClientError(101, "unauthorized")
ERROR_UNKNOWN_CHANNEL = ClientError(102, "unknown channel")
ERROR_PERMISSION_DENIED = ClientError(103, "permission denied")
ERROR_METHOD_NOT_FOUND = ClientError(104, "method not found")
ERROR_ALREADY_SUBSCRIBED = ClientError(105, "already subscribed")
ERROR_LIMIT_EXCEEDED = ClientError(106, "limit exceeded")
ERROR_BAD_REQUEST = ClientError(107, "bad request")
ERROR_NOT_AVAILABLE = ClientError(108, "not available")
ERROR_TOKEN_EXPIRED = ClientError(109, "token expired")
ERROR_EXPIRED = ClientError(110, "expired")
ERROR_TOO_MANY_REQUESTS = ClientError(111, "too many requests", temporary=True)
ERROR_UNRECOVERABLE_POSITION = ClientError(112, "unrecoverable position")
# A reply (history, recovery) larger than the connection's queue may hold: the session closes
# the connection with 3008 "slow" instead of building it (it could never be delivered).
ERROR_REPLY_TOO_LARGE = ClientError(106, "limit exceeded: reply too large")

# Disconnects (PROTOCOL.md §1.9). 3002, 3003 and 3007 are retired v1 codes: never reuse them.
DISCONNECT_SHUTDOWN = Disconnect(3001, "shutdown")
DISCONNECT_INTERNAL = Disconnect(3004, "internal server error")
DISCONNECT_EXPIRED = Disconnect(3005, "connection expired")
DISCONNECT_SUB_EXPIRED = Disconnect(3006, "subscription expired")
DISCONNECT_SLOW = Disconnect(3008, "slow")
DISCONNECT_WRITE_ERROR = Disconnect(3009, "write error")
DISCONNECT_INSUFFICIENT_STATE = Disconnect(3010, "insufficient state")
DISCONNECT_FORCE_RECONNECT = Disconnect(3011, "force reconnect")
DISCONNECT_NO_PONG = Disconnect(3012, "no pong")
DISCONNECT_TOO_MANY_REQUESTS = Disconnect(3013, "too many requests")
DISCONNECT_INVALID_TOKEN = Disconnect(3500, "invalid token")
DISCONNECT_BAD_REQUEST = Disconnect(3501, "bad request")
DISCONNECT_STALE = Disconnect(3502, "stale")
DISCONNECT_FORCE_NO_RECONNECT = Disconnect(3503, "force disconnect")
DISCONNECT_CONNECTION_LIMIT = Disconnect(3504, "connection limit")
DISCONNECT_CHANNEL_LIMIT = Disconnect(3505, "channel limit")
DISCONNECT_INAPPROPRIATE_PROTOCOL = Disconnect(3506, "inappropriate protocol")
DISCONNECT_PERMISSION_DENIED = Disconnect(3507, "permission denied")
DISCONNECT_NOT_AVAILABLE = Disconnect(3508, "not available")
DISCONNECT_TOO_MANY_ERRORS = Disconnect(3509, "too many errors")

UNSUBSCRIBE_SERVER = Unsubscribe(2000, "server unsubscribe")
UNSUBSCRIBE_INSUFFICIENT_STATE = Unsubscribe(2500, "insufficient state")
UNSUBSCRIBE_EXPIRED = Unsubscribe(2501, "subscription expired")

# WebSocket-level close codes (RFC 6455 §7.4.1) used by the edge.
WS_PROTOCOL_ERROR = Disconnect(1002, "protocol error")
WS_INVALID_TEXT = Disconnect(1007, "invalid utf-8")
WS_MESSAGE_TOO_BIG = Disconnect(1009, "message too big")


def truncate_reason(reason: str, limit: int = CLOSE_REASON_MAX_BYTES) -> str:
    """``reason`` cut to at most ``limit`` UTF-8 bytes on a character boundary."""
    raw = reason.encode()
    if len(raw) <= limit:
        return reason
    return raw[:limit].decode("utf-8", errors="ignore")


def server_disconnect(code: object, reason: object) -> Disconnect:
    """The rule for every disconnect a backend asks for (server API, control actions):
    a code in 3000..4999 and a string reason, truncated to fit a CLOSE frame.

    Raises:
        ClientError: 107 otherwise.
    """
    if type(code) is not int or not 3000 <= code <= 4999 or not isinstance(reason, str):
        raise ClientError(107, "bad request: disconnect code must be in 3000..4999")
    return Disconnect(code, truncate_reason(reason))


def classify(exc: BaseException) -> ClientError | Disconnect:
    """Map any exception raised by a command handler to what the peer sees."""
    if exc == ERROR_REPLY_TOO_LARGE:  # by value: it may have crossed the bus from an owner
        return DISCONNECT_SLOW
    if isinstance(exc, (ClientError, Disconnect)):
        return exc
    return ERROR_INTERNAL
