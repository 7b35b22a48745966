"""The optional compiled build: which modules it covers, and whether a checkout's build is current.

``python -m tools.native build`` compiles :data:`MODULES` with mypyc next to their sources
(``gateway/session/session.py`` -> ``gateway/session/session.cpython-311-...so``), and Python's
import system prefers an extension module to the source beside it. So a source edited after the
build would silently not run: :func:`problems` compares each source with the hash the build
recorded in :data:`MANIFEST_NAME`, and the CLI and the test suite refuse to start on a mismatch.
Pure: files and hashes only.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import json
from pathlib import Path

__all__ = ["GROUP", "MANIFEST_NAME", "MODULES", "compiled", "extension_files", "problems", "source_hashes",
           "summary"]

#: The request and delivery paths' modules (the JSON codec, the command type and dispatch, the
#: session and its memberships, the hub's fan-out, rate limits, rpc handlers, stats, the model): most
#: of the Python a request and a delivery run. What that buys: README, "The compiled build".
#: Left out: modules whose tests hand them stand-in objects (mypyc checks argument types at each
#: call) and the timer wheel (it makes a subclass per wheel, which a native class cannot be).
MODULES = (
    "gateway.core.limits",
    "gateway.core.model",
    "gateway.hub",
    "gateway.obs.stats",
    "gateway.protocol.centrifuge_json",
    "gateway.protocol.codec",
    "gateway.session.commands",
    "gateway.session.handlers",
    "gateway.session.membership",
    "gateway.session.rpc",
    "gateway.session.session",
)
#: mypyc's shared runtime library for the group, ``gateway/_native__mypyc.*.so``.
GROUP = "gateway._native"
MANIFEST_NAME = "_native.json"

_ROOT = Path(__file__).resolve().parent.parent


def _source(root: Path, module: str) -> Path:
    return root.joinpath(*module.split(".")).with_suffix(".py")


def _extensions(root: Path, module: str) -> list[Path]:
    """The extension files that would shadow ``module``'s source (any ABI suffix)."""
    src = _source(root, module)
    return [p for suffix in importlib.machinery.EXTENSION_SUFFIXES
            if (p := src.with_name(src.stem + suffix)).exists()]


def compiled(root: Path = _ROOT) -> list[str]:
    """The modules of :data:`MODULES` that have an extension file beside their source."""
    return [m for m in MODULES if _extensions(root, m)]


def extension_files(root: Path = _ROOT) -> list[Path]:
    """Every extension module in the ``gateway`` package. It ships none of its own, so each is
    the compiled build's (or a leftover of an earlier one, which would shadow its source too)."""
    return sorted({p for suffix in importlib.machinery.EXTENSION_SUFFIXES  # ".so" matches them all
                   for p in (root / "gateway").rglob("*" + suffix)})


def source_hashes(root: Path = _ROOT) -> dict[str, str]:
    return {m: hashlib.sha256(_source(root, m).read_bytes()).hexdigest() for m in MODULES}


def problems(root: Path = _ROOT) -> list[str]:
    """Why the checkout's compiled modules cannot be trusted; empty when pure or current."""
    files = extension_files(root)
    if not files:
        return []
    manifest = root / "gateway" / MANIFEST_NAME
    try:
        doc = json.loads(manifest.read_text())
        recorded, built = dict(doc["modules"]), set(doc["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return [f"compiled modules without a readable {manifest.relative_to(root)}"]
    out = [f"{p.relative_to(root)} is not from the last build" for p in files
           if str(p.relative_to(root)) not in built]
    have = compiled(root)
    current = source_hashes(root)
    for module in MODULES:
        if module not in have:
            out.append(f"{module} is not compiled while the others are")
        elif recorded.get(module) != current[module]:
            out.append(f"{_source(root, module).relative_to(root)} changed since it was compiled")
    return out


def summary(root: Path = _ROOT) -> str:
    """One line for banners and ``tools.native status``."""
    bad = problems(root)
    built = compiled(root)
    what = f"compiled (mypyc): {len(built)} modules" if built else "pure Python"
    return what + (f", STALE: {'; '.join(bad)}" if bad else "")
