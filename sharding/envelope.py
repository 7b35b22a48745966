"""Inter-worker messages, one ZeroMQ frame each.

Layout: a fixed-size binary header (with the channel's and epoch's lengths), then the
channel, the epoch and the payload. One frame, not four: pyzmq's multipart send and receive
cost about 5 us each for four frames against about 1 and 0.2 us for one (measured here with
a PUSH/PULL ipc pair), per message per hop. The header is fixed-size binary so the
hot path (a publication fanned out to another worker) needs no JSON work: the payload is
the publication in its packed binary form (``gateway.core.model.pack_publication``,
unpacked by slicing), and each receiving worker's hub encodes the client push once per
codec. Requests carry their operation in ``flags``, so nothing on the bus is keyed by
method strings.

A burst of deliveries one worker sends another within one loop tick (after the first, which
goes at once) travels as one BATCH frame (a header, then each encoded envelope after its
4-byte length): one zmq send and one receive instead of one per publication per peer.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

__all__ = ["VERSION", "Kind", "Envelope", "EnvelopeError", "encode", "decode", "encode_batch", "split_batch",
           "FLAG_HELLO_ANSWER", "FLAG_HELLO_HANDOFF", "FLAG_HANDOFF_DONE"]

VERSION = 3
# version, kind, flags, origin slot, correlation id, offset, sent at, channel length, epoch length
_HEADER = struct.Struct("!BBBHIQdIB")
_LENGTH = struct.Struct("!I")  # before each envelope inside a BATCH

# HELLO flags: an answer to a HELLO (do not answer it), and a successor that took over its
# predecessor's state in a reload (peers keep what they know about the slot).
FLAG_HELLO_ANSWER = 1
FLAG_HELLO_HANDOFF = 2
# HANDOFF flag: the last message of a state handoff.
FLAG_HANDOFF_DONE = 1


class Kind(IntEnum):
    HELLO = 1  # slot `origin` announces itself: corr = incarnation, payload = its bus endpoint
    REQUEST = 2  # flags = operation, channel, payload = its typed body; answered by REPLY with the same corr
    REPLY = 3  # flags: 0 = ok (payload = typed result), 1 = error (payload = JSON {code, message, temporary})
    PUBLICATION = 4  # channel, offset and epoch (0 and "" without history), payload = packed publication
    JOIN = 5  # channel, payload = packed ClientInfo
    NOTIFY = 6  # one-way: flags = operation, channel, payload = its typed body
    HANDOFF = 7  # reload: a retiring worker's channel state for its successor (flags 1 = last one)
    LEAVE = 8  # channel, payload = packed ClientInfo
    BATCH = 9  # payload = envelopes (deliveries of one tick to one slot), each after its 4-byte length


_KINDS = {int(k): k for k in Kind}


class EnvelopeError(ValueError):
    """A message that is not ours or not this version: dropped and counted, never crashes a worker."""


@dataclass(slots=True)
class Envelope:
    kind: Kind
    origin: int
    corr: int = 0
    offset: int = 0
    flags: int = 0
    channel: str = ""
    epoch: str = ""
    payload: bytes = b""
    ts: float = 0.0  # unix time the sender built it (publish-to-delivery latency)


def encode(env: Envelope) -> bytes:
    channel = env.channel.encode("utf-8")
    epoch = env.epoch.encode("ascii")
    header = _HEADER.pack(VERSION, env.kind, env.flags, env.origin, env.corr, env.offset, env.ts,
                          len(channel), len(epoch))
    return b"".join((header, channel, epoch, env.payload))


def decode(frame: bytes) -> Envelope:
    size = _HEADER.size
    if len(frame) < size:
        raise EnvelopeError("shorter than the header")
    try:
        version, kind, flags, origin, corr, offset, ts, channel_len, epoch_len = _HEADER.unpack_from(frame)
    except struct.error as exc:
        raise EnvelopeError(str(exc)) from None
    if version != VERSION:
        raise EnvelopeError(f"unsupported envelope version {version}")
    member = _KINDS.get(kind)  # a dict lookup: Kind(kind) is slow on the hot path
    if member is None:
        raise EnvelopeError(f"unknown kind {kind}")
    epoch_at = size + channel_len
    payload_at = epoch_at + epoch_len
    if payload_at > len(frame):
        raise EnvelopeError("channel and epoch lengths run past the frame")
    try:
        return Envelope(member, origin, corr, offset, flags, frame[size:epoch_at].decode("utf-8"),
                        frame[epoch_at:payload_at].decode("ascii") if epoch_len else "", frame[payload_at:], ts)
    except UnicodeDecodeError as exc:
        raise EnvelopeError(str(exc)) from None


def encode_batch(frames: list[bytes]) -> bytes:
    """One BATCH frame holding ``frames`` (encoded envelopes), in order. Its own header names
    no origin (0): each envelope inside names its own."""
    parts = [_HEADER.pack(VERSION, Kind.BATCH, 0, 0, 0, 0, 0.0, 0, 0)]
    pack = _LENGTH.pack
    for frame in frames:
        parts.append(pack(len(frame)))
        parts.append(frame)
    return b"".join(parts)


def split_batch(payload: bytes) -> list[bytes]:
    """The encoded envelopes of a BATCH's payload.

    Raises:
        EnvelopeError: a length that runs past the payload.
    """
    frames: list[bytes] = []
    at, end, size = 0, len(payload), _LENGTH.size
    unpack = _LENGTH.unpack_from
    while at < end:
        if at + size > end:
            raise EnvelopeError("batch: a length cut short")
        (length,) = unpack(payload, at)
        at += size
        if at + length > end:
            raise EnvelopeError("batch: an envelope runs past the frame")
        frames.append(payload[at:at + length])
        at += length
    return frames
