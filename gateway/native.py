"""The optional compiled build: which modules it covers, and whether a checkout's build is current.

``python -m tools.native build`` compiles :data:`MODULES` with mypyc next to their sources
(``gateway/session/session.py`` -> ``gateway/session/session.cpython-311-...so``), and Python's
import system prefers an extension module to the source beside it. So a source edited after the
build would silently not run: :func:`problems` compares the source of every extension module in the
package with the hash the build recorded in :data:`MANIFEST_NAME`, and ``shardgate serve`` and the
test suite refuse to start on a mismatch. Only those sources: mypyc also writes other modules'
``Final`` constants into the compiled code, so the compiled modules use none (a test checks it).
Pure: files and hashes only.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import json
from pathlib import Path

__all__ = ["EXT_SUFFIX", "GROUP", "GROUP_LIBRARY", "MANIFEST_NAME", "MODULES", "compiled", "extension_files",
           "manifest_path", "module_of", "problems", "source_hashes", "source_path", "summary"]

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
#: The build's group: mypyc puts the code shared by its modules in one library named after it,
#: ``gateway/_native__mypyc.*.so`` (module :data:`GROUP_LIBRARY`), which has no source.
GROUP = "gateway._native"
GROUP_LIBRARY = GROUP + "__mypyc"
MANIFEST_NAME = "_native.json"
#: The file ending this interpreter gives the extension modules it builds and prefers to load
#: (``.cpython-311-x86_64-linux-gnu.so``); the build records it, since another Python skips them.
EXT_SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]

_ROOT = Path(__file__).resolve().parent.parent


def source_path(root: Path, module: str) -> Path:
    return root.joinpath(*module.split(".")).with_suffix(".py")


def manifest_path(root: Path = _ROOT) -> Path:
    return root / "gateway" / MANIFEST_NAME


def module_of(root: Path, extension: Path) -> str:
    """``gateway/hub.cpython-311-x86_64-linux-gnu.so`` -> ``gateway.hub``, whatever the ABI tag."""
    rel = extension.relative_to(root)
    return ".".join((*rel.parent.parts, rel.name.split(".", 1)[0]))


def _extensions(root: Path, module: str) -> list[Path]:
    """The extension files this interpreter would import instead of ``module``'s source."""
    src = source_path(root, module)
    return [p for suffix in importlib.machinery.EXTENSION_SUFFIXES
            if (p := src.with_name(src.stem + suffix)).exists()]


def compiled(root: Path = _ROOT) -> list[str]:
    """The modules of :data:`MODULES` that have an extension file beside their source."""
    return [m for m in MODULES if _extensions(root, m)]


def extension_files(root: Path = _ROOT) -> list[Path]:
    """Every extension module in the ``gateway`` package, for any Python (``*.so`` matches all ABI
    tags). The package ships none of its own, so each is the compiled build's, or a leftover of an
    earlier one that shadows its source just the same."""
    return sorted((root / "gateway").rglob("*.so"))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def source_hashes(root: Path = _ROOT) -> dict[str, str]:
    """What the build records: each of :data:`MODULES`' sources by its SHA-256."""
    return {m: _digest(source_path(root, m)) for m in MODULES}


def _read_manifest(root: Path) -> tuple[dict[str, str], set[str], str] | None:
    try:
        doc = json.loads(manifest_path(root).read_text())
        return dict(doc["modules"]), set(doc["files"]), str(doc["suffix"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def problems(root: Path = _ROOT) -> list[str]:
    """Why the checkout's compiled modules cannot be trusted; empty when pure or current.

    Checked from the extension files outward, not from :data:`MODULES`: a module compiled by an
    earlier build and since dropped from the list still shadows its source."""
    files = extension_files(root)
    if not files:
        return []
    manifest = _read_manifest(root)
    if manifest is None:
        names = [str(p.relative_to(root)) for p in files]
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        return [f"extension modules ({shown}) without a readable {manifest_path(root).relative_to(root)} "
                "(none, or one from an older tools.native)"]
    recorded, built, suffix = manifest
    if suffix != EXT_SUFFIX:  # its extension files are not this Python's: they would not even load
        return [f"built for another Python (extension modules *{suffix}; this one loads *{EXT_SUFFIX})"]
    out = [f"{p.relative_to(root)} is not from the last build" for p in files
           if str(p.relative_to(root)) not in built]
    out += [f"{rel} (from the last build) is missing" for rel in sorted(built) if not (root / rel).exists()]
    for path in files:
        module = module_of(root, path)
        if module == GROUP_LIBRARY:
            continue
        src = source_path(root, module)
        if not src.exists():
            out.append(f"{path.relative_to(root)} has no source beside it")
        elif module not in recorded:
            out.append(f"{src.relative_to(root)} has no hash from the last build")
        elif recorded[module] != _digest(src):
            out.append(f"{src.relative_to(root)} changed since it was compiled")
    have = compiled(root)
    out += [f"{m} is not compiled while the others are" for m in MODULES if m not in have]
    return out


def summary(root: Path = _ROOT) -> str:
    """One line for banners and ``tools.native status``: what is wrong first, as a stray extension
    module makes "pure Python" untrue."""
    bad = problems(root)
    if bad:
        return f"STALE compiled build: {'; '.join(bad)}"
    built = compiled(root)
    return f"compiled (mypyc): {len(built)} modules" if built else "pure Python"
