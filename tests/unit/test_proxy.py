"""The proxy without sockets: config resolution, request building, answer decoding, the
failure classification of ProxyClient, and sessions on a real one-worker Node whose proxy
caller is a fake that the test answers by hand."""

from __future__ import annotations

import asyncio
import base64
import random
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from gateway.config import ConfigError, ConfigErrors, ProxyEndpoint, parse_config
from gateway.core.errors import ERROR_INTERNAL, ClientError, Disconnect
from gateway.node import Node
from gateway.proxy import messages
from gateway.proxy.caller import CallDone, ProxyFailure
from gateway.proxy.messages import ConnInfo, ProxyAnswerError
from gateway.proxy.service import ProxyClient
from gateway.session.handlers import HANDLERS
from gateway.session.session import Session
from tests.unit.test_session import FakeTransport, cmd


def rpc(cmd_id: int, method: str, data: Any = None) -> bytes:
    return orjson.dumps({"id": cmd_id, "rpc": {"method": method, "data": data}})

P = ProxyEndpoint("default", "http://backend/x")


# ------------------------------------------------------------------------------- config


def test_names_resolve_to_endpoints() -> None:
    cfg = parse_config({
        "client": {"proxy": {"connect": {"enabled": True, "endpoint": "http://b/connect", "timeout": "250ms",
                                         "http_headers": ["Cookie"]},
                             "refresh": {"endpoint": "http://b/refresh"}}},  # not enabled
        "proxies": [{"name": "p2", "endpoint": "https://other/p", "include_connection_meta": True}],
        "channel": {"proxy": {"subscribe": {"endpoint": "http://b/sub"}},
                    "namespaces": [{"name": "ns", "subscribe_proxy_enabled": True, "publish_proxy_enabled": True,
                                    "publish_proxy_name": "p2"}]},
        "rpc": {"proxy": {"endpoint": "http://b/rpc"}, "without_namespace": {"proxy_enabled": True},
                "namespaces": [{"name": "x", "proxy_enabled": True, "proxy_name": "p2"}, {"name": "off"}]},
    })
    connect = cfg.client.connect_proxy
    assert connect is not None and connect.timeout == 0.25 and connect.http_headers == ("cookie",)
    assert cfg.client.refresh_proxy is None
    ns = cfg.channel_options("ns:a")
    assert ns is not None and ns.subscribe_proxy is not None and ns.subscribe_proxy.endpoint == "http://b/sub"
    assert ns.publish_proxy is not None and ns.publish_proxy.name == "p2" and ns.publish_proxy.include_connection_meta
    assert ns.sub_refresh_proxy is None
    rpc = cfg.rpc
    assert rpc.proxied
    assert rpc.options_for("plain") is not None and rpc.options_for("plain").proxy.endpoint == "http://b/rpc"  # type: ignore[union-attr]
    assert rpc.options_for("x:y").proxy.name == "p2"  # type: ignore[union-attr]
    assert rpc.options_for("off:y").proxy is None  # type: ignore[union-attr]
    assert rpc.options_for("nowhere:y") is None
    assert cfg.warning == ""  # every key above is implemented


def test_bad_proxy_config_is_reported_at_its_key() -> None:
    with pytest.raises(ConfigErrors) as info:
        parse_config({
            "client": {"proxy": {"connect": {"enabled": True}}},
            "proxies": [{"name": "g", "endpoint": "grpc://b:1"}, {"name": "g", "endpoint": "http://b"},
                        {"name": "default", "endpoint": "http://b"}],
            "channel": {"namespaces": [{"name": "ns", "subscribe_proxy_enabled": True,
                                        "publish_proxy_enabled": True, "publish_proxy_name": "nope"}]},
        })
    keys = {e.key for e in info.value.errors}
    assert keys == {"client.proxy.connect.endpoint", "proxies[0].endpoint", "proxies[1].name", "proxies[2].name",
                    "channel.namespaces[0].subscribe_proxy_enabled", "channel.namespaces[0].publish_proxy_name"}


def test_unimplemented_proxy_keys_stay_in_the_warning() -> None:
    cfg = parse_config({"channel": {"without_namespace": {"subscribe_stream_proxy_enabled": True}},
                        "proxies": [{"name": "p", "endpoint": "http://b", "grpc": {"compression": True}}]})
    assert "channel.without_namespace.subscribe_stream_proxy_enabled" in cfg.warning
    assert "proxies[0].grpc" in cfg.warning
    with pytest.raises(ConfigError):
        parse_config({"proxies": [{"name": "p", "endpoint": "http://b", "timeot": "1s"}]})


# ------------------------------------------------------------------------------- requests


CONN = ConnInfo("c1", "u1", headers={"cookie": "s=1", "x-trace": "t"}, emulated_headers={"Authorization": "e"},
                meta={"m": 1})


def test_connect_request_shape() -> None:
    req = messages.connect_request(P, ConnInfo("c1"), {"data": {"a": 1}, "name": "js", "version": "5",
                                                       "subs": {"news": {}, "chat": {"recover": True}}})
    assert req == {"client": "c1", "transport": "websocket", "protocol": "json", "encoding": "json",
                   "data": {"a": 1}, "name": "js", "version": "5", "channels": ["news", "chat"]}
    assert "data" not in messages.connect_request(P, ConnInfo("c1"), {})  # absent stays absent
    assert messages.connect_request(P, ConnInfo("c1"), {"data": None})["data"] is None


def test_binary_encoding_and_meta() -> None:
    binary = ProxyEndpoint("b", "http://b", binary_encoding=True, include_connection_meta=True)
    req = messages.rpc_request(binary, CONN, "m", {"x": [1]})
    assert req["encoding"] == "binary" and "data" not in req
    assert orjson.loads(base64.b64decode(req["b64data"])) == {"x": [1]}
    assert req["meta"] == {"m": 1} and req["user"] == "u1" and req["method"] == "m"
    assert "meta" not in messages.rpc_request(P, CONN, "m", 1)  # include_connection_meta off
    assert messages.publish_request(P, CONN, "ch", {"d": 1}) == {
        "client": "c1", "transport": "websocket", "protocol": "json", "encoding": "json", "user": "u1",
        "channel": "ch", "data": {"d": 1}}
    sub = messages.subscribe_request(P, CONN, "ch", {"token": "tok", "data": 5})
    assert sub["token"] == "tok" and sub["data"] == 5 and sub["channel"] == "ch"
    assert messages.refresh_request(P, CONN) == {"client": "c1", "transport": "websocket", "protocol": "json",
                                                 "encoding": "json", "user": "u1"}
    assert messages.sub_refresh_request(P, CONN, "ch")["channel"] == "ch"


def test_request_headers_precedence() -> None:
    proxy = ProxyEndpoint("p", "http://b", http_headers=("cookie", "x-trace", "x-missing"),
                          static_headers=(("X-Trace", "static"), ("X-Static", "s"), ("Content-Type", "text/plain")),
                          emulated_headers=("authorization",))
    assert messages.request_headers(proxy, CONN) == {
        "X-Static": "s", "Authorization": "e", "cookie": "s=1", "x-trace": "t", "Content-Type": "application/json"}
    # Nothing listed: only Content-Type (and static headers).
    assert messages.request_headers(P, CONN) == {"Content-Type": "application/json"}


# ------------------------------------------------------------------------------- answers


def test_decode_connect_result() -> None:
    body = orjson.dumps({"result": {
        "user": "u", "expire_at": 1700000000, "info": {"i": 1}, "b64data": base64.b64encode(b'{"d":2}').decode(),
        "channels": ["a"], "subs": {"b": {"info": {"r": 1}, "data": [1], "override": {"presence": {"value": True}}}},
        "meta": {"m": 1}}})
    res = messages.decode_connect(body)
    assert res is not None
    assert (res.user, res.expire_at, res.info, res.data, res.meta) == ("u", 1700000000, {"i": 1}, {"d": 2}, {"m": 1})
    assert set(res.subs) == {"a", "b"}
    assert res.subs["b"].info == {"r": 1} and res.subs["b"].data == [1]
    assert res.subs["b"].override == {"presence": True}
    assert messages.decode_connect(b'{}') is None
    assert messages.decode_connect(b'{"result":{"user":""}}') is not None


@pytest.mark.parametrize(("body", "raised"), [
    (b'{"error":{"code":1000,"message":"no"}}', ClientError(1000, "no")),
    (b'{"error":{"code":400,"message":"x","temporary":true}}', ClientError(400, "x", True)),
    (b'{"disconnect":{"code":4500,"reason":"bye"}}', Disconnect(4500, "bye")),
    (b'{"disconnect":{"code":4000,"reason":"later"},"result":{}}', Disconnect(4000, "later")),
])
def test_decode_error_and_disconnect(body: bytes, raised: Exception) -> None:
    with pytest.raises(type(raised)) as info:
        messages.decode_rpc(body)
    assert info.value == raised


@pytest.mark.parametrize("body", [
    b"not json", b"[1]", b'{"result":5}', b'{"error":{"code":"x"}}', b'{"error":{"message":"no code"}}',
    b'{"disconnect":{"code":1000,"reason":"ws code"}}', b'{"result":{"b64data":"!!"}}',
    b'{"result":{"expire_at":"soon"}}',
])
def test_decode_garbage(body: bytes) -> None:
    with pytest.raises(ProxyAnswerError):
        messages.decode_subscribe(body) if b"expire_at" in body else messages.decode_rpc(body)


def test_decode_other_results() -> None:
    assert messages.decode_refresh(b"{}").expired
    assert messages.decode_refresh(b'{"result":{"expired":true}}').expired
    ref = messages.decode_refresh(b'{"result":{"expire_at":5,"info":{"a":1},"meta":{"m":2}}}')
    assert (ref.expired, ref.expire_at, ref.info, ref.has_info, ref.meta) == (False, 5, {"a": 1}, True, {"m": 2})
    pub = messages.decode_publish(b'{"result":{"data":{"new":1},"skip_history":true}}')
    assert (pub.data, pub.has_data, pub.skip_history) == ({"new": 1}, True, True)
    assert not messages.decode_publish(b'{"result":{}}').has_data
    assert messages.decode_rpc(b'{"result":{"data":null}}').has_data is False
    sub = messages.decode_subscribe(
        b'{"result":{"expire_at":0,"data":{"x":1},"override":{"join_leave":{"value":false}}}}')
    assert (sub.expire_at, sub.data, sub.override) == (None, {"x": 1}, {"join_leave": False})
    assert messages.decode_sub_refresh(b'{"result":{"expire_at":9}}').expire_at == 9
    assert messages.decode_sub_refresh(b'{"result":null}').expired


# ------------------------------------------------------------------------------- ProxyClient


@dataclass(eq=False)
class FakeHandle:
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class Call:
    proxy: ProxyEndpoint
    headers: Mapping[str, str]
    body: dict[str, Any]
    done: CallDone
    handle: FakeHandle

    def answer(self, obj: Any) -> None:
        self.done(orjson.dumps(obj), None)

    def fail(self, failure: ProxyFailure) -> None:
        self.done(None, failure)


@dataclass
class FakeCaller:
    calls: list[Call] = field(default_factory=list)
    closed: bool = False

    def post(self, proxy: ProxyEndpoint, headers: Mapping[str, str], body: bytes, done: CallDone) -> FakeHandle:
        handle = FakeHandle()
        self.calls.append(Call(proxy, headers, orjson.loads(body), done, handle))
        return handle

    async def close(self) -> None:
        self.closed = True


def test_client_classifies_failures() -> None:
    caller = FakeCaller()
    client = ProxyClient(caller)
    got: list[tuple[Any, Any]] = []

    def done(result: Any, error: Any) -> None:
        got.append((result, error))

    for _ in range(5):
        client.rpc(P, CONN, "m", 1, done)
    caller.calls[0].fail(ProxyFailure("timeout"))
    caller.calls[1].fail(ProxyFailure("status", 502))
    caller.calls[2].done(b"<html>", None)
    caller.calls[3].answer({"error": {"code": 1001, "message": "no"}})
    caller.calls[4].answer({"result": {"data": {"ok": True}}})
    assert [e for _, e in got[:3]] == [ERROR_INTERNAL] * 3
    assert ERROR_INTERNAL.code == 100 and ERROR_INTERNAL.temporary
    assert got[3] == (None, ClientError(1001, "no"))
    assert got[4][0].data == {"ok": True} and got[4][1] is None
    assert caller.calls[0].body["method"] == "m" and caller.calls[0].headers == {"Content-Type": "application/json"}


# ------------------------------------------------------------------------------- sessions


def proxy_config() -> Any:
    return parse_config({
        "client": {"proxy": {"connect": {"enabled": True, "endpoint": "http://b/connect", "http_headers": ["cookie"]}}},
        "channel": {"proxy": {"publish": {"endpoint": "http://b/publish"}, "subscribe": {"endpoint": "http://b/sub"}},
                    "namespaces": [{"name": "px", "publish_proxy_enabled": True, "subscribe_proxy_enabled": True}]},
        "rpc": {"proxy": {"endpoint": "http://b/rpc"}, "without_namespace": {"proxy_enabled": True}},
    })


@pytest.fixture
async def proxied() -> AsyncIterator[tuple[Node, FakeCaller]]:
    node = Node(proxy_config(), 0, 1, asyncio.get_running_loop(), time.time, random.Random(0))
    caller = FakeCaller()
    assert node.proxy is not None
    node.proxy.caller = caller
    assert node.proxy_header_names == frozenset({"cookie"})
    yield node, caller
    node.close()


async def flushed() -> None:
    await asyncio.sleep(0)  # the flusher writes at the end of the loop tick


async def test_session_connects_through_the_proxy(proxied: tuple[Node, FakeCaller]) -> None:
    node, caller = proxied
    transport = FakeTransport()
    session = Session(node, transport, HANDLERS, headers={"cookie": "session=zed"})
    session.on_message(cmd(1, "connect", data={"hello": 1}))
    assert transport.sent == []  # waiting for the backend
    (call,) = caller.calls
    assert call.body["client"] == session.client_id and call.body["data"] == {"hello": 1}
    assert call.headers["cookie"] == "session=zed"
    call.answer({"result": {"user": "zed", "data": {"w": 1}, "meta": {"k": 1}}})
    await flushed()
    reply = transport.reply(1)["connect"]
    assert reply["client"] == session.client_id and reply["data"] == {"w": 1}
    assert session.user == "zed" and session.meta == {"k": 1}

    # publish: the backend rewrites the data; an rpc goes to the rpc proxy.
    session.on_message(cmd(2, "publish", channel="px:a", data={"t": 1}) + b"\n" + rpc(3, "m", 2))
    pub_call, rpc_call = caller.calls[1:]
    assert pub_call.body["channel"] == "px:a" and pub_call.body["user"] == "zed"
    rpc_call.answer({"result": {"data": "r"}})  # answered first: commands do not wait for each other
    await flushed()
    assert transport.reply(3)["rpc"] == {"data": "r"}
    pub_call.answer({"result": {"data": {"t": 2}}})
    await flushed()
    assert transport.reply(2)["publish"] == {}
    session.on_transport_closed()


async def test_connect_failure_is_error_100_and_the_session_unusable(proxied: tuple[Node, FakeCaller]) -> None:
    node, caller = proxied
    transport = FakeTransport()
    session = Session(node, transport, HANDLERS)
    session.on_message(cmd(1, "connect"))
    caller.calls[0].fail(ProxyFailure("unreachable", detail="refused"))
    await flushed()
    assert transport.reply(1)["error"] == {"code": 100, "message": "internal server error", "temporary": True}
    assert session.unusable and not node.hub.clients
    session.on_transport_closed()


async def test_connect_disconnect_answer_closes(proxied: tuple[Node, FakeCaller]) -> None:
    node, caller = proxied
    transport = FakeTransport()
    session = Session(node, transport, HANDLERS)
    session.on_message(cmd(1, "connect"))
    caller.calls[0].answer({"disconnect": {"code": 4501, "reason": "no"}})
    assert transport.closes == [(4501, "no")]
    assert not node.hub.clients


async def test_closing_mid_call_cancels_it(proxied: tuple[Node, FakeCaller]) -> None:
    node, caller = proxied
    transport = FakeTransport()
    session = Session(node, transport, HANDLERS)
    session.on_message(cmd(1, "connect"))
    caller.calls[0].answer({"result": {"user": "u"}})
    session.on_message(cmd(2, "subscribe", channel="px:s") + b"\n" + rpc(3, "m"))
    sub_call, rpc_call = caller.calls[1:]
    session.on_transport_closed()
    assert sub_call.handle.cancelled and rpc_call.handle.cancelled
    # A late answer (a caller that raced the cancel) is dropped without a write or an error.
    sent = len(transport.sent)
    rpc_call.answer({"result": {"data": 1}})
    sub_call.answer({"result": {}})
    await flushed()
    assert len(transport.sent) == sent and not node.hub.channels


async def test_subscribe_proxy_twice_in_flight_is_already_subscribed(proxied: tuple[Node, FakeCaller]) -> None:
    node, caller = proxied
    transport = FakeTransport()
    session = Session(node, transport, HANDLERS)
    session.on_message(cmd(1, "connect"))
    caller.calls[0].answer({"result": {"user": "u"}})
    session.on_message(cmd(2, "subscribe", channel="px:s") + b"\n" + cmd(3, "subscribe", channel="px:s"))
    await flushed()
    assert transport.reply(3)["error"]["code"] == 105
    caller.calls[1].answer({"result": {"data": {"g": 1}}})
    await flushed()
    assert transport.reply(2)["subscribe"] == {"data": {"g": 1}}
    assert session.is_subscribed("px:s")
    session.on_transport_closed()


async def test_commands_behind_a_proxied_connect_wait_for_it(proxied: tuple[Node, FakeCaller]) -> None:
    """centrifuge-js may send its subscribe right behind connect: it runs once the connect
    proxy accepted; behind a refused connect, the connection is closed as unusable."""
    node, caller = proxied
    transport = FakeTransport()
    session = Session(node, transport, HANDLERS)
    session.on_message(cmd(1, "connect") + b"\n" + cmd(2, "subscribe", channel="px:a"))
    assert len(caller.calls) == 1 and not transport.closes
    caller.calls[0].answer({"result": {"user": "u"}})
    assert caller.calls[1].body["channel"] == "px:a"  # dispatched after the connect reply
    session.on_transport_closed()

    transport = FakeTransport()
    session = Session(node, transport, HANDLERS)
    session.on_message(cmd(1, "connect") + b"\n" + cmd(2, "subscribe", channel="px:a"))
    caller.calls[2].answer({"error": {"code": 1000, "message": "no"}})
    assert transport.closes == [(3501, "bad request: connection unusable")]
    assert transport.reply(1)["error"] == {"code": 1000, "message": "no"}
