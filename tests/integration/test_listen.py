"""What listens where: the internal port on its own address (http_server.internal_address),
and a second gateway on a port that one already serves refused at start."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from websockets.asyncio.client import connect

from tests.conftest import ROOT, Gateway, base_config, scaled
from tests.integration.rawclient import RawWS

# Loopback answers the whole 127/8 on Linux: a second address without any setup.
_OTHER_LOOPBACK = "127.0.0.2"


def _refused(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=scaled(2)).close()
    except ConnectionRefusedError:
        return True
    return False


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=scaled(5)) as resp:
        status: int = resp.status
        return status


async def test_internal_port_only_on_internal_address(gateway_factory: Callable[..., Gateway]) -> None:
    gw = gateway_factory(args=("--host", "127.0.0.1", "--internal-host", _OTHER_LOOPBACK))
    client, internal = urlsplit(gw.url), urlsplit(gw.internal_url)
    assert (client.hostname, internal.hostname) == ("127.0.0.1", _OTHER_LOOPBACK)
    assert client.port is not None and internal.port is not None
    # The server API and /health answer on the internal address ...
    assert _get(gw.internal_url + "/health") == 200
    req = urllib.request.Request(gw.internal_url + "/api/info", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=scaled(5))
    assert err.value.code == 401  # the server API: it wants a key
    # ... and nowhere on the client address; the client endpoint is not on the internal one.
    assert _refused("127.0.0.1", internal.port)
    assert _refused(_OTHER_LOOPBACK, client.port)
    ws = await RawWS.open(gw.url)
    await ws.aclose()


def test_internal_address_defaults_to_loopback_even_when_clients_listen_everywhere(tmp_path: Path) -> None:
    from gateway.config import parse_config

    config = parse_config({"http_server": {"address": "0.0.0.0"}})
    assert config.http_server.internal_address == "127.0.0.1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _serve(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "second.json"
    path.write_text(json.dumps(base_config()))
    return subprocess.run([sys.executable, "-m", "gateway", "serve", "--config", str(path), "--workers", "1",
                           *args], capture_output=True, text=True, timeout=scaled(30),
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


async def test_second_gateway_on_a_served_port_refuses_to_start(gateway_factory: Callable[..., Gateway],
                                                                tmp_path: Path) -> None:
    port = _free_port()
    first = gateway_factory(args=("--port", str(port)))
    internal_port = urlsplit(first.internal_url).port
    assert internal_port is not None
    # SO_REUSEPORT would let a second gateway of the same user join the first one's sockets.
    for args in (("--port", str(port), "--internal-port", "0"),
                 ("--port", "0", "--internal-port", str(internal_port))):
        second = _serve(tmp_path, *args)
        taken = args[1] if args[1] != "0" else args[3]
        assert second.returncode != 0, second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        assert f"127.0.0.1:{taken}" in lines[0] and "in use" in lines[0], lines
        assert second.stdout == ""
    assert first.health()["status"] == "ok"
    # The port is free again once the first gateway stopped, even with the connection it
    # closed lingering in TIME_WAIT: a restart on the same port works.
    async with connect(first.url) as ws:
        await asyncio.to_thread(first.stop)
        await ws.wait_closed()
    again = gateway_factory(args=("--port", str(port)))
    assert urlsplit(again.url).port == port
