"""The inter-worker bus over ZeroMQ ipc: the only module that imports zmq.

Each worker binds one PULL socket at an endpoint of its own incarnation
(``<runtime_dir>/slot-<i>-g<generation>.ipc``) and connects one PUSH socket to every
other slot's current endpoint. Everything one worker sends another (requests, replies
and channel fan-out alike) therefore travels one ordered pipe, so a subscribe reply and
the publications after it arrive in the order the owner produced them. The owner only
sends a channel's publications to slots that told it they have subscribers, which is the
filtering PUB/SUB topics would give, without the reply/stream ordering race of a second
socket. A restarted or reloaded worker announces its new endpoint (HELLO) and peers
reconnect their PUSH to it; an old and a new incarnation of a slot can therefore live
side by side during a reload. PUSH sockets use ZMQ_IMMEDIATE so a dead peer is refused
at once (the caller answers a temporary error) instead of queueing.

Plain (non-asyncio) zmq sockets are driven by the loop's reader on ``zmq.FD``; that FD
is edge-triggered, so the reader drains until ``EVENTS`` shows no input.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from typing import cast

import zmq

from sharding.envelope import Envelope, EnvelopeError, Kind, decode, encode, encode_batch, split_batch

__all__ = ["ZmqBus", "endpoint_path"]

log = logging.getLogger("shardgate.bus")

_HWM = 200_000
_BATCH = 512


def endpoint_path(runtime_dir: str, slot: int, generation: int) -> str:
    return os.path.join(runtime_dir, f"slot-{slot}-g{generation}.ipc")


def _url(path: str) -> str:
    return f"ipc://{path}"


class ZmqBus:
    """Create after fork: one zmq Context per process."""

    def __init__(self, own_endpoint: str, peers: dict[int, str], loop: asyncio.AbstractEventLoop,
                 on_envelope: Callable[[Envelope], None], on_batch: Callable[[int], None] | None = None) -> None:
        self._loop = loop
        self._on_envelope = on_envelope
        self._on_batch = on_batch
        self._ctx = zmq.Context()
        self.endpoint = own_endpoint
        if os.path.exists(own_endpoint):
            os.unlink(own_endpoint)  # left by a crashed process of an earlier run
        self._pull = self._ctx.socket(zmq.PULL)
        self._pull.setsockopt(zmq.RCVHWM, _HWM)
        self._pull.setsockopt(zmq.LINGER, 0)
        self._pull.bind(_url(own_endpoint))
        self._push: dict[int, zmq.Socket[bytes]] = {}
        self._peer_endpoint: dict[int, str] = {}
        for peer, path in peers.items():
            self.connect_peer(peer, path)
        self._fd = cast(int, self._pull.getsockopt(zmq.FD))
        self._drain_scheduled = False
        loop.add_reader(self._fd, self._drain)
        loop.call_soon(self._drain)

    def _push_socket(self, path: str) -> zmq.Socket[bytes]:
        sock = self._ctx.socket(zmq.PUSH)
        sock.setsockopt(zmq.SNDHWM, _HWM)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.RECONNECT_IVL, 20)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 500)
        sock.connect(_url(path))
        return sock

    def connect_peer(self, slot: int, path: str) -> None:
        """Point the link to ``slot`` at ``path`` (a peer's new incarnation)."""
        if self._peer_endpoint.get(slot) == path:
            return
        old = self._push.get(slot)
        self._push[slot] = self._push_socket(path)
        self._peer_endpoint[slot] = path
        if old is not None:
            old.close(linger=0)

    def send(self, slot: int, env: Envelope) -> bool:
        return self._send(slot, encode(env))

    def send_frames(self, slot: int, frames: list[bytes]) -> bool:
        """Send encoded envelopes to ``slot`` as one message (a BATCH when more than one)."""
        return self._send(slot, frames[0] if len(frames) == 1 else encode_batch(frames))

    def _send(self, slot: int, frame: bytes) -> bool:
        sock = self._push.get(slot)
        if sock is None:
            return False
        try:
            sock.send(frame, flags=zmq.NOBLOCK, copy=True)
        except zmq.Again:
            return False
        return True

    def send_all_to(self, path: str, envelopes: list[Envelope], timeout: float) -> bool:
        """Deliver ``envelopes`` in order to the worker bound at ``path`` (a reload successor),
        blocking until they left this process or ``timeout`` passed."""
        sock = self._ctx.socket(zmq.PUSH)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.SNDTIMEO, int(timeout * 1000))
        sock.connect(_url(path))
        try:
            for env in envelopes:
                sock.send(encode(env), copy=True)
        except zmq.Again:
            sock.close(linger=0)
            return False
        sock.close(linger=int(timeout * 1000))
        return True

    def _drain(self) -> None:
        self._drain_scheduled = False
        pull = self._pull
        count = 0
        for _ in range(_BATCH):
            if not cast(int, pull.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
                break
            try:
                frame = pull.recv(flags=zmq.NOBLOCK)
            except zmq.Again:
                break
            try:
                env = decode(frame)
                if env.kind is Kind.BATCH:
                    for one in split_batch(env.payload):
                        count += 1
                        self._handle(decode(one))
                    continue
            except EnvelopeError as exc:
                log.warning("dropped a bad bus message: %s", exc)
                continue
            count += 1
            self._handle(env)
        else:
            # More may be waiting; the edge-triggered FD will not tell us again, so come
            # back after letting the rest of the loop run.
            if not self._drain_scheduled:
                self._drain_scheduled = True
                self._loop.call_soon(self._drain)
        if count and self._on_batch is not None:
            self._on_batch(count)

    def _handle(self, env: Envelope) -> None:
        try:
            self._on_envelope(env)
        except Exception:
            log.exception("bus message handler failed")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._loop.remove_reader(self._fd)
        for sock in self._push.values():
            sock.close(linger=0)
        self._pull.close(linger=0)
        self._ctx.term()
        with contextlib.suppress(OSError):
            os.unlink(self.endpoint)
