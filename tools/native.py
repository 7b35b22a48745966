"""The optional compiled build of a checkout: the request path's modules through mypyc, in place.

    python -m tools.native build     # compile gateway.native.MODULES beside their sources
    python -m tools.native status    # pure, compiled, or compiled but stale (exit 1 when stale)
    python -m tools.native clean     # remove the compiled files: pure Python again

``build`` needs mypy (the ``test`` extra has it) and a C compiler with Python's headers; it type
checks the modules with the project's mypy settings (strict) before generating C, takes about 35 s
on 2 cores, and records each source's hash and this Python's extension suffix in
``gateway/_native.json``. ``shardgate serve``, ``shardgate bench`` and the test suite refuse to run
a checkout whose compiled modules no longer match their sources (an edit after ``build``): rebuild
or clean. The default install stays pure Python; nothing imports mypyc at run time.

What it buys (2-core box, gateway at 1 worker, ``shardgate bench compare --jobs echo``): see the
README's Performance section.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

from gateway import native

ROOT = Path(__file__).resolve().parent.parent


def _paths() -> list[str]:
    return [str(native.source_path(Path(), m)) for m in native.MODULES]


def _build_copies(root: Path) -> list[Path]:
    """Compiled modules and manifests that setuptools left in ``build/lib*/gateway`` (a ``pip
    install .`` after a build copies them there); a later ``pip install .`` would ship them."""
    return [p for lib in root.glob("build/lib*/gateway")
            for p in (*lib.rglob("*.so"), lib / native.MANIFEST_NAME) if p.exists()]


def clean(root: Path = ROOT) -> list[Path]:
    """Remove every extension module in the package (this build's and any earlier one's), the
    manifest, and their copies in setuptools' build directory: pure Python again."""
    gone = [*native.extension_files(root), native.manifest_path(root), *_build_copies(root)]
    gone = [p for p in gone if p.exists()]
    for p in gone:
        p.unlink()
    return gone


def _compile(root: Path, tmp: Path) -> int:
    """mypyc, then the C compiler, writing the extension modules beside their sources."""
    from mypyc.build import mypycify
    from setuptools import Distribution

    cwd = os.getcwd()
    os.chdir(root)  # mypyc names modules, and build_ext --inplace places them, relative to here
    try:
        try:
            extensions = mypycify(_paths(), opt_level="3", group_name=native.GROUP, target_dir=str(tmp / "c"))
        except SystemExit as exc:  # mypyc exits on type errors, after printing them
            print(f"tools.native: mypyc refused the modules (exit {exc.code})", file=sys.stderr)
            return 1
        # --build-lib too: --inplace still links into build/lib* first, and a copy left there
        # would ride along with a later `pip install .`.
        dist = Distribution({"name": "shardgate-native", "ext_modules": extensions,
                             "script_name": "tools/native.py",
                             "script_args": ["-q", "build_ext", "--inplace", "--build-temp", str(tmp / "o"),
                                             "--build-lib", str(tmp / "lib"),
                                             "--parallel", str(os.cpu_count() or 1)]})
        dist.parse_command_line()
        dist.run_commands()
        return 0
    finally:
        os.chdir(cwd)


def build(root: Path = ROOT) -> int:
    try:
        import mypy.version
        import mypyc.build  # noqa: F401  (what _compile needs: say so now, before touching the tree)
    except ImportError:
        print("tools.native: mypy (with mypyc) is not installed: pip install -e '.[test]' or pip install mypy",
              file=sys.stderr)
        return 2
    clean(root)  # a half-old build must not survive a failed one
    # The hashes recorded are those of the sources as the compiler read them: taken before it
    # starts, and compared after, so an edit (or a git checkout) during the build is not blessed.
    before = native.source_hashes(root)
    try:
        with tempfile.TemporaryDirectory(prefix="shardgate-native-") as tmp:
            code = _compile(root, Path(tmp))
    except Exception as exc:  # compiler or headers missing: say so, leave the tree pure
        code = 1
        print(f"tools.native: build failed: {exc}", file=sys.stderr)
    changed = [m for m, digest in native.source_hashes(root).items() if before[m] != digest]
    if code == 0 and changed:
        code = 1
        print(f"tools.native: sources changed during the build ({', '.join(changed)}): build again",
              file=sys.stderr)
    if code != 0:
        clean(root)
        return code
    native.manifest_path(root).write_text(json.dumps({
        "compiler": f"mypyc {mypy.version.__version__}", "python": platform.python_version(),
        "suffix": native.EXT_SUFFIX, "modules": before,
        "files": [str(p.relative_to(root)) for p in native.extension_files(root)]}, indent=1) + "\n")
    print(f"tools.native: {native.summary(root)}")
    return 0 if not native.problems(root) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.native", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="modules: " + ", ".join(native.MODULES))
    parser.add_argument("action", choices=["build", "status", "clean"])
    args = parser.parse_args(argv)
    if args.action == "build":
        return build()
    if args.action == "clean":
        for p in clean():
            print(f"removed {p.relative_to(ROOT)}")
        return 0
    print(native.summary(ROOT))
    return 1 if native.problems(ROOT) else 0


if __name__ == "__main__":
    sys.exit(main())
