"""The inter-worker bus over ZeroMQ ipc: the only module that imports zmq.

Each slot binds one PULL socket at ``<runtime_dir>/slot-<i>.ipc`` and connects one PUSH
socket to every other slot. Everything one worker sends another (requests, replies and
channel fan-out alike) therefore travels one ordered pipe, so a subscribe reply and the
publications after it arrive in the order the owner produced them. The owner only sends
a channel's publications to slots that told it they have subscribers, which is the
filtering that PUB/SUB topics would give, without the reply/stream ordering race of a
second socket. PUSH sockets use ZMQ_IMMEDIATE so a dead peer is refused at once
(the caller answers a temporary error) instead of queueing for a future incarnation.

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

from sharding.envelope import Envelope, EnvelopeError, decode, encode

__all__ = ["ZmqBus", "endpoint"]

log = logging.getLogger("shardgate.bus")

_HWM = 200_000
_BATCH = 512


def endpoint(runtime_dir: str, slot: int) -> str:
    return f"ipc://{os.path.join(runtime_dir, f'slot-{slot}.ipc')}"


class ZmqBus:
    """Create after fork: one zmq Context per process."""

    def __init__(self, runtime_dir: str, slot: int, workers: int, loop: asyncio.AbstractEventLoop,
                 on_envelope: Callable[[Envelope], None]) -> None:
        self._loop = loop
        self._on_envelope = on_envelope
        self._slot = slot
        self._ctx = zmq.Context()
        self.bad_envelopes = 0
        path = os.path.join(runtime_dir, f"slot-{slot}.ipc")
        if os.path.exists(path):
            os.unlink(path)  # left by a previous incarnation of this slot
        self._pull = self._ctx.socket(zmq.PULL)
        self._pull.setsockopt(zmq.RCVHWM, _HWM)
        self._pull.setsockopt(zmq.LINGER, 0)
        self._pull.bind(endpoint(runtime_dir, slot))
        self._push: dict[int, zmq.Socket[bytes]] = {}
        for peer in range(workers):
            if peer == slot:
                continue
            sock = self._ctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.SNDHWM, _HWM)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.IMMEDIATE, 1)
            sock.setsockopt(zmq.RECONNECT_IVL, 20)
            sock.setsockopt(zmq.RECONNECT_IVL_MAX, 500)
            sock.connect(endpoint(runtime_dir, peer))
            self._push[peer] = sock
        self._fd = cast(int, self._pull.getsockopt(zmq.FD))
        loop.add_reader(self._fd, self._drain)
        loop.call_soon(self._drain)
        self._drain_scheduled = False

    def send(self, slot: int, env: Envelope) -> bool:
        sock = self._push.get(slot)
        if sock is None:
            return False
        try:
            sock.send_multipart(encode(env), flags=zmq.NOBLOCK, copy=True)
        except zmq.Again:
            return False
        return True

    def _drain(self) -> None:
        self._drain_scheduled = False
        pull = self._pull
        for _ in range(_BATCH):
            if not cast(int, pull.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
                return
            try:
                frames = pull.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                env = decode(frames)
            except EnvelopeError as exc:
                self.bad_envelopes += 1
                log.warning("dropped a bad bus message: %s", exc)
                continue
            try:
                self._on_envelope(env)
            except Exception:
                log.exception("bus message handler failed")
        # More may be waiting; the edge-triggered FD will not tell us again, so come back
        # after letting the rest of the loop run.
        if not self._drain_scheduled:
            self._drain_scheduled = True
            self._loop.call_soon(self._drain)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._loop.remove_reader(self._fd)
        for sock in self._push.values():
            sock.close(linger=0)
        self._pull.close(linger=0)
        self._ctx.term()
