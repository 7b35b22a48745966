"""The web admin and the demo chat in real headless Chromium (tests/js/browser_e2e.mjs, with
playwright-core driving /usr/bin/chromium) against the development default: log in with the
banner's password, see the workers, publish from the admin and see it in the chat, send from
the chat and see it in the admin's history; both screenshots must show a real page.

Skipped (one line) without /usr/bin/chromium, node or tests/js/node_modules, except under
CI=true, where a missing piece fails: .ci/run installs chromium."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.conftest import Gateway, scaled
from tests.integration.browser_png import colour_stats
from tests.integration.test_admin import admin_banner

JS_DIR = Path(__file__).resolve().parent.parent / "js"
SCRIPT = JS_DIR / "browser_e2e.mjs"
CHROMIUM = Path("/usr/bin/chromium")
NODE = shutil.which("node")


def _missing() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    if NODE is None:
        return "node is not installed"
    if not (JS_DIR / "node_modules" / "playwright-core").is_dir():
        return "tests/js/node_modules/playwright-core is missing (npm ci --prefix tests/js)"
    return None


def test_admin_and_demo_in_chromium(tmp_path: Path) -> None:
    missing = _missing()
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser test cannot run under CI=true: {missing}")
        pytest.skip(f"browser test skipped: {missing}")
    gw = Gateway(tmp_path, None, 2)
    try:
        gw.wait_ready()
        admin_url, password, demo_url = admin_banner(gw)
        out = tmp_path / "shots"
        out.mkdir()
        script_timeout = scaled(40)
        env = {**os.environ, "E2E_ADMIN_URL": admin_url, "E2E_PASSWORD": password, "E2E_DEMO_URL": demo_url,
               "E2E_CHANNEL": f"chat:e2e-{uuid.uuid4().hex[:8]}", "E2E_OUT_DIR": str(out), "E2E_WORKERS": "2",
               "E2E_TIMEOUT_MS": str(int(script_timeout * 1000))}
        try:
            proc = subprocess.run([str(NODE), str(SCRIPT)], cwd=JS_DIR, env=env, capture_output=True, text=True,
                                  timeout=script_timeout + scaled(15))
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"browser script did not exit: {exc.stdout!r} {exc.stderr!r}\ngateway log:\n{gw.log()}")
        assert proc.returncode == 0, (f"browser script failed (rc {proc.returncode})\nstdout:\n{proc.stdout}\n"
                                      f"stderr:\n{proc.stderr}\ngateway log:\n{gw.log()}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        assert result["ok"] is True
        assert len(result["workers"]) == 2
        for name in ("admin", "demo"):
            shot = Path(result["screenshots"][name])
            assert shot.stat().st_size > 10_000, f"{shot}: {shot.stat().st_size} bytes, looks blank"
            colours, top_share = colour_stats(shot)
            print(f"{name} screenshot {shot}: {shot.stat().st_size} bytes, {colours} colours, "
                  f"most common {top_share:.0%}")
            assert colours >= 30, f"{shot}: only {colours} distinct colours"
            assert top_share < 0.97, f"{shot}: {top_share:.1%} of the pixels are one colour"
    finally:
        gw.stop()


def test_protobuf_sdk_in_chromium(tmp_path: Path) -> None:
    """centrifuge-js's protobuf browser build (dist/centrifuge.protobuf.js) against 2 workers:
    subscribe, binary publications in order, history, presence, rpc, and recovery after the
    transport drops (tests/js/browser_protobuf.mjs)."""
    missing = _missing()
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser test cannot run under CI=true: {missing}")
        pytest.skip(f"browser test skipped: {missing}")
    from tests.conftest import SECRET, base_config
    from tools.token import mint_token

    cfg = base_config(client={"token": {"hmac_secret_key": SECRET}, "allowed_origins": ["*"]})
    gw = Gateway(tmp_path, cfg, 2)
    try:
        gw.wait_ready()
        script_timeout = scaled(30)
        env = {**os.environ, "PB_URL": gw.url, "PB_PAGE": gw.internal_url + "/health",
               "PB_TOKEN_A": mint_token(SECRET, user="pb-a"), "PB_TOKEN_B": mint_token(SECRET, user="pb-b"),
               "PB_CHANNEL": f"pb-{uuid.uuid4().hex[:8]}",
               "PB_TIMEOUT_MS": str(int(script_timeout * 1000))}
        try:
            proc = subprocess.run([str(NODE), str(JS_DIR / "browser_protobuf.mjs")], cwd=JS_DIR, env=env,
                                  capture_output=True, text=True, timeout=script_timeout + scaled(15))
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"browser script did not exit: {exc.stdout!r} {exc.stderr!r}\ngateway log:\n{gw.log()}")
        assert proc.returncode == 0, (f"browser script failed (rc {proc.returncode})\nstdout:\n{proc.stdout}\n"
                                      f"stderr:\n{proc.stderr}\ngateway log:\n{gw.log()}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        assert result["got"] == list(range(8)), result
        assert result["historyOffsets"] == [1, 2, 3, 4, 5], result
        assert result["presenceClients"] == 1 and result["rpc"] == {"hello": "protobuf"}, result
        assert result["subscribed"][0]["recovered"] is False
        assert any(s["wasRecovering"] and s["recovered"] for s in result["subscribed"][1:]), result
    finally:
        gw.stop()


def test_socketio_client_in_chromium(tmp_path: Path) -> None:
    """socket.io-client's browser bundle with default options (polling, then the upgrade)
    against 2 workers: join a room with an ack, publications from a Centrifugo client in order,
    publish back, an rpc ack, and connection state recovery after its WebSocket closes
    (tests/js/browser_socketio.mjs)."""
    missing = _missing()
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser test cannot run under CI=true: {missing}")
        pytest.skip(f"browser test skipped: {missing}")
    from tests.conftest import SECRET, base_config
    from tools.token import mint_token

    cfg = base_config(client={"token": {"hmac_secret_key": SECRET}, "allowed_origins": ["*"]})
    cfg["shardgate"] = {**cfg["shardgate"], "socketio": {"recovery": True}}
    gw = Gateway(tmp_path, cfg, 2)
    try:
        gw.wait_ready()
        script_timeout = scaled(30)
        env = {**os.environ, "SIO_URL": gw.url.split("/connection")[0].replace("ws://", "http://"),
               "WS_URL": gw.url, "SIO_PAGE": gw.internal_url + "/health",
               "SIO_TOKEN": mint_token(SECRET, user="sio-browser"), "CF_TOKEN": mint_token(SECRET, user="cf"),
               "SIO_ROOM": f"sio-{uuid.uuid4().hex[:8]}", "SIO_TIMEOUT_MS": str(int(script_timeout * 1000))}
        try:
            proc = subprocess.run([str(NODE), str(JS_DIR / "browser_socketio.mjs")], cwd=JS_DIR, env=env,
                                  capture_output=True, text=True, timeout=script_timeout + scaled(15))
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"browser script did not exit: {exc.stdout!r} {exc.stderr!r}\ngateway log:\n{gw.log()}")
        assert proc.returncode == 0, (f"browser script failed (rc {proc.returncode})\nstdout:\n{proc.stdout}\n"
                                      f"stderr:\n{proc.stderr}\ngateway log:\n{gw.log()}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        assert result["firstTransport"] == "polling" and result["upgrades"] == ["websocket"], result
        assert result["recoveredAtFirst"] is False, result
        assert result["subAck"]["recoverable"] is True, result
        assert result["publishAck"] == {} and result["rpcAck"] == {"data": {"hello": "chromium"}}, result
        assert result["recovered"] is True and result["got"] == list(range(8)), result
    finally:
        gw.stop()
