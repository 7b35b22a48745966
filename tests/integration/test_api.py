"""The server HTTP API, /metrics, /health and /ready against ``shardgate serve --workers 2``,
with the real ``cent`` client (and raw HTTP where cent cannot express the case)."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import pytest
from cent import (
    AsyncClient,
    BatchRequest,
    BroadcastRequest,
    CentApiResponseError,
    CentUnauthorizedError,
    ChannelsRequest,
    Client,
    DisconnectRequest,
    HistoryRemoveRequest,
    HistoryRequest,
    InfoRequest,
    PresenceRequest,
    PresenceStatsRequest,
    PublishRequest,
    RefreshRequest,
    SubscribeRequest,
    UnsubscribeRequest,
)
from cent import (
    Disconnect as DisconnectSpec,
)
from prometheus_client.parser import text_string_to_metric_families

from gateway.engine.owner import EMPTY_STREAM_GRACE
from sharding.hashing import owner
from tests.conftest import API_KEY, Gateway, scaled, wait_for
from tests.integration.sdk import ClientEvents, connect, connect_on_slot, disconnect_all, slot, subscribe
from tests.integration.test_protocol_sdk import channel_owned_by


def api(gw: Gateway) -> Client:
    return Client(gw.internal_url + "/api", API_KEY, timeout=scaled(5))


def raw_post(gw: Gateway, method: str, body: Any, headers: dict[str, str] | None = None,
             data: bytes | None = None, http_method: str = "POST") -> tuple[int, bytes]:
    req = urllib.request.Request(gw.internal_url + f"/api/{method}", method=http_method,
                                 data=data if data is not None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=scaled(5)) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


async def test_publish_reaches_subscribers_on_every_worker(gateway: Gateway) -> None:
    channel = channel_owned_by(1)
    a, _ = await connect_on_slot(gateway.url, 0, user="a")
    b, _ = await connect_on_slot(gateway.url, 1, user="b")
    _, ea = await subscribe(a, channel)
    _, eb = await subscribe(b, channel)
    try:
        client = api(gateway)
        results = [client.publish(PublishRequest(channel=channel, data={"n": n})) for n in range(3)]
        assert [r.offset for r in results] == [1, 2, 3] and len({r.epoch for r in results}) == 1
        await wait_for(lambda: len(ea.pubs) == 3 and len(eb.pubs) == 3, what="API publications")
        assert ea.pubs == eb.pubs == [(1, {"n": 0}), (2, {"n": 1}), (3, {"n": 2})]
        # Same ordering and history as client publishes.
        await a.publish(channel, {"n": 3})
        hist = client.history(HistoryRequest(channel=channel, limit=-1))
        assert [p.offset for p in hist.publications] == [1, 2, 3, 4]
        assert hist.epoch == results[0].epoch
        client.history_remove(HistoryRemoveRequest(channel=channel))
        hist = client.history(HistoryRequest(channel=channel, limit=-1))
        assert hist.publications == [] and hist.offset == 4
        # Idempotency key: a retried publish is not published twice.
        first = client.publish(PublishRequest(channel=channel, data={"n": 5}, idempotency_key="k1"))
        again = client.publish(PublishRequest(channel=channel, data={"n": 5}, idempotency_key="k1"))
        assert first.offset == again.offset == 5
    finally:
        await disconnect_all(a, b)


async def test_broadcast_and_batch(gateway: Gateway) -> None:
    client = AsyncClient(gateway.internal_url + "/api", API_KEY, timeout=scaled(5))
    res = await client.broadcast(BroadcastRequest(channels=["x1", "x2", "nope:x"], data={"v": 1}))
    assert [r.error.code if r.error else 0 for r in res.responses] == [0, 0, 102]
    assert res.responses[0].result.offset == 1
    batch = await client.batch(BatchRequest(requests=[PublishRequest(channel="x1", data={"v": 2}),
                                                      PresenceStatsRequest(channel="x1")], parallel=True))
    assert batch.replies[0].offset == 2
    await client.close()
    # cent 5.2 raises KeyError on an error inside a batch: check that case over plain HTTP.
    status, body = raw_post(gateway, "batch", {"commands": [{"publish": {"channel": "x1", "data": 1}},
                                                          {"publish": {"channel": "nope:x", "data": 1}},
                                                          {"nosuch": {}}], "parallel": False},
                            headers={"X-API-Key": API_KEY})
    assert status == 200
    replies = json.loads(body)["replies"]
    assert replies[0] == {"publish": {"offset": 3, "epoch": replies[0]["publish"]["epoch"]}}
    assert replies[1]["error"]["code"] == 102 and replies[2]["error"]["code"] == 104


async def test_user_actions_reach_connections_on_both_workers(gateway: Gateway) -> None:
    from centrifuge import Client as SdkClient
    from centrifuge import ClientEventHandler, ServerSubscribedContext

    server_subs: list[str] = []
    server_pubs: list[Any] = []

    class Events(ClientEvents):
        async def on_subscribed(self, ctx: ServerSubscribedContext) -> None:  # type: ignore[override]
            server_subs.append(ctx.channel)

        async def on_publication(self, ctx: Any) -> None:
            server_pubs.append(ctx.pub.data)

    assert ClientEventHandler
    from tests.integration.sdk import token

    clients = []
    for i in range(12):
        # Half on each worker slot: SO_REUSEPORT's spread alone put all 12 on one slot once.
        for _attempt in range(60):
            events = Events()
            c = SdkClient(gateway.url, events=events, token=token("bob"), timeout=scaled(5))
            await c.connect()
            await wait_for(lambda ev=events: bool(ev.connected), what="connected")
            if slot(c) == i % 2:
                break
            await c.disconnect()
        clients.append((c, events))
    assert {slot(c) for c, _ in clients} == {0, 1}
    client = api(gateway)
    try:
        client.subscribe(SubscribeRequest(user="bob", channel="srv", data={"why": "test"}))
        await wait_for(lambda: server_subs.count("srv") == 12, what="server-side subscribe pushes")
        client.publish(PublishRequest(channel="srv", data={"hello": 1}))
        await wait_for(lambda: len(server_pubs) == 12, what="publications on server-side subs")
        # Presence follows a subscription by a one-way message to the channel's owner: poll.
        await wait_for(lambda: client.presence_stats(PresenceStatsRequest(channel="srv")).num_clients == 12,
                       what="all 12 in presence")
        stats = client.presence_stats(PresenceStatsRequest(channel="srv"))
        assert (stats.num_clients, stats.num_users) == (12, 1)
        presence = client.presence(PresenceRequest(channel="srv"))
        assert {p.user for p in presence.presence.values()} == {"bob"}
        channels = client.channels(ChannelsRequest(pattern="sr*"))
        assert channels.channels["srv"].num_clients == 12
        client.unsubscribe(UnsubscribeRequest(user="bob", channel="srv"))
        await wait_for(lambda: client.presence_stats(PresenceStatsRequest(channel="srv")).num_clients == 0,
                       what="server-side unsubscribe")
        # Disconnect one client by id (routed to its slot), then the rest by user with a code.
        target, target_events = clients[0]
        client.disconnect(DisconnectRequest(user="bob", client=target.client_id,
                                            disconnect=DisconnectSpec(code=4501, reason="kicked")))
        await wait_for(lambda: any(d.code == 4501 for d in target_events.disconnected), what="kicked client")
        client.disconnect(DisconnectRequest(user="bob", disconnect=DisconnectSpec(code=4502, reason="all")))
        await wait_for(lambda: all(any(d.code == 4502 for d in ev.disconnected) for _, ev in clients[1:]),
                       what="all of bob's clients disconnected")
    finally:
        await disconnect_all(*(c for c, _ in clients))


async def test_refresh_expired_closes_3005(gateway: Gateway) -> None:
    c, events = await connect(gateway.url, user="carol")
    try:
        api(gateway).refresh(RefreshRequest(user="carol", expired=True))
        await wait_for(lambda: any(x.code == 3005 for x in events.connecting), what="3005 after refresh expired")
    finally:
        await disconnect_all(c)


def test_info_one_node_per_worker(gateway: Gateway) -> None:
    info = api(gateway).info(InfoRequest())
    assert len(info.nodes) == 2
    assert sorted(n.name.rsplit(".", 1)[1] for n in info.nodes) == ["0", "1"]
    assert all(n.process and n.process.rss > 0 and n.version for n in info.nodes)


def test_auth_methods_limits_and_error_modes(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import base_config

    gw = gateway_factory(base_config(shardgate={"api_max_body_size": 4096}))
    body = {"channel": "a", "data": 1}
    assert raw_post(gw, "publish", body) == (401, b"")
    assert raw_post(gw, "publish", body, headers={"X-API-Key": "wrong"}) == (401, b"")
    status, data = raw_post(gw, "publish", body, headers={"Authorization": f"apikey {API_KEY}"})
    assert status == 200 and "result" in json.loads(data)
    assert raw_post(gw, "publish", body, headers={"X-API-Key": API_KEY}, http_method="GET", data=b"")[0] == 405
    status, _ = raw_post(gw, "publish", None, headers={"X-API-Key": API_KEY}, data=b"x" * 10000)
    assert status == 413
    assert raw_post(gw, "publish", None, headers={"X-API-Key": API_KEY}, data=b"{nope")[0] == 400
    status, data = raw_post(gw, "publish", {"channel": "nope:x", "data": 1}, headers={"X-API-Key": API_KEY})
    assert status == 200 and json.loads(data) == {"error": {"code": 102, "message": "unknown channel"}}
    status, data = raw_post(gw, "publish", {"channel": "nope:x", "data": 1},
                            headers={"X-API-Key": API_KEY, "X-Centrifugo-Error-Mode": "transport"})
    assert status == 404 and json.loads(data) == {"code": 102, "message": "unknown channel"}
    status, data = raw_post(gw, "nosuchmethod", {}, headers={"X-API-Key": API_KEY})
    assert json.loads(data)["error"]["code"] == 104
    status, data = raw_post(gw, "presence", {"channel": "plain:x"}, headers={"X-API-Key": API_KEY})
    assert json.loads(data)["error"]["code"] == 108
    with pytest.raises(CentUnauthorizedError):
        Client(gw.internal_url + "/api", "bad").info(InfoRequest())
    with pytest.raises(CentApiResponseError) as err:
        api(gw).publish(PublishRequest(channel="", data={}))
    assert err.value.code == 107


def _metrics(gw: Gateway) -> dict[str, float]:
    with urllib.request.urlopen(gw.internal_url + "/metrics", timeout=scaled(5)) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = sample.name
            if "type" in sample.labels:
                key += f"[{sample.labels['type']}]"
            if "code" in sample.labels:
                key += f"[{sample.labels['code']}]"
            totals[key] = totals.get(key, 0.0) + sample.value
    return totals


async def test_metrics_cover_all_workers_and_move(gateway: Gateway) -> None:
    before = _metrics(gateway)
    assert before["shardgate_worker_up"] == 2 and before["shardgate_build_info"] == 1
    channel = channel_owned_by(0)
    a, _ = await connect_on_slot(gateway.url, 1, user="m1")
    b, _ = await connect_on_slot(gateway.url, 0, user="m2")
    _, ev = await subscribe(a, channel)
    try:
        await b.publish(channel, {"x": 1})
        await wait_for(lambda: len(ev.pubs) == 1, what="publication")
        with pytest.raises(Exception):  # noqa: B017 - error 102 for the metrics
            await b.publish("nope:x", {"x": 1})
        after = _metrics(gateway)
        assert after["shardgate_connections"] == before["shardgate_connections"] + 2
        assert after["shardgate_subscriptions"] == before["shardgate_subscriptions"] + 1
        assert after["shardgate_messages_sent_total[publication]"] >= 1
        assert after["shardgate_messages_received_total[publish]"] == 2
        assert after["shardgate_reply_errors_total[102]"] == 1
        assert after["shardgate_command_duration_seconds_count"] >= 4
        assert after["shardgate_bus_delivery_latency_seconds_count"] >= 1  # owner 0 -> subscriber on 1
        sent = after["shardgate_bus_deliveries_sent_total"] - before["shardgate_bus_deliveries_sent_total"]
        messages = (after["shardgate_bus_delivery_messages_sent_total"]
                    - before["shardgate_bus_delivery_messages_sent_total"])
        assert 1 <= messages <= sent
        assert after["shardgate_process_resident_memory_bytes"] > 0
        assert owner(channel, 2) == 0
    finally:
        await disconnect_all(a, b)


async def test_history_of_unpublished_channels_leaves_no_streams(gateway: Gateway) -> None:
    """Reliability round 2, item 5: reads of never-published channels used to leave a stream
    (epoch and all) per channel in its owner forever."""
    before = _metrics(gateway)
    client = AsyncClient(gateway.internal_url + "/api", API_KEY, timeout=scaled(10))
    try:
        for start in range(0, 2000, 100):
            results = await asyncio.gather(*(client.history(HistoryRequest(channel=f"never-{i}", limit=0))
                                             for i in range(start, start + 100)))
            assert all(r.offset == 0 and len(r.epoch) == 8 for r in results)
    finally:
        await client.close()
    held = _metrics(gateway)
    assert held["shardgate_owned_streams"] >= before["shardgate_owned_streams"] + 2000  # within the grace
    assert held["shardgate_owned_channels"] >= before["shardgate_owned_channels"] + 2000

    def swept() -> bool:
        now = _metrics(gateway)
        return (now["shardgate_owned_streams"] <= before["shardgate_owned_streams"]
                and now["shardgate_owned_channels"] <= before["shardgate_owned_channels"])

    await wait_for(swept, timeout=EMPTY_STREAM_GRACE + 20, interval=0.25, what="the owners to forget the streams")


def test_health_and_ready(gateway: Gateway) -> None:
    assert gateway.health()["status"] == "ok"
    with urllib.request.urlopen(gateway.internal_url + "/ready", timeout=scaled(5)) as resp:
        assert json.loads(resp.read()) == {"status": "ready", "workers": 2}


def _raw_http(gw: Gateway, head: bytes) -> tuple[int, dict[str, str], bytes]:
    """One request written byte for byte (http.client refuses non-ASCII header values)."""
    url = urllib.parse.urlsplit(gw.internal_url)
    assert url.hostname is not None and url.port is not None
    with socket.create_connection((url.hostname, url.port), timeout=scaled(5)) as sock:
        sock.sendall(head)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    header, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = header.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


@pytest.mark.parametrize("key_header", [
    b"X-API-Key: \xe9t\xe9",  # latin-1
    "X-API-Key: клю\u0447".encode(),  # UTF-8
    b"X-API-Key: \xff\xfe\x80",  # not UTF-8 at all
    b"Authorization: apikey \xe9\xe9",
])
def test_malformed_api_key_is_401_without_traceback(gateway: Gateway, key_header: bytes) -> None:
    body = b'{"channel": "a", "data": 1}'
    head = (b"POST /api/publish HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
            + key_header + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    status, _, data = _raw_http(gateway, head)
    assert (status, data) == (401, b"")
    status, _, data = _raw_http(gateway, b"POST /api/publish?api_key=%E9%FF HTTP/1.1\r\nHost: x\r\n"
                                         b"Connection: close\r\nContent-Length: 2\r\n\r\n{}")
    assert (status, data) == (401, b"")
    log = gateway.log()
    assert "Traceback" not in log and "ERROR" not in log, log


def test_server_header_names_no_library_version(gateway: Gateway) -> None:
    for head in (b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                 b"POST /api/info HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}",
                 b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                 b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n"):
        status, headers, _ = _raw_http(gateway, head)
        assert status in (200, 400, 401, 404)
        assert headers.get("server", "shardgate") == "shardgate", headers
    log = gateway.log()
    assert "Traceback" not in log and "ERROR" not in log, log  # the malformed request: one WARNING line


async def test_disconnect_log_line_escapes_what_clients_control(gateway: Gateway) -> None:
    user = "eve\nINFO forged line \x1b[31mred\x1b[0m\u2028"
    c, events = await connect(gateway.url, user=user)
    try:
        api(gateway).disconnect(DisconnectRequest(user=user, disconnect=DisconnectSpec(code=4503,
                                                                                     reason="bye\r\nnow\x07")))
        await wait_for(lambda: any(d.code == 4503 for d in events.disconnected), what="disconnected")
        await wait_for(lambda: "code=4503" in gateway.log(), what="disconnect logged")
    finally:
        await disconnect_all(c)
    log = gateway.log()
    assert "\x1b" not in log and "\x07" not in log and "\u2028" not in log and "\r" not in log
    (line,) = [line for line in log.splitlines() if "code=4503" in line]
    assert "user=eve\\nINFO forged line \\x1b[31mred\\x1b[0m\\u2028 " in line, line
    assert "reason=bye\\r\\nnow\\x07" in line, line
    assert "forged line" not in log.replace(line, "")
