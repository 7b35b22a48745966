"""permessage-deflate (RFC 7692) for WebSocket connections: negotiation, inflating what a
client sends, and deflating what the gateway sends once per message per worker.

Pure (zlib only, no sockets). The gateway always asks for ``server_no_context_takeover``
and ``client_no_context_takeover`` (both are allowed in a response whatever the offer
said, RFC 7692 §7.1.1): every message is compressed on its own, so

- one publication written to many subscribers compresses to the same bytes for all of
  them, and :class:`Deflater` compresses it once (it remembers the last message it was
  given: the hub writes the same ``bytes`` object to every subscriber, and sessions that
  batch several pushes of a tick into one frame build equal frames one after another);
- a connection keeps no compression state between messages (an inflater lives for one
  message), which matters at tens of thousands of idle connections.

Centrifugo's keys: ``websocket.compression`` (off by default), ``compression_level``
(1), ``compression_min_size`` (0: every message; smaller ones are sent plain).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from gateway.core.errors import WS_MESSAGE_TOO_BIG, Disconnect
from gateway.obs.stats import Stats

__all__ = ["EXTENSION", "Deflater", "DeflateOffer", "inflate", "negotiate"]

EXTENSION = "permessage-deflate"
# What ends every compressed message and is left off on the wire (RFC 7692 §7.2.1).
_TAIL = b"\x00\x00\xff\xff"
# zlib refuses an 8-bit window for raw deflate; an offer that demands one is declined.
_MIN_SERVER_WINDOW_BITS = 9


@dataclass(frozen=True, slots=True)
class DeflateOffer:
    """The accepted offer: the response header's value and the window the server may use."""

    response: str
    server_window_bits: int = 15


def _window_bits(value: str | None) -> int | None:
    if value is None or not value.isdigit() or len(value) > 2:
        return None
    bits = int(value)
    return bits if 8 <= bits <= 15 else None


def _accept(params: list[str]) -> DeflateOffer | None:
    """One offer's parameters -> its acceptance, or None to decline it (RFC 7692 §7.1:
    unknown or repeated parameters and invalid values decline the offer)."""
    seen: set[str] = set()
    server_bits = 15
    for param in params:
        name, eq, raw = param.partition("=")
        name = name.strip().lower()
        value = raw.strip().strip('"') if eq else None
        if not name or name in seen:
            return None
        seen.add(name)
        if name in ("server_no_context_takeover", "client_no_context_takeover"):
            if value is not None:
                return None
        elif name == "server_max_window_bits":
            bits = _window_bits(value)
            if bits is None or bits < _MIN_SERVER_WINDOW_BITS:
                return None
            server_bits = bits
        elif name == "client_max_window_bits":
            # The client may limit its own window; the inflater reads any window up to 15,
            # so the response leaves the parameter out (RFC 7692 §7.1.2.2 allows that).
            if value is not None and _window_bits(value) is None:
                return None
        else:
            return None
    response = f"{EXTENSION}; server_no_context_takeover; client_no_context_takeover"
    if "server_max_window_bits" in seen:
        response += f"; server_max_window_bits={server_bits}"
    return DeflateOffer(response, server_bits)


def negotiate(header: str | None) -> DeflateOffer | None:
    """The first acceptable permessage-deflate offer in ``Sec-WebSocket-Extensions``."""
    if not header:
        return None
    for offer in header.split(","):
        name, *params = offer.split(";")
        if name.strip().lower() != EXTENSION:
            continue
        accepted = _accept(params)
        if accepted is not None:
            return accepted
    return None


def inflate(data: bytes, limit: int) -> bytes:
    """One compressed message -> its payload: 1009 beyond ``limit`` bytes inflated (a small
    frame can inflate to gigabytes), 1007 for data that does not inflate."""
    inflater = zlib.decompressobj(-15)
    try:
        out = inflater.decompress(data + _TAIL, limit + 1)
    except zlib.error:
        raise Disconnect(1007, "invalid compressed data") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise WS_MESSAGE_TOO_BIG
    return out


class Deflater:
    """Compresses messages for one (level, window) setting in a worker; the same message
    given again (the same object, as the hub hands it to each subscriber) costs nothing."""

    __slots__ = ("_compressor", "_last_in", "_last_out", "_stats")

    def __init__(self, level: int, window_bits: int = 15, stats: Stats | None = None) -> None:
        # One compressor reused: Z_FULL_FLUSH after each message resets its history, so each
        # message stands alone (server_no_context_takeover) without a new zlib state per message.
        self._compressor = zlib.compressobj(level, zlib.DEFLATED, -window_bits)
        self._last_in: bytes | None = None
        self._last_out = b""
        self._stats = stats if stats is not None else Stats()

    def compress(self, data: bytes) -> bytes:
        # The same object (one push handed to every subscriber), or equal bytes (several pushes
        # of one tick joined into one frame per session: each session builds its own, but the
        # subscribers of a channel flush the same batch one after another).
        last = self._last_in
        if data is last or data == last:
            return self._last_out
        c = self._compressor
        out = c.compress(data) + c.flush(zlib.Z_FULL_FLUSH)
        if out.endswith(_TAIL):
            out = out[:-4]
        self._last_in, self._last_out = data, out
        stats = self._stats
        stats.deflate_messages += 1  # compressions, not deliveries: the point of the cache
        stats.deflate_bytes_in += len(data)
        stats.deflate_bytes_out += len(out)
        return out
