"""Inter-worker envelope framing: round trips and rejection of foreign/old messages."""

from __future__ import annotations

import struct

import pytest

from sharding.envelope import (
    VERSION,
    Envelope,
    EnvelopeError,
    Kind,
    decode,
    encode,
)


def _sample(kind: Kind) -> Envelope:
    return Envelope(
        kind=kind,
        origin=7,
        corr=123456,
        offset=2**40 + 5,
        flags=3 if kind is Kind.REQUEST else 0,
        channel="ns:канал🎉",
        epoch="AbCdEfGh",
        payload=b'{"push":{"channel":"x","pub":{"data":"a\\nb"}}}',
    )


@pytest.mark.parametrize("kind", list(Kind))
def test_round_trip_every_kind(kind: Kind) -> None:
    env = _sample(kind)
    frames = encode(env)
    assert len(frames) == 4
    assert all(isinstance(f, bytes) for f in frames)
    out = decode(frames)
    assert out == env
    assert out.kind is kind


@pytest.mark.parametrize("kind", list(Kind))
def test_round_trip_defaults(kind: Kind) -> None:
    env = Envelope(kind, 0)
    assert decode(encode(env)) == env


def test_round_trip_extremes() -> None:
    env = Envelope(Kind.PUBLICATION, origin=0xFFFF, corr=0xFFFFFFFF, offset=2**64 - 1, flags=0xFF,
                   channel="c" * 10_000, epoch="", payload=b"\x00\xff" * 1000)
    assert decode(encode(env)) == env


def test_frames_layout() -> None:
    header, channel, epoch, payload = encode(_sample(Kind.PUBLICATION))
    assert header[0] == VERSION
    assert header[1] == Kind.PUBLICATION
    assert channel == "ns:канал🎉".encode()
    assert epoch == b"AbCdEfGh"
    assert payload.startswith(b'{"push"')


def test_payload_is_passed_through_unchanged() -> None:
    payload = bytes(range(256))
    assert decode(encode(Envelope(Kind.REPLY, 1, payload=payload))).payload == payload


@pytest.mark.parametrize("count", [0, 1, 3, 5])
def test_bad_frame_count(count: int) -> None:
    frames = encode(_sample(Kind.HELLO))
    frames = (frames + [b"extra"] * 4)[:count]
    with pytest.raises(EnvelopeError):
        decode(frames)


@pytest.mark.parametrize("delta", [-1, 1])
def test_bad_header_size(delta: int) -> None:
    header, *rest = encode(_sample(Kind.NOTIFY))
    bad = header[:delta] if delta < 0 else header + b"\x00"
    with pytest.raises(EnvelopeError):
        decode([bad, *rest])


def test_empty_header() -> None:
    with pytest.raises(EnvelopeError):
        decode([b"", b"", b"", b""])


@pytest.mark.parametrize("version", [0, VERSION + 1, 255])
def test_bad_version(version: int) -> None:
    header, *rest = encode(_sample(Kind.REQUEST))
    with pytest.raises(EnvelopeError, match="version"):
        decode([bytes([version]) + header[1:], *rest])


@pytest.mark.parametrize("kind", [0, 9, 255])
def test_unknown_kind(kind: int) -> None:
    header, *rest = encode(_sample(Kind.REQUEST))
    with pytest.raises(EnvelopeError):
        decode([header[:1] + bytes([kind]) + header[2:], *rest])


def test_bad_channel_utf8() -> None:
    header, _, epoch, payload = encode(_sample(Kind.JOIN))
    with pytest.raises(EnvelopeError):
        decode([header, b"\xff\xfe", epoch, payload])


def test_bad_epoch_ascii() -> None:
    header, channel, _, payload = encode(_sample(Kind.PUBLICATION))
    with pytest.raises(EnvelopeError):
        decode([header, channel, "é".encode(), payload])


def test_envelope_error_is_value_error() -> None:
    assert issubclass(EnvelopeError, ValueError)


def test_header_is_network_order() -> None:
    header = encode(Envelope(Kind.PUBLICATION, origin=0x0102, corr=0x03040506, offset=0x0708, flags=1,
                             ts=1.5))[0]
    assert header == struct.pack("!BBBHIQd", VERSION, 4, 1, 0x0102, 0x03040506, 0x0708, 1.5)
