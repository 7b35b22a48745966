"""The compiled build's guard (gateway/native.py): pure file checks on a scratch tree."""

from __future__ import annotations

import importlib.machinery
import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import native

ROOT = Path(__file__).resolve().parent.parent.parent
SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the compiled modules' sources, laid out as in the checkout."""
    for module in native.MODULES:
        rel = Path(*module.split(".")).with_suffix(".py")
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes((ROOT / rel).read_bytes())
    return tmp_path


def _compile(root: Path, modules: tuple[str, ...] = native.MODULES, manifest: bool = True) -> None:
    """What `tools.native build` leaves: an extension beside each source, and the manifest."""
    for module in modules:
        src = root.joinpath(*module.split(".")).with_suffix(".py")
        src.with_name(src.stem + SUFFIX).write_bytes(b"\x7fELF")
    if manifest:
        files = [str(p.relative_to(root)) for p in native.extension_files(root)]
        (root / "gateway" / native.MANIFEST_NAME).write_text(
            json.dumps({"modules": native.source_hashes(root), "files": files}))


def test_pure_tree_has_no_problems(tree: Path) -> None:
    assert native.compiled(tree) == []
    assert native.problems(tree) == []
    assert native.summary(tree) == "pure Python"


def test_current_build_is_accepted(tree: Path) -> None:
    _compile(tree)
    assert native.compiled(tree) == list(native.MODULES)
    assert native.problems(tree) == []
    assert native.summary(tree) == f"compiled (mypyc): {len(native.MODULES)} modules"


def test_source_edited_after_the_build_is_refused(tree: Path) -> None:
    _compile(tree)
    src = tree / "gateway" / "session" / "session.py"
    src.write_text(src.read_text() + "\n# edited\n")
    assert native.problems(tree) == ["gateway/session/session.py changed since it was compiled"]
    assert "STALE" in native.summary(tree)


def test_extension_without_manifest_is_refused(tree: Path) -> None:
    _compile(tree, manifest=False)
    [problem] = native.problems(tree)
    assert "without a readable" in problem


def test_partial_build_is_refused(tree: Path) -> None:
    _compile(tree)
    src = tree / "gateway" / "core" / "model.py"
    src.with_name(src.stem + SUFFIX).unlink()
    assert native.problems(tree) == ["gateway.core.model is not compiled while the others are"]


def test_this_checkout_is_consistent() -> None:
    """The suite itself refuses to run otherwise (tests/conftest.py); this says so by name."""
    assert native.problems() == []


def test_leftover_of_an_earlier_build_is_refused(tree: Path) -> None:
    """A module compiled by an earlier build and since dropped from MODULES still shadows its source."""
    _compile(tree)
    assert "gateway.node" not in native.MODULES
    (tree / "gateway" / "node.py").write_text("")
    (tree / "gateway" / ("node" + SUFFIX)).write_bytes(b"\x7fELF")
    assert native.problems(tree) == [f"gateway/node{SUFFIX} is not from the last build"]


def test_tool_help_and_status() -> None:
    helped = subprocess.run([sys.executable, "-m", "tools.native", "--help"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert helped.returncode == 0 and "build" in helped.stdout and "gateway.session.session" in helped.stdout
    status = subprocess.run([sys.executable, "-m", "tools.native", "status"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    assert status.stdout.strip() == native.summary()
