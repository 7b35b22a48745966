"""The pub/sub message format, shared by the publish script and the reader.

Like Centrifugo's: a publication is ``__p1:<offset>:<epoch>__<payload>`` (offset 0 and an
empty epoch when the channel keeps no history), a join is ``__j__<payload>`` and a leave
``__l__<payload>``. The header is ASCII and the payload is opaque bytes (our packed
publication or ClientInfo), so parsing is two ``find`` calls and a slice, and anything else
on our channels (a foreign publisher) is recognised and dropped instead of crashing the reader.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum

__all__ = ["EPOCH_RE", "MessageKind", "RedisMessage", "event_message", "parse_message"]

_PUB = b"__p1:"
_JOIN = b"__j__"
_LEAVE = b"__l__"
_END = b"__"

#: What an epoch may look like: it sits between ``:`` and ``__`` in the header.
EPOCH_RE = re.compile(r"[A-Za-z0-9]{0,64}")


class MessageKind(IntEnum):
    PUBLICATION = 0
    JOIN = 1
    LEAVE = 2


@dataclass(frozen=True, slots=True)
class RedisMessage:
    """One message from a channel's pub/sub: a publication with its stream position
    (``offset`` 0 and ``epoch`` "" without history), or a join/leave with a packed ClientInfo."""

    kind: MessageKind
    offset: int
    epoch: str
    payload: bytes


def event_message(kind: MessageKind, payload: bytes) -> bytes:
    """The wire form of a join or leave push (publications are framed by the publish script)."""
    if kind is MessageKind.JOIN:
        return _JOIN + payload
    if kind is MessageKind.LEAVE:
        return _LEAVE + payload
    raise ValueError("publications go through publish(), not publish_event()")


def parse_message(data: bytes) -> RedisMessage | None:
    """The message, or None for anything that is not in our format."""
    if data.startswith(_PUB):
        end = data.find(_END, len(_PUB))
        if end < 0:
            return None
        offset, sep, epoch = data[len(_PUB):end].partition(b":")
        if not sep or not offset.isdigit():
            return None
        try:
            epoch_text = epoch.decode("ascii")
        except UnicodeDecodeError:
            return None
        return RedisMessage(MessageKind.PUBLICATION, int(offset), epoch_text, data[end + len(_END):])
    if data.startswith(_JOIN):
        return RedisMessage(MessageKind.JOIN, 0, "", data[len(_JOIN):])
    if data.startswith(_LEAVE):
        return RedisMessage(MessageKind.LEAVE, 0, "", data[len(_LEAVE):])
    return None
