"""Tiny hand-made WebSocket client frames for tests that must control the socket."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct


def handshake(host: str, path: str = "/connection/websocket", extra: str = "") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n").encode()


def client_frame(payload: bytes, opcode: int = 1, fin: bool = True, rsv: int = 0) -> bytes:
    """A masked client frame (clients must mask, RFC 6455 §5.3)."""
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def silent_subscriber(url: str, token: str, channel: str, timeout: float) -> asyncio.StreamWriter:
    """A raw TCP client that completes the handshake, connects and subscribes, then never
    reads again (a slow reader); returns its writer, to close it."""
    host, port = url.split("//")[1].split("/")[0].split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(handshake(f"{host}:{port}"))
    writer.write(client_frame(json.dumps({"id": 1, "connect": {"token": token}}).encode()))
    writer.write(client_frame(json.dumps({"id": 2, "subscribe": {"channel": channel}}).encode()))
    await writer.drain()
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    return writer
