"""permessage-deflate (RFC 7692) without sockets: negotiation, inflating with limits, and
one compression per message however many connections it goes to."""

from __future__ import annotations

import zlib

import pytest

from gateway.core.errors import Disconnect
from gateway.obs.stats import Stats
from gateway.transport.deflate import Deflater, inflate, negotiate

BOTH = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"


@pytest.mark.parametrize("header", [
    "permessage-deflate",
    "permessage-deflate; client_max_window_bits",
    "permessage-deflate; client_max_window_bits=10",
    "permessage-deflate; client_no_context_takeover",
    "permessage-deflate; server_no_context_takeover",
    "PerMessage-Deflate ;  client_max_window_bits",
    "x-webkit-deflate-frame, permessage-deflate",
])
def test_accepted_offers_ask_for_no_context_takeover_both_ways(header: str) -> None:
    offer = negotiate(header)
    assert offer is not None and offer.response == BOTH and offer.server_window_bits == 15


def test_server_max_window_bits_is_echoed_and_used() -> None:
    offer = negotiate("permessage-deflate; server_max_window_bits=10")
    assert offer is not None
    assert offer.response == BOTH + "; server_max_window_bits=10" and offer.server_window_bits == 10


@pytest.mark.parametrize("header", [
    None, "", "x-webkit-deflate-frame",
    "permessage-deflate; server_max_window_bits",  # a value is required
    "permessage-deflate; server_max_window_bits=16",
    "permessage-deflate; server_max_window_bits=8",  # zlib cannot deflate with a 256-byte window
    "permessage-deflate; client_max_window_bits=7",
    "permessage-deflate; client_max_window_bits=abc",
    "permessage-deflate; server_no_context_takeover=1",
    "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
    "permessage-deflate; mystery",
])
def test_declined_offers(header: str | None) -> None:
    assert negotiate(header) is None


def test_a_declined_offer_falls_through_to_the_next() -> None:
    offer = negotiate("permessage-deflate; server_max_window_bits=8, permessage-deflate; client_max_window_bits")
    assert offer is not None and offer.response == BOTH


def _client_deflate(payload: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    out = c.compress(payload) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def test_inflate_round_trip() -> None:
    payload = b'{"id":1,"publish":{"channel":"x","data":"' + b"a" * 5000 + b'"}}'
    assert inflate(_client_deflate(payload), 65536) == payload
    assert inflate(_client_deflate(b""), 65536) == b""


def test_inflate_limit_is_on_the_inflated_size() -> None:
    bomb = _client_deflate(b"\x00" * 1_000_000)  # ~1 KB on the wire
    assert len(bomb) < 2000
    with pytest.raises(Disconnect) as exc:
        inflate(bomb, 65536)
    assert exc.value.code == 1009
    assert len(inflate(_client_deflate(b"\x00" * 65536), 65536)) == 65536  # the limit itself passes


def test_garbage_is_1007() -> None:
    with pytest.raises(Disconnect) as exc:
        inflate(b"\xff\xff\xff\xff not deflate", 65536)
    assert exc.value.code == 1007


def test_one_compression_per_message_and_each_message_stands_alone() -> None:
    stats = Stats()
    deflater = Deflater(1, stats=stats)
    first = b'{"push":{"channel":"room","pub":{"data":{"text":"' + b"hello " * 200 + b'"}}}}'
    second = b'{"push":{"channel":"room","pub":{"data":{"text":"' + b"hello " * 201 + b'"}}}}'
    out = [deflater.compress(first) for _ in range(1000)]  # one publication, 1000 subscribers
    assert all(o is out[0] for o in out) and stats.deflate_messages == 1
    again = deflater.compress(second)
    assert stats.deflate_messages == 2
    # No context takeover: each inflates with a fresh inflater, in any order.
    assert inflate(again, 65536) == second and inflate(out[0], 65536) == first
    assert stats.deflate_bytes_in == len(first) + len(second)
    assert stats.deflate_bytes_out == len(out[0]) + len(again) < stats.deflate_bytes_in // 10


def test_a_smaller_window_inflates_with_the_default_inflater() -> None:
    data = bytes(range(256)) * 100
    assert inflate(Deflater(1, window_bits=9).compress(data), 65536) == data
