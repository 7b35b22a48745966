"""The compiled build's guard (gateway/native.py) and tools.native's clean and build bookkeeping:
file checks on a scratch tree. The real compiler runs in CI (.ci/run builds, then runs the suite)."""

from __future__ import annotations

import ast
import hashlib
import importlib.machinery
import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import native
from tools import native as tool

ROOT = Path(__file__).resolve().parent.parent.parent
SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]
OTHER_PYTHON = ".cpython-399-x86_64-linux-gnu.so"
GROUP_FILE = "gateway/" + native.GROUP_LIBRARY.rsplit(".", 1)[1] + SUFFIX


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the compiled modules' sources, laid out as in the checkout."""
    for module in native.MODULES:
        rel = native.source_path(Path(), module)
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes((ROOT / rel).read_bytes())
    return tmp_path


def _extension(root: Path, module: str, suffix: str = SUFFIX) -> Path:
    src = native.source_path(root, module)
    path = src.with_name(src.stem + suffix)
    path.write_bytes(b"\x7fELF")
    return path


def _compile(root: Path, modules: tuple[str, ...] = native.MODULES, manifest: bool = True,
             suffix: str = SUFFIX) -> None:
    """What `tools.native build` leaves: an extension beside each source, the group's library, and
    the manifest (hashes of the sources compiled, the files written, this Python's suffix)."""
    for module in modules:
        _extension(root, module, suffix)
    (root / "gateway" / (native.GROUP_LIBRARY.rsplit(".", 1)[1] + suffix)).write_bytes(b"\x7fELF")
    if manifest:
        files = [str(p.relative_to(root)) for p in native.extension_files(root)]
        hashes = {m: hashlib.sha256(native.source_path(root, m).read_bytes()).hexdigest() for m in modules}
        native.manifest_path(root).write_text(json.dumps({"modules": hashes, "files": files, "suffix": suffix}))


def test_pure_tree_has_no_problems(tree: Path) -> None:
    assert native.compiled(tree) == []
    assert native.problems(tree) == []
    assert native.summary(tree) == "pure Python"


def test_current_build_is_accepted(tree: Path) -> None:
    _compile(tree)
    assert native.compiled(tree) == list(native.MODULES)
    assert native.problems(tree) == []
    assert native.summary(tree) == f"compiled (mypyc): {len(native.MODULES)} modules"


def test_module_of_reads_any_abi_tag(tree: Path) -> None:
    assert native.module_of(tree, tree / "gateway" / "session" / f"session{SUFFIX}") == "gateway.session.session"
    assert native.module_of(tree, tree / "gateway" / f"hub{OTHER_PYTHON}") == "gateway.hub"
    assert native.module_of(tree, tree / GROUP_FILE) == native.GROUP_LIBRARY


def test_source_edited_after_the_build_is_refused(tree: Path) -> None:
    _compile(tree)
    src = tree / "gateway" / "session" / "session.py"
    src.write_text(src.read_text() + "\n# edited\n")
    assert native.problems(tree) == ["gateway/session/session.py changed since it was compiled"]
    assert native.summary(tree) == ("STALE compiled build: gateway/session/session.py changed since it was "
                                    "compiled")


def test_extension_without_manifest_is_refused_and_named(tree: Path) -> None:
    _compile(tree, manifest=False)
    [problem] = native.problems(tree)
    assert problem.startswith(f"extension modules ({GROUP_FILE}, gateway/core/limits{SUFFIX}, ")
    assert f"and {len(native.MODULES) + 1 - 3} more) without a readable gateway/_native.json" in problem


def test_manifest_of_an_older_tools_native_is_refused(tree: Path) -> None:
    """Written before the manifest recorded the suffix: rebuild rather than guess."""
    _compile(tree)
    doc = json.loads(native.manifest_path(tree).read_text())
    del doc["suffix"]
    native.manifest_path(tree).write_text(json.dumps(doc))
    [problem] = native.problems(tree)
    assert "(none, or one from an older tools.native)" in problem


def test_partial_build_is_refused(tree: Path) -> None:
    _compile(tree)
    (native.source_path(tree, "gateway.core.model").with_name("model" + SUFFIX)).unlink()
    assert native.problems(tree) == [f"gateway/core/model{SUFFIX} (from the last build) is missing",
                                     "gateway.core.model is not compiled while the others are"]


def test_missing_group_library_is_refused(tree: Path) -> None:
    """Without it every compiled module fails to import, with an ImportError that names neither."""
    _compile(tree)
    (tree / GROUP_FILE).unlink()
    assert native.problems(tree) == [f"{GROUP_FILE} (from the last build) is missing"]


def test_leftover_of_an_earlier_build_is_refused(tree: Path) -> None:
    """An extension the last build did not write shadows its source just the same."""
    _compile(tree)
    assert "gateway.node" not in native.MODULES
    (tree / "gateway" / "node.py").write_text("")
    _extension(tree, "gateway.node")
    assert native.problems(tree) == [f"gateway/node{SUFFIX} is not from the last build",
                                     "gateway/node.py has no hash from the last build"]


def test_module_dropped_from_the_list_since_the_build_is_still_checked(tree: Path) -> None:
    """Built when gateway.node was in MODULES; the list has lost it since, but its extension module
    still shadows the source, so an edit to the source must still be caught."""
    (tree / "gateway" / "node.py").write_text("x = 1\n")
    _compile(tree, modules=(*native.MODULES, "gateway.node"))
    assert native.problems(tree) == []
    (tree / "gateway" / "node.py").write_text("x = 2\n")
    assert native.problems(tree) == ["gateway/node.py changed since it was compiled"]


def test_extension_without_a_source_is_refused(tree: Path) -> None:
    _compile(tree)
    (tree / "gateway" / ("gone" + SUFFIX)).write_bytes(b"\x7fELF")
    assert f"gateway/gone{SUFFIX} has no source beside it" in native.problems(tree)


def test_build_for_another_python_is_named_as_such(tree: Path) -> None:
    """This interpreter skips another ABI's extension modules: say that, not "not compiled"."""
    _compile(tree, suffix=OTHER_PYTHON)
    assert native.compiled(tree) == []
    assert native.problems(tree) == [
        f"built for another Python (extension modules *{OTHER_PYTHON}; this one loads *{SUFFIX})"]


def test_clean_removes_the_build_and_setuptools_copies(tree: Path) -> None:
    _compile(tree)
    (tree / "gateway" / ("node" + OTHER_PYTHON)).write_bytes(b"\x7fELF")  # an earlier build's, other Python
    copied = tree / "build" / "lib.linux-x86_64-cpython-311" / "gateway"
    (copied / "session").mkdir(parents=True)
    (copied / "session" / ("session" + SUFFIX)).write_bytes(b"\x7fELF")
    (copied / native.MANIFEST_NAME).write_text("{}")
    (copied / "hub.py").write_text("")  # setuptools' copy of a source: not the build's to remove
    gone = tool.clean(tree)
    assert len(gone) == len(native.MODULES) + 5  # + group library, other Python's, manifest, 2 copies
    assert native.extension_files(tree) == [] and not native.manifest_path(tree).exists()
    assert sorted(p.name for p in copied.rglob("*") if p.is_file()) == ["hub.py"]
    assert all(native.source_path(tree, m).exists() for m in native.MODULES)
    assert native.summary(tree) == "pure Python"
    assert tool.clean(tree) == []


def test_build_refused_by_mypyc_leaves_the_tree_pure(tree: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    import mypyc.build

    _compile(tree)  # an earlier build: must not survive a failed one

    def refuse(*args: object, **kwargs: object) -> None:
        raise SystemExit(1)

    monkeypatch.setattr(mypyc.build, "mypycify", refuse)
    assert tool.build(tree) == 1
    assert "mypyc refused the modules (exit 1)" in capsys.readouterr().err
    assert native.extension_files(tree) == [] and not native.manifest_path(tree).exists()


def test_build_that_fails_to_compile_leaves_the_tree_pure(tree: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    def half_then_fail(root: Path, tmp: Path) -> int:
        _extension(root, "gateway.hub")  # what a compiler that dies midway leaves
        raise OSError("gcc: not found")

    monkeypatch.setattr(tool, "_compile", half_then_fail)
    assert tool.build(tree) == 1
    assert "build failed: gcc: not found" in capsys.readouterr().err
    assert native.extension_files(tree) == [] and not native.manifest_path(tree).exists()


def test_build_records_the_sources_as_compiled(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The manifest's hashes are taken before compiling; a source edited while the compiler ran
    fails the build instead of being recorded as compiled."""
    def compile_all(root: Path, tmp: Path) -> int:
        for module in native.MODULES:
            _extension(root, module)
        return 0

    monkeypatch.setattr(tool, "_compile", compile_all)
    assert tool.build(tree) == 0
    doc = json.loads(native.manifest_path(tree).read_text())
    assert doc["suffix"] == SUFFIX and doc["modules"] == native.source_hashes(tree)
    assert sorted(doc["files"]) == sorted(str(p.relative_to(tree)) for p in native.extension_files(tree))
    assert native.problems(tree) == []

    def compile_while_edited(root: Path, tmp: Path) -> int:
        compile_all(root, tmp)
        src = native.source_path(root, "gateway.hub")
        src.write_text(src.read_text() + "\n# saved during the build\n")
        return 0

    monkeypatch.setattr(tool, "_compile", compile_while_edited)
    assert tool.build(tree) == 1
    assert native.extension_files(tree) == [] and not native.manifest_path(tree).exists()


def test_tool_help_and_status() -> None:
    helped = subprocess.run([sys.executable, "-m", "tools.native", "--help"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert helped.returncode == 0 and "build" in helped.stdout and "gateway.session.session" in helped.stdout
    status = subprocess.run([sys.executable, "-m", "tools.native", "status"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert status.returncode == 0, status.stderr  # the suite refuses a stale checkout (tests/conftest.py)
    assert status.stdout.strip() in ("pure Python", f"compiled (mypyc): {len(native.MODULES)} modules")


def _final_names(source: str) -> set[str]:
    """Names a module declares ``Final`` (``X: Final = ...``, ``X: Final[T] = ...``)."""
    def is_final(annotation: ast.expr) -> bool:
        node = annotation.value if isinstance(annotation, ast.Subscript) else annotation
        return (isinstance(node, ast.Name) and node.id == "Final") or \
            (isinstance(node, ast.Attribute) and node.attr == "Final")
    return {n.target.id for n in ast.walk(ast.parse(source))
            if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name) and is_final(n.annotation)}


def test_compiled_modules_use_no_final_of_an_uncompiled_module() -> None:
    """mypyc writes the value of another module's ``Final`` constant into the compiled code (even of
    a module it does not compile), and the manifest hashes only the compiled modules' sources: an
    edit to such a constant would not reach the build and would not be caught. So none is used."""
    compiled = {native.source_path(ROOT, m) for m in native.MODULES}
    finals = {name: path for package in ("gateway", "sharding") for path in (ROOT / package).rglob("*.py")
              if path not in compiled for name in _final_names(path.read_text())}
    assert finals, "the scan found no Final at all: it no longer reads what it should"
    for path in compiled:
        tree = ast.parse(path.read_text())
        used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} \
            | {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)} \
            | {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
        clash = sorted(f"{name} ({finals[name].relative_to(ROOT)})" for name in used & finals.keys())
        assert not clash, f"{path.relative_to(ROOT)} uses Final constants of uncompiled modules: {clash}; " \
                          "drop the Final, or compile that module too"
