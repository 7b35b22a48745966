"""Hostile and malformed input: every case ends with the exact close code (or error reply)
the protocol prescribes, and never disturbs other clients on the same worker.

Raw frames come from :mod:`tests.integration.rawclient` where a library would refuse to
send them (RSV bits, invalid UTF-8 in TEXT, bad fragmentation, custom upgrade headers).
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest

from gateway.transport.websocket import MAX_REQUEST_HEAD_SIZE
from sharding.ids import slot_of_client
from tests.conftest import SECRET, Gateway
from tests.integration.rawclient import (
    OP_BINARY,
    OP_CONT,
    OP_TEXT,
    JsonClient,
    RawWS,
)
from tools.token import mint_token

LIMIT = 65536  # websocket.message_size_limit default


def token(user: str = "u1", exp_seconds: float = 3600) -> str:
    return mint_token(SECRET, user=user, exp_seconds=exp_seconds)


async def json_client(gw: Gateway) -> JsonClient:
    return await JsonClient.open(gw.url)


def connect_cmd(cmd_id: int = 1, user: str = "u1") -> bytes:
    return json.dumps({"id": cmd_id, "connect": {"token": token(user)}}).encode()


# --------------------------------------------------------------------------------------------
# Protocol-level bad requests (3501) -- websockets client, str messages
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("connected", "message"),
    [
        pytest.param(False, "{not json", id="garbage-json"),
        pytest.param(True, "{not json", id="garbage-json-after-connect"),
        pytest.param(False, "[1,2,3]", id="json-array"),
        pytest.param(True, '[{"id":2,"rpc":{"method":"echo"}}]', id="json-array-after-connect"),
        pytest.param(False, "42", id="json-number"),
        pytest.param(True, '{"id":2,"foo":{}}', id="unknown-method"),
        pytest.param(False, '{"id":1,"foo":{}}', id="unknown-method-before-connect"),
        pytest.param(False, '{"id":1,"subscribe":{"channel":"x"}}', id="command-before-connect"),
        pytest.param(True, '{"subscribe":{"channel":"news"}}', id="id-0-subscribe"),
        pytest.param(True, '{"id":0,"rpc":{"method":"echo"}}', id="explicit-id-0-rpc"),
        pytest.param(False, '{"connect":{}}', id="id-0-connect"),
        pytest.param(True, '{"id":-1,"rpc":{"method":"echo"}}', id="negative-id"),
        pytest.param(True, '{"id":"2","rpc":{"method":"echo"}}', id="string-id"),
        pytest.param(True, '{"id":2,"subscribe":{}}', id="subscribe-without-channel"),
        pytest.param(True, '{"id":2,"subscribe":{"channel":""}}', id="subscribe-empty-channel"),
        pytest.param(True, '{"id":2,"subscribe":"news"}', id="request-not-object"),
        pytest.param(True, "{}", id="unexpected-pong"),
        pytest.param(False, "{}", id="pong-before-connect"),
        pytest.param(True, '{"id":2}', id="id-without-method"),
    ],
)
async def test_bad_request_closes_3501(gateway: Gateway, connected: bool, message: str) -> None:
    c = await json_client(gateway)
    try:
        if connected:
            await c.connect(token())
        await c.ws.send(message)
        code, _reason = await c.expect_close()
        assert code == 3501
    finally:
        await c.aclose()




async def test_second_connect_closes_3501(gateway: Gateway) -> None:
    c = await json_client(gateway)
    try:
        await c.connect(token())
        await c.send({"id": 2, "connect": {"token": token("someone-else")}})
        code, reason = await c.expect_close(timeout=2)
        assert code == 3501, reason
    finally:
        await c.aclose()


async def test_second_connect_in_same_message_closes_3501(gateway: Gateway) -> None:
    c = await json_client(gateway)
    try:
        await c.ws.send(connect_cmd(1).decode() + "\n" + connect_cmd(2).decode())
        code, reason = await c.expect_close(timeout=2)
        assert code == 3501, reason
    finally:
        await c.aclose()


async def test_bad_line_in_multi_command_message_closes_3501(gateway: Gateway) -> None:
    raw = await RawWS.open(gateway.url)
    try:
        await raw.send_text(connect_cmd(1) + b'\n{"id":2,"rpc":{"method":"echo","data":1}}\n{oops')
        assert (await raw.recv_close()).code == 3501
    finally:
        await raw.aclose()


# --------------------------------------------------------------------------------------------
# Credentials
# --------------------------------------------------------------------------------------------

async def test_connect_without_token_closes_3501(gateway: Gateway) -> None:
    c = await json_client(gateway)
    try:
        await c.send({"id": 1, "connect": {}})
        code, _ = await c.expect_close()
        assert code == 3501
    finally:
        await c.aclose()


@pytest.mark.parametrize(
    "bad_token",
    [
        pytest.param("not-a-jwt", id="garbage"),
        pytest.param(mint_token("some-other-secret-0123456789abcdef", user="u1"), id="wrong-secret"),
        pytest.param(mint_token(SECRET, user="u1")[:-4] + "AAAA", id="tampered-signature"),
        pytest.param(12345, id="not-a-string"),
    ],
)
async def test_bad_token_closes_3500(gateway: Gateway, bad_token: Any) -> None:
    c = await json_client(gateway)
    try:
        await c.send({"id": 1, "connect": {"token": bad_token}})
        code, _ = await c.expect_close()
        assert code == 3500
    finally:
        await c.aclose()


async def test_expired_token_error_109_then_connection_unusable(gateway: Gateway) -> None:
    c = await json_client(gateway)
    try:
        reply = await c.request("connect", {"token": token(exp_seconds=-60)})
        assert reply.get("error", {}).get("code") == 109, reply
        # The connection stays open after the error reply ...
        await c.send({"id": 2, "connect": {"token": token()}})
        # ... but is unusable: the next command closes it.
        code, reason = await c.expect_close()
        assert code == 3501
        assert "connection unusable" in reason
    finally:
        await c.aclose()


# --------------------------------------------------------------------------------------------
# Error replies: the connection stays usable
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("method", "body", "code"),
    [
        pytest.param("subscribe", {"channel": "$private"}, 103, id="private-channel-without-token"),
        pytest.param("subscribe", {"channel": "locked:room"}, 103, id="namespace-without-permission"),
        pytest.param("subscribe", {"channel": "unknown:room"}, 102, id="unknown-namespace"),
        pytest.param("rpc", {"method": "no-such-method"}, 104, id="rpc-unknown-method"),
        pytest.param("publish", {"channel": "locked:room", "data": 1}, 103, id="publish-denied"),
    ],
)
async def test_error_reply_keeps_connection(gateway: Gateway, method: str, body: dict[str, Any],
                                            code: int) -> None:
    c = await json_client(gateway)
    try:
        await c.connect(token())
        reply = await c.request(method, body)
        assert reply.get("error", {}).get("code") == code, reply
        # Still usable afterwards.
        echo = await c.request("rpc", {"method": "echo", "data": {"x": 1}})
        assert echo.get("rpc") == {"data": {"x": 1}}, echo
        await c.subscribe("news")
    finally:
        await c.aclose()


async def test_already_subscribed_105(gateway: Gateway) -> None:
    c = await json_client(gateway)
    try:
        await c.connect(token())
        await c.subscribe("news")
        reply = await c.request("subscribe", {"channel": "news"})
        assert reply.get("error", {}).get("code") == 105, reply
        # The original subscription still delivers.
        await c.publish("news", {"n": 1})
        await c.wait_publication("news", {"n": 1})
    finally:
        await c.aclose()


# --------------------------------------------------------------------------------------------
# Message size (websocket.message_size_limit)
# --------------------------------------------------------------------------------------------

def padded_connect(size: int) -> bytes:
    """A connect command padded with trailing spaces to exactly ``size`` bytes."""
    cmd = connect_cmd(1)
    assert len(cmd) <= size
    return cmd + b" " * (size - len(cmd))


async def connected_raw(gw: Gateway) -> tuple[RawWS, dict[str, Any]]:
    raw = await RawWS.open(gw.url)
    result = await raw.connect(token())
    return raw, result


async def test_oversized_single_frame_closes_1009(gateway: Gateway) -> None:
    raw, _ = await connected_raw(gateway)
    try:
        await raw.send_frame(OP_TEXT, b'{"id":2,"rpc":{"method":"echo","data":"' + b"x" * LIMIT + b'"}}')
        assert (await raw.recv_close()).code == 1009
    finally:
        await raw.aclose()


async def test_oversized_by_one_byte_closes_1009(gateway: Gateway) -> None:
    raw = await RawWS.open(gateway.url)
    try:
        await raw.send_frame(OP_TEXT, padded_connect(LIMIT + 1))
        closed = await raw.recv_close()
        assert closed.code == 1009
        assert closed.messages == []
    finally:
        await raw.aclose()


async def test_message_exactly_at_limit_is_accepted(gateway: Gateway) -> None:
    raw = await RawWS.open(gateway.url)
    try:
        await raw.send_frame(OP_TEXT, padded_connect(LIMIT))
        (reply,) = await raw.recv_json_lines()
        assert reply["id"] == 1 and "client" in reply["connect"], reply
    finally:
        await raw.aclose()


async def test_oversized_fragmented_message_closes_1009(gateway: Gateway) -> None:
    raw, _ = await connected_raw(gateway)
    try:
        chunk = b"x" * 30000  # every frame is far below the limit; the message is not
        await raw.send_frame(OP_TEXT, b'{"id":2,"rpc":{"method":"echo","data":"' + chunk, fin=False)
        await raw.send_frame(OP_CONT, chunk, fin=False)
        await raw.send_frame(OP_CONT, chunk + b'"}}', fin=True)
        assert (await raw.recv_close()).code == 1009
    finally:
        await raw.aclose()


async def test_fragmented_message_at_limit_is_accepted(gateway: Gateway) -> None:
    raw = await RawWS.open(gateway.url)
    try:
        msg = padded_connect(LIMIT)
        third = LIMIT // 3
        await raw.send_frame(OP_TEXT, msg[:third], fin=False)
        await raw.send_frame(OP_CONT, msg[third:2 * third], fin=False)
        await raw.send_frame(OP_CONT, msg[2 * third:], fin=True)
        (reply,) = await raw.recv_json_lines()
        assert reply["id"] == 1 and "client" in reply["connect"], reply
    finally:
        await raw.aclose()


async def test_fragmented_connect_in_three_frames(gateway: Gateway) -> None:
    raw = await RawWS.open(gateway.url)
    try:
        msg = connect_cmd(1)
        await raw.send_frame(OP_TEXT, msg[:10], fin=False)
        await raw.send_frame(OP_CONT, msg[10:20], fin=False)
        await raw.send_frame(OP_CONT, msg[20:], fin=True)
        (reply,) = await raw.recv_json_lines()
        assert reply["id"] == 1 and slot_of_client(reply["connect"]["client"]) is not None, reply
        # And the connection works normally afterwards, fragments included.
        await raw.send_frame(OP_TEXT, b'{"id":2,"rpc":', fin=False)
        await raw.send_frame(OP_CONT, b'{"method":"echo","data":"frag"}}', fin=True)
        (echo,) = await raw.recv_json_lines()
        assert echo == {"id": 2, "rpc": {"data": "frag"}}
    finally:
        await raw.aclose()


async def test_control_frames_interleaved_in_fragmented_message(gateway: Gateway) -> None:
    """RFC 6455 §5.4: control frames may arrive between fragments."""
    raw = await RawWS.open(gateway.url)
    try:
        msg = connect_cmd(1)
        await raw.send_frame(OP_TEXT, msg[:15], fin=False)
        await raw.send_frame(0x9, b"ping-in-the-middle")
        fin, op, payload = await raw.recv_frame()
        assert (fin, op, payload) == (True, 0xA, b"ping-in-the-middle")
        await raw.send_frame(OP_CONT, msg[15:], fin=True)
        (reply,) = await raw.recv_json_lines()
        assert reply["id"] == 1 and "connect" in reply, reply
    finally:
        await raw.aclose()


# --------------------------------------------------------------------------------------------
# Frame-level violations
# --------------------------------------------------------------------------------------------

INVALID_UTF8 = b'{"id":2,"rpc":{"method":"echo","data":"\xff\xfe\xc3"}}'


@dataclass(frozen=True)
class Hostile:
    """One hostile input sent on an already-connected raw connection."""

    name: str
    code: int
    send: Callable[[RawWS], Awaitable[None]]


async def _text(raw: RawWS, payload: bytes) -> None:
    await raw.send_frame(OP_TEXT, payload)


async def _oversized_fragmented(raw: RawWS) -> None:
    chunk = b" " * 30000
    await raw.send_frame(OP_TEXT, chunk, fin=False)
    await raw.send_frame(OP_CONT, chunk, fin=False)
    await raw.send_frame(OP_CONT, chunk, fin=True)


async def _new_message_inside_fragmented(raw: RawWS) -> None:
    await raw.send_frame(OP_TEXT, b'{"id":2,', fin=False)
    await raw.send_frame(OP_TEXT, b'{"id":3,"rpc":{"method":"echo"}}', fin=True)


async def _invalid_utf8_across_fragments(raw: RawWS) -> None:
    await raw.send_frame(OP_TEXT, b'{"id":2,"rpc":{"method":"echo","data":"\xe2\x82', fin=False)
    await raw.send_frame(OP_CONT, b'\xff"}}', fin=True)


HOSTILE: list[Hostile] = [
    Hostile("garbage-json", 3501, lambda r: _text(r, b"{garbage")),
    Hostile("json-array", 3501, lambda r: _text(r, b"[]")),
    Hostile("unknown-method", 3501, lambda r: _text(r, b'{"id":2,"foo":{}}')),
    Hostile("id-0", 3501, lambda r: _text(r, b'{"rpc":{"method":"echo"}}')),
    Hostile("subscribe-without-channel", 3501, lambda r: _text(r, b'{"id":2,"subscribe":{}}')),
    Hostile("unexpected-pong", 3501, lambda r: _text(r, b"{}")),
    Hostile("invalid-utf8", 1007, lambda r: _text(r, INVALID_UTF8)),
    Hostile("invalid-utf8-only", 1007, lambda r: _text(r, b"\xc0\xaf")),
    Hostile("invalid-utf8-across-fragments", 1007, _invalid_utf8_across_fragments),
    Hostile("rsv1", 1002, lambda r: r.send_frame(OP_TEXT, b'{"id":2,"rpc":{"method":"echo"}}', rsv=4)),
    Hostile("rsv2", 1002, lambda r: r.send_frame(OP_TEXT, b'{"id":2,"rpc":{"method":"echo"}}', rsv=2)),
    Hostile("rsv3", 1002, lambda r: r.send_frame(OP_TEXT, b'{"id":2,"rpc":{"method":"echo"}}', rsv=1)),
    Hostile("continuation-without-start", 1002, lambda r: r.send_frame(OP_CONT, b'{"id":2}', fin=True)),
    Hostile("new-message-inside-fragmented", 1002, _new_message_inside_fragmented),
    Hostile("reserved-opcode", 1002, lambda r: r.send_frame(0x3, b"x")),
    Hostile("unmasked-frame", 1002, lambda r: r.send_frame(OP_TEXT, b'{"id":2}', mask=False)),
    Hostile("binary-frame", 3506, lambda r: r.send_frame(OP_BINARY, b'{"id":2,"rpc":{"method":"echo"}}')),
    Hostile("oversized-frame", 1009, lambda r: _text(r, b" " * (LIMIT + 1))),
    Hostile("oversized-fragmented", 1009, _oversized_fragmented),
]


@pytest.mark.parametrize("case", HOSTILE, ids=[h.name for h in HOSTILE])
async def test_hostile_frame_close_code(gateway: Gateway, case: Hostile) -> None:
    raw, _ = await connected_raw(gateway)
    try:
        await case.send(raw)
        closed = await raw.recv_close()
        assert closed.code == case.code, closed
    finally:
        await raw.aclose()


async def test_binary_frame_before_connect_closes_3506(gateway: Gateway) -> None:
    raw = await RawWS.open(gateway.url)
    try:
        await raw.send_frame(OP_BINARY, connect_cmd(1))
        assert (await raw.recv_close()).code == 3506
    finally:
        await raw.aclose()


async def test_invalid_utf8_before_connect_closes_1007(gateway: Gateway) -> None:
    raw = await RawWS.open(gateway.url)
    try:
        await raw.send_frame(OP_TEXT, b'{"id":1,"connect":{"token":"\xff"}}')
        assert (await raw.recv_close()).code == 1007
    finally:
        await raw.aclose()


# --------------------------------------------------------------------------------------------
# Handshake
# --------------------------------------------------------------------------------------------

def firefox_headers(gw: Gateway, origin_host: str | None = None) -> dict[str, str]:
    netloc = urlsplit(gw.url).netloc
    return {
        "Host": netloc,
        "User-Agent": "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
        "Accept": "*/*",
        "Accept-Language": "en-US,en;q=0.5",
        "Accept-Encoding": "gzip, deflate, br",
        "Sec-WebSocket-Version": "13",
        "Origin": f"http://{origin_host or netloc}",
        "Sec-WebSocket-Extensions": "permessage-deflate",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Connection": "keep-alive, Upgrade",
        "Sec-Fetch-Dest": "empty",
        "Sec-Fetch-Mode": "websocket",
        "Sec-Fetch-Site": "same-origin",
        "Pragma": "no-cache",
        "Cache-Control": "no-cache",
        "Upgrade": "websocket",
    }


async def test_firefox_handshake_upgrades_and_connects(gateway: Gateway) -> None:
    resp, raw = await RawWS.handshake_only(gateway.url, firefox_headers(gateway))
    assert resp.status == 101, resp
    assert raw is not None
    try:
        # permessage-deflate was offered but is not negotiated: frames stay uncompressed.
        assert "permessage-deflate" not in resp.headers.get("sec-websocket-extensions", "")
        result = await raw.connect(token())
        assert slot_of_client(result["client"]) is not None
        await raw.send_text(b'{"id":2,"rpc":{"method":"echo","data":"ff"}}')
        assert await raw.recv_json_lines() == [{"id": 2, "rpc": {"data": "ff"}}]
    finally:
        await raw.aclose()


async def test_other_path_404(gateway: Gateway) -> None:
    resp, raw = await RawWS.handshake_only(gateway.url, firefox_headers(gateway), path="/other")
    assert raw is None
    assert resp.status == 404, resp


async def test_foreign_origin_403(gateway: Gateway) -> None:
    headers = firefox_headers(gateway, origin_host="evil.example.com")
    resp, raw = await RawWS.handshake_only(gateway.url, headers)
    assert raw is None
    assert resp.status == 403, resp


async def test_same_host_other_port_origin_403(gateway: Gateway) -> None:
    host = urlsplit(gateway.url).hostname
    resp, raw = await RawWS.handshake_only(gateway.url, firefox_headers(gateway, origin_host=f"{host}:1"))
    assert raw is None
    assert resp.status == 403, resp


def upgrade_headers(gw: Gateway, **changes: str | None) -> list[tuple[str, str]]:
    """A valid upgrade request's headers; a change of ``None`` leaves that header out."""
    names = {"host": "Host", "version": "Sec-WebSocket-Version", "key": "Sec-WebSocket-Key"}
    headers = RawWS.default_headers(gw.url)
    for name, value in changes.items():
        if value is None:
            del headers[names[name]]
        else:
            headers[names[name]] = value
    return list(headers.items())


def padded_headers(gw: Gateway, head_size: int) -> list[tuple[str, str]]:
    """A valid upgrade request whose head (request line and headers, without the final blank
    line) is exactly ``head_size`` bytes, padded with one ``X-Pad`` header."""
    headers = upgrade_headers(gw)
    base = len(f"GET {urlsplit(gw.url).path} HTTP/1.1") + sum(len(f"\r\n{k}: {v}") for k, v in headers)
    pad = head_size - base - len("\r\nX-Pad: ")
    assert pad > 0
    return [*headers, ("X-Pad", "p" * pad)]


@pytest.mark.parametrize("version", ["12", "8", "7", "14", "13, 8"])
async def test_unsupported_version_426(gateway: Gateway, version: str) -> None:
    """RFC 6455 §4.2.2: 426 and the version the server speaks (picows would take 7 and 8)."""
    resp, raw = await RawWS.handshake_only(gateway.url, upgrade_headers(gateway, version=version))
    assert raw is None
    assert resp.status == 426, resp
    assert resp.headers.get("sec-websocket-version") == "13", resp


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(lambda gw: [*upgrade_headers(gw), ("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAAAA==")],
                     id="two-keys"),
        pytest.param(lambda gw: upgrade_headers(gw, key=None), id="no-key"),
        pytest.param(lambda gw: upgrade_headers(gw, host=None), id="no-host"),
        pytest.param(lambda gw: [*upgrade_headers(gw), ("Host", "other.example.com")], id="two-hosts"),
        pytest.param(lambda gw: upgrade_headers(gw, version=None), id="no-version"),
    ],
)
async def test_malformed_handshake_400(gateway: Gateway,
                                       headers: Callable[[Gateway], list[tuple[str, str]]]) -> None:
    resp, raw = await RawWS.handshake_only(gateway.url, headers(gateway))
    assert raw is None
    assert resp.status == 400, resp


async def test_oversized_request_head_431(gateway: Gateway) -> None:
    """64 KiB of headers: 431 with a short body, not a reset (picows drops the connection)."""
    headers = [*upgrade_headers(gateway), *((f"X-Pad-{i}", "p" * 8000) for i in range(8))]
    resp, raw = await RawWS.handshake_only(gateway.url, headers)
    assert raw is None
    assert resp.status == 431, resp
    assert resp.body == b"request header fields too large"


async def test_request_head_limit_is_exact(gateway: Gateway) -> None:
    """A head one byte under MAX_REQUEST_HEAD_SIZE upgrades and connects; at it: 431."""
    resp, raw = await RawWS.handshake_only(gateway.url, padded_headers(gateway, MAX_REQUEST_HEAD_SIZE - 1))
    assert resp.status == 101 and raw is not None, resp
    try:
        assert slot_of_client((await raw.connect(token()))["client"]) is not None
    finally:
        await raw.aclose()
    resp, raw = await RawWS.handshake_only(gateway.url, padded_headers(gateway, MAX_REQUEST_HEAD_SIZE))
    assert raw is None
    assert resp.status == 431, resp


# --------------------------------------------------------------------------------------------
# Isolation: hostile clients never disturb others on the same worker
# --------------------------------------------------------------------------------------------

MAX_LANDING_ATTEMPTS = 60


async def raw_on_slot(gw: Gateway, slot: int) -> RawWS:
    """A connected raw client whose connection landed on worker ``slot`` (bounded attempts)."""
    seen: list[int | None] = []
    for _ in range(MAX_LANDING_ATTEMPTS):
        raw, result = await connected_raw(gw)
        got = slot_of_client(result["client"])
        if got == slot:
            return raw
        seen.append(got)
        await raw.aclose()
    raise AssertionError(f"no connection landed on slot {slot} in {MAX_LANDING_ATTEMPTS} tries: {seen}")


async def test_hostile_clients_do_not_disturb_neighbours_on_the_same_worker(gateway: Gateway) -> None:
    pids_before = sorted(gateway.worker_pids())
    assert len(pids_before) == 2
    control = await json_client(gateway)
    publisher = await json_client(gateway)
    try:
        control_slot = slot_of_client((await control.connect(token("control")))["client"])
        assert control_slot is not None
        await control.subscribe("news")
        await publisher.connect(token("publisher"))

        await publisher.publish("news", {"case": "baseline"})
        await control.wait_publication("news", {"case": "baseline"})

        for case in HOSTILE:
            hostile = await raw_on_slot(gateway, control_slot)
            try:
                await case.send(hostile)
                closed = await hostile.recv_close()
                assert closed.code == case.code, (case.name, closed)
            finally:
                await hostile.aclose()
            # Published after the hostile close, by a client that may sit on either worker.
            await publisher.publish("news", {"case": case.name})
            await control.wait_publication("news", {"case": case.name})
            # The control connection still answers commands too.
            echo = await control.request("rpc", {"method": "echo", "data": case.name})
            assert echo.get("rpc") == {"data": case.name}, (case.name, echo)

        assert sorted(gateway.worker_pids()) == pids_before
        assert "restarting" not in gateway.log()
        assert gateway.health()["status"] == "ok"
    finally:
        await control.aclose()
        await publisher.aclose()


async def test_pre_connect_hostility_leaves_every_worker_serving(gateway: Gateway) -> None:
    """Inputs that close a connection before it has a client id cannot be aimed at a
    slot, so a control subscriber sits on every slot and all of them must keep receiving."""
    pids_before = sorted(gateway.worker_pids())
    controls: dict[int, JsonClient] = {}
    spare: list[JsonClient] = []
    publisher = await json_client(gateway)
    try:
        await publisher.connect(token("publisher"))
        for _ in range(MAX_LANDING_ATTEMPTS):
            if len(controls) == gateway.workers:
                break
            c = await json_client(gateway)
            slot = slot_of_client((await c.connect(token("control")))["client"])
            assert slot is not None
            if slot in controls:
                spare.append(c)
                continue
            await c.subscribe("news")
            controls[slot] = c
        assert len(controls) == gateway.workers, f"controls only on slots {sorted(controls)}"

        async def no_token(gw: Gateway) -> int | None:
            c = await json_client(gw)
            try:
                await c.send({"id": 1, "connect": {}})
                return (await c.expect_close())[0]
            finally:
                await c.aclose()

        async def bad_token(gw: Gateway) -> int | None:
            c = await json_client(gw)
            try:
                await c.send({"id": 1, "connect": {"token": "x.y.z"}})
                return (await c.expect_close())[0]
            finally:
                await c.aclose()

        async def raw_before_connect(gw: Gateway, op: int, payload: bytes, fin: bool = True,
                                     rsv: int = 0) -> int | None:
            raw = await RawWS.open(gw.url)
            try:
                await raw.send_frame(op, payload, fin=fin, rsv=rsv)
                return (await raw.recv_close()).code
            finally:
                await raw.aclose()

        async def refused(gw: Gateway, path: str | None = None, origin: str | None = None) -> int | None:
            resp, raw = await RawWS.handshake_only(gw.url, firefox_headers(gw, origin), path=path)
            assert raw is None
            return resp.status

        async def refused_headers(headers: list[tuple[str, str]]) -> int | None:
            resp, raw = await RawWS.handshake_only(gateway.url, headers)
            assert raw is None
            return resp.status

        cases: list[tuple[str, int, Callable[[], Awaitable[int | None]]]] = [
            ("no-token", 3501, lambda: no_token(gateway)),
            ("bad-token", 3500, lambda: bad_token(gateway)),
            ("garbage", 3501, lambda: raw_before_connect(gateway, OP_TEXT, b"\x00garbage")),
            ("invalid-utf8", 1007, lambda: raw_before_connect(gateway, OP_TEXT, b"\xff")),
            ("binary", 3506, lambda: raw_before_connect(gateway, OP_BINARY, b"\x01\x02")),
            ("rsv1", 1002, lambda: raw_before_connect(gateway, OP_TEXT, connect_cmd(), rsv=4)),
            ("continuation", 1002, lambda: raw_before_connect(gateway, OP_CONT, b"x")),
            ("oversized", 1009, lambda: raw_before_connect(gateway, OP_TEXT, b" " * (LIMIT + 1))),
            ("path-404", 404, lambda: refused(gateway, path="/other")),
            ("origin-403", 403, lambda: refused(gateway, origin="evil.example.com")),
            ("version-426", 426, lambda: refused_headers(upgrade_headers(gateway, version="12"))),
            ("two-keys-400", 400, lambda: refused_headers(
                [*upgrade_headers(gateway), ("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAAAA==")])),
            ("no-host-400", 400, lambda: refused_headers(upgrade_headers(gateway, host=None))),
            ("head-431", 431, lambda: refused_headers(padded_headers(gateway, 64 * 1024))),
        ]
        rounds = 4  # each case several times, so both workers see it with high probability
        for name, expected, make in cases:
            for _ in range(rounds):
                assert await make() == expected, name
            await publisher.publish("news", {"case": name})
            for c in controls.values():
                await c.wait_publication("news", {"case": name})

        assert sorted(gateway.worker_pids()) == pids_before
        assert "restarting" not in gateway.log()
    finally:
        for c in [*controls.values(), *spare]:
            await c.aclose()
        await publisher.aclose()
