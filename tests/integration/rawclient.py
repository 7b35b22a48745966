"""Raw clients for hostile-input tests.

:class:`RawWS` speaks RFC 6455 by hand over an asyncio TCP stream, so a test can send
what a well-behaved library refuses to: RSV bits, invalid UTF-8 in a TEXT frame, a
continuation without a start, arbitrary fragmentation, a custom upgrade request.
Client frames are always masked unless a test asks otherwise.

:class:`JsonClient` is a small, well-behaved Centrifugo JSON protocol client on the
``websockets`` library (answers server pings, buffers pushes, matches replies by id).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import itertools
import json
import os
import struct
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import scaled

__all__ = [
    "OP_CONT", "OP_TEXT", "OP_BINARY", "OP_CLOSE", "OP_PING", "OP_PONG",
    "build_frame", "RawWS", "HandshakeResponse", "JsonClient", "Closed",
]

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def _mask(payload: bytes, key: bytes) -> bytes:
    if not payload:
        return b""
    n = len(payload)
    repeated = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big")


def build_frame(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, mask: bool = True) -> bytes:
    """One WebSocket frame; ``rsv`` is the 3-bit RSV1..RSV3 field (4 = RSV1 only)."""
    head = bytearray([(0x80 if fin else 0) | ((rsv & 0x7) << 4) | (opcode & 0xF)])
    n = len(payload)
    mask_bit = 0x80 if mask else 0
    if n < 126:
        head.append(mask_bit | n)
    elif n < 65536:
        head.append(mask_bit | 126)
        head += struct.pack("!H", n)
    else:
        head.append(mask_bit | 127)
        head += struct.pack("!Q", n)
    if not mask:
        return bytes(head) + payload
    key = os.urandom(4)
    return bytes(head) + key + _mask(payload, key)


@dataclass
class HandshakeResponse:
    status: int
    reason: str
    headers: dict[str, str]  # lower-cased names
    body: bytes = b""


@dataclass
class Closed:
    """What a raw connection saw up to and including the server's CLOSE frame."""

    code: int | None
    reason: str
    messages: list[bytes] = field(default_factory=list)


class RawWS:
    """A hand-rolled WebSocket client connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 handshake: HandshakeResponse) -> None:
        self.reader = reader
        self.writer = writer
        self.handshake = handshake
        self._ids = itertools.count(1)

    # -- opening --------------------------------------------------------------------------------

    @staticmethod
    def default_headers(url: str) -> dict[str, str]:
        parts = urlsplit(url)
        return {
            "Host": parts.netloc,
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
            "Sec-WebSocket-Version": "13",
        }

    @classmethod
    async def handshake_only(cls, url: str, headers: dict[str, str] | list[tuple[str, str]] | None = None,
                             path: str | None = None,
                             timeout: float = 5.0) -> tuple[HandshakeResponse, RawWS | None]:
        """Send an upgrade request; return the response, and a RawWS when it was a 101.
        ``headers`` as a list of pairs may repeat a name or leave one out (``Host`` included)."""
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        pairs = list((headers if headers is not None else cls.default_headers(url)).items()) \
            if not isinstance(headers, list) else headers
        target = path if path is not None else (parts.path or "/")
        request = f"GET {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in pairs) + "\r\n"

        async def go() -> tuple[HandshakeResponse, RawWS | None]:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(request.encode("latin-1"))
            await writer.drain()
            raw = await reader.readuntil(b"\r\n\r\n")
            lines = raw.decode("latin-1").split("\r\n")
            _, status, *reason = lines[0].split(" ", 2)
            resp_headers: dict[str, str] = {}
            for line in lines[1:]:
                if ":" in line:
                    name, value = line.split(":", 1)
                    resp_headers[name.strip().lower()] = value.strip()
            resp = HandshakeResponse(int(status), reason[0] if reason else "", resp_headers)
            if resp.status != 101:
                length = int(resp_headers.get("content-length", "0") or 0)
                if length:
                    resp.body = await reader.readexactly(length)
                writer.close()
                return resp, None
            key = next((v for k, v in pairs if k.lower() == "sec-websocket-key"), "")
            expected = base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()
            assert resp_headers.get("sec-websocket-accept") == expected, resp_headers
            return resp, cls(reader, writer, resp)

        return await asyncio.wait_for(go(), scaled(timeout))

    @classmethod
    async def open(cls, url: str, headers: dict[str, str] | None = None, timeout: float = 5.0) -> RawWS:
        resp, ws = await cls.handshake_only(url, headers, timeout=timeout)
        assert ws is not None, f"upgrade refused: {resp.status} {resp.reason} {resp.body!r}"
        return ws

    # -- frames ---------------------------------------------------------------------------------

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send_frame(self, opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0,
                         mask: bool = True) -> None:
        await self.send_raw(build_frame(opcode, payload, fin=fin, rsv=rsv, mask=mask))

    async def send_text(self, payload: bytes | str) -> None:
        await self.send_frame(OP_TEXT, payload.encode() if isinstance(payload, str) else payload)

    async def send_json(self, obj: Any) -> None:
        await self.send_text(json.dumps(obj))

    async def recv_frame(self, timeout: float = 5.0) -> tuple[bool, int, bytes]:
        """(fin, opcode, payload) of the next server frame."""

        async def go() -> tuple[bool, int, bytes]:
            b0, b1 = await self.reader.readexactly(2)
            assert not b1 & 0x80, "server frames must not be masked"
            n = b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
            return bool(b0 & 0x80), b0 & 0x0F, await self.reader.readexactly(n)

        return await asyncio.wait_for(go(), scaled(timeout))

    async def recv_message(self, timeout: float = 5.0) -> bytes:
        """The next complete TEXT message (server pings are answered, pongs skipped)."""
        parts: list[bytes] = []
        while True:
            fin, op, payload = await self.recv_frame(timeout)
            if op == OP_PING:
                await self.send_frame(OP_PONG, payload)
                continue
            if op == OP_PONG:
                continue
            if op == OP_CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                raise AssertionError(f"server closed with {code} {payload[2:]!r}; a message was expected")
            parts.append(payload)
            if fin:
                return b"".join(parts)

    async def recv_json_lines(self, timeout: float = 5.0) -> list[dict[str, Any]]:
        data = await self.recv_message(timeout)
        return [json.loads(line) for line in data.split(b"\n") if line.strip()]

    async def recv_close(self, timeout: float = 5.0) -> Closed:
        """Read until the server's CLOSE frame; collect the data messages seen before it."""
        seen = Closed(None, "")
        while True:
            try:
                _fin, op, payload = await self.recv_frame(timeout)
            except asyncio.IncompleteReadError as exc:
                raise AssertionError(f"dropped without a CLOSE frame; saw {seen.messages!r}") from exc
            if op == OP_CLOSE:
                if len(payload) >= 2:
                    seen.code = struct.unpack("!H", payload[:2])[0]
                    seen.reason = payload[2:].decode("utf-8", "replace")
                return seen
            if op in (OP_TEXT, OP_BINARY, OP_CONT):
                seen.messages.append(payload)

    async def connect(self, token: str, timeout: float = 5.0) -> dict[str, Any]:
        """Send a connect command; return the connect result (asserting it is not an error)."""
        cmd_id = next(self._ids)
        await self.send_json({"id": cmd_id, "connect": {"token": token}})
        replies = await self.recv_json_lines(timeout)
        reply = next(r for r in replies if r.get("id") == cmd_id)
        assert "connect" in reply, reply
        result: dict[str, Any] = reply["connect"]
        return result

    def next_id(self) -> int:
        return next(self._ids)

    async def aclose(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(self.writer.wait_closed(), scaled(2))


class JsonClient:
    """A well-behaved Centrifugo JSON protocol client on ``websockets``."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self._ids = itertools.count(1)
        self.pushes: list[dict[str, Any]] = []
        self._replies: dict[int, dict[str, Any]] = {}
        self.client_id = ""

    @classmethod
    async def open(cls, url: str, **kwargs: Any) -> JsonClient:
        ws = await connect(url, max_size=2**24, ping_interval=None, compression=None,
                           open_timeout=scaled(5), close_timeout=scaled(2), **kwargs)
        return cls(ws)

    async def send(self, obj: Any) -> None:
        await self.ws.send(json.dumps(obj))

    async def _pump(self, seconds: float) -> None:
        """Receive one message (waiting at most ``seconds``, already scaled) and sort its
        lines into replies and pushes."""
        data = await asyncio.wait_for(self.ws.recv(), seconds)
        if isinstance(data, bytes):
            raise AssertionError(f"unexpected binary message {data!r}")
        for line in data.split("\n"):
            if not line.strip():
                continue
            obj = json.loads(line)
            if obj == {}:
                await self.ws.send("{}")  # server ping -> pong
            elif "push" in obj:
                self.pushes.append(obj["push"])
            elif "id" in obj:
                self._replies[obj["id"]] = obj
            else:
                raise AssertionError(f"unexpected message {line!r}")

    async def request(self, method: str, body: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """Send one command and return its whole reply ({"id", method} or {"id", "error"})."""
        cmd_id = next(self._ids)
        await self.send({"id": cmd_id, method: body})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + scaled(timeout)
        while cmd_id not in self._replies:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"no reply to {method} {body!r}")
            await self._pump(remaining)
        return self._replies.pop(cmd_id)

    async def connect(self, token: str) -> dict[str, Any]:
        reply = await self.request("connect", {"token": token})
        assert "connect" in reply, reply
        self.client_id = reply["connect"]["client"]
        result: dict[str, Any] = reply["connect"]
        return result

    async def subscribe(self, channel: str) -> dict[str, Any]:
        reply = await self.request("subscribe", {"channel": channel})
        assert "subscribe" in reply, reply
        result: dict[str, Any] = reply["subscribe"]
        return result

    async def publish(self, channel: str, data: Any) -> None:
        reply = await self.request("publish", {"channel": channel, "data": data})
        assert "publish" in reply, reply

    async def wait_publication(self, channel: str, data: Any, timeout: float = 5.0) -> dict[str, Any]:
        """Wait for a ``pub`` push on ``channel`` carrying ``data``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + scaled(timeout)
        while True:
            for push in self.pushes:
                if push.get("channel") == channel and "pub" in push and push["pub"].get("data") == data:
                    self.pushes.remove(push)
                    pub: dict[str, Any] = push["pub"]
                    return pub
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"no publication {data!r} on {channel}; pushes: {self.pushes!r}")
            await self._pump(remaining)

    async def expect_close(self, timeout: float = 5.0) -> tuple[int | None, str]:
        """Receive until the server closes; return the code and reason of its CLOSE frame."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + scaled(timeout)
        try:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise AssertionError("server did not close the connection")
                await self._pump(remaining)
        except ConnectionClosed as exc:
            if exc.rcvd is None:
                raise AssertionError(f"closed without a CLOSE frame from the server: {exc!r}") from exc
            return exc.rcvd.code, exc.rcvd.reason

    async def aclose(self) -> None:
        await self.ws.close()
