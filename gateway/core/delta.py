"""Delta compression of publications for subscribers that asked for ``delta: "fossil"``
(Centrifugo's delta compression), pure.

A subscriber that negotiated deltas is sent each publication either whole or as a fossil
delta (:mod:`gateway.core.fossil`) against the payload it was sent just before on the same
subscription. The first payload after subscribing is whole; so is one whose delta would not
be smaller, one not marked for delta (``Publication.delta``), and, for text codecs, one whose
delta is not valid UTF-8 (centrifuge-js applies a JSON string's UTF-8 bytes; a delta can cut
a multi-byte character where a copy starts or ends).
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.core import fossil
from gateway.core.model import DeltaPayload, Publication

__all__ = ["Patch", "patch", "payload", "recovered"]


@dataclass(frozen=True, slots=True)
class Patch:
    """A fossil delta worth sending in place of a payload."""

    data: bytes
    text: bool  # valid UTF-8: a text (JSON) codec may carry it too


def patch(prev: bytes, data: bytes) -> Patch | None:
    """The delta from ``prev`` to ``data``, or None when it is not smaller than ``data``."""
    raw = fossil.create(prev, data)
    if len(raw) >= len(data):
        return None
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return Patch(raw, False)
    return Patch(raw, True)


def payload(pub: Publication, found: Patch | None, text: bool) -> DeltaPayload:
    """What a primed delta subscriber of a ``text`` (or binary) codec is sent for ``pub``."""
    if found is not None and (found.text or not text):
        return DeltaPayload(pub, found.data, True)
    return DeltaPayload(pub, pub.data, False)


def recovered(pubs: list[Publication], text: bool, prev: Publication | None = None) -> list[DeltaPayload]:
    """``pubs`` for a delta subscriber that receives them in this order after ``prev`` (None:
    nothing before them on this subscription): each a delta against the one before, whatever
    its delta mark, as Centrifugo sends recovered publications; the first whole unless ``prev``
    is given and the publication is marked for delta."""
    out: list[DeltaPayload] = []
    for pub in pubs:
        found = None
        if prev is not None and (out or pub.delta):
            found = patch(prev.data, pub.data)
        out.append(payload(pub, found, text))
        prev = pub
    return out
