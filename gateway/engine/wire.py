"""The memory engine's operations as they travel the bus between a worker and a channel's
owner: one typed encoder and decoder per request and result, pure.

Small structured parts are JSON arrays; publications and client infos keep their packed
binary form (``gateway.core.model``), framed as length-prefixed parts, so the owner's
answer to a history read or a recovering subscribe is never re-encoded as JSON.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import Any

import orjson

from gateway.core.model import (
    ClientInfo,
    HistoryFilter,
    HistoryResult,
    PackError,
    PresenceStats,
    Publication,
    PublishOptions,
    StreamOptions,
    StreamPosition,
    SubscribeAnswer,
    SubscribeRequest,
    pack_client_info,
    pack_publication,
    unpack_client_info,
    unpack_publication,
)

__all__ = ["Op", "pack_parts", "unpack_parts"]

_LEN = struct.Struct("!I")


class Op(IntEnum):
    """Operations on a channel's owner (``Envelope.flags`` of REQUEST and NOTIFY)."""

    PUBLISH = 1
    SUBSCRIBE = 2
    UNSUBSCRIBE = 3  # notify
    JOIN = 4  # notify
    LEAVE = 5  # notify
    PRESENCE_ADD = 6  # notify
    PRESENCE_REMOVE = 7  # notify
    PRESENCE = 8
    PRESENCE_STATS = 9
    HISTORY = 10
    REMOVE_HISTORY = 11
    STREAM_LOST = 12  # notify, owner -> subscribers' workers: positioned subscribers recover


def pack_parts(parts: list[bytes]) -> bytes:
    return b"".join(_LEN.pack(len(p)) + p for p in parts)


def unpack_parts(raw: bytes) -> list[bytes]:
    """Raises PackError on a truncated frame."""
    parts = []
    pos, end = 0, len(raw)
    while pos < end:
        if pos + 4 > end:
            raise PackError("truncated part length")
        (n,) = _LEN.unpack_from(raw, pos)
        pos += 4
        if pos + n > end:
            raise PackError("truncated part")
        parts.append(raw[pos:pos + n])
        pos += n
    return parts


def _stream(opts: StreamOptions | None) -> list[float] | None:
    return None if opts is None else [opts.size, opts.ttl, opts.meta_ttl]


def _unstream(value: Any) -> StreamOptions | None:
    return None if value is None else StreamOptions(int(value[0]), float(value[1]), float(value[2]))


def _position(value: Any) -> StreamPosition | None:
    return None if value is None else StreamPosition(int(value[0]), str(value[1]))


def _unposition(pos: StreamPosition | None) -> list[Any] | None:
    return None if pos is None else [pos.offset, pos.epoch]


# -- publish --------------------------------------------------------------------------------


def encode_publish(pub: Publication, opts: PublishOptions) -> bytes:
    return pack_parts([orjson.dumps([_stream(opts.stream), opts.idempotency_key]), pack_publication(pub)])


def decode_publish(raw: bytes) -> tuple[Publication, PublishOptions]:
    head, body = unpack_parts(raw)
    stream, key = orjson.loads(head)
    return unpack_publication(body), PublishOptions(_unstream(stream), str(key))


def encode_position(pos: StreamPosition) -> bytes:
    return orjson.dumps([pos.offset, pos.epoch])


def decode_position(raw: bytes) -> StreamPosition:
    offset, epoch = orjson.loads(raw)
    return StreamPosition(int(offset), str(epoch))


# -- subscribe ------------------------------------------------------------------------------


def encode_subscribe(req: SubscribeRequest) -> bytes:
    return orjson.dumps([_stream(req.stream), req.positioned, req.recover, _unposition(req.since),
                         req.recovery_limit, req.max_bytes])


def decode_subscribe(raw: bytes) -> SubscribeRequest:
    stream, positioned, recover, since, limit, max_bytes = orjson.loads(raw)
    return SubscribeRequest(_unstream(stream), bool(positioned), bool(recover), _position(since), int(limit),
                            int(max_bytes))


def encode_subscribe_answer(answer: SubscribeAnswer) -> bytes:
    head = orjson.dumps([_unposition(answer.position), answer.recovered])
    return pack_parts([head, *(pack_publication(p) for p in answer.publications or ())])


def decode_subscribe_answer(raw: bytes) -> SubscribeAnswer:
    head, *pubs = unpack_parts(raw)
    position, recovered = orjson.loads(head)
    answer = SubscribeAnswer(_position(position), bool(recovered))
    if recovered:
        answer.publications = [unpack_publication(p) for p in pubs]
    return answer


# -- history --------------------------------------------------------------------------------


def encode_history(filter: HistoryFilter, opts: StreamOptions) -> bytes:
    return orjson.dumps([filter.limit, _unposition(filter.since), filter.reverse, _stream(opts), filter.max_bytes])


def decode_history(raw: bytes) -> tuple[HistoryFilter, StreamOptions]:
    limit, since, reverse, stream, max_bytes = orjson.loads(raw)
    opts = _unstream(stream)
    if opts is None:
        raise PackError("history without stream options")
    return HistoryFilter(int(limit), _position(since), bool(reverse), int(max_bytes)), opts


def encode_history_result(result: HistoryResult) -> bytes:
    head = encode_position(result.position)
    return pack_parts([head, *(pack_publication(p) for p in result.publications)])


def decode_history_result(raw: bytes) -> HistoryResult:
    head, *pubs = unpack_parts(raw)
    return HistoryResult(decode_position(head), [unpack_publication(p) for p in pubs])


# -- presence -------------------------------------------------------------------------------


def encode_presence(entries: dict[str, ClientInfo]) -> bytes:
    return pack_parts([pack_client_info(info) for info in entries.values()])


def decode_presence(raw: bytes) -> dict[str, ClientInfo]:
    infos = [unpack_client_info(p) for p in unpack_parts(raw)]
    return {info.client: info for info in infos}


def encode_presence_stats(stats: PresenceStats) -> bytes:
    return orjson.dumps([stats.num_clients, stats.num_users])


def decode_presence_stats(raw: bytes) -> PresenceStats:
    clients, users = orjson.loads(raw)
    return PresenceStats(int(clients), int(users))
