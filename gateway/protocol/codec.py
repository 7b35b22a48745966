"""What the hub needs from a client protocol codec: pushes encoded from model values.

A hub groups its subscribers by codec and encodes each publication once per codec, then
writes the same bytes to every subscriber of that codec (centrifuge's hub does the same
per protocol key).
"""

from __future__ import annotations

from typing import Protocol

from gateway.core.model import ClientInfo, Publication

__all__ = ["Codec"]


class Codec(Protocol):
    name: str

    def publication_push(self, channel: str, pub: Publication) -> bytes: ...

    def join_push(self, channel: str, info: ClientInfo) -> bytes: ...

    def leave_push(self, channel: str, info: ClientInfo) -> bytes: ...
