"""The official Centrifugo JS SDK (npm ``centrifuge`` 5.x on node 20, ``ws`` as its
WebSocket) against a real 2-worker gateway: connect, subscribe, publish and receive in
order with consecutive offsets on two clients, presence, rpc ``echo`` and ``send``.

Needs ``node`` and ``npm ci --prefix tests/js``; skipped otherwise so machines without
npm still run the rest of the suite."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.conftest import SECRET, Gateway, scaled
from tools.token import mint_token

JS_DIR = Path(__file__).resolve().parent.parent / "js"
SCRIPT = JS_DIR / "sdk_roundtrip.mjs"
NODE = shutil.which("node")
COUNT = 5

pytestmark = [
    pytest.mark.skipif(NODE is None, reason="node is not installed (the JS SDK test needs node >= 20)"),
    pytest.mark.skipif(
        not (JS_DIR / "node_modules" / "centrifuge").is_dir(),
        reason="tests/js/node_modules is missing; run `npm ci --prefix tests/js` to enable the JS SDK test"),
]


def run_roundtrip(gw: Gateway, channel: str, protocol: str = "json") -> subprocess.CompletedProcess[str]:
    # The script's own deadline fires first, so a hang reports which step it was in.
    script_timeout = scaled(15)
    env = {
        **os.environ,
        "SDK_TOKEN1": mint_token(SECRET, user="js-user-1", exp_seconds=3600),
        "SDK_TOKEN2": mint_token(SECRET, user="js-user-2", exp_seconds=3600),
        "SDK_COUNT": str(COUNT),
        "SDK_PROTOCOL": protocol,
        "SDK_TIMEOUT_MS": str(int(script_timeout * 1000)),
    }
    try:
        return subprocess.run(
            [str(NODE), str(SCRIPT), gw.url, channel], cwd=JS_DIR, env=env,
            capture_output=True, text=True, timeout=script_timeout + scaled(10))
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"node script did not exit: stdout={exc.stdout!r} stderr={exc.stderr!r}\n"
                    f"gateway log:\n{gw.log()}")


def test_node_version() -> None:
    out = subprocess.run([str(NODE), "--version"], capture_output=True, text=True, check=True,
                         timeout=scaled(10)).stdout.strip()
    major = int(out.lstrip("v").split(".")[0])
    assert major >= 20, f"the JS SDK test needs node >= 20, found {out}"


@pytest.mark.parametrize("protocol", ["json", "protobuf"])
def test_js_sdk_roundtrip(gateway: Gateway, protocol: str) -> None:
    """The same round trip with the SDK's JSON build and its protobuf build
    (``centrifuge/build/protobuf``, subprotocol ``centrifuge-protobuf``)."""
    channel = f"jssdk-{uuid.uuid4().hex[:12]}"
    proc = run_roundtrip(gateway, channel, protocol)
    assert proc.returncode == 0, (
        f"node script failed (rc {proc.returncode})\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}\n"
        f"gateway log:\n{gateway.log()}")

    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one JSON line, got:\n{proc.stdout}"
    result = json.loads(lines[0])

    assert result["ok"] is True
    assert result["protocol"] == protocol
    assert result["channel"] == channel
    assert result["transport"] == "websocket"
    assert result["clients"]["a"] != result["clients"]["b"]

    expected = [{"seq": i, "nonce": result["sent"]["nonce"], "text": f"hello {i}"} for i in range(COUNT)]
    assert result["received_a"] == expected
    assert result["received_b"] == expected
    # A fresh channel: the stream starts at the subscribe position, offsets are consecutive.
    first = result["subscribe_offset"] + 1
    assert result["offsets_a"] == list(range(first, first + COUNT))
    assert result["offsets_b"] == result["offsets_a"]
    assert isinstance(result["epoch"], str) and result["epoch"]
    # Client-side publishes carry the publisher's ClientInfo.
    assert result["publisher_users"] == ["js-user-1"] * COUNT

    assert result["presence_clients"] == sorted([result["clients"]["a"], result["clients"]["b"]])
    assert result["rpc"] == result["rpc_sent"]
    assert result["message"] == result["sent"]
