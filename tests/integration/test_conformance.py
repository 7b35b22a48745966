"""The conformance echo endpoint (``websocket.conformance_echo_path``) and the Autobahn gate.

The full Autobahn TestSuite is not run here: it needs the Python 2.7 environment that
``.ci/run`` builds after pytest, and ``python -m tools.conformance`` run by ``.ci/run`` is
the gate (any FAILED / WRONG CODE / UNCLEAN outside its allow-list fails CI). This file is
the fast smoke of what that gate relies on: the endpoint is off by default, echoes TEXT and
BINARY with their type (fragmented or not), and ends bad input with the same codes as the
client endpoint (1007, 1002, 1009, close-code checks); plus the gate's verdict logic.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import Gateway, base_config
from tests.integration.rawclient import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, RawWS
from tools.conformance import ECHO_PATH, evaluate

LIMIT = 4096


def echo_url(gw: Gateway) -> str:
    return gw.url.replace("/connection/websocket", ECHO_PATH)


@pytest.fixture
def echo_gateway(gateway_factory: Callable[..., Gateway]) -> Gateway:
    cfg = base_config(websocket={"conformance_echo_path": ECHO_PATH, "message_size_limit": LIMIT})
    return gateway_factory(cfg, workers=1)


async def test_echo_endpoint_off_by_default(gateway: Gateway) -> None:
    resp, ws = await RawWS.handshake_only(echo_url(gateway))
    assert ws is None and resp.status == 404


async def test_echo_keeps_message_type(echo_gateway: Gateway) -> None:
    raw = await RawWS.open(echo_url(echo_gateway))
    try:
        await raw.send_frame(OP_TEXT, "héllo".encode())
        assert await raw.recv_frame() == (True, OP_TEXT, "héllo".encode())
        await raw.send_frame(OP_BINARY, b"\x00\xff\xfe")
        assert await raw.recv_frame() == (True, OP_BINARY, b"\x00\xff\xfe")
        await raw.send_frame(OP_TEXT, b"")
        assert await raw.recv_frame() == (True, OP_TEXT, b"")
        # Fragmented, a multi-byte character split across frames, a PING in between.
        text = "κόσμε".encode()
        await raw.send_frame(OP_TEXT, text[:3], fin=False)
        await raw.send_frame(OP_PING, b"mid")
        assert await raw.recv_frame() == (True, OP_PONG, b"mid")
        await raw.send_frame(OP_CONT, text[3:7], fin=False)
        await raw.send_frame(OP_CONT, text[7:], fin=True)
        assert await raw.recv_frame() == (True, OP_TEXT, text)
        await raw.send_frame(OP_BINARY, b"ab", fin=False)
        await raw.send_frame(OP_CONT, b"cd", fin=True)
        assert await raw.recv_frame() == (True, OP_BINARY, b"abcd")
        # A message exactly at the limit, in fragments.
        await raw.send_frame(OP_BINARY, b"x" * (LIMIT - 1), fin=False)
        await raw.send_frame(OP_CONT, b"y", fin=True)
        assert await raw.recv_frame() == (True, OP_BINARY, b"x" * (LIMIT - 1) + b"y")
        # A clean close is answered with 1000.
        await raw.send_frame(OP_CLOSE, struct.pack("!H", 1000))
        assert (await raw.recv_close()).code == 1000
    finally:
        await raw.aclose()


def _close(code: int) -> Callable[[RawWS], Any]:
    return lambda r: r.send_frame(OP_CLOSE, struct.pack("!H", code))


async def _fragments(r: RawWS, *frames: tuple[int, bytes, bool]) -> None:
    for op, payload, fin in frames:
        await r.send_frame(op, payload, fin=fin)


HOSTILE: list[tuple[str, int, Callable[[RawWS], Any]]] = [
    ("invalid-utf8", 1007, lambda r: r.send_frame(OP_TEXT, b"ok\xc0\xaf")),
    # Fail fast: the first fragment cannot start valid UTF-8; the rest never comes.
    ("invalid-utf8-first-fragment", 1007, lambda r: r.send_frame(OP_TEXT, b"\xce\xba\xf4\x90\x80\x80", fin=False)),
    ("invalid-utf8-truncated-at-end", 1007, lambda r: _fragments(r, (OP_TEXT, b"ab", False), (OP_CONT, b"\xce", True))),
    ("rsv1", 1002, lambda r: r.send_frame(OP_TEXT, b"x", rsv=4)),
    ("rsv-on-close", 1002, lambda r: r.send_frame(OP_CLOSE, struct.pack("!H", 1000), rsv=7)),
    ("continuation-without-start", 1002, lambda r: r.send_frame(OP_CONT, b"x")),
    ("new-message-inside-fragmented",
     1002, lambda r: _fragments(r, (OP_TEXT, b"a", False), (OP_BINARY, b"b", True))),
    ("oversized-frame", 1009, lambda r: r.send_frame(OP_BINARY, b"x" * (LIMIT + 1))),
    ("oversized-fragmented", 1009, lambda r: _fragments(r, (OP_BINARY, b"x" * LIMIT, False), (OP_CONT, b"y", True))),
    ("close-code-0", 1002, _close(0)),
    ("close-code-1005", 1002, _close(1005)),
    ("close-code-1006", 1002, _close(1006)),
    ("close-code-5000", 1002, _close(5000)),
    ("close-code-4000", 1000, _close(4000)),
    ("close-bad-utf8-reason", 1007, lambda r: r.send_frame(OP_CLOSE, struct.pack("!H", 1000) + b"\xff")),
]


async def test_echo_bad_input_codes(echo_gateway: Gateway) -> None:
    """Each case on its own connection; a fresh one afterwards proves the worker is fine."""
    seen: dict[str, int | None] = {}
    for name, _code, act in HOSTILE:
        raw = await RawWS.open(echo_url(echo_gateway))
        try:
            await act(raw)
            closed = await raw.recv_close()
            seen[name] = closed.code
            assert closed.messages == [], (name, closed.messages)
        finally:
            await raw.aclose()
    assert seen == {name: code for name, code, _ in HOSTILE}
    raw = await RawWS.open(echo_url(echo_gateway))
    try:
        await raw.send_frame(OP_TEXT, b"still here")
        assert await raw.recv_frame() == (True, OP_TEXT, b"still here")
    finally:
        await raw.aclose()


def test_gate_verdicts() -> None:
    def case(behavior: str, close: str = "OK") -> dict[str, Any]:
        return {"behavior": behavior, "behaviorClose": close, "remoteCloseCode": 1000, "reportfile": "x.json"}

    results = {
        "1.1.1": case("OK"), "4.1.3": case("NON-STRICT"), "7.13.1": case("INFORMATIONAL", "INFORMATIONAL"),
        "12.1.1": case("UNIMPLEMENTED"), "7.1.2": case("FAILED", "WRONG CODE"),
        "3.7": case("OK", "WRONG CODE"), "5.1": case("OK", "UNCLEAN"), "6.2.1": case("FAILED"),
    }
    behavior, close, failing, allowed = evaluate(results, {"7.1.2": "because"})
    assert behavior["OK"] == 3 and behavior["FAILED"] == 2 and close["WRONG CODE"] == 2
    assert [f.split(":")[0] for f in failing] == ["3.7", "5.1", "6.2.1"]
    assert len(allowed) == 1 and allowed[0].startswith("7.1.2:") and allowed[0].endswith("because")
    assert evaluate({"1.1.1": case("OK")}, {})[2] == []


def test_parallel_shards_cover_every_group_once_and_balance() -> None:
    from tools.conformance import CASE_GROUPS, shards

    parts = shards(["*"], 2)
    assert len(parts) == 2
    flat = [g for part in parts for g in part]
    assert sorted(flat) == sorted(CASE_GROUPS) and len(flat) == len(set(flat))
    weights = [sum(CASE_GROUPS[g] for g in part) for part in parts]
    assert max(weights) <= 1.1 * min(weights)  # the deflate groups split about evenly
    assert shards(["12.1.*", "1.*"], 4) == [["12.1.*"], ["1.*"]]  # never more shards than patterns
    assert shards(["*"], 1) == [list(sorted(CASE_GROUPS, key=lambda g: -CASE_GROUPS[g]))]
