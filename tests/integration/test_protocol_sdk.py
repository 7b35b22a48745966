"""The Centrifugo protocol end to end, driven by the real centrifuge-python SDK against
``shardgate serve --workers 2``, every test over both client protocols: JSON and protobuf
(``centrifuge-protobuf``, the SDK's ``use_protobuf=True``; see ``sdk.ProtobufJsonClient``)."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import Iterator

import pytest
from centrifuge import ClientDisconnectedError, SubscriptionState
from centrifuge.exceptions import ReplyError

from sharding.hashing import owner
from tests.conftest import Gateway, base_config, wait_for
from tests.integration import sdk
from tests.integration.sdk import (
    SubEvents,
    client_class,
    connect,
    connect_on_slot,
    disconnect_all,
    slot,
    subscribe,
    token,
)


@pytest.fixture(autouse=True, params=sdk.PROTOCOLS)
def sdk_protocol(request: pytest.FixtureRequest) -> Iterator[str]:
    sdk.protocol = request.param
    yield request.param
    sdk.protocol = "json"


def channel_owned_by(slot_number: int, workers: int = 2, prefix: str = "room") -> str:
    while True:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        if owner(name, workers) == slot_number:
            return name


async def test_cross_shard_fanout_in_order(gateway: Gateway) -> None:
    """>= 20 subscribers over both workers get every publication in order with consecutive
    offsets, while the publisher sits on the worker that does not own the channel."""
    channel = channel_owned_by(0)
    publisher, _ = await connect_on_slot(gateway.url, 1, user="pub")
    subscribers = []
    for i in range(24):
        client, _ = await connect(gateway.url, user=f"s{i}")
        _, events = await subscribe(client, channel)
        subscribers.append((client, events))
    slots = {slot(c) for c, _ in subscribers}
    assert slots == {0, 1}, f"subscribers must sit on both workers, got {slots}"
    assert slot(publisher) != owner(channel, 2)
    try:
        for k in range(50):
            await publisher.publish(channel, {"k": k})
        await wait_for(lambda: all(len(e.pubs) == 50 for _, e in subscribers), what="all publications")
        for _, events in subscribers:
            assert [d["k"] for _, d in events.pubs] == list(range(50))
            assert [o for o, _ in events.pubs] == list(range(1, 51))
    finally:
        await disconnect_all(publisher, *(c for c, _ in subscribers))


async def test_presence_stats_history(gateway: Gateway) -> None:
    channel = channel_owned_by(1)
    a, _ = await connect_on_slot(gateway.url, 0, user="alice")
    b, _ = await connect_on_slot(gateway.url, 1, user="bob")
    try:
        sa, _ = await subscribe(a, channel)
        sb, _ = await subscribe(b, channel)
        presence = await sa.presence()
        assert {i.user for i in presence.clients.values()} == {"alice", "bob"}
        assert set(presence.clients) == {a.client_id, b.client_id}
        stats = await sa.presence_stats()
        assert (stats.num_clients, stats.num_users) == (2, 2)
        for k in range(10):
            await a.publish(channel, {"k": k})
        hist = await sa.history(limit=3)
        assert [p.offset for p in hist.publications] == [1, 2, 3]
        assert hist.offset == 10 and hist.epoch
        hist = await sa.history(limit=3, reverse=True)
        assert [p.offset for p in hist.publications] == [10, 9, 8]
        from centrifuge import StreamPosition

        hist2 = await sb.history(limit=-1, since=StreamPosition(offset=7, epoch=hist.epoch))
        assert [p.data["k"] for p in hist2.publications] == [7, 8, 9]
        assert hist2.publications[0].info.user == "alice"
        with pytest.raises(ReplyError) as err:
            await sb.history(limit=5, since=StreamPosition(offset=1, epoch="wrong"))
        assert err.value.code == 112
        await sb.unsubscribe()
        await wait_for(lambda: True)
        stats = await sa.presence_stats()
        assert (stats.num_clients, stats.num_users) == (1, 1)
    finally:
        await disconnect_all(a, b)


async def test_join_leave_pushes(gateway: Gateway) -> None:
    channel = channel_owned_by(0)
    a, _ = await connect_on_slot(gateway.url, 1, user="alice")
    _, ea = await subscribe(a, channel)
    b, _ = await connect(gateway.url, user="bob")
    await subscribe(b, channel)
    try:
        await wait_for(lambda: b.client_id in ea.joins, what="join push")
        await b.disconnect()
        await wait_for(lambda: b.client_id in ea.leaves, what="leave push")
    finally:
        await disconnect_all(a, b)


async def test_recovery_after_reconnect(gateway: Gateway) -> None:
    """A client that missed publications reconnects and gets exactly those, recovered."""
    channel = channel_owned_by(1)
    publisher, _ = await connect_on_slot(gateway.url, 0, user="pub")
    client, _ = await connect(gateway.url, user="sub")
    _, events = await subscribe(client, channel)
    try:
        for k in range(3):
            await publisher.publish(channel, {"k": k})
        await wait_for(lambda: len(events.pubs) == 3, what="first publications")
        await client.disconnect()
        for k in range(3, 7):
            await publisher.publish(channel, {"k": k})
        await client.connect()
        await wait_for(lambda: len(events.subscribed) == 2, what="resubscribed")
        again = events.subscribed[-1]
        assert again.was_recovering and again.recovered
        await wait_for(lambda: len(events.pubs) == 7, what="recovered publications")
        assert events.pubs == [(i + 1, {"k": i}) for i in range(7)]
        await publisher.publish(channel, {"k": 7})
        await wait_for(lambda: len(events.pubs) == 8, what="live after recovery")
        assert events.pubs[-1] == (8, {"k": 7})
    finally:
        await disconnect_all(publisher, client)


async def test_owner_killed_gives_new_epoch_not_recovered(gateway: Gateway) -> None:
    owner_slot = 1
    channel = channel_owned_by(owner_slot)
    client, _ = await connect_on_slot(gateway.url, 0, user="sub")
    sub, events = await subscribe(client, channel)
    try:
        for k in range(3):
            await client.publish(channel, {"k": k})
        await wait_for(lambda: len(events.pubs) == 3, what="publications")
        old_epoch = events.subscribed[0].stream_position.epoch
        old_pid = gateway.slot_pids()[owner_slot]
        os.kill(old_pid, signal.SIGKILL)
        await wait_for(lambda: gateway.slot_pids().get(owner_slot, old_pid) != old_pid, timeout=10,
                       what="slot restarted")
        await wait_for(lambda: len(events.subscribed) >= 2 and sub.state == SubscriptionState.SUBSCRIBED,
                       timeout=15, what="resubscribed after owner restart")
        again = events.subscribed[-1]
        assert again.was_recovering
        assert not again.recovered
        assert again.stream_position.epoch != old_epoch
        await client.publish(channel, {"k": "after"})
        await wait_for(lambda: events.pubs[-1][1] == {"k": "after"}, what="publication after restart")
        assert events.pubs[-1][0] == 1
    finally:
        await disconnect_all(client)


async def test_connect_token_errors(gateway: Gateway) -> None:
    # 109 makes the SDK drop the token and ask for a new one, then connect with it.
    asked = []

    async def get_token() -> str:
        asked.append(1)
        return token("u")

    client, _ = await connect(gateway.url, user="u", token=token("u", ttl=-10), get_token=get_token)
    assert asked == [1]
    await client.disconnect()

    from tests.integration.sdk import ClientEvents

    events = ClientEvents()
    bad = client_class()(gateway.url, token="not.a.jwt", events=events, timeout=5)
    await bad.connect()
    await wait_for(lambda: bool(events.disconnected), what="disconnect for a bad token")
    assert events.disconnected[-1].code == 3500
    await bad.disconnect()


async def test_private_channel_needs_subscription_token(gateway: Gateway) -> None:
    client, _ = await connect(gateway.url, user="u1")
    try:
        events = SubEvents()
        sub = client.new_subscription("$secret", events)
        await sub.subscribe()  # the SDK reports the 103 through on_unsubscribed
        await wait_for(lambda: bool(events.unsubscribed), what="unsubscribed on 103")
        assert events.unsubscribed[-1].code == 103
        _, ok = await subscribe(client, "$secret2", token=token("u1", channel="$secret2", info={"role": "x"}))
        assert ok.subscribed
    finally:
        await disconnect_all(client)


async def test_rpc_echo_and_unknown_method(gateway: Gateway) -> None:
    client, _ = await connect(gateway.url, user="u1")
    try:
        result = await client.rpc("echo", {"x": [1, 2]})
        assert result.data == {"x": [1, 2]}
        with pytest.raises(ReplyError) as err:
            await client.rpc("nope", {})
        assert err.value.code == 104
    finally:
        await disconnect_all(client)


async def test_refresh_of_expiring_connection(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    gw = gateway_factory()
    calls = []

    async def get_token() -> str:
        calls.append(1)
        return token("u1", ttl=2)

    client, events = await connect(gw.url, user="u1", token=token("u1", ttl=2), get_token=get_token)
    try:
        # The SDK refreshes before ttl runs out; the connection must stay up past expiry.
        await wait_for(lambda: len(calls) >= 1, timeout=10, what="refresh requested")
        await asyncio.sleep(0)
        assert not events.disconnected
        assert len(events.connected) == 1
    finally:
        await disconnect_all(client)


async def test_graceful_shutdown_sends_3001(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    gw = gateway_factory()
    client, events = await connect(gw.url, user="u1")
    try:
        gw.proc.send_signal(signal.SIGTERM)
        await wait_for(lambda: any(c.code == 3001 for c in events.connecting), timeout=10,
                       what="close 3001 shutdown (the SDK reconnects)")
        assert [c.reason for c in events.connecting if c.code == 3001] == ["shutdown"]
        assert gw.proc.wait(timeout=15) == 0
    finally:
        await disconnect_all(client)


def test_client_disconnected_error_import() -> None:
    assert ClientDisconnectedError  # the SDK API the tests rely on exists


def test_base_config_is_valid() -> None:
    from gateway.config import parse_config

    parse_config(base_config())


async def test_server_side_subscriptions_from_token(gateway: Gateway) -> None:
    """The connection token's ``channels`` claim subscribes on connect (connect ``subs``);
    publications arrive as server-side publications, and recover after a reconnect."""
    from centrifuge import (
        ClientEventHandler,
        ServerPublicationContext,
        ServerSubscribedContext,
    )

    channel = channel_owned_by(1)
    pubs: list[tuple[str, int, object]] = []
    subscribed: list[ServerSubscribedContext] = []

    class Events(ClientEventHandler):  # type: ignore[misc]
        async def on_subscribed(self, ctx: ServerSubscribedContext) -> None:
            subscribed.append(ctx)

        async def on_publication(self, ctx: ServerPublicationContext) -> None:
            pubs.append((ctx.channel, ctx.pub.offset, ctx.pub.data))

    client = client_class()(gateway.url, events=Events(), token=token("srv", channels=[channel]), timeout=5,
                            min_reconnect_delay=0.05, max_reconnect_delay=0.5)
    publisher, _ = await connect_on_slot(gateway.url, 0, user="pub")
    try:
        await client.connect()
        await wait_for(lambda: bool(subscribed), what="server-side subscribed")
        assert subscribed[0].channel == channel and subscribed[0].recoverable
        await publisher.publish(channel, {"k": 1})
        await wait_for(lambda: len(pubs) == 1, what="server-side publication")
        assert pubs[0] == (channel, 1, {"k": 1})
        await client.disconnect()
        await publisher.publish(channel, {"k": 2})
        await client.connect()
        await wait_for(lambda: len(subscribed) == 2 and len(pubs) == 2, what="recovered server-side publication")
        assert subscribed[-1].was_recovering and subscribed[-1].recovered
        assert pubs[1] == (channel, 2, {"k": 2})
    finally:
        await disconnect_all(client, publisher)


async def test_rpc_handlers_from_config(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    handlers = {"whoami": "tests.integration.rpc_handlers:whoami",
                "add": "tests.integration.rpc_handlers:slow_add",
                "refuse": "tests.integration.rpc_handlers:refuse",
                "crash": "tests.integration.rpc_handlers:crash"}
    gw = gateway_factory(base_config(shardgate={"rpc_handlers": handlers, "rpc_echo": False}))
    client, _ = await connect(gw.url, user="ann", token=token("ann", info={"plan": "pro"}))
    try:
        who = await client.rpc("whoami", [1])
        assert who.data == {"user": "ann", "client": client.client_id, "info": {"plan": "pro"}, "got": [1]}
        assert (await client.rpc("add", {"numbers": [1, 2, 3]})).data == {"sum": 6}
        with pytest.raises(ReplyError) as err:
            await client.rpc("refuse", None)
        assert (err.value.code, err.value.message) == (403, "not for you")
        with pytest.raises(ReplyError) as err:
            await client.rpc("crash", None)
        assert err.value.code == 100 and "handler bug" not in err.value.message
        with pytest.raises(ReplyError) as err:
            await client.rpc("echo", None)  # the built-in echo is off unless rpc_echo is set
        assert err.value.code == 104
    finally:
        await disconnect_all(client)
