"""``systemd-analyze verify`` on the unit: CI fails on any warning it prints, not only on
its exit code (unknown keys and bad values are warnings with rc 0)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "shardgate.service"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_unit_verifies_clean(tmp_path: Path) -> None:
    # verify insists that ExecStart exists: point it at this checkout's installed entry point.
    shardgate = Path(sys.executable).parent / "shardgate"
    assert shardgate.exists(), "install the project first (pip install -e .)"
    text = UNIT.read_text().replace("/opt/shardgate/.venv/bin/shardgate", str(shardgate))
    unit = tmp_path / "shardgate.service"
    unit.write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0, output
    assert output == "", f"systemd-analyze printed warnings:\n{output}"


def test_sysctl_dropin_is_key_value() -> None:
    for line in (ROOT / "systemd" / "99-shardgate.conf").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            assert key.strip() and value.strip(), line


EXAMPLE = ROOT / "systemd" / "shardgate.toml"


def _sysctl() -> dict[str, str]:
    values = {}
    for line in (ROOT / "systemd" / "99-shardgate.conf").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def test_example_config_passes_check_config() -> None:
    """The README's install steps copy it to /etc/shardgate/config.toml and check it."""
    result = subprocess.run([sys.executable, "-m", "gateway", "check-config", str(EXAMPLE)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(f"{EXAMPLE}: ok"), result.stdout


def test_example_config_matches_the_unit() -> None:
    """runtime_dir is the unit's RuntimeDirectory, pid_file the ExecStart --pid-file (so
    `shardgate reload --config` finds the supervisor), and the secrets are visible placeholders."""
    from gateway.config import load_config

    config = load_config(str(EXAMPLE))
    unit = UNIT.read_text()
    runtime = re.search(r"^RuntimeDirectory=(\S+)$", unit, re.M)
    exec_start = re.search(r"^ExecStart=(.+)$", unit, re.M)
    assert runtime and exec_start
    assert config.shardgate.runtime_dir == f"/run/{runtime.group(1)}"
    args = exec_start.group(1).split()
    assert args[args.index("--pid-file") + 1] == config.shardgate.pid_file
    assert Path(config.shardgate.pid_file).parent == Path(config.shardgate.runtime_dir)
    assert args[args.index("--config") + 1] == "/etc/shardgate/config.toml"
    assert "CHANGE-ME" in EXAMPLE.read_text()


def test_ephemeral_port_range_leaves_the_gateway_ports_out() -> None:
    from gateway.config import Config, load_config

    low, high = (int(v) for v in _sysctl()["net.ipv4.ip_local_port_range"].split())
    assert 1024 <= low < high <= 65535
    ports = {8000, 8001}
    for config in (Config(), load_config(str(EXAMPLE))):
        ports |= {config.http_server.port, config.http_server.internal_port}
    for port in sorted(ports):
        assert not low <= port <= high, f"net.ipv4.ip_local_port_range {low}-{high} covers port {port}"
