"""The pub/sub link's subscription bookkeeping, against a scripted fake connection: a
subscribe is confirmed only by a SUBSCRIBE reply that no UNSUBSCRIBE follows, so
subscribe → unsubscribe → subscribe of one channel in quick succession never reports
"subscribed" while Redis is about to drop the subscription."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.engine.redis.pubsub import PubSubLink


class FakePubSub:
    """Records commands; replies come from a queue the test feeds (in Redis' order)."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, ...]] = []
        self.replies: asyncio.Queue[list[bytes]] = asyncio.Queue()

    async def connect(self) -> None:
        pass

    async def execute_command(self, *args: str) -> None:
        self.commands.append(args)

    async def parse_response(self, block: bool = True) -> list[bytes]:
        return await self.replies.get()

    async def aclose(self) -> None:
        pass

    def answer(self, kind: bytes, *names: str) -> None:
        for name in names:
            self.replies.put_nowait([kind, name.encode(), b"1"])


def _never(payload: bytes) -> asyncio.Future[Any]:
    return asyncio.get_running_loop().create_future()


async def _link(ps: FakePubSub) -> PubSubLink:
    link = PubSubLink(0, lambda: ps, asyncio.get_running_loop(), dispatch=lambda c, d: None, on_resubscribed=None,
                      probe_channel="probe", publish_probe=_never, always=(), probe_interval=3600,
                      probe_timeout=3600, connect_timeout=1, io_timeout=5)
    await link.start()
    ps.answer(b"subscribe", "probe")
    await _settle()
    return link


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_subscribe_unsubscribe_subscribe_waits_for_the_last_subscribe() -> None:
    ps = FakePubSub()
    link = await _link(ps)
    first = link.subscribe("ch")
    await _settle()
    link.unsubscribe("ch")
    await _settle()
    second = link.subscribe("ch")
    await _settle()
    assert [c[0] for c in ps.commands[-3:]] == ["SUBSCRIBE", "UNSUBSCRIBE", "SUBSCRIBE"]
    ps.answer(b"subscribe", "ch")  # the first SUBSCRIBE: an UNSUBSCRIBE is still to come
    await _settle()
    assert not second.done()
    ps.answer(b"unsubscribe", "ch")
    await _settle()
    assert not second.done()
    ps.answer(b"subscribe", "ch")  # now Redis holds the subscription for good
    await _settle()
    assert second.done() and "ch" in link.confirmed
    assert first.done()
    await link.close()


async def test_a_confirmed_subscription_answers_at_once() -> None:
    ps = FakePubSub()
    link = await _link(ps)
    fut = link.subscribe("ch")
    await _settle()
    ps.answer(b"subscribe", "ch")
    await _settle()
    assert fut.done()
    again = link.subscribe("ch")
    assert again.done()  # nothing in flight: no round trip needed
    await link.close()


async def test_resubscribing_while_an_unsubscribe_is_in_flight_waits() -> None:
    ps = FakePubSub()
    link = await _link(ps)
    link.subscribe("ch")
    await _settle()
    ps.answer(b"subscribe", "ch")
    await _settle()
    link.unsubscribe("ch")
    await _settle()  # UNSUBSCRIBE sent, not answered: "ch" still looks confirmed
    fut = link.subscribe("ch")
    assert not fut.done()
    await _settle()
    ps.answer(b"unsubscribe", "ch")
    ps.answer(b"subscribe", "ch")
    await _settle()
    assert fut.done()
    await link.close()
