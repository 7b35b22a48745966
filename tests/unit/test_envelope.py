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
    encode_batch,
    split_batch,
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


HEADER = struct.Struct("!BBBHIQdIB")


def _split(frame: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """(header, channel, epoch, payload) of one encoded frame."""
    fields = HEADER.unpack_from(frame)
    channel_len, epoch_len = fields[-2], fields[-1]
    at = HEADER.size
    return (frame[:at], frame[at:at + channel_len], frame[at + channel_len:at + channel_len + epoch_len],
            frame[at + channel_len + epoch_len:])


def _join(header: bytes, channel: bytes, epoch: bytes, payload: bytes) -> bytes:
    fields = list(HEADER.unpack(header))
    fields[-2], fields[-1] = len(channel), len(epoch)
    return HEADER.pack(*fields) + channel + epoch + payload


@pytest.mark.parametrize("kind", list(Kind))
def test_round_trip_every_kind(kind: Kind) -> None:
    env = _sample(kind)
    frame = encode(env)
    assert isinstance(frame, bytes)
    out = decode(frame)
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


def test_frame_layout() -> None:
    header, channel, epoch, payload = _split(encode(_sample(Kind.PUBLICATION)))
    assert header[0] == VERSION
    assert header[1] == Kind.PUBLICATION
    assert channel == "ns:канал🎉".encode()
    assert epoch == b"AbCdEfGh"
    assert payload.startswith(b'{"push"')


def test_payload_is_passed_through_unchanged() -> None:
    payload = bytes(range(256))
    assert decode(encode(Envelope(Kind.REPLY, 1, payload=payload))).payload == payload


@pytest.mark.parametrize("cut", [0, 1, HEADER.size - 1])
def test_shorter_than_the_header(cut: int) -> None:
    with pytest.raises(EnvelopeError):
        decode(encode(_sample(Kind.HELLO))[:cut])


def test_lengths_past_the_frame() -> None:
    frame = encode(_sample(Kind.PUBLICATION))
    header, channel, epoch, _ = _split(frame)
    with pytest.raises(EnvelopeError):
        decode(header + channel + epoch[:-1])  # the epoch is cut short


@pytest.mark.parametrize("version", [0, VERSION - 1, VERSION + 1, 255])
def test_bad_version(version: int) -> None:
    frame = encode(_sample(Kind.REQUEST))
    with pytest.raises(EnvelopeError, match="version"):
        decode(bytes([version]) + frame[1:])


@pytest.mark.parametrize("kind", [0, 10, 255])
def test_unknown_kind(kind: int) -> None:
    frame = encode(_sample(Kind.REQUEST))
    with pytest.raises(EnvelopeError):
        decode(frame[:1] + bytes([kind]) + frame[2:])


def test_bad_channel_utf8() -> None:
    header, _, epoch, payload = _split(encode(_sample(Kind.JOIN)))
    with pytest.raises(EnvelopeError):
        decode(_join(header, b"\xff\xfe", epoch, payload))


def test_bad_epoch_ascii() -> None:
    header, channel, _, payload = _split(encode(_sample(Kind.PUBLICATION)))
    with pytest.raises(EnvelopeError):
        decode(_join(header, channel, "é".encode(), payload))


def test_envelope_error_is_value_error() -> None:
    assert issubclass(EnvelopeError, ValueError)


def test_header_is_network_order() -> None:
    frame = encode(Envelope(Kind.PUBLICATION, origin=0x0102, corr=0x03040506, offset=0x0708, flags=1,
                            ts=1.5, channel="ab"))
    assert frame == struct.pack("!BBBHIQdIB", VERSION, 4, 1, 0x0102, 0x03040506, 0x0708, 1.5, 2, 0) + b"ab"


# -- BATCH: one tick's deliveries to one slot ------------------------------------------------------


def test_batch_round_trip_keeps_order_and_bytes() -> None:
    frames = [encode(_sample(kind)) for kind in (Kind.PUBLICATION, Kind.JOIN, Kind.LEAVE)] + [b""]
    batch = decode(encode_batch(frames))
    assert (batch.kind, batch.origin, batch.channel) == (Kind.BATCH, 0, "")
    assert split_batch(batch.payload) == frames
    assert [decode(f) for f in split_batch(batch.payload)[:3]] == [decode(f) for f in frames[:3]]


def test_batch_layout() -> None:
    frames = [b"abc", b"de"]
    assert encode_batch(frames)[HEADER.size:] == b"\x00\x00\x00\x03abc\x00\x00\x00\x02de"


@pytest.mark.parametrize("payload", [b"\x00\x00", b"\x00\x00\x00\x05abcd", b"\x00\x00\x00\x01a\x00"],
                         ids=["length-cut", "envelope-past-end", "trailing-cut"])
def test_truncated_batch_raises(payload: bytes) -> None:
    with pytest.raises(EnvelopeError):
        split_batch(payload)
