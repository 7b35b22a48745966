"""centrifuge-python helpers: connect real SDK clients and record what they receive."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from centrifuge import (
    Client,
    ClientEventHandler,
    ConnectedContext,
    ConnectingContext,
    DisconnectedContext,
    JoinContext,
    LeaveContext,
    PublicationContext,
    SubscribedContext,
    SubscriptionEventHandler,
    UnsubscribedContext,
)

from sharding.ids import slot_of_client
from tests.conftest import SECRET, scaled, wait_for
from tools.token import mint_token

#: The client protocols the SDK suites run over (``sdk_protocol`` fixtures set ``protocol``).
PROTOCOLS = ("json", "protobuf")
#: What :func:`connect` and :func:`client_class` use now.
protocol = "json"


class ProtobufJsonClient(Client):  # type: ignore[misc]
    """centrifuge-python over ``centrifuge-protobuf`` (``use_protobuf=True``) carrying JSON
    payloads: data goes out as the UTF-8 bytes of its JSON (what the SDK requires over
    protobuf) and comes back parsed when it is JSON, so one test body serves both protocols.
    The wire is the SDK's own protobuf codec; only its payload hooks are wrapped."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, use_protobuf=True, **kwargs)

    def _encode_data(self, data: Any) -> Any:
        if not isinstance(data, bytes):
            data = json.dumps(data).encode()
        return super()._encode_data(data)

    def _decode_data(self, data: Any) -> Any:
        raw = super()._decode_data(data)
        if isinstance(raw, bytes):
            try:
                return json.loads(raw)
            except ValueError:
                return raw
        return raw


def client_class() -> type[Client]:
    """The SDK client class for :data:`protocol`."""
    return ProtobufJsonClient if protocol == "protobuf" else Client


@dataclass
class ClientEvents(ClientEventHandler):  # type: ignore[misc]
    connected: list[ConnectedContext] = field(default_factory=list)
    disconnected: list[DisconnectedContext] = field(default_factory=list)
    connecting: list[ConnectingContext] = field(default_factory=list)

    async def on_connecting(self, ctx: ConnectingContext) -> None:
        self.connecting.append(ctx)

    async def on_connected(self, ctx: ConnectedContext) -> None:
        self.connected.append(ctx)

    async def on_disconnected(self, ctx: DisconnectedContext) -> None:
        self.disconnected.append(ctx)


@dataclass
class SubEvents(SubscriptionEventHandler):  # type: ignore[misc]
    pubs: list[tuple[int, Any]] = field(default_factory=list)
    joins: list[str] = field(default_factory=list)
    leaves: list[str] = field(default_factory=list)
    subscribed: list[SubscribedContext] = field(default_factory=list)
    unsubscribed: list[UnsubscribedContext] = field(default_factory=list)

    async def on_publication(self, ctx: PublicationContext) -> None:
        self.pubs.append((ctx.pub.offset, ctx.pub.data))

    async def on_join(self, ctx: JoinContext) -> None:
        self.joins.append(ctx.info.client)

    async def on_leave(self, ctx: LeaveContext) -> None:
        self.leaves.append(ctx.info.client)

    async def on_subscribed(self, ctx: SubscribedContext) -> None:
        self.subscribed.append(ctx)

    async def on_unsubscribed(self, ctx: UnsubscribedContext) -> None:
        self.unsubscribed.append(ctx)


def token(user: str, ttl: float | None = 3600, **claims: Any) -> str:
    return mint_token(SECRET, user=user, exp_seconds=ttl, **claims)


async def connect(url: str, user: str = "user", **kwargs: Any) -> tuple[Client, ClientEvents]:
    events = ClientEvents()
    kwargs.setdefault("token", token(user))
    client = client_class()(url, events=events, timeout=scaled(5), min_reconnect_delay=0.05,
                            max_reconnect_delay=0.5, **kwargs)
    await client.connect()
    await wait_for(lambda: bool(events.connected), what="connected")
    return client, events


def slot(client: Client) -> int:
    value = slot_of_client(client.client_id)
    assert value is not None, client.client_id
    return value


async def connect_on_slot(url: str, want: int, user: str = "user", attempts: int = 60
                          ) -> tuple[Client, ClientEvents]:
    """Connect until the kernel's SO_REUSEPORT spread puts us on slot ``want``."""
    for _ in range(attempts):
        client, events = await connect(url, user)
        if slot(client) == want:
            return client, events
        await client.disconnect()
    raise AssertionError(f"could not land a connection on slot {want}")


async def disconnect_all(*clients: Client) -> None:
    await asyncio.gather(*(c.disconnect() for c in clients), return_exceptions=True)


async def subscribe(client: Client, channel: str, **kwargs: Any) -> tuple[Any, SubEvents]:
    """Subscribe and wait until the server confirmed it."""
    events = SubEvents()
    sub = client.new_subscription(channel, events, **kwargs)
    await sub.subscribe()
    await sub.ready(timeout=scaled(5))
    return sub, events
