"""The ZeroMQ bus between two real sockets (ipc in a temporary directory): one message per
send, a BATCH split into its envelopes in order, a bad frame dropped without losing what
follows, and a peer that is not there refused at once."""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import AsyncIterator

import pytest

from sharding.bus import ZmqBus
from sharding.envelope import Envelope, Kind, encode, encode_batch
from tests.conftest import wait_for


class Peer:
    """One slot's bus and what it received."""

    def __init__(self, path: str, peer: int, peer_path: str, loop: asyncio.AbstractEventLoop) -> None:
        self.got: list[Envelope] = []
        self.batches: list[int] = []  # envelopes per drain (the bus_batch histogram's input)
        self.bus = ZmqBus(path, {peer: peer_path}, loop, self.got.append, self.batches.append)


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Peer, Peer]]:
    loop = asyncio.get_running_loop()
    with tempfile.TemporaryDirectory(prefix="sgbus") as run_dir:  # short: ipc paths are limited to ~107 bytes
        paths = [f"{run_dir}/slot-0.ipc", f"{run_dir}/slot-1.ipc"]
        a, b = Peer(paths[0], 1, paths[1], loop), Peer(paths[1], 0, paths[0], loop)
        # ZMQ_IMMEDIATE: a send fails until the pipe is connected.
        hello = Envelope(Kind.HELLO, 0)
        await wait_for(lambda: a.bus.send(1, hello), what="the pipe to slot 1")
        await wait_for(lambda: len(b.got) == 1, what="the hello")
        b.got.clear()
        b.batches.clear()
        yield a, b
        a.bus.close()
        b.bus.close()


def _pub(offset: int) -> Envelope:
    return Envelope(Kind.PUBLICATION, 0, offset=offset, channel="room", epoch="e", payload=b"p%d" % offset)


async def test_frames_arrive_as_envelopes_in_order(pair: tuple[Peer, Peer]) -> None:
    a, b = pair
    assert a.bus.send_frames(1, [encode(_pub(i)) for i in range(1, 6)])  # one BATCH message
    assert a.bus.send_frames(1, [encode(_pub(6))])  # one envelope: sent as it is
    assert a.bus.send(1, Envelope(Kind.REPLY, 0, corr=9))
    await wait_for(lambda: len(b.got) == 7, what="seven envelopes")
    assert [e.offset for e in b.got[:6]] == [1, 2, 3, 4, 5, 6]
    assert b.got[0].payload == b"p1" and b.got[0].channel == "room" and b.got[0].origin == 0
    assert b.got[6].kind is Kind.REPLY
    assert sum(b.batches) == 7  # the batch histogram counts envelopes, not messages


async def test_bad_batch_is_dropped_and_the_next_message_arrives(pair: tuple[Peer, Peer],
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    a, b = pair
    caplog.set_level(logging.WARNING, "shardgate.bus")
    cut = encode_batch([encode(_pub(1)), encode(_pub(2))])[:-1]  # the last envelope runs past the frame
    assert a.bus.send_frames(1, [cut])
    assert a.bus.send_frames(1, [encode(_pub(3))])
    await wait_for(lambda: len(b.got) == 1, what="the message after the bad one")
    assert b.got[0].offset == 3
    assert any("dropped a bad bus message" in r.getMessage() for r in caplog.records)


async def test_unknown_slot_is_refused(pair: tuple[Peer, Peer]) -> None:
    a, _ = pair
    assert not a.bus.send_frames(5, [encode(_pub(1))])
