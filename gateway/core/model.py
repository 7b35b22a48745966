"""The typed core model that crosses the engine seam (modelled on centrifuge's broker.go).

Everything here is a plain value: no sockets, no codecs, no config. ``data``, ``conn_info``
and ``chan_info`` are raw JSON bytes (as centrifuge keeps ``[]byte``), so a publication
travels the bus and Redis without being decoded, and each worker's hub encodes the client
push once per codec by embedding those bytes.

:func:`pack_publication` / :func:`unpack_publication` are the one binary form of a
publication between processes (the ZeroMQ bus, Redis streams and pub/sub): length-prefixed
fields, so unpacking is slicing, with no JSON parsing on the fan-out path.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias, TypeVar

import orjson

from gateway.core.errors import ERROR_REPLY_TOO_LARGE, ClientError

__all__ = [
    "ClientInfo",
    "DeltaPayload",
    "Done",
    "DoneErr",
    "HistoryFilter",
    "HistoryResult",
    "PackError",
    "PresenceStats",
    "Publication",
    "PublishOptions",
    "check_reply_size",
    "publication_size",
    "StreamOptions",
    "StreamPosition",
    "SubscribeAnswer",
    "SubscribeRequest",
    "pack_client_info",
    "pack_publication",
    "unpack_client_info",
    "unpack_publication",
]

T = TypeVar("T")

#: The engine's completion callback: ``done(result, None)`` or ``done(None, error)``. The
#: memory engine calls it synchronously for channels this worker owns, later from the bus
#: otherwise; the Redis engine from its reader. No task per call.
Done: TypeAlias = Callable[[T | None, ClientError | None], None]
#: For operations with no result.
DoneErr: TypeAlias = Callable[[ClientError | None], None]


@dataclass(frozen=True, slots=True)
class StreamPosition:
    """Where a channel's stream stands: the top offset under an epoch (PROTOCOL.md §1.11)."""

    offset: int
    epoch: str


@dataclass(slots=True)
class ClientInfo:
    """Who published, joined or left (PROTOCOL.md §1.6). Info fields are raw JSON or None."""

    user: str
    client: str
    conn_info: bytes | None = None
    chan_info: bytes | None = None


@dataclass(slots=True)
class Publication:
    """One publication: raw JSON ``data``, who sent it, its offset in the stream (0 when the
    channel keeps no history) and string tags. ``delta`` marks it for delta compression
    (Centrifugo's ``delta_publish`` / the publish API's ``delta``): subscribers that asked
    for fossil deltas get it as a delta against the channel's previous publication. It
    travels with the publication to every worker and is never sent to clients as such."""

    data: bytes
    info: ClientInfo | None = None
    offset: int = 0
    tags: dict[str, str] | None = None
    delta: bool = False


@dataclass(slots=True)
class DeltaPayload:
    """What a subscriber that negotiated fossil deltas is sent for ``pub``: ``data`` is the
    fossil delta against the previous payload it got when ``delta`` is set, else ``pub``'s
    whole payload. The JSON codec writes ``data`` as a JSON string (Centrifugo does the same
    for delta subscribers, full payloads included), protobuf as bytes."""

    pub: Publication
    data: bytes
    delta: bool


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """A channel's history settings, from its namespace: retained size, retention and how
    long the position (epoch, top offset) outlives the last publication."""

    size: int
    ttl: float
    meta_ttl: float

    @property
    def enabled(self) -> bool:
        return self.size > 0 and self.ttl > 0


@dataclass(frozen=True, slots=True)
class PublishOptions:
    """How to publish: into the stream (``stream`` set) or fire-and-forget (None), and the
    server API's idempotency key (a repeat within 5 minutes returns the first result)."""

    stream: StreamOptions | None = None
    idempotency_key: str = ""


@dataclass(frozen=True, slots=True)
class HistoryFilter:
    """A history read: ``limit`` 0 = position only, -1 = everything retained; forward after
    ``since`` (oldest first) or ``reverse`` before it (newest first)."""

    limit: int = 0
    since: StreamPosition | None = None
    reverse: bool = False
    max_bytes: int = 0  # the reply must fit this (0: no bound); beyond it: ERROR_REPLY_TOO_LARGE


@dataclass(slots=True)
class HistoryResult:
    position: StreamPosition
    publications: list[Publication]


@dataclass(frozen=True, slots=True)
class SubscribeRequest:
    """One local subscriber joining a channel's fan-out on this worker (interest), and what it
    needs from the stream: its position (``positioned``) and, with ``recover``, the
    publications after ``since``."""

    stream: StreamOptions | None = None
    positioned: bool = False
    recover: bool = False
    since: StreamPosition | None = None
    recovery_limit: int = -1  # at most this many publications are recovered (-1: no limit)
    max_bytes: int = 0  # the recovered publications must fit this (0: no bound)


@dataclass(slots=True)
class SubscribeAnswer:
    """The stream position from which this worker delivers to the new subscriber, and, for a
    recovery, whether the gap was provably filled and by which publications."""

    position: StreamPosition | None = None
    recovered: bool = False
    publications: list[Publication] | None = None


@dataclass(frozen=True, slots=True)
class PresenceStats:
    num_clients: int
    num_users: int


def publication_size(pub: Publication) -> int:
    """About how many bytes ``pub`` takes in a reply (a bound checked before encoding)."""
    size = len(pub.data) + 48
    info = pub.info
    if info is not None:
        size += len(info.user) + len(info.client) + len(info.conn_info or b"") + len(info.chan_info or b"") + 40
    if pub.tags:
        size += sum(len(k) + len(v) + 6 for k, v in pub.tags.items())
    return size


def check_reply_size(pubs: list[Publication], max_bytes: int) -> None:
    """Raises ERROR_REPLY_TOO_LARGE when ``pubs`` would not fit ``max_bytes`` (0: no bound)."""
    if max_bytes and sum(publication_size(p) for p in pubs) > max_bytes:
        raise ERROR_REPLY_TOO_LARGE


# -- the binary form --------------------------------------------------------------------------


class PackError(ValueError):
    """Bytes that are not a packed publication (a foreign or corrupt message)."""


_PUB = struct.Struct("!BQIIIIII")  # version, offset, len(data, user, client, conn_info, chan_info, tags)
_INFO = struct.Struct("!IIII")  # len(user, client, conn_info, chan_info)
_VERSION = 1
_VERSION_DELTA = 2  # the same layout, for a publication marked for delta compression
_ABSENT = 0xFFFFFFFF  # a length meaning "None"


def _len(value: bytes | None) -> int:
    return _ABSENT if value is None else len(value)


def pack_publication(pub: Publication) -> bytes:
    info = pub.info
    user = info.user.encode() if info is not None else None
    client = info.client.encode() if info is not None else None
    conn = info.conn_info if info is not None else None
    chan = info.chan_info if info is not None else None
    tags = orjson.dumps(pub.tags) if pub.tags else None
    version = _VERSION_DELTA if pub.delta else _VERSION
    header = _PUB.pack(version, pub.offset, len(pub.data), _len(user), _len(client), _len(conn), _len(chan),
                       _len(tags))
    return b"".join((header, pub.data, user or b"", client or b"", conn or b"", chan or b"", tags or b""))


def unpack_publication(raw: bytes) -> Publication:
    """Raises PackError for anything that is not a packed publication."""
    size = _PUB.size
    if len(raw) < size:
        raise PackError("short publication")
    version, offset, *lengths = _PUB.unpack_from(raw)
    if version != _VERSION and version != _VERSION_DELTA:
        raise PackError(f"unknown publication version {version}")
    data, user, client, conn, chan, tags = _fields(raw, size, lengths)
    info = None
    if user is not None and client is not None:
        info = ClientInfo(_text(user), _text(client), conn, chan)
    tag_map = None
    if tags is not None:
        try:
            tag_map = orjson.loads(tags)
        except orjson.JSONDecodeError:
            raise PackError("bad tags") from None
        if not isinstance(tag_map, dict) or not all(isinstance(v, str) for v in tag_map.values()):
            raise PackError("tags are not a string map")
    return Publication(data or b"null", info, offset, tag_map, version == _VERSION_DELTA)


def _fields(raw: bytes, pos: int, lengths: list[int]) -> list[bytes | None]:
    """The length-prefixed fields after the header (``_ABSENT`` = None)."""
    fields: list[bytes | None] = []
    for n in lengths:
        if n == _ABSENT:
            fields.append(None)
            continue
        end = pos + n
        if end > len(raw):
            raise PackError("truncated field")
        fields.append(raw[pos:end])
        pos = end
    return fields


def _text(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise PackError("invalid utf-8") from None


def pack_client_info(info: ClientInfo) -> bytes:
    user, client = info.user.encode(), info.client.encode()
    return b"".join((_INFO.pack(len(user), len(client), _len(info.conn_info), _len(info.chan_info)),
                     user, client, info.conn_info or b"", info.chan_info or b""))


def unpack_client_info(raw: bytes) -> ClientInfo:
    """Raises PackError for anything that is not a packed ClientInfo."""
    if len(raw) < _INFO.size:
        raise PackError("short client info")
    user, client, conn, chan = _fields(raw, _INFO.size, list(_INFO.unpack_from(raw)))
    return ClientInfo(_text(user or b""), _text(client or b""), conn, chan)
