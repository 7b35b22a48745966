"""``systemd-analyze verify`` on the unit: CI fails on any warning it prints, not only on
its exit code (unknown keys and bad values are warnings with rc 0)."""

from __future__ import annotations

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
