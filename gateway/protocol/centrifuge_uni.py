"""The JSON codec of the one-way transports (uni_websocket, uni_sse, uni_http_stream).

A one-way client never sends commands after its connect request, and everything it receives
is a bare ``Push`` (``centrifuge:client.go encodeReply`` encodes ``reply.Push`` alone for a
unidirectional transport): ``{"channel":"news","pub":{...}}`` rather than
``{"push":{"channel":"news","pub":{...}}}``. The connect result arrives as a ``connect`` push
(``{"connect":{"client":...}}``), a ping is ``{}``, and the end of the connection is announced
with a ``disconnect`` push. The hub groups subscribers by codec object, so a publication is
encoded once for all one-way subscribers of a worker, as for the other codecs.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.core.errors import ClientError
from gateway.core.model import ClientInfo, DeltaPayload, Publication
from gateway.protocol.centrifuge_json import (
    decode_commands,
    dumps,
    encode_client_info,
    encode_delta_publication,
    encode_model_publication,
)
from gateway.protocol.codec import Command

__all__ = ["UNI_JSON", "UniJsonCodec"]


def _prefix(channel: str) -> bytes:
    return b'{"channel":' + orjson.dumps(channel) + b","


class UniJsonCodec:
    """:class:`gateway.protocol.codec.Codec` for one-way JSON clients."""

    name = "uni_json"
    binary = False
    separator = b"\n"
    ping = b"{}"

    def decode_commands(self, data: bytes, max_commands: int, received_at: float = 0.0) -> list[Command]:
        return decode_commands(data, max_commands, received_at)

    def encode_reply(self, cmd_id: int, method: str, result: dict[str, Any]) -> bytes:
        """Only ``connect`` is ever answered: its result goes out as a connect push."""
        return dumps({method: result})

    def encode_error(self, cmd_id: int, error: ClientError) -> bytes:
        # Not reached: a one-way session turns a failed connect into a disconnect
        # (gateway.session.session.Session.fail); kept total for the Codec protocol.
        return orjson.dumps({"disconnect": {"code": 3004, "reason": "internal server error"}})

    def encode_push(self, channel: str, kind: str, body: dict[str, Any]) -> bytes:
        if channel:
            return _prefix(channel) + b'"' + kind.encode() + b'":' + dumps(body) + b"}"
        return b'{"' + kind.encode() + b'":' + dumps(body) + b"}"

    def publication_push(self, channel: str, pub: Publication) -> bytes:
        return _prefix(channel) + b'"pub":' + encode_model_publication(pub) + b"}"

    def delta_publication_push(self, channel: str, payload: DeltaPayload) -> bytes:
        # One-way clients subscribe server-side only and never negotiate deltas; the hub asks
        # for this only for delta subscribers, so it is here to satisfy the codec contract.
        return _prefix(channel) + b'"pub":' + encode_delta_publication(payload) + b"}"

    def join_push(self, channel: str, info: ClientInfo) -> bytes:
        return _prefix(channel) + b'"join":{"info":' + encode_client_info(info) + b"}}"

    def leave_push(self, channel: str, info: ClientInfo) -> bytes:
        return _prefix(channel) + b'"leave":{"info":' + encode_client_info(info) + b"}}"


UNI_JSON = UniJsonCodec()
