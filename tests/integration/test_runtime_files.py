"""What a graceful stop leaves behind in a configured ``shardgate.runtime_dir`` (systemd's
RuntimeDirectory, which outlives the process across a restart): nothing this run put there."""

from __future__ import annotations

import json
import signal
import urllib.request
from pathlib import Path
from typing import Any

from tests.conftest import API_KEY, Gateway, base_config, scaled, wait_for


def _info_pids(gw: Gateway) -> set[int]:
    req = urllib.request.Request(gw.internal_url + "/api/info", data=b"{}", headers={"X-API-Key": API_KEY})
    with urllib.request.urlopen(req, timeout=scaled(2)) as resp:
        return {n["pid"] for n in json.loads(resp.read())["result"]["nodes"]}


async def test_sigterm_removes_the_pid_file_and_handoff_files(gateway_factory: Any, tmp_path: Path) -> None:
    runtime = tmp_path / "run"
    pid_file = runtime / "shardgate.pid"
    gw: Gateway = gateway_factory(base_config(shardgate={"runtime_dir": str(runtime), "pid_file": str(pid_file)}))
    await wait_for(pid_file.exists, what="pid file")
    before = set(gw.worker_pids())

    # A rolling reload hands every slot over through a handoff file in the runtime dir.
    gw.proc.send_signal(signal.SIGHUP)

    def replaced() -> bool:
        try:
            pids = _info_pids(gw)
        except OSError:
            return False
        return len(pids) == 2 and not pids & before

    await wait_for(replaced, timeout=30, what="workers replaced by the reload", interval=0.2)
    assert "handoff" in gw.log()

    assert gw.stop() == 0  # SIGTERM: graceful
    left = sorted(p.name for p in runtime.iterdir()) if runtime.exists() else []
    assert not pid_file.exists()
    assert not [name for name in left if name.startswith("handoff-")], left
    assert not [name for name in left if name.endswith(".ipc")], left
