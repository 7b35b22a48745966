"""Channel streams: offsets under an epoch, bounded history, and recovery math.

Pure and synchronous; time is passed in. Mirrors centrifuge's memstream and
``isStreamRecovered`` (PROTOCOL.md §1.11): a stream gets a fresh random epoch when it is
created, so a lost stream (an owner worker restarted) can never be mistaken for the
old one and clients get ``recovered: false`` instead of a silent gap.
"""

from __future__ import annotations

import random
import string
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.core.errors import ClientError
from gateway.core.model import HistoryFilter, Publication, StreamPosition

__all__ = ["Stream", "HistoryItem", "new_epoch", "is_recovered", "history_filter"]

_EPOCH_ALPHABET = string.ascii_letters


def new_epoch(rng: random.Random) -> str:
    """Eight random letters, like centrifuge's internal/epoch."""
    return "".join(rng.choice(_EPOCH_ALPHABET) for _ in range(8))


@dataclass(frozen=True, slots=True)
class HistoryItem:
    offset: int
    publication: Publication  # offset included


class Stream:
    """One channel's stream: epoch, top offset and the last ``size`` publications.

    Retention works as in Centrifugo: every publication renews the expiry of the whole
    history, which is dropped ``ttl`` after the *last* publication (items do not expire one
    by one). ``touched_at`` is the time of the last publication (of creation before the
    first one); the position (epoch, top) lives until ``meta_ttl`` after it.
    """

    __slots__ = ("_items", "epoch", "expires_at", "meta_ttl", "size", "top", "touched_at", "ttl")

    def __init__(self, epoch: str, size: int, ttl: float, now: float, meta_ttl: float = 0.0) -> None:
        self.epoch = epoch
        self.top = 0
        self.size = size
        self.ttl = ttl
        self.meta_ttl = meta_ttl  # 0: the position never expires
        self.touched_at = now
        self.expires_at = now  # when the retained publications go; nothing is retained yet
        self._items: deque[HistoryItem] = deque(maxlen=size)

    def next_offset(self) -> int:
        return self.top + 1

    def append(self, offset: int, publication: Publication, now: float) -> None:
        if offset != self.top + 1:
            raise ValueError(f"offset {offset} does not follow top {self.top}")
        self.top = offset
        self.touched_at = now
        self.expires_at = now + self.ttl  # the whole history lives ttl after the last publication
        self._items.append(HistoryItem(offset, publication))

    def _expire(self, now: float) -> None:
        if self._items and self.expires_at <= now:
            self._items.clear()

    def meta_expired(self, now: float) -> bool:
        """True once the position outlived ``meta_ttl`` since the last publication."""
        return self.meta_ttl > 0 and self.touched_at + self.meta_ttl <= now

    def items(self) -> list[HistoryItem]:
        return list(self._items)

    def restore(self, top: int, items: list[tuple[int, Publication]], expires_at: float) -> None:
        """Continue a stream handed over by a retiring worker (same epoch, same offsets)."""
        self.top = top
        self.expires_at = expires_at
        self._items.clear()
        for offset, publication in items[-self.size:] if self.size else ():
            self._items.append(HistoryItem(offset, publication))

    def clear(self) -> None:
        """Drop publications but keep the position (Centrifugo's history_remove)."""
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)

    def read(self, now: float, *, limit: int, since: int | None = None, reverse: bool = False) -> list[HistoryItem]:
        """Publications per the history API (PROTOCOL.md §1.11).

        ``limit`` 0 returns nothing (position only); a negative limit means "all retained".
        Forward: oldest first, after ``since`` when given. Reverse: newest first, before
        ``since`` when given.
        """
        self._expire(now)
        if limit == 0:
            return []
        items = self._items
        out: list[HistoryItem] = []
        if not reverse:
            for item in items:
                if since is not None and item.offset <= since:
                    continue
                out.append(item)
                if 0 < limit <= len(out):
                    break
        else:
            for item in reversed(items):
                if since is not None and item.offset >= since:
                    continue
                out.append(item)
                if 0 < limit <= len(out):
                    break
        return out


def history_filter(params: dict[str, Any], max_limit: int, max_bytes: int = 0) -> HistoryFilter:
    """Normalise a history call (client command or server API) into a HistoryFilter.

    ``limit`` 0 asks for the position only, a negative or too large one for ``max_limit``.

    Raises:
        ClientError: 107 for a malformed limit or ``since``, or ``reverse`` without ``since.offset``.
    """
    limit = params.get("limit") or 0
    if type(limit) is not int:
        raise ClientError(107, "bad request: limit must be an integer")
    if limit < 0 or limit > max_limit:
        limit = max_limit
    reverse = bool(params.get("reverse"))
    since = params.get("since")
    position: StreamPosition | None = None
    if since is not None:
        if not isinstance(since, dict) or type(since.get("offset", 0)) is not int:
            raise ClientError(107, "bad request: since must be {offset, epoch}")
        if reverse and not since.get("offset"):
            raise ClientError(107, "bad request: reverse history needs since.offset")
        position = StreamPosition(since.get("offset", 0), str(since.get("epoch") or ""))
    return HistoryFilter(limit=limit, since=position, reverse=reverse, max_bytes=max_bytes)


class _Positioned(Protocol):
    @property
    def offset(self) -> int: ...


def is_recovered(items: Sequence[_Positioned], req_offset: int, req_epoch: str, epoch: str, top: int) -> bool:
    """True only when ``items`` provably fill the gap from ``req_offset`` to ``top``."""
    if req_epoch and req_epoch != epoch:
        return False
    if not items:
        return top == req_offset
    return items[0].offset == req_offset + 1 and items[-1].offset == top
